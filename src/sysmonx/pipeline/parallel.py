"""Parallel replay (``--jobs N``): files spread over worker processes, output in input order.

Each worker runs the one loop (:class:`~sysmonx.pipeline.replay.Replayer`) on groups of
consecutive files into temporary files; the parent copies them to the output in input order as
they complete, so the output is byte-identical to a one-process replay and memory stays flat.
The stages a worker runs are stateless (window, gate, filter), which is what lets them fan out.

With Sigma rules (``--rules``) the work is split where the state begins::

    worker: read ─► clock ─► window ─► gate ─► filter ─► sigma-match ─► part file (the events
            as the output format writes them) + marks: each event's end offset in the part,
            its time (with correlations), the events that matched and their rule indices
    parent: per part, in input order: sigma-correlate on the marks (the events that matched,
            and the clock of every CLOCK_EVERY-th event, exactly the calls one process makes)
            ─► copy the part's bytes up to each event that has alerts, then the alerts
            (event 1000 numbered in stream order, or --alerts FILE) ─► ... ─► finish()

SigmaAlert events read back (a replayed SysmonX output) pass the workers undecided; the parent
leaves out those this run makes again (over every worker's matches before them, in input
order) and those the selection (``--min-level`` ...) does not keep, as one process's
``sigma-match`` and ``alert-triage`` do; with ``--alerts FILE`` it moves those it keeps to
that file as alerts, as one process's ``sigma-alerts-read-back`` does.

Matching, the costly per-event part, is stateless and runs in the workers; the parent's work
grows with the number of events that matched, not with the input, and it never decodes or
renders an event that did not alert. Output, alerts and the Sigma summary are byte for byte
those of one process (``tests/test_parallel_jobs.py``).

A worker that dies (a crash, the OOM killer) breaks only its group: the group is replayed again
file by file, one at a time; a file that kills its worker again is reported as an error (its
events are missing; ``ReplayStats.lost_files`` names it) and the replay goes on with the other
files. A worker killed in the middle of writing its result is noticed by its exit, not by the
pool (which would wait for the rest of the message forever: :func:`_result`).
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import functools
import gc
import json
import os
import sys
from array import array
from collections import Counter
from typing import IO, Any, BinaryIO, Callable, Generator, Optional, Sequence

from ..core.errors import SinkError
from ..event import SIGMA_ALERT_EVENT_ID, SIGMA_ALERT_PROVIDER, Event
from ..filtering import FilterEngine
from ..filtering.engine import set_note_handler
from ..interfaces import Sink
from ..stages.gate import sigma_channels, sigma_only, sigma_only_channels
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
# The engine the parent compiled and its Sigma detection stage, inherited by the forked workers
# (set while the workers are started only).
_PARENT_ENGINE: dict[str, Any] = {}

#: The time of an event without one in the marks (no time in nanoseconds is this).
_NO_TIME = -(1 << 63)

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
    registries (built-in plugin modules and entry points: ~0.1 s), compile every EventID's
    filter decider (compiled on first use otherwise, in each worker) and store the new plans in
    the plan cache here (once, its notes said by this process, not by every worker), and build
    a Replayer and a writer once (their lazy imports). Forked workers inherit the result."""
    import io

    from ..core.registry import SINKS, SOURCES, STAGES
    for registry in (SOURCES, STAGES, SINKS):
        registry.discover()
    if engine is not None:
        engine.compile_all()
        engine.save_plans()
    writer = make_writer(fmt, io.BytesIO(), **part_options) if fmt is not None else None
    Replayer(options, writer, engine=engine)


