"""wevtapi.dll (Windows Event Log API) declarations, and the ctypes implementation of the small
API object the Event Log source uses.

Declarations follow ``winevt.h`` (Windows SDK) as documented on Microsoft Learn
(https://learn.microsoft.com/windows/win32/api/winevt/): ``EvtSubscribe``, ``EvtQuery``,
``EvtNext``, ``EvtSeek``, ``EvtRender``, ``EvtCreateBookmark``, ``EvtUpdateBookmark``,
``EvtClose``, ``EvtOpenLog``, ``EvtGetLogInfo``, ``EvtGetExtendedStatus``; the flag enumerations
and ``EVT_VARIANT`` (a 16-byte structure on x64: an 8-byte union, then ``DWORD Count`` at 8 and
``DWORD Type`` at 12). Error codes are ``winerror.h``'s (``ERROR_EVT_QUERY_RESULT_STALE`` 15011:
"Users should handle this code by releasing the query result object and reissuing the query").
Types are fixed width (:mod:`sysmonx.windows.win32`), so the declarations are checked on any
64-bit host (``tests/test_windows_structs.py``).

:class:`WevtApi` is the interface the subscription loop (:mod:`sysmonx.windows.eventlog`) is
written against; :class:`CtypesWevtApi` implements it over the real DLLs (pull model: a signal
event per subscription, ``WaitForMultipleObjects``, ``EvtNext`` in batches, ``EvtRender`` of each
event as XML with the documented two-call buffer protocol) and
:class:`sysmonx.windows.fakes.FakeWevtApi` over recorded event XML. Every failure is raised as a
:class:`~sysmonx.windows.win32.Win32Error` carrying the Win32 code.
"""

from __future__ import annotations

import abc
import ctypes
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from .win32 import (BOOL, DWORD, ERROR_INSUFFICIENT_BUFFER, ERROR_NO_MORE_ITEMS, EVT_HANDLE,
                    HANDLE, INFINITE, LONGLONG, LPCWSTR, LPWSTR, PVOID, ULONGLONG,
                    WAIT_FAILED, WAIT_OBJECT_0, WAIT_TIMEOUT, Win32Error, load_dll)

__all__ = [
    "EVT_VARIANT", "EVT_VARIANT_UNION", "PROTOTYPES", "KERNEL32_PROTOTYPES", "bind",
    "WevtApi", "LogInfo", "CtypesWevtApi",
    "EvtSubscribeToFutureEvents", "EvtSubscribeStartAtOldestRecord",
    "EvtSubscribeStartAfterBookmark", "EvtSubscribeOriginMask",
    "EvtSubscribeTolerateQueryErrors", "EvtSubscribeStrict", "EvtQueryChannelPath",
    "EvtQueryFilePath", "EvtQueryForwardDirection", "EvtQueryReverseDirection",
    "EvtQueryTolerateQueryErrors", "EvtRenderEventValues", "EvtRenderEventXml",
    "EvtRenderBookmark", "EvtSeekRelativeToFirst", "EvtSeekRelativeToLast",
    "EvtSeekRelativeToCurrent", "EvtSeekRelativeToBookmark", "EvtSeekStrict",
    "EvtOpenChannelPath", "EvtOpenFilePath", "EvtLogNumberOfLogRecords",
    "EvtLogOldestRecordNumber", "EvtLogFull", "EvtVarTypeNull", "EvtVarTypeString",
    "EvtVarTypeUInt32", "EvtVarTypeUInt64", "EvtVarTypeBoolean", "EvtVarTypeFileTime",
    "EvtVarTypeEvtHandle", "EvtVarTypeEvtXml", "EVT_VARIANT_TYPE_MASK", "EVT_VARIANT_TYPE_ARRAY",
    "ERROR_EVT_INVALID_CHANNEL_PATH", "ERROR_EVT_INVALID_QUERY", "ERROR_EVT_CHANNEL_NOT_FOUND",
    "ERROR_EVT_SUBSCRIPTION_TO_DIRECT_CHANNEL", "ERROR_EVT_QUERY_RESULT_STALE",
    "ERROR_EVT_QUERY_RESULT_INVALID_POSITION",
]

# ---- winevt.h enumerations ---------------------------------------------------------------------

