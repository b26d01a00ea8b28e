"""Reading the embedded event store (written by :mod:`sysmonx.sinks.sqlite`; schema there):
``sysmonx replay DB`` and ``sysmonx query DB``.

The store is opened read-only (``mode=ro``, ``PRAGMA query_only``), so neither a replay nor a
query can change it. Events come back from the ``event`` column (a SysmonX JSON line: exact), in
``id`` order (the order they were written) unless a query orders them otherwise, streamed with a
cursor (memory does not grow with the store). A row whose ``event`` is not a valid event is
reported as a :class:`~sysmonx.core.errors.ReadError` (offset kind ``row``, the row id) and
skipped. ``Event.origin`` is ``(path, row id)``.

:func:`query_sql` turns ``--where`` conditions into SQL on the indexed columns (``EventID``,
``Computer``, ``ProcessGuid``, ``Image``, ``RuleName``, and ``time`` bounds) and on any other
field through ``json_extract``; values are bound parameters, never spliced into the SQL.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any, Iterator, Optional

import orjson

from ..core.errors import ReadError, UsageError
from ..core.registry import SOURCES
from ..event import Event
from .base import FileFormat, OnError
from .jsonl import event_from_object

__all__ = ["SqliteFormat", "open_store_readonly", "read_store", "query_sql", "run_query",
           "SQLITE_MAGIC", "absent_fields", "field_suggestion", "where_fields"]

SQLITE_MAGIC = b"SQLite format 3\x00"
#: ``--where`` names that are indexed columns.
COLUMNS = {"EventID": "event_id", "Computer": "computer", "ProcessGuid": "process_guid",
           "Image": "image", "RuleName": "rule_name", "EventRecordID": "record_id",
           "Provider": "provider"}
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_COND = re.compile(r"^([^=!~]+)(!=|=|~)(.*)$", re.S)
#: A GUID as a user may paste it: braces or not, any case (Sysmon writes ``{lower-case}``).
_GUID = re.compile(r"^\{?([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-"
                   r"[0-9A-Fa-f]{12})\}?$")


def open_store_readonly(path: str) -> sqlite3.Connection:
    """The store at ``path``, read-only.

    Raises:
        OSError: the file is missing or not a SysmonX event store.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(2, "No such file", path)
    try:
        db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
        db.execute("PRAGMA query_only=1")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as exc:
        raise OSError(f"{path}: not a readable SQLite database: {exc}") from exc
    if "events" not in tables or "meta" not in tables:
        db.close()
        raise OSError(f"{path}: a SQLite database, but not a SysmonX event store (no events "
                      "table)")
    return db


def read_store(path: str, on_error: OnError) -> Iterator[Event]:
    """Every event of the store in the order written.

    Raises:
        OSError: not a store.
    """
    db = open_store_readonly(path)
    try:
        yield from _events_from(iter(db.execute("SELECT id, event FROM events ORDER BY id")),
                                path, on_error)
    finally:
        db.close()


def query_sql(where: list[str], time_from: Optional[str] = None,
              time_to: Optional[str] = None, limit: Optional[int] = None
              ) -> tuple[str, list[Any]]:
    """``(sql, parameters)`` selecting ``id, event`` for ``--where`` conditions (all must hold).

    Each condition is ``FIELD=VALUE`` (equal: exact and case-sensitive, the stored text byte for
    byte), ``FIELD!=VALUE`` (not equal) or ``FIELD~TEXT`` (contains, case-insensitive for
    ASCII, as Sysmon's ``contains``); FIELD names are case-sensitive. A GUID given to a field
    whose name ends in ``Guid`` may come with or without braces, in any case: it is compared as
    Sysmon writes it, ``{lower-case}``. FIELD is a Sysmon field
    name or ``EventID``/``Computer``/``EventRecordID``/``Provider``; ``EventID=1,3`` takes a
    list. ``time_from``/``time_to``: canonical UTC times (System time, ``to`` exclusive).

    Raises:
        UsageError: a malformed condition or field name.
    """
    clauses: list[str] = []
    params: list[Any] = []
    for cond in where:
        m = _COND.match(cond)
        if not m or not _FIELD.match(m.group(1).strip()):
            raise UsageError(f"--where {cond!r}: expected FIELD=VALUE, FIELD!=VALUE or "
                             "FIELD~TEXT with a field name")
        name, op, value = m.group(1).strip(), m.group(2), m.group(3)
        col = COLUMNS.get(name) or f"json_extract(event, '$.\"{name}\"')"
        if op == "~":
            clauses.append(f"instr(lower({col}), lower(?)) > 0")
            params.append(value)
            continue
        if name.endswith(("Guid", "GUID")) and (g := _GUID.match(value.strip())):
            value = "{" + g.group(1).lower() + "}"  # as Sysmon writes every *Guid field
        values: list[Any] = value.split(",") if name in ("EventID", "EventRecordID") else [value]
        if name in ("EventID", "EventRecordID"):
            try:
                values = [int(v) for v in values]
            except ValueError:
                raise UsageError(f"--where {cond!r}: {name} takes numbers") from None
        marks = ",".join("?" * len(values))
        clauses.append(f"{col} {'NOT ' if op == '!=' else ''}IN ({marks})")
        params += values
    if time_from:
        clauses.append("time >= ?")
        params.append(time_from)
    if time_to:
        clauses.append("time < ?")
        params.append(time_to)
    sql = "SELECT id, event FROM events"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY id"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return sql, params