def _init_worker(options: ReplayOptions, fmt: Optional[str], tmpdir: str,
                 writer_options: Optional[dict[str, Any]] = None, sigma: bool = False) -> None:
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # the plan cache's notes go to the parent with the task's error lines (a fork inherited
    # the parent's handler, whose counts would stay in this process)
    set_note_handler(_worker_note)
    # The parent's compiled engine came with the fork (``_PARENT_ENGINE``): not compiled again.
    engine = _PARENT_ENGINE.get("engine")
    if engine is None and options.config is not None:
        engine = FilterEngine(options.config, options.engine_options)
    detection = _PARENT_ENGINE.get("detection") if sigma else None
    if sigma and detection is None:  # only a fork brings the parent's compiled rules
        raise RuntimeError("parallel replay with Sigma rules needs forked workers")
    _WORKER.update(options=options, fmt=fmt, tmpdir=tmpdir, engine=engine,
                   writer_options=writer_options or {}, detection=detection)


def _worker_note(text: str) -> None:
    """A worker's plan cache note: a ``note`` line of the task being run (the parent says or
    counts it as its own notes), else stderr."""
    spool = _WORKER.get("spool")
    if spool is not None:
        spool.add(SpooledLine("note", text))
    else:
        sys.stderr.write(f"sysmonx: note: {text}\n")


class _CountingStream:
    """A binary stream that counts the bytes written through it (each event's end offset in
    a worker's part file)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.n = 0
        self.name = getattr(raw, "name", None)

    def write(self, b: bytes) -> int:
        self.n += len(b)
        return self.raw.write(b)

    def flush(self) -> None:
        self.raw.flush()

    def close(self) -> None:
        self.raw.close()


class _Marks(Sink):
    """A worker's sink after ``sigma-match``: writes each event (when there is an output) and
    keeps what the parent needs to correlate: per event its end offset in the part file and,
    with correlations, its time in nanoseconds (:data:`_NO_TIME` for none); per event that
    matched, its position, the event and the indices of the rules it matched; per SysmonX event
    read back (provider ``SysmonX``: a SigmaAlert of an earlier run), its position and the
    event, which the parent decides on (made again by this run, or held back by the
    selection) in input order, as one process does.

    Args:
        writer: the part's writer (on a :class:`_CountingStream`), or ``None`` to count only.
        counter: the writer's stream.
        timed: record every event's time (the detection stage has correlations).
        sigma_only: the channels whose records of other providers the gate passed on for the
            rules only (``--non-sysmon drop``): such a record is counted and its hits kept,
            but it is not written (its end offset is that of the event before it).
    """

    name = "sigma-marks"
    accepts = frozenset({"event", "hits"})

    def __init__(self, writer: Any, counter: Optional[_CountingStream], timed: bool,
                 sigma_only: frozenset[str] = frozenset()) -> None:
        self.writer = writer
        self.sigma_only = sigma_only
        self.counter = counter
        self.timed = timed
        self.ends = array("q")
        self.times = array("q")
        self.hits: list[tuple[int, Event, tuple[int, ...]]] = []
        self.read_back: list[tuple[int, Event]] = []

    def write(self, item: Any) -> None:
        """Write one event (or the event of a :class:`~sysmonx.detection.stages.RuleHits`)."""
        if type(item) is Event:
            event = item
            if event.provider == SIGMA_ALERT_PROVIDER:  # never matched: the parent decides
                self.read_back.append((len(self.ends), event))
        else:  # RuleHits
            event = item.event
            self.hits.append((len(self.ends), event, tuple(r.index for r in item.hits)))
        if self.writer is not None:
            if not (self.sigma_only and sigma_only(event, self.sigma_only)):
                self.writer.write(event)
            self.ends.append(self.counter.n)  # type: ignore[union-attr]
        else:
            self.ends.append(0)
        if self.timed:
            from ..detection.correlation import time_ns
            tc = event.time_created
            t = time_ns(tc) if tc else None
            self.times.append(_NO_TIME if t is None else t)

    def result(self) -> tuple[bytes, bytes, list[tuple[int, Event, tuple[int, ...]]],
                              list[tuple[int, Event]]]:
        """``(end offsets, times, hits, read back)``, the arrays as bytes (``array("q")``)."""
        return self.ends.tobytes(), self.times.tobytes(), self.hits, self.read_back


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


def _stats_fields() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The names of :class:`ReplayStats`' counts, per-key counters and lists."""
    blank = ReplayStats()
    kinds: dict[type, list[str]] = {int: [], Counter: [], list: []}
    for f in dataclasses.fields(ReplayStats):
        kinds[type(getattr(blank, f.name))].append(f.name)  # a new kind of field: KeyError
    return tuple(kinds[int]), tuple(kinds[Counter]), tuple(kinds[list])


