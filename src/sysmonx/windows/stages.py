"""Windows stages: PowerShell script blocks reassembled into event 220, and Kernel-Process ETW
events turned into Sysmon events 1 and 5.

``powershell-scriptblocks`` (:class:`PowerShellScriptBlocks`) passes every 4104 part on as it
is and, once a block is complete, emits one SysmonX event 220 ``PowerShellScriptBlock`` after
the part that completed it (parts in any order, bounded; a block whose parts never all arrive is
reported as event 255 with the missing parts: :mod:`sysmonx.windows.powershell`). It runs before
the filter, so a config's ``<PowerShellScriptBlock>`` rules decide event 220 like any Sysmon
event.

``kernel-process-sysmon`` (:class:`KernelProcessToSysmon`) turns the ETW consumer's
``Microsoft-Windows-Kernel-Process`` events 1 (ProcessStart) and 2 (ProcessStop) into Sysmon
events 1 and 5 in Windows Sysmon's envelope (for hosts without Sysmon). What the kernel event
says is written; what it does not say is the documented unknown value (docs/ARCHITECTURE.md
"Unknown values"), never a guess:

=====================  ======================================================================
field                  value
=====================  ======================================================================
UtcTime                the event's CreateTime (1) / ExitTime (2), milliseconds
ProcessGuid            ``{MMMMMMMM-SSSS-SSSS-KKKK-KKKKKKKKKKKK}``: M = the machine key (first 8
                       hex digits of ``MachineGuid``), S = CreateTime in Unix seconds (as Sysmon
                       for Linux and Windows Sysmon place the start time), K = the kernel's
                       ProcessSequenceNumber (unique per boot; versions 3 of 1, 2 of 2) or, when
                       the event has none, ``ffff`` + the pid (a key the sensor made, marked as
                       on Linux). Start and stop of one process give the same GUID.
ProcessId, ParentProcessId, TerminalSessionId   the event's
Image                  ImageName with the kernel device prefix mapped to its drive letter
                       (``QueryDosDeviceW``); kept as the device path when no drive maps it.
                       Event 2's ImageName is the short name only: Image is then the full path
                       from the start event when SysmonX saw it, else ``-``
IntegrityLevel         from MandatoryLabel (version 3 of 1): Untrusted/Low/Medium/High/System,
                       else ``-``
ParentProcessGuid,     from the parent's start event when SysmonX saw it, else the zero GUID
ParentImage            and ``-``
CommandLine, CurrentDirectory, User, ParentCommandLine, ParentUser, Hashes, FileVersion,
Description, Product, Company, OriginalFileName     ``-`` (the provider does not carry them)
LogonGuid              ``{00000000-0000-0000-0000-000000000000}``
LogonId                ``0x0`` (no logon session has id 0)
=====================  ======================================================================
"""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Optional

from ..core.registry import STAGES
from ..event import SYSMON_KEYWORDS, Event
from ..interfaces import Emit, Stage
from ..schema import CURRENT
from .etw_process import KERNEL_PROCESS_PROVIDER
from .powershell import ScriptBlockAssembler
from .report import ReportIdentity

__all__ = ["PowerShellScriptBlocks", "KernelProcessToSysmon", "DeviceMap", "ZERO_GUID",
           "process_guid", "INTEGRITY_LEVELS"]

ZERO_GUID = "{00000000-0000-0000-0000-000000000000}"

#: Mandatory label SIDs -> Sysmon's IntegrityLevel text.
INTEGRITY_LEVELS = {"S-1-16-0": "Untrusted", "S-1-16-4096": "Low", "S-1-16-8192": "Medium",
                    "S-1-16-12288": "High", "S-1-16-16384": "System"}


@STAGES.register
class PowerShellScriptBlocks(Stage):
    """4104 parts pass on; each complete script block becomes SysmonX event 220 after them.

    Args:
        options: :class:`~sysmonx.windows.powershell.ScriptBlockAssembler` arguments
            (``timeout`` s, ``max_open``, ``max_chars``, ``max_parts``, ``single_parts``).
    Attributes:
        assembler: the assembler (its ``stats`` and ``losses``).
    """

    name = "powershell-scriptblocks"
    summary = ("PowerShell 4104 parts reassembled: one SysmonX event 220 PowerShellScriptBlock "
               "per complete script block")
    stateful = True

    def __init__(self, **options: Any) -> None:
        self.assembler = ScriptBlockAssembler(**options)

    def process(self, item: Any, emit: Emit) -> bool:
        """Pass ``item``; after a 4104 part, emit what completed (event 220, events 255)."""
        if item.__class__ is not Event or not ScriptBlockAssembler.is_part(item):
            return True
        out = self.assembler.add(item)
        emit(item)
        for ev in out:
            emit(ev)
        return False

    def tick(self, now_ns: int, emit: Emit) -> None:
        """Give up blocks that waited ``timeout`` seconds for a part (event 255 each)."""
        for ev in self.assembler.expire():
            emit(ev)

    def finish(self, emit: Emit) -> None:
        """End of the stream: every open block is reported incomplete."""
        for ev in self.assembler.flush():
            emit(ev)


