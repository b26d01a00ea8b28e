"""JSON exports of other collectors: winlogbeat, nxlog, Azure Sentinel, Security-Datasets' flat
exporter and evtx-crate (``evtx_dump``) JSON. SysmonX's own JSON lines are read by
:mod:`sysmonx.sources.jsonl`.

Shapes (``--input-format`` names), each detected from the first JSON object of a file
(:func:`detect_json`, :func:`classify`):

``winlogbeat``
    6.x: top-level ``event_id``, ``source_name``, ``log_name``, ``computer_name``,
    ``record_number`` (string), ``event_data`` / ``user_data``, ``level`` / ``opcode`` / ``task``
    names, ``user.identifier``, ``process_id`` / ``thread_id``. 7.x and 8.x: the same under
    ``winlog`` (``winlog.event_id`` is an integer in 7, a string in 8; ``winlog.provider_name``,
    ``winlog.channel``, ``winlog.computer_name``, ``winlog.record_id``, ``winlog.event_data``,
    ``winlog.process.pid`` / ``thread.id``, ``log.level``). Time: ``@timestamp`` (winlogbeat sets
    it to the record's TimeCreated, milliseconds). Both layouts may be mixed in one file.
``nxlog``
    ``im_msvistalog`` records as ``to_json()`` writes them (often through Logstash): flat keys
    ``EventID``, ``SourceName``, ``Channel``, ``Hostname``, ``RecordNumber``, ``EventTime``,
    ``EventReceivedTime``, ``Keywords`` (signed integer), ``OpcodeValue``, ``ProcessID`` /
    ``ExecutionProcessID``, ``ThreadID``, ``UserID``, ... and the EventData fields flat beside them.
``sentinel``
    Azure Sentinel / Log Analytics rows: ``Event`` (``Source``, ``EventLog``, ``EventData`` an XML
    string ``<DataItem><EventData><Data Name=..>``) and ``WindowsEvent`` (``Provider``,
    ``Channel``, ``EventData`` a JSON string or object) tables, and the ``Syslog`` table whose
    ``SyslogMessage`` holds a Sysmon for Linux ``<Event>`` XML document (its System part gives
    the header; rows without an event become ``event_id`` 0 records of provider ``ProcessName``).
``flatjson``
    Security-Datasets' flat exporter: ``EventID``, ``SourceName``, ``Channel``, ``Hostname``,
    ``TimeCreated``, ``Task``, ``Level``, ``Keywords``, ``ProviderGuid``, ``@timestamp``,
    ``Message`` and the EventData fields flat.
``evtxjson``
    evtx-crate JSON (``evtx_dump -o json`` / ``jsonl``, pyevtx-rs ``records_json``):
    ``{"Event": {"System": {...}, "EventData": {...}}}`` objects, pretty-printed or one per line,
    with or without ``Record N`` header lines; converted exactly as the EVTX reader does.

Every shape may be one object per line, pretty-printed objects one after another, or a JSON
array of objects (:func:`iter_objects`); a UTF-8 byte-order mark is skipped.

Values come out as Sysmon renders them in event XML, so the same filters match as on the EVTX:
strings unchanged, numbers in decimal, booleans ``true``/``false``, ``null`` as ``""``, GUID
fields of Sysmon events ``{lower-case}``. For Sysmon events the fields are put in Sysmon's order
(the schema's), and fields the exporter dropped or clobbered are taken back from the rendered
``Message`` when it agrees with every field the record kept (winlogbeat leaves out empty values,
e.g. ``RuleName``; nxlog's field names are case-insensitive, so its ``ProcessID`` / ``EventType``
/ ``Version`` overwrite Sysmon's ``ProcessId`` / ``EventType`` / ``Version``). Message values of
``win:HexInt`` fields are lower-cased, as XML shows them. nxlog leaves EventData values
XML-escaped (``&lt;Anonymous Pipe&gt;``): they are unescaped. Sentinel's ``WindowsEvent`` table
re-renders date-like strings as ISO datetimes: Sysmon ``*UtcTime`` fields are put back in
Sysmon's ``YYYY-MM-DD HH:MM:SS.mmm``.

Time is the record's System time, normalised to UTC (never event data such as ``UtcTime``):
``@timestamp`` (winlogbeat), ``EventTime`` (nxlog), ``TimeCreated`` / ``TimeGenerated``
(Sentinel), ``TimeCreated`` (flat). Times without a zone are local times of the collector:
nxlog's ``EventTime`` is corrected by the zone offset between ``EventReceivedTime`` (local) and
Logstash's ``@timestamp`` (UTC), rounded to 15 minutes; a zone-less flat ``TimeCreated`` is
replaced by ``@timestamp`` when there is one, else taken as UTC (nothing tells the offset).

Lost on the way (the exports do not carry it; found by comparing with the EVTX or the message):
sub-millisecond time digits (winlogbeat, Sentinel, flat) or sub-second ones (nxlog); numeric
Level / Task / Opcode where only their names are exported (Level names are mapped back, Sysmon's
Task is its event id, other providers' stay ``None``); Keywords given as names (Sysmon's constant
is used); Version, EventRecordID and Execution ids where absent (flat, Sentinel Event table);
white space values the flat exporter turned into ``null`` (read as ``""``); values an exporter
trimmed (the SigmaHQ evtx-crate renderings trim trailing white space). Sentinel's ``WindowsEvent``
``Task`` column is taken as found even where it is not Sysmon's (``1`` for every event in the
corpus). Times of the flat exporter without a zone and without ``@timestamp`` are local times of
an unknown zone, taken as UTC.

Records of other providers are yielded too, with provider and channel as found and all their
non-header keys as data. Malformed lines (not JSON, not an object, no numeric event id, a bad
time) are reported as one :class:`~sysmonx.sources.ReadError` each (line number) and skipped.
``Event.origin`` is ``(path, line of the object's first line)``.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any, Callable, Iterator, Optional

import orjson

from ..core.registry import SOURCES
from ..event import (LINUX_PROVIDER, LINUX_PROVIDER_GUID, SYSMON_KEYWORDS, SYSMON_PROVIDERS,
                     WINDOWS_PROVIDER, WINDOWS_PROVIDER_GUID, Event, normalize_time)
from ..schema import GUID, HEXINT32, HEXINT64
from ..schema.catalogue import EVENTS
from . import MAX_RECORD_BYTES, FileNotes, ReadError, _iter_lines, _put_unique
from .base import FileFormat, OnError

__all__ = ["SHAPES", "read_json_shape", "read_json_shape_stream", "iter_objects", "classify",
           "detect_json", "convert"]

#: Shapes this module reads (``--input-format`` names).
SHAPES = ("winlogbeat", "nxlog", "sentinel", "flatjson", "evtxjson")

_BOM = b"\xef\xbb\xbf"


# ---- splitting a file into JSON objects ---------------------------------------------------------

def _loads(text: bytes):
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if b"\\ud" in text or b"\\uD" in text:  # lone surrogate escapes: orjson refuses them
            try:
                return json.loads(text.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                pass
        raise ValueError(f"not JSON: {exc}") from None


def iter_objects(f, path: str, on_error: Callable[[ReadError], None]
                 ) -> Iterator[tuple[int, object]]:
    """``(line, decoded value)`` of each JSON value of binary stream ``f``, streaming.

    Accepts one value per line, pretty-printed objects (an object opened by a line that is only
    ``{``, closed by the ``}`` line at the same indentation), JSON arrays of objects (``[``,
    ``]`` and separating commas are skipped) and ``Record N`` lines (``evtx_dump``). Each line
    that does not parse, an object left unterminated and an over-long line or object are reported
    to ``on_error`` (line number, ``path``) and skipped.
    """
    multi: Optional[list] = None  # [start line, indent, parts or None (skipping), size]
    for lineno, line in _iter_lines(f):
        if line is None:
            if multi is not None:
                on_error(ReadError(path, multi[0], "line", "JSON object too long; skipped"))
                multi = None
            on_error(ReadError(path, lineno, "line", "line too long; skipped"))
            continue
        if lineno == 1 and line.startswith(_BOM):
            line = line[3:]
        if multi is not None:
            stripped = line.lstrip()
            indent = len(line) - len(stripped)
            if indent == multi[1] and stripped[:1] == b"}":
                start, parts = multi[0], multi[2]
                multi = None
                if parts is None:
                    continue
                parts.append(b"}")
                try:
                    yield start, _loads(b"\n".join(parts))
                except ValueError as exc:
                    on_error(ReadError(path, start, "line", str(exc)))
                continue
            if stripped and (indent < multi[1] or (indent == multi[1] and stripped[:1] == b"{")):
                on_error(ReadError(path, multi[0], "line", "unterminated JSON object; skipped"))
                multi = None  # and read this line as a new start
            else:
                if multi[2] is not None:
                    multi[3] += len(line) + 1
                    if multi[3] > MAX_RECORD_BYTES:
                        on_error(ReadError(path, multi[0], "line",
                                           "JSON object too long; skipped"))
                        multi[2] = None
                    else:
                        multi[2].append(line)
                continue
        s = line.strip()
        if not s or s in (b"[", b"]", b",", b"[]"):
            continue
        if s[:1] == b"[":
            s = s[1:].lstrip()
        if s[-1:] == b",":
            s = s[:-1].rstrip()
        if s[-2:] == b"}]":
            s = s[:-1]
        if s == b"{":
            multi = [lineno, len(line) - len(line.lstrip()), [s], 1]
            continue
        if s[:7] == b"Record " and s[7:].isdigit():
            continue
        try:
            yield lineno, _loads(s)
        except ValueError as exc:
            on_error(ReadError(path, lineno, "line", str(exc)))
    if multi is not None:
        on_error(ReadError(path, multi[0], "line", "JSON object not terminated at the end of "
                           "the file; skipped"))


# ---- detection ---------------------------------------------------------------------------------

_SENTINEL_TYPES = frozenset({"Event", "WindowsEvent", "SecurityEvent", "Syslog"})


def classify(obj) -> Optional[str]:
    """The shape of one decoded JSON object: one of :data:`SHAPES`, ``"jsonl"`` (SysmonX JSON
    lines) or ``None`` (not an event record of a known shape)."""
    if type(obj) is not dict:
        return None
    ev = obj.get("Event")
    if type(ev) is dict and ("System" in ev or "EventData" in ev):
        return "evtxjson"
    if (type(obj.get("winlog")) is dict or "log_name" in obj or "event_data" in obj
            or ("source_name" in obj and "event_id" in obj)):
        return "winlogbeat"
    if type(obj.get("System")) is dict:
        return "jsonl"
    if ("SyslogMessage" in obj or "TenantId" in obj or "TimeGenerated" in obj
            or obj.get("Type") in _SENTINEL_TYPES):
        return "sentinel"
    if "SourceModuleType" in obj or "EventReceivedTime" in obj or "EventTime" in obj:
        return "nxlog"
    if "EventID" in obj and ("SourceName" in obj or "Channel" in obj or "Hostname" in obj):
        return "flatjson"
    if "EventID" in obj:
        return "jsonl"
    return None


_MARKERS = ((b'"Event"', "evtxjson"), (b'"winlog"', "winlogbeat"), (b'"log_name"', "winlogbeat"),
            (b'"event_data"', "winlogbeat"), (b'"System"', "jsonl"),
            (b'"SyslogMessage"', "sentinel"), (b'"TenantId"', "sentinel"),
            (b'"TimeGenerated"', "sentinel"), (b'"SourceModuleType"', "nxlog"),
            (b'"EventReceivedTime"', "nxlog"), (b'"SourceName"', "flatjson"))


def detect_json(head: bytes) -> Optional[str]:
    """Shape of a JSON file from its first bytes: :func:`classify` of the first object that
    parses in ``head`` (a cut-off last line simply does not parse), else (an object longer than
    ``head``) the first telling key found in the text. ``None`` when nothing tells."""
    for _, obj in iter_objects(_Lines(head), "", _ignore):
        shape = classify(obj)
        if shape is not None:
            return shape
    if head.lstrip(_BOM + b" \t\r\n")[:1] in (b"{", b"["):
        for marker, shape in _MARKERS:
            if marker in head:
                return shape
    return None


def _ignore(_err: ReadError) -> None:
    pass


class _Lines:
    """Minimal binary stream over bytes (``readline`` only)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def readline(self, limit: int = -1) -> bytes:
        end = self.data.find(b"\n", self.pos)
        end = len(self.data) if end < 0 else end + 1
        if 0 <= limit < end - self.pos:
            end = self.pos + limit
        line, self.pos = self.data[self.pos:end], end
        return line


