"""Replay readers (sysmonx.sources): format detection, EVTX values and damage recovery, event XML
(streaming, recovery, XML bombs and external entities), Sysmon for Linux syslog, JSON lines.

Corpus files are read in place (never copied into the repository); damaged EVTX copies are built
in tmp_path. Tests that need the corpus skip cleanly without it (conftest ``corpus`` fixture).
"""

from __future__ import annotations

import struct
import time

import pytest
from evtx import PyEvtxParser
from lxml import etree

from sysmonx.event import Event
import os
from sysmonx.sources import ReadError, detect_format, iter_input_files, open_source
from sysmonx.sources.evtx import read_evtx
from sysmonx.sources.jsonl import read_jsonl
from sysmonx.sources.syslog import read_syslog
from sysmonx.sources.xmlfile import parse_event, read_xml

BABYSHARK = ("evtx/sbousseaden__EVTX-ATTACK-SAMPLES/Credential Access/"
             "babyshark_mimikatz_powershell.evtx")
MALSECLOGON = "evtx/sbousseaden__EVTX-ATTACK-SAMPLES/Credential Access/tutto_malseclogon.evtx"
PANACHE = ("evtx/sbousseaden__EVTX-ATTACK-SAMPLES/AutomatedTestingTools/"
           "PanacheSysmon_vs_AtomicRedTeam01.evtx")
SYSLOG = ("linux/elastic__integrations/packages/sysmon_linux/_dev/deploy/docker/sample_logs/"
          "sysmon.log")
NS = "http://schemas.microsoft.com/win/2004/08/events/event"


def read(path, fmt=None, **kw):
    """(events, errors) of one file."""
    errors: list[ReadError] = []
    events = list(open_source(str(path), errors.append, fmt, **kw))
    return events, errors


def event_xml(eid=1, record=1, data=(("Image", "C:\\x.exe"),), ns=True, quote="'"):
    q = quote
    head = f"<Event xmlns={q}{NS}{q}>" if ns else "<Event>"
    body = "".join(f"<Data Name={q}{k}{q}>{v}</Data>" for k, v in data)
    return (f"{head}<System><Provider Name={q}Microsoft-Windows-Sysmon{q} "
            f"Guid={q}{{5770385f-c22a-43e0-bf4c-06f5698ffbd9}}{q}/><EventID>{eid}</EventID>"
            f"<Version>5</Version><Level>4</Level><Task>{eid}</Task><Opcode>0</Opcode>"
            f"<Keywords>0x8000000000000000</Keywords>"
            f"<TimeCreated SystemTime={q}2019-04-18T16:55:37.1251390Z{q}/>"
            f"<EventRecordID>{record}</EventRecordID><Correlation/>"
            f"<Execution ProcessID={q}3192{q} ThreadID={q}3288{q}/>"
            f"<Channel>Microsoft-Windows-Sysmon/Operational</Channel><Computer>IEWIN7</Computer>"
            f"<Security UserID={q}S-1-5-18{q}/></System><EventData>{body}</EventData></Event>")


# ---- ReadError, file expansion, format detection ------------------------------------------------

def test_read_error_renders_path_and_offset():
    assert str(ReadError("a.xml", 12, "line", "malformed")) == "a.xml:12: malformed"
    assert str(ReadError("a.evtx", 69632, "byte", "bad chunk")) == "a.evtx:byte 69632: bad chunk"
    assert str(ReadError("a.evtx", 46, "record", "bad")) == "a.evtx:record 46: bad"
    assert str(ReadError("a.evtx", None, "file", "unreadable")) == "a.evtx: unreadable"


