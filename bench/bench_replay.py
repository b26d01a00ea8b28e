#!/usr/bin/env python3
"""Replay throughput as a ratio of raw pyevtx-rs parsing, both measured in this run.

    python bench/bench_replay.py [--corpus DIR] [--input PATH ... | --build-evtx-gb N]
                                 [--configs sos,modular,none] [--format jsonl] [--rounds N]
                                 [--repeat N] [--cpu N | --jobs N] [--keep DIR]

Inputs: every EVTX under ``<corpus>/evtx`` (default), the given files or folders (``--input``),
or one EVTX of about N GB (10^9 bytes) built by bench/bench_size.py's builder from
``PanacheSysmon_vs_AtomicRedTeam01.evtx`` (``--build-evtx-gb``; a valid file, its records
renumbered; built in a temporary folder, or ``--keep DIR``).

Baseline: iterate ``evtx.PyEvtxParser(f).records_json()`` over the inputs (the Rust parse alone,
no JSON decoding; bench/_common.py). Measured: ``Replayer`` over the same inputs with each
configuration of ``--configs`` (``sos``: SwiftOnSecurity's ``sysmonconfig-export.xml``,
``modular``: sysmon-modular's ``sysmonconfig.xml``, both from the corpus, ``none``: no config, a
path: that file), writing the included events in ``--format`` (default JSON lines) to a null
stream.

Every measurement runs in a fresh child process pinned to one CPU (``--cpu``, default the last
one), and is the child's CPU time (user + system, all threads) over the load window only:
imports are not timed; for the replay, loading and compiling the configuration is. Every
child, the baseline's too, runs as ``sysmonx replay`` does, with the garbage collector's first
threshold raised (``sysmonx.pipeline.replay.replay_collector``, since 2026-12-08), so neither
side gains from the setting alone.

* **cold** (the headline): the child's first pass, after the inputs' pages were dropped from the
  page cache (``posix_fadvise(DONTNEED)``) and with the filter's memo tables empty.
* **warm** (second row): the same child then replays the inputs ``--repeat`` times per pass with
  the compiled configuration kept, ``--rounds`` passes, best pass.

Each config runs three rows: the config and filter plan caches **empty** (a config's first run,
the headline), **warm** (filled by two replays beforehand: any later run) and **off**
(``SYSMONX_CONFIG_CACHE=0``: what a first run costs without the caches, in the same run); each
child's cache status is checked (exit 1 otherwise).

Baseline and replay children are interleaved ``--rounds`` times; the best cold and the best warm
figure of each are used, so background load hurts all alike. The baseline, being cheap, runs
``--baseline-runs`` children per round (default 3): a cold read that happened to be slow (the
page-cache misses cost system time that varies from run to run) cannot make the ratios
flatter. ``uptime`` load averages are
printed before and after. The ratio is replay records/s over baseline records/s (both count every
record read). ``--jobs N`` (N > 1) replays on N worker processes instead (as
``sysmonx replay --jobs``); those children are not pinned and the figure is wall time.
Exit status 1 when there is nothing to measure or a replay read a different number of records
than the baseline.

``--jobs-speedup`` (wall time of one process against ``--jobs N``, fresh unpinned children,
interleaved, cold and warm; see ``_speedup``) takes ``--rules PATH`` (``corpus``: the corpus's
SigmaHQ bundle) to replay with Sigma detection and correlation as ``sysmonx replay --rules
--jobs N`` does: the workers match, the parent correlates and writes the alerts. The rules are
compiled in each child before its load window (both sides compile them once, in the parent);
the exit status is 1 when a run read other records or raised other alerts than one process.
``--build-evtx-gb N --build-files K`` builds K files of N/K GB (copies of one built file) so
the workers have files to share.

Two analysis modes use the same inputs and configurations:

``--pure`` measures the pure-Python paths (``SYSMONX_PURE_PYTHON=1``) instead of the compiled
extension (``sysmonx.core._speedups``, used when built); ``--compare-pure`` adds a pure-Python row
per configuration to the same run, its children interleaved with the others. The active path is
printed.

``--filter-only``
    the filter alone, in this process pinned to one CPU: the Sysmon events of the inputs (any
    format replay reads, not only EVTX) are decoded in
    blocks of 10,000 (fresh objects every pass, as a replay has them; decoding not timed) and each
    block is decided by ``FilterEngine`` with the index (default) and with the plain walk
    (``EngineOptions(indexed=False)``), the baseline of this mode. Cold: a freshly compiled
    engine's first pass; warm: the best of ``--rounds`` further passes. Prints compile time
    (the engine and the deciders of the EventIDs the inputs hold, which a replay compiles on
    their first events), microseconds per event and walk/index.
``--split [--upper-bound]``
    a record's cost cut into steps (parse, decoding, conversion, rendering, reader, loop,
    duplicate check), cumulative loops in this process pinned to one CPU; ``--upper-bound`` adds
    the replays with ``--configs``, the same and the no-config replay with the loop's raw path
    off (every record an Event), and a prototype that writes JSON lines straight from each
    record's text (bench/_transcode_proto.c, not part of sysmonx; see ``_split``).
``--fixed-costs``
    a cold replay's fixed costs, each measured apart in fresh children pinned to one CPU
    (CPU time, ``time.process_time``; imports outside the window, pages dropped as for the
    headline; the median of ``--rounds`` children per figure): per configuration, reading and
    parsing it (``load_config``, no config cache: a first run) the first time in the process
    and again (the difference is the process's first-touch share: schema snapshot, entry
    points, code paths), building the engine, compiling each EventID's decider in the order a
    replay meets their first events (``FilterEngine.decider_for``; a replay does it on that
    first event) and the replay's first pass with the deciders compiled against its second
    (what the first pass pays for memo tables, predicates and caches filled on first use);
    per file, the set-up beyond the records: for the bare parse, the EVTX reader alone
    (``read_evtx_batches``) and a whole replay of one file (no config, no duplicate check), a
    least-squares fit of each file's CPU time against its record count over the inputs
    (best of 20 reads of each file, warm), whose intercept is the per-file cost; and the
    whole ``sysmonx replay --config FILE --format FMT -o /dev/null -q`` process (interpreter
    start, imports, command line, config, replay: user + system CPU of the child, not pinned)
    given the files by name and given their folder (a folder walk lists the registered
    input formats); per configuration also a *later run* (the config and plan caches filled
    by two uncounted runs in a temporary folder; exit status 1 unless both hit): the config
    read from the cache, the engine built (its plan cache entry read), the deciders built from
    the stored plans, and the first pass against the second.
``--profile``
    where a replay's time goes: one warm replay pass per configuration (config compiled
    beforehand) sampled by pyinstrument (``pip install pyinstrument``), CPU time split into the
    parse, JSON decoding, record conversion, filter, writing and the pipeline loop.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from _common import baseline, default_corpus  # noqa: E402

CONFIGS = {
    "sos": "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml",
    "modular": "configs/olafhartong__sysmon-modular/sysmonconfig.xml",
}
LABELS = {"sos": "SwiftOnSecurity", "modular": "sysmon-modular", "none": "no config"}


class _Null(io.RawIOBase):
    def writable(self):
        return True

    def write(self, b):
        return len(b)


def _cpu() -> float:
    """CPU time of this process (user + system, all threads), seconds."""
    return time.process_time()


def _all_cpu() -> float:
    """CPU seconds of this process and its waited-for children (``--jobs`` workers)."""
    import resource
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def _evict(files: list[str]) -> None:
    """Drop the files' pages from the page cache (clean pages only; best effort)."""
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _decoded(files: list[str]) -> int:
    """Second reference: the parse plus decoding each record's JSON text (``orjson.loads``), the
    floor of any Python consumer of ``records_json()``."""
    import orjson
    from evtx import PyEvtxParser
    n = 0
    loads = orjson.loads
    for f in files:
        for rec in PyEvtxParser(f).records_json():
            loads(rec["data"])
            n += 1
    return n


