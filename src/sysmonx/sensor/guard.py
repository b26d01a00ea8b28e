"""The sensor's self-protection: heartbeats (event 202), and TamperFinding events (201) for the
live techniques an attacker uses to blind, stop, reconfigure or fool it.

One :class:`SensorGuard` per live run. :class:`~sysmonx.sensor.live.LiveSource` calls
:meth:`SensorGuard.start` after its events 16 and 4 ``Started``, :meth:`SensorGuard.collect`
on every turn of its loop (what the watchers found, and the heartbeat when due) and
:meth:`SensorGuard.finish` before event 4 ``Stopped``; after 4 ``Stopped`` is out,
:meth:`SensorGuard.mark_clean` records the clean end.

What is watched, and how (technique names: :data:`~sysmonx.stages.tamperfinding.TECHNIQUES`):

* ``unclean_shutdown``: the state file (``<state_dir>/state.json``, 0600 in a 0700 directory)
  says ``running`` at start: the previous run never wrote 4 ``Stopped`` (kill -9, crash, power
  loss). The finding carries that run's pid, start and last heartbeat sequence and time.
* heartbeat: event 202 at start, every :attr:`SensorGuard.heartbeat_s` seconds (the command
  line's ``--heartbeat``, else the configuration's SysmonX ``<HeartbeatInterval>``, else 60; a
  reload applies a changed ``<HeartbeatInterval>`` at once) and before 4 ``Stopped``; ``Sequence``
  continues across restarts (from the state file), ``SecondsSincePrevious`` is the time since
  the previous heartbeat, also across restarts (0 when there was none: no state), so the first
  heartbeat after a kill -9, a SIGSTOP or a hung loop says how long the sensor was silent;
  ``EventsWritten``/``EventsLost`` count since the previous heartbeat.
* ``sensor_ptrace``: ``TracerPid`` of every thread of the sensor (``/proc/self/task/*/status``),
  polled every ``poll_s``; the tracer is the actor.
* ``sensor_signal``: tracefs ``signal:signal_generate`` for signals whose target is the sensor
  (kernel filter on the target pid), in a private tracefs instance; the sender is the actor.
  SIGSTOP is read once the sensor runs again; SIGTERM before 4 ``Stopped``; SIGKILL cannot be
  reported by the process it kills (the next start reports ``unclean_shutdown``). A SIGHUP
  asks for a configuration reload (an admin's ``systemctl reload``, ``sysmonx -c``): one that
  a reload put in force within :data:`HUP_WAIT_S` is a configuration change, not tampering:
  no finding (event 16 ``ServiceConfigurationChange`` with the new hash is the record, as for
  Sysmon's own ``sysmon -c``; the sender is said on the status line and counted in
  :meth:`SensorGuard.summary`). A SIGHUP whose reload was refused (event 255 ``ConfigReload``)
  or that no reload followed within :data:`HUP_WAIT_S` stays a ``sensor_signal`` finding that
  says which.
* ``config_weakened``: an applied reload whose configuration collects less than the one before
  (:mod:`sysmonx.filtering.reduction`: event types no longer logged, new exclude rules, include
  rules removed, FieldSizes cutting a field; and heartbeats turned off by the configuration's
  ``<HeartbeatInterval>``): blinding by reconfiguration (ATT&CK T1562.006, T1562.001), which
  event 16 alone does not show. Written after that reload's event 16, with the SIGHUP's sender
  as the actor once the SIGHUP is matched (:meth:`SensorGuard.config_reloaded`); when no SIGHUP
  is seen for the reload within :data:`HUP_WAIT_S` (or signals are not traced) the actor is
  the documented unknown and the Details say why. The filter never drops this finding (a
  configuration that excludes TamperFinding must not hide itself: filtering/stage.py). A
  reload that only adds collection stays event 16 alone; its sender is on the status line and
  in the summary only (event 16 keeps Sysmon's fields).
* ``bpf_map_tamper`` and event 100: tracefs ``syscalls:sys_enter_bpf``/``sys_exit_bpf`` of other
  processes: a ``BPF_MAP_GET_FD_BY_ID``/``BPF_PROG_GET_FD_BY_ID``/``BPF_LINK_GET_FD_BY_ID``
  whose new fd (``/proc/PID/fdinfo``) is one of the sensor's maps, programs or links is a
  finding; program loads, attaches, links, raw tracepoint opens and detaches are event 100.
  Another SysmonX sensor on the host (:mod:`sysmonx.sensor.peers`: it proves it with its run
  file) names the programs others load for its own event 100: through a copy of the loader's
  descriptor (no open by id) or, when the loader closed it, by id after announcing the id in
  its run file. A by-id open that was closed before it could be identified is no finding when
  the opener is such a peer and every such open was announced, of an object that is not this
  sensor's (counted in :meth:`SensorGuard.summary`); anything else a peer opens stays a
  finding whose Details name it ``another SysmonX sensor (pid N, command line ...)``.
* ``bpf_detach``: the backends' :meth:`~sysmonx.sensor.backends.base.Backend.integrity`
  (eBPF: each program still attached), and ``BPF_LINK_DETACH``/``BPF_PROG_DETACH`` by another
  process on one of the sensor's links.
* ``audit_rules_changed``: the audit backend's :meth:`integrity` (rules keyed ``sysmonx``
  missing, audit disabled, the audit pid taken).
* ``config_modified``: the config file's content differs from the configuration in force for
  longer than ``config_grace_s`` without a reload (SIGHUP), or the file was removed; when a
  reload of that very file was refused (event 255 ``ConfigReload``), the finding says so.
* ``preload_hook``: ``/etc/ld.so.preload`` present at start, created, changed or removed;
  ``LD_PRELOAD`` in the sensor's environment; a library mapped into the sensor from a
  world-writable directory or named by the preload list.
* ``output_blocked``: an output file or the syslog socket removed or replaced (another inode at
  the path), or an output failing: one finding per failure episode of each output, naming it
  and its error. An episode is the output's own loss period (:mod:`sysmonx.pipeline.fanout`):
  it starts with the first event the output does not take (stderr: ``output ... fails``) and
  ends when it takes one again with nothing held for it (stderr: ``... works again``, and the
  event 255 ``Output`` with the count); the check reads the episodes started since the previous
  check, so two episodes within one check are two findings (docs/RESILIENCE.md). A finding the
  failing output itself does not take is held for it (fanout).
* ``clock_changed``: the wall clock moved against the monotonic clock by more than
  ``clock_jump_s``.
* ``self_modified``: a file recorded in the install manifest (``sysmonx -i``) whose SHA256
  differs (checked at start).

Checks run on one daemon thread (``sysmonx-guard``); findings wait in a thread-safe queue
until the loop collects them. Nothing here raises into the loop: a check that cannot run says
why once (``on_status``) and is skipped.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import select
import threading
import time
from collections import deque
from pathlib import Path
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional

from ..event import Event
from ..stages.tamperfinding import HEARTBEAT_EVENT_ID, tamper_finding
from ..textsafe import visible
from . import bpfsys, peers
from .assemble import Assembler, utc_time
from .threadname import set_native_name

__all__ = ["GuardOptions", "SensorGuard", "SensorState", "read_state", "sd_notify",
           "PRELOAD_PATH", "DEFAULT_HEARTBEAT_S", "HUP_WAIT_S", "replaceable_by_others"]

PRELOAD_PATH = "/etc/ld.so.preload"
#: Heartbeat ``EventsLost`` when a source was blind in the window (docs/RESILIENCE.md): events
#: were missed and their number cannot be known; the documented unknown value, not 0.
UNKNOWN_COUNT = "-"
#: Seconds between heartbeats when neither the command line nor the configuration says.
DEFAULT_HEARTBEAT_S = 60.0


def replaceable_by_others(path: str) -> Optional[str]:
    """Why a user other than root (and the sensor's own user) could have written or could
    replace the file at ``path``, or ``None``: the file is owned by another user or writable by
    group/others, or one of its directories is owned by another user, group-writable for a
    non-root group, or world-writable without the sticky bit (in a sticky world-writable
    directory such as /tmp only the owner of an entry can replace it, so the file's owner
    decides). A path is judged by the permissions, not by its name: SysmonX installed under
    ``/tmp/x`` (root's directories) is not flagged, a library a user dropped in ``/tmp`` is.
    ``None`` as well when the file cannot be inspected (gone)."""
    trusted = {0, os.geteuid()}
    try:
        st = os.stat(path)
    except OSError:
        return None
    if st.st_uid not in trusted:
        return f"owned by uid {st.st_uid}"
    if st.st_mode & 0o002:
        return "writable by anyone"
    if st.st_mode & 0o020 and st.st_gid not in trusted:
        return f"writable by group {st.st_gid}"
    d = os.path.dirname(path)
    while True:
        try:
            ds = os.stat(d)
        except OSError:
            return None
        if ds.st_uid not in trusted:
            return f"in {d}, owned by uid {ds.st_uid}"
        if ds.st_mode & 0o002 and not ds.st_mode & 0o1000:
            return f"in {d}, writable by anyone"
        if ds.st_mode & 0o020 and ds.st_gid not in trusted and not ds.st_mode & 0o1000:
            return f"in {d}, writable by group {ds.st_gid}"
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent
_SIGNAMES = {1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 6: "SIGABRT", 9: "SIGKILL", 10: "SIGUSR1",
             12: "SIGUSR2", 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM", 18: "SIGCONT",
             19: "SIGSTOP", 20: "SIGTSTP", 21: "SIGTTIN", 22: "SIGTTOU"}
#: Signals never reported: SIGCHLD (children exiting), SIGWINCH, SIGURG.
_IGNORED_SIGNALS = frozenset({17, 28, 23})
#: How long a SIGHUP waits for the reload it asks for before it is a ``sensor_signal`` finding
#: (seconds; a reload's outcome seen before its SIGHUP's trace line is kept as long).
HUP_WAIT_S = 5.0
#: A reload's outcome answers the SIGHUPs sent up to this long after it (ns): the trace's
#: times are converted from the monotonic clock, the outcome's are read from the wall clock.
_HUP_SLACK_NS = 50_000_000
#: How long a finding waits for its actor to appear in the process cache (seconds).
ACTOR_WAIT_S = 2.0
#: The costlier checks (the sensor's memory map, its fds for the backends' integrity, the
#: preload file) run every this many turns of ``poll_s`` (every 2.5 s by default).
SLOW_EVERY = 5


@dataclass
class GuardOptions:
    """What the guard does.

    Attributes:
        heartbeat_s: seconds between heartbeats (0: none), fixed for the run whatever the
            configuration says (the command line's ``--heartbeat``); ``None``: the
            configuration's ``<HeartbeatInterval>`` (followed across reloads), else
            :data:`DEFAULT_HEARTBEAT_S`.
        state_dir: where ``state.json`` lives (heartbeat sequence, running flag); ``None``: no
            state (sequence starts at 1, no ``unclean_shutdown``).
        config_path: the config file to watch (``None``: not watched).
        outputs: output file paths and the syslog socket path to watch.
        poll_s: seconds between checks.
        trace: watch signals and bpf() calls through tracefs (root).
        config_grace_s: how long the file may differ from the running config before it is a
            finding (an edit followed by SIGHUP is not).
        clock_jump_s: wall-clock jump that is a finding.
        install_manifest: JSON file ``{path: sha256}`` written by ``sysmonx -i``.
    """

    heartbeat_s: Optional[float] = None
    state_dir: Optional[str] = None
    config_path: Optional[str] = None
    outputs: tuple[str, ...] = ()
    poll_s: float = 0.5
    trace: bool = True
    config_grace_s: float = 2.0
    clock_jump_s: float = 2.0
    install_manifest: Optional[str] = None


@dataclass
class SensorState:
    """The state file: ``sequence`` (last heartbeat), ``running`` (no clean stop yet), ``pid``,
    ``started`` and ``last_heartbeat`` (Sysmon UtcTime text), ``last_heartbeat_ns`` (ns since
    1970, 0 when none), ``start_ticks`` (the writer's ``/proc/PID/stat`` start time, clock
    ticks since boot; 0 when unknown or written before 2026-12-07: it proves that the process
    holding ``state.lock`` is the sensor that wrote the file, :meth:`SensorGuard._own_state_dir`)."""

    sequence: int = 0
    running: bool = False
    pid: int = 0
    started: str = ""
    last_heartbeat: str = ""
    last_heartbeat_ns: int = 0
    extra: dict = field(default_factory=dict)
    start_ticks: int = 0


def read_state(state_dir: str) -> Optional[SensorState]:
    """The state in ``state_dir/state.json``, ``None`` when absent.

    Raises:
        ValueError: the file exists but is not a state file (damaged or edited).
    """
    path = os.path.join(state_dir, "state.json")
    try:
        with open(path, "rb") as f:
            raw = f.read(1 << 16)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror}") from None
    try:
        d = json.loads(raw)
        return SensorState(int(d["sequence"]), bool(d["running"]), int(d.get("pid", 0)),
                           str(d.get("started", "")), str(d.get("last_heartbeat", "")),
                           int(d.get("last_heartbeat_ns", 0)),
                           start_ticks=int(d.get("start_ticks", 0)))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a SysmonX state file ({exc})") from None


def sd_notify(message: str) -> bool:
    """Send ``message`` (``READY=1``, ``WATCHDOG=1`` ...) to systemd's ``NOTIFY_SOCKET``, if the
    service manager gave one (``Type=notify``); ``False`` when there is none or it failed."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    import socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(message.encode())
        return True
    except OSError:
        return False


def _write_state(state_dir: str, st: SensorState) -> None:
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    path = os.path.join(state_dir, "state.json")
    tmp = f"{path}.{os.getpid()}.tmp"
    data = json.dumps({"sequence": st.sequence, "running": st.running, "pid": st.pid,
                       "started": st.started, "last_heartbeat": st.last_heartbeat,
                       "last_heartbeat_ns": st.last_heartbeat_ns,
                       "start_ticks": st.start_ticks}).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _sha256(path: str) -> Optional[str]:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def _seconds(s: float) -> str:
    return "none (0)" if s <= 0 else f"{s:g} s"


def _ident(path: str) -> Optional[tuple[int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class SensorGuard:
    """Heartbeats and live tamper findings for one run (module docstring).

    Args:
        options: :class:`GuardOptions`.
        assembler: the source's :class:`~sysmonx.sensor.assemble.Assembler` (the envelope of
            the events, the process cache for actors).
        backend: the tier's name (Heartbeat ``Backend``), or what is followed.
        config_hash: ``SHA256=<hex>`` of the configuration in force, or ``-``.
        config_heartbeat_s: that configuration's ``<HeartbeatInterval>`` in seconds (``None``:
            not set); used unless ``options.heartbeat_s`` fixes the interval.
        backends: the running backends (their :meth:`integrity` and BPF objects).
        on_status: one-line status messages.
        run_file: this run's :class:`~sysmonx.sensor.peers.RunFile` (the guard publishes the
            sensor's BPF ids in it, announces its by-id opens there and removes it at the end).
    Attributes:
        counters: callable returning ``(events written, events lost, {output label: (events it
            did not take, events it took, failure episodes started, its latest error)})``
            totals so far (set by the run, :meth:`Sensor.guard_counters
            <sysmonx.pipeline.live.Sensor.guard_counters>`; zeros until then).
            Written: by the output that took the most; lost: in the kernel or queues, or taken
            by no output.
        findings: technique -> findings so far.
        heartbeat_s: seconds between heartbeats in force (0: none).
    """

    def __init__(self, options: GuardOptions, assembler: Assembler, *, backend: str = "",
                 config_hash: str = "-", config_heartbeat_s: Optional[float] = None,
                 backends: Iterable[Any] = (),
                 on_status: Optional[Callable[[str], None]] = None,
                 run_file: Optional[peers.RunFile] = None) -> None:
        self.options = options
        #: this sensor's proof for other SysmonX sensors (sensor/peers.py), or None
        self.run_file = run_file
        #: by-id opens of other objects by peer sensors, announced by them: not findings
        self.peer_opens = 0
        self.assembler = assembler
        self.backend = backend
        self.config_hash = config_hash
        self.backends = list(backends)
        self.on_status = on_status or (lambda msg: None)
        self.counters: Callable[[], tuple[int, int, Mapping[str, tuple[int, int, int, str]]]] = \
            lambda: (0, 0, {})
        #: CPU time (s) of the guard's thread so far (its checks and the trace reading)
        self.cpu_s = 0.0
        self._started_mono = time.monotonic()
        self.findings: dict[str, int] = {}
        self.pid = os.getpid()
        self._out: deque[Event] = deque()
        self._deferred: list[tuple[float, int, Event]] = []
        self._lock = threading.Lock()
        #: the held ``state.lock`` of ``options.state_dir`` (:meth:`_own_state_dir`)
        self._state_lock_fd: Optional[int] = None
        #: why this run keeps no state although a state directory was given, or ""
        self.state_note = ""
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._state = SensorState()
        self._seq = 0
        self._hb_this_run = 0
        self._last_counts = (0, 0)
        self._last_hb_ns = 0
        self._last_hb_mono: Optional[float] = None
        self._next_hb = 0.0
        self._trace: Optional[_GuardTrace] = None
        #: signals to the sensor are traced (the trace started; stays True once it stopped)
        self._traced = False
        #: reads of the signal trace that failed (a SIGHUP may have been missed)
        self._trace_errors = 0
        self._said: set[str] = set()
        self.heartbeat_s = self._interval(config_heartbeat_s)
        # baselines
        self._tracers: dict[int, int] = {}
        self._cfg_ident: Optional[tuple] = None
        self._cfg_disk: Optional[str] = None
        self._cfg_since: Optional[float] = None
        self._cfg_reported: Optional[str] = None
        self._cfg_refused: Optional[tuple] = None  # (file signature, reason) of a refused reload
        self._preload: Optional[str] = None
        # SIGHUPs not yet answered by a reload: [deadline (monotonic), sent (ns), pid, text];
        # reload outcomes kept for SIGHUPs traced later: [expiry (monotonic), at (ns), refusal
        # reason or None when applied, hash, what it reduced (config_weakened Details) or None]
        self._hups: list[list] = []
        self._reload_outcomes: list[list] = []
        #: SIGHUPs answered by an applied reload (configuration changes, not findings)
        self.reloads_by_signal = 0
        self._maps_seen: set[str] = set()
        self._outputs: dict[str, Optional[tuple[int, int]]] = {}
        #: output label -> its failure episodes reported so far
        self._episodes_seen: dict[str, int] = {}
        self._clock = time.time_ns() - time.monotonic_ns()
        self._integrity_seen: set[tuple[str, str]] = set()
        #: id(backend) -> (its blind episodes, blind then) at the previous heartbeat
        #: (:meth:`_blind`)
        self._blind_seen: dict[int, tuple[int, bool]] = {}
        self._stopping = False
        usec = os.environ.get("WATCHDOG_USEC", "")
        wpid = os.environ.get("WATCHDOG_PID", "")
        self._watchdog_s = int(usec) / 1e6 if usec.isdigit() and (
            not wpid or wpid == str(self.pid)) else 0.0
        self._next_watchdog = 0.0

    # --- findings ----------------------------------------------------------------------------

    def finding(self, technique: str, details: str, *, pid: Optional[int] = None,
                when: Optional[int] = None) -> None:
        """Queue one TamperFinding (thread-safe); ``pid`` is the actor (its GUID and image from
        the process cache). An actor already gone and not yet in the cache (a short-lived
        ``kill`` or ``bpftool``: its exec is still in the backends' ordering window) is looked
        up again for up to :data:`ACTOR_WAIT_S` before the finding goes out with the unknown
        values."""
        ev = tamper_finding(technique, details, when=when, source="live", process_id=pid,
                            platform="linux")
        self._envelope(ev)
        with self._lock:
            self.findings[technique] = self.findings.get(technique, 0) + 1
        self.queue_event(ev, pid)

    def _actor(self, ev: Event, pid: int, final: bool = False) -> bool:
        """Fill the actor fields from the cache; ``False`` (nothing filled) while the cache
        knows only a fork of the process (no exec yet) or nothing, unless ``final``."""
        info = self.assembler.cache.get(pid)
        if info is None or ((info.forked or not info.image) and not final):
            return False
        ev.data["ProcessGuid"] = info.guid
        ev.data["Image"] = info.image or "-"
        if "User" in ev.data:
            ev.data["User"] = info.user
        return True

    def _resolve_deferred(self, force: bool = False) -> None:
        if not self._deferred:
            return
        now = time.monotonic()
        with self._lock:
            waiting, self._deferred = self._deferred, []
        keep = []
        for deadline, pid, ev in waiting:
            if self._actor(ev, pid, final=force or now >= deadline) or force or now >= deadline:
                with self._lock:
                    self._out.append(ev)
            else:
                keep.append((deadline, pid, ev))
        with self._lock:
            self._deferred.extend(keep)

    def _envelope(self, ev: Event) -> None:
        a = self.assembler
        ev.provider, ev.provider_guid, ev.channel = a.provider, a.provider_guid, a.channel
        ev.computer, ev.user_id = a.computer, a.euid

    def queue_event(self, ev: Event, pid: Optional[int] = None) -> None:
        """Queue an event for the loop (thread-safe); with ``pid``, its actor fields
        (``ProcessGuid``, ``Image``, ``User`` when present) are filled from the process cache,
        waiting for it as :meth:`finding` does."""
        if pid and not self._actor(ev, pid):
            with self._lock:
                self._deferred.append((time.monotonic() + ACTOR_WAIT_S, pid, ev))
            return
        with self._lock:
            self._out.append(ev)

    def _say(self, key: str, msg: str) -> None:
        if key not in self._said:
            self._said.add(key)
            self.on_status(msg)

    # --- life cycle --------------------------------------------------------------------------

    def start(self) -> list[Event]:
        """Read and update the state file, take the baselines, start the watchers; return the
        start events (``unclean_shutdown``, ``self_modified``, ``preload_hook`` findings, the
        first heartbeat)."""
        now = time.time_ns()
        o = self.options
        read_only = False
        if o.state_dir:
            owned = self._own_state_dir(o.state_dir)
            if owned == "peer":
                o = self.options = dataclasses.replace(o, state_dir=None)
            read_only = owned == "foreign"
        sd = o.state_dir
        if sd:
            try:
                prev = read_state(sd)
            except ValueError as exc:
                prev = None
                self.finding("self_modified", f"sensor state file unreadable: {exc}; heartbeat "
                             "sequence restarts")
            if prev is not None:
                self._seq = prev.sequence
                if prev.running:
                    self.finding("unclean_shutdown",
                                 f"previous run (pid {prev.pid}, started {prev.started or '-'} "
                                 f"UTC) ended without event 4 Stopped; its last heartbeat was "
                                 f"sequence {prev.sequence} at {prev.last_heartbeat or '-'} UTC")
            self._state = SensorState(self._seq, True, self.pid, utc_time(now),
                                      prev.last_heartbeat if prev else "",
                                      prev.last_heartbeat_ns if prev else 0,
                                      start_ticks=peers.start_time(self.pid) or 0)
            self._last_hb_ns = self._state.last_heartbeat_ns
            if read_only:
                # the lock's holder is no sensor (state_lock_held finding): the state was read,
                # the heartbeats continue its Sequence, but this run does not write the file
                o = self.options = dataclasses.replace(o, state_dir=None)
            else:
                try:
                    _write_state(sd, self._state)
                except OSError as exc:
                    self._say("state", f"guard: cannot write state in {sd}: "
                                       f"{exc.strerror}; no unclean-shutdown detection")
        if o.install_manifest:
            self._check_manifest(o.install_manifest)
        env = os.environ.get("LD_PRELOAD")
        if env:
            self.finding("preload_hook", f"LD_PRELOAD set in the sensor's environment: {env}")
        self._preload = self._read_preload()
        if self._preload:
            self.finding("preload_hook", f"{PRELOAD_PATH} present at start: "
                                         f"{self._preload_summary(self._preload)}")
        self._scan_maps()
        if o.config_path:
            self._cfg_ident = self._stat_sig(o.config_path)
        for p in o.outputs:
            self._outputs[p] = _ident(p)
        self._tracer_check(initial=True)
        if o.trace and os.geteuid() == 0:
            try:
                self._trace = _GuardTrace(self)
                self._traced = True
            except OSError as exc:
                self._say("trace", f"guard: signals and bpf() calls are not watched "
                                   f"(tracefs: {exc.strerror or exc})")
        if self.run_file is not None:
            try:
                self.run_file.publish_own(*self.own_bpf_ids())
            except OSError as exc:
                self._say("runfile", f"guard: cannot publish the sensor's BPF ids in "
                                     f"{self.run_file.ids_path}: {exc.strerror or exc}")
        self._heartbeat(now)
        self._thread = threading.Thread(target=self._run, name="sysmonx-guard", daemon=True)
        self._thread.start()
        sd_notify("READY=1")
        return self.drain()

    def _own_state_dir(self, state_dir: str) -> str:
        """Take ``state_dir/state.lock`` (``flock``, held until the process ends or
        :meth:`close`): one sensor at a time keeps the state.

        Returns:
            ``"own"``: this run holds the lock (or no lock can be made at all, a read-only
            directory: the state is used as before).
            ``"peer"``: a live SysmonX sensor holds it: a verified peer (its run file,
            :func:`sysmonx.sensor.peers.peer`), or the pid ``state.json`` names as running
            with the same ``/proc/PID/stat`` start time (``start_ticks``). That one's heartbeat
            ``Sequence`` and running flag are not touched (two sensors numbered heartbeats from
            one counter, and the second one's start called the first one's live run an unclean
            shutdown); this run keeps no state, and says so.
            ``"foreign"``: the holder is not a live sensor (review S #1: after a ``kill -9``
            any process holding the lock turned the unclean-shutdown check off and restarted
            the heartbeat ``Sequence``). A ``state_lock_held`` finding (201) names the holder
            from ``/proc/locks`` (pid, command line, made visible); the caller still reads
            ``state.json`` (unclean shutdown, ``Sequence``) but does not write it.
        """
        import fcntl
        path = os.path.join(state_dir, "state.lock")
        try:
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return "own"
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holders = sorted(peers.flock_holders(os.fstat(fd)))
            except OSError:
                holders = []
            os.close(fd)
            try:
                other = read_state(state_dir)
            except ValueError:
                other = None
            run_dir = self.run_file.run_dir if self.run_file is not None else peers.RUN_DIR
            live = [h for h in holders if peers.peer(h, run_dir) is not None
                    or (other is not None and other.running and other.pid == h
                        and other.start_ticks != 0 and other.start_ticks == peers.start_time(h))]
            if live:
                self.state_note = (f"another sensor (pid {live[0]}, {path} locked) keeps the "
                                   f"state in {state_dir}: this run keeps none (heartbeat "
                                   "Sequence from 1, SecondsSincePrevious 0, no unclean-shutdown "
                                   "check; give it its own --state-dir to keep one)")
                self._say("state-lock", f"guard: {self.state_note}")
                return "peer"
            if holders:
                who = ", ".join(f"pid {h} (command line {peers.cmdline(h) or '-'})"
                                for h in holders)
            else:
                who = "a process /proc/locks does not name (another pid namespace?)"
            self.state_note = visible(
                f"{path} is held by {who}, which is not a live SysmonX sensor: this run reads "
                f"the state in {state_dir} (unclean-shutdown check, heartbeat Sequence) but "
                "does not write it")
            self._say("state-lock", f"guard: {self.state_note}")
            self.finding("state_lock_held", self.state_note,
                         pid=holders[0] if holders else None)
            return "foreign"
        self._state_lock_fd = fd
        return "own"

    def _release_state_dir(self) -> None:
        fd, self._state_lock_fd = self._state_lock_fd, None
        if fd is not None:
            os.close(fd)

    def drain(self) -> list[Event]:
        """Take every queued event."""
        with self._lock:
            out = list(self._out)
            self._out.clear()
        return out

    def collect(self) -> list[Event]:
        """Called by the loop on every turn: queued findings, and the heartbeat when due; tells
        systemd's watchdog the loop is alive."""
        mono = time.monotonic()
        if self._watchdog_s and mono >= self._next_watchdog:
            self._next_watchdog = mono + self._watchdog_s / 2
            sd_notify("WATCHDOG=1")
        if self.heartbeat_s > 0 and mono >= self._next_hb:
            self._heartbeat(time.time_ns())
        if not self._out:
            return []
        return self.drain()

    def finish(self) -> list[Event]:
        """Before 4 ``Stopped``: stop the watchers (a last read of the trace: the signal that
        stops the sensor), the last heartbeat."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._trace is not None:
            try:
                self._trace.poll(0)
            except OSError:
                pass
            self._trace.close()
            self._trace = None
        self._answer_hups(final=True)
        self._resolve_deferred(force=True)
        self._heartbeat(time.time_ns())
        if self.run_file is not None:
            self.run_file.close()
        return self.drain()

    def mark_clean(self) -> None:
        """After 4 ``Stopped`` went out: record the clean end in the state file (then another
        sensor may take the state directory)."""
        if self.options.state_dir:
            self._state.running = False
            try:
                _write_state(self.options.state_dir, self._state)
            except OSError:
                pass
        self._release_state_dir()

    def summary(self) -> str:
        """One line: the guard thread's CPU share, heartbeats written in this run and the sequence
        number reached (it continues across restarts), findings by technique."""
        wall = max(1e-9, time.monotonic() - self._started_mono)
        found = ", ".join(f"{k} {v}" for k, v in sorted(self.findings.items())) or "none"
        hups = (f"; configuration reloads by SIGHUP {self.reloads_by_signal} (event 16, not "
                f"findings)" if self.reloads_by_signal else "")
        if self.peer_opens:
            hups += (f"; by-id opens of other processes' BPF programs announced by another "
                     f"SysmonX sensor {self.peer_opens} (not findings)")
        return (f"guard thread CPU {self.cpu_s:.2f} s over {wall:.0f} s ({100 * self.cpu_s / wall:.2f} % "
                f"of one core); heartbeats written {self._hb_this_run} (sequence now {self._seq}); "
                f"tamper findings: {found}{hups}")

    def close(self) -> None:
        """Stop the watchers without the last heartbeat (the run failed); remove the run
        file."""
        self._stop.set()
        if self._trace is not None:
            self._trace.close()
            self._trace = None
        if self.run_file is not None:
            self.run_file.close()
        self._release_state_dir()

    def config_reload_refused(self, reason: str) -> None:
        """A reload (SIGHUP) was asked for and refused: the configuration in force stays.
        ``config_modified`` then says so instead of "without a reload" while the file on disk
        is the one that was refused (any later change to it clears this)."""
        path = self.options.config_path
        self._cfg_refused = (self._stat_sig(path) if path else None, reason)
        self._reload_outcome(reason, self.config_hash)

    def config_reloaded(self, config_hash: str, heartbeat_s: Optional[float] = None,
                        reduced: str = "", reduced_ids: Iterable[int] = ()) -> None:
        """A reload put a new configuration in force: its hash (``SHA256=<hex>`` or ``-``) and
        its ``<HeartbeatInterval>`` seconds (``None``: not set). Unless the interval is fixed
        by ``options.heartbeat_s``, a changed interval applies at once: the next heartbeat is
        due that long after the last one (now, when heartbeats were off or none was written),
        and 0 stops them.

        ``reduced``: what the new configuration no longer collects, one line
        (:func:`sysmonx.filtering.reduction.describe`; empty: nothing), ``reduced_ids`` the
        EventIDs it names. A reduction, or heartbeats turned off here, is a ``config_weakened``
        finding written once the SIGHUP that asked for the reload is known (its sender the
        actor), or with the unknown actor after :data:`HUP_WAIT_S` (at once when signals are
        not traced). Call after event 16 is queued: the finding follows it."""
        previous = self.config_hash
        self.config_hash = config_hash
        self._cfg_since = None
        self._cfg_refused = None
        self._cfg_reported = None
        before = self.heartbeat_s
        self.heartbeat_s = self._interval(heartbeat_s)
        items = [reduced] if reduced else []
        if before > 0 and self.heartbeat_s <= 0:
            items.append(f"heartbeats off (HeartbeatInterval 0; were every {before:g} s)")
        weakened = None
        if items:
            weakened = (f"configuration {previous} -> {config_hash} collects less: "
                        + " | ".join(items))
            if 201 in set(reduced_ids):
                self.on_status("guard: the new configuration filters out TamperFinding "
                               "(201) events: only its config_weakened finding (never "
                               "filtered) reaches the outputs")
        self._reload_outcome(None, config_hash, weakened)
        if self.heartbeat_s != before:
            if self.heartbeat_s > 0:
                self._next_hb = (self._last_hb_mono + self.heartbeat_s
                                 if self._last_hb_mono is not None and before > 0
                                 else time.monotonic())
            self.on_status(f"guard: heartbeat interval now {_seconds(self.heartbeat_s)} (was "
                           f"{_seconds(before)}; the configuration's HeartbeatInterval)")

    # --- SIGHUP: a reload request, a configuration change when applied ----------------------

    def sighup(self, pid: int, text: str, when: int) -> None:
        """A SIGHUP sent to the sensor by ``pid`` at ``when`` (ns since 1970), described by
        ``text`` (thread-safe; the trace thread calls it): answered by the first reload outcome
        at or after ``when`` (:meth:`config_reloaded`, :meth:`config_reload_refused`, either
        before or after this call), else a finding after :data:`HUP_WAIT_S`."""
        with self._lock:
            self._hups.append([time.monotonic() + HUP_WAIT_S, when, pid, text])
        self._answer_hups()

    def _reload_outcome(self, refused: Optional[str], config_hash: str,
                        weakened: Optional[str] = None) -> None:
        with self._lock:
            self._reload_outcomes.append([time.monotonic() + HUP_WAIT_S, time.time_ns(),
                                          refused, config_hash, weakened])
        if weakened is not None and not self._traced:
            self._answer_hups(untraced=True)
        else:
            self._answer_hups()

    def _weakened(self, o: list, pid: Optional[int], why: str) -> None:
        """The ``config_weakened`` finding of the applied reload ``o`` (its time: the reload's,
        after its event 16); ``pid``: the SIGHUP's sender, ``why``: how the reload was asked
        for (the SIGHUP's text, or why that is unknown)."""
        self.finding("config_weakened", visible(f"{o[4]}; {why}"), pid=pid, when=o[1])

    def _answer_hups(self, final: bool = False, untraced: bool = False) -> None:
        """Match SIGHUPs with reload outcomes; a SIGHUP past its deadline (or any, ``final``)
        with none becomes a finding; outcomes past their expiry (or any, ``final``) are
        dropped, a weakening one as a ``config_weakened`` finding without a known sender
        (at once with ``untraced``: no SIGHUP can be learnt)."""
        now = time.monotonic()
        out: list[tuple] = []
        unasked: list[list] = []
        with self._lock:
            keep_o: list[list] = []
            for oc in self._reload_outcomes:
                if oc[0] > now:
                    keep_o.append(oc)
                elif oc[2] is None and oc[4] is not None:
                    unasked.append(oc)
            self._reload_outcomes = keep_o
            keep: list[list] = []
            for hup in self._hups:
                deadline, sent, pid, text = hup
                o = next((o for o in self._reload_outcomes if o[1] + _HUP_SLACK_NS >= sent), None)
                if o is not None:
                    # one outcome answers one SIGHUP: a second signal (another sender's) right
                    # after an applied reload is not cleared by that reload
                    self._reload_outcomes.remove(o)
                    out.append((pid, text, sent, o))
                elif final or now >= deadline:
                    out.append((pid, text, sent, None))
                else:
                    keep.append(hup)
            self._hups = keep
            if final or untraced:  # no SIGHUP will come for a weakening reload left
                unasked += [oc for oc in self._reload_outcomes
                            if oc[2] is None and oc[4] is not None]
                self._reload_outcomes = [oc for oc in self._reload_outcomes
                                         if oc[2] is not None or oc[4] is None]
        for pid, text, sent, o in out:
            if o is None:
                self.finding("sensor_signal", f"{text}; no configuration reload followed "
                                              f"within {HUP_WAIT_S:g} s", pid=pid, when=sent)
            elif o[2] is not None:
                self.on_status(f"guard: {text}: a configuration reload, refused (event 255); a "
                               f"sensor_signal finding (event 201)")
                self.finding("sensor_signal", f"{text}; the configuration reload it asked for "
                                              f"was refused (event 255 ConfigReload), the one in "
                                              f"force ({o[3]}) stays: {o[2]}", pid=pid, when=sent)
            elif o[4] is not None:  # counted with the findings, not in reloads_by_signal
                self.on_status(f"guard: {text}: a configuration reload, applied ({o[3]}; event "
                               f"16) and collecting less: a config_weakened finding (event 201)")
                self._weakened(o, pid, f"asked for by {text}")
            else:
                with self._lock:
                    self.reloads_by_signal += 1
                self.on_status(f"guard: {text}: a configuration reload, applied ({o[3]}; event "
                               f"16), not a tamper finding")
        for o in unasked:
            why = ("who asked for it is unknown: signals are not traced" if not self._traced
                   else f"who asked for it is unknown: no SIGHUP to the sensor was seen within "
                        f"{HUP_WAIT_S:g} s" + (
                            f" (the signal trace failed to read {self._trace_errors} time"
                            f"{'s' if self._trace_errors > 1 else ''}: it may have missed it)"
                            if self._trace_errors else ""))
            self.on_status(f"guard: configuration reload applied ({o[3]}; event 16) and "
                           f"collecting less: a config_weakened finding (event 201); {why}")
            self._weakened(o, None, why)

    def _interval(self, config_s: Optional[float]) -> float:
        """The interval in force: the fixed one (command line), else the configuration's, else
        :data:`DEFAULT_HEARTBEAT_S`; says once per value when the configuration's is
        overridden."""
        fixed = self.options.heartbeat_s
        if fixed is None:
            return DEFAULT_HEARTBEAT_S if config_s is None else config_s
        if config_s is not None and config_s != fixed:
            self._say(f"hb-override-{config_s}",
                      f"guard: the configuration's HeartbeatInterval ({_seconds(config_s)}) is "
                      f"overridden by the command line ({_seconds(fixed)})")
        return fixed

    # --- heartbeat ---------------------------------------------------------------------------

    def _heartbeat(self, now_ns: int) -> None:
        if self.heartbeat_s <= 0:
            return
        written, lost, _ = self.counters()
        w0, l0 = self._last_counts
        self._last_counts = (written, lost)
        self._seq += 1
        self._hb_this_run += 1
        self._last_hb_mono = time.monotonic()
        self._next_hb = self._last_hb_mono + self.heartbeat_s
        since = (now_ns - self._last_hb_ns) // 1_000_000_000 if self._last_hb_ns else 0
        self._last_hb_ns = now_ns
        ev = self.assembler.envelope(HEARTBEAT_EVENT_ID, {
            "RuleName": "-", "UtcTime": utc_time(now_ns), "Sequence": str(self._seq),
            "SecondsSincePrevious": str(max(0, since)),
            "EventsWritten": str(max(0, written - w0)),
            # a source blind during the window missed events nobody counted: the unknown value
            "EventsLost": UNKNOWN_COUNT if self._blind() else str(max(0, lost - l0)),
            "Backend": self.backend or "-", "ConfigurationFileHash": self.config_hash or "-"},
            now_ns)
        with self._lock:
            self._out.append(ev)
        if self.options.state_dir:
            self._state.sequence = self._seq
            self._state.last_heartbeat = ev.data["UtcTime"]
            self._state.last_heartbeat_ns = now_ns
            try:
                _write_state(self.options.state_dir, self._state)
            except OSError as exc:
                self._say("state", f"guard: cannot write state: {exc.strerror}")

    # --- the watcher thread ------------------------------------------------------------------

    def stopping(self) -> None:
        """The run is ending: the backends are about to undo their set-up, which is not
        tampering (the backends' integrity is no longer checked)."""
        self._stopping = True

    def _run(self) -> None:
        set_native_name("sysmonx-guard")
        poll = self.options.poll_s
        cpu0 = time.thread_time()
        self._started_mono = time.monotonic()
        turn = 0
        cheap = (self._tracer_check, self._config_check, self._clock_check,
                 self._output_check, self._answer_hups, self._resolve_deferred)
        # reading /proc/self/maps and every fd costs more: every SLOW_EVERY turns
        slow = cheap + (self._preload_check, self._integrity_check)
        next_turn = 0.0
        while not self._stop.is_set():
            self.cpu_s = time.thread_time() - cpu0
            if time.monotonic() >= next_turn:
                # the checks run every poll_s, not again at each wake-up by trace lines (a
                # host busy with bpf() calls of its own woke the loop 20+ times a second)
                next_turn = time.monotonic() + poll
                turn += 1
                for check in (slow if turn % SLOW_EVERY == 1 else cheap):
                    try:
                        check()
                    except Exception as exc:  # noqa: BLE001 - a check must never stop others
                        self._say(check.__name__, f"guard: {check.__name__} failed: {exc}")
            if self._trace is not None:
                try:
                    self._trace.poll(max(0.0, next_turn - time.monotonic()))
                    continue
                except OSError as exc:
                    self._trace_errors += 1
                    self._say("trace-read", f"guard: tracefs read failed: {exc}")
            self._stop.wait(max(0.0, next_turn - time.monotonic()))

    def _tracer_check(self, initial: bool = False) -> None:
        try:
            tids = [int(t) for t in os.listdir("/proc/self/task")]
        except OSError:
            return
        tracers: dict[int, list[int]] = {}
        for tid in tids:
            try:
                with open(f"/proc/self/task/{tid}/status", encoding="ascii",
                          errors="replace") as f:
                    for line in f:
                        if line.startswith("TracerPid:"):
                            tracer = int(line.split()[1])
                            if tracer:
                                tracers.setdefault(tracer, []).append(tid)
                            break
            except (OSError, ValueError):
                continue
        for tracer, traced in sorted(tracers.items()):
            if tracer in self._tracers:
                continue
            info = self.assembler.cache.get(tracer)
            who = info.image if info is not None and info.image else "-"
            what = "at start" if initial else "now"
            self.finding("sensor_ptrace",
                         f"the sensor is traced {what} by pid {tracer} ({who}): "
                         f"{len(traced)} of its {len(tids)} threads", pid=tracer)
        self._tracers = {t: len(v) for t, v in tracers.items()}

    @staticmethod
    def _stat_sig(path: str) -> Optional[tuple]:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def _config_check(self) -> None:
        path = self.options.config_path
        if not path:
            return
        sig = self._stat_sig(path)
        if sig != self._cfg_ident:
            self._cfg_ident = sig
            if sig is None:
                self._cfg_disk = "missing"
            else:
                h = _sha256(path)
                self._cfg_disk = f"SHA256={h}" if h else "unreadable"
        disk = self._cfg_disk
        if disk is None or disk == self.config_hash:
            self._cfg_since = None
            return
        now = time.monotonic()
        if self._cfg_since is None:
            self._cfg_since = now
            return
        if now - self._cfg_since >= self.options.config_grace_s and self._cfg_reported != disk:
            self._cfg_reported = disk
            if disk == "missing":
                self.finding("config_modified", f"config file {path} was removed; the running "
                                                f"configuration is {self.config_hash}")
            else:
                refused = self._cfg_refused
                how = ("and a reload was refused: " + refused[1] if refused is not None and
                       refused[0] == self._stat_sig(path) else "without a reload")
                self.finding("config_modified",
                             f"config file {path} changed on disk ({disk}) {how}; "
                             f"the running configuration is {self.config_hash}")

    @staticmethod
    def _read_preload() -> Optional[str]:
        try:
            with open(PRELOAD_PATH, "rb") as f:
                return f.read(1 << 16).decode("utf-8", "replace")
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"<unreadable: {exc.strerror}>"

    @staticmethod
    def _preload_summary(text: str) -> str:
        libs = text.replace(":", " ").split()
        return ", ".join(libs[:8]) + (" ..." if len(libs) > 8 else "") if libs else "(empty)"

    def _preload_check(self) -> None:
        now = self._read_preload()
        if now != self._preload:
            before = self._preload
            self._preload = now
            if now is None:
                self.finding("preload_hook", f"{PRELOAD_PATH} removed (was: "
                                             f"{self._preload_summary(before or '')})")
            elif before is None:
                self.finding("preload_hook", f"{PRELOAD_PATH} created: "
                                             f"{self._preload_summary(now)}")
            else:
                self.finding("preload_hook", f"{PRELOAD_PATH} changed: "
                                             f"{self._preload_summary(now)}")
        self._scan_maps()

    def _scan_maps(self) -> None:
        listed = set((self._preload or "").replace(":", " ").split())
        env = os.environ.get("LD_PRELOAD")
        if env:
            listed.update(env.replace(":", " ").split())
        try:
            with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
                paths = {line.split(None, 5)[5].strip() for line in f
                         if line.count(" ") >= 5 and "/" in line}
        except OSError:
            return
        for p in paths - self._maps_seen:
            self._maps_seen.add(p)
            if not p.startswith("/") or ".so" not in p:
                continue
            why = "named by the preload list" if p in listed else replaceable_by_others(p)
            if why is not None:
                self.finding("preload_hook", f"library {p} mapped into the sensor ({why})")

    def _clock_check(self) -> None:
        offset = time.time_ns() - time.monotonic_ns()
        jump = offset - self._clock
        if abs(jump) > self.options.clock_jump_s * 1e9:
            self._clock = offset
            self.finding("clock_changed", f"wall clock jumped {jump / 1e9:+.3f} s against the "
                                          "monotonic clock")
        else:  # follow NTP's slow slew
            self._clock = offset

    def _output_check(self) -> None:
        for path, ident in list(self._outputs.items()):
            now = _ident(path)
            if now == ident:
                continue
            self._outputs[path] = now
            if now is None:
                self.finding("output_blocked", f"output {path} was removed")
            elif ident is None:
                self.finding("output_blocked", f"output {path} appeared again (another file)")
            else:
                self.finding("output_blocked", f"output {path} was replaced by another file "
                                               f"(inode {ident[1]} -> {now[1]})")
        for label, (_, _, episodes, error) in self.counters()[2].items():
            # the output's own failure episodes (its loss periods, as stderr shows them:
            # "fails" ... "works again"): one finding for each one that started
            seen = self._episodes_seen.get(label, 0)
            self._episodes_seen[label] = episodes
            for k in range(seen + 1, episodes + 1):
                self.finding("output_blocked", f"output {label} fails ({error}): failure "
                                               f"episode {k} of this run; every event it "
                                               "does not take is counted, and an event 255 "
                                               "Output gives the count when it works again")

    def _integrity_check(self) -> None:
        """The backends' :meth:`integrity` problems: one finding per episode (a problem found
        at one check and not at the one before; the backends say their problems on stderr
        themselves). The problems of all backends are compared together (before 2026-12-08
        each backend's check replaced the previous one's, so a problem of the audit backend
        was new again after the DNS backend's empty check: one finding every 2.5 s)."""
        if self._stopping:
            return
        problems: set[tuple[str, str]] = set()
        for b in self.backends:
            check = getattr(b, "integrity", None)
            if check is not None:
                problems.update(check())
        for technique, details in sorted(problems - self._integrity_seen):
            self.finding(technique, details)
        self._integrity_seen = problems

    def _blind(self) -> bool:
        """Whether a backend was blind (:meth:`Backend.blind_episodes`: a collection it could
        not do, such as tier B with audit disabled) at any time since the previous heartbeat:
        its events were missed and how many cannot be known."""
        blind = False
        for b in self.backends:
            episodes = getattr(b, "blind_episodes", None)
            if episodes is None:
                continue
            n, now_blind = episodes()
            n0, was_blind = self._blind_seen.get(id(b), (0, False))
            # blind now, an episode began since, or the window began blind
            if now_blind or was_blind or n != n0:
                blind = True
            self._blind_seen[id(b)] = (n, now_blind)
        return blind

    def _check_manifest(self, path: str) -> None:
        """At start only: the files ``sysmonx -i`` recorded (``path``, the install manifest)
        that changed (``self_modified``) and Python start-up files (``*.pth``,
        ``sitecustomize.py``, ``usercustomize.py``) in the recorded ``startup_dirs`` that are not
        in it (``preload_hook``). File names are made visible (:func:`~sysmonx.textsafe.visible`:
        a name may hold terminal controls). This runs in the interpreter those start-up files
        already ran in: a hostile ``.pth`` can patch this check before it runs (docs/RESILIENCE.md).
        A manifest written before ``startup_dirs`` existed is said on stderr (the start-up files
        are then not checked until ``sysmonx -i`` runs again)."""
        try:
            with open(path, "rb") as f:
                manifest = json.loads(f.read(1 << 22))
        except (OSError, ValueError) as exc:
            self.finding("self_modified", f"install manifest {path} unreadable: {exc}")
            return
        changed = []
        for p, want in sorted(manifest.get("files", {}).items()):
            got = _sha256(p)
            if got is None:
                changed.append(f"{p} (missing)")
            elif got.lower() != str(want).lower():
                changed.append(p)
        if changed:
            self.finding("self_modified", visible(f"{len(changed)} installed file(s) changed "
                                                  f"since install: {', '.join(changed[:10])}"))
        # start-up files (.pth, sitecustomize) added to site-packages since install: site runs
        # them in the sensor at start, under -I too
        from ..service import startup_files
        known = set(manifest.get("files", {}))
        if "startup_dirs" not in manifest:
            self._say("manifest-startup", visible(
                f"guard: install manifest {path} has no startup_dirs (written before 2026-12-07):"
                " Python start-up files (.pth, sitecustomize) added since install are not "
                "checked; run sysmonx -i again to record them"))
        new = [str(p) for p in startup_files([Path(d) for d in manifest.get("startup_dirs", ())])
               if str(p) not in known]
        if new:
            self.finding("preload_hook", visible(
                f"{len(new)} Python start-up file(s) not in the install manifest (run in the "
                f"sensor at start): {', '.join(new[:10])}"))

    # --- BPF objects of the sensor -----------------------------------------------------------

    def own_bpf_ids(self) -> tuple[set[int], set[int], set[int]]:
        """(map ids, program ids, link ids) the sensor holds, from its own fdinfo."""
        maps: set[int] = set()
        progs: set[int] = set()
        links: set[int] = set()
        try:
            for _, _, info in bpfsys.bpf_fds(self.pid):
                if "link_id" in info:
                    links.add(int(info["link_id"]))
                elif "map_id" in info:
                    maps.add(int(info["map_id"]))
                elif "prog_id" in info:
                    progs.add(int(info["prog_id"]))
        except OSError:
            pass  # not listed: what was read so far
        return maps, progs, links


#: what ftrace prints for a comm it has not cached (kernel/trace/trace_sched_switch.c
#: ``trace_find_cmdline``): the name is not in the line
FTRACE_NO_COMM = "<...>"


def comm_of(tid: int, tgid: str = "") -> str:
    """The name (``comm``) of thread ``tid`` from ``/proc/TID/comm``, else of its process
    ``tgid`` (text of the trace's column; ``-``, blank or not a number: skipped), display
    controls made visible; the documented unknown ``-`` when neither can be read (the sender
    has exited). Read when the trace line is handled, milliseconds after the signal: a thread
    that renamed itself or exec'd in between gives its new name."""
    tries = [tid] + ([int(tgid)] if tgid.strip().isdigit() and int(tgid) != tid else [])
    for pid in tries:
        try:
            with open(f"/proc/{pid}/comm", "rb") as f:
                name = f.read(64).rstrip(b"\n")
        except OSError:
            continue
        if name:
            return visible(name.decode("utf-8", "replace"))
    return "-"


# "comm-TID (TGID) [CPU] FLAGS SECS.USECS: rest", rest one of
#   "signal_generate: sig=19 errno=0 code=0 comm=python pid=1234 grp=1 res=0"
#   "sys_bpf(cmd: 0xe, uattr: 0x7ffd..., size: 0x90)"     (syscalls:sys_enter_bpf)
#   "sys_bpf -> 0x5"                                       (syscalls:sys_exit_bpf)
#
# The comms are printed raw (kernel/trace/trace_output.c): a process name (prctl PR_SET_NAME,
# any bytes but NUL, 15 at most) may hold a newline, which splits one event over two lines of
# trace_pipe. So the fixed-format fields are taken from the end: the header is the *last*
# "-TID (TGID) [CPU] FLAGS SECS.USECS: " of the line (a 15-byte name cannot hold one whole), the
# sender's comm is everything before it, and a signal's fields are anchored at the line's end
# (the target's comm is the sensor's, which root can rename too); :meth:`_GuardTrace._feed`
# joins a line cut by a comm's newline to the next before it is parsed.
_LINE = re.compile(r"^ *(?P<comm>.*)-(?P<tid>\d+)\s+\(\s*(?P<tgid>[\d-]+)\)\s+\[\d+\]\s+\S+\s+"
                   r"(?P<secs>\d+)\.(?P<usecs>\d+):\s(?P<rest>.*)$", re.S)
#: Longest piece of a line cut by a newline in a comm that is kept for the next line: a
#: sender's comm is printed right-aligned in 16 columns; the tail of a signal line after a cut
#: in the target's comm is at most 15 bytes of comm and " pid=N grp=N res=N".
_CUT_MAX = 16
#: Program loads remembered for naming their links (:meth:`_GuardTrace._event100`); the
#: table starts again when full.
_LOADS_KEPT = 4096
_SIG_RESULTS = {0: "delivered", 1: "ignored", 2: "already pending", 3: "queue overflow",
                4: "info lost"}
_SIGCONT = 18
_SIGHUP = 1


def _signal_result(sig: int, res: int) -> str:
    """What ``signal_generate``'s ``res`` means for the sensor, in words. The kernel resumes a
    stopped process when SIGCONT is *sent* and then discards the signal as ignored (its default
    action; kernel/signal.c ``prepare_signal``), so SIGCONT's "ignored" is said as what it did."""
    if sig == _SIGCONT and res == 1:
        return "resumed it if it was stopped (the kernel then discards SIGCONT: traced as ignored)"
    return _SIG_RESULTS.get(res, f"result {res}")


_SIG = re.compile(r"sig=(-?\d+) errno=(-?\d+) code=(-?\d+) comm=(.*) pid=(\d+) grp=(\d+) "
                  r"res=(-?\d+)$", re.S)
_ENTER = re.compile(r"^sys_bpf\(cmd: (?:0x)?([0-9a-f]+)")
_EXIT = re.compile(r"^sys_bpf -> (?:0x)?([0-9a-f]+)")
#: bpf() commands traced: the GET_FD_BY_IDs (tamper) and the program/link commands (event 100).
_BY_ID = {13: "prog", 14: "map", 30: "link"}
_EVENT100 = {5, 8, 9, 17, 28, 34}
#: map writes: refused with EPERM on a frozen map (the sensor's are frozen)
_MAP_WRITES = {2: "BPF_MAP_UPDATE_ELEM", 3: "BPF_MAP_DELETE_ELEM", 26: "BPF_MAP_UPDATE_BATCH",
               27: "BPF_MAP_DELETE_BATCH"}
_EPERM = 1


class _GuardTrace:
    """The guard's private tracefs instance (``sysmonx_<pid>_guard``): signal_generate for the
    sensor's pid, sys_enter_bpf/sys_exit_bpf of everyone (rare calls).

    Raises:
        OSError: tracefs could not be mounted or the instance set up (everything undone).
    """

    EVENTS = ("signal/signal_generate", "syscalls/sys_enter_bpf", "syscalls/sys_exit_bpf")

    def __init__(self, guard: SensorGuard) -> None:
        from .backends import cn_tracefs as tf
        self.guard = guard
        self.tf = tf
        self.mounted_here: Optional[str] = None
        self.instance: Optional[str] = None
        self.fd = -1
        self._rest = b""
        self._carry = ""  # a line cut by a newline in a comm, until the next (_feed)
        self._pending: dict[int, tuple[int, int]] = {}  # tid -> (cmd, tgid) of sys_enter_bpf
        # (tgid, kind) -> [count, comm, first wall ns, [monotonic ns of each]]: by-id opens
        # whose object could not be read (the caller exited or closed the fd first), reported
        # once per read batch
        self._unresolved: dict[tuple[int, str], list] = {}
        self.stats = {"lines": 0, "signals": 0, "bpf": 0}
        # the highest program id accounted for: a BPF_PROG_LOAD whose fd is gone (or not yet
        # readable) by the time its line is read is named by the one program loaded since
        self._prog_hi = 0
        # (pid, program id) -> the fd its BPF_PROG_LOAD returned: a later link of that program
        # by that process is named through it first (no walk of the loader's descriptors)
        self._loaded: dict[tuple[int, int], int] = {}
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        import ctypes
        import tempfile
        tf = self.tf
        root = tf.find_tracefs()
        if root is None:
            parent = "/run" if os.path.isdir("/run") else None
            mnt = tempfile.mkdtemp(prefix=f"sysmonx-tracefs-{os.getpid()}-", dir=parent)
            if tf._libc().mount(b"nodev", os.fsencode(mnt), b"tracefs", 0, None) != 0:
                err = ctypes.get_errno()
                os.rmdir(mnt)
                raise OSError(err, f"mount tracefs: {os.strerror(err)}")
            self.mounted_here = root = mnt
        for ev in self.EVENTS:
            if not os.path.isdir(os.path.join(root, "events", ev)):
                raise OSError(errno.ENOENT, f"tracefs event {ev} not available")
        inst = os.path.join(root, "instances", f"{tf.INSTANCE_PREFIX}{os.getpid()}_guard")
        try:
            os.mkdir(inst)
        except FileExistsError:
            tf.remove_instance(inst)
            os.mkdir(inst)
        self.instance = inst
        pid = self.guard.pid
        tf._write(os.path.join(inst, "buffer_size_kb"), "256")
        tf._write(os.path.join(inst, "trace_clock"), "mono")
        tf._write(os.path.join(inst, "options/record-tgid"), "1")
        tf._write(os.path.join(inst, "events/signal/signal_generate/filter"),
                  f"pid == {pid} && sig != 17 && sig != 28 && sig != 23")
        cmds = " || ".join(f"cmd == {c}" for c in sorted(set(_BY_ID) | _EVENT100
                                                           | set(_MAP_WRITES)))
        tf._write(os.path.join(inst, "events/syscalls/sys_enter_bpf/filter"), cmds)
        for ev in self.EVENTS:
            tf._write(os.path.join(inst, "events", ev, "enable"), "1")
        self.fd = os.open(os.path.join(inst, "trace_pipe"),
                          os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._prog_hi = max(bpfsys.prog_ids_after(0, limit=1 << 16), default=0)

    def poll(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for trace lines and handle them."""
        if self.fd < 0:
            return
        p = select.poll()
        p.register(self.fd, select.POLLIN)
        if timeout_s > 0 and not p.poll(int(timeout_s * 1000)):
            return
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                self._flush_unresolved()
                return
            except InterruptedError:
                continue
            if not chunk:
                self._flush_unresolved()
                return
            data = self._rest + chunk
            lines = data.split(b"\n")
            self._rest = lines.pop()
            for raw in lines:
                if raw:
                    self.stats["lines"] += 1
                    self._feed(raw.decode("utf-8", "replace"))

    @staticmethod
    def _whole(line: str) -> "Optional[re.Match[str]]":
        """The header match of a line that holds one whole event (its header parses and, for a
        signal, its fields up to ``res=`` at the end: the module's notes on ``_LINE``), else
        ``None``."""
        m = _LINE.match(line)
        if m is None:
            return None
        rest = m["rest"]
        if rest.startswith("signal_generate: ") and _SIG.search(rest) is None:
            return None
        return m

    def _feed(self, line: str) -> None:
        """Handle one line of trace_pipe, joining a line a comm's newline cut: a short piece
        that is no event (the start of a sender's comm) or a signal line without its end (a
        cut in the target's comm) waits for the next line and is handled with it, joined by
        the newline that cut them; a piece the next line does not complete is dropped. Each
        line's header is matched once (a line with no carry before it, nearly all of them, is
        parsed once and handled from that match)."""
        carry, self._carry = getattr(self, "_carry", ""), ""
        if carry:
            joined = f"{carry}\n{line}"
            w = self._whole(joined)
            if w is not None:
                self._handle(w)
                return
            if _LINE.match(carry) is None and len(joined) <= _CUT_MAX:
                self._carry = joined  # a comm with two newlines
                return
        m = _LINE.match(line)
        if m is None:
            if len(line) <= _CUT_MAX:
                self._carry = line
            return
        rest = m["rest"]
        if rest.startswith("signal_generate: ") and _SIG.search(rest) is None:
            self._carry = line  # a signal line cut in the target's comm: its end comes next
            return
        self._handle(m)

    @staticmethod
    def _mono(secs: str, usecs: str) -> int:
        return int(secs) * 1_000_000_000 + int(usecs.ljust(6, "0")[:6]) * 1000

    def _wall(self, secs: str, usecs: str) -> int:
        return self._mono(secs, usecs) + (time.time_ns() - time.monotonic_ns())

    def _line(self, line: str) -> None:
        """Handle one whole trace line (no joining: :meth:`_feed` does that)."""
        m = _LINE.match(line)
        if m is not None:
            self._handle(m)

    @staticmethod
    def _comm(m: Any) -> str:
        """The sender's name as it is, newlines and display controls written \\uXXXX; ftrace's
        placeholder ``<...>`` (its comm cache had no entry for the thread, so the trace line
        does not carry the name) is resolved by :func:`comm_of` from ``/proc``."""
        comm = m["comm"].strip(" ")
        if comm == FTRACE_NO_COMM:
            return comm_of(int(m["tid"]), m["tgid"])
        return visible(comm)

    def _handle(self, m: Any) -> None:
        """Handle one event from its header match (``_LINE``). The sender's name is made
        visible only where it is written: most lines are the exits of bpf() calls whose entry
        was not traced (the kernel filter keeps the entries of a few commands only), which
        end at :meth:`_exit`'s first step."""
        rest = m["rest"]
        x = _EXIT.match(rest)
        if x is not None:  # the caller's process was resolved at the call's entry
            self._exit(int(m["tid"]), int(x[1], 16), m)
            return
        tid = int(m["tid"])
        printed = int(m["tgid"]) if m["tgid"].isdigit() and int(m["tgid"]) > 0 else None
        g = self.guard
        tgid = self.tf.thread_group(tid, printed)  # the tracer's column may be stale
        if rest.startswith("signal_generate: "):
            s = _SIG.search(rest)
            if s is None or tgid == g.pid:
                return
            sig, res = int(s[1]), int(s[7])
            if sig in _IGNORED_SIGNALS:
                return
            self.stats["signals"] += 1
            name = _SIGNAMES.get(sig, f"signal {sig}")
            text = (f"{name} sent to the sensor (pid {s[5]}) by pid {tgid} "
                    f"({self._comm(m)}), {_signal_result(sig, res)}")
            when = self._wall(m["secs"], m["usecs"])
            if sig == _SIGHUP and res in (0, 2):  # delivered or already pending: a reload
                g.sighup(tgid, text, when)
            else:
                g.finding("sensor_signal", text, pid=tgid, when=when)
            return
        e = _ENTER.match(rest)
        if e is not None:
            self._pending[tid] = (int(e[1], 16), tgid)
            if len(self._pending) > 4096:
                self._pending.clear()
            return

    def _exit(self, tid: int, ret: int, m: Any) -> None:
        entry = self._pending.pop(tid, None)
        if entry is None:
            return
        cmd, tgid = entry
        g = self.guard
        if tgid == g.pid:
            return
        comm = self._comm(m)
        if ret >= 1 << 63:
            ret -= 1 << 64
        self.stats["bpf"] += 1
        when = self._wall(m["secs"], m["usecs"])
        if cmd in _MAP_WRITES:
            if ret == -_EPERM:
                g.finding("bpf_map_tamper",
                          f"pid {tgid} ({comm}) tried to change a frozen BPF map "
                          f"({_MAP_WRITES[cmd]} refused with EPERM; the sensor's maps are "
                          "frozen)", pid=tgid, when=when)
            return
        if cmd in _BY_ID:
            if ret < 0:
                return
            kind = _BY_ID[cmd]
            info = bpfsys.fdinfo(tgid, ret)
            key = {"prog": "prog_id", "map": "map_id", "link": "link_id"}[kind]
            if key not in info:
                u = self._unresolved.setdefault((tgid, kind), [0, comm, when, []])
                u[0] += 1
                u[3].append(self._mono(m["secs"], m["usecs"]))
                return
            try:
                oid = int(info[key])
            except ValueError:
                return
            maps, progs, links = g.own_bpf_ids()
            own = {"map": maps, "prog": progs, "link": links}[kind]
            if oid in own:
                g.finding("bpf_map_tamper",
                          f"{self._who(tgid, comm)} opened the sensor's BPF {kind} id {oid} "
                          f"({bpfsys.BPF_COMMANDS[cmd]})", pid=tgid, when=when)
            return
        if cmd in _EVENT100:
            self._event100(cmd, ret, tgid, when)

    def _who(self, tgid: int, comm: str, peer: Optional[peers.Peer] = None) -> str:
        """``pid N (comm)``, or for a verified peer sensor ``another SysmonX sensor (pid N,
        command line ...)``, display controls made visible."""
        peer = peer or peers.peer(tgid, self.run_dir)
        if peer is not None:
            return visible(peer.describe())
        return f"pid {tgid} ({comm})"

    #: How long before its open a peer's announcement of it counts (ns).
    ANNOUNCED_WITHIN_NS = 10_000_000_000

    def _announced(self, peer: peers.Peer, kind: str, times: list) -> Optional[list]:
        """The ids ``peer`` announced for each of its by-id opens of ``kind`` at the
        monotonic ``times`` (each announcement before its open, within
        :attr:`ANNOUNCED_WITHIN_NS`, used once), or ``None`` when one was not announced."""
        pool = [(t, oid) for k, oid, t in peer.opens if k == kind]
        pool.sort()
        ids: list = []
        for at in sorted(times):
            pick = next((i for i, (t, _) in enumerate(pool)
                         if at - self.ANNOUNCED_WITHIN_NS <= t <= at), None)
            if pick is None:
                return None
            ids.append(pool.pop(pick)[1])
        return ids

    def _flush_unresolved(self) -> None:
        """One finding per process for by-id opens whose object could not be read, except
        for a peer sensor's opens it announced, none of them of this sensor's objects (the
        module docstring)."""
        if not self._unresolved:
            return
        items, self._unresolved = self._unresolved, {}
        g = self.guard
        for (tgid, kind), (n, comm, when, times) in items.items():
            peer = peers.peer(tgid, self.run_dir)
            if peer is not None:
                ids = self._announced(peer, kind, times)
                if ids is not None:
                    maps, progs, links = g.own_bpf_ids()
                    own = {"map": maps, "prog": progs, "link": links}[kind]
                    mine = sorted(set(ids) & own)
                    if not mine:
                        g.peer_opens += n
                        g._say(f"peer{tgid}", f"guard: {visible(peer.describe())} opens "
                                              "programs other processes load by id to name "
                                              "them (event 100), as it announces in its run "
                                              "file: not findings")
                        continue
                    g.finding("bpf_map_tamper",
                              f"{self._who(tgid, comm, peer)} opened the sensor's BPF {kind} "
                              f"id {', '.join(map(str, mine))} (announced in its run file)",
                              pid=tgid, when=when)
                    continue
            g.finding(
                "bpf_map_tamper",
                f"{self._who(tgid, comm, peer)} opened {n} BPF {kind}{'s' if n > 1 else ''} by "
                "id and closed them before they could be identified (may include the sensor's)",
                pid=tgid, when=when)

    @property
    def run_dir(self) -> str:
        """Where peers' run files are (the sensor's own run file's directory)."""
        rf = self.guard.run_file
        return rf.run_dir if rf is not None else peers.RUN_DIR

    def _name_program(self, pid: int, fd: int, prog_id: int) -> Optional[dict]:
        """The program ``prog_id`` that process ``pid`` loaded or linked, without opening it by
        id when ``pid`` still holds it (a copy of its descriptor: ``fd`` or another of its fds
        holding it); else by id, announced first in this sensor's run file, unless ``pid`` is
        a peer SysmonX sensor (whose objects are not opened: the event keeps the unknowns).
        ``pid``'s descriptors are walked only when ``fd`` does not name the program (a link's
        program, or a load whose fd was closed or reused): a loader such as another sensor holds
        dozens of them."""
        if fd >= 0:
            prog = bpfsys.prog_info_in(pid, fd)
            if prog is not None and prog["id"] == prog_id:
                return prog
        for cand in bpfsys.prog_fds_of(pid, prog_id):
            if cand == fd:
                continue
            prog = bpfsys.prog_info_in(pid, cand)
            if prog is not None and prog["id"] == prog_id:
                return prog
        return self._by_id(pid, prog_id)

    def _by_id(self, pid: int, prog_id: int) -> Optional[dict]:
        """:func:`~sysmonx.sensor.bpfsys.prog_info_by_id`, announced first (see
        :meth:`_name_program`); ``None`` for a peer's program or when it cannot be announced."""
        if peers.peer(pid, self.run_dir) is not None:
            return None
        rf = self.guard.run_file
        if rf is not None:
            try:
                rf.will_open("prog", prog_id)
            except OSError:
                return None
        return bpfsys.prog_info_by_id(prog_id)

    def _only_new_program(self, pid: int) -> Optional[dict]:
        """The program ``pid`` loaded, when exactly one other than the sensor's own was loaded
        since the highest id accounted for; ``None`` when none or several were (which one this
        load made cannot be told: the event keeps the documented unknowns). Named by id
        (:meth:`_by_id`: not a peer sensor's load)."""
        own = self.guard.own_bpf_ids()[1]
        new = [i for i in bpfsys.prog_ids_after(self._prog_hi) if i not in own]
        if len(new) != 1:
            return None
        return self._by_id(pid, new[0])

    def _event100(self, cmd: int, ret: int, pid: int, when: int) -> None:
        g = self.guard
        prog: Optional[dict] = None
        if ret >= 0 and cmd == 5:
            info = bpfsys.fdinfo(pid, ret)
            if "prog_id" in info:
                prog = self._name_program(pid, ret, int(info["prog_id"]))
                if len(self._loaded) >= _LOADS_KEPT:
                    self._loaded.clear()
                self._loaded[(pid, int(info["prog_id"]))] = ret
            else:
                prog = self._only_new_program(pid)
            if prog is not None:
                self._prog_hi = max(self._prog_hi, prog["id"])
        elif ret >= 0 and cmd in (17, 28):
            info = bpfsys.fdinfo(pid, ret)
            if "prog_id" in info:  # the link's program: the loader's fd that holds it
                loaded_id = int(info["prog_id"])
                prog = self._name_program(pid, self._loaded.get((pid, loaded_id), -1), loaded_id)
        if cmd in (9, 34) and ret >= 0:
            _, _, links = g.own_bpf_ids()
            if cmd == 34 or links:
                g.finding("bpf_detach", f"pid {pid} called {bpfsys.BPF_COMMANDS[cmd]} while the "
                                        "sensor's programs are attached", pid=pid, when=when)
        data = {
            "RuleName": "-", "UtcTime": utc_time(when),
            "ProcessGuid": "{00000000-0000-0000-0000-000000000000}",
            "ProcessId": str(pid), "Image": "-", "User": "-",
            "BpfCommand": bpfsys.BPF_COMMANDS.get(cmd, str(cmd)) + ("" if ret >= 0 else
                                                                    f" (failed: {ret})"),
            "BpfProgramType": prog["type_name"] if prog else "-",
            "BpfProgramId": str(prog["id"]) if prog else "0",
            "BpfProgramName": (prog["name"] or "-") if prog else "-",
        }
        g.queue_event(g.assembler.envelope(100, data, when), pid)

    def close(self) -> None:
        """Disable the events, remove the instance, unmount tracefs if mounted here."""
        tf = self.tf
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1
        if self.instance:
            tf.remove_instance(self.instance)
            self.instance = None
        if self.mounted_here:
            mnt, self.mounted_here = self.mounted_here, None
            try:
                tf._libc().umount2(os.fsencode(mnt), 2)
            except OSError:
                pass
            try:
                os.rmdir(mnt)
            except OSError:
                pass