_COUNTS, _COUNTERS, _LISTS = _stats_fields()


def _snapshot(stats: ReplayStats) -> dict[str, Any]:
    """``stats``' values now (counters and lists copied), for :func:`_difference`."""
    snap: dict[str, Any] = {n: getattr(stats, n) for n in _COUNTS}
    for n in _COUNTERS:
        snap[n] = dict(getattr(stats, n))
    for n in _LISTS:
        snap[n] = len(getattr(stats, n))
    return snap


def _difference(stats: ReplayStats, before: dict[str, Any]) -> ReplayStats:
    """What ``stats`` (one Replayer's, counts only grow) counted since the :func:`_snapshot`
    ``before``: the stats of the part replayed in between, as a Replayer that replayed that
    part alone has them (a per-key count that did not grow is not in them)."""
    out = ReplayStats()
    for n in _COUNTS:
        setattr(out, n, getattr(stats, n) - before[n])
    for n in _COUNTERS:
        now, was = getattr(stats, n), before[n]
        if now != was:
            grown = getattr(out, n)
            for k, v in now.items():
                d = v - was.get(k, 0)
                if d:
                    grown[k] = d
    for n in _LISTS:
        setattr(out, n, getattr(stats, n)[before[n]:])
    return out


def _replay_group(task: tuple[int, list[str]]) -> tuple[Optional[str], Optional[str], list[
        tuple[str, ReplayStats, int]], Optional[tuple[bytes, bytes, list[Any], list[Any]]]]:
    """Worker: replay a group of files into one temp file, errors into another.

    Returns ``(output temp path or None, error temp path or None,
    [(path, stats, number of error lines), ...], marks)``; ``marks`` is ``None`` without Sigma
    rules, else :meth:`_Marks.result` for the whole group."""
    import tempfile
    index, paths = task
    fmt = _WORKER["fmt"]
    detection = _WORKER.get("detection")
    out_path = writer = counter = None
    if fmt is not None:
        fd, out_path = tempfile.mkstemp(prefix=f"{index:08d}-", dir=_WORKER["tmpdir"])
        raw = os.fdopen(fd, "wb", buffering=1 << 20)
        if detection is not None:
            counter = _CountingStream(raw)
            writer = make_writer(fmt, counter, **_WORKER["writer_options"])  # type: ignore[arg-type]
        else:
            writer = make_writer(fmt, raw, **_WORKER["writer_options"])
    marks = None
    extra: list[Any] = []
    if detection is not None:
        from ..detection.stages import SigmaMatchStage
        opts = _WORKER["options"]
        marks = _Marks(writer, counter, detection.correlation is not None,
                       sigma_only_channels(opts.non_sysmon, None, opts.sigma_channels))
        # SigmaAlert events read back are decided on in the parent, which sees every worker's
        # matches in input order (an alert's events may be in a file another worker read)
        extra.append(SigmaMatchStage(detection, decide=False))
    spool = _WORKER["spool"] = _ErrorSpool(_WORKER["tmpdir"], index)
    results = []
    try:
        # one Replayer for the group, as one process has one for every file (the stages keep
        # nothing from one file to the next that changes the output: the clock check starts
        # again at each file); each file's counters are the difference of the totals
        if marks is not None:
            r = Replayer(_WORKER["options"], None, on_error=spool.add,
                         engine=_WORKER["engine"], sinks=[marks], extra_stages=extra)
        else:
            r = Replayer(_WORKER["options"], writer, on_error=spool.add,
                         engine=_WORKER["engine"])
        before = _snapshot(r.stats)
        r.read_ahead(paths)
        for path in paths:
            lines = spool.count
            r.run_file(path)
            stats = r.stats
            results.append((path, _difference(stats, before), spool.count - lines))
            before = _snapshot(stats)
    finally:
        _WORKER["spool"] = None
        spool.close()
        if writer is not None:
            writer.close()
    return out_path, spool.path, results, marks.result() if marks is not None else None


