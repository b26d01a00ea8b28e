"""``ptrace_attached``: another process traces this one (debugger-style control, injection).

Source: ``TracerPid`` of ``/proc/PID/status`` and the tracer's image (``/proc/TRACER/exe``).
Debuggers and tracers (gdb, strace, ltrace, lldb, rr, valgrind) are allow-listed by default
(:mod:`sysmonx.scanners.allowlist`); anything else attaching is how ptrace injection works
(ATT&CK T1055.008).
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from ...core.registry import SCANNERS
from ..base import Finding, ProcessView, ScanContext, Scanner, check_with

__all__ = ["PtraceAttached", "check"]


@SCANNERS.register
class PtraceAttached(Scanner):
    """A tracer is attached (``TracerPid`` non-zero)."""

    name = "ptrace_attached"
    summary = "another process is attached with ptrace (TracerPid), not an allow-listed debugger"

    def scan(self, proc: ProcessView, ctx: ScanContext) -> Iterable[Finding]:
        """One finding: ``traced by pid N (IMAGE)``."""
        tracer = proc.status.get("TracerPid", "0")
        if tracer and tracer != "0":
            try:
                image = os.readlink(f"/proc/{int(tracer)}/exe")
            except (OSError, ValueError):
                image = "-"
            yield self.finding(f"traced by pid {tracer} ({image})")


def check(pid: int, **context: Any) -> list[Finding]:
    """:class:`PtraceAttached` on ``pid``. Returns its findings, empty when none."""
    return check_with(PtraceAttached(), pid, ScanContext(**context))
