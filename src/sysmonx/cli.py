"""Command line: Sysmon-compatible switches and SysmonX subcommands.

``sysmonx replay ...`` replays recorded logs through a config; ``sysmonx run`` is the live sensor;
``sysmonx config check|explain|compile|decode`` are the configuration tools. A first argument that
is a switch (``-i``, ``-c``, ``-u``, ``-s``, ``-t``, ``-? config`` ...) is Sysmon's own command line,
handled by :mod:`sysmonx.compat` with Sysmon's parsing rules and exit codes (0, 87, 740). The CLI
only parses arguments and calls the pipeline (docs/ARCHITECTURE.md).

Exit status of the subcommands: 0 success; 1 a fatal error (bad config, missing input,
unwritable output); 2 bad usage. A bad record is an error line on stderr, not a failure.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from importlib import resources
from pathlib import Path
from typing import Literal, Optional

from .version import __version__

SUBCOMMANDS = ("replay", "run", "config", "plugins")
EXIT_FATAL = 1
EXIT_USAGE = 2


def _builtin(name: str) -> Path:
    return Path(str(resources.files("sysmonx") / "data" / name))


def builtin_config_path() -> Path:
    """Path of the built-in default configuration (``--config default``)."""
    return _builtin("default-config.xml")


def builtin_sample_path() -> Path:
    """Path of the built-in sample of Sysmon events (``replay --sample``)."""
    return _builtin("sample-events.xml")


def _replay_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
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
    p.add_argument("--format", "-f", default="xml", choices=_output_formats(),
                   help="output format: Windows event XML (default), Sysmon for Linux single-line "
                        "XML, JSON lines, or a CSV timeline (Timeline Explorer, spreadsheets; "
                        "formula-neutralised); 'sysmonx plugins' lists them")
    p.add_argument("--csv-bom", action="store_true",
                   help="with --format csv: start with a UTF-8 byte-order mark (for Excel)")
    p.add_argument("--from", dest="time_from", metavar="TIME",
                   help="keep records whose System time is at or after TIME (ISO 8601, UTC unless "
                        "it has Z or an offset; a date alone is its midnight UTC)")
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
    p.add_argument("-o", "--output", metavar="OUT", help="output file (default: stdout)")
    from .sources import file_formats
    p.add_argument("--input-format", choices=[c.name for c in file_formats()],
                   help="force the reader instead of detecting it per file (winlogbeat 6/7/8, "
                        "nxlog, Azure Sentinel, Security-Datasets flat JSON, evtx-crate JSON ...)")
    p.add_argument("--non-sysmon", choices=["drop", "pass"], default="drop",
                   help="records of other providers: drop (default) or pass through unchanged")
    p.add_argument("--no-output", action="store_true", help="count only, write no events")
    p.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                   help="replay files on N worker processes, output kept in input order "
                        "(0: one per CPU; default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    p.add_argument("--rules", action="append", default=[], metavar="PATH",
                   help="Sigma rules (YAML files, folders, .tar.gz bundles; repeatable): run on "
                        "every event that passes the config; alerts go into the output stream "
                        "as SysmonX event 1000 (SigmaAlert) and, with --alerts, to a JSONL file")
    p.add_argument("--alerts", metavar="FILE",
                   help="write Sigma alerts as JSON lines to FILE; '-' for stdout, which then "
                        "carries only the alerts (events go to -o FILE, if given)")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when any record or file could not be read, or nothing was read "
                        "(for automation; by default bad records are reported and skipped)")
    p.add_argument("--no-extensions", action="store_true",
                   help="hold the config to Sysmon's grammar exactly (reject condition=\"regex\")")
    _add_stage_option(p)
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


def builtin_linux_config_path() -> Path:
    """Path of the built-in default configuration of the live Linux sensor."""
    return _builtin("default-linux-config.xml")


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sysmonx run",
        description="Live Linux sensor: collect Sysmon for Linux events (1, 3, 5, 9, 10, 11, 23, "
                    "plus 22 DnsQuery) from the kernel, filter them with a Sysmon config and "
                    "write them as Sysmon for Linux does. Needs root.")
    p.add_argument("--config", "-c", metavar="FILE", default="default",
                   help="Sysmon XML config (default: the built-in Linux default config)")
    p.add_argument("--format", "-f", default="linux-xml", choices=_output_formats(),
                   help="output format (default: Sysmon for Linux single-line XML)")
    p.add_argument("-o", "--output", metavar="OUT", help="write to a file (default: stdout)")
    p.add_argument("--syslog", nargs="?", const="/dev/log", metavar="SOCKET",
                   help="send events to syslog as Sysmon for Linux does (default socket /dev/log)"
                        "; stdout output is then off unless -o - is given")
    p.add_argument("--duration", type=float, metavar="SECONDS",
                   help="stop after this many seconds (default: until Ctrl-C / SIGTERM)")
    from .sensor.backends import tiers
    p.add_argument("--backend", choices=tiers(),
                   help="force a trace backend tier (default: the best available)")
    p.add_argument("--follow", metavar="LOG|journald",
                   help="do not trace: follow an installed Sysmon for Linux's syslog output (a "
                        "file such as /var/log/syslog, or journald) and run its events through "
                        "the config and outputs")
    p.add_argument("--from-start", action="store_true",
                   help="with --follow FILE: read the file from its beginning")
    p.add_argument("--no-dns", action="store_true", help="do not run the DNS backend")
    p.add_argument("--list-backends", action="store_true",
                   help="show which backends can run here and why not, then exit")
    p.add_argument("--provider", help="System/Provider Name (default: Linux-Sysmon)")
    p.add_argument("--rules", action="append", default=[], metavar="PATH",
                   help="Sigma rules (files, folders, .tar.gz; repeatable) run on every written "
                        "event; alerts are written as SysmonX event 1000 (SigmaAlert)")
    p.add_argument("--alerts", metavar="FILE",
                   help="write Sigma alerts as JSON lines to FILE instead of the event stream; "
                        "'-' for stdout, which then carries only the alerts")
    p.add_argument("--pidfile", metavar="FILE",
                   help="write the sensor's pid to FILE once it has started (events 4 and 16 "
                        "written); removed at exit. Used by the service (sysmonx -i)")
    _add_stage_option(p)
    return p


def _output_formats() -> list[str]:
    from .sinks import stream_formats
    return list(stream_formats())


def _add_stage_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stage", action="append", default=[], metavar="NAME",
                   help="run a registered stage after the filter (repeatable; a plugin's stage "
                        "that takes no arguments); 'sysmonx plugins' lists them")


def _extra_stages(names: list[str], console) -> Optional[list]:
    """Instances of the ``--stage`` names, or ``None`` after printing why one cannot be made."""
    from .core.errors import PluginError
    from .core.registry import STAGES
    out = []
    for name in names:
        try:
            cls = STAGES.get(name)
            out.append(cls())
        except PluginError as exc:
            console.print(f"error: --stage: {exc}", markup=False)
            return None
        except TypeError:
            console.print(f"error: --stage {name}: this stage needs arguments; the pipeline "
                          "adds it itself when its option is given", markup=False)
            return None
    return out


def cmd_run(argv: list[str]) -> int:
    """``sysmonx run``: the live sensor (see :func:`_run_parser`)."""
    import os
    from .config import ConfigError, load_config
    from .core.errors import OutputClosed, SinkError, SourceUnavailable
    from .pipeline.live import Sensor, SensorOptions
    from .sensor.backends import probe_all
    from .sinks import writer_class

    args = _run_parser().parse_args(argv)
    console = _stderr_console()
    if args.list_backends:
        for name, reason in probe_all().items():
            print(f"{name:8} {'available' if reason is None else 'unavailable: ' + reason}")
        return 0
    if args.duration is not None and args.duration <= 0:
        console.print("error: --duration must be a positive number of seconds")
        return EXIT_USAGE
    if os.geteuid() != 0 and not args.follow:
        console.print("error: sysmonx run needs root (kernel tracing interfaces)")
        return EXIT_FATAL
    cpath = builtin_linux_config_path() if args.config == "default" else Path(args.config)
    try:
        config = load_config(cpath)
    except ConfigError as exc:
        print_config_errors(console, exc)
        return EXIT_FATAL
    except OSError as exc:
        console.print(f"error: cannot read config {cpath}: {exc.strerror or exc}")
        return EXIT_FATAL
    for w in config.warnings:
        console.print(str(w), markup=False)
    extra = _extra_stages(args.stage, console)
    if extra is None:
        return EXIT_USAGE
    sinks: list = []
    try:
        if args.syslog:
            from .sinks.syslog import SyslogWriter
            writer = SyslogWriter.open(args.syslog, require=False)
            if writer.sock is None:  # like Sysmon for Linux (syslog(3)): keep running
                console.print(f"warning: no syslog daemon at {args.syslog}: events sent there are "
                              "not delivered (they are counted and reported) until one starts; "
                              "give --syslog SOCKET or -o FILE to keep them", markup=False)
            sinks.append(writer)
        if args.output and args.output != "-":
            out = writer_class(args.format).open(args.output, append=True, buffered=False)
            out.label = f"-o {args.output}"
            sinks.append(out)
        elif args.rules and args.alerts == "-":
            console.print("note: --alerts - writes the alerts to stdout, so the events are not "
                          "written there (give -o FILE or --syslog to keep them)")
        elif not args.syslog or args.output == "-":
            out = writer_class(args.format).open("-", buffered=False)
            out.label = "stdout"
            sinks.append(out)
        stage = None
        if args.rules:
            stage = _load_detection(args.rules, console)
            if stage is None:
                _close_quietly(sinks)
                return EXIT_FATAL
            if args.alerts:
                from .sinks.alerts import AlertJsonlSink
                sinks.append(AlertJsonlSink.open(args.alerts))
    except SinkError as exc:
        _close_quietly(sinks)
        console.print(f"error: {exc}", markup=False)
        return EXIT_FATAL
    options = SensorOptions(backend=args.backend, dns=not args.no_dns and not args.follow,
                            duration=args.duration, provider=args.provider,
                            follow=args.follow, from_start=args.from_start)

    def status(msg: str) -> None:
        console.print(f"sysmonx: {msg}", markup=False)

    sensor = Sensor(config, sinks, options, config_path=str(cpath), on_status=status,
                    detection=stage, extra_stages=extra)
    with ExitStack() as stack:
        if args.pidfile:
            write_pidfile_when_started(sensor, args.pidfile, stack)
        try:
            sensor.run()
        except SourceUnavailable as exc:
            console.print(f"error: {exc}", markup=False)
            return EXIT_FATAL
        except OutputClosed:
            _silence_stdout()
            return 0
    console.print(f"sysmonx: {sensor.summary()}", markup=False)
    follow = sensor.backend_stats().get("follow")
    if follow and (follow.get("repaired") or follow.get("cut_short")):
        console.print(f"sysmonx: followed records repaired (entity references without ';'): "
                      f"{follow['repaired']:,}; cut short by syslog, forwarded with their "
                      f"complete fields: {follow['cut_short']:,}", markup=False)
    return 0


def _close_quietly(sinks: list) -> None:
    for s in sinks:
        try:
            s.close()
        except OSError:
            pass


def write_pidfile_when_started(sensor, path: str, stack: ExitStack) -> None:
    """Write ``path`` (the pid, one line; replaced atomically) once ``sensor`` has started, from
    a watcher thread, and remove it when ``stack`` closes if it still holds our pid. The service
    (:mod:`sysmonx.service`) waits for this file to know the sensor is up."""
    import os
    import threading
    pid = os.getpid()
    done = threading.Event()

    def watch() -> None:
        while not sensor.started.wait(0.2):
            if done.is_set():
                return
        tmp = f"{path}.{pid}.tmp"
        try:
            with open(tmp, "w") as f:
                f.write(f"{pid}\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except OSError:
            pass

    def remove() -> None:
        done.set()
        try:
            with open(path) as f:
                mine = f.read().strip() == str(pid)
            if mine:
                os.unlink(path)
        except OSError:
            pass

    threading.Thread(target=watch, name="sysmonx-pidfile", daemon=True).start()
    stack.callback(remove)


def _config_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sysmonx config", description="Configuration tools.")
    sub = p.add_subparsers(dest="action", required=True)
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
    e = sub.add_parser("explain", help="print Sysmon's decision trace for one event: rule sets "
                                       "tried in order, filters evaluated, the decision and "
                                       "RuleName")
    e.add_argument("file", help="the Sysmon XML config")
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
    return p


def _stderr_console():
    # every str printed is neutralised (no terminal escapes from paths or record text)
    from .textsafe import safe_console
    return safe_console(stderr=True, highlight=False, soft_wrap=True)


def cmd_replay(argv: list[str]) -> int:
    """``sysmonx replay``: see :func:`_replay_parser`."""
    from .config import ConfigError, load_config
    from .filtering import EngineOptions
    from .pipeline import Replayer, ReplayOptions

    args = _replay_parser().parse_args(argv)
    console = _stderr_console()
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
    if args.output == "-":
        args.output = None  # stdout
    if args.output:
        problem = _output_clashes_with_inputs(args.output, paths)
        if problem:
            console.print(f"error: {problem}")
            return EXIT_FATAL
    config = None
    if config_arg is not None:
        cpath = builtin_config_path() if config_arg == "default" else Path(config_arg)
        try:
            config = load_config(cpath, extensions=not args.no_extensions)
        except ConfigError as exc:
            print_config_errors(console, exc, _config_mistake_hint(cpath))
            return EXIT_FATAL
        except OSError as exc:
            console.print(f"error: cannot read config {cpath}: {exc.strerror or exc}")
            return EXIT_FATAL
        for w in config.warnings:
            console.print(str(w))
    environment = None
    if args.windows_env or args.env:
        from .filtering.engine import WINDOWS_DEFAULT_ENV
        environment = dict(WINDOWS_DEFAULT_ENV) if args.windows_env else {}
        for item in args.env:
            name, sep, value = item.partition("=")
            if not sep or not name:
                console.print(f"error: --env expects NAME=VALUE, got {item!r}")
                return EXIT_USAGE
            environment[name] = value
    from .pipeline import parse_time_bound
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
        keep_duplicates=args.keep_duplicates,
        engine_options=EngineOptions(
            compare_fold=args.compare_fold, fallback=args.fallback,
            stale_rulename=not args.no_stale_rulename, no_rule_defaults=args.no_rule_defaults,
            environment=environment))

    from .core.errors import OutputClosed, SinkError
    from .pipeline import default_jobs, replay_parallel
    from .sinks import writer_class
    from .sinks.base import open_target
    from .sources import iter_input_files
    jobs = default_jobs() if args.jobs == 0 else max(1, args.jobs)
    extra = _extra_stages(args.stage, console)
    if extra is None:
        return EXIT_USAGE
    stage = None
    if args.rules:
        stage = _load_detection(args.rules, console)
        if stage is None:
            return EXIT_FATAL
        if jobs > 1:
            console.print("note: --rules replays on one process (correlations need one stream)")
            jobs = 1
    if extra and jobs > 1:
        console.print("note: --stage replays on one process")
        jobs = 1
    if jobs > 1 and not args.keep_duplicates:
        console.print("note: replaying on one process: finding records read twice needs one "
                      "stream (--keep-duplicates allows --jobs)")
        jobs = 1

    def on_error(err) -> None:
        console.print(f"{getattr(err, 'severity', 'error')}: {err}", markup=False)

    walk_notes: list = []
    files = list(iter_input_files(paths, walk_notes.append))
    for note in walk_notes:
        on_error(note)
    fmt = None if args.no_output else args.format
    if args.rules and args.alerts == "-" and not args.output and fmt is not None:
        console.print("note: --alerts - writes the alerts to stdout, so the events are not "
                      "written there (give -o FILE to keep them)")
        fmt = None
    writer_options = {"bom": True} if fmt == "csv" and args.csv_bom else {}

    progress = task = None
    seen = {"records": 0, "errors": 0}

    def file_done(path, stats) -> None:
        if progress is not None:
            progress.update(task, advance=1, records=stats.records, errors=stats.errors)
        if stats.records == seen["records"] and stats.errors == seen["errors"]:
            console.print(f"warning: {path}: no events found (not an event log, or empty)",
                          markup=False)
        seen["records"], seen["errors"] = stats.records, stats.errors

    sinks: list = []
    failure: Optional[SinkError] = None
    stats = None
    replayer = None
    with ExitStack() as stack:
        try:
            if args.alerts and stage is not None:
                from .sinks.alerts import AlertJsonlSink
                sinks.append(AlertJsonlSink.open(args.alerts))
            if console.is_terminal and not args.quiet and not args.no_progress:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
                progress = stack.enter_context(Progress(
                    TextColumn("[bold]replay"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("files  {task.fields[records]:,} records  "
                               "{task.fields[errors]} errors"),
                    console=console, transient=True))
                task = progress.add_task("replay", total=len(files), records=0, errors=0)
            if jobs > 1 and len(files) > 1:
                stream, _ = open_target(args.output) if fmt is not None else (None, "")
                try:
                    stats = replay_parallel(files, options, fmt, stream, jobs, on_error,
                                            file_done, writer_options=writer_options)
                finally:
                    if stream is not None and args.output:
                        _close_stream(stream)
            else:
                if fmt is not None:
                    sinks.insert(0, writer_class(fmt).open(args.output, **writer_options))

                def on_progress(path, records) -> None:
                    if progress is not None and task is not None and replayer is not None:
                        progress.update(task, records=records, errors=replayer.stats.errors)

                replayer = Replayer(options, None, on_error=on_error, on_progress=on_progress,
                                    sinks=sinks, detection=stage, extra_stages=extra)
                for path in files:
                    replayer.run_file(path)
                    file_done(path, replayer.stats)
                replayer.finish()
        except SinkError as exc:
            failure = exc
        except BrokenPipeError:
            failure = OutputClosed("stdout: reader went away")
        except KeyboardInterrupt:
            _close_quietly(sinks)
            console.print("interrupted: output up to here is complete; no summary")
            return 130
        finally:
            # close every output now, also after a failure, so nothing is left to flush at exit
            try:
                if replayer is not None:
                    replayer.close()
                else:
                    _close_quietly(sinks)
            except SinkError as exc:
                failure = failure or exc
    if failure is not None:
        if isinstance(failure, OutputClosed):  # e.g. `| head`: stop quietly
            _silence_stdout()
            return 0
        console.print(f"error: {failure}", markup=False)
        return EXIT_FATAL
    if stats is None:
        assert replayer is not None  # one of the two replays ran
        stats = replayer.stats
    if not files:
        console.print("warning: no input files found (folders are searched for .evtx, .xml, "
                      ".json[l], .log, .txt, syslog files and archives)")
    stats.warnings += len(walk_notes)
    if not args.quiet:
        print_summary(console, stats, config is not None,
                      window=args.time_from is not None or args.time_to is not None,
                      config_name=None if config is None else
                      ("built-in default" if config_arg == "default" else str(config_arg)))
    if stage is not None and not args.quiet:
        _print_detection_summary(console, stage)
    if args.strict and (stats.errors or not stats.records):
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


def _load_detection(paths: list[str], console):
    """Load Sigma rules into a detection stage; print load issues. ``None`` on a fatal error."""
    try:
        from .detection import DetectionStage
    except ImportError as exc:
        console.print(f"error: Sigma detection unavailable: {exc}")
        return None
    try:
        stage = DetectionStage.from_paths(paths)
    except FileNotFoundError as exc:
        console.print(f"error: rules: {exc.filename or exc}: no such file or directory")
        return None
    rejected = [i for i in stage.issues if i.rejected]
    for issue in stage.issues:
        console.print(f"sigma: {issue}", markup=False)
    console.print(f"sigma: {len(stage.matcher.compiled)} rules and {len(stage.correlations)} "
                  f"correlations loaded, {len(rejected)} rejected", markup=False)
    return stage


def _print_detection_summary(console, stage) -> None:
    """Hits per rule and level at the end of a replay."""
    from rich.table import Table
    rows = stage.summary_rows()
    table = Table(title="Sigma detections", title_justify="left")
    columns: tuple[tuple[str, Literal["left", "right"]], ...] = (
        ("level", "left"), ("matches", "right"), ("alerts", "right"), ("rule", "left"))
    for col, just in columns:
        table.add_column(col, justify=just)
    for r in rows:
        table.add_row(str(r.level), f"{r.matches:,}", f"{r.alerts:,}", f"{r.title} ({r.rule_id})")
    if rows:
        console.print(table)
    else:
        console.print("Sigma detections: no rule matched")
    for line in stage.ungrouped_lines():
        console.print(f"warning: {line}", markup=False)


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


def print_config_errors(console, exc, hint: str = "") -> None:
    """Every error of a refused configuration (``ConfigError.errors``), one ``error:`` line
    each, then the count when there are several, then ``hint``."""
    errors = getattr(exc, "errors", [exc])
    for e in errors:
        console.print(f"error: {e}", markup=False)
    if len(errors) > 1:
        console.print(f"{len(errors)} errors: the configuration is refused", markup=False)
    if hint:
        console.print(hint.lstrip("\n"), markup=False)


def _config_mistake_hint(path: Path) -> str:
    """A hint when the "config" is really a rule blob or an event log."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return ""
    if head.startswith(b"ElfFile\0"):
        return "\n(this is an EVTX event log; give it as a PATH to replay, not as --config)"
    if b"<Event>" in head or b" sysmon" in head or head[:1] == b"{":
        return "\n(this looks like an event log; give it as a PATH to replay)"
    if head[:1] not in (b"<", b"\xef", b"\xff", b"\xfe", b" ", b"\t", b"\r", b"\n") and \
            b"\x00" in head:
        return ("\n(this looks like a compiled rule blob; turn it back into XML with "
                "'sysmonx config decode FILE')")
    return ""


