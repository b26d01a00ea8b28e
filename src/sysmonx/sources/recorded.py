"""The source a replay runs: recorded logs given as files, folders (recursed), archives or ``-``
for standard input, read in order, each file's format detected (or forced).

A file that cannot be opened or read becomes one :class:`~sysmonx.core.errors.ReadError` for the
whole file, and the next file is read; damaged records inside a file are reported by the format's
reader, and the records it repaired are summed up in one note per file and fault. Special files
met in a folder walk are skipped with a warning. Counters (``files``, ``records``) and callbacks
give progress without the loop knowing about files.
"""

from __future__ import annotations

import os
import stat
from collections import Counter, deque
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from ..core import native
from ..core.errors import ReadError, SysmonXError
from ..core.registry import SOURCES
from ..event import Event
from ..interfaces import Source
from .detect import iter_input_files, open_source

__all__ = ["ReadAhead", "RecordedLogs"]


class ReadAhead:
    """Tells the kernel which input files are read next, so that their pages are read from disk
    while the files before them are parsed (``posix_fadvise(POSIX_FADV_WILLNEED)``): a cold
    replay of many small files then does not stop on a disk read at each file's start and again
    as its reads grow (two waits per file, each putting the process off the CPU, its caches
    taken by whatever runs meanwhile).

    :meth:`before` is called as each file is about to be read, in the order of ``paths``; it
    advises that file (when not done yet) and the ones after it until ``limit`` bytes of them are
    advised and not yet begun (a file larger than what is left: its first part; the kernel's own
    read-ahead takes the rest as it is read), so the page cache taken ahead stays bounded
    whatever the inputs. Nothing is read here and nothing fails: a path that cannot be opened,
    that is not a regular file (``-``, a FIFO) or a platform without ``posix_fadvise`` is left
    alone (the reader reports what it cannot read).

    A file begun out of that order resynchronises: the look-ahead goes on from where that file
    is in ``paths`` (its next place from the file expected, else its first place), as if the
    files in between had been read; files skipped that were advised are not taken back (their
    pages may be read later anyway), only no longer counted ahead. A file not in ``paths`` is
    advised alone and changes nothing else.

    Args:
        paths: the files in the order they are read (a path may come more than once).
        limit: bytes advised ahead of the file being read (default :data:`LIMIT`).
    """

    #: Bytes advised ahead of the file about to be read (64 MiB).
    LIMIT = 64 << 20

    def __init__(self, paths: Sequence[str], limit: int = LIMIT) -> None:
        self.paths = list(paths)
        self.limit = limit
        self._at = 0        # index in paths of the file expected next
        self._advised = 0   # paths[:_advised] were advised
        self._ahead: deque[int] = deque()  # bytes advised of paths[_at:_advised], in order
        self._total = 0     # their sum
        self._fadvise = getattr(os, "posix_fadvise", None)
        self._places: Optional[dict[str, list[int]]] = None  # path -> its indices (see _find)

    def before(self, path: str) -> None:
        """``path`` is about to be read: advise it and what follows (see the class)."""
        if self._fadvise is None:
            return
        if self._at >= len(self.paths) or self.paths[self._at] != path:
            at = self._find(path)
            if at is None:
                self._advise(path, self.limit)  # not one of the files given: it alone
                return
            self._resync(at)
        self._at += 1
        if self._ahead:  # advised already
            self._total -= self._ahead.popleft()
        else:
            self._advise(path, self.limit)
            self._advised = self._at
        while self._total < self.limit and self._advised < len(self.paths):
            n = self._advise(self.paths[self._advised], self.limit - self._total)
            self._advised += 1
            self._ahead.append(n)
            self._total += n

    def _find(self, path: str) -> Optional[int]:
        """Index of ``path`` in ``paths`` for a file begun out of order: its first place at or
        after the file expected, else its first place; ``None`` when it is not there. The
        index of places is built at the first such file (an in-order replay never needs it)."""
        if self._places is None:
            self._places = {}
            for i, p in enumerate(self.paths):
                self._places.setdefault(p, []).append(i)
        places = self._places.get(path)
        if not places:
            return None
        return next((i for i in places if i >= self._at), places[0])

    def _resync(self, at: int) -> None:
        """Make ``paths[at]`` the file expected next. Inside the advised window the files
        skipped leave the count ahead; elsewhere (beyond the window, or back) the window starts
        again empty at ``at``."""
        if self._at <= at < self._advised:
            for _ in range(at - self._at):
                self._total -= self._ahead.popleft()
        else:
            self._ahead.clear()
            self._total = 0
            self._advised = at
        self._at = at

    def _advise(self, path: str, most: int) -> int:
        """Advise the first ``most`` bytes of ``path`` (or all of it); the bytes advised. Only a
        regular file is opened (told by ``stat`` first: opening a FIFO would wait for, or cut
        off, its writer)."""
        try:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                return 0
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except (OSError, ValueError):
            return 0
        try:
            n = min(st.st_size, most)
            if n:
                self._fadvise(fd, 0, n, os.POSIX_FADV_WILLNEED)  # type: ignore[misc]
            return n
        except OSError:
            return 0
        finally:
            os.close(fd)