# ---- readers -----------------------------------------------------------------------------------

def read_json_shape(path: str, on_error: Callable[[ReadError], None],
                    shape: str) -> Iterator[Event]:
    """Yield the events of a JSON export of the given ``shape`` (one of :data:`SHAPES`).

    Args:
        path: the file.
        on_error: receives a :class:`~sysmonx.sources.ReadError` (line number) per malformed
            line or object; reading goes on with the next one.
        shape: the export's shape.
    Raises:
        ValueError: an unknown ``shape``.
        OSError: the file cannot be opened.
    """
    convert_one = _CONVERTERS[shape]
    with open(path, "rb") as f:
        yield from _read(f, path, on_error, convert_one)


def read_json_shape_stream(f, path: str, on_error: Callable[[ReadError], None],
                           shape: str) -> Iterator[Event]:
    """:func:`read_json_shape` over an open binary stream ``f`` (an archive member, ...), named
    ``path`` in origins and errors.

    Raises:
        ValueError: an unknown ``shape``.
    """
    return _read(f, path, on_error, _CONVERTERS[shape])


def _read(f, path, on_error, convert_one) -> Iterator[Event]:
    notes = FileNotes(path, on_error)
    for lineno, obj in iter_objects(f, path, on_error):
        try:
            if type(obj) is not dict:
                raise ValueError("not a JSON object")
            event = convert_one(obj, (path, lineno), notes)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            msg = str(exc) if isinstance(exc, ValueError) else f"malformed record: {exc!r}"
            on_error(ReadError(path, lineno, "line", msg))
            continue
        yield event


