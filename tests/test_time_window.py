"""``--from`` / ``--to`` (issue 6.4): UTC ISO 8601 bounds on the record's System time, inclusive
from, exclusive to; records without a time kept and counted; every writer's times in UTC with Z."""

from __future__ import annotations

import io
import re
from pathlib import Path

import orjson
import pytest
from evtx import PyEvtxParser

from sysmonx.cli import main
from sysmonx.event import Event, TimeFormatError
from sysmonx.pipeline import Replayer, ReplayOptions, parse_time_bound, replay_parallel
from sysmonx.sinks import WRITERS, writer_class
from sysmonx.sinks.jsonl import JsonlWriter
from sysmonx.sources import open_source


@pytest.mark.parametrize("text,expected", [
    ("2024-01-02", "2024-01-02T00:00:00.000000000Z"),
    ("2024-01-02T03:04:05Z", "2024-01-02T03:04:05.000000000Z"),
    ("2024-01-02t03:04:05z", "2024-01-02T03:04:05.000000000Z"),
    ("2024-01-02T03:04:05.123456789Z", "2024-01-02T03:04:05.123456789Z"),
    ("2024-01-02T03:04:05.1Z", "2024-01-02T03:04:05.100000000Z"),
    ("2024-01-02T05:04:05+02:00", "2024-01-02T03:04:05.000000000Z"),
    ("2024-01-02T05:04:05.5+0200", "2024-01-02T03:04:05.500000000Z"),
    ("2024-01-01T22:04:05-05:00", "2024-01-02T03:04:05.000000000Z"),
    ("2024-01-02T05:04+02:00", "2024-01-02T03:04:00.000000000Z"),
    ("2024-01-02 03:04:05", "2024-01-02T03:04:05.000000000Z"),  # no zone: UTC
    ("2024-01-02T03:04", "2024-01-02T03:04:00.000000000Z"),
    (" 2024-01-02T03:04:05Z ", "2024-01-02T03:04:05.000000000Z"),
    ("20240102T030405Z", "2024-01-02T03:04:05.000000000Z"),
])
def test_parse_time_bound(text, expected):
    assert parse_time_bound(text) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "2024-13-01", "2024-02-30T00:00:00Z",
                                  "2024-01-02T25:00:00Z", "1704164645",
                                  "2024-01-02T03:04:05+25:00", "2024-01-02 03:04:05-01:60"])
def test_parse_time_bound_rejects(text):
    with pytest.raises(TimeFormatError):
        parse_time_bound(text)


def ev(i: int, t: str, **data) -> Event:
    return Event(1, {"RuleName": "-", "UtcTime": "2030-01-01 00:00:00.000", **data},
                 record_id=i, time_created=t, version=5, level=4, task=1, process_id=1,
                 thread_id=1, computer="h")


EVENTS = [
    ev(1, "2024-01-01T23:59:59.999999999Z"),
    ev(2, "2024-01-02T00:00:00.000000000Z"),          # == from: kept (inclusive)
    ev(3, "2024-01-02T12:00:00.000000000Z", CreationUtcTime="1999-01-01 00:00:00.000"),
    ev(4, ""),                                        # no time: kept, counted
    ev(5, "2024-01-02T23:59:59.999999999Z"),
    ev(6, "2024-01-03T00:00:00.000000000Z"),          # == to: dropped (exclusive)
    ev(7, "2024-01-05T00:00:00.000000000Z", UtcTime="2024-01-02 12:00:00.000"),
]


def _jsonl(path: Path, events) -> Path:
    with JsonlWriter(open(path, "wb")) as w:
        for e in events:
            w.write(e)
    return path


def _replay(path, **window):
    out = []

    class Collect:
        def write(self, e):
            out.append(e.record_id)
    r = Replayer(ReplayOptions(**window), Collect())
    r.run([str(path)])
    return out, r.stats


def test_window_is_on_system_time_inclusive_from_exclusive_to(tmp_path):
    src = _jsonl(tmp_path / "e.jsonl", EVENTS)
    got, stats = _replay(src, time_from="2024-01-02", time_to="2024-01-03T00:00:00Z")
    assert got == [2, 3, 4, 5]  # 3 despite its CreationUtcTime, 7 not despite its UtcTime
    assert (stats.records, stats.out_of_window, stats.untimed) == (7, 3, 1)
    assert stats.sysmon == 4 and sum(stats.included.values()) == 4
    assert _replay(src, time_from="2024-01-02T12:00:00.000000001Z")[0] == [4, 5, 6, 7]
    assert _replay(src, time_to="2024-01-02T00:00:00Z")[0] == [1, 4]
    # offsets are converted: 01:00+01:00 is midnight UTC
    assert _replay(src, time_from="2024-01-02T01:00:00+01:00",
                   time_to="2024-01-02T13:00+01:00")[0] == [2, 4]  # to = 12:00Z: 3 excluded
    got, stats = _replay(src)
    assert got == [1, 2, 3, 4, 5, 6, 7] and (stats.out_of_window, stats.untimed) == (0, 0)