def _one_pass(files: list[str]) -> list[str]:
    """The files of one pass: ``files`` up to the first that comes again."""
    out: list[str] = []
    seen: set = set()
    for f in files:
        if f in seen:
            break
        seen.add(f)
        out.append(f)
    return out


def _replay(files: list[str], config, fmt: str, engine, jobs: int,
            keep_duplicates: bool = False, detection=None) -> int:
    from sysmonx.pipeline import Replayer, ReplayOptions, make_writer, replay_parallel
    if keep_duplicates and jobs == 1:  # as --jobs: no duplicate filter (needs one stream)
        writer = None if fmt == "none" else make_writer(fmt, _Null())
        r = Replayer(ReplayOptions(config=config, keep_duplicates=True), writer, engine=engine,
                     detection=detection)
        r.read_ahead(files)  # as the command line
        for f in files:
            r.run_file(f)
        r.finish()  # open correlation windows, the filter's plans stored, as the CLI does
        if writer is not None:
            writer.close()
        return r.stats.records
    if jobs > 1:
        stats = replay_parallel(files, ReplayOptions(config=config, keep_duplicates=True),
                                None if fmt == "none" else fmt, _Null(), jobs, lambda line: None,
                                detection=detection)
        return stats.records
    if detection is not None:
        raise SystemExit("error: --rules is measured with --jobs-speedup (--keep-duplicates)")
    writer = None if fmt == "none" else make_writer(fmt, _Null())
    # One replayer per pass over the file list: its duplicate filter runs (and costs what it
    # costs) but a second pass over the same files is not taken for duplicates and dropped.
    total, r, seen = 0, None, set()
    for i, f in enumerate(files):
        if r is None or f in seen:
            total += r.stats.records if r is not None else 0
            r, seen = Replayer(ReplayOptions(config=config), writer, engine=engine), set()
            r.read_ahead(_one_pass(files[i:]))  # as the command line: the files it reads
        seen.add(f)
        r.run_file(f)
        if r.stats.duplicates:
            raise SystemExit(f"error: {f}: {r.stats.duplicates} records taken for duplicates "
                             "within one pass; the measurement would not write them")
    if r is not None:
        r.finish()  # the filter's plans stored, as the command line does at the end
    if writer is not None:
        writer.close()
    return total + (r.stats.records if r is not None else 0)


def child(spec: dict) -> dict:
    """One measurement (see the module docstring); ``spec`` as built by :func:`_run_child`."""
    jobs = spec["jobs"]
    files = spec["files"]
    if jobs == 0:  # what `sysmonx replay --jobs 0` picks for these files
        from sysmonx.pipeline import auto_jobs
        jobs = auto_jobs(files)
    wall = spec.get("wall") or jobs > 1
    clock = time.perf_counter if wall else _cpu
    if not wall and spec["cpu"] is not None:
        os.sched_setaffinity(0, {spec["cpu"]})
    # imports are outside the load window: everything the replay loads lazily is loaded here
    # (the whole process, imports included, is `--fixed-costs`' row). The loop's raw path does
    # not depend on what was imported first (tests/test_raw_path.py runs the command line in a
    # fresh process), so the child takes the path `sysmonx replay` takes.
    import orjson  # noqa: F401
    import sysmonx.pipeline  # (_replay's own import then costs nothing)
    import sysmonx.sources.evtx  # after the pipeline, in the command line's order
    import sysmonx.filtering.plancache  # noqa: F401  (the engine imports it when it is used)
    from sysmonx.config import load_config
    from sysmonx.filtering import FilterEngine
    from sysmonx.sinks import writer_class
    if spec["format"] != "none":
        writer_class(spec["format"])
    from sysmonx.core.native import implementation
    _evict(files)
    out: dict = {"implementation": implementation()}
    # both sides as `sysmonx replay`, which runs its whole command (config load included) with
    # the collector's first threshold raised (pipeline.replay.replay_collector), to the end
    from sysmonx.pipeline.replay import replay_collector
    replay_collector().__enter__()
    if spec["what"] == "baseline":
        t = clock()
        out["records"] = baseline(files)
        out["cold"] = clock() - t
        run = lambda: baseline(files * spec["repeat"])  # noqa: E731
        t = clock()
        _decoded(files * spec["repeat"])
        out["decoded"] = clock() - t
    else:
        path, fmt = spec["config"], spec["format"]
        detection = None
        if spec.get("rules"):
            # compiled before the load window: one process and --jobs N compile the same
            # rules once, in the parent, before any record is read (shown apart)
            from sysmonx.detection import DetectionStage
            t = clock()
            detection = DetectionStage.from_paths(spec["rules"])
            out["rules_compile"] = clock() - t
        from sysmonx.config.cache import ConfigCache
        cache = (ConfigCache(admit_on_second_miss=True)  # as load_config's default
                 if spec.get("config_cache") not in (None, "", "off") else None)
        t = clock()
        config = load_config(path, cache=cache) if path else None
        engine = FilterEngine(config, plan_cache=bool(cache)) if config is not None else None
        out["compile"] = clock() - t
        out["config_cache"] = cache.status if cache is not None and path else ""
        # --jobs-speedup: both sides as --jobs runs them; --keep-duplicates
        keep = bool(spec.get("wall") or spec.get("keep_duplicates"))
        cpu0 = _all_cpu()
        out["records"] = _replay(files, config, fmt, engine, jobs, keep, detection)
        out["cold"] = clock() - t
        out["cold_cpu_all"] = _all_cpu() - cpu0
        out["plan_cache"] = engine.plan_cache_status if engine is not None and cache else ""
        if detection is not None:
            out["alerts"] = detection.stats.alerts  # the cold pass's: same for every jobs
            out["matched"] = detection.stats.matched
        run = lambda: _replay(files * spec["repeat"], config, fmt, engine, jobs, keep,  # noqa: E731
                              detection)
    warm = math.inf
    for _ in range(spec["rounds"]):
        t = clock()
        n = run()
        warm = min(warm, clock() - t)
    out["warm"] = warm
    out["warm_records"] = n
    out["jobs"] = jobs
    return out


