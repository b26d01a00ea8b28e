"""What the commands say when they load Sigma rules and when a live run ends.

From new users' reports: a live sensor repeated the load lines of Windows-only rules at
every start (and a first run listed ~21 per-rule lines that later runs did not), said nothing
about Sigma at exit, and after a rebuilt rule cache entry the loaded line said only
"(compiled)". Each test fails on the code before these changes.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sysmonx.cli.common import load_detection, stderr_console
from sysmonx.event import LINUX_CHANNEL, LINUX_PROVIDER, Event

RULES = {
    "win.yml": ("windows", "image_load", "CommandLine", "00000000-0000-0000-0000-000000000001"),
    "lnx.yml": ("linux", "network_connection", "CommandLine",
                "00000000-0000-0000-0000-000000000002"),
    "rej.yml": ("windows", "file_access", "TargetFilename",
                "00000000-0000-0000-0000-000000000003"),
    "curl.yml": ("linux", "process_creation", "Image", "00000000-0000-0000-0000-000000000004"),
}


def _rules(tmp_path: Path) -> Path:
    d = tmp_path / "rules"
    d.mkdir()
    for name, (product, category, fld, rid) in RULES.items():
        value = "/curl" if name == "curl.yml" else "zzz"
        op = "endswith" if name == "curl.yml" else "contains"
        (d / name).write_text(
            f"title: {name}\nid: {rid}\nstatus: test\nlevel: low\nlogsource:\n"
            f"    product: {product}\n    category: {category}\ndetection:\n    sel:\n"
            f"        {fld}|{op}: '{value}'\n    condition: sel\n")
    return d


def _load(rules: Path, cache: Path, capsys, platform=None, quiet=False):
    args = argparse.Namespace(rule_cache=str(cache), no_rule_cache=False, quiet=quiet)
    stage = load_detection([str(rules)], stderr_console(), args, platform=platform)
    return stage, capsys.readouterr().err


def test_every_start_says_the_same_one_line_and_rule_issues_lists_them(tmp_path, capsys):
    """The load issues are one line of counts, the same at a start that compiled the rules and
    at one that read them from the rule cache (a new user saw ~21 lines at the first start and
    fewer later); the live sensor's line also counts the warnings about rules only Windows
    Sysmon's events meet. ``--rule-issues`` lists each issue."""
    rules, cache = _rules(tmp_path), tmp_path / "cache"
    line = ("sigma: load issues (listed with --rule-issues): 1 rejected logsource, 2 warning "
            "field; 1 of the warnings about rules only Windows Sysmon's events meet, which this "
            "sensor does not write")
    _, first = _load(rules, cache, capsys, platform="lnx")
    _, second = _load(rules, cache, capsys, platform="lnx")
    assert "(compiled and stored in the rule cache in" in first
    assert "(from the rule cache in" in second
    for err in (first, second):
        assert line in err.splitlines()
        assert not any(f"{n}: " in err for n in ("win.yml", "lnx.yml", "rej.yml"))
    # replay (no platform): the counts alone
    _, replay = _load(rules, cache, capsys)
    assert ("sigma: load issues (listed with --rule-issues): 1 rejected logsource, 2 warning "
            "field") in replay.splitlines()
    for platform in ("lnx", None):  # listed, from the cache too
        args = argparse.Namespace(rule_cache=str(cache), no_rule_cache=False, rule_issues=True)
        load_detection([str(rules)], stderr_console(), args, platform=platform)
        listed = capsys.readouterr().err
        assert all(f"{n}: " in listed for n in ("win.yml", "lnx.yml", "rej.yml"))
        assert "load issues (listed with" not in listed


def test_a_rebuilt_cache_entry_is_said_once_on_the_loaded_line(tmp_path, capsys):
    rules, cache = _rules(tmp_path), tmp_path / "cache"
    _load(rules, cache, capsys)
    (entry,) = cache.glob("*.pickle")
    os.chmod(entry, 0o666)
    _, err = _load(rules, cache, capsys)
    assert "ignored and rebuilt" not in err.replace(
        "; its entry was ignored and rebuilt: not a regular file owned by this user and "
        "writable by no one else)", "")
    assert err.rstrip().endswith(
        f"1 rejected, of 4 read (compiled and stored in the rule cache in {cache}; its entry "
        "was ignored "
        "and rebuilt: not a regular file owned by this user and writable by no one else)")
    assert entry.stat().st_mode & 0o777 == 0o600


def test_an_unwritable_cache_says_not_stored(tmp_path, capsys):
    rules, cache = _rules(tmp_path), tmp_path / "cache"
    cache.mkdir(mode=0o777)
    os.chmod(cache, 0o777)
    _, err = _load(rules, cache, capsys)
    assert "sigma: note: rule cache not used:" in err
    assert err.rstrip().endswith("(compiled; not stored in the rule cache: see the note above)")


def test_live_exit_line_counts_sigma_rules_events_and_alerts(tmp_path, capsys):
    from sysmonx.cli.common import sigma_summary
    stage, _ = _load(_rules(tmp_path), tmp_path / "cache", capsys, platform="lnx")
    for image in ("/usr/bin/curl", "/usr/bin/id", "/usr/bin/curl"):
        stage.process(Event(1, {"RuleName": "-", "Image": image}, provider=LINUX_PROVIDER,
                            channel=LINUX_CHANNEL, time_created="2026-12-07T01:00:00.000000000Z"))
    assert sigma_summary(stage, None) == (
        "Sigma: 3 rules and 0 correlations loaded, 1 rejected, of 4 read; events checked 3; alerts 2 "
        "(low 2), written as event 1000 in the event stream")
    assert sigma_summary(stage, "/var/log/a.jsonl").endswith("written to /var/log/a.jsonl")
    from sysmonx.cli.common import print_detection_summary
    print_detection_summary(stderr_console(), stage)
    err = capsys.readouterr().err
    assert "Sigma detections" in err and "curl.yml" in err


