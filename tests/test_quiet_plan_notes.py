"""The filter plan cache's notes are replay's notes: ``-q`` counts them instead of printing
them, also with ``--jobs`` (the plans are stored once, by the parent), and a note is said once
per engine, not at the read and again at the store. On the code before ``set_note_handler``
they went straight to stderr under ``-q``, twice each.
"""

from __future__ import annotations

import shutil

import pytest

from sysmonx.cli.common import builtin_sample_path
from sysmonx.cli.replay import cmd_replay
from sysmonx.filtering import engine as engine_mod
from sysmonx.pipeline import parallel

NOTE = "filter plan cache not used: {d} is writable by other users (mode 777)"


@pytest.fixture
def unsafe_plan_dir(tmp_path, monkeypatch):
    """A cache directory whose filter plan folder any user may write (the plan cache notes it
    and is not used), and a config that has had its first run (so the plan cache is opened)."""
    monkeypatch.setenv("SYSMONX_CACHE_DIR", str(tmp_path / "cache"))
    cfg = tmp_path / "c.xml"
    shutil.copy(builtin_sample_path().parent / "default-config.xml", cfg)
    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(3):
        shutil.copy(builtin_sample_path(), logs / f"s{i}.xml")
    assert cmd_replay([str(logs), "-c", str(cfg), "--no-output", "-q"]) == 0  # first run
    plans = tmp_path / "cache" / "filter"
    shutil.rmtree(plans, ignore_errors=True)
    plans.mkdir(mode=0o700)
    plans.chmod(0o777)
    return cfg, logs, plans


@pytest.mark.parametrize("jobs", [[], ["--jobs", "2", "--keep-duplicates"]])
def test_quiet_counts_the_plan_cache_notes(unsafe_plan_dir, capfd, jobs):
    cfg, logs, plans = unsafe_plan_dir
    capfd.readouterr()
    assert cmd_replay([str(logs), "-c", str(cfg), "--no-output", "-q", *jobs]) == 0
    err = capfd.readouterr().err
    # the config line and the plan cache's note, counted; nothing else on stderr
    assert err.splitlines() == ["replay: not shown (-q): 2 notes; run without -q to see them"]


@pytest.mark.parametrize("jobs", [[], ["--jobs", "2", "--keep-duplicates"]])
def test_a_plan_cache_note_is_said_once(unsafe_plan_dir, capfd, jobs):
    cfg, logs, plans = unsafe_plan_dir
    capfd.readouterr()
    assert cmd_replay([str(logs), "-c", str(cfg), "--no-output", *jobs]) == 0
    lines = capfd.readouterr().err.splitlines()
    assert lines.count("note: " + NOTE.format(d=plans)) == 1
    assert not [x for x in lines if "plan cache" in x and not x.startswith("note: ")]


def test_the_handler_is_restored_after_replay(unsafe_plan_dir):
    before = engine_mod._NOTE_HANDLER
    cfg, logs, _ = unsafe_plan_dir
    assert cmd_replay([str(logs), "-c", str(cfg), "--no-output", "-q"]) == 0
    assert engine_mod._NOTE_HANDLER is before


def test_a_workers_note_goes_to_its_tasks_lines(tmp_path, capfd):
    # a forked worker inherits the parent's handler, whose counts would stay in the worker
    spool = parallel._ErrorSpool(str(tmp_path), 0)
    parallel._WORKER["spool"] = spool
    try:
        parallel._worker_note("filter plan cache: cannot store: disk full")
    finally:
        parallel._WORKER["spool"] = None
        spool.close()
    assert spool.count == 1
    assert open(spool.path).read() == '["note", "filter plan cache: cannot store: disk full"]\n'
    parallel._worker_note("outside a task")
    assert capfd.readouterr().err == "sysmonx: note: outside a task\n"