class _Correlator:
    """The parent's part of a parallel replay with Sigma rules: correlation over the workers'
    marks, in input order, and the alerts written where one process writes them.

    Args:
        detection: the loaded :class:`~sysmonx.detection.stage.DetectionStage` (the one the
            workers inherited: the same rule indices).
        events_writer: a part writer on the output for alerts as events 1000, or ``None``.
        alert_sinks: sinks that take alerts (``--alerts FILE``); when given, alerts go there
            only, as in one process.
        to_out: runs a write to the output, turning an ``OSError`` into a ``SinkError``.
        triage: the alerts to keep (:class:`~sysmonx.detection.triage.AlertTriage`, the
            ``alert-triage`` stage of one process), ``None`` for all; those held back are
            counted in :attr:`held_back`.

    The SigmaAlert events read back (a replayed SysmonX output) are decided on here, where
    every worker's matches arrive in input order: one this run makes again
    (:meth:`~sysmonx.detection.stages.SigmaMatchStage.made_again` over the matches before
    it, whichever worker read them) is left out of the output and counted in
    :attr:`replaced`; then the selection holds back those it does not keep (counted in
    :attr:`held_back` too), as one process's ``sigma-match`` and ``alert-triage`` do. With
    an alerts sink (``--alerts FILE``) those kept go there as alerts
    (:func:`~sysmonx.detection.readback.alert_from_event`, at their place among this run's
    alerts) and leave the output, counted in :attr:`read_back_out`, as one process's
    ``sigma-alerts-read-back`` stage does.
    """

    def __init__(self, detection: Any, events_writer: Any, alert_sinks: Sequence[Sink],
                 to_out: Callable[[Callable[[], object]], None], triage: Any = None) -> None:
        from ..detection.stages import SigmaAlertEvents, SigmaMatchStage
        self.triage = triage
        self.held_back = 0
        #: SigmaAlert events read back and made again by this run (not written)
        self.replaced = 0
        #: SigmaAlert events read back, kept, and written to the alert sinks as alerts
        self.read_back_out = 0
        # the workers' matches, noted in input order (what one process's sigma-match saw)
        self.index = SigmaMatchStage(detection)
        self.detection = detection
        self.compiled = detection.matcher.compiled
        self.timed = detection.correlation is not None
        self.alert_sinks = [s for s in alert_sinks if "alert" in s.accepts]
        self.events_writer = None if self.alert_sinks else events_writer
        self.numbering = SigmaAlertEvents()
        self.to_out = to_out

    def merge(self, part: Optional[str], marks: tuple[bytes, bytes, list[Any], list[Any]],
              out: Optional[BinaryIO]) -> None:
        """Correlate one part's marks and copy the part to ``out`` with the alerts after the
        events that raised them.

        Raises:
            SinkError: writing the output or an alerts sink failed.
        """
        from ..detection.readback import alert_from_event
        from ..detection.triage import is_alert_event
        det = self.detection
        stats = det.stats
        ends = array("q")
        ends.frombytes(marks[0])
        times = array("q")
        times.frombytes(marks[1])
        hits = {k: (event, idx) for k, event, idx in marks[2]}
        read_back = dict(marks[3])
        n = len(ends)
        base = stats.events
        # one process's sigma-match counts (and its clock reads) every event but the SysmonX
        # events read back: ``counted[j]`` is the position in the part of its j-th event
        back = sorted(read_back)
        m = n - len(back)

        def counted_before(k: int) -> int:  # events sigma-match counted before position k
            return k - bisect.bisect_left(back, k) if back else k

        wanted = set(hits) | read_back.keys()
        if self.timed:  # the events whose clock one process reads (DetectionStage.correlate)
            every = det.CLOCK_EVERY
            clock = range((-(base + 1)) % every, m, every)
            if back:
                skip = set(back)
                counted = [k for k in range(n) if k not in skip]
                wanted.update(counted[j] for j in clock)
            else:
                wanted.update(clock)
        points = sorted(wanted)
        compiled = self.compiled
        view: Optional[memoryview] = None
        if part is not None and out is not None and os.path.getsize(part):
            import mmap
            with open(part, "rb") as f:  # the part's bytes mapped, written by slices
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            view = memoryview(mapped)
        pos = 0
        index = self.index
        triage = self.triage
        try:
            for k in points:
                alert_event = read_back.get(k)
                if alert_event is not None:  # read back: made again here, or held back?
                    if alert_event.event_id == SIGMA_ALERT_EVENT_ID and \
                            index.made_again(alert_event):
                        self.replaced += 1
                    elif triage is not None and triage.keeps_item(alert_event) is False:
                        self.held_back += 1
                    elif self.alert_sinks and is_alert_event(alert_event):
                        # kept, to --alerts as an alert (one process's ReadBackAlertStage)
                        read_alert = alert_from_event(alert_event)
                        for sink in self.alert_sinks:
                            _write_sink(sink, read_alert)
                        self.read_back_out += 1
                    else:
                        continue
                    if view is not None:  # its bytes are left out of the output
                        start = ends[k - 1] if k else 0
                        self.to_out(lambda a=pos, b=start: out.write(view[a:b]))  # type: ignore[union-attr,misc]
                        pos = ends[k]
                    continue
                stats.events = base + counted_before(k) + 1
                t: Optional[int] = None
                if self.timed:
                    t = times[k]
                    if t == _NO_TIME:
                        t = None
                hit = hits.get(k)
                if hit is None:
                    alerts = det.correlate_timed(None, [], t)
                else:
                    rules = [compiled[i] for i in hit[1]]
                    index.note(hit[0], rules)
                    alerts = det.correlate_timed(hit[0], rules, t)
                if alerts:
                    if view is not None:
                        end = ends[k]
                        self.to_out(lambda a=pos, b=end: out.write(view[a:b]))  # type: ignore[union-attr,misc]
                        pos = end
                    self.write_alerts(alerts)
            stats.events = base + m
            if view is not None:
                self.to_out(lambda: out.write(view[pos:]))  # type: ignore[union-attr]
        finally:
            if view is not None:
                view.release()
                mapped.close()

    def write_alerts(self, alerts: list[Any]) -> None:
        """Alerts to the alert sinks, else into the output as events 1000 (numbered from 1 in
        stream order, :class:`~sysmonx.detection.stages.SigmaAlertEvents`); those the triage does
        not keep are held back (counted).

        Raises:
            SinkError: a write failed.
        """
        triage = self.triage
        for alert in alerts:
            if triage is not None and not triage.keeps(alert.level, alert.tags):
                self.held_back += 1
                continue
            if self.alert_sinks:
                for sink in self.alert_sinks:
                    _write_sink(sink, alert)
            else:
                w = self.events_writer
                emit = w.write if w is not None else _drop
                self.to_out(lambda a=alert, e=emit: self.numbering.process(a, e))  # type: ignore[misc]

    def finish(self) -> None:
        """End of the stream: the alerts of the correlation windows still open."""
        self.write_alerts(self.detection.finish())


