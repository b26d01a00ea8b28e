"""Scans in the live loop: a bounded queue and a worker, and two stages around the filter.

::

    sysmon-gate -> scanner-findings -> filter -> scanner-requests -> record-numbers -> ...
                   (puts finished findings       (asks for scans of events the config's
                    into the stream, so the       scanners= rules included)
                    filter sees them)

``scanner-requests`` asks :class:`~sysmonx.filtering.triggers.ScanTriggers` which scanners the
rules that included an event want, and submits the event's process to :class:`ScanService`
(never blocking: when the queue is full its oldest request is dropped and counted, and the
drops of each tick are written as one event 255 ``ID Scanner``). The worker scans off the event
path, at a low CPU priority, newest request first (under overload the process of a fresh event
is the one most likely still alive; an old request's is most likely gone), checking that the
process is still the one the event named (ProcessGuid), and turns findings into events 200.
``scanner-findings`` emits them at the next event or tick (about once a second), *before* the
filter, so a ``<ScannerFinding>`` rule decides on them and names them, they are numbered and
Sigma sees them. At the end of the run the worker finishes what is queued
(bounded wait) and the rest is emitted.

The same finding on the same process (ProcessGuid, finding, details) is written once per run;
the same process asked for the same scanners within ``repeat_s`` is scanned once.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Optional

from ..configmodel import Config
from ..core.registry import STAGES
from ..event import SYSMON_PROVIDERS, Event
from ..filtering.engine import EngineOptions
from ..filtering.triggers import ScanTriggers
from ..interfaces import Emit, Stage
from ..schema import CURRENT
from .allowlist import AllowList
from .base import ScanContext
from .engine import Identity, ScanReport, _utc, finding_event, scan_process, select_scanners

__all__ = ["ScanOptions", "ScanStats", "ScanService", "ScanFindings", "ScanRequests",
           "scan_stages"]


@dataclass
class ScanOptions:
    """How live scans run.

    Attributes:
        queue_size: pending scan requests beyond which requests are dropped (counted, event 255).
        max_bytes, max_seconds: budget of one process scan.
        yara_rules: compiled rules (``yara.Rules``) or ``None``.
        allowlist: dismisses documented causes; ``None``: keep every finding.
        repeat_s: the same process and scanners are scanned once within this many seconds.
        nice: the worker thread's CPU niceness (Linux: per thread).
        drain_s: at the end of a run, how long to wait for queued scans.
        scan_all: scanner names run on every included event of :attr:`scan_all_ids` whatever the
            config says (``sysmonx run --scan``).
        scan_all_ids: EventIDs for :attr:`scan_all` (default ProcessCreate).
    """

    queue_size: int = 1024
    max_bytes: int = 64 << 20
    max_seconds: float = 2.0
    yara_rules: Any = None
    allowlist: Optional[AllowList] = None
    repeat_s: float = 10.0
    nice: int = 10
    drain_s: float = 10.0
    scan_all: tuple[str, ...] = ()
    scan_all_ids: frozenset[int] = frozenset({1})


@dataclass
class ScanStats:
    """Counters: ``requested`` (events whose rules asked), ``repeats`` (same process and scanners
    within ``repeat_s``), ``dropped`` (queue full), ``done`` (processes scanned), ``skipped``
    (reason -> count: gone, replaced, self, kernel thread), ``over_budget`` (scanner -> scans it
    could not finish within the budget), ``findings`` / ``dismissed`` (finding name -> count),
    ``duplicates`` (findings already written for that process), ``scan_seconds`` (total),
    ``max_scan_seconds``."""

    requested: int = 0
    repeats: int = 0
    dropped: int = 0
    done: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    over_budget: Counter[str] = field(default_factory=Counter)
    findings: Counter[str] = field(default_factory=Counter)
    dismissed: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    scan_seconds: float = 0.0
    max_scan_seconds: float = 0.0

    def summary(self) -> str:
        """One line for the run's closing summary."""
        text = (f"scans: requested {self.requested:,}, done {self.done:,}, dropped (queue full) "
                f"{self.dropped:,}, repeats {self.repeats:,}")
        if self.skipped:
            text += ", skipped " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.skipped.items()))
        if self.over_budget:
            text += ", over budget " + ", ".join(f"{k} {v:,}"
                                                 for k, v in sorted(self.over_budget.items()))
        if self.done:
            text += (f"; scan time mean {1e3 * self.scan_seconds / self.done:.1f} ms, max "
                     f"{1e3 * self.max_scan_seconds:.0f} ms")
        text += f"; findings {sum(self.findings.values()):,}"
        if self.dismissed:
            text += f" (allow-listed {sum(self.dismissed.values()):,})"
        return text


@dataclass
class _Request:
    names: tuple[str, ...]
    pid: int
    guid: str
    trigger: Event
    cmdline: Optional[str]


