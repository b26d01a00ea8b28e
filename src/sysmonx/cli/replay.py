"""``sysmonx replay``: recorded logs through a config (:class:`sysmonx.pipeline.Replayer`, or
:func:`sysmonx.pipeline.replay_parallel` for ``--jobs``), the summary table, Sigma's hit table."""

from __future__ import annotations

import argparse
import os
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Optional

from . import common
from .common import (EXIT_FATAL, EXIT_USAGE, add_format_option, add_input_format_option,
                     add_rule_cache_options, add_rule_profile_options,
                     add_stage_option, builtin_sample_path, check_rule_profile_options,
                     close_quietly, config_mistake_hint,
                     extra_stages, load_detection, print_config_errors,
                     report_rule_profile, silence_stdout, start_rule_profile,
                     url_output_options)

__all__ = ["cmd_replay", "print_summary"]


def _replay_parser() -> argparse.ArgumentParser:
    p = common.UsageParser(
        prog="sysmonx replay",
        description="Replay recorded Sysmon logs (EVTX, event XML, Sysmon for Linux syslog, "
                    "SysmonX JSONL, winlogbeat/nxlog/Sentinel JSON; .gz/.bz2/.xz/.zip/.tar archives "
                    "read in place; folders recurse) through a Sysmon config with Sysmon's exact "
                    "filtering semantics, and write the included events as Sysmon writes them.")
    p.add_argument("paths", nargs="*", metavar="PATH", help="files or folders to replay")
    p.add_argument("--sample", action="store_true",
                   help="replay the built-in sample events (uses the built-in default config "
                        "unless --config is given)")
    p.add_argument("--config", "-c", metavar="FILE",
                   help="Sysmon XML config; 'default' for the built-in one. Without a config "
                        "every Sysmon event passes unchanged (format conversion)")
    add_format_option(p, None,
                      help="output format: Windows event XML (default; without --format an "
                           "-o FILE ending in .jsonl/.ndjson or .csv picks JSON lines or CSV), "
                           "Sysmon for Linux "
                           "single-line XML, JSON lines, or a CSV timeline (Timeline Explorer, spreadsheets; "
                        "formula-neutralised); 'sysmonx plugins' lists them")
    p.add_argument("--csv-bom", action="store_true",
                   help="with --format csv: start with a UTF-8 byte-order mark (for Excel)")
    p.add_argument("--from", dest="time_from", metavar="TIME",
                   help="keep records whose System time is at or after TIME (ISO 8601, UTC "
                        "unless it has an offset such as +02:00; a date alone is its midnight "
                        "UTC)")
    p.add_argument("--to", dest="time_to", metavar="TIME",
                   help="keep records whose System time is before TIME (exclusive). Records "
                        "without a time are kept and counted")
    p.add_argument("--window-time", choices=["system", "utctime"], default="system",
                   help="which time --from/--to compare: the record's System time (default) or "
                        "a Sysmon event's own UtcTime (for exports whose System times are local "
                        "times labelled UTC; a warning names such files)")
    p.add_argument("--keep-duplicates", action="store_true",
                   help="write records read more than once (an EVTX and its JSON export side "
                        "by side) every time; by default a record with the same provider, "
                        "computer, channel, record id and time as one already read is dropped "
                        "and counted")
    p.add_argument("-o", "--output", metavar="OUT", action="append", default=[],
                   help="where events go (repeatable; default stdout): a FILE or '-' in "
                        "--format, or a URL: tcp://, tls://, udp:// (RFC 5424 syslog), "
                        "http(s):// (NDJSON or OTLP logs), sqlite:///PATH (event store), "
                        "nats://, kafka://; network outputs are spooled on disk")
    add_input_format_option(p, help="force the reader instead of detecting it per file "
                                 "(winlogbeat 6/7/8, nxlog, Azure Sentinel, Security-Datasets "
                                 "flat JSON, evtx-crate JSON ...)")
    p.add_argument("--non-sysmon", choices=["drop", "pass"], default="drop",
                   help="records of other providers: drop (default; those of a channel the "
                        "--rules are written for, such as Security, still meet those rules "
                        "first) or pass through unchanged")
    p.add_argument("--no-output", action="store_true", help="count only, write no events")
    p.add_argument("--enrich", action="store_true",
                   help="write the SysmonX enrichment fields (GrandparentImage, AncestorImages "
                        "...; JSON under an Enrichment key); without it output stays Sysmon's")
    p.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                   help="replay files on N worker processes, output kept in input order "
                        "(0: one per CPU, fewer for small inputs, none below 48 MB, where "
                        "starting workers costs more than they save; default 1). With "
                        "--rules the workers match and this process correlates: the same "
                        "events and alerts as one process. A file whose worker dies twice "
                        "(a crash, the OOM killer) is named in an error at the end and the "
                        "exit status is 1; the other files' output is written")
    p.add_argument("--dask", metavar="SCHEDULER",
                   help="run one task per input file on a Dask distributed cluster ('local': "
                        "a local cluster of --dask-workers processes; else a scheduler address "
                        "such as tcp://HOST:8786): reading, filtering and Sigma matching in the "
                        "workers, duplicates and correlation in this process; the output is "
                        "the one-process replay's")
    p.add_argument("--dask-workers", type=int, default=2, metavar="N",
                   help="worker processes of --dask local (default 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print only errors, inputs that gave no events, what changes the "
                        "output (--alerts -), the rules-loaded lines of --rules, the Sigma "
                        "line (alerts by level and where they were written) and the alerts "
                        "held back by --min-level/--technique/--tag (with notes on that "
                        "selection): no progress bar, "
                        "other notes and warnings (clock skew ...) or summary tables; when "
                        "warnings or notes were held back, a last line counts them")
    p.add_argument("--rules", action="append", default=[], metavar="PATH",
                   help="Sigma rules (YAML files, folders, .tar.gz bundles; repeatable): run on "
                        "every event that passes the config; alerts go into the output stream "
                        "as SysmonX event 1000 (SigmaAlert), or with --alerts to a JSONL file "
                        "instead")
    p.add_argument("--alerts", metavar="FILE",
                   help="write Sigma alerts as JSON lines to FILE instead of the event stream "
                        "(the events then carry no event 1000): this run's (--rules) and the "
                        "SigmaAlert events read back from the input that the run keeps; '-' "
                        "for stdout, which then carries only the alerts (events go to -o FILE, "
                        "if given)")
    p.add_argument("--alerts-only", action="store_true",
                   help="write only the Sigma alerts (event 1000: this run's and those read "
                        "back) to the outputs, in --format (a CSV timeline of detections with "
                        "-f csv); the other events are read, filtered and matched as usual but "
                        "not written")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when any record or file could not be read, or nothing was read "
                        "(for automation; by default bad records are reported and skipped)")
    p.add_argument("--tamper", action="store_true",
                   help="report tampering the logs show as SysmonX event 201 (TamperFinding): "
                        "Sysmon stopped, reconfigured, its rules or driver touched, logs "
                        "cleared, EventRecordID and time gaps (mixed Security/System logs are "
                        "read for it even with --non-sysmon drop)")
    p.add_argument("--no-extensions", action="store_true",
                   help="hold the config to Sysmon's grammar exactly (reject condition=\"regex\", "
                        "SysmonX event tags and enrichment fields)")
    add_stage_option(p)
    add_rule_cache_options(p)
    common.add_rule_issues_option(p)
    add_rule_profile_options(p)
    common.add_detections_option(p)
    common.add_triage_options(p, replay=True)
    g = p.add_argument_group("Sysmon behaviours the spec marks uncertain (defaults: code-derived)")
    g.add_argument("--fallback", choices=["code", "intent"], default="code",
                   help="two or more rule sets for a tag and none matched: 'code' excludes, "
                        "'intent' includes when all of them are exclude sets")
    g.add_argument("--no-stale-rulename", action="store_true",
                   help="reset RuleName between rule sets (Sysmon does not)")
    g.add_argument("--compare-fold", choices=["lower", "upper"], default="lower",
                   help="case fold of 'less than'/'more than': lower (Windows) or upper (Linux)")
    g.add_argument("--no-rule-defaults", choices=["manifest", "community"], default="manifest",
                   help="events logged for a tag with no rules: manifest (1, 5) or community "
                        "(1, 2, 5, 6)")
    g.add_argument("--windows-env", action="store_true",
                   help="expand %%SystemRoot%%-style variables in rule values with a default "
                        "Windows installation's system variables, as Windows Sysmon does")
    g.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="an environment variable for rule-value expansion (repeatable; implies "
                        "expansion)")
    return p


