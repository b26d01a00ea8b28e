"""The test run's corpus rule (tests/conftest.py, README "Run the tests"): a ``SYSMONX_CORPUS``
that names no folder stops the run with a usage error naming it (new-user report s15: a mistyped
path skipped every corpus test and the summary said the variable was not set)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _collect(corpus: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, SYSMONX_CORPUS=corpus)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--collect-only", "tests/test_conftest_corpus.py"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_missing_corpus_folder_stops_the_run(tmp_path):
    missing = str(tmp_path / "no-such-corpus")
    got = _collect(missing)
    assert got.returncode == 4, got.stdout + got.stderr
    out = got.stdout + got.stderr
    assert f"SYSMONX_CORPUS is set to {missing!r}, which is not a folder" in out
    assert "not set" not in out


def test_existing_folder_is_accepted(tmp_path):
    got = _collect(str(tmp_path))
    assert got.returncode == 0, got.stdout + got.stderr
    assert "2 tests collected" in got.stdout
