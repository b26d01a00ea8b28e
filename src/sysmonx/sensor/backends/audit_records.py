"""Audit records to observations: the classifier of the tier-B backend
(:mod:`.audit`), and the decoders of audit record fields it uses.

One audit event is the records of one serial number, grouped by the backend until ``EOE``
(:class:`AuditEvent`). :class:`AuditClassifier` turns it into observations from its content (not
its rule key: under a foreign auditd an earlier rule of theirs may match first and log its own
key), re-checking the conditions of the kernel rules in user space. The backend inherits it and
gives it the state it names (socket table, directory cache, the proc connector's exec
snapshots, the emit helpers).

Observation field rules
-----------------------
* ``ProcessExec``: ``image`` = SYSCALL ``exe`` (the kernel's view, `` (deleted)`` kept);
  ``argv`` from the EXECVE records (quoted or hex arguments, ``aN[k]`` chunks of long
  arguments, arguments spread over several records); ``cwd`` from CWD; ``tid`` = pid (after a
  successful execve the only thread has tid == tgid). It is paired with the proc connector's
  snapshot of the same exec (per pid, in order): ``ts_ns``, ``start_ticks`` and ``end_data``
  (``end_code``, only when the snapshot's exe is this exec's image) come from it; without one,
  from ``/proc/PID/stat`` when the process still exists and started no later than the event,
  and the start from the process's fork.
* ``NetworkConnect``: connect (``initiated=True``): destination = SOCKADDR; success or
  EINPROGRESS only. Protocol from the ``socket()`` record of that fd (or, while the process
  lives, the socket itself when its peer is the SOCKADDR), else ``None``. Source address and
  port of TCP from the tracefs SYN_SENT transition of that process and destination (the same
  socket's next transition carries the port), else ``None``; for UDP always ``None``: audit
  cannot tell which socket an fd number meant once the process reused it (back-to-back connects
  got the next socket's port). accept (``initiated=False``): **source = the remote peer**
  (SOCKADDR), as Sysmon for Linux's accept probe does, destination = the local endpoint of the
  accepted socket, read while the process lives (``pidfd_getfd``, else ``/proc/PID/fd`` +
  ``/proc/PID/net/*``) and verified against the peer (unique to the connection); else the
  listening socket's address, else ``0.0.0.0``/``::`` and port 0. Connections of protocols
  other than TCP/UDP are not reported.
* ``FileCreate``: PATH items with ``nametype=CREATE`` of a successful open/openat/openat2/creat
  (regular files), and the target of a rename (its CREATE item, or the overwritten target's
  DELETE item). ``FileDelete``: ``nametype=DELETE`` items of unlink/unlinkat (not directories).
  Relative names are joined to CWD (AT_FDCWD) or to the directory of ``dirfd`` (read from
  ``/proc/PID/fd`` and verified by the PARENT item's inode, else from a cache of directory
  inodes seen in earlier records); a name whose directory cannot be resolved is reported as
  ``"+" + name`` (Sysmon for Linux's marker for a path not fully resolved).
* ``RawAccessRead``: a successful open for reading whose PATH item is a block device; the
  device path is the watched node with that inode, else the name as opened.
* ``ProcessAccess``: successful ptrace ATTACH/SEIZE: ``request`` = a0, ``target_pid`` = a1,
  ``tid`` ``None`` (audit has no thread id).
* ``MemoryWrite`` (8): successful ptrace POKETEXT/POKEDATA/POKEUSER/SETREGS/SETREGSET into
  another process (the address is a2 for the POKE requests), and ``process_vm_writev`` (a0 the
  target, the bytes written the exit value; the remote address is inside the iovec array a3
  points at, which audit does not log: ``address`` ``None``, written ``-``).
* ``MemfdCreate`` (212, only when asked): the flags (a1); the name is a user pointer audit does
  not log (``name`` ``None``, written ``-``).

Text from the kernel (argv, paths) is decoded as UTF-8 with invalid bytes replaced by U+FFFD.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import re
import socket
import stat
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional, Union

from ..observations import (FileCreate, FileDelete, MemfdCreate, MemoryWrite, NetworkConnect,
                            ProcessAccess, ProcessExec, ProcessExit, RawAccessRead)
from ..procfs import clock_offset
from . import audit_netlink as nl

__all__ = ["ARCH_TABLES", "AuditClassifier", "AuditEvent", "AuditObservation"]

#: what audit records become (each of one process)
AuditObservation = Union[ProcessExec, ProcessExit, NetworkConnect, FileCreate, FileDelete,
                         RawAccessRead, ProcessAccess, MemoryWrite, MemfdCreate]

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
AUDIT_ARCH_AARCH64 = 0xC00000B7

# syscall numbers per audit arch (<asm/unistd_64.h>, asm-generic/unistd.h, <asm/unistd_32.h>)
ARCH_TABLES = {
    AUDIT_ARCH_X86_64: {"execve": 59, "execveat": 322, "socket": 41, "connect": 42, "accept": 43,
                        "accept4": 288, "open": 2, "openat": 257, "openat2": 437, "creat": 85,
                        "unlink": 87, "unlinkat": 263, "rename": 82, "renameat": 264,
                        "renameat2": 316, "ptrace": 101, "exit_group": 231,
                        "process_vm_writev": 311, "memfd_create": 319},
    AUDIT_ARCH_AARCH64: {"execve": 221, "execveat": 281, "socket": 198, "connect": 203,
                         "accept": 202,
                         "accept4": 242, "openat": 56, "openat2": 437, "unlinkat": 35,
                         "renameat": 38, "renameat2": 276, "ptrace": 117, "exit_group": 94,
                         "process_vm_writev": 271, "memfd_create": 279},
    AUDIT_ARCH_I386: {"execve": 11, "execveat": 358},     # compat: exec only
}
_NATIVE = {"x86_64": (AUDIT_ARCH_X86_64, (AUDIT_ARCH_I386,)),
           "aarch64": (AUDIT_ARCH_AARCH64, ())}
_NAMES = {arch: {num: name for name, num in table.items()} for arch, table in ARCH_TABLES.items()}

O_ACCMODE = 0o3
O_WRONLY = 0o1
O_CREAT = 0o100
AT_FDCWD = -100
EINPROGRESS = 115
PTRACE_ATTACH = 16
PTRACE_SEIZE = 0x4206
#: ptrace requests that write into the tracee (CreateRemoteThread, 8): number -> name
PTRACE_WRITES = {4: "PTRACE_POKETEXT", 5: "PTRACE_POKEDATA", 6: "PTRACE_POKEUSER",
                 13: "PTRACE_SETREGS", 0x4205: "PTRACE_SETREGSET"}
AF_INET, AF_INET6 = 2, 10
CLK_NS = 10_000_000                # one USER_HZ tick in ns (/proc/PID/stat times)
_SYS_PIDFD_GETFD = 438             # same number on every architecture (5.6+)

_KEEP = frozenset({nl.AUDIT_SYSCALL, nl.AUDIT_EXECVE, nl.AUDIT_CWD, nl.AUDIT_PATH,
                   nl.AUDIT_SOCKADDR, nl.AUDIT_OPENAT2})
_ARGKEY = re.compile(r"a(\d+)(?:\[(\d+)\])?$")



def _text(raw: Optional[bytes]) -> Optional[str]:
    return None if raw is None else raw.decode("utf-8", "replace")


def _s32(hexval: Optional[str]) -> Optional[int]:
    """A syscall argument (hex unsigned long) as a signed 32-bit int (fds, pids)."""
    if not hexval:
        return None
    try:
        v = int(hexval, 16) & 0xFFFFFFFF
    except ValueError:
        return None
    return v - (1 << 32) if v >= 1 << 31 else v


def _hex(hexval: Optional[str]) -> Optional[int]:
    try:
        return int(hexval, 16) if hexval else None
    except ValueError:
        return None


def _int(val: Optional[str]) -> Optional[int]:
    try:
        return int(val) if val is not None else None
    except ValueError:
        return None


def _dev(text: Optional[str]) -> Optional[int]:
    """``fe:00`` (hex major:minor) -> dev_t."""
    if not text or ":" not in text:
        return None
    try:
        major, minor = text.split(":", 1)
        return os.makedev(int(major, 16), int(minor, 16))
    except ValueError:
        return None


def _norm(path: str) -> str:
    path = os.path.normpath(path)
    return "/" + path.lstrip("/") if path.startswith("//") else path


def _decode_sockaddr(hexval: Optional[str]) -> Optional[tuple]:
    """SOCKADDR ``saddr`` hex -> ``(family, ip, port)`` for AF_INET/AF_INET6, else
    ``(family, None, None)``; ``None`` when malformed."""
    try:
        raw = bytes.fromhex(hexval or "")
    except ValueError:
        return None
    if len(raw) < 2:
        return None
    fam = int.from_bytes(raw[:2], sys.byteorder)
    if fam == AF_INET and len(raw) >= 8:
        return fam, socket.inet_ntop(socket.AF_INET, raw[4:8]), int.from_bytes(raw[2:4], "big")
    if fam == AF_INET6 and len(raw) >= 24:
        return (fam, socket.inet_ntop(socket.AF_INET6, raw[8:24]),
                int.from_bytes(raw[2:4], "big"))
    return fam, None, None


def _same_ip(a: Optional[str], b: Optional[str]) -> bool:
    if a is None or b is None:
        return False
    try:
        return ipaddress.ip_address(a.split("%")[0]) == ipaddress.ip_address(b.split("%")[0])
    except (ValueError, AttributeError):
        return False


@dataclass(slots=True)
class _SockInfo:
    family: int
    protocol: Optional[str]       # "tcp"/"udp"/None (other protocol)
    local: Optional[tuple]        # (ip, port)
    peer: Optional[tuple]


_libc = None


def _pidfd_getfd(pid: int, fd: int) -> Optional[int]:
    """Duplicate ``fd`` of process ``pid`` into this process (pidfd_getfd, Linux 5.6+)."""
    global _libc
    if fd is None or fd < 0 or not hasattr(os, "pidfd_open"):
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.syscall.restype = ctypes.c_long
        r = _libc.syscall(ctypes.c_long(_SYS_PIDFD_GETFD), ctypes.c_long(pidfd),
                          ctypes.c_long(fd), ctypes.c_long(0))
        return int(r) if r >= 0 else None
    finally:
        os.close(pidfd)


def _proto_name(proto: int, stype: int) -> Optional[str]:
    if proto == socket.IPPROTO_TCP or (proto == 0 and stype == socket.SOCK_STREAM):
        return "tcp"
    if proto in (socket.IPPROTO_UDP, 136) or (proto == 0 and stype == socket.SOCK_DGRAM):
        return "udp"
    return None


def _sock_info_pidfd(pid: int, fd: int) -> Optional[_SockInfo]:
    dup = _pidfd_getfd(pid, fd)
    if dup is None:
        return None
    try:
        s = socket.socket(fileno=dup)
    except OSError:
        os.close(dup)
        return None
    try:
        if s.family not in (socket.AF_INET, socket.AF_INET6):
            return _SockInfo(int(s.family), None, None, None)
        try:
            local = tuple(s.getsockname()[:2])
        except OSError:
            local = None
        try:
            peer = tuple(s.getpeername()[:2])
        except OSError:
            peer = None
        return _SockInfo(int(s.family), _proto_name(s.proto, int(s.type)), local, peer)
    finally:
        s.close()


def _proc_hexaddr(text: str) -> tuple:
    addr, port = text.split(":")
    words = [int(addr[i:i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(addr), 8)]
    raw = b"".join(words)
    fam = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return socket.inet_ntop(fam, raw), int(port, 16)


def _sock_info_proc(pid: int, fd: int) -> Optional[_SockInfo]:
    try:
        link = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None
    if not link.startswith("socket:["):
        return None
    ino = link[8:-1]
    for proto, name, fam in (("tcp", "tcp", AF_INET), ("tcp", "tcp6", AF_INET6),
                             ("udp", "udp", AF_INET), ("udp", "udp6", AF_INET6)):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                next(f, None)
                for line in f:
                    parts = line.split()
                    if len(parts) > 9 and parts[9] == ino:
                        local, peer = _proc_hexaddr(parts[1]), _proc_hexaddr(parts[2])
                        return _SockInfo(fam, proto, local, peer if peer[1] else None)
        except OSError:
            continue
    return None


def _proc_stat(pid: int) -> Optional[tuple]:
    """``(ppid, start_ticks, end_data)`` from ``/proc/PID/stat`` or ``None``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rfind(b")") + 2:].split()
    try:
        return int(rest[1]), int(rest[19]), int(rest[24]) if len(rest) > 24 else 0  # field 27, endcode
    except (IndexError, ValueError):
        return None


