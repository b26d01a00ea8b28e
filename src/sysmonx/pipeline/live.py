"""The live sensor on the one loop: ``sysmonx run``, ``run --follow`` and console mode (``-t``).

:func:`live_stages` is the stage list of every live run::

    [tamper] -> sysmon-gate -> [scanner-findings] -> enrich
    -> filter (Sysmon for Linux folding; trace in console mode)
    -> [scanner-requests] -> record-numbers -> [--stage ...]
    -> [sigma-match -> sigma-correlate -> [sigma-only-drop] -> [alert-triage]
    -> sigma-alert-events] -> [enrich-strip]

``sigma-only-drop``: records of other providers (a followed log's) whose channel loaded Sigma
rules are written for meet the rules and are not written (:mod:`sysmonx.stages.gate`).

``enrich`` computes the SysmonX enrichment fields the config or the Sigma rules use (all with
``--enrich``); ``enrich-strip`` removes them again unless ``--enrich`` (:mod:`sysmonx.stages.enrich`).

The scanner stages act when the config asks for scans (``scanners="..."``) or ``--scan`` does;
they are always in place, so a reload can add or remove such rules. ``scanner-requests`` queues
the processes of the events those rules included, a worker scans them, and ``scanner-findings``
puts the findings (event 200) into the stream before the filter (:mod:`sysmonx.scanners.stages`).
"""

from __future__ import annotations

import signal
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from ..configmodel import Config
from ..filtering import EngineOptions
from ..filtering.stage import FilterStage
from ..interfaces import SinkStats, Source, Stage
from ..scanners.stages import ScanOptions, ScanRequests, requested, scan_stages
from ..stages.enrich import EnrichStage, enrichment_wanted, with_enrichment
from ..stages.gate import SysmonGate, sigma_only_channels
from ..stages.logtamper import LogTamperStage
from ..stages.numbering import RecordNumbers
from .fanout import CallbackSink, FanOut
from .loop import Pipeline
from .replay import detection_stages

__all__ = ["SensorOptions", "SensorStats", "Sensor", "live_stages"]


