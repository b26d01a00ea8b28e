"""Input and message findings of the session-12 new-user report (2, 3, 5, 9, 10, 11): a text
file that is not an event log is one warning whatever its name; ``--window-time utctime``
corrects the records without UtcTime by the offset the file's Sysmon events measured; options
that cannot apply are refused; the Sigma field warning suggests the nearest field; the config
checker names enrichment fields as extensions; and the smaller messages."""

from __future__ import annotations

import gzip
import io
import json
import random
import zipfile
from pathlib import Path

import pytest

from sysmonx.cli import builtin_sample_path, main
from sysmonx.sources import open_source
from sysmonx.sources.base import MAX_BAD_RUN
from sysmonx.stages.clock import MAX_OFFSETS_WARNED

NOT_A_LOG = "no events found (not an event log)"
TOML = "\n".join(f"key{i} = \"value {i}\"" for i in range(76)) + "\n[tool.x]\nname = 'y'\n"


def _lines(err: str, prefix: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(prefix)]


# -- finding 2: a text file that is not an event log ---------------------------------------------

@pytest.mark.parametrize("name", ["notlog.txt", "notlog.json", "notlog", "x.csv", "n.jsonl"])
@pytest.mark.parametrize("quiet", [True, False])
def test_text_that_is_not_a_log_is_one_warning_whatever_its_name(tmp_path, capsys, name, quiet):
    path = tmp_path / name
    path.write_text(TOML if name != "x.csv" else "a,b,c\n1,2,3\n")
    assert main(["replay", str(path), "--no-output", *(["-q"] if quiet else ["--no-progress"])]
                ) == 0
    err = capsys.readouterr().err
    assert _lines(err, "warning:") == [f"warning: {path}: {NOT_A_LOG}"]
    assert _lines(err, "error:") == []
    if not quiet:
        assert "errors: 0  warnings: 1" in err


def test_text_json_inside_nested_zip_is_one_warning(tmp_path, capsys):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("notlog.json", TOML)
    outer = tmp_path / "outer.zip"
    with zipfile.ZipFile(outer, "w") as z:
        z.writestr("in.zip", inner.getvalue())
    assert main(["replay", str(outer), "--no-output", "-q"]) == 0
    err = capsys.readouterr().err
    assert _lines(err, "warning:") == [f"warning: {outer}!in.zip!notlog.json: {NOT_A_LOG}"]
    assert _lines(err, "error:") == []


