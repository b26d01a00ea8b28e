"""Observations -> Sysmon for Linux events, with the fields and value formats Sysmon for Linux
writes (shared/spec/sysmon-semantics.md sections 4.2, 4.3 and 5.3).

Every backend's observations go through the same :class:`Assembler`, so an event's values do not
depend on which tier collected it. Field order comes from the schema catalogue.

Unknown values (one convention for every tier; docs/ARCHITECTURE.md "Unknown values"): a field
whose value the tier could not know is written as :data:`UNKNOWN` (``-``) for text, ``0`` for
process ids and ports (:data:`UNKNOWN_NUMBER`; neither is ever a real value of those fields), and
the all-zero GUID for a process that could not be identified at all. A tier never writes a
plausible guess instead.
"""

from __future__ import annotations

import importlib
import os
import socket
import threading
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Optional

from ..event import (LINUX_CHANNEL, LINUX_PROVIDER, LINUX_PROVIDER_GUID, SYSMON_KEYWORDS, Event)
from ..schema import CURRENT
from ..version import __version__
from . import observations as ob
from . import process as _process
from .process import (UNSET_ID, ZERO_GUID, FileHasher, ProcessCache, clean_text, image_state,
                      logon_guid, user_name)

__all__ = ["Assembler", "utc_time", "event_time", "UNKNOWN", "UNKNOWN_NUMBER", "TAMPER_TYPES",
           "BUILDERS"]

#: The documented unknown value of a text field (Sysmon's own "empty" rendering).
UNKNOWN = "-"
#: The documented unknown value of a process id or port field (pid 0 and port 0 never occur as
#: the value of those fields).
UNKNOWN_NUMBER = "0"
#: ProcessTampering (25) ``Type`` values the Linux sensor writes, by :func:`image_state`.
TAMPER_TYPES = {"fileless": "Image is fileless", "deleted": "Image is deleted"}

#: How long (ns) a UDP connect to port 53 without a known source port waits to be joined with a
#: DNS query sent after it (tier B), and how far a DNS packet's time may precede a connect whose
#: time comes from a coarse clock.
DNS_JOIN_NS = 2_000_000_000
DNS_JOIN_SLACK_NS = 20_000_000


#: observation type -> ``builder(assembler, observation) -> list[Event]`` for the observation
#: types whose events are built in modules of their own (:mod:`sysmonx.sensor.visibility`
#: registers its builders here when it is imported, at the end of this module).
BUILDERS: dict = {}
#: observation type -> ``check(assembler, pid, ts_ns) -> list[Event]`` run after its events
#: (the identity check of :mod:`sysmonx.sensor.visibility`).
IDENTITY_CHECK: dict = {}

#: event id -> (System Version, Level) from the schema catalogue (looked up once)
_HEADS: dict = {}

#: The compiled assembly of events 1 and 5 (``sysmonx.sensor._ringbatch.Builder``: the same
#: events as :meth:`Assembler._exec`/:meth:`Assembler._exit`, which define them, without a Python
#: frame per event). ``None`` when the extension is not built or ``SYSMONX_PURE_PYTHON`` is set
#: (read once, at import, as :mod:`sysmonx.core.native` does).
_Builder: Optional[type] = None
if os.environ.get("SYSMONX_PURE_PYTHON", "") in ("", "0"):
    try:
        _Builder = importlib.import_module("sysmonx.sensor._ringbatch").Builder
    except (ImportError, AttributeError):  # not built: the Python methods
        _Builder = None

_second = [-1, "", ""]  # the last second formatted: [epoch second, UtcTime form, ISO form]


def _seconds(s: int) -> list:
    sec = _second
    if sec[0] != s:  # one strftime per second instead of two per event
        dt = datetime.fromtimestamp(s, timezone.utc)
        sec = [s, dt.strftime("%Y-%m-%d %H:%M:%S"), dt.strftime("%Y-%m-%dT%H:%M:%S")]
        globals()["_second"] = sec
    return sec


def utc_time(ts_ns: int) -> str:
    """Sysmon's UtcTime: ``YYYY-MM-DD HH:MM:SS.mmm`` (UTC, milliseconds)."""
    s, ns = divmod(ts_ns, 1_000_000_000)
    return f"{_seconds(s)[1]}.{ns // 1_000_000:03d}"


