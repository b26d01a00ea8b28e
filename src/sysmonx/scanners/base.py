"""What every scanner shares: the process under inspection, the budget, findings, the contract.

A scanner is a :class:`Scanner` subclass in its own module under :mod:`sysmonx.scanners.builtin`,
registered in :data:`~sysmonx.core.registry.SCANNERS` where it is defined, with a stable
``name`` (the finding name it reports, e.g. ``memfd_exec``). It inspects one process through a
:class:`ProcessView` (``/proc/PID/{exe,maps,stat,status,environ,cmdline,mem}``, each read once
and cached for the scan) and returns :class:`Finding` objects. Reads of process memory go through
:meth:`ProcessView.read`, which charges a :class:`Budget` (bytes and wall time); a scanner that
exceeds it raises :class:`BudgetExceeded` and the scan records the scanner as skipped by budget.

Reading ``/proc/PID/mem`` never stops the process (no ptrace attach): the kernel copies the
pages the way ``process_vm_readv`` does. The scanning thread runs at a low priority.

Every scanner module also exposes ``check(pid, **context) -> list[Finding]`` (the scanner run
alone on one process, no allow-list) for other parts of SysmonX that want the same fact (the
live sensor's ProcessTampering, for example).
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Optional

__all__ = ["Finding", "Mapping", "ProcessView", "Budget", "BudgetExceeded", "ProcessGone",
           "Scanner", "ScanContext", "check_with", "KTHREAD_FLAG"]

#: ``PF_KTHREAD`` in the flags of ``/proc/PID/stat`` (field 9): a kernel thread.
KTHREAD_FLAG = 0x00200000
#: Pseudo mappings the kernel itself creates (never user code).
KERNEL_MAPPINGS = frozenset({"[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]", "[vectors]",
                             "[sigpage]", "[uprobes]"})


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a scanner saw.

    Attributes:
        scanner: the scanner's registry name (``yara`` for every YARA rule).
        finding: the stable finding name (``memfd_exec`` ... ``yara:RULE``).
        details: what was seen, one line: address ranges, paths, sizes, matched strings.
    """

    scanner: str
    finding: str
    details: str


class BudgetExceeded(Exception):
    """A scan would read more bytes or take longer than its :class:`Budget` allows."""


class ProcessGone(Exception):
    """The process exited (or its memory went away) during the scan."""


@dataclass
class Budget:
    """Limits of one process scan.

    Attributes:
        max_bytes: process memory and file bytes one scan may read (default 64 MiB).
        max_seconds: wall time one scan may take (default 2 s).
    """

    max_bytes: int = 64 << 20
    max_seconds: float = 2.0
    used_bytes: int = 0
    started: float = field(default_factory=time.monotonic)

    def charge(self, n: int) -> None:
        """Account ``n`` bytes about to be read. Raises :class:`BudgetExceeded`."""
        if self.used_bytes + n > self.max_bytes:
            raise BudgetExceeded(f"read budget {self.max_bytes >> 20} MiB")
        if time.monotonic() - self.started > self.max_seconds:
            raise BudgetExceeded(f"time budget {self.max_seconds:g} s")
        self.used_bytes += n


@dataclass(frozen=True, slots=True)
class Mapping:
    """One line of ``/proc/PID/maps``: ``start``/``end`` addresses, ``perms`` (``r-xp``),
    file ``offset``, ``dev`` (``fd:01``), ``inode``, ``path`` (``""`` for anonymous memory;
    ``[heap]``, ``[stack]``, ``/memfd:NAME (deleted)`` as the kernel prints them)."""

    start: int
    end: int
    perms: str
    offset: int
    dev: str
    inode: int
    path: str

    @property
    def size(self) -> int:
        """Bytes."""
        return self.end - self.start

    @property
    def executable(self) -> bool:
        """``x`` in the permissions."""
        return self.perms[2] == "x"

    @property
    def anonymous(self) -> bool:
        """Memory no file on a file system backs: no path, ``[heap]``, ``[stack]``, or a
        memfd / deleted shared-memory object (``/memfd:...``, ``/dev/zero (deleted)``,
        ``/SYSV...``)."""
        p = self.path
        return p == "" or p in ("[heap]", "[stack]") or p.startswith(
            ("[stack:", "/memfd:", "/SYSV", "/dev/zero"))

    def __str__(self) -> str:
        return f"{self.start:#x}-{self.end:#x} {self.perms}"


