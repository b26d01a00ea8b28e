"""Process cache, /proc readers, and Sysmon for Linux's GUIDs, users and hashes.

The cache keeps what is known of each process keyed by pid and checked against its start time, so
events of short-lived processes (file, network, exit) and the parent fields of their children are
still filled after ``/proc/PID`` is gone. Sources: shared/spec/linux-sensing.md section 5 ("common to
all tiers"), shared/spec/sysmon-semantics.md sections 4.2 and 5.3 (GUID layout, Linux field
conventions).
"""

from __future__ import annotations

import hashlib
import os
import re
import pwd
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional

from .procfs import read_process

__all__ = ["ProcInfo", "ProcessCache", "process_guid", "logon_guid", "machine_id_prefix", "clean_text",
           "boot_time", "read_proc", "user_name", "FileHasher", "ZERO_GUID", "UNSET_ID"]

ZERO_GUID = "{00000000-0000-0000-0000-000000000000}"
UNSET_ID = 0xFFFFFFFF  # loginuid / sessionid of a process outside any login session
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_id_prefix(path: str = "/etc/machine-id") -> str:
    """First 8 hex digits of the machine id (GUID Data1 on Linux, spec 4.2); ``00000000`` when
    neither /etc/machine-id nor /var/lib/dbus/machine-id is readable."""
    for p in (path, "/var/lib/dbus/machine-id"):
        try:
            with open(p) as f:
                text = f.read().strip().lower()
            if len(text) >= 8 and all(c in "0123456789abcdef" for c in text[:8]):
                return text[:8]
        except OSError:
            continue
    return "00000000"


