"""JSON exports of other collectors (sysmonx.sources.jsonshapes) and compressed / archived inputs
(sysmonx.sources.archive).

Corpus archives are read in place and checked against MANIFEST.md (Sysmon EventID counts per
file, zero read errors); the SigmaHQ regression folders' evtx-crate JSON renderings are checked
against their EVTX twins. All other fixtures are written here, in tmp_path.

Inherent to the SigmaHQ JSON renderings (documented, not a reader bug): the tool that rendered
them trims trailing white space of string values (``"cmd.exe" `` in the EVTX is ``"cmd.exe"`` in
the JSON text), so 48 of their 138 events differ from the EVTX only by that.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import re
import tarfile
import tracemalloc
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from sysmonx.event import Event
from sysmonx.sources import (FORMATS, JSON_FORMATS, ReadError, detect_format, iter_input_files,
                             open_source, read_stream)
from sysmonx.sources.archive import MAX_DEPTH, container_kind
from sysmonx.sources.jsonshapes import classify, convert, detect_json
from sysmonx.sources.syslog import read_syslog

SD = "json/OTRF__Security-Datasets/"
BABYSHARK = ("evtx/sbousseaden__EVTX-ATTACK-SAMPLES/Credential Access/"
             "babyshark_mimikatz_powershell.evtx")
SYSMON = "Microsoft-Windows-Sysmon"
SYSMON_CH = "Microsoft-Windows-Sysmon/Operational"
SYSMON_GUID = "{5770385f-c22a-43e0-bf4c-06f5698ffbd9}"


def read(path, fmt=None):
    """(events, errors) of one file."""
    errors: list[ReadError] = []
    events = list(open_source(str(path), errors.append, fmt))
    return events, errors


def jsonl(*objs) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


# ---- corpus: Security-Datasets archives vs MANIFEST ---------------------------------------------

_SHAPE_OF = {"flat JSON (Security-Datasets exporter)": "flatjson",
             "winlogbeat 6.x (log_name/event_data)": "winlogbeat", "nxlog (flat)": "nxlog",
             "Azure Sentinel/Log Analytics Event table (EventData as JSON string)": "sentinel"}


def manifest_json_rows(corpus: Path) -> list[tuple[str, str, dict, int]]:
    """``(file, shape, {EventID: count}, non-Sysmon lines)`` of MANIFEST's JSON section."""
    text = (corpus / "MANIFEST.md").read_text(encoding="utf-8")
    section = text.split("## JSON event logs", 1)[1].split("\n## ", 1)[0]
    rows = []
    for m in re.finditer(r"^\| `([^`]+)` \|.*format: ([^)]+\))\); Sysmon EID counts: ([\d:, ]+);"
                         r" non-Sysmon lines: (\d+)", section, re.M):
        counts = {int(k): int(v) for k, v in (p.split(":") for p in m.group(3).split(", "))}
        rows.append((m.group(1), _SHAPE_OF[m.group(2)], counts, int(m.group(4))))
    return rows


def test_manifest_lists_all_json_archives(corpus):
    rows = manifest_json_rows(corpus)
    assert len(rows) == 8
    assert {r[1] for r in rows} == {"flatjson", "winlogbeat", "nxlog", "sentinel"}


def test_corpus_json_archives_match_manifest(corpus):
    for name, shape, counts, non_sysmon in manifest_json_rows(corpus):
        path = corpus / name
        errors: list[ReadError] = []
        got, other, members = Counter(), 0, set()
        for e in open_source(str(path), errors.append):
            if e.is_sysmon:
                got[e.event_id] += 1
            else:
                other += 1
            members.add(e.origin[0])
            assert all(type(v) is str for v in e.data.values())
        assert errors == [], name
        assert dict(got) == counts, name
        assert other == non_sysmon, name
        assert len(members) == 1 and next(iter(members)).startswith(str(path) + "!"), name
        with (zipfile.ZipFile(path).open(zipfile.ZipFile(path).infolist()[0])
              if name.endswith(".zip") else
              tarfile.open(path).extractfile(tarfile.open(path).next())) as f:
            assert detect_format("x.json", f.read(65536)) == shape, name


def _one(corpus, name, pred):
    for e in open_source(str(corpus / name), print):
        if pred(e):
            return e
    raise AssertionError("no such event")


def test_corpus_winlogbeat6_values(corpus):
    e = _one(corpus, SD + "datasets/atomic/windows/defense_evasion/host/"
             "empire_scm_dll_hijack_ikeext.tar.gz", lambda e: e.record_id == 4230552)
    assert (e.event_id, e.provider, e.provider_guid, e.channel) == (1, SYSMON, SYSMON_GUID,
                                                                     SYSMON_CH)
    assert (e.version, e.level, e.task, e.opcode, e.keywords) == (5, 4, 1, 0,
                                                                  "0x8000000000000000")
    assert (e.process_id, e.thread_id, e.user_id, e.computer) == (2692, 3164, "S-1-5-18",
                                                                   "IT001.shire.com")
    assert e.time_created == "2019-04-03T17:36:48.628000000Z"  # @timestamp, not UtcTime
    # winlogbeat dropped the empty RuleName: taken back from the message; Sysmon's field order
    assert list(e.data)[:5] == ["RuleName", "UtcTime", "ProcessGuid", "ProcessId", "Image"]
    assert e.data["RuleName"] == "" and e.data["LogonId"] == "0x3c21d"
    assert e.data["ProcessGuid"] == "{aa6b4a20-ef30-5ca4-0000-00100f081902}"
    assert "OriginalFileName" not in e.data  # not in this Sysmon version, nor in the message


