"""Alert triage (``--min-level``, ``--technique``, ``--tag``) and SysmonX's own SigmaAlert events
(1000) read back from a replayed SysmonX output.

The corpus figures: the SigmaHQ bundle over the corpus EVTX files makes 422 alerts (critical 8,
high 147, medium 231, low 36); 25 of them are of rules tagged T1003 or one of its
sub-techniques (the count a user got with ``jq`` on the alerts JSON lines)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from builders import alert_event, alert_events, security_event, whoami_rule

from sysmonx.cli import main
from sysmonx.detection.triage import AlertTriage, TriageError
from sysmonx.event import Event

BUNDLE = "sigma/sigmahq_rules_sysmon_categories.tar.gz"

BASE = whoami_rule("6f5b7c1e-0000-4000-8000-0000000000a1", "Whoami Execution (low base)", "low",
                   status="test", tags=("attack.discovery", "attack.t1033"))

CORR = """title: Whoami seen (high correlation)
id: 6f5b7c1e-0000-4000-8000-0000000000a2
level: high
correlation:
    type: event_count
    rules:
        - 6f5b7c1e-0000-4000-8000-0000000000a1
    timespan: 3650d
    condition:
        gte: 1
    generate: true
"""


def _alerts(path: Path) -> list[Event]:
    return alert_events(path)


def test_triage_levels_and_tags():
    t = AlertTriage.from_options("High")
    assert t is not None and t.min_level == "high"
    assert t.keeps("high", ()) and t.keeps("critical", ())
    assert not t.keeps("medium", ()) and not t.keeps("informational", ())
    assert not t.keeps(None, ()) and not t.keeps("", ()) and not t.keeps("severe", ())
    t = AlertTriage.from_options(None, ["T1003,t1059.001"])
    assert t is not None and t.tags == ("attack.t1003", "attack.t1059.001")
    assert t.keeps("low", ("attack.t1003",)) and t.keeps("low", ("attack.T1003.001",))
    assert t.keeps(None, ("attack.t1059.001",))
    assert not t.keeps("high", ("attack.t1059",))       # a sub-technique selects no parent
    assert not t.keeps("high", ("attack.t10030",))      # T10030 is not under T1003
    assert not t.keeps("high", ())
    t = AlertTriage.from_options("medium", [], ["attack.credential_access"])
    assert t is not None
    assert t.keeps("high", ("attack.credential-access",))
    assert not t.keeps("low", ("attack.credential-access",))
    assert not t.keeps("high", ("attack.discovery",))
    assert AlertTriage.from_options(None, [], []) is None
    for bad in (("bogus", [], []), (None, ["1003"], []), (None, ["T1003.1"], []),
                (None, [], [""]), (None, [], ["attack t1003"])):
        with pytest.raises(TriageError):
            AlertTriage.from_options(*bad)


def test_bad_values_exit_87(capsys):
    assert main(["replay", "--sample", "--min-level", "severe", "-q"]) == 87
    assert "--min-level 'severe': not a Sigma level" in capsys.readouterr().err
    assert main(["replay", "--sample", "--technique", "T1O03", "-q"]) == 87
    assert "--technique 'T1O03'" in capsys.readouterr().err
    assert main(["run", "--min-level", "x", "--duration", "1"]) == 87


def test_low_base_feeds_high_correlation(tmp_path, capsys):
    """--min-level high holds back the low base alert, and the high correlation over it still
    fires (correlations see every detection hit)."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "base.yml").write_text(BASE)
    (rules / "corr.yml").write_text(CORR)
    full, high = tmp_path / "full.jsonl", tmp_path / "high.jsonl"
    assert main(["replay", "--sample", "--rules", str(rules), "-f", "jsonl", "-o", str(full),
                 "-q"]) == 0
    capsys.readouterr()
    assert sorted(e.data["RuleLevel"] for e in _alerts(full)) == ["high", "low"]
    assert main(["replay", "--sample", "--rules", str(rules), "-f", "jsonl", "-o", str(high),
                 "-q", "--min-level", "high"]) == 0
    err = capsys.readouterr().err
    kept = _alerts(high)
    assert [(e.data["RuleTitle"], e.data["RuleKind"], e.record_id) for e in kept] == [
        ("Whoami seen (high correlation)", "event_count", 1)]
    assert "alerts held back by --min-level high: 1 " in err
    # the Sysmon events are the same: the option touches alerts only
    plain = [ln for ln in full.read_bytes().splitlines() if b'"EventID":1000' not in ln]
    assert plain == [ln for ln in high.read_bytes().splitlines()
                     if b'"EventID":1000' not in ln]
    # --alerts FILE gets the same selection
    alerts = tmp_path / "alerts.jsonl"
    assert main(["replay", "--sample", "--rules", str(rules), "--alerts", str(alerts),
                 "--no-output", "-q", "--technique", "T1033"]) == 0
    lines = [orjson.loads(x) for x in alerts.read_bytes().splitlines()]
    assert [a["title"] for a in lines] == ["Whoami Execution (low base)"]


