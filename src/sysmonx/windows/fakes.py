"""Fake Windows APIs that replay recorded events, for tests on any OS.

:class:`FakeWevtApi` implements :class:`~sysmonx.windows.wevtapi.WevtApi` over in-memory channel
logs filled with recorded event XML (EVTX rendered by pyevtx-rs, or ``<Event>`` documents). It
models what the subscription loop must survive, as the Event Log documents it:

* pull subscriptions with manual-reset signal events, set when a record is written;
* ``EvtSubscribeStartAfterBookmark`` with and without ``EvtSubscribeStrict`` (strict fails with
  ``ERROR_NOT_FOUND`` when the bookmarked record is gone; not strict begins after the record
  closest to the bookmarked one, as EVT_SUBSCRIBE_FLAGS documents),
  ``EvtSubscribeStartAtOldestRecord``, ``EvtSubscribeToFutureEvents``;
* a log of bounded size that overwrites its oldest records (circular logging), and clearing,
  after which numbering restarts at 1; a subscription whose next record was overwritten or
  cleared gets ``ERROR_EVT_QUERY_RESULT_STALE`` from ``EvtNext``;
* ``EvtGetLogInfo``'s oldest record and record count;
* injected failures: any ``EvtNext`` error code, an XML render failure for a record, and
  ``RPC_S_INVALID_BOUND`` for batches above a size.

Queries: ``*`` or the ``*[System[(EventID=N or EventID=M ...)]]`` form (the only forms the
fake evaluates; anything else raises ``ERROR_EVT_INVALID_QUERY``).

:func:`evtx_records` renders an EVTX file's records to event XML with pyevtx-rs, so corpus EVTX
files can be replayed as a live channel.
"""

from __future__ import annotations

import itertools
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from .wevtapi import (ERROR_EVT_CHANNEL_NOT_FOUND, ERROR_EVT_INVALID_QUERY,
                      ERROR_EVT_QUERY_RESULT_STALE, EvtSubscribeOriginMask,
                      EvtSubscribeStartAfterBookmark, EvtSubscribeStartAtOldestRecord,
                      EvtSubscribeStrict, EvtSubscribeToFutureEvents, LogInfo, WevtApi)
from .win32 import (ERROR_INVALID_HANDLE, ERROR_NOT_FOUND, RPC_S_INVALID_BOUND, Win32Error)

__all__ = ["FakeWevtApi", "FakeLog", "FakeRecord", "evtx_records", "split_event_xml",
           "set_record_id", "FakeWindowsHost", "FakeEtwApi", "kernel_process_record",
           "FakeServiceApi", "FakeEventWriteApi", "FakeReportEventApi"]

_RID = re.compile(r"(<EventRecordID>)\s*\d*\s*(</EventRecordID>)")
_QUERY_IDS = re.compile(r"^\*\[System\[\((EventID=\d+(?:\s+or\s+EventID=\d+)*)\)\]\]$")
_EVENT_ID = re.compile(r"<EventID(?:\s[^>]*)?>\s*(\d+)\s*</EventID>")
_BOOKMARK = re.compile(r"""Channel=(['"])(.*?)\1\s+RecordId=['"](\d+)['"]""")


def set_record_id(xml: str, record_id: int) -> str:
    """``xml`` with its ``<EventRecordID>`` set to ``record_id`` (how a log numbers a record
    it writes).

    Raises:
        ValueError: the XML has no ``<EventRecordID>`` element.
    """
    out, n = _RID.subn(rf"\g<1>{record_id}\g<2>", xml, count=1)
    if not n:
        raise ValueError("event XML without <EventRecordID>")
    return out


def evtx_records(path: str) -> list[str]:
    """Every record of an EVTX file as event XML text, in file order (pyevtx-rs rendering).

    Raises:
        OSError / RuntimeError: the file cannot be read by pyevtx-rs.
    """
    from evtx import PyEvtxParser
    return [str(rec["data"]) for rec in PyEvtxParser(path).records() if rec is not None]


