"""Real inputs read as their producers meant them (sources and replay).

Each test builds its input here, in the shape a real export has (a Sentinel Syslog-table row of
Sysmon for Linux with entity references that lost their ``;``, a forwarded event without
``Name`` attributes, evtx-crate JSON, a folder holding a FIFO, an EVTX and its JSON export side
by side, an archive whose System times are local times labelled UTC). Corpus files are read in
place and tests that need them skip without the corpus.
"""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from sysmonx.cli import main
from sysmonx.pipeline import Replayer, ReplayOptions
from sysmonx.sources import ReadError, iter_input_files, open_source
from sysmonx.sources.xmlfile import ENTITY_REPAIR, repair_entity_refs

LINUX_SAMPLE = ("linux/elastic__integrations/packages/sysmon_linux/_dev/deploy/docker/"
                "sample_logs/sysmon.log")
NS = "http://schemas.microsoft.com/win/2004/08/events/event"


def read(path, fmt=None):
    """(events, notes) of one file: every ReadError whatever its severity."""
    notes: list[ReadError] = []
    return list(open_source(str(path), notes.append, fmt)), notes


def linux_event(record: int, data: list[tuple[str, str]], eid: int = 1) -> str:
    """One Sysmon for Linux event as it writes it to syslog (values already XML-escaped)."""
    body = "".join(f'<Data Name="{k}">{v}</Data>' for k, v in data)
    return ('<Event><System><Provider Name="Linux-Sysmon" '
            'Guid="{ff032593-a8d3-4f13-b0d6-01fc615a0f97}"/>'
            f"<EventID>{eid}</EventID><Version>5</Version><Level>4</Level><Task>{eid}</Task>"
            "<Opcode>0</Opcode><Keywords>0x8000000000000000</Keywords>"
            '<TimeCreated SystemTime="2024-03-05T10:11:12.123456000Z"/>'
            f"<EventRecordID>{record}</EventRecordID><Correlation/>"
            '<Execution ProcessID="812" ThreadID="812"/><Channel>Linux-Sysmon/Operational'
            "</Channel><Computer>web01</Computer><Security UserId=\"0\"/></System>"
            f"<EventData>{body}</EventData></Event>")


PROC = [("RuleName", "-"), ("UtcTime", "2024-03-05 10:11:12.120"),
        ("ProcessGuid", "{5a1b2c3d-0000-0000-0000-000000000001}"), ("ProcessId", "4242"),
        ("Image", "&lt;unknown process&gt;"), ("CommandLine", "echo &quot;hello&quot; &amp;&amp; id"),
        ("User", "root")]


# ---- 1. entity references without ';' ---------------------------------------------------------

@pytest.mark.parametrize("damage", ["deleted", "space"])
def test_entity_references_that_lost_their_semicolon_are_read_as_meant(tmp_path, damage):
    good = linux_event(7, PROC)
    bad = good.replace(";", "" if damage == "deleted" else " ")
    assert "&lt unknown process&gt " in bad or "&ltunknown process&gt<" in bad
    log = tmp_path / "syslog"
    log.write_text(f"Mar  5 10:11:12 web01 sysmon: {good}\n"
                   f"Mar  5 10:11:13 web01 sysmon: {bad}\n")
    events, notes = read(log)
    assert len(events) == 2
    assert events[1].data == events[0].data
    assert events[1].data["Image"] == "<unknown process>"
    assert events[1].data["CommandLine"] == 'echo "hello" && id'
    assert [(n.severity, n.offset, n.message) for n in notes] == [("repaired", 2, ENTITY_REPAIR)]


