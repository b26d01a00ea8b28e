"""Enrichment fields: computed from the process tree the log describes, filterable in configs
and Sigma rules, written only with ``--enrich``; ``config export --sysmon`` for real Sysmon."""

from __future__ import annotations

import orjson
import pytest
from lxml import etree

from sysmonx.cli import main
from sysmonx.config import ConfigError, parse_config
from sysmonx.config.export import export_sysmon
from sysmonx.event import Event
from sysmonx.stages.enrich import EnrichStage, EnrichStrip, enrichment_wanted

EVTX = ("evtx/sbousseaden__EVTX-ATTACK-SAMPLES/AutomatedTestingTools/Malware/"
        "rundll32_cmd_schtask.evtx")

# the marked chain of that log: test.tmp -> SysWOW64\rundll32.exe -> cmd.exe -> schtasks.exe
CHAIN_CONFIG = """<Sysmon schemaversion="4.90">
  <EventFiltering>
    <RuleGroup name="chain" groupRelation="and">
      <ProcessCreate onmatch="include">
        <GrandparentImage condition="image">rundll32.exe</GrandparentImage>
        <AncestorImages condition="contains">\\test.tmp</AncestorImages>
      </ProcessCreate>
    </RuleGroup>
  </EventFiltering>
</Sysmon>
"""