def boot_time() -> int:
    """System boot time, seconds since the epoch (``btime`` of /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("btime "):
                    return int(line.split()[1])
    except OSError:
        pass
    return int(time.time() - time.clock_gettime(time.CLOCK_BOOTTIME))


def process_guid(machine: str, start_epoch_s: int, end_data: Optional[int]) -> str:
    """Sysmon for Linux ProcessGuid (spec 4.2): Data1 = machine id prefix, Data2/Data3 = low/high
    16 bits of the start second, Data4 = ``end_data`` as 8 little-endian bytes; lower case with
    braces, e.g. ``{d65774de-8d17-6175-92f0-043290550000}``."""
    s = start_epoch_s & 0xFFFFFFFF
    tail = struct.pack("<Q", (end_data or 0) & 0xFFFFFFFFFFFFFFFF).hex()
    return f"{{{machine}-{s & 0xFFFF:04x}-{s >> 16:04x}-{tail[:4]}-{tail[4:]}}}"


def logon_guid(machine: str, uid: int, logon_time: int = 0, terminal: int = 0) -> str:
    """Sysmon for Linux LogonGuid (spec 5.3): ``{machine-<logon time split>-<uid LE><pts LE>}``,
    e.g. ``{2424faa4-0000-0000-e803-000000000000}`` for uid 1000 with unknown logon time."""
    t = logon_time & 0xFFFFFFFF
    tail = struct.pack("<II", uid & 0xFFFFFFFF, terminal & 0xFFFFFFFF).hex()
    return f"{{{machine}-{t & 0xFFFF:04x}-{t >> 16:04x}-{tail[:4]}-{tail[4:]}}}"


_SURROGATES = re.compile("[\ud800-\udfff]")


def clean_text(s: Optional[str]) -> Optional[str]:
    """One text convention for every backend: bytes that were not valid UTF-8 (kept by
    ``os.fsdecode`` as lone surrogates) become U+FFFD, so every tier gives the same field value
    and every writer can encode it."""
    if s is None or s.isascii():
        return s
    return _SURROGATES.sub("\ufffd", s)


_users: dict = {}


def user_name(uid: Optional[int]) -> str:
    """User name of ``uid`` (cached), the decimal uid if it has no passwd entry, ``-`` if unknown."""
    if uid is None:
        return "-"
    name = _users.get(uid)
    if name is None:
        try:
            name = pwd.getpwuid(uid).pw_name
        except (KeyError, OverflowError):
            name = str(uid)
        _users[uid] = name
    return name


@dataclass
class ProcInfo:
    """What is known of one process. ``guid`` is its ProcessGuid; ``start_ticks`` its start time
    in clock ticks since boot (the cache key's second half); ``exited_ns`` set on exit."""

    pid: int
    start_ticks: Optional[int] = None
    ppid: Optional[int] = None
    image: Optional[str] = None
    command_line: Optional[str] = None
    cwd: Optional[str] = None
    uid: Optional[int] = None
    auid: Optional[int] = None
    sessionid: Optional[int] = None
    end_data: Optional[int] = None
    guid: str = ZERO_GUID
    exited_ns: Optional[int] = None
    extra: dict = field(default_factory=dict)

    @property
    def user(self) -> str:
        """User name for the User/ParentUser fields."""
        return user_name(self.uid)


def read_proc(pid: int) -> Optional[dict]:
    """Read a live process's facts from /proc (racy by nature: the process may be gone), with
    :func:`sysmonx.sensor.procfs.read_process`.

    Returns:
        dict with ``ppid``, ``start_ticks``, ``end_data`` (stat field 27, the ProcessGuid key),
        ``uid``, ``image``, ``argv``, ``cwd``, ``auid``, ``sessionid`` (missing pieces ``None``),
        or ``None`` when /proc/PID is gone.
    """
    snap = read_process(pid)
    if snap.start_ticks is None and snap.exe is None and snap.argv is None:
        return None
    image = snap.exe
    if image is not None and image.endswith(" (deleted)"):
        image = image[:-10]
    return {"ppid": snap.ppid, "start_ticks": snap.start_ticks, "end_data": snap.end_data,
            "uid": snap.uid, "image": image, "argv": snap.argv, "cwd": snap.cwd,
            "auid": snap.auid, "sessionid": snap.sessionid}


class ProcessCache:
    """pid -> :class:`ProcInfo`, bounded, with exited processes kept for ``linger_s`` seconds.

    Thread-safe. A lookup for a pid not in the cache reads ``/proc`` once (processes that started
    before the sensor). A new exec of a pid replaces the entry (pid reuse is recognised by a
    different start time).

    Args:
        machine: machine id prefix for GUIDs (default: read from /etc/machine-id).
        max_entries: bound on cached processes (oldest dropped first).
        linger_s: how long an exited process stays resolvable.
    """

    def __init__(self, machine: Optional[str] = None, max_entries: int = 65536,
                 linger_s: float = 30.0) -> None:
        self.machine = machine or machine_id_prefix()
        self.btime = boot_time()
        self.max_entries = max_entries
        self.linger_ns = int(linger_s * 1e9)
        self._procs: "OrderedDict[int, ProcInfo]" = OrderedDict()
        self._lock = threading.Lock()

    def start_epoch(self, start_ticks: Optional[int]) -> int:
        """Start time in epoch seconds from clock ticks since boot (0 when unknown)."""
        if start_ticks is None:
            return 0
        return self.btime + start_ticks // _CLK_TCK

    def make_guid(self, start_ticks: Optional[int], end_data: Optional[int]) -> str:
        """ProcessGuid for a process with this start time and ``end_data``."""
        if start_ticks is None:
            return ZERO_GUID
        return process_guid(self.machine, self.start_epoch(start_ticks), end_data)

    def _store(self, info: ProcInfo) -> ProcInfo:
        with self._lock:
            self._procs[info.pid] = info
            self._procs.move_to_end(info.pid)
            while len(self._procs) > self.max_entries:
                self._procs.popitem(last=False)
        return info

    def on_exec(self, pid: int, *, ppid=None, start_ticks=None, image=None, argv=None, cwd=None,
                uid=None, auid=None, sessionid=None, end_data=None) -> ProcInfo:
        """Record an exec; missing facts are read from /proc when the process is still there.
        Returns the new entry."""
        need = None in (ppid, start_ticks, image, argv, cwd, uid, end_data)
        live = read_proc(pid) if need else None
        if live:
            ppid = ppid if ppid is not None else live["ppid"]
            start_ticks = start_ticks if start_ticks is not None else live["start_ticks"]
            image = image or live["image"]
            argv = argv if argv is not None else live["argv"]
            cwd = cwd or live["cwd"]
            uid = uid if uid is not None else live["uid"]
            auid = auid if auid is not None else live["auid"]
            sessionid = sessionid if sessionid is not None else live["sessionid"]
            end_data = end_data if end_data is not None else live["end_data"]
        old = self.peek(pid)
        if start_ticks is None and old is not None:
            start_ticks = old.start_ticks  # exec keeps the process (same start time)
        info = ProcInfo(pid, start_ticks, ppid, clean_text(image),
                        clean_text(" ".join(argv)) if argv is not None else None, clean_text(cwd),
                        uid, auid, sessionid, end_data)
        info.guid = self.make_guid(start_ticks, end_data)
        return self._store(info)

    def on_exit(self, pid: int, ts_ns: int) -> Optional[ProcInfo]:
        """Mark a process exited (kept ``linger_s``); returns its entry if known."""
        info = self.get(pid)
        if info is not None:
            info.exited_ns = ts_ns
        return info

    def peek(self, pid: int) -> Optional[ProcInfo]:
        """The cached entry, without reading /proc."""
        with self._lock:
            return self._procs.get(pid)

    def get(self, pid: Optional[int]) -> Optional[ProcInfo]:
        """The entry for ``pid``: cached, else read from /proc and cached; ``None`` if unknown."""
        if pid is None or pid <= 0:
            return None
        info = self.peek(pid)
        if info is not None:
            return info
        live = read_proc(pid)
        if live is None:
            return None
        info = ProcInfo(pid, live["start_ticks"], live["ppid"], clean_text(live["image"]),
                        clean_text(" ".join(live["argv"])) if live["argv"] is not None else None,
                        clean_text(live["cwd"]), live["uid"], live["auid"], live["sessionid"],
                        live["end_data"])
        info.guid = self.make_guid(info.start_ticks, info.end_data)
        return self._store(info)

    def expire(self, now_ns: int) -> int:
        """Drop exited processes older than ``linger_s``; returns how many were dropped."""
        with self._lock:
            dead = [p for p, i in self._procs.items()
                    if i.exited_ns is not None and now_ns - i.exited_ns > self.linger_ns]
            for p in dead:
                del self._procs[p]
        return len(dead)

    def prime(self) -> int:
        """Load every process currently in /proc (processes started before the sensor)."""
        n = 0
        for name in os.listdir("/proc"):
            if name.isdigit() and self.get(int(name)) is not None:
                n += 1
        return n

    def __len__(self) -> int:
        return len(self._procs)


class FileHasher:
    """Hashes of executables for the Hashes field, cached by (device, inode, size, mtime).

    Args:
        algorithms: upper-case names from HashAlgorithms (SHA1, MD5, SHA256; IMPHASH is
            accepted and ignored on Linux, spec 5.2). Default SHA256.
        max_bytes: files larger than this are not hashed (``-``), bounding the cost per exec.
    """

    _ALGOS = {"SHA1": "sha1", "MD5": "md5", "SHA256": "sha256"}

    def __init__(self, algorithms=("SHA256",), max_bytes: int = 256 << 20) -> None:
        self.algorithms = [a for a in ("SHA1", "MD5", "SHA256") if a in set(algorithms)]
        self.max_bytes = max_bytes
        self._cache: "OrderedDict[tuple, str]" = OrderedDict()

    def hashes(self, path: Optional[str]) -> str:
        """``SHA256=<lower hex>`` (pairs joined by ``,`` in SHA1, MD5, SHA256 order), or ``-``
        when the file cannot be read."""
        if not path or not self.algorithms:
            return "-"
        try:
            st = os.stat(path)
        except OSError:
            return "-"
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if st.st_size > self.max_bytes:
            return "-"
        hs = [hashlib.new(self._ALGOS[a]) for a in self.algorithms]
        try:
            with open(path, "rb") as f:
                while True:
                    chunk = f.read(1 << 20)
                    if not chunk:
                        break
                    for h in hs:
                        h.update(chunk)
        except OSError:
            return "-"
        text = ",".join(f"{a}={h.hexdigest()}" for a, h in zip(self.algorithms, hs))
        self._cache[key] = text
        if len(self._cache) > 4096:
            self._cache.popitem(last=False)
        return text
