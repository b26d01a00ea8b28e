"""Which backends SysmonX can use on this OS, and why not the others.

:func:`available_backends` lists every backend with ``None`` (usable) or the reason it is not,
without side effects: on Windows the Event Log (wevtapi), the Kernel-Process ETW consumer
(advapi32, an elevated token), Sysmon as the sensor (installed or not); on Linux the live sensor
tiers of :mod:`sysmonx.sensor.backends` (imported only on Linux); replay everywhere. Probes are
injectable so every branch is tested on any OS.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Optional

__all__ = ["BackendStatus", "available_backends", "describe_backends", "is_elevated"]


@dataclass(frozen=True)
class BackendStatus:
    """One backend: ``name``, ``kind`` (``live``/``replay``/``sensor``), ``platform``
    (``windows``/``linux``/``any``), ``reason`` (``None`` when usable) and ``detail`` (what is
    there, e.g. ``Sysmon64 RUNNING``)."""

    name: str
    kind: str
    platform: str
    reason: Optional[str]
    detail: str = ""

    @property
    def usable(self) -> bool:
        """True when ``reason`` is ``None``."""
        return self.reason is None


def is_elevated() -> Optional[bool]:
    """True when this process runs with an elevated (administrator) token on Windows, False
    when not, ``None`` off Windows (``shell32.IsUserAnAdmin``)."""
    if sys.platform != "win32":
        return None
    import ctypes
    try:
        windll = getattr(ctypes, "windll", None)  # only on Windows
        return windll is not None and bool(windll.shell32.IsUserAnAdmin())
    except (AttributeError, OSError):
        return False


def _probe_wevtapi() -> Optional[str]:
    from .eventlog import EventLogSource, SourceUnavailable
    try:
        EventLogSource.check_available()
        return None
    except SourceUnavailable as exc:
        return str(exc)


def _probe_etw() -> Optional[str]:
    from .etw_process import EtwUnavailable, KernelProcessSource
    try:
        KernelProcessSource.check_available()
    except EtwUnavailable as exc:
        return str(exc)
    if is_elevated() is False:
        return "starting an ETW session needs an elevated (administrator) prompt"
    return None


def _probe_sysmon() -> tuple[Optional[str], str]:
    from .sysmon import SubprocessRunner, SysmonError, SysmonManager
    try:
        found = SysmonManager(SubprocessRunner(), "").find_installed()
    except (SysmonError, OSError) as exc:
        return f"cannot query services: {exc}", ""
    if found is None:
        return ("Sysmon is not installed: sysmonx -accepteula -i CONFIG [--sysmon "
                "PATH\\Sysmon64.exe]"), ""
    return None, f"service {found[0]} ({found[1] or 'binary unknown'})"


def _probe_linux() -> dict:
    from ..sensor.backends import probe_all
    return probe_all()


def available_backends(platform: Optional[str] = None, *,
                       probe_wevtapi: Callable[[], Optional[str]] = _probe_wevtapi,
                       probe_etw: Callable[[], Optional[str]] = _probe_etw,
                       probe_sysmon: Callable[[], tuple] = _probe_sysmon,
                       probe_linux: Callable[[], dict] = _probe_linux) -> list[BackendStatus]:
    """Every backend and whether it can run here.

    Args:
        platform: ``sys.platform`` to report for (default: this one); Linux-only probes run
            only for ``linux``, Windows probes only for ``win32``.
    Returns:
        :class:`BackendStatus` items: replay first, then this OS's live backends, then the
        other OS's (with the reason "needs Windows"/"needs Linux").
    """
    plat = platform or sys.platform
    out = [BackendStatus("replay", "replay", "any", None,
                         "EVTX, event XML, JSON, syslog; any OS")]
    windows = ("sysmon", "eventlog", "etw-kernel-process")
    if plat == "win32":
        reason, detail = probe_sysmon()
        out.append(BackendStatus("sysmon", "sensor", "windows", reason, detail))
        out.append(BackendStatus("eventlog", "live", "windows", probe_wevtapi(),
                                 "Sysmon, PowerShell, WMI, DNS-Client, Security channels"))
        out.append(BackendStatus("etw-kernel-process", "live", "windows", probe_etw(),
                                 "process start/stop without Sysmon"))
    else:
        for name in windows:
            out.append(BackendStatus(name, "live", "windows", "needs Windows"))
    if plat.startswith("linux"):
        for name, reason in probe_linux().items():
            out.append(BackendStatus(name, "live", "linux", reason))
    else:
        for name in ("ebpf", "audit", "cnproc", "dns"):
            out.append(BackendStatus(name, "live", "linux", "needs Linux"))
    return out


def describe_backends(statuses: list[BackendStatus]) -> str:
    """A plain-text table: one line per backend, ``ok``/``no`` and the reason or detail."""
    width = max(len(s.name) for s in statuses)
    lines = []
    for s in statuses:
        mark = "ok" if s.usable else "no"
        lines.append(f"{s.name:<{width}}  {mark}  {s.detail if s.usable else s.reason}")
    return "\n".join(lines)
