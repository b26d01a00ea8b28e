"""Observations of the extra Linux visibility -> events: DriverLoad (6), ImageLoad (7),
CreateRemoteThread (8, remote memory writes), ProcessTampering (25, identity changed through
prctl) and the SysmonX events ShellCommand (210), PrivilegeChange (211), MemfdCreate (212) and
ExecMemory (213).

Each builder is registered in :data:`sysmonx.sensor.assemble.BUILDERS` for its observation type,
so every tier that reports the observation gives the same fields (the unknown-value convention of
:mod:`sysmonx.sensor.assemble`). Field order comes from the schema catalogue.

Value formats (documented in the catalogue's event descriptions):

* addresses ``0x`` + lower-case hex; sizes decimal bytes;
* protections as ``rwx`` with ``-`` for a missing right (``r-x``);
* PrivilegeChange ids as ``ruid/euid/suid`` (``1000/0/0``), capabilities as three 16-digit hex
  masks ``effective/permitted/inheritable``;
* event 8 on Linux: ``StartAddress`` the first remote address written, ``StartFunction`` the
  call that wrote it (``process_vm_writev``, ``ptrace(PTRACE_POKETEXT)``), ``NewThreadId`` 0 and
  ``StartModule`` ``-`` (no thread is created).

MemfdCreate and ExecMemory are rate-limited per process: at most :data:`RATE_MAX` events of one
kind per process per :data:`RATE_WINDOW_NS`; what is suppressed is counted in
``Assembler.rate_limited`` and said once per window in an event 255 (``ID`` ``RateLimit``).
"""

from __future__ import annotations

from typing import Optional

from ..event import Event
from . import observations as ob
from .assemble import BUILDERS, IDENTITY_CHECK, UNKNOWN, Assembler, utc_time
from .process import ZERO_GUID, clean_text

__all__ = ["RATE_MAX", "RATE_WINDOW_NS", "prot_text", "memfd_flags_text", "TAMPER_KIND_TYPES"]

RATE_MAX = 20
RATE_WINDOW_NS = 10_000_000_000

#: ProcessTampering ``Type`` for what prctl(PR_SET_MM) changed.
TAMPER_KIND_TYPES = {"exe": "Image is replaced", "argv": "Command line is rewritten"}

_MFD = ((1, "MFD_CLOEXEC"), (2, "MFD_ALLOW_SEALING"), (4, "MFD_HUGETLB"),
        (8, "MFD_NOEXEC_SEAL"), (0x10, "MFD_EXEC"))


def prot_text(prot: Optional[int]) -> str:
    """PROT_* bits as ``rwx`` (``-`` for each right missing); ``-`` when unknown."""
    if prot is None:
        return UNKNOWN
    return ("r" if prot & 1 else "-") + ("w" if prot & 2 else "-") + ("x" if prot & 4 else "-")


def memfd_flags_text(flags: int) -> str:
    """MFD_* names joined by ``|`` (unknown bits as hex), ``0`` for none."""
    names = [n for bit, n in _MFD if flags & bit]
    rest = flags & ~sum(b for b, _ in _MFD)
    if flags & 4:  # MFD_HUGETLB carries the page size in bits 26-31
        rest &= ~(0x3F << 26)
    if rest:
        names.append(hex(rest))
    return "|".join(names) if names else "0"


def _who(a: Assembler, pid: int) -> tuple[str, str, str, str]:
    info = a.cache.get(pid)
    if info is None:
        return ZERO_GUID, str(pid), UNKNOWN, UNKNOWN
    return info.guid, str(pid), info.image or UNKNOWN, info.user


def _limited(a: Assembler, kind: int, pid: int, ts_ns: int) -> Optional[list]:
    """``None`` when the event may be written; else the events to write instead (an event 255
    once per window, or nothing)."""
    state = a.rate_state
    key = (kind, pid)
    start, count, said = state.get(key, (ts_ns, 0, False))
    if ts_ns - start >= RATE_WINDOW_NS:
        start, count, said = ts_ns, 0, False
    count += 1
    if count <= RATE_MAX:
        state[key] = (start, count, said)
        if len(state) > 8192:
            for k in list(state)[:4096]:
                del state[k]
        return None
    a.rate_limited[kind] = a.rate_limited.get(kind, 0) + 1
    state[key] = (start, count, True)
    if said:
        return []
    return [a.error("RateLimit", f"event {kind} of process {pid}: more than {RATE_MAX} in "
                    f"{RATE_WINDOW_NS // 10**9} s; the rest of this window is not written",
                    ts_ns)]


