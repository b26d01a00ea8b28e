"""``exe_in_writable_dir``: the running image lies in a directory any user can write to.

Source: the image path (``/proc/PID/exe``); a directory under ``/tmp``, ``/var/tmp``,
``/dev/shm``, ``/run/user``, ``/run/shm`` or ``/var/crash``, or any directory whose mode lets
others write (``S_IWOTH``), as the staging places of dropped payloads (ATT&CK T1074, T1036.005).
"""

from __future__ import annotations

import os
import stat
from typing import Any, Iterable

from ...core.registry import SCANNERS
from ..base import Finding, ProcessView, ScanContext, Scanner, check_with

__all__ = ["ExeInWritableDir", "WRITABLE_PREFIXES", "check"]

#: Directories whose subtrees are scratch space writable by users on common distributions.
WRITABLE_PREFIXES = ("/tmp/", "/var/tmp/", "/dev/shm/", "/run/user/", "/run/shm/",
                     "/var/crash/")


@SCANNERS.register
class ExeInWritableDir(Scanner):
    """The running image is under /tmp, /dev/shm, /var/tmp, /run/user ... or a world-writable
    directory."""

    name = "exe_in_writable_dir"
    summary = "the running image lies in /tmp, /dev/shm, /var/tmp, /run/user or a world-writable dir"

    def scan(self, proc: ProcessView, ctx: ScanContext) -> Iterable[Finding]:
        """One finding naming the image and why its directory counts."""
        path = proc.exe_path
        if not path or not path.startswith("/") or path.startswith(("/memfd:", "/SYSV")):
            return
        d = os.path.dirname(path)
        prefix = next((p for p in WRITABLE_PREFIXES if (d + "/").startswith(p)), None)
        why = None
        if prefix is not None:
            why = f"under {prefix.rstrip('/')}"
        else:
            try:
                mode = os.stat(d).st_mode
            except OSError:
                return
            if mode & stat.S_IWOTH:
                why = f"directory mode {stat.filemode(mode)} (world-writable)"
        if why:
            yield self.finding(f"exe {path} in {d} ({why})")


def check(pid: int, **context: Any) -> list[Finding]:
    """:class:`ExeInWritableDir` on ``pid``. Returns its findings, empty when none."""
    return check_with(ExeInWritableDir(), pid, ScanContext(**context))
