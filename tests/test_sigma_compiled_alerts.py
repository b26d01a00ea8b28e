"""A detection stage's per-event path in C: ``_speedups.sigma_match`` (a Sysmon event of a
group without getters: :meth:`RuleMatcher.match` / ``_Group.matches``) and
``_speedups.sigma_alerts`` (one event's alerts and counters without correlations:
:meth:`DetectionStage.correlate_timed`). The Python code defines the behaviour: the same
decisions, alerts (bytes and objects), counters (values and order) and group calibration
state on the corpus, the same results on the cases each leaves to Python, nothing counted when
building an alert fails, and the per-rule table the alerts read built on first use, whole,
from any number of threads at once."""

from __future__ import annotations

import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from sysmonx.core import native
from sysmonx.detection import matcher as matcher_mod
from sysmonx.detection import stage as stage_mod
from sysmonx.detection.alerts import Alert
from sysmonx.detection.cache import RuleCache
from sysmonx.detection.stage import DetectionOptions, DetectionStage
from sysmonx.event import Event

sp = native.speedups
needs_ext = pytest.mark.skipif(sp is None, reason=f"C extension not in use: "
                               f"{native.implementation()}")

RULES = "sigma/sigmahq_rules_sysmon_categories.tar.gz"


def _events(corpus: Path) -> list:
    from sysmonx.sources import iter_input_files, open_source
    out: list = []
    for f in iter_input_files([str(corpus / "evtx"), str(corpus / "json"),
                               str(corpus / "linux")]):
        out.extend(open_source(f, lambda e: None))
    return out


def _run(corpus: Path, monkeypatch, compiled, events: list, cache=None) -> dict:
    """Every event through a fresh stage (key fields cut at 40 characters); what it gives.
    ``compiled``: True (every compiled path), ``"parts"`` (sigma_match and sigma_alerts
    called from the Python process), False (none)."""
    with monkeypatch.context() as m:
        if compiled is not True:
            m.setattr(stage_mod, "_sigma_process", None)
        if not compiled:
            m.setattr(stage_mod, "_sigma_alerts", None)
            m.setattr(matcher_mod, "_sigma_match", None)
        st = DetectionStage.from_paths([corpus / RULES], DetectionOptions(max_field_chars=40),
                                       cache=cache)
        per_event = []
        lines = []
        objects = []
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
            "stats": (st.stats.events, st.stats.matched, st.stats.alerts,
                      list(st.stats.alerts_by_level.items())),
            "groups": groups, "rows_built": st._rows is not None}


@pytest.fixture(scope="module")
def corpus_events(corpus) -> list:
    return _events(corpus)


@needs_ext
def test_corpus_same_alerts_counters_and_calibration_compiled_and_python(
        corpus, corpus_events, monkeypatch):
    """The whole corpus (EVTX, JSON, Linux) through a stage with the compiled per-event path
    (``sigma_process``), one with only its parts (``sigma_match``, ``sigma_alerts``) and one
    without: the same rules per event, alert lines and alert objects, the same counters in
    the same order, the same calibration state in every group (a countdown or calibration
    call run differently would change the leads and the sample counts); the compiled paths
    were taken (fails where the extension lacks them)."""
    calls = Counter()
    real_match, real_alerts, real_process = sp.sigma_match, sp.sigma_alerts, sp.sigma_process

    def count_match(*a):
        out = real_match(*a)
        calls["match" if out is not None else "match_left"] += 1
        return out

    def count_alerts(*a):
        out = real_alerts(*a)
        calls["alerts" if out is not None else "alerts_left"] += 1
        return out

    def count_process(*a):
        out = real_process(*a)
        calls["process" if out is not None else "process_left"] += 1
        return out

    monkeypatch.setattr(matcher_mod, "_sigma_match", count_match)
    monkeypatch.setattr(stage_mod, "_sigma_alerts", count_alerts)
    monkeypatch.setattr(stage_mod, "_sigma_process", count_process)
    c = _run(corpus, monkeypatch, True, corpus_events)
    assert calls["process"] == len(corpus_events) and calls["process_left"] == 0
    # the compiled process asks the matcher's Python match only for what sigma_match leaves
    assert calls["match"] == 0 and calls["match_left"] < len(corpus_events) // 2
    parts = _run(corpus, monkeypatch, "parts", corpus_events)
    py = _run(corpus, monkeypatch, False, corpus_events)
    assert len(py["lines"]) > 300
    assert any(len(x) > 1 for x in py["per_event"])  # several rules on one event: the order
    for got in (c, parts):
        assert got["per_event"] == py["per_event"]
        assert got["lines"] == py["lines"]
        assert got["objects"] == py["objects"]
        for k in ("matches", "alert_counts", "stats", "groups"):
            assert got[k] == py[k], k
        assert got["rows_built"]
    assert not py["rows_built"]
    assert calls["match"] > len(corpus_events) // 2
    assert calls["alerts"] > 200 and calls["alerts_left"] == 0


