"""The Windows live sources on the one loop: Event Log channels, the Kernel-Process ETW consumer,
and both merged into one stream.

:class:`EventLogChannels` (registered ``eventlog``) and :class:`KernelProcessEvents`
(``etw-kernel-process``) adapt :class:`~sysmonx.windows.eventlog.EventLogSource` and
:class:`~sysmonx.windows.etw_process.KernelProcessSource` to :class:`~sysmonx.interfaces.Source`:
``live`` (the loop ticks and applies stop/reload requests), ``events()`` yields ``None`` when
quiet, ``commit(event)`` moves the Event Log bookmark once the outputs took the event
(:mod:`sysmonx.pipeline.ack`). :class:`MergedSource` (``windows``) runs several of them, one
forwarding thread each into one bounded queue; ``commit`` goes back to the source that produced
the event (by its ``origin``). Each inner source keeps its own reader thread; the loop never
calls Win32.

Every class takes an injectable API (``api=``), so the whole path runs on Linux against
:mod:`sysmonx.windows.fakes`.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence

from ..core.errors import SourceUnavailable
from ..core.registry import SOURCES
from ..event import Event
from ..interfaces import Source
from .report import ReportIdentity, error_event

if TYPE_CHECKING:
    from .eventlog import BookmarkStore, ChannelSpec
    from .etw import EtwApi
    from .wevtapi import WevtApi

__all__ = ["EventLogChannels", "KernelProcessEvents", "MergedSource"]


class _WindowsLive(Source):
    """What the Windows live sources share: the clock, event 255 in the stream's envelope."""

    live = True
    identity: ReportIdentity

    def now_ns(self) -> Optional[int]:
        """Wall clock, UTC ns."""
        return time.time_ns()

    def error_event(self, ident: str, description: str) -> Optional[Event]:
        """Event 255 in Windows Sysmon's envelope (``ID`` = ``ident``)."""
        return error_event(ident, description, identity=self.identity)

    def commit(self, event: Event) -> bool:
        """The outputs took ``event``: move the source's position (default: none to move)."""
        return False


@SOURCES.register
class EventLogChannels(_WindowsLive):
    """Windows Event Log channels, live: Sysmon, PowerShell 4103/4104, WMI-Activity,
    DNS-Client, Security 4624/4688/1102 by default (at-least-once, bookmarks, loss as event
    255; see :mod:`sysmonx.windows.eventlog`).

    Args:
        channels: subscriptions (default :data:`~sysmonx.windows.eventlog.DEFAULT_CHANNELS`).
        bookmarks: where committed positions persist (default: in memory).
        api: the Event Log API (default: wevtapi.dll through ctypes; tests pass a fake).
        idle: seconds without an event after which ``events()`` yields ``None``.
        options: more :class:`~sysmonx.windows.eventlog.EventLogSource` arguments.
    Raises:
        ValueError: no channel, or a channel listed twice.
    """

    name = "eventlog"
    summary = ("Windows Event Log channels (Sysmon, PowerShell, WMI, DNS-Client, Security), "
               "live, at least once with bookmarks")

    def __init__(self, channels: Optional[Sequence[ChannelSpec]] = None, *,
                 bookmarks: Optional[BookmarkStore] = None, api: Optional[WevtApi] = None,
                 idle: float = 0.5, identity: Optional[ReportIdentity] = None,
                 **options: Any) -> None:
        from .eventlog import DEFAULT_CHANNELS, EventLogSource
        self.identity = identity or ReportIdentity()
        self.inner = EventLogSource(list(channels or DEFAULT_CHANNELS), api=api,
                                    bookmarks=bookmarks, identity=self.identity, **options)
        self.idle = idle

    @classmethod
    def check_available(cls) -> None:
        """Raise :class:`~sysmonx.core.errors.SourceUnavailable` off Windows (wevtapi.dll)."""
        from .eventlog import EventLogSource
        from .eventlog import SourceUnavailable as Unavailable
        try:
            EventLogSource.check_available()
        except Unavailable as exc:
            raise SourceUnavailable(f"eventlog: {exc}") from None

    def open(self) -> None:
        """Start the reader thread.

        Raises:
            SourceUnavailable: wevtapi.dll cannot be loaded (not Windows).
        """
        from .eventlog import SourceUnavailable as Unavailable
        try:
            self.inner.start()
        except Unavailable as exc:
            raise SourceUnavailable(f"eventlog: {exc}") from None

    def events(self) -> Iterator[Optional[Event]]:
        """Events of every channel as they come; ``None`` when quiet for ``idle`` seconds."""
        return self.inner.events(idle=self.idle)

    def commit(self, event: Event) -> bool:
        """Move the event's channel bookmark to it (see
        :meth:`~sysmonx.windows.eventlog.EventLogSource.commit`)."""
        return self.inner.commit(event)

    def stop(self) -> None:
        """Ask the reader to stop (thread- and signal-safe)."""
        self.inner.stop()

    def close(self) -> None:
        """Stop the reader, close every handle, write the bookmarks."""
        self.inner.close()

    @property
    def stats(self) -> dict[str, int]:
        """The reader's counters (delivered, duplicates, losses, commits ...)."""
        return dict(self.inner.stats)


