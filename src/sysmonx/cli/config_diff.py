"""``sysmonx config diff A B LOGS...``: what two configs log differently over the same recorded
logs (:mod:`sysmonx.workbench.diff`)."""

from __future__ import annotations

import argparse
import json

from . import common
from .common import EXIT_FATAL, EXIT_USAGE

__all__ = ["cmd_config_diff"]


def _parser() -> argparse.ArgumentParser:
    p = common.UsageParser(
        prog="sysmonx config diff",
        description="Replay recorded logs through two Sysmon configs at once and report, per "
                    "EventID, the events only A keeps and only B keeps, why (the deciding rule "
                    "set and filters in each config) and example events.")
    p.add_argument("a", metavar="A", help="the first Sysmon XML config (e.g. the current one)")
    p.add_argument("b", metavar="B", help="the second Sysmon XML config (e.g. the change)")
    p.add_argument("logs", nargs="+", metavar="LOGS", help="recorded logs (files, folders)")
    p.add_argument("--format", "-f", choices=["text", "json"], default="text")
    p.add_argument("-o", "--output", metavar="FILE", help="default: stdout")
    p.add_argument("--html", metavar="REPORT.html", help="also write a self-contained HTML "
                                                         "report with charts")
    p.add_argument("--examples", "-n", type=int, default=5, metavar="N",
                   help="example events per side and EventID (default 5)")
    p.add_argument("--input-format", help="force the reader (as sysmonx replay)")
    common.add_engine_options(p)
    return p


def cmd_config_diff(argv: list[str]) -> int:
    """Run ``config diff``; exit 0, 1 on an unreadable config, input or output, 2 on usage."""
    args = _parser().parse_args(argv)
    console = common.stderr_console()
    if args.examples < 0:
        console.print("error: --examples must be 0 or more")
        return EXIT_USAGE
    if not common.check_inputs(args.logs, console):
        return EXIT_FATAL
    configs = []
    for path in (args.a, args.b):
        cfg = common.load_config_reporting(path, console, not args.no_extensions)
        if cfg is None:
            return EXIT_FATAL
        configs.append(cfg)
    from ..workbench.common import replay_through
    from ..workbench.diff import ConfigDiff, ConfigDiffStage, format_text, report_sections
    options = common.engine_options(args)
    diff = ConfigDiff(configs[0], configs[1], options, examples=args.examples)
    # the replay's own filter runs config A (its totals cross-check A's side); the enrichment
    # computes the fields of both configs, as a replay with either would
    replay = replay_through(args.logs, [ConfigDiffStage(diff)], config=configs[0],
                            engine=diff.a.engine, engine_options=options,
                            enrich_fields=configs[1].enrichment_fields_used(),
                            input_format=args.input_format,
                            on_error=common.read_error_printer(console))
    diff.compare_replay(replay.included, replay.excluded)
    if not replay.sysmon:
        console.print("warning: no Sysmon events found in " + ", ".join(args.logs), markup=False)
    d = diff.to_dict(inputs=args.logs, replay=replay)
    text = (json.dumps(d, indent=1, ensure_ascii=False) + "\n" if args.format == "json"
            else format_text(d))
    if not common.write_report(text, args.output, console):
        return EXIT_FATAL
    if args.html:
        from ..workbench.html import render_report
        html = render_report("Config diff", f"A: {configs[0].path}  B: {configs[1].path}  "
                             f"over {replay.sysmon} Sysmon events", report_sections(d))
        if not common.write_report(html, args.html, console):
            return EXIT_FATAL
    if d["cross_check"]["mismatches"]:
        console.print(f"error: the engine and the explain walk disagree on "
                      f"{d['cross_check']['mismatches']} events (a defect)")
        return EXIT_FATAL
    if diff.replay_mismatches:
        console.print(f"error: config A's counts differ from the replay's own filter for "
                      f"{len(diff.replay_mismatches)} EventIDs (a defect)")
        return EXIT_FATAL
    return 0
