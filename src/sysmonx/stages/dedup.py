"""Duplicate records: the same event read twice is passed on once.

A folder often holds one log twice: an EVTX and its JSON export (SigmaHQ's regression layout),
overlapping exports of one channel, a DFIR collection with the raw log and a converted copy.
Replaying it would write every event, and raise every alert, twice. Two records are the same
record when they have the same provider, computer, channel, EventRecordID and System time (to
the second: exports keep different precisions, 100 ns in EVTX, milliseconds in winlogbeat,
seconds in nxlog), as Hayabusa de-duplicates. A record without an EventRecordID (Security-
Datasets' flat export, Sentinel's Event table) is never taken for a duplicate; nor is one whose
EventRecordID is not an integer (a crafted or damaged record: a warning names the file once).

SysmonX's SigmaAlert events (1000, provider ``SysmonX``) read back are numbered from 1 in every
run that wrote them, so provider, channel, record id and time do not tell two runs' alerts
apart (the first alert of two rule sets over one log has both). An alert is a repeat when its
computer, EventRecordID, System time to the second, ``RuleId``, ``RecordIds``, ``Channels``
and ``SourceFile`` are those of one read before (one output read twice, as XML and as JSON lines);
at most :data:`MAX_ALERTS` are remembered (then the filter is ``saturated``, as above).

Memory: per (provider, computer, channel) the times are kept in blocks of 64 consecutive record
ids (one 8-byte slot per id), so a log's records cost 8 bytes each when their ids are dense and
up to 512 bytes each when they are sparse; a record id seen again with another time (a log
cleared and restarted) goes to a small side table. Past ``max_blocks`` blocks the filter stops
remembering new records and says so once (``saturated``): it never grows without bound.
"""

from __future__ import annotations

from array import array
from datetime import date
from typing import Any, Optional

from ..core import native
from ..core.errors import ReadError
from ..core.registry import STAGES
from ..event import SIGMA_ALERT_EVENT_ID, SIGMA_ALERT_PROVIDER, Event
from ..interfaces import Emit, Stage

__all__ = ["DuplicateFilter", "DuplicateStage", "MAX_BLOCKS", "MAX_ALERTS"]

#: Blocks of 64 record ids kept at most (512 bytes each): 128 MiB, 16 million dense records.
MAX_BLOCKS = 262144
#: SigmaAlert events read back remembered at most (one hash each, about 70 bytes).
MAX_ALERTS = 1 << 20
_BLOCK_BITS = 6
_BLOCK = 1 << _BLOCK_BITS
_ABSENT = -(1 << 63)
_NO_TIME = -(1 << 63) + 1
_EPOCH = date(1970, 1, 1).toordinal()


class DuplicateFilter:
    """Remembers the records seen and tells a repeat.

    Args:
        max_blocks: memory bound (see the module docstring).
    Attributes:
        dropped: records found to be duplicates so far.
        saturated: True once the bound was reached (later records are passed on unchecked).
        odd_ids: records whose EventRecordID is there but not an integer (a crafted or
            damaged record: a string, a float); each is taken as a record without an id, never
            a duplicate.
    """

    def __init__(self, max_blocks: int = MAX_BLOCKS) -> None:
        self.max_blocks = max_blocks
        self.dropped = 0
        self.saturated = False
        self.odd_ids = 0
        # (provider, computer, channel) -> {block: array('q')}
        self._streams: dict[tuple[str, str, str], dict[int, array[int]]] = {}
        # (stream key, record id) -> set of other times
        self._other: dict[tuple[tuple[str, str, str], int], set[int]] = {}
        self._blocks = 0
        self._days: dict[str, int] = {}
        self._minutes: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM" -> seconds since 1970
        # SigmaAlert events: hashes of their identity (module docstring); never blocks, so the
        # compiled common case never takes them
        self._alerts: set[int] = set()
        if native.speedups is not None:
            # the common case (a new id in a block already made) compiled; every other call
            # goes to the Python method, which defines the behaviour (tests/test_dedup_native.py)
            self.is_duplicate = native.speedups.Dedup(  # type: ignore[method-assign]
                Event, self._streams, self._is_duplicate_py, 0)
        else:  # the pure path without a second Python call per record
            self.is_duplicate = self._is_duplicate_py  # type: ignore[method-assign]

    def is_duplicate(self, event: Event) -> bool:
        """True when a record with ``event``'s provider, computer, channel, EventRecordID and
        System time (to the second) was seen before; otherwise remembers it and returns False.
        """
        return self._is_duplicate_py(event)

    def _is_duplicate_py(self, event: Event) -> bool:
        rid = event.record_id
        if rid.__class__ is not int:  # none, or not an integer: no id (module docstring)
            if rid is not None:
                self.odd_ids += 1
            return False
        if rid < 0:
            return False
        if event.provider == SIGMA_ALERT_PROVIDER and event.event_id == SIGMA_ALERT_EVENT_ID:
            return self._alert_seen(event, rid)
        key = (event.provider, event.computer, event.channel)
        blocks = self._streams.get(key)
        if blocks is None:
            blocks = self._streams[key] = {}
        tc = event.time_created
        minute = self._minutes.get(tc[:16])  # _seconds' fast path, inline (once per record)
        if minute is not None and len(tc) >= 19:
            try:
                t = minute + int(tc[17:19])
            except ValueError:
                t = _NO_TIME
        else:
            t = self._seconds(tc)
        b = rid >> _BLOCK_BITS
        slots = blocks.get(b)
        if slots is None:
            if self._full():
                return False
            slots = blocks[b] = array("q", [_ABSENT]) * _BLOCK
            self._blocks += 1
        i = rid & (_BLOCK - 1)
        seen = slots[i]
        if seen == _ABSENT:
            slots[i] = t
            return False
        if seen == t:
            self.dropped += 1
            return True
        others = self._other.get((key, rid))
        if others is None:
            if self._full():
                return False
            self._other[(key, rid)] = {t}
            return False
        if t in others:
            self.dropped += 1
            return True
        others.add(t)
        return False

    def _alert_seen(self, event: Event, rid: int) -> bool:
        data = event.data
        ident = hash((event.computer, event.channel, rid, self._seconds(event.time_created or ""),
                      data.get("RuleId"), data.get("RecordIds"), data.get("Channels"),
                      data.get("SourceFile")))
        if ident in self._alerts:
            self.dropped += 1
            return True
        if len(self._alerts) >= MAX_ALERTS:
            self.saturated = True
            return False
        self._alerts.add(ident)
        return False

    def _full(self) -> bool:
        if self._blocks + len(self._other) // 8 < self.max_blocks:  # a side entry ~ 1/8 block
            return False
        self.saturated = True
        return True

    def _seconds(self, t: str) -> int:
        """Seconds since 1970 of a canonical UTC time string (``_NO_TIME`` when absent)."""
        if len(t) < 19:
            return _NO_TIME
        minute = self._minutes.get(t[:16])  # records come in bursts: the minute repeats
        if minute is not None:
            try:
                return minute + int(t[17:19])
            except ValueError:
                return _NO_TIME
        seconds = self._seconds_slow(t)
        if seconds != _NO_TIME:
            if len(self._minutes) >= 4096:
                self._minutes.clear()
            self._minutes[t[:16]] = seconds - int(t[17:19])
        return seconds

    def _seconds_slow(self, t: str) -> int:
        day = self._days.get(t[:10])
        if day is None:
            try:
                day = (date(int(t[0:4]), int(t[5:7]), int(t[8:10])).toordinal() - _EPOCH) * 86400
            except ValueError:
                return _NO_TIME
            if len(self._days) < 4096:
                self._days[t[:10]] = day
        try:
            return day + int(t[11:13]) * 3600 + int(t[14:16]) * 60 + int(t[17:19])
        except ValueError:
            return _NO_TIME

    def memory_bytes(self) -> int:
        """Approximate memory held, in bytes."""
        return (self._blocks * (_BLOCK * 8 + 64) + len(self._other) * 64
                + len(self._alerts) * 70)


