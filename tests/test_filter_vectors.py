"""The spec's test vectors: TV01-TV45 (decisions), OP1-OP12 (operators), CV1-CV12 (validation).

Source: shared/spec/sysmon-semantics.md section 7. Each vector is written out here in full so a
failure names the vector.
"""

import pytest

from sysmonx.config import ConfigError, parse_config
from sysmonx.filtering import EngineOptions, FilterEngine, make_predicate
from sysmonx.filtering.conditions import fold


def cfg(inner: str, version: str = "4.90"):
    return parse_config(f'<Sysmon schemaversion="{version}"><EventFiltering>{inner}'
                        "</EventFiltering></Sysmon>")


def orgrp(inner: str, name: str = None) -> str:
    n = f' name="{name}"' if name is not None else ""
    return f'<RuleGroup{n} groupRelation="or">{inner}</RuleGroup>'


TV18_CFG = ('<NetworkConnect onmatch="include"><DestinationPort>443</DestinationPort>'
            '<DestinationPort>80</DestinationPort></NetworkConnect>'
            '<NetworkConnect onmatch="exclude"><Image condition="end with">iexplore.exe</Image>'
            '</NetworkConnect>')
TV24_CFG = ('<ProcessCreate onmatch="include"><Rule name="r" groupRelation="and">'
            '<CommandLine condition="begin with">/a</CommandLine>'
            '<CommandLine condition="end with">/z</CommandLine></Rule></ProcessCreate>')
TV26_CFG = orgrp('<ProcessCreate onmatch="include">'
                 '<Image condition="contains any">chrome.exe;firefox.exe</Image>'
                 '<Rule name="ps by cmd" groupRelation="and">'
                 '<Image condition="end with">powershell.exe</Image>'
                 '<ParentImage condition="end with">cmd.exe</ParentImage></Rule></ProcessCreate>',
                 "grp")
TV28_CFG = TV26_CFG.replace('<Rule name="ps by cmd" ', "<Rule ")
TV40_CFG = ('<RuleGroup name="grp" groupRelation="and"><ProcessCreate onmatch="exclude">'
            '<Image name="ex-img" condition="end with">powershell.exe</Image><User>SYSTEM</User>'
            '</ProcessCreate></RuleGroup><RuleGroup groupRelation="or">'
            '<ProcessCreate onmatch="include"><CommandLine condition="contains">-nop</CommandLine>'
            '</ProcessCreate></RuleGroup>')
TV42_CFG = orgrp('<DnsQuery onmatch="exclude"><QueryName condition="end with">.microsoft.com'
                 '</QueryName></DnsQuery>')
REG_EX_IN = ('<RegistryEvent onmatch="exclude"><Details condition="contains">something</Details>'
             '</RegistryEvent><RegistryEvent onmatch="include">'
             '<TargetObject condition="contains">\\test\\</TargetObject></RegistryEvent>')

