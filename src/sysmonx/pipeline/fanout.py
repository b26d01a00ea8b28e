"""Delivery to the sinks: a fan-out by item kind, each sink in a slot that counts what it sent,
what failed and what was dropped, and that applies the run's failure policy.

Two policies (chosen by the pipeline, not by the sink):

* ``fatal`` (replay): a sink that raises stops the run with one
  :class:`~sysmonx.core.errors.SinkError` naming the output and the reason (``replay -o
  /dev/full`` exits 1 with one line); nothing is dropped: a ``slow`` sink sits behind a bounded
  queue that blocks when full.
* ``count`` (live): a failing output never stops collection. Every sink sits behind its own
  bounded queue and thread, so a slow or stuck output never stalls the others (falco's output
  queue); when a queue is full the item is dropped. A *loss period* starts with the first event an
  output does not take (it raised, or its queue was full): the output is named on stderr once
  (``output -o FILE fails (No space left on device); collection continues ...``) and every event
  it does not take is counted. When it takes an event again, the period ends: stderr says so
  (``output -o FILE works again; 32 events were not written to it since ...``) and the pipeline
  writes an event 255 (``ID`` ``Output``: ``32 events could not be written to -o FILE from T1 to
  T2 UTC: No space left on device``) to every output, the recovered one included
  (:meth:`FanOut.take_reports`). At the end of a run an output still failing is reported the same
  way to the other outputs. The closing summary lists every output that did not take everything.
  That loss period is the output's *failure episode*: the guard writes one ``output_blocked``
  finding (201) for each one that starts (:attr:`SinkSlot.episodes`; docs/RESILIENCE.md).

  The sensor's own reports, events 201 (TamperFinding) and 255 (Error), that a failing output did
  not take are *held* for it (at most :data:`HOLD_MAX` per output; more are counted in
  :attr:`SinkSlot.held_overflow` and stay not written): each time the output is given items
  again it is first given the held ones, oldest first, so a syslog-only service still delivers
  the findings about its dead syslog socket, before the newer events. A held event written late
  is written, no longer counted as not written, and the loss period does not end while events
  are held for it (its event 255 ``Output`` then counts only what is really missing). A held
  event the output still refuses right after it took another event (too large for it: a
  datagram size limit) is given up after :data:`HOLD_STRIKES` such refusals and stays counted.

A reader that went away (``| head``) raises :class:`~sysmonx.core.errors.OutputClosed` under both
policies: the run stops quietly.

An output is named in messages by its ``label`` (``-o FILE``, ``stdout``, ``syslog /dev/log``),
else ``name -> target``, else ``name``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter, deque
from itertools import repeat
from operator import is_
from datetime import datetime, timezone
from typing import Any, Callable, Optional, Sequence

from ..core.errors import EventsSpooled, OutputClosed, SinkError
from ..event import Event
from ..interfaces import SinkStats
from ..sensor.threadname import set_native_name
from ..sinks.wholeline import PartialWrite

__all__ = ["SinkSlot", "QueuedSlot", "FanOut", "CallbackSink", "describe_failure",
           "LossReport"]

_DEFAULT_ACCEPTS = frozenset({"event"})
#: Events of the sensor's own reports held for an output that did not take them: 201
#: TamperFinding, 255 Error (module docstring).
HELD_IDS = frozenset({201, 255})
#: At most this many events held per output (beyond it: counted, not held).
HOLD_MAX = 256
#: A held event the output refused this many times right after taking another is given up.
HOLD_STRIKES = 3


def describe_failure(exc: BaseException) -> str:
    """One line for an output error: the ``strerror`` of an ``OSError`` (``No space left on
    device``), else the message."""
    if isinstance(exc, SinkError):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _total(counts: Counter[int]) -> int:
    """The sum of ``counts``, read from a copy (a delivery thread may add an EventID to it
    meanwhile; the copy of a dict is one step under the GIL)."""
    return sum(dict(counts).values())


def _events(n: int) -> str:
    """``1 event``, ``2 events``: the count of a 255 ``Description`` and a status line (no
    thousands separator: a SIEM reads the number)."""
    return f"{n} event" + ("" if n == 1 else "s")


def _utc(ns: int) -> str:
    """``YYYY-MM-DD HH:MM:SS.mmm`` (UTC), as Sysmon writes ``UtcTime``."""
    s, rest = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(s, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") + \
        f".{rest // 1_000_000:03d}"


class LossReport:
    """The end of one output's loss period: ``count`` events not taken from ``since_ns`` to
    ``until_ns`` (UTC ns), the last ``error``; ``recovered`` when the output took events again
    (else the run ended while it was failing)."""

    __slots__ = ("slot", "count", "since_ns", "until_ns", "error", "recovered")

    def __init__(self, slot: SinkSlot, count: int, since_ns: int, until_ns: int, error: str,
                 recovered: bool) -> None:
        self.slot = slot
        self.count = count
        self.since_ns = since_ns
        self.until_ns = until_ns
        self.error = error
        self.recovered = recovered

    @property
    def description(self) -> str:
        """The event 255's ``Description``."""
        return (f"{_events(self.count)} could not be written to {self.slot.label} from "
                f"{_utc(self.since_ns)} to {_utc(self.until_ns)} UTC: {self.error}")