def test_damaged_lines_of_a_real_json_file_are_each_still_an_error(tmp_path, capsys):
    """Never hide real damage: a JSON lines file whose first lines are not JSON but which holds
    records reports every bad line, at its line, before the records (held until the first JSON
    object showed it is a JSON file)."""
    good = tmp_path / "good.jsonl"
    assert main(["replay", str(builtin_sample_path()), "-f", "jsonl", "-o", str(good),
                 "-q"]) == 0
    records = good.read_text().splitlines()
    mixed = tmp_path / "mixed.json"
    mixed.write_text("garbage first line\n# a comment\n" + "\n".join(records[:5])
                     + "\nnot json either\n" + "\n".join(records[5:]) + "\n")
    out = tmp_path / "out.jsonl"
    capsys.readouterr()
    assert main(["replay", str(mixed), "-f", "jsonl", "-o", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    errors = _lines(err, "error:")
    assert [e.split(": not JSON")[0] for e in errors] == [
        f"error: {mixed}:1", f"error: {mixed}:2", f"error: {mixed}:8"]
    assert NOT_A_LOG not in err
    assert out.read_text().splitlines() == records  # every record kept


def test_json_objects_that_are_not_records_are_still_errors(tmp_path):
    """JSON objects without EventID are damage of a JSON log, not text: one error per line."""
    p = tmp_path / "objs.json"
    p.write_text('{"a": 1}\n{"b": 2}\n')
    errors: list = []
    assert list(open_source(str(p), errors.append)) == []
    assert [(e.severity, e.offset) for e in errors] == [("error", 1), ("error", 2)]


def test_damaged_json_objects_are_errors_even_without_a_good_line(tmp_path):
    """Lines that start like a JSON object but do not parse (a raw control character in a
    string) are damage of a JSON log: every line is an error, text lines included."""
    p = tmp_path / "damaged.json"
    p.write_bytes(b'{"EventID": "\x1b[2J"}\nnot json\n{"EventID":1,"System":{"Time":"\x1b"}}\n')
    errors: list = []
    assert list(open_source(str(p), errors.append)) == []
    assert [(e.severity, e.offset) for e in errors] == [("error", 1), ("error", 2), ("error", 3)]


def test_long_text_named_json_is_one_warning_counting_what_was_not_read(tmp_path):
    p = tmp_path / "notes.json"
    p.write_text("".join(f"line {i}\n" for i in range(MAX_BAD_RUN + 40)))
    errors: list = []
    assert list(open_source(str(p), errors.append)) == []
    assert [(e.severity, e.message) for e in errors] == [
        ("warning", f"{NOT_A_LOG}: none of its first {MAX_BAD_RUN} lines is a JSON object; "
                    "the other 40 were not read")]


def test_binary_member_of_a_zip_has_the_same_message_as_a_binary_file(tmp_path, capsys):
    data = random.Random(3).randbytes(20_000)
    loose = tmp_path / "bin.json"
    loose.write_bytes(data)
    archive = tmp_path / "binz.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("bin.json", data)
    assert main(["replay", str(loose), str(archive), "--no-output", "-q"]) == 1
    errors = _lines(capsys.readouterr().err, "error:")
    what = ("unrecognised input format (binary content; expected EVTX, event XML, Sysmon for "
            "Linux syslog, JSON event records or an archive of them)")
    assert errors[:2] == [f"error: {loose}: {what}", f"error: {archive}!bin.json: {what}"]


# -- finding 3: --window-time utctime and records without UtcTime --------------------------------

def _sysmon(utc: str, system: str, rid: int) -> dict:
    return {"EventID": 1, "UtcTime": utc.replace("T", " ")[:23], "Image": "C:\\x.exe",
            "System": {"Provider": "Microsoft-Windows-Sysmon", "EventRecordID": rid,
                       "Channel": "Microsoft-Windows-Sysmon/Operational",
                       "Computer": "WS5", "TimeCreated": system}}


def _security(system: str, rid: int) -> dict:
    return {"EventID": 4688, "NewProcessName": "C:\\y.exe",
            "System": {"Provider": "Microsoft-Windows-Security-Auditing", "EventRecordID": rid,
                       "Channel": "Security", "Computer": "WS5", "TimeCreated": system}}


def _write(path: Path, records: list) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _window(tmp_path, capsys, path: Path, *extra: str) -> tuple[list, str]:
    out = tmp_path / "w.jsonl"
    assert main(["replay", str(path), "--non-sysmon", "pass", "-f", "jsonl", "-o", str(out),
                 "--from", "2020-10-22T05:54:00Z", "--to", "2020-10-22T05:55:00Z",
                 "--window-time", "utctime", "--no-progress", *extra]) == 0
    got = [(o["EventID"], o["System"]["EventRecordID"])
           for o in map(json.loads, out.read_text().splitlines())]
    return got, capsys.readouterr().err


def test_utctime_window_corrects_records_without_utctime_by_the_file_offset(tmp_path, capsys):
    """A Security-Datasets-like export, System times 4 h behind: the Security records (first in
    the file, before any Sysmon event) are compared on System time + 4 h and kept, in their
    place (main kept only the Sysmon events of the window)."""
    p = tmp_path / "mixed.json"
    _write(p, [_security("2020-10-22T01:54:10.000Z", 1), _security("2020-10-22T01:54:11.000Z", 2),
               _security("2020-10-22T02:10:00.000Z", 3),  # 06:10 UTC: outside
               _sysmon("2020-10-22T05:54:20.165", "2020-10-22T01:54:20.166Z", 4),
               _security("2020-10-22T01:54:30.000Z", 5),
               _sysmon("2020-10-22T06:30:00.000", "2020-10-22T02:30:00.001Z", 6)])  # outside
    got, err = _window(tmp_path, capsys, p)
    assert got == [(4688, 1), (4688, 2), (1, 4), (4688, 5)]
    assert (f"note: {p}: --window-time utctime: 4 records without UtcTime compared on System "
            "time corrected by the -4 h its Sysmon events measured") in err
    assert "time window: 2 records outside --from/--to skipped" in err


def test_utctime_window_says_what_it_could_not_correct(tmp_path, capsys):
    """A merged file with two offsets: records without UtcTime after the second one are compared
    on System time as it is, and the warning counts them and those left out."""
    p = tmp_path / "merged.json"
    _write(p, [_sysmon("2020-10-22T05:54:20.000", "2020-10-22T01:54:20.001Z", 1),
               _security("2020-10-22T01:54:25.000Z", 2),  # corrected: 05:54:25, kept
               _sysmon("2020-10-22T05:54:30.000", "2020-10-22T22:54:30.001Z", 3),  # +17 h
               _security("2020-10-22T01:54:40.000Z", 4),  # as it is: 01:54, left out
               _security("2020-10-22T05:54:50.000Z", 5)])  # as it is: inside
    got, err = _window(tmp_path, capsys, p)
    assert got == [(1, 1), (4688, 2), (1, 3), (4688, 5)]
    assert (f"warning: {p}: --window-time utctime: 2 records without UtcTime compared on System "
            "time as it is (its Sysmon events have more than one offset: -4 h, +17 h): 1 of them "
            "fell outside --from/--to and were skipped") in err


def test_utctime_window_real_security_datasets_export(corpus, tmp_path, capsys):
    """The report's own run: all 390 Security records of that minute are now kept."""
    f = corpus / ("json/OTRF__Security-Datasets/datasets/atomic/windows/defense_evasion/host/"
                  "psh_cmstp_execution_bypassuac.zip")
    out = tmp_path / "w.jsonl"
    assert main(["replay", str(f), "--non-sysmon", "pass", "-f", "jsonl", "-o", str(out), "-q",
                 "--from", "2020-10-22T05:54:00Z", "--to", "2020-10-22T05:55:00Z",
                 "--window-time", "utctime"]) == 0
    channels: dict = {}
    for o in map(json.loads, out.read_text().splitlines()):
        channels[o["System"]["Channel"]] = channels.get(o["System"]["Channel"], 0) + 1
    assert channels == {"Security": 390, "Microsoft-Windows-Sysmon/Operational": 775,
                        "System": 1}


# -- finding 11: one clock-skew warning per offset of a merged file ------------------------------

def test_clock_skew_warned_once_per_distinct_offset(tmp_path, capsys):
    p = tmp_path / "merged.json"
    recs = []
    for i, h in enumerate([-4, -4, -7, -4, -7, -19, -19]):
        recs.append(_sysmon(f"2020-10-22T22:00:{i:02d}.000",
                            f"2020-10-22T{22 + h:02d}:00:{i:02d}.001Z", i + 1))
    _write(p, recs)
    assert main(["replay", str(p), "--no-output", "--no-progress"]) == 0
    warned = [w for w in _lines(capsys.readouterr().err, "warning:") if "System times are" in w]
    assert [w.split("System times are ")[1].split(" off")[0] for w in warned] == [
        "-4 h", "-7 h", "-19 h"]
    assert "merged from several collections: -4 h, -7 h so far" in warned[1]


def test_clock_skew_warnings_are_bounded(tmp_path, capsys):
    p = tmp_path / "many.json"
    _write(p, [_sysmon(f"2020-10-22T12:00:{h:02d}.000", f"2020-10-22T{12 - h:02d}:00:{h:02d}.001Z",
                       h) for h in range(1, 12)])
    assert main(["replay", str(p), "--no-output", "--no-progress"]) == 0
    warned = [w for w in _lines(capsys.readouterr().err, "warning:") if "System times are" in w]
    assert len(warned) == MAX_OFFSETS_WARNED


# -- finding 5: options that do not apply ----------------------------------------------------------

RULE = """title: whoami
id: 99999999-0000-4000-8000-0000000000a1
status: test
level: high
logsource:
  category: process_creation
  product: windows
detection:
  selection:
    Image|endswith: '.exe'
  condition: selection
"""


def test_csv_bom_without_csv_is_a_usage_error(capsys):
    assert main(["replay", "--sample", "--csv-bom", "-q"]) == 87
    assert capsys.readouterr().err.splitlines() == [
        "error: --csv-bom marks a CSV output: give -f csv (the output is xml)"]


def test_alerts_to_stdout_with_csv_and_no_events_output_is_a_usage_error(tmp_path, capsys):
    rule = tmp_path / "r.yml"
    rule.write_text(RULE)
    assert main(["replay", "--sample", "--rules", str(rule), "--alerts", "-", "-f", "csv",
                 "-q"]) == 87
    assert capsys.readouterr().err.splitlines() == [
        "error: --alerts - writes the alerts to stdout as JSON lines and no event is written: "
        "-f csv applies to the events (give -o FILE for them)"]


def test_alerts_file_with_csv_events_is_noted(tmp_path, capsys):
    rule = tmp_path / "r.yml"
    rule.write_text(RULE)
    alerts, events = tmp_path / "a.jsonl", tmp_path / "e.csv"
    assert main(["replay", "--sample", "--rules", str(rule), "--alerts", str(alerts), "-f",
                 "csv", "-o", str(events), "--no-progress"]) == 0
    assert "note: --alerts writes JSON lines; -f csv applies to the event stream" in \
        capsys.readouterr().err.splitlines()
    assert json.loads(alerts.read_text().splitlines()[0])["type"] == "sigma_alert"


# -- finding 9: Sigma field typos ------------------------------------------------------------------

def test_sigma_field_warning_suggests_the_nearest_sysmon_field(tmp_path, capsys):
    rule = tmp_path / "typo.yml"
    rule.write_text(RULE.replace("Image|endswith: '.exe'",
                                 "CommandLIne|contains: 'whoami'\n    Imagee|endswith: '.exe'\n"
                                 "    Zzyzx: 'q'"))
    argv = ["replay", "--sample", "--rules", str(rule), "--no-output", "--no-progress"]
    assert main(argv) == 0  # by default one line of counts (27d); the listing names the fields
    err = capsys.readouterr().err.splitlines()
    assert "sigma: load issues (listed with --rule-issues): 1 warning field" in err
    assert not [x for x in err if "[field]" in x]
    assert main(argv + ["--rule-issues"]) == 0
    lines = [x for x in capsys.readouterr().err.splitlines() if "[field]" in x]
    assert len(lines) == 1
    assert ("field(s) CommandLIne (did you mean CommandLine?), Imagee (did you mean Image?), "
            "Zzyzx not in Sysmon's events of this log source") in lines[0]
    assert "enriched logs" not in lines[0] and "field names are case-sensitive" in lines[0]


# -- finding 10: enrichment fields with --no-extensions ---------------------------------------------

CONFIG = """<Sysmon schemaversion="4.90">
  <EventFiltering>
    <RuleGroup name="" groupRelation="or">
      <ProcessCreate onmatch="include">
        <GrandparentImage condition="end with">wmiprvse.exe</GrandparentImage>
        <AncestorImages condition="contains">cmd.exe</AncestorImages>
        <Imagee condition="end with">x.exe</Imagee>
      </ProcessCreate>
    </RuleGroup>
  </EventFiltering>
</Sysmon>
"""


def test_no_extensions_names_enrichment_fields_as_extensions(tmp_path, capsys):
    cfg = tmp_path / "my.xml"
    cfg.write_text(CONFIG)
    assert main(["config", "check", "--no-extensions", str(cfg)]) == 1
    err = capsys.readouterr().err
    for line, field in ((5, "GrandparentImage"), (6, "AncestorImages")):
        assert (f"error: {cfg}:{line}: Element {field} is not a field of ProcessCreate in schema "
                f"(No declaration for element {field})\n  {field} is a SysmonX extension (an "
                "enrichment field), refused while extensions are off (--no-extensions)\n") in err
    assert "Did you mean <ParentImage>?" not in err
    assert "Element Imagee is not a field of ProcessCreate in schema (No declaration for " \
           "element Imagee)\n  Did you mean <Image>?" in err  # a real typo keeps its help


# -- finding 11: smaller messages --------------------------------------------------------------------

def test_wildcard_warning_shows_the_value_as_written_and_counts_in_words(tmp_path, capsys):
    cfg = tmp_path / "warn.xml"
    cfg.write_text(CONFIG.replace(
        '<GrandparentImage condition="end with">wmiprvse.exe</GrandparentImage>\n'
        '        <AncestorImages condition="contains">cmd.exe</AncestorImages>\n'
        '        <Imagee condition="end with">x.exe</Imagee>',
        '<Image condition="is">C:\\Windows\\*.exe</Image>'))
    assert main(["config", "check", str(cfg)]) == 0
    out, err = capsys.readouterr()
    assert f"{cfg}:5: warning: <Image condition=\"is\">'C:\\Windows\\*.exe': '*' is not a " \
           "wildcard" in err
    assert "\\\\" not in err.split("condition=\"regex\"")[0]
    assert out.strip() == f"Configuration file validated: {cfg} (schema 4.90, 1 rule set, " \
                          "1 filter)"


def test_truncated_gzip_of_syslog_is_not_blamed_on_syslog(corpus, tmp_path, capsys):
    log = (corpus / "linux/elastic__integrations/packages/sysmon_linux/_dev/deploy/docker/"
           "sample_logs/sysmon.log").read_bytes()
    packed = gzip.compress(log)
    cut = tmp_path / "sl2.log.gz"
    cut.write_bytes(packed[:len(packed) * 2 // 3])
    assert main(["replay", str(cut), "--no-output", "-q"]) == 0
    errors = _lines(capsys.readouterr().err, "error:")
    assert errors[0] == (f"error: {cut}: compressed data cut off (truncated file); what came "
                         "before was read")
    assert "truncated by syslog" not in errors[1]
    assert "(the input ends inside it: a truncated file)" in errors[1]


def test_a_syslog_message_cut_by_syslog_still_says_so(tmp_path, capsys):
    sample = tmp_path / "one.log"
    line = ("<13>Oct 1 00:00:00 host sysmon: <Event><System><Provider Name=\"Linux-Sysmon\"/>"
            "<EventID>1</EventID><TimeCreated SystemTime=\"2024-01-01T00:00:00.000000000Z\"/>"
            "<Computer>h</Computer></System><EventData><Data Name=\"RuleName\">-</Data>"
            "<Data Name=\"UtcTime\">2024-01-01 00:00:00.000</Data><Data Name=\"Pro")
    sample.write_text(line + "\n")
    main(["replay", str(sample), "--no-output", "-q"])
    errors = _lines(capsys.readouterr().err, "error:")
    assert "(message truncated by syslog?)" in errors[0]


def test_forced_input_format_that_finds_nothing_says_so(corpus, capsys):
    evtx = corpus / ("evtx/sbousseaden__EVTX-ATTACK-SAMPLES/AutomatedTestingTools/"
                     "PanacheSysmon_vs_AtomicRedTeam01.evtx")
    assert main(["replay", str(evtx), "--input-format", "syslog", "--no-output", "-q"]) == 0
    assert _lines(capsys.readouterr().err, "warning:") == [
        f"warning: {evtx}: no events found as --input-format syslog (not an event log of that "
        "format)"]


def test_skipped_yaml_summary_has_no_dash_source(tmp_path, capsys):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yml").write_text(RULE)
    (rules / "info.yml").write_text("name: not a rule\n")
    assert main(["replay", "--sample", "--rules", str(rules), "--no-output",
                 "--no-progress"]) == 0
    skipped = [x for x in capsys.readouterr().err.splitlines() if "[skipped]" in x]
    assert len(skipped) == 1 and skipped[0].startswith("sigma: warning [skipped] 1 YAML file(s)")


def test_config_explain_on_text_that_is_not_a_log_says_it_in_two_lines(tmp_path, capsys):
    event = tmp_path / "notlog.json"
    event.write_text(TOML)
    assert main(["config", "explain", str(builtin_sample_path().parent / "default-config.xml"),
                 str(event)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"warning: {event}: {NOT_A_LOG}", f"error: {event}: no event found"]
