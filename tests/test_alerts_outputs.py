"""Where alerts go, as a new user (incident responder) found them: ``--alerts FILE|-`` with
SigmaAlert events read back from an earlier output, ``--alerts-only`` timelines, the CSV
columns of an alert row, ``--tag`` with ATT&CK v19's split of Defense Evasion and the
detections table's ``written`` column.

The sample figures: the built-in sample events with the two rules below make two alerts, the
low base rule's (on the sample's whoami.exe) and the high correlation's over it."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import orjson
import pytest

from sysmonx.cli import main
from sysmonx.detection.triage import TACTIC_SUCCESSORS, AlertTriage
from sysmonx.event import Event
from sysmonx.sinks.csv_timeline import row

from test_alert_triage import BASE, BUNDLE, CORR

BASE_ID = "6f5b7c1e-0000-4000-8000-0000000000a1"
CORR_ID = "6f5b7c1e-0000-4000-8000-0000000000a2"


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    d = tmp_path / "rules"
    d.mkdir()
    (d / "base.yml").write_text(BASE)
    (d / "corr.yml").write_text(CORR)
    return d


@pytest.fixture
def earlier(tmp_path: Path, rules: Path, capsys) -> Path:
    """An earlier run's output: the sample events and their two alerts as event 1000."""
    out = tmp_path / "earlier.jsonl"
    assert main(["replay", "--sample", "--rules", str(rules), "--no-rule-cache", "-f", "jsonl",
                 "-o", str(out), "-q"]) == 0
    capsys.readouterr()
    assert out.read_bytes().count(b'"EventID":1000') == 2
    return out


def _lines(data: bytes) -> list[dict]:
    return [orjson.loads(x) for x in data.splitlines()]


def test_alerts_file_receives_alerts_read_back_without_rules(earlier, tmp_path, capsys):
    """Finding 1: ``--alerts FILE`` without ``--rules`` was ignored (no file, exit 0)."""
    x = tmp_path / "x.jsonl"
    assert main(["replay", str(earlier), "--alerts", str(x), "--no-output", "-q"]) == 0
    err = capsys.readouterr().err
    got = _lines(x.read_bytes())
    assert [(a["rule_id"], a["level"], a["kind"]) for a in got] == [
        (BASE_ID, "low", "detection"), (CORR_ID, "high", "event_count")]
    assert got[0]["type"] == "sigma_alert" and got[0]["event"] is None
    assert got[0]["attack"] == {"tactics": ["Discovery"], "techniques": ["T1033"]}
    assert got[1]["value"] == 1 and got[1]["rules"] == [BASE_ID]
    assert "alerts read back (event 1000) written to " + str(x) + ": 2 (as JSON lines)" in err
    # --alerts -: stdout carries only the selected alerts (README), the events go nowhere
    assert main(["replay", str(earlier), "--technique", "T1033", "--alerts", "-", "-q"]) == 0
    out = capsys.readouterr().out.encode()
    assert [a["rule_id"] for a in _lines(out)] == [BASE_ID]
    # the same alerts as the run that made them wrote with --alerts, but the matched event,
    # which event 1000 does not carry
    direct = tmp_path / "direct.jsonl"
    rules = str(tmp_path / "rules")
    assert main(["replay", "--sample", "--rules", rules, "--no-rule-cache", "--alerts",
                 str(direct), "--no-output", "-q"]) == 0
    made = _lines(direct.read_bytes())
    assert made[0]["event"] is not None
    for a in made:
        a["event"] = None
    assert made == got


def test_alerts_file_with_rules_takes_the_kept_read_back_alerts(earlier, tmp_path, capsys):
    """Finding 1 with ``--rules``: the read-back alerts stayed in the event stream, split from
    this run's alerts in ``--alerts FILE``."""
    only_base = tmp_path / "only_base"
    only_base.mkdir()
    (only_base / "base.yml").write_text(BASE)
    rb, ev = tmp_path / "rb.jsonl", tmp_path / "ev.jsonl"
    assert main(["replay", str(earlier), "--rules", str(only_base), "--no-rule-cache",
                 "--alerts", str(rb), "-f", "jsonl", "-o", str(ev), "-q"]) == 0
    capsys.readouterr()
    assert b'"EventID":1000' not in ev.read_bytes()
    # the base alert is made again (the read-back one replaced), the correlation's is kept
    got = _lines(rb.read_bytes())
    assert sorted((a["rule_id"], a["event"] is None) for a in got) == [
        (BASE_ID, False), (CORR_ID, True)]


