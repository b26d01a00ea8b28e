"""Decision traces (``sysmonx config explain``): the trace agrees with FilterEngine.decide on
every spec vector, on engine-test style configurations and on corpus configurations with events
built from their own rule values, under every engine option; and the trace says which rule sets
were tried in which order, which filter matched and why."""

import random

import pytest

from sysmonx.cli import main as cli_main
from sysmonx.config import ConfigError, parse_config
from sysmonx.event import Event
from sysmonx.filtering import EngineOptions, FilterEngine
from sysmonx.filtering.explain import (ABSENT, MATCH, NO_MATCH, NOT_EVALUATED, SKIPPED,
                                       explain, format_explanation, summary_line)
from sysmonx.pipeline import make_writer
from sysmonx.schema import CURRENT

from test_filter_vectors import TV18_CFG, TV26_CFG, TV40_CFG, VECTORS, cfg, orgrp

OPTION_SETS = [EngineOptions(), EngineOptions(compare_fold="upper"),
               EngineOptions(fallback="intent"), EngineOptions(stale_rulename=False),
               EngineOptions(no_rule_defaults="community"),
               EngineOptions(environment={"SystemRoot": "C:\\Windows"})]


@pytest.mark.parametrize("vid,inner,version,eid,fields,include,rulename", VECTORS,
                         ids=[v[0] for v in VECTORS])
def test_spec_vectors_agree_with_engine(vid, inner, version, eid, fields, include, rulename):
    c = cfg(inner, version)
    e = explain(c, eid, fields)
    assert (e.include, e.rule_name) == (include, rulename)
    assert (e.include, e.rule_name) == FilterEngine(c).decide(eid, fields)
    for opts in OPTION_SETS:
        e = explain(c, eid, fields, opts)
        assert (e.include, e.rule_name) == FilterEngine(c, opts).decide(eid, fields), opts


# Engine-test style configurations: same-field OR inside AND, Rules, multi-id tags, names.
STYLE_CONFIGS = [
    TV18_CFG, TV26_CFG, TV40_CFG,
    '<RuleGroup name="g" groupRelation="and"><ProcessCreate onmatch="include">'
    '<Image condition="end with">a.exe</Image><Image condition="end with">b.exe</Image>'
    '<CommandLine name="cl" condition="contains">x</CommandLine>'
    '<Rule name="r" groupRelation="and"><User>u</User><User>v</User></Rule>'
    '<ParentImage condition="is any">p1;p2</ParentImage></ProcessCreate></RuleGroup>',
    '<RegistryEvent onmatch="exclude"><Details condition="contains">bad</Details>'
    '</RegistryEvent><RegistryEvent onmatch="include"><TargetObject condition="begin with">HKLM'
    '</TargetObject><NewName condition="contains">x</NewName></RegistryEvent>',
    orgrp('<ProcessCreate onmatch="exclude"><Image name="e1">a.exe</Image></ProcessCreate>', "x")
    + orgrp('<ProcessCreate onmatch="exclude"><Image name="e2">b.exe</Image></ProcessCreate>'),
    '<ProcessCreate onmatch="include"><Rule groupRelation="or" name="o"><Image>a.exe</Image>'
    '<CommandLine condition="excludes all">k;l</CommandLine></Rule><Rule groupRelation="and">'
    '<Image condition="begin with">%SystemRoot%</Image><User name="su">SYSTEM</User></Rule>'
    '</ProcessCreate>',
    '<NetworkConnect onmatch="include"><DestinationPort condition="less than">1024'
    '</DestinationPort><DestinationPort condition="more than">z</DestinationPort>'
    '<Image condition="regex">^c:\\\\w+\\.exe$</Image></NetworkConnect>',
]

VALUES = ["a.exe", "C:\\b.exe", "x", "u", "v", "p2", "bad", "HKLM\\x", "k", "kl", "SYSTEM",
          "C:\\Windows\\x.exe", "443", "80", "1000", "_", "[", "", None, "-"]
FIELDS = ["Image", "CommandLine", "User", "ParentImage", "Details", "TargetObject", "NewName",
          "DestinationPort"]


@pytest.mark.parametrize("n", range(len(STYLE_CONFIGS)))
def test_style_configs_agree_on_random_events(n):
    c = cfg(STYLE_CONFIGS[n])
    rnd = random.Random(n)
    ids = sorted({eid for rs in c.rule_sets for eid in CURRENT.tags[rs.tag]})
    for _ in range(400):
        eid = rnd.choice(ids)
        data = {f: rnd.choice(VALUES) for f in FIELDS if rnd.random() < 0.7}
        data = {k: v for k, v in data.items() if v is not None}
        for opts in OPTION_SETS:
            e = explain(c, eid, data, opts)
            assert (e.include, e.rule_name) == FilterEngine(c, opts).decide(eid, data), \
                (eid, data, opts)


