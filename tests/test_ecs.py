"""ECS output (sysmonx.sinks.ecs): every corpus event's document checked against the ECS field
reference (names, value types, allowed categorisation values), exact documents for hand-made
events of each kind, and per corpus event type the mapping re-derived field by field."""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from pathlib import Path

import pytest

from sysmonx.event import LINUX_PROVIDER, Event
from sysmonx.sinks import writer_class
from sysmonx.sinks.ecs import CATEGORIES, ecs_line, event_to_ecs, windows_split_command_line
from sysmonx.sources import iter_input_files, open_source

from conftest import corpus_path

REF = Path(__file__).parent / "data" / "ecs_fields.tsv"


def _reference() -> tuple[dict[str, str], dict[str, set[str]]]:
    types: dict[str, str] = {}
    allowed: dict[str, set[str]] = {}
    for line in REF.read_text().splitlines():
        if line.startswith("#"):
            continue
        parts = line.split("\t")
        if parts[0] == "allowed":
            allowed[parts[1]] = set(parts[2].split(","))
        else:
            types[parts[0]] = parts[1]
    return types, allowed


TYPES, ALLOWED = _reference()
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")


def _leaves(obj, prefix=""):
    for k, v in obj.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _leaves(v, path + ".")
        else:
            yield path, v


def _type_ok(ecs_type: str, value) -> bool:
    values = value if isinstance(value, list) else [value]
    for v in values:
        if ecs_type in ("keyword", "wildcard", "match_only_text", "text", "constant_keyword"):
            ok = isinstance(v, str)
        elif ecs_type == "long":
            ok = isinstance(v, int) and not isinstance(v, bool) and -2**63 <= v < 2**63
        elif ecs_type == "boolean":
            ok = isinstance(v, bool)
        elif ecs_type == "ip":
            try:
                ipaddress.ip_address(v)
                ok = True
            except (ValueError, TypeError):
                ok = False
        elif ecs_type == "date":
            ok = isinstance(v, str) and bool(_DATE.match(v))
        else:
            ok = False
        if not ok:
            return False
    return True


def check_document(doc: dict) -> list[str]:
    """Problems of one document against the ECS reference (``winlog.*`` is Beats' namespace and
    holds the original strings)."""
    problems = []
    for path, value in _leaves(doc):
        if path.startswith("winlog."):
            if path.startswith("winlog.event_data.") and not isinstance(value, str):
                problems.append(f"{path}: not a string")
            continue
        t = TYPES.get(path)
        if t is None:
            problems.append(f"{path}: not an ECS field")
        elif not _type_ok(t, value):
            problems.append(f"{path}: {value!r} is not ECS type {t}")
        if path in ALLOWED:
            for v in value if isinstance(value, list) else [value]:
                if v not in ALLOWED[path]:
                    problems.append(f"{path}: {v!r} is not an allowed value")
    return problems


def _corpus_events():
    root = corpus_path()
    if root is None:
        pytest.skip("reference corpus not available (set SYSMONX_CORPUS)")
    folders = [str(root / "evtx"), str(root / "json"), str(root / "linux")]
    files = list(iter_input_files(folders, lambda n: None))
    for f in files:
        for e in open_source(str(f), lambda err: None):
            if e.is_sysmon:
                yield f, e


@pytest.fixture(scope="module")
def corpus_by_id():
    by_id: dict[int, list[Event]] = defaultdict(list)
    n = 0
    for _, e in _corpus_events():
        n += 1
        if len(by_id[e.event_id]) < 50:
            by_id[e.event_id].append(e)
        problems = check_document(event_to_ecs(e))
        assert problems == [], (e.event_id, e.origin, problems)
    assert n > 20000, n
    return by_id


def test_every_corpus_event_is_valid_ecs(corpus_by_id):
    # the fixture checked every event; the corpus has most Sysmon event types on both platforms
    assert {1, 3, 5, 7, 8, 10, 11, 12, 13, 22, 23}.issubset(corpus_by_id)


@pytest.mark.parametrize("eid", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
                                 19, 20, 21, 22, 23, 24, 25, 26, 255])