def test_repair_keeps_spaces_that_were_really_there_and_literal_text():
    # every ';' turned into a space: the space after each reference is the lost ';'
    assert repair_entity_refs(b"&lt a &gt </Data>") == b"&lt;a &gt;</Data>"
    # a reference followed by anything else proves the ';' was deleted: spaces are data
    assert repair_entity_refs(b"x&lt a&gty") == b"x&lt; a&gt;y"
    assert repair_entity_refs(b"&lt a &gt</Data>") == b"&lt; a &gt;</Data>"
    # '&amp;lt;' is the text '&lt;': with its ';' deleted it must still be that text
    assert repair_entity_refs(b"&amplt;") == b"&amp;lt;"
    assert repair_entity_refs(b"a & b") == b"a &amp; b"  # a lone '&' is an ampersand
    assert repair_entity_refs(b"&#60x") == b"&#60;x"
    assert repair_entity_refs(b"&lt;ok&gt;") is None  # nothing to repair
    assert repair_entity_refs(b"&xxe;") is None  # other entities are never touched


def test_undefined_entities_stay_errors_after_the_repair(tmp_path):
    log = tmp_path / "syslog"
    log.write_text("h sysmon: " + linux_event(1, [("Image", "&xxe; &lt")]) + "\n")
    events, notes = read(log)
    assert events == [] and len(notes) == 1 and notes[0].severity == "error"
    assert "malformed event XML" in notes[0].message


def test_sentinel_syslog_table_export_with_broken_entities(tmp_path):
    """The shape that lost 16 of 93 records: Sysmon for Linux inside Sentinel's Syslog table."""
    rows = []
    for i in range(1, 6):
        data = [("RuleName", "-"), ("UtcTime", "2024-03-05 10:11:12.120"), ("ProcessId", str(i)),
                ("Image", "&lt;unknown process&gt;" if i % 2 else "/usr/bin/id"),
                ("CommandLine", "&quot;hello&quot;" if i == 4 else "id")]
        msg = linux_event(i, data).replace(";", " ")  # what the export did to every record
        rows.append({"TenantId": "t", "SourceSystem": "Linux", "TimeGenerated":
                     "2024-03-05T10:11:13Z", "Computer": "web01", "Facility": "user",
                     "SeverityLevel": "info", "ProcessName": "sysmon", "SyslogMessage": msg,
                     "Type": "Syslog"})
    path = tmp_path / "sentinel.json"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    events, notes = read(path)
    assert len(events) == 5
    assert [e.data["Image"] for e in events] == ["<unknown process>", "/usr/bin/id"] * 2 + [
        "<unknown process>"]
    assert events[3].data["CommandLine"] == '"hello"'
    assert [(n.severity, n.offset) for n in notes] == [("repaired", i) for i in (1, 3, 4, 5)]


def test_replay_summary_counts_repaired_records(tmp_path, capsys):
    log = tmp_path / "syslog"
    lines = [linux_event(i, PROC) for i in range(1, 5)]
    lines[1] = lines[1].replace(";", "")
    lines[2] = lines[2].replace(";", " ")
    log.write_text("".join(f"h sysmon: {x}\n" for x in lines))
    out = tmp_path / "out.jsonl"
    assert main(["replay", str(log), "--format", "jsonl", "-o", str(out), "--strict"]) == 0
    err = capsys.readouterr().err
    assert "records repaired: 2 (entity references without ';'" in err
    assert f"note: {log}: 2 record(s) repaired: entity references without ';'" in err
    assert "errors: 0" in err
    written = [json.loads(x) for x in out.read_text().splitlines()]
    assert [w["Image"] for w in written] == ["<unknown process>"] * 4


def test_public_linux_sample_without_semicolons_equals_the_original(corpus, tmp_path):
    """Must-show: the public Sysmon for Linux sample with ';' removed from every entity
    reference (and, second form, turned into a space) replays to the same events."""
    original = (corpus / LINUX_SAMPLE).read_bytes()
    events, notes = read(corpus / LINUX_SAMPLE)
    assert notes == [] and len(events) == 36
    for replacement in (b"", b" "):
        damaged = original
        for ref in (b"&lt;", b"&gt;", b"&amp;", b"&quot;", b"&apos;"):
            damaged = damaged.replace(ref, ref[:-1] + replacement)
        assert damaged != original and b"&lt;" not in damaged
        path = tmp_path / "sysmon.log"
        path.write_bytes(damaged)
        got, got_notes = read(path)
        assert [e.key() for e in got] == [e.key() for e in events]
        assert len(got_notes) == 7 and {n.severity for n in got_notes} == {"repaired"}