def split_event_xml(text: str) -> list[str]:
    """The ``<Event>...</Event>`` documents of an event XML file's text (``<Events>`` root or
    concatenated), each as its own string. For trusted test inputs only."""
    from lxml import etree

    body = text if text.lstrip().startswith("<Events") else f"<Events>{text}</Events>"
    body = re.sub(r"^\s*<\?xml[^>]*\?>", "", body)
    root = etree.fromstring(body.encode("utf-8"))
    return [etree.tostring(el, encoding="unicode") for el in root
            if isinstance(el.tag, str) and el.tag.rsplit("}", 1)[-1] == "Event"]


@dataclass
class FakeRecord:
    """One record of a fake log: its EventRecordID, EventID and XML text."""

    record_id: int
    event_id: Optional[int]
    xml: str


@dataclass
class FakeLog:
    """A channel's log. ``capacity`` records at most (``None``: unbounded); the oldest are
    overwritten first. ``generation`` changes when the log is cleared."""

    channel: str
    capacity: Optional[int] = None
    records: list = field(default_factory=list)
    next_id: int = 1
    generation: int = 0


class _Signal:
    def __init__(self, owner: "FakeWevtApi") -> None:
        self.owner = owner
        self.flag = True  # created signalled, like CreateEventW(NULL, TRUE, TRUE, NULL)


@dataclass
class _Subscription:
    log: FakeLog
    event_ids: Optional[frozenset]
    signal: _Signal
    last_id: int            # the last record delivered (or the position before the first)
    generation: int


