"""The Sigma benchmark measures what its headline says: a cold single pass, warm as a second
row, and a non-zero exit when nothing was measured."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "bench_sigma.py"), *args],
                          capture_output=True, text=True, timeout=600)


def test_bench_sigma_headline_is_the_cold_single_pass(corpus):
    r = _bench("--corpus", str(corpus), "--rounds", "1", "--warm-passes", "2")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert re.search(r"records per pass: 1,?766 ", out)
    headline = [line for line in out.splitlines() if "<- headline" in line]
    assert len(headline) == 1 and "cold single pass" in headline[0]
    assert re.search(r"warm \(2 passes\):\s+[\d,]+ records/s \(ratio \d\.\d{3}\)", out)
    assert "load average before/after" in out and "CPU seconds" in out


def test_bench_sigma_fails_when_nothing_was_measured(tmp_path):
    r = _bench("--corpus", str(tmp_path), "--rounds", "1")
    assert r.returncode == 1 and "no EVTX" in r.stderr


def test_corpus_skips_fail_the_run_when_the_corpus_is_required(tmp_path):
    """CI sets SYSMONX_CORPUS: then a test that skips for want of corpus data fails the run."""
    import os
    import shutil
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\n"
        "def test_needs_corpus(corpus):\n    pass\n\n"
        "def test_incomplete_corpus():\n    pytest.skip('no SigmaHQ regression data in the corpus')\n\n"
        "def test_other_skip():\n    pytest.skip('rsyslogd not installed')\n")
    base = {k: v for k, v in os.environ.items() if k != "SYSMONX_CORPUS"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)]
    # corpus not asked for (SYSMONX_CORPUS not set, no corpus beside the copy): skips are fine
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=base)
    assert r.returncode == 0, r.stdout
    # set to a folder that does not exist (a typo): the run stops at once, naming the value
    # (new-user report s15: it skipped every corpus test and said the variable was not set)
    missing = tmp_path / "nowhere"
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**base, "SYSMONX_CORPUS": str(missing)})
    assert r.returncode == 4, r.stdout + r.stderr
    assert f"SYSMONX_CORPUS is set to {str(missing)!r}, which is not a folder" in r.stderr
    empty = tmp_path / "corpus"
    empty.mkdir()
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**base, "SYSMONX_CORPUS": str(empty)})
    assert r.returncode == 1, r.stdout
    assert "corpus tests skipped although SYSMONX_CORPUS is set" in r.stdout
    assert "test_incomplete_corpus" in r.stdout and "test_other_skip" not in \
        r.stdout.split("corpus tests skipped")[1]


# ---- the options that measure Sigma's memory, its start-up on a large EVTX, and Zircolite ------

_RULE = """title: Any executable started
id: 8f0c1f9e-1111-4a4a-9a9a-000000000001
status: test
logsource:
    category: process_creation
    product: windows
detection:
    selection:
        Image|endswith: '.exe'
    condition: selection
