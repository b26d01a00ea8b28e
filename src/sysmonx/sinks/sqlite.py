"""The embedded event store: ``-o sqlite:///PATH`` (SQLite, no server).

Schema (version 1, in ``meta``; created when the file is new, appended to otherwise)::

    CREATE TABLE meta   (key TEXT PRIMARY KEY, value TEXT);      -- schema_version, created_by
    CREATE TABLE events (
        id           INTEGER PRIMARY KEY,  -- insertion order (the order events were written)
        event_id     INTEGER NOT NULL,     -- System EventID
        time         TEXT,                 -- System time, UTC, 'YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ'
        utc_time     TEXT,                 -- the UtcTime field as Sysmon wrote it (or NULL)
        computer     TEXT,                 -- System Computer
        process_guid TEXT,                 -- ProcessGuid (SourceProcessGuid for 8, 10), or NULL
        image        TEXT,                 -- Image (SourceImage for 8, 10), or NULL
        record_id    INTEGER,              -- System EventRecordID
        provider     TEXT,
        rule_name    TEXT,                 -- RuleName, or NULL
        event        TEXT NOT NULL         -- the whole event as a SysmonX JSON line (format:
                                           -- sysmonx.sinks.jsonl): every field by name, System
    );
    CREATE INDEX events_event_id ON events(event_id);   -- and on time, computer, process_guid,
                                                        -- image
    CREATE TABLE alerts (                  -- one row per Sigma alert (event 1000) stored
        id INTEGER PRIMARY KEY, time TEXT, rule_id TEXT, title TEXT, level TEXT,
        alert TEXT NOT NULL                -- the alert's event 1000 as a SysmonX JSON line
    );

Sigma alerts reach the store as events 1000 (SigmaAlert) in the event stream, stored in
``events`` like any event and indexed in ``alerts`` (rule id, title, level, window end). With
``--alerts FILE`` the alerts go to that file instead of the event stream, and so not here.

``event`` holds the event exactly (the JSON-lines round trip is exact), so ``sysmonx replay DB``
and ``sysmonx query DB --format xml`` give back the events as they were written, and SQL reaches
any field with ``json_extract(event, '$.CommandLine')``.

Writes are batched: one transaction per ``batch`` rows (default 5000) or per second, whichever
comes first, and at :meth:`SqliteSink.flush`/``close``; WAL journal, ``synchronous=NORMAL``
(a crash of the process loses nothing committed; a power loss at most the last transaction).
Memory stays flat whatever the input size: rows are not kept after their transaction.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any

from ..core.errors import SinkError, UsageError
from ..core.registry import SINKS
from ..event import Event
from ..interfaces import Sink, SinkStats
from .jsonl import event_to_json

__all__ = ["SqliteSink", "SCHEMA", "SCHEMA_VERSION", "sqlite_path", "open_store", "store_counts"]

#: SigmaAlert (sysmonx.detection.alerts, which this layer does not import): EventID, provider.
ALERT_EVENT_ID = 1000
ALERT_PROVIDER = "SysmonX"

SCHEMA_VERSION = "1"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, event_id INTEGER NOT NULL, time TEXT, utc_time TEXT, computer TEXT,
    process_guid TEXT, image TEXT, record_id INTEGER, provider TEXT, rule_name TEXT,
    event TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_event_id ON events(event_id);
CREATE INDEX IF NOT EXISTS events_time ON events(time);
CREATE INDEX IF NOT EXISTS events_computer ON events(computer);
CREATE INDEX IF NOT EXISTS events_process_guid ON events(process_guid);
CREATE INDEX IF NOT EXISTS events_image ON events(image);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY, time TEXT, rule_id TEXT, title TEXT, level TEXT, alert TEXT NOT NULL);
"""