class FakeWevtApi(WevtApi):
    """A scriptable in-memory Event Log (see the module docstring).

    Args:
        channels: channel names that exist (others give ``ERROR_EVT_CHANNEL_NOT_FOUND``).
        capacity: default log size in records (``None``: unbounded).

    Attributes:
        next_errors: Win32 codes ``EvtNext`` raises next, one per call, before normal results.
        render_errors: record IDs whose rendering fails (``ERROR_INVALID_HANDLE``).
        max_batch: ``EvtNext`` with a larger count raises ``RPC_S_INVALID_BOUND`` (``None``: no
            limit).
        log_info_error: when set, ``log_info`` raises this Win32 code.
        calls: every API call made, as ``(name, args...)`` tuples, in order.
        open_handles: handles created and not closed.
    """

    def __init__(self, channels: Sequence[str] = (), capacity: Optional[int] = None) -> None:
        self._lock = threading.Condition()
        self.logs: dict[str, FakeLog] = {}
        for ch in channels:
            self.add_channel(ch, capacity)
        self._ids = itertools.count(0x1000)
        self._objects: dict[int, Any] = {}
        self.next_errors: list[int] = []
        self.render_errors: set[int] = set()
        self.max_batch: Optional[int] = None
        self.log_info_error: Optional[int] = None
        self.calls: list[tuple] = []

    # ---- test controls -------------------------------------------------------------------------

    def add_channel(self, channel: str, capacity: Optional[int] = None) -> FakeLog:
        """Create an empty channel log."""
        log = FakeLog(channel, capacity)
        self.logs[channel.lower()] = log
        return log

    def write(self, channel: str, xml: str, *, keep_id: bool = False) -> int:
        """Append a record (numbered by the log unless ``keep_id``: then the XML's own
        EventRecordID is kept and the numbering continues after it); overwrite the oldest
        record when full; signal the channel's subscriptions. Returns the record ID."""
        with self._lock:
            log = self._log(channel)
            if keep_id:
                m = re.search(r"<EventRecordID>\s*(\d+)\s*</EventRecordID>", xml)
                if not m:
                    raise ValueError("event XML without <EventRecordID>")
                rid = int(m.group(1))
                if log.records and rid <= log.records[-1].record_id:
                    raise ValueError(f"record {rid} is not after {log.records[-1].record_id}")
            else:
                rid = log.next_id
                xml = set_record_id(xml, rid)
            log.next_id = rid + 1
            m = _EVENT_ID.search(xml)
            log.records.append(FakeRecord(rid, int(m.group(1)) if m else None, xml))
            if log.capacity is not None:
                del log.records[:max(0, len(log.records) - log.capacity)]
            self._signal_channel(log)
            return rid

    def clear(self, channel: str) -> None:
        """``wevtutil cl``: remove every record; numbering restarts at 1."""
        with self._lock:
            log = self._log(channel)
            log.records.clear()
            log.next_id = 1
            log.generation += 1
            self._signal_channel(log)

    def _signal_channel(self, log: FakeLog) -> None:
        for obj in self._objects.values():
            if isinstance(obj, _Subscription) and obj.log is log:
                obj.signal.flag = True
        self._lock.notify_all()

    def _log(self, channel: str) -> FakeLog:
        log = self.logs.get(channel.lower())
        if log is None:
            raise Win32Error(ERROR_EVT_CHANNEL_NOT_FOUND, "EvtSubscribe",
                             f"channel {channel!r} not found")
        return log

    def _new(self, obj: Any) -> int:
        h = next(self._ids)
        self._objects[h] = obj
        return h

    def _get(self, h: Any, kind: type, function: str) -> Any:
        obj = self._objects.get(h)
        if not isinstance(obj, kind):
            raise Win32Error(ERROR_INVALID_HANDLE, function)
        return obj

    @property
    def open_handles(self) -> list:
        """Handles created and not yet closed (events, subscriptions, bookmarks, signals)."""
        with self._lock:
            return sorted(self._objects)

    # ---- WevtApi -----------------------------------------------------------------------------

    def create_signal(self) -> Any:
        with self._lock:
            self.calls.append(("CreateEventW",))
            return self._new(_Signal(self))

    def set_signal(self, signal: Any) -> None:
        with self._lock:
            self._get(signal, _Signal, "SetEvent").flag = True
            self._lock.notify_all()

    def reset_signal(self, signal: Any) -> None:
        with self._lock:
            self._get(signal, _Signal, "ResetEvent").flag = False

    def wait(self, signals: Sequence[Any], timeout_ms: int) -> Optional[int]:
        with self._lock:
            objs = [self._get(s, _Signal, "WaitForMultipleObjects") for s in signals]

            def ready() -> Optional[int]:
                for i, o in enumerate(objs):
                    if o.flag:
                        return i
                return None

            self._lock.wait_for(lambda: ready() is not None,
                                None if timeout_ms < 0 else timeout_ms / 1000)
            return ready()

    def close_signal(self, signal: Any) -> None:
        with self._lock:
            self._objects.pop(signal, None)

    def subscribe(self, channel: str, query: str, bookmark: Any, flags: int,
                  signal: Any) -> Any:
        with self._lock:
            self.calls.append(("EvtSubscribe", channel, query, flags))
            log = self._log(channel)
            ids = self._parse_query(query)
            sig = self._get(signal, _Signal, "EvtSubscribe")
            origin = flags & EvtSubscribeOriginMask
            if origin == EvtSubscribeToFutureEvents:
                last = log.records[-1].record_id if log.records else log.next_id - 1
            elif origin == EvtSubscribeStartAtOldestRecord:
                last = log.records[0].record_id - 1 if log.records else log.next_id - 1
            elif origin == EvtSubscribeStartAfterBookmark:
                bm = self._get(bookmark, dict, "EvtSubscribe")
                rid = bm.get(log.channel.lower())
                present = rid is not None and any(r.record_id == rid for r in log.records)
                if present:
                    last = rid
                elif flags & EvtSubscribeStrict:
                    raise Win32Error(ERROR_NOT_FOUND, "EvtSubscribe",
                                     "the bookmarked event was not found")
                elif log.records and rid is not None:
                    # EVT_SUBSCRIBE_FLAGS: "the subscription begins with the event that is
                    # after the event that is closest to the bookmarked event".
                    last = min(log.records, key=lambda r: abs(r.record_id - rid)).record_id
                else:
                    last = log.next_id - 1
            else:
                raise Win32Error(87, "EvtSubscribe", "bad flags")
            sub = _Subscription(log, ids, sig, last, log.generation)
            sig.flag = True
            return self._new(sub)

    @staticmethod
    def _parse_query(query: str) -> Optional[frozenset]:
        q = query.strip()
        if q == "*":
            return None
        m = _QUERY_IDS.match(q)
        if not m:
            raise Win32Error(ERROR_EVT_INVALID_QUERY, "EvtSubscribe", f"query {query!r}")
        return frozenset(int(x) for x in re.findall(r"\d+", m.group(1)))

    def next(self, subscription: Any, count: int, timeout_ms: int) -> list:
        with self._lock:
            self.calls.append(("EvtNext", count))
            sub = self._get(subscription, _Subscription, "EvtNext")
            if self.next_errors:
                raise Win32Error(self.next_errors.pop(0), "EvtNext")
            if self.max_batch is not None and count > self.max_batch:
                raise Win32Error(RPC_S_INVALID_BOUND, "EvtNext")
            log = sub.log
            if sub.generation != log.generation:
                raise Win32Error(ERROR_EVT_QUERY_RESULT_STALE, "EvtNext")
            if log.records and log.records[0].record_id > sub.last_id + 1:
                raise Win32Error(ERROR_EVT_QUERY_RESULT_STALE, "EvtNext")  # overwritten unread
            out: list = []
            for rec in log.records:
                if rec.record_id <= sub.last_id:
                    continue
                if len(out) == count:
                    break
                sub.last_id = rec.record_id
                if sub.event_ids is None or rec.event_id in sub.event_ids:
                    out.append(self._new(rec))
            return out

    def render_xml(self, event: Any) -> str:
        with self._lock:
            rec = self._get(event, FakeRecord, "EvtRender")
            if rec.record_id in self.render_errors:
                raise Win32Error(ERROR_INVALID_HANDLE, "EvtRender")
            return rec.xml

    def create_bookmark(self, xml: Optional[str]) -> Any:
        with self._lock:
            self.calls.append(("EvtCreateBookmark", xml))
            bm: dict = {}
            for m in _BOOKMARK.finditer(xml or ""):
                bm[m.group(2).replace("&apos;", "'").replace("&quot;", '"')
                   .replace("&amp;", "&").lower()] = int(m.group(3))
            return self._new(bm)

    def update_bookmark(self, bookmark: Any, event: Any) -> None:
        with self._lock:
            bm = self._get(bookmark, dict, "EvtUpdateBookmark")
            rec = self._get(event, FakeRecord, "EvtUpdateBookmark")
            for log in self.logs.values():
                if rec in log.records:
                    bm[log.channel.lower()] = rec.record_id

    def render_bookmark(self, bookmark: Any) -> str:
        with self._lock:
            bm = self._get(bookmark, dict, "EvtRender")
            items = "".join(f"<Bookmark Channel='{ch}' RecordId='{rid}'/>"
                            for ch, rid in bm.items())
            return f"<BookmarkList>{items}</BookmarkList>"

    def close(self, handle: Any) -> None:
        with self._lock:
            if handle in self._objects and not isinstance(self._objects[handle], _Signal):
                del self._objects[handle]

    def query_record(self, channel: str, record_id: int) -> Optional[str]:
        with self._lock:
            self.calls.append(("EvtQuery", channel, record_id))
            log = self._log(channel)
            return next((r.xml for r in log.records if r.record_id == record_id), None)

    def log_info(self, channel: str) -> LogInfo:
        with self._lock:
            if self.log_info_error is not None:
                raise Win32Error(self.log_info_error, "EvtGetLogInfo")
            log = self._log(channel)
            if not log.records:
                return LogInfo(0, 0)
            return LogInfo(log.records[0].record_id, len(log.records))