def test_window_applies_to_non_sysmon_records_too(tmp_path):
    other = Event(4624, {"TargetUserName": "x"}, provider="Microsoft-Windows-Security-Auditing",
                  time_created="2020-01-01T00:00:00.000000000Z", record_id=9)
    src = _jsonl(tmp_path / "e.jsonl", [other, EVENTS[2]])
    got, stats = _replay(src, time_from="2024-01-01", non_sysmon="pass")
    assert got == [3] and stats.out_of_window == 1 and stats.non_sysmon == 0


def test_bad_bound_is_refused_by_the_replayer():
    with pytest.raises(TimeFormatError):
        Replayer(ReplayOptions(time_from="soon"))


def test_parallel_replay_applies_the_window_and_merges_the_counts(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", EVENTS[:4])
    b = _jsonl(tmp_path / "b.jsonl", EVENTS[4:])
    out = io.BytesIO()
    stats = replay_parallel([str(a), str(b)], ReplayOptions(time_from="2024-01-02",
                                                            time_to="2024-01-03",
                                                            keep_duplicates=True),
                            "jsonl", out, 2, lambda line: None)
    ids = [orjson.loads(line)["System"]["EventRecordID"] for line in out.getvalue().splitlines()]
    assert ids == [2, 3, 4, 5]
    assert (stats.out_of_window, stats.untimed) == (3, 1)


def test_cli_from_to(tmp_path, capsys):
    src = _jsonl(tmp_path / "e.jsonl", EVENTS)
    out = tmp_path / "o.jsonl"
    assert main(["replay", str(src), "--format", "jsonl", "-o", str(out),
                 "--from", "2024-01-02T00:00:00Z", "--to", "2024-01-03"]) == 0
    err = capsys.readouterr().err
    assert "time window: 3 records outside --from/--to skipped, 1 records without a time kept" \
        in err
    assert [orjson.loads(x)["System"]["EventRecordID"] for x in out.read_bytes().splitlines()] \
        == [2, 3, 4, 5]
    assert main(["replay", str(src), "--no-output", "--from", "2024-01-03", "--to",
                 "2024-01-02"]) == 87
    assert "is not before --to" in capsys.readouterr().err
    assert main(["replay", str(src), "--no-output", "--to", "tomorrow"]) == 87
    assert "error: --from/--to: not an ISO 8601" in capsys.readouterr().err
    assert main(["replay", str(src), "--no-output", "-q"]) == 0
    assert "time window" not in capsys.readouterr().err


_Z_TIME = {"xml": re.compile(rb"SystemTime='(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z)'"),
           "linux-xml": re.compile(rb'SystemTime="(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z)"'),
           "jsonl": re.compile(rb'"TimeCreated":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z)"'),
           "csv": re.compile(rb"\r\n(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z),"),
           "ecs": re.compile(rb'"created":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z)"')}


@pytest.mark.parametrize("name", list(WRITERS))
def test_every_writer_writes_utc_with_z(name):
    assert set(_Z_TIME) == set(WRITERS)
    out = io.BytesIO()
    w = writer_class(name)(out, close_stream=False)
    for t in ("2024-01-02T05:04:05.123+02:00", "2024-01-02 03:04:05.123",
              "2024-01-02T03:04:05.123Z"):
        w.write(Event(1, {"UtcTime": "2024-01-02 05:04:05.123"}, time_created=t, record_id=1))
    w.close()
    times = _Z_TIME[name].findall(out.getvalue())
    assert len(times) == 3 and len(set(times)) == 1
    assert times[0].startswith(b"2024-01-02T03:04:05.123")


def test_window_on_a_corpus_evtx_matches_the_raw_system_times(corpus, tmp_path):
    path = corpus / ("evtx/sbousseaden__EVTX-ATTACK-SAMPLES/AutomatedTestingTools/"
                     "PanacheSysmon_vs_AtomicRedTeam01.evtx")
    times = sorted(orjson.loads(r["data"])["Event"]["System"]["TimeCreated"]["#attributes"]
                   ["SystemTime"] for r in PyEvtxParser(str(path)).records_json())
    lo, hi = times[len(times) // 4], times[3 * len(times) // 4]
    expected = sum(1 for t in times if parse_time_bound(lo) <= parse_time_bound(t)
                   < parse_time_bound(hi))
    got, stats = _replay(path, time_from=lo, time_to=hi)
    assert len(got) == expected and 0 < expected < len(times)
    assert stats.out_of_window == len(times) - expected and stats.untimed == 0
    # the same window through the CLI, offsets instead of Z
    errors: list = []
    back = list(open_source(str(path), errors.append))
    assert sum(1 for e in back if parse_time_bound(lo) <= e.time_created < parse_time_bound(hi)) \
        == expected