class ScanService:
    """The scan queue and its worker thread (module docstring).

    Args:
        options: :class:`ScanOptions`.
        identity: ProcessGuid computation (default: this host's).
    Attributes:
        stats: :class:`ScanStats` (updated by the worker; read any time).
    """

    def __init__(self, options: Optional[ScanOptions] = None,
                 identity: Optional[Identity] = None) -> None:
        self.options = options or ScanOptions()
        self.identity = identity or Identity()
        self.stats = ScanStats()
        # pending requests, newest last; the worker takes the newest (its process is the most
        # likely still alive) and a full queue drops the oldest
        self._q: deque[_Request] = deque()
        self._cv = threading.Condition()
        self._stop = False
        self._out: list[Event] = []
        self._lock = threading.Lock()
        self._recent: OrderedDict[tuple[str, tuple[str, ...]], float] = OrderedDict()
        self._written: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._selected: dict[tuple[str, ...], Any] = {}
        self._thread: Optional[threading.Thread] = None
        self._busy = 0
        self._loss: Optional[list[Any]] = None  # [count, first ns, last ns, trigger]
        self._reported_drops = 0

    # -- loop side -----------------------------------------------------------------------------

    def submit(self, names: tuple[str, ...], pid: int, guid: str, trigger: Event,
               cmdline: Optional[str]) -> bool:
        """Queue one scan request; False for a repeat. Never blocks: with the queue full the
        oldest pending request is dropped (counted; reported by :meth:`take`)."""
        st = self.stats
        st.requested += 1
        now = time.monotonic()
        key = (guid, names)
        last = self._recent.get(key)
        if last is not None and now - last < self.options.repeat_s:
            st.repeats += 1
            return False
        self._recent[key] = now
        self._recent.move_to_end(key)
        while len(self._recent) > 65536:
            self._recent.popitem(last=False)
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="sysmonx-scan", daemon=True)
            self._thread.start()
        dropped = None
        with self._cv:
            if len(self._q) >= self.options.queue_size:
                dropped = self._q.popleft()
            self._q.append(_Request(names, pid, guid, trigger, cmdline))
            self._cv.notify()
        if dropped is not None:
            self._recent.pop((dropped.guid, dropped.names), None)
            st.dropped += 1
            ts = time.time_ns()
            if self._loss is None:
                self._loss = [0, ts, ts, dropped.trigger]
            self._loss[0] += 1
            self._loss[2] = ts
        return True

    def take(self, losses: bool = True) -> list[Event]:
        """Finished findings and, with ``losses``, one event 255 for the requests dropped since
        the last report (one loss period)."""
        out: list[Event] = []
        if self._out:
            with self._lock:
                out, self._out = self._out, []
        loss = self._loss
        if losses and loss is not None:
            self._loss = None
            out.append(self._loss_event(*loss))
        return out

    def drain(self, timeout: Optional[float] = None) -> bool:
        """Wait until every queued scan is done (at most ``timeout`` s, default
        ``options.drain_s``). True when the queue emptied."""
        if self._thread is None:
            return True
        end = time.monotonic() + (self.options.drain_s if timeout is None else timeout)
        while (self._q or self._busy) and time.monotonic() < end:
            time.sleep(0.01)
        return not self._q and not self._busy

    def close(self) -> None:
        """Stop the worker (queued requests that were not scanned stay unscanned)."""
        t, self._thread = self._thread, None
        if t is not None:
            with self._cv:
                self._stop = True
                self._q.clear()
                self._cv.notify()
            t.join(timeout=5)

    def _loss_event(self, count: int, first: int, last: int, trigger: Event) -> Event:
        ev = CURRENT.events[255]
        desc = (f"{count} scan request(s) could not be queued (scan queue full, "
                f"{self.options.queue_size} pending) from {_utc(first)[0]} to {_utc(last)[0]} UTC")
        return Event(255, {"UtcTime": _utc(last)[0], "ID": "Scanner", "Description": desc},
                     provider=trigger.provider, provider_guid=trigger.provider_guid,
                     version=ev.version, level=ev.level_value, task=255, opcode=0,
                     keywords=trigger.keywords, time_created=_utc(last)[1], record_id=None,
                     process_id=os.getpid(), thread_id=threading.get_native_id(),
                     channel=trigger.channel, computer=trigger.computer)

    # -- worker side ---------------------------------------------------------------------------

    def _work(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.options.nice)
        except (OSError, AttributeError):
            pass  # not Linux, or not permitted: scans run at the sensor's priority
        while True:
            with self._cv:
                while not self._q and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                req = self._q.pop()  # the newest
                self._busy = 1
            try:
                self._scan(req)
            finally:
                self._busy = 0

    def _scan(self, req: _Request) -> None:
        sel = self._selected.get(req.names)
        if sel is None:
            sel = self._selected[req.names] = select_scanners(req.names)
        scanners, only = sel
        o = self.options
        ctx = ScanContext(recorded_cmdline=req.cmdline, yara_rules=o.yara_rules, yara_only=only)
        rep = scan_process(req.pid, scanners, context=ctx, allowlist=o.allowlist,
                           max_bytes=o.max_bytes, max_seconds=o.max_seconds,
                           expect_guid=req.guid, identity=self.identity)
        self._account(rep, req)

    def _account(self, rep: ScanReport, req: _Request) -> None:
        st = self.stats
        if rep.skipped:
            st.skipped[rep.skipped] += 1
            return
        st.done += 1
        st.scan_seconds += rep.seconds
        st.max_scan_seconds = max(st.max_scan_seconds, rep.seconds)
        for name in rep.over_budget:
            st.over_budget[name] += 1
        for f, _ in rep.dismissed:
            st.dismissed[f.finding] += 1
        events = []
        for f in rep.findings:
            key = (rep.guid, f.finding, f.details)
            if key in self._written:
                st.duplicates += 1
                continue
            self._written[key] = None
            if len(self._written) > 65536:
                self._written.popitem(last=False)
            st.findings[f.finding] += 1
            events.append(finding_event(rep, f, req.trigger))
        if events:
            with self._lock:
                self._out.extend(events)