def _cli(args, tmp_path):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "sysmonx.cli", *args], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[1], timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                               "COLUMNS": "200"})


def test_quiet_replay_prints_errors_only_and_counts_what_it_held_back(corpus, tmp_path):
    """-q held back the per-file clock warnings of JSON datasets exported in local time; a
    damaged file's error is still printed."""
    skewed = next((corpus / "json").rglob("cmd_psexec_lsa_secrets_dump.zip"))
    bad = tmp_path / "bad.evtx"
    bad.write_bytes(b"ElfFile\0" + b"\0" * 100)
    loud = _cli(["replay", str(skewed), "--no-output", "--no-progress"], tmp_path)
    assert loud.returncode == 0 and "System times are" in loud.stderr
    n = loud.stderr.count("\nwarning: ") + loud.stderr.startswith("warning: ")
    quiet = _cli(["replay", str(skewed), str(bad), "--no-output", "-q"], tmp_path)
    lines = quiet.stderr.splitlines()
    assert not [ln for ln in lines if ln.startswith(("warning:", "note:"))], lines
    assert any(ln.startswith("error: ") and "bad.evtx" in ln for ln in lines), lines
    assert lines[-1] == (f"replay: not shown (-q): {n} warning{'s' if n > 1 else ''}; run "
                         "without -q to see them")
    clean = _cli(["replay", str(corpus / "linux"), "--no-output", "-q"], tmp_path)
    assert clean.returncode == 0 and clean.stderr == ""
    helptext = _cli(["replay", "-h"], tmp_path).stdout
    assert "print only errors" in " ".join(helptext.split())


def test_no_rule_loaded_says_nothing_was_stored_and_stores_nothing(tmp_path, capsys):
    """A new user: a folder without a Sigma rule said "(compiled and stored in the rule cache
    in DIR)" before its error: nothing loaded, so nothing is stored and the line says so."""
    rules, cache = tmp_path / "empty", tmp_path / "cache"
    rules.mkdir()
    (rules / "notes.txt").write_text("not a rule\n")
    for _ in range(2):  # the second run: still nothing in the cache to read
        stage, err = _load(rules, cache, capsys)
        assert stage is None
        assert ("sigma: 0 rules and 0 correlations loaded, 0 rejected, of 0 read (no rule "
                "compiled; nothing stored in the rule cache)") in err
        assert "stored in the rule cache in" not in err
        assert "error: --rules: no Sigma rule loaded from" in err
    assert not list(cache.glob("*.pickle"))


SECURITY_RULE = """title: sec.yml
id: 00000000-0000-0000-0000-000000000005
status: test
level: low
logsource:
    product: windows
    service: security
detection:
    sel:
        EventID: 4624
    condition: sel
"""


def test_run_says_how_many_rules_can_never_see_an_event_here(tmp_path, capsys):
    """``run --rules`` on Linux with Windows-only rules (new user's report): a note, not an
    error, counts the loaded rules no event of this sensor can meet."""
    from sysmonx.cli import main
    from sysmonx.cli.common import unreachable_rules_note
    rules = _rules(tmp_path)
    (rules / "sec.yml").write_text(SECURITY_RULE)
    stage, _ = _load(rules, tmp_path / "cache", capsys, platform="lnx")
    assert len(stage.matcher.compiled) == 4  # win, lnx, curl, sec (rej.yml rejected)
    assert unreachable_rules_note(stage, None, follow=False) == (
        "note: 2 of 4 loaded rules can never see an event on this host (Windows Sysmon only: "
        "1, another channel only: 1): this sensor writes Sysmon for Linux events (provider "
        "Linux-Sysmon) and no other channel")
    # a followed log may hold other channels' records: only the Windows Sysmon rule
    assert unreachable_rules_note(stage, None, follow=True) == (
        "note: 1 of 4 loaded rules can never see an event on this host (Windows Sysmon only: "
        "1): this sensor writes Sysmon for Linux events (provider Linux-Sysmon)")
    # under Windows Sysmon's provider the Linux rules are the ones never met
    note = unreachable_rules_note(stage, "Microsoft-Windows-Sysmon", follow=False)
    assert note is not None and note.startswith(
        "note: 3 of 4 loaded rules can never see an event on this host (Sysmon for Linux only: "
        "2, another channel only: 1)")
    # Linux rules only: nothing to say
    lnx = tmp_path / "lnx"
    lnx.mkdir()
    (lnx / "curl.yml").write_text((rules / "curl.yml").read_text())
    stage, _ = _load(lnx, tmp_path / "cache", capsys, platform="lnx")
    assert unreachable_rules_note(stage, None, follow=False) is None
    # the start of a run says it, once, after the loaded line; the run goes on
    log = tmp_path / "syslog"
    log.write_text("")
    assert main(["run", "--follow", str(log), "--rules", str(rules), "-f", "jsonl", "-o",
                 str(tmp_path / "out.jsonl"), "--duration", "1", "--heartbeat", "0"]) == 0
    err = capsys.readouterr().err
    assert err.count("can never see an event") == 1
    assert ("sigma: note: 1 of 4 loaded rules can never see an event on this host (Windows "
            "Sysmon only: 1): this sensor writes Sysmon for Linux events (provider "
            "Linux-Sysmon)\n") in err
