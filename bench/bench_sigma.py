#!/usr/bin/env python3
"""Sigma detection throughput as a ratio of raw pyevtx-rs parsing, both measured in this run.

    python bench/bench_sigma.py [--corpus DIR] [--rules PATH] [--rounds N] [--warm-passes N]
                                [--alerts jsonl|none] [--jobs N]
    python bench/bench_sigma.py --build-evtx-mb MB [--rounds N]
    python bench/bench_sigma.py --startup [--build-evtx-mb MB] [--rounds N]
    python bench/bench_sigma.py --zircolite DIR [--zircolite-python PY] [--build-evtx-mb MB]

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

``--build-evtx-mb MB`` (alone, with ``--startup`` or with ``--zircolite``) measures on one valid EVTX of
about MB megabytes instead of the corpus files, built by bench_size.py's builder (its corpus
file's chunks repeated and renumbered; :func:`bench_size.build_evtx`) in a temporary folder: the
"cold single process including start-up" case on a large input, as a ratio to the bare parse of
the same file in the same run.

``--zircolite DIR`` times Zircolite (a checkout of it in DIR, run by the python of its own venv,
``--zircolite-python``, with its bundled Sysmon ruleset ``rules/rules_windows_sysmon.json`` or,
where the checkout lacks it, ``rules_windows_sysmon_high.json``, which its rules/README.md gives
as the same rules) and ``sysmonx replay INPUT --rules PATH --no-output --alerts FILE`` on the
same input (the corpus EVTX folder, or the built EVTX), each a fresh process (with
``--keep-duplicates``: Zircolite matches every record, and the built EVTX repeats its events,
which a default replay would drop unmatched as duplicates): SysmonX with its
rule cache filled beforehand (warm cache) and with ``--no-rule-cache``. Before every run the
inputs' and rule files' pages are dropped from the page cache; rounds are interleaved, best of
each. Per run: CPU seconds (user + system from ``wait4``, every waited-for descendant included,
so Zircolite's worker processes count), wall seconds (marked: the machine is shared), the
records each side reports and its detections. Exits non-zero when either side failed, read
nothing or detected nothing, or the cached run did not use the cache.

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
from typing import Optional

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


def startup(args, files: list[str], rules: Path, what: str = "small folder") -> int:
    """The ``--startup`` measurements (see the module docstring); ``what`` names the input in
    the rows (``small folder``: the corpus EVTX; a built EVTX with ``--build-evtx-mb``)."""
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
    size = sum(os.path.getsize(f) for f in files) / 2**20
    print(f"files: {len(files)} ({size:,.1f} MB)  records: {n}  rules: {rules.name}  CPU time, "
          "one core (pinned "
          f"to CPU {cpu}), best of {args.rounds} fresh children each; load average "
          f"before/after: {load_before} / {load_after}")
    print(f"fill of the cache (compile + store, once): {fill['startup']:.2f} s")
    print(f"{'row':<44}{'measured s':>11}{'whole process s':>17}{'ratio':>8}")
    print(f"{'baseline pyevtx-rs records_json, cold':<44}{best['base']:11.3f}"
          f"{whole['base']:17.3f}{1:8.3f}")
    for label, k in (("start-up, rules compiled (no cache)", "compile"),
                     ("start-up, rules from the cache", "cached")):
        print(f"{label:<44}{best[k]:11.3f}{whole[k]:17.3f}")
    for label, k in ((f"{what} cold, no cache", "folder"),
                     (f"{what} cold, cached rules", "folder_cached")):
        print(f"{label:<44}{best[k]:11.3f}{whole[k]:17.3f}{best['base'] / best[k]:8.3f}"
              f"   (whole processes: {whole['base'] / whole[k]:.3f})")
    return 0


def _run_measured(cmd: list[str], cwd: str, env: Optional[dict] = None) -> dict:
    """Run ``cmd`` as a child; its exit code, stdout, stderr, wall seconds and CPU seconds
    (user + system from ``wait4``: the child and every descendant it waited for)."""
    import subprocess
    import tempfile
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, env=env,
                                stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {"rc": proc.returncode, "wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
                "maxrss": usage.ru_maxrss * 1024,
                "out": out.read().decode("utf-8", "replace"),
                "err": err.read().decode("utf-8", "replace")}


def _rss_mb() -> float:
    """This process's resident set (``VmRSS``), MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _entries(directory: str) -> dict:
    """``{path: (size, inode)}`` of every file under ``directory`` (a hit touches its entry's
    mtime; a store writes a new file and renames it)."""
    out = {}
    for p in Path(directory).rglob("*"):
        if p.is_file():
            st = p.stat()
            out[str(p)] = (st.st_size, st.st_ino)
    return out


def zircolite_ruleset(zdir: Path) -> Optional[Path]:
    """Zircolite's bundled Sysmon ruleset in its checkout ``zdir``: ``rules_windows_sysmon.json``,
    else ``rules_windows_sysmon_high.json`` (its rules/README.md: the same rules, level high and
    above); ``None`` when neither is there."""
    for name in ("rules_windows_sysmon.json", "rules_windows_sysmon_high.json"):
        p = zdir / "rules" / name
        if p.is_file():
            return p
    return None


