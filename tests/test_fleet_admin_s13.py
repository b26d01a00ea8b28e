"""What a Sysmon for Linux admin found in the live sensor and the service (new-user report,
session 13): findings held for the output they are about (#3), the counts of a failing output
agreeing and one ``output_blocked`` finding per failure episode (#4), event 4's SchemaVersion
(#7), event 16's Configuration (#8), exit codes (#9, #10), wording (#13) and the service's cache
directory (#14)."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sysmonx.cli.sysmon import configuration_name
from sysmonx.config import parse_config
from sysmonx.event import Event
from sysmonx.pipeline.fanout import HOLD_MAX, FanOut, QueuedSlot
from sysmonx.pipeline.live import Sensor, SensorOptions
from sysmonx.schema import CURRENT, format_version
from sysmonx.sensor import observations as ob

CFG_470 = ('<Sysmon schemaversion="4.70"><EventFiltering><RuleGroup name="" groupRelation="or">'
           '<FileCreate onmatch="exclude"/></RuleGroup></EventFiltering></Sysmon>')


class Flaky:
    """A sink that raises ENOSPC while ``down`` is set; keeps what it took, in order."""

    name = "flaky"

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.items: list = []

    def write(self, item) -> None:
        if self.down:
            raise OSError(28, "No space left on device")
        self.items.append(item)

    def close(self) -> None:
        pass


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.events: list = []

    def write(self, e) -> None:
        self.events.append(e)

    def close(self) -> None:
        pass


def ev(event_id: int, tag: str) -> Event:
    return Event(event_id, {"Details": tag})


def _wait(pred, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return False


def _run(sensor: Sensor, until, timeout: float = 10.0) -> None:
    t = threading.Thread(target=sensor.run, kwargs={"install_signals": False})
    t.start()
    _wait(until, timeout)
    sensor.request_stop()
    t.join(15)
    assert not t.is_alive()


# --- #3: the reports about a failing output reach it when it works again --------------------

def test_findings_and_errors_a_failing_output_missed_are_written_to_it_when_it_works_again():
    """The output_blocked finding about a dead syslog socket was lost in that same output: the
    events 201 and 255 it did not take are held and written to it first when it works again,
    before newer events; they no longer count as not written."""
    sink = Flaky(down=True)
    slot = QueuedSlot(sink, "count", 64, "drop", count_ids=True)
    fan = FanOut([slot])
    status: list = []
    fan.on_status = status.append
    fan.start()
    for item in (ev(1, "a"), ev(201, "finding"), ev(1, "b"), ev(255, "error")):
        fan.deliver(item)
    assert _wait(lambda: slot.failed == 4)
    assert [e.data["Details"] for e, _how, _n in slot.held] == ["finding", "error"]
    sink.down = False
    fan.deliver(ev(1, "after"))
    fan.flush()
    # the held ones first, oldest first, then the newer event
    assert [e.data["Details"] for e in sink.items] == ["finding", "error", "after"]
    assert not slot.held and slot.held_written == 2
    assert slot.stats.undelivered == 2  # the two events 1: the only ones it does not have
    assert slot.sent == 3 and dict(slot.taken) == {201: 1, 255: 1, 1: 1}
    reports = fan.take_reports()
    assert len(reports) == 1 and reports[0].count == 2 and reports[0].recovered
    assert reports[0].description.startswith("2 events could not be written to flaky from ")
    assert any("works again; 2 events were not written" in s for s in status)
    assert slot.episodes == 1
    fan.close()


def test_held_events_are_bounded_and_an_event_the_output_keeps_refusing_is_given_up():
    sink = Flaky(down=True)
    slot = QueuedSlot(sink, "count", 4096, "drop", count_ids=True)
    fan = FanOut([slot])
    fan.start()
    for i in range(HOLD_MAX + 5):
        fan.deliver(ev(201, f"f{i}"))
    assert _wait(lambda: slot.failed == HOLD_MAX + 5)
    assert len(slot.held) == HOLD_MAX and slot.held_overflow == 5

    # an output that takes other events but refuses a held one (a datagram too large): given
    # up after three refusals, so the loss period can end
    class Picky(Flaky):
        def write(self, item) -> None:
            if item.data["Details"] == "huge":
                raise OSError(90, "Message too long")
            super().write(item)

    picky = Picky()
    slot2 = QueuedSlot(picky, "count", 64, "drop", count_ids=True)
    fan2 = FanOut([slot2])
    fan2.start()
    fan2.deliver(ev(201, "huge"))
    assert _wait(lambda: slot2.failed == 1)
    for i in range(4):
        fan2.deliver(ev(1, f"e{i}"))
        fan2.flush()
    assert not slot2.held and slot2.held_given_up == 1
    assert [e.data["Details"] for e in picky.items] == ["e0", "e1", "e2", "e3"]
    assert slot2.stats.undelivered == 1
    assert [r.count for r in fan2.take_reports()] == [1]
    fan.close()
    fan2.close()


def test_a_syslog_only_sensor_delivers_the_finding_about_its_dead_output(script_backend):
    """The whole path: the sensor's only output fails, the guard's output_blocked finding (and
    the 255 about the episode) reach that output once it works again."""
    t0 = time.time_ns()
    script_backend.script = [ob.FileCreate(t0 + i, 4242, f"/tmp/held/{i}") for i in range(5)]
    script_backend.script += [None, ob.FileCreate(t0 + 10, 4242, "/tmp/held/after")]
    gate = threading.Event()
    script_backend.gate = gate
    sink = Flaky(down=True)
    cfg = parse_config(CFG_470)
    sensor = Sensor(cfg, [sink], SensorOptions(order_window_s=0, guard=True, heartbeat_s=0,
                                               state_dir=None, guard_trace=False))
    sensor.source.options.guard.poll_s = 0.1  # type: ignore[union-attr]

    slot = sensor.fanout.slots[0]

    def until() -> bool:
        # the finding was tried on the failing output (held), then the output recovers
        if sink.down and any(e[0].event_id == 201 for e in list(slot.held)):
            sink.down = False
            gate.set()
        return any(e.event_id == 255 for e in sink.items)

    _run(sensor, until, 20)
    ids = [(e.event_id, e.data.get("Technique") or e.data.get("ID") or
            e.data.get("TargetFilename")) for e in sink.items]
    assert (201, "output_blocked") in ids, ids
    finding = next(e for e in sink.items if e.event_id == 201)
    assert finding.data["Details"].startswith("output flaky fails (No space left on device): "
                                              "failure episode 1 of this run")
    # held, then written before the newer event
    assert ids.index((201, "output_blocked")) < ids.index((11, "/tmp/held/after"))
    report = next(e for e in sink.items if e.event_id == 255)
    n = int(report.data["Description"].split()[0])
    # 16, 4 Started and the five FileCreate were not written; the finding was, late
    assert n == 7, report.data["Description"]


# --- #4: the counts agree; one finding per episode ------------------------------------------

def test_the_events_255_of_a_failing_output_add_up_to_the_summary(script_backend):
    """-o on a full disk: the 255 events said 4 + 2,468, the summary 2,474: the events after
    the last report (4 Stopped) were counted but never reported. The report of an output still
    failing at the end now comes after the trailer."""
    t0 = time.time_ns()
    script_backend.script = [ob.FileCreate(t0 + i, 4242, f"/tmp/c/{i}") for i in range(6)]
    script_backend.script += [None] + [ob.FileCreate(t0 + 10 + i, 4242, f"/tmp/c/late{i}")
                                       for i in range(4)]
    gate = threading.Event()
    script_backend.gate = gate
    good, bad = Recorder(), Flaky(down=True)
    sensor = Sensor(parse_config(CFG_470), [good, bad], SensorOptions(order_window_s=0))
    phase = {"n": 0}

    def until() -> bool:
        files = sum(1 for e in good.events if e.event_id == 11)
        if phase["n"] == 0 and files >= 6:
            bad.down = False  # works again: episode 1 ends
            phase["n"] = 1
            sensor.emit(ob.FileCreate(time.time_ns(), 4242, "/tmp/c/ok"))
        elif phase["n"] == 1 and any(e.event_id == 255 for e in good.events):
            bad.down = True  # episode 2 lasts to the end
            phase["n"] = 2
            gate.set()
        return phase["n"] == 2 and files >= 11

    _run(sensor, until, 20)
    reports = [e for e in good.events if e.event_id == 255 and e.data["ID"] == "Output"]
    counts = [int(r.data["Description"].split()[0]) for r in reports]
    assert len(counts) == 2
    not_written = sensor.stats.undelivered["flaky"]
    assert sum(counts) == not_written
    assert good.events[-1].event_id == 255  # after 4 Stopped: the end of episode 2
    assert [e.event_id for e in good.events][-2] == 4
    # what the failing output lacks: everything the good one has but the last report (for
    # the other outputs only, it is about the failing one)
    assert len(good.events) - len(bad.items) == not_written + 1
    assert sensor.fanout.episodes()["flaky"][0] == 2


def test_guard_writes_one_output_blocked_finding_per_episode_of_the_output():
    """The guard's own 2.5 s idea of an episode (a check with events taken and none failed)
    wrote one finding for two episodes stderr showed: it now follows the output's episodes."""
    from sysmonx.sensor.assemble import Assembler
    from sysmonx.sensor.guard import GuardOptions, SensorGuard
    from sysmonx.sensor.process import ProcessCache
    g = SensorGuard(GuardOptions(heartbeat_s=0, state_dir=None, trace=False),
                    Assembler(ProcessCache()))

    def details() -> list:
        return [e.data["Details"] for e in g.drain()]

    g.counters = lambda: (5, 0, {"-o a.xml": (4, 40, 1, "No space left on device"),
                                 "syslog /dev/log": (0, 44, 0, "")})
    g._output_check()
    assert details() == [
        "output -o a.xml fails (No space left on device): failure episode 1 of this run; every "
        "event it does not take is counted, and an event 255 Output gives the count when it "
        "works again"]
    # the same episode over several checks: no more findings (new-user report s11 #9: one
    # finding every 2.5 s check while the output kept failing)
    for k in range(2, 6):
        g.counters = lambda k=k: (5, 0, {"-o a.xml": (4 * k, 50, 1, "No space left on device"),
                                         "syslog /dev/log": (0, 50 + k, 0, "")})
        g._output_check()
    assert details() == []
    g.counters = lambda: (5, 0, {"-o a.xml": (2474, 50, 3, "No space left on device"),
                                 "syslog /dev/log": (0, 2519, 0, "")})
    g._output_check()
    assert [d.split(";")[0] for d in details()] == [
        "output -o a.xml fails (No space left on device): failure episode 2 of this run",
        "output -o a.xml fails (No space left on device): failure episode 3 of this run"]


