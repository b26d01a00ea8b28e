#!/usr/bin/env python3
"""Scale-out replay on Dask: ``replay --dask local`` with 1 and 2 workers against the
one-process replay of the same input, with Sigma rules.

    python bench/bench_dask.py [--corpus DIR] [--copies N] [--rounds R]

Input: the corpus's EVTX files, JSON exports and Sysmon for Linux log, each copied ``--copies``
times (default 4) into a temporary folder (distinct files, so there are tasks to spread; the
copies repeat records, so every run uses ``--keep-duplicates``). Config: SwiftOnSecurity's;
rules: the corpus's SigmaHQ Sysmon bundle. Each configuration runs ``--rounds`` times (default
2) as a fresh ``sysmonx replay`` process writing JSON lines; reported per configuration: the
best wall time, its CPU (the command and every process it started, workers included), the
speed-up of wall time against the 1-worker Dask run and against the one-process replay. Every
output must be byte-identical to the one-process replay's, or the run fails (exit 1).
Machine load (``uptime``) is printed before and after.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _common import default_corpus  # noqa: E402

CONFIG = "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml"
RULES = "sigma/sigmahq_rules_sysmon_categories.tar.gz"


def run(args: list[str], out: Path) -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "sysmonx"), "replay", *args, "-f", "jsonl",
                    "-o", str(out), "-q", "--keep-duplicates"], check=True,
                   stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, hashlib.sha256(out.read_bytes()).hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=default_corpus())
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    corpus = Path(args.corpus)
    if not (corpus / RULES).is_file():
        print(f"corpus missing: {corpus}", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="sysmonx-dask-"))
    try:
        inputs = work / "in"
        n = 0
        for sub in ("evtx", "json", "linux"):
            for f in sorted((corpus / sub).rglob("*")):
                if f.is_file() and f.suffix.lower() in (".evtx", ".zip", ".gz", ".log", ".json"):
                    for c in range(args.copies):
                        dst = inputs / f"{c}" / f.relative_to(corpus)
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(f, dst)
                        n += 1
        common = [str(inputs), "-c", str(corpus / CONFIG), "--rules", str(corpus / RULES)]
        print(f"input: {n} files ({args.copies} copies of the corpus logs), "
              f"{sum(p.stat().st_size for p in inputs.rglob('*') if p.is_file()) / 2**20:.1f} "
              f"MiB; rules: SigmaHQ Sysmon bundle; cpus: {os.cpu_count()}")
        print(f"load before: {os.getloadavg()}")
        configs = [("one process", []), ("dask local, 1 worker", ["--dask", "local",
                                                                  "--dask-workers", "1"]),
                   ("dask local, 2 workers", ["--dask", "local", "--dask-workers", "2"])]
        best: dict[str, tuple[float, float]] = {}
        digests: dict[str, str] = {}
        for _ in range(args.rounds):
            for name, extra in configs:
                wall, cpu, digest = run(common + extra, work / "out.jsonl")
                digests.setdefault(name, digest)
                if digest != digests[name]:
                    print(f"{name}: output changed between rounds", file=sys.stderr)
                    return 1
                if name not in best or wall < best[name][0]:
                    best[name] = (wall, cpu)
        ref = digests["one process"]
        one = best["one process"][0]
        d1 = best["dask local, 1 worker"][0]
        print(f"{'run':24} {'wall s':>7} {'CPU s':>7} {'vs 1 worker':>12} {'vs one process':>15}"
              f"  output")
        failed = False
        for name, _ in configs:
            wall, cpu = best[name]
            same = digests[name] == ref
            failed |= not same
            print(f"{name:24} {wall:7.2f} {cpu:7.2f} {d1 / wall:12.2f} {one / wall:15.2f}  "
                  f"{'identical' if same else 'DIFFERENT'}")
        print(f"load after: {os.getloadavg()}")
        return 1 if failed else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