def _run_child(spec: dict) -> dict:
    """Run one measurement child. ``spec["config_cache"]``: ``"empty"`` (a new empty config
    cache directory for this child: the first run of a config), a directory (a config cache
    filled beforehand: later runs), ``"off"`` (no config or plan cache, as
    ``SYSMONX_CONFIG_CACHE=0``) or absent (no config cache)."""
    env = dict(os.environ)
    if spec.get("pure"):
        env["SYSMONX_PURE_PYTHON"] = "1"
    empty = None
    if spec.get("config_cache") == "empty":
        empty = tempfile.mkdtemp(prefix="bench-config-cache-")
        env["SYSMONX_CACHE_DIR"] = empty
    elif spec.get("config_cache") == "off":
        env["SYSMONX_CONFIG_CACHE"] = "0"
    elif spec.get("config_cache"):
        env["SYSMONX_CACHE_DIR"] = spec["config_cache"]
    try:
        r = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                           capture_output=True, text=True, env=env)
    finally:
        if empty is not None:
            shutil.rmtree(empty, ignore_errors=True)
    if r.returncode != 0:
        raise RuntimeError(f"measurement failed: {spec['what']} {spec.get('config')}:\n{r.stderr}")
    return json.loads(r.stdout)


def _warm_config_cache(directory: str, common: dict, paths: list) -> None:
    """Fill the config and filter plan caches in ``directory`` for ``paths``: two replay
    children per config over the same inputs (a first run notes the config, the second stores
    it; their figures are not used)."""
    for path in paths:
        spec = dict(common, what="replay", config=path, config_cache=directory, rounds=1,
                    repeat=1)
        for _ in range(2):
            r = _run_child(spec)
        if r["jobs"] > 1 and r["config_cache"] == "stored":
            # --jobs N: the workers' parent stored the plans with an engine of its own, not the
            # one whose status the child reports (built, never run): a third run must find both
            r = _run_child(spec)
            if (r["config_cache"], r["plan_cache"]) == ("hit", "hit"):
                continue
        if (r["config_cache"], r["plan_cache"]) != ("stored", "stored"):
            raise RuntimeError(f"config cache not filled for {path}: {r}")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=default_corpus())
    ap.add_argument("--input", action="append", default=[],
                    help="EVTX file or folder (repeatable; default: <corpus>/evtx)")
    ap.add_argument("--build-evtx-gb", type=float, default=None, metavar="N",
                    help="build an EVTX of about N GB with bench_size.py's builder and use it")
    ap.add_argument("--keep", metavar="DIR", help="build the EVTX in DIR and keep it")
    ap.add_argument("--configs", default="sos,modular,none",
                    help="comma-separated: sos, modular, none or config paths")
    ap.add_argument("--format", default="jsonl", choices=["jsonl", "xml", "linux-xml", "none"])
    ap.add_argument("--rounds", type=int, default=3,
                    help="cold measurements of each (fresh processes), and warm passes per child")
    ap.add_argument("--repeat", type=int, default=1, help="passes over the inputs per warm pass")
    ap.add_argument("--baseline-runs", type=int, default=3,
                    help="baseline children per round (default 3)")
    ap.add_argument("--cpu", type=int, default=None,
                    help="the CPU every child is pinned to (default: the last allowed one)")
    ap.add_argument("--jobs", type=int, default=1, help="replay worker processes (default 1)")
    ap.add_argument("--split", action="store_true",
                    help="a record's cost: parse, JSON decoding, conversion, rendering in "
                         "--format, cumulative loops in this process (see _split)")
    ap.add_argument("--upper-bound", action="store_true",
                    help="with --split: rows for the --configs replays and for a prototype that "
                         "writes JSON lines straight from each record's text (see _split)")
    ap.add_argument("--jobs-speedup", action="store_true",
                    help="wall time of one process against --jobs N workers (0: what replay "
                         "--jobs 0 picks, shown beside 2), fresh unpinned children")
    ap.add_argument("--rules", action="append", default=[], metavar="PATH",
                    help="with --jobs-speedup: Sigma rules too (repeatable; 'corpus': the "
                         "corpus's SigmaHQ bundle), alerts as events 1000 in the output")
    ap.add_argument("--build-files", type=int, default=1, metavar="N",
                    help="with --build-evtx-gb: N files of 1/N the size each (copies of one "
                         "built file), so --jobs has files to spread")
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    ap.add_argument("--pure", action="store_true",
                    help="measure the pure-Python paths (SYSMONX_PURE_PYTHON=1 for this process "
                         "and its children) instead of the compiled ones")
    ap.add_argument("--keep-duplicates", action="store_true",
                    help="replay as --keep-duplicates does (no duplicate check); needed with "
                         "--build-evtx-gb, whose copies repeat the source's EventRecordIDs and "
                         "times")
    ap.add_argument("--compare-pure", action="store_true",
                    help="also replay each configuration on the pure-Python paths (a second row "
                         "per configuration, its children interleaved with the others)")
    ap.add_argument("--filter-only", action="store_true",
                    help="measure the filter alone: index vs plain walk (see above)")
    ap.add_argument("--profile", action="store_true",
                    help="split a warm replay's time by stage with pyinstrument (see above)")
    ap.add_argument("--fixed-costs", action="store_true",
                    help="a cold replay's fixed costs measured apart: config parse, engine, "
                         "each EventID's decider, first pass against second, per-file set-up")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.pure:
        os.environ["SYSMONX_PURE_PYTHON"] = "1"
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(_fixed_child(spec) if spec.get("what", "").startswith("fixed")
                         else child(spec)))
        return 0
    corpus = Path(args.corpus)
    work = None
    try:
        if args.build_evtx_gb:
            from bench_size import EVTX_REL, build_evtx
            src = corpus / EVTX_REL
            if not src.is_file():
                print(f"corpus file missing: {src}; set --corpus or SYSMONX_CORPUS",
                      file=sys.stderr)
                return 1
            work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sysmonx-rb-"))
            work.mkdir(parents=True, exist_ok=True)
            per_copy = len(_data_chunks(src)) * 65536
            parts = max(1, args.build_files)
            copies = math.ceil(args.build_evtx_gb * 1e9 / per_copy / parts)
            big = work / f"panache-x{copies}.evtx"
            if not big.is_file():
                build_evtx(src, copies, big)
            files = [str(big)]
            for i in range(1, parts):  # copies: distinct files with the same records
                part = work / f"panache-x{copies}-{i}.evtx"
                if not part.is_file():
                    shutil.copyfile(big, part)
                files.append(str(part))
        else:
            from sysmonx.sources import iter_input_files
            paths = args.input or [str(corpus / "evtx")]
            # the baseline parses EVTX; the filter-alone and profile modes take any input
            any_input = args.filter_only or args.profile
            try:
                files = [f for f in iter_input_files(paths)
                         if any_input or f.lower().endswith(".evtx")]
            except FileNotFoundError as exc:
                print(f"{exc.filename}: no such file or folder; set --corpus/SYSMONX_CORPUS or "
                      "--input", file=sys.stderr)
                return 1
        if not files:
            print("no input to measure; set --corpus/SYSMONX_CORPUS or --input", file=sys.stderr)
            return 1
        if args.filter_only:
            return _filter_only(args, _configs(args, corpus), files)
        if args.profile:
            return _profile(args, _configs(args, corpus), files)
        if args.fixed_costs:
            return _fixed_costs(args, _configs(args, corpus), files)
        if args.jobs_speedup:
            return _speedup(args, corpus, files)
        if args.split:
            return _split(args, files)
        return _measure(args, corpus, files)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        if work is not None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _data_chunks(path: Path) -> list:
    from bench_size import _chunks
    return _chunks(path.read_bytes())