def cmd_replay(argv: list[str]) -> int:
    """``sysmonx replay``: see :func:`_replay_parser`."""
    from ..filtering.engine import set_note_handler

    args = _replay_parser().parse_args(argv)
    if args.format is None:
        args.format = format_from_outputs(args.output)
    console = common.stderr_console()
    held: Counter = Counter()  # warnings and notes -q held back

    def say(severity: str, text: str) -> None:
        """A warning or note: printed, or with -q counted for the last line."""
        if args.quiet:
            held[severity] += 1
        else:
            console.print(text, markup=False)
    # the filter plan cache's notes are this replay's notes (``--jobs`` workers send theirs)
    previous = set_note_handler(lambda text: say("note", f"note: {text}"))
    from ..pipeline.replay import replay_collector
    try:
        with replay_collector():  # young collections find nothing in a replay: run fewer
            return _replay(args, console, say, held)
    finally:
        set_note_handler(previous)


def _replay(args: argparse.Namespace, console: Any, say: Callable[[str, str], None],
            held: Counter) -> int:
    """The body of :func:`cmd_replay` (``say``: print or count a warning or note; ``held``:
    the counts ``-q`` held back)."""
    from ..config import ConfigError, load_config
    from ..filtering import EngineOptions
    from ..pipeline import Replayer, ReplayOptions

    paths = list(args.paths)
    config_arg = args.config
    if args.sample:
        paths.append(str(builtin_sample_path()))
        if config_arg is None:
            config_arg = "default"
    if not paths:
        console.print("error: give at least one PATH (or --sample for the built-in sample)")
        return EXIT_USAGE
    for pth in paths:
        if pth != "-" and not Path(pth).exists():
            console.print(f"error: {pth}: no such file or directory")
            return EXIT_FATAL
    if args.jobs < 0:
        console.print("error: --jobs must be 0 (one per CPU) or a positive number")
        return EXIT_USAGE
    if not check_rule_profile_options(args, console):
        return EXIT_USAGE
    if not common.check_output_options(args, console, say):
        return EXIT_USAGE
    ok, triage = common.triage_from_args(args, console)
    if not ok:
        return EXIT_USAGE
    if args.alerts_only and (args.alerts or args.no_output):
        console.print("error: --alerts-only writes the alerts in --format to the outputs: not "
                      "with " + ("--alerts FILE (JSON lines; give one of the two)" if args.alerts
                                 else "--no-output"))
        return EXIT_USAGE
    if args.profile_rules and args.dask:
        console.print("error: --profile-rules measures the rules in this process: not with "
                      "--dask (the workers match)")
        return EXIT_USAGE
    from ..sinks.outputs import is_url
    urls = [o for o in args.output if is_url(o)]
    files_out = [o for o in args.output if not is_url(o)]
    stdout_out = "-" in files_out or not args.output
    files_out = [o for o in files_out if o != "-"]
    for out in files_out:
        problem = _output_clashes_with_inputs(out, paths)
        if problem:
            console.print(f"error: {problem}")
            return EXIT_FATAL
    # the stream outputs of --format: files, and stdout when asked or when nothing else is
    streams: list[Optional[str]] = [*files_out, *([None] if stdout_out else [])]
    config = None
    if config_arg is not None:
        cpath = common.config_arg_path(config_arg)
        cache_info: dict = {}
        try:
            config = load_config(cpath, extensions=not args.no_extensions,
                                 cache_info=cache_info)
        except ConfigError as exc:
            print_config_errors(console, exc, config_mistake_hint(cpath))
            return EXIT_FATAL
        except OSError as exc:
            console.print(f"error: cannot read config {cpath}: {exc.strerror or exc}")
            return EXIT_FATAL
        for w in config.warnings:
            say("warning", str(w))
        for note in cache_info["notes"]:
            say("note", f"note: {note}")
        say("note", common.config_loaded_line(common.config_name(config_arg), config, cache_info))
    environment = None
    if args.windows_env or args.env:
        from ..filtering.engine import WINDOWS_DEFAULT_ENV
        environment = dict(WINDOWS_DEFAULT_ENV) if args.windows_env else {}
        for item in args.env:
            name, sep, value = item.partition("=")
            if not sep or not name:
                console.print(f"error: --env expects NAME=VALUE, got {item!r}")
                return EXIT_USAGE
            environment[name] = value
    from ..pipeline import parse_time_bound
    try:
        bounds = [None if b is None else parse_time_bound(b)
                  for b in (args.time_from, args.time_to)]
    except ValueError as exc:
        console.print(f"error: --from/--to: {exc}")
        return EXIT_USAGE
    if bounds[0] is not None and bounds[1] is not None and bounds[0] >= bounds[1]:
        console.print(f"error: --from {bounds[0]} is not before --to {bounds[1]}")
        return EXIT_USAGE
    options = ReplayOptions(
        config=config, non_sysmon=args.non_sysmon, input_format=args.input_format,
        time_from=bounds[0], time_to=bounds[1], window_time=args.window_time,
        keep_duplicates=args.keep_duplicates, enrich=args.enrich, tamper=args.tamper,
        alerts_only=args.alerts_only,
        triage=triage, engine_options=EngineOptions(
            compare_fold=args.compare_fold, fallback=args.fallback,
            stale_rulename=not args.no_stale_rulename, no_rule_defaults=args.no_rule_defaults,
            environment=environment))

    from ..core.errors import OutputClosed, SinkError, UsageError
    from ..pipeline import auto_jobs, default_jobs, replay_parallel
    from ..sinks import writer_class
    from ..sinks.base import open_target
    from ..sources import iter_input_files
    jobs = default_jobs() if args.jobs == 0 else max(1, args.jobs)
    extra = extra_stages(args.stage, console)
    if extra is None:
        return EXIT_USAGE
    stage = None
    if args.rules:
        stage = load_detection(args.rules, console, args)
        if stage is None:
            return EXIT_FATAL
    for line in common.triage_notes(triage, stage):  # kept by -q: they explain the selection
        console.print(line, markup=False)
    if extra and jobs > 1:
        say("note", "note: --stage replays on one process")
        jobs = 1
    from ..stages.enrich import enrichment_wanted
    if jobs > 1 and enrichment_wanted(config, stage, args.enrich):
        say("note", "note: enrichment replays on one process (the process tree needs one "
                      "stream)")
        jobs = 1
    if args.tamper and jobs > 1:
        say("note", "note: --tamper replays on one process (record and time gaps need one "
                      "stream)")
        jobs = 1
    if args.dask and (extra or args.jobs != 1 or args.tamper):
        console.print("error: --dask runs its own workers: not with --jobs, --stage or --tamper")
        return EXIT_USAGE
    if jobs > 1 and (urls or len(streams) != 1):
        say("note", "note: replaying on one process (--jobs writes one file or stdout)")
        jobs = 1
    if jobs > 1 and not args.keep_duplicates:
        say("note", "note: replaying on one process: finding records read twice needs one "
                      "stream (--keep-duplicates allows --jobs)")
        jobs = 1

    if ((args.alerts and stage is None) or args.alerts_only) and jobs > 1:
        # --alerts without --rules: re-triage of an earlier output, nothing to match in workers
        say("note", "note: replaying on one process (" + ("--alerts-only: the events are left "
                                                         "out after correlation saw them"
                                                         if args.alerts_only else
                                                         "--alerts without --rules")
            + ")")
        jobs = 1
    if args.profile_rules and jobs > 1:
        say("note", "note: --profile-rules replays on one process (the rules are measured "
                      "in this one)")
        jobs = 1
    profile = start_rule_profile(stage, args)

    from ..sources.base import NOT_AN_EVENT_LOG
    not_a_log = NOT_AN_EVENT_LOG if args.input_format is None else (
        f"no events found as --input-format {args.input_format} (not an event log of that "
        "format)")

    def on_error(err) -> None:
        severity = getattr(err, "severity", "error")
        if severity == "warning" and getattr(err, "message", "").startswith(NOT_AN_EVENT_LOG):
            # said with -q too, like file_done's: the input is not what the user thinks it is
            where = f"{err.path}: " if err.path else ""
            console.print(f"warning: {where}{not_a_log}{err.message[len(NOT_AN_EVENT_LOG):]}",
                          markup=False)
        elif severity in ("warning", "note"):
            say(severity, f"{severity}: {err}")
        else:
            console.print(f"{severity}: {err}", markup=False)

    walk_notes: list = []
    files = list(iter_input_files(paths, walk_notes.append))
    for note in walk_notes:
        on_error(note)
    fmt = None if args.no_output else args.format
    if args.alerts == "-" and None in streams and fmt is not None:
        console.print("note: --alerts - writes the alerts to stdout, so the events are not "
                      "written there (give -o FILE to keep them)")
        streams.remove(None)
    writer_options = {"bom": True} if fmt == "csv" and args.csv_bom else {}

    progress = task = None
    seen = {"records": 0, "errors": 0, "warnings": 0}
    printed = {"warnings": 0}  # warning lines printed here, counted in the summary

    def file_done(path, stats) -> None:
        if progress is not None:
            progress.update(task, advance=1, records=stats.records, errors=stats.errors)
        if (stats.records, stats.errors, stats.warnings) == (
                seen["records"], seen["errors"], seen["warnings"]):
            # said with -q too: the input is not what the user thinks it is (an empty file
            # has its own warning)
            console.print(f"warning: {path}: {not_a_log}", markup=False)
            printed["warnings"] += 1
        seen["records"], seen["errors"] = stats.records, stats.errors
        seen["warnings"] = stats.warnings

    sinks: list = []
    failure: Optional[SinkError] = None
    stats = None
    replayer = None
    with ExitStack() as stack:
        try:
            if args.alerts:  # this run's alerts and those read back (ReadBackAlertStage)
                from ..sinks.alerts import AlertJsonlSink
                sinks.append(AlertJsonlSink.open(args.alerts))
            if console.is_terminal and not args.quiet and not args.no_progress:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
                progress = stack.enter_context(Progress(
                    TextColumn("[bold]replay"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("files  {task.fields[records]:,} records  "
                               "{task.fields[errors]} errors"),
                    console=console, transient=True))
                task = progress.add_task("replay", total=len(files), records=0, errors=0)
            if args.jobs == 0 and jobs > 1:  # auto: no workers for an input they cannot speed up
                jobs = auto_jobs(files, jobs)
                if jobs == 1 and not args.quiet:
                    from ..pipeline.parallel import AUTO_BYTES_PER_JOB as per_job
                    say("note", "note: --jobs 0 replays on one process: the input is too small "
                                  f"for workers to pay off (one worker per {per_job >> 20} MB, "
                                  f"none below {2 * per_job >> 20} MB)")
            if args.dask:
                from ..pipeline.dask import replay_dask
                if fmt is not None:
                    from ..sinks.outputs import open_url_output
                    for i, out in enumerate(streams):
                        sinks.insert(i, writer_class(fmt).open(out, **writer_options))
                    for url in urls:
                        sinks.append(open_url_output(url, **url_output_options(url)))
                stats = replay_dask(files, options, args.dask, sinks, detection=stage,
                                    rule_paths=args.rules, workers=args.dask_workers,
                                    on_error=on_error, on_file_done=file_done,
                                    alerts_to_stream=not args.alerts)
                sinks = []  # closed by the run
            elif jobs > 1 and len(files) > 1:
                target = streams[0] if streams else None
                if not args.quiet:
                    from ..pipeline.parallel import worker_count
                    say("note", f"note: replaying {len(files)} files on "
                                  f"{worker_count(files, jobs)} worker processes")
                stream, _ = open_target(target) if fmt is not None else (None, "")
                try:
                    # with --rules: matching in the workers, correlation here (parallel.py)
                    stats = replay_parallel(files, options, fmt, stream, jobs, on_error,
                                            file_done, writer_options=writer_options,
                                            detection=stage, alert_sinks=sinks)
                finally:
                    if stream is not None and target:
                        _close_stream(stream)
                for sink in sinks:  # the alerts file: a failure to write it is reported
                    try:
                        sink.close()
                    except OSError as exc:
                        raise SinkError(f"cannot write {sink.target}: {exc.strerror or exc}") \
                            from exc
            else:
                if fmt is not None:
                    from ..sinks.outputs import open_url_output
                    for i, out in enumerate(streams):
                        sinks.insert(i, writer_class(fmt).open(out, **writer_options))
                    for url in urls:
                        sinks.append(open_url_output(url, **url_output_options(url)))

                def on_progress(path, records) -> None:
                    if progress is not None and task is not None and replayer is not None:
                        progress.update(task, records=records, errors=replayer.stats.errors)

                replayer = Replayer(options, None, on_error=on_error, on_progress=on_progress,
                                    sinks=sinks, detection=stage, extra_stages=extra)
                replayer.read_ahead(files)
                for path in files:
                    replayer.run_file(path)
                    file_done(path, replayer.stats)
                replayer.finish()
        except UsageError as exc:  # a bad output URL
            close_quietly(sinks)
            console.print(f"error: {exc}", markup=False)
            return EXIT_USAGE
        except RuntimeError as exc:  # --dask: no distributed, or the scheduler is away
            close_quietly(sinks)
            console.print(f"error: {exc}", markup=False)
            return EXIT_FATAL
        except SinkError as exc:
            failure = exc
        except BrokenPipeError:
            failure = OutputClosed("stdout: reader went away")
        except KeyboardInterrupt:
            close_quietly(sinks)
            console.print("interrupted: output up to here is complete; no summary")
            return 130
        finally:
            # close every output now, also after a failure, so nothing is left to flush at exit
            try:
                if replayer is not None:
                    replayer.close()
                else:
                    close_quietly(sinks)
            except SinkError as exc:
                failure = failure or exc
    if failure is not None:
        if isinstance(failure, OutputClosed):  # e.g. `| head`: stop quietly
            silence_stdout()
            return 0
        console.print(f"error: {failure}", markup=False)
        return EXIT_FATAL
    if stats is None:
        assert replayer is not None  # one of the two replays ran
        stats = replayer.stats
    if not files:
        console.print("warning: no input files found (folders are searched for .evtx, .xml, "
                      ".json[l], .log, .txt, syslog files and archives)", markup=False)
        printed["warnings"] += 1
    stats.warnings += len(walk_notes) + printed["warnings"]
    if not args.quiet:
        print_summary(console, stats, config is not None,
                      window=args.time_from is not None or args.time_to is not None,
                      config_name=None if config is None else common.config_name(config_arg))
    if stage is not None:  # the alert count, kept by -q: what a script needs to know
        console.print(common.sigma_summary(stage, args.alerts, stream=fmt is not None),
                      markup=False)
    if triage is not None:  # kept by -q too: the output holds fewer alerts than were made
        console.print(common.held_back_line(triage, stats.alerts_held_back, stage is not None),
                      markup=False)
    if args.alerts and stats.sigma_alerts:  # kept by -q: where the alerts read back went
        where = "stdout" if args.alerts == "-" else args.alerts
        console.print(f"alerts read back (event 1000) written to {where}: "
                      f"{stats.alerts_read_back_out:,} of {stats.sigma_alerts:,} "
                      "(as JSON lines; the others were made again by --rules or held back)"
                      if stats.alerts_read_back_out != stats.sigma_alerts else
                      f"alerts read back (event 1000) written to {where}: "
                      f"{stats.alerts_read_back_out:,} (as JSON lines)", markup=False)
    if args.alerts_only:  # kept by -q: the output is not the events
        console.print(f"--alerts-only: {stats.not_alerts:,} events not written (only Sigma "
                      "alerts, event 1000, are)", markup=False)
    if stage is not None and not args.quiet:
        common.print_detection_summary(
            console, stage, top=None if args.all_detections else common.DETECTIONS_SHOWN,
            triage=triage)
    if args.tamper and not args.quiet and replayer is not None:
        _print_tamper_summary(console, replayer)
    if not report_rule_profile(console, profile, args):
        return EXIT_FATAL
    if stats.lost_files:  # --jobs: a worker died on each of these, twice
        n = len(stats.lost_files)
        console.print(f"error: {n} file{'s' if n > 1 else ''} not replayed, a worker process "
                      "died replaying each (their events are not in the output; the other "
                      "files' are): " + ", ".join(stats.lost_files), markup=False)
    if held:
        console.print("replay: not shown (-q): " + ", ".join(
            f"{n:,} {k}{'s' if n > 1 else ''}" for k, n in sorted(held.items(), reverse=True))
            + "; run without -q to see them", markup=False)
    if files and not stats.records and stats.errors:
        # fatal without --strict: no input gave a record and reading failed, nothing replayed
        which = ("the input gave no record" if len(files) == 1
                 else f"none of the {len(files):,} inputs gave a record")
        console.print(f"error: nothing was read: {which} ({stats.errors:,} "
                      f"error{'s' if stats.errors > 1 else ''} above)", markup=False)
        return EXIT_FATAL
    if stats.lost_files or (args.strict and (stats.errors or not stats.records)):
        return EXIT_FATAL
    return 0


def _close_stream(stream) -> None:
    """Close an output stream after a failure without a second error (its buffer is lost: the
    failure was reported)."""
    try:
        stream.close()
    except OSError:
        try:
            stream.close()
        except OSError:
            pass


def _print_tamper_summary(console, replayer) -> None:
    """Findings per technique at the end of a ``--tamper`` replay."""
    from ..stages.logtamper import LogTamperStage
    st = next((s for s in replayer.stages if isinstance(s, LogTamperStage)), None)
    if st is None:
        return
    if not st.findings:
        console.print("tamper findings: none")
        return
    parts = ", ".join(f"{k} {v:,}" for k, v in sorted(st.findings.items()))
    console.print(f"tamper findings (event 201): {sum(st.findings.values()):,} ({parts})",
                  markup=False)


#: Output file name endings that choose the format when ``--format`` is not given.
FORMAT_BY_SUFFIX = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".xml": "xml"}


