"""Can SysmonX be installed on 64-bit Windows from wheels alone?

``pip download --only-binary :all: --platform win_amd64 --python-version 3.11`` resolves the
runtime dependencies for Windows without building anything: a dependency without a win_amd64
(or pure-Python) wheel fails the check. pip evaluates environment markers against the machine it
runs on, not the target platform (pypa/pip issues #4304, #11664, #13442), so a dependency that
only Windows needs (``foo; sys_platform == "win32"``) would be skipped silently. This module
closes that gap: it evaluates every requirement's markers for a Windows environment itself,
passes pip the requirements that apply to Windows, then reads each downloaded wheel's
``Requires-Dist`` and downloads any Windows-only dependency pip skipped, until nothing is missing.

Run: ``python -m sysmonx.windows.wheels [--python-version 3.11] [--dest DIR]`` (exit 0 when every
dependency has a wheel, 1 otherwise, 2 when no package index is reachable).
"""

from __future__ import annotations

import argparse
import email.parser
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

__all__ = ["windows_environment", "runtime_requirements", "for_windows", "check_windows_wheels",
           "WheelReport", "main"]


def windows_environment(python_version: str = "3.11") -> dict:
    """PEP 508 marker values of CPython ``python_version`` on 64-bit Windows 10/11."""
    return {"os_name": "nt", "sys_platform": "win32", "platform_system": "Windows",
            "platform_machine": "AMD64", "platform_python_implementation": "CPython",
            "implementation_name": "cpython", "platform_release": "10",
            "platform_version": "10.0.19045", "python_version": python_version,
            "python_full_version": f"{python_version}.0",
            "implementation_version": f"{python_version}.0", "extra": ""}


def runtime_requirements(dist: str = "sysmonx") -> list[str]:
    """The installed distribution's runtime requirements (``Requires-Dist`` without extras).

    Raises:
        importlib.metadata.PackageNotFoundError: ``dist`` is not installed.
    """
    from importlib.metadata import requires

    from packaging.requirements import Requirement
    out = []
    for text in requires(dist) or []:
        req = Requirement(text)
        if req.marker is not None and "extra" in str(req.marker):
            continue
        out.append(text)
    return out


def for_windows(requirements: Sequence[str], env: dict) -> list[str]:
    """The requirements that apply on Windows (markers evaluated with ``env``), markers
    removed, so pip's own marker evaluation cannot drop them."""
    from packaging.requirements import Requirement
    out = []
    for text in requirements:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        req.marker = None
        out.append(str(req))
    return out


@dataclass
class WheelReport:
    """Result of :func:`check_windows_wheels`.

    Attributes:
        ok: every requirement resolved to wheels.
        wheels: the wheel files pip downloaded.
        windows_only: requirements only Windows needs, found in wheels' metadata.
        output: pip's output of the failing run (empty when ok).
        index_unreachable: the failure was the network, not a missing wheel.
    """

    ok: bool
    wheels: list = field(default_factory=list)
    windows_only: list = field(default_factory=list)
    output: str = ""
    index_unreachable: bool = False


_NETWORK_SIGNS = ("Failed to establish a new connection", "Temporary failure in name resolution",
                  "Network is unreachable", "ConnectTimeoutError", "ProxyError",
                  "Could not fetch URL", "No route to host")


def _wheel_requires(path: str) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(zf.read(name).decode("utf-8", "replace"))
    return meta.get_all("Requires-Dist") or []


def check_windows_wheels(requirements: Sequence[str], dest: str, *,
                         python_version: str = "3.11", platform: str = "win_amd64",
                         pip: Sequence[str] = (sys.executable, "-m", "pip"),
                         run: Callable = subprocess.run, rounds: int = 5) -> WheelReport:
    """Download win_amd64 wheels for ``requirements`` and their Windows dependencies.

    Args:
        requirements: PEP 508 requirement strings (markers are evaluated for Windows).
        dest: folder for the wheels.
        pip: the pip command; ``run`` runs it (``subprocess.run`` signature).
    Returns:
        :class:`WheelReport`.
    """
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename
    env = windows_environment(python_version)
    wanted = for_windows(requirements, env)
    report = WheelReport(ok=False)
    seen: set = set()
    for _ in range(rounds):
        cmd = [*pip, "download", "--disable-pip-version-check", "--only-binary", ":all:",
               "--platform", platform, "--python-version", python_version,
               "--implementation", "cp", "-d", dest, *wanted]
        proc = run(cmd, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            report.output = (proc.stdout or "") + (proc.stderr or "")
            report.index_unreachable = any(s in report.output for s in _NETWORK_SIGNS)
            return report
        have = {}
        for name in os.listdir(dest):
            if name.endswith(".whl"):
                have[canonicalize_name(parse_wheel_filename(name)[0])] = name
            elif name.endswith((".tar.gz", ".zip")):
                report.output = f"{name}: a source distribution, not a wheel"
                return report
        report.wheels = sorted(have.values())
        missing = []
        for wheel in report.wheels:
            for text in _wheel_requires(os.path.join(dest, wheel)):
                req = Requirement(text)
                if req.marker is None or not req.marker.evaluate(env):
                    continue
                key = canonicalize_name(req.name)
                if key in have or key in seen:
                    continue
                if req.marker.evaluate(dict(env, sys_platform="linux", os_name="posix",
                                            platform_system="Linux", platform_machine="x86_64")):
                    continue  # pip saw this one too
                seen.add(key)
                req.marker = None
                missing.append(str(req))
        if not missing:
            report.ok = True
            return report
        report.windows_only += missing
        wanted = missing
    report.output = f"Windows-only dependencies still missing after {rounds} rounds"
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: check this installation's runtime requirements; see the module docstring."""
    ap = argparse.ArgumentParser(prog="python -m sysmonx.windows.wheels",
                                 description="Check that every runtime dependency of SysmonX "
                                             "has a win_amd64 wheel.")
    ap.add_argument("--python-version", default="3.11")
    ap.add_argument("--dest", help="keep the wheels here (default: a temporary folder)")
    args = ap.parse_args(argv)
    reqs = runtime_requirements()
    with tempfile.TemporaryDirectory() as tmp:
        dest = args.dest or tmp
        os.makedirs(dest, exist_ok=True)
        rep = check_windows_wheels(reqs, dest, python_version=args.python_version)
    for w in rep.wheels:
        print(w)
    for r in rep.windows_only:
        print(f"windows-only dependency: {r}")
    if not rep.ok:
        print(rep.output.strip()[-2000:], file=sys.stderr)
        return 2 if rep.index_unreachable else 1
    print(f"ok: {len(rep.wheels)} wheels for win_amd64, Python {args.python_version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
