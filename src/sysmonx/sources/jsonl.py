"""SysmonX JSON lines, as written by :mod:`sysmonx.sinks.jsonl` (the format is described there).

Each line is one object: ``EventID``, the EventData fields as top-level keys, ``System``,
for events whose field names collide with the reserved keys, ``ExtraData`` and, for events
written with ``--enrich``, ``Enrichment`` (an object of the SysmonX enrichment fields). The reader
rebuilds the Event exactly: top-level fields in order, then the ``ExtraData`` fields in order,
then the ``Enrichment`` fields in order (the enrichment stage appends them after the event's own
fields, which is also where the XML writers put them and the XML readers find them).

Malformed lines (not JSON, not an object, no integer ``EventID``, a value of the wrong type, a
bad time) are reported with their line number and skipped; blank lines are ignored; after
:data:`~sysmonx.sources.base.MAX_BAD_RUN` bad lines in a row the rest of the file is skipped
with one error line. A file no line of which is a JSON object or starts like one (``{``: notes
or a TOML file named ``*.json``, text that is not JSON at all) is one warning,
:data:`~sysmonx.sources.base.NOT_AN_EVENT_LOG`, instead of one error per line: the errors of the
lines before the first such line are held (at most :data:`~sysmonx.sources.base.MAX_BAD_RUN`)
and reported, each at its line, as soon as one line is a JSON object or a damaged one (a
damaged line before the records stays an error).
Lines that
orjson refuses only because of an escaped lone surrogate (``"\\ud800"``, which the writer emits
for such values) are read with the standard library instead. ``Event.origin`` is
``(path, line number)``.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator

import orjson

from ..core.registry import SOURCES
from ..event import Event, normalize_time
from ..core.errors import ReadError
from .base import MAX_BAD_RUN, NOT_AN_EVENT_LOG, BadRun, FileFormat, OnError, iter_lines

__all__ = ["read_jsonl", "read_jsonl_stream", "event_from_object", "RESERVED_KEYS"]

#: Top-level keys that are not EventData fields (the writer's
#: :data:`sysmonx.sinks.jsonl.RESERVED_KEYS`).
RESERVED_KEYS = frozenset({"EventID", "System", "ExtraData", "Enrichment"})

_SYSTEM_INT = (("Version", "version"), ("Level", "level"), ("Task", "task"),
               ("Opcode", "opcode"), ("EventRecordID", "record_id"),
               ("ProcessID", "process_id"), ("ThreadID", "thread_id"))
_SYSTEM_STR = (("Provider", "provider", ""), ("ProviderGuid", "provider_guid", None),
               ("Keywords", "keywords", None), ("Channel", "channel", ""),
               ("Computer", "computer", ""), ("UserID", "user_id", None))


def read_jsonl(path: str, on_error: Callable[[ReadError], None]) -> Iterator[Event]:
    """Yield the events of a SysmonX JSON lines file, streaming line by line.

    Args:
        path: the file.
        on_error: receives a :class:`~sysmonx.sources.ReadError` (line number) per malformed
            line; reading goes on with the next line.
    Raises:
        OSError: the file cannot be opened.
    """
    with open(path, "rb") as f:
        yield from read_jsonl_stream(f, path, on_error)


def read_jsonl_stream(f, path: str, on_error: Callable[[ReadError], None]) -> Iterator[Event]:
    """:func:`read_jsonl` over an open binary stream ``f`` (an archive member, ...), named
    ``path`` in origins and errors. Until a line is (or starts like) a JSON object, the errors
    of the lines before it are held; without any (text that is not JSON at all) the file is one
    :data:`~sysmonx.sources.base.NOT_AN_EVENT_LOG` warning (module docstring)."""
    loads = orjson.loads
    held: list = []  # errors of the lines before the first JSON object
    report = on_error

    def hold(err: ReadError) -> None:
        held.append(err)

    run = BadRun(path, hold)
    for lineno, line in iter_lines(f):
        if line is None:
            if run.bad(ReadError(path, lineno, "line", "line too long; skipped")):
                if run.on_error is hold:
                    _not_a_log(path, held, f, report)
                    return
                run.give_up(f, lineno)
                return
            continue
        if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        if not line.strip():
            continue
        try:
            try:
                obj = loads(line)
            except orjson.JSONDecodeError as exc:
                if b"\\ud" not in line and b"\\uD" not in line:
                    raise ValueError(f"not JSON: {exc}") from None
                try:
                    obj = json.loads(line.decode("utf-8"))
                except (ValueError, UnicodeDecodeError):
                    raise ValueError(f"not JSON: {exc}") from None
            if run.on_error is hold and type(obj) is dict:
                _json_log(run, held, report)
            event = event_from_object(obj, (path, lineno))
        except ValueError as exc:
            if run.on_error is hold and line.lstrip()[:1] == b"{":
                _json_log(run, held, report)  # a damaged object: damage of a JSON log
            if run.bad(ReadError(path, lineno, "line", str(exc))):
                if run.on_error is hold:
                    _not_a_log(path, held, f, report)
                    return
                run.give_up(f, lineno)
                return
            continue
        run.run = 0
        yield event
    if held:
        _not_a_log(path, held, None, report)


def _json_log(run: BadRun, held: list, report: Callable[[ReadError], None]) -> None:
    """A line is (or starts like) a JSON object: this is a JSON log; report the ``held``
    errors of the lines before it, each at its line, and every later one at once."""
    run.on_error = report
    for err in held:
        report(err)
    held.clear()


def _not_a_log(path: str, held: list, rest, report: Callable[[ReadError], None]) -> None:
    """Report a file no line of which was a JSON object as one warning instead of the ``held``
    line errors; ``rest``: the stream, when the first :data:`MAX_BAD_RUN` lines were all bad
    (the rest is skipped and counted, not read)."""
    more = ""
    if rest is not None:
        lines, last = 0, b"\n"
        for block in iter(lambda: rest.read(1 << 20), b""):
            lines += block.count(b"\n")
            last = block[-1:]
        lines += last != b"\n"
        if lines:
            more = (f": none of its first {MAX_BAD_RUN} lines is a JSON object; the other "
                    f"{lines:,} were not read")
    report(ReadError(path, None, "file", NOT_AN_EVENT_LOG + more, "warning"))


def event_from_object(obj, origin=None) -> Event:
    """Build the Event a decoded JSON line describes.

    Raises:
        ValueError: not an object, no integer ``EventID``, non-string field values, a malformed
            ``System`` or time, an ``ExtraData`` or ``Enrichment`` that is not an object, an
            ``Enrichment`` field that repeats a field of the event.
    """
    if type(obj) is not dict:
        raise ValueError("line is not a JSON object")
    eid = obj.get("EventID")
    if type(eid) is not int:
        raise ValueError(f"no integer EventID ({eid!r})")
    data = {}
    for k, v in obj.items():
        if k not in RESERVED_KEYS:
            data[k] = v if type(v) is str else _string(k, v)
    extra = obj.get("ExtraData")
    if extra is not None:
        if type(extra) is not dict:
            raise ValueError("ExtraData is not an object")
        for k, v in extra.items():
            data[k] = v if type(v) is str else _string(k, v)
    enrichment = obj.get("Enrichment")
    if enrichment is not None:
        if type(enrichment) is not dict:
            raise ValueError("Enrichment is not an object")
        for k, v in enrichment.items():
            if k in data:
                raise ValueError(f"Enrichment field {k!r} repeats a field of the event")
            data[k] = v if type(v) is str else _string(k, v)
    system = obj.get("System", {})
    if type(system) is not dict:
        raise ValueError("System is not an object")
    kw: dict[str, Any] = {}
    for key, attr in _SYSTEM_INT:
        v = system.get(key)
        if v is not None and type(v) is not int:
            raise ValueError(f"System.{key} is not an integer ({v!r})")
        kw[attr] = v
    for key, attr, default in _SYSTEM_STR:
        v = system.get(key, default)
        if v is not None and type(v) is not str:
            raise ValueError(f"System.{key} is not a string ({v!r})")
        kw[attr] = v
    t = system.get("TimeCreated") or ""
    if type(t) is not str:
        raise ValueError(f"System.TimeCreated is not a string ({t!r})")
    kw["time_created"] = normalize_time(t) if t else ""
    return Event(eid, data, origin=origin, **kw)


def _string(name: str, v) -> str:
    """Lenient conversion of a hand-edited non-string value; objects and arrays are refused."""
    if v is None:
        return ""
    if type(v) is bool:
        return "true" if v else "false"
    if type(v) is int:
        return str(v)
    raise ValueError(f"field {name!r} is not a string ({type(v).__name__})")


@SOURCES.register
class JsonlFormat(FileFormat):
    """SysmonX JSON lines (written by :mod:`sysmonx.sinks.jsonl`)."""

    name = "jsonl"
    summary = "SysmonX JSON lines"
    extensions = (".json", ".jsonl", ".ndjson")
    order = 30

    @classmethod
    def read(cls, path: str, on_error: OnError, **options: Any) -> Iterator[Event]:
        """:func:`read_jsonl`."""
        return read_jsonl(path, on_error)

    @classmethod
    def read_stream(cls, stream: Any, name: str, on_error: OnError) -> Iterator[Event]:
        """:func:`read_jsonl_stream`."""
        return read_jsonl_stream(stream, name, on_error)
