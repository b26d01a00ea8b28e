"""Compressed and archived inputs, read in place (nothing is unpacked to disk).

Containers are recognised by their magic bytes, whatever the file is called: gzip (``.gz``,
``.tgz``), bzip2 (``.bz2``), xz (``.xz``), zip, and tar (plain or inside any of the compressions:
``.tar.gz``, ``.tar.bz2``, ``.tar.xz``). A compressed stream is decompressed on the fly; each
regular member of a zip or tar is read in turn, in archive order, and containers nest (a
``.json.gz`` inside a ``.zip``; at most :data:`MAX_DEPTH` levels). The content of every stream or
member is detected like a plain file (:func:`sysmonx.sources.detect_format`, the member's name
standing in for the extension) unless a format is forced, and read by the same readers, streaming:
memory does not grow with the member's size, except for EVTX members, which pyevtx-rs must be able
to seek in and which are therefore held in memory (up to :data:`MAX_EVTX_MEMBER_BYTES`).

Names: origins and :class:`~sysmonx.sources.ReadError` paths of a member are
``archive.zip!member.json`` (``a.zip!inner.tar.gz!x.json`` when nested); a single compressed
stream keeps the file's own path (``x.json.gz:12``). Line numbers count decompressed lines.

Skipped silently: directories, links and other non-regular tar members, macOS resource forks
(``__MACOSX/`` and ``._name`` entries), empty members, and members whose content is not
recognised and whose name does not have an input extension (a README beside the logs). Reported
(and the member or the rest of the archive skipped): encrypted zip members, damaged or truncated
compressed data, a zip inside a stream (zip needs seeking), nesting deeper than MAX_DEPTH,
unrecognised content of a member named like an input file.
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import tarfile
import zipfile
import zlib
from typing import Any, Callable, Iterator, Optional

from ..event import Event
from ..core.errors import ReadError
from .detect import (ARCHIVE_EXTENSIONS, SNIFF_BYTES, container_kind, detect_format,
                     input_extensions, read_stream, unrecognised)

__all__ = ["container_kind", "read_archive", "MAX_DEPTH", "MAX_EVTX_MEMBER_BYTES"]

#: Deepest nesting of containers read (a zip in a tar in a gzip is 3).
MAX_DEPTH = 4
#: Largest EVTX member read from an archive (it is held in memory).
MAX_EVTX_MEMBER_BYTES = 256 * 1024 * 1024

#: Errors of damaged compressed data or archive structure.
_DAMAGE = (OSError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile, tarfile.TarError)


def read_archive(path: str, kind: str, on_error: Callable[[ReadError], None],
                 input_format: Optional[str] = None, threads: int = 0) -> Iterator[Event]:
    """Yield the events of every log inside the compressed or archive file ``path``.

    Args:
        path: the file.
        kind: its :func:`container_kind`.
        on_error: receives a :class:`~sysmonx.sources.ReadError` per damaged record of a member
            (path ``archive!member``), per damaged container and per unreadable member; reading
            goes on with the next record or member where the container allows.
        input_format: force this format for every member instead of detecting it.
        threads: pyevtx-rs worker threads for EVTX members.
    Raises:
        OSError: the file cannot be opened.
    """
    with open(path, "rb") as f:
        yield from _container(f, path, kind, on_error, input_format, threads, 1)


def _container(f, name: str, kind: str, on_error, fmt, threads, depth) -> Iterator[Event]:
    if depth > MAX_DEPTH:
        on_error(ReadError(name, None, "file", f"archives nested deeper than {MAX_DEPTH} "
                           "levels; not read"))
        return
    try:
        if kind == "zip":
            yield from _zip(f, name, on_error, fmt, threads, depth)
        elif kind == "tar":
            yield from _tar(f, name, on_error, fmt, threads, depth)
        else:
            stream: io.BufferedReader[Any]
            if kind == "gzip":
                stream = io.BufferedReader(_Gunzip(f, name, on_error), 1 << 16)
            else:
                raw = bz2.BZ2File(f) if kind == "bzip2" else lzma.LZMAFile(f)
                stream = io.BufferedReader(_Tolerant(raw, name, on_error), 1 << 16)
            with stream:
                yield from _member(stream, name, _inner_name(name), on_error, fmt, threads,
                                   depth)
    except _DAMAGE as exc:
        on_error(ReadError(name, None, "file", f"damaged {kind} data ({exc}); the rest of it "
                           "is lost"))


def _inner_name(name: str) -> str:
    """What a compressed file's name says about its content: ``x.json.gz`` -> ``x.json``,
    ``x.tgz`` -> ``x.tar``."""
    base, ext = os.path.splitext(name)
    ext = ext.lower()
    if ext in (".tgz", ".tbz", ".tbz2", ".txz"):
        return base + ".tar"
    return base if ext in (".gz", ".bz2", ".xz") else name


def _skipped_name(member: str) -> bool:
    base = member.rstrip("/").rsplit("/", 1)[-1]
    return not base or member.startswith("__MACOSX/") or "/__MACOSX/" in member \
        or base.startswith("._")


def _zip(f, name, on_error, fmt, threads, depth) -> Iterator[Event]:
    if not _seekable(f):
        on_error(ReadError(name, None, "file", "zip archive inside a compressed stream or tar "
                           "cannot be read in place; unpack it first"))
        return
    with zipfile.ZipFile(f) as z:
        for info in z.infolist():
            if info.is_dir() or _skipped_name(info.filename):
                continue
            member = f"{name}!{info.filename}"
            if info.flag_bits & 0x1:
                on_error(ReadError(member, None, "file", "encrypted zip member; not read"))
                continue
            try:
                with z.open(info) as stream:
                    yield from _member(stream, member, info.filename, on_error, fmt, threads,
                                       depth)
            except (_DAMAGE + (NotImplementedError,)) as exc:
                on_error(ReadError(member, None, "file", f"damaged zip member ({exc}); the rest "
                                   "of it is lost"))


def _tar(f, name, on_error, fmt, threads, depth) -> Iterator[Event]:
    with tarfile.open(fileobj=f, mode="r|") as t:
        for info in t:
            if not info.isfile() or _skipped_name(info.name):
                continue
            member = f"{name}!{info.name}"
            stream = t.extractfile(info)
            if stream is None:
                continue
            yield from _member(stream, member, info.name, on_error, fmt, threads, depth)


def _member(stream, name: str, inner: str, on_error, fmt, threads, depth) -> Iterator[Event]:
    """One decompressed stream or archive member: nested container, or a log to detect and
    read. ``inner`` is the name whose extension hints at the content."""
    head = _read_up_to(stream, SNIFF_BYTES)
    if not head:
        return
    kind = container_kind(head)
    if kind is not None:
        if kind == "zip" and _seekable(stream):
            stream.seek(0)
            yield from _container(stream, name, kind, on_error, fmt, threads, depth + 1)
        else:
            yield from _container(io.BufferedReader(_Prefixed(head, stream), 1 << 16), name,
                                  kind, on_error, fmt, threads, depth + 1)
        return
    member_fmt = fmt or detect_format(inner, head)
    if member_fmt is None:
        ext = os.path.splitext(inner)[1].lower()
        if ext in input_extensions() or ext in ARCHIVE_EXTENSIONS:
            on_error(unrecognised(name, head))  # the same words as for a file
        return
    try:
        if member_fmt == "evtx":
            data = head + _read_up_to(stream, MAX_EVTX_MEMBER_BYTES + 1 - len(head))
            if len(data) > MAX_EVTX_MEMBER_BYTES:
                on_error(ReadError(name, None, "file", "EVTX member larger than "
                                   f"{MAX_EVTX_MEMBER_BYTES} bytes; unpack it to read it"))
                return
            from .evtx import read_evtx
            yield from read_evtx(name, on_error, threads, data=data)
            return
        buffered = io.BufferedReader(_Prefixed(head, stream), buffer_size=1 << 16)
        yield from read_stream(buffered, name, on_error, member_fmt)
    except _DAMAGE as exc:
        on_error(ReadError(name, None, "file", f"damaged compressed data ({exc}); the rest of "
                           "it is lost"))


def _seekable(stream) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):  # tar members of a stream-mode tarfile
        return False


_TRUNCATED = "compressed data cut off (truncated file); what came before was read"


def _read_up_to(stream, n: int) -> bytes:
    """Up to ``n`` bytes (fewer only at the end of the stream)."""
    parts = []
    while n > 0:
        block = stream.read(min(n, 1 << 20))
        if not block:
            break
        parts.append(block)
        n -= len(block)
    return b"".join(parts)


class _Gunzip(io.RawIOBase):
    """gzip decompression as a raw stream: members one after another (``cat a.gz b.gz``), and
    bytes after the last member that do not start another one ignored (``gzip -d`` warns
    "trailing garbage ignored"; Python's GzipFile raises and loses what it had buffered). Trailing
    white space or NUL padding is ignored silently, anything else is reported once. Decompresses
    at most 1 MiB per call, so a highly compressed member cannot blow memory up."""

    def __init__(self, f, name: str, on_error: Callable[[ReadError], None]) -> None:
        super().__init__()
        self.f, self.name, self.on_error = f, name, on_error
        self.d = zlib.decompressobj(31)
        self.pending = b""  # compressed input not yet given to self.d
        self.out = memoryview(b"")
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self.out and not self.done:
            self._step()
        k = min(len(buffer), len(self.out))
        buffer[:k] = self.out[:k]
        self.out = self.out[k:]
        return k

    def _step(self) -> None:
        d = self.d
        if d.eof:
            tail = d.unused_data + self.pending
            self.pending = b""
            while len(tail) < 2:
                more = self.f.read(1 << 16)
                if not more:
                    break
                tail += more
            if tail[:2] == b"\x1f\x8b":  # another member
                self.d = zlib.decompressobj(31)
                self.pending = tail
            else:
                self._trailing(tail)
            return
        data = self.pending or d.unconsumed_tail or self.f.read(1 << 16)
        self.pending = b""
        if not data:
            self.done = True
            self.on_error(ReadError(self.name, None, "file", _TRUNCATED))
            return
        self.out = memoryview(d.decompress(data, 1 << 20))

    def _trailing(self, tail: bytes) -> None:
        self.done = True
        size, junk = len(tail), tail.strip(b"\x00 \t\r\n")
        while not junk:
            more = self.f.read(1 << 16)
            if not more:
                return
            size += len(more)
            junk = more.strip(b"\x00 \t\r\n")
        size += sum(len(b) for b in iter(lambda: self.f.read(1 << 16), b""))
        self.on_error(ReadError(self.name, None, "file", f"{size} bytes of trailing garbage after "
                                "the gzip data ignored"))


class _Tolerant(io.RawIOBase):
    """A decompressing stream (BZ2File, LZMAFile) whose truncation ends the data with a
    ReadError instead of an EOFError that would lose what is buffered: ``read1`` decompresses
    at most one block, so the error comes only when nothing decoded is pending."""

    def __init__(self, stream, name: str, on_error: Callable[[ReadError], None]) -> None:
        super().__init__()
        self.stream, self.name, self.on_error = stream, name, on_error
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.done:
            return 0
        try:
            data = self.stream.read1(len(buffer))
        except EOFError:
            self.done = True
            self.on_error(ReadError(self.name, None, "file", _TRUNCATED))
            return 0
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self.stream.close()
        super().close()


class _Prefixed(io.RawIOBase):
    """A raw, non-seekable stream: ``head`` (already read) then the rest of ``stream``."""

    def __init__(self, head: bytes, stream) -> None:
        super().__init__()
        self.head = memoryview(head)
        self.stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = len(buffer)
        if self.head:
            k = min(n, len(self.head))
            buffer[:k] = self.head[:k]
            self.head = self.head[k:]
            return k
        data = self.stream.read(n)
        buffer[:len(data)] = data
        return len(data)
