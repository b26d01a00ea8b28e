#!/usr/bin/env python3
"""What ``--profile-rules`` costs: Sigma detection with the per-rule profile off and on, both
measured in this run.

    python bench/bench_rule_profile.py [--corpus DIR] [--rules PATH] [--rounds N]

The measured path is bench/bench_sigma.py's cold row: the replay read path over every EVTX
under ``<corpus>/evtx`` with every event through a freshly compiled
:class:`~sysmonx.detection.DetectionStage` (all SigmaHQ rules of the corpus bundle), alerts
rendered as JSON lines into a null stream, ``finish()`` at the end; one pass per stage (cold).
Rows, each round measuring them one after another, best round of each:

* **read path alone** (what the events cost without detection);
* **profile off**: the stage as a replay without ``--profile-rules`` runs it;
* **profile on**: the same with a :class:`~sysmonx.detection.profile.RuleProfile` attached.

Times are CPU seconds of this process (``time.process_time``), robust to other load. Printed:
records/s, detection's own CPU per event (row minus the read path) and the on/off ratio of
that; the load average before and after. Exit status 1 when a row read a different number of
records or found different alerts than another, or nothing was read.

"Off" costs nothing by construction (the matcher's and engine's own methods run, untouched; no
check for a profile is made per event): compare this row with bench/bench_sigma.py's cold row
of the code before the profile existed to see it measured.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from _common import default_corpus  # noqa: E402
from bench_sigma import _cpu, _load, detect, read_only  # noqa: E402

from sysmonx.detection import DetectionOptions, DetectionStage, load_rules  # noqa: E402
from sysmonx.detection.profile import RuleProfile  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=default_corpus())
    ap.add_argument("--rules", default=None,
                    help="rules (default: the corpus's SigmaHQ Sysmon bundle)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    corpus = Path(args.corpus)
    files = sorted(str(p) for p in (corpus / "evtx").rglob("*.evtx"))
    if not files:
        print(f"no EVTX under {corpus / 'evtx'}; set --corpus or SYSMONX_CORPUS", file=sys.stderr)
        return 1
    rules = Path(args.rules) if args.rules else \
        corpus / "sigma" / "sigmahq_rules_sysmon_categories.tar.gz"
    load_before = _load()
    loaded = load_rules([rules])
    read_only(files)  # page cache and imports warm for every row alike
    best = {"read": float("inf"), "off": float("inf"), "on": float("inf")}
    counts: dict = {}
    stage = None
    prof = None
    for _ in range(args.rounds):
        n, cpu = _cpu(read_only, files)
        best["read"] = min(best["read"], cpu)
        counts.setdefault("read", set()).add(n)
        for key in ("off", "on"):
            if stage is not None:
                stage.close()
            if loaded is None:  # a stage consumes its rules (drops their parsed detections)
                loaded = load_rules([rules])
            stage = DetectionStage(loaded, DetectionOptions())
            loaded = None
            if not stage.rules_loaded:
                print("error: no rule compiled", file=sys.stderr)
                return 1
            if key == "on":
                prof = RuleProfile.attach(stage)
            (n, alerts), cpu = _cpu(detect, files, stage, True)
            if prof is not None:
                prof.detach()
            best[key] = min(best[key], cpu)
            counts.setdefault(key, set()).add((n, alerts))
    load_after = _load()
    n = next(iter(counts["read"]))
    ok = n > 0 and len(counts["read"]) == 1 and counts["off"] == counts["on"] and \
        len(counts["off"]) == 1 and next(iter(counts["off"]))[0] == n
    if not ok:
        print(f"error: records or alerts differ between rows: {counts}", file=sys.stderr)
        return 1
    assert prof is not None and stage is not None
    alerts = next(iter(counts["off"]))[1]
    print(f"files: {len(files)}  records per pass: {n:,}  alerts: {alerts:,}  rules: "
          f"{stage.rules_loaded} ({rules.name})  load average before/after: {load_before} / "
          f"{load_after}")
    print(f"CPU seconds, best of {args.rounds} rounds; each stage freshly compiled, one pass "
          "(cold)")
    own = {k: (best[k] - best["read"]) / n * 1e6 for k in ("off", "on")}
    print(f"{'row':<26}{'CPU s':>8}{'records/s':>12}{'detection us/event':>20}")
    print(f"{'read path alone':<26}{best['read']:8.3f}{n / best['read']:12,.0f}")
    for key, label in (("off", "profile off"), ("on", "profile on")):
        print(f"{label:<26}{best[key]:8.3f}{n / best[key]:12,.0f}{own[key]:20.1f}")
    print(f"detection's own CPU, on / off: {own['on'] / own['off']:.2f}x; whole pass: "
          f"{best['on'] / best['off']:.2f}x")
    print(prof.summary_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
