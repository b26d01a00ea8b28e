"""Replay readers: recorded event logs in, :class:`~sysmonx.event.Event` objects out.

One module per format, each a generator function ``read_<format>(path, on_error)`` (and a
``read_<format>_stream(stream, name, on_error)`` variant for archive members):

==========  ========================================  ===========================================
format      module                                    input
==========  ========================================  ===========================================
evtx        :mod:`sysmonx.sources.evtx`               Windows ``.evtx`` (pyevtx-rs)
xml         :mod:`sysmonx.sources.xmlfile`            event XML (wevtutil, Get-WinEvent, Event
                                                      Viewer, SysmonX writers, Sysmon for Linux)
syslog      :mod:`sysmonx.sources.syslog`             Sysmon for Linux syslog lines
jsonl       :mod:`sysmonx.sources.jsonl`              SysmonX JSON lines (written by
                                                      :mod:`sysmonx.sinks.jsonl`)
winlogbeat  :mod:`sysmonx.sources.jsonshapes`         winlogbeat 6.x, 7.x, 8.x JSON
nxlog       :mod:`sysmonx.sources.jsonshapes`         nxlog ``im_msvistalog`` JSON (flat)
sentinel    :mod:`sysmonx.sources.jsonshapes`         Azure Sentinel / Log Analytics rows (Event,
                                                      WindowsEvent, Syslog with Linux Sysmon XML)
flatjson    :mod:`sysmonx.sources.jsonshapes`         Security-Datasets flat JSON exporter
evtxjson    :mod:`sysmonx.sources.jsonshapes`         evtx-crate JSON (``evtx_dump``, pyevtx-rs)
==========  ========================================  ===========================================

Compressed files and archives (gzip, bzip2, xz, zip, tar and their combinations) are read in place
by :mod:`sysmonx.sources.archive`, every member detected and read by the readers above.

Each format registers a :class:`~sysmonx.sources.base.FileFormat` in
:data:`~sysmonx.core.registry.SOURCES` where it is defined; :func:`open_source` reads through the
registered class, and :data:`FORMATS` / :data:`INPUT_EXTENSIONS` are computed from the registry.
:class:`~sysmonx.sources.replay.RecordedLogs` is the source a replay runs: files, folders and
archives in order, each detected and read.

All readers stream (memory does not grow with file size) and never give up on a file because of one
bad record: every damaged record, chunk or line is reported to the ``on_error`` callback as a
:class:`ReadError` (file and offset) and reading goes on with the next one.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Any, Callable, Iterator, Optional

from ..core.errors import SEVERITIES, ReadError, UsageError
from ..core.registry import SOURCES
from ..event import Event

__all__ = ["ReadError", "SEVERITIES", "FileNotes", "FORMATS", "JSON_FORMATS", "INPUT_EXTENSIONS",
           "ARCHIVE_EXTENSIONS", "iter_input_files", "detect_format", "open_source",
           "read_stream", "file_formats"]

#: JSON formats: SysmonX's own JSON lines, then the shapes of :mod:`sysmonx.sources.jsonshapes`.
JSON_FORMATS = ("jsonl", "winlogbeat", "nxlog", "sentinel", "flatjson", "evtxjson")


def file_formats() -> list[Any]:
    """The registered recorded-log formats (:class:`~sysmonx.sources.base.FileFormat`
    subclasses), in their ``order``."""
    from .base import FileFormat
    found = [e.obj for e in SOURCES.entries()
             if isinstance(e.obj, type) and issubclass(e.obj, FileFormat)]
    return sorted(found, key=lambda c: c.order)


def _input_extensions() -> dict[str, str]:
    out: dict[str, str] = {}
    for cls in file_formats():
        for ext in cls.extensions:
            out.setdefault(ext, cls.name)
    return out


def __getattr__(name: str) -> Any:
    # Computed from the registry: FORMATS, the --input-format names; INPUT_EXTENSIONS, the
    # extensions kept when a folder is walked and the format each one suggests.
    if name == "FORMATS":
        return tuple(c.name for c in file_formats())
    if name == "INPUT_EXTENSIONS":
        return _input_extensions()
    raise AttributeError(name)

#: Compressed and archive extensions also kept when a folder is walked (their content is
#: recognised by magic bytes, not by these names).
ARCHIVE_EXTENSIONS = frozenset({".gz", ".tgz", ".bz2", ".tbz", ".tbz2", ".xz", ".txz", ".zip",
                                ".tar"})

_SNIFF_BYTES = 65536
_EVTX_MAGIC = b"ElfFile\x00"
_SYSLOG_PRI = re.compile(rb"<\d{1,3}>")
_EVENT_TAG = re.compile(rb"<Event[\s>]")
_RECORD_LINE = re.compile(rb"Record \d+\r?\n\s*\{")
#: Extension-less syslog files (and their rotations) also kept when a folder is walked.
_SYSLOG_NAME = re.compile(r"^(syslog|messages|user\.log|daemon\.log)(\.\d+)?$")


class FileNotes:
    """What one reader reports about one file beyond its events, through ``on_error``.

    Readers make one per file and hand it to the record parsers, which know the record but not
    the file. ``repaired`` records are reported one by one (the consumer counts them);
    ``warn_once`` says a warning once per file and key, however many records it concerns.

    Args:
        path: the file (or archive member name) as it appears in messages.
        on_error: the reader's ``on_error`` callback.
    """

    __slots__ = ("path", "on_error", "_said")

    def __init__(self, path: str, on_error: Callable[["ReadError"], None]) -> None:
        self.path = path
        self.on_error = on_error
        self._said: set = set()

    def repaired(self, offset: Optional[int], offset_kind: str, what: str) -> None:
        """One record was read after undoing ``what`` (a known fault of an exporter)."""
        self.on_error(ReadError(self.path, offset, offset_kind, what, "repaired"))

    def error(self, offset: Optional[int], offset_kind: str, message: str) -> None:
        """Data was lost at ``offset`` (the record itself may still have been read)."""
        self.on_error(ReadError(self.path, offset, offset_kind, message))

    def warn_once(self, key: str, offset: Optional[int], offset_kind: str, message: str) -> None:
        """A warning, said the first time ``key`` comes up in this file only."""
        if key not in self._said:
            self._said.add(key)
            self.on_error(ReadError(self.path, offset, offset_kind, message, "warning"))


def iter_input_files(paths: list[str],
                     on_error: Optional[Callable[["ReadError"], None]] = None) -> Iterator[str]:
    """Expand the input paths of a replay into files, in a deterministic order.

    A path given explicitly is yielded as given, whatever its name or type (a FIFO or
    ``/dev/stdin`` is read as a stream). A folder is walked recursively (names sorted, symlinked
    folders not followed) and only regular files whose extension is in :data:`INPUT_EXTENSIONS`
    or :data:`ARCHIVE_EXTENSIONS` (case-insensitive), or whose name is a syslog file's, are kept.
    Special files met in a walk (named pipes, sockets, devices: reading a FIFO nobody writes
    would wait forever) are skipped, each reported to ``on_error`` as a ``warning``.

    Raises:
        FileNotFoundError: a path that does not exist (``filename`` is the path).
    """
    extensions = _input_extensions()
    for path in paths:
        if path == "-":
            yield path
        elif os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    ext = os.path.splitext(name)[1].lower()
                    if ext in extensions or ext in ARCHIVE_EXTENSIONS \
                            or _SYSLOG_NAME.match(name):
                        full = os.path.join(root, name)
                        kind = _special_kind(full)
                        if kind is None:
                            yield full
                        elif on_error is not None:
                            on_error(ReadError(full, None, "file", f"skipped: a {kind}, not a "
                                               "regular file (name it explicitly to read it as "
                                               "a stream)", "warning"))
        elif os.path.exists(path):
            yield path
        else:
            raise FileNotFoundError(2, "No such file or directory", path)


def _special_kind(path: str) -> Optional[str]:
    """``None`` for a regular file (symlinks followed), else what it is (``named pipe``...)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # vanished or a dangling link: opening it reports the problem
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def detect_format(path: str, head: bytes) -> Optional[str]:
    """Guess the format of ``path`` from its first bytes ``head``, then from its extension.

    Content wins over the name: EVTX magic ``ElfFile\\0`` => ``evtx``; a syslog priority ``<13>`` =>
    ``syslog``; ``<`` => ``xml``; ``{`` => the JSON shape of the first object that parses
    (:func:`sysmonx.sources.jsonshapes.detect_json`: ``winlogbeat``, ``nxlog``, ``sentinel``,
    ``flatjson``, ``evtxjson``, else ``jsonl``); ``[`` or an ``evtx_dump`` ``Record 1`` line =>
    likewise, when a shape is recognised; a line with ``<Event>`` after other text (a syslog
    prefix) => ``syslog``. Leading UTF-8/UTF-16 byte-order marks and white space are skipped.
    Compressed and archive files are recognised before this, by :func:`open_source`.
    Returns ``None`` when neither content nor extension tells.
    """
    if head.startswith(_EVTX_MAGIC):
        return "evtx"
    text = head
    if text.startswith(b"\xef\xbb\xbf"):
        text = text[3:]
    elif text[:2] in (b"\xff\xfe", b"\xfe\xff") or (len(text) > 1 and text[1:2] == b"\x00"):
        return "xml"  # UTF-16: only event XML is written that way (PowerShell redirection)
    text = text.lstrip()
    if text[:1] == b"<":
        return "syslog" if _SYSLOG_PRI.match(text) else "xml"
    if text[:1] in (b"{", b"["):
        from .jsonshapes import detect_json
        shape = detect_json(text)
        if shape is not None or text[:1] == b"{":
            return shape or "jsonl"
    elif _RECORD_LINE.match(text):
        from .jsonshapes import detect_json
        return detect_json(text) or "evtxjson"
    if text and _EVENT_TAG.search(text):
        return "syslog"
    return _input_extensions().get(os.path.splitext(path)[1].lower())


