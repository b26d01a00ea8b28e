"""What replay and run say about Sigma alerts, held to what they do.

From a new user's report (session 7): ``replay --help`` said alerts go into the event stream
*and*, with ``--alerts``, to a file, while ``--alerts FILE`` takes them out of the stream;
``replay -q`` hid the one line with the alert count; the detections table listed every rule
that fired (~330 lines on the corpus); ``--profile-rules``' footer read as jargon. Each test
fails on the code before these changes.
"""

from __future__ import annotations

import json
import re

import pytest

from sysmonx.cli import main
from sysmonx.cli.replay import _replay_parser
from sysmonx.cli.run import _run_parser

DETECTIONS_SHOWN = 20  # sysmonx.cli.common.DETECTIONS_SHOWN


def _rules(tmp_path, n: int):
    """``n`` rules that each fire on the built-in sample's 4 ProcessCreate events."""
    d = tmp_path / "rules"
    d.mkdir()
    for i in range(n):
        (d / f"r{i:02d}.yml").write_text(
            f"title: rule {i:02d}\nid: 00000000-0000-0000-0000-000000000{i:03d}\nstatus: test\n"
            "level: low\nlogsource:\n    product: windows\n    category: process_creation\n"
            "detection:\n    sel:\n        Image|endswith: '.exe'\n    condition: sel\n")
    return d


def _help(parser, option: str) -> str:
    """The help text of ``option`` as argparse keeps it (one string, unwrapped)."""
    (action,) = [a for a in parser._actions if option in a.option_strings]
    return " ".join(action.help.split())


@pytest.mark.parametrize("parser", [_replay_parser, _run_parser])
def test_help_says_alerts_file_takes_alerts_out_of_the_stream(parser, tmp_path, capsys):
    rules_help, alerts_help = _help(parser(), "--rules"), _help(parser(), "--alerts")
    assert "event 1000" in rules_help and "instead" in rules_help
    assert "and, with --alerts" not in rules_help
    assert "instead of the event stream" in alerts_help
    # ... and that is what the code does: the stream carries no event 1000 with --alerts FILE
    d = _rules(tmp_path, 1)
    alerts, out = tmp_path / "a.jsonl", tmp_path / "o.xml"
    assert main(["replay", "--sample", "--rules", str(d), "--no-rule-cache", "-q",
                 "--alerts", str(alerts), "-o", str(out)]) == 0
    assert len(alerts.read_text().splitlines()) == 4
    assert "<EventID>1000</EventID>" not in out.read_text()
    out2 = tmp_path / "o2.xml"
    assert main(["replay", "--sample", "--rules", str(d), "--no-rule-cache", "-q",
                 "-o", str(out2)]) == 0
    assert out2.read_text().count("<EventID>1000</EventID>") == 4
    capsys.readouterr()


def test_quiet_keeps_the_sigma_alert_line(tmp_path, capsys):
    d = _rules(tmp_path, 2)
    alerts = tmp_path / "a.jsonl"
    assert main(["replay", "--sample", "--rules", str(d), "--no-rule-cache", "-q",
                 "--alerts", str(alerts), "-o", str(tmp_path / "o.xml")]) == 0
    err = capsys.readouterr().err
    assert ("Sigma: 2 rules and 0 correlations loaded, 0 rejected, of 2 read; events checked "
            f"17; alerts 8 (low 8), written to {alerts}") in err.splitlines()
    assert "Sigma detections" not in err  # the table stays a summary table: not under -q
    assert "the Sigma line" in _help(_replay_parser(), "-q")


def test_detections_table_shows_the_top_rules_and_counts_the_rest(tmp_path, capsys):
    n = DETECTIONS_SHOWN + 5
    d = _rules(tmp_path, n)
    argv = ["replay", "--sample", "--rules", str(d), "--no-rule-cache", "--no-output"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    rows = re.findall(r"rule \d\d \(0{8}-", err)
    assert len(rows) == DETECTIONS_SHOWN
    assert f"Sigma detections: the {DETECTIONS_SHOWN} most severe rules with the most alerts" in err
    assert "... and 5 more rules (20 alerts; all with --all-detections)" in err.splitlines()
    assert main(argv + ["--all-detections"]) == 0
    err = capsys.readouterr().err
    assert len(re.findall(r"rule \d\d \(0{8}-", err)) == n and "more rules" not in err
    assert "--all-detections" in " ".join(
        a for act in _run_parser()._actions for a in act.option_strings)


def test_detections_table_never_hides_a_severe_rule_behind_busy_low_ones(tmp_path, capsys):
    """A critical rule that fired once comes before low rules that fired four times each."""
    d = _rules(tmp_path, DETECTIONS_SHOWN + 1)
    (d / "crit.yml").write_text(
        "title: critical once\nid: 00000000-0000-0000-0000-00000000c001\nstatus: test\n"
        "level: critical\nlogsource:\n    product: windows\n    category: process_creation\n"
        "detection:\n    sel:\n        Image|endswith: '\\whoami.exe'\n    condition: sel\n")
    assert main(["replay", "--sample", "--rules", str(d), "--no-rule-cache", "--no-output"]) == 0
    err = capsys.readouterr().err
    table = err[err.index("Sigma detections"):]
    assert "critical once" in table
    assert table.index("critical once") < table.index("rule 00")
    assert "... and 2 more rules (8 alerts; all with --all-detections)" in err.splitlines()


def test_sigma_line_says_no_level_for_a_rule_without_one(tmp_path, capsys):
    """Sigma makes ``level`` optional: the Sigma line said ``alerts 4 (- 4)`` for such a rule."""
    d = tmp_path / "rules"
    d.mkdir()
    (d / "nolevel.yml").write_text(
        "title: no level\nid: 00000000-0000-0000-0000-00000000d001\nstatus: test\n"
        "logsource:\n    product: windows\n    category: process_creation\n"
        "detection:\n    sel:\n        Image|endswith: '.exe'\n    condition: sel\n")
    assert main(["replay", "--sample", "--rules", str(d), "--no-rule-cache", "--no-output"]) == 0
    err = capsys.readouterr().err
    assert "; alerts 4 (no level 4), written nowhere (no output)" in err, err[-600:]


def test_profile_rules_prints_a_legend_of_its_words(tmp_path, capsys):
    d = _rules(tmp_path, 1)
    out = tmp_path / "p.json"
    assert main(["replay", "--sample", "--rules", str(d), "--no-rule-cache", "-q",
                 "--no-output", "--profile-rules-out", str(out)]) == 0
    lines = capsys.readouterr().err.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("prefilter: "))
    legend = lines[i + 1]
    assert legend.startswith("legend: ")
    for word in ("eligible", "skipped", "candidates", "run", "hit rate", "[unindexed]"):
        assert word in legend
    assert json.loads(out.read_text())["prefilter"]["matches"] == 4
