"""The replay pipeline: sources -> Sysmon filter (RuleName, FieldSizes) -> writer, with stats.

Data flows one way (docs/ARCHITECTURE.md): a source yields :class:`~sysmonx.event.Event`; the
filter stage decides with :class:`~sysmonx.filtering.FilterEngine`; included events go to one
writer. Records that are not Sysmon events never reach the filter: they are passed through or
dropped by option. Bad records are reported through ``on_error`` and never stop the run.

Nothing here grows with the input: statistics are counters per EventID.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterable, Optional

from .config.model import Config
from .event import Event
from .filtering import EngineOptions, FilterEngine
from .schema import CURRENT
from .sinks import WRITERS, writer_class
from .sources import ReadError, iter_input_files, open_source

__all__ = ["ReplayOptions", "ReplayStats", "Replayer", "OutputError", "make_writer", "replay_parallel",
           "OUTPUT_FORMATS"]

#: ``--format`` values (see :data:`sysmonx.sinks.WRITERS`).
OUTPUT_FORMATS = tuple(WRITERS)


def make_writer(fmt: str, stream: BinaryIO):
    """Instantiate the writer for ``fmt`` (a key of :data:`sysmonx.sinks.WRITERS`) on ``stream``.

    Raises:
        ValueError: unknown format.
    """
    return writer_class(fmt)(stream)


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
    """

    config: Optional[Config] = None
    engine_options: EngineOptions = field(default_factory=EngineOptions)
    non_sysmon: str = "drop"
    input_format: Optional[str] = None