def _zircolite_detections(path: Path) -> int:
    """Matched events in a Zircolite JSON result file (the sum of each rule's ``count``)."""
    import json
    with open(path, "rb") as f:
        return sum(int(r.get("count", 0)) for r in json.load(f))


def zircolite(args, target: str, files: list[str], rules: Path) -> int:
    """``--zircolite``: Zircolite and ``sysmonx replay --rules`` on the same input in the same
    run, each a fresh process (see the module docstring)."""
    import re
    import shutil
    import tempfile
    zdir = Path(args.zircolite).resolve()
    zpy = Path(args.zircolite_python) if args.zircolite_python else zdir / ".venv/bin/python"
    zrules = Path(args.zircolite_ruleset) if args.zircolite_ruleset else zircolite_ruleset(zdir)
    missing = [str(p) for p in (zdir / "zircolite.py", zpy) if not p.exists()]
    if zrules is None or not zrules.is_file():
        missing.append(str(zrules or zdir / "rules/rules_windows_sysmon.json"))
    if missing:
        print(f"error: Zircolite not runnable: missing {', '.join(missing)}", file=sys.stderr)
        return 1
    load_before = _load()
    tmp = tempfile.mkdtemp(prefix="sysmonx-zircolite-")
    try:
        cache = os.path.join(tmp, "cache")
        env = dict(os.environ, SYSMONX_CACHE_DIR=cache)
        sx = [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv.pop(1)); "
              "from sysmonx.cli.dispatch import main; sys.exit(main(sys.argv[1:]))",
              str(ROOT / "src"), "replay", target, "--rules", str(rules), "--no-output",
              "--no-progress", "--keep-duplicates", "--alerts", os.path.join(tmp, "alerts.jsonl")]
        runs = {
            "zircolite": [str(zpy), str(zdir / "zircolite.py"), "--evtx", target, "--ruleset",
                          str(zrules), "-c", str(zdir / "config" / "config.yaml"),
                          "-o", os.path.join(tmp, "zircolite.json"), "-q"],
            "cached": sx + ["--rule-cache", cache],
            "compiled": sx + ["--no-rule-cache"],
        }
        fill = _run_measured(runs["cached"], tmp, env)  # fills the rule cache (not timed)
        if fill["rc"] != 0:
            print(f"error: sysmonx replay failed:\n{fill['err'][-2000:]}", file=sys.stderr)
            return 1
        entries = _entries(cache)  # a run that finds its entry writes none
        if not entries:
            print("error: the rule cache holds no entry after filling it", file=sys.stderr)
            return 1
        res: dict = {k: [] for k in runs}
        for _ in range(args.rounds):
            for k, cmd in runs.items():
                _evict(files + [str(rules), str(zrules)])
                for f in ("alerts.jsonl", "zircolite.json"):
                    if os.path.exists(os.path.join(tmp, f)):
                        os.unlink(os.path.join(tmp, f))
                r = _run_measured(cmd, tmp, env)
                if r["rc"] != 0:
                    print(f"error: {k} exited {r['rc']}:\n{(r['err'] or r['out'])[-2000:]}",
                          file=sys.stderr)
                    return 1
                if k == "zircolite":
                    m = re.search(r"Events\s+([\d,]+)", r["out"])
                    r["records"] = int(m.group(1).replace(",", "")) if m else 0
                    out = Path(tmp, "zircolite.json")
                    r["alerts"] = _zircolite_detections(out) if out.is_file() else 0
                else:
                    m = re.search(r"records read: ([\d,]+)\s+Sysmon events: ([\d,]+)",
                                  r["out"] + r["err"])
                    r["records"] = int(m.group(1).replace(",", "")) if m else 0
                    r["events"] = int(m.group(2).replace(",", "")) if m else 0
                    if re.search(r"duplicates dropped: [1-9]", r["out"] + r["err"]):  # all matched
                        print(f"error: sysmonx dropped duplicates:\n{r['err'][-1000:]}",
                              file=sys.stderr)
                        return 1
                    with open(os.path.join(tmp, "alerts.jsonl"), "rb") as f:
                        r["alerts"] = sum(1 for _ in f)
                    if k == "cached" and _entries(cache) != entries:
                        print("error: the rule cache was not used (its entries changed)",
                              file=sys.stderr)
                        return 1
                res[k].append(r)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = _load()
    bad = [(k, r["records"], r["alerts"]) for k, v in res.items() for r in v
           if not r["records"] or not r["alerts"]]
    if bad:
        print(f"error: a side read or detected nothing: {bad[:3]}", file=sys.stderr)
        return 1
    cpu = {k: min(r["cpu"] for r in v) for k, v in res.items()}
    wall = {k: min(r["wall"] for r in v) for k, v in res.items()}
    size = sum(os.path.getsize(f) for f in files) / 2**20
    print(f"input: {target} ({len(files)} EVTX files, {size:,.1f} MB); pages dropped before "
          f"every run; best of {args.rounds} rounds, interleaved; load average before/after: "
          f"{load_before} / {load_after}")
    print(f"Zircolite: {zdir} (python {zpy}), ruleset {zrules.name}; SysmonX: sysmonx replay "
          f"--rules {rules.name} --no-output --keep-duplicates --alerts FILE")
    print(f"{'run':<38}{'CPU s':>8}{'wall s*':>9}{'records':>9}{'detections':>12}"
          f"{'max RSS MB':>12}{'CPU vs Zircolite':>18}")
    for label, k in (("Zircolite", "zircolite"), ("SysmonX, rules from the cache (warm)", "cached"),
                     ("SysmonX, rules compiled (no cache)", "compiled")):
        r = min(res[k], key=lambda x: x["cpu"])
        ratio = "" if k == "zircolite" else f"{cpu['zircolite'] / cpu[k]:17.2f}x"
        print(f"{label:<38}{cpu[k]:8.2f}{wall[k]:9.2f}{r['records']:9,}{r['alerts']:12,}"
              f"{r['maxrss'] / 2**20:12.1f} {ratio}")
    print(f"max RSS: ru_maxrss from wait4 (Linux counts the forking bench's own resident set, "
          f"{_rss_mb():.0f} MB, into it: a floor, not the child's)")
    print(f"* wall seconds on a shared machine: read with the load average. Wall ratio "
          f"(Zircolite / SysmonX cached): {wall['zircolite'] / wall['cached']:.2f}x; CPU: "
          f"{cpu['zircolite'] / cpu['cached']:.2f}x. Records: what each reports having read "
          "(Zircolite counts the events it kept after its channel/EventID pre-filter); "
          "detections: Zircolite's matched events, SysmonX's alerts (different rule sets).")
    return 0