def _module(a: Assembler, o: ob.ModuleLoad) -> list[Event]:
    loaded = o.path or (f"module:{o.name}" if o.name else UNKNOWN)
    return [a.envelope(6, {
        "RuleName": "-", "UtcTime": utc_time(o.ts_ns), "ImageLoaded": clean_text(loaded),
        "Hashes": a.hasher.hashes(o.path) if o.path else UNKNOWN, "Signed": UNKNOWN,
        "Signature": UNKNOWN, "SignatureStatus": UNKNOWN}, o.ts_ns)]


def _image_map(a: Assembler, o: ob.ImageMap) -> list[Event]:
    guid, pid, image, user = _who(a, o.pid)
    return [a.envelope(7, {
        "RuleName": "-", "UtcTime": utc_time(o.ts_ns), "ProcessGuid": guid, "ProcessId": pid,
        "Image": image, "ImageLoaded": clean_text(o.path), "FileVersion": "-",
        "Description": "-", "Product": "-", "Company": "-", "OriginalFileName": "-",
        "Hashes": a.hasher.hashes(o.path), "Signed": UNKNOWN, "Signature": UNKNOWN,
        "SignatureStatus": UNKNOWN, "User": user}, o.ts_ns)]


def _memory_write(a: Assembler, o: ob.MemoryWrite) -> list[Event]:
    sguid, spid, simage, suser = _who(a, o.pid)
    tguid, tpid, timage, tuser = _who(a, o.target_pid)
    return [a.envelope(8, {
        "RuleName": "-", "UtcTime": utc_time(o.ts_ns), "SourceProcessGuid": sguid,
        "SourceProcessId": spid, "SourceImage": simage, "TargetProcessGuid": tguid,
        "TargetProcessId": tpid, "TargetImage": timage, "NewThreadId": "0",
        "StartAddress": f"0x{o.address:x}" if o.address is not None else UNKNOWN,
        "StartModule": UNKNOWN, "StartFunction": o.method,
        "SourceUser": suser, "TargetUser": tuser}, o.ts_ns)]


def _ids(t: tuple, change: str) -> str:
    if change == "Capabilities":
        return "/".join(f"0x{v:016x}" for v in t)
    return "/".join(str(v) for v in t)


def _privilege(a: Assembler, o: ob.PrivilegeChange) -> list[Event]:
    guid, pid, image, user = _who(a, o.pid)
    info = a.cache.peek(o.pid)
    if info is not None and o.change == "User" and len(o.after) > 0:
        info.uid = o.after[0]  # the real uid, as the User field shows it from now on
        user = info.user
    return [a.envelope(211, {
        "RuleName": "-", "UtcTime": utc_time(o.ts_ns), "ProcessGuid": guid, "ProcessId": pid,
        "Image": image, "User": user, "Syscall": o.syscall, "ChangeType": o.change,
        "PreviousValue": _ids(o.before, o.change), "NewValue": _ids(o.after, o.change)},
        o.ts_ns)]


def _memfd(a: Assembler, o: ob.MemfdCreate) -> list[Event]:
    limited = _limited(a, 212, o.pid, o.ts_ns)
    if limited is not None:
        return limited
    guid, pid, image, user = _who(a, o.pid)
    return [a.envelope(212, {
        "RuleName": "-", "UtcTime": utc_time(o.ts_ns), "ProcessGuid": guid, "ProcessId": pid,
        "Image": image, "User": user, "Name": (clean_text(o.name) if o.name is not None else None) or UNKNOWN,
        "Flags": memfd_flags_text(o.flags)}, o.ts_ns)]