# ---- a fake Windows host for the Sysmon installer -------------------------------------------

class FakeWindowsHost:
    """A :class:`~sysmonx.windows.sysmon.CommandRunner` that simulates the commands the Sysmon
    installer runs (``SysmonNN.exe -i/-c/-u``, ``sc.exe``, ``reg.exe``, ``powershell.exe``
    Authenticode check) over an in-memory host: services, Sysmon's configuration, registry
    exports. ``files`` maps paths the fake Sysmon can read (the installer writes real files;
    the fake reads them from disk).

    Attributes:
        services: name -> {"state": "RUNNING"|"STOPPED", "binary": path}.
        sysmon_config: the XML text Sysmon was last given (``None``: defaults).
        registry_export: the ``.reg`` text ``reg.exe export`` writes (a real export's shape).
        commands: every argv run, in order.
        fail: argv prefix (tuple) -> exit code, to make a command fail.
        signature: what Get-AuthenticodeSignature prints (``Status|Subject``).
    """

    def __init__(self) -> None:
        self.services: dict = {}
        self.sysmon_config: Optional[str] = None
        self.registry_export: Optional[str] = None
        self.imported: list = []
        self.commands: list = []
        self.fail: dict = {}
        self.signature = ("Valid|CN=Microsoft Corporation, O=Microsoft Corporation, "
                          "L=Redmond, S=Washington, C=US")
        #: loaded minifilters (``fltmc filters``), registry values (``reg query``): (key lower,
        #: name lower) -> (type, data), Event Log channels (``wevtutil gl``): name -> enabled;
        #: ``controls``: (service, code) sent with ``sc.exe control``.
        self.minifilters: list = ["SysmonDrv", "WdFilter", "FileInfo"]
        self.registry: dict = {}
        self.channels: dict = {"Microsoft-Windows-Sysmon/Operational": True}
        self.controls: list = []
        self.elevated = True
        self.acls: dict = {}

    def run(self, argv, timeout: float = 120.0):
        from .sysmon import CommandResult, ERROR_SERVICE_DOES_NOT_EXIST
        argv = list(argv)
        self.commands.append(argv)
        for prefix, code in self.fail.items():
            if tuple(argv[:len(prefix)]) == prefix:
                return CommandResult(code, "", "injected failure")
        exe = argv[0].replace("\\", "/").rsplit("/", 1)[-1].lower()
        if exe == "sc.exe" and argv[1] == "create":
            name = argv[2]
            if name in self.services:
                return CommandResult(1073, "[SC] CreateService FAILED 1073:\n\nThe specified "
                                     "service already exists.\n")
            opts = dict(zip(argv[3::2], argv[4::2], strict=False))
            self.services[name] = {"state": "STOPPED", "binary": opts.get("binPath=", ""),
                                   "start": opts.get("start=", "demand")}
            return CommandResult(0, "[SC] CreateService SUCCESS\n")
        if exe == "icacls.exe":
            self.acls[argv[1]] = argv[2:]
            return CommandResult(0, f"processed file: {argv[1]}\nSuccessfully processed 1 "
                                 "files; Failed processing 0 files\n")
        if exe == "fltmc.exe":
            if not self.elevated:
                return CommandResult(0x80070005, "", "FilterFindFirst failed with error "
                                     "0x80070005 Access is denied.")
            lines = ["", "Filter Name                     Num Instances    Altitude    Frame",
                     "------------------------------  -------------  ------------  -----"]
            lines += [f"{n:<30}  {3:>13}  {385201:>12}  {0:>5}" for n in self.minifilters]
            return CommandResult(0, "\n".join(lines) + "\n")
        if exe == "wevtutil.exe" and argv[1] == "gl":
            if argv[2] not in self.channels:
                return CommandResult(15007, "", "Failed to read configuration for log "
                                     f"{argv[2]}. The specified channel could not be found.")
            return CommandResult(0, f"name: {argv[2]}\nenabled: "
                                 f"{'true' if self.channels[argv[2]] else 'false'}\n"
                                 "type: Operational\nowningPublisher: x\n")
        if exe == "reg.exe" and argv[1] == "query":
            key, name = argv[2], argv[4]
            found = self.registry.get((key.lower(), name.lower()))
            if found is None:
                return CommandResult(1, "", "ERROR: The system was unable to find the "
                                     "specified registry key or value.")
            return CommandResult(0, f"\n{key}\n    {name}    {found[0]}    {found[1]}\n\n")
        if exe == "sc.exe":
            verb, name = argv[1], argv[2]
            svc = self.services.get(name)
            if svc is None:
                return CommandResult(ERROR_SERVICE_DOES_NOT_EXIST, "[SC] OpenService FAILED "
                                     "1060:\n\nThe specified service does not exist as an "
                                     "installed service.\n")
            if verb == "query":
                code = {"RUNNING": 4, "STOPPED": 1}[svc["state"]]
                return CommandResult(0, f"\nSERVICE_NAME: {name}\n        TYPE               : "
                                     f"10  WIN32_OWN_PROCESS\n        STATE              : "
                                     f"{code}  {svc['state']}\n")
            if verb == "qc":
                return CommandResult(0, f"[SC] QueryServiceConfig SUCCESS\n\nSERVICE_NAME: "
                                     f"{name}\n        BINARY_PATH_NAME   : {svc['binary']}\n")
            if verb == "start":
                svc["state"] = "RUNNING"
                return CommandResult(0, "")
            if verb == "stop":
                if svc["state"] != "RUNNING":
                    return CommandResult(1062, "[SC] ControlService FAILED 1062:\n\nThe "
                                         "service has not been started.\n")
                svc["state"] = "STOPPED"
                return CommandResult(0, "")
            if verb == "delete":
                del self.services[name]
                return CommandResult(0, "[SC] DeleteService SUCCESS\n")
            if verb == "control":
                if svc["state"] != "RUNNING":
                    return CommandResult(1062, "[SC] ControlService FAILED 1062")
                self.controls.append((name, int(argv[3])))
                return CommandResult(0, "")
            if verb in ("description", "failure", "sdset"):
                svc[verb] = argv[3:]
                return CommandResult(0, f"[SC] Change{verb} SUCCESS\n")
        if exe == "reg.exe":
            if argv[1] == "export":
                if self.registry_export is None:
                    return CommandResult(1, "", "ERROR: The system was unable to find the "
                                         "specified registry key or value.")
                with open(argv[3], "wb") as f:   # regedit 5 exports: UTF-16LE with a BOM
                    f.write(self.registry_export.encode("utf-16"))
                return CommandResult(0, "The operation completed successfully.")
            if argv[1] == "import":
                with open(argv[2], "rb") as f:
                    self.imported.append(f.read().decode("utf-16"))
                return CommandResult(0, "The operation completed successfully.")
        if exe == "powershell.exe":
            return CommandResult(0, self.signature)
        if exe.startswith("sysmon") and exe.endswith(".exe"):
            return self._sysmon(argv, exe)
        return CommandResult(9009, "", f"'{argv[0]}' is not recognized")

    #: Where Sysmon keeps its compiled rules (the driver's Parameters key).
    RULES_KEY = "hklm\\system\\currentcontrolset\\services\\sysmondrv\\parameters"

    def _rules_value(self) -> None:
        """Sysmon stores its compiled rules in the driver's ``Rules`` value: a stand-in blob
        that changes with the configuration."""
        import hashlib
        digest = hashlib.sha256((self.sysmon_config or "").encode()).hexdigest().upper()
        self.registry[(self.RULES_KEY, "rules")] = ("REG_BINARY", digest)

    def _sysmon(self, argv, exe):
        from .sysmon import CommandResult
        service = exe[:-4].capitalize().replace("sysmon", "Sysmon")
        args = argv[1:]
        if "-i" in args:
            if "-accepteula" not in args:
                return CommandResult(1, "", "EULA not accepted")
            if any(s for s in self.services if s.lower().startswith("sysmon")):
                return CommandResult(1242, "Sysmon64 is already installed.")
            cfg = args[args.index("-i") + 1]
            with open(cfg, encoding="utf-8") as f:
                self.sysmon_config = f.read()
            self._rules_value()
            self.services[service] = {"state": "RUNNING",
                                      "binary": f"C:\\Windows\\{service}.exe"}
            return CommandResult(0, f"{service} installed.\nSysmonDrv installed.\n")
        if "-c" in args:
            if not any(s.lower() == service.lower() for s in self.services):
                return CommandResult(1, "Sysmon is not installed.")
            cfg = args[args.index("-c") + 1]
            if cfg == "--":
                self.sysmon_config = None
            else:
                with open(cfg, encoding="utf-8") as f:
                    self.sysmon_config = f.read()
            self._rules_value()
            return CommandResult(0, "Configuration updated.\n")
        if "-u" in args:
            if service not in self.services:
                return CommandResult(1, "Sysmon is not installed.")
            del self.services[service]
            self.sysmon_config = None
            return CommandResult(0, f"Stopping {service}.\n{service} removed.\n")
        return CommandResult(87, "Usage ...")


