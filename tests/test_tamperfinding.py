"""TamperFinding (201), Heartbeat (202) and eBPF Program Loaded (100) as schema data: the helper
that builds a finding, config filtering by tag, Sigma log sources, ``-s``, every output format."""

from __future__ import annotations

import io

import orjson
import pytest
from lxml import etree

from sysmonx.cli import main
from sysmonx.config import parse_config
from sysmonx.detection.logsource import resolve_logsource
from sysmonx.filtering import FilterEngine
from sysmonx.schema import CURRENT, get_schema
from sysmonx.schema.printer import render_config_help, render_schema_output
from sysmonx.sinks import writer_class
from sysmonx.sinks.jsonl import event_to_json
from sysmonx.sources import open_source
from sysmonx.stages.tamperfinding import (TECHNIQUES, ZERO_GUID, tamper_finding,
                                          utc_time_field)


def test_catalogue_entries():
    tf, hb, bpf = CURRENT.events[201], CURRENT.events[202], CURRENT.events[100]
    assert tf.field_names == ("RuleName", "UtcTime", "Technique", "Details", "ProcessGuid",
                              "ProcessId", "Image", "Source")
    assert (tf.tag, tf.level, tf.level_value, tf.default) == ("TamperFinding", "Warning", 3,
                                                               "include")
    assert hb.field_names == ("RuleName", "UtcTime", "Sequence", "SecondsSincePrevious",
                              "EventsWritten", "EventsLost", "Backend", "ConfigurationFileHash")
    assert bpf.field_names == ("RuleName", "UtcTime", "ProcessGuid", "ProcessId", "Image", "User",
                               "BpfCommand", "BpfProgramType", "BpfProgramId", "BpfProgramName")
    assert all(e.extension for e in (tf, hb, bpf))
    # present in every schema version: a 4.22 config may filter them too
    assert {100, 201, 202} <= set(get_schema("4.22").events)
    assert get_schema("4.22").tags["TamperFinding"] == (201,)


def test_helper_fields_and_envelope():
    e = tamper_finding("sensor_signal", "SIGSTOP\nfrom pid 77", when=1_700_000_000_123_456_789,
                       process_id=77, image="/usr/bin/kill", platform="linux")
    assert e.event_id == 201 and e.level == 3 and e.version == 1 and e.task == 201
    assert e.provider == "Linux-Sysmon" and e.channel == "Linux-Sysmon/Operational"
    assert e.time_created == "2023-11-14T22:13:20.123456789Z"
    assert e.data == {"RuleName": "-", "UtcTime": "2023-11-14 22:13:20.123",
                      "Technique": "sensor_signal", "Details": "SIGSTOP from pid 77",
                      "ProcessGuid": ZERO_GUID, "ProcessId": "77", "Image": "/usr/bin/kill",
                      "Source": "live"}
    w = tamper_finding("log_cleared", "Security log cleared by CORP\\admin",
                       when="2019-03-19T23:44:01.123Z", source="Security.evtx",
                       platform="windows", computer="WS1", record_id=9)
    assert w.provider == "Microsoft-Windows-Sysmon" and w.computer == "WS1" and w.record_id == 9
    assert w.data["UtcTime"] == "2019-03-19 23:44:01.123" and w.data["ProcessId"] == "0"
    assert w.data["Image"] == "-" and w.user_id is None


@pytest.mark.parametrize("name", ["Sensor", "a", "x-y", "", "name with space"])
def test_helper_rejects_bad_technique_names(name):
    with pytest.raises(ValueError, match="snake_case"):
        tamper_finding(name, "x")


def test_helper_rejects_unknown_platform_and_time():
    with pytest.raises(ValueError, match="platform"):
        tamper_finding("clock_changed", "x", platform="macos")
    with pytest.raises(ValueError):
        tamper_finding("clock_changed", "x", when="yesterday")


def test_every_listed_technique_is_a_valid_name():
    for name, (where, attack, what) in TECHNIQUES.items():
        assert tamper_finding(name, what).data["Technique"] == name
        assert where in ("live", "log") and attack.startswith("T1")
    assert utc_time_field(0) == "1970-01-01 00:00:00.000"


