"""``sysmonx scan``: scan running processes now and print the findings (the hollows_hunter use
case): ``sysmonx scan [PID ...] [--all] [--scanners LIST] [--yara RULES] [--format text|jsonl]``.

Exit status: 0 nothing found, 1 findings, 2 a usage error or rules that cannot be loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections import Counter
from typing import Any, Optional

from . import common
from .common import EXIT_USAGE

__all__ = ["cmd_scan", "EXIT_FOUND", "EXIT_CLEAN"]

EXIT_CLEAN = 0
EXIT_FOUND = 1


def _parser() -> argparse.ArgumentParser:
    p = common.UsageParser(
        prog="sysmonx scan",
        description="Scan running processes now with SysmonX's scanners and print the findings "
                    "(text, or one ScannerFinding event 200 per line with --format jsonl). Exit "
                    "status: 0 nothing found, 1 findings, 2 usage or rule errors.")
    p.add_argument("pids", nargs="*", type=int, metavar="PID", help="processes to scan")
    p.add_argument("--all", action="store_true", help="every process on the host (kernel threads "
                   "and this scanner excepted)")
    p.add_argument("--scanners", default="all",
                   help="comma-separated scanner names, 'all' (default), 'yara' or 'yara:RULE'")
    p.add_argument("--yara", metavar="RULES", help="YARA rule file or folder (*.yar, *.yara)")
    p.add_argument("--format", choices=("text", "jsonl"), default="text")
    p.add_argument("--allowlist", metavar="FILE", action="append", default=[],
                   help="YAML allow-list entries added to the default list (repeatable)")
    p.add_argument("--no-allowlist", action="store_true",
                   help="report every finding, also those the default allow-list dismisses")
    p.add_argument("--show-dismissed", action="store_true",
                   help="also print allow-listed findings (text: marked, with the reason)")
    p.add_argument("--max-bytes", type=int, default=64 << 20,
                   help="memory and file bytes one process scan may read (default 64 MiB)")
    p.add_argument("--max-seconds", type=float, default=2.0,
                   help="wall time one process scan may take (default 2 s)")
    p.add_argument("--stats", metavar="FILE",
                   help="write scan statistics as JSON to FILE ('-': standard error): processes "
                        "scanned/skipped, findings and dismissals per name, seconds per process "
                        "(median, max), peak RSS")
    return p


def cmd_scan(argv: list[str]) -> int:
    """``sysmonx scan``. Returns the exit status (module docstring)."""
    p = _parser()
    args = p.parse_args(argv)
    if not args.pids and not args.all:
        p.print_usage(sys.stderr)
        sys.stderr.write("sysmonx scan: name PIDs or give --all\n")
        return EXIT_USAGE
    from ..config.parse import parse_scanner_list
    from ..core.errors import ConfigError
    from ..scanners.allowlist import AllowList, default_allowlist
    from ..scanners.base import ScanContext
    from ..scanners.engine import Identity, finding_event, scan_process, select_scanners
    try:
        names = parse_scanner_list(args.scanners)
    except ValueError as exc:
        sys.stderr.write(f"sysmonx scan: --scanners: {exc}\n")
        return EXIT_USAGE
    rules = None
    try:
        if args.yara:
            from ..scanners.builtin.yara import load_rules
            rules = load_rules(args.yara)
        allow: Optional[AllowList] = None if args.no_allowlist else default_allowlist()
        for extra in args.allowlist:
            if allow is None:
                allow = AllowList()
            allow.extend(extra)
    except ConfigError as exc:
        sys.stderr.write(f"sysmonx scan: {exc}\n")
        return EXIT_USAGE
    scanners, only = select_scanners(names)
    if any(n == "yara" or n.startswith("yara:") for n in names) and rules is None:
        sys.stderr.write("sysmonx scan: the yara scanner needs --yara RULES\n")
        return EXIT_USAGE
    pids = args.pids
    if args.all:
        pids = sorted(int(n) for n in os.listdir("/proc") if n.isdigit())
    ctx = ScanContext(yara_rules=rules, yara_only=only)
    identity = Identity()
    out = sys.stdout
    found = 0
    times: list[float] = []
    skipped: Counter[str] = Counter()
    kept: Counter[str] = Counter()
    dismissed: Counter[str] = Counter()
    over: Counter[str] = Counter()
    from ..sinks.jsonl import event_to_json
    for pid in pids:
        rep = scan_process(pid, scanners, context=ctx, allowlist=allow, max_bytes=args.max_bytes,
                           max_seconds=args.max_seconds, identity=identity)
        if rep.skipped:
            skipped[rep.skipped] += 1
            continue
        times.append(rep.seconds)
        over.update(rep.over_budget)
        rows: list[tuple[Any, Any]] = [(f, None) for f in rep.findings]
        if args.show_dismissed:
            rows += [(f, e) for f, e in rep.dismissed]
        for f, _ in rep.dismissed:
            dismissed[f.finding] += 1
        for f, entry in rows:
            if entry is None:
                found += 1
                kept[f.finding] += 1
            if args.format == "jsonl":
                if entry is None:
                    out.write(event_to_json(finding_event(rep, f)).decode() + "\n")
            else:
                mark = f"  [allow-listed: {entry.why}]" if entry is not None else ""
                out.write(f"{pid} {_safe(rep.image)} {f.finding}: {_safe(f.details)}{mark}\n")
    out.flush()
    sys.stderr.write(_summary(len(pids), len(times), skipped, found, dismissed, over) + "\n")
    if args.stats:
        stats = _stats(pids, times, skipped, kept, dismissed, over, rules is not None)
        text = json.dumps(stats, indent=1, sort_keys=True) + "\n"
        if args.stats == "-":
            sys.stderr.write(text)
        else:
            with open(args.stats, "w", encoding="utf-8") as fh:
                fh.write(text)
    return EXIT_FOUND if found else EXIT_CLEAN


def _summary(processes: int, scanned: int, skipped: Counter[str], found: int,
             dismissed: Counter[str], over: Counter[str]) -> str:
    """The closing line on stderr, so a clean scan is not silent: processes asked for, scanned,
    skipped (by reason), findings written, findings the allow-list dismissed, and scans a
    scanner cut short at its byte or time budget (``--max-bytes``, ``--max-seconds``)."""
    def counts(c: Counter[str]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
    line = (f"sysmonx scan: {processes} processes, {scanned} scanned, "
            f"{sum(skipped.values())} skipped")
    if skipped:
        line += f" ({counts(skipped)})"
    line += f"; {found} findings, {sum(dismissed.values())} dismissed by the allow-list"
    if over:
        line += f"; cut short by the scan budget: {counts(over)}"
    return line


def _safe(s: str) -> str:
    from ..textsafe import terminal_safe
    return terminal_safe(s)


def _stats(pids: list[int], times: list[float], skipped: Counter[str], kept: Counter[str],
           dismissed: Counter[str], over: Counter[str], yara: bool) -> dict[str, Any]:
    import resource  # POSIX only; sysmonx scan itself is Linux only
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "processes": len(pids), "scanned": len(times), "skipped": dict(skipped),
        "findings": dict(kept), "dismissed": dict(dismissed), "over_budget": dict(over),
        "seconds_median": statistics.median(times) if times else 0.0,
        "seconds_max": max(times) if times else 0.0,
        "seconds_total": sum(times),
        "cpu_seconds": ru.ru_utime + ru.ru_stime,
        "peak_rss_kib": ru.ru_maxrss, "yara": yara,
    }