def where_fields(where: list[str]) -> list[str]:
    """The field names of ``--where`` conditions (as :func:`query_sql` reads them), in order,
    each once."""
    out: list[str] = []
    for cond in where:
        m = _COND.match(cond)
        if m and m.group(1).strip() not in out:
            out.append(m.group(1).strip())
    return out


def absent_fields(path: str, names: list[str]) -> list[str]:
    """The ``names`` (``--where`` fields) that no event of the store at ``path`` carries (an
    indexed column name is always there). Scans the store once per name until an event has it
    (asked after a query found nothing, to tell a typo from no match).

    Raises:
        OSError: not a store.
    """
    db = open_store_readonly(path)
    try:
        out = []
        for name in names:
            if name in COLUMNS or not _FIELD.match(name):
                continue
            row = db.execute(f"SELECT 1 FROM events WHERE json_extract(event, '$.\"{name}\"') "
                             "IS NOT NULL LIMIT 1").fetchone()
            if row is None:
                out.append(name)
        return out
    finally:
        db.close()


def field_suggestion(name: str) -> Optional[str]:
    """A field name of the Sysmon schema (or an indexed ``--where`` name) that ``name`` likely
    meant: the same name in other case (``parentimage``), else the closest spelling
    (``ParentImg`` -> ``ParentImage``, :func:`difflib.get_close_matches`), else ``None``."""
    import difflib
    from ..schema import CURRENT
    from ..schema.catalogue import ENRICHMENT_FIELD_NAMES
    known: set[str] = set(COLUMNS) | set(ENRICHMENT_FIELD_NAMES)
    for ev in CURRENT.events.values():
        known |= set(ev.field_names)
    known.discard(name)
    by_case = {k.lower(): k for k in sorted(known)}
    if name.lower() in by_case:
        return by_case[name.lower()]
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
    return close[0] if close else None


def run_query(path: str, sql: str, params: list[Any], on_error: OnError
              ) -> tuple[list[str], Iterator[Any]]:
    """Run a read-only query on the store: ``(column names, rows)``. When the result has an
    ``event`` column the rows are :class:`~sysmonx.event.Event` objects, else tuples.

    Raises:
        OSError: not a store. UsageError: the SQL is refused (it writes, or does not parse).
    """
    db = open_store_readonly(path)
    try:
        cur = db.execute(sql, params)
    except sqlite3.Error as exc:
        db.close()
        raise UsageError(f"query refused: {exc}") from exc
    names = [d[0] for d in cur.description or ()]

    def rows() -> Iterator[Any]:
        try:
            if "event" in names:
                i = names.index("event")
                rid = names.index("id") if "id" in names else None
                wrapped = ((r[rid] if rid is not None else None, r[i]) for r in iter(cur))
                yield from _events_from(wrapped, path, on_error)
            else:
                while True:
                    chunk = cur.fetchmany(2000)
                    if not chunk:
                        return
                    yield from chunk
        finally:
            db.close()
    return names, rows()


def _events_from(rows: Iterator[tuple[Any, Any]], path: str, on_error: OnError
                 ) -> Iterator[Event]:
    for rid, line in rows:
        try:
            if not isinstance(line, str):
                raise ValueError("the event column is not text")
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                obj = json.loads(line)
            yield event_from_object(obj, (path, rid))
        except (ValueError, TypeError) as exc:
            on_error(ReadError(path, rid, "row", f"not a stored event: {exc}"))


@SOURCES.register
class SqliteFormat(FileFormat):
    """The SysmonX event store (``sysmonx replay DB``)."""

    name = "sqlite"
    summary = "the SysmonX event store (SQLite, written by -o sqlite:///PATH)"
    extensions = (".db", ".sqlite", ".sqlite3")
    order = 60
    streamable = False
    magic = SQLITE_MAGIC

    @classmethod
    def read(cls, path: str, on_error: OnError, **options: Any) -> Iterator[Event]:
        """:func:`read_store`."""
        return read_store(path, on_error)
