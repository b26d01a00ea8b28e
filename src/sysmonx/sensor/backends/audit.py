"""Tier-B live backend: the kernel audit subsystem over netlink, in Python (records read and parsed
in C by ``sysmonx.sensor._ringbatch`` when it is built; the Python reader defines it).

Used when the eBPF tier cannot load (shared/spec/linux-sensing.md §2.2, §5 "Tier B"). It turns
audit records into :mod:`sysmonx.sensor.observations` and never builds Sysmon events.

How it works
------------
* **Ownership.** There is one audit configuration per kernel. When no other live process is the
  registered audit daemon, :meth:`AuditBackend.start` registers this process (``AUDIT_SET pid``;
  records then arrive by unicast and are *not* printk'ed to dmesg) and sets ``enabled=1``,
  ``backlog_limit >= 8192``, ``backlog_wait_time=0`` (a stuck reader drops records, counted by
  the kernel's ``lost``, instead of throttling every audited task) and ``rate_limit=0``.
  When another process (auditd) owns it, nothing of its configuration is touched: only our keyed
  rules are appended and records are read from the multicast group ``AUDIT_NLGRP_READLOG``
  (CAP_AUDIT_READ). A kernel with ``failure=2`` (panic on lost records) or a locked
  configuration (``enabled=2``) is refused. A registered pid whose process no longer exists is
  taken over (the kernel allows it) and restored as 0. Why the pid is taken: with no
  registered daemon the kernel prints every record to the kernel log (``printk``, rate-limited
  to about 10 records per 5 s, the rest dropped; with ``audit=1`` on the kernel command line
  it also holds up to ``backlog_limit`` records for a daemon to come, counting the overflow in
  ``lost``), so reading only the multicast group would flood or fill those. **Handing it back
  to auditd**: the kernel lets one process hold the pid and answers another's ``AUDIT_SET pid``
  with EEXIST (auditd then exits). So while the sensor holds it, the exec of a process named
  ``auditd`` (its comm, seen by the proc connector microseconds after the exec, or the image of
  an audit exec record) running as root (a user's program named so does not count: only root
  can register) makes the sensor hand the pid back at once (``AUDIT_SET pid=0``) and
  read the multicast group from then on, before that auditd gets to register (it parses its
  configuration and daemonizes first); an ``AUDIT_REPLACE`` from the kernel (another process
  asked for the pid and got EEXIST) hands it back too, so that process's next attempt succeeds.
  When the group cannot be joined (no CAP_AUDIT_READ) the sensor takes the pid back and says
  so (or, if another took it meanwhile, says it is blind to audit). Each hand-back is said on
  stderr (option ``on_status``) and written as event 255 (source
  ``audit``). Audit stays enabled with our rules; at stop the limits and ``enabled`` are left
  as they are when another live process holds the pid (it is that daemon's configuration
  now). Option ``audit_pid="never"``: never take the pid (multicast from the start, with
  ``enabled`` and the rules set as in unicast mode).
* **Blind.** Audit disabled (``enabled=0``, ``auditctl -e 0``) while the sensor runs stops
  every record: the ``status_interval`` poll notices it, event 255 (source ``audit``) says the
  collection is blind from then on and which events it misses, and, when audit is enabled
  again, a second one says for how long it was blind; the number of events missed cannot be
  known (:meth:`AuditBackend.blind_episodes`: the heartbeat writes the unknown ``EventsLost``).
  The sensor does not enable audit again itself (docs/RESILIENCE.md: it reports, it does not
  fight the administrator); the guard's ``audit_rules_changed`` finding is one per episode.
  ``stop()`` is also registered with :mod:`atexit`; after a SIGKILL the kernel keeps our rules
  and ``enabled=1`` (the next start reports such stale ``sysmonx`` rules and keeps them).
* **Companions.** Audit records carry no process start time, no memory layout and no socket
  ports, and arrive about 6 ms late, after a short-lived process is gone. So beside audit this
  tier listens to the proc connector (:class:`~.cnproc.ProcConnector`, when it can run): forks
  (ProcessFork with the start time, sent before the child's first audit event that happened
  before its exec: a connect or a redirection's file of a child between fork and exec belongs
  to the fork, not to the exec's image nor to no process; and before the exec of a child of
  a process that had not exec'd since its fork, a subshell: the child's parent is that fork,
  :func:`~.cnproc.held_parent_forks`), exits (ProcessExit with exit code,
  also for processes killed by a signal; the ``exit_group`` rule is then not added) and, at
  each exec, a snapshot of ``/proc/PID/stat`` and ``/proc/PID/exe`` taken microseconds after
  the exec. It also reads tracefs ``sock:inet_sock_set_state``
  (:class:`~.cn_tracefs.TcpStateTrace`, when available) for the source address and port of
  TCP connects. Without them the facts they give are written as the documented unknown values
  (docs/ARCHITECTURE.md).
* **Rules** (appended, key ``sysmonx``, native arch; each carries ``pid!=`` for the sensor's own
  pids so it does not feed on itself): execve/execveat (success); socket with ``a0`` AF_INET or
  AF_INET6 (success: the socket's type gives a connect's protocol); connect (``saddr_fam`` inet
  and inet6, success or not); accept/accept4 (success); openat with ``a2 & O_CREAT``, open
  with ``a1 & O_CREAT``, creat and openat2 (success); unlink/unlinkat/rename/renameat/renameat2
  (success); ptrace with ``a0`` = PTRACE_ATTACH or PTRACE_SEIZE (success); one watch
  ``perm=r`` (open family, success) per block device node under ``/dev`` (rescanned
  periodically for new devices). On x86_64 the i386 compat execve/execveat are audited too.
* **Records** are grouped by serial number until ``EOE`` (or ``event_timeout`` for an event
  whose EOE was lost) and classified from their content — not from the key, because under a
  foreign auditd an earlier rule of theirs may match first and log its own key. The same
  conditions as the kernel rules are re-checked in user space.
* **Loss.** ``AUDIT_GET`` is polled every ``status_interval`` seconds and at stop; growth of the
  kernel ``lost`` counter (records, all audit users) becomes ``Loss(source="audit.lost")``.
  ``ENOBUFS`` on the socket (multicast copies dropped, not counted by the kernel) becomes
  ``Loss(source="audit.enobufs", count=0)`` with the reason in ``detail``.

How records become observations (the field rules) is :mod:`.audit_records`.
"""

from __future__ import annotations

import atexit
import errno
import functools
import os
import select
import stat
import sys
import threading
import time
from collections import OrderedDict
from typing import Callable, Optional

from ...core import native
from ...core.registry import BACKENDS
from ...textsafe import visible
from ..observations import (BackendError, Loss, NetworkConnect, Observation, ProcessExec,
                            ProcessExit, ProcessFork)
from . import audit_netlink as nl
from .audit_netlink import (AUDIT_ALWAYS, AUDIT_ARCH, AUDIT_ARG0, AUDIT_ARG1, AUDIT_ARG2,
                            AUDIT_BIT_MASK, AUDIT_EQUAL, AUDIT_FILTER_EXIT, AUDIT_FILTERKEY,
                            AUDIT_NLGRP_READLOG, AUDIT_NOT_EQUAL, AUDIT_PERM, AUDIT_PERM_READ,
                            AUDIT_PID, AUDIT_SADDR_FAM, AUDIT_SUCCESS, AUDIT_WATCH, AuditError,
                            AuditRule, AuditSocket, AuditStatus)
from .audit_records import (_KEEP, _NATIVE, AF_INET, AF_INET6, ARCH_TABLES, O_CREAT,
                            PTRACE_ATTACH, PTRACE_SEIZE, PTRACE_WRITES, AuditClassifier,
                            AuditEvent,
                            AuditObservation)
from .base import Backend, BackendUnavailable
from .cn_tracefs import ConnectMatcher, TcpStateTrace, thread_group, tracefs_available
from .cnproc import (PROC_EVENT_EXEC, PROC_EVENT_EXIT, PROC_EVENT_FORK, CnprocBackend,
                     ProcConnector, boot_offset_ns, fork_start_ticks, held_parent_forks)
from ..procfs import monotonic_to_epoch_offset, ns_inode, parse_stat, syn_sent_port
from ..threadname import set_native_name

__all__ = ["AuditBackend", "RULE_KEY", "ARCH_TABLES"]

#: record types the reader keeps (the classified ones and the end of each event)
_WANTED = frozenset(_KEEP | {nl.AUDIT_EOE, nl.AUDIT_REPLACE})
#: setsockopt level and option to join a netlink multicast group on an open socket
_SOL_NETLINK = 270
_NETLINK_ADD_MEMBERSHIP = 1