level: low
"""


def _rules(tmp_path: Path) -> Path:
    d = tmp_path / "rules"
    d.mkdir()
    (d / "any_exe.yml").write_text(_RULE)
    return d


def _run(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / script), *args],
                          capture_output=True, text=True, timeout=timeout)


def test_bench_size_rules_reports_memory_by_phase_and_where_it_goes(corpus, tmp_path):
    r = _run("bench_size.py", "--corpus", str(corpus), "--inputs", "evtx", "--sizes", "1,2",
             "--rules", str(_rules(tmp_path)), "--where")
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines() if line.startswith("evtx ")]
    assert [row[1] for row in rows] == ["1x", "2x"]
    for row, n in zip(rows, (1, 2), strict=True):
        assert int(row[3].replace(",", "")) == 565 * n  # records
        imports, config, rules, rules_peak, pre, post, peak = map(float, row[5:12])
        assert 0 < imports <= config <= rules <= rules_peak <= peak and pre <= peak
        assert post <= peak
        assert int(row[13].replace(",", "")) > 0  # alerts: the rule ran on every child
    assert "after compiling the rules, by source file" in r.stdout
    assert "by source line" in r.stdout and "added by the pass" in r.stdout
    assert re.search(r"largest peak RSS ratio to 1x: \d\.\d\d", r.stdout)


def test_bench_size_rules_from_the_cache(corpus, tmp_path):
    r = _run("bench_size.py", "--corpus", str(corpus), "--inputs", "evtx", "--sizes", "1",
             "--rules", str(_rules(tmp_path)), "--rule-cache", str(tmp_path / "cache"))
    assert r.returncode == 0, r.stderr
    assert "(from the cache" in r.stdout
    assert any(line.startswith("evtx ") for line in r.stdout.splitlines())


def test_bench_size_rules_fail_when_no_rule_was_compiled(corpus, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _run("bench_size.py", "--corpus", str(corpus), "--inputs", "evtx", "--sizes", "1",
             "--rules", str(empty))
    assert r.returncode != 0 and "no Sigma rule compiled" in r.stderr
    r = _run("bench_size.py", "--corpus", str(corpus), "--rules", str(tmp_path / "nowhere"))
    assert r.returncode == 1 and "no such file" in r.stderr


def test_bench_sigma_startup_on_a_built_evtx(corpus, tmp_path):
    r = _run("bench_sigma.py", "--corpus", str(corpus), "--rules", str(_rules(tmp_path)),
             "--startup", "--build-evtx-mb", "1", "--rounds", "1")
    assert r.returncode == 0, r.stderr
    assert re.search(r"files: 1 \(0\.9 MB\)\s+records: 565 ", r.stdout)
    for label in ("1 MB EVTX cold, no cache", "1 MB EVTX cold, cached rules"):
        line = next(x for x in r.stdout.splitlines() if x.startswith(label))
        assert re.search(r"\d\.\d{3}\s+\(whole processes: \d\.\d{3}\)$", line), line



def test_bench_sigma_passes_on_a_built_evtx_every_round_with_its_rules(corpus, tmp_path):
    """The default rows on a built EVTX; every round's stage has its rules (a stage consumes
    the rules it compiles: from the second round on the bench once measured none)."""
    r = _run("bench_sigma.py", "--corpus", str(corpus), "--rules", str(_rules(tmp_path)),
             "--build-evtx-mb", "1", "--rounds", "2")
    assert r.returncode == 0, r.stderr
    assert "records per pass: 565 " in r.stdout
    assert re.search(r"rules: \S+: 1 compiled, 0 rejected", r.stdout), r.stdout
    assert re.search(r"detection's own cost, cold: -?\d+\.\d us per event", r.stdout)


_FAKE_ZIRCOLITE = """import json, sys
args = sys.argv[1:]
out = args[args.index("-o") + 1]
json.dump([{"title": "t", "count": DETECTIONS}], open(out, "w"))
print("Events            1,731")
"""


def _fake_zircolite(tmp_path: Path, detections: int) -> Path:
    """A stand-in with Zircolite's command line and result file (the real one is not a
    dependency): the bench's own mechanics and its refusal of a run that detected nothing."""
    z = tmp_path / f"zircolite{detections}"
    (z / "rules").mkdir(parents=True)
    (z / "rules" / "rules_windows_sysmon_high.json").write_text("[]")
    (z / "zircolite.py").write_text(_FAKE_ZIRCOLITE.replace("DETECTIONS", str(detections)))
    return z


def test_bench_sigma_zircolite_side_by_side(corpus, tmp_path):
    rules = str(_rules(tmp_path))
    z = _fake_zircolite(tmp_path, 3)
    r = _run("bench_sigma.py", "--corpus", str(corpus), "--rules", rules, "--rounds", "1",
             "--zircolite", str(z), "--zircolite-python", sys.executable)
    assert r.returncode == 0, r.stderr
    assert "ruleset rules_windows_sysmon_high.json" in r.stdout
    zrow = next(x for x in r.stdout.splitlines() if x.startswith("Zircolite "))
    assert zrow.split()[3:5] == ["1,731", "3"]
    for label in ("SysmonX, rules from the cache", "SysmonX, rules compiled"):
        row = next(x for x in r.stdout.splitlines() if x.startswith(label))
        assert " 1,766 " in row and re.search(r"\d+\.\d\dx$", row), row
    # a side that detected nothing, or a Zircolite that is not there: non-zero
    r = _run("bench_sigma.py", "--corpus", str(corpus), "--rules", rules, "--rounds", "1",
             "--zircolite", str(_fake_zircolite(tmp_path, 0)), "--zircolite-python",
             sys.executable)
    assert r.returncode == 1 and "read or detected nothing" in r.stderr
    r = _run("bench_sigma.py", "--corpus", str(corpus), "--zircolite", str(tmp_path / "none"))
    assert r.returncode == 1 and "Zircolite not runnable" in r.stderr


