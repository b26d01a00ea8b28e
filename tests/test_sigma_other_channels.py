"""Sigma rules written for other channels (``service: security``, ``category: ps_script`` ...)
see their records with the default ``--non-sysmon drop``: the records meet the rules and are not
written, in one process, with ``--jobs`` and in a live run (new-user report, session 10,
finding 2: such rules loaded and never fired unless ``--non-sysmon pass``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Optional

from builders import WHOAMI, security_event, sysmon_event, whoami_rule

from sysmonx.cli import main
from sysmonx.event import Event
from sysmonx.filtering import EngineOptions
from sysmonx.interfaces import Sink, Source
from sysmonx.pipeline.live import live_stages
from sysmonx.pipeline.loop import Pipeline
from sysmonx.stages.gate import SigmaOnlyDrop, SysmonGate, sigma_channels, sigma_only_channels

FOLDER = "evtx/sbousseaden__EVTX-ATTACK-SAMPLES/Credential Access"
# 15 records: 6 Sysmon (1:3, 10:3), 9 Security, one of them a 4624 of LogonType 9
MALSECLOGON = f"{FOLDER}/tutto_malseclogon.evtx"

LOGON9 = """title: Logon type 9 (NewCredentials)
id: 0b1c2d3e-1111-4222-8333-944455556666
logsource:
  product: windows
  service: security
detection:
  sel:
    EventID: 4624
    LogonType: 9
  condition: sel
level: high
"""


def _rule(tmp_path: Path) -> str:
    path = tmp_path / "logon9.yml"
    path.write_text(LOGON9)
    return str(path)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_security_rule_fires_with_the_default_non_sysmon_drop(corpus, tmp_path, capsys):
    out, alerts = tmp_path / "out.jsonl", tmp_path / "alerts.jsonl"
    rc = main(["replay", str(corpus / MALSECLOGON), "--rules", _rule(tmp_path), "-f", "jsonl",
               "-o", str(out), "--alerts", str(alerts), "--no-progress", "--no-rule-cache"])
    assert rc == 0
    got = _lines(alerts)
    assert [a["title"] for a in got] == ["Logon type 9 (NewCredentials)"]
    assert (got[0]["event"]["EventID"], got[0]["event"]["EventRecordID"]) == (4624, 329918)
    assert got[0]["event"]["Channel"] == "Security"
    assert got[0]["event"]["EventData"]["TargetOutboundUserName"] == "MalseclogonUser"
    # the Security records are not written: the output holds the 6 Sysmon events only
    events = _lines(out)
    assert len(events) == 6
    assert {e["System"]["Provider"] for e in events} == {"Microsoft-Windows-Sysmon"}
    err = capsys.readouterr().err
    assert "other records: 9 (dropped; 9 of them checked by Sigma rules first)" in err
    assert "events checked 15; alerts 1 (high 1)" in err


def test_alert_takes_the_place_of_the_unwritten_record(corpus, tmp_path):
    """As event 1000 in the stream, the alert comes where the record would have been (after
    the Sysmon events before it), the same as with --non-sysmon pass minus the records."""
    rule = _rule(tmp_path)
    drop, keep = tmp_path / "drop.jsonl", tmp_path / "pass.jsonl"
    for out, extra in ((drop, []), (keep, ["--non-sysmon", "pass"])):
        assert main(["replay", str(corpus / MALSECLOGON), "--rules", rule, "-f", "jsonl",
                     "-o", str(out), "-q", *extra]) == 0
    sysmon_or_alert = [e for e in _lines(keep)
                       if e["System"]["Provider"] != "Microsoft-Windows-Security-Auditing"]
    assert _lines(drop) == sysmon_or_alert
    assert [e["EventID"] for e in _lines(drop)].count(1000) == 1
    # the record is not in the stream: the alert itself says which one it is (computer,
    # channel, record number), as its JSON line's "event" does
    (alert,) = [e for e in _lines(drop) if e["EventID"] == 1000]
    assert alert["System"]["Computer"] == "MSEDGEWIN10"
    assert (alert["Channels"], alert["RecordIds"], alert["EventIds"]) == \
        ("Security", "329918", "4624")


def test_jobs_gives_what_one_process_gives(corpus, tmp_path, capsys):
    rule = _rule(tmp_path)
    outs = []
    for jobs in ("1", "2"):
        out, alerts = tmp_path / f"out{jobs}.jsonl", tmp_path / f"alerts{jobs}.jsonl"
        assert main(["replay", str(corpus / FOLDER), "--rules", rule, "-f", "jsonl",
                     "-o", str(out), "--alerts", str(alerts), "--jobs", jobs,
                     "--keep-duplicates", "-q"]) == 0
        outs.append((out.read_bytes(), alerts.read_bytes()))
        err = capsys.readouterr().err
        assert "events checked 75; alerts 1 (high 1)" in err
    assert outs[0] == outs[1]
    assert len(outs[1][1].splitlines()) == 1
    assert b"Security-Auditing" not in outs[1][0]


def test_sigma_channels_come_from_the_loaded_rules(tmp_path):
    from sysmonx.detection import DetectionStage
    (tmp_path / "ps.yml").write_text(
        "title: ps\nlogsource: {product: windows, category: ps_script}\n"
        "detection: {sel: {ScriptBlockText|contains: Invoke-Mimikatz}, condition: sel}\n")
    (tmp_path / "proc.yml").write_text(
        "title: proc\nlogsource: {product: windows, category: process_creation}\n"
        "detection: {sel: {Image|endswith: \\\\x.exe}, condition: sel}\n")
    det = DetectionStage.from_paths([str(tmp_path)])
    assert sigma_channels(det) == {"microsoft-windows-powershell/operational",
                                   "powershellcore/operational"}
    assert sigma_channels(None) == frozenset()
    # --non-sysmon pass writes them anyway: no channel is held back
    assert SysmonGate("pass", {"security"}).sigma_channels == frozenset()
    # the one rule every path uses (gate, sigma-only-drop, --jobs and --dask counters)
    ps = {"microsoft-windows-powershell/operational", "powershellcore/operational"}
    assert sigma_only_channels("drop", det) == ps
    assert sigma_only_channels("drop", det, {"security"}) == ps | {"security"}
    assert sigma_only_channels("pass", det, {"security"}) == frozenset()
    assert sigma_only_channels("drop", None) == frozenset()
    # sigma-only-drop comes right after sigma-correlate (which writes the event on), in
    # replay and live alike
    from sysmonx.pipeline.replay import ReplayOptions, replay_stages
    for non_sysmon, want in (("drop", True), ("pass", False)):
        names = [s.name for s in replay_stages(ReplayOptions(non_sysmon=non_sysmon),
                                               detection=det)]
        assert ("sigma-only-drop" in names) is want
        if want:
            assert names[names.index("sigma-correlate") + 1] == "sigma-only-drop"
    names = [s.name for s in live_stages(None, EngineOptions(), detection=det)]
    assert names[names.index("sigma-correlate") + 1] == "sigma-only-drop"


class _Events(Source):
    name = "test-events"

    def __init__(self, events: list[Event]) -> None:
        self._events = events

    def events(self) -> Iterator[Optional[Event]]:
        yield from self._events


class _Collect(Sink):
    name = "test-collect"
    accepts = frozenset({"event", "alert"})

    def __init__(self) -> None:
        self.items: list[Any] = []

    def write(self, item: Any) -> None:
        self.items.append(item)


def test_live_stages_check_and_drop_the_records_the_rules_read(tmp_path):
    from sysmonx.detection import DetectionStage
    det = DetectionStage.from_paths([_rule(tmp_path)])
    stages = live_stages(None, EngineOptions(), detection=det, alerts_to_stream=False)
    assert any(isinstance(s, SigmaOnlyDrop) for s in stages)
    at = dict(computer="", time_created="2024-05-01T10:00:00.0000000Z")
    logons = [security_event(4624, {"LogonType": "9"}, 7, **at),
              security_event(4624, {"LogonType": "3"}, 8, **at),
              security_event(4688, {}, 9, channel="System", **at)]
    sink = _Collect()
    Pipeline(stages, [sink]).run(_Events(logons))
    assert [type(i).__name__ for i in sink.items] == ["Alert"]
    assert sink.items[0].title == "Logon type 9 (NewCredentials)"
    assert det.stats.events == 2  # the System record is not read by any rule: never checked


CROSS = """title: logon (Security)
id: 0b1c2d3e-1111-4222-8333-944455550001
name: sec_logon
logsource:
  product: windows
  service: security
