"""SigmaHQ regression cases: each case's rule run on its positive EVTX gives the expected matches.

Cases live in ``<corpus>/sigma/regression_data/<...>/<case>/``: ``info.yml`` (rule id, optional
``match_count``), ``rule__*.yml`` and the positive ``<id>.evtx`` (plus its ``.json`` rendering,
which is replayed too and must give the same count). Where ``match_count`` is absent, SigmaHQ's
runner (tests/regression_tests_runner.py) passes a case when the rule id appears at all, so the
criterion is "at least one match".

Known misses are listed with their reason; the test asserts the exact pass count, so a new miss
or a fixed one both show up.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sysmonx.detection import DetectionStage, load_rules
from sysmonx.sources import open_source

#: Cases whose info.yml count disagrees with the Sigma semantics, with what we count and why.
#: All three info files were written in one batch (2025-10-24, "SigmaHQ Team") with
#: match_count 1, at a time the SigmaHQ runner only checked that the rule matched at all.
KNOWN_MISSES = {
    "file_event_win_cred_dump_tools_dropped_files": (
        3, "the EVTX holds three file creations whose TargetFilename ends with names the rule "
           "lists (\\procdump64.exe, \\procdump64a.exe, \\procdump.exe); each one matches"),
    "registry_set_change_security_zones": (
        3, "the EVTX holds three SetValue events under ...\\ZoneMap\\Domains\\ with Details "
           "'DWORD (0x00000002)', none of them in the filter; each one matches"),
    "registry_set_disable_administrative_share": (
        2, "the EVTX sets both AutoShareServer and AutoShareWks to DWORD (0x00000000); the rule "
           "lists both, so both events match"),
}


def _cases(corpus: Path) -> list:
    root = corpus / "sigma" / "regression_data"
    return sorted(p.parent for p in root.rglob("info.yml"))


def _count(stage: DetectionStage, path: Path, rule_id: str) -> int:
    errors: list = []
    n = 0
    for ev in open_source(str(path), errors.append):
        n += sum(1 for a in stage.process(ev) if a.rule_id == rule_id)
    n += sum(1 for a in stage.finish() if a.rule_id == rule_id)
    assert not errors, errors
    return n


def test_sigmahq_regression_cases(corpus):
    cases = _cases(corpus)
    if not cases:
        pytest.skip("no SigmaHQ regression data in the corpus")
    passed, misses, report = 0, {}, []
    for case in cases:
        info = yaml.safe_load((case / "info.yml").read_text())
        rule_id = info["rule_metadata"][0]["id"]
        test = info["regression_tests_info"][0]
        expected = test.get("match_count")
        stage = DetectionStage(load_rules(sorted(case.glob("rule__*.yml"))))
        assert not stage.issues, [str(i) for i in stage.issues]
        assert [r.id for r in stage.matcher.compiled] == [rule_id]
        evtx = case / f"{rule_id}.evtx"
        got = _count(stage, evtx, rule_id)
        # The JSON rendering of the same records gives the same answer.
        json_file = case / f"{rule_id}.json"
        if json_file.exists():
            assert _count(DetectionStage(load_rules(sorted(case.glob("rule__*.yml")))),
                          json_file, rule_id) == got, case.name
        ok = got == expected if expected is not None else got >= 1
        report.append(f"{case.name}: expected {expected if expected is not None else '>=1'}, "
                      f"got {got}")
        if ok:
            passed += 1
        else:
            misses[case.name] = got
    total = len(cases)
    with_count = sum(1 for line in report if "expected >=1" not in line)
    exact = sum(1 for line in report if "expected >=1" not in line
                and line.split("expected ")[1].split(",")[0] == line.rsplit("got ", 1)[1])
    print(f"\nSigmaHQ regression: {passed} passed of {total}")
    for name, got in misses.items():
        print(f"  miss {name}: got {got}: {KNOWN_MISSES.get(name, (None, 'UNEXPECTED'))[1]}")
    assert misses == {k: v[0] for k, v in KNOWN_MISSES.items()}, "\n".join(report)
    assert passed == total - len(KNOWN_MISSES)
    assert total >= 100
    # README states the claim exactly: how many cases give a count, how many match it
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    claim = (f"{total} of {total} fire; of the {with_count} cases that give an expected match "
             f"count, {exact} match it exactly")
    assert claim in " ".join(readme.split()), claim
    assert f"the other {total - with_count} give no count" in " ".join(readme.split())


def test_regression_rules_in_one_stage(corpus):
    """All regression rules loaded together (as a user would) give each case the same count:
    rules of other cases never add or take matches."""
    cases = _cases(corpus)
    if not cases:
        pytest.skip("no SigmaHQ regression data in the corpus")
    stage = DetectionStage(load_rules([p for c in cases for p in sorted(c.glob("rule__*.yml"))]))
    assert not stage.rejected
    for case in cases:
        info = yaml.safe_load((case / "info.yml").read_text())
        rule_id = info["rule_metadata"][0]["id"]
        expected = info["regression_tests_info"][0].get("match_count")
        got = _count(stage, case / f"{rule_id}.evtx", rule_id)
        want = KNOWN_MISSES.get(case.name, (expected,))[0]
        assert (got == want) if want is not None else got >= 1, (case.name, got, want)
