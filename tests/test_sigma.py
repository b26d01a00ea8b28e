"""Sigma detection: value modifiers, condition grammar, log sources, fields, loading, alerts.

Every modifier is tested with exact values through a whole rule (pySigma parses it, the matcher
compiles it), as the Sigma specification's modifiers appendix defines it.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import tarfile
import textwrap

import pytest

from sysmonx.detection import (
    ALERT_PROVIDER,
    SIGMA_ALERT_EVENT_ID,
    DetectionOptions,
    DetectionStage,
    load_rules,
    load_rules_text,
)
from sysmonx.detection.fields import split_hashes
from sysmonx.schema import CURRENT
from sysmonx.detection.logsource import LogsourceError, resolve_logsource
from sysmonx.detection.matcher import regex_literals
from sysmonx.event import LINUX_CHANNEL, LINUX_PROVIDER, Event
from sysmonx.sinks.xml_windows import render_windows_xml

PROC = "product: windows\n    category: process_creation"


def stage_for(detection: str, logsource: str = PROC, extra: str = "",
              placeholders=None) -> DetectionStage:
    """A stage with one rule (id r1) of the given detection section."""
    text = (f"title: t\nid: 11111111-1111-1111-1111-111111111111\nlevel: high\n"
            f"status: test\ntags:\n    - attack.execution\n    - attack.t1059\n"
            f"logsource:\n    {logsource}\ndetection:\n"
            + textwrap.indent(textwrap.dedent(detection).strip("\n"), "    ") + "\n" + extra)
    st = DetectionStage(load_rules_text(text), DetectionOptions(placeholders=placeholders))
    rejected = [str(i) for i in st.issues if i.rejected]
    assert not rejected, rejected
    return st


def ev(eid: int = 1, provider: str = "Microsoft-Windows-Sysmon", rid: int = 1, **data) -> Event:
    return Event(eid, dict(data), provider=provider, record_id=rid,
                 time_created="2024-05-01T10:00:00.000000000Z", computer="host1")


def fires(st: DetectionStage, event: Event) -> bool:
    return any(a.kind == "detection" for a in st.process(event))


def check(detection: str, yes: list, no: list, logsource: str = PROC, placeholders=None,
          eid: int = 1):
    st = stage_for(detection, logsource, placeholders=placeholders)
    for data in yes:
        assert fires(st, ev(**{"eid": eid, **data})), f"should match: {data}"
    for data in no:
        assert not fires(st, ev(**{"eid": eid, **data})), f"should not match: {data}"


check_ = check


# -- strings ------------------------------------------------------------------------------------

def test_equality_is_case_insensitive_and_whole_value():
    check("sel:\n    Image: 'C:\\Windows\\System32\\cmd.exe'\ncondition: sel",
          yes=[{"Image": "c:\\windows\\system32\\CMD.EXE"}],
          no=[{"Image": "c:\\windows\\system32\\cmd.exe "}, {"Image": "x c:\\windows\\system32\\cmd.exe"},
              {"CommandLine": "c:\\windows\\system32\\cmd.exe"}, {}])


def test_contains_startswith_endswith():
    check("sel:\n    CommandLine|contains: ' -EncodedCommand '\ncondition: sel",
          yes=[{"CommandLine": "powershell -encodedcommand AAA"}],
          no=[{"CommandLine": "powershell -encodedcommandAAA"}])
    check("sel:\n    Image|startswith: 'C:\\Users\\'\ncondition: sel",
          yes=[{"Image": "c:\\users\\bob\\a.exe"}], no=[{"Image": "d:\\c:\\users\\a.exe"}])
    check("sel:\n    Image|endswith: '\\rundll32.exe'\ncondition: sel",
          yes=[{"Image": "C:\\Windows\\System32\\RUNDLL32.EXE"}],
          no=[{"Image": "rundll32.exe"}, {"Image": "C:\\rundll32.exe.bak"}])


def test_wildcards_and_escapes():
    # In Sigma a backslash before a wildcard escapes it: ``\\*`` is a backslash and a wildcard.
    check("sel:\n    Image: 'C:\\\\*\\cmd.exe'\ncondition: sel",
          yes=[{"Image": "C:\\Windows\\cmd.exe"}, {"Image": "c:\\a\\b\\CMD.exe"}],
          no=[{"Image": "D:\\Windows\\cmd.exe"}, {"Image": "C:\\cmd.exe"}])
    check("sel:\n    CommandLine: 'a?c'\ncondition: sel",
          yes=[{"CommandLine": "abc"}, {"CommandLine": "A-C"}],
          no=[{"CommandLine": "ac"}, {"CommandLine": "abbc"}])
    check("sel:\n    CommandLine: 'a\\*b'\ncondition: sel",
          yes=[{"CommandLine": "a*b"}], no=[{"CommandLine": "axb"}])
    check("sel:\n    CommandLine|contains: 'net*|*find'\ncondition: sel",
          yes=[{"CommandLine": "cmd /c net user | findstr x"}],
          no=[{"CommandLine": "cmd /c findstr net"}, {"CommandLine": "net user"}])
    check("sel:\n    CommandLine: '*'\ncondition: sel",
          yes=[{"CommandLine": ""}, {"CommandLine": "x"}], no=[{}])


def test_unicode_case_folding():
    check("sel:\n    User|contains: 'ÉLODIE'\ncondition: sel",
          yes=[{"User": "corp\\élodie"}], no=[{"User": "corp\\elodie"}])


def test_cased():
    check("sel:\n    CommandLine|cased: 'CMD.exe'\ncondition: sel",
          yes=[{"CommandLine": "CMD.exe"}], no=[{"CommandLine": "cmd.exe"}])
    check("sel:\n    CommandLine|contains|cased: 'Invoke-'\ncondition: sel",
          yes=[{"CommandLine": "x Invoke-Mimikatz"}], no=[{"CommandLine": "x invoke-mimikatz"}])


def test_all_modifier():
    check("sel:\n    CommandLine|contains|all:\n        - ' -a '\n        - ' -b '\ncondition: sel",
          yes=[{"CommandLine": "x -b  -a y"}], no=[{"CommandLine": "x -a y"}])


def test_list_values_are_or_and_maps_are_and():
    check("sel:\n    Image|endswith:\n        - '\\a.exe'\n        - '\\b.exe'\n"
          "    CommandLine|contains: 'evil'\ncondition: sel",
          yes=[{"Image": "c:\\b.exe", "CommandLine": "evil"}],
          no=[{"Image": "c:\\c.exe", "CommandLine": "evil"}, {"Image": "c:\\a.exe"}])
    check("sel:\n    - Image|endswith: '\\a.exe'\n    - CommandLine|contains: 'evil'\n"
          "condition: sel",
          yes=[{"Image": "c:\\a.exe"}, {"CommandLine": "so evil"}], no=[{"Image": "c:\\b.exe"}])


def test_windash():
    check("sel:\n    CommandLine|windash|contains: ' -enc '\ncondition: sel",
          yes=[{"CommandLine": "ps -enc x"}, {"CommandLine": "ps /enc x"},
               {"CommandLine": "ps \u2013enc x"}, {"CommandLine": "ps \u2014enc x"},
               {"CommandLine": "ps \u2015enc x"}],
          no=[{"CommandLine": "ps enc x"}, {"CommandLine": "ps +enc x"}])


# -- encodings ----------------------------------------------------------------------------------

def test_base64():
    check("sel:\n    CommandLine|base64: 'abc'\ncondition: sel",
          yes=[{"CommandLine": "YWJj"}], no=[{"CommandLine": "abc"}, {"CommandLine": "xYWJj"}])
    check("sel:\n    CommandLine|base64|contains: 'abc'\ncondition: sel",
          yes=[{"CommandLine": "-e YWJj"}], no=[{"CommandLine": "-e abc"}])


@pytest.mark.parametrize("prefix", ["", "x", "xy", "xyz"])
def test_base64offset_finds_every_alignment(prefix):
    encoded = base64.b64encode((prefix + "http://evil").encode()).decode()
    check("sel:\n    CommandLine|base64offset|contains: 'http://'\ncondition: sel",
          yes=[{"CommandLine": f"powershell -e {encoded}"}],
          no=[{"CommandLine": "powershell -e " + base64.b64encode(b"ftp://evil").decode()}])


def test_base64offset_exact_strings():
    # The three encodings pySigma derives (and the matcher searches) for 'http://'.
    st = stage_for("sel:\n    CommandLine|base64offset|contains: 'http://'\ncondition: sel")
    for s in ("aHR0cDovL", "h0dHA6Ly", "odHRwOi8v"):
        assert fires(st, ev(CommandLine=f"x{s}x"))
    assert not fires(st, ev(CommandLine="aHR0cDov"))


def test_utf16_variants():
    wide = "cmd".encode("utf-16le")
    for mod in ("wide", "utf16le"):
        check(f"sel:\n    CommandLine|{mod}|base64offset|contains: 'cmd'\ncondition: sel",
              yes=[{"CommandLine": base64.b64encode(wide).decode()},
                   {"CommandLine": base64.b64encode(b"x" + wide).decode()}],
              no=[{"CommandLine": base64.b64encode(b"cmd").decode()}])
    be = "cmd".encode("utf-16be")
    check("sel:\n    CommandLine|utf16be|base64|contains: 'cmd'\ncondition: sel",
          yes=[{"CommandLine": "x" + base64.b64encode(be).decode()}],
          no=[{"CommandLine": base64.b64encode(wide).decode()}])
    bom = b"\xff\xfe" + wide
    check("sel:\n    CommandLine|utf16|base64|contains: 'cmd'\ncondition: sel",
          yes=[{"CommandLine": base64.b64encode(bom).decode()}],
          no=[{"CommandLine": base64.b64encode(wide).decode()}])


# -- regular expressions ------------------------------------------------------------------------

def test_re_is_case_sensitive_unanchored_search():
    check("sel:\n    CommandLine|re: 'Invoke-[A-Z][a-z]+'\ncondition: sel",
          yes=[{"CommandLine": "x Invoke-Mimikatz y"}],
          no=[{"CommandLine": "x invoke-mimikatz y"}, {"CommandLine": "Invoke-mimikatz"}])


def test_re_flags():
    check("sel:\n    CommandLine|re|i: 'invoke-[a-z]+'\ncondition: sel",
          yes=[{"CommandLine": "INVOKE-X"}], no=[{"CommandLine": "invoke-1"}])
    check("sel:\n    CommandLine|re|m: '^abc$'\ncondition: sel",
          yes=[{"CommandLine": "x\nabc\ny"}], no=[{"CommandLine": "xabc"}])
    check("sel:\n    CommandLine|re: '^abc$'\ncondition: sel",
          yes=[{"CommandLine": "abc"}], no=[{"CommandLine": "x\nabc\ny"}])
    check("sel:\n    CommandLine|re|s: 'a.b'\ncondition: sel",
          yes=[{"CommandLine": "a\nb"}], no=[{"CommandLine": "a\n\nb"}])
    check("sel:\n    CommandLine|re: 'a.b'\ncondition: sel",
          yes=[{"CommandLine": "axb"}], no=[{"CommandLine": "a\nb"}])


def test_re_is_linear_time():
    # Catastrophic for a backtracking engine; RE2 answers at once.
    st = stage_for("sel:\n    CommandLine|re: '(a+)+$'\ncondition: sel")
    assert fires(st, ev(CommandLine="a" * 5000))
    assert not fires(st, ev(CommandLine="a" * 5000 + "!"))


def test_regex_rejected_by_re2_is_reported():
    text = ("title: t\nid: 11111111-1111-1111-1111-111111111112\nlogsource:\n    " + PROC +
            "\ndetection:\n    sel:\n        CommandLine|re: '(?<=a)b'\n    condition: sel\n")
    st = DetectionStage(load_rules_text(text))
    assert not st.matcher.compiled
    assert st.rejected and st.rejected[0].rule_id == "11111111-1111-1111-1111-111111111112"


def test_regex_literals_prefilter():
    assert set(regex_literals(r"https?://0[0-9]{3,11}")) == {("://0",), ("http",)}
    assert regex_literals(r"(?:foo|barbaz)\d") == (("foo", "barbaz"),)
    assert regex_literals(r"[a-z]+") == ()
    assert regex_literals(r"\Qabc\E") == ()  # RE2-only syntax: no prefilter, still evaluated


# -- numbers, cidr, exists, null, fieldref, expand, time parts -----------------------------------

def test_numeric_comparisons():
    ns = "product: windows\n    category: network_connection"
    check = functools.partial(check_, eid=3)
    check("sel:\n    DestinationPort|gt: 1024\ncondition: sel", logsource=ns,
          yes=[{"DestinationPort": "1025"}, {"DestinationPort": "0x401"}],
          no=[{"DestinationPort": "1024"}, {"DestinationPort": "x"}, {}])
    check("sel:\n    DestinationPort|gte: 1024\ncondition: sel", logsource=ns,
          yes=[{"DestinationPort": "1024"}], no=[{"DestinationPort": "1023"}])
    check("sel:\n    DestinationPort|lt: 1024\ncondition: sel", logsource=ns,
          yes=[{"DestinationPort": "80"}], no=[{"DestinationPort": "1024"}])
    check("sel:\n    DestinationPort|lte: 1024\ncondition: sel", logsource=ns,
          yes=[{"DestinationPort": "1024"}], no=[{"DestinationPort": "1025"}])
    check("sel:\n    DestinationPort: 4444\ncondition: sel", logsource=ns,
          yes=[{"DestinationPort": "4444"}], no=[{"DestinationPort": "44444"}])


def test_number_matches_hex_rendering():
    check("sel:\n    GrantedAccess: 0x1410\ncondition: sel",
          logsource="product: windows\n    category: process_access", eid=10,
          yes=[{"GrantedAccess": "0x1410"}, {"GrantedAccess": "5136"}],
          no=[{"GrantedAccess": "0x1411"}])


def test_boolean_value():
    check("sel:\n    Initiated: true\ncondition: sel",
          logsource="product: windows\n    category: network_connection", eid=3,
          yes=[{"Initiated": "true"}, {"Initiated": "True"}], no=[{"Initiated": "false"}])


def test_cidr():
    ns = "product: windows\n    category: network_connection"
    check = functools.partial(check_, eid=3)
    check("sel:\n    DestinationIp|cidr: '10.0.0.0/8'\ncondition: sel", logsource=ns,
          yes=[{"DestinationIp": "10.1.2.3"}, {"DestinationIp": "10.255.255.255"}],
          no=[{"DestinationIp": "11.0.0.1"}, {"DestinationIp": "100.0.0.1"},
              {"DestinationIp": "::ffff:10.0.0.1x"}])
    check("sel:\n    DestinationIp|cidr: '172.16.0.0/12'\ncondition: sel", logsource=ns,
          yes=[{"DestinationIp": "172.31.0.1"}], no=[{"DestinationIp": "172.32.0.1"}])
    check("sel:\n    DestinationIp|cidr: 'fe80::/10'\ncondition: sel", logsource=ns,
          yes=[{"DestinationIp": "fe80::1"}, {"DestinationIp": "FEBF::1"}],
          no=[{"DestinationIp": "fec0::1"}, {"DestinationIp": "10.0.0.1"}])


def test_exists_and_null():
    check("sel:\n    ParentUser|exists: true\ncondition: sel",
          yes=[{"ParentUser": ""}, {"ParentUser": "x"}], no=[{}])
    check("sel:\n    ParentUser|exists: false\ncondition: sel",
          yes=[{}], no=[{"ParentUser": ""}])
    check("sel:\n    Image: 'a'\nempty:\n    ParentImage: null\ncondition: sel and empty",
          yes=[{"Image": "a"}, {"Image": "a", "ParentImage": ""}],
          no=[{"Image": "a", "ParentImage": "b"}])
    check("sel:\n    Image: 'a'\nempty:\n    ParentImage: null\ncondition: sel and not empty",
          yes=[{"Image": "a", "ParentImage": "b"}], no=[{"Image": "a"}])


def test_empty_string_value():
    check("sel:\n    CommandLine: ''\ncondition: sel",
          yes=[{"CommandLine": ""}], no=[{"CommandLine": " "}, {}])


def test_fieldref():
    check("sel:\n    Image|fieldref: ParentImage\ncondition: sel",
          yes=[{"Image": "C:\\a.exe", "ParentImage": "c:\\A.EXE"}],
          no=[{"Image": "C:\\a.exe", "ParentImage": "C:\\b.exe"}, {"Image": "C:\\a.exe"}])
    check("sel:\n    CommandLine|fieldref|contains: Image\ncondition: sel",
          yes=[{"CommandLine": "\"C:\\a.exe\" -x", "Image": "c:\\a.exe"}],
          no=[{"CommandLine": "b.exe -x", "Image": "c:\\a.exe"}])
    check("sel:\n    CommandLine|fieldref|startswith: Image\ncondition: sel",
          yes=[{"CommandLine": "c:\\a.exe -x", "Image": "c:\\a.exe"}],
          no=[{"CommandLine": "x c:\\a.exe", "Image": "c:\\a.exe"}])
    check("sel:\n    CommandLine|fieldref|endswith: Image\ncondition: sel",
          yes=[{"CommandLine": "x c:\\a.exe", "Image": "c:\\a.exe"}],
          no=[{"CommandLine": "c:\\a.exe x", "Image": "c:\\a.exe"}])


def test_neq_modifier():
    check("sel:\n    Image|endswith: '\\a.exe'\n    User|neq: 'root'\ncondition: sel",
          yes=[{"Image": "c:\\a.exe", "User": "bob"}],
          no=[{"Image": "c:\\a.exe", "User": "ROOT"}])


def test_expand_with_placeholders():
    ph = {"Admins": ["adm_*", "root"]}
    check("sel:\n    User|expand: '%Admins%'\ncondition: sel", placeholders=ph,
          yes=[{"User": "ADM_bob"}, {"User": "root"}], no=[{"User": "bob"}, {"User": "xroot"}])
    check("sel:\n    User|expand: 'CORP\\%Admins%'\ncondition: sel", placeholders=ph,
          yes=[{"User": "corp\\root"}], no=[{"User": "root"}])


def test_expand_without_value_is_rejected_with_reason():
    text = ("title: t\nid: 11111111-1111-1111-1111-111111111113\nlogsource:\n    " + PROC +
            "\ndetection:\n    sel:\n        User|expand: '%Admins%'\n    condition: sel\n")
    st = DetectionStage(load_rules_text(text))
    assert [i.code for i in st.rejected] == ["placeholder"]
    assert "%Admins%" in st.rejected[0].message
    # Without the expand modifier the percent signs are plain characters.
    check("sel:\n    User: '%Admins%'\ncondition: sel", yes=[{"User": "%admins%"}],
          no=[{"User": "root"}])


def test_time_part_modifiers():
    check("sel:\n    UtcTime|hour: 13\ncondition: sel",
          yes=[{"UtcTime": "2024-05-01 13:59:00.123"}], no=[{"UtcTime": "2024-05-01 14:00:00.000"}])
    check("sel:\n    UtcTime|minute|gte: 30\ncondition: sel",
          yes=[{"UtcTime": "2024-05-01 13:45:00.000"}], no=[{"UtcTime": "2024-05-01 13:29:59.999"}])
    check("sel:\n    UtcTime|year: 2024\n    UtcTime|month: 5\n    UtcTime|day: 1\n"
          "condition: sel", yes=[{"UtcTime": "2024-05-01 00:00:00.000"}],
          no=[{"UtcTime": "2023-05-01 00:00:00.000"}])
    check("sel:\n    UtcTime|week: 18\ncondition: sel",
          yes=[{"UtcTime": "2024-05-01 00:00:00.000"}], no=[{"UtcTime": "2024-05-08 00:00:00.000"}])


# -- keywords and conditions --------------------------------------------------------------------

def test_keywords_search_every_value():
    check("keywords:\n    - 'mimikatz'\n    - 'sekurlsa::'\ncondition: keywords",
          yes=[{"CommandLine": "x MIMIKATZ.exe"}, {"ParentCommandLine": "sekurlsa::logonpasswords"}],
          no=[{"CommandLine": "mimi katz"}])
    check("keywords:\n    '|all':\n        - 'OabVirtualDirectory'\n        - ' -ExternalUrl '\n"
          "condition: keywords",
          yes=[{"CommandLine": "Set-OabVirtualDirectory -ExternalUrl http://x"}],
          no=[{"CommandLine": "Set-OabVirtualDirectory"}])


def test_condition_grammar():
    base = ("sel_a:\n    CommandLine|contains: 'aaa'\nsel_b:\n    CommandLine|contains: 'bbb'\n"
            "filter_1:\n    User: 'sys'\nfilter_2:\n    User: 'svc'\n")
    check(base + "condition: 1 of sel_* and not 1 of filter_*",
          yes=[{"CommandLine": "bbb"}, {"CommandLine": "aaa", "User": "bob"}],
          no=[{"CommandLine": "aaa", "User": "svc"}, {"CommandLine": "ccc"}])
    check(base + "condition: all of sel_*",
          yes=[{"CommandLine": "aaa bbb"}], no=[{"CommandLine": "aaa"}])
    check(base + "condition: all of them",
          yes=[], no=[{"CommandLine": "aaa bbb", "User": "sys"}])
    check(base + "condition: 1 of them",
          yes=[{"User": "svc"}, {"CommandLine": "aaa"}], no=[{"User": "x"}])
    check(base + "condition: sel_a and not (filter_1 or filter_2)",
          yes=[{"CommandLine": "aaa", "User": "x"}],
          no=[{"CommandLine": "aaa", "User": "sys"}, {"CommandLine": "aaa", "User": "svc"}])
    check(base + "condition: not sel_a",
          yes=[{"CommandLine": "bbb"}, {}], no=[{"CommandLine": "aaa"}])
    check(base + "condition:\n    - sel_a and filter_1\n    - sel_b and filter_2",
          yes=[{"CommandLine": "aaa", "User": "sys"}, {"CommandLine": "bbb", "User": "svc"}],
          no=[{"CommandLine": "aaa", "User": "svc"}])


def test_negative_only_rule_is_evaluated_everywhere():
    st = stage_for("filter:\n    Image|contains: '\\'\ncondition: not filter")
    assert st.matcher.unindexed == 1
    assert fires(st, ev(Image="System"))
    assert fires(st, ev())
    assert not fires(st, ev(Image="C:\\x.exe"))


# -- log sources and fields ---------------------------------------------------------------------

def test_logsource_mapping_table():
    t = resolve_logsource("windows", "process_creation", None)
    assert t.groups == (("win", 1),) and t.event_types is None
    assert resolve_logsource("linux", "process_creation", None).groups == (("lnx", 1),)
    assert resolve_logsource(None, "network_connection", None).groups == (("win", 3), ("lnx", 3))
    expect = {"process_termination": (5,), "driver_load": (6,), "image_load": (7,),
              "create_remote_thread": (8,), "raw_access_thread": (9,), "process_access": (10,),
              "file_event": (11,), "registry_event": (12, 13, 14), "create_stream_hash": (15,),
              "pipe_created": (17, 18), "wmi_event": (19, 20, 21), "dns_query": (22,),
              "file_delete": (23, 26), "clipboard_capture": (24,), "process_tampering": (25,),
              "file_block_executable": (27,), "file_block_shredding": (28,),
              "file_executable_detected": (29,), "sysmon_status": (4, 16),
              "sysmon_error": (255,), "file_change": (2,)}
    for cat, ids in expect.items():
        assert resolve_logsource("windows", cat, None).groups == tuple(("win", i) for i in ids)
    assert resolve_logsource("windows", "registry_add", None).event_types == ("CreateKey",)
    assert resolve_logsource("windows", "registry_delete", None).event_types == \
        ("DeleteKey", "DeleteValue")
    assert resolve_logsource("windows", "registry_set", None).event_types == ("SetValue",)
    assert resolve_logsource("windows", "registry_rename", None).event_types == ("RenameKey",)
    sysmon = resolve_logsource("windows", None, "sysmon").groups
    extension = {i for i, e in CURRENT.events.items() if e.extension}
    assert {100, 201, 202, 220} <= extension
    assert {g[1] for g in sysmon} == set(range(1, 30)) | {255} | extension
    assert resolve_logsource("windows", None, "security").groups == (("chan", "security", None),)
    for bad in (("windows", "file_access", None), ("windows", "file_rename", None),
                ("linux", None, "auditd"), ("macos", "process_creation", None),
                ("windows", None, None), ("windows", "antivirus", None)):
        with pytest.raises(LogsourceError):
            resolve_logsource(*bad)


def test_sysmon_rule_never_fires_on_other_provider():
    st = stage_for("sel:\n    Image|endswith: '\\cmd.exe'\ncondition: sel")
    assert fires(st, ev(Image="c:\\cmd.exe"))
    assert not fires(st, ev(provider="Microsoft-Windows-Security-Auditing", Image="c:\\cmd.exe"))
    assert not fires(st, ev(eid=4688, provider="Microsoft-Windows-Security-Auditing",
                            Image="c:\\cmd.exe"))
    assert not fires(st, ev(eid=1, provider=LINUX_PROVIDER, Image="c:\\cmd.exe"))
    assert not fires(st, ev(eid=5, Image="c:\\cmd.exe"))


def test_linux_rule_only_on_linux_sysmon():
    st = stage_for("sel:\n    Image|endswith: '/bash'\ncondition: sel",
                   logsource="product: linux\n    category: process_creation")
    linux = Event(1, {"Image": "/usr/bin/bash"}, provider=LINUX_PROVIDER, channel=LINUX_CHANNEL)
    assert fires(st, linux)
    assert not fires(st, ev(Image="/usr/bin/bash"))


def test_registry_event_type_subsets():
    st = stage_for("sel:\n    TargetObject|contains: '\\Run\\'\ncondition: sel",
                   logsource="product: windows\n    category: registry_add")
    assert fires(st, ev(eid=12, EventType="CreateKey", TargetObject="HKLM\\x\\Run\\y"))
    assert not fires(st, ev(eid=12, EventType="DeleteKey", TargetObject="HKLM\\x\\Run\\y"))
    assert not fires(st, ev(eid=13, EventType="SetValue", TargetObject="HKLM\\x\\Run\\y"))
    st = stage_for("sel:\n    TargetObject|contains: '\\Run\\'\ncondition: sel",
                   logsource="product: windows\n    category: registry_delete")
    assert fires(st, ev(eid=12, EventType="DeleteValue", TargetObject="HKLM\\x\\Run\\y"))
    assert not fires(st, ev(eid=12, EventType="CreateKey", TargetObject="HKLM\\x\\Run\\y"))
    st = stage_for("sel:\n    TargetObject|contains: '\\Run\\'\ncondition: sel",
                   logsource="product: windows\n    category: registry_event")
    for eid, et in ((12, "CreateKey"), (13, "SetValue"), (14, "RenameKey")):
        assert fires(st, ev(eid=eid, EventType=et, TargetObject="HKLM\\x\\Run\\y"))


def test_service_sysmon_with_event_id():
    st = stage_for("sel:\n    EventID:\n        - 4\n        - 16\ncondition: sel",
                   logsource="product: windows\n    service: sysmon")
    assert fires(st, ev(eid=4, State="Stopped"))
    assert fires(st, ev(eid=16))
    assert not fires(st, ev(eid=1))


def test_hashes_combined_and_sub_hashes():
    h = "SHA1=AAAA,MD5=BBBB,SHA256=CCCC,IMPHASH=DDDD"
    assert split_hashes(h) == {"SHA1": "AAAA", "MD5": "BBBB", "SHA256": "CCCC", "IMPHASH": "DDDD"}
    check("sel:\n    Hashes|contains: 'IMPHASH=dddd'\ncondition: sel",
          yes=[{"Hashes": h}], no=[{"Hashes": "IMPHASH=DDD"}])
    for name, value in (("Imphash", "dddd"), ("imphash", "DDDD"), ("md5", "bbbb"),
                        ("sha1", "AAAA"), ("sha256", "cccc"), ("SHA256", "CCCC")):
        check(f"sel:\n    {name}: '{value}'\ncondition: sel",
              yes=[{"Hashes": h}], no=[{"Hashes": "SHA1=ZZZZ,MD5=ZZZZ"}, {}])
    # Event 15 calls its combined field Hash.
    check("sel:\n    sha256: 'cccc'\ncondition: sel",
          logsource="product: windows\n    category: create_stream_hash",
          yes=[{"Hash": h}], no=[{"Hash": "MD5=BBBB"}], eid=15)


def test_system_fields():
    check("sel:\n    Provider_Name: 'Microsoft-Windows-Sysmon'\n    Computer: 'HOST1'\n"
          "condition: sel", yes=[{}], no=[])
    st = stage_for("sel:\n    Provider_Name: 'Other'\ncondition: sel")
    assert not fires(st, ev())


def test_channel_rules_see_their_channel_only():
    st = stage_for("sel:\n    EventID: 4625\ncondition: sel",
                   logsource="product: windows\n    service: security")
    sec = Event(4625, {"TargetUserName": "bob"}, provider="Microsoft-Windows-Security-Auditing",
                channel="Security")
    assert fires(st, sec)
    assert not fires(st, Event(4625, {}, provider="X", channel="System"))


# -- loading ------------------------------------------------------------------------------------

RULE = """title: {title}
id: {id}
logsource:
    product: windows
    category: process_creation
