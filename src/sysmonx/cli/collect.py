"""``sysmonx collect nats://HOST:PORT/SUBJECT -o OUT...``: consume the fleet stream (a JetStream
durable consumer, :mod:`sysmonx.sources.natsstream`) into any outputs, on the one loop."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import Any

from . import common
from .common import (EXIT_FATAL, EXIT_USAGE, add_format_option, close_quietly, load_detection,
                     print_config_errors, url_output_options)

__all__ = ["cmd_collect"]


def _parser() -> argparse.ArgumentParser:
    p = common.UsageParser(
        prog="sysmonx collect",
        description="Consume the events many hosts publish with -o nats://... (NATS JetStream) "
                    "and write them to any outputs: files in --format, the event store "
                    "(sqlite:///DB), syslog/HTTP URLs. Collectors started with the same "
                    "durable name split the stream between them.")
    p.add_argument("url", metavar="nats://HOST:PORT/SUBJECT",
                   help="options: ?durable=NAME (default sysmonx-collect), stream=NAME "
                        "(default SYSMONX), batch=N, tls=1, ca=, cert=, key=, user=, "
                        "password_file=, token_file=")
    p.add_argument("-o", "--output", action="append", default=[], metavar="OUT",
                   help="where events go (repeatable; default stdout): FILE, '-', or a URL")
    add_format_option(p, "jsonl",
                      help="format of file and stdout outputs (default jsonl)")
    p.add_argument("--config", "-c", metavar="FILE",
                   help="filter the collected events with a Sysmon config (default: keep all)")
    p.add_argument("--rules", action="append", default=[], metavar="PATH",
                   help="Sigma rules run on the collected stream; alerts as events 1000")
    common.add_rule_issues_option(p)
    p.add_argument("--count", type=int, metavar="N", help="stop after N messages")
    p.add_argument("--idle-exit", type=float, metavar="SECONDS",
                   help="stop when no message came for SECONDS")
    p.add_argument("-q", "--quiet", action="store_true", help="no closing summary")
    return p


def cmd_collect(argv: list[str]) -> int:
    """``sysmonx collect``: see :func:`_parser`."""
    from ..config import ConfigError, load_config
    from ..core.errors import SinkError, SourceUnavailable, UsageError
    from ..filtering import EngineOptions
    from ..filtering.stage import FilterStage
    from ..pipeline.fanout import FanOut
    from ..pipeline.loop import Pipeline
    from ..pipeline.replay import detection_stages
    from ..sinks import writer_class
    from ..sinks.outputs import is_url, open_url_output
    from ..sources.natsstream import NatsStreamSource

    args = _parser().parse_args(argv)
    console = common.stderr_console()
    try:
        source = NatsStreamSource(args.url, max_events=args.count, idle_exit=args.idle_exit)
    except UsageError as exc:
        console.print(f"error: {exc}", markup=False)
        return EXIT_USAGE
    stages: list[Any] = []
    if args.config:
        try:
            config = load_config(Path(args.config))
        except ConfigError as exc:
            print_config_errors(console, exc)
            return EXIT_FATAL
        except OSError as exc:
            console.print(f"error: cannot read config {args.config}: {exc.strerror or exc}")
            return EXIT_FATAL
        stages.append(FilterStage(config, EngineOptions()))
    if args.rules:
        detection = load_detection(args.rules, console,
                                   argparse.Namespace(rule_issues=args.rule_issues))
        if detection is None:
            return EXIT_FATAL
        stages.extend(detection_stages(detection, True))
    sinks: list[Any] = []
    try:
        for spec in args.output or ["-"]:
            if is_url(spec):
                sinks.append(open_url_output(spec, **url_output_options(spec)))
            else:
                sinks.append(writer_class(args.format).open(None if spec == "-" else spec,
                                                            append=True))
    except (SinkError, UsageError) as exc:
        close_quietly(sinks)
        console.print(f"error: {exc}", markup=False)
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FATAL

    def on_error(err: Any) -> None:
        console.print(f"{getattr(err, 'severity', 'error')}: {err}", markup=False)

    fanout = FanOut.build(sinks, "fatal")
    pipeline = Pipeline(stages, fanout, on_error=on_error)
    source.before_ack = fanout.flush
    old = signal.signal(signal.SIGTERM, lambda *a: source.stop())
    failure = None
    try:
        pipeline.run(source)  # opens and closes the source
    except SourceUnavailable as exc:
        console.print(f"error: {exc}", markup=False)
        close_quietly(sinks)
        return EXIT_FATAL
    except SinkError as exc:
        failure = exc
    except KeyboardInterrupt:
        source.stop()
    finally:
        signal.signal(signal.SIGTERM, old)
        try:
            pipeline.close()
        except SinkError as exc:
            failure = failure or exc
    if failure is not None:
        console.print(f"error: {failure} (unacknowledged messages stay in the stream)",
                      markup=False)
        return EXIT_FATAL
    if not args.quiet:
        console.print(f"collect: {source.received:,} messages received, {source.acked:,} "
                      f"acknowledged, {pipeline.errors:,} unreadable", markup=False)
    return 0