def _parse_maps(text: str) -> list[Mapping]:
    out = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        a, _, b = parts[0].partition("-")
        try:
            out.append(Mapping(int(a, 16), int(b, 16), parts[1], int(parts[2], 16), parts[3],
                               int(parts[4]), parts[5] if len(parts) > 5 else ""))
        except ValueError:
            continue
    return out


class ProcessView:
    """Lazy, cached reads of one process's ``/proc`` entries for one scan.

    Args:
        pid: the process.
        budget: charged by :meth:`read` and :meth:`read_file`.
        proc_root: ``/proc`` (tests may point elsewhere).
    Attributes (read on first use; ``None`` when unreadable): ``exe`` (the kernel's view,
    `` (deleted)`` included), ``maps``, ``stat`` (fields from 3 on, as bytes), ``status`` (key ->
    value text), ``environ`` and ``cmdline`` (raw bytes).
    Raises:
        ProcessGone: from :meth:`read` when the memory cannot be read any more.
    """

    def __init__(self, pid: int, budget: Optional[Budget] = None, proc_root: str = "/proc"):
        self.pid = pid
        self.budget = budget or Budget()
        self.base = f"{proc_root}/{pid}/"
        self._cache: dict[str, Any] = {}
        self._mem: Optional[int] = None

    # -- plain files ---------------------------------------------------------------------------

    def _file(self, name: str, limit: int = 1 << 22) -> Optional[bytes]:
        key = "f:" + name
        if key not in self._cache:
            try:
                with open(self.base + name, "rb") as f:
                    self._cache[key] = f.read(limit)
            except OSError:
                self._cache[key] = None
        return self._cache[key]

    @property
    def exe(self) -> Optional[str]:
        """``/proc/PID/exe`` target, or ``None`` (kernel thread, zombie, gone)."""
        if "exe" not in self._cache:
            try:
                self._cache["exe"] = os.readlink(self.base + "exe")
            except OSError:
                self._cache["exe"] = None
        return self._cache["exe"]

    @property
    def exe_path(self) -> Optional[str]:
        """:attr:`exe` without the kernel's `` (deleted)`` suffix."""
        exe = self.exe
        if exe is not None and exe.endswith(" (deleted)"):
            return exe[:-10]
        return exe

    @property
    def maps(self) -> list[Mapping]:
        """Parsed ``/proc/PID/maps`` (empty when unreadable)."""
        if "maps" not in self._cache:
            raw = self._file("maps", 1 << 24)
            self._cache["maps"] = _parse_maps(raw.decode("utf-8", "surrogateescape")) if raw else []
        return self._cache["maps"]

    @property
    def stat(self) -> Optional[list[bytes]]:
        """``/proc/PID/stat`` fields after the comm: index 0 is field 3 (state)."""
        if "stat" not in self._cache:
            raw = self._file("stat", 4096)
            fields = None
            if raw:
                close = raw.rfind(b")")
                if close >= 0:
                    fields = raw[close + 2:].split()
            self._cache["stat"] = fields
        return self._cache["stat"]

    def stat_field(self, n: int) -> Optional[int]:
        """Field ``n`` (1-based, as proc(5) numbers them) of ``/proc/PID/stat`` as an int."""
        fields = self.stat
        if fields is None or len(fields) <= n - 3:
            return None
        try:
            return int(fields[n - 3])
        except ValueError:
            return None

    @property
    def kernel_thread(self) -> bool:
        """``PF_KTHREAD`` is set (or the process has no memory at all)."""
        flags = self.stat_field(9)
        return flags is not None and bool(flags & KTHREAD_FLAG)

    @property
    def status(self) -> dict[str, str]:
        """``/proc/PID/status`` as key -> value text."""
        if "status" not in self._cache:
            raw = self._file("status", 16384) or b""
            out = {}
            for line in raw.decode("utf-8", "replace").splitlines():
                k, sep, v = line.partition(":")
                if sep:
                    out[k] = v.strip()
            self._cache["status"] = out
        return self._cache["status"]

    @property
    def environ(self) -> Optional[bytes]:
        """``/proc/PID/environ`` (the environment block as of exec, as the process left it)."""
        return self._file("environ", 1 << 20)

    @property
    def cmdline(self) -> Optional[bytes]:
        """``/proc/PID/cmdline`` (what ``ps`` shows)."""
        return self._file("cmdline", 1 << 20)

    def exe_stat(self) -> Optional[os.stat_result]:
        """``stat()`` of the running image (through ``/proc/PID/exe``: works when deleted)."""
        try:
            return os.stat(self.base + "exe")
        except OSError:
            return None

    # -- memory --------------------------------------------------------------------------------

    def read(self, addr: int, size: int) -> bytes:
        """Read ``size`` bytes of the process's memory at ``addr`` (fewer at an unmapped end).

        Raises:
            BudgetExceeded: the scan's budget would be exceeded.
            ProcessGone: ``/proc/PID/mem`` cannot be opened (the process exited).
        """
        self.budget.charge(size)
        if self._mem is None:
            try:
                self._mem = os.open(self.base + "mem", os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise ProcessGone(f"/proc/{self.pid}/mem: {exc.strerror}") from None
        try:
            return os.pread(self._mem, size, addr)
        except OSError:
            return b""  # unmapped meanwhile, or a guard page: nothing there to see

    def read_u64s(self, addr: int, count: int) -> Optional[tuple[int, ...]]:
        """``count`` native 64-bit words at ``addr``, or ``None`` when not all could be read."""
        raw = self.read(addr, 8 * count)
        if len(raw) != 8 * count:
            return None
        return struct.unpack(f"<{count}Q", raw)

    def read_file(self, path: str, offset: int, size: int) -> bytes:
        """Read ``size`` bytes of a file at ``offset``, charged to the budget. Raises
        :class:`BudgetExceeded`; an unreadable file gives ``b""``."""
        self.budget.charge(size)
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                return f.read(size)
        except OSError:
            return b""

    def close(self) -> None:
        """Release the memory descriptor."""
        if self._mem is not None:
            os.close(self._mem)
            self._mem = None


@dataclass
class ScanContext:
    """What a scan knows besides the process.

    Attributes:
        recorded_cmdline: the CommandLine recorded at exec (the triggering event's), or ``None``
            (on demand).
        yara_rules: compiled YARA rules (``yara.Rules``) or ``None``.
        yara_only: YARA rule identifiers to report (empty: every rule).
        options: scanner-specific settings (``chunk`` sizes ...).
    """

    recorded_cmdline: Optional[str] = None
    yara_rules: Any = None
    yara_only: frozenset[str] = frozenset()
    options: dict[str, Any] = field(default_factory=dict)


class Scanner:
    """One scanner (see the module docstring).

    Class attributes:
        name: registry and finding name (``memfd_exec``).
        summary: one line for ``sysmonx plugins``.
        reads_memory: reads process memory (costs budget; ``sysmonx scan`` reports its time).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    reads_memory: ClassVar[bool] = False

    def scan(self, proc: ProcessView, ctx: ScanContext) -> Iterable[Finding]:
        """Inspect ``proc``; yield findings. May raise :class:`BudgetExceeded` or
        :class:`ProcessGone`."""
        raise NotImplementedError

    @classmethod
    def check(cls, pid: int, **context: Any) -> list[Finding]:
        """This scanner alone on process ``pid``, without an allow-list (``context``:
        :class:`ScanContext` fields such as ``recorded_cmdline``). Callable through the registry
        without importing this package: ``SCANNERS.get("deleted_exe").check(pid)``.

        Returns:
            the findings, empty when none (or the process is gone or a kernel thread).
        Raises:
            BudgetExceeded: the scan needed more than the default :class:`Budget`.
        """
        return check_with(cls(), pid, ScanContext(**context))

    def finding(self, details: str, name: Optional[str] = None) -> Finding:
        """A :class:`Finding` of this scanner (``name`` defaults to the scanner's)."""
        return Finding(self.name, name or self.name, details)


def check_with(scanner: Scanner, pid: int, ctx: Optional[ScanContext] = None,
               budget: Optional[Budget] = None) -> list[Finding]:
    """Run one scanner on one process, without an allow-list.

    Returns:
        its findings (empty when the process is clean, gone, or a kernel thread).
    Raises:
        BudgetExceeded: the scan needed more than ``budget``.
    """
    proc = ProcessView(pid, budget)
    try:
        if proc.kernel_thread:
            return []
        return list(scanner.scan(proc, ctx or ScanContext()))
    except ProcessGone:
        return []
    finally:
        proc.close()


def shorten(items: list[str], limit: int = 4) -> str:
    """``a; b; c; d (+3 more)``: the first ``limit`` items of a list for Details."""
    text = "; ".join(items[:limit])
    if len(items) > limit:
        text += f" (+{len(items) - limit} more)"
    return text
