"""The embedded event store (sysmonx.sinks.sqlite, sources.sqlitestore, ``sysmonx query``): the
corpus replayed into it gives per-EventID counts equal to the replay summary, reads back exactly
(replay DB and query, any format), filters with --where, refuses writes, keeps alerts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sysmonx.cli import main
from sysmonx.event import Event
from sysmonx.pipeline import Replayer, ReplayOptions
from sysmonx.sinks.sqlite import SqliteSink, store_counts
from sysmonx.sources import iter_input_files, open_source
from sysmonx.sources.detect import detect_format

from conftest import corpus_path

CONFIG = "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml"


def corpus_files(root: Path) -> list[str]:
    return list(iter_input_files([str(root / "evtx"), str(root / "json"), str(root / "linux")]))


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    root = corpus_path()
    if root is None:
        pytest.skip("reference corpus not available (set SYSMONX_CORPUS)")
    from sysmonx.config import load_config
    db = tmp_path_factory.mktemp("store") / "events.db"
    sink = SqliteSink(str(db), batch=1000)
    rp = Replayer(ReplayOptions(config=load_config(root / CONFIG)), None, sinks=[sink])
    for f in corpus_files(root):
        rp.run_file(f)
    rp.finish()
    rp.close()
    return db, rp.stats, root


def test_counts_per_event_id_equal_the_replay_summary(stored):
    db, stats, _ = stored
    counts = store_counts(sqlite3.connect(db))
    expected = {eid: n for eid, n in stats.included.items() if n}
    assert counts == expected and sum(counts.values()) > 1000


def test_query_cli_counts_and_read_back_in_any_format(stored, tmp_path, capsys):
    db, stats, root = stored
    assert main(["query", str(db), "SELECT event_id, count(*) AS n FROM events GROUP BY event_id "
                                   "ORDER BY event_id"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "event_id\tn"
    assert {int(a): int(b) for a, b in (ln.split("\t") for ln in lines[1:])} == \
        {e: n for e, n in stats.included.items() if n}
    # the store gives the events back exactly: replay DB == the filtered replay, as JSON lines
    direct, back = tmp_path / "direct.jsonl", tmp_path / "back.jsonl"
    files = corpus_files(root)
    assert main(["replay", *files, "-c", str(root / CONFIG), "-f", "jsonl", "-o", str(direct),
                 "-q"]) == 0
    assert main(["replay", str(db), "-f", "jsonl", "-o", str(back), "-q"]) == 0
    assert back.read_bytes() == direct.read_bytes()
    xml = tmp_path / "q.xml"
    assert main(["query", str(db), "-f", "xml", "-o", str(xml)]) == 0
    events = list(open_source(str(xml), lambda e: pytest.fail(str(e))))
    assert len(events) == sum(stats.included.values())


def test_where_filters(stored, capsys):
    db, _, _ = stored
    con = sqlite3.connect(db)
    n1 = con.execute("SELECT count(*) FROM events WHERE event_id=1").fetchone()[0]
    ps = con.execute("SELECT count(*) FROM events WHERE event_id=1 AND instr(lower("
                     "json_extract(event, '$.CommandLine')), 'powershell') > 0").fetchone()[0]
    assert 0 < ps < n1
    assert main(["query", str(db), "-w", "EventID=1", "-w", "CommandLine~PowerShell"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == ps and all('"EventID":1,' in ln for ln in out)
    assert main(["query", str(db), "-w", "EventID=1,3", "--limit", "5"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5
    computer = con.execute("SELECT computer FROM events LIMIT 1").fetchone()[0]
    assert main(["query", str(db), "-w", f"Computer!={computer}", "-w", "EventID=1"]) == 0
    assert all(f'"Computer":"{computer}"' not in ln for ln in capsys.readouterr().out.splitlines())


def test_query_is_read_only_and_errors_are_clear(stored, tmp_path, capsys):
    db, _, _ = stored
    before = db.stat().st_size
    assert main(["query", str(db), "DELETE FROM events"]) == 87
    assert "readonly" in capsys.readouterr().err
    assert db.stat().st_size == before
    assert main(["query", str(db), "-w", "no field"]) == 87
    assert main(["query", str(db), "-w", "EventID=x"]) == 87
    assert main(["query", str(tmp_path / "missing.db")]) == 1
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)")
    assert main(["query", str(other)]) == 1
    assert "not a SysmonX event store" in capsys.readouterr().err


def test_exact_round_trip_of_hostile_values_and_detection_by_content(tmp_path):
    e = Event(1, {"Image": "C:\\a.exe", "Odd": "a\ud800b\x00\x1b", "EventID": "forged"},
              record_id=5, time_created="2024-01-02T03:04:05.123456700Z", computer="h",
              channel="Microsoft-Windows-Sysmon/Operational")
    db = tmp_path / "no-extension"
    sink = SqliteSink.open(f"sqlite:///{db}")
    sink.write(e)
    sink.close()
    assert detect_format(str(db), db.read_bytes()[:64]) == "sqlite"
    back = list(open_source(str(db), lambda err: pytest.fail(str(err))))
    assert back == [e]
    # appending to an existing store keeps the first rows
    sink = SqliteSink(str(db))
    sink.write(e)
    sink.close()
    assert len(list(open_source(str(db), lambda err: None))) == 2


def test_alerts_go_to_their_table(tmp_path, corpus):
    rules = corpus / "sigma" / "sigmahq_rules_sysmon_categories.tar.gz"
    files = corpus_files(corpus)
    assert main(["replay", *files, "--rules", str(rules), "--alerts", str(tmp_path / "a.jsonl"),
                 "--no-output", "-q"]) == 0
    n_lines = len((tmp_path / "a.jsonl").read_bytes().splitlines())
    db = tmp_path / "a.db"
    out = tmp_path / "events.jsonl"
    assert main(["replay", *files, "--rules", str(rules), "-o", f"sqlite:///{db}", "-f", "jsonl",
                 "-o", str(out), "-q"]) == 0
    con = sqlite3.connect(db)
    n_events = con.execute("SELECT count(*) FROM events WHERE event_id=1000").fetchone()[0]
    assert con.execute("SELECT count(*) FROM alerts").fetchone()[0] == n_events == n_lines > 10
    # the other output got the same events, alerts included
    assert len(out.read_bytes().splitlines()) == con.execute(
        "SELECT count(*) FROM events").fetchone()[0]
    row = con.execute("SELECT rule_id, title, level, alert FROM alerts LIMIT 1").fetchone()
    assert row[0] and row[1] and row[2] in ("informational", "low", "medium", "high", "critical")
    assert row[0] in row[3]


def test_unusable_store_path_names_the_resolved_path_and_the_four_slashes(tmp_path, monkeypatch):
    """`sqlite:///tmp/x.db` is relative (SQLAlchemy's convention): the error says where it
    looked and how to write an absolute path (a new user's report)."""
    from sysmonx.core.errors import SinkError
    from sysmonx.sinks.sqlite import open_store
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SinkError) as err:
        open_store("nodir/x.db")
    msg = str(err.value)
    assert str(tmp_path / "nodir" / "x.db") in msg and "four slashes" in msg


def test_where_with_a_field_no_event_has_says_so_and_guids_match_in_any_form(stored, capsys):
    """New-user report, session 10, finding 6: a mistyped or differently-cased field name gave
    "0 events" and nothing else; a GUID pasted without braces or in upper case matched
    nothing."""
    db, _, _ = stored
    con = sqlite3.connect(db)
    guid, n = con.execute("SELECT process_guid, count(*) FROM events WHERE event_id=3 "
                          "GROUP BY process_guid ORDER BY count(*) DESC LIMIT 1").fetchone()
    assert guid.startswith("{") and guid == guid.lower() and n > 1
    for form in (guid, guid.strip("{}"), guid.upper(), guid.strip("{}").upper()):
        assert main(["query", str(db), "-w", "EventID=3", "-w", f"ProcessGuid={form}"]) == 0
        out, err = capsys.readouterr()
        assert len(out.splitlines()) == n and f"{n:,} events" in err
    parent = con.execute("SELECT json_extract(event, '$.ParentProcessGuid') FROM events "
                         "WHERE event_id=1 LIMIT 1").fetchone()[0]
    assert main(["query", str(db), "-w", f"ParentProcessGuid={parent.upper()}",
                 "--limit", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    for name, meant in (("parentimage", "ParentImage"), ("ParentImg", "ParentImage"),
                        ("EventId", "EventID")):
        assert main(["query", str(db), "-w", f"{name}~powershell"]) == 0
        out, err = capsys.readouterr()
        assert out == ""
        assert err.splitlines() == [
            "0 events", f"note: no stored event has a field {name!r} (field names are "
                        f"case-sensitive); did you mean {meant!r}?"]
    # a field that exists but matches nothing: no note; one event: "1 event"
    assert main(["query", str(db), "-w", "ParentImage~no-such-program.exe"]) == 0
    assert capsys.readouterr().err.splitlines() == ["0 events"]
    assert main(["query", str(db), "--limit", "1"]) == 0
    assert capsys.readouterr().err.splitlines() == ["1 event"]