def test_bench_replay_fills_the_config_cache_for_jobs_runs_too(corpus, tmp_path):
    """``bench_replay.py --jobs 2`` (without ``--jobs-speedup``) stopped with "config cache not
    filled": with --jobs the plans are stored by the workers' parent with an engine of its
    own, so the child's engine never said "stored". Filling must succeed and leave a cache the
    next run reads both the config and the plans from."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_replay_t", ROOT / "bench" /
                                                  "bench_replay.py")
    bench = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec.loader.exec_module(bench)
    finally:
        sys.path.remove(str(ROOT / "bench"))
    files = sorted(str(p) for p in (corpus / "evtx").rglob("*.evtx"))[:4]
    cfg = next((corpus / "configs").rglob("sysmonconfig-export.xml"))
    common = {"files": files, "rounds": 1, "repeat": 1, "cpu": None, "jobs": 2,
              "format": "none", "keep_duplicates": False}
    bench._warm_config_cache(str(tmp_path), common, [str(cfg)])
    r = bench._run_child(dict(common, what="replay", config=str(cfg),
                              config_cache=str(tmp_path), rounds=1, repeat=1))
    assert (r["jobs"], r["config_cache"], r["plan_cache"]) == (2, "hit", "hit")


def test_bench_replay_split_upper_bound_rows(corpus):
    """``bench_replay.py --split --upper-bound``: the prototype that writes JSON lines straight
    from the record text is checked against the replay's renderer on every record before it is
    timed, and its row and the config rows give ratios to the parse."""
    panache = (corpus / "evtx" / "sbousseaden__EVTX-ATTACK-SAMPLES" / "AutomatedTestingTools" /
               "PanacheSysmon_vs_AtomicRedTeam01.evtx")
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_replay.py"), "--corpus",
                        str(corpus), "--split", "--upper-bound", "--input", str(panache),
                        "--configs", "sos,none", "--rounds", "1"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert ("prototype against the renderer: 565 records the same bytes, 0 different, "
            "0 not taken") in r.stdout
    for label in ("replay with SwiftOnSecurity (compiled before)",
                  "parse + prototype transcode to JSON lines", "(no config replay, as above)"):
        row = next(x for x in r.stdout.splitlines() if x.startswith(label))
        assert re.search(r"\d+\.\d\d us per record   ratio \d\.\d{3}$", row), row
    assert "replay with sysmon-modular" not in r.stdout
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_replay.py"), "--corpus",
                        str(corpus), "--split", "--upper-bound", "--format", "xml", "--input",
                        str(panache), "--rounds", "1"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 1 and "--upper-bound measures JSON lines" in r.stderr


def test_keep_outputs_is_the_one_keep_of_the_live_benches(tmp_path):
    """``--keep DIR`` of bench_live.py and bench_exec_guids.py: one helper (bench/_common.py)
    copies the sensors' outputs, makes DIR, and does nothing without it."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from _common import keep_outputs
    finally:
        sys.path.remove(str(ROOT / "bench"))
    work = tmp_path / "work"
    work.mkdir()
    (work / "ebpf-1.jsonl").write_text('{"EventID":1}\n')
    (work / "audit-1.jsonl").write_text('{"EventID":5}\n')
    (work / "spawn.c").write_text("int main(){}\n")
    assert keep_outputs(work, None) == [] and keep_outputs(work, "") == []
    kept = keep_outputs(work, str(tmp_path / "kept" / "deeper"))
    assert [p.name for p in kept] == ["audit-1.jsonl", "ebpf-1.jsonl"]
    assert (tmp_path / "kept" / "deeper" / "ebpf-1.jsonl").read_text() == '{"EventID":1}\n'
    for name in ("bench_live.py", "bench_exec_guids.py"):
        text = (ROOT / "bench" / name).read_text()
        assert "keep_outputs(workdir, args.keep)" in text and "shutil.copy(" not in text, name


def test_test_modules_find_the_corpus_through_conftest():
    """README's test command runs without SYSMONX_CORPUS and the corpus beside the checkout
    (../shared/corpus): a module that read the variable itself built paths like ``None/evtx``
    there (a new user's report: 4 failures). The corpus is found by conftest's ``corpus``
    fixture / ``corpus_path()`` only."""
    direct = re.compile(r"environ(?:\.get\(|\[)\s*[\"']SYSMONX_CORPUS[\"']|getenv\(\s*[\"']SYSMONX_CORPUS")
    offenders = [p.name for p in sorted((ROOT / "tests").glob("*.py"))
                 if p.name != "conftest.py" and direct.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
