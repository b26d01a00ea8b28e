"""The heartbeat interval from the configuration (SysmonX ``<HeartbeatInterval>``): the command
line's ``--heartbeat`` wins, a reload applies a changed interval to the running guard, 0 means
none; and a sensor (fake backend, no kernel) whose config says 1 second writes heartbeats about
a second apart."""

from __future__ import annotations

import sys
import threading
import time
from datetime import datetime, timezone

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("the live sensor is Linux-only", allow_module_level=True)

from sysmonx.cli.common import stderr_console
from sysmonx.cli.run import heartbeat_option
from sysmonx.config import load_config
from sysmonx.pipeline.live import Sensor, SensorOptions
from sysmonx.sensor import live as live_mod
from sysmonx.sensor.assemble import Assembler
from sysmonx.sensor.backends.base import Backend
from sysmonx.sensor.guard import DEFAULT_HEARTBEAT_S, GuardOptions, SensorGuard
from sysmonx.sensor.process import ProcessCache


def guard(fixed=None, config_s=None, said=None) -> SensorGuard:
    opts = GuardOptions(heartbeat_s=fixed, trace=False, poll_s=0.05)
    return SensorGuard(opts, Assembler(ProcessCache()), backend="fake", config_hash="-",
                       config_heartbeat_s=config_s,
                       on_status=(said.append if said is not None else None))


def heartbeats(events) -> list:
    return [e for e in events if e.event_id == 202]


@pytest.mark.parametrize("fixed, config_s, expected", [
    (None, None, DEFAULT_HEARTBEAT_S),   # neither: 60
    (None, 5.0, 5.0),                    # the config's
    (None, 0.0, 0.0),                    # the config's "none"
    (30.0, 5.0, 30.0),                   # the command line wins
    (0.0, 5.0, 0.0),                     # --heartbeat 0 wins too
    (30.0, None, 30.0),
])
def test_command_line_wins_over_config(fixed, config_s, expected):
    said: list = []
    g = guard(fixed, config_s, said)
    assert g.heartbeat_s == expected
    overridden = fixed is not None and config_s is not None and fixed != config_s
    assert any("overridden by the command line" in m for m in said) == overridden
    g.close()


def test_cli_option_uses_the_configs_check(capsys):
    console = stderr_console()
    assert heartbeat_option(None, console) is None          # not given: the config decides
    assert heartbeat_option("0", console) == 0.0
    assert heartbeat_option("2.5", console) == 2.5
    assert heartbeat_option("nan", console) is False
    assert heartbeat_option("-1", console) is False
    err = capsys.readouterr().err
    assert "error: --heartbeat: 'nan' is not a number of seconds" in err
    assert "error: --heartbeat: '-1' is not a number of seconds" in err


def test_reload_applies_a_changed_interval_and_zero_stops_them():
    said: list = []
    g = guard(None, 3600.0, said)
    assert [e.data["Sequence"] for e in heartbeats(g.start())] == ["1"]
    assert heartbeats(g.collect()) == []
    g.config_reloaded("SHA256=b", 1.0)                 # 3600 s -> 1 s: due 1 s after the last
    assert g.heartbeat_s == 1.0 and "guard: heartbeat interval now 1 s (was 3600 s" in said[-1]
    deadline = time.monotonic() + 5
    got: list = []
    while not got and time.monotonic() < deadline:
        got = heartbeats(g.collect())
        time.sleep(0.02)
    assert [e.data["Sequence"] for e in got] == ["2"]
    assert got[0].data["ConfigurationFileHash"] == "SHA256=b"
    g.config_reloaded("SHA256=c", 0.0)                 # none
    assert g.heartbeat_s == 0.0 and "now none (0)" in said[-1]
    time.sleep(1.3)
    assert heartbeats(g.collect()) == []
    g.config_reloaded("SHA256=d", None)                # removed from the config: the default
    assert g.heartbeat_s == DEFAULT_HEARTBEAT_S
    # heartbeats were off: the first one is due at once
    assert [e.data["Sequence"] for e in heartbeats(g.collect())] == ["3"]
    assert [e.data["Sequence"] for e in heartbeats(g.finish())] == ["4"]


def test_reload_keeps_a_command_line_interval():
    said: list = []
    g = guard(3600.0, 1.0, said)
    g.start()
    g.config_reloaded("SHA256=b", 2.0)
    assert g.heartbeat_s == 3600.0
    assert sum("overridden by the command line" in m for m in said) == 2   # 1 s, then 2 s
    time.sleep(1.2)
    assert heartbeats(g.collect()) == []
    g.close()


def test_zero_in_the_config_means_no_heartbeat_at_all():
    g = guard(None, 0.0)
    assert heartbeats(g.start()) == []
    assert heartbeats(g.finish()) == []


# --- the whole live loop with a backend that sees nothing ---------------------------------------

class IdleBackend(Backend):
    """A backend that starts, sees nothing and stops (no kernel)."""

    name = "idle"
    tier = "A"

    @classmethod
    def probe(cls):
        return None

    def start(self):
        pass

    def stop(self):
        pass


@pytest.fixture
def idle_backend(monkeypatch):
    monkeypatch.setattr(live_mod, "choose_backend", lambda forced=None, failed=None: ("idle", {}))
    monkeypatch.setattr(live_mod, "load_backend", lambda name: IdleBackend)
    monkeypatch.setattr(live_mod, "auxiliary_backends", list)


