"""The Sigma prefilter (automaton keys, lead clauses, remembered values and events) never
changes a decision: on every corpus event the rules matched are exactly the rules of the event's
log-source groups whose code is true when given every key the event really contains (found here
by plain substring tests, not by the automata), and rules whose result is remembered with an
event's key are those that cannot decide differently on another event with the same key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sysmonx.detection import DetectionStage, load_rules, load_rules_text
from sysmonx.detection.logsource import group_keys_for_event
from sysmonx.detection.matcher import END, START, _getter
from sysmonx.event import Event
from sysmonx.sources import open_source
from sysmonx.sources.detect import iter_input_files

PROC = "product: windows\n    category: process_creation"


def _stage(detection: str, logsource: str = PROC) -> DetectionStage:
    text = ("title: t\nid: 11111111-1111-1111-1111-111111111111\nlevel: high\nstatus: test\n"
            f"logsource:\n    {logsource}\ndetection:\n"
            + textwrap.indent(textwrap.dedent(detection).strip("\n"), "    ") + "\n")
    st = DetectionStage(load_rules_text(text))
    assert not [i for i in st.issues if i.rejected]
    return st


def _ev(rid: int = 1, eid: int = 1, **data) -> Event:
    return Event(eid, dict(data), provider="Microsoft-Windows-Sysmon", record_id=rid,
                 time_created="2024-05-01T10:00:00.000000000Z", computer="host1")


def _fires(st: DetectionStage, event: Event) -> bool:
    return bool(st.match(event))


class _Oracle:
    """Every eligible rule evaluated with every key of its group the event contains (found
    by substring tests on the framed, lower-cased values), no index, no remembered events."""

    def __init__(self, matcher) -> None:
        self.matcher = matcher
        self.getters: dict = {}
        self.keys: dict = {}  # group -> field -> [(key string, key id)]
        self.found: dict = {}  # (group, field, framed value) -> key ids (a value's own result)

    def groups(self, event: Event) -> list:
        m = self.matcher
        by_id = m._sysmon.get(event.provider)
        if by_id is not None:
            g = by_id.get(event.event_id)
            return [g] if g is not None else []
        return [m.groups[k] for k in group_keys_for_event(event.provider, event.channel,
                                                           event.event_id) if k in m.groups]

    def _group_keys(self, g) -> dict:
        fk = self.keys.get(id(g))
        if fk is None:
            fk = self.keys[id(g)] = {}
            for r in list(g.rules) + list(g.always):
                for k, (name, key) in r.keys.items():
                    fk.setdefault(name, set()).add((key, k))
        return fk

    def match(self, event: Event) -> list:
        out: set = set()
        for g in self.groups(event):
            hits: set = set()
            for name, keys in self._group_keys(g).items():
                get = self.getters.get(name)
                if get is None:
                    get = self.getters[name] = _getter(name)
                v = get(event)
                if v is None:
                    continue
                text = START + v.lower().replace(START, "\ufffd").replace(END, "\ufffd") + END
                f = self.found.get((id(g), name, text))
                if f is None:
                    f = self.found[(id(g), name, text)] = {k for key, k in keys if key in text}
                hits |= f
            for r in list(g.rules) + list(g.always):
                if r.evaluate(event, hits):
                    out.add(r.index)
        return sorted(out)


def test_prefilter_decides_as_every_eligible_rule_on_the_corpus(corpus):
    """On every event of the corpus (EVTX, JSON exports, Linux syslog), twice (the second
    pass answers from the remembered values, events and rule results), the prefilter's rules
    are exactly the oracle's."""
    bundle = corpus / "sigma" / "sigmahq_rules_sysmon_categories.tar.gz"
    st = DetectionStage(load_rules([bundle]))
    matcher = st.matcher
    oracle = _Oracle(matcher)
    paths = [str(corpus / d) for d in ("evtx", "json", "linux") if (corpus / d).is_dir()]
    events = [e for f in iter_input_files(paths) for e in open_source(f, lambda err: None)]
    assert len(events) > 50_000
    expected = [oracle.match(e) for e in events]
    assert sum(map(len, expected)) > 400  # the oracle itself finds the corpus's matches
    for _ in range(2):
        got = [[r.index for r in matcher.match(e)] for e in events]
        wrong = [(i, events[i].event_id, g, x) for i, (g, x) in enumerate(zip(got, expected, strict=True))
                 if g != x]
        assert not wrong, wrong[:5]


