"""Output to the Windows Event Log: SysmonX's own channel ``SysmonX/Operational`` (manifest
provider ``SysmonX``) with named fields, or the classic-source fallback.

**Manifest provider** (what Event Viewer and Winlogbeat need for named fields). Windows renders
an event's fields by name only from a registered instrumentation manifest whose templates name
them. :func:`render_manifest` generates ``sysmonx.man`` from the schema catalogue: provider
``SysmonX`` ``{06A2EA53-FC6C-42E5-9176-18749AB2CA13}`` (the 2019 prototype's), channel
``SysmonX/Operational`` (value 16, keyword bit 63, as ``mc.exe`` assigns to a first channel),
one template per event whose ``<data>`` names are the catalogue's fields in order (every value
``win:UnicodeString``: SysmonX holds Sysmon's rendered text), one message per event in Sysmon's
form (``Process Create:\\r\\nRuleName: %1\\r\\n...``). Registering it needs the resource DLL
``mc.exe -um`` + ``rc.exe`` + ``link -dll -noentry`` build from it, which this project cannot
build without the Windows SDK (docs/WINDOWS.md: build it in Windows CI, ship it as package
data, ``wevtutil im sysmonx.man /rf:DLL /mf:DLL`` at ``-i``). :class:`ManifestWriter` writes
through ``EventRegister``/``EventWrite``: one ``EVENT_DATA_DESCRIPTOR`` per field (UTF-16,
NUL-terminated), the ``EVENT_DESCRIPTOR`` from the catalogue (Id, Version, Channel 16, Level,
Task = EventID, Keyword ``0x8000000000000000``).

**Classic fallback** (works without the DLL): ``RegisterEventSourceW("SysmonX")`` and
``ReportEventW`` into the *Application* log, event type from the level, the EventID, one
insertion string per field, ``Name: value``. Consequences for consumers: Event Viewer shows "The
description for Event ID N from source SysmonX cannot be found" followed by the strings;
Winlogbeat gets ``winlog.event_data.param1``, ``param2`` ... (positional, the name inside the
value) instead of named fields; the channel is Application, not ``SysmonX/Operational``; a string
is cut at 31,839 characters (the API's limit; the cut is marked). A Sigma or Winlogbeat pipeline
must split ``paramN`` at the first ``: `` to get the names back.

:class:`EventLogSink` (``--format``-less sink ``eventlog``) picks the manifest writer when the
provider is registered (its ``WINEVT\\Publishers`` key exists), else the fallback, and says which.
Both go through injectable APIs (:mod:`sysmonx.windows.fakes`), so the encoding is tested here.
"""

from __future__ import annotations

import abc
import ctypes
from typing import Any, Optional
from xml.sax.saxutils import quoteattr

from ..core.registry import SINKS
from ..event import WINDOWS_PROVIDER, Event
from ..interfaces import Sink
from ..schema import CURRENT
from .etw import EVENT_DESCRIPTOR
from .win32 import DWORD, ULONGLONG, Win32Error, load_dll

__all__ = ["PROVIDER_NAME", "PROVIDER_GUID", "CHANNEL", "CHANNEL_VALUE", "CHANNEL_KEYWORD",
           "EVENT_DATA_DESCRIPTOR", "render_manifest", "event_descriptor", "data_buffers",
           "EventWriteApi", "CtypesEventWriteApi", "ReportEventApi", "CtypesReportEventApi",
           "ManifestWriter", "ClassicWriter", "EventLogSink", "MAX_STRING"]

PROVIDER_NAME = "SysmonX"
PROVIDER_GUID = "{06A2EA53-FC6C-42E5-9176-18749AB2CA13}"
CHANNEL = "SysmonX/Operational"
CHANNEL_VALUE = 16
CHANNEL_KEYWORD = 0x8000000000000000
#: ReportEventW's limit per insertion string (characters).
MAX_STRING = 31839
_LEVELS = {"Error": "win:Error", "Warning": "win:Warning", "Informational": "win:Informational"}
_CUT = " [cut by SysmonX: the Event Log limit]"


class EVENT_DATA_DESCRIPTOR(ctypes.Structure):
    """evntprov.h ``EVENT_DATA_DESCRIPTOR`` (16 bytes): ``Ptr`` (ULONGLONG), ``Size``,
    ``Reserved``."""

    _fields_ = [("Ptr", ULONGLONG), ("Size", DWORD), ("Reserved", DWORD)]


def _events() -> list[Any]:
    """Every event SysmonX can write, newest definitions: Sysmon's and SysmonX's own."""
    return [e for e in CURRENT.events.values() if e.event_id < 0xF000]


