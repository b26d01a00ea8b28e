"""Replay: recorded logs through the one loop.

:func:`replay_stages` is the stage list of a replay (and of every ``--jobs`` worker)::

    [duplicates] -> clock-check -> [time-window] -> [tamper] -> sysmon-gate -> [enrich]
    -> filter -> [--stage ...] -> [sigma-match -> sigma-correlate -> [sigma-only-drop]]
    -> [alert-triage] -> [sigma-alert-events] -> [sigma-alerts-read-back] -> [enrich-strip]
    -> [alerts-only]

``sigma-alerts-read-back`` (a run with an alerts output, ``--alerts FILE``) sends the SigmaAlert
events read back that the run keeps to that output as alerts; ``alerts-only``
(``--alerts-only``) leaves only SigmaAlert events in the event outputs.

With ``--non-sysmon drop``, the gate still passes the records of the channels loaded Sigma
rules are written for (``service: security`` ...); ``sigma-only-drop`` drops them after the
Sigma stages (:mod:`sysmonx.stages.gate`).

:class:`Replayer` puts it together with :class:`~sysmonx.sources.recorded.RecordedLogs` and the
sinks in a :class:`~sysmonx.pipeline.loop.Pipeline`, and gathers the counters of the stages into
:class:`ReplayStats`. Sinks run under the ``fatal`` policy: a failing output stops the replay
with one :class:`~sysmonx.core.errors.SinkError`. Nothing grows with the input: statistics are
counters per EventID.
"""

from __future__ import annotations

import gc
import sys
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Optional, Sequence

from ..configmodel import Config
from ..core.errors import ReadError
from ..filtering import EngineOptions, FilterEngine
from ..filtering.stage import FilterStage
from ..interfaces import Stage
from ..sinks import writer_class
from ..sources import iter_input_files
from ..sources.recorded import ReadAhead, RecordedLogs
from ..stages.clock import ClockCheckStage
from ..stages.dedup import DuplicateStage
from ..stages.enrich import EnrichStage, enrichment_wanted, with_enrichment
from ..stages.gate import SigmaOnlyDrop, SysmonGate, sigma_only_channels
from ..stages.logtamper import LogTamperStage
from ..stages.window import TimeWindowStage
from .fanout import FanOut
from .loop import Pipeline

#: The top package's name (``sysmonx``): :meth:`Replayer._stage_named` looks modules up by it.
_PACKAGE = __name__.split(".", 1)[0]

__all__ = ["ReplayOptions", "ReplayStats", "Replayer", "make_writer", "replay_stages",
           "detection_stages", "replay_collector", "REPLAY_GC_THRESHOLD0"]

#: The cyclic garbage collector's first threshold while ``sysmonx replay`` runs (Python's
#: default 700). A replay allocates containers that reference counting frees (events, batches,
#: the config's filters, the filter's memo entries): the young collections of a replay of the
#: corpus EVTX found nothing to collect (0 objects in each of 13 with SwiftOnSecurity's config,
#: 32 with sysmon-modular's) yet took 1-2 ms of its ~30-50 ms. At this threshold a small replay
#: runs none; cyclic garbage (error paths) waits for at most this many net allocations, as in
#: a live run (:data:`~sysmonx.pipeline.live.GC_THRESHOLD0`).
REPLAY_GC_THRESHOLD0 = 100_000


@contextmanager
def replay_collector(threshold0: int = REPLAY_GC_THRESHOLD0) -> Iterator[None]:
    """Within the block, the collector's first threshold is at least ``threshold0`` (the other
    two unchanged); the previous thresholds are restored at its end (``sysmonx replay`` runs
    its whole command in it, config load included: see :data:`REPLAY_GC_THRESHOLD0`).
    Process-wide, as :func:`gc.set_threshold` is."""
    old = gc.get_threshold()
    if old[0] < threshold0:
        gc.set_threshold(threshold0, old[1], old[2])
    try:
        yield
    finally:
        gc.set_threshold(*old)


