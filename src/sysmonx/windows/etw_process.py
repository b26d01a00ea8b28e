"""Process start/stop from ETW (``Microsoft-Windows-Kernel-Process``), for hosts without Sysmon.

A private real-time session (``StartTraceW``) enables the provider with
``WINEVENT_KEYWORD_PROCESS`` (0x10) at level 4; ``OpenTraceW`` + ``ProcessTrace`` run in a
dedicated thread and the ``EventRecordCallback`` decodes each ``EVENT_RECORD`` into an
:class:`~sysmonx.event.Event` of the provider, the way the Event Log would render it in the
provider's ``Microsoft-Windows-Kernel-Process/Analytic`` channel: EventID 1 ``ProcessStart`` or
2 ``ProcessStop``, the template's fields in order, integers in decimal, FILETIMEs as
``YYYY-MM-DDTHH:MM:SS.fffffffZ``, SIDs as ``S-1-...``. Turning them into Sysmon events 1/5
(ProcessGuid, image path from the kernel device path, user) is a pipeline stage; this source
reports only what the kernel said.

Templates (provider manifest, as dumped from Windows 10 in OTRF/OSSEM's data dictionaries):

======  ========  ==================================================================================
event   version   fields
======  ========  ==================================================================================
1       0         ProcessID, CreateTime, ParentProcessID, SessionID, ImageName
1       1         ... SessionID, Flags, ImageName
1       2         ... Flags, ImageName, ImageChecksum, TimeDateStamp, PackageFullName,
                  PackageRelativeAppId
1       3         ProcessID, ProcessSequenceNumber, CreateTime, ParentProcessID,
                  ParentProcessSequenceNumber, SessionID, Flags, ProcessTokenElevationType,
                  ProcessTokenIsElevated, MandatoryLabel, ImageName, ImageChecksum, TimeDateStamp,
                  PackageFullName, PackageRelativeAppId
2       0         ProcessID, CreateTime, ExitTime, ExitCode, TokenElevationType, HandleCount,
                  CommitCharge, CommitPeak, ImageName (ANSI)
2       1         ... CommitPeak, CPUCycleCount, ReadOperationCount, WriteOperationCount,
                  ReadTransferKiloBytes, WriteTransferKiloBytes, HardFaultCount, ImageName
2       2         ProcessID, ProcessSequenceNumber, then as version 1
======  ========  ==================================================================================

An event of a version not listed, or whose data does not fit its template, is not guessed at:
it is counted and reported as an event 255.

Loss is data: the session's ``EventsLost``, ``LogBuffersLost`` and ``RealTimeBuffersLost``
counters (``ControlTraceW(EVENT_TRACE_CONTROL_QUERY)``) are polled and every increase becomes a
:class:`~sysmonx.windows.report.Loss` and an event 255 (buffers lost carry no event count: the
count is reported unknown with the number of buffers); events the callback could not queue
(consumer too slow) are counted and reported the same way.
"""

from __future__ import annotations

import ctypes
import platform
import queue
import struct
import threading
import time
from typing import Any, Callable, Iterator, Optional

from ..event import Event, normalize_time
from .etw import TRACE_LEVEL_INFORMATION, EtwApi, SessionStats
from .report import Loss, ReportIdentity, error_event, loss_event
from .win32 import Win32Error, Win32Unavailable, filetime_to_iso

__all__ = ["KERNEL_PROCESS_PROVIDER", "KERNEL_PROCESS_GUID", "KERNEL_PROCESS_CHANNEL",
           "WINEVENT_KEYWORD_PROCESS", "TEMPLATES", "decode_user_data", "event_from_record",
           "KernelProcessSource", "EtwUnavailable", "DecodeError"]

KERNEL_PROCESS_PROVIDER = "Microsoft-Windows-Kernel-Process"
KERNEL_PROCESS_GUID = "{22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716}"
KERNEL_PROCESS_CHANNEL = "Microsoft-Windows-Kernel-Process/Analytic"
WINEVENT_KEYWORD_PROCESS = 0x10

U32, U64, FT, USTR, ASTR, SID = "UInt32", "UInt64", "FILETIME", "UnicodeString", \
    "AnsiString", "SID"

_START0 = [("ProcessID", U32), ("CreateTime", FT), ("ParentProcessID", U32),
           ("SessionID", U32)]
_START2_TAIL = [("ImageName", USTR), ("ImageChecksum", U32), ("TimeDateStamp", U32),
                ("PackageFullName", USTR), ("PackageRelativeAppId", USTR)]
