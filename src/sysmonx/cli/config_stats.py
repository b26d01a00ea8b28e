"""``sysmonx config stats CONFIG LOGS...``: per rule set and filter, what a config decides over
recorded logs (:mod:`sysmonx.workbench.stats`)."""

from __future__ import annotations

import argparse
import io
import json

from . import common
from .common import EXIT_FATAL, EXIT_USAGE

__all__ = ["cmd_config_stats"]


def _parser() -> argparse.ArgumentParser:
    p = common.UsageParser(
        prog="sysmonx config stats",
        description="Replay recorded logs through a Sysmon config and report, per rule set and "
                    "filter (file:line and RuleName), the events it decided; per EventID the "
                    "events kept and dropped; the noisiest Images, TargetFilenames and "
                    "TargetObjects among kept events; and the filters that never matched.")
    p.add_argument("config", help="the Sysmon XML config ('default': the built-in one)")
    p.add_argument("logs", nargs="+", metavar="LOGS", help="recorded logs (files, folders)")
    p.add_argument("--format", "-f", choices=["text", "json", "csv"], default="text",
                   help="text (default), json (stable, docs/WORKBENCH.md) or csv (one row per "
                        "filter)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the report to FILE (default: "
                                                          "stdout)")
    p.add_argument("--html", metavar="REPORT.html", help="also write a self-contained HTML "
                                                         "report with charts")
    p.add_argument("--top", type=int, default=20, metavar="N",
                   help="rows in the top lists (default 20)")
    p.add_argument("--input-format", help="force the reader (as sysmonx replay)")
    common.add_engine_options(p)
    return p


def cmd_config_stats(argv: list[str]) -> int:
    """Run ``config stats``; exit 0, 1 on an unreadable config, input or output, 2 on usage."""
    args = _parser().parse_args(argv)
    console = common.stderr_console()
    if args.top < 1:
        console.print("error: --top must be at least 1")
        return EXIT_USAGE
    if not common.check_inputs(args.logs, console):
        return EXIT_FATAL
    cfg = common.load_config_reporting(args.config, console, not args.no_extensions)
    if cfg is None:
        return EXIT_FATAL
    from ..workbench.common import replay_through
    from ..workbench.stats import (ConfigStats, ConfigStatsStage, format_text, report_sections,
                                   write_csv)
    options = common.engine_options(args)
    stats = ConfigStats(cfg, options)
    replay = replay_through(args.logs, [ConfigStatsStage(stats)], config=cfg,
                            engine=stats.engine, engine_options=options,
                            input_format=args.input_format,
                            on_error=common.read_error_printer(console))
    stats.compare_replay(replay.included, replay.excluded)
    if not replay.sysmon:
        console.print("warning: no Sysmon events found in " + ", ".join(args.logs), markup=False)
    d = stats.to_dict(top=args.top, inputs=args.logs, replay=replay)
    if args.format == "json":
        text = json.dumps(d, indent=1, ensure_ascii=False) + "\n"
    elif args.format == "csv":
        buf = io.StringIO()
        write_csv(d, buf)
        text = buf.getvalue()
    else:
        text = format_text(d, args.top)
    if not common.write_report(text, args.output, console):
        return EXIT_FATAL
    if args.html:
        from ..workbench.html import render_report
        html = render_report(f"Config stats: {cfg.path}",
                             f"{replay.sysmon} Sysmon events from " + ", ".join(args.logs),
                             report_sections(d, args.top))
        if not common.write_report(html, args.html, console):
            return EXIT_FATAL
    if stats.mismatches:
        console.print(f"error: the engine and the explain walk disagree on {stats.mismatches} "
                      "events (a defect: please report it with the config and the events)")
        return EXIT_FATAL
    if stats.replay_mismatches:
        console.print(f"error: these counts differ from the replay's own filter for "
                      f"{len(stats.replay_mismatches)} EventIDs (a defect: please report it "
                      "with the config and the events)")
        return EXIT_FATAL
    return 0
