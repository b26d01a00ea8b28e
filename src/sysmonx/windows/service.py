"""The SysmonX collector as a Windows service: installer (``sc.exe``), settings file, and the
service process itself (``python -m sysmonx.cli.winservice``) through ctypes.

A Windows service is a process the Service Control Manager starts and talks to: it must call
``StartServiceCtrlDispatcherW`` within 30 seconds, register a control handler
(``RegisterServiceCtrlHandlerExW``) and report its state with ``SetServiceStatus``
(``START_PENDING`` -> ``RUNNING`` -> ``STOP_PENDING`` -> ``STOPPED``). :class:`ServiceHost`
holds that state machine over a :class:`ServiceApi` (default :class:`CtypesServiceApi`;
:class:`~sysmonx.windows.fakes.FakeServiceApi` in tests), so it runs on Linux; it starts a
:class:`~sysmonx.pipeline.windows.WindowsCollector` built from the settings file and maps the
controls onto it: ``SERVICE_CONTROL_STOP``/``SHUTDOWN`` stop it (outputs flushed, bookmarks
written), user control **128** (``sc.exe control SysmonX 128``, sent by ``sysmonx -c``)
re-reads the configuration between two events, ``INTERROGATE`` reports the state.

No pywin32: the structures are fixed-width (``SERVICE_STATUS`` is seven DWORDs, 28 bytes;
``SERVICE_TABLE_ENTRYW`` two pointers), declared as winsvc.h does.

:class:`ServiceInstaller` creates the service with ``sc.exe create SysmonX binPath= "<python>
-m sysmonx.cli.winservice --state-dir <dir>" start= auto``, sets its recovery actions (restart
after 5 s, 5 s, 60 s: stopping the process is not enough to blind SysmonX for long), starts it,
and removes it (``sc.exe stop``, ``sc.exe delete``) at ``-u``. Its settings are
``<state dir>\\service.json`` (:class:`ServiceSettings`).
"""

from __future__ import annotations

import abc
import ctypes
import json
import os
import sys
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

from .sysmon import CommandRunner
from .win32 import DWORD, Win32Error, load_dll

__all__ = ["SERVICE_NAME", "SERVICE_STATUS", "SERVICE_TABLE_ENTRYW", "ServiceApi",
           "CtypesServiceApi", "ServiceHost", "ServiceInstaller", "ServiceSettings",
           "ServiceInstallError", "CONTROL_RELOAD", "SERVICE_MODULE"]

SERVICE_NAME = "SysmonX"
#: The module the service runs (``python -m ...``): :mod:`sysmonx.cli.winservice`.
SERVICE_MODULE = "sysmonx.cli.winservice"

# winsvc.h
SERVICE_WIN32_OWN_PROCESS = 0x10
SERVICE_STOPPED, SERVICE_START_PENDING, SERVICE_STOP_PENDING, SERVICE_RUNNING = 1, 2, 3, 4
SERVICE_CONTROL_STOP, SERVICE_CONTROL_INTERROGATE, SERVICE_CONTROL_SHUTDOWN = 1, 4, 5
SERVICE_ACCEPT_STOP, SERVICE_ACCEPT_SHUTDOWN = 0x1, 0x4
NO_ERROR, ERROR_CALL_NOT_IMPLEMENTED = 0, 120
ERROR_SERVICE_SPECIFIC_ERROR = 1066
#: User-defined control code (128-255) that makes the service re-read its configuration.
CONTROL_RELOAD = 128


class SERVICE_STATUS(ctypes.Structure):
    """winsvc.h ``SERVICE_STATUS``: seven DWORDs (28 bytes)."""

    _fields_ = [("dwServiceType", DWORD), ("dwCurrentState", DWORD),
                ("dwControlsAccepted", DWORD), ("dwWin32ExitCode", DWORD),
                ("dwServiceSpecificExitCode", DWORD), ("dwCheckPoint", DWORD),
                ("dwWaitHint", DWORD)]