class SinkSlot:
    """One sink with its counters and failure policy (delivery in the caller's thread).

    Args:
        sink: a :class:`~sysmonx.interfaces.Sink`, or any object with ``write(item)`` (and
            optionally ``flush``, ``close``, ``accepts``, ``name``, ``target``, ``label``).
        policy: ``fatal`` or ``count`` (module docstring).
        count_ids: also count the events taken per EventID (:attr:`taken`), for "written".
    Attributes:
        label: how the output is named in messages.
        last_error: the reason of the latest failure, or ``None``.
        taken: events taken per EventID (with ``count_ids``).
    """

    def __init__(self, sink: Any, policy: str = "fatal", count_ids: bool = False) -> None:
        if policy not in ("fatal", "count"):
            raise ValueError(f"policy must be 'fatal' or 'count', not {policy!r}")
        self.sink = sink
        self.policy = policy
        self.accepts: frozenset[str] = getattr(sink, "accepts", _DEFAULT_ACCEPTS)
        name = getattr(sink, "name", "") or type(sink).__name__
        target = getattr(sink, "target", "")
        self.label: str = getattr(sink, "label", None) or \
            (f"{name} -> {target}" if target else name)
        self.target = target or self.label
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.last_error: Optional[str] = None
        self.taken: Optional[Counter[int]] = Counter() if count_ids else None
        self.fanout: Optional[FanOut] = None
        #: failure episodes (loss periods) started so far (count policy)
        self.episodes = 0
        #: events 201/255 this output did not take, waiting for it: ``[item, how, strikes]``
        #: (``how``: ``failed`` or ``dropped``, the counter it is in); count policy only
        self.held: deque[list[Any]] = deque()
        #: such events not held because :data:`HOLD_MAX` were held already
        self.held_overflow = 0
        #: held events written late, and held events given up (:data:`HOLD_STRIKES`)
        self.held_written = 0
        self.held_given_up = 0
        # the current loss period (count policy)
        self._lost_since: Optional[int] = None
        self._lost_now = 0
        self._lost_error = ""
        self._lock = threading.Lock()
        self._write = sink.write
        #: events a network output left in its spool at close (not lost: the next run with
        #: the same spool sends them; count policy), with its message
        self.spooled = 0
        self.spooled_note = ""
        if getattr(sink, "on_status", False) is None:  # a sink that says things (network)
            sink.on_status = self._status

    def _status(self, message: str) -> None:
        if self.fanout is not None:
            self.fanout.status(message)

    @property
    def stats(self) -> SinkStats:
        """Delivery counters."""
        return SinkStats(self.sent, self.failed, self.dropped)

    def write(self, item: Any) -> None:
        """Deliver ``item``.

        Raises:
            SinkError: the sink failed and the policy is ``fatal``.
            OutputClosed: the output's reader went away.
        """
        if self.held and (self.fanout is None or not self.fanout.ending):
            # not once the loss periods are ended (end_losses): their reports took the held
            # events in as not written, and the summary must agree with them
            self.retry_held()
        try:
            self._write(item)
        except Exception as exc:  # noqa: BLE001 - any sink failure is counted, never lost
            self.failure(exc)
            self._hold(item, "failed")
        else:
            self._taken(item)

    def _taken(self, item: Any) -> None:
        self.sent += 1
        if self.taken is not None and item.__class__ is Event:
            self.taken[item.event_id] += 1
        if self._lost_since is not None:
            self._recovering()

    def _recovering(self) -> None:
        """The output took an item during a loss period: the held events go to it now, and the
        period ends unless some are still held."""
        if self.held and (self.fanout is None or not self.fanout.ending) and \
                not self.retry_held(after_success=True):
            return
        self._end_loss(recovered=True)

    def _hold(self, item: Any, how: str) -> None:
        """Keep ``item`` for this output when it is one of the sensor's reports (201, 255)
        that it did not take (count policy; ``how``: the counter it was added to)."""
        if self.policy != "count" or item.__class__ is not Event or \
                item.event_id not in HELD_IDS:
            return
        if len(self.held) >= HOLD_MAX:
            self.held_overflow += 1
            return
        self.held.append([item, how, 0])

    def retry_held(self, after_success: bool = False) -> bool:
        """Give the held events to the sink, oldest first, until one fails; each one written
        counts as sent and no longer as failed (or dropped), in the loss period too. With
        ``after_success`` (the output just took another item), a held event that fails gets a
        strike, and after :data:`HOLD_STRIKES` it is given up (it stays counted) and the next
        one is tried. Returns whether nothing is held any more.

        Raises:
            OutputClosed: the output's reader went away.
        """
        held = self.held
        while held:
            entry = held[0]
            item = entry[0]
            try:
                self._write(item)
            except (OutputClosed, BrokenPipeError) as exc:
                self.failure(exc)  # raises OutputClosed
            except Exception:  # noqa: BLE001 - still failing: it stays held
                if not after_success:
                    return False
                entry[2] += 1
                if entry[2] < HOLD_STRIKES:
                    return False
                held.popleft()
                self.held_given_up += 1
                continue
            held.popleft()
            with self._lock:
                if entry[1] == "dropped":
                    self.dropped -= 1
                else:
                    self.failed -= 1
                if self._lost_since is not None:
                    self._lost_now -= 1
            self.held_written += 1
            self.sent += 1
            if self.taken is not None:
                self.taken[item.event_id] += 1
        return True

    def failure(self, exc: Exception) -> None:
        """Account for ``exc`` raised by the sink's ``write``.

        Raises:
            OutputClosed: the output's reader went away (``BrokenPipeError``).
            SinkError: under the ``fatal`` policy.
        """
        if isinstance(exc, OutputClosed):
            raise exc
        if isinstance(exc, BrokenPipeError):
            raise OutputClosed(f"{self.target}: reader went away") from exc
        self.failed += 1
        self.last_error = describe_failure(exc)
        if self.policy == "fatal":
            raise SinkError(f"cannot write {self.target}: {self.last_error}") from exc
        self._lose(self.last_error)

    def _lose(self, error: str) -> None:
        """One more event not taken (count policy): a loss period starts or goes on."""
        with self._lock:
            self._lost_now += 1
            self._lost_error = error
            starts = self._lost_since is None
            if starts:
                self._lost_since = time.time_ns()
                self.episodes += 1
        if starts and self.fanout is not None and not self.fanout.ending:
            self.fanout.status(f"output {self.label} fails ({error}); collection continues and "
                               "every event it does not take is counted")

    def _end_loss(self, recovered: bool) -> Optional[LossReport]:
        with self._lock:
            if self._lost_since is None:
                return None
            report = LossReport(self, self._lost_now, self._lost_since, time.time_ns(),
                                self._lost_error, recovered)
            self._lost_since, self._lost_now = None, 0
        if self.fanout is not None:
            if recovered:
                was = "was" if report.count == 1 else "were"
                self.fanout.status(f"output {self.label} works again; {_events(report.count)} "
                                   f"{was} not written to it since {_utc(report.since_ns)} UTC "
                                   f"({report.error})")
            self.fanout.reports.append(report)
        return report

    def _call(self, method: str) -> None:
        """Call the sink's ``method`` (``flush`` or ``close``) when it has one: a reader that went
        away is :class:`OutputClosed`; any other failure counts as one failed write (policy)."""
        call = getattr(self.sink, method, None)
        if call is None:
            return
        try:
            call()
        except BrokenPipeError as exc:
            raise OutputClosed(f"{self.target}: reader went away") from exc
        except EventsSpooled as exc:
            if self.policy == "fatal":
                self.failure(exc)
            else:  # kept on disk for the next run: neither written nor lost
                self.spooled, self.spooled_note = exc.count, exc.message
        except Exception as exc:  # noqa: BLE001 - counted like a failed write
            self.failure(exc)

    def flush(self) -> None:
        """Flush the sink (a failure follows the policy)."""
        self._call("flush")

    def close(self) -> None:
        """Close the sink; buffered output that cannot be written counts as one failure."""
        self._call("close")

    def start(self) -> None:
        """Nothing to start for a direct slot."""

    def settle(self, timeout: float) -> None:
        """Nothing queued in a direct slot."""


