"""One loop for replay and live: the same events give byte-identical output whichever way they
come in (replay, ``run --follow``, a live backend), for every output format; outputs that fail or
stall lose nothing silently; the loop ticks its stages."""

import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from sysmonx.cli import builtin_sample_path, main
from sysmonx.config import parse_config
from sysmonx.core.errors import SinkError
from sysmonx.event import Event
from sysmonx.interfaces import Sink, Stage
from sysmonx.pipeline import Replayer, ReplayOptions
from sysmonx.pipeline.live import Sensor, SensorOptions
from sysmonx.sensor import observations as ob
from sysmonx.sensor.assemble import Assembler
from sysmonx.sensor.process import ProcessCache
from sysmonx.sinks import stream_formats
from sysmonx.sinks.xml_linux import render_linux_xml
from sysmonx.sources import open_source

FORMATS = sorted(stream_formats())

# Names rules in three tags, includes by name an event that has no RuleName field (the name is
# inserted), truncates with FieldSizes, excludes some events.
CONFIG = """<Sysmon schemaversion="4.90">
<FieldSizes>CommandLine:24</FieldSizes>
<EventFiltering>
<RuleGroup name="procs" groupRelation="or"><ProcessCreate onmatch="include">
  <Image condition="end with">\\cmd.exe</Image>
  <Image name="usr-bin" condition="begin with">/usr/bin/</Image>
  <CommandLine name="encoded" condition="contains">-enc</CommandLine>
</ProcessCreate></RuleGroup>
<RuleGroup name="" groupRelation="or"><FileCreate onmatch="exclude">
  <TargetFilename name="tmp-drop" condition="begin with">/tmp/drop/</TargetFilename>
</FileCreate></RuleGroup>
<RuleGroup name="" groupRelation="or"><NetworkConnect onmatch="include">
  <DestinationPort name="https" condition="is">443</DestinationPort>
  <DestinationPort name="rdp" condition="is">3389</DestinationPort>
</NetworkConnect></RuleGroup>
</EventFiltering></Sysmon>
"""


def _linux_events():
    """Sysmon for Linux events as the sensor builds them (fixed times), with record ids."""
    asm = Assembler(ProcessCache(machine="0badcafe"), computer="lin-host")
    t = 1_700_000_000_123_456_789
    obs = [
        ob.ProcessExec(t, 40001, ppid=1, start_ticks=5, image="/usr/bin/curl",
                       argv=["/usr/bin/curl", "-s", "https://example.org/a/long/path?x=1"],
                       cwd="/tmp", uid=0, end_data=0x1000),
        ob.ProcessExec(t + 1000, 40002, ppid=1, start_ticks=6, image="/opt/x/tool",
                       argv=["/opt/x/tool", "-enc", "SQBFAFgA"], cwd="/", uid=0, end_data=0x2000),
        ob.ProcessExec(t + 2000, 40003, ppid=1, start_ticks=7, image="/opt/x/quiet",
                       argv=["/opt/x/quiet"], cwd="/", uid=0, end_data=0x3000),
        ob.FileCreate(t + 3000, 40001, "/tmp/keep/a<&>\"'\tb"),
        ob.FileCreate(t + 4000, 40001, "/tmp/drop/b"),
        ob.NetworkConnect(t + 5000, 40001, "tcp", True, "93.184.215.14", 443, "10.0.0.5", 51000),
        ob.NetworkConnect(t + 6000, 40001, "tcp", True, "10.0.0.9", 22, "10.0.0.5", 51001),
        ob.FileDelete(t + 7000, 40002, "/tmp/keep/\u202etxt.exe"),
    ]
    out = []
    for i, o in enumerate(obs):
        ev = asm.build(o)
        ev.record_id = 500 + i
        out.append(ev)
    out[1].data.pop("RuleName")  # included by name: RuleName is inserted as the first field
    return out


