"""The live sensor's cheaper per-exec path gives exactly what the general one gave: a queued
output's batch take (order, failures, blocking, join), the assembler's fast path for fork, exec
and exit (every field), tier A's decoding of argv and paths (invalid UTF-8 included), the time
stamps, the collector settings of a live run, and bench/bench_live_core.py's checks."""

from __future__ import annotations

import gc
import importlib.util
import os
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from sysmonx.pipeline.fanout import QueuedSlot, SinkStats
from sysmonx.sensor import observations as ob
from sysmonx.sensor.assemble import Assembler, _stamps, event_time, utc_time
from sysmonx.sensor.backends import ebpf
from sysmonx.sensor.process import ProcessCache

ROOT = Path(__file__).resolve().parents[1]


class Recorder:
    def __init__(self, fail_at=None, delay=0.0) -> None:
        self.items: list = []
        self.fail_at = fail_at
        self.delay = delay

    def write(self, item) -> None:
        if self.delay:
            time.sleep(self.delay)
        if item == self.fail_at:
            raise OSError(28, "No space left on device")
        self.items.append(item)


def test_batch_take_keeps_order_and_counts_a_failure_per_item():
    rec = Recorder(fail_at=37)
    slot = QueuedSlot(rec, "count", maxsize=100_000)
    slot.start()
    for i in range(500):
        slot.write(i)
    slot.flush()  # join: every item finished, also those taken in batches
    assert slot.queue.unfinished_tasks == 0
    assert rec.items == [i for i in range(500) if i != 37]
    assert slot.sent == 499 and slot.failed == 1 and slot.dropped == 0
    slot.close()


def test_blocking_producer_is_released_by_the_batch_take():
    # a queue of 2 and a slow sink: the producer must wait for room, never be stuck
    rec = Recorder(delay=0.0005)
    slot = QueuedSlot(rec, "fatal", maxsize=2, when_full="block")
    slot.start()
    done = threading.Event()

    def produce():
        for i in range(300):
            slot.write(i)
        done.set()

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    assert done.wait(30), "producer stuck on a full queue"
    slot.close()
    assert rec.items == list(range(300)) and slot.dropped == 0


def test_dropping_queue_counts_what_did_not_fit_and_recovers():
    gate = threading.Event()

    class Stuck(Recorder):
        def write(self, item):
            gate.wait(10)
            super().write(item)

    rec = Stuck()
    slot = QueuedSlot(rec, "count", maxsize=3, when_full="drop")
    slot.start()
    for i in range(20):
        slot.write(i)
    gate.set()
    slot.flush()
    assert slot.dropped > 0 and len(rec.items) + slot.dropped == 20
    assert rec.items == sorted(rec.items)
    slot.write("after")  # room again: taken, the loss period ends
    slot.flush()
    assert rec.items[-1] == "after"
    slot.close()


def test_close_delivers_what_is_queued_before_it():
    rec = Recorder(delay=0.0002)
    slot = QueuedSlot(rec, maxsize=10_000)
    slot.start()
    for i in range(1000):
        slot.write(i)
    slot.close()
    assert rec.items == list(range(1000))


def test_stamps_are_utc_time_and_event_time():
    for ts in (0, 1, 999_999_999, 1_700_000_000_123_456_789, time.time_ns(),
               1_700_000_000_999_999_999, 1_700_000_001_000_000_000):
        assert _stamps(ts) == (utc_time(ts), event_time(ts))


def _generic(asm: Assembler, o):
    """The events through the general type walk (what build_events did for every type)."""
    return asm._build_events(o)


def _fields(events):
    return [(e.event_id, dict(e.data), e.version, e.level, e.task, e.time_created,
             e.provider, e.channel, e.computer, e.user_id, e.process_id) for e in events]