def render_manifest(resource_dll: str = "%ProgramData%\\SysmonX\\sysmonx-events.dll") -> str:
    """``sysmonx.man``: the instrumentation manifest of the ``SysmonX`` provider (module
    docstring), generated from the schema catalogue.

    Args:
        resource_dll: ``resourceFileName``/``messageFileName`` (``wevtutil im /rf /mf``
            overrides them at registration).
    Returns:
        the manifest XML text (UTF-8 declaration).
    """
    q = quoteattr
    tasks, templates, events, strings = [], [], [], []
    for e in _events():
        n = e.event_id
        tasks.append(f'        <task name="Task{n}" value="{n}" '
                     f'message="$(string.task.{n})"/>')
        strings.append(f'        <string id="task.{n}" value={q(e.template)}/>')
        templates.append(f'        <template tid="T{n}">')
        templates += [f'          <data name={q(f.name)} inType="win:UnicodeString"/>'
                      for f in e.fields]
        templates.append("        </template>")
        events.append(f'        <event value="{n}" version="{e.version}" '
                      f'level="{_LEVELS.get(e.level, "win:Informational")}" task="Task{n}" '
                      f'template="T{n}" channel="SysmonXOperational" '
                      f'symbol={q(e.symbol)} message="$(string.event.{n})"/>')
        body = "".join(f"{f.name}: %{i}&#13;&#10;" for i, f in enumerate(e.fields, 1))
        strings.append(f'        <string id="event.{n}" '
                       f'value="{_attr(e.template)}:&#13;&#10;{body}"/>')
    return "\n".join([
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<instrumentationManifest xmlns="http://schemas.microsoft.com/win/2004/08/events" '
        'xmlns:win="http://manifests.microsoft.com/win/2004/08/windows/events" '
        'xmlns:xs="http://www.w3.org/2001/XMLSchema">',
        "  <instrumentation>", "    <events>",
        f'      <provider name="{PROVIDER_NAME}" guid="{PROVIDER_GUID}" '
        f'symbol="SYSMONX_PROVIDER" resourceFileName={q(resource_dll)} '
        f'messageFileName={q(resource_dll)}>',
        "      <channels>",
        f'        <channel name="{CHANNEL}" chid="SysmonXOperational" value="{CHANNEL_VALUE}" '
        'type="Operational" enabled="true"/>',
        "      </channels>", "      <tasks>", *tasks, "      </tasks>",
        "      <templates>", *templates, "      </templates>",
        "      <events>", *events, "      </events>",
        "      </provider>", "    </events>", "  </instrumentation>",
        "  <localization>", '    <resources culture="en-US">', "      <stringTable>",
        *strings, "      </stringTable>", "    </resources>", "  </localization>",
        "</instrumentationManifest>", ""])


def _attr(text: str) -> str:
    return quoteattr(text)[1:-1]


def event_descriptor(event: Event) -> EVENT_DESCRIPTOR:
    """The ``EVENT_DESCRIPTOR`` of ``event`` in the SysmonX manifest.

    Raises:
        KeyError: an EventID the manifest does not define.
    """
    e = CURRENT.events[event.event_id]
    d = EVENT_DESCRIPTOR()
    d.Id, d.Version, d.Channel, d.Level = e.event_id, e.version, CHANNEL_VALUE, e.level_value
    d.Opcode, d.Task, d.Keyword = 0, e.event_id, CHANNEL_KEYWORD
    return d


def data_buffers(event: Event) -> list[bytes]:
    """One UTF-16LE, NUL-terminated buffer per template field, in template order (a field the
    event lacks is ``-``, the documented unknown value)."""
    e = CURRENT.events[event.event_id]
    return [(event.data.get(f.name) or "-").encode("utf-16-le", "surrogatepass") + b"\0\0"
            for f in e.fields]


class EventWriteApi(abc.ABC):
    """``EventRegister``/``EventWrite``/``EventUnregister`` and the provider check."""

    @abc.abstractmethod
    def provider_registered(self, guid: str) -> bool:
        """Whether the manifest of ``guid`` is registered (``wevtutil im``)."""

    @abc.abstractmethod
    def register(self, guid: str) -> Any:
        """``EventRegister``; returns the REGHANDLE."""

    @abc.abstractmethod
    def write(self, handle: Any, descriptor: EVENT_DESCRIPTOR,
              data: ctypes.Array[EVENT_DATA_DESCRIPTOR]) -> None:
        """``EventWrite``; raises :class:`~sysmonx.windows.win32.Win32Error`."""

    @abc.abstractmethod
    def unregister(self, handle: Any) -> None:
        """``EventUnregister``."""


