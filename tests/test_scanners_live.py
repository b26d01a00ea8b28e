"""Scanners in the live sensor: a config whose rule asks for scans (``scanners="all"`` on a
FileCreate rule, YARA rules from the config's ``<YaraRules>``), the technique harness's
programs and their controls run while the sensor traces, and every technique's finding comes out
as event 200 with the ProcessGuid of the FileCreate (11) that triggered the scan; no control
process gets the finding of its technique. Runs as root with a live tier; skipped with the
reason otherwise.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from sysmonx.config import parse_config
from sysmonx.pipeline.live import Sensor, SensorOptions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scanner_techniques import harness

pytestmark = pytest.mark.live

TAG = f"sxscan-live{os.getpid()}"


def _why_not() -> str:
    if os.geteuid() != 0:
        return "the live sensor needs root"
    if harness.compiler() is None:
        return "no C compiler (cc/gcc/clang) to build the technique programs"
    from sysmonx.sensor.backends import choose_backend
    try:
        choose_backend(None)
    except Exception as exc:  # noqa: BLE001 - any reason a tier cannot run is a skip reason
        return f"no live tier can run here: {exc}"
    from sysmonx.scanners.builtin.yara import yara_available
    return yara_available()


class Recorder:
    name = "recorder"

    def __init__(self):
        self.events = []

    def write(self, e):
        self.events.append(e)

    def close(self):
        pass


def _config(rules: Path) -> str:
    return f"""<Sysmon schemaversion="4.90">
  <YaraRules>{rules}</YaraRules>
  <EventFiltering>
    <RuleGroup groupRelation="or">
      <FileCreate onmatch="include" scanners="all">
        <TargetFilename name="technique done" condition="begin with">/tmp/{TAG}-</TargetFilename>
      </FileCreate>
    </RuleGroup>
    <RuleGroup groupRelation="or">
      <ProcessCreate onmatch="include">
        <CommandLine condition="contains">/tmp/{TAG}-</CommandLine>
      </ProcessCreate>
    </RuleGroup>
    <RuleGroup groupRelation="or">
      <ProcessTerminate onmatch="include">
        <Image condition="is">/nonexistent</Image>
      </ProcessTerminate>
    </RuleGroup>
    <RuleGroup groupRelation="or">
      <ScannerFinding onmatch="exclude">
        <Finding condition="is">exe_in_writable_dir</Finding>
      </ScannerFinding>
    </RuleGroup>
  </EventFiltering>
</Sysmon>"""


def test_live_sensor_scans_the_processes_its_rules_asked_for(tmp_path):
    why = _why_not()
    if why:
        pytest.skip(why)
    built = harness.build("live")
    cfg_path = tmp_path / "scan.xml"
    cfg_path.write_text(_config(built.rules))
    config = parse_config(cfg_path.read_bytes(), str(cfg_path))
    rec = Recorder()
    sensor = Sensor(config, [rec], SensorOptions(dns=False, exclude_own_children=False,
                                                 tick_s=0.1),
                    config_path=str(cfg_path))
    t = threading.Thread(target=sensor.run, kwargs={"install_signals": False})
    t.start()
    runs = []
    try:
        assert sensor.started.wait(60), "the sensor did not start"
        # exe_in_writable_dir is excluded by the config's ScannerFinding rule: its technique
        # shows that a finding is filtered like any event
        for finding in harness.TECHNIQUES:
            for control in (False, True):
                runs.append(harness.start(built, finding, control, TAG))
        wanted = {(r.pid, r.finding) for r in runs
                  if not r.control and r.finding != "exe_in_writable_dir"}
        end = time.monotonic() + 45
        while time.monotonic() < end:
            got = {(int(e.data["ProcessId"]), e.data["Finding"])
                   for e in list(rec.events) if e.event_id == 200}
            if wanted <= got:
                break
            time.sleep(0.2)
        time.sleep(1.0)  # controls' scans are queued with the techniques': let them finish
    finally:
        sensor.request_stop()
        t.join(30)
        built.close()
    assert not t.is_alive()
    events = list(rec.events)
    creates = {}
    for e in events:
        if e.event_id == 11 and e.data["TargetFilename"].startswith(f"/tmp/{TAG}-"):
            creates[int(e.data["ProcessId"])] = e
    findings = [e for e in events if e.event_id == 200]
    by_pid: dict = {}
    for e in findings:
        by_pid.setdefault(int(e.data["ProcessId"]), []).append(e)
    for r in runs:
        names = [e.data["Finding"] for e in by_pid.get(r.pid, [])]
        if r.control:
            assert r.finding not in names, (r.finding, names)
            continue
        trigger = creates.get(r.pid)
        assert trigger is not None, f"no FileCreate of {r.finding}'s process"
        if r.finding == "exe_in_writable_dir":
            assert r.finding not in names  # filtered out by the config
            continue
        hits = [e for e in by_pid.get(r.pid, []) if e.data["Finding"] == r.finding]
        assert len(hits) == 1, (r.finding, names)
        e = hits[0]
        assert e.data["ProcessGuid"] == trigger.data["ProcessGuid"], r.finding
        assert e.data["TriggerEventId"] == "11" and e.data["Image"] == trigger.data["Image"]
        assert e.record_id is not None and e.provider == trigger.provider
    # numbered with the other events, without gaps; the rule that asked is not the finding's
    ids = [e.record_id for e in events]
    assert ids == list(range(len(ids)))
    st = sensor.scan_stats
    assert st is not None and st.dropped == 0 and st.done >= len(wanted)
    assert "scans: requested" in sensor.summary()
