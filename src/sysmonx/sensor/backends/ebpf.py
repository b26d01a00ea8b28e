"""Tier A live backend: a CO-RE eBPF object (tracepoints and cgroup hooks only), loaded with
ctypes against the system ``libbpf.so.1``.

Design and measurements: shared/spec/linux-sensing.md §2.4(b) (what loads on this class of
host, latency, loss), §2.5 (network sources), §3 (event coverage) and §5 item 1 (tier A). The
kernel side is ``sysmonx/sensor/bpf/sensor.bpf.c``; this module builds it
(:func:`sysmonx.sensor.bpf.build.build`), loads it, attaches it, and turns ring-buffer records
into :mod:`sysmonx.sensor.observations`:

=====================  ===========================================  ===========================
Observation            kernel source                                notes
=====================  ===========================================  ===========================
ProcessExec (1)        tp_btf/sched_process_exec                    image = path of
                                                                    ``mm->exe_file`` (what
                                                                    /proc/PID/exe shows), argv
                                                                    from mm->arg_start..arg_end
                                                                    (first 4 KiB), cwd by a
                                                                    mount-aware dentry walk;
                                                                    the image as d_path shows
                                                                    it: ``/memfd:NAME
                                                                    (deleted)``, ``PATH
                                                                    (deleted)``
ProcessFork            tp_btf/sched_process_fork                    new thread groups only: a
                                                                    child that never execs gets
                                                                    its parent's image
ProcessExit (5)        tp_btf/sched_process_exit                    last thread of the group
NetworkConnect (3)     tp_btf/sys_exit of connect/accept/accept4;   full 4-tuple from the
                       cgroup/sendmsg4|6, recvmsg4|6 (unconnected   socket; UDP flows
                       UDP)                                         deduplicated per interval
FileCreate (11)        sys_exit of open/openat/openat2/creat        only opens that created a
                                                                    regular file (FMODE_CREATED)
RawAccessRead (9)      same                                         block device opened for read
FileDelete (23)        sys_exit of unlink/unlinkat (success)        dfd / cwd resolved in BPF
ProcessAccess (10)     sys_exit of ptrace ATTACH/SEIZE (success)    as Sysmon for Linux
Loss                   ``drops`` per-CPU counters (ring full)       ``source='ebpf.ringbuf'``
=====================  ===========================================  ===========================

Options (``options=`` dict; unknown keys ignored):
    ``ringbuf_bytes`` (int, default 16 MiB): ring buffer size, a power of two >= 4096.
    ``events`` (iterable of Sysmon event IDs, default all of :attr:`EbpfBackend.events`).
    ``udp_interval_s`` (float, default 1800): an unconnected-UDP flow (pid, direction, local
        port, remote address and port) is reported again only after this long (Sysmon for
        Linux's ``UDP_REPORT_INTERVAL`` is 30 minutes).
    ``cgroup`` (str path, or ``False``): cgroup-v2 directory for the UDP hooks; default the root
        of the first cgroup2 mount; ``False`` skips them (unconnected UDP is then not seen).
    ``object`` (str): a prebuilt ``.bpf.o`` to load instead of building.
    ``poll_timeout_ms`` (int, default 50): how long one ring-buffer wait lasts; bounds how
        quickly :meth:`EbpfBackend.stop` returns.
    ``batch`` (int, default 512): records copied out of the ring per decode batch.
    ``native_consumer`` (bool, default True): consume the ring with the compiled callback of
        ``sysmonx.sensor._ringbatch`` (no Python call per record; a batch also ends the poll at
        8 MiB) when it is built and ``SYSMONX_PURE_PYTHON`` is not set; ``False`` uses a ctypes
        callback per record (same records, same order).
    ``coalesce_ms`` (float, default 50): after a partial batch, wait this long before the next
        poll so that a burst is consumed in batches rather than one wake-up per record (halves
        the reader's CPU per record in a burst; adds at most this much latency, small beside
        the live source's 0.25 s ordering hold). 50 ms (was 10, then 30), the collecting
        loop's own period (``sensor/live.py`` ``LINGER_S``): a wake-up costs the reader about
        75 µs besides its records (poll, sleep, the interpreter lock), so at 30 ms about 15
        → 12 µs of the reader's CPU per exec at ~700 execs/s, at 50 ms 8.8 → 6.2 µs per exec
        (the reader alone at the bench spawner's load, same minute, two pairs); the 16 MiB ring
        holds far more than 50 ms of records, and a poll that fills its batch (512 records
        or 8 MiB) is followed by the next one without the wait.
    ``slow_consumer_s`` (float, default 0): sleep this long per record (tests and benchmarks of
        the loss path only).
    ``visibility`` (bool, default True; environment ``SYSMONX_EBPF_VISIBILITY=0``): start the
        second object (below); off only to measure what it costs.
    ``optional_events`` (iterable of event IDs): the events that are off unless asked
        (:data:`OPTIONAL_EVENTS`: DriverLoad 6, ImageLoad 7, MemfdCreate 212, ExecMemory 213) to
        collect
        when ``events`` is not given; the live source passes the tags its config filters.

Events 6, 7, 8, 25 (prctl), 211, 212 and 213 come from a second object,
``visibility.bpf.c`` (:mod:`.ebpf_visibility`), started beside the main one; when it cannot
start, the main object runs on and the reason is reported as event 255.
"""

