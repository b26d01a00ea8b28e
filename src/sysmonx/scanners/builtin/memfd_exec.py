"""``memfd_exec``: the process runs an image that lives in a memfd (fileless execution).

Source: the kernel's ``d_path`` of the running image (``/proc/PID/exe``): a memfd shows as
``/memfd:NAME (deleted)`` (memfd_create(2)); the same fact the live sensor writes as Image and as
ProcessTampering ``Image is fileless``. ATT&CK T1620 (reflective code loading).
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from ...core.registry import SCANNERS
from ..base import Finding, ProcessView, ScanContext, Scanner, check_with

__all__ = ["MemfdExec", "check"]


@SCANNERS.register
class MemfdExec(Scanner):
    """The running image is a memfd (``/memfd:NAME (deleted)``)."""

    name = "memfd_exec"
    summary = "the process runs an image from a memfd (fileless execution)"

    def scan(self, proc: ProcessView, ctx: ScanContext) -> Iterable[Finding]:
        """One finding when ``/proc/PID/exe`` names a memfd."""
        exe = proc.exe
        if exe is not None and exe.startswith("/memfd:"):
            st = proc.exe_stat()
            size = f", {st.st_size} bytes" if st is not None else ""
            yield self.finding(f"exe {exe}{size}{seal_text(proc.base + 'exe')}")


#: memfd seals (fcntl F_ADD_SEALS, linux/fcntl.h).
_SEALS = ((0x0001, "seal"), (0x0002, "shrink"), (0x0004, "grow"), (0x0008, "write"),
          (0x0010, "future_write"), (0x0020, "exec"))
_F_GET_SEALS = 1034


def seal_text(path: str) -> str:
    """``, sealed against writing (seal,shrink,grow,write)`` for a memfd whose seals forbid
    writes (the self-protecting re-exec runc introduced for CVE-2019-5736), ``, seals: ...``
    for other seals, ``""`` for none or when they cannot be read."""
    import fcntl  # POSIX only: the module must import on Windows (plugins listing)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        seals = fcntl.fcntl(fd, _F_GET_SEALS)
    except OSError:
        return ""
    finally:
        os.close(fd)
    names = ",".join(n for bit, n in _SEALS if seals & bit)
    if not names:
        return ""
    if seals & 0x0008:
        return f", sealed against writing ({names})"
    return f", seals: {names}"


def check(pid: int, **context: Any) -> list[Finding]:
    """:class:`MemfdExec` on ``pid`` (``context``: :class:`~sysmonx.scanners.base.ScanContext`
    fields). Returns its findings, empty when none."""
    return check_with(MemfdExec(), pid, ScanContext(**context))
