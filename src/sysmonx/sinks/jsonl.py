"""SysmonX JSON lines: one JSON object per event, one event per line (UTF-8, ``\\n``-terminated)::

    {"EventID":1,"RuleName":"-","UtcTime":"2019-04-18 16:55:37.075",...,
     "System":{"Provider":"Microsoft-Windows-Sysmon","ProviderGuid":"{5770385f-...}","Version":5,
     "Level":4,"Task":1,"Opcode":0,"Keywords":"0x8000000000000000",
     "TimeCreated":"2019-04-18T16:55:37.125139000Z","EventRecordID":4,"ProcessID":3192,
     "ThreadID":3288,"Channel":"Microsoft-Windows-Sysmon/Operational","Computer":"IEWIN7",
     "UserID":"S-1-5-18"}}

(wrapped here). ``EventID`` (integer) comes first, then each EventData field under its Sysmon
name with its string value, in field order, then ``System`` (integers or ``null``, strings;
``TimeCreated`` is the Event's UTC time with 9 fractional digits and ``Z``).

With ``--enrich``, the SysmonX enrichment fields (GrandparentImage, AncestorImages, ...) go into
an ``"Enrichment"`` object last, in order; :mod:`sysmonx.sources.jsonl` appends them back after
the event's own fields, where the enrichment stage put them.

Reserved top-level keys are ``EventID``, ``System``, ``ExtraData`` and ``Enrichment``. When a
field name collides with one of them (only non-Sysmon or hostile input), that field *and every
field after it* go into an ``"ExtraData"`` object after ``System``, in order, so no value can
forge a key and
:mod:`sysmonx.sources.jsonl` rebuilds the fields exactly, order included.

Values are escaped by orjson (control characters as ``\\u00XX``), so a value never starts a new
line; the C1 controls U+0080 to U+009F (orjson writes them raw) are escaped the same way, so no
8-bit CSI reaches a terminal showing the output. A lone surrogate, which orjson refuses, is written
as the JSON escape ``\\udXXX`` by the standard library's encoder for that one event (the reader
accepts it): the round trip is exact. ``TimeCreated`` that is not canonical (an Event built by
hand) is normalised to UTC with ``Z`` when it parses, else written as it is.
"""

from __future__ import annotations

import json
import re
from typing import BinaryIO, Callable, Optional

import orjson

from ..core import native
from ..core.registry import SINKS
from ..event import Event, normalize_time
from ..schema.catalogue import ENRICHMENT_FIELD_NAMES
from .base import Writer

__all__ = ["JsonlWriter", "event_to_json", "RESERVED_KEYS"]

#: Top-level keys that are not EventData fields.
RESERVED_KEYS = frozenset({"EventID", "System", "ExtraData", "Enrichment"})


def _split_enrichment(event_id: int, data: dict) -> tuple[dict, Optional[dict]]:
    """``(event fields, enrichment fields or None)``: the SysmonX enrichment fields
    (``--enrich``) go under their own ``Enrichment`` key; a field of the event's own schema
    with the same name (ShellCommand's ``Tty``) stays an event field."""
    from ..schema import CURRENT
    ev = CURRENT.events.get(event_id)
    own = ev.index if ev is not None else {}
    enr = {k: v for k, v in data.items() if k in ENRICHMENT_FIELD_NAMES and k not in own}
    if not enr:
        return data, None
    return {k: v for k, v in data.items() if k not in enr}, enr


_C1 = re.compile(rb"\xc2[\x80-\x9f]")  # U+0080..U+009F in UTF-8 (0xC2 is always a lead byte)


def _c1(m: re.Match) -> bytes:
    return b"\\u%04x" % m.group()[1]


def _utc(t: str) -> str:
    if not t or (len(t) == 30 and t[29] == "Z"):
        return t
    try:
        return normalize_time(t)
    except ValueError:
        return t


def _event_to_json_py(e: Event) -> bytes:
    """One event as a JSON line (bytes, UTF-8, without the line break): the pure-Python path,
    which defines the format (:data:`event_to_json`)."""
    data = e.data
    enrichment = None
    if not ENRICHMENT_FIELD_NAMES.isdisjoint(data):
        data, enrichment = _split_enrichment(e.event_id, data)
    system = {
        "Provider": e.provider, "ProviderGuid": e.provider_guid, "Version": e.version,
        "Level": e.level, "Task": e.task, "Opcode": e.opcode, "Keywords": e.keywords,
        "TimeCreated": _utc(e.time_created), "EventRecordID": e.record_id,
        "ProcessID": e.process_id,
        "ThreadID": e.thread_id, "Channel": e.channel, "Computer": e.computer,
        "UserID": e.user_id}
    if RESERVED_KEYS.isdisjoint(data):
        obj = {"EventID": e.event_id, **data, "System": system}
    else:
        obj = {"EventID": e.event_id}
        extra: Optional[dict[str, str]] = None
        for k, v in data.items():
            if extra is None and k in RESERVED_KEYS:
                extra = {}
            if extra is None:
                obj[k] = v
            else:
                extra[k] = v
        obj["System"] = system
        obj["ExtraData"] = extra
    if enrichment is not None:
        obj["Enrichment"] = enrichment
    try:
        out = orjson.dumps(obj)
        return _C1.sub(_c1, out) if b"\xc2" in out else out
    except TypeError:  # lone surrogates: orjson refuses them, json escapes them
        return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode()


#: One event as a JSON line (bytes, UTF-8, without the line break), the format above. The
#: compiled renderer (sysmonx.core._speedups: the same bytes, anything unusual handed to
#: :func:`_event_to_json_py`) when it is built and not disabled (``SYSMONX_PURE_PYTHON=1``).
event_to_json: Callable[[Event], bytes] = _event_to_json_py
if native.speedups is not None:
    native.speedups.setup_json(Event, ENRICHMENT_FIELD_NAMES, _split_enrichment, _utc,
                               _event_to_json_py)
    event_to_json = native.speedups.event_json


@SINKS.register
class JsonlWriter(Writer):
    """Writes events as SysmonX JSON lines (format above).

    Args:
        stream: binary output stream.
        close_stream: see :class:`~sysmonx.sinks.base.Writer`.
    """

    name = "jsonl"
    summary = "SysmonX JSON lines: EventID, every field by name, then System"

    def __init__(self, stream: BinaryIO, close_stream: bool = True) -> None:
        super().__init__(stream, close_stream)
        if native.speedups is not None and event_to_json is native.speedups.event_json:
            # the same single stream.write per event, without a Python frame per event
            self.write = native.speedups.LineWriter(stream.write)  # type: ignore[method-assign]
        if hasattr(stream, "write_lines"):  # a live output file (WholeLineFile)
            self.write_many = self._write_many

    def _write_many(self, events: list) -> None:
        """Write ``events`` as lines in one ``write_lines`` call (a live output's thread hands
        over everything queued at once). Only offered (as ``write_many``) when the stream is a
        :class:`~sysmonx.sinks.wholeline.WholeLineFile`.

        Raises:
            PartialWrite: the first ``written`` events are out, the next one failed (the stream's
                error is ``cause``), the rest were not tried.
            Exception: an event could not be rendered; nothing was written.
        """
        self.stream.write_lines(list(map(event_to_json, events)))  # type: ignore[attr-defined]

    def write(self, event: Event) -> None:
        """Write one event line."""
        self.stream.write(event_to_json(event) + b"\n")
