"""The ``--from`` / ``--to`` time window: keep records whose time is inside it.

The window applies to every record, Sysmon or not, before the filter, on the System time
(:attr:`Event.time_created <sysmonx.event.Event.time_created>`), or with ``window_time=
"utctime"`` on a Sysmon event's own ``UtcTime``, for exports whose System times are local
times labelled UTC. A record without a readable time is kept and counted in ``untimed``.

Records without ``UtcTime`` (Security, System, PowerShell ... records of a mixed export) are
compared, with ``utctime``, on their System time corrected by the offset the Sysmon events of
the same file (archive member) measured so far (:class:`~sysmonx.stages.clock.ClockCheck`: System
minus UtcTime, whole hours; ``0`` for events whose times agree), when that offset is one value.
The file is read once, in order, so records that come before the file's first Sysmon event
(Security-Datasets exports put them first), or that follow Sysmon events with different
offsets (a merged file), are compared on their System time as it is; at the end of a file that
showed an offset, one warning counts them and those of them the window left out, and a note
counts the records whose System time was corrected.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from ..core.registry import STAGES
from ..event import Event, TimeFormatError, normalize_time
from ..core.errors import ReadError
from ..interfaces import Emit, Stage
from .clock import ClockCheck, utc_time

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
        self._file: Optional[_FileClock] = None

    def process(self, item: Any, emit: Emit) -> bool:
        """Keep ``item`` when it is not an event, has no readable time, or is inside. With
        ``utctime``, a record without ``UtcTime`` may be held until its file's offset is known
        (module docstring) and then passed on through ``emit``, in its place before the
        record that told the offset."""
        if type(item) is not Event:
            return True
        if not self.utctime:  # _inside(item.time_created, None), without the call
            t = item.time_created
            if not t or len(t) != 30 or t[29] != "Z":
                return self._inside(t, None)
            if (self.time_from is not None and t < self.time_from) or \
                    (self.time_to is not None and t >= self.time_to):
                self.out_of_window += 1
                return False
            return True
        origin = item.origin
        path = origin[0] if origin else None
        fc = self._file
        if fc is None or (path is not fc.path and path != fc.path):
            if fc is not None:
                self._end(fc, emit)
            fc = self._file = _FileClock(path)
        u = utc_time(item)
        if u is not None:
            if fc.measure(item) and fc.held is not None:  # the file's first offset
                self._release(fc, emit)
            return self._inside(u, None)
        if fc.held is not None:
            if len(fc.held) < HOLD_MAX:
                fc.held.append(item)
                return False
            self._release(fc, emit)  # too many to hold: compared on System time as it is
        return self._inside(item.time_created, fc)

    def _inside(self, t: str, fc: Optional[_FileClock]) -> bool:
        """Is time ``t`` (a record's UtcTime or System time) inside the window? ``fc``: the
        record has no UtcTime and ``t`` is its System time, corrected here by ``fc``'s offset."""
        raw = False
        if fc is not None:
            c = fc.corrected(t)
            if c is None:
                raw = fc.skewed_unknown()
            else:
                t = c
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
            if raw and fc is not None:
                fc.raw_out += 1
            return False
        return True

    def _release(self, fc: _FileClock, emit: Emit) -> None:
        """Pass on the records ``fc`` holds that are inside the window, in their order."""
        held, fc.held = fc.held or [], None
        for ev in held:
            if self._inside(ev.time_created, fc):
                emit(ev)

    def _end(self, fc: _FileClock, emit: Emit) -> None:
        if fc.held:
            self._release(fc, emit)
        for report in fc.reports():
            emit(report)

    def end_file(self, emit: Emit) -> None:
        """End of an input file: pass on the records held for it (in the window) and its
        reports (:meth:`_FileClock.reports`) through ``emit`` (what follows this stage). The
        replay calls it after each input file; :meth:`finish` does it for the last one."""
        fc, self._file = self._file, None
        if fc is not None:
            self._end(fc, emit)

    def finish(self, emit: Emit) -> None:
        """End of the stream: :meth:`end_file`."""
        self.end_file(emit)


#: Most records without ``UtcTime`` held, per file, until a Sysmon event of the file tells its
#: offset (a Security-Datasets export puts its few hundred Security records first); past it they
#: are compared on their System time as it is, and counted in the file's warning.
HOLD_MAX = 20_000


class _FileClock:
    """What the Sysmon events of one file said so far about its System times (the window's
    ``utctime`` correction of records without ``UtcTime``).

    Attributes:
        offsets: distinct whole-hour offsets (System minus UtcTime; 0: agreeing) measured.
        held: the records without UtcTime held until an offset is measured (``None`` once one
            is, or once :data:`HOLD_MAX` was reached).
        corrected_n: records compared on System time minus the offset; ``raw``: records
            compared on System time as it is after an offset was known (several offsets, or
            more than :data:`HOLD_MAX` before the first); ``raw_out``: of those, the ones the
            window left out.
    """

    __slots__ = ("path", "check", "offsets", "held", "corrected_n", "raw", "raw_out", "_shift",
                 "_hours")

    def __init__(self, path: Optional[str]) -> None:
        self.path = path
        self.check = ClockCheck()
        self.offsets: set[int] = set()
        self.held: Optional[list[Event]] = []
        self.corrected_n = self.raw = self.raw_out = 0
        self._shift: Optional[timedelta] = None
        self._hours: dict[str, str] = {}  # "YYYY-MM-DDTHH" -> the same hour shifted

    def measure(self, event: Event) -> bool:
        """Add the offset of a Sysmon ``event`` (it has ``UtcTime``) to :attr:`offsets`; True
        when it is the first offset of the file."""
        if len(self.offsets) > 1:
            return False  # several already: no correction any more
        t, u = event.time_created, event.data.get("UtcTime", "")
        if t[11:13] == u[11:13] and t[:10] == u[:10]:
            hours: Optional[int] = 0
        else:
            hours = self.check.check(event)
        if hours is None or hours in self.offsets:
            return False
        self.offsets.add(hours)
        self._shift = timedelta(hours=hours) if len(self.offsets) == 1 else None
        self._hours.clear()
        return len(self.offsets) == 1

    def corrected(self, t: str) -> Optional[str]:
        """System time ``t`` (canonical) minus the file's one non-zero offset, or ``None``
        (compare ``t`` as it is)."""
        shift = self._shift
        if not shift:
            return None
        hour = t[:13]  # whole hours move the date and hour only
        shifted = self._hours.get(hour)
        if shifted is None:
            try:
                dt = datetime.strptime(hour, "%Y-%m-%dT%H") - shift
            except (ValueError, OverflowError):
                return None
            shifted = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}"
            if len(self._hours) < 4096:
                self._hours[hour] = shifted
        self.corrected_n += 1
        return shifted + t[13:]

    def skewed_unknown(self) -> bool:
        """A record compared on System time as it is: count it when it may be off (counted
        for the warning only if the file shows an offset in the end)."""
        if self._shift is None:
            self.raw += 1
            return True
        return False

    def reports(self) -> list[ReadError]:
        """A ``warning`` when records were compared on System time in a file whose Sysmon
        events showed an offset, a ``note`` when records were corrected; nothing for a file
        whose System times agree with UtcTime (or without Sysmon events)."""
        out: list[ReadError] = []
        skewed = sorted(h for h in self.offsets if h)
        path = self.path or "<input>"
        if self.raw and skewed:
            hours = ", ".join(f"{h:+d} h" for h in sorted(self.offsets))
            why = (f"its Sysmon events have more than one offset: {hours}"
                   if len(self.offsets) > 1 else
                   f"more than {HOLD_MAX:,} came before its first Sysmon event")
            out.append(ReadError(
                path, None, "file",
                f"--window-time utctime: {_n(self.raw)} without UtcTime compared on System time "
                f"as it is ({why}): {self.raw_out:,} of them fell outside --from/--to and were "
                "skipped", "warning"))
        if self.corrected_n:
            out.append(ReadError(
                path, None, "file",
                f"--window-time utctime: {_n(self.corrected_n)} without UtcTime compared on "
                f"System time corrected by the {skewed[0]:+d} h its Sysmon events measured",
                "note"))
        return out


def _n(count: int) -> str:
    return f"{count:,} record" + ("" if count == 1 else "s")
