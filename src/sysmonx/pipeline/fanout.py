"""Delivery to the sinks: a fan-out by item kind, each sink in a slot that counts what it sent,
what failed and what was dropped, and that applies the run's failure policy.

Two policies (chosen by the pipeline, not by the sink):

* ``fatal`` (replay): a sink that raises stops the run with one
  :class:`~sysmonx.core.errors.SinkError` naming the output and the reason (``replay -o
  /dev/full`` exits 1 with one line); nothing is dropped: a ``slow`` sink sits behind a bounded
  queue that blocks when full.
* ``count`` (live): a failing sink is counted and the run goes on; every sink sits behind its own
  bounded queue and thread, and when a queue is full the item is dropped and counted, so a slow or
  stuck output never stalls collection (falco's output queue). Undelivered counts are reported
  as event 255 by the pipeline (:meth:`FanOut.take_undelivered`) and in the summary.

A reader that went away (``| head``) raises :class:`~sysmonx.core.errors.OutputClosed` under both
policies: the run stops quietly.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Optional, Sequence

from ..core.errors import OutputClosed, SinkError
from ..interfaces import SinkStats

__all__ = ["SinkSlot", "QueuedSlot", "FanOut", "CallbackSink", "describe_failure"]

_DEFAULT_ACCEPTS = frozenset({"event"})


def describe_failure(exc: BaseException) -> str:
    """A short reason for an output failure (``No space left on device``)."""
    if isinstance(exc, SinkError):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class SinkSlot:
    """One sink with its counters and failure policy (delivery in the caller's thread).

    Args:
        sink: a :class:`~sysmonx.interfaces.Sink`, or any object with ``write(item)`` (and
            optionally ``flush``, ``close``, ``accepts``, ``name``, ``target``).
        policy: ``fatal`` or ``count`` (module docstring).
    Attributes:
        label: ``name -> target`` for messages.
        last_error: the reason of the latest failure, or ``None``.
    """

    def __init__(self, sink: Any, policy: str = "fatal") -> None:
        if policy not in ("fatal", "count"):
            raise ValueError(f"policy must be 'fatal' or 'count', not {policy!r}")
        self.sink = sink
        self.policy = policy
        self.accepts: frozenset[str] = getattr(sink, "accepts", _DEFAULT_ACCEPTS)
        name = getattr(sink, "name", "") or type(sink).__name__
        target = getattr(sink, "target", "")
        self.label = f"{name} -> {target}" if target else name
        self.target = target or name
        self._self_counting = bool(getattr(sink, "counts_itself", False))
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.reported = 0
        self.last_error: Optional[str] = None
        self._write = sink.write

    @property
    def stats(self) -> SinkStats:
        """Delivery counters (the sink's own for a sink that counts itself, plus what the slot
        saw fail or dropped)."""
        if self._self_counting:
            own = self.sink.stats
            return SinkStats(own.sent, own.failed + self.failed, self.dropped)
        return SinkStats(self.sent, self.failed, self.dropped)

    def write(self, item: Any) -> None:
        """Deliver ``item``.

        Raises:
            SinkError: the sink failed and the policy is ``fatal``.
            OutputClosed: the output's reader went away.
        """
        try:
            self._write(item)
        except Exception as exc:  # noqa: BLE001 - any sink failure is counted, never lost
            self.failure(exc)
        else:
            self.sent += 1

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
        self._fail(exc)

    def write_uncounted(self, item: Any) -> None:
        """Deliver a report about this sink's own losses; neither its delivery nor its failure
        is counted (the loss it reports already is)."""
        try:
            self._write(item)
        except Exception:  # noqa: BLE001 - the loss it reports is already counted
            return

    def _fail(self, exc: BaseException) -> None:
        self.failed += 1
        self.last_error = describe_failure(exc)
        if self.policy == "fatal":
            raise SinkError(f"cannot write {self.target}: {self.last_error}") from exc

    def flush(self) -> None:
        """Flush the sink (a failure follows the policy)."""
        flush = getattr(self.sink, "flush", None)
        if flush is None:
            return
        try:
            flush()
        except BrokenPipeError as exc:
            raise OutputClosed(f"{self.target}: reader went away") from exc
        except Exception as exc:  # noqa: BLE001 - counted like a failed write
            self._fail(exc)

    def close(self) -> None:
        """Close the sink; buffered output that cannot be written counts as one failure."""
        close = getattr(self.sink, "close", None)
        if close is None:
            return
        try:
            close()
        except BrokenPipeError as exc:
            raise OutputClosed(f"{self.target}: reader went away") from exc
        except Exception as exc:  # noqa: BLE001 - counted like a failed write
            self._fail(exc)

    def start(self) -> None:
        """Nothing to start for a direct slot."""


_STOP = object()


class QueuedSlot(SinkSlot):
    """A sink behind a bounded queue and its own thread.

    Args:
        sink, policy: as :class:`SinkSlot`.
        maxsize: queue bound (items).
        when_full: ``drop`` (count and drop the item) or ``block`` (wait: nothing is lost).
    """

    def __init__(self, sink: Any, policy: str = "count", maxsize: int = 8192,
                 when_full: str = "drop") -> None:
        super().__init__(sink, policy)
        if when_full not in ("drop", "block"):
            raise ValueError(f"when_full must be 'drop' or 'block', not {when_full!r}")
        self.block = when_full == "block"
        self.queue: queue.Queue[Any] = queue.Queue(maxsize)
        self._thread: Optional[threading.Thread] = None
        self._fatal: Optional[BaseException] = None
        self._closed = False
        #: seconds :meth:`close` waits for a stuck sink under the ``drop`` mode.
        self.close_timeout = 10.0

    def start(self) -> None:
        """Start the delivery thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"sysmonx-sink-{self.label}",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        get, q = self.queue.get, self.queue
        while True:
            item = get()
            if item is _STOP:
                q.task_done()
                return
            try:
                if self._fatal is None:
                    if type(item) is _Uncounted:
                        super().write_uncounted(item.item)
                    else:
                        super().write(item)
                    if q.empty():
                        super().flush()
                else:
                    self.failed += 1  # after a fatal failure nothing more reaches the sink
            except BaseException as exc:  # noqa: BLE001 - handed to the loop's thread
                self._fatal = exc
            finally:
                q.task_done()

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
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            if not self.block:
                self.dropped += 1
                self.last_error = "queue full (output too slow)"
                return
            while True:
                try:
                    self.queue.put(item, timeout=0.5)
                    return
                except queue.Full:
                    if self._thread is None or not self._thread.is_alive() \
                            or self._fatal is not None:
                        self._raise_pending()
                        self.dropped += 1
                        return

    def write_uncounted(self, item: Any) -> None:
        """Queue a report about this sink's own losses (dropped silently if the queue is
        full: the loss it reports is already counted)."""
        try:
            self.queue.put_nowait(_Uncounted(item))
        except queue.Full:
            pass

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
                    if item is not _STOP and type(item) is not _Uncounted:
                        lost += 1
                self.dropped += lost
                self.last_error = f"output stuck; {lost} queued events not delivered at close"
                return
        try:
            self._raise_pending()
        finally:
            super().close()


class _Uncounted:
    __slots__ = ("item",)

    def __init__(self, item: Any) -> None:
        self.item = item


class FanOut:
    """Every sink of a run, each item delivered to the sinks that accept its kind.

    Args:
        slots: the sinks' slots, in order.
    """

    def __init__(self, slots: Sequence[SinkSlot]) -> None:
        self.slots = list(slots)
        self._by_kind: dict[str, list[SinkSlot]] = {}
        for s in self.slots:
            for kind in s.accepts:
                self._by_kind.setdefault(kind, []).append(s)
        self._reports: dict[int, SinkSlot] = {}
        #: receives error items no sink takes (set by the pipeline).
        self.on_error: Optional[Any] = None

    @classmethod
    def build(cls, sinks: Sequence[Any], policy: str = "fatal",
              queue_size: int = 8192) -> FanOut:
        """Slots for ``sinks`` under a policy: ``fatal`` (direct delivery, ``slow`` sinks behind
        a blocking queue) or ``count`` (every sink behind a dropping queue)."""
        slots: list[SinkSlot] = []
        for s in sinks:
            if isinstance(s, SinkSlot):
                slots.append(s)
            elif policy == "count":
                slots.append(QueuedSlot(s, "count", queue_size, "drop"))
            elif getattr(s, "slow", False):
                slots.append(QueuedSlot(s, "fatal", queue_size, "block"))
            else:
                slots.append(SinkSlot(s, "fatal"))
        return cls(slots)

    def start(self) -> None:
        """Start the queued slots' threads."""
        for s in self.slots:
            s.start()

    def direct_event_writer(self) -> Optional[tuple[SinkSlot, Any]]:
        """``(slot, sink.write)`` when the run has one sink, written directly (no queue), that
        takes events only and keeps no counters of its own: the loop then calls the sink
        without the fan-out in between (the hot path of a replay) and accounts for each call
        on the slot (:meth:`SinkSlot.failure`, ``sent``). ``None`` otherwise."""
        if len(self.slots) != 1:
            return None
        s = self.slots[0]
        if type(s) is not SinkSlot or s.accepts != _DEFAULT_ACCEPTS or s._self_counting:
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
            if about is not None:
                for s in slots:
                    (s.write_uncounted if s is about else s.write)(item)
                return
        for s in slots:
            s.write(item)

    def mark_report(self, item: Any, about: SinkSlot) -> None:
        """``item`` reports ``about``'s losses: its own failure to deliver it is not counted."""
        self._reports[id(item)] = about

    def take_undelivered(self) -> list[tuple[SinkSlot, int]]:
        """``(slot, n)`` for every slot with ``n`` undelivered items not reported yet (and
        marks them reported)."""
        out = []
        for s in self.slots:
            n = s.stats.undelivered - s.reported
            if n > 0:
                s.reported += n
                out.append((s, n))
        return out

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
        """``label -> counters`` of every sink."""
        return {s.label: s.stats for s in self.slots}


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
