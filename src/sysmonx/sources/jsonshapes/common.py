"""What the JSON export shapes share: splitting a file into JSON objects, telling the shape of a
file from its first object, the readers, value conversion as Sysmon renders values, and Sysmon
field order and recovery from the rendered message (see the package docstring).
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Iterator, Optional

import orjson

from ...core.registry import SOURCES
from ...event import (LINUX_PROVIDER, LINUX_PROVIDER_GUID, SYSMON_KEYWORDS,
                     WINDOWS_PROVIDER, WINDOWS_PROVIDER_GUID, Event, normalize_time)
from ...schema import GUID, HEXINT32, HEXINT64
from ...schema.catalogue import EVENTS
from ...core.errors import ReadError
from ..base import MAX_RECORD_BYTES, BadRun, FileFormat, FileNotes, OnError, iter_lines

__all__ = ["SHAPES", "read_json_shape", "read_json_shape_stream", "iter_objects", "classify",
           "detect_json", "convert", "ShapeFormat"]

#: Shapes this module reads (``--input-format`` names).
SHAPES = ("winlogbeat", "nxlog", "sentinel", "flatjson", "evtxjson")

_BOM = b"\xef\xbb\xbf"
#: No field to skip.
_NOTHING: frozenset = frozenset()


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
    to ``on_error`` (line number, ``path``) and skipped; after
    :data:`~sysmonx.sources.base.MAX_BAD_RUN` lines in a row that do not parse, the rest of the
    file is skipped with one error line.
    """
    multi: Optional[list] = None  # [start line, indent, parts or None (skipping), size]
    run = BadRun(path, on_error)
    for lineno, line in iter_lines(f):
        if line is None:
            if multi is not None:
                on_error(ReadError(path, multi[0], "line", "JSON object too long; skipped"))
                multi = None
            if run.bad(ReadError(path, lineno, "line", "line too long; skipped")):
                run.give_up(f, lineno)
                return
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
                    obj = _loads(b"\n".join(parts))
                except ValueError as exc:
                    on_error(ReadError(path, start, "line", str(exc)))
                    continue
                run.run = 0  # a good record ends a run of bad lines, as a good line does
                yield start, obj
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
            obj = _loads(s)
        except ValueError as exc:
            if run.bad(ReadError(path, lineno, "line", str(exc))):
                run.give_up(f, lineno)
                return
            continue
        run.run = 0
        yield lineno, obj
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
    convert_one = _converter(shape)
    with open(path, "rb") as f:
        yield from _read(f, path, on_error, convert_one)


def read_json_shape_stream(f, path: str, on_error: Callable[[ReadError], None],
                           shape: str) -> Iterator[Event]:
    """:func:`read_json_shape` over an open binary stream ``f`` (an archive member, ...), named
    ``path`` in origins and errors.

    Raises:
        ValueError: an unknown ``shape``.
    """
    return _read(f, path, on_error, _converter(shape))


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
    return _converter(shape)(obj, origin, notes)


def _converter(shape: str) -> Callable[..., Event]:
    """The registered shape's record converter (:meth:`ShapeFormat.convert_one`).

    Raises:
        ValueError: ``shape`` is not a registered JSON export shape.
    """
    cls = SOURCES.get(shape) if shape in SOURCES else None
    if not (isinstance(cls, type) and issubclass(cls, ShapeFormat)):
        raise ValueError(f"unknown JSON shape {shape!r}; expected one of {', '.join(SHAPES)}")
    return cls.convert_one


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
            out[n] = _guid(v) or v
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


class ShapeFormat(FileFormat):
    """A JSON export shape (:data:`SHAPES`): one module per shape defines its record converter
    and registers a subclass."""

    @staticmethod
    def convert_one(obj: dict, origin: Optional[tuple],
                    notes: Optional[FileNotes] = None) -> Event:
        """One decoded JSON record as an Event (see :func:`convert`)."""
        raise NotImplementedError

    @classmethod
    def read(cls, path: str, on_error: OnError, **options: Any) -> Iterator[Event]:
        """:func:`read_json_shape` of this shape."""
        return read_json_shape(path, on_error, cls.name)

    @classmethod
    def read_stream(cls, stream: Any, name: str, on_error: OnError) -> Iterator[Event]:
        """:func:`read_json_shape_stream` of this shape."""
        return read_json_shape_stream(stream, name, on_error, cls.name)
