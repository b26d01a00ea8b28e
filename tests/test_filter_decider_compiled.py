"""The compiled indexed decision (``_speedups.FilterDecider``) decides as the Python ``decide`` of
``sysmonx.filtering.index.decider_from_plan``, which defines it: the same (include, RuleName)
on the corpus's events under the community configurations (with and without the stale-name
quirk), the same answers for data of other shapes (handed to the Python function), the same
errors, and no memory kept per call.

Each comparison runs two engines on the same config: one built with the extension (its
deciders are ``FilterDecider`` objects) and one built with ``native.speedups`` set to ``None``
(plain Python functions, as ``SYSMONX_PURE_PYTHON=1`` gives). ``tests/test_filter_index.py``
compares the compiled decisions with the plain walk on every corpus event under every corpus
configuration.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from sysmonx.config import load_config, parse_config
from sysmonx.core import native
from sysmonx.filtering import EngineOptions, FilterEngine
from sysmonx.filtering.index import SCAN_LIMIT, build_indexed_decider
from sysmonx.filtering.walk import Member
from sysmonx.sources import iter_input_files, open_source

pytestmark = pytest.mark.skipif(native.speedups is None, reason=native.implementation())

CONFIGS = ("configs/olafhartong__sysmon-modular/sysmonconfig.xml",
           "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml",
           "configs/Neo23x0__sysmon-config/sysmonconfig-export.xml")


def _pure(build):
    """``build()`` with the extension hidden: the deciders it makes are Python functions."""
    saved = native.speedups
    native.speedups = None
    try:
        return build()
    finally:
        native.speedups = saved


@pytest.fixture(scope="module")
def evtx_events(corpus) -> list:
    """(event id, data) of every Sysmon event of the corpus's EVTX files."""
    out = []
    for path in iter_input_files([str(Path(corpus, "evtx"))]):
        out.extend((ev.event_id, ev.data) for ev in open_source(path, lambda err: None)
                   if ev.is_sysmon)
    assert len(out) > 1500
    return out


@pytest.mark.parametrize("stale", [True, False])
@pytest.mark.parametrize("rel", CONFIGS)
def test_compiled_decides_as_python_on_the_corpus(corpus, evtx_events, rel, stale):
    cfg = load_config(Path(corpus, rel), cache=None)
    opts = EngineOptions(stale_rulename=stale)
    fast = FilterEngine(cfg, opts, plan_cache=False)
    slow = _pure(lambda: FilterEngine(cfg, opts, plan_cache=False))
    kinds = set()
    outcomes: collections.Counter = collections.Counter()
    for _ in range(2):  # the second pass finds the memo tables filled
        for eid, data in evtx_events:
            d_fast = fast.decider_for(eid)
            d_slow = _pure(lambda eid=eid: slow.decider_for(eid))
            kinds.add((type(d_fast).__name__, type(d_slow).__name__))
            got, want = d_fast(dict(data)), d_slow(dict(data))
            assert got == want, (rel, eid, data)
            outcomes[(got[0], got[1] not in (None, "-"))] += 1
    assert ("FilterDecider", "function") in kinds
    # the comparison means something: both decisions and named matches occur
    assert outcomes[(True, True)] and outcomes[(False, False)], outcomes


RULENAME_CONFIG = b"""<Sysmon schemaversion="4.90"><EventFiltering>
<RuleGroup groupRelation="or"><ProcessCreate onmatch="include">
<RuleName condition="is">-</RuleName>
<Image name="t1" condition="end with">\\evil.exe</Image>
</ProcessCreate></RuleGroup>
<RuleGroup groupRelation="or"><ProcessCreate onmatch="exclude">
<Rule groupRelation="and" name="quiet"><Image condition="end with">\\a.exe</Image>
<CommandLine condition="contains">--quiet</CommandLine></Rule>
<CommandLine name="big" condition="contains">zzz</CommandLine>
</ProcessCreate></RuleGroup>
<RuleGroup groupRelation="or"><NetworkConnect onmatch="include">
<DestinationPort name="web" condition="is any">80;443</DestinationPort>
</NetworkConnect></RuleGroup>
</EventFiltering></Sysmon>"""