def _silence_stdout() -> None:
    """After EPIPE on stdout, point it at /dev/null so interpreter shutdown does not complain."""
    import os
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def print_summary(console, stats, filtered: bool, window: bool = False,
                  config_name: Optional[str] = None) -> None:
    """Print the end-of-replay table: per EventID read/included/excluded, totals, errors; with
    ``window`` (``--from``/``--to`` given) also the records outside it and those without a time."""
    from rich.table import Table
    from .pipeline import event_name

    table = Table(title="SysmonX replay summary", title_justify="left")
    table.add_column("EventID", justify="right")
    table.add_column("Event")
    table.add_column("read", justify="right")
    table.add_column("included", justify="right")
    table.add_column("excluded", justify="right")
    for eid in sorted(set(stats.included) | set(stats.excluded)):
        inc, exc = stats.included[eid], stats.excluded[eid]
        table.add_row(str(eid), event_name(eid), f"{inc + exc:,}", f"{inc:,}", f"{exc:,}")
    table.add_row("", "total Sysmon", f"{stats.sysmon:,}", f"{sum(stats.included.values()):,}",
                  f"{sum(stats.excluded.values()):,}", end_section=True)
    console.print(table)
    console.print(f"files: {stats.files:,}  records read: {stats.records:,}  Sysmon events: "
                  f"{stats.sysmon:,}  other records: {stats.non_sysmon:,} "
                  f"({'passed' if stats.non_sysmon_written else 'dropped'})  errors: "
                  f"{stats.errors:,}  warnings: {stats.warnings:,}"
                  + (f"  config: {config_name}" if config_name else
                     "  (no config: nothing filtered)"))
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


