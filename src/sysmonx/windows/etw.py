"""ETW real-time consumer declarations (``evntrace.h``, ``evntcons.h``, ``evntprov.h``,
``wmistr.h``, ``timezoneapi.h``) and the ctypes implementation of the small API object the
Kernel-Process consumer (:mod:`sysmonx.windows.etw_process`) uses.

Structures, x64 sizes (checked in ``tests/test_windows_structs.py`` against these layouts):

=============================  =====  =============================================================
structure                      bytes  notes
=============================  =====  =============================================================
WNODE_HEADER                   48     wmistr.h; Guid at 24, ClientContext at 40, Flags at 44
EVENT_TRACE_PROPERTIES         120    evntrace.h; EventsLost at 88, LogBuffersLost 96,
                                      RealTimeBuffersLost 100, LoggerNameOffset 116
EVENT_DESCRIPTOR               16     evntprov.h; Id, Version, Channel, Level, Opcode, Task, Keyword
EVENT_HEADER                   80     evntcons.h; ProviderId at 24, EventDescriptor at 40,
                                      ActivityId at 64
ETW_BUFFER_CONTEXT             4      evntcons.h
EVENT_HEADER_EXTENDED_DATA_    16     evntcons.h
ITEM
EVENT_RECORD                   112    evntcons.h; BufferContext 80, UserDataLength 86,
                                      ExtendedData 88, UserData 96, UserContext 104
EVENT_TRACE_HEADER             48     evntrace.h
EVENT_TRACE                    88     evntrace.h; MofData at 72
TIME_ZONE_INFORMATION          172    timezoneapi.h (WCHAR[32] names)
TRACE_LOGFILE_HEADER           280    evntrace.h; TimeZone at 72, BootTime 248, BuffersLost 276
EVENT_TRACE_LOGFILEW           448    evntrace.h; CurrentEvent 32, LogfileHeader 120,
                                      EventsLost 416, EventRecordCallback 424, Context 440
=============================  =====  =============================================================

Sources: the SDK declarations as published on Microsoft Learn
(https://learn.microsoft.com/windows/win32/api/evntrace/ns-evntrace-event_trace_logfilew,
.../evntcons/ns-evntcons-event_record, .../evntcons/ns-evntcons-event_header,
.../evntrace/ns-evntrace-trace_logfile_header, .../evntrace/ns-evntrace-event_trace_properties,
.../wmistr/ns-wmistr-wnode_header), and for the offsets the x64 type dumps generated from
Microsoft's public symbols (the ``ntdiff/headers`` collection: ``_EVENT_TRACE_LOGFILEW`` size
0x1c0 with LogfileHeader at 0x78 and EventRecordCallback at 0x1a8; ``_EVENT_RECORD`` size 0x70;
``_TRACE_LOGFILE_HEADER`` size 0x118).

Functions (advapi32.dll): ``StartTraceW``, ``ControlTraceW``, ``EnableTraceEx2``,
``OpenTraceW``, ``ProcessTrace``, ``CloseTrace``. They return a Win32 error code (``ULONG``)
rather than setting the last error; ``OpenTraceW`` returns ``INVALID_PROCESSTRACE_HANDLE``
(all ones on x64) on failure.
"""

from __future__ import annotations

import abc
import ctypes
from dataclasses import dataclass
from typing import Any, Callable

from .win32 import (ERROR_ALREADY_EXISTS, GUID, HANDLE, LONG, LONGLONG, LPCWSTR,
                    LPWSTR, PVOID, SYSTEMTIME, TRACEHANDLE, UCHAR, ULONG, ULONGLONG, USHORT, WCHAR,
                    Win32Error, load_dll)

