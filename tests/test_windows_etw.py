"""The Kernel-Process ETW consumer, with real EVENT_RECORD structures delivered by a fake ETW
session: template decoding per version, loss counters surfaced as events 255, a callback that
never blocks, session hygiene; and the ctypes ETW API over a fake advapi32."""

from __future__ import annotations

import ctypes
import time

import pytest

from sysmonx.windows import etw
from sysmonx.windows.etw import SessionStats
from sysmonx.windows.etw_process import (KERNEL_PROCESS_CHANNEL, KERNEL_PROCESS_GUID,
                                         DecodeError, EtwUnavailable, KernelProcessSource,
                                         decode_user_data)
from sysmonx.windows.fakes import FakeEtwApi, kernel_process_record
from sysmonx.windows.win32 import ERROR_ACCESS_DENIED, FILETIME_EPOCH_OFFSET, is_windows

T0 = FILETIME_EPOCH_OFFSET + 1_700_000_000 * 10_000_000 + 1234567   # 2023-11-14T22:13:20.1234567Z
START_V3 = {"ProcessID": 7020, "ProcessSequenceNumber": 4096, "CreateTime": T0,
            "ParentProcessID": 5132, "ParentProcessSequenceNumber": 2048, "SessionID": 1,
            "Flags": 0, "ProcessTokenElevationType": 3, "ProcessTokenIsElevated": 0,
            "MandatoryLabel": "S-1-16-8192",
            "ImageName": "\\Device\\HarddiskVolume3\\Windows\\System32\\cmd.exe",
            "ImageChecksum": 0x6C3E2, "TimeDateStamp": 0x4A5BC1E7, "PackageFullName": "",
            "PackageRelativeAppId": ""}
STOP_V2 = {"ProcessID": 7020, "ProcessSequenceNumber": 4096, "CreateTime": T0,
           "ExitTime": T0 + 25_000_000, "ExitCode": 0, "TokenElevationType": 3,
           "HandleCount": 75, "CommitCharge": 2_228_224, "CommitPeak": 2_400_256,
           "CPUCycleCount": 91_234_567, "ReadOperationCount": 11, "WriteOperationCount": 2,
           "ReadTransferKiloBytes": 40, "WriteTransferKiloBytes": 1, "HardFaultCount": 0,
           "ImageName": "cmd.exe"}


def _collect(src, n, timeout=10):
    out = []
    deadline = time.monotonic() + timeout
    for ev in src.events(idle=0.05):
        if ev is not None:
            out.append(ev)
        if len(out) >= n or time.monotonic() > deadline:
            break
    return out


def test_start_and_stop_decoded_like_the_event_log_renders_them():
    api = FakeEtwApi()
    src = KernelProcessSource(api=api, computer="WS01", poll=60)
    api.feed(*kernel_process_record(1, 3, START_V3, pid=5132, tid=6000, timestamp=T0))
    api.feed(*kernel_process_record(2, 2, STOP_V2, timestamp=T0 + 25_000_000))
    start, stop = _collect(src, 2)
    src.close()
    assert ("EnableTraceEx2", 0x4242, KERNEL_PROCESS_GUID, 4, 0x10) in api.calls
    assert start.event_id == 1 and start.provider == "Microsoft-Windows-Kernel-Process"
    assert start.provider_guid == KERNEL_PROCESS_GUID and start.channel == KERNEL_PROCESS_CHANNEL
    assert (start.version, start.level, start.task, start.opcode) == (3, 4, 1, 1)
    assert start.keywords == "0x8000000000000010" and start.record_id is None
    assert (start.process_id, start.thread_id, start.computer) == (5132, 6000, "WS01")
    assert start.time_created == "2023-11-14T22:13:20.123456700Z"
    assert list(start.data) == [f for f, _ in __import__(
        "sysmonx.windows.etw_process", fromlist=["TEMPLATES"]).TEMPLATES[(1, 3)]]
    assert start.data["ProcessID"] == "7020" and start.data["ParentProcessID"] == "5132"
    assert start.data["CreateTime"] == "2023-11-14T22:13:20.1234567Z"
    assert start.data["MandatoryLabel"] == "S-1-16-8192"
    assert start.data["ImageName"] == "\\Device\\HarddiskVolume3\\Windows\\System32\\cmd.exe"
    assert start.data["ImageChecksum"] == str(0x6C3E2) and start.data["PackageFullName"] == ""
    assert stop.event_id == 2 and stop.data["ImageName"] == "cmd.exe"
    assert stop.data["ExitTime"] == "2023-11-14T22:13:22.6234567Z"
    assert stop.data["CommitPeak"] == "2400256" and stop.data["HardFaultCount"] == "0"
    assert "etw-kernel-process" == src.name and src.stats["delivered"] == 2
    assert "SysmonX-KernelProcess" not in api.active      # session stopped