@SOURCES.register
class KernelProcessEvents(_WindowsLive):
    """Process start/stop from ETW (Microsoft-Windows-Kernel-Process), for hosts without Sysmon;
    the ``kernel-process-sysmon`` stage turns them into Sysmon events 1 and 5.

    Args:
        api: the ETW API (default advapi32 through ctypes; tests pass a fake).
        idle: seconds without an event after which ``events()`` yields ``None``.
        options: more :class:`~sysmonx.windows.etw_process.KernelProcessSource` arguments
            (``session``, ``queue_size``, ``poll``, ``computer``).
    """

    name = "etw-kernel-process"
    summary = "process start/stop from the Microsoft-Windows-Kernel-Process ETW provider, live"

    def __init__(self, *, api: Optional[EtwApi] = None, idle: float = 0.5,
                 identity: Optional[ReportIdentity] = None, **options: Any) -> None:
        from .etw_process import KernelProcessSource
        self.identity = identity or ReportIdentity()
        self.inner = KernelProcessSource(api=api, identity=self.identity, **options)
        self.idle = idle

    @classmethod
    def check_available(cls) -> None:
        """Raise :class:`~sysmonx.core.errors.SourceUnavailable` off Windows (advapi32)."""
        from .etw_process import EtwUnavailable, KernelProcessSource
        try:
            KernelProcessSource.check_available()
        except EtwUnavailable as exc:
            raise SourceUnavailable(f"etw-kernel-process: {exc}") from None

    def open(self) -> None:
        """Start the ETW session and its ``ProcessTrace`` thread.

        Raises:
            SourceUnavailable: not Windows, not elevated, or the session failed.
        """
        from .etw_process import EtwUnavailable
        try:
            self.inner.start()
        except EtwUnavailable as exc:
            raise SourceUnavailable(f"etw-kernel-process: {exc}") from None

    def events(self) -> Iterator[Optional[Event]]:
        """Kernel-Process events 1/2 and loss reports (event 255)."""
        return self.inner.events(idle=self.idle)

    def stop(self) -> None:
        """Close the trace (thread- and signal-safe)."""
        self.inner.stop()

    def close(self) -> None:
        """Stop the session (an ETW session outlives its process otherwise)."""
        self.inner.close()

    @property
    def stats(self) -> dict[str, int]:
        """The consumer's counters (delivered, decode errors, queue drops, losses)."""
        return dict(self.inner.stats)


_END = object()


@SOURCES.register
class MergedSource(_WindowsLive):
    """Several live sources as one: a forwarding thread per source into one bounded queue.

    Args:
        sources: the inner live sources (each yields ``None`` when quiet).
        queue_size: items waiting for the loop; a forwarding thread waits when it is full (its
            source then waits too: the Event Log keeps its records, the ETW consumer counts what
            its own queue drops).
        idle: seconds without an item after which ``events()`` yields ``None``.
    Raises:
        ValueError: no source.
    """

    name = "windows"
    summary = "the Windows live sources merged (eventlog and etw-kernel-process)"

    def __init__(self, sources: Sequence[Source], *, queue_size: int = 4096, idle: float = 0.5,
                 identity: Optional[ReportIdentity] = None) -> None:
        if not sources:
            raise ValueError("no source to merge")
        self.sources = list(sources)
        self.identity = identity or ReportIdentity()
        self.idle = idle
        self._queue: queue.Queue[Any] = queue.Queue(max(1, queue_size))
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.opened: list[Source] = []

    def open(self) -> None:
        """Open every source (those that cannot run here are closed again and the error
        raised: a run asks for the sources it can use).

        Raises:
            SourceUnavailable: a source cannot start.
        """
        try:
            for s in self.sources:
                s.on_error = self.on_error
                s.open()
                self.opened.append(s)
        except BaseException:
            for s in self.opened:
                s.close()
            self.opened = []
            raise
        for s in self.opened:
            t = threading.Thread(target=self._forward, args=(s,), daemon=True,
                                 name=f"sysmonx-merge-{s.name}")
            t.start()
            self._threads.append(t)

    def _forward(self, source: Source) -> None:
        try:
            for item in source.events():
                if item is None:
                    continue
                while True:
                    try:
                        self._queue.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        if self._stop.is_set():
                            return
                if self._stop.is_set() and self._queue.full():
                    return
        except Exception as exc:  # noqa: BLE001 - a source crash is reported, never silent
            self._put_last(error_event(source.name, f"source stopped: {exc!r}",
                                       identity=self.identity))
        finally:
            self._put_last(_END)

    def _put_last(self, item: Any) -> None:
        """Queue ``item``; after a stop, give up after 5 s (nobody reads the queue any more)."""
        deadline: Optional[float] = None
        while True:
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                if self._stop.is_set():
                    deadline = deadline or time.monotonic() + 5.0
                    if time.monotonic() > deadline:
                        return

    def events(self) -> Iterator[Optional[Event]]:
        """Items of every source in arrival order; ``None`` when quiet for ``idle`` seconds;
        ends when every source has ended."""
        running = len(self._threads)
        while running:
            try:
                item = self._queue.get(timeout=self.idle)
            except queue.Empty:
                yield None
                continue
            if item is _END:
                running -= 1
                continue
            yield item

    def commit(self, event: Event) -> bool:
        """Hand the commit to the source that produced ``event`` (the one that accepts it)."""
        for s in self.opened:
            commit = getattr(s, "commit", None)
            if commit is not None and commit(event):
                return True
        return False

    def stop(self) -> None:
        """Stop every source (thread- and signal-safe)."""
        self._stop.set()
        for s in self.sources:
            s.stop()

    def close(self) -> None:
        """Stop and close every source, wait for the forwarding threads."""
        self.stop()
        for s in self.opened:
            s.close()
        for t in self._threads:
            t.join(5.0)