def convert(obj: dict, shape: str, origin: Optional[tuple] = None,
            notes: Optional[FileNotes] = None) -> Event:
    """One decoded JSON record of ``shape`` as an Event; ``notes`` receives what was repaired
    or could not be interpreted (entity references, unnamed values, a cut-off message).

    Raises:
        ValueError: no numeric event id, a malformed time or XML, not an event of that shape.
        TypeError, KeyError, AttributeError: a record whose parts have the wrong JSON types.
    """
    return _CONVERTERS[shape](obj, origin, notes)


# ---- value helpers ------------------------------------------------------------------------------

def _int(v) -> Optional[int]:
    """An integer from a JSON number or a decimal string; ``None`` otherwise."""
    if type(v) is int:
        return v
    if type(v) is str:
        v = v.strip()
        if v.isascii() and v.isdigit():
            return int(v)
    return None


def _event_id(v) -> int:
    eid = _int(v)
    if eid is None:
        raise ValueError(f"no numeric event id ({v!r})")
    return eid


_LEVELS = {"logalways": 0, "log always": 0, "critical": 1, "error": 2, "warning": 3,
           "information": 4, "informational": 4, "info": 4, "verbose": 5}


def _level(v) -> Optional[int]:
    i = _int(v)
    if i is None and type(v) is str:
        return _LEVELS.get(v.strip().lower())
    return i