# ---- 1. messages cut short by syslog --------------------------------------------------------------

def test_message_cut_short_keeps_its_complete_fields(tmp_path):
    full = linux_event(9, PROC)
    cut = full[:full.index("echo") + 3]  # inside the CommandLine value
    log = tmp_path / "syslog"
    log.write_text(f"h sysmon: {cut}\nh sysmon: {full}\n")
    events, notes = read(log)
    assert [e.record_id for e in events] == [9, 9]
    assert list(events[0].data) == ["RuleName", "UtcTime", "ProcessGuid", "ProcessId", "Image"]
    assert events[0].data["Image"] == "<unknown process>"
    assert "CommandLine" not in events[0].data  # never a half value passed on as whole
    assert len(notes) == 1 and notes[0].severity == "error" and notes[0].offset == 1
    assert "cut off after 5 complete field(s)" in notes[0].message


def test_message_cut_inside_its_header_is_reported_and_skipped(tmp_path):
    full = linux_event(9, PROC)
    log = tmp_path / "syslog"
    log.write_text(f"h sysmon: {full[:full.index('<Channel>')]}\n")
    events, notes = read(log)
    assert events == [] and "inside its System header" in notes[0].message


def test_follow_forwards_repaired_and_cut_records(tmp_path):
    from sysmonx.sources.syslog import SyslogFormat
    log = tmp_path / "syslog"
    full = linux_event(3, PROC)
    log.write_text(f"h sysmon: {full.replace(';', ' ')}\nh sysmon: {full[:full.index('echo')]}\n")
    got: list = []
    errors: list = []
    source = SyslogFormat(str(log), follow=True, from_start=True, poll_s=0.05)
    source.on_error = errors.append
    source.open()
    deadline = time.monotonic() + 10
    try:
        for item in source.events():
            if item is not None:
                got.append(item)
            if len(got) >= 2 or time.monotonic() > deadline:
                break
    finally:
        source.close()
    assert len(got) == 2 and errors == []  # no error events
    assert got[0].data["Image"] == "<unknown process>"
    assert source.stats() == {"received": 2, "lost": 0, "bad": 0, "repaired": 1,
                              "cut_short": 1}


# ---- 2. <Data> without Name, 3. <ComplexData Name=..> ---------------------------------------------

def windows_event(eid: int, version: int, body: str, provider="Microsoft-Windows-Sysmon",
                  record=1, channel="ForwardedEvents") -> str:
    return (f"<Event xmlns='{NS}'><System><Provider Name='{provider}'/>"
            f"<EventID>{eid}</EventID><Version>{version}</Version><Level>4</Level>"
            f"<Task>{eid}</Task><Opcode>0</Opcode><Keywords>0x8000000000000000</Keywords>"
            "<TimeCreated SystemTime='2024-03-05T10:11:12.1234567Z'/>"
            f"<EventRecordID>{record}</EventRecordID><Correlation/>"
            "<Execution ProcessID='3192' ThreadID='3288'/>"
            f"<Channel>{channel}</Channel><Computer>WS01.corp.example</Computer>"
            f"<Security UserID='S-1-5-18'/></System><EventData>{body}</EventData></Event>")


FILE_CREATE = ["technique_id=T1105", "2024-03-05 10:11:12.120",
               "{5a1b2c3d-0000-0000-0000-000000000002}", "4242", "C:\\Windows\\System32\\certutil.exe",
               "C:\\Users\\Public\\payload.exe", "2024-03-05 10:11:12.110", "CORP\\alice"]


