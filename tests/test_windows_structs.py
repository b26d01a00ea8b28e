"""Win32 declarations (wevtapi, ETW) against the documented x64 layouts.

The expected sizes and offsets below are typed from the x64 type dumps generated from Microsoft's
public symbols (``ntdiff/headers``: ``_EVENT_TRACE_LOGFILEW`` size 0x1c0, ``_EVENT_RECORD`` 0x70,
``_TRACE_LOGFILE_HEADER`` 0x118, ...) and the SDK headers' declarations as published on Microsoft
Learn (``evntrace.h``, ``evntcons.h``, ``evntprov.h``, ``wmistr.h``, ``winevt.h``). They are data
independent of the ctypes declarations: a field declared with a platform-sized type (``c_ulong``
is 8 bytes on Linux) or in the wrong order moves an offset and fails here, on any 64-bit host.
"""

from __future__ import annotations

import ctypes
import struct

import pytest

from sysmonx.windows import etw, wevtapi, win32

pytestmark = pytest.mark.skipif(struct.calcsize("P") != 8, reason="x64 layouts need a 64-bit host")

#: structure -> (size, {dotted field path: offset}).
LAYOUTS = {
    "GUID": (16, {"Data1": 0, "Data2": 4, "Data3": 6, "Data4": 8}),
    "SYSTEMTIME": (16, {"wYear": 0, "wMonth": 2, "wDay": 6, "wMilliseconds": 14}),
    "EVT_VARIANT": (16, {"u": 0, "Count": 8, "Type": 12}),
    "WNODE_HEADER": (48, {"BufferSize": 0, "ProviderId": 4, "HistoricalContext": 8,
                          "Version": 8, "Linkage": 12, "u2": 16, "Guid": 24,
                          "ClientContext": 40, "Flags": 44}),
    "EVENT_TRACE_PROPERTIES": (120, {
        "Wnode": 0, "BufferSize": 48, "MinimumBuffers": 52, "MaximumBuffers": 56,
        "MaximumFileSize": 60, "LogFileMode": 64, "FlushTimer": 68, "EnableFlags": 72,
        "AgeLimit": 76, "FlushThreshold": 76, "NumberOfBuffers": 80, "FreeBuffers": 84,
        "EventsLost": 88, "BuffersWritten": 92, "LogBuffersLost": 96,
        "RealTimeBuffersLost": 100, "LoggerThreadId": 104, "LogFileNameOffset": 112,
        "LoggerNameOffset": 116}),
    "EVENT_DESCRIPTOR": (16, {"Id": 0, "Version": 2, "Channel": 3, "Level": 4, "Opcode": 5,
                              "Task": 6, "Keyword": 8}),
    "EVENT_HEADER": (80, {"Size": 0, "HeaderType": 2, "Flags": 4, "EventProperty": 6,
                          "ThreadId": 8, "ProcessId": 12, "TimeStamp": 16, "ProviderId": 24,
                          "EventDescriptor": 40, "EventDescriptor.Keyword": 48,
                          "KernelTime": 56, "UserTime": 60, "ProcessorTime": 56,
                          "ActivityId": 64}),
    "ETW_BUFFER_CONTEXT": (4, {"ProcessorNumber": 0, "Alignment": 1, "ProcessorIndex": 0,
                               "LoggerId": 2}),
    "EVENT_HEADER_EXTENDED_DATA_ITEM": (16, {"Reserved1": 0, "ExtType": 2, "LinkageBits": 4,
                                             "DataSize": 6, "DataPtr": 8}),
    "EVENT_RECORD": (112, {"EventHeader": 0, "BufferContext": 80, "ExtendedDataCount": 84,
                           "UserDataLength": 86, "ExtendedData": 88, "UserData": 96,
                           "UserContext": 104}),
    "EVENT_TRACE_HEADER": (48, {"Size": 0, "FieldTypeFlags": 2, "HeaderType": 2,
                                "MarkerFlags": 3, "v": 4, "ThreadId": 8, "ProcessId": 12,
                                "TimeStamp": 16, "Guid": 24, "GuidPtr": 24, "t": 40}),
    "EVENT_TRACE": (88, {"Header": 0, "InstanceId": 48, "ParentInstanceId": 52,
                         "ParentGuid": 56, "MofData": 72, "MofLength": 80,
                         "ClientContext": 84, "BufferContext": 84}),
    "TIME_ZONE_INFORMATION": (172, {"Bias": 0, "StandardName": 4, "StandardDate": 0x44,
                                    "StandardBias": 0x54, "DaylightName": 0x58,
                                    "DaylightDate": 0x98, "DaylightBias": 0xA8}),
    "TRACE_LOGFILE_HEADER": (0x118, {
        "BufferSize": 0, "v": 4, "ProviderVersion": 8, "NumberOfProcessors": 0xC,
        "EndTime": 0x10, "TimerResolution": 0x18, "MaximumFileSize": 0x1C, "LogFileMode": 0x20,
        "BuffersWritten": 0x24, "LogInstanceGuid": 0x28, "StartBuffers": 0x28,
        "PointerSize": 0x2C, "EventsLost": 0x30, "CpuSpeedInMHz": 0x34, "LoggerName": 0x38,
        "LogFileName": 0x40, "TimeZone": 0x48, "BootTime": 0xF8, "PerfFreq": 0x100,
        "StartTime": 0x108, "ReservedFlags": 0x110, "BuffersLost": 0x114}),
    "EVENT_TRACE_LOGFILEW": (0x1C0, {
        "LogFileName": 0, "LoggerName": 8, "CurrentTime": 0x10, "BuffersRead": 0x18,
        "LogFileMode": 0x1C, "ProcessTraceMode": 0x1C, "CurrentEvent": 0x20,
        "LogfileHeader": 0x78, "LogfileHeader.BuffersLost": 0x78 + 0x114,
        "BufferCallback": 0x190, "BufferSize": 0x198, "Filled": 0x19C, "EventsLost": 0x1A0,
        "EventCallback": 0x1A8, "EventRecordCallback": 0x1A8, "IsKernelTrace": 0x1B0,
        "Context": 0x1B8}),
}