def build_large_evtx(corpus: Path, megabytes: float, dst: Path) -> int:
    """A valid EVTX of about ``megabytes`` MB (2**20 bytes) at ``dst``, built by bench_size.py's builder from
    its corpus file (its chunks repeated and renumbered); returns its records."""
    from bench_size import _CHUNK, EVTX_REL, _chunks, build_evtx
    src = corpus / EVTX_REL
    per_copy = len(_chunks(src.read_bytes())) * _CHUNK  # the chunks that carry records
    copies = max(1, round(megabytes * 2**20 / per_copy))
    return build_evtx(src, copies, dst)


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
    ap.add_argument("--build-evtx-mb", type=float, metavar="MB",
                    help="measure on one valid EVTX of about MB megabytes built by "
                         "bench_size.py's builder instead of the corpus files")
    ap.add_argument("--zircolite", metavar="DIR",
                    help="time Zircolite (its checkout in DIR) and sysmonx replay --rules on the "
                         "same input in the same run, cold, CPU and wall")
    ap.add_argument("--zircolite-python", metavar="PATH",
                    help="the python of Zircolite's own venv (default DIR/.venv/bin/python)")
    ap.add_argument("--zircolite-ruleset", metavar="FILE",
                    help="default: its bundled rules/rules_windows_sysmon.json (or _high.json)")
    args = ap.parse_args()
    corpus = Path(args.corpus)
    files = sorted(str(p) for p in (corpus / "evtx").rglob("*.evtx"))
    if not files:
        print(f"no EVTX under {corpus / 'evtx'}; set --corpus or SYSMONX_CORPUS", file=sys.stderr)
        return 1
    rules = Path(args.rules) if args.rules else \
        corpus / "sigma" / "sigmahq_rules_sysmon_categories.tar.gz"
    if args.build_evtx_mb is not None:
        import shutil
        import tempfile
        tmp = tempfile.mkdtemp(prefix="sysmonx-sigma-")
        try:
            built = Path(tmp) / f"x{args.build_evtx_mb:g}MB.evtx"
            build_large_evtx(corpus, args.build_evtx_mb, built)
            what = f"{built.stat().st_size / 2**20:.0f} MB EVTX"
            if args.zircolite:
                return zircolite(args, str(built), [str(built)], rules)
            if args.startup:
                return startup(args, [str(built)], rules, what)
            return passes(args, [str(built)], rules)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.zircolite:
        return zircolite(args, str(corpus / "evtx"), files, rules)
    if args.startup:
        return startup(args, files, rules)
    return passes(args, files, rules)


def passes(args, files: list[str], rules: Path) -> int:
    """The default rows (module docstring) over ``files``."""
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
    compiled: set = set()
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
        if loaded is None:  # a stage consumes its rules (drops their parsed detections)
            loaded = load_rules([rules])
        t = time.perf_counter()
        stage = DetectionStage(loaded, DetectionOptions())
        t_compile = time.perf_counter() - t
        loaded = None
        compiled.add(stage.rules_loaded)
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
    if len(compiled) != 1 or not stage.rules_loaded:
        print(f"error: rules compiled per round: {sorted(compiled)} (none, or not the same in "
              "every round)", file=sys.stderr)
        return 1
    ok = n > 0 and counts["read"] == n and counts["cold"] == n and \
        counts["warm"] == n * args.warm_passes and counts["a_warm"] == \
        counts["a_cold"] * args.warm_passes
    if not ok:
        print(f"error: records or alerts differ between paths: {counts}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
