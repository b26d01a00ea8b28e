"""Tier C backend: netlink proc connector + fanotify + tracefs (spec linux-sensing.md §2.1,
§2.3, §2.4(c), §2.5 and §5 item 3).

Use it when neither eBPF (tier A) nor audit (tier B) is available. What each mechanism gives:

* **cn_proc** (``NETLINK_CONNECTOR``, ``CN_IDX_PROC``): fork, exec and exit of every process
  with exit codes, kernel CLOCK_MONOTONIC stamps and a per-CPU sequence number. On each exec the
  reader thread reads ``/proc/PID`` at once (cmdline, exe, cwd, stat fields 4/22/27, status uid,
  loginuid, sessionid). That races with short-lived processes: the spec measured 41–73 %
  complete command lines for processes living under a millisecond; this backend measured
  23–79 % (2000 × ``/bin/true`` from another process, 8 in flight, 2 vCPUs, depending on the
  other load) and gets them all for processes that live a few milliseconds.
* **fanotify** ``FAN_OPEN_EXEC``: the exec'd binary's path for the exec'ing pid, queued before
  the cn_proc exec message, hence a race-free Image (~100 %), paired by
  :class:`~.cn_fanotify.ExecImages`; ``FAN_CREATE``/``FAN_MOVED_TO`` -> FileCreate (regular files),
  ``FAN_DELETE`` -> FileDelete, with pid and full path. fanotify events carry no time stamp:
  ``ts_ns`` of file events is when they were read (normally well under a millisecond later).
* **tracefs** ``sock:inet_sock_set_state`` in a private instance: TCP connects (with the
  connecting pid) and accepts (attributed to the owner of the listening socket).

Never trusted: when the same pid exec'd again before its first exec was processed, ``/proc``
already shows the second program, so argv/cwd/uid/end_data of the first exec are left ``None``
rather than wrong (the Image still comes from its own FAN_OPEN_EXEC group).

Not in this tier: **RawAccessRead** (fanotify produces no events for block-device reads, spec
§2.3, and tracefs syscall tracepoints print only pointers, §2.4(c)) and **ProcessAccess**
(ptrace: cn_proc's PTRACE event reports only PTRACE_ATTACH/DETACH, not the request of each
call, and tracefs cannot read the target of ``sys_enter_ptrace`` safely without a pid race).
UDP network events are not produced either (tracefs has no UDP state tracepoint).

Losses, each as a :class:`~sysmonx.sensor.observations.Loss`:

* ``cnproc.seq`` — gaps in the per-CPU ``cn_msg.seq`` (every proc event increments its CPU's
  counter, so with all event types subscribed a gap is exactly the number lost);
* ``cnproc.enobufs`` — the receive queue overflowed (``ENOBUFS``): counted with the socket's
  ``SK_MEMINFO_DROPS`` (``SO_MEMINFO``). Without kernel filtering this only reports drops that no
  later sequence number revealed (at stop); with kernel filtering it is the only count;
* ``fanotify.overflow`` — ``FAN_Q_OVERFLOW``; fanotify keeps no counter, so ``count`` is 1 and
  means "at least one";
* ``tracefs.overrun`` — the instance's per-CPU ``overrun`` + ``dropped events``.

Kernel event-type filtering (6.6+, ``struct proc_input``): the per-CPU sequence counter also
advances for events the filter discards, so filtering makes sequence gaps meaningless. It is
therefore off by default. ``options["kernel_filter"] = True`` subscribes to EXEC|EXIT only — the
kernel then drops fork and thread-creation messages (about a third of the traffic, more with
multi-threaded programs), ParentProcessId comes only from ``/proc/PID/stat`` (``None`` when the
process is already reaped), and losses are counted through ``SO_MEMINFO`` drops only. (The
kernel filter also discards its own LISTEN acknowledgement, so the backend first subscribes
unfiltered, waits for the ack, then installs the filter with a second LISTEN.)
"""

from __future__ import annotations

import errno
import os
import random
import select
import socket
import struct
import sys
import threading
import time
from typing import Callable, Optional

from ...core import native
from ...core.registry import BACKENDS
from ..observations import (CLK_TCK, BackendError, FileCreate, FileDelete, Loss, NetworkConnect,
                            Observation, ProcessExec, ProcessExit, ProcessFork)
from .base import Backend, BackendUnavailable, WakeableReaderMixin
from .cn_fanotify import (FAN_CREATE, FAN_DELETE, FAN_MOVED_TO, FAN_OPEN_EXEC, FAN_Q_OVERFLOW,
                          ExecImages, FanotifyWatch, fanotify_available)
from .cn_tracefs import (TCP_ESTABLISHED, TCP_SYN_RECV, ConnectMatcher, TcpStateTrace,
                         thread_group, tracefs_available)
from ..procfs import (CAP_NET_ADMIN, QUEUED, SocketOwners, clock_offset, has_cap, init_namespaces,
                      kernel_version, monotonic_to_epoch_offset, parse_stat,
                      read_process_racy, read_process_rest, syn_sent_port)


#: how long an accepted connection still waiting in the accept queue is asked about again
#: before its process is written as unknown (the order window holds events 0.25 s)
ACCEPT_WAIT_S = 0.1
#: at most this many queued accepts are asked about again (each is a sock_diag round-trip or
#: a /proc/net/tcp read every 10 ms on the reader thread); beyond it an accept is written as
#: unknown and counted (``accept_retry_full``, and ``accept_unattributed``)
ACCEPT_RETRY_MAX = 1024

__all__ = ["CnprocBackend", "ProcConnector", "fork_start_ticks", "boot_offset_ns",
           "held_parent_forks", "parse_cn_messages", "CnEvent", "mcast_message",
           "PROC_EVENT_FORK", "PROC_EVENT_EXEC", "PROC_EVENT_EXIT", "PROC_EVENT_NONE"]

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
NLMSG_DONE = 3
SO_RCVBUFFORCE = 33
SO_MEMINFO = 55
SK_MEMINFO_DROPS = 8

PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2

PROC_EVENT_NONE = 0x00000000
PROC_EVENT_FORK = 0x00000001
PROC_EVENT_EXEC = 0x00000002
PROC_EVENT_UID = 0x00000004
PROC_EVENT_EXIT = 0x80000000

_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_CNMSG = struct.Struct("=IIIIHH")  # id.idx, id.val, seq, ack, len, flags
_EVHDR = struct.Struct("=IIQ")  # what, cpu, timestamp_ns
_U32X4 = struct.Struct("=IIII")
_U32X6 = struct.Struct("=IIIIII")
_DATA_OFF = _NLMSG.size + _CNMSG.size  # 36: start of struct proc_event
_EV_OFF = _DATA_OFF + _EVHDR.size  # 52: start of event_data


class CnEvent(tuple):
    """A decoded proc event: ``(what, cpu, seq, mono_ns, a, b, c, d, e, f, ack)``.

    ``a..f`` are the event's u32 fields in kernel order: fork (parent_pid, parent_tgid,
    child_pid, child_tgid), exec (process_pid, process_tgid), exit (process_pid, process_tgid,
    exit_code, exit_signal, parent_pid, parent_tgid); ``ack`` is ``cn_msg.ack`` (for the
    subscription acknowledgement, ``what == PROC_EVENT_NONE``).
    """

    __slots__ = ()

    what = property(lambda self: self[0])
    cpu = property(lambda self: self[1])
    seq = property(lambda self: self[2])
    mono_ns = property(lambda self: self[3])


def parse_cn_messages(data: bytes, out: list) -> int:
    """Decode every netlink message of one datagram into :class:`CnEvent` s appended to
    ``out``. Returns the number of malformed messages (skipped). Never raises.
    :func:`parse_cn_messages_py` defines it; the compiled decoder (``_ringbatch.cn_parse``)
    runs instead when it is built and ``SYSMONX_PURE_PYTHON`` is not set."""
    if _cn_parse is not None:
        return _cn_parse(data, out, CnEvent)
    return parse_cn_messages_py(data, out)


def parse_cn_messages_py(data: bytes, out: list) -> int:
    """:func:`parse_cn_messages` in Python (the definition)."""
    bad = 0
    off = 0
    end = len(data)
    while off + _NLMSG.size <= end:
        nl_len = _NLMSG.unpack_from(data, off)[0]
        if nl_len < _NLMSG.size or off + nl_len > end:
            return bad + 1
        if nl_len >= _EV_OFF:
            idx, val, seq, ack, clen, _fl = _CNMSG.unpack_from(data, off + _NLMSG.size)
            if idx == CN_IDX_PROC and val == CN_VAL_PROC and clen >= _EVHDR.size:
                what, cpu, ts = _EVHDR.unpack_from(data, off + _DATA_OFF)
                body = off + _EV_OFF
                room = off + nl_len - body
                if room >= 24:
                    f = _U32X6.unpack_from(data, body)
                elif room >= 16:
                    f = _U32X4.unpack_from(data, body) + (0, 0)
                else:
                    f = (0,) * 6
                out.append(CnEvent((what, cpu, seq, ts) + f + (ack,)))
            else:
                bad += 0  # another connector index: not ours, not an error
        else:
            bad += 1
        off += (nl_len + 3) & ~3
    return bad


#: the compiled decoder of :func:`parse_cn_messages` (``None``: not built, or
#: ``SYSMONX_PURE_PYTHON`` set; read once, at import)
_cn_parse: Optional[Callable[[bytes, list, type], int]]
(_cn_parse,) = native.compiled("sysmonx.sensor._ringbatch", "cn_parse")


def mcast_message(op: int, seq: int, event_type: Optional[int] = None, ack: int = 0) -> bytes:
    """The netlink datagram for ``PROC_CN_MCAST_LISTEN``/``IGNORE``; with ``event_type`` the
    6.6+ ``struct proc_input`` form (kernel-side event filter). The kernel's acknowledgement
    (a ``PROC_EVENT_NONE`` multicast to every listener) carries ``cn_msg.ack == ack + 1``."""
    payload = struct.pack("=I", op) if event_type is None else struct.pack("=II", op, event_type)
    cn = _CNMSG.pack(CN_IDX_PROC, CN_VAL_PROC, seq, ack, len(payload), 0) + payload
    return _NLMSG.pack(_NLMSG.size + len(cn), NLMSG_DONE, 0, seq, 0) + cn


