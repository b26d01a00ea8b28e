"""Live Windows Event Log channels as a source of :class:`~sysmonx.event.Event` objects.

One reader thread per source pulls every subscribed channel (pull model: ``EvtSubscribe`` with a
signal event and no callback, ``WaitForMultipleObjects``, ``EvtNext`` in batches), renders each
record as event XML and parses it with the same parser replay uses
(:func:`sysmonx.sources.xmlfile.parse_event`), so a live record and the same record read from a
recorded XML file give equal Events. The consumer iterates :meth:`EventLogSource.events` and
calls :meth:`EventLogSource.commit` once the sinks accepted an event; only then does the
channel's bookmark move; it is written to disk at most once a second (``persist_every``) and at
:meth:`EventLogSource.close` (a crash re-delivers at most that second's accepted events).

Delivery is at least once:

* Bookmarks (:class:`BookmarkStore`) hold, per channel, the last EventRecordID the consumer
  accepted; after a restart or a re-subscription the channel resumes right after it
  (``EvtSubscribeStartAfterBookmark | EvtSubscribeStrict``).
* Records delivered but not yet committed can come again after a re-subscription; they are
  dropped by channel + EventRecordID, and so are records at or below the committed position
  (after a resume at the oldest record), unless their TimeCreated is later than the committed
  record's: a cleared and renumbered log is delivered again rather than mistaken for repeats.
* ``ERROR_EVT_QUERY_RESULT_STALE`` / ``ERROR_EVT_QUERY_RESULT_INVALID_POSITION`` from ``EvtNext``
  (the log was cleared or rolled over under the result set; winerror.h: "release the query
  result object and reissue the query") close the subscription and subscribe again from the
  committed bookmark. ``RPC_S_INVALID_BOUND`` (a batch too large for one RPC) halves the batch
  and re-subscribes. ``ERROR_INVALID_OPERATION`` with no events is treated as "nothing now"
  (seen on healthy pull subscriptions by other collectors); it is counted.
* Loss is data. On every (re)subscription the bookmark is checked against ``EvtGetLogInfo``: if
  the oldest record still in the log is newer than the record after the bookmark, the log wrapped
  past it and ``oldest - bookmark - 1`` records were overwritten unread (of any event ID: an
  upper bound of what the query would have selected); if the log now ends before the bookmark,
  it was cleared or renumbered and an unknown number may be lost. Each becomes a
  :class:`~sysmonx.windows.report.Loss` and an event 255. Gaps between consecutive record IDs
  are not counted as loss: a filtered query skips records legitimately.

Nothing here imports a Windows module; the Win32 calls go through a
:class:`~sysmonx.windows.wevtapi.WevtApi` (default :class:`~sysmonx.windows.wevtapi.CtypesWevtApi`,
built on first use), so the whole loop runs on Linux against
:class:`sysmonx.windows.fakes.FakeWevtApi`.
"""

from __future__ import annotations

import json
import os
import queue
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence
from xml.sax.saxutils import quoteattr

from lxml import etree

from ..event import Event
from ..sources.xmlfile import parse_event
from .report import Loss, ReportIdentity, error_event, loss_event
from .wevtapi import (ERROR_EVT_QUERY_RESULT_INVALID_POSITION, ERROR_EVT_QUERY_RESULT_STALE,
                      EvtSubscribeStartAfterBookmark, EvtSubscribeStartAtOldestRecord,
                      EvtSubscribeStrict, EvtSubscribeToFutureEvents, LogInfo, WevtApi)
from .win32 import (ERROR_INVALID_OPERATION, ERROR_NOT_FOUND, RPC_S_INVALID_BOUND, Win32Error,
                    Win32Unavailable)

__all__ = ["ChannelSpec", "Position", "BookmarkStore", "BookmarkError", "EventLogSource",
           "SourceUnavailable", "bookmark_xml", "DEFAULT_CHANNELS"]

#: Channels the Windows backend reads by default (issue scope): Sysmon, PowerShell script blocks
#: and pipeline details, WMI activity, DNS client, and the Security events SysmonX uses.
DEFAULT_CHANNELS: tuple = ()  # filled below, after ChannelSpec