def _events_for(c, rnd, count):
    """Events that hit the configuration's own values (exact, cased, affixed, or not)."""
    by_tag = {}
    for rs in c.rule_sets:
        by_tag.setdefault(rs.tag, []).extend(rs.filters)
    tags = sorted(by_tag)
    for _ in range(count):
        tag = rnd.choice(tags)
        eid = rnd.choice(CURRENT.tags[tag])
        data = {}
        for f in rnd.sample(by_tag[tag], min(len(by_tag[tag]), rnd.randint(1, 4))):
            v = f.value.split(";")[0] if ";" in f.value and rnd.random() < 0.5 else f.value
            v = rnd.choice([v, v.upper(), "C:\\dir\\" + v, v + "x", "zz" + v + "zz", "-", ""])
            data[f.field] = v
        yield eid, data


def test_corpus_configs_agree(corpus):
    rnd = random.Random(7)
    paths = sorted((corpus / "configs").rglob("*.xml"))
    checked = 0
    for path in paths:
        try:
            c = parse_config(path.read_bytes(), str(path))
        except ConfigError:
            continue
        if not c.rule_sets or not any(rs.filters for rs in c.rule_sets):
            continue
        engines = [(o, FilterEngine(c, o)) for o in OPTION_SETS[:4]]
        for eid, data in _events_for(c, rnd, 60):
            for opts, eng in engines:
                e = explain(c, eid, data, opts)
                assert (e.include, e.rule_name) == eng.decide(eid, data), (path, eid, data, opts)
                checked += 1
    assert checked > 10000


def test_trace_order_and_outcomes():
    c = cfg(TV18_CFG)
    e = explain(c, 3, {"DestinationPort": "80", "Image": "C:\\x\\chrome.exe"})
    # exclude sets first (reverse document order), then include sets
    assert [(t.position, t.rule_set.onmatch, t.matched) for t in e.sets] == [
        (2, "exclude", False), (1, "include", True)]
    inc = e.sets[1]
    assert [s.outcome for s in inc.steps] == [NO_MATCH, MATCH]
    assert e.decided_by is inc and [s.filter.value for s in inc.matched_filters()] == ["80"]
    assert e.include and e.rule_name == "-"
    # AND set: a later filter on the same field is still tried; after a match it is skipped
    c = cfg('<ProcessCreate onmatch="include"><Image>a</Image><Image>b</Image>'
            '<Image>c</Image><User>u</User></ProcessCreate>')
    t = explain(c, 1, {"Image": "b", "User": "w"}).sets[0]
    assert [s.outcome for s in t.steps] == [NO_MATCH, MATCH, SKIPPED, NO_MATCH]
    assert not t.matched and "User did not match" in t.reason
    # OR set: evaluation stops at the first match
    c = cfg(orgrp('<ProcessCreate onmatch="include"><Image>a</Image><Image>b</Image>'
                  '<Rule><User>u</User></Rule></ProcessCreate>'))
    t = explain(c, 1, {"Image": "a"}).sets[0]
    assert [s.outcome for s in t.steps] == [MATCH, NOT_EVALUATED, NOT_EVALUATED]


def test_absent_field_in_other_event_of_the_tag():
    c = cfg('<RegistryEvent onmatch="include"><Details condition="contains">something</Details>'
            '</RegistryEvent>')
    e = explain(c, 14, {"TargetObject": "HKLM\\x", "NewName": "it has something"})
    assert e.sets[0].steps[0].outcome == ABSENT and not e.include


def test_stale_rulename_is_explained():
    c = cfg(TV40_CFG)
    e = explain(c, 1, {"Image": "C:\\powershell.exe", "User": "alice",
                       "CommandLine": "powershell -nop"})
    assert e.rule_name == "ex-img" and "left over" in e.reason
    text = format_explanation(e)
    assert "RuleName after this set: 'ex-img'" in text
    assert text.endswith("RuleName: ex-img\n")


def test_defaults_and_unfiltered_events():
    e = explain(None, 1, {})
    assert e.include and e.rule_name == "-" and "default" in e.reason
    assert not explain(None, 3, {}).include
    e = explain(cfg(TV18_CFG), 16, {"Configuration": "x"})
    assert not e.filterable and e.include and e.rule_name is None
    assert explain(None, 9999, {}).include
    assert format_explanation(e).startswith("Event 16 (")


