"""Parallel replay (``--jobs N``): files spread over worker processes, output in input order.

Each worker runs the one loop (:class:`~sysmonx.pipeline.replay.Replayer`) on groups of
consecutive files into temporary files; the parent copies them to the output in input order as
they complete, so the output is byte-identical to a one-process replay and memory stays flat.
The stages a worker runs are stateless (window, gate, filter), which is what lets them fan out;
Sigma correlation needs the one ordered stream, so ``--rules`` replays on one process.
"""

from __future__ import annotations

import json
import os
from typing import IO, Any, BinaryIO, Callable, Optional

from ..core.errors import SinkError
from ..filtering import FilterEngine
from ..stages.window import parse_time_bound
from .replay import ReplayOptions, Replayer, ReplayStats, make_writer

__all__ = ["replay_parallel", "default_jobs", "auto_jobs", "AUTO_BYTES_PER_JOB", "TASK_BYTES",
           "SpooledLine"]

class SpooledLine(str):
    """An error, warning or note line of a worker of :func:`replay_parallel`: the text of the
    :class:`~sysmonx.core.errors.ReadError` (``str``) with its ``severity``."""

    severity: str

    def __new__(cls, severity: str, text: str) -> SpooledLine:
        line = super().__new__(cls, text)
        line.severity = severity
        return line


# Worker state of parallel replay (set once per worker process by _init_worker).
_WORKER: dict[str, Any] = {}
# The engine the parent compiled, inherited by the forked workers (set around the pool only).
_PARENT_ENGINE: dict[str, Any] = {}

#: Parallel replay hands workers groups of consecutive files of about this many bytes.
TASK_BYTES = 8 << 20


