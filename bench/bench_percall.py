#!/usr/bin/env python3
"""Per-record cost of the replay's compiled per-event calls against their Python methods.

    python bench/bench_percall.py [--corpus DIR] [--rounds N] [--repeat N] [--cpu N]

The corpus's EVTX events are read once (not timed; ``--repeat`` copies with fresh record ids so
every pass sees new records). In this process, pinned to one CPU, CPU time:

* duplicate check: ``DuplicateStage.process`` (compiled when the extension is built) against
  ``DuplicateStage._process_py``, each on a fresh stage per pass, every record new (the common
  case: a new id, its block made by the first record of the block);
* JSON lines write: ``JsonlWriter.write`` (compiled) against the Python method, to a null stream.

Prints microseconds per record, best of ``--rounds`` passes, and ``uptime`` load averages.
Exit status 1 when the extension is not in use (nothing compiled to compare) or no events.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class _Null:
    def write(self, b: bytes) -> int:
        return len(b)

    def flush(self) -> None:
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=os.environ.get("SYSMONX_CORPUS", str(
        Path(__file__).resolve().parents[2] / "shared" / "corpus")))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--cpu", type=int, default=os.cpu_count() - 1 if os.cpu_count() else 0)
    args = ap.parse_args()
    os.sched_setaffinity(0, {args.cpu})

    from sysmonx.core import native
    from sysmonx.event import Event
    from sysmonx.sinks.jsonl import JsonlWriter
    from sysmonx.sources.evtx import read_evtx
    from sysmonx.stages.dedup import DuplicateStage
    if native.speedups is None:
        print(f"nothing to compare: {native.implementation()}", file=sys.stderr)
        return 1
    base: list[Event] = []
    for f in sorted((Path(args.corpus) / "evtx").rglob("*.evtx")):
        base.extend(read_evtx(str(f), lambda err: None))
    if not base:
        print("no EVTX events in the corpus", file=sys.stderr)
        return 1
    events: list[Event] = []
    for k in range(args.repeat):  # new ids per copy: every record is new to the filter
        for e in base:
            c = Event(e.event_id, e.data, provider=e.provider, computer=e.computer,
                      channel=e.channel, record_id=(e.record_id or 0) + k * 1_000_000,
                      time_created=e.time_created)
            events.append(c)
    clock = time.process_time
    print(f"{len(events):,} events ({len(base):,} corpus EVTX records x{args.repeat}); CPU time "
          f"pinned to CPU {args.cpu}; best of {args.rounds}; load average {_load()}")

    def dedup(compiled: bool) -> float:
        best = float("inf")
        for _ in range(args.rounds):
            stage = DuplicateStage()
            process = stage.process if compiled else stage._process_py
            emit = list().append
            t = clock()
            for e in events:
                process(e, emit)
            best = min(best, clock() - t)
        return best / len(events) * 1e6

    def write(compiled: bool) -> float:
        best = float("inf")
        for _ in range(args.rounds):
            w = JsonlWriter(_Null(), close_stream=False)  # type: ignore[arg-type]
            fn = w.write if compiled else functools.partial(JsonlWriter.write, w)
            t = clock()
            for e in events:
                fn(e)
            best = min(best, clock() - t)
        return best / len(events) * 1e6

    for name, fn in (("duplicate check (DuplicateStage.process)", dedup),
                     ("JSON lines write (JsonlWriter.write)", write)):
        c, p = fn(True), fn(False)
        print(f"{name:44} compiled {c:6.3f} us  Python {p:6.3f} us  ({p / c:.1f}x)")
    print(f"load average after: {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
