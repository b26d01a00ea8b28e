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

``--startup`` measures instead what a short run pays before and around its events, each
measurement a fresh child process pinned to one CPU (CPU time: user + system), rounds
interleaved, best of each:

* **compile**: load and compile the rules (``DetectionStage.from_paths``), no cache;
* **cached**: the same from a filled rule cache (:mod:`sysmonx.detection.cache`);
* **small folder, cold**: start-up plus one pass over the corpus EVTX files (pages dropped from
  the page cache first), with no cache and with a filled cache, against the baseline child's
  parse of the same files; each also as the child's whole CPU time (interpreter start and
  imports included, from ``wait4``), beside the baseline child's whole CPU time.

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


def _evict(files: list[str]) -> None:
    """Drop the files' pages from the page cache (clean pages only; best effort)."""
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def startup_child(spec: dict) -> dict:
    """One start-up measurement in this (fresh) process; see the module docstring."""
    os.sched_setaffinity(0, {spec["cpu"]})
    from sysmonx.detection.cache import RuleCache
    files = spec["files"]
    _evict(files + [spec["rules"]])
    out: dict = {}
    t = time.process_time()
    if spec["what"] == "baseline":
        out["records"] = baseline(files)
        out["cpu"] = time.process_time() - t
        return out
    cache = RuleCache(spec["cache"]) if spec["cache"] else None
    stage = DetectionStage.from_paths([spec["rules"]], DetectionOptions(), cache=cache)
    out["startup"] = time.process_time() - t
    out["status"] = stage.cache_status
    if spec["what"] == "folder":
        n, alerts = detect(files, stage, True)
        out["records"], out["alerts"] = n, alerts
    out["cpu"] = time.process_time() - t
    return out


def _startup_run(spec: dict) -> dict:
    import json
    import subprocess
    proc = subprocess.Popen([sys.executable, __file__, "--startup-child", json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    if proc.returncode != 0:
        raise RuntimeError(f"measurement failed: {spec['what']}:\n{err}")
    res = json.loads(out)
    res["whole"] = usage.ru_utime + usage.ru_stime
    return res


def startup(args, files: list[str], rules: Path) -> int:
    """The ``--startup`` measurements (see the module docstring)."""
    import tempfile
    cpu = max(os.sched_getaffinity(0))
    load_before = _load()
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "cache")
        common = {"files": files, "rules": str(rules), "cpu": cpu}
        fill = _startup_run(dict(common, what="startup", cache=cache))
        assert fill["status"] == "compiled", fill
        res: dict = {k: [] for k in ("base", "compile", "cached", "folder", "folder_cached")}
        for _ in range(args.rounds):
            res["base"].append(_startup_run(dict(common, what="baseline")))
            res["compile"].append(_startup_run(dict(common, what="startup", cache=None)))
            res["cached"].append(_startup_run(dict(common, what="startup", cache=cache)))
            res["folder"].append(_startup_run(dict(common, what="folder", cache=None)))
            res["folder_cached"].append(_startup_run(dict(common, what="folder", cache=cache)))
    load_after = _load()
    bad = [r for k in ("cached", "folder_cached") for r in res[k] if r["status"] != "cached"]
    bad += [r for k in ("compile", "folder") for r in res[k] if r["status"] != "compiled"]
    n = res["base"][0]["records"]
    bad += [r for k in ("folder", "folder_cached") for r in res[k] if r["records"] != n]
    if n == 0 or bad:
        print(f"error: a measurement did not run as intended: {bad[:2]}", file=sys.stderr)
        return 1
    best = {k: min(r["cpu"] for r in v) for k, v in res.items()}
    whole = {k: min(r["whole"] for r in v) for k, v in res.items()}
    print(f"files: {len(files)}  records: {n}  rules: {rules.name}  CPU time, one core (pinned "
          f"to CPU {cpu}), best of {args.rounds} fresh children each; load average "
          f"before/after: {load_before} / {load_after}")
    print(f"fill of the cache (compile + store, once): {fill['startup']:.2f} s")
    print(f"{'row':<44}{'measured s':>11}{'whole process s':>17}{'ratio':>8}")
    print(f"{'baseline pyevtx-rs records_json, cold':<44}{best['base']:11.3f}"
          f"{whole['base']:17.3f}{1:8.3f}")
    for label, k in (("start-up, rules compiled (no cache)", "compile"),
                     ("start-up, rules from the cache", "cached")):
        print(f"{label:<44}{best[k]:11.3f}{whole[k]:17.3f}")
    for label, k in (("small folder cold, no cache", "folder"),
                     ("small folder cold, cached rules", "folder_cached")):
        print(f"{label:<44}{best[k]:11.3f}{whole[k]:17.3f}{best['base'] / best[k]:8.3f}"
              f"   (whole processes: {whole['base'] / whole[k]:.3f})")
    return 0


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--startup-child":
        import json
        print(json.dumps(startup_child(json.loads(sys.argv[2]))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=default_corpus())
    ap.add_argument("--rules", default=None,
                    help="default: <corpus>/sigma/sigmahq_rules_sysmon_categories.tar.gz")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warm-passes", type=int, default=1,
                    help="passes of the warm row (after one unmeasured pass; default 1)")
    ap.add_argument("--alerts", default="jsonl", choices=["jsonl", "none"])
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    ap.add_argument("--startup", action="store_true",
                    help="measure start-up (compiled and cached rules) and the small-folder "
                         "case in fresh pinned children instead")
    args = ap.parse_args()
    corpus = Path(args.corpus)
    files = sorted(str(p) for p in (corpus / "evtx").rglob("*.evtx"))
    if not files:
        print(f"no EVTX under {corpus / 'evtx'}; set --corpus or SYSMONX_CORPUS", file=sys.stderr)
        return 1
    rules = Path(args.rules) if args.rules else \
        corpus / "sigma" / "sigmahq_rules_sysmon_categories.tar.gz"
    if args.startup:
        return startup(args, files, rules)
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
