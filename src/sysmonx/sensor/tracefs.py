"""tracefs access shared by the tier-A visibility probes and the ShellCommand uprobe.

:class:`Tracefs` uses the system mount (``/sys/kernel/tracing``, else
``/sys/kernel/debug/tracing``) or, when tracefs is not mounted, mounts it on a private directory
under ``/run`` (never on ``/sys/kernel/tracing``, so nobody else's view changes) and unmounts it
on :meth:`Tracefs.close`. Stale private mounts of dead sensors are removed first
(:func:`sysmonx.sensor.backends.cn_tracefs._reap_stale_mounts`, the same naming).

Source: Documentation/trace/ftrace.rst, uprobetracer.rst (kernel tree).
"""

from __future__ import annotations

import ctypes
import os
import tempfile
from typing import Optional

__all__ = ["Tracefs", "tracefs_problem", "mount_problem", "cpu_stats_files", "read_lost"]


def _system_root() -> Optional[str]:
    for cand in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        if os.path.isdir(os.path.join(cand, "events")) and \
                os.path.isdir(os.path.join(cand, "instances")):
            return cand
    return None


def tracefs_problem() -> Optional[str]:
    """``None`` if tracefs is mounted or can be mounted here, else why not."""
    if _system_root():
        return None
    return mount_problem()


def mount_problem() -> Optional[str]:
    """``None`` if a tracefs can be mounted here (kernel support in ``/proc/filesystems``, root),
    else why not; for callers that found no usable system mount themselves."""
    try:
        with open("/proc/filesystems", encoding="ascii") as fh:
            if "tracefs" not in fh.read():
                return "kernel without tracefs"
    except OSError as exc:
        return f"/proc/filesystems: {exc.strerror}"
    if os.geteuid() != 0:
        return "tracefs not mounted and not root"
    return None


def cpu_stats_files(instance: Optional[str]) -> list[str]:
    """Paths of the per-CPU ``stats`` files of the tracefs instance folder ``instance`` (empty
    when there is none or it cannot be listed); see the kernel's Documentation/trace/ftrace.rst,
    "per_cpu/cpuN/stats"."""
    if instance is None:
        return []
    base = os.path.join(instance, "per_cpu")
    try:
        return [os.path.join(base, c, "stats") for c in sorted(os.listdir(base))]
    except OSError:
        return []


def read_lost(path: str) -> int:
    """Events one CPU's ring buffer lost so far: ``overrun`` + ``dropped events`` of its
    ``stats`` file (0 when it cannot be read: the instance is gone)."""
    total = 0
    try:
        with open(path, encoding="ascii") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("overrun", "dropped events"):
                    total += int(value.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return total


class Tracefs:
    """A tracefs root to use: :attr:`path`. A context manager; :meth:`close` unmounts a private
    mount (idempotent).

    Raises:
        OSError: tracefs is not mounted and could not be mounted.
    """

    def __init__(self) -> None:
        from .backends.cn_tracefs import _libc, _reap_stale_mounts
        self.mounted_here: Optional[str] = None
        root = _system_root()
        if root is None:
            _reap_stale_mounts()
            parent = "/run" if os.path.isdir("/run") else None
            mnt = tempfile.mkdtemp(prefix=f"sysmonx-tracefs-{os.getpid()}-", dir=parent)
            if _libc().mount(b"nodev", os.fsencode(mnt), b"tracefs", 0, None) != 0:
                err = ctypes.get_errno()
                os.rmdir(mnt)
                raise OSError(err, f"mount tracefs: {os.strerror(err)}")
            self.mounted_here = root = mnt
        self.path: str = root

    def tracepoint_id(self, category: str, name: str) -> Optional[int]:
        """The id of tracepoint ``category/name`` (``syscalls``, ``sys_enter_setuid``), ``None``
        when this kernel has no such tracepoint."""
        try:
            with open(os.path.join(self.path, "events", category, name, "id"),
                      encoding="ascii") as fh:
                return int(fh.read())
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        """Unmount the private mount, if this object made one."""
        from .backends.cn_tracefs import _libc
        mnt, self.mounted_here = self.mounted_here, None
        if mnt and _libc().umount2(os.fsencode(mnt), 0) == 0:
            try:
                os.rmdir(mnt)
            except OSError:
                pass

    def __enter__(self) -> Tracefs:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
