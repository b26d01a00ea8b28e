#!/usr/bin/env python3
"""Replay throughput as a ratio of raw pyevtx-rs parsing, both measured in this run.

    python bench/bench_replay.py [--corpus DIR] [--config FILE] [--rounds N] [--format xml]

Baseline: iterate ``evtx.PyEvtxParser(f).records_json()`` over every EVTX under
``<corpus>/evtx`` (the parse alone, no JSON decoding). Measured: ``Replayer`` over the same files
with SwiftOnSecurity's config, writing the included events in the chosen format to a null
stream (``--format none`` counts only). Each is timed ``--rounds`` times interleaved; the best
round of each is used, so background noise on the machine hurts both alike. Prints events/s of
both and the ratio replay/baseline (issue target: >= 0.6). ``--jobs N`` replays on N worker
processes (files spread over them, output in input order), as ``sysmonx replay --jobs N`` does
(with ``--keep-duplicates``, which ``--jobs`` needs). In one process the replay's duplicate filter
is on, with a fresh replayer per pass over the files so that the repeated passes of a round are
not dropped as duplicates.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from _common import baseline, default_corpus  # noqa: E402

from evtx import PyEvtxParser  # noqa: E402

from sysmonx.config import load_config  # noqa: E402
from sysmonx.pipeline import Replayer, ReplayOptions, make_writer, replay_parallel  # noqa: E402


class _Null(io.RawIOBase):
    def writable(self):
        return True

    def write(self, b):
        return len(b)


def baseline_decoded(files: list[str]) -> int:
    """Second reference: the parse plus decoding each record's JSON into Python objects."""
    import orjson
    n = 0
    loads = orjson.loads
    for f in files:
        for rec in PyEvtxParser(f).records_json():
            loads(rec["data"])
            n += 1
    return n


def replay(files: list[str], config, fmt: str, jobs: int = 1) -> int:
    if jobs > 1:
        stats = replay_parallel(files, ReplayOptions(config=config, keep_duplicates=True),
                                None if fmt == "none" else fmt,
                                _Null(), jobs, lambda line: None)
        return stats.records
    writer = None if fmt == "none" else make_writer(fmt, _Null())
    # One replayer per pass over the file list: its duplicate filter runs (and costs what it
    # costs) but a second pass over the same files is not taken for duplicates and dropped.
    total, r, seen = 0, None, set()
    for f in files:
        if r is None or f in seen:
            total += r.stats.records if r is not None else 0
            r, seen = Replayer(ReplayOptions(config=config), writer), set()
        seen.add(f)
        r.run_file(f)
        if r.stats.duplicates:
            raise SystemExit(f"error: {f}: {r.stats.duplicates} records taken for duplicates "
                             "within one pass; the measurement would not write them")
    if writer is not None:
        writer.close()
    return total + (r.stats.records if r is not None else 0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=default_corpus())
    ap.add_argument("--config", default=None,
                    help="default: SwiftOnSecurity's sysmonconfig-export.xml from the corpus")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3, help="passes over the file set per round")
    ap.add_argument("--format", default="xml", choices=["xml", "linux-xml", "jsonl", "none"])
    ap.add_argument("--jobs", type=int, default=1, help="replay worker processes (default 1)")
    args = ap.parse_args()
    corpus = Path(args.corpus)
    files = sorted(str(p) for p in (corpus / "evtx").rglob("*.evtx"))
    if not files:
        print(f"no EVTX under {corpus / 'evtx'}; set --corpus or SYSMONX_CORPUS", file=sys.stderr)
        return 1
    cfg_path = Path(args.config) if args.config else \
        corpus / "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml"
    config = load_config(cfg_path)
    work = files * args.repeat
    best_base = best_replay = best_decoded = float("inf")
    n_base = n_replay = 0
    baseline(files)  # warm the page cache and imports
    replay(files, config, args.format, args.jobs)
    for _ in range(args.rounds):
        t = time.perf_counter()
        n_base = baseline(work)
        best_base = min(best_base, time.perf_counter() - t)
        t = time.perf_counter()
        baseline_decoded(work)
        best_decoded = min(best_decoded, time.perf_counter() - t)
        t = time.perf_counter()
        n_replay = replay(work, config, args.format, args.jobs)
        best_replay = min(best_replay, time.perf_counter() - t)
    if n_base != n_replay:
        print(f"warning: baseline read {n_base} records, replay {n_replay}", file=sys.stderr)
    base_rate, replay_rate = n_base / best_base, n_replay / best_replay
    print(f"files: {len(files)} x {args.repeat}  records per pass: {n_base}")
    print(f"config: {cfg_path.name}  output: {args.format}  jobs: {args.jobs}")
    print(f"baseline pyevtx-rs records_json: {base_rate:12,.0f} records/s")
    print(f"  + orjson.loads of each record:   {n_base / best_decoded:12,.0f} records/s "
          f"(ratio {best_base / best_decoded:.3f}; the floor of any Python consumer)")
    print(f"sysmonx replay:                  {replay_rate:12,.0f} records/s")
    print(f"ratio replay/baseline: {replay_rate / base_rate:.3f}  (target >= 0.6)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
