"""Another SysmonX sensor on the same host (two sensors during an upgrade, in CI): how one proves
it is one, and what its guard says it opened by id.

Each live sensor run (as root, with its guard) holds a *run file*, ``RUN_DIR/sensor-<pid>.lock``
(:data:`RUN_DIR` is ``/run/sysmonx``, a directory of root, mode 0700), root's, mode 0600, with
an exclusive ``flock`` held for the whole run, and beside it ``sensor-<pid>.ids``: the BPF map,
program and link ids the sensor holds, and the ids of the programs its guard is about to open
by id (``BPF_PROG_GET_FD_BY_ID``) to name another process's program in event 100 (written
*before* the open, the last :data:`OPENS_KEPT`, with the monotonic time of each).

:func:`peer` accepts a process as a peer sensor only when all of this holds (a non-root process
can create nothing in ``/run/sysmonx``; naming a thread or a binary proves nothing):

* ``RUN_DIR`` is a directory (not a link) owned by root and writable by no one else;
* ``sensor-<pid>.lock`` is a regular file (not a link), root's, mode 0600, one link;
* ``/proc/locks`` shows an ``FLOCK ... WRITE`` by that very pid on that file's device and inode
  (the kernel records who took the lock; it is released when the process dies);
* the file names that pid and its start time (``/proc/PID/stat`` field 22), so a reused pid
  with a left-over file is no peer.

What a peer's by-id open may then be excused by (sensor/guard.py): only an open its ``.ids``
announced before it, of an object that is not the observing sensor's own. What remains possible
for an attacker is documented in docs/RESILIENCE.md (a root process that sets all of this up
for itself can announce ids it does not open).

Nothing here raises: a run file that cannot be made is said by the caller and the sensor runs
without one (its peers then report its by-id opens as before).
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from dataclasses import dataclass, field
from typing import Optional

__all__ = ["RUN_DIR", "OPENS_KEPT", "RunFile", "Peer", "peer", "start_time", "cmdline",
           "flock_holders"]

#: Where the run files are.
RUN_DIR = "/run/sysmonx"
#: By-id opens a run file keeps (the newest).
OPENS_KEPT = 256
_MAX_IDS_BYTES = 1 << 20


def start_time(pid: int) -> Optional[int]:
    """``/proc/PID/stat`` field 22 (start time in clock ticks since boot), ``None`` when the
    process is gone. The comm (field 2) may hold spaces and parentheses: read after its last
    ``)``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    try:
        return int(raw[raw.rindex(b")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def cmdline(pid: int) -> str:
    """``/proc/PID/cmdline`` (first 4 KiB), arguments joined by spaces; ``""`` when the process
    is gone or unreadable. Untrusted text: the caller makes it visible."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(4096)
    except OSError:
        return ""
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")


def _safe_dir(run_dir: str) -> bool:
    try:
        st = os.lstat(run_dir)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and not st.st_mode & 0o022


def flock_holders(st: os.stat_result) -> set[int]:
    """Pids ``/proc/locks`` shows holding an exclusive flock on the file ``st`` (the process that
    took the lock; waiters, ``->``, are not holders). Empty when ``/proc/locks`` is unreadable."""
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    out: set[int] = set()
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            for line in f:
                parts = line.split()
                # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF" ("->" marks a waiter)
                if len(parts) >= 6 and parts[1] == "FLOCK" and parts[3] == "WRITE" \
                        and parts[5] == want and parts[4].isdigit():
                    out.add(int(parts[4]))
    except OSError:
        pass
    return out


def _read_json(path: str) -> Optional[dict]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o077:
            return None
        raw = os.read(fd, _MAX_IDS_BYTES)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


@dataclass
class Peer:
    """A verified peer sensor (:func:`peer`).

    Attributes:
        pid: its process id; cmdline: its command line (arguments joined by spaces).
        own: kind (``map``/``prog``/``link``) -> the ids it published as its own.
        opens: ``(kind, id, monotonic ns)`` of the by-id opens it announced, oldest first.
    """

    pid: int
    cmdline: str
    own: dict[str, set[int]] = field(default_factory=dict)
    opens: list[tuple[str, int, int]] = field(default_factory=list)

    def describe(self) -> str:
        """``another SysmonX sensor (pid N, command line ...)`` (the caller makes it visible)."""
        return f"another SysmonX sensor (pid {self.pid}, command line {self.cmdline or '-'})"


def peer(pid: int, run_dir: str = RUN_DIR) -> Optional[Peer]:
    """The :class:`Peer` ``pid`` proves to be (module docstring), or ``None``."""
    if pid <= 0 or not _safe_dir(run_dir):
        return None
    lock = os.path.join(run_dir, f"sensor-{pid}.lock")
    try:
        st = os.lstat(lock)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o077 or st.st_nlink != 1:
        return None
    if pid not in flock_holders(st):
        return None
    head = _read_json(lock)
    started = start_time(pid)
    if head is None or head.get("pid") != pid or started is None or head.get("start") != started:
        return None
    ids = _read_json(os.path.join(run_dir, f"sensor-{pid}.ids")) or {}
    own: dict[str, set[int]] = {}
    raw_own = ids.get("own")
    if isinstance(raw_own, dict):
        for kind in ("map", "prog", "link"):
            vals = raw_own.get(kind)
            if isinstance(vals, list):
                own[kind] = {v for v in vals if isinstance(v, int)}
    opens: list[tuple[str, int, int]] = []
    raw_opens = ids.get("opens")
    if isinstance(raw_opens, list):
        for item in raw_opens[-OPENS_KEPT:]:
            if isinstance(item, list) and len(item) == 3 and isinstance(item[0], str) \
                    and isinstance(item[1], int) and isinstance(item[2], int):
                opens.append((item[0], item[1], item[2]))
    return Peer(pid, cmdline(pid), own, opens)


class RunFile:
    """This sensor's run file and ids file (module docstring).

    Args:
        run_dir: the directory (:data:`RUN_DIR`; created 0700 when missing).
    Raises:
        OSError: the directory is not root's alone, or the files cannot be made or locked
            (nothing is left behind).
    """

    def __init__(self, run_dir: str = RUN_DIR) -> None:
        self.run_dir = run_dir
        self.pid = os.getpid()
        self.path = os.path.join(run_dir, f"sensor-{self.pid}.lock")
        self.ids_path = os.path.join(run_dir, f"sensor-{self.pid}.ids")
        self._fd = -1
        self._own: dict[str, list[int]] = {"map": [], "prog": [], "link": []}
        self._opens: list[list] = []
        import fcntl  # POSIX only: imported where used (the module imports on Windows)
        try:
            os.mkdir(run_dir, 0o700)
        except FileExistsError:
            pass
        if not _safe_dir(run_dir):
            raise OSError(errno.EPERM, f"{run_dir} is not a directory of root's alone")
        self._sweep()
        tmp = os.path.join(run_dir, f".sensor-{self.pid}.lock.new")
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, json.dumps({"pid": self.pid, "start": start_time(self.pid)}).encode())
            self._write_ids()
            # renamed once locked: the name always shows a locked file while the sensor lives
            os.rename(tmp, self.path)
        except OSError:
            os.close(fd)
            for p in (tmp, self.ids_path):
                try:
                    os.unlink(p)
                except OSError:
                    pass
            raise
        self._fd = fd

    def _sweep(self) -> None:
        """Remove the run files of sensors that are gone (their lock is free: kill -9)."""
        import fcntl
        try:
            names = os.listdir(self.run_dir)
        except OSError:
            return
        for name in names:
            if not (name.startswith("sensor-") and name.endswith(".lock")):
                continue
            path = os.path.join(self.run_dir, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # held: a live sensor's
            try:
                os.unlink(path)
                os.unlink(path[:-len(".lock")] + ".ids")
            except OSError:
                pass
            finally:
                os.close(fd)

    def _write_ids(self) -> None:
        tmp = self.ids_path + ".new"
        data = json.dumps({"own": self._own, "opens": self._opens}).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.rename(tmp, self.ids_path)

    def publish_own(self, maps: set[int], progs: set[int], links: set[int]) -> None:
        """Publish the ids the sensor holds. Raises OSError."""
        self._own = {"map": sorted(maps), "prog": sorted(progs), "link": sorted(links)}
        self._write_ids()

    def will_open(self, kind: str, oid: int) -> None:
        """Announce a by-id open of ``kind`` ``oid`` before making it. Raises OSError (the
        caller then does not open)."""
        self._opens.append([kind, oid, time.monotonic_ns()])
        del self._opens[:-OPENS_KEPT]
        self._write_ids()

    def close(self) -> None:
        """Remove both files and release the lock."""
        if self._fd < 0:
            return
        for p in (self.path, self.ids_path):
            try:
                os.unlink(p)
            except OSError:
                pass
        try:
            os.close(self._fd)
        except OSError:
            pass
        self._fd = -1
