"""The loop's raw path (``_speedups.RawPlan`` through ``evtx_batch``): a record that every stage
passes alone is written as its JSON line without becoming an Event; every other record becomes
its Event at that point and goes through all the stages, in order.

Each test runs the same replay twice in one process, with the raw path and without it (one
stage's ``raw_step`` answering ``None`` turns it off, which is the loop of before), and holds
them to the same bytes, the same counters and the same error lines; and checks that the raw path
was taken (``Pipeline.raw_records``) and that records needing Python went the Event way.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import pytest
from builders import RecordingSink

from sysmonx.core import native
from sysmonx.core.errors import SinkError
from sysmonx.pipeline.replay import Replayer, ReplayOptions, make_writer
from sysmonx.stages.gate import SysmonGate

sp = native.speedups
needs_ext = pytest.mark.skipif(sp is None, reason=f"C extension not in use: "
                               f"{native.implementation()}")

PANACHE = ("evtx/sbousseaden__EVTX-ATTACK-SAMPLES/AutomatedTestingTools/"
           "PanacheSysmon_vs_AtomicRedTeam01.evtx")




def _replay(files: list[str], raw: bool, monkeypatch, fail_at: int = 0,
            seen: Any = None, **options: Any) -> tuple:
    """``seen``: a list that gets the record number of every Event the SysmonGate's Python
    method sees (the records that did not take the raw path)."""
    with monkeypatch.context() as m:
        if not raw:
            m.setattr(SysmonGate, "raw_step", lambda self: None)
        if seen is not None:
            python_process = SysmonGate.process

            def process(self: SysmonGate, item: Any, emit: Any) -> bool:
                seen.append(item.record_id)
                return python_process(self, item, emit)
            m.setattr(SysmonGate, "process", process)
        sink = RecordingSink(fail_at)
        errors: list[str] = []
        r = Replayer(ReplayOptions(**options), make_writer("jsonl", sink),
                     on_error=lambda e: errors.append(str(e)))
        raised = None
        try:
            for f in files:
                r.run_file(f)
            r.finish()
        except SinkError as exc:
            raised = str(exc)
        st = r.stats
        slot = r.fanout.slots[0]
        result = (b"".join(sink.parts), errors, raised, slot.sent, st.records, st.sysmon,
                  st.non_sysmon, dict(st.included), list(st.included), st.duplicates)
        return result, r.pipeline.raw_records


def _corpus_files(corpus: Path) -> list[str]:
    return sorted(glob.glob(str(corpus / "evtx" / "**" / "*.evtx"), recursive=True))


@needs_ext
@pytest.mark.parametrize("options", [{}, {"keep_duplicates": True},
                                     {"keep_duplicates": True, "non_sysmon": "pass"}],
                         ids=["defaults", "keep-duplicates", "non-sysmon-pass"])
def test_corpus_same_with_and_without_raw_path(corpus, monkeypatch, options):
    files = _corpus_files(corpus)
    new, taken = _replay(files, True, monkeypatch, **options)
    old, none = _replay(files, False, monkeypatch, **options)
    assert none == 0
    assert new == old
    out = new[0]
    assert out.count(b"\n") == 1755 if options.get("non_sysmon") != "pass" else 1766
    # the raw path wrote most records; the others (other providers, a new duplicate-check
    # block, the clock's odd cases) went the Event way. Each chunk's first record goes the
    # raw way too (the chunk change is Python's, the record then C's): with duplicates kept,
    # every Sysmon record (1,755) is written raw, the 11 others' lines the Event way
    assert taken == (1678 if not options.get("keep_duplicates") else 1755), taken


@needs_ext
def test_records_needing_python_fall_back_in_order(corpus, monkeypatch):
    """Replaying the same file twice (duplicates dropped): the second pass's records are all
    duplicates, which only the Python duplicate check decides, so every one of them reaches the
    stages as an Event, in file order, and is dropped; the first pass goes (mostly) raw."""
    f = str(corpus / PANACHE)
    seen: list[int] = []
    new, taken = _replay([f, f], True, monkeypatch, seen=seen)
    old, _ = _replay([f, f], False, monkeypatch)
    assert new == old
    n = new[0].count(b"\n")
    assert n == 565 and new[9] == 565  # one pass written, one pass dropped as duplicates
    assert 0 < taken < n
    # the gate's Python method saw the first pass's Event-way records; none of the second
    # pass (all dropped before it)
    assert len(seen) == n - taken
    lines = new[0].split(b"\n")[:-1]
    import json
    order = [json.loads(x)["System"]["EventRecordID"] for x in lines]
    assert order == sorted(order)  # the file's order, whichever way each record went
    assert seen == sorted(seen) and set(seen) <= set(order)


@needs_ext
@pytest.mark.parametrize("fail_at", [1, 40, 400])
def test_failing_output_same_with_and_without_raw_path(corpus, monkeypatch, fail_at):
    files = _corpus_files(corpus)[:20]
    new, taken = _replay(files, True, monkeypatch, fail_at=fail_at, keep_duplicates=True)
    old, _ = _replay(files, False, monkeypatch, fail_at=fail_at, keep_duplicates=True)
    assert new[2] is not None and "No space left" in new[2]
    assert new[3] == fail_at - 1
    assert new == old
    # the first write is the first file's first record, which (its chunk's first record: the
    # chunk change goes through Python, the record then through C) is a raw write too: the
    # raw path stops at the failure, its one record taken; later failures are raw writes
    assert taken == 1 if fail_at == 1 else taken > fail_at - 10


CONFIGS = {"sos": "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml",
           "modular": "configs/olafhartong__sysmon-modular/sysmonconfig.xml"}


@needs_ext
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_configs_same_with_and_without_raw_path(corpus, monkeypatch, config):
    """With a config the filter's compiled deciders decide the records from their fields:
    excluded records are counted and not written, included ones get their RuleName in the line;
    the same bytes, counters (included, excluded, in the same key order) as the Event way."""
    from sysmonx.config import load_config
    cfg = load_config(str(corpus / CONFIGS[config]))
    files = _corpus_files(corpus)
    new, taken = _replay(files, True, monkeypatch, config=cfg)
    old, none = _replay(files, False, monkeypatch, config=cfg)
    assert none == 0
    assert new == old
    lines = new[0].count(b"\n")
    assert lines == {"sos": 869, "modular": 536}[config]
    # most records (written or excluded) took the raw path
    assert taken > 1500, taken
    assert b'"RuleName":"technique_id=' in new[0] or config == "sos"


@needs_ext
def test_no_raw_path_with_another_stage(corpus, monkeypatch):
    """A stage without a compiled step (here the time window of --from) leaves every record
    an Event."""
    f = str(corpus / PANACHE)
    new, taken = _replay([f], True, monkeypatch, time_from="2000-01-01T00:00:00Z")
    old, _ = _replay([f], False, monkeypatch, time_from="2000-01-01T00:00:00Z")
    assert taken == 0
    assert new == old and new[0].count(b"\n") == 565


@needs_ext
def test_raw_plan_refuses_other_sinks_and_steps():
    from sysmonx.sinks.jsonl import JsonlWriter
    w = JsonlWriter(RecordingSink(), close_stream=False)
    with pytest.raises(TypeError):
        sp.RawPlan((), object(), print, None)
    with pytest.raises(ValueError):
        sp.RawPlan((("nope", None),), w.write, print, None)
    with pytest.raises(ValueError):
        sp.RawPlan((("gate", None), ("gate", None)), w.write, print, None)
    plan = sp.RawPlan((("gate", None),), w.write, print, None)
    assert plan.raw == 0 and plan.sent == 0 and plan.take_error() is None
    with pytest.raises(ValueError, match="no gate step"):
        sp.RawPlan((("dedup", {}),), w.write, print, None)


@needs_ext
def test_cli_takes_the_raw_path_for_its_first_file(corpus, tmp_path):
    """``sysmonx replay ONE.evtx -f jsonl -o FILE`` in a fresh process (nothing imported before
    the CLI imports it): the raw path is taken for the first (here the only) file, and the
    count is shown with SYSMONX_DEBUG=1; the output is the pure-Python path's."""
    import os
    import subprocess
    import sys
    f = str(corpus / PANACHE)
    main = "from sysmonx.cli import main; main()"
    outs = {}
    for pure in ("", "1"):
        env = dict(os.environ, SYSMONX_DEBUG="1", SYSMONX_PURE_PYTHON=pure)
        out = tmp_path / f"out{pure}.jsonl"
        proc = subprocess.run([sys.executable, "-c", main, "replay", f, "-f", "jsonl",
                               "--no-progress", "-o", str(out)], env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        outs[pure] = (out.read_bytes(), proc.stderr.splitlines()[-1])
    assert outs[""][0] == outs["1"][0] and outs[""][0].count(b"\n") == 565
    assert outs["1"][1] == "debug: raw path: 0 of 565 records without an Event"
    # every record but the 10 that need Python (new duplicate-check blocks, ...) went the raw
    # way, each chunk's first record too (541 while those came back through Python)
    assert outs[""][1] == "debug: raw path: 555 of 565 records without an Event"


@needs_ext
def test_event_way_runs_do_not_end_a_list_each(corpus, monkeypatch):
    """The second pass of a file (every record a duplicate, which the Python duplicate check
    decides) comes in lists of many records, as without the raw path: after a run of records
    the plan did not take, the rest of a list is made the Event way (no list per record)."""
    from sysmonx.pipeline import loop
    f = str(corpus / PANACHE)
    sizes: list[int] = []
    run_batches = loop.Pipeline._run_batches

    def counting(self: Any, batches: Any, *args: Any) -> Any:
        def each() -> Any:
            for b in batches:
                sizes.append(len(b))
                yield b
        return run_batches(self, each(), *args)
    monkeypatch.setattr(loop.Pipeline, "_run_batches", counting)
    new, taken = _replay([f, f], True, monkeypatch)
    # lists of the second pass: those after the first pass's 565 records
    done, second = 0, []
    for n in sizes:
        if done >= 565:
            second.append(n)
        done += n
    assert sum(second) == 565
    assert len(second) < 60, second  # one list per record before (565)
    old, _ = _replay([f, f], False, monkeypatch)
    assert new == old


_ONE_RULE = """<Sysmon schemaversion="4.90"><EventFiltering>
<RuleGroup name="" groupRelation="or"><ProcessCreate onmatch="include">
<Image condition="end with">\\cmd.exe</Image></ProcessCreate></RuleGroup>
</EventFiltering></Sysmon>"""


@needs_ext
def test_eventids_without_rules_are_decided_raw(corpus, monkeypatch, tmp_path):
    """A config with rules for ProcessCreate only: the other EventIDs' deciders are constants
    (the EventID's default), which the raw path reads; only the first record of each EventID
    (whose decider the Python method makes) and the few of before go the Event way."""
    from sysmonx.config import load_config
    p = tmp_path / "one.xml"
    p.write_text(_ONE_RULE)
    cfg = load_config(str(p))
    f = str(corpus / PANACHE)
    new, taken = _replay([f], True, monkeypatch, config=cfg)
    old, none = _replay([f], False, monkeypatch, config=cfg)
    assert none == 0 and new == old
    assert sum(new[7].values()) > 0 and new[0].count(b"\n") < 565
    assert taken > 520, taken  # 487 when a constant decision needed its Event


@needs_ext
@pytest.mark.parametrize("raw", [True, False], ids=["raw", "event"])
def test_string_record_id_is_no_id(corpus, monkeypatch, raw):
    """A record whose EventRecordID is a JSON string (a crafted EVTX) is taken as a record
    without an id: not checked for repeats, written as it is, one warning for the file; the
    replay goes on (it stopped with a TypeError from the duplicate check before)."""
    import re

    import sysmonx.sources.evtx as sx
    real = sx.PyEvtxParser
    odd = {100, 101, 300}

    class Parser:
        def __init__(self, *a: Any, **k: Any) -> None:
            self.p = real(*a, **k)

        def records_json(self) -> Any:
            for r in self.p.records_json():
                if r["event_record_id"] in odd:
                    r = dict(r)
                    r["data"] = re.sub(r'"EventRecordID": ?(\d+)', r'"EventRecordID":"\1"',
                                       r["data"])
                yield r
    monkeypatch.setattr(sx, "PyEvtxParser", Parser)
    f = str(corpus / PANACHE)
    new, taken = _replay([f, f], raw, monkeypatch)
    assert new[0].count(b"\n") == 565 + 3  # the odd three again: never taken for repeats
    assert new[0].count(b'"EventRecordID":"') == 6  # as read, in both passes
    warnings = [e for e in new[1] if "is not an integer" in e]
    assert len(warnings) == 1 and "EventRecordID '3" in warnings[0], new[1]
    assert new[9] == 565 - 3
    assert (taken > 0) == raw


@needs_ext
def test_ctrl_c_in_a_decider_is_not_swallowed(corpus):
    """A KeyboardInterrupt raised while the raw path's decider runs Python code (an evaluator)
    ends the replay, as it does on the Event way; it was cleared and the record decided again
    the Event way, so the user's Ctrl-C did nothing."""
    import gc
    import io

    import sysmonx.sources.evtx  # noqa: F401 - as in a process that read a file before
    from sysmonx.config import load_config
    cfg = load_config(str(corpus / CONFIGS["sos"]))
    f = str(corpus / PANACHE)
    r = Replayer(ReplayOptions(config=cfg, keep_duplicates=True),
                 make_writer("jsonl", io.BytesIO()))
    r.run_file(f)
    assert r.pipeline.raw_records > 0
    calls = [0]

    def once(e: Any) -> Any:
        def evaluate(lv: Any) -> Any:
            calls[0] += 1
            if calls[0] == 1:
                raise KeyboardInterrupt
            return e(lv)
        return evaluate
    deciders = [d for d in r._filter._deciders.values() if type(d) is sp.FilterDecider]
    assert deciders
    for d in deciders:
        (evals,) = [x for x in gc.get_referents(d) if type(x) is list]
        for k, e in enumerate(evals):
            if e is not None:
                evals[k] = once(e)
    with pytest.raises(KeyboardInterrupt):
        r.run_file(f)
    assert calls[0] == 1


@needs_ext
def test_a_source_run_again_without_a_plan_keeps_none(corpus):
    """The loop tells the source its plan before every run, None included: a RecordedLogs run
    again by a pipeline that makes no plan (here: --from) does not keep the earlier plan."""
    import io

    import sysmonx.sources.evtx  # noqa: F401 - as in a process that read a file before
    from sysmonx.sources.recorded import RecordedLogs
    f = str(corpus / PANACHE)
    src = RecordedLogs([f])
    r = Replayer(ReplayOptions(keep_duplicates=True), make_writer("jsonl", io.BytesIO()))
    r.pipeline.run(src, finish=False)
    assert r.pipeline.raw_records > 0 and src._raw is not None
    r2 = Replayer(ReplayOptions(keep_duplicates=True, time_from="2000-01-01T00:00:00Z"),
                  make_writer("jsonl", io.BytesIO()))
    r2.pipeline.run(src, finish=False)
    assert src._raw is None and r2.pipeline.raw_records == 0