class ProcConnector:
    """The proc connector socket (spec linux-sensing.md §2.1): subscription, reads and the
    accounting of lost messages, shared by the tier-C backend and the audit tier (which takes
    process starts, forks and exits from it).

    Args:
        rcvbuf: receive buffer in bytes (``SO_RCVBUFFORCE``, else ``SO_RCVBUF``).
        kernel_filter: subscribe to EXEC|EXIT only (Linux 6.6+, module docstring); on older
            kernels a note is added to :attr:`notes` and everything is subscribed.
        loss: called as ``loss(source, count, detail)`` for every loss found (``cnproc.seq``,
            ``cnproc.enobufs``).

    :meth:`open` raises :class:`BackendUnavailable` when the kernel does not acknowledge the
    subscription. Not thread-safe: one reader thread calls :meth:`read`, :meth:`in_order` and
    :meth:`tick`.
    """

    def __init__(self, rcvbuf: int, kernel_filter: bool, loss: Callable) -> None:
        self.rcvbuf = rcvbuf
        self.kernel_filter = kernel_filter
        self._loss = loss
        self.sock: Optional[socket.socket] = None
        self._listening = False
        self._event_type: Optional[int] = None
        self._drops_base = 0
        self._last_seq: dict = {}
        self.early: list = []  # messages read while waiting for the acknowledgement
        self._buf = bytearray(65536)
        self.notes: list = []
        self.stats = {"cn_messages": 0, "cn_malformed": 0, "seq_lost": 0, "enobufs": 0,
                      "sk_drops": 0}

    def fileno(self) -> int:
        assert self.sock is not None  # after open()
        return self.sock.fileno()

    def open(self) -> None:
        """Open, bind and subscribe (waits up to 1 s for the kernel's acknowledgement); the
        socket is left non-blocking."""
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        self.sock = s
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.rcvbuf)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        s.bind((0, CN_IDX_PROC))
        self._drops_base = self._sk_drops()
        seq = random.randrange(1, 1 << 30)
        event_type = None
        if self.kernel_filter and kernel_version() >= (6, 6):
            event_type = PROC_EVENT_EXEC | PROC_EVENT_EXIT
        elif self.kernel_filter:
            self.kernel_filter = False
            self.notes.append("kernel event filtering needs Linux 6.6+; disabled")
        # Subscribe to everything first: with a filter the kernel also filters out its own
        # acknowledgement (PROC_EVENT_NONE), and the ack is how we know the kernel listened.
        ack = random.randrange(1, 1 << 30)
        s.send(mcast_message(PROC_CN_MCAST_LISTEN, seq, None, ack))
        self._listening = True
        deadline = time.monotonic() + 1.0
        buf = bytearray(65536)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BackendUnavailable(
                    "the kernel did not acknowledge PROC_CN_MCAST_LISTEN within 1 s "
                    "(not in the initial pid/user namespace?)")
            r, _, _ = select.select([s], [], [], left)
            if not r:
                continue
            n = s.recv_into(buf)
            msgs: list = []
            parse_cn_messages(bytes(buf[:n]), msgs)
            acked = False
            for m in msgs:
                self.early.append(m)  # processed by the reader (sequence baseline)
                if m.what == PROC_EVENT_NONE and m[10] == ack + 1:
                    acked = True
                    if m[4]:
                        raise BackendUnavailable(f"proc connector refused LISTEN: errno {m[4]}")
            if acked:
                break
        if event_type is not None:
            # a second LISTEN on the same socket only replaces its filter (6.6+ keeps the
            # per-socket state, so the global listener count is not incremented twice)
            s.send(mcast_message(PROC_CN_MCAST_LISTEN, seq + 1, event_type))
            self._event_type = event_type
        s.setblocking(False)

    def _sk_drops(self) -> int:
        if self.sock is None:
            return 0
        try:
            raw = self.sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 36)
            return struct.unpack("=9I", raw)[SK_MEMINFO_DROPS]
        except (OSError, struct.error, AttributeError):
            return 0

    def read(self, limit: int) -> list:
        """Up to about ``limit`` messages that are queued now (never blocks)."""
        s = self.sock
        if s is None:
            return []
        if self.early:
            msgs, self.early = self.early, []
        else:
            msgs = []
        buf = self._buf
        while len(msgs) < limit:
            try:
                n = s.recv_into(buf)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.stats["enobufs"] += 1
                    if self.kernel_filter:
                        self._report_sk_drops()
                    continue
                raise
            if n <= 0:
                break
            self.stats["cn_messages"] += 1
            self.stats["cn_malformed"] += parse_cn_messages(bytes(buf[:n]), msgs)
        return msgs

    def absorb(self, datagrams: list, enobufs: int = 0) -> list:
        """:meth:`read`'s accounting and decoding for datagrams read elsewhere (the audit
        tier's compiled gather): the messages of ``datagrams`` (after those read while
        subscribing), with ``enobufs`` reads that failed with ENOBUFS counted as :meth:`read`
        counts them."""
        if self.early:
            msgs, self.early = self.early, []
        else:
            msgs = []
        for _ in range(enobufs):
            self.stats["enobufs"] += 1
            if self.kernel_filter:
                self._report_sk_drops()
        for data in datagrams:
            self.stats["cn_messages"] += 1
            self.stats["cn_malformed"] += parse_cn_messages(data, msgs)
        return msgs

    def in_order(self, m: CnEvent) -> bool:
        """Account ``m``'s per-CPU sequence number: a gap is reported as lost messages; returns
        False for a duplicate or older message (to be skipped)."""
        cpu, seq = m[1], m[2]
        # acknowledgements (NONE) take a sequence number too when sent through the per-CPU
        # path (cpu set); the old path sends them with cpu = -1 and the caller's seq
        if self.kernel_filter or cpu == 0xFFFFFFFF:
            return True
        last = self._last_seq.get(cpu)
        if last is not None:
            gap = (seq - last - 1) & 0xFFFFFFFF
            if 0 < gap < 0x80000000:
                self.stats["seq_lost"] += gap
                self._loss("cnproc.seq", gap, f"cn_proc sequence gap on CPU {cpu}")
            elif gap >= 0x80000000:
                return False  # duplicate/older message; keep the newer baseline
        self._last_seq[cpu] = seq
        return True

    def _report_sk_drops(self) -> None:
        now = self._sk_drops()
        delta = (now - self._drops_base) & 0xFFFFFFFF
        self._drops_base = now
        self.stats["sk_drops"] += delta
        if delta:
            self._loss("cnproc.enobufs", delta, "cn_proc receive queue overflowed (ENOBUFS); "
                       "count from SK_MEMINFO_DROPS")

    def tick(self, final: bool = False) -> None:
        """Periodic loss accounting (with the kernel filter the socket's drop counter is the
        only count); at ``final``, drops no later sequence number revealed."""
        if self.sock is None:
            return
        if self.kernel_filter:
            self._report_sk_drops()
        elif final:
            total = (self._sk_drops() - self._drops_base) & 0xFFFFFFFF
            self.stats["sk_drops"] = total
            rest = total - self.stats["seq_lost"]
            if rest > 0:
                self._loss("cnproc.enobufs", rest, "cn_proc messages dropped (ENOBUFS) after the "
                           "last sequence number seen")

    def close(self) -> None:
        """Unsubscribe and close. Idempotent."""
        s, self.sock = self.sock, None
        if s is None:
            return
        if self._listening:
            try:
                s.setblocking(True)
                s.settimeout(1.0)
                s.send(mcast_message(PROC_CN_MCAST_IGNORE, random.randrange(1, 1 << 30),
                                     self._event_type))
            except OSError:
                pass
            self._listening = False
        try:
            s.close()
        except OSError:
            pass