def test_unnamed_data_of_a_sysmon_event_get_their_names_by_position(tmp_path):
    body = "".join(f"<Data>{v}</Data>" for v in FILE_CREATE)
    path = tmp_path / "forwarded.xml"
    path.write_text(f"<Events>{windows_event(11, 2, body)}</Events>")
    events, notes = read(path)
    assert notes == []
    assert list(events[0].data.items()) == list(zip(
        ["RuleName", "UtcTime", "ProcessGuid", "ProcessId", "Image", "TargetFilename",
         "CreationUtcTime", "User"], FILE_CREATE, strict=False))
    # ...so a config filter and a Sigma rule on the real names see them
    config = tmp_path / "c.xml"
    config.write_text('<Sysmon schemaversion="4.90"><EventFiltering><FileCreate onmatch="include">'
                      '<TargetFilename condition="end with">.exe</TargetFilename></FileCreate>'
                      "</EventFiltering></Sysmon>")
    from sysmonx.config import load_config
    r = Replayer(ReplayOptions(config=load_config(config)))
    assert r.run([str(path)]).included[11] == 1


def test_unnamed_data_that_fit_no_template_are_kept_and_warned_once(tmp_path):
    from sysmonx.schema import positional_names
    assert positional_names(11, 2, 5) is None  # FileCreate v2 has 6, 7 or 8 fields
    seven = "".join(f"<Data>{v}</Data>" for v in FILE_CREATE[:5])
    other = "<Data>alpha</Data><Data>beta</Data>"
    path = tmp_path / "mixed.xml"
    path.write_text(windows_event(11, 2, seven, record=1) + windows_event(11, 2, seven, record=2)
                    + windows_event(7036, 0, other, provider="Service Control Manager", record=3))
    events, notes = read(path)
    assert list(events[0].data) == ["Data"] + [f"Data_{i}" for i in range(2, 6)]
    assert events[2].data == {"Data": "alpha", "Data_2": "beta"}
    assert [(n.severity, n.offset) for n in notes] == [("warning", 1)]  # once per file
    assert "without Name" in notes[0].message and "EventID 11, version 2" in notes[0].message


def test_evtx_crate_json_with_unnamed_data(tmp_path):
    rec = {"Event": {"#attributes": {"xmlns": NS}, "System": {
        "Provider": {"#attributes": {"Name": "Microsoft-Windows-Sysmon",
                                     "Guid": "5770385F-C22A-43E0-BF4C-06F5698FFBD9"}},
        "EventID": 11, "Version": 2, "Level": 4, "Task": 11, "Opcode": 0,
        "Keywords": "0x8000000000000000",
        "TimeCreated": {"#attributes": {"SystemTime": "2024-03-05T10:11:12.123456Z"}},
        "EventRecordID": 5, "Correlation": None,
        "Execution": {"#attributes": {"ProcessID": 3192, "ThreadID": 3288}},
        "Channel": "ForwardedEvents", "Computer": "WS01", "Security": {"#attributes": {
            "UserID": "S-1-5-18"}}},
        "EventData": {"Data": {"#text": FILE_CREATE}}}}
    joined = json.loads(json.dumps(rec))
    joined["Event"]["EventData"] = {"Data": "".join(FILE_CREATE)}  # what the crate writes
    joined["Event"]["System"]["EventRecordID"] = 6
    path = tmp_path / "dump.json"
    path.write_text(json.dumps(rec) + "\n" + json.dumps(joined) + "\n")
    events, notes = read(path)
    assert events[0].data["TargetFilename"] == "C:\\Users\\Public\\payload.exe"
    assert events[0].data["ProcessGuid"] == "{5a1b2c3d-0000-0000-0000-000000000002}"
    assert events[1].data == {"Data": "".join(FILE_CREATE)}
    assert [(n.severity, n.offset_kind) for n in notes] == [("warning", "record")]