def test_corpus_nxlog_clobbered_fields_and_utc_time(corpus):
    e = _one(corpus, SD + "datasets/atomic/windows/persistence/host/covenant_persistwmi.tar.gz",
             lambda e: e.record_id == 219666)
    # nxlog's EventType "INFO" overwrote Sysmon's: recovered from the message; &lt; unescaped
    assert e.event_id == 20 and e.data["EventType"] == "WmiConsumerEvent"
    assert e.data["Destination"].endswith("-EncodedCommand <blah>\"")
    assert e.time_created == "2019-12-05T04:47:55.000000000Z"  # EventTime 23:47:55 local, UTC-5
    net = _one(corpus, SD + "datasets/atomic/windows/persistence/host/covenant_persistwmi.tar.gz",
               lambda e: e.record_id == 102544)
    assert net.data["ProcessId"] == "3068"  # nxlog's ProcessID (2644) overwrote it
    assert net.process_id == 2644


def test_corpus_sentinel_kusto_times_restored(corpus):
    e = _one(corpus, SD + "datasets/compound/Log4Shell/"
             "sysmon_log4shell_cve2021_44228_java_serialized_object.zip",
             lambda e: e.event_id == 11)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", e.data["UtcTime"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", e.data["CreationUtcTime"])


# ---- corpus: SigmaHQ evtx-crate JSON renderings vs their EVTX -----------------------------------

def test_sigma_regression_json_equals_evtx(corpus):
    pairs = [(p, p.with_suffix(".evtx")) for p in
             sorted((corpus / "sigma/regression_data").rglob("*.json"))
             if p.with_suffix(".evtx").exists()]
    assert len(pairs) >= 100
    exact = trimmed = 0
    for jpath, epath in pairs:
        from_json, errors = read(jpath)
        from_evtx, errors2 = read(epath)
        assert errors == errors2 == [] and len(from_json) == len(from_evtx) >= 1, jpath
        for j, e in zip(from_json, from_evtx, strict=True):
            if j.key() == e.key():
                exact += 1
                continue
            # inherent to these renderings: trailing white space of values trimmed
            assert j.event_id == e.event_id and j.key()[2:] == e.key()[2:], jpath
            assert {k: v.rstrip() for k, v in e.data.items()} == j.data, jpath
            trimmed += 1
    assert exact >= 90 and exact + trimmed == 138


# ---- winlogbeat ---------------------------------------------------------------------------------

PROC_CREATE_MSG = ("Process Create:\nRuleName: \nUtcTime: 2019-04-03 17:36:48.627\n"
                   "ProcessGuid: {AA6B4A20-EF30-5CA4-0000-00100F081902}\nProcessId: 4532\n"
                   "Image: C:\\Windows\\System32\\taskhostw.exe\nCommandLine: a\nb\n"
                   "LogonId: 0x3C21D\nParentProcessId: 1132")
PROC_CREATE_DATA = {"ParentProcessId": "1132", "ProcessId": "4532", "CommandLine": "a\r\nb",
                    "Image": "C:\\Windows\\System32\\taskhostw.exe", "LogonId": "0x3c21d",
                    "ProcessGuid": "{aa6b4a20-ef30-5ca4-0000-00100f081902}",
                    "UtcTime": "2019-04-03 17:36:48.627"}
EXPECTED_PROC_CREATE = {"RuleName": "", "UtcTime": "2019-04-03 17:36:48.627",
                        "ProcessGuid": "{aa6b4a20-ef30-5ca4-0000-00100f081902}",
                        "ProcessId": "4532", "Image": "C:\\Windows\\System32\\taskhostw.exe",
                        "CommandLine": "a\r\nb", "LogonId": "0x3c21d", "ParentProcessId": "1132"}


def winlogbeat6(**over):
    rec = {"@timestamp": "2019-04-03T17:36:48.628Z",
           "@metadata": {"beat": "winlogbeat", "type": "doc", "version": "6.7.0"},
           "event_id": 1, "version": 5, "level": "Information", "opcode": "Info",
           "task": "Process Create (rule: ProcessCreate)", "source_name": SYSMON,
           "provider_guid": "{5770385F-C22A-43E0-BF4C-06F5698FFBD9}", "log_name": SYSMON_CH,
           "computer_name": "IT001.shire.com", "record_number": "4230552", "process_id": 2692,
           "thread_id": 3164, "user": {"identifier": "S-1-5-18", "name": "SYSTEM"},
           "keywords": ["Classic"], "type": "wineventlog", "message": PROC_CREATE_MSG,
           "event_data": dict(PROC_CREATE_DATA)}
    rec.update(over)
    return rec


