#!/usr/bin/env python3
"""A config's parse and its deciders' compile, in CPU time and in instructions executed.

    python bench/bench_config_compile.py [--corpus DIR] [--configs sos,modular] [--runs N]
                                         [--instructions]

The two fixed costs of a config's first run that ``bench_replay.py --fixed-costs`` reports
inside the load window: ``load_config(path, cache=None)`` (read, parse, validate) and the
deciders of the 26 EventIDs the corpus EVTX hold (``FilterEngine(config, plan_cache=False)``
then ``decider_for`` each, in the order a replay of the corpus meets their first events).
Baseline, measured in the same run: lxml's bare parse of the same bytes
(``lxml.etree.fromstring``), the floor of any reader built on lxml.

* default: in this process pinned to one CPU (``--cpu``, default the last), the best of
  ``--runs`` (default 30) of each, CPU time (``time.process_time``); each run parses the
  file again and compiles a fresh engine. Best-of-N hides load only partly: on a busy
  machine alternate trees (``PYTHONPATH=OTHER/src``) several times.
* default, also: the *floor* of a reader built on lxml's element API, the least it does per
  filter element (iterate it; its tag, child count, attributes, text, line; one ``Filter``),
  against lxml's parse: what no such reader can go below.
* ``--instructions``: instructions executed (valgrind's callgrind, collecting only inside
  ``builtin_eval``) by the one call measured, run through ``eval`` in a fresh child that
  first imports what a replay imports (and, for the deciders, loads the config): the first
  parse in the process, or the 26 deciders of a fresh engine. Counting the call alone (not
  a whole child minus one that only imports, as before 2026-12-07 20:50 UTC) keeps the
  interpreter's start and the imports out: those varied by up to 3 % (~15 M instructions)
  from run to run. ``PYTHONHASHSEED=0``. Needs ``valgrind`` on the PATH (exit status 1
  otherwise). The bare lxml parse is counted the same way. Then a *later run*'s two fixed
  costs, both caches filled beforehand by two uncounted runs in a temporary folder:
  ``load_config(path)`` from the config cache, and ``FilterEngine(config)`` with its plan
  cache entry plus the 26 deciders built from the stored plans (the child fails unless both
  caches hit and no decider was compiled).

``uptime`` load averages are printed before and after. Exit status 1 when a config is
missing or a child failed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import default_corpus

CONFIGS = {
    "sos": "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml",
    "modular": "configs/olafhartong__sysmon-modular/sysmonconfig.xml",
}
LABELS = {"sos": "SwiftOnSecurity", "modular": "sysmon-modular"}
#: The EventIDs of the corpus EVTX in the order of their first events (what a replay of the
#: corpus compiles deciders for; ``bench_replay.py --fixed-costs`` lists them the same way).
IDS = (1, 2, 3, 5, 7, 8, 10, 11, 12, 13, 15, 17, 18, 22, 23, 4, 6, 9, 16, 19, 20, 21, 24, 25,
       26, 255)

CHILD = """
import os, sys
import lxml.etree, orjson, sysmonx.pipeline, sysmonx.sources.evtx, sysmonx.filtering.plancache
from sysmonx.config import load_config
from sysmonx.filtering import FilterEngine
what, path = sys.argv[1], sys.argv[2]
ids = [int(x) for x in sys.argv[3].split(",")]
raw = open(path, "rb").read() if path else b""
# only what runs inside eval() is counted (callgrind --toggle-collect=builtin_eval)
if what == "lxml":
    eval("lxml.etree.fromstring(raw)")
elif what == "parse":
    eval("load_config(path, cache=None)")
elif what == "compile":
    config = load_config(path, cache=None)
    engine = FilterEngine(config, plan_cache=False)
    eval("[engine.decider_for(eid) for eid in ids]")
elif what in ("replay", "replay-fill"):  # path "": no config
    import glob, io
    from sysmonx.pipeline import Replayer, ReplayOptions, make_writer
    from sysmonx.sinks import writer_class
    writer_class("jsonl")
    files = sorted(glob.glob(os.path.join(sys.argv[4], "**", "*.evtx"), recursive=True))

    class Null(io.RawIOBase):
        def writable(self):
            return True

        def write(self, b):
            return len(b)

    def replay():
        config = load_config(path) if path else None
        engine = FilterEngine(config) if config is not None else None
        writer = make_writer("jsonl", Null())
        r = Replayer(ReplayOptions(config=config), writer, engine=engine)
        for f in files:
            r.run_file(f)
        r.finish()
        writer.close()
        return r.stats.records, engine.plan_cache_status if engine is not None else "-"
    if what == "replay-fill":  # not counted: two runs store both entries
        for _ in range(2):
            replay()
    else:
        records, status = eval("replay()")
        print(records, status)
