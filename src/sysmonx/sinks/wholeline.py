"""Live output files where every write is all or nothing: :class:`WholeLineFile`.

A live output (``sysmonx run -o FILE``, standard output) is written through one of these, so a
failure is known per event and a file never holds a cut event line (see the class).
"""

from __future__ import annotations

import os
import stat

__all__ = ["WholeLineFile", "PartialWrite"]


class PartialWrite(Exception):
    """A batch write (:meth:`WholeLineFile.write_lines`, a sink's ``write_many``) stopped part
    way: the first :attr:`written` items went out whole, the next one failed with :attr:`cause`
    (nothing of it stays in a regular file), the items after it were not tried.

    Attributes:
        written: items written whole, ``0 <= written < len(items)``.
        cause: the exception the failing write raised (an ``OSError``).
    """

    def __init__(self, written: int, cause: BaseException) -> None:
        super().__init__(f"{written} items written, then: {cause}")
        self.written = written
        self.cause = cause


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

    def write_lines(self, lines: list) -> int:
        """Write ``lines`` (``bytes`` each, without the line break), each followed by ``b"\\n"``,
        in as few system calls as the kernel allows (one, normally) instead of one per line.
        Returns the number of bytes written.

        Raises:
            PartialWrite: a system call failed or wrote nothing: the lines before the one it cut
                are out whole, the cut part of that line is removed again from a regular file
                (as :meth:`write` does for a single line) and its error is ``cause``.
        """
        data = b"\n".join(lines) + b"\n"
        view = memoryview(data)
        done = 0
        total = len(view)
        while done < total:
            try:
                n = os.write(self.fd, view[done:])
            except OSError as exc:
                raise self._partial(lines, done, exc) from exc
            if n <= 0:
                raise self._partial(lines, done, OSError(f"write to {self.name} returned {n}"))
            done += n
        return done

    def _partial(self, lines: list, done: int, exc: BaseException) -> PartialWrite:
        """The :class:`PartialWrite` for a batch cut after ``done`` bytes (the cut line's part
        removed again)."""
        whole = end = 0
        for line in lines:
            if end + len(line) + 1 > done:
                break
            end += len(line) + 1
            whole += 1
        if done > end:
            self._undo(done - end)
        return PartialWrite(whole, exc)

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
        """The descriptor."""
        return self.fd

    def close(self) -> None:
        """Close the descriptor when this object owns it. A second call does nothing."""
        if self.close_fd and self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
        self.fd = -1