def test_one_event_is_singular():
    sink = Flaky(down=True)
    slot = QueuedSlot(sink, "count", 8, "drop")
    fan = FanOut([slot])
    status: list = []
    fan.on_status = status.append
    fan.start()
    fan.deliver(ev(1, "x"))
    assert _wait(lambda: slot.failed == 1)
    sink.down = False
    fan.deliver(ev(1, "y"))
    fan.flush()
    (report,) = fan.take_reports()
    assert report.description.startswith("1 event could not be written to flaky from ")
    assert any("works again; 1 event was not written to it since" in s for s in status)
    fan.close()


# --- #7 and #8: events 4 and 16 ---------------------------------------------------------------

def test_event_4_has_the_sensors_schema_version_and_16_the_name_given(script_backend,
                                                                        tmp_path):
    """Sysmon for Linux loaded a 4.70 config and wrote SchemaVersion 4.81 (its own); event 16
    named the file given to -i (``log_all_sysmon.xml``), not the installed copy."""
    installed = tmp_path / "config.xml"
    installed.write_text(CFG_470)
    argv = tmp_path / "argv"
    argv.write_bytes(b"-accepteula\0-i\0log_all_sysmon.xml\0")
    rec = Recorder()
    sensor = Sensor(parse_config(CFG_470, str(installed)), [rec],
                    SensorOptions(order_window_s=0,
                                  config_name=lambda: configuration_name(str(argv))),
                    config_path=str(installed))
    reloaded = {"done": False}

    def until() -> bool:
        if not reloaded["done"] and any(e.event_id == 4 for e in rec.events):
            argv.write_bytes(b"-c\0/etc/sysmon/other.xml\0")
            reloaded["done"] = True
            sensor.request_reload()
        return sum(1 for e in rec.events if e.event_id == 16) >= 2

    _run(sensor, until)
    fours = [e for e in rec.events if e.event_id == 4]
    assert [e.data["State"] for e in fours] == ["Started", "Stopped"]
    assert {e.data["SchemaVersion"] for e in fours} == {format_version(CURRENT.version)}
    assert format_version(CURRENT.version) != "4.70"
    sixteens = [e.data["Configuration"] for e in rec.events if e.event_id == 16]
    assert sixteens == ["log_all_sysmon.xml", "/etc/sysmon/other.xml"]
    import hashlib
    sha = hashlib.sha256(installed.read_bytes()).hexdigest()
    assert {e.data["ConfigurationFileHash"] for e in rec.events if e.event_id == 16} == \
        {f"SHA256={sha}"}


