"""Sysmon for Linux syslog: ``<date> <host> sysmon: <Event>...</Event>`` lines.

Sysmon for Linux writes each event as one syslog message whose text is a single-line XML document
(spec/sysmon-semantics.md section 5.3). Like ``sysmonLogView`` (section 5.4) this reader takes the
XML from the first ``<Event`` of a line to its last ``</Event>``; lines without ``<Event`` (startup
banners, other programs) are skipped silently. Any prefix is accepted (RFC 3164/5424 syslog,
journald export, or none: the Linux XML writer's own output). CRLF line endings are fine.

A message cut short by the syslog daemon's size limit (``<Event`` but no ``</Event>``) keeps
the fields it still has: the event is read up to its last complete ``<Data>`` element and
yielded, with an error line saying how many fields were kept (the cut field and those after it
are lost; a half value is never passed on as if whole). Only a message cut inside its
``<System>`` header is dropped. Entity references that lost their ``;`` on the way
(``&lt unknown process&gt``) are read as Sysmon for Linux wrote them and counted as repaired
(:func:`sysmonx.sources.xmlfile.repair_entity_refs`). Malformed XML is reported with its line
number. Each event is parsed with the same safe lxml settings as
:mod:`sysmonx.sources.xmlfile` (no DTD, no entities, no network).
``Event.origin`` is ``(path, line number)``.
"""

from __future__ import annotations

import re
from typing import Callable, Iterator, Optional

from lxml import etree

from ..event import Event
from . import FileNotes, ReadError, _iter_lines
from .xmlfile import parse_event

__all__ = ["read_syslog", "read_syslog_stream", "event_from_line"]

_START = b"<Event"
_END = b"</Event>"


def read_syslog(path: str, on_error: Callable[[ReadError], None]) -> Iterator[Event]:
    """Yield the events of a Sysmon for Linux syslog file, streaming line by line.

    Args:
        path: the file.
        on_error: receives a :class:`~sysmonx.sources.ReadError` (line number) per cut-off,
            malformed or over-long event line; reading goes on with the next line.
    Raises:
        OSError: the file cannot be opened.
    """
    with open(path, "rb") as f:
        yield from read_syslog_stream(f, path, on_error)


def read_syslog_stream(f, path: str, on_error: Callable[[ReadError], None]) -> Iterator[Event]:
    """:func:`read_syslog` over an open binary stream ``f`` (an archive member, ...), named
    ``path`` in origins and errors."""
    notes = FileNotes(path, on_error)
    for lineno, line in _iter_lines(f):
        if line is None:
            on_error(ReadError(path, lineno, "line", "line too long; skipped"))
            continue
        i = line.find(_START)
        if i < 0 or line[i + 6:i + 7] not in (b">", b" ", b"\t"):
            continue
        try:
            event = event_from_line(line, i, (path, lineno), notes)
        except etree.XMLSyntaxError as exc:
            on_error(ReadError(path, lineno, "line", f"malformed event XML: {exc.msg}"))
            continue
        except ValueError as exc:
            on_error(ReadError(path, lineno, "line", f"invalid event: {exc}"))
            continue
        yield event


_DATA_END = re.compile(rb"</(?:\w+:)?Data\s*>|<(?:\w+:)?Data\b[^<>]*/>")
_SYSTEM_END = re.compile(rb"</(?:\w+:)?System\s*>")


def event_from_line(line: bytes, start: int, origin: tuple,
                    notes: Optional[FileNotes] = None) -> Event:
    """The event of one syslog line whose ``<Event`` begins at byte ``start``.

    A message cut short (no ``</Event>``) is read up to its last complete ``<Data>`` element;
    ``notes`` (when given) gets an error saying how many fields were kept. Entity references
    without ``;`` are repaired and reported to ``notes`` (see
    :func:`~sysmonx.sources.xmlfile.parse_event`).

    Raises:
        ValueError: the message is cut inside its ``<System>`` header (nothing to recover), or
            it is not an event.
        lxml.etree.XMLSyntaxError: malformed XML.
    """
    end = line.rfind(_END)
    if end >= start:
        return parse_event(line[start:end + len(_END)], origin, notes)
    xml = line[start:]
    system = _SYSTEM_END.search(xml)
    if system is None:
        raise ValueError("event XML is cut off inside its System header (message truncated by "
                         "syslog?); nothing to recover")
    last = None
    for last in _DATA_END.finditer(xml, system.end()):
        pass
    body = xml[:last.end()] if last is not None else xml[:system.end()] + b"<EventData>"
    if last is None and b"<EventData" not in xml[system.end():]:
        body = xml[:system.end()]
        closing = b"</Event>"
    else:
        closing = b"</EventData></Event>"
    event = parse_event(body + closing, origin, notes)
    if notes is not None:
        notes.error(origin[1] if origin else None, "line",
                    f"event XML cut off after {len(event.data)} complete field(s) (message "
                    "truncated by syslog?): the event is kept with those fields, the cut one and "
                    "any after it are lost")
    return event
