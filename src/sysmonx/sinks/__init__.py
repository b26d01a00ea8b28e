"""Writers: :class:`~sysmonx.event.Event` objects out, one format per module.

==========  =========================================  =============================================
name        class                                      output
==========  =========================================  =============================================
xml         :class:`.xml_windows.WindowsXmlWriter`     event XML as the Windows Event Log renders it
linux-xml   :class:`.xml_linux.LinuxXmlWriter`         Sysmon for Linux single-line XML
jsonl       :class:`.jsonl.JsonlWriter`                SysmonX JSON lines
csv         :class:`.csv_timeline.CsvTimelineWriter`   CSV timeline (Timeline Explorer,
                                                       spreadsheets)
==========  =========================================  =============================================

Every writer is ``Writer(stream, **options)`` over a binary stream, with ``write(event)`` and
``close()``, and writes exactly one line per event (the CSV writer: after one header line): no
value can forge another field, event or line, nor put a terminal escape (ESC, C1 controls) in the
output as a raw character.
"""

from __future__ import annotations

import importlib
import os
import stat
import sys
from typing import BinaryIO

from ..event import Event

__all__ = ["Writer", "WRITERS", "writer_class", "WholeLineFile"]

#: Output format name -> ``"module:Class"`` (imported on demand).
WRITERS = {
    "xml": "sysmonx.sinks.xml_windows:WindowsXmlWriter",
    "linux-xml": "sysmonx.sinks.xml_linux:LinuxXmlWriter",
    "jsonl": "sysmonx.sinks.jsonl:JsonlWriter",
    "csv": "sysmonx.sinks.csv_timeline:CsvTimelineWriter",
}


def writer_class(name: str) -> type:
    """The writer class registered under ``name`` in :data:`WRITERS`.

    Raises:
        ValueError: unknown name.
    """
    try:
        module, cls = WRITERS[name].split(":")
    except KeyError:
        raise ValueError(f"unknown output format {name!r}; expected one of "
                         f"{', '.join(WRITERS)}") from None
    return getattr(importlib.import_module(module), cls)


class Writer:
    """Base of the writers: owns the binary ``stream`` and closes it in :meth:`close`.

    Args:
        stream: binary, writable; the caller's buffering applies.
        close_stream: close ``stream`` in :meth:`close` (default True). Standard output and
            standard error are never closed, only flushed.

    Attributes:
        PART_OPTIONS: class attribute, the constructor options that make a writer write only the
            events, leaving out what an output holds once (a CSV header, an XML root): parallel
            replay (:func:`sysmonx.pipeline.replay_parallel`) writes those once with a writer on
            the real output and the parts with these options.
    """

    PART_OPTIONS: dict = {}

    def __init__(self, stream: BinaryIO, close_stream: bool = True) -> None:
        self.stream = stream
        self.close_stream = close_stream

    def write(self, event: Event) -> None:  # pragma: no cover - abstract
        """Write one event (one line)."""
        raise NotImplementedError

    def close(self) -> None:
        """Finish the output (e.g. a root end tag), flush, close the stream unless stdout/stderr.
        A second call does nothing."""
        if self.stream is None:
            return
        stream, self.stream = self.stream, None
        stream.flush()
        if self.close_stream and not _is_std_stream(stream):
            stream.close()

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_std_stream(stream) -> bool:
    for std in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if std is not None and (stream is std or stream is getattr(std, "buffer", None)):
            return True
    try:
        return stream.fileno() in (1, 2)
    except (AttributeError, OSError, ValueError):
        return False


class WholeLineFile:
    """A binary stream over a file descriptor for live output, where every :meth:`write` is all
    or nothing: each write goes straight to the kernel (no buffer that could hold or repeat a
    half-written event), and when the kernel takes only part of it (a file system that fills up,
    ``ENOSPC``) the part is removed again from a regular file (``ftruncate``), so the file never
    holds a cut event line; the error is then raised for the caller to count.

    Args:
        fd: an open, writable descriptor (``O_APPEND`` or not).
        name: how the output is named in messages (``-o events.log``, ``stdout``).
        close_fd: close ``fd`` in :meth:`close`.

    Raises (from :meth:`write`):
        OSError: the data was not written (nothing of it stays in a regular file; on a pipe or
            terminal a part may have gone out before the error).
    """

    def __init__(self, fd: int, name: str, close_fd: bool = False) -> None:
        self.fd = fd
        self.name = name
        self.close_fd = close_fd
        try:
            st = os.fstat(fd)
            self._regular = stat.S_ISREG(st.st_mode)
            import fcntl  # POSIX only: imported here so the package imports on Windows
            self._append = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND)
        except (OSError, ImportError):
            self._regular = self._append = False
        self.undone = 0  # partial writes removed again

    def write(self, data: bytes) -> int:
        """Write all of ``data`` or raise (see the class docstring). Returns ``len(data)``."""
        view = memoryview(data)
        done = 0
        while done < len(view):
            try:
                n = os.write(self.fd, view[done:])
            except OSError:
                if done:
                    self._undo(done)
                raise
            if n <= 0:
                if done:
                    self._undo(done)
                raise OSError(f"write to {self.name} returned {n}")
            done += n
        return done

    def _undo(self, n: int) -> None:
        if not self._regular:
            return
        try:
            if self._append:
                end = os.fstat(self.fd).st_size
                os.ftruncate(self.fd, max(0, end - n))
            else:
                pos = os.lseek(self.fd, 0, os.SEEK_CUR) - n
                os.ftruncate(self.fd, max(0, pos))
                os.lseek(self.fd, max(0, pos), os.SEEK_SET)
            self.undone += 1
        except OSError:
            pass

    def flush(self) -> None:
        """Nothing to flush: every write went to the kernel."""

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        """Close the descriptor when this object owns it. A second call does nothing."""
        if self.close_fd and self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
        self.fd = -1
