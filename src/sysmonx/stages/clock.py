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
from typing import Optional

from ..event import Event

__all__ = ["ClockCheck", "utc_time", "SLACK_S"]

#: How far from a whole number of hours a difference may be and still count as a zone error.
SLACK_S = 120
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
        self._days: dict = {}

    def check(self, event: Event) -> Optional[int]:
        """The whole number of hours ``event``'s System time is off its ``UtcTime`` (System
        minus UtcTime; ``None`` when they agree, or either is missing or malformed)."""
        t = event.time_created
        u = event.data.get("UtcTime")
        if not t or not u or len(u) < 19 or len(t) < 19:
            return None
        if t[11:13] == u[11:13] and t[:10] == u[:10]:  # same date and hour: the usual case
            return None
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
