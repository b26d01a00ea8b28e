"""The indexed filter (``EngineOptions(indexed=True)``, the default) decides exactly as the plain
walk (``indexed=False``): include/exclude and RuleName, on every Sysmon event of the corpus under
every corpus configuration, on events built from each configuration's own literals, and on the
cases the index has to get right by construction (names left behind, long values, the markers
the automaton uses).

The corpus is decoded once per session. A decision depends only on the event id and on the
values of the fields the configuration tests for that id (both deciders read ``data.get(field)``
for those fields alone), so each event is kept as its projection onto the fields any corpus
configuration tests, and each configuration decides each distinct projection onto its own
fields once, on a representative carrying every projected field.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from sysmonx.config import load_config, parse_config
from sysmonx.filtering import EngineOptions, FilterEngine
from sysmonx.filtering import index as index_mod
from sysmonx.filtering.conditions import contains_terms
from sysmonx.filtering.index import literals
from sysmonx.schema import CURRENT
from sysmonx.sources import iter_input_files, open_source

from conftest import corpus_path

INPUT_DIRS = ("evtx", "json", "linux", "sigma/regression_data")
INDEXED, WALK = EngineOptions(), EngineOptions(indexed=False)
#: Community configurations with named rules: on them the comparison must see both decisions and
#: named matches (so it cannot pass by comparing constants).
NAMED = ("configs/olafhartong__sysmon-modular/sysmonconfig.xml",
         "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml",
         "configs/Neo23x0__sysmon-config/sysmonconfig-export.xml")


def _config_paths() -> list:
    """The corpus configurations (relative paths), or one skipped parameter without a corpus."""
    root = corpus_path()
    if root is None:
        return [pytest.param(None, marks=pytest.mark.skip(
            reason="reference corpus not available (set SYSMONX_CORPUS)"))]
    return sorted(str(p.relative_to(root)) for p in (root / "configs").rglob("*.xml"))


def _tag_fields(cfg) -> dict[int, tuple]:
    """EventID -> the fields the configuration tests for it (sorted)."""
    by_tag: dict[str, set] = defaultdict(set)
    for rs in cfg.rule_sets:
        by_tag[rs.tag].update(f.field for f in rs.filters)
    return {eid: tuple(sorted(by_tag.get(ev.tag, ()))) for eid, ev in CURRENT.events.items()}


class CorpusEvents:
    """Every Sysmon event of the corpus, projected (see the module docstring)."""

    def __init__(self, root: Path):
        self.configs = {rel: load_config(root / rel) for rel in _config_paths()
                        if isinstance(rel, str)}
        union: dict[int, set] = defaultdict(set)
        for cfg in self.configs.values():
            for eid, fields in _tag_fields(cfg).items():
                union[eid].update(fields)
        self.fields = {eid: tuple(sorted(f)) for eid, f in union.items()}
        self.counts: Counter = Counter()       # (eid, projection) -> events
        self.files = 0
        errors = []
        paths = [str(root / d) for d in INPUT_DIRS if (root / d).is_dir()]
        for path in iter_input_files(paths):
            self.files += 1
            for ev in open_source(path, errors.append):
                if not ev.is_sysmon:
                    continue
                names = self.fields.get(ev.event_id, ())
                data = ev.data
                self.counts[(ev.event_id, tuple(data.get(f) for f in names))] += 1
        self.events = sum(self.counts.values())


@pytest.fixture(scope="session")
def corpus_events(corpus) -> CorpusEvents:
    return CorpusEvents(corpus)


def test_corpus_has_the_expected_inputs(corpus_events):
    # 155 EVTX (42 + 113 Sigma regression cases), 113 JSON renderings, 8 JSON datasets in
    # archives, one Sysmon for Linux syslog; 143 configurations (7 community, 136 SysmonCommon).
    assert corpus_events.files == 277
    assert len(corpus_events.configs) == 143
    assert corpus_events.events > 60_000


@pytest.mark.parametrize("rel", _config_paths())
def test_indexed_decides_as_the_walk_on_every_corpus_event(corpus_events, rel):
    cfg = corpus_events.configs[rel]
    indexed, walk = FilterEngine(cfg, INDEXED), FilterEngine(cfg, WALK)
    own = _tag_fields(cfg)
    outcomes: Counter = Counter()
    decided = covered = 0
    mismatches = []
    distinct: dict = {}
    for (eid, proj), n in corpus_events.counts.items():
        names = corpus_events.fields.get(eid, ())
        pick = [i for i, f in enumerate(names) if f in set(own.get(eid, ()))]
        key = (eid, tuple(proj[i] for i in pick))
        seen = distinct.get(key)
        if seen is None:
            data = {f: v for f, v in zip(names, proj, strict=False) if v is not None}
            got, want = indexed.decide(eid, data), walk.decide(eid, data)
            decided += 1
            if got != want and len(mismatches) < 5:
                mismatches.append((eid, data, got, want))
            distinct[key] = seen = want
        outcomes[(seen[0], seen[1] not in (None, "-"))] += n
        covered += n
    assert not mismatches, f"{rel}: indexed != walk (event id, data, indexed, walk): {mismatches}"
    assert covered == corpus_events.events
    assert decided > 0
    if rel in NAMED:
        # the comparison means something: both outcomes and named matches occur
        assert outcomes[(True, True)] and outcomes[(False, False)], outcomes


# ---- events built from each configuration's own literals ---------------------------------------

def _matching_values(condition: str, value: str) -> list[str]:
    """Values a filter matches (or nearly matches), from its rule value."""
    out = [value, value.upper(), "x" + value, value + "x", "c:\\dir\\" + value]
    if condition in ("contains any", "contains all", "is any", "excludes any", "excludes all"):
        pieces = [p for p in contains_terms(value) if p]
        out += pieces + [" ".join(pieces)]
    return out


@pytest.mark.parametrize("rel", _config_paths())
def test_indexed_decides_as_the_walk_on_literal_built_events(corpus, rel):
    """Random events whose values come from the configuration's own rule values (so groups match
    in part, names are left behind, same-field ORs and AND sets are exercised)."""
    cfg = load_config(corpus / rel)
    indexed, walk = FilterEngine(cfg, INDEXED), FilterEngine(cfg, WALK)
    pools: dict[str, list] = defaultdict(lambda: ["-", "", "C:\\Windows\\System32\\svchost.exe"])
    tag_fields: dict[str, set] = defaultdict(set)
    for rs in cfg.rule_sets:
        for f in rs.filters:
            pools[f.field].extend(_matching_values(f.condition, f.value))
            tag_fields[rs.tag].add(f.field)
    rng = random.Random(rel)
    named = 0
    for eid, ev in CURRENT.events.items():
        fields = sorted(tag_fields.get(ev.tag, ()))
        if not fields:
            continue
        for _ in range(150):
            data = {f: rng.choice(pools[f]) for f in fields if rng.random() < 0.8}
            got, want = indexed.decide(eid, data), walk.decide(eid, data)
            assert got == want, (rel, eid, data, got, want)
            named += want[1] not in (None, "-")
    if rel in NAMED:
        assert named > 0


# ---- generated configurations --------------------------------------------------------------------

CONDITIONS = ("is", "is not", "contains", "contains any", "is any", "contains all", "excludes",
              "excludes any", "excludes all", "begin with", "end with", "less than", "more than",
              "image", "not begin with", "not end with")
RULE_VALUES = ("abc", "xyz", "ab", "q", "-", "c:\\w\\abc.exe", "abc.exe", "abc;xyz", "abc;",
               ";xyz", "abc;;xyz", "ab;q", "c:\\w\\", ".exe", "")
EVENT_PIECES = ("abc", "xyz", "ab", "q", "ABC", "c:\\w\\", "abc.exe", ";", ".exe", "\\")
TAGS = {"ProcessCreate": (1, ("Image", "CommandLine", "User", "ParentImage")),
        "RegistryEvent": ((12, 13, 14), ("TargetObject", "Details", "User", "NewName"))}


def _random_config(rng: random.Random, tag: str) -> str:
    """A configuration of 1-4 rule sets for ``tag`` mixing everything spec 3 distinguishes:
    AND/OR sets (schema default and RuleGroup), same-field filters, AND/OR <Rule> groups, names on
    filters, Rules and RuleGroups, include and exclude."""
    fields = TAGS[tag][1]
    if tag == "RegistryEvent":
        fields = rng.choice((fields[:3], fields[:2] + fields[3:]))  # one id must hold them all

    def filt() -> str:
        name = f' name="n{rng.randrange(9)}"' if rng.random() < 0.4 else ""
        field = rng.choice(fields)
        return (f'<{field} condition="{rng.choice(CONDITIONS)}"{name}>{rng.choice(RULE_VALUES)}'
                f"</{field}>")

    sets = []
    for _ in range(rng.randint(1, 4)):
        body = []
        for _ in range(rng.randint(1, 6)):
            if rng.random() < 0.35:
                name = f' name="r{rng.randrange(9)}"' if rng.random() < 0.5 else ""
                rel = rng.choice(("and", "or"))
                members = "".join(filt() for _ in range(rng.randint(1, 3)))
                body.append(f'<Rule groupRelation="{rel}"{name}>{members}</Rule>')
            else:
                body.append(filt())
        element = (f'<{tag} onmatch="{rng.choice(("include", "exclude"))}">{"".join(body)}'
                   f"</{tag}>")
        if rng.random() < 0.7:
            name = f' name="g{rng.randrange(9)}"' if rng.random() < 0.5 else ""
            element = (f'<RuleGroup groupRelation="{rng.choice(("and", "or"))}"{name}>'
                       f"{element}</RuleGroup>")
        sets.append(element)
    return "".join(sets)


@pytest.mark.parametrize("seed", range(40))
def test_indexed_decides_as_the_walk_on_generated_configs(seed):
    rng = random.Random(seed)
    outcomes: Counter = Counter()
    for _ in range(10):
        tag = rng.choice(sorted(TAGS))
        c = _cfg(_random_config(rng, tag))
        ids = TAGS[tag][0] if isinstance(TAGS[tag][0], tuple) else (TAGS[tag][0],)
        for opts in ({}, {"stale_rulename": False}, {"fallback": "intent"}):
            indexed = FilterEngine(c, EngineOptions(**opts))
            walk = FilterEngine(c, EngineOptions(indexed=False, **opts))
            for _ in range(60):
                data = {f: "".join(rng.choice(EVENT_PIECES) for _ in range(rng.randint(0, 3)))
                        for f in TAGS[tag][1] if rng.random() < 0.85}
                eid = rng.choice(ids)
                want = walk.decide(eid, data)
                assert indexed.decide(eid, data) == want, (opts, eid, data)
                outcomes[(want[0], want[1] != "-")] += 1
    # named inclusions and exclusions occur, so the comparison cannot pass on constants
    assert outcomes[(True, True)] and outcomes[(False, False)] + outcomes[(False, True)], outcomes


# ---- cases the index must get right by construction --------------------------------------------

def _cfg(inner: str, version: str = "4.90"):
    return parse_config(f'<Sysmon schemaversion="{version}"><EventFiltering>{inner}'
                        "</EventFiltering></Sysmon>")


def _both(inner: str, eid: int, data: dict, version: str = "4.90", **opts):
    c = _cfg(inner, version)
    got = FilterEngine(c, EngineOptions(**opts)).decide(eid, data)
    want = FilterEngine(c, EngineOptions(indexed=False, **opts)).decide(eid, data)
    assert got == want
    return got


STALE_IN_SET = ('<RuleGroup groupRelation="or"><ProcessCreate onmatch="include">'
                '<Rule name="partial" groupRelation="and">'
                '<Image condition="end with">\\powershell.exe</Image>'
                '<CommandLine condition="contains">-enc</CommandLine></Rule>'
                '<ParentImage condition="end with">\\winword.exe</ParentImage>'
                "</ProcessCreate></RuleGroup>")


def test_name_left_by_a_failed_and_group_names_a_later_unnamed_match():
    # The group's first member matches and sets "partial", its second fails; the unnamed
    # ParentImage filter then matches the set: Sysmon reports the name left behind (spec 3.6).
    ev = {"Image": "C:\\x\\powershell.exe", "CommandLine": "powershell -nop",
          "ParentImage": "C:\\Office\\WINWORD.EXE"}
    assert _both(STALE_IN_SET, 1, ev) == (True, "partial")
    ev["Image"] = "C:\\x\\cmd.exe"
    assert _both(STALE_IN_SET, 1, ev) == (True, "-")


def test_and_group_gated_on_an_unnamed_first_member_before_its_named_one():
    inner = ('<RuleGroup groupRelation="or"><ProcessCreate onmatch="include">'
             '<Rule groupRelation="and"><Image condition="is">c:\\a.exe</Image>'
             '<CommandLine name="second" condition="contains">zz</CommandLine>'
             '<User condition="is">bob</User></Rule>'
             '<IntegrityLevel condition="is">High</IntegrityLevel></ProcessCreate></RuleGroup>')
    ev = {"Image": "C:\\a.exe", "CommandLine": "zzz", "User": "eve", "IntegrityLevel": "High"}
    assert _both(inner, 1, ev) == (True, "second")
    assert _both(inner, 1, dict(ev, User="bob")) == (True, "second")
    assert _both(inner, 1, dict(ev, Image="c:\\b.exe")) == (True, "-")


def test_and_set_with_named_filters_and_same_field_or():
    # Schema 4.90 without a groupRelation: AND, same field OR (spec 3.4). Include sets run in
    # reverse document order: the AND set first, so its left-behind name reaches the User set.
    inner = ('<ProcessCreate onmatch="include"><User condition="is">root</User></ProcessCreate>'
             '<ProcessCreate onmatch="include"><Image name="a" condition="end with">\\a.exe</Image>'
             '<Image name="b" condition="end with">\\b.exe</Image>'
             '<CommandLine condition="contains">go</CommandLine></ProcessCreate>')
    assert _both(inner, 1, {"Image": "C:\\b.exe", "CommandLine": "go"}) == (True, "b")
    assert _both(inner, 1, {"Image": "C:\\a.exe", "CommandLine": "stop", "User": "root"}) == \
        (True, "a")
    assert _both(inner, 1, {"Image": "C:\\c.exe", "User": "root"}) == (True, "-")
    assert _both(inner, 1, {"Image": "C:\\c.exe"}) == (False, "-")


def test_long_values_are_not_scanned_but_decide_the_same():
    inner = ('<RuleGroup groupRelation="or"><ProcessCreate onmatch="include">'
             '<CommandLine name="tail" condition="end with">-tail</CommandLine>'
             '<CommandLine name="mid" condition="contains">needle</CommandLine>'
             "</ProcessCreate></RuleGroup>")
    long = "a" * (index_mod.SCAN_LIMIT + 10)
    assert _both(inner, 1, {"CommandLine": long + "-TAIL"}) == (True, "tail")
    assert _both(inner, 1, {"CommandLine": long + "needle"}) == (True, "mid")
    assert _both(inner, 1, {"CommandLine": long}) == (False, "-")


def test_values_holding_the_scan_markers():
    inner = ('<RuleGroup groupRelation="or"><ProcessCreate onmatch="include">'
             '<Image name="is" condition="is">abc</Image>'
             '<Image name="begin" condition="begin with">xyz</Image></ProcessCreate></RuleGroup>')
    assert _both(inner, 1, {"Image": "q\x02abc\x03q"}) == (False, "-")
    assert _both(inner, 1, {"Image": "\x02xyz"}) == (False, "-")
    assert _both(inner, 1, {"Image": "xyz\x03\x02abc"}) == (True, "begin")
    assert _both(inner, 1, {"Image": "ABC"}) == (True, "is")


def test_rulename_field_is_dash_for_the_index_too():
    inner = ('<RuleGroup groupRelation="or"><ProcessCreate onmatch="include">'
             '<RuleName name="dash">-</RuleName></ProcessCreate></RuleGroup>')
    assert _both(inner, 1, {"RuleName": "technique_id=T1059"}) == (True, "dash")


def test_scan_memo_stays_within_its_budget():
    inner = ('<RuleGroup groupRelation="or"><ProcessCreate onmatch="include">'
             '<Image condition="end with">\\cmd.exe</Image>'
             '<CommandLine condition="contains">needle</CommandLine></ProcessCreate></RuleGroup>')
    engine = FilterEngine(_cfg(inner))
    engine.memo.total = engine.memo.left = 200_000  # small, to see it fill and empty
    decide = engine.decider_for(1)
    for i in range(3 * index_mod.MEMO_ENTRIES):
        ev = {"Image": f"C:\\{i}\\cmd.exe", "CommandLine": f"{i} needle " + "x" * (i % 3000)}
        assert decide(ev) == (True, "-")
        assert 0 <= engine.memo.left and engine.memo.used <= 200_000
    # the account matches what the tables hold (a compiled decider's tables are its Python
    # definition's)
    readers = next(c.cell_contents for c in getattr(decide, "python", decide).__closure__
                   if isinstance(c.cell_contents, tuple) and c.cell_contents
                   and isinstance(c.cell_contents[0], tuple) and len(c.cell_contents[0]) == 4)
    held = sum(256 + (2 * len(raw) if raw else 0) for _, memo, _, _ in readers for raw in memo)
    assert held == engine.memo.used > 0
    assert all(len(memo) <= index_mod.MEMO_ENTRIES for _, memo, _, _ in readers)
    # a value longer than SCAN_LIMIT is neither scanned nor memoised
    decide({"Image": "y" * (index_mod.SCAN_LIMIT + 1)})
    assert all(len(raw or "") <= index_mod.SCAN_LIMIT for _, memo, _, _ in readers for raw in memo)


def test_environment_expansion_failure_and_absent_fields():
    # Registry User is bound to 12's position; in 13/14 it is absent (spec 1.5): NoMatch.
    inner = ('<RegistryEvent onmatch="include"><User name="u" condition="is">alice</User>'
             '</RegistryEvent>')
    for eid in (12, 13, 14):
        assert _both(inner, eid, {"User": "alice"}) == ((True, "u") if eid == 12 else (False, "-"))
    inner = ('<RuleGroup groupRelation="or"><ProcessCreate onmatch="include">'
             '<Image name="env" condition="begin with">%BIG%</Image></ProcessCreate></RuleGroup>')
    assert _both(inner, 1, {"Image": "x"}, environment={"BIG": "y" * 40000}) == (False, "-")


@pytest.mark.parametrize("condition,value,expected", [
    ("is", "a", {"\x02a\x03"}),
    ("is any", "80;;443;", {"\x0280\x03", "\x02443\x03"}),
    ("is any", ";;", set()),
    ("image", "cmd.exe", {"\x02cmd.exe\x03", "\\cmd.exe\x03"}),
    ("image", "c:\\cmd.exe", {"\x02c:\\cmd.exe\x03"}),
    ("begin with", "c:\\", {"\x02c:\\"}),
    ("begin with", "", None),
    ("end with", ".exe", {".exe\x03"}),
    ("contains", "abc", {"abc"}),
    ("contains", "a", {"a"}),
    ("contains", "", None),
    ("contains any", "abc;def", {"abc", "def"}),
    ("contains any", "abc;def;", None),            # trailing ';' matches everything
    ("contains any", "abc;;def", {"abc", ";def", "def"}),
    ("contains all", "ab;cdef", {"cdef"}),
    ("contains all", ";", {";"}),
    ("excludes", "abc", None),
    ("is not", "abc", None),
    ("less than", "1024", None),
    ("regex", "a+", None),
])
def test_literals(condition, value, expected):
    got = literals(condition, value)
    assert (None if got is None else set(got)) == expected


# ---- deciders compiled on each EventID's first event ---------------------------------------------

def _distinct_events(corpus_events, cfg) -> list:
    """``(eid, data)`` of each distinct projection of the corpus onto ``cfg``'s fields."""
    own = _tag_fields(cfg)
    out, seen = [], set()
    for eid, proj in corpus_events.counts:
        names = corpus_events.fields.get(eid, ())
        mine = set(own.get(eid, ()))
        key = (eid, tuple(v for f, v in zip(names, proj, strict=False) if f in mine))
        if key not in seen:
            seen.add(key)
            out.append((eid, {f: v for f, v in zip(names, proj, strict=False) if v is not None}))
    return out


