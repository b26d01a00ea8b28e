#!/usr/bin/env python3
"""Cost of the workbench reports as a ratio of a plain replay, both measured in this run.

    python bench/bench_workbench.py [--corpus DIR] [--rounds N] [--inputs PATH...]

Inputs (default): the public EVTX folder (``<corpus>/evtx``, 1,755 Sysmon events) and the two
largest Security-Datasets archives (``metasploit_out-minidump_lsass_memory_dump.zip``,
``empire_scm_dll_hijack_ikeext.tar.gz``: 45,988 Sysmon events in JSON exports). Config:
sysmon-modular's ``sysmonconfig.xml`` (the largest corpus config, 2,025 filters); ``diff``
compares it with SwiftOnSecurity's.

Baseline: ``sysmonx replay --config sysmon-modular --no-output`` on the same inputs (the
:class:`~sysmonx.pipeline.Replayer` with that config and no writer). Measured, on the same
inputs: ``config stats`` (engine decision + memoised explain attribution + noisy-value counters
per event) and ``config diff`` (two engines per event, explain for the differing ones), each as
its command runs it: the replay's own filter (config A for diff) decides every event too, and
the workbench's totals are compared with its counters (the replay-side cross-check). The
reports' rendering (text, JSON, HTML) is not timed: it is a few milliseconds.

Rows: **cold** (the headline): a fresh :class:`~sysmonx.workbench.stats.ConfigStats` /
``ConfigDiff`` (configs loaded and engines compiled before the clock starts, as for the
replay) makes ONE pass, its explain memo empty; **warm**: the same object a second pass (its memo
full: what a long log with repetitive events costs). Times are CPU seconds of this process
(``time.process_time``, every thread), the best of ``--rounds``; each round measures the
baseline and both rows one after another. The load average is printed before and after: rerun
when the machine was busy. Exit status non-zero when a measured pass saw a different number of
Sysmon events than the baseline, or none.
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

from _common import default_corpus  # noqa: E402

from sysmonx.config import load_config  # noqa: E402
from sysmonx.pipeline import Replayer, ReplayOptions  # noqa: E402
from sysmonx.workbench.common import replay_through  # noqa: E402
from sysmonx.workbench.diff import ConfigDiff, ConfigDiffStage  # noqa: E402
from sysmonx.workbench.stats import ConfigStats, ConfigStatsStage  # noqa: E402

MODULAR = "configs/olafhartong__sysmon-modular/sysmonconfig.xml"
SWIFT = "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml"
LARGE = ("json/OTRF__Security-Datasets/datasets/compound/LSASS_campaign_04/"
         "metasploit_out-minidump_lsass_memory_dump.zip",
         "json/OTRF__Security-Datasets/datasets/atomic/windows/defense_evasion/host/"
         "empire_scm_dll_hijack_ikeext.tar.gz")


def _ignore(err) -> None:
    pass


def replay_pass(config, inputs: list[str]) -> tuple[int, float]:
    replayer = Replayer(ReplayOptions(config=config), None, on_error=_ignore)
    t = time.process_time()
    st = replayer.run(inputs)
    replayer.finish()
    dt = time.process_time() - t
    replayer.close()
    return st.sysmon, dt


def timed(stage, inputs: list[str], **how) -> tuple[int, float]:
    """One workbench pass as the CLI runs it: the replay with config A's filter (its counters
    are the replay-side cross-check), the stage right before it; ``how``: ``config``,
    ``engine``, ``enrich_fields`` of :func:`~sysmonx.workbench.common.replay_through`."""
    t = time.process_time()
    st = replay_through(inputs, [stage], on_error=_ignore, **how)
    return st.sysmon, time.process_time() - t


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=default_corpus())
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--inputs", nargs="+", help="default: the corpus EVTX and two large JSON "
                                               "archives (module docstring)")
    args = p.parse_args()
    corpus = Path(args.corpus)
    inputs = args.inputs or [str(corpus / "evtx")] + [str(corpus / x) for x in LARGE]
    for x in inputs:
        if not Path(x).exists():
            print(f"error: {x}: not found", file=sys.stderr)
            return 1
    modular, swift = load_config(corpus / MODULAR), load_config(corpus / SWIFT)
    print(f"python {sys.executable}; load average before: {loadavg()}")
    best: dict[str, float] = {}
    counts: set[int] = set()
    for _ in range(max(1, args.rounds)):
        n, dt = replay_pass(modular, inputs)
        counts.add(n)
        best["replay"] = min(best.get("replay", dt), dt)
        stats = ConfigStats(modular)
        stage = ConfigStatsStage(stats)
        for row in ("stats cold", "stats warm"):
            n, dt = timed(stage, inputs, config=modular, engine=stats.engine)
            counts.add(n)
            best[row] = min(best.get(row, dt), dt)
        diff = ConfigDiff(swift, modular)
        dstage = ConfigDiffStage(diff)
        for row in ("diff cold", "diff warm"):
            n, dt = timed(dstage, inputs, config=swift, engine=diff.a.engine,
                          enrich_fields=modular.enrichment_fields_used())
            counts.add(n)
            best[row] = min(best.get(row, dt), dt)
    events = counts.pop() if len(counts) == 1 else 0
    print(f"inputs: {', '.join(inputs)}")
    print(f"Sysmon events per pass: {events:,}; best of {args.rounds} rounds; CPU seconds")
    print(f"{'measured':<34} {'CPU s':>8} {'events/s':>10} {'x replay':>9}")
    base = best["replay"]
    names = {"replay": "replay --config modular (baseline)",
             "stats cold": "config stats, cold (headline)", "stats warm": "config stats, warm",
             "diff cold": "config diff, cold (headline)", "diff warm": "config diff, warm"}
    for key, label in names.items():
        dt = best[key]
        print(f"{label:<34} {dt:>8.3f} {events / dt if dt else 0:>10,.0f} {dt / base:>9.2f}")
    print(f"load average after: {loadavg()}; cores: {os.cpu_count()}")
    if not events:
        print("error: the passes saw different event counts, or none", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
