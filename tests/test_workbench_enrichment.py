"""The workbench and the enrichment fields (GrandparentImage, AncestorImages ...): ``config
stats``/``diff`` decide on the values the replay computes, their cross-check compares with the
replay's own filter, ``config explain`` uses what the event carries and says what one event
cannot tell, and ``config export --sysmon`` never widens an exclude rule. Real counts on the
public corpus (``SYSMONX_CORPUS``)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from sysmonx.cli import main
from sysmonx.config import load_config
from sysmonx.event import Event
from sysmonx.pipeline import Replayer, ReplayOptions
from sysmonx.schema.catalogue import ENRICHMENT_FIELD_NAMES
from sysmonx.workbench.diff import ConfigDiff
from sysmonx.workbench.stats import ConfigStats

HEAD = '<Sysmon schemaversion="4.90"><EventFiltering><RuleGroup name="" groupRelation="or">\n'
TAIL = '</RuleGroup></EventFiltering></Sysmon>\n'

GP = HEAD + ('<ProcessCreate onmatch="include"><GrandparentImage condition="end with">'
             '\\WmiPrvSE.exe</GrandparentImage></ProcessCreate>\n') + TAIL
RULE = """    <Rule name="cmd under wmiprvse" groupRelation="and">
      <GrandparentImage condition="end with">\\WmiPrvSE.exe</GrandparentImage>
      <Image condition="end with">\\whoami.exe</Image>
    </Rule>
"""
REGEX = (HEAD + '  <ProcessCreate onmatch="include">\n'
         '    <CommandLine name="technique_id=T1003,reg save hive" condition="regex">'
         + r"reg(\.exe)?\s+save\s+hklm\\(sam|system|security)</CommandLine>" + "\n" + RULE
         + '    <AncestorImages name="anc services" condition="contains">\\services.exe|'
           '</AncestorImages>\n  </ProcessCreate>\n' + TAIL)
REGEX_B = REGEX.replace(RULE, "")
EXCL = HEAD + """<ProcessCreate onmatch="exclude">
  <Rule name="benign cmd from explorer" groupRelation="and">
    <Image condition="end with">\\cmd.exe</Image>
    <GrandparentImage condition="end with">\\userinit.exe</GrandparentImage>
  </Rule>
