"""A live output's thread writes everything it took from its queue in one write
(``JsonlWriter.write_many`` -> ``WholeLineFile.write_lines``), and counts exactly as one write
per event would: an event written is sent, a failed write counts only the events that did not go
out, the file never holds a cut line. Failures are made with a byte budget on ``os.write``."""

from __future__ import annotations

import errno
import json
import os

import pytest

from sysmonx.core.errors import SinkError
from sysmonx.event import Event
from sysmonx.pipeline.fanout import QueuedSlot
from sysmonx.sinks import wholeline
from sysmonx.sinks.jsonl import JsonlWriter, event_to_json
from sysmonx.sinks.wholeline import PartialWrite, WholeLineFile


def _events(n: int) -> list:
    return [Event(1 if i % 2 == 0 else 5, {"RuleName": "-", "UtcTime": "2026-12-06 10:00:00.000",
                                           "ProcessId": str(1000 + i),
                                           "CommandLine": f"/bin/true x{i} " + "y" * (i % 37)},
                  record_id=i + 1, version=5, level=4, task=1, opcode=0,
                  time_created="2026-12-06T10:00:00.000000000Z", process_id=1, thread_id=1,
                  computer="host")
            for i in range(n)]


class Budget:
    """``os.write`` that writes at most ``budget`` more bytes (really, to the file), then fails
    with ENOSPC; ``refill`` after ``fail_times`` failures (a transient failure)."""

    def __init__(self, monkeypatch, budget: int, fail_times: int = 10**9) -> None:
        self.budget, self.fail_times, self.calls, self.failures = budget, fail_times, 0, 0
        self.real = os.write
        monkeypatch.setattr(wholeline.os, "write", self)

    def __call__(self, fd, data) -> int:
        self.calls += 1
        if self.budget <= 0 and self.failures < self.fail_times:
            self.failures += 1
            if self.failures == self.fail_times:
                self.budget = 10**12
            raise OSError(errno.ENOSPC, "No space left on device")
        n = self.real(fd, bytes(data[:self.budget]))
        self.budget -= n
        return n


def _slot(path, policy="count"):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    sink = JsonlWriter(WholeLineFile(fd, str(path), close_fd=True))  # type: ignore[arg-type]
    return QueuedSlot(sink, policy, maxsize=10_000, when_full="block")


def _run(slot, events) -> None:
    for e in events:  # queued before the thread starts: it takes them as one batch
        slot.write(e)
    slot.start()
    slot.close()


def _lines(path) -> list:
    return path.read_bytes().split(b"\n")


def test_a_batch_is_one_write(tmp_path, monkeypatch):
    path = tmp_path / "out.jsonl"
    events = _events(300)
    budget = Budget(monkeypatch, 10**12)
    slot = _slot(path)
    _run(slot, events)
    assert budget.calls == 1  # one write for 300 events (one per event before)
    assert path.read_bytes() == b"".join(event_to_json(e) + b"\n" for e in events)
    assert (slot.sent, slot.failed, slot.dropped) == (300, 0, 0)


@pytest.mark.parametrize("cut", [0, 1, 57, 1000, 4096])
def test_failure_in_the_middle_counts_only_what_did_not_go_out(tmp_path, monkeypatch, cut):
    path = tmp_path / "out.jsonl"
    events = _events(200)
    lines = [event_to_json(e) + b"\n" for e in events]
    Budget(monkeypatch, cut)
    slot = _slot(path)
    _run(slot, events)
    data = path.read_bytes()
    whole = 0  # lines that fit whole into the budget
    end = 0
    while whole < len(lines) and end + len(lines[whole]) <= cut:
        end += len(lines[whole])
        whole += 1
    assert data == b"".join(lines[:whole])  # no cut line left behind
    assert slot.sent == whole and slot.failed == len(events) - whole
    assert slot.sent + slot.failed == len(events)
    assert [json.loads(x)["ProcessId"] for x in data.splitlines()] == \
        [str(1000 + i) for i in range(whole)]


def test_transient_failure_loses_one_event_and_recovers(tmp_path, monkeypatch):
    path = tmp_path / "out.jsonl"
    events = _events(50)
    lines = [event_to_json(e) + b"\n" for e in events]
    cut = len(lines[0]) + len(lines[1]) + 10  # the third line is cut, then space comes back
    Budget(monkeypatch, cut, fail_times=1)
    slot = _slot(path)
    _run(slot, events)
    assert path.read_bytes() == b"".join(lines[:2] + lines[3:])
    assert (slot.sent, slot.failed) == (49, 1)
    assert slot._lost_since is None  # the loss period ended with the next event written


def test_fatal_policy_stops_at_the_failed_event(tmp_path, monkeypatch):
    path = tmp_path / "out.jsonl"
    events = _events(40)
    lines = [event_to_json(e) + b"\n" for e in events]
    Budget(monkeypatch, sum(len(x) for x in lines[:7]) + 3)
    slot = _slot(path, policy="fatal")
    for e in events:
        slot.write(e)
    slot.start()
    with pytest.raises(SinkError, match="No space left"):
        slot.close()
    assert path.read_bytes() == b"".join(lines[:7])
    assert (slot.sent, slot.failed) == (7, 33)


def test_an_item_the_batch_cannot_render_falls_back_to_one_by_one(tmp_path, monkeypatch):
    path = tmp_path / "out.jsonl"
    events = _events(10)
    budget = Budget(monkeypatch, 10**12)
    slot = _slot(path)
    _run(slot, events[:4] + [object()] + events[4:])
    assert budget.calls == 10  # one by one: the object failed alone
    assert path.read_bytes() == b"".join(event_to_json(e) + b"\n" for e in events)
    assert (slot.sent, slot.failed) == (10, 1)


def test_write_lines_partial_write_reports_whole_lines(tmp_path, monkeypatch):
    path = tmp_path / "w.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    f = WholeLineFile(fd, str(path), close_fd=True)
    Budget(monkeypatch, 11)
    with pytest.raises(PartialWrite) as info:
        f.write_lines([b"aaaa", b"bbbb", b"cccc"])
    assert info.value.written == 2 and isinstance(info.value.cause, OSError)
    assert path.read_bytes() == b"aaaa\nbbbb\n"
    f.close()
