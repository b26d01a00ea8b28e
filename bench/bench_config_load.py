#!/usr/bin/env python3
"""A config's load as a command-line run pays it, imports included: first run and later runs.

    python bench/bench_config_load.py [--corpus DIR] [--configs sos,modular] [--runs N]

bench_replay.py times a replay's load window with every module imported beforehand; a
``sysmonx replay -c FILE`` process also imports the config reader, the filter and the caches'
modules, and where bytecode is not written (``PYTHONDONTWRITEBYTECODE=1``, as on this machine)
it compiles them at every run. This bench measures, in fresh child processes, the CPU time
(user + system, this process) from just before ``from sysmonx.config import load_config`` and
``from sysmonx.filtering import FilterEngine`` to after ``FilterEngine(load_config(path))``,
its deciders for EventIDs 1, 3, 11 and 13 compiled and its plans saved (what a replay's filter
stage does at the end). What every run imports anyway (lxml, the schema, the registries) is
imported before the window.

* **first run**: an empty cache folder (``$SYSMONX_CACHE_DIR``), a new one per child;
* **later run**: a folder filled by two runs of the same config beforehand;
* **off**: ``SYSMONX_CONFIG_CACHE=0`` (what the load costs without the caches, same run).

The children of both rows are interleaved ``--runs`` times per config; the median and the best
are printed with the load average before and after. Run the code of another tree with
``PYTHONPATH=OTHER/src`` (the children inherit it). Exit status 1 when a child failed or the
cache folders do not hold what the row needs (first run: no entry stored; later run: an entry
in the config and the filter plan caches).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import default_corpus

CONFIGS = {
    "sos": "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml",
    "modular": "configs/olafhartong__sysmon-modular/sysmonconfig.xml",
}

CHILD = """
import json, os, sys, time
import lxml.etree, sysmonx.configmodel, sysmonx.schema, sysmonx.schema.catalogue  # every run
import sysmonx.core.registry, sysmonx.core.errors, sysmonx.core.regex
sysmonx.core.registry.CONDITIONS.entries()
t = time.process_time()
from sysmonx.config import load_config
from sysmonx.filtering import FilterEngine
engine = FilterEngine(load_config(sys.argv[1]))
for eid in (1, 3, 11, 13):
    engine.decider_for(eid)
engine.save_plans()
cpu = time.process_time() - t
print(json.dumps({"cpu": cpu}))
"""


def _child(path: str, cache: str) -> float:
    env = dict(os.environ, SYSMONX_CACHE_DIR=cache)
    env.pop("SYSMONX_CONFIG_CACHE", None)
    if cache == "off":
        env["SYSMONX_CONFIG_CACHE"] = "0"
    r = subprocess.run([sys.executable, "-c", CHILD, path], capture_output=True, text=True,
                       env=env)
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    return json.loads(r.stdout)["cpu"]


def _entries(cache: str, name: str) -> list[str]:
    d = os.path.join(cache, name)
    return [n for n in os.listdir(d) if n.endswith(".marshal")] if os.path.isdir(d) else []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=default_corpus())
    ap.add_argument("--configs", default="sos,modular")
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    corpus = Path(args.corpus)
    status = 0
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    rows = []
    for name in args.configs.split(","):
        path = str(corpus / CONFIGS[name]) if name in CONFIGS else name
        warm = tempfile.mkdtemp(prefix="bench-config-load-warm-")
        try:
            for _ in range(2):
                _child(path, warm)
            if not (_entries(warm, "config") and _entries(warm, "filter")):
                print(f"{name}: the cache was not filled by two runs", file=sys.stderr)
                status = 1
            first, later, off = [], [], []
            for _ in range(args.runs):
                off.append(_child(path, "off"))
                empty = tempfile.mkdtemp(prefix="bench-config-load-")
                try:
                    first.append(_child(path, empty))
                    if _entries(empty, "config") or _entries(empty, "filter"):
                        print(f"{name}: a first run stored an entry", file=sys.stderr)
                        status = 1
                finally:
                    shutil.rmtree(empty, ignore_errors=True)
                later.append(_child(path, warm))
        finally:
            shutil.rmtree(warm, ignore_errors=True)
        rows.append((name, first, later, off))
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    import sysmonx
    print(f"sysmonx from {Path(sysmonx.__file__).parent}; PYTHONDONTWRITEBYTECODE="
          f"{os.environ.get('PYTHONDONTWRITEBYTECODE', '')}; {args.runs} children per row")
    print(f"load average (1/5/15 min) before: {load_before}  after: {load_after}")
    print(f"{'config':10} {'first median ms':>16} {'first best':>11} {'later median ms':>16} "
          f"{'later best':>11} {'off median ms':>14} {'off best':>9}")
    for name, first, later, off in rows:
        print(f"{name:10} {statistics.median(first) * 1000:16.1f} {min(first) * 1000:11.1f} "
              f"{statistics.median(later) * 1000:16.1f} {min(later) * 1000:11.1f} "
              f"{statistics.median(off) * 1000:14.1f} {min(off) * 1000:9.1f}")
    return status


if __name__ == "__main__":
    sys.exit(main())