elif what == "fill":  # not counted: a first run, then a second that stores both entries
    for _ in range(2):
        engine = FilterEngine(load_config(path), plan_cache=True)
        [engine.decider_for(eid) for eid in ids]
        engine.save_plans()
elif what == "cached-load":
    info = {}
    eval("load_config(path, cache_info=info)")
    if info["status"] != "hit":
        sys.exit(f"config cache {info['status']}, not hit")
elif what == "cached-compile":
    config = load_config(path)
    engine = eval("FilterEngine(config, plan_cache=True)")
    if engine.plan_cache_status != "hit":
        sys.exit(f"plan cache {engine.plan_cache_status}, not hit")
    eval("[engine.decider_for(eid) for eid in ids]")
    if engine._new_plans:
        sys.exit("a decider was compiled, not built from the stored plan")
"""


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _instructions(what: str, path: str, cache_dir: Optional[str] = None, extra: tuple = (),
                  out: Optional[list] = None) -> int:
    """Instructions executed inside the ``eval`` of ``what`` by a fresh child (see
    :data:`CHILD`): callgrind collects only inside ``builtin_eval``, so the interpreter's
    start, the imports and the exit are left out. ``cache_dir``: the config and plan caches
    the child uses (``SYSMONX_CACHE_DIR``; without it they are off); ``extra``: more
    arguments for the child; ``out``: gets the words the child printed."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    if cache_dir is None:
        env["SYSMONX_CONFIG_CACHE"] = "0"
    else:
        env.pop("SYSMONX_CONFIG_CACHE", None)
        env["SYSMONX_CACHE_DIR"] = cache_dir
    r = subprocess.run(["valgrind", "--tool=callgrind", "--toggle-collect=builtin_eval",
                        "--callgrind-out-file=/dev/null", sys.executable, "-c", CHILD, what,
                        path, ",".join(map(str, IDS)), *extra], capture_output=True, text=True,
                       env=env)
    m = re.search(r"Collected\s*:\s*(\d+)", r.stderr)
    if r.returncode != 0 or m is None:
        raise RuntimeError(f"child {what} failed ({r.returncode}): {r.stderr[-500:]}")
    if out is not None:
        out.append(r.stdout.split())
    return int(m.group(1))