@dataclass
class SensorOptions:
    """How the sensor runs.

    Attributes:
        backend: force a tier (``ebpf``, ``audit``, ``cnproc``) or ``None`` for the best available.
        dns: run the DNS backend beside the tier (when it can run).
        duration: stop after this many seconds (``None``: until stopped).
        queue_size: bound of the observation queue (back-pressure beyond it).
        engine_options: filter choices; Sysmon for Linux folds ``less/more than`` to upper case.
        backend_options: passed to each backend (buffer sizes ...).
        provider: System/Provider Name (default Sysmon for Linux's ``Linux-Sysmon``).
        exclude_own_children: also drop the activity of processes the sensor itself starts
            (ldconfig run by ctypes, journalctl for --follow journald); off only for tests that
            run the sensor inside the process generating the activity.
        follow: instead of tracing, follow an installed Sysmon for Linux's output: a log file or
            ``journald``.
        from_start: with ``follow``, read the file from its beginning.
        follow_poll_s: with ``follow``, seconds between checks of a file that does not grow.
        sink_queue_size: bound of each output's queue (drops beyond it are counted).
        tick_s: seconds between ticks (correlation windows).
        order_window_s, exit_hold_s: the per-process ordering bound
            (:class:`~sysmonx.sensor.order.OrderBuffer`); ``order_window_s=0`` writes in
            arrival order.
        enrich: write the SysmonX enrichment fields (``--enrich``); without it they are
            computed only for the config's and the Sigma rules' use and not written.
        guard: run the sensor's self-protection (:mod:`sysmonx.sensor.guard`): heartbeats
            (event 202) and live TamperFinding events (201); with ``follow``, the followed log is
            also checked by the ``tamper`` stage (Sysmon stopped, reconfigured, record and time
            gaps) whatever this says.
        heartbeat_s: seconds between heartbeats (0: none), fixed for the run (``sysmonx run
            --heartbeat``); ``None``: the config's SysmonX ``<HeartbeatInterval>``, applied
            again on every reload, else 60 (:data:`~sysmonx.sensor.guard.DEFAULT_HEARTBEAT_S`).
        state_dir: the guard's state (heartbeat sequence across restarts, unclean shutdown);
            ``None``: none kept.
        watch_outputs: output paths (files, the syslog socket) whose removal or replacement is
            a finding.
        install_manifest: the ``sysmonx -i`` manifest of installed files (``self_modified``).
        guard_trace: watch signals and bpf() calls through tracefs.
        scan: how scans run (:class:`~sysmonx.scanners.stages.ScanOptions`): scans happen when
            the config asks for them or ``scan.scan_all`` names scanners.
        config_name: what event 16's ``Configuration`` says, asked at start and on every
            reload (``None`` from it, or no callable: the path the sensor reads). The service
            (``run --config-name-from``) names the file given to the last ``sysmonx -i``/``-c``
            (:func:`~sysmonx.cli.sysmon.configuration_name`), not the installed copy.
        triage: keep only these Sigma alerts (``--min-level``, ``--technique``, ``--tag``:
            :class:`~sysmonx.detection.triage.AlertTriage`; the ``alert-triage`` stage after
            ``sigma-correlate``), ``None`` for all.
    """

    backend: Optional[str] = None
    dns: bool = True
    duration: Optional[float] = None
    queue_size: int = 65536
    engine_options: EngineOptions = field(default_factory=lambda: EngineOptions(
        compare_fold="upper"))
    backend_options: dict[str, Any] = field(default_factory=dict)
    provider: Optional[str] = None
    exclude_own_children: bool = True
    follow: Optional[str] = None
    from_start: bool = False
    follow_poll_s: float = 0.2
    sink_queue_size: int = 8192
    tick_s: float = 1.0
    order_window_s: float = 0.25
    exit_hold_s: float = 2.5
    enrich: bool = False
    guard: bool = False
    heartbeat_s: Optional[float] = None
    state_dir: Optional[str] = None
    watch_outputs: tuple[str, ...] = ()
    install_manifest: Optional[str] = None
    guard_trace: bool = True
    scan: ScanOptions = field(default_factory=ScanOptions)
    triage: Any = None
    config_name: Optional[Callable[[], Optional[str]]] = None


@dataclass
class SensorStats:
    """Counters: observations by type, events ``written`` (taken by the output that took the
    most; ``written_by_output``: output -> events it took) and
    ``filtered`` out per EventID, ``lost`` (sum of Loss counts), ``errors`` (255 events of the
    source for failures, and rejected reloads), ``host_notes`` (255 events that state a fact
    about the host, not a failure), ``outputs`` (per output: sent, failed, dropped),
    ``undelivered`` (output -> events it did not take), ``output_errors`` (output -> the last
    error), ``order_late`` (observations that arrived too late to be put in order)."""

    observations: Counter[str] = field(default_factory=Counter)
    written: Counter[int] = field(default_factory=Counter)
    filtered: Counter[int] = field(default_factory=Counter)
    lost: int = 0
    errors: int = 0
    backend: str = ""
    skipped: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, SinkStats] = field(default_factory=dict)
    undelivered: Counter[str] = field(default_factory=Counter)
    output_errors: dict[str, str] = field(default_factory=dict)
    order_late: int = 0
    host_notes: int = 0
    written_by_output: dict[str, int] = field(default_factory=dict)


