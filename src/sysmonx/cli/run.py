"""``sysmonx run``: the live sensor (:class:`sysmonx.pipeline.live.Sensor`) with its outputs,
or ``--follow`` of an installed Sysmon for Linux's log."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from contextlib import ExitStack
from typing import Any, Callable, Optional

from . import common
from .common import (EXIT_FATAL, EXIT_USAGE, add_format_option, add_rule_cache_options,
                     add_rule_profile_options,
                     add_stage_option, check_rule_profile_options, close_quietly, extra_stages,
                     load_detection, print_config_errors, report_rule_profile,
                     silence_stdout, start_rule_profile)

__all__ = ["cmd_run", "write_pidfile_when_started", "heartbeat_option", "DEFAULT_STATE_DIR"]

#: Where a traced run keeps its heartbeat sequence and running flag by default.
DEFAULT_STATE_DIR = "/var/lib/sysmonx"


def _run_parser() -> argparse.ArgumentParser:
    p = common.UsageParser(
        prog="sysmonx run",
        description="Live Linux sensor: collect Sysmon for Linux events (1, 3, 5, 9, 10, 11, 23, "
                    "plus 22 DnsQuery; 6, 7, 8, 25 and SysmonX's 100 and 201-213 where the tier "
                    "sees them) from the kernel, filter them with a Sysmon config and write "
                    "them as Sysmon for Linux does. Needs root.")
    p.add_argument("--config", "-c", metavar="FILE", default="default",
                   help="Sysmon XML config (default: the built-in Linux default config, "
                        "'default-linux'; 'default-windows' names replay's)")
    add_format_option(p, "linux-xml",
                      help="output format (default: Sysmon for Linux single-line XML)")
    p.add_argument("-o", "--output", metavar="OUT", action="append", default=[],
                   help="where events go (repeatable; default stdout): a FILE or '-' in "
                        "--format, or a URL: tcp://, tls://, udp:// (RFC 5424 syslog), "
                        "http(s):// (NDJSON or OTLP logs), sqlite:///PATH, nats://, kafka://; "
                        "network outputs are spooled on disk while the receiver is away")
    p.add_argument("--syslog", nargs="?", const="/dev/log", metavar="SOCKET",
                   help="send events to syslog as Sysmon for Linux does (default socket /dev/log)"
                        "; stdout output is then off unless -o - is given")
    p.add_argument("--duration", type=float, metavar="SECONDS",
                   help="stop after this many seconds (default: until Ctrl-C / SIGTERM); "
                        "a network output (-o tcp://, nats:// ...) then waits up to its drain= "
                        "seconds (default 30) for its receiver to take what is spooled, and "
                        "says so")
    from ..sensor.backends import tiers
    p.add_argument("--backend", choices=tiers(),
                   help="force a trace backend tier (default: the best available)")
    p.add_argument("--follow", metavar="LOG|journald",
                   help="do not trace: follow an installed Sysmon for Linux's syslog output (a "
                        "file such as /var/log/syslog, or journald) and run its events through "
                        "the config and outputs")
    p.add_argument("--from-start", action="store_true",
                   help="with --follow FILE: read the file from its beginning")
    p.add_argument("--no-dns", action="store_true",
                   help="do not run the auxiliary backends (DNS, and ShellCommand)")
    p.add_argument("--enrich", action="store_true",
                   help="write the SysmonX enrichment fields (GrandparentImage, AncestorImages, "
                        "ContainerId ...); without it output stays Sysmon's")
    p.add_argument("--list-backends", action="store_true",
                   help="show which backends can run here and why not, then exit")
    p.add_argument("--provider", help="System/Provider Name (default: Linux-Sysmon)")
    p.add_argument("--rules", action="append", default=[], metavar="PATH",
                   help="Sigma rules (files, folders, .tar.gz; repeatable) run on every written "
                        "event; alerts are written as SysmonX event 1000 (SigmaAlert), or with "
                        "--alerts to a JSONL file instead")
    p.add_argument("--alerts", metavar="FILE",
                   help="write Sigma alerts as JSON lines to FILE instead of the event stream; "
                        "'-' for stdout, which then carries only the alerts")
    p.add_argument("--pidfile", metavar="FILE",
                   help="write the sensor's pid to FILE once it has started (events 4 and 16 "
                        "written); removed at exit. Used by the service (sysmonx -i)")
    g = p.add_argument_group("self-protection (heartbeats, tamper findings)")
    g.add_argument("--heartbeat", metavar="SECONDS",
                   help="write a Heartbeat (SysmonX event 202) every SECONDS (0: none, or 1 to "
                        "86400), with a sequence number that continues across restarts; "
                        "overrides the config's <HeartbeatInterval> (default: that, else 60)")
    g.add_argument("--state-dir", metavar="DIR|none",
                   help="where the heartbeat sequence and the running flag are kept (unclean "
                        "shutdowns are reported at the next start); default "
                        f"{DEFAULT_STATE_DIR} for a traced run, none with --follow")
    g.add_argument("--no-guard", action="store_true",
                   help="no heartbeats and no live tamper findings (SysmonX event 201)")
    g.add_argument("--install-manifest", metavar="FILE", help=argparse.SUPPRESS)
    # the service's stored command line (/opt/sysmonx/argv): event 16 names the configuration
    # file given to the last -i/-c, as Sysmon for Linux does, not the installed copy
    p.add_argument("--config-name-from", metavar="ARGV_FILE", help=argparse.SUPPRESS)
    g = p.add_argument_group("scanners (findings are event 200 ScannerFinding)")
    g.add_argument("--scan", metavar="LIST",
                   help="run these scanners (comma-separated, 'all', 'yara:RULE') on the process "
                        "of every ProcessCreate the config includes, besides what the config's "
                        "scanners=\"...\" rules ask for")
    g.add_argument("--yara", metavar="RULES", help="YARA rule file or folder for the yara scanner "
                   "(overrides the config's <YaraRules>)")
    g.add_argument("--allowlist", metavar="FILE", action="append", default=[],
                   help="YAML allow-list entries added to the default list (repeatable)")
    g.add_argument("--no-allowlist", action="store_true",
                   help="write every finding, also those the default allow-list dismisses")
    g.add_argument("--scan-queue", type=int, default=1024, metavar="N",
                   help="pending scans beyond which requests are dropped and reported as event "
                        "255 (default 1024)")
    g.add_argument("--scan-max-bytes", type=int, default=64 << 20, metavar="BYTES",
                   help="memory and file bytes one process scan may read (default 64 MiB)")
    g.add_argument("--scan-max-seconds", type=float, default=2.0, metavar="S",
                   help="wall time one process scan may take (default 2 s)")
    g.add_argument("--scan-nice", type=int, default=10, metavar="N",
                   help="CPU niceness of the scan worker thread (default 10: scans yield to "
                        "the host's work)")
    add_stage_option(p)
    add_rule_cache_options(p)
    common.add_rule_issues_option(p)
    add_rule_profile_options(p)
    common.add_detections_option(p)
    common.add_triage_options(p)
    return p


def _config_name(argv_file: Optional[str]) -> Optional[Callable[[], Optional[str]]]:
    """``--config-name-from``: event 16's configuration name, read from the service's stored
    command line at start and on every reload (:func:`~sysmonx.cli.sysmon.configuration_name`)."""
    if not argv_file:
        return None
    from .sysmon import configuration_name
    return lambda: configuration_name(argv_file)


def scan_options(args: argparse.Namespace, config: Any, console: Any) -> Any:
    """:class:`~sysmonx.scanners.stages.ScanOptions` from ``sysmonx run``'s options and the
    config (``<YaraRules>``); ``None`` after printing the error when they cannot be used."""
    from ..config.parse import parse_scanner_list
    from ..core.errors import ConfigError
    from ..scanners.allowlist import AllowList, default_allowlist
    from ..scanners.stages import ScanOptions
    try:
        scan_all = parse_scanner_list(args.scan) if args.scan else ()
    except ValueError as exc:
        console.print(f"error: --scan: {exc}", markup=False)
        return None
    rules = None
    path = args.yara or config.options.get("YaraRules")
    try:
        if path:
            from ..scanners.builtin.yara import load_rules
            rules = load_rules(path)
        allow = None if args.no_allowlist else default_allowlist()
        for extra in args.allowlist:
            if allow is None:
                allow = AllowList()
            allow.extend(extra)
    except ConfigError as exc:
        console.print(f"error: {exc}", markup=False)
        return None
    return ScanOptions(queue_size=max(1, args.scan_queue), max_bytes=args.scan_max_bytes,
                       max_seconds=args.scan_max_seconds, yara_rules=rules, allowlist=allow,
                       scan_all=scan_all, nice=args.scan_nice)


def heartbeat_option(text: Optional[str], console: Any) -> "Optional[float] | bool":
    """``--heartbeat SECONDS`` checked as the config's ``<HeartbeatInterval>`` is
    (:func:`~sysmonx.config.parse.parse_heartbeat_interval`): the seconds, ``None`` when the
    option was not given (the config's interval, else 60, applies and follows reloads), or
    ``False`` after printing the error."""
    if text is None:
        return None
    from ..config.parse import parse_heartbeat_interval
    try:
        return parse_heartbeat_interval(text)
    except ValueError as exc:
        console.print(f"error: --heartbeat: {exc}", markup=False)
        return False


def cmd_run(argv: list[str]) -> int:
    """``sysmonx run``: the live sensor (see :func:`_run_parser`)."""
    import os
    from ..config import ConfigError, load_config
    from ..core.errors import OutputClosed, SinkError, SourceUnavailable, UsageError
    from ..pipeline.live import Sensor, SensorOptions
    from ..sensor.backends import probe_all
    from ..sinks import writer_class

    args = _run_parser().parse_args(argv)
    console = common.stderr_console()
    if args.list_backends:
        for name, reason in probe_all().items():
            print(f"{name:8} {'available' if reason is None else 'unavailable: ' + reason}")
        return 0
    if args.duration is not None and args.duration <= 0:
        console.print("error: --duration must be a positive number of seconds")
        return EXIT_USAGE
    heartbeat = heartbeat_option(args.heartbeat, console)
    if heartbeat is False:
        return EXIT_USAGE
    if not check_rule_profile_options(args, console):
        return EXIT_USAGE
    ok, triage = common.triage_from_args(args, console)
    if not ok:
        return EXIT_USAGE
    if os.geteuid() != 0 and not args.follow:
        console.print("error: sysmonx run needs root (kernel tracing interfaces)")
        return EXIT_FATAL
    cpath = common.config_arg_path(args.config, default="default-linux")
    cache_info: dict = {}
    try:
        config = load_config(cpath, cache_info=cache_info)
    except ConfigError as exc:
        print_config_errors(console, exc)
        return EXIT_FATAL
    except OSError as exc:
        console.print(f"error: cannot read config {cpath}: {exc.strerror or exc}")
        return EXIT_FATAL
    for w in config.warnings:
        console.print(str(w), markup=False)
    for note in cache_info["notes"]:
        console.print(f"note: {note}", markup=False)
    console.print(common.config_loaded_line(common.config_name(args.config, "default-linux"),
                                            config, cache_info), markup=False)
    extra = extra_stages(args.stage, console)
    if extra is None:
        return EXIT_USAGE
    sinks: list = []
    try:
        if args.syslog:
            from ..sinks.syslog import SyslogWriter
            writer = SyslogWriter.open(args.syslog, require=False)
            if getattr(writer, "sock", "") is None:  # like Sysmon for Linux (syslog(3)): keep running
                console.print(f"warning: no syslog daemon at {args.syslog}: events sent there are "
                              "not delivered (they are counted and reported) until one starts; "
                              "give --syslog SOCKET or -o FILE to keep them", markup=False)
            sinks.append(writer)
        from ..sinks.outputs import is_url, open_url_output
        for spec in args.output:
            if is_url(spec):
                sinks.append(open_url_output(spec))
            elif spec != "-":
                out = writer_class(args.format).open(spec, append=True, buffered=False)
                out.label = f"-o {spec}"
                sinks.append(out)
        if args.rules and args.alerts == "-" and "-" not in args.output:
            if not args.output:
                console.print("note: --alerts - writes the alerts to stdout, so the events are "
                              "not written there (give -o FILE or --syslog to keep them)")
        elif "-" in args.output or not (args.syslog or args.output):
            out = writer_class(args.format).open("-", buffered=False)
            out.label = "stdout"
            sinks.append(out)
        stage = None
        if args.rules:
            stage = load_detection(args.rules, console, args, platform="lnx")
            if stage is None:
                close_quietly(sinks)
                return EXIT_FATAL
            note = common.unreachable_rules_note(stage, args.provider, bool(args.follow))
            if note is not None:
                console.print(f"sigma: {note}", markup=False)
            for line in common.triage_notes(triage, stage):
                console.print(line, markup=False)
            if args.alerts:
                from ..sinks.alerts import AlertJsonlSink
                sinks.append(AlertJsonlSink.open(args.alerts))
    except SinkError as exc:
        close_quietly(sinks)
        console.print(f"error: {exc}", markup=False)
        return EXIT_FATAL
    except UsageError as exc:  # a bad output URL
        close_quietly(sinks)
        console.print(f"error: {exc}", markup=False)
        return EXIT_USAGE
    scan = scan_options(args, config, console)
    if scan is None:
        close_quietly(sinks)
        return EXIT_FATAL
    state_dir = args.state_dir or (None if args.follow else DEFAULT_STATE_DIR)
    if state_dir is not None and state_dir.lower() == "none":
        state_dir = None
    watch = tuple(p for p in (*[o for o in args.output if o != "-" and "://" not in o],
                              args.syslog) if p)
    options = SensorOptions(backend=args.backend, dns=not args.no_dns and not args.follow,
                            duration=args.duration, provider=args.provider,
                            follow=args.follow, from_start=args.from_start,
                            enrich=args.enrich,
                            guard=not args.no_guard, heartbeat_s=heartbeat,
                            state_dir=state_dir, watch_outputs=watch,
                            install_manifest=args.install_manifest, scan=scan, triage=triage,
                            config_name=_config_name(args.config_name_from))

    def status(msg: str) -> None:
        console.print(f"sysmonx: {msg}", markup=False)

    sensor = Sensor(config, sinks, options, config_path=str(cpath), on_status=status,
                    detection=stage, extra_stages=extra)
    profile = start_rule_profile(stage, args)
    with ExitStack() as stack:
        if args.pidfile:
            write_pidfile_when_started(sensor, args.pidfile, stack)
        cpu0, wall0 = time.process_time(), time.monotonic()
        try:
            sensor.run()
        except SourceUnavailable as exc:
            console.print(f"error: {exc}", markup=False)
            return EXIT_FATAL
        except OutputClosed:
            silence_stdout()
            return 0
    console.print(f"sysmonx: {sensor.summary()}", markup=False)
    from ..filtering.stage import FilterStage
    flt = next((s for s in sensor.stages if isinstance(s, FilterStage)), None)
    if flt is not None:
        collected = sensor.source.collected_events()
        common.print_filter_table(console, flt.included, flt.excluded,
                                  "SysmonX sensor summary: what the config kept",
                                  collected=collected)
        console.print("sysmonx: " + (
            "EventIDs the backends collect are listed, 0 when none was seen"
            if collected is not None else
            "EventIDs seen are listed (a followed source: what it collects is not known)"),
            markup=False)
        outside = written_outside_table(sensor.stats.written, flt.included)
        if outside:
            console.print(f"sysmonx: {outside}", markup=False)
    cpu, wall = time.process_time() - cpu0, max(1e-9, time.monotonic() - wall0)
    console.print(f"sysmonx: sensor CPU {cpu:.2f} s over {wall:.0f} s ({100 * cpu / wall:.2f} % "
                  f"of one core; every thread of this process, the kernel's work for it "
                  f"included)", markup=False)
    if sensor.source.guard is not None:
        console.print(f"sysmonx: {sensor.source.guard.summary()}", markup=False)
    if stage is not None:
        console.print(f"sysmonx: {common.sigma_summary(stage, args.alerts)}", markup=False)
        from ..detection.stages import AlertTriageStage
        tri = next((s for s in sensor.stages if isinstance(s, AlertTriageStage)), None)
        if tri is not None:
            console.print(f"sysmonx: {common.held_back_line(triage, tri.held_back)}",
                          markup=False)
        common.print_detection_summary(
            console, stage, top=None if args.all_detections else common.DETECTIONS_SHOWN,
            triage=triage)
    follow = sensor.backend_stats().get("follow")
    if follow and (follow.get("repaired") or follow.get("cut_short")):
        console.print(f"sysmonx: followed records repaired (entity references without ';'): "
                      f"{follow['repaired']:,}; cut short by syslog, forwarded with their "
                      f"complete fields: {follow['cut_short']:,}", markup=False)
    if not report_rule_profile(console, profile, args):
        return EXIT_FATAL
    return 0


def written_outside_table(written: Counter, included: Counter) -> str:
    """The line that makes the exit summary add up: events written (``written``: EventID ->
    events every output took) that the config table's included column (``included``: EventID
    -> events the filter passed) does not count, such as Sigma alerts (event 1000) and other
    events added after the filter, e.g. ``also written, not in the table: event 1000
    (Sigma alert) 65``; ``""`` when there are none."""
    from ..pipeline import event_name
    extra = {eid: n - included.get(eid, 0) for eid, n in written.items()
             if n > included.get(eid, 0)}
    if not extra:
        return ""
    return "also written, not in the table: " + ", ".join(
        f"event {eid} ({event_name(eid)}) {extra[eid]:,}"
        for eid in sorted(extra, key=lambda e: (-extra[e], e)))


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
