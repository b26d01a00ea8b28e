"""Small, fast ``/proc`` readers shared by the tier-C (``cnproc``) and ``dns`` backends.

Everything here reads ``/proc`` directly with ``os.open``/``os.read`` (about 40 µs for a full
process snapshot, spec linux-sensing.md §2.7) and never raises for a process that vanished: a
short-lived process can exit between any two reads (spec §2.1), so every field is optional.

Contents:

* :func:`read_process` — a :class:`ProcSnapshot` of ``/proc/PID`` (exe, cmdline, cwd, stat
  fields 4/22/27, real uid, loginuid, sessionid), cmdline first because it disappears first.
* :class:`SocketOwners` — which process owns a local TCP/UDP port: ``/proc/net/{tcp,udp}{,6}``
  gives the socket inode, a scan of ``/proc/*/fd`` gives the pid (spec §2.5, §2.6).
* :func:`init_namespaces` — whether we run in the initial pid/user namespace (cn_proc and audit
  only work there, spec §2.1).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Optional

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

__all__ = ["ProcSnapshot", "read_process", "read_process_racy", "read_process_rest", "parse_stat",
           "SocketOwners", "init_namespaces",
           "kernel_version", "cap_effective", "has_cap", "CAP_NET_ADMIN", "CAP_SYS_ADMIN",
           "CAP_NET_RAW", "CAP_DAC_READ_SEARCH", "monotonic_to_epoch_offset", "clock_offset",
           "syn_sent_port"]

CAP_DAC_READ_SEARCH = 2
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
CAP_SYS_ADMIN = 21

# inode numbers of the initial namespaces (include/linux/proc_ns.h PROC_*_INIT_INO)
_PROC_USER_INIT_INO = 0xEFFFFFFD
_PROC_PID_INIT_INO = 0xEFFFFFFC

_UNSET_ID = 4294967295


def kernel_version() -> tuple:
    """``(major, minor)`` of the running kernel from ``uname -r`` (``(0, 0)`` if unparsable)."""
    rel = os.uname().release
    parts = []
    for piece in rel.split(".")[:2]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        parts.append(int(digits) if digits else 0)
    while len(parts) < 2:
        parts.append(0)
    return tuple(parts)


def cap_effective() -> int:
    """This process's effective capability mask (``CapEff`` of ``/proc/self/status``); 0 if
    unreadable."""
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def has_cap(cap: int) -> bool:
    """Whether capability number ``cap`` (e.g. :data:`CAP_NET_ADMIN`) is effective."""
    return bool(cap_effective() >> cap & 1)


def init_namespaces() -> Optional[str]:
    """``None`` when this process is in the initial pid and user namespaces, else the reason.

    The proc connector silently ignores listeners outside them (spec linux-sensing.md §2.1).
    """
    for ns, ino in (("pid", _PROC_PID_INIT_INO), ("user", _PROC_USER_INIT_INO)):
        try:
            st = os.stat(f"/proc/self/ns/{ns}")
        except OSError as exc:
            return f"cannot stat /proc/self/ns/{ns}: {exc.strerror}"
        if st.st_ino != ino:
            return f"not in the initial {ns} namespace (the kernel ignores cn_proc listeners there)"
    return None


def clock_offset(clock: int, reference: Optional[int] = None, samples: int = 5) -> int:
    """Nanoseconds to add to a ``clock`` stamp to get a ``reference`` stamp (default: epoch
    time, ``CLOCK_REALTIME``). Two clock reads are not atomic: a thread preempted between them
    (a busy machine) gets an offset off by as much as it waited, and stamps converted with two
    such offsets can swap order (an exit before its exec). So the reference is read before and
    after the clock, ``samples`` times, and the tightest pair is used (error: half its gap,
    normally well under a microsecond)."""
    ref = time.CLOCK_REALTIME if reference is None else reference
    best = None
    for _ in range(samples):
        r0 = time.clock_gettime_ns(ref)
        c = time.clock_gettime_ns(clock)
        r1 = time.clock_gettime_ns(ref)
        if best is None or r1 - r0 < best[0]:
            best = (r1 - r0, (r0 + r1) // 2 - c)
    assert best is not None  # samples >= 1
    return best[1]


def monotonic_to_epoch_offset() -> int:
    """Nanoseconds to add to a ``CLOCK_MONOTONIC`` stamp to get epoch nanoseconds (cn_proc
    ``timestamp_ns`` and tracefs ``trace_clock=mono`` use CLOCK_MONOTONIC); see
    :func:`clock_offset`."""
    return clock_offset(time.CLOCK_MONOTONIC)


def _read(path: str, size: int = 65536, whole: bool = False,
          max_bytes: int = 64 << 20) -> Optional[bytes]:
    """The contents of ``path`` (``None`` when it cannot be opened or read). A read shorter than
    ``size`` ends it, which is one syscall for a small file; ``whole`` reads on to the end (at
    most ``max_bytes``): seq files such as ``/proc/net/tcp`` give about a page per read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return _read_fd(fd, size, whole, max_bytes)
    finally:
        os.close(fd)


