"""``argv_spoofed``: the command line in memory is not the one the process was started with.

Sources, strongest first:

1. the CommandLine recorded at exec (the triggering event's; the live sensor reads it from the
   kernel at exec) against ``/proc/PID/cmdline`` now, rendered the way the sensor renders
   CommandLine (arguments joined by spaces). A recorded line that is a prefix of today's is not
   a difference (a tier may cap what it reads at exec).
2. the kernel's argument area: at exec the argument strings lie back to back from ``arg_start``
   to ``arg_end``, and the environment strings start right there (``env_start == arg_end``,
   fields 48-50 of ``/proc/PID/stat``); ``prctl(PR_SET_MM_ARG_START/ARG_END)`` moves the area.
3. the ``argv`` pointer array the kernel left on the initial stack (``startstack``, field 28:
   ``argc`` then ``argv[0..argc-1]``): the strings at those pointers must still be back to back
   (``argv[i+1] == argv[i] + strlen(argv[i]) + 1``), start at ``arg_start`` and end at
   ``arg_end``; an argument overwritten with text of another length breaks that.

Programs that retitle themselves on purpose (``setproctitle``: sshd, postgres, nginx, systemd)
are allow-listed by image by default. ATT&CK T1036 (masquerading); the technique is "argv
spoofing" (process argument spoofing).
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from ...core.registry import SCANNERS
from ..base import Finding, ProcessView, ScanContext, Scanner, check_with

__all__ = ["ArgvSpoofed", "command_line", "check"]

MAX_ARGC = 4096


def command_line(raw: Optional[bytes]) -> Optional[str]:
    """``/proc/PID/cmdline`` bytes rendered as the sensor renders CommandLine (arguments joined by
    one space, UTF-8 with replacement, control characters kept out), ``None`` when empty."""
    if not raw:
        return None
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    text = " ".join(a.decode("utf-8", "replace") for a in raw.split(b"\0"))
    return "".join(c if c >= " " or c == "\t" else " " for c in text)


def _layout_problems(proc: ProcessView) -> list[str]:
    arg_start, arg_end = proc.stat_field(48), proc.stat_field(49)
    env_start, stack = proc.stat_field(50), proc.stat_field(28)
    if not arg_start or not arg_end or not env_start:
        return []  # hidden (no permission) or no mm
    problems = []
    if arg_end != env_start:
        problems.append(f"argument area moved: arg_start {arg_start:#x} arg_end {arg_end:#x}, "
                        f"environment starts at {env_start:#x}")
    if not stack:
        return problems
    head = proc.read_u64s(stack, 1)
    if head is None or not 0 < head[0] <= MAX_ARGC:
        return problems
    argc = head[0]
    ptrs = proc.read_u64s(stack + 8, argc + 1)
    if ptrs is None or ptrs[argc] != 0:
        return problems
    lo, hi = ptrs[0], ptrs[argc - 1]
    if ptrs[0] != arg_start and not problems:
        problems.append(f"argv[0] at {ptrs[0]:#x} but the argument area starts at {arg_start:#x}")
    span = proc.read(lo, min(hi - lo + 4096, 1 << 20)) if hi >= lo else b""
    for i in range(argc):
        off = ptrs[i] - lo
        if off < 0 or off >= len(span):
            break
        end = span.find(b"\0", off)
        nxt = ptrs[i + 1] if i + 1 < argc else None
        if nxt is not None and end != nxt - lo - 1:
            problems.append(f"argv[{i}] at {ptrs[i]:#x} no longer ends where argv[{i + 1}] "
                            f"starts ({nxt:#x}): overwritten in place")
            break
        if nxt is None and end >= 0 and lo + end + 1 != env_start and lo + end + 1 != arg_end:
            problems.append(f"argv[{i}] at {ptrs[i]:#x} ends at {lo + end + 1:#x}, the argument "
                            f"area at {arg_end:#x}: overwritten in place")
    return problems


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
