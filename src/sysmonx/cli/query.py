"""``sysmonx query DB [SQL | --where FIELD=VALUE ...] [--format ...]``: read the embedded event
store back (:mod:`sysmonx.sources.sqlitestore`), in any output format, or run read-only SQL."""

from __future__ import annotations

import argparse
import sys

from . import common
from .common import EXIT_FATAL, EXIT_USAGE, add_format_option, silence_stdout

__all__ = ["cmd_query"]


def _parser() -> argparse.ArgumentParser:
    p = common.UsageParser(
        prog="sysmonx query",
        description="Read events back from a SysmonX event store (-o sqlite:///DB). Without SQL "
                    "the events matching every --where are written in --format, in the order "
                    "they were stored. With SQL (read-only): a result with an 'event' column is "
                    "written as events in --format; any other result as tab-separated rows "
                    "with a header (counts, groups). Table and columns: see "
                    "docs/OUTPUTS.md.")
    p.add_argument("db", metavar="DB", help="the store (SQLite file)")
    p.add_argument("sql", nargs="?", metavar="SQL",
                   help="a read-only SQL query, e.g. \"SELECT event_id, count(*) FROM events "
                        "GROUP BY event_id\"")
    p.add_argument("--where", "-w", action="append", default=[], metavar="COND",
                   help="FIELD=VALUE, FIELD!=VALUE (exact, case-sensitive) or FIELD~TEXT "
                        "(contains, case-insensitive); repeatable, all must hold; FIELD (case-"
                        "sensitive) is a Sysmon field or EventID (EventID=1,3), Computer, "
                        "EventRecordID; a *Guid value may be given with or without braces, in "
                        "any case")
    p.add_argument("--from", dest="time_from", metavar="TIME",
                   help="events whose System time is at or after TIME (ISO 8601, UTC)")
    p.add_argument("--to", dest="time_to", metavar="TIME", help="... and before TIME")
    p.add_argument("--limit", type=int, metavar="N", help="at most N events")
    add_format_option(p, "jsonl",
                      help="output format of events (default jsonl)")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default stdout)")
    return p


def _say_absent_fields(console, db: str, where: list[str]) -> None:
    """After a ``--where`` query that found nothing: one ``note:`` per field no stored event
    carries, with the field it likely meant (as ``config check`` does for a misspelt name), so
    that "0 events" is not read as "no match" when a name is wrong."""
    from ..sources.sqlitestore import absent_fields, field_suggestion, where_fields
    try:
        absent = absent_fields(db, where_fields(where))
    except OSError:
        return
    for name in absent:
        hint = field_suggestion(name)
        console.print(f"note: no stored event has a field {name!r} (field names are "
                      "case-sensitive)" + (f"; did you mean {hint!r}?" if hint else ""),
                      markup=False)


def cmd_query(argv: list[str]) -> int:
    """``sysmonx query``: see :func:`_parser`."""
    from ..core.errors import OutputClosed, SinkError, UsageError
    from ..pipeline import parse_time_bound
    from ..sinks import writer_class
    from ..sources.sqlitestore import query_sql, run_query

    args = _parser().parse_args(argv)
    console = common.stderr_console()
    if args.sql and (args.where or args.time_from or args.time_to or args.limit is not None):
        console.print("error: give SQL or --where/--from/--to/--limit, not both")
        return EXIT_USAGE
    errors = [0]

    def on_error(err) -> None:
        errors[0] += 1
        console.print(f"error: {err}", markup=False)

    try:
        params: list = []
        if args.sql:
            sql = args.sql
        else:
            bounds = [None if b is None else parse_time_bound(b)
                      for b in (args.time_from, args.time_to)]
            sql, params = query_sql(args.where, bounds[0], bounds[1], args.limit)
        names, rows = run_query(args.db, sql, params, on_error)
    except (UsageError, ValueError) as exc:
        console.print(f"error: {exc}", markup=False)
        return EXIT_USAGE
    except OSError as exc:
        console.print(f"error: {exc.strerror and f'{args.db}: {exc.strerror}' or exc}",
                      markup=False)
        return EXIT_FATAL
    try:
        if "event" in names:
            writer = writer_class(args.format).open(args.output or "-")
            n = 0
            try:
                for e in rows:
                    writer.write(e)
                    n += 1
            finally:
                writer.close()
            console.print(f"{n:,} event{'' if n == 1 else 's'}", markup=False)
            if not n and args.where:
                _say_absent_fields(console, args.db, args.where)
        else:
            out = open(args.output, "w") if args.output else sys.stdout
            try:
                out.write("\t".join(names) + "\n")
                for r in rows:
                    out.write("\t".join("" if v is None else str(v) for v in r) + "\n")
            finally:
                if args.output:
                    out.close()
                else:
                    out.flush()
    except BrokenPipeError:
        silence_stdout()
        return 0
    except OutputClosed:
        silence_stdout()
        return 0
    except SinkError as exc:
        console.print(f"error: {exc}", markup=False)
        return EXIT_FATAL
    return EXIT_FATAL if errors[0] else 0
