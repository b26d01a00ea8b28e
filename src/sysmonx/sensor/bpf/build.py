"""Build the tier-A BPF object (``sensor.bpf.c``) for this kernel, with a cache.

Steps (linux-sensing.md §2.4(b) "Build", §4 "Installation"):

1. ``bpftool btf dump file /sys/kernel/btf/vmlinux format c`` -> ``vmlinux-<btf>.h``;
2. ``clang -O2 -g -target bpf -D__TARGET_ARCH_<arch> -c sensor.bpf.c``
   -> ``sensor-<src>-<btf>.bpf.o``.

``<btf>`` is a hash of the kernel's BTF and ``<src>`` a hash of the C source and the compiler
flags, so a kernel upgrade or a source change rebuilds, and everything else hits the cache.
The object is CO-RE, so a prebuilt one also runs on other BTF kernels: set
``SYSMONX_BPF_OBJECT`` (or the backend option ``object``) to use one without a compiler.

Cache directory: ``$SYSMONX_CACHE_DIR/bpf``, else ``/var/cache/sysmonx/bpf`` for root, else
``$XDG_CACHE_HOME/sysmonx/bpf`` (``~/.cache/sysmonx/bpf``). Directories are created 0700 and a
cache that is not owned by us, or is group/world-writable, is not trusted (a fresh private
temporary directory is used instead): a planted object would run in the kernel.

Needs the Debian packages ``clang llvm libbpf-dev bpftool`` to build (about 1 s here).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

from ..backends.base import BackendUnavailable

__all__ = [
    "BTF_PATH",
    "SOURCE",
    "btf_hash",
    "build",
    "cache_dir",
    "find_tool",
    "missing_tools",
    "source_hash",
]

SOURCE = Path(__file__).with_name("sensor.bpf.c")
"""The project's BPF C source (tier A's main object)."""

VISIBILITY_SOURCE = Path(__file__).with_name("visibility.bpf.c")
"""The second object: the extra syscall observations (events 6, 7, 8, 25, 211-213)."""

BTF_PATH = Path("/sys/kernel/btf/vmlinux")
"""Kernel BTF (CONFIG_DEBUG_INFO_BTF)."""

_TOOL_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
_ARCH = {"x86_64": "x86", "aarch64": "arm64", "arm64": "arm64"}
_HEADER = Path("/usr/include/bpf/bpf_helpers.h")


def find_tool(name: str) -> Optional[str]:
    """Path of an executable on ``$PATH`` or in the usual (s)bin directories (bpftool lives in
    /usr/sbin, which a non-root ``$PATH`` often lacks); for ``clang`` also ``clang-N``."""
    path = os.pathsep.join([os.environ.get("PATH", "")] + list(_TOOL_DIRS))
    found = shutil.which(name, path=path)
    if found or name != "clang":
        return found
    for ver in range(20, 10, -1):
        found = shutil.which(f"clang-{ver}", path=path)
        if found:
            return found
    return None


def missing_tools() -> list:
    """What is missing to build here (empty list = can build): Debian package hints."""
    missing = []
    if not BTF_PATH.exists():
        missing.append(f"no BTF at {BTF_PATH} (kernel without CONFIG_DEBUG_INFO_BTF)")
    if not find_tool("clang"):
        missing.append("clang not installed (apt-get install clang llvm)")
    if not find_tool("bpftool"):
        missing.append("bpftool not installed (apt-get install bpftool)")
    if not _HEADER.exists():
        missing.append(f"libbpf headers missing ({_HEADER}; apt-get install libbpf-dev)")
    if platform.machine() not in _ARCH:
        missing.append(f"unsupported architecture {platform.machine()}")
    return missing


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def btf_hash() -> str:
    """Short hash of the running kernel's BTF.

    Raises:
        BackendUnavailable: no readable BTF.
    """
    try:
        return _sha(BTF_PATH.read_bytes())
    except OSError as exc:
        raise BackendUnavailable(f"no BTF at {BTF_PATH}: {exc.strerror}") from None


def _cflags() -> list:
    arch = _ARCH.get(platform.machine())
    if arch is None:
        raise BackendUnavailable(f"eBPF backend: unsupported architecture {platform.machine()}")
    return ["-O2", "-g", "-target", "bpf", f"-D__TARGET_ARCH_{arch}", "-Wall",
            "-Wno-unused-function"]


def source_hash(source: Path = SOURCE) -> str:
    """Short hash of the C source, the shared headers beside it (``*.bpf.h``) and the compiler
    flags."""
    headers = b"".join(h.read_bytes() for h in sorted(source.parent.glob("*.bpf.h")))
    return _sha(source.read_bytes() + headers + "\0".join(_cflags()).encode())


def _trusted_dir(path: Path) -> bool:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()
    except OSError:
        return False
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
            and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and os.access(path, os.W_OK))


def cache_dir() -> Path:
    """The build cache directory (created 0700); see the module docstring for the order."""
    env = os.environ.get("SYSMONX_CACHE_DIR")
    if env:
        candidates = [Path(env) / "bpf"]
    elif os.geteuid() == 0:
        candidates = [Path("/var/cache/sysmonx/bpf")]
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        candidates = [Path(xdg) / "sysmonx" / "bpf"]
    for cand in candidates:
        if _trusted_dir(cand):
            return cand
    return Path(tempfile.mkdtemp(prefix="sysmonx-bpf-"))


def _run(cmd: list, what: str, stdout=None) -> None:
    try:
        proc = subprocess.run(cmd, stdout=stdout if stdout is not None else subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendUnavailable(f"{what} failed: {exc}") from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()
        raise BackendUnavailable(f"{what} failed (exit {proc.returncode}): {err[-2000:]}")


def _vmlinux_h(cache: Path, bhash: str) -> Path:
    out = cache / f"vmlinux-{bhash}.h"
    if out.exists():
        return out
    bpftool = find_tool("bpftool")
    if not bpftool:
        raise BackendUnavailable("bpftool not installed (apt-get install bpftool)")
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".vmlinux-", suffix=".h")
    try:
        with os.fdopen(fd, "wb") as fh:
            _run([bpftool, "btf", "dump", "file", str(BTF_PATH), "format", "c"],
                 "bpftool btf dump", stdout=fh)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def build(force: bool = False, cache: Optional[Path] = None, source: Path = SOURCE) -> Path:
    """Return the path of a compiled ``sensor.bpf.o`` (or another ``source``) for this kernel,
    building it if needed.

    Args:
        force: rebuild even when the cached object exists.
        cache: cache directory (default :func:`cache_dir`).
        source: the C source (:data:`SOURCE` or :data:`VISIBILITY_SOURCE`); ``SYSMONX_BPF_OBJECT``
            overrides only :data:`SOURCE`.

    Returns:
        Path of the object file (``<cache>/<stem>-<src hash>-<btf hash>.bpf.o``, stem
        ``sensor`` or ``visibility``).

    Raises:
        BackendUnavailable: with the reason ("clang not installed (...)", "no BTF at ...",
            the compiler's error output ...).
    """
    override = os.environ.get("SYSMONX_BPF_OBJECT") if source == SOURCE else None
    if override:
        if not os.path.isfile(override):
            raise BackendUnavailable(f"SYSMONX_BPF_OBJECT={override} does not exist")
        return Path(override)
    if not BTF_PATH.exists():
        raise BackendUnavailable(f"no BTF at {BTF_PATH} (kernel without CONFIG_DEBUG_INFO_BTF)")
    cache = cache or cache_dir()
    stem = source.name.split(".", 1)[0]
    bhash, shash = btf_hash(), source_hash(source)
    obj = cache / f"{stem}-{shash}-{bhash}.bpf.o"
    if obj.exists() and not force:
        return obj
    missing = [m for m in missing_tools() if not m.startswith("no BTF")]
    if missing:
        raise BackendUnavailable("; ".join(missing))
    header = _vmlinux_h(cache, bhash)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".build-") as tmpd:
        # vmlinux.h is included by name: give clang a directory holding just that file.
        os.symlink(header, os.path.join(tmpd, "vmlinux.h"))
        tmp_obj = os.path.join(tmpd, f"{stem}.bpf.o")
        _run([find_tool("clang"), *_cflags(), "-I", tmpd, "-c", str(source), "-o", tmp_obj],
             "clang (BPF)")
        os.replace(tmp_obj, obj)
    _prune(cache, stem, keep={obj.name, header.name})
    return obj


def _prune(cache: Path, stem: str, keep: set) -> None:
    """Remove objects of older versions of ``stem``'s source, and headers of older kernels,
    from the cache."""
    for old in list(cache.glob(f"{stem}-*.bpf.o")) + list(cache.glob("vmlinux-*.h")):
        if old.name not in keep:
            try:
                old.unlink()
            except OSError:
                pass