@needs_ext
def test_pending_rules_are_evaluated_and_sorted_like_python(corpus, corpus_events, monkeypatch):
    """Events whose remembered entry still has rules to evaluate (rules reading fields
    outside the group's key), twice each so the second meets the remembered key: the
    compiled matcher evaluates them and orders the result as the Python code does."""
    st = DetectionStage.from_paths([corpus / RULES], DetectionOptions())
    m = st.matcher
    pending_seen = 0
    for ev in corpus_events:
        by_id = m._sysmon.get(ev.provider)
        g = by_id.get(ev.event_id) if by_id else None
        if g is None or g.getter_fns:
            continue
        g.next_relead = 0  # no calibration: both sides see the same remembered entries
        first = m.match(ev)
        key = tuple(map(ev.data.get, g.key_names))
        entry = g.combos.get(key)
        if entry is None or not entry[3]:
            continue
        pending_seen += 1
        c = sp.sigma_match(m._sysmon, ev, matcher_mod._index)
        assert c is not None
        assert c == g.matches(ev) == first
    assert pending_seen > 0


def _stage(corpus: Path) -> DetectionStage:
    return DetectionStage.from_paths([corpus / RULES], DetectionOptions())


def _proc_event(st: DetectionStage) -> tuple:
    """A process-creation event and the rules it matches (a synthetic one that rules hit)."""
    data = {"Image": "C:\\Windows\\System32\\whoami.exe", "OriginalFileName": "whoami.exe",
            "CommandLine": "whoami /priv", "ParentImage": "C:\\Windows\\explorer.exe",
            "User": "NT AUTHORITY\\SYSTEM", "IntegrityLevel": "System"}
    ev = Event(1, data, time_created="2024-01-01T00:00:00.000000000Z", record_id=None,
               computer=None)
    hits = st.matcher.match(ev)
    assert hits, "the synthetic event should match a rule"
    return ev, hits


def _counters(st: DetectionStage) -> tuple:
    return (list(st.matches.items()), list(st.alert_counts.items()), st.stats.matched,
            st.stats.alerts, list(st.stats.alerts_by_level.items()))


@needs_ext
def test_alerts_of_an_event_without_record_id_or_computer(corpus, monkeypatch):
    """``record_id`` None gives no record ids, ``computer`` None gives "" (as ``_alert``)."""
    st = _stage(corpus)
    ev, hits = _proc_event(st)
    got = st.correlate(ev, hits)
    want = [st._alert(r, ev) for r in hits]
    assert got == want and got[0].record_ids == () and got[0].computer == ""
    assert [a.to_json() for a in got] == [a.to_json() for a in want]


@needs_ext
def test_cases_left_to_python_change_nothing(corpus):
    """Arguments the compiled alerts leave to Python return None with no counter changed;
    the stage then gives what the Python code gives."""
    st = _stage(corpus)
    ev, hits = _proc_event(st)
    rows = st._alert_rows()
    before = _counters(st)
    limit = st.options.max_field_chars
    odd = Event(1, dict(ev.data), time_created=ev.time_created)
    odd.data = Counter(ev.data)  # a dict subclass: alert_fields leaves it to Python
    assert sp.sigma_alerts(st, odd, hits, rows, limit, Alert) is None
    assert sp.sigma_alerts(st, ev, hits, rows[:1], limit, Alert) is None  # index beyond
    bad = list(rows)
    bad[hits[0].index] = ("short",)
    assert sp.sigma_alerts(st, ev, hits, bad, limit, Alert) is None
    assert sp.sigma_alerts(st, ev, tuple(hits), rows, limit, Alert) is None  # not a list
    assert _counters(st) == before
    # the stage falls back and counts once, as Python does
    py = _stage(corpus)
    ev2, hits2 = _proc_event(py)
    odd2 = Event(1, dict(ev2.data), time_created=ev2.time_created)
    odd2.data = Counter(ev2.data)
    got = st.correlate(odd, hits)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(stage_mod, "_sigma_alerts", None)
        want = py.correlate(odd2, hits2)
    assert got == want and _counters(st) == _counters(py)


