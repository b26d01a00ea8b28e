"""Fixed-width Win32 types and small helpers shared by the wevtapi and ETW declarations.

Why fixed width: ``ctypes.c_ulong`` and ``c_long`` are 4 bytes on Windows (LLP64) but 8 bytes on
64-bit Linux (LP64), and ``c_wchar`` is 2 bytes on Windows but 4 on Linux. Declaring ``DWORD`` as
``c_ulong`` would be right on Windows only, and a layout test run on Linux would prove nothing.
Every Win32 integer here is a ``c_(u)intN``, every ``WCHAR`` inside a structure is ``c_uint16``,
so structure sizes and offsets are the x64 Windows ones on every 64-bit host and the layout tests
(``tests/test_windows_structs.py``) are meaningful here. Pointers and handles are
``c_void_p``/``c_wchar_p`` (8 bytes on every 64-bit host).

Sources: the Windows SDK headers' type definitions (``basetsd.h``, ``windef.h``: DWORD/ULONG are
32-bit unsigned, LONG/BOOL 32-bit signed, ULONGLONG 64-bit, HANDLE a pointer; ``guiddef.h``: GUID
is ``{uint32 Data1; uint16 Data2; uint16 Data3; uint8 Data4[8]}``; ``minwinbase.h``: FILETIME is
100 ns intervals since 1601-01-01 UTC).

Nothing here loads a DLL at import time; :func:`load_dll` does it on Windows, when asked.
"""

from __future__ import annotations

import ctypes
import sys
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

__all__ = [
    "BYTE", "UCHAR", "USHORT", "WORD", "WCHAR", "DWORD", "ULONG", "UINT", "LONG", "BOOL", "INT",
    "ULONGLONG", "ULONG64", "LONGLONG", "HANDLE", "PVOID", "EVT_HANDLE", "TRACEHANDLE", "LPCWSTR",
    "LPWSTR", "GUID", "SYSTEMTIME", "Win32Error", "Win32Unavailable", "load_dll", "is_windows",
    "filetime_to_iso", "FILETIME_EPOCH_OFFSET", "ERROR_SUCCESS", "ERROR_ACCESS_DENIED",
    "ERROR_INVALID_HANDLE", "ERROR_INVALID_PARAMETER", "ERROR_INSUFFICIENT_BUFFER",
    "ERROR_NO_MORE_ITEMS", "ERROR_NOT_FOUND", "ERROR_TIMEOUT", "ERROR_INVALID_OPERATION",
    "ERROR_MORE_DATA", "ERROR_ALREADY_EXISTS", "ERROR_CANCELLED", "ERROR_WMI_INSTANCE_NOT_FOUND",
    "RPC_S_INVALID_BOUND", "WAIT_OBJECT_0", "WAIT_TIMEOUT", "WAIT_FAILED", "INFINITE",
]

# ---- fixed-width integer and pointer types ------------------------------------------------------

BYTE = UCHAR = ctypes.c_uint8
USHORT = WORD = ctypes.c_uint16
WCHAR = ctypes.c_uint16          # inside structures: a UTF-16 code unit, 2 bytes on every OS
DWORD = ULONG = UINT = ctypes.c_uint32
LONG = BOOL = INT = ctypes.c_int32
ULONGLONG = ULONG64 = ctypes.c_uint64
LONGLONG = ctypes.c_int64
HANDLE = PVOID = ctypes.c_void_p
EVT_HANDLE = ctypes.c_void_p      # winevt.h: typedef HANDLE EVT_HANDLE
TRACEHANDLE = ctypes.c_uint64     # evntrace.h: typedef ULONG64 TRACEHANDLE
LPCWSTR = LPWSTR = ctypes.c_wchar_p  # pointer (8 bytes); only dereferenced on Windows

# ---- error and wait codes (winerror.h, winbase.h) ----------------------------------------------