_MODULES = (win32, wevtapi, etw)


def _struct(name):
    for mod in _MODULES:
        if hasattr(mod, name):
            return getattr(mod, name)
    raise AssertionError(f"{name} is not declared")


def _field_type(cls, name):
    for entry in cls._fields_:
        if entry[0] == name:
            return entry[1]
    for anon in getattr(cls, "_anonymous_", ()):
        t = _field_type(_field_type(cls, anon), name)
        if t is not None:
            return t
    return None


def _offset(cls, path: str) -> int:
    total = 0
    for part in path.split("."):
        total += getattr(cls, part).offset
        cls = _field_type(cls, part)
    return total


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layout_matches_documented_x64(name):
    cls = _struct(name)
    size, offsets = LAYOUTS[name]
    assert ctypes.sizeof(cls) == size, f"sizeof({name})"
    got = {path: _offset(cls, path) for path in offsets}
    assert got == offsets




def _arg_sizes(prototypes):
    return {name: (ctypes.sizeof(res) if res is not None else 0,
                   [ctypes.sizeof(a) for a in args]) for name, (res, args) in prototypes.items()}


def test_wevtapi_prototypes_fixed_width():
    sizes = _arg_sizes(wevtapi.PROTOTYPES)
    # From winevt.h: handles and pointers 8 bytes, DWORD/BOOL 4, LONGLONG 8.
    assert sizes["EvtSubscribe"] == (8, [8, 8, 8, 8, 8, 8, 8, 4])
    assert sizes["EvtNext"] == (4, [8, 4, 8, 4, 4, 8])
    assert sizes["EvtRender"] == (4, [8, 8, 4, 4, 8, 8, 8])
    assert sizes["EvtSeek"] == (4, [8, 8, 8, 4, 4])
    assert sizes["EvtCreateBookmark"] == (8, [8])
    assert sizes["EvtUpdateBookmark"] == (4, [8, 8])
    assert sizes["EvtClose"] == (4, [8])
    assert sizes["EvtGetLogInfo"] == (4, [8, 4, 4, 8, 8])
    assert sizes["EvtQuery"] == (8, [8, 8, 8, 4])
    k32 = _arg_sizes(wevtapi.KERNEL32_PROTOTYPES)
    assert k32["WaitForMultipleObjects"] == (4, [4, 8, 4, 4])


def test_etw_prototypes_fixed_width():
    sizes = _arg_sizes(etw.PROTOTYPES)
    # evntrace.h: TRACEHANDLE is ULONG64, ULONG 4, UCHAR 1, ULONGLONG 8.
    assert sizes["StartTraceW"] == (4, [8, 8, 8])
    assert sizes["ControlTraceW"] == (4, [8, 8, 8, 4])
    assert sizes["EnableTraceEx2"] == (4, [8, 8, 4, 1, 8, 8, 4, 8])
    assert sizes["OpenTraceW"] == (8, [8])
    assert sizes["ProcessTrace"] == (4, [8, 4, 8, 8])
    assert sizes["CloseTrace"] == (4, [8])


def test_bind_sets_prototypes_on_a_dll_object():
    class Fn:
        restype = None
        argtypes = None

    class Dll:
        pass

    dll = Dll()
    for name in wevtapi.PROTOTYPES:
        setattr(dll, name, Fn())
    wevtapi.bind(dll, wevtapi.PROTOTYPES)
    assert dll.EvtNext.restype is win32.BOOL
    assert dll.EvtNext.argtypes[1] is win32.DWORD
    with pytest.raises(AttributeError):
        etw.bind(Dll())