# ---- a fake ETW real-time session -----------------------------------------------------------

def kernel_process_record(event_id: int, version: int, values: dict, *, pid: int = 4,
                          tid: int = 88, timestamp: int = 133_500_000_000_000_000,
                          provider: Optional[str] = None,
                          keyword: int = 0x8000000000000010, truncate: Optional[int] = None):
    """Build a real ``EVENT_RECORD`` (and the buffer its ``UserData`` points to) for a
    Kernel-Process event, encoding ``values`` with the event's template
    (:data:`sysmonx.windows.etw_process.TEMPLATES`): UInt32/UInt64/FILETIME little-endian,
    UnicodeString UTF-16LE + NUL, AnsiString + NUL, SID binary. ``truncate`` cuts the user data.

    Returns:
        ``(record, keepalive)``: keep ``keepalive`` referenced while the record is used.
    """
    import ctypes
    import struct as _struct

    from .etw import EVENT_RECORD
    from .etw_process import KERNEL_PROCESS_GUID, TEMPLATES
    from .win32 import GUID

    fields = TEMPLATES.get((event_id, version), [(k, "UInt32") for k in values])
    blob = bytearray()
    for name, kind in fields:
        v = values[name]
        if kind == "UInt32":
            blob += _struct.pack("<I", v)
        elif kind in ("UInt64", "FILETIME"):
            blob += _struct.pack("<Q", v)
        elif kind == "UnicodeString":
            blob += v.encode("utf-16-le") + b"\x00\x00"
        elif kind == "AnsiString":
            blob += v.encode("latin-1") + b"\x00"
        elif kind == "SID":
            parts = [int(x) for x in v.split("-")[2:]]
            blob += bytes([1, len(parts) - 1]) + parts[0].to_bytes(6, "big")
            blob += b"".join(_struct.pack("<I", x) for x in parts[1:])
    if truncate is not None:
        blob = blob[:truncate]
    buf = ctypes.create_string_buffer(bytes(blob), max(1, len(blob)))
    rec = EVENT_RECORD()
    h = rec.EventHeader
    h.Size = ctypes.sizeof(type(h))
    h.ProcessId, h.ThreadId, h.TimeStamp = pid, tid, timestamp
    h.ProviderId = GUID.from_string(provider or KERNEL_PROCESS_GUID)
    d = h.EventDescriptor
    d.Id, d.Version, d.Level, d.Task, d.Opcode, d.Keyword = \
        event_id, version, 4, event_id, event_id, keyword
    rec.UserDataLength = len(blob)
    rec.UserData = ctypes.cast(buf, ctypes.c_void_p)
    return rec, buf