@pytest.mark.parametrize("rel", _config_paths())
def test_lazy_deciders_decide_alike_whichever_eventid_comes_first(corpus_events, rel):
    # one engine meets the corpus's EventIDs in corpus order, one in reverse order, one had
    # every decider compiled before the first event: same decision and RuleName per event
    cfg = corpus_events.configs[rel]
    events = _distinct_events(corpus_events, cfg)
    forward, backward, whole = FilterEngine(cfg), FilterEngine(cfg), FilterEngine(cfg)
    whole.compile_all()
    got_f = [forward.decide(eid, data) for eid, data in events]
    got_b = [backward.decide(eid, data) for eid, data in reversed(events)][::-1]
    want = [whole.decide(eid, data) for eid, data in events]
    assert got_f == want
    assert got_b == want


def test_deciders_are_compiled_on_first_use_and_compile_all_forces_them(corpus):
    cfg = load_config(corpus / NAMED[0])
    engine = FilterEngine(cfg)
    assert engine._deciders == {}  # nothing compiled at load
    engine.decide(1, {"Image": "C:\\Windows\\System32\\cmd.exe"})
    assert set(engine._deciders) == {1}
    engine.decider_for(3)
    assert set(engine._deciders) == {1, 3}
    engine.compile_all()
    assert set(engine._deciders) == set(CURRENT.events)
    assert engine.decide(99999, {}) == (True, None)  # not an EventID of the catalogue