__all__ = [
    "WNODE_HEADER", "EVENT_TRACE_PROPERTIES", "EVENT_DESCRIPTOR", "EVENT_HEADER",
    "ETW_BUFFER_CONTEXT", "EVENT_HEADER_EXTENDED_DATA_ITEM", "EVENT_RECORD",
    "EVENT_TRACE_HEADER", "EVENT_TRACE", "TIME_ZONE_INFORMATION", "TRACE_LOGFILE_HEADER",
    "EVENT_TRACE_LOGFILEW", "EVENT_RECORD_CALLBACK", "PROTOTYPES", "bind", "EtwApi",
    "SessionStats", "CtypesEtwApi", "new_properties",
    "WNODE_FLAG_TRACED_GUID", "EVENT_TRACE_REAL_TIME_MODE", "PROCESS_TRACE_MODE_REAL_TIME",
    "PROCESS_TRACE_MODE_EVENT_RECORD", "EVENT_TRACE_CONTROL_QUERY", "EVENT_TRACE_CONTROL_STOP",
    "EVENT_CONTROL_CODE_ENABLE_PROVIDER", "EVENT_CONTROL_CODE_DISABLE_PROVIDER",
    "TRACE_LEVEL_INFORMATION", "INVALID_PROCESSTRACE_HANDLE", "EVENT_HEADER_FLAG_64_BIT_HEADER",
    "EVENT_HEADER_FLAG_32_BIT_HEADER", "MAX_SESSION_NAME",
]

WNODE_FLAG_TRACED_GUID = 0x00020000
EVENT_TRACE_REAL_TIME_MODE = 0x00000100
PROCESS_TRACE_MODE_REAL_TIME = 0x00000100
PROCESS_TRACE_MODE_RAW_TIMESTAMP = 0x00001000
PROCESS_TRACE_MODE_EVENT_RECORD = 0x10000000
EVENT_TRACE_CONTROL_QUERY = 0
EVENT_TRACE_CONTROL_STOP = 1
EVENT_TRACE_CONTROL_UPDATE = 2
EVENT_TRACE_CONTROL_FLUSH = 3
EVENT_CONTROL_CODE_DISABLE_PROVIDER = 0
EVENT_CONTROL_CODE_ENABLE_PROVIDER = 1
TRACE_LEVEL_INFORMATION = 4
EVENT_HEADER_FLAG_32_BIT_HEADER = 0x0020
EVENT_HEADER_FLAG_64_BIT_HEADER = 0x0040
#: ``OpenTraceW`` failure value on 64-bit Windows (``(TRACEHANDLE)INVALID_HANDLE_VALUE``).
INVALID_PROCESSTRACE_HANDLE = 0xFFFFFFFFFFFFFFFF
#: Longest session name ETW accepts, in characters (StartTrace: 1024 including the NUL).
MAX_SESSION_NAME = 1024


class _WnodeVersion(ctypes.Structure):
    _fields_ = [("Version", ULONG), ("Linkage", ULONG)]


class _WnodeU1(ctypes.Union):
    _anonymous_ = ("s",)
    _fields_ = [("HistoricalContext", ULONGLONG), ("s", _WnodeVersion)]


class _WnodeU2(ctypes.Union):
    _fields_ = [("CountLost", ULONG), ("KernelHandle", HANDLE), ("TimeStamp", LONGLONG)]


class WNODE_HEADER(ctypes.Structure):
    """``wmistr.h`` WNODE_HEADER (48 bytes)."""

    _anonymous_ = ("u1", "u2")
    _fields_ = [("BufferSize", ULONG), ("ProviderId", ULONG), ("u1", _WnodeU1),
                ("u2", _WnodeU2), ("Guid", GUID), ("ClientContext", ULONG), ("Flags", ULONG)]


class _AgeOrFlush(ctypes.Union):
    _fields_ = [("AgeLimit", LONG), ("FlushThreshold", LONG)]