def test_event_trace_properties_buffer_shape():
    buf = etw.new_properties()
    p = buf.props
    assert p.Wnode.BufferSize == ctypes.sizeof(buf) >= 120 + 2 * etw.MAX_SESSION_NAME
    assert p.LoggerNameOffset == 120 and p.LogFileNameOffset == 0
    assert p.LogFileMode == etw.EVENT_TRACE_REAL_TIME_MODE
    assert p.Wnode.Flags == etw.WNODE_FLAG_TRACED_GUID


def test_guid_round_trip_and_bytes_le():
    text = "{22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716}"  # Microsoft-Windows-Kernel-Process
    g = win32.GUID.from_string(text.upper())
    assert str(g) == text
    assert g.Data1 == 0x22FB2CD6 and g.Data2 == 0x0E7B and bytes(g.Data4)[:2] == b"\xa0\xc7"


def test_filetime_to_iso():
    assert win32.filetime_to_iso(win32.FILETIME_EPOCH_OFFSET) == "1970-01-01T00:00:00.0000000Z"
    assert win32.filetime_to_iso(132223104000000000 + 1234567) == "2020-01-01T00:00:00.1234567Z"
    assert win32.filetime_to_iso(0) is None


def test_win32_error_carries_code_on_every_os():
    err = win32.Win32Error(wevtapi.ERROR_EVT_QUERY_RESULT_STALE, "EvtNext")
    assert err.winerror == 15011 and isinstance(err, OSError) and "EvtNext" in str(err)


def test_load_dll_refuses_off_windows():
    if win32.is_windows():
        pytest.skip("on Windows the DLL loads")
    with pytest.raises(win32.Win32Unavailable, match="needs Windows"):
        win32.load_dll("wevtapi")


# ---- the ctypes API objects over DLL objects whose functions are Python callables --------------

class _FakeWevtDll:
    """wevtapi functions with the SDK's calling conventions: out-parameters through ``byref``,
    failure as FALSE/NULL plus a last error."""

    def __init__(self, xml_by_handle):
        self.xml = xml_by_handle
        self.last_error = 0
        self.closed = []
        self.queue = list(xml_by_handle)

    def EvtRender(self, ctx, handle, flags, size, buf, used_ref, props_ref):
        data = (self.xml[handle] + "\x00").encode("utf-16-le")
        used_ref._obj.value = len(data)
        if size < len(data):
            self.last_error = win32.ERROR_INSUFFICIENT_BUFFER
            return 0
        ctypes.memmove(buf, data, len(data))
        return 1

    def EvtNext(self, sub, count, handles, timeout, flags, returned_ref):
        if not self.queue:
            self.last_error = win32.ERROR_NO_MORE_ITEMS
            return 0
        batch, self.queue = self.queue[:count], self.queue[count:]
        for i, h in enumerate(batch):
            handles[i] = h
        returned_ref._obj.value = len(batch)
        return 1

    def EvtSubscribe(self, session, signal, channel, query, bookmark, ctx, cb, flags):
        self.last_error = wevtapi.ERROR_EVT_CHANNEL_NOT_FOUND
        return None

    def EvtClose(self, h):
        self.closed.append(h)
        return 1

    def EvtQuery(self, session, path, query, flags):
        self.queries = getattr(self, "queries", []) + [(path, query, flags)]
        return 0x51


def test_ctypes_wevtapi_render_two_call_protocol_and_next():
    text = "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'>é€𝄞</Event>"
    dll = _FakeWevtDll({101: text, 102: "<Event/>", 103: "<Event/>"})
    api = wevtapi.CtypesWevtApi(wevtapi=dll, kernel32=object(), last_error=lambda: dll.last_error)
    assert api.render_xml(101) == text
    assert api.next("sub", 2, 0) == [101, 102]
    assert api.next("sub", 2, 0) == [103]
    assert api.next("sub", 2, 0) == []          # ERROR_NO_MORE_ITEMS is "nothing now"
    with pytest.raises(win32.Win32Error) as info:
        api.subscribe("Nope/Operational", "*", None, wevtapi.EvtSubscribeToFutureEvents, 1)
    assert info.value.winerror == wevtapi.ERROR_EVT_CHANNEL_NOT_FOUND
    assert info.value.function == "EvtSubscribe"


def test_ctypes_wevtapi_query_record_closes_its_handles():
    dll = _FakeWevtDll({7: "<Event>seven</Event>"})
    api = wevtapi.CtypesWevtApi(wevtapi=dll, kernel32=object(), last_error=lambda: dll.last_error)
    assert api.query_record("Security", 7) == "<Event>seven</Event>"
    assert dll.queries == [("Security", "*[System[EventRecordID=7]]",
                            wevtapi.EvtQueryChannelPath | wevtapi.EvtQueryForwardDirection)]
    assert dll.closed == [7, 0x51]
    assert api.query_record("Security", 8) is None      # ERROR_NO_MORE_ITEMS: no such record