# EVT_SUBSCRIBE_FLAGS
EvtSubscribeToFutureEvents = 1
EvtSubscribeStartAtOldestRecord = 2
EvtSubscribeStartAfterBookmark = 3
EvtSubscribeOriginMask = 3
EvtSubscribeTolerateQueryErrors = 0x1000
EvtSubscribeStrict = 0x10000
# EVT_QUERY_FLAGS
EvtQueryChannelPath = 0x1
EvtQueryFilePath = 0x2
EvtQueryForwardDirection = 0x100
EvtQueryReverseDirection = 0x200
EvtQueryTolerateQueryErrors = 0x1000
# EVT_RENDER_FLAGS
EvtRenderEventValues = 0
EvtRenderEventXml = 1
EvtRenderBookmark = 2
# EVT_SEEK_FLAGS
EvtSeekRelativeToFirst = 1
EvtSeekRelativeToLast = 2
EvtSeekRelativeToCurrent = 3
EvtSeekRelativeToBookmark = 4
EvtSeekOriginMask = 7
EvtSeekStrict = 0x10000
# EVT_OPEN_LOG_FLAGS
EvtOpenChannelPath = 0x1
EvtOpenFilePath = 0x2
# EVT_LOG_PROPERTY_ID
EvtLogCreationTime = 0
EvtLogLastAccessTime = 1
EvtLogLastWriteTime = 2
EvtLogFileSize = 3
EvtLogAttributes = 4
EvtLogNumberOfLogRecords = 5
EvtLogOldestRecordNumber = 6
EvtLogFull = 7
# EVT_VARIANT_TYPE
EvtVarTypeNull = 0
EvtVarTypeString = 1
EvtVarTypeAnsiString = 2
EvtVarTypeSByte = 3
EvtVarTypeByte = 4
EvtVarTypeInt16 = 5
EvtVarTypeUInt16 = 6
EvtVarTypeInt32 = 7
EvtVarTypeUInt32 = 8
EvtVarTypeInt64 = 9
EvtVarTypeUInt64 = 10
EvtVarTypeSingle = 11
EvtVarTypeDouble = 12
EvtVarTypeBoolean = 13
EvtVarTypeBinary = 14
EvtVarTypeGuid = 15
EvtVarTypeSizeT = 16
EvtVarTypeFileTime = 17
EvtVarTypeSysTime = 18
EvtVarTypeSid = 19
EvtVarTypeHexInt32 = 20
EvtVarTypeHexInt64 = 21
EvtVarTypeEvtHandle = 32
EvtVarTypeEvtXml = 35
EVT_VARIANT_TYPE_MASK = 0x7F
EVT_VARIANT_TYPE_ARRAY = 128

# ---- winerror.h: Event Log errors ---------------------------------------------------------------

ERROR_EVT_INVALID_CHANNEL_PATH = 15000
ERROR_EVT_INVALID_QUERY = 15001
ERROR_EVT_CHANNEL_NOT_FOUND = 15007
ERROR_EVT_SUBSCRIPTION_TO_DIRECT_CHANNEL = 15009
ERROR_EVT_QUERY_RESULT_STALE = 15011
ERROR_EVT_QUERY_RESULT_INVALID_POSITION = 15012


class EVT_VARIANT_UNION(ctypes.Union):
    """The anonymous union of ``EVT_VARIANT``: every member is at most 8 bytes (scalars up to
    64 bits, or a pointer); the members used here are listed."""

    _fields_ = [
        ("BooleanVal", BOOL), ("UInt32Val", DWORD), ("UInt64Val", ULONGLONG),
        ("Int64Val", LONGLONG), ("FileTimeVal", ULONGLONG), ("StringVal", LPCWSTR),
        ("EvtHandleVal", EVT_HANDLE), ("PtrVal", PVOID),
    ]


class EVT_VARIANT(ctypes.Structure):
    """``winevt.h`` EVT_VARIANT: ``union {...}`` (8 bytes), ``DWORD Count`` (elements of an
    array, not bytes), ``DWORD Type`` (an ``EvtVarType*`` value, ``| EVT_VARIANT_TYPE_ARRAY``).
    16 bytes on x64."""

    _anonymous_ = ("u",)
    _fields_ = [("u", EVT_VARIANT_UNION), ("Count", DWORD), ("Type", DWORD)]


_P_DWORD = ctypes.POINTER(DWORD)
_P_HANDLE = ctypes.POINTER(EVT_HANDLE)