def winlogbeat7(event_id=1, record_id=4230552, **over):
    rec = {"@timestamp": "2019-04-03T21:36:48.628+04:00",
           "@metadata": {"beat": "winlogbeat", "version": "7.17.0"},
           "event": {"code": str(event_id), "kind": "event", "created": "2024-01-01T00:00:00Z"},
           "log": {"level": "information"}, "message": PROC_CREATE_MSG,
           "winlog": {"event_id": event_id, "provider_name": SYSMON,
                      "provider_guid": "{5770385f-c22a-43e0-bf4c-06f5698ffbd9}",
                      "channel": SYSMON_CH, "computer_name": "IT001.shire.com",
                      "record_id": record_id, "version": 5, "opcode": "Info",
                      "task": "Process Create (rule: ProcessCreate)", "api": "wineventlog",
                      "process": {"pid": 2692, "thread": {"id": 3164}},
                      "user": {"identifier": "S-1-5-18"},
                      "event_data": dict(PROC_CREATE_DATA)}}
    rec.update(over)
    return rec


def check_proc_create(e: Event):
    assert (e.event_id, e.provider, e.provider_guid, e.channel, e.computer) == (
        1, SYSMON, SYSMON_GUID, SYSMON_CH, "IT001.shire.com")
    assert (e.version, e.level, e.task, e.opcode, e.keywords) == (5, 4, 1, 0,
                                                                  "0x8000000000000000")
    assert (e.record_id, e.process_id, e.thread_id, e.user_id) == (4230552, 2692, 3164,
                                                                    "S-1-5-18")
    assert e.time_created == "2019-04-03T17:36:48.628000000Z"
    assert list(e.data.items()) == list(EXPECTED_PROC_CREATE.items())


@pytest.mark.parametrize("record", [
    winlogbeat6(), winlogbeat7(),
    winlogbeat7(event_id="1", record_id="4230552"),  # 8.x: strings
], ids=["6.x", "7.x", "8.x"])
def test_winlogbeat_versions(tmp_path, record):
    p = tmp_path / "wlb.json"
    p.write_bytes(jsonl(record))
    assert detect_format(str(p), p.read_bytes()) == "winlogbeat"
    (e,), errors = read(p)
    assert errors == []
    check_proc_create(e)
    assert e.origin == (str(p), 1)


def test_winlogbeat_other_providers_and_user_data(tmp_path):
    p = tmp_path / "wlb.json"
    p.write_bytes(jsonl(
        winlogbeat6(event_id=5857, source_name="Microsoft-Windows-WMI-Activity",
                    log_name="Microsoft-Windows-WMI-Activity/Operational",
                    provider_guid="{1418EF04-B0B4-4623-BF7E-D74AB47BBDAA}", event_data=None,
                    user_data={"xml_name": "Operation_StartedOperational", "Code": "0x0",
                               "ProcessID": "4772"}, task="", keywords=["Classic"]),
        winlogbeat6(event_id=4624, source_name="Microsoft-Windows-Security-Auditing",
                    log_name="Security", event_data={"LogonType": "3", "Guid": "{ABC}"},
                    message="An account was successfully logged on.")))
    (wmi, logon), errors = read(p)
    assert errors == []
    assert not wmi.is_sysmon and wmi.channel == "Microsoft-Windows-WMI-Activity/Operational"
    assert wmi.data == {"Code": "0x0", "ProcessID": "4772"}
    assert wmi.provider_guid == "{1418ef04-b0b4-4623-bf7e-d74ab47bbdaa}"
    assert (wmi.task, wmi.keywords) == (None, None)
    assert logon.data == {"LogonType": "3", "Guid": "{ABC}"}  # other providers: as found


def test_message_disagreeing_with_the_record_is_not_used(tmp_path):
    # A message rendered with another manifest (values shifted) must not fill fields.
    bad_msg = PROC_CREATE_MSG.replace("ProcessId: 4532", "ProcessId: 9999")
    p = tmp_path / "wlb.json"
    p.write_bytes(jsonl(winlogbeat6(message=bad_msg)))
    (e,), _ = read(p)
    assert "RuleName" not in e.data


# ---- nxlog --------------------------------------------------------------------------------------

def nxlog(**over):
    rec = {"EventTime": "2019-12-04 23:47:45", "EventReceivedTime": "2019-12-04 23:47:46",
           "@timestamp": "2019-12-05T04:47:46.913Z", "SourceModuleName": "eventlog",
           "SourceModuleType": "im_msvistalog", "Hostname": "HFDC01.shire.com",
           "EventType": "INFO", "Severity": "INFO", "SeverityValue": 2,
           "Keywords": -9223372036854775808, "EventID": 13, "SourceName": SYSMON,
           "ProviderGuid": "{5770385F-C22A-43E0-BF4C-06F5698FFBD9}", "Version": 2, "Task": 13,
           "OpcodeValue": 0, "RecordNumber": 102619, "ProcessID": 2644, "ThreadID": 3664,
           "Channel": SYSMON_CH, "Domain": "NT AUTHORITY", "AccountName": "SYSTEM",
           "UserID": "S-1-5-18", "AccountType": "User", "host": "wec", "port": 49730,
           "@version": "1", "type": "nxlog-mordor",
           "Message": "Registry value set:\r\nRuleName: \r\nEventType: SetValue\r\n"
                      "UtcTime: 2019-12-05 04:47:45.981\r\n"
                      "ProcessGuid: {d14e8c55-47c8-5de8-0000-0010caf90100}\r\n"
                      "ProcessId: 2024\r\nImage: C:\\a<b>.exe\r\nTargetObject: HKLM\\x\r\n"
                      "Details: DWORD (0x00000001)",
           "UtcTime": "2019-12-05 04:47:45.981", "Image": "C:\\a&lt;b&gt;.exe",
           "ProcessGuid": "{d14e8c55-47c8-5de8-0000-0010caf90100}", "TargetObject": "HKLM\\x",
           "Details": "DWORD (0x00000001)"}
    rec.update(over)
    return rec


