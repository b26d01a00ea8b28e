"""The disk spool of the network outputs (sysmonx.sinks.spool): order, commit, rewind, the cap,
recovery after a restart and after a torn write, one process per spool."""

from __future__ import annotations

import os

import pytest

from sysmonx.core.errors import SinkError
from sysmonx.sinks.spool import Spool


def drain(sp: Spool, n: int = 1000) -> list[bytes]:
    out = []
    while True:
        got = sp.read(n)
        if not got:
            return out
        out += [r for _, r in got]


def test_order_commit_and_rewind(tmp_path):
    sp = Spool(tmp_path / "s", segment_bytes=100)  # many small segments
    recs = [b"record %d" % i for i in range(50)]
    for r in recs:
        assert sp.append(r)
    assert sp.pending_records == 50
    first = sp.read(10)
    assert [r for _, r in first] == recs[:10]
    sp.commit(first[4][0], 5)
    assert sp.pending_records == 45
    sp.rewind()  # the unconfirmed five come again, in order
    assert drain(sp) == recs[5:]
    assert len(list((tmp_path / "s").glob("*.seg"))) > 3
    sp.rewind()
    got = sp.read(1000)
    sp.commit(got[-1][0], len(got))
    assert sp.pending_records == 0 and sp.pending_bytes == 0
    assert len(list((tmp_path / "s").glob("*.seg"))) == 1  # the segments before were deleted
    sp.close()


def test_restart_resumes_at_the_commit_point(tmp_path):
    sp = Spool(tmp_path / "s", segment_bytes=64)
    for i in range(20):
        sp.append(b"r%d" % i)
    got = sp.read(7)
    sp.commit(got[-1][0], 7)
    sp.read(5)  # read but never confirmed: must come again
    sp.close()
    sp = Spool(tmp_path / "s", segment_bytes=64)
    assert sp.recovered == 13 and sp.pending_records == 13
    sp.append(b"new")
    assert drain(sp) == [b"r%d" % i for i in range(7, 20)] + [b"new"]
    sp.close()


def test_torn_tail_is_cut_and_appends_go_on(tmp_path):
    sp = Spool(tmp_path / "s")
    for i in range(3):
        sp.append(b"x%d" % i)
    sp.close()
    seg = sorted((tmp_path / "s").glob("*.seg"))[-1]
    with open(seg, "ab") as f:
        f.write(b"\x00\x00\x01\x00garbage")  # a record cut by a crash
    sp = Spool(tmp_path / "s")
    assert sp.recovered == 3
    sp.append(b"after")
    assert drain(sp) == [b"x0", b"x1", b"x2", b"after"]
    sp.close()


def test_cap_refuses_and_counts_without_evicting(tmp_path):
    sp = Spool(tmp_path / "s", max_bytes=1000)
    accepted = sum(sp.append(b"y" * 92) for _ in range(30))  # 100 bytes framed each
    assert accepted == 10 and sp.refused == 20
    got = sp.read(100)
    sp.commit(got[-1][0], len(got))
    assert sp.append(b"z")  # room again
    sp.close()


def test_one_process_per_spool(tmp_path):
    sp = Spool(tmp_path / "s")
    with pytest.raises(SinkError, match="in use"):
        Spool(tmp_path / "s")
    sp.close()
    Spool(tmp_path / "s").close()


def test_unusable_directory_is_a_clear_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(SinkError, match="spool"):
        Spool(f / "sub")
    assert os.path.exists(f)