def test_corpus_min_level_technique_and_jobs(corpus, tmp_path, capsys):
    evtx, rules = f"{corpus}/evtx", f"{corpus}/{BUNDLE}"
    one, two = tmp_path / "one.xml", tmp_path / "two.xml"
    assert main(["replay", evtx, "--rules", rules, "--min-level", "high", "-f", "xml",
                 "-o", str(one), "-q", "--keep-duplicates"]) == 0
    err = capsys.readouterr().err
    assert "alerts held back by --min-level high: 267 " in err
    levels = sorted({e.data["RuleLevel"] for e in _alerts(one)})
    assert levels == ["critical", "high"] and len(_alerts(one)) == 8 + 147
    assert main(["replay", evtx, "--rules", rules, "--min-level", "high", "-f", "xml",
                 "-o", str(two), "-q", "--keep-duplicates", "--jobs", "2"]) == 0
    assert "alerts held back by --min-level high: 267 " in capsys.readouterr().err
    assert one.read_bytes() == two.read_bytes()
    tech = tmp_path / "t.jsonl"
    assert main(["replay", evtx, "--rules", rules, "--technique", "T1003", "-f", "jsonl",
                 "-o", str(tech), "-q"]) == 0
    capsys.readouterr()
    kept = _alerts(tech)
    assert len(kept) == 25
    assert all(any(t == "T1003" or t.startswith("T1003.") for t in e.data["Techniques"]
                   .split(",")) for e in kept)


