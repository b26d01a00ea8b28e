"""The config cache (:mod:`sysmonx.config.cache`): a cached configuration is the one the reader
gives, field by field, and decides every corpus event alike; a damaged, stale, foreign or
unsafe entry is ignored with a note and rebuilt; a configuration the reader or the engine
refuses is refused at every load, with the cache present, exactly as without it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sysmonx.config import ConfigError, load_config
from sysmonx.config import cache as cache_mod
from sysmonx.config import parse as parse_mod
from sysmonx.config.cache import ConfigCache, config_key
from sysmonx.core.errors import RegexError
from sysmonx.filtering import FilterEngine

from conftest import corpus_path
from test_filter_index import (NAMED, _config_paths, _distinct_events,  # noqa: F401
                               corpus_events)

ROOT = Path(__file__).resolve().parents[1]
SOS = NAMED[1]
SMALL = ('<Sysmon schemaversion="4.90"><HashAlgorithms>md5,sha256</HashAlgorithms>'
         '<FieldSizes>CommandLine:100</FieldSizes><EventFiltering>'
         '<RuleGroup name="g" groupRelation="or"><ProcessCreate onmatch="include">'
         '<Image condition="end with" name="t1">\\cmd.exe</Image>'
         '<Rule name="both" groupRelation="and"><Image condition="contains">power</Image>'
         '<CommandLine condition="regex">-e(nc)? </CommandLine></Rule>'
         '</ProcessCreate></RuleGroup>'
         '<NetworkConnect onmatch="exclude"><DestinationPort condition="is">443</DestinationPort>'
         '</NetworkConnect></EventFiltering></Sysmon>')


@pytest.fixture
def small(tmp_path) -> Path:
    p = tmp_path / "small.xml"
    p.write_text(SMALL)
    return p


@pytest.fixture
def store(tmp_path) -> ConfigCache:
    return ConfigCache(tmp_path / "cache")


def _entry(store: ConfigCache) -> Path:
    (entry,) = store.directory.glob("*.marshal")
    return entry


def test_hit_is_the_parsed_config_and_parses_nothing(small, store, monkeypatch):
    plain = load_config(small, cache=False)
    first = load_config(small, cache=store)
    assert store.status == "stored" and store.notes == []
    assert os.stat(store.directory).st_mode & 0o777 == 0o700

    def no_parse(*a, **k):
        raise AssertionError("parsed although cached")
    monkeypatch.setattr(parse_mod, "parse_config", no_parse)
    again = load_config(small, cache=store)
    assert store.status == "hit"
    assert plain == first == again
    # the model's values, not only equality of two empty objects
    assert again.hash_algorithms == ["MD5", "SHA256"] and again.field_sizes == {"CommandLine": 100}
    assert [f.value for rs in again.rule_sets for f in rs.filters] == [
        "\\cmd.exe", "power", "-e(nc)? ", "443"]
    assert again.rule_sets[0].aggregates[1].name == "both"
    assert again.schema is plain.schema
    eng, ref = FilterEngine(again), FilterEngine(plain)
    for data in ({"Image": "C:\\x\\cmd.exe"}, {"Image": "powershell", "CommandLine": "a -enc b"},
                 {"Image": "powershell", "CommandLine": "x"}):
        assert eng.decide(1, data) == ref.decide(1, data)
    assert eng.decide(1, {"Image": "powershell", "CommandLine": "a -enc b"}) == (True, "both")


def test_hit_reads_no_entry_points(small, store, monkeypatch):
    """A config using only Sysmon's and the built-in conditions is read from its entry
    without reading the installed distributions' entry points (~1.2 ms per process)."""
    from sysmonx.core import registry
    plain = load_config(small, cache=False)
    load_config(small, cache=store)
    assert store.status == "stored"

    def no_entry_points(*a, **k):
        raise AssertionError("the entry points were read")
    monkeypatch.setattr(registry.CONDITIONS, "entries", no_entry_points)
    monkeypatch.setattr(registry, "_entry_points", no_entry_points)
    again = load_config(small, cache=store)
    assert store.status == "hit"
    assert again == plain


GLOB = ('<Sysmon schemaversion="4.90"><EventFiltering><ProcessCreate onmatch="include">'
        '<Image name="g" condition="glob">*power?hell.exe</Image>'
        '<CommandLine condition="contains">-enc</CommandLine>'
        '</ProcessCreate></EventFiltering></Sysmon>')


class _EntryPoint:
    """An installed distribution's entry point of the ``sysmonx.conditions`` group."""

    name = value = "glob"
    dist = None

    def load(self):
        import fnmatch

        from sysmonx.filtering.conditions import Condition
        return Condition("glob", "fnmatch-style wildcards (test plugin)",
                         lambda r, raw, fold, mem: lambda v: fnmatch.fnmatchcase(v, r),
                         extension=True)