def _opcode(v) -> Optional[int]:
    i = _int(v)
    if i is None and type(v) is str and v.strip().lower() == "info":
        return 0
    return i


def _keywords(v, sysmon: bool) -> Optional[str]:
    if type(v) is int:
        return f"0x{v & 0xFFFFFFFFFFFFFFFF:016x}"
    if type(v) is str and v[:2].lower() == "0x":
        return v
    return SYSMON_KEYWORDS if sysmon else None


def _guid(v) -> Optional[str]:
    if type(v) is not str or not v:
        return None
    v = v.strip().lower()
    return v if v[:1] == "{" else "{" + v + "}"


def _provider_guid(v, provider: str) -> Optional[str]:
    guid = _guid(v)
    if guid is None:
        if provider == WINDOWS_PROVIDER:
            return WINDOWS_PROVIDER_GUID
        if provider == LINUX_PROVIDER:
            return LINUX_PROVIDER_GUID
    return guid


def _str(v) -> Optional[str]:
    return v if type(v) is str else None


def _time(v) -> str:
    """Canonical UTC time of a JSON time value (``""`` when absent)."""
    if type(v) is not str or not v:
        return ""
    return normalize_time(v)


_ZONE = re.compile(r"(?:[Zz]|UTC|[+-]\d{2}:?\d{2})\s*$")


def _has_zone(text: str) -> bool:
    return bool(_ZONE.search(text))


def _value(v) -> str:
    """Event-log string of a JSON value."""
    if type(v) is str:
        return v
    if v is None:
        return ""
    if v is True:
        return "true"
    if v is False:
        return "false"
    if type(v) is int:
        return str(v)
    if isinstance(v, dict):
        return orjson.dumps(v).decode()
    if isinstance(v, list):
        return ", ".join(_value(x) for x in v)
    return str(v)


_XML_ENTITY = re.compile(r"&(?:(lt|gt|amp|quot|apos)|#(\d{1,7})|#x([0-9A-Fa-f]{1,6}));")
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}


def _xml_unescape(v: str) -> str:
    def sub(m: re.Match) -> str:
        if m.group(1):
            return _NAMED[m.group(1)]
        code = int(m.group(2)) if m.group(2) else int(m.group(3), 16)
        return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else m.group(0)
    return _XML_ENTITY.sub(sub, v)


# ---- Sysmon fields: order, types, recovery from the rendered message -----------------------------

_FIELDS: dict[int, tuple] = {}
_POS: dict[int, dict] = {}
_GUIDS: dict[int, frozenset] = {}
_HEX: dict[int, frozenset] = {}
for _d in EVENTS:
    _FIELDS[_d.event_id] = tuple(f.name for f in _d.fields)
    _POS[_d.event_id] = {f.name: i for i, f in enumerate(_d.fields)}
    _GUIDS[_d.event_id] = frozenset(f.name for f in _d.fields if f.in_type == GUID)
    _HEX[_d.event_id] = frozenset(f.name for f in _d.fields if f.in_type in (HEXINT32, HEXINT64))

_LINE_BREAK = re.compile(r"(\r\n|\n|\r)")


def _message_fields(message: str, pos: dict) -> dict:
    """``Name: value`` fields of a rendered Sysmon message (``Process Create:\\r\\nRuleName: -
    \\r\\nUtcTime: ...``): a line starts a field when it begins with a field name of the event
    that comes after the previous one in Sysmon's order; other lines continue the value before
    (multi-line command lines keep their line breaks)."""
    parts = _LINE_BREAK.split(message)
    out: dict = {}
    cur = None
    last = -1
    for i in range(0, len(parts), 2):
        line = parts[i]
        name, sep, value = line.partition(": ")
        if not sep and line[-1:] == ":":
            name, sep, value = line[:-1], ":", ""
        p = pos.get(name) if sep else None
        if p is not None and p > last:
            out[name] = value
            cur, last = name, p
        elif cur is not None:
            out[cur] += parts[i - 1] + line
    return out


def _same(a: str, b: str) -> bool:
    if a == b:
        return True
    return (a.replace("\r\n", "\n").strip().lower() == b.replace("\r\n", "\n").strip().lower())