from __future__ import annotations

import ctypes
import errno
import importlib
import logging
import os
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from ...core.registry import BACKENDS
from ..observations import (
    CLK_TCK,
    BackendError,
    FileCreate,
    FileDelete,
    Loss,
    NetworkConnect,
    Observation,
    ProcessAccess,
    ProcessExec,
    ProcessExit,
    ProcessFork,
    RawAccessRead,
)
from ..threadname import set_native_name
from .base import Backend, BackendUnavailable

if TYPE_CHECKING:
    from ..bpf.libbpf import BpfObject, RingBuffer

__all__ = ["EbpfBackend", "OPTIONAL_EVENTS"]

#: Events collected only when a config asks for them (their tag has a rule set): as on Windows,
#: where ImageLoad and DriverLoad are off unless configured; MemfdCreate and ExecMemory are off
#: by default.
OPTIONAL_EVENTS = frozenset({6, 7, 212, 213})

log = logging.getLogger(__name__)

#: Maps user space writes only while starting (the configuration, the excluded pids), frozen
#: then (``BPF_MAP_FREEZE``) so no other process can blind the sensor through them; option
#: ``freeze_maps=False`` keeps them writable (tests that change the excluded set later).
FROZEN_MAPS = ("sx_config", "excluded", "drops", "sent")

# --- ABI shared with sensor.bpf.c (keep in step) ------------------------------------------------
ABI_VERSION = 3
(EV_EXEC, EV_EXIT, EV_NET, EV_FILE_CREATE, EV_RAW_READ, EV_FILE_DELETE, EV_PTRACE,
 EV_FORK) = range(1, 9)
EV_NTYPES = 9
EV_NAMES = {EV_EXEC: "exec", EV_EXIT: "exit", EV_NET: "net", EV_FILE_CREATE: "file_create",
            EV_RAW_READ: "raw_read", EV_FILE_DELETE: "file_delete", EV_PTRACE: "ptrace",
            EV_FORK: "fork"}

F_ARGV_TRUNC, F_PATH1_TRUNC, F_PATH2_TRUNC = 1, 2, 4
F_IMAGE_FILENAME, F_BASE_CWD, F_BASE_DFD, F_ARGV_FAIL = 8, 16, 32, 64
F_IMAGE_PSEUDO, F_IMAGE_DELETED = 128, 256

(M_EXEC, M_EXIT, M_NET, M_FILE_CREATE, M_RAW_READ, M_FILE_DELETE,
 M_PTRACE) = (1 << i for i in range(7))
_MASK_BY_EVENT = {1: M_EXEC, 5: M_EXIT, 3: M_NET, 11: M_FILE_CREATE, 9: M_RAW_READ,
                  23: M_FILE_DELETE, 10: M_PTRACE}

_HDR = struct.Struct("<HHIIIQ")                 # type flags pid tid abi ts
_EXEC = struct.Struct("<IIIIQQHHHHII")  # + ppid uid auid ses start end_code lens mnt/pid ns
_EXIT = struct.Struct("<QII")                   # + start_ns exit_code pad
_NET = struct.Struct("<BBBBHH16s16s")           # + proto family initiated pad lport rport l r
_PATH = struct.Struct("<HHi")                   # + path_len base_len dfd
_PTRACE = struct.Struct("<IIQ")                 # + target pad request
_FORK = struct.Struct("<IIQ")                   # + ppid uid start_ns
_COUNTERS = struct.Struct(f"<{EV_NTYPES}Q")
_CFG = struct.Struct("<IIQ")                    # mask pad udp_interval_ns
_HS = _HDR.size
_NS_PER_TICK = 1_000_000_000 // CLK_TCK
AT_FDCWD = -100
_BATCH_FULL = -4242  # returned by the sample callback to end a poll early (not an errno)
#: bytes a batch may hold before the compiled consumer ends the poll (plus one record)
_BATCH_BYTES = 8 << 20

#: The compiled ring-buffer consumer (``sysmonx.sensor._ringbatch``): libbpf calls a C function
#: per record instead of a ctypes callback. ``None`` when the extension is not built or
#: ``SYSMONX_PURE_PYTHON`` is set (read once, at import, as :mod:`sysmonx.core.native` does).
_ringbatch: Optional[Any] = None
if os.environ.get("SYSMONX_PURE_PYTHON", "") in ("", "0"):
    try:
        _ringbatch = importlib.import_module("sysmonx.sensor._ringbatch")
    except ImportError:  # not built: the ctypes callback
        _ringbatch = None


#: ``os.fsdecode`` without its per-call checks (the same codec and error handler)
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
#: the compiled consumer also decodes fork/exec/exit records (it decodes as UTF-8 with
#: surrogateescape, so only where that is the file system encoding, as on Linux)
_NATIVE_DECODE = _ringbatch is not None and (_FS_ENCODING, _FS_ERRORS) == ("utf-8",
                                                                           "surrogateescape")
