"""Sysmon for Linux event XML (spec/sysmon-semantics.md section 5.3), one event per line::

    <Event><System><Provider Name="Linux-Sysmon" Guid="{ff032593-a8d3-4f13-b0d6-01fc615a0f97}"/>
    <EventID>1</EventID><Version>5</Version><Level>4</Level><Task>1</Task><Opcode>0</Opcode>
    <Keywords>0x8000000000000000</Keywords>
    <TimeCreated SystemTime="2021-10-26T20:11:11.156042000Z"/>
    <EventRecordID>216077</EventRecordID><Correlation/><Execution ProcessID="1032" ThreadID="1032"/>
    <Channel>Linux-Sysmon/Operational</Channel><Computer>ubuntu</Computer><Security UserId="0"/>
    </System><EventData><Data Name="RuleName">-</Data>...</EventData></Event>

(wrapped here). No namespace, double-quoted attributes, ``Security/@UserId`` (Linux spelling),
``SystemTime`` with 9 fractional digits, escaping as libxml2's serialiser does it (the Linux binary
uses libxml2): in text ``& < >`` and CR (``&#13;``), quotes not; in attributes also ``"`` and
tab/LF/CR as character references. Identical byte for byte to Sysmon for Linux output, except that
LF in a value is written ``&#10;`` (libxml2 would write a raw line break and split the syslog
message) and characters XML cannot carry follow :mod:`sysmonx.sinks._xml`.

The event's provider, GUID and channel are written as they are, so a Windows event keeps its
provider, unless ``rewrite_envelope`` asks for the Linux ones.
"""

from __future__ import annotations

from typing import BinaryIO

from ..core.registry import SINKS
from ..event import (Event, LINUX_CHANNEL, LINUX_PROVIDER, LINUX_PROVIDER_GUID, WINDOWS_PROVIDER,
                     is_canonical_time, normalize_time)
from .base import Writer
from ._xml import XmlForm, escape_attr_quot as _attr, render_event

__all__ = ["LinuxXmlWriter", "render_linux_xml"]


def _time9(t: str) -> str:
    """The canonical time (9 fractional digits), escaped as it is if it is not a time (a
    time's outline with markup where the digits go included)."""
    if not is_canonical_time(t):
        try:
            n = normalize_time(t)
        except ValueError:
            return _attr(t)
        return n if is_canonical_time(n) else _attr(t)
    return t


_FORM = XmlForm("<Event>", '"', _attr, "UserId", _time9)


def render_linux_xml(e: Event, rewrite_envelope: bool = False, templates: bool = True) -> str:
    """One event as a Sysmon for Linux XML string (no line break).

    Args:
        rewrite_envelope: give Windows Sysmon events the Linux provider, GUID and channel.
        templates: render from the event shape's template (see
            :func:`sysmonx.sinks._xml.render_event`); False: the generic renderer (same
            output, kept as the reference the tests compare with).
    """
    if rewrite_envelope and e.provider == WINDOWS_PROVIDER:
        return render_event(e, _FORM, LINUX_PROVIDER, LINUX_PROVIDER_GUID, LINUX_CHANNEL,
                            templates)
    return render_event(e, _FORM, e.provider, e.provider_guid, e.channel, templates)


@SINKS.register
class LinuxXmlWriter(Writer):
    """Writes events in the Sysmon for Linux XML form, one ``<Event>`` per line (UTF-8).

    Read back with :mod:`sysmonx.sources.xmlfile` or :mod:`sysmonx.sources.syslog` (both accept
    lines without a syslog prefix).

    Args:
        stream: binary output stream.
        rewrite_envelope: write Windows Sysmon events with the Linux provider/GUID/channel.
        templates: False renders every event with the generic renderer instead of the
            per-shape templates (identical output; for tests and comparisons).
        close_stream: see :class:`~sysmonx.sinks.base.Writer`.
    """

    name = "linux-xml"
    summary = "Sysmon for Linux single-line event XML"

    def __init__(self, stream: BinaryIO, rewrite_envelope: bool = False,
                 close_stream: bool = True, templates: bool = True) -> None:
        super().__init__(stream, close_stream)
        self.rewrite_envelope = rewrite_envelope
        self.templates = templates

    def write(self, event: Event) -> None:
        """Write one event line."""
        self.stream.write((render_linux_xml(event, self.rewrite_envelope, self.templates)
                           + "\n").encode())