#: name -> (restype, argtypes) of the wevtapi.dll functions used, in the SDK's parameter order.
PROTOTYPES: dict[str, tuple[Any, list]] = {
    # EVT_HANDLE EvtSubscribe(Session, SignalEvent, ChannelPath, Query, Bookmark, Context,
    #                         Callback, Flags)
    "EvtSubscribe": (EVT_HANDLE, [EVT_HANDLE, HANDLE, LPCWSTR, LPCWSTR, EVT_HANDLE, PVOID, PVOID,
                                  DWORD]),
    # EVT_HANDLE EvtQuery(Session, Path, Query, Flags)
    "EvtQuery": (EVT_HANDLE, [EVT_HANDLE, LPCWSTR, LPCWSTR, DWORD]),
    # BOOL EvtNext(ResultSet, EventsSize, Events, Timeout, Flags, Returned)
    "EvtNext": (BOOL, [EVT_HANDLE, DWORD, _P_HANDLE, DWORD, DWORD, _P_DWORD]),
    # BOOL EvtSeek(ResultSet, Position, Bookmark, Timeout, Flags)
    "EvtSeek": (BOOL, [EVT_HANDLE, LONGLONG, EVT_HANDLE, DWORD, DWORD]),
    # BOOL EvtRender(Context, Fragment, Flags, BufferSize, Buffer, BufferUsed, PropertyCount)
    "EvtRender": (BOOL, [EVT_HANDLE, EVT_HANDLE, DWORD, DWORD, PVOID, _P_DWORD, _P_DWORD]),
    # EVT_HANDLE EvtCreateBookmark(BookmarkXml)
    "EvtCreateBookmark": (EVT_HANDLE, [LPCWSTR]),
    # BOOL EvtUpdateBookmark(Bookmark, Event)
    "EvtUpdateBookmark": (BOOL, [EVT_HANDLE, EVT_HANDLE]),
    # BOOL EvtClose(Object)
    "EvtClose": (BOOL, [EVT_HANDLE]),
    # EVT_HANDLE EvtOpenLog(Session, Path, Flags)
    "EvtOpenLog": (EVT_HANDLE, [EVT_HANDLE, LPCWSTR, DWORD]),
    # BOOL EvtGetLogInfo(Log, PropertyId, PropertyValueBufferSize, PropertyValueBuffer,
    #                    PropertyValueBufferUsed)
    "EvtGetLogInfo": (BOOL, [EVT_HANDLE, DWORD, DWORD, ctypes.POINTER(EVT_VARIANT), _P_DWORD]),
    # DWORD EvtGetExtendedStatus(BufferSize, Buffer, BufferUsed)
    "EvtGetExtendedStatus": (DWORD, [DWORD, LPWSTR, _P_DWORD]),
}

#: kernel32.dll functions for the pull model's signal events.
KERNEL32_PROTOTYPES: dict[str, tuple[Any, list]] = {
    # HANDLE CreateEventW(lpEventAttributes, bManualReset, bInitialState, lpName)
    "CreateEventW": (HANDLE, [PVOID, BOOL, BOOL, LPCWSTR]),
    "SetEvent": (BOOL, [HANDLE]),
    "ResetEvent": (BOOL, [HANDLE]),
    # DWORD WaitForMultipleObjects(nCount, lpHandles, bWaitAll, dwMilliseconds)
    "WaitForMultipleObjects": (DWORD, [DWORD, ctypes.POINTER(HANDLE), BOOL, DWORD]),
    "CloseHandle": (BOOL, [HANDLE]),
}