def test_configuration_name_from_the_stored_command_line(tmp_path):
    p = tmp_path / "argv"
    for argv, name in ((b"-i\0cfg.xml\0", "cfg.xml"),
                       (b"-accepteula\0-i\0/tmp/nu13/cfg1.xml\0", "/tmp/nu13/cfg1.xml"),
                       (b"-c\0new.xml\0-n\0curl\0", "new.xml"),
                       (b"-c\0--\0", "Defaults"),
                       (b"-accepteula\0-i\0", None),
                       (b"-c\0-n\0curl\0", None),
                       (b"-q\0bogus\0", None)):
        p.write_bytes(argv)
        assert configuration_name(str(p)) == name, argv
    assert configuration_name(str(tmp_path / "missing")) is None


# --- #9 and #10: exit codes ------------------------------------------------------------------

def _main(root: Path, *argv: str) -> tuple[int, str]:
    from sysmonx.cli.sysmon import main
    out, err = io.StringIO(), io.StringIO()
    code = main(["--install-root", str(root), "-nologo", *argv], out, err)
    return code, out.getvalue() + err.getvalue()


@pytest.mark.skipif(os.geteuid() != 0, reason="the installed-state checks need root")
def test_installed_or_not_a_refused_request_exits_87(tmp_path):
    cfg = tmp_path / "c.xml"
    cfg.write_text(CFG_470)
    root = tmp_path / "root"
    root.mkdir()
    assert _main(root, "-u") == (87, "Sysmon is not installed.\n")
    code, text = _main(root, "-c", str(cfg))
    assert code == 87 and "Error: Sysmon is not installed." in text
    (root / "opt/sysmonx").mkdir(parents=True)
    (root / "opt/sysmonx/service.json").write_text("{}")
    code, text = _main(root, "-accepteula", "-i", str(cfg))
    assert code == 87 and "Sysmon is already installed." in text  # was 1


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run as another user")
def test_not_root_is_228_as_the_shell_sees_it(tmp_path):
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           sys.executable, "-m", "sysmonx.cli", "-accepteula", "-i"],
                          capture_output=True, text=True, cwd="/",
                          env={**os.environ, "HOME": str(tmp_path)})
    if "No module named" in proc.stderr:
        pytest.skip("the package is not readable by uid 65534 here")
    assert "You need to run Sysmon as root." in proc.stdout + proc.stderr
    assert proc.returncode == 228
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert re.search(r"\*\*228\*\* when root is needed", readme)