@needs_ext
def test_an_error_building_an_alert_counts_nothing(corpus):
    """An exception while the alerts are built propagates and leaves every counter as it
    was (Python builds all alerts before it counts)."""
    st = _stage(corpus)
    ev, hits = _proc_event(st)
    before = _counters(st)

    class Boom(Exception):
        pass

    def alert_type(*args):
        raise Boom("no alert")

    with pytest.raises(Boom):
        sp.sigma_alerts(st, ev, hits, st._alert_rows(), 40, alert_type)
    assert _counters(st) == before


@needs_ext
def test_rules_without_output_are_counted_but_give_no_alert(corpus):
    """A row whose output flag is off (a rule consumed by a non-generating correlation):
    its match is counted, no alert is built for it."""
    st = _stage(corpus)
    ev, hits = _proc_event(st)
    rows = list(st._alert_rows())
    off = hits[0].index
    rows[off] = rows[off][:6] + (False,) + rows[off][7:]
    got = sp.sigma_alerts(st, ev, hits, rows, 4096, Alert)
    assert [a.rule_id for a in got] == [r.key for r in hits[1:]]
    assert st.matches[hits[0].key] == 1 and st.alert_counts[hits[0].key] == 0
    assert st.stats.alerts == len(hits) - 1 and st.stats.matched == 1


@needs_ext
def test_rule_table_is_built_on_first_use_and_not_stored(corpus, tmp_path):
    """A stage loaded from the rule cache has no per-rule alert table until its first alert;
    the table then equals one built from the compiled rules; a stage stored after alerting
    stores no table (the entry is the freshly compiled stage)."""
    cache = RuleCache(tmp_path / "c")
    st = DetectionStage.from_paths([corpus / RULES], DetectionOptions(), cache=cache)
    assert st.cache_status == "compiled"
    loaded = DetectionStage.from_paths([corpus / RULES], DetectionOptions(), cache=cache)
    assert loaded.cache_status == "cached"
    assert "_rows" not in vars(loaded)
    ev, hits = _proc_event(loaded)
    loaded.correlate(ev, hits)
    assert "_rows" in vars(loaded)
    want = [(r.key, r.title, r.level, r.status, r.tags, loaded._key_fields[r.index],
             bool(loaded._output[r.index]), r.level or "-") for r in loaded.matcher.compiled]
    assert loaded._rows == want
    again = DetectionStage.from_paths([corpus / RULES], DetectionOptions(), cache=cache)
    assert again.cache_status == "cached" and "_rows" not in vars(again)


@needs_ext
def test_rule_table_built_from_many_threads_at_once(corpus):
    """Threads that meet a stage's first alert at the same moment each get the whole table
    (never a partly built one) and the stage keeps one of them; their alerts are right."""
    st = _stage(corpus)
    ev, hits = _proc_event(st)
    want = [st._alert(r, ev) for r in hits]
    n = 8
    barrier = threading.Barrier(n)
    tables: list = []
    alerts: list = []
    errors: list = []
    size = len(st.matcher.compiled)

    def work() -> None:
        try:
            barrier.wait()
            tables.append(st._alert_rows())
            rows = st._rows
            alerts.append(sp.sigma_alerts(st, ev, hits, rows, st.options.max_field_chars,
                                          Alert))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors
    assert len(tables) == n and all(len(t) == size and t == tables[0] for t in tables)
    assert any(st._rows is t for t in tables)
    assert all(a == want for a in alerts)
    assert st.stats.alerts == n * len(want)


@needs_ext
def test_cached_stage_gives_the_same_alerts_as_a_compiled_one(corpus, corpus_events,
                                                             monkeypatch, tmp_path):
    """From the rule cache (rules and automata built on first use, the alert table too) the
    compiled per-event path gives the Python path's alert lines."""
    cache = RuleCache(tmp_path / "c")
    DetectionStage.from_paths([corpus / RULES], DetectionOptions(), cache=cache)
    c = _run(corpus, monkeypatch, True, corpus_events, cache=cache)
    py = _run(corpus, monkeypatch, False, corpus_events)
    assert c["lines"] == py["lines"] and c["matches"] == py["matches"]