def _stamps(ts_ns: int) -> tuple:
    """``(UtcTime, TimeCreated)`` of one event time: :func:`utc_time` and :func:`event_time`
    with one division and one look-up of the formatted second."""
    s, ns = divmod(ts_ns, 1_000_000_000)
    sec = _second if _second[0] == s else _seconds(s)
    return f"{sec[1]}.{ns // 1_000_000:03d}", f"{sec[2]}.{ns // 1000:06d}000Z"


def event_time(ts_ns: int) -> str:
    """System/TimeCreated in the canonical form, with Sysmon for Linux's microsecond precision
    (``YYYY-MM-DDTHH:MM:SS.uuuuuu000Z``, spec 5.3 sample)."""
    s, ns = divmod(ts_ns, 1_000_000_000)
    return f"{_seconds(s)[2]}.{ns // 1000:06d}000Z"


def _query_status(rcode) -> str:
    """QueryStatus as Windows Sysmon writes it: ``0`` for success, else the Win32 DNS error code
    ``9000 + RCODE`` (9003 = DNS_ERROR_RCODE_NAME_ERROR for NXDOMAIN, 9002 SERVFAIL, 9005
    REFUSED ...); ``-`` when no answer was seen."""
    if rcode is None:
        return "-"
    return "0" if rcode == 0 else str(9000 + rcode)


def _head(event_id: int) -> tuple:
    """``(System Version, Level)`` of ``event_id`` from the schema catalogue (cached)."""
    head = _HEADS.get(event_id)
    if head is None:
        ev = CURRENT.events[event_id]
        head = _HEADS[event_id] = (ev.version, ev.level_value)
    return head


def _dash(v) -> str:
    return UNKNOWN if v is None or v == "" else str(v)