def test_a_plugin_condition_is_checked_at_a_hit(tmp_path, store, monkeypatch):
    """A cached config that uses a condition an entry point registers is used while that
    condition is registered (the entry points read for it) and refused, as without the
    cache, once it is not."""
    from sysmonx.core import registry
    p = tmp_path / "glob.xml"
    p.write_text(GLOB)
    monkeypatch.setattr(registry.CONDITIONS, "_discovered", False)
    monkeypatch.setattr(registry, "_entry_points",
                        lambda group: [_EntryPoint()] if group == "sysmonx.conditions" else [])
    try:
        first = load_config(p, cache=store)  # the reader finds "glob" among the entry points
        assert store.status == "stored"
        assert [f.condition for f in first.rule_sets[0].filters] == ["glob", "contains"]
        registry.CONDITIONS.remove("glob")  # a new process: not registered before reading
        monkeypatch.setattr(registry.CONDITIONS, "_discovered", False)
        again = load_config(p, cache=store)
        assert store.status == "hit" and again == first
        assert "glob" in {e.name for e in registry.CONDITIONS.known_entries()}  # read now
        assert FilterEngine(again, plan_cache=False).decide(
            1, {"Image": "C:\\x\\PowerShell.exe", "CommandLine": "p -enc x"}) == (True, "g")
        # the plugin uninstalled: the entry is not used, the config is refused as without it
        registry.CONDITIONS.remove("glob")
        monkeypatch.setattr(registry.CONDITIONS, "_discovered", False)
        monkeypatch.setattr(registry, "_entry_points", lambda group: [])
        with pytest.raises(ConfigError, match="Unknown condition: glob"):
            load_config(p, cache=store)
        with pytest.raises(ConfigError, match="Unknown condition: glob"):
            load_config(p, cache=False)
    finally:
        registry.CONDITIONS.remove("glob")


@pytest.mark.parametrize("rel", _config_paths())
def test_cached_config_decides_every_corpus_event_as_the_parsed_one(corpus_events, corpus, rel,  # noqa: F811
                                                                     tmp_path):
    store = ConfigCache(tmp_path)
    plain = load_config(corpus / rel, cache=False)
    load_config(corpus / rel, cache=store)
    assert store.status == "stored"
    cached = load_config(corpus / rel, cache=store)
    assert store.status == "hit"
    assert cached == plain
    events = _distinct_events(corpus_events, plain)
    a, b = FilterEngine(cached), FilterEngine(plain)
    assert [a.decide(eid, d) for eid, d in events] == [b.decide(eid, d) for eid, d in events]


def _rebuilt(small, store, capsys, reason: str) -> None:
    plain = load_config(small, cache=False)
    got = load_config(small, cache=store)
    assert got == plain
    assert store.status == "stored"  # rebuilt and stored again
    err = capsys.readouterr().err
    assert "sysmonx: note: config cache entry" in err and "ignored and rebuilt" in err
    assert reason in err
    assert load_config(small, cache=store) == plain and store.status == "hit"


def test_damaged_entry_is_ignored_with_a_note_and_rebuilt(small, store, capsys):
    load_config(small, cache=store)
    entry = _entry(store)
    data = bytearray(entry.read_bytes())
    data[-5] ^= 0xFF
    entry.write_bytes(bytes(data))
    _rebuilt(small, store, capsys, "damaged")


def test_truncated_entry_is_ignored_with_a_note_and_rebuilt(small, store, capsys):
    load_config(small, cache=store)
    entry = _entry(store)
    entry.write_bytes(entry.read_bytes()[:10])
    _rebuilt(small, store, capsys, "not a config cache entry")


def test_entry_of_another_key_is_ignored(small, tmp_path, store, capsys):
    other = tmp_path / "other.xml"
    other.write_text(SMALL.replace("443", "80"))
    load_config(other, cache=store)
    entry = _entry(store)
    raw = small.read_bytes()
    opts = (True, False, tuple(sorted(parse_mod.extension_conditions())))
    entry.rename(store.entry(config_key(raw, str(small), opts)))
    _rebuilt(small, store, capsys, "entry of another key")


def test_foreign_payload_with_a_valid_digest_is_ignored(small, store, capsys):
    import hashlib
    import marshal
    load_config(small, cache=store)
    entry = _entry(store)
    head = len(cache_mod._MAGIC) + 64
    payload = marshal.dumps(("not", "a", "config"))
    entry.write_bytes(entry.read_bytes()[:head] + hashlib.sha256(payload).digest() + payload)
    _rebuilt(small, store, capsys, "ignored and rebuilt")