detection:
  sel:
    EventID: 4624
  condition: sel
level: low
---
""" + whoami_rule("0b1c2d3e-1111-4222-8333-944455550002", "whoami (Sysmon)", "low",
                   name="sysmon_whoami") + """---
title: whoami in a new logon session
id: 0b1c2d3e-1111-4222-8333-944455550003
correlation:
  type: temporal_ordered
  rules:
    - sec_logon
    - sysmon_whoami
  aliases:
    KEY:
      sec_logon: FIELD_SEC
      sysmon_whoami: FIELD_SYSMON
  group-by:
    - KEY
  timespan: 1h
level: high
"""


def _cross_alerts(sec_field: str, sysmon_field: str) -> list:
    """docs/DETECTION.md "Security and Sysmon together": a Security 4624 and a Sysmon 1 of
    the same logon session and process (hex in Security, ProcessId decimal in Sysmon)."""
    from sysmonx.detection import DetectionStage, load_rules_text
    text = CROSS.replace("KEY", "key").replace("FIELD_SEC", sec_field) \
        .replace("FIELD_SYSMON", sysmon_field)
    det = DetectionStage(load_rules_text(text))
    logon = security_event(4624, {"TargetLogonId": "0x678fe", "ProcessId": "0xa2c"}, 5,
                           time_created="2024-05-01T10:00:00.0000000Z")
    proc = sysmon_event(1, {"Image": WHOAMI, "ProcessId": "2604", "LogonId": "0x678fe"}, 5,
                        time_created="2024-05-01T10:00:01.0000000Z")
    out = det.process(logon) + det.process(proc) + det.finish()
    return [a for a in out if a.kind != "detection"]


def test_security_and_sysmon_correlate_on_logon_id_not_on_process_id():
    # LogonId: both write it in hex ("0x678fe"): grouped, the correlation fires
    (alert,) = _cross_alerts("TargetLogonId", "LogonId")
    assert alert.group == {"key": "0x678fe"}
    assert alert.to_event(1).data["Channels"] == "Security,Microsoft-Windows-Sysmon/Operational"
    # process ids: Security writes 0xa2c, Sysmon 2604 for the same process: never one group
    assert _cross_alerts("ProcessId", "ProcessId") == []