def test_config_filters_tamper_findings_by_tag():
    cfg = parse_config(b"""<Sysmon schemaversion="4.50"><EventFiltering>
      <RuleGroup groupRelation="or">
        <TamperFinding onmatch="exclude">
          <Technique condition="is">clock_changed</Technique>
        </TamperFinding>
        <TamperFinding onmatch="include">
          <Rule name="blinding" groupRelation="or">
            <Technique condition="begin with">bpf_</Technique>
            <Technique condition="is">sensor_signal</Technique>
          </Rule>
        </TamperFinding>
      </RuleGroup></EventFiltering></Sysmon>""")
    eng = FilterEngine(cfg)
    keep, name = eng.decide(201, tamper_finding("bpf_map_tamper", "x").data)
    assert keep and name == "blinding"
    assert eng.decide(201, tamper_finding("clock_changed", "x").data)[0] is False
    assert eng.decide(201, tamper_finding("config_modified", "x").data)[0] is False
    # no rule set for TamperFinding/Heartbeat: their default is include (never silently lost)
    plain = FilterEngine(parse_config(b'<Sysmon schemaversion="4.90"><EventFiltering>'
                                      b'</EventFiltering></Sysmon>'))
    assert plain.decide(201, tamper_finding("config_modified", "x").data)[0] is True
    assert plain.decide(202, {"Sequence": "1"})[0] is True


def test_config_weakened_is_never_filtered_other_findings_are():
    """A reload that excludes TamperFinding would hide the finding about itself: the filter
    stage keeps ``config_weakened`` (RuleName ``-``) whatever the config decides."""
    from sysmonx.filtering.stage import FilterStage
    cfg = parse_config(b'<Sysmon schemaversion="4.90"><EventFiltering><RuleGroup '
                       b'groupRelation="or"><TamperFinding onmatch="exclude"><Technique '
                       b'name="noise" condition="begin with">c</Technique></TamperFinding>'
                       b'</RuleGroup></EventFiltering></Sysmon>')
    stage = FilterStage(cfg)
    kept = tamper_finding("config_weakened", "x", platform="linux")
    assert stage.process(kept, lambda item: None) is True
    assert kept.data["RuleName"] == "-"
    assert stage.process(tamper_finding("clock_changed", "x", platform="linux"),
                         lambda item: None) is False
    assert stage.included[201] == 1 and stage.excluded[201] == 1
    none = FilterStage(parse_config(b'<Sysmon schemaversion="4.90"><EventFiltering>'
                                    b'<TamperFinding onmatch="include"/></EventFiltering>'
                                    b'</Sysmon>'))
    assert none.process(tamper_finding("config_weakened", "x", platform="linux"),
                        lambda item: None) is True


def test_the_schema_description_of_201_names_every_technique():
    from sysmonx.schema.catalogue import EVENTS
    (text,) = [e.description for e in EVENTS if e.event_id == 201]
    assert [t for t in TECHNIQUES if f" {t}" not in text] == []


def test_sigma_logsources():
    assert resolve_logsource("linux", "sysmonx_tamper", None).groups == (("lnx", 201),)
    assert resolve_logsource("windows", "sysmonx_tamper", None).groups == (("win", 201),)
    assert resolve_logsource("linux", "sysmonx_heartbeat", None).groups == (("lnx", 202),)
    assert resolve_logsource("linux", "bpf_event", None).groups == (("lnx", 100),)
    ids = {g[1] for g in resolve_logsource("linux", None, "sysmon").groups}
    assert {100, 201, 202} <= ids


def test_schema_output_lists_the_events_after_sysmons():
    text, code = render_schema_output(None)
    assert code == 0
    root = etree.fromstring(text.encode())
    values = [int(e.get("value"), 0) for e in root.iter("event")]
    # every block, in EventID order (new-user report s14 #9: 200 came after 220)
    ext = sorted(i for i, e in CURRENT.events.items() if e.extension)
    assert values[-len(ext):] == ext and values[0] == 255
    assert ext[:4] == [100, 200, 201, 202]
    ev = [e for e in root.iter("event") if e.get("value") == "201"][0]
    assert ev.get("rulename") == "TamperFinding" and ev.get("level") == "Warning"
    assert [d.get("name") for d in ev] == list(CURRENT.events[201].field_names)
    # Sysmon's manifests stay byte-exact without them
    plain, _ = render_schema_output(None, extensions=False)
    assert "TamperFinding" not in plain
    assert "201    TamperFinding" in render_config_help(CURRENT)


