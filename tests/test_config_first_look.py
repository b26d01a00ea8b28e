"""The config caches' first look (:mod:`sysmonx.core.cachelook`): a config file's first run
computes no content key, imports no cache module and stores nothing but a stat-keyed marker;
its second run stores the config and the filter plans; later runs read both, the plan key
derived from the config's content key. What the stat key can miss (other bytes of the same
size, the modification time set back, the same inode) is never served stale: entries are found
by content keys only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sysmonx.config import load_config, parse_config
from sysmonx.config import cache as cache_mod
from sysmonx.core import cachelook, marshalstore
from sysmonx.filtering import EngineOptions, FilterEngine
from sysmonx.filtering import plancache
from sysmonx.version import __version__

from test_config_cache import SMALL

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SYSMONX_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.delenv("SYSMONX_CONFIG_CACHE", raising=False)
    p = tmp_path / "small.xml"
    p.write_text(SMALL)
    return p


def _run(path: Path) -> tuple[str, str, FilterEngine, object]:
    info: dict = {}
    cfg = load_config(path, cache_info=info)
    engine = FilterEngine(cfg)
    engine.decide(1, {"Image": "C:\\x\\cmd.exe", "CommandLine": "cmd"})
    engine.save_plans()
    return info["status"], engine.plan_cache_status, engine, cfg


def test_first_run_computes_no_content_key(env, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a content key was computed on a config's first run")

    monkeypatch.setattr(marshalstore, "_FINGERPRINT", None)
    monkeypatch.setattr(marshalstore, "code_fingerprint", boom)
    monkeypatch.setattr(cache_mod, "config_key", boom)
    monkeypatch.setattr(plancache, "plans_key", boom)
    status, plans, engine, cfg = _run(env)
    assert (status, plans) == ("noted", "noted")
    assert cfg == parse_config(SMALL, str(env))
    d = env.parent / "c"
    assert [p.suffix for p in (d / "config").iterdir()] == [".seen"]
    assert not (d / "filter").exists()


def test_first_run_imports_no_cache_module(tmp_path):
    """Measured cost of a first run before: ~2.5-4 ms, part of it compiling these modules."""
    p = tmp_path / "small.xml"
    p.write_text(SMALL)
    code = ("import sys\nfrom sysmonx.config import load_config\n"
            "from sysmonx.filtering import FilterEngine\n"
            f"FilterEngine(load_config({str(p)!r})).compile_all()\n"
            "print(sorted(m for m in ('sysmonx.config.cache', 'sysmonx.filtering.plancache', "
            "'sysmonx.core.marshalstore') if m in sys.modules))\n")
    env = dict(os.environ, SYSMONX_CACHE_DIR=str(tmp_path / "c"))
    env.pop("SYSMONX_CONFIG_CACHE", None)
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env, cwd=ROOT, check=True).stdout.strip() for _ in range(2)]
    assert runs[0] == "[]"
    assert runs[1] == "['sysmonx.config.cache', 'sysmonx.core.marshalstore', " \
                      "'sysmonx.filtering.plancache']"


def test_second_run_stores_both_and_later_runs_read_both(env, monkeypatch):
    assert _run(env)[:2] == ("noted", "noted")
    assert _run(env)[:2] == ("stored", "stored")
    calls = []
    real = plancache.marshal.dumps

    def counting(v, *a):
        calls.append(1)
        return real(v, *a)

    monkeypatch.setattr(plancache.marshal, "dumps", counting)
    status, plans, engine, cfg = _run(env)
    assert (status, plans) == ("hit", "hit")
    assert calls == []   # the plan key came from the config's content key
    fresh = FilterEngine(parse_config(SMALL, str(env)), plan_cache=False)
    for data in ({"Image": "C:\\x\\cmd.exe"}, {"Image": "powershell", "CommandLine": "-enc "},
                 {"Image": "powershell", "CommandLine": "x"}):
        assert engine.decide(1, data) == fresh.decide(1, data)


def test_same_size_and_mtime_other_bytes_is_never_served_stale(env):
    """The stat key cannot see this edit (same inode, size and modification time); the
    content keys do: the config and the plans are those of the new bytes."""
    for _ in range(3):
        _run(env)
    st = os.stat(env)
    edited = SMALL.replace("\\cmd.exe", "\\xyz.exe")
    assert len(edited) == len(SMALL)
    with open(env, "r+") as f:  # in place: the same inode
        f.write(edited)
    os.utime(env, ns=(st.st_atime_ns, st.st_mtime_ns))
    st2 = os.stat(env)
    assert (st2.st_ino, st2.st_size, st2.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)
    status, plans, engine, cfg = _run(env)
    assert status == "stored" and plans == "stored"   # a new content key: parsed, stored
    assert cfg == parse_config(edited, str(env))
    assert engine.decide(1, {"Image": "C:\\x\\cmd.exe"})[0] is False
    assert engine.decide(1, {"Image": "C:\\x\\xyz.exe"}) == (True, "t1")


def test_a_config_changed_after_loading_gets_the_key_of_its_rule_sets(env):
    for _ in range(2):
        _run(env)
    cfg = load_config(env)
    derived = plancache.plans_key(cfg, EngineOptions())
    origin = getattr(cfg, cachelook.ORIGIN)
    assert origin[0] == "key"
    cfg.rule_sets[0].filters.pop(0)   # a tool editing the model it loaded
    changed = plancache.plans_key(cfg, EngineOptions())
    assert changed != derived
    assert changed == plancache.plans_key(_stripped(cfg), EngineOptions())
    engine = FilterEngine(cfg)
    assert engine.decide(1, {"Image": "C:\\x\\cmd.exe"})[0] is False  # the filter is gone


def _stripped(cfg):
    """``cfg`` without its cache origin (the key of its rule sets)."""
    import copy
    out = copy.copy(cfg)
    out.__dict__.pop(cachelook.ORIGIN, None)
    return out


def test_an_edited_file_is_a_first_run_again(env):
    for _ in range(2):
        _run(env)
    env.write_text(SMALL.replace("443", "4433"))
    assert _run(env)[:2] == ("noted", "noted")
    assert _run(env)[:2] == ("stored", "stored")
    assert _run(env)[:2] == ("hit", "hit")


def test_first_look_markers_are_bounded_and_private(tmp_path, monkeypatch):
    monkeypatch.setattr(cachelook, "MAX_MARKERS", 3)
    monkeypatch.setenv("SYSMONX_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.delenv("SYSMONX_CONFIG_CACHE", raising=False)
    for i in range(6):
        p = tmp_path / f"c{i}.xml"
        p.write_text(SMALL)
        info: dict = {}
        load_config(p, cache_info=info)
        assert info["status"] == "noted"
    d = tmp_path / "c" / "config"
    markers = list(d.glob("*.seen"))
    assert len(markers) == 3 and (d / (cachelook.look_key(
        str(tmp_path / "c5.xml"), os.stat(tmp_path / "c5.xml"), __version__) + ".seen")).exists()
    assert all(m.stat().st_mode & 0o077 == 0 for m in markers)
    assert oct(d.stat().st_mode & 0o777) == "0o700"


def test_an_unsafe_cache_directory_is_not_used_on_a_first_run(env, tmp_path):
    d = tmp_path / "c" / "config"
    d.mkdir(parents=True)
    os.chmod(d, 0o777)
    info: dict = {}
    cfg = load_config(env, cache_info=info)
    assert info["status"] == "unwritable" and "writable by other users" in info["notes"][0]
    assert not list(d.iterdir())
    assert not hasattr(cfg, cachelook.ORIGIN)


def _replay(tmp_path: Path, config: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, SYSMONX_CACHE_DIR=str(tmp_path / "c"), COLUMNS="400")
    env.pop("SYSMONX_CONFIG_CACHE", None)
    return subprocess.run([sys.executable, "-m", "sysmonx.cli", "replay", "--sample", "-c",
                           str(config), "-o", str(tmp_path / "out.xml"), "--no-progress",
                           *extra], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)


def test_replay_says_how_the_config_was_loaded_and_q_counts_it(env, tmp_path):
    """A new user's finding: replay said nothing about the config or its cache, and the
    cache's notes printed under -q."""
    where = tmp_path / "c" / "config"
    head = f"config: {env} loaded: schema 4.90, 2 rule sets, 4 filters "
    lines = []
    for _ in range(3):
        r = _replay(tmp_path, env)
        assert r.returncode == 0, r.stderr
        lines.append(next(ln for ln in r.stderr.splitlines() if ln.startswith("config: ")))
    # the first run's line promises only what the second does (a new user's finding: it said
    # the next run would read the cache, and the second run parsed and stored)
    assert lines == [head + f"(parsed; the next run caches it in {where})",
                     head + f"(parsed and stored in the config cache in {where})",
                     head + f"(from the config cache in {where})"]
    r = _replay(tmp_path, env, "-q")
    assert r.returncode == 0 and "config:" not in r.stderr
    assert "replay: not shown (-q): 1 note; run without -q to see them" in r.stderr
    # a damaged entry: its note and the line, both counted under -q
    (entry,) = where.glob("*.marshal")
    entry.write_bytes(b"garbage")
    r = _replay(tmp_path, env, "-q")
    assert r.returncode == 0 and "ignored and rebuilt" not in r.stderr
    assert "replay: not shown (-q): 2 notes; run without -q to see them" in r.stderr
    entry.write_bytes(b"garbage")
    r = _replay(tmp_path, env)
    assert f"note: config cache entry {entry} ignored and rebuilt: not a config cache entry " \
           "of this format" in r.stderr
    assert head + f"(parsed and stored in the config cache in {where})" in r.stderr
    env2 = {"SYSMONX_CONFIG_CACHE": "0"}
    r = subprocess.run([sys.executable, "-m", "sysmonx.cli", "replay", "--sample", "-c",
                        str(env), "-o", str(tmp_path / "o2.xml"), "--no-progress"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env=dict(os.environ, COLUMNS="400", **env2))
    assert head + "(parsed; config cache off)" in r.stderr