def test_nxlog_sysmon_event(tmp_path):
    p = tmp_path / "nx.json"
    p.write_bytes(jsonl(nxlog()))
    assert detect_format(str(p), p.read_bytes()) == "nxlog"
    (e,), errors = read(p)
    assert errors == []
    assert list(e.data.items()) == [
        ("RuleName", ""), ("EventType", "SetValue"), ("UtcTime", "2019-12-05 04:47:45.981"),
        ("ProcessGuid", "{d14e8c55-47c8-5de8-0000-0010caf90100}"), ("ProcessId", "2024"),
        ("Image", "C:\\a<b>.exe"), ("TargetObject", "HKLM\\x"),
        ("Details", "DWORD (0x00000001)")]
    assert (e.provider_guid, e.keywords, e.version, e.task, e.opcode, e.level) == (
        SYSMON_GUID, "0x8000000000000000", 2, 13, 0, 4)
    assert (e.record_id, e.process_id, e.thread_id, e.user_id, e.computer) == (
        102619, 2644, 3664, "S-1-5-18", "HFDC01.shire.com")
    assert e.time_created == "2019-12-05T04:47:45.000000000Z"  # local EventTime + 5 h


@pytest.mark.parametrize("over, expected", [
    ({"EventTime": "2019-12-04T23:47:45.250-05:00"}, "2019-12-05T04:47:45.250000000Z"),
    ({"@timestamp": None}, "2019-12-04T23:47:45.000000000Z"),  # nothing tells the zone
    ({"EventReceivedTime": "2019-12-05 10:17:46"}, "2019-12-04T18:17:45.000000000Z"),  # +5:30
])
def test_nxlog_time_zones(over, expected):
    rec = nxlog(**over)
    assert convert({k: v for k, v in rec.items() if v is not None}, "nxlog").time_created == \
        expected


def test_nxlog_other_provider(tmp_path):
    rec = {k: v for k, v in nxlog().items() if k not in ("UtcTime", "Image", "ProcessGuid",
                                                          "TargetObject", "Details")}
    rec.update({"EventID": 5156, "SourceName": "Microsoft-Windows-Security-Auditing",
                "Channel": "Security", "Application": "\\device\\x &amp; y", "DestPort": "80",
                "Message": "The Windows Filtering Platform has permitted a connection."})
    e = convert(rec, "nxlog")
    assert not e.is_sysmon and e.data == {"Application": "\\device\\x & y", "DestPort": "80"}


# ---- Sentinel -----------------------------------------------------------------------------------

def test_sentinel_windowsevent_json_string(tmp_path):
    data = {"RuleName": "-", "UtcTime": "2022-05-13T08:54:06.6900000Z",
            "ProcessGuid": "{F3329A35-1C6C-627E-E516-000000000600}", "ProcessId": "3936",
            "Image": "C:\\tomcat9.exe", "TargetFilename": "C:\\x.log",
            "CreationUtcTime": "2022-05-13T08:54:06Z", "User": "NT AUTHORITY\\LOCAL SERVICE"}
    rec = {"TenantId": "redacted", "SourceSystem": "OpsManager",
           "TimeGenerated": "2022-05-13T08:54:06.693Z", "Provider": SYSMON, "Channel": SYSMON_CH,
           "Computer": "WORKSTATION5", "Task": 11, "EventLevel": 4,
           "EventLevelName": "Information", "EventData": json.dumps(data), "EventID": 11,
           "Type": "WindowsEvent"}
    p = tmp_path / "s.json"
    p.write_bytes(jsonl(rec, dict(rec, EventData=data)))  # string, then object
    assert detect_format(str(p), p.read_bytes()) == "sentinel"
    (a, b), errors = read(p)
    assert errors == [] and a == Event(**{**_kw(b), "origin": a.origin})
    assert list(a.data.items()) == [
        ("RuleName", "-"), ("UtcTime", "2022-05-13 08:54:06.690"),
        ("ProcessGuid", "{f3329a35-1c6c-627e-e516-000000000600}"), ("ProcessId", "3936"),
        ("Image", "C:\\tomcat9.exe"), ("TargetFilename", "C:\\x.log"),
        ("CreationUtcTime", "2022-05-13 08:54:06.000"), ("User", "NT AUTHORITY\\LOCAL SERVICE")]
    assert (a.time_created, a.level, a.task, a.computer, a.provider_guid) == (
        "2022-05-13T08:54:06.693000000Z", 4, 11, "WORKSTATION5", SYSMON_GUID)


