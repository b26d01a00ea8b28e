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

Follow mode (:class:`SyslogFormat` with ``follow=True``; ``sysmonx run --follow``) reads an
installed Sysmon for Linux's output as it is written: a log file followed across rotation (a new
file under the name) and truncation, or journald (``journalctl --follow``, identifier
``sysmon``). Lines are parsed exactly as above; a line that cannot be read is reported with its
place, as ``unreadable Sysmon event: ...``.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import threading
import time
from typing import IO, Any, Callable, Iterator, Optional

from lxml import etree

from ..core.errors import SourceUnavailable
from ..core.registry import SOURCES
from ..event import Event
from . import MAX_RECORD_BYTES, ReadError, _iter_lines
from .base import FileFormat, OnError
from .xmlfile import parse_event

__all__ = ["read_syslog", "read_syslog_stream", "event_from_line", "SyslogFormat",
           "JOURNALD"]

#: ``--follow`` value that reads journald instead of a file.
JOURNALD = "journald"

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
        event = _event_of_line(line, path, lineno, on_error)
        if event is not None:
            yield event


def _event_of_line(line: bytes, path: str, lineno: int, on_error: OnError,
                   prefix: str = "") -> Optional[Event]:
    """The event of one line, ``None`` for a line without one (reported when it is damaged)."""
    i = line.find(_START)
    if i < 0 or line[i + 6:i + 7] not in (b">", b" ", b"\t"):
        return None
    try:
        return event_from_line(line, i, (path, lineno))
    except etree.XMLSyntaxError as exc:
        on_error(ReadError(path, lineno, "line", f"{prefix}malformed event XML: {exc.msg}"))
    except ValueError as exc:
        on_error(ReadError(path, lineno, "line", f"{prefix}invalid event: {exc}"))
    return None


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


@SOURCES.register
class SyslogFormat(FileFormat):
    """Sysmon for Linux syslog lines; with ``follow=True`` the live output of an installed Sysmon
    for Linux (a log file across rotation, or ``journald``).

    Args:
        path: the file, or :data:`JOURNALD`.
        follow: keep reading as the file grows (a live source: yields ``None`` when idle).
        from_start: with ``follow``, read the file (or journal) from its beginning instead of only
            what is written from now on.
        poll_s: with ``follow``, seconds between checks of a file that does not grow.
    """

    name = "syslog"
    summary = "Sysmon for Linux syslog lines; follows a live log (run --follow)"
    extensions = (".log", ".txt", ".syslog")
    order = 20

    def __init__(self, path: str, follow: bool = False, from_start: bool = False,
                 poll_s: float = 0.2, **options: Any) -> None:
        super().__init__(path, **options)
        self.follow = follow
        self.live = follow
        self.from_start = from_start
        self.poll_s = poll_s
        self.received = 0
        self._stop = threading.Event()
        self._file: Optional[IO[bytes]] = None
        self._proc: Optional[subprocess.Popen[bytes]] = None

    @classmethod
    def read(cls, path: str, on_error: OnError, **options: Any) -> Iterator[Event]:
        """:func:`read_syslog`."""
        return read_syslog(path, on_error)

    @classmethod
    def read_stream(cls, stream: Any, name: str, on_error: OnError) -> Iterator[Event]:
        """:func:`read_syslog_stream`."""
        return read_syslog_stream(stream, name, on_error)

    def open(self) -> None:
        """In follow mode, open the file (or start ``journalctl``).

        Raises:
            SourceUnavailable: the file cannot be read, or journald is not there.
        """
        if not self.follow:
            return
        if self.path == JOURNALD:
            exe = shutil.which("journalctl")
            if exe is None:
                raise SourceUnavailable("journalctl not found")
            if not os.path.exists("/run/systemd/journal/socket"):
                raise SourceUnavailable("journald is not running here (no "
                                        "/run/systemd/journal/socket); follow a log file "
                                        "instead")
            args = [exe, "--follow", "--output=cat", "--no-pager", "SYSLOG_IDENTIFIER=sysmon"]
            if not self.from_start:
                args.insert(2, "--lines=0")
            self._proc = subprocess.Popen(args, stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL)
            return
        try:
            self._file = open(self.path, "rb")
        except OSError as exc:
            raise SourceUnavailable(f"cannot read {self.path}: {exc.strerror}") from None
        if not self.from_start:
            self._file.seek(0, os.SEEK_END)

    def now_ns(self) -> Optional[int]:
        """Wall-clock time while following."""
        return time.time_ns() if self.follow else None

    def stop(self) -> None:
        """End following soon."""
        self._stop.set()

    def close(self) -> None:
        """Close the file, stop ``journalctl``."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None

    def events(self) -> Iterator[Optional[Event]]:
        """The file's events; following: as they are written, ``None`` while there is none."""
        if not self.follow:
            yield from read_syslog(self.path, self.on_error)
        elif self._proc is not None:
            yield from self._journal()
        else:
            yield from self._tail()

    def _line(self, line: bytes, where: str, lineno: int) -> Optional[Event]:
        event = _event_of_line(line, where, lineno, self.on_error, "unreadable Sysmon event: ")
        if event is not None:
            self.received += 1
        return event

    def _tail(self) -> Iterator[Optional[Event]]:
        path, f = self.path, self._file
        assert f is not None
        ino = os.fstat(f.fileno()).st_ino
        lineno, buf = 0, b""
        while not self._stop.is_set():
            chunk = f.read(1 << 16)
            if chunk:
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    lineno += 1
                    event = self._line(line.rstrip(b"\r"), path, lineno)
                    if event is not None:
                        yield event
                if len(buf) > MAX_RECORD_BYTES:
                    self.on_error(ReadError(path, lineno + 1, "line", "line too long; skipped"))
                    buf = b""
                continue
            yield None
            self._stop.wait(self.poll_s)
            try:  # rotation (new inode) or truncation: start over on the new file
                st = os.stat(path)
            except OSError:
                continue
            if st.st_ino != ino or st.st_size < f.tell():
                f.close()
                f = self._file = open(path, "rb")
                ino, lineno, buf = os.fstat(f.fileno()).st_ino, 0, b""

    def _journal(self) -> Iterator[Optional[Event]]:
        assert self._proc is not None and self._proc.stdout is not None
        out = self._proc.stdout
        n = 0
        while not self._stop.is_set():
            ready, _, _ = select.select([out], [], [], self.poll_s)
            if not ready:
                yield None
                continue
            line = out.readline(MAX_RECORD_BYTES)
            if not line:
                return
            n += 1
            event = self._line(line.rstrip(b"\r\n"), JOURNALD, n)
            if event is not None:
                yield event