class AuditEvent:
    """The records of one audit event (one serial), in arrival order."""

    __slots__ = ("serial", "ts_ns", "born", "records")

    def __init__(self, serial: int, ts_ns: int, born: float) -> None:
        self.serial, self.ts_ns, self.born = serial, ts_ns, born
        self.records: list[nl.AuditRecord] = []



def _octal(text: Optional[str]) -> Optional[int]:
    try:
        return int(text, 8) if text else None
    except ValueError:
        return None


def _is_dir(item: dict) -> bool:
    mode = _octal(item.get("mode"))
    return mode is not None and stat.S_ISDIR(mode)


#: the field names of one EXECVE record of ``n`` whole arguments: ``argc a0 ... a(n-1)``
_SIMPLE_EXECVE = [["argc"] + [f"a{i}" for i in range(n)] for n in range(64)]


def _argv(records: list) -> list:
    """argv from EXECVE records (one or more, in arrival order): :func:`_argv_general`, which
    defines it, or for the usual record (one record, ``argc=N a0=.. a(N-1)=..`` with no chunked
    argument, fewer than 64 arguments) the same list without its general bookkeeping."""
    if len(records) == 1:
        fields = nl.parse_fields(records[0].text)
        n = _int(fields.get("argc"))
        if n is not None and 0 <= n < 64 and len(fields) == n + 1 and \
                list(fields) == _SIMPLE_EXECVE[n]:
            decode = nl.decode_untrusted
            return [(decode(v) or b"").decode("utf-8", "replace")
                    for k, v in fields.items() if k != "argc"]
    return _argv_general(records)