#: ``VOID WINAPI ServiceMain(DWORD argc, LPWSTR *argv)``, declared with the WINAPI convention
#: where there is one (the same as cdecl on x64).
_FUNCTYPE = getattr(ctypes, "WINFUNCTYPE", ctypes.CFUNCTYPE)
LPSERVICE_MAIN_FUNCTIONW = _FUNCTYPE(None, DWORD, ctypes.POINTER(ctypes.c_wchar_p))
#: ``DWORD WINAPI HandlerEx(DWORD control, DWORD eventType, LPVOID eventData, LPVOID ctx)``.
LPHANDLER_FUNCTION_EX = _FUNCTYPE(DWORD, DWORD, DWORD, ctypes.c_void_p, ctypes.c_void_p)


class SERVICE_TABLE_ENTRYW(ctypes.Structure):
    """winsvc.h ``SERVICE_TABLE_ENTRYW``: the service name and its ServiceMain (two
    pointers); the table ends with an all-NULL entry."""

    _fields_ = [("lpServiceName", ctypes.c_wchar_p), ("lpServiceProc", LPSERVICE_MAIN_FUNCTIONW)]


class ServiceApi(abc.ABC):
    """The three Service Control Manager calls a service makes."""

    @abc.abstractmethod
    def dispatch(self, name: str, service_main: Callable[[], None]) -> None:
        """Connect to the SCM and run ``service_main`` in the thread it creates; returns when
        the service has stopped. Raises :class:`~sysmonx.windows.win32.Win32Error` (1063: not
        started by the SCM)."""

    @abc.abstractmethod
    def register_handler(self, name: str, handler: Callable[[int], int]) -> Any:
        """Register ``handler(control) -> win32 code``; returns the status handle."""

    @abc.abstractmethod
    def set_status(self, handle: Any, status: SERVICE_STATUS) -> None:
        """Report the service's state."""


class CtypesServiceApi(ServiceApi):
    """:class:`ServiceApi` over advapi32.dll (Windows only).

    Raises:
        Win32Unavailable: off Windows.
    """

    def __init__(self) -> None:
        self.advapi32 = load_dll("advapi32")
        a = self.advapi32
        a.StartServiceCtrlDispatcherW.argtypes = [ctypes.POINTER(SERVICE_TABLE_ENTRYW)]
        a.StartServiceCtrlDispatcherW.restype = ctypes.c_int
        a.RegisterServiceCtrlHandlerExW.argtypes = [ctypes.c_wchar_p, LPHANDLER_FUNCTION_EX,
                                                    ctypes.c_void_p]
        a.RegisterServiceCtrlHandlerExW.restype = ctypes.c_void_p
        a.SetServiceStatus.argtypes = [ctypes.c_void_p, ctypes.POINTER(SERVICE_STATUS)]
        a.SetServiceStatus.restype = ctypes.c_int
        self._keep: list[Any] = []   # callbacks must outlive the calls

    def dispatch(self, name: str, service_main: Callable[[], None]) -> None:
        """``StartServiceCtrlDispatcherW`` with a one-service table."""
        proc = LPSERVICE_MAIN_FUNCTIONW(lambda argc, argv: service_main())
        table = (SERVICE_TABLE_ENTRYW * 2)()
        table[0].lpServiceName = name
        table[0].lpServiceProc = proc
        self._keep += [proc, table]
        if not self.advapi32.StartServiceCtrlDispatcherW(table):
            raise Win32Error(ctypes.get_last_error(), "StartServiceCtrlDispatcherW")  # type: ignore[attr-defined]

    def register_handler(self, name: str, handler: Callable[[int], int]) -> Any:
        """``RegisterServiceCtrlHandlerExW``."""
        fn = LPHANDLER_FUNCTION_EX(lambda control, etype, data, ctx: handler(control))
        self._keep.append(fn)
        handle = self.advapi32.RegisterServiceCtrlHandlerExW(name, fn, None)
        if not handle:
            raise Win32Error(ctypes.get_last_error(), "RegisterServiceCtrlHandlerExW")  # type: ignore[attr-defined]
        return handle

    def set_status(self, handle: Any, status: SERVICE_STATUS) -> None:
        """``SetServiceStatus``."""
        if not self.advapi32.SetServiceStatus(handle, ctypes.byref(status)):
            raise Win32Error(ctypes.get_last_error(), "SetServiceStatus")  # type: ignore[attr-defined]