# (id, config inner, schema version, event id, fields, include, RuleName)
VECTORS = [
    ("TV01", "", "4.90", 1, {"Image": "C:\\x.exe"}, True, "-"),
    ("TV02", "", "4.90", 3, {"Image": "C:\\x.exe"}, False, "-"),
    ("TV03", '<ProcessCreate onmatch="exclude"/>', "4.90", 1, {"Image": "a"}, True, "-"),
    ("TV04", '<ProcessCreate onmatch="include"/>', "4.90", 1, {"Image": "a"}, False, "-"),
    ("TV05", '<NetworkConnect onmatch="exclude"/>', "4.90", 3, {"DestinationPort": "443"},
     True, "-"),
    ("TV06", orgrp('<ProcessCreate onmatch="include"><Image condition="end with">\\CMD.EXE'
                   '</Image></ProcessCreate>', "g"), "4.90", 1,
     {"Image": "C:\\Windows\\System32\\cmd.exe"}, True, "g"),
    ("TV07", orgrp('<ProcessCreate onmatch="include"><Image name="technique_id=T1059,'
                   'technique_name=Command-Line Interface" condition="image">cmd.exe</Image>'
                   '</ProcessCreate>', ""), "4.90", 1,
     {"Image": "C:\\Windows\\System32\\cmd.exe"}, True,
     "technique_id=T1059,technique_name=Command-Line Interface"),
    ("TV08", '<ProcessCreate onmatch="include"><Image condition="image">System32\\cmd.exe</Image>'
             '</ProcessCreate>', "4.90", 1, {"Image": "C:\\Windows\\System32\\cmd.exe"},
     False, "-"),
    ("TV09", '<ProcessCreate onmatch="include"><Image condition="image">bash</Image>'
             '</ProcessCreate>', "4.90", 1, {"Image": "/usr/bin/bash"}, False, "-"),
    ("TV10", '<ProcessCreate onmatch="include"><Image>C:\\Windows\\notepad.exe</Image>'
             '</ProcessCreate>', "4.90", 1, {"Image": "c:\\windows\\NOTEPAD.EXE"}, True, "-"),
    ("TV11", orgrp('<ProcessCreate onmatch="include"><CommandLine condition="contains any">'
                   '-enc;-EncodedCommand;bypass</CommandLine></ProcessCreate>'), "4.90", 1,
     {"CommandLine": "powershell -ExecutionPolicy BYPASS"}, True, "-"),
    ("TV12", orgrp('<ProcessCreate onmatch="include"><CommandLine condition="contains any">'
                   '-enc;bypass;</CommandLine></ProcessCreate>'), "4.90", 1,
     {"CommandLine": "notepad.exe"}, True, "-"),
    ("TV13", orgrp('<NetworkConnect onmatch="include"><DestinationPort condition="is any">'
                   '389;636</DestinationPort></NetworkConnect>'), "4.90", 3,
     {"DestinationPort": "3389"}, False, "-"),
    ("TV14", orgrp('<NetworkConnect onmatch="include"><DestinationPort condition="contains any">'
                   '389;636</DestinationPort></NetworkConnect>'), "4.90", 3,
     {"DestinationPort": "3389"}, True, "-"),
    ("TV15", orgrp('<NetworkConnect onmatch="include"><DestinationPort condition="less than">'
                   '1024</DestinationPort></NetworkConnect>'), "4.90", 3,
     {"DestinationPort": "443"}, False, "-"),
    ("TV16", orgrp('<NetworkConnect onmatch="include"><DestinationPort condition="less than">'
                   '1024</DestinationPort></NetworkConnect>'), "4.90", 3,
     {"DestinationPort": "1000"}, True, "-"),
    ("TV17", orgrp('<NetworkConnect onmatch="include"><DestinationPort condition="more than">'
                   '1024</DestinationPort></NetworkConnect>'), "4.90", 3,
     {"DestinationPort": "80"}, True, "-"),
    ("TV18", TV18_CFG, "4.90", 3,
     {"DestinationPort": "80", "Image": "C:\\Program Files\\iexplore.exe"}, False, "-"),
    ("TV19", TV18_CFG, "4.90", 3, {"DestinationPort": "443", "Image": "C:\\x\\chrome.exe"},
     True, "-"),
    ("TV20", TV18_CFG, "4.90", 3, {"DestinationPort": "22", "Image": "C:\\x\\ssh.exe"},
     False, "-"),
    ("TV21", '<ProcessCreate onmatch="include"><Image condition="end with">timeout.exe</Image>'
             '<CommandLine condition="contains">100</CommandLine></ProcessCreate>', "4.90", 1,
     {"Image": "C:\\timeout.exe", "CommandLine": "timeout 5"}, False, "-"),
    ("TV22", '<ProcessCreate onmatch="include"><Image condition="end with">timeout.exe</Image>'
             '<CommandLine condition="contains">100</CommandLine></ProcessCreate>', "4.1", 1,
     {"Image": "C:\\timeout.exe", "CommandLine": "timeout 5"}, True, "-"),
    ("TV23", '<RuleGroup name="grp" groupRelation="and"><ProcessCreate onmatch="include">'
             '<CommandLine condition="contains">iexplore.exe</CommandLine>'
             '<CommandLine condition="contains">Windows</CommandLine></ProcessCreate></RuleGroup>',
     "4.90", 1, {"CommandLine": "iexplore.exe"}, True, "grp"),
    ("TV24", TV24_CFG, "4.90", 1, {"CommandLine": "/a middle"}, False, "-"),
    ("TV25", TV24_CFG, "4.90", 1, {"CommandLine": "/a middle /z"}, True, "r"),
    ("TV26", TV26_CFG, "4.90", 1,
     {"Image": "C:\\powershell.exe", "ParentImage": "C:\\cmd.exe"}, True, "ps by cmd"),
    ("TV27", TV26_CFG, "4.90", 1,
     {"Image": "C:\\powershell.exe", "ParentImage": "C:\\explorer.exe"}, False, "-"),
    ("TV28", TV28_CFG, "4.90", 1, {"Image": "C:\\firefox.exe"}, True, "grp"),
    ("TV29", orgrp('<ProcessCreate onmatch="exclude"><Image>a.exe</Image></ProcessCreate>')
     + orgrp('<ProcessCreate onmatch="exclude"><Image>b.exe</Image></ProcessCreate>'), "4.90", 1,
     {"Image": "c.exe"}, False, "-"),
    ("TV30", orgrp('<ProcessCreate onmatch="include"><Image condition="contains">cmd</Image>'
                   '</ProcessCreate>', "g1")
     + orgrp('<ProcessCreate onmatch="include"><Image condition="end with">.exe</Image>'
             '</ProcessCreate>', "g2"), "4.90", 1, {"Image": "C:\\cmd.exe"}, True, "g2"),
    ("TV31", '<RegistryEvent onmatch="include"><Details condition="contains">something</Details>'
             '</RegistryEvent>', "4.90", 14,
     {"TargetObject": "HKLM\\x", "NewName": "it has something"}, False, "-"),
    ("TV32", REG_EX_IN, "4.90", 12, {"TargetObject": "HKLM\\test\\one"}, True, "-"),
    ("TV33", orgrp('<ProcessCreate onmatch="include"><Company condition="is">-</Company>'
                   '</ProcessCreate>'), "4.90", 1, {"Image": "x"}, True, "-"),
    ("TV34", orgrp('<ProcessCreate onmatch="exclude"><IntegrityLevel>Medium</IntegrityLevel>'
                   '</ProcessCreate>'), "4.90", 1, {"IntegrityLevel": "medium"}, False, "-"),
    ("TV35", orgrp('<ProcessAccess onmatch="include"><GrantedAccess>0x1410</GrantedAccess>'
                   '</ProcessAccess>'), "4.90", 10, {"GrantedAccess": "0x1410"}, True, "-"),
    ("TV36", orgrp('<ProcessAccess onmatch="include"><GrantedAccess>0x01410</GrantedAccess>'
                   '</ProcessAccess>'), "4.90", 10, {"GrantedAccess": "0x1410"}, False, "-"),
    ("TV37", orgrp('<ProcessCreate onmatch="include"><CommandLine condition="excludes any">'
                   'foo;bar</CommandLine></ProcessCreate>'), "4.90", 1,
     {"CommandLine": "x bar y"}, False, "-"),
    ("TV38", orgrp('<ProcessCreate onmatch="include"><CommandLine condition="excludes all">'
                   'foo;bar</CommandLine></ProcessCreate>'), "4.90", 1,
     {"CommandLine": "x bar y"}, True, "-"),
    ("TV39", orgrp('<ProcessCreate onmatch="include"><Image condition="image">mscorsvw.exe '
                   '</Image></ProcessCreate>'), "4.90", 1, {"Image": "C:\\mscorsvw.exe"},
     False, "-"),
    ("TV40", TV40_CFG, "4.90", 1,
     {"Image": "C:\\powershell.exe", "User": "alice", "CommandLine": "powershell -nop"},
     True, "ex-img"),
    ("TV41", orgrp('<ProcessCreate onmatch="include"><Rule name="x">'
                   '<Image condition="contains">aaa</Image><Image condition="contains">bbb</Image>'
                   '</Rule></ProcessCreate>'), "4.90", 1, {"Image": "bbb"}, True, "x"),
    ("TV42", TV42_CFG, "4.90", 22, {"QueryName": "www.microsoft.com"}, False, "-"),
    ("TV43", TV42_CFG, "4.90", 22, {"QueryName": "microsoft.com"}, True, "-"),
    ("TV44", '<RuleGroup groupRelation="and"><ProcessCreate onmatch="include"><Image>a.exe</Image>'
             '<Image>b.exe</Image><CommandLine condition="contains">x</CommandLine>'
             '</ProcessCreate></RuleGroup>', "4.90", 1, {"Image": "b.exe", "CommandLine": "x"},
     True, "-"),
    ("TV45", orgrp('<FileCreate onmatch="include"><TargetFilename condition="begin with">'
                   '</TargetFilename></FileCreate>'), "4.90", 11, {"TargetFilename": "C:\\a.txt"},
     True, "-"),
]


