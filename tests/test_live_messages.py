"""What the live sensor says on stderr: a reload that was applied, and what the config dropped.

A new user found that a successful SIGHUP reload printed nothing (only event 16 said it, while a
refusal prints a line), and that the exit summary's "filtered out N" had no per-EventID table
like replay's. Both fail on the code before ``reload_applied`` and the sensor's filter table.
No kernel: the backend is a script of observations.
"""

from __future__ import annotations

import threading
import time


from sysmonx.cli.run import cmd_run
from sysmonx.config import load_config
from sysmonx.pipeline.live import Sensor, SensorOptions
from sysmonx.sensor import observations as ob

CFG = """<Sysmon schemaversion="4.81"><EventFiltering>
<RuleGroup name="" groupRelation="or"><FileCreate onmatch="include">
<TargetFilename name="keep" condition="begin with">{prefix}</TargetFilename></FileCreate></RuleGroup>
</EventFiltering></Sysmon>"""


def _wait(cond, timeout=10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


class Recorder:
    def __init__(self):
        self.events: list = []

    def write(self, e):
        self.events.append(e)

    def close(self):
        pass


def test_an_applied_reload_says_so_with_the_hash_and_the_rule_count(tmp_path, script_backend):
    path = tmp_path / "c.xml"
    path.write_text(CFG.format(prefix="/tmp/keep"))
    script_backend.script = []
    said: list = []
    rec = Recorder()
    sensor = Sensor(load_config(path), [rec],
                    SensorOptions(dns=False, guard=False, state_dir=None),
                    config_path=str(path), on_status=said.append)
    t = threading.Thread(target=sensor.run, kwargs={"install_signals": False})
    t.start()
    try:
        assert _wait(lambda: len(rec.events) >= 2)
        path.write_text(CFG.format(prefix="/tmp/other").replace(
            "</RuleGroup>", '<TargetFilename condition="end with">.exe</TargetFilename>'
            "</FileCreate></RuleGroup>").replace("</TargetFilename></FileCreate>",
                                                 "</TargetFilename>", 1))
        new = load_config(path)
        sensor.request_reload()
        assert _wait(lambda: sum(e.event_id == 16 for e in rec.events) >= 2)
    finally:
        sensor.request_stop()
        t.join(15)
    applied = [m for m in said if m.startswith("configuration applied")]
    assert applied == [f"configuration applied: {path} (SHA256={new.sha256}, schema 4.81, "
                       "1 rule set, 2 filters)"]
    ev16 = [e for e in rec.events if e.event_id == 16][-1]
    assert ev16.data["ConfigurationFileHash"] == f"SHA256={new.sha256}"


def test_a_reloads_config_cache_notes_go_through_the_status_line(tmp_path, script_backend,
                                                                 capsys, monkeypatch):
    """A SIGHUP reload wrote the config cache's notes straight to stderr; start-up shows them
    through ``run``'s console: the reload now gives them to ``on_status`` (``note: ...``)
    before the applied line, and writes nothing to stderr itself."""
    path = tmp_path / "c.xml"
    path.write_text(CFG.format(prefix="/tmp/keep"))
    script_backend.script = []
    said: list = []
    rec = Recorder()
    sensor = Sensor(load_config(path, cache=False), [rec],
                    SensorOptions(dns=False, guard=False, state_dir=None),
                    config_path=str(path), on_status=said.append)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("SYSMONX_CACHE_DIR", str(blocker))  # the cache cannot be written
    monkeypatch.delenv("SYSMONX_CONFIG_CACHE", raising=False)
    t = threading.Thread(target=sensor.run, kwargs={"install_signals": False})
    t.start()
    try:
        assert _wait(lambda: len(rec.events) >= 2)
        sensor.request_reload()
        assert _wait(lambda: sum(e.event_id == 16 for e in rec.events) >= 2)
    finally:
        sensor.request_stop()
        t.join(15)
    notes = [i for i, m in enumerate(said) if m.startswith("note: config cache: cannot write ")]
    applied = [i for i, m in enumerate(said) if m.startswith("configuration applied: ")]
    assert len(notes) == 1 and len(applied) == 1 and notes[0] < applied[0]
    assert "note" not in capsys.readouterr().err


def test_run_exit_summary_has_replays_per_eventid_table(tmp_path, script_backend, capsys):
    path = tmp_path / "c.xml"
    path.write_text(CFG.format(prefix="/tmp/keep"))
    now = time.time_ns()
    script_backend.script = [ob.FileCreate(now, 4242, "/tmp/keep/a"),
                             ob.FileCreate(now, 4242, "/tmp/drop/b"),
                             ob.FileCreate(now, 4242, "/tmp/drop/c")]
    out = tmp_path / "out.xml"
    rc = cmd_run(["--config", str(path), "--duration", "1.5", "--no-dns", "--no-guard",
                  "--state-dir", "none", "-o", str(out)])
    assert rc == 0
    err = capsys.readouterr().err
    assert "what the config kept" in err
    head = next(line for line in err.splitlines() if "EventID" in line)
    assert [w for w in head.replace("┃", " ").split()] == [
        "EventID", "Event", "read", "included", "excluded"]
    row = next(line for line in err.splitlines() if "(FileCreate)" in line)
    assert row.replace("│", " ").split()[-3:] == ["3", "1", "2"]
    assert "filtered out 2," in err
    total = next(line for line in err.splitlines() if " total " in line)
    assert total.replace("│", " ").split()[-3:] == ["6", "4", "2"]  # 11 and 16, 4 twice


def test_run_exit_table_lists_what_the_backends_collect_with_zeros(tmp_path, monkeypatch,
                                                                  script_backend, capsys):
    """A new user could not tell "no DNS happened" from "DNS not collected": the EventIDs the
    running backends collect (``Backend.collecting``, data) are listed with 0 when none was
    seen."""
    monkeypatch.setattr(script_backend, "events", frozenset({1, 5, 11, 23}))
    path = tmp_path / "c.xml"
    path.write_text(CFG.format(prefix="/tmp/keep"))
    script_backend.script = [ob.FileCreate(time.time_ns(), 4242, "/tmp/keep/a")]
    assert cmd_run(["--config", str(path), "--duration", "1", "--no-dns", "--no-guard",
                    "--state-dir", "none", "-o", str(tmp_path / "out.xml")]) == 0
    err = capsys.readouterr().err.splitlines()
    rows = {r.replace("│", " ").split()[0]: r.replace("│", " ").split()[-3:]
            for r in err if "│" in r and r.replace("│", " ").split()[0].isdigit()}
    assert rows == {"1": ["0", "0", "0"], "4": ["2", "2", "0"], "5": ["0", "0", "0"],
                    "11": ["1", "1", "0"], "16": ["1", "1", "0"], "23": ["0", "0", "0"]}
    assert "sysmonx: EventIDs the backends collect are listed, 0 when none was seen" in err


def test_exit_table_total_sysmon_counts_sysmons_events_only():
    """The live exit table's ``total Sysmon`` row counted SysmonX's own heartbeats (202) with
    Sysmon's events; they now have their own rows and total."""
    from collections import Counter

    from rich.console import Console

    from sysmonx.cli.common import print_filter_table
    con = Console(record=True, width=100, file=open("/dev/null", "w"))
    print_filter_table(con, Counter({1: 5, 202: 3, 201: 1, 100: 2, 255: 1}), Counter({1: 4}),
                       "t", collected=(1, 22, 210))
    rows = [r.replace("│", " ").split() for r in con.export_text().splitlines() if "│" in r]
    assert [r[0] if r[0].isdigit() else " ".join(r[:2]) for r in rows] == [
        "1", "22", "100", "255", "total Sysmon", "201", "202", "210", "total SysmonX"]
    assert rows[4][-3:] == ["12", "8", "4"] and rows[-1][-3:] == ["4", "4", "0"]
    assert rows[1][-3:] == rows[7][-3:] == ["0", "0", "0"]  # collected, none seen


def test_backends_say_what_they_collect():
    """``collecting`` narrows ``events`` to what runs: tier C without fanotify or its TCP trace
    collects process events only; audit and eBPF leave out their events off unless asked."""
    from sysmonx.sensor.backends.audit import AuditBackend
    from sysmonx.sensor.backends.cnproc import CnprocBackend
    from sysmonx.sensor.backends.ebpf import OPTIONAL_EVENTS, EbpfBackend
    cn = CnprocBackend(lambda o: None)
    assert cn.collecting() == {1, 5}
    cn._fan, cn._trace = object(), object()
    assert cn.collecting() == cn.events == {1, 3, 5, 11, 23}
    assert 212 not in AuditBackend(lambda o: None).collecting()
    assert 212 in AuditBackend(lambda o: None, options={"optional_events": {212}}).collecting()
    eb = EbpfBackend(lambda o: None)
    eb.visibility = object()
    assert eb.collecting() == eb.events - OPTIONAL_EVENTS
    eb.options["optional_events"] = frozenset({6})
    assert 6 in eb.collecting()


def test_run_exit_summary_adds_up_alerts_beside_the_table(tmp_path, script_backend, capsys):
    """A new user's finding: "events written 2,060" against a table totalling 1,995 included,
    with nothing saying the 65 Sigma alerts (event 1000) are written outside the table."""
    path = tmp_path / "c.xml"
    path.write_text(CFG.format(prefix="/tmp/keep"))
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "keep.yml").write_text(
        "title: keep\nid: 00000000-0000-0000-0000-0000000000f1\nstatus: test\nlevel: low\n"
        "logsource:\n    product: linux\n    category: file_event\ndetection:\n    sel:\n"
        "        TargetFilename|startswith: '/tmp/keep/'\n    condition: sel\n")
    now = time.time_ns()
    script_backend.script = [ob.FileCreate(now, 4242, "/tmp/keep/a"),
                             ob.FileCreate(now, 4242, "/tmp/keep/b"),
                             ob.FileCreate(now, 4242, "/tmp/drop/c")]
    rc = cmd_run(["--config", str(path), "--duration", "1.5", "--no-dns", "--no-guard",
                  "--state-dir", "none", "-o", str(tmp_path / "out.xml"), "--rules",
                  str(rules), "--no-rule-cache"])
    assert rc == 0
    err = capsys.readouterr().err
    written = int(err.split("events written ", 1)[1].split(",", 1)[0])
    total = next(line for line in err.splitlines() if " total " in line)
    included = int(total.replace("│", " ").split()[-2])
    assert "sysmonx: also written, not in the table: event 1000 (Sigma alert) 2" in \
        err.splitlines()
    assert written == included + 2 == 7  # 16, 4 twice, two 11 and the two alerts


