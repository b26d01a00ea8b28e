"""``sysmonx replay`` runs with the cyclic collector's first threshold raised
(:func:`sysmonx.pipeline.replay.replay_collector`): a replay's young collections find no
garbage (reference counting frees what it allocates), so fewer of them cost nothing but time;
the previous thresholds come back at the end, whatever happens."""

from __future__ import annotations

import gc

import pytest

from sysmonx.cli import replay as cli_replay
from sysmonx.pipeline.replay import REPLAY_GC_THRESHOLD0, replay_collector


@pytest.fixture
def thresholds():
    old = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*old)


def test_raised_within_and_restored_after(thresholds):
    with replay_collector():
        assert gc.get_threshold() == (REPLAY_GC_THRESHOLD0, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)
    with pytest.raises(RuntimeError):
        with replay_collector(5000):
            assert gc.get_threshold() == (5000, 10, 10)
            raise RuntimeError("boom")
    assert gc.get_threshold() == (700, 10, 10)
    gc.set_threshold(200_000, 10, 10)  # never lowered
    with replay_collector():
        assert gc.get_threshold() == (200_000, 10, 10)
    assert gc.get_threshold() == (200_000, 10, 10)


def test_the_replay_command_runs_under_it(thresholds, monkeypatch, tmp_path):
    seen: list = []

    def body(args, console, say, held):
        seen.append(gc.get_threshold())
        raise KeyError("stop")
    monkeypatch.setattr(cli_replay, "_replay", body)
    with pytest.raises(KeyError):
        cli_replay.cmd_replay([str(tmp_path)])
    assert seen == [(REPLAY_GC_THRESHOLD0, 10, 10)]
    assert gc.get_threshold() == (700, 10, 10)


def test_replaying_records_leaves_no_cyclic_garbage(corpus):
    """What the raised threshold relies on: replaying the corpus EVTX with a config (its
    deciders compiled on the first events, the memo tables filled, every record filtered and
    written) leaves nothing for the collector: every object the records make is freed by
    reference counting. (The replayer's own structure is cyclic; it lives to the end.)"""
    import io

    from sysmonx.config import load_config
    from sysmonx.pipeline import Replayer, ReplayOptions, make_writer

    class Null(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b) -> int:  # type: ignore[override]
            return len(b)

    files = sorted((corpus / "evtx").rglob("*.evtx"))
    cfg = load_config(corpus / "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml",
                      cache=False)
    r = Replayer(ReplayOptions(config=cfg, keep_duplicates=True), make_writer("jsonl", Null()))
    gc.collect()
    gc.disable()
    try:
        for f in files:
            r.run_file(str(f))
        assert r.stats.records > 1000
        assert gc.collect() == 0
    finally:
        gc.enable()
