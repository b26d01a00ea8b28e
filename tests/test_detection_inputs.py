"""Detection that never fails silently: correlation fields Sysmon never writes, Sigma ``re`` with
PCRE's meaning, rule folders holding other YAML, alerts on stdout.

Rules and events are written here; nothing is read from the corpus.
"""

from __future__ import annotations

import json

import pytest

from sysmonx.cli import main
from sysmonx.detection import DetectionOptions, DetectionStage, load_rules, load_rules_text
from sysmonx.detection.correlation import format_ns
from sysmonx.detection.matcher import compile_re, pcre_to_re2
from sysmonx.event import Event

T0 = 1_700_000_000


def proc(seconds: float, rid: int, **data) -> Event:
    return Event(1, {"Image": "C:\\Windows\\System32\\cmd.exe", **data},
                 time_created=format_ns(int((T0 + seconds) * 1e9)), record_id=rid,
                 computer="ws1")


def net(seconds: float, rid: int, **data) -> Event:
    return Event(3, dict(data), time_created=format_ns(int((T0 + seconds) * 1e9)),
                 record_id=rid, computer="ws1")


CMD = """title: cmd started
name: cmd_started
logsource: {product: windows, category: process_creation}
detection: {sel: {Image|endswith: '\\cmd.exe'}, condition: sel}
"""
CONN = """title: outbound 4444
name: conn_4444
logsource: {product: windows, category: network_connection}
detection: {sel: {DestinationPort: 4444}, condition: sel}
"""


def correlation(group_by: str, extra: str = "", rules: str = "[cmd_started]") -> str:
    return f"""title: many cmd
id: 0f6d3a9e-8a7b-4c1e-9a55-3d2b1c0e0001
{extra}correlation:
  type: event_count
  rules: {rules}
  group-by: {group_by}
  timespan: 10m
  condition: {{gte: 3}}
"""


def load(*docs: str) -> DetectionStage:
    st = DetectionStage(load_rules_text("\n---\n".join(d.strip("\n") for d in docs)),
                        DetectionOptions(freeze_gc=False))
    assert not st.rejected, [str(i) for i in st.rejected]
    return st


# ---- 8. correlation fields and taxonomy -------------------------------------------------------------

@pytest.mark.parametrize("field", ["dns.question.name", "SourceIP", "ParentProcessName"])
def test_group_by_on_a_field_sysmon_never_writes_warns_at_load_and_never_pools(field):
    st = load(CMD, correlation(f"[{field}]"))
    warnings = [i for i in st.issues if i.code == "field"]
    assert len(warnings) == 1 and not warnings[0].rejected
    assert f"group-by field {field} is never written for the events of referenced rule " \
           "cmd_started" in warnings[0].message
    alerts = [a for e in [proc(i, i) for i in range(5)] for a in st.process(e)]
    alerts += st.finish()
    assert alerts == []  # five events without the field: no "null" group fires
    assert st.correlation.stats.ungrouped == {"0f6d3a9e-8a7b-4c1e-9a55-3d2b1c0e0001": 5}
    assert "5 hit(s) not counted" in st.format_summary()


def test_group_by_on_real_fields_gives_no_warning_and_groups():
    st = load(CMD, correlation("[User]"))
    assert [i for i in st.issues if i.code == "field"] == []
    events = [proc(i, i, User="CORP\\alice") for i in range(3)] + [proc(5, 9)]
    alerts = [a for e in events for a in st.process(e)] + st.finish()
    assert [a.group for a in alerts] == [{"User": "CORP\\alice"}]
    assert st.correlation.stats.ungrouped["0f6d3a9e-8a7b-4c1e-9a55-3d2b1c0e0001"] == 1


def test_alias_resolved_per_rule_and_value_fields_checked():
    corr = """title: cmd then connect
id: 0f6d3a9e-8a7b-4c1e-9a55-3d2b1c0e0002
correlation:
  type: temporal
  rules: [cmd_started, conn_4444]
  aliases:
    host_ip:
      cmd_started: SourceIp
      conn_4444: SourceIp
  group-by: [host_ip]
  timespan: 1m
"""
    st = load(CMD, CONN, corr)
    msgs = [i.message for i in st.issues if i.code == "field"]
    # ProcessCreate has no SourceIp; NetworkConnect has
    assert msgs == ["group-by field host_ip (alias of SourceIp) is never written for the events "
                    "of referenced rule cmd_started (its events do not carry it): its hits are "
                    "not counted (never grouped as null)"]
    vc = """title: many images
id: 0f6d3a9e-8a7b-4c1e-9a55-3d2b1c0e0003
correlation:
  type: value_count
  rules: [cmd_started]
  group-by: [User]
  timespan: 1m
  condition: {gte: 2, field: QueryName}
"""
    st = load(CMD, vc)
    assert [i.message.split(" is never")[0] for i in st.issues if i.code == "field"] == [
        "value field QueryName"]


def test_chained_correlation_groups_only_on_what_the_inner_one_carries():
    outer = """title: outer
id: 0f6d3a9e-8a7b-4c1e-9a55-3d2b1c0e0004
correlation:
  type: event_count
  rules: [0f6d3a9e-8a7b-4c1e-9a55-3d2b1c0e0001]
  group-by: [Computer]
  timespan: 1h
  condition: {gte: 1}
"""
    st = load(CMD, correlation("[User]"), outer)
    msgs = [i.message for i in st.issues if i.code == "field"]
    assert len(msgs) == 1 and "its alerts do not carry it" in msgs[0]