def format_from_outputs(outputs: list[str], default: str = "xml") -> str:
    """The output format when ``--format`` is not given: the one the ``-o`` files' endings
    name (:data:`FORMAT_BY_SUFFIX`, case-insensitive) when they all name the same one, else
    ``default`` (Windows event XML, as Sysmon's own events; stdout, URLs and other endings
    name none). A new user's ``-o events.jsonl`` got XML in a file named ``.jsonl``."""
    named: set[Optional[str]] = set()
    for out in outputs:
        if out == "-" or "://" in out:
            continue
        named.add(FORMAT_BY_SUFFIX.get(os.path.splitext(out)[1].lower()))
    only = named.pop() if len(named) == 1 else None
    return only or default


def _output_clashes_with_inputs(output: str, paths: list[str]) -> Optional[str]:
    """Why writing ``output`` would destroy or re-read an input (``None`` if it would not): the
    same file as an input (opening it for writing empties it), or inside an input folder (the
    replay would read its own output as it grows)."""
    import os
    out = os.path.realpath(output)
    for p in paths:
        if p == "-":
            continue
        real = os.path.realpath(p)
        if out == real:
            return f"output {output} is also an input; choose another output file"
        if os.path.isdir(real) and out.startswith(real.rstrip(os.sep) + os.sep):
            return (f"output {output} is inside the input folder {p}; the replay would read its "
                    "own output. Write it elsewhere")
    return None


