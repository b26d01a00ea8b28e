"""``argv_spoofed``: the command line in memory is not the one the process was started with.

Sources, strongest first:

1. the CommandLine recorded at exec (the triggering event's; the live sensor reads it from the
   kernel at exec) against ``/proc/PID/cmdline`` now, rendered exactly the way the sensor renders
   CommandLine (:func:`command_line`). A recorded line that is a prefix of today's is not
   a difference (a tier may cap what it reads at exec).
2. the kernel's argument area: at exec the argument strings lie back to back from ``arg_start``
   to ``arg_end``, and the environment strings start right there (``env_start == arg_end``,
   fields 48-50 of ``/proc/PID/stat``); ``prctl(PR_SET_MM_ARG_START/ARG_END)`` moves the area.
3. the argument area's strings: the kernel wrote exactly ``argc`` NUL-terminated strings there
   (``argc`` is the word at ``startstack``, field 28, which programs do not change; the
   ``argv`` pointer array after it they may, as getopt's permutation does, so it is not used); an
   argument overwritten with shorter text leaves more NULs, one with longer text runs past the
   end of the area (the last byte is no longer NUL).

Programs that retitle themselves on purpose (``setproctitle``: sshd, postgres, nginx, systemd)
are allow-listed by image by default. ATT&CK T1036 (masquerading); the technique is "argv
spoofing" (process argument spoofing).
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Optional

from ...core.registry import SCANNERS
from ..base import Finding, ProcessView, ScanContext, Scanner, check_with

__all__ = ["ArgvSpoofed", "command_line", "check"]

MAX_ARGC = 4096


def command_line(raw: Optional[bytes]) -> Optional[str]:
    """``/proc/PID/cmdline`` bytes rendered exactly as the sensor renders CommandLine (each
    argument ``os.fsdecode``-d, joined by one space, invalid UTF-8 as U+FFFD:
    :func:`sysmonx.sensor.process.clean_text`), ``None`` when empty."""
    if not raw:
        return None
    from ...sensor.process import clean_text  # imports pwd: Linux only, so not at import time
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    return clean_text(" ".join(os.fsdecode(a) for a in raw.split(b"\0")))


def _layout_problems(proc: ProcessView) -> list[str]:
    arg_start, arg_end = proc.stat_field(48), proc.stat_field(49)
    env_start, stack = proc.stat_field(50), proc.stat_field(28)
    if not arg_start or not arg_end or not env_start:
        return []  # hidden (no permission) or no mm
    if arg_end != env_start:
        return [f"argument area moved: arg_start {arg_start:#x} arg_end {arg_end:#x}, "
                f"environment starts at {env_start:#x}"]
    if not stack or not 0 < arg_end - arg_start <= 1 << 20:
        return []
    head = proc.read_u64s(stack, 1)
    if head is None or not 0 < head[0] <= MAX_ARGC:
        return []
    argc = head[0]
    area = proc.read(arg_start, arg_end - arg_start)
    if len(area) != arg_end - arg_start:
        return []
    if area[-1:] != b"\0":
        return ["the argument area no longer ends with NUL: overwritten past its end"]
    strings = area.count(b"\0")
    if strings != argc:
        return [f"the argument area holds {strings} strings but argc is {argc}: overwritten "
                "in place"]
    return []


@SCANNERS.register
class ArgvSpoofed(Scanner):
    """The command line in memory differs from the one recorded at exec."""

    name = "argv_spoofed"
    summary = "the command line in memory differs from the one recorded at exec (argv rewritten)"
    reads_memory = True

    def scan(self, proc: ProcessView, ctx: ScanContext) -> Iterable[Finding]:
        """One finding: what differs (recorded vs now, or the argument area's layout)."""
        now = command_line(proc.cmdline)
        recorded = ctx.recorded_cmdline
        reasons = []
        if recorded and recorded != "-" and now is not None and now != recorded \
                and not now.startswith(recorded):
            reasons.append(f"recorded at exec {recorded[:200]!r}, now {now[:200]!r}")
        reasons += _layout_problems(proc)
        if reasons:
            if now is not None and not reasons[0].startswith("recorded"):
                reasons.append(f"now {now[:200]!r}")
            yield self.finding("; ".join(reasons))


def check(pid: int, **context: Any) -> list[Finding]:
    """:class:`ArgvSpoofed` on ``pid`` (``recorded_cmdline=`` the CommandLine recorded at
    exec, when known). Returns its findings, empty when none."""
    return check_with(ArgvSpoofed(), pid, ScanContext(**context))
