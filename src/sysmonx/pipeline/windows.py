"""The Windows collector on the one loop: ``sysmonx run`` on Windows, and the service.

:func:`windows_stages` is the stage list::

    ack-start -> kernel-process-sysmon -> powershell-scriptblocks -> sysmon-gate (pass)
    -> filter (the user's config, Windows Sysmon's semantics) -> [--stage ...]
    -> [sigma-match -> sigma-correlate -> sigma-alert-events] -> ack-end

The source is :class:`~sysmonx.windows.sources.MergedSource` over the Event Log channels
(:class:`~sysmonx.windows.sources.EventLogChannels`: Sysmon, PowerShell, WMI, DNS-Client,
Security) and, where asked for or where Sysmon is absent, the Kernel-Process ETW consumer.
Records of other providers than Sysmon (PowerShell, Security ...) pass the gate and go to
detection and the outputs; Sysmon's records and SysmonX's own events (220) go through the
config filter. Outputs run under the live ``count`` policy with queues that wait instead of
dropping (the Event Log keeps the backlog), and every event with an Event Log position is
committed to its channel's bookmark once every output took it (:mod:`sysmonx.pipeline.ack`):
delivery is at least once across restarts.

Sysmon itself filters with the sensor configuration derived from the user's
(:func:`~sysmonx.windows.sensorconfig.derive_sensor_config`); SysmonX applies the user's exact
configuration here. A reload (``-c``) re-derives Sysmon's and swaps the filter between two
events (``reloader``).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from ..configmodel import Config
from ..filtering import EngineOptions
from ..filtering.stage import FilterStage
from ..interfaces import SinkStats, Source, Stage
from ..stages.gate import SysmonGate
from .ack import AckEnd, AckStart, AckTracker, AckedSink
from .fanout import FanOut, QueuedSlot
from .loop import Pipeline
from .replay import detection_stages

__all__ = ["WindowsOptions", "WindowsCollector", "windows_stages", "collector_from_state"]


@dataclass
class WindowsOptions:
    """How the Windows collector runs.

    Attributes:
        channels: Event Log subscriptions (``None``: the default channels).
        etw: run the Kernel-Process ETW consumer (process start/stop without Sysmon).
        bookmarks: path of the bookmark file (``None``: positions in memory only, so a
            restart reads each channel from its oldest record again).
        duration: stop after this many seconds (``None``: until stopped).
        sink_queue_size: bound of each output's queue (the loop waits beyond it).
        tick_s: seconds between ticks (script-block timeouts, correlation windows).
        wevtapi, etwapi: injected APIs (tests: :mod:`sysmonx.windows.fakes`).
        eventlog_options, etw_options, scriptblock_options, kernel_process_options: passed to
            the source or stage of that name.
    """

    channels: Optional[Sequence[Any]] = None
    etw: bool = False
    bookmarks: Optional[str] = None
    duration: Optional[float] = None
    sink_queue_size: int = 8192
    tick_s: float = 1.0
    wevtapi: Any = None
    etwapi: Any = None
    eventlog: bool = True
    eventlog_options: dict[str, Any] = field(default_factory=dict)
    etw_options: dict[str, Any] = field(default_factory=dict)
    scriptblock_options: dict[str, Any] = field(default_factory=dict)
    kernel_process_options: dict[str, Any] = field(default_factory=dict)


def windows_stages(config: Optional[Config], tracker: AckTracker, *, detection: Any = None,
                   alerts_to_stream: bool = True, extra: Sequence[Stage] = (),
                   scriptblock_options: Optional[dict[str, Any]] = None,
                   kernel_process_options: Optional[dict[str, Any]] = None) -> list[Stage]:
    """The stages of a Windows run, in order (module docstring)."""
    from ..windows.stages import KernelProcessToSysmon, PowerShellScriptBlocks
    stages: list[Stage] = [
        AckStart(tracker),
        KernelProcessToSysmon(**(kernel_process_options or {})),
        PowerShellScriptBlocks(**(scriptblock_options or {})),
        SysmonGate("pass"),
        FilterStage(config, EngineOptions(), without_config="defaults"),
    ]
    stages.extend(extra)
    if detection is not None:
        stages.extend(detection_stages(detection, alerts_to_stream))
    stages.append(AckEnd(tracker))
    return stages


class WindowsCollector:
    """A Windows live run: Event Log (+ ETW) -> :func:`windows_stages` -> outputs.

    Args:
        config: the user's Sysmon config, or ``None`` (Sysmon's defaults).
        writers: the outputs (sinks); closed by :meth:`run`.
        options: :class:`WindowsOptions`.
        reloader: returns the configuration to put in force on :meth:`request_reload` (``-c``),
            raising ``SysmonXError``/``OSError`` when it cannot (the old one stays, event 255).
        on_status: one-line status messages.
        detection: a :class:`~sysmonx.detection.stage.DetectionStage` or ``None``.
        extra_stages: run after the filter (``--stage``).
        source: replaces the built Event Log/ETW source (tests).
    Raises:
        ValueError: neither the Event Log nor ETW is asked for.
    """

    def __init__(self, config: Optional[Config], writers: Sequence[Any],
                 options: WindowsOptions, *,
                 reloader: Optional[Callable[[], Optional[Config]]] = None,
                 on_status: Optional[Callable[[str], None]] = None, detection: Any = None,
                 extra_stages: Sequence[Stage] = (), source: Optional[Source] = None) -> None:
        from ..windows.sources import EventLogChannels, KernelProcessEvents, MergedSource
        self.config = config
        self.options = options
        self.on_status = on_status or (lambda msg: None)
        if source is None:
            inner: list[Source] = []
            if options.eventlog:
                from ..windows.eventlog import BookmarkStore
                inner.append(EventLogChannels(
                    options.channels, bookmarks=BookmarkStore(options.bookmarks),
                    api=options.wevtapi, **options.eventlog_options))
            if options.etw:
                inner.append(KernelProcessEvents(api=options.etwapi, **options.etw_options))
            if not inner:
                raise ValueError("nothing to collect: enable the Event Log or ETW")
            # one source needs no merge (a thread and a queue fewer per event)
            source = inner[0] if len(inner) == 1 else MergedSource(inner)
        self.source = source
        commit = getattr(source, "commit", None) or (lambda event: False)
        sinks = list(writers)
        event_sinks = [s for s in sinks if "event" in getattr(s, "accepts", {"event"})]
        self.tracker = AckTracker(commit, len(event_sinks))
        slots = []
        for s in sinks:
            target = AckedSink(s, self.tracker) if s in event_sinks else s
            slots.append(QueuedSlot(target, "count", options.sink_queue_size, "block",
                                    count_ids=True))
        self.fanout = FanOut(slots)
        self.stages = windows_stages(config, self.tracker, detection=detection,
                                     alerts_to_stream=not self.fanout.accepts("alert"),
                                     extra=extra_stages,
                                     scriptblock_options=options.scriptblock_options,
                                     kernel_process_options=options.kernel_process_options)
        self.pipeline = Pipeline(self.stages, self.fanout, on_status=self.on_status,
                                 reloader=reloader, tick_s=options.tick_s)
        self._timer: Optional[threading.Timer] = None

    def request_stop(self) -> None:
        """Finish soon (thread- and signal-safe; the service's stop control)."""
        self.pipeline.request_stop()

    def request_reload(self) -> None:
        """Re-read the configuration between two events (``-c``)."""
        self.pipeline.request_reload()

    def run(self) -> dict[str, SinkStats]:
        """Collect until stopped or ``duration``; the outputs are closed at the end.

        Returns:
            per output label: sent, failed, dropped.
        Raises:
            SourceUnavailable: no Windows source can run here.
        """
        if self.options.duration is not None:
            self._timer = threading.Timer(self.options.duration, self.request_stop)
            self._timer.daemon = True
            self._timer.start()
        try:
            try:
                self.pipeline.run(self.source)
            finally:
                self.pipeline.close()
        finally:
            if self._timer is not None:
                self._timer.cancel()
        return self.fanout.stats()

    def summary(self) -> str:
        """The closing summary line: events written, filtered out, committed, outputs that did
        not take everything."""
        flt = next(s for s in self.stages if isinstance(s, FilterStage))
        written = sum(self.fanout.written().values())
        text = (f"events written {written:,}, filtered out {sum(flt.excluded.values()):,}, "
                f"committed {self.tracker.committed:,}")
        for label, st in self.fanout.stats().items():
            if st.undelivered:
                text += f"; NOT WRITTEN to {label}: {st.undelivered:,} events"
        return text


def collector_from_state(state_dir: str, *, wevtapi: Any = None, etwapi: Any = None,
                    runner: Any = None) -> WindowsCollector:
    """The collector the service runs, from ``<state_dir>/service.json``: the user's
    configuration, bookmarks in ``<state_dir>/bookmarks.json``, the outputs, the tamper
    checks. ``wevtapi``/``etwapi``/``runner`` are injected by tests.

    Raises:
        ServiceInstallError: no settings. ConfigError: the configuration does not load.
        SinkError: an output cannot be opened.
    """
    from ..config import load_config
    from ..sinks import writer_class
    from ..windows.service import ServiceSettings
    from ..windows.tamper import CommandProbe, WindowsTamper, WindowsTamperChecks
    settings = ServiceSettings.load(state_dir)
    path = settings.config

    def load() -> Any:
        return load_config(path) if path else None

    sinks: list[Any] = []
    if settings.output:
        out = writer_class(settings.format).open(settings.output, append=True, buffered=False)
        out.label = f"file {settings.output}"
        sinks.append(out)
    if settings.syslog:
        from ..sinks.syslog import SyslogWriter
        sinks.append(SyslogWriter.open(settings.syslog, require=False))
    if settings.eventlog:
        from ..windows.evtoutput import EventLogSink
        sinks.append(EventLogSink())
    extra = []
    if settings.tamper:
        if runner is None:
            from ..windows.sysmon import SubprocessRunner
            runner = SubprocessRunner()
        from ..windows.sysmon import SysmonManager
        manager = SysmonManager(runner, state_dir)
        extra.append(WindowsTamper(WindowsTamperChecks(
            CommandProbe(runner), service=settings.sysmon_service,
            driver=settings.sysmon_driver, restart=manager.ensure_running)))
    detection = None
    if settings.rules:
        from ..detection.stage import DetectionStage
        detection = DetectionStage.from_paths(settings.rules)
    return WindowsCollector(load(), sinks, WindowsOptions(
        etw=settings.etw, bookmarks=os.path.join(state_dir, "bookmarks.json"),
        wevtapi=wevtapi, etwapi=etwapi), reloader=load, extra_stages=extra,
        detection=detection)