def test_older_template_versions():
    v0 = decode_user_data(1, 0, kernel_process_record(
        1, 0, {"ProcessID": 8, "CreateTime": T0, "ParentProcessID": 4, "SessionID": 0,
               "ImageName": "smss.exe"})[1].raw)
    assert v0 == {"ProcessID": "8", "CreateTime": "2023-11-14T22:13:20.1234567Z",
                  "ParentProcessID": "4", "SessionID": "0", "ImageName": "smss.exe"}
    stop0 = {k: STOP_V2[k] for k in ("ProcessID", "CreateTime", "ExitTime", "ExitCode",
                                     "TokenElevationType", "HandleCount", "CommitCharge",
                                     "CommitPeak", "ImageName")}
    rec, buf = kernel_process_record(2, 0, stop0)
    assert decode_user_data(2, 0, ctypes.string_at(rec.UserData, rec.UserDataLength)) == \
        {k: (v if isinstance(v, str) else str(v)) if k not in ("CreateTime", "ExitTime")
         else {"CreateTime": "2023-11-14T22:13:20.1234567Z",
               "ExitTime": "2023-11-14T22:13:22.6234567Z"}[k] for k, v in stop0.items()}


def test_bad_records_are_reported_not_guessed():
    with pytest.raises(DecodeError, match="not terminated"):
        decode_user_data(1, 0, b"\x08\x00\x00\x00" + b"\x00" * 16 + b"s\x00m\x00")
    with pytest.raises(KeyError):
        decode_user_data(1, 9, b"")
    api = FakeEtwApi()
    src = KernelProcessSource(api=api, poll=60)
    api.feed(*kernel_process_record(1, 9, {"ProcessID": 1}))                 # unknown version
    api.feed(*kernel_process_record(1, 3, START_V3, truncate=30))            # cut short
    api.feed(*kernel_process_record(1, 3, START_V3, provider="{00000000-0000-0000-0000-"
                                                              "000000000001}"))
    api.feed(*kernel_process_record(2, 2, STOP_V2))
    got = _collect(src, 3)
    src.close()
    assert [e.event_id for e in got] == [255, 255, 2]
    assert "event 1 version 9 has no known template" in got[0].data["Description"]
    assert "undecodable Kernel-Process event" in got[1].data["Description"]
    assert src.stats["unknown"] == 1 and src.stats["decode_errors"] == 1
    assert src.stats["other_providers"] == 1


def test_session_loss_counters_become_events_255():
    api = FakeEtwApi(stats=[SessionStats(0, 0, 0, 10), SessionStats(5, 0, 2, 20)],
                     final_stats=SessionStats(7, 1, 2, 25))
    src = KernelProcessSource(api=api, poll=0.05)
    api.feed(*kernel_process_record(1, 3, START_V3))
    out = []
    deadline = time.monotonic() + 5
    for ev in src.events(idle=0.05):
        if ev is not None:
            out.append(ev)
        if sum(e.event_id == 255 for e in out) >= 2 or time.monotonic() > deadline:
            break
    src.stop()
    out += [e for e in src.events() if e is not None]   # the rest, then the final counters
    src.close()
    expected = [(5, "the ETW session's EventsLost counter rose"),
                (None, "2 real-time buffers were not delivered to SysmonX"),
                (2, "the ETW session's EventsLost counter rose"),
                (None, "1 session buffers were lost")]
    assert [loss.count for loss in src.losses] == [c for c, _ in expected]
    assert all(loss.detail.startswith(d) for loss, (_, d) in zip(src.losses, expected, strict=True))
    reports = [e for e in out if e.event_id == 255]
    assert reports[0].data["ID"] == "etw:SysmonX-KernelProcess"
    assert reports[0].data["Description"].startswith("Lost 5 events: ")
    assert reports[1].data["Description"].startswith("Lost an unknown number of events: 2 ")
    assert ("ControlTraceW(STOP)", "SysmonX-KernelProcess") in api.calls


