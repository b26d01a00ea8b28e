"""The ``sysmonx`` entry point: the usage text and the dispatch to one module per command."""

from __future__ import annotations

import sys
from typing import Optional

from ..version import __version__
from .common import EXIT_USAGE

__all__ = ["SUBCOMMANDS", "USAGE", "main", "cmd_config_help"]

SUBCOMMANDS = ("replay", "run", "config", "coverage", "plugins", "scan", "query", "collect")


USAGE = f"""SysmonX v{__version__} - Sysmon-compatible event sensor and log replayer

Usage:
  sysmonx replay PATH... [--config FILE|default] [--format xml|linux-xml|jsonl|csv|ecs]
                 [-o OUT] [--from TIME] [--to TIME]
  sysmonx replay --sample            replay the built-in sample through the built-in config
  sysmonx run [--config FILE] [--duration S] [--backend ebpf|audit|cnproc] [--syslog]
                                     live Linux sensor (root), Sysmon for Linux events; on
                                     Windows: Event Log channels (+ --etw), see run -h
  sysmonx -accepteula -i CONFIG [--sysmon PATH] [--download-sysmon]
                                     Windows: install Sysmon as the sensor and the SysmonX
                                     service (elevated); -c CONFIG, -u likewise
  sysmonx config check FILE          validate a Sysmon configuration (errors, and warnings for
                                     rules that silently never match)
  sysmonx config explain FILE EVENT  the decision trace of one event (XML or JSON line)
  sysmonx config stats FILE LOGS...  per rule set and filter, the events a config decides over
                                     recorded logs; noisy values; filters that never matched
  sysmonx config diff A B LOGS...    what two configs log differently over the same logs
  sysmonx coverage [--config FILE] [--rules SIGMA...] [--logs LOGS...] [--navigator LAYER]
                                     ATT&CK techniques named by a config and Sigma rules, and
                                     which fired (text, JSON, Navigator layer, --html report)
  sysmonx scan [PID...|--all] [--scanners LIST] [--yara RULES] [--format text|jsonl]
                                     scan running processes now (exit 1 when something found)
  sysmonx plugins                    list sources, stages, sinks, backends, conditions, scanners
  sysmonx query DB [SQL] [--where FIELD=VALUE]...
                                     read the event store (-o sqlite:///DB) in any format
  sysmonx collect nats://HOST:PORT/SUBJECT -o OUT...
                                     consume the fleet stream (-o nats://...) into outputs
  sysmonx -i [config.xml]            install the service (as sysmon -i); -c, -u, -t likewise
  sysmonx -s [version|all]           print the configuration schema (as sysmon -s)
  sysmonx -? config                  configuration help (as sysmon -? config)
  sysmonx --version

Run 'sysmonx replay -h' for all replay options.
"""


def cmd_config_help() -> int:
    """``-? config``: configuration usage, event table and conditions."""
    from ..schema import CURRENT
    from ..schema.printer import render_config_help
    sys.stdout.write(render_config_help(CURRENT))
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the ``sysmonx`` console script. Returns the exit status: 0, 1 for a
    fatal error, 87 (Sysmon's) for bad usage, argparse's usage errors (its exit status 2)
    included; ``-h`` still exits 0 through ``SystemExit``."""
    try:
        return _main(argv)
    except SystemExit as exc:
        if exc.code == 2:  # argparse: "error: unrecognized arguments" and the like
            return EXIT_USAGE
        raise


def _main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from . import common
    if not argv:
        sys.stderr.write(USAGE)
        if common.on_windows():
            from .windows import backends_text
            sys.stderr.write("\n" + backends_text())
        return EXIT_USAGE
    first = argv[0]
    if first == "replay":
        from .replay import cmd_replay
        return cmd_replay(argv[1:])
    if first == "config":
        from .config import cmd_config
        return cmd_config(argv[1:])
    if first == "run":
        if common.on_windows():
            from .windows import cmd_run_windows
            return cmd_run_windows(argv[1:])
        from .run import cmd_run
        return cmd_run(argv[1:])
    if first == "coverage":
        from .coverage import cmd_coverage
        return cmd_coverage(argv[1:])
    if first == "scan":
        from .scan import cmd_scan
        return cmd_scan(argv[1:])
    if first == "collect":
        from .collect import cmd_collect
        return cmd_collect(argv[1:])
    if first == "query":
        from .query import cmd_query
        return cmd_query(argv[1:])
    if first == "plugins":
        from .plugins import cmd_plugins
        return cmd_plugins(argv[1:])
    if first in ("--version", "-version"):
        from ..core.native import implementation, sensor_implementation
        print(f"sysmonx {__version__}")
        print(f"replay and JSON-lines hot paths: {implementation()}")
        print(f"live sensor hot paths: {sensor_implementation()}")
        return 0
    if first == "--help":
        if len(argv) > 1 and argv[1].lower() in ("config", "configuration"):
            return cmd_config_help()
        sys.stdout.write(USAGE)
        return 0
    if first.startswith(("-", "/")):
        from .sysmon import main as compat_main
        return compat_main(argv)
    sys.stderr.write(f"Unknown command or switch: {first}\n\n" + USAGE)
    return EXIT_USAGE
