"""Live collection as a source: kernel backends -> bounded queue -> self-exclusion -> assembler
-> Sysmon for Linux events, with the sensor's own events 4, 16 and 255.

The backends observe from their own threads and call :meth:`LiveSource.emit`, which blocks while
the queue is full (back-pressure): the burst then waits in the kernel's buffers, and whatever the
kernel drops comes back as a ``Loss`` observation, written as event 255 with the count. The
sensor's own pid (and helpers it starts, such as ``ldconfig`` run by ctypes) is excluded in the
kernel where the backend allows it and again here, so it never reports its own activity.

Order: observations pass through an :class:`~sysmonx.sensor.order.OrderBuffer` before they are
assembled, so each process's events come out with event 1 first and event 5 last whatever the
backends' delivery delays (bound documented there: ``order_window_s``, ``exit_hold_s``).
Backends may hand over batches (``emit.many``): one queue item per batch; while they keep
coming, the collecting loop takes them every :data:`LINGER_S` without being woken per batch.

Events of the sensor itself, as Sysmon for Linux writes them: event 16 (the configuration and its
SHA256) then 4 ``Started`` at start, 16 on every configuration change (:meth:`reload`), 4
``Stopped`` at the end (:meth:`trailer`, after the stages have finished), 255 for every loss and
backend error, and for problems of the pipeline (:meth:`error_event`: an output that lost events,
a rejected reload).

``sysmonx run --follow LOG`` runs the same source around another one instead of the kernel: the
syslog source in follow mode (:class:`~sysmonx.sources.syslog.SyslogFormat`) reading an installed
Sysmon for Linux's output. Its events pass unchanged; its unreadable lines become events 255.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional

from ..configmodel import Config
from ..core.errors import SysmonXError
from ..core.registry import SOURCES
from ..event import Event
from ..interfaces import Source
from ..schema import CURRENT, format_version
from . import observations as ob
from .assemble import IDENTITY_CHECK, Assembler
from .backends import Backend, BackendUnavailable, auxiliary_backends, choose_backend, \
    load_backend, probe
from .guard import GuardOptions, SensorGuard
from .order import OrderBuffer
from .process import FileHasher, ProcessCache

__all__ = ["LiveSource", "LiveOptions", "LiveStats", "Backend", "BackendUnavailable", "LINGER_S"]

#: While observations keep coming, the collecting loop sleeps this long between looks at the
#: queue instead of waiting on it (see :meth:`LiveSource.events`): an observation waits at most
#: this much longer before its hold (``order_window_s``) starts, and a release comes at most
#: this much after its due time. 50 ms (was 10): each look then admits, orders, assembles and
#: hands over five times as many observations with warm caches and one GIL hand-over, which
#: took the collecting loop from 48-58 to 39-41 µs of CPU per exec and the output thread
#: (larger batches) from 15-23 to 7-8 (bench/bench_live_core.py at 1,600 execs/s, three pairs,
#: load about 1; bench_live.py figures in docs/PERFORMANCE.md); events are
#: still written about ``order_window_s`` after they happen, now up to ~0.1 s later while busy.
LINGER_S = 0.05


@dataclass
class LiveOptions:
    """How live collection runs.

    Attributes:
        backend: force a tier (``ebpf``, ``audit``, ``cnproc``) or ``None`` for the best available.
        dns: run the auxiliary backends (DNS) beside the tier (when they can run).
        duration: stop after this many seconds (``None``: until stopped).
        queue_size: bound of the observation queue (back-pressure beyond it).
        backend_options: passed to each backend (buffer sizes ...).
        provider: System/Provider Name (default Sysmon for Linux's ``Linux-Sysmon``).
        exclude_own_children: also drop the activity of processes the sensor itself starts; off
            only for tests that run the sensor inside the process generating the activity.
        order_window_s, exit_hold_s: the per-process ordering bound
            (:class:`~sysmonx.sensor.order.OrderBuffer`); ``order_window_s=0`` writes in
            arrival order.
        guard: heartbeats and live tamper findings (:class:`~sysmonx.sensor.guard.GuardOptions`)
            or ``None`` for neither.
    """

    backend: Optional[str] = None
    dns: bool = True
    duration: Optional[float] = None
    queue_size: int = 65536
    backend_options: dict[str, Any] = field(default_factory=dict)
    provider: Optional[str] = None
    exclude_own_children: bool = True
    order_window_s: float = 0.25
    exit_hold_s: float = 2.5
    guard: Optional[GuardOptions] = None


@dataclass
class LiveStats:
    """Counters: ``observations`` by type, ``lost`` (sum of Loss counts), ``errors`` (events
    255 the source wrote for failures), ``host_notes`` (events 255 that state a fact about the
    host, :attr:`~.observations.BackendError.host_fact`), ``backend`` (the tier, or
    ``follow <source>``), ``skipped`` (tier -> why it was not chosen), ``order_late``
    (observations that arrived too late to be put in order)."""

    observations: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    errors: int = 0
    backend: str = ""
    skipped: dict[str, str] = field(default_factory=dict)
    order_late: int = 0
    host_notes: int = 0


class _Emitter:
    """What backends get as ``emit``: :meth:`LiveSource.emit`, with ``many`` for batches."""

    __slots__ = ("_emit", "many")

    def __init__(self, source: LiveSource) -> None:
        self._emit = source.emit
        self.many = source.emit_many

    def __call__(self, o: ob.Observation) -> None:
        self._emit(o)


def optional_events(config: Optional[Config]) -> frozenset[int]:
    """Event IDs whose tag the config has a rule set for: what a backend collects of the events
    that are off unless a config asks for them (ImageLoad, MemfdCreate, ExecMemory)."""
    if config is None:
        return frozenset()
    tags = config.tags_used()
    return frozenset(eid for eid, ev in CURRENT.events.items() if ev.tag in tags)


def _hasher(config: Optional[Config]) -> FileHasher:
    algos = config.hash_algorithms if config and config.hash_algorithms else ["SHA256"]
    return FileHasher(algos)


@SOURCES.register
class LiveSource(Source):
    """Live collection on this host (or, with ``inner``, an installed Sysmon for Linux followed).

    Args:
        config: the configuration in force (its hash algorithms, and event 16), or ``None``.
        options: :class:`LiveOptions`.
        config_label: what event 16 names as the configuration (default: the config's path).
        inner: a live source to forward instead of tracing (``run --follow``).
        on_status: one-line status messages (backend chosen, tiers skipped ...).
    Attributes:
        started: set once events 16 and 4 are out (the service waits for the pidfile).
        stats: :class:`LiveStats`.
    """

    name = "live"
    summary = "this host's kernel (eBPF, audit or proc connector tiers, DNS), Sysmon for Linux " \
              "events"
    live = True

    def __init__(self, config: Optional[Config] = None, options: Optional[LiveOptions] = None,
                 *, config_label: Optional[str] = None, inner: Optional[Source] = None,
                 on_status: Optional[Callable[[str], None]] = None) -> None:
        self.options = options or LiveOptions()
        self.config = config
        self.config_label = config_label
        self.inner = inner
        self.on_status = on_status or (lambda msg: None)
        self.stats = LiveStats()
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=self.options.queue_size)
        self.cache = ProcessCache()
        self.assembler = Assembler(self.cache, _hasher(config),
                                   **({"provider": self.options.provider}
                                      if self.options.provider else {}))
        self.order = OrderBuffer(self.options.order_window_s, self.options.exit_hold_s)
        self.self_pid = os.getpid()
        self.started = threading.Event()
        self._stop = threading.Event()
        self._own_children: set[int] = set()
        self._backends: list[Backend] = []
        self._started_backends: list[Backend] = []
        self._collected: Optional[frozenset] = None
        self._pending: deque[Event] = deque()
        self._schema = ""
        #: the self-protection of this run (set when the source starts, with ``options.guard``)
        self.guard: Optional[SensorGuard] = None
        #: this run's proof for other SysmonX sensors (sensor/peers.py), with the guard's trace
        self._run_file: Optional[Any] = None
        #: ``() -> (events written, events lost, {output: (not taken, taken, failure
        #: episodes, latest error)})`` for the guard (set by the run;
        #: :attr:`SensorGuard.counters`)
        self.guard_counters: Callable[[], tuple[int, int, Mapping[str, tuple[int, int, int, str]]]] = \
            lambda: (0, 0, {})

    # -- backends' side ----------------------------------------------------------------------------

    def emit(self, o: Any) -> None:
        """Backend callback: queue one observation (or a list: a batch), blocking while the
        queue is full."""
        while True:
            try:
                self.queue.put(o, timeout=0.5)
                return
            except queue.Full:
                if self._stop.is_set():
                    return

    def emit_many(self, observations: Iterable[ob.Observation]) -> None:
        """Backend callback for a batch (``emit.many``, see
        :meth:`~sysmonx.sensor.backends.base.Backend.emit_all`): one queue item."""
        self.emit(list(observations))

    # -- Source ----------------------------------------------------------------------------------

    def open(self) -> None:
        """Start the backends (or the followed source).

        Raises:
            BackendUnavailable: no tier can run (or the forced one cannot); nothing was started.
            SourceUnavailable: the followed source cannot be opened.
        """
        # event 4's SchemaVersion is the sensor's own schema version (the one ``sysmonx -i``
        # prints), not the configuration's: Sysmon for Linux loaded a 4.70 configuration and
        # wrote 4.81, its own (corpus linux/ syslog; new-user report s13 #7)
        self._schema = format_version(CURRENT.version)
        if self.inner is not None:
            self.inner.on_error = self._inner_error
            self.inner.open()
            self.stats.backend = f"follow {getattr(self.inner, 'path', self.inner.name)}"
            return
        self.cache.prime()
        self._claim_run_file()
        try:
            self._start_backends()
        except BaseException:
            if self._run_file is not None:
                self._run_file.close()
                self._run_file = None
            raise
        self._collected = self._collecting()

    def _claim_run_file(self) -> None:
        """With the guard's bpf() trace (root): this run's run file (sensor/peers.py), made
        before the backends load their BPF objects so that another SysmonX sensor already
        running knows these loads are a sensor's; without one (said on the status line) the
        run goes on and its peers report its by-id opens as any process's."""
        g = self.options.guard
        if g is None or not g.trace or os.geteuid() != 0 or self._run_file is not None:
            return
        from .peers import RunFile
        try:
            self._run_file = RunFile()
        except OSError as exc:
            self.on_status(f"guard: no run file for other SysmonX sensors on this host "
                           f"({exc.strerror or exc}): they will report this sensor's BPF "
                           "lookups as any process's")

    def _start_backends(self) -> None:
        """Start the best tier (or the forced one) and the auxiliary backends. A tier that passed
        its probe but fails to start (its eBPF object does not build or load, audit is held by
        another program) is reported and the next tier is tried, unless ``--backend`` forced it.

        Raises:
            BackendUnavailable: no tier could start (every reason listed), or the forced one.
        """
        failed: dict[str, str] = {}
        while True:
            name, skipped = choose_backend(self.options.backend, failed)
            try:
                self._start_tier(name, skipped)
                return
            except BackendUnavailable as exc:
                if self.options.backend:
                    raise
                failed[name] = f"failed to start: {exc}"
                self.on_status(f"backend {name} failed to start, trying the next tier: {exc}")

    def _start_tier(self, name: str, skipped: dict[str, str]) -> None:
        """Start tier ``name`` and the auxiliary backends (``skipped``: tiers passed over, with
        why). Raises BackendUnavailable (nothing left running) when the tier cannot start."""
        self.stats.backend, self.stats.skipped = name, skipped
        for tier, reason in skipped.items():
            if not reason.startswith("failed to start: "):
                self.on_status(f"backend {tier} skipped: {reason}")
        names = [name]
        if self.options.dns:
            for aux in auxiliary_backends():
                why = probe(aux)
                if why is None:
                    names.append(aux)
                else:
                    self.on_status(f"backend {aux} skipped: {why}")
        excluded = frozenset({self.self_pid})
        opts = dict(self.options.backend_options)
        opts.setdefault("optional_events", optional_events(self.config))
        opts.setdefault("on_status", self.on_status)  # a backend's lines while it runs
        for n in names:
            backend = load_backend(n)(_Emitter(self), excluded, opts)
            try:
                backend.start()
            except BackendUnavailable as exc:
                if n == name:
                    self._stop_backends()
                    raise
                self.on_status(f"backend {n} failed to start: {exc}")
                continue
            self._backends.append(backend)
            self._started_backends.append(backend)
            self.on_status(f"backend {n} started")

    def events(self) -> Iterator[Optional[Event]]:
        """16 and 4 ``Started``, then every event collected until stopped (``None`` while idle),
        then what the backends queued before they stopped."""
        yield self._config_event()
        yield self.assembler.service_state("Started", self._schema, time.time_ns())
        guard = self._start_guard()
        if guard is not None:
            yield from guard.start()
        self.started.set()
        duration = self.options.duration
        deadline = None if duration is None else time.monotonic() + duration
        last_expire = time.monotonic()
        pending = self._pending
        get, get_nowait = self.queue.get, self.queue.get_nowait
        handle = self._handle
        order = self.order
        inner = iter(self.inner.events()) if self.inner is not None else None
        busy = False
        # a look that took this many items may have left backends waiting on a full queue
        # (back-pressure): the next look comes at once, not after LINGER_S
        full = max(1, min(1025, self.queue.maxsize or 1025))
        hurry = False
        while not self._stop.is_set():
            if guard is not None:
                pending.extend(guard.collect())
            while pending:
                yield pending.popleft()
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if inner is not None:
                item = next(inner, self)
                if item is self:
                    break
                yield item  # type: ignore[misc]
                continue
            due = order.next_due()
            # wake for the next release, but at most every LINGER_S: what arrives meanwhile
            # is taken in one batch (a release comes at most that much after its due time)
            wait = 0.1 if due is None else min(0.1, max(LINGER_S, due - now))
            try:
                if busy:
                    # Observations came last round: let the next ones gather for a few ms
                    # and take them without being woken. A thread waiting on the queue is
                    # woken by every put (a futex call and a GIL hand-over per backend batch,
                    # the largest cost of a busy sensor); one sleeping is not.
                    if not hurry:
                        time.sleep(min(wait, LINGER_S))
                    o = get_nowait()
                else:
                    o = get(timeout=wait)
            except queue.Empty:
                busy = False
            else:
                busy = True
                arrived = time.monotonic()  # the hold counts from here
                handle(o, arrived)
                taken = 1
                for _ in range(1024):
                    try:
                        o = get_nowait()
                    except queue.Empty:
                        break
                    handle(o, arrived)
                    taken += 1
                hurry = taken >= full
            self._release(time.monotonic())
            if not pending:
                yield None  # nothing now: the loop ticks and looks at requests
            if now - last_expire > 5:
                self.cache.expire(time.time_ns())
                last_expire = now
        if guard is not None:
            guard.stopping()
        self._stop_backends()
        while True:  # what the backends queued before they stopped
            try:
                o = self.queue.get_nowait()
            except queue.Empty:
                break
            handle(o, time.monotonic())
        for held in order.drain():
            self._assemble(held, float("inf"))
        pending.extend(order.drain_exits())
        self.stats.order_late = order.late
        while pending:
            yield pending.popleft()

    def _start_guard(self) -> Optional[SensorGuard]:
        if self.options.guard is None:
            return None
        cfg = self.config
        self.guard = SensorGuard(self.options.guard, self.assembler, backend=self.stats.backend,
                                 config_hash=f"SHA256={cfg.sha256}" if cfg and cfg.sha256
                                 else "-",
                                 config_heartbeat_s=cfg.heartbeat_interval if cfg else None,
                                 backends=self._started_backends,
                                 on_status=self.on_status, run_file=self._run_file)
        self.guard.counters = self.guard_counters
        return self.guard

    def _handle(self, item: Any, now: float) -> None:
        """Admit one observation from the queue (self-exclusion, counters) into the order
        buffer, and assemble what it lets through at once. A list is a batch (admitted in one
        pass and handed to the order buffer in one call: the same result as one at a time)."""
        stats = self.stats
        self_pid, own = self.self_pid, self._own_children
        children = self.options.exclude_own_children
        execd, fork, exited, loss, error = ob.ProcessExec, ob.ProcessFork, ob.ProcessExit, \
            ob.Loss, ob.BackendError
        seen: dict = {}
        keep = []
        for o in (item if type(item) is list else (item,)):
            kind = type(o)
            seen[kind] = seen.get(kind, 0) + 1
            pid = getattr(o, "pid", None)
            if pid == self_pid or pid in own:
                if kind is exited:
                    own.discard(pid)
                continue
            if (kind is execd or kind is fork) and o.ppid == self_pid and children:
                # a helper the sensor itself started (ldconfig from ctypes, journalctl ...):
                # it is the sensor's own activity and must not feed back into its output
                own.add(o.pid)
                continue
            if kind is loss:
                stats.lost += o.count
            elif kind is error:
                if o.host_fact:
                    stats.host_notes += 1
                else:
                    stats.errors += 1
            keep.append(o)
        counts = stats.observations
        for kind, n in seen.items():
            counts[kind.__name__] += n
        if keep:
            assemble = self._assemble
            for ready in self.order.push_many(keep, now):
                assemble(ready, now)

    def _release(self, now: float) -> None:
        """Assemble the observations and queue the exit events whose hold has passed.

        A fork released right before the exec of the same process (same pid and start time)
        is not assembled when that exec carries the parent, the start time and the uid: the
        fork's only effect, the cache entry with its parent's facts, would be replaced by the
        exec's before anything read it, and the exec takes nothing from it (the events are
        the same; about a tenth of the collecting loop's work per exec). Execs and exits, the
        busiest, are assembled here without :meth:`_assemble`'s dispatch (same steps)."""
        order = self.order
        ready = order.ready(now)
        if ready:
            last = len(ready) - 1
            assemble = self._assemble
            fork, execd, exited = ob.ProcessFork, ob.ProcessExec, ob.ProcessExit
            asm = self.assembler
            build_exec, build_exit = asm.exec_events, asm.exit_event
            pending, hold_exit, peek = self._pending, order.hold_exit, self.cache.peek
            checks = IDENTITY_CHECK
            for i, item in enumerate(ready):
                kind = type(item)
                if kind is execd and kind not in checks:
                    pending.extend(build_exec(item))
                    info = peek(item.pid)
                    if info is not None and info.extra and info.extra.get("late_exec"):
                        self._late_exec(info)
                elif kind is exited and kind not in checks:
                    held = hold_exit(build_exit(item), item.pid, now)
                    if held:
                        pending.extend(held)
                elif kind is fork and i < last:
                    nxt = ready[i + 1]
                    if type(nxt) is execd and nxt.pid == item.pid and \
                            nxt.start_ticks is not None and nxt.start_ticks == item.start_ticks \
                            and nxt.ppid is not None and nxt.uid is not None:
                        continue
                    assemble(item, now)
                else:
                    assemble(item, now)
        self._pending.extend(order.exits_ready(now))

    def _assemble(self, o: Any, now: float) -> None:
        pending = self._pending
        kind = type(o)
        for event in self.assembler.build_events(o):
            if kind is ob.ProcessExit and event.event_id == 5:
                held = self.order.hold_exit(event, o.pid, now)
                if held:
                    pending.extend(held)
            else:
                pending.append(event)
        if kind is ob.ProcessExec:
            info = self.cache.peek(o.pid)
            if info is not None and info.extra.get("late_exec"):
                self._late_exec(info)

    def _late_exec(self, info: Any) -> None:
        """The exec of a process whose exit event is still held came late: the process exited
        running this image (the held event 5 takes its GUID, Image and User)."""
        held = self.order.held_exit(info.pid)
        if held is not None:
            held.data["ProcessGuid"] = info.guid
            held.data["Image"] = info.image or "-"
            held.data["User"] = info.user

    def _inner_error(self, err: SysmonXError) -> None:
        """What the followed source reports: a repaired record is only counted (by the
        source); anything else is written as event 255."""
        assert self.inner is not None
        if getattr(err, "severity", "error") == "repaired":
            return
        self.stats.errors += 1
        self._pending.append(self.assembler.error(self.inner.name, str(err), time.time_ns()))

    def _config_event(self) -> Event:
        now = time.time_ns()
        cfg = self.config
        if cfg is None:
            return self.assembler.config_change("-", None, now)
        return self.assembler.config_change(self.config_label or cfg.path, cfg.sha256, now)

    def trailer(self) -> Iterable[Event]:
        """The guard's last findings and heartbeat, then event 4 ``Stopped`` (when the sensor
        had started); the guard then records the clean stop."""
        if self.started.is_set():
            if self.guard is not None:
                yield from self.guard.finish()
            yield self.assembler.service_state("Stopped", self._schema, time.time_ns())
            if self.guard is not None:
                self.guard.mark_clean()

    def now_ns(self) -> Optional[int]:
        """Wall-clock time (UTC ns)."""
        return time.time_ns()

    def error_event(self, ident: str, description: str) -> Optional[Event]:
        """Event 255 in the sensor's envelope. A refused reload (``ConfigReload``) is also told
        to the guard, whose ``config_modified`` finding then says so."""
        if ident == "ConfigReload" and self.guard is not None:
            self.guard.config_reload_refused(description)
        return self.assembler.error(ident, description, time.time_ns())

    def reload(self, config: Optional[Config]) -> None:
        """Put ``config`` in force: its hash algorithms, its heartbeat interval (the guard's);
        event 16 next, then, when the new configuration collects less than the one it replaces
        (:func:`~sysmonx.filtering.reduction.reduction`), the guard's ``config_weakened``
        finding."""
        previous, self.config = self.config, config
        self.assembler.hasher = _hasher(config)
        if "optional_events" not in self.options.backend_options:
            for backend in self._backends:
                switch = getattr(backend, "set_optional_events", None)
                if switch is not None:
                    switch(optional_events(config))
            if self._collected is not None:
                self._collected = self._collecting()
        self._pending.append(self._config_event())
        if self.guard is not None:
            from ..filtering.reduction import describe, reduction
            reduced = reduction(previous, config)
            self.guard.config_reloaded(f"SHA256={config.sha256}" if config and config.sha256
                                       else "-",
                                       config.heartbeat_interval if config else None,
                                       reduced=describe(reduced),
                                       reduced_ids=[e.event_id for e in reduced.events])

    def stop(self) -> None:
        """End collection soon (signal-safe)."""
        self._stop.set()
        if self.inner is not None:
            self.inner.stop()

    def _stop_backends(self) -> None:
        backends, self._backends = self._backends, []
        for b in backends:
            b.stop()

    def close(self) -> None:
        """Stop the backends (if still running) and the followed source."""
        self._stop.set()
        self._stop_backends()
        if self.guard is not None:
            self.guard.close()
        if self._run_file is not None:  # also when the guard never started
            self._run_file.close()
        if self.inner is not None:
            self.inner.close()

    def collected_events(self) -> Optional[frozenset]:
        """The event IDs the started backends collected (each one's
        :meth:`~sysmonx.sensor.backends.base.Backend.collecting`, read when they started and
        after a reload switched optional events); ``None`` before the backends started, or
        when events come from a followed source instead (what it holds is not known)."""
        return self._collected

    def _collecting(self) -> frozenset:
        out: frozenset = frozenset()
        for b in self._started_backends:
            out |= b.collecting()
        return out

    def blind_episode_count(self) -> int:
        """How many times a started backend was blind (tier B: audit disabled while it ran;
        :meth:`~.backends.audit.AuditBackend.blind_episodes`): events were missed then and
        their number is not known."""
        return sum(b.blind_episodes()[0] for b in self._started_backends)

    def backend_stats(self) -> dict[str, dict]:
        """Backend name -> its own counters (``follow``: the followed source's)."""
        out = {b.name: b.stats() for b in self._started_backends}
        stats = getattr(self.inner, "stats", None)
        if callable(stats):
            out["follow"] = stats()
        return out