def _exec_memory(a: Assembler, o: ob.ExecMemory) -> list[Event]:
    limited = _limited(a, 213, o.pid, o.ts_ns)
    if limited is not None:
        return limited
    guid, pid, image, user = _who(a, o.pid)
    return [a.envelope(213, {
        "RuleName": "-", "UtcTime": utc_time(o.ts_ns), "ProcessGuid": guid, "ProcessId": pid,
        "Image": image, "User": user, "Syscall": o.syscall, "Address": f"0x{o.address:x}",
        "Length": str(o.length), "Protection": prot_text(o.prot),
        "PreviousProtection": prot_text(o.prev_prot)}, o.ts_ns)]


def _shell(a: Assembler, o: ob.ShellCommand) -> list[Event]:
    guid, pid, image, user = _who(a, o.pid)
    return [a.envelope(210, {
        "RuleName": "-", "UtcTime": utc_time(o.ts_ns), "ProcessGuid": guid, "ProcessId": pid,
        "Image": image, "User": user, "Tty": o.tty or UNKNOWN,
        "Command": clean_text(o.command) or ""}, o.ts_ns)]


def _tamper(a: Assembler, o: ob.ProcessTamper) -> list[Event]:
    guid, pid, image, user = _who(a, o.pid)
    return [a.envelope(25, {
        "RuleName": "-", "UtcTime": utc_time(o.ts_ns), "ProcessGuid": guid, "ProcessId": pid,
        "Image": image, "Type": TAMPER_KIND_TYPES.get(o.kind, o.kind), "User": user},
        o.ts_ns)]


#: How often (ns) one process's identity is compared with /proc at most.
IDENTITY_CHECK_NS = 5_000_000_000
#: Observations of a running process that trigger :func:`check_identity`.
IDENTITY_TRIGGERS = (ob.NetworkConnect, ob.FileCreate, ob.FileDelete, ob.RawAccessRead,
                     ob.ShellCommand, ob.MemfdCreate, ob.ExecMemory, ob.ImageMap,
                     ob.MemoryWrite, ob.PrivilegeChange)


def check_identity(a: Assembler, pid: int, ts_ns: int) -> list[Event]:
    """ProcessTampering (25) when a running process no longer shows what it exec'd: its
    ``/proc/PID/cmdline`` differs from the command line recorded at the exec (argv rewritten in
    place, or moved: ``Command line is rewritten``), or ``/proc/PID/exe`` from the recorded image
    (``Image is replaced``). Each kind once per process; at most one look every
    :data:`IDENTITY_CHECK_NS` per process, when the process does something else that is
    reported. A small local check: the scanners' identity checks are meant to replace it.
    A longer cmdline than the recorded one (which a tier cuts at 4 KiB) is compared on the
    recorded length only."""
    from .procfs import read_process
    info = a.cache.peek(pid)
    if info is None or info.exited_ns is not None or info.command_line is None:
        return []
    extra = info.extra
    if ts_ns - extra.get("identity_checked", -IDENTITY_CHECK_NS) < IDENTITY_CHECK_NS:
        return []
    extra["identity_checked"] = ts_ns
    snap = read_process(pid)
    if snap.start_ticks is None or (info.start_ticks is not None
                                    and snap.start_ticks != info.start_ticks):
        return []  # gone, or the pid is another process now
    out = []
    if snap.argv is not None and not extra.get("argv_rewritten"):
        now = clean_text(" ".join(snap.argv)) or ""
        recorded = info.command_line
        if now[:len(recorded)] != recorded or (len(now) < len(recorded)):
            extra["argv_rewritten"] = True
            out.append(_tamper(a, ob.ProcessTamper(ts_ns, pid, "argv"))[0])
    if snap.exe is not None and info.image and not extra.get("exe_replaced") \
            and clean_text(snap.exe) not in (info.image, f"{info.image} (deleted)"):
        extra["exe_replaced"] = True
        out.append(_tamper(a, ob.ProcessTamper(ts_ns, pid, "exe"))[0])
    return out


BUILDERS.update({
    ob.ModuleLoad: _module, ob.ImageMap: _image_map, ob.MemoryWrite: _memory_write,
    ob.PrivilegeChange: _privilege, ob.MemfdCreate: _memfd, ob.ExecMemory: _exec_memory,
    ob.ShellCommand: _shell, ob.ProcessTamper: _tamper,
})
IDENTITY_CHECK.update({t: check_identity for t in IDENTITY_TRIGGERS})