@pytest.mark.parametrize("fmt", ["xml", "linux-xml", "jsonl", "csv"])
def test_every_output_format_writes_a_finding(fmt, tmp_path):
    e = tamper_finding("sensor_ptrace", "TracerPid 4242 (/usr/bin/gdb)", process_id=4242,
                       image="/usr/bin/gdb", when=1_700_000_000_000_000_000, record_id=5)
    buf = io.BytesIO()
    w = writer_class(fmt)(buf, close_stream=False)
    w.write(e)
    w.close()
    out = buf.getvalue().decode()
    assert "sensor_ptrace" in out and "TracerPid 4242" in out and "/usr/bin/gdb" in out


def test_replay_filters_and_detects_findings(tmp_path, capsys):
    """A recorded finding goes through replay: the config's TamperFinding rule names it, a Sigma
    rule on the documented log source fires on it."""
    log = tmp_path / "findings.jsonl"
    events = [tamper_finding("bpf_map_tamper", "map 12 updated by pid 9", platform="linux",
                             process_id=9, image="/usr/sbin/bpftool",
                             when=1_700_000_000_000_000_000 + i, record_id=i + 1)
              for i in range(2)]
    events.append(tamper_finding("clock_changed", "wall clock +3600 s", platform="linux",
                                 when=1_700_000_001_000_000_000, record_id=3))
    log.write_bytes(b"".join(event_to_json(e) + b"\n" for e in events))
    cfg = tmp_path / "c.xml"
    cfg.write_text("""<Sysmon schemaversion="4.90"><EventFiltering><RuleGroup groupRelation="or">
      <TamperFinding onmatch="include"><Technique name="bpf" condition="begin with">bpf_</Technique>
      </TamperFinding></RuleGroup></EventFiltering></Sysmon>""")
    rule = tmp_path / "r.yml"
    rule.write_text("""title: Sensor BPF map tampered (test)
id: 0b4e5a7c-0000-4000-8000-000000000201
status: test
level: high
logsource:
  product: linux
  category: sysmonx_tamper
detection:
  selection:
    Technique: bpf_map_tamper
  condition: selection
""")
    out = tmp_path / "out.jsonl"
    assert main(["replay", str(log), "-c", str(cfg), "--rules", str(rule), "--format", "jsonl",
                 "-o", str(out), "-q"]) == 0
    got = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    findings = [g for g in got if g["EventID"] == 201]
    assert [f["Technique"] for f in findings] == ["bpf_map_tamper", "bpf_map_tamper"]
    assert {f["RuleName"] for f in findings} == {"bpf"}
    alerts = [g for g in got if g["EventID"] == 1000]
    assert len(alerts) == 2 and alerts[0]["RuleTitle"] == "Sensor BPF map tampered (test)"
    assert list(open_source(str(out), lambda e: None))


def _heartbeat(seq: int, when_s: int, since: int, computer: str = "host1"):
    from sysmonx.event import Event
    from sysmonx.stages.tamperfinding import utc_time_field
    ns = when_s * 1_000_000_000
    data = {"RuleName": "-", "UtcTime": utc_time_field(ns), "Sequence": str(seq),
            "SecondsSincePrevious": str(since), "EventsWritten": "10", "EventsLost": "0",
            "Backend": "ebpf", "ConfigurationFileHash": "SHA256=ab"}
    return Event(202, data, provider="Linux-Sysmon", provider_guid=None, version=1, level=4,
                 task=202, time_created=utc_time_field(ns).replace(" ", "T") + "000000Z",
                 record_id=seq, computer=computer, channel="Linux-Sysmon/Operational")


def test_shipped_sigma_rules_see_heartbeat_silences(tmp_path):
    """The documented rules (data/sigma/sysmonx_heartbeat_silence.yml): heartbeats every 60 s
    with two silences of 10 minutes on host1 (kill -9 and a late restart; SIGSTOP): one
    detection per silence, and the correlation of repeated silences, for host1 only."""
    from importlib.resources import files
    rule = files("sysmonx") / "data" / "sigma" / "sysmonx_heartbeat_silence.yml"
    t0 = 1_700_000_000
    evs, t, seq, since = [], t0, 0, 0
    for _ in range(3):
        for _ in range(10):
            seq += 1
            evs.append(_heartbeat(seq, t, since))
            t, since = t + 60, 60
        t, since = t + 540, 600  # 10 minutes since the last heartbeat
    evs += [_heartbeat(i + 1, t0 + 60 * i, 60 if i else 0, "host2") for i in range(40)]
    evs.sort(key=lambda e: e.time_created)
    log = tmp_path / "hb.jsonl"
    log.write_bytes(b"".join(event_to_json(e) + b"\n" for e in evs))
    out = tmp_path / "out.jsonl"
    assert main(["replay", str(log), "--rules", str(rule), "--format", "jsonl", "-o", str(out),
                 "-q"]) == 0
    alerts = [orjson.loads(x) for x in out.read_bytes().splitlines() if b'"EventID":1000' in x]
    det = [a for a in alerts if a["RuleKind"] == "detection"]
    cor = [a for a in alerts if a["RuleKind"] == "event_count"]
    assert len(det) == 2 and {a["System"]["Computer"] for a in det} == {"host1"}
    assert all(a["SecondsSincePrevious"] == "600" for a in det)
    assert len(cor) == 1 and cor[0]["Group"] == "Computer=host1"


