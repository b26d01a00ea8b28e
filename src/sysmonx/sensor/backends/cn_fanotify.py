"""fanotify through ctypes for the tier-C backend (spec linux-sensing.md §2.3).

One notification group, ``fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK |
FAN_REPORT_DFID_NAME [| FAN_REPORT_PIDFD])``, with a ``FAN_MARK_FILESYSTEM`` mark on every
mounted local filesystem that supports file handles, for:

* ``FAN_OPEN_EXEC`` — a race-free image path for an exec'd pid (paired with the cn_proc exec
  by :class:`ExecImages`);
* ``FAN_CREATE`` / ``FAN_MOVED_TO`` — FileCreate of a regular file (directory events are not
  reported, and the backend skips non-regular files with ``lstat``);
* ``FAN_DELETE`` — FileDelete;
* ``FAN_Q_OVERFLOW`` — the queue (16384 events unless ``unlimited_queue``) overflowed: events
  were lost, and fanotify has no counter of how many.

Paths come from the directory file handle (``open_by_handle_at(mount_fd, handle, O_PATH)`` +
``readlink /proc/self/fd/N``) plus the entry name. Resolving costs three syscalls, so resolved
directories are cached per handle; the mark also asks for ``FAN_ONDIR`` so that a directory
rename (``FAN_MOVED_TO|FAN_ONDIR``) is seen, and any directory rename empties the cache (a rename
of an ancestor changes every path below it). Directory events themselves are not reported. When
a directory is already gone (``ESTALE``) the cached path is used; failing that the path is
``+<name>`` (Sysmon for Linux marks paths it could not fully resolve with a leading ``+``, spec
sysmon-semantics.md §5.3).

Closing the group fd removes every mark: that is all :meth:`FanotifyWatch.close` has to restore.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import stat as stat_mod
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Optional

__all__ = ["FanotifyWatch", "FanEvent", "ExecImages", "elf_info", "fanotify_available",
           "FAN_OPEN_EXEC", "FAN_CREATE", "FAN_DELETE", "FAN_MOVED_TO", "FAN_Q_OVERFLOW",
           "FAN_ONDIR", "local_mounts"]

# include/uapi/linux/fanotify.h
FAN_MOVED_TO = 0x00000080
FAN_CREATE = 0x00000100
FAN_DELETE = 0x00000200
FAN_OPEN_EXEC = 0x00001000
FAN_Q_OVERFLOW = 0x00004000
FAN_RENAME = 0x10000000
FAN_ONDIR = 0x40000000

FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_CLASS_NOTIF = 0x0
FAN_UNLIMITED_QUEUE = 0x10
FAN_REPORT_PIDFD = 0x80
FAN_REPORT_DIR_FID = 0x400
FAN_REPORT_NAME = 0x800
FAN_REPORT_DFID_NAME = FAN_REPORT_DIR_FID | FAN_REPORT_NAME

FAN_MARK_ADD = 0x1
FAN_MARK_FILESYSTEM = 0x100

FAN_EVENT_INFO_TYPE_FID = 1
FAN_EVENT_INFO_TYPE_DFID_NAME = 2
FAN_EVENT_INFO_TYPE_DFID = 3
FAN_EVENT_INFO_TYPE_PIDFD = 4

FAN_NOPIDFD = -1
FAN_METADATA_VERSION = 3

_META = struct.Struct("=IBBHQii")  # event_len, vers, reserved, metadata_len, mask, fd, pid
_INFO_HDR = struct.Struct("=BBH")  # info_type, pad, len
_FH_HDR = struct.Struct("=Ii")  # handle_bytes, handle_type

_O_PATH = getattr(os, "O_PATH", 0o10000000)

# pseudo and network filesystems never marked (network: resolving handles can block)
_SKIP_FSTYPES = frozenset({
    "proc", "sysfs", "devpts", "devtmpfs", "cgroup", "cgroup2", "tracefs", "debugfs",
    "securityfs", "bpf", "mqueue", "hugetlbfs", "pstore", "configfs", "fusectl", "binfmt_misc",
    "autofs", "nsfs", "efivarfs", "rpc_pipefs", "nfsd", "selinuxfs", "ramfs", "rootfs",
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "afs", "ncpfs",
    "fuse.sshfs", "fuse.glusterfs", "fuse.rclone", "fuse.s3fs", "lustre", "gpfs", "ocfs2",
})

_libc = None


def _lib():
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        lib.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
        lib.fanotify_init.restype = ctypes.c_int
        lib.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int,
                                      ctypes.c_char_p]
        lib.fanotify_mark.restype = ctypes.c_int
        lib.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.open_by_handle_at.restype = ctypes.c_int
        lib.statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
        lib.statfs.restype = ctypes.c_int
        _libc = lib
    return _libc


def _oserror(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def fanotify_available() -> Optional[str]:
    """``None`` if a FID-reporting fanotify group can be created here, else the reason.

    Creates and closes a group (no marks): no lasting side effect.
    """
    try:
        lib = _lib()
    except (OSError, AttributeError) as exc:
        return f"libc without fanotify: {exc}"
    fd = lib.fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME,
                           os.O_RDONLY)
    if fd < 0:
        return f"fanotify_init(FAN_REPORT_DFID_NAME): {os.strerror(ctypes.get_errno())}"
    os.close(fd)
    return None


def _fsid(path: str) -> Optional[bytes]:
    """The 8 raw ``f_fsid`` bytes of ``statfs(path)`` (the same bytes fanotify reports).

    ``os.statvfs().f_fsid`` cannot be used: glibc folds the two 32-bit words with sign
    extension. Layout of ``struct statfs`` on 64-bit Linux: 7 longs/u64 then ``f_fsid``.
    """
    buf = ctypes.create_string_buffer(256)
    if _lib().statfs(os.fsencode(path), buf) != 0:
        return None
    return buf.raw[56:64]


def _unescape_mount(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def local_mounts() -> list:
    """Mounted filesystems worth a fanotify filesystem mark: ``[(mountpoint, fstype)]``, one
    per filesystem (preferring a mount of the filesystem's root), skipping pseudo and network
    filesystems and mounts hidden under another mount."""
    best: dict = {}
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    for line in lines:
        left, _, right = line.partition(" - ")
        parts = left.split()
        rparts = right.split()
        if len(parts) < 5 or not rparts:
            continue
        dev, fstype = parts[2], rparts[0]
        root, mnt = _unescape_mount(parts[3]), _unescape_mount(parts[4])
        if fstype in _SKIP_FSTYPES or fstype.startswith("fuse"):
            continue
        try:
            st = os.stat(mnt)
        except OSError:
            continue
        major, _, minor = dev.partition(":")
        try:
            if st.st_dev != os.makedev(int(major), int(minor)):
                continue  # covered by a later mount on the same path
        except ValueError:
            continue
        prev = best.get(dev)
        if prev is None or (prev[2] != "/" and root == "/"):
            best[dev] = (mnt, fstype, root)
    return [(mnt, fstype) for mnt, fstype, _ in best.values()]


@dataclass(slots=True)
class FanEvent:
    """One decoded fanotify event.

    ``mask`` the FAN_* bits; ``pid`` the acting thread group (0 for overflow); ``path`` the full
    path (``+name`` when the directory could not be resolved; ``None`` for overflow);
    ``is_dir`` from ``FAN_ONDIR``; ``pidfd_gone`` when FAN_REPORT_PIDFD said the process had
    already exited when the event was read; ``ts_ns`` the read time (fanotify has no stamp).
    """

    mask: int
    pid: int
    path: Optional[str]
    ts_ns: int
    is_dir: bool = False
    pidfd_gone: bool = False
    dir_fd_path: Optional[str] = None
    name: Optional[str] = None


class FanotifyWatch:
    """A fanotify group with filesystem marks; :meth:`read` returns decoded :class:`FanEvent`.

    Args:
        mask: FAN_* event bits to mark (default: OPEN_EXEC, CREATE, DELETE, MOVED_TO).
        mounts: mount points to mark (default :func:`local_mounts`); a filesystem that refuses
            a FID mark (no file handles, ``EXDEV``, ``ENODEV``) is skipped and listed in
            :attr:`skipped`.
        pidfd: ask for FAN_REPORT_PIDFD (kernel 5.15+; silently dropped when unsupported).
        unlimited_queue: FAN_UNLIMITED_QUEUE (no overflow, unbounded kernel memory).

    Raises:
        OSError: ``fanotify_init`` failed, or no filesystem could be marked.
    """

    def __init__(self, mask: int = FAN_OPEN_EXEC | FAN_CREATE | FAN_DELETE | FAN_MOVED_TO,
                 mounts: Optional[Iterable[str]] = None, pidfd: bool = True,
                 unlimited_queue: bool = False) -> None:
        lib = _lib()
        flags = FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME
        if unlimited_queue:
            flags |= FAN_UNLIMITED_QUEUE
        fd = -1
        self.pidfd = False
        if pidfd:
            fd = lib.fanotify_init(flags | FAN_REPORT_PIDFD, os.O_RDONLY | os.O_CLOEXEC)
            self.pidfd = fd >= 0
        if fd < 0:
            fd = lib.fanotify_init(flags, os.O_RDONLY | os.O_CLOEXEC)
        if fd < 0:
            raise _oserror("fanotify_init")
        self.fd = fd
        self.mask = mask
        self.marked: list = []
        self.skipped: list = []
        self._mount_fds: dict = {}
        self._dir_cache: OrderedDict = OrderedDict()
        self._buf = bytearray(256 * 1024)
        self.dir_cache_size = 16384
        self.stats = {"events": 0, "overflows": 0, "unresolved": 0, "dir_renames": 0,
                      "parse_errors": 0}
        try:
            if mounts is None:
                targets = [m for m, _ in local_mounts()]
            else:
                targets = list(mounts)
            for mnt in targets:
                self._mark(mnt)
            if not self.marked:
                raise OSError(errno.ENODEV, "fanotify: no filesystem could be marked: "
                              + "; ".join(f"{m} ({r})" for m, r in self.skipped))
        except BaseException:
            self.close()
            raise

    def _mark(self, mnt: str) -> None:
        fsid = _fsid(mnt)
        if fsid is None or fsid == b"\0" * 8:
            self.skipped.append((mnt, "no fsid"))
            return
        if fsid in self._mount_fds:
            return  # same filesystem mounted twice
        try:
            mfd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            self.skipped.append((mnt, exc.strerror))
            return
        rc = _lib().fanotify_mark(self.fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM,
                                  self.mask | FAN_ONDIR, -1, os.fsencode(mnt))
        if rc != 0:
            self.skipped.append((mnt, os.strerror(ctypes.get_errno())))
            os.close(mfd)
            return
        self._mount_fds[fsid] = mfd
        self.marked.append(mnt)

    def fileno(self) -> int:
        """The group fd (for ``poll``)."""
        return self.fd

    def close(self) -> None:
        """Close the group (removes every mark) and the mount fds. Idempotent."""
        fd, self.fd = getattr(self, "fd", -1), -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
        for mfd in list(getattr(self, "_mount_fds", {}).values()):
            try:
                os.close(mfd)
            except OSError:
                pass
        self._mount_fds = {}

    # ---------------------------------------------------------------------------------------
    def _resolve_dir(self, fsid: bytes, handle: bytes) -> Optional[str]:
        key = fsid + handle
        cached = self._dir_cache.get(key)
        if cached is not None:
            return cached
        mfd = self._mount_fds.get(fsid)
        if mfd is None:
            return self._dir_cache.get(key)
        dfd = _lib().open_by_handle_at(mfd, handle, _O_PATH | os.O_CLOEXEC)
        if dfd < 0:
            return None
        try:
            path = os.readlink(f"/proc/self/fd/{dfd}")
        except OSError:
            path = None
        finally:
            os.close(dfd)
        if path is None:
            return None
        if path.endswith(" (deleted)"):
            path = path[:-10]
        self._dir_cache[key] = path
        if len(self._dir_cache) > self.dir_cache_size:
            self._dir_cache.popitem(last=False)
        return path

    def _close_pidfds(self, data: bytes, pos: int, stop: int) -> None:
        while pos + _INFO_HDR.size <= stop:
            itype, _pad, ilen = _INFO_HDR.unpack_from(data, pos)
            if ilen < _INFO_HDR.size:
                return
            if itype == FAN_EVENT_INFO_TYPE_PIDFD:
                (pidfd,) = struct.unpack_from("=i", data, pos + 4)
                if pidfd >= 0:
                    os.close(pidfd)
            pos += ilen

    def is_regular(self, path: str) -> Optional[bool]:
        """Whether ``path`` is a regular file now (``None``: it no longer exists)."""
        try:
            return stat_mod.S_ISREG(os.lstat(path).st_mode)
        except OSError:
            return None

    def read(self, max_bytes: Optional[int] = None) -> list:
        """Read and decode every queued event (non-blocking; ``[]`` when none).

        Returns:
            a list of :class:`FanEvent` in queue order. pidfds are closed here.
        """
        if self.fd < 0:
            return []
        out: list = []
        view = memoryview(self._buf)
        while True:
            try:
                n = os.readv(self.fd, [view[:max_bytes] if max_bytes else view])
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break
                raise
            if n <= 0:
                break
            now = time.time_ns()
            self._decode(bytes(view[:n]), now, out)
            if n < len(self._buf) // 2:
                break
        return out

    def _decode(self, data: bytes, now: int, out: list) -> None:
        off = 0
        end = len(data)
        while off + _META.size <= end:
            ev_len, vers, _r, meta_len, mask, fd, pid = _META.unpack_from(data, off)
            if ev_len < _META.size or off + ev_len > end or vers != FAN_METADATA_VERSION:
                self.stats["parse_errors"] += 1
                return
            if fd >= 0:  # never expected in FID mode; do not leak it
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.stats["events"] += 1
            if mask & FAN_Q_OVERFLOW:
                self.stats["overflows"] += 1
                self._dir_cache.clear()  # a lost directory rename would leave it stale
                out.append(FanEvent(mask, 0, None, now))
                off += ev_len
                continue
            if mask & FAN_ONDIR:
                if mask & FAN_MOVED_TO:
                    self.stats["dir_renames"] += 1
                    self._dir_cache.clear()
                self._close_pidfds(data, off + meta_len, off + ev_len)
                off += ev_len
                continue
            path = None
            dir_path = None
            name = None
            gone = False
            pos = off + meta_len
            stop = off + ev_len
            while pos + _INFO_HDR.size <= stop:
                itype, _pad, ilen = _INFO_HDR.unpack_from(data, pos)
                if ilen < _INFO_HDR.size or pos + ilen > stop:
                    self.stats["parse_errors"] += 1
                    break
                if itype in (FAN_EVENT_INFO_TYPE_DFID_NAME, FAN_EVENT_INFO_TYPE_DFID,
                             FAN_EVENT_INFO_TYPE_FID) and path is None:
                    fsid = data[pos + 4:pos + 12]
                    hbytes, _htype = _FH_HDR.unpack_from(data, pos + 12)
                    hend = pos + 20 + hbytes
                    handle = data[pos + 12:hend]
                    if itype == FAN_EVENT_INFO_TYPE_DFID_NAME:
                        nul = data.find(b"\0", hend, pos + ilen)
                        raw_name = data[hend:nul if nul >= 0 else pos + ilen]
                        name = os.fsdecode(raw_name)
                    dir_path = self._resolve_dir(fsid, handle)
                    if dir_path is None:
                        self.stats["unresolved"] += 1
                        path = "+" + (name or "")
                    elif name and name != ".":
                        path = dir_path.rstrip("/") + "/" + name
                    else:
                        path = dir_path
                elif itype == FAN_EVENT_INFO_TYPE_PIDFD:
                    (pidfd,) = struct.unpack_from("=i", data, pos + 4)
                    if pidfd >= 0:
                        os.close(pidfd)
                    elif pidfd == FAN_NOPIDFD:
                        gone = True
                pos += ilen
            out.append(FanEvent(mask, pid, path, now, bool(mask & FAN_ONDIR), gone, dir_path, name))
            off += ev_len


# --------------------------------------------------------------------------------------------
# pairing FAN_OPEN_EXEC with exec events
# --------------------------------------------------------------------------------------------

_ELF_MAGIC = b"\x7fELF"
_PT_INTERP = 3
_LDSO_RE = re.compile(r"^ld(-[\w.-]+)?\.so(\.\d+)*$|^ld-linux.*|^ld-musl.*")


def elf_info(path: str) -> tuple:
    """Classify an executable: ``(kind, interpreter)`` with kind ``"elf"``, ``"script"``
    (``#!``), ``"other"`` (binfmt_misc formats) or ``"unknown"`` (unreadable), and the ELF
    ``PT_INTERP`` path (``None`` for static binaries and non-ELF). Reads at most a few KB."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
            if head[:2] == b"#!":
                return "script", None
            if head[:4] != _ELF_MAGIC or len(head) < 52:
                return "other", None
            is64 = head[4] == 2
            endian = "<" if head[5] == 1 else ">"
            if is64:
                phoff, = struct.unpack_from(endian + "Q", head, 32)
                phentsize, phnum = struct.unpack_from(endian + "HH", head, 54)
            else:
                phoff, = struct.unpack_from(endian + "I", head, 28)
                phentsize, phnum = struct.unpack_from(endian + "HH", head, 42)
            if not phnum or phnum > 256 or phentsize < (56 if is64 else 32):
                return "elf", None
            fh.seek(phoff)
            table = fh.read(phentsize * phnum)
            for i in range(min(phnum, len(table) // phentsize)):
                base = i * phentsize
                ptype, = struct.unpack_from(endian + "I", table, base)
                if ptype != _PT_INTERP:
                    continue
                if is64:
                    p_offset, = struct.unpack_from(endian + "Q", table, base + 8)
                    p_filesz, = struct.unpack_from(endian + "Q", table, base + 32)
                else:
                    p_offset, = struct.unpack_from(endian + "I", table, base + 4)
                    p_filesz, = struct.unpack_from(endian + "I", table, base + 16)
                if p_filesz > 4096:
                    return "elf", None
                fh.seek(p_offset)
                return "elf", os.fsdecode(fh.read(p_filesz).split(b"\0")[0]) or None
            return "elf", None
    except (OSError, struct.error):
        return "unknown", None


class ExecImages:
    """Turns the FAN_OPEN_EXEC stream into one image path per exec of each pid.

    One execve opens, in order (all before the cn_proc exec message is sent, spec §2.3): any
    ``#!`` scripts, then the ELF binary that becomes ``/proc/PID/exe``, then that binary's ELF
    interpreter (``ld-linux``). :meth:`add` queues the paths per pid; :meth:`take` consumes one
    exec's group and returns the ELF binary, i.e. what ``/proc/PID/exe`` shows for that exec, and
    whether another exec of the same pid is already queued (then ``/proc`` shows the later one).

    Entries older than ``max_age_s`` (an exec that failed after opening its binary, or whose
    cn_proc message was lost) are dropped by :meth:`expire`.
    """

    def __init__(self, max_age_s: float = 5.0) -> None:
        self.max_age_s = max_age_s
        self.info_ttl_s = 2.0  # how long a file's ELF/script classification is reused
        self._pending: dict = {}
        self._info: dict = {}
        self._interps: set = set()

    def add(self, pid: int, path: str) -> None:
        """Queue a FAN_OPEN_EXEC ``path`` opened by ``pid``."""
        self._pending.setdefault(pid, []).append((path, time.monotonic()))

    def forget(self, pid: int) -> None:
        """Drop everything queued for ``pid`` (it exited)."""
        self._pending.pop(pid, None)

    def expire(self) -> None:
        """Drop entries older than ``max_age_s``; bound the caches."""
        limit = time.monotonic() - self.max_age_s
        for pid in [p for p, lst in self._pending.items() if lst[-1][1] < limit]:
            del self._pending[pid]
        if len(self._info) > 4096:
            self._info.clear()

    def _classify(self, path: str) -> tuple:
        now = time.monotonic()
        hit = self._info.get(path)
        if hit is not None and hit[0] > now:
            return hit[1]
        kind, interp = elf_info(path)
        if interp:
            try:
                self._interps.add(os.path.realpath(interp))
            except OSError:
                pass
        self._info[path] = (now + self.info_ttl_s, (kind, interp))
        return kind, interp

    def is_interpreter(self, path: str) -> bool:
        """Whether ``path`` is an ELF interpreter (``ld-linux``, ``ld-musl``, or one named by a
        binary seen before): when an exec's group holds only that, the program itself was not
        opened from a watched file system (a memfd)."""
        return self._is_interp(path, None)

    def _is_interp(self, path: str, interp: Optional[str]) -> bool:
        if path in self._interps:
            return True
        if interp and os.path.basename(interp) == os.path.basename(path):
            return True
        return bool(_LDSO_RE.match(os.path.basename(path)))

    def _groups(self, items: list) -> list:
        """Split queued paths into exec groups ``[(image, [paths])]``: scripts and other
        non-ELF files accumulate until an ELF (or unreadable) file closes the group; that
        file's ELF interpreter, when it comes next, belongs to the same group."""
        groups: list = []
        current: list = []
        image = interp = None
        for path, _ts in items:
            if image is not None:
                if self._is_interp(path, interp):
                    current.append(path)
                    groups.append((image, current))
                    current, image, interp = [], None, None
                    continue
                groups.append((image, current))
                current, image, interp = [], None, None
            current.append(path)
            kind, this_interp = self._classify(path)
            if kind in ("elf", "unknown"):
                image, interp = path, this_interp
        if current:
            groups.append((image, current))
        return groups

    def take(self, pid: int) -> tuple:
        """Consume the oldest exec group of ``pid``.

        Returns:
            ``(image or None, later_exec_queued: bool)``.
        """
        items = self._pending.get(pid)
        if not items:
            return None, False
        groups = self._groups(items)
        image, used = groups[0]
        rest = items[len(used):]
        if rest:
            self._pending[pid] = rest
        else:
            del self._pending[pid]
        later = any(img is not None for img, _ in groups[1:])
        return image, later

    def __len__(self) -> int:
        return sum(len(v) for v in self._pending.values())
