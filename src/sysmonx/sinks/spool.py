"""A bounded disk spool: the queue in front of every network output.

Records (opaque byte strings, one per event, already rendered for the receiver) are appended to
segment files in a spool directory; a sender reads them back in order and, once the receiver has
confirmed a prefix, *commits* it: the commit point is written to ``state`` (atomically, by
rename) and segments wholly before it are deleted. After a restart (clean or ``kill -9``) the
spool resumes at the commit point, so records neither get lost nor, as far as the transport's
confirmation reaches, sent twice.

On disk (``DIR``)::

    lock                  flock()ed by the one process using the spool
    id                    a random id made with the spool (message ids: ID:SEGMENT:OFFSET)
    state                 "SEGMENT OFFSET\\n": the first record not yet confirmed
    000000000001.seg ...  records: 4-byte big-endian length, 4-byte CRC-32, then the bytes

Each append is one ``write(2)`` of the framed record (O_APPEND), so a record is in the kernel's
page cache (safe from a crash of the process) when :meth:`Spool.append` returns; a torn record
at the end of the last segment (power loss) is found by its length or CRC and cut off at the next
open. ``fsync`` is not called (a power loss can cost the last seconds, as for the other outputs).

Bounded: when the records not yet confirmed take ``max_bytes`` (default 256 MiB), ``append``
refuses the record (returns False) and the caller counts it as lost; nothing already spooled is
evicted, so what is delivered stays a gap-free, ordered prefix plus later records.

Thread use: one thread appends, one thread (the sender) reads, rewinds and commits.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from pathlib import Path
from typing import Optional

from ..core.errors import SinkError

__all__ = ["Spool", "Position", "DEFAULT_MAX_BYTES"]

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
SEGMENT_BYTES = 16 * 1024 * 1024
_HEAD = struct.Struct(">II")

#: (segment number, byte offset in it).
Position = tuple[int, int]


def _seg_name(n: int) -> str:
    return f"{n:012d}.seg"


class Spool:
    """The spool in directory ``path`` (created if missing).

    Args:
        path: the spool directory; one process at a time (``flock``).
        max_bytes: cap on the framed size of the records not yet committed.
        segment_bytes: a new segment file is started past this size.

    Attributes:
        pending_bytes: framed bytes appended and not yet committed.
        pending_records: records appended and not yet committed.
        refused: records :meth:`append` refused since this open (spool full).
        recovered: records found waiting at open (left by an earlier run).
        id: the spool's random id (file ``id``).

    Raises:
        SinkError: the directory cannot be made or used, or another process holds it.
    """

    def __init__(self, path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES,
                 segment_bytes: int = SEGMENT_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.refused = 0
        self._lock = threading.Lock()
        self.readable = threading.Condition(self._lock)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lockfd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                                   0o600)
        except OSError as exc:
            raise SinkError(f"spool {self.path}: {exc.strerror or exc}") from exc
        try:
            import fcntl
            fcntl.flock(self._lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - Windows: no flock; one process by convention
            pass
        except OSError:
            os.close(self._lockfd)
            raise SinkError(f"spool {self.path} is in use by another sysmonx process") from None
        self.id = self._spool_id()
        self._commit = self._read_state()
        segs = sorted(int(p.name[:-4]) for p in self.path.glob("*.seg") if p.name[:-4].isdigit())
        for n in segs:
            if n < self._commit[0]:
                os.unlink(self.path / _seg_name(n))
        segs = [n for n in segs if n >= self._commit[0]]
        if not segs:
            segs = [self._commit[0]]
            (self.path / _seg_name(segs[0])).touch()
        # records waiting, and the valid end of the last segment (a torn tail is cut)
        self.pending_records = 0
        self.pending_bytes = 0
        for n in segs:
            start = self._commit[1] if n == self._commit[0] else 0
            count, end = self._scan(n, start)
            self.pending_records += count
            self.pending_bytes += end - start
            size = os.path.getsize(self.path / _seg_name(n))
            if end < size:
                os.truncate(self.path / _seg_name(n), end)
        self.recovered = self.pending_records
        self._wseg = segs[-1]
        self._wfd = os.open(self.path / _seg_name(self._wseg),
                            os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._wend: Position = (self._wseg, os.path.getsize(self.path / _seg_name(self._wseg)))
        self._read: Position = self._commit
        self._rfd: Optional[int] = None
        self._rseg = -1
        self.closed = False

    # -- state ---------------------------------------------------------------------------------

    def _spool_id(self) -> str:
        """A random id made when the spool is created (file ``id``): with a record's position
        it names the record uniquely and for good (message ids for deduplicating receivers)."""
        f = self.path / "id"
        try:
            text = f.read_text().strip()
            if text:
                return text
        except OSError:
            pass
        import uuid
        text = uuid.uuid4().hex
        try:
            f.write_text(text + "\n")
        except OSError as exc:
            raise SinkError(f"spool {self.path}: {exc.strerror or exc}") from exc
        return text

    def _read_state(self) -> Position:
        try:
            seg, off = (self.path / "state").read_text().split()
            return int(seg), int(off)
        except (OSError, ValueError):
            return (1, 0)

    def _write_state(self, pos: Position) -> None:
        tmp = self.path / "state.tmp"
        with open(tmp, "w") as f:
            f.write(f"{pos[0]} {pos[1]}\n")
        os.replace(tmp, self.path / "state")

    def _scan(self, seg: int, start: int) -> tuple[int, int]:
        """(complete records from ``start``, offset after the last complete one)."""
        count, off = 0, start
        try:
            with open(self.path / _seg_name(seg), "rb") as f:
                f.seek(start)
                while True:
                    head = f.read(_HEAD.size)
                    if len(head) < _HEAD.size:
                        break
                    length, crc = _HEAD.unpack(head)
                    body = f.read(length)
                    if len(body) < length or zlib.crc32(body) != crc:
                        break
                    count += 1
                    off += _HEAD.size + length
        except FileNotFoundError:
            pass
        return count, off

    # -- writer side ---------------------------------------------------------------------------

    def append(self, record: bytes, count_refusal: bool = True) -> bool:
        """Append one record; False (and, with ``count_refusal``, counted in :attr:`refused`)
        when the spool is full.

        Raises:
            SinkError: the disk write failed (the record is not spooled).
        """
        framed = _HEAD.pack(len(record), zlib.crc32(record)) + record
        with self._lock:
            if self.pending_bytes + len(framed) > self.max_bytes:
                self.refused += count_refusal
                return False
            try:
                if self._wend[1] >= self.segment_bytes:
                    os.close(self._wfd)
                    self._wseg += 1
                    self._wfd = os.open(self.path / _seg_name(self._wseg),
                                        os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                                        0o600)
                    self._wend = (self._wseg, 0)
                n = os.write(self._wfd, framed)
                if n != len(framed):  # a short write (disk full): cut it off again
                    os.ftruncate(self._wfd, self._wend[1])
                    raise OSError(28, "short write to the spool (disk full?)")
            except OSError as exc:
                raise SinkError(f"spool {self.path}: {exc.strerror or exc}") from exc
            self._wend = (self._wseg, self._wend[1] + len(framed))
            self.pending_bytes += len(framed)
            self.pending_records += 1
            self.readable.notify()
        return True

    # -- sender side ---------------------------------------------------------------------------

    def read(self, max_records: int, max_bytes: int = 1 << 20,
             wait: float = 0.0) -> list[tuple[Position, bytes]]:
        """Up to ``max_records`` records after the read cursor (advancing it), each with the
        position just after it (what to :meth:`commit` once it is confirmed). Waits up to
        ``wait`` seconds for one when there is none."""
        with self._lock:
            if self._read >= self._wend and wait > 0:
                self.readable.wait(wait)
            end = self._wend
        out: list[tuple[Position, bytes]] = []
        size = 0
        while len(out) < max_records and size < max_bytes and self._read < end:
            seg, off = self._read
            if seg != self._rseg:
                if self._rfd is not None:
                    os.close(self._rfd)
                    self._rfd = None
                try:
                    self._rfd = os.open(self.path / _seg_name(seg), os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    self._rfd = None
                self._rseg = seg
            seg_end = end[1] if seg == end[0] else None
            if self._rfd is None or (seg_end is not None and off >= seg_end):
                if seg < end[0]:
                    self._read = (seg + 1, 0)
                    continue
                break
            head = os.pread(self._rfd, _HEAD.size, off)
            if len(head) < _HEAD.size:  # end of a finished segment
                self._read = (seg + 1, 0)
                continue
            length, _crc = _HEAD.unpack(head)
            body = os.pread(self._rfd, length, off + _HEAD.size)
            self._read = (seg, off + _HEAD.size + length)
            out.append((self._read, body))
            size += length
        return out

    def rewind(self) -> None:
        """Move the read cursor back to the commit point (the receiver did not confirm what was
        read since): those records are read again, in order."""
        self._read = self._commit

    def commit(self, pos: Position, records: int) -> None:
        """The records up to ``pos`` (``records`` of them since the last commit) are delivered:
        persist the point and delete segments wholly before it."""
        if pos <= self._commit:
            return
        old = self._commit
        self._commit = pos
        self._write_state(pos)
        with self._lock:
            freed = (pos[1] - old[1]) if pos[0] == old[0] else None
            if freed is None:
                freed = (self._segment_size(old[0]) - old[1]) + pos[1] + sum(
                    self._segment_size(n) for n in range(old[0] + 1, pos[0]))
            self.pending_bytes -= freed
            self.pending_records -= records
        for n in range(old[0], pos[0]):
            try:
                os.unlink(self.path / _seg_name(n))
            except FileNotFoundError:
                pass

    def _segment_size(self, n: int) -> int:
        try:
            return os.path.getsize(self.path / _seg_name(n))
        except OSError:
            return 0

    @property
    def unread(self) -> bool:
        """Whether records wait after the read cursor."""
        return self._read < self._wend

    def close(self) -> None:
        """Release the files and the lock (the records not committed stay for the next open)."""
        if self.closed:
            return
        self.closed = True
        for fd in (self._wfd, self._rfd, self._lockfd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
