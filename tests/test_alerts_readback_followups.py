"""Alerts read back (SigmaAlert, event 1000) where ``--alerts``, ``--jobs`` and the CSV timeline
meet the ``Channels`` encoding:

* ``replay --jobs N --rules ... --alerts FILE``: the read-back alerts the run keeps go to the
  alerts file, at their place among the run's own alerts, as in one process (the workers used
  to leave them in the event stream, with a warning naming ``--jobs 1``);
* the CSV ``Channel`` of an alert row is the decoded channel name (``%2C`` read as ``,``);
* a read-back correlation's ``channels`` in the ``--alerts`` JSON comes from its ``Channels``
  (it was ``[]``), ``null`` for an event 1000 written before ``Channels`` existed."""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
import pytest
from builders import (WHOAMI, alert_event, folder_with_read_back_alerts, security_event,
                      whoami_pair_rules, whoami_rule)

from sysmonx.cli import main
from sysmonx.detection import DetectionStage, load_rules_text
from sysmonx.detection.alerts import Alert
from sysmonx.detection.readback import alert_from_event
from sysmonx.event import Event
from sysmonx.pipeline.replay import make_writer
from sysmonx.sinks.csv_timeline import COLUMNS, row

# 565 records, one whoami.exe process creation
PANACHE = "evtx/sbousseaden__EVTX-ATTACK-SAMPLES/AutomatedTestingTools/" \
    "PanacheSysmon_vs_AtomicRedTeam01.evtx"
BASE_ID = "6f5b7c1e-0000-4000-8000-0000000000c1"
CORR_ID = "6f5b7c1e-0000-4000-8000-0000000000c2"
BASE = whoami_rule(BASE_ID, "Whoami Execution (low base)", "low")
CORR = BASE + f"""---
title: Whoami seen (high correlation)
id: {CORR_ID}
level: high
correlation:
    type: event_count
    rules:
        - {BASE_ID}
    timespan: 3650d
    condition:
        gte: 1
    generate: true
"""
CHANNEL = COLUMNS.index("Channel")


def _summary(err: str) -> list[str]:
    return [ln for ln in err.splitlines()
            if "read back" in ln or ln.startswith("Sigma:") or "held back" in ln
            or "--jobs 1" in ln]


@pytest.fixture()
def folder(corpus, tmp_path, capsys) -> Path:
    """A folder holding the Panache EVTX and, after it, the two alerts a first run made from
    it (the whoami detection and the correlation over it) as event 1000 JSON lines."""
    rules = tmp_path / "corr.yml"
    rules.write_text(CORR)
    d, kinds = folder_with_read_back_alerts(corpus / PANACHE, rules, tmp_path)
    capsys.readouterr()
    assert kinds == ["detection", "event_count"]
    return d


@pytest.mark.parametrize("extra", [[], ["--min-level", "high"]])
def test_jobs_sends_kept_read_back_alerts_to_the_alerts_file(folder, tmp_path, capsys, extra):
    """Only the base rule is loaded: its read-back alert is made again (replaced), the
    correlation's is kept and goes to ``--alerts`` after this run's detection, with --jobs 2
    as in one process; the event outputs hold no event 1000 and are byte-identical."""
    base = tmp_path / "base.yml"
    base.write_text(BASE)
    events, alerts, errs = [], [], []
    for jobs in ([], ["--jobs", "2"]):
        out, al = tmp_path / f"ev{len(events)}.jsonl", tmp_path / f"al{len(events)}.jsonl"
        assert main(["replay", str(folder), "--rules", str(base), "-f", "jsonl", "-o", str(out),
                     "--alerts", str(al), "--keep-duplicates", *extra, *jobs]) == 0
        err = capsys.readouterr().err
        if jobs:
            assert "replaying 2 files on 2 worker processes" in err
        events.append(out.read_bytes())
        alerts.append(al.read_bytes())
        errs.append(_summary(err.replace(str(al), "AL")))
    assert events[1] == events[0]
    assert alerts[1] == alerts[0]
    assert errs[1] == errs[0]
    assert b'"EventID":1000' not in events[0]
    assert events[0].count(b"\n") == 565
    got = [orjson.loads(ln) for ln in alerts[0].splitlines()]
    # this run's detection (low: held back by --min-level high), then the correlation read back
    want = [(BASE_ID, "detection", False)] if not extra else []
    assert [(a["rule_id"], a["kind"], a["event"] is None) for a in got] == \
        want + [(CORR_ID, "event_count", True)]
    assert got[-1]["channels"] == ["Microsoft-Windows-Sysmon/Operational"]
    assert not any("--jobs 1" in ln for ln in errs[1])
    assert any("alerts read back (event 1000) written to AL: 1 of 2 " in ln for ln in errs[1])
    assert any("1 replaced by this run's --rules" in ln for ln in errs[1])