def test_iter_input_files_sorted_filtered_and_missing(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    for name in ["b/z.evtx", "b/y.JSONL", "a/x.xml", "a/notes.md", "top.log", "top.bin"]:
        (tmp_path / name).write_bytes(b"")
    got = list(iter_input_files([str(tmp_path)]))
    assert got == [str(tmp_path / p) for p in ["top.log", "a/x.xml", "b/y.JSONL", "b/z.evtx"]]
    assert list(iter_input_files([str(tmp_path / "top.bin")])) == [str(tmp_path / "top.bin")]
    with pytest.raises(FileNotFoundError) as exc:
        list(iter_input_files([str(tmp_path / "nope.evtx")]))
    assert exc.value.filename == str(tmp_path / "nope.evtx")


@pytest.mark.parametrize("name, head, fmt", [
    ("x.bin", b"ElfFile\x00\x00", "evtx"),
    ("x.log", b"\xef\xbb\xbf  <Events><Event>", "xml"),
    ("x.txt", b"<13>Oct 24 17:05:38 host sysmon: <Event>", "syslog"),
    ("x.xml", b'{"EventID": 1}', "jsonl"),
    ("x", b"Oct 24 17:05:31 host sysmon[3041]: go\nOct 24 host sysmon: <Event><System>", "syslog"),
    ("x", b"\xff\xfe<\x00E\x00", "xml"),
    ("x.ndjson", b"", "jsonl"),
    ("x.dat", b"hello", None),
])
def test_detect_format(name, head, fmt):
    assert detect_format(name, head) == fmt


def test_open_source_unknown_content_and_format(tmp_path):
    p = tmp_path / "x.dat"
    p.write_bytes(b"hello world\n")
    events, errors = read(p)
    # text no format recognises: README's one warning, whatever the name (session 12 finding 2)
    assert events == [] and [(e.severity, e.message) for e in errors] == [
        ("warning", "no events found (not an event log)")]
    b = tmp_path / "y.dat"
    b.write_bytes(b"\x00\x01\x02 binary\n")
    events, errors = read(b)
    assert events == [] and len(errors) == 1 and errors[0].severity == "error"
    assert "unrecognised input format (binary content;" in errors[0].message
    with pytest.raises(ValueError, match="unknown input format"):
        open_source(str(p), print, "csv")


# ---- EVTX ---------------------------------------------------------------------------------------

def test_evtx_known_sysmon_record(corpus):
    events, errors = read(corpus / BABYSHARK)
    assert errors == []
    assert len(events) == 33
    e = next(e for e in events if e.record_id == 4)
    assert (e.event_id, e.provider, e.provider_guid) == (
        1, "Microsoft-Windows-Sysmon", "{5770385f-c22a-43e0-bf4c-06f5698ffbd9}")
    assert (e.version, e.level, e.task, e.opcode, e.keywords) == (5, 4, 1, 0, "0x8000000000000000")
    assert e.time_created == "2019-04-18T16:55:37.125139000Z"
    assert (e.process_id, e.thread_id, e.user_id) == (3192, 3288, "S-1-5-18")
    assert (e.channel, e.computer) == ("Microsoft-Windows-Sysmon/Operational", "IEWIN7")
    assert e.origin == (str(corpus / BABYSHARK), 4)
    d = e.data
    assert list(d)[:4] == ["RuleName", "UtcTime", "ProcessGuid", "ProcessId"]
    assert d["Image"] == "C:\\Windows\\System32\\wbem\\unsecapp.exe"
    assert d["ProcessGuid"] == "{365abb72-ac09-5cb8-0000-0010999c0700}"
    assert d["LogonGuid"] == "{365abb72-29b3-5cb9-0000-0020e7030000}"
    assert d["ParentProcessGuid"] == "{365abb72-29b4-5cb9-0000-0010f95d0000}"
    assert (d["ProcessId"], d["TerminalSessionId"], d["ParentProcessId"]) == ("3232", "0", "588")
    assert (d["RuleName"], d["LogonId"], d["UtcTime"]) == ("", "0x3e7", "2019-04-18 16:55:37.075")
    assert all(type(v) is str for ev in events for v in ev.data.values())


def test_evtx_booleans_ports_and_access_mask(corpus):
    events, _ = read(corpus / BABYSHARK)
    net = next(e for e in events if e.event_id == 3).data
    assert (net["Initiated"], net["SourceIsIpv6"], net["DestinationIsIpv6"]) == (
        "false", "true", "true")
    assert (net["SourcePort"], net["DestinationPort"]) == ("49158", "135")
    assert (net["SourcePortName"], net["DestinationPortName"]) == ("", "epmap")
    access = next(e for e in events if e.event_id == 10).data
    assert (access["GrantedAccess"], access["SourceThreadId"]) == ("0x1010", "3096")
    assert access["SourceProcessGUID"] == "{365abb72-ac28-5cb8-0000-0010f3f70700}"
    assert access["TargetProcessGUID"] == "{365abb72-29b3-5cb9-0000-001087490000}"


def test_evtx_non_sysmon_records_are_yielded(corpus):
    events, errors = read(corpus / MALSECLOGON)
    assert errors == [] and len(events) == 15
    other = [e for e in events if not e.is_sysmon]
    assert len(other) == 9 and {e.channel for e in other} == {"Security"}
    logon = next(e for e in other if e.event_id == 4624)
    assert logon.provider == "Microsoft-Windows-Security-Auditing"
    assert logon.provider_guid == "{54849625-5478-4994-a5ba-3e3b0328c30d}"
    assert logon.user_id is None
    assert logon.data["LogonType"] == "9"
    assert logon.data["LogonGuid"] == "{00000000-0000-0000-0000-000000000000}"
    assert logon.data["TargetOutboundUserName"] == "MalseclogonUser"


# Damaged copies of a corpus file of 15 chunks, 565 records (chunk 1: records 45-87, chunk 2:
# 88-124, chunk 3: 125-162). pyevtx-rs alone would lose the rest of a chunk after a broken record
# header (silently), a whole chunk with a broken magic, a whole truncated chunk.

CHUNK = 65536


def _chunk_records(data: bytes, slot: int) -> list[tuple[int, int, int]]:
    """(offset, size, record number) of the records of chunk ``slot``."""
    off, out = 4096 + slot * CHUNK + 512, []
    while data[off:off + 4] == b"**\x00\x00":
        size, rid = struct.unpack_from("<IQ", data, off + 4)
        out.append((off, size, rid))
        off += size
    return out


def _damage(data: bytes, kind: str) -> bytes:
    b = bytearray(data)
    rec46 = _chunk_records(data, 1)[1][0]
    rec50, size50, _ = _chunk_records(data, 1)[5]
    if kind == "chunk_magic":
        b[4096 + 2 * CHUNK:4096 + 2 * CHUNK + 8] = b"XXXXXXXX"
    elif kind == "record_size":
        b[rec46 + 4:rec46 + 8] = b"\xff\xff\x00\x00"
    elif kind == "record_magic":
        b[rec46:rec46 + 4] = bytes(4)
    elif kind == "record_time":
        b[rec50 + 16:rec50 + 24] = b"\xff" * 8
    elif kind == "record_body":
        b[rec50 + 24:rec50 + size50 - 4] = b"\xff" * (size50 - 28)
    elif kind == "template":  # inside the template definition every record of chunk 1 uses
        b[4096 + CHUNK + 512 + 64:4096 + CHUNK + 512 + 104] = b"\xee" * 40
    elif kind == "blank_chunk":
        b[4096:4096 + CHUNK] = bytes(CHUNK)
    elif kind == "file_header":
        b[:8] = b"XXXXXXXX"
    elif kind == "truncated":
        del b[4096 + 3 * CHUNK + 30000:]
    elif kind == "too_short":
        del b[4000:]
    elif kind == "two_spots":
        b = bytearray(_damage(_damage(data, "chunk_magic"), "record_body"))
    return bytes(b)


# kind -> (ReadErrors, record numbers lost, offsets of the errors (None: not checked), message)
# A record whose header alone is broken (size field, magic) is restored from its redundant copies
# (the size trailer, the next record's magic): nothing is lost and one warning names the record.
DAMAGE = {
    "chunk_magic": (1, [], [4096 + 2 * CHUNK], "chunk number 2"),
    "record_size": (1, [], [None], "record number 46"),
    "record_magic": (1, [], [None], "repaired from the record's redundant copies"),
    "record_time": (1, [50], [None], "out-of-range date"),
    "record_body": (1, [50], [None], "record number 50"),
    "template": (1, range(45, 88), [4096 + CHUNK], "record IDs 45..87"),
    "blank_chunk": (1, range(1, 45), [4096], "chunk 0 has no chunk header"),
    "file_header": (1, [], [0], "damaged EVTX file header"),
    "truncated": (1, range(141, 566), [4096 + 3 * CHUNK],
                  "22 of the 38 records of chunk 3 are lost (16 read from its intact part); "
                  "the file header announces 15 chunks"),
    "too_short": (1, range(1, 566), [0], "not a readable EVTX file"),
    "two_spots": (2, [50], [None, 4096 + 2 * CHUNK], "record number 50"),
}


@pytest.fixture(scope="module")
def panache(corpus):
    path = corpus / PANACHE
    events, errors = read(path)
    assert errors == [] and len(events) == 565
    return path.read_bytes(), {e.origin[1]: e for e in events}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_evtx_damage_is_reported_and_reading_continues(panache, tmp_path, kind):
    data, originals = panache
    n_errors, lost, offsets, message = DAMAGE[kind]
    path = tmp_path / f"{kind}.evtx"
    path.write_bytes(_damage(data, kind))
    events, errors = read(path)
    assert len(errors) == n_errors, [str(e) for e in errors]
    assert message in errors[0].message
    got = [e.origin[1] for e in events]
    assert got == sorted(set(originals) - set(lost))  # everything else, in file order
    for e in events:  # what was read is intact
        assert e == originals[e.origin[1]]
    for err, offset in zip(errors, offsets, strict=False):
        assert err.path == str(path) and err.offset_kind == "byte"
        if offset is not None:
            assert err.offset == offset
    if kind in ("record_body", "two_spots", "record_time"):  # the damaged record is located
        assert errors[0].offset == _chunk_records(data, 1)[5][0]
    if kind in ("record_size", "record_magic"):
        assert errors[0].offset == _chunk_records(data, 1)[1][0]
        assert errors[0].severity == "warning" and "every record of chunk 1 was read" in \
            errors[0].message
    else:
        assert {e.severity for e in errors} == {"error"}


def test_evtx_reading_is_streaming(corpus):
    it = read_evtx(str(corpus / PANACHE), print)
    first = next(it)
    assert first.origin[1] == 1 and first.event_id == 1
    it.close()


def test_evtx_threads_option_gives_same_events(corpus):
    path = str(corpus / BABYSHARK)
    assert list(read_evtx(path, print, threads=1)) == list(read_evtx(path, print))


def test_evtx_record_count_matches_pyevtx(corpus):
    path = corpus / PANACHE
    assert len(read(path)[0]) == sum(1 for _ in PyEvtxParser(str(path)).records_json())


# ---- event XML ----------------------------------------------------------------------------------

def test_xml_concatenated_events_without_root(tmp_path):
    p = tmp_path / "events.xml"
    p.write_text(event_xml(1, 10) + "\n" + event_xml(3, 11, data=(("Image", "a&amp;b"),)) + "\n")
    events, errors = read(p)
    assert errors == []
    assert [(e.event_id, e.record_id, e.origin[1]) for e in events] == [(1, 10, 1), (3, 11, 2)]
    e = events[0]
    assert (e.provider_guid, e.time_created, e.user_id) == (
        "{5770385f-c22a-43e0-bf4c-06f5698ffbd9}", "2019-04-18T16:55:37.125139000Z", "S-1-5-18")
    assert events[1].data == {"Image": "a&b"}


def test_xml_event_viewer_document_pretty_printed_double_quotes(tmp_path):
    body = event_xml(1, 7, quote='"').replace("><", ">\n  <")
    p = tmp_path / "saved.xml"
    p.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<Events>\n' + body + "\n"
                 + event_xml(5, 8, ns=False) + "\n</Events>\n")
    events, errors = read(p)
    assert errors == []
    assert [(e.event_id, e.record_id) for e in events] == [(1, 7), (5, 8)]
    assert events[0].data == {"Image": "C:\\x.exe"} and events[0].process_id == 3192
    assert events[0].origin[1] == 3