def _drop(item: Any) -> None:
    pass


def _write_sink(sink: Sink, item: Any) -> None:
    try:
        sink.write(item)
    except SinkError:
        raise
    except OSError as exc:
        raise SinkError(f"cannot write {sink.target or sink.name}: {exc.strerror or exc}") \
            from exc


def worker_count(files: list[str], jobs: int) -> int:
    """Worker processes :func:`replay_parallel` starts for ``files`` with ``jobs``: one per
    group of files (:func:`_group_files`), at most ``jobs``."""
    return min(jobs, len(_group_files(files, jobs)))


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


def _describe_exit(code: Optional[int]) -> str:
    """``was killed by signal 9 (SIGKILL)`` / ``exited with status 3`` / ``died``."""
    if code is None:
        return "died"
    if code < 0:
        import signal
        try:
            return f"was killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _exit_code(procs: list[Any]) -> Optional[int]:
    """The non-zero exit code of the dead worker among ``procs`` (negative: the signal), or
    ``None`` when none is known within about 5 s.

    The pool's own manager thread reaps a broken pool's workers too: when it wins the
    ``waitpid``, this thread's ``poll`` sees ``ECHILD`` and ``None`` until that thread has stored
    the status, so a ``None`` is looked at again for a moment instead of being taken as the
    answer (CPython's ``multiprocessing.popen_fork.Popen.poll``)."""
    import time
    deadline = time.monotonic() + 5
    while True:
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        code = next((p.exitcode for p in procs if p.exitcode), None)
        if code is not None or time.monotonic() >= deadline:
            return code
        time.sleep(0.01)


