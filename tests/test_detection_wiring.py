"""Sigma rules wired into replay (--rules, --alerts) and the live sensor."""

import orjson
from builders import alert_events, whoami_rule
from fake_live import install_file_backend, run_until

from sysmonx.cli import main
from sysmonx.config import parse_config
from sysmonx.detection import DetectionStage
from sysmonx.pipeline.live import Sensor, SensorOptions

RULE = whoami_rule("6f5b7c1e-0000-4000-8000-000000000001", "Whoami Execution (test)", "medium",
                   status="test", tags=("attack.discovery", "attack.t1033"))

LINUX_RULE = """title: Cron file created (test)
id: 6f5b7c1e-0000-4000-8000-000000000002
status: test
level: high
logsource:
  product: linux
  category: file_event
detection:
  selection:
    TargetFilename|startswith: '/etc/cron.d/'
  condition: selection
"""


def test_replay_rules_alerts_in_stream_and_file(tmp_path, capsys):
    rule = tmp_path / "whoami.yml"
    rule.write_text(RULE)
    out, alerts = tmp_path / "out.jsonl", tmp_path / "alerts.jsonl"
    assert main(["replay", "--sample", "--rules", str(rule), "--format", "jsonl",
                 "-o", str(out)]) == 0
    hits = alert_events(out)
    assert len(hits) == 1 and hits[0].data["RuleTitle"] == "Whoami Execution (test)"
    err = capsys.readouterr().err
    assert "Sigma detections" in err and "Whoami Execution (test)" in err
    assert main(["replay", "--sample", "--rules", str(rule), "--alerts", str(alerts),
                 "--no-output", "-q"]) == 0
    lines = [orjson.loads(x) for x in alerts.read_bytes().splitlines()]
    assert [a["rule_id"] for a in lines] == ["6f5b7c1e-0000-4000-8000-000000000001"]
    assert lines[0]["record_ids"] == [1004] and lines[0]["level"] == "medium"


def test_missing_rules_path_is_fatal(tmp_path, capsys):
    assert main(["replay", "--sample", "--rules", str(tmp_path / "nope"), "-q"]) == 1
    assert "no such file" in capsys.readouterr().err


def test_sensor_runs_rules_on_written_events(tmp_path, monkeypatch):
    rule = tmp_path / "cron.yml"
    rule.write_text(LINUX_RULE)
    stage = DetectionStage.from_paths([str(rule)])

    install_file_backend(monkeypatch, ("/etc/cron.d/evil", "/tmp/other"))
    cfg = parse_config('<Sysmon schemaversion="4.81"><EventFiltering><RuleGroup name="" '
                       'groupRelation="or"><FileCreate onmatch="exclude"/></RuleGroup>'
                       "</EventFiltering></Sysmon>")
    alerts = []
    sensor = Sensor(cfg, [], SensorOptions(), detection=stage, on_alert=alerts.append)
    run_until(sensor, lambda: alerts)
    assert [a.title for a in alerts] == ["Cron file created (test)"]
