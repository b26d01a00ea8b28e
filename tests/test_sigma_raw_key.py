"""A Sysmon event whose EventData is still its EVTX record's slices (``Event._raw``, the
compiled converter) is matched by the compiled ``sigma_match`` from its raw key: one bytes
object spelling the group's key fields from the record's text, remembered in the group's
``raw_combos`` with the tuple of values it stands for. The event's dict is then never made
unless something else reads ``event.data`` (an alert, a rule that reads a field outside the
key). The Python code (the values' tuple, ``_Group.matches``) defines the behaviour: the same
rules per event, alert lines and objects, counters and calibration state, on the corpus's
EVTX events fresh and again, and on records whose values a plain concatenation, a missing
field, an empty one or a non-ASCII one would confuse."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from builders import EVTX_SYSTEM

from sysmonx.core import native
from sysmonx.detection import matcher as matcher_mod
from sysmonx.detection import stage as stage_mod
from sysmonx.detection.rules import load_rules_text
from sysmonx.detection.stage import DetectionOptions, DetectionStage
from sysmonx.sources import evtx as evtx_source

sp = native.speedups
pytestmark = pytest.mark.skipif(sp is None, reason=f"C extension not in use: "
                                f"{native.implementation()}")

RULES = "sigma/sigmahq_rules_sysmon_categories.tar.gz"


def _fresh(corpus: Path) -> list:
    """The corpus EVTX files' events, just read (EventData still as slices where the
    converter kept it so)."""
    from sysmonx.sources import iter_input_files, open_source
    out: list = []
    for f in iter_input_files([str(corpus / "evtx")]):
        out.extend(open_source(f, lambda e: None))
    return out


def _run(st: DetectionStage, events: list) -> dict:
    per_event, lines, objects = [], [], []
    for ev in events:
        found = st.process(ev)
        per_event.append([a.rule_id for a in found])
        lines.extend(a.to_json() for a in found)
        objects.extend(vars(a) for a in found)
    groups = {k: (g.seen, g.countdown, g.period, g.next_relead, g.sampled,
                  sorted((c.rule.index, tuple(sorted(c.lead))) for c in g.cands),
                  len(g.combos))
              for k, g in st.matcher.groups.items()}
    return {"per_event": per_event, "lines": lines, "objects": objects,
            "matches": list(st.matches.items()), "alert_counts": list(st.alert_counts.items()),
            "stats": (st.stats.events, st.stats.matched, st.stats.alerts), "groups": groups}


def test_corpus_raw_keys_give_the_python_results_and_make_no_dict(corpus, monkeypatch):
    """The corpus EVTX events through a compiled stage twice (the second pass finds every
    remembered event by its raw key), against the same events with their dict made first
    (the values' tuple) and against the Python path: identical results; the events without
    an alert kept their slices (no dict made) and the raw keys were remembered."""
    st = DetectionStage.from_paths([corpus / RULES], DetectionOptions(max_field_chars=40))
    fresh1, fresh2 = _fresh(corpus), _fresh(corpus)
    raw_before = sum(hasattr(e, "_raw") for e in fresh1)
    assert raw_before > 1000, "the converter kept no event as slices"
    got1 = _run(st, fresh1)
    got2 = _run(st, fresh2)
    assert sum(len(g.raw_combos) for g in st.matcher.groups.values()) > 100
    alerted = {i for i, ids in enumerate(got1["per_event"]) if ids}
    kept = [i for i, e in enumerate(fresh1) if hasattr(e, "_raw")]
    assert kept and not alerted & set(kept)
    assert all(hasattr(fresh2[i], "_raw") for i in kept)
    # the second time, most events are found by their raw key and never need their dict
    kept2 = sum(hasattr(e, "_raw") for e in fresh2)
    assert kept2 > raw_before // 2, (kept2, raw_before)

    st_dict = DetectionStage.from_paths([corpus / RULES], DetectionOptions(max_field_chars=40))
    dicts1, dicts2 = _fresh(corpus), _fresh(corpus)
    for e in dicts1 + dicts2:
        assert isinstance(e.data, dict)
    want1, want2 = _run(st_dict, dicts1), _run(st_dict, dicts2)
    assert not any(g.raw_combos for g in st_dict.matcher.groups.values())

    with monkeypatch.context() as m:
        m.setattr(stage_mod, "_sigma_process", None)
        m.setattr(stage_mod, "_sigma_alerts", None)
        m.setattr(matcher_mod, "_sigma_match", None)
        st_py = DetectionStage.from_paths([corpus / RULES],
                                          DetectionOptions(max_field_chars=40))
        py1, py2 = _run(st_py, _fresh(corpus)), _run(st_py, _fresh(corpus))
    assert len(py1["lines"]) > 300
    for got, want, py in ((got1, want1, py1), (got2, want2, py2)):
        for k in got:
            assert got[k] == want[k] == py[k], k


def test_raw_keys_with_a_small_memory(corpus, monkeypatch):
    """With a memory of whole events of 8 entries (cleared when full, raw keys with it) and
    its re-choices moving the raw keys to the new entries: the Python path's results, and
    every raw key's entry is the one combos holds."""
    monkeypatch.setattr(matcher_mod, "COMBO_ENTRIES", 8)
    st = DetectionStage.from_paths([corpus / RULES], DetectionOptions())
    first, again = _run(st, _fresh(corpus)), _run(st, _fresh(corpus))
    entries = {id(e) for g in st.matcher.groups.values() for e in g.combos.values()}
    raw = [e for g in st.matcher.groups.values() for e in g.raw_combos.values()]
    assert raw and all(id(e) in entries for e in raw)
    assert all(len(g.raw_combos) <= 8 for g in st.matcher.groups.values())
    with monkeypatch.context() as m:
        m.setattr(stage_mod, "_sigma_process", None)
        m.setattr(stage_mod, "_sigma_alerts", None)
        m.setattr(matcher_mod, "_sigma_match", None)
        st_py = DetectionStage.from_paths([corpus / RULES], DetectionOptions())
        py1, py2 = _run(st_py, _fresh(corpus)), _run(st_py, _fresh(corpus))
    for k in first:
        assert first[k] == py1[k] and again[k] == py2[k], k


SYSTEM = EVTX_SYSTEM


def _record(fields: dict) -> str:
    import json
    return '{"Event":{' + SYSTEM + ',"EventData":' + json.dumps(fields) + "}}"


def _lazy(fields: dict):
    ev = evtx_source._convert(_record(fields), ("x.evtx", 4), None)
    assert hasattr(ev, "_raw"), "the converter made the dict"
    return ev


RULE = """title: t{n}
id: 11111111-1111-1111-1111-11111111111{n}
level: high
status: test
logsource:
    product: windows
    category: process_creation
detection:
{det}
"""

DETECTIONS = [
    "sel:\n    Image|endswith: '\\ab'\ncondition: sel",
    "sel:\n    Image|endswith: '\\a'\n    CommandLine|startswith: 'bc'\ncondition: sel",
    "sel:\n    CommandLine|contains: '\u00e9'\ncondition: sel",
    "sel:\n    CommandLine: ''\ncondition: sel",
    "sel:\n    Image|endswith: '.exe'\nfilter:\n    CommandLine|contains: 'x'\n"
    "condition: sel and not filter",
]

# Pairs a naive key would confuse: the same concatenation, a missing field and an empty one,
# the same text as a plain slice and as a str the converter made (an escape, a non-ASCII
# character), a GUID the converter braces.
EVENTS = [
    {"Image": "C:\\ab", "CommandLine": "c d"},
    {"Image": "C:\\a", "CommandLine": "bc d"},
    {"Image": "C:\\a.exe"},
    {"Image": "C:\\a.exe", "CommandLine": ""},
    {"Image": "C:\\a.exe", "CommandLine": "caf\u00e9"},
    {"Image": "C:\\a.exe", "CommandLine": "cafe"},
    {"Image": "C:\\a.exe", "CommandLine": "\"q\" x"},
    {"Image": "C:\\a.exe", "CommandLine": "q x"},
    {"Image": "C:\\a.exe", "CommandLine": "\u00e9"},
    {"Image": "C:\\ab", "CommandLine": "c d", "ProcessGuid":
     "365ABB72-AF09-5CB8-0000-0010E0AF0A00"},
]


def _small_stage() -> DetectionStage:
    text = "---\n".join(RULE.format(n=i, det=textwrap.indent(d, "    "))
                        for i, d in enumerate(DETECTIONS))
    st = DetectionStage(load_rules_text(text), DetectionOptions())
    assert not [i for i in st.issues if i.rejected]
    return st


@pytest.mark.parametrize("order", [1, -1])
def test_values_a_naive_key_would_confuse(order, monkeypatch):
    """Each crafted record (fresh, as slices) twice through the compiled stage in both orders:
    the rules each matches are those the Python path gives; the raw keys are distinct."""
    events = EVENTS[::order]
    st = _small_stage()
    got = [[a.rule_id for a in st.process(_lazy(f))] for f in events + events]
    with monkeypatch.context() as m:
        m.setattr(stage_mod, "_sigma_process", None)
        m.setattr(stage_mod, "_sigma_alerts", None)
        m.setattr(matcher_mod, "_sigma_match", None)
        py_st = _small_stage()
        want = [[a.rule_id for a in py_st.process(_lazy(f))] for f in events + events]
    assert got == want
    assert sum(map(bool, want)) >= 6  # the rules do tell these records apart
    (g,) = [g for g in st.matcher.groups.values() if g.raw_combos]
    assert len(g.raw_combos) == len(EVENTS) - 1  # the ProcessGuid is not part of the key
    assert {id(e) for e in g.raw_combos.values()} == {id(e) for e in g.combos.values()}


def test_raw_key_path_keeps_no_memory(corpus, kept_bytes):
    """Rounds of fresh EVTX events found by their raw keys keep no memory."""
    from sysmonx.sources import iter_input_files, open_source
    st = DetectionStage.from_paths([corpus / RULES], DetectionOptions())
    files = list(iter_input_files([str(corpus / "evtx")]))[:8]
    for g in st.matcher.groups.values():
        g.next_relead = 0  # no calibration: its samples would grow

    def once() -> None:
        for f in files:
            for ev in open_source(f, lambda e: None):
                st.process(ev)

    once()
    assert any(g.raw_combos for g in st.matcher.groups.values())
    grown = kept_bytes(once, 10, warm=1)
    assert grown < 65536, f"{grown} bytes kept after 10 rounds"