def _later_run(path: str) -> tuple[int, int]:
    """Instructions of a later run's two fixed costs (both caches filled beforehand in a
    temporary folder by two uncounted runs): ``load_config(path)`` from the config cache,
    and the engine built with its plan cache entry plus the deciders of :data:`IDS` built
    from the stored plans. The child exits non-zero unless both caches hit."""
    with tempfile.TemporaryDirectory(prefix="bench-config-cache-") as d:
        env = dict(os.environ, PYTHONHASHSEED="0", SYSMONX_CACHE_DIR=d)
        env.pop("SYSMONX_CONFIG_CACHE", None)
        r = subprocess.run([sys.executable, "-c", CHILD, "fill", path, ",".join(map(str, IDS))],
                           capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise RuntimeError(f"filling the caches failed: {r.stderr[-500:]}")
        return _instructions("cached-load", path, d), _instructions("cached-compile", path, d)


def _replays(path: str, evtx: str) -> tuple[int, int]:
    """Instructions of a whole replay of the EVTX under ``evtx`` (config loaded and compiled,
    every record read, filtered and written as JSON lines to a null stream), with the config
    and plan caches empty (a first run) and filled by two uncounted runs (a later run);
    ``path`` ``""``: no config. Exit status of the child non-zero on a failure; the plan
    cache status of the later run is checked (``hit``)."""
    with tempfile.TemporaryDirectory(prefix="bench-config-cache-") as d:
        got: list = []
        first = _instructions("replay", path, d, (evtx,), got)
        env = dict(os.environ, PYTHONHASHSEED="0", SYSMONX_CACHE_DIR=d)
        env.pop("SYSMONX_CONFIG_CACHE", None)
        for _ in range(2):  # a first run notes the config, the second stores both entries
            r = subprocess.run([sys.executable, "-c", CHILD, "replay", path,
                                ",".join(map(str, IDS)), evtx], capture_output=True,
                               text=True, env=env)
            if r.returncode != 0:
                raise RuntimeError(f"filling the caches failed: {r.stderr[-500:]}")
        later = _instructions("replay", path, d, (evtx,), got)
        if got[0][0] != got[1][0] or (path and got[1][1] != "hit"):
            raise RuntimeError(f"the later run read other records or missed the plan cache: "
                               f"{got}")
        return first, later


def _filter_elements(root, config) -> list:
    """The filter elements of ``root`` (children of the event tags, and of their ``<Rule>``
    groups), as many as ``config`` has filters."""
    tags = {rs.tag for rs in config.rule_sets}
    out = []
    for el in root.iter(*tags):
        for child in el:
            if child.tag == "Rule":
                out.extend(c for c in child if isinstance(c.tag, str))
            elif isinstance(child.tag, str):
                out.append(child)
    return out


def _element_floor(elements: list) -> list:
    """The least a reader through lxml's element API does per filter element: read its tag,
    child count, attributes, text and line, and make one ``Filter`` (without ``__init__``,
    as the reader does)."""
    from sysmonx.config.parse import _new_filter
    out = []
    for f in elements:
        tag = f.tag
        if not len(f):
            cond = name = None
            for key, v in f.items():
                if key == "condition":
                    cond = v
                elif key == "name":
                    name = v
            out.append(_new_filter(tag, cond or "is", f.text or "", name or "", 0,
                                   f.sourceline, ()))
    return out


def _best(fn, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=default_corpus())
    ap.add_argument("--configs", default="sos,modular")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--cpu", type=int, default=None)
    ap.add_argument("--instructions", action="store_true")
    ap.add_argument("--replay", action="store_true",
                    help="with --instructions: also count whole replays of the corpus EVTX")
    args = ap.parse_args()
    paths = []
    for name in args.configs.split(","):
        p = Path(args.corpus) / CONFIGS.get(name, name)
        if not p.is_file():
            print(f"no config {p}", file=sys.stderr)
            return 1
        paths.append((LABELS.get(name, p.name), str(p)))
    print(f"load average (1/5/15 min) before: {_load()}")
    if args.instructions:
        if shutil.which("valgrind") is None:
            print("--instructions needs valgrind", file=sys.stderr)
            return 1
        print("instructions executed (callgrind), millions, inside the measured call only")
        for label, path in paths:
            lx, parse, comp = (_instructions(w, path) for w in ("lxml", "parse", "compile"))
            print(f"{label:16} lxml parse {lx / 1e6:7.2f}   config parse {parse / 1e6:7.2f} "
                  f"({parse / lx:4.1f}x lxml)   deciders, {len(IDS)} EventIDs "
                  f"{comp / 1e6:7.2f} ({comp / lx:4.1f}x lxml)")
            load, built = _later_run(path)
            print(f"{'':16} a later run (both caches filled): config from the cache "
                  f"{load / 1e6:7.2f} ({load / lx:4.1f}x lxml)   engine + deciders from the "
                  f"stored plans {built / 1e6:7.2f} ({built / lx:4.1f}x lxml)")
        if args.replay:
            evtx = str(Path(args.corpus) / "evtx")
            base, _ = _replays("", evtx)
            print(f"whole replay of {evtx} (jsonl to a null stream), no config "
                  f"{base / 1e6:8.2f}")
            for label, path in paths:
                first, later = _replays(path, evtx)
                print(f"{label:16} first run {first / 1e6:8.2f} (+{(first - base) / 1e6:6.2f} "
                      f"over no config)   later run {later / 1e6:8.2f} "
                      f"(+{(later - base) / 1e6:6.2f})")
    else:
        cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        from lxml import etree

        from sysmonx.config import load_config
        from sysmonx.filtering import FilterEngine
        print(f"CPU ms, pinned to CPU {cpu}, best of {args.runs}")
        for label, path in paths:
            raw = Path(path).read_bytes()
            lx = _best(lambda raw=raw: etree.fromstring(raw), args.runs)
            parse = _best(lambda path=path: load_config(path, cache=None), args.runs)

            loaded = load_config(path, cache=None)

            def compile_all(config=loaded) -> None:
                engine = FilterEngine(config, plan_cache=False)
                for eid in IDS:
                    engine.decider_for(eid)
            comp = _best(compile_all, args.runs)
            print(f"{label:16} lxml parse {lx:6.2f} ms   config parse {parse:6.2f} ms "
                  f"({parse / lx:4.1f}x lxml)   deciders, {len(IDS)} EventIDs {comp:6.2f} ms "
                  f"({comp / lx:4.1f}x lxml)")
            elements = _filter_elements(etree.fromstring(raw), loaded)
            floor = _best(lambda els=elements: _element_floor(els), args.runs)
            print(f"{'':16} floor of a reader through lxml's element API, "
                  f"{len(elements)} filter elements: {floor:6.2f} ms "
                  f"(+ lxml's parse: {(floor + lx) / lx:4.1f}x lxml)")
    print(f"load average (1/5/15 min) after: {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
