"""The compiled Sigma rule cache: a cached stage decides exactly as a freshly compiled one, and
an entry is used only for the same rule bytes, names, options and code, from a private place,
undamaged; anything else is ignored and rebuilt."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sysmonx.detection import DetectionOptions, DetectionStage
from sysmonx.detection.cache import RuleCache, rules_key
from sysmonx.event import LINUX_PROVIDER, Event
from sysmonx.sources import open_source

from test_correlation import base_rule, proc_event, proc_rule, sec_event

ROOT = Path(__file__).resolve().parents[1]

CORR = ("title: ab\nid: 00000000-0000-0000-0000-0000000000b1\ncorrelation:\n"
        "    type: temporal_ordered\n    rules:\n        - step_a\n        - step_b\n"
        "    group-by:\n        - User\n    timespan: 5m\nlevel: high\n")
COUNT = ("title: many\nid: 00000000-0000-0000-0000-0000000000c1\ncorrelation:\n"
         "    type: value_count\n    rules:\n        - fail\n    group-by:\n"
         "        - ComputerName\n    timespan: 1h\n    condition:\n        field: User\n"
         "        gte: 3\nlevel: medium\n")
RE_RULE = ("title: regex\nname: rx\nlogsource:\n    product: windows\n"
           "    category: process_creation\ndetection:\n    selection:\n"
           "        CommandLine|re: 'zz[0-9]+q'\n    sel2:\n        Image|endswith|cased: '.EXE'\n"
           "    condition: selection or sel2\n")


def rules_dir(tmp_path: Path) -> Path:
    d = tmp_path / "rules"
    d.mkdir()
    (d / "a.yml").write_text(proc_rule("step_a", "aaa"))
    (d / "b.yml").write_text(proc_rule("step_b", "bbb"))
    (d / "corr.yml").write_text(CORR)
    (d / "fail.yml").write_text(base_rule("fail", 4625))
    (d / "count.yml").write_text(COUNT)
    (d / "rx.yml").write_text(RE_RULE)
    return d


def events() -> list:
    out = [proc_event(1, 1, CommandLine="x aaa", User="u"), proc_event(2, 2, CommandLine="bbb",
                                                                     User="u"),
           proc_event(3, 3, CommandLine="zz42q", User="v", Image="C:\\A.EXE"),
           proc_event(4, 4, CommandLine="ZZ42Q", User="v", Image="C:\\a.exe")]
    out += [sec_event(4625, 10 + i, 10 + i, ComputerName="dc1", User=f"u{i}") for i in range(4)]
    return out


def alerts_of(st: DetectionStage, evs) -> list:
    out = []
    for e in evs:
        out.extend(a.to_json() for a in st.process(e))
    out.extend(a.to_json() for a in st.finish())
    return out


def test_cached_stage_decides_as_compiled(tmp_path):
    d = rules_dir(tmp_path)
    cache = RuleCache(tmp_path / "cache")
    fresh = DetectionStage.from_paths([d])
    first = DetectionStage.from_paths([d], cache=cache)
    second = DetectionStage.from_paths([d], cache=cache)
    assert (first.cache_status, second.cache_status) == ("compiled", "cached")
    assert first.cache_notes == second.cache_notes == []
    want = alerts_of(fresh, events())
    kinds = sorted({b'"kind":"' + k + b'"' for k in (b"detection", b"temporal_ordered",
                                                     b"value_count")})
    for k in kinds:  # every rule kind fired, so the comparison below cannot pass on nothing
        assert any(k in a for a in want), k
    assert sum(b"regex" in a for a in want) == 1  # RE2 recompiled with its case policy
    assert alerts_of(first, events()) == want
    assert alerts_of(second, events()) == want
    assert [str(i) for i in second.issues] == [str(i) for i in fresh.issues]
    assert len(list((tmp_path / "cache").glob("*.pickle"))) == 1


def test_key_follows_bytes_names_and_options(tmp_path):
    d = rules_dir(tmp_path)
    k = rules_key([d], DetectionOptions())
    assert rules_key([d], DetectionOptions()) == k
    assert rules_key([d], DetectionOptions(max_groups=5)) != k
    assert rules_key([d], DetectionOptions(placeholders={"x": ["y"]})) != k
    os.utime(d / "a.yml", (1, 1))  # times alone never change the key
    assert rules_key([d], DetectionOptions()) == k
    (d / "a.yml").write_text(proc_rule("step_a", "aab"))
    k2 = rules_key([d], DetectionOptions())
    assert k2 != k
    (d / "a.yml").rename(d / "a2.yml")  # names are reported in issues and alerts
    assert rules_key([d], DetectionOptions()) not in (k, k2)
    with pytest.raises(FileNotFoundError):
        rules_key([tmp_path / "missing"])


def test_changed_rule_is_recompiled(tmp_path):
    d = rules_dir(tmp_path)
    cache = RuleCache(tmp_path / "cache")
    DetectionStage.from_paths([d], cache=cache)
    (d / "a.yml").write_text(proc_rule("step_a", "zzz"))
    st = DetectionStage.from_paths([d], cache=cache)
    assert st.cache_status == "compiled"
    hit = st.match(proc_event(1, 1, CommandLine="zzz", User="u"))
    assert [r.title for r in hit] == ["step_a"]
    assert st.match(proc_event(2, 2, CommandLine="aaa", User="u")) == []


def _only_entry(tmp_path: Path) -> Path:
    (entry,) = (tmp_path / "cache").glob("*.pickle")
    return entry


@pytest.mark.parametrize("damage", ["truncate", "flip", "magic", "other-key", "garbage"])
def test_damaged_entry_is_ignored_and_rebuilt(tmp_path, damage):
    d = rules_dir(tmp_path)
    cache = RuleCache(tmp_path / "cache")
    want = alerts_of(DetectionStage.from_paths([d], cache=cache), events())
    entry = _only_entry(tmp_path)
    data = entry.read_bytes()
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data = data[:-100] + bytes([data[-100] ^ 1]) + data[-99:]
    elif damage == "magic":
        data = b"X" + data[1:]
    elif damage == "other-key":
        head = data.index(b"\n") + 1
        data = data[:head] + b"0" * 64 + data[head + 64:]
    else:  # a valid header and digest over a payload that is not a stage
        import hashlib
        head = data.index(b"\n") + 1 + 64
        payload = b"\x80\x05N."
        data = data[:head] + hashlib.sha256(payload).digest() + payload
    entry.write_bytes(data)
    st = DetectionStage.from_paths([d], cache=cache)
    assert st.cache_status == "compiled"
    assert any("ignored and rebuilt" in n for n in st.cache_notes), st.cache_notes
    assert alerts_of(st, events()) == want
    again = DetectionStage.from_paths([d], cache=cache)  # the rebuilt entry is good
    assert again.cache_status == "cached" and alerts_of(again, events()) == want


def test_entry_must_be_private(tmp_path):
    d = rules_dir(tmp_path)
    cache = RuleCache(tmp_path / "cache")
    DetectionStage.from_paths([d], cache=cache)
    entry = _only_entry(tmp_path)
    entry.chmod(0o666)
    st = DetectionStage.from_paths([d], cache=cache)
    assert st.cache_status == "compiled" and "not a regular file owned" in st.cache_notes[0]
    # a link in place of the entry is not followed
    entry = _only_entry(tmp_path)
    real = tmp_path / "elsewhere.pickle"
    shutil.move(entry, real)
    entry.symlink_to(real)
    st = DetectionStage.from_paths([d], cache=cache)
    assert st.cache_status == "compiled" and st.cache_notes
    # a directory other users can write is neither read nor written
    (tmp_path / "cache").chmod(0o777)
    st = DetectionStage.from_paths([d], cache=cache)
    assert st.cache_status == "compiled"
    # said once, not once for the read and again for the write (found in review)
    assert sum("writable by other users" in n for n in st.cache_notes) == 1
    (tmp_path / "cache").chmod(0o700)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_entry_of_another_user_is_ignored(tmp_path):
    d = rules_dir(tmp_path)
    cache = RuleCache(tmp_path / "cache")
    DetectionStage.from_paths([d], cache=cache)
    os.chown(_only_entry(tmp_path), 65534, 65534)
    st = DetectionStage.from_paths([d], cache=cache)
    assert st.cache_status == "compiled" and "owned by this user" in st.cache_notes[0]


def test_unwritable_cache_still_loads(tmp_path):
    d = rules_dir(tmp_path)
    (tmp_path / "file").write_text("x")
    st = DetectionStage.from_paths([d], cache=RuleCache(tmp_path / "file" / "cache"))
    assert st.cache_status == "compiled" and "cannot write" in st.cache_notes[0]
    assert alerts_of(st, events())


def test_entries_are_bounded(tmp_path, monkeypatch):
    from sysmonx.detection import cache as cache_mod
    monkeypatch.setattr(cache_mod, "MAX_ENTRIES", 2)
    d = rules_dir(tmp_path)
    cache = RuleCache(tmp_path / "cache")
    for n in range(4):
        (d / "a.yml").write_text(proc_rule("step_a", f"a{n}"))
        DetectionStage.from_paths([d], cache=cache)
    assert len(list((tmp_path / "cache").glob("*.pickle"))) == 2


def test_corpus_bundle_from_cache_gives_the_same_alerts(corpus, tmp_path):
    """All SigmaHQ Sysmon rules of the corpus over every corpus EVTX, JSON dataset and Sysmon
    for Linux log: the cached stage writes byte for byte the alerts of a freshly compiled one
    (its rules' pySigma objects and automata built lazily from the entry)."""
    bundle = corpus / "sigma" / "sigmahq_rules_sysmon_categories.tar.gz"
    files = sorted(str(p) for p in (corpus / "evtx").rglob("*.evtx"))
    files += sorted(str(p) for sub in ("json", "linux") for p in (corpus / sub).rglob("*")
                    if p.is_file())
    evs: list[Event] = [e for f in files for e in open_source(f, lambda err: None)]
    cache = RuleCache(tmp_path / "cache")
    fresh = DetectionStage.from_paths([bundle], cache=cache)
    cached = DetectionStage.from_paths([bundle], cache=cache)
    assert (fresh.cache_status, cached.cache_status) == ("compiled", "cached")
    assert len(cached.matcher.compiled) == len(fresh.matcher.compiled) > 1900
    want = alerts_of(fresh, evs)
    assert len(want) > 300
    assert alerts_of(cached, evs) == want
    assert sum(e.provider == LINUX_PROVIDER for e in evs) >= 36  # the Linux log was read
    assert len(evs) > 72000  # EVTX (1.7k events) and the JSON datasets (71k) too


def test_cli_replay_uses_the_cache(corpus, tmp_path):
    d = rules_dir(tmp_path)
    evtx = sorted((corpus / "evtx").rglob("*.evtx"))[0]
    env = dict(os.environ, SYSMONX_CACHE_DIR=str(tmp_path / "c"))

    def replay(*extra):
        return subprocess.run([sys.executable, "-m", "sysmonx.cli", "replay", str(evtx), "--rules",
                               str(d), "-f", "jsonl", "-q", *extra], capture_output=True,
                              env=env, cwd=ROOT, timeout=120)

    a = replay()
    b = replay()
    assert a.returncode == b.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout
    # $SYSMONX_CACHE_DIR holds the rule sets under sigma/, beside the eBPF objects' bpf/ (a
    # new user found them mixed in the one folder)
    assert len(list((tmp_path / "c" / "sigma").glob("*.pickle"))) == 1
    assert not list((tmp_path / "c").glob("*.pickle"))
    c = replay("--no-rule-cache", "--rule-cache", str(tmp_path / "other"))
    assert c.returncode == 0 and c.stdout == a.stdout
    assert not (tmp_path / "other").exists()
    e = replay("--rule-cache", str(tmp_path / "other"))
    assert e.returncode == 0 and e.stdout == a.stdout
    assert len(list((tmp_path / "other").glob("*.pickle"))) == 1


# -- the entry's layout: what a cached start-up builds and what it leaves for later ------------

def test_cached_rules_metadata_is_built_on_first_use(tmp_path):
    """A cached stage holds its rules' pySigma objects as LazyRule stand-ins: alerts never
    build them (the alert bytes equal a compiled stage's), a report that reads them gets the
    same values, and a rule correlations refer to is stored in place (shared identity)."""
    from sigma.correlations import SigmaCorrelationRule
    from sigma.rule import SigmaRule

    from sysmonx.detection.cache import LazyRule
    d = rules_dir(tmp_path)
    cache = RuleCache(tmp_path / "cache")
    fresh = DetectionStage.from_paths([d], cache=cache)
    st = DetectionStage.from_paths([d], cache=cache)
    assert st.cache_status == "cached"
    lazy = [r for r in st.matcher.compiled if type(r.rule) is LazyRule]
    in_place = [r for r in st.matcher.compiled if type(r.rule) is not LazyRule]
    # step_a, step_b and fail are referenced by correlations: their objects are shared
    assert sorted(r.name for r in in_place) == ["fail", "step_a", "step_b"]
    assert [r.name for r in lazy] == ["rx"]
    assert alerts_of(st, events()) == alerts_of(fresh, events())
    assert object.__getattribute__(lazy[0].rule, "_rule") is None  # alerts did not build it
    want = {r.name: r.rule for r in fresh.matcher.compiled}
    for r in st.matcher.compiled:
        assert isinstance(r.rule, SigmaRule) and not isinstance(r.rule, SigmaCorrelationRule)
        assert r.rule.title == want[r.name].title and r.rule.source == want[r.name].source
        assert r.rule.detection is None  # as a compiled stage keeps it
    assert object.__getattribute__(lazy[0].rule, "_rule") is not None
    refs = {id(ref.rule) for c in st.correlations for ref in c.rule.referenced_rules}
    assert {id(r.rule) for r in in_place} <= refs


def test_profile_rules_from_the_cache_names_the_files(tmp_path):
    from sysmonx.detection.profile import RuleProfile
    d = rules_dir(tmp_path)
    cache = RuleCache(tmp_path / "cache")
    fresh = DetectionStage.from_paths([d], cache=cache)
    st = DetectionStage.from_paths([d], cache=cache)
    assert st.cache_status == "cached"
    rows = {r["id"]: r["file"] for r in RuleProfile(st).rules()}
    assert rows == {r["id"]: r["file"] for r in RuleProfile(fresh).rules()}
    assert rows["rx"] == str(d / "rx.yml")


def test_foreign_version_or_format_is_not_used(tmp_path, monkeypatch):
    """Another SysmonX version keys another entry (a miss, compiled and stored beside); an
    entry written by an older cache format is ignored and rebuilt, with the note."""
    import sysmonx.version
    from sysmonx.detection import cache as cache_mod
    d = rules_dir(tmp_path)
    cache = RuleCache(tmp_path / "cache")
    want = alerts_of(DetectionStage.from_paths([d], cache=cache), events())
    monkeypatch.setattr(sysmonx.version, "__version__", "0.0.0-other")
    st = DetectionStage.from_paths([d], cache=cache)
    assert st.cache_status == "compiled" and st.cache_notes == []
    assert len(list((tmp_path / "cache").glob("*.pickle"))) == 2
    monkeypatch.undo()
    entry = cache.entry(rules_key([d], DetectionOptions()))
    data = entry.read_bytes()
    old = b"SYSMONX-SIGMA-CACHE %d\n" % (cache_mod.CACHE_FORMAT - 1)
    entry.write_bytes(old + data[len(cache_mod._MAGIC):])
    st = DetectionStage.from_paths([d], cache=cache)
    assert st.cache_status == "compiled"
    assert any("ignored and rebuilt: not a rule cache entry of this format" in n
               for n in st.cache_notes), st.cache_notes
    assert alerts_of(st, events()) == want


def test_cached_start_up_loads_little(tmp_path):
    """A cached start-up imports neither the pickling library nor importlib.metadata, builds
    no rule's pySigma object and no automaton until an event needs one."""
    d = rules_dir(tmp_path)
    DetectionStage.from_paths([d], cache=RuleCache(tmp_path / "cache"))  # fill
    code = (
        "import sys\n"
        "from sysmonx.detection import DetectionStage\n"
        "from sysmonx.detection.cache import RuleCache, LazyRule\n"
        f"st = DetectionStage.from_paths([{str(d)!r}], cache=RuleCache({str(tmp_path / 'cache')!r}))\n"
        "assert st.cache_status == 'cached', st.cache_notes\n"
        "built = [r for r in st.matcher.compiled if type(r.rule) is LazyRule\n"
        "         and object.__getattribute__(r.rule, '_rule') is not None]\n"
        "groups = list(st.matcher.groups.values())\n"
        "import json\n"
        "print(json.dumps([[m for m in ('cloudpickle', 'importlib.metadata') if m in sys.modules],\n"
        "                  len(built), sum(len(g.scanners) for g in groups),\n"
        "                  sum(len(g.scanners.pending) for g in groups)]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    import json
    modules, built, ready, pending = json.loads(out.stdout)
    assert modules == [] and built == 0 and ready == 0 and pending > 0


def test_generated_functions_survive_the_cache(tmp_path):
    """Closures that refer to each other or to themselves, defaults, keyword defaults,
    attributes and eval'd namespaces come back working (the cache's own function format)."""
    from sysmonx.detection.cache import dumps, loads

    def outer(n):
        def fact(k, acc=1, *, step=1):
            return acc if k <= 1 else fact(k - step, acc * k, step=step)
        fact.tag = "x"  # type: ignore[attr-defined]
        return fact
    ns = {"f": outer(0), "limit": 3}
    lam = eval(compile("lambda v: f(v) > limit", "<sigma rule 0>", "eval"), ns)
    fact2, lam2 = loads(dumps((outer(0), lam)))
    assert fact2(5) == 120 and fact2.tag == "x" and fact2.__kwdefaults__ == {"step": 1}
    assert fact2.__qualname__.endswith("outer.<locals>.fact")
    assert lam2(3) is True and lam2(2) is False


def _race(target, threads=4):
    import threading
    barrier = threading.Barrier(threads)

    def go():
        barrier.wait()
        target()
    ts = [threading.Thread(target=go) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


class _SlowToLoad:
    """A payload slow enough to unpickle that threads meet inside the first load."""

    def __init__(self):
        self.x = [str(i) for i in range(20000)]


def test_lazily_built_parts_are_built_once_when_threads_meet_on_first_use():
    """Found in review: the first use of a cached rule or a group's automaton from two threads
    raised KeyError / EOFError or built two different rule objects (365 of 800 look-ups, 133
    of 200 rules with a 1 µs switch interval). Now one thread builds, the others get its result."""
    import pickle
    import sys

    from sysmonx.detection import matcher
    from sysmonx.detection.cache import LazyRule, dumps
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        words = [("w%05d" % i, i) for i in range(3000)]
        for _ in range(40):
            scanners = matcher._scanners_from({"f": pickle.dumps((words, {}))})
            got, errors = [], []

            def look(scanners=scanners, got=got, errors=errors):
                try:
                    got.append(id(scanners["f"]))
                except Exception as exc:  # noqa: BLE001 - the failure under test
                    errors.append(exc)
            _race(look)
            assert errors == [] and len(got) == 4 and len(set(got)) == 1
        blob = dumps(_SlowToLoad())
        for _ in range(40):
            lazy = LazyRule(blob)
            got, errors = [], []

            def load(lazy=lazy, got=got, errors=errors):
                try:
                    got.append(id(lazy._load()))
                except Exception as exc:  # noqa: BLE001
                    errors.append(exc)
            _race(load)
            assert errors == [] and len(got) == 4 and len(set(got)) == 1
    finally:
        sys.setswitchinterval(old)


_GC_PROBE = (
    "import gc, json, sys\n"
    "from sysmonx.detection import DetectionOptions, DetectionStage\n"
    "from sysmonx.detection.cache import RuleCache\n"
    "starts = []\n"
    "gc.callbacks.append(lambda phase, info: phase == 'start' and\n"
    "                    starts.append((info['generation'], gc.get_count()[0])))\n"
    "frozen = gc.get_freeze_count()\n"
    "st = DetectionStage.from_paths([sys.argv[1]], DetectionOptions(freeze_gc=sys.argv[3] == '1'),\n"
    "                               cache=RuleCache(sys.argv[2]))\n"
    "assert st.cache_status == 'cached', st.cache_notes\n"
    "print(json.dumps([starts, gc.get_freeze_count() - frozen, gc.get_threshold()[0]]))\n")


@pytest.mark.parametrize("freeze", [True, False])
def test_cached_stage_is_frozen_before_the_collector_walks_it(tmp_path, freeze):
    """A cached start-up builds thousands of objects with the collector paused; with
    ``freeze_gc`` they go to the permanent generation before it runs again, so no collection
    walks them (one did, ~20-30 ms for the SigmaHQ bundle, freeing nothing: it started with
    the whole load counted in generation 0). Without ``freeze_gc`` nothing is frozen."""
    d = rules_dir(tmp_path)
    opts = DetectionOptions(freeze_gc=freeze)
    DetectionStage.from_paths([d], opts, cache=RuleCache(tmp_path / "cache")).close()  # fill
    out = subprocess.run([sys.executable, "-c", _GC_PROBE, str(d), str(tmp_path / "cache"),
                          "1" if freeze else "0"], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    import json
    starts, frozen, threshold = json.loads(out.stdout)
    if freeze:
        assert frozen > 5 * threshold  # the loaded stage (thousands of objects)
        big = [s for s in starts if s[1] > 2 * threshold]
        assert big == [], f"a collection walked the freshly loaded stage: {big}"
    else:
        assert frozen == 0
        # the paused collector's count is still there for the first collection to act on
        assert any(s[1] > 5 * threshold for s in starts), starts
