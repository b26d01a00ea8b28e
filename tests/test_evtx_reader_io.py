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


@pytest.mark.parametrize("kind", [None, "truncated", "record_magic", "chunk_magic",
                                  "record_body", "blank_chunk", "file_header"])
def test_short_reads_are_completed(corpus, tmp_path, monkeypatch, kind):
    """``os.pread`` returning at most 1,000 bytes per call: the same events and errors."""
    data = (corpus / PANACHE).read_bytes()
    path = tmp_path / "f.evtx"
    path.write_bytes(data if kind is None else _damage(data, kind))
    want = _read(path)
    assert len(want[1]) == (0 if kind is None else DAMAGE[kind][0])
    _short(monkeypatch, 1000)
    assert _read(path) == want


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


def test_read_evtx_close_ends_iteration_and_closes_the_file(corpus):
    """``read_evtx`` (compiled: the lists flattened by ``itertools.chain``) stops after
    ``close()`` like a generator: no further event, not even from the list under way, and the
    file is closed (the chunk tracker's descriptor and pyevtx-rs's)."""
    path = str(corpus / PANACHE)

    def handles() -> int:
        n = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                n += os.path.realpath(os.readlink(f"/proc/self/fd/{fd}")) == \
                    os.path.realpath(path)
            except OSError:
                continue
        return n

    assert handles() == 0
    it = read_evtx(path, lambda err: None)
    first = next(it)
    assert first.origin == (path, 1)
    assert handles() == 2
    it.close()
    assert list(it) == []
    assert handles() == 0
