#!/usr/bin/env python3
"""Sigma detection throughput as a ratio of raw pyevtx-rs parsing, both measured in this run.

    python bench/bench_sigma.py [--corpus DIR] [--rules PATH] [--rounds N] [--repeat N]
                                [--alerts jsonl|none] [--jobs N] [--warm]

Baseline: iterate ``evtx.PyEvtxParser(f).records_json()`` over every EVTX under
``<corpus>/evtx`` (the parse alone, no JSON decoding), as bench/bench_replay.py does. Measured:
the replay read path (:func:`sysmonx.sources.open_source`, the events the pipeline's sources
yield) with every event through a :class:`~sysmonx.detection.DetectionStage` loaded with all
SigmaHQ rules of ``<corpus>/sigma/sigmahq_rules_sysmon_categories.tar.gz``, every alert rendered
as a JSON line into a null stream (``--alerts none`` skips rendering), and ``finish()`` at the
end. Also shown: the read path alone, so the detection's own cost is visible.

Each round builds a fresh stage (compiling the rules is not timed: it happens once per replay),
so its value caches and lead-clause calibration start cold; a round replays the file list
``--repeat`` times. ``--warm`` keeps one stage for all rounds instead (a long replay or the live
sensor, whose memories of field values and lead clauses are settled). ``--jobs N`` spreads the
files over N forked worker processes, each with its own copy of the compiled stage, as
``sysmonx replay --jobs`` spreads files (valid for detection rules; correlations need one
stream and so one process). Times are wall-clock; rounds are interleaved and the best round of
each measurement is used, so background load on the machine hurts all alike. Issue target:
ratio >= 0.25.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from _common import baseline, default_corpus  # noqa: E402


from sysmonx.detection import DetectionStage, load_rules  # noqa: E402
from sysmonx.sources import open_source  # noqa: E402


def read_only(files: list[str]) -> int:
    n = 0
    for f in files:
        for _ in open_source(f, _ignore):
            n += 1
    return n


def _ignore(err) -> None:
    pass


def detect(files: list[str], stage: DetectionStage, render: bool) -> tuple[int, int]:
    n = alerts = 0
    process = stage.process
    with open(os.devnull, "wb") as out:
        for f in files:
            for ev in open_source(f, _ignore):
                n += 1
                found = process(ev)
                if found:
                    alerts += len(found)
                    if render:
                        out.write(b"".join(a.to_json() for a in found))
        found = stage.finish()
        alerts += len(found)
        if render:
            out.write(b"".join(a.to_json() for a in found))
    return n, alerts


_WORKER: dict = {}


def _work(task: tuple) -> tuple[int, int]:
    files, render = task
    return detect(files, _WORKER["stage"], render)


def detect_parallel(files: list[str], stage: DetectionStage, render: bool,
                    jobs: int) -> tuple[int, int]:
    """Files spread over ``jobs`` forked workers (contiguous groups, as replay --jobs does)."""
    import multiprocessing
    _WORKER["stage"] = stage
    size = -(-len(files) // (jobs * 4))
    tasks = [(files[i:i + size], render) for i in range(0, len(files), size)]
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        results = pool.map(_work, tasks, chunksize=1)
    return sum(r[0] for r in results), sum(r[1] for r in results)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=default_corpus())
    ap.add_argument("--rules", default=None,
                    help="default: <corpus>/sigma/sigmahq_rules_sysmon_categories.tar.gz")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3, help="passes over the file set per round")
    ap.add_argument("--alerts", default="jsonl", choices=["jsonl", "none"])
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    ap.add_argument("--warm", action="store_true", help="one stage for all rounds")
    args = ap.parse_args()
    corpus = Path(args.corpus)
    files = sorted(str(p) for p in (corpus / "evtx").rglob("*.evtx"))
    if not files:
        print(f"no EVTX under {corpus / 'evtx'}; set --corpus or SYSMONX_CORPUS", file=sys.stderr)
        return 1
    rules = Path(args.rules) if args.rules else \
        corpus / "sigma" / "sigmahq_rules_sysmon_categories.tar.gz"
    t = time.perf_counter()
    loaded = load_rules([rules])
    t_load = time.perf_counter() - t
    t = time.perf_counter()
    stage = DetectionStage(loaded)
    t_compile = time.perf_counter() - t
    work = files * args.repeat
    render = args.alerts == "jsonl"
    baseline(files)  # warm the page cache and imports
    detect(files, stage, render)
    best_base = best_read = best_det = float("inf")
    n_base = n_det = n_alerts = 0
    for _ in range(args.rounds):
        if not args.warm:
            stage.close()
            stage = DetectionStage(loaded)
        t = time.perf_counter()
        n_base = baseline(work)
        best_base = min(best_base, time.perf_counter() - t)
        t = time.perf_counter()
        read_only(work)
        best_read = min(best_read, time.perf_counter() - t)
        t = time.perf_counter()
        if args.jobs > 1:
            n_det, n_alerts = detect_parallel(work, stage, render, args.jobs)
        else:
            n_det, n_alerts = detect(work, stage, render)
        best_det = min(best_det, time.perf_counter() - t)
    if n_base != n_det:
        print(f"warning: baseline read {n_base} records, detection {n_det}", file=sys.stderr)
    base_rate, read_rate, det_rate = n_base / best_base, n_det / best_read, n_det / best_det
    rej = stage.rejection_summary()
    print(f"files: {len(files)} x {args.repeat}  records per pass: {n_base // args.repeat}")
    print(f"rules: {rules.name}: {stage.rules_loaded} compiled, {sum(rej.values())} rejected "
          f"({', '.join(f'{k}: {v}' for k, v in sorted(rej.items())) or 'none'}), "
          f"{stage.matcher.unindexed} evaluated on every event of their log source; "
          f"load {t_load:.2f} s, compile {t_compile:.2f} s")
    print(f"alerts per round: {n_alerts}  (rendered: {args.alerts})  jobs: {args.jobs}  "
          f"stage: {'warm' if args.warm else 'fresh per round'}")
    print(f"baseline pyevtx-rs records_json: {base_rate:12,.0f} records/s")
    print(f"replay read path alone:          {read_rate:12,.0f} records/s "
          f"(ratio {read_rate / base_rate:.3f})")
    print(f"replay + Sigma detection:        {det_rate:12,.0f} records/s")
    if args.jobs == 1:
        print(f"detection's own cost: {(best_det - best_read) / n_det * 1e6:.2f} us per event")
    print(f"ratio detection/baseline: {det_rate / base_rate:.3f}  (target >= 0.25)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
