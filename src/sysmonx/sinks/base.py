"""The base of the stream-format sinks: a :class:`Writer` renders events onto a binary stream.

A writer is a :class:`~sysmonx.interfaces.Sink` over a byte stream: ``Writer(stream, **options)``
(or :meth:`Writer.open` on a path, ``-`` for standard output), ``write(event)`` one line per event,
``close()`` what the format writes once at the end, then flush and close the stream (standard
output and standard error are only flushed).
"""

from __future__ import annotations

import os
import sys
from typing import Any, BinaryIO, ClassVar, Union

from ..core.errors import SinkError
from ..event import Event
from ..interfaces import Sink, SinkStats
from .wholeline import WholeLineFile

__all__ = ["Writer", "is_std_stream", "open_target"]


def open_target(target: Union[str, BinaryIO, None], append: bool = False,
                buffered: bool = True) -> tuple[BinaryIO, str]:
    """``(binary stream, label)`` for an output target: a path (created or truncated; appended
    to with ``append``), ``-`` or ``None`` for standard output, or an open binary stream.

    Args:
        buffered: False for a :class:`~sysmonx.sinks.wholeline.WholeLineFile`: every write
            reaches the file (or standard output) at once and whole or not at all, so a failure
            is known per event and no cut line stays (the live sensor).
    Raises:
        SinkError: the path cannot be opened for writing.
    """
    if target is None or target == "-":
        if buffered:
            return sys.stdout.buffer, "<stdout>"
        sys.stdout.flush()
        return WholeLineFile(sys.stdout.fileno(), "stdout"), "<stdout>"  # type: ignore[return-value]
    if isinstance(target, str):
        try:
            if buffered:
                return open(target, "ab" if append else "wb"), target
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
                         | (os.O_APPEND if append else os.O_TRUNC), 0o644)
            return WholeLineFile(fd, target, close_fd=True), target  # type: ignore[return-value]
        except OSError as exc:
            raise SinkError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return target, getattr(target, "name", None) or "<stream>"


class Writer(Sink):
    """Base of the stream-format writers: owns the binary ``stream`` and closes it in
    :meth:`close`.

    Args:
        stream: binary, writable; the caller's buffering applies.
        close_stream: close ``stream`` in :meth:`close` (default True). Standard output and
            standard error are never closed, only flushed.

    Attributes:
        PART_OPTIONS: class attribute, the constructor options that make a writer write only the
            events, leaving out what an output holds once (a CSV header, an XML root): parallel
            replay (:func:`sysmonx.pipeline.parallel.replay_parallel`) writes those once with a
            writer on the real output and the parts with these options.
    """

    PART_OPTIONS: ClassVar[dict[str, Any]] = {}
    stream_format = True

    def __init__(self, stream: BinaryIO, close_stream: bool = True) -> None:
        self.stream = stream
        self.close_stream = close_stream
        self.closed = False
        self.stats = SinkStats()
        if not self.target:
            self.target = getattr(stream, "name", None) or "<stream>"
            if not isinstance(self.target, str):
                self.target = "<stream>"

    @classmethod
    def open(cls, target: Union[str, BinaryIO, None] = None, **options: Any) -> Writer:
        """The writer on ``target``: a path (truncated, or appended to with ``append=True``),
        ``-``/``None`` for standard output, or an open binary stream (left open by
        :meth:`close` when ``close_stream=False`` is given). ``buffered=False`` writes every
        event through at once (see :func:`open_target`).

        Raises:
            SinkError: the path cannot be opened.
            TypeError: an option this format does not take.
        """
        append = bool(options.pop("append", False))
        buffered = bool(options.pop("buffered", True))
        stream, label = open_target(target, append, buffered)
        try:
            w = cls(stream, **options)
        except BaseException:
            if isinstance(target, str) and target != "-":
                stream.close()
            raise
        w.target = label
        return w

    def write(self, event: Event) -> None:  # pragma: no cover - abstract
        """Write one event (one line)."""
        raise NotImplementedError

    def flush(self) -> None:
        """Flush the stream."""
        if not self.closed:
            self.stream.flush()

    def close(self) -> None:
        """Finish the output (e.g. a root end tag), flush, close the stream unless stdout/stderr.
        A second call does nothing."""
        if self.closed:
            return
        self.closed = True
        stream = self.stream
        try:
            stream.flush()
        finally:
            if self.close_stream and not is_std_stream(stream):
                stream.close()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_std_stream(stream: Any) -> bool:
    """Whether ``stream`` is standard output or standard error (or their buffers)."""
    for std in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if std is not None and (stream is std or stream is getattr(std, "buffer", None)):
            return True
    try:
        return bool(stream.fileno() in (1, 2))
    except (AttributeError, OSError, ValueError):
        return False