class CtypesEventWriteApi(EventWriteApi):
    """:class:`EventWriteApi` over advapi32.dll (Windows only; raises ``Win32Unavailable``
    elsewhere)."""

    def __init__(self) -> None:
        from .win32 import GUID
        self._guid_type = GUID
        a = self.advapi32 = load_dll("advapi32")
        a.EventRegister.argtypes = [ctypes.POINTER(GUID), ctypes.c_void_p, ctypes.c_void_p,
                                    ctypes.POINTER(ctypes.c_uint64)]
        a.EventRegister.restype = DWORD
        a.EventWrite.argtypes = [ctypes.c_uint64, ctypes.POINTER(EVENT_DESCRIPTOR), DWORD,
                                 ctypes.POINTER(EVENT_DATA_DESCRIPTOR)]
        a.EventWrite.restype = DWORD
        a.EventUnregister.argtypes = [ctypes.c_uint64]
        a.EventUnregister.restype = DWORD

    def provider_registered(self, guid: str) -> bool:
        """``HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\WINEVT\\Publishers\\{guid}``."""
        try:
            import winreg  # type: ignore[import-not-found,unused-ignore]
            key = "SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\WINEVT\\Publishers\\" + guid
            winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, key).Close()  # type: ignore[attr-defined,unused-ignore]
            return True
        except (OSError, ImportError):
            return False

    def register(self, guid: str) -> Any:
        """``EventRegister``."""
        handle = ctypes.c_uint64()
        g = self._guid_type.from_string(guid)
        rc = self.advapi32.EventRegister(ctypes.byref(g), None, None, ctypes.byref(handle))
        if rc:
            raise Win32Error(rc, "EventRegister")
        return handle.value

    def write(self, handle: Any, descriptor: EVENT_DESCRIPTOR,
              data: ctypes.Array[EVENT_DATA_DESCRIPTOR]) -> None:
        """``EventWrite``."""
        rc = self.advapi32.EventWrite(handle, ctypes.byref(descriptor), len(data), data)
        if rc:
            raise Win32Error(rc, "EventWrite")

    def unregister(self, handle: Any) -> None:
        """``EventUnregister``."""
        self.advapi32.EventUnregister(handle)


class ReportEventApi(abc.ABC):
    """``RegisterEventSourceW``/``ReportEventW``/``DeregisterEventSource``."""

    @abc.abstractmethod
    def register(self, source: str) -> Any:
        """``RegisterEventSourceW(NULL, source)``."""

    @abc.abstractmethod
    def report(self, handle: Any, event_type: int, event_id: int, strings: list[str]) -> None:
        """``ReportEventW``; raises :class:`~sysmonx.windows.win32.Win32Error`."""

    @abc.abstractmethod
    def deregister(self, handle: Any) -> None:
        """``DeregisterEventSource``."""


class CtypesReportEventApi(ReportEventApi):
    """:class:`ReportEventApi` over advapi32.dll (Windows only)."""

    def __init__(self) -> None:
        a = self.advapi32 = load_dll("advapi32")
        a.RegisterEventSourceW.argtypes = [ctypes.c_wchar_p, ctypes.c_wchar_p]
        a.RegisterEventSourceW.restype = ctypes.c_void_p
        a.ReportEventW.argtypes = [ctypes.c_void_p, ctypes.c_uint16, ctypes.c_uint16, DWORD,
                                   ctypes.c_void_p, ctypes.c_uint16, DWORD,
                                   ctypes.POINTER(ctypes.c_wchar_p), ctypes.c_void_p]
        a.ReportEventW.restype = ctypes.c_int
        a.DeregisterEventSource.argtypes = [ctypes.c_void_p]

    def register(self, source: str) -> Any:
        """``RegisterEventSourceW``."""
        h = self.advapi32.RegisterEventSourceW(None, source)
        if not h:
            raise Win32Error(ctypes.get_last_error(), "RegisterEventSourceW")  # type: ignore[attr-defined]
        return h

    def report(self, handle: Any, event_type: int, event_id: int, strings: list[str]) -> None:
        """``ReportEventW`` with the insertion strings."""
        arr = (ctypes.c_wchar_p * len(strings))(*strings)
        if not self.advapi32.ReportEventW(handle, event_type, 0, event_id, None, len(strings),
                                          0, arr, None):
            raise Win32Error(ctypes.get_last_error(), "ReportEventW")  # type: ignore[attr-defined]

    def deregister(self, handle: Any) -> None:
        """``DeregisterEventSource``."""
        self.advapi32.DeregisterEventSource(handle)