def cmd_config(argv: list[str]) -> int:
    """``sysmonx config check FILE``: validate and print warnings."""
    from .config import ConfigError, load_config
    args = _config_parser().parse_args(argv)
    if getattr(args, "file", None) == "default":
        args.file = str(builtin_config_path())
    if not hasattr(args, "no_extensions"):
        args.no_extensions = False
    console = _stderr_console()
    if args.action == "decode":
        from .config.blob import BlobError, blob_to_xml, read_blob_file
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
    try:
        cfg = load_config(args.file, extensions=not args.no_extensions)
    except ConfigError as exc:
        print_config_errors(console, exc, _config_mistake_hint(Path(args.file)))
        return EXIT_FATAL
    except OSError as exc:
        console.print(f"error: cannot read {args.file}: {exc.strerror or exc}")
        return EXIT_FATAL
    for w in cfg.warnings:
        console.print(str(w), markup=False)
    if args.action == "explain":
        return cmd_explain(cfg, args, console)
    if args.action == "check":
        from .filtering.lint import lint_config
        for w in lint_config(cfg):
            console.print(str(w), markup=False)
    if args.action == "compile":
        from .config.blob import BlobError, compile_blob
        try:
            Path(args.output).write_bytes(compile_blob(cfg))
        except BlobError as exc:
            console.print(f"error: {exc}", markup=False)
            return EXIT_FATAL
        print(f"{args.output}: rule blob written ({Path(args.output).stat().st_size} bytes)")
        return 0
    print(f"Configuration file validated: {args.file} (schema {cfg.schema_version_text}, "
          f"{len(cfg.rule_sets)} rule sets, "
          f"{sum(len(r.filters) for r in cfg.rule_sets)} filters)")
    return 0


