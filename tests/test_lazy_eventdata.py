"""EventData kept as slices of the record text (compiled EVTX converter, ``Event._raw``).

The compiled converter (``sysmonx.core._speedups``) leaves an EVTX record's ``Event.data`` slot
empty and keeps the fields as slices of the record's JSON text; the JSON-lines renderer and the
clock check read those as they are, and the first read of ``event.data`` builds the dict the
pure-Python converter gives (tests/test_speedups.py holds every corpus record and the edge cases
to that, byte for byte). These tests hold the object's behaviour to a plain slot's: reads,
writes, deletes, copies, pickles, equality, the stages that read it in C, and the live sensor's
compiled event builder, which finds the slot through the replaced descriptor.
"""

from __future__ import annotations

import copy
import pickle

import pytest
from builders import EVTX_SYSTEM

from sysmonx.core import native
from sysmonx.event import Event
from sysmonx.filtering import stage as _filter_stage  # noqa: F401 - decide(event) set up there
from sysmonx.sinks import jsonl
from sysmonx.sources import evtx as evtx_source
from sysmonx.stages.clock import ClockCheckStage

sp = native.speedups
pytestmark = pytest.mark.skipif(sp is None, reason=f"C extension not in use: "
                                f"{native.implementation()}")

SYSTEM = EVTX_SYSTEM


def record(utc: str = "2019-04-18 16:55:37.075") -> str:
    return ('{"Event":{' + SYSTEM + ',"EventData":{"RuleName":"-","UtcTime":"' + utc + '",'
            '"ProcessGuid":"365ABB72-AF09-5CB8-0000-0010E0AF0A00","ProcessId":2088,'
            '"Image":"C:\\\\a.exe","CommandLine":"a \\"b\\" \u00e9"}}}')


ORIGIN = ("x.evtx", 4)
EXPECTED = {"RuleName": "-", "UtcTime": "2019-04-18 16:55:37.075",
            "ProcessGuid": "{365abb72-af09-5cb8-0000-0010e0af0a00}", "ProcessId": "2088",
            "Image": "C:\\a.exe", "CommandLine": 'a "b" \u00e9'}


def lazy(text: str = record()) -> Event:
    ev = evtx_source._convert(text, ORIGIN, None)
    assert hasattr(ev, "_raw"), "the converter made the dict"
    return ev


def test_first_read_builds_the_dict_once():
    ev = lazy()
    d = ev.data
    assert d == EXPECTED and list(d) == list(EXPECTED)
    assert not hasattr(ev, "_raw")
    assert ev.data is d
    assert ev == evtx_source._convert_py(record(), ORIGIN)


def test_rendering_reads_the_text_and_keeps_it():
    ev = lazy()
    line = sp.event_json_raw(ev)
    assert hasattr(ev, "_raw")  # no dict made
    assert line == jsonl._event_to_json_py(evtx_source._convert_py(record(), ORIGIN))
    assert b'"ProcessGuid":"{365abb72-af09-5cb8-0000-0010e0af0a00}"' in line


def test_write_before_read_replaces_the_fields():
    ev = lazy()
    ev.data = {"A": "1"}
    assert not hasattr(ev, "_raw")
    assert ev.data == {"A": "1"}
    assert sp.event_json(ev).startswith(b'{"EventID":1,"A":"1","System":')


def test_delete_then_read_fails_as_a_plain_slot_does():
    ev = lazy()
    del ev.data
    with pytest.raises(AttributeError, match="'Event' object has no attribute 'data'"):
        _ = ev.data
    with pytest.raises(AttributeError):
        del ev.data
    plain = Event(1, {})
    del plain.data
    with pytest.raises(AttributeError, match="'Event' object has no attribute 'data'"):
        _ = plain.data


def test_in_place_change_after_read_is_what_renders():
    ev = lazy()
    ev.data["RuleName"] = "r1"
    assert b'"RuleName":"r1"' in sp.event_json(ev)


@pytest.mark.parametrize("dup", [copy.copy, copy.deepcopy,
                                 lambda e: pickle.loads(pickle.dumps(e))],
                         ids=["copy", "deepcopy", "pickle"])