def test_run_exit_summary_says_what_its_errors_were(tmp_path, script_backend):
    """"errors 2" were two refused reloads, and the summary did not say so."""
    path = tmp_path / "c.xml"
    path.write_text(CFG.format(prefix="/tmp/keep"))
    script_backend.script = []
    rec = Recorder()
    sensor = Sensor(load_config(path), [rec], SensorOptions(dns=False, guard=False,
                                                            state_dir=None),
                    config_path=str(path), on_status=lambda m: None)
    t = threading.Thread(target=sensor.run, kwargs={"install_signals": False})
    t.start()
    try:
        assert _wait(lambda: len(rec.events) >= 2)
        path.write_text("<Sysmon schemaversion='4.81'><EventFiltering><bad")
        for n in (1, 2):
            sensor.request_reload()
            assert _wait(lambda n=n: sum(e.event_id == 255 for e in rec.events) >= n)
    finally:
        sensor.request_stop()
        t.join(15)
    assert "errors 2 (2 refused config reloads: event 255)" in sensor.summary()


def test_run_says_how_its_config_was_loaded_in_replays_words(tmp_path, script_backend, capsys,
                                                             monkeypatch):
    # the live sensor said nothing of its config at start; replay's line, word for word
    from sysmonx.cli.replay import cmd_replay
    monkeypatch.setenv("SYSMONX_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "c.xml"
    path.write_text(CFG.format(prefix="/tmp/keep"))
    script_backend.script = []
    lines = []
    for _ in range(3):  # first run, second (stored), third (from the cache)
        rc = cmd_run(["--config", str(path), "--duration", "0.3", "--no-dns", "--no-guard",
                      "--state-dir", "none", "-o", str(tmp_path / "out.xml")])
        assert rc == 0
        lines.append([x for x in capsys.readouterr().err.splitlines()
                      if x.startswith("config: ")])
    where = tmp_path / "cache" / "config"
    head = f"config: {path} loaded: schema 4.81, 1 rule set, 1 filter"
    assert lines == [[f"{head} (parsed; the next run caches it in {where})"],
                     [f"{head} (parsed and stored in the config cache in {where})"],
                     [f"{head} (from the config cache in {where})"]]
    assert cmd_replay(["--sample", "--config", str(path), "--no-output"]) == 0
    assert [x for x in capsys.readouterr().err.splitlines()
            if x.startswith("config: ")] == lines[2]


def test_run_names_its_built_in_default_as_replay_does(script_backend, capsys, monkeypatch):
    monkeypatch.setenv("SYSMONX_CONFIG_CACHE", "0")
    script_backend.script = []
    assert cmd_run(["--duration", "0.3", "--no-dns", "--no-guard", "--state-dir", "none",
                    "-o", "/dev/null"]) == 0
    [line] = [x for x in capsys.readouterr().err.splitlines() if x.startswith("config: ")]
    assert line.startswith("config: built-in default-linux loaded: schema ")
    assert line.endswith(" filters (parsed; config cache off)")


def test_replay_and_live_print_one_table_in_the_same_words():
    # replay's summary table and the live exit's were two copies: live's total row said
    # "total" where replay's says "total Sysmon"
    from collections import Counter
    from types import SimpleNamespace

    from rich.console import Console

    from sysmonx.cli.common import print_filter_table
    from sysmonx.cli.replay import print_summary
    inc, exc = Counter({1: 5, 11: 1}), Counter({11: 2, 3: 1_234})
    stats = SimpleNamespace(included=inc, excluded=exc, sysmon=1_242, files=1, records=1_242,
                            non_sysmon=0, non_sysmon_written=False, errors=0, warnings=0)

    def render(fn) -> list[str]:
        con = Console(record=True, width=100, file=open("/dev/null", "w"))
        fn(con)
        return con.export_text().splitlines()

    replay = render(lambda c: print_summary(c, stats, True, config_name="c.xml"))
    live = render(lambda c: print_filter_table(c, inc, exc, "SysmonX replay summary"))
    assert replay[:len(live)] == live
    rows = [r.replace("│", " ").split() for r in live if "│" in r]
    assert [r[:1] + r[-3:] for r in rows] == [["1", "5", "5", "0"], ["3", "1,234", "0", "1,234"],
                                              ["11", "3", "1", "2"],
                                              ["total", "1,242", "6", "1,236"]]
    assert rows[-1][:2] == ["total", "Sysmon"]


def test_run_exit_summary_counts_a_host_fact_apart_from_collection_errors(tmp_path,
                                                                        script_backend):
    """A new user's finding: "errors 1 (1 collection error: event 255)" for a kernel without
    module support, where DriverLoad cannot occur: nothing broke. The event 255 stays."""
    path = tmp_path / "c.xml"
    path.write_text(CFG.format(prefix="/tmp/keep"))
    now = time.time_ns()
    script_backend.script = [
        ob.BackendError(now, "ebpf.visibility", "kernel without module support (no "
                        "/proc/modules): no module can be loaded, DriverLoad (6) never occurs",
                        host_fact=True),
        ob.BackendError(now + 1, "ebpf", "attach tp/x failed")]
    rec = Recorder()
    sensor = Sensor(load_config(path), [rec], SensorOptions(dns=False, guard=False,
                                                            state_dir=None, duration=1.0),
                    config_path=str(path), on_status=lambda m: None)
    sensor.run(install_signals=False)
    ids = [e.data.get("ID") for e in rec.events if e.event_id == 255]
    assert ids == ["ebpf.visibility", "ebpf"]
    text = sensor.summary()
    assert "errors 1 (1 collection error: event 255), host notes 1 (event 255: what this host " \
        "cannot do, such as load kernel modules; nothing failed or was lost)" in text
    assert sensor.stats.errors == 1 and sensor.stats.host_notes == 1