@STAGES.register
class DuplicateStage(Stage):
    """Drops records read before (:class:`DuplicateFilter`); when the filter reaches its memory
    bound, says so once (a warning naming the file at hand).

    Args:
        max_blocks: the filter's memory bound.
    Attributes:
        dedup: the :class:`DuplicateFilter` (``dropped`` counts the duplicates).
    """

    name = "duplicates"
    summary = "records read twice (an EVTX beside its JSON export) passed on once"
    stateful = True

    def __init__(self, max_blocks: int = MAX_BLOCKS) -> None:
        self.dedup = DuplicateFilter(max_blocks)
        self._is_duplicate = self.dedup._is_duplicate_py
        self._saturation_said = False
        self._odd_ids_said: Optional[str] = None  # the last file an odd id was reported for
        if native.speedups is not None:
            # process()'s common case compiled: an Event with a new id in a block already made
            # is passed on (True) without a Python call; every other item goes to _process_py.
            # The saturation warning is only due right after a call that saturated the filter,
            # which is never a compiled one (it makes no block), so it is said as before.
            self.process = native.speedups.Dedup(  # type: ignore[method-assign]
                Event, self.dedup._streams, self._process_py, 1)
        else:
            self.process = self._process_py  # type: ignore[method-assign]

    def process(self, item: Any, emit: Emit) -> bool:
        """Drop ``item`` if it is an event read before."""
        return self._process_py(item, emit)

    def raw_step(self) -> Optional[tuple[str, Any]]:
        """``("dedup", streams)``: the compiled ``process``'s common case (a new record id in a
        block already made) over a record's text; ``None`` without the extension."""
        if native.speedups is None or self.process == self._process_py or \
                type(self) is not DuplicateStage:
            return None
        return ("dedup", self.dedup._streams)

    def _process_py(self, item: Any, emit: Emit) -> bool:
        if item.__class__ is not Event:
            return True
        odd = self.dedup.odd_ids
        if self._is_duplicate(item):
            return False
        if self.dedup.odd_ids != odd:
            origin = item.origin or ("<input>",)
            path = origin[0]
            if path != self._odd_ids_said:  # said once per file
                self._odd_ids_said = path
                at = origin[1] if len(origin) > 1 and origin[1].__class__ is int else None
                emit(ReadError(path, at, "file" if at is None else "record",
                               f"EventRecordID {item.record_id!r} is not an integer: taken as "
                               "a record without an id (not checked for repeats)", "warning"))
        if not self._saturation_said and self.dedup.saturated:
            self._saturation_said = True
            path = item.origin[0] if item.origin else "<input>"
            emit(ReadError(path, None, "file", "duplicate removal reached its memory bound: "
                           "records from here on are not checked for repeats "
                           "(--keep-duplicates turns the check off)", "warning"))
        return True