def test_full_queue_drops_are_counted_and_reported():
    api = FakeEtwApi()
    src = KernelProcessSource(api=api, queue_size=3, poll=60)
    src.start()
    for i in range(10):
        api.feed(*kernel_process_record(1, 3, dict(START_V3, ProcessID=100 + i)))
    deadline = time.monotonic() + 5
    while src.stats["delivered"] + src.stats["queue_drops"] < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    src.stop()
    out = [e for e in src.events() if e is not None]
    src.close()
    assert src.stats["delivered"] == 3 and src.stats["queue_drops"] == 7
    assert [e.data["ProcessID"] for e in out if e.event_id == 1] == ["100", "101", "102"]
    assert [loss.count for loss in src.losses] == [7]
    assert "queue was full" in out[-1].data["Description"]


def test_start_failure_and_cleanup():
    api = FakeEtwApi()
    api.fail_start = ERROR_ACCESS_DENIED
    with pytest.raises(EtwUnavailable, match="error 5"):
        KernelProcessSource(api=api).start()
    api2 = FakeEtwApi()
    src = KernelProcessSource(api=api2, poll=60)
    src.start()
    assert "SysmonX-KernelProcess" in api2.active
    src.close()                                   # events() never consumed: still stopped
    assert "SysmonX-KernelProcess" not in api2.active


def test_check_available_off_windows():
    if is_windows():
        pytest.skip("advapi32 exists on Windows")
    with pytest.raises(EtwUnavailable, match="needs Windows"):
        KernelProcessSource.check_available()


class _FakeAdvapi:
    """advapi32 functions with the SDK's conventions (return codes, out-parameters)."""

    def __init__(self):
        self.calls = []
        self.exists = True
        self.logfile = None

    def StartTraceW(self, handle_ref, name, props_ref):
        self.calls.append(("StartTraceW", name))
        if self.exists:
            self.exists = False
            return 183  # ERROR_ALREADY_EXISTS: a session left by a crashed run
        props = props_ref._obj
        assert props.LoggerNameOffset == 120 and props.LogFileMode == etw.EVENT_TRACE_REAL_TIME_MODE
        handle_ref._obj.value = 99
        return 0

    def ControlTraceW(self, handle, name, props_ref, code):
        self.calls.append(("ControlTraceW", name, code))
        props_ref._obj.EventsLost = 3
        props_ref._obj.RealTimeBuffersLost = 1
        return 0

    def OpenTraceW(self, logfile_ref):
        self.logfile = logfile_ref._obj
        return 0x1234

    def ProcessTrace(self, handles, count, start, end):
        rec, keep = kernel_process_record(2, 2, STOP_V2)
        self.logfile.EventRecordCallback(ctypes.pointer(rec))
        return 0

    def CloseTrace(self, handle):
        return 0


def test_ctypes_etw_api_over_a_fake_advapi32():
    dll = _FakeAdvapi()
    api = etw.CtypesEtwApi(advapi32=dll)
    assert api.start_session("S") == 99
    assert dll.calls[:3] == [("StartTraceW", "S"), ("ControlTraceW", "S", 1),
                             ("StartTraceW", "S")]
    got = []
    trace = api.open_trace("S", lambda rec: got.append(rec.contents.EventHeader.EventDescriptor.Id))
    assert trace == 0x1234 and dll.logfile.LoggerName == "S"
    assert dll.logfile.ProcessTraceMode == (etw.PROCESS_TRACE_MODE_REAL_TIME
                                            | etw.PROCESS_TRACE_MODE_EVENT_RECORD)
    assert api.process_trace(trace) == 0 and got == [2]
    assert api.query_session("S") == SessionStats(3, 0, 1, 0)