def _kw(e: Event) -> dict:
    return {"event_id": e.event_id, "data": e.data, **{
        s: getattr(e, s) for s in Event.__slots__ if s not in ("event_id", "data", "_raw")}}


def test_sentinel_event_table_xml():
    xml = ("<DataItem type=\"System.XmlData\" time=\"2022-05-13T08:54:06.0000000Z\">"
           "<EventData xmlns=\"http://schemas.microsoft.com/win/2004/08/events/event\">"
           "<Data Name=\"RuleName\">-</Data><Data Name=\"UtcTime\">2022-05-13 08:54:05.123</Data>"
           "<Data Name=\"ProcessGuid\">{f3329a35-1c6c-627e-e516-000000000600}</Data>"
           "<Data Name=\"Image\">C:\\a&amp;b.exe</Data><Data Name=\"Initiated\">false</Data>"
           "</EventData></DataItem>")
    e = convert({"Source": SYSMON, "EventLog": SYSMON_CH, "Computer": "W5", "EventLevel": 4,
                 "EventID": 3, "TimeGenerated": "2022-05-13T08:54:06.347Z", "EventData": xml,
                 "RenderedDescription": "Network connection detected:", "Type": "Event"},
                "sentinel")
    assert e.is_sysmon and e.channel == SYSMON_CH
    assert list(e.data.items()) == [
        ("RuleName", "-"), ("UtcTime", "2022-05-13 08:54:05.123"),
        ("ProcessGuid", "{f3329a35-1c6c-627e-e516-000000000600}"), ("Image", "C:\\a&b.exe"),
        ("Initiated", "false")]
    with pytest.raises(ValueError, match="malformed EventData XML"):
        convert({"EventID": 3, "EventData": "<DataItem><EventData>", "Type": "Event"},
                "sentinel")
    with pytest.raises(ValueError, match="malformed EventData XML"):  # no entity expansion
        convert({"EventID": 3, "Type": "Event", "EventData":
                 '<!DOCTYPE d [<!ENTITY x "boom">]><EventData><Data Name="a">&x;</Data>'
                 "</EventData>"}, "sentinel")


LINUX_XML = ('<Event><System><Provider Name="Linux-Sysmon" '
             'Guid="{ff032593-a8d3-4f13-b0d6-01fc615a0f97}"/><EventID>1</EventID>'
             '<Version>5</Version><Level>4</Level><Task>1</Task><Opcode>0</Opcode>'
             '<Keywords>0x8000000000000000</Keywords>'
             '<TimeCreated SystemTime="2021-12-13T08:50:22.373451000Z"/>'
             '<EventRecordID>93</EventRecordID><Correlation/>'
             '<Execution ProcessID="2163" ThreadID="2163"/>'
             '<Channel>Linux-Sysmon/Operational</Channel><Computer>victim</Computer>'
             '<Security UserId="0"/></System><EventData><Data Name="RuleName">-</Data>'
             '<Data Name="UtcTime">2021-12-13 08:50:22.370</Data>'
             '<Data Name="ProcessGuid">{5d8a3a29-097e-61b7-c5d6-b1e19f550000}</Data>'
             '<Data Name="ProcessId">5234</Data><Data Name="Image">/usr/bin/bash</Data>'
             '<Data Name="CommandLine">bash -c "curl x | sh"</Data></EventData></Event>')


def test_sentinel_syslog_linux_sysmon(tmp_path):
    rows = [{"TenantId": "t", "SourceSystem": "Linux", "TimeGenerated": "2021-12-13T08:50:23Z",
             "Computer": "victim", "EventTime": "2021-12-13T08:50:22Z", "Facility": "user",
             "HostName": "victim", "SeverityLevel": "info", "SyslogMessage": LINUX_XML,
             "ProcessID": 2163, "ProcessName": "sysmon", "Type": "Syslog"},
            {"TenantId": "t", "TimeGenerated": "2021-12-13T08:50:24Z", "Computer": "victim",
             "EventTime": "2021-12-13T08:50:24Z", "Facility": "auth", "HostName": "victim",
             "SeverityLevel": "info", "SyslogMessage": "Accepted publickey for root",
             "ProcessID": 777, "ProcessName": "sshd", "Type": "Syslog"},
            {"TenantId": "t", "TimeGenerated": "2021-12-13T08:50:25Z", "Type": "Syslog",
             "SyslogMessage": LINUX_XML[:200]}]
    p = tmp_path / "syslog.json"
    p.write_bytes(jsonl(*rows))
    events, errors = read(p)
    assert [(e.offset, "cut off" in e.message) for e in errors] == [(3, True)]
    linux, sshd = events
    ref = tmp_path / "sysmon.log"
    ref.write_text("Dec 13 08:50:22 victim sysmon: " + LINUX_XML + "\n")
    (expected,) = list(read_syslog(str(ref), print))
    assert linux.key() == expected.key() and linux.origin == (str(p), 1)
    assert linux.is_sysmon and linux.user_id == "0"
    assert (sshd.event_id, sshd.provider, sshd.channel, sshd.is_sysmon) == (0, "sshd", "Syslog",
                                                                            False)
    assert sshd.data["SyslogMessage"] == "Accepted publickey for root"
    assert sshd.time_created == "2021-12-13T08:50:24.000000000Z"


