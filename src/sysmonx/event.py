"""The one Event type every source produces and every stage and writer consumes.

An :class:`Event` is a Windows-event-log-shaped record: the ``System`` header (provider, EventID,
version, level, task, opcode, keywords, time, record id, execution pid/tid, channel, computer,
security user id) and ``data``, the ``EventData`` fields in order as strings, exactly as Sysmon
renders them (spec/sysmon-semantics.md section 4.2). Sources convert to this shape once; nothing
downstream knows where an event came from except through :attr:`Event.origin`.

Times are UTC. ``time_created`` is kept as an ISO-8601 string with exactly nine fractional digits
and a ``Z`` (``2019-04-18T16:55:37.014980000Z``): Windows records have 100 ns resolution and Sysmon
for Linux prints nanoseconds, so nine digits hold both losslessly; writers cut to their format.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import ClassVar, Iterable, Optional

from .core.errors import UsageError

WINDOWS_PROVIDER = "Microsoft-Windows-Sysmon"
WINDOWS_PROVIDER_GUID = "{5770385f-c22a-43e0-bf4c-06f5698ffbd9}"
WINDOWS_CHANNEL = "Microsoft-Windows-Sysmon/Operational"
LINUX_PROVIDER = "Linux-Sysmon"
LINUX_PROVIDER_GUID = "{ff032593-a8d3-4f13-b0d6-01fc615a0f97}"
LINUX_CHANNEL = "Linux-Sysmon/Operational"
SYSMON_PROVIDERS = frozenset({WINDOWS_PROVIDER, LINUX_PROVIDER})
SYSMON_KEYWORDS = "0x8000000000000000"
#: SysmonX's SigmaAlert events (EventID 1000) come from this provider, in their own channel
#: (``detection/alerts.py`` writes them; a replay reads them back as SysmonX events).
SIGMA_ALERT_PROVIDER = "SysmonX"
SIGMA_ALERT_EVENT_ID = 1000

__all__ = ["Event", "normalize_time", "is_canonical_time", "TimeFormatError", "SYSMON_PROVIDERS",
           "WINDOWS_PROVIDER", "LINUX_PROVIDER", "WINDOWS_CHANNEL", "LINUX_CHANNEL", "WINDOWS_PROVIDER_GUID",
           "LINUX_PROVIDER_GUID", "SYSMON_KEYWORDS", "SIGMA_ALERT_PROVIDER",
           "SIGMA_ALERT_EVENT_ID", "join_channels", "split_channels"]


def join_channels(channels: Iterable[str]) -> str:
    """SigmaAlert event 1000's ``Channels`` (written by ``detection/alerts.py``, read back by
    ``detection/stages.py``, ``detection/readback.py`` and the CSV timeline, so defined here,
    below them all): channel names joined with ``,``, each name's ``%`` written ``%25`` and
    ``,`` written ``%2C`` (percent-encoding, RFC 3986 section 2.1), so a name with a comma
    (legal in a Windows channel name: a custom ETW channel) is not taken for two.
    A name without ``%`` or ``,`` (every channel Windows and Sysmon define) is written as is,
    so ``Channels`` reads the same as before this encoding for them. ``""`` stays the unknown
    channel (an event without one)."""
    return ",".join(c.replace("%", "%25").replace(",", "%2C") if ("%" in c or "," in c) else c
                    for c in channels)


_ESCAPED = re.compile(r"%(2[cC]|25)")


def split_channels(text: str) -> list[str]:
    """The channel names of event 1000's ``Channels`` (:func:`join_channels`): split at ``,``,
    then ``%2C`` (or ``%2c``) read as ``,`` and ``%25`` as ``%``; any other ``%`` is kept as
    written (an alert written before the encoding, whose names had no comma, reads the same).
    ``""`` gives ``[""]`` (one channel, unknown), as it was written."""
    if "%" not in text:
        return text.split(",")
    return [_ESCAPED.sub(lambda m: "," if m.group(1) in ("2c", "2C") else "%", part)
            for part in text.split(",")]


class TimeFormatError(UsageError):
    """A timestamp that is not ISO 8601 (or Sysmon's ``YYYY-MM-DD HH:MM:SS.mmm``); a
    ``ValueError``."""


_TIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?\d*\s*"
    r"(Z|z|UTC|[+-]\d{2}:?\d{2})?$")


_CANONICAL = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{9}Z\Z").match


def is_canonical_time(text: str) -> bool:
    """True when ``text`` is a canonical time, ``YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`` with ASCII
    digits (what :func:`normalize_time` returns), so a writer can put it anywhere as it is;
    False for anything else, a text of that length with other characters where the digits go
    (markup, quotes, spaces) included."""
    return _CANONICAL(text) is not None


def normalize_time(text: str) -> str:
    """Return ``text`` as canonical UTC ``YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ``.

    Accepts ISO 8601 with ``T`` or a space, 0-9+ fractional digits (extra digits cut), and a
    ``Z``, ``UTC``, ``+hh:mm`` offset or none (taken as UTC, as Sysmon's times are).

    Raises:
        TimeFormatError: anything else.
    """
    if len(text) == 30 and _CANONICAL(text):
        return text
    m = _TIME_RE.match(text.strip())
    if not m:
        raise TimeFormatError(f"not an ISO 8601 time: {text!r}")
    y, mo, d, h, mi, s, frac, tz = m.groups()
    frac = (frac or "").ljust(9, "0")
    if tz and tz not in ("Z", "z", "UTC") and tz.replace(":", "") not in ("+0000", "-0000"):
        sign = 1 if tz[0] == "+" else -1
        tzd = tz[1:].replace(":", "")
        offset = sign * (int(tzd[:2]) * 60 + int(tzd[2:]))
        dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=timezone.utc)
        dt = dt - timedelta(minutes=offset)
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + frac + "Z"
    return f"{y}-{mo}-{d}T{h}:{mi}:{s}.{frac}Z"


class Event:
    """One event.

    Attributes:
        event_id: System/EventID (int).
        data: EventData, ``{field name: value string}`` in field order. Values are Sysmon's
            renderings (spec 4.2); a field the record did not carry is simply absent. For an
            EVTX record converted in C the dict is made on first read (see ``__slots__``).
        provider, provider_guid: System/Provider Name and Guid (``{lower-case}``).
        version, level, task, opcode: System integers (``None`` where the record lacked them).
        keywords: System/Keywords string (``0x8000000000000000``).
        time_created: canonical UTC time string, see module docstring.
        record_id: System/EventRecordID.
        process_id, thread_id: System/Execution.
        channel, computer: System strings.
        user_id: System/Security UserID (Windows SID string or Linux uid), or ``None``.
        origin: ``(path, offset)`` where the record was read (offset: byte offset, line number or
            record index, per source), for error messages; ``None`` for live events.
    """

    #: what this is in the pipeline (:mod:`sysmonx.interfaces`).
    item_kind: ClassVar[str] = "event"

    # ``_raw`` (last: a copy or pickle reads ``data`` first, which drops it) is only ever set by
    # the compiled EVTX converter (sysmonx.core._speedups): the record's EventData fields as
    # slices of its JSON text while ``data`` is empty; it then replaces this class's ``data``
    # descriptor with one over the same slot that builds the dict from ``_raw`` on first read
    # (the JSON-lines renderer and the clock check read ``_raw`` as it is). Setting ``data``
    # drops ``_raw``. In pure-Python mode ``data`` stays a plain slot and ``_raw`` is never set.
    __slots__ = ("event_id", "data", "provider", "provider_guid", "version", "level", "task",
                 "opcode", "keywords", "time_created", "record_id", "process_id", "thread_id",
                 "channel", "computer", "user_id", "origin", "_raw")

    def __init__(self, event_id: int, data: dict, *, provider: str = WINDOWS_PROVIDER,
                 provider_guid: Optional[str] = WINDOWS_PROVIDER_GUID,
                 version: Optional[int] = None, level: Optional[int] = None,
                 task: Optional[int] = None, opcode: Optional[int] = 0,
                 keywords: Optional[str] = SYSMON_KEYWORDS, time_created: str = "",
                 record_id: Optional[int] = None, process_id: Optional[int] = None,
                 thread_id: Optional[int] = None, channel: str = WINDOWS_CHANNEL,
                 computer: str = "", user_id: Optional[str] = None,
                 origin: Optional[tuple] = None) -> None:
        self.event_id = event_id
        self.data = data
        self.provider = provider
        self.provider_guid = provider_guid
        self.version = version
        self.level = level
        self.task = task
        self.opcode = opcode
        self.keywords = keywords
        self.time_created = time_created
        self.record_id = record_id
        self.process_id = process_id
        self.thread_id = thread_id
        self.channel = channel
        self.computer = computer
        self.user_id = user_id
        self.origin = origin

    @property
    def is_sysmon(self) -> bool:
        """True when the provider is Windows Sysmon or Sysmon for Linux."""
        return self.provider in SYSMON_PROVIDERS

    def system_dict(self) -> dict:
        """The System header as a plain dict (JSON writer shape)."""
        return {
            "Provider": self.provider, "ProviderGuid": self.provider_guid,
            "EventID": self.event_id, "Version": self.version, "Level": self.level,
            "Task": self.task, "Opcode": self.opcode, "Keywords": self.keywords,
            "TimeCreated": self.time_created, "EventRecordID": self.record_id,
            "ProcessID": self.process_id, "ThreadID": self.thread_id, "Channel": self.channel,
            "Computer": self.computer, "UserID": self.user_id,
        }

    def key(self) -> tuple:
        """Everything that defines the event (not its origin), for equality in tests."""
        return (self.event_id, tuple(self.data.items()), self.provider, self.provider_guid,
                self.version, self.level, self.task, self.opcode, self.keywords,
                self.time_created, self.record_id, self.process_id, self.thread_id, self.channel,
                self.computer, self.user_id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and self.key() == other.key()

    def __repr__(self) -> str:
        return (f"Event(event_id={self.event_id}, record_id={self.record_id}, "
                f"time={self.time_created!r}, data={self.data!r})")