class EVENT_TRACE_PROPERTIES(ctypes.Structure):
    """``evntrace.h`` EVENT_TRACE_PROPERTIES (120 bytes); the session and log file names follow
    it in the same buffer at ``LoggerNameOffset``/``LogFileNameOffset``."""

    _anonymous_ = ("u",)
    _fields_ = [
        ("Wnode", WNODE_HEADER), ("BufferSize", ULONG), ("MinimumBuffers", ULONG),
        ("MaximumBuffers", ULONG), ("MaximumFileSize", ULONG), ("LogFileMode", ULONG),
        ("FlushTimer", ULONG), ("EnableFlags", ULONG), ("u", _AgeOrFlush),
        ("NumberOfBuffers", ULONG), ("FreeBuffers", ULONG), ("EventsLost", ULONG),
        ("BuffersWritten", ULONG), ("LogBuffersLost", ULONG), ("RealTimeBuffersLost", ULONG),
        ("LoggerThreadId", HANDLE), ("LogFileNameOffset", ULONG), ("LoggerNameOffset", ULONG),
    ]


class EVENT_DESCRIPTOR(ctypes.Structure):
    """``evntprov.h`` EVENT_DESCRIPTOR (16 bytes)."""

    _fields_ = [("Id", USHORT), ("Version", UCHAR), ("Channel", UCHAR), ("Level", UCHAR),
                ("Opcode", UCHAR), ("Task", USHORT), ("Keyword", ULONGLONG)]


class _KernelUserTime(ctypes.Structure):
    _fields_ = [("KernelTime", ULONG), ("UserTime", ULONG)]


class _ProcessorTimeU(ctypes.Union):
    _anonymous_ = ("s",)
    _fields_ = [("s", _KernelUserTime), ("ProcessorTime", ULONGLONG)]


class EVENT_HEADER(ctypes.Structure):
    """``evntcons.h`` EVENT_HEADER (80 bytes). ``TimeStamp`` is a FILETIME unless the trace
    was opened with ``PROCESS_TRACE_MODE_RAW_TIMESTAMP``."""

    _anonymous_ = ("u",)
    _fields_ = [("Size", USHORT), ("HeaderType", USHORT), ("Flags", USHORT),
                ("EventProperty", USHORT), ("ThreadId", ULONG), ("ProcessId", ULONG),
                ("TimeStamp", LONGLONG), ("ProviderId", GUID),
                ("EventDescriptor", EVENT_DESCRIPTOR), ("u", _ProcessorTimeU),
                ("ActivityId", GUID)]


class _ProcessorNumber(ctypes.Structure):
    _fields_ = [("ProcessorNumber", UCHAR), ("Alignment", UCHAR)]


class _ProcessorU(ctypes.Union):
    _anonymous_ = ("s",)
    _fields_ = [("s", _ProcessorNumber), ("ProcessorIndex", USHORT)]


class ETW_BUFFER_CONTEXT(ctypes.Structure):
    """``evntcons.h`` ETW_BUFFER_CONTEXT (4 bytes)."""

    _anonymous_ = ("u",)
    _fields_ = [("u", _ProcessorU), ("LoggerId", USHORT)]


class EVENT_HEADER_EXTENDED_DATA_ITEM(ctypes.Structure):
    """``evntcons.h`` EVENT_HEADER_EXTENDED_DATA_ITEM (16 bytes); ``Linkage``/``Reserved2`` are
    one USHORT of bit fields."""

    _fields_ = [("Reserved1", USHORT), ("ExtType", USHORT), ("LinkageBits", USHORT),
                ("DataSize", USHORT), ("DataPtr", ULONGLONG)]


class EVENT_RECORD(ctypes.Structure):
    """``evntcons.h`` EVENT_RECORD (112 bytes): what ``EventRecordCallback`` receives."""

    _fields_ = [("EventHeader", EVENT_HEADER), ("BufferContext", ETW_BUFFER_CONTEXT),
                ("ExtendedDataCount", USHORT), ("UserDataLength", USHORT),
                ("ExtendedData", ctypes.POINTER(EVENT_HEADER_EXTENDED_DATA_ITEM)),
                ("UserData", PVOID), ("UserContext", PVOID)]


