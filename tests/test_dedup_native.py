"""The compiled duplicate check (``sysmonx.core._speedups.Dedup``) against the Python one.

``DuplicateFilter.is_duplicate`` and ``DuplicateStage.process`` take the compiled path when the
extension is in use: it handles only a new record id in a block already made and hands every
other call to the Python method. These tests run one filter through the compiled entry and a
second through the Python method on the same sequence and require the same verdict for every
record and the same state after it (slots, side table, counters, saturation): on the corpus read
twice, with restarts, and on hand-made sequences (repeats, another time, sparse ids, saturation,
None / negative / huge ids, odd and non-ASCII times, leap days, items that are not Events).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from sysmonx.core import native
from sysmonx.core.errors import ReadError
from sysmonx.event import Event
from sysmonx.stages.dedup import DuplicateFilter, DuplicateStage

sp = native.speedups
needs_ext = pytest.mark.skipif(sp is None, reason=f"C extension not in use: "
                               f"{native.implementation()}")


def _state(f: DuplicateFilter) -> tuple:
    streams = {k: {b: list(a) for b, a in v.items()} for k, v in f._streams.items()}
    return streams, f._other, f.dropped, f.saturated, f._blocks


def _same(events: list, max_blocks: int = 262144) -> list[bool]:
    """Verdicts of the compiled and the Python filter on ``events`` (asserted equal), with
    equal state after every record."""
    c, py = DuplicateFilter(max_blocks), DuplicateFilter(max_blocks)
    assert c.is_duplicate is not c._is_duplicate_py  # the compiled entry is in place
    out = []
    for i, e in enumerate(events):
        vc, vp = c.is_duplicate(e), py._is_duplicate_py(e)
        assert vc is vp, (i, e.record_id, e.time_created)
        out.append(vp)
    assert _state(c) == _state(py)
    return out


def _ev(rid: Any, t: str = "2024-03-05T10:00:07.251234500Z", computer: str = "WS01",
        channel: str = "Microsoft-Windows-Sysmon/Operational") -> Event:
    return Event(1, {"RuleName": "-"}, record_id=rid, time_created=t, computer=computer,
                 channel=channel)


@needs_ext
def test_corpus_read_twice_and_restarted_same_decisions(corpus):
    from sysmonx.sources.evtx import read_evtx
    events: list[Event] = []
    for f in sorted((corpus / "evtx").rglob("*.evtx")):
        events.extend(read_evtx(str(f), lambda err: None))
        if len(events) > 40_000:
            break
    assert len(events) > 1000
    restarted = []
    for e in events[:3000]:
        r = Event(e.event_id, e.data, provider=e.provider, computer=e.computer,
                  channel=e.channel, record_id=e.record_id,
                  time_created="2031" + e.time_created[4:])
        restarted.append(r)
    mixed = events[:5000]
    random.Random(7).shuffle(mixed)
    verdicts = _same(events + events + restarted + restarted + mixed)
    n = len(events)
    assert verdicts[n:2 * n] == [e.record_id is not None and e.record_id >= 0 for e in events]
    assert all(verdicts[-len(mixed):][i] == (mixed[i].record_id is not None)
               for i in range(len(mixed)))


@needs_ext
def test_hand_made_sequences_same_decisions():
    seq = [_ev(i) for i in range(200)]                      # dense, blocks made by Python
    seq += [_ev(i) for i in range(200)]                     # repeats
    seq += [_ev(i, "2024-03-05T11:00:07.1Z") for i in range(0, 200, 3)]  # restart
    seq += [_ev(i, "2024-03-05T11:00:07.9Z") for i in range(0, 200, 3)]  # same second
    seq += [_ev(i * 64 + 5) for i in range(50)]              # sparse: one block each
    seq += [_ev(i * 64 + 6) for i in range(50)]              # into those blocks
    seq += [_ev(None), _ev(-1), _ev(-(1 << 70)), _ev(1 << 70), _ev(1 << 70),
            _ev((1 << 63) - 1), _ev((1 << 63) - 1), _ev(True)]
    odd = ["", "2024", "2024-03-05T10:00", "2024-03-05T10:00:0", "2024-02-30T10:00:07Z",
           "2024-13-05T10:00:07Z", "0000-01-01T00:00:00Z", "2024-03-05T1a:00:07Z",
           "2024-03-05T10:00: 7Z", "2024-03-05T10:00:+7Z", "2024-03-05T10:00:0\u0667Z",
           "\u0662024-03-05T10:00:07Z", "2024-03-05 10:00:07", "2024-02-29T23:59:59Z",
           "2023-02-29T00:00:00Z", "2000-02-29T00:00:00Z", "1900-02-29T00:00:00Z",
           "1970-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "0001-01-01T00:00:00Z",
           "9999-12-31T99:99:99Z", "2024-03-05X10Y00Z07"]
    for j, t in enumerate(odd):
        seq += [_ev(1000 + j, t), _ev(1000 + j, t), _ev(1064 + j, t), _ev(2000, t)]
    seq += [_ev(5, computer="WS02"), _ev(5, channel="Security"), _ev(5, computer="WS02")]
    _same(seq)
    _same(seq[::-1])
    shuffled = seq[:]
    random.Random(3).shuffle(shuffled)
    _same(shuffled + shuffled)


@needs_ext
def test_times_in_the_compiled_shape_match_the_python_seconds():
    f = DuplicateFilter()
    rng = random.Random(11)
    for _ in range(3000):
        t = "%04d-%02d-%02dT%02d:%02d:%02d.5Z" % (rng.randint(1, 9999), rng.randint(1, 12),
                                                rng.randint(1, 28), rng.randint(0, 99),
                                                rng.randint(0, 99), rng.randint(0, 99))
        c, py = DuplicateFilter(), DuplicateFilter()
        for g in (c, py):  # make the block in Python, then let each decide a new id in it
            g._is_duplicate_py(_ev(0, t))
        c.is_duplicate(_ev(1, t))
        py._is_duplicate_py(_ev(1, t))
        assert _state(c) == _state(py), t
        assert list(c._streams.values())[0][0][1] == f._seconds(t)


@needs_ext
def test_saturation_same_decisions_and_stage_warns_once():
    seq = [_ev(i * 64) for i in range(10)] + [_ev(i * 64 + 1) for i in range(20)]
    seq += [_ev(i * 64 + 1, "2025-01-01T00:00:00Z") for i in range(20)]
    assert _same(seq, max_blocks=4) == [False] * 50
    _same(seq[::-1], max_blocks=4)
    for compiled in (True, False):
        stage = DuplicateStage(max_blocks=4)
        process = stage.process if compiled else stage._process_py
        said: list = []
        kept = [process(e, said.append) for e in seq + ["not an event", None]]
        assert kept[-2:] == [True, True]
        assert len(said) == 1 and isinstance(said[0], ReadError)
        assert "memory bound" in said[0].message
        assert stage.dedup.saturated and stage.dedup.dropped == 0
        assert kept[:30] == [True] * 30


@needs_ext
def test_stage_process_compiled_equals_python(tmp_path: Path):
    seq = [_ev(i % 150, "2024-03-05T10:%02d:07Z" % (i // 150)) for i in range(600)]
    seq += seq[:300] + ["x", 3, None]
    c, py = DuplicateStage(), DuplicateStage()
    assert c.process is not c._process_py
    got_c = [c.process(e, lambda x: None) for e in seq]
    got_p = [py._process_py(e, lambda x: None) for e in seq]
    assert got_c == got_p
    assert c.dedup.dropped == py.dedup.dropped == 300
    assert _state(c.dedup) == _state(py.dedup)


# --- the JSON lines writer's compiled write ------------------------------------------------------

@needs_ext
def test_jsonl_writer_compiled_write_equals_python(corpus):
    import io

    from sysmonx.sinks.jsonl import JsonlWriter
    from sysmonx.sources.evtx import read_evtx
    events: list[Event] = []
    for f in sorted((corpus / "evtx").rglob("*.evtx"))[:15]:
        events.extend(read_evtx(str(f), lambda err: None))
    events.append(Event(1, {"RuleName": "-", "System": "forged", "x": "\ud800 \x85"},
                        record_id=3, time_created="2024-03-05 10:00:07"))
    c, py = io.BytesIO(), io.BytesIO()
    wc, wp = JsonlWriter(c, close_stream=False), JsonlWriter(py, close_stream=False)
    assert isinstance(wc.write, sp.LineWriter)
    for e in events:
        wc.write(e)
        JsonlWriter.write(wp, e)  # the Python method
    assert c.getvalue() == py.getvalue() and c.getvalue().count(b"\n") == len(events) > 100


@needs_ext
def test_jsonl_writer_compiled_write_raises_what_the_stream_raises():
    from sysmonx.sinks.jsonl import JsonlWriter

    class Failing:
        calls = 0

        def write(self, b: bytes) -> int:
            Failing.calls += 1
            raise BrokenPipeError(32, "Broken pipe")

    w = JsonlWriter(Failing(), close_stream=False)  # type: ignore[arg-type]
    with pytest.raises(BrokenPipeError):
        w.write(_ev(1))
    for write in (w.write, lambda e: JsonlWriter.write(w, e)):
        with pytest.raises(AttributeError):  # as the Python method: not an Event
            write("not an event")
    assert Failing.calls == 1
