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
from sysmonx.event import Event
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
    assert any("writable by other users" in n for n in st.cache_notes)
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
    """All SigmaHQ Sysmon rules of the corpus over every corpus EVTX: the cached stage writes
    byte for byte the alerts of a freshly compiled one."""
    bundle = corpus / "sigma" / "sigmahq_rules_sysmon_categories.tar.gz"
    files = sorted(str(p) for p in (corpus / "evtx").rglob("*.evtx"))
    evs: list[Event] = [e for f in files for e in open_source(f, lambda err: None)]
    cache = RuleCache(tmp_path / "cache")
    fresh = DetectionStage.from_paths([bundle], cache=cache)
    cached = DetectionStage.from_paths([bundle], cache=cache)
    assert (fresh.cache_status, cached.cache_status) == ("compiled", "cached")
    assert len(cached.matcher.compiled) == len(fresh.matcher.compiled) > 1900
    want = alerts_of(fresh, evs)
    assert len(want) > 300
    assert alerts_of(cached, evs) == want


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
    assert len(list((tmp_path / "c").glob("*.pickle"))) == 1
    c = replay("--no-rule-cache", "--rule-cache", str(tmp_path / "other"))
    assert c.returncode == 0 and c.stdout == a.stdout
    assert not (tmp_path / "other").exists()
    e = replay("--rule-cache", str(tmp_path / "other"))
    assert e.returncode == 0 and e.stdout == a.stdout
    assert len(list((tmp_path / "other").glob("*.pickle"))) == 1
