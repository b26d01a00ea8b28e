"""Rough edges a new user hit (session s9 report): JSON lines written with ``--enrich`` read
back, fatal replays exit non-zero, truncated-but-whole EVTX is a warning, Sigma alerts named
in the CSV timeline, argparse usage errors exit with Sysmon's 87, "did you mean" for a
mistyped field element and Sigma modifier."""

from __future__ import annotations

import orjson
import pytest

from sysmonx.cli import main

EVTX = ("evtx/sbousseaden__EVTX-ATTACK-SAMPLES/AutomatedTestingTools/Malware/"
        "rundll32_cmd_schtask.evtx")

# includes the marked chain (schtasks.exe under cmd.exe under rundll32.exe) by enrichment
CHAIN_CONFIG = """<Sysmon schemaversion="4.90">
  <EventFiltering>
    <RuleGroup name="" groupRelation="or">
      <ProcessCreate onmatch="include">
        <Rule name="chain" groupRelation="and">
          <GrandparentImage condition="image">rundll32.exe</GrandparentImage>
          <Image condition="end with">\\schtasks.exe</Image>
        </Rule>
        <Image condition="end with">\\cmd.exe</Image>
      </ProcessCreate>
    </RuleGroup>
  </EventFiltering>
</Sysmon>
"""

RULE = """title: Scheduled task from a cmd under rundll32
id: 5d0f1a2e-6c39-4c39-9b1a-6a8e4c5b7f01
status: test
level: high
tags:
  - attack.persistence
  - attack.t1053.005
logsource:
  product: windows
  category: process_creation
detection:
  selection:
    Image|endswith: '\\schtasks.exe'
    GrandparentImage|endswith: '\\rundll32.exe'
  condition: selection
"""