@pytest.mark.parametrize("indexed", [True, False], ids=["indexed", "walk"])
@pytest.mark.parametrize("vid,inner,version,eid,fields,include,rulename", VECTORS,
                         ids=[v[0] for v in VECTORS])
def test_decision_vectors(vid, inner, version, eid, fields, include, rulename, indexed):
    engine = FilterEngine(cfg(inner, version), EngineOptions(indexed=indexed))
    assert engine.decide(eid, fields) == (include, rulename)


def test_all_45_decision_vectors_present():
    assert [v[0] for v in VECTORS] == [f"TV{i:02d}" for i in range(1, 46)]


OPS = [
    ("OP1", "contains any", "a.exe;b.exe;", "zzz", True),
    ("OP2", "contains any", "a.exe;;b.exe", "zzz", False),
    ("OP3", "contains any", "a.exe;;b.exe", "x;b.exey", True),
    ("OP4", "is any", "80;443", "4430", False),
    ("OP5", "contains all", "foo;bar", "xBARfoo", True),
    ("OP6", "excludes all", "foo;bar", "foobar", False),
    ("OP7", "end with", "longer-than-field.exe", "x.exe", False),
    ("OP8", "less than", "1024", "10000", True),
    ("OP9", "more than", "1024", "1024", False),
    ("OP10", "image", "svchost.exe", "C:\\Windows\\System32\\svchost.exe\\", False),
    ("OP11", "contains", "", "-", True),
    ("OP12", "excludes any", "", "abc", False),
]