def live_stages(config: Optional[Config], engine_options: EngineOptions, *,
                trace: Optional[str] = None, detection: Any = None,
                alerts_to_stream: bool = True, extra: Sequence[Stage] = (),
                enrich: bool = False, host: Any = None, tamper: bool = False,
                scan: Optional[ScanOptions] = None, triage: Any = None) -> list[Stage]:
    """The stages of a live run, in order (module docstring); ``tamper``: the ``tamper`` stage
    first (a followed log). The enrichment stage is always there, right before the filter (its
    process tree is kept so that a reloaded config can filter on ancestry); it computes only the
    fields the config or the Sigma rules use, all of them with ``enrich`` (then also written).
    ``host``: the live look-up of the host fields (:class:`~sysmonx.sensor.hostinfo.HostFacts`);
    ``triage``: the alerts kept (:class:`~sysmonx.detection.triage.AlertTriage`)."""
    flt = FilterStage(config, engine_options, without_config="defaults", trace=trace)
    # the scan stages are always there (cheap when nothing asks: one set lookup per event), so
    # a reload can add or remove scanners= rules
    findings, requests = scan_stages(config, scan or ScanOptions(), engine_options)
    stages: list[Stage] = [LogTamperStage()] if tamper else []
    gate = SysmonGate("drop", sigma_only_channels("drop", detection))
    stages += [gate, findings, flt, requests, RecordNumbers(0)]
    stages.extend(extra)
    if detection is not None:
        # records of channels the rules read: checked, not written
        stages.extend(detection_stages(detection, alerts_to_stream, triage,
                                       gate.sigma_channels))
    enricher = EnrichStage(enrichment_wanted(config, detection, enrich), host=host, keep=enrich)
    enricher.extra_fields = enrichment_wanted(None, detection)
    return with_enrichment(stages, enricher)


#: The cyclic garbage collector's first threshold during a live run (Python's default 700).
#: A busy sensor's net growth of tracked objects is the process cache filling (about four per
#: exec until ``max_entries``), and its young collections find nothing (0 collected in every
#: one measured) yet cost 3-12 ms each: at 20,000, six of them (about 45 ms) per 32,000 execs,
#: at 100,000 none (bench_live_core.py, same window). Cyclic garbage (rare: error paths) waits
#: for at most this many net allocations; the peak memory measured was the same (87 MB).
GC_THRESHOLD0 = 100_000


def _settle_heap() -> None:
    """Before collection starts: what start-up built (modules, the compiled config and Sigma
    rules, the process cache of the processes running now) goes to the collector's permanent
    generation (``gc.freeze``), so its full collections no longer walk it, and the first
    threshold rises to :data:`GC_THRESHOLD0` allocations: a busy sensor allocates a few dozen
    containers per exec, almost none of them in cycles, and at the default 700 the collector
    ran about a hundred times a second and took about 6 % of the sensor's CPU (measured with
    ``perf`` at 1,600 execs/s). Memory stays bounded: cycles are still collected, only less
    often."""
    import gc
    gc.collect()
    gc.freeze()
    _t0, t1, t2 = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD0, t1, t2)


class _ThreadProfiles:
    """``SYSMONX_PROFILE=DIR``: a deterministic profile (``cProfile``) of every thread of a live
    run, written at its end as ``DIR/<thread name>.prof`` (``python -m pstats FILE``), timed by
    the thread's CPU clock (waits and sleeps cost nothing), and the CPU time of the threads
    still alive at the end (``DIR/threads.txt``). For finding where the sensor's time goes; the
    profiler itself slows Python calls by about 2-3x, so the shares matter, not the totals."""

    def __init__(self, directory: str) -> None:
        import cProfile
        import os
        import sys
        import time
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self._profiles: dict[str, Any] = {}
        self._lock = threading.Lock()
        make = cProfile.Profile

        def begin(*_args: Any) -> None:
            sys.setprofile(None)  # this thread's hook; cProfile takes over below
            me = threading.current_thread()
            prof = make(time.thread_time)  # the thread's CPU time, not the wall clock
            with self._lock:
                self._profiles[f"{me.name}-{me.native_id}"] = prof
            prof.enable()

        self._begin = begin
        threading.setprofile(begin)  # threads started from now
        begin()

    @classmethod
    def from_environment(cls) -> Optional["_ThreadProfiles"]:
        """A profiler writing into ``$SYSMONX_PROFILE`` (a directory), or ``None`` when that
        variable is unset or empty (profiling off: no per-call hook is installed)."""
        import os
        directory = os.environ.get("SYSMONX_PROFILE")
        return cls(directory) if directory else None

    def dump(self) -> None:
        """Write every thread's profile (the threads still running are included as they are)."""
        import os
        threading.setprofile(None)
        with self._lock:
            items = list(self._profiles.items())
        for name, prof in items:
            prof.disable()
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
            prof.dump_stats(os.path.join(self.directory, f"{safe}.prof"))
        lines = []
        tick = os.sysconf("SC_CLK_TCK")
        for tid in sorted(os.listdir("/proc/self/task")):
            try:
                with open(f"/proc/self/task/{tid}/stat") as fh:
                    stat = fh.read()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            cpu = (int(fields[11]) + int(fields[12])) / tick
            lines.append(f"{tid} {comm} {cpu:.2f} s\n")
        with open(os.path.join(self.directory, "threads.txt"), "w") as fh:
            fh.writelines(lines)


