"""SysmonX on Windows without a Windows host: imports and the command line under a simulated
Windows Python (Linux-only modules and attributes removed), backend capabilities per OS, and
win_amd64 wheels for every runtime dependency."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.request
import zipfile

import pytest

from sysmonx.windows import wheels
from sysmonx.windows.capabilities import available_backends, describe_backends

#: Prepended to a child interpreter: what Windows' CPython lacks. Modules that only exist on
#: POSIX are made unimportable, POSIX-only attributes of os/socket/signal/select are removed.
WINDOWS_SIM = textwrap.dedent("""
    import os, select, signal, socket, sys
    POSIX_ONLY = {"fcntl", "termios", "pwd", "grp", "resource", "tty", "pty", "syslog",
                  "_posixshmem", "readline", "crypt", "spwd", "nis", "posixpath_only"}
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in POSIX_ONLY:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    for m in list(sys.modules):
        if m.split(".")[0] in POSIX_ONLY:
            del sys.modules[m]
    sys.meta_path.insert(0, _Block())
    for mod, names in ((os, ["getuid", "geteuid", "getgid", "getegid", "uname", "fork",
                             "setsid", "getpgid", "killpg", "sysconf", "pipe2",
                             "sched_getaffinity", "getloadavg", "mkfifo"]),
                       (socket, ["AF_NETLINK", "AF_PACKET", "AF_UNIX", "SO_PEERCRED"]),
                       (signal, ["SIGHUP", "SIGKILL", "SIGUSR1", "SIGUSR2", "SIGALRM",
                                 "SIGCHLD", "SIGPIPE", "SIGQUIT"]),
                       (select, ["epoll", "poll"])):
        for n in names:
            if hasattr(mod, n):
                delattr(mod, n)