class _TraceClass(ctypes.Structure):
    _fields_ = [("Type", UCHAR), ("Level", UCHAR), ("Version", USHORT)]


class _TraceVersionU(ctypes.Union):
    _fields_ = [("Version", ULONG), ("Class", _TraceClass)]


class _HeaderMarker(ctypes.Structure):
    _fields_ = [("HeaderType", UCHAR), ("MarkerFlags", UCHAR)]


class _FieldTypeU(ctypes.Union):
    _anonymous_ = ("s",)
    _fields_ = [("FieldTypeFlags", USHORT), ("s", _HeaderMarker)]


class _GuidU(ctypes.Union):
    _fields_ = [("Guid", GUID), ("GuidPtr", ULONGLONG)]


class _ClientFlags(ctypes.Structure):
    _fields_ = [("ClientContext", ULONG), ("Flags", ULONG)]


class _TraceTimesU(ctypes.Union):
    _fields_ = [("s", _KernelUserTime), ("ProcessorTime", ULONGLONG), ("c", _ClientFlags)]


class EVENT_TRACE_HEADER(ctypes.Structure):
    """``evntrace.h`` EVENT_TRACE_HEADER (48 bytes)."""

    _anonymous_ = ("f", "g")
    _fields_ = [("Size", USHORT), ("f", _FieldTypeU), ("v", _TraceVersionU),
                ("ThreadId", ULONG), ("ProcessId", ULONG), ("TimeStamp", LONGLONG),
                ("g", _GuidU), ("t", _TraceTimesU)]


class _ClientOrBuffer(ctypes.Union):
    _fields_ = [("ClientContext", ULONG), ("BufferContext", ETW_BUFFER_CONTEXT)]


class EVENT_TRACE(ctypes.Structure):
    """``evntrace.h`` EVENT_TRACE (88 bytes): the legacy ``CurrentEvent`` of a log file."""

    _anonymous_ = ("u",)
    _fields_ = [("Header", EVENT_TRACE_HEADER), ("InstanceId", ULONG),
                ("ParentInstanceId", ULONG), ("ParentGuid", GUID), ("MofData", PVOID),
                ("MofLength", ULONG), ("u", _ClientOrBuffer)]


class TIME_ZONE_INFORMATION(ctypes.Structure):
    """``timezoneapi.h`` TIME_ZONE_INFORMATION (172 bytes; WCHAR names as 16-bit units)."""

    _fields_ = [("Bias", LONG), ("StandardName", WCHAR * 32), ("StandardDate", SYSTEMTIME),
                ("StandardBias", LONG), ("DaylightName", WCHAR * 32),
                ("DaylightDate", SYSTEMTIME), ("DaylightBias", LONG)]


class _VersionDetail(ctypes.Structure):
    _fields_ = [("MajorVersion", UCHAR), ("MinorVersion", UCHAR), ("SubVersion", UCHAR),
                ("SubMinorVersion", UCHAR)]


class _LogVersionU(ctypes.Union):
    _fields_ = [("Version", ULONG), ("VersionDetail", _VersionDetail)]


class _LogStats(ctypes.Structure):
    _fields_ = [("StartBuffers", ULONG), ("PointerSize", ULONG), ("EventsLost", ULONG),
                ("CpuSpeedInMHz", ULONG)]


class _InstanceU(ctypes.Union):
    _anonymous_ = ("s",)
    _fields_ = [("LogInstanceGuid", GUID), ("s", _LogStats)]


