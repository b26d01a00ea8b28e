"""TCP connects and accepts from tracefs ``sock:inet_sock_set_state`` (spec linux-sensing.md
§2.4(c), §2.5), in a PRIVATE tracefs instance.

Set-up (:class:`TcpStateTrace`):

* use the system tracefs mount (``/sys/kernel/tracing``); if it is not mounted, mount tracefs
  on a private directory under ``/run`` (never on ``/sys/kernel/tracing``, so nobody else's view
  changes) and unmount it in :meth:`TcpStateTrace.close`; instances are kernel objects shared
  by every tracefs mount, so this is the same ``instances/sysmonx_<pid>``;
* ``mkdir instances/sysmonx_<pid>`` (a numbered suffix if taken); stale ``sysmonx_<pid>``
  instances of dead processes are removed first (a killed sensor cannot clean up);
* ``trace_clock=mono``, ``options/record-tgid=1``, ``buffer_size_kb``, an event filter keeping
  only TCP transitions that matter (below) and the excluded pids, then ``enable``;
* read ``trace_pipe`` NON-blocking (``O_NONBLOCK`` + ``poll``): a blocking read cannot be
  interrupted and hung the spec's test.

Transitions used (TCP states: 1 ESTABLISHED, 2 SYN_SENT, 3 SYN_RECV, 7 CLOSE):

* ``CLOSE -> SYN_SENT``: ``connect()`` in the caller's context: pid/tgid, destination, source
  address; the source port is still 0 (it is chosen right after). The connect is held until the
  same socket leaves SYN_SENT (``-> ESTABLISHED`` or ``-> CLOSE``, which carries the port) or
  ``pending_s`` passes; matched on (family, daddr, dport, saddr) in FIFO order (the text format
  does not print the socket address).
* ``SYN_RECV -> ESTABLISHED`` on the server's child socket: an accepted connection. It runs in
  softirq context, so the header pid is whoever was on the CPU (for loopback, the client); the
  accepting pid is therefore looked up as the owner of the LISTEN socket on the local port
  (``/proc/net/tcp`` + ``/proc/*/fd``), which is long-lived and reliable.

Losses: ``per_cpu/cpuN/stats`` ``overrun`` + ``dropped events`` deltas.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import select
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from ..tracefs import cpu_stats_files, mount_problem, read_lost


__all__ = ["TcpStateTrace", "TcpTransition", "ConnectMatcher", "parse_line", "find_tracefs",
           "thread_group",
           "tracefs_available", "remove_instance", "EVENT"]

EVENT = "sock/inet_sock_set_state"
INSTANCE_PREFIX = "sysmonx_"

TCP_ESTABLISHED, TCP_SYN_SENT, TCP_SYN_RECV, TCP_CLOSE = 1, 2, 3, 7
_STATE_NUM = {"TCP_ESTABLISHED": 1, "TCP_SYN_SENT": 2, "TCP_SYN_RECV": 3, "TCP_FIN_WAIT1": 4,
              "TCP_FIN_WAIT2": 5, "TCP_TIME_WAIT": 6, "TCP_CLOSE": 7, "TCP_CLOSE_WAIT": 8,
              "TCP_LAST_ACK": 9, "TCP_LISTEN": 10, "TCP_CLOSING": 11, "TCP_NEW_SYN_RECV": 12}

_MNT_DETACH = 2

# "comm-TID (TGID) [CPU] FLAGS SECS.USECS: inet_sock_set_state: body"
_LINE_RE = re.compile(
    r"^\s*(?P<comm>.*)-(?P<tid>\d+)\s+\(\s*(?P<tgid>[\d-]+)\)\s+\[(?P<cpu>\d+)\]\s+\S*\s*"
    r"(?P<secs>\d+)\.(?P<usecs>\d+):\s+inet_sock_set_state:\s+(?P<body>.*)$")


@dataclass(slots=True)
class TcpTransition:
    """One parsed ``inet_sock_set_state`` line.

    ``tid``/``tgid`` from the header (``tgid`` ``None`` when the tracer printed ``-------``),
    ``mono_ns`` the CLOCK_MONOTONIC stamp, ``ipv6`` from ``family``; ``saddr``/``daddr`` text
    (IPv6 from ``saddrv6``/``daddrv6``); states as numbers.
    """

    tid: int
    tgid: Optional[int]
    mono_ns: int
    ipv6: bool
    sport: int
    dport: int
    saddr: str
    daddr: str
    oldstate: int
    newstate: int
    protocol: str


def parse_line(line: str) -> Optional[TcpTransition]:
    """Parse one ``trace_pipe`` line of ``inet_sock_set_state`` (default print format, with
    ``record-tgid``); ``None`` for anything else or a malformed line. Never raises."""
    m = _LINE_RE.match(line)
    if not m:
        return None
    fields = {}
    for item in m.group("body").split():
        key, sep, value = item.partition("=")
        if sep:
            fields[key] = value
    try:
        ipv6 = fields.get("family") == "AF_INET6"
        tgid_text = m.group("tgid")
        return TcpTransition(
            tid=int(m.group("tid")),
            tgid=int(tgid_text) if tgid_text.isdigit() and int(tgid_text) > 0 else None,
            mono_ns=int(m.group("secs")) * 1_000_000_000 + int(m.group("usecs")[:9].ljust(9, "0")),
            ipv6=ipv6,
            sport=int(fields["sport"]),
            dport=int(fields["dport"]),
            saddr=fields["saddrv6"] if ipv6 else fields["saddr"],
            daddr=fields["daddrv6"] if ipv6 else fields["daddr"],
            oldstate=_STATE_NUM.get(fields["oldstate"], 0),
            newstate=_STATE_NUM.get(fields["newstate"], 0),
            protocol=fields.get("protocol", ""),
        )
    except (KeyError, ValueError):
        return None


def thread_group(tid: int, printed: Optional[int]) -> int:
    """The process (thread group) of the task ``tid`` of a trace line: ``Tgid`` of
    ``/proc/TID/status`` while the task lives, else ``printed`` (the tracer's ``record-tgid``
    column), else ``tid``.

    The printed column is not trusted while the task lives: the tracer saves a task's tgid
    lazily, at a context switch after an event on that CPU, and prints what its pid-indexed
    table holds when the line is READ, so it can hold an earlier task of the same pid (after the
    pid numbers wrapped, ``pid_max`` 32768 here, another process's thread). Once the task has
    exited its final switch has saved the right value, so the printed column is the answer
    then."""
    try:
        with open(f"/proc/{tid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return printed if printed is not None else tid


def find_tracefs() -> Optional[str]:
    """Path of the system tracefs mount (``/sys/kernel/tracing``, else
    ``/sys/kernel/debug/tracing``), or ``None``. Other mounts elsewhere are not used: their
    owner may unmount them while the instance is in use, and then it could not be removed."""
    for cand in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        if os.path.isdir(os.path.join(cand, "instances")) and \
                os.path.exists(os.path.join(cand, "events", EVENT)):
            return cand
    return None


def tracefs_available() -> Optional[str]:
    """``None`` if tracefs is mounted or mountable here (root, kernel support), else why."""
    if find_tracefs():
        return None
    return mount_problem()


def _libc():
    lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                          ctypes.c_void_p]
    lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return lib


def _write(path: str, text: str) -> None:
    """Write a tracefs control file (never creates a file: no O_CREAT)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode("ascii"))
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def remove_instance(path: str) -> bool:
    """Disable every event of the tracefs instance at ``path`` and remove it; True on success.
    Never raises."""
    for sub in ("events/enable", "tracing_on"):
        try:
            _write(os.path.join(path, sub), "0")
        except OSError:
            pass
    for _ in range(20):
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                return False
            time.sleep(0.05)
    return False


