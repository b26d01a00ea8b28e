"""A small EVTX file is opened and read once by the replay's source (``open_source``): the
sniff reads it whole (:func:`sysmonx.sources.detect._sniff`) and the EVTX reader parses
those bytes; the events and errors are those of the reader opening the file itself."""

from __future__ import annotations

import os
from collections import Counter

import pytest

from sysmonx.sources import detect
from sysmonx.sources import evtx as evtx_source
from sysmonx.sources.detect import open_source

from test_evtx_reader_io import SMALL, _small_damage
from test_sources import PANACHE


def _through_source(path, batches: bool) -> tuple:
    errors: list = []
    got = open_source(str(path), errors.append, batches=batches)
    events = [e for b in got for e in b] if batches else list(got)
    return ([(e.origin, e.record_id, e.event_id, e.data) for e in events],
            [(e.offset, e.offset_kind, e.severity, e.message) for e in errors])


@pytest.mark.parametrize("batches", [False, True])
def test_small_evtx_is_opened_and_read_once(corpus, monkeypatch, batches):
    path = corpus / SMALL
    size = path.stat().st_size
    assert size <= evtx_source.WHOLE_FILE_MAX
    opens: Counter = Counter()
    preads: Counter = Counter()
    real_open, real_pread = os.open, os.pread

    def counting_open(p, *a, **k):
        opens[str(p)] += 1
        return real_open(p, *a, **k)

    def counting_pread(fd, n, offset):
        preads[(offset, n)] += 1
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "open", counting_open)
    monkeypatch.setattr(os, "pread", counting_pread)
    once = _through_source(path, batches)
    assert opens == Counter({str(path): 1}) and preads == Counter({(0, size): 1})
    assert len(once[0]) == 9 and once[1] == []
    # the reader opening and reading the file itself: the same events and errors
    monkeypatch.setattr(evtx_source, "WHOLE_FILE_MAX", 0)
    opens.clear()
    assert _through_source(path, batches) == once
    assert opens[str(path)] == 2  # the sniff, then the reader


@pytest.mark.parametrize("kind", [None, "record_magic", "head_crc", "truncated", "too_short"])
def test_damaged_small_evtx_read_by_the_sniff_reports_alike(corpus, tmp_path, monkeypatch,
                                                           kind):
    data = (corpus / SMALL).read_bytes()
    path = tmp_path / "f.evtx"
    path.write_bytes(data if kind is None else _small_damage(data, kind))
    got = _through_source(path, True)
    seen: list = []
    real = detect._sniff

    def no_whole(p):  # the sniff's head only: the reader reads the file itself
        seen.append(p)
        return real(p)[0], None
    monkeypatch.setattr(detect, "_sniff", no_whole)
    assert _through_source(path, True) == got and seen == [str(path)]


def test_big_evtx_and_other_formats_are_not_read_whole(corpus, tmp_path):
    head, whole = detect._sniff(str(corpus / PANACHE))
    assert whole is None and len(head) == 4096 and head.startswith(b"ElfFile\0")
    small = corpus / SMALL
    head, whole = detect._sniff(str(small))
    assert whole == small.read_bytes() and head == whole[:4096]
    text = tmp_path / "x.jsonl"
    text.write_bytes(b'{"a": 1}\n' * 10_000)
    head, whole = detect._sniff(str(text))
    assert whole is None and head == text.read_bytes()[:detect.SNIFF_BYTES]