def open_source(path: str, on_error: Callable[[ReadError], None],
                input_format: Optional[str] = None, *, threads: int = 0) -> Iterator[Event]:
    """Yield the events of one recorded log file, lazily.

    A compressed or archive file (gzip, bzip2, xz, zip, tar; by magic bytes) is read in place by
    :func:`sysmonx.sources.archive.read_archive`: each member is detected and read in turn, and
    ``input_format``, if given, applies to the members.

    Args:
        path: the file.
        on_error: called with a :class:`ReadError` for every damaged record, line or chunk (and for
            an unrecognised format); reading continues after each.
        input_format: one of :data:`FORMATS` to skip detection (:func:`detect_format`).
        threads: pyevtx-rs worker threads for EVTX (0: one per core).
    Raises:
        ValueError: an unknown ``input_format``.
        OSError: the file cannot be opened or read.
    """
    if input_format is not None:
        names = [c.name for c in file_formats()]
        if input_format not in names:
            raise UsageError(f"unknown input format {input_format!r}; expected one of "
                             f"{', '.join(names)}")
    if path == "-" or not os.path.isfile(path):
        return _read_unseekable(path, on_error, input_format, threads)
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    from .archive import container_kind
    kind = container_kind(head)
    if kind is not None:
        from .archive import read_archive
        return read_archive(path, kind, on_error, input_format, threads)
    fmt = input_format
    if fmt is None:
        fmt = detect_format(path, head)
        if fmt is None:
            if head.strip():
                on_error(ReadError(path, None, "file", "unrecognised input format (expected EVTX, "
                                   "event XML, Sysmon for Linux syslog, JSON event records or "
                                   "an archive of them)"))
            return iter(())
    reader: Any = SOURCES.get(fmt)
    return reader.read(path, on_error, threads=threads)


