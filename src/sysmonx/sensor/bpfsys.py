"""The few ``bpf(2)`` commands the sensor's self-protection needs, by raw syscall (ctypes):
freeze a map, and name the map, program or link behind a file descriptor or an id.

Layouts: ``union bpf_attr`` and ``struct bpf_prog_info`` / ``bpf_map_info`` /
``bpf_link_info`` of include/uapi/linux/bpf.h (stable UAPI: fields are only ever appended).
Every function raises :class:`OSError` with the kernel's errno.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import struct
from typing import Iterator, Optional

__all__ = ["BPF_COMMANDS", "PROG_TYPES", "map_freeze", "prog_info", "map_info", "fdinfo",
           "prog_fd_by_id", "prog_info_by_id", "prog_ids_after", "prog_info_in",
           "prog_fds_of", "bpf_fds"]

#: ``enum bpf_cmd`` values -> names (as Sysmon for Linux's BpfCommand field spells them).
BPF_COMMANDS = {
    0: "BPF_MAP_CREATE", 1: "BPF_MAP_LOOKUP_ELEM", 2: "BPF_MAP_UPDATE_ELEM",
    3: "BPF_MAP_DELETE_ELEM", 4: "BPF_MAP_GET_NEXT_KEY", 5: "BPF_PROG_LOAD", 6: "BPF_OBJ_PIN",
    7: "BPF_OBJ_GET", 8: "BPF_PROG_ATTACH", 9: "BPF_PROG_DETACH", 10: "BPF_PROG_TEST_RUN",
    11: "BPF_PROG_GET_NEXT_ID", 12: "BPF_MAP_GET_NEXT_ID", 13: "BPF_PROG_GET_FD_BY_ID",
    14: "BPF_MAP_GET_FD_BY_ID", 15: "BPF_OBJ_GET_INFO_BY_FD", 16: "BPF_PROG_QUERY",
    17: "BPF_RAW_TRACEPOINT_OPEN", 18: "BPF_BTF_LOAD", 19: "BPF_BTF_GET_FD_BY_ID",
    20: "BPF_TASK_FD_QUERY", 21: "BPF_MAP_LOOKUP_AND_DELETE_ELEM", 22: "BPF_MAP_FREEZE",
    23: "BPF_BTF_GET_NEXT_ID", 24: "BPF_MAP_LOOKUP_BATCH", 25: "BPF_MAP_LOOKUP_AND_DELETE_BATCH",
    26: "BPF_MAP_UPDATE_BATCH", 27: "BPF_MAP_DELETE_BATCH", 28: "BPF_LINK_CREATE",
    29: "BPF_LINK_UPDATE", 30: "BPF_LINK_GET_FD_BY_ID", 31: "BPF_LINK_GET_NEXT_ID",
    32: "BPF_ENABLE_STATS", 33: "BPF_ITER_CREATE", 34: "BPF_LINK_DETACH", 35: "BPF_PROG_BIND_MAP",
}

#: ``enum bpf_prog_type`` values -> names (BpfProgramType).
PROG_TYPES = {
    0: "BPF_PROG_TYPE_UNSPEC", 1: "BPF_PROG_TYPE_SOCKET_FILTER", 2: "BPF_PROG_TYPE_KPROBE",
    3: "BPF_PROG_TYPE_SCHED_CLS", 4: "BPF_PROG_TYPE_SCHED_ACT", 5: "BPF_PROG_TYPE_TRACEPOINT",
    6: "BPF_PROG_TYPE_XDP", 7: "BPF_PROG_TYPE_PERF_EVENT", 8: "BPF_PROG_TYPE_CGROUP_SKB",
    9: "BPF_PROG_TYPE_CGROUP_SOCK", 10: "BPF_PROG_TYPE_LWT_IN", 11: "BPF_PROG_TYPE_LWT_OUT",
    12: "BPF_PROG_TYPE_LWT_XMIT", 13: "BPF_PROG_TYPE_SOCK_OPS", 14: "BPF_PROG_TYPE_SK_SKB",
    15: "BPF_PROG_TYPE_CGROUP_DEVICE", 16: "BPF_PROG_TYPE_SK_MSG",
    17: "BPF_PROG_TYPE_RAW_TRACEPOINT", 18: "BPF_PROG_TYPE_CGROUP_SOCK_ADDR",
    19: "BPF_PROG_TYPE_LWT_SEG6LOCAL", 20: "BPF_PROG_TYPE_LIRC_MODE2",
    21: "BPF_PROG_TYPE_SK_REUSEPORT", 22: "BPF_PROG_TYPE_FLOW_DISSECTOR",
    23: "BPF_PROG_TYPE_CGROUP_SYSCTL", 24: "BPF_PROG_TYPE_RAW_TRACEPOINT_WRITABLE",
    25: "BPF_PROG_TYPE_CGROUP_SOCKOPT", 26: "BPF_PROG_TYPE_TRACING",
    27: "BPF_PROG_TYPE_STRUCT_OPS", 28: "BPF_PROG_TYPE_EXT", 29: "BPF_PROG_TYPE_LSM",
    30: "BPF_PROG_TYPE_SK_LOOKUP", 31: "BPF_PROG_TYPE_SYSCALL", 32: "BPF_PROG_TYPE_NETFILTER",
}

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "i686": 357, "armv7l": 386, "riscv64": 280,
            "ppc64le": 361, "s390x": 351}
_ATTR_SIZE = 144
_libc: Optional[ctypes.CDLL] = None


def _bpf(cmd: int, attr: bytearray) -> int:
    global _libc
    nr = _SYS_BPF.get(platform.machine())
    if nr is None:
        raise OSError(38, f"bpf(2) syscall number unknown on {platform.machine()}")
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    buf = (ctypes.c_char * len(attr)).from_buffer(attr)
    rc = _libc.syscall(ctypes.c_long(nr), ctypes.c_long(cmd), buf, ctypes.c_uint(len(attr)))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf({BPF_COMMANDS.get(cmd, cmd)}): {os.strerror(err)}")
    return int(rc)


def map_freeze(fd: int) -> None:
    """``BPF_MAP_FREEZE``: from now on no ``bpf()`` caller (this process included) can change
    the map; BPF programs still can. Raises OSError (EBUSY: a writable mmap exists; ENOTSUPP /
    EINVAL: the map type cannot be frozen, e.g. a ring buffer)."""
    attr = bytearray(_ATTR_SIZE)
    struct.pack_into("<I", attr, 0, fd)
    _bpf(22, attr)


def _info(fd: int, size: int) -> bytes:
    info = bytearray(size)
    ibuf = (ctypes.c_char * size).from_buffer(info)
    attr = bytearray(_ATTR_SIZE)
    struct.pack_into("<IIQ", attr, 0, fd, size, ctypes.addressof(ibuf))
    _bpf(15, attr)
    return bytes(info)


def prog_info(fd: int) -> dict:
    """``BPF_OBJ_GET_INFO_BY_FD`` on a program fd: ``{"type": int, "type_name": str, "id": int,
    "name": str}``."""
    raw = _info(fd, 232)
    ptype, pid = struct.unpack_from("<II", raw, 0)
    name = raw[64:80].split(b"\0", 1)[0].decode("ascii", "replace")
    return {"type": ptype, "type_name": PROG_TYPES.get(ptype, str(ptype)), "id": pid,
            "name": name}


def map_info(fd: int) -> dict:
    """``BPF_OBJ_GET_INFO_BY_FD`` on a map fd: ``{"type": int, "id": int, "name": str,
    "frozen": None}`` (the freeze state is in :func:`fdinfo`)."""
    raw = _info(fd, 88)
    mtype, mid = struct.unpack_from("<II", raw, 0)
    name = raw[24:40].split(b"\0", 1)[0].decode("ascii", "replace")
    return {"type": mtype, "id": mid, "name": name, "frozen": None}


def prog_fd_by_id(prog_id: int) -> int:
    """``BPF_PROG_GET_FD_BY_ID``: a new fd (the caller closes it). Raises OSError (ENOENT)."""
    attr = bytearray(_ATTR_SIZE)
    struct.pack_into("<I", attr, 0, prog_id)
    return _bpf(13, attr)


def prog_ids_after(start_id: int, limit: int = 4096) -> list:
    """Ids of the loaded programs above ``start_id``, ascending (``BPF_PROG_GET_NEXT_ID``),
    at most ``limit``; ``[]`` when there are none or the call is refused. Program ids are
    allocated in increasing order (cyclic idr), so these are the programs loaded since the
    highest id seen was ``start_id``."""
    out: list = []
    cur = start_id
    while len(out) < limit:
        attr = bytearray(_ATTR_SIZE)
        struct.pack_into("<I", attr, 0, cur)
        try:
            _bpf(11, attr)
        except OSError:
            break  # ENOENT: no higher id
        cur = struct.unpack_from("<I", attr, 4)[0]
        out.append(cur)
    return out


def prog_info_by_id(prog_id: int) -> Optional[dict]:
    """:func:`prog_info` of the program with this id, ``None`` if it is gone."""
    try:
        fd = prog_fd_by_id(prog_id)
    except OSError:
        return None
    try:
        return prog_info(fd)
    except OSError:
        return None
    finally:
        os.close(fd)


_SYS_PIDFD_GETFD = 438  # the same number on every architecture (Linux 5.6)


def prog_info_in(pid: int, fd: int) -> Optional[dict]:
    """:func:`prog_info` of the program behind file descriptor ``fd`` of process ``pid``, read
    through a copy of that descriptor (``pidfd_open`` + ``pidfd_getfd``, Linux 5.6; needs
    ptrace access to ``pid``: root's); ``None`` when the process or the descriptor is gone,
    it is not a program, or the calls are refused. Unlike :func:`prog_info_by_id` this makes
    no ``BPF_PROG_GET_FD_BY_ID``, so another sensor tracing ``bpf()`` sees no open by id."""
    global _libc
    try:
        pidfd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            _libc.syscall.restype = ctypes.c_long
        dup = _libc.syscall(ctypes.c_long(_SYS_PIDFD_GETFD), ctypes.c_int(pidfd),
                            ctypes.c_int(fd), ctypes.c_uint(0))
        if dup < 0:
            return None
        try:
            return prog_info(int(dup))
        except OSError:
            return None
        finally:
            os.close(int(dup))
    finally:
        os.close(pidfd)


def bpf_fds(pid: int, kind: str = "") -> Iterator[tuple[int, str, dict]]:
    """The BPF objects process ``pid`` holds: ``(fd, kind, fdinfo)`` per descriptor whose
    ``/proc/PID/fd`` link is ``anon_inode:bpf-prog``, ``anon_inode:bpf-map`` or
    ``anon_inode:bpf_link`` (``kind`` that name without ``anon_inode:``; only that kind when
    given), with :func:`fdinfo`'s fields; a descriptor closed while it is read is skipped.

    Raises:
        OSError: ``/proc/PID/fd`` cannot be listed (the process is gone, or no descriptor is
            left to list it with), on the first step of the iteration."""
    base = f"/proc/{pid}/fd"
    for fd in os.listdir(base):
        try:
            target = os.readlink(f"{base}/{fd}")
        except OSError:
            continue
        if not target.startswith("anon_inode:bpf"):
            continue
        name = target[len("anon_inode:"):]
        if kind and name != kind:
            continue
        yield int(fd), name, fdinfo(pid, int(fd))


def prog_fds_of(pid: int, prog_id: int) -> list:
    """The file descriptors of process ``pid`` that hold the program ``prog_id`` (its
    ``/proc/PID/fdinfo``: ``prog_id`` of a program fd, not of a link's), ``[]`` when none or the
    process is gone."""
    try:
        return [fd for fd, _, info in bpf_fds(pid, "bpf-prog")
                if info.get("prog_id") == str(prog_id)]
    except OSError:
        return []


def fdinfo(pid: int, fd: int) -> dict:
    """``/proc/PID/fdinfo/FD`` as ``{key: value text}`` (``map_id``, ``prog_id``, ``frozen``,
    ``link_type`` ...); ``{}`` when it cannot be read (the fd is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii", errors="replace") as f:
            for line in f:
                k, sep, v = line.partition(":")
                if sep:
                    out[k.strip()] = v.strip()
    except OSError:
        pass
    return out
