"""ReadAhead (sources/recorded.py): as each input file is begun, the kernel is told to read it
and the files after it (posix_fadvise WILLNEED) up to a bound of bytes ahead; FIFOs, missing
paths and files read out of order are handled without waiting, failing or advising too much.
Replayer.read_ahead wires it into a replay (the command line tells it its files)."""

from __future__ import annotations

import os
import threading

import pytest

from sysmonx.sources import recorded
from sysmonx.sources.recorded import ReadAhead

pytestmark = pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise")


@pytest.fixture
def advised(monkeypatch):
    """The (file name, offset, length) of every WILLNEED advice given, in order."""
    calls: list[tuple[str, int, int]] = []
    real = os.posix_fadvise

    def record(fd: int, offset: int, length: int, advice: int) -> None:
        assert advice == os.POSIX_FADV_WILLNEED
        calls.append((os.path.basename(os.readlink(f"/proc/self/fd/{fd}")), offset, length))
        real(fd, offset, length, advice)

    monkeypatch.setattr(recorded.os, "posix_fadvise", record)
    return calls


def _files(tmp_path, sizes: dict[str, int]) -> list[str]:
    out = []
    for name, size in sizes.items():
        p = tmp_path / name
        p.write_bytes(b"x" * size)
        out.append(str(p))
    return out


def test_advises_ahead_up_to_the_limit_then_as_files_are_begun(tmp_path, advised):
    paths = _files(tmp_path, {"a": 100, "b": 200, "c": 300, "d": 400, "e": 0})
    ra = ReadAhead(paths, limit=450)
    ra.before(paths[0])
    # a (being read) whole; then b and c (200 + 300 >= 450: c's first 250 bytes)
    assert advised == [("a", 0, 100), ("b", 0, 200), ("c", 0, 250)]
    advised.clear()
    ra.before(paths[1])  # b begun: 250 bytes of c ahead, room for 200 of d
    assert advised == [("d", 0, 200)]
    advised.clear()
    ra.before(paths[2])  # c begun: 200 ahead (d), room for 250: d was advised, e is empty
    assert advised == []
    ra.before(paths[3])
    ra.before(paths[4])
    assert advised == []


def test_every_file_advised_once_when_all_fit(tmp_path, advised):
    paths = _files(tmp_path, {f"f{i}": 1000 + i for i in range(6)})
    ra = ReadAhead(paths)
    for p in paths:
        ra.before(p)
    assert advised == [(f"f{i}", 0, 1000 + i) for i in range(6)]


def test_large_files_get_their_first_part(tmp_path, advised):
    """The file begun gets up to ``limit`` bytes, the next ones up to ``limit`` together;
    a file begun that was not advised (no room left earlier) is advised then."""
    paths = _files(tmp_path, {"a": 500, "b": 500, "c": 500, "d": 500})
    ra = ReadAhead(paths, limit=300)
    ra.before(paths[0])
    assert advised == [("a", 0, 300), ("b", 0, 300)]
    advised.clear()
    ra.before(paths[1])  # b advised already: room for c
    assert advised == [("c", 0, 300)]
    advised.clear()
    ra = ReadAhead(paths, limit=300)
    ra.before(paths[0])
    advised.clear()
    ra.before(paths[2])  # out of order, beyond what was advised: c, then ahead of it d
    assert advised == [("c", 0, 300), ("d", 0, 300)]


def test_out_of_order_missing_and_repeated_paths(tmp_path, advised):
    paths = _files(tmp_path, {"a": 10, "b": 20})
    ra = ReadAhead([paths[0], str(tmp_path / "gone"), paths[1], paths[0]])
    ra.before(paths[1])  # not the expected one: from its place on (b, then a again)
    assert advised == [("b", 0, 20), ("a", 0, 10)]
    advised.clear()
    ra.before(paths[0])  # its place ahead (the last one) was advised: nothing more
    assert advised == []
    ra.before(paths[0])  # past the end: back to its first place, the list from its start
    assert advised == [("a", 0, 10), ("b", 0, 20), ("a", 0, 10)]
    advised.clear()
    ra.before(str(tmp_path / "other"))  # not in the list: it alone (here: missing, nothing)
    ra.before(paths[1])  # and the order goes on where it was
    assert advised == []


def test_a_file_skipped_resynchronises_the_look_ahead(tmp_path, advised):
    """Seen in review: after one file was begun out of order (one of the list skipped), every
    later file was advised alone as it was begun, none ahead, for the rest of the replay (here:
    f2 alone, then f6 and f7 each as it was begun). Now the look-ahead goes on from the file
    begun, within the limit: the later files are advised before they are begun."""
    paths = _files(tmp_path, {f"f{i}": 100 for i in range(8)})
    ra = ReadAhead(paths, limit=250)
    steps = []
    for i in (0, 2, 3, 4, 5, 6, 7):  # f1 skipped
        advised.clear()
        ra.before(paths[i])
        steps.append(list(advised))
    assert steps == [
        [("f0", 0, 100), ("f1", 0, 100), ("f2", 0, 100), ("f3", 0, 50)],
        [("f4", 0, 100), ("f5", 0, 100)],  # f1 and f2 leave the count: 50 of f3 ahead
        [("f6", 0, 50)],                  # f3 begun: 200 ahead (f4, f5), room for 50
        [("f7", 0, 100)],
        [], [], []]


def test_a_jump_beyond_the_window_and_back(tmp_path, advised):
    paths = _files(tmp_path, {f"f{i}": 100 for i in range(6)})
    ra = ReadAhead(paths, limit=150)
    ra.before(paths[0])
    assert advised == [("f0", 0, 100), ("f1", 0, 100), ("f2", 0, 50)]
    advised.clear()
    ra.before(paths[4])  # beyond the window: from f4 on, f5 ahead
    assert advised == [("f4", 0, 100), ("f5", 0, 100)]
    advised.clear()
    ra.before(paths[1])  # back (no f1 after f4): from f1 on, f2 and half of f3 ahead
    assert advised == [("f1", 0, 100), ("f2", 0, 100), ("f3", 0, 50)]
    advised.clear()
    ra.before(paths[2])  # in order again
    assert advised == [("f4", 0, 100)]


def test_a_fifo_is_neither_opened_nor_waited_for(tmp_path, advised):
    """Opening a FIFO for reading waits for a writer (or, non-blocking and closed at once,
    cuts it off): a FIFO in the list is told by stat and left alone."""
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    (plain,) = _files(tmp_path, {"plain": 50})
    done = threading.Event()

    def run() -> None:
        ra = ReadAhead([fifo, plain, "-"])
        ra.before(fifo)
        ra.before(plain)
        ra.before("-")
        done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert done.wait(10), "ReadAhead waited on a FIFO"
    assert advised == [("plain", 0, 50)]


def test_replayer_advises_the_files_it_is_told(corpus, advised):
    from sysmonx.pipeline import Replayer, ReplayOptions
    ev = sorted((corpus / "evtx" / "sbousseaden__EVTX-ATTACK-SAMPLES" / "AutomatedTestingTools")
                .rglob("*.evtx"))
    assert len(ev) == 3
    paths = [str(p) for p in ev]
    r = Replayer(ReplayOptions(), None)
    r.read_ahead(paths)
    for p in paths:
        r.run_file(p)
    assert [a[0] for a in advised] == [p.name for p in ev]
    assert [a[2] for a in advised] == [p.stat().st_size for p in ev]
    assert r.stats.files == 3 and r.stats.records > 0