@SOURCES.register
class RecordedLogs(Source):
    """Events of recorded logs, file after file.

    Args:
        paths: files, folders or ``-``; expanded by
            :func:`~sysmonx.sources.iter_input_files` (folders recurse, sorted), or already
            expanded with ``expanded=True``.
        input_format: force a format (a name of :data:`~sysmonx.sources.FORMATS`) or ``None``
            to detect per file.
        threads: pyevtx-rs worker threads for EVTX (0: one per core).
        on_progress: ``on_progress(path, records_so_far)`` every ``progress_every`` records and at
            each file end.
        on_file_done: ``on_file_done(path)`` after each file.
        expanded: ``paths`` are files already (no folder walk).
    Attributes:
        files: files started; ``records``: events read (updated at least at each file end and
            every ``progress_every`` records).
    Raises:
        FileNotFoundError: (when :meth:`events` starts) a path that does not exist.
    """

    name = "files"
    summary = "recorded logs: files, folders, archives or stdin, each file's format detected"

    PROGRESS_EVERY = 4096

    def __init__(self, paths: Iterable[str], input_format: Optional[str] = None,
                 threads: int = 0, on_progress: Optional[Callable[[str, int], None]] = None,
                 on_file_done: Optional[Callable[[str], None]] = None,
                 expanded: bool = False) -> None:
        self.paths = list(paths)
        self.input_format = input_format
        self.threads = threads
        self.on_progress = on_progress
        self.on_file_done = on_file_done
        self.expanded = expanded
        self.files = 0
        self.records = 0
        self._raw: Any = None

    def events(self) -> Iterator[Optional[Event]]:
        """Every file's events, in order (one generator for all files: no frame per file on
        the path of each event)."""
        return self._read(False)

    def batches(self) -> Optional[Iterator[list[Any]]]:
        """Every file's events in lists (:meth:`Source.batches
        <sysmonx.interfaces.Source.batches>`): an EVTX file's come a chunk's worth at a time
        from the compiled record loop, other formats' one by one. ``None`` without the compiled
        extension (the loop then takes :meth:`events`). ``on_progress`` is called when
        ``records`` passes a multiple of :data:`PROGRESS_EVERY` (with the count at the end of
        that list) and at each file end."""
        if native.speedups is None:
            return None
        return self._read(True)

    def use_raw(self, plan: Any) -> bool:
        """Take the loop's raw path for EVTX files (:meth:`Source.use_raw
        <sysmonx.interfaces.Source.use_raw>`; other formats' records stay Events; ``None``:
        none)."""
        self._raw = plan
        return plan is not None

    def _read(self, batched: bool) -> Iterator[Any]:
        files = self.paths if self.expanded else list(iter_input_files(self.paths,
                                                                         self.on_error))
        progress = self.on_progress
        every = self.PROGRESS_EVERY
        report = self.on_error
        repairs: Counter[str] = Counter()

        def on_error(err: SysmonXError) -> None:
            if getattr(err, "severity", "error") == "repaired":
                repairs[err.message] += 1
            report(err)

        for path in files:
            self.files += 1
            repairs.clear()
            n = self.records
            try:
                reader = open_source(path, on_error, self.input_format, threads=self.threads,
                                     batches=batched, raw=self._raw if batched else None)
                if batched:
                    for batch in reader:
                        before = n
                        n += len(batch)
                        if progress is not None and n // every != before // every:
                            self.records = n
                            progress(path, n)
                        yield batch
                elif progress is None:
                    for ev in reader:
                        n += 1
                        yield ev
                else:
                    for ev in reader:
                        n += 1
                        if n % every == 0:
                            self.records = n
                            progress(path, n)
                        yield ev
            except (OSError, ValueError) as exc:
                report(ReadError(path, None, "file", f"cannot read: {exc}"))
            finally:
                self.records = n
            for what, count in repairs.items():
                report(ReadError(path, None, "file", f"{count:,} record(s) repaired: {what}",
                                 "note"))
            if progress is not None:
                progress(path, n)
            if self.on_file_done is not None:
                self.on_file_done(path)