def _read_fd(fd: int, size: int = 65536, whole: bool = False,
             max_bytes: int = 64 << 20) -> Optional[bytes]:
    """:func:`_read` of an open file descriptor (left open)."""
    try:
        chunks = []
        total = 0
        while total < max_bytes:
            # procfs hands out a page or so per read: a short read is not the end
            data = os.read(fd, size)
            if not data:
                break
            chunks.append(data)
            total += len(data)
            if len(data) < size and not whole:
                break
        return b"".join(chunks)
    except OSError:
        return None


def _readlink(path: str) -> Optional[str]:
    try:
        return os.readlink(path)
    except OSError:
        return None


@dataclass(slots=True)
class ProcSnapshot:
    """What ``/proc/PID`` showed at one moment; every field ``None`` when it could not be read.

    Attributes:
        exe: ``/proc/PID/exe`` target (absent once the mm is gone, i.e. for zombies).
        argv: ``/proc/PID/cmdline`` split at NUL (empty for zombies -> ``None``).
        cwd: ``/proc/PID/cwd`` target.
        state: stat field 3 (``R``, ``S``, ``Z`` ...). ppid: stat field 4.
        start_ticks: stat field 22, clock ticks since boot. end_data: the ProcessGuid key,
            stat field 27 ``endcode`` (``mm->end_code``: what Sysmon for Linux reads despite the
            name, see ``observations.ProcessExec``); ``None`` when 0 (zombie: no mm).
        uid: real uid (``Uid:`` of status). auid: ``/proc/PID/loginuid``. sessionid:
            ``/proc/PID/sessionid``.
        mnt_ns, pid_ns: inode numbers of ``/proc/PID/ns/mnt`` and ``/proc/PID/ns/pid`` (gone
            with the exe: a zombie has no namespaces).
    """

    pid: int
    exe: Optional[str] = None
    argv: Optional[list] = None
    cwd: Optional[str] = None
    state: Optional[str] = None
    ppid: Optional[int] = None
    start_ticks: Optional[int] = None
    end_data: Optional[int] = None
    uid: Optional[int] = None
    auid: Optional[int] = None
    sessionid: Optional[int] = None
    mnt_ns: Optional[int] = None
    pid_ns: Optional[int] = None

    @property
    def full(self) -> bool:
        """True when both the image and the command line were read."""
        return self.exe is not None and self.argv is not None


def parse_stat(data: bytes) -> Optional[tuple]:
    """Parse ``/proc/PID/stat``: ``(state, ppid, start_ticks, end_data)`` or ``None``.

    The comm (field 2) may contain spaces and parentheses, so fields are counted after the
    last ``)``. ``end_data`` is field 27 (``endcode``, the ProcessGuid key), ``None`` when absent
    or 0.
    """
    close = data.rfind(b")")
    if close < 0:
        return None
    fields = data[close + 2:].split()
    if len(fields) < 20:
        return None
    try:
        state = fields[0].decode("ascii", "replace")
        ppid = int(fields[1])
        start = int(fields[19])
        end_data = int(fields[24]) if len(fields) > 24 else 0
    except ValueError:
        return None
    return state, ppid, start, (end_data or None)


def _decode_argv(raw: bytes) -> Optional[list]:
    if not raw:
        return None
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0")]


def read_process(pid: int) -> ProcSnapshot:
    """Read a :class:`ProcSnapshot` of ``pid`` now (:func:`read_process_racy` then
    :func:`read_process_rest`; when ``/proc/PID`` is gone, the first failed open ends it: every
    field ``None``). Never raises."""
    snap, gone = _racy(pid)
    return snap if gone else read_process_rest(snap)


