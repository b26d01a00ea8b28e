"""Per-process event order for the live sensor: event 1 first, event 5 last.

Backends deliver at different speeds: the DNS backend emits a query when its answer arrives
(microseconds), kernel audit about 6 ms after the syscall, the proc connector an exit well before
audit delivers the exec that preceded it. Written in arrival order, a process's DnsQuery could come
before its ProcessCreate and its ProcessTerminate before its NetworkConnect, and a connect reported
late could be attributed to the image the process exec'd next.

:class:`OrderBuffer` restores each process's order in two steps:

1. **Observations** are held ``window_s`` (default 0.25 s) after they reach the sensor and leave
   in the order of their event time (``ts_ns``; ties: fork, exec, others, exit), so they are
   *assembled* (the process cache updated, fields filled) in the order they happened. Any
   observation that reaches the sensor within ``window_s`` of the others is put in its place.
2. **ProcessTerminate events** are held ``exit_hold_s`` (default 2.5 s: longer than the DNS
   backend's 2 s wait for an answer) after their observation arrived and are written after every
   other event of that process assembled by then, so late observations of the process (a DNS
   query answered after the process exited, a TCP connect whose source port arrived late) are
   written before its event 5.

The bound, documented for users: events are written about ``window_s`` after they happen (event 5
about ``exit_hold_s``); an observation that reaches the sensor later than that is written as it
comes (counted in :attr:`OrderBuffer.late`). An exec that arrives after its process's exit was
assembled (but while the exit is still held) still gives the exit its image and GUID (the live
source repairs the held event). Observations without a process (losses, backend
errors) are not held. Memory is bounded by ``max_held`` (the oldest held item
leaves early when it is reached, counted in :attr:`OrderBuffer.forced`).
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Any, Optional

from ..core import native
from . import observations as ob

__all__ = ["OrderBuffer"]

_RANK = {ob.ProcessFork: 0, ob.ProcessExec: 1, ob.ProcessExit: 3}
_UNHELD = frozenset({ob.Loss, ob.BackendError})  # exact types (none is subclassed)

#: The compiled loops of :meth:`OrderBuffer.push_many` and :meth:`OrderBuffer.ready`
#: (``sysmonx.sensor._ringbatch.order_push``/``order_ready``: the same heap entries pushed and
#: popped with heapq's functions, without a Python step per observation); ``None`` when the
#: extension is not built or ``SYSMONX_PURE_PYTHON`` is set (read once, at import). The Python
#: loops below define them (``tests/test_order_compiled.py`` compares the two).
_order_push: Any
_order_ready: Any
_order_push, _order_ready = native.compiled("sysmonx.sensor._ringbatch", "order_push",
                                            "order_ready")


class OrderBuffer:
    """Holds observations and exit events briefly; see the module docstring.

    Args:
        window_s: how long an observation is held after it arrives (seconds).
        exit_hold_s: how long a ProcessTerminate event is held after its observation arrived.
        max_held: bound on held observations plus held exit events.

    Use (one consumer thread; not thread-safe): :meth:`push` each observation with the
    monotonic time it was taken from the queue; :meth:`ready` returns the observations to
    assemble now; :meth:`hold_exit` takes a built event 5 back; :meth:`exits_ready` returns the
    held exits to write now; :meth:`next_due` says when to call again; :meth:`drain` and
    :meth:`drain_exits` empty everything at stop.
    """

    def __init__(self, window_s: float = 0.25, exit_hold_s: float = 2.5,
                 max_held: int = 200_000) -> None:
        self.window_s = max(0.0, float(window_s))
        self.exit_hold_s = max(self.window_s, float(exit_hold_s))
        self.max_held = max(1, int(max_held))
        self._heap: list = []  # (ts_ns, rank, seq, arrival, observation)
        self._seq = 0
        self._exits: deque = deque()  # (due, pid, event)
        self._exit_of: dict = {}  # pid -> its held exit event (the latest)
        self._last_ts = 0  # ts of the last observation released
        self.late = 0
        self.forced = 0

    def __len__(self) -> int:
        return len(self._heap) + len(self._exits)

    def push(self, o, now: float) -> list:
        """Take one observation that arrived at ``now`` (monotonic seconds). Returns the
        observations that pass without being held (losses, errors) and any
        forced out by ``max_held``."""
        kind = type(o)
        if kind in _UNHELD or self.window_s == 0:
            return [o]
        ts = getattr(o, "ts_ns", 0) or 0
        self._seq += 1
        heap = self._heap
        heapq.heappush(heap, (ts, _RANK.get(kind, 2), self._seq, now, o))
        if len(heap) + len(self._exits) > self.max_held:
            self.forced += 1
            return [self._pop()]
        return []

    def push_many(self, items, now: float) -> list:
        """:meth:`push` of each of ``items`` in turn (one batch that arrived at ``now``), with
        one call: the returned list holds, in order, what each push would have returned."""
        if self.window_s == 0:
            return list(items)
        out: list = []
        heap = self._heap
        seq = self._seq
        rank, unheld, heappush = _RANK, _UNHELD, heapq.heappush
        room = self.max_held - len(heap) - len(self._exits)  # pushes left before max_held
        if _order_push is not None and type(items) is list and type(self) is OrderBuffer:
            # the loop below, compiled, up to the first push past max_held (then the loop)
            out, seq, i = _order_push(heap, items, now, seq, rank, unheld, room, heappush)
            if i == len(items):
                self._seq = seq
                return out
            items = items[i:]
            room = self.max_held - len(heap) - len(self._exits)
        for o in items:
            kind = type(o)
            if kind in unheld:
                out.append(o)
                continue
            seq += 1
            heappush(heap, (getattr(o, "ts_ns", 0) or 0, rank.get(kind, 2), seq, now, o))
            room -= 1
            if room < 0:
                self.forced += 1
                out.append(self._pop())
                room = 0
        self._seq = seq
        return out

    def _pop(self):
        ts, _rank, _seq, _arrival, o = heapq.heappop(self._heap)
        if ts < self._last_ts:
            self.late += 1
        else:
            self._last_ts = ts
        return o

    def ready(self, now: float) -> list:
        """Observations whose hold has passed, in event-time order."""
        heap = self._heap
        limit = now - self.window_s
        if not heap or heap[0][3] > limit:
            return []
        if _order_ready is not None and type(self) is OrderBuffer:
            # the loop below, compiled
            out, self._last_ts, late = _order_ready(heap, limit, self._last_ts, heapq.heappop)
            self.late += late
            return out
        out = []
        pop = heapq.heappop
        last, late = self._last_ts, 0
        while heap and heap[0][3] <= limit:  # _pop inlined: one call per batch, not per item
            ts, _rank, _seq, _arrival, o = pop(heap)
            if ts < last:
                late += 1
            else:
                last = ts
            out.append(o)
        self._last_ts = last
        self.late += late
        return out

    def hold_exit(self, event, pid: Optional[int], arrived: float) -> list:
        """Hold a built ProcessTerminate event until ``arrived + exit_hold_s``. Returns exits
        that must leave now because of ``max_held``."""
        exits = self._exits
        exits.append((arrived + self.exit_hold_s, pid, event))
        self._exit_of[pid] = event
        if len(self._heap) + len(exits) > self.max_held:
            self.forced += 1
            return [self._release_exit()]
        return []

    def held_exit(self, pid: int):
        """The exit event of ``pid`` still held, or ``None`` (to repair it when the process's
        exec arrives after its exit, see :meth:`sysmonx.sensor.process.ProcessCache.on_exec`)."""
        return self._exit_of.get(pid)

    def _release_exit(self):
        _due, pid, event = self._exits.popleft()
        if self._exit_of.get(pid) is event:
            del self._exit_of[pid]
        return event

    def exits_ready(self, now: float) -> list:
        """Held exit events whose hold has passed (in the order their processes exited)."""
        exits = self._exits
        if not exits or exits[0][0] > now:
            return []
        out = []
        while exits and exits[0][0] <= now:
            out.append(self._release_exit())
        return out

    def next_due(self) -> Optional[float]:
        """Monotonic time of the next release, or ``None`` when nothing is held."""
        due = []
        if self._heap:
            due.append(self._heap[0][3] + self.window_s)
        if self._exits:
            due.append(self._exits[0][0])
        return min(due) if due else None

    def drain(self) -> list:
        """Every held observation, in event-time order (at stop)."""
        out = []
        while self._heap:
            out.append(self._pop())
        return out

    def drain_exits(self) -> list:
        """Every held exit event (at stop, after :meth:`drain`'s observations were written)."""
        out = [e for _due, _pid, e in self._exits]
        self._exits.clear()
        self._exit_of.clear()
        return out