def make_writer(fmt: str, stream: BinaryIO, **options: Any) -> Any:
    """Instantiate the writer for ``fmt`` (a stream format of :data:`sysmonx.sinks.WRITERS`)
    on ``stream`` with the writer's keyword ``options`` (e.g. ``bom=True`` for ``csv``).

    Raises:
        ValueError: unknown format.
        TypeError: an option the writer does not take.
    """
    return writer_class(fmt)(stream, **options)


@dataclass
class ReplayOptions:
    """What a replay does.

    Attributes:
        config: loaded Sysmon config, or ``None`` to pass every Sysmon event through unchanged
            (conversion only: no filtering, RuleName kept as recorded).
        engine_options: named choices for uncertain Sysmon behaviours.
        non_sysmon: ``pass`` (write records of other providers unchanged) or ``drop`` (write
            none; those of the channels loaded Sigma rules read still meet the rules).
        input_format: force a reader (a name of :data:`sysmonx.sources.FORMATS`) or ``None``
            to detect per file.
        time_from, time_to: keep only records whose System time (``Event.time_created``, never
            event data such as ``UtcTime``) is ``>= time_from`` and ``< time_to``; ISO 8601 text
            as :func:`~sysmonx.stages.window.parse_time_bound` takes it, or ``None`` for no bound.
            The window applies to every record, Sysmon or not, before the filter. Records
            without a (readable) time are kept and counted in :attr:`ReplayStats.untimed`.
        window_time: which time ``time_from``/``time_to`` compare: ``system`` (System
            ``TimeCreated``, the default) or ``utctime`` (a Sysmon event's own ``UtcTime``,
            falling back to System time for records without one), for exports whose System
            times are local times labelled UTC (a warning says so, see
            :class:`~sysmonx.stages.clock.ClockCheckStage`).
        keep_duplicates: write every record read, even one read before (same provider,
            computer, channel, EventRecordID and System time to the second, see
            :class:`~sysmonx.stages.dedup.DuplicateFilter`); by default such repeats are
            dropped and counted in :attr:`ReplayStats.duplicates`. Removing them needs the one
            stream of a single process: :func:`~sysmonx.pipeline.parallel.replay_parallel`
            requires ``True``.
        enrich: write the SysmonX enrichment fields (``--enrich``; they are computed anyway,
            without being written, when the config or the Sigma rules use one; see
            :mod:`sysmonx.stages.enrich`). The ancestry comes from the process tree the replayed
            log describes (its events 1).
        enrich_fields: enrichment fields to compute (never written) whatever the config and
            rules use: the workbench asks for those of every config it compares, so each
            config is decided on the values a replay with it would compute (computing a
            field more changes no other field's value).
        tamper: run the ``tamper`` stage (:class:`~sysmonx.stages.logtamper.LogTamperStage`)
            before the non-Sysmon gate: TamperFinding events (201) for Sysmon stopped,
            reconfigured or unloaded, logs cleared, record and time gaps. Needs the one stream.
        triage: keep only these alerts (``--min-level``, ``--technique``, ``--tag``:
            :class:`~sysmonx.detection.triage.AlertTriage`), the run's and the SigmaAlert
            events read back; ``None`` keeps every alert. Applied by the ``alert-triage``
            stage after the Sigma stages (the ``--jobs`` parent applies it to the alerts it
            makes).
        alerts_only: write only SigmaAlert events (1000) to the event outputs
            (``--alerts-only``: :class:`~sysmonx.stages.alertsonly.AlertsOnlyStage`, the last
            stage); everything before it runs as usual.
        sigma_channels: channels (lower case) whose records of other providers go on to Sigma
            detection with ``non_sysmon="drop"`` (:func:`~sysmonx.stages.gate.sigma_channels`),
            on top of those of the ``detection`` given to :func:`replay_stages`: set for the
            workers of a parallel replay, which match without that stage.
    """

    config: Optional[Config] = None
    engine_options: EngineOptions = field(default_factory=EngineOptions)
    non_sysmon: str = "drop"
    input_format: Optional[str] = None
    time_from: Optional[str] = None
    time_to: Optional[str] = None
    window_time: str = "system"
    keep_duplicates: bool = False
    enrich: bool = False
    tamper: bool = False
    enrich_fields: frozenset[str] = frozenset()
    triage: Any = None
    alerts_only: bool = False
    sigma_channels: frozenset[str] = frozenset()