def test_mapping_per_corpus_event_type(corpus_by_id, eid):
    if eid not in corpus_by_id:
        pytest.skip(f"no event {eid} among the recorded logs (the hand-made documents cover it)")
    for e in corpus_by_id[eid]:
        doc = event_to_ecs(e)
        d = e.data
        linux = e.provider == LINUX_PROVIDER or (d.get("Image") or "").startswith("/")
        ev = doc["event"]
        assert ev["code"] == str(eid) and ev["module"] == "sysmon"
        assert ev["action"] == CATEGORIES[eid][2]
        assert ev["type"] == list(CATEGORIES[eid][1])
        assert doc["winlog"]["event_data"] == d  # the original fields, all of them
        assert doc["host"]["name"] == e.computer
        assert doc["host"]["os"]["type"] == ("linux" if linux else "windows")
        if "UtcTime" in d:
            assert doc["@timestamp"] == d["UtcTime"].replace(" ", "T") + "Z"
        proc = doc.get("process", {})
        image = d.get("SourceImage") if eid in (8, 10) else d.get("Image")
        if image not in (None, "", "-"):
            assert proc["executable"] == image
            assert proc["name"] == image.rsplit("/" if linux else "\\", 1)[-1]
        pid = d.get("SourceProcessId") if eid in (8, 10) else d.get("ProcessId")
        if pid and pid.isdigit():
            assert proc["pid"] == int(pid)
        if d.get("CommandLine") not in (None, "", "-") and eid not in (8, 10):
            argv = proc["args"]
            if linux:
                assert " ".join(argv) == d["CommandLine"]
            assert proc["args_count"] == len(argv)
        if eid == 1 and d.get("ParentImage") not in (None, "", "-"):
            assert proc["parent"]["executable"] == d["ParentImage"]
        if eid == 3:
            if d.get("DestinationIp", "-") != "-":
                assert ipaddress.ip_address(doc["destination"]["ip"]) == \
                    ipaddress.ip_address(d["DestinationIp"])
            if d.get("DestinationPort", "").isdigit():
                assert doc["destination"]["port"] == int(d["DestinationPort"])
            if d.get("Protocol", "-") != "-":
                assert doc["network"]["transport"] == d["Protocol"].lower()
        if eid == 22 and d.get("QueryName", "-") != "-":
            assert doc["dns"]["question"]["name"] == d["QueryName"]
        if eid in (11, 23, 26) and d.get("TargetFilename", "-") != "-":
            assert doc["file"]["path"] == d["TargetFilename"]
        if eid in (12, 13, 14) and d.get("TargetObject", "-") != "-":
            assert doc["registry"]["path"] == d["TargetObject"]
        if d.get("User", "-") != "-":
            assert doc["user"]["name"] == (d["User"] if linux else d["User"].split("\\")[-1])
        if d.get("RuleName", "-") not in ("-", ""):
            assert doc["rule"]["name"] == d["RuleName"]


# ---- exact documents for hand-made events --------------------------------------------------------

def _win(eid: int, data: dict) -> Event:
    return Event(eid, data, version=5, level=4, task=eid, opcode=0, record_id=42,
                 time_created="2024-05-06T07:08:09.123456700Z", process_id=3192, thread_id=3288,
                 computer="ws01.corp.example", user_id="S-1-5-18",
                 keywords="0x8000000000000000", channel="Microsoft-Windows-Sysmon/Operational")


def _linux(eid: int, data: dict) -> Event:
    return Event(eid, data, provider=LINUX_PROVIDER,
                 provider_guid="{ff032593-a8d3-4f13-b0d6-01fc615a0f97}", version=5, level=4,
                 task=eid, opcode=0, record_id=7, time_created="2024-05-06T07:08:09.000000000Z",
                 process_id=1234, thread_id=1234, computer="web01",
                 channel="Linux-Sysmon/Operational", user_id="0")