def _configs(args, corpus: Path) -> list[tuple[str, Optional[str]]]:
    """``(label, path or None)`` of ``--configs``."""
    configs: list[tuple[str, Optional[str]]] = []
    for name in [c for c in args.configs.split(",") if c]:
        if name == "none":
            configs.append((LABELS[name], None))
        elif name in CONFIGS:
            configs.append((LABELS[name], str(corpus / CONFIGS[name])))
        else:
            configs.append((f"{Path(name).parent.name}/{Path(name).name}"[-48:], name))
    return configs


def _blocks(files: list[str], size: int = 10_000):
    """The inputs' Sysmon events as lists of ``(event_id, data)``, decoded afresh."""
    from sysmonx.sources import open_source
    block: list = []
    for f in files:
        for ev in open_source(f, lambda err: None):
            if ev.is_sysmon:
                block.append((ev.event_id, ev.data))
                if len(block) >= size:
                    yield block
                    block = []
    if block:
        yield block


def _decide_pass(engine, files: list[str]) -> tuple[float, int]:
    """CPU seconds spent deciding every Sysmon event of ``files`` once, and the event count."""
    spent, n = 0.0, 0
    for block in _blocks(files):
        deciders = [engine.decider_for(eid) for eid, _ in block]
        datas = [data for _, data in block]
        t = _cpu()
        for decide, data in zip(deciders, datas, strict=False):
            decide(data)
        spent += _cpu() - t
        n += len(block)
    return spent, n


def _filter_only(args, configs: list, files: list[str]) -> int:
    from sysmonx.config import load_config
    from sysmonx.filtering import EngineOptions, FilterEngine
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    print(f"filter alone: {len(files)} input files; CPU time, pinned to CPU {cpu}; "
          "cold = first pass of a "
          f"fresh engine (best of {args.rounds}), warm = best of {args.rounds} further passes")
    print(f"load average (1/5/15 min) before: {_load()}")
    w = max([18] + [len(label) for label, _ in configs])
    print(f"{'config':{w}} {'mode':6} {'compile ms':>10} {'cold us/ev':>10} {'warm us/ev':>10}")
    figures: dict = {}
    n = 0
    # deciders are compiled on each EventID's first event: "compile" compiles those of the
    # EventIDs the inputs hold, as the replay would (not timed again in the passes)
    eids = sorted({eid for block in _blocks(files) for eid, _ in block})
    for label, path in configs:
        if path is None:
            continue
        config = load_config(path)
        row = {}
        for mode, opts in (("index", EngineOptions()), ("walk", EngineOptions(indexed=False))):
            comp = cold = warm = math.inf
            for _ in range(args.rounds):
                t = _cpu()
                engine = FilterEngine(config, opts)
                for eid in eids:
                    engine.decider_for(eid)
                comp = min(comp, _cpu() - t)
                spent, n = _decide_pass(engine, files)
                cold = min(cold, spent)
                warm = min(warm, _decide_pass(engine, files)[0])
            row[mode] = (comp, cold / n, warm / n)
            print(f"{label:{w}} {mode:6} {comp * 1000:10.1f} {cold / n * 1e6:10.2f} "
                  f"{warm / n * 1e6:10.2f}")
        speed = (row["walk"][1] / row["index"][1], row["walk"][2] / row["index"][2])
        print(f"{label:{w}} walk/index: cold {speed[0]:.1f}x, warm {speed[1]:.1f}x "
              f"({n:,} Sysmon events per pass)")
        figures[label] = {m: {"compile_ms": round(v[0] * 1000, 2), "cold_us": round(v[1] * 1e6, 3),
                              "warm_us": round(v[2] * 1e6, 3)} for m, v in row.items()}
    print(f"load average (1/5/15 min) after: {_load()}")
    if not n:
        print("no Sysmon events or no configuration to measure", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(figures))
    return 0


#: --profile: stage of a replay by the source file (and function) a sample falls in.
_STAGES = (("filtering", None, "filter"), (None, "loads", "JSON decode (orjson.loads)"),
           ("sinks", None, "writing"), (None, "dumps", "writing"),
           ("sources/evtx", "_records", "pyevtx-rs parse (records_json loop)"),
           ("sources/evtx", "_ChunkTracker", "chunk CRC verification"),
           ("sources", None, "record -> Event conversion"), ("pipeline", None, "pipeline loop"))


def _stage(frame) -> str:
    # built-in calls and "[self]" entries count for the Python function that made them
    while frame is not None and ((frame.function or "").startswith("[") or (
            (frame.file_path or "<built-in>") == "<built-in>"
            and frame.function not in ("loads", "dumps"))):
        frame = frame.parent
    if frame is None:
        return "other"
    path, fn, cls = frame.file_path or "", frame.function or "", frame.class_name or ""
    for where, name, stage in _STAGES:
        if (where is None or where in path) and (name is None or name in (fn, cls)):
            return stage
    return "other"


def _profile(args, configs: list, files: list[str]) -> int:
    try:
        from pyinstrument import Profiler
    except ImportError:
        print("--profile needs pyinstrument: pip install pyinstrument", file=sys.stderr)
        return 1
    from sysmonx.config import load_config
    from sysmonx.filtering import FilterEngine
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    work = files * args.repeat
    print(f"where a warm replay's time goes: {len(files)} input files x{args.repeat}, "
          f"{args.format}, "
          f"pinned to CPU {cpu}, pyinstrument (sampling inflates call-heavy code: read shares)")
    for label, path in configs:
        config = load_config(path) if path else None
        engine = FilterEngine(config) if config is not None else None
        _replay(files, config, args.format, engine, 1)  # warm-up
        prof = Profiler(interval=0.0002)
        prof.start()
        n = _replay(work, config, args.format, engine, 1)
        prof.stop()
        shares: dict = {}

        def walk(frame) -> None:
            own = frame.time - sum(c.time for c in frame.children)
            shares[_stage(frame)] = shares.get(_stage(frame), 0.0) + own  # noqa: B023 - walked in this iteration
            for c in frame.children:
                walk(c)
        walk(prof.last_session.root_frame())
        total = sum(shares.values())
        print(f"{label}: {n:,} records, {total / n * 1e6:.1f} us per record sampled")
        for stage, t in sorted(shares.items(), key=lambda kv: -kv[1]):
            if t / total >= 0.005:
                print(f"  {100 * t / total:5.1f} %  {stage}")
    return 0