def test_fast_path_gives_the_fields_of_the_general_path():
    now = time.time_ns()
    parent = os.getpid()
    script = [
        ob.ProcessFork(now, 4_000_001, parent, start_ticks=100, uid=0),
        ob.ProcessExec(now + 1, 4_000_001, parent, 4_000_001, 100, "/usr/bin/true",
                       ["/bin/true", "x-1"], "/tmp", 0, 1000, 3, 0x5555_0000),
        ob.ProcessExit(now + 2, 4_000_001, start_ticks=100, exit_code=0),
        ob.ProcessExit(now + 3, 4_000_002, start_ticks=None, exit_code=0),  # never seen
        ob.ProcessExec(now + 4, 4_000_003, 999_999_999, 4_000_003, 101, None, None, None,
                       None, None, None, None),  # nothing known, parent unknown
    ]
    fast = Assembler(ProcessCache(machine="0badcafe"), computer="h")
    slow = Assembler(ProcessCache(machine="0badcafe"), computer="h")
    slow.cache._synthetic = fast.cache._synthetic
    got = [_fields(fast.build_events(o)) for o in script]
    want = [_fields(_generic(slow, o)) for o in script]
    assert got == want
    create = got[1][0][1]
    assert create["CommandLine"] == "/bin/true x-1" and create["Image"] == "/usr/bin/true"
    assert create["ParentProcessId"] == str(parent) and create["User"] == "root"
    assert got[2][0][1]["ProcessGuid"] == create["ProcessGuid"]
    assert got[3][0][1]["Image"] == "-" and got[3][0][1]["User"] == "-"


def _per_arg(raw: bytes) -> list:
    """What the decoder did before: split the bytes, then decode each argument."""
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    return [os.fsdecode(a) for a in raw.split(b"\0")] if raw else []


@pytest.mark.parametrize("raw", [
    b"/bin/true\0x-1\0", b"a\0\0b\0", b"\xff\xfe\0\xc3\0\xa9\0", b"caf\xc3\xa9\0na\xc3",
    b"\xe2\x82\0\xac\0", b"", b"\0", b"solo",
])
def test_exec_record_argv_and_paths_decode_as_before(raw):
    image, cwd = b"true\0bin\0usr\0", b"t\xffmp\0"
    body = ebpf._EXEC.pack(1, 0, 0, 0, 100, 5, len(raw), len(image), len(cwd), 0, 0, 0)
    rec = ebpf._HDR.pack(ebpf.EV_EXEC, 0, 7, 7, ebpf.ABI_VERSION, 1) + body + raw + image + cwd
    o = ebpf.EbpfBackend._decode_exec(rec, 0, 7, 7, 1)
    assert o.argv == _per_arg(raw)
    assert o.image == "/usr/bin/true"
    assert o.cwd == "/" + os.fsdecode(b"t\xffmp")


def test_live_run_freezes_start_up_objects_and_raises_the_first_threshold():
    from sysmonx.pipeline import live
    before = gc.get_threshold()
    try:
        live._settle_heap()
        assert gc.get_threshold()[0] == live.GC_THRESHOLD0
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_thread_profiles_write_one_profile_per_thread(tmp_path, monkeypatch):
    from sysmonx.pipeline import live
    monkeypatch.setenv("SYSMONX_PROFILE", str(tmp_path))
    prof = live._ThreadProfiles.from_environment()
    t = threading.Thread(target=lambda: sum(range(10_000)), name="worker")
    t.start()
    t.join()
    prof.dump()
    names = {p.name.rsplit("-", 1)[0] for p in tmp_path.glob("*.prof")}
    assert {"worker", threading.current_thread().name} <= names
    assert (tmp_path / "threads.txt").read_text().strip()


def test_bench_live_core_checks_every_exec_and_reports_cpu():
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_live_core.py"),
                          "--execs", "300", "--rate", "0", "--rounds", "1"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "300/300 execs with events 1 and 5 (0 wrong)" in res.stdout
    assert "per thread, us per exec" in res.stdout


def test_bench_live_core_reports_lost_events_instead_of_waiting_for_them():
    # --rate 0 can outrun the output's queue: the live run drops events (counted, event 255).
    # The bench waited 120 s + one second per exec for them (an 80,000-exec run looked hung);
    # now it stops once every event is written or counted lost, and fails, saying why.
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_live_core.py"),
                          "--execs", "3000", "--rate", "0", "--rounds", "1",
                          "--sink-queue", "16"],
                         capture_output=True, text=True, timeout=100, env=env)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "NOT MEASURED" in res.stdout and "queue full" in res.stdout, res.stdout
    lost = int(res.stdout.split("NOT MEASURED: ")[1].split()[0])
    execs = int(res.stdout.split("round 1: ")[1].split("/")[0])
    assert lost > 0 and execs < 3000
    assert time.monotonic() - t0 < 60