def test_xml_utf16_with_bom(tmp_path):
    p = tmp_path / "ps.xml"
    p.write_bytes(("\ufeff" + event_xml(1, 1, data=(("User", "ÉLISE\\über"),)) + "\r\n")
                  .encode("utf-16-le"))
    events, errors = read(p)
    assert errors == [] and events[0].data == {"User": "ÉLISE\\über"}


def test_xml_declared_legacy_encoding(tmp_path):
    p = tmp_path / "cp.xml"
    p.write_bytes(b'<?xml version="1.0" encoding="windows-1252"?><Events>'
                  + event_xml(1, 1, data=(("User", "caf\xe9"),)).encode("latin-1") + b"</Events>")
    events, errors = read(p)
    assert errors == [] and events[0].data == {"User": "caf\u00e9"}


def test_xml_malformed_event_is_reported_with_line_and_rest_is_read(tmp_path):
    p = tmp_path / "bad.xml"
    good = [event_xml(1, n) for n in (1, 3, 5, 6)]
    broken = event_xml(1, 2).replace("</Data>", "</Dta>")
    unterminated = event_xml(1, 4).replace("</Event>", "")
    no_id = event_xml(1, 9).replace("<EventID>1</EventID>", "")
    p.write_text("\n".join([good[0], broken, good[1], unterminated, good[2], no_id, good[3],
                            "<Event/>"]) + "\n")
    events, errors = read(p)
    assert [e.record_id for e in events] == [1, 3, 5, 6]
    assert [(e.offset, e.offset_kind) for e in errors] == [
        (2, "line"), (4, "line"), (6, "line"), (8, "line")]
    assert "malformed event XML" in errors[0].message
    assert "not terminated" in errors[1].message
    assert "no System/EventID" in errors[2].message