def bind(dll: Any, prototypes: dict[str, tuple[Any, list]]) -> Any:
    """Set ``restype``/``argtypes`` of each function of ``prototypes`` on ``dll`` (a
    ``ctypes.WinDLL``, or any object whose attributes accept them) and return ``dll``.

    Raises:
        AttributeError: the DLL lacks a function (an old Windows).
    """
    for name, (restype, argtypes) in prototypes.items():
        fn = getattr(dll, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return dll


@dataclass(frozen=True)
class LogInfo:
    """What ``EvtGetLogInfo`` tells about a channel's log.

    Attributes:
        oldest_record: ``EvtLogOldestRecordNumber``: the EventRecordID of the oldest record still
            in the log (0 or ``None`` when the log is empty or unknown).
        record_count: ``EvtLogNumberOfLogRecords``, or ``None`` when unknown.
    """

    oldest_record: Optional[int]
    record_count: Optional[int]


class WevtApi(abc.ABC):
    """The Event Log operations the subscription loop needs (pull model).

    Handles are opaque values. Every method raises
    :class:`~sysmonx.windows.win32.Win32Error` (with the Win32 code) on failure. Signals are
    manual-reset events: set by the Event Log service when a subscription has new results.
    """

    @abc.abstractmethod
    def create_signal(self) -> Any:
        """A new manual-reset, initially signalled event (``CreateEventW(NULL, TRUE, TRUE,
        NULL)``)."""

    @abc.abstractmethod
    def set_signal(self, signal: Any) -> None:
        """``SetEvent`` (used to wake the reader for a stop)."""

    @abc.abstractmethod
    def reset_signal(self, signal: Any) -> None:
        """``ResetEvent``."""

    @abc.abstractmethod
    def wait(self, signals: Sequence[Any], timeout_ms: int) -> Optional[int]:
        """``WaitForMultipleObjects(bWaitAll=FALSE)``: the index of a signalled handle, or
        ``None`` on timeout."""

    @abc.abstractmethod
    def close_signal(self, signal: Any) -> None:
        """``CloseHandle``."""

    @abc.abstractmethod
    def subscribe(self, channel: str, query: str, bookmark: Any, flags: int,
                  signal: Any) -> Any:
        """``EvtSubscribe(NULL, signal, channel, query, bookmark, NULL, NULL, flags)`` (pull
        model: no callback). ``bookmark`` is ``None`` unless ``flags`` has
        ``EvtSubscribeStartAfterBookmark``."""

    @abc.abstractmethod
    def next(self, subscription: Any, count: int, timeout_ms: int) -> list:
        """``EvtNext``: up to ``count`` event handles; ``[]`` when ``ERROR_NO_MORE_ITEMS``.
        Other failures (``ERROR_EVT_QUERY_RESULT_STALE``, ``ERROR_INVALID_OPERATION``,
        ``RPC_S_INVALID_BOUND`` ...) raise."""

    @abc.abstractmethod
    def render_xml(self, event: Any) -> str:
        """``EvtRender(NULL, event, EvtRenderEventXml)``: the event's XML text."""

    @abc.abstractmethod
    def create_bookmark(self, xml: Optional[str]) -> Any:
        """``EvtCreateBookmark``: from bookmark XML (``<BookmarkList>...``) or empty (``None``)."""

    @abc.abstractmethod
    def update_bookmark(self, bookmark: Any, event: Any) -> None:
        """``EvtUpdateBookmark``: move the bookmark to ``event``."""

    @abc.abstractmethod
    def render_bookmark(self, bookmark: Any) -> str:
        """``EvtRender(NULL, bookmark, EvtRenderBookmark)``: the bookmark's XML."""

    @abc.abstractmethod
    def close(self, handle: Any) -> None:
        """``EvtClose`` (subscriptions, events, bookmarks)."""

    @abc.abstractmethod
    def log_info(self, channel: str) -> LogInfo:
        """``EvtOpenLog(channel)`` + ``EvtGetLogInfo`` (oldest record, record count)."""

    @abc.abstractmethod
    def query_record(self, channel: str, record_id: int) -> Optional[str]:
        """The XML of the record numbered ``record_id`` in ``channel``, or ``None`` when the log
        holds no such record (``EvtQuery`` with ``*[System[EventRecordID=N]]``, ``EvtNext``,
        ``EvtRender``)."""


class CtypesWevtApi(WevtApi):
    """:class:`WevtApi` over wevtapi.dll and kernel32.dll through ctypes.

    Args:
        wevtapi, kernel32: loaded DLL objects (default: looked up now with
            :func:`~sysmonx.windows.win32.load_dll` and bound with :func:`bind`); tests pass
            objects whose attributes are Python callables.
        last_error: returns the thread's last Win32 error (default ``ctypes.get_last_error``,
            Windows only).
    Raises:
        Win32Unavailable: not Windows, or a DLL cannot be loaded (default arguments only).
    """

    def __init__(self, wevtapi: Any = None, kernel32: Any = None,
                 last_error: Optional[Callable[[], int]] = None) -> None:
        self.dll = wevtapi if wevtapi is not None else bind(load_dll("wevtapi"), PROTOTYPES)
        self.k32 = kernel32 if kernel32 is not None else bind(load_dll("kernel32"),
                                                              KERNEL32_PROTOTYPES)
        self._last_error = last_error or ctypes.get_last_error  # type: ignore[attr-defined]

    def _fail(self, function: str) -> Win32Error:
        return Win32Error(self._last_error(), function)

    # signals
    def create_signal(self) -> Any:
        h = self.k32.CreateEventW(None, 1, 1, None)
        if not h:
            raise self._fail("CreateEventW")
        return h

    def set_signal(self, signal: Any) -> None:
        if not self.k32.SetEvent(signal):
            raise self._fail("SetEvent")

    def reset_signal(self, signal: Any) -> None:
        if not self.k32.ResetEvent(signal):
            raise self._fail("ResetEvent")

    def wait(self, signals: Sequence[Any], timeout_ms: int) -> Optional[int]:
        arr = (HANDLE * len(signals))(*signals)
        rc = self.k32.WaitForMultipleObjects(len(signals), arr, 0,
                                             INFINITE if timeout_ms < 0 else timeout_ms)
        if rc == WAIT_TIMEOUT:
            return None
        if rc == WAIT_FAILED or not WAIT_OBJECT_0 <= rc < WAIT_OBJECT_0 + len(signals):
            raise self._fail("WaitForMultipleObjects")
        return rc - WAIT_OBJECT_0

    def close_signal(self, signal: Any) -> None:
        self.k32.CloseHandle(signal)

    # subscriptions
    def subscribe(self, channel: str, query: str, bookmark: Any, flags: int,
                  signal: Any) -> Any:
        h = self.dll.EvtSubscribe(None, signal, channel, query, bookmark, None, None, flags)
        if not h:
            raise self._fail("EvtSubscribe")
        return h

    def next(self, subscription: Any, count: int, timeout_ms: int) -> list:
        handles = (EVT_HANDLE * count)()
        returned = DWORD(0)
        if not self.dll.EvtNext(subscription, count, handles,
                                INFINITE if timeout_ms < 0 else timeout_ms, 0,
                                ctypes.byref(returned)):
            code = self._last_error()
            if code == ERROR_NO_MORE_ITEMS:
                return []
            raise Win32Error(code, "EvtNext")
        return [handles[i] for i in range(returned.value)]

    def _render(self, handle: Any, flags: int, function: str) -> str:
        used, props = DWORD(0), DWORD(0)
        if self.dll.EvtRender(None, handle, flags, 0, None, ctypes.byref(used),
                              ctypes.byref(props)):
            return ""
        code = self._last_error()
        if code != ERROR_INSUFFICIENT_BUFFER:
            raise Win32Error(code, function)
        size = used.value
        buf = ctypes.create_string_buffer(size)
        if not self.dll.EvtRender(None, handle, flags, size, buf, ctypes.byref(used),
                                  ctypes.byref(props)):
            raise self._fail(function)
        # UTF-16LE, NUL-terminated; BufferUsed counts bytes including the terminator.
        return buf.raw[:used.value].decode("utf-16-le", errors="replace").rstrip("\x00")

    def render_xml(self, event: Any) -> str:
        return self._render(event, EvtRenderEventXml, "EvtRender")

    def create_bookmark(self, xml: Optional[str]) -> Any:
        h = self.dll.EvtCreateBookmark(xml)
        if not h:
            raise self._fail("EvtCreateBookmark")
        return h

    def update_bookmark(self, bookmark: Any, event: Any) -> None:
        if not self.dll.EvtUpdateBookmark(bookmark, event):
            raise self._fail("EvtUpdateBookmark")

    def render_bookmark(self, bookmark: Any) -> str:
        return self._render(bookmark, EvtRenderBookmark, "EvtRender")

    def close(self, handle: Any) -> None:
        if handle:
            self.dll.EvtClose(handle)

    def _log_property(self, log: Any, prop: int) -> Optional[int]:
        value = EVT_VARIANT()
        used = DWORD(0)
        if not self.dll.EvtGetLogInfo(log, prop, ctypes.sizeof(value), ctypes.byref(value),
                                      ctypes.byref(used)):
            raise self._fail("EvtGetLogInfo")
        t = value.Type & EVT_VARIANT_TYPE_MASK
        if t == EvtVarTypeNull:
            return None
        if t == EvtVarTypeUInt32:
            return int(value.UInt32Val)
        return int(value.UInt64Val)

    def query_record(self, channel: str, record_id: int) -> Optional[str]:
        q = self.dll.EvtQuery(None, channel, f"*[System[EventRecordID={int(record_id)}]]",
                              EvtQueryChannelPath | EvtQueryForwardDirection)
        if not q:
            raise self._fail("EvtQuery")
        try:
            handles = self.next(q, 1, 0)
            if not handles:
                return None
            try:
                return self.render_xml(handles[0])
            finally:
                self.close(handles[0])
        finally:
            self.dll.EvtClose(q)

    def log_info(self, channel: str) -> LogInfo:
        log = self.dll.EvtOpenLog(None, channel, EvtOpenChannelPath)
        if not log:
            raise self._fail("EvtOpenLog")
        try:
            return LogInfo(self._log_property(log, EvtLogOldestRecordNumber),
                           self._log_property(log, EvtLogNumberOfLogRecords))
        finally:
            self.dll.EvtClose(log)