def test_copies_and_pickles_carry_the_fields(dup):
    ev = lazy()
    c = dup(ev)
    assert c is not ev and c.__class__ is Event
    assert c.data == EXPECTED and c == evtx_source._convert_py(record(), ORIGIN)
    assert not hasattr(c, "_raw")


def test_descriptor_is_over_the_same_slot():
    d = Event.__dict__["data"]
    assert type(d).__name__ == "LazyData"
    assert type(d.slot).__name__ == "member_descriptor"
    ev = Event(5, {"A": "1"})
    assert d.slot.__get__(ev, Event) is ev.data
    with pytest.raises(TypeError):
        d.__get__(object(), object)
    with pytest.raises(TypeError):
        d.__set__(object(), {})


@pytest.mark.parametrize("utc,warned", [("2019-04-18 16:55:37.075", False),
                                        ("2019-04-18 14:55:37.075", True)],
                         ids=["same-hour", "two-hours-off"])
def test_clock_check_reads_utctime_from_the_text(utc, warned):
    out: list = []
    for ev in (lazy(record(utc)), evtx_source._convert_py(record(utc), ORIGIN)):
        emitted: list = []
        assert ClockCheckStage().process(ev, emitted.append) is True
        out.append([str(e) for e in emitted])
    assert out[0] == out[1]
    assert bool(out[0]) is warned


def test_clock_check_common_case_stays_lazy():
    stage = ClockCheckStage()
    first, second = lazy(), lazy()
    assert stage.process(first, lambda _: None) is True  # a new file: the Python method
    assert stage.process(second, lambda _: None) is True
    assert hasattr(second, "_raw")  # same date and hour, read from the text


def test_live_builder_finds_the_slot_after_the_converter_is_set_up():
    from sysmonx.sensor.assemble import Assembler
    from sysmonx.sensor.process import ProcessCache
    if native.compiled("sysmonx.sensor._ringbatch", "Builder")[0] is None:
        pytest.skip("sysmonx.sensor._ringbatch not built")
    assert type(Event.__dict__["data"]).__name__ == "LazyData"
    assert Assembler(ProcessCache(machine="0a1b2c3d"), computer="h").assembly == "compiled"


CONFIGS = ("configs/olafhartong__sysmon-modular/sysmonconfig.xml",
           "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml")


@pytest.fixture(scope="module")
def corpus_texts(corpus) -> list:
    """Every corpus EVTX record's JSON text the compiled converter keeps lazily."""
    from evtx import PyEvtxParser
    out = []
    for f in sorted((corpus / "evtx").rglob("*.evtx")):
        it = PyEvtxParser(str(f)).records_json()
        for _ in range(100_000):
            try:
                for rec in it:
                    ev = sp.convert_raw(rec["data"], ORIGIN)
                    if ev is not None and hasattr(ev, "_raw") and ev.is_sysmon:
                        out.append(rec["data"])
                break
            except (RuntimeError, OSError):
                continue
    assert len(out) > 1500
    return out


@pytest.mark.parametrize("rel", CONFIGS)
def test_decider_reads_the_fields_from_the_text(corpus, corpus_texts, rel):
    from sysmonx.config import load_config
    from sysmonx.filtering import EngineOptions, FilterEngine
    engine = FilterEngine(load_config(corpus / rel, cache=None), EngineOptions(),
                          plan_cache=False)
    decided = named = 0
    for text in corpus_texts:
        ev = sp.convert(text, ORIGIN, None)
        decide = engine.decider_for(ev.event_id)
        if type(decide).__name__ != "FilterDecider":
            continue
        want = decide(evtx_source._convert_py(text, ORIGIN).data)
        assert decide(ev) == want, text
        decided += 1
        if hasattr(ev, "_raw") and want[0] and want[1] not in (None, "-"):
            # RuleName set on the slices renders as the dict with it set does
            py = evtx_source._convert_py(text, ORIGIN)
            if "RuleName" in py.data:
                py.data["RuleName"] = want[1]
                assert sp.set_rule_name(ev, want[1]) is True
                assert hasattr(ev, "_raw")
                assert sp.event_json(ev) == jsonl._event_to_json_py(py)
                assert ev.data == py.data
                named += 1
    assert decided > 1000 and named > 10, (decided, named)