@pytest.mark.parametrize("fmt", ["xml", "jsonl"])
def test_alerts_read_back_round_trip(corpus, tmp_path, capsys, fmt):
    """replay --rules -> A; replay A -> A byte for byte in every format; the alerts are
    SysmonX events (not "other records"); a replay of A with the same --rules makes each
    alert once (no alerts about alerts, no duplicates)."""
    evtx, rules = f"{corpus}/evtx", f"{corpus}/{BUNDLE}"
    a = tmp_path / f"a.{fmt}"
    assert main(["replay", evtx, "--rules", rules, "-f", fmt, "-o", str(a), "-q"]) == 0
    capsys.readouterr()
    assert len(_alerts(a)) == 422
    for out_fmt in ("xml", "jsonl", "csv", "ecs"):
        direct = tmp_path / f"direct.{out_fmt}"
        back = tmp_path / f"back.{out_fmt}"
        assert main(["replay", evtx, "--rules", rules, "-f", out_fmt, "-o", str(direct),
                     "-q"]) == 0
        assert main(["replay", str(a), "-f", out_fmt, "-o", str(back)]) == 0
        err = capsys.readouterr().err
        assert "other records: 0 (dropped)" in err
        assert "SysmonX alerts read back (event 1000, SigmaAlert): 422 " in err
        assert back.read_bytes() == direct.read_bytes(), out_fmt
    # read back with --min-level: the alerts in the input are selected the same way
    crit = tmp_path / f"crit.{fmt}"
    assert main(["replay", str(a), "--min-level", "critical", "-f", fmt, "-o", str(crit),
                 "-q"]) == 0
    assert "alerts held back by --min-level critical: 414 (not written)" in \
        capsys.readouterr().err
    assert len(_alerts(crit)) == 8
    # again with the same rules: the read-back alerts are replaced, never re-matched
    again = tmp_path / f"again.{fmt}"
    assert main(["replay", str(a), "--rules", rules, "-f", fmt, "-o", str(again)]) == 0
    err = capsys.readouterr().err
    assert "422 replaced by this run's --rules" in err
    new = _alerts(again)
    assert len(new) == 422
    assert [(e.data["RuleId"], e.data["RecordIds"]) for e in new] == \
        [(e.data["RuleId"], e.data["RecordIds"]) for e in _alerts(a)]
    # the event store and query see them
    db = tmp_path / "a.db"
    assert main(["replay", str(a), "-o", f"sqlite:///{db}", "-q"]) == 0
    capsys.readouterr()
    assert main(["query", str(db), "select count(*) from events where event_id = 1000"]) == 0
    assert capsys.readouterr().out.split() == ["count(*)", "422"]
    # config stats counts them apart from the Sysmon events it decides
    assert main(["config", "stats", "default", str(a), "-f", "json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["read"]["sigma_alerts"] == 422


def test_alert_event_never_matched():
    """A SigmaAlert event read back goes through detection unmatched, even when a rule's log
    source is the channel it names (an edited input: the provider is what says it is an alert)."""
    from sysmonx.detection import DetectionStage, load_rules_text
    from sysmonx.detection.stages import SigmaMatchStage
    rule = """title: On the alert channel
id: 6f5b7c1e-0000-4000-8000-0000000000a3
level: high
logsource:
  product: windows
  service: security
detection:
  selection:
    RuleLevel: low
  condition: selection
"""
    det = DetectionStage(load_rules_text(rule))
    assert len(det.matcher.compiled) == 1
    ev = alert_event({"RuleId": "other", "RuleLevel": "low", "Tags": ""}, 1, channel="Security")
    assert det.matcher.match(ev) == []
    ev.provider = "Some-Other-Provider"  # the same record from another provider does match
    assert len(det.matcher.match(ev)) == 1
    ev.provider = "SysmonX"
    out: list = []
    stage = SigmaMatchStage(det)
    assert stage.process(ev, out.append) is True and out == [] and stage.replaced == 0
    # an alert of this run's rule about an event this run did not read: kept, never lost
    own = alert_event({"RuleId": "6f5b7c1e-0000-4000-8000-0000000000a3",
                       "RuleKind": "detection", "RecordIds": "1", "EventIds": "1000",
                       "Channels": "Security"}, 2, time_created="")
    assert stage.process(own, out.append) is True and stage.replaced == 0
    # once the event it names was matched by that rule here, the run makes it again: dropped
    ev.provider = "Some-Other-Provider"
    assert stage.process(ev, out.append) is False and len(out) == 1
    assert stage.process(own, out.append) is False and stage.replaced == 1
    # the same record numbers on another computer, or another rule's alert: kept
    other_host = alert_event(dict(own.data), 3, computer="h2", time_created="")
    assert stage.process(other_host, out.append) is True
    other_rule = alert_event({**own.data, "RuleId": "other"}, 4, time_created="")
    assert stage.process(other_rule, out.append) is True and stage.replaced == 1


def test_alerts_without_their_events_are_kept_with_the_same_rules(corpus, tmp_path, capsys):
    """An input of SigmaAlert events alone (e.g. kept from an earlier run), replayed with the
    --rules that made them: the run cannot make them again, so they are written, not lost."""
    evtx, rules = f"{corpus}/evtx", f"{corpus}/{BUNDLE}"
    a = tmp_path / "a.jsonl"
    assert main(["replay", evtx, "--rules", rules, "-f", "jsonl", "-o", str(a), "-q"]) == 0
    only = tmp_path / "only.jsonl"
    lines = [ln for ln in a.read_bytes().splitlines(keepends=True)
             if orjson.loads(ln)["EventID"] == 1000]
    assert len(lines) == 422
    only.write_bytes(b"".join(lines))
    capsys.readouterr()
    again = tmp_path / "again.jsonl"
    assert main(["replay", str(only), "--rules", rules, "-f", "jsonl", "-o", str(again)]) == 0
    err = capsys.readouterr().err
    assert "replaced by this run's --rules" not in err
    assert again.read_bytes() == only.read_bytes()


def test_gate_counts_alert_events():
    from sysmonx.stages.gate import SysmonGate
    gate = SysmonGate("drop")
    alert = alert_event({"RuleId": "x"}, None, computer="", time_created="")
    other = security_event(4624, {}, computer="", time_created="")
    not_alert = Event(999, {}, provider="SysmonX", provider_guid=None)
    assert gate.process(alert, lambda x: None) is True
    assert gate.process(other, lambda x: None) is False
    assert gate.process(not_alert, lambda x: None) is False
    assert (gate.sigma_alerts, gate.non_sysmon) == (1, 2)


def test_alerts_of_two_runs_are_not_duplicates(tmp_path, capsys):
    """Two runs' alerts share record ids (each run numbers from 1) and times (the same matched
    event): both are kept; one output read twice (XML and JSON lines) gives its alerts once."""
    one, two = tmp_path / "r1", tmp_path / "r2"
    one.mkdir()
    two.mkdir()
    (one / "base.yml").write_text(BASE)
    (two / "other.yml").write_text(BASE.replace("0000000000a1", "0000000000b1")
                                   .replace("(low base)", "(other set)"))
    folder = tmp_path / "in"
    folder.mkdir()
    for i, rules in enumerate((one, two)):
        assert main(["replay", "--sample", "--rules", str(rules), "-f", "jsonl",
                     "-o", str(folder / f"run{i}.jsonl"), "-q"]) == 0
    assert main(["replay", "--sample", "--rules", str(one), "-f", "xml",
                 "-o", str(folder / "run0.xml"), "-q"]) == 0
    capsys.readouterr()
    out = tmp_path / "out.jsonl"
    assert main(["replay", str(folder), "-f", "jsonl", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    got = sorted((e.data["RuleTitle"], e.record_id) for e in _alerts(out))
    assert got == [("Whoami Execution (low base)", 1), ("Whoami Execution (other set)", 1)]
    assert "SysmonX alerts read back (event 1000, SigmaAlert): 2 " in err


def test_live_run_holds_back_below_min_level(tmp_path, monkeypatch):
    """``run --min-level``: the live stage list has the same selection (SensorOptions.triage)."""
    from fake_live import install_file_backend, run_until

    from sysmonx.config import parse_config
    from sysmonx.detection import DetectionStage
    from sysmonx.detection.stages import AlertTriageStage
    from sysmonx.pipeline.live import Sensor, SensorOptions

    rules = tmp_path / "rules"
    rules.mkdir()
    for name, level, prefix, n in (("cron", "high", "/etc/cron.d/", 1),
                                   ("tmp", "low", "/tmp/", 2)):
        (rules / f"{name}.yml").write_text(
            f"title: {name} file (test)\nid: 6f5b7c1e-0000-4000-8000-0000000000c{n}"
            f"\nlevel: {level}\nlogsource:\n  product: linux\n  category: file_event\n"
            f"detection:\n  selection:\n    TargetFilename|startswith: '{prefix}'\n"
            "  condition: selection\n")
    stage = DetectionStage.from_paths([str(rules)])
    assert len(stage.matcher.compiled) == 2

    install_file_backend(monkeypatch, ("/tmp/other", "/etc/cron.d/evil"))
    cfg = parse_config('<Sysmon schemaversion="4.81"><EventFiltering><RuleGroup name="" '
                       'groupRelation="or"><FileCreate onmatch="exclude"/></RuleGroup>'
                       "</EventFiltering></Sysmon>")
    alerts: list = []
    sensor = Sensor(cfg, [], SensorOptions(triage=AlertTriage.from_options("high")),
                    detection=stage, on_alert=alerts.append)
    run_until(sensor, lambda: alerts)
    assert [a.title for a in alerts] == ["cron file (test)"]
    (tri,) = [s for s in sensor.stages if isinstance(s, AlertTriageStage)]
    assert tri.held_back == 1 and stage.stats.alerts == 2


_BASE_CMD = """title: any cmd
id: 6f3a1c2e-1111-4a4a-9d9d-000000000008
name: t_anyproc
status: experimental
logsource:
  product: windows
  category: process_creation
detection:
  selection:
    Image|endswith: '\\cmd.exe'
  condition: selection
level: low
"""


@pytest.mark.parametrize("ctype, generate, extra", [
    ("event_count", True, "  condition:\n    gte: 3\n"),
    ("value_count", True, "  condition:\n    field: CommandLine\n    gte: 2\n"),
    ("event_count", False, "  condition:\n    gte: 3\n"),
])
def test_correlation_alerts_read_back_with_the_same_rules(corpus, tmp_path, capsys, ctype,
                                                          generate, extra):
    """A replayed output with count correlations (EventIds: the distinct IDs, RecordIds: every
    record) replayed again with the same rules: each alert written once (new-user report:
    24 alerts became 47). A base rule that only feeds a correlation without ``generate``
    makes no alert of its own: its alerts read back (from a run where it stood alone) are
    kept, not counted as made again (the reviewer's case: they were dropped)."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "base.yml").write_text(_BASE_CMD)
    corr = (f"title: burst\nid: 6f3a1c2e-1111-4a4a-9d9d-000000000007\nstatus: experimental\n"
            f"correlation:\n  type: {ctype}\n  rules:\n    - t_anyproc\n"
            f"  group-by:\n    - Computer\n  timespan: 5s\n{extra}"
            + ("  generate: true\n" if generate else "") + "level: low\n")
    (rules / "corr.yml").write_text(corr)
    evtx = f"{corpus}/evtx"
    a = tmp_path / "a.jsonl"
    if generate:
        assert main(["replay", evtx, "--rules", str(rules), "-f", "jsonl", "-o", str(a),
                     "-q"]) == 0
    else:  # A from the base rule alone: its alerts are in the input
        alone = tmp_path / "alone"
        alone.mkdir()
        (alone / "base.yml").write_text(_BASE_CMD)
        assert main(["replay", evtx, "--rules", str(alone), "-f", "jsonl", "-o", str(a),
                     "-q"]) == 0
    first = _alerts(a)
    kinds = {e.data["RuleKind"] for e in first}
    assert kinds == ({"detection", ctype} if generate else {"detection"}), kinds
    again = tmp_path / "again.jsonl"
    capsys.readouterr()
    assert main(["replay", str(a), "--rules", str(rules), "-f", "jsonl", "-o", str(again)]) == 0
    new = _alerts(again)
    key = [(e.data["RuleId"], e.data["RecordIds"]) for e in new]
    assert len(key) == len(set(key)), "an alert written twice"
    if generate:
        assert sorted(key) == sorted((e.data["RuleId"], e.data["RecordIds"]) for e in first)
    else:  # the base alerts kept, and the correlation's own alerts added
        base = [(e.data["RuleId"], e.data["RecordIds"]) for e in first]
        assert [k for k in key if k[0] == base[0][0]] == base


def test_summary_names_the_options_given():
    """A new user gave --technique T1003 and read "held back by --tag attack.t1003"."""
    t = AlertTriage.from_options("high", ["T1003,t1059.001"], ["attack.credential_access"])
    assert t is not None
    assert t.describe() == ("--min-level high --technique T1003,T1059.001 "
                            "--tag attack.credential-access")
    only = AlertTriage.from_options(None, [], ["cve.2021-44228"])
    assert only is not None and only.describe() == "--tag cve.2021-44228"
