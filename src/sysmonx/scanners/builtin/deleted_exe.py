"""``deleted_exe``: the running image was deleted, or replaced by another file, since the exec.

Source: the kernel's view of the running image (``/proc/PID/exe``: `` (deleted)`` once the
file is unlinked) and ``stat()`` through it (the running inode) against ``stat()`` of the path
now (a different inode: the file was replaced). A package upgrade replaces running programs the
same way; the default allow-list dismisses a finding whose path now holds a file the package
manager installed (``package_upgrade``, :mod:`sysmonx.scanners.allowlist`). Fileless images
(memfd) are ``memfd_exec``'s.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from ...core.registry import SCANNERS
from ..base import Finding, ProcessView, ScanContext, Scanner, check_with

__all__ = ["DeletedExe", "check"]


@SCANNERS.register
class DeletedExe(Scanner):
    """The running image is deleted or replaced since the exec."""

    name = "deleted_exe"
    summary = "the running image was deleted or replaced since the exec"

    def scan(self, proc: ProcessView, ctx: ScanContext) -> Iterable[Finding]:
        """One finding: ``exe PATH deleted`` or ``exe PATH replaced (running dev:inode, path
        now dev:inode)``."""
        exe = proc.exe
        if exe is None or exe.startswith(("/memfd:", "/SYSV", "/dev/zero")):
            return
        path = proc.exe_path or ""
        if exe.endswith(" (deleted)"):
            now = "absent" if not os.path.lexists(path) else "another file"
            yield self.finding(f"exe {path} deleted since exec (path now: {now})")
            return
        running = proc.exe_stat()
        try:
            current = os.stat(path)
        except OSError:
            return  # renamed or unreachable from here (another mount namespace): no claim
        if running is None:
            return
        if (running.st_dev, running.st_ino) != (current.st_dev, current.st_ino):
            yield self.finding(f"exe {path} replaced since exec (running inode "
                               f"{running.st_dev:x}:{running.st_ino}, path now "
                               f"{current.st_dev:x}:{current.st_ino})")


def check(pid: int, **context: Any) -> list[Finding]:
    """:class:`DeletedExe` on ``pid``. Returns its findings, empty when none."""
    return check_with(DeletedExe(), pid, ScanContext(**context))