class _Lost:
    """A file whose worker process died twice in a row while replaying it alone."""

    def __init__(self, path: str, how: str) -> None:
        self.path, self.how = path, how


def _stop(executor: Any, wait: bool) -> None:
    """Shut ``executor`` down; without ``wait`` its worker processes are terminated (an
    interrupted or failed replay must not wait for the groups still running).

    A worker terminated while it writes its result leaves part of a message in the pool's
    result pipe, and the pool's manager thread then waits in ``recv`` for the rest forever (and
    the interpreter with it at exit: ``concurrent.futures.process._python_exit`` joins that
    thread). This process holds the pipe's write end too, so once every worker is gone it closes
    its copy: the wait ends with ``EOFError``, which the pool takes as broken and cleans up."""
    procs = list((getattr(executor, "_processes", None) or {}).values())
    if wait:
        executor.shutdown(wait=True)
        return
    # shutdown() drops the executor's references to these two
    manager = getattr(executor, "_executor_manager_thread", None)
    results = getattr(executor, "_result_queue", None)
    executor.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(5)
        if p.is_alive():  # SIGTERM not taken in 5 s
            p.kill()
            p.join(5)
    if manager is None or any(p.is_alive() for p in procs):
        return
    manager.join(0.5)
    if manager.is_alive():
        writer = getattr(results, "_writer", None)
        if writer is not None:
            writer.close()
        manager.join(5)


#: How often a wait for a worker's result looks whether a worker died (seconds).
_POLL_S = 0.2
#: After a worker died, how long the pool is given to report it itself (seconds).
_GRACE_S = 1.0


def _result(fut: Any, executor: Any) -> Any:
    """``fut.result()`` of a task of ``executor``, but never a wait for a dead worker.

    CPython's pool reads a worker's result before it looks at the workers' exit: a worker the
    kernel kills (the OOM killer: SIGKILL) in the middle of writing its result leaves part of
    a message in the result pipe, and the pool's manager thread then waits in ``recv`` for the
    rest forever (this process holds the pipe's write end too), so the future never ends. This
    wait looks at the workers' sentinels every :data:`_POLL_S`: once one has ended (a worker
    ends only at shutdown), the pool gets :data:`_GRACE_S` to report it, then the pool is taken
    as broken.

    Raises:
        BrokenProcessPool: the pool reported a dead worker, or a worker ended and the task did
            not complete (the caller stops the pool with :func:`_stop` without waiting)."""
    from concurrent.futures import TimeoutError as FutureTimeout
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing.connection import wait
    procs = list((getattr(executor, "_processes", None) or {}).values())
    sentinels = [p.sentinel for p in procs]
    while True:
        try:
            return fut.result(timeout=_POLL_S)
        except FutureTimeout:
            pass
        if sentinels and wait(sentinels, timeout=0):
            try:
                return fut.result(timeout=_GRACE_S)
            except FutureTimeout:
                raise BrokenProcessPool("a worker process ended before its task did") from None