@dataclass
class ReplayStats:
    """Counters of one replay: ``files``, ``records`` read, ``sysmon`` events, ``non_sysmon``
    records, ``included``/``excluded`` per EventID, ``errors`` (bad records and files)."""

    files: int = 0
    records: int = 0
    sysmon: int = 0
    non_sysmon: int = 0
    non_sysmon_written: int = 0
    included: Counter = field(default_factory=Counter)
    excluded: Counter = field(default_factory=Counter)
    errors: int = 0


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
    """

    PROGRESS_EVERY = 4096

    def __init__(self, options: ReplayOptions, writer=None,
                 on_error: Optional[Callable[[ReadError], None]] = None,
                 on_progress: Optional[Callable[[str, int], None]] = None,
                 engine: Optional[FilterEngine] = None):
        self.options = options
        self.writer = writer
        self.stats = ReplayStats()
        self._on_error = on_error
        self._on_progress = on_progress
        if engine is None and options.config is not None:
            engine = FilterEngine(options.config, options.engine_options)
        self.engine = engine

    def _error(self, err: ReadError) -> None:
        self.stats.errors += 1
        if self._on_error is not None:
            self._on_error(err)

    def run(self, paths: Iterable[str]) -> ReplayStats:
        """Replay every file under ``paths`` (folders recurse, sorted). Returns the stats.

        Raises:
            FileNotFoundError: a path that does not exist (fatal, before anything is read).
        """
        files = list(iter_input_files(list(paths)))
        for path in files:
            self.run_file(path)
        return self.stats

    def run_file(self, path: str) -> None:
        """Replay one file; unreadable files and bad records become errors, never exceptions."""
        self.stats.files += 1
        try:
            events = open_source(path, self._error, self.options.input_format)
            self._consume(path, events)
        except OutputError:
            raise
        except (OSError, ValueError) as exc:
            self._error(ReadError(path, None, "file", f"cannot read: {exc}"))
        if self._on_progress is not None:
            self._on_progress(path, self.stats.records)

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
        progress = self._on_progress
        every = self.PROGRESS_EVERY
        for ev in events:
            stats.records += 1
            if progress is not None and stats.records % every == 0:
                progress(path, stats.records)
            if not ev.is_sysmon:
                stats.non_sysmon += 1
                if keep_other:
                    stats.non_sysmon_written += 1
                    if write is not None:
                        write(ev)
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


def _merge(into: ReplayStats, part: ReplayStats) -> None:
    into.files += part.files
    into.records += part.records
    into.sysmon += part.sysmon
    into.non_sysmon += part.non_sysmon
    into.non_sysmon_written += part.non_sysmon_written
    into.included.update(part.included)
    into.excluded.update(part.excluded)
    into.errors += part.errors


# Worker state of parallel replay (set once per worker process by _init_worker).
_WORKER: dict = {}

#: Parallel replay hands workers groups of consecutive files of about this many bytes.
TASK_BYTES = 8 << 20


def _init_worker(options: ReplayOptions, fmt: Optional[str], tmpdir: str) -> None:
    engine = FilterEngine(options.config, options.engine_options) \
        if options.config is not None else None
    _WORKER.update(options=options, fmt=fmt, tmpdir=tmpdir, engine=engine)


def _replay_group(task: tuple[int, list[str]]):
    """Worker: replay a group of files into one temp file.

    Returns ``(temp path or None, [(path, stats, error lines), ...])``."""
    import tempfile
    index, paths = task
    fmt = _WORKER["fmt"]
    out_path = writer = None
    if fmt is not None:
        fd, out_path = tempfile.mkstemp(prefix=f"{index:08d}-", dir=_WORKER["tmpdir"])
        writer = make_writer(fmt, os.fdopen(fd, "wb", buffering=1 << 20))
    results = []
    try:
        for path in paths:
            errors: list[str] = []
            r = Replayer(_WORKER["options"], writer,
                         on_error=lambda e, errors=errors: errors.append(str(e)),
                         engine=_WORKER["engine"])
            r.run_file(path)
            results.append((path, r.stats, errors))
    finally:
        if writer is not None:
            writer.close()
    return out_path, results


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
                    on_file_done: Optional[Callable[[str, ReplayStats], None]] = None
                    ) -> ReplayStats:
    """Replay ``files`` on ``jobs`` worker processes, output in input order.

    Workers replay groups of consecutive files (about :data:`TASK_BYTES` each) into temporary
    files; the parent copies them to ``out`` in input order as they complete, so the output is
    byte-identical to a one-process replay and memory stays flat.

    Args:
        files: input files (already expanded, see :func:`~sysmonx.sources.iter_input_files`).
        fmt: output format name (a key of :data:`sysmonx.sinks.WRITERS`) or ``None`` to count
            only.
        out: binary stream receiving the output (ignored when ``fmt`` is None).
        jobs: worker processes (>= 1).
        on_error: receives each error line (``path:offset: message``) in file order.
        on_file_done: called after each file with its path and the running totals.
    Returns:
        merged :class:`ReplayStats`.
    Raises:
        OSError: writing ``out`` failed.
    """
    import multiprocessing
    import shutil
    import tempfile
    total = ReplayStats()
    if options.config is not None:
        FilterEngine(options.config, options.engine_options)  # fail here, not in a worker
    groups = _group_files(files, jobs)
    with tempfile.TemporaryDirectory(prefix="sysmonx-replay-") as tmpdir:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(jobs, initializer=_init_worker, initargs=(options, fmt, tmpdir)) as pool:
            for tmp, results in pool.imap(_replay_group, enumerate(groups)):
                if tmp is not None:
                    if out is not None:
                        with open(tmp, "rb") as f:
                            shutil.copyfileobj(f, out, 1 << 20)
                    os.unlink(tmp)
                for path, stats, errors in results:
                    for line in errors:
                        on_error(line)
                    _merge(total, stats)
                    if on_file_done is not None:
                        on_file_done(path, total)
    return total


def event_name(event_id: int) -> str:
    """``"1 ProcessCreate"``-style label for summaries (tag, or template for 4/16/255)."""
    ev = CURRENT.events.get(event_id)
    if ev is None:
        return str(event_id)
    return ev.tag or ev.template


def default_jobs() -> int:
    """CPU count available to this process (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)
