"""The replay pipeline and the ``sysmonx replay`` command, on the built-in sample and the corpus."""

from collections import Counter
from pathlib import Path

import orjson
import pytest
from evtx import PyEvtxParser

from sysmonx.cli import builtin_config_path, builtin_sample_path, main
from sysmonx.config import load_config
from sysmonx.pipeline import Replayer, ReplayOptions
from sysmonx.sources import open_source

# What the built-in default config makes of the built-in sample: record id -> RuleName.
SAMPLE_INCLUDED = {
    1001: None, 1002: None, 1003: "-", 1004: "-", 1006: "-",
    1008: "technique_id=T1059.001,technique_name=PowerShell",
    1010: "technique_id=T1021.001,technique_name=Remote Desktop Protocol",
    1011: "-",
    1013: "technique_id=T1547.001,technique_name=Startup Folder",
    1015: "technique_id=T1003.001,technique_name=LSASS Memory",
    1016: "technique_id=T1547.001,technique_name=Registry Run Keys",
    1018: "technique_id=T1003.001,technique_name=LSASS Memory",
    1019: "-", 1020: "-",
    1021: "technique_id=T1055,technique_name=Cobalt Strike default pipe",
    1023: "-", 1026: None,
}
SAMPLE_EXCLUDED = {1005, 1007, 1009, 1012, 1014, 1017, 1022, 1024}


def read_back(path: Path):
    errors = []
    events = list(open_source(str(path), errors.append))
    assert errors == []
    return events


@pytest.mark.parametrize("fmt", ["xml", "jsonl", "linux-xml"])
def test_sample_through_default_config(tmp_path, capsys, fmt):
    out = tmp_path / f"out.{fmt}"
    assert main(["replay", "--sample", "--format", fmt, "-o", str(out)]) == 0
    events = read_back(out)
    got = {e.record_id: e.data.get("RuleName") for e in events}
    assert got == SAMPLE_INCLUDED
    summary = capsys.readouterr().err
    assert "records read: 26" in summary and "Sysmon events: 25" in summary
    assert "errors: 0" in summary


def test_sample_counts_per_event_id():
    r = Replayer(ReplayOptions(config=load_config(builtin_config_path())))
    stats = r.run([str(builtin_sample_path())])
    assert (stats.records, stats.sysmon, stats.non_sysmon, stats.errors) == (26, 25, 1, 0)
    assert sum(stats.included.values()) == len(SAMPLE_INCLUDED)
    assert sum(stats.excluded.values()) == len(SAMPLE_EXCLUDED)
    assert stats.excluded == Counter({1: 2, 3: 1, 22: 1, 11: 1, 13: 1, 7: 1, 23: 1})


def test_no_config_passes_everything_unchanged(tmp_path):
    out = tmp_path / "all.jsonl"
    assert main(["replay", str(builtin_sample_path()), "--format", "jsonl", "-o", str(out),
                 "--non-sysmon", "pass", "-q"]) == 0
    original = read_back(builtin_sample_path())
    assert read_back(out) == original
    first = orjson.loads(out.read_bytes().splitlines()[2])
    assert first["EventID"] == 1 and first["Image"] == "C:\\Windows\\System32\\cmd.exe"
    assert first["System"]["TimeCreated"].endswith("Z")


