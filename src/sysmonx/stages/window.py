"""The ``--from`` / ``--to`` time window: keep records whose time is inside it.

The window applies to every record, Sysmon or not, before the filter, on the System time
(:attr:`Event.time_created <sysmonx.event.Event.time_created>`), or with ``window_time=
"utctime"`` on a Sysmon event's own ``UtcTime`` (System time for records without one), for
exports whose System times are local times labelled UTC. A record without a readable time is kept
and counted in ``untimed``.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Optional

from ..core.registry import STAGES
from ..event import Event, TimeFormatError, normalize_time
from ..interfaces import Emit, Stage
from .clock import utc_time

__all__ = ["TimeWindowStage", "parse_time_bound"]

_OFFSET_TAIL = re.compile(r"[Tt ].*[+-](\d{2}):?(\d{2})?$")


def parse_time_bound(text: str) -> str:
    """A ``--from`` / ``--to`` value as the canonical UTC time string Events carry
    (``YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ``, see :mod:`sysmonx.event`), so bounds and record times
    compare as strings.

    Accepts ISO 8601 / RFC 3339: a date alone (``2024-01-02``: its midnight UTC), a date and time
    with ``T`` or a space, with or without seconds and fraction (up to 9 digits kept), with ``Z``
    or a ``+hh:mm`` / ``+hhmm`` / ``+hh`` offset (converted to UTC); a time without a zone is UTC.

    Raises:
        TimeFormatError: anything else, or a time outside years 1-9999 after conversion.
    """
    raw = text.strip()
    m = _OFFSET_TAIL.search(raw)
    if m and (int(m.group(1)) > 23 or int(m.group(2) or 0) > 59):
        raise TimeFormatError(f"not a UTC offset in {text!r}")
    try:
        canonical = normalize_time(raw)
        datetime.strptime(canonical[:19], "%Y-%m-%dT%H:%M:%S")  # a real date and time?
        return canonical
    except (ValueError, OverflowError):
        pass
    try:
        dt = datetime.fromisoformat(raw[:-1] + "+00:00" if raw[-1:] in ("Z", "z") else raw)
        if dt.tzinfo is not None:
            dt = dt.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise TimeFormatError(f"not an ISO 8601 date or time: {text!r} (e.g. 2024-01-02, "
                              "2024-01-02T03:04:05Z, 2024-01-02T05:04:05+02:00)") from None
    return f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:" \
           f"{dt.second:02d}.{dt.microsecond:06d}000Z"


@STAGES.register
class TimeWindowStage(Stage):
    """Drops events whose System time is outside ``[time_from, time_to)``.

    Args:
        time_from, time_to: bounds as :func:`parse_time_bound` takes them, or ``None``.
        window_time: ``system`` (System ``TimeCreated``) or ``utctime`` (``UtcTime``).
    Attributes:
        out_of_window: events dropped; ``untimed``: events without a readable time (kept).
    Raises:
        TimeFormatError: a bound that is not an ISO 8601 time.
        ValueError: another ``window_time``.
    """

    name = "time-window"
    summary = "keep events whose time is inside --from/--to (events without a time kept)"

    def __init__(self, time_from: Optional[str] = None, time_to: Optional[str] = None,
                 window_time: str = "system") -> None:
        if window_time not in ("system", "utctime"):
            raise ValueError(f"window_time must be 'system' or 'utctime', not {window_time!r}")
        self.time_from = parse_time_bound(time_from) if time_from is not None else None
        self.time_to = parse_time_bound(time_to) if time_to is not None else None
        self.utctime = window_time == "utctime"
        self.out_of_window = 0
        self.untimed = 0

    def process(self, item: Any, emit: Emit) -> bool:
        """Keep ``item`` when it is not an event, has no readable time, or is inside."""
        if type(item) is not Event:
            return True
        t = utc_time(item) if self.utctime else None
        if t is None:
            t = item.time_created
        if not t or len(t) != 30 or t[29] != "Z":
            try:
                t = normalize_time(t) if t else ""
            except TimeFormatError:
                t = ""
            if not t:
                self.untimed += 1
                return True
        if (self.time_from is not None and t < self.time_from) or \
                (self.time_to is not None and t >= self.time_to):
            self.out_of_window += 1
            return False
        return True