def test_changed_bytes_code_or_options_are_other_keys(small, store, monkeypatch):
    load_config(small, cache=store)
    small.write_text(SMALL.replace("443", "8443"))
    got = load_config(small, cache=store)
    assert store.status == "stored"
    assert got.rule_sets[1].filters[0].value == "8443"
    monkeypatch.setattr(cache_mod, "_VERSIONS", b"another build of the reader")
    load_config(small, cache=store)
    assert store.status == "stored"
    load_config(small, cache=store, empty_option_quirk=True)
    assert store.status == "stored"
    load_config(small, cache=store, empty_option_quirk=True)
    assert store.status == "hit"
    assert len(list(store.directory.glob("*.marshal"))) == 4


def test_unsafe_directory_or_entry_is_not_read(small, store, capsys):
    load_config(small, cache=store)
    os.chmod(store.directory, 0o777)
    assert load_config(small, cache=store) == load_config(small, cache=False)
    assert store.status == "unwritable"
    assert "writable by other users" in capsys.readouterr().err
    os.chmod(store.directory, 0o700)
    entry = _entry(store)
    os.chmod(entry, 0o666)
    load_config(small, cache=store)
    assert "not a regular file owned by this user and writable by no one else" in capsys.readouterr().err
    # a link is not followed
    target = _entry(store)
    moved = target.with_suffix(".real")
    target.rename(moved)
    target.symlink_to(moved)
    load_config(small, cache=store)
    assert store.status == "stored"
    assert "not read" in capsys.readouterr().err
    assert not target.is_symlink() and moved.exists()


def test_reader_errors_are_raised_at_every_load_and_never_stored(tmp_path, store, capsys):
    bad = tmp_path / "bad.xml"
    bad.write_text(SMALL.replace("<HashAlgorithms>", "<Bogus/><HashAlgorithms>"))
    with pytest.raises(ConfigError) as plain:
        load_config(bad, cache=False)
    for _ in range(2):
        with pytest.raises(ConfigError) as cached:
            load_config(bad, cache=store)
        assert str(cached.value) == str(plain.value)
        assert cached.value.line == plain.value.line
        assert store.status == "miss"
    assert not store.directory.exists() or not list(store.directory.glob("*.marshal"))


def test_engine_errors_are_raised_at_load_with_a_cached_config(tmp_path, store):
    # the reader validates each regex with 8 MiB; with 1,024 regex filters the engine gives each
    # 256 KiB, which \pL{20} exceeds: the reader loads it, the engine refuses it when built
    many = "".join(f'<CommandLine condition="regex">a{i}b</CommandLine>' for i in range(1023))
    bad = tmp_path / "regex.xml"
    bad.write_text(f'<Sysmon schemaversion="4.90"><EventFiltering><ProcessCreate onmatch='
                   f'"include">{many}</ProcessCreate><ProcessAccess onmatch="include">'
                   '<SourceImage condition="regex">\\pL{20}</SourceImage></ProcessAccess>'
                   '</EventFiltering></Sysmon>')
    with pytest.raises(RegexError, match="too large"):
        FilterEngine(load_config(bad, cache=False))
    load_config(bad, cache=store)
    cfg = load_config(bad, cache=store)
    assert store.status == "hit"
    with pytest.raises(RegexError, match="too large"):
        FilterEngine(cfg)