""")

#: Modules allowed to need POSIX at import time: none (the live Linux sensor imports its POSIX
#: modules where it uses them, so ``sysmonx run --help`` and the registries load on Windows).
LINUX_ONLY_AT_IMPORT: set[str] = set()


def _simulated(code: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WINDOWS_SIM + textwrap.dedent(code), *argv],
                          capture_output=True, text=True, timeout=300)


def test_every_module_but_the_linux_sensor_imports_without_posix():
    proc = _simulated("""
        import importlib, json, pkgutil, sysmonx
        failed = {}
        for info in pkgutil.walk_packages(sysmonx.__path__, "sysmonx."):
            try:
                importlib.import_module(info.name)
            except Exception as exc:
                failed[info.name] = f"{type(exc).__name__}: {exc}"
        print(json.dumps(failed))
    """)
    assert proc.returncode == 0, proc.stderr
    failed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(failed) <= LINUX_ONLY_AT_IMPORT, failed
    assert not any(m.startswith("sysmonx.windows") for m in failed)
    assert "sysmonx.cli" not in failed and "sysmonx.pipeline" not in failed


@pytest.mark.parametrize("argv", [["--help"], ["-s"], ["-?", "config"],
                                  ["replay", "--sample", "-q", "--format", "jsonl", "-o", "OUT"]])
def test_command_line_runs_without_posix(argv, tmp_path):
    argv = [str(tmp_path / "out.jsonl") if a == "OUT" else a for a in argv]
    proc = _simulated("""
        import sys
        from sysmonx.cli import main
        try:
            rc = main(sys.argv[1:])
        except SystemExit as exc:
            rc = exc.code
        sys.exit(rc or 0)
    """, *argv)
    assert proc.returncode == 0, proc.stderr[-2000:]
    if argv[0] == "replay":
        lines = (tmp_path / "out.jsonl").read_text().splitlines()
        assert len(lines) > 5 and json.loads(lines[0])["EventID"]
    elif argv[0] == "--help":
        assert "replay" in proc.stdout


def test_run_help_without_posix():
    proc = _simulated("""
        import sys
        from sysmonx.cli import main
        try:
            rc = main(["run", "--help"])
        except SystemExit as exc:
            rc = exc.code
        sys.exit(rc or 0)
    """)
    assert proc.returncode == 0, proc.stderr[-500:]


# ---- capabilities ---------------------------------------------------------------------------

def test_backends_on_windows_with_injected_probes():
    st = available_backends(
        "win32", probe_wevtapi=lambda: None,
        probe_etw=lambda: "starting an ETW session needs an elevated (administrator) prompt",
        probe_sysmon=lambda: (None, "service Sysmon64 (C:\\Windows\\Sysmon64.exe)"),
        probe_linux=lambda: pytest.fail("Linux probes must not run on Windows"))
    by = {s.name: s for s in st}
    assert [s.name for s in st][:4] == ["replay", "sysmon", "eventlog", "etw-kernel-process"]
    assert by["replay"].usable and by["sysmon"].usable and by["eventlog"].usable
    assert not by["etw-kernel-process"].usable and "elevated" in by["etw-kernel-process"].reason
    assert by["ebpf"].reason == "needs Linux"
    text = describe_backends(st)
    assert "sysmon              ok  service Sysmon64" in text
    assert "etw-kernel-process  no  starting an ETW session" in text


def test_backends_on_linux_use_the_sensor_registry():
    st = available_backends("linux", probe_linux=lambda: {"ebpf": None, "audit": "in use",
                                                          "cnproc": None, "dns": None},
                            probe_sysmon=lambda: pytest.fail("no Windows probe on Linux"))
    by = {s.name: s for s in st}
    assert by["eventlog"].reason == "needs Windows" and by["audit"].reason == "in use"
    assert by["ebpf"].usable and by["replay"].usable


def test_real_probes_on_this_host():
    """The default probes run here without side effects and give reasons, not exceptions."""
    st = available_backends()
    assert st[0].name == "replay" and st[0].usable
    if sys.platform != "win32":
        assert {s.name: s.reason for s in st}["eventlog"] == "needs Windows"


# ---- win_amd64 wheels -----------------------------------------------------------------------

def test_markers_are_evaluated_for_windows():
    env = wheels.windows_environment("3.11")
    reqs = ["lxml>=5.2", 'pywin32>=306; sys_platform == "win32"',
            'uvloop; sys_platform != "win32"', 'tomli; python_version < "3.11"']
    assert wheels.for_windows(reqs, env) == ["lxml>=5.2", "pywin32>=306"]
    runtime = wheels.runtime_requirements()
    assert any(r.startswith("lxml") for r in runtime)
    assert not any("pytest" in r for r in runtime)


def _fake_wheel(folder, name, requires=()):
    path = os.path.join(folder, name)
    dist = name.split("-")[0]
    with zipfile.ZipFile(path, "w") as zf:
        meta = "Metadata-Version: 2.1\nName: x\nVersion: 1\n" + \
            "".join(f"Requires-Dist: {r}\n" for r in requires)
        zf.writestr(f"{dist}-1.dist-info/METADATA", meta)


def test_windows_only_dependencies_pip_skips_are_downloaded(tmp_path):
    calls = []

    def run(cmd, **kw):
        calls.append(cmd)
        reqs = cmd[cmd.index(str(tmp_path)) + 1:]
        for r in reqs:
            if r.startswith("toolkit"):
                _fake_wheel(str(tmp_path), "toolkit-1.0-py3-none-any.whl",
                            ['colorama>=0.4; platform_system == "Windows"',
                             'pyobjc; sys_platform == "darwin"', "idna"])
                _fake_wheel(str(tmp_path), "idna-3.0-py3-none-any.whl")
            if r.startswith("colorama"):
                _fake_wheel(str(tmp_path), "colorama-0.4.6-py2.py3-none-any.whl")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    rep = wheels.check_windows_wheels(["toolkit"], str(tmp_path), run=run)
    assert rep.ok and rep.windows_only == ["colorama>=0.4"]
    assert len(calls) == 2 and calls[1][-1] == "colorama>=0.4"
    assert "--platform" in calls[0] and calls[0][calls[0].index("--platform") + 1] == "win_amd64"
    assert calls[0][calls[0].index("--only-binary") + 1] == ":all:"

    def failing(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found "
                                                       "for jq (from versions: none)")
    bad = wheels.check_windows_wheels(["jq"], str(tmp_path / "x"), run=failing)
    assert not bad.ok and not bad.index_unreachable and "jq" in bad.output


def _index_reachable() -> bool:
    url = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/").rstrip("/") + "/lxml/"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status == 200
    except Exception:  # noqa: BLE001 - any failure: the index is not reachable
        return False


def test_every_runtime_dependency_has_a_win_amd64_wheel(tmp_path):
    if not _index_reachable():
        pytest.skip("no package index reachable (offline): win_amd64 wheel check not run")
    rep = wheels.check_windows_wheels(wheels.runtime_requirements(), str(tmp_path),
                                      python_version="3.11")
    if rep.index_unreachable:
        pytest.skip(f"package index unreachable: {rep.output.strip()[-300:]}")
    assert rep.ok, rep.output[-3000:]
    names = {w.split("-")[0].lower().replace("_", "-") for w in rep.wheels}
    assert {"lxml", "evtx", "google-re2", "orjson", "pysigma", "jq"} <= names
    assert all(w.endswith(("-none-any.whl", "win_amd64.whl")) for w in rep.wheels), rep.wheels


def test_windows_command_line_under_a_simulated_windows_python():
    """``sys.platform == "win32"`` without Windows' DLLs: ``sysmonx`` lists the backends and
    why they cannot run, ``run`` fails with one line (no traceback), ``-i`` needs elevation."""
    proc = _simulated("""
        import sys
        import rich.console  # before the switch: rich picks its Windows console by platform,
        sys.platform = "win32"  # which needs ctypes.WinDLL, which this Linux Python lacks
        from sysmonx.cli import main
        for argv in ([], ["run", "--list-backends"], ["run", "--duration", "1"],
                     ["-accepteula", "-i", "x.xml"]):
            try:
                rc = main(argv)
            except SystemExit as exc:
                rc = exc.code
            print("RC", rc, flush=True)
    """)
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    codes = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("RC ")]
    assert codes == ["87", "0", "1", "740"], proc.stdout + proc.stderr
    assert "Backends on this host:" in proc.stderr and "eventlog" in proc.stderr
    assert "etw-kernel-process  no  cannot load advapi32.dll" in proc.stdout
    assert "error: eventlog: cannot load wevtapi.dll" in proc.stderr
    assert "elevated (administrator) prompt" in proc.stdout