class FakeEtwApi:
    """An :class:`~sysmonx.windows.etw.EtwApi` whose session delivers scripted records.

    ``feed(record, keepalive)`` queues a record; ``process_trace`` calls the consumer's callback
    with a pointer to each (on the calling thread, as ETW does) until ``close_trace``.
    ``stats`` is the sequence of :class:`~sysmonx.windows.etw.SessionStats` returned by
    successive queries (the last repeats); ``stop_session`` returns ``final_stats`` (default
    the last). ``fail_start`` makes ``start_session`` raise that Win32 code.
    """

    def __init__(self, stats=None, final_stats=None) -> None:
        from .etw import SessionStats
        self._cond = threading.Condition()
        self._pending: list = []
        self._closed = False
        self.callback: Any = None
        self.stats = list(stats or [SessionStats(0, 0, 0, 0)])
        self.final_stats = final_stats
        self.calls: list = []
        self.active: set = set()
        self.fail_start: Optional[int] = None

    def feed(self, record, keepalive=None) -> None:
        with self._cond:
            self._pending.append((record, keepalive))
            self._cond.notify_all()

    def start_session(self, name: str) -> int:
        self.calls.append(("StartTraceW", name))
        if self.fail_start is not None:
            raise Win32Error(self.fail_start, "StartTraceW")
        self.active.add(name)
        return 0x4242

    def enable_provider(self, session: int, provider: str, level: int, keywords: int) -> None:
        self.calls.append(("EnableTraceEx2", session, provider, level, keywords))

    def open_trace(self, name: str, callback) -> int:
        self.calls.append(("OpenTraceW", name))
        self.callback = callback
        return 0x77

    def process_trace(self, trace: int) -> int:
        import ctypes
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait(0.1)
                if self._closed and not self._pending:
                    return 1223  # ERROR_CANCELLED
                rec, keep = self._pending.pop(0)
            self.callback(ctypes.pointer(rec))

    def close_trace(self, trace: int) -> None:
        self.calls.append(("CloseTrace", trace))
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def query_session(self, name: str):
        self.calls.append(("ControlTraceW(QUERY)", name))
        return self.stats.pop(0) if len(self.stats) > 1 else self.stats[0]

    def stop_session(self, name: str):
        self.calls.append(("ControlTraceW(STOP)", name))
        self.active.discard(name)
        return self.final_stats or self.stats[-1]


