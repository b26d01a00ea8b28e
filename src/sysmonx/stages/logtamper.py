"""The ``tamper`` stage: what a recorded log says about attempts to blind, stop or reconfigure
Sysmon, as TamperFinding events (201) next to the records that show it.

Runs before the non-Sysmon gate, so it sees the Security and System records of a mixed log as
well as Sysmon's. Every record passes on unchanged; a finding is emitted just before the record
that revealed it. On for ``sysmonx replay --tamper``, always on for ``sysmonx run --follow``.

Techniques (names from :data:`~sysmonx.stages.tamperfinding.TECHNIQUES`) and how each appears in
real logs (docs/RESILIENCE.md cites the sources):

``sysmon_stopped``
    Sysmon event 4 with ``State`` ``Stopped``; System 7036 (Service Control Manager, ``param1``
    a Sysmon service, ``param2`` ``stopped``), 7034 (the service terminated unexpectedly), 7040
    (start type of a Sysmon service changed to ``disabled``).
``sysmon_config_changed``
    Sysmon event 16 after the log of that computer had other Sysmon events (not the 16 Sysmon
    writes when it starts, i.e. not within :attr:`LogTamperStage.start_grace_s` of a 4
    ``Started``, nor the first Sysmon record of the log), with the previous and new hash.
``sysmon_rules_registry``
    Sysmon 12/13/14 on ``...\\Services\\<Sysmon service or driver>\\...`` (the driver's
    ``Parameters\\Rules`` value holds the rule blob).
``driver_unloaded``
    System event 1 of Microsoft-Windows-FilterManager naming the Sysmon driver
    (``DeviceName``: "File System Filter 'SysmonDrv' ... unloaded successfully"); a process
    created (Sysmon 1, Security 4688) whose command line is ``fltmc ... unload <Sysmon
    driver>``.
``log_cleared``
    Security 1102 and System 104 (provider Microsoft-Windows-Eventlog; UserData
    ``SubjectUserName``/``SubjectDomainName``, for 104 also ``Channel``).
``record_gap``
    EventRecordIDs missing within one channel of one computer in one file (records are numbered
    per channel without gaps; a gap means records were deleted or the file was edited), or the
    numbering restarting at 1.
``time_gap``
    no record of a channel for much longer than its usual rate (see :class:`LogTamperStage`).
``sysmon_error``
    Sysmon event 255 (``ID``, ``Description``).
"""

from __future__ import annotations

import calendar
import re
from collections import Counter, deque
from typing import Any, Optional

from ..core.registry import STAGES
from ..event import LINUX_PROVIDER, SYSMON_PROVIDERS, Event
from ..interfaces import Emit, Stage
from .tamperfinding import tamper_finding

__all__ = ["LogTamperStage", "DEFAULT_SERVICE_NAMES"]

#: Names of Sysmon's service and driver (case-insensitive), besides any name containing
#: "sysmon" (``-d`` renames the driver; ``DriverName`` in the config).
DEFAULT_SERVICE_NAMES = ("Sysmon", "Sysmon64", "SysmonDrv")

_EVENTLOG = "Microsoft-Windows-Eventlog"
_SCM = "Service Control Manager"
_FLTMGR = "Microsoft-Windows-FilterManager"


def _time_ns(t: str) -> Optional[int]:
    """Canonical ``YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`` -> ns since 1970; ``None`` otherwise."""
    if len(t) != 30 or t[10] != "T" or t[-1] != "Z":
        return None
    try:
        s = calendar.timegm((int(t[0:4]), int(t[5:7]), int(t[8:10]), int(t[11:13]),
                             int(t[14:16]), int(t[17:19]), 0, 0, 0))
        return s * 1_000_000_000 + int(t[20:29])
    except ValueError:
        return None


class _Channel:
    """What one (file, computer, channel) stream has shown so far."""

    __slots__ = ("last_id", "last_ns", "gaps")

    def __init__(self) -> None:
        self.last_id: Optional[int] = None
        self.last_ns: Optional[int] = None
        self.gaps: deque[int] = deque(maxlen=64)


