"""Replay readers: recorded event logs in, :class:`~sysmonx.event.Event` objects out.

One module per format, each a generator function ``read_<format>(path, on_error)``:

========  ==========================================  ===========================================
format    module                                      input
========  ==========================================  ===========================================
evtx      :mod:`sysmonx.sources.evtx`                 Windows ``.evtx`` (pyevtx-rs)
xml       :mod:`sysmonx.sources.xmlfile`              event XML (wevtutil, Get-WinEvent, Event
                                                      Viewer, SysmonX writers, Sysmon for Linux)
syslog    :mod:`sysmonx.sources.syslog`               Sysmon for Linux syslog lines
jsonl     :mod:`sysmonx.sources.jsonl`                SysmonX JSON lines (written by
                                                      :mod:`sysmonx.sinks.jsonl`)
========  ==========================================  ===========================================

All readers stream (memory does not grow with file size) and never give up on a file because of one
bad record: every damaged record, chunk or line is reported to the ``on_error`` callback as a
:class:`ReadError` (file and offset) and reading goes on with the next one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from ..event import Event

__all__ = ["ReadError", "FORMATS", "INPUT_EXTENSIONS", "iter_input_files", "detect_format",
           "open_source"]

#: Formats :func:`open_source` knows.
FORMATS = ("evtx", "xml", "syslog", "jsonl")

#: Extensions kept when a folder is walked, and the format each one suggests.
INPUT_EXTENSIONS = {".evtx": "evtx", ".xml": "xml", ".json": "jsonl", ".jsonl": "jsonl",
                    ".ndjson": "jsonl", ".log": "syslog", ".txt": "syslog", ".syslog": "syslog"}

_SNIFF_BYTES = 65536
_EVTX_MAGIC = b"ElfFile\x00"
_SYSLOG_PRI = re.compile(rb"<\d{1,3}>")
_EVENT_TAG = re.compile(rb"<Event[\s>]")


@dataclass(frozen=True)
class ReadError:
    """One damaged spot of an input file; reading went on after it.

    Attributes:
        path: the file.
        offset: where: a 1-based line number (``offset_kind == "line"``), a byte offset into the
            file (``"byte"``) or an EVTX record number (``"record"``: the number in the record
            header, which is also the ``EventRecordID`` unless the file was exported from a larger
            log); ``None`` when the whole file is concerned.
        offset_kind: ``"line"``, ``"byte"``, ``"record"``, or ``"file"`` (with ``offset=None``).
        message: what is wrong, and what was lost, for a user.
    """

    path: str
    offset: Optional[int]
    offset_kind: str
    message: str

    def __str__(self) -> str:
        if self.offset is None:
            return f"{self.path}: {self.message}"
        if self.offset_kind == "line":
            return f"{self.path}:{self.offset}: {self.message}"
        return f"{self.path}:{self.offset_kind} {self.offset}: {self.message}"


def iter_input_files(paths: list[str]) -> Iterator[str]:
    """Expand the input paths of a replay into files, in a deterministic order.

    A file is yielded as given, whatever its name. A folder is walked recursively (names sorted,
    symlinked folders not followed) and only files whose extension is in :data:`INPUT_EXTENSIONS`
    (case-insensitive) are kept.

    Raises:
        FileNotFoundError: a path that does not exist (``filename`` is the path).
    """
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    if os.path.splitext(name)[1].lower() in INPUT_EXTENSIONS:
                        yield os.path.join(root, name)
        elif os.path.exists(path):
            yield path
        else:
            raise FileNotFoundError(2, "No such file or directory", path)


def detect_format(path: str, head: bytes) -> Optional[str]:
    """Guess the format of ``path`` from its first bytes ``head``, then from its extension.

    Content wins over the name: EVTX magic ``ElfFile\\0`` => ``evtx``; a syslog priority ``<13>`` =>
    ``syslog``; ``<`` => ``xml``; ``{`` => ``jsonl``; a line with ``<Event>`` after other text (a
    syslog prefix) => ``syslog``. Leading UTF-8/UTF-16 byte-order marks and white space are skipped.
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
    if text[:1] == b"{":
        return "jsonl"
    if text and _EVENT_TAG.search(text):
        return "syslog"
    return INPUT_EXTENSIONS.get(os.path.splitext(path)[1].lower())


def open_source(path: str, on_error: Callable[[ReadError], None],
                input_format: Optional[str] = None, *, threads: int = 0) -> Iterator[Event]:
    """Yield the events of one recorded log file, lazily.

    Args:
        path: the file.
        on_error: called with a :class:`ReadError` for every damaged record, line or chunk (and for
            an unrecognised format); reading continues after each.
        input_format: one of :data:`FORMATS` to skip detection (:func:`detect_format`).
        threads: pyevtx-rs worker threads for EVTX (0: one per core).
    Raises:
        ValueError: an unknown ``input_format``.
        OSError: the file cannot be opened (here when the format is detected, else on the first
            iteration).
    """
    fmt = input_format
    if fmt is None:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
        fmt = detect_format(path, head)
        if fmt is None:
            if head.strip():
                on_error(ReadError(path, None, "file", "unrecognised input format (expected EVTX, "
                                   "event XML, Sysmon for Linux syslog or SysmonX JSON lines)"))
            return iter(())
    if fmt == "evtx":
        from .evtx import read_evtx
        return read_evtx(path, on_error, threads)
    if fmt == "xml":
        from .xmlfile import read_xml as reader
    elif fmt == "syslog":
        from .syslog import read_syslog as reader
    elif fmt == "jsonl":
        from .jsonl import read_jsonl as reader
    else:
        raise ValueError(f"unknown input format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return reader(path, on_error)


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