@pytest.mark.parametrize("vid,cond,rule,value,expected", OPS, ids=[o[0] for o in OPS])
def test_operator_vectors(vid, cond, rule, value, expected):
    assert make_predicate(cond, rule)(fold(value)) is expected


@pytest.mark.parametrize("indexed", [True, False], ids=["indexed", "walk"])
@pytest.mark.parametrize("vid,cond,rule,value,expected", OPS, ids=[o[0] for o in OPS])
def test_operator_vectors_through_engine(vid, cond, rule, value, expected, indexed):
    """The same vectors through config parsing, compilation and the index (or the walk)."""
    inner = orgrp(f'<ProcessCreate onmatch="include"><CommandLine condition="{cond}">{rule}'
                  "</CommandLine></ProcessCreate>")
    engine = FilterEngine(cfg(inner), EngineOptions(indexed=indexed))
    assert engine.decide(1, {"CommandLine": value})[0] is expected


def wrap(body: str, version: str = "4.90") -> str:
    return f'<Sysmon schemaversion="{version}">{body}</Sysmon>'


CV_ERRORS = [
    ("CV1", wrap('<EventFiltering><ProcessCreate onmatch="Include"/></EventFiltering>'),
     'Value "Include" for attribute onmatch'),
    ("CV3", wrap('<EventFiltering><ProcessCreate onmatch="include"><Image condition="something">'
                 'x</Image></ProcessCreate></EventFiltering>'), "Unknown condition: something"),
    ("CV4", wrap('<EventFiltering><RuleGroup groupRelation="OR"><ProcessCreate onmatch="include"/>'
                 '</RuleGroup></EventFiltering>'), 'Value "OR" for attribute groupRelation'),
    ("CV6a", wrap('<EventFiltering><ProcessCreate onmatch="include"><Image name="' + "n" * 256
                  + '">x</Image></ProcessCreate></EventFiltering>'),
     "Rule name is larger than 255 characters"),
    ("CV6b", wrap('<EventFiltering><ProcessCreate onmatch="include"><Rule name="' + "n" * 256
                  + '"><Image>x</Image></Rule></ProcessCreate></EventFiltering>'),
     "Rule name is larger than 255 characters"),
    ("CV6c", wrap('<EventFiltering><RuleGroup name="' + "n" * 256 + '" groupRelation="or">'
                  '<ProcessCreate onmatch="include"><Image>x</Image></ProcessCreate></RuleGroup>'
                  "</EventFiltering>"),
     "Rule name is larger than 255 characters"),
    ("CV7", wrap("", "3.40"), "Incorrect or unsupported schema version 3.40"),
    ("CV8", wrap('<EventFiltering><FileDeleteDetected onmatch="include"/></EventFiltering>',
                 "4.50"), "Unknown event tag <FileDeleteDetected> for schema 4.50"),
    ("CV10", wrap("<IncorrectTag/>"), "unknown element <IncorrectTag>"),
    ("CV11", wrap("<FieldSizes>Image:5.User:6</FieldSizes>"), "has invalid character: '.'"),
    ("CV12", wrap('<EventFiltering><ProcessAccess onmatch="include"><SourceProcessGuid>x'
                  "</SourceProcessGuid></ProcessAccess></EventFiltering>"),
     "SourceProcessGuid is not a field of ProcessAccess"),
]