class Recorder:
    def __init__(self):
        self.events: list = []

    def write(self, e):
        self.events.append(e)

    def close(self):
        pass


def _utc(e) -> float:
    return datetime.strptime(e.data["UtcTime"], "%Y-%m-%d %H:%M:%S.%f").replace(
        tzinfo=timezone.utc).timestamp()


def _wait(cond, timeout=10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


CFG = ('<Sysmon schemaversion="4.81">\n  <HeartbeatInterval>{s}</HeartbeatInterval>\n'
       '  <EventFiltering><FileCreate onmatch="include"/></EventFiltering>\n</Sysmon>\n')


def test_sensor_writes_heartbeats_at_the_configs_interval_and_follows_reload(
        tmp_path, idle_backend):
    path = tmp_path / "c.xml"
    path.write_text(CFG.format(s="1"))
    rec = Recorder()
    said: list = []
    sensor = Sensor(load_config(path), [rec],
                    SensorOptions(dns=False, guard=True, guard_trace=False, state_dir=None),
                    config_path=str(path), on_status=said.append)
    t = threading.Thread(target=sensor.run, kwargs={"install_signals": False})
    t.start()
    try:
        assert _wait(lambda: len(heartbeats(rec.events)) >= 4)
        hb = heartbeats(rec.events)[:4]
        assert [e.data["Sequence"] for e in hb] == ["1", "2", "3", "4"]
        gaps = [_utc(b) - _utc(a) for a, b in zip(hb, hb[1:], strict=False)]
        assert all(0.95 <= g < 1.9 for g in gaps), gaps      # about a second apart
        assert [e.data["SecondsSincePrevious"] for e in hb[1:]] == ["1", "1", "1"]
        assert sensor.source.guard.heartbeat_s == 1.0
        # SIGHUP's path: the edited config is re-read, 0 stops the heartbeats
        path.write_text(CFG.format(s="0"))
        sensor.request_reload()
        assert _wait(lambda: sum(e.event_id == 16 for e in rec.events) >= 2)
        assert _wait(lambda: sensor.source.guard.heartbeat_s == 0.0)
        n = len(heartbeats(rec.events))
        time.sleep(2.2)
        assert len(heartbeats(rec.events)) == n
    finally:
        sensor.request_stop()
        t.join(15)
    assert not t.is_alive()
    assert any("heartbeat interval now none (0) (was 1 s" in m for m in said)
    assert len(heartbeats(rec.events)) == n          # no last heartbeat either
    assert rec.events[-1].event_id == 4 and rec.events[-1].data["State"] == "Stopped"


def test_sensor_command_line_interval_wins_over_the_config(tmp_path, idle_backend):
    path = tmp_path / "c.xml"
    path.write_text(CFG.format(s="1"))
    rec = Recorder()
    sensor = Sensor(load_config(path), [rec],
                    SensorOptions(dns=False, guard=True, guard_trace=False, state_dir=None,
                                  heartbeat_s=3600.0),
                    config_path=str(path))
    t = threading.Thread(target=sensor.run, kwargs={"install_signals": False})
    t.start()
    try:
        assert _wait(lambda: len(heartbeats(rec.events)) >= 1)
        assert sensor.source.guard.heartbeat_s == 3600.0
        time.sleep(1.5)
        assert len(heartbeats(rec.events)) == 1
    finally:
        sensor.request_stop()
        t.join(15)
    assert [e.data["Sequence"] for e in heartbeats(rec.events)] == ["1", "2"]   # start, stop


# --- sysmonx run: the command line against the config (follow mode needs no kernel) ------------

def _run_follow(tmp_path, name: str, cfg_s: str, *extra: str) -> tuple[int, list]:
    import orjson

    from sysmonx.cli import main
    log = tmp_path / "syslog"
    log.touch()
    cfg = tmp_path / f"{name}.xml"
    cfg.write_text(CFG.format(s=cfg_s))
    out = tmp_path / f"{name}.jsonl"
    code = main(["run", "--follow", str(log), "-c", str(cfg), "-f", "jsonl", "-o", str(out),
                 "--state-dir", "none", *extra])
    lines = out.read_bytes().splitlines() if out.exists() else []
    return code, [orjson.loads(x) for x in lines if b'"EventID":202' in x]


def test_run_takes_the_configs_interval_unless_heartbeat_is_given(tmp_path):
    code, hb = _run_follow(tmp_path, "config", "1", "--duration", "2.5")
    assert code == 0
    # at start, after 1 s and 2 s, and before event 4 Stopped (with --heartbeat's default,
    # 60 s, only the first and the last)
    assert len(hb) >= 3 and [e["Sequence"] for e in hb] == [str(i) for i in
                                                           range(1, len(hb) + 1)]
    assert hb[1]["SecondsSincePrevious"] == "1"
    code, hb = _run_follow(tmp_path, "flag", "1", "--duration", "1.5", "--heartbeat", "0")
    assert code == 0 and hb == []


def test_run_refuses_a_bad_heartbeat_before_starting(tmp_path, capsys):
    code, hb = _run_follow(tmp_path, "bad", "1", "--duration", "1", "--heartbeat", "0.2")
    assert code == 87 and hb == []
    assert "error: --heartbeat: 0.2 s is out of range" in capsys.readouterr().err