@needs_ext
def test_compiled_paths_keep_no_memory(corpus, corpus_events, kept_bytes):
    """Many rounds of both compiled calls on remembered events keep no memory."""
    st = _stage(corpus)
    evs = [e for e in corpus_events if e.event_id == 1][:200]
    for e in evs:
        st.process(e)
    for g in st.matcher.groups.values():
        g.next_relead = 0  # no calibration: its samples would grow

    def once() -> None:
        for e in evs:
            st.process(e)

    grown = kept_bytes(once, 30, warm=1)
    assert grown < 65536, f"{grown} bytes kept after 30 rounds"


@needs_ext
def test_alerts_made_without_init_equal_the_class_call(corpus, monkeypatch):
    """With Alert's plain shape checked (``_plain_alert``), ``sigma_alerts`` makes alerts
    without calling ``__init__``: the same objects, attributes in the same order, the same
    lines as calling the class. An Alert class with another field (a default added later)
    is not taken as plain, and its alerts are made by calling it (its default included)."""
    import dataclasses
    assert stage_mod._plain_alert() == stage_mod._ALERT_ARGS
    st = _stage(corpus)
    ev, hits = _proc_event(st)
    rows = st._alert_rows()
    fast = sp.sigma_alerts(st, ev, hits, rows, 4096, Alert, stage_mod._ALERT_ARGS)
    called = sp.sigma_alerts(st, ev, hits, rows, 4096, Alert, None)
    want = [st._alert(r, ev) for r in hits]
    assert fast == called == want
    assert [list(vars(a)) for a in fast] == [list(vars(a)) for a in want]
    assert [a.to_json() for a in fast] == [a.to_json() for a in want]

    @dataclasses.dataclass
    class Wider(Alert):
        source: str = "somewhere"

    monkeypatch.setattr(stage_mod, "Alert", Wider)
    monkeypatch.setattr(stage_mod, "_PLAIN_NAMES", stage_mod._UNCHECKED)
    assert stage_mod._plain_alert() is None
    for got in (st.correlate(ev, hits), st.process(ev)):
        assert [type(a) for a in got] == [Wider] * len(hits)
        assert all(a.source == "somewhere" for a in got)

    class Guarded(Alert):  # a class that is not plain, even if a caller passes the names
        def __setattr__(self, name, value):
            object.__setattr__(self, name, ("set", value) if name == "title" else value)

    made = sp.sigma_alerts(st, ev, hits, rows, 4096, Guarded, stage_mod._ALERT_ARGS)
    assert all(a.title[0] == "set" for a in made)


@needs_ext
def test_compiled_process_leaves_profiled_and_correlating_stages_to_python(corpus, tmp_path):
    """``sigma_process`` returns None with nothing counted for a stage whose matcher has a
    rule profile set (its counting match must run) or that has correlations; such stages'
    process still gives the Python path's alerts."""
    from sysmonx.detection.profile import RuleProfile
    st = _stage(corpus)
    ev, hits = _proc_event(st)
    args = (ev, stage_mod._FROM_EVENT, matcher_mod.RuleMatcher.match, matcher_mod._index,
            Alert, stage_mod._ALERT_ARGS)
    prof = RuleProfile.attach(st)
    before = (st.stats.events, _counters(st))
    assert sp.sigma_process(st, *args) is None
    assert (st.stats.events, _counters(st)) == before
    got = st.process(ev)
    assert prof.events == 1 and [a.rule_id for a in got] == [r.key for r in hits]
    prof.detach()
    assert sp.sigma_process(st, *args) is not None  # profile off: compiled again
    corr = tmp_path / "corr.yml"
    rule_id = hits[0].id
    corr.write_text(
        "title: two whoami\nname: two_whoami\ncorrelation:\n  type: event_count\n"
        f"  rules:\n    - {rule_id}\n  group-by:\n    - User\n  timespan: 1h\n"
        "  condition:\n    gte: 2\nlevel: high\n")
    cst = DetectionStage.from_paths([corpus / RULES, corr], DetectionOptions())
    assert cst.correlation is not None
    before = (cst.stats.events, _counters(cst))
    assert sp.sigma_process(cst, *args) is None
    assert (cst.stats.events, _counters(cst)) == before