def _query_dos_device_win32(letter: str) -> Optional[str]:
    """``QueryDosDeviceW("C:")`` -> ``\\Device\\HarddiskVolume3`` (first target), ``None``
    when the letter is not mapped or off Windows."""
    if sys.platform != "win32":
        return None
    import ctypes
    buf = ctypes.create_unicode_buffer(1024)
    windll = getattr(ctypes, "windll", None)
    if windll is None or not windll.kernel32.QueryDosDeviceW(letter, buf, len(buf)):
        return None
    return buf.value or None


class DeviceMap:
    """Kernel device paths to DOS paths (``\\Device\\HarddiskVolume3\\x`` -> ``C:\\x``).

    Args:
        query: ``letter ("C:") -> device path`` (default ``QueryDosDeviceW``; tests pass a dict's
            ``get``).
        refresh_s: at most one re-read of the drive letters per this many seconds when a path
            does not map (a volume mounted since).
    """

    def __init__(self, query: Callable[[str], Optional[str]] = _query_dos_device_win32,
                 refresh_s: float = 60.0) -> None:
        self.query = query
        self.refresh_s = refresh_s
        self._map: list[tuple[str, str]] = []
        self._read_at: Optional[float] = None

    def _read(self) -> None:
        found = []
        for code in range(ord("A"), ord("Z") + 1):
            letter = chr(code) + ":"
            dev = self.query(letter)
            if dev:
                found.append((dev.rstrip("\\").lower() + "\\", letter))
        found.sort(key=lambda x: -len(x[0]))
        self._map = found
        self._read_at = time.monotonic()

    def to_dos(self, path: str) -> str:
        """``path`` with its device prefix replaced by the drive letter; unchanged when no drive
        maps it (a path that is not a device path, a network redirector ...)."""
        if not path.startswith("\\Device\\"):
            return path
        for attempt in range(2):
            if self._read_at is None:
                self._read()
            low = path.lower()
            for prefix, letter in self._map:
                if low.startswith(prefix):
                    return letter + path[len(prefix) - 1:]
            if attempt == 0 and self._read_at is not None \
                    and time.monotonic() - self._read_at >= self.refresh_s:
                self._read_at = None
                continue
            break
        return path


def _seconds(iso: str) -> Optional[float]:
    """``YYYY-MM-DDTHH:MM:SS.fffffffZ`` -> Unix seconds (float), ``None`` when malformed."""
    from datetime import datetime, timezone
    try:
        whole = datetime.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    frac = iso[20:-1] if len(iso) > 20 and iso.endswith("Z") else ""
    return whole.timestamp() + (int(frac) / 10 ** len(frac) if frac.isdigit() else 0.0)


def _utc_time(iso: str) -> str:
    """FILETIME text -> Sysmon's ``YYYY-MM-DD HH:MM:SS.mmm``; ``-`` when missing."""
    if len(iso) < 23:
        return "-"
    return iso[:10] + " " + iso[11:23]


def process_guid(machine_key: str, create_time: str, sequence: Optional[int], pid: int) -> str:
    """The ProcessGuid of a process seen through Kernel-Process (module docstring).

    Args:
        machine_key: 8 hex digits.
        create_time: the process's CreateTime text (FILETIME rendering).
        sequence: its ProcessSequenceNumber, or ``None``.
        pid: its process id.
    Returns:
        ``{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}``, lower case; the zero GUID when the create
        time is unknown.
    """
    secs = _seconds(create_time)
    if secs is None:
        return ZERO_GUID
    s = int(secs) & 0xFFFFFFFF
    key = f"{sequence & 0xFFFFFFFFFFFFFFFF:016x}" if sequence is not None \
        else f"ffff{pid & 0xFFFFFFFFFFFF:012x}"
    return f"{{{machine_key[:8]}-{s >> 16:04x}-{s & 0xFFFF:04x}-{key[:4]}-{key[4:]}}}"


def _int(text: Optional[str]) -> Optional[int]:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _machine_key_default() -> str:
    """First 8 hex digits of ``HKLM\\SOFTWARE\\Microsoft\\Cryptography\\MachineGuid`` on Windows,
    else of this host's ``/etc/machine-id``; ``00000000`` when neither can be read."""
    try:
        if sys.platform == "win32":
            import winreg  # type: ignore[import-not-found,unused-ignore]
            with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE,  # type: ignore[attr-defined,unused-ignore]
                                r"SOFTWARE\Microsoft\Cryptography") as k:
                value = str(winreg.QueryValueEx(k, "MachineGuid")[0])  # type: ignore[attr-defined,unused-ignore]
        else:
            with open("/etc/machine-id", encoding="ascii") as f:
                value = f.read()
    except (OSError, ImportError):
        return "00000000"
    digits = "".join(c for c in value.lower() if c in "0123456789abcdef")
    return (digits + "00000000")[:8]


