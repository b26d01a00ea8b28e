"""``bench/compare_config_trees.py``, the gate for a change to the config reader or the filter
planner: two trees agree on every corpus config file's model (or errors) and every EventID's
plan, and a tree that reads one filter's line or plans one pattern differently is reported
(exit status 1, the file named)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "compare_config_trees.py"


def _compare(corpus: Path, old: Path, new: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--corpus", str(corpus), "--old",
                           str(old), "--new", str(new)], capture_output=True, text=True,
                          timeout=600)


def _mutated(tmp_path: Path, rel: str, old: str, new: str) -> Path:
    """A copy of this tree's ``src`` with ``old`` replaced by ``new`` once in ``rel``."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
    path = src / rel
    text = path.read_text()
    assert text.count(old) == 1, (rel, old)
    path.write_text(text.replace(old, new))
    return src


def test_a_tree_agrees_with_itself(corpus):
    r = _compare(corpus, ROOT / "src", ROOT / "src")
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"(\d+) file readings .* (\d+) config x environment plan sets \((\d+) EventID "
                  r"plans\) compared: 0 differences", r.stdout)
    assert m, r.stdout
    assert int(m.group(1)) >= 500 and int(m.group(2)) >= 280 and int(m.group(3)) > 10_000


def test_a_filter_read_on_another_line_is_a_difference(corpus, tmp_path):
    new = _mutated(tmp_path, "sysmonx/config/parse.py",
                   "f.sourceline, ()))", "f.sourceline + 1, ()))")
    r = _compare(corpus, ROOT / "src", new)
    assert r.returncode == 1, r.stdout + r.stderr
    assert ("models: configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml "
            "extensions=True") in r.stdout, r.stdout


def test_a_pattern_planned_otherwise_is_a_difference(corpus, tmp_path):
    new = _mutated(tmp_path, "sysmonx/filtering/index.py",
                   "return frozenset((r + END,)) if r else None",
                   "return frozenset((r + END + 'x',)) if r else None")
    r = _compare(corpus, ROOT / "src", new)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "plans: configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml" in r.stdout
    assert "models:" not in r.stdout  # the reader is the same


def test_without_a_corpus_it_fails(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "--corpus", str(tmp_path), "--old",
                        str(ROOT / "src")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "no corpus configs" in r.stderr