_END = object()


class SourceUnavailable(RuntimeError):
    """The source cannot run here; ``str()`` is the reason (not Windows, wevtapi missing)."""


class BookmarkError(ValueError):
    """A bookmark file that cannot be read (what and where are in the message)."""


@dataclass(frozen=True)
class ChannelSpec:
    """One subscription.

    Attributes:
        channel: channel path, e.g. ``Microsoft-Windows-Sysmon/Operational``.
        query: XPath query over the channel (``*`` for every record), e.g.
            ``*[System[(EventID=4103 or EventID=4104)]]``.
        start: where to begin without a bookmark: ``oldest`` (every record still in the log) or
            ``future`` (only records written after the subscription).
    """

    channel: str
    query: str = "*"
    start: str = "oldest"

    def __post_init__(self) -> None:
        if self.start not in ("oldest", "future"):
            raise ValueError(f"start must be 'oldest' or 'future', not {self.start!r}")
        if not self.channel:
            raise ValueError("empty channel name")

    @property
    def key(self) -> str:
        """``eventlog:<channel>``: the ``Event.origin[0]`` and loss ``source`` of this channel."""
        return f"eventlog:{self.channel}"


DEFAULT_CHANNELS = (
    ChannelSpec("Microsoft-Windows-Sysmon/Operational"),
    ChannelSpec("Microsoft-Windows-PowerShell/Operational",
                "*[System[(EventID=4103 or EventID=4104)]]"),
    ChannelSpec("Microsoft-Windows-WMI-Activity/Operational"),
    ChannelSpec("Microsoft-Windows-DNS-Client/Operational"),
    ChannelSpec("Security", "*[System[(EventID=4624 or EventID=4688 or EventID=1102)]]"),
)


@dataclass(frozen=True)
class Position:
    """A channel position: the last record the consumer accepted.

    Attributes:
        record_id: its EventRecordID.
        time_created: its canonical ``TimeCreated`` (tells a repeat from a renumbered log).
    """

    record_id: int
    time_created: str = ""


def bookmark_xml(channel: str, record_id: int) -> str:
    """The bookmark XML ``EvtCreateBookmark`` accepts for a channel position (the shape
    ``EvtRender(EvtRenderBookmark)`` produces):
    ``<BookmarkList><Bookmark Channel='...' RecordId='N' IsCurrent='true'/></BookmarkList>``
    (the channel attribute-escaped)."""
    return (f"<BookmarkList><Bookmark Channel={quoteattr(channel)} RecordId='{int(record_id)}' "
            "IsCurrent='true'/></BookmarkList>")