def cmd_explain(cfg, args, console) -> int:
    """``sysmonx config explain FILE EVENT``: the decision trace of the first event in EVENT
    (:mod:`sysmonx.filtering.explain`). Exit 0 whatever the decision; 1 when EVENT holds no
    event."""
    from .filtering import EngineOptions
    from .filtering.explain import explain, format_explanation
    from .sources import open_source
    errors: list = []
    try:
        events = open_source(args.event, errors.append)
        event = next(iter(events), None)
    except OSError as exc:
        console.print(f"error: cannot read {args.event}: {exc.strerror or exc}")
        return EXIT_FATAL
    if event is None:
        for e in errors:
            console.print(f"error: {e}", markup=False)
        console.print(f"error: {args.event}: no event found")
        return EXIT_FATAL
    fold = args.compare_fold
    if fold == "auto":
        fold = "upper" if event.provider == "Linux-Sysmon" else "lower"
    options = EngineOptions(compare_fold=fold, fallback=args.fallback,
                            stale_rulename=not args.no_stale_rulename,
                            no_rule_defaults=args.no_rule_defaults)
    sys.stdout.write(format_explanation(explain(cfg, event.event_id, event.data, options),
                                        values=not args.no_values))
    return 0


USAGE = f"""SysmonX v{__version__} - Sysmon-compatible event sensor and log replayer

Usage:
  sysmonx replay PATH... [--config FILE|default] [--format xml|linux-xml|jsonl|csv] [-o OUT]
                 [--from TIME] [--to TIME]
  sysmonx replay --sample            replay the built-in sample through the built-in config
  sysmonx run [--config FILE] [--duration S] [--backend ebpf|audit|cnproc] [--syslog]
                                     live Linux sensor (root), Sysmon for Linux events
  sysmonx config check FILE          validate a Sysmon configuration (errors, and warnings for
                                     rules that silently never match)
  sysmonx config explain FILE EVENT  the decision trace of one event (XML or JSON line)
  sysmonx plugins                    list sources, stages, sinks, backends and conditions
  sysmonx -i [config.xml]            install the service (as sysmon -i); -c, -u, -t likewise
  sysmonx -s [version|all]           print the configuration schema (as sysmon -s)
  sysmonx -? config                  configuration help (as sysmon -? config)
  sysmonx --version

Run 'sysmonx replay -h' for all replay options.
"""