def print_summary(console, stats, filtered: bool, window: bool = False,
                  config_name: Optional[str] = None) -> None:
    """Print the end-of-replay table: per EventID read/included/excluded, totals, errors; with
    ``window`` (``--from``/``--to`` given) also the records outside it and those without a time."""
    common.print_filter_table(console, stats.included, stats.excluded, "SysmonX replay summary",
                              total_read=stats.sysmon)
    sigma = getattr(stats, "non_sysmon_sigma", 0)
    other = ("passed" if stats.non_sysmon_written else
             f"dropped; {sigma:,} of them checked by Sigma rules first" if sigma else "dropped")
    console.print(f"files: {stats.files:,}  records read: {stats.records:,}  Sysmon events: "
                  f"{stats.sysmon:,}  other records: {stats.non_sysmon:,} "
                  f"({other})  errors: "
                  f"{stats.errors:,}  warnings: {stats.warnings:,}"
                  + (f"  config: {config_name}" if config_name else
                     "  (no config: nothing filtered)"))
    if getattr(stats, "sigma_alerts", 0):
        replaced = getattr(stats, "alerts_replaced", 0)
        console.print(f"SysmonX alerts read back (event 1000, SigmaAlert): {stats.sigma_alerts:,}"
                      " (kept unfiltered: a config has no tag for event 1000"
                      + (f"; {replaced:,} replaced by this run's --rules, which made them again "
                         "from the events" if replaced else "") + ")", markup=False)
    if getattr(stats, "duplicates", 0):
        console.print(f"duplicates dropped: {stats.duplicates:,} (records with the provider, "
                      "computer, channel, record id and time of one read before; "
                      "--keep-duplicates keeps them)", markup=False)
    repaired = getattr(stats, "repaired", None)
    if repaired:
        console.print(f"records repaired: {sum(repaired.values()):,} ("
                      + "; ".join(f"{what}: {n:,}" for what, n in sorted(repaired.items()))
                      + ")", markup=False)
    if window:
        console.print(f"time window: {stats.out_of_window:,} records outside --from/--to skipped, "
                      f"{stats.untimed:,} records without a time kept")
    if os.environ.get("SYSMONX_DEBUG"):
        console.print(f"debug: raw path: {getattr(stats, 'raw_records', 0):,} of "
                      f"{stats.records:,} records without an Event", markup=False)