@pytest.mark.parametrize("first", [(12, 13, 14), (13, 12, 14), (14, 13, 12)])
def test_multi_id_tag_decides_alike_whichever_id_comes_first(first):
    # the ids of RegistryEvent share a decider where the same fields are present
    inner = ('<RegistryEvent onmatch="include"><TargetObject condition="contains">\\Run'
             '</TargetObject><Details name="d" condition="begin with">C:\\Temp</Details>'
             '</RegistryEvent><RegistryEvent onmatch="include"><NewName name="n" '
             'condition="end with">evil</NewName></RegistryEvent>'
             '<RegistryEvent onmatch="exclude"><Image condition="image">svchost.exe</Image>'
             "</RegistryEvent>")
    data = {"TargetObject": "HKLM\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\x",
            "Details": "C:\\Temp\\a.exe", "NewName": "HKLM\\evil", "Image": "C:\\a\\b.exe"}
    lazy, whole = FilterEngine(_cfg(inner)), FilterEngine(_cfg(inner))
    whole.compile_all()
    got = {eid: lazy.decide(eid, data) for eid in first}
    assert got == {eid: whole.decide(eid, data) for eid in first}
    assert got == {12: (False, "-"), 13: (True, "d"), 14: (True, "n")}


def _programmatic(filters_by_tag: list) -> object:
    """A Config built without the reader (which refuses these errors itself)."""
    from sysmonx.configmodel import Config, Filter, RuleSet
    cfg = _cfg("")
    cfg2 = Config(cfg.path, cfg.sha256, cfg.schema_version, cfg.schema)
    for tag, eid, fl in filters_by_tag:
        cfg2.rule_sets.append(RuleSet(tag, eid, "include", "or", [Filter(*f) for f in fl]))
    return cfg2


