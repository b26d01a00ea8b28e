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
    missing = tmp_path / "nowhere"
    # corpus absent (not set, or set to a folder that does not exist): skips are fine
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**base, "SYSMONX_CORPUS": str(missing)})
    assert r.returncode == 0, r.stdout
    empty = tmp_path / "corpus"
    empty.mkdir()
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**base, "SYSMONX_CORPUS": str(empty)})
    assert r.returncode == 1, r.stdout
    assert "corpus tests skipped although SYSMONX_CORPUS is set" in r.stdout
    assert "test_incomplete_corpus" in r.stdout and "test_other_skip" not in \
        r.stdout.split("corpus tests skipped")[1]
