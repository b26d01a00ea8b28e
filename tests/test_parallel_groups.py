"""``--jobs`` workers replay a group of files on one Replayer (not one per file) and still
report each file's own counters; the heap they inherit is frozen for the collector."""

from __future__ import annotations

import gc
import io
import shutil
from pathlib import Path

import pytest

from sysmonx.config import load_config
from sysmonx.filtering import FilterEngine
from sysmonx.pipeline import ReplayOptions, Replayer, make_writer, replay_parallel
from sysmonx.pipeline import parallel

SOS = "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml"


def _files(corpus: Path, tmp_path: Path) -> list[str]:
    files = sorted(str(p) for p in (corpus / "evtx").rglob("*.evtx"))
    # a damaged file among them (its second chunk overwritten): its error lines and counters
    # are its own
    data = bytearray(Path(max(files, key=lambda f: Path(f).stat().st_size)).read_bytes())
    assert len(data) > 4096 + 2 * 65536
    data[4096 + 65536 + 600:4096 + 65536 + 9000] = b"\xa5" * 8400
    bad = tmp_path / "damaged.evtx"
    bad.write_bytes(bytes(data))
    return files[:5] + [str(bad)] + files[5:]


def test_a_group_is_one_replayer_and_each_file_keeps_its_own_counters(corpus, tmp_path,
                                                                       monkeypatch):
    if not (corpus / SOS).is_file():
        pytest.skip(f"corpus config missing: {SOS}")
    files = _files(corpus, tmp_path)
    cfg = load_config(corpus / SOS)
    options = ReplayOptions(config=cfg, keep_duplicates=True)
    engine = FilterEngine(cfg)
    built = []

    class Counted(Replayer):
        def __init__(self, *a, **k):
            built.append(1)
            super().__init__(*a, **k)

    monkeypatch.setattr(parallel, "Replayer", Counted)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setattr(parallel, "_WORKER", dict(options=options, fmt="jsonl", tmpdir=str(work),
                                                  engine=engine, writer_options={},
                                                  detection=None))
    out, err, results, marks = parallel._replay_group((0, files))
    assert len(built) == 1  # was one per file
    assert marks is None and [r[0] for r in results] == files
    want = io.BytesIO()
    w = make_writer("jsonl", want)
    w.close_stream = False
    errors_total = 0
    for path, stats, n_errors in results:
        lines: list[object] = []
        alone = Replayer(options, w, on_error=lines.append, engine=engine)
        alone.run_file(path)
        assert stats == alone.stats, path  # every counter, per EventID too
        assert n_errors == len(lines), path
        errors_total += n_errors
    w.close()
    assert errors_total >= 1  # the cut file's
    assert sum(r[1].records for r in results) > 1000
    assert sum(r[1].excluded.total() for r in results) > 0
    assert Path(out).read_bytes() == want.getvalue()
    assert err is not None and len(Path(err).read_text().splitlines()) == errors_total


def test_difference_of_snapshots_is_what_was_counted_in_between():
    st = parallel.ReplayStats(files=2, records=10, errors=1)
    st.included[1] = 4
    st.excluded[3] = 2
    st.lost_files.append("a")
    before = parallel._snapshot(st)
    st.files += 1
    st.records += 5
    st.included[1] += 2
    st.included[7] = 1
    st.repaired["x"] = 3
    st.lost_files.append("b")
    d = parallel._difference(st, before)
    assert d == parallel.ReplayStats(files=1, records=5, included={1: 2, 7: 1},
                                     repaired={"x": 3}, lost_files=["b"])
    assert 3 not in d.excluded  # a count that did not grow is absent, as in a fresh Replayer


_FREEZE: dict[str, object] = {}


def _recording_group(task):
    """A worker's group, and how many objects the collector had frozen in that worker."""
    Path(str(_FREEZE["dir"]), f"{task[0]}").write_text(str(gc.get_freeze_count()))
    return _FREEZE["real"](task)  # type: ignore[operator]


def test_workers_inherit_a_frozen_heap_and_the_parent_unfreezes_it(corpus, tmp_path,
                                                                   monkeypatch):
    files = sorted(str(p) for p in (corpus / "evtx").rglob("*.evtx"))[:6]
    seen = tmp_path / "seen"
    seen.mkdir()
    _FREEZE.update(dir=seen, real=parallel._replay_group)
    monkeypatch.setattr(parallel, "_replay_group", _recording_group)
    frozen = gc.get_freeze_count()  # an earlier test's Sigma rules (DetectionStage freezes)
    gc.unfreeze()
    try:
        replay_parallel(files, ReplayOptions(keep_duplicates=True), "jsonl", io.BytesIO(), 2,
                        lambda line: None)
        thawed = gc.get_freeze_count()
        gc.freeze()
        replay_parallel(files[:2], ReplayOptions(keep_duplicates=True), "jsonl", io.BytesIO(),
                        2, lambda line: None)
        kept = gc.get_freeze_count()
    finally:
        _FREEZE.clear()
        if not frozen:
            gc.unfreeze()
    counts = [int(p.read_text()) for p in seen.iterdir()]
    assert counts and min(counts) > 10_000  # the parent's modules, engine, ... (was 0)
    assert thawed == 0  # this process collects them again
    assert kept > 10_000  # what the caller had frozen stays frozen
    shutil.rmtree(seen)


def test_a_part_is_copied_whole_through_one_reused_buffer(tmp_path):
    data = bytes(range(256)) * 9000 + b"tail"  # 2.2 buffers of 1 MB: two full reads, a short one
    part = tmp_path / "part"
    part.write_bytes(data)
    out = io.BytesIO()
    buffer = bytearray(1 << 20)
    parallel._copy_part(str(part), out, buffer)
    parallel._copy_part(str(part), out, buffer)  # the buffer's old bytes never leak into a copy
    assert out.getvalue() == data + data
