"""The filter's plan cache (:mod:`sysmonx.filtering.plancache`): deciders built from stored
plans decide every corpus event exactly as freshly compiled ones (and as the plain walk), under
every corpus config, whichever EventID comes first; a damaged, foreign or ill-fitting entry is
ignored with a note and compiled again; what compiling refuses is refused when the engine is
built, with the cache present; the key follows the rule sets, not the file."""

from __future__ import annotations

import hashlib
import marshal

import pytest

from sysmonx.config import load_config, parse_config
from sysmonx.core.errors import RegexError
from sysmonx.filtering import EngineOptions, FilterEngine
from sysmonx.filtering import plancache as plancache_mod
from sysmonx.filtering.plancache import PlanCache, plans_key

from test_filter_index import (NAMED, WALK, _config_paths, _distinct_events,  # noqa: F401
                               corpus_events)

SMALL = ('<Sysmon schemaversion="4.90"><EventFiltering>'
         '<RuleGroup groupRelation="or"><ProcessCreate onmatch="include">'
         '<Image condition="end with" name="t1">\\cmd.exe</Image>'
         '<Rule name="both" groupRelation="and"><Image condition="contains">power</Image>'
         '<CommandLine condition="contains">-enc</CommandLine></Rule>'
         '<ParentImage condition="excludes" name="noexp">explorer</ParentImage>'
         '</ProcessCreate></RuleGroup>'
         '<RuleGroup groupRelation="and"><ProcessCreate onmatch="exclude">'
         '<User condition="is">SYSTEM</User><Image condition="begin with">c:\\windows</Image>'
         '</ProcessCreate></RuleGroup>'
         '<NetworkConnect onmatch="exclude"><DestinationPort condition="is">443</DestinationPort>'
         '</NetworkConnect></EventFiltering></Sysmon>')
EVENTS = [(1, {"Image": "C:\\x\\cmd.exe", "User": "bob"}),
          (1, {"Image": "powershell.exe", "CommandLine": "a -enc b"}),
          (1, {"Image": "c:\\windows\\cmd.exe", "User": "SYSTEM"}),
          (1, {"Image": "notepad.exe"}),
          (1, {"Image": "notepad.exe", "ParentImage": "C:\\Windows\\explorer.exe"}),
          (3, {"DestinationPort": "443"}), (3, {"DestinationPort": "80"})]
# the "excludes" filter has no literal to index: an item every event evaluates (``always``)
WANT = [(True, "t1"), (True, "both"), (False, "-"), (True, "noexp"), (False, "-"),
        (False, "-"), (True, "-")]


def _decide(engine) -> list:
    return [engine.decide(eid, data) for eid, data in EVENTS]


@pytest.fixture
def store(tmp_path) -> PlanCache:
    return PlanCache(tmp_path / "filter")


def _entry(store):
    (entry,) = store.directory.glob("*.marshal")
    return entry


def test_stored_plans_are_used_and_decide_alike(store, monkeypatch):
    cfg = parse_config(SMALL)
    first = FilterEngine(cfg, plan_cache=store)
    assert first.plan_cache_status == "miss"
    assert _decide(first) == WANT
    first.save_plans()
    assert first.plan_cache_status == "stored"
    # a second engine compiles nothing: no rule set is planned, no plan assembled
    from sysmonx.filtering import engine as engine_mod

    def no_compile(*a, **k):
        raise AssertionError("compiled although the plan was stored")
    monkeypatch.setattr(engine_mod, "assemble_plan", no_compile)
    monkeypatch.setattr(engine_mod, "set_entries", no_compile)
    monkeypatch.setattr(engine_mod, "literals", no_compile)
    second = FilterEngine(cfg, plan_cache=store)
    assert second.plan_cache_status == "hit"
    assert _decide(second) == WANT
    second.save_plans()  # nothing new: not written again
    assert second.plan_cache_status == "hit"


def test_new_eventids_are_added_to_the_entry(store):
    cfg = parse_config(SMALL)
    e = FilterEngine(cfg, plan_cache=store)
    e.decide(3, {"DestinationPort": "80"})
    e.save_plans()
    e2 = FilterEngine(cfg, plan_cache=store)
    assert _decide(e2) == WANT  # EventID 1 compiled now, 3 from the entry
    e2.save_plans()
    assert e2.plan_cache_status == "stored"
    plans = store.get(plans_key(cfg, EngineOptions()))
    assert plans is not None and {k[0] for k in plans} == {"ProcessCreate", "NetworkConnect"}