class ManifestWriter:
    """Events to ``SysmonX/Operational`` through the registered manifest provider.

    Raises:
        Win32Error: ``EventRegister`` failed.
    """

    mode = "manifest"

    def __init__(self, api: EventWriteApi) -> None:
        self.api = api
        self.handle = api.register(PROVIDER_GUID)

    def write(self, event: Event) -> None:
        """One ``EventWrite``; events the manifest does not define raise ``KeyError``."""
        buffers = [ctypes.create_string_buffer(b, len(b)) for b in data_buffers(event)]
        data = (EVENT_DATA_DESCRIPTOR * len(buffers))()
        for d, b in zip(data, buffers, strict=True):
            d.Ptr = ctypes.addressof(b)
            d.Size = len(b)
        self.api.write(self.handle, event_descriptor(event), data)

    def close(self) -> None:
        """``EventUnregister``."""
        self.api.unregister(self.handle)


#: ReportEventW event types by System/Level.
_TYPES = {1: 0x0001, 2: 0x0001, 3: 0x0002}   # critical/error -> ERROR, warning -> WARNING
_INFORMATION = 0x0004


class ClassicWriter:
    """Events to the Application log under the classic source ``SysmonX`` (module docstring:
    positional strings ``Name: value``)."""

    mode = "classic"

    def __init__(self, api: ReportEventApi) -> None:
        self.api = api
        self.handle = api.register(PROVIDER_NAME)

    @staticmethod
    def strings(event: Event) -> list[str]:
        """The insertion strings: ``Name: value`` per field, each within the API's limit."""
        out = []
        for name, value in event.data.items():
            text = f"{name}: {value}"
            if len(text) > MAX_STRING:
                text = text[:MAX_STRING - len(_CUT)] + _CUT
            out.append(text)
        return out

    def write(self, event: Event) -> None:
        """One ``ReportEventW``."""
        self.api.report(self.handle, _TYPES.get(event.level or 4, _INFORMATION),
                        event.event_id & 0xFFFF, self.strings(event))

    def close(self) -> None:
        """``DeregisterEventSource``."""
        self.api.deregister(self.handle)


@SINKS.register
class EventLogSink(Sink):
    """The Windows Event Log: ``SysmonX/Operational`` with named fields when the manifest is
    registered, else the Application log through the classic source (module docstring).

    Args:
        mode: ``auto`` (manifest if registered), ``manifest`` or ``classic``.
        eventwrite, reportevent: injected APIs (default: advapi32 through ctypes).
    Attributes:
        mode: ``manifest`` or ``classic``, as chosen; ``skipped``: records of other providers
            not written again.
    Raises:
        SinkError: the chosen API cannot be used (not Windows, provider not registered for
            ``manifest``).
    """

    name = "eventlog"
    summary = ("the Windows Event Log: SysmonX/Operational (manifest provider) or the "
               "Application log (classic source fallback)")
    slow = True

    def __init__(self, mode: str = "auto", eventwrite: Optional[EventWriteApi] = None,
                 reportevent: Optional[ReportEventApi] = None) -> None:
        from ..core.errors import SinkError
        from .win32 import Win32Unavailable
        if mode not in ("auto", "manifest", "classic"):
            raise ValueError(f"mode must be auto, manifest or classic, not {mode!r}")
        self.writer: Any
        try:
            if mode != "classic":
                api = eventwrite or CtypesEventWriteApi()
                if api.provider_registered(PROVIDER_GUID):
                    self.writer = ManifestWriter(api)
                elif mode == "manifest":
                    raise SinkError(f"the {PROVIDER_NAME} provider is not registered "
                                    "(wevtutil im sysmonx.man)")
            if mode == "classic" or not hasattr(self, "writer"):
                self.writer = ClassicWriter(reportevent or CtypesReportEventApi())
        except (Win32Unavailable, Win32Error) as exc:
            raise SinkError(f"eventlog: {exc}") from None
        self.mode = self.writer.mode
        self.skipped = 0
        self.target = CHANNEL if self.mode == "manifest" else f"Application ({PROVIDER_NAME})"
        self.label = f"eventlog {self.target}"

    def write(self, item: Event) -> None:
        """Write one event of the Sysmon stream (raises ``OSError`` when the Event Log refuses
        it). Records of other providers (PowerShell, Security ... read from their own channels)
        are already in the Event Log: they are not written again, only counted in
        :attr:`skipped`."""
        if item.provider != WINDOWS_PROVIDER or item.event_id not in CURRENT.events:
            self.skipped += 1
            return
        self.writer.write(item)

    def close(self) -> None:
        """Release the provider or source handle."""
        self.writer.close()