def _reap_stale_mounts() -> int:
    """Unmount the private tracefs mounts of sensors that died without cleaning up (their
    directory name carries the owner's pid: ``sysmonx-tracefs-<pid>-*``). Returns how many."""
    n = 0
    try:
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1] for line in f if " tracefs " in line]
    except OSError:
        return 0
    for mnt in mounts:
        base = os.path.basename(mnt)
        if not base.startswith("sysmonx-tracefs-"):
            continue
        owner = base[len("sysmonx-tracefs-"):].split("-", 1)[0]
        if not owner.isdigit() or os.path.exists(f"/proc/{owner}"):
            continue
        if _libc().umount2(os.fsencode(mnt), 0) == 0:
            try:
                os.rmdir(mnt)
            except OSError:
                pass
            n += 1
    return n


class TcpStateTrace:
    """A private tracefs instance tracing ``sock:inet_sock_set_state`` for TCP.

    Args:
        exclude_pids: pids whose transitions are filtered out in the kernel (``common_pid``).
        buffer_kb: per-CPU ring buffer size.

    Raises:
        OSError: tracefs could not be mounted or the instance set up (everything undone).
    """

    def __init__(self, exclude_pids: Iterable[int] = (), buffer_kb: int = 1024) -> None:
        self.root: Optional[str] = None
        self.mounted_here: Optional[str] = None
        self.instance: Optional[str] = None
        self.fd = -1
        self._rest = b""
        self._lost_base: dict = {}
        self.stats = {"lines": 0, "parse_errors": 0, "overrun": 0}
        try:
            self._setup(sorted({int(p) for p in exclude_pids}), buffer_kb)
        except BaseException:
            self.close()
            raise

    def _setup(self, exclude: list, buffer_kb: int) -> None:
        _reap_stale_mounts()
        root = find_tracefs()
        if root is None:
            parent = "/run" if os.path.isdir("/run") else None
            mnt = tempfile.mkdtemp(prefix=f"sysmonx-tracefs-{os.getpid()}-", dir=parent)
            if _libc().mount(b"nodev", os.fsencode(mnt), b"tracefs", 0, None) != 0:
                err = ctypes.get_errno()
                os.rmdir(mnt)
                raise OSError(err, f"mount tracefs: {os.strerror(err)}")
            self.mounted_here = root = mnt
        self.root = root
        inst_dir = os.path.join(root, "instances")
        self._reap_stale(inst_dir)
        base = f"{INSTANCE_PREFIX}{os.getpid()}"
        for n in range(100):
            name = base if n == 0 else f"{base}_{n}"
            try:
                os.mkdir(os.path.join(inst_dir, name))
            except FileExistsError:
                continue
            self.instance = os.path.join(inst_dir, name)
            break
        else:
            raise OSError(errno.EEXIST, "no free tracefs instance name")
        inst = self.instance
        _write(os.path.join(inst, "buffer_size_kb"), str(int(buffer_kb)))
        _write(os.path.join(inst, "trace_clock"), "mono")
        _write(os.path.join(inst, "options/record-tgid"), "1")
        flt = ("protocol == 6 && (newstate == 2 || oldstate == 2 || "
               "(oldstate == 3 && newstate == 1))")
        if exclude:
            flt += "".join(f" && common_pid != {p}" for p in exclude[:32])
        _write(os.path.join(inst, "events", EVENT, "filter"), flt)
        for cpu_stats in cpu_stats_files(self.instance):
            self._lost_base[cpu_stats] = read_lost(cpu_stats)
        _write(os.path.join(inst, "events", EVENT, "enable"), "1")
        self.fd = os.open(os.path.join(inst, "trace_pipe"), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)

    @staticmethod
    def _reap_stale(inst_dir: str) -> None:
        try:
            names = os.listdir(inst_dir)
        except OSError:
            return
        for name in names:
            if not name.startswith(INSTANCE_PREFIX):
                continue
            pid_part = name[len(INSTANCE_PREFIX):].split("_")[0]
            if pid_part.isdigit() and not _pid_alive(int(pid_part)):
                remove_instance(os.path.join(inst_dir, name))

    def lost_delta(self) -> int:
        """Events lost since the last call (``overrun`` + ``dropped events`` of every CPU)."""
        if not self.instance:
            return 0
        delta = 0
        for path in cpu_stats_files(self.instance):
            now = read_lost(path)
            delta += max(0, now - self._lost_base.get(path, 0))
            self._lost_base[path] = now
        self.stats["overrun"] += delta
        return delta

    def fileno(self) -> int:
        """The ``trace_pipe`` fd (for ``poll``; -1 after :meth:`close`)."""
        return self.fd

    def read(self, max_bytes: int = 1 << 20) -> list:
        """Read available lines (non-blocking) and parse them: ``[TcpTransition]``."""
        if self.fd < 0:
            return []
        out = []
        got = 0
        while got < max_bytes:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break
                raise
            if not chunk:
                break
            got += len(chunk)
            data = self._rest + chunk
            lines = data.split(b"\n")
            self._rest = lines.pop()
            for raw in lines:
                if not raw:
                    continue
                self.stats["lines"] += 1
                tr = parse_line(raw.decode("utf-8", "replace"))
                if tr is None:
                    self.stats["parse_errors"] += 1
                else:
                    out.append(tr)
        return out

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for data; True when readable."""
        if self.fd < 0:
            return False
        p = select.poll()
        p.register(self.fd, select.POLLIN)
        return bool(p.poll(int(timeout_s * 1000)))

    def close(self) -> None:
        """Disable the event, remove the instance, unmount tracefs if we mounted it.
        Idempotent; never raises."""
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1
        if self.instance:
            try:
                _write(os.path.join(self.instance, "events", EVENT, "enable"), "0")
            except OSError:
                pass
            remove_instance(self.instance)
            self.instance = None
        if self.mounted_here:
            mnt, self.mounted_here = self.mounted_here, None
            try:
                _libc().umount2(os.fsencode(mnt), _MNT_DETACH)
            except OSError:
                pass
            try:
                os.rmdir(mnt)
            except OSError:
                pass


class ConnectMatcher:
    """Pairs SYN_SENT transitions (pid, no source port) with the same socket's next
    transition (source port), see the module docstring.

    The text format does not name the socket, so a transition is paired by (family, daddr,
    dport, saddr). When several connects to that destination are pending, the one made by the
    thread the transition ran on is taken (on loopback the handshake runs in the connecting
    thread); if no pending connect or more than one has that thread, the oldest is taken and
    its port reported as unknown (``None``) rather than possibly another socket's.

    :meth:`feed` returns finished connects as ``(TcpTransition_at_syn_sent, sport or None)``;
    :meth:`expire` returns those older than ``pending_s``.
    """

    def __init__(self, pending_s: float = 1.0, max_pending: int = 65536,
                 port_lookup: Optional[Callable[[str, int, Optional[str]],
                                                Optional[int]]] = None) -> None:
        self.pending_s = pending_s
        self.max_pending = max_pending
        #: ``(daddr, dport, saddr) -> port or None`` asked for a connect that expires still
        #: connecting (:func:`sysmonx.sensor.procfs.syn_sent_port`); ``None``: not asked.
        self.port_lookup = port_lookup
        self._pending: dict = {}
        self._count = 0
        self.ambiguous = 0

    @staticmethod
    def _key(tr: TcpTransition) -> tuple:
        return (tr.ipv6, tr.daddr, tr.dport, tr.saddr)

    def feed(self, tr: TcpTransition) -> list:
        """Feed a transition; returns connects now complete: ``(SYN_SENT transition, source
        port or None when not certain)``."""
        done: list[tuple[TcpTransition, Optional[int]]] = []
        if tr.newstate == TCP_SYN_SENT:
            if tr.sport:
                done.append((tr, tr.sport))
            else:
                self._pending.setdefault(self._key(tr), deque()).append((tr, time.monotonic()))
                self._count += 1
                if self._count > self.max_pending:
                    done.extend(self.expire(force_all=True))
        elif tr.oldstate == TCP_SYN_SENT:
            key = self._key(tr)
            q = self._pending.get(key)
            if q:
                sport = tr.sport or None
                if len(q) == 1:
                    syn, _t = q.popleft()
                else:
                    mine = [i for i, (p, _t) in enumerate(q) if p.tid == tr.tid]
                    if len(mine) == 1:
                        syn, _t = q[mine[0]]
                        del q[mine[0]]
                    else:
                        syn, _t = q.popleft()
                        sport = None  # which socket it was is not certain
                        self.ambiguous += 1
                self._count -= 1
                if not q:
                    del self._pending[key]
                done.append((syn, sport))
        return done

    def claim(self, pid: int, daddr: str, dport: int,
              resolve: Callable[[int, Optional[int]], int]) -> Optional[TcpTransition]:
        """Take out the oldest pending (still connecting) SYN_SENT of process ``pid`` to
        ``daddr:dport`` (``resolve(tid, printed tgid)`` gives a transition's process, see
        :func:`thread_group`), for a caller that knows the connect from elsewhere (the audit
        record) and will not wait for it to complete; ``None`` when there is none."""
        for key, q in self._pending.items():
            if key[1] != daddr or key[2] != dport:
                continue
            for i, (syn, _t) in enumerate(q):
                if resolve(syn.tid, syn.tgid) == pid:
                    del q[i]
                    self._count -= 1
                    if not q:
                        del self._pending[key]
                    return syn
        return None

    def expire(self, force_all: bool = False) -> list:
        """Connects pending longer than ``pending_s`` (all with ``force_all``): the port from
        ``port_lookup`` when it names one socket (only for the last pending connect to that
        destination: two or more cannot be told apart), else ``None``."""
        limit = time.monotonic() - self.pending_s
        done = []
        for key in list(self._pending):
            q = self._pending[key]
            while q and (force_all or q[0][1] < limit):
                syn = q.popleft()[0]
                port = None
                if self.port_lookup is not None and len(q) == 0:
                    # still connecting (no answer yet): its socket names the port
                    port = self.port_lookup(syn.daddr, syn.dport, syn.saddr)
                done.append((syn, port))
                self._count -= 1
            if not q:
                del self._pending[key]
        return done

