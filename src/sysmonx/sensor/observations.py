"""What a live trace backend reports: small, kernel-shaped observations.

Backends (``sysmonx.sensor.backends.*``) only observe; they never build Sysmon events. The sensor
core (:mod:`sysmonx.sensor.assemble`) turns observations into Sysmon for Linux events with the
process cache, so every backend yields identical field values for the same activity.

Conventions for every observation:

* ``ts_ns``: event time, nanoseconds since the Unix epoch, UTC (``time.time_ns()`` scale). A
  backend with a monotonic or boot-time clock converts once (see :func:`boot_to_epoch_ns`).
* ``pid``: the acting process's thread-group id (the "PID" users see), host PID namespace.
* Paths are absolute strings as the kernel gave them; ``None`` where the backend cannot know.
  An executable's path is the kernel's view (``d_path``, what ``/proc/PID/exe`` shows): a file
  unlinked since it was opened ends in `` (deleted)`` and a memfd is ``/memfd:NAME (deleted)``;
  backends never strip that, so every tier gives the same Image.
* Optional fields are ``None`` when the backend does not provide them; the core then fills them
  from the process cache or ``/proc`` (or renders ``-`` as Sysmon for Linux does).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Union

__all__ = ["ProcessExec", "ProcessFork", "ProcessExit", "NetworkConnect", "FileCreate", "FileDelete",
           "RawAccessRead", "ProcessAccess", "DnsQuery", "Loss", "BackendError", "ModuleLoad",
           "ImageMap", "MemoryWrite", "PrivilegeChange", "MemfdCreate", "ExecMemory",
           "ShellCommand", "ProcessTamper",
           "Observation",
           "boot_to_epoch_ns", "CLK_TCK"]

CLK_TCK = 100  # USER_HZ: /proc/<pid>/stat start times are in these ticks (always 100 on Linux)


def boot_to_epoch_ns(boot_ns: int) -> int:
    """Convert a CLOCK_BOOTTIME nanosecond stamp to epoch nanoseconds, using the current offset
    between the two clocks (:func:`sysmonx.sensor.procfs.clock_offset`: well under a
    microsecond)."""
    from .procfs import clock_offset
    return boot_ns + clock_offset(time.CLOCK_BOOTTIME)


@dataclass(slots=True)
class ProcessExec:
    """A successful execve/execveat (Sysmon event 1).

    Attributes:
        pid, ppid: thread-group ids; ``tid`` the thread that exec'd (usually == pid).
        start_ticks: process start time in clock ticks since boot (``/proc/PID/stat`` field 22;
            ``task->start_boottime / (1e9/CLK_TCK)`` in BPF). With ``pid`` it keys the process
            cache and gives ProcessGuid's start second.
        image: the executable's path as the kernel shows it (``/proc/PID/exe`` target, with
            `` (deleted)``/``/memfd:NAME (deleted)`` kept), or the exec'd filename resolved.
        argv: argument vector; CommandLine is ``" ".join(argv)`` as Sysmon for Linux prints it.
        cwd: current directory. uid/auid/sessionid: real uid, login uid (4294967295 = unset),
            audit session id (TerminalSessionId). end_data: the process key of ProcessGuid bytes
            8-15 — ``mm->end_code`` (``/proc/PID/stat`` field 27), which is what Sysmon for Linux
            reads despite the name; ``None`` if unknown.
        mnt_ns, pid_ns: inode numbers of the process's mount and (active) pid namespaces at
            the exec, as ``/proc/PID/ns/mnt`` and ``/proc/PID/ns/pid`` show them (tier A reads
            them in the kernel at the exec); ``None`` when the backend does not know them.
    """

    ts_ns: int
    pid: int
    ppid: Optional[int] = None
    tid: Optional[int] = None
    start_ticks: Optional[int] = None
    image: Optional[str] = None
    argv: Optional[list] = None
    cwd: Optional[str] = None
    uid: Optional[int] = None
    auid: Optional[int] = None
    sessionid: Optional[int] = None
    end_data: Optional[int] = None
    mnt_ns: Optional[int] = None
    pid_ns: Optional[int] = None


@dataclass(slots=True)
class ProcessFork:
    """A new process (thread group) created by fork/clone/vfork, before any exec: no Sysmon
    event of its own, but it lets the core give a child that never execs its parent's image and
    its own ProcessGuid (Sysmon for Linux gives a forked child its parent's Image).

    Attributes:
        pid: the child's thread-group id; ``ppid`` the parent's (the forking process).
        start_ticks: the child's start time in clock ticks since boot (as in
            :class:`ProcessExec`); ``uid`` its real uid when the backend knows it.
    """

    ts_ns: int
    pid: int
    ppid: int
    start_ticks: Optional[int] = None
    uid: Optional[int] = None


@dataclass(slots=True)
class ProcessExit:
    """A thread-group exit (Sysmon event 5). ``exit_code`` as ``status >> 8`` when known."""

    ts_ns: int
    pid: int
    start_ticks: Optional[int] = None
    exit_code: Optional[int] = None


@dataclass(slots=True)
class NetworkConnect:
    """A TCP connect (``initiated=True``), TCP accept (``initiated=False``) or UDP send/recv
    (Sysmon event 3). Addresses are text (``"10.0.0.1"``, ``"::1"``); ports ints; ``protocol``
    ``"tcp"``/``"udp"``, or ``None`` when the backend cannot tell (rendered ``-``); ``source_*``
    are ``None`` when the backend cannot know them for sure (rendered ``-``/``0``, the documented
    unknown values), never a guess."""

    ts_ns: int
    pid: int
    protocol: Optional[str]
    initiated: bool
    dest_ip: str
    dest_port: int
    source_ip: Optional[str] = None
    source_port: Optional[int] = None
    ipv6: bool = False


@dataclass(slots=True)
class FileCreate:
    """A regular file created (open with O_CREAT that created it, creat, rename target) —
    Sysmon event 11. ``path`` absolute."""

    ts_ns: int
    pid: int
    path: str


@dataclass(slots=True)
class FileDelete:
    """A file unlinked (Sysmon event 23). ``path`` absolute."""

    ts_ns: int
    pid: int
    path: str


@dataclass(slots=True)
class RawAccessRead:
    """A block device opened for reading (Sysmon event 9). ``device`` e.g. ``/dev/loop0``."""

    ts_ns: int
    pid: int
    device: str


@dataclass(slots=True)
class ProcessAccess:
    """A ptrace of another process (Sysmon event 10): ``target_pid``, ptrace ``request`` number
    (rendered as GrantedAccess the way Sysmon for Linux does)."""

    ts_ns: int
    pid: int
    target_pid: int
    request: int
    tid: Optional[int] = None


@dataclass(slots=True)
class DnsQuery:
    """A DNS query and, when seen, its answer (SysmonX event 22 on Linux).

    ``query_name`` without trailing dot; ``status`` the RCODE (0 = success) or ``None`` when no
    answer was seen; ``results`` answer strings in Sysmon's ``QueryResults`` form
    (``type:  5 cname;::ffff:1.2.3.4;``) or ``None``; ``pid`` the querying process or ``None``
    when it could not be attributed; ``source_port``/``server`` (the client's UDP port and the
    resolver address) let the core attribute it from a recent UDP send by the same port;
    ``qtype`` the question type (1 A, 28 AAAA, ...). ``ts_ns`` is when the query was sent (the
    kernel's capture time of the packet), even though the observation is emitted once the
    answer arrives."""

    ts_ns: int
    pid: Optional[int]
    query_name: str
    status: Optional[int] = None
    results: Optional[str] = None
    source_port: Optional[int] = None
    server: Optional[str] = None
    qtype: Optional[int] = None


@dataclass(slots=True)
class Loss:
    """Events the backend knows it lost: a kernel drop counter delta, a ring-buffer or queue
    overflow, a sequence gap. Becomes a Sysmon event 255 with the count. ``source`` names the
    counter (``ebpf.ringbuf``, ``audit.lost``, ``cnproc.seq``, ``fanotify.overflow`` ...)."""

    ts_ns: int
    source: str
    count: int
    detail: str = ""


@dataclass(slots=True)
class BackendError:
    """A backend problem that is not a count of lost events (attach failure, reader crash):
    becomes event 255. ``fatal`` means the backend stopped. ``host_fact``: not a failure but a
    fact about the host that nothing can be missed for (a kernel without module support, where
    DriverLoad cannot occur): the same event 255, counted in the run's summary as a host note
    instead of an error."""

    ts_ns: int
    source: str
    message: str
    fatal: bool = False
    extra: dict = field(default_factory=dict)
    host_fact: bool = False


# --- more visibility (events 6, 7, 8, 25 and the SysmonX events 210-213) -----------------------

@dataclass(slots=True)
class ModuleLoad:
    """A kernel module loaded by init_module/finit_module (Sysmon event 6, DriverLoad).
    ``path``: the module file (finit_module: the fd's path) or ``None`` (init_module loads from
    memory); ``name``: the module name when known."""
    ts_ns: int
    pid: int
    path: Optional[str] = None
    name: Optional[str] = None


@dataclass(slots=True)
class ImageMap:
    """A file mapped executable (mmap with PROT_EXEC of a file): Sysmon event 7 (ImageLoad).
    ``path`` the mapped file as d_path shows it."""
    ts_ns: int
    pid: int
    path: str


@dataclass(slots=True)
class MemoryWrite:
    """A write into another process's memory (Sysmon event 8): ``process_vm_writev`` (``method``
    ``"process_vm_writev"``) or ptrace POKETEXT/POKEDATA/POKEUSER (``"ptrace(PTRACE_POKETEXT)"``
    ...). ``address``: the first remote address written (``None`` when the tier cannot know
    it); ``size`` bytes written (``None`` when not known); ``tid`` the writing thread."""
    ts_ns: int
    pid: int
    target_pid: int
    method: str
    address: Optional[int] = 0
    size: Optional[int] = None
    tid: Optional[int] = None


@dataclass(slots=True)
class PrivilegeChange:
    """A successful set*uid/set*gid/capset that gained privilege (SysmonX event 211).
    ``change``: ``"User"``, ``"Group"`` or ``"Capabilities"``; ``before``/``after``: the
    (real, effective, saved) ids, or the (effective, permitted, inheritable) capability masks."""
    ts_ns: int
    pid: int
    syscall: str
    change: str
    before: tuple
    after: tuple


@dataclass(slots=True)
class MemfdCreate:
    """memfd_create succeeded (SysmonX event 212): ``name`` as passed (``None`` when the tier
    cannot know it), ``flags`` MFD_* bits."""
    ts_ns: int
    pid: int
    name: Optional[str]
    flags: int = 0


@dataclass(slots=True)
class ExecMemory:
    """Anonymous or writable memory made executable by mmap/mprotect (SysmonX event 213).
    ``prot``/``prev_prot``: PROT_* bits (``prev_prot`` ``None`` for mmap)."""
    ts_ns: int
    pid: int
    syscall: str
    address: int
    length: int
    prot: int
    prev_prot: Optional[int] = None


@dataclass(slots=True)
class ShellCommand:
    """A command line read by an interactive shell (SysmonX event 210). ``tty``: the
    terminal (``/dev/pts/3``) or ``None``."""
    ts_ns: int
    pid: int
    command: str
    tty: Optional[str] = None


@dataclass(slots=True)
class ProcessTamper:
    """The kernel saw a process change its own identity (Sysmon event 25, ProcessTampering):
    ``kind`` ``"exe"`` (prctl PR_SET_MM_EXE_FILE: /proc/PID/exe replaced) or ``"argv"``
    (PR_SET_MM_ARG_START/ARG_END/MAP: the command line moved)."""
    ts_ns: int
    pid: int
    kind: str


Observation = Union[ProcessExec, ProcessFork, ProcessExit, NetworkConnect, FileCreate, FileDelete,
                    RawAccessRead, ProcessAccess, DnsQuery, Loss, BackendError, ModuleLoad,
                    ImageMap, MemoryWrite, PrivilegeChange, MemfdCreate, ExecMemory, ShellCommand,
                    ProcessTamper]