def cmd_plugins(argv: list[str]) -> int:
    """``sysmonx plugins``: every registry (sources, stages, sinks, backends, conditions) with
    one line per plugin: name, summary, where it is defined; then modules that could not be
    loaded and why."""
    p = argparse.ArgumentParser(prog="sysmonx plugins",
                                description="List the registered sources, stages, sinks, live "
                                            "backends and filter conditions (built-in and "
                                            "from the sysmonx.* entry-point groups).")
    p.add_argument("kind", nargs="?", help="only this registry (sources, stages, sinks, "
                                           "backends, conditions)")
    args = p.parse_args(argv)
    from .core.registry import all_registries
    from .textsafe import terminal_safe
    regs = all_registries()
    if args.kind is not None:
        regs = [r for r in regs if r.kind == args.kind]
        if not regs:
            sys.stderr.write(f"error: no registry {args.kind!r}; known: "
                             f"{', '.join(r.kind for r in all_registries())}\n")
            return EXIT_USAGE
    out = []
    for reg in regs:
        entries = reg.entries()
        if reg.kind != "conditions":  # conditions keep Sysmon's manifest order
            entries.sort(key=lambda e: (getattr(e.obj, "order", 100), e.name))
        out.append(f"{reg.kind} ({reg.describe}; entry points: {reg.group}):")
        width = max((len(e.name) for e in entries), default=0)
        for e in entries:
            out.append(f"  {terminal_safe(e.name):<{width}}  {terminal_safe(e.summary)}  "
                       f"[{terminal_safe(e.origin)}]")
        for where, why in reg.broken.items():
            out.append(f"  (cannot load {terminal_safe(where)}: {terminal_safe(why)})")
        out.append("")
    sys.stdout.write("\n".join(out))
    return 0