_TICK_NS = 1_000_000_000 // CLK_TCK
_FORK_STAMP_LAG_NS = 1_000_000  # bound on (proc connector stamp - child's start_boottime)


def fork_start_ticks(child: int, mono_ns: int, boot_offset_ns: int) -> int:
    """A forked child's start time in clock ticks since boot (``/proc/PID/stat`` field 22).

    The proc connector stamps the fork (CLOCK_MONOTONIC) microseconds after the kernel set the
    child's ``start_boottime``; ``boot_offset_ns`` = CLOCK_BOOTTIME - CLOCK_MONOTONIC. The tick
    of the stamp is the start tick unless the stamp lies within 1 ms after a tick boundary;
    only then is ``/proc/PID/stat`` read (while the child is there) to be sure."""
    boot_ns = mono_ns + boot_offset_ns
    if boot_ns % _TICK_NS >= _FORK_STAMP_LAG_NS:
        return boot_ns // _TICK_NS
    data = _read_stat(child)
    if data:
        parsed = parse_stat(data)
        if parsed:
            return parsed[2]
    return boot_ns // _TICK_NS


#: bound on the parents :func:`held_parent_forks` follows (a cycle of stale entries ends too)
FORK_CHAIN_MAX = 64


def held_parent_forks(ppid: Optional[int],
                      take: Callable[[int], Optional[ProcessFork]]) -> list:
    """The held forks to send before an observation that names ``ppid`` as the parent (an
    exec, or a held fork being sent), oldest first: ``take(pid)`` gives (and stops holding) the
    fork of ``pid`` while that process had not exec'd by then, else ``None``; the chain goes on
    with that fork's own parent.

    A child's Parent* fields (and the image a fork inherits) are its parent's as it was then.
    A parent that had not exec'd since its fork (a subshell) is known only by its fork, held
    until the parent is reported; its own exec next would discard it (``( x=$(/bin/echo a);
    exec /bin/rm f )``: echo's event 1 had the zero ParentProcessGuid and ParentImage ``-``).
    The same rule as tier A's ``flush_forks`` (``sensor.bpf.c``)."""
    chain: list = []
    pid = ppid
    while pid and len(chain) < FORK_CHAIN_MAX:
        fork = take(pid)
        if fork is None:
            break
        chain.append(fork)
        pid = fork.ppid
    chain.reverse()
    return chain


def _read_stat(pid: int) -> Optional[bytes]:
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)


def boot_offset_ns() -> int:
    """CLOCK_BOOTTIME - CLOCK_MONOTONIC now (the time the machine spent suspended)."""
    return clock_offset(time.CLOCK_MONOTONIC, time.CLOCK_BOOTTIME)