@dataclass
class ReplayStats:
    """Counters of one replay: ``files``, ``records`` read, ``sysmon`` events, ``non_sysmon``
    records, ``included``/``excluded`` per EventID, ``errors`` (bad records and files).

    With a time window (``--from`` / ``--to``): ``out_of_window`` records were outside it and went
    no further (they are in ``records`` only); ``untimed`` records had no readable System time and
    were kept (they go on to the filter and are counted there as usual).

    ``sigma_alerts``: SysmonX SigmaAlert events (1000) read back from the input (SysmonX
    events, in ``records``, not in ``sysmon`` or ``non_sysmon``); ``alerts_replaced``: those
    dropped because their rule is one of this run's ``--rules`` (which makes them again from
    the events); ``alerts_held_back``: alerts held back by ``--min-level`` / ``--technique`` /
    ``--tag`` (this run's and read back); ``alerts_read_back_out``: SigmaAlert events read back
    and kept that went to the alerts output (``--alerts FILE``) as alerts, not into the event
    stream; ``not_alerts``: events ``--alerts-only`` did not write.
    ``non_sysmon_sigma``: records of other providers checked by Sigma rules written for their
    channel, not written (``--non-sysmon drop``; part of ``non_sysmon``).

    ``duplicates``: records dropped as repeats of a record read before (they are in
    ``records`` only). ``raw_records``: records the loop's raw path handled without an Event
    (shown by ``SYSMONX_DEBUG=1 sysmonx replay``). ``warnings``: warning lines (said once per
    file; nothing was lost).
    ``repaired``: records read after undoing a known export fault, per fault (``{"entity
    references without ';'": 16}``); they are read in full and counted in ``records`` as
    usual."""

    files: int = 0
    records: int = 0
    sysmon: int = 0
    non_sysmon: int = 0
    non_sysmon_written: int = 0
    non_sysmon_sigma: int = 0
    included: Counter[int] = field(default_factory=Counter)
    excluded: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    out_of_window: int = 0
    untimed: int = 0
    warnings: int = 0
    repaired: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    sigma_alerts: int = 0
    alerts_replaced: int = 0
    alerts_held_back: int = 0
    alerts_read_back_out: int = 0
    not_alerts: int = 0
    #: records the loop's raw path wrote or counted without making an Event
    #: (``Pipeline.raw_records``; JSON-lines replays of EVTX with the compiled extension). How,
    #: not what: left out of comparisons (two replays that did the same compare equal)
    raw_records: int = field(default=0, compare=False)
    #: files whose worker process died replaying them alone, twice (``--jobs``: their
    #: events are not in the output)
    lost_files: list[str] = field(default_factory=list)

    def merge(self, part: ReplayStats) -> None:
        """Add ``part``'s counters to these."""
        self.files += part.files
        self.records += part.records
        self.sysmon += part.sysmon
        self.non_sysmon += part.non_sysmon
        self.non_sysmon_written += part.non_sysmon_written
        self.non_sysmon_sigma += part.non_sysmon_sigma
        self.included.update(part.included)
        self.excluded.update(part.excluded)
        self.errors += part.errors
        self.out_of_window += part.out_of_window
        self.untimed += part.untimed
        self.warnings += part.warnings
        self.repaired.update(part.repaired)
        self.duplicates += part.duplicates
        self.sigma_alerts += part.sigma_alerts
        self.alerts_replaced += part.alerts_replaced
        self.alerts_held_back += part.alerts_held_back
        self.alerts_read_back_out += part.alerts_read_back_out
        self.not_alerts += part.not_alerts
        self.raw_records += part.raw_records
        self.lost_files.extend(part.lost_files)