def test_complex_data_is_keyed_by_its_name(tmp_path):
    body = ("<Data Name='ProcessId'>4</Data><ComplexData Name='Details'>opened</ComplexData>"
            "<ComplexData Name='Target'><Path>C:\\x</Path><Mode>rw</Mode></ComplexData>")
    path = tmp_path / "complex.xml"
    path.write_text(windows_event(42, 0, body, provider="Microsoft-Windows-Example",
                                  channel="System"))
    events, notes = read(path)
    assert events[0].data == {"ProcessId": "4", "Details": "opened", "Target.Path": "C:\\x",
                              "Target.Mode": "rw"}
    rec = {"Event": {"System": {
        "Provider": {"#attributes": {"Name": "Microsoft-Windows-Example"}}, "EventID": 42,
        "TimeCreated": {"#attributes": {"SystemTime": "2024-03-05T10:11:12.123456Z"}}},
        "EventData": {"ProcessId": 4,
                      "ComplexData": {"#attributes": {"Name": "Details"}, "#text": "opened"},
                      "ComplexData_1": {"#attributes": {"Name": "Mode"}, "#text": "rw"}}}}
    path = tmp_path / "complex.json"
    path.write_text(json.dumps(rec) + "\n")
    events, notes = read(path)
    assert events[0].data == {"ProcessId": "4", "Details": "opened", "Mode": "rw"}
    # and a Sigma rule on the name fires
    from sysmonx.detection import DetectionStage, load_rules_text
    stage = DetectionStage(load_rules_text(
        "title: t\nid: 6c0bf1a4-2b8d-4d0a-9b73-6f3b8a2a0001\n"
        "logsource: {product: windows, service: system}\n"
        "detection: {sel: {Details: opened}, condition: sel}\n"))
    assert stage.rejected == []
    xml_event = read(tmp_path / "complex.xml")[0][0]
    assert len(stage.process(xml_event)) == 1


def test_winlogbeat_param_names_of_a_sysmon_event(tmp_path):
    rec = {"@timestamp": "2024-03-05T10:11:12.123Z", "winlog": {
        "event_id": 11, "provider_name": "Microsoft-Windows-Sysmon", "channel":
        "Microsoft-Windows-Sysmon/Operational", "computer_name": "WS01", "record_id": 9,
        "version": 2, "event_data": {f"param{i + 1}": v for i, v in enumerate(FILE_CREATE)}}}
    path = tmp_path / "wlb.json"
    path.write_text(json.dumps(rec) + "\n")
    events, notes = read(path)
    assert notes == [] and events[0].data["TargetFilename"] == FILE_CREATE[5]


# ---- 4. special files in folder walks ---------------------------------------------------------------

def test_folder_walk_skips_a_fifo_with_a_warning_and_an_explicit_fifo_streams(tmp_path, capsys):
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "a.log").write_text("h sysmon: " + linux_event(1, PROC) + "\n")
    fifo = folder / "events.log"
    os.mkfifo(fifo)
    warnings: list = []
    assert list(iter_input_files([str(folder)], warnings.append)) == [str(folder / "a.log")]
    assert [w.severity for w in warnings] == ["warning"]
    assert "named pipe" in warnings[0].message and warnings[0].path == str(fifo)
    # the whole replay returns (it used to wait forever on the FIFO) and says why
    done: list = []
    t = threading.Thread(target=lambda: done.append(
        main(["replay", str(folder), "--no-output"])), daemon=True)
    t.start()
    t.join(30)
    assert done == [0]
    err = capsys.readouterr().err
    assert f"warning: {fifo}: skipped: a named pipe (FIFO)" in err and "warnings: 1" in err
    # named explicitly, the FIFO is read as a stream
    writer = threading.Thread(target=lambda: fifo.write_text(
        "h sysmon: " + linux_event(2, PROC) + "\n"), daemon=True)
    writer.start()
    events, notes = read(fifo)
    writer.join(10)
    assert [e.record_id for e in events] == [2] and notes == []