class TRACE_LOGFILE_HEADER(ctypes.Structure):
    """``evntrace.h`` TRACE_LOGFILE_HEADER (280 bytes on x64: pointers are 8 bytes)."""

    _anonymous_ = ("v", "i")
    _fields_ = [("BufferSize", ULONG), ("v", _LogVersionU), ("ProviderVersion", ULONG),
                ("NumberOfProcessors", ULONG), ("EndTime", LONGLONG),
                ("TimerResolution", ULONG), ("MaximumFileSize", ULONG), ("LogFileMode", ULONG),
                ("BuffersWritten", ULONG), ("i", _InstanceU), ("LoggerName", LPWSTR),
                ("LogFileName", LPWSTR), ("TimeZone", TIME_ZONE_INFORMATION),
                ("BootTime", LONGLONG), ("PerfFreq", LONGLONG), ("StartTime", LONGLONG),
                ("ReservedFlags", ULONG), ("BuffersLost", ULONG)]


_FUNCTYPE = getattr(ctypes, "WINFUNCTYPE", ctypes.CFUNCTYPE)  # one calling convention on x64
#: ``VOID WINAPI EventRecordCallback(PEVENT_RECORD)``.
EVENT_RECORD_CALLBACK = _FUNCTYPE(None, ctypes.POINTER(EVENT_RECORD))


class _ModeU(ctypes.Union):
    _fields_ = [("LogFileMode", ULONG), ("ProcessTraceMode", ULONG)]


class _CallbackU(ctypes.Union):
    _fields_ = [("EventCallback", PVOID), ("EventRecordCallback", EVENT_RECORD_CALLBACK)]


class EVENT_TRACE_LOGFILEW(ctypes.Structure):
    """``evntrace.h`` EVENT_TRACE_LOGFILEW (448 bytes): what ``OpenTraceW`` takes. For a
    real-time consumer: ``LoggerName`` the session, ``ProcessTraceMode`` REAL_TIME |
    EVENT_RECORD, ``EventRecordCallback`` set."""

    _anonymous_ = ("m", "c")
    _fields_ = [("LogFileName", LPWSTR), ("LoggerName", LPWSTR), ("CurrentTime", LONGLONG),
                ("BuffersRead", ULONG), ("m", _ModeU), ("CurrentEvent", EVENT_TRACE),
                ("LogfileHeader", TRACE_LOGFILE_HEADER), ("BufferCallback", PVOID),
                ("BufferSize", ULONG), ("Filled", ULONG), ("EventsLost", ULONG),
                ("c", _CallbackU), ("IsKernelTrace", ULONG), ("Context", PVOID)]


_P_TRACEHANDLE = ctypes.POINTER(TRACEHANDLE)
_P_PROPS = ctypes.POINTER(EVENT_TRACE_PROPERTIES)

#: advapi32.dll functions: name -> (restype, argtypes), SDK parameter order.
PROTOTYPES: dict[str, tuple[Any, list]] = {
    # ULONG StartTraceW(PTRACEHANDLE TraceHandle, LPCWSTR InstanceName, Properties)
    "StartTraceW": (ULONG, [_P_TRACEHANDLE, LPCWSTR, _P_PROPS]),
    # ULONG ControlTraceW(TRACEHANDLE TraceHandle, LPCWSTR InstanceName, Properties, ControlCode)
    "ControlTraceW": (ULONG, [TRACEHANDLE, LPCWSTR, _P_PROPS, ULONG]),
    # ULONG EnableTraceEx2(TraceHandle, LPCGUID ProviderId, ControlCode, UCHAR Level,
    #                      MatchAnyKeyword, MatchAllKeyword, Timeout, EnableParameters)
    "EnableTraceEx2": (ULONG, [TRACEHANDLE, ctypes.POINTER(GUID), ULONG, UCHAR, ULONGLONG,
                               ULONGLONG, ULONG, PVOID]),
    # TRACEHANDLE OpenTraceW(PEVENT_TRACE_LOGFILEW Logfile)
    "OpenTraceW": (TRACEHANDLE, [ctypes.POINTER(EVENT_TRACE_LOGFILEW)]),
    # ULONG ProcessTrace(PTRACEHANDLE HandleArray, ULONG HandleCount, StartTime, EndTime)
    "ProcessTrace": (ULONG, [_P_TRACEHANDLE, ULONG, PVOID, PVOID]),
    # ULONG CloseTrace(TRACEHANDLE TraceHandle)
    "CloseTrace": (ULONG, [TRACEHANDLE]),
}


