"""Per-process facts read from ``/proc`` for the SysmonX extension fields and events: terminal,
container, namespaces and the type of an executable.

Every reader is racy by nature (the process may be gone): it returns ``None`` then, and the
caller writes the documented unknown value. Sources: proc(5) (``stat`` field 7 ``tty_nr``,
``cgroup``, ``ns/``), the ELF magic (elf(5)) and the ``#!`` line (execve(2)).
"""

from __future__ import annotations

import os
import re
from typing import Optional

__all__ = ["tty_of", "tty_name", "container_of", "namespaces_of", "file_type", "session_of",
           "HostFacts"]

# cgroup path patterns of the usual runtimes (docker, containerd/k8s, cri-o, podman, lxc)
_CONTAINER_RES = (
    (re.compile(r"/docker[-/]([0-9a-f]{64})(?:\.scope)?"), "docker"),
    (re.compile(r"/cri-containerd[-:]([0-9a-f]{64})(?:\.scope)?"), "containerd"),
    (re.compile(r"/crio[-:]([0-9a-f]{64})(?:\.scope)?"), "cri-o"),
    (re.compile(r"/libpod[-:]([0-9a-f]{64})(?:\.scope)?"), "podman"),
    (re.compile(r"/containerd/([0-9a-f]{64})"), "containerd"),
    (re.compile(r"/kubepods[^\n]*?([0-9a-f]{64})"), "containerd"),
    (re.compile(r"/lxc(?:\.payload)?[./]([^/\n]+)"), "lxc"),
)


def tty_name(tty_nr: int) -> Optional[str]:
    """``/dev/pts/N`` or ``/dev/ttyN``/``/dev/ttySN`` for a ``stat`` ``tty_nr`` (the kernel's
    encoded dev_t); ``None`` for 0 (no controlling terminal) or an unknown major."""
    if not tty_nr:
        return None
    major = (tty_nr >> 8) & 0xFFF
    minor = (tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00)
    if 136 <= major <= 143:  # UNIX98 pty slaves
        return f"/dev/pts/{(major - 136) * 256 + minor}"
    if major == 4:
        return f"/dev/tty{minor}" if minor < 64 else f"/dev/ttyS{minor - 64}"
    if major == 5 and minor == 0:
        return "/dev/tty"
    return None


def _stat_fields(pid: int) -> Optional[list]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    end = raw.rfind(b")")
    return raw[end + 2:].split() if end > 0 else None


def tty_of(pid: int) -> Optional[str]:
    """The controlling terminal of ``pid`` (``/dev/pts/3``), ``None`` when it has none or is
    gone."""
    f = _stat_fields(pid)
    if not f or len(f) < 5:
        return None
    return tty_name(int(f[4]))


def session_of(pid: int) -> Optional[int]:
    """The audit login session id (``/proc/PID/sessionid``; ``None`` when unset or gone)."""
    try:
        with open(f"/proc/{pid}/sessionid", "rb") as fh:
            v = int(fh.read())
    except (OSError, ValueError):
        return None
    return None if v == 0xFFFFFFFF else v