</ProcessCreate>
""" + TAIL


def _write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def _replay_kept(corpus, config: str) -> Counter:
    """ProcessCreate etc. kept per EventID by ``sysmonx replay --config``."""
    r = Replayer(ReplayOptions(config=load_config(config)))
    st = r.run([str(corpus / "evtx")])
    r.close()
    return Counter({e: n for e, n in st.included.items() if n})


def _json(argv: list[str], capsys, rc: int = 0) -> dict:
    assert main(argv) == rc
    return json.loads(capsys.readouterr().out)


def test_stats_decides_enrichment_fields_as_replay(corpus, tmp_path, capsys):
    # bug: config stats said 0 kept / 663 for a GrandparentImage include, replay keeps 2
    gp = _write(tmp_path, "gp.xml", GP)
    d = _json(["config", "stats", gp, str(corpus / "evtx"), "-f", "json"], capsys)
    assert d["events"]["1"] == {"included": 2, "excluded": 661}
    assert _replay_kept(corpus, gp)[1] == 2
    assert d["filters"][0]["field"] == "GrandparentImage" and d["filters"][0]["matched"] == 2
    assert d["cross_check"]["mismatches"] == 0 and d["cross_check"]["replay_mismatches"] == []
    # regex.xml: the whoami run under a WmiPrvSE.exe grandparent is kept (15, not 14)
    rx = _write(tmp_path, "regex.xml", REGEX)
    d = _json(["config", "stats", rx, str(corpus / "evtx"), "-f", "json"], capsys)
    assert d["events"]["1"] == {"included": 15, "excluded": 648}
    assert _replay_kept(corpus, rx)[1] == 15
    gpf = next(f for f in d["filters"] if f["field"] == "GrandparentImage")
    # 2 events have a WmiPrvSE.exe grandparent; one of them is whoami.exe (the <Rule> keeps it)
    assert (gpf["decided"], gpf["matched"], gpf["rule_name"]) == (1, 2, "cmd under wmiprvse")


def test_diff_decides_enrichment_fields_as_two_replays(corpus, tmp_path, capsys):
    a = _write(tmp_path, "regex.xml", REGEX)
    b = _write(tmp_path, "regex-b.xml", REGEX_B)
    d = _json(["config", "diff", a, b, str(corpus / "evtx"), "-f", "json"], capsys)
    ka, kb = _replay_kept(corpus, a), _replay_kept(corpus, b)
    assert (ka[1], kb[1]) == (15, 14)
    assert d["events"]["1"] == {"both": 14, "only_a": 1, "only_b": 0, "neither": 648,
                                "renamed": 0}
    assert d["only_a"] == {"1": 1} and d["only_b"] == {}
    assert d["cross_check"]["replay_mismatches"] == []
    # the other way round: B's enrichment fields are computed too
    d = _json(["config", "diff", b, a, str(corpus / "evtx"), "-f", "json"], capsys)
    assert d["only_b"] == {"1": 1} and d["only_a"] == {}


def _without_enrichment(event: Event) -> Event:
    ev = Event(event.event_id, {k: v for k, v in event.data.items()
                                if k not in ENRICHMENT_FIELD_NAMES})
    ev.record_id = event.record_id
    return ev


def test_cross_check_fails_when_workbench_and_replay_disagree(corpus, tmp_path, capsys,
                                                              monkeypatch):
    # the old gap, put back on purpose: the workbench decides without the enrichment values
    gp = _write(tmp_path, "gp.xml", GP)
    observe = ConfigStats.observe
    monkeypatch.setattr(ConfigStats, "observe",
                        lambda self, event: observe(self, _without_enrichment(event)))
    d = _json(["config", "stats", gp, str(corpus / "evtx"), "-f", "json"], capsys, rc=1)
    assert d["cross_check"]["replay_mismatches"] == [
        {"event_id": 1, "workbench": {"included": 0, "excluded": 663},
         "replay": {"included": 2, "excluded": 661}}]
    assert main(["config", "stats", gp, str(corpus / "evtx")]) == 1
    out = capsys.readouterr()
    assert "EventID 1: here kept 0 dropped 663, replay kept 2 dropped 661" in out.out
    assert "differ from the replay's own filter for 1 EventIDs" in out.err
    dobserve = ConfigDiff.observe
    monkeypatch.setattr(ConfigDiff, "observe",
                        lambda self, event: dobserve(self, _without_enrichment(event)))
    b = _write(tmp_path, "b.xml", REGEX_B)
    d = _json(["config", "diff", gp, b, str(corpus / "evtx"), "-f", "json"], capsys, rc=1)
    assert d["cross_check"]["replay_mismatches"][0]["replay"] == {"included": 2,
                                                                  "excluded": 661}


def _whoami_event(corpus, tmp_path: Path, rx: str) -> tuple[Path, Path]:
    """The corpus's ``whoami /all`` under a WmiPrvSE.exe grandparent, as ``replay --enrich``
    writes it (enriched) and without its enrichment fields (plain)."""
    out = tmp_path / "rx.xml"
    assert main(["replay", "-q", str(corpus / "evtx"), "--config", rx, "-f", "xml", "--enrich",
                 "-o", str(out)]) == 0
    line = next(x for x in out.read_text().splitlines() if "whoami  /all" in x)
    assert "<Data Name='GrandparentImage'>C:\\Windows\\System32\\wbem\\WmiPrvSE.exe" in line
    enriched = tmp_path / "evw.xml"
    enriched.write_text(line + "\n")
    plain = tmp_path / "evw-plain.xml"
    names = "|".join(sorted(ENRICHMENT_FIELD_NAMES))
    plain.write_text(re.sub(rf"<Data Name='({names})'>[^<]*</Data>", "", line) + "\n")
    return enriched, plain


def test_explain_uses_the_enrichment_the_event_carries(corpus, tmp_path, capsys):
    rx = _write(tmp_path, "regex.xml", REGEX)
    enriched, plain = _whoami_event(corpus, tmp_path, rx)
    capsys.readouterr()
    assert main(["config", "explain", rx, str(enriched)]) == 0
    text = capsys.readouterr().out
    assert "field not in this event type" not in text
    assert ("GrandparentImage end with '\\WmiPrvSE.exe' name='cmd under wmiprvse' (line 5): "
            "match  [event value 'C:\\Windows\\System32\\wbem\\WmiPrvSE.exe']") in text
    assert "Decision: include" in text and "RuleName: cmd under wmiprvse" in text
    # replay decides the same: the event is kept under that RuleName
    out = tmp_path / "kept.jsonl"
    assert main(["replay", "-q", str(corpus / "evtx"), "--config", rx, "-f", "jsonl",
                 "-o", str(out)]) == 0
    kept = [json.loads(x) for x in out.read_text().splitlines()]
    assert [e["EventData"]["RuleName"] if "EventData" in e else e.get("RuleName")
            for e in kept if "whoami  /all" in json.dumps(e)] == ["cmd under wmiprvse"]


def test_explain_says_what_one_event_cannot_tell(corpus, tmp_path, capsys):
    rx = _write(tmp_path, "regex.xml", REGEX)
    _, plain = _whoami_event(corpus, tmp_path, rx)
    capsys.readouterr()
    assert main(["config", "explain", rx, str(plain)]) == 0
    text = capsys.readouterr().out
    assert "field not in this event type" not in text
    assert ("(line 5): no match  [event value '-': not in this event, and not known from a "
            "single event: the ancestry comes from the earlier ProcessCreate events") in text
    # AncestorImages of a lone ProcessCreate: its parent only
    assert ("(line 8): no match  [event value 'C:\\Windows\\System32\\cmd.exe': not in this "
            "event: computed from it alone (the parent only") in text
    assert "Decision: exclude" in text
    assert "Note: the decision uses enrichment values this event did not carry " \
           "(AncestorImages, GrandparentImage)" in text
    # the same decision as a replay of this one event
    r = Replayer(ReplayOptions(config=load_config(rx)))
    st = r.run([str(plain)])
    r.close()
    assert (st.included[1], st.excluded[1]) == (0, 1)
    assert main(["config", "explain", rx, str(plain), "--brief"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("Event 1 ProcessCreate: exclude")
    assert "note: GrandparentImage not in this event, and not known from a single event" \
        in out.err


EXCL2 = """<Sysmon schemaversion="4.90"><EventFiltering><RuleGroup name="" groupRelation="or">
<ProcessCreate onmatch="exclude">
  <Image condition="end with">\\conhost.exe</Image>
  <Rule name="benign cmd from explorer" groupRelation="and">
    <Image condition="end with">\\cmd.exe</Image>
    <GrandparentImage condition="end with">\\userinit.exe</GrandparentImage>
  </Rule>
  <Rule name="either" groupRelation="or">
    <Image condition="end with">\\whoami.exe</Image>
    <AncestorImages condition="contains">\\services.exe</AncestorImages>
  </Rule>