# ---- Security-Datasets flat exporter ------------------------------------------------------------

def flat(**over):
    rec = {"SourceName": SYSMON, "ProviderGuid": SYSMON_GUID, "Level": "4",
           "Keywords": "0x8000000000000000", "Channel": SYSMON_CH, "Hostname": "Pedro01",
           "TimeCreated": "2022-08-08T12:48:43.209Z", "@timestamp": "2022-08-08T12:48:43.209Z",
           "EventID": 10, "Task": "10", "Message": "Process accessed:\r\nRuleName: -",
           "RuleName": "-", "UtcTime": "2022-08-08 12:48:43.207",
           "SourceProcessGUID": "{6E05FB1C-D9C6-62F0-5B00-000000000C00}",
           "SourceProcessId": "4", "GrantedAccess": "0x1fffff", "SourceUser": None}
    rec.update(over)
    return rec


def test_flatjson(tmp_path):
    p = tmp_path / "flat.json"
    p.write_bytes(jsonl(
        flat(), flat(TimeCreated="2020-10-19 03:30:41.104", **{"@timestamp": None}),
        flat(TimeCreated="2020-10-19 03:30:41.104"),
        {"SourceName": "Microsoft-Windows-Security-Auditing", "Channel": "Security",
         "Hostname": "h", "TimeCreated": "2022-08-08T12:48:43.209Z", "EventID": 4624,
         "Task": "12544", "Message": "An account was successfully logged on.",
         "LogonType": "5", "ProcessId": "0x240"}))
    assert detect_format(str(p), p.read_bytes()) == "flatjson"
    (a, b, c, d), errors = read(p)
    assert errors == []
    assert list(a.data.items()) == [
        ("RuleName", "-"), ("UtcTime", "2022-08-08 12:48:43.207"),
        ("SourceProcessGUID", "{6e05fb1c-d9c6-62f0-5b00-000000000c00}"),
        ("SourceProcessId", "4"), ("GrantedAccess", "0x1fffff"), ("SourceUser", "")]
    assert (a.event_id, a.level, a.task, a.computer, a.time_created) == (
        10, 4, 10, "Pedro01", "2022-08-08T12:48:43.209000000Z")
    # zone-less TimeCreated: taken as UTC when nothing else tells (the export lost the zone)
    assert b.time_created == "2020-10-19T03:30:41.104000000Z"
    assert c.time_created == "2022-08-08T12:48:43.209000000Z"  # @timestamp wins over it
    assert not d.is_sysmon and d.data == {"LogonType": "5", "ProcessId": "0x240"}


# ---- evtx-crate JSON ----------------------------------------------------------------------------

def evtx_record(rid: int) -> dict:
    return {"Event": {
        "#attributes": {"xmlns": "http://schemas.microsoft.com/win/2004/08/events/event"},
        "System": {"Provider": {"#attributes": {"Name": SYSMON,
                                                "Guid": "5770385F-C22A-43E0-BF4C-06F5698FFBD9"}},
                   "EventID": 7, "Version": 3, "Level": 4, "Task": 7, "Opcode": 0,
                   "Keywords": "0x8000000000000000",
                   "TimeCreated": {"#attributes": {"SystemTime": "2025-11-27T07:40:10.165324Z"}},
                   "EventRecordID": rid, "Correlation": None,
                   "Execution": {"#attributes": {"ProcessID": 3544, "ThreadID": 4272}},
                   "Channel": SYSMON_CH, "Computer": "pc",
                   "Security": {"#attributes": {"UserID": "S-1-5-18"}}},
        "EventData": {"RuleName": "-", "ProcessGuid": "0197231E-005A-6928-A50B-000000000D00",
                      "ProcessId": 4460, "Signed": True, "Description": None}}}


@pytest.mark.parametrize("layout", ["pretty", "evtx_dump", "array", "lines"])
def test_evtxjson_layouts(tmp_path, layout):
    recs = [evtx_record(1), evtx_record(2)]
    if layout == "pretty":
        text = "".join(json.dumps(r, indent=2) + "\n" for r in recs)
    elif layout == "evtx_dump":
        text = "".join(f"Record {i}\n" + json.dumps(r, indent=2) + "\n"
                       for i, r in enumerate(recs, 1))
    elif layout == "array":
        text = json.dumps(recs, indent=2)
    else:
        text = "".join(json.dumps(r) + "\n" for r in recs)
    p = tmp_path / "x.json"
    p.write_text(text)
    assert detect_format(str(p), p.read_bytes()) == "evtxjson"
    events, errors = read(p)
    assert errors == [] and [e.record_id for e in events] == [1, 2]
    e = events[0]
    assert e.data == {"RuleName": "-", "ProcessGuid": "{0197231e-005a-6928-a50b-000000000d00}",
                      "ProcessId": "4460", "Signed": "true", "Description": ""}
    assert (e.provider_guid, e.time_created, e.process_id) == (
        SYSMON_GUID, "2025-11-27T07:40:10.165324000Z", 3544)
    start_lines = {"pretty": 1, "evtx_dump": 2, "array": 2, "lines": 1}
    assert e.origin == (str(p), start_lines[layout])