@needs_ext
def test_matched_event_and_source_built_in_c_equal_the_python_functions(corpus, tmp_path):
    """With the field cap given to ``setup_sigma_alerts`` (as the stage gives it),
    ``sigma_alerts`` builds each alert's ``event`` and ``source_file`` itself, once per event,
    without calling ``alerts.matched_event`` / ``source_of``: the same values as they give
    (over the 256-field cap, ``None`` values left out, long values cut, a Path origin as its
    string, no origin, an origin without a file), the same JSON lines, and each alert its own
    dicts. Without the cap the functions are called per alert, as before."""
    from sysmonx.detection import alerts as alerts_mod
    st = _stage(corpus)
    ev, hits = _proc_event(st)
    assert len(hits) >= 2, "the synthetic event should match several rules"
    data = dict(ev.data)
    data["Empty"] = None
    data["Long"] = "x" * (st.options.max_field_chars + 5)
    for i in range(alerts_mod.MAX_EVENT_FIELDS + 10):
        data[f"Extra{i}"] = str(i)
    rows = st._alert_rows()
    limit = st.options.max_field_chars  # what _alert cuts at
    calls = []

    def source_of(event):
        calls.append("source_of")
        return alerts_mod.source_of(event)

    def matched_event(event, limit):
        calls.append("matched_event")
        return alerts_mod.matched_event(event, limit)

    try:
        for cap in (alerts_mod.MAX_EVENT_FIELDS, None):
            if cap is None:
                sp.setup_sigma_alerts(source_of, matched_event)
            else:
                sp.setup_sigma_alerts(source_of, matched_event, cap)
            for origin in ((tmp_path / "a.evtx", 7), ("b.evtx", 8), None, (None, 3)):
                calls.clear()
                big = Event(1, data, time_created=ev.time_created, record_id=42,
                            computer="PC", origin=origin)
                got = sp.sigma_alerts(st, big, hits, rows, limit, Alert)
                want = [st._alert(r, big) for r in hits]
                assert got == want
                assert [a.to_json() for a in got] == [a.to_json() for a in want]
                assert len(got[0].event["EventData"]) == alerts_mod.MAX_EVENT_FIELDS - 1
                assert got[0].event["EventData"]["Long"] == "x" * limit + "…"
                assert got[0].source_file == (None if not origin or origin[0] is None
                                              else str(origin[0]))
                assert len({id(a.event) for a in got}) == len(got)
                assert len({id(a.event["EventData"]) for a in got}) == len(got)
                assert calls == ([] if cap is not None else
                                 ["source_of", "matched_event"] * len(hits))
    finally:
        sp.setup_sigma_alerts(alerts_mod.source_of, alerts_mod.matched_event,
                              alerts_mod.MAX_EVENT_FIELDS)


@needs_ext
def test_matched_event_system_values_built_in_c_equal_python(corpus):
    """The matched event's TimeCreated, Provider, Channel and Computer built in C equal
    ``alerts.matched_event``'s: a canonical time (cut to Sysmon's 7 digits), an odd time
    string (kept), an empty one, None values (``""``), a provider of the event's own; the
    same JSON lines as the Python stage's."""
    st = _stage(corpus)
    ev, hits = _proc_event(st)
    rows = st._alert_rows()
    limit = st.options.max_field_chars
    times = ("2024-01-01T00:00:00.123456789Z", "2024-01-01 00:00:00.123", "")
    for t in times:
        for provider, channel in (("Microsoft-Windows-Sysmon", "Microsoft-Windows-Sysmon/"
                                   "Operational"), (None, None), ("Linux-Sysmon", "")):
            e = Event(1, dict(ev.data), time_created=t, record_id=5, computer=None,
                      provider=provider, channel=channel)  # type: ignore[arg-type]
            got = sp.sigma_alerts(st, e, hits, rows, limit, Alert)
            want = [st._alert(r, e) for r in hits]
            assert got == want
            assert [a.to_json() for a in got] == [a.to_json() for a in want]
            m = got[0].event
            assert m["TimeCreated"] == (t[:27] + "Z" if len(t) == 30 else t)
            assert m["Provider"] == (provider or "") and m["Channel"] == (channel or "")
            assert m["Computer"] == ""
