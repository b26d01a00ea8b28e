"""Writers (sysmonx.sinks): exact Windows and Linux XML renderings, JSON lines layout, the round
trip of every corpus EVTX record through every writer and its reader, and hostile values.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import orjson
import pytest
from evtx import PyEvtxParser
from lxml import etree

from sysmonx.event import Event
from sysmonx.sinks import WRITERS, writer_class
from sysmonx.sinks.jsonl import JsonlWriter, event_to_json
from sysmonx.sinks.xml_linux import LinuxXmlWriter, render_linux_xml
from sysmonx.sinks.xml_windows import WindowsXmlWriter, render_windows_xml
from sysmonx.sources import ReadError, open_source

from conftest import corpus_path

BABYSHARK = ("evtx/sbousseaden__EVTX-ATTACK-SAMPLES/Credential Access/"
             "babyshark_mimikatz_powershell.evtx")
SYSLOG = ("linux/elastic__integrations/packages/sysmon_linux/_dev/deploy/docker/sample_logs/"
          "sysmon.log")

# writer name -> (file suffix, reader formats that must read it back)
READERS = {"jsonl": (".jsonl", ["jsonl"]), "xml": (".xml", ["xml", "syslog"]),
           "linux-xml": (".log", ["xml", "syslog"])}


def _evtx_files() -> list:
    root = corpus_path()
    if root is None:
        return [pytest.param(None, marks=pytest.mark.skip(reason="reference corpus not available"))]
    files = sorted((root / "evtx").rglob("*.evtx"))
    return [pytest.param(f, id=f.name) for f in files]


def read(path, fmt=None):
    errors: list[ReadError] = []
    events = list(open_source(str(path), errors.append, fmt))
    return events, errors


def write_all(tmp_path: Path, name: str, events, **options) -> Path:
    out = tmp_path / ("out" + READERS[name][0])
    with writer_class(name)(open(out, "wb"), **options) as w:
        for e in events:
            w.write(e)
    return out


# ---- exact renderings ---------------------------------------------------------------------------

def test_windows_xml_of_a_known_record(corpus):
    events, _ = read(corpus / BABYSHARK)
    e = next(e for e in events if e.record_id == 4)
    xml = render_windows_xml(e)
    assert xml.startswith(
        "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>"
        "<Provider Name='Microsoft-Windows-Sysmon' Guid='{5770385f-c22a-43e0-bf4c-06f5698ffbd9}'/>"
        "<EventID>1</EventID><Version>5</Version><Level>4</Level><Task>1</Task><Opcode>0</Opcode>"
        "<Keywords>0x8000000000000000</Keywords>"
        "<TimeCreated SystemTime='2019-04-18T16:55:37.1251390Z'/><EventRecordID>4</EventRecordID>"
        "<Correlation/><Execution ProcessID='3192' ThreadID='3288'/>"
        "<Channel>Microsoft-Windows-Sysmon/Operational</Channel><Computer>IEWIN7</Computer>"
        "<Security UserID='S-1-5-18'/></System><EventData><Data Name='RuleName'></Data>"
        "<Data Name='UtcTime'>2019-04-18 16:55:37.075</Data>"
        "<Data Name='ProcessGuid'>{365abb72-ac09-5cb8-0000-0010999c0700}</Data>"
        "<Data Name='ProcessId'>3232</Data>"
        "<Data Name='Image'>C:\\Windows\\System32\\wbem\\unsecapp.exe</Data>")
    assert xml.endswith("<Data Name='ParentCommandLine'>C:\\Windows\\system32\\svchost.exe -k "
                        "DcomLaunch</Data></EventData></Event>")
    assert "\n" not in xml


def test_windows_xml_without_user_and_optional_header_parts():
    e = Event(5, {}, version=None, level=None, task=None, opcode=None, keywords=None,
              provider_guid=None, time_created="", channel="C", computer="H")
    assert render_windows_xml(e) == (
        "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>"
        "<Provider Name='Microsoft-Windows-Sysmon'/><EventID>5</EventID><TimeCreated/>"
        "<Correlation/><Execution/><Channel>C</Channel><Computer>H</Computer><Security/>"
        "</System><EventData/></Event>")


def test_linux_xml_matches_the_corpus_byte_for_byte(corpus):
    path = corpus / SYSLOG
    events, errors = read(path, "syslog")
    assert errors == [] and len(events) == 36
    lines = path.read_bytes().split(b"\r\n")
    for e in events:
        line = lines[e.origin[1] - 1]
        assert render_linux_xml(e).encode() == line[line.index(b"<Event>"):]


def test_linux_xml_keeps_or_rewrites_the_envelope(corpus):
    events, _ = read(corpus / BABYSHARK)
    e = next(e for e in events if e.record_id == 4)
    assert '<Provider Name="Microsoft-Windows-Sysmon" Guid="{5770385f-' in render_linux_xml(e)
    linux = render_linux_xml(e, rewrite_envelope=True)
    assert linux.startswith('<Event><System><Provider Name="Linux-Sysmon" '
                            'Guid="{ff032593-a8d3-4f13-b0d6-01fc615a0f97}"/>')
    assert "<Channel>Linux-Sysmon/Operational</Channel>" in linux
    assert f'<TimeCreated SystemTime="{e.time_created}"/>' in linux
    assert '<Security UserId="S-1-5-18"/>' in linux


def test_jsonl_layout(corpus):
    events, _ = read(corpus / BABYSHARK)
    e = next(e for e in events if e.record_id == 4)
    obj = orjson.loads(event_to_json(e))
    keys = list(obj)
    assert keys[0] == "EventID" and keys[-1] == "System" and obj["EventID"] == 1
    assert keys[1:-1] == list(e.data)
    assert obj["ProcessGuid"] == "{365abb72-ac09-5cb8-0000-0010999c0700}"
    assert obj["System"] == {
        "Provider": "Microsoft-Windows-Sysmon",
        "ProviderGuid": "{5770385f-c22a-43e0-bf4c-06f5698ffbd9}", "Version": 5, "Level": 4,
        "Task": 1, "Opcode": 0, "Keywords": "0x8000000000000000",
        "TimeCreated": "2019-04-18T16:55:37.125139000Z", "EventRecordID": 4, "ProcessID": 3192,
        "ThreadID": 3288, "Channel": "Microsoft-Windows-Sysmon/Operational",
        "Computer": "IEWIN7", "UserID": "S-1-5-18"}


def test_jsonl_reserved_names_go_to_extra_data_and_come_back(tmp_path):
    e = Event(4688, {"a": "1", "EventID": "forged", "b": "2", "System": "{}", "ExtraData": "x"},
              provider="Microsoft-Windows-Security-Auditing", channel="Security")
    obj = orjson.loads(event_to_json(e))
    assert obj["EventID"] == 4688 and obj["a"] == "1" and "b" not in obj
    assert obj["ExtraData"] == {"EventID": "forged", "b": "2", "System": "{}", "ExtraData": "x"}
    assert obj["System"]["Channel"] == "Security"
    out = write_all(tmp_path, "jsonl", [e])
    (back,), errors = read(out)
    assert errors == [] and back == e


# ---- round trip of every corpus record ----------------------------------------------------------

@pytest.mark.parametrize("evtx_file", _evtx_files())
def test_every_corpus_record_round_trips_through_every_writer(tmp_path, evtx_file):
    events, errors = read(evtx_file)
    assert errors == []
    assert len(events) == sum(1 for _ in PyEvtxParser(str(evtx_file)).records_json())
    for name, (_, formats) in READERS.items():
        out = write_all(tmp_path, name, events)
        assert out.read_bytes().count(b"\n") == len(events)
        for fmt in formats:
            back, errors = read(out, fmt)
            assert errors == []
            assert back == events, (name, fmt)
            assert [b.origin[1] for b in back] == list(range(1, len(events) + 1))
    out = write_all(tmp_path, "xml", events, root=True)
    doc = etree.parse(str(out))  # one well-formed document
    assert len(doc.getroot()) == len(events)
    assert read(out)[0] == events


# ---- hostile values -----------------------------------------------------------------------------

HOSTILE = {
    "RuleName": "-",
    "Image": "C:\\a&b<c>d\"e'f.exe",
    "CommandLine": "line1\nline2\r\nline3\rend",
    "Markup": "</Data><Data Name='Image'>evil</Data><Data Name=\"User\">root",
    "Cdata": "]]> <![CDATA[ x ]]>",
    "Controls": "esc\x1b nul\x00 bel\x07 tab\t del\x7f",
    "Surrogate": "lone \ud800 and \udfff",
    "NonChars": "\ufffe\uffff",
    "Separators": "nel\x85 ls\u2028 ps\u2029",
    "Entities": "&amp; &#10; &lt;Event&gt; &xxe;",
    "JsonForge": '", "EventID": 99, "x": "',
    "Unicode": "Ünïcødé 日本 \U0001f600",
    "Empty": "",
    "Spaces": "  padded  ",
    "Name with 'quotes' & <tags>\n": "v",
}


def hostile_event(record: int) -> Event:
    return Event(1, dict(HOSTILE), record_id=record, version=5, level=4, task=1,
                 time_created="2024-01-02T03:04:05.123456700Z", process_id=1, thread_id=2,
                 computer="host\n<Computer>evil</Computer>", user_id="S-1-5-18' x='1\"",
                 keywords="0x8000000000000000", channel="Microsoft-Windows-Sysmon/Operational")


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_rendering(value: str) -> str:
    """What the XML writers document for characters XML 1.0 cannot carry: ``\\uXXXX`` text."""
    return _NOT_XML.sub(lambda m: "\\u%04x" % ord(m.group()), value)


@pytest.mark.parametrize("name", list(READERS))  # csv: tests/test_hostile.py
def test_hostile_values_cannot_forge_fields_events_or_lines(tmp_path, name):
    events = [hostile_event(1), hostile_event(2)]
    out = write_all(tmp_path, name, events)
    raw = out.read_bytes()
    assert raw.count(b"\n") == 2 and raw.endswith(b"\n")
    for fmt in READERS[name][1]:
        back, errors = read(out, fmt)
        assert errors == []
        assert len(back) == 2
        for original, got in zip(events, back, strict=False):
            if name == "jsonl":
                assert got == original  # JSON carries every character
                continue
            expected = {xml_rendering(k): xml_rendering(v) for k, v in original.data.items()}
            assert list(got.data.items()) == list(expected.items())
            assert got.data["Controls"] == "esc\\u001b nul\\u0000 bel\\u0007 tab\t del\x7f"
            assert got.data["Surrogate"] == "lone \\ud800 and \\udfff"
            assert got.data["CommandLine"] == HOSTILE["CommandLine"]
            assert got.data["Markup"] == HOSTILE["Markup"]
            assert (got.computer, got.user_id) == (original.computer, original.user_id)
            assert got.record_id == original.record_id and got.event_id == 1
            assert got.time_created == original.time_created  # 7 digits carry this one


def test_hostile_document_with_root_is_well_formed(tmp_path):
    out = write_all(tmp_path, "xml", [hostile_event(1)], root=True)
    root = etree.parse(str(out)).getroot()
    assert root.tag == "Events" and len(root) == 1
    data = root[0].find("{http://schemas.microsoft.com/win/2004/08/events/event}EventData")
    assert [d.get("Name") for d in data] == [xml_rendering(k) for k in HOSTILE]


def test_xml_escaping_forms():
    e = Event(1, {"V": "a&b<c>d\"e'f\tg"}, user_id="x'y\"z")
    win, linux = render_windows_xml(e), render_linux_xml(e)
    assert "<Data Name='V'>a&amp;b&lt;c&gt;d\"e'f\tg</Data>" in win
    assert "<Security UserID='x&apos;y\"z'/>" in win
    assert "<Data Name=\"V\">a&amp;b&lt;c&gt;d\"e'f\tg</Data>" in linux
    assert "<Security UserId=\"x'y&quot;z\"/>" in linux
    e = Event(1, {"V": "1\n2\r3\x1b"})
    assert "<Data Name='V'>1&#10;2&#13;3\\u001b</Data>" in render_windows_xml(e)


# ---- writer life cycle --------------------------------------------------------------------------

class _Stdout(io.BytesIO):
    def fileno(self) -> int:
        return 1


@pytest.mark.parametrize("name", list(WRITERS))
def test_close_flushes_and_closes_files_but_not_stdout(tmp_path, name):
    f = open(tmp_path / "o", "wb")
    w = writer_class(name)(f)
    w.write(Event(1, {"a": "b"}))
    w.close()
    w.close()  # idempotent
    header_lines = 1 if name == "csv" else 0
    assert f.closed and (tmp_path / "o").read_bytes().count(b"\n") == 1 + header_lines
    out = _Stdout()
    writer_class(name)(out).close()
    assert not out.closed
    kept = io.BytesIO()
    writer_class(name)(kept, close_stream=False).close()
    assert not kept.closed


def test_root_option_wraps_in_events():
    out = io.BytesIO()
    w = WindowsXmlWriter(out, root=True, close_stream=False)
    w.write(Event(1, {"a": "b"}))
    w.close()
    lines = out.getvalue().split(b"\n")
    assert lines[0] == b"<Events>" and lines[2] == b"</Events>" and lines[3] == b""
    assert isinstance(JsonlWriter(io.BytesIO()), writer_class("jsonl"))
    assert isinstance(LinuxXmlWriter(io.BytesIO()), writer_class("linux-xml"))
    with pytest.raises(ValueError, match="unknown output format"):
        writer_class("parquet")