def test_bad_config_is_fatal_with_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.xml"
    bad.write_text('<Sysmon schemaversion="4.90">\n<EventFiltering>\n'
                   '<ProcessCreate onmatch="include"><Image condition="sounds like">x</Image>'
                   "</ProcessCreate></EventFiltering></Sysmon>")
    assert main(["replay", str(builtin_sample_path()), "--config", str(bad), "-q"]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3:" in err and "Unknown condition: sounds like" in err


def test_missing_input_is_fatal(tmp_path, capsys):
    assert main(["replay", str(tmp_path / "nope.evtx"), "-q"]) == 1
    assert "no such file" in capsys.readouterr().err


def test_bad_records_are_error_lines_not_failures(tmp_path, capsys):
    src = tmp_path / "mixed.jsonl"
    good = builtin_sample_path()
    lines = (tmp_path / "conv.jsonl")
    assert main(["replay", str(good), "--format", "jsonl", "-o", str(lines), "-q"]) == 0
    body = lines.read_bytes().splitlines()
    src.write_bytes(b"\n".join(body[:3] + [b"{not json"] + body[3:]) + b"\n")
    out = tmp_path / "out.jsonl"
    assert main(["replay", str(src), "--format", "jsonl", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"{src}:4" in err and "errors: 1" in err
    assert len(read_back(out)) == len(body)


def _raw_sysmon_counts(files):
    counts = Counter()
    for f in files:
        for rec in PyEvtxParser(str(f)).records_json():
            d = orjson.loads(rec["data"])["Event"]["System"]
            if d["Provider"]["#attributes"]["Name"] == "Microsoft-Windows-Sysmon":
                eid = d["EventID"]
                counts[eid if isinstance(eid, int) else int(eid["#text"])] += 1
    return counts


@pytest.mark.parametrize("config_rel", [
    "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml",
    "configs/olafhartong__sysmon-modular/sysmonconfig.xml",
])
def test_every_corpus_evtx_through_real_configs(corpus, config_rel):
    files = sorted((corpus / "evtx").rglob("*.evtx"))
    assert len(files) == 42
    r = Replayer(ReplayOptions(config=load_config(corpus / config_rel)))
    stats = r.run([str(corpus / "evtx")])
    assert stats.errors == 0
    raw = _raw_sysmon_counts(files)
    assert stats.sysmon == sum(raw.values())
    assert stats.included + stats.excluded == raw
    assert sum(stats.included.values()) > 0 and sum(stats.excluded.values()) > 0


def test_output_that_is_an_input_is_refused(tmp_path, capsys):
    """A new user's report: `-o` equal to the input emptied it; inside an input folder the
    replay read its own output forever."""
    src = tmp_path / "a.xml"
    src.write_bytes(builtin_sample_path().read_bytes())
    assert main(["replay", str(src), "-o", str(src), "-q"]) == 1
    assert src.stat().st_size == builtin_sample_path().stat().st_size
    assert "also an input" in capsys.readouterr().err
    assert main(["replay", str(tmp_path), "-o", str(tmp_path / "out.xml"), "-q"]) == 1
    assert "inside the input folder" in capsys.readouterr().err
    assert not (tmp_path / "out.xml").exists()


def test_stdin_input_and_stdout_dash(tmp_path, monkeypatch, capsysbinary):
    import io
    import sys
    fake_in = io.BufferedReader(io.BytesIO(builtin_sample_path().read_bytes()))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(fake_in))
    assert main(["replay", "-", "-o", "-", "--format", "jsonl", "-q"]) == 0
    out = capsysbinary.readouterr().out.splitlines()
    assert len(out) == 25 and orjson.loads(out[0])["EventID"] == 4


def test_no_events_warning_strict_and_bad_jobs(tmp_path, capsys):
    junk = tmp_path / "junk.log"
    junk.write_bytes(b"some text, not a log\n")
    assert main(["replay", str(junk), "-q"]) == 0
    assert "no events found" in capsys.readouterr().err
    assert main(["replay", str(junk), "-q", "--strict"]) == 1
    # binary content is not a log whatever the name: an error (new-user report, session 10)
    junk.write_bytes(b"\x00\x01 random bytes, not a log\n")
    assert main(["replay", str(junk), "-q"]) == 1
    assert "unrecognised input format (binary content;" in capsys.readouterr().err
    assert main(["replay", str(builtin_sample_path()), "--jobs", "-1"]) == 87


def test_blob_given_as_config_gets_a_hint(corpus, capsys):
    blob = corpus / "configs/Sysinternals__SysmonCommon/UnitTests/data/include_all.xml.bin"
    assert main(["replay", str(builtin_sample_path()), "--config", str(blob), "-q"]) == 1
    assert "sysmonx config decode" in capsys.readouterr().err