_STOP0 = [("ProcessID", U32), ("CreateTime", FT), ("ExitTime", FT), ("ExitCode", U32),
          ("TokenElevationType", U32), ("HandleCount", U32), ("CommitCharge", U64),
          ("CommitPeak", U64)]
_STOP1_IO = [("CPUCycleCount", U64), ("ReadOperationCount", U32),
             ("WriteOperationCount", U32), ("ReadTransferKiloBytes", U32),
             ("WriteTransferKiloBytes", U32), ("HardFaultCount", U32), ("ImageName", ASTR)]

#: (EventID, version) -> [(field, type)], see the module docstring.
TEMPLATES: dict[tuple[int, int], list[tuple[str, str]]] = {
    (1, 0): _START0 + [("ImageName", USTR)],
    (1, 1): _START0 + [("Flags", U32), ("ImageName", USTR)],
    (1, 2): _START0 + [("Flags", U32)] + _START2_TAIL,
    (1, 3): [("ProcessID", U32), ("ProcessSequenceNumber", U64), ("CreateTime", FT),
             ("ParentProcessID", U32), ("ParentProcessSequenceNumber", U64), ("SessionID", U32),
             ("Flags", U32), ("ProcessTokenElevationType", U32),
             ("ProcessTokenIsElevated", U32), ("MandatoryLabel", SID)] + _START2_TAIL,
    (2, 0): _STOP0 + [("ImageName", ASTR)],
    (2, 1): _STOP0 + _STOP1_IO,
    (2, 2): [_STOP0[0], ("ProcessSequenceNumber", U64)] + _STOP0[1:] + _STOP1_IO,
}


class EtwUnavailable(RuntimeError):
    """The ETW consumer cannot run here (not Windows, not elevated, ...); ``str()`` says why."""


class DecodeError(ValueError):
    """User data that does not fit the event's template (truncated, unterminated string)."""


def _sid_text(data: bytes, pos: int) -> tuple[str, int]:
    if pos + 8 > len(data):
        raise DecodeError("SID truncated")
    rev, count = data[pos], data[pos + 1]
    end = pos + 8 + 4 * count
    if rev != 1 or count > 15 or end > len(data):
        raise DecodeError("not a SID")
    authority = int.from_bytes(data[pos + 2:pos + 8], "big")
    subs = struct.unpack_from(f"<{count}I", data, pos + 8)
    return "S-1-" + "-".join(str(x) for x in (authority, *subs)), end


def decode_user_data(event_id: int, version: int, data: bytes) -> dict:
    """Decode a Kernel-Process event's user data with its template.

    Returns:
        ``{field: value text}`` in template order.
    Raises:
        KeyError: no template for ``(event_id, version)``.
        DecodeError: the data does not fit the template.
    """
    fields = TEMPLATES[(event_id, version)]
    out: dict = {}
    pos = 0
    n = len(data)
    for name, kind in fields:
        if kind in (U32, U64, FT):
            size = 4 if kind == U32 else 8
            if pos + size > n:
                raise DecodeError(f"{name}: data ends at byte {n}")
            value = int.from_bytes(data[pos:pos + size], "little")
            pos += size
            out[name] = (filetime_to_iso(value) or "") if kind == FT else str(value)
        elif kind == USTR:
            end = pos
            while end + 1 < n and (data[end] or data[end + 1]):
                end += 2
            if end + 1 >= n:
                raise DecodeError(f"{name}: string not terminated")
            out[name] = data[pos:end].decode("utf-16-le", errors="replace")
            pos = end + 2
        elif kind == ASTR:
            end = data.find(b"\x00", pos)
            if end < 0:
                raise DecodeError(f"{name}: string not terminated")
            out[name] = data[pos:end].decode("latin-1")
            pos = end + 1
        else:  # SID
            out[name], pos = _sid_text(data, pos)
    return out


def event_from_record(rec: Any, computer: str) -> Event:
    """An :class:`~sysmonx.event.Event` from an ``EVENT_RECORD`` (structure or pointer) of the
    Kernel-Process provider.

    Raises:
        KeyError: an event ID/version without a template.
        DecodeError: user data that does not fit.
    """
    r = rec.contents if hasattr(rec, "contents") else rec
    h = r.EventHeader
    d = h.EventDescriptor
    raw = ctypes.string_at(r.UserData, r.UserDataLength) if r.UserDataLength else b""
    data = decode_user_data(d.Id, d.Version, raw)
    when = filetime_to_iso(h.TimeStamp)
    return Event(d.Id, data, provider=KERNEL_PROCESS_PROVIDER, provider_guid=str(h.ProviderId),
                 version=d.Version, level=d.Level, task=d.Task, opcode=d.Opcode,
                 keywords=f"0x{d.Keyword:x}", time_created=normalize_time(when) if when else "",
                 record_id=None, process_id=h.ProcessId, thread_id=h.ThreadId,
                 channel=KERNEL_PROCESS_CHANNEL, computer=computer, user_id=None)


