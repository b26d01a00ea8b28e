"""Windows ``.evtx`` files, read with pyevtx-rs 0.14 (``evtx.PyEvtxParser(...).records_json()``).

Each record becomes an :class:`~sysmonx.event.Event` whose values are the strings the Windows
Event Log renders in event XML (spec/sysmon-semantics.md section 4.2): integers in decimal,
booleans ``true``/``false``, GUID-typed fields (schema ``win:GUID``) ``{lower-case}`` with braces
(pyevtx-rs prints them upper case without braces), missing values (JSON ``null``) as ``""``,
strings unchanged, fields in record order.
Records of other providers (Security, ...) are converted the same way; their field types are not in
the Sysmon schema, so a string shaped exactly like pyevtx-rs's GUID rendering is taken as a GUID.

Damage handling. pyevtx-rs raises ``RuntimeError`` from ``next()`` for a chunk or record it cannot
decode and goes on with the next one when iterated again; each such error becomes one
:class:`~sysmonx.sources.ReadError`. It also loses records *without* any error, or more than the
damaged one: every record of a chunk after a record whose header (magic, size, time) is broken, a
whole chunk whose header magic is broken, a truncated last chunk, a zeroed chunk. So the reader
compares the records it got with the record-number range each chunk header announces (each
chunk read once, as the reader enters it, with the next chunk's header); when a chunk comes up
short, it re-reads that chunk alone with the broken record replaced by a filler record (or the
chunk magic restored when the header checksum proves the rest intact, or the truncated chunk
zero-padded) and yields what it recovers, in file order.
A record whose header alone is broken (its magic, or its size field, zeroed say) is restored
from its redundant copies (the size trailer every record ends with, the next record's magic)
instead of being skipped: this matters most for a chunk's first record, which carries the
templates all the chunk's other records use. Whatever stays lost is reported once per damaged
spot; what pyevtx-rs raised is kept until the chunk is left, and becomes one warning (nothing
lost, ``--strict`` passes) when recovery read every record. A damaged file header (pyevtx-rs
refuses the file) is replaced in memory by a rebuilt one so the chunks are still read. Normal
files pay that one read per chunk, its record count check and its two CRC32 checks. A file of
at most :data:`WHOLE_FILE_MAX` bytes (four chunks) is read whole in one call instead, and
pyevtx-rs parses those bytes: the same checks, one open and one read per file.

Chunk headers that overstate their records (last record number and free-space offset beyond the
real records, zeroed slack after them: evtx crate issue 197) are not damage: a chunk's range is
cut where the next chunk's begins, and a chunk whose record chain is whole and ends in zeroed
slack is complete whatever its header says (its data checksum may cover the real records only).

Offsets: ``Event.origin`` is ``(path, record number)`` (the record header's number, which equals
``EventRecordID`` unless the file was exported from a larger log); ReadErrors give the byte offset
of the damaged record (of the chunk when a whole chunk is concerned).

Lost on the way (pyevtx-rs's JSON does not carry them, or Event has no place for them):
``TimeCreated`` digits beyond microseconds, ``EventID/@Qualifiers``, ``Correlation`` ids and
``Provider/@EventSourceName``.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import stat
import struct
import zlib
from typing import Any, BinaryIO, Callable, Generator, Iterator, Optional

import orjson
from evtx import PyEvtxParser

from ..core.registry import SOURCES
from ..event import SYSMON_PROVIDERS, Event, normalize_time
from ..schema import GUID
from ..schema.catalogue import EVENTS
from ..core.errors import ReadError
from ..core import native
from .base import FileFormat, FileNotes, OnError, put_unique

__all__ = ["read_evtx", "read_evtx_batches"]

try:  # the same CRC-32 as zlib's, about 8x faster (SIMD): every chunk of every file is checked
    from zlib_ng.zlib_ng import crc32 as _crc32
except ImportError:  # pragma: no cover - zlib-ng has no wheel for this platform
    _crc32 = zlib.crc32

_FILE_MAGIC = b"ElfFile\x00"
_CHUNK_MAGIC = b"ElfChnk\x00"
_HEADER_BLOCK = 4096
_CHUNK_SIZE = 65536
_RECORD_MAGIC = b"**\x00\x00"
_UNREAD = object()

#: EventID -> names of its win:GUID fields, every schema version (spec 4.3).
_GUID_FIELDS: dict[int, frozenset] = {}
for _d in EVENTS:
    _GUID_FIELDS[_d.event_id] = frozenset(f.name for f in _d.fields if f.in_type == GUID)

#: A time as pyevtx-rs writes it (ASCII digits; the C converter checks the same outline): only
#: such a text is made the Event's time by appending digits, any other goes to normalize_time.
_pyevtx_time = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z\Z").match
_GUID_SHAPE = re.compile(r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}\Z")
_CHUNK_NO = re.compile(r"chunk number (\d+)")
_CHUNK_IDS = re.compile(r"record IDs (\d+)\.\.(\d+)")
_RECORD_NO = re.compile(r"record number (\d+)")


class _BadRecord(Exception):
    """A record pyevtx-rs decoded but that is not an event (no Event/System, no EventID, ...)."""


def read_evtx(path: str, on_error: Callable[[ReadError], None],
              threads: int = 0, data: Optional[bytes] = None) -> Iterator[Event]:
    """Yield the events of an EVTX file in file order, streaming.

    Args:
        path: the ``.evtx`` file, or only the name used in origins and errors when ``data`` is
            given.
        on_error: receives a :class:`~sysmonx.sources.ReadError` per damaged spot (chunk header,
            record, lost record range, truncation, file header); reading continues after each.
        threads: pyevtx-rs worker threads (0: one per core).
        data: the whole file's bytes, read from memory instead of ``path`` (an archive member;
            pyevtx-rs needs a seekable file).
    Raises:
        OSError: the file cannot be opened (when the first event is asked for).
    """
    if _batch is not None:
        # the lists of the compiled record loop, flattened in C (no generator step per event)
        return _Events(read_evtx_batches(path, on_error, threads, data))
    return _read_evtx_py(path, on_error, threads, data)


class _Events(itertools.chain):
    """:func:`read_evtx`'s iterator over :func:`read_evtx_batches`'s lists: ``itertools.chain``
    (each event handed on by C code) with ``close()``, which closes the lists' generator (and
    so the file) as a generator's ``close()`` would; no event is given after it."""

    _batches: Generator[list, None, None]
    _current: list

    def __new__(cls, batches: Generator[list, None, None]) -> "_Events":
        current: list = [[]]  # the list being handed on: emptied by close()
        self: _Events = super().from_iterable(_noting(batches, current))  # type: ignore[assignment]
        self._batches = batches
        self._current = current
        return self

    def close(self) -> None:
        self._current[0].clear()  # nothing more from the list under way either
        self._batches.close()


def _noting(batches: Iterator[list], current: list) -> Iterator[list]:
    for batch in batches:
        current[0] = batch
        yield batch


def _read_evtx_py(path: str, on_error: Callable[[ReadError], None], threads: int,
                  data: Optional[bytes]) -> Iterator[Event]:
    """:func:`read_evtx` without the compiled record loop."""
    with _ChunkTracker(path, on_error, data) as tracker:
        parser = _open_parser(path, threads, tracker, on_error, tracker.data)
        if parser is None:
            return
        yield from _records(path, parser, tracker, on_error)
        yield from tracker.finish()