_COMMON = (ProcessExec, ProcessFork, ProcessExit)


def _fsdecode(raw: bytes) -> str:
    return raw.decode(_FS_ENCODING, _FS_ERRORS)


def _components(raw: bytes) -> str:
    """Leaf-first NUL-terminated components (as the BPF walk writes them) -> absolute path."""
    parts = raw.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    parts.reverse()
    return "/" + b"/".join(parts).decode(_FS_ENCODING, _FS_ERRORS)


def _normpath(path: str) -> str:
    """Lexical normalisation of an absolute path (``//``, ``.``, ``..``), as the kernel would
    resolve it when no symlink is involved."""
    out: list = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        out.append(part)
    return "/" + "/".join(out)


def _ip(family: int, raw: bytes) -> Optional[str]:
    if family == socket.AF_INET:
        return None if raw[:4] == b"\0\0\0\0" else socket.inet_ntop(socket.AF_INET, raw[:4])
    return None if raw == bytes(16) else socket.inet_ntop(socket.AF_INET6, raw)


#: ``attach_type`` numbers of the cgroup hooks (``enum bpf_attach_type``) -> bpftool's names
_CGROUP_HOOKS = {"14": "cgroup_udp4_sendmsg", "15": "cgroup_udp6_sendmsg",
                 "19": "cgroup_udp4_recvmsg", "20": "cgroup_udp6_recvmsg"}
#: what each hook attributes (module docstring: unconnected UDP flows)
_CGROUP_DARK = {"cgroup_udp4_sendmsg": "UDP over IPv4 sends (unconnected sockets)",
                "cgroup_udp6_sendmsg": "UDP over IPv6 sends (unconnected sockets)",
                "cgroup_udp4_recvmsg": "UDP over IPv4 receives (unconnected sockets)",
                "cgroup_udp6_recvmsg": "UDP over IPv6 receives (unconnected sockets)"}