def test_shipped_sigma_rule_sees_a_weakening_reload(tmp_path):
    """data/sigma/sysmonx_config_weakened.yml: one alert for the config_weakened finding,
    none for the other findings around it."""
    from importlib.resources import files
    rule = files("sysmonx") / "data" / "sigma" / "sysmonx_config_weakened.yml"
    evs = [tamper_finding(t, "x", when=1_700_000_000_000_000_000 + i * 1_000_000_000,
                          platform="linux", process_id=4242, image="/usr/bin/bash")
           for i, t in enumerate(["config_modified", "config_weakened", "sensor_signal"])]
    log = tmp_path / "f.jsonl"
    log.write_bytes(b"".join(event_to_json(e) + b"\n" for e in evs))
    out = tmp_path / "out.jsonl"
    assert main(["replay", str(log), "--rules", str(rule), "--format", "jsonl", "-o", str(out),
                 "-q"]) == 0
    alerts = [orjson.loads(x) for x in out.read_bytes().splitlines() if b'"EventID":1000' in x]
    assert [(a["RuleTitle"], a["Technique"], a["ProcessId"]) for a in alerts] == [
        ("SysmonX configuration reload reduced collection", "config_weakened", "4242")]


def test_config_weakened_is_kept_whole_on_every_decision_path(tmp_path, capsys):
    """The configuration a weakening reload put in force can neither drop nor cut its
    finding: FieldSizes leave it whole, and replay, ``config explain`` and ``config stats``
    (the workbench) decide alike (include, RuleName ``-``); found by a review: the exemption
    was in the filter stage only, so ``config stats`` called the difference a defect."""
    from sysmonx.filtering.stage import FilterStage
    from sysmonx.sinks.jsonl import event_to_json
    details = "configuration SHA256=AAAA -> SHA256=BBBB collects less: not logged any more: " \
              "ProcessCreate (1)"
    ev = tamper_finding("config_weakened", details, platform="linux", process_id=4242,
                        image="/usr/bin/kill")
    cfg_text = (b'<Sysmon schemaversion="4.90"><FieldSizes>Details:8,Image:1,ProcessId:1'
                b'</FieldSizes><EventFiltering><RuleGroup groupRelation="or"><TamperFinding '
                b'onmatch="include"><Technique condition="is">nothing</Technique>'
                b'</TamperFinding></RuleGroup></EventFiltering></Sysmon>')
    stage = FilterStage(parse_config(cfg_text))
    assert stage.process(ev, lambda item: None) is True
    assert (ev.data["Details"], ev.data["Image"], ev.data["ProcessId"]) == (
        details, "/usr/bin/kill", "4242")
    # another finding under the same config is dropped
    assert stage.process(tamper_finding("clock_changed", "x", platform="linux"),
                         lambda item: None) is False
    cfg = tmp_path / "cfg.xml"
    cfg.write_bytes(cfg_text)
    line = tmp_path / "w.jsonl"
    line.write_bytes(event_to_json(tamper_finding("config_weakened", details,
                                                  platform="linux")) + b"\n")
    capsys.readouterr()
    assert main(["config", "explain", str(cfg), str(line)]) == 0
    out = capsys.readouterr().out
    assert "Decision: include" in out and "never filtered" in out
    assert main(["config", "stats", str(cfg), str(line), "--format", "json"]) == 0
    stats = orjson.loads(capsys.readouterr().out)
    assert stats["cross_check"]["replay_mismatches"] == []
    assert stats["events"]["201"] == {"included": 1, "excluded": 0}