ERROR_SUCCESS = 0
ERROR_ACCESS_DENIED = 5
ERROR_INVALID_HANDLE = 6
ERROR_INVALID_PARAMETER = 87
ERROR_INSUFFICIENT_BUFFER = 122
ERROR_ALREADY_EXISTS = 183
ERROR_MORE_DATA = 234
ERROR_NO_MORE_ITEMS = 259
ERROR_NOT_FOUND = 1168
ERROR_CANCELLED = 1223
ERROR_TIMEOUT = 1460
ERROR_INVALID_OPERATION = 4317
ERROR_WMI_INSTANCE_NOT_FOUND = 4201
RPC_S_INVALID_BOUND = 1734
WAIT_OBJECT_0 = 0
WAIT_TIMEOUT = 0x102
WAIT_FAILED = 0xFFFFFFFF
INFINITE = 0xFFFFFFFF

#: 100 ns intervals between 1601-01-01 and 1970-01-01 (FILETIME epoch vs Unix epoch).
FILETIME_EPOCH_OFFSET = 116444736000000000


class Win32Error(OSError):
    """A Win32 call failed.

    Attributes:
        winerror: the Win32 error code (``GetLastError()``), e.g. 15011 for
            ``ERROR_EVT_QUERY_RESULT_STALE``. Set on every OS (``OSError.winerror`` exists only
            on Windows), so fakes raise the same exception the real API does.
        function: the Win32 function that failed.
    """

    def __init__(self, winerror: int, function: str = "", message: str = "") -> None:
        self.winerror = int(winerror)
        self.function = function
        text = message or f"{function or 'Win32 call'} failed with error {self.winerror}"
        super().__init__(self.winerror, text)

    def __str__(self) -> str:
        return self.args[1]


class Win32Unavailable(RuntimeError):
    """The Win32 API cannot be used here (not Windows, or the DLL is missing); ``str()`` is the
    reason shown to the user."""


def is_windows() -> bool:
    """True on Windows (``sys.platform == "win32"``)."""
    return sys.platform == "win32"


def load_dll(name: str) -> Any:
    """``ctypes.WinDLL(name, use_last_error=True)``, looked up only when called.

    Raises:
        Win32Unavailable: not Windows, or the DLL cannot be loaded (the reason is in the text).
    """
    if not is_windows():
        raise Win32Unavailable(f"{name}.dll needs Windows (this is {sys.platform})")
    windll = getattr(ctypes, "WinDLL", None)
    if windll is None:  # a Python without the Windows DLL loader
        raise Win32Unavailable(f"cannot load {name}.dll: this Python has no ctypes.WinDLL")
    try:
        return windll(name, use_last_error=True)
    except OSError as exc:
        raise Win32Unavailable(f"cannot load {name}.dll: {exc}") from None


# ---- GUID, SYSTEMTIME ---------------------------------------------------------------------------

class GUID(ctypes.Structure):
    """``guiddef.h`` GUID: 16 bytes, little-endian Data1-3 (the ``uuid.UUID.bytes_le`` layout)."""

    _fields_ = [("Data1", DWORD), ("Data2", WORD), ("Data3", WORD), ("Data4", BYTE * 8)]

    @classmethod
    def from_string(cls, text: str) -> "GUID":
        """``{22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716}`` (braces optional) -> GUID.

        Raises:
            ValueError: not a GUID.
        """
        return cls.from_buffer_copy(uuid.UUID(text.strip("{}")).bytes_le)

    def __str__(self) -> str:
        """``{lower-case}`` with braces, as event XML renders GUIDs."""
        return "{" + str(uuid.UUID(bytes_le=bytes(self))) + "}"


class SYSTEMTIME(ctypes.Structure):
    """``minwinbase.h`` SYSTEMTIME: eight WORDs, 16 bytes."""

    _fields_ = [("wYear", WORD), ("wMonth", WORD), ("wDayOfWeek", WORD), ("wDay", WORD),
                ("wHour", WORD), ("wMinute", WORD), ("wSecond", WORD), ("wMilliseconds", WORD)]


def filetime_to_iso(filetime: int) -> Optional[str]:
    """A FILETIME (100 ns ticks since 1601-01-01 UTC) as ``YYYY-MM-DDTHH:MM:SS.fffffffZ`` (seven
    fractional digits: the FILETIME resolution; the form event XML gives ``TimeCreated``).

    Returns ``None`` for 0 (Windows' "no time") and values beyond year 9999.
    """
    if filetime <= 0:
        return None
    seconds, ticks = divmod(filetime, 10_000_000)
    try:
        dt = datetime(1601, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=seconds)
    except OverflowError:
        return None
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ticks:07d}Z"