def test_environment_switch_turns_the_default_cache_off(small, tmp_path, monkeypatch):
    monkeypatch.setenv("SYSMONX_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("SYSMONX_CONFIG_CACHE", "0")
    load_config(small)
    assert not (tmp_path / "c").exists()
    monkeypatch.delenv("SYSMONX_CONFIG_CACHE")
    load_config(small)   # the default cache notes a config's first run, stores the second
    load_config(small)
    assert len(list((tmp_path / "c" / "config").glob("*.marshal"))) == 1


def test_oldest_entries_are_removed_beyond_the_bound(tmp_path, store, monkeypatch):
    monkeypatch.setattr(cache_mod, "MAX_ENTRIES", 3)
    for i in range(5):
        p = tmp_path / f"c{i}.xml"
        p.write_text(SMALL.replace("443", str(i)))
        load_config(p, cache=store)
        os.utime(store.directory, None)
    assert len(list(store.directory.glob("*.marshal"))) == 3


@pytest.mark.skipif(corpus_path() is None, reason="reference corpus not available")
def test_replay_with_a_cached_config_writes_the_same_bytes(tmp_path):
    corpus = corpus_path()
    env = dict(os.environ, SYSMONX_CACHE_DIR=str(tmp_path / "cache"))
    exe = str(Path(sys.executable).parent / "sysmonx")
    if not os.path.exists(exe):
        exe = shutil.which("sysmonx") or exe
    cmd = [exe, "replay", str(corpus / "evtx"), "-c", str(corpus / SOS), "-f", "jsonl"]
    runs = []
    for cache in ("0", "1", "1"):
        r = subprocess.run(cmd, capture_output=True, env=dict(env, SYSMONX_CONFIG_CACHE=cache))
        assert r.returncode == 0, r.stderr
        runs.append(r)
    assert runs[0].stdout and runs[0].stdout == runs[1].stdout == runs[2].stdout
    # the same messages but the config line, which says how the config was loaded
    hows = [b"(parsed; config cache off)", b"(parsed; the next run caches it in",
            b"(parsed and stored in the config cache"]
    rest = []
    for r, how in zip(runs, hows, strict=True):
        (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith(b"config: ")]
        assert how in line
        rest.append([ln for ln in r.stderr.splitlines() if ln != line])
    assert rest[0] == rest[1] == rest[2]
    assert len(list((tmp_path / "cache" / "config").glob("*.marshal"))) == 1


def test_a_config_is_stored_at_its_second_run_only(tmp_path, small, monkeypatch):
    """load_config's own cache stores a config the second time it is read: a config read once
    (replayed once, or edited between runs) costs an empty marker, not the store that made a
    first run ~10 % slower in bench_replay; the third read is a hit, equal to the parse."""
    monkeypatch.setenv("SYSMONX_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.delenv("SYSMONX_CONFIG_CACHE", raising=False)
    d = tmp_path / "c" / "config"
    plain = load_config(small, cache=False)
    calls = []
    real = parse_mod.parse_config

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(parse_mod, "parse_config", counting)
    assert load_config(small) == plain
    assert not list(d.glob("*.marshal")) and len(list(d.glob("*.seen"))) == 1
    assert (d / next(d.glob("*.seen")).name).stat().st_size == 0
    assert load_config(small) == plain
    # the first-look marker stays: it is what makes the next run compute the content key
    assert len(list(d.glob("*.marshal"))) == 1 and len(list(d.glob("*.seen"))) == 1
    assert load_config(small) == plain and len(calls) == 2   # the third: from the entry
    # an explicit cache stores at once (the tests and tools that fill one)
    store = ConfigCache(tmp_path / "e")
    load_config(small, cache=store)
    assert store.status == "stored"
    noted = ConfigCache(tmp_path / "f", admit_on_second_miss=True)
    load_config(small, cache=noted)
    assert noted.status == "noted"
    load_config(small, cache=noted)
    assert noted.status == "stored"


def test_markers_are_bounded_and_private(tmp_path, small, monkeypatch):
    monkeypatch.setattr(cache_mod, "MAX_ENTRIES", 3)
    store = ConfigCache(tmp_path / "m", admit_on_second_miss=True)
    for i in range(6):
        p = tmp_path / f"c{i}.xml"
        p.write_text(SMALL.replace("443", str(i)))
        load_config(p, cache=store)
        assert store.status == "noted"
        os.utime(store.directory, None)
    markers = list(store.directory.glob("*.seen"))
    assert len(markers) == 3
    assert all(m.stat().st_mode & 0o077 == 0 for m in markers)
    assert oct(store.directory.stat().st_mode & 0o777) == "0o700"


def test_filters_from_an_entry_are_the_readers_attribute_by_attribute(corpus):
    """``from_plain`` gives each Filter a dict display as its ``__dict__``: the same
    attributes in the dataclass's field order as the reader's, equal and hashing alike, for
    every filter of the named corpus configs; a filter of another shape is refused."""
    import dataclasses

    from sysmonx.configmodel import Filter
    assert cache_mod._FILTER == tuple(f.name for f in dataclasses.fields(Filter))
    seen = 0
    for rel in NAMED:
        parsed = load_config(corpus / rel, cache=False)
        rebuilt = cache_mod.from_plain(cache_mod.to_plain(parsed))
        assert rebuilt == parsed
        for a, b in zip(rebuilt.rule_sets, parsed.rule_sets, strict=True):
            for x, y in zip(a.filters, b.filters, strict=True):
                assert list(vars(x).items()) == list(vars(y).items())
                assert x == y and hash(x) == hash(y) and repr(x) == repr(y)
                seen += 1
    assert seen > 2500
    good = ("Image", "is", "a.exe", "", 0, 3, ())
    assert cache_mod._filters((good,))[0] == Filter(*good)
    for bad in (good[:6], good + (1,), ("Image", "is", 5, "", 0, 3, ()),
                (None, "is", "a", "", 0, 3, ())):
        with pytest.raises(ValueError):
            cache_mod._filters((bad,))
    with pytest.raises(TypeError):
        cache_mod._filters((5,))
