"""The live sensor: backends -> bounded queue -> Sysmon events -> config filter -> writers.

One consumer thread (the caller of :meth:`Sensor.run`) turns observations into events, filters
them with the same engine replay uses (Sysmon for Linux semantics: ``compare_fold="upper"``) and
writes them. Backends block on the bounded queue when the consumer falls behind (back-pressure):
the burst then waits in the kernel's buffers, and whatever the kernel drops comes back as a
``Loss`` observation, written as event 255 with the count. The sensor's own pid is excluded in the
kernel where the backend allows it and again here, so it never reports its own activity.

Events 4 (Started/Stopped) and 16 (configuration, with its SHA256) are written at start, stop and
on every reload (SIGHUP or :meth:`Sensor.request_reload`); a reload swaps the compiled filter
between two observations, so nothing queued is lost.

Order: observations pass through an :class:`~sysmonx.sensor.order.OrderBuffer` before they are
assembled, so each process's events come out with event 1 first and event 5 last whatever the
backends' delivery delays (bound documented there: ``order_window_s``, ``exit_hold_s``).

Failing outputs (a syslog daemon that is not running, ``-o`` on a full file system): a writer
that raises is not fatal. The sensor keeps collecting, says on stderr (``on_status``) that the
output fails and why, counts every event that output did not take, and when the output works
again writes an event 255 (``ID`` ``Output``) with the count and says so on stderr; the counts
are in :attr:`SensorStats.undelivered` for the closing summary. Only a closed pipe on standard
output (the reader went away) ends the run, as for any Unix filter.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..config import Config, ConfigError, load_config
from ..filtering import EngineOptions, FilterEngine
from ..schema import CURRENT, format_version
from . import observations as ob
from .assemble import Assembler, utc_time
from .backends import AUXILIARY, Backend, BackendUnavailable, choose_backend, load_backend, probe
from .order import OrderBuffer
from .process import FileHasher, ProcessCache

__all__ = ["SensorOptions", "Sensor", "SensorStats"]


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
        order_window_s, exit_hold_s: the per-process ordering bound
            (:class:`~sysmonx.sensor.order.OrderBuffer`); ``order_window_s=0`` writes in
            arrival order.
    """

    backend: Optional[str] = None
    dns: bool = True
    duration: Optional[float] = None
    queue_size: int = 65536
    engine_options: EngineOptions = field(default_factory=lambda: EngineOptions(
        compare_fold="upper"))
    backend_options: dict = field(default_factory=dict)
    provider: Optional[str] = None
    exclude_own_children: bool = True
    order_window_s: float = 0.25
    exit_hold_s: float = 2.5


@dataclass
class SensorStats:
    """Counters: observations by type, events ``written`` (delivered to every output) and
    ``filtered`` out per EventID, ``lost`` (sum of Loss counts), ``errors`` (255 events),
    ``undelivered`` (output name -> events it did not take), ``output_errors`` (output name ->
    the last error), ``order_late`` (observations that arrived too late to be put in order)."""

    observations: Counter = field(default_factory=Counter)
    written: Counter = field(default_factory=Counter)
    filtered: Counter = field(default_factory=Counter)
    lost: int = 0
    errors: int = 0
    backend: str = ""
    skipped: dict = field(default_factory=dict)
    undelivered: Counter = field(default_factory=Counter)
    output_errors: dict = field(default_factory=dict)
    order_late: int = 0


class _Emitter:
    """What backends get as ``emit``: :meth:`Sensor.emit`, with ``many`` for batches."""

    __slots__ = ("_emit", "many")

    def __init__(self, sensor: "Sensor") -> None:
        self._emit = sensor.emit
        self.many = sensor.emit_many

    def __call__(self, o) -> None:
        self._emit(o)


class _Output:
    """Delivery state of one writer (see the module docstring, "Failing outputs")."""

    __slots__ = ("writer", "name", "failing_since", "failed_now", "error")

    def __init__(self, writer) -> None:
        self.writer = writer
        self.name = getattr(writer, "name", None) or type(writer).__name__
        self.failing_since: Optional[int] = None  # ts_ns of the first undelivered event
        self.failed_now = 0  # undelivered since failing_since
        self.error = ""