def test_windows_process_create_document():
    e = _win(1, {
        "RuleName": "technique_id=T1059,technique_name=Command-Line Interface",
        "UtcTime": "2024-05-06 07:08:09.120", "ProcessGuid": "{aaaa-1}", "ProcessId": "4242",
        "Image": "C:\\Windows\\System32\\cmd.exe", "FileVersion": "10.0", "Description": "-",
        "Product": "Microsoft Windows", "Company": "Microsoft Corporation",
        "OriginalFileName": "Cmd.Exe",
        "CommandLine": 'cmd.exe /c "echo a b" C:\\x\\\\"y z"',
        "CurrentDirectory": "C:\\Users\\bob\\", "User": "CORP\\bob",
        "LogonGuid": "{00000000-0000-0000-0000-000000000000}", "LogonId": "0x3e7",
        "Hashes": "SHA1=ABCDEF,MD5=00000000000000000000000000000000,IMPHASH=1234",
        "ParentProcessGuid": "{aaaa-0}", "ParentProcessId": "100",
        "ParentImage": "C:\\Windows\\explorer.exe", "ParentCommandLine": "explorer.exe"})
    doc = event_to_ecs(e)
    assert doc["@timestamp"] == "2024-05-06T07:08:09.120Z"
    assert doc["event"] == {"kind": "event", "code": "1", "module": "sysmon",
                            "provider": "Microsoft-Windows-Sysmon", "category": ["process"],
                            "type": ["start"], "action": "Process creation",
                            "created": "2024-05-06T07:08:09.123456700Z"}
    assert doc["process"] == {
        "entity_id": "{aaaa-1}", "pid": 4242, "executable": "C:\\Windows\\System32\\cmd.exe",
        "name": "cmd.exe", "command_line": 'cmd.exe /c "echo a b" C:\\x\\\\"y z"',
        "args": ["cmd.exe", "/c", "echo a b", "C:\\x\\y z"], "args_count": 4,
        "working_directory": "C:\\Users\\bob\\",
        "parent": {"entity_id": "{aaaa-0}", "pid": 100, "executable": "C:\\Windows\\explorer.exe",
                   "name": "explorer.exe", "command_line": "explorer.exe",
                   "args": ["explorer.exe"], "args_count": 1},
        "pe": {"original_file_name": "Cmd.Exe", "company": "Microsoft Corporation",
               "file_version": "10.0", "product": "Microsoft Windows", "imphash": "1234"},
        "hash": {"sha1": "abcdef"}}
    assert doc["user"] == {"domain": "CORP", "name": "bob"}
    assert doc["rule"] == {"name": "technique_id=T1059,technique_name=Command-Line Interface"}
    assert doc["host"] == {"os": {"type": "windows"}, "name": "ws01.corp.example",
                           "hostname": "ws01"}
    assert doc["related"] == {"hash": ["1234", "abcdef"], "user": ["bob"]}
    assert doc["winlog"]["event_data"] == e.data
    assert doc["winlog"]["record_id"] == "42" and doc["winlog"]["process"] == {
        "pid": 3192, "thread": {"id": 3288}}
    assert check_document(doc) == []


def test_linux_process_create_uses_the_argv_and_posix_names():
    e = _linux(1, {
        "RuleName": "-", "UtcTime": "2024-05-06 07:08:09.000", "ProcessGuid": "{x}",
        "ProcessId": "555", "Image": "/usr/bin/python3.11", "FileVersion": "-",
        "Description": "-", "Product": "-", "Company": "-", "OriginalFileName": "-",
        "CommandLine": 'python3 -c print("a\\\\b")  "quoted"',
        "CurrentDirectory": "/root", "User": "root", "LogonGuid": "{y}", "LogonId": "0",
        "TerminalSessionId": "3", "IntegrityLevel": "no level", "Hashes": "-",
        "ParentProcessGuid": "{z}", "ParentProcessId": "1", "ParentImage": "/usr/bin/bash",
        "ParentCommandLine": "-bash", "ParentUser": "root"})
    doc = event_to_ecs(e)
    p = doc["process"]
    assert p["name"] == "python3.11"
    # Sysmon for Linux joins argv with single spaces; the split gives it back, the empty
    # argument and the quotes included (a Windows split would eat the quotes and backslashes)
    assert p["args"] == ["python3", "-c", 'print("a\\\\b")', "", '"quoted"']
    assert p["parent"]["name"] == "bash" and p["parent"]["args"] == ["-bash"]
    assert "pe" not in p and "hash" not in p
    assert doc["user"] == {"name": "root"}
    assert doc["host"]["os"]["type"] == "linux"
    assert "rule" not in doc
    assert check_document(doc) == []