@pytest.mark.parametrize("rel", _config_paths())
def test_cached_plans_decide_every_corpus_event_as_a_fresh_compile(corpus_events, corpus, rel,  # noqa: F811
                                                                    tmp_path):
    cfg = load_config(corpus / rel, cache=False)
    events = _distinct_events(corpus_events, cfg)
    store = PlanCache(tmp_path)
    fresh = FilterEngine(cfg, plan_cache=store)
    want = [fresh.decide(eid, d) for eid, d in events]
    fresh.save_plans()
    assert want == [FilterEngine(cfg, WALK).decide(eid, d) for eid, d in events]
    forward, backward = FilterEngine(cfg, plan_cache=store), FilterEngine(cfg, plan_cache=store)
    if events:
        assert forward.plan_cache_status == "hit"
    assert [forward.decide(eid, d) for eid, d in events] == want
    assert [backward.decide(eid, d) for eid, d in reversed(events)][::-1] == want
    assert not forward._new_plans and not backward._new_plans  # every plan came from the entry


def test_damaged_entry_is_ignored_with_a_note_and_rebuilt(store, capsys):
    cfg = parse_config(SMALL)
    e = FilterEngine(cfg, plan_cache=store)
    _decide(e)
    e.save_plans()
    entry = _entry(store)
    data = bytearray(entry.read_bytes())
    data[-3] ^= 0x55
    entry.write_bytes(bytes(data))
    e2 = FilterEngine(cfg, plan_cache=store)
    assert e2.plan_cache_status == "ignored"
    err = capsys.readouterr().err
    assert "sysmonx: note: filter plan cache entry" in err and "damaged" in err
    assert _decide(e2) == WANT
    e2.save_plans()
    assert e2.plan_cache_status == "stored"
    assert FilterEngine(cfg, plan_cache=store).plan_cache_status == "hit"


def _rewrite(store, cfg, change) -> None:
    key = plans_key(cfg, EngineOptions())
    entry = store.entry(key)
    head = len(plancache_mod._MAGIC) + 64
    plans = marshal.loads(entry.read_bytes()[head + 32:])
    payload = marshal.dumps(change(plans))
    entry.write_bytes(entry.read_bytes()[:head] + hashlib.sha256(payload).digest() + payload)


@pytest.mark.parametrize("change,reason", [
    (lambda plans: ["not", "a", "dict"], "not a dict of plans"),
    # a member reference outside the config: refused before any event is decided with it
    (lambda plans: {k: p[:4] + ((("f", (0, 99, True)),) * len(p[4]),) + p[5:]
                    for k, p in plans.items()}, "bad member reference"),
    # item numbers that do not fit the plan
    (lambda plans: {k: p[:7] + ((10_000,),) + p[8:] for k, p in plans.items()},
     "inconsistent plan"),
    (lambda plans: {k: (1, 2) for k in plans}, "ignored and rebuilt"),
])
def test_foreign_or_ill_fitting_plans_are_compiled_again(store, capsys, change, reason):
    cfg = parse_config(SMALL)
    e = FilterEngine(cfg, plan_cache=store)
    _decide(e)
    e.save_plans()
    _rewrite(store, cfg, change)
    e2 = FilterEngine(cfg, plan_cache=store)
    assert _decide(e2) == WANT
    err = capsys.readouterr().err
    assert "filter plan cache entry" in err and reason in err
    e2.save_plans()
    assert e2.plan_cache_status == "stored"
    e3 = FilterEngine(cfg, plan_cache=store)
    assert _decide(e3) == WANT and capsys.readouterr().err == ""


def test_key_follows_the_rule_sets_and_the_options(store):
    cfg = parse_config(SMALL)
    other = parse_config(SMALL.replace("443", "8443"))
    assert plans_key(cfg, EngineOptions()) == plans_key(parse_config(SMALL), EngineOptions())
    assert plans_key(cfg, EngineOptions()) != plans_key(other, EngineOptions())
    assert plans_key(cfg, EngineOptions()) != plans_key(cfg, EngineOptions(stale_rulename=False))
    # a model changed after loading gets its own plans, never the stored ones of the original
    e = FilterEngine(cfg, plan_cache=store)
    _decide(e)
    e.save_plans()
    cfg.rule_sets[-1].filters[0] = type(cfg.rule_sets[-1].filters[0])(
        "DestinationPort", "is", "80")
    changed = FilterEngine(cfg, plan_cache=store)
    assert changed.plan_cache_status == "miss"
    assert changed.decide(3, {"DestinationPort": "80"}) == (False, "-")
    assert changed.decide(3, {"DestinationPort": "443"}) == (True, "-")


