"""``sysmonx config check|compile|decode|export|explain``: the configuration tools."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import common
from .common import EXIT_FATAL, config_mistake_hint, print_config_errors

__all__ = ["cmd_config", "cmd_explain"]


def _config_parser() -> argparse.ArgumentParser:
    p = common.UsageParser(prog="sysmonx config", description="Configuration tools.")
    sub = p.add_subparsers(dest="action", required=True)
    # stats and diff have their own parsers (cli/config_stats.py, cli/config_diff.py)
    sub.add_parser("stats", add_help=False,
                   help="per rule set and filter, the events a config decides over recorded "
                        "logs; noisy values; filters that never matched")
    sub.add_parser("diff", add_help=False,
                   help="what two configs log differently over the same recorded logs")
    c = sub.add_parser("check", help="validate a Sysmon config; errors and warnings with lines")
    c.add_argument("file")
    c.add_argument("--no-extensions", action="store_true")
    k = sub.add_parser("compile", help="compile a config into Sysmon's binary rule blob "
                                       "(registry Rules value / rules.bin), byte for byte")
    k.add_argument("file")
    k.add_argument("-o", "--output", required=True, metavar="BLOB")
    d = sub.add_parser("decode", help="turn a rule blob (raw, or a .reg export holding the "
                                      "Rules value) back into a Sysmon XML config")
    d.add_argument("blob")
    d.add_argument("-o", "--output", metavar="XML", help="default: stdout")
    x = sub.add_parser("export", help="write a config real Sysmon loads: --sysmon removes "
                                      "SysmonX-only filters, events and conditions (a warning "
                                      "each)")
    x.add_argument("file")
    x.add_argument("--sysmon", action="store_true", required=True,
                   help="target plain Sysmon (the only target)")
    x.add_argument("-o", "--output", metavar="XML", help="default: stdout")
    e = sub.add_parser("explain", help="print Sysmon's decision trace for one event: rule sets "
                                       "tried in order, filters evaluated, the decision and "
                                       "RuleName")
    e.add_argument("file", help="the Sysmon XML config (or default-windows, default-linux)")
    e.add_argument("event", help="a file holding one event: event XML (Windows or Sysmon for "
                                 "Linux form, or a syslog line) or a SysmonX JSON line")
    e.add_argument("--no-extensions", action="store_true")
    e.add_argument("--compare-fold", choices=["auto", "lower", "upper"], default="auto",
                   help="fold of less/more than: auto (upper for Sysmon for Linux events, "
                        "else lower)")
    e.add_argument("--fallback", choices=["code", "intent"], default="code")
    e.add_argument("--no-stale-rulename", action="store_true")
    e.add_argument("--no-rule-defaults", choices=["manifest", "community"], default="manifest")
    e.add_argument("--no-values", action="store_true",
                   help="do not show the event value next to each filter")
    e.add_argument("--brief", action="store_true",
                   help="one line: the decision, the deciding rule set and filters, RuleName")
    return p


def cmd_config(argv: list[str]) -> int:
    """``sysmonx config check|compile|decode|explain|stats|diff``: the configuration tools
    (``stats`` and ``diff`` in their own modules)."""
    from ..config import ConfigError, load_config
    if argv and argv[0] == "stats":
        from .config_stats import cmd_config_stats
        return cmd_config_stats(argv[1:])
    if argv and argv[0] == "diff":
        from .config_diff import cmd_config_diff
        return cmd_config_diff(argv[1:])
    args = _config_parser().parse_args(argv)
    console = common.stderr_console()
    file_arg = getattr(args, "file", None)
    if file_arg is not None and common.builtin_config_name(file_arg):
        if file_arg == "default":
            # replay's built-in is the Windows one; the live Linux sensor's differs
            console.print("note: 'default' is the built-in Windows config (replay's default); "
                          "the live Linux sensor ('sysmonx run') uses 'default-linux'",
                          markup=False)
        args.file = str(common.config_arg_path(file_arg))
    if not hasattr(args, "no_extensions"):
        args.no_extensions = False
    if args.action == "decode":
        from ..config.blob import BlobError, blob_to_xml, read_blob_file
        try:
            xml = blob_to_xml(read_blob_file(args.blob))
        except BlobError as exc:
            hint = ""
            try:
                with open(args.blob, "rb") as f:
                    if f.read(512).lstrip().lower().startswith((b"<?xml", b"<sysmon")):
                        hint = ("\n(this is already an XML config; 'sysmonx config check' "
                                "validates it)")
            except OSError:
                pass
            console.print(f"error: {args.blob}: {exc}{hint}", markup=False)
            return EXIT_FATAL
        except OSError as exc:
            console.print(f"error: cannot read {args.blob}: {exc.strerror or exc}")
            return EXIT_FATAL
        if args.output:
            Path(args.output).write_text(xml, encoding="utf-8")
        else:
            sys.stdout.write(xml)
        return 0
    if args.action == "export":
        return _export(args, console)
    try:
        cfg = load_config(args.file, extensions=not args.no_extensions)
    except ConfigError as exc:
        print_config_errors(console, exc, config_mistake_hint(Path(args.file)))
        return EXIT_FATAL
    except OSError as exc:
        console.print(f"error: cannot read {args.file}: {exc.strerror or exc}")
        return EXIT_FATAL
    for w in cfg.warnings:
        console.print(str(w), markup=False)
    if args.action == "explain":
        return cmd_explain(cfg, args, console)
    if args.action == "check":
        from ..filtering.lint import lint_config
        for w in lint_config(cfg):
            console.print(str(w), markup=False)
    if args.action == "compile":
        from ..config.blob import BlobError, compile_blob
        try:
            Path(args.output).write_bytes(compile_blob(cfg))
        except BlobError as exc:
            console.print(f"error: {exc}", markup=False)
            return EXIT_FATAL
        print(f"{args.output}: rule blob written ({Path(args.output).stat().st_size} bytes)")
        return 0
    from ..configmodel import size_text
    print(f"Configuration file validated: {args.file} (schema {cfg.schema_version_text}, "
          f"{size_text(cfg.rule_sets)})")
    return 0


def _export(args, console) -> int:
    """``config export --sysmon FILE [-o OUT]``: warnings on stderr, the XML to OUT/stdout."""
    from ..config import ConfigError
    from ..config.export import export_sysmon
    try:
        raw = Path(args.file).read_bytes()
        out, warnings = export_sysmon(raw, args.file)
    except ConfigError as exc:
        print_config_errors(console, exc, config_mistake_hint(Path(args.file)))
        return EXIT_FATAL
    except OSError as exc:
        console.print(f"error: cannot read {args.file}: {exc.strerror or exc}")
        return EXIT_FATAL
    for w in warnings:
        console.print(str(w), markup=False)
    if args.output:
        Path(args.output).write_bytes(out)
    else:
        sys.stdout.buffer.write(out)
        sys.stdout.flush()
    return 0


def cmd_explain(cfg, args, console) -> int:
    """``sysmonx config explain FILE EVENT``: the decision trace of the first event in EVENT
    (:mod:`sysmonx.filtering.explain`). Exit 0 whatever the decision; 1 when EVENT holds no
    event."""
    from ..filtering import EngineOptions
    from ..filtering.explain import explain, format_explanation, summary_line
    from ..sources import open_source
    errors: list = []
    try:
        events = open_source(args.event, errors.append)
        event = next(iter(events), None)
    except OSError as exc:
        console.print(f"error: cannot read {args.event}: {exc.strerror or exc}")
        return EXIT_FATAL
    if event is None:
        for e in errors:  # a text file that is not an event log is a warning here too
            console.print(f"{getattr(e, 'severity', 'error')}: {e}", markup=False)
        console.print(f"error: {args.event}: no event found")
        return EXIT_FATAL
    fold = args.compare_fold
    if fold == "auto":
        fold = "upper" if event.provider == "Linux-Sysmon" else "lower"
    options = EngineOptions(compare_fold=fold, fallback=args.fallback,
                            stale_rulename=not args.no_stale_rulename,
                            no_rule_defaults=args.no_rule_defaults)
    notes = _enrich_single(cfg, event)
    expl = explain(cfg, event.event_id, event.data, options)
    if args.brief:
        sys.stdout.write(summary_line(expl) + "\n")
        for field, note in notes.items():
            console.print(f"note: {field} {note}", markup=False)
    else:
        sys.stdout.write(format_explanation(expl, values=not args.no_values, notes=notes))
    return 0


def _enrich_single(cfg, event) -> dict[str, str]:
    """Add to ``event`` the enrichment fields ``cfg`` filters on that it does not carry,
    computed as ``sysmonx replay EVENT --config CONFIG`` computes them for this one event
    (:class:`~sysmonx.stages.enrich.EnrichStage`: the ancestry from the event itself, i.e. its
    ParentImage for a ProcessCreate; the host facts unknown). Returns field -> a note saying
    where each added value came from and what a single event cannot tell. Fields the event
    carries (an event written with ``--enrich``) are used as they are."""
    from ..stages.enrich import ANCESTRY_FIELDS, EnrichStage
    wanted = {f for f in cfg.enrichment_fields_used() if f not in event.data}
    if not wanted:
        return {}
    stage = EnrichStage(wanted)
    stage.process(event, lambda _item: None)
    added = stage.last[1] if stage.last[0] is event else ()
    notes = {}
    for f in added:
        value = event.data[f]
        if f in ANCESTRY_FIELDS:
            if value == "-":
                notes[f] = ("not in this event, and not known from a single event: the "
                            "ancestry comes from the earlier ProcessCreate events of the log "
                            "(replay the whole log, or explain an event written with "
                            "--enrich); compared as '-', as a replay of this event alone does")
            else:
                notes[f] = ("not in this event: computed from it alone (the parent only; "
                            "ancestors beyond the parent come from the earlier ProcessCreate "
                            "events of the log), as a replay of this event alone does")
        else:
            notes[f] = ("not in this event: known only to the live sensor; compared as the "
                        "documented unknown value, as replay does")
    return notes
