"""System times that lie: ``TimeCreated`` hours away from the event's own ``UtcTime``.

Sysmon writes ``UtcTime`` (when the activity happened, UTC) into every event, and the Event Log
stamps ``TimeCreated`` a few milliseconds later. Some exporters write the collector's local time
and label it UTC (3 of 6 Security-Datasets archives are 4 to 8 hours off), so a time window on
System time selects the wrong hours without a word. :class:`ClockCheck` finds such records:
System time and ``UtcTime`` differing by a near-whole, non-zero number of hours (within
:data:`SLACK_S` seconds of it). :func:`utc_time` gives the canonical form of ``UtcTime`` for a
window on event time instead (``replay --window-time utctime``).
"""

from __future__ import annotations

from datetime import date
from typing import Any, Optional

from ..core import native
from ..core.errors import ReadError
from ..core.registry import STAGES
from ..event import Event
from ..interfaces import Emit, Stage

__all__ = ["ClockCheck", "ClockCheckStage", "utc_time", "SLACK_S", "ZONE_MIN_H", "ZONE_MAX_H",
           "MAX_OFFSETS_WARNED"]

#: How far from a whole number of hours a difference may be and still count as a zone error.
SLACK_S = 120
#: The range of UTC offsets of real time zones, in hours (UTC-12 to UTC+14): a difference
#: outside it is not local time labelled UTC and the warning says so.
ZONE_MIN_H, ZONE_MAX_H = -12, 14
_EPOCH = date(1970, 1, 1).toordinal()


def utc_time(event: Event) -> Optional[str]:
    """``UtcTime`` of a Sysmon event (``YYYY-MM-DD HH:MM:SS.mmm``) as the canonical UTC string
    events carry (``YYYY-MM-DDTHH:MM:SS.mmm000000Z``); ``None`` when the event has none or it is
    not in Sysmon's form."""
    u = event.data.get("UtcTime")
    if not u or len(u) < 19 or u[10] not in " T" or u[4] != "-" or u[13] != ":":
        return None
    frac = u[20:29] if len(u) > 20 and u[19] == "." else ""
    if not frac.isdigit() and frac:
        return None
    return f"{u[:10]}T{u[11:19]}.{frac.ljust(9, '0')}Z"


class ClockCheck:
    """Compares System time with ``UtcTime``, event by event.

    Attributes:
        offset_hours: the first whole-hour difference found (System minus UtcTime), or ``None``.
    """

    def __init__(self) -> None:
        self.offset_hours: Optional[int] = None
        self._days: dict[str, int] = {}
        self._hours: dict[str, Optional[int]] = {}  # same minute: date-hours -> the answer

    def check(self, event: Event) -> Optional[int]:
        """The whole number of hours ``event``'s System time is off its ``UtcTime`` (System
        minus UtcTime; ``None`` when they agree, or either is missing or malformed)."""
        t = event.time_created
        u = event.data.get("UtcTime")
        if not t or not u or len(u) < 19 or len(t) < 19:
            return None
        if t[11:13] == u[11:13] and t[:10] == u[:10]:  # same date and hour: the usual case
            return None
        if t[14:16] == u[14:16] and t[17:19].isdigit() and u[17:19].isdigit():
            # same minute: the seconds differ by less than SLACK_S, so the answer depends on
            # the dates and hours alone (a skewed file asks it for every record)
            key = t[:13] + u[:13]
            if key in self._hours:
                hours = self._hours[key]
                if hours is not None and self.offset_hours is None:
                    self.offset_hours = hours
                return hours
            hours = self._check(t, u)
            if len(self._hours) < 4096:
                self._hours[key] = hours
            return hours
        return self._check(t, u)

    def _check(self, t: str, u: str) -> Optional[int]:
        a, b = self._seconds(t), self._seconds(u)
        if a is None or b is None:
            return None
        d = a - b
        hours = round(d / 3600)
        if hours == 0 or abs(d - hours * 3600) > SLACK_S:
            return None
        if self.offset_hours is None:
            self.offset_hours = hours
        return hours

    def _seconds(self, t: str) -> Optional[float]:
        day = self._days.get(t[:10])
        if day is None:
            try:
                day = (date(int(t[0:4]), int(t[5:7]), int(t[8:10])).toordinal() - _EPOCH) * 86400
            except ValueError:
                return None
            if len(self._days) < 4096:
                self._days[t[:10]] = day
        try:
            return day + int(t[11:13]) * 3600 + int(t[14:16]) * 60 + float(t[17:23])
        except ValueError:
            return None