_END = object()


class KernelProcessSource:
    """Process start/stop events from a private real-time ETW session.

    Args:
        api: the ETW API (default :class:`~sysmonx.windows.etw.CtypesEtwApi`, built on start).
        session: the session name (a leftover session of that name is restarted).
        queue_size: decoded events waiting for the consumer; the ETW callback never blocks:
            past it events are dropped and reported.
        poll: seconds between reads of the session's loss counters.
        computer: ``System/Computer`` of the events (default: this host's name).
        identity: System header of the events 255.

    Attributes:
        stats: ``delivered``, ``decode_errors``, ``unknown``, ``queue_drops``, ``losses``,
            ``other_providers``.
        losses: the :class:`~sysmonx.windows.report.Loss` records reported.
    """

    name = "etw-kernel-process"

    def __init__(self, *, api: Optional[EtwApi] = None, session: str = "SysmonX-KernelProcess",
                 queue_size: int = 8192, poll: float = 5.0, computer: Optional[str] = None,
                 identity: Optional[ReportIdentity] = None,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self._api = api
        self.session = session
        self.poll = poll
        self.computer = computer or platform.node()
        self.identity = identity or ReportIdentity()
        self.clock = clock
        self._queue: "queue.Queue" = queue.Queue(maxsize=max(1, queue_size))
        self._thread: Optional[threading.Thread] = None
        self._trace: Optional[int] = None
        self._stopping = threading.Event()
        self._counters = SessionStats(0, 0, 0, 0)
        self._session_stopped = False
        self._reported_drops = 0
        self._lock = threading.Lock()
        self.stats = {k: 0 for k in ("delivered", "decode_errors", "unknown", "queue_drops",
                                     "losses", "other_providers")}
        self.losses: list[Loss] = []
        self._guid = KERNEL_PROCESS_GUID

    @classmethod
    def check_available(cls) -> None:
        """Raise :class:`EtwUnavailable` when advapi32's ETW functions cannot be used here."""
        try:
            from .etw import CtypesEtwApi
            CtypesEtwApi()
        except (Win32Unavailable, AttributeError) as exc:
            raise EtwUnavailable(str(exc)) from None

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the session, enable the provider, open the trace and start the thread that
        runs ``ProcessTrace``.

        Raises:
            EtwUnavailable: not Windows, or a session/provider call failed (e.g. error 5: not
                elevated; the Win32 code is in the message).
        """
        if self._thread is not None:
            return
        if self._api is None:
            try:
                from .etw import CtypesEtwApi
                self._api = CtypesEtwApi()
            except Win32Unavailable as exc:
                raise EtwUnavailable(str(exc)) from None
        api = self._api
        try:
            handle = api.start_session(self.session)
            api.enable_provider(handle, KERNEL_PROCESS_GUID, TRACE_LEVEL_INFORMATION,
                                WINEVENT_KEYWORD_PROCESS)
            self._trace = api.open_trace(self.session, self._callback)
        except Win32Error as exc:
            self._stop_session()
            raise EtwUnavailable(f"ETW session {self.session}: {exc}") from None
        self._thread = threading.Thread(target=self._run, name="sysmonx-etw", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        api, trace = self._api, self._trace
        assert api is not None and trace is not None
        try:
            rc = api.process_trace(trace)
            if rc not in (0, 1223) and not self._stopping.is_set():  # 1223: ERROR_CANCELLED
                self._put_nowait(error_event(f"etw:{self.session}",
                                             f"ProcessTrace ended with error {rc}",
                                             self.clock(), self.identity))
        finally:
            self._put_final(_END)

    def _put_final(self, item: Any) -> None:
        while True:
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                if self._stopping.is_set():
                    try:
                        self._queue.get_nowait()  # make room: the consumer is gone
                    except queue.Empty:
                        pass

    def _callback(self, rec: Any) -> None:
        """EventRecordCallback: decode and queue; never blocks the ETW thread."""
        try:
            r = rec.contents if hasattr(rec, "contents") else rec
            if str(r.EventHeader.ProviderId) != self._guid:
                self.stats["other_providers"] += 1
                return
            event = event_from_record(r, self.computer)
        except KeyError:
            self.stats["unknown"] += 1
            d = rec.contents.EventHeader.EventDescriptor if hasattr(rec, "contents") \
                else rec.EventHeader.EventDescriptor
            self._put_nowait(error_event(f"etw:{self.session}",
                                         f"Kernel-Process event {d.Id} version {d.Version} has "
                                         "no known template; not decoded", self.clock(),
                                         self.identity))
            return
        except Exception as exc:  # noqa: BLE001 - DecodeError, or anything odd: reported, never raised into ETW
            self.stats["decode_errors"] += 1
            self._put_nowait(error_event(f"etw:{self.session}",
                                         f"undecodable Kernel-Process event: {exc}",
                                         self.clock(), self.identity))
            return
        if self._put_nowait(event):
            self.stats["delivered"] += 1

    def _put_nowait(self, item: Any) -> bool:
        try:
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            with self._lock:
                self.stats["queue_drops"] += 1
            return False

    def events(self, idle: Optional[float] = None) -> Iterator[Optional[Event]]:
        """Yield events, and events 255 for losses (counters polled every ``poll`` seconds and
        once more at the end), until :meth:`stop`. With ``idle``, yield ``None`` after that many
        quiet seconds (for the caller's ticks)."""
        self.start()
        next_poll = time.monotonic() + self.poll
        quiet = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_poll:
                next_poll = now + self.poll
                yield from self._check_losses()
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                if idle is not None and time.monotonic() - quiet >= idle:
                    quiet = time.monotonic()
                    yield None
                continue
            if item is _END:
                yield from self._check_losses(final=True)
                return
            quiet = time.monotonic()
            yield item

    def _check_losses(self, final: bool = False) -> Iterator[Event]:
        api = self._api
        stats = None
        if api is not None:
            try:
                if final:
                    self._session_stopped = True
                    stats = api.stop_session(self.session)
                else:
                    stats = api.query_session(self.session)
            except Win32Error as exc:
                if not final:
                    yield error_event(f"etw:{self.session}",
                                      f"cannot read the session's loss counters: {exc}",
                                      self.clock(), self.identity)
        key = f"etw:{self.session}"
        now = self.clock()
        found = []
        if stats is not None:
            old = self._counters
            if stats.events_lost > old.events_lost:
                found.append(Loss(key, stats.events_lost - old.events_lost,
                                  "the ETW session's EventsLost counter rose (its buffers were "
                                  "full)", now))
            if stats.realtime_buffers_lost > old.realtime_buffers_lost:
                lost = stats.realtime_buffers_lost - old.realtime_buffers_lost
                found.append(Loss(key, None, f"{lost} real-time buffers were not delivered to "
                                  "SysmonX (consumer too slow); the number of events in them is "
                                  "unknown", now))
            if stats.log_buffers_lost > old.log_buffers_lost:
                found.append(Loss(key, None, f"{stats.log_buffers_lost - old.log_buffers_lost} "
                                  "session buffers were lost; the number of events in them is "
                                  "unknown", now))
            self._counters = stats
        with self._lock:
            drops = self.stats["queue_drops"] - self._reported_drops
            self._reported_drops = self.stats["queue_drops"]
        if drops:
            found.append(Loss(key, drops, "SysmonX's event queue was full (the pipeline fell "
                                          "behind)", now))
        for loss in found:
            self.losses.append(loss)
            self.stats["losses"] += 1
            yield loss_event(loss, self.identity)

    def _stop_session(self) -> None:
        self._session_stopped = True
        try:
            if self._api is not None:
                self._api.stop_session(self.session)
        except Win32Error:
            pass

    def stop(self) -> None:
        """Close the trace: ``ProcessTrace`` returns, :meth:`events` reports the final counters
        (the session is stopped then) and ends."""
        self._stopping.set()
        if self._api is not None and self._trace is not None:
            self._api.close_trace(self._trace)
            self._trace = None
        elif self._thread is None:
            self._put_final(_END)

    def close(self, timeout: float = 5.0) -> None:
        """:meth:`stop`, wait for the ``ProcessTrace`` thread, and stop the session if
        :meth:`events` did not (an ETW session outlives the process that started it)."""
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._thread is not None and not self._session_stopped:
            self._stop_session()
