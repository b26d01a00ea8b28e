"""What the live sensor says on stderr: a reload that was applied, and what the config dropped.

A new user found that a successful SIGHUP reload printed nothing (only event 16 said it, while a
refusal prints a line), and that the exit summary's "filtered out N" had no per-EventID table
like replay's. Both fail on the code before ``reload_applied`` and the sensor's filter table.
No kernel: the backend is a script of observations.
"""

from __future__ import annotations

import threading
import time

import pytest

from sysmonx.cli.run import cmd_run
from sysmonx.config import load_config
from sysmonx.pipeline.live import Sensor, SensorOptions
from sysmonx.sensor import live as live_mod
from sysmonx.sensor import observations as ob
from sysmonx.sensor.backends.base import Backend

CFG = """<Sysmon schemaversion="4.81"><EventFiltering>
<RuleGroup name="" groupRelation="or"><FileCreate onmatch="include">
<TargetFilename name="keep" condition="begin with">{prefix}</TargetFilename></FileCreate></RuleGroup>
</EventFiltering></Sysmon>"""


class ScriptBackend(Backend):
    """Emits its script from a thread, then sees nothing."""

    name = "script"
    tier = "A"
    script: list = []

    @classmethod
    def probe(cls):
        return None

    def start(self):
        self.thread = threading.Thread(target=lambda: [self.emit(o) for o in self.script],
                                       daemon=True)
        self.thread.start()

    def stop(self):
        self.thread.join(5)


@pytest.fixture
def script_backend(monkeypatch):
    monkeypatch.setattr(live_mod, "choose_backend", lambda forced=None, failed=None:
                        ("script", {}))
    monkeypatch.setattr(live_mod, "load_backend", lambda name: ScriptBackend)
    monkeypatch.setattr(live_mod, "auxiliary_backends", list)
    return ScriptBackend


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
                       "1 rule sets, 2 filters)"]
    ev16 = [e for e in rec.events if e.event_id == 16][-1]
    assert ev16.data["ConfigurationFileHash"] == f"SHA256={new.sha256}"


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
