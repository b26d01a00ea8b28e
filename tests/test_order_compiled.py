"""The compiled loops of the live order buffer (``sysmonx.sensor._ringbatch.order_push`` /
``order_ready``, used by :meth:`OrderBuffer.push_many` and :meth:`OrderBuffer.ready`) against the
Python loops that define them: for the same calls, the same returned observations in the same
order and the same buffer state (heap entries, sequence, ``late``, ``forced``, last time).

A subclass of :class:`OrderBuffer` keeps the Python loops, so ``_Pure`` below is the definition.
The scripts mix batches of forks, execs, exits, losses and backend errors (not held), items
without ``ts_ns`` or with ``ts_ns=None``, equal times, times going back (``late``), single
pushes, releases at random times, held exits, and a small ``max_held`` (forced releases in the
middle of a batch)."""

from __future__ import annotations

import random

import pytest

from sysmonx.sensor import observations as ob
from sysmonx.sensor import order as order_mod
from sysmonx.sensor.order import OrderBuffer

pytestmark = pytest.mark.skipif(order_mod._order_push is None,
                                reason="compiled loops not built or disabled "
                                       "(SYSMONX_PURE_PYTHON)")


class _Pure(OrderBuffer):
    """The Python loops (a subclass never takes the compiled ones)."""


class _NoTime:
    """An observation type without ``ts_ns`` (held at time 0, rank 2)."""

    def __init__(self, n: int) -> None:
        self.n = n


def _item(rnd: random.Random, i: int, base: int):
    ts = base + rnd.choice([0, 1, 2, 5, -3, 7]) * 1000 + i
    pid = 100 + rnd.randrange(8)
    r = rnd.random()
    if r < 0.25:
        return ob.ProcessFork(ts_ns=ts, pid=pid, ppid=1)
    if r < 0.55:
        return ob.ProcessExec(ts_ns=ts, pid=pid)
    if r < 0.8:
        return ob.ProcessExit(ts_ns=ts, pid=pid)
    if r < 0.86:
        return ob.Loss(ts_ns=ts, source="test", count=1)
    if r < 0.9:
        return ob.BackendError(ts_ns=ts, source="test", message="m")
    if r < 0.95:
        return ob.ProcessExec(ts_ns=None, pid=pid)  # type: ignore[arg-type]
    return _NoTime(i)


def _state(b: OrderBuffer) -> tuple:
    return (list(b._heap), b._seq, b.late, b.forced, b._last_ts, list(b._exits),
            dict(b._exit_of))


def _compare(seed: int, max_held: int) -> int:
    rnd = random.Random(seed)
    fast, pure = OrderBuffer(0.25, 2.5, max_held), _Pure(0.25, 2.5, max_held)
    now, base, released = 100.0, 10**18, 0
    for step in range(300):
        now += rnd.choice([0.0, 0.01, 0.05, 0.1, 0.3])
        base += rnd.randrange(50_000)
        r = rnd.random()
        if r < 0.5:
            batch = [_item(rnd, step * 100 + k, base) for k in range(rnd.randrange(0, 40))]
            got, want = fast.push_many(batch, now), pure.push_many(list(batch), now)
        elif r < 0.6:
            o = _item(rnd, step, base)
            got, want = fast.push(o, now), pure.push(o, now)
        elif r < 0.9:
            got, want = fast.ready(now), pure.ready(now)
            released += len(got)
            for o in got:
                if type(o) is ob.ProcessExit:
                    assert fast.hold_exit(o, o.pid, now) == pure.hold_exit(o, o.pid, now)
        else:
            got, want = fast.exits_ready(now), pure.exits_ready(now)
        assert got == want, (seed, step)
        assert [id(x) for x in got] == [id(x) for x in want]
        assert _state(fast) == _state(pure), (seed, step)
    assert fast.drain() == pure.drain()
    return released


def test_compiled_order_loops_match_the_python_ones():
    assert sum(_compare(seed, 200_000) for seed in range(15)) > 1000


def test_compiled_order_loops_match_when_max_held_forces_releases():
    for seed in range(15):
        _compare(1000 + seed, 25)
    fast = OrderBuffer(0.25, 2.5, 25)
    fast.push_many([ob.ProcessExec(ts_ns=i, pid=i) for i in range(40)], 1.0)
    assert fast.forced == 15


def test_compiled_loops_are_used_by_the_live_buffer(monkeypatch):
    """The exact class takes them (a subclass does not)."""
    calls = []
    for name in ("_order_push", "_order_ready"):
        real = getattr(order_mod, name)
        monkeypatch.setattr(order_mod, name,
                            lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    b = OrderBuffer(0.25)
    b.push_many([ob.ProcessExec(ts_ns=5, pid=1), ob.ProcessExit(ts_ns=6, pid=1)], 1.0)
    assert [type(o) for o in b.ready(2.0)] == [ob.ProcessExec, ob.ProcessExit]
    assert calls == ["_order_push", "_order_ready"]
    p = _Pure(0.25)
    p.push_many([ob.ProcessExec(ts_ns=5, pid=1)], 1.0)
    assert len(p.ready(2.0)) == 1 and calls == ["_order_push", "_order_ready"]