def test_rule_reading_a_field_outside_the_key_is_evaluated_per_event():
    """A regex with no literal on CommandLine: its field is not part of the remembered event
    key (only Image is), so events with the same Image decide by their own CommandLine."""
    st = _stage(r"""
        sel:
            Image|endswith: '\a.exe'
        cmd:
            CommandLine|re: '^.[0-9]'
        condition: sel and cmd
        """)
    assert _fires(st, _ev(Image="c:\\a.exe", CommandLine="x1"))
    assert not _fires(st, _ev(Image="c:\\a.exe", CommandLine="xy"))
    assert _fires(st, _ev(Image="c:\\a.exe", CommandLine="x1"))
    assert not _fires(st, _ev(Image="c:\\b.exe", CommandLine="x1"))


def test_keyword_rule_is_evaluated_per_event():
    """A keyword reads every EventData value: never remembered with the key."""
    st = _stage(r"""
        sel:
            Image|endswith: '\a.exe'
        keywords:
            - 'evilword'
        condition: sel and keywords
        """)
    assert _fires(st, _ev(Image="c:\\a.exe", User="evilword"))
    assert not _fires(st, _ev(Image="c:\\a.exe", User="bob"))
    assert _fires(st, _ev(Image="c:\\a.exe", Description="an evilword here"))


def test_field_reference_is_evaluated_per_event():
    st = _stage(r"""
        sel:
            Image|endswith: '\a.exe'
        ref:
            ParentImage|fieldref: Image
        condition: sel and ref
        """)
    assert _fires(st, _ev(Image="c:\\a.exe", ParentImage="C:\\A.exe"))
    assert not _fires(st, _ev(Image="c:\\a.exe", ParentImage="c:\\p.exe"))
    assert _fires(st, _ev(Image="c:\\a.exe", ParentImage="c:\\a.exe"))


def test_data_overriding_a_header_constant_is_part_of_the_key():
    """EventID is a constant of the Sysmon process-creation group unless the event's data
    carries its own EventID (which wins, as for every System field): the remembered result of
    an event without it must not answer for one with it, and the other way round."""
    st = _stage(r"""
        sel:
            EventID: 1
            Image|endswith: '\a.exe'
        condition: sel
        """)
    assert _fires(st, _ev(Image="c:\\a.exe"))
    assert not _fires(st, _ev(Image="c:\\a.exe", EventID="5"))
    assert _fires(st, _ev(Image="c:\\a.exe"))
    assert not _fires(st, _ev(Image="c:\\a.exe", EventID="5"))
    assert _fires(st, _ev(Image="c:\\a.exe", EventID="1"))


def test_remembered_results_and_pending_rules_keep_rule_order(tmp_path: Path):
    """Two rules on one event, one remembered with the key and one evaluated per event
    (regex without literal): alerts come in rule order on the first and the repeated event."""
    text = ("title: b\nid: 22222222-2222-2222-2222-222222222222\nlogsource:\n    " + PROC +
            "\ndetection:\n    sel:\n        CommandLine|re: '^z'\n"
            "    img:\n        Image|endswith: '\\a.exe'\n    condition: sel and img\n---\n"
            "title: a\nid: 33333333-3333-3333-3333-333333333333\nlogsource:\n    " + PROC +
            "\ndetection:\n    sel:\n        Image|endswith: '\\a.exe'\n    condition: sel\n")
    st = DetectionStage(load_rules_text(text))
    for _ in range(3):
        hits = st.match(_ev(Image="c:\\a.exe", CommandLine="zz"))
        assert [r.title for r in hits] == ["b", "a"]
    assert [r.title for r in st.match(_ev(Image="c:\\a.exe", CommandLine="y"))] == ["a"]