@pytest.mark.parametrize("vid,xml,message", CV_ERRORS, ids=[c[0] for c in CV_ERRORS])
def test_validation_errors(vid, xml, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")) as ei:
        parse_config(xml, "cv.xml")
    assert str(ei.value).startswith("cv.xml")


def test_cv2_condition_names_case_insensitive():
    c = parse_config(wrap('<EventFiltering><ProcessCreate onmatch="include"><Image '
                          'condition="Contains">x</Image></ProcessCreate></EventFiltering>'))
    assert c.rule_sets[0].filters[0].condition == "contains"
    assert FilterEngine(c).decide(1, {"Image": "aXb"}) == (True, "-")


def test_cv5_rule_group_relation_any_case_is_and():
    c = parse_config(wrap('<EventFiltering><ProcessCreate onmatch="include"><Rule '
                          'groupRelation="AND"><Image condition="contains">a</Image>'
                          '<CommandLine condition="contains">b</CommandLine></Rule>'
                          "</ProcessCreate></EventFiltering>"))
    rs = c.rule_sets[0]
    assert rs.aggregates[rs.filters[0].aggregate].relation == "and"
    engine = FilterEngine(c)
    assert engine.decide(1, {"Image": "a", "CommandLine": "x"})[0] is False
    assert engine.decide(1, {"Image": "a", "CommandLine": "b"})[0] is True


def test_cv9_onmatch_and_default_element_skipped_but_loads():
    c = parse_config(wrap('<EventFiltering><ProcessCreate onmatch="include" default="exclude">'
                          "<Image>x</Image></ProcessCreate></EventFiltering>"))
    assert c.rule_sets == []
    assert any("Can't specify onmatch and default" in w.message for w in c.warnings)
    assert FilterEngine(c).decide(1, {"Image": "y"}) == (True, "-")


def test_all_cv_vectors_covered():
    ids = {c[0][:3] if c[0].startswith("CV6") else c[0] for c in CV_ERRORS}
    ids |= {"CV2", "CV5", "CV9"}
    assert ids == {f"CV{i}" for i in range(1, 13)}


def test_cv6_long_group_or_rule_name_nobody_inherits_loads():
    """Sysmon checks the name a filter ends up with: a long RuleGroup name over a set without
    filters, or a long Rule name whose members all have their own names, loads (xml.cpp)."""
    long = "n" * 300
    parse_config(wrap(f'<EventFiltering><RuleGroup name="{long}" groupRelation="or">'
                      '<ProcessCreate onmatch="exclude"/></RuleGroup></EventFiltering>'))
    parse_config(wrap(f'<EventFiltering><ProcessCreate onmatch="include"><Rule name="{long}">'
                      '<Image name="own">x</Image></Rule></ProcessCreate></EventFiltering>'))