def test_format_and_summary():
    c = cfg(TV26_CFG)
    e = explain(c, 1, {"Image": "C:\\powershell.exe", "ParentImage": "C:\\cmd.exe"})
    text = format_explanation(e)
    lines = text.splitlines()
    assert lines[0] == ("Event 1 (Process Create), tag ProcessCreate: 1 rule set(s); tried exclude "
                        "sets first, then include sets, each in reverse document order")
    assert lines[1].startswith("  [1] ProcessCreate onmatch=include (line 1, combine or, "
                               "RuleGroup 'grp'): MATCH")
    assert "      <Rule groupRelation=and name='ps by cmd'> (line 1): match" in lines
    assert ("          ParentImage end with 'cmd.exe' name='ps by cmd' (line 1): match  "
            "[event value 'C:\\cmd.exe']") in lines
    assert lines[-2].startswith("Decision: include (rule set 1 (ProcessCreate onmatch=include")
    assert lines[-1] == "RuleName: ps by cmd"
    assert summary_line(e) == ("Event 1 ProcessCreate: include by rule set 1 (onmatch=include "
                               "line 1; Image end with 'powershell.exe', ParentImage end with "
                               "'cmd.exe'), RuleName: ps by cmd")


CLI_CONFIG = """<Sysmon schemaversion="4.90">
  <EventFiltering>
    <RuleGroup name="shells" groupRelation="or">
      <ProcessCreate onmatch="include">
        <Image condition="end with">/bash</Image>
        <Image condition="end with">\\cmd.exe</Image>
      </ProcessCreate>
    </RuleGroup>
    <ProcessCreate onmatch="exclude">
      <User>SYSTEM</User>
    </ProcessCreate>
  </EventFiltering>
</Sysmon>
"""


@pytest.mark.parametrize("fmt,data", [
    ("xml", {"RuleName": "-", "Image": "C:\\Windows\\System32\\cmd.exe", "User": "alice"}),
    ("linux-xml", {"RuleName": "-", "Image": "/usr/bin/bash", "User": "root"}),
    ("jsonl", {"RuleName": "-", "Image": "/usr/bin/bash", "User": "root"}),
])
def test_cli_explain_event_files(tmp_path, capsys, fmt, data):
    conf = tmp_path / "c.xml"
    conf.write_text(CLI_CONFIG)
    ev = tmp_path / ("e.json" if fmt == "jsonl" else "e.xml")
    provider = "Linux-Sysmon" if fmt == "linux-xml" else "Microsoft-Windows-Sysmon"
    with open(ev, "wb") as f:
        w = make_writer(fmt, f)
        w.close_stream = False
        w.write(Event(1, data, provider=provider, time_created="2024-01-01T00:00:00.000000000Z",
                      record_id=1, computer="h"))
        w.close()
    assert cli_main(["config", "explain", str(conf), str(ev)]) == 0
    out = capsys.readouterr().out
    assert "[2] ProcessCreate onmatch=exclude (line 9, combine and): no match" in out
    assert ("[1] ProcessCreate onmatch=include (line 4, combine or, RuleGroup 'shells'): MATCH"
            in out)
    assert out.endswith("RuleName: shells\n")
    # agrees with the engine
    c = parse_config(CLI_CONFIG)
    assert FilterEngine(c).decide(1, data) == (True, "shells")


def test_cli_explain_no_event(tmp_path, capsys):
    conf = tmp_path / "c.xml"
    conf.write_text(CLI_CONFIG)
    empty = tmp_path / "e.xml"
    empty.write_text("")
    assert cli_main(["config", "explain", str(conf), str(empty)]) == 1
    assert "no event found" in capsys.readouterr().err


def test_cli_explain_brief_and_named_builtin_configs(tmp_path, capsys):
    """``--brief`` prints the one decision line; ``default`` is replay's Windows built-in (with a
    note naming the Linux one), ``default-linux`` the live sensor's: the Linux default logs every
    connection, the Windows default only those of its listed images."""
    ev = tmp_path / "e.xml"
    with open(ev, "wb") as f:
        w = make_writer("linux-xml", f)
        w.close_stream = False
        w.write(Event(3, {"RuleName": "-", "Image": "/usr/bin/curl", "User": "root",
                          "Protocol": "tcp", "DestinationIp": "10.0.0.1",
                          "DestinationPort": "443"},
                      provider="Linux-Sysmon", time_created="2024-01-01T00:00:00.000000000Z",
                      record_id=1, computer="h"))
        w.close()
    assert cli_main(["config", "explain", "--brief", "default-linux", str(ev)]) == 0
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and out.startswith("Event 3 NetworkConnect: include")
    assert "note:" not in err
    assert cli_main(["config", "explain", "--brief", "default", str(ev)]) == 0
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and out.startswith("Event 3 NetworkConnect: exclude")
    assert "'default' is the built-in Windows config" in err and "'default-linux'" in err
    assert cli_main(["config", "check", "default-linux"]) == 0
    assert "default-linux-config.xml" in capsys.readouterr().out