def _syslog_file(path: Path) -> list:
    """A Sysmon for Linux syslog file: the built-in sample (Windows events) and Linux events,
    with noise lines; returns the events written."""
    sample = list(open_source(str(builtin_sample_path()), lambda e: pytest.fail(str(e))))
    events = [e for e in sample if e.is_sysmon] + _linux_events()
    lines = ["Nov 30 02:09:59 host systemd[1]: Started something.\n"]
    for i, ev in enumerate(events):
        lines.append(f"Nov 30 02:10:{i % 60:02d} host sysmon: {render_linux_xml(ev)}\n")
        if i == 3:
            lines.append("Nov 30 02:10:03 host cron[7]: noise\n")
    path.write_text("".join(lines), encoding="utf-8")
    return events


def _strip_own_events(data: bytes, fmt: str) -> bytes:
    """A live run's output without the sensor's own events (16 and 4 first, 4 last)."""
    lines = data.splitlines(keepends=True)
    head = lines[:1] if fmt == "csv" else []
    body = lines[1:] if fmt == "csv" else lines
    own = body[:2] + body[-1:]
    for line in own:
        assert b"Linux-Sysmon" in line and (b"16" in line or b"4" in line), line[:120]
    assert b"Started" in body[1] and b"Stopped" in body[-1]
    return b"".join(head + body[2:-1])


def _is_finding(line: bytes, fmt: str) -> bool:
    """A TamperFinding (201) line of an output in ``fmt``."""
    return b"TamperFinding" in line or b'"EventID":201' in line or \
        b"<EventID>201</EventID>" in line or b"Technique" in line and b"Source" in line


def test_replay_and_run_follow_give_identical_output_for_every_format(tmp_path, capsys):
    log = tmp_path / "syslog"
    events = _syslog_file(log)
    cfg = tmp_path / "c.xml"
    cfg.write_text(CONFIG)
    names = set()
    for fmt in FORMATS:
        rep, fol = tmp_path / f"replay.{fmt}", tmp_path / f"follow.{fmt}"
        assert main(["replay", str(log), "--config", str(cfg), "--format", fmt, "-o", str(rep),
                     "-q"]) == 0
        assert main(["run", "--follow", str(log), "--from-start", "--config", str(cfg),
                     "--format", fmt, "-o", str(fol), "--duration", "1", "--heartbeat", "0"]) == 0
        replayed = rep.read_bytes()
        assert replayed.count(b"\n") >= 10  # a real sample, not an empty comparison
        followed = fol.read_bytes()
        if fmt == "jsonl":
            # a followed log is always checked for tampering: its findings (201) are those of
            # replay --tamper, but numbered by the sensor like its other own events
            tam = tmp_path / "tamper.jsonl"
            assert main(["replay", str(log), "--config", str(cfg), "--format", fmt, "-o",
                         str(tam), "-q", "--tamper"]) == 0

            def findings(data: bytes) -> list:
                out = [orjson.loads(x) for x in data.splitlines() if b'"EventID":201' in x]
                for f in out:
                    f["System"].pop("EventRecordID")
                return out
            assert findings(followed) == findings(tam.read_bytes()) != []
        followed = b"".join(x for x in followed.splitlines(keepends=True)
                            if not _is_finding(x, fmt))
        assert _strip_own_events(followed, fmt) == replayed, fmt
        if fmt == "jsonl":
            back = list(open_source(str(rep), lambda e: pytest.fail(str(e))))
            names = {e.data.get("RuleName") for e in back}
            assert len(back) < len(events)  # the config excluded some
            inserted = [e for e in back if e.record_id == 501]
            assert list(inserted[0].data)[0] == "RuleName"
            assert inserted[0].data["RuleName"] == "encoded"
            assert inserted[0].data["CommandLine"] == "/opt/x/tool -enc SQBF..."  # FieldSizes: 24
    assert {"usr-bin", "encoded", "https", "rdp"} <= names
    capsys.readouterr()


