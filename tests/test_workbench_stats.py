"""``sysmonx config stats``: per-EventID totals equal the replay's, deciding filters equal what
``config explain`` prints, real counts on the public corpus, and the documented JSON/CSV forms."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter

import pytest

from sysmonx.cli import main
from sysmonx.config import load_config, parse_config
from sysmonx.event import Event
from sysmonx.interfaces import Stage
from sysmonx.pipeline import Replayer, ReplayOptions
from sysmonx.sinks.jsonl import event_to_json
from sysmonx.workbench.common import BoundedCounter, replay_through, techniques_in
from sysmonx.workbench.stats import ConfigStats, ConfigStatsStage

SWIFT = "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml"
MODULAR = "configs/olafhartong__sysmon-modular/sysmonconfig.xml"


class _Collect(Stage):
    name = "collect"

    def __init__(self) -> None:
        self.events: list[Event] = []

    def process(self, item, emit) -> bool:
        if isinstance(item, Event):
            self.events.append(item)
        return True


@pytest.fixture(scope="module")
def corpus_events(corpus):
    c = _Collect()
    replay_through([str(corpus / "evtx")], [c])
    return c.events


def _stats_json(corpus, config, capsys) -> dict:
    assert main(["config", "stats", str(corpus / config), str(corpus / "evtx"),
                 "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("config", [SWIFT, MODULAR])
def test_totals_equal_the_replay(corpus, config, capsys, tmp_path):
    d = _stats_json(corpus, config, capsys)
    # the replay the summary table prints: same counters
    replayer = Replayer(ReplayOptions(config=load_config(corpus / config)))
    st = replayer.run([str(corpus / "evtx")])
    replayer.close()
    assert d["events"] == {str(e): {"included": st.included[e], "excluded": st.excluded[e]}
                           for e in sorted(set(st.included) | set(st.excluded))}
    assert d["read"]["sysmon"] == st.sysmon == 1755
    # and what `sysmonx replay` writes: the kept events, per EventID
    out = tmp_path / "kept.jsonl"
    assert main(["replay", "-q", "-c", str(corpus / config), str(corpus / "evtx"),
                 "-f", "jsonl", "-o", str(out)]) == 0
    written = Counter(json.loads(line)["EventID"] for line in out.read_text().splitlines())
    assert {str(k): v for k, v in written.items()} == {
        e: c["included"] for e, c in d["events"].items() if c["included"]}
    assert d["cross_check"]["mismatches"] == 0
    assert sum(c["included"] + c["excluded"] for c in d["events"].values()) == 1755


def test_real_counts_on_the_corpus(corpus, capsys):
    swift = _stats_json(corpus, SWIFT, capsys)
    modular = _stats_json(corpus, MODULAR, capsys)
    # kept / dropped of all 1,755 Sysmon events of the public EVTX
    assert sum(c["included"] for c in swift["events"].values()) == 869
    assert sum(c["included"] for c in modular["events"].values()) == 536
    assert swift["events"]["1"] == {"included": 659, "excluded": 4}
    assert modular["events"]["1"] == {"included": 246, "excluded": 417}
    assert modular["events"]["7"] == {"included": 38, "excluded": 524}
    # filters, and those that never matched
    assert (len(swift["filters"]), len(swift["never_matched"])) == (724, 687)
    assert (len(modular["filters"]), len(modular["never_matched"])) == (2025, 1903)
    # the filter that kept most: sysmon-modular's cmd.exe rule (T1059.003)
    top = max(modular["filters"], key=lambda f: f["decided"])
    assert (top["line"], top["field"], top["condition"], top["value"], top["decided"]) == (
        373, "Image", "image", "cmd.exe", 146)
    assert top["rule_name"] == "technique_id=T1059.003,technique_name=Windows Command Shell"
    # 180 spelt so, 3 in another case: one candidate (Sysmon compares without case)
    assert modular["noisy"]["Image"]["top"][0] == {"value": r"C:\Windows\System32\cmd.exe",
                                                   "count": 183, "spellings": 2}
    # every rule set's decisions plus the defaults add up to the events of its tags
    for d in (swift, modular):
        kept = sum(r["included"] for r in d["rule_sets"]) + sum(
            c["included"] for c in d["defaults"].values())
        unfiltered = sum(d["events"].get(e, {"included": 0})["included"] for e in ("4", "16"))
        assert kept + unfiltered == sum(c["included"] for c in d["events"].values())


def test_json_form_is_the_documented_one(corpus, capsys):
    d = _stats_json(corpus, MODULAR, capsys)
    assert d["format"] == "sysmonx-config-stats/1"
    assert set(d) >= {"events", "filters", "never_matched", "rule_sets", "defaults", "noisy",
                      "cross_check", "config", "inputs", "read"}
    assert all(isinstance(k, str) and k.isdigit() for k in d["events"])
    for f in d["filters"] + d["never_matched"]:
        assert {"file", "line", "event_id", "rule_name", "decided"} <= set(f)
        assert f["file"].endswith("sysmonconfig.xml") and isinstance(f["line"], int)
    assert all(f["matched"] == 0 for f in d["never_matched"])
    assert all(f["decided"] <= f["matched"] for f in d["filters"])


def _deciding_lines_from_explain(text: str) -> list[int]:
    """The deciding filters' lines, read from `config explain`'s printed trace."""
    lines: list[int] = []
    in_match = False
    is_and = False
    group_ok = False
    done = False
    for line in text.splitlines():
        m = re.match(r"  \[\d+\] \S+ onmatch=\S+ \(.*combine (and|or).*\): (MATCH|no match)", line)
        if m:
            in_match = m.group(2) == "MATCH"
            is_and = m.group(1) == "and"
            done = False
            continue
        if not in_match or done:
            continue
        g = re.match(r"      <Rule .*: (match|no match)$", line)
        if g:
            group_ok = g.group(1) == "match"
            continue
        f = re.match(r"( +)\S.*\(line (\d+)\): match\b", line)
        if f:
            member = len(f.group(1)) > 6
            if member and not group_ok:
                continue
            lines.append(int(f.group(2)))
            if not is_and and not member:
                done = True
        elif re.match(r"      \S", line) and not line.startswith("      RuleName") and not is_and \
                and group_ok and lines:
            done = True  # the OR set was decided by the group just read
    return lines


@pytest.mark.parametrize("config", [SWIFT, MODULAR])
def test_deciding_filters_match_config_explain(corpus, corpus_events, config, capsys,
                                               tmp_path):
    """A sample of events: `config explain`'s printed trace names the same deciding filters
    as the stats count."""
    path = corpus / config
    sample = [e for e in corpus_events if e.event_id not in (4, 16)][::5]
    assert len(sample) >= 340
    stats = ConfigStats(load_config(path))
    expected: Counter[int] = Counter()
    for i, ev in enumerate(sample):
        f = tmp_path / f"e{i}.jsonl"
        f.write_bytes(event_to_json(ev) + b"\n")
        assert main(["config", "explain", str(path), str(f)]) == 0
        expected.update(_deciding_lines_from_explain(capsys.readouterr().out))
        stats.observe(ev)
    got = Counter({stats.index.filters[i][1].line: n for i, n in stats.filter_decided.items()})
    assert got == expected
    assert sum(got.values()) > 30


def test_csv_and_text_forms(corpus, capsys):
    assert main(["config", "stats", str(corpus / SWIFT), str(corpus / "evtx"), "-f", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 724
    assert rows[0]["file"].endswith("sysmonconfig-export.xml")
    assert sum(int(r["decided"]) for r in rows) > 0
    assert main(["config", "stats", str(corpus / SWIFT), str(corpus / "evtx"), "--top", "3"]) == 0
    text = capsys.readouterr().out
    assert "Filters that never matched: 687 of 724" in text
    assert "0 disagreements" in text


CONFIG_OR_AND = """<Sysmon schemaversion="4.90"><EventFiltering>
 <RuleGroup groupRelation="or">
  <ProcessCreate onmatch="include">
   <Rule name="grp" groupRelation="and">
     <Image condition="end with">a.exe</Image>
     <CommandLine condition="contains">zzz</CommandLine>
   </Rule>
   <Image condition="end with" name="T1059,first">a.exe</Image>
   <Image condition="end with" name="second">.exe</Image>
  </ProcessCreate>
 </RuleGroup>
 <RuleGroup groupRelation="and">
  <ProcessCreate onmatch="exclude">
   <Image condition="end with">b.exe</Image>
   <CommandLine condition="contains">drop</CommandLine>
  </ProcessCreate>
 </RuleGroup>