@dataclass
class ServiceSettings:
    """``<state dir>\\service.json``: what the service collects and where it writes.

    Attributes:
        config: the user's Sysmon configuration file (a copy in the state folder).
        output: events file (Windows event XML, one event per line), or ``None``.
        format: its format (``xml``, ``jsonl`` ...).
        syslog: a syslog receiver (``udp://HOST:PORT``, ``tcp://HOST:PORT``), or ``None``.
        eventlog: also write to the Windows Event Log (:mod:`sysmonx.windows.evtoutput`:
            ``SysmonX/Operational`` when its manifest is registered, else the Application log).
        etw: also run the Kernel-Process ETW consumer.
        tamper: run the Windows tamper checks (when SysmonX set Sysmon up).
        rules: Sigma rule paths.
        sysmon_service, sysmon_driver: of the Sysmon SysmonX set up (tamper checks).
    """

    config: Optional[str] = None
    output: Optional[str] = None
    format: str = "xml"
    syslog: Optional[str] = None
    eventlog: bool = False
    etw: bool = False
    tamper: bool = True
    rules: list[str] = field(default_factory=list)
    sysmon_service: str = "Sysmon64"
    sysmon_driver: str = "SysmonDrv"

    @staticmethod
    def path(state_dir: str) -> str:
        """``<state_dir>/service.json``."""
        return os.path.join(state_dir, "service.json")

    def save(self, state_dir: str) -> str:
        """Write the settings (atomically); returns the path."""
        os.makedirs(state_dir, exist_ok=True)
        path = self.path(state_dir)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(asdict(self), f, indent=1)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, state_dir: str) -> ServiceSettings:
        """Read the settings.

        Raises:
            ServiceInstallError: missing or not a settings file (path in the message).
        """
        path = cls.path(state_dir)
        try:
            with open(path, encoding="utf-8") as f:
                return cls(**json.load(f))
        except (OSError, ValueError, TypeError) as exc:
            raise ServiceInstallError(f"{path}: cannot read the service settings ({exc})") \
                from None


class ServiceInstallError(RuntimeError):
    """A service step failed; the message names the command and its output."""


class ServiceInstaller:
    """Create, start, signal and remove the SysmonX service with ``sc.exe``.

    Args:
        runner: runs the commands.
        state_dir: the service's state folder (settings, bookmarks, configuration copy).
        python: the interpreter the service runs (default: this one).
    """

    def __init__(self, runner: CommandRunner, state_dir: str,
                 python: Optional[str] = None) -> None:
        self.runner = runner
        self.state_dir = state_dir
        self.python = python or sys.executable

    def _sc(self, *args: str, ok: tuple[int, ...] = (0,)) -> int:
        res = self.runner.run(["sc.exe", *args])
        if res.returncode not in ok:
            raise ServiceInstallError(f"sc.exe {' '.join(args)} failed ({res.returncode}): "
                                      f"{(res.stdout + res.stderr).strip()[:300]}")
        return res.returncode

    def command_line(self) -> str:
        """The service's command line (``binPath=``), every path quoted."""
        return (f'"{self.python}" -m {SERVICE_MODULE} --state-dir "{self.state_dir}"')

    def secure_state_dir(self) -> None:
        """Restrict the state folder (configuration copy, bookmarks, settings) to SYSTEM and
        the Administrators group: ``icacls DIR /inheritance:r /grant:r *S-1-5-18:(OI)(CI)F
        *S-1-5-32-544:(OI)(CI)F`` (well-known SIDs: no localised account names).

        Raises:
            ServiceInstallError: icacls failed.
        """
        res = self.runner.run(["icacls.exe", self.state_dir, "/inheritance:r", "/grant:r",
                               "*S-1-5-18:(OI)(CI)F", "*S-1-5-32-544:(OI)(CI)F"])
        if res.returncode != 0:
            raise ServiceInstallError(f"icacls {self.state_dir} failed ({res.returncode}): "
                                      f"{(res.stdout + res.stderr).strip()[:300]}")

    def install(self) -> None:
        """Restrict the state folder, create the service (automatic start, restarted on
        failure) and start it.

        Raises:
            ServiceInstallError: a command failed (e.g. 1073: the service exists).
        """
        self.secure_state_dir()
        self._sc("create", SERVICE_NAME, "binPath=", self.command_line(), "start=", "auto",
                 "DisplayName=", "SysmonX")
        self._sc("description", SERVICE_NAME,
                 "SysmonX: Sysmon events filtered with Sysmon's semantics, more channels, "
                 "Sigma")
        self._sc("failure", SERVICE_NAME, "reset=", "86400", "actions=",
                 "restart/5000/restart/5000/restart/60000")
        self._sc("start", SERVICE_NAME)

    def reload(self) -> bool:
        """Ask the running service to re-read its configuration (control 128). False when the
        service is not running (it reads the configuration when it starts)."""
        return self._sc("control", SERVICE_NAME, str(CONTROL_RELOAD), ok=(0, 1060, 1062)) == 0

    def uninstall(self) -> bool:
        """Stop and delete the service; False when it did not exist."""
        if self._sc("stop", SERVICE_NAME, ok=(0, 1060, 1062)) == 1060:
            return False
        self._sc("delete", SERVICE_NAME)
        return True


