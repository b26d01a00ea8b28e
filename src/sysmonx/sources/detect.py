"""What a recorded log is and how to read it: folder walks, format detection from content, and
opening a file (or a stream, an archive member) through the registered format.

Every format is a :class:`~sysmonx.sources.base.FileFormat` registered in
:data:`~sysmonx.core.registry.SOURCES`; :func:`file_formats` lists them in their ``order`` and
:func:`open_source` reads through the one :func:`detect_format` names (or the one forced).
Compressed files and archives are read in place by :mod:`sysmonx.sources.archive`.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Any, Callable, Iterator, Optional

from ..core.errors import ReadError, UsageError
from ..core.registry import SOURCES
from ..event import Event

__all__ = ["JSON_FORMATS", "ARCHIVE_EXTENSIONS", "BUILTIN_INPUT_EXTENSIONS", "file_formats",
           "input_extensions", "iter_input_files", "detect_format", "open_source",
           "unrecognised", "read_stream", "SNIFF_BYTES"]

#: JSON formats: SysmonX's own JSON lines, then the shapes of :mod:`sysmonx.sources.jsonshapes`.
JSON_FORMATS = ("jsonl", "winlogbeat", "nxlog", "sentinel", "flatjson", "evtxjson")


def file_formats() -> list[Any]:
    """The registered recorded-log formats (:class:`~sysmonx.sources.base.FileFormat`
    subclasses), in their ``order``."""
    from .base import FileFormat
    found = [e.obj for e in SOURCES.entries()
             if isinstance(e.obj, type) and issubclass(e.obj, FileFormat)]
    return sorted(found, key=lambda c: c.order)


#: :func:`input_extensions` of the built-in formats alone (``tests/test_registry.py`` checks
#: it against them): used while no plugin may register a format, so that a folder walk does
#: not import every source module (the live sensor and the Windows sources with their
#: asyncio, ssl and sqlite3: ~40 ms of CPU) to learn the built-in extensions.
BUILTIN_INPUT_EXTENSIONS = {".evtx": "evtx", ".xml": "xml", ".log": "syslog", ".txt": "syslog",
                            ".syslog": "syslog", ".json": "jsonl", ".jsonl": "jsonl",
                            ".ndjson": "jsonl", ".db": "sqlite", ".sqlite": "sqlite",
                            ".sqlite3": "sqlite"}


def input_extensions() -> dict[str, str]:
    """Extension -> format name of the registered formats (the first by ``order`` wins): the
    files a folder walk keeps, and the last hint of :func:`detect_format`. Without plugins
    (:meth:`~sysmonx.core.registry.Registry.has_other_plugins`) the built-in formats' table,
    :data:`BUILTIN_INPUT_EXTENSIONS`, without importing them."""
    if not SOURCES.has_other_plugins():
        return dict(BUILTIN_INPUT_EXTENSIONS)
    out: dict[str, str] = {}
    for cls in file_formats():
        for ext in cls.extensions:
            out.setdefault(ext, cls.name)
    return out


#: Compressed and archive extensions also kept when a folder is walked (their content is
#: recognised by magic bytes, not by these names).
ARCHIVE_EXTENSIONS = frozenset({".gz", ".tgz", ".bz2", ".tbz", ".tbz2", ".xz", ".txz", ".zip",
                                ".tar"})

SNIFF_BYTES = 65536
_HEADER_BLOCK = 4096  # an EVTX file header block (and more than container_kind needs)
_EVTX_MAGIC = b"ElfFile\x00"
_SYSLOG_PRI = re.compile(rb"<\d{1,3}>")
_EVENT_TAG = re.compile(rb"<Event[\s>]")
_RECORD_LINE = re.compile(rb"Record \d+\r?\n\s*\{")
#: Extension-less syslog files (and their rotations) also kept when a folder is walked.
_SYSLOG_NAME = re.compile(r"^(syslog|messages|user\.log|daemon\.log)(\.\d+)?$")


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
    extensions: Optional[dict[str, str]] = None  # computed for the first folder walked
    for path in paths:
        if path == "-":
            yield path
        elif os.path.isdir(path):
            if extensions is None:
                extensions = input_extensions()
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


def container_kind(head: bytes) -> Optional[str]:
    """``"gzip"``, ``"bzip2"``, ``"xz"``, ``"zip"`` or ``"tar"`` from a stream's first bytes
    (at least 262 for tar), ``None`` for anything else. Here, not in
    :mod:`sysmonx.sources.archive`, so that reading plain files never imports the archive
    modules (tarfile, zipfile ...: about 6 ms)."""
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:3] == b"BZh" and head[3:4] in b"123456789" and head[4:10] == b"1AY&SY":
        return "bzip2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[257:262] == b"ustar":
        return "tar"
    return None


def detect_format(path: str, head: bytes) -> Optional[str]:
    """Guess the format of ``path`` from its first bytes ``head``, then from its extension.

    Content wins over the name: EVTX magic ``ElfFile\\0`` => ``evtx``; a registered format's
    ``magic`` (the event store's ``SQLite format 3``) => that format; a syslog priority ``<13>`` =>
    ``syslog``; ``<`` => ``xml``; ``{`` => the JSON shape of the first object that parses
    (:func:`sysmonx.sources.jsonshapes.detect_json`: ``winlogbeat``, ``nxlog``, ``sentinel``,
    ``flatjson``, ``evtxjson``, else ``jsonl``); ``[`` or an ``evtx_dump`` ``Record 1`` line =>
    likewise, when a shape is recognised; a line with ``<Event>`` after other text (a syslog
    prefix) => ``syslog``. Leading UTF-8/UTF-16 byte-order marks and white space are skipped.
    The extension is the last hint, and not taken for a text format (JSON, XML, syslog) when the
    first bytes are binary (:func:`is_binary`).
    Compressed and archive files are recognised before this, by :func:`open_source`.
    Returns ``None`` when neither content nor extension tells.
    """
    if head.startswith(_EVTX_MAGIC):
        return "evtx"
    for cls in file_formats():
        if cls.magic and head.startswith(cls.magic):
            return cls.name
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
    by_name = input_extensions().get(os.path.splitext(path)[1].lower())
    if by_name in _TEXT_FORMATS and is_binary(text):
        return None  # a memory dump named *.json: not read line by line as JSON
    return by_name


#: Formats that are text: a file named for one of them whose first bytes are binary is not
#: given to its reader (EVTX and the event store are binary and keep their names' hint: their
#: readers say what is wrong with a damaged header).
_TEXT_FORMATS = frozenset(JSON_FORMATS) | {"xml", "syslog"}
#: Bytes that do not occur in text (C0 controls other than tab, LF, FF, CR, and ESC).
_NOT_TEXT = bytes(b for b in range(32) if b not in (9, 10, 12, 13, 27)) + b"\x7f"


def is_binary(head: bytes) -> bool:
    """True when ``head`` (a file's first bytes) is not text in any 8-bit encoding: a NUL byte,
    or more than 1 byte in 50 a control character text does not use (random bytes: about 1 in
    9; UTF-8 and Latin-1 logs: none)."""
    if b"\x00" in head:
        return True
    controls = len(head) - len(head.translate(None, _NOT_TEXT))
    return controls * 50 > len(head)


def unrecognised(path: str, head: bytes) -> ReadError:
    """What to report for a file (or archive member) ``path`` whose first bytes ``head`` no
    format recognises: binary content is the error ``unrecognised input format (binary
    content; ...)``; text is the warning :data:`~sysmonx.sources.base.NOT_AN_EVENT_LOG`
    (notes, a CSV of hashes, a README: whatever the name, README "Whatever the file's name")."""
    if not is_binary(head):
        from .base import NOT_AN_EVENT_LOG
        return ReadError(path, None, "file", NOT_AN_EVENT_LOG, "warning")
    return ReadError(path, None, "file", "unrecognised input format (binary content; expected "
                     "EVTX, event XML, Sysmon for Linux syslog, JSON event records or an archive "
                     "of them)")


def open_source(path: str, on_error: Callable[[ReadError], None],
                input_format: Optional[str] = None, *, threads: int = 0,
                batches: bool = False, raw: Any = None) -> Iterator[Any]:
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
        batches: yield lists of events instead (:meth:`FileFormat.read_batches
            <sysmonx.sources.base.FileFormat.read_batches>`; archives and streams: one-event
            lists).
        raw: with ``batches``, the loop's raw path (``_speedups.RawPlan``) for a format that
            takes it (``raw_batches``: EVTX); others ignore it.
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
        events = _read_unseekable(path, on_error, input_format, threads)
        return ([ev] for ev in events) if batches else events
    head, whole = _sniff(path)
    if len(head) < SNIFF_BYTES and not head.strip():
        # whatever its name (a 0-byte .evtx from a failed collection, an empty .json): one
        # warning, nothing lost
        on_error(ReadError(path, None, "file", "empty file (nothing to read)" if not head
                           else "empty file (only white space)", "warning"))
        return iter(())
    kind = container_kind(head)
    if kind is not None:
        from .archive import read_archive
        events = read_archive(path, kind, on_error, input_format, threads)
        return ([ev] for ev in events) if batches else events
    fmt = input_format
    if fmt is None:
        fmt = detect_format(path, head)
        if fmt is None:
            on_error(unrecognised(path, head))
            return iter(())
    reader: Any = _reader(fmt)
    # a small EVTX file read whole by the sniff is parsed from those bytes (as its reader
    # would read it itself: one open and one read per file instead of two of each)
    extra = {"data": whole} if whole is not None and fmt == "evtx" else {}
    if batches:
        if raw is not None and getattr(reader, "raw_batches", False):
            return reader.read_batches(path, on_error, threads=threads, raw=raw, **extra)
        return reader.read_batches(path, on_error, threads=threads, **extra)
    return reader.read(path, on_error, threads=threads, **extra)


def _reader(fmt: str) -> Any:
    """The registered format ``fmt``. EVTX (told by its magic alone in :func:`detect_format`)
    is taken from its own module, imported by name: reading an EVTX file does not import every
    registered source to find it (the live sensor, the Windows sources, their asyncio, ssl,
    sqlite3, lxml ...: about 0.1 s of CPU). Any other name is looked up in the registry, which
    imports the built-in sources and entry points once when the name is not registered yet.

    Raises:
        PluginError: an unknown name (see :meth:`~sysmonx.core.registry.Registry.get`).
    """
    if fmt == "evtx":
        from . import evtx  # noqa: F401 - registers EvtxFormat where it is defined
    return SOURCES.get(fmt)


def _sniff(path: str) -> tuple[bytes, Optional[bytes]]:
    """The first :data:`SNIFF_BYTES` of the file ``path``, or only its first 4 KiB when they
    start with the EVTX magic (EVTX is told by its magic alone: the rest would be read for
    nothing on every small log), read without a buffered file object; and the whole file
    when it is an EVTX file small enough for the EVTX reader to read whole
    (:data:`~sysmonx.sources.evtx.WHOLE_FILE_MAX`), else ``None``. Both through one
    descriptor (the first 4 KiB, then the file in one ``os.pread``, completed if it comes back
    short), so the EVTX reader needs no open and read of its own (a replay of many small logs
    saves both per file).

    Raises:
        OSError: the file cannot be opened or read.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        head = os.read(fd, _HEADER_BLOCK)
        if not head.startswith(_EVTX_MAGIC):
            parts = [head]
            have = len(head)
            while head and have < SNIFF_BYTES:  # os.read may return less than asked
                head = os.read(fd, SNIFF_BYTES - have)
                parts.append(head)
                have += len(head)
            return b"".join(parts), None
        from . import evtx
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > evtx.WHOLE_FILE_MAX:
            return head, None
        return head, evtx._pread(fd, st.st_size, 0, st.st_size)
    finally:
        os.close(fd)


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
