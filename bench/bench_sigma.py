#!/usr/bin/env python3
"""Sigma detection throughput as a ratio of raw pyevtx-rs parsing, both measured in this run.

    python bench/bench_sigma.py [--corpus DIR] [--rules PATH] [--rounds N] [--warm-passes N]
                                [--alerts jsonl|none] [--jobs N]

Baseline: iterate ``evtx.PyEvtxParser(f).records_json()`` over every EVTX under
``<corpus>/evtx`` (the parse alone, no JSON decoding), as bench/bench_replay.py does. Measured:
the replay read path (:func:`sysmonx.sources.open_source`, the events the pipeline's sources
yield) with every event through a :class:`~sysmonx.detection.DetectionStage` loaded with all
SigmaHQ rules of ``<corpus>/sigma/sigmahq_rules_sysmon_categories.tar.gz``, every alert rendered
as a JSON line into a null stream (``--alerts none`` skips rendering), and ``finish()`` at the
end. Also shown: the read path alone, so the detection's own cost is visible.

Two rows, because the stage remembers field values and re-chooses each rule's lead clause from
what it sees, so a second pass over the same records is cheaper than the first:

* **cold** (the headline): a freshly compiled stage (compiling is not timed: it happens once
  per replay) makes ONE pass over the files, as a replay of those files does;
* **warm** (second row): the same stage after it has seen the files once, ``--warm-passes``
  more passes (a long replay or the live sensor, whose memories are settled).

Times are CPU seconds of this process (``time.process_time``: every thread, so pyevtx-rs's
parser threads count for the baseline as for the measured path), robust to other load on the
machine; each round measures baseline, read path, cold and warm one after another, and the best
round of each is used. The load average is printed before and after (``/proc/loadavg``): rerun
when the machine was busy. The exit status is non-zero when the measured path read a different
number of records than the baseline, or nothing at all.
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

from sysmonx.detection import DetectionOptions, DetectionStage, load_rules  # noqa: E402
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


def _work(task: tuple) -> tuple[int, int, float]:
    files, render = task
    t = time.process_time()
    n, alerts = detect(files, _WORKER["stage"], render)
    return n, alerts, time.process_time() - t


def detect_parallel(files: list[str], stage: DetectionStage, render: bool,
                    jobs: int) -> tuple[int, int, float]:
    """Files spread over ``jobs`` forked workers (contiguous groups, as replay --jobs does);
    returns records, alerts and the workers' CPU seconds summed."""
    import multiprocessing
    _WORKER["stage"] = stage
    size = -(-len(files) // (jobs * 4))
    tasks = [(files[i:i + size], render) for i in range(0, len(files), size)]
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        results = pool.map(_work, tasks, chunksize=1)
    return (sum(r[0] for r in results), sum(r[1] for r in results),
            sum(r[2] for r in results))


def _cpu(fn, *args):
    """``(result, CPU seconds of this process)`` of ``fn(*args)``."""
    t = time.process_time()
    out = fn(*args)
    return out, time.process_time() - t


def _load() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=default_corpus())
    ap.add_argument("--rules", default=None,
                    help="default: <corpus>/sigma/sigmahq_rules_sysmon_categories.tar.gz")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warm-passes", type=int, default=1,
                    help="passes of the warm row (after one unmeasured pass; default 1)")
    ap.add_argument("--alerts", default="jsonl", choices=["jsonl", "none"])
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    args = ap.parse_args()
    corpus = Path(args.corpus)
    files = sorted(str(p) for p in (corpus / "evtx").rglob("*.evtx"))
    if not files:
        print(f"no EVTX under {corpus / 'evtx'}; set --corpus or SYSMONX_CORPUS", file=sys.stderr)
        return 1
    rules = Path(args.rules) if args.rules else \
        corpus / "sigma" / "sigmahq_rules_sysmon_categories.tar.gz"
    load_before = _load()
    t = time.perf_counter()
    loaded = load_rules([rules])
    t_load = time.perf_counter() - t
    render = args.alerts == "jsonl"
    baseline(files)  # page cache and imports warm for everyone alike (not the stage)
    read_only(files)
    best = {"base": float("inf"), "read": float("inf"), "cold": float("inf"),
            "warm": float("inf")}
    counts: dict = {}
    stage = None
    t_compile = 0.0
    warm_files = files * args.warm_passes

    def run(stage_, work):
        if args.jobs > 1:
            n, alerts, cpu = detect_parallel(work, stage_, render, args.jobs)
            return (n, alerts), cpu
        return _cpu(detect, work, stage_, render)

    for _ in range(args.rounds):
        n_base, cpu = _cpu(baseline, files)
        best["base"] = min(best["base"], cpu)
        n_read, cpu = _cpu(read_only, files)
        best["read"] = min(best["read"], cpu)
        if stage is not None:
            stage.close()
        t = time.perf_counter()
        stage = DetectionStage(loaded, DetectionOptions())
        t_compile = time.perf_counter() - t
        (n_cold, a_cold), cpu = run(stage, files)  # a fresh stage's first pass
        best["cold"] = min(best["cold"], cpu)
        if args.jobs > 1:
            detect(files, stage, render)  # workers fork from a parent that has seen the files
        (n_warm, a_warm), cpu = run(stage, warm_files)  # the same stage, again
        best["warm"] = min(best["warm"], cpu)
        counts = {"base": n_base, "read": n_read, "cold": n_cold, "warm": n_warm,
                  "a_cold": a_cold, "a_warm": a_warm}
    load_after = _load()
    rej = stage.rejection_summary()
    n = counts["base"]
    print(f"files: {len(files)}  records per pass: {n}  load average before/after: "
          f"{load_before} / {load_after}")
    print(f"rules: {rules.name}: {stage.rules_loaded} compiled, {sum(rej.values())} rejected "
          f"({', '.join(f'{k}: {v}' for k, v in sorted(rej.items())) or 'none'}), "
          f"{stage.matcher.unindexed} evaluated on every event of their log source; "
          f"load {t_load:.2f} s, compile {t_compile:.2f} s (not timed below)")
    print(f"alerts per pass: {counts['a_cold']}  (rendered: {args.alerts})  jobs: {args.jobs}  "
          f"times: CPU seconds, best of {args.rounds} rounds")
    rate = {k: (counts[k] / best[k] if best[k] > 0 else 0.0) for k in ("base", "read", "cold",
                                                                        "warm")}
    warm_label = f"replay + Sigma, warm ({args.warm_passes} pass" + \
        ("es):" if args.warm_passes > 1 else "):")
    rows = [("baseline pyevtx-rs records_json:", "base", ""),
            ("replay read path alone:", "read", ""),
            ("replay + Sigma, cold single pass:", "cold", "   <- headline"),
            (warm_label, "warm", "")]
    for label, key, tail in rows:
        ratio = "" if key == "base" else f" (ratio {rate[key] / rate['base']:.3f})"
        print(f"{label:<36}{rate[key]:12,.0f} records/s{ratio}{tail}")
    if args.jobs == 1:
        print(f"detection's own cost, cold: {(best['cold'] - best['read']) / n * 1e6:.1f} us "
              f"per event; warm: {(best['warm'] / args.warm_passes - best['read']) / n * 1e6:.1f}"
              " us")
    ok = n > 0 and counts["read"] == n and counts["cold"] == n and \
        counts["warm"] == n * args.warm_passes and counts["a_warm"] == \
        counts["a_cold"] * args.warm_passes
    if not ok:
        print(f"error: records or alerts differ between paths: {counts}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
