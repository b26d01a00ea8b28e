"""One scan of one process: the scanners asked for, a shared budget, the allow-list, the
identity check, and findings as events 200 (``ScannerFinding``).

Used by the live sensor's scan stages (:mod:`sysmonx.scanners.stages`) and by ``sysmonx scan``.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Optional, Sequence

from ..core.registry import SCANNERS
from ..event import LINUX_CHANNEL, LINUX_PROVIDER, LINUX_PROVIDER_GUID, SYSMON_KEYWORDS, Event
from ..schema import CURRENT
from .allowlist import AllowEntry, AllowList
from .base import Budget, BudgetExceeded, Finding, ProcessGone, ProcessView, ScanContext, Scanner

__all__ = ["ScanReport", "Identity", "select_scanners", "scan_process", "finding_event",
           "SCANNER_FINDING", "ALL"]

#: EventID of ScannerFinding.
SCANNER_FINDING = 200
#: ``scanners="all"``: every registered scanner.
ALL = "all"
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def select_scanners(names: Sequence[str]) -> tuple[list[Scanner], frozenset[str]]:
    """Scanner instances for names as a config or ``--scanners`` gives them (``all``, a
    registered name, ``yara``, ``yara:RULE``).

    Returns:
        ``(scanners in registry order, YARA rule names to report)``: the YARA set is empty
        when every rule counts (``yara`` or ``all``).
    Raises:
        KeyError: an unknown name (the config parser validated names already).
    """
    wanted: set[str] = set()
    only: set[str] = set()
    every_rule = False
    for n in names:
        if n == ALL:
            wanted.update(SCANNERS.names())
            every_rule = True
        elif n.startswith("yara:"):
            wanted.add("yara")
            only.add(n[5:])
        else:
            SCANNERS.get(n)
            wanted.add(n)
            every_rule = every_rule or n == "yara"
    ordered = [SCANNERS.get(n)() for n in SCANNERS.names() if n in wanted]
    return ordered, frozenset() if every_rule else frozenset(only)


class Identity:
    """Computes ProcessGuids exactly as the live sensor does (machine id, boot time, start
    ticks, ``end_code``, pid), to name a scanned process and to make sure the process scanned is
    the one whose event asked for the scan (a pid may be reused, a process may exec again)."""

    def __init__(self, machine: Optional[str] = None, btime: Optional[int] = None):
        # the sensor's process module imports pwd (Linux only): not at import time
        from ..sensor.process import boot_time, machine_id_prefix
        self.machine = machine or machine_id_prefix()
        self.btime = boot_time() if btime is None else btime

    def guid(self, proc: ProcessView) -> Optional[str]:
        """The ProcessGuid of the process now, ``None`` when its stat cannot be read."""
        from ..sensor.process import process_guid
        start, end = proc.stat_field(22), proc.stat_field(27)
        if start is None:
            return None
        return process_guid(self.machine, self.btime + start // _CLK_TCK, end or 0, proc.pid)

    @staticmethod
    def same(expected: str, now: str) -> bool:
        """True when ``now`` is the process ``expected`` names; for a GUID whose key the sensor
        generated (synthetic), the start second and pid bytes decide."""
        from ..sensor.process import guid_key_is_synthetic
        if expected == now:
            return True
        if guid_key_is_synthetic(expected):
            return expected[:19] == now[:19] and expected[-5:] == now[-5:]
        return False


@dataclass
class ScanReport:
    """The outcome of one process scan.

    Attributes:
        pid, image (``/proc/PID/exe``), guid: the process.
        findings: what the scanners reported and the allow-list kept.
        dismissed: ``(finding, entry)`` the allow-list dismissed.
        skipped: why the process was not scanned (``self``, ``kernel thread``, ``gone``,
            ``unreadable`` (its image link is denied to us), ``replaced`` (not the process of
            the trigger any more)), else ``""``.
        over_budget: scanners stopped by the budget (their findings so far are lost).
        seconds: wall time; bytes: memory and file bytes read.
    """

    pid: int
    image: str = "-"
    guid: str = ""
    findings: list[Finding] = field(default_factory=list)
    dismissed: list[tuple[Finding, AllowEntry]] = field(default_factory=list)
    skipped: str = ""
    over_budget: list[str] = field(default_factory=list)
    seconds: float = 0.0
    bytes: int = 0


def scan_process(pid: int, scanners: Sequence[Scanner], *, context: Optional[ScanContext] = None,
                 allowlist: Optional[AllowList] = None, max_bytes: int = 64 << 20,
                 max_seconds: float = 2.0, expect_guid: Optional[str] = None,
                 identity: Optional[Identity] = None) -> ScanReport:
    """Run ``scanners`` on process ``pid`` with one budget, then the allow-list.

    Args:
        pid: the process.
        scanners: from :func:`select_scanners`.
        context: what the scan knows (recorded command line, YARA rules).
        allowlist: dismisses documented causes (``None``: keep every finding).
        max_bytes, max_seconds: the budget of the whole process scan.
        expect_guid: the ProcessGuid of the event that asked for the scan; a process with another
            GUID at ``pid`` is not scanned (``skipped="replaced"``).
        identity: GUID computation (created when ``None``).
    Returns:
        :class:`ScanReport`. Never raises for a process that vanishes or is unreadable.
    """
    t0 = time.perf_counter()
    rep = ScanReport(pid)
    if pid == os.getpid():
        rep.skipped = "self"
        return rep
    budget = Budget(max_bytes, max_seconds)
    proc = ProcessView(pid, budget)
    try:
        if proc.stat is None:
            rep.skipped = "gone"
            return rep
        if proc.kernel_thread:
            rep.skipped = "kernel thread"
            return rep
        if proc.exe is None:
            # a zombie, or an image this sensor may not read (another user namespace's init)
            rep.skipped = "gone" if not os.path.exists(proc.base + "exe") else "unreadable"
            return rep
        rep.image = proc.exe
        ident = identity or Identity()
        rep.guid = ident.guid(proc) or ""
        if expect_guid and not Identity.same(expect_guid, rep.guid):
            rep.skipped = "replaced"
            return rep
        ctx = context or ScanContext()
        found: list[Finding] = []
        for s in scanners:
            try:
                found.extend(s.scan(proc, ctx))
            except BudgetExceeded:
                rep.over_budget.append(s.name)
            except ProcessGone:
                rep.skipped = "gone"
                return rep
        if proc.stat_field(22) is not None and not os.path.exists(proc.base):
            rep.skipped = "gone"
            return rep
        for f in found:
            entry = allowlist.dismiss(f, rep.image) if allowlist is not None else None
            if entry is None:
                rep.findings.append(f)
            else:
                rep.dismissed.append((f, entry))
        return rep
    finally:
        proc.close()
        rep.bytes = budget.used_bytes
        rep.seconds = time.perf_counter() - t0


def _clean(s: str) -> str:
    """One line, no control characters (values come from the scanned process)."""
    return "".join(c if c >= " " and c != "\x7f" else " " for c in s)


def _utc(ts_ns: int) -> tuple[str, str]:
    dt = datetime.fromtimestamp(ts_ns // 1_000_000_000, timezone.utc)
    ms, us = (ts_ns // 1_000_000) % 1000, (ts_ns // 1000) % 1_000_000
    return (f"{dt:%Y-%m-%d %H:%M:%S}.{ms:03d}", f"{dt:%Y-%m-%dT%H:%M:%S}.{us:06d}000Z")


def finding_event(report: ScanReport, finding: Finding, trigger: Optional[Event] = None,
                  ts_ns: Optional[int] = None, computer: Optional[str] = None) -> Event:
    """Event 200 ``ScannerFinding`` for one finding.

    The System header is the triggering event's (provider, channel, computer: a finding of the
    live sensor looks like its other events), or Sysmon for Linux's for a scan on demand.
    ``RuleName`` is ``-`` (the filter names it); ``TriggerEventId`` the trigger's EventID, 0 on
    demand; ``Image`` the trigger's (as the process's other events name it; the kernel's view now,
    `` (deleted)`` included, is in Details where it matters), on demand ``/proc/PID/exe``.
    ``record_id`` is left ``None`` (the sensor numbers what it writes).
    """
    ts = time.time_ns() if ts_ns is None else ts_ns
    utc, created = _utc(ts)
    image = report.image
    if trigger is not None and trigger.data.get("Image") not in (None, "", "-"):
        image = trigger.data["Image"]  # the process's Image as its other events name it
    ev = CURRENT.events[SCANNER_FINDING]
    data = {"RuleName": "-", "UtcTime": utc, "ProcessGuid": report.guid or "-",
            "ProcessId": str(report.pid), "Image": _clean(image),
            "Scanner": finding.scanner, "Finding": _clean(finding.finding),
            "Details": _clean(finding.details),
            "TriggerEventId": str(trigger.event_id if trigger is not None else 0)}
    if trigger is not None:
        return Event(SCANNER_FINDING, data, provider=trigger.provider,
                     provider_guid=trigger.provider_guid, version=ev.version,
                     level=ev.level_value, task=SCANNER_FINDING, opcode=0,
                     keywords=trigger.keywords or SYSMON_KEYWORDS, time_created=created,
                     record_id=None, process_id=os.getpid(), thread_id=threading.get_native_id(),
                     channel=trigger.channel, computer=trigger.computer)
    import socket
    return Event(SCANNER_FINDING, data, provider=LINUX_PROVIDER,
                 provider_guid=LINUX_PROVIDER_GUID, version=ev.version, level=ev.level_value,
                 task=SCANNER_FINDING, opcode=0, keywords=SYSMON_KEYWORDS, time_created=created,
                 record_id=None, process_id=os.getpid(), thread_id=threading.get_native_id(),
                 channel=LINUX_CHANNEL, computer=computer or socket.gethostname())
