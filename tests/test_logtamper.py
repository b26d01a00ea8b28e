"""``replay --tamper``: each Windows log technique on recorded event XML written for this project
(shaped like the real records: System header, EventData or UserData as Windows writes them), and
the public attack EVTX in the corpus."""

from __future__ import annotations

import orjson

from sysmonx.cli import main
from sysmonx.stages.logtamper import LogTamperStage

SYSMON = ('<Provider Name="Microsoft-Windows-Sysmon" '
          'Guid="{5770385f-c22a-43e0-bf4c-06f5698ffbd9}"/>')
NS = "http://schemas.microsoft.com/win/2004/08/events/event"


def rec(eid, rid, t, body, *, provider=SYSMON, channel="Microsoft-Windows-Sysmon/Operational",
        computer="WS1.corp.local", pid=2000):
    return (f'<Event xmlns="{NS}"><System>{provider}<EventID>{eid}</EventID><Version>5</Version>'
            f'<Level>4</Level><Task>{eid}</Task><Opcode>0</Opcode>'
            f'<Keywords>0x8000000000000000</Keywords><TimeCreated SystemTime="{t}"/>'
            f'<EventRecordID>{rid}</EventRecordID><Correlation/>'
            f'<Execution ProcessID="{pid}" ThreadID="3000"/><Channel>{channel}</Channel>'
            f'<Computer>{computer}</Computer><Security UserID="S-1-5-18"/></System>{body}</Event>')


def data(**kw):
    return "<EventData>" + "".join(f'<Data Name="{k}">{v}</Data>' for k, v in kw.items()) + \
        "</EventData>"


def proc(rid, t, image, cmd, guid="{aaaaaaaa-1111-5ccc-0000-000000001000}", pid=4242):
    return rec(1, rid, t, data(RuleName="-", UtcTime=t[:10] + " " + t[11:23], ProcessGuid=guid,
                               ProcessId=pid, Image=image, CommandLine=cmd))


def write(tmp_path, records, name="log.xml"):
    p = tmp_path / name
    p.write_text("<Events>" + "".join(records) + "</Events>")
    return p


def findings(tmp_path, path, *extra):
    out = tmp_path / "out.jsonl"
    assert main(["replay", str(path), "--tamper", "-f", "jsonl", "-o", str(out), "-q",
                 *extra]) == 0
    return [orjson.loads(x) for x in out.read_bytes().splitlines()]


def only201(events):
    return [e for e in events if e["EventID"] == 201]


def test_log_cleared_security_1102_and_system_104(tmp_path):
    eventlog = ('<Provider Name="Microsoft-Windows-Eventlog" '
                'Guid="{fc65ddd8-d6ef-4962-83d5-6e5cfe9ce148}"/>')
    ud1102 = ('<UserData><LogFileCleared xmlns="http://manifests.microsoft.com/win/2004/08/'
              'windows/eventlog"><SubjectUserSid>S-1-5-21-1-2-3-500</SubjectUserSid>'
              '<SubjectUserName>admin</SubjectUserName><SubjectDomainName>CORP'
              '</SubjectDomainName><SubjectLogonId>0x3e7</SubjectLogonId></LogFileCleared>'
              '</UserData>')
    ud104 = ('<UserData><LogFileCleared xmlns="http://manifests.microsoft.com/win/2004/08/'
             'windows/eventlog"><SubjectUserName>admin</SubjectUserName><SubjectDomainName>CORP'
             '</SubjectDomainName><Channel>System</Channel><BackupPath></BackupPath>'
             '</LogFileCleared></UserData>')
    p = write(tmp_path, [
        rec(1102, 1, "2024-03-01T10:00:00.000000Z", ud1102, provider=eventlog, channel="Security"),
        rec(104, 1, "2024-03-01T10:00:01.000000Z", ud104, provider=eventlog, channel="System"),
    ])
    got = only201(findings(tmp_path, p))
    assert [g["Technique"] for g in got] == ["log_cleared", "log_cleared"]
    assert got[0]["Details"] == "Security log cleared by CORP\\admin (Security 1102)"
    assert got[1]["Details"] == "System log cleared by CORP\\admin (System 104)"
    assert got[0]["UtcTime"] == "2024-03-01 10:00:00.000"
    assert got[0]["System"]["Computer"] == "WS1.corp.local"
    assert got[0]["System"]["Level"] == 3 and got[0]["Source"].endswith("log.xml")


