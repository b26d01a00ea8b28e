"""bench/bench_workbench.py runs, prints its rows as ratios of the replay, and fails when it
measured nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "bench_workbench.py"), *args],
                          capture_output=True, text=True, timeout=300, check=False)


def test_bench_prints_ratios(corpus):
    r = _run("--corpus", str(corpus), "--rounds", "1", "--inputs", str(corpus / "evtx"))
    assert r.returncode == 0, r.stderr
    assert "Sysmon events per pass: 1,755" in r.stdout
    rows = {ln.split("  ")[0].strip(): ln.split()[-1] for ln in r.stdout.splitlines()
            if ln.startswith(("replay", "config"))}
    assert rows["replay --config modular (baseline)"] == "1.00"
    assert float(rows["config stats, cold (headline)"]) > 0


def test_bench_fails_without_events(corpus, tmp_path):
    r = _run("--corpus", str(corpus), "--rounds", "1", "--inputs", str(tmp_path))
    assert r.returncode == 1
    assert "none" in r.stderr