def test_compile_errors_are_raised_at_load_not_on_the_first_event():
    from sysmonx.core.errors import RegexError, UsageError
    # an unknown condition on an EventID no event may ever reach
    bad = _programmatic([("ProcessTampering", 25, [("Image", "bogus", "x")])])
    with pytest.raises(UsageError, match="Unknown condition: bogus"):
        FilterEngine(bad)
    bad = _programmatic([("ProcessAccess", 10, [("SourceImage", "regex", "(unclosed")])])
    with pytest.raises(RegexError):
        FilterEngine(bad)
    # two errors: the one a whole compile meets first (EventID 1 before 10) is raised
    bad = _programmatic([("ProcessAccess", 10, [("SourceImage", "regex", "(unclosed")]),
                         ("ProcessCreate", 1, [("Image", "bogus", "x")])])
    with pytest.raises(UsageError, match="Unknown condition: bogus"):
        FilterEngine(bad)
    # a rule set bound to an EventID the catalogue lacks fails as compiling it did
    with pytest.raises(KeyError):
        FilterEngine(_programmatic([("ProcessCreate", 424242, [("Image", "is", "x")])]))


def test_regex_over_the_engines_memory_share_is_refused_at_load():
    # the reader validates each regex with 8 MiB; with 1,024 regex filters the engine gives each
    # 256 KiB, which \pL{20} exceeds: refused when the engine is built, as before
    many = "".join(f'<CommandLine condition="regex">a{i}b</CommandLine>' for i in range(1023))
    cfg = _cfg(f'<ProcessCreate onmatch="include">{many}</ProcessCreate>'
               '<ProcessAccess onmatch="include"><SourceImage condition="regex">\\pL{20}'
               "</SourceImage></ProcessAccess>")
    from sysmonx.core.errors import RegexError
    with pytest.raises(RegexError, match="too large"):
        FilterEngine(cfg)


