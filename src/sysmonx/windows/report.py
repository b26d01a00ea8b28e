"""Loss and errors of the Windows live sources, as data: :class:`Loss` records and Sysmon event
255 (``Error report``: ``UtcTime``, ``ID``, ``Description``).

The Linux sensor writes every loss as event 255 with the count (``sensor/assemble.py``); the
Windows sources do the same, with the count ``unknown`` where Windows does not say how many
events were lost (never a plausible number). Whose provider the event carries is the wiring's
choice (:class:`ReportIdentity`); the default is Windows Sysmon's provider and channel, the
contract SysmonX's output keeps.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Optional

from ..event import (SYSMON_KEYWORDS, WINDOWS_CHANNEL, WINDOWS_PROVIDER, WINDOWS_PROVIDER_GUID,
                     Event)
from ..schema import CURRENT

__all__ = ["Loss", "ReportIdentity", "error_event", "loss_event", "utc_time", "event_time"]


def utc_time(ts_ns: int) -> str:
    """Sysmon's ``UtcTime``: ``YYYY-MM-DD HH:MM:SS.mmm`` (UTC, milliseconds)."""
    s, ns = divmod(ts_ns, 1_000_000_000)
    return (datetime.fromtimestamp(s, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            + f".{ns // 1_000_000:03d}")


def event_time(ts_ns: int) -> str:
    """``System/TimeCreated`` in the canonical nine-digit form (``...SS.nnnnnnnnnZ``)."""
    s, ns = divmod(ts_ns, 1_000_000_000)
    return (datetime.fromtimestamp(s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
            + f".{ns:09d}Z")


@dataclass(frozen=True)
class Loss:
    """Events a Windows source knows it lost.

    Attributes:
        source: what lost them: ``eventlog:<channel>``, ``etw:<session>``, ``powershell:4104``.
        count: how many, or ``None`` when Windows does not tell (a cleared log).
        detail: why, for a user (one line).
        ts_ns: when it was noticed, ns since the Unix epoch (UTC).
        first_record, last_record: EventRecordID range lost, when known.
    """

    source: str
    count: Optional[int]
    detail: str
    ts_ns: int = field(default_factory=time.time_ns)
    first_record: Optional[int] = None
    last_record: Optional[int] = None

    def description(self) -> str:
        """``Lost N events: detail`` / ``Lost an unknown number of events: detail``."""
        what = f"Lost {self.count} events" if self.count is not None else \
            "Lost an unknown number of events"
        if self.first_record is not None and self.last_record is not None:
            what += f" (EventRecordID {self.first_record}-{self.last_record})"
        return f"{what}: {self.detail}" if self.detail else what


@dataclass(frozen=True)
class ReportIdentity:
    """The System header of the events 255 a source writes.

    Attributes:
        provider, provider_guid, channel: default Windows Sysmon's.
        computer: ``System/Computer`` (default: this host's name).
        process_id: ``Execution/@ProcessID`` (default: this process).
    """

    provider: str = WINDOWS_PROVIDER
    provider_guid: Optional[str] = WINDOWS_PROVIDER_GUID
    channel: str = WINDOWS_CHANNEL
    computer: str = field(default_factory=platform.node)
    process_id: int = field(default_factory=os.getpid)


def error_event(ident: str, description: str, ts_ns: Optional[int] = None,
                identity: Optional[ReportIdentity] = None) -> Event:
    """Event 255 with ``ID`` = ``ident`` (the component) and ``Description``.

    Version, level and task come from the schema's definition of event 255 (Sysmon's manifest).
    ``record_id`` is ``None``: the writer side numbers what it writes.
    """
    ts = time.time_ns() if ts_ns is None else ts_ns
    who = identity or ReportIdentity()
    ev = CURRENT.events[255]
    return Event(255, {"UtcTime": utc_time(ts), "ID": ident, "Description": description},
                 provider=who.provider, provider_guid=who.provider_guid, version=ev.version,
                 level=ev.level_value, task=255, opcode=0, keywords=SYSMON_KEYWORDS,
                 time_created=event_time(ts), record_id=None, process_id=who.process_id,
                 thread_id=threading.get_native_id(), channel=who.channel,
                 computer=who.computer, user_id=None)


def loss_event(loss: Loss, identity: Optional[ReportIdentity] = None) -> Event:
    """:func:`error_event` for a :class:`Loss` (``ID`` is ``loss.source``)."""
    return error_event(loss.source, loss.description(), loss.ts_ns, identity)
