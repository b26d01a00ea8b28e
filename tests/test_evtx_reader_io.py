"""What the EVTX reader does per chunk besides pyevtx-rs's parse (sources/evtx.py).

* Each chunk is read once, with the next chunk's header (64 KiB + 40 bytes, for its header,
  its span and its checksums), by position (``os.pread``), whatever the number of times the
  chunk tracker asks for them.
* Reads that come back short before the end of the file are completed (the same events and
  the same errors as whole reads, on a clean file and on the damaged ones).
* The compiled record loop gives one list per chunk: the chunk's first record (the one that
  moves the reader to the chunk) is in the list of the rest of its chunk, not a list alone.
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from typing import Callable, Optional

import pytest

from sysmonx.core import native
from sysmonx.sources import evtx as evtx_source
from sysmonx.sources.evtx import read_evtx, read_evtx_batches

from test_sources import DAMAGE, PANACHE, _damage

CHUNK = 65536


def _read(path, **kw):
    errors: list = []
    events = list(read_evtx(str(path), errors.append, **kw))
    return events, [(e.offset, e.offset_kind, e.severity, e.message) for e in errors]


def _headers(data: bytes) -> list:
    """(first, last) record numbers of each chunk that has a header."""
    out = []
    for off in range(4096, len(data), CHUNK):
        if data[off:off + 8] == b"ElfChnk\x00":
            out.append(struct.unpack_from("<QQ", data, off + 24))
    return out


def test_each_chunk_header_and_chunk_read_once(corpus, monkeypatch):
    """A clean file: the file header and each chunk read once each, one call per chunk (its
    64 KiB and the next chunk's 40-byte header, read as the reader enters it: the chunk's
    header, its span and its checksums all come from these bytes); the slots after the last
    chunk whose header no such read brought give their 40-byte header read once; nothing
    else."""
    path = corpus / PANACHE
    data = path.read_bytes()
    chunks = len(_headers(data))
    assert chunks >= 4
    reads: Counter = Counter()
    real = os.pread

    def counting(fd, n, offset):
        reads[(offset, n)] += 1
        return real(fd, n, offset)

    monkeypatch.setattr(os, "pread", counting)
    events, errors = _read(path)
    assert len(events) == 565 and errors == []
    slots = -(-(len(data) - 4096) // CHUNK)  # blank slots after the chunks: header looked at
    assert slots > chunks + 1
    whole = {off for (off, n) in reads if n == CHUNK + 40}
    heads = {off for (off, n) in reads if n == 40}
    assert whole == {4096 + s * CHUNK for s in range(chunks)}
    # the first slot after the chunks: its header came with the last chunk's bytes
    assert heads == {4096 + s * CHUNK for s in range(chunks + 1, slots)}
    assert set(reads.values()) == {1}
    assert set(reads) - {(o, 40) for o in heads} - {(o, CHUNK + 40) for o in whole} == \
        {(0, 4096)}


def _short(monkeypatch, most: int) -> None:
    real = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, offset: real(fd, min(n, most), offset))


def _damaged(corpus, tmp_path, name: str, damage: Callable[[bytes, str], bytes],
             kind: Optional[str]):
    """The corpus file ``name`` damaged by ``damage(data, kind)`` (as it is when ``kind`` is
    ``None``), written to ``tmp_path``; its path."""
    data = (corpus / name).read_bytes()
    path = tmp_path / "f.evtx"
    path.write_bytes(data if kind is None else damage(data, kind))
    return path


#: ways of reading a file, each a change made with a MonkeyPatch (undone after the read)
SHORT_READS = ("os.pread returns at most 1,000 bytes", lambda mp: _short(mp, 1000))
BY_CHUNK = ("chunk by chunk", lambda mp: mp.setattr(evtx_source, "WHOLE_FILE_MAX", 0))
WHOLE = ("read whole", lambda mp: mp.setattr(evtx_source, "WHOLE_FILE_MAX", 1 << 40))


def _same_every_way(path, *ways) -> tuple:
    """``(events, errors)`` of ``path`` read as it is by default, asserted to be the same
    (events, error offsets, severities and messages) when read each of the other ``ways``."""
    first = _read(path)
    for name, way in ways:
        with pytest.MonkeyPatch.context() as mp:
            way(mp)
            assert _read(path) == first, name
    return first


@pytest.mark.parametrize("kind", [None, "truncated", "record_magic", "chunk_magic",
                                  "record_body", "blank_chunk", "file_header"])
def test_short_reads_are_completed(corpus, tmp_path, kind):
    """``os.pread`` returning at most 1,000 bytes per call: the same events and errors."""
    path = _damaged(corpus, tmp_path, PANACHE, _damage, kind)
    _, errors = _same_every_way(path, SHORT_READS)
    assert len(errors) == (0 if kind is None else DAMAGE[kind][0])


def test_checksum_mismatch_found_through_short_reads(corpus, tmp_path, monkeypatch):
    data = bytearray((corpus / PANACHE).read_bytes())
    data[4096 + 2 * CHUNK + 52] ^= 0xFF  # record data CRC32 of chunk 2
    path = tmp_path / "crc.evtx"
    path.write_bytes(bytes(data))
    _short(monkeypatch, 777)
    events, errors = _read(path)
    assert len(events) == 565
    assert [(e[0], "record data checksum mismatch" in e[3]) for e in errors] == \
        [(4096 + 2 * CHUNK, True)]


needs_ext = pytest.mark.skipif(native.speedups is None,
                               reason=f"C extension not in use: {native.implementation()}")


@needs_ext
@pytest.mark.parametrize("batch", [evtx_source.BATCH, 10])
def test_one_list_per_chunk(corpus, monkeypatch, batch):
    """Lists never cross a chunk and, up to ``BATCH`` events, hold the whole chunk: as many
    lists as chunks (not a one-event list for each chunk's first record)."""
    monkeypatch.setattr(evtx_source, "BATCH", batch)
    path = corpus / PANACHE
    spans = _headers(path.read_bytes())
    errors: list = []
    lists = list(read_evtx_batches(str(path), errors.append))
    assert errors == []
    assert [e for b in lists for e in b] == list(read_evtx(str(path), errors.append))
    per_chunk: Counter = Counter()
    for b in lists:
        assert 0 < len(b) <= batch
        slots = {next(i for i, (a, z) in enumerate(spans) if a <= e.origin[1] <= z) for e in b}
        assert len(slots) == 1, [e.origin[1] for e in b]
        per_chunk[slots.pop()] += len(b)
    want = sum(-(-n // batch) for n in per_chunk.values())
    assert len(lists) == want == (len(spans) if batch >= 256 else want)


def _handles(path: str) -> int:
    """How many descriptors of this process are open on ``path``."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.path.realpath(os.readlink(f"/proc/self/fd/{fd}")) == os.path.realpath(path)
        except OSError:
            continue
    return n


def test_read_evtx_close_ends_iteration_and_closes_the_file(corpus):
    """``read_evtx`` (compiled: the lists flattened by ``itertools.chain``) stops after
    ``close()`` like a generator: no further event, not even from the list under way, and the
    file is closed (the chunk tracker's descriptor and pyevtx-rs's)."""
    path = str(corpus / PANACHE)
    assert _handles(path) == 0
    it = read_evtx(path, lambda err: None)
    first = next(it)
    assert first.origin == (path, 1)
    assert _handles(path) == 2
    it.close()
    assert list(it) == []
    assert _handles(path) == 0


# ---- small files read whole ---------------------------------------------------------------------

SMALL = ("evtx/Yamato-Security__hayabusa-sample-evtx/YamatoSecurity/DefenseEvasion/"
         "T1027.004_ObfuscatedFilesOrInformationCompileAfterDelivery_Sysmon.evtx")


def _small_damage(data: bytes, kind: str) -> bytes:
    """Damage in the one chunk of ``SMALL`` (or its file header), as _damage does in PANACHE."""
    b = bytearray(data)
    recs = []
    pos = 4096 + 512
    while b[pos:pos + 4] == b"**\x00\x00":
        size = struct.unpack_from("<I", b, pos + 4)[0]
        recs.append((pos, size))
        pos += size
    if kind == "chunk_magic":
        b[4096:4104] = b"XXXXXXXX"
    elif kind == "head_crc":
        b[4096 + 124] ^= 0xFF
    elif kind == "data_crc":
        b[4096 + 52] ^= 0xFF
    elif kind == "record_size":
        b[recs[1][0] + 4:recs[1][0] + 8] = b"\xff\xff\x00\x00"
    elif kind == "record_magic":
        b[recs[1][0]:recs[1][0] + 4] = bytes(4)
    elif kind == "record_body":
        p, size = recs[2]
        b[p + 24:p + size - 4] = b"\xff" * (size - 28)
    elif kind == "blank_chunk":
        b[4096:] = bytes(len(b) - 4096)
    elif kind == "file_header":
        b[:8] = b"XXXXXXXX"
    elif kind == "truncated":
        del b[4096 + 30000:]
    elif kind == "too_short":
        del b[4000:]
    elif kind == "empty":
        del b[:]
    return bytes(b)


def test_small_file_read_whole_in_one_call(corpus, monkeypatch):
    """A file of at most WHOLE_FILE_MAX bytes (here one chunk): one open, one ``os.pread`` of
    the whole file, and pyevtx-rs parses those bytes (an ``io.BytesIO``, not the path: no
    second open of the file); the events and errors are those of the chunk-by-chunk reader."""
    path = corpus / SMALL
    size = path.stat().st_size
    assert 4096 + 65536 <= size <= evtx_source.WHOLE_FILE_MAX
    reads: Counter = Counter()
    real_pread, real_parser = os.pread, evtx_source.PyEvtxParser
    sources: list = []

    def counting(fd, n, offset):
        reads[(offset, n)] += 1
        return real_pread(fd, n, offset)

    def parser(source, *args, **kw):
        sources.append(type(source).__name__)
        return real_parser(source, *args, **kw)

    monkeypatch.setattr(os, "pread", counting)
    monkeypatch.setattr(evtx_source, "PyEvtxParser", parser)
    events, errors = _read(path)
    assert reads == Counter({(0, size): 1})
    assert sources == ["BytesIO"]
    assert errors == [] and len(events) == 9
    assert [e.origin for e in events] == [(str(path), n) for n in range(1, 10)]
    assert [e.record_id for e in events] == list(range(13252, 13261))
    monkeypatch.setattr(evtx_source, "WHOLE_FILE_MAX", 0)  # the chunk-by-chunk reader
    reads.clear()
    sources.clear()
    by_chunk = _read(path)
    assert sources == ["str"] and (0, 4096) in reads
    assert by_chunk == (events, errors)


@pytest.mark.parametrize("kind", [None, "chunk_magic", "head_crc", "data_crc", "record_size",
                                  "record_magic", "record_body", "blank_chunk", "file_header",
                                  "truncated", "too_short", "empty"])
def test_small_damaged_file_read_whole_same_as_by_chunk(corpus, tmp_path, kind):
    """A damaged small file read whole gives the same events and the same errors (offsets,
    severities, messages) as the chunk-by-chunk reader, and each damage is reported; the one
    read is completed when it comes back short."""
    path = _damaged(corpus, tmp_path, SMALL, _small_damage, kind)
    _, errors = _same_every_way(path, BY_CHUNK, SHORT_READS)
    assert (len(errors) == 0) == (kind is None), errors


@pytest.mark.parametrize("kind", [None, "truncated", "record_magic", "chunk_magic", "record_body",
                                  "blank_chunk", "file_header", "template", "two_spots"])
def test_big_damaged_file_read_whole_same_as_by_chunk(corpus, tmp_path, kind):
    """PANACHE (17 chunks, read chunk by chunk) read whole instead: the same events and errors
    (what the whole-file path does with a damaged chunk does not depend on the file's size)."""
    path = _damaged(corpus, tmp_path, PANACHE, _damage, kind)
    _, errors = _same_every_way(path, WHOLE)
    assert len(errors) == (0 if kind is None else DAMAGE[kind][0])


def test_small_file_closed_after_set_up(corpus):
    """A file read whole holds no descriptor while its events are read (pyevtx-rs reads the
    bytes); a directory given as a file still raises IsADirectoryError, as open() did."""
    path = str(corpus / SMALL)
    it = read_evtx(path, lambda err: None)
    assert next(it).origin == (path, 1)
    assert _handles(path) == 0
    assert len(list(it)) == 8
    with pytest.raises(IsADirectoryError):
        list(read_evtx(str(corpus / "evtx"), lambda err: None))
