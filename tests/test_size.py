"""Size (issue 6.3): memory flat in input size, parallel replay keeps nothing per error in memory,
and the bench's EVTX builder makes valid files."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
from pathlib import Path

import pytest
from evtx import PyEvtxParser

from sysmonx.event import Event
from sysmonx.pipeline import Replayer, ReplayOptions, replay_parallel
from sysmonx.sinks.jsonl import JsonlWriter
from sysmonx.sources import open_source

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_size", ROOT / "bench" / "bench_size.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_parallel_errors_come_in_file_order_like_a_sequential_replay(tmp_path):
    files = []
    for i in range(4):
        p = tmp_path / f"f{i}\nname.jsonl"  # a line break in a path survives the spool
        lines = [b'{"EventID":1,"System":{"EventRecordID":%d}}' % i, b"bad \xff json"] * (i + 1)
        p.write_bytes(b"\n".join(lines) + b"\n")
        files.append(str(p))
    seq: list[str] = []
    r = Replayer(ReplayOptions(), None, on_error=lambda e: seq.append(str(e)))
    for f in files:
        r.run_file(f)
    par: list[str] = []
    stats = replay_parallel(files, ReplayOptions(keep_duplicates=True), "jsonl", io.BytesIO(), 2,
                            par.append)
    assert par == seq and len(par) == 10 and stats.errors == 10 and stats.records == 10
    assert "\nname.jsonl:2: " in par[0]


def test_built_evtx_is_valid_and_renumbered(corpus, tmp_path):
    bench = _bench()
    src = corpus / bench.EVTX_REL
    out = tmp_path / "x3.evtx"
    assert bench.build_evtx(src, 3, out) == 3 * 565
    ids = [r["event_record_id"] for r in PyEvtxParser(str(out)).records_json()]
    assert ids == list(range(1, 3 * 565 + 1))
    errors: list = []
    events = list(open_source(str(out), errors.append))
    assert errors == [] and len(events) == 3 * 565
    once = list(open_source(str(src), errors.append))
    assert [e.data for e in events[565:1130]] == [e.data for e in once]


_CHILD = r"""
import sys
from sysmonx.pipeline import Replayer, ReplayOptions, make_writer
import os
w = make_writer(sys.argv[2], open(os.devnull, "wb"))
r = Replayer(ReplayOptions(keep_duplicates=True), w)  # the copies repeat the same events
r.run([sys.argv[1]])
w.close()
hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(r.stats.records, hwm, r.stats.duplicates)
"""


@pytest.mark.parametrize("fmt", ["csv", "xml"])
def test_peak_memory_is_flat_in_input_size(tmp_path, fmt):
    """The same events 1x and 30x: the peak resident set of a fresh process replaying them grows
    by less than 1.5x (in fact by almost nothing)."""
    base = tmp_path / "base.jsonl"
    with JsonlWriter(open(base, "wb")) as w:
        for i in range(1000):
            w.write(Event(1, {"RuleName": "-", "CommandLine": f"cmd.exe /c echo {i} " + "x" * 300,
                              "Image": "C:\\Windows\\System32\\cmd.exe"}, record_id=i,
                          time_created="2024-01-02T03:04:05.000000000Z", computer="h"))
    big = tmp_path / "big.jsonl"
    big.write_bytes(base.read_bytes() * 30)
    peaks = {}
    for p in (base, big):
        out = subprocess.run([sys.executable, "-c", _CHILD, str(p), fmt], capture_output=True,
                             text=True, check=True).stdout.split()
        peaks[p] = int(out[1])
        assert int(out[0]) == (1000 if p is base else 30_000) and out[2] == "0"
    assert peaks[big] <= 1.5 * peaks[base], peaks


def test_bench_size_runs(corpus, tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_size.py"), "--sizes", "1,3",
                        "--inputs", "evtx,jsonl,flatjson-gz", "--output", "csv"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert "largest peak RSS ratio to 1x" in r.stdout and "evtx" in r.stdout