def bind(dll: Any, prototypes: dict[str, tuple[Any, list]] = PROTOTYPES) -> Any:
    """Set ``restype``/``argtypes`` on ``dll`` for each function of ``prototypes``; return it.

    Raises:
        AttributeError: a function is missing.
    """
    for name, (restype, argtypes) in prototypes.items():
        fn = getattr(dll, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return dll


class _PropsBuffer(ctypes.Structure):
    _fields_ = [("props", EVENT_TRACE_PROPERTIES), ("names", WCHAR * (2 * MAX_SESSION_NAME))]


def new_properties(*, real_time: bool = True, buffer_kb: int = 64, min_buffers: int = 4,
                   max_buffers: int = 32, flush_seconds: int = 1) -> Any:
    """An EVENT_TRACE_PROPERTIES with room for the names after it, as StartTraceW and
    ControlTraceW require (``Wnode.BufferSize`` covers the whole buffer, ``LoggerNameOffset``
    points just after the structure, ``Wnode.ClientContext`` 1 = QueryPerformanceCounter
    timestamps, ``Wnode.Flags`` WNODE_FLAG_TRACED_GUID).

    Returns:
        a ctypes structure whose ``props`` member is the EVENT_TRACE_PROPERTIES.
    """
    buf = _PropsBuffer()
    p = buf.props
    p.Wnode.BufferSize = ctypes.sizeof(buf)
    p.Wnode.ClientContext = 1
    p.Wnode.Flags = WNODE_FLAG_TRACED_GUID
    p.BufferSize = buffer_kb
    p.MinimumBuffers = min_buffers
    p.MaximumBuffers = max_buffers
    p.LogFileMode = EVENT_TRACE_REAL_TIME_MODE if real_time else 0
    p.FlushTimer = flush_seconds
    p.LogFileNameOffset = 0
    p.LoggerNameOffset = ctypes.sizeof(EVENT_TRACE_PROPERTIES)
    return buf


@dataclass(frozen=True)
class SessionStats:
    """A session's counters (``ControlTraceW(EVENT_TRACE_CONTROL_QUERY)``), cumulative since the
    session started.

    Attributes:
        events_lost: ``EventsLost``: events the session could not record (buffers full).
        log_buffers_lost: ``LogBuffersLost``: buffers that could not be written.
        realtime_buffers_lost: ``RealTimeBuffersLost``: buffers that could not be delivered to
            the real-time consumer (the consumer was too slow).
        buffers_written: ``BuffersWritten``.
    """

    events_lost: int
    log_buffers_lost: int
    realtime_buffers_lost: int
    buffers_written: int


class EtwApi(abc.ABC):
    """The ETW operations a real-time consumer needs. Every method raises
    :class:`~sysmonx.windows.win32.Win32Error` with the code the function returned."""

    @abc.abstractmethod
    def start_session(self, name: str) -> int:
        """``StartTraceW`` a real-time session named ``name``; returns its handle. A session of
        that name left over from a crashed run is stopped and started again."""

    @abc.abstractmethod
    def enable_provider(self, session: int, provider: str, level: int, keywords: int) -> None:
        """``EnableTraceEx2(ENABLE_PROVIDER)`` for a provider GUID (``{...}`` text)."""

    @abc.abstractmethod
    def open_trace(self, name: str, callback: Callable[[Any], None]) -> int:
        """``OpenTraceW`` on the session in real-time, EVENT_RECORD mode; ``callback`` gets a
        ``POINTER(EVENT_RECORD)`` per event. Returns the trace handle."""

    @abc.abstractmethod
    def process_trace(self, trace: int) -> int:
        """``ProcessTrace``: blocks, delivering events, until the trace is closed; returns the
        status code (0, or ERROR_CANCELLED after CloseTrace)."""

    @abc.abstractmethod
    def close_trace(self, trace: int) -> None:
        """``CloseTrace``: makes ``process_trace`` return."""

    @abc.abstractmethod
    def query_session(self, name: str) -> SessionStats:
        """``ControlTraceW(EVENT_TRACE_CONTROL_QUERY)``."""

    @abc.abstractmethod
    def stop_session(self, name: str) -> SessionStats:
        """``ControlTraceW(EVENT_TRACE_CONTROL_STOP)``; returns the final counters."""


class CtypesEtwApi(EtwApi):
    """:class:`EtwApi` over advapi32.dll (ETW controller and consumer functions).

    Args:
        advapi32: a loaded DLL object (default: looked up now and bound with :func:`bind`).
    Raises:
        Win32Unavailable: not Windows (default argument only).
    """

    def __init__(self, advapi32: Any = None) -> None:
        self.dll = advapi32 if advapi32 is not None else bind(load_dll("advapi32"))
        self._keep: dict[int, tuple] = {}  # trace handle -> (logfile, callback): kept alive

    def _check(self, rc: int, function: str) -> None:
        if rc != 0:
            raise Win32Error(rc, function)

    def start_session(self, name: str) -> int:
        handle = TRACEHANDLE(0)
        buf = new_properties()
        rc = self.dll.StartTraceW(ctypes.byref(handle), name, ctypes.byref(buf.props))
        if rc == ERROR_ALREADY_EXISTS:  # our session, left by a run that did not stop it
            self.stop_session(name)
            buf = new_properties()
            rc = self.dll.StartTraceW(ctypes.byref(handle), name, ctypes.byref(buf.props))
        self._check(rc, "StartTraceW")
        return int(handle.value)

    def enable_provider(self, session: int, provider: str, level: int, keywords: int) -> None:
        guid = GUID.from_string(provider)
        rc = self.dll.EnableTraceEx2(session, ctypes.byref(guid),
                                     EVENT_CONTROL_CODE_ENABLE_PROVIDER, level, keywords, 0, 0,
                                     None)
        self._check(rc, "EnableTraceEx2")

    def open_trace(self, name: str, callback: Callable[[Any], None]) -> int:
        logfile = EVENT_TRACE_LOGFILEW()
        logfile.LoggerName = name
        logfile.ProcessTraceMode = PROCESS_TRACE_MODE_REAL_TIME | PROCESS_TRACE_MODE_EVENT_RECORD
        cb = EVENT_RECORD_CALLBACK(callback)
        logfile.EventRecordCallback = cb
        handle = self.dll.OpenTraceW(ctypes.byref(logfile))
        if handle == INVALID_PROCESSTRACE_HANDLE:
            raise Win32Error(ctypes.get_last_error(), "OpenTraceW")  # type: ignore[attr-defined]
        self._keep[int(handle)] = (logfile, cb)
        return int(handle)

    def process_trace(self, trace: int) -> int:
        arr = (TRACEHANDLE * 1)(trace)
        return int(self.dll.ProcessTrace(arr, 1, None, None))

    def close_trace(self, trace: int) -> None:
        self.dll.CloseTrace(trace)  # ERROR_CTX_CLOSE_PENDING is normal while ProcessTrace runs

    def _control(self, name: str, code: int, function: str) -> SessionStats:
        buf = new_properties()
        self._check(self.dll.ControlTraceW(0, name, ctypes.byref(buf.props), code), function)
        p = buf.props
        return SessionStats(int(p.EventsLost), int(p.LogBuffersLost),
                            int(p.RealTimeBuffersLost), int(p.BuffersWritten))

    def query_session(self, name: str) -> SessionStats:
        return self._control(name, EVENT_TRACE_CONTROL_QUERY, "ControlTraceW(QUERY)")

    def stop_session(self, name: str) -> SessionStats:
        return self._control(name, EVENT_TRACE_CONTROL_STOP, "ControlTraceW(STOP)")