def test_evtxjson_broken_objects_are_reported_and_skipped(tmp_path):
    good = json.dumps(evtx_record(1), indent=2).splitlines()
    lines = good[:10] + good + ["{", '  "Event": {', '    "System": ]', "  }", "}"] + \
        json.dumps(evtx_record(3), indent=2).splitlines() + ["{", '  "Event": {']
    p = tmp_path / "x.json"
    p.write_text("\n".join(lines) + "\n")
    events, errors = read(p, "evtxjson")
    assert [e.record_id for e in events] == [1, 3]
    assert [(e.offset, e.message.split(":")[0]) for e in errors] == [
        (1, "unterminated JSON object; skipped"), (len(good) + 11, "not JSON"),
        (2 * len(good) + 16, "JSON object not terminated at the end of the file; skipped")]


# ---- common behaviour ---------------------------------------------------------------------------

def test_bad_lines_one_error_each_and_reading_goes_on(tmp_path):
    p = tmp_path / "nx.json"
    p.write_bytes(b"\n".join([
        json.dumps(nxlog(RecordNumber=1)).encode(), b"not json", b'"a string"',
        json.dumps(nxlog(EventID="abc")).encode(), b"",
        json.dumps(nxlog(EventTime="yesterday")).encode(),
        json.dumps(nxlog(RecordNumber=2))[:-9].encode(),  # cut off
        json.dumps(nxlog(RecordNumber=3)).encode()]) + b"\n")
    events, errors = read(p)
    assert [e.record_id for e in events] == [1, 3]
    assert [e.offset for e in errors] == [2, 3, 4, 6, 7]
    assert all(e.offset_kind == "line" and e.path == str(p) for e in errors)
    assert "not JSON" in errors[0].message and "not a JSON object" in errors[1].message
    assert "event id" in errors[2].message and "ISO 8601" in errors[3].message


def test_input_format_override_and_names():
    assert set(JSON_FORMATS) <= set(FORMATS)
    assert FORMATS == ("evtx", "xml", "syslog", "jsonl", "winlogbeat", "nxlog", "sentinel",
                       "flatjson", "evtxjson", "sqlite")


def test_forced_format_reads_lines_of_another_shape_as_errors(tmp_path):
    p = tmp_path / "x.json"
    p.write_bytes(jsonl(winlogbeat6()))
    events, errors = read(p, "nxlog")
    assert events == [] and "event id" in errors[0].message
    events, errors = read(p, "winlogbeat")
    assert len(events) == 1 and errors == []


@pytest.mark.parametrize("obj, shape", [
    ({"Event": {"System": {}}}, "evtxjson"),
    ({"winlog": {"event_id": 1}}, "winlogbeat"),
    ({"log_name": "Security", "event_id": 1}, "winlogbeat"),
    ({"EventID": 1, "System": {"Provider": "x"}}, "jsonl"),
    ({"TimeGenerated": "x", "EventData": "{}", "EventID": 1}, "sentinel"),
    ({"SyslogMessage": "x"}, "sentinel"),
    ({"EventID": 1, "SourceModuleType": "im_msvistalog"}, "nxlog"),
    ({"EventID": 1, "EventTime": "2020-01-01 00:00:00"}, "nxlog"),
    ({"EventID": 1, "SourceName": SYSMON}, "flatjson"),
    ({"EventID": 1}, "jsonl"),
    ({"hello": 1}, None),
    ([1], None),
])
def test_classify(obj, shape):
    assert classify(obj) == shape


def test_detect_json_from_a_cut_off_head():
    line = json.dumps(nxlog(Message="x" * 100000)).encode()
    assert detect_json(line[:65536]) == "nxlog"
    assert detect_format("x.json", line[:65536]) == "nxlog"
    assert detect_format("x.json", b'["a", "b"]') == "jsonl"  # by the extension
    assert detect_format("x.log", b"Record 1\n{\n") == "evtxjson"


# ---- archives -----------------------------------------------------------------------------------

def sample_lines(n: int = 3) -> bytes:
    return jsonl(*(nxlog(RecordNumber=i) for i in range(1, n + 1)))


def test_container_kind():
    assert container_kind(gzip.compress(b"x")) == "gzip"
    assert container_kind(bz2.compress(b"x")) == "bzip2"
    assert container_kind(lzma.compress(b"x")) == "xz"
    assert container_kind(b"PK\x03\x04rest") == "zip"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        t.addfile(tarfile.TarInfo("a"), io.BytesIO(b""))
    assert container_kind(buf.getvalue()) == "tar"
    assert container_kind(b'{"EventID": 1}') is None


@pytest.mark.parametrize("name, pack", [
    ("x.json.gz", gzip.compress), ("x.json.bz2", bz2.compress), ("x.json.xz", lzma.compress),
    ("x.dat", gzip.compress),  # content, not the name, tells
])
def test_single_stream_compression(tmp_path, name, pack):
    p = tmp_path / name
    p.write_bytes(pack(sample_lines() + b"broken\n"))
    events, errors = read(p)
    assert [e.record_id for e in events] == [1, 2, 3]
    assert events[0].origin == (str(p), 1)
    assert [str(e).split(": not JSON")[0] for e in errors] == [f"{p}:4"]