def detection_stages(detection: Any, alerts_to_stream: bool,
                     triage: Any = None,
                     sigma_only: frozenset[str] = frozenset()) -> list[Stage]:
    """The Sigma stages for a loaded :class:`~sysmonx.detection.stage.DetectionStage`: match,
    correlate, (``sigma_only``: channels of :func:`~sysmonx.stages.gate.sigma_only_channels`)
    ``sigma-only-drop`` after ``sigma-correlate``, which writes the event on, (``triage``, an
    :class:`~sysmonx.detection.triage.AlertTriage`) the alerts it keeps, and
    (``alerts_to_stream``) alerts as event 1000 in the event stream."""
    from ..detection.stages import (AlertTriageStage, SigmaAlertEvents, SigmaCorrelateStage,
                                    SigmaMatchStage)
    out: list[Stage] = [SigmaMatchStage(detection), SigmaCorrelateStage(detection)]
    if sigma_only:  # records the rules read, not written (--non-sysmon drop)
        out.append(SigmaOnlyDrop(sigma_only))
    if triage is not None:
        out.append(AlertTriageStage(triage))
    if alerts_to_stream:
        out.append(SigmaAlertEvents())
    return out


def replay_stages(options: ReplayOptions, *, engine: Optional[FilterEngine] = None,
                  detection: Any = None, alerts_to_stream: bool = True,
                  extra: Sequence[Stage] = (),
                  before_filter: Sequence[Stage] = (),
                  at_start: Sequence[Stage] = (),
                  alerts_sink: bool = False) -> list[Stage]:
    """The stages of a replay, in order (module docstring). ``alerts_sink``: the run has an
    output that takes alerts (``--alerts FILE``): the SigmaAlert events read back that it keeps
    go there (``sigma-alerts-read-back``), not into the event stream. ``extra`` run right after the
    filter; ``before_filter`` right before it, after the enrichment (they see every Sysmon
    event the filter is about to decide, with the fields the filter decides on); ``at_start``
    first, where the duplicate check runs (they see every record read).

    Raises:
        TimeFormatError: a bad ``time_from`` / ``time_to``.
        ValueError: a bad ``non_sysmon`` or ``window_time``.
    """
    if options.window_time not in ("system", "utctime"):
        raise ValueError(f"window_time must be 'system' or 'utctime', not "
                         f"{options.window_time!r}")
    stages: list[Stage] = list(at_start)
    if not options.keep_duplicates:
        stages.append(DuplicateStage())
    stages.append(ClockCheckStage(options.window_time))
    if options.time_from is not None or options.time_to is not None:
        stages.append(TimeWindowStage(options.time_from, options.time_to, options.window_time))
    if options.tamper:
        stages.append(LogTamperStage())
    gate = SysmonGate(options.non_sysmon,
                      sigma_only_channels(options.non_sysmon, detection, options.sigma_channels))
    stages.append(gate)
    stages.append(FilterStage(options.config, options.engine_options, without_config="pass",
                              engine=engine))
    stages.extend(extra)
    if detection is not None:
        stages.extend(detection_stages(detection, alerts_to_stream, options.triage,
                                       gate.sigma_channels))
    elif options.triage is not None:  # SigmaAlert events read back (or a --jobs worker's)
        from ..detection.stages import AlertTriageStage
        stages.append(AlertTriageStage(options.triage))
    if alerts_sink:
        from ..detection.readback import ReadBackAlertStage
        stages.append(ReadBackAlertStage())
    wanted = enrichment_wanted(options.config, detection, options.enrich) \
        | options.enrich_fields
    if wanted:
        stages = with_enrichment(stages, EnrichStage(wanted, keep=options.enrich))
    if before_filter:
        at = next(i for i, s in enumerate(stages) if isinstance(s, FilterStage))
        stages[at:at] = list(before_filter)
    if options.alerts_only:
        from ..stages.alertsonly import AlertsOnlyStage
        stages.append(AlertsOnlyStage())
    return stages