def _observations():
    t = time.time_ns()
    return [
        ob.ProcessExec(t, 41001, ppid=1, start_ticks=5, image="/usr/bin/env",
                       argv=["/usr/bin/env", "A=" + "x" * 40], cwd="/", uid=0, end_data=0),
        ob.ProcessExec(t, 41002, ppid=1, start_ticks=6, image="/opt/y", argv=["/opt/y"],
                       cwd="/", uid=0, end_data=0),
        ob.FileCreate(t, 41001, "/tmp/keep/\x1b[2Jz"),
        ob.FileCreate(t, 41001, "/tmp/drop/z"),
        ob.NetworkConnect(t, 41001, "tcp", True, "93.184.215.14", 443, "10.0.0.5", 51002),
        ob.Loss(t, "script.ring", 3, "ring buffer full"),
        ob.FileDelete(t, 41002, "/tmp/keep/q"),
    ]


def _wait(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_live_backend_output_is_what_replay_makes_of_it_for_every_format(tmp_path,
                                                                          script_backend, capsys):
    """One live run writes every format at once (the fan-out) plus a JSON-lines recording;
    replaying the recording through the same config gives each output byte for byte."""
    cfg_path = tmp_path / "c.xml"
    cfg_path.write_text(CONFIG)
    config = parse_config(CONFIG, str(cfg_path))
    script_backend.script = _observations()
    from sysmonx.sinks import writer_class
    outs = {fmt: tmp_path / f"live.{fmt}" for fmt in FORMATS}
    record = tmp_path / "record.jsonl"
    writers = [writer_class(fmt).open(str(p)) for fmt, p in outs.items()]
    writers.append(writer_class("jsonl").open(str(record)))
    sensor = Sensor(config, writers, SensorOptions(dns=False), config_path=str(cfg_path))
    t = threading.Thread(target=sensor.run, kwargs={"install_signals": False})
    t.start()
    assert _wait(lambda: sum(sensor.stats.written.values()) >= 6)
    sensor.request_stop()
    t.join(10)
    live_events = list(open_source(str(record), lambda e: pytest.fail(str(e))))
    # The order buffer holds observations for order_window_s; a loss report is not held.
    assert [e.event_id for e in live_events if e.event_id != 255] == [16, 4, 1, 11, 3, 4]
    assert [e.event_id for e in live_events].count(255) == 1
    assert [e.record_id for e in live_events] == list(range(7))  # after the filter, no gaps
    assert [e.data.get("RuleName") for e in live_events if e.event_id in (1, 3)] == \
        ["usr-bin", "https"]
    assert sum(sensor.stats.filtered.values()) == 3  # /opt/y, /tmp/drop/z, 23 (no rules)
    for fmt, path in outs.items():
        rep = tmp_path / f"replay.{fmt}"
        assert main(["replay", str(record), "--config", str(cfg_path), "--format", fmt,
                     "-o", str(rep), "-q"]) == 0
        assert rep.read_bytes() == path.read_bytes(), fmt
    capsys.readouterr()


# --- outputs that fail or stall ---------------------------------------------------------------

class _Collect(Sink):
    name = "collect"

    def __init__(self):
        self.items = []

    def write(self, item):
        self.items.append(item)


class _Raising(Sink):
    name = "raising"
    target = "/nowhere"

    def write(self, item):
        raise OSError(28, "No space left on device")


class _Blocking(Sink):
    name = "blocking"

    def __init__(self):
        self.release = threading.Event()
        self.items = []

    def write(self, item):
        self.release.wait(30)
        self.items.append(item)


def _is_loss_report(e, label=None):
    return (getattr(e, "event_id", None) == 255 and e.data["ID"] == "Output"
            and (label is None or f" written to {label} from " in e.data["Description"]))


def _lost_reported(items, label):
    return sum(int(e.data["Description"].split()[0]) for e in items if _is_loss_report(e, label))


def test_live_failing_output_is_counted_reported_and_collection_goes_on(script_backend):
    script_backend.script = _observations()
    good, bad = _Collect(), _Raising()
    status = []
    sensor = Sensor(parse_config(CONFIG), [good, bad], SensorOptions(dns=False, tick_s=0.05),
                    on_status=status.append)
    t = threading.Thread(target=sensor.run, kwargs={"install_signals": False})
    t.start()
    assert _wait(lambda: len(good.items) >= 6)
    # a failing output is reported when it ends: here at the end of the run, to the others
    assert _lost_reported(good.items, "raising -> /nowhere") == 0
    sensor.request_stop()
    t.join(10)
    events = [e for e in good.items if not _is_loss_report(e)]
    stats = sensor.stats.outputs
    assert stats["raising -> /nowhere"].failed == len(events) == 7  # 16, 4, 1, 11, 3, 255, 4
    assert stats["raising -> /nowhere"].sent == 0
    # every loss is reported in the stream, the final event 4 included: the report of an
    # output still failing comes after the trailer (new-user report s13 #4: it said 6 of 7)
    assert _lost_reported(good.items, "raising -> /nowhere") == 7
    assert _is_loss_report(good.items[-1]) and good.items[-2].event_id == 4
    assert stats["collect"].undelivered == 0
    assert any("No space left on device" in s for s in status)


class _Passed(Stage):
    """Last stage: counts what goes on to the outputs."""

    name = "passed"

    def __init__(self):
        self.items = []

    def process(self, item, emit):
        self.items.append(item)
        return True


def test_live_stalled_output_drops_are_counted_and_reported(script_backend):
    n = 3000
    now = time.time_ns()
    script_backend.script = [ob.FileCreate(now, 4242, f"/tmp/keep/{i}") for i in range(n)]
    good, slow, passed = _Collect(), _Blocking(), _Passed()
    sensor = Sensor(parse_config(CONFIG), [good, slow],
                    SensorOptions(dns=False, tick_s=0.05, sink_queue_size=64),
                    extra_stages=[passed])
    t = threading.Thread(target=sensor.run, kwargs={"install_signals": False})
    t.start()
    assert _wait(lambda: sum(1 for e in passed.items if e.event_id == 11) == n)
    # the loss period ends when the output takes events again: then it is reported, to all
    slow.release.set()
    assert _wait(lambda: _lost_reported(good.items, "blocking") > 0)
    sensor.request_stop()
    t.join(10)
    outputs = sensor.stats.outputs
    assert outputs["blocking"].dropped > 0 and outputs["blocking"].failed == 0
    for label, sink in (("collect", good), ("blocking", slow)):
        st = outputs[label]
        assert st.sent == len(sink.items)
        assert st.sent + st.dropped + st.failed == len(passed.items)  # nothing unaccounted
    assert _lost_reported(slow.items, "blocking") == _lost_reported(good.items, "blocking")
    reported = _lost_reported(good.items, "blocking")
    assert 0 < reported <= outputs["blocking"].undelivered


def test_replay_failing_output_stops_with_one_error():
    opts = ReplayOptions()
    r = Replayer(opts, _Raising())
    with pytest.raises(SinkError, match="cannot write /nowhere: No space left on device"):
        r.run([str(builtin_sample_path())])


def test_replay_slow_output_waits_and_loses_nothing():
    class Slow(_Collect):
        name = "slow"
        slow = True

        def write(self, item):
            time.sleep(0.002)
            super().write(item)

    fast, slow = _Collect(), Slow()
    r = Replayer(ReplayOptions(), fast, sinks=[slow])
    r.pipeline.fanout.slots[1].queue.maxsize = 2  # tiny queue: the replay must wait
    r.run([str(builtin_sample_path())])
    r.close()
    assert len(slow.items) == len(fast.items) == 25
    stats = r.fanout.stats()
    assert stats["collect"].sent == stats["slow"].sent == 25
    assert stats["slow"].dropped == stats["slow"].failed == 0


def test_replay_to_dev_full_exits_1_with_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    for extra in ([], ["--jobs", "2", "--keep-duplicates", str(builtin_sample_path())]):
        out = subprocess.run([sys.executable, "-m", "sysmonx.cli", "replay", "--sample",
                              "-o", "/dev/full", *extra], capture_output=True, text=True,
                             timeout=120, env=env)
        assert out.returncode == 1, out.stderr
        # the line saying how the config was loaded, then with --jobs the note of how many
        # workers ran; one error line either way
        loaded, _, rest = out.stderr.partition("\n")
        assert loaded.startswith("config: built-in default-windows loaded: schema 4.90, ")
        note = "note: replaying 2 files on 2 worker processes\n" if extra else ""
        assert rest == note + "error: cannot write /dev/full: No space left on device\n"


def test_run_follow_to_dev_full_counts_and_reports(tmp_path):
    log = tmp_path / "syslog"
    events = _syslog_file(log)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    runs = {}
    for target in (str(tmp_path / "out.log"), "/dev/full"):
        runs[target] = subprocess.run(
            [sys.executable, "-m", "sysmonx.cli", "run", "--follow", str(log), "--from-start",
             "-o", target, "--duration", "1.5", "--no-guard"], capture_output=True, text=True,
            timeout=120,
            env=env)
        assert runs[target].returncode == 0 and "Traceback" not in runs[target].stderr
    n = (tmp_path / "out.log").read_bytes().count(b"\n")  # what the same run writes to a file
    assert n >= len(events) // 2
    err = runs["/dev/full"].stderr
    # every one of them failed, counted once each (the 255 reports of the loss are not counted)
    assert f"NOT WRITTEN to -o /dev/full: {n} events (No space left on device)" in err
    # one status line when it starts failing, then the summary
    assert err.count("No space left on device") == 2
    assert err.count("output -o /dev/full fails (No space left on device)") == 1


# --- ticks --------------------------------------------------------------------------------------

class _Ticks(Stage):
    name = "ticks"

    def __init__(self):
        self.ticks = []

    def process(self, item, emit):
        return True

    def tick(self, now_ns, emit):
        self.ticks.append(now_ns)
        emit(Event(255, {"ID": "tick", "Description": "tick"}, provider="SysmonX"))


def test_live_loop_ticks_stages_while_idle(script_backend):
    script_backend.script = []
    ticks, sink = _Ticks(), _Collect()
    sensor = Sensor(None, [sink], SensorOptions(dns=False, tick_s=0.05), extra_stages=[ticks])
    t = threading.Thread(target=sensor.run, kwargs={"install_signals": False})
    t.start()
    assert _wait(lambda: len(ticks.ticks) >= 3)
    sensor.request_stop()
    t.join(10)
    assert ticks.ticks == sorted(ticks.ticks) and abs(ticks.ticks[-1] - time.time_ns()) < 5e9
    assert sum(1 for e in sink.items if e.data.get("ID") == "tick") == len(ticks.ticks)


def test_correlation_window_closes_on_a_quiet_live_host(script_backend):
    """An event_count correlation whose window ended fires on the tick, with no further event."""
    rule = """title: Two files
id: 6f5b7c1e-0000-4000-8000-000000000010
name: two_files
status: test
logsource: {product: linux, category: file_event}
detection:
  selection: {TargetFilename|startswith: '/tmp/keep/'}
  condition: selection
---
title: Few files in a second
id: 6f5b7c1e-0000-4000-8000-000000000011
status: test
level: high
correlation:
  type: event_count
  rules: [two_files]
  timespan: 1s
  condition: {lt: 5}
"""
    from sysmonx.detection import DetectionStage, load_rules_text
    stage = DetectionStage(load_rules_text(rule))
    assert stage.correlations, stage.issues
    script_backend.script = [ob.FileCreate(time.time_ns(), 4242, "/tmp/keep/x")]
    alerts = []
    sensor = Sensor(parse_config(CONFIG), [], SensorOptions(dns=False, tick_s=0.1),
                    detection=stage, on_alert=alerts.append)
    t = threading.Thread(target=sensor.run, kwargs={"install_signals": False})
    t.start()
    try:
        # the window (1 s) plus the tick's grace (2 s): the alert comes while the host is quiet
        assert _wait(lambda: any(a.kind == "event_count" for a in alerts), 8)
    finally:
        sensor.request_stop()
        t.join(10)


def test_sink_io_for_replay_writer_api_still_works():
    out = io.BytesIO()
    from sysmonx.pipeline import make_writer
    w = make_writer("jsonl", out)
    r = Replayer(ReplayOptions(config=parse_config(CONFIG)), w)
    r.run([str(builtin_sample_path())])
    w.close_stream = False
    w.close()
    assert out.getvalue().count(b"\n") == sum(r.stats.included.values())
