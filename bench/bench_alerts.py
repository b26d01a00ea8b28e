"""What an alert costs now that it names its source file and carries the whole matched event.

Replays the corpus EVTX files once through the 1,999 SigmaHQ Sysmon rules of the corpus bundle
to collect every (rule, matched event) pair, then times, per alert, building the alert
(``DetectionStage._alert``) and rendering its JSON line (``Alert.to_json``) two ways in the same
process, interleaved round by round:

* **baseline**: the alert as it was before ``source_file`` and ``event`` (key fields only: the
  stage's two helpers for them replaced by ``None`` for the round);
* **full**: the alert as written today.

CPU time (``time.process_time``), best of ``--rounds``; also the JSON bytes per alert and the
alerts' share of a replay: (full - baseline) x alerts, against the cold replay + Sigma pass time
given with ``--pass-seconds`` (from ``bench_sigma.py``), if any. Exits 1 when no alert was
produced (nothing measured).

With ``--paths``, instead: each alert as the stage makes it (``DetectionStage.process``: the
compiled path when the C extension is built, match included) and written, per round, three
ways in a fresh stage: not written (``build``), as a JSON line (``Alert.to_json``), as event
1000 in Windows XML (``Alert.to_event`` and the XML renderer); CPU per alert, the first round
(cold: rule heads not yet memorised), median, min and max of the rounds, and each writing's
median minus ``build``'s. It uses public calls only, so it runs any SysmonX tree put on
``PYTHONPATH`` (two trees compare only within one window).

    python bench/bench_alerts.py [--rounds 7] [--repeat 20] [--paths]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import default_corpus


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=default_corpus())
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=20, help="renderings per alert per round")
    ap.add_argument("--pass-seconds", type=float, default=None,
                    help="CPU seconds of a cold replay + Sigma pass over the same files")
    ap.add_argument("--paths", action="store_true",
                    help="time alerts through the stage's process and both writings")
    args = ap.parse_args()
    if args.paths:
        return paths(args)

    from sysmonx.detection import DetectionStage
    from sysmonx.detection.alerts import Alert
    from sysmonx.sources.recorded import RecordedLogs

    corpus = Path(args.corpus)
    bundle = corpus / "sigma" / "sigmahq_rules_sysmon_categories.tar.gz"
    stage = DetectionStage.from_paths([bundle], cache=None)
    logs = RecordedLogs([str(corpus / "evtx")])
    pairs: list = []
    for ev in logs.events():
        if ev is not None and ev.is_sysmon:
            pairs.extend((r, ev) for r in stage.match(ev))
    if not pairs:
        print("no alert produced: nothing measured", file=sys.stderr)
        return 1
    files = logs.files

    import sysmonx.detection.stage as stage_module
    real = (stage_module.matched_event, stage_module.source_of)

    def run(full: bool) -> float:
        # the baseline builds the alert as before: no source_file, no matched event
        if full:
            stage_module.matched_event, stage_module.source_of = real
        else:
            stage_module.matched_event = lambda _e, _limit: None
            stage_module.source_of = lambda _e: None
        try:
            t = time.process_time()
            for _ in range(args.repeat):
                for r, ev in pairs:
                    stage._alert(r, ev).to_json()
            return time.process_time() - t
        finally:
            stage_module.matched_event, stage_module.source_of = real

    best = {True: float("inf"), False: float("inf")}
    for _ in range(args.rounds):
        for full in (False, True):
            best[full] = min(best[full], run(full))
    n = len(pairs) * args.repeat
    base_us, full_us = best[False] / n * 1e6, best[True] / n * 1e6
    one = stage._alert(*pairs[0])
    size_full = sum(len(stage._alert(r, ev).to_json()) for r, ev in pairs) / len(pairs)
    size_base = sum(len(Alert(a.rule_id, a.title, a.level, a.status, a.kind, a.tags,
                              a.window_start, a.window_end, a.computer, a.group, a.record_ids,
                              a.event_count, a.event_ids, a.rules, a.value,
                              a.fields).to_json())
                    for a in (stage._alert(r, ev) for r, ev in pairs)) / len(pairs)
    print(f"alerts: {len(pairs)} (files: {files}); first: {one.rule_id} "
          f"source_file {os.path.basename(one.source_file or '-')}")
    print(f"CPU per alert (build + JSON line), best of {args.rounds} rounds x {args.repeat}: "
          f"key fields only {base_us:.2f} us, with source_file and the matched event "
          f"{full_us:.2f} us (+{full_us - base_us:.2f} us)")
    print(f"bytes per alert line: {size_base:,.0f} -> {size_full:,.0f} "
          f"({size_full / size_base:.2f}x)")
    extra = (full_us - base_us) * len(pairs) / 1e6
    line = f"added CPU for this corpus's {len(pairs)} alerts: {extra * 1e3:.2f} ms per pass"
    if args.pass_seconds:
        line += f" ({100 * extra / args.pass_seconds:.1f} % of a {args.pass_seconds:.3f} s pass)"
    print(line)
    return 0


def paths(args: argparse.Namespace) -> int:
    """``--paths``: see the module docstring."""
    import statistics

    from sysmonx.detection import DetectionStage
    from sysmonx.sinks.xml_windows import render_windows_xml
    from sysmonx.sources import iter_input_files, open_source

    corpus = Path(args.corpus)
    rules = corpus / "sigma" / "sigmahq_rules_sysmon_categories.tar.gz"
    probe = DetectionStage.from_paths([rules])
    events = []
    for f in iter_input_files([str(corpus / "evtx")]):
        events.extend(e for e in open_source(f, lambda e: None) if probe.process(e))
    if not events:
        print("no alert produced: nothing measured", file=sys.stderr)
        return 1

    def run(write) -> tuple:
        st = DetectionStage.from_paths([rules])
        n = 0
        t = time.process_time()
        for _ in range(args.repeat):
            for e in events:
                for a in st.process(e):
                    n += 1
                    write(a)
        return time.process_time() - t, n

    modes = {"build": lambda a: None, "json": lambda a: a.to_json(),
             "event1000": lambda a: render_windows_xml(a.to_event(record_id=1))}
    res: dict = {k: [] for k in modes}
    n = 0
    for _ in range(args.rounds):
        for k, w in modes.items():
            cpu, n = run(w)
            res[k].append(cpu / n * 1e6)
    print(f"events with alerts: {len(events)}, alerts per round: {n:,}, "
          f"rounds: {args.rounds}, load: {os.getloadavg()[0]:.2f}")
    print(f"{'CPU us per alert':<26}{'first':>8}{'median':>9}{'min':>8}{'max':>8}")
    base = statistics.median(res["build"])
    for k, v in res.items():
        print(f"{k:<26}{v[0]:8.2f}{statistics.median(v):9.2f}{min(v):8.2f}{max(v):8.2f}")
    for k in ("json", "event1000"):
        print(f"{k + ' writing alone':<26}{'':8}{statistics.median(res[k]) - base:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