class Sensor:
    """Runs live collection until stopped.

    Args:
        config: loaded Sysmon config or ``None`` (Sysmon's defaults: only 1 and 5 logged ... plus
            every event a tag-less default includes).
        writers: objects with ``write(event)`` (and ``close()``, called by :meth:`run` at the end).
        options: :class:`SensorOptions`.
        config_path: file to re-read on reload (``None``: reload keeps the config).
        on_status: called with one-line status messages (backend chosen, skipped tiers ...).
        detection: a :class:`~sysmonx.detection.DetectionStage` run on every written event;
            ``on_alert`` receives its alerts (open correlation windows are flushed at stop).
    """

    def __init__(self, config: Optional[Config], writers: list, options: SensorOptions,
                 config_path: Optional[str] = None,
                 on_status: Optional[Callable[[str], None]] = None, detection=None,
                 on_alert: Optional[Callable] = None) -> None:
        self.detection = detection
        self.on_alert = on_alert
        self.config = config
        self.config_path = config_path
        self.writers = list(writers)
        self._outputs = [_Output(w) for w in self.writers]
        self.options = options
        self.stats = SensorStats()
        self.on_status = on_status or (lambda msg: None)
        self.queue: "queue.Queue" = queue.Queue(maxsize=options.queue_size)
        self.cache = ProcessCache()
        self.assembler = Assembler(self.cache, self._hasher(config),
                                   **({"provider": options.provider} if options.provider else {}))
        self.engine = FilterEngine(config, options.engine_options)
        self.order = OrderBuffer(options.order_window_s, options.exit_hold_s)
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._backends: list[Backend] = []
        self.self_pid = os.getpid()
        self._own_children: set = set()
        self.started = threading.Event()

    @staticmethod
    def _hasher(config: Optional[Config]) -> FileHasher:
        algos = config.hash_algorithms if config and config.hash_algorithms else ["SHA256"]
        return FileHasher(algos)

    # --- control -------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask :meth:`run` to finish (safe from signal handlers and other threads)."""
        self._stop.set()

    def request_reload(self) -> None:
        """Ask :meth:`run` to re-read the configuration (SIGHUP does this)."""
        self._reload.set()

    def emit(self, o: ob.Observation) -> None:
        """Backend callback: queue one observation, blocking while the queue is full."""
        while True:
            try:
                self.queue.put(o, timeout=0.5)
                return
            except queue.Full:
                if self._stop.is_set():
                    return

    def emit_many(self, observations: list) -> None:
        """Backend callback for a batch (``emit.many``, see
        :meth:`~sysmonx.sensor.backends.base.Backend.emit_all`): one queue item."""
        self.emit(list(observations))

    # --- main loop -----------------------------------------------------------------------------

    def _write(self, event) -> None:
        include, name = self.engine.decide(event.event_id, event.data)
        if not include:
            self.stats.filtered[event.event_id] += 1
            return
        if name is not None and "RuleName" in event.data:
            event.data["RuleName"] = name
        if self.engine.field_sizes:
            event.data = self.engine.apply_field_sizes(event.event_id, event.data)
        if event.record_id is None:  # forwarded events keep the record id they came with
            event.record_id = self.assembler.next_record_id()
        if self.deliver(event):
            self.stats.written[event.event_id] += 1
        if self.detection is not None:
            for alert in self.detection.process(event):
                self.on_alert(alert)

    def deliver(self, event) -> bool:
        """Hand one event to every output (the filter has already passed it). A writer that
        raises does not stop the sensor: the event is counted as undelivered for that output,
        the first failure is said on stderr, and the output's recovery is reported (module
        docstring). Returns True when every output took the event.

        Raises:
            BrokenPipeError: standard output was closed by its reader (the run ends).
        """
        ok = True
        for out in self._outputs:
            try:
                out.writer.write(event)
            except BrokenPipeError:
                if getattr(out.writer, "stop_on_broken_pipe", True):
                    raise
                self._output_failed(out, event, "broken pipe")
                ok = False
            except Exception as exc:  # noqa: BLE001 - a failing output must not stop collection
                self._output_failed(out, event, _describe(exc))
                ok = False
            else:
                if out.failing_since is not None:
                    self._output_recovered(out, event)
        return ok

    def _output_failed(self, out: _Output, event, error: str) -> None:
        self.stats.undelivered[out.name] += 1
        self.stats.output_errors[out.name] = error
        out.failed_now += 1
        if out.failing_since is None:
            out.failing_since = time.time_ns()
            out.error = error
            self.on_status(f"output {out.name} fails ({error}); collection continues and every "
                           "event it does not take is counted")

    def _output_recovered(self, out: _Output, event) -> None:
        count, since, error = out.failed_now, out.failing_since, out.error
        out.failing_since, out.failed_now = None, 0
        now = time.time_ns()
        self.on_status(f"output {out.name} works again; {count} events were not written to it "
                       f"since {utc_time(since)} UTC ({error})")
        self.stats.errors += 1
        self._write(self.assembler.error(
            "Output", f"{count} events could not be written to {out.name} from "
                      f"{utc_time(since)} to {utc_time(now)} UTC: {error}", now))

    def _config_event(self) -> None:
        now = time.time_ns()
        if self.config is not None:
            label = self.config_path or self.config.path
            self._write(self.assembler.config_change(label, self.config.sha256, now))
        else:
            self._write(self.assembler.config_change("-", None, now))

    def _do_reload(self) -> None:
        self._reload.clear()
        if not self.config_path:
            self._config_event()
            return
        try:
            new = load_config(self.config_path)
        except (ConfigError, OSError) as exc:
            self.stats.errors += 1
            self.on_status(f"configuration not applied, the previous one stays: {exc}")
            self._write(self.assembler.error("ConfigReload", f"configuration not applied: {exc}",
                                             time.time_ns()))
            return
        self.engine = FilterEngine(new, self.options.engine_options)
        self.assembler.hasher = self._hasher(new)
        self.config = new
        self._config_event()

    def _start_backends(self) -> None:
        name, skipped = choose_backend(self.options.backend)
        self.stats.backend, self.stats.skipped = name, skipped
        for tier, reason in skipped.items():
            self.on_status(f"backend {tier} skipped: {reason}")
        names = [name]
        if self.options.dns:
            for aux in AUXILIARY:
                reason = probe(aux)
                if reason is None:
                    names.append(aux)
                else:
                    self.on_status(f"backend {aux} skipped: {reason}")
        excluded = frozenset({self.self_pid})
        for n in names:
            backend = load_backend(n)(_Emitter(self), excluded, self.options.backend_options)
            try:
                backend.start()
            except BackendUnavailable as exc:
                if n == name:
                    raise
                self.on_status(f"backend {n} failed to start: {exc}")
                continue
            self._backends.append(backend)
            self.on_status(f"backend {n} started")

    def _handle(self, o, now: Optional[float] = None) -> None:
        """Admit one observation from the queue (self-exclusion, counters) into the order
        buffer, and assemble what the buffer lets through at once. A list is a batch."""
        if type(o) is list:
            for item in o:
                self._handle(item, now)
            return
        self.stats.observations[type(o).__name__] += 1
        pid = getattr(o, "pid", None)
        if pid == self.self_pid or pid in self._own_children:
            if type(o) is ob.ProcessExit:
                self._own_children.discard(pid)
            return
        if type(o) in (ob.ProcessExec, ob.ProcessFork) and o.ppid == self.self_pid and \
                self.options.exclude_own_children:
            # a helper the sensor itself started (ldconfig from ctypes, journalctl ...): it is
            # the sensor's own activity and must not feed back into its output
            self._own_children.add(o.pid)
            return
        if type(o) is ob.Loss:
            self.stats.lost += o.count
        elif type(o) is ob.BackendError:
            self.stats.errors += 1
        now = time.monotonic() if now is None else now
        for item in self.order.push(o, now):
            self._assemble(item, now)

    def _release(self, now: float) -> None:
        """Assemble the observations and write the exit events whose hold has passed."""
        for item in self.order.ready(now):
            self._assemble(item, now)
        for event in self.order.exits_ready(now):
            self._write(event)

    def _assemble(self, o, now: float) -> None:
        for event in self.assembler.build_events(o):
            if event.event_id == 5 and type(o) is ob.ProcessExit:
                for forced in self.order.hold_exit(event, o.pid, now):
                    self._write(forced)
            else:
                self._write(event)
        if type(o) is ob.ProcessExec:
            info = self.cache.peek(o.pid)
            if info is not None and info.extra.get("late_exec"):
                held = self.order.held_exit(o.pid)
                if held is not None:  # the process exited running this image
                    held.data["ProcessGuid"] = info.guid
                    held.data["Image"] = info.image or "-"
                    held.data["User"] = info.user

    def run(self, install_signals: bool = True) -> SensorStats:
        """Collect until stopped (signal, :meth:`request_stop`, or ``duration``).

        Raises:
            BackendUnavailable: no tier can run (or the forced one cannot); nothing was started.
        """
        old_handlers = {}
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig, fn in ((signal.SIGINT, lambda *a: self.request_stop()),
                            (signal.SIGTERM, lambda *a: self.request_stop()),
                            (signal.SIGHUP, lambda *a: self.request_reload())):
                old_handlers[sig] = signal.signal(sig, fn)
        schema = format_version(self.config.schema_version) if self.config else \
            format_version(CURRENT.version)
        try:
            self.cache.prime()
            self._start_backends()
            # Sysmon for Linux writes the configuration (16) first, then the service state (4).
            self._config_event()
            self._write(self.assembler.service_state("Started", schema, time.time_ns()))
            self.started.set()
            deadline = None if self.options.duration is None else \
                time.monotonic() + self.options.duration
            last_expire = time.monotonic()
            get, get_nowait = self.queue.get, self.queue.get_nowait
            while not self._stop.is_set():
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                if self._reload.is_set():
                    self._do_reload()
                due = self.order.next_due()
                # wake for the next release, but at most every 5 ms: what arrives meanwhile is
                # taken in one batch
                wait = 0.1 if due is None else min(0.1, max(0.005, due - now))
                try:
                    o = get(timeout=wait)
                except queue.Empty:
                    pass
                else:
                    arrived = time.monotonic()  # the hold counts from here
                    self._handle(o, arrived)
                    for _ in range(1024):
                        try:
                            o = get_nowait()
                        except queue.Empty:
                            break
                        self._handle(o, arrived)
                self._release(time.monotonic())
                if time.monotonic() - last_expire > 5:
                    self.cache.expire(time.time_ns())
                    last_expire = time.monotonic()
        finally:
            for b in self._backends:
                b.stop()
            while True:  # what the backends queued before they stopped
                try:
                    self._handle(self.queue.get_nowait())
                except queue.Empty:
                    break
            for item in self.order.drain():
                self._assemble(item, float("inf"))
            for event in self.order.drain_exits():
                self._write(event)
            self.stats.order_late = self.order.late
            if self.detection is not None:
                for alert in self.detection.finish():
                    self.on_alert(alert)
            if self.started.is_set():
                self._write(self.assembler.service_state("Stopped", schema, time.time_ns()))
            for w in self.writers:
                close = getattr(w, "close", None)
                if close:
                    close()
            for sig, h in old_handlers.items():
                signal.signal(sig, h)
        return self.stats

    def summary(self) -> str:
        """The closing summary line (stderr): backend, events written, filtered out, lost,
        errors, and every output that did not take all events with the count and last error."""
        st = self.stats
        text = (f"backend {st.backend}; events written {sum(st.written.values()):,}, filtered "
                f"out {sum(st.filtered.values()):,}, lost {st.lost:,}, errors {st.errors}")
        for name, n in st.undelivered.items():
            text += f"; NOT WRITTEN to {name}: {n:,} events ({st.output_errors.get(name, '')})"
        return text

    def backend_stats(self) -> dict:
        """name -> the backend's own counters."""
        return {b.name: b.stats() for b in self._backends}


def _describe(exc: BaseException) -> str:
    """One line for an output error: ``strerror`` of an OSError, else the exception."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__

