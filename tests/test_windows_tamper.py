"""Windows tamper signals read live (service state, minifilter, the rules registry value,
channel enabled, heartbeat) over a simulated host, and the TamperFinding events they give
(fields as the resilience work defines them: RuleName, UtcTime, Technique, Details,
ProcessGuid/ProcessId/Image of the actor, Source)."""

from __future__ import annotations

import re
import time

from sysmonx.windows.fakes import FakeWindowsHost
from sysmonx.windows.tamper import (RULES_KEY, CommandProbe, WindowsTamper, WindowsTamperChecks,
                                    tamper_finding)

CHANNEL = "Microsoft-Windows-Sysmon/Operational"


class Mono:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def _host():
    h = FakeWindowsHost()
    h.services["Sysmon64"] = {"state": "RUNNING", "binary": "C:\\Windows\\Sysmon64.exe"}
    h.sysmon_config = "<Sysmon schemaversion='4.90'/>"
    h._rules_value()
    return h


def test_probe_reads_what_the_tools_print():
    h = _host()
    p = CommandProbe(h)
    assert p.service_state("Sysmon64") == "RUNNING" and p.service_state("Nope") == ""
    assert p.minifilters() == ["sysmondrv", "wdfilter", "fileinfo"]
    rules = p.registry_value(RULES_KEY.format(driver="SysmonDrv"), "Rules")
    assert re.fullmatch(r"[0-9A-F]{64}", rules)
    assert p.registry_value(RULES_KEY.format(driver="Other"), "Rules") == ""
    assert p.channel_enabled(CHANNEL) is True and p.channel_enabled("No/Such") is None
    h.elevated = False
    assert p.minifilters() is None                     # unreadable is not "unloaded"


def test_each_signal_gives_one_finding_per_change():
    h = _host()
    mono = Mono()
    checks = WindowsTamperChecks(CommandProbe(h), computer="WS01", silence_s=600,
                                 clock=lambda: 1_700_000_000_123_000_000, monotonic=mono)
    checks.baseline()
    assert checks.check() == []
    h.services["Sysmon64"]["state"] = "STOPPED"
    h.minifilters.remove("SysmonDrv")
    h.channels[CHANNEL] = False
    h.sysmon_config = "<Sysmon schemaversion='4.90'><EventFiltering/></Sysmon>"
    h._rules_value()                                   # written behind SysmonX's back
    found = {e.data["Technique"]: e for e in checks.check()}
    assert set(found) == {"sysmon_stopped", "driver_unloaded", "sysmon_rules_registry",
                          "sysmon_channel_disabled"}
    assert checks.check() == []                        # reported once while it lasts
    ev = found["sysmon_stopped"]
    assert ev.event_id == 201 and ev.level == 3 and ev.version == 1 and ev.task == 201
    assert ev.provider == "Microsoft-Windows-Sysmon" and ev.computer == "WS01"
    assert list(ev.data) == ["RuleName", "UtcTime", "Technique", "Details", "ProcessGuid",
                             "ProcessId", "Image", "Source"]
    assert ev.data["UtcTime"] == "2023-11-14 22:13:20.123" and ev.data["RuleName"] == "-"
    assert ev.data["Details"] == "service Sysmon64 is STOPPED (sc.exe query)"
    assert (ev.data["ProcessGuid"], ev.data["ProcessId"], ev.data["Image"],
            ev.data["Source"]) == ("{00000000-0000-0000-0000-000000000000}", "0", "-", "live")
    assert "SysmonDrv is not loaded" in found["driver_unloaded"].data["Details"]
    assert "Rules changed outside SysmonX" in found["sysmon_rules_registry"].data["Details"]
    # back to good, then bad again: a new finding
    h.services["Sysmon64"]["state"] = "RUNNING"
    assert checks.check() == []
    del h.services["Sysmon64"]
    again = checks.check()
    assert [e.data["Technique"] for e in again] == ["sysmon_stopped"]
    assert "not installed any more" in again[0].data["Details"]


def test_heartbeat_silence_while_the_service_runs():
    h = _host()
    mono = Mono()
    checks = WindowsTamperChecks(CommandProbe(h), silence_s=600, monotonic=mono)
    checks.baseline()
    mono.t += 599
    assert checks.check() == []
    checks.saw_sysmon_event()
    mono.t += 601
    found = checks.check()
    assert [e.data["Technique"] for e in found] == ["time_gap"]
    assert "no Sysmon event for 601 s" in found[0].data["Details"]


def test_stage_reads_in_its_thread_and_emits_on_tick():
    h = _host()
    checks = WindowsTamperChecks(CommandProbe(h))
    stage = WindowsTamper(checks, interval_s=0.05)
    out: list = []
    stage.tick(0, out.append)                          # starts the reader (baseline)
    time.sleep(0.2)
    h.minifilters.clear()
    deadline = time.monotonic() + 5
    while not out and time.monotonic() < deadline:
        time.sleep(0.05)
        stage.tick(0, out.append)
    stage.finish(out.append)
    assert [e.data["Technique"] for e in out] == ["driver_unloaded"]


def test_finding_text_is_one_line():
    ev = tamper_finding("sysmon_stopped", "a\nb\r\n  c", when_ns=0)
    assert ev.data["Details"] == "a b c" and ev.data["UtcTime"] == "1970-01-01 00:00:00.000"


def test_a_stopped_sysmon_is_started_again_and_the_finding_says_so(tmp_path):
    from sysmonx.windows.sysmon import SysmonManager, SysmonState
    h = _host()
    mgr = SysmonManager(h, str(tmp_path))
    mgr._save_state(SysmonState("Sysmon64", "C:\\Windows\\Sysmon64.exe", True, None,
                                "SysmonDrv", "0" * 64))
    checks = WindowsTamperChecks(CommandProbe(h), restart=mgr.ensure_running)
    checks.baseline()
    h.services["Sysmon64"]["state"] = "STOPPED"
    found = checks.check()
    assert found[0].data["Details"] == ("service Sysmon64 is STOPPED (sc.exe query); SysmonX "
                                        "started it again")
    assert h.services["Sysmon64"]["state"] == "RUNNING"
    assert ["sc.exe", "start", "Sysmon64"] in h.commands
    assert checks.check() == []                        # running again: good state
