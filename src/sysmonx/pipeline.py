"""The replay pipeline: sources -> Sysmon filter (RuleName, FieldSizes) -> writer, with stats.

Data flows one way (docs/ARCHITECTURE.md): a source yields :class:`~sysmonx.event.Event`; the
filter stage decides with :class:`~sysmonx.filtering.FilterEngine`; included events go to one
writer. Records that are not Sysmon events never reach the filter: they are passed through or
dropped by option. Bad records are reported through ``on_error`` and never stop the run.

Nothing here grows with the input: statistics are counters per EventID.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterable, Optional

from .config.model import Config
from .event import Event, TimeFormatError, normalize_time
from .filtering import EngineOptions, FilterEngine
from .schema import CURRENT
from .sinks import WRITERS, writer_class
from .sources import ReadError, iter_input_files, open_source
from .stages.clock import ClockCheck, utc_time
from .stages.dedup import DuplicateFilter

__all__ = ["ReplayOptions", "ReplayStats", "Replayer", "OutputError", "make_writer",
           "replay_parallel", "OUTPUT_FORMATS", "parse_time_bound"]

#: ``--format`` values (see :data:`sysmonx.sinks.WRITERS`).
OUTPUT_FORMATS = tuple(WRITERS)


def make_writer(fmt: str, stream: BinaryIO, **options):
    """Instantiate the writer for ``fmt`` (a key of :data:`sysmonx.sinks.WRITERS`) on ``stream``
    with the writer's keyword ``options`` (e.g. ``bom=True`` for ``csv``).

    Raises:
        ValueError: unknown format.
        TypeError: an option the writer does not take.
    """
    return writer_class(fmt)(stream, **options)


_OFFSET_TAIL = re.compile(r"[Tt ].*[+-](\d{2}):?(\d{2})?$")


def parse_time_bound(text: str) -> str:
    """A ``--from`` / ``--to`` value as the canonical UTC time string Events carry
    (``YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ``, see :mod:`sysmonx.event`), so bounds and record times
    compare as strings.

    Accepts ISO 8601 / RFC 3339: a date alone (``2024-01-02``: its midnight UTC), a date and time
    with ``T`` or a space, with or without seconds and fraction (up to 9 digits kept), with ``Z``
    or a ``+hh:mm`` / ``+hhmm`` / ``+hh`` offset (converted to UTC); a time without a zone is UTC.

    Raises:
        TimeFormatError: anything else, or a time outside years 1-9999 after conversion.
    """
    from datetime import datetime, timezone
    raw = text.strip()
    m = _OFFSET_TAIL.search(raw)
    if m and (int(m.group(1)) > 23 or int(m.group(2) or 0) > 59):
        raise TimeFormatError(f"not a UTC offset in {text!r}")
    try:
        canonical = normalize_time(raw)
        datetime.strptime(canonical[:19], "%Y-%m-%dT%H:%M:%S")  # a real date and time?
        return canonical
    except (ValueError, OverflowError):
        pass
    try:
        dt = datetime.fromisoformat(raw[:-1] + "+00:00" if raw[-1:] in ("Z", "z") else raw)
        if dt.tzinfo is not None:
            dt = dt.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise TimeFormatError(f"not an ISO 8601 date or time: {text!r} (e.g. 2024-01-02, "
                              "2024-01-02T03:04:05Z, 2024-01-02T05:04:05+02:00)") from None
    return f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:" \
           f"{dt.second:02d}.{dt.microsecond:06d}000Z"


class OutputError(Exception):
    """Writing the output failed (disk full, closed pipe ...): fatal, unlike a bad input record.
    ``__cause__`` is the underlying OSError."""


@dataclass
class ReplayOptions:
    """What a replay does.

    Attributes:
        config: loaded Sysmon config, or ``None`` to pass every Sysmon event through unchanged
            (conversion only: no filtering, RuleName kept as recorded).
        engine_options: named choices for uncertain Sysmon behaviours.
        non_sysmon: ``pass`` (write records of other providers unchanged) or ``drop``.
        input_format: force a reader (a name of :data:`sysmonx.sources.FORMATS`) or ``None``
            to detect per file.
        time_from, time_to: keep only records whose System time (``Event.time_created``, never
            event data such as ``UtcTime``) is ``>= time_from`` and ``< time_to``; ISO 8601 text
            as :func:`parse_time_bound` takes it, or ``None`` for no bound. The window applies to
            every record, Sysmon or not, before the filter. Records without a (readable) time
            are kept and counted in :attr:`ReplayStats.untimed`.
        window_time: which time ``time_from``/``time_to`` compare: ``system`` (System
            ``TimeCreated``, the default) or ``utctime`` (a Sysmon event's own ``UtcTime``,
            falling back to System time for records without one), for exports whose System
            times are local times labelled UTC (a warning says so, see
            :class:`~sysmonx.stages.clock.ClockCheck`).
        keep_duplicates: write every record read, even one read before (same provider,
            computer, channel, EventRecordID and System time to the second, see
            :class:`~sysmonx.stages.dedup.DuplicateFilter`); by default such repeats are
            dropped and counted in :attr:`ReplayStats.duplicates`. Removing them needs the one
            stream of a single process: :func:`replay_parallel` requires ``True``.
    """

    config: Optional[Config] = None
    engine_options: EngineOptions = field(default_factory=EngineOptions)
    non_sysmon: str = "drop"
    input_format: Optional[str] = None
    time_from: Optional[str] = None
    time_to: Optional[str] = None
    window_time: str = "system"
    keep_duplicates: bool = False


@dataclass
class ReplayStats:
    """Counters of one replay: ``files``, ``records`` read, ``sysmon`` events, ``non_sysmon``
    records, ``included``/``excluded`` per EventID, ``errors`` (bad records and files).

    With a time window (``--from`` / ``--to``): ``out_of_window`` records were outside it and went
    no further (they are in ``records`` only); ``untimed`` records had no readable System time and
    were kept (they go on to the filter and are counted there as usual).

    ``duplicates``: records dropped as repeats of a record read before (they are in
    ``records`` only). ``warnings``: warning lines (said once per file; nothing was lost).
    ``repaired``: records
    read after undoing a known export fault, per fault (``{"entity references without ';'":
    16}``); they are read in full and counted in ``records`` as usual."""

    files: int = 0
    records: int = 0
    sysmon: int = 0
    non_sysmon: int = 0
    non_sysmon_written: int = 0
    included: Counter = field(default_factory=Counter)
    excluded: Counter = field(default_factory=Counter)
    errors: int = 0
    out_of_window: int = 0
    untimed: int = 0
    warnings: int = 0
    repaired: Counter = field(default_factory=Counter)
    duplicates: int = 0


class Replayer:
    """Runs recorded logs through the Sysmon filter into a writer.

    Args:
        options: :class:`ReplayOptions`.
        writer: object with ``write(event)``, or ``None`` to only count.
        on_error: called with each :class:`~sysmonx.sources.ReadError`.
        on_progress: called as ``on_progress(path, records_so_far)`` every few thousand records
            and at each file end (for a progress bar).
        engine: an already compiled :class:`~sysmonx.filtering.FilterEngine` for
            ``options.config`` (compiled here when omitted).
    Raises:
        TimeFormatError: ``options.time_from`` / ``time_to`` is not an ISO 8601 time.
    """

    PROGRESS_EVERY = 4096

    def __init__(self, options: ReplayOptions, writer=None,
                 on_error: Optional[Callable[[ReadError], None]] = None,
                 on_progress: Optional[Callable[[str, int], None]] = None,
                 engine: Optional[FilterEngine] = None, detection=None,
                 on_alert: Optional[Callable] = None):
        self.options = options
        self.writer = writer
        self.detection = detection
        self.on_alert = on_alert
        self.stats = ReplayStats()
        self._file_repairs: Counter = Counter()
        self._on_error = on_error
        self._on_progress = on_progress
        if engine is None and options.config is not None:
            engine = FilterEngine(options.config, options.engine_options)
        self.engine = engine
        self._from = (parse_time_bound(options.time_from)
                      if options.time_from is not None else None)
        self._to = parse_time_bound(options.time_to) if options.time_to is not None else None
        if options.window_time not in ("system", "utctime"):
            raise ValueError(f"window_time must be 'system' or 'utctime', not "
                             f"{options.window_time!r}")
        self._dedup = None if options.keep_duplicates else DuplicateFilter()
        self._saturation_said = False

    def _in_window(self, ev: Event) -> bool:
        """Whether ``ev``'s System time (or ``UtcTime`` with ``window_time="utctime"``) is inside
        ``[time_from, time_to)``; a record without a readable time is counted in ``untimed``
        and kept."""
        t = None
        if self.options.window_time == "utctime":
            t = utc_time(ev)
        if t is None:
            t = ev.time_created
        if not t or len(t) != 30 or t[29] != "Z":
            try:
                t = normalize_time(t) if t else ""
            except TimeFormatError:
                t = ""
            if not t:
                self.stats.untimed += 1
                return True
        if self._from is not None and t < self._from:
            return False
        return self._to is None or t < self._to

    def _clock_warning(self, path: str, ev: Event, hours: Optional[int]) -> None:
        which = (f"record {ev.record_id}" if ev.record_id is not None else
                 f"the record at {ev.origin[1]}" if ev.origin else "a record")
        self._error(ReadError(
            path, None, "file",
            f"System times are {hours:+d} h off the events' own UtcTime ({which}: TimeCreated "
            f"{ev.time_created}, UtcTime {ev.data.get('UtcTime')}): "
            "the exporter probably wrote local time labelled UTC. --from/--to select on "
            + ("UtcTime here (--window-time utctime)" if self.options.window_time == "utctime"
               else "System time; --window-time utctime selects on UtcTime instead"),
            "warning"))

    def _error(self, err: ReadError) -> None:
        severity = getattr(err, "severity", "error")
        if severity == "repaired":  # counted, summed up per file at the file's end
            self.stats.repaired[err.message] += 1
            self._file_repairs[err.message] += 1
            return
        if severity == "error":
            self.stats.errors += 1
        elif severity == "warning":
            self.stats.warnings += 1
        if self._on_error is not None:
            self._on_error(err)

    def run(self, paths: Iterable[str]) -> ReplayStats:
        """Replay every file under ``paths`` (folders recurse, sorted). Returns the stats.

        Raises:
            FileNotFoundError: a path that does not exist (fatal, before anything is read).
        """
        files = list(iter_input_files(list(paths), self._error))
        for path in files:
            self.run_file(path)
        return self.stats

    def run_file(self, path: str) -> None:
        """Replay one file; unreadable files and bad records become errors, never exceptions."""
        self.stats.files += 1
        self._file_repairs.clear()
        try:
            events = open_source(path, self._error, self.options.input_format)
            self._consume(path, events)
        except OutputError:
            raise
        except (OSError, ValueError) as exc:
            self._error(ReadError(path, None, "file", f"cannot read: {exc}"))
        for what, n in self._file_repairs.items():
            self._error(ReadError(path, None, "file", f"{n:,} record(s) repaired: {what}",
                                  "note"))
        if self._dedup is not None and self._dedup.saturated and not self._saturation_said:
            self._saturation_said = True
            self._error(ReadError(path, None, "file", "duplicate removal reached its memory "
                                  "bound: records from here on are not checked for repeats "
                                  "(--keep-duplicates turns the check off)", "warning"))
        if self._on_progress is not None:
            self._on_progress(path, self.stats.records)

    def finish_detection(self) -> None:
        """End of the stream: close the detection stage's open correlation windows and hand
        their alerts to ``on_alert``."""
        if self.detection is not None:
            for alert in self.detection.finish():
                self.on_alert(alert)

    def _consume(self, path: str, events: Iterable[Event]) -> None:
        stats = self.stats
        included, excluded = stats.included, stats.excluded
        write = None
        if self.writer is not None:
            raw_write = self.writer.write

            def write(event: Event) -> None:
                try:
                    raw_write(event)
                except OSError as exc:
                    raise OutputError(exc) from exc
        engine = self.engine
        deciders = {}
        keep_other = self.options.non_sysmon == "pass"
        detect = self.detection.process if self.detection is not None else None
        on_alert = self.on_alert
        progress = self._on_progress
        every = self.PROGRESS_EVERY
        windowed = self._from is not None or self._to is not None
        in_window = self._in_window
        dedup = self._dedup
        clock: Optional[ClockCheck] = ClockCheck()
        for ev in events:
            stats.records += 1
            if progress is not None and stats.records % every == 0:
                progress(path, stats.records)
            if dedup is not None and dedup.is_duplicate(ev):
                stats.duplicates += 1
                continue
            if clock is not None and clock.check(ev) is not None:
                self._clock_warning(path, ev, clock.offset_hours)
                clock = None  # once per file
            if windowed and not in_window(ev):
                stats.out_of_window += 1
                continue
            if not ev.is_sysmon:
                stats.non_sysmon += 1
                if keep_other:
                    stats.non_sysmon_written += 1
                    if write is not None:
                        write(ev)
                    if detect is not None:
                        for alert in detect(ev):
                            on_alert(alert)
                continue
            stats.sysmon += 1
            eid = ev.event_id
            if engine is not None:
                decide = deciders.get(eid)
                if decide is None:
                    decide = deciders[eid] = engine.decider_for(eid)
                include, name = decide(ev.data)
                if not include:
                    excluded[eid] += 1
                    continue
                if name is not None:
                    data = ev.data
                    if "RuleName" in data:
                        data["RuleName"] = name
                    elif name != "-":
                        ev.data = {"RuleName": name, **data}
                if engine.field_sizes:
                    ev.data = engine.apply_field_sizes(eid, ev.data)
            included[eid] += 1
            if write is not None:
                write(ev)
            if detect is not None:
                for alert in detect(ev):
                    on_alert(alert)


def _merge(into: ReplayStats, part: ReplayStats) -> None:
    into.files += part.files
    into.records += part.records
    into.sysmon += part.sysmon
    into.non_sysmon += part.non_sysmon
    into.non_sysmon_written += part.non_sysmon_written
    into.included.update(part.included)
    into.excluded.update(part.excluded)
    into.errors += part.errors
    into.out_of_window += part.out_of_window
    into.untimed += part.untimed
    into.warnings += part.warnings
    into.repaired.update(part.repaired)
    into.duplicates += part.duplicates


class SpooledLine(str):
    """An error, warning or note line of a worker of :func:`replay_parallel`: the text of the
    :class:`~sysmonx.sources.ReadError` (``str``) with its ``severity``."""

    severity: str

    def __new__(cls, severity: str, text: str) -> "SpooledLine":
        line = super().__new__(cls, text)
        line.severity = severity
        return line


# Worker state of parallel replay (set once per worker process by _init_worker).
_WORKER: dict = {}

#: Parallel replay hands workers groups of consecutive files of about this many bytes.
TASK_BYTES = 8 << 20


def _init_worker(options: ReplayOptions, fmt: Optional[str], tmpdir: str,
                 writer_options: Optional[dict] = None) -> None:
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    engine = FilterEngine(options.config, options.engine_options) \
        if options.config is not None else None
    _WORKER.update(options=options, fmt=fmt, tmpdir=tmpdir, engine=engine,
                   writer_options=writer_options or {})


class _ErrorSpool:
    """A worker's error lines, spooled to a temp file (one JSON string per line) instead of a list,
    so a file with millions of bad records costs disk, not memory. Opened on the first error."""

    def __init__(self, tmpdir: str, index: int) -> None:
        self.tmpdir, self.index = tmpdir, index
        self.path: Optional[str] = None
        self.f = None
        self.count = 0

    def add(self, err) -> None:
        if self.f is None:
            import tempfile
            fd, self.path = tempfile.mkstemp(prefix=f"{self.index:08d}-", suffix=".err",
                                             dir=self.tmpdir)
            self.f = os.fdopen(fd, "w", encoding="ascii", buffering=1 << 16)
        # ASCII, one line whatever the text
        self.f.write(json.dumps([getattr(err, "severity", "error"), str(err)]) + "\n")
        self.count += 1

    def close(self) -> None:
        if self.f is not None:
            self.f.close()


def _replay_group(task: tuple[int, list[str]]):
    """Worker: replay a group of files into one temp file, errors into another.

    Returns ``(output temp path or None, error temp path or None,
    [(path, stats, number of error lines), ...])``."""
    import tempfile
    index, paths = task
    fmt = _WORKER["fmt"]
    out_path = writer = None
    if fmt is not None:
        fd, out_path = tempfile.mkstemp(prefix=f"{index:08d}-", dir=_WORKER["tmpdir"])
        writer = make_writer(fmt, os.fdopen(fd, "wb", buffering=1 << 20),
                             **_WORKER["writer_options"])
    spool = _ErrorSpool(_WORKER["tmpdir"], index)
    results = []
    try:
        for path in paths:
            before = spool.count
            r = Replayer(_WORKER["options"], writer, on_error=spool.add,
                         engine=_WORKER["engine"])
            r.run_file(path)
            results.append((path, r.stats, spool.count - before))
    finally:
        spool.close()
        if writer is not None:
            writer.close()
    return out_path, spool.path, results


def _group_files(files: list[str], jobs: int) -> list[list[str]]:
    """Consecutive groups of files, each about TASK_BYTES (smaller when that leaves too few groups
    to keep ``jobs`` workers busy)."""
    sizes = []
    for f in files:
        try:
            sizes.append(os.path.getsize(f))
        except OSError:
            sizes.append(0)
    target = max(1, min(TASK_BYTES, sum(sizes) // (jobs * 4) or 1))
    groups, cur, acc = [], [], 0
    for f, size in zip(files, sizes):
        cur.append(f)
        acc += size
        if acc >= target:
            groups.append(cur)
            cur, acc = [], 0
    if cur:
        groups.append(cur)
    return groups


def replay_parallel(files: list[str], options: ReplayOptions, fmt: Optional[str],
                    out: Optional[BinaryIO], jobs: int,
                    on_error: Callable[[str], None],
                    on_file_done: Optional[Callable[[str, ReplayStats], None]] = None,
                    writer_options: Optional[dict] = None) -> ReplayStats:
    """Replay ``files`` on ``jobs`` worker processes, output in input order.

    Workers replay groups of consecutive files (about :data:`TASK_BYTES` each) into temporary
    files; the parent copies them to ``out`` in input order as they complete, so the output is
    byte-identical to a one-process replay and memory stays flat. What a format writes once per
    output (CSV header and byte-order mark, an XML root) is written by a writer the parent opens
    on ``out``; workers write the parts with the writer class's ``PART_OPTIONS`` on top of
    ``writer_options`` (see :class:`~sysmonx.sinks.Writer`).

    Args:
        files: input files (already expanded, see :func:`~sysmonx.sources.iter_input_files`).
        fmt: output format name (a key of :data:`sysmonx.sinks.WRITERS`) or ``None`` to count
            only.
        out: binary stream receiving the output (ignored when ``fmt`` is None).
        jobs: worker processes (>= 1).
        on_error: receives each error, warning and note line (``path:offset: message``, a
            :class:`SpooledLine` with its ``severity``) in file order.
        on_file_done: called after each file with its path and the running totals.
        writer_options: keyword options of the writer (e.g. ``{"bom": True}`` for ``csv``).
    Returns:
        merged :class:`ReplayStats`.
    Raises:
        OSError: writing ``out`` failed.
        TimeFormatError: a bad ``options.time_from`` / ``time_to``.
        ValueError: ``options.keep_duplicates`` is False (duplicates are found in one stream).
    """
    import multiprocessing
    import shutil
    import tempfile
    if not options.keep_duplicates:
        raise ValueError("removing duplicate records needs one stream (one process): replay "
                         "with Replayer, or set ReplayOptions(keep_duplicates=True)")
    total = ReplayStats()
    if options.config is not None:
        FilterEngine(options.config, options.engine_options)  # fail here, not in a worker
    for bound in (options.time_from, options.time_to):
        if bound is not None:
            parse_time_bound(bound)
    writer_options = dict(writer_options or {})
    head = None
    part_options = writer_options
    if fmt is not None and out is not None:
        head = make_writer(fmt, out, **writer_options)  # writes what comes once (header ...)
        head.close_stream = False
        part_options = {**writer_options, **getattr(type(head), "PART_OPTIONS", {})}
        out.flush()  # nothing buffered when the workers fork
    groups = _group_files(files, jobs)
    with tempfile.TemporaryDirectory(prefix="sysmonx-replay-") as tmpdir:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(jobs, initializer=_init_worker,
                      initargs=(options, fmt, tmpdir, part_options)) as pool:
            for tmp, err_path, results in pool.imap(_replay_group, enumerate(groups)):
                if tmp is not None:
                    if out is not None:
                        with open(tmp, "rb") as f:
                            shutil.copyfileobj(f, out, 1 << 20)
                    os.unlink(tmp)
                errors = open(err_path, encoding="ascii") if err_path is not None else None
                try:
                    for path, stats, n_errors in results:
                        for _ in range(n_errors):
                            on_error(SpooledLine(*json.loads(errors.readline())))
                        _merge(total, stats)
                        if on_file_done is not None:
                            on_file_done(path, total)
                finally:
                    if errors is not None:
                        errors.close()
                        os.unlink(err_path)
    if head is not None:
        head.close()  # what comes once at the end (</Events> ...); flushes, never closes ``out``
    return total


def event_name(event_id: int) -> str:
    """Label for summaries: the event's task name as Event Viewer shows it, with the config tag,
    e.g. ``Registry value set (RegistryEvent)``; ``Error report`` for 255."""
    ev = CURRENT.events.get(event_id)
    if ev is None:
        return "(not a Sysmon event ID)"
    return f"{ev.template} ({ev.tag})" if ev.tag else ev.template


def default_jobs() -> int:
    """CPU count available to this process (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)