def default_jobs() -> int:
    """CPU count available to this process (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


#: ``--jobs 0`` gives each worker at least this many bytes of input: below it, starting a
#: worker (fork, pool, spooling) costs more than the worker saves, so small inputs replay in
#: one process (see docs/PERFORMANCE.md, ``--jobs``).
AUTO_BYTES_PER_JOB = 24 << 20


def auto_jobs(files: list[str], cpus: Optional[int] = None) -> int:
    """Worker processes ``--jobs 0`` uses for ``files``: one per CPU (``cpus``, default
    :func:`default_jobs`), but no more than one per :data:`AUTO_BYTES_PER_JOB` of input, and 1
    (a replay in this process) for inputs smaller than twice that."""
    total = 0
    for f in files:
        try:
            total += os.path.getsize(f)
        except OSError:
            pass
    return max(1, min(cpus or default_jobs(), total // AUTO_BYTES_PER_JOB))


def _prepare_for_fork(options: ReplayOptions, fmt: Optional[str], part_options: dict[str, Any],
                      engine: Optional[FilterEngine]) -> None:
    """Do in the parent what every worker would otherwise do on its first file: discover the
    registries (built-in plugin modules and entry points: ~0.1 s) and build a Replayer and a
    writer once (their lazy imports). Forked workers inherit the result."""
    import io

    from ..core.registry import SINKS, SOURCES, STAGES
    for registry in (SOURCES, STAGES, SINKS):
        registry.discover()
    writer = make_writer(fmt, io.BytesIO(), **part_options) if fmt is not None else None
    Replayer(options, writer, engine=engine)


def _init_worker(options: ReplayOptions, fmt: Optional[str], tmpdir: str,
                 writer_options: Optional[dict[str, Any]] = None) -> None:
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # The parent's compiled engine came with the fork (``_PARENT_ENGINE``): not compiled again.
    engine = _PARENT_ENGINE.get("engine")
    if engine is None and options.config is not None:
        engine = FilterEngine(options.config, options.engine_options)
    _WORKER.update(options=options, fmt=fmt, tmpdir=tmpdir, engine=engine,
                   writer_options=writer_options or {})


class _ErrorSpool:
    """A worker's error lines, spooled to a temp file (one JSON string per line) instead of a list,
    so a file with millions of bad records costs disk, not memory. Opened on the first error."""

    def __init__(self, tmpdir: str, index: int) -> None:
        self.tmpdir, self.index = tmpdir, index
        self.path: Optional[str] = None
        self.f: Optional[IO[str]] = None
        self.count = 0

    def add(self, err: object) -> None:
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


def _replay_group(task: tuple[int, list[str]]
                  ) -> tuple[Optional[str], Optional[str], list[tuple[str, ReplayStats, int]]]:
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
    groups: list[list[str]] = []
    cur: list[str] = []
    acc = 0
    for f, size in zip(files, sizes, strict=True):
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
                    writer_options: Optional[dict[str, Any]] = None) -> ReplayStats:
    """Replay ``files`` on ``jobs`` worker processes, output in input order.

    What a format writes once per output (CSV header and byte-order mark, an XML root) is written
    by a writer the parent opens on ``out``; workers write the parts with the writer class's
    ``PART_OPTIONS`` on top of ``writer_options`` (see :class:`~sysmonx.sinks.base.Writer`).

    Args:
        files: input files (already expanded, see :func:`~sysmonx.sources.iter_input_files`).
        fmt: output format name (a stream format of :data:`sysmonx.sinks.WRITERS`) or ``None``
            to count only.
        out: binary stream receiving the output (ignored when ``fmt`` is None).
        jobs: worker processes (>= 1).
        on_error: receives each error, warning and note line (``path:offset: message``, a
            :class:`SpooledLine` with its ``severity``) in file order.
        on_file_done: called after each file with its path and the running totals.
        writer_options: keyword options of the writer (e.g. ``{"bom": True}`` for ``csv``).
    Returns:
        merged :class:`~sysmonx.pipeline.replay.ReplayStats`.
    Raises:
        SinkError: writing ``out`` failed (an ``OSError``).
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
    engine = None
    if options.config is not None:  # fail here, not in a worker; the workers inherit it
        engine = FilterEngine(options.config, options.engine_options)
    for bound in (options.time_from, options.time_to):
        if bound is not None:
            parse_time_bound(bound)
    writer_options = dict(writer_options or {})
    head = None
    part_options = writer_options
    label = getattr(out, "name", None) or "output"

    def to_out(action: Callable[[], object]) -> None:
        try:
            action()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise SinkError(f"cannot write {label}: {exc.strerror or exc}") from exc

    if fmt is not None and out is not None:
        def open_head() -> None:
            nonlocal head, part_options
            head = make_writer(fmt, out, **writer_options)  # what comes once (header ...)
            head.close_stream = False
            part_options = {**writer_options, **getattr(type(head), "PART_OPTIONS", {})}
            out.flush()  # nothing buffered when the workers fork
        to_out(open_head)
    groups = _group_files(files, jobs)
    with tempfile.TemporaryDirectory(prefix="sysmonx-replay-") as tmpdir:
        ctx = multiprocessing.get_context("fork")
        _prepare_for_fork(options, fmt, part_options, engine)
        _PARENT_ENGINE["engine"] = engine
        try:
            pool = ctx.Pool(jobs, initializer=_init_worker,
                            initargs=(options, fmt, tmpdir, part_options))
        finally:
            _PARENT_ENGINE.clear()
        with pool:
            for tmp, err_path, results in pool.imap(_replay_group, enumerate(groups)):
                if tmp is not None:
                    if out is not None:
                        with open(tmp, "rb") as f:
                            to_out(lambda: shutil.copyfileobj(f, out, 1 << 20))
                    os.unlink(tmp)
                errors = open(err_path, encoding="ascii") if err_path is not None else None
                try:
                    for path, stats, n_errors in results:
                        for _ in range(n_errors):
                            assert errors is not None
                            on_error(SpooledLine(*json.loads(errors.readline())))
                        total.merge(stats)
                        if on_file_done is not None:
                            on_file_done(path, total)
                finally:
                    if errors is not None:
                        errors.close()
                        os.unlink(err_path)  # type: ignore[arg-type]
    if head is not None:
        # what comes once at the end (</Events> ...); flushes, never closes ``out``
        to_out(head.close)
    return total