</EventFiltering></Sysmon>"""


def _ev(image: str, cmd: str) -> Event:
    return Event(1, {"RuleName": "-", "Image": image, "CommandLine": cmd})


def test_attribution_or_and_groups():
    cfg = parse_config(CONFIG_OR_AND)
    s = ConfigStats(cfg)
    for ev in (_ev("x\\a.exe", "run"), _ev("x\\a.exe", "zzz"), _ev("b.exe", "drop it"),
               _ev("b.exe", "keep"), _ev("c.txt", "-")):
        s.observe(ev)
    rows = s.filter_rows()  # document order: group Image, group CommandLine, Image a.exe,
    # Image .exe, exclude Image b.exe, exclude CommandLine drop
    assert [r["field"] for r in rows] == ["Image", "CommandLine", "Image", "Image", "Image",
                                          "CommandLine"]
    # OR set: the first match decides (the AND group as a whole, with both its members);
    # AND exclude set: both filters decide the dropped event
    assert [r["decided"] for r in rows] == [1, 1, 1, 1, 1, 1]
    assert [r["included"] for r in rows] == [1, 1, 1, 1, 0, 0]
    assert [r["excluded"] for r in rows] == [0, 0, 0, 0, 1, 1]
    # matched when evaluated: the group's Image on both a.exe events; the top-level a.exe
    # filter is not evaluated once the group matched; the exclude set's Image b.exe matched
    # both b.exe events, its AND set only one of them
    assert [r["matched"] for r in rows] == [2, 1, 1, 1, 2, 1]
    assert s.included[1] == 3 and s.excluded[1] == 2
    assert s.default_excluded[1] == 1  # c.txt: no set matched, two sets => dropped
    assert s.mismatches == 0
    stage = ConfigStatsStage(s)
    assert stage.process(_ev("q\\a.exe", "x"), lambda x: None) is True
    assert s.included[1] == 4


def test_techniques_in_names():
    assert techniques_in("technique_id=T1036,technique_name=Masquerading") == ["T1036"]
    assert techniques_in("T1089,Tamper-Defender") == ["T1089"]
    assert techniques_in("attack.t1059.001") == ["T1059.001"]
    assert techniques_in("MitreRef=T1055.012;T1055") == ["T1055.012", "T1055"]
    assert techniques_in("GT10001 T12345 T123") == []
    assert techniques_in("-") == [] and techniques_in(None) == []


def test_bounded_counter():
    c = BoundedCounter(2)
    for k in ("a", "b", "c", "a", "c"):
        c.add(k)
    assert c.most_common(5) == [("a", 2), ("b", 1)] and c.other == 2
    big = BoundedCounter(100, max_chars=10)
    for k in ("x" * 8, "y" * 8, "x" * 8, "z"):
        big.add(k)
    assert big.most_common(5) == [("x" * 8, 2), ("z", 1)] and big.other == 1


def test_memory_stays_bounded_with_huge_unique_values():
    """Hostile logs: every event unique and 30,000 characters long; the memo and the value
    counters stop growing at their bounds and the counts stay exact."""
    cfg = parse_config(CONFIG_OR_AND)
    s = ConfigStats(cfg, memo_limit=1000, memo_chars=200_000, distinct_limit=1000)
    for i in range(40):
        s.observe(_ev(f"{i}" + "a" * 30_000 + ".exe", f"x{i}"))
    assert s._memo_used <= 200_000 and len(s._memo) == 6
    assert s.explained == 40 and s.mismatches == 0
    assert s.included[1] == 40
    assert s.noisy["Image"].chars <= 16 << 20


def test_bad_inputs_are_reported(tmp_path, capsys, corpus):
    assert main(["config", "stats", str(corpus / SWIFT), str(tmp_path / "nope")]) == 1
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.xml"
    bad.write_text("<Sysmon><EventFiltering><Nope/></EventFiltering></Sysmon>")
    assert main(["config", "stats", str(bad), str(corpus / "evtx")]) == 1
    assert "error:" in capsys.readouterr().err


def test_text_report_neutralises_terminal_escapes():
    from sysmonx.workbench.stats import format_text
    cfg = parse_config(CONFIG_OR_AND)
    s = ConfigStats(cfg)
    s.observe(_ev("x\x1b]0;pwned\x07\x1b[2J\\a.exe", "run"))
    text = format_text(s.to_dict())
    assert "\x1b" not in text and "\x07" not in text
    assert "\\u001b" in text  # shown, not obeyed


def test_text_report_header_counts_rule_sets_and_filters_in_words():
    """The header spells the config's size as the CLI's load line does: "1 rule set", not
    "1 rule sets" (a new user's report)."""
    from sysmonx.workbench.stats import format_text
    one = parse_config('<Sysmon schemaversion="4.90"><EventFiltering><ProcessCreate '
                       'onmatch="include"><Image condition="end with">a.exe</Image>'
                       '</ProcessCreate></EventFiltering></Sysmon>')
    assert "(schema 4.90, 1 rule set, 1 filter)" in format_text(ConfigStats(one).to_dict())
    text = format_text(ConfigStats(parse_config(CONFIG_OR_AND)).to_dict())
    assert "(schema 4.90, 2 rule sets, 6 filters)" in text


def test_commands_are_listed(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "sysmonx config stats" in out and "sysmonx config diff" in out
    assert "sysmonx coverage" in out
    with pytest.raises(SystemExit) as e:
        main(["config", "-h"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "stats" in out and "diff" in out


def test_noisy_values_differing_only_in_case_are_one_candidate():
    """Sysmon compares without case, so ``C:\\Windows\\x.exe`` and ``c:\\windows\\X.EXE`` are one
    exclusion candidate (a new user got them as two): the most frequent spelling, the total
    count, and how many spellings there were."""
    from sysmonx.workbench.stats import _case_folded
    c = BoundedCounter()
    for v, n in ((r"c:\windows\x.exe", 2), (r"C:\Windows\x.exe", 5), (r"C:\WINDOWS\X.EXE", 1),
                 (r"C:\a.exe", 7), (r"C:\b.exe", 3)):
        c.add(v, n)
    assert _case_folded(c, 2) == [{"value": r"C:\Windows\x.exe", "count": 8, "spellings": 3},
                                  {"value": r"C:\a.exe", "count": 7}]