class Sensor:
    """A live run: :class:`~sysmonx.sensor.live.LiveSource` -> :func:`live_stages` -> sinks.

    Args:
        config: loaded Sysmon config or ``None`` (Sysmon's defaults: only 1 and 5 logged ... plus
            every event a tag-less default includes).
        writers: the outputs (sinks, or objects with ``write(event)``); closed by :meth:`run`
            at the end.
        options: :class:`SensorOptions`.
        config_path: file to re-read on reload (``None``: reload keeps the config and writes
            event 16 again).
        on_status: called with one-line status messages (backend chosen, skipped tiers ...).
        detection: a :class:`~sysmonx.detection.stage.DetectionStage` run on every written
            event; ``on_alert`` (if given) receives its alerts, else a writer that accepts
            alerts, else they go into the event stream as event 1000.
        trace: console mode's rule trace (``summary`` or ``verbose``).
        extra_stages: stages run after numbering (``--stage``).
    """

    def __init__(self, config: Optional[Config], writers: Sequence[Any], options: SensorOptions,
                 config_path: Optional[str] = None,
                 on_status: Optional[Callable[[str], None]] = None, detection: Any = None,
                 on_alert: Optional[Callable[[Any], None]] = None, trace: Optional[str] = None,
                 extra_stages: Sequence[Stage] = ()) -> None:
        self.config = config
        self.config_path = config_path
        self.options = options
        self.on_status = on_status or (lambda msg: None)
        from ..sensor.guard import GuardOptions
        from ..sensor.live import LiveOptions, LiveSource  # Linux only (pwd, /proc)
        inner: Optional[Source] = None
        if options.follow:
            from ..sources.syslog import SyslogFormat
            inner = SyslogFormat(options.follow, follow=True, from_start=options.from_start,
                                 poll_s=options.follow_poll_s)
        self.source = LiveSource(config, LiveOptions(
            backend=options.backend, dns=options.dns, duration=options.duration,
            queue_size=options.queue_size, backend_options=options.backend_options,
            provider=options.provider, exclude_own_children=options.exclude_own_children,
            order_window_s=options.order_window_s, exit_hold_s=options.exit_hold_s,
            guard=GuardOptions(heartbeat_s=options.heartbeat_s, state_dir=options.state_dir,
                               config_path=config_path, outputs=tuple(options.watch_outputs),
                               trace=options.guard_trace and not options.follow,
                               install_manifest=options.install_manifest)
            if options.guard else None),
            config_label=self._config_name(config_path), inner=inner,
            on_status=self.on_status)
        sinks = list(writers)
        if on_alert is not None:
            sinks.append(CallbackSink(on_alert))
        self.fanout = FanOut.build(sinks, "count", options.sink_queue_size)
        host = None
        if not options.follow:
            from ..sensor.hostinfo import HostFacts
            host = HostFacts(self.source.cache)
        self.stages = live_stages(config, options.engine_options, trace=trace,
                                  detection=detection,
                                  alerts_to_stream=not self.fanout.accepts("alert"),
                                  extra=extra_stages, enrich=options.enrich, host=host,
                                  tamper=bool(options.follow), scan=options.scan,
                                  triage=options.triage)
        self.pipeline = Pipeline(self.stages, self.fanout, on_status=self.on_status,
                                 reloader=self._load, tick_s=options.tick_s)
        self.source.guard_counters = self.guard_counters

    def guard_counters(self) -> tuple[int, int, dict[str, tuple[int, int, int, str]]]:
        """``(events written, events lost, output -> (events it did not take, items it
        took, failure episodes started, its latest error))`` totals so far,
        for the heartbeat and the guard's output check (one ``output_blocked`` finding per
        episode: :meth:`FanOut.episodes <sysmonx.pipeline.fanout.FanOut.episodes>`). Written:
        by the output that took the most (:meth:`FanOut.written`); lost: in the kernel or
        queues, plus at most the events no output took (:meth:`FanOut.lost_everywhere`, an
        upper bound), so an output that fails beside a healthy one does not make the heartbeat
        say the events were lost."""
        outputs = self.fanout.stats()
        episodes = self.fanout.episodes()
        return (sum(self.fanout.written().values()),
                self.source.stats.lost + self.fanout.lost_everywhere(),
                {k: (v.undelivered, v.sent) + episodes.get(k, (0, ""))
                 for k, v in outputs.items()})

    def _load(self) -> Optional[Config]:
        """The reloader: the config file read again; the config cache's notes (an entry
        ignored, a folder that cannot be used) go to ``on_status`` as ``note: ...``, as
        ``sysmonx run`` shows them at start, before the line the loop says of the reload."""
        if not self.config_path:
            return self.config
        from ..config import load_config
        cache_info: dict[str, Any] = {}
        self.config = load_config(self.config_path, cache_info=cache_info)
        self.source.config_label = self._config_name(self.config_path)
        for note in cache_info.get("notes", ()):
            self.on_status(f"note: {note}")
        return self.config

    def _config_name(self, config_path: Optional[str]) -> Optional[str]:
        """What event 16 names as the configuration: ``options.config_name()`` (the file given
        to the last ``-i``/``-c``), else ``config_path``."""
        if self.options.config_name is not None:
            name = self.options.config_name()
            if name is not None:
                return name
        return config_path

    @property
    def started(self) -> threading.Event:
        """Set once the sensor has written events 16 and 4."""
        return self.source.started

    def request_stop(self) -> None:
        """Ask :meth:`run` to finish (safe from signal handlers and other threads)."""
        self.pipeline.request_stop()
        self.source.stop()

    def request_reload(self) -> None:
        """Ask :meth:`run` to re-read the configuration (SIGHUP does this)."""
        self.pipeline.request_reload()

    def emit(self, o: Any) -> None:
        """Queue one observation as a backend would (blocking while the queue is full)."""
        self.source.emit(o)

    @property
    def stats(self) -> SensorStats:
        """The counters so far."""
        src = self.source.stats
        flt = next(s for s in self.stages if isinstance(s, FilterStage))
        outputs = self.fanout.stats()
        return SensorStats(observations=Counter(src.observations),
                           written=self.fanout.written(), filtered=Counter(flt.excluded),
                           lost=src.lost, errors=src.errors + self.pipeline.reload_errors,
                           backend=src.backend, skipped=dict(src.skipped),
                           outputs=outputs,
                           undelivered=Counter({k: v.undelivered for k, v in outputs.items()
                                                if v.undelivered}),
                           output_errors=self.fanout.errors(), order_late=src.order_late,
                           host_notes=src.host_notes,
                           written_by_output=self.fanout.written_by_output())

    @property
    def scan_stats(self) -> Any:
        """The scan counters (:class:`~sysmonx.scanners.stages.ScanStats`), or ``None`` when
        this run has not asked for a scan."""
        req = next((s for s in self.stages if isinstance(s, ScanRequests)), None)
        if req is None or not (req.service.stats.requested or requested(self.config,
                                                                         self.options.scan)):
            return None
        return req.service.stats

    def summary(self) -> str:
        """The closing summary line (stderr): backend (or what is followed), events written
        (by the output that took the most; each output's count when they differ), filtered
        out, lost, errors (by kind), host notes (events 255 that are facts about the host, not
        failures: only when there are some), and every output that did not take all events
        with the count and the last error; the scan counters when the run scans."""
        st = self.stats
        what = st.backend if self.options.follow else f"backend {st.backend}"
        text = f"{what}; events written {sum(st.written.values()):,}"
        if len(set(st.written_by_output.values())) > 1:  # the outputs differ: each one's count
            text += " (" + ", ".join(f"{n:,} to {name}"
                                     for name, n in st.written_by_output.items()) + ")"
        blind = getattr(self.source, "blind_episode_count", lambda: 0)()
        text += f", filtered out {sum(st.filtered.values()):,}, lost {st.lost:,}"
        if blind:  # a blind source's missed events were never counted: not a known 0
            text += (f" counted and an unknown number more (collection blind {blind} "
                     f"time{'s' if blind > 1 else ''}: audit disabled; event 255)")
        text += f", errors {st.errors}"
        if st.errors:  # what they were, by kind (each is an event 255 in the output)
            refused = self.pipeline.reload_errors
            kinds = [f"{n:,} {what}" for n, what in (
                (refused, "refused config reload" + ("s" if refused > 1 else "")),
                (st.errors - refused, "collection error" + ("s" if st.errors - refused > 1
                                                            else ""))) if n]
            text += f" ({', '.join(kinds)}: event 255)"
        if st.host_notes:  # facts about the host (event 255 too), apart from the failures
            n = st.host_notes
            text += (f", host notes {n} (event 255: what this host cannot do, such as load "
                     "kernel modules; nothing failed or was lost)")
        for name, n in st.undelivered.items():
            text += f"; NOT WRITTEN to {name}: {n:,} events ({st.output_errors.get(name, '')})"
        for name, (now, late, given_up, over) in self.fanout.held().items():
            # the sensor's reports (201, 255) it did not take, held for it (pipeline/fanout.py)
            never = now + given_up + over
            said = ([f"{late:,} written late"] if late else []) + \
                ([f"{never:,} never written (counted above)"] if never else [])
            text += (f"; {name}: events 201/255 held for it while it failed: "
                     + ", ".join(said))
        for slot in self.fanout.slots:
            away = getattr(slot.sink, "outages", 0)
            if away:
                text += (f"; {slot.label}: receiver away {away} time"
                         f"{'s' if away > 1 else ''} during the run (events kept in its spool)")
        for name, (n, note) in self.fanout.spooled().items():
            text += f"; SPOOLED for {name}: {n:,} of the events written wait on disk ({note})"
        scans = self.scan_stats
        if scans is not None:
            text += "; " + scans.summary()
        return text

    def run(self, install_signals: bool = True) -> SensorStats:
        """Collect until stopped (signal, :meth:`request_stop`, or ``duration``); the outputs
        are closed at the end.

        Raises:
            BackendUnavailable: no tier can run (or the forced one cannot); nothing was started.
            SourceUnavailable: the followed log cannot be read.
            OutputClosed: an output's reader went away (``| head``).
        """
        old_handlers: dict[int, Any] = {}
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig, fn in ((signal.SIGINT, lambda *a: self.request_stop()),
                            (signal.SIGTERM, lambda *a: self.request_stop()),
                            (signal.SIGHUP, lambda *a: self.request_reload())):
                old_handlers[sig] = signal.signal(sig, fn)
        profiler = _ThreadProfiles.from_environment()
        _settle_heap()
        try:
            try:
                self.pipeline.run(self.source)
            finally:
                self.pipeline.close()
        finally:
            for signum, h in old_handlers.items():
                signal.signal(signum, h)
            if profiler is not None:
                profiler.dump()
        return self.stats

    def backend_stats(self) -> dict[str, dict[str, Any]]:
        """name -> the backend's own counters."""
        return self.source.backend_stats()