def test_network_dns_file_registry_and_error_documents():
    net = event_to_ecs(_linux(3, {
        "RuleName": "-", "UtcTime": "2024-05-06 07:08:09.000", "ProcessGuid": "{x}",
        "ProcessId": "9", "Image": "/usr/bin/curl", "User": "bob", "Protocol": "tcp",
        "Initiated": "true", "SourceIsIpv6": "false", "SourceIp": "10.0.0.5",
        "SourceHostname": "-", "SourcePort": "50000", "SourcePortName": "-",
        "DestinationIsIpv6": "false", "DestinationIp": "93.184.216.34",
        "DestinationHostname": "-", "DestinationPort": "443", "DestinationPortName": "-"}))
    assert net["source"] == {"ip": "10.0.0.5", "port": 50000}
    assert net["destination"] == {"ip": "93.184.216.34", "port": 443}
    assert net["network"] == {"transport": "tcp", "type": "ipv4", "direction": "egress"}
    assert net["related"]["ip"] == ["10.0.0.5", "93.184.216.34"]
    bad = event_to_ecs(_linux(3, {"SourceIp": "-", "SourcePort": "x", "DestinationIp": "nope"}))
    assert "source" not in bad and "destination" not in bad  # unknown stays in winlog only
    assert bad["winlog"]["event_data"]["DestinationIp"] == "nope"

    dns = event_to_ecs(_win(22, {
        "RuleName": "-", "UtcTime": "2024-05-06 07:08:09.000", "ProcessGuid": "{x}",
        "ProcessId": "9", "QueryName": "example.com", "QueryStatus": "0",
        "QueryResults": "type:  5 edge.example.net;::ffff:93.184.216.34;2606:2800::1;",
        "Image": "C:\\b.exe"}))
    assert dns["dns"] == {"question": {"name": "example.com"},
                          "resolved_ip": ["93.184.216.34", "2606:2800::1"]}
    assert dns["event"]["category"] == ["network"]

    f = event_to_ecs(_win(11, {"TargetFilename": "C:\\Users\\bob\\Desktop\\Evil.PS1",
                               "Image": "C:\\x.exe"}))
    assert f["file"] == {"path": "C:\\Users\\bob\\Desktop\\Evil.PS1", "name": "Evil.PS1",
                         "directory": "C:\\Users\\bob\\Desktop", "extension": "ps1"}
    lf = event_to_ecs(_linux(23, {"TargetFilename": "/tmp/.x/payload", "Image": "/bin/rm",
                                  "Hashes": "SHA256=ABC"}))
    assert lf["file"] == {"path": "/tmp/.x/payload", "name": "payload", "directory": "/tmp/.x",
                          "hash": {"sha256": "abc"}}

    r = event_to_ecs(_win(13, {"EventType": "SetValue",
                               "TargetObject": "HKLM\\SOFTWARE\\Microsoft\\Run\\evil",
                               "Details": "C:\\evil.exe", "Image": "C:\\x.exe"}))
    assert r["registry"] == {"path": "HKLM\\SOFTWARE\\Microsoft\\Run\\evil", "hive": "HKLM",
                             "value": "evil", "key": "SOFTWARE\\Microsoft\\Run",
                             "data": {"strings": ["C:\\evil.exe"]}}
    assert r["event"]["category"] == ["configuration", "registry"]

    err = event_to_ecs(_win(255, {"UtcTime": "2024-05-06 07:08:09.000", "ID": "Output",
                                  "Description": "3 events could not be written"}))
    assert err["error"] == {"code": "Output", "message": "3 events could not be written"}
    assert err["event"]["outcome"] == "failure"
    img = event_to_ecs(_win(7, {"ImageLoaded": "C:\\a\\b.dll", "Signed": "true",
                                "Signature": "Microsoft Windows", "SignatureStatus": "Valid",
                                "Hashes": "SHA256=AA,IMPHASH=BB", "Image": "C:\\x.exe"}))
    assert img["file"]["code_signature"] == {"exists": True, "subject_name": "Microsoft Windows",
                                             "status": "Valid"}
    assert img["file"]["hash"] == {"sha256": "aa"} and img["file"]["pe"] == {"imphash": "bb"}
    for doc in (net, bad, dns, f, lf, r, err, img):
        assert check_document(doc) == []


def test_alert_document():
    from sysmonx.detection.alerts import SIGMA_ALERT_EVENT_ID
    e = _win(SIGMA_ALERT_EVENT_ID, {"RuleId": "5b4f8a2e-0000", "RuleTitle": "Mimikatz",
                                    "RuleLevel": "high", "Tags": "attack.t1003,attack.s0002"})
    doc = event_to_ecs(e)
    assert doc["event"]["kind"] == "alert"
    assert doc["rule"] == {"name": "Mimikatz", "id": "5b4f8a2e-0000"}
    assert doc["tags"] == ["attack.t1003", "attack.s0002"]
    assert check_document(doc) == []


def test_windows_command_line_split_rules():
    assert windows_split_command_line(r'a\\\"b "c d" e\\f "g""h"') == ['a\\"b', "c d", "e\\\\f",
                                                                        'g"h']
    assert windows_split_command_line("  ") == []


def test_writer_lines_and_hostile_values(tmp_path):
    e = _win(1, {"Image": "C:\\a.exe", "CommandLine": "x\ny\u0085\"}", "Evil\n": "\x1b[31m"})
    out = tmp_path / "o.ecs"
    with writer_class("ecs").open(str(out)) as w:
        w.write(e)
        w.write(_win(1, {"Surrogate": "a\ud800b"}))
    raw = out.read_bytes()
    assert raw.count(b"\n") == 2 and b"\x1b" not in raw and b"\xc2\x85" not in raw
    import json
    docs = [json.loads(line) for line in raw.splitlines()]  # orjson refuses lone surrogates
    assert docs[0]["winlog"]["event_data"] == e.data
    assert docs[1]["winlog"]["event_data"]["Surrogate"] == "a\ud800b"
    assert ecs_line(e) == raw.splitlines()[0]