@STAGES.register
class KernelProcessToSysmon(Stage):
    """Kernel-Process ETW events 1/2 -> Sysmon events 1/5 (module docstring for each field).

    Args:
        machine_key: 8 hex digits for ProcessGuid (default: from ``MachineGuid``).
        devices: the device-path map (default :class:`DeviceMap` over ``QueryDosDeviceW``).
        keep_original: also pass the Kernel-Process event on (default: it is replaced).
        max_processes: processes remembered for parent fields and stop images (oldest first
            out).
        identity: the envelope's Computer comes from the event; provider, channel and
            ``Execution/@ProcessID`` from here (default Windows Sysmon's, this process).
    Attributes:
        converted: events turned into 1 / 5 (by Kernel-Process id); ``unknown_parent``: starts
            whose parent SysmonX had not seen.
    """

    name = "kernel-process-sysmon"
    summary = ("Microsoft-Windows-Kernel-Process ETW events 1/2 as Sysmon events 1/5, with the "
               "documented unknown values for what ETW lacks")
    stateful = True

    def __init__(self, *, machine_key: Optional[str] = None,
                 devices: Optional[DeviceMap] = None, keep_original: bool = False,
                 max_processes: int = 65536, identity: Optional[ReportIdentity] = None) -> None:
        self.machine_key = (machine_key or _machine_key_default()).lower()
        self.devices = devices or DeviceMap()
        self.keep_original = keep_original
        self.max_processes = max_processes
        self.identity = identity or ReportIdentity()
        # pid -> (guid, image, create_time) of processes started while SysmonX ran
        self._procs: OrderedDict[int, tuple[str, str, str]] = OrderedDict()
        self._lock = threading.Lock()
        self.converted = {1: 0, 2: 0}
        self.unknown_parent = 0

    def process(self, item: Any, emit: Emit) -> bool:
        """Replace (or follow, with ``keep_original``) a Kernel-Process 1/2 by Sysmon 1/5."""
        if item.__class__ is not Event or item.provider != KERNEL_PROCESS_PROVIDER \
                or item.event_id not in (1, 2):
            return True
        ev = self._start(item) if item.event_id == 1 else self._stop(item)
        self.converted[item.event_id] += 1
        if self.keep_original:
            emit(item)
        emit(ev)
        return False

    def _envelope(self, src: Event, event_id: int, data: dict) -> Event:
        schema = CURRENT.events[event_id]
        who = self.identity
        return Event(event_id, data, provider=who.provider, provider_guid=who.provider_guid,
                     version=schema.version, level=schema.level_value, task=event_id, opcode=0,
                     keywords=SYSMON_KEYWORDS, time_created=src.time_created, record_id=None,
                     process_id=who.process_id, thread_id=src.thread_id, channel=who.channel,
                     computer=src.computer, user_id=None)

    def _remember(self, pid: int, value: tuple[str, str, str]) -> None:
        with self._lock:
            self._procs[pid] = value
            self._procs.move_to_end(pid)
            while len(self._procs) > self.max_processes:
                self._procs.popitem(last=False)

    def _start(self, src: Event) -> Event:
        d = src.data
        pid = _int(d.get("ProcessID")) or 0
        ppid = _int(d.get("ParentProcessID"))
        create = d.get("CreateTime") or ""
        guid = process_guid(self.machine_key, create, _int(d.get("ProcessSequenceNumber")), pid)
        image = self.devices.to_dos(d.get("ImageName") or "") or "-"
        with self._lock:
            parent = self._procs.get(ppid) if ppid is not None else None
        if parent is None:
            self.unknown_parent += 1
        self._remember(pid, (guid, image, create))
        data = {
            "RuleName": "-", "UtcTime": _utc_time(create), "ProcessGuid": guid,
            "ProcessId": str(pid), "Image": image, "FileVersion": "-", "Description": "-",
            "Product": "-", "Company": "-", "OriginalFileName": "-", "CommandLine": "-",
            "CurrentDirectory": "-", "User": "-", "LogonGuid": ZERO_GUID, "LogonId": "0x0",
            "TerminalSessionId": d.get("SessionID") or "0",
            "IntegrityLevel": INTEGRITY_LEVELS.get(d.get("MandatoryLabel") or "", "-"),
            "Hashes": "-",
            "ParentProcessGuid": parent[0] if parent else ZERO_GUID,
            "ParentProcessId": str(ppid) if ppid is not None else "0",
            "ParentImage": parent[1] if parent else "-",
            "ParentCommandLine": "-", "ParentUser": "-",
        }
        return self._envelope(src, 1, data)

    def _stop(self, src: Event) -> Event:
        d = src.data
        pid = _int(d.get("ProcessID")) or 0
        create = d.get("CreateTime") or ""
        with self._lock:
            known = self._procs.get(pid)
            if known is not None and known[2] == create:
                self._procs.pop(pid, None)
            else:
                known = None
        seq = _int(d.get("ProcessSequenceNumber"))
        guid = known[0] if known else process_guid(self.machine_key, create, seq, pid)
        data = {"RuleName": "-", "UtcTime": _utc_time(d.get("ExitTime") or ""),
                "ProcessGuid": guid, "ProcessId": str(pid),
                "Image": known[1] if known else "-", "User": "-"}
        return self._envelope(src, 5, data)
