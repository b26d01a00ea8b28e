"""Tier A's second BPF object (``sensor/bpf/visibility.bpf.c``): the syscall observations
beyond Sysmon for Linux's events, started by the ``ebpf`` backend beside its main object.

=====================  ==================================================  ====================
Observation            kernel source (tp_btf/sys_enter + sys_exit)         event
=====================  ==================================================  ====================
PrivilegeChange        set[re[s]]{u,g}id, setfs{u,g}id, capset: creds     211 PrivilegeChange
                       before and after a successful call that gained
MemfdCreate            memfd_create (name, flags)                          212 MemfdCreate
ExecMemory             mmap PROT_EXEC of anonymous or W+X memory;          213 ExecMemory
                       mprotect PROT_EXEC of anonymous or writable memory
                       (the VMA found with bpf_find_vma)
ImageMap               mmap PROT_EXEC of a file (path by the dentry walk)  7 ImageLoad
MemoryWrite            process_vm_writev (first remote iovec, bytes);      8 CreateRemoteThread
                       ptrace POKETEXT/POKEDATA/POKEUSER/SETREGS/SETREGSET
ProcessTamper          prctl(PR_SET_MM, EXE_FILE / ARG_START / ARG_END /   25 ProcessTampering
                       MAP)
ModuleLoad             finit_module (the fd's path), init_module           6 DriverLoad
=====================  ==================================================  ====================

Two programs on the raw syscall tracepoints (no tracefs needed; a syscall that is not watched
costs one switch on its number). Each class is switched on in the kernel by a bit of
``vconfig`` (:meth:`VisibilityProbes.set_events`), so a class that is off costs one map
look-up per watched syscall; mmap/mprotect without PROT_EXEC return before that. On a kernel
without module support (no ``/proc/modules``) DriverLoad cannot occur, which
:attr:`VisibilityProbes.notices` says when it was asked for. Native syscalls only (not those of
32-bit compat processes).
"""

from __future__ import annotations

import ctypes
import logging
import os
import struct
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from .. import observations as ob
from ..threadname import set_native_name
from .base import BackendUnavailable

__all__ = ["VisibilityProbes", "EVENT_MASKS", "SYSCALL_NAMES", "PTRACE_NAMES"]

log = logging.getLogger(__name__)

VABI_VERSION = 1
(VEV_CRED, VEV_MEMFD, VEV_EXECMEM, VEV_IMAGE, VEV_VMWRITE, VEV_TAMPER, VEV_MODULE) = range(1, 8)
VEV_NTYPES = 8
VEV_NAMES = {VEV_CRED: "cred", VEV_MEMFD: "memfd", VEV_EXECMEM: "execmem", VEV_IMAGE: "image",
             VEV_VMWRITE: "vmwrite", VEV_TAMPER: "tamper", VEV_MODULE: "module"}

#: Sysmon/SysmonX event id -> vconfig bit
EVENT_MASKS = {211: 1, 212: 2, 213: 4, 7: 8, 8: 16, 25: 32, 6: 64}

#: enum vsys of visibility.bpf.c -> syscall name
SYSCALL_NAMES = {1: "setuid", 2: "setgid", 3: "setreuid", 4: "setregid", 5: "setresuid",
                 6: "setresgid", 7: "setfsuid", 8: "setfsgid", 9: "capset", 10: "memfd_create",
                 11: "mmap", 12: "mprotect", 13: "process_vm_writev", 14: "ptrace",
                 15: "prctl", 16: "init_module", 17: "finit_module"}
PTRACE_NAMES = {4: "PTRACE_POKETEXT", 5: "PTRACE_POKEDATA", 6: "PTRACE_POKEUSER",
                13: "PTRACE_SETREGS", 0x4205: "PTRACE_SETREGSET"}
_PRCTL_KIND = {13: "exe", 8: "argv", 9: "argv", 14: "argv"}
_CHANGE = {0: "User", 1: "Group", 2: "Capabilities"}