@pytest.mark.parametrize("rel", NAMED[:2])
@pytest.mark.parametrize("fmt", ["jsonl", "xml"])
def test_replay_with_lazy_deciders_writes_the_same_bytes(corpus, rel, fmt):
    # the corpus EVTX replayed with deciders compiled on first use, and with all of them
    # compiled before the first record: byte-identical output and the same counts
    import io

    from sysmonx.pipeline import Replayer, ReplayOptions, make_writer
    cfg = load_config(corpus / rel)
    files = sorted(str(p) for p in (corpus / "evtx").rglob("*.evtx"))
    outs = []
    for force in (False, True):
        engine = FilterEngine(cfg)
        if force:
            engine.compile_all()
        buf = io.BytesIO()
        writer = make_writer(fmt, buf)
        r = Replayer(ReplayOptions(config=cfg), writer, engine=engine)
        for f in files:
            r.run_file(f)
        writer.flush()
        st = r.stats
        outs.append((buf.getvalue(), st.records, dict(st.included), dict(st.excluded)))
        if not force:
            assert 0 < len(engine._deciders) < len(CURRENT.events)  # only the EventIDs met
    assert outs[0] == outs[1]
    assert outs[0][1] == 1766 and len(outs[0][0]) > 100_000 and sum(outs[0][3].values()) > 100