def _events(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def test_config_on_grandparent_and_ancestors_selects_the_chain_in_a_windows_evtx(
        corpus, tmp_path):
    cfg = tmp_path / "chain.xml"
    cfg.write_text(CHAIN_CONFIG)
    out = tmp_path / "out.jsonl"
    assert main(["replay", str(corpus / EVTX), "-c", str(cfg), "--format", "jsonl", "-o",
                 str(out), "-q"]) == 0
    got = [e for e in _events(out) if e["EventID"] == 1]
    assert [e["Image"] for e in got] == ["C:\\Windows\\SysWOW64\\schtasks.exe"]
    assert got[0]["ParentImage"] == "C:\\Windows\\SysWOW64\\cmd.exe"
    assert got[0]["RuleName"] == "chain"
    # output stays Sysmon's: the same record as a plain conversion, RuleName aside
    assert "Enrichment" not in got[0] and "GrandparentImage" not in got[0]
    plain = tmp_path / "plain.jsonl"
    assert main(["replay", str(corpus / EVTX), "--format", "jsonl", "-o", str(plain),
                 "-q"]) == 0
    same = [e for e in _events(plain) if e.get("ProcessGuid") == got[0]["ProcessGuid"]
            and e["EventID"] == 1]
    assert {k: v for k, v in same[0].items() if k not in ("RuleName", "System")} == \
        {k: v for k, v in got[0].items() if k not in ("RuleName", "System")}


def test_enrich_writes_the_fields_under_their_own_key(corpus, tmp_path):
    out = tmp_path / "enriched.jsonl"
    assert main(["replay", str(corpus / EVTX), "--enrich", "--format", "jsonl", "-o", str(out),
                 "-q"]) == 0
    ev = next(e for e in _events(out) if e.get("Image") == "C:\\Windows\\SysWOW64\\schtasks.exe")
    enr = ev["Enrichment"]
    assert enr["GrandparentImage"] == "C:\\Windows\\SysWOW64\\rundll32.exe"
    assert enr["GrandparentCommandLine"] == \
        '"C:\\Windows\\System32\\rundll32.exe" conf3234.dll f8753 d948'
    assert enr["AncestorImages"] == ("C:\\Windows\\SysWOW64\\cmd.exe|"
                                     "C:\\Windows\\SysWOW64\\rundll32.exe|"
                                     "C:\\Users\\Public\\test.tmp")
    # replay cannot know the host facts: the documented unknown values
    # (ContainerId "unknown", not the host's "-"; namespaces "-", never an inode like 0)
    assert (enr["ContainerId"], enr["ContainerRuntime"], enr["MntNs"], enr["PidNs"], enr["Tty"],
            enr["FileType"]) == ("unknown", "unknown", "-", "-", "-", "-")
    # XML output carries them as extra Data elements only with --enrich
    xml = tmp_path / "enriched.xml"
    assert main(["replay", str(corpus / EVTX), "--enrich", "-o", str(xml), "-q"]) == 0
    assert b"<Data Name='GrandparentImage'>C:\\Windows\\SysWOW64\\rundll32.exe</Data>" \
        in xml.read_bytes()
    plain = tmp_path / "plain.xml"
    assert main(["replay", str(corpus / EVTX), "-o", str(plain), "-q"]) == 0
    assert b"GrandparentImage" not in plain.read_bytes()


def _chain(stage: EnrichStage, *events: Event) -> list[Event]:
    for e in events:
        stage.process(e, lambda x: None)
    return list(events)


def test_ancestry_nearest_first_bounded_and_for_other_events():
    st = EnrichStage(["GrandparentImage", "AncestorImages"])
    evs = [Event(1, {"ProcessGuid": f"{{{i}}}", "Image": f"/bin/p{i}", "CommandLine": f"p{i}",
                     "ParentProcessGuid": f"{{{i - 1}}}", "ParentImage": f"/bin/p{i - 1}",
                     "ParentCommandLine": f"p{i - 1}"}) for i in range(1, 13)]
    _chain(st, *evs)
    last = evs[-1].data
    assert last["GrandparentImage"] == "/bin/p10"
    assert last["AncestorImages"] == "|".join(f"/bin/p{i}" for i in range(11, 3, -1))  # 8
    assert "GrandparentCommandLine" not in last  # not asked for
    net = _chain(st, Event(3, {"ProcessGuid": "{12}", "ProcessId": "12"}))[0]
    assert net.data["GrandparentImage"] == "/bin/p10"
    assert net.data["AncestorImages"].startswith("/bin/p11|/bin/p10|")
    # a process the log never showed: unknown
    other = _chain(st, Event(3, {"ProcessGuid": "{99}"}))[0]
    assert other.data["GrandparentImage"] == "-" and other.data["AncestorImages"] == "-"
    # an event without a process is left alone; a field the event has is kept
    assert "AncestorImages" not in _chain(st, Event(6, {"ImageLoaded": "x"}))[0].data


def test_strip_removes_only_what_the_stage_added():
    st = EnrichStage(None)
    strip = EnrichStrip(st)
    e = Event(210, {"ProcessGuid": "{1}", "Tty": "/dev/pts/4", "Command": "id"})
    st.process(e, lambda x: None)
    assert e.data["AncestorImages"] == "-" and e.data["Tty"] == "/dev/pts/4"
    strip.process(e, lambda x: None)
    assert e.data == {"ProcessGuid": "{1}", "Tty": "/dev/pts/4", "Command": "id"}


def test_sigma_rules_see_enrichment(tmp_path, corpus):
    rule = tmp_path / "gp.yml"
    rule.write_text("""title: Scheduled task from a rundll32 grandparent
id: 5b0c8f55-1d1f-4b1d-9b55-0c3c1d2b7e01
status: experimental
logsource: {product: windows, category: process_creation}
detection:
  selection:
    Image|endswith: '\\\\schtasks.exe'
    GrandparentImage|endswith: '\\\\rundll32.exe'
  condition: selection
level: high
""")
    alerts = tmp_path / "alerts.jsonl"
    assert main(["replay", str(corpus / EVTX), "--rules", str(rule), "--alerts", str(alerts),
                 "--no-output", "-q"]) == 0
    got = [orjson.loads(x) for x in alerts.read_bytes().splitlines() if x.strip()]
    assert len(got) == 1 and "Scheduled task" in orjson.dumps(got[0]).decode()


def test_wanted_fields_come_from_config_and_rules():
    cfg = parse_config(CHAIN_CONFIG)
    assert enrichment_wanted(cfg) == {"GrandparentImage", "AncestorImages"}
    assert enrichment_wanted(None) == frozenset()
    assert "ContainerId" in enrichment_wanted(None, enrich=True)


def test_export_sysmon_strips_extensions_and_validates_as_plain_sysmon(tmp_path):
    src = """<?xml version="1.0"?>
<Sysmon schemaversion="4.90">
  <!-- kept -->
  <HashAlgorithms>sha256</HashAlgorithms>
  <EventFiltering>
    <RuleGroup name="chain" groupRelation="and">
      <ProcessCreate onmatch="include">
        <Image condition="end with">\\schtasks.exe</Image>
        <GrandparentImage condition="image">rundll32.exe</GrandparentImage>
      </ProcessCreate>
    </RuleGroup>
    <RuleGroup groupRelation="or">
      <NetworkConnect onmatch="exclude">
        <Image condition="regex">^C:\\\\tools\\\\.*$</Image>
        <Rule groupRelation="and"><AncestorImages condition="contains">sshd</AncestorImages>
        </Rule>
      </NetworkConnect>
    </RuleGroup>
    <RuleGroup groupRelation="or">
      <ShellCommand onmatch="exclude"><Command condition="begin with">ls</Command></ShellCommand>
    </RuleGroup>
  </EventFiltering>
</Sysmon>
"""
    with pytest.raises(ConfigError):
        parse_config(src, extensions=False)
    out, warnings = export_sysmon(src.encode())
    cfg = parse_config(out, extensions=False)  # loads as plain Sysmon
    assert [(rs.tag, [(f.field, f.condition) for f in rs.filters]) for rs in cfg.rule_sets] == \
        [("ProcessCreate", [("Image", "end with")]), ("NetworkConnect", [])]
    msgs = [(w.line, w.message) for w in warnings]
    assert (9, "<GrandparentImage> filter in <ProcessCreate> removed: a SysmonX enrichment "
               "field") in msgs
    assert any(line == 14 and "regex" in m for line, m in msgs)
    assert any(line == 15 and "<AncestorImages>" in m for line, m in msgs)
    assert any("<Rule> in <NetworkConnect> removed" in m for _, m in msgs)
    assert any("as exported it logs every event" in m for _, m in msgs)
    assert any(line == 20 and "<ShellCommand> removed" in m for line, m in msgs)
    assert any("<RuleGroup> removed" in m for _, m in msgs)
    root = etree.fromstring(out)
    assert root.xpath("//comment()")[0].text == " kept "
    # the command line
    f = tmp_path / "sx.xml"
    f.write_text(src)
    o = tmp_path / "plain.xml"
    assert main(["config", "export", "--sysmon", str(f), "-o", str(o)]) == 0
    assert o.read_bytes() == out


def test_export_sysmon_strips_every_extension_event_tag_and_scan_request():
    """Every catalogue extension tag (not only 210-213) and the scanners= attribute go; what the
    rule sets select stays."""
    src = """<Sysmon schemaversion="4.90"><EventFiltering>
  <RuleGroup groupRelation="or">
    <ProcessCreate onmatch="include" scanners="memfd_exec">
      <Image condition="end with">/bash</Image>
      <Rule groupRelation="and" scanners="deleted_exe">
        <Image condition="begin with">/tmp/</Image>
      </Rule>
    </ProcessCreate>
  </RuleGroup>
  <RuleGroup groupRelation="or">
    <TamperFinding onmatch="exclude"><Technique condition="is">clock_changed</Technique>
    </TamperFinding>
  </RuleGroup>
  <RuleGroup groupRelation="or">
    <ScannerFinding onmatch="exclude"><Finding condition="is">rwx_memory</Finding>
    </ScannerFinding>
  </RuleGroup>
</EventFiltering></Sysmon>"""
    out, warnings = export_sysmon(src)
    cfg = parse_config(out, extensions=False)
    assert [(rs.tag, [(f.field, f.condition, f.value) for f in rs.filters])
            for rs in cfg.rule_sets] == \
        [("ProcessCreate", [("Image", "end with", "/bash"), ("Image", "begin with", "/tmp/")])]
    msgs = [(w.line, w.message) for w in warnings]
    assert (3, 'scanners="memfd_exec" on <ProcessCreate> removed: SysmonX scanners') in msgs
    assert (5, 'scanners="deleted_exe" on <Rule> removed: SysmonX scanners') in msgs
    assert (11, "<TamperFinding> removed: a SysmonX event Sysmon does not have") in msgs
    assert (15, "<ScannerFinding> removed: a SysmonX event Sysmon does not have") in msgs
    assert b"scanners" not in out


GP_RULE = """title: whoami under a WmiPrvSE grandparent
id: 5b1d7d5e-1111-4c3a-9d8e-000000000024
status: test
logsource: {product: windows, category: process_creation}
detection:
  sel:
    Image|endswith: '\\\\whoami.exe'
    GrandparentImage|endswith: '\\\\WmiPrvSE.exe'
  condition: sel
level: high
"""


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "pure"])
def test_alert_fields_carry_the_enrichment_value_the_rule_matched_on(tmp_path, corpus, pure):
    """Without --enrich the enrichment fields are stripped from the written events, but an
    alert's ``fields`` holds the value the rule tested (the one it matched on), the same on the
    compiled and the pure-Python alert paths; the written event stays Sysmon's."""
    import os
    import subprocess
    import sys
    rule = tmp_path / "gp.yml"
    rule.write_text(GP_RULE)
    alerts, out = tmp_path / "alerts.jsonl", tmp_path / "out.jsonl"
    env = dict(os.environ, SYSMONX_PURE_PYTHON="1" if pure else "0")
    subprocess.run([sys.executable, "-m", "sysmonx.cli", "replay", str(corpus / "evtx"),
                    "--rules", str(rule), "--alerts", str(alerts), "-f", "jsonl", "-o",
                    str(out), "-q"], check=True, env=env)
    got = [orjson.loads(x) for x in alerts.read_bytes().splitlines() if x.strip()]
    assert len(got) == 1
    fields = got[0]["fields"]
    assert fields["Image"] == "C:\\Windows\\System32\\whoami.exe"
    assert fields["GrandparentImage"] == "C:\\Windows\\System32\\wbem\\WmiPrvSE.exe"
    assert got[0]["event"]["EventData"]["GrandparentImage"] == fields["GrandparentImage"]
    written = [e for e in _events(out) if e.get("EventID") == 1
               and e.get("ProcessGuid") == fields["ProcessGuid"]]
    assert written and all("GrandparentImage" not in e and "Enrichment" not in e
                           for e in written)
