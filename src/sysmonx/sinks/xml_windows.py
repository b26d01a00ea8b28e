"""Event XML exactly as the Windows Event Log renders it (``wevtutil qe /f:xml``,
Get-WinEvent ``.ToXml()``), one event per line::

    <Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><Provider
    Name='Microsoft-Windows-Sysmon' Guid='{5770385f-c22a-43e0-bf4c-06f5698ffbd9}'/>
    <EventID>1</EventID><Version>5</Version><Level>4</Level><Task>1</Task><Opcode>0</Opcode>
    <Keywords>0x8000000000000000</Keywords>
    <TimeCreated SystemTime='2019-04-18T16:55:37.1251390Z'/><EventRecordID>4</EventRecordID>
    <Correlation/><Execution ProcessID='3192' ThreadID='3288'/>
    <Channel>Microsoft-Windows-Sysmon/Operational</Channel><Computer>IEWIN7</Computer>
    <Security UserID='S-1-5-18'/></System><EventData><Data Name='RuleName'>-</Data>...
    </EventData></Event>

(wrapped here; written without line breaks). Single-quoted attributes, childless System elements
self-closing (``<Correlation/>``, ``<Security/>`` without a user), ``SystemTime`` with 7 fractional
digits (100 ns, the Windows resolution) and ``Z``. Data values are element text escaped as
Windows does: ``& < >`` as entities, quotes left as they are (real exports show
``<Data Name='CommandLine'>"C:\\...\\x.exe" ...</Data>``); an empty value is
``<Data Name='X'></Data>``. CR/LF and characters XML cannot carry are rendered as described in
:mod:`sysmonx.sinks._xml`, so an event is always one line. System elements whose Event value is
``None`` are left out (the XML reader reads them back as ``None``).

Lossy by construction: times keep 7 of the Event's 9 fractional digits.
"""

from __future__ import annotations

from typing import BinaryIO

from ..core.registry import SINKS
from ..event import (Event, LINUX_PROVIDER, WINDOWS_CHANNEL, WINDOWS_PROVIDER,
                     WINDOWS_PROVIDER_GUID, is_canonical_time, normalize_time)
from .base import Writer
from ._xml import XmlForm, escape_attr_apos as _attr, render_event

__all__ = ["WindowsXmlWriter", "render_windows_xml", "EVENT_NS"]

EVENT_NS = "http://schemas.microsoft.com/win/2004/08/events/event"


def _time7(t: str) -> str:
    """``2019-04-18T16:55:37.125139000Z`` -> ``2019-04-18T16:55:37.1251390Z`` (escaped as
    it is if it is not a time, a time's outline with markup where the digits go included)."""
    if not is_canonical_time(t):
        try:
            n = normalize_time(t)
        except ValueError:
            return _attr(t)
        if not is_canonical_time(n):
            return _attr(t)
        t = n
    return t[:27] + "Z"


_FORM = XmlForm(f"<Event xmlns='{EVENT_NS}'>", "'", _attr, "UserID", _time7)


def render_windows_xml(e: Event, rewrite_envelope: bool = False, templates: bool = True) -> str:
    """One event as a Windows event XML string (no line break).

    Args:
        rewrite_envelope: give Sysmon for Linux events the Windows provider, GUID and channel.
        templates: render from the event shape's template (see
            :func:`sysmonx.sinks._xml.render_event`); False: the generic renderer (same
            output, kept as the reference the tests compare with).
    """
    if rewrite_envelope and e.provider == LINUX_PROVIDER:
        return render_event(e, _FORM, WINDOWS_PROVIDER, WINDOWS_PROVIDER_GUID, WINDOWS_CHANNEL,
                            templates)
    return render_event(e, _FORM, e.provider, e.provider_guid, e.channel, templates)


@SINKS.register
class WindowsXmlWriter(Writer):
    """Writes events as Windows event XML, one ``<Event>`` per line (UTF-8).

    The output is a sequence of ``<Event>`` lines without a root, as ``wevtutil qe /f:xml``
    prints it; :mod:`sysmonx.sources.xmlfile` reads it back.

    Args:
        stream: binary output stream.
        root: wrap the events in ``<Events>`` ... ``</Events>`` (each on its own line) for tools
            that want one XML document; the end tag is written by :meth:`close`.
        rewrite_envelope: write Sysmon for Linux events with the Windows provider/GUID/channel.
        templates: False renders every event with the generic renderer instead of the
            per-shape templates (identical output; for tests and comparisons).
        close_stream: see :class:`~sysmonx.sinks.base.Writer`.
    """

    name = "xml"
    summary = "event XML as the Windows Event Log renders it, one event per line"

    PART_OPTIONS = {"root": False}

    def __init__(self, stream: BinaryIO, root: bool = False, rewrite_envelope: bool = False,
                 close_stream: bool = True, templates: bool = True) -> None:
        super().__init__(stream, close_stream)
        self.root = root
        self.rewrite_envelope = rewrite_envelope
        self.templates = templates
        if root:
            stream.write(b"<Events>\n")

    def write(self, event: Event) -> None:
        """Write one event line."""
        self.stream.write((render_windows_xml(event, self.rewrite_envelope, self.templates)
                           + "\n").encode())

    def close(self) -> None:
        """Write ``</Events>`` (with ``root``), flush, close the stream (see base class)."""
        if self.root and not self.closed:
            self.stream.write(b"</Events>\n")
            self.root = False
        super().close()
