"""The base of the recorded-log formats: a :class:`FileFormat` is a
:class:`~sysmonx.interfaces.Source` over one file in one format.

A format module defines its reader functions and registers one subclass in
:data:`~sysmonx.core.registry.SOURCES`::

    @SOURCES.register
    class XmlFormat(FileFormat):
        name = "xml"                 # the --input-format name
        summary = "event XML ..."
        extensions = (".xml",)       # kept when a folder is walked; a hint for detection
        order = 10                   # place among the formats (detection, listings)

        @classmethod
        def read(cls, path, on_error, **options): return read_xml(path, on_error)

        @classmethod
        def read_stream(cls, stream, name, on_error): return read_xml_stream(stream, name, on_error)

:func:`sysmonx.sources.open_source` detects the format of each file and reads it through the
registered class; every damaged record reaches ``on_error`` as a
:class:`~sysmonx.core.errors.ReadError` and reading goes on.
"""

from __future__ import annotations

from typing import Any, BinaryIO, Callable, ClassVar, Iterator, Optional

from ..core.errors import ReadError
from ..event import Event
from ..interfaces import Source

__all__ = ["FileFormat", "OnError", "FileNotes", "MAX_RECORD_BYTES", "MAX_BAD_RUN", "iter_lines",
           "put_unique", "BadRun", "NOT_AN_EVENT_LOG"]

#: The warning (a :class:`~sysmonx.core.errors.ReadError` of severity ``warning`` on the whole
#: file) for a text file in which no event was found, whatever its name (README, "Whatever the
#: file's name"): a file without any recognisable content, or a ``*.json`` file no line of
#: which is a JSON object. The replay command prints it with ``-q`` too.
NOT_AN_EVENT_LOG = "no events found (not an event log)"

OnError = Callable[[ReadError], None]


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

    def __init__(self, path: str, on_error: Callable[[ReadError], None]) -> None:
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


#: Longest line (JSON lines, syslog) or event (XML) a reader accepts; longer ones are reported and
#: skipped, so a file without line breaks cannot make a reader hold all of it in memory.
MAX_RECORD_BYTES = 64 * 1024 * 1024


def iter_lines(f: BinaryIO, limit: int = MAX_RECORD_BYTES, ended: Optional[list] = None
               ) -> Iterator[tuple[int, Optional[bytes]]]:
    """``(line number, line without CR/LF)`` for each line of binary file ``f``; the line is
    ``None`` when longer than ``limit`` bytes (its rest is skipped). ``ended``, when given, is a
    one-item list set to whether the line yielded ended with a line feed (False: the input ends
    inside it, a cut file or stream)."""
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
        if ended is not None:
            ended[0] = line[-1:] == b"\n"
        yield lineno, line.rstrip(b"\r\n")


#: Bad lines in a row after which a line reader (JSON lines, the JSON export shapes) takes the
#: rest of a file for something else (a memory dump named ``*.json``, binary data appended to
#: a log) and skips it with one error line, instead of one error per "line" (about 4,000 per
#: MB of random bytes). Good lines before are kept; one good line resets the count.
MAX_BAD_RUN = 100


class BadRun:
    """Counts the bad lines in a row of one file read line by line (:data:`MAX_BAD_RUN`).

    Args:
        path: the file, for the error line.
        on_error: receives the reader's errors; :meth:`bad` passes them on.
    Attributes:
        run: bad lines since the last good one.
    """

    __slots__ = ("path", "on_error", "run")

    def __init__(self, path: str, on_error: Callable[[ReadError], None]) -> None:
        self.path = path
        self.on_error = on_error
        self.run = 0

    def bad(self, err: ReadError) -> bool:
        """Report ``err``; True when this was the :data:`MAX_BAD_RUN`-th bad line in a row (the
        reader then calls :meth:`give_up` and stops)."""
        self.on_error(err)
        self.run += 1
        return self.run >= MAX_BAD_RUN

    def give_up(self, f: BinaryIO, lineno: int) -> None:
        """Skip the rest of ``f`` (read in 1 MiB blocks, only its line ends counted) and report
        it in one error line at ``lineno``, the last bad line."""
        rest = 0
        last = b"\n"
        while True:
            block = f.read(1 << 20)
            if not block:
                break
            rest += block.count(b"\n")
            last = block[-1:]
        if last != b"\n":
            rest += 1
        self.on_error(ReadError(self.path, lineno, "line", f"{MAX_BAD_RUN} bad lines in a row: "
                                f"the rest of the file ({rest:,} more lines) is not read as "
                                "JSON lines and is skipped"))


def put_unique(out: dict, name: str, value: str) -> None:
    """``out[name] = value``, or under ``name_2``, ``name_3``... if ``name`` is taken (repeated
    or unnamed fields of non-Sysmon records)."""
    key, n = name, 1
    while key in out:
        n += 1
        key = f"{name}_{n}"
    out[key] = value


class FileFormat(Source):
    """A recorded log of one format, as a source (``FileFormat(path)``).

    Class attributes:
        extensions: file name extensions of the format (lower case, with the dot).
        order: position among the formats (lower first).
        streamable: can be read from a non-seekable stream (an archive member).
        magic: bytes a file of this format starts with (detection by content), or empty.
    """

    extensions: ClassVar[tuple[str, ...]] = ()
    magic: ClassVar[bytes] = b""
    order: ClassVar[int] = 100
    streamable: ClassVar[bool] = True

    def __init__(self, path: str, **options: Any) -> None:
        self.path = path
        self.options = options

    @classmethod
    def read(cls, path: str, on_error: OnError, **options: Any) -> Iterator[Event]:
        """Yield the events of the file at ``path``, lazily; damaged spots go to ``on_error``.

        Raises:
            OSError: the file cannot be opened or read.
        """
        raise NotImplementedError

    @classmethod
    def read_batches(cls, path: str, on_error: OnError, **options: Any) -> Iterator[list]:
        """:meth:`read` in non-empty lists of events, with everything else (``on_error``
        reports) in the same order between them (see :meth:`Source.batches
        <sysmonx.interfaces.Source.batches>`). Default: one-event lists; a format whose reader
        has a faster path for lists (EVTX: a chunk's events) overrides it.

        Raises:
            OSError: the file cannot be opened or read.
        """
        for event in cls.read(path, on_error, **options):
            yield [event]

    @classmethod
    def read_stream(cls, stream: BinaryIO, name: str, on_error: OnError) -> Iterator[Event]:
        """Yield the events of an open binary stream named ``name`` (an archive member).

        Raises:
            ValueError: the format cannot be read from a stream.
        """
        raise ValueError(f"format {cls.name!r} cannot be read from a stream")

    def events(self) -> Iterator[Optional[Event]]:
        """The file's events."""
        yield from self.read(self.path, self.on_error, **self.options)