# --- #14: the service's caches -----------------------------------------------------------------

def test_a_sensor_whose_cache_cannot_be_written_loads_the_same_configuration(tmp_path,
                                                                             monkeypatch):
    """Under the unit's ProtectHome=read-only root's ~/.cache cannot be written: the unit now
    sets its own cache directory, and a sensor that cannot write its cache still loads and
    reloads the same configuration, with one note and no error."""
    from sysmonx.config import load_config
    from sysmonx.service import Layout, ServiceSettings, unit_text
    text = unit_text(Layout(Path("/")), ServiceSettings(python="/usr/bin/python3"))
    assert "\nCacheDirectory=sysmonx\n" in text
    assert "\nEnvironment=SYSMONX_CACHE_DIR=/var/cache/sysmonx\n" in text
    blocker = tmp_path / "file"
    blocker.write_text("")
    cfg = tmp_path / "c.xml"
    cfg.write_text(CFG_470)
    monkeypatch.setenv("SYSMONX_CACHE_DIR", str(blocker / "cache"))
    for _ in range(2):  # a start and a reload
        info: dict = {}
        got = load_config(str(cfg), cache_info=info)
        assert got.sha256 == parse_config(cfg.read_bytes(), str(cfg)).sha256
        assert got.rule_sets == parse_config(cfg.read_bytes(), str(cfg)).rule_sets
        assert all("cannot write" in n for n in info.get("notes", ()))


def test_held_events_stay_not_written_once_the_loss_reports_are_made():
    """Review s14 #3: at the end of a run the loss periods are ended and their reports fixed
    (events 255, the summary's count); an output that works again after that took its held
    events and no longer counted them, so its event 255 and the summary disagreed. Once the
    run is ending they stay held and counted."""
    sink = Flaky(down=True)
    slot = QueuedSlot(sink, "count", 64, "drop", count_ids=True)
    fan = FanOut([slot])
    fan.start()
    for item in (ev(1, "a"), ev(201, "finding")):
        fan.deliver(item)
    assert _wait(lambda: slot.failed == 2)
    reports = fan.end_losses()
    assert [r.count for r in reports] == [2]
    sink.down = False
    fan.deliver(ev(255, "the report"))
    fan.flush()
    assert [e.data["Details"] for e in sink.items] == ["the report"]
    assert slot.failed == 2 == reports[0].count and slot.held_written == 0
    fan.close()


def test_episodes_of_outputs_sharing_a_label_name_the_error_of_the_one_that_failed():
    """Review s14 #7: two outputs with one label, the first failing and the second healthy:
    the guard's finding read "fails ()" with the healthy one's empty error."""
    bad, good = Flaky(down=True), Flaky()
    s1 = QueuedSlot(bad, "count", 64, "drop", count_ids=True)
    s2 = QueuedSlot(good, "count", 64, "drop", count_ids=True)
    fan = FanOut([s1, s2])
    fan.start()
    fan.deliver(ev(1, "a"))
    assert _wait(lambda: s1.failed == 1 and s2.sent == 1)
    assert s1.label == s2.label
    assert fan.episodes() == {s1.label: (1, s1.last_error)} and "No space left" in s1.last_error
    fan.close()