def _process_of(event: Event) -> tuple[Optional[int], str]:
    d = event.data
    pid = d.get("ProcessId") or d.get("SourceProcessId")
    guid = d.get("ProcessGuid") or d.get("SourceProcessGuid") or d.get("SourceProcessGUID") or ""
    try:
        return (int(pid) if pid else None), guid
    except ValueError:
        return None, guid


@STAGES.register
class ScanFindings(Stage):
    """Puts finished scanner findings (event 200) and scan losses (255) into the stream."""

    name = "scanner-findings"
    summary = "puts ScannerFinding events (200) from the scan worker into the stream, before the filter"

    def __init__(self, service: Optional[ScanService] = None) -> None:
        self.service = service or ScanService()

    def _flush(self, emit: Emit) -> None:
        for ev in self.service.take():
            emit(ev)

    def process(self, item: Any, emit: Emit) -> bool:
        """Emit the findings the worker finished, then pass the item."""
        if self.service._out:
            for ev in self.service.take(losses=False):
                emit(ev)
        return True

    def tick(self, now_ns: int, emit: Emit) -> None:
        """Emit what the worker finished, and the scan requests dropped since the last tick as
        one event 255 (about once a second)."""
        self._flush(emit)

    def finish(self, emit: Emit) -> None:
        """Wait for queued scans (bounded), emit their findings, stop the worker."""
        self.service.drain()
        self._flush(emit)
        self.service.close()


@STAGES.register
class ScanRequests(Stage):
    """Asks for scans of the processes of events that scanners= rules included."""

    name = "scanner-requests"
    summary = "asks for scans of the processes of events the config's scanners= rules included"

    def __init__(self, config: Optional[Config] = None, service: Optional[ScanService] = None,
                 options: Optional[EngineOptions] = None) -> None:
        self.service = service or ScanService()
        self.engine_options = options
        self.triggers = ScanTriggers(config, options)
        self.scan_all = self.service.options.scan_all
        self.scan_all_ids = self.service.options.scan_all_ids

    def reload(self, config: Optional[Config]) -> None:
        """Compile the new configuration's scan requests."""
        self.triggers = ScanTriggers(config, self.engine_options)

    def process(self, item: Any, emit: Emit) -> bool:
        """Submit a scan for an included Sysmon event whose rules ask for one; always pass."""
        if item.__class__ is not Event or item.provider not in SYSMON_PROVIDERS:
            return True
        eid = item.event_id
        if eid >= 200 or eid in (4, 16, 255):
            return True
        names = self.triggers.scanners_for(eid, item.data) if eid in self.triggers.event_ids \
            else ()
        if self.scan_all and eid in self.scan_all_ids:
            names = tuple(dict.fromkeys(names + self.scan_all))
        if names:
            pid, guid = _process_of(item)
            if pid:
                cmdline = item.data.get("CommandLine") if eid == 1 else None
                self.service.submit(names, pid, guid, item, cmdline)
        return True


def scan_stages(config: Optional[Config], options: ScanOptions,
                engine_options: Optional[EngineOptions] = None) -> tuple[Stage, Stage]:
    """``(scanner-findings, scanner-requests)`` sharing one :class:`ScanService`: the first goes
    before the filter, the second after it. YARA rules: ``options.yara_rules``, else the
    config's ``<YaraRules>`` (compiled here).

    Raises:
        ConfigError: the config's ``<YaraRules>`` cannot be compiled (or yara-python is missing).
    """
    path = config.options.get("YaraRules") if config is not None else None
    if options.yara_rules is None and path:
        from .builtin.yara import load_rules
        options = dataclasses.replace(options, yara_rules=load_rules(path))
    service = ScanService(options)
    return ScanFindings(service), ScanRequests(config, service, engine_options)


def requested(config: Optional[Config], options: Optional[ScanOptions]) -> bool:
    """True when a run needs the scan stages (the config asks, or ``--scan``)."""
    return bool((config is not None and config.requests_scans)
                or (options is not None and options.scan_all))