class ServiceHost:
    """The service's state machine (module docstring).

    Args:
        api: the SCM calls.
        make_collector: builds the collector (an object with ``run()``, ``request_stop()``,
            ``request_reload()``); called in the service's thread after ``START_PENDING``.
    Attributes:
        statuses: every state reported, in order (for the log and tests).
        error: why the collector could not start or stopped with an error, or ``None``.
    """

    def __init__(self, api: ServiceApi, make_collector: Callable[[], Any]) -> None:
        self.api = api
        self.make_collector = make_collector
        self.statuses: list[int] = []
        self.error: Optional[str] = None
        self._handle: Any = None
        self._collector: Any = None
        self._state = SERVICE_STOPPED
        self._checkpoint = 0
        self._lock = threading.Lock()

    def _report(self, state: int, exit_code: int = NO_ERROR, specific: int = 0,
                wait_ms: int = 0) -> None:
        with self._lock:
            self._state = state
            pending = state in (SERVICE_START_PENDING, SERVICE_STOP_PENDING)
            self._checkpoint = self._checkpoint + 1 if pending else 0
            st = SERVICE_STATUS(SERVICE_WIN32_OWN_PROCESS, state,
                                0 if state == SERVICE_START_PENDING
                                else SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN,
                                exit_code, specific, self._checkpoint, wait_ms)
            self.statuses.append(state)
            self.api.set_status(self._handle, st)

    def handler(self, control: int) -> int:
        """The control handler: stop, shutdown, reload (128), interrogate."""
        collector = self._collector
        if control in (SERVICE_CONTROL_STOP, SERVICE_CONTROL_SHUTDOWN):
            self._report(SERVICE_STOP_PENDING, wait_ms=15000)
            if collector is not None:
                collector.request_stop()
            return NO_ERROR
        if control == CONTROL_RELOAD:
            if collector is not None:
                collector.request_reload()
            return NO_ERROR
        if control == SERVICE_CONTROL_INTERROGATE:
            return NO_ERROR
        return ERROR_CALL_NOT_IMPLEMENTED

    def service_main(self) -> None:
        """ServiceMain: register, start the collector, run it to its end, report STOPPED."""
        self._handle = self.api.register_handler(SERVICE_NAME, self.handler)
        self._report(SERVICE_START_PENDING, wait_ms=30000)
        try:
            self._collector = self.make_collector()
        except Exception as exc:  # noqa: BLE001 - the SCM gets the failure, the log the reason
            self.error = f"cannot start: {exc}"
            self._report(SERVICE_STOPPED, ERROR_SERVICE_SPECIFIC_ERROR, 1)
            return
        self._report(SERVICE_RUNNING)
        try:
            self._collector.run()
        except Exception as exc:  # noqa: BLE001 - as above
            self.error = f"stopped: {exc}"
            self._report(SERVICE_STOPPED, ERROR_SERVICE_SPECIFIC_ERROR, 2)
            return
        self._report(SERVICE_STOPPED)

    def run(self) -> None:
        """Hand the process to the SCM (returns when the service stopped).

        Raises:
            Win32Error: not started by the Service Control Manager (1063).
        """
        self.api.dispatch(SERVICE_NAME, self.service_main)