def test_compile_errors_are_raised_when_the_engine_is_built_with_plans_stored(store):
    many = "".join(f'<CommandLine condition="regex">a{i}b</CommandLine>' for i in range(1023))
    cfg = parse_config('<Sysmon schemaversion="4.90"><EventFiltering><ProcessCreate onmatch='
                       f'"include">{many}</ProcessCreate><ProcessAccess onmatch="include">'
                       '<SourceImage condition="regex">\\pL{20}</SourceImage></ProcessAccess>'
                       '</EventFiltering></Sysmon>')
    with pytest.raises(RegexError, match="too large"):
        FilterEngine(cfg, plan_cache=store)
    # the same config without the offending filter stores plans; its error comes back at load
    ok = parse_config(SMALL)
    e = FilterEngine(ok, plan_cache=store)
    e.compile_all()
    assert e.plan_cache_status == "stored"
    with pytest.raises(RegexError, match="too large"):
        FilterEngine(cfg, plan_cache=store)


def test_environment_switch_turns_the_default_plan_cache_off(tmp_path, monkeypatch):
    monkeypatch.setenv("SYSMONX_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SYSMONX_CONFIG_CACHE", "off")
    e = FilterEngine(parse_config(SMALL))
    e.compile_all()
    assert e.plan_cache_status == "off" and not (tmp_path / "filter").exists()
    monkeypatch.delenv("SYSMONX_CONFIG_CACHE")
    e = FilterEngine(parse_config(SMALL))
    e.compile_all()
    assert e.plan_cache_status == "noted"   # the default cache stores at the second run
    e = FilterEngine(parse_config(SMALL))
    e.compile_all()
    assert e.plan_cache_status == "stored"
    assert len(list((tmp_path / "filter").glob("*.marshal"))) == 1


def test_the_filter_stage_stores_plans_at_the_end(tmp_path):
    from sysmonx.filtering.stage import FilterStage
    store = PlanCache(tmp_path)
    eng = FilterEngine(parse_config(SMALL), plan_cache=store)
    stage = FilterStage(None, engine=eng)
    eng.decide(1, {"Image": "x"})
    assert not list(tmp_path.glob("*.marshal"))
    stage.finish(lambda item: None)
    assert eng.plan_cache_status == "stored" and len(list(tmp_path.glob("*.marshal"))) == 1


def test_the_engines_own_plan_cache_stores_at_the_second_run(tmp_path, monkeypatch):
    """FilterEngine(plan_cache=True) stores plans the second time the same rule sets finish
    (a first run leaves a marker only), and the third engine uses them."""
    from sysmonx.filtering.stage import FilterStage
    monkeypatch.setenv("SYSMONX_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("SYSMONX_CONFIG_CACHE", raising=False)
    d = tmp_path / "filter"
    statuses = []
    for _ in range(2):
        eng = FilterEngine(parse_config(SMALL), plan_cache=True)
        eng.decide(1, {"Image": "x"})
        FilterStage(None, engine=eng).finish(lambda item: None)
        statuses.append(eng.plan_cache_status)
    assert statuses == ["noted", "stored"]
    assert len(list(d.glob("*.marshal"))) == 1 and not list(d.glob("*.seen"))
    third = FilterEngine(parse_config(SMALL), plan_cache=True)
    assert third.plan_cache_status == "hit"


@pytest.mark.parametrize("rel", NAMED)
def test_a_later_run_builds_what_a_first_run_builds_event_by_event(corpus_events, corpus, rel,  # noqa: F811
                                                                    tmp_path):
    """A later run (deciders built from the stored plans) does on each EventID's first event
    exactly what a first run (deciders compiled) does: the same decision, the same filters
    compiled into predicates (none built ahead by one and late by the other) and the same
    bytes in the memo tables, after every one of those events; so its first pass over the
    records costs what a first run's does."""
    cfg = load_config(corpus / rel, cache=False)
    firsts: dict = {}
    for eid, data in _distinct_events(corpus_events, cfg):
        firsts.setdefault(eid, data)
    assert len(firsts) >= 20
    store = PlanCache(tmp_path)
    filling = FilterEngine(cfg, plan_cache=store)
    for eid, data in firsts.items():
        filling.decide(eid, data)
    filling.save_plans()
    first, later = FilterEngine(cfg, plan_cache=False), FilterEngine(cfg, plan_cache=store)
    assert later.plan_cache_status == "hit"
    built = 0
    for eid, data in firsts.items():
        assert first.decide(eid, data) == later.decide(eid, data), eid
        assert set(first._compiler.members) == set(later._compiler.members), eid
        assert first.memo.used == later.memo.used > 0, eid
        built = len(first._compiler.members)
    assert built > 0 and not later._new_plans  # every decider came from the entry