def read_process_racy(pid: int) -> ProcSnapshot:
    """Read the fields that vanish first when ``pid`` exits (its mm, fs and namespaces are
    released before it becomes a zombie): cmdline, exe, cwd, the mount and pid namespaces.
    Never raises."""
    return _racy(pid)[0]


def _racy(pid: int) -> tuple:
    """``(snapshot, gone)``: :func:`read_process_racy`'s snapshot, and whether ``/proc/PID``
    does not exist (``cmdline`` exists for every process, zombies included: ENOENT/ESRCH on it
    means no such process, and nothing else is read)."""
    base = f"/proc/{pid}/"
    snap = ProcSnapshot(pid)
    try:
        fd = os.open(base + "cmdline", os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        return snap, True
    except OSError:
        raw = None
    else:
        try:
            raw = _read_fd(fd, 131072)
        finally:
            os.close(fd)
    snap.argv = _decode_argv(raw or b"")
    snap.exe = _readlink(base + "exe")
    snap.cwd = _readlink(base + "cwd")
    snap.mnt_ns, snap.pid_ns = ns_inode(base + "ns/mnt"), ns_inode(base + "ns/pid")
    return snap, False


def ns_inode(path: str) -> Optional[int]:
    """The inode number of the namespace a ``/proc/PID/ns/NAME`` link names, or ``None`` when
    it cannot be read (the process is gone or has released its namespaces, no permission).

    Read from the link's text (``mnt:[4026531841]``, the kernel's ``ns_get_name``: the
    namespace's ``inum``), which is the ``st_ino`` that ``stat()`` of the link gives (nsfs
    inodes are numbered by ``inum``) without following it: ``stat()`` allocates and frees an
    nsfs dentry and inode each time: about 4 µs less per new process (docs/PERFORMANCE.md, tier
    B, 2026-12-07 session 12). ``None`` too for a text not of that form."""
    try:
        link = os.readlink(path)
    except OSError:
        return None
    i = link.find(":[")
    if i < 0 or not link.endswith("]"):
        return None
    digits = link[i + 2:-1]
    return int(digits) if digits.isdigit() and digits.isascii() else None



def read_process_rest(snap: ProcSnapshot) -> ProcSnapshot:
    """Complete ``snap`` with what a zombie still shows (stat, status uid, loginuid,
    sessionid); returns ``snap``. Never raises."""
    base = f"/proc/{snap.pid}/"
    stat = _read(base + "stat", 4096)
    if stat:
        parsed = parse_stat(stat)
        if parsed:
            snap.state, snap.ppid, snap.start_ticks, snap.end_data = parsed
    status = _read(base + "status", 8192)
    if status:
        pos = status.find(b"\nUid:")
        if pos >= 0:
            try:
                snap.uid = int(status[pos + 5:status.index(b"\n", pos + 1)].split()[0])
            except (ValueError, IndexError):
                pass
    for name in ("loginuid", "sessionid"):
        raw = _read(base + name, 64)
        if raw:
            try:
                setattr(snap, "auid" if name == "loginuid" else name, int(raw.strip()))
            except ValueError:
                pass
    return snap


# --------------------------------------------------------------------------------------------
# socket owner lookup (/proc/net/* inode -> /proc/*/fd)
# --------------------------------------------------------------------------------------------

_TCP_LISTEN = 0x0A
#: states of a connection that may still wait in the accept queue: ESTABLISHED, CLOSE_WAIT
#: (the peer closed first)
_TCP_QUEUED = (0x01, 0x08)


def _process_fds(names: list):
    """``(pid, "/proc/PID/fd", [fd name, ...])`` for each process of ``names`` (a listing of
    ``/proc``) whose descriptor folder can be listed; a process that went away or cannot be
    read is left out. Never raises."""
    for name in names:
        if not name.isdigit():
            continue
        fd_dir = f"/proc/{name}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        yield int(name), fd_dir, fds


def _hex_ip(text: str) -> str:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # IPv6: four host-endian 32-bit words
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    addr = ipaddress.IPv6Address(words)
    return str(addr.ipv4_mapped) if addr.ipv4_mapped else str(addr)


def syn_sent_port(daddr: str, dport: int, saddr: Optional[str] = None) -> Optional[int]:
    """The local port of THE TCP socket still connecting (``SYN_SENT``) to ``daddr:dport``
    (from ``saddr`` when given), from ``/proc/net/tcp{,6}``; ``None`` when there is none or
    more than one (which one is meant cannot be told). For connects that never complete (no
    answer: a scan, a dead host), whose port the kernel chose after the tracepoint fired."""
    found = []
    for parts in _proc_net_rows("tcp"):
        if parts[3] != b"02":
            continue
        try:
            rip, rport = parts[2].decode().split(":")
            if int(rport, 16) != dport or _hex_ip(rip) != daddr:
                continue
            lip, lport = parts[1].decode().split(":")
            if saddr is not None and _hex_ip(lip) != saddr:
                continue
            found.append(int(lport, 16))
        except (ValueError, UnicodeDecodeError):
            continue
    return found[0] if len(found) == 1 else None


def _proc_net_rows(proto: str):
    """Yield the split columns (bytes) of every socket line of ``/proc/net/{proto}`` and
    ``{proto}6`` (``sl local rem st ... inode``: at least 10 columns)."""
    for suffix in ("", "6"):
        data = _read(f"/proc/net/{proto}{suffix}", 1 << 20, whole=True)
        if not data:
            continue
        for line in data.split(b"\n")[1:]:
            parts = line.split()
            if len(parts) >= 10:
                yield parts


def _proc_net_entries(proto: str):
    """Yield ``(local_ip, local_port, state, inode)`` from ``/proc/net/{proto}`` and
    ``{proto}6``; ``local_ip`` is text with IPv4-mapped IPv6 shown as IPv4."""
    for parts in _proc_net_rows(proto):
        try:
            ip_hex, port_hex = parts[1].decode().split(":")
            yield _hex_ip(ip_hex), int(port_hex, 16), int(parts[3], 16), int(parts[9])
        except (ValueError, UnicodeDecodeError):
            continue


#: :meth:`SocketOwners.accepted_by`: the connection waits in the accept queue (ask again)
QUEUED = -1


def _same_ip(a: Optional[str], b: str) -> bool:
    if a is None:
        return True
    try:
        x, y = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return a == b
    x = getattr(x, "ipv4_mapped", None) or x
    y = getattr(y, "ipv4_mapped", None) or y
    return x == y


_NETLINK_SOCK_DIAG, _SOCK_DIAG_BY_FAMILY, _NLMSG_ERROR = 4, 20, 2
#: errors that say the sock_diag socket cannot be used on this host (not this one look-up)
_DIAG_UNUSABLE = frozenset({errno.ENOSYS, errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT,
                            errno.EPERM, errno.EACCES, errno.EPROTO})


class _SockDiag:
    """One TCP socket looked up by its four-tuple through ``NETLINK_SOCK_DIAG``
    (``SOCK_DIAG_BY_FAMILY``, ``inet_diag_req_v2`` with no cookie: the kernel's hash look-up,
    about 0.1 ms, where reading ``/proc/net/tcp`` walks every socket, about 3 ms). Thread-safe;
    :meth:`find` raises OSError when the netlink socket cannot be used (the caller reads
    ``/proc/net/tcp{,6}`` instead)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: Optional[socket.socket] = None
        self._seq = 0

    def find(self, local_ip: str, local_port: int, peer_ip: str, peer_port: int) -> tuple:
        """``(found, inode, state)`` as :func:`_tcp_connection_inode` gives them."""
        family = socket.AF_INET6 if ":" in local_ip or ":" in peer_ip else socket.AF_INET
        src = socket.inet_pton(family, local_ip).ljust(16, b"\0")
        dst = socket.inet_pton(family, peer_ip).ljust(16, b"\0")
        sockid = struct.pack(">HH", local_port, peer_port) + src + dst + \
            struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF)   # any interface, no cookie
        req = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF) + sockid
        with self._lock:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM,
                                           _NETLINK_SOCK_DIAG)
                self._sock.settimeout(1.0)
            self._seq = (self._seq + 1) & 0xFFFFFFFF
            self._sock.send(struct.pack("=IHHII", 16 + len(req), _SOCK_DIAG_BY_FAMILY, 1,
                                        self._seq, 0) + req)
            while True:
                data = self._sock.recv(8192)
                if len(data) >= 16 and struct.unpack_from("=I", data, 8)[0] == self._seq:
                    break
        typ = struct.unpack_from("=H", data, 4)[0]
        if typ == _NLMSG_ERROR:
            err = -struct.unpack_from("=i", data, 16)[0] if len(data) >= 20 else 0
            if err == errno.ENOENT:
                return False, 0, 0
            raise OSError(err, "sock_diag look-up failed")
        if len(data) < 16 + 72:
            raise OSError(errno.EPROTO, "short sock_diag answer")
        state = data[17]
        if state == _TCP_LISTEN:   # no such connection: the kernel answered with the listener
            return False, 0, 0
        return True, struct.unpack_from("=I", data, 16 + 68)[0], state

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _tcp_connection_inode(local_ip: Optional[str], local_port: int, peer_ip: str,
                          peer_port: int) -> tuple:
    """``(found, inode, state)`` of the TCP connection ``local_ip:local_port`` <->
    ``peer_ip:peer_port`` (not a listening socket) in ``/proc/net/tcp{,6}``: inode 0 while it
    waits in the accept queue (no descriptor yet) and after its last descriptor was closed
    (an orphan: ``FIN_WAIT``, ``TIME_WAIT``, ``LAST_ACK``); ``found`` False when it is gone."""
    ltail, rtail = b":%04X" % local_port, b":%04X" % peer_port
    for parts in _proc_net_rows("tcp"):
        if not (parts[1].endswith(ltail) and parts[2].endswith(rtail)):
            continue
        try:
            if int(parts[3], 16) == _TCP_LISTEN:
                continue
            lip, lport = parts[1].decode().split(":")
            rip, rport = parts[2].decode().split(":")
            if int(lport, 16) != local_port or int(rport, 16) != peer_port:
                continue
            if not _same_ip(peer_ip, _hex_ip(rip)) or not _same_ip(local_ip, _hex_ip(lip)):
                continue
            return True, int(parts[9]), int(parts[3], 16)
        except (ValueError, UnicodeDecodeError):
            continue
    return False, 0, 0


class SocketOwners:
    """Map a local (protocol, ip, port) to the pid that owns the socket, through ``/proc``.

    Spec linux-sensing.md §2.6: ``/proc/net/udp{,6}`` gives the socket inode of the local port,
    then ``/proc/*/fd`` is scanned for ``socket:[inode]`` (about 3 ms for 70 processes). A miss
    first searches the newest processes (highest pids first) and stops at the owner: a
    short-lived client, which is what a miss usually is, is found in a few hundred microseconds,
    while it still holds its socket. Sockets seen on the way are remembered, and a full scan
    (every socket inode of every process, so a burst of look-ups costs one scan) is repeated on
    a miss only if the last scan started before ``seen_at`` (the time the packet or event was
    received): a socket that was not there when a later scan started is already gone.
    ``lookup`` results are cached per (proto, port) for ``port_ttl`` seconds.

    Thread-safe (one lock); ``lookup`` never raises.
    """

    def __init__(self, port_ttl: float = 1.0, max_inodes: int = 200000) -> None:
        self.port_ttl = port_ttl
        self.max_inodes = max_inodes
        self._lock = threading.Lock()
        self._inode_pid: dict = {}
        self._scan_started = 0.0
        self._port_cache: dict = {}
        self._holders_cache: dict = {}
        self._listen_cache: dict = {}
        self._diag: Optional[_SockDiag] = _SockDiag()
        #: at most this many descriptors of a listening socket's holders are read to find
        #: which holds an accepted connection (:meth:`accepted_by`)
        self.accept_fd_budget = 4096
        #: at most this many descriptors of the whole host are read by one walk for the
        #: holders of a listening socket (:meth:`_holders_of`, about 12 us each)
        self.holders_fd_budget = 16384
        #: times :meth:`accepted_by` gave up because a budget above was exceeded (the accept
        #: is then written with the unknown values)
        self.budget_exceeded = 0
        self._accepter_cache: dict = {}   # listener inode -> (its one holder, until)
        self._rewalked: dict = {}         # listener inode -> no stale-cache re-walk until
        self.scans = 0

    def _scan(self) -> None:
        self._scan_started = time.monotonic()
        self.scans += 1
        mapping: dict = {}
        try:
            names = os.listdir("/proc")
        except OSError:
            return
        for pid, fd_dir, fds in _process_fds(names):
            for fd in fds:
                try:
                    target = os.readlink(f"{fd_dir}/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    try:
                        mapping.setdefault(int(target[8:-1]), pid)
                    except ValueError:
                        pass
                    if len(mapping) >= self.max_inodes:
                        break
        self._inode_pid = mapping

    def pid_of_inode(self, inode: int, seen_at: Optional[float] = None) -> Optional[int]:
        """Pid owning socket ``inode`` (first found), or ``None``; ``seen_at`` as in the class
        docstring (``time.monotonic()`` scale; ``None`` = now)."""
        if not inode:
            return None
        with self._lock:
            pid = self._inode_pid.get(inode)
            if pid is not None and os.path.exists(f"/proc/{pid}"):
                return pid
            seen = time.monotonic() if seen_at is None else seen_at
            if self._scan_started <= seen:
                pid = self._search(inode)
                if pid is not None:
                    return pid
                self._scan()
            return self._inode_pid.get(inode)

    def _search(self, inode: int) -> Optional[int]:
        """Owner of ``inode`` among the newest processes (highest pids first, at most 64),
        remembering the socket inodes seen; ``None`` if not among them."""
        try:
            pids = sorted((int(n) for n in os.listdir("/proc") if n.isdigit()), reverse=True)
        except OSError:
            return None
        target = f"socket:[{inode}]"
        mapping = self._inode_pid
        for pid in pids[:64]:
            fd_dir = f"/proc/{pid}/fd"
            try:
                fds = os.listdir(fd_dir)
            except OSError:
                continue
            for fd in fds:
                try:
                    link = os.readlink(f"{fd_dir}/{fd}")
                except OSError:
                    continue
                if link == target:
                    mapping[inode] = pid
                    return pid
                if link.startswith("socket:[") and len(mapping) < self.max_inodes:
                    try:
                        mapping.setdefault(int(link[8:-1]), pid)
                    except ValueError:
                        pass
        return None

    @staticmethod
    def _holds(pid: int, target: str) -> bool:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            return False
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") == target:
                    return True
            except OSError:
                continue
        return False

    def _first_holder(self, pid: int, inode: int) -> int:
        """The topmost ancestor of ``pid`` (``pid`` itself included) that holds socket
        ``inode`` too. A listening socket held by several processes of one line (a child
        between fork and exec holds its parent's descriptors until the exec closes them; the
        workers of a pre-fork server) belongs to the process that opened it or its oldest heir:
        the search, newest processes first, would otherwise name a child forked after the
        connection was accepted."""
        target = f"socket:[{inode}]"
        for _ in range(64):
            data = _read(f"/proc/{pid}/stat", 1024)
            parsed = parse_stat(data) if data else None
            ppid = parsed[1] if parsed else 0
            if ppid <= 1 or not self._holds(ppid, target):
                return pid
            pid = ppid
        return pid

    def _holders_of(self, inode: int) -> Optional[dict]:
        """``{pid: [fd, ...]}`` of every process holding socket ``inode`` (one pass over
        ``/proc/*/fd``), cached ``port_ttl`` seconds per inode; ``None`` (cached the same
        way, counted in :attr:`budget_exceeded`) when the walk would read more than
        :attr:`holders_fd_budget` descriptors: it runs on the reader thread of tier C, and a
        host with 100k descriptors would stall it over a second per walk."""
        now = time.monotonic()
        hit = self._holders_cache.get(inode)
        if hit is not None and hit[1] > now:
            return hit[0]
        target = f"socket:[{inode}]"
        out: Optional[dict] = {}
        left = self.holders_fd_budget
        try:
            names = os.listdir("/proc")
        except OSError:
            names = []
        for pid, fd_dir, fds in _process_fds(names):
            left -= len(fds)
            if left < 0:
                out = None
                self.budget_exceeded += 1
                break
            for fd in fds:
                try:
                    if os.readlink(f"{fd_dir}/{fd}") == target:
                        out.setdefault(pid, []).append(int(fd))  # type: ignore[union-attr]
                except (OSError, ValueError):
                    continue
        if len(self._holders_cache) > 1024:
            self._holders_cache.clear()
        self._holders_cache[inode] = (out, now + self.port_ttl)
        return out

    def _holding(self, pids, target: str) -> Optional[set]:
        """The pids of ``pids`` with a descriptor on ``target`` (``socket:[INODE]``); ``None``
        when they hold more than :attr:`accept_fd_budget` descriptors together (a busy
        server's workers: reading every link per accept would cost more than the event is
        worth; the accept is then written with the unknown values)."""
        listed = []
        total = 0
        for pid in pids:
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            total += len(fds)
            if total > self.accept_fd_budget:
                self.budget_exceeded += 1
                return None
            listed.append((pid, fds))
        out = set()
        for pid, fds in listed:
            for fd in fds:
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        out.add(pid)
                        break
                except OSError:
                    continue
        return out

    @staticmethod
    def _topmost(pids: set) -> Optional[int]:
        """The one pid of ``pids`` whose parent is not in ``pids`` when they are one line (a
        process and its descendants that inherited the socket), else ``None``."""
        roots = []
        for pid in pids:
            data = _read(f"/proc/{pid}/stat", 1024)
            parsed = parse_stat(data) if data else None
            if parsed is None or parsed[1] not in pids:
                roots.append(pid)
        return roots[0] if len(roots) == 1 else None

    def accepted_by(self, port: int, ip: Optional[str], peer_ip: str, peer_port: int,
                    seen_at: Optional[float] = None,
                    at_boot_ns: Optional[int] = None) -> Optional[int]:
        """The process that accepted the TCP connection ``peer_ip:peer_port`` ->
        ``ip:port`` (tier C reads the transition after the fact, in softirq context), or
        ``None`` when that cannot be known (written as the documented unknown value).

        ``at_boot_ns``: the transition's time, CLOCK_BOOTTIME ns (default: now, which makes
        no holder newer than the accept).

        * One process holds the listening socket matched (by ``ip`` and ``port``): it (every
          accept on it is its own); cached ``port_ttl`` seconds per listening socket (inode).
        * Several (a pre-fork server's master and workers, a listener's child between fork and
          exec): the accepted connection's own socket (``/proc/net/tcp{,6}`` by its four-tuple)
          names the accepter once accept() gave it a descriptor: the holder of that socket
          (the topmost when a child it forked holds it too). When that holder started after
          the transition (``/proc/PID/stat`` start tick later than ``at_boot_ns``'s: a
          fork-per-connection server's handler, forked after the accept, the server having
          closed its copy), its parent is named if the parent holds the listening socket
          (the caller of accept(), as tier A names it), else ``None``; started in the same
          clock tick (10 ms) as the transition: ``None`` (not decidable).
          Still queued (no descriptor yet: nobody has accepted it,
          so it is not a fact yet): :data:`QUEUED`, for the caller to ask again a moment
          later; which holder is blocked in accept() does not decide it (a holder coming back
          to accept() takes a queued connection before a woken waiter runs).
          Otherwise ``None``: a plausible holder would often be the wrong one (tier A names
          the caller of accept): the connection already closed; the holders hold more than
          ``accept_fd_budget`` descriptors together, or finding them would read more than
          ``holders_fd_budget`` descriptors of the host (both counted in
          :attr:`budget_exceeded`); the connection's holder is not in the holder list and
          that list was already walked again within ``port_ttl`` for the same listener (at
          most one such re-walk per listening socket per ``port_ttl``).
        """
        now = time.monotonic()
        lkey = (port, ip)
        lhit = self._listen_cache.get(lkey)
        if lhit is not None and lhit[1] > now:
            inode = lhit[0]   # one read of /proc/net/tcp per accept, not two (3 ms each)
        else:
            inode = 0
            try:
                for local_ip, local_port, state, ino in _proc_net_entries("tcp"):
                    if local_port != port or not ino or state != _TCP_LISTEN:
                        continue
                    if ip is not None and local_ip not in (ip, "0.0.0.0", "::"):
                        continue
                    inode = ino
                    if ip is not None and local_ip == ip:
                        break
            except OSError:  # pragma: no cover - /proc/net unreadable
                return None
            if len(self._listen_cache) > 4096:
                self._listen_cache.clear()
            self._listen_cache[lkey] = (inode, now + self.port_ttl)
        if not inode:
            return None
        hit = self._accepter_cache.get(inode)
        if hit is not None and hit[1] > now:
            return hit[0]   # the one holder of this listening socket, seen within port_ttl
        holders = self._holders_of(inode)
        if holders is None:
            return None     # over holders_fd_budget
        if len(holders) == 1:
            pid = next(iter(holders))
            if os.path.exists(f"/proc/{pid}"):
                if len(self._accepter_cache) > 4096:
                    self._accepter_cache.clear()
                self._accepter_cache[inode] = (pid, now + self.port_ttl)
                return pid
            return None
        if not holders:
            return None
        try:
            if ip is None or self._diag is None:
                raise OSError(errno.ENOSYS, "no sock_diag")
            found, conn, state = self._diag.find(ip, port, peer_ip, peer_port)
        except (OSError, ValueError) as exc:
            if getattr(exc, "errno", None) in _DIAG_UNUSABLE:
                self._diag = None   # not usable here: /proc/net/tcp{,6} from now on
            found, conn, state = _tcp_connection_inode(ip, port, peer_ip, peer_port)
        if not found or (not conn and state not in _TCP_QUEUED):
            return None   # closed before it was read: whoever accepted it is not known
        if not conn:
            return QUEUED
        target = f"socket:[{conn}]"
        have = self._holding(holders, target)
        if have is not None and not have:
            # a holder the cached list does not know yet (a new worker, a forked handler):
            # the host is walked again at most once per listening socket per port_ttl
            until = self._rewalked.get(inode)
            if until is not None and until > now:
                return None
            if len(self._rewalked) > 1024:
                self._rewalked.clear()
            self._rewalked[inode] = now + self.port_ttl
            self._holders_cache.pop(inode, None)
            holders = self._holders_of(inode)
            if holders is None:
                return None
            have = self._holding(holders, target)
        top = self._topmost(have) if have else None
        if top is None:
            return None
        return self._accepter(top, inode, at_boot_ns)

    def _accepter(self, pid: int, inode: int, at_boot_ns: Optional[int]) -> Optional[int]:
        """``pid`` (the topmost holder of an accepted connection) when it existed before the
        transition at ``at_boot_ns``; its parent when it started after it and the parent
        holds listening socket ``inode``; else ``None`` (:meth:`accepted_by`)."""
        data = _read(f"/proc/{pid}/stat", 1024)
        parsed = parse_stat(data) if data else None
        if parsed is None:
            return None   # gone
        if at_boot_ns is None:
            return pid
        tick = at_boot_ns // (1_000_000_000 // _CLK_TCK)
        start = parsed[2]
        if start < tick:
            return pid
        if start > tick:
            ppid = parsed[1]
            if ppid > 1 and self._holding([ppid], f"socket:[{inode}]"):
                return ppid
        return None

    def lookup(self, proto: str, port: int, ip: Optional[str] = None, listening: bool = False,
               seen_at: Optional[float] = None) -> Optional[int]:
        """Pid owning the local ``proto`` (``"udp"``/``"tcp"``) socket on ``port``.

        Args:
            ip: the local address when known; a socket bound to the wildcard address matches
                too. listening: only TCP LISTEN sockets (for accepted connections); a listening
                socket several processes of one line hold is named by the topmost of them
                (:meth:`_first_holder`).
            seen_at: ``time.monotonic()`` when the packet/event was received.

        Returns:
            the pid, or ``None`` when the socket is gone (short-lived clients, spec §2.6) or
            belongs to no visible process.
        """
        now = time.monotonic()
        # the address is part of the key: two sockets may share a port on two local addresses
        key = (proto, port, listening, ip)
        hit = self._port_cache.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        inode = 0
        try:
            for local_ip, local_port, state, ino in _proc_net_entries(proto):
                if local_port != port or not ino:
                    continue
                if listening and state != _TCP_LISTEN:
                    continue
                if ip is not None and local_ip not in (ip, "0.0.0.0", "::"):
                    continue
                inode = ino
                if ip is not None and local_ip == ip:
                    break
        except OSError:  # pragma: no cover - /proc/net unreadable
            return None
        pid = self.pid_of_inode(inode, seen_at)
        if pid is not None and listening:
            pid = self._first_holder(pid, inode)
        if pid is not None:
            if len(self._port_cache) > 4096:
                self._port_cache.clear()
            self._port_cache[key] = (pid, now + self.port_ttl)
        return pid