_STOP = object()
#: Default :attr:`QueuedSlot.linger_s`, seconds.
LINGER_S = 0.01


class QueuedSlot(SinkSlot):
    """A sink behind a bounded queue and its own thread.

    Args:
        sink, policy, count_ids: as :class:`SinkSlot`.
        maxsize: queue bound (items).
        when_full: ``drop`` (count and drop the item) or ``block`` (wait: nothing is lost).
    """

    def __init__(self, sink: Any, policy: str = "count", maxsize: int = 8192,
                 when_full: str = "drop", count_ids: bool = False) -> None:
        super().__init__(sink, policy, count_ids)
        if when_full not in ("drop", "block"):
            raise ValueError(f"when_full must be 'drop' or 'block', not {when_full!r}")
        self.block = when_full == "block"
        self.queue: queue.Queue[Any] = queue.Queue(maxsize)
        self._thread: Optional[threading.Thread] = None
        self._fatal: Optional[BaseException] = None
        self._closed = False
        self._dropping = False
        #: seconds :meth:`close` waits for a stuck sink under the ``drop`` mode.
        self.close_timeout = 10.0
        #: after writing what was queued, the delivery thread sleeps this long before it
        #: waits on the queue (an item waits at most this much longer; 0: wait at once).
        self.linger_s = LINGER_S

    def start(self) -> None:
        """Start the delivery thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"sysmonx-sink-{self.label}",
                                            daemon=True)
            self._thread.start()

    def _take_all(self) -> list[Any]:
        """Everything queued now, in order, in one hold of the queue's lock (a ``get`` per item
        costs two lock operations and a condition check; a busy output takes hundreds at a
        time). The items stay unfinished (``unfinished_tasks``) until :meth:`_done`."""
        q = self.queue
        with q.mutex:
            items = list(q.queue)
            q.queue.clear()
            if items:
                q.not_full.notify_all()
        return items

    def _done(self, n: int) -> None:
        """``task_done`` for ``n`` items at once."""
        q = self.queue
        with q.all_tasks_done:
            left = q.unfinished_tasks - n
            if left <= 0:
                if left < 0:
                    raise ValueError("task_done() called too many times")
                q.all_tasks_done.notify_all()
            q.unfinished_tasks = left

    def _run(self) -> None:
        set_native_name("sysmonx-out")
        get, q = self.queue.get, self.queue
        linger = self.linger_s
        worked = False
        take_all, done, write, flush = self._take_all, self._done, super().write, super().flush
        #: the sink writes a list of items in one go (``write_many(items)``; see _write_batch)
        write_many = getattr(self.sink, "write_many", None)
        while True:
            items = take_all()
            if not items:
                if worked and linger:
                    # Just wrote: let the next items gather for a few ms instead of being
                    # woken by each put (a futex call and a GIL hand-over per event, the
                    # largest cost of a busy live output)
                    worked = False
                    time.sleep(linger)
                    continue
                items = [get()]  # idle: wait, woken by the next put
            worked = True
            try:
                if write_many is not None and len(items) > 1:
                    if any(map(is_, items, repeat(_STOP))):  # close: the items before it
                        n = next(i for i, x in enumerate(items) if x is _STOP)
                        if n > 1:
                            self._write_batch(write_many, items[:n])
                        elif n == 1:
                            self._write_one(write, items[0])
                        done(n + 1)
                        items = items[n + 1:]  # nothing is queued after the stop
                        return
                    self._write_batch(write_many, items)
                else:
                    for n, item in enumerate(items, 1):
                        if item is _STOP:
                            done(n)
                            items = items[n:]  # nothing is queued after the stop
                            return
                        self._write_one(write, item)
                try:
                    if self._fatal is None and q.empty():
                        flush()
                except BaseException as exc:  # noqa: BLE001 - handed to the loop's thread
                    self._fatal = exc
            finally:
                if items:
                    done(len(items))

    def _write_one(self, write: Callable[[Any], None], item: Any) -> None:
        """One item through the slot (counted sent or failed); a failure the policy makes fatal
        is kept for the loop's thread, and from then on items are counted failed unwritten."""
        try:
            if self._fatal is None:
                write(item)
            else:
                self.failed += 1  # after a fatal failure nothing more reaches it
        except BaseException as exc:  # noqa: BLE001 - handed to the loop's thread
            self._fatal = exc

    def _write_batch(self, write_many: Callable[[list[Any]], Any], items: list[Any]) -> None:
        """``items`` through the sink's ``write_many`` (one system call for all, normally),
        counted exactly as one :meth:`_write_one` per item would count them: the items written
        are sent; when the batch stops at an item (:class:`PartialWrite`), that item is a failed
        write and the ones after it are written one by one as before; when the sink could not
        take the batch at all (nothing written), every item goes one by one."""
        if self._fatal is not None:
            self.failed += len(items)
            return
        if self.held:
            try:
                self.retry_held()
            except BaseException as fatal:  # noqa: BLE001 - handed to the loop's thread
                self._fatal = fatal
                self.failed += len(items)
                return
        try:
            write_many(items)
        except PartialWrite as exc:
            k = exc.written
            if k:
                self._taken_many(items[:k])
            try:
                self.failure(exc.cause)  # type: ignore[arg-type]
            except BaseException as fatal:  # noqa: BLE001 - handed to the loop's thread
                self._fatal = fatal
            else:
                self._hold(items[k], "failed")
            write = super().write
            for item in items[k + 1:]:
                self._write_one(write, item)
        except Exception:  # noqa: BLE001 - not taken as a batch: one at a time, as before
            write = super().write
            for item in items:
                self._write_one(write, item)
        else:
            self._taken_many(items)

    def _taken_many(self, items: list[Any]) -> None:
        """:meth:`_taken` for items written in one go."""
        self.sent += len(items)
        taken = self.taken
        if taken is not None:
            # counted by Counter.update's compiled loop (0.5 -> 0.2 us per exec of a busy output)
            taken.update([item.event_id for item in items if item.__class__ is Event])
        if self._lost_since is not None:
            self._recovering()

    def _raise_pending(self) -> None:
        if self._fatal is not None:
            exc, self._fatal = self._fatal, None
            raise exc

    def write(self, item: Any) -> None:
        """Queue ``item`` (drop or wait when the queue is full).

        Raises:
            SinkError / OutputClosed: a failure the delivery thread met earlier (``fatal``
                policy, or a closed reader).
        """
        if self._fatal is not None:
            self._raise_pending()
        q = self.queue
        with q.mutex:  # put_nowait without its per-call overhead (one event per call)
            room = q.maxsize <= 0 or len(q.queue) < q.maxsize
            if room:
                q.queue.append(item)
                q.unfinished_tasks += 1
                # notify() only when the thread waits (its waiter list, where this Python has
                # one; notify() itself is the public fallback)
                if getattr(q.not_empty, "_waiters", True):
                    q.not_empty.notify()
        if room:
            if self._dropping:  # the queue takes events again: that loss period ends
                self._dropping = False
                if not self.held:  # else it ends when the delivery thread wrote them
                    self._end_loss(recovered=True)
            return
        if not self.block:
            with self._lock:
                self.dropped += 1
            self.last_error = "queue full: the output is too slow"
            self._dropping = True
            self._lose(self.last_error)
            self._hold(item, "dropped")
            return
        while True:
            try:
                q.put(item, timeout=0.5)
                return
            except queue.Full:
                if self._thread is None or not self._thread.is_alive() \
                        or self._fatal is not None:
                    self._raise_pending()
                    self.dropped += 1
                    return

    def settle(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the queue to be written out."""
        end = time.monotonic() + timeout
        while self.queue.unfinished_tasks and time.monotonic() < end:
            time.sleep(0.01)

    def flush(self) -> None:
        """Wait until everything queued was handed to the sink, then flush it."""
        if self._thread is not None and self._thread.is_alive():
            self.queue.join()
        self._raise_pending()
        super().flush()

    def close(self, timeout: Optional[float] = None) -> None:
        """Deliver what is queued, stop the thread, close the sink.

        Args:
            timeout: seconds to wait for a stuck sink (``None``: the slot's ``close_timeout``;
                forever under the ``block`` mode). After it, what is still queued is counted
                as dropped and the sink is left to its thread.
        """
        if self._closed:
            return
        self._closed = True
        if timeout is None:
            timeout = None if self.block else self.close_timeout
        thread = self._thread
        if thread is not None and thread.is_alive():
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                try:
                    self.queue.put(_STOP, timeout=0.1)
                    break
                except queue.Full:
                    if deadline is not None and time.monotonic() >= deadline:
                        break
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if thread.is_alive():  # stuck in the sink: what is still queued is lost
                lost = 0
                while True:
                    try:
                        item = self.queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not _STOP:
                        lost += 1
                self.dropped += lost
                self.last_error = f"output stuck; {lost} queued events not delivered at close"
                return
        try:
            self._raise_pending()
        finally:
            super().close()


class FanOut:
    """Every sink of a run, each item delivered to the sinks that accept its kind.

    Args:
        slots: the sinks' slots, in order.
    Attributes:
        reports: ends of loss periods (:class:`LossReport`) not yet written as events 255
            (:meth:`take_reports`); appended by delivery threads.
        on_status: receives the one-line messages of failing and recovering outputs.
        on_error: receives error items no sink takes (set by the pipeline).
    """

    def __init__(self, slots: Sequence[SinkSlot]) -> None:
        self.slots = list(slots)
        self._by_kind: dict[str, list[SinkSlot]] = {}
        for s in self.slots:
            s.fanout = self
            for kind in s.accepts:
                self._by_kind.setdefault(kind, []).append(s)
        self._reports: dict[int, SinkSlot] = {}
        self.reports: deque[LossReport] = deque()
        self.on_status: Optional[Callable[[str], None]] = None
        self.on_error: Optional[Any] = None
        self.ending = False  # after end_losses: failures are counted, no longer announced

    @classmethod
    def build(cls, sinks: Sequence[Any], policy: str = "fatal",
              queue_size: int = 8192) -> FanOut:
        """Slots for ``sinks`` under a policy: ``fatal`` (direct delivery, ``slow`` sinks behind
        a blocking queue) or ``count`` (every sink behind a dropping queue; events taken counted
        per EventID)."""
        slots: list[SinkSlot] = []
        for s in sinks:
            if isinstance(s, SinkSlot):
                slots.append(s)
            elif policy == "count":
                slots.append(QueuedSlot(s, "count", queue_size, "drop", count_ids=True))
            elif getattr(s, "slow", False):
                slots.append(QueuedSlot(s, "fatal", queue_size, "block"))
            else:
                slots.append(SinkSlot(s, "fatal"))
        return cls(slots)

    def status(self, message: str) -> None:
        """Say ``message`` (from any thread)."""
        if self.on_status is not None:
            self.on_status(message)

    def start(self) -> None:
        """Start the queued slots' threads."""
        for s in self.slots:
            s.start()

    def direct_event_writer(self) -> Optional[tuple[SinkSlot, Any]]:
        """``(slot, sink.write)`` when the run has one sink, written directly (no queue), that
        takes events only and counts nothing per EventID: the loop then calls the sink without
        the fan-out in between (the hot path of a replay) and accounts for each call on the slot
        (:meth:`SinkSlot.failure`, ``sent``). ``None`` otherwise."""
        if len(self.slots) != 1:
            return None
        s = self.slots[0]
        if type(s) is not SinkSlot or s.accepts != _DEFAULT_ACCEPTS or s.taken is not None:
            return None
        return s, s._write

    def accepts(self, kind: str) -> bool:
        """Whether some sink takes items of ``kind``."""
        return kind in self._by_kind

    def deliver(self, item: Any) -> None:
        """Hand ``item`` to every sink that accepts its kind.

        Raises:
            SinkError: a sink failed under the ``fatal`` policy.
            OutputClosed: an output's reader went away.
        """
        slots = self._by_kind.get(item.item_kind)
        if not slots:
            if item.item_kind == "error" and self.on_error is not None:
                self.on_error(item)  # a stage's warning or note: the run's error handler
            return
        if self._reports:
            about = self._reports.pop(id(item), None)
            if about is not None:  # a report of ``about``'s losses: for the other outputs
                for s in slots:
                    if s is not about:
                        s.write(item)
                return
        for s in slots:
            s.write(item)

    def mark_report(self, item: Any, about: SinkSlot) -> None:
        """``item`` reports the losses of ``about``, which is still failing: it goes to the
        other outputs only."""
        self._reports[id(item)] = about

    def take_reports(self) -> list[LossReport]:
        """The ends of loss periods since the last call."""
        out = []
        while self.reports:
            out.append(self.reports.popleft())
        return out

    def end_losses(self) -> list[LossReport]:
        """End the loss periods of the outputs still failing (the run is ending); returns
        their reports (also queued in :attr:`reports`). What fails after this (the closing
        event 4) is counted for the summary, not announced again."""
        self.ending = True
        out = []
        for s in self.slots:
            r = s._end_loss(recovered=False)
            if r is not None:
                out.append(r)
        return out

    def settle(self, timeout: float = 2.0) -> None:
        """Give the queued slots up to ``timeout`` seconds to write out what they hold."""
        end = time.monotonic() + timeout
        for s in self.slots:
            s.settle(max(0.0, end - time.monotonic()))

    def flush(self) -> None:
        """Flush every sink."""
        for s in self.slots:
            s.flush()

    def close(self) -> None:
        """Close every sink (all of them, even when one fails); then raise the first failure."""
        first: Optional[BaseException] = None
        for s in self.slots:
            try:
                s.close()
            except BaseException as exc:  # noqa: BLE001 - closed the others first
                first = first or exc
        if first is not None:
            raise first

    def stats(self) -> dict[str, SinkStats]:
        """``label -> counters`` of every sink (summed when two share a label)."""
        out: dict[str, SinkStats] = {}
        for s in self.slots:
            st = s.stats
            old = out.get(s.label)
            if old is not None:
                st = SinkStats(old.sent + st.sent, old.failed + st.failed,
                               old.dropped + st.dropped)
            out[s.label] = st
        return out

    def episodes(self) -> dict[str, tuple[int, str]]:
        """``label -> (failure episodes started so far, the latest error)`` of every output
        (episodes summed when two share a label): what the guard's ``output_blocked`` findings
        follow, one per episode."""
        out: dict[str, tuple[int, str]] = {}
        for s in self.slots:
            n, error = out.get(s.label, (0, ""))
            # the error of a slot that failed (a healthy one sharing the label has none)
            out[s.label] = (n + s.episodes, (s.last_error if s.episodes else "") or error)
        return out

    def held(self) -> dict[str, tuple[int, int, int, int]]:
        """``label -> (held now, written late, given up, not held: bound reached)`` of the
        outputs that held events 201/255 during the run."""
        return {s.label: (len(s.held), s.held_written, s.held_given_up, s.held_overflow)
                for s in self.slots
                if s.held or s.held_written or s.held_given_up or s.held_overflow}

    def spooled(self) -> dict[str, tuple[int, str]]:
        """``label -> (events left in its spool at close, the message)`` of the network
        outputs that closed with some (count policy)."""
        return {s.label: (s.spooled, s.spooled_note) for s in self.slots if s.spooled}

    def errors(self) -> dict[str, str]:
        """``label -> last error`` of every sink that failed or dropped."""
        return {s.label: s.last_error for s in self.slots if s.last_error}

    def written(self) -> Counter[int]:
        """Events per EventID taken by the events output that took the most events (counted
        with ``count_ids``): what the sensor wrote to some output. One output that fails does
        not make this 0 while another output took the events (a run with ``-o FILE -o
        /full/FILE`` wrote what the first holds); :meth:`written_by_output` gives each output's
        count and :meth:`stats` what each did not take."""
        best: Optional[Counter[int]] = None
        for s in self.slots:
            if s.taken is not None and "event" in s.accepts and \
                    (best is None or _total(s.taken) > _total(best)):
                best = s.taken
        if best is None:
            return Counter()
        return Counter({i: n for i, n in dict(best).items() if n})

    def written_by_output(self) -> dict[str, int]:
        """``label -> events taken`` of every events output counted with ``count_ids`` (summed
        when two share a label), in the order of the outputs."""
        out: dict[str, int] = {}
        for s in self.slots:
            if s.taken is not None and "event" in s.accepts:
                out[s.label] = out.get(s.label, 0) + _total(s.taken)
        return out

    def lost_everywhere(self) -> int:
        """Events not taken by any events output, as far as counts can tell: the fewest any
        events output did not take (exact with one output, and whenever the outputs' failures
        overlap; an upper bound when they failed on different events). 0 without such
        outputs."""
        counts = [s.stats.undelivered for s in self.slots
                  if s.taken is not None and "event" in s.accepts]
        return min(counts) if counts else 0


class CallbackSink:
    """A sink that hands each item to a Python function (embedding, tests).

    Args:
        fn: called with each item.
        accepts: the item kinds it takes (default alerts).
        name: for messages.
    """

    def __init__(self, fn: Any, accepts: frozenset[str] = frozenset({"alert"}),
                 name: str = "callback") -> None:
        self.write = fn
        self.accepts = accepts
        self.name = name
