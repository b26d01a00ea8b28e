"""``rwx_memory``: memory that is writable and executable at once.

Source: ``/proc/PID/maps`` permissions ``rwx``. W^X is the norm of every modern toolchain; an
``rwx`` mapping is a shellcode stager's or an old JIT's (allow-listed by image). ATT&CK T1055.
"""

from __future__ import annotations

from typing import Any, Iterable

from ...core.registry import SCANNERS
from ..base import KERNEL_MAPPINGS, Finding, ProcessView, ScanContext, Scanner, check_with, shorten

__all__ = ["RwxMemory", "check"]


@SCANNERS.register
class RwxMemory(Scanner):
    """A mapping is writable and executable."""

    name = "rwx_memory"
    summary = "a mapping is writable and executable at once (rwx)"

    def scan(self, proc: ProcessView, ctx: ScanContext) -> Iterable[Finding]:
        """One finding listing the ``rwx`` mappings."""
        found = [m for m in proc.maps if m.perms.startswith("rwx") and m.path not in KERNEL_MAPPINGS]
        if found:
            items = [f"{m} {m.size} bytes {m.path or '(anonymous)'}" for m in found]
            yield self.finding(f"{len(found)} rwx mapping(s): " + shorten(items))


def check(pid: int, **context: Any) -> list[Finding]:
    """:class:`RwxMemory` on ``pid``. Returns its findings, empty when none."""
    return check_with(RwxMemory(), pid, ScanContext(**context))