def _ordered_results(groups: list[list[str]], jobs: int, initargs: tuple[Any, ...]
                     ) -> Generator[tuple[list[str], Any], None, None]:
    """The workers' results, group after group in input order: ``(paths, result of
    _replay_group)``, or ``([path], _Lost)`` for a file that killed its worker twice.

    A dead worker breaks the pool (every group not finished fails with it): the first group
    not yet returned is replayed again file by file, one file at a time on one fresh worker
    (so a second death names its file), then the rest go on a fresh pool."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    ctx = multiprocessing.get_context("fork")
    pending = list(enumerate(groups))
    while pending:
        ex = ProcessPoolExecutor(min(jobs, len(pending)), mp_context=ctx,
                                 initializer=_init_worker, initargs=initargs)
        ok = False
        try:
            futures = [ex.submit(_replay_group, task) for task in pending]
            done = 0
            broken = False
            for fut in futures:
                try:
                    result = _result(fut, ex)
                except BrokenProcessPool:
                    broken = True
                    break
                yield pending[done][1], result
                done += 1
            ok = not broken  # a broken pool is stopped, not waited for (its manager may hang)
        finally:
            _stop(ex, wait=ok)
        if done == len(pending):
            return
        index, paths = pending[done]
        pending = pending[done + 1:]
        for path in paths:  # alone, one at a time: a second death names the file
            one = ProcessPoolExecutor(1, mp_context=ctx, initializer=_init_worker,
                                      initargs=initargs)
            ok = False
            try:
                fut = one.submit(_replay_group, (index, [path]))
                procs = list((getattr(one, "_processes", None) or {}).values())
                alone: Any
                try:
                    alone = _result(fut, one)
                except BrokenProcessPool:
                    alone = _Lost(path, _describe_exit(_exit_code(procs)))
                ok = not isinstance(alone, _Lost)
            finally:
                _stop(one, wait=ok)
            yield [path], alone


#: The parent copies a worker's part to the output by this many bytes at a time.
_COPY_BYTES = 1 << 20


def _copy_part(path: str, out: BinaryIO, buffer: bytearray) -> None:
    """Copy the file ``path`` to ``out`` through ``buffer``, reused for every read (a fresh
    megabyte per read, as ``shutil.copyfileobj`` takes, costs the parent a page fault per 4 KB
    of output). ``out.write`` must not keep what it is given past the call (the contract of
    :class:`io.BufferedIOBase`)."""
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            out.write(view[:n])


def replay_parallel(files: list[str], options: ReplayOptions, fmt: Optional[str],
                    out: Optional[BinaryIO], jobs: int,
                    on_error: Callable[[str], None],
                    on_file_done: Optional[Callable[[str, ReplayStats], None]] = None,
                    writer_options: Optional[dict[str, Any]] = None, *,
                    detection: Any = None, alert_sinks: Sequence[Sink] = ()) -> ReplayStats:
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
        detection: a loaded :class:`~sysmonx.detection.stage.DetectionStage`: the workers match
            (stateless), this process correlates over their results in input order and writes
            the alerts where one process writes them (module docstring); its counters and
            summary end as one process's. Needs no enrichment (one stream: see
            :func:`~sysmonx.stages.enrich.enrichment_wanted`).
        alert_sinks: sinks for the alerts (``--alerts FILE``); without one that accepts
            alerts, they go into ``out`` as events 1000. Not closed here.
    Returns:
        merged :class:`~sysmonx.pipeline.replay.ReplayStats`.
    A worker that dies is not fatal: its files are replayed again one at a time, and a file
    whose worker dies again is an error line (``PATH: the worker process replaying this file
    was killed by signal 9 (SIGKILL); its events are not in the output``), counted in
    ``errors`` and listed in ``lost_files``; the other files' output is complete. A worker
    killed while it writes its result ends the same way, never a hang.

    Raises:
        SinkError: writing ``out`` (or an alerts sink) failed (an ``OSError``).
        TimeFormatError: a bad ``options.time_from`` / ``time_to``.
        ValueError: ``options.keep_duplicates`` is False (duplicates are found in one stream).
    """
    import tempfile
    if not options.keep_duplicates:
        raise ValueError("removing duplicate records needs one stream (one process): replay "
                         "with Replayer, or set ReplayOptions(keep_duplicates=True)")
    total = ReplayStats()
    if detection is not None:  # the workers' gates pass the records the rules read
        options = dataclasses.replace(options, sigma_channels=sigma_channels(detection))
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
        except (BrokenPipeError, SinkError):
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
    correlator = None
    if detection is not None:
        alerts_writer = None
        if fmt is not None and out is not None:
            alerts_writer = make_writer(fmt, out, **{**part_options, "close_stream": False})
        correlator = _Correlator(detection, alerts_writer, alert_sinks, to_out,
                                 options.triage)
    groups = _group_files(files, jobs)
    buffer = bytearray(_COPY_BYTES)  # the parts' bytes pass through this one buffer
    with tempfile.TemporaryDirectory(prefix="sysmonx-replay-") as tmpdir:
        _prepare_for_fork(options, fmt, part_options, engine)
        _PARENT_ENGINE.update(engine=engine, detection=detection)
        # what the workers inherit is left out of the collector's walks (the parent's and the
        # workers'): a worker's full collection would otherwise visit, and so copy, every page
        # of inherited objects (CPython's advice for gc.freeze before fork); thawed after,
        # unless the caller had frozen objects of its own
        thaw = gc.get_freeze_count() == 0
        gc.freeze()
        try:
            # with rules, the parent's _Correlator selects the SigmaAlert events read back too,
            # after it decided which ones this run makes again (as one process does)
            worker_options = (dataclasses.replace(options, triage=None)
                              if detection is not None else options)
            initargs = (worker_options, fmt, tmpdir, part_options, detection is not None)
            # closing: a failed output or Ctrl-C stops the workers at once
            with contextlib.closing(_ordered_results(groups, jobs, initargs)) as ordered:
                for paths, result in ordered:
                    if isinstance(result, _Lost):
                        total.files += 1
                        total.errors += 1
                        total.lost_files.append(result.path)
                        on_error(SpooledLine("error", f"{result.path}: the worker process replaying "
                                             f"this file {result.how}; its events are not in the "
                                             "output"))
                        if on_file_done is not None:
                            on_file_done(result.path, total)
                        continue
                    tmp, err_path, results, marks = result
                    if len(results) != len(paths):  # cannot happen: a worker returns every file
                        raise RuntimeError("parallel replay: a worker returned a short result")
                    if tmp is not None or marks is not None:
                        if correlator is not None and marks is not None:
                            correlator.merge(tmp, marks, out)
                        elif tmp is not None and out is not None:
                            to_out(functools.partial(_copy_part, tmp, out, buffer))
                        if tmp is not None:
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
                            os.unlink(err_path)
        finally:
            if thaw:
                gc.unfreeze()
            _PARENT_ENGINE.clear()
    if correlator is not None:
        correlator.finish()  # windows still open at the end, as Replayer.finish
        total.alerts_held_back += correlator.held_back
        total.alerts_replaced += correlator.replaced
        total.alerts_read_back_out += correlator.read_back_out
    if head is not None:
        # what comes once at the end (</Events> ...); flushes, never closes ``out``
        to_out(head.close)
    return total