def cmd_schema(arg: Optional[str]) -> int:
    """``-s [version|all]``: print the schema manifest like Sysmon (spec 6.2)."""
    from .schema.printer import render_schema_output
    text, code = render_schema_output(arg, "windows")
    (sys.stdout if code == 0 else sys.stderr).write(text if text.endswith("\n") else text + "\n")
    return code


def cmd_config_help() -> int:
    """``-? config``: configuration usage, event table and conditions."""
    from .schema import CURRENT
    from .schema.printer import render_config_help
    sys.stdout.write(render_config_help(CURRENT))
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the ``sysmonx`` console script. Returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        sys.stderr.write(USAGE)
        return EXIT_USAGE
    first = argv[0]
    if first == "replay":
        return cmd_replay(argv[1:])
    if first == "config":
        return cmd_config(argv[1:])
    if first == "run":
        return cmd_run(argv[1:])
    if first == "plugins":
        return cmd_plugins(argv[1:])
    if first in ("--version", "-version"):
        print(f"sysmonx {__version__}")
        return 0
    if first == "--help":
        if len(argv) > 1 and argv[1].lower() in ("config", "configuration"):
            return cmd_config_help()
        sys.stdout.write(USAGE)
        return 0
    if first.startswith(("-", "/")):
        from .compat import main as compat_main
        return compat_main(argv)
    sys.stderr.write(f"Unknown command or switch: {first}\n\n" + USAGE)
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