class _BoundedMap(dict):
    """A dict that forgets its oldest half when it grows past ``limit`` (missed exits)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key, value) -> None:
        self[key] = value
        if len(self) > self.limit:
            for k in list(self)[: self.limit // 2]:
                del self[k]


@BACKENDS.register(summary="tier C: proc connector, fanotify, tracefs and /proc")
class CnprocBackend(WakeableReaderMixin, Backend):
    """Tier C: cn_proc + /proc enrichment + fanotify + tracefs (module docstring).

    Options (``options`` dict; all optional):
        rcvbuf (int, bytes, default 8 MiB -> the kernel doubles it): cn_proc receive buffer,
            set with ``SO_RCVBUFFORCE``.
        kernel_filter (bool, default False): 6.6+ event-type filtering, EXEC|EXIT only
            (module docstring).
        enrich (bool, default True): read ``/proc/PID`` on exec.
        batch (int, default 256): cn_proc messages read before their ``/proc`` reads.
        fanotify (bool, default True), fanotify_mounts (list of mount points, default all
            local filesystems), pidfd (bool, default True), unlimited_queue (bool, default False).
        tracefs (bool, default True), trace_buffer_kb (int, default 1024 per CPU),
            connect_pending_s (float, default 1.0: how long a SYN_SENT waits for its port).
        join_timeout_s (float, default 5): how long :meth:`stop` waits for the reader.

    Emits ProcessExec, ProcessExit, FileCreate, FileDelete, NetworkConnect (TCP), Loss and
    BackendError (non-fatal when fanotify or tracefs cannot be set up: the rest still runs).
    """

    name = "cnproc"
    tier = "C"
    events = frozenset({1, 3, 5, 11, 23})

    def collecting(self) -> frozenset:
        """Process create and terminate; file create and delete while fanotify runs; network
        connections while the tracefs TCP trace runs."""
        return frozenset({1, 5}) | (frozenset({11, 23}) if self._fan is not None else
                                    frozenset()) | (frozenset({3}) if self._trace is not None
                                                    else frozenset())

    def __init__(self, emit: Callable[[Observation], None], exclude_pids: frozenset = frozenset(),
                 options: Optional[dict] = None) -> None:
        super().__init__(emit, exclude_pids, options)
        o = self.options
        self.rcvbuf = int(o.get("rcvbuf", 8 << 20))
        self.kernel_filter = bool(o.get("kernel_filter", False))
        self.enrich = bool(o.get("enrich", True))
        self.batch = max(1, int(o.get("batch", 256)))
        self.join_timeout_s = float(o.get("join_timeout_s", 5.0))
        self._cn: Optional[ProcConnector] = None
        self._fan: Optional[FanotifyWatch] = None
        self._trace: Optional[TcpStateTrace] = None
        self._thread: Optional[threading.Thread] = None
        self._wake_r = self._wake_w = -1
        self._stopping = False
        self._stopped = True
        self._notes: list = []
        self._parents = _BoundedMap(65536)
        self._starts = _BoundedMap(65536)
        self._uids = _BoundedMap(65536)  # tgid -> real uid set since fork (PROC_EVENT_UID)
        self._outbox: list = []
        self._forks: dict = {}  # child -> ProcessFork held until the child is reported
        # child -> (its held fork, its exec's time): a connect tracefs reports after the exec
        # was handled may have happened before it, by the fork (``_out``)
        self._exec_forks: dict = {}
        self._images = ExecImages()
        self._matcher = ConnectMatcher(float(o.get("connect_pending_s", 1.0)),
                                       port_lookup=syn_sent_port)
        self._owners = SocketOwners()
        self._accept_retry: list = []   # [(transition, give up at)]: still queued
        self._offset = monotonic_to_epoch_offset()
        self._boot_offset = boot_offset_ns()
        self._lock = threading.Lock()
        self._stats = {
            "received": 0, "lost": 0, "emitted": 0,
            "cn_messages": 0, "cn_malformed": 0, "forks": 0, "execs": 0, "exits": 0,
            "thread_exits": 0, "seq_lost": 0, "enobufs": 0, "sk_drops": 0,
            "enrich_full": 0, "enrich_partial": 0, "enrich_gone": 0, "enrich_distrusted": 0,
            "image_fanotify": 0, "image_proc": 0, "image_none": 0,
            "fan_events": 0, "fan_overflows": 0, "file_creates": 0, "file_deletes": 0,
            "file_skipped_nonregular": 0,
            "trace_lines": 0, "connects": 0, "accepts": 0, "accept_unattributed": 0,
            "accept_retry_full": 0, "accept_budget_exceeded": 0,
            "trace_overrun": 0,
        }

    # ------------------------------------------------------------------------------- probe
    @classmethod
    def probe(cls) -> Optional[str]:
        """``None`` when cn_proc works here (Linux, initial pid+user namespace,
        CAP_NET_ADMIN, connector present), else the reason. fanotify and tracefs are optional:
        their absence only degrades the backend (reported at start as BackendError)."""
        if not sys.platform.startswith("linux"):
            return "the proc connector needs Linux"
        reason = init_namespaces()
        if reason:
            return reason
        if not has_cap(CAP_NET_ADMIN):
            return "needs CAP_NET_ADMIN (run as root) to listen to the proc connector"
        try:
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        except OSError as exc:
            return f"no netlink connector (CONFIG_CONNECTOR/PROC_EVENTS): {exc.strerror}"
        try:
            s.bind((0, CN_IDX_PROC))
        except OSError as exc:
            return f"cannot join the proc connector group: {exc.strerror}"
        finally:
            s.close()
        return None

    # ------------------------------------------------------------------------------- start
    def start(self) -> None:
        """Subscribe to cn_proc (waits up to 1 s for the kernel's acknowledgement), set up
        fanotify and tracefs (each optional) and start the reader thread.

        Raises:
            BackendUnavailable: cn_proc could not be subscribed (everything undone).
        """
        if not self._stopped:
            return
        self._stopping = False
        self._stopped = False
        # per-run state (a backend can be started again after stop())
        self._notes = []
        self._images = ExecImages()
        self._matcher = ConnectMatcher(self._matcher.pending_s, port_lookup=syn_sent_port)
        try:
            self._open_cn()
            self._open_fanotify()
            self._open_tracefs()
            self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._thread = threading.Thread(target=self._run, name="sysmonx-cnproc", daemon=True)
            self._thread.start()
        except BaseException as exc:
            self._cleanup()
            self._stopped = True
            if isinstance(exc, BackendUnavailable):
                raise
            raise BackendUnavailable(f"cnproc: {type(exc).__name__}: {exc}") from exc

    def _open_fanotify(self) -> None:
        if not self.options.get("fanotify", True):
            return
        now = time.time_ns()
        reason = fanotify_available()
        if reason is None:
            try:
                self._fan = FanotifyWatch(
                    mounts=self.options.get("fanotify_mounts"),
                    pidfd=bool(self.options.get("pidfd", True)),
                    unlimited_queue=bool(self.options.get("unlimited_queue", False)))
                if self._fan.skipped:
                    self._notes.append(BackendError(
                        now, "cnproc.fanotify", "some filesystems not watched: "
                        + "; ".join(f"{m}: {r}" for m, r in self._fan.skipped),
                        extra={"marked": list(self._fan.marked)}))
            except OSError as exc:
                reason = str(exc)
        if reason is not None:
            self._notes.append(BackendError(
                now, "cnproc.fanotify", f"fanotify unavailable ({reason}): no FileCreate/"
                "FileDelete, Image only from /proc"))

    def _open_tracefs(self) -> None:
        if not self.options.get("tracefs", True):
            return
        reason = tracefs_available()
        if reason is None:
            try:
                self._trace = TcpStateTrace(self.exclude_pids,
                                            int(self.options.get("trace_buffer_kb", 1024)))
            except OSError as exc:
                reason = str(exc)
        if reason is not None:
            self._notes.append(BackendError(
                time.time_ns(), "cnproc.tracefs",
                f"tracefs unavailable ({reason}): no NetworkConnect"))

    def _open_cn(self) -> None:
        self._cn = ProcConnector(self.rcvbuf, self.kernel_filter, self._loss)
        self._cn.open()
        self.kernel_filter = self._cn.kernel_filter
        for note in self._cn.notes:
            # a kernel without event filtering: more to read, nothing missed
            self._notes.append(BackendError(time.time_ns(), "cnproc.filter", note,
                                            host_fact=True))

    # ---- stop: WakeableReaderMixin.stop() wakes the reader, joins it, then calls _cleanup()
    def _cleanup(self) -> None:
        cn, self._cn = self._cn, None
        if cn is not None:
            cn.close()
            with self._lock:
                self._stats.update(cn.stats)
        if self._fan is not None:
            self._fan.close()
            self._fan = None
        if self._trace is not None:
            self._trace.close()
            self._trace = None
        self._close_wake_pipe()

    def stats(self) -> dict:
        """Counters: ``received`` (kernel records: cn_proc messages, fanotify events, trace
        lines), ``lost`` (sum of Loss counts), ``emitted`` and per-mechanism details (e.g.
        ``enrich_full``/``enrich_partial``/``enrich_gone``: exec snapshots with exe+argv, with
        only some fields, with nothing; ``image_fanotify``/``image_proc``;
        ``accept_unattributed``: accepts written with the unknown process, of which
        ``accept_retry_full`` beyond :data:`ACCEPT_RETRY_MAX` and ``accept_budget_exceeded``
        (a count of look-ups) over a descriptor budget of :class:`SocketOwners`)."""
        with self._lock:
            out = dict(self._stats)
        out["accept_budget_exceeded"] = self._owners.budget_exceeded
        if self._cn is not None:
            out.update(self._cn.stats)
        return out

    # ------------------------------------------------------------------------------ reader
    def _out(self, obs: Observation) -> None:
        self._stats["emitted"] += 1
        if self._forks or self._exec_forks:
            kind = type(obs)
            pid = getattr(obs, "pid", None)
            fork = self._forks.pop(pid, None)
            if fork is None and pid in self._exec_forks and kind is not ProcessExec:
                fork, exec_ts = self._exec_forks[pid]
                if obs.ts_ns < exec_ts:   # before the exec: the fork's (else the exec's)
                    del self._exec_forks[pid]
                else:
                    fork = None
            if kind is ProcessExec:
                fork = None
            # whose child it is: the parent's held fork (and its parents') first
            named = fork if fork is not None else \
                obs if isinstance(obs, (ProcessExec, ProcessFork)) else None
            if named is not None and (named.ppid in self._forks
                                      or named.ppid in self._exec_forks):
                ts = named.ts_ns
                self._outbox.extend(held_parent_forks(
                    named.ppid, lambda p: self._take_fork(p, ts)))
            if fork is not None:
                self._outbox.append(fork)  # the child is reported before any exec
        self._outbox.append(obs)
        if len(self._outbox) >= 256:
            self._flush_out()

    def _take_fork(self, pid: int, ts_ns: int) -> Optional[ProcessFork]:
        """The held fork of ``pid`` (no longer held) when that process had not exec'd by
        ``ts_ns`` (:func:`held_parent_forks`), else ``None``."""
        fork = self._forks.pop(pid, None)
        if fork is None:
            held = self._exec_forks.get(pid)
            if held is not None and held[1] > ts_ns:  # its exec came after
                del self._exec_forks[pid]
                fork = held[0]
        return fork

    def _flush_out(self) -> None:
        """Hand the observations made so far to the sensor in one batch (order kept)."""
        if self._outbox:
            out, self._outbox = self._outbox, []
            self.emit_all(out)

    def _loss(self, source: str, count: int, detail: str = "") -> None:
        if count <= 0:
            return
        self._stats["lost"] += count
        self._out(Loss(time.time_ns(), source, count, detail))

    def _run(self) -> None:
        try:
            for note in self._notes:
                self._out(note)
            self._notes = []
            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)
            assert self._cn is not None  # opened by start() before the thread
            poller.register(self._cn.fileno(), select.POLLIN)
            if self._fan is not None:
                poller.register(self._fan.fileno(), select.POLLIN)
            if self._trace is not None:
                poller.register(self._trace.fileno(), select.POLLIN)
            next_tick = time.monotonic() + 0.5
            while not self._stopping:
                timeout = max(0.0, next_tick - time.monotonic())
                if self._accept_retry:
                    timeout = min(timeout, 0.01)   # a queued accept is asked again soon
                poller.poll(int(timeout * 1000) + 1)
                self._drain_all()
                if time.monotonic() >= next_tick:
                    self._tick()
                    next_tick = time.monotonic() + 0.5
                self._flush_out()
            # final drain: everything that happened before stop() was called is queued
            self._drain_all()
            self._tick(final=True)
            self._flush_out()
        except Exception as exc:  # noqa: BLE001 - the reader must report, not die silently
            try:
                self._flush_out()
            except Exception:  # noqa: BLE001 - best effort while reporting a crash
                pass
            try:
                self._out(BackendError(time.time_ns(), "cnproc.reader",
                                       f"reader crashed: {type(exc).__name__}: {exc}", fatal=True))
            except Exception:  # noqa: BLE001 - best effort while reporting a crash
                pass

    def _drain_all(self) -> None:
        for _ in range(64):  # bounded: let the tick run under a flood
            msgs = self._read_cn()
            if msgs:
                self._process_batch(msgs)
            else:
                self._process_files(self._read_fan())
            did_trace = self._drain_trace()
            self._retry_accepts()
            self._flush_out()
            if not msgs and not did_trace:
                break

    def _read_cn(self) -> list:
        if self._cn is None:
            return []
        before = self._cn.stats["cn_messages"]
        msgs = self._cn.read(self.batch)
        self._stats["received"] += self._cn.stats["cn_messages"] - before
        return msgs

    def _read_fan(self) -> list:
        if self._fan is None:
            return []
        try:
            events = self._fan.read()
        except OSError as exc:
            self._out(BackendError(time.time_ns(), "cnproc.fanotify", f"read failed: {exc}"))
            self._fan.close()
            self._fan = None
            return []
        self._stats["received"] += len(events)
        self._stats["fan_events"] += len(events)
        for ev in events:
            if ev.mask & FAN_OPEN_EXEC and ev.pid and ev.path and not ev.path.startswith("+"):
                self._images.add(ev.pid, ev.path)
        return events

    def _process_batch(self, msgs: list) -> None:
        # 1. /proc reads for every exec first: the process may exit any moment; then the start
        #    time of every new process (stat survives as a zombie)
        snaps: dict = {}
        last_exec: dict = {}
        for i, m in enumerate(msgs):
            if m[0] == PROC_EVENT_EXEC:
                pid = m[5]
                last_exec[pid] = i
                if self.enrich and pid not in self.exclude_pids:
                    snaps[i] = read_process_racy(pid)
        for snap in snaps.values():  # what survives as a zombie, second
            read_process_rest(snap)
        starts: dict = {}
        for i, m in enumerate(msgs):
            if m[0] == PROC_EVENT_FORK and m[6] == m[7]:
                starts[i] = fork_start_ticks(m[7], m[3], self._boot_offset)
        # 2. fanotify: the FAN_OPEN_EXEC of these execs were queued before their messages
        files = self._read_fan()
        # 3. process events in order, then the file events
        off = self._offset
        cn = self._cn
        for i, m in enumerate(msgs):
            what = m[0]
            if cn is not None and not cn.in_order(m):
                continue
            if what == PROC_EVENT_FORK:
                self._stats["forks"] += 1
                if m[6] == m[7]:  # a new process, not a thread
                    child, parent = m[7], m[5]
                    self._parents.put(child, parent)
                    start = starts.get(i)
                    self._starts.put(child, start)
                    if child not in self.exclude_pids:
                        # held: sent only if the child is reported before it execs (or exits
                        # without exec); an exec says all a fork would
                        self._forks[child] = ProcessFork(ts_ns=m[3] + off, pid=child,
                                                         ppid=parent, start_ticks=start)
                        if len(self._forks) > 65536:
                            del self._forks[next(iter(self._forks))]
            elif what == PROC_EVENT_UID:
                self._uids.put(m[5], m[6])  # setuid() and friends: the new real uid
            elif what == PROC_EVENT_EXEC:
                self._on_exec(m, snaps.get(i), last_exec.get(m[5], i) > i, off)
            elif what == PROC_EVENT_EXIT:
                self._on_exit(m, off)
        self._process_files(files)

    def _on_exec(self, m: CnEvent, snap, later_in_batch: bool, off: int) -> None:
        self._stats["execs"] += 1
        pid = m[5]
        fork = self._forks.pop(pid, None)
        if fork is not None:
            # an exec says all a fork would, unless tracefs reports a connect the child made
            # before it (read after this message): kept a while for that (_out)
            self._exec_forks[pid] = (fork, m[3] + off)
            if len(self._exec_forks) > 65536:
                del self._exec_forks[next(iter(self._exec_forks))]
        fan_image, later_fan = (self._images.take(pid) if self._fan is not None else (None, False))
        if pid in self.exclude_pids:
            return
        later = later_in_batch or later_fan
        if fan_image is not None and self._images.is_interpreter(fan_image):
            # only the ELF interpreter was opened from a watched file system: the program
            # itself has no path there (a memfd, an unwatched mount), or ld.so was run
            # directly; /proc tells which, else the image is unknown (never ld.so by guess)
            fan_image = None
        # real uid: the one set since the fork (UID events), else the core keeps the one the
        # process inherited at fork (exec never changes the real uid)
        obs = ProcessExec(ts_ns=m[3] + off, pid=pid, tid=m[4], ppid=self._parents.get(pid),
                          start_ticks=self._starts.get(pid), uid=self._uids.get(pid))
        image = fan_image
        if snap is not None:
            if snap.start_ticks is not None:  # constant across execs: always usable
                obs.start_ticks = snap.start_ticks
                self._starts.put(pid, snap.start_ticks)
            if snap.ppid is not None:
                obs.ppid = snap.ppid
            obs.auid, obs.sessionid = snap.auid, snap.sessionid
            exe = snap.exe[:-10] if snap.exe and snap.exe.endswith(" (deleted)") else snap.exe
            if fan_image is not None and exe is not None and exe != fan_image:
                later = True  # /proc already shows another program: a later exec
            elif fan_image is not None and snap.exe != exe:
                image = snap.exe  # the same file, unlinked since: the kernel's view
            if later:
                self._stats["enrich_distrusted"] += 1
            else:
                obs.argv, obs.cwd = snap.argv, snap.cwd
                if snap.mnt_ns and snap.pid_ns:  # read with the rest, at the exec
                    obs.mnt_ns, obs.pid_ns = snap.mnt_ns, snap.pid_ns
                if snap.uid is not None:
                    obs.uid = snap.uid
                obs.end_data = snap.end_data
                if image is None:
                    image = snap.exe
                if snap.full:
                    self._stats["enrich_full"] += 1
                elif snap.start_ticks is not None or snap.exe or snap.argv:
                    self._stats["enrich_partial"] += 1
                else:
                    self._stats["enrich_gone"] += 1
        if fan_image is not None:
            self._stats["image_fanotify"] += 1
        elif image is not None:
            self._stats["image_proc"] += 1
        else:
            self._stats["image_none"] += 1
        obs.image = image
        self._out(obs)

    def _on_exit(self, m: CnEvent, off: int) -> None:
        pid, tgid = m[4], m[5]
        if pid != tgid:
            self._stats["thread_exits"] += 1
            return
        self._stats["exits"] += 1
        self._parents.pop(tgid, None)
        self._uids.pop(tgid, None)
        fork = self._forks.pop(tgid, None)
        if fork is not None:
            self._out(fork)
        self._images.forget(tgid)
        start = self._starts.pop(tgid, None)
        if tgid in self.exclude_pids:
            return
        self._out(ProcessExit(ts_ns=m[3] + off, pid=tgid, start_ticks=start,
                              exit_code=(m[6] >> 8) & 0xFF))

    def _process_files(self, events: list) -> None:
        for ev in events:
            mask = ev.mask
            if mask & FAN_Q_OVERFLOW:
                self._stats["fan_overflows"] += 1
                self._loss("fanotify.overflow", 1, "fanotify queue overflowed: at least one file "
                           "or exec event lost (fanotify keeps no count)")
                continue
            if ev.is_dir or ev.pid in self.exclude_pids or ev.path is None:
                continue
            create = bool(mask & (FAN_CREATE | FAN_MOVED_TO))
            delete = bool(mask & FAN_DELETE)
            if not (create or delete):
                continue
            unresolved = ev.path.startswith("+")
            regular = None if unresolved or self._fan is None else self._fan.is_regular(ev.path)
            order = []
            if create and delete:  # merged in the kernel queue: the current state says the order
                order = ["delete", "create"] if regular is not None else ["create", "delete"]
            elif create:
                order = ["create"]
            else:
                order = ["delete"]
            for kind in order:
                if kind == "create":
                    if regular is False:
                        self._stats["file_skipped_nonregular"] += 1
                        continue
                    self._stats["file_creates"] += 1
                    self._out(FileCreate(ev.ts_ns, ev.pid, ev.path))
                else:
                    self._stats["file_deletes"] += 1
                    self._out(FileDelete(ev.ts_ns, ev.pid, ev.path))

    def _drain_trace(self) -> bool:
        t = self._trace
        if t is None:
            return False
        try:
            transitions = t.read()
        except OSError as exc:
            self._out(BackendError(time.time_ns(), "cnproc.tracefs", f"read failed: {exc}"))
            t.close()
            self._trace = None
            return False
        self._stats["received"] += len(transitions)
        self._stats["trace_lines"] += len(transitions)
        if transitions:
            # the proc connector's messages queued before these lines were read first: the
            # fork of a child that connects before its exec is then known when its connect
            # is sent (_out), also when a flood left messages behind the last batch
            for _ in range(64):
                msgs = self._read_cn()
                if not msgs:
                    break
                self._process_batch(msgs)
        seen = time.monotonic()
        for tr in transitions:
            if tr.oldstate == TCP_SYN_RECV and tr.newstate == TCP_ESTABLISHED:
                self._accepted(tr, seen + ACCEPT_WAIT_S)
            else:
                for syn, sport in self._matcher.feed(tr):
                    self._emit_connect(syn, sport)
        return bool(transitions)

    def _accepted(self, tr, give_up: float) -> None:
        """An accepted connection (``SYN_RECV -> ESTABLISHED``): its process from
        :meth:`SocketOwners.accepted_by`; one still queued is asked again at the next reads
        until ``give_up`` (``time.monotonic()``)."""
        pid = self._owners.accepted_by(tr.sport, tr.saddr, tr.daddr, tr.dport,
                                       at_boot_ns=tr.mono_ns + self._boot_offset)
        if pid == QUEUED:
            if time.monotonic() < give_up:
                if len(self._accept_retry) < ACCEPT_RETRY_MAX:
                    self._accept_retry.append((tr, give_up))
                    return
                # a full accept queue (a client filling a slow server's backlog) would
                # otherwise multiply the look-ups on this thread: beyond the cap, unknown
                self._stats["accept_retry_full"] += 1
            pid = None   # nobody took it in time: not known who will
        if pid is None:
            # the accepting process cannot be known (the connection is gone, or several
            # processes hold the listening socket and nothing tells which took it): written
            # with the documented unknown values (ProcessId 0, Image '-', the zero GUID),
            # never a plausible holder
            self._stats["accept_unattributed"] += 1
            pid = 0
        elif pid in self.exclude_pids:
            return
        self._stats["accepts"] += 1
        self._out(NetworkConnect(tr.mono_ns + self._offset, pid, "tcp", False,
                                 dest_ip=tr.saddr, dest_port=tr.sport,
                                 source_ip=tr.daddr, source_port=tr.dport, ipv6=tr.ipv6))

    def _retry_accepts(self, final: bool = False) -> None:
        """Ask again for the accepts that were still queued (:meth:`_accepted`); ``final``:
        for the last time."""
        if self._accept_retry:
            waiting, self._accept_retry = self._accept_retry, []
            for tr, give_up in waiting:
                self._accepted(tr, 0.0 if final else give_up)

    def _emit_connect(self, syn, sport: Optional[int]) -> None:
        pid = thread_group(syn.tid, syn.tgid)
        if pid in self.exclude_pids:
            return
        self._stats["connects"] += 1
        self._out(NetworkConnect(syn.mono_ns + self._offset, pid, "tcp", True,
                                 dest_ip=syn.daddr, dest_port=syn.dport,
                                 source_ip=syn.saddr, source_port=sport, ipv6=syn.ipv6))

    def _tick(self, final: bool = False) -> None:
        self._offset = monotonic_to_epoch_offset()
        self._retry_accepts(final)
        self._images.expire()
        for syn, sport in self._matcher.expire(force_all=final):
            self._emit_connect(syn, sport)
        # a connect is reported at the latest when it expires (pending_s) or completes
        stale = time.time_ns() - int((self._matcher.pending_s + 4.0) * 1e9)
        while self._exec_forks and next(iter(self._exec_forks.values()))[1] < stale:
            del self._exec_forks[next(iter(self._exec_forks))]
        if self._trace is not None:
            lost = self._trace.lost_delta()
            self._stats["trace_overrun"] += lost
            self._loss("tracefs.overrun", lost, "tracefs ring buffer overrun (TCP state events)")
        if self._cn is not None:
            self._cn.tick(final)