detection:
    sel:
        Image|endswith: '\\{title}.exe'
    condition: sel
"""


def test_load_folders_bundles_and_report_every_problem(tmp_path):
    good = RULE.format(title="a", id="00000000-0000-0000-0000-00000000000a")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.yml").write_text(good)
    (tmp_path / "d" / "broken.yml").write_text("title: [unclosed\n")
    (tmp_path / "d" / "badmod.yml").write_text(
        RULE.format(title="b", id="00000000-0000-0000-0000-00000000000b")
        .replace("Image|endswith", "Image|nosuchmod"))
    (tmp_path / "d" / "dup.yml").write_text(good)
    (tmp_path / "d" / "etw.yml").write_text(
        RULE.format(title="c", id="00000000-0000-0000-0000-00000000000c")
        .replace("process_creation", "file_access"))
    (tmp_path / "d" / "corr.yml").write_text(
        "title: c\nid: 00000000-0000-0000-0000-0000000000cc\ncorrelation:\n"
        "    type: event_count\n    rules:\n        - no_such_rule\n    group-by:\n"
        "        - User\n    timespan: 1m\n    condition:\n        gte: 2\n")
    (tmp_path / "d" / "notes.txt").write_text("not a rule")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        data = RULE.format(title="e", id="00000000-0000-0000-0000-00000000000e").encode()
        info = tarfile.TarInfo("rules/windows/e.yml")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    (tmp_path / "bundle.tar.gz").write_bytes(buf.getvalue())
    loaded = load_rules([tmp_path / "d", tmp_path / "bundle.tar.gz"])
    st = DetectionStage(loaded)
    assert sorted(r.id[-1] for r in st.matcher.compiled) == ["a", "e"]
    codes = sorted(i.code for i in st.issues if i.rejected)
    assert codes == ["duplicate", "logsource", "reference", "sigma", "yaml"]
    text = "\n".join(str(i) for i in st.issues)
    assert "broken.yml" in text and "nosuchmod" in text and "file_access" in text
    assert any(str(r.rule.source.path).endswith("bundle.tar.gz!rules/windows/e.yml")
               for r in st.matcher.compiled)
    with pytest.raises(FileNotFoundError):
        load_rules([tmp_path / "missing"])


def test_sigma_filters_are_applied():
    text = RULE.format(title="a", id="00000000-0000-0000-0000-00000000000a") + (
        "---\ntitle: f\nlogsource:\n    product: windows\n    category: process_creation\n"
        "filter:\n    rules:\n        - 00000000-0000-0000-0000-00000000000a\n"
        "    selection:\n        User|startswith: 'adm_'\n    condition: not selection\n")
    st = DetectionStage(load_rules_text(text))
    assert fires(st, ev(Image="c:\\a.exe", User="bob"))
    assert not fires(st, ev(Image="c:\\a.exe", User="adm_bob"))


def test_sigmahq_bundle_load_stats(corpus):
    bundle = corpus / "sigma" / "sigmahq_rules_sysmon_categories.tar.gz"
    st = DetectionStage(load_rules([bundle]))
    rejected = st.rejection_summary()
    # Every rule compiles except those whose log source Sysmon does not record
    # (Microsoft-Windows-Kernel-File ETW: file_access, file_rename).
    assert dict(rejected) == {"logsource": 8}
    assert len(st.matcher.compiled) == 1999
    assert all("Kernel-File" in i.message for i in st.rejected)
    assert st.matcher.unindexed <= 10


# -- alerts -------------------------------------------------------------------------------------

def test_alert_json_and_xml():
    st = stage_for("sel:\n    Image|endswith: '\\cmd.exe'\ncondition: sel")
    (alert,) = st.process(ev(rid=42, Image="c:\\cmd.exe", CommandLine="cmd /c x\nforged",
                             ProcessGuid="{g}"))
    line = alert.to_json()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    d = json.loads(line)
    assert d["rule_id"] == "11111111-1111-1111-1111-111111111111"
    assert d["level"] == "high" and d["status"] == "test" and d["kind"] == "detection"
    assert d["attack"] == {"tactics": ["Execution"], "techniques": ["T1059"]}
    assert d["record_ids"] == [42] and d["event_ids"] == [1]
    assert d["time"] == "2024-05-01T10:00:00.0000000Z"  # SystemTime form
    assert "window_start" not in d and "group" not in d  # a detection: no correlation keys
    assert d["fields"]["Image"] == "c:\\cmd.exe" and d["fields"]["CommandLine"] == "cmd /c x\nforged"
    assert d["computer"] == "host1"
    e = alert.to_event(record_id=7)
    assert e.event_id == SIGMA_ALERT_EVENT_ID == 1000 and e.provider == ALERT_PROVIDER
    assert e.level == 2
    xml = render_windows_xml(e)
    assert "<EventID>1000</EventID>" in xml and "Provider Name='SysmonX'" in xml
    assert "<Data Name='RuleId'>11111111-1111-1111-1111-111111111111</Data>" in xml
    assert "\n" not in xml


def test_hit_counters_and_summary():
    st = stage_for("sel:\n    Image|endswith: '\\cmd.exe'\ncondition: sel")
    for i in range(3):
        st.process(ev(rid=i, Image="c:\\cmd.exe"))
    st.process(ev(rid=9, Image="c:\\x.exe"))
    (row,) = st.summary_rows()
    assert (row.level, row.matches, row.alerts) == ("high", 3, 3)
    assert st.stats.events == 4 and st.stats.alerts == 3
    assert "alerts: 3 (high: 3)" in st.format_summary()


def test_cli_folds_unindexed_rules_into_one_note(tmp_path, capsys):
    """Rules the prefilter cannot index are a cost note, not one warning per rule (a new user
    read five ``[unindexed]`` lines as problems with the rules)."""
    from sysmonx.cli.common import stderr_console, load_detection
    for i in range(4):
        (tmp_path / f"r{i}.yml").write_text(
            f"title: negative {i}\nid: 11111111-1111-1111-1111-11111111111{i}\nstatus: test\n"
            f"logsource:\n    {PROC}\ndetection:\n    filter:\n        Image|contains: 'x{i}'\n"
            "    condition: not filter\n")
    import argparse
    assert load_detection([str(tmp_path)], stderr_console()) is not None
    err = capsys.readouterr().err
    assert "[unindexed]" not in err
    assert ("sigma: load issues (listed with --rule-issues): 4 rules evaluated on every event "
            "of their log source (nothing to prefilter on)") in err
    assert load_detection([str(tmp_path)], stderr_console(),
                          argparse.Namespace(rule_issues=True)) is not None
    err = capsys.readouterr().err
    assert "[unindexed]" not in err
    assert ("sigma: note: 4 rules without a value the prefilter can look for, evaluated on "
            "every event of their log source (negative 0, negative 1, negative 2, ...)") in err


def test_compiled_rules_do_not_keep_their_parsed_detection():
    """The parsed detection trees are only read while compiling (a cached stage never had
    them); the stage drops them (~28 MB for the SigmaHQ bundle) and still matches."""
    st = stage_for("sel:\n    Image|endswith: '\\\\cmd.exe'\ncondition: sel")
    assert st.matcher.compiled[0].rule.detection is None
    assert fires(st, ev(Image="C:\\Windows\\System32\\cmd.exe"))
    assert not fires(st, ev(Image="C:\\x.exe"))