def _first_ids(files: list[str]) -> list[int]:
    """The EventIDs of the inputs in the order of their first events (what a replay compiles
    deciders for, in that order)."""
    from sysmonx.sources import open_source
    seen: dict = {}
    for f in files:
        for ev in open_source(f, lambda err: None):
            seen.setdefault(ev.event_id, None)
    return list(seen)


def _fit(points: list) -> tuple[float, float]:
    """Least-squares ``(intercept, slope)`` of ``points`` (``(x, y)`` pairs)."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    return my - slope * mx, slope


def _fixed_child(spec: dict) -> dict:
    """One ``--fixed-costs`` child (see the module docstring): ``what`` is ``fixed`` (one
    configuration) or ``fixed-files`` (the per-file fits)."""
    if spec["cpu"] is not None:
        os.sched_setaffinity(0, {spec["cpu"]})
    # imports outside the window, as the headline's children
    import orjson  # noqa: F401
    import sysmonx.filtering.plancache
    import sysmonx.pipeline
    import sysmonx.sources.evtx  # noqa: F401
    from sysmonx.config import load_config
    from sysmonx.filtering import FilterEngine
    from sysmonx.sinks import writer_class
    writer_class(spec["format"])
    files, fmt = spec["files"], spec["format"]
    out: dict = {}
    if spec["what"] == "fixed-files":
        from evtx import PyEvtxParser

        from sysmonx.pipeline import Replayer, ReplayOptions, make_writer
        from sysmonx.sources.evtx import read_evtx_batches
        writer = make_writer(fmt, _Null()) if fmt != "none" else None
        # one replayer for every read, as one replay of many files; without the duplicate
        # check, which would take a file's second read for duplicates
        replayer = Replayer(ReplayOptions(keep_duplicates=True), writer)

        def parse(f: str) -> None:
            for _ in PyEvtxParser(f).records_json():
                pass

        def reader(f: str) -> None:
            for _ in read_evtx_batches(f, lambda err: None):
                pass

        def replay(f: str) -> None:
            replayer.run_file(f)

        counts = {f: sum(1 for _ in PyEvtxParser(f).records_json()) for f in files}
        for name, fn in (("parse", parse), ("reader", reader), ("replay", replay)):
            points = []
            for f in files:
                best = math.inf
                for _ in range(20):
                    t = _cpu()
                    fn(f)
                    best = min(best, _cpu() - t)
                points.append((counts[f], best))
            out[name] = _fit(points)
        out["files"], out["records"] = len(files), sum(counts.values())
        return out
    _evict(files)
    # as `sysmonx replay` (see child)
    from sysmonx.pipeline.replay import replay_collector
    replay_collector().__enter__()
    path = spec["config"]
    ids = spec["ids"]
    if spec["what"] == "fixed-later":
        # a later run: the config and plan caches filled by earlier runs (SYSMONX_CACHE_DIR)
        info: dict = {}
        t = _cpu()
        config = load_config(path, cache_info=info)
        out["load"] = _cpu() - t
        t = _cpu()
        engine = FilterEngine(config)
        out["engine"] = _cpu() - t
        out["status"] = [info["status"], engine.plan_cache_status]
        t = _cpu()
        for eid in ids:
            engine.decider_for(eid)
        out["deciders"] = _cpu() - t
        return _two_passes(out, files, config, fmt, engine)
    if path:
        t = _cpu()
        config = load_config(path, cache=None)
        out["parse_first"] = _cpu() - t
        t = _cpu()
        load_config(path, cache=None)
        out["parse_again"] = _cpu() - t
        t = _cpu()
        engine = FilterEngine(config, plan_cache=False)
        out["engine"] = _cpu() - t
        compile_ms = {}
        for eid in ids:
            t = _cpu()
            engine.decider_for(eid)
            compile_ms[str(eid)] = _cpu() - t
        out["deciders"] = compile_ms
    else:
        config, engine = None, None
    return _two_passes(out, files, config, fmt, engine)


def _two_passes(out: dict, files, config, fmt, engine) -> dict:
    """``out`` with the records and the CPU ms of a first and a second replay pass of
    ``files`` in this process (the first pays for what is filled on first use)."""
    t = _cpu()
    out["records"] = _replay(files, config, fmt, engine, 1)
    out["first_pass"] = _cpu() - t
    t = _cpu()
    _replay(files, config, fmt, engine, 1)
    out["second_pass"] = _cpu() - t
    return out


def _cli_cpu(config: Optional[str], fmt: str, inputs: list[str]) -> float:
    """CPU seconds (user + system) of one ``sysmonx replay`` process over ``inputs`` (caches
    off, as a first run that stores nothing: ``SYSMONX_CONFIG_CACHE=0``)."""
    import resource
    out = ["--no-output"] if fmt == "none" else ["--format", fmt, "-o", os.devnull]
    cmd = [sys.executable, "-m", "sysmonx.cli", "replay", *out, "-q",
           *(["--config", config] if config else []), *inputs]
    env = dict(os.environ, SYSMONX_CONFIG_CACHE="0",
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, capture_output=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError(f"sysmonx replay exited {r.returncode}: {r.stderr.decode()[-500:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _fixed_costs(args, configs: list, files: list[str]) -> int:
    """``--fixed-costs`` (see the module docstring): the table of fixed costs."""
    import statistics
    files = [f for f in files if f.lower().endswith(".evtx")]
    if not files:
        print("--fixed-costs needs EVTX inputs", file=sys.stderr)
        return 1
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    ids = _first_ids(files)
    common = {"files": files, "cpu": cpu, "format": args.format, "ids": ids}
    # the folder row only where walking the inputs' common folder gives the same files
    from sysmonx.sources import iter_input_files
    folder = os.path.commonpath(files) if len(files) > 1 else os.path.dirname(files[0])
    folders = [folder] if sorted(iter_input_files([folder])) == sorted(files) else []
    load_before = _load()
    runs: dict = {label: [] for label, _ in configs}
    per_file = []
    whole: dict = {}
    later: dict = {label: [] for label, path in configs if path}
    caches = {label: tempfile.mkdtemp(prefix="bench-config-cache-") for label in later}
    for label, path in configs:
        if path:  # a first run notes the config, a second stores both entries
            for _ in range(2):
                _run_child(dict(common, what="fixed-later", config=path,
                                config_cache=caches[label]))
    for _ in range(args.rounds):
        for label, path in configs:
            runs[label].append(_run_child(dict(common, what="fixed", config=path)))
            if path:
                later[label].append(_run_child(dict(common, what="fixed-later", config=path,
                                                    config_cache=caches[label])))
            for how, inputs in (("files", files), ("folder", folders)):
                if not inputs:
                    continue
                whole.setdefault((label, how), []).append(_cli_cpu(path, args.format, inputs))
        per_file.append(_run_child(dict(common, what="fixed-files")))
    load_after = _load()
    for d in caches.values():
        shutil.rmtree(d, ignore_errors=True)

    def med(values: list) -> float:
        return statistics.median(values) * 1000

    print(f"fixed costs of a cold replay: {len(files)} EVTX, {per_file[0]['records']:,} records; "
          f"output {args.format}; CPU ms, pinned to CPU {cpu}; median of {args.rounds} fresh "
          "children per figure")
    print(f"load average (1/5/15 min) before: {load_before}  after: {load_after}")
    status = 0
    for label, path in configs:
        rs = runs[label]
        if any(r["records"] != rs[0]["records"] for r in rs) or not rs[0]["records"]:
            print(f"{label}: the children read different numbers of records", file=sys.stderr)
            status = 1
        print(f"{label}:")
        if path:
            first, again = med([r["parse_first"] for r in rs]), med([r["parse_again"] for r in rs])
            print(f"  config read and parse, first in the process {first:7.2f} ms   again "
                  f"{again:6.2f} ms   (first-touch {first - again:5.2f} ms)")
            print(f"  engine build                               {med([r['engine'] for r in rs]):7.2f} ms")
            per_id = {eid: med([r["deciders"][str(eid)] for r in rs]) for eid in ids}
            total = med([sum(r["deciders"].values()) for r in rs])
            print(f"  deciders, {len(ids)} EventIDs in first-event order   {total:7.2f} ms: "
                  + ", ".join(f"{eid} {per_id[eid]:.2f}"
                              for eid in sorted(per_id, key=lambda e: -per_id[e])
                              if per_id[eid] >= 0.05))
        fp, sp = med([r["first_pass"] for r in rs]), med([r["second_pass"] for r in rs])
        print(f"  records: first pass {fp:7.2f} ms, second pass {sp:6.2f} ms (first-pass extra "
              f"{fp - sp:5.2f} ms: memo tables, predicates, caches filled on first use, pages "
              "read from disk)")
        if path:
            ls = later[label]
            if any(r["status"] != ["hit", "hit"] for r in ls) or \
                    any(r["records"] != rs[0]["records"] for r in ls):
                print(f"{label}: a later run missed a cache or read other records: "
                      f"{[r['status'] for r in ls]}", file=sys.stderr)
                status = 1
            lf, lsp = med([r["first_pass"] for r in ls]), med([r["second_pass"] for r in ls])
            print(f"  a later run (config and plan caches filled): config from the cache "
                  f"{med([r['load'] for r in ls]):5.2f} ms, engine (plan cache read) "
                  f"{med([r['engine'] for r in ls]):5.2f} ms, deciders from the stored plans "
                  f"{med([r['deciders'] for r in ls]):5.2f} ms; records: first pass {lf:7.2f} "
                  f"ms, second pass {lsp:6.2f} ms (extra {lf - lsp:5.2f} ms)")
        print(f"  whole sysmonx replay process (not pinned): files named "
              f"{med(whole[(label, 'files')]):7.1f} ms"
              + (f", their folder named {med(whole[(label, 'folder')]):7.1f} ms" if folders
                 else " (the inputs' folder holds other files: no folder row)"))
    fits = {k: (statistics.median(p[k][0] for p in per_file) * 1e6,
                statistics.median(p[k][1] for p in per_file) * 1e6)
            for k in ("parse", "reader", "replay")}
    n = per_file[0]["files"]
    print(f"per file ({n} files, fit of each file's best-of-20 CPU time against its records, "
          "warm):")
    for k, what in (("parse", "bare parse (records_json)"), ("reader", "EVTX reader "
                    "(read_evtx_batches)"), ("replay", "replay of the file (no config)")):
        a, b = fits[k]
        print(f"  {what:34} {a:7.1f} us per file + {b:5.2f} us per record"
              + (f"   (set-up beyond the parser's {a - fits['parse'][0]:6.1f} us per file, "
                 f"x{n} files = {(a - fits['parse'][0]) * n / 1000:.2f} ms)"
                 if k != "parse" else ""))
    return status


def _renderer(fmt: str):
    """The function the ``fmt`` writer renders one event with (``none``: nothing)."""
    if fmt == "xml":
        from sysmonx.sinks.xml_windows import render_windows_xml
        return render_windows_xml
    if fmt == "linux-xml":
        from sysmonx.sinks.xml_linux import render_linux_xml
        return render_linux_xml
    if fmt == "none":
        return lambda event: None
    from sysmonx.sinks.jsonl import event_to_json
    return event_to_json


def _split(args, files: list[str]) -> int:
    """``--split``: a record's cost cut into the parse, JSON decoding, conversion to an Event,
    rendering in ``--format`` (JSON lines, Windows XML or Sysmon for Linux XML, as the writer
    renders one event), the EVTX reader's chunk tracking and checksums, the replay loop with its
    stages and writer, and the duplicate check: seven cumulative loops over the same EVTX
    inputs in this process pinned to one CPU (CPU time, best of ``--rounds``, ``--repeat``
    passes each), each loop doing one step more than the one before (the compiled converter
    parses the JSON itself: its row starts from the parse).

    With ``--upper-bound`` (JSON lines only) rows follow: the whole replay with each
    configuration of ``--configs`` that is not ``none`` (compiled before the loop; with the
    duplicate check unless ``--keep-duplicates``); with the compiled extension, the same
    replays and the no-config one with the loop's raw path off (``raw path off``: every record
    an Event, the loop before the raw path; the plain rows take it); and the
    parse plus bench/_transcode_proto.c, a prototype built here that turns each record's text
    straight into the JSON-lines bytes (no Event, no dict, no str per field; no stage): what a
    replay without an object per field could reach at most with pyevtx-rs as the parser. Its
    bytes are first compared with the replay's renderer on every record (not timed); when a
    record differs or is not taken, nothing is measured and the exit status is 1."""
    import orjson
    from evtx import PyEvtxParser

    from sysmonx.sources.evtx import _convert
    render = _renderer(args.format)
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    loads = orjson.loads
    work = [f for f in files if f.lower().endswith(".evtx")] * args.repeat
    if not work:
        print("--split needs EVTX inputs", file=sys.stderr)
        return 1

    from sysmonx.sources.evtx import read_evtx

    extra: list = []  # --upper-bound: (row name, loop)
    if args.upper_bound:
        if args.format != "jsonl":
            print("--upper-bound measures JSON lines (--format jsonl)", file=sys.stderr)
            return 1
        extra = _upper_bound_rows(args, work)
        if not extra:
            return 1

    def run(depth: int) -> int:
        if depth >= 7:
            return extra[depth - 7][1]()
        if depth >= 5:  # the replay itself, no config, as the measured replays run it
            # (--keep-duplicates: both rows without it, for inputs that repeat their records)
            return _replay(work, None, args.format, None, 1,
                           keep_duplicates=depth == 5 or args.keep_duplicates)
        n = 0
        for f in work:
            if depth == 4:  # the EVTX reader: chunk tracking and checksums on top
                for event in read_evtx(f, lambda err: None):
                    render(event)
                    n += 1
                continue
            origin = (f, 0)
            for rec in PyEvtxParser(f).records_json():
                if depth == 1:
                    loads(rec["data"])
                elif depth >= 2:
                    event = _convert(rec["data"], origin, None)
                    if depth == 3:
                        render(event)
                n += 1
        return n

    names = ("pyevtx-rs parse (records_json)", "+ orjson.loads of the record",
             "+ conversion to an Event (Sysmon strings)", f"+ {args.format} rendering",
             "+ the EVTX reader (chunk tracking, checksums)",
             "+ replay loop, stages, writer (no duplicate check)",
             "+ the duplicate check (a whole replay, no config)")
    names = names + tuple(name for name, _ in extra)
    best = []
    n = 0
    for depth in range(len(names)):
        b = math.inf
        for _ in range(args.rounds):
            t = _cpu()
            n = run(depth)
            b = min(b, _cpu() - t)
        best.append(b / n * 1e6)
    from sysmonx.core.native import implementation
    print(f"{len(set(work))} EVTX file(s) x{args.repeat}, {n:,} records per loop; CPU time pinned "
          f"to CPU {cpu}, best of {args.rounds}; load average {_load()}; {implementation()}")
    compiled = "compiled" in implementation()
    if compiled:  # the compiled converter parses the JSON itself: its step starts at the parse
        names = names[:2] + ("parse + C decoding and conversion to an Event",) + names[3:]
    for i, name in enumerate(names):
        if i >= 7:  # not cumulative: each against the parse alone (ratio: parse / this row)
            print(f"{name:52} {best[i]:7.2f} us per record   ratio {best[0] / best[i]:.3f}")
            continue
        step = best[i] - (best[i - 1] if i else 0.0)
        if compiled and i == 2:
            step = best[2] - best[0]
        print(f"{name:52} {best[i]:7.2f} us per record cumulative   {step:6.2f} us this step")
    if extra:
        print(f"{'(no config replay, as above)':52} {best[6]:7.2f} us per record   ratio "
              f"{best[0] / best[6]:.3f}")
    return 0


def _build_proto():
    """Build bench/_transcode_proto.c into a temporary folder and import it (module or None,
    the reason printed)."""
    import importlib.util
    import sysconfig

    src = Path(__file__).resolve().parent / "_transcode_proto.c"
    out = Path(tempfile.mkdtemp(prefix="sysmonx-proto-"))
    so = out / ("_transcode_proto" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))
    cc = (sysconfig.get_config_var("CC") or "cc").split()
    cmd = [*cc, "-O2", "-shared", "-fPIC", f"-I{sysconfig.get_paths()['include']}", str(src),
           "-o", str(so)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"could not build {src.name}: {' '.join(cmd)}\n{r.stderr}", file=sys.stderr)
        return None
    spec = importlib.util.spec_from_file_location("_transcode_proto", so)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    shutil.rmtree(out, ignore_errors=True)
    return mod


def _upper_bound_rows(args, work: list[str]) -> list:
    """``--split --upper-bound``'s rows: ``[(name, loop returning the records read), ...]``,
    empty when the prototype cannot be built."""
    from evtx import PyEvtxParser

    from sysmonx.config import load_config
    from sysmonx.filtering import FilterEngine
    from sysmonx.sinks.jsonl import event_to_json
    from sysmonx.sources.evtx import _convert
    proto = _build_proto()
    if proto is None:
        return []
    same = differ = untaken = 0
    for f in sorted(set(work)):
        for rec in PyEvtxParser(f).records_json():
            line = proto.transcode(rec["data"])
            if line is None:
                untaken += 1
            elif line == event_to_json(_convert(rec["data"], (f, 0), None)) + b"\n":
                same += 1
            else:
                differ += 1
    print(f"prototype against the renderer: {same:,} records the same bytes, {differ:,} "
          f"different, {untaken:,} not taken")
    if differ or untaken:  # its figure would not be the cost of the replay's output
        print("the prototype does not give the replay's bytes for every record of these inputs: "
              "no upper bound measured", file=sys.stderr)
        return []
    rows = []
    for key in args.configs.split(","):
        if key == "none":
            continue
        path = str(Path(args.corpus) / CONFIGS[key]) if key in CONFIGS else key
        config = load_config(path, cache=None)
        engine = FilterEngine(config)

        def replay(config=config, engine=engine) -> int:
            return _replay(work, config, "jsonl", engine, 1, args.keep_duplicates)
        rows.append((f"replay with {LABELS.get(key, key)} (compiled before)", replay))

    # the same replays with the loop's raw path off (every record an Event, as before it):
    # what the raw path saves, measured in this process
    from sysmonx.core import native
    if native.speedups is not None and hasattr(native.speedups, "RawPlan"):
        from sysmonx.stages.gate import SysmonGate

        def event_way(loop):
            def run() -> int:
                saved = SysmonGate.raw_step
                SysmonGate.raw_step = lambda self: None  # type: ignore[method-assign]
                try:
                    return int(loop())
                finally:
                    SysmonGate.raw_step = saved  # type: ignore[method-assign]
            return run
        for name, loop in list(rows):
            rows.append((name.replace("(compiled before)", "raw path off"), event_way(loop)))

        def none_replay() -> int:
            return _replay(work, None, "jsonl", None, 1, args.keep_duplicates)
        rows.append(("replay, no config, raw path off", event_way(none_replay)))

    def transcode() -> int:
        n = 0
        for f in work:
            n += proto.run(PyEvtxParser(f).records_json(), _Null().write)
        return n
    rows.append(("parse + prototype transcode to JSON lines", transcode))
    return rows


def _speedup(args, corpus: Path, files: list[str]) -> int:
    """``--jobs-speedup``: wall time of one process against ``--jobs N`` workers (0: what
    ``sysmonx replay --jobs 0`` picks) on the same inputs, fresh unpinned children,
    interleaved, cold first pass (pages dropped) and warm passes, best of ``--rounds``; beside
    them the cold pass's CPU time summed over the child and its workers (robust to other load:
    what the workers cost on top of one process). Both
    sides replay as ``--jobs`` does: ``--keep-duplicates`` (finding duplicates needs one
    stream)."""
    configs = _configs(args, corpus)
    rules = [str(corpus / "sigma" / "sigmahq_rules_sysmon_categories.tar.gz") if r == "corpus"
             else r for r in args.rules]
    for r in rules:
        if not Path(r).exists():
            print(f"rules not found: {r}", file=sys.stderr)
            return 1
    common = {"files": files, "rounds": args.rounds, "repeat": args.repeat, "cpu": None,
              "format": args.format, "wall": True, "rules": rules}
    load_before = _load()
    runs: dict = {}
    for _ in range(args.rounds):
        for label, path in configs:
            for jobs in (1, args.jobs, 2) if args.jobs == 0 else (1, args.jobs):
                runs.setdefault((label, jobs), []).append(
                    _run_child(dict(common, what="replay", config=path, jobs=jobs)))
    load_after = _load()
    size = sum(os.path.getsize(f) for f in files)
    print(f"inputs: {len(files)} files, {size / 1e6:,.1f} MB; output: {args.format}; wall time "
          f"of fresh unpinned children ({os.cpu_count()} CPUs), best of {args.rounds}; warm "
          f"passes x{args.repeat}")
    print(f"load average (1/5/15 min) before: {load_before}  after: {load_after}")
    if rules:
        some = next(iter(runs.values()))
        print(f"Sigma rules: {', '.join(rules)}; compiled before the load window in "
              f"{min(r['rules_compile'] for r in some):.2f} s (wall time, best child), the same "
              f"for every jobs value; {some[0]['matched']:,} events matched, "
              f"{some[0]['alerts']:,} alerts per cold pass")
    print(f"{'config':18} {'jobs':>10} {'cold s':>8} {'speed-up':>9} {'warm s':>8} {'speed-up':>9}"
          f" {'cold CPU s, all processes':>26}")
    status = 0
    for label, _ in configs:
        one = runs[(label, 1)]
        c1, w1 = min(r["cold"] for r in one), min(r["warm"] for r in one)
        n = one[0]["records"]
        if not n:
            print(f"{label}: no record read: nothing measured", file=sys.stderr)
            status = 1
        for (lab, jobs), rs in runs.items():
            if lab != label:
                continue
            if any(r["records"] != n for r in rs):
                print(f"{label} jobs {jobs}: records differ", file=sys.stderr)
                status = 1
            if rules and any(r["alerts"] != one[0]["alerts"] for r in rs):
                print(f"{label} jobs {jobs}: alerts differ from one process's", file=sys.stderr)
                status = 1
            c, w = min(r["cold"] for r in rs), min(r["warm"] for r in rs)
            used = rs[0]["jobs"]
            name = f"{jobs}" if jobs else f"0 (-> {used})"
            cpu_all = min(r["cold_cpu_all"] for r in rs)
            print(f"{label:18} {name:>10} {c:8.3f} {c1 / c:9.2f} {w:8.3f} {w1 / w:9.2f} "
                  f"{cpu_all:26.3f}")
    return status


def _measure(args, corpus: Path, files: list[str]) -> int:
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    configs = _configs(args, corpus)
    common = {"files": files, "rounds": args.rounds, "repeat": args.repeat, "cpu": cpu,
              "jobs": args.jobs, "format": args.format, "keep_duplicates": args.keep_duplicates}
    # a config row runs three times: with an empty config cache (a config's first run: parsed,
    # a marker left; the headline), with the cache filled beforehand (later runs) and with
    # the caches off (what the first run costs without them, in the same run)
    warm_dir = tempfile.mkdtemp(prefix="bench-config-cache-warm-")
    rows: list = []
    for label, path in configs:
        rows.append((label, path, False, "empty" if path else None))
        if path:
            rows.append((f"{label} (config cache warm)", path, False, warm_dir))
            # the same-run measure of what a first run costs: the config caches off
            rows.append((f"{label} (config cache off)", path, False, "off"))
    if args.compare_pure and not args.pure:
        rows += [(f"{label} (pure Python)", path, True, "empty" if path else None)
                 for label, path in configs]
    load_before = _load()
    base: list = []
    runs: dict = {label: [] for label, _, _, _ in rows}
    try:
        _warm_config_cache(warm_dir, common, [path for _, path in configs if path])
        for _ in range(args.rounds):
            for _ in range(args.baseline_runs):
                base.append(_run_child(dict(common, what="baseline")))
            for label, path, pure, cache in rows:
                runs[label].append(_run_child(dict(common, what="replay", config=path,
                                                   pure=pure, config_cache=cache)))
    finally:
        shutil.rmtree(warm_dir, ignore_errors=True)
    configs = [(label, path) for label, path, _, _ in rows]
    expect = {label: ("", "") if not path or cache == "off" else ("noted", "noted")
              if cache == "empty" else ("hit", "hit") for label, path, _, cache in rows}
    load_after = _load()
    n = base[0]["records"]
    size = sum(os.path.getsize(f) for f in files)
    unit = "CPU time, one core (pinned to CPU %d)" % cpu if args.jobs == 1 else \
        f"wall time, {args.jobs} worker processes"
    print(f"inputs: {len(files)} EVTX, {size / 1e6:,.1f} MB, {n:,} records; output: {args.format}; "
          f"{unit}; best of {args.rounds}; warm passes x{args.repeat}")
    print(f"load average (1/5/15 min) before: {load_before}  after: {load_after}")
    print("hot paths: " + "; ".join(sorted({f"{label}: {runs[label][0]['implementation']}"
                                            for label, _ in configs})))
    b_cold = min(r["cold"] for r in base)
    b_warm = min(r["warm"] for r in base)
    b_dec = min(r["decoded"] for r in base)
    print(f"baseline pyevtx-rs records_json: cold {n / b_cold:12,.0f} records/s   "
          f"warm {n * args.repeat / b_warm:12,.0f} records/s")
    print(f"  + orjson.loads of each record:            warm {n * args.repeat / b_dec:12,.0f} "
          f"records/s (ratio {b_warm / b_dec:.3f}: the floor of any Python consumer)")
    w = max([18] + [len(label) for label, _ in configs])
    print(f"{'config':{w}} {'cold rec/s':>12} {'cold ratio':>10} {'warm rec/s':>12} "
          f"{'warm ratio':>10} {'config ms':>10}")
    status = 0
    figures = {"records": n, "mb": size / 1e6, "load_before": load_before,
               "load_after": load_after, "baseline_cold": n / b_cold,
               "baseline_warm": n * args.repeat / b_warm, "configs": {}}
    for label, _ in configs:
        rs = runs[label]
        if any(r["records"] != n or r["warm_records"] != n * args.repeat for r in rs):
            print(f"{label}: replay read {rs[0]['records']} records, baseline {n}", file=sys.stderr)
            status = 1
        got = {(r["config_cache"], r["plan_cache"]) for r in rs}
        if got != {expect[label]}:
            print(f"{label}: config and plan caches {sorted(got)}, expected {expect[label]}",
                  file=sys.stderr)
            status = 1
        cold = min(r["cold"] for r in rs)
        warm = min(r["warm"] for r in rs)
        comp = min(r["compile"] for r in rs)
        cr, wr = (n / cold) / (n / b_cold), (n * args.repeat / warm) / (n * args.repeat / b_warm)
        print(f"{label:{w}} {n / cold:12,.0f} {cr:10.3f} {n * args.repeat / warm:12,.0f} "
              f"{wr:10.3f} {comp * 1000:10.1f}")
        figures["configs"][label] = {"cold": n / cold, "cold_ratio": round(cr, 4),
                                     "warm": n * args.repeat / warm, "warm_ratio": round(wr, 4),
                                     "compile_ms": round(comp * 1000, 1)}
    print("config ms: reading the config and building the engine, inside the cold figure; each "
          "EventID's decider is compiled on its first event, inside the cold pass")
    print("config rows: the config and filter plan caches empty (a config's first run: parsed "
          "and compiled, nothing stored but a marker; the headline), warm (filled by two "
          "replays of the same inputs before the children ran: any later run) and off (as "
          "SYSMONX_CONFIG_CACHE=0: what a first run would cost without the caches); pure "
          "Python rows: caches empty")
    if args.json:
        print(json.dumps(figures))
    return status


if __name__ == "__main__":
    sys.exit(main())
