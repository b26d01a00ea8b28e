"""Alerts name the file their matched event came from and carry the whole matched event.

A new user replaying a folder could not tell which file an alert's record came from
(EventRecordIDs restart in every file); Zircolite's output holds the matched event and Hayabusa
names the EVTX file. These tests fail on the code before ``source_file`` / ``event`` existed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from sysmonx.detection import DetectionStage, load_rules_text
from sysmonx.detection.alerts import MAX_EVENT_FIELDS
from sysmonx.event import Event
from sysmonx.sinks.xml_windows import render_windows_xml

ROOT = Path(__file__).resolve().parents[1]
RULE = """title: cmd
id: 11111111-1111-1111-1111-111111111111
status: test
level: high
logsource:
    product: windows
    category: process_creation
detection:
    sel:
        Image|endswith: '\\cmd.exe'
    condition: sel
"""


def _event(origin=None, **data) -> Event:
    return Event(1, {"RuleName": "-", **data}, record_id=42, computer="host1",
                 time_created="2024-05-01T10:00:00.000000000Z", origin=origin)


def test_alert_names_the_source_file_and_carries_the_matched_event():
    st = DetectionStage(load_rules_text(RULE))
    (alert,) = st.process(_event(("/logs/a b/x.evtx", 4096), Image="c:\\cmd.exe",
                                 CommandLine="cmd /c x", CurrentDirectory="c:\\"))
    d = json.loads(alert.to_json())
    assert d["source_file"] == "/logs/a b/x.evtx"
    assert d["event"] == {"EventID": 1, "EventRecordID": 42,
                          "TimeCreated": "2024-05-01T10:00:00.0000000Z",
                          "Provider": "Microsoft-Windows-Sysmon",
                          "Channel": "Microsoft-Windows-Sysmon/Operational",
                          "Computer": "host1", "EventData": {
        "RuleName": "-", "Image": "c:\\cmd.exe", "CommandLine": "cmd /c x",
        "CurrentDirectory": "c:\\"}}
    # the keys before the new ones are unchanged, in their order
    assert list(d)[-3:] == ["fields", "source_file", "event"]
    assert alert.to_dict()["source_file"] == "/logs/a b/x.evtx"
    e = alert.to_event(record_id=1)
    keys = list(e.data)
    # a detection: Channels, then no Rules ... Group
    assert keys[keys.index("EventIds") + 1:keys.index("EventIds") + 3] == ["Channels",
                                                                          "SourceFile"]
    assert e.data["SourceFile"] == "/logs/a b/x.evtx"
    assert "<Data Name='SourceFile'>/logs/a b/x.evtx</Data>" in render_windows_xml(e)


def test_a_live_event_has_no_source_file():
    st = DetectionStage(load_rules_text(RULE))
    (alert,) = st.process(_event(None, Image="c:\\cmd.exe"))
    d = json.loads(alert.to_json())
    assert d["source_file"] is None and d["event"]["EventData"]["Image"] == "c:\\cmd.exe"
    assert "SourceFile" not in alert.to_event().data


def test_the_matched_event_is_bounded_and_cannot_forge_fields():
    st = DetectionStage(load_rules_text(RULE))
    forged = 'x","source_file":"/forged","rule_id":"0\n{"type":"sigma_alert"}'
    many = {f"F{i}": "v" for i in range(MAX_EVENT_FIELDS + 50)}
    (alert,) = st.process(_event(("/l/\n\"q\".evtx", 1), Image="c:\\cmd.exe",
                                 CommandLine=forged + "y" * 10000, **many))
    line = alert.to_json()
    assert line.count(b"\n") == 1
    d = json.loads(line)
    assert d["source_file"] == "/l/\n\"q\".evtx" and d["rule_id"].startswith("1111")
    data = d["event"]["EventData"]
    assert len(data) == MAX_EVENT_FIELDS
    assert data["CommandLine"] == (forged + "y" * 10000)[:4096] + "…"
    assert "\n" not in render_windows_xml(alert.to_event())


def _replay(args, tmp_path) -> list:
    out = tmp_path / "alerts.jsonl"
    r = subprocess.run([sys.executable, "-m", "sysmonx.cli", "replay", *args, "--no-output",
                        "--alerts", str(out), "-q", "--rule-cache", str(tmp_path / "cache")],
                       capture_output=True, cwd=ROOT, timeout=300,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in out.read_bytes().splitlines()]


def test_replay_of_a_folder_names_each_alerts_file_and_jobs_agree(corpus, tmp_path):
    """Two copies of one EVTX in a folder: the same record ids, told apart by source_file,
    in one process and with --jobs 2."""
    src = next((corpus / "evtx").rglob("*apt10_jjs_sideloading*.evtx"))
    logs = tmp_path / "logs"
    (logs / "a").mkdir(parents=True)
    (logs / "b").mkdir()
    shutil.copy(src, logs / "a" / "x.evtx")
    shutil.copy(src, logs / "b" / "x.evtx")
    rules = tmp_path / "r.yml"
    rules.write_text(RULE.replace("'\\cmd.exe'", "'.exe'"))
    one = _replay([str(logs), "--rules", str(rules), "--keep-duplicates"], tmp_path)
    two = _replay([str(logs), "--rules", str(rules), "--keep-duplicates", "--jobs", "2"],
                  tmp_path)
    assert one == two and len(one) >= 2
    files = {a["source_file"] for a in one}
    assert files == {str(logs / "a" / "x.evtx"), str(logs / "b" / "x.evtx")}
    by_file = {f: [a["record_ids"] for a in one if a["source_file"] == f] for f in files}
    assert by_file[str(logs / "a" / "x.evtx")] == by_file[str(logs / "b" / "x.evtx")]
    for a in one:
        assert a["event"]["EventRecordID"] == a["record_ids"][0]
        assert a["event"]["EventData"]["Image"] == a["fields"]["Image"]


def test_the_schema_describes_event_1000_with_the_fields_alerts_write():
    """Event 1000's fixed EventData fields, as the schema catalogue lists them (``sysmonx -s``),
    are the ones Alert.to_event writes, in its order."""
    from sysmonx.detection.alerts import _FIXED
    from sysmonx.schema.catalogue import EVENTS
    (d,) = [e for e in EVENTS if e.event_id == 1000]
    assert d.extension and d.tag is None and "SourceFile" in d.description
    assert tuple(f.name for f in d.fields) == _FIXED
    st = DetectionStage(load_rules_text(RULE))
    (alert,) = st.process(_event(("/l/x.evtx", 1), Image="c:\\cmd.exe"))
    # a detection leaves out the correlation's fields (WindowStart, WindowEnd, Rules, Value,
    # Group); the rest in the catalogue's order
    fixed = tuple(n for n in _FIXED if n not in {"WindowStart", "WindowEnd", "Rules", "Value",
                                                 "Group"})
    assert tuple(alert.to_event().data)[:len(fixed)] == fixed


def test_ecs_puts_the_alerts_source_file_in_log_file_path():
    from sysmonx.sinks.ecs import event_to_ecs
    st = DetectionStage(load_rules_text(RULE))
    (alert,) = st.process(_event(("/logs/a/x.evtx", 1), Image="c:\\cmd.exe"))
    doc = event_to_ecs(alert.to_event(record_id=1))
    assert doc["log"]["file"]["path"] == "/logs/a/x.evtx"
    assert doc["rule"]["id"] == "11111111-1111-1111-1111-111111111111"
    (live,) = st.process(_event(None, Image="c:\\cmd.exe"))
    assert "file" not in event_to_ecs(live.to_event(record_id=2)).get("log", {})


def test_replay_ends_with_the_sigma_line_saying_how_many_alerts_and_where(corpus, tmp_path):
    """A new user found that a replay never said how many alerts it wrote or where (the live
    sensor did): replay now ends with the same Sigma line, before the detections table."""
    src = next((corpus / "evtx").rglob("*apt10_jjs_sideloading*.evtx"))
    rules = tmp_path / "r.yml"
    rules.write_text(RULE.replace("'\\cmd.exe'", "'.exe'"))
    alerts = tmp_path / "a.jsonl"
    base = [sys.executable, "-m", "sysmonx.cli", "replay", str(src), "--rules", str(rules),
            "--no-progress", "--rule-cache", str(tmp_path / "cache")]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "200"}
    r = subprocess.run(base + ["--no-output", "--alerts", str(alerts)], capture_output=True,
                       cwd=ROOT, timeout=300, env=env, text=True)
    assert r.returncode == 0, r.stderr
    n = len(alerts.read_bytes().splitlines())
    assert n >= 1
    line = next(ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("Sigma: "))
    assert line.startswith("Sigma: 1 rule and 0 correlations loaded, 0 rejected, of 1 read; events "
                           "checked ")
    assert f"; alerts {n:,} (" in line and line.endswith(f"written to {alerts}")
    r = subprocess.run(base + ["-o", str(tmp_path / "ev.jsonl")], capture_output=True, cwd=ROOT,
                       timeout=300, env=env, text=True)
    assert r.returncode == 0, r.stderr
    assert any(ln.startswith("Sigma: ") and ln.endswith("written as event 1000 in the event "
               "stream") for ln in (r.stdout + r.stderr).splitlines())
    r = subprocess.run(base + ["--no-output"], capture_output=True, cwd=ROOT, timeout=300,
                       env=env, text=True)
    assert any(ln.startswith("Sigma: ") and ln.endswith("written nowhere (no output)")
               for ln in (r.stdout + r.stderr).splitlines())