#: How long one wait on the ring buffer lasts (ms). A record ends the wait at once (the kernel
#: wakes the reader), so this bounds only how often an idle reader wakes (its loss check,
#: its stop) and how long :meth:`VisibilityProbes.stop` waits for it. These probes see nothing
#: of an exec load (no record at 1,600 execs/s of ``/bin/true``), so the reader is idle most of
#: the time: 200 ms (was 50): 2.4-2.9 -> 0.8-1.0 ms of its CPU per second, idle and under the
#: bench spawner's load alike (two pairs, same minute).
POLL_MS = 200

_HDR = struct.Struct("<HHIIIQ")
_CRED = struct.Struct("<II3Q3Q")
_MEMFD = struct.Struct("<II")
_EXECMEM = struct.Struct("<IIIIQQ")
_PATH = struct.Struct("<IHH")
_VMWRITE = struct.Struct("<IIQQ")
_TAMPER = struct.Struct("<II")
_COUNTERS = struct.Struct(f"<{VEV_NTYPES}Q")
_HS = _HDR.size


class VisibilityProbes:
    """Load, attach and read ``visibility.bpf.c``.

    Args:
        emit: called with each observation (and with batches through ``emit.many`` when the
            callable has it).
        events: event ids to collect (keys of :data:`EVENT_MASKS`).
        exclude_pids: thread-group ids filtered in the kernel.
        object_path: a prebuilt object (default: build ``visibility.bpf.c`` with the cache).

    Raises (from :meth:`start`):
        BackendUnavailable: build, load or attach of a required program failed; nothing is
            left loaded.
    """

    def __init__(self, emit: Callable, events: Iterable[int], exclude_pids: frozenset = frozenset(),
                 object_path: Optional[str] = None, ringbuf_bytes: int = 4 << 20) -> None:
        self.emit = emit
        self.events = frozenset(int(e) for e in events) & frozenset(EVENT_MASKS)
        self.exclude_pids = frozenset(exclude_pids)
        self.object_path = object_path
        self.ringbuf_bytes = ringbuf_bytes
        self.notices: list[str] = []
        self.attached: list[str] = []
        self.received = [0] * VEV_NTYPES
        self.lost = [0] * VEV_NTYPES
        self.decode_errors = 0
        self.reader_cpu_ns = 0
        self._obj: Optional[Any] = None
        self._rb: Optional[Any] = None
        self._fds: dict = {}
        self._batch: list = []
        self._ncpu = 1
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._offset = 0
        self._offset_due = 0.0

    def start(self) -> None:
        """Build/load the object, set the event mask and exclusions, attach, start the reader
        thread (``sysmonx-ebpf-vis``)."""
        from ..bpf import build as bpf_build
        from ..bpf.libbpf import BpfObject, LibbpfError, RingBuffer, map_update, possible_cpus
        path = Path(self.object_path) if self.object_path else \
            bpf_build.build(source=bpf_build.VISIBILITY_SOURCE)
        try:
            obj = BpfObject(str(path))
        except (LibbpfError, OSError) as exc:
            raise BackendUnavailable(f"cannot open BPF object {path}: {exc}") from None
        self._obj = obj
        try:
            obj.set_max_entries("vevents", self.ringbuf_bytes)
            try:
                obj.load()
            except LibbpfError as exc:
                raise BackendUnavailable(f"visibility BPF load failed: {exc}") from None
            self._ncpu = possible_cpus()
            for m in ("vevents", "vdrops", "vsent", "vexcluded", "vconfig"):
                self._fds[m] = obj.map_fd(m)
            self.set_events(self.events)
            for pid in self.exclude_pids:
                map_update(self._fds["vexcluded"], struct.pack("<I", pid), b"\x01")
            for _pname, (section, prog) in obj.programs().items():
                try:
                    obj.attach(prog)
                except LibbpfError as exc:
                    raise BackendUnavailable(f"attach {section} failed: {exc}") from None
                self.attached.append(section)
            missing_modules = not os.path.exists("/proc/modules")
            if missing_modules and 6 in self.events:
                self.notices.append("kernel without module support (no /proc/modules): no "
                                    "module can be loaded, DriverLoad (6) never occurs")
            self._rb = RingBuffer(self._fds["vevents"], self._on_sample)
        except BaseException:
            self._teardown()
            raise
        self._stop.clear()
        self._thread = threading.Thread(target=self._reader, name="sysmonx-ebpf-vis", daemon=True)
        self._thread.start()

    def set_events(self, events: Iterable[int]) -> None:
        """Switch the kernel-side collection to ``events`` (ids of :data:`EVENT_MASKS`)."""
        from ..bpf.libbpf import map_update
        self.events = frozenset(int(e) for e in events) & frozenset(EVENT_MASKS)
        mask = 0
        for e in self.events:
            mask |= EVENT_MASKS[e]
        fd = self._fds.get("vconfig")
        if fd is not None:
            map_update(fd, struct.pack("<I", 0), struct.pack("<II", mask, 0))

    def set_excluded(self, pids) -> None:
        """Replace the in-kernel set of excluded thread-group ids."""
        from ..bpf.libbpf import map_delete, map_update
        new = frozenset(int(p) for p in pids)
        fd = self._fds.get("vexcluded")
        if fd is not None:
            for pid in self.exclude_pids - new:
                map_delete(fd, struct.pack("<I", pid))
            for pid in new:
                map_update(fd, struct.pack("<I", pid), b"\x01")
        self.exclude_pids = new

    def stop(self) -> None:
        """Stop the reader (it detaches, drains and frees the object). Idempotent."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout=5)
        if thread.is_alive() and self._obj is not None:
            self._obj.detach_all()

    def stats(self) -> dict:
        """``received``/``lost`` per record type, ``decode_errors``, ``reader_cpu_s``."""
        return {"received_by_type": {VEV_NAMES[i]: n for i, n in enumerate(self.received) if n},
                "lost_by_type": {VEV_NAMES[i]: n for i, n in enumerate(self.lost) if n},
                "decode_errors": self.decode_errors, "reader_cpu_s": self.reader_cpu_ns / 1e9,
                "attached": list(self.attached)}

    # -- internals ----------------------------------------------------------------------------
    def _teardown(self) -> None:
        if self._rb is not None:
            self._rb.free()
            self._rb = None
        if self._obj is not None:
            self._obj.close()
            self._obj = None
        self._fds = {}

    def _on_sample(self, data: int, size: int) -> int:
        self._batch.append(ctypes.string_at(data, size))
        return 0

    def _check_drops(self) -> None:
        from ..bpf.libbpf import map_lookup
        fd = self._fds.get("vdrops")
        if fd is None:
            return
        raw = map_lookup(fd, b"\0\0\0\0", _COUNTERS.size * self._ncpu)
        if raw is None:
            return
        totals = [0] * VEV_NTYPES
        for cpu in range(self._ncpu):
            for i, v in enumerate(_COUNTERS.unpack_from(raw, cpu * _COUNTERS.size)):
                totals[i] += v
        delta = [t - s for t, s in zip(totals, self.lost, strict=True)]
        if sum(delta) > 0:
            self.lost = totals
            detail = " ".join(f"{VEV_NAMES[i]}={n}" for i, n in enumerate(delta) if n)
            self.emit(ob.Loss(ts_ns=time.time_ns(), source="ebpf.visibility", count=sum(delta),
                              detail=detail))

    def _reader(self) -> None:
        set_native_name("sysmonx-ebpfvis")
        cpu0 = time.thread_time_ns()
        next_drops = 0.0
        assert self._rb is not None and self._obj is not None
        try:
            for msg in self.notices:
                self.emit(ob.BackendError(ts_ns=time.time_ns(), source="ebpf.visibility",
                                          message=msg, host_fact=True))
            while not self._stop.is_set():
                rc = self._rb.poll(POLL_MS)
                if rc < 0:
                    raise OSError(-rc, f"ring_buffer__poll: {os.strerror(-rc)}")
                self._drain()
                now = time.monotonic()
                if now >= next_drops:
                    self._check_drops()
                    self.reader_cpu_ns = time.thread_time_ns() - cpu0
                    next_drops = now + 0.1
            self._obj.detach_all()
            self._rb.consume()
            self._drain()
            self._check_drops()
        except Exception as exc:
            log.exception("ebpf visibility reader failed")
            try:
                self.emit(ob.BackendError(ts_ns=time.time_ns(), source="ebpf.visibility",
                                          message=f"reader failed: {exc!r}", fatal=True))
            except Exception:  # noqa: BLE001 - best effort while reporting a crash
                pass
        finally:
            self.reader_cpu_ns = time.thread_time_ns() - cpu0
            self._teardown()

    def _drain(self) -> None:
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        now = time.monotonic()
        if now >= self._offset_due:
            from ..procfs import clock_offset
            self._offset = clock_offset(time.CLOCK_BOOTTIME)
            self._offset_due = now + 1.0
        out = []
        for rec in batch:
            try:
                o = self.decode(rec, self._offset)
            except Exception:
                self.decode_errors += 1
                log.debug("undecodable visibility record %r", rec[:64], exc_info=True)
                continue
            if o is not None:
                out.append(o)
        many = getattr(self.emit, "many", None)
        if many is not None and len(out) > 1:
            many(out)
        else:
            for o in out:
                self.emit(o)

    def decode(self, rec: bytes, offset: int = 0):
        """One ring-buffer record -> an observation (``ts_ns`` = boot time + ``offset``).

        Raises:
            ValueError: unknown record type or ABI.
        """
        from .ebpf import _components
        etype, flags, pid, tid, abi, ts = _HDR.unpack_from(rec)
        if abi != VABI_VERSION:
            raise ValueError(f"ABI {abi} != {VABI_VERSION}")
        self.received[etype] += 1
        ts += offset
        if etype == VEV_CRED:
            sys, kind, b0, b1, b2, a0, a1, a2 = _CRED.unpack_from(rec, _HS)
            return ob.PrivilegeChange(ts_ns=ts, pid=pid, syscall=SYSCALL_NAMES.get(sys, str(sys)),
                                      change=_CHANGE[kind], before=(b0, b1, b2),
                                      after=(a0, a1, a2))
        if etype == VEV_MEMFD:
            mflags, nlen = _MEMFD.unpack_from(rec, _HS)
            raw = rec[_HS + _MEMFD.size:_HS + _MEMFD.size + nlen]
            return ob.MemfdCreate(ts_ns=ts, pid=pid, name=os.fsdecode(raw.rstrip(b"\0")),
                                  flags=mflags)
        if etype == VEV_EXECMEM:
            sys, prot, prev, _, addr, length = _EXECMEM.unpack_from(rec, _HS)
            return ob.ExecMemory(ts_ns=ts, pid=pid, syscall=SYSCALL_NAMES.get(sys, str(sys)),
                                 address=addr, length=length, prot=prot,
                                 prev_prot=None if prev == 0xFFFFFFFF else prev)
        if etype in (VEV_IMAGE, VEV_MODULE):
            sys, plen, _ = _PATH.unpack_from(rec, _HS)
            raw = rec[_HS + _PATH.size:_HS + _PATH.size + plen]
            path: Optional[str] = None
            if plen:
                if flags & 2:
                    path = "/" + os.fsdecode(raw.rstrip(b"\0")) + " (deleted)"
                else:
                    path = _components(raw) + (" (deleted)" if flags & 4 else "")
            if etype == VEV_MODULE:
                return ob.ModuleLoad(ts_ns=ts, pid=pid, path=path)
            return ob.ImageMap(ts_ns=ts, pid=pid, path=path or "-")
        if etype == VEV_VMWRITE:
            target, request, addr, size = _VMWRITE.unpack_from(rec, _HS)
            method = "process_vm_writev" if request == 0 else \
                f"ptrace({PTRACE_NAMES.get(request, hex(request))})"
            return ob.MemoryWrite(ts_ns=ts, pid=pid, target_pid=target, method=method,
                                  address=addr, size=size or None, tid=tid)
        if etype == VEV_TAMPER:
            option, _ = _TAMPER.unpack_from(rec, _HS)
            return ob.ProcessTamper(ts_ns=ts, pid=pid, kind=_PRCTL_KIND.get(option, "argv"))
        raise ValueError(f"unknown record type {etype}")
