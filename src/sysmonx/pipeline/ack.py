"""At-least-once delivery for sources with a durable position: commit an event only once every
output took it.

A live Windows Event Log channel keeps its records; SysmonX keeps a bookmark per channel
(:class:`~sysmonx.windows.eventlog.EventLogSource`) and resumes after it. The bookmark may move
past an event only when the event is *out*: dropped by a stage (the config filtered it out), or
written by every output that takes events. :class:`AckTracker` finds that moment on the one loop
without changing it:

* :class:`AckStart` (the first stage) registers each event that carries a source position
  (``Event.origin`` with a record id) in arrival order; when the next event arrives (or at the
  next tick, or at the end), the previous one has been through every stage: if it did not reach
  :class:`AckEnd` a stage dropped it, and it is done.
* :class:`AckEnd` (the last stage) notes that the event goes to the outputs and how many take it.
* :class:`AckedSink` wraps each events output: after the output's ``write`` returned (the live
  writers are unbuffered: the event was handed to the OS, the socket, the Event Log) it counts
  the event as taken by that output, in the output's own delivery thread.

Events are committed in arrival order (``commit(event)``, from whichever thread finished the
oldest one): the position never moves past an event an output still holds in its queue, so a
crash or a stop re-delivers every such event after the restart. An output that *failed* an event
(it raised) does not hold the position: the fan-out has counted that loss and reports it as event
255 ``Output`` (the live ``count`` policy: a broken output never stops collection); the event is
still committed once every other output has it. Outputs of a run with a tracker queue with
``when_full="block"``: nothing is dropped from a full queue (the Event Log holds the backlog and
the source waits).

Items without a position (events 255 and 220 SysmonX writes, ETW events, alerts) are not
tracked.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Optional

from ..event import Event
from ..interfaces import Emit, Stage

__all__ = ["AckTracker", "AckStart", "AckEnd", "AckedSink"]

_IN_STAGES = -1  # registered, still between the stages


class AckTracker:
    """Commit events in arrival order once every events output took them.

    Args:
        commit: called with each event whose turn has come (the source's ``commit``); from the
            loop's thread or an output's delivery thread; must be thread-safe.
        outputs: how many outputs take events (each wrapped in :class:`AckedSink`).

    Attributes:
        committed: events committed; ``failed_outputs``: writes that raised (committed anyway,
            the fan-out reported the loss); ``dropped_by_stages``: tracked events a stage
            dropped (committed at once).
    """

    def __init__(self, commit: Callable[[Event], Any], outputs: int) -> None:
        self.commit = commit
        self.outputs = outputs
        self._lock = threading.Lock()
        # id(event) -> [event, remaining]: remaining = _IN_STAGES, or outputs still to take it
        self._open: OrderedDict[int, list[Any]] = OrderedDict()
        self._current: Optional[list[Any]] = None
        self.committed = 0
        self.failed_outputs = 0
        self.dropped_by_stages = 0

    # -- the loop's side ------------------------------------------------------------------------

    def begin(self, event: Event) -> None:
        """A new positioned event enters the stages (the previous one is through them)."""
        self.settle()
        entry = [event, _IN_STAGES]
        with self._lock:
            self._open[id(event)] = entry
        self._current = entry

    def settle(self) -> None:
        """The event that entered last is through the stages: if no stage passed it to the
        outputs, it is done now."""
        entry, self._current = self._current, None
        if entry is not None and entry[1] == _IN_STAGES:
            self.dropped_by_stages += 1
            self._done(entry, 0)

    def to_outputs(self, event: Event) -> None:
        """``event`` passed the last stage: each of :attr:`outputs` will take it."""
        with self._lock:
            entry = self._open.get(id(event))
            if entry is None or entry[0] is not event or entry[1] != _IN_STAGES:
                return
            entry[1] = self.outputs
        if self._current is entry:
            self._current = None
        if self.outputs == 0:
            self._done(entry, 0)

    # -- the outputs' side ----------------------------------------------------------------------

    def taken(self, event: Any, failed: bool = False) -> None:
        """One output took ``event`` (or failed it: counted, the fan-out reports the loss)."""
        if failed:
            self.failed_outputs += 1
        with self._lock:
            entry = self._open.get(id(event))
            if entry is None or entry[0] is not event or entry[1] <= 0:
                return
            entry[1] -= 1
            if entry[1]:
                return
        self._release()

    @property
    def pending(self) -> int:
        """Tracked events not yet committed."""
        return len(self._open)

    def _done(self, entry: list[Any], remaining: int) -> None:
        with self._lock:
            entry[1] = remaining
        self._release()

    def _release(self) -> None:
        ready = []
        with self._lock:
            while self._open:
                first = next(iter(self._open.values()))
                if first[1] != 0:
                    break
                self._open.popitem(last=False)
                ready.append(first[0])
            # commit under the lock: commits reach the source in arrival order
            for ev in ready:
                self.commit(ev)
                self.committed += 1


class AckStart(Stage):
    """First stage of a run with an :class:`AckTracker`: registers positioned events."""

    name = "ack-start"
    summary = "at-least-once delivery: registers events with a source position (internal)"

    def __init__(self, tracker: AckTracker) -> None:
        self.tracker = tracker

    def process(self, item: Any, emit: Emit) -> bool:
        """Register ``item`` when it is an event with a record position; pass everything."""
        if item.__class__ is Event:
            origin = item.origin
            if origin and len(origin) > 1 and origin[1] is not None:
                self.tracker.begin(item)
                return True
        self.tracker.settle()
        return True

    def tick(self, now_ns: int, emit: Emit) -> None:
        """A quiet moment: the last event is through the stages."""
        self.tracker.settle()

    def finish(self, emit: Emit) -> None:
        """End of the stream."""
        self.tracker.settle()


class AckEnd(Stage):
    """Last stage of a run with an :class:`AckTracker`: the event goes to the outputs."""

    name = "ack-end"
    summary = "at-least-once delivery: marks events handed to the outputs (internal)"

    def __init__(self, tracker: AckTracker) -> None:
        self.tracker = tracker

    def process(self, item: Any, emit: Emit) -> bool:
        """Note that ``item`` goes to the outputs; pass it."""
        if item.__class__ is Event and item.origin:
            self.tracker.to_outputs(item)
        return True


class AckedSink:
    """An events output whose successful writes are reported to an :class:`AckTracker`.

    Args:
        sink: the output (a :class:`~sysmonx.interfaces.Sink`); its ``name``, ``target``,
            ``label``, ``accepts`` and ``counts_itself`` are those of the wrapper.
        tracker: told after each write.
    Raises:
        whatever ``sink.write`` raises (after telling the tracker the write failed).
    """

    def __init__(self, sink: Any, tracker: AckTracker) -> None:
        self.sink = sink
        self.tracker = tracker
        self.name = getattr(sink, "name", "") or type(sink).__name__
        self.target = getattr(sink, "target", "")
        self.label = getattr(sink, "label", "")
        self.accepts = getattr(sink, "accepts", frozenset({"event"}))

    def write(self, item: Any) -> None:
        """Write ``item`` to the output, then report it taken (or failed)."""
        try:
            self.sink.write(item)
        except BaseException:
            self.tracker.taken(item, failed=True)
            raise
        self.tracker.taken(item)

    def flush(self) -> None:
        """Flush the output."""
        flush = getattr(self.sink, "flush", None)
        if flush is not None:
            flush()

    def close(self) -> None:
        """Close the output."""
        close = getattr(self.sink, "close", None)
        if close is not None:
            close()