class _Data(dict):
    """A dict subclass: the compiled decider hands it to the Python function."""


@pytest.mark.parametrize("data", [
    {},
    {"Image": "C:\\x\\EVIL.exe"},
    {"Image": "C:\\x\\a.exe", "CommandLine": "a.exe --quiet"},
    {"Image": "C:\\x\\a.exe", "CommandLine": "a.exe --loud"},  # a name left behind
    {"Image": "C:\\x\\a.exe", "CommandLine": "a.exe --QUIET zzz"},
    {"Image": None, "CommandLine": ""},
    {"Image": "C:\\Ünïcode\\evil.exe", "CommandLine": "\u0130zzz"},
    {"Image": "c:\\" + "y" * (SCAN_LIMIT + 10) + "\\evil.exe", "CommandLine": "x" * SCAN_LIMIT},
    {"Image": "\x02\\evil.exe\x03", "RuleName": "recorded"},
    _Data({"Image": "C:\\evil.exe"}),
    collections.OrderedDict({"Image": "C:\\evil.exe"}),
])
@pytest.mark.parametrize("eid", [1, 3])
@pytest.mark.parametrize("stale", [True, False])
def test_odd_data_decided_alike(data, eid, stale):
    cfg = parse_config(RULENAME_CONFIG)
    opts = EngineOptions(stale_rulename=stale)
    fast = FilterEngine(cfg, opts, plan_cache=False).decider_for(eid)
    slow = _pure(lambda: FilterEngine(cfg, opts, plan_cache=False).decider_for(eid))
    assert type(fast).__name__ == "FilterDecider"
    for _ in range(2):
        assert fast(data) == slow(data)


def test_a_name_left_behind():
    """The stale-name quirk (spec 3.6) through the compiled decider: the exclude set's named
    ``<Rule>`` matches its Image but not its CommandLine and leaves its name, which the include
    set's unnamed match then carries (``--no-stale-rulename``: ``-``)."""
    cfg = parse_config(RULENAME_CONFIG)
    data = {"Image": "C:\\x\\a.exe", "CommandLine": "a.exe --loud"}
    assert FilterEngine(cfg, plan_cache=False).decide(1, data) == (True, "quiet")
    assert FilterEngine(cfg, EngineOptions(stale_rulename=False),
                        plan_cache=False).decide(1, data) == (True, "-")


@pytest.mark.parametrize("value", [5, b"C:\\evil.exe", ["x"]])
def test_errors_are_the_python_errors(value):
    """A value that is not a string fails as the Python function fails (type and message)."""
    cfg = parse_config(RULENAME_CONFIG)
    fast = FilterEngine(cfg, plan_cache=False).decider_for(1)
    slow = _pure(lambda: FilterEngine(cfg, plan_cache=False).decider_for(1))
    with pytest.raises(Exception) as want:
        slow({"Image": value})
    with pytest.raises(type(want.value)) as got:
        fast({"Image": value})
    assert str(got.value) == str(want.value)


def test_an_evaluator_error_propagates():
    calls = []

    def boom(v: str) -> bool:
        calls.append(v)
        raise ZeroDivisionError(f"pred({v})")
    sets = [(True, "or", [("f", Member("Image", boom, None, "is", "x"), False)])]
    fast = build_indexed_decider(sets, ("Image",), False, False, True)
    slow = _pure(lambda: build_indexed_decider(sets, ("Image",), False, False, True))
    assert type(fast).__name__ == "FilterDecider"
    for decide in (slow, fast):
        with pytest.raises(ZeroDivisionError, match=r"pred\(x\)"):
            decide({"Image": "X"})
        assert decide({"Image": "y"}) == (False, "-")  # not a candidate: never evaluated
    assert calls == ["x", "x"]


def test_no_memory_kept_per_call(corpus, evtx_events, kept_bytes):
    cfg = load_config(Path(corpus, CONFIGS[0]), cache=None)
    engine = FilterEngine(cfg, plan_cache=False)
    batch = [(engine.decider_for(eid), dict(data)) for eid, data in evtx_events[:400]]

    def once() -> None:
        for decide, data in batch:
            decide(data)
    assert kept_bytes(once, 30) < 4096