def _cgroup2_root() -> Optional[str]:
    """Mount point of the first cgroup v2 hierarchy mounted at its root, else ``None``."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    fields = left.split()
                    if fields[3] == "/":
                        return fields[4].replace("\\040", " ")
    except OSError:
        pass
    return None


def _has_bpf_caps() -> bool:
    if os.geteuid() == 0:
        return True
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    caps = int(line.split()[1], 16)
                    return bool(caps & (1 << 39)) and bool(caps & (1 << 38))  # BPF, PERFMON
    except OSError:
        pass
    return False


@BACKENDS.register(summary="tier A: the project's CO-RE BPF program (tracepoints, cgroup hooks)")
class EbpfBackend(Backend):
    """Tier A: process, network, file, raw-disk and ptrace events from one CO-RE BPF object.

    See the module docstring for the event sources and ``options``. Every record the kernel
    could not queue is counted in the BPF ``drops`` map and comes back as
    ``Loss(source='ebpf.ringbuf', count=N, detail='exec=..')``; ``exclude_pids`` are filtered in
    the kernel (``excluded`` hash map, by thread-group id).

    Threads: :meth:`start` spawns one reader thread (``sysmonx-ebpf``) that polls the ring
    buffer with a ``poll_timeout_ms`` timeout, decodes records in batches and calls ``emit``
    (which may block: the ring buffer then absorbs the burst, and overflows are counted).
    """

    name = "ebpf"
    tier = "A"
    events = frozenset({1, 3, 5, 9, 10, 11, 23, 6, 7, 8, 25, 211, 212, 213})

    def __init__(self, emit: Callable[[Observation], None], exclude_pids: frozenset = frozenset(),
                 options: Optional[dict] = None) -> None:
        super().__init__(emit, exclude_pids, options)
        self._obj: Optional[BpfObject] = None
        self._rb: Optional[RingBuffer] = None
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._batch: list = []
        self._cgroup_fd: Optional[int] = None
        self._notices: list = []
        self._lock = threading.Lock()
        self._ncpu = 1
        self._received = [0] * EV_NTYPES
        self._lost = [0] * EV_NTYPES
        self._errors = 0
        self._reader_cpu_ns = 0
        self._batches = 0
        self._batch_max = 512
        #: the compiled consumer's batch (None: the ctypes callback fills ``_batch``)
        self._native: Optional[Any] = None
        self._nomem_seen = 0
        self._offset = 0
        self._offset_due = 0.0
        self._kernel_sent: Optional[list] = None
        self._fds: dict = {}
        self.object_path: Optional[Path] = None
        self.build_seconds: Optional[float] = None
        self.attached: list = []
        self.visibility: Optional[Any] = None  # the second object (VisibilityProbes)
        #: maps frozen at start (:meth:`_freeze_maps`)
        self.frozen: list = []
        #: link id -> (prog id, type, cgroup_id, attach_type): the integrity baseline
        self._links: Optional[dict] = None
        self._links_reported: set = set()  # links already reported by integrity()

    # -- capability check -------------------------------------------------------------------
    @classmethod
    def probe(cls) -> Optional[str]:
        """``None`` if this host can run the backend, else why not. No side effects: nothing
        is built, loaded or attached (a BPF verifier rejection is only seen by :meth:`start`)."""
        if not os.path.exists("/sys/kernel/btf/vmlinux"):
            return "no BTF at /sys/kernel/btf/vmlinux (kernel without CONFIG_DEBUG_INFO_BTF)"
        if not _has_bpf_caps():
            return "needs root or CAP_BPF+CAP_PERFMON"
        try:
            from ..bpf.libbpf import load_libbpf
            load_libbpf()
        except OSError as exc:
            return str(exc)
        if os.environ.get("SYSMONX_BPF_OBJECT"):
            return None
        from ..bpf import build as bpf_build
        missing = bpf_build.missing_tools()
        if missing:
            try:
                cached = bpf_build.cache_dir() / (
                    f"sensor-{bpf_build.source_hash()}-{bpf_build.btf_hash()}.bpf.o")
            except (BackendUnavailable, OSError):
                cached = None
            if cached is None or not cached.exists():
                return "; ".join(missing)
        return None

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Build (or find in the cache) and load the object, fill its maps, attach every
        program and start the reader thread.

        Raises:
            BackendUnavailable: build, load (verifier) or a required attach failed; everything
                done so far has been undone.
        """
        if self._thread is not None:
            raise RuntimeError("EbpfBackend already started (one start per instance)")
        from ..bpf import build as bpf_build
        from ..bpf.libbpf import BpfObject, LibbpfError, RingBuffer, possible_cpus

        t0 = time.monotonic()
        if self.options.get("object"):
            path = Path(self.options["object"])
            if not path.is_file():
                raise BackendUnavailable(f"BPF object {path} does not exist")
        else:
            path = bpf_build.build()
        self.build_seconds = time.monotonic() - t0
        self.object_path = path
        wanted = set(self.wanted_events(self.options)) & self.events
        mask = 0
        for ev in wanted & set(_MASK_BY_EVENT):
            mask |= _MASK_BY_EVENT[ev]
        ring = int(self.options.get("ringbuf_bytes", 16 << 20))
        if ring < 4096 or ring & (ring - 1):
            raise BackendUnavailable(f"ringbuf_bytes={ring}: must be a power of two >= 4096")

        try:
            obj = BpfObject(str(path))
        except (LibbpfError, OSError) as exc:
            raise BackendUnavailable(f"cannot open BPF object {path}: {exc}") from None
        self._obj = obj
        try:
            progs = obj.programs()
            cgroup_opt = self.options.get("cgroup")
            cg_path = None
            if mask & M_NET and cgroup_opt is not False:
                cg_path = cgroup_opt or _cgroup2_root()
                if cg_path is None:
                    self._notice("no cgroup v2 mount: unconnected UDP send/recv is not reported")
            need = {
                "on_exec": bool(mask & M_EXEC),
                # attribution of what children do, and the parent of an exec that has not
                # exec'd itself (a subshell's child): events 1 need it too
                "on_fork": bool(mask),
                "on_exit": bool(mask & M_EXIT),
                "on_sys_exit": bool(mask & (M_NET | M_FILE_CREATE | M_RAW_READ | M_FILE_DELETE
                                            | M_PTRACE)),
            }
            for pname, (section, prog) in progs.items():
                on = need.get(pname, section.startswith("cgroup/") and cg_path is not None)
                obj.set_autoload(prog, on)
            obj.set_max_entries("events", ring)
            try:
                obj.load()
            except LibbpfError as exc:
                raise BackendUnavailable(f"BPF load failed: {exc}") from None
            self._ncpu = possible_cpus()
            for m in ("events", "drops", "sent", "excluded", "sx_config"):
                self._fds[m] = obj.map_fd(m)
            interval = int(float(self.options.get("udp_interval_s", 1800)) * 1e9)
            from ..bpf.libbpf import map_update
            map_update(self._fds["sx_config"], struct.pack("<I", 0), _CFG.pack(mask, 0, interval))
            self.set_excluded(self.exclude_pids)
            if self.options.get("freeze_maps", True):
                self._freeze_maps(obj)
            if cg_path is not None:
                try:
                    self._cgroup_fd = os.open(cg_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                except OSError as exc:
                    self._notice(f"cannot open cgroup {cg_path}: {exc.strerror}; "
                                 "unconnected UDP is not reported")
            for pname, (section, prog) in progs.items():
                if pname in need:
                    if need[pname]:
                        try:
                            obj.attach(prog)
                        except LibbpfError as exc:
                            raise BackendUnavailable(f"attach {section} failed: {exc}") from None
                        self.attached.append(section)
                elif cg_path is not None and self._cgroup_fd is not None:
                    try:
                        obj.attach(prog, self._cgroup_fd)
                        self.attached.append(f"{section}@{cg_path}")
                    except LibbpfError as exc:
                        self._notice(f"attach {section} to {cg_path} failed: {exc.strerror}")
            self._batch_max = max(1, int(self.options.get("batch", 512)))
            if _ringbatch is not None and self.options.get("native_consumer", True):
                self._native = _ringbatch.RingBatch(self._batch_max, _BATCH_BYTES)
                self._rb = RingBuffer(self._fds["events"],
                                      native=(_ringbatch.sample_callback(), self._native.ctx))
            else:
                self._rb = RingBuffer(self._fds["events"], self._on_sample)
        except BackendUnavailable:
            self._teardown()
            raise
        except Exception as exc:
            self._teardown()
            raise BackendUnavailable(f"eBPF backend start failed: {exc}") from exc
        except BaseException:
            self._teardown()
            raise
        self._stop.clear()
        self._thread = threading.Thread(target=self._reader, name="sysmonx-ebpf", daemon=True)
        self._thread.start()
        self._start_visibility(wanted)

    @classmethod
    def wanted_events(cls, options: dict) -> frozenset:
        """The event IDs to collect: ``options["events"]``, else every event of the backend but
        :data:`OPTIONAL_EVENTS`, plus those of them in ``options["optional_events"]``."""
        if "events" in options:
            return frozenset(int(e) for e in options["events"])
        extra = frozenset(int(e) for e in options.get("optional_events", ()))
        return (cls.events - OPTIONAL_EVENTS) | (extra & OPTIONAL_EVENTS)

    def _start_visibility(self, wanted: set) -> None:
        from .ebpf_visibility import EVENT_MASKS, VisibilityProbes
        vis_events = wanted & set(EVENT_MASKS)
        if not vis_events or os.environ.get("SYSMONX_EBPF_VISIBILITY") == "0" \
                or self.options.get("visibility") is False:
            return
        probes = VisibilityProbes(self.emit, vis_events, self.exclude_pids,
                                  self.options.get("visibility_object"))
        try:
            probes.start()
        except BackendUnavailable as exc:
            self.emit(BackendError(ts_ns=time.time_ns(), source="ebpf.visibility",
                                   message=f"not started: {exc}"))
            return
        self.visibility = probes
        self.attached.extend(probes.attached)

    def collecting(self) -> frozenset:
        """The events asked for (:meth:`wanted_events`), without those of the visibility
        probes when they did not start."""
        wanted = self.wanted_events(self.options) & self.events
        if self.visibility is None:
            from .ebpf_visibility import EVENT_MASKS
            wanted -= frozenset(EVENT_MASKS)
        return wanted

    def set_optional_events(self, optional) -> None:
        """Switch :data:`OPTIONAL_EVENTS` on or off while running (a reloaded config): those
        in ``optional`` are collected from now on, the others no more."""
        if self.visibility is None or "events" in self.options:
            return
        self.options["optional_events"] = frozenset(optional)
        self.visibility.set_events(self.wanted_events(self.options) & self.events)

    def stop(self) -> None:
        """Stop the reader: detach every program, drain what is left in the ring buffer,
        report final losses, free the object. Idempotent; never raises. If ``emit`` is
        blocked for longer than ``stop_timeout_s`` (default 5), the programs are detached
        here anyway and the reader frees the rest when it unblocks."""
        try:
            thread = self._thread
            if thread is not None:
                self._stop.set()  # first: integrity() says nothing about links detached below
            if self.visibility is not None:
                self.visibility.stop()
            if thread is None:
                return
            thread.join(timeout=float(self.options.get("stop_timeout_s", 5)))
            if thread.is_alive() and self._obj is not None:
                self._obj.detach_all()
        except Exception:
            log.exception("ebpf backend stop")

    def stats(self) -> dict:
        """Counters: ``received``/``lost`` (totals), ``received_by_type``/``lost_by_type``,
        ``kernel_sent`` (records the kernel committed), ``reader_cpu_s`` (CPU time of the
        reader thread), ``batches``, ``decode_errors``, ``build_s``, ``attached`` and
        ``consumer`` (``"compiled"``: the C sample callback of ``sysmonx.sensor._ringbatch``;
        ``"ctypes"``: a Python callback per record)."""
        sent = self._kernel_sent
        if self._thread is not None and self._thread.is_alive():
            try:
                sent = self._read_counters("sent")
            except OSError:
                pass
        return {
            "received": sum(self._received),
            "lost": sum(self._lost),
            "received_by_type": {EV_NAMES[i]: n for i, n in enumerate(self._received) if n},
            "lost_by_type": {EV_NAMES[i]: n for i, n in enumerate(self._lost) if n},
            "kernel_sent": sum(sent) if sent else None,
            "reader_cpu_s": self._reader_cpu_ns / 1e9,
            "batches": self._batches,
            "decode_errors": self._errors,
            "build_s": self.build_seconds,
            "attached": list(self.attached),
            "visibility": self.visibility.stats() if self.visibility is not None else None,
            "frozen": list(self.frozen),
            "consumer": "ctypes" if self._native is None else "compiled",
        }

    def set_excluded(self, pids) -> None:
        """Replace the in-kernel set of excluded thread-group ids (at most 4096)."""
        from ..bpf.libbpf import map_delete, map_update
        fd = self._fds.get("excluded")
        new = frozenset(int(p) for p in pids)
        if fd is None:
            self.exclude_pids = new
            return
        for pid in self.exclude_pids - new:
            map_delete(fd, struct.pack("<I", pid))
        for pid in new:
            map_update(fd, struct.pack("<I", pid), b"\x01")
        self.exclude_pids = new
        if self.visibility is not None:
            self.visibility.set_excluded(new)

    def _freeze_maps(self, obj: BpfObject) -> None:
        """``BPF_MAP_FREEZE`` every map user space writes only at start (:data:`FROZEN_MAPS`):
        afterwards no process (root with ``bpftool map update`` included) can change the
        configuration or the excluded pids; the BPF programs still update their own state.
        A map that cannot be frozen is said once (``frozen`` in :meth:`stats` lists the rest)."""
        from ..bpfsys import map_freeze
        self.frozen = []
        for name in FROZEN_MAPS:
            try:
                map_freeze(obj.map_fd(name))
                self.frozen.append(name)
            except OSError as exc:
                self._notice(f"map {name} could not be frozen: {exc.strerror or exc}")

    def integrity(self) -> list:
        """``[(technique, details)]``: ``bpf_detach`` for each BPF link of this backend that is
        gone, no longer holds the program it held at the first call (the baseline, taken when
        the sensor's guard starts), or, for a cgroup link, was detached from its cgroup while
        the fd stays (``bpftool link detach``: ``/proc/self/fdinfo`` then says ``cgroup_id:
        0``; a cgroup link already detached at the first call is reported by that call, as
        every cgroup link this backend makes is attached when made); each link is reported
        once, naming it and what its hook no longer sees. A detached link is not attached again
        (the finding and the stderr line say what went dark)."""
        out: list = []
        if self._obj is None or self._thread is None or not self._thread.is_alive() or \
                self._stop.is_set():
            return out
        from ..bpfsys import bpf_fds
        now: dict = {}
        try:
            for _, _, info in bpf_fds(os.getpid(), "bpf_link"):
                if "link_id" in info:
                    now[info["link_id"]] = (info.get("prog_id", ""), info.get("link_type", "?"),
                                            info.get("cgroup_id"), info.get("attach_type", ""))
        except OSError:  # not listed (no descriptor left): no verdict this time
            return out
        if self._links is None:
            self._links = now
            # a cgroup link with cgroup_id 0 already at the baseline was detached between its
            # creation (attached to a cgroup, or start() had failed) and this first check
            for lid, (prog, _kind, cgroup, attach) in sorted(now.items()):
                if cgroup == "0":
                    hook = _CGROUP_HOOKS.get(attach, f"attach_type {attach}")
                    out.append(("bpf_detach", f"BPF link {lid} (cgroup, {hook}, program {prog}) "
                                              "of the sensor was detached from its cgroup before "
                                              f"the first check (cgroup_id 0): "
                                              f"{_CGROUP_DARK.get(hook, hook)} no longer seen"))
                    self._links_reported.add(lid)
                    self._notice(out[-1][1])
            return out
        for lid, (prog, kind, cgroup, attach) in self._links.items():
            cur = now.get(lid)
            if lid in self._links_reported:
                continue
            if cur is None:
                out.append(("bpf_detach", f"BPF link {lid} ({kind}) of the sensor is gone"))
            elif cur[0] != prog:
                out.append(("bpf_detach", f"BPF link {lid} ({kind}) of the sensor no longer "
                                          f"holds its program {prog} (now {cur[0] or 'none'})"))
            elif cgroup not in (None, "0") and cur[2] == "0":
                hook = _CGROUP_HOOKS.get(attach, f"attach_type {attach}")
                out.append(("bpf_detach", f"BPF link {lid} (cgroup, {hook}, program {prog}) of "
                                          f"the sensor was detached from its cgroup (cgroup_id "
                                          f"{cgroup} -> 0): {_CGROUP_DARK.get(hook, hook)} no "
                                          "longer seen"))
            else:
                continue
            self._links_reported.add(lid)
            self._notice(out[-1][1])
        return out

    # -- internals ----------------------------------------------------------------------------
    def _notice(self, message: str) -> None:
        log.warning("ebpf backend: %s", message)
        self._notices.append(message)

    def _teardown(self) -> None:
        if self._rb is not None:
            self._rb.free()
            self._rb = None
        if self._obj is not None:
            self._obj.close()
            self._obj = None
        if self._cgroup_fd is not None:
            os.close(self._cgroup_fd)
            self._cgroup_fd = None
        self._fds = {}

    def _on_sample(self, data: int, size: int) -> int:
        batch = self._batch
        batch.append(ctypes.string_at(data, size))
        return _BATCH_FULL if len(batch) >= self._batch_max else 0

    def _read_counters(self, name: str) -> Optional[list]:
        from ..bpf.libbpf import map_lookup
        fd = self._fds.get(name)
        if fd is None:
            return None
        raw = map_lookup(fd, b"\0\0\0\0", _COUNTERS.size * self._ncpu)
        if raw is None:
            return None
        totals = [0] * EV_NTYPES
        for cpu in range(self._ncpu):
            for i, v in enumerate(_COUNTERS.unpack_from(raw, cpu * _COUNTERS.size)):
                totals[i] += v
        return totals

    def _check_drops(self) -> None:
        drops = self._read_counters("drops")
        if drops is None:
            return
        delta = [d - seen for d, seen in zip(drops, self._lost, strict=True)]
        total = sum(delta)
        if total > 0:
            self._lost = drops
            detail = " ".join(f"{EV_NAMES[i]}={n}" for i, n in enumerate(delta) if n)
            self.emit(Loss(ts_ns=time.time_ns(), source="ebpf.ringbuf", count=total,
                           detail=detail))

    def _reader(self) -> None:
        set_native_name("sysmonx-ebpf")
        timeout = int(self.options.get("poll_timeout_ms", 50))
        slow = float(self.options.get("slow_consumer_s", 0))
        coalesce = float(self.options.get("coalesce_ms", 50.0)) / 1000
        drops_every = 0.1
        next_drops = 0.0
        cpu0 = time.thread_time_ns()
        assert self._obj is not None and self._rb is not None  # loaded by start()
        try:
            for msg in self._notices:
                self.emit(BackendError(ts_ns=time.time_ns(), source="ebpf", message=msg))
            while not self._stop.is_set():
                rc = self._rb.poll(timeout)
                if rc == -errno.ENOMEM and self._native is not None:
                    self._native_nomem()
                elif rc < 0 and rc != _BATCH_FULL:
                    raise OSError(-rc, f"ring_buffer__poll: {os.strerror(-rc)}")
                got = len(self._batch) if self._native is None else len(self._native)
                self._drain_batch(slow)
                now = time.monotonic()
                if now >= next_drops:
                    self._check_drops()
                    self._reader_cpu_ns = time.thread_time_ns() - cpu0
                    next_drops = now + drops_every
                if rc != _BATCH_FULL and 0 < got < self._batch_max and coalesce:
                    # let a burst accumulate: one wake-up per batch instead of per record (a
                    # poll ended by the batch's byte bound left records in the ring: no sleep;
                    # a stop ends the wait at once)
                    self._stop.wait(coalesce)
            # final: detach (no new records), drain the rest, last loss report
            self._obj.detach_all()
            while True:
                n = self._rb.consume()
                self._drain_batch(slow)
                if n == -errno.ENOMEM and self._native is not None:
                    self._native_nomem()
                    continue
                if n != _BATCH_FULL:
                    break
            self._check_drops()
            self._kernel_sent = self._read_counters("sent")
        except Exception as exc:
            log.exception("ebpf reader failed")
            try:
                self.emit(BackendError(ts_ns=time.time_ns(), source="ebpf",
                                       message=f"reader failed: {exc!r}", fatal=True))
            except Exception:  # noqa: BLE001 - best effort while reporting a crash
                pass
        finally:
            self._reader_cpu_ns = time.thread_time_ns() - cpu0
            with self._lock:
                self._teardown()

    def _native_nomem(self) -> None:
        """The compiled consumer could not store a record (out of memory): report it lost."""
        assert self._native is not None
        lost, self._nomem_seen = self._native.nomem - self._nomem_seen, self._native.nomem
        if lost:
            self.emit(Loss(ts_ns=time.time_ns(), source="ebpf.ringbuf", count=lost,
                           detail="out of memory in the record batch"))

    def _drain_batch(self, slow: float) -> None:
        native = self._native
        if not (len(native) if native is not None else self._batch):
            return
        self._batches += 1
        now = time.monotonic()
        if now >= self._offset_due:  # one careful offset a second: stamps keep their order
            from ..procfs import clock_offset
            self._offset = clock_offset(time.CLOCK_BOOTTIME)
            self._offset_due = now + 1.0
        offset = self._offset
        if native is not None:
            if _NATIVE_DECODE and not slow:
                # fork/exec/exit decoded in C (the same observations as _decode); the rest
                # come back as bytes for _decode
                out, left = native.take_decoded(offset, _NS_PER_TICK, _COMMON, self._received)
                if left:
                    out = self._decode_left(out, offset)
                self.emit_all(out)
                return
            batch = native.take()
        else:
            batch, self._batch = self._batch, []
        out = []
        for rec in batch:
            try:
                obs = self._decode(rec, offset)
            except Exception:
                self._errors += 1
                log.debug("undecodable ebpf record %r", rec[:64], exc_info=True)
                continue
            if slow:
                time.sleep(slow)
                if obs is not None:
                    self.emit(obs)  # loss tests: one at a time, as slowly as asked
                continue
            if obs is not None:
                out.append(obs)
        self.emit_all(out)

    def _decode_left(self, items: list, offset: int) -> list:
        """``items`` with every ``bytes`` record decoded by :meth:`_decode` (dropped when it
        gives nothing or fails: counted in ``decode_errors``)."""
        out = []
        for item in items:
            if type(item) is bytes:
                try:
                    item = self._decode(item, offset)
                except Exception:
                    self._errors += 1
                    log.debug("undecodable ebpf record %r", item[:64], exc_info=True)
                    continue
                if item is None:
                    continue
            out.append(item)
        return out

    def _decode(self, rec: bytes, offset: int):
        etype, flags, pid, tid, abi, ts = _HDR.unpack_from(rec)
        if abi != ABI_VERSION:
            raise ValueError(f"ABI {abi} != {ABI_VERSION}")
        self._received[etype] += 1
        ts += offset
        if etype == EV_EXEC:
            return self._decode_exec(rec, flags, pid, tid, ts)
        if etype == EV_FORK:
            ppid, uid, start = _FORK.unpack_from(rec, _HS)
            return ProcessFork(ts_ns=ts, pid=pid, ppid=ppid, start_ticks=start // _NS_PER_TICK,
                               uid=uid)
        if etype == EV_EXIT:
            start, code, _ = _EXIT.unpack_from(rec, _HS)
            return ProcessExit(ts_ns=ts, pid=pid, start_ticks=start // _NS_PER_TICK,
                               exit_code=(code >> 8) & 0xFF)
        if etype == EV_NET:
            return self._decode_net(rec, pid, ts)
        if etype in (EV_FILE_CREATE, EV_RAW_READ):
            plen, _, _ = _PATH.unpack_from(rec, _HS)
            start = _HS + _PATH.size
            path = _components(rec[start:start + plen])
            if etype == EV_FILE_CREATE:
                return FileCreate(ts_ns=ts, pid=pid, path=path)
            return RawAccessRead(ts_ns=ts, pid=pid, device=path)
        if etype == EV_FILE_DELETE:
            return FileDelete(ts_ns=ts, pid=pid, path=self._delete_path(rec, flags, pid))
        if etype == EV_PTRACE:
            target, _, request = _PTRACE.unpack_from(rec, _HS)
            return ProcessAccess(ts_ns=ts, pid=pid, target_pid=target, request=request, tid=tid)
        raise ValueError(f"unknown record type {etype}")

    @staticmethod
    def _decode_exec(rec: bytes, flags: int, pid: int, tid: int, ts: int) -> ProcessExec:
        (ppid, uid, auid, ses, start, end_code, alen, ilen, clen,
         _, mnt_ns, pid_ns) = _EXEC.unpack_from(rec, _HS)
        base = _HS + _EXEC.size
        raw_argv = rec[base:base + alen]
        if flags & F_ARGV_FAIL:
            argv = None
        else:
            if raw_argv.endswith(b"\0"):
                raw_argv = raw_argv[:-1]
            argv = raw_argv.decode(_FS_ENCODING, _FS_ERRORS).split("\0") if raw_argv else []
        raw_image = rec[base + alen:base + alen + ilen]
        cwd = _components(rec[base + alen + ilen:base + alen + ilen + clen])
        image: Optional[str]
        if flags & F_IMAGE_FILENAME:
            image = _fsdecode(raw_image.rstrip(b"\0"))
            image = _normpath(image if image.startswith("/") else f"{cwd}/{image}")
        elif flags & F_IMAGE_PSEUDO:  # d_path of a memfd: "/memfd:NAME (deleted)"
            image = "/" + _fsdecode(raw_image.rstrip(b"\0")) + " (deleted)"
        else:
            image = _components(raw_image) if ilen else None
            if image and flags & F_IMAGE_DELETED:
                image += " (deleted)"
        return ProcessExec(ts_ns=ts, pid=pid, ppid=ppid, tid=tid,
                           start_ticks=start // _NS_PER_TICK, image=image, argv=argv, cwd=cwd,
                           uid=uid, auid=auid, sessionid=ses, end_data=end_code,
                           mnt_ns=mnt_ns or None, pid_ns=pid_ns or None)

    @staticmethod
    def _decode_net(rec: bytes, pid: int, ts: int) -> NetworkConnect:
        proto, family, initiated, _, lport, rport, laddr, raddr = _NET.unpack_from(rec, _HS)
        v6 = family == socket.AF_INET6
        local, remote = _ip(family, laddr), _ip(family, raddr)
        unspecified = "::" if v6 else "0.0.0.0"
        protocol = "tcp" if proto == socket.IPPROTO_TCP else "udp"
        if initiated:
            return NetworkConnect(ts_ns=ts, pid=pid, protocol=protocol, initiated=True,
                                  dest_ip=remote or unspecified, dest_port=rport,
                                  source_ip=local, source_port=lport or None, ipv6=v6)
        return NetworkConnect(ts_ns=ts, pid=pid, protocol=protocol, initiated=False,
                              dest_ip=local or unspecified, dest_port=lport,
                              source_ip=remote, source_port=rport or None, ipv6=v6)

    @staticmethod
    def _delete_path(rec: bytes, flags: int, pid: int) -> str:
        plen, blen, dfd = _PATH.unpack_from(rec, _HS)
        start = _HS + _PATH.size
        upath = os.fsdecode(rec[start:start + plen].rstrip(b"\0"))
        if upath.startswith("/"):
            return _normpath(upath)
        if blen:
            base = _components(rec[start + plen:start + plen + blen])
        else:
            # the BPF walk found nothing: best effort through /proc (the process may be gone)
            link = f"/proc/{pid}/cwd" if flags & F_BASE_CWD or dfd == AT_FDCWD \
                else f"/proc/{pid}/fd/{dfd}"
            try:
                base = os.readlink(link)
            except OSError:
                return upath
        return _normpath(f"{base}/{upath}")