def _sysmon_data(eid: int, src: dict, skip: frozenset, message=None, *,
                 prefer_message: tuple = (), drop: Optional[dict] = None,
                 unescape: bool = False) -> dict:
    """EventData of a Sysmon event from the flat or ``event_data`` dict ``src``.

    Schema fields first in Sysmon's order, then other keys of ``src`` not in ``skip``. Fields
    missing from ``src`` (or listed in ``prefer_message``, or whose value is one of
    ``drop[name]``) are taken from ``message`` when every field both carry agrees.
    """
    names = _FIELDS.get(eid)
    if names is None:
        return _other_data(src, skip, unescape)
    found = {}
    for n in names:
        if n in src:
            v = src[n]
            if type(v) is not str:
                v = _value(v)
            elif unescape and "&" in v:
                v = _xml_unescape(v)
            found[n] = v
    if drop:
        for n, bad in drop.items():
            if found.get(n) in bad:
                del found[n]
    if type(message) is str and message and _worth_parsing(names, found, message,
                                                           prefer_message):
        parsed = _message_fields(message, _POS[eid])
        if parsed and all(_same(v, found[n]) for n, v in parsed.items()
                          if n in found and n not in prefer_message):
            hexes = _HEX[eid]
            for n, v in parsed.items():
                if n not in found or n in prefer_message:
                    found[n] = v.lower() if n in hexes else v
    out = {n: found[n] for n in names if n in found}
    known = _POS[eid]
    for k, v in src.items():
        if k not in known and k not in skip:
            out[k] = _xml_unescape(v) if unescape and type(v) is str and "&" in v else _value(v)
    for n in _GUIDS[eid]:
        v = out.get(n)
        if v and (v[0] != "{" or v != v.lower()):
            out[n] = _guid(v)
    return out


def _worth_parsing(names: tuple, found: dict, message: str, prefer: tuple) -> bool:
    """Whether ``message`` may hold a field that ``found`` lacks (or one to prefer from it)."""
    for n in names:
        if (n not in found or n in prefer) and f"\n{n}:" in message:
            return True
    return False


def _other_data(src: dict, skip: frozenset, unescape: bool = False) -> dict:
    """EventData of a non-Sysmon record: every key not in ``skip``, in order."""
    out = {}
    for k, v in src.items():
        if k not in skip:
            out[k] = _xml_unescape(v) if unescape and type(v) is str and "&" in v else _value(v)
    return out


def _data(eid: int, sysmon: bool, src: dict, skip: frozenset, message=None, **kw) -> dict:
    if sysmon:
        return _sysmon_data(eid, src, skip, message, **kw)
    return _other_data(src, skip, kw.get("unescape", False))


# ---- winlogbeat ---------------------------------------------------------------------------------

_NOTHING: frozenset = frozenset()
_PARAM = re.compile(r"param[1-9]\d*\Z")


def _winlogbeat(obj: dict, origin, notes: Optional[FileNotes] = None) -> Event:
    w = obj.get("winlog")
    if type(w) is dict:  # 7.x / 8.x
        eid = _event_id(w.get("event_id", (obj.get("event") or {}).get("code")))
        provider = _str(w.get("provider_name")) or ""
        channel = _str(w.get("channel")) or ""
        computer = _str(w.get("computer_name")) or ""
        record = _int(w.get("record_id"))
        src = w.get("event_data") or {}
        user_data = w.get("user_data")
        proc = w.get("process") or {}
        pid = _int(proc.get("pid"))
        tid = _int((proc.get("thread") or {}).get("id"))
        user = (w.get("user") or {}).get("identifier")
        level = (obj.get("log") or {}).get("level", w.get("level"))
        version, opcode, task = w.get("version"), w.get("opcode"), w.get("task")
        keywords, guid = w.get("keywords"), w.get("provider_guid")
        t = w.get("time_created") or obj.get("@timestamp")
    else:  # 6.x
        eid = _event_id(obj.get("event_id"))
        provider = _str(obj.get("source_name")) or ""
        channel = _str(obj.get("log_name")) or ""
        computer = _str(obj.get("computer_name")) or ""
        record = _int(obj.get("record_number"))
        src = obj.get("event_data") or {}
        user_data = obj.get("user_data")
        pid, tid = _int(obj.get("process_id")), _int(obj.get("thread_id"))
        user = (obj.get("user") or {}).get("identifier")
        level = obj.get("level")
        version, opcode, task = obj.get("version"), obj.get("opcode"), obj.get("task")
        keywords, guid = obj.get("keywords"), obj.get("provider_guid")
        t = obj.get("@timestamp")
    if type(src) is not dict:
        raise ValueError("event_data is not an object")
    sysmon = provider in SYSMON_PROVIDERS
    if sysmon and src and all(_PARAM.match(k) for k in src):  # winlogbeat's unnamed <Data>
        from .xmlfile import name_unnamed
        ordered = [_value(src[k]) for k in sorted(src, key=lambda k: int(k[5:]))]
        src = name_unnamed(eid, provider, _int(version), ordered, {}, notes, origin)
    task = _int(task)
    if task is None and sysmon:
        task = eid  # a task name ("Process Create (rule: ProcessCreate)"); Sysmon's is the id
    data = _data(eid, sysmon, src, _NOTHING, obj.get("message"))
    if type(user_data) is dict:
        for k, v in user_data.items():
            if k != "xml_name":
                _put_unique(data, k, _value(v))
    return Event(eid, data, provider=provider, provider_guid=_provider_guid(guid, provider),
                 version=_int(version), level=_level(level), task=task,
                 opcode=_opcode(opcode), keywords=_keywords(keywords, sysmon),
                 time_created=_time(t), record_id=record, process_id=pid, thread_id=tid,
                 channel=channel, computer=computer, user_id=_str(user), origin=origin)