class Assembler:
    """Builds Sysmon for Linux events.

    Args:
        cache: the shared :class:`~sysmonx.sensor.process.ProcessCache`.
        hasher: computes ProcessCreate ``Hashes`` (HashAlgorithms; default SHA256).
        provider, provider_guid, channel: envelope (defaults: exactly Sysmon for Linux's).
        computer: System/Computer (default: the host name).
    """

    def __init__(self, cache: ProcessCache, hasher: Optional[FileHasher] = None, *,
                 provider: str = LINUX_PROVIDER, provider_guid: str = LINUX_PROVIDER_GUID,
                 channel: str = LINUX_CHANNEL, computer: Optional[str] = None) -> None:
        self.cache = cache
        self.hasher = hasher or FileHasher()
        self.provider = provider
        self.provider_guid = provider_guid
        self.channel = channel
        self.computer = computer or socket.gethostname()
        self.pid = os.getpid()
        self.euid = str(os.geteuid())
        # DNS attribution (see _dns): local UDP port -> (pid, ts_ns) from sends whose source
        # port the tier read from the socket; UDP connects to port 53 whose source port the tier
        # could not know: [(ts_ns, pid, server, claimed_port or None)]
        self._udp_ports: "OrderedDict[int, tuple]" = OrderedDict()
        self._dns_connects: list = []
        self.dns_attribution = {"socket": 0, "proc": 0, "join": 0, "ambiguous": 0, "none": 0}
        #: rate limits of the builders in BUILDERS: (event id, pid) -> (window start, count,
        #: said), and event id -> events not written because of them
        self.rate_state: dict = {}
        self.rate_limited: dict = {}
        #: compare running processes with /proc for ProcessTampering (25); see build_events
        self.identity_check = True
        #: which assembly :attr:`exec_events`/:attr:`exit_event` use: ``"compiled"`` or
        #: ``"python"``
        self.assembly = "python"
        cls = type(self)
        if _Builder is not None and cls._exec is Assembler._exec \
                and cls._exit is Assembler._exit and cls._wrap is Assembler._wrap:
            # a subclass that changes how events are made keeps its Python methods
            builder = _Builder(self, Event, (
                {i: _head(i) for i in (1, 5)}, SYSMON_KEYWORDS, ZERO_GUID, UNSET_ID,
                _process._users, user_name, logon_guid, _seconds, self._exec_tail, FileHasher,
                ProcessCache, _process.ProcInfo, _process._CLK_TCK, _process._logon_guids))
            self.exec_events = builder.exec_events  # type: ignore[method-assign]
            self.exit_event = builder.exit_event  # type: ignore[method-assign]
            self.assembly = "compiled"

    def envelope(self, event_id: int, data: dict, ts_ns: int) -> Event:
        """Wrap ``data`` in the System header Sysmon for Linux writes (``record_id`` is left
        ``None``: the ``record-numbers`` stage numbers what passes the filter)."""
        return self._wrap(event_id, data, event_time(ts_ns))

    def _wrap(self, event_id: int, data: dict, time_created: str) -> Event:
        """:meth:`envelope` with System/TimeCreated already formatted."""
        head = _HEADS.get(event_id)
        if head is None:
            head = _head(event_id)
        return Event(event_id, data, provider=self.provider, provider_guid=self.provider_guid,
                     version=head[0], level=head[1], task=event_id, opcode=0,
                     keywords=SYSMON_KEYWORDS, time_created=time_created,
                     record_id=None, process_id=self.pid,
                     thread_id=threading.get_native_id(), channel=self.channel,
                     computer=self.computer, user_id=self.euid)

    # --- events the sensor itself reports -------------------------------------------------

    def service_state(self, state: str, schema_version: str, ts_ns: int) -> Event:
        """Event 4: ``State`` Started/Stopped."""
        return self.envelope(4, {"UtcTime": utc_time(ts_ns), "State": state,
                                 "Version": __version__, "SchemaVersion": schema_version}, ts_ns)

    def config_change(self, configuration: str, sha256: Optional[str], ts_ns: int) -> Event:
        """Event 16: ``ConfigurationFileHash`` is ``SHA256=<hex>`` (``-`` without a file)."""
        return self.envelope(16, {"UtcTime": utc_time(ts_ns), "Configuration": configuration,
                                  "ConfigurationFileHash":
                                      f"SHA256={sha256}" if sha256 else "-"}, ts_ns)

    def error(self, ident: str, description: str, ts_ns: int) -> Event:
        """Event 255: ``ID`` names the component, ``Description`` the problem."""
        return self.envelope(255, {"UtcTime": utc_time(ts_ns), "ID": ident,
                                   "Description": description}, ts_ns)

    # --- observations -------------------------------------------------------------------------

    def _proc(self, pid):
        info = self.cache.get(pid)
        return info

    def build(self, o: ob.Observation) -> Optional[Event]:
        """The Sysmon event for one observation (``None`` for observations that only update
        state, such as :class:`~.observations.ProcessFork`). See :meth:`build_events` for
        observations that give more than one event."""
        events = self.build_events(o)
        return events[0] if events else None

    def build_events(self, o: ob.Observation) -> list[Event]:
        """All Sysmon events for one observation, in output order: usually one; none for a
        fork; an exec of a fileless or deleted image also gives ProcessTampering (25) with
        ``Type`` ``Image is fileless``/``Image is deleted``; a FileDelete of the image of
        running processes gives a 25 ``Image is deleted`` for each of them after the 23; an
        observation of a running process whose command line or image changed since its exec
        is followed by a 25 saying so (``IDENTITY_CHECK``, see
        :func:`sysmonx.sensor.visibility.check_identity`)."""
        kind = type(o)
        if kind is ob.ProcessExec:  # the busiest three first, without the type walk below
            events = self._exec(o)  # type: ignore[arg-type]
        elif kind is ob.ProcessExit:
            return [self._exit(o)]  # type: ignore[arg-type]
        elif kind is ob.ProcessFork:
            self.cache.on_fork(o.pid, ppid=o.ppid, start_ticks=o.start_ticks,  # type: ignore
                               uid=o.uid, ts_ns=o.ts_ns)  # type: ignore[union-attr]
            return []
        else:
            events = self._build_events(o)
        check = IDENTITY_CHECK.get(kind)
        if check is not None and self.identity_check:
            events = events + check(self, o.pid, o.ts_ns)  # type: ignore[union-attr]
        return events

    def _build_events(self, o: ob.Observation) -> list[Event]:
        if isinstance(o, ob.ProcessExec):
            return self._exec(o)
        if isinstance(o, ob.ProcessFork):
            self.cache.on_fork(o.pid, ppid=o.ppid, start_ticks=o.start_ticks, uid=o.uid,
                               ts_ns=o.ts_ns)
            return []
        if isinstance(o, ob.ProcessExit):
            return [self._exit(o)]
        if isinstance(o, ob.NetworkConnect):
            return [self._network(o)]
        if isinstance(o, ob.FileCreate):
            return [self._file(11, o)]
        if isinstance(o, ob.FileDelete):
            return self._delete(o)
        if isinstance(o, ob.RawAccessRead):
            return [self._raw(o)]
        if isinstance(o, ob.ProcessAccess):
            return [self._access(o)]
        if isinstance(o, ob.DnsQuery):
            return [self._dns(o)]
        if isinstance(o, ob.Loss):
            return [self.error(o.source, f"Lost {o.count} events" + (f": {o.detail}" if o.detail
                                                                     else ""), o.ts_ns)]
        if isinstance(o, ob.BackendError):
            return [self.error(o.source, o.message, o.ts_ns)]
        builder = BUILDERS.get(type(o))
        if builder is not None:
            events: list[Event] = builder(self, o)
            return events
        return []

    def _exec(self, o: ob.ProcessExec) -> list:
        """Events of one :class:`~.observations.ProcessExec` (the process cache updated first):
        ProcessCreate (1), then ProcessTampering (25) for a fileless or deleted image."""
        info = self.cache.on_exec(o.pid, ppid=o.ppid, start_ticks=o.start_ticks, image=o.image,
                                  argv=o.argv, cwd=o.cwd, uid=o.uid, auid=o.auid,
                                  sessionid=o.sessionid, end_data=o.end_data, ts_ns=o.ts_ns)
        if o.mnt_ns is not None:  # the namespaces the kernel read at the exec (tier A)
            info.extra["ns"] = (o.mnt_ns, o.pid_ns)
        parent = self.cache.get(info.ppid)
        uid = info.uid
        user = user_name(uid)
        logon_uid = uid if uid is not None else UNSET_ID
        session = info.sessionid if info.sessionid not in (None, UNSET_ID) else 0
        utc, created = _stamps(o.ts_ns)
        image, cmd, cwd = info.image, info.command_line, info.cwd
        if parent is not None:
            p_guid, p_image, p_cmd = parent.guid, parent.image, parent.command_line
            p_user = user_name(parent.uid)
        else:
            p_guid, p_image, p_cmd, p_user = ZERO_GUID, None, None, UNKNOWN
        data = {
            "RuleName": "-", "UtcTime": utc, "ProcessGuid": info.guid,
            "ProcessId": str(o.pid), "Image": image or UNKNOWN, "FileVersion": "-",
            "Description": "-", "Product": "-", "Company": "-", "OriginalFileName": "-",
            "CommandLine": cmd or UNKNOWN, "CurrentDirectory": cwd or UNKNOWN,
            "User": user, "LogonGuid": logon_guid(self.cache.machine, logon_uid),
            "LogonId": str(logon_uid), "TerminalSessionId": str(session),
            "IntegrityLevel": "no level", "Hashes": self.hasher.hashes(image),
            "ParentProcessGuid": p_guid,
            "ParentProcessId": str(info.ppid or 0),
            "ParentImage": p_image or UNKNOWN,
            "ParentCommandLine": p_cmd or UNKNOWN,
            "ParentUser": p_user,
        }
        return [self._wrap(1, data, created)] + self._exec_tail(info, o.ts_ns)

    def _exec_tail(self, info, ts_ns: int) -> list:
        """The events after an exec's ProcessCreate: ProcessTampering (25) for a fileless or
        deleted image (:func:`~.process.image_state`), else none."""
        state = image_state(info.image)
        if state is None:
            return []
        return [self._tamper(info, TAMPER_TYPES[state], ts_ns)]

    #: :meth:`build_events` of a ProcessExec without the dispatch (the live source's hot path;
    #: the identity check never runs for execs). An instance uses the compiled builder instead
    #: when it is available (:attr:`assembly`); this method defines its events.
    exec_events = _exec

    def _tamper(self, info, kind: str, ts_ns: int) -> Event:
        """ProcessTampering (25) for ``info``'s image: ``kind`` from :data:`TAMPER_TYPES`."""
        return self.envelope(25, {
            "RuleName": "-", "UtcTime": utc_time(ts_ns), "ProcessGuid": info.guid,
            "ProcessId": str(info.pid), "Image": _dash(info.image), "Type": kind,
            "User": info.user}, ts_ns)

    def _exit(self, o: ob.ProcessExit) -> Event:
        """ProcessTerminate (5) of one :class:`~.observations.ProcessExit` (the cache entry
        marked exited); the only event :meth:`build_events` gives for an exit."""
        info = self.cache.on_exit(o.pid, o.ts_ns, o.start_ticks)
        utc, created = _stamps(o.ts_ns)
        if info is None:
            return self._wrap(5, {"RuleName": "-", "UtcTime": utc, "ProcessGuid": ZERO_GUID,
                                  "ProcessId": str(o.pid), "Image": UNKNOWN, "User": UNKNOWN},
                              created)
        return self._wrap(5, {"RuleName": "-", "UtcTime": utc, "ProcessGuid": info.guid,
                              "ProcessId": str(o.pid), "Image": info.image or UNKNOWN,
                              "User": user_name(info.uid)}, created)

    #: :meth:`build_events` of a ProcessExit, its one event without the list (compiled as
    #: :attr:`exec_events` is)
    exit_event = _exit

    def _network(self, o: ob.NetworkConnect) -> Event:
        info = self._proc(o.pid)
        if o.protocol == "udp" and o.initiated:
            if o.source_port:
                # the tier read the local port from the socket: exact attribution of DNS
                # queries sent from it (only sends: a receive's "source" is the remote peer)
                self._udp_ports[o.source_port] = (o.pid, o.ts_ns)
                self._udp_ports.move_to_end(o.source_port)
                if len(self._udp_ports) > 4096:
                    self._udp_ports.popitem(last=False)
            elif o.dest_port == 53:
                self._dns_connects.append([o.ts_ns, o.pid, o.dest_ip, None])
                if len(self._dns_connects) > 4096:
                    del self._dns_connects[:2048]
        v6 = "true" if o.ipv6 else "false"
        return self.envelope(3, {
            "RuleName": "-", "UtcTime": utc_time(o.ts_ns),
            "ProcessGuid": info.guid if info else ZERO_GUID,
            "ProcessId": str(o.pid), "Image": _dash(info.image if info else None),
            "User": info.user if info else UNKNOWN, "Protocol": _dash(o.protocol),
            "Initiated": "true" if o.initiated else "false", "SourceIsIpv6": v6,
            "SourceIp": _dash(o.source_ip), "SourceHostname": "-",
            "SourcePort": str(o.source_port or UNKNOWN_NUMBER), "SourcePortName": "-",
            "DestinationIsIpv6": v6, "DestinationIp": _dash(o.dest_ip),
            "DestinationHostname": "-", "DestinationPort": str(o.dest_port),
            "DestinationPortName": "-"}, o.ts_ns)

    def _file(self, event_id: int, o) -> Event:
        info = self._proc(o.pid)
        guid = info.guid if info else ZERO_GUID
        image = _dash(info.image if info else None)
        user = info.user if info else UNKNOWN
        if event_id == 11:
            data = {"RuleName": "-", "UtcTime": utc_time(o.ts_ns), "ProcessGuid": guid,
                    "ProcessId": str(o.pid), "Image": image, "TargetFilename": clean_text(o.path),
                    "CreationUtcTime": utc_time(o.ts_ns), "User": user}
        else:
            data = {"RuleName": "-", "UtcTime": utc_time(o.ts_ns), "ProcessGuid": guid,
                    "ProcessId": str(o.pid), "User": user, "Image": image,
                    "TargetFilename": clean_text(o.path), "Hashes": "-", "IsExecutable": "-",
                    "Archived": "-"}
        return self.envelope(event_id, data, o.ts_ns)

    def _delete(self, o: ob.FileDelete) -> list:
        events = [self._file(23, o)]
        path = clean_text(o.path)
        for info in self.cache.running_image(path):
            # the running process's image is gone from the file system: /proc/PID/exe now
            # shows "(deleted)"; say so once, as Sysmon's ProcessTampering does for images
            # changed behind a process
            if info.extra.get("image_deleted"):
                continue
            info.extra["image_deleted"] = True
            events.append(self._tamper(info, TAMPER_TYPES["deleted"], o.ts_ns))
        return events

    def _raw(self, o: ob.RawAccessRead) -> Event:
        info = self._proc(o.pid)
        return self.envelope(9, {
            "RuleName": "-", "UtcTime": utc_time(o.ts_ns),
            "ProcessGuid": info.guid if info else ZERO_GUID,
            "ProcessId": str(o.pid), "Image": _dash(info.image if info else None),
            "Device": clean_text(o.device), "User": info.user if info else UNKNOWN}, o.ts_ns)

    def _access(self, o: ob.ProcessAccess) -> Event:
        src, dst = self._proc(o.pid), self._proc(o.target_pid)
        return self.envelope(10, {
            "RuleName": "-", "UtcTime": utc_time(o.ts_ns),
            "SourceProcessGUID": src.guid if src else ZERO_GUID, "SourceProcessId": str(o.pid),
            "SourceThreadId": str(o.tid or o.pid), "SourceImage": _dash(src.image if src else None),
            "TargetProcessGUID": dst.guid if dst else ZERO_GUID,
            "TargetProcessId": str(o.target_pid),
            "TargetImage": _dash(dst.image if dst else None), "GrantedAccess": f"0x{o.request:x}",
            "CallTrace": "-", "SourceUser": src.user if src else UNKNOWN,
            "TargetUser": dst.user if dst else UNKNOWN}, o.ts_ns)

    def _dns_process(self, o: ob.DnsQuery) -> Optional[int]:
        """Who sent a DNS query, best evidence first:

        1. a UDP send (connect/sendmsg) whose local port the tier read from the socket, from the
           query's source port: exact (tier A);
        2. the DNS backend's look-up of the socket that owns the source port (``o.pid``), made
           when the packet was read: exact while the client still has the socket open;
        3. a UDP connect to the same resolver on port 53 whose source port the tier could not
           know (tier B), sent at most :data:`DNS_JOIN_NS` before the query by a process that
           had not exited by then, and not already joined to another port: used only when
           every such candidate is the same process.

        A query attributed by 1 or 2 also claims its process's connect to that resolver for its
        port, so the connect is no candidate for another process's query.

        A receive never counts (its "source" is the remote peer: that is how a resolver on
        loopback used to be named as the client). ``None`` when there is no certain answer.
        """
        port, t = o.source_port, o.ts_ns
        if port:
            hit = self._udp_ports.get(port)
            if hit is not None and hit[1] <= t + DNS_JOIN_SLACK_NS and t - hit[1] < 3600 * 10**9:
                self.dns_attribution["socket"] += 1
                self._claim(hit[0], o.server, port, t)
                return hit[0]
        if o.pid:
            self.dns_attribution["proc"] += 1
            self._claim(o.pid, o.server, port, t)
            return o.pid
        if port and o.server and self._dns_connects:
            lo = t - DNS_JOIN_NS
            cands = [c for c in self._dns_connects
                     if c[2] == o.server and lo <= c[0] <= t + DNS_JOIN_SLACK_NS
                     and c[3] in (None, port) and self._alive_at(c[1], t)]
            pids = {c[1] for c in cands}
            if len(pids) == 1:
                best = max(cands, key=lambda c: (c[3] == port, c[0]))
                best[3] = port
                self.dns_attribution["join"] += 1
                return best[1]
            if len(pids) > 1:
                self.dns_attribution["ambiguous"] += 1
                return None
        self.dns_attribution["none"] += 1
        return None

    def _claim(self, pid: int, server: Optional[str], port: Optional[int], t: int) -> None:
        """Mark ``pid``'s latest unclaimed connect to ``server`` as the one of ``port``."""
        if not port or not server:
            return
        for c in reversed(self._dns_connects):
            if c[1] == pid and c[2] == server and c[3] is None and c[0] <= t + DNS_JOIN_SLACK_NS:
                c[3] = port
                return

    def _alive_at(self, pid: int, t: int) -> bool:
        """False when the cache knows ``pid`` had exited before time ``t``."""
        info = self.cache.peek(pid)
        return info is None or info.exited_ns is None or info.exited_ns >= t

    def _dns(self, o: ob.DnsQuery) -> Event:
        if self._dns_connects and self._dns_connects[0][0] < o.ts_ns - 4 * DNS_JOIN_NS:
            self._dns_connects = [c for c in self._dns_connects
                                  if c[0] >= o.ts_ns - 2 * DNS_JOIN_NS]
        pid = self._dns_process(o)
        info = self._proc(pid) if pid else None
        return self.envelope(22, {
            "RuleName": "-", "UtcTime": utc_time(o.ts_ns),
            "ProcessGuid": info.guid if info else ZERO_GUID,
            "ProcessId": str(pid or UNKNOWN_NUMBER), "QueryName": clean_text(o.query_name),
            "QueryStatus": _query_status(o.status),
            "QueryResults": _dash(clean_text(o.results)),
            "Image": _dash(info.image if info else None),
            "User": info.user if info else UNKNOWN}, o.ts_ns)


from . import visibility as _visibility  # noqa: E402,F401 - registers its builders in BUILDERS