def read_evtx_batches(path: str, on_error: Callable[[ReadError], None],
                      threads: int = 0, data: Optional[bytes] = None,
                      raw: Any = None) -> Generator[list, None, None]:
    """:func:`read_evtx` in lists of events (up to :data:`BATCH` each, never across a chunk
    boundary or a damaged spot), for the replay loop: the same events in the same order, the
    same ``on_error`` calls at the same places between them (each list is taken before the
    reader goes on to what comes after it). With the compiled extension the record loop runs in
    C (:func:`_record_batches`); without it each list holds one event of :func:`_records`.
    ``raw``: the loop's raw path (``_speedups.RawPlan``, compiled loop only): the records it
    writes itself are ``None`` entries of the lists; a record it cannot take alone ends its list
    as its Event (so the loop handles it before any later record is written).

    Args and Raises: as :func:`read_evtx`.
    """
    with _ChunkTracker(path, on_error, data) as tracker:
        parser = _open_parser(path, threads, tracker, on_error, tracker.data)
        if parser is None:
            return
        if _batch is not None:
            yield from _record_batches(path, parser, tracker, on_error, raw)
        else:
            for event in _records(path, parser, tracker, on_error):
                yield [event]
        recovered = tracker.finish()
        if recovered:
            yield recovered


#: Most events in one list of :func:`read_evtx_batches`.
BATCH = 256
#: Records converted by the compiled record loop since import (tests check the loop was taken).
compiled_records = [0]
_CONVERT_ERRORS = (_BadRecord, ValueError, TypeError, KeyError, AttributeError)


def _undecodable(exc: BaseException) -> str:
    """The reason of a ``record`` ReadError for a record the converters refused with ``exc``:
    ``undecodable event record: `` and the exception's repr, which a KeyError (a name the
    record lacks: a damaged template renders the root under another name) prefixes with the
    name in words, e.g. ``no 'Event' element or value in the record (KeyError('Event'))``."""
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return (f"undecodable event record: no {exc.args[0]!r} element or value in the record "
                f"({exc!r})")
    return f"undecodable event record: {exc!r}"


def _record_batches(path: str, parser: PyEvtxParser, tracker: "_ChunkTracker",
                    on_error: Callable[[ReadError], None], raw: Any = None) -> Iterator[list]:
    """:func:`_records` with its per-record part in C (``_speedups.evtx_batch``): lists of
    the events of one chunk; the chunk change, pyevtx-rs's errors and conversion errors come
    back here and are handled exactly as :func:`_records` handles them, in the same order."""
    assert _batch is not None
    batch = _batch
    it = parser.records_json()
    notes = tracker.notes
    failures = 0
    max_failures = (tracker.slots + 1) * 2400
    counter = compiled_records
    # a chunk's first record (status 2), counted for its chunk here: the next call takes it
    # first, converted or written as any record of the chunk (not counted again)
    pending: Any = None
    while True:
        out: list = []
        status, seen, last_rid, payload = batch(it, tracker.first, tracker.last,
                                                tracker.seen_ids, path, notes, out,
                                                BATCH, raw, pending)
        pending = None
        if seen:
            failures = 0
            tracker.seen += seen
            tracker.last_rid = last_rid
            counter[0] += seen
        if out:
            yield out
        if status == 1:
            continue
        if status == 0:
            return
        if status == 2:  # outside the chunk (or an odd record): the Python step for it
            failures = 0
            rec: Any = payload
            rid = rec["event_record_id"]
            if tracker.first <= rid <= tracker.last:
                tracker.seen += 1
                tracker.last_rid = rid
                tracker.seen_ids.add(rid)
            else:
                recovered = tracker.advance(rid)
                if recovered:
                    yield recovered
            if type(rec) is dict and type(rid) is int:
                pending = rec  # the next call converts (or writes) it, before the rest
                continue
            try:
                event = _convert(rec["data"], (path, rid), notes)
            except _CONVERT_ERRORS as exc:
                on_error(ReadError(path, rid, "record", _undecodable(exc)))
                continue
            yield [event]
        elif status == 5:  # the compiled converter did not take it: the Python one decides
            rid, text = payload
            try:
                event = _convert_py(text, (path, rid), notes)
            except _CONVERT_ERRORS as exc:
                on_error(ReadError(path, rid, "record", _undecodable(exc)))
                continue
            yield [event]
        elif status == 4:
            rid, error = payload
            if not isinstance(error, _CONVERT_ERRORS):
                raise error
            on_error(ReadError(path, rid, "record", _undecodable(error)))
        else:  # status 3: the iterator raised
            error = payload
            if not isinstance(error, (RuntimeError, OSError)):
                raise error
            tracker.failed(str(error))
            failures += 1
            if failures > max_failures:
                on_error(ReadError(path, None, "file", "too many unreadable chunks in a row; "
                                   "giving up on the rest of the file"))
                return


def _records(path: str, parser: PyEvtxParser, tracker: "_ChunkTracker",
             on_error: Callable[[ReadError], None]) -> Iterator[Event]:
    """The record loop: convert each record, report what pyevtx-rs raises, count per chunk.

    pyevtx-rs raises from ``next()`` for an undecodable chunk or record and resumes with the next
    one when iterated again, so the ``for`` loop is simply re-entered after each error.
    """
    it = parser.records_json()
    convert = _convert
    notes = tracker.notes
    failures = 0
    max_failures = (tracker.slots + 1) * 2400  # > records per chunk: only stops a parser loop
    rec: Any  # a dict from pyevtx-rs
    while True:
        # the current chunk's counters live in locals on the per-record path; they are written
        # back to the tracker before anything of it reads them (advance, failed, finish)
        first, last, seen, last_rid = tracker.first, tracker.last, tracker.seen, tracker.last_rid
        seen_add = tracker.seen_ids.add
        try:
            for rec in it:
                failures = 0
                rid = rec["event_record_id"]
                if first <= rid <= last:
                    seen += 1
                    last_rid = rid
                    seen_add(rid)
                else:
                    tracker.seen, tracker.last_rid = seen, last_rid
                    recovered = tracker.advance(rid)
                    first, last = tracker.first, tracker.last
                    seen, last_rid = tracker.seen, tracker.last_rid
                    seen_add = tracker.seen_ids.add
                    if recovered:
                        yield from recovered
                try:
                    event = convert(rec["data"], (path, rid), notes)
                except (_BadRecord, ValueError, TypeError, KeyError, AttributeError) as exc:
                    on_error(ReadError(path, rid, "record", _undecodable(exc)))
                    continue
                yield event
            tracker.seen, tracker.last_rid = seen, last_rid
            return
        except (RuntimeError, OSError) as exc:  # pyevtx-rs's decode / I/O errors
            tracker.seen, tracker.last_rid = seen, last_rid
            tracker.failed(str(exc))
            failures += 1
            if failures > max_failures:
                on_error(ReadError(path, None, "file", "too many unreadable chunks in a row; "
                                   "giving up on the rest of the file"))
                return