#: Most distinct offsets warned about in one file (a merged output of many collections); the
#: check stops there (the compiled fast path then passes every event of the file).
MAX_OFFSETS_WARNED = 8


@STAGES.register
class ClockCheckStage(Stage):
    """Warns when System times are a whole number of hours off the events' own ``UtcTime``
    (:class:`ClockCheck`): once per input file and offset (a merged output of several
    collections has several; at most :data:`MAX_OFFSETS_WARNED` per file). Passes every event.

    Args:
        window_time: what ``--from``/``--to`` compare (``system`` or ``utctime``), for the
            advice in the warning.
    """

    name = "clock-check"
    summary = ("warn once per file and offset when System times are whole hours off UtcTime "
               "(local time)")

    def __init__(self, window_time: str = "system") -> None:
        self.window_time = window_time
        self._path: Optional[str] = None
        self._check: Optional[ClockCheck] = None
        self._warned: list[int] = []  # the offsets warned about in the file at hand, in order
        # compiled: an event of the file at hand whose UtcTime has System time's date and hour
        # (or that has none, or a file already warned about) passes without a Python call
        self.process = native.stage_fast(  # type: ignore[method-assign,assignment]
            "clock", self, self._process_py)

    def process(self, item: Any, emit: Emit) -> bool:
        """Check ``item`` (until the file at hand has been warned about)."""
        return self._process_py(item, emit)

    def raw_step(self) -> Optional[tuple[str, Any]]:
        """``("clock", self)``: the compiled check (a record of the file at hand whose
        ``UtcTime`` has TimeCreated's date and hour, or none, or a file warned about) over a
        record's text, which calls :meth:`_raw_enter` for a new file; ``None`` for a
        subclass."""
        return ("clock", self) if type(self) is ClockCheckStage else None

    def _raw_enter(self, path: Any) -> None:
        """A record of ``path`` is next: the state of a new file, as :meth:`process` resets."""
        if path is not self._path and path != self._path:
            self._path, self._check = path, ClockCheck()

    def _process_py(self, item: Any, emit: Emit) -> bool:
        if item.__class__ is not Event:
            return True
        origin = item.origin
        path = origin[0] if origin else None
        if path is not self._path and path != self._path:  # readers share one path object
            self._path, self._check = path, ClockCheck()
            self._warned = []
        check = self._check
        if check is None:
            return True
        t, u = item.time_created, item.data.get("UtcTime")
        if u is None or (t[11:13] == u[11:13] and t[:10] == u[:10]):
            return True  # ClockCheck.check's usual case (same date and hour), without a call
        hours = check.check(item)
        if hours is not None and hours not in self._warned:
            self._warned.append(hours)
            if len(self._warned) >= MAX_OFFSETS_WARNED:
                self._check = None  # enough: the rest of the file passes unchecked
            emit(self._warning(path or "<input>", item, hours, len(self._warned) > 1))
        return True

    def _warning(self, path: str, ev: Event, hours: Optional[int],
                 another: bool = False) -> ReadError:
        which = (f"record {ev.record_id}" if ev.record_id is not None else
                 f"the record at {ev.origin[1]}" if ev.origin else "a record")
        why = ("the exporter probably wrote local time labelled UTC"
               if hours is not None and ZONE_MIN_H <= hours <= ZONE_MAX_H else
               "more than any time zone is (UTC-12 to UTC+14): System time is not when the "
               "events happened (a collection or export time, or a wrong clock)")
        if another:
            why += (" (one more offset in this file, merged from several collections: "
                    f"{', '.join(f'{h:+d} h' for h in self._warned)} so far)")
        return ReadError(
            path, None, "file",
            f"System times are {hours:+d} h off the events' own UtcTime ({which}: TimeCreated "
            f"{ev.time_created}, UtcTime {ev.data.get('UtcTime')}): "
            f"{why}. --from/--to select on "
            + ("UtcTime here (--window-time utctime)" if self.window_time == "utctime"
               else "System time; --window-time utctime selects on UtcTime instead"),
            "warning")