def test_set_rule_name_leaves_other_events_alone():
    ev = lazy()
    _ = ev.data  # the dict is made: nothing for set_rule_name to do
    assert sp.set_rule_name(ev, "x") is False and ev.data["RuleName"] == "-"
    assert sp.set_rule_name(Event(1, {"RuleName": "-"}), "x") is False
    no_name = lazy(record().replace('"RuleName":"-",', ""))
    assert sp.set_rule_name(no_name, "x") is False and "RuleName" not in no_name.data


def test_decider_takes_an_event_with_its_dict():
    from sysmonx.config import parse_config
    from sysmonx.filtering import EngineOptions, FilterEngine
    cfg = parse_config(b'<Sysmon schemaversion="4.90"><EventFiltering><RuleGroup '
                       b'groupRelation="or"><ProcessCreate onmatch="include"><Image name="t1" '
                       b'condition="end with">a.exe</Image></ProcessCreate></RuleGroup>'
                       b'</EventFiltering></Sysmon>')
    decide = FilterEngine(cfg, EngineOptions(), plan_cache=False).decider_for(1)
    assert type(decide).__name__ == "FilterDecider"
    for data, want in (({"Image": "C:\\a.exe"}, (True, "t1")), ({"Image": "b"}, (False, "-"))):
        assert decide(dict(data)) == want
        assert decide(Event(1, dict(data))) == want
    assert decide(lazy()) == (True, "t1")


def _fresh(code: str) -> str:
    """Run ``code`` in a fresh interpreter (a class or module state of its own); its stdout."""
    import subprocess
    import sys
    import textwrap
    head = ("from sysmonx.sources import evtx as E\n"
            f"SYSTEM = {SYSTEM!r}\n"
            "TEXT = ('{\"Event\":{' + SYSTEM + ',\"EventData\":{\"RuleName\":\"-\",' + "
            "','.join(f'\"F{i}\":\"value{i}\"' for i in range(200)) + '}}}')\n")
    done = subprocess.run([sys.executable, "-c", head + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_read_inside_the_first_read_gets_the_same_dict():
    """A collection's finalizer reading the event while its dict is being built (reviewer's
    case: the first read's _raw was freed under it, the heap corrupted, exit 134)."""
    out = _fresh("""
        import gc
        ev = E._convert(TEXT, ("x", 1), None)
        assert hasattr(ev, "_raw")
        seen = []
        class Trap:
            def __del__(self):
                seen.append(ev.data)
        gc.collect()
        t = Trap(); t.self = t; del t
        keep = [{} for _ in range(200)]
        gc.set_threshold(1)
        d = ev.data
        gc.set_threshold(700)
        assert ev.data is d and all(s is d for s in seen), seen
        print(len(d), d["F199"], len(seen))
    """)
    n, last, _ = out.split()
    assert (n, last) == ("201", "value199")


def test_plain_slot_put_back_on_event_is_met_by_the_next_record():
    """A monkeypatch undo puts Event's plain slot descriptor back: the next record's data is
    still read (the descriptor is checked again after any change to the class)."""
    out = _fresh("""
        from sysmonx.event import Event
        plain = Event.__dict__["data"]
        E._convert(TEXT, ("x", 1), None)
        Event.data = plain
        ev = E._convert(TEXT, ("x", 2), None)
        print(len(ev.data), ev.data["F0"])
    """)
    assert out == "201 value0"


def test_set_rule_name_works_before_any_decider_is_built():
    out = _fresh("""
        from sysmonx.core import native
        ev = E._convert(TEXT, ("x", 1), None)
        print(native.speedups.set_rule_name(ev, "T1059"), ev.data["RuleName"])
    """)
    assert out == "True T1059"