def test_alerts_only_timeline_in_the_output_format(earlier, rules, tmp_path, capsys):
    """Finding 4: ``-f csv`` with ``--min-level high`` gave every event; ``--alerts-only``
    gives the detections only, in the format asked for."""
    high = tmp_path / "high.csv"
    assert main(["replay", "--sample", "--rules", str(rules), "--no-rule-cache",
                 "--alerts-only", "--min-level", "high", "-f", "csv", "-o", str(high),
                 "-q"]) == 0
    err = capsys.readouterr().err
    rows = list(csv.DictReader(io.StringIO(high.read_text(encoding="utf-8"))))
    assert [(r["EventID"], r["EventName"], r["RuleName"]) for r in rows] == [
        ("1000", "SigmaAlert", "Whoami seen (high correlation)")]
    # the events the config passes (those of the earlier run's output, but its alerts)
    events = len(earlier.read_bytes().splitlines()) - 2
    assert events == 17 and f"--alerts-only: {events} events not written" in err
    # read back from an earlier output, no rules: the same rows
    back = tmp_path / "back.csv"
    assert main(["replay", str(earlier), "--alerts-only", "--min-level", "high", "-f", "csv",
                 "-o", str(back), "-q"]) == 0
    capsys.readouterr()
    assert back.read_bytes() == high.read_bytes()
    both = tmp_path / "both.jsonl"
    assert main(["replay", str(earlier), "--alerts-only", "-f", "jsonl", "-o", str(both),
                 "-q", "--jobs", "2"]) == 0
    capsys.readouterr()
    assert [e["EventID"] for e in _lines(both.read_bytes())] == [1000, 1000]
    for bad in (["--alerts", str(tmp_path / "a.jsonl")], ["--no-output"]):
        assert main(["replay", str(earlier), "--alerts-only", *bad]) == 87
        assert "error: --alerts-only writes the alerts in --format" in capsys.readouterr().err


def test_csv_event_names_follow_sysmon_symbols():
    """Finding 6: EventName was the tag for most events, a sentence for 4, 16 and 255."""
    names = {eid: row(Event(eid, {"State": "Started"}))[5] for eid in (1, 4, 16, 255)}
    assert names == {1: "ProcessCreate", 4: "ServiceStateChange",
                     16: "ServiceConfigurationChange", 255: "Error"}
    r = row(Event(3, {}, channel="Microsoft-Windows-Sysmon/Operational", record_id=7))
    assert (r[3], r[6]) == ("Microsoft-Windows-Sysmon/Operational", "7")
    assert row(Event(3, {}, channel=None))[3] == ""


def test_tag_of_a_split_tactic_selects_its_successors(rules, tmp_path, capsys):
    """Finding 7: ``--tag attack.defense-evasion`` selected nothing in rules tagged after
    ATT&CK v19, and nothing said why."""
    assert TACTIC_SUCCESSORS["attack.defense-evasion"][1] == (
        "attack.stealth", "attack.defense-impairment")
    t = AlertTriage.from_options(None, [], ["attack.defense_evasion"])
    assert t is not None
    assert t.tags == ("attack.defense-evasion", "attack.stealth", "attack.defense-impairment")
    assert t.keeps("low", ("attack.stealth",)) and t.keeps("low", ("attack.defense-impairment",))
    assert t.keeps("low", ("attack.defense_evasion",)) and not t.keeps("low", ("attack.impact",))
    assert t.unmatched([("attack.stealth",)]) == []
    assert t.unmatched([("attack.discovery",)]) == ["attack.defense-evasion"]
    assert AlertTriage.from_options(None, [], ["attack.stealth"]).tags == ("attack.stealth",)
    assert main(["replay", "--sample", "--rules", str(rules), "--no-rule-cache", "--no-output",
                 "-q", "--tag", "attack.defense-evasion", "--technique", "T1033,T9999"]) == 0
    err = capsys.readouterr().err
    assert ("note: --tag attack.defense-evasion also selects attack.stealth, "
            "attack.defense-impairment: ATT&CK v19 split Defense Evasion into Stealth and "
            "Defense Impairment") in err
    assert "note: --technique T9999 selects none of the 2 loaded rules" in err
    assert "note: --tag attack.defense-evasion selects none" in err
    assert "--technique T1033 selects none" not in err


def test_detections_table_shows_what_was_written(rules, monkeypatch, capsys):
    """Finding 8: with ``--min-level high`` the table listed the low rule's alerts as if
    written."""
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["replay", "--sample", "--rules", str(rules), "--no-rule-cache", "--no-output",
                 "--min-level", "high"]) == 0
    err = capsys.readouterr().err
    table = {ln.split("│")[-2].strip(): [c.strip() for c in ln.split("│")[1:-2]]
             for ln in err.splitlines() if ln.startswith("│")}
    head = next(ln for ln in err.splitlines() if "matches" in ln)
    assert [c.strip() for c in head.split("┃")[1:-1]] == [
        "level", "matches", "alerts", "written", "rule"]
    assert table[f"Whoami Execution (low base) ({BASE_ID})"] == ["low", "1", "1", "0"]
    assert table[f"Whoami seen (high correlation) ({CORR_ID})"] == ["high", "1", "1", "1"]


def test_corpus_read_back_alerts_file_equals_the_run_that_made_them(corpus, tmp_path, capsys):
    """The report's run: 422 SigmaHQ alerts of the corpus EVTX, read back from the XML output
    with ``--alerts`` (no rules), are the JSON lines the first run wrote, but ``event``."""
    evtx, bundle = f"{corpus}/evtx", f"{corpus}/{BUNDLE}"
    allxml, direct, back = tmp_path / "all.xml", tmp_path / "d.jsonl", tmp_path / "b.jsonl"
    assert main(["replay", evtx, "--rules", bundle, "-o", str(allxml), "-q"]) == 0
    assert main(["replay", evtx, "--rules", bundle, "--alerts", str(direct), "--no-output",
                 "-q"]) == 0
    assert main(["replay", str(allxml), "--alerts", str(back), "--no-output", "-q"]) == 0
    capsys.readouterr()
    made, got = _lines(direct.read_bytes()), _lines(back.read_bytes())
    assert len(made) == len(got) == 422
    for a in made:
        a["event"] = None
    assert made == got