def _read_unseekable(path: str, on_error, input_format, threads) -> Iterator[Event]:
    """Standard input (``-``), a FIFO, ``/dev/stdin`` or a process substitution: opened once and
    read as a stream, format detected from the first bytes (EVTX is buffered in memory up to a
    cap, since pyevtx-rs needs to seek)."""
    import sys
    from .archive import _member
    name = "<stdin>" if path == "-" else path
    if path == "-":
        yield from _member(sys.stdin.buffer, name, name, on_error, input_format, threads, 0)
        return
    with open(path, "rb") as f:
        yield from _member(f, name, name, on_error, input_format, threads, 0)


def read_stream(stream, name: str, on_error: Callable[[ReadError], None],
                fmt: str) -> Iterator[Event]:
    """Yield the events of an open binary ``stream`` (an archive member) in format ``fmt``,
    lazily; ``name`` is used in origins and errors. EVTX is not streamable: read the bytes and use
    :func:`sysmonx.sources.evtx.read_evtx` with ``data=``.

    Raises:
        ValueError: an unknown (or ``evtx``) ``fmt``.
    """
    try:
        reader: Any = SOURCES.get(fmt)
    except LookupError:
        raise UsageError(f"format {fmt!r} cannot be read from a stream") from None
    return reader.read_stream(stream, name, on_error)


# ---- helpers shared by the readers -----------------------------------------------------------

#: Longest line (JSON lines, syslog) or event (XML) a reader accepts; longer ones are reported and
#: skipped, so a file without line breaks cannot make a reader hold all of it in memory.
MAX_RECORD_BYTES = 64 * 1024 * 1024


def _iter_lines(f, limit: int = MAX_RECORD_BYTES) -> Iterator[tuple[int, Optional[bytes]]]:
    """``(line number, line without CR/LF)`` for each line of binary file ``f``; the line is
    ``None`` when longer than ``limit`` bytes (its rest is skipped)."""
    lineno = 0
    readline = f.readline
    while True:
        line = readline(limit)
        if not line:
            return
        lineno += 1
        if line[-1:] != b"\n" and len(line) >= limit:
            while True:
                more = readline(limit)
                if not more or more[-1:] == b"\n":
                    break
            yield lineno, None
            continue
        yield lineno, line.rstrip(b"\r\n")


def _put_unique(out: dict, name: str, value: str) -> None:
    """``out[name] = value``, or under ``name_2``, ``name_3``... if ``name`` is taken (repeated
    or unnamed fields of non-Sysmon records)."""
    key, n = name, 1
    while key in out:
        n += 1
        key = f"{name}_{n}"
    out[key] = value