# ---- the engine plans each rule set straight from its filters -----------------------------------

def _reference_plans(engine: FilterEngine) -> dict:
    """EventID -> the plan :func:`~sysmonx.filtering.index.plan_indexed` gives over the
    engine's outline items (the reference the engine's own planning must equal)."""
    from sysmonx.filtering.engine import NEVER_FILTERED
    out = {}
    compiler = engine._compiler
    for eid, ev in CURRENT.events.items():
        sets = engine._by_tag.get(ev.tag or "", [])
        if eid in NEVER_FILTERED or not sets:
            continue
        ordered = engine._ordered_sets(ev.tag)
        fields = tuple(sorted({f.field for rs in sets for f in rs.filters}))
        if len(sets) == 1:
            fallback = sets[0].default == "include"
        else:
            fallback = engine.options.fallback == "intent" and all(
                rs.onmatch == "exclude" for rs in sets)
        compiled = [(rs.onmatch == "include", rs.relation,
                     compiler.items(rs, compiler.present(rs, eid), outline=True))
                    for rs in ordered]
        out[eid] = index_mod.storable_plan(index_mod.plan_indexed(
            compiled, fields, "RuleName" in fields, fallback, engine.options.stale_rulename,
            engine._ref))
    return out


def _engine_plans(engine: FilterEngine, monkeypatch) -> dict:
    """EventID -> the plan the engine compiles for it."""
    from sysmonx.filtering import engine as engine_mod
    got: list = []
    real = engine_mod.assemble_plan

    def keep(*a, **k):
        plan = real(*a, **k)
        got.append(plan)
        return plan
    monkeypatch.setattr(engine_mod, "assemble_plan", keep)
    out = {}
    for eid in CURRENT.events:
        got.clear()
        engine.decider_for(eid)
        if got:
            out[eid] = index_mod.storable_plan(got[0])
    monkeypatch.setattr(engine_mod, "assemble_plan", real)
    return out


@pytest.mark.parametrize("rel", _config_paths())
def test_engine_plans_equal_the_reference_planning(corpus, rel, monkeypatch):
    cfg = load_config(corpus / rel, cache=None)
    for opts in (EngineOptions(), EngineOptions(environment={"SystemRoot": "C:\\Windows",
                                                             "BIG": "y" * 40000})):
        engine = FilterEngine(cfg, opts, plan_cache=False)
        got = _engine_plans(engine, monkeypatch)
        want = _reference_plans(engine)
        # ids of a multi-id tag that decide alike share one plan: compare each compiled one
        assert got and all(got[eid] == want[eid] for eid in got), rel
        assert set(got) <= set(want)


@pytest.mark.parametrize("seed", range(20))
def test_engine_plans_equal_the_reference_planning_on_generated_configs(seed, monkeypatch):
    rng = random.Random(seed)
    for _ in range(10):
        c = _cfg(_random_config(rng, rng.choice(sorted(TAGS))))
        engine = FilterEngine(c, EngineOptions(), plan_cache=False)
        got = _engine_plans(engine, monkeypatch)
        want = _reference_plans(engine)
        assert all(got[eid] == want[eid] for eid in got)