# ---- a fake Service Control Manager -----------------------------------------------------------

class FakeServiceApi:
    """A :class:`~sysmonx.windows.service.ServiceApi` standing in for the SCM: ``dispatch``
    runs ServiceMain in a thread of its own (as the SCM does) and returns when it returns;
    ``control(code)`` calls the registered handler as the SCM would; ``statuses`` records every
    ``SERVICE_STATUS`` reported (copies); ``not_a_service`` makes ``dispatch`` fail with 1063
    (``ERROR_FAILED_SERVICE_CONTROLLER_CONNECT``: the process was started from a console)."""

    def __init__(self, not_a_service: bool = False) -> None:
        self.handler: Any = None
        self.statuses: list = []
        self.not_a_service = not_a_service
        self.registered = threading.Event()
        self.running = threading.Event()

    def dispatch(self, name: str, service_main) -> None:
        if self.not_a_service:
            raise Win32Error(1063, "StartServiceCtrlDispatcherW")
        t = threading.Thread(target=service_main, name="fake-service-main", daemon=True)
        t.start()
        t.join()

    def register_handler(self, name: str, handler) -> Any:
        self.handler = handler
        self.registered.set()
        return 0x5151

    def set_status(self, handle: Any, status) -> None:
        from .service import SERVICE_RUNNING, SERVICE_STATUS
        copy = SERVICE_STATUS.from_buffer_copy(status)
        self.statuses.append(copy)
        if copy.dwCurrentState == SERVICE_RUNNING:
            self.running.set()

    def control(self, code: int) -> int:
        return self.handler(code)


