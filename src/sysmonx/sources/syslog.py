"""Sysmon for Linux syslog: ``<date> <host> sysmon: <Event>...</Event>`` lines.

Sysmon for Linux writes each event as one syslog message whose text is a single-line XML document
(spec/sysmon-semantics.md section 5.3). Like ``sysmonLogView`` (section 5.4) this reader takes the
XML from the first ``<Event`` of a line to its last ``</Event>``; lines without ``<Event`` (startup
banners, other programs) are skipped silently. Any prefix is accepted (RFC 3164/5424 syslog,
journald export, or none: the Linux XML writer's own output). CRLF line endings are fine.

A line with ``<Event`` but no ``</Event>`` (typically a message cut by the syslog daemon's size
limit) or with malformed XML is reported with its line number. Each event is parsed with the same
safe lxml settings as :mod:`sysmonx.sources.xmlfile` (no DTD, no entities, no network).
``Event.origin`` is ``(path, line number)``.
"""

from __future__ import annotations

from typing import Callable, Iterator

from lxml import etree

from ..event import Event
from . import ReadError, _iter_lines
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
    for lineno, line in _iter_lines(f):
        if line is None:
            on_error(ReadError(path, lineno, "line", "line too long; skipped"))
            continue
        i = line.find(_START)
        if i < 0 or line[i + 6:i + 7] not in (b">", b" ", b"\t"):
            continue
        try:
            event = event_from_line(line, i, (path, lineno))
        except etree.XMLSyntaxError as exc:
            on_error(ReadError(path, lineno, "line", f"malformed event XML: {exc.msg}"))
            continue
        except ValueError as exc:
            on_error(ReadError(path, lineno, "line", f"invalid event: {exc}"))
            continue
        yield event


def event_from_line(line: bytes, start: int, origin: tuple) -> Event:
    """The event of one syslog line whose ``<Event`` begins at byte ``start``.

    Raises:
        ValueError: no ``</Event>`` after ``start`` (message cut off), or not an event.
        lxml.etree.XMLSyntaxError: malformed XML.
    """
    end = line.rfind(_END)
    if end < start:
        raise ValueError("event XML is cut off (no </Event>; message truncated by syslog?)")
    return parse_event(line[start:end + len(_END)], origin)
