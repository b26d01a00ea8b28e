"""``sysmonx coverage [--config CONFIG] [--rules SIGMA...] [--logs LOGS...]``: ATT&CK
techniques covered by a config's RuleNames and Sigma rules' tags, and which fired
(:mod:`sysmonx.workbench.coverage`)."""

from __future__ import annotations

import argparse
import json

from . import common
from .common import EXIT_FATAL, EXIT_USAGE

__all__ = ["cmd_coverage"]


def _parser() -> argparse.ArgumentParser:
    p = common.UsageParser(
        prog="sysmonx coverage",
        description="ATT&CK techniques named by a Sysmon config's RuleNames (technique_id=..., "
                    "T1055,..., attack.t1059 ...) and by Sigma rules' tags; with --logs, which "
                    "of them fired. Text or JSON, an ATT&CK Navigator layer, an HTML report.")
    p.add_argument("--config", "-c", metavar="CONFIG", help="Sysmon XML config ('default': "
                                                            "the built-in one)")
    p.add_argument("--rules", nargs="+", action="extend", default=[], metavar="SIGMA",
                   help="Sigma rules (files, folders, .tar.gz bundles)")
    common.add_rule_issues_option(p)
    p.add_argument("--logs", nargs="+", action="extend", default=[], metavar="LOGS",
                   help="recorded logs: replay them through the config and rules and report "
                        "which techniques fired")
    p.add_argument("--format", "-f", choices=["text", "json"], default="text")
    p.add_argument("-o", "--output", metavar="FILE", help="default: stdout")
    p.add_argument("--navigator", metavar="FILE",
                   help="write an ATT&CK Navigator layer (layer format 4.5, JSON) to FILE")
    p.add_argument("--html", metavar="REPORT.html", help="also write a self-contained HTML "
                                                         "report with the technique heat map")
    p.add_argument("--input-format", help="force the log reader (as sysmonx replay)")
    common.add_engine_options(p)
    return p


def cmd_coverage(argv: list[str]) -> int:
    """Run ``coverage``; exit 0, 1 on an unreadable config, rules, input or output, 2 on
    usage."""
    args = _parser().parse_args(argv)
    console = common.stderr_console()
    if args.config is None and not args.rules:
        console.print("error: give --config CONFIG, --rules SIGMA or both")
        return EXIT_USAGE
    if args.logs and not common.check_inputs(args.logs, console):
        return EXIT_FATAL
    cfg = None
    if args.config is not None:
        cfg = common.load_config_reporting(args.config, console, not args.no_extensions)
        if cfg is None:
            return EXIT_FATAL
    detection = None
    if args.rules:
        detection = common.load_detection(args.rules, console,
                                          argparse.Namespace(rule_issues=args.rule_issues))
        if detection is None:
            return EXIT_FATAL
    from ..workbench.coverage import (Coverage, RuleNameCounter, format_text, navigator_layer,
                                      report_sections)
    cov = Coverage(cfg, detection)
    if args.logs:
        from ..pipeline import Replayer, ReplayOptions
        counter = RuleNameCounter()
        replayer = Replayer(ReplayOptions(config=cfg, input_format=args.input_format,
                                          engine_options=common.engine_options(args)),
                            None, on_error=common.read_error_printer(console),
                            detection=detection, extra_stages=[counter])
        try:
            replayer.run(args.logs)
            replayer.finish()
        finally:
            replayer.close()
        cov.add_fired(counter.names if cfg is not None else type(counter.names)(),
                      detection.matches if detection is not None else None)
    d = cov.to_dict(inputs=args.logs, rule_paths=args.rules)
    text = (json.dumps(d, indent=1, ensure_ascii=False) + "\n" if args.format == "json"
            else format_text(d))
    if not common.write_report(text, args.output, console):
        return EXIT_FATAL
    if args.navigator:
        layer = json.dumps(navigator_layer(d), indent=1, ensure_ascii=False) + "\n"
        if not common.write_report(layer, args.navigator, console):
            return EXIT_FATAL
    if args.html:
        from ..workbench.html import render_report
        what = []
        if cfg is not None:
            what.append(f"config {cfg.path}")
        if args.rules:
            what.append("Sigma " + ", ".join(args.rules))
        if args.logs:
            what.append("logs " + ", ".join(args.logs))
        html = render_report("ATT&CK coverage", "; ".join(what), report_sections(d))
        if not common.write_report(html, args.html, console):
            return EXIT_FATAL
    return 0