def _lines(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


@pytest.mark.parametrize("extra", [["--enrich"], [], ["--enrich", "--rules", "RULE"]],
                         ids=["enrich", "plain", "enrich+alerts"])
def test_every_jsonl_form_reads_back_to_the_same_events(corpus, tmp_path, capsys, extra):
    cfg = tmp_path / "chain.xml"
    cfg.write_text(CHAIN_CONFIG)
    rule = tmp_path / "rule.yml"
    rule.write_text(RULE)
    extra = [str(rule) if a == "RULE" else a for a in extra]
    src = str(corpus / EVTX)
    jl, xml = tmp_path / "ev.jsonl", tmp_path / "ev.xml"
    assert main(["replay", src, "-c", str(cfg), "-f", "jsonl", "-o", str(jl), "-q",
                 "--no-rule-cache", *extra]) == 0
    assert main(["replay", src, "-c", str(cfg), "-f", "xml", "-o", str(xml), "-q",
                 "--no-rule-cache", *extra]) == 0
    written = _lines(jl)
    if "--enrich" in extra:
        assert sum("Enrichment" in e for e in written) >= 2
    if "--rules" in extra:
        assert [e["RuleTitle"] for e in written if e["EventID"] == 1000] == \
            ["Scheduled task from a cmd under rundll32"]
    capsys.readouterr()
    # JSON lines and XML of the same replay, each read back as XML: the same bytes, no error
    back_j, back_x = tmp_path / "back-j.xml", tmp_path / "back-x.xml"
    assert main(["replay", str(jl), "-f", "xml", "-o", str(back_j)]) == 0
    err = capsys.readouterr().err
    assert "error:" not in err and "errors: 0" in err
    assert main(["replay", str(xml), "-f", "xml", "-o", str(back_x)]) == 0
    assert back_j.read_bytes() == back_x.read_bytes()
    # SysmonX's alerts (event 1000) are read back as SysmonX events and written again
    assert back_j.read_bytes().count(b"<Event ") == len(written) >= 2
    assert back_x.read_bytes() == xml.read_bytes()
    # and JSON lines to JSON lines is the identity, alerts included
    back_jl = tmp_path / "back.jsonl"
    assert main(["replay", str(jl), "-f", "jsonl", "-o", str(back_jl), "-q"]) == 0
    assert _lines(back_jl) == written


def test_enriched_line_is_read_with_its_enrichment_fields_last():
    from sysmonx.sources.jsonl import event_from_object
    e = event_from_object({"EventID": 1, "Image": "C:\\a.exe", "System": {},
                           "Enrichment": {"GrandparentImage": "C:\\g.exe",
                                          "AncestorImages": "C:\\p.exe|C:\\g.exe"}})
    assert list(e.data.items()) == [("Image", "C:\\a.exe"), ("GrandparentImage", "C:\\g.exe"),
                                    ("AncestorImages", "C:\\p.exe|C:\\g.exe")]
    with pytest.raises(ValueError, match="Enrichment is not an object"):
        event_from_object({"EventID": 1, "Enrichment": ["x"]})
    with pytest.raises(ValueError, match="repeats a field"):
        event_from_object({"EventID": 1, "Image": "a", "Enrichment": {"Image": "b"}})


def test_config_explain_reads_an_enriched_line(corpus, tmp_path, capsys):
    jl = tmp_path / "ev.jsonl"
    assert main(["replay", str(corpus / EVTX), "--enrich", "-f", "jsonl", "-o", str(jl),
                 "-q"]) == 0
    line = next(ln for ln in jl.read_bytes().splitlines() if b"schtasks.exe" in ln
                and b'"EventID":1,' in ln)
    one = tmp_path / "one.json"
    one.write_bytes(line + b"\n")
    cfg = tmp_path / "c.xml"
    cfg.write_text(CHAIN_CONFIG)
    capsys.readouterr()
    assert main(["config", "explain", str(cfg), str(one)]) == 0
    out, err = capsys.readouterr()
    assert "error:" not in err and "Decision: " in out


def test_replay_whose_every_input_fails_is_fatal_without_strict(corpus, tmp_path, capsys):
    fake = tmp_path / "fake.evtx"
    fake.write_bytes(b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 600)
    empty = tmp_path / "empty.evtx"
    empty.write_bytes(b"")
    assert main(["replay", str(fake), "--no-output", "-q"]) == 1
    err = capsys.readouterr().err
    assert "not a readable EVTX file" in err
    assert "error: nothing was read: the input gave no record (1 error above)" in err
    assert main(["replay", str(fake), str(empty), "--no-output", "-q"]) == 1
    # the empty file is a warning (as an empty .json is), the fake one the error
    assert "none of the 2 inputs gave a record (1 error above)" in capsys.readouterr().err
    # a partial failure stays exit 0 (the good file's events are written), 1 with --strict
    good = str(corpus / EVTX)
    assert main(["replay", str(fake), good, "--no-output", "-q"]) == 0
    assert "nothing was read" not in capsys.readouterr().err
    assert main(["replay", str(fake), good, "--no-output", "-q", "--strict"]) == 1


def test_rules_that_load_nothing_are_fatal(tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.yml").write_text(RULE.replace("Image|endswith", "Image|endswithh"))
    assert main(["replay", "--sample", "--rules", str(bad), "--no-output", "--no-rule-cache"]) \
        == 1
    err = capsys.readouterr().err
    assert "Unknown modifier 'endswithh'" in err and "did you mean 'endswith'?" in err
    assert f"error: --rules: no Sigma rule loaded from {bad} (1 rejected: see above)" in err
    # under -q the reasons are not above: say how to see them (new-user report, session 10)
    assert main(["replay", "--sample", "--rules", str(bad), "--no-output", "--no-rule-cache",
                 "-q"]) == 1
    err = capsys.readouterr().err
    assert "endswithh" not in err
    assert (f"error: --rules: no Sigma rule loaded from {bad} (1 rejected: run without -q to "
            "see why)") in err
    empty = tmp_path / "none"
    empty.mkdir()
    assert main(["replay", "--sample", "--rules", str(empty), "--no-output", "-q",
                 "--no-rule-cache"]) == 1
    assert "(no rule found); nothing to detect with" in capsys.readouterr().err
    # one good rule beside the bad one: the run goes on
    (bad / "b.yml").write_text(RULE)
    assert main(["replay", "--sample", "--rules", str(bad), "--no-output", "-q",
                 "--no-rule-cache"]) == 0


@pytest.mark.parametrize("argv", [["replya", "x"], ["replay", "--fromat", "xml"],
                                  ["config", "nope"], ["run", "--duration"],
                                  ["query"], ["coverage", "--bogus"]])
def test_usage_errors_exit_87_like_sysmon(argv, capsys):
    assert main(argv) == 87
    capsys.readouterr()


@pytest.mark.parametrize("argv, named", [
    (["config", "stats", "--bogus", "anc.xml"], "--bogus"),
    (["config", "diff", "--bogus=1", "a.xml", "b.xml"], "--bogus=1"),
    (["config", "check", "-Z"], "-Z"),
    (["config", "compile", "--nope", "x.xml"], "--nope"),
    (["coverage", "--bogus"], "--bogus"),
    (["query", "--bogus"], "--bogus"),
    (["collect", "--bogus"], "--bogus"),
])
def test_an_unknown_option_is_named_even_when_a_positional_is_missing(argv, named, capsys):
    """A new user: ``config stats --bogus anc.xml`` said "the following arguments are
    required: LOGS" (argparse took anc.xml as the config and reported what was missing
    first); replay and run named the unknown option. Every command names it; exit 87."""
    assert main(argv) == 87
    err = capsys.readouterr().err
    assert err.rstrip().endswith(f"error: unrecognized arguments: {named}"), err
    assert "arguments are required" not in err


def test_known_options_abbreviations_and_values_are_not_called_unknown(capsys):
    """Only a real unknown option changes the message: an abbreviation argparse accepts
    (``--fo`` for ``--format``), a value glued to a short option (``-fjson``), ``-`` and
    anything after ``--`` still leave the missing positional as the error."""
    for argv in (["config", "stats", "--fo", "json", "x.xml"],
                 ["config", "stats", "-fjson", "x.xml"],
                 ["config", "stats", "-o", "-", "x.xml"],
                 ["config", "stats", "--top=3", "x.xml"],
                 ["config", "stats", "x.xml", "--"]):
        assert main(argv) == 87
        err = capsys.readouterr().err
        assert err.rstrip().endswith("the following arguments are required: LOGS"), (argv, err)


def test_help_lists_every_replay_output_format(capsys):
    from sysmonx.cli.common import output_formats
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "--format " in ln and "replay" in ln)
    listed = line.split("--format ", 1)[1].split("]", 1)[0].split("|")
    assert sorted(listed) == sorted(output_formats())


def test_mistyped_field_element_gets_did_you_mean(tmp_path, capsys):
    cfg = tmp_path / "typo.xml"
    cfg.write_text('<Sysmon schemaversion="4.90"><EventFiltering><RuleGroup name="" '
                   'groupRelation="or"><ProcessCreate onmatch="include">'
                   '<Imagee condition="end with">x</Imagee></ProcessCreate></RuleGroup>'
                   '</EventFiltering></Sysmon>')
    assert main(["config", "check", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "Element Imagee is not a field of ProcessCreate" in err
    assert "Did you mean <Image>?" in err
    cfg.write_text(cfg.read_text().replace("Imagee", "parentimage"))
    assert main(["config", "check", str(cfg)]) == 1
    assert "Did you mean <ParentImage>?" in capsys.readouterr().err


def test_mistyped_event_tag_gets_did_you_mean(tmp_path, capsys):
    """New-user report s14 #6: a mistyped field got a suggestion, a mistyped event tag not."""
    cfg = tmp_path / "typo.xml"
    cfg.write_text('<Sysmon schemaversion="4.90"><EventFiltering><RuleGroup name="" '
                   'groupRelation="or"><NetworkConect onmatch="include">'
                   '<Image condition="end with">x</Image></NetworkConect></RuleGroup>'
                   '</EventFiltering></Sysmon>')
    assert main(["config", "check", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "Unknown event tag <NetworkConect> for schema 4.90" in err
    assert "Did you mean <NetworkConnect>?" in err
    cfg.write_text(cfg.read_text().replace("NetworkConect", "Unrelated"))
    assert main(["config", "check", str(cfg)]) == 1
    assert "Did you mean" not in capsys.readouterr().err


PCALUA = "evtx/sbousseaden__EVTX-ATTACK-SAMPLES/Execution/exec_sysmon_1_lolbin_pcalua.evtx"


def test_truncated_evtx_that_lost_no_record_is_a_warning(corpus, tmp_path, capsys):
    data = (corpus / PCALUA).read_bytes()
    whole = tmp_path / "whole.evtx"
    whole.write_bytes(data[:40000])  # cut inside chunk 0, after its 3 records
    out = tmp_path / "w.jsonl"
    assert main(["replay", str(whole), "-f", "jsonl", "-o", str(out), "--strict"]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "file truncated at byte 40000 inside chunk 0, after its last " \
        "record: no record lost (3 read)" in err
    assert "error:" not in err and "errors: 0  warnings: 1" in err
    assert len(out.read_bytes().splitlines()) == 3
    # records lost: still an error
    lossy = tmp_path / "lossy.evtx"
    lossy.write_bytes(data[:10000])
    assert main(["replay", str(lossy), "--no-output"]) == 0
    err = capsys.readouterr().err
    assert "error: " in err and "1 of the 3 records of chunk 0 are lost (2 read from its " \
        "intact part)" in err and "errors: 1" in err


def test_csv_timeline_names_sigma_alert_rows(corpus, tmp_path, capsys):
    import csv
    rule = tmp_path / "rule.yml"
    rule.write_text(RULE)
    out = tmp_path / "t.csv"
    assert main(["replay", str(corpus / EVTX), "--rules", str(rule), "--no-rule-cache", "-f",
                 "csv", "-o", str(out), "-q"]) == 0
    rows = list(csv.DictReader(out.open(newline="", encoding="utf-8")))
    alerts = [r for r in rows if r["EventID"] == "1000"]
    assert [(r["EventName"], r["RuleName"], r["Details"], r["Provider"]) for r in alerts] == [
        ("SigmaAlert", "Scheduled task from a cmd under rundll32", "level high; T1053.005",
         "SysmonX")]
    # the columns stay; the Sysmon rows keep their own names and RuleName
    assert list(rows[0]) == ["TimeCreated", "Computer", "Provider", "Channel", "EventID",
                             "EventName", "RecordID", "ProcessId", "Image", "CommandLine",
                             "ParentImage", "User", "Details", "RuleName", "EventData"]
    assert {r["EventName"] for r in rows if r["EventID"] == "1"} == {"ProcessCreate"}
    assert {r["Channel"] for r in rows if r["EventID"] != "1000"} == {
        "Microsoft-Windows-Sysmon/Operational"}
    assert alerts[0]["Image"] == "C:\\Windows\\SysWOW64\\schtasks.exe"
    # the alert row names the matched record, as Hayabusa's timelines do (was the alert's own
    # number, 1, and no Channel column): the row just before it is that record
    at = rows.index(alerts[0])
    matched = rows[at - 1]
    assert (alerts[0]["Channel"], alerts[0]["RecordID"]) == (
        "Microsoft-Windows-Sysmon/Operational", matched["RecordID"])
    assert matched["RecordID"] != "1" and matched["Image"] == alerts[0]["Image"]


def test_readme_ancestry_example_matches_the_outermost_ancestor():
    import re
    from pathlib import Path

    from sysmonx.config import parse_config
    from sysmonx.filtering.engine import FilterEngine
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```xml\n(<ProcessCreate onmatch=\"include\">\n  <Rule "
                      r"groupRelation=\"and\">.*?</ProcessCreate>)\n```", readme, re.S).group(1)
    engine = FilterEngine(parse_config(
        '<Sysmon schemaversion="4.90"><EventFiltering><RuleGroup name="" groupRelation="or">'
        + block + "</RuleGroup></EventFiltering></Sysmon>"))

    def kept(ancestors: str) -> bool:
        return engine.decide(1, {"Image": "/usr/bin/id", "GrandparentImage": "/usr/sbin/sshd",
                                 "AncestorImages": ancestors})[0]

    assert kept("/usr/sbin/sshd|/usr/sbin/cron")      # outermost: no "|" after it
    assert kept("/usr/sbin/cron|/usr/lib/systemd/systemd")
    assert kept("/usr/sbin/cron")
    assert not kept("/usr/sbin/sshd|/usr/sbin/crond")


def test_csv_timeline_details_of_a_tamper_finding():
    """A TamperFinding row (201) says in Details what was seen (review: the column was empty,
    the text only inside EventData)."""
    from sysmonx.sinks.csv_timeline import details
    from sysmonx.stages.tamperfinding import tamper_finding
    ev = tamper_finding("config_weakened", "configuration SHA256=A -> SHA256=B collects less: "
                        "not logged any more: ProcessCreate (1)", platform="linux")
    assert details(ev) == ("config_weakened: configuration SHA256=A -> SHA256=B collects "
                           "less: not logged any more: ProcessCreate (1)")


def test_output_file_ending_picks_the_format_when_none_is_given(tmp_path, corpus):
    """Session 14: README's `replay LOGS -o events.jsonl` wrote Windows event XML into a file
    named .jsonl. Without --format, the -o files' ending chooses (all alike), else XML as
    before; --format always wins."""
    from sysmonx.cli.replay import format_from_outputs
    assert format_from_outputs(["a.jsonl"]) == "jsonl"
    assert format_from_outputs(["A.NDJSON", "b.jsonl"]) == "jsonl"
    assert format_from_outputs(["a.csv", "-"]) == "csv"
    assert format_from_outputs(["a.jsonl", "b.xml"]) == "xml"      # mixed: the default
    assert format_from_outputs(["a.log"]) == "xml"
    assert format_from_outputs(["tcp://127.0.0.1:514", "-"]) == "xml"
    assert format_from_outputs([]) == "xml"
    evtx = sorted((corpus / "evtx").rglob("*.evtx"))[0]
    out = tmp_path / "events.jsonl"
    assert main(["replay", "-q", str(evtx), "-o", str(out)]) == 0
    first = out.read_text().splitlines()[0]
    assert first.startswith('{"EventID":')
    assert main(["replay", "-q", str(evtx), "-f", "xml", "-o", str(out)]) == 0
    assert out.read_text().startswith("<Event xmlns=")