# ---- fake Event Log writers --------------------------------------------------------------------

class FakeEventWriteApi:
    """An :class:`~sysmonx.windows.evtoutput.EventWriteApi` keeping what ``EventWrite`` got:
    ``written`` holds ``(EVENT_DESCRIPTOR copy, [field strings decoded from the data
    descriptors])``; ``registered`` says whether the manifest is installed; ``fail`` makes
    ``EventWrite`` return that Win32 code."""

    def __init__(self, registered: bool = True) -> None:
        self.registered = registered
        self.written: list = []
        self.handles: list = []
        self.fail: Optional[int] = None

    def provider_registered(self, guid: str) -> bool:
        return self.registered

    def register(self, guid: str) -> Any:
        self.handles.append(guid)
        return 0x1234

    def write(self, handle: Any, descriptor, data) -> None:
        import ctypes
        from .etw import EVENT_DESCRIPTOR
        if self.fail is not None:
            raise Win32Error(self.fail, "EventWrite")
        fields = []
        for d in data:
            raw = ctypes.string_at(d.Ptr, d.Size)
            assert raw.endswith(b"\0\0") and len(raw) % 2 == 0, "not UTF-16 + NUL"
            fields.append(raw[:-2].decode("utf-16-le", "surrogatepass"))
        self.written.append((EVENT_DESCRIPTOR.from_buffer_copy(descriptor), fields))

    def unregister(self, handle: Any) -> None:
        self.handles.remove("{06A2EA53-FC6C-42E5-9176-18749AB2CA13}")


class FakeReportEventApi:
    """A :class:`~sysmonx.windows.evtoutput.ReportEventApi` keeping ``(type, id, strings)``."""

    def __init__(self) -> None:
        self.reported: list = []
        self.sources: list = []

    def register(self, source: str) -> Any:
        self.sources.append(source)
        return 0x99

    def report(self, handle: Any, event_type: int, event_id: int, strings) -> None:
        self.reported.append((event_type, event_id, list(strings)))

    def deregister(self, handle: Any) -> None:
        self.sources.pop()