#: the compiled wait for proc connector messages (``_ringbatch.cn_gather``, see
#: :meth:`AuditBackend._gather_cn`); ``None`` when not built or ``SYSMONX_PURE_PYTHON`` is set,
#: and then the Python loop in :meth:`AuditBackend._run`, which defines it, waits.
#: an audit event stamped this long after its process's exec (proc connector time) was made
#: after it: audit's coarse clock is at most a tick early, never late; the margin covers the
#: monotonic-to-real-time offset (:meth:`AuditBackend._lost_exec`)
LOST_EXEC_MARGIN_NS = 2_000_000
#: the documented unknown text value (docs/ARCHITECTURE.md "Unknown values")
UNKNOWN_TEXT = "-"

_cn_gather: Optional[Callable]
(_cn_gather,) = native.compiled("sysmonx.sensor._ringbatch", "cn_gather")

RULE_KEY = "sysmonx"

_SKIP_DEV_DIRS = frozenset({"shm", "pts", "mqueue", "hugepages", "fd", "char", "bsg", "snd",
                            "input", "dri", "net", "cpu", "vfio"})


def _exec_snapshot(pid: int) -> tuple:
    """``(start_ticks, end_code, comm, ns)`` of ``pid`` from one read of ``/proc/PID/stat`` and
    of ``/proc/PID/ns/{mnt,pid}`` (``ns``: the two inode numbers, read from the links' text by
    :func:`~sysmonx.sensor.procfs.ns_inode`; ``None`` when either is gone). ``comm`` (the
    exec'd file's name, 15 bytes at most) lets the audit record check that the end_code and
    namespaces are of its image and not of a later exec of the same pid."""
    mnt, pidns = ns_inode(f"/proc/{pid}/ns/mnt"), ns_inode(f"/proc/{pid}/ns/pid")
    ns: Optional[tuple] = (mnt, pidns) if mnt is not None and pidns is not None else None
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None, None, None, ns
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None, None, None, ns
    finally:
        os.close(fd)
    return _snapshot_of(data, ns)


def _snapshot_of(data: Optional[bytes], ns: Optional[tuple]) -> tuple:
    """:func:`_exec_snapshot` of the bytes one read of ``/proc/PID/stat`` gave (``None``: it
    could not be opened or read) and the namespaces ``ns`` read before it."""
    if data is None:
        return None, None, None, ns
    parsed = parse_stat(data)
    if not parsed:
        return None, None, None, ns
    comm = data[data.find(b"(") + 1:data.rfind(b")")]
    return parsed[2], parsed[3], comm, ns


#: what tier B misses while audit is disabled (the events its audit rules give)
_BLIND_EVENTS = ("ProcessCreate (1, with its ProcessTampering 25), NetworkConnect (3), "
                 "CreateRemoteThread (8), RawAccessRead (9), ProcessAccess (10), FileCreate "
                 "(11), FileDelete (23) and MemfdCreate (212)")