# ---- nxlog --------------------------------------------------------------------------------------

#: im_msvistalog's own fields, and what Logstash / the Mordor pipeline add.
_NXLOG_META = frozenset({
    "EventTime", "EventReceivedTime", "SourceModuleName", "SourceModuleType", "Hostname",
    "EventType", "Severity", "SeverityValue", "Keywords", "EventID", "SourceName", "ProviderGuid",
    "Version", "Task", "OpcodeValue", "Opcode", "RecordNumber", "ActivityID", "RelatedActivityID",
    "ProcessID", "ThreadID", "Channel", "Domain", "AccountName", "UserID", "AccountType",
    "Category", "Message", "ERRORCODE", "ExecutionProcessID", "EventTypeOrignal",
    "EventTypeOriginal", "@timestamp", "@version", "host", "port", "tags", "type"})
#: nxlog's EventType values (Sysmon's own EventType field is overwritten by them).
_NXLOG_EVENT_TYPES = frozenset({"INFO", "AUDIT_SUCCESS", "AUDIT_FAILURE", "WARNING", "ERROR",
                                "CRITICAL", "VERBOSE", "DEBUG"})
_NXLOG_DROP = {"EventType": _NXLOG_EVENT_TYPES}
_NXLOG_LEVELS = {"DEBUG": 5, "INFO": 4, "WARNING": 3, "ERROR": 2, "CRITICAL": 1}
_QUARTER = 900


def _nxlog_time(obj: dict) -> str:
    """``EventTime`` in UTC: with its zone if it has one, else shifted by the collector's offset
    (``@timestamp`` UTC minus ``EventReceivedTime`` local, to 15 minutes)."""
    t = obj.get("EventTime")
    if type(t) is not str or not t:
        return _time(obj.get("@timestamp"))
    if _has_zone(t):
        return normalize_time(t)
    canonical = normalize_time(t)
    offset = _zone_offset(obj.get("EventReceivedTime"), obj.get("@timestamp"))
    if offset:
        shifted = datetime.fromisoformat(canonical[:19]) + timedelta(seconds=offset)
        return shifted.isoformat(timespec="seconds") + canonical[19:]
    return canonical


def _zone_offset(received, stamp) -> int:
    """Seconds to add to the collector's local times for UTC: ``stamp`` (UTC) minus
    ``received`` (zone-less local), rounded to 15 minutes; 0 when unknown or implausible."""
    if type(received) is not str or type(stamp) is not str or not received or not stamp:
        return 0
    try:
        local = datetime.fromisoformat(received)
        utc = datetime.fromisoformat(stamp)
    except ValueError:
        try:
            local = datetime.fromisoformat(normalize_time(received)[:26])
            utc = datetime.fromisoformat(normalize_time(stamp)[:26] + "+00:00")
        except ValueError:
            return 0
    if local.tzinfo is not None or utc.tzinfo is None:
        return 0
    offset = round((utc.replace(tzinfo=None) - local - utc.utcoffset()).total_seconds()
                   / _QUARTER) * _QUARTER
    return offset if abs(offset) <= 14 * 3600 else 0


def _nxlog(obj: dict, origin, notes: Optional[FileNotes] = None) -> Event:
    eid = _event_id(obj.get("EventID"))
    provider = _str(obj.get("SourceName")) or ""
    sysmon = provider in SYSMON_PROVIDERS
    if sysmon:
        data = _sysmon_data(eid, obj, _NXLOG_META, obj.get("Message"),
                            prefer_message=("EventType", "Version"), drop=_NXLOG_DROP,
                            unescape=True)
    else:
        data = _other_data(obj, _NXLOG_META, unescape=True)
    severity = obj.get("Severity")
    pid = obj.get("ExecutionProcessID", obj.get("ProcessID"))
    return Event(eid, data, provider=provider,
                 provider_guid=_provider_guid(obj.get("ProviderGuid"), provider),
                 version=_int(obj.get("Version")),
                 level=(_NXLOG_LEVELS.get(severity) if type(severity) is str else None),
                 task=_int(obj.get("Task")), opcode=_int(obj.get("OpcodeValue")),
                 keywords=_keywords(obj.get("Keywords"), sysmon), time_created=_nxlog_time(obj),
                 record_id=_int(obj.get("RecordNumber")), process_id=_int(pid),
                 thread_id=_int(obj.get("ThreadID")), channel=_str(obj.get("Channel")) or "",
                 computer=_str(obj.get("Hostname")) or "", user_id=_str(obj.get("UserID")),
                 origin=origin)