def test_zip_members_in_order_with_member_names(tmp_path):
    p = tmp_path / "logs.zip"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("b/second.json", jsonl(winlogbeat6()) + b"{oops\n")
        z.writestr("a.json", sample_lines(2))
        z.writestr("__MACOSX/b/._second.json", b"\x00\x05\x16\x07Mac OS X")
        z.writestr("README.md", "these are logs")
        z.writestr("empty.json", b"")
        z.writestr("nested.json.gz", gzip.compress(sample_lines(1)))
        z.writestr("dir/", b"")
    events, errors = read(p)
    assert [(e.origin[0].split("!", 1)[1], e.origin[1]) for e in events] == [
        ("b/second.json", 1), ("a.json", 1), ("a.json", 2), ("nested.json.gz", 1)]
    assert [str(e).split(": not JSON")[0] for e in errors] == [f"{p}!b/second.json:2"]


def test_tar_gz_and_nesting(tmp_path):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("deep.json", sample_lines(1))
    p = tmp_path / "logs.tgz"
    with tarfile.open(p, "w:gz") as t:
        for name, data in [("d/one.json", sample_lines(2)), ("d/in.zip", inner.getvalue()),
                           ("d/two.json.bz2", bz2.compress(sample_lines(1)))]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("d/link.json")
        link.type = tarfile.SYMTYPE
        link.linkname = "one.json"
        t.addfile(link)
    events, errors = read(p)
    assert [e.origin[0].split("!", 1)[1] for e in events] == [
        "d/one.json", "d/one.json", "d/two.json.bz2"]
    # a zip needs seeking: not readable inside a compressed tar stream
    assert [(e.path, "unpack it first" in e.message) for e in errors] == [
        (f"{p}!d/in.zip", True)]


def test_zip_in_zip_and_depth_limit(tmp_path):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("deep.json", sample_lines(1))
    p = tmp_path / "outer.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("inner.zip", inner.getvalue())
    (e,), errors = read(p)
    assert errors == [] and e.origin == (f"{p}!inner.zip!deep.json", 1)
    data = sample_lines(1)
    for _ in range(MAX_DEPTH + 1):
        data = gzip.compress(data)
    q = tmp_path / "deep.gz"
    q.write_bytes(data)
    events, errors = read(q)
    assert events == [] and "nested deeper" in errors[0].message


def test_damaged_and_padded_gzip(tmp_path):
    data = gzip.compress(sample_lines(3))
    p = tmp_path / "cut.json.gz"
    p.write_bytes(data[:-8])  # the CRC and size trailer missing
    events, errors = read(p)
    assert len(events) == 3 and len(errors) == 1 and "truncated" in errors[0].message
    for pack, name in ((bz2.compress, "cut.json.bz2"), (lzma.compress, "cut.json.xz")):
        q = tmp_path / name
        q.write_bytes(pack(sample_lines(3))[:-8])
        events, errors = read(q)
        assert len(events) == 3 and len(errors) == 1 and "truncated" in errors[0].message
    p.write_bytes(data + b"\n\x00\x00")  # padding after the stream (as in the corpus tar.gz)
    events, errors = read(p)
    assert len(events) == 3 and errors == []
    p.write_bytes(data + b"JUNK")
    events, errors = read(p)
    assert len(events) == 3 and "4 bytes of trailing garbage" in errors[0].message
    p.write_bytes(data + gzip.compress(sample_lines(1)))  # concatenated members
    events, errors = read(p)
    assert len(events) == 4 and errors == []


def test_evtx_member_equals_the_file(corpus, tmp_path):
    direct, _ = read(corpus / BABYSHARK)
    p = tmp_path / "evtx.zip"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(corpus / BABYSHARK, "babyshark.evtx")
    events, errors = read(p)
    assert errors == [] and [e.key() for e in events] == [e.key() for e in direct]
    assert events[0].origin[0] == f"{p}!babyshark.evtx"


def test_iter_input_files_keeps_archives(tmp_path):
    for name in ["a.json.gz", "b.tgz", "c.zip", "d.JSON.BZ2", "e.tar.xz", "f.pdf"]:
        (tmp_path / name).write_bytes(b"")
    assert [Path(p).name for p in iter_input_files([str(tmp_path)])] == [
        "a.json.gz", "b.tgz", "c.zip", "d.JSON.BZ2", "e.tar.xz"]


def test_read_stream_names_and_refuses_evtx():
    events = list(read_stream(io.BufferedReader(io.BytesIO(sample_lines(1))), "m", print,
                              "nxlog"))
    assert events[0].origin == ("m", 1)
    with pytest.raises(ValueError):
        read_stream(io.BytesIO(b""), "m", print, "evtx")


def test_archive_members_are_streamed(tmp_path):
    """Memory does not grow with the size of a compressed member (about 12 MB here)."""
    line = json.dumps(nxlog(Details="x" * 2000)).encode() + b"\n"
    p = tmp_path / "big.json.gz"
    with gzip.open(p, "wb", compresslevel=1) as f:
        for _ in range(5000):
            f.write(line)
    tracemalloc.start()
    try:
        count = sum(1 for _ in open_source(str(p), print))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 5000
    assert peak < 4 * 1024 * 1024