def container_of(pid: int) -> Optional[tuple[str, str]]:
    """``(container id, runtime)`` from the process's cgroup path, ``("-", "-")`` when the
    process is on the host (its cgroup path names no container runtime), ``None`` when it is
    gone (the caller writes the unknown value ``unknown``, not the host's ``-``)."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    for rx, runtime in _CONTAINER_RES:
        m = rx.search(text)
        if m:
            return m.group(1), runtime
    return "-", "-"


def namespaces_of(pid: int) -> Optional[tuple[int, int]]:
    """``(mnt ns inode, pid ns inode)`` of ``pid``, ``None`` when gone or not readable."""
    try:
        mnt = os.stat(f"/proc/{pid}/ns/mnt").st_ino
        pidns = os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return None
    return mnt, pidns


def file_type(path: Optional[str]) -> Optional[str]:
    """``ELF``, ``script:INTERPRETER`` (the ``#!`` line's interpreter) or ``other`` for the file
    at ``path``; ``None`` when it cannot be read (gone, a memfd, no permission)."""
    if not path or path.endswith(" (deleted)"):
        return None
    try:
        with open(path, "rb") as fh:
            head = fh.read(256)
    except OSError:
        return None
    if head.startswith(b"\x7fELF"):
        return "ELF"
    if head.startswith(b"#!"):
        line = head[2:].split(b"\n", 1)[0].strip()
        interp = line.split()[0] if line else b""
        return "script:" + os.fsdecode(interp) if interp else "script"
    return "other"


class HostFacts:
    """The live sensor's answer to the enrichment stage's host look-up
    (:data:`sysmonx.stages.enrich.HostLookup`): ``self(pid, guid, image)`` reads the host
    fields of a running process once; :meth:`ancestors` walks the sensor's process cache for a
    process the stream never showed an event 1 of (started before the sensor).

    Args:
        cache: the live source's :class:`~sysmonx.sensor.process.ProcessCache`.
    """

    def __init__(self, cache) -> None:
        self.cache = cache
        self._types: dict = {}

    def __call__(self, pid: int, guid: str, image: str) -> dict:
        """``{field: value}`` for ContainerId, ContainerRuntime, MntNs, PidNs, Tty, SessionId,
        FileType; a field it cannot know is left out (the stage writes the catalogue's unknown
        value: ``unknown`` for ContainerId/ContainerRuntime, ``-`` for MntNs/PidNs).

        MntNs/PidNs are those read at the exec when the process cache has them
        (``ProcInfo.extra["ns"]``: tier A's exec record, or the ``/proc`` snapshot tiers B and C read at the
        exec), else ``/proc/PID/ns``. ``/proc/PID`` is read only while it is still the same
        process: not when the cache holds another process of that pid (reused) or holds this
        one as exited; then what only ``/proc`` tells is unknown, never another process's
        values nor "on the host"."""
        out: dict = {}
        info = self.cache.peek(pid)
        same = True
        if info is not None and info.guid.lower() != guid.lower():
            info, same = None, False  # another process holds the pid now
        if info is not None and info.exited_ns is not None:
            same = False  # gone: /proc/PID is no longer (or no longer only) this process
        at_exec = info.extra.get("ns") if info is not None and info.extra else None
        if at_exec is not None:
            if at_exec[0]:
                out["MntNs"] = str(at_exec[0])
            if at_exec[1]:
                out["PidNs"] = str(at_exec[1])
        cont = container_of(pid) if same else None
        if cont is not None:
            out["ContainerId"], out["ContainerRuntime"] = cont
        if same and ("MntNs" not in out or "PidNs" not in out):
            ns = namespaces_of(pid)
            if ns is not None:
                out.setdefault("MntNs", str(ns[0]))
                out.setdefault("PidNs", str(ns[1]))
        if cont is not None:  # the process was there: no tty means none
            out["Tty"] = tty_of(pid) or "-"
        ses = info.sessionid if info is not None and info.sessionid not in (None, 0xFFFFFFFF) \
            else (session_of(pid) if same else None)
        if ses is not None:
            out["SessionId"] = str(ses)
        if image and image != "-":
            ft = self._types.get(image)
            if ft is None:
                ft = file_type(image)
                if ft is not None:
                    if len(self._types) > 16384:
                        self._types.clear()
                    self._types[image] = ft
            if ft is not None:
                out["FileType"] = ft
        return out

    def ancestors(self, pid: int) -> list:
        """``[(image, command line), ...]`` of ``pid``'s ancestors in the process cache, nearest
        first (up to 8)."""
        out: list[tuple[str, str]] = []
        info = self.cache.peek(pid)
        seen = {pid}
        while info is not None and info.ppid and info.ppid not in seen and len(out) < 8:
            seen.add(info.ppid)
            info = self.cache.peek(info.ppid)
            if info is None:
                break
            out.append((info.image or "-", info.command_line or "-"))
        return out