class BookmarkStore:
    """Channel positions, persisted to a JSON file each time they change.

    File shape: ``{"version": 1, "channels": {"<channel>": {"record_id": N,
    "time_created": "..."}}}``, written to a temporary file in the same folder, flushed and
    ``os.replace``-d over the old one, so a crash leaves the old or the new file, never half.

    Args:
        path: the file, or ``None`` to keep positions in memory only.
    Raises:
        BookmarkError: the file exists but is not a bookmark file (path in the message).
    """

    VERSION = 1

    def __init__(self, path: Optional[str] = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._positions: dict[str, Position] = {}
        self._dirty = False
        self.writes = 0
        if path and os.path.exists(path):
            self._positions = self._load(path)

    @staticmethod
    def _load(path: str) -> dict:
        try:
            with open(path, "rb") as f:
                doc = json.loads(f.read(1 << 20))
            channels = doc["channels"]
            if doc.get("version") != BookmarkStore.VERSION or not isinstance(channels, dict):
                raise ValueError("unknown version")
            return {str(ch): Position(int(v["record_id"]), str(v.get("time_created", "")))
                    for ch, v in channels.items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BookmarkError(f"{path}: not a SysmonX bookmark file ({exc})") from None

    def get(self, channel: str) -> Optional[Position]:
        """The committed position of ``channel``, or ``None``."""
        with self._lock:
            return self._positions.get(channel)

    def set(self, channel: str, position: Optional[Position], persist: bool = True) -> None:
        """Record (or forget, with ``None``) a channel's position; write the file now unless
        ``persist`` is False (then :meth:`save` writes it later)."""
        with self._lock:
            if position is None:
                self._positions.pop(channel, None)
            else:
                self._positions[channel] = position
            self._dirty = True
            if persist:
                self._save()

    def save(self) -> None:
        """Write the file if a position changed since the last write."""
        with self._lock:
            if self._dirty:
                self._save()

    def _save(self) -> None:
        self._dirty = False
        self.writes += 1
        if not self.path:
            return
        doc = {"version": self.VERSION, "channels": {
            ch: {"record_id": p.record_id, "time_created": p.time_created}
            for ch, p in sorted(self._positions.items())}}
        folder = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(prefix=".bookmarks-", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


class _Sub:
    """State of one channel subscription (reader thread only, except ``pending``)."""

    def __init__(self, spec: ChannelSpec) -> None:
        self.spec = spec
        self.handle: Any = None
        self.signal: Any = None
        # Delivered, not yet committed: record_id -> time_created, in delivery order.
        self.pending: "OrderedDict[int, str]" = OrderedDict()
        self.floor: Optional[Position] = None  # committed position used for dedup
        self.retry_at: Optional[float] = None   # monotonic time of the next subscribe attempt


class EventLogSource:
    """Windows Event Log channels, live (see the module docstring for the guarantees).

    Args:
        channels: what to subscribe to.
        api: the Event Log API (default: :class:`~sysmonx.windows.wevtapi.CtypesWevtApi`,
            created when the reader starts; raises :class:`SourceUnavailable` off Windows).
        bookmarks: where committed positions live (default: in memory).
        batch_size: events per ``EvtNext`` call (halved on ``RPC_S_INVALID_BOUND``, at least 1).
        queue_size: events parsed but not yet taken by the consumer; when full the reader waits
            (the Event Log itself holds the backlog: nothing is dropped here).
        wait_ms: longest wait for a signal before polling the channels anyway, ms.
        max_pending: delivered-but-uncommitted records remembered per channel for dedup; the
            reader waits for commits beyond it.
        retry_ms: how long to wait before subscribing again to a channel that failed.
        persist_every: seconds between bookmark file writes (each write is flushed to disk);
            commits in between update the position in memory and the next write, or
            :meth:`flush_bookmarks` / :meth:`close`, persists it. 0 writes on every commit.
        identity: System header of the events 255 this source writes.
        clock: ns since the Unix epoch (tests pass a fixed clock).

    Attributes:
        stats: counters: ``delivered``, ``duplicates``, ``render_errors``, ``parse_errors``,
            ``stale``, ``resubscribed``, ``invalid_operation``, ``batch_shrinks``,
            ``losses``, ``strict_bookmark_misses``, ``commits``, ``ignored_commits``,
            ``errors``, ``renumbered``
            (records numbered at or below the committed one but written after it: delivered).
        losses: every :class:`~sysmonx.windows.report.Loss` reported, in order.
    """

    name = "eventlog"

    def __init__(self, channels: Sequence[ChannelSpec], *, api: Optional[WevtApi] = None,
                 bookmarks: Optional[BookmarkStore] = None, batch_size: int = 64,
                 queue_size: int = 1024, wait_ms: int = 1000, max_pending: int = 65536,
                 retry_ms: int = 30000, persist_every: float = 1.0,
                 identity: Optional[ReportIdentity] = None,
                 clock: Callable[[], int] = time.time_ns) -> None:
        if not channels:
            raise ValueError("no channel to subscribe to")
        keys = [c.channel.lower() for c in channels]
        if len(set(keys)) != len(keys):
            raise ValueError("a channel is listed twice")
        self.channels = list(channels)
        self._api = api
        self.bookmarks = bookmarks or BookmarkStore()
        self.batch_size = max(1, int(batch_size))
        self.wait_ms = wait_ms
        self.max_pending = max_pending
        self.retry_ms = retry_ms
        self.persist_every = persist_every
        self._last_persist = float("-inf")  # the first commit is written at once
        self.identity = identity or ReportIdentity()
        self.clock = clock
        self._queue: "queue.Queue" = queue.Queue(maxsize=max(1, queue_size))
        self._subs = {c.key: _Sub(c) for c in self.channels}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._stop_signal: Any = None
        self._commit_lock = threading.Condition()
        self.stats = {k: 0 for k in (
            "delivered", "duplicates", "render_errors", "parse_errors", "stale", "resubscribed",
            "invalid_operation", "batch_shrinks", "losses", "strict_bookmark_misses",
            "commits", "errors", "renumbered", "ignored_commits")}
        self.losses: list[Loss] = []

    # ---- the Source interface --------------------------------------------------------------

    @classmethod
    def check_available(cls) -> None:
        """Raise :class:`SourceUnavailable` with the reason when wevtapi cannot be used here."""
        try:
            from .wevtapi import CtypesWevtApi
            CtypesWevtApi()
        except (Win32Unavailable, AttributeError) as exc:
            raise SourceUnavailable(str(exc)) from None

    def start(self) -> None:
        """Start the reader thread (once; :meth:`events` calls it)."""
        if self._thread is not None:
            return
        if self._api is None:
            try:
                from .wevtapi import CtypesWevtApi
                self._api = CtypesWevtApi()
            except Win32Unavailable as exc:
                raise SourceUnavailable(str(exc)) from None
        self._thread = threading.Thread(target=self._run, name="sysmonx-eventlog", daemon=True)
        self._thread.start()

    def events(self, idle: Optional[float] = None) -> Iterator[Optional[Event]]:
        """Yield events (and events 255 for loss and errors) until :meth:`stop` is called or the
        reader ends. Each event's ``origin`` is ``("eventlog:<channel>", EventRecordID)``
        (``None`` for the events 255 this source writes); pass the event to :meth:`commit` once
        it is safely out.

        Args:
            idle: when set, yield ``None`` after this many seconds without an event, so the
                caller's loop can do time-driven work (ticks) on a quiet channel.
        """
        self.start()
        quiet_since = time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=0.2 if idle is None else min(0.2, idle))
            except queue.Empty:
                if self._thread is not None and not self._thread.is_alive() \
                        and self._queue.empty():
                    return
                if idle is not None and time.monotonic() - quiet_since >= idle:
                    quiet_since = time.monotonic()
                    yield None
                continue
            if item is _END:
                return
            quiet_since = time.monotonic()
            yield item

    def commit(self, event: Event) -> bool:
        """The sinks accepted ``event`` and every event of its channel delivered before it:
        move that channel's bookmark to it (written to disk per ``persist_every``).

        Returns:
            True when the bookmark moved; False for events this source did not deliver or no
            longer waits for (events 255 it wrote, other sources' events, an event committed
            twice, an event delivered before its log was found cleared), counted in
            ``stats["ignored_commits"]``.
        """
        origin = event.origin
        if not origin or origin[0] not in self._subs:
            return False
        sub = self._subs[origin[0]]
        rid = origin[1]
        with self._commit_lock:
            if rid not in sub.pending or sub.pending[rid] != event.time_created:
                self.stats["ignored_commits"] += 1
                return False
            while sub.pending:
                r, t = sub.pending.popitem(last=False)
                if r == rid:
                    pos = Position(r, t)
                    break
            self._commit_lock.notify_all()
            if sub.floor is not None and pos.record_id <= sub.floor.record_id:
                return False  # the bookmark already moved past it (a wrap was reported)
            sub.floor = pos
        now = time.monotonic()
        persist = now - self._last_persist >= self.persist_every
        if persist:
            self._last_persist = now
        self.bookmarks.set(sub.spec.channel, pos, persist)
        self.stats["commits"] += 1
        return True

    def flush_bookmarks(self) -> None:
        """Write committed positions not yet on disk (called by :meth:`close`)."""
        self.bookmarks.save()
        self._last_persist = time.monotonic()

    def stop(self) -> None:
        """Ask the reader to stop; :meth:`events` ends after the events already queued."""
        self._stop.set()
        api, sig = self._api, self._stop_signal
        if api is not None and sig is not None:
            try:
                api.set_signal(sig)
            except Win32Error:
                pass
        with self._commit_lock:
            self._commit_lock.notify_all()

    def close(self, timeout: float = 5.0) -> None:
        """:meth:`stop`, wait for the reader (it closes every handle it opened), write the
        committed positions."""
        self.stop()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
        self.flush_bookmarks()

    # ---- reader thread ------------------------------------------------------------------------

    def _emit(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _report(self, loss: Loss) -> None:
        self.losses.append(loss)
        self.stats["losses"] += 1
        self._emit(loss_event(loss, self.identity))

    def _error(self, sub: _Sub, message: str) -> None:
        self.stats["errors"] += 1
        self._emit(error_event(sub.spec.key, message, self.clock(), self.identity))

    def _run(self) -> None:
        api = self._api
        assert api is not None
        try:
            self._stop_signal = api.create_signal()
            api.reset_signal(self._stop_signal)
            for sub in self._subs.values():
                sub.signal = api.create_signal()
                sub.floor = self.bookmarks.get(sub.spec.channel)
                self._try_subscribe(sub)
            signals = [self._stop_signal] + [s.signal for s in self._subs.values()]
            while not self._stop.is_set():
                for sub in self._subs.values():
                    self._drain(sub)
                    if self._stop.is_set():
                        break
                if self._stop.is_set():
                    break
                api.wait(signals, self.wait_ms)
        except Exception as exc:  # noqa: BLE001 - a reader crash is reported, never silent
            self.stats["errors"] += 1
            try:
                self._queue.put(error_event("eventlog", f"reader stopped: {exc!r}", self.clock(),
                                            self.identity), timeout=5)
            except queue.Full:
                pass
        finally:
            for sub in self._subs.values():
                self._close_sub(sub)
                if sub.signal is not None:
                    api.close_signal(sub.signal)
                    sub.signal = None
            if self._stop_signal is not None:
                api.close_signal(self._stop_signal)
            try:
                self._queue.put_nowait(_END)
            except queue.Full:
                pass  # events() also ends once the reader is gone and the queue is empty

    def _close_sub(self, sub: _Sub) -> None:
        if sub.handle is not None:
            self._api.close(sub.handle)  # type: ignore[union-attr]
            sub.handle = None

    def _log_info(self, sub: _Sub) -> Optional[LogInfo]:
        try:
            return self._api.log_info(sub.spec.channel)  # type: ignore[union-attr]
        except Win32Error:
            return None  # no read access to the log's properties: no wrap check possible

    def _try_subscribe(self, sub: _Sub) -> bool:
        """:meth:`_subscribe`, reporting a failure (channel missing, access denied) as an event
        255 and scheduling a retry instead of stopping the other channels."""
        try:
            self._subscribe(sub)
            sub.retry_at = None
            return True
        except Win32Error as exc:
            self._close_sub(sub)
            self._error(sub, f"cannot subscribe to {sub.spec.channel!r}: {exc}; retrying every "
                             f"{self.retry_ms // 1000} s")
            sub.retry_at = time.monotonic() + self.retry_ms / 1000
            return False

    def _wrapped(self, sub: _Sub, last: int, oldest: int, now: int) -> None:
        """Report the records overwritten unread (after ``last``, the last record delivered)
        and move the bookmark to just before the oldest record, so the loss is reported once,
        even across restarts."""
        spec = sub.spec
        self._report(Loss(spec.key, oldest - last - 1,
                          f"the log wrapped past the last record read ({last}; oldest record "
                          f"now {oldest}); the count is of all records of the channel, an upper "
                          "bound for a filtered query", now, last + 1, oldest - 1))
        moved = Position(oldest - 1, "")
        self.bookmarks.set(spec.channel, moved)
        with self._commit_lock:
            sub.floor = moved

    def _check_log(self, sub: _Sub, pos: Position, info: Optional[LogInfo]) -> Optional[str]:
        """Compare the committed position with the log's oldest record and size; report what
        was lost. Returns ``"cleared"`` (the log is empty or ends before the position: it was
        cleared and renumbered), ``"wrapped"`` (records after the position were overwritten)
        or ``None`` (the position is still in the log, or the log cannot be read)."""
        if info is None:
            return None
        spec = sub.spec
        oldest, count = info.oldest_record or 0, info.record_count or 0
        newest = oldest + count - 1 if oldest and count else 0
        now = self.clock()
        if count == 0 or newest < pos.record_id:
            held = f"records {oldest}-{newest}" if count else "no record"
            self._report(Loss(spec.key, None,
                              f"the log was cleared after record {pos.record_id} (it now holds "
                              f"{held}); records written between the last read and the clear "
                              "are lost", now))
            self.bookmarks.set(spec.channel, Position(0, ""))  # from the start of the new log
            sub.floor = None
            with self._commit_lock:
                sub.pending.clear()
            return "cleared"
        with self._commit_lock:
            last = max([pos.record_id, *sub.pending])
        if oldest > last + 1:
            self._wrapped(sub, last, oldest, now)
            return "wrapped"
        return None

    def _check_renumbered(self, sub: _Sub, pos: Position) -> Optional[str]:
        """The log still holds a record numbered like the committed one; if its TimeCreated
        differs, the log was cleared and refilled past that number while SysmonX was away:
        report it and start over from the oldest record. ``None`` when it is the same record
        (or it cannot be read)."""
        if not pos.time_created:
            return None
        try:
            xml = self._api.query_record(sub.spec.channel, pos.record_id)  # type: ignore[union-attr]
        except Win32Error:
            return None
        if xml is None:
            return None
        try:
            same = parse_event(xml.encode("utf-8"), (sub.spec.key, pos.record_id))
        except (etree.XMLSyntaxError, ValueError):
            return None
        if same.time_created == pos.time_created:
            return None
        self._report(Loss(sub.spec.key, None,
                          f"the log was cleared and renumbered: record {pos.record_id} is now an "
                          f"event of {same.time_created or 'unknown time'}, not the one accepted "
                          f"({pos.time_created}); records written between the last read and the "
                          "clear are lost", self.clock()))
        self.bookmarks.set(sub.spec.channel, Position(0, ""))
        sub.floor = None
        with self._commit_lock:
            sub.pending.clear()
        return "renumbered"

    def _subscribe(self, sub: _Sub) -> None:
        """(Re)subscribe ``sub`` after its committed position, reporting what was lost.

        Raises:
            Win32Error: the subscription cannot be made (channel missing, access denied).
        """
        api = self._api
        assert api is not None
        self._close_sub(sub)
        spec = sub.spec
        pos = self.bookmarks.get(spec.channel)
        if pos is None or pos.record_id <= 0:
            flags = EvtSubscribeToFutureEvents if pos is None and spec.start == "future" \
                else EvtSubscribeStartAtOldestRecord
            sub.handle = api.subscribe(spec.channel, spec.query, None, flags, sub.signal)
            return
        info = self._log_info(sub)
        verdict = self._check_log(sub, pos, info) or self._check_renumbered(sub, pos)
        if verdict is not None:
            sub.handle = api.subscribe(spec.channel, spec.query, None,
                                       EvtSubscribeStartAtOldestRecord, sub.signal)
            return
        bookmark = api.create_bookmark(bookmark_xml(spec.channel, pos.record_id))
        try:
            try:
                sub.handle = api.subscribe(spec.channel, spec.query, bookmark,
                                           EvtSubscribeStartAfterBookmark | EvtSubscribeStrict,
                                           sub.signal)
                return
            except Win32Error as exc:
                if exc.winerror != ERROR_NOT_FOUND:
                    raise
            # The bookmarked record is not in the log. Decide loss from the log's numbers, not
            # from the failure alone (a strict bookmark can miss for other reasons). Never
            # resume without EvtSubscribeStrict: the API then starts after the record *closest*
            # to the bookmark, which skips that record. Start at the oldest record instead; the
            # committed position drops what was already accepted.
            self.stats["strict_bookmark_misses"] += 1
            info = self._log_info(sub)
            if info is None:
                self._report(Loss(spec.key, None, f"the bookmarked record {pos.record_id} is no "
                                  "longer in the log and the log's size cannot be read",
                                  self.clock()))
            else:
                self._check_log(sub, pos, info)
            sub.handle = api.subscribe(spec.channel, spec.query, None,
                                       EvtSubscribeStartAtOldestRecord, sub.signal)
        finally:
            api.close(bookmark)

    def _resubscribe(self, sub: _Sub) -> bool:
        self.stats["resubscribed"] += 1
        return self._try_subscribe(sub)

    def _drain(self, sub: _Sub) -> None:
        api = self._api
        assert api is not None
        if sub.handle is None:
            if sub.retry_at is None or time.monotonic() < sub.retry_at \
                    or not self._try_subscribe(sub):
                return
        api.reset_signal(sub.signal)  # before draining: a record arriving now sets it again
        resubscribes = 0
        while not self._stop.is_set() and sub.handle is not None:
            if not self._wait_pending_room(sub):
                return
            try:
                handles = api.next(sub.handle, self.batch_size, 1000)
            except Win32Error as exc:
                code = exc.winerror
                if code in (ERROR_EVT_QUERY_RESULT_STALE, ERROR_EVT_QUERY_RESULT_INVALID_POSITION):
                    self.stats["stale"] += 1
                    resubscribes += 1
                    if resubscribes > 5:  # stale again at once: let the outer loop wait first
                        self._error(sub, f"results stale {resubscribes} times in a row")
                        return
                    self._resubscribe(sub)
                    continue
                if code == RPC_S_INVALID_BOUND and self.batch_size > 1:
                    self.batch_size = max(1, self.batch_size // 2)
                    self.stats["batch_shrinks"] += 1
                    self._resubscribe(sub)
                    continue
                if code == ERROR_INVALID_OPERATION:
                    self.stats["invalid_operation"] += 1
                    return
                self._error(sub, f"EvtNext failed with error {code}; subscribing again")
                self._resubscribe(sub)
                return
            if not handles:
                return
            for h in handles:
                try:
                    xml = api.render_xml(h)
                except Win32Error as exc:
                    self.stats["render_errors"] += 1
                    self._report(Loss(sub.spec.key, 1, f"a record could not be rendered "
                                      f"(EvtRender error {exc.winerror})", self.clock()))
                    continue
                finally:
                    api.close(h)
                self._deliver(sub, xml)

    def _wait_pending_room(self, sub: _Sub) -> bool:
        with self._commit_lock:
            while len(sub.pending) >= self.max_pending and not self._stop.is_set():
                self._commit_lock.wait(0.2)
        return not self._stop.is_set()

    def _deliver(self, sub: _Sub, xml: str) -> None:
        try:
            event = parse_event(xml.encode("utf-8"), (sub.spec.key, None))
        except (etree.XMLSyntaxError, ValueError) as exc:
            self.stats["parse_errors"] += 1
            self._error(sub, f"a record is not valid event XML: {exc}")
            return
        rid = event.record_id
        if rid is None:
            self.stats["parse_errors"] += 1
            self._error(sub, "a record has no EventRecordID")
            return
        event.origin = (sub.spec.key, rid)
        with self._commit_lock:
            seen = sub.pending.get(rid)
            floor = sub.floor
            if seen is not None and seen == event.time_created:
                self.stats["duplicates"] += 1
                return
            if seen is None and floor is not None and rid <= floor.record_id:
                if not floor.time_created or event.time_created <= floor.time_created:
                    self.stats["duplicates"] += 1  # accepted before (resumed at the oldest)
                    return
                # Numbered at or below the accepted record but written after it: a cleared and
                # renumbered log, not a repeat. Delivered (at least once, never lost).
                self.stats["renumbered"] += 1
            sub.pending[rid] = event.time_created
        self.stats["delivered"] += 1
        self._emit(event)