def _open_parser(path: str, threads: int, tracker: "_ChunkTracker",
                 on_error: Callable[[ReadError], None],
                 data: Optional[bytes] = None) -> Optional[PyEvtxParser]:
    """PyEvtxParser for ``path`` (or ``data``); on a damaged file header, one over a rebuilt
    header."""
    try:
        return PyEvtxParser(path if data is None else io.BytesIO(data), number_of_threads=threads)
    except (RuntimeError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        if not any(tracker.header(slot) for slot in range(tracker.slots)):
            on_error(ReadError(path, 0, "byte", f"not a readable EVTX file: {exc}"))
            return None
        on_error(ReadError(path, 0, "byte", f"damaged EVTX file header ({exc}); reading the "
                           "chunks with a rebuilt header"))
        tracker.rebuilt = _RebuiltHeader(path, tracker.slots, data)
        return PyEvtxParser(tracker.rebuilt, number_of_threads=threads)


def _guid(value: str) -> str:
    return "{" + value.lower() + "}" if value and value[0] != "{" else value


def _provider_guid(raw: Optional[str]) -> Optional[str]:
    guid = _provider_guids.get(raw)
    if guid is None and raw:
        guid = _guid(raw)
        if len(_provider_guids) < 1024:
            _provider_guids[raw] = guid
    return guid


_provider_guids: dict = {}
_EMPTY: dict = {}
_FAST_NEW = tuple(Event.__slots__) == (
    "event_id", "data", "provider", "provider_guid", "version", "level", "task", "opcode",
    "keywords", "time_created", "record_id", "process_id", "thread_id", "channel", "computer",
    "user_id", "origin", "_raw")
_new_event: Callable[[type], Event] = Event.__new__


def _convert_py(text: str, origin: tuple, notes: Optional[FileNotes] = None) -> Event:
    """One ``records_json()`` record (its ``data`` JSON text) as an Event. The replay hot path:
    direct indexing for the shape every Windows record has, :func:`_convert_tolerant` otherwise.
    ``notes`` receives the warning about unnamed EventData values (once per file).
    Raises what ``orjson.loads`` raises for text that is not JSON, ``_BadRecord``/``KeyError``
    for JSON that is not an event record."""
    return _convert_root(orjson.loads(text)["Event"], origin, notes)


#: The converter the reader calls: the compiled one (sysmonx.core._speedups: the common record
#: shape parsed and converted in C, every other record handed to :func:`_convert_py`, same
#: Events) when it is built and not disabled (``SYSMONX_PURE_PYTHON=1``), else _convert_py.
_convert: Callable[[str, tuple, Optional[FileNotes]], Event] = _convert_py
#: The compiled record loop (``_speedups.evtx_batch``), or None (pure Python).
_batch: Optional[Callable[..., tuple]] = None
if native.speedups is not None and _FAST_NEW:
    native.speedups.setup_convert(Event, _GUID_FIELDS, SYSMON_PROVIDERS, _provider_guids,
                                  _convert_py)
    _convert = native.speedups.convert
    _batch = native.speedups.evtx_batch


def _convert_root(root, origin: tuple, notes: Optional[FileNotes] = None) -> Event:
    """:func:`_convert` of an already decoded ``Event`` object (evtx-crate JSON, also used by
    :mod:`sysmonx.sources.jsonshapes` for ``evtx_dump`` output). ``root`` is modified in place."""
    if not _FAST_NEW:
        return _convert_tolerant(root, origin, notes)
    try:
        sysd = root["System"]
        pa = sysd["Provider"]["#attributes"]
        provider = pa["Name"]
        eid = sysd["EventID"]
        tc = sysd["TimeCreated"]["#attributes"]["SystemTime"]
        ex = sysd["Execution"]["#attributes"]
        sec = sysd["Security"]
        data = root["EventData"]
        guids = _GUID_FIELDS[eid] if provider in SYSMON_PROVIDERS else None
        if type(data) is not dict or type(eid) is not int or "Data" in data:
            raise KeyError("EventData")  # unnamed <Data> values: the tolerant path names them
        # Filling the slots directly is 5x cheaper than Event(**17 keywords); _FAST_NEW checks
        # at import that Event still has exactly these slots.
        event = _new_event(Event)
        event.event_id = eid
        event.data = data
        event.provider = provider
        event.provider_guid = _provider_guid(pa["Guid"])
        event.version = sysd["Version"]
        event.level = sysd["Level"]
        event.task = sysd["Task"]
        event.opcode = sysd["Opcode"]
        event.keywords = sysd["Keywords"]
        event.record_id = sysd["EventRecordID"]
        event.process_id = ex["ProcessID"]
        event.thread_id = ex["ThreadID"]
        event.channel = sysd["Channel"]
        event.computer = sysd["Computer"]
        event.user_id = sec["#attributes"]["UserID"] if sec else None
        event.origin = origin
    except (KeyError, TypeError):
        return _convert_tolerant(root, origin, notes)
    if len(tc) == 27 and _pyevtx_time(tc):  # pyevtx-rs: microseconds
        event.time_created = tc[:26] + "000Z"
    else:  # anything else (markup or quotes where digits go: no time) is refused there
        event.time_created = normalize_time(tc)
    if guids is None:
        _fix_values(data)
    else:
        for k, v in data.items():  # in place: no new dict, order kept
            if type(v) is not str:
                if type(v) is dict and "#attributes" in v:
                    event.data = data = _named_complex(data)
                    _fix_values(data, guids)
                    break
                data[k] = _scalar(v)
        for k in guids:
            v = data.get(k)
            if v and v[0] != "{":
                data[k] = "{" + v.lower() + "}"
    return event


def _convert_tolerant(root: Optional[dict], origin: tuple,
                      notes: Optional[FileNotes] = None) -> Event:
    """:func:`_convert` for records missing parts of the usual shape (or not events at all),
    and for EventData with unnamed ``<Data>`` values or ``<ComplexData Name=..>`` elements."""
    if not isinstance(root, dict) or not isinstance(root.get("System"), dict):
        raise _BadRecord("record has no Event/System element")
    sysd = root["System"]
    pa = _attrs(sysd.get("Provider"))
    provider = pa.get("Name") or ""
    eid = sysd.get("EventID")
    if isinstance(eid, dict):  # {"#attributes": {"Qualifiers": 16384}, "#text": 4624}
        eid = eid.get("#text")
    if type(eid) is not int:
        raise _BadRecord(f"record has no numeric EventID ({eid!r})")
    tc = _attrs(sysd.get("TimeCreated")).get("SystemTime")
    ex = _attrs(sysd.get("Execution"))
    data = root.get("EventData")
    version = sysd.get("Version") if type(sysd.get("Version")) is int else None
    if type(data) is dict and "#text" not in data:
        guids = _GUID_FIELDS.get(eid) if provider in SYSMON_PROVIDERS else None
        unnamed = _unnamed_values(data.pop("Data")) if "Data" in data else None
        if any(type(v) is dict and "#attributes" in v for v in data.values()):
            data = _named_complex(data)
        _fix_values(data, guids)
        if unnamed is not None:
            from .xmlfile import name_unnamed
            data = name_unnamed(eid, provider, version, unnamed, data, notes, origin, "record")
            _fix_values(data, guids)
    else:
        data = _flatten_other(root)
    return Event(
        eid, data, provider=provider, provider_guid=_provider_guid(pa.get("Guid")),
        version=sysd.get("Version"), level=sysd.get("Level"), task=sysd.get("Task"),
        opcode=sysd.get("Opcode"), keywords=sysd.get("Keywords"),
        time_created=normalize_time(tc) if tc else "", record_id=sysd.get("EventRecordID"),
        process_id=ex.get("ProcessID"), thread_id=ex.get("ThreadID"),
        channel=sysd.get("Channel") or "", computer=sysd.get("Computer") or "",
        user_id=_attrs(sysd.get("Security")).get("UserID"), origin=origin)


def _unnamed_values(node) -> list:
    """The values of unnamed ``<Data>`` elements as evtx-crate JSON holds them under ``Data``:
    a list, ``{"#text": [...]}``, or one text (the crate concatenates several unnamed values
    into one string, which cannot be split again)."""
    if isinstance(node, dict):
        node = node.get("#text", "")
    if isinstance(node, list):
        return [_scalar(v) if type(v) is not str else v for v in node]
    return [node if type(node) is str else _scalar(node)]


def _named_complex(data: dict) -> dict:
    """``data`` with evtx-crate's ``ComplexData``/``ComplexData_1``... entries
    (``{"#attributes": {"Name": "X"}, "#text": "v"}``) keyed by their ``Name``, order kept."""
    out: dict = {}
    for k, v in data.items():
        if type(v) is dict and "#attributes" in v:
            name = _attrs(v).get("Name")
            if name and k.split("_")[0] == "ComplexData":
                put_unique(out, str(name), _flat_value(v.get("#text", "")))
                continue
        put_unique(out, k, v)
    return out


def _attrs(node) -> dict:
    """``#attributes`` of a JSON element, ``{}`` when absent."""
    if isinstance(node, dict):
        a = node.get("#attributes")
        if isinstance(a, dict):
            return a
    return _EMPTY


def _fix_values(data: dict, guids: Optional[frozenset] = None) -> None:
    """Values of ``data`` to strings in place; GUIDs from ``guids`` or, when ``None``, by shape."""
    for k, v in data.items():
        if type(v) is str:
            if guids is None:
                if len(v) == 36 and _GUID_SHAPE.match(v):
                    data[k] = _guid(v)
            elif k in guids:
                data[k] = _guid(v)
        else:
            data[k] = _scalar(v)


def _scalar(v) -> str:
    """Event-log string of a non-string JSON value: decimal, ``true``/``false``, ``""``."""
    if v is None:
        return ""
    if v is True:
        return "true"
    if v is False:
        return "false"
    if type(v) is int:
        return str(v)
    return _flat_value(v)


def _flat_value(v) -> str:
    """Best-effort string for a JSON value other than str/int/bool/None (non-Sysmon records)."""
    if isinstance(v, dict):
        if "#text" in v:
            return _flat_value(v["#text"])
        return orjson.dumps(v).decode()
    if isinstance(v, list):
        return ", ".join(_flat_value(x) for x in v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return ""
    if isinstance(v, str):
        return _guid(v) if len(v) == 36 and _GUID_SHAPE.match(v) else v
    return str(v)


def _flatten_other(root: dict) -> dict:
    """EventData that is not a plain name->value object, or UserData, flattened to name->string.

    Nested elements become ``Parent.Child`` names (the single wrapper element of UserData is
    dropped), ``#attributes`` are skipped, repeated names get ``_2``, ``_3`` suffixes.
    """
    out: dict = {}
    for key in ("EventData", "UserData"):
        node = root.get(key)
        if node is None:
            continue
        if isinstance(node, dict):
            items = [(k, v) for k, v in node.items() if k != "#attributes"]
            if key == "UserData" and len(items) == 1 and isinstance(items[0][1], dict):
                items = [(k, v) for k, v in items[0][1].items() if k != "#attributes"]
            _walk(items, "", out)
        else:
            put_unique(out, key, _flat_value(node))
    return out


def _walk(items, prefix: str, out: dict) -> None:
    for k, v in items:
        name = prefix + k
        if isinstance(v, dict) and "#text" not in v:
            _walk([(kk, vv) for kk, vv in v.items() if kk != "#attributes"], name + ".", out)
        else:
            put_unique(out, name, _flat_value(v))


#: Files up to this size (the file header and four chunks) are read whole, in one call, by the
#: chunk tracker, and pyevtx-rs parses those bytes (``io.BytesIO``) instead of opening the file
#: itself: one open and one read instead of two opens and a dozen reads and seeks per file
#: (pyevtx-rs reads a file by its header, then each chunk). Bigger files are read chunk by
#: chunk (memory stays constant).
WHOLE_FILE_MAX = _HEADER_BLOCK + 4 * _CHUNK_SIZE


def _small_file(path: str) -> Optional[bytes]:
    """The bytes of ``path`` when it is a regular file of at most :data:`WHOLE_FILE_MAX` bytes,
    read in one call (completed if it comes back short); None otherwise (the file is then
    opened as before, so errors such as IsADirectoryError are raised as before).
    Raises OSError (FileNotFoundError, PermissionError) when ``path`` cannot be opened."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > WHOLE_FILE_MAX:
            return None
        return _pread(fd, st.st_size, 0, st.st_size)
    finally:
        os.close(fd)


def _pread(fd: int, n: int, offset: int, size: int) -> bytes:
    """Up to ``n`` bytes from byte ``offset`` of the file ``fd`` of ``size`` bytes: fewer only
    at its end (reads that come back short before it are completed)."""
    got = os.pread(fd, n, offset)
    if len(got) < n and offset + len(got) < size:  # a short read before the end
        parts = [got]
        while n > 0 and got:
            offset, n = offset + len(got), n - len(got)
            got = os.pread(fd, n, offset)
            parts.append(got)
        got = b"".join(parts)
    return got


class _ChunkTracker:
    """Counts the records read per chunk against the chunk headers, to find and recover records
    pyevtx-rs loses silently.

    ``first``/``last``: record-number range of the current chunk; ``seen``: records read from it;
    ``last_rid``: the last one. When a chunk is left with records missing that no error explains,
    it is re-read alone (:func:`_recover_records`) with the damaged record replaced by a filler
    record pyevtx-rs skips, and what is still missing is reported. Memory is constant: one chunk
    is tracked at a time and headers are re-read on demand (a file of at most
    :data:`WHOLE_FILE_MAX` bytes is held whole, in ``data``, and read from there).
    """

    def __init__(self, path: str, on_error: Callable[[ReadError], None],
                 data: Optional[bytes] = None) -> None:
        self.path = path
        self.on_error = on_error
        self.notes = FileNotes(path, on_error)
        self.f: Optional[BinaryIO] = None
        if data is None:
            data = _small_file(path)
        self.data = data
        if data is None:
            # unbuffered, read only by position (os.pread: one system call, no seek, no
            # 8 KiB buffer filled to take 40 bytes of a chunk header)
            self.f = open(path, "rb", buffering=0)
            self.size = os.fstat(self.f.fileno()).st_size
            self._fd = self.f.fileno()
        else:
            self.size = len(data)
        head = self.read_at(0, _HEADER_BLOCK)
        self.declared = (struct.unpack_from("<H", head, 42)[0]
                         if len(head) >= 44 and head.startswith(_FILE_MAGIC) else 0)
        self.slots = max(0, -(-(self.size - _HEADER_BLOCK) // _CHUNK_SIZE))
        self.full = max(0, (self.size - _HEADER_BLOCK) // _CHUNK_SIZE)
        self.cur = -1
        self.first, self.last, self.seen, self.last_rid = 1, 0, 0, 0
        self.seen_ids: set = set()  # record numbers read from the current chunk
        self.errors: dict[int, int] = {}  # slot -> record errors pyevtx-rs raised in it
        self.whole: set[int] = set()      # slots pyevtx-rs reported as unreadable chunks
        self.partial_lost: Optional[tuple[int, int, int]] = None  # truncated chunk: lost, read, all
        self.pending: dict[int, list] = {}  # slot -> [(offset, pyevtx-rs message)] not yet said
        self.rebuilt: Optional[_RebuiltHeader] = None
        self._headers: dict[int, Any] = {}  # slot -> header(slot), the last few (see header)
        self._spans: dict[int, Any] = {}  # slot -> span(slot), the last few
        self._loaded: dict[int, bytes] = {}  # slot -> its bytes and the next header (_load)

    def __enter__(self) -> "_ChunkTracker":
        return self

    def __exit__(self, *exc) -> None:
        if self.f is not None:
            self.f.close()
        if self.rebuilt is not None:
            self.rebuilt.close()

    @staticmethod
    def offset(slot: int) -> int:
        return _HEADER_BLOCK + slot * _CHUNK_SIZE

    def read_at(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes of the file from byte ``offset`` (fewer only at its end)."""
        if self.f is None:
            return self.data[offset:offset + n]  # type: ignore[index]
        return _pread(self._fd, n, offset, self.size)

    def header(self, slot: int) -> Optional[tuple[int, int]]:
        """``(first, last)`` record numbers of chunk ``slot``, ``None`` without a chunk header.

        Kept for the last few chunks asked about (a chunk's header is wanted about six times
        as the reader enters, checks and leaves it, and the next one's as its neighbour): one
        read of it instead of six, memory still constant."""
        known = self._headers.get(slot, _UNREAD)
        if known is not _UNREAD:
            return known
        if slot < 0 or slot >= self.slots:
            return None
        return self._put_header(slot, self.read_at(self.offset(slot), 40))

    def _put_header(self, slot: int, raw: bytes) -> Optional[tuple[int, int]]:
        """Keep ``header(slot)`` from ``raw``, the 40 bytes at the chunk's offset (fewer at
        the file's end)."""
        h = (None if len(raw) < 40 or not raw.startswith(_CHUNK_MAGIC) else
             struct.unpack_from("<QQ", raw, 24))
        if len(self._headers) >= 8:  # the oldest asked about goes (the reader moves forward)
            del self._headers[next(iter(self._headers))]
        self._headers[slot] = h
        return h

    def _load(self, slot: int) -> None:
        """Read chunk ``slot`` and the next chunk's header in one call, as the reader is about
        to enter it: its header and the next one's (which its span needs) come from these
        bytes, and so do its checksums when it is left (:meth:`verify_checksums`). At most
        the current and the next chunk are kept (128 KiB)."""
        if self.f is None:  # in memory: a view, no copy
            start = self.offset(slot)
            data: Any = memoryview(self.data)[start:start + _CHUNK_SIZE + 40]  # type: ignore
        else:
            data = self.read_at(self.offset(slot), _CHUNK_SIZE + 40)
        for old in [s for s in self._loaded if s < slot - 1]:
            del self._loaded[old]
        self._loaded[slot] = data
        if slot not in self._headers:
            self._put_header(slot, bytes(data[:40]))
        if slot + 1 < self.slots and slot + 1 not in self._headers:
            self._put_header(slot + 1, bytes(data[_CHUNK_SIZE:]))

    def span(self, slot: int) -> Optional[tuple[int, int]]:
        """``(first, last)`` record numbers chunk ``slot`` really holds as far as headers tell:
        its header's range, its last number lowered to just below the next chunk's first when
        that one starts inside it. Some producers write chunk headers that overstate their
        last record (evtx crate issue 197: the slack after the real records is zero); without
        this, the neighbour's first records would be counted for this chunk and the neighbour
        would seem to lose them."""
        known = self._spans.get(slot, _UNREAD)
        if known is not _UNREAD:
            return known
        h = self.header(slot)
        if h is not None:
            nxt = self.header(slot + 1)
            if nxt is not None and h[0] < nxt[0] <= h[1]:
                h = h[0], nxt[0] - 1
        if len(self._spans) >= 8:  # kept like the headers it is made of (see header)
            del self._spans[next(iter(self._spans))]
        self._spans[slot] = h
        return h

    def chunk(self, slot: int) -> bytearray:
        """The bytes of chunk ``slot``, zero-padded to 64 KiB if the file is truncated."""
        data = bytearray(self.read_at(self.offset(slot), _CHUNK_SIZE))
        data.extend(bytes(_CHUNK_SIZE - len(data)))
        return data

    def _find(self, rid: int, start: int) -> Optional[int]:
        for slot in range(max(start, 0), self.slots):
            h = self.span(slot)
            if h is not None and h[0] <= rid <= h[1]:
                return slot
        return None

    def advance(self, rid: int) -> list:
        """A record outside the current chunk's range: move to the chunk that holds it.
        Returns the events recovered from the chunks left behind (to yield before ``rid``'s)."""
        nxt = self.cur + 1
        if nxt < self.slots and nxt not in self._loaded:
            self._load(nxt)  # the usual case: the reader moves on to the next chunk
        slot = self._find(rid, nxt)
        if slot is None:  # record number damaged: it was still read from the current chunk
            self.seen += 1
            self.seen_ids.add(rid)
            return []
        out = self._close(self.cur, self.seen, self.last_rid) if self.cur >= 0 else []
        for skipped in range(self.cur + 1, slot):
            out += self._close(skipped, 0, 0)
        self.cur = slot
        span = self.span(slot)
        assert span is not None  # _find returns only slots whose header gives a span
        self.first, self.last = span
        self.seen, self.last_rid = 1, rid
        self.seen_ids = {rid}
        return out

    def verify_checksums(self, slot: int) -> None:
        """Report a chunk whose header or record-data CRC32 does not match (pyevtx-rs does not
        check them): the records are still read, but their data may have been altered. Called
        only for chunks with no other damage reported, so one damaged spot gives one line."""
        if self.offset(slot) + _CHUNK_SIZE > self.size:
            return  # truncated chunk: reported elsewhere
        # the chunk lies inside the file: read whole in one call as the reader entered it
        # (_load), or now (two reads and joining them cost more than the unused tail: a 64 KiB
        # read is one copy from the page cache); only its used part (to the free-space offset)
        # is checksummed
        data = self._loaded.pop(slot, None)
        if data is None:
            data = self.read_at(self.offset(slot), _CHUNK_SIZE)
        free, stored_data = struct.unpack_from("<II", data, 48)
        view = memoryview(data)  # checksummed in place, no copies
        stored_head, = struct.unpack_from("<I", data, 124)
        bad = []
        if _crc32(view[128:512], _crc32(view[0:120])) != stored_head:
            bad.append("header")
        outside = not 512 <= free <= _CHUNK_SIZE
        if outside:
            # the header (whose own checksum may match) places its records' end outside the
            # chunk: the record data checksum has no range to cover; said below
            pass
        elif _crc32(view[512:free]) != stored_data:
            # a header that overstates its free-space offset may checksum the real records only
            whole = self.chunk(slot)
            ends = [p + size for p, size, _ in _walk_records(whole, _CHUNK_SIZE)]
            if not ends or _crc32(memoryview(whole)[512:ends[-1]]) != stored_data:
                bad.append("record data")
        if bad:
            self.on_error(ReadError(self.path, self.offset(slot), "byte",
                                    f"chunk {slot}: {' and '.join(bad)} checksum mismatch; its "
                                    "records were read but may have been altered"))
        if outside:
            self.on_error(ReadError(self.path, self.offset(slot), "byte",
                                    f"chunk {slot}: its header's free-space offset {free} lies "
                                    f"outside the chunk (512-{_CHUNK_SIZE}), so its record data "
                                    "checksum cannot be checked; its records were read but may "
                                    "have been altered"))

    def failed(self, message: str) -> None:
        """pyevtx-rs raised ``message``: attribute it to a chunk (and record, where the message
        or the chunk's record chain tells which) and keep it until the chunk is closed, when it
        is known whether recovery read everything (:meth:`_close`)."""
        offset, slot = None, None
        m = _CHUNK_NO.search(message)
        if m:
            slot = int(m.group(1))
            self.whole.add(slot)
        elif (m := _CHUNK_IDS.search(message)):
            slot = self._find(int(m.group(1)), self.cur)
            if slot is not None:
                self.whole.add(slot)
        else:
            m = _RECORD_NO.search(message)
            if m:
                rid = int(m.group(1))
                slot = self.cur if self.first <= rid <= self.last else self._find(rid, self.cur + 1)
                if slot is not None:
                    offset = self._record_offset(slot, rid)
            if slot is None:  # no number: the current chunk if unfinished, else the next one
                h = self.span(self.cur)
                slot = self.cur if h and self.seen < h[1] - h[0] + 1 else self.cur + 1
            self.errors[slot] = self.errors.get(slot, 0) + 1
            if offset is None and 0 <= slot < self.slots:
                offset = self._first_break(slot)
        if offset is None:
            offset = self.offset(slot) if slot is not None else None
        if slot is None or not 0 <= slot < self.slots:
            self.on_error(ReadError(self.path, offset, "byte", f"unreadable EVTX data: {message}"))
            return
        self.pending.setdefault(slot, []).append((offset, message))

    def _first_break(self, slot: int) -> Optional[int]:
        """Byte offset (in the file) of the first record of chunk ``slot`` whose header breaks
        the record chain before the chunk's free-space offset, or ``None`` when the chain is
        whole."""
        chunk = self.chunk(slot)
        free = struct.unpack_from("<I", chunk, 48)[0]
        end = free if 512 < free <= _CHUNK_SIZE else _CHUNK_SIZE
        pos = 512
        for p, size, _ in _walk_records(chunk, end):
            pos = p + size
        if pos + 28 <= end and any(chunk[pos:end]):
            return self.offset(slot) + pos
        return None

    def _flush(self, slot: int, lost: list, repaired: list,
               known: Optional[dict] = None) -> None:
        """Report what happened in chunk ``slot``: the pyevtx-rs errors kept for it as errors
        when records were ``lost`` (``[(byte offset, record number)]``; an error whose record
        was not named gets the first lost record's offset), or, when recovery read every record,
        one warning naming the record headers ``repaired`` (byte offsets). ``known``: the
        EventRecordIDs of lost records, by record number (:func:`_event_record_ids`)."""
        pending = self.pending.pop(slot, [])
        known = known or {}
        if lost:
            # each error its own lost record: one placed on a lost record keeps it, the others
            # take the lost records no error names, in order (two damaged records are two
            # offsets); the record header's number is the EventRecordID
            rids = dict(lost)
            claimed: set = set()
            for offset, _ in pending:
                if offset in rids:
                    claimed.add(offset)
            unnamed = iter([o for o, _ in lost if o not in claimed])
            taken: set = set()
            for offset, message in pending:
                if offset not in rids or offset in taken:
                    offset = next(unnamed, lost[0][0])
                taken.add(offset)
                rid = rids.get(offset)
                which = ""
                if rid is not None:
                    erid = known.get(rid)
                    which = f" (record {rid}" + (f", EventRecordID {erid})" if erid is not None
                                                  else ")")
                self.on_error(ReadError(self.path, offset, "byte",
                                        f"unreadable EVTX data{which}: {message}"))
            return
        if not pending and not repaired:
            return
        offset = repaired[0] if repaired else pending[0][0]
        cause = f" ({pending[0][1]})" if pending else ""
        self.on_error(ReadError(self.path, offset, "byte", f"damaged EVTX record header{cause}; "
                                "repaired from the record's redundant copies (size trailer, "
                                f"next record), every record of chunk {slot} was read",
                                "warning"))

    def _record_offset(self, slot: int, rid: int) -> Optional[int]:
        """Byte offset of record ``rid`` in chunk ``slot`` (walking record headers), or None."""
        chunk = self.chunk(slot)
        pos = 512
        while pos + 24 <= _CHUNK_SIZE and chunk[pos:pos + 4] == _RECORD_MAGIC:
            size, num = struct.unpack_from("<IQ", chunk, pos + 4)
            if num == rid:  # checked before the size, which may be the damaged part
                return self.offset(slot) + pos
            if size < 28:
                break
            pos += size
        return None

    def _close(self, slot: int, seen: int, last_rid: int) -> list:
        """Leave chunk ``slot``: recover and report records lost without an error of their own,
        and report (or, when nothing was lost, downgrade) the errors pyevtx-rs raised in it."""
        seen_ids = self.seen_ids if slot == self.cur else set()
        h = self.span(slot)
        everything = [(self.offset(slot), None)]  # "the whole chunk" for _flush
        if h is None:
            if slot in self.whole:  # pyevtx-rs refused the chunk header: try it repaired
                events = self._events(_recover_records(self.chunk(slot), None, 0, False))
                self._flush(slot, everything, [])
                return events
            if slot < self.declared and slot not in self.errors:
                self.on_error(ReadError(self.path, self.offset(slot), "byte",
                                        f"chunk {slot} has no chunk header (blank or overwritten); "
                                        "its records are lost"))
            self._flush(slot, everything, [])
            return []
        after = last_rid if seen else h[0] - 1
        if slot in self.whole:  # string/template tables damaged: they are only caches, drop them
            chunk = self.chunk(slot)
            chunk[128:512] = bytes(384)
            events = self._events(_recover_records(chunk, h, after, False))
            self._flush(slot, everything, [])
            return events
        partial = slot >= self.full
        expected = h[1] - h[0] + 1 if h[1] >= h[0] else 0
        errors = self.errors.get(slot, 0)
        if seen < expected and not errors and not partial and self._ends_clean(slot, seen,
                                                                             last_rid):
            expected = seen  # the header overstates: the chain ends in zeroed slack
        if not errors and seen == expected and not partial:
            self.verify_checksums(slot)  # nothing else wrong here: is the data still intact?
            return []
        if expected - seen <= 0 and not partial:
            self._flush(slot, [], [])
            return []
        chunk = self.chunk(slot)
        repaired: list = []
        records = _recover_records(bytearray(chunk), h, after, not partial, repaired)
        events = self._events(records)
        missing = expected - seen - len(events)
        lost: list = []
        if missing > 0:  # which ones: the chain's records neither read nor recovered
            got = seen_ids | {rid for rid, _ in records}
            lost = [(self.offset(slot) + p, rid) for p, _, rid in _walk_records(chunk,
                                                                                _CHUNK_SIZE)
                    if h[0] <= rid <= h[1] and rid not in got]
            if not lost:
                lost = self._lost_at_break(slot, chunk, h, got, missing)
        known = _event_record_ids(chunk, [r for _, r in lost if r is not None], records) \
            if lost and slot in self.pending else {}
        self._flush(slot, lost, [self.offset(slot) + p for p in repaired], known)
        if partial:
            self.partial_lost = (missing, seen + len(events), expected)
        elif missing > errors:
            if errors:
                msg = (f"{missing - errors} further record(s) of chunk {slot} lost after the "
                       f"damage (chunk holds records {h[0]}-{h[1]}, {expected - missing} read)")
            else:
                msg = (f"{missing} of the {expected} records of chunk {slot} (records "
                       f"{h[0]}-{h[1]}) could not be read: damaged record header")
            self.on_error(ReadError(self.path, lost[0][0], "byte", msg))
        return events

    def _lost_at_break(self, slot: int, chunk: bytearray, h: tuple[int, int], got: set,
                       missing: int) -> list:
        """``[(byte offset, record number or None)]`` of the ``missing`` records of chunk
        ``slot`` lost where its record chain breaks (their headers fail the structural check):
        the first at the break, each next one where the one before ends by its header's size
        (a header overwritten there: the number after the one before, when that record was
        neither read nor recovered). Stops at a record that was read, or where a size cannot
        be trusted; ``[(break or chunk offset, None)]`` when nothing is known."""
        where = self._first_break(slot)
        if where is None:
            return [(self.offset(slot), None)]
        out: list = []
        pos: Optional[int] = where - self.offset(slot)
        prev: Optional[int] = None
        while pos is not None and len(out) < missing and pos + 24 <= _CHUNK_SIZE:
            if chunk[pos:pos + 4] == _RECORD_MAGIC:
                size, num = struct.unpack_from("<IQ", chunk, pos + 4)
                rid: Optional[int] = num if h[0] <= num <= h[1] else None
            else:
                size, rid = 0, None
                if prev is not None and prev + 1 <= h[1]:
                    rid = prev + 1
            if rid is not None and rid in got:
                break  # the chain goes on with a record that was read
            out.append((self.offset(slot) + pos, rid))
            prev = rid
            pos = pos + size if size >= 28 and pos + size + 24 <= _CHUNK_SIZE else None
        return out or [(where, None)]

    def _ends_clean(self, slot: int, seen: int, last_rid: int) -> bool:
        """Whether chunk ``slot``'s record chain is whole, ends in zeroed slack and holds
        exactly the ``seen`` records read, the last numbered ``last_rid``: then nothing is
        missing and its header only overstates the record count (evtx crate issue 197)."""
        chunk = self.chunk(slot)
        chain = list(_walk_records(chunk, _CHUNK_SIZE))
        if len(chain) != seen or not chain or chain[-1][2] != last_rid:
            return False
        end = chain[-1][0] + chain[-1][1]
        free = struct.unpack_from("<I", chunk, 48)[0]
        stop = min(max(free, end + 28), _CHUNK_SIZE)
        return not any(chunk[end:stop])

    def _events(self, records: list) -> list:
        out = []
        for rid, text in records:
            try:
                out.append(_convert(text, (self.path, rid), self.notes))
            except (_BadRecord, ValueError, TypeError, KeyError, AttributeError) as exc:
                self.on_error(ReadError(self.path, rid, "record", _undecodable(exc)))
        return out

    def finish(self) -> list:
        """End of iteration: close the current and every remaining chunk, report truncation.
        Returns the events recovered from them."""
        out = self._close(self.cur, self.seen, self.last_rid) if self.cur >= 0 else []
        for slot in range(self.cur + 1, self.slots):
            out += self._close(slot, 0, 0)
        for slot in sorted(self.pending):
            self._flush(slot, [(self.offset(slot), None)], [])
        if self.slots > self.full or self.declared > self.slots:
            msg = f"file truncated at byte {self.size}"
            if (self.partial_lost is not None and self.partial_lost[0] == 0
                    and self.declared <= self.full + 1):
                # the cut fell after the last record of the last chunk: nothing was lost, so
                # a warning (error: lines mean lost data), counted as one
                read = self.partial_lost[1]
                self.on_error(ReadError(
                    self.path, self.offset(self.full), "byte",
                    msg + f" inside chunk {self.full}, after its last record: no record lost "
                    f"({read} read)", severity="warning"))
                return out
            if self.partial_lost is not None:
                lost, read, total = self.partial_lost
                msg += f": {lost} of the {total} records of chunk {self.full} are lost"
                if read:
                    msg += f" ({read} read from its intact part)"
            if self.declared > self.full + 1:
                msg += f"; the file header announces {self.declared} chunks"
            self.on_error(ReadError(self.path, self.offset(self.full), "byte", msg))
        return out


def _record_at(chunk: bytearray, pos: int, end: int) -> Optional[tuple[int, int]]:
    """``(size, record number)`` if a structurally valid record starts at ``pos``, else None."""
    if chunk[pos:pos + 4] != _RECORD_MAGIC:
        return None
    size, rid = struct.unpack_from("<IQ", chunk, pos + 4)
    if size < 28 or size > end - pos or struct.unpack_from("<I", chunk, pos + size - 4)[0] != size:
        return None
    return size, rid


def _walk_records(chunk: bytearray, end: int) -> Iterator[tuple[int, int, int]]:
    """``(offset, size, record number)`` of the records chained from offset 512, while valid."""
    pos = 512
    while pos + 28 <= end:
        rec = _record_at(chunk, pos, end)
        if rec is None:
            return
        yield pos, rec[0], rec[1]
        pos += rec[0]


def _recover_records(chunk: bytearray, h: Optional[tuple[int, int]], after: int,
                     patch_first: bool, repaired: Optional[list] = None) -> list:
    """Re-read one chunk alone, skipping damaged records, for records numbered above ``after``.

    pyevtx-rs stops reading a chunk at a record whose header is broken (or whose time is
    invalid). Here the first record after ``after`` (or the broken bytes up to the next valid
    record header) is overwritten with a filler record that pyevtx-rs rejects and skips, and the
    chunk is parsed again; repeated while that gains records (at most 16 times). With ``h=None``
    the chunk's header magic is restored first, if the header checksum then proves the header
    intact. ``patch_first=False`` parses once unchanged first (a zero-padded truncated chunk).

    A record whose header alone is broken (its magic, or its size field: zeroed, say) is
    restored from its redundant copies instead (:func:`_repair_header`); its offset in the
    chunk is appended to ``repaired``.

    Returns ``[(record number, records_json data), ...]`` of the recovered records, in order.
    """
    if h is None:
        chunk[:8] = _CHUNK_MAGIC
        if _crc32(bytes(chunk[:120]) + bytes(chunk[128:512])) != \
                struct.unpack_from("<I", chunk, 124)[0]:
            return []
        h = struct.unpack_from("<QQ", chunk, 24)
        after = h[0] - 1
    free = struct.unpack_from("<I", chunk, 48)[0]
    end = free if 512 < free <= _CHUNK_SIZE else _CHUNK_SIZE
    out: list = []
    highest = after
    patch = patch_first
    for _ in range(16):
        if patch:
            pos = next((p for p, _, rid in _walk_records(chunk, end) if rid > highest), None)
            if pos is None:  # the chain breaks before reaching a record above `highest`
                pos = max((p + size for p, size, _ in _walk_records(chunk, end)), default=512)
                # a broken header whose redundant copies agree is restored, not skipped: the
                # record (in a chunk's first record, the templates all others use) is kept
                if _repair_header(chunk, pos, end):
                    if repaired is not None:
                        repaired.append(pos)
                elif not _fill(chunk, pos, end):
                    break
            elif not _fill(chunk, pos, end):
                break
        patch = True
        # pyevtx-rs does not check a record's trailing size copy: accept only records of the
        # structurally valid chain (a record cut by truncation would read as zeros).
        chain = {rid for _, _, rid in _walk_records(chunk, end)}
        new = [(rid, text) for rid, text in _parse_chunk(chunk)
               if highest < rid <= h[1] and rid in chain]
        out += new
        if new:
            highest = new[-1][0]
        if highest >= h[1]:
            break
    return out


def _repair_header(chunk: bytearray, pos: int, end: int) -> bool:
    """Restore the header of the record at ``pos`` from its redundant copies, when only its
    magic or its size field is broken: the size from the trailing copy every record ends with,
    checked against where the next valid record starts (or where the chain ends, ``end``); the
    magic when the size and its trailing copy agree. False (nothing changed) otherwise."""
    if pos + 28 > end:
        return False
    magic_ok = chunk[pos:pos + 4] == _RECORD_MAGIC
    size = struct.unpack_from("<I", chunk, pos + 4)[0]
    if not magic_ok:
        if 28 <= size <= end - pos and struct.unpack_from("<I", chunk, pos + size - 4)[0] == size \
                and (pos + size >= end or _record_at(chunk, pos + size, end) is not None):
            chunk[pos:pos + 4] = _RECORD_MAGIC
            return True
        return False
    stop = chunk.find(_RECORD_MAGIC, pos + 28, end)
    while stop >= 0 and _record_at(chunk, stop, end) is None:
        stop = chunk.find(_RECORD_MAGIC, stop + 1, end)
    stop = end if stop < 0 else stop
    size = stop - pos
    if size < 28 or struct.unpack_from("<I", chunk, stop - 4)[0] != size:
        return False
    struct.pack_into("<I", chunk, pos + 4, size)
    return True


def _fill(chunk: bytearray, pos: int, end: int) -> bool:
    """Overwrite the record at ``pos`` (or the bytes up to the next valid record header) with a
    filler record (number 0, undecodable body). False when there is nothing to skip to."""
    rec = _record_at(chunk, pos, end)
    if rec is not None:
        stop = pos + rec[0]
    else:
        stop = chunk.find(_RECORD_MAGIC, pos + 1, end)
        while stop >= 0 and _record_at(chunk, stop, end) is None:
            stop = chunk.find(_RECORD_MAGIC, stop + 1, end)
        if stop < 0:
            return False
    size = stop - pos
    if size < 28:
        return False
    chunk[pos:stop] = (_RECORD_MAGIC + struct.pack("<IQQ", size, 0, 0) + b"\xff" * (size - 28)
                       + struct.pack("<I", size))
    return True


def _event_record_ids(chunk: bytearray, numbers: list, recovered: list) -> dict:
    """``{record number: EventRecordID}`` for the lost records ``numbers`` of ``chunk`` whose
    EventRecordID the records read around them tell: the record header's number and the
    EventRecordID (inside the damaged binary XML) differ in a log exported from a larger one
    (record 135 of an export is EventRecordID 3706); when the nearest record read before and
    the nearest read after a lost one differ by the same amount, the lost one does too. A lost
    record without a readable record on both sides, or between neighbours that disagree, is
    left out. ``recovered``: ``[(record number, data JSON)]`` read past the damage
    (:func:`_recover_records`), on top of what pyevtx-rs reads of the chunk alone."""
    if not numbers:
        return {}
    delta: dict = {}
    for num, data in _parse_chunk(bytearray(chunk)) + list(recovered):
        try:
            erid = orjson.loads(data)["Event"]["System"]["EventRecordID"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
        if type(erid) is int:
            delta[num] = erid - num
    out = {}
    read = sorted(delta)
    for n in numbers:
        before = [r for r in read if r < n]
        after = [r for r in read if r > n]
        if before and after and delta[before[-1]] == delta[after[0]]:
            out[n] = n + delta[before[-1]]
    return out


def _parse_chunk(chunk: bytearray) -> list:
    """``[(record number, data JSON), ...]`` pyevtx-rs reads from ``chunk`` alone, errors
    skipped."""
    image = io.BytesIO(_file_header(1) + bytes(chunk))
    it = PyEvtxParser(image, number_of_threads=1).records_json()
    out = []
    rec: Any  # a dict from pyevtx-rs
    for _ in range(4096):  # bound on the errors of one chunk
        try:
            for rec in it:
                out.append((rec["event_record_id"], rec["data"]))
            break
        except (RuntimeError, OSError):
            continue
    return out


def _file_header(chunks: int) -> bytes:
    """A clean 4 KiB EVTX file header announcing ``chunks`` chunks (version 3.1)."""
    h = bytearray(_FILE_MAGIC + struct.pack("<QQQIHHHH", 0, max(chunks - 1, 0), 0, 128, 1, 3,
                                            _HEADER_BLOCK, chunks))
    h += bytes(120 - len(h)) + struct.pack("<I", 0)  # flags: clean
    h += struct.pack("<I", _crc32(h[:120]))
    return bytes(h) + bytes(_HEADER_BLOCK - len(h))


class _RebuiltHeader(io.RawIOBase):
    """The EVTX file read through a rebuilt 4 KiB file header (for a damaged original header)."""

    def __init__(self, path: str, slots: int, data: Optional[bytes] = None) -> None:
        super().__init__()
        self.f: BinaryIO
        if data is None:
            self.f = open(path, "rb")
            self.size = os.fstat(self.f.fileno()).st_size
        else:
            self.f = io.BytesIO(data)
            self.size = len(data)
        self.pos = 0
        self.header = _file_header(slots)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = base + offset
        return self.pos

    def readinto(self, buffer) -> int:
        n = len(buffer)
        if self.pos < _HEADER_BLOCK:
            data = self.header[self.pos:self.pos + n]
        else:
            self.f.seek(self.pos)
            data = self.f.read(n)
        buffer[:len(data)] = data
        self.pos += len(data)
        return len(data)

    def close(self) -> None:
        self.f.close()
        super().close()


@SOURCES.register
class EvtxFormat(FileFormat):
    """Windows ``.evtx`` event logs (pyevtx-rs); damaged chunks and records are recovered one by
    one and each damaged spot is reported with its offset."""

    name = "evtx"
    summary = "Windows .evtx logs (pyevtx-rs), damaged files recovered record by record"
    extensions = (".evtx",)
    order = 0
    streamable = False
    raw_batches = True  # read_batches takes the loop's raw path (``raw``)

    @classmethod
    def read(cls, path: str, on_error: OnError, **options: Any) -> Iterator[Event]:
        """:func:`read_evtx` (options: ``threads``, ``data``)."""
        return read_evtx(path, on_error, **options)

    @classmethod
    def read_batches(cls, path: str, on_error: OnError, **options: Any) -> Iterator[list]:
        """:func:`read_evtx_batches` (options: ``threads``, ``data``, ``raw``)."""
        return read_evtx_batches(path, on_error, **options)