# ---- Security-Datasets flat exporter ------------------------------------------------------------

_FLAT_META = frozenset({"SourceName", "ProviderGuid", "Level", "Keywords", "Channel", "Hostname",
                        "TimeCreated", "@timestamp", "EventID", "Message", "Task"})


def _flat(obj: dict, origin, notes: Optional[FileNotes] = None) -> Event:
    eid = _event_id(obj.get("EventID"))
    provider = _str(obj.get("SourceName")) or ""
    sysmon = provider in SYSMON_PROVIDERS
    t = obj.get("TimeCreated")
    if not (type(t) is str and t and _has_zone(t)) and obj.get("@timestamp"):
        t = obj.get("@timestamp")
    return Event(eid, _data(eid, sysmon, obj, _FLAT_META, obj.get("Message")),
                 provider=provider,
                 provider_guid=_provider_guid(obj.get("ProviderGuid"), provider),
                 version=None, level=_level(obj.get("Level")), task=_int(obj.get("Task")),
                 opcode=None, keywords=_keywords(obj.get("Keywords"), sysmon),
                 time_created=_time(t), record_id=None, process_id=None, thread_id=None,
                 channel=_str(obj.get("Channel")) or "", computer=_str(obj.get("Hostname")) or "",
                 user_id=None, origin=origin)


# ---- Azure Sentinel / Log Analytics -------------------------------------------------------------

#: Columns of the Event, WindowsEvent and SecurityEvent tables that are not event data.
_SENTINEL_META = frozenset({
    "TenantId", "SourceSystem", "TimeGenerated", "TimeCreated", "Provider", "Source", "Channel",
    "EventLog", "Computer", "Task", "EventLevel", "EventLevelName", "EventData", "EventID",
    "EventOriginId", "ManagementGroupName", "Type", "_ResourceId", "MG", "UserName",
    "RenderedDescription", "EventCategory", "ParameterXml", "AzureDeploymentID", "Role",
    "EventRecordId", "Keywords", "Opcode", "Version", "SystemProcessId", "SystemThreadId",
    "SystemUserId", "Correlation", "RawEventData", "Data", "_ItemId",
    "_Internal_WorkspaceResourceId", "Activity", "EventSourceName", "SourceComputerId"})
_KUSTO_TIME = re.compile(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z\Z")


def _sentinel(obj: dict, origin, notes: Optional[FileNotes] = None) -> Event:
    message = obj.get("SyslogMessage")
    if message is not None:
        return _sentinel_syslog(obj, message, origin, notes)
    eid = _event_id(obj.get("EventID"))
    provider = _str(obj.get("Provider")) or _str(obj.get("Source")) or ""
    sysmon = provider in SYSMON_PROVIDERS
    ed = obj.get("EventData")
    if type(ed) is str:
        text = ed.strip()
        if text[:1] == "<":
            src, unnamed = _xml_event_data(text)
            if unnamed:
                from .xmlfile import name_unnamed
                src = name_unnamed(eid, provider, _int(obj.get("Version")), unnamed, src, notes,
                                   origin)
        elif text[:1] == "{":
            src = orjson.loads(text)
            if type(src) is not dict:
                raise ValueError("EventData is not a JSON object")
        else:
            src = {"EventData": ed} if text else {}
        skip = _NOTHING
    elif type(ed) is dict:
        src, skip = ed, _NOTHING
    else:  # SecurityEvent: the event data are columns
        src, skip = obj, _SENTINEL_META
    data = _data(eid, sysmon, src, skip, obj.get("RenderedDescription"))
    if sysmon:
        for k, v in data.items():
            if k.endswith("UtcTime") and v[-1:] == "Z":
                m = _KUSTO_TIME.match(v)
                if m:
                    data[k] = f"{m.group(1)} {m.group(2)}.{(m.group(3) or '').ljust(3, '0')[:3]}"
    t = obj.get("TimeCreated") or obj.get("TimeGenerated")
    return Event(eid, data, provider=provider, provider_guid=_provider_guid(None, provider),
                 version=_int(obj.get("Version")), level=_level(obj.get("EventLevel")),
                 task=_int(obj.get("Task")), opcode=_opcode(obj.get("Opcode")),
                 keywords=_keywords(obj.get("Keywords"), sysmon), time_created=_time(t),
                 record_id=_int(obj.get("EventRecordId")),
                 process_id=_int(obj.get("SystemProcessId")),
                 thread_id=_int(obj.get("SystemThreadId")),
                 channel=_str(obj.get("Channel")) or _str(obj.get("EventLog")) or "",
                 computer=_str(obj.get("Computer")) or "", user_id=_str(obj.get("SystemUserId")),
                 origin=origin)


def _xml_event_data(text: str) -> tuple[dict, list]:
    """``Data`` and ``ComplexData`` elements of the Event table's EventData XML
    (``<DataItem><EventData><Data Name="x">v</Data>...``): ``({name: value}, [values of
    unnamed Data, in order])``."""
    from lxml import etree

    from .xmlfile import safe_parser
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise ValueError("malformed EventData XML: DTDs and entities are not accepted")
    try:
        root = etree.fromstring(text.encode("utf-8"), safe_parser())
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"malformed EventData XML: {exc.msg}") from None
    out: dict = {}
    unnamed: list = []
    for el in root.iter():
        tag = el.tag
        if not isinstance(tag, str):
            continue
        local = tag[tag.index("}") + 1:] if tag[:1] == "{" else tag
        if local in ("Data", "ComplexData"):
            name = el.get("Name")
            if name:
                _put_unique(out, name, el.text or "")
            elif local == "Data":
                unnamed.append(el.text or "")
    return out, unnamed