def _utc(ns: int) -> str:
    """``YYYY-MM-DD HH:MM:SS.mmm UTC`` of ``ns`` since 1970."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ns // 1_000_000_000)) + \
        f".{ns // 1_000_000 % 1000:03d} UTC"


def _other_sensor_running() -> bool:
    """True when another process runs ``sysmonx run`` / ``sysmonx.cli run`` (its audit rules
    must not be touched)."""
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read(4096).split(b"\0")
        except OSError:
            continue
        if b"run" in argv and any(b"sysmonx" in a for a in argv):
            return True
    return False


@BACKENDS.register(summary="tier B: kernel audit over netlink, coexists with auditd")
class AuditBackend(AuditClassifier, Backend):
    """Tier-B backend on the kernel audit subsystem (netlink; compiled record reader when built).

    Options (all optional):
        ``key`` (str, default ``"sysmonx"``): filter key of our rules.
        ``backlog_limit`` (int): kernel backlog in records when we own audit; default
            ``max(8192, current)``.
        ``rcvbuf`` (int, bytes, default 8 MiB): netlink receive buffer (SO_RCVBUFFORCE).
        ``status_interval`` (float s, default 1.0): AUDIT_GET poll for the lost counter.
        ``device_rescan`` (float s, default 10.0; 0 disables): rescan ``/dev`` for new block
            devices to watch.
        ``event_timeout`` (float s, default 1.0): flush an event whose EOE never came.
        ``socket_lookup`` (``"pidfd"``/``"proc"``/``"none"``, default ``"pidfd"`` with /proc
            fallback): how protocol and the other endpoint of sockets are found.
        ``mode`` (``"auto"``/``"multicast"``): force read-only multicast even if audit is free.
        ``audit_pid`` (``"handback"``, default, or ``"never"``): ``"handback"`` registers as the
            audit daemon when none runs and hands the pid back when an auditd starts or asks
            for it (module docstring, "Handing it back to auditd"); ``"never"`` never takes it.
        ``on_status`` (callable taking one line): where the hand-back and blindness lines go
            (the run's stderr); default: nowhere (event 255 still says them).
        ``proc_connector`` (bool, default True): use the proc connector beside audit (module
            docstring, "Companions"); ``tracefs`` (bool, default True): TCP source ports from
            tracefs; ``trace_buffer_kb`` (int, default 1024).
        ``gather_ms`` (float, default 4): when only a few audit records came, wait this long
            for more before the next round (the proc connector is served meanwhile).
        ``compiled_reader`` (bool, default True): read and parse records with the compiled
            reader (``audit_netlink.compiled_recv``), and wait for proc connector messages with
            the compiled gather (:meth:`_gather_cn`), when they are built; ``False``: the pure
            Python reader and wait, which define them.

    Attributes after :meth:`start`: ``mode`` (``"unicast"`` = we own audit, ``"multicast"``),
    ``handed_back`` (why the pid was handed back, or ``None``), ``watched_devices`` (block
    device paths with a watch rule).
    """

    name = "audit"
    tier = "B"
    events = frozenset({1, 3, 5, 8, 9, 10, 11, 23, 212})

    def collecting(self) -> frozenset:
        """:attr:`events` but MemfdCreate (212) unless asked (``optional_events``)."""
        return self.events - (frozenset() if 212 in self.options.get("optional_events", ())
                              else frozenset({212}))

    def __init__(self, emit: Callable[[Observation], None], exclude_pids: frozenset = frozenset(),
                 options: Optional[dict] = None) -> None:
        super().__init__(emit, exclude_pids, options)
        self.key = str(self.options.get("key", RULE_KEY))
        self.mode: Optional[str] = None
        self.handed_back: Optional[str] = None
        self._blind_since: Optional[int] = None  # ns since 1970 when audit was seen disabled
        self._blind_count = 0
        self._integrity_said: set = set()      # integrity() problems said on stderr
        self._status = self.options.get("on_status") or (lambda msg: None)
        self.watched_devices: dict = {}          # path -> (st_dev, st_ino)
        self._watch_ids: dict = {}               # (st_dev, st_ino) -> path
        self._ctl: Optional[AuditSocket] = None
        self._saved: Optional[AuditStatus] = None     # status before start()
        self._saved_rules: list = []                  # rule table before start() (raw)
        self._rd: Optional[AuditSocket] = None
        self._ctl_lock = threading.Lock()
        self._undo: list = []                    # [(description, callable)] in order done
        self._added: list = []                   # rule payloads we added (bytes)
        self._thread: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self._pending: "OrderedDict[int, AuditEvent]" = OrderedDict()
        self._dircache: "OrderedDict[tuple, str]" = OrderedDict()
        self._last_lost: Optional[int] = None
        self._arch: Optional[int] = None
        self._excl = frozenset(self.exclude_pids) | {os.getpid()}
        self._stats = {"received": 0, "lost": 0, "records": 0, "events": 0, "enobufs": 0,
                       "rules": 0, "rules_preexisting": 0, "parse_errors": 0, "partial": 0}
        self._errors_reported = 0
        self._stopped = True
        # companions (module docstring)
        self._cn: Optional[ProcConnector] = None
        self._trace: Optional[TcpStateTrace] = None
        self._matcher = ConnectMatcher(1.0, port_lookup=syn_sent_port)
        self._notes: list = []
        self._snaps: dict = {}                   # pid -> [(ts_ns, start_ticks, end_code, exe, ns)]
        self._starts: "OrderedDict[int, int]" = OrderedDict()   # pid -> start ticks (forks)
        self._socks: "OrderedDict[tuple, str]" = OrderedDict()  # (pid, fd) -> "tcp"/"udp"
        self._tcp_src: dict = {}                 # (tgid, daddr, dport) -> [(ts, saddr, sport)]
        self._tcp_wait: list = []                # [deadline, pid, ip, port, ts, obs or None]
        self._floor: "OrderedDict[int, int]" = OrderedDict()  # pid -> earliest possible ts
        self._outbox: list = []
        self._forks: "OrderedDict[int, ProcessFork]" = OrderedDict()  # not exec'd yet
        # exec'd (proc connector) but its exec's audit record not classified yet: audit
        # events of the child before that record happened before the exec (module docstring)
        self._exec_forks: "OrderedDict[int, ProcessFork]" = OrderedDict()
        self._mono_off = monotonic_to_epoch_offset()
        self._boot_off = boot_offset_ns()
        # the compiled record reader (nl.compiled_recv) unless built without it or turned off
        self._recv = nl.compiled_recv if self.options.get("compiled_reader", True) else None
        self._gather = _cn_gather if self.options.get("compiled_reader", True) else None
        self._stats.update({"exec_paired": 0, "exec_unpaired": 0, "exec_lost": 0, "forks": 0,
                            "exits": 0, "cn_nomem": 0,
                            "tcp_source_known": 0, "tcp_source_unknown": 0,
                            "protocol_unknown": 0})

    # -- probe ---------------------------------------------------------------------------------

    @classmethod
    def probe(cls) -> Optional[str]:
        """``None`` if audit netlink answers ``AUDIT_GET`` and we can run here, else the reason
        (no CONFIG_AUDIT, not in the initial user/PID namespace, missing capability, locked or
        panic-on-loss configuration, owned by another daemon without multicast permission,
        unsupported architecture). Side-effect free: reads status, joins nothing permanently."""
        if os.uname().machine not in _NATIVE:
            return f"audit backend has no syscall table for architecture {os.uname().machine}"
        try:
            sock = AuditSocket()
        except OSError as e:
            if e.errno in (errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT):
                return "kernel has no audit support (CONFIG_AUDIT not set)"
            return f"cannot open the audit netlink socket: {e.strerror}"
        try:
            st = sock.get_status(timeout=1.0)
        except AuditError as e:
            if e.errno == errno.ECONNREFUSED:
                return "audit netlink refused: not in the initial user namespace"
            if e.errno == errno.EPERM:
                return ("AUDIT_GET not permitted: needs CAP_AUDIT_CONTROL in the initial user "
                        "and PID namespace")
            return f"AUDIT_GET failed: {e.strerror or e}"
        finally:
            sock.close()
        return cls._refusal(st)

    @staticmethod
    def _owner(st: AuditStatus) -> Optional[int]:
        """The live foreign audit daemon pid, or ``None`` when audit is free for us."""
        if st.pid and st.pid != os.getpid() and os.path.exists(f"/proc/{st.pid}"):
            return st.pid
        return None

    @classmethod
    def _refusal(cls, st: AuditStatus) -> Optional[str]:
        if st.enabled == 2:
            return "audit configuration is locked (enabled=2): rules cannot be added"
        if st.failure == 2:
            return ("audit failure mode is 2 (kernel panic on lost records): refusing to add "
                    "load that could lose records")
        if st.pid and st.pid == os.getpid():
            return "audit is already registered by this process (another AuditBackend?)"
        owner = cls._owner(st)
        if owner:
            who = _comm(owner)
            if st.enabled != 1:
                return f"audit is owned by pid {owner} ({who}) and disabled"
            try:
                AuditSocket(groups=1 << (AUDIT_NLGRP_READLOG - 1)).close()
            except OSError as e:
                return (f"audit is owned by pid {owner} ({who}) and the read-only multicast "
                        f"group is not permitted: {e.strerror} (needs CAP_AUDIT_READ)")
        return None

    # -- start / stop --------------------------------------------------------------------------

    def start(self) -> None:
        """Take or share audit, add our rules, start the reader thread.

        Raises:
            BackendUnavailable: with the reason; everything already changed has been restored.
        """
        machine = os.uname().machine
        if machine not in _NATIVE:
            raise BackendUnavailable(f"no audit syscall table for {machine}")
        self._arch, compat = _NATIVE[machine]
        self._stopped = False
        self._stopping.clear()
        try:
            self._ctl = AuditSocket()
            st = self._ctl.get_status()
            self._saved = st
            self._saved_rules = self._ctl.list_rules()
            reason = self._refusal(st)
            if reason:
                raise BackendUnavailable(reason)
            stale = [raw for raw in self._saved_rules if AuditRule.unpack(raw).key == self.key]
            if stale and not _other_sensor_running():
                # left by a sensor that was killed (SIGKILL): no live sensor owns them
                for raw in stale:
                    with self._ctl_lock:
                        self._ctl.del_rule(raw)
                self._saved_rules = self._ctl.list_rules()
                self._error(f"removed {len(stale)} stale audit rules keyed {self.key!r} left by "
                            "a sensor that did not stop cleanly")
            elif stale:
                self._error(f"{len(stale)} audit rules keyed {self.key!r} belong to another "
                            "running SysmonX sensor; they are kept")
            self._last_lost = st.lost
            rcvbuf = int(self.options.get("rcvbuf", 8 << 20))
            self._open_companions()
            owner = self._owner(st)
            never = self.options.get("audit_pid", "handback") == "never"
            if never and not owner and self.options.get("mode") != "multicast":
                # the configuration is ours (enabled, rules), the pid is not taken
                self.mode = "multicast"
                self._rd = AuditSocket(groups=1 << (AUDIT_NLGRP_READLOG - 1), rcvbuf=rcvbuf)
                self._add_rules(compat)
                if st.enabled != 1:
                    self._set(enabled=1)
                    self._undo.append(("restore enabled", self._unless_owned(
                        "enabled", functools.partial(self._set, enabled=st.enabled))))
            elif owner or self.options.get("mode") == "multicast":
                if st.enabled != 1:
                    raise BackendUnavailable(
                        f"audit is disabled (enabled={st.enabled}) and read-only multicast mode "
                        "does not change the configuration")
                self.mode = "multicast"
                self._rd = AuditSocket(groups=1 << (AUDIT_NLGRP_READLOG - 1), rcvbuf=rcvbuf)
                self._add_rules(compat)
            else:
                self.mode = "unicast"
                self._take_audit(st, rcvbuf)
                self._add_rules(compat)
                if st.enabled != 1:
                    self._set(enabled=1)
                    self._undo.append(("restore enabled", self._unless_owned(
                        "enabled", functools.partial(self._set, enabled=st.enabled))))
        except BackendUnavailable:
            self._restore()
            raise
        except (OSError, ValueError) as e:
            self._restore()
            raise BackendUnavailable(f"audit set-up failed: {e}") from e
        atexit.register(self.stop)          # interpreter exit without stop(): still restore
        self._thread = threading.Thread(target=self._run, name="sysmonx-audit", daemon=True)
        self._thread.start()

    def _open_companions(self) -> None:
        """Proc connector and tracefs beside audit (module docstring); each optional."""
        now = time.time_ns()
        if self.options.get("proc_connector", True):
            reason = CnprocBackend.probe()
            if reason is None:
                cn = ProcConnector(int(self.options.get("cn_rcvbuf", 8 << 20)), False,
                                   self._loss)
                try:
                    cn.open()
                    self._cn = cn
                except (BackendUnavailable, OSError) as exc:
                    cn.close()
                    reason = str(exc)
            if reason is not None:
                self._notes.append(BackendError(
                    now, "audit.cnproc", f"proc connector unavailable ({reason}): process start "
                    "times and end_code of short-lived processes are unknown, exits come from "
                    "exit_group (not for processes killed by a signal), forks are not seen"))
        if self.options.get("tracefs", True):
            reason = tracefs_available()
            if reason is None:
                try:
                    self._trace = TcpStateTrace(self._excl,
                                                int(self.options.get("trace_buffer_kb", 1024)))
                except OSError as exc:
                    reason = str(exc)
            if reason is not None:
                self._notes.append(BackendError(
                    now, "audit.tracefs", f"tracefs unavailable ({reason}): TCP source "
                    "addresses and ports are unknown"))

    def _close_companions(self) -> None:
        cn, self._cn = self._cn, None
        if cn is not None:
            cn.close()
            self._stats.update({k if k.startswith("cn_") else f"cn_{k}": v
                                for k, v in cn.stats.items()})
        tr, self._trace = self._trace, None
        if tr is not None:
            tr.close()

    def _set(self, **values: int) -> None:
        assert self._ctl is not None  # between start() and stop()
        with self._ctl_lock:
            self._ctl.set_status(**values)

    def _take_audit(self, st: AuditStatus, rcvbuf: int) -> None:
        """Unicast mode: limits first, then register our reader socket as the audit pid."""
        bl = self.options.get("backlog_limit")
        bl = max(8192, st.backlog_limit) if bl is None else int(bl)
        self._set(backlog_limit=bl, backlog_wait_time=0, rate_limit=0)
        self._undo.append(("restore limits", self._unless_owned("limits", lambda: self._set(
            backlog_limit=st.backlog_limit, backlog_wait_time=st.backlog_wait_time,
            rate_limit=st.rate_limit))))
        self._rd = AuditSocket(rcvbuf=rcvbuf)
        try:
            self._rd.set_status(pid=os.getpid())
        except AuditError as e:
            if e.errno != errno.EEXIST:
                raise
            holder = self._ctl.get_status().pid if self._ctl is not None else 0
            who = f"pid {holder} ({_comm(holder)})" if holder else "another process"
            raise AuditError(errno.EEXIST, f"{who} registered as the audit daemon just now "
                             "(the kernel lets one process hold the audit netlink): stop it, "
                             "or let it run and choose another tier (--backend cnproc or "
                             "ebpf)") from None
        self._undo.append(("unregister audit pid", self._unregister))

    def _unless_owned(self, what: str, restore: Callable[[], None]) -> Callable[[], None]:
        """``restore`` run at stop unless another live process holds the audit pid then (an
        auditd started while the sensor ran: the setting is its configuration now)."""
        def run() -> None:
            assert self._ctl is not None
            with self._ctl_lock:
                owner = self._owner(self._ctl.get_status())
            if owner:
                self._safe_emit(BackendError(
                    time.time_ns(), "audit", f"audit {what} left as they are at stop: pid "
                    f"{owner} ({_comm(owner)}) is the audit daemon now"))
                return
            restore()
        return run

    def hand_back(self, why: str) -> bool:
        """Give the audit pid back (``AUDIT_SET pid=0``) and read the multicast group from now
        on (module docstring, "Handing it back to auditd"); ``why`` says what asked for it.
        Said on stderr (``on_status``) and as event 255. ``False`` when the pid was not held
        (nothing done). Called on the reader thread.

        Raises:
            OSError: the ``AUDIT_SET`` failed (the pid is still held), or the multicast group
                cannot be joined (needs CAP_AUDIT_READ): the pid is then taken back when the
                kernel lets it (the message says whether it did; if not, the sensor is
                blind to audit and the guard's integrity check reports the pid as lost).
        """
        if self.mode != "unicast" or self._rd is None or self._ctl is None:
            return False
        # the pid first, then the group: records of the microseconds between go to the kernel
        # log (and printk's rate limit), not twice to us. The mode changes first so that the
        # guard's integrity check does not take the pid 0 for a pid taken by someone else.
        self.mode = "multicast"
        try:
            with self._ctl_lock:
                if self._ctl.get_status().pid == os.getpid():
                    self._ctl.set_status(pid=0)
        except OSError:
            self.mode = "unicast"
            raise
        try:
            self._rd.sock.setsockopt(_SOL_NETLINK, _NETLINK_ADD_MEMBERSHIP, AUDIT_NLGRP_READLOG)
        except OSError as e:
            # the pid is given up and the group is closed to us: take the pid back (records
            # of the moment between went to the kernel log); unicast again either way, so the
            # integrity check reports a pid someone else took
            self.mode = "unicast"
            try:
                with self._ctl_lock:
                    self._ctl.set_status(pid=os.getpid())
            except OSError as e2:
                raise OSError(e.errno, f"the multicast group cannot be joined ({e.strerror}; "
                              f"CAP_AUDIT_READ) and the audit pid could not be taken back "
                              f"({e2.strerror}): no audit record reaches the sensor") from None
            raise OSError(e.errno, f"the multicast group cannot be joined ({e.strerror}; "
                          "CAP_AUDIT_READ): the sensor took the audit pid back") from None
        self.handed_back = why
        self._undo = [u for u in self._undo if u[0] != "unregister audit pid"]
        msg = (f"{why}: the sensor handed the audit pid back (AUDIT_SET pid=0) and reads the "
               "audit multicast group from now on; its rules stay and collection goes on")
        self._status(f"audit: {msg}")
        # a fact, not a failure: nothing was lost (counted as a host note)
        self._safe_emit(BackendError(time.time_ns(), "audit", msg, host_fact=True))
        return True

    def _daemon_exec(self, pid: int, name: str) -> None:
        """A process exec'd an image named ``name`` (comm or image basename): an auditd about
        to register makes the sensor hand the pid back. Only a process running as root
        (effective uid 0 in ``/proc/PID/status``) counts: anyone can name a program
        ``auditd``, and only root can register as the audit daemon (CAP_AUDIT_CONTROL);
        a process gone before it is looked at does not count (a real auditd that asks is
        refused once and the kernel's ``AUDIT_REPLACE`` hands the pid back)."""
        if name != "auditd" or self.mode != "unicast" or _euid(pid) != 0:
            return
        try:
            self.hand_back(f"auditd started (pid {pid})")
        except OSError as e:
            self._error(f"auditd started (pid {pid}) and the audit pid could not be "
                        f"handed back: {e}")

    def _replace_asked(self, body: bytes) -> None:
        """``AUDIT_REPLACE`` from the kernel: another process asked for the audit pid and was
        refused (EEXIST); hand it back so its next attempt succeeds."""
        who = int.from_bytes(body[:4], sys.byteorder) if len(body) >= 4 else 0
        asker = f"pid {who} ({_comm(who)})" if who else "another process"
        if self.mode != "unicast":
            return
        try:
            self.hand_back(f"{asker} asked for the audit pid and was refused (EEXIST) while "
                           "the sensor held it; it can register now")
        except OSError as e:
            self._error(f"{asker} asked for the audit pid; it could not be handed back: {e}")

    def blind_episodes(self) -> tuple[int, bool]:
        """``(episodes, blind now)``: how many times audit was seen disabled while the sensor
        ran, and whether it is disabled now. Events were missed in each and their number
        cannot be known (the heartbeat writes the unknown ``EventsLost``)."""
        return self._blind_count, self._blind_since is not None

    def _unregister(self) -> None:
        assert self._ctl is not None
        with self._ctl_lock:
            cur = self._ctl.get_status()
            if cur.pid == os.getpid():
                self._ctl.set_status(pid=0)

    def integrity(self) -> list:
        """``[(technique, details)]``: ``audit_rules_changed`` when rules this backend added
        (keyed :attr:`key`) are gone from the kernel, audit was disabled, or (unicast mode)
        another process took the audit pid. One ``AUDIT_GET`` and one ``AUDIT_LIST_RULES`` on
        the control socket; nothing when the backend is not running or the kernel does not
        answer."""
        out: list = []
        if self._ctl is None or self._thread is None or not self._thread.is_alive() or \
                self._stopped:
            return out
        try:
            with self._ctl_lock:
                st = self._ctl.get_status()
                rules = self._ctl.list_rules()
        except OSError:
            return out
        present = set(rules)
        missing = [r for r in self._added if r not in present]
        if missing:
            out.append(("audit_rules_changed",
                        f"{len(missing)} of the sensor's {len(self._added)} audit rules (key "
                        f"{self.key!r}) were removed from the kernel"))
        if st.enabled == 0:
            out.append(("audit_rules_changed", "audit was disabled (enabled=0)"))
        if self.mode == "unicast" and st.pid != os.getpid():
            out.append(("audit_rules_changed", f"the audit pid was taken by pid {st.pid}"))
        said = set(out)
        for _, details in out:  # stderr once per episode (audit disabled: _blind_check says it)
            if ("audit_rules_changed", details) not in self._integrity_said and \
                    not details.startswith("audit was disabled"):
                self._status(f"audit: {details}: an audit_rules_changed finding (event 201)")
        self._integrity_said = said
        return out

    # rules ----------------------------------------------------------------------------------

    def _rule(self, arch: int, syscalls, *fields, kernel_pids: tuple = ()) -> AuditRule:
        flds = [(AUDIT_ARCH, AUDIT_EQUAL, arch), *fields]
        flds += [(AUDIT_PID, AUDIT_NOT_EQUAL, p) for p in kernel_pids]
        flds.append((AUDIT_FILTERKEY, AUDIT_EQUAL, self.key))
        return AuditRule(listnr=AUDIT_FILTER_EXIT, action=AUDIT_ALWAYS,
                         mask=AuditRule.syscall_mask(syscalls), fields=flds)

    def _rule_specs(self, compat: tuple) -> list:
        """``[(rule, fallback_rule_or_None, optional)]`` for this host."""
        assert self._arch is not None  # set by start()
        t = ARCH_TABLES[self._arch]
        pids = tuple(sorted(self._excl))[:50]      # rest filtered in user space
        ok = (AUDIT_SUCCESS, AUDIT_EQUAL, 1)

        def n(*names):
            return [t[x] for x in names if x in t]

        def r(syscalls, *f, arch=self._arch):
            return self._rule(arch, syscalls, *f, kernel_pids=pids)

        specs = [(r(n("execve", "execveat"), ok), None, False)]
        for a in compat:
            ct = ARCH_TABLES[a]
            specs.append((r([ct["execve"], ct["execveat"]], ok, arch=a), None, True))
        fallback_connect = r(n("connect"))
        specs.append((r(n("connect"), (AUDIT_SADDR_FAM, AUDIT_EQUAL, AF_INET)),
                      fallback_connect, False))
        specs.append((r(n("connect"), (AUDIT_SADDR_FAM, AUDIT_EQUAL, AF_INET6)),
                      fallback_connect, False))
        specs.append((r(n("accept", "accept4"), ok), None, False))
        specs.append((r(n("openat"), (AUDIT_ARG2, AUDIT_BIT_MASK, O_CREAT), ok), None, False))
        if "open" in t:
            specs.append((r(n("open"), (AUDIT_ARG1, AUDIT_BIT_MASK, O_CREAT), ok), None, False))
        specs.append((r(n("creat", "openat2"), ok), r(n("creat"), ok), False))
        specs.append((r(n("unlink", "unlinkat", "rename", "renameat", "renameat2"), ok),
                      None, False))
        specs.append((r(n("ptrace"), (AUDIT_ARG0, AUDIT_EQUAL, PTRACE_ATTACH), ok), None, False))
        specs.append((r(n("ptrace"), (AUDIT_ARG0, AUDIT_EQUAL, PTRACE_SEIZE), ok), None, False))
        # CreateRemoteThread (8): writes into another process's memory or registers
        for req in PTRACE_WRITES:
            specs.append((r(n("ptrace"), (AUDIT_ARG0, AUDIT_EQUAL, req), ok), None, True))
        specs.append((r(n("process_vm_writev"), ok), None, True))
        if 212 in self.options.get("optional_events", ()):  # MemfdCreate: off unless asked
            specs.append((r(n("memfd_create"), ok), None, True))
        for fam in (AF_INET, AF_INET6):  # the socket type of later connects (their protocol)
            specs.append((r(n("socket"), (AUDIT_ARG0, AUDIT_EQUAL, fam), ok), None, True))
        # ProcessTerminate: from the proc connector when it runs; else exit_group (it never
        # returns, so no success filter; its record is written when the process exits). A
        # process killed by a signal does not call it and is then not seen (documented limit).
        if self._cn is None:
            specs.append((r(n("exit_group")), None, True))
        return specs

    def _watch_rule(self, path: str) -> AuditRule:
        assert self._arch is not None  # set by start()
        t = ARCH_TABLES[self._arch]
        pids = tuple(sorted(self._excl))[:50]
        return self._rule(self._arch, [t[x] for x in ("open", "openat", "openat2") if x in t],
                          (AUDIT_WATCH, AUDIT_EQUAL, path), (AUDIT_PERM, AUDIT_EQUAL,
                                                              AUDIT_PERM_READ),
                          (AUDIT_SUCCESS, AUDIT_EQUAL, 1), kernel_pids=pids)

    def _add(self, rule: AuditRule) -> bool:
        """Add one rule; ``True`` if it is now in the kernel (ours or pre-existing)."""
        payload = rule.pack()
        assert self._ctl is not None
        try:
            with self._ctl_lock:
                self._ctl.add_rule(payload)
        except AuditError as e:
            if e.errno == errno.EEXIST:
                self._stats["rules_preexisting"] += 1
                return True
            raise
        self._added.append(payload)
        self._stats["rules"] += 1
        if len(self._added) == 1:
            self._undo.append(("delete our rules", self._delete_rules))
        return True

    def _add_rules(self, compat: tuple) -> None:
        added_fallbacks = set()
        for rule, fallback, optional in self._rule_specs(compat):
            try:
                self._add(rule)
            except AuditError as e:
                if e.errno == errno.EINVAL and fallback is not None:
                    key = fallback.pack()
                    if key not in added_fallbacks:
                        added_fallbacks.add(key)
                        self._add(fallback)
                elif optional:
                    continue
                else:
                    raise
        self._rescan_devices()

    def _rescan_devices(self) -> None:
        for path, ident in _block_devices():
            if path in self.watched_devices:
                continue
            try:
                self._add(self._watch_rule(path))
            except AuditError as e:
                if e.errno in (errno.ENOENT, errno.EINVAL, errno.ENOTDIR):
                    continue
                raise
            self.watched_devices[path] = ident
            self._watch_ids[ident] = path

    def _delete_rules(self) -> None:
        assert self._ctl is not None
        failed = []
        with self._ctl_lock:
            for payload in reversed(self._added):
                try:
                    self._ctl.del_rule(payload)
                except AuditError as e:
                    if e.errno != errno.ENOENT:
                        failed.append(payload)
        self._added = failed
        if failed:
            raise AuditError(errno.EIO, f"{len(failed)} audit rules could not be deleted")

    def stop(self) -> None:
        """Stop the reader, flush what is queued, delete exactly our rules and restore every
        audit setting changed by :meth:`start` (also after a half-failed start). A final
        ``AUDIT_GET`` reports lost records. Idempotent; never raises (problems are emitted as
        :class:`BackendError`)."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        atexit.unregister(self.stop)
        self.blind_at_stop()
        stuck = False
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            stuck = self._thread.is_alive()      # blocked in emit(): leave its socket alone
            self._thread = None
        self._restore(drain=not stuck)

    def _restore(self, drain: bool = True) -> None:
        problems = []
        # stop new records first (rules, enabled), drain what is queued, then the rest
        undo = list(reversed(self._undo))
        self._undo = []
        first = [u for u in undo if u[0] in ("restore enabled", "delete our rules")]
        rest = [u for u in undo if u not in first]
        for desc, fn in first:
            try:
                fn()
            except Exception as e:   # noqa: BLE001 - stop() must not raise
                problems.append(f"{desc}: {e}")
        if self._rd is not None and drain:
            try:
                self._drain(0.3)
            except Exception as e:   # noqa: BLE001
                problems.append(f"drain: {e}")
        for desc, fn in rest:
            try:
                fn()
            except Exception as e:   # noqa: BLE001
                problems.append(f"{desc}: {e}")
        if self._ctl is not None:
            try:
                self._poll_status()
            except Exception:        # noqa: BLE001
                pass
        for sock in (self._rd, self._ctl):
            if sock is not None:
                sock.close()
        self._rd = self._ctl = None
        self._close_companions()
        self._added = []
        self._stopped = True
        for msg in problems:
            self._safe_emit(BackendError(time.time_ns(), "audit", f"restore failed: {msg}"))

    # -- reader --------------------------------------------------------------------------------

    def _run(self) -> None:
        set_native_name("sysmonx-audit")  # its CPU time told apart from outside (top -H, perf)
        interval = float(self.options.get("status_interval", 1.0))
        rescan = float(self.options.get("device_rescan", 10.0))
        timeout = float(self.options.get("event_timeout", 1.0))
        next_poll = time.monotonic() + interval
        next_scan = time.monotonic() + rescan if rescan > 0 else float("inf")
        assert self._rd is not None  # opened by start() before the thread
        try:
            for note in self._notes:
                self._safe_emit(note)
            self._notes = []
            for mtype, body in self._rd.pending:
                self._on_message(mtype, body)
            self._rd.pending.clear()
            poller = select.poll()
            audit_fd = self._rd.sock.fileno()
            poller.register(audit_fd, select.POLLIN)
            fast = select.poll()  # the proc connector only: served while audit records gather
            if self._cn is not None:
                poller.register(self._cn.fileno(), select.POLLIN)
                fast.register(self._cn.fileno(), select.POLLIN)
            if self._trace is not None:
                poller.register(self._trace.fileno(), select.POLLIN)
            next_tick = time.monotonic() + 0.5
            gather = float(self.options.get("gather_ms", 4)) / 1000
            while not self._stopping.is_set():
                ready = poller.poll(100)
                self._drain_companions()
                n = self._read_some(0) if any(fd == audit_fd for fd, _ in ready) else 0
                now = time.monotonic()
                self._flush(now - timeout)
                self._flush_out()
                if 0 < n < 64 and gather:
                    # a trickle of audit records: let them gather for a few ms (one loop per
                    # batch instead of per record), answering the proc connector meanwhile so
                    # exec snapshots are still taken at once
                    until = now + gather
                    if self._gather is not None and self._cn is not None:
                        left = until - time.monotonic()
                        if left > 0:
                            self._gather_cn(left)
                    else:
                        while True:
                            left = until - time.monotonic()
                            if left <= 0 or self._stopping.is_set():
                                break
                            if fast.poll(max(1, int(left * 1000))):
                                self._drain_cn()
                if now >= next_tick:
                    self._tick()
                    next_tick = now + 0.5
                if now >= next_poll:
                    try:
                        self._poll_status()
                    except OSError as e:
                        self._error(f"AUDIT_GET poll failed: {e}")
                    next_poll = now + interval
                if now >= next_scan:
                    try:
                        self._rescan_devices()
                    except (AuditError, OSError) as e:
                        self._error(f"block device rescan failed: {e}")
                    next_scan = now + rescan
        except Exception as e:   # noqa: BLE001 - report, never die silently
            self._safe_emit(BackendError(time.time_ns(), "audit", f"reader stopped: {e!r}",
                                         fatal=True))
        finally:
            try:
                self._flush_out()
            except Exception:    # noqa: BLE001 - the consumer went away
                pass

    def _read_some(self, timeout: float, limit: int = 512, budget: float = 0.2) -> int:
        """Read up to ``limit`` datagrams (or for ``budget`` seconds, so housekeeping runs even
        when ``emit`` blocks), waiting at most ``timeout`` for the first. Returns how many
        were read. With the compiled reader (``nl.compiled_recv``, option ``compiled_reader``)
        batches of up to 64 datagrams are read and parsed in one call; the records are the same
        (tests/test_audit_compiled.py)."""
        if self._recv is not None:
            return self._read_batches(timeout, limit, budget)
        n = 0
        wait = timeout if timeout > 0 else None  # None: a non-blocking recv, no poll first
        end = time.monotonic() + timeout + budget
        assert self._rd is not None
        while n < limit and (n == 0 or time.monotonic() < end):
            try:
                data = self._rd.recv_datagram(wait)
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    self._enobufs()
                    continue
                raise
            if data is None:
                break
            wait = None
            n += 1
            if not n & 63:
                self._drain_companions()  # exec snapshots must be taken while processes live
                self._flush_out()
            for mtype, _flags, _seq, body in AuditSocket.split(data):
                self._on_message(mtype, body)
        return n

    def _enobufs(self) -> None:
        """A read failed with ENOBUFS: counted and reported as a loss of unknown size."""
        self._stats["enobufs"] += 1
        self._loss("audit.enobufs", 0, "netlink receive buffer overflowed (ENOBUFS): "
                   "an unknown number of audit records were dropped for this reader")

    def _read_batches(self, timeout: float, limit: int, budget: float) -> int:
        """:meth:`_read_some` by the compiled reader: the companions are served after each full
        batch (64 datagrams), as the pure path serves them every 64 datagrams."""
        rd, recv = self._rd, self._recv
        assert rd is not None and recv is not None
        if timeout > 0 and not rd.wait_readable(timeout):
            return 0
        n = 0
        end = time.monotonic() + timeout + budget
        fd = rd.fileno()
        on_record, record, parse = self._on_record, nl.AuditRecord, nl.parse_record
        while n < limit and (n == 0 or time.monotonic() < end):
            want = min(64, limit - n)
            try:
                recs, got = recv(fd, want, _WANTED)
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    self._enobufs()
                    continue
                raise
            if not got:
                break
            n += got
            for mtype, serial, ts_ns, text in recs:
                if mtype == nl.AUDIT_REPLACE:  # binary: the pid that asked
                    self._replace_asked(text)
                    continue
                if serial is None:  # an unusual header: the Python parser decides
                    rec = parse(mtype, text)
                    if rec is None:
                        continue
                else:
                    rec = record(mtype, serial, ts_ns, text)
                on_record(rec)
            if got < want:
                break  # nothing more waiting
            self._drain_companions()  # exec snapshots must be taken while processes live
            self._flush_out()
        return n

    # -- companions: proc connector and tracefs ------------------------------------------------

    def _drain_cn(self) -> None:
        # up to 16,384 messages: a record of a process whose fork is not known yet asks for
        # every message queued before it (the fork of a child that connects before its exec)
        if self._cn is not None:
            for _ in range(64):
                msgs = self._cn.read(256)
                if not msgs:
                    break
                self._on_cn(msgs)

    def _drain_companions(self) -> None:
        self._drain_cn()
        tr = self._trace
        if tr is not None:
            try:
                transitions = tr.read()
            except OSError as exc:
                self._error(f"tracefs read failed: {exc}")
                tr.close()
                self._trace = None
                return
            for t in transitions:
                for syn, sport in self._matcher.feed(t):
                    self._tcp_connected(syn, sport)
        if self._tcp_wait:
            self._settle_tcp()

    def _on_cn(self, msgs: list, taken: Optional[dict] = None, first: int = 0) -> None:
        """Proc connector messages: snapshots of exec'd processes first (they may exit any
        moment), then forks, execs and exits in order. ``taken``: tgid -> the snapshots
        already taken for its execs, in order (``_snapshot_of`` results, from the compiled
        gather), for the messages from index ``first`` on (those before it were read while
        subscribing, before the gather: none of its snapshots is theirs); an exec without one
        is read now."""
        snaps = {}
        for i, m in enumerate(msgs):
            if m[0] == PROC_EVENT_EXEC and m[5] not in self._excl:
                early = taken.get(m[5]) if taken and i >= first else None
                snaps[i] = early.pop(0) if early else _exec_snapshot(m[5])
        off = self._mono_off
        cn = self._cn
        assert cn is not None  # messages come from it
        for i, m in enumerate(msgs):
            what = m[0]
            if not cn.in_order(m):
                continue
            if what == PROC_EVENT_FORK:
                if m[6] != m[7]:
                    continue  # a thread
                child, parent = m[7], m[5]
                ticks = fork_start_ticks(child, m[3], self._boot_off)
                self._starts[child] = ticks
                if len(self._starts) > 65536:
                    self._starts.popitem(last=False)
                self._stats["forks"] += 1
                self._raise_floor(child, m[3] + off)
                if child not in self._excl:
                    # held: sent only if the child is reported before it execs (or exits
                    # without exec); an exec says all a fork would
                    self._forks[child] = ProcessFork(m[3] + off, child, parent, ticks)
                    if len(self._forks) > 65536:
                        self._forks.popitem(last=False)
            elif what == PROC_EVENT_EXEC:
                pid = m[5]
                if pid in self._excl:
                    continue
                fork = self._forks.pop(pid, None)
                if fork is not None:
                    # an exec says all a fork would, unless the child did something audit
                    # reports before it exec'd (a connect, a file opened for a redirection):
                    # kept until the exec's own audit record comes (_out_audit)
                    self._exec_forks[pid] = fork
                    if len(self._exec_forks) > 65536:
                        self._exec_forks.popitem(last=False)
                start, end, exe, ns = snaps.get(i) or (None, None, None, None)
                if exe == b"auditd":
                    self._daemon_exec(pid, "auditd")
                if start is None:
                    start = self._starts.get(pid)
                self._snaps.setdefault(pid, []).append((m[3] + off, start, end, exe, ns))
            elif what == PROC_EVENT_EXIT:
                pid, tgid = m[4], m[5]
                if pid != tgid or tgid in self._excl:
                    continue
                self._stats["exits"] += 1
                fork = self._forks.pop(tgid, None)
                if fork is not None:
                    self._out_fork(fork)
                self._out(ProcessExit(m[3] + off, tgid, self._starts.pop(tgid, None),
                                      (m[6] >> 8) & 0xFF))

    def _gather_cn(self, seconds: float) -> None:
        """Wait up to ``seconds`` for proc connector messages with the compiled gather
        (``_ringbatch.cn_gather``: no GIL while waiting, ``/proc/TGID/stat`` read at each exec
        as soon as it comes), then handle them as :meth:`_drain_cn` does."""
        cn, gather = self._cn, self._gather
        assert cn is not None and gather is not None
        try:
            datagrams, snapshots, enobufs, err, nomem = gather(
                cn.fileno(), max(1, int(seconds * 1000)), 2048)
        except MemoryError:
            # the datagrams read could not be handed over: lost, how many is not known
            self._stats["cn_nomem"] += 1
            self._loss("cnproc.nomem", 0, "out of memory while reading proc connector "
                       "messages: the messages read then are lost (count unknown)")
            return
        if nomem:
            # a datagram read from the socket and not kept (failed allocation): its messages
            # (forks, execs, exits) are lost; said, never silent
            self._stats["cn_nomem"] += nomem
            self._loss("cnproc.nomem", nomem, "out of memory while reading proc "
                       "connector messages: datagrams read and not kept")
        taken: dict = {}
        for tgid, data, mnt, pidns in snapshots:
            taken.setdefault(tgid, []).append(
                _snapshot_of(data, (mnt, pidns) if mnt and pidns else None))
        before = len(cn.early)  # read while subscribing: absorb puts them first
        msgs = cn.absorb(datagrams, enobufs)
        if msgs:
            self._on_cn(msgs, taken, before)
        if err:
            raise OSError(err, f"proc connector read failed: {os.strerror(err)}")

    def _tcp_connected(self, syn, sport: Optional[int]) -> None:
        """A TCP connect seen by tracefs (SYN_SENT, then the port): kept for the audit connect
        record of the same process and destination."""
        # the tracer's tgid column may be another (earlier) task's: see thread_group
        tgid = thread_group(syn.tid, syn.tgid)
        key = (tgid, syn.daddr, syn.dport)
        self._tcp_src.setdefault(key, []).append((syn.mono_ns + self._mono_off, syn.saddr,
                                                  sport))

    def _tcp_source(self, pid: int, ip: str, port: int, ts: int) -> Optional[tuple]:
        """``(saddr, sport)`` of this process's TCP connect to ``ip:port`` whose SYN was sent
        within the audit record's clock tick (audit times are coarse: at most ~10 ms early),
        oldest first; consumed. ``None`` when tracefs saw no such connect."""
        key = (pid, ip, port)
        lst = self._tcp_src.get(key)
        if not lst:
            return None
        lo, hi = ts - 2_000_000, ts + 20_000_000
        while lst and lst[0][0] < lo:
            lst.pop(0)  # a connect whose audit record never came (or already matched)
        for i, (t, saddr, sport) in enumerate(lst):
            if t <= hi:
                lst.pop(i)
                if not lst:
                    del self._tcp_src[key]
                return (saddr, sport or None)  # the address is known even without the port
        return None

    def _settle_tcp(self, force: bool = False) -> None:
        """Emit the connects waiting for their tracefs source, in order, as far as each has its
        source or has waited long enough (``force``: all)."""
        now = time.monotonic()
        while self._tcp_wait:
            deadline, pid, ip, port, ts, obs = self._tcp_wait[0]
            src = self._tcp_source(pid, ip, port, ts)  # both in inet_ntop/%pI6c form
            if src is None and not force and now < deadline:
                return
            self._tcp_wait.pop(0)
            if src is None:
                # still connecting (no answer yet, e.g. EINPROGRESS to a silent host): the
                # tracer's SYN_SENT is pending; its socket names the port
                syn = self._matcher.claim(pid, ip, port, thread_group)
                if syn is not None:
                    src = (syn.saddr, syn_sent_port(syn.daddr, syn.dport, syn.saddr))
            if obs is not None:
                if src is not None:
                    obs.protocol = "tcp"  # tracefs traces TCP sockets only
                self._finish_connect(obs, src)

    def _finish_connect(self, obs: NetworkConnect, src: Optional[tuple]) -> None:
        if src is not None:
            obs.source_ip, obs.source_port = src
        if obs.protocol == "tcp":
            self._stats["tcp_source_known" if src else "tcp_source_unknown"] += 1
        elif obs.protocol is None:
            self._stats["protocol_unknown"] += 1
        self._out_audit(obs)

    def _tick(self) -> None:
        """Housekeeping every 0.5 s: clock offsets, stale companion state, loss counters."""
        self._mono_off = monotonic_to_epoch_offset()
        self._boot_off = boot_offset_ns()
        now = time.time_ns()
        stale = now - 5_000_000_000
        for pid in [p for p, lst in self._snaps.items() if lst[-1][0] < stale]:
            del self._snaps[pid]
        while self._exec_forks and next(iter(self._exec_forks.values())).ts_ns < stale:
            self._exec_forks.popitem(last=False)  # its exec's audit record never came
        for key in [k for k, lst in self._tcp_src.items() if not lst or lst[-1][0] < stale]:
            del self._tcp_src[key]
        for syn, sport in self._matcher.expire():
            self._tcp_connected(syn, sport)
        if self._cn is not None:
            self._cn.tick()
        if self._trace is not None:
            lost = self._trace.lost_delta()
            if lost:
                self._loss("tracefs.overrun", lost, "tracefs ring buffer overrun (TCP states)")

    def _drain(self, budget: float) -> None:
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            self._drain_companions()
            if not self._read_some(0.05):
                break
        self._drain_companions()
        self._flush(float("inf"))
        for syn, sport in self._matcher.expire(force_all=True):
            self._tcp_connected(syn, sport)
        self._settle_tcp(force=True)
        self._flush_out()

    def _on_message(self, mtype: int, body: bytes) -> None:
        if mtype == nl.AUDIT_REPLACE:
            self._replace_asked(body)
            return
        if mtype not in _KEEP and mtype != nl.AUDIT_EOE:
            return
        rec = nl.parse_record(mtype, body)
        if rec is not None:
            self._on_record(rec)

    def _on_record(self, rec: nl.AuditRecord) -> None:
        """Group one parsed record with the others of its event; the event is classified at
        its ``EOE``."""
        mtype = rec.type
        self._stats["records"] += 1
        ev = self._pending.get(rec.serial)
        if mtype == nl.AUDIT_EOE:
            if ev is not None:
                del self._pending[rec.serial]
                self._finish(ev)
            return
        if ev is None:
            ev = self._pending[rec.serial] = AuditEvent(rec.serial, rec.ts_ns, time.monotonic())
        ev.records.append(rec)

    def _flush(self, older_than: float) -> None:
        while self._pending:
            serial, ev = next(iter(self._pending.items()))
            if ev.born > older_than:
                break
            del self._pending[serial]
            self._stats["partial"] += 1
            self._finish(ev)

    def _poll_status(self) -> None:
        assert self._ctl is not None
        with self._ctl_lock:
            st = self._ctl.get_status()
        if self._last_lost is not None:
            delta = (st.lost - self._last_lost) & 0xFFFFFFFF
            if delta:
                self._loss("audit.lost", delta,
                           f"kernel audit lost counter grew by {delta} records (all audit "
                           f"users; backlog_limit={st.backlog_limit}, backlog={st.backlog})")
        self._last_lost = st.lost
        if not self._stopping.is_set():
            self._blind_check(st.enabled, time.time_ns())

    def _blind_check(self, enabled: int, now: int) -> None:
        """Audit disabled (``enabled=0``) stops every record: event 255 and a stderr line when
        it is first seen, and when it is enabled again (module docstring, "Blind")."""
        if enabled == 0 and self._blind_since is None:
            self._blind_since = now
            self._blind_count += 1
            msg = ("audit was disabled (enabled=0): collection is blind from now on: "
                   f"{_BLIND_EVENTS} are not collected until audit is enabled again (the "
                   "sensor does not enable it; forks and exits still come from the proc "
                   "connector); how many events are missed cannot be known")
            self._status(f"audit: {msg}")
            self._safe_emit(BackendError(now, "audit", msg))
        elif enabled != 0 and self._blind_since is not None:
            since, self._blind_since = self._blind_since, None
            msg = (f"audit was enabled again (enabled={enabled}): collection resumed after "
                   f"{(now - since) / 1e9:.1f} s blind (seen disabled at {_utc(since)}, by "
                   "the status poll every second); the events of "
                   "that time were not collected and how many is not known")
            self._status(f"audit: {msg}")
            self._safe_emit(BackendError(now, "audit", msg))

    def blind_at_stop(self) -> None:
        """At stop while still blind: event 255 says for how long (called by :meth:`stop`)."""
        if self._blind_since is not None:
            since, self._blind_since = self._blind_since, None
            now = time.time_ns()
            msg = (f"audit was still disabled at stop: collection was blind for the last "
                   f"{(now - since) / 1e9:.1f} s (since {_utc(since)}); how many events were "
                   "missed is not known")
            self._status(f"audit: {msg}")
            self._safe_emit(BackendError(now, "audit", msg))

    # -- emit helpers ----------------------------------------------------------------------------

    def _safe_emit(self, obs: Observation) -> None:
        try:
            self.emit(obs)
        except Exception:    # noqa: BLE001 - a failing consumer must not kill restore
            pass

    def _out(self, obs: Observation) -> None:
        self._stats["received"] += 1
        self._outbox.append(obs)
        if len(self._outbox) >= 256:
            self._flush_out()

    def _flush_out(self) -> None:
        """Hand the observations made so far to the sensor in one batch (order kept)."""
        if self._outbox:
            out, self._outbox = self._outbox, []
            self.emit_all(out)

    def _raise_floor(self, pid: int, ts: int) -> None:
        if ts > self._floor.get(pid, 0):
            self._floor[pid] = ts
            self._floor.move_to_end(pid)
            if len(self._floor) > 65536:
                self._floor.popitem(last=False)

    def _out_audit(self, obs: AuditObservation) -> None:
        """Emit an observation made from audit records. Audit stamps records with the coarse
        clock (the last timer tick: up to a few ms early), while fork and exec times come from
        the proc connector to the nanosecond; an audit event of a process cannot have happened
        before that process's fork or (records come in order) its last exec, so its time is
        raised to that, which keeps each process's events in order."""
        raw_ts = obs.ts_ns
        floor = self._floor.get(obs.pid)
        if floor is not None and obs.ts_ns < floor:
            obs.ts_ns = floor
        if self._forks or self._exec_forks:
            # the child is reported before any exec (or before the exec whose audit record
            # has not come yet: records of one process come in order): say whose child it is
            fork = self._forks.pop(obs.pid, None)
            exec_held = False
            if fork is None:
                fork = self._exec_forks.pop(obs.pid, None)
                exec_held = fork is not None
            if fork is not None and type(obs) is not ProcessExec:
                self._out_fork(fork)
                if exec_held:
                    self._lost_exec(obs.pid, fork, raw_ts)
            target = getattr(obs, "target_pid", None)  # 8, 10: the other process, too
            if target is not None:
                fork = self._forks.pop(target, None)
                if fork is not None:
                    self._out_fork(fork)
            if type(obs) is ProcessExec:
                # the parent as it was then: a subshell is known only by its held fork
                self._out_parents(obs.ppid, obs.ts_ns)
        if self._cn is None and self.mode == "unicast" and type(obs) is ProcessExec:
            # no proc connector: the exec record names an auditd about to register
            image = obs.image or ""
            if image.endswith("/auditd"):
                self._daemon_exec(obs.pid, "auditd")
        self._out(obs)

    def _out_fork(self, fork: ProcessFork) -> None:
        """Send a held fork, after the held forks of its parents (:meth:`_out_parents`)."""
        self._out_parents(fork.ppid, fork.ts_ns)
        self._out(fork)

    def _out_parents(self, ppid: Optional[int], ts_ns: int) -> None:
        """Send the held forks of ``ppid`` and of its parents that had not exec'd by ``ts_ns``
        (:func:`~.cnproc.held_parent_forks`): one held since the fork, or one whose exec the
        proc connector reported after ``ts_ns`` and whose audit record has not come (audit
        writes the child's exec record first: ``( x=$(/bin/echo a); exec /bin/rm f )``). The
        latter stays held for :meth:`_lost_exec` (sent again then: the core keeps the first)."""
        if not ppid or (ppid not in self._forks and ppid not in self._exec_forks):
            return
        for fork in held_parent_forks(ppid, lambda p: self._take_parent_fork(p, ts_ns)):
            self._out(fork)

    def _take_parent_fork(self, pid: int, ts_ns: int) -> Optional[ProcessFork]:
        fork = self._forks.pop(pid, None)
        if fork is None:
            fork = self._exec_forks.get(pid)
            snaps = self._snaps.get(pid)
            if fork is not None and not (snaps and snaps[0][0] > ts_ns):
                fork = None  # it had exec'd by then: its exec's record names it
        return fork

    def _pending_exec_of(self, pid: int) -> Optional[AuditEvent]:
        """The oldest event still waiting for its ``EOE`` whose SYSCALL record is an exec of
        ``pid``, or ``None``."""
        for ev in self._pending.values():
            for rec in ev.records:
                if rec.type != nl.AUDIT_SYSCALL:
                    continue
                f = nl.parse_fields(rec.text)
                if f.get("pid") == str(pid):
                    try:
                        table = ARCH_TABLES.get(int(f.get("arch") or "", 16), {})
                        nr = int(f.get("syscall") or "")
                    except ValueError:
                        break
                    if nr in (table.get("execve"), table.get("execveat")):
                        return ev
                break
        return None

    def _lost_exec(self, pid: int, fork: ProcessFork, ts_ns: int) -> None:
        """An audit event of ``pid`` (raw audit time ``ts_ns``) whose exec the proc connector
        reported and whose exec record has not come. Audit's clock is coarse but never late, so
        an event stamped after the exec (:data:`LOST_EXEC_MARGIN_NS` for the two clocks) was
        made after it; records of one process come in order, so the exec's record was lost
        (backlog). Its event 1 is then written from what is known (the proc connector's
        snapshot: time, start, ``end_code``; ``/proc`` while it still shows the image the
        snapshot saw), the rest the documented unknown values: the events after the exec are
        never given the fork's (the parent's) image."""
        snaps = self._snaps.get(pid)
        if not snaps or ts_ns <= snaps[0][0] + LOST_EXEC_MARGIN_NS:
            return  # made before the exec (or cannot tell): the fork's, as sent
        pending = self._pending_exec_of(pid)
        if pending is not None:
            # the exec's records came but not its EOE (lost): classified now, before this
            # later event of the process, rather than a second event 1 a second later
            del self._pending[pending.serial]
            self._stats["partial"] += 1
            self._finish(pending)
            return
        snap_ts, start, end, comm, ns = snaps.pop(0)
        if not snaps:
            del self._snaps[pid]
        self._stats["exec_lost"] += 1
        image = None
        if comm is not None:
            # /proc is this exec's image only while its comm is the snapshot's (a later exec
            # of the same process changes both)
            now = _exec_snapshot(pid)
            if now[0] == start and now[2] == comm:
                try:
                    image = os.readlink(f"/proc/{pid}/exe")
                except OSError:
                    image = None
        if image is None:
            end, ns = None, None
        self._out(ProcessExec(ts_ns=snap_ts, pid=pid, ppid=fork.ppid, tid=pid,
                              start_ticks=start if start is not None else fork.start_ticks,
                              image=image if image is not None else UNKNOWN_TEXT,
                              end_data=end, mnt_ns=ns[0] if ns else None,
                              pid_ns=ns[1] if ns else None))

    def _loss(self, source: str, count: int, detail: str) -> None:
        self._stats["lost"] += count
        self.emit(Loss(time.time_ns(), source, count, detail))

    def _error(self, message: str) -> None:
        self._errors_reported += 1
        if self._errors_reported <= 20:
            self.emit(BackendError(time.time_ns(), "audit", message))

    def stats(self) -> dict:
        """``received`` (observations emitted), ``lost`` (sum of Loss counts), ``records``,
        ``events``, ``partial`` (events flushed without EOE), ``enobufs``, ``exec_lost`` (execs
        whose audit record was lost, written from the proc connector's snapshot), ``cn_nomem``
        (proc connector datagrams lost to a failed allocation), ``rules`` (added),
        ``rules_preexisting``, ``parse_errors``, ``mode``, ``watched_devices``."""
        out = dict(self._stats)
        if self._cn is not None:
            out.update({k if k.startswith("cn_") else f"cn_{k}": v
                        for k, v in self._cn.stats.items()})
        out["mode"] = self.mode
        out["watched_devices"] = len(self.watched_devices)
        out["proc_connector"] = self._cn is not None
        out["tracefs"] = self._trace is not None
        return out


# -- helpers ---------------------------------------------------------------------------------

def _block_devices() -> list:
    """``[(path, (st_dev, st_ino))]`` of block device nodes in ``/dev`` and its first-level
    subdirectories (symlinks not followed)."""
    out = []

    def scan(d: str, depth: int) -> None:
        try:
            entries = list(os.scandir(d))
        except OSError:
            return
        for e in entries:
            try:
                if e.is_symlink():
                    continue
                if e.is_dir(follow_symlinks=False):
                    if depth == 0 and e.name not in _SKIP_DEV_DIRS:
                        scan(e.path, 1)
                    continue
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISBLK(st.st_mode):
                out.append((e.path, (st.st_dev, st.st_ino)))

    scan("/dev", 0)
    out.sort()
    return out


def _comm(pid: int) -> str:
    """The name (``comm``) of process ``pid`` from ``/proc/PID/comm``, display controls made
    visible (it goes into event 255 and stderr text); ``?`` when it cannot be read."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return visible(f.read().rstrip("\n"))
    except OSError:
        return "?"


def _euid(pid: int) -> int:
    """The effective uid of process ``pid`` (``/proc/PID/status``, ``Uid:`` line's second
    number); -1 when it cannot be read (the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[2])
    except (OSError, ValueError, IndexError):
        pass
    return -1