def test_sysmon_service_stopped_disabled_terminated(tmp_path):
    scm = ('<Provider Name="Service Control Manager" '
           'Guid="{555908d1-a6d7-4695-8e1e-26931d2012f4}" '
           'EventSourceName="Service Control Manager"/>')

    def sysrec(eid, rid, t, **kw):
        return rec(eid, rid, t, data(**kw), provider=scm, channel="System", pid=700)
    p = write(tmp_path, [
        sysrec(7036, 10, "2024-03-01T10:00:00Z", param1="Windows Update", param2="stopped"),
        sysrec(7036, 11, "2024-03-01T10:00:01Z", param1="Sysmon64", param2="stopped"),
        sysrec(7040, 12, "2024-03-01T10:00:02Z", param1="Sysmon64", param2="auto start",
               param3="disabled", param4="Sysmon64"),
        sysrec(7034, 13, "2024-03-01T10:00:03Z", param1="Sysmon", param2="1"),
        sysrec(7036, 14, "2024-03-01T10:00:04Z", param1="Sysmon64", param2="running"),
        rec(4, 500, "2024-03-01T10:00:05Z", data(UtcTime="2024-03-01 10:00:05.000",
                                                 State="Stopped", Version="15.14",
                                                 SchemaVersion="4.90")),
    ])
    got = only201(findings(tmp_path, p))
    assert [g["Technique"] for g in got] == ["sysmon_stopped"] * 4
    assert [g["Details"] for g in got] == [
        "service Sysmon64 entered the stopped state (System 7036)",
        "start type of service Sysmon64 changed from auto start to disabled (System 7040)",
        "service Sysmon terminated unexpectedly (System 7034)",
        "Sysmon service state Stopped (event 4, version 15.14)"]


def test_config_changed_mid_log_not_at_start(tmp_path):
    def ev16(rid, t, cfg, h):
        return rec(16, rid, t, data(UtcTime=t[:10] + " " + t[11:23], Configuration=cfg,
                                    ConfigurationFileHash=h))
    p = write(tmp_path, [
        # install: 16 (-i), 4 Started, 16 (-c) seconds later: Sysmon's own start, no finding
        ev16(1, "2024-03-01T09:00:00.000Z", "Sysmon64.exe -i", ""),
        rec(4, 2, "2024-03-01T09:00:00.100Z", data(UtcTime="2024-03-01 09:00:00.100",
                                                   State="Started", Version="15.14",
                                                   SchemaVersion="4.90")),
        ev16(3, "2024-03-01T09:00:07.000Z", "C:\\cfg\\good.xml", "SHA256=AAAA"),
        proc(4, "2024-03-01T10:00:00.000Z", "C:\\Windows\\System32\\cmd.exe", "cmd"),
        ev16(5, "2024-03-01T11:00:00.000Z", "C:\\Users\\x\\empty.xml", "SHA256=BBBB"),
    ])
    got = only201(findings(tmp_path, p))
    assert [g["Technique"] for g in got] == ["sysmon_config_changed"]
    assert got[0]["Details"] == ("configuration C:\\Users\\x\\empty.xml loaded mid-log; hash "
                                 "SHA256=AAAA -> SHA256=BBBB")


def test_rules_registry_and_driver_unloaded(tmp_path):
    fltmgr = ('<Provider Name="Microsoft-Windows-FilterManager" '
              'Guid="{f3c5e28e-63f6-49c7-a204-e48a1bc4b09d}"/>')
    reg = data(RuleName="-", EventType="SetValue", UtcTime="2024-03-01 10:00:00.000",
               ProcessGuid="{aaaaaaaa-1111-5ccc-0000-000000002000}", ProcessId="5150",
               Image="C:\\Windows\\regedit.exe",
               TargetObject="HKLM\\System\\CurrentControlSet\\Services\\SysmonDrv\\Parameters"
                            "\\Rules", Details="Binary Data", User="CORP\\admin")
    other = reg.replace("SysmonDrv\\Parameters\\Rules", "Tcpip\\Parameters\\Hostname")
    p = write(tmp_path, [
        rec(13, 1, "2024-03-01T10:00:00.000Z", reg),
        rec(13, 2, "2024-03-01T10:00:00.500Z", other),
        proc(3, "2024-03-01T10:00:01.000Z", "C:\\Windows\\System32\\fltMC.exe",
             "fltMC.exe  unload SysmonDrv"),
        proc(4, "2024-03-01T10:00:01.500Z", "C:\\Windows\\System32\\fltMC.exe",
             "fltmc unload WdFilter"),
        rec(1, 900, "2024-03-01T10:00:02.000Z",
            data(FinalStatus="0x0", DeviceVersionMajor="15", DeviceVersionMinor="14",
                 DeviceNameLength="9", DeviceName="SysmonDrv",
                 DeviceTime="2024-01-01T00:00:00.0000000Z"),
            provider=fltmgr, channel="System", pid=4),
    ])
    got = only201(findings(tmp_path, p))
    assert [g["Technique"] for g in got] == ["sysmon_rules_registry", "driver_unloaded",
                                             "driver_unloaded"]
    assert got[0]["Image"] == "C:\\Windows\\regedit.exe" and got[0]["ProcessId"] == "5150"
    assert got[0]["ProcessGuid"] == "{aaaaaaaa-1111-5ccc-0000-000000002000}"
    assert "SysmonDrv\\Parameters\\Rules = Binary Data by C:\\Windows\\regedit.exe" in \
        got[0]["Details"]
    assert got[1]["Image"] == "C:\\Windows\\System32\\fltMC.exe" and got[1]["ProcessId"] == "4242"
    assert got[2]["Details"].startswith("File System Filter 'SysmonDrv' unloaded")
    assert got[2]["ProcessId"] == "0"