def test_taxonomy_other_than_sigma_is_a_load_warning():
    st = load(CMD, correlation("[User]", extra="taxonomy: ocsf\n"))
    tax = [i for i in st.issues if i.code == "taxonomy"]
    assert len(tax) == 1 and not tax[0].rejected and "'ocsf'" in tax[0].message
    assert [i for i in load(CMD, correlation("[User]", extra="taxonomy: sigma\n")).issues
            if i.code == "taxonomy"] == []


# ---- 9. Sigma re with PCRE's meaning -----------------------------------------------------------------

@pytest.mark.parametrize("pattern,flags,value,pcre", [
    (r"cmd\.exe$", [], "C:\\Windows\\cmd.exe\n", True),      # $ before a final newline
    (r"cmd\.exe$", [], "C:\\Windows\\cmd.exe\n\n", False),   # ...only the final one
    (r"cmd\.exe$", [], "cmd.exe x", False),
    (r"cmd\.exe\Z", [], "cmd.exe\n", True),                   # \Z: RE2 would refuse it
    (r"^a$", ["m"], "x\na\ny", True),                         # multi-line: unchanged
    (r"(?m)^a$", [], "x\na\ny", True),
    (r"a\sb", [], "a\x0bb", True),                            # \s includes the vertical tab
    (r"a\Sb", [], "a\x0bb", False),
    (r"a[\s]b", [], "a b", True),
    (r"[$]x", [], "$x", True),                                # literal $ in a class
    (r"\$x", [], "$x", True),
    (r"[]$]", [], "]", True),
])
def test_re_follows_pcre_where_re2_differs(pattern, flags, value, pcre):
    from sigma.types import SigmaRegularExpressionFlag as F
    sigma_flags = [{"m": F.MULTILINE, "i": F.IGNORECASE, "s": F.DOTALL}[f] for f in flags]
    assert compile_re(pattern, sigma_flags)(value) is pcre


def test_re_in_a_rule_matches_a_value_with_a_final_newline():
    rule = """title: ends with whoami
id: 0f6d3a9e-8a7b-4c1e-9a55-3d2b1c0e0010
logsource: {product: windows, category: process_creation}
detection: {sel: {CommandLine|re: 'whoami$'}, condition: sel}
"""
    st = load(rule)
    assert len(st.process(proc(0, 1, CommandLine="cmd /c whoami\n"))) == 1
    assert st.process(proc(1, 2, CommandLine="cmd /c whoami /all")) == []


def test_pcre_rewrite_leaves_escapes_and_classes_alone():
    assert pcre_to_re2(r"a\$b[$\]]c") == r"a\$b[$\]]c"
    assert pcre_to_re2(r"x$", multiline=True) == "x$"


# ---- 10. rule folders with other YAML, alerts on stdout ------------------------------------------------

def test_rule_folder_skips_yaml_that_is_not_sigma_with_one_line(tmp_path, capsys):
    folder = tmp_path / "rules"
    for i in range(3):
        case = folder / f"case{i}"
        case.mkdir(parents=True)
        (case / "info.yml").write_text("id: abc\nregression_tests_info:\n  - name: x\n"
                                       "    match_count: 1\n")
        (case / f"rule{i}.yml").write_text(CMD.replace("cmd_started", f"cmd_{i}"))
    (folder / "action.yml").write_text("action: global\ntitle: g\nlogsource: {product: windows}"
                                       "\n---\ndetection: {sel: {Image: x}, condition: sel}\n"
                                       "title: t\nlogsource: {category: process_creation}\n")
    loaded = load_rules([folder])
    assert len(loaded.rules) == 4 and len(loaded.skipped) == 3
    assert [i.code for i in loaded.issues] == ["skipped"]
    assert loaded.issues[0].message.startswith("3 YAML file(s) in the rule folders are not Sigma")
    log = tmp_path / "e.xml"
    log.write_text("")
    assert main(["replay", str(log), "--rules", str(folder), "-q"]) == 0
    err = capsys.readouterr().err
    assert err.count("info.yml") == 1 and "rejected [" not in err
    # named explicitly, a non-rule file is still rejected with its reasons
    named = load_rules([folder / "case0" / "info.yml"])
    assert named.skipped == [] and any(i.rejected for i in named.issues)


def test_alerts_on_stdout_never_interleave_with_events(tmp_path, capsys):
    from sysmonx.pipeline import make_writer
    log = tmp_path / "e.jsonl"
    with open(log, "wb") as f:
        w = make_writer("jsonl", f)
        w.close_stream = False
        for i in range(3):
            w.write(proc(i, i + 1, CommandLine="cmd"))
        w.close()
    rule = tmp_path / "r.yml"
    rule.write_text(CMD)
    assert main(["replay", str(log), "--rules", str(rule), "--alerts", "-", "-q"]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(x) for x in captured.out.splitlines()]
    assert [x["type"] for x in lines] == ["sigma_alert"] * 3
    assert "events are not written there" in captured.err
    out = tmp_path / "events.jsonl"
    assert main(["replay", str(log), "--rules", str(rule), "--alerts", "-", "-q", "-f", "jsonl",
                 "-o", str(out)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert len(out.read_text().splitlines()) == 3