_SYSLOG_META = frozenset({"TenantId", "SourceSystem", "TimeGenerated", "EventTime", "Computer",
                          "HostName", "ProcessName", "Type", "MG", "_ResourceId",
                          "ManagementGroupName", "SourceComputerId", "CollectorHostName"})


def _sentinel_syslog(obj: dict, message, origin, notes: Optional[FileNotes] = None) -> Event:
    """A Syslog table row: the Sysmon for Linux event of ``SyslogMessage`` (entity references
    without ``;`` repaired, a message cut short read up to its last complete field, as
    :func:`sysmonx.sources.syslog.event_from_line` does), or the row itself."""
    if type(message) is not str:
        raise ValueError("SyslogMessage is not a string")
    start = message.find("<Event")
    if start >= 0:
        from lxml import etree

        from .syslog import event_from_line
        raw = message.encode("utf-8")
        try:
            event = event_from_line(raw, raw.find(b"<Event"), origin, notes)
        except etree.XMLSyntaxError as exc:
            raise ValueError(f"malformed event XML in SyslogMessage: {exc.msg}") from None
        if not event.computer:
            event.computer = _str(obj.get("Computer")) or _str(obj.get("HostName")) or ""
        if not event.time_created:
            event.time_created = _time(obj.get("EventTime") or obj.get("TimeGenerated"))
        return event
    return Event(0, _other_data(obj, _SYSLOG_META), provider=_str(obj.get("ProcessName")) or "",
                 provider_guid=None, opcode=None, keywords=None,
                 time_created=_time(obj.get("EventTime") or obj.get("TimeGenerated")),
                 process_id=_int(obj.get("ProcessID")), channel="Syslog",
                 computer=_str(obj.get("Computer")) or _str(obj.get("HostName")) or "",
                 origin=origin)


# ---- evtx-crate JSON ----------------------------------------------------------------------------

def _evtxjson(obj: dict, origin, notes: Optional[FileNotes] = None) -> Event:
    from .evtx import _BadRecord, _convert_root
    try:
        return _convert_root(obj.get("Event"), origin, notes)
    except _BadRecord as exc:
        raise ValueError(str(exc)) from None


_CONVERTERS = {"winlogbeat": _winlogbeat, "nxlog": _nxlog, "sentinel": _sentinel,
               "flatjson": _flat, "evtxjson": _evtxjson}


class _ShapeFormat(FileFormat):
    """A JSON export shape (:data:`SHAPES`)."""

    @classmethod
    def read(cls, path: str, on_error: OnError, **options: Any) -> Iterator[Event]:
        """:func:`read_json_shape` of this shape."""
        return read_json_shape(path, on_error, cls.name)

    @classmethod
    def read_stream(cls, stream: Any, name: str, on_error: OnError) -> Iterator[Event]:
        """:func:`read_json_shape_stream` of this shape."""
        return read_json_shape_stream(stream, name, on_error, cls.name)


@SOURCES.register
class WinlogbeatFormat(_ShapeFormat):
    """winlogbeat 6.x, 7.x and 8.x JSON (Elastic)."""

    name = "winlogbeat"
    summary = "winlogbeat 6/7/8 JSON (Elastic)"
    order = 40


@SOURCES.register
class NxlogFormat(_ShapeFormat):
    """nxlog ``im_msvistalog`` JSON (flat)."""

    name = "nxlog"
    summary = "nxlog im_msvistalog JSON (flat)"
    order = 41


@SOURCES.register
class SentinelFormat(_ShapeFormat):
    """Azure Sentinel / Log Analytics rows (Event, WindowsEvent, Syslog with Linux Sysmon
    XML)."""

    name = "sentinel"
    summary = "Azure Sentinel / Log Analytics rows (Event, WindowsEvent, Syslog tables)"
    order = 42


@SOURCES.register
class FlatJsonFormat(_ShapeFormat):
    """Security-Datasets flat JSON exporter."""

    name = "flatjson"
    summary = "Security-Datasets flat JSON"
    order = 43


@SOURCES.register
class EvtxJsonFormat(_ShapeFormat):
    """evtx-crate JSON (``evtx_dump``, pyevtx-rs ``records_json``)."""

    name = "evtxjson"
    summary = "evtx-crate JSON (evtx_dump, pyevtx-rs)"
    order = 44