def _argv_general(records: list) -> list:
    """argv from EXECVE records (one or more, in arrival order): quoted or hex arguments,
    ``aN[k]`` chunks of long arguments, arguments spread over several records."""
    argc = None
    parts: dict = {}
    for rec in records:
        for key, val in nl.parse_fields(rec.text).items():
            if key == "argc":
                if argc is None:
                    argc = _int(val)
                continue
            m = _ARGKEY.match(key)
            if not m:
                continue
            raw = nl.decode_untrusted(val)
            parts.setdefault(int(m.group(1)), []).append(
                (int(m.group(2)) if m.group(2) is not None else -1, raw or b""))
    count = argc if argc is not None else (max(parts) + 1 if parts else 0)
    return [b"".join(c for _, c in sorted(parts.get(i, []), key=lambda x: x[0]))
            .decode("utf-8", "replace") for i in range(count)]


class AuditClassifier:
    """The classification half of :class:`~.audit.AuditBackend`: :meth:`_finish` takes one
    complete :class:`AuditEvent` and emits its observations (field rules in the module
    docstring). The backend inherits this class; the attributes and methods below are its."""

    options: dict
    _stats: dict
    _excl: frozenset
    _cn: Any                                    # ProcConnector or None
    _trace: Any                                 # TcpStateTrace or None
    _floor: "OrderedDict[int, int]"
    _snaps: dict
    _starts: "OrderedDict[int, int]"
    _socks: "OrderedDict[tuple, str]"
    _tcp_wait: list
    _dircache: "OrderedDict[tuple, str]"
    _watch_ids: dict

    def _drain_cn(self) -> None:
        raise NotImplementedError

    def _raise_floor(self, pid: int, ts: int) -> None:
        raise NotImplementedError

    def _out_audit(self, obs: AuditObservation) -> None:
        raise NotImplementedError

    def _settle_tcp(self, force: bool = False) -> None:
        raise NotImplementedError

    def _finish_connect(self, obs: NetworkConnect, src: Optional[tuple]) -> None:
        raise NotImplementedError

    def _error(self, message: str) -> None:
        raise NotImplementedError

    def _finish(self, ev: AuditEvent) -> None:
        self._stats["events"] += 1
        try:
            self._classify(ev)
        except (ValueError, KeyError, IndexError, TypeError) as e:
            self._stats["parse_errors"] += 1
            self._error(f"cannot parse audit event {ev.serial}: {e!r}")

    def _classify(self, ev: AuditEvent) -> None:
        first = ev.records[0] if ev.records else None   # the SYSCALL record comes first
        sysrec = first if first is not None and first.type == nl.AUDIT_SYSCALL else \
            next((r for r in ev.records if r.type == nl.AUDIT_SYSCALL), None)
        if sysrec is None:
            return                       # only aux records: the SYSCALL was lost (counted)
        f = nl.parse_fields(sysrec.text)
        pid = _int(f.get("pid"))
        if pid is None or pid in self._excl:
            return
        if self._cn is not None and (pid not in self._floor or pid not in self._snaps):
            # the proc connector reported this process (fork, exec) before audit wrote the
            # record: take what it has queued first, so an exec finds its snapshot and the
            # fork comes before the process's audit events
            self._drain_cn()
        arch, syscall = _hex(f.get("arch")), _int(f.get("syscall"))
        if arch is None or syscall is None:
            return
        name = _NAMES.get(arch, {}).get(syscall)
        if name is None:
            return
        success = f.get("success") == "yes"
        exit_code = _int(f.get("exit"))
        ts = ev.ts_ns
        if name in ("execve", "execveat"):
            if success:
                self._exec(ev, f, pid, ts)
        elif name == "socket":
            if success and exit_code is not None and exit_code >= 0:
                proto = _proto_name(_hex(f.get("a2")) or 0, (_hex(f.get("a1")) or 0) & 0xF)
                if proto is not None:
                    self._socks[(pid, exit_code)] = proto
                    self._socks.move_to_end((pid, exit_code))
                    if len(self._socks) > 65536:
                        self._socks.popitem(last=False)
        elif name in ("connect", "accept", "accept4"):
            self._net(ev, f, pid, ts, name, success, exit_code)
        elif name in ("open", "openat", "openat2", "creat"):
            if success:
                self._open(ev, f, pid, ts, name)
        elif name in ("unlink", "unlinkat"):
            if success:
                for item in self._items(ev):
                    if item.get("nametype") == "DELETE" and not _is_dir(item):
                        path = self._resolve(item, ev, f, pid, _s32(f.get("a0"))
                                             if name == "unlinkat" else AT_FDCWD)
                        self._out_audit(FileDelete(ts, pid, path))
        elif name in ("rename", "renameat", "renameat2"):
            if success:
                self._rename(ev, f, pid, ts, name)
        elif name == "exit_group" and self._cn is None:
            code = _hex(f.get("a0"))
            self._out_audit(ProcessExit(ts, pid, None, (code & 0xFF) if code is not None else None))
        elif name == "ptrace":
            req, target = _hex(f.get("a0")), _s32(f.get("a1"))
            if success and req in (PTRACE_ATTACH, PTRACE_SEIZE) and target is not None:
                self._out_audit(ProcessAccess(ts, pid, target, req, None))
            elif success and req in PTRACE_WRITES and target is not None and target != pid:
                # a2 is the remote address for the POKE requests (unused by the others)
                addr = _hex(f.get("a2")) if req in (4, 5, 6) else None
                self._out_audit(MemoryWrite(ts, pid, target, f"ptrace({PTRACE_WRITES[req]})",
                                            addr, 8 if req in (4, 5) else None, None))
        elif name == "process_vm_writev":
            target = _s32(f.get("a0"))
            if success and exit_code and exit_code > 0 and target is not None and target != pid:
                # a3 points at the remote iovec array: audit cannot read the address in it
                self._out_audit(MemoryWrite(ts, pid, target, "process_vm_writev", None,
                                            exit_code, None))
        elif name == "memfd_create":
            if success:
                # a0 points at the name: audit logs the pointer, not the string
                self._out_audit(MemfdCreate(ts, pid, None, _hex(f.get("a1")) or 0))

    @staticmethod
    def _items(ev: AuditEvent) -> list:
        items = [nl.parse_fields(r.text) for r in ev.records if r.type == nl.AUDIT_PATH]
        items.sort(key=lambda d: _int(d.get("item")) or 0)
        return items

    @staticmethod
    def _cwd(ev: AuditEvent) -> Optional[str]:
        for r in ev.records:
            if r.type == nl.AUDIT_CWD:
                return _text(nl.decode_untrusted(nl.parse_fields(r.text).get("cwd")))
        return None

    def _exec(self, ev: AuditEvent, f: dict, pid: int, ts: int) -> None:
        image = _text(nl.decode_untrusted(f.get("exe")))
        execve = [r for r in ev.records if r.type == nl.AUDIT_EXECVE]
        # no EXECVE record (lost to the backlog, as any record of an event can be): argv is
        # unknown, not empty (CommandLine from /proc while it shows this image, else '-')
        argv = _argv(execve) if execve else None
        start_ticks = end_data = None
        snaps = self._snaps.get(pid)
        if snaps:
            # the proc connector's snapshot of this exec (execs of one pid come in order on
            # both channels): exact time, start, and end_code if it shows this very image
            # (its comm is this exec's)
            snap_ts, start_ticks, end, comm, ns = snaps.pop(0)
            if not snaps:
                del self._snaps[pid]
            same_image = comm is not None and comm == nl.decode_untrusted(f.get("comm"))
            if end and same_image:
                end_data = end
            if not same_image:
                ns = None
            if abs(snap_ts - ts) < 1_000_000_000:
                ts = snap_ts
                self._raise_floor(pid, ts)
            self._stats["exec_paired"] += 1
            self._out_audit(ProcessExec(ts_ns=ts, pid=pid, ppid=_int(f.get("ppid")), tid=pid,
                                  start_ticks=start_ticks, image=image, argv=argv,
                                  cwd=self._cwd(ev), uid=_int(f.get("uid")),
                                  auid=_int(f.get("auid")), sessionid=_int(f.get("ses")),
                                  end_data=end_data, mnt_ns=ns[0] if ns else None,
                                  pid_ns=ns[1] if ns else None))
            return
        self._stats["exec_unpaired"] += 1
        start_ticks = self._starts.get(pid)
        st = _proc_stat(pid)
        if st is not None:
            _ppid, ticks, end = st
            boot_epoch = clock_offset(time.CLOCK_BOOTTIME)
            if ticks * CLK_NS + boot_epoch <= ts + 25_000_000:     # started before the exec
                start_ticks = ticks
                try:
                    cur = os.readlink(f"/proc/{pid}/exe")
                except OSError:
                    cur = None
                if end and cur is not None and image is not None and (
                        cur == image or cur == image + " (deleted)"):
                    end_data = end
        self._out_audit(ProcessExec(ts_ns=ts, pid=pid, ppid=_int(f.get("ppid")), tid=pid,
                              start_ticks=start_ticks, image=image, argv=argv,
                              cwd=self._cwd(ev), uid=_int(f.get("uid")),
                              auid=_int(f.get("auid")), sessionid=_int(f.get("ses")),
                              end_data=end_data))

    def _sock_info(self, pid: int, fd: Optional[int]) -> Optional[_SockInfo]:
        how = self.options.get("socket_lookup", "pidfd")
        if fd is None or fd < 0 or how == "none":
            return None
        info = _sock_info_pidfd(pid, fd) if how == "pidfd" else None
        return info if info is not None else _sock_info_proc(pid, fd)

    def _net(self, ev: AuditEvent, f: dict, pid: int, ts: int, name: str, success: bool,
             exit_code: Optional[int]) -> None:
        saddr = None
        for r in ev.records:
            if r.type == nl.AUDIT_SOCKADDR:
                saddr = _decode_sockaddr(nl.parse_fields(r.text).get("saddr"))
        if name == "connect":
            if saddr is None or saddr[0] not in (AF_INET, AF_INET6):
                return
            fam, ip, port = saddr
            fd = _s32(f.get("a0"))
            proto = self._socks.get((pid, fd))
            if proto is None:
                info = self._sock_info(pid, fd)
                if info is not None and info.family == fam and info.peer is not None \
                        and _same_ip(info.peer[0], ip) and info.peer[1] == port:
                    if info.protocol is None:
                        return                      # not TCP/UDP (e.g. ICMP "ping" socket)
                    proto = info.protocol
            ok = success or exit_code == -EINPROGRESS  # a failed connect is not reported
            obs = NetworkConnect(ts, pid, proto, True, ip, port, None, None, fam == AF_INET6) \
                if ok else None
            if proto in ("tcp", None) and self._trace is not None:
                # its tracefs connect (source address and port) may still be on its way: wait
                # for it briefly; a failed connect still consumes its own
                self._tcp_wait.append([time.monotonic() + 0.1, pid, ip, port, ts, obs])
                self._settle_tcp()
            elif obs is not None:
                self._finish_connect(obs, None)
            return
        # accept / accept4: SOCKADDR is the remote peer (absent when addr == NULL)
        if not success:
            return
        fam = peer = local = None
        if saddr is not None:
            fam = saddr[0]
            if fam not in (AF_INET, AF_INET6):
                return
            peer = (saddr[1], saddr[2])
        info = self._sock_info(pid, exit_code)
        if info is not None and (fam is None or info.family == fam):
            if info.family not in (AF_INET, AF_INET6) or info.protocol != "tcp":
                return                                  # unix / SCTP / ... accept
            if peer is None and info.peer is not None:
                fam, peer, local = info.family, info.peer, info.local
            elif info.peer is not None and peer is not None and _same_ip(info.peer[0], peer[0]) \
                    and info.peer[1] == peer[1]:
                local = info.local
        if peer is None:
            return
        if local is None:
            lst = self._sock_info(pid, _s32(f.get("a0")))
            if lst is not None and lst.family == fam and lst.local:
                local = lst.local
        if local is None:
            local = ("0.0.0.0" if fam == AF_INET else "::", 0)
        self._out_audit(NetworkConnect(ts, pid, "tcp", False, local[0], local[1], peer[0], peer[1],
                                 fam == AF_INET6))

    def _open(self, ev: AuditEvent, f: dict, pid: int, ts: int, name: str) -> None:
        dirfd = _s32(f.get("a0")) if name in ("openat", "openat2") else AT_FDCWD
        if name == "openat":
            flags = _hex(f.get("a2"))
        elif name == "open":
            flags = _hex(f.get("a1"))
        elif name == "creat":
            flags = O_CREAT | O_WRONLY
        else:
            flags = None
            for r in ev.records:
                if r.type == nl.AUDIT_OPENAT2:
                    flags = _hex((nl.parse_fields(r.text).get("oflag") or "").replace("0x", ""))
        items = self._items(ev)
        created = False
        for item in items:
            if item.get("nametype") == "CREATE" and not _is_dir(item):
                created = True
                self._out_audit(FileCreate(ts, pid, self._resolve(item, ev, f, pid, dirfd, items)))
        if created:
            return
        if flags is not None and flags & O_ACCMODE == O_WRONLY:
            return
        for item in items:
            mode = _octal(item.get("mode"))
            if mode is not None and stat.S_ISBLK(mode) and item.get("nametype") == "NORMAL":
                ident = (_dev(item.get("dev")), _int(item.get("inode")))
                device = self._watch_ids.get(ident) or self._resolve(item, ev, f, pid, dirfd,
                                                                     items)
                self._out_audit(RawAccessRead(ts, pid, device))
                return

    def _rename(self, ev: AuditEvent, f: dict, pid: int, ts: int, name: str) -> None:
        items = self._items(ev)
        newdirfd = _s32(f.get("a2")) if name in ("renameat", "renameat2") else AT_FDCWD
        children = [i for i in items if i.get("nametype") in ("CREATE", "DELETE")]
        target = next((i for i in children if i.get("nametype") == "CREATE"), None)
        if target is None and len(children) >= 2:
            target = children[-1]                      # overwritten target (DELETE item)
        source = children[0] if children else None
        if target is None or (source is not None and _is_dir(source)) or _is_dir(target):
            return
        self._out_audit(FileCreate(ts, pid, self._resolve(target, ev, f, pid, newdirfd, items)))

    # paths -----------------------------------------------------------------------------------

    def _remember_dir(self, parents: list, path: str) -> None:
        """Cache directory identity -> path when the event has one unambiguous parent."""
        idents = {(_dev(p.get("dev")), _int(p.get("inode"))) for p in parents}
        if len(idents) != 1:
            return
        ident = idents.pop()
        if None in ident:
            return
        self._dircache[ident] = os.path.dirname(path)
        self._dircache.move_to_end(ident)
        if len(self._dircache) > 4096:
            self._dircache.popitem(last=False)

    def _resolve(self, item: dict, ev: AuditEvent, f: dict, pid: int, dirfd: Optional[int],
                 items: Optional[list] = None) -> str:
        """Absolute path of a PATH item's name (rules in the module doc)."""
        name = _text(nl.decode_untrusted(item.get("name"))) or ""
        items = items if items is not None else self._items(ev)
        parents = [i for i in items if i.get("nametype") == "PARENT"]
        if not name:
            return "+"                                   # name=(null): nothing to resolve
        if name.startswith("/"):
            path = _norm(name)
        elif dirfd is None or dirfd == AT_FDCWD:
            cwd = self._cwd(ev)
            if not cwd or not cwd.startswith("/"):
                return "+" + name
            path = _norm(os.path.join(cwd, name))
        else:
            found = self._resolve_at(name, dirfd, pid, parents)
            if found is None:
                return "+" + name
            path = found
        self._remember_dir(parents, path)
        return path

    def _resolve_at(self, name: str, dirfd: int, pid: int, parents: list) -> Optional[str]:
        """``name`` relative to ``dirfd`` of ``pid``: the fd's directory if the process still
        has it and its identity matches a PARENT item, else the directory cache."""
        sub = os.path.dirname(name)
        idents = {(_dev(p.get("dev")), _int(p.get("inode"))) for p in parents}
        idents.discard((None, None))
        try:
            base = os.readlink(f"/proc/{pid}/fd/{dirfd}")
            s = os.stat(os.path.join(base, sub) if sub else base)
            if base.startswith("/") and (not idents or (s.st_dev, s.st_ino) in idents):
                return _norm(os.path.join(base, name))
        except OSError:
            pass
        hits = {self._dircache[i] for i in idents if i in self._dircache}
        if len(hits) == 1:
            return _norm(os.path.join(hits.pop(), os.path.basename(name)))
        return None