class Replayer:
    """A replay pipeline: recorded logs -> :func:`replay_stages` -> sinks, on the one loop.

    Args:
        options: :class:`ReplayOptions`.
        writer: the event output (a sink, e.g. from :func:`make_writer`), or ``None`` to only
            count. Not closed here: the caller owns it.
        on_error: called with each :class:`~sysmonx.core.errors.ReadError`.
        on_progress: called as ``on_progress(path, records_so_far)`` every few thousand records
            and at each file end (for a progress bar).
        engine: an already compiled :class:`~sysmonx.filtering.FilterEngine` for
            ``options.config`` (compiled here when omitted).
        sinks: more outputs (an alerts file ...), also owned by the caller.
        detection: a loaded :class:`~sysmonx.detection.stage.DetectionStage`; its alerts go to
            a sink that accepts alerts, else into the event stream as event 1000.
        extra_stages: stages run after the filter (``--stage``).
        before_filter: stages run right before the filter, after the enrichment (the
            workbench's counters: they see what the filter decides on).
        at_start: stages run first, before the duplicate check (``--dask`` workers: every
            record read).
    Raises:
        TimeFormatError: ``options.time_from`` / ``time_to`` is not an ISO 8601 time.
    """

    def __init__(self, options: ReplayOptions, writer: Any = None,
                 on_error: Optional[Callable[[ReadError], None]] = None,
                 on_progress: Optional[Callable[[str, int], None]] = None,
                 engine: Optional[FilterEngine] = None, *, sinks: Sequence[Any] = (),
                 detection: Any = None, extra_stages: Sequence[Stage] = (),
                 on_file_done: Optional[Callable[[str], None]] = None,
                 before_filter: Sequence[Stage] = (),
                 at_start: Sequence[Stage] = ()) -> None:
        self.options = options
        self.writer = writer
        all_sinks = ([writer] if writer is not None else []) + list(sinks)
        self.fanout = FanOut.build(all_sinks, "fatal")
        alerts_sink = self.fanout.accepts("alert")
        to_stream = detection is not None and not alerts_sink
        self.stages = replay_stages(options, engine=engine, detection=detection,
                                    alerts_to_stream=to_stream, extra=extra_stages,
                                    before_filter=before_filter, at_start=at_start,
                                    alerts_sink=alerts_sink)
        self.pipeline = Pipeline(self.stages, self.fanout, on_error=on_error)  # type: ignore[arg-type]
        self.on_progress = on_progress
        self.on_file_done = on_file_done
        self._ahead: Optional[ReadAhead] = None  # see read_ahead
        self.files = 0
        self.records = 0
        self._gate: SysmonGate = self._stage(SysmonGate)
        self._filter: FilterStage = self._stage(FilterStage)
        self._window: Optional[TimeWindowStage] = self._stage(TimeWindowStage)
        self._dup: Optional[DuplicateStage] = self._stage(DuplicateStage)
        # the detection stages by the name of their class: a replay without them does not
        # import their modules (detection.alerts, triage ...: about 1.5 ms of CPU in its first
        # pass, before any record is read)
        self._read_back: Any = self._stage_named("detection.readback", "ReadBackAlertStage")
        self._alerts_only: Any = self._stage_named("stages.alertsonly", "AlertsOnlyStage")
        self._match: Any = self._stage_named("detection.stages", "SigmaMatchStage")
        self._triage: Any = self._stage_named("detection.stages", "AlertTriageStage")
        # one stats object, its per-EventID counters those of the stages (read per file by
        # callers: refreshing it costs a few assignments)
        self._stats = ReplayStats(included=self._filter.included, excluded=self._filter.excluded,
                                  repaired=self.pipeline.repaired)

    @property
    def engine(self) -> Optional[FilterEngine]:
        """The compiled filter (``None`` without a config)."""
        flt: FilterStage = self._stage(FilterStage)
        return flt.engine

    def _stage(self, cls: type) -> Any:
        for s in self.stages:
            if isinstance(s, cls):
                return s
        return None

    def _stage_named(self, module: str, name: str) -> Any:
        """:meth:`_stage` of the class ``name`` of the module ``module`` (below ``sysmonx``),
        ``None`` when that module is not imported: then no stage of that class (or of a class
        derived from it) can be in the list, and the module is not imported for nothing."""
        mod = sys.modules.get(f"{_PACKAGE}.{module}")
        return None if mod is None else self._stage(getattr(mod, name))

    @property
    def stats(self) -> ReplayStats:
        """The counters so far (one object, kept up to date; its per-EventID and repair
        counters are the live ones)."""
        st = self._stats
        st.files, st.records = self.files, self.records
        st.errors, st.warnings = self.pipeline.errors, self.pipeline.warnings
        gate, win, dup = self._gate, self._window, self._dup
        if dup is not None:
            st.duplicates = dup.dedup.dropped
        st.sysmon, st.non_sysmon = gate.sysmon, gate.non_sysmon
        st.non_sysmon_written = gate.non_sysmon_written
        st.sigma_alerts = gate.sigma_alerts
        if self._match is not None:
            st.alerts_replaced = self._match.replaced
        if self._triage is not None:
            st.alerts_held_back = self._triage.held_back + self._triage.held_back_read
        st.non_sysmon_sigma = gate.non_sysmon_sigma
        if self._read_back is not None:
            st.alerts_read_back_out = self._read_back.moved
        if self._alerts_only is not None:
            st.not_alerts = self._alerts_only.dropped
        st.raw_records = self.pipeline.raw_records
        flt = self._filter
        st.included, st.excluded = flt.included, flt.excluded
        if win is not None:
            st.out_of_window, st.untimed = win.out_of_window, win.untimed
        return st

    def run(self, paths: Iterable[str]) -> ReplayStats:
        """Replay every file under ``paths`` (folders recurse, sorted). Returns the stats.

        Raises:
            FileNotFoundError: a path that does not exist (fatal, before anything is read).
            SinkError: an output failed.
        """
        files = list(iter_input_files(list(paths), self.pipeline._error))
        self.read_ahead(files)
        for path in files:
            self.run_file(path)
        return self.stats

    def read_ahead(self, files: Sequence[str]) -> None:
        """The files the next :meth:`run_file` calls read, in that order: as each is begun,
        the kernel is told to read it and the next ones from disk meanwhile
        (:class:`~sysmonx.sources.recorded.ReadAhead`, up to 64 MiB ahead). Changes no output;
        a file read out of this order is still read, and the look-ahead goes on from it."""
        self._ahead = ReadAhead(files)

    def run_file(self, path: str) -> None:
        """Replay one file; unreadable files and bad records become errors, never exceptions.

        Raises:
            SinkError: an output failed (``OutputClosed``: its reader went away).
        """
        base = self.records
        if self._ahead is not None:
            self._ahead.before(path)

        def progress(p: str, n: int) -> None:
            self.records = base + n
            if self.on_progress is not None:
                self.on_progress(p, self.records)

        source = RecordedLogs([path], self.options.input_format, expanded=True,
                              on_progress=progress)
        try:
            self.pipeline.run(source, finish=False)
        finally:
            self.files += source.files
            self.records = base + source.records
        if self._window is not None:  # --window-time utctime: records held for the file
            self._window.end_file(self.pipeline.emitter_after(self._window))
        if self.on_file_done is not None:
            self.on_file_done(path)

    def finish(self) -> None:
        """End of the stream: the stages emit what they still hold (open correlation windows)
        into the sinks."""
        self.pipeline.finish()

    def flush(self) -> None:
        """Flush the sinks.

        Raises:
            SinkError: buffered output could not be written.
        """
        self.fanout.flush()

    def close(self) -> None:
        """Close the sinks (the writer's closing tag, flush).

        Raises:
            SinkError: buffered output could not be written.
        """
        self.pipeline.close()


def event_name(event_id: int) -> str:
    """Label for summaries: the event's task name as Event Viewer shows it, with the config tag,
    e.g. ``Registry value set (RegistryEvent)``; ``Error report`` for 255."""
    from ..schema import CURRENT
    ev = CURRENT.events.get(event_id)
    if ev is None:
        return "(not a Sysmon event ID)"
    return f"{ev.template} ({ev.tag})" if ev.tag else ev.template