# ---- 5. the same records twice ---------------------------------------------------------------------

def sysmon_events(n: int, start_rid: int = 100, computer: str = "WS01.corp.example",
                  hour: int = 10, system_offset_h: int = 0):
    """``n`` Sysmon process-creation events, one a minute, record ids from ``start_rid``; System
    time ``system_offset_h`` hours off the events' UtcTime."""
    from datetime import datetime, timedelta
    from sysmonx.event import Event
    out = []
    for i in range(n):
        utc = f"2024-03-05 {hour:02d}:{i:02d}:07.250"
        # the System time as a real time (an offset past midnight moves the date)
        sys_t = datetime(2024, 3, 5, hour, i, 7) + timedelta(hours=system_offset_h)
        out.append(Event(1, {"RuleName": "-", "UtcTime": utc,
                             "ProcessGuid": "{5a1b2c3d-0000-0000-0000-0000000000%02d}" % i,
                             "ProcessId": str(1000 + i), "Image": "C:\\Windows\\System32\\cmd.exe",
                             "CommandLine": f"cmd.exe /c whoami #{i}"},
                         version=5, level=4, task=1, record_id=start_rid + i, computer=computer,
                         time_created=sys_t.strftime("%Y-%m-%dT%H:%M:%S.251234500Z")))
    return out


def write_events(path, fmt, events):
    from sysmonx.pipeline import make_writer
    with open(path, "wb") as f:
        w = make_writer(fmt, f)
        w.close_stream = False
        for e in events:
            w.write(e)
        w.close()
    return path