def test_xml_comments_cdata_and_large_file_across_blocks(tmp_path):
    parts = ["<?xml version='1.0'?>", "<!-- <Event> in a comment is not an event </Event> -->",
             "<Events>"]
    big = "x" * 3000
    for n in range(1, 1201):  # ~4 MB: events straddle the reader's 1 MiB blocks
        parts.append(event_xml(1, n, data=(("CommandLine", big), ("N", str(n)))))
        if n % 100 == 0:
            parts.append("<![CDATA[ <Event> ]]>")
    parts.append("</Events>")
    p = tmp_path / "big.xml"
    p.write_text("\n".join(parts))
    events, errors = read(p)
    assert errors == []
    assert [e.record_id for e in events] == list(range(1, 1201))
    assert events[-1].data["N"] == "1200" and events[-1].data["CommandLine"] == big
    lines = p.read_text().split("\n")
    assert all(lines[e.origin[1] - 1].startswith("<Event ") for e in events)
    assert all(f"<EventRecordID>{e.record_id}<" in lines[e.origin[1] - 1] for e in events)


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE Event [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
"""

XXE = """<?xml version="1.0"?>
<!DOCTYPE Event [<!ENTITY xxe SYSTEM "file:///etc/passwd">
 <!ENTITY net SYSTEM "http://127.0.0.1:9/x">]>
"""


@pytest.mark.parametrize("prolog, entity", [(BILLION_LAUGHS, "lol9"), (XXE, "xxe"), (XXE, "net")])
def test_xml_entities_are_never_expanded(tmp_path, prolog, entity):
    p = tmp_path / "hostile.xml"
    p.write_text(prolog + event_xml(1, 1, data=(("Image", f"&{entity};"),)) + "\n"
                 + event_xml(1, 2) + "\n")
    t0 = time.monotonic()
    events, errors = read(p)
    assert time.monotonic() - t0 < 5
    assert [e.record_id for e in events] == [2]
    assert "<!DOCTYPE> ignored" in errors[0].message and errors[0].offset == 2
    assert errors[1].offset == prolog.count("\n") + 1
    assert f"Entity '{entity}' not defined" in errors[1].message
    assert len(errors) == 2


@pytest.mark.parametrize("prolog, entity", [(BILLION_LAUGHS, "lol9"), (XXE, "xxe")])
def test_parse_event_refuses_entities_even_with_inline_doctype(prolog, entity):
    doc = (prolog + event_xml(1, 1, data=(("Image", f"&{entity};"),))).encode()
    with pytest.raises((ValueError, etree.XMLSyntaxError)) as exc:  # refused, never expanded
        parse_event(doc, None)
    assert "unexpected markup" in str(exc.value) or "amplification" in str(exc.value)


def test_xml_external_dtd_is_not_fetched(tmp_path):
    p = tmp_path / "dtd.xml"
    p.write_text('<!DOCTYPE Event SYSTEM "http://127.0.0.1:9/evil.dtd">\n' + event_xml(1, 1))
    events, errors = read(p)
    assert [e.record_id for e in events] == [1] and len(errors) == 1


# ---- Sysmon for Linux syslog --------------------------------------------------------------------

def test_syslog_corpus_file(corpus):
    path = corpus / SYSLOG
    events, errors = read(path)
    assert errors == []
    assert len(events) == 36
    assert sorted({e.event_id for e in events}) == [1, 3, 4, 5, 16, 23]
    e = events[0]
    assert (e.event_id, e.record_id, e.origin) == (16, 0, (str(path), 15))
    assert (e.provider, e.provider_guid, e.channel) == (
        "Linux-Sysmon", "{ff032593-a8d3-4f13-b0d6-01fc615a0f97}", "Linux-Sysmon/Operational")
    assert (e.version, e.level, e.task, e.opcode) == (3, 4, 16, 0)
    assert (e.time_created, e.computer, e.user_id) == (
        "2021-10-24T17:05:38.412320000Z", "james-ubuntu-demo", "0")
    assert (e.process_id, e.thread_id) == (3099, 3099)
    assert e.data == {"UtcTime": "2021-10-24 17:05:38.412", "Configuration": "log_all_sysmon.xml",
                      "ConfigurationFileHash": "-"}
    unknown = next(e for e in events if e.record_id == 5)
    assert unknown.data["Image"] == "<unknown process>"
    assert [e.record_id for e in events] == sorted(e.record_id for e in events)


def test_syslog_skips_other_lines_reports_cut_and_bad_events(tmp_path):
    ev = event_xml(1, 1, ns=False, quote='"')
    p = tmp_path / "syslog"
    p.write_bytes("\r\n".join([
        "Oct 24 17:05:31 host sysmon[1]: Sysmon v1.0.0 - Monitors system events",
        f"Oct 24 17:05:38 host sysmon: {ev}",
        f"Oct 24 17:05:38 host sysmon: {ev[:300]}",
        "Oct 24 17:05:38 host sysmon: <Event><System><EventID>x</EventID></System></Event>",
        "Oct 24 17:05:38 host sysmon: <Event><Broken></Event>",
        "<14>1 2021-10-24T17:05:38Z host sysmon - - - " + ev.replace(">1</EventRecordID>",
                                                                    ">2</EventRecordID>"),
        "Oct 24 17:05:39 host kernel: <EventData> is not an event",
        "",
    ]).encode())
    events, errors = read(p)
    assert [(e.record_id, e.origin[1]) for e in events] == [(1, 2), (2, 6)]
    assert [(e.offset, e.offset_kind) for e in errors] == [(3, "line"), (4, "line"), (5, "line")]
    assert "cut off" in errors[0].message
    assert "EventID is not a number" in errors[1].message
    assert "malformed event XML" in errors[2].message


# ---- SysmonX JSON lines -------------------------------------------------------------------------

def test_jsonl_malformed_lines_are_reported_and_skipped(tmp_path):
    good = ('{"EventID":1,"Image":"a","System":{"Provider":"Microsoft-Windows-Sysmon",'
            '"TimeCreated":"2019-04-18T16:55:37.125139Z","EventRecordID":%d}}')
    p = tmp_path / "x.jsonl"
    p.write_bytes("\n".join([
        good % 1, "not json", "[1, 2]", '{"EventID": "1"}', '{"EventID":1,"Image":{"a":1}}',
        '{"EventID":1,"System":{"TimeCreated":"yesterday"}}', "", "   ", good % 2,
        '{"EventID":1,"System":{"Level":"high"}}', good % 3,
    ]).encode() + b"\r\n")
    events, errors = read(p)
    assert [(e.record_id, e.origin[1]) for e in events] == [(1, 1), (2, 9), (3, 11)]
    assert events[0].time_created == "2019-04-18T16:55:37.125139000Z"
    assert events[0].data == {"Image": "a"}
    assert [e.offset for e in errors] == [2, 3, 4, 5, 6, 10]
    assert all(e.offset_kind == "line" for e in errors)
    assert "not JSON" in errors[0].message and "EventID" in errors[2].message


def test_jsonl_extra_data_is_merged_back_in_order(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"EventID":4688,"a":"1","System":{"Provider":"P"},'
                 '"ExtraData":{"EventID":"x","b":"2","System":"y"}}\n')
    (e,), errors = read(p)
    assert errors == [] and e.event_id == 4688
    assert list(e.data.items()) == [("a", "1"), ("EventID", "x"), ("b", "2"), ("System", "y")]


def test_readers_are_lazy(tmp_path):
    p = tmp_path / "x.xml"
    p.write_text(event_xml(1, 1) + event_xml(1, 2))
    it = read_xml(str(p), print)
    assert next(it).record_id == 1
    it.close()
    for reader in (read_jsonl, read_syslog):
        assert isinstance(reader(str(p), print), type(read_xml(str(p), print)))
    assert isinstance(next(read_xml(str(p), print)), Event)


def test_unseekable_inputs_fifo_and_devstdin(tmp_path):
    """A FIFO (or /dev/stdin, process substitution) is read once as a stream, detected from its
    first bytes (a new user's report: such inputs hung or gave 0 records)."""
    import threading
    from sysmonx.cli import builtin_sample_path
    fifo = tmp_path / "f.xml"
    os.mkfifo(fifo)
    data = builtin_sample_path().read_bytes()
    t = threading.Thread(target=lambda: fifo.write_bytes(data))
    t.start()
    got = list(open_source(str(fifo), lambda e: pytest.fail(str(e))))
    t.join(5)
    assert len(got) == 26 and got[0].event_id == 4


def test_folder_walk_keeps_extensionless_syslog_files(tmp_path):
    for name in ("syslog", "syslog.1", "messages", "notes", "auth"):
        (tmp_path / name).write_text("x\n")
    found = sorted(os.path.basename(p) for p in iter_input_files([str(tmp_path)]))
    assert found == ["messages", "syslog", "syslog.1"]


def test_evtx_chunk_checksum_mismatch_is_reported_once(corpus, tmp_path):
    """pyevtx-rs ignores chunk CRC32s; SysmonX reads the records and reports the chunk."""
    data = bytearray((corpus / PANACHE).read_bytes())
    off = 4096 + 3 * 65536 + 124  # header CRC32 of chunk 3
    data[off] ^= 0xFF
    path = tmp_path / "crc.evtx"
    path.write_bytes(bytes(data))
    events, errors = read(path)
    assert len(events) == 565
    assert [(e.offset, "header checksum mismatch" in e.message) for e in errors] == \
        [(4096 + 3 * 65536, True)]


def test_evtx_record_data_checksum_mismatch_is_reported(corpus, tmp_path):
    """The record-data CRC32 covers the chunk's used part (512 to the free-space offset)."""
    data = bytearray((corpus / PANACHE).read_bytes())
    off = 4096 + 3 * 65536 + 52  # record data CRC32 of chunk 3
    data[off] ^= 0xFF
    path = tmp_path / "crc.evtx"
    path.write_bytes(bytes(data))
    events, errors = read(path)
    assert len(events) == 565
    assert [(e.offset, "record data checksum mismatch" in e.message) for e in errors] == \
        [(4096 + 3 * 65536, True)]


def test_evtx_overstated_free_offset_checksums_the_records_only(corpus, tmp_path):
    """A chunk header whose free-space offset overstates its records (the slack zeroed) is
    checksummed over the records alone: no report when they match."""
    import struct
    import zlib
    data = bytearray((corpus / PANACHE).read_bytes())
    base = 4096 + 3 * 65536
    free, = struct.unpack_from("<I", data, base + 48)
    assert free < 65536 - 64
    data[base + free:base + free + 64] = bytes(64)  # slack past the records: not checksummed
    struct.pack_into("<I", data, base + 48, free + 64)
    head = data[base:base + 512]  # the header CRC covers the changed offset: write it anew
    struct.pack_into("<I", data, base + 124,
                     zlib.crc32(head[128:512], zlib.crc32(head[0:120])))
    path = tmp_path / "free.evtx"
    path.write_bytes(bytes(data))
    events, errors = read(path)
    assert len(events) == 565 and errors == []


def test_evtx_free_offset_outside_the_chunk_is_reported(corpus, tmp_path):
    """A chunk header (its own checksum rewritten to match) whose free-space offset lies past
    the chunk: the records are read and the chunk is reported, its data checksum having no
    range (was: no line at all)."""
    import struct
    import zlib
    data = bytearray((corpus / PANACHE).read_bytes())
    base = 4096 + 3 * 65536
    struct.pack_into("<I", data, base + 48, 70000)
    head = data[base:base + 512]
    struct.pack_into("<I", data, base + 124,
                     zlib.crc32(head[128:512], zlib.crc32(head[0:120])))
    path = tmp_path / "free-out.evtx"
    path.write_bytes(bytes(data))
    events, errors = read(path)
    assert len(events) == 565
    assert [(e.offset, e.message) for e in errors] == [
        (base, "chunk 3: its header's free-space offset 70000 lies outside the chunk "
               "(512-65536), so its record data checksum cannot be checked; its records were "
               "read but may have been altered")]