def test_sysmon_error_record_gap_and_restart(tmp_path):
    p = write(tmp_path, [
        proc(100, "2024-03-01T10:00:00Z", "C:\\a.exe", "a"),
        proc(101, "2024-03-01T10:00:01Z", "C:\\b.exe", "b"),
        proc(105, "2024-03-01T10:00:02Z", "C:\\c.exe", "c"),
        rec(255, 106, "2024-03-01T10:00:03Z", data(UtcTime="2024-03-01 10:00:03.000",
                                                   ID="DriverCommunication",
                                                   Description="Failed to retrieve events")),
        proc(1, "2024-03-01T10:00:04Z", "C:\\d.exe", "d"),
        proc(2, "2024-03-01T10:00:05Z", "C:\\e.exe", "e"),
    ])
    got = only201(findings(tmp_path, p))
    assert [(g["Technique"], g["Details"]) for g in got] == [
        ("record_gap", "3 records missing in Microsoft-Windows-Sysmon/Operational of "
                       "WS1.corp.local: EventRecordID 101 then 105"),
        ("sysmon_error", "Sysmon error DriverCommunication: Failed to retrieve events"),
        ("record_gap", "EventRecordID of Microsoft-Windows-Sysmon/Operational restarted at 1 "
                       "after 106 (log cleared or recreated)")]


def test_time_gap_against_the_usual_rate(tmp_path):
    recs = [proc(i + 1, f"2024-03-01T10:{i // 60:02d}:{i % 60:02d}.000Z", "C:\\a.exe", "a")
            for i in range(40)]  # one a second
    recs.append(proc(41, "2024-03-01T12:30:00.000Z", "C:\\a.exe", "a"))  # 2.5 h of silence
    recs.append(proc(42, "2024-03-01T12:30:01.000Z", "C:\\a.exe", "a"))
    got = only201(findings(tmp_path, write(tmp_path, recs)))
    assert [g["Technique"] for g in got] == ["time_gap"]
    assert got[0]["Details"].startswith("no Microsoft-Windows-Sysmon/Operational record of "
                                        "WS1.corp.local for 8961 s")
    # a log that is always this slow has no time gap
    slow = [proc(i + 1, f"2024-03-{1 + i // 8:02d}T{(i % 8) * 3:02d}:00:00.000Z", "C:\\a.exe",
                 "a") for i in range(48)]
    assert only201(findings(tmp_path, write(tmp_path, slow, "slow.xml"))) == []


def test_findings_are_filtered_like_any_event(tmp_path):
    p = write(tmp_path, [proc(1, "2024-03-01T10:00:00Z", "C:\\a.exe", "a"),
                         proc(9, "2024-03-01T10:00:01Z", "C:\\a.exe", "a")])
    cfg = tmp_path / "c.xml"
    cfg.write_text('<Sysmon schemaversion="4.90"><EventFiltering><RuleGroup groupRelation="or">'
                   '<TamperFinding onmatch="exclude"><Technique condition="is">record_gap'
                   '</Technique></TamperFinding></RuleGroup></EventFiltering></Sysmon>')
    assert only201(findings(tmp_path, p, "-c", str(cfg))) == []
    assert len(only201(findings(tmp_path, p))) == 1


def test_without_tamper_no_findings(tmp_path):
    p = write(tmp_path, [proc(1, "2024-03-01T10:00:00Z", "C:\\a.exe", "a"),
                         proc(9, "2024-03-01T10:00:01Z", "C:\\a.exe", "a")])
    out = tmp_path / "o.jsonl"
    assert main(["replay", str(p), "-f", "jsonl", "-o", str(out), "-q"]) == 0
    assert b'"EventID":201' not in out.read_bytes()


def test_stage_is_registered():
    from sysmonx.core.registry import STAGES
    assert STAGES.get("tamper") is LogTamperStage


def test_public_attack_evtx_findings(corpus, tmp_path):
    """The corpus's public attack EVTX: the babyshark log's install sequence (16 -i, 4 Started,
    16 -c seven seconds later) is Sysmon's own start, not a finding; the samples are filtered
    exports, so their EventRecordID gaps are reported (and nothing else)."""
    root = corpus / "evtx"
    got = only201(findings(tmp_path, root))
    techniques = {g["Technique"] for g in got}
    assert techniques == {"record_gap"}
    assert len(got) == 34
    baby = [g for g in got if "babyshark" in g["Source"]]
    assert baby == []