@STAGES.register
class LogTamperStage(Stage):
    """Finds tampering in recorded logs (module docstring); passes every record unchanged.

    Args:
        service_names: Sysmon service/driver names besides :data:`DEFAULT_SERVICE_NAMES` (any
            name containing ``sysmon`` matches anyway).
        time_gap_min_s: a silence shorter than this (seconds) is never a ``time_gap``.
        time_gap_factor: a silence must also exceed this many times the channel's usual gap
            (the 90th percentile of its last 64 gaps between records, at least 1 s).
        time_gap_history: gaps a channel must have shown before silences are judged.
        start_grace_s: an event 16 this soon after a 4 ``Started`` is Sysmon's own start report.
    Attributes:
        findings: technique -> findings emitted.
    Source: docs/RESILIENCE.md (how each technique appears in real logs).
    """

    name = "tamper"
    summary = "recorded logs: Sysmon stopped/reconfigured/unloaded, logs cleared, record and " \
              "time gaps -> TamperFinding (201)"
    stateful = True

    def __init__(self, service_names: tuple[str, ...] = (), time_gap_min_s: float = 3600.0,
                 time_gap_factor: float = 60.0, time_gap_history: int = 32,
                 start_grace_s: float = 60.0) -> None:
        names = {n.lower() for n in DEFAULT_SERVICE_NAMES + tuple(service_names)}
        self._names = names
        alt = "|".join(sorted(re.escape(n) for n in names))
        self._reg_key = re.compile(r"\\services\\(" + alt + r"|[^\\]*sysmon[^\\]*)(\\|$)",
                                   re.IGNORECASE)
        self._fltmc_unload = re.compile(r"\bunload\b", re.IGNORECASE)
        self.time_gap_min_ns = int(time_gap_min_s * 1e9)
        self.time_gap_factor = time_gap_factor
        self.time_gap_history = time_gap_history
        self.start_grace_ns = int(start_grace_s * 1e9)
        self._channels: dict[tuple[Any, str, str], _Channel] = {}
        # (file, computer) -> Sysmon records seen; -> ns of the last 4 Started
        self._sysmon_seen: dict[tuple[Any, str], int] = {}
        self._started: dict[tuple[Any, str], Optional[int]] = {}
        self._hash: dict[str, str] = {}  # computer -> last ConfigurationFileHash
        self.findings: Counter[str] = Counter()

    # --- helpers -------------------------------------------------------------------------

    def _is_sysmon_name(self, name: str) -> bool:
        n = name.strip().lower()
        return bool(n) and (n in self._names or "sysmon" in n)

    def _emit(self, emit: Emit, technique: str, details: str, e: Event, *,
              actor: bool = False) -> None:
        d = e.data
        src = str(e.origin[0]) if e.origin else (e.channel or "-")
        ev = tamper_finding(
            technique, details, when=e.time_created or None, source=src,
            process_guid=d.get("ProcessGuid") if actor else None,
            process_id=_int(d.get("ProcessId")) if actor else None,
            image=d.get("Image") if actor else None,
            platform="linux" if e.provider == LINUX_PROVIDER else "windows",
            computer=e.computer or "")
        self.findings[technique] += 1
        emit(ev)

    # --- the stage -----------------------------------------------------------------------

    def process(self, item: Any, emit: Emit) -> bool:
        """Emit the findings ``item`` reveals (before it); always pass it on."""
        if item.__class__ is not Event or item.event_id in (201, 202) or item.origin is None:
            return True  # not a record read from a log (the sensor's own events)
        e: Event = item
        self._gaps(e, emit)
        if e.provider in SYSMON_PROVIDERS:
            self._sysmon(e, emit)
        elif e.provider == _EVENTLOG and (e.event_id, e.channel) in ((1102, "Security"),
                                                                     (104, "System")):
            self._cleared(e, emit)
        elif e.provider == _SCM and e.event_id in (7034, 7036, 7040):
            self._service(e, emit)
        elif e.provider == _FLTMGR and e.event_id == 1:
            dev = e.data.get("DeviceName", "")
            if self._is_sysmon_name(dev):
                self._emit(emit, "driver_unloaded",
                           f"File System Filter '{dev}' unloaded (FilterManager event 1, "
                           f"status {e.data.get('FinalStatus', '-')})", e)
        elif e.event_id == 4688 and e.channel == "Security":
            self._fltmc(e, emit, e.data.get("NewProcessName", ""),
                        e.data.get("CommandLine", ""), actor=False)
        return True

    def _sysmon(self, e: Event, emit: Emit) -> None:
        d = e.data
        key = (e.origin[0] if e.origin else None, e.computer)
        seen = self._sysmon_seen.get(key, 0)
        self._sysmon_seen[key] = seen + 1
        eid = e.event_id
        if eid == 4:
            state = d.get("State", "")
            if state.lower() == "stopped":
                self._emit(emit, "sysmon_stopped",
                           f"Sysmon service state Stopped (event 4, version "
                           f"{d.get('Version', '-')})", e)
            elif state.lower() == "started":
                self._started[key] = _time_ns(e.time_created)
        elif eid == 16:
            new = d.get("ConfigurationFileHash", "-") or "-"
            old = self._hash.get(e.computer)
            self._hash[e.computer] = new
            now = _time_ns(e.time_created)
            started = self._started.get(key)
            at_start = (started is not None and now is not None
                        and 0 <= now - started <= self.start_grace_ns)
            if seen and not at_start:
                self._emit(emit, "sysmon_config_changed",
                           f"configuration {d.get('Configuration', '-')} loaded mid-log; "
                           f"hash {old or 'unknown (no earlier event 16)'} -> {new}", e)
        elif eid in (12, 13, 14):
            target = d.get("TargetObject", "")
            if self._reg_key.search(target):
                extra = f" = {d['Details']}" if d.get("Details") else ""
                self._emit(emit, "sysmon_rules_registry",
                           f"{d.get('EventType', 'registry')} {target}{extra} by "
                           f"{d.get('Image', '-')}", e, actor=True)
        elif eid == 1:
            self._fltmc(e, emit, d.get("Image", ""), d.get("CommandLine", ""), actor=True)
        elif eid == 255:
            self._emit(emit, "sysmon_error",
                       f"Sysmon error {d.get('ID', '-')}: {d.get('Description', '-')}", e)

    def _fltmc(self, e: Event, emit: Emit, image: str, cmdline: str, *, actor: bool) -> None:
        base = image.replace("/", "\\").rsplit("\\", 1)[-1].lower()
        if base != "fltmc.exe" or not self._fltmc_unload.search(cmdline):
            return
        words = cmdline.replace('"', " ").split()
        try:
            target = words[[w.lower() for w in words].index("unload") + 1]
        except (ValueError, IndexError):
            return
        if self._is_sysmon_name(target):
            self._emit(emit, "driver_unloaded",
                       f"fltmc unload of the Sysmon driver {target}: {cmdline}", e, actor=actor)

    def _cleared(self, e: Event, emit: Emit) -> None:
        d = e.data
        user = d.get("SubjectUserName", "-")
        domain = d.get("SubjectDomainName", "")
        who = f"{domain}\\{user}" if domain and domain != "-" else user
        log = d.get("Channel") or e.channel
        self._emit(emit, "log_cleared",
                   f"{log} log cleared by {who} ({e.channel} {e.event_id})", e)

    def _service(self, e: Event, emit: Emit) -> None:
        d = e.data
        name = d.get("param1", "")
        if not (self._is_sysmon_name(name) or self._is_sysmon_name(d.get("param4", ""))):
            return
        if e.event_id == 7036 and d.get("param2", "").lower() == "stopped":
            self._emit(emit, "sysmon_stopped",
                       f"service {name} entered the stopped state (System 7036)", e)
        elif e.event_id == 7034:
            self._emit(emit, "sysmon_stopped",
                       f"service {name} terminated unexpectedly (System 7034)", e)
        elif e.event_id == 7040 and d.get("param3", "").lower() == "disabled":
            self._emit(emit, "sysmon_stopped",
                       f"start type of service {name} changed from {d.get('param2', '-')} to "
                       f"disabled (System 7040)", e)

    def _gaps(self, e: Event, emit: Emit) -> None:
        key = (e.origin[0] if e.origin else None, e.computer, e.channel)
        ch = self._channels.get(key)
        if ch is None:
            ch = self._channels[key] = _Channel()
        rid = e.record_id
        if rid is not None and ch.last_id is not None:
            if rid > ch.last_id + 1:
                missing = rid - ch.last_id - 1
                self._emit(emit, "record_gap",
                           f"{missing} record{'s' if missing > 1 else ''} missing in "
                           f"{e.channel} of {e.computer}: EventRecordID {ch.last_id} then "
                           f"{rid}", e)
            elif rid == 1 and ch.last_id > 1:
                self._emit(emit, "record_gap",
                           f"EventRecordID of {e.channel} restarted at 1 after {ch.last_id} "
                           "(log cleared or recreated)", e)
        if rid is not None and (ch.last_id is None or rid > ch.last_id or rid == 1):
            ch.last_id = rid
        now = _time_ns(e.time_created)
        if now is None:
            return
        if ch.last_ns is not None and now > ch.last_ns:
            gap = now - ch.last_ns
            if len(ch.gaps) >= self.time_gap_history and gap >= self.time_gap_min_ns:
                usual = max(sorted(ch.gaps)[int(len(ch.gaps) * 0.9)], 1_000_000_000)
                if gap > self.time_gap_factor * usual:
                    self._emit(emit, "time_gap",
                               f"no {e.channel} record of {e.computer} for {gap / 1e9:.0f} s "
                               f"(usual gap up to {usual / 1e9:.0f} s) before this one", e)
            ch.gaps.append(gap)
        if ch.last_ns is None or now > ch.last_ns:
            ch.last_ns = now


def _int(v: Optional[str]) -> Optional[int]:
    try:
        return int(v) if v else None
    except ValueError:
        return None
