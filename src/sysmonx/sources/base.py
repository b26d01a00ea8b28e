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

__all__ = ["FileFormat", "OnError"]

OnError = Callable[[ReadError], None]


class FileFormat(Source):
    """A recorded log of one format, as a source (``FileFormat(path)``).

    Class attributes:
        extensions: file name extensions of the format (lower case, with the dot).
        order: position among the formats (lower first).
        streamable: can be read from a non-seekable stream (an archive member).
    """

    extensions: ClassVar[tuple[str, ...]] = ()
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
    def read_stream(cls, stream: BinaryIO, name: str, on_error: OnError) -> Iterator[Event]:
        """Yield the events of an open binary stream named ``name`` (an archive member).

        Raises:
            ValueError: the format cannot be read from a stream.
        """
        raise ValueError(f"format {cls.name!r} cannot be read from a stream")

    def events(self) -> Iterator[Optional[Event]]:
        """The file's events."""
        yield from self.read(self.path, self.on_error, **self.options)