_INSERT = ("INSERT INTO events (event_id, time, utc_time, computer, process_guid, image, "
           "record_id, provider, rule_name, event) VALUES (?,?,?,?,?,?,?,?,?,?)")


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///PATH`` URL (``sqlite:////abs/path`` or ``sqlite:///rel``, as
    SQLAlchemy spells them; ``sqlite:///`` + an absolute path also works).

    Raises:
        UsageError: no path.
    """
    if not url.lower().startswith("sqlite://"):
        raise UsageError(f"{url}: expected sqlite:///PATH")
    rest = url[len("sqlite://"):].split("?", 1)[0]
    if rest.startswith("/"):
        rest = rest[1:]
    if not rest:
        raise UsageError(f"{url}: no database path (sqlite:///events.db)")
    return rest


def open_store(path: str) -> sqlite3.Connection:
    """Open (creating) a store at ``path`` with the schema above.

    Raises:
        SinkError: not a SQLite file, or a store of another schema version.
    """
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta VALUES ('schema_version', ?), ('created_by', "
                       "'sysmonx')", (SCHEMA_VERSION,))
        elif row[0] != SCHEMA_VERSION:
            db.close()
            raise SinkError(f"{path}: event store schema {row[0]}, this sysmonx writes "
                            f"{SCHEMA_VERSION}")
    except sqlite3.Error as exc:
        where = os.path.abspath(path)
        hint = ("" if os.path.isabs(path) else
                " (a relative path: sqlite:////ABSOLUTE/PATH takes four slashes)")
        raise SinkError(f"{path}: cannot use {where} as an event store: {exc}{hint}") from exc
    return db


@SINKS.register
class SqliteSink(Sink):
    """``-o sqlite:///PATH``: events (and Sigma alerts, events 1000) into the embedded store (module
    docstring).

    Args:
        path: the database file (created if missing, appended to if it is a store).
        batch: rows per transaction at most.
        interval: seconds a transaction stays open at most (live output).

    Raises:
        SinkError: the file cannot be used as a store.
    """

    name = "sqlite"
    summary = "the embedded event store (SQLite): indexed columns + each event as JSON"
    accepts = frozenset({"event"})
    schemes = ("sqlite",)

    def __init__(self, path: str, batch: int = 5000, interval: float = 1.0) -> None:
        self.path = path
        self.target = path
        self.label = f"-o sqlite:///{path}"
        self.batch = batch
        self.interval = interval
        self.db = open_store(path)
        self.stats = SinkStats()
        self._rows: list[tuple[Any, ...]] = []
        self._alerts: list[tuple[Any, ...]] = []
        self._since = time.monotonic()
        self.closed = False

    @classmethod
    def open(cls, target: Any, **options: Any) -> SqliteSink:
        """The store of the URL (or path) ``target``; URL option ``batch=N``.

        Raises:
            UsageError: a bad URL. SinkError: the file cannot be used as a store.
        """
        t = str(target)
        if "://" in t:
            q = t.split("?", 1)[1] if "?" in t else ""
            for kv in filter(None, q.split("&")):
                k, _, v = kv.partition("=")
                if k == "batch" and v.isdigit() and int(v) > 0:
                    options.setdefault("batch", int(v))
                else:
                    raise UsageError(f"{t}: unknown or bad option {kv!r} (batch=N)")
            t = sqlite_path(t)
        return cls(t, **options)

    def write(self, item: Any) -> None:
        """Queue one event or alert row; commit when the batch is full or a second has passed.

        Raises:
            SinkError: the database refused the transaction (disk full, locked...).
        """
        e: Event = item
        d = e.data
        src = e.event_id in (8, 10)
        guid = d.get("SourceProcessGuid" if src else "ProcessGuid")
        image = d.get("SourceImage" if src else "Image")
        line = event_to_json(e).decode("utf-8")
        self._rows.append((e.event_id, e.time_created or None, d.get("UtcTime"),
                           e.computer or None, guid, image, e.record_id, e.provider or None,
                           d.get("RuleName"), line))
        if e.event_id == ALERT_EVENT_ID and e.provider == ALERT_PROVIDER:
            self._alerts.append((d.get("WindowEnd") or e.time_created or None, d.get("RuleId"),
                                 d.get("RuleTitle"), d.get("RuleLevel"), line))
        if len(self._rows) + len(self._alerts) >= self.batch or \
                time.monotonic() - self._since >= self.interval:
            self.flush()

    def flush(self) -> None:
        """Commit the queued rows in one transaction.

        Raises:
            SinkError: the transaction failed (its rows are counted as failed).
        """
        if not self._rows and not self._alerts:
            self._since = time.monotonic()
            return
        rows, alerts = self._rows, self._alerts
        self._rows, self._alerts = [], []
        self._since = time.monotonic()
        try:
            self.db.execute("BEGIN")
            if rows:
                self.db.executemany(_INSERT, rows)
            if alerts:
                self.db.executemany("INSERT INTO alerts (time, rule_id, title, level, alert) "
                                    "VALUES (?,?,?,?,?)", alerts)
            self.db.execute("COMMIT")
        except (sqlite3.Error, UnicodeEncodeError) as exc:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self.stats.failed += len(rows) + len(alerts)
            raise SinkError(f"{self.path}: {len(rows) + len(alerts)} rows not stored: {exc}") \
                from exc
        self.stats.sent += len(rows) + len(alerts)

    def close(self) -> None:
        """Commit what is queued and close the database (idempotent).

        Raises:
            SinkError: the last transaction failed.
        """
        if self.closed:
            return
        self.closed = True
        try:
            self.flush()
        finally:
            self.db.close()


def store_counts(db: sqlite3.Connection) -> dict[int, int]:
    """EventID -> rows in a store (for summaries and tests)."""
    return dict(db.execute("SELECT event_id, count(*) FROM events GROUP BY event_id"))
