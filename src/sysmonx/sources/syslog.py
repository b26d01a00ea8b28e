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

Follow mode (:class:`SyslogFormat` with ``follow=True``; ``sysmonx run --follow``) reads an
installed Sysmon for Linux's output as it is written: a log file followed across rotation (a new
file under the name) and truncation, or journald (``journalctl --follow``, identifier
``sysmon``). Lines are parsed exactly as above (repairs, cut-short messages); a line that cannot
be read at all is reported with its place, as ``unreadable Sysmon event: ...``.
"""

from __future__ import annotations

import os
import re
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
from ..core.errors import ReadError
from .base import MAX_RECORD_BYTES, FileFormat, FileNotes, OnError, iter_lines
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
    notes = FileNotes(path, on_error)
    ended = [True]
    for lineno, line in iter_lines(f, ended=ended):
        if line is None:
            on_error(ReadError(path, lineno, "line", "line too long; skipped"))
            continue
        event = _event_of_line(line, path, lineno, notes, ended=ended[0])
        if event is not None:
            yield event


def _event_of_line(line: bytes, path: str, lineno: int, notes: FileNotes,
                   prefix: str = "", ended: bool = True) -> Optional[Event]:
    """The event of one line, ``None`` for a line without one (reported when it is damaged);
    ``ended``: the line ended with a line feed (False: the input ends inside it)."""
    i = line.find(_START)
    if i < 0 or line[i + 6:i + 7] not in (b">", b" ", b"\t"):
        return None
    try:
        return event_from_line(line, i, (path, lineno), notes, ended=ended)
    except etree.XMLSyntaxError as exc:
        notes.on_error(ReadError(path, lineno, "line", f"{prefix}malformed event XML: "
                                 f"{exc.msg}"))
    except ValueError as exc:
        notes.on_error(ReadError(path, lineno, "line", f"{prefix}invalid event: {exc}"))
    return None


_DATA_END = re.compile(rb"</(?:\w+:)?Data\s*>|<(?:\w+:)?Data\b[^<>]*/>")
_SYSTEM_END = re.compile(rb"</(?:\w+:)?System\s*>")


def event_from_line(line: bytes, start: int, origin: tuple,
                    notes: Optional[FileNotes] = None, ended: bool = True) -> Event:
    """The event of one syslog line whose ``<Event`` begins at byte ``start``.

    A message cut short (no ``</Event>``) is read up to its last complete ``<Data>`` element;
    ``notes`` (when given) gets an error saying how many fields were kept and why it is
    short: a line that ended (``ended``) was cut by syslog's message size limit, one that did
    not is the last of a cut file or stream (a truncated ``.log.gz``). Entity references
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
    why = ("message truncated by syslog?" if ended else
           "the input ends inside it: a truncated file")
    system = _SYSTEM_END.search(xml)
    if system is None:
        raise ValueError(f"event XML is cut off inside its System header ({why}); nothing to "
                         "recover")
    last = None
    for m in _DATA_END.finditer(xml, system.end()):
        last = m
    body = xml[:last.end()] if last is not None else xml[:system.end()] + b"<EventData>"
    if last is None and b"<EventData" not in xml[system.end():]:
        body = xml[:system.end()]
        closing = b"</Event>"
    else:
        closing = b"</EventData></Event>"
    event = parse_event(body + closing, origin, notes)
    if notes is not None:
        notes.error(origin[1] if origin else None, "line",
                    f"event XML cut off after {len(event.data)} complete field(s) ({why}): "
                    "the event is kept with those fields, the cut one and any after it are lost")
    return event


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
        self.bad = 0
        self.repaired = 0
        self.cut_short = 0
        self._stop = threading.Event()
        self._file: Optional[IO[bytes]] = None
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._notes: Optional[FileNotes] = None

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
        if self._notes is None or self._notes.path != where:
            self._notes = FileNotes(where, self._note)
        event = _event_of_line(line, where, lineno, self._notes, "unreadable Sysmon event: ")
        if event is not None:
            self.received += 1
        return event

    def _note(self, err: ReadError) -> None:
        """Following: a line that cannot be read goes to ``on_error``; what the parser reports
        beside an event it read (a repair of entity references that lost their ``;``, a
        message cut short whose complete fields were kept) is counted, and the event goes on."""
        if err.message.startswith("unreadable Sysmon event: "):
            self.bad += 1
            self.on_error(err)
        elif err.severity == "repaired":
            self.repaired += 1
        elif err.severity == "error":
            self.cut_short += 1
        else:
            self.on_error(err)

    def stats(self) -> dict[str, int]:
        """Following: ``received`` events; ``lost`` 0 (a file loses nothing); ``bad`` lines;
        ``repaired`` events read after restoring entity references that lost their ``;``;
        ``cut_short`` events passed on with the fields left before a syslog size cut."""
        return {"received": self.received, "lost": 0, "bad": self.bad,
                "repaired": self.repaired, "cut_short": self.cut_short}

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