def test_a_log_and_its_export_side_by_side_are_written_once(tmp_path, capsys):
    folder = tmp_path / "case"
    folder.mkdir()
    events = sysmon_events(5)
    write_events(folder / "log.xml", "xml", events)
    write_events(folder / "log.jsonl", "jsonl", events)
    out = tmp_path / "out.jsonl"
    assert main(["replay", str(folder), "--format", "jsonl", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert len(out.read_text().splitlines()) == 5
    assert "duplicates dropped: 5" in err and "records read: 10" in err
    assert main(["replay", str(folder), "--format", "jsonl", "-o", str(out),
                 "--keep-duplicates"]) == 0
    assert len(out.read_text().splitlines()) == 10
    assert "duplicates dropped" not in capsys.readouterr().err


def test_only_true_repeats_are_dropped(tmp_path):
    from sysmonx.stages.dedup import DuplicateFilter
    base = sysmon_events(3)
    restarted = sysmon_events(3, hour=12)            # same record ids, later: a cleared log
    other_host = sysmon_events(3, computer="WS02")   # same ids and times, another computer
    coarse = sysmon_events(3)                        # an export with millisecond times
    for e in coarse:
        e.time_created = e.time_created[:23] + "000000Z"
    no_id = sysmon_events(3)
    for e in no_id:
        e.record_id = None
    f = DuplicateFilter()
    verdicts = [f.is_duplicate(e) for group in (base, restarted, other_host, coarse, no_id, base,
                                                restarted) for e in group]
    assert verdicts == [False] * 9 + [True] * 3 + [False] * 3 + [True] * 6
    assert f.dropped == 9


def test_duplicate_filter_memory_is_bounded(tmp_path):
    from sysmonx.stages.dedup import DuplicateFilter
    f = DuplicateFilter(max_blocks=4)
    events = sysmon_events(60, start_rid=0) + sysmon_events(60, start_rid=10_000)
    for e in events:
        e.record_id = e.record_id * 64  # one block per record: the sparse worst case
    assert [f.is_duplicate(e) for e in events] == [False] * 120
    assert f.saturated and f.memory_bytes() <= 4 * (64 * 8 + 64)


def test_regression_layout_alerts_once(corpus, capsys):
    """SigmaHQ's regression layout keeps the EVTX and its JSON rendering side by side."""
    case = next((corpus / "sigma" / "regression_data").rglob("info.yml")).parent
    rule = sorted(case.glob("rule__*.yml"))
    assert main(["replay", str(case), "--rules", str(rule[0]), "--alerts", "-", "-q"]) == 0
    once = capsys.readouterr().out.splitlines()
    assert main(["replay", str(case), "--rules", str(rule[0]), "--alerts", "-", "-q",
                 "--keep-duplicates"]) == 0
    twice = capsys.readouterr().out.splitlines()
    assert len(once) >= 1 and len(twice) == 2 * len(once)


# ---- 6. System times that lie --------------------------------------------------------------------

def test_system_time_hours_off_utctime_is_warned_once_and_window_time_chooses(tmp_path, capsys):
    path = write_events(tmp_path / "export.jsonl", "jsonl", sysmon_events(30, system_offset_h=5))
    window = ["--from", "2024-03-05T10:10:00Z", "--to", "2024-03-05T10:20:00Z"]
    out = tmp_path / "out.jsonl"
    assert main(["replay", str(path), "-f", "jsonl", "-o", str(out), *window]) == 0
    err = capsys.readouterr().err
    assert err.count("System times are +5 h off the events' own UtcTime") == 1
    assert "--window-time utctime selects on UtcTime instead" in err
    assert out.read_text() == ""  # System times (15:xx) miss the window entirely
    assert main(["replay", str(path), "-f", "jsonl", "-o", str(out), *window,
                 "--window-time", "utctime"]) == 0
    got = [json.loads(x)["UtcTime"][11:16] for x in out.read_text().splitlines()]
    assert got == [f"10:{m:02d}" for m in range(10, 20)]
    assert "warnings: 1" in capsys.readouterr().err


def test_system_time_further_off_than_any_zone_is_not_called_local_time(tmp_path, capsys):
    """A Security-Datasets archive is 19 h off: no zone is (UTC-12..+14), so the warning must
    not say the exporter wrote local time."""
    path = write_events(tmp_path / "export.jsonl", "jsonl", sysmon_events(3, system_offset_h=-19))
    assert main(["replay", str(path), "-f", "jsonl", "-o", str(tmp_path / "o.jsonl")]) == 0
    err = capsys.readouterr().err
    assert err.count("System times are -19 h off the events' own UtcTime") == 1
    assert "more than any time zone is" in err and "local time labelled UTC" not in err


def test_system_time_close_to_utctime_is_not_warned(tmp_path):
    from sysmonx.stages.clock import ClockCheck
    events = sysmon_events(3)
    events[1].time_created = "2024-03-05T11:31:07.250000000Z"  # 1 h 30 min: not a zone
    events[2].time_created = "2024-03-05T09:59:59.900000000Z"  # across an hour boundary
    events[2].data["UtcTime"] = "2024-03-05 10:00:00.010"
    check = ClockCheck()
    assert [check.check(e) for e in events] == [None, None, None]
    events[0].time_created = "2024-03-05T02:00:08.000000000Z"  # -8 h and a second
    assert check.check(events[0]) == -8


# ---- 7. EVTX accounting ----------------------------------------------------------------------------

PANACHE = ("evtx/sbousseaden__EVTX-ATTACK-SAMPLES/AutomatedTestingTools/"
           "PanacheSysmon_vs_AtomicRedTeam01.evtx")  # 565 records in 15 chunks
CHUNK0, CHUNK = 4096, 65536


def _chunk_header_crc(b: bytearray, o: int) -> None:
    import struct
    import zlib
    struct.pack_into("<I", b, o + 124, zlib.crc32(bytes(b[o:o + 120]) + bytes(b[o + 128:o + 512])))


def overstate(data: bytes, slot: int, extra: int) -> bytes:
    """Chunk ``slot``'s header claims ``extra`` more records and more used space than it holds,
    the slack after its records zeroed, every checksum consistent (as the producer wrote it)."""
    import struct
    import zlib
    b = bytearray(data)
    o = CHUNK0 + slot * CHUNK
    last_number, _, last_id = struct.unpack_from("<QQQ", b, o + 16)
    free = struct.unpack_from("<I", b, o + 48)[0]
    b[o + free:o + CHUNK] = bytes(CHUNK - free)
    struct.pack_into("<Q", b, o + 16, last_number + extra)
    struct.pack_into("<Q", b, o + 32, last_id + extra)
    struct.pack_into("<I", b, o + 48, min(CHUNK, free + 300 * extra))
    struct.pack_into("<I", b, o + 52, zlib.crc32(bytes(b[o + 512:o + free])))
    _chunk_header_crc(b, o)
    return bytes(b)


@pytest.mark.parametrize("slot", [3, 14])  # a middle chunk, and the last one
def test_chunk_header_overstating_its_records_is_no_damage(corpus, tmp_path, capsys, slot):
    path = tmp_path / "over.evtx"
    path.write_bytes(overstate((corpus / PANACHE).read_bytes(), slot, 2))
    events, notes = read(path)
    assert len(events) == 565 and notes == []  # no phantom loss, none charged to a neighbour
    assert [e.origin[1] for e in events] == list(range(1, 566))  # record numbers, in order
    assert main(["replay", str(path), "--no-output", "--strict"]) == 0
    assert "errors: 0" in capsys.readouterr().err


def test_zeroed_size_of_a_chunks_first_record_loses_nothing(corpus, tmp_path, capsys):
    """The first record of a chunk carries the templates the chunk's other records use: skipping
    it lost all 39; its size is recovered from the trailing copy and the next record's magic."""
    import struct
    data = bytearray((corpus / PANACHE).read_bytes())
    first = CHUNK0 + 5 * CHUNK + 512
    struct.pack_into("<I", data, first + 4, 0)
    path = tmp_path / "zeroed.evtx"
    path.write_bytes(bytes(data))
    events, notes = read(path)
    assert len(events) == 565
    assert [(n.severity, n.offset) for n in notes] == [("warning", first)]
    assert "every record of chunk 5 was read" in notes[0].message
    assert main(["replay", str(path), "--no-output", "--strict"]) == 0
    capsys.readouterr()


def test_zeroed_size_of_a_chunks_last_record_loses_nothing(corpus, tmp_path):
    import struct
    data = bytearray((corpus / PANACHE).read_bytes())
    o = CHUNK0 + 6 * CHUNK
    pos, last = o + 512, None
    while data[pos:pos + 4] == b"**\x00\x00":
        last = pos
        pos += struct.unpack_from("<I", data, pos + 4)[0]
    struct.pack_into("<I", data, last + 4, 0)
    path = tmp_path / "zeroed-last.evtx"
    path.write_bytes(bytes(data))
    events, notes = read(path)
    assert len(events) == 565 and [(n.severity, n.offset) for n in notes] == [("warning", last)]


def test_lost_record_is_located_at_the_record_not_the_chunk(corpus, tmp_path):
    import struct
    data = bytearray((corpus / PANACHE).read_bytes())
    pos = CHUNK0 + 7 * CHUNK + 512
    for _ in range(3):  # the fourth record of chunk 7
        pos += struct.unpack_from("<I", data, pos + 4)[0]
    rid = struct.unpack_from("<Q", data, pos + 8)[0]
    data[pos + 16:pos + 24] = b"\xff" * 8  # its time: pyevtx-rs refuses the record, unnamed
    path = tmp_path / "time.evtx"
    path.write_bytes(bytes(data))
    events, notes = read(path)
    assert sorted(set(range(1, 566)) - {e.origin[1] for e in events}) == [rid]
    assert [(n.severity, n.offset) for n in notes] == [("error", pos)]