def test_jobs_alerts_file_keeps_every_read_back_alert_of_other_rules(folder, tmp_path, capsys):
    """Rules that make neither read-back alert again: both go to ``--alerts`` in input order,
    the same lines with --jobs 2 and in one process."""
    other = tmp_path / "other.yml"
    other.write_text(whoami_rule("6f5b7c1e-0000-4000-8000-0000000000c9", "Other", "medium"))
    got = []
    for jobs in ([], ["--jobs", "2"]):
        al = tmp_path / f"o{len(got)}.jsonl"
        assert main(["replay", str(folder), "--rules", str(other), "--no-output", "--alerts",
                     str(al), "--keep-duplicates", *jobs]) == 0
        capsys.readouterr()
        got.append(al.read_bytes())
    assert got[1] == got[0]
    lines = [orjson.loads(ln) for ln in got[0].splitlines()]
    assert [(a["rule_id"], a["event"] is None) for a in lines] == [
        ("6f5b7c1e-0000-4000-8000-0000000000c9", False), (BASE_ID, True), (CORR_ID, True)]


def _alert_row_channel(channels: str) -> str:
    e = alert_event({"RuleId": "r", "RuleTitle": "t", "RuleLevel": "high",
                     "RuleKind": "event_count", "Channels": channels, "RecordIds": "5,7"})
    return row(e)[CHANNEL]


def test_csv_alert_row_channel_is_decoded():
    assert _alert_row_channel("Custom%2CTrace/Operational") == "Custom,Trace/Operational"
    assert _alert_row_channel("Custom%2CTrace/Operational,Security") == \
        "Custom,Trace/Operational,Security"
    assert _alert_row_channel("100%25Done/Admin") == "100%Done/Admin"
    assert _alert_row_channel("Security,Microsoft-Windows-Sysmon/Operational") == \
        "Security,Microsoft-Windows-Sysmon/Operational"
    assert _alert_row_channel("50%off") == "50%off"  # not an escape: as written
    assert _alert_row_channel("") == ""
    # the row's EventData keeps the field as written (what tells two names from one)
    e = alert_event({"RuleKind": "detection", "Channels": "Custom%2CTrace/Operational"})
    assert orjson.loads(row(e)[-1])["Channels"] == "Custom%2CTrace/Operational"


def test_csv_alert_row_of_a_channel_with_a_comma(tmp_path, capsys):
    """End to end: an event of a channel named with a comma, its alert in the CSV timeline."""
    rules = tmp_path / "r.yml"
    rules.write_text(whoami_rule(BASE_ID, "w", "high"))
    src = tmp_path / "in.jsonl"
    ev = Event(1, {"Image": WHOAMI}, channel="Custom,Trace/Operational", computer="h",
               time_created="2024-01-01T00:00:00.000000000Z", record_id=42)
    with open(src, "wb") as f:
        w = make_writer("jsonl", f)
        w.write(ev)
        w.close()
    out = tmp_path / "t.csv"
    assert main(["replay", str(src), "--rules", str(rules), "--non-sysmon", "pass",
                 "--alerts-only", "-f", "csv", "-o", str(out), "-q"]) == 0
    capsys.readouterr()
    rows = list(csv.DictReader(out.read_text(encoding="utf-8").splitlines()))
    assert [(r["EventName"], r["Channel"], r["RecordID"]) for r in rows] == [
        ("SigmaAlert", "Custom,Trace/Operational", "42")]


PAIR = whoami_pair_rules("0c1ae2a4-0000-4000-8000-0000000000d2",
                         "0c1ae2a4-0000-4000-8000-0000000000d3",
                         "0c1ae2a4-0000-4000-8000-0000000000d4", 2)


def _correlation(sysmon_channel: str = "Microsoft-Windows-Sysmon/Operational") -> Alert:
    det = DetectionStage(load_rules_text(PAIR))
    sec = security_event(4688, {"NewProcessName": WHOAMI}, 5)
    sysmon = Event(1, {"Image": WHOAMI}, channel=sysmon_channel or None, computer="h",
                   time_created="2024-01-01T00:00:01.000000000Z", record_id=7)
    alerts = det.process(sec) + det.process(sysmon) + det.finish()
    (corr,) = [a for a in alerts if a.kind != "detection"]
    return corr


@pytest.mark.parametrize("channel", ["Microsoft-Windows-Sysmon/Operational",
                                     "Custom,Trace/Operational", ""])
def test_read_back_correlation_names_its_channels(channel):
    """The ``--alerts`` line of a correlation read back from its event 1000 has the
    ``channels`` the first run's line had (decoded; ``""`` for an event without a channel)."""
    corr = _correlation(channel)
    first = orjson.loads(corr.to_json())
    assert first["channels"] == ["Security", channel]
    back = orjson.loads(alert_from_event(corr.to_event(1)).to_json())
    assert back["channels"] == first["channels"]
    first.pop("event")
    back.pop("event")
    assert back == first


def test_read_back_correlation_without_channels_field_is_null():
    """An event 1000 written before ``Channels`` existed (version 2): which channels is not
    known, ``null``, not ``[]`` (which would say "none")."""
    event = _correlation().to_event(1)
    del event.data["Channels"]
    line = orjson.loads(alert_from_event(event).to_json())
    assert "channels" in line and line["channels"] is None
    # a detection's line has no channels key, with or without the field
    det = alert_event({"RuleId": "r", "RuleKind": "detection", "RecordIds": "7"})
    assert "channels" not in orjson.loads(alert_from_event(det).to_json())