def _bench_live_core():
    """bench/bench_live_core.py loaded as a module (it is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("bench_live_core",
                                                  ROOT / "bench" / "bench_live_core.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_live_core_wait_ends_on_loss_or_stall():
    mod = _bench_live_core()
    class FakeFanout:
        def __init__(self, written, dropped):
            self.w, self.d = written, dropped

        def written(self):
            return Counter({1: self.w, 5: self.w, 255: 3})

        def stats(self):
            return {"jsonl": SinkStats(2 * self.w, 0, self.d)}

    class FakeSensor:
        def __init__(self, written, dropped):
            self.fanout = FakeFanout(written, dropped)

    done = threading.Event()
    done.set()
    t0 = time.monotonic()
    # every event written or dropped: no wait for the dropped ones
    assert mod.wait_for_events(FakeSensor(90, 20), done, 200, t0 + 30) == (180, 20)
    assert time.monotonic() - t0 < 5
    # events missing and nothing moving: ends after the stall time, not at the deadline
    t0 = time.monotonic()
    assert mod.wait_for_events(FakeSensor(90, 0), done, 200, t0 + 30, stall_s=0.3) == (180, 0)
    assert time.monotonic() - t0 < 5


def test_bench_live_core_records_are_what_the_decoder_reads():
    mod = _bench_live_core()
    recs = mod.records(2)
    b = ebpf.EbpfBackend(lambda o: None)
    kinds = [type(b._decode(r, 0)).__name__ for r in recs]
    assert kinds == ["ProcessFork", "ProcessExec", "ProcessExit"] * 2
    exe = b._decode(recs[4], 0)
    assert exe.argv == ["/bin/true", "bench-1"] and exe.image == "/usr/bin/true"
    assert struct.unpack_from("<H", recs[5])[0] == ebpf.EV_EXIT


def _plain_release(self, now):
    """LiveSource._release before the fork short-cut: every observation assembled."""
    for item in self.order.ready(now):
        self._assemble(item, now)
    self._pending.extend(self.order.exits_ready(now))


def _events_of(script, monkeypatch=None):
    from sysmonx.sensor.live import LiveOptions, LiveSource
    src = LiveSource(None, LiveOptions(exclude_own_children=False))
    src.cache.machine = "0badcafe"
    if monkeypatch is not None:
        monkeypatch.setattr(LiveSource, "_release", _plain_release)
    src._handle(list(script), 0.0)
    src._release(10.0)  # every hold passed
    src._pending.extend(src.order.drain_exits())
    return [(e.event_id, e.data) for e in src._pending], src


def test_fork_before_its_exec_is_skipped_with_the_same_events(monkeypatch):
    now = time.time_ns()
    me = os.getpid()
    script = [
        # fork then exec of the same process, the exec knowing parent, start and uid: skipped
        ob.ProcessFork(now, 4_100_001, me, start_ticks=500, uid=0),
        ob.ProcessExec(now + 10, 4_100_001, me, 4_100_001, 500, "/usr/bin/true",
                       ["/bin/true", "a"], "/", 0, 1000, 3, 0x5555_0001),
        ob.ProcessExit(now + 20, 4_100_001, start_ticks=500, exit_code=0),
        # the exec does not know the uid (another tier): the fork is assembled
        ob.ProcessFork(now + 30, 4_100_002, me, start_ticks=501, uid=1000),
        ob.ProcessExec(now + 40, 4_100_002, me, 4_100_002, 501, "/usr/bin/true",
                       ["/bin/true", "b"], "/", None, None, None, 0x5555_0002),
        ob.ProcessExit(now + 50, 4_100_002, start_ticks=501, exit_code=0),
        # a child that never execs: its exit carries the parent's image
        ob.ProcessFork(now + 60, 4_100_003, me, start_ticks=502, uid=0),
        ob.ProcessExit(now + 70, 4_100_003, start_ticks=502, exit_code=0),
        # a different start time (pid reused): not the same process, the fork is assembled
        ob.ProcessFork(now + 80, 4_100_004, me, start_ticks=503, uid=0),
        ob.ProcessExec(now + 90, 4_100_004, me, 4_100_004, 504, "/usr/bin/true",
                       ["/bin/true", "c"], "/", 0, 1000, 3, 0x5555_0004),
    ]
    fast, src = _events_of(script)
    plain, _ = _events_of(script, monkeypatch)
    assert fast == plain
    creates = [d for eid, d in fast if eid == 1]
    assert [d["CommandLine"] for d in creates] == ["/bin/true a", "/bin/true b", "/bin/true c"]
    from sysmonx.sensor.process import user_name
    assert creates[1]["User"] == user_name(1000)  # the real uid the fork told
    exits = {d["ProcessId"]: d for eid, d in fast if eid == 5}
    assert exits["4100003"]["Image"] == os.readlink("/proc/self/exe")
    assert exits["4100001"]["ProcessGuid"] == creates[0]["ProcessGuid"]