def test_rules_compile_once():
    """Compiling drops the rules' parsed detections: a second stage from the same loaded rules
    is an error, not a stage that silently rejects every rule."""
    loaded = load_rules_text("title: t\nlogsource:\n    " + PROC + "\ndetection:\n    sel:\n"
                             "        Image|endswith: '\\a.exe'\n    condition: sel\n")
    DetectionStage(loaded)
    with pytest.raises(ValueError, match="already compiled"):
        DetectionStage(loaded)


def test_alert_json_line_is_its_dict_as_orjson_writes_it():
    """The JSON line's rule part is serialised once per rule and remembered: every line stays
    exactly ``orjson.dumps(to_dict())`` (two alerts of one rule, and a rule with the same id but
    another title, level and tags)."""
    import orjson

    from sysmonx.detection.alerts import Alert
    alerts = [
        Alert("id1", "Tïtle \"q\"", "high", "test", "detection", ("attack.t1059", "x"),
              "t0", "t1", "host", {}, (1,), 1, (1,), (), None,
              {"CommandLine": "a\n\u2028b", "Image": "c:\\x.exe"}),
        Alert("id1", "Tïtle \"q\"", "high", "test", "detection", ("attack.t1059", "x"),
              "t2", "t3", "other", {}, (7,), 1, (3,), (), None, {}),
        Alert("id1", "another", "low", "", "event_count", (), "t0", "t9", "", {"User": None},
              (1, 2), 5, (1, 3), ("r1",), 2.5, {"User": "bob"}),
    ]
    for a in alerts * 2:
        assert a.to_json() == orjson.dumps(a.to_dict(), option=orjson.OPT_APPEND_NEWLINE)


def test_a_lead_change_scans_and_decides_nothing_again(corpus, monkeypatch):
    """When a re-choice changes leads, what a group remembered (the keys found in each value,
    each event's rule results and rules left to evaluate) is kept and only the candidates are
    looked up again from the keys: over the corpus EVTX no remembered value is scanned again
    and no remembered event decided again (before: most scans after a change were repeats),
    and the decisions stay the oracle's. The corpus EVTX three times, as the 100 MB file
    of bench_sigma.py repeats it."""
    from collections import Counter

    from sysmonx.detection.matcher import CACHE_ENTRIES, CACHE_MAX_LEN, COMBO_ENTRIES, \
        COMBO_MAX_LEN, _Group

    bundle = corpus / "sigma" / "sigmahq_rules_sysmon_categories.tar.gz"
    st = DetectionStage(load_rules([bundle]))
    matcher = st.matcher
    events = [e for f in iter_input_files([str(corpus / "evtx")])
              for e in open_source(f, lambda err: None)] * 3  # past the re-choice at 4096
    scans: Counter = Counter()
    outcomes: Counter = Counter()
    changes = []
    scan, outcome, relead = _Group._scan, _Group._outcome, _Group._relead

    def counted_scan(self, name, v):
        scans[(id(self), name, v)] += 1
        return scan(self, name, v)

    def counted_outcome(self, values, event):
        outcomes[(id(self), values)] += 1
        return outcome(self, values, event)

    def watched_relead(self):
        before = {id(c): c.lead for c in self.cands}
        relead(self)
        changes.append(sum(before.get(id(c)) != c.lead for c in self.cands))

    monkeypatch.setattr(_Group, "_scan", counted_scan)
    monkeypatch.setattr(_Group, "_outcome", counted_outcome)
    monkeypatch.setattr(_Group, "_relead", watched_relead)
    got = [[r.index for r in matcher.match(e)] for e in events]
    assert len(events) > 4096 and sum(changes) > 0  # leads did change along the way
    # nothing overflowed the memories (else a repeat would be expected)
    for g in matcher.groups.values():
        assert all(len(c) < CACHE_ENTRIES for c in g.scan_caches)
        assert len(g.combos) < COMBO_ENTRIES
    again = [k for k, n in scans.items() if n > 1 and len(k[2]) <= CACHE_MAX_LEN]
    assert not again, again[:3]
    redone = [k for k, n in outcomes.items()
              if n > 1 and sum(map(len, filter(None, k[1]))) <= COMBO_MAX_LEN]
    assert not redone, redone[:3]
    oracle = _Oracle(matcher)
    assert got == [oracle.match(e) for e in events]
