"""Inputs that are not what their name says (new-user report, session 10, findings 1, 3-5, 11):
the reader is chosen from the content, binary data named ``*.json`` is one error line, a run of
bad lines in a JSON file stops after :data:`~sysmonx.sources.base.MAX_BAD_RUN`, an empty file is
the same warning whatever its extension, every warning printed is counted, and each damaged
EVTX record is reported at its own offset with its EventRecordID."""

from __future__ import annotations

import io
import random
import re

import pytest

from sysmonx.cli import builtin_sample_path, main
from sysmonx.sources import open_source
from sysmonx.sources.base import MAX_BAD_RUN
from sysmonx.sources.jsonshapes.common import iter_objects

PANACHE = ("evtx/sbousseaden__EVTX-ATTACK-SAMPLES/AutomatedTestingTools/"
           "PanacheSysmon_vs_AtomicRedTeam01.evtx")


def _random_bytes(n: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("name", ["dump.json", "dump.jsonl", "dump.xml", "dump.log", "dump.bin"])
def test_binary_content_is_one_error_whatever_the_name(tmp_path, capsys, name):
    path = tmp_path / name
    path.write_bytes(_random_bytes(300_000))
    assert main(["replay", str(path), "--no-output", "-q"]) == 1
    errors = _errors(capsys.readouterr().err)
    assert errors == [
        f"error: {path}: unrecognised input format (binary content; expected EVTX, event XML, "
        "Sysmon for Linux syslog, JSON event records or an archive of them)",
        "error: nothing was read: the input gave no record (1 error above)"]


def test_binary_tail_after_good_json_lines_stops_after_a_run_of_bad_lines(tmp_path, capsys):
    good = builtin_sample_path()
    jsonl = tmp_path / "good.jsonl"
    assert main(["replay", str(good), "-f", "jsonl", "-o", str(jsonl), "-q"]) == 0
    body = jsonl.read_bytes()
    tail = _random_bytes(300_000)
    mixed = tmp_path / "mixed.json"
    mixed.write_bytes(body + tail)
    out = tmp_path / "out.jsonl"
    capsys.readouterr()
    assert main(["replay", str(mixed), "-f", "jsonl", "-o", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert out.read_bytes() == body  # the 25 good events before are all kept
    errors = _errors(err)
    assert len(errors) == MAX_BAD_RUN + 1
    good_lines = body.count(b"\n")
    rest_lines = tail.count(b"\n") + (0 if tail.endswith(b"\n") else 1)
    last = good_lines + MAX_BAD_RUN
    # the lines given up on: those after the last bad line reported
    skipped = rest_lines - MAX_BAD_RUN
    assert errors[-1] == (f"error: {mixed}:{last}: {MAX_BAD_RUN} bad lines in a row: the rest "
                          f"of the file ({skipped:,} more lines) is not read as JSON lines and "
                          "is skipped")
    assert f"errors: {MAX_BAD_RUN + 1}  " in err


def test_json_shape_reader_stops_after_a_run_of_bad_lines():
    lines = [b'{"a": 1}'] + [b"not json %d" % i for i in range(MAX_BAD_RUN - 1)] + [b'{"b": 2}']
    lines += [b"garbage %d" % i for i in range(MAX_BAD_RUN + 50)] + [b'{"c": 3}']
    errors: list = []
    got = list(iter_objects(io.BytesIO(b"\n".join(lines) + b"\n"), "x.json", errors.append))
    # 99 bad lines between two good ones do not stop it; the next 100 in a row do
    assert [obj for _, obj in got] == [{"a": 1}, {"b": 2}]
    assert len(errors) == (MAX_BAD_RUN - 1) + MAX_BAD_RUN + 1
    assert errors[-1].offset == 1 + MAX_BAD_RUN + MAX_BAD_RUN
    assert "(51 more lines)" in errors[-1].message


def test_a_good_multi_line_object_ends_a_run_of_bad_lines():
    """Pretty-printed records (one object over several lines) each followed by a bad line: every
    record is read; the count of bad lines in a row restarts at each good object (it did only
    for one-line objects: 100 of 150 records were read, then the rest was skipped)."""
    lines: list = []
    for i in range(150):
        lines += [b"{", b'  "n": %d' % i, b"}", b"bad line %d" % i]
    errors: list = []
    got = list(iter_objects(io.BytesIO(b"\n".join(lines) + b"\n"), "p.json", errors.append))
    assert [obj["n"] for _, obj in got] == list(range(150))
    assert len(errors) == 150 and all("bad lines in a row" not in e.message for e in errors)


@pytest.mark.parametrize("name", ["empty.evtx", "empty.json", "empty.xml", "empty.log",
                                  "empty"])
def test_an_empty_file_is_the_same_warning_whatever_its_name(tmp_path, capsys, name):
    path = tmp_path / name
    path.write_bytes(b"")
    assert main(["replay", str(path), "--no-output", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {path}: empty file (nothing to read)" in err
    assert "no events found" not in err and "error:" not in err
    assert "errors: 0  warnings: 1" in err
    errors: list = []
    assert list(open_source(str(path), errors.append)) == []
    assert [(e.severity, e.message) for e in errors] == [("warning",
                                                         "empty file (nothing to read)")]


def test_every_warning_printed_is_counted(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("meeting notes\nnothing to see\n")
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    assert main(["replay", str(notes), str(empty), str(builtin_sample_path()),
                 "--no-output", "--no-progress"]) == 0
    err = capsys.readouterr().err
    printed = [line for line in err.splitlines() if line.startswith("warning:")]
    assert printed == [f"warning: {notes}: no events found (not an event log)",
                       f"warning: {empty}: empty file (nothing to read)"]
    assert re.search(r"errors: 0  warnings: 2\b", err)


def test_each_damaged_evtx_record_has_its_own_offset_and_event_record_id(corpus, tmp_path,
                                                                        capsys):
    data = bytearray((corpus / PANACHE).read_bytes())
    data[220704:222704] = b"\xaa" * 2000  # the end of one record and the next one's header
    damaged = tmp_path / "corrupt.evtx"
    damaged.write_bytes(bytes(data))
    assert main(["replay", str(damaged), "--no-output", "--no-progress"]) == 0
    err = capsys.readouterr().err
    errors = _errors(err)
    # records 135 and 136 of this export are EventRecordID 3706 and 3707 (a clean replay
    # lacks no other record: 563 of 565 read)
    head = re.compile(r"error: (.+):byte (\d+): (unreadable EVTX data \([^)]*\)): ")
    assert [head.match(e).groups() for e in errors] == [  # type: ignore[union-attr]
        (str(damaged), "220160", "unreadable EVTX data (record 135, EventRecordID 3706)"),
        (str(damaged), "221800", "unreadable EVTX data (record 136, EventRecordID 3707)")]
    # the parser's own text follows
    assert "Failed to parse record number 135" in errors[0]
    assert "records read: 563" in err
