#!/usr/bin/env python3
"""The Windows live path (Event Log subscription -> the one loop -> outputs, with a bookmark
commit per event) as a ratio of replaying the same records from an event-XML file, both measured
in this run.

    python bench/bench_windows_live.py [--corpus DIR] [--copies N] [--config sos|none]
                                       [--rounds N]

Input: ``PanacheSysmon_vs_AtomicRedTeam01.evtx`` (565 Sysmon records) rendered to event XML by
pyevtx-rs, ``--copies`` times (renumbered), so both paths read the same records.

* **baseline (replay)**: :class:`~sysmonx.pipeline.replay.Replayer` over one XML file holding
  the records (the replay stages: duplicates, clock check, gate, filter), JSON lines to a null
  stream.
* **measured (live)**: :class:`~sysmonx.pipeline.windows.WindowsCollector` reading the same
  records from :class:`~sysmonx.windows.fakes.FakeWevtApi` (the Event Log channel's records,
  rendered XML as ``EvtRender`` gives it), through the Windows stages (ack, kernel-process,
  script blocks, gate, filter), JSON lines to a null stream behind the live output queue, every
  event committed to the channel's bookmark after the output took it (bookmark file written at
  most once a second). The fake replaces wevtapi.dll's C code with Python, so the live figure
  includes the fake's own cost: it is an upper bound of SysmonX's share.

Each measurement is a fresh child process (imports outside the window), timed as its CPU time
(``time.process_time``: every thread, the fake's reader, the output thread) from the start of the
run to the last commit. **Cold** (the headline) is the child's first pass (filter memo tables
empty); **warm** a second pass in the same child. Children alternate ``--rounds`` times, best of
each. The load average is printed before and after; rerun when the machine was busy. Exit status
1 when the live path wrote or committed a different number of events than replay, or nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from _common import default_corpus  # noqa: E402

CHANNEL = "Microsoft-Windows-Sysmon/Operational"
PANACHE = "evtx/sbousseaden__EVTX-ATTACK-SAMPLES/AutomatedTestingTools/" \
          "PanacheSysmon_vs_AtomicRedTeam01.evtx"
CONFIGS = {"sos": "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml",
           "none": None}


def _records(corpus: str, copies: int) -> list[str]:
    from sysmonx.windows.fakes import evtx_records, set_record_id
    base = evtx_records(os.path.join(corpus, PANACHE))
    out = []
    for i in range(copies):
        for j, x in enumerate(base):
            out.append(set_record_id(x, i * len(base) + j + 1))
    return out


class _Null:
    """A JSON-lines output to /dev/null that counts what it took."""

    def __init__(self) -> None:
        from sysmonx.sinks import writer_class
        self.w = writer_class("jsonl").open(open(os.devnull, "wb"))
        self.name, self.target, self.label = "jsonl", "null", "null"
        self.accepts = frozenset({"event"})
        self.n = 0

    def write(self, ev) -> None:
        self.w.write(ev)
        self.n += 1

    def flush(self) -> None:
        self.w.flush()

    def close(self) -> None:
        pass


def _replay(xml_path: str, config) -> tuple[float, int]:
    from sysmonx.pipeline.replay import Replayer, ReplayOptions
    sink = _Null()
    t0 = time.process_time()
    Replayer(ReplayOptions(config=config), sink).run([xml_path])
    return time.process_time() - t0, sink.n


def _live(records: list[str], config, bookmarks: str) -> tuple[float, int, int]:
    from sysmonx.pipeline.windows import WindowsCollector, WindowsOptions
    from sysmonx.windows.eventlog import ChannelSpec
    from sysmonx.windows.fakes import FakeWevtApi
    api = FakeWevtApi([CHANNEL])
    for x in records:
        api.write(CHANNEL, x, keep_id=True)
    sink = _Null()
    col = WindowsCollector(config, [sink], WindowsOptions(
        channels=[ChannelSpec(CHANNEL)], bookmarks=bookmarks, tick_s=1.0,
        eventlog_options={"wait_ms": 20, "batch_size": 64}, wevtapi=api))
    t = threading.Thread(target=col.run, daemon=True)
    t0 = time.process_time()
    t.start()
    while col.tracker.committed < len(records) and t.is_alive():
        time.sleep(0.005)
    cpu = time.process_time() - t0
    col.request_stop()
    t.join(30)
    return cpu, sink.n, col.tracker.committed


def child(args: argparse.Namespace) -> None:
    from sysmonx.config import load_config
    rel = CONFIGS[args.config]
    config = load_config(os.path.join(args.corpus, rel)) if rel else None
    records = _records(args.corpus, args.copies)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.child == "replay":
            path = os.path.join(tmp, "events.xml")
            with open(path, "w", encoding="utf-8") as f:
                f.write("<Events>\n" + "\n".join(records) + "\n</Events>\n")
            for label in ("cold", "warm"):
                cpu, n = _replay(path, config)
                result[label] = {"cpu": cpu, "written": n, "records": len(records)}
        else:
            for label in ("cold", "warm"):
                cpu, n, committed = _live(records, config, os.path.join(tmp, f"{label}.json"))
                result[label] = {"cpu": cpu, "written": n, "committed": committed,
                                 "records": len(records)}
    print(json.dumps(result))


def _load() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=default_corpus())
    p.add_argument("--copies", type=int, default=10)
    p.add_argument("--config", choices=sorted(CONFIGS), default="sos")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--child", choices=("replay", "live"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return 0
    if not os.path.exists(os.path.join(args.corpus, PANACHE)):
        print(f"corpus not found: {args.corpus}", file=sys.stderr)
        return 1
    print(f"load average before: {_load()}")
    best: dict = {}
    for _ in range(args.rounds):
        for kind in ("replay", "live"):
            out = subprocess.run([sys.executable, __file__, "--child", kind, "--corpus",
                                  args.corpus, "--copies", str(args.copies), "--config",
                                  args.config], capture_output=True, text=True, check=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            for label, r in res.items():
                key = (kind, label)
                if key not in best or r["cpu"] < best[key]["cpu"]:
                    best[key] = r
    print(f"load average after:  {_load()}")
    n = best[("replay", "cold")]["records"]
    ok = True
    print(f"{n:,} records (Panache x{args.copies}), config {args.config}")
    print("row    replay ev/s  live ev/s  live/replay  written (replay/live)  committed")
    for label in ("cold", "warm"):
        r, lv = best[("replay", label)], best[("live", label)]
        rate_r, rate_l = n / r["cpu"], n / lv["cpu"]
        print(f"{label:<6} {rate_r:>11,.0f} {rate_l:>10,.0f} {rate_l / rate_r:>12.2f}  "
              f"{r['written']:>10,} / {lv['written']:<10,} {lv['committed']:>9,}")
        if lv["written"] != r["written"] or lv["committed"] != n or not n:
            ok = False
    if not ok:
        print("error: the live path did not write or commit what replay wrote", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