</ProcessCreate>
</RuleGroup>
<RuleGroup name="" groupRelation="and">
<NetworkConnect onmatch="exclude">
  <Image condition="end with">\\svchost.exe</Image>
  <GrandparentImage condition="end with">\\userinit.exe</GrandparentImage>
</NetworkConnect>
</RuleGroup></EventFiltering></Sysmon>
"""


def _kept(corpus, tmp_path: Path, config: str) -> set[tuple]:
    """(EventID, Computer, EventRecordID) of every event ``sysmonx replay`` keeps."""
    out = tmp_path / (Path(config).stem + ".jsonl")
    assert main(["replay", "-q", str(corpus / "evtx"), "--config", config, "-f", "jsonl",
                 "-o", str(out)]) == 0
    return {(e["EventID"], e["System"]["Computer"], e["System"]["EventRecordID"])
            for e in map(json.loads, out.read_text().splitlines())}


def _export(src: str, dst: Path, capsys) -> str:
    assert main(["config", "export", "--sysmon", src, "-o", str(dst)]) == 0
    return capsys.readouterr().err


def test_export_never_widens_an_exclude_rule(corpus, tmp_path, capsys):
    # the report's excl.xml: exported as "exclude every cmd.exe", 663 -> 482 ProcessCreate
    excl = _write(tmp_path, "excl.xml", EXCL)
    err = _export(excl, tmp_path / "excl-exp.xml", capsys)
    orig, exp = _kept(corpus, tmp_path, excl), _kept(corpus, tmp_path,
                                                     str(tmp_path / "excl-exp.xml"))
    assert orig <= exp
    assert sum(1 for k in exp if k[0] == 1) == sum(1 for k in orig if k[0] == 1) == 663
    assert ("<Rule name='benign cmd from explorer'> in <ProcessCreate onmatch=\"exclude\"> "
            "removed whole (2 filters): without <GrandparentImage> it would match more events "
            "and so drop events the original keeps") in err
    assert "<ProcessCreate> has no filter left: as exported it logs every event of the tag" \
        in err
    # a plain exclusion stays, an OR <Rule> only narrows (said), an AND tag goes empty
    ex2 = _write(tmp_path, "excl2.xml", EXCL2)
    err = _export(ex2, tmp_path / "excl2-exp.xml", capsys)
    text = (tmp_path / "excl2-exp.xml").read_text()
    assert "\\conhost.exe" in text and "\\whoami.exe" in text and "\\svchost.exe" not in text
    assert ("<Rule name='either'> in <ProcessCreate onmatch=\"exclude\"> now matches fewer "
            "events (without <AncestorImages>): as exported it keeps events the original "
            "dropped") in err
    assert ("<NetworkConnect onmatch=\"exclude\"> (groupRelation and) lost all its 1 remaining "
            "filters") in err
    orig, exp = _kept(corpus, tmp_path, ex2), _kept(corpus, tmp_path,
                                                    str(tmp_path / "excl2-exp.xml"))
    assert orig <= exp
    per_id = {e: (sum(1 for k in orig if k[0] == e), sum(1 for k in exp if k[0] == e))
              for e in (1, 3)}
    # 14 ProcessCreate with services.exe among their ancestors were dropped by "either"
    assert per_id == {1: (643, 657), 3: (90, 90)}
    # the exported configs load in plain Sysmon mode
    for p in ("excl-exp.xml", "excl2-exp.xml"):
        load_config(tmp_path / p, extensions=False)


def test_export_says_what_a_widened_include_rule_does(tmp_path, capsys):
    rx = _write(tmp_path, "regex.xml", REGEX)
    err = _export(rx, tmp_path / "rx-exp.xml", capsys)
    assert ("<Rule name='cmd under wmiprvse'> in <ProcessCreate onmatch=\"include\"> now "
            "matches more events (without <GrandparentImage>): as exported it logs events the "
            "original dropped") in err
    assert ("<ProcessCreate onmatch=\"include\"> now matches more events for some and fewer "
            "for others") in err
    # the include rule is kept (it logs more, never less)
    assert "\\whoami.exe" in (tmp_path / "rx-exp.xml").read_text()


def test_stats_text_splits_kept_and_dropped_by_default(corpus, capsys):
    cfg = corpus / "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml"
    assert main(["config", "stats", str(cfg), str(corpus / "evtx")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("kept by" in x and "dropped by" in x for x in lines)
    start = next(i for i, x in enumerate(lines) if x.split()[:2] == ["EventID", "Event"])
    end = next(i for i, x in enumerate(lines) if x.split()[:1] == ["total"])
    rows = {x.split()[0]: x.split()[-5:] for x in lines[start + 1:end]}
    # read, kept, dropped, kept by default, dropped by default
    assert rows["1"][1:] == ["659", "4", "659", "0"]
    assert rows["7"][1:] == ["0", "562", "0", "562"]
    assert len(lines[end].split()) == 6
