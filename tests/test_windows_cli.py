"""The Windows command line (``-accepteula -i``, ``-c``, ``-u``, ``run``, the backends list),
the SysmonX service (installer, state machine, ctypes structures) and the tamper signals, all on
Linux against the fakes of :mod:`sysmonx.windows.fakes` (a simulated host: services, Sysmon,
registry, minifilters, channels)."""

from __future__ import annotations

import ctypes
import io
import json
import os
import threading
import time

import pytest

from sysmonx.cli import common
from sysmonx.cli.sysmon import main as switches
from sysmonx.pipeline.windows import collector_from_state
from sysmonx.windows import service as svc
from sysmonx.windows.fakes import FakeServiceApi, FakeWevtApi, FakeWindowsHost

CONFIG = ('<Sysmon schemaversion="4.90"><EventFiltering><RuleGroup groupRelation="or">'
          '<ProcessCreate onmatch="include"><Image condition="end with">\\cmd.exe</Image>'
          '</ProcessCreate>'
          '<NetworkConnect onmatch="include"><DestinationPort condition="regex">^44[0-9]$'
          '</DestinationPort></NetworkConnect>'
          '<PowerShellScriptBlock onmatch="include"><ScriptBlockText condition="contains">'
          'DownloadString</ScriptBlockText></PowerShellScriptBlock>'
          '</RuleGroup></EventFiltering></Sysmon>')


@pytest.fixture
def host(monkeypatch, tmp_path):
    """Windows: the command line takes its Windows branch, commands go to a fake host."""
    fake = FakeWindowsHost()
    monkeypatch.setattr(common, "on_windows", lambda: True)
    monkeypatch.setattr("sysmonx.windows.sysmon.SubprocessRunner", lambda: fake)
    monkeypatch.setattr("sysmonx.cli.windows._elevated", lambda: True)
    exe = tmp_path / "Sysmon64.exe"
    exe.write_bytes(b"MZ")
    cfg = tmp_path / "user.xml"
    cfg.write_text(CONFIG)
    fake.exe, fake.cfg, fake.state = str(exe), str(cfg), str(tmp_path / "state")
    return fake


def _switches(*argv):
    out, err = io.StringIO(), io.StringIO()
    rc = switches(list(argv), out, err)
    return rc, out.getvalue(), err.getvalue()


def test_install_configure_uninstall(host):
    rc, out, err = _switches("-accepteula", "-i", host.cfg, "--sysmon", host.exe,
                             "--state-dir", host.state)
    assert rc == 0, out + err
    assert "Sysmon installed (service Sysmon64)" in out
    assert "SysmonX service installed and started" in out
    # Sysmon got the derived sensor configuration: cmd.exe rule verbatim, regex tag opened
    # up, SysmonX's own tag not given to Sysmon at all
    assert "cmd.exe" in host.sysmon_config and "PowerShellScriptBlock" not in host.sysmon_config
    assert '<NetworkConnect onmatch="exclude"' in host.sysmon_config
    assert "ProcessCreate            rules" in out and "NetworkConnect           all" in out
    assert host.acls[host.state] == ["/inheritance:r", "/grant:r", "*S-1-5-18:(OI)(CI)F",
                                     "*S-1-5-32-544:(OI)(CI)F"]
    sx = host.services["SysmonX"]
    assert sx["state"] == "RUNNING" and sx["start"] == "auto"
    assert "-m sysmonx.cli.winservice --state-dir" in sx["binary"]
    assert ["sc.exe", "failure", "SysmonX", "reset=", "86400", "actions=",
            "restart/5000/restart/5000/restart/60000"] in host.commands
    settings = json.loads(open(os.path.join(host.state, "service.json")).read())
    assert settings["config"] == os.path.join(host.state, "config.xml")
    assert open(settings["config"]).read() == CONFIG
    assert settings["sysmon_service"] == "Sysmon64"
    assert "SysmonX/Operational" in open(os.path.join(host.state, "sysmonx.man")).read()

    # -c with a new file: Sysmon's config re-derived, copy replaced, service told (128)
    new = CONFIG.replace("\\cmd.exe", "\\powershell.exe")
    with open(host.cfg, "w") as f:
        f.write(new)
    rc, out, err = _switches("-c", host.cfg, "--state-dir", host.state)
    assert rc == 0, out + err
    assert "powershell.exe" in host.sysmon_config and "cmd.exe" not in host.sysmon_config
    assert host.controls == [("SysmonX", 128)]
    assert open(settings["config"]).read() == new
    # -c alone prints what is in force
    rc, out, _ = _switches("-c", "--state-dir", host.state)
    assert rc == 0 and "Configuration in force:" in out and "ProcessCreate" in out

    rc, out, err = _switches("-u", "--state-dir", host.state)
    assert rc == 0, out + err
    assert "SysmonX service removed." in out and "Removed Sysmon" in out
    assert "SysmonX" not in host.services and "Sysmon64" not in host.services
    assert not os.path.exists(os.path.join(host.state, "service.json"))


def test_install_keeps_a_sysmon_it_did_not_install_and_restores_it(host):
    host.services["Sysmon64"] = {"state": "RUNNING", "binary": "C:\\Windows\\Sysmon64.exe"}
    host.registry_export = ("Windows Registry Editor Version 5.00\r\n\r\n[HKEY_LOCAL_MACHINE\\"
                            "SYSTEM\\CurrentControlSet\\Services\\SysmonDrv\\Parameters]\r\n"
                            "\"HashingAlgorithm\"=dword:00000001\r\n")
    rc, out, err = _switches("-accepteula", "-i", host.cfg, "--state-dir", host.state)
    assert rc == 0, out + err
    assert "Sysmon kept (service Sysmon64; its configuration was backed up" in out
    rc, out, _ = _switches("-u", "--state-dir", host.state)
    assert rc == 0 and "Restored the previous configuration of Sysmon64" in out
    assert "Sysmon64" in host.services                 # not removed: SysmonX did not install it


def test_install_needs_the_eula_elevation_and_a_valid_config(host, monkeypatch, tmp_path):
    rc, out, _ = _switches("-i", host.cfg, "--sysmon", host.exe, "--state-dir", host.state)
    assert rc == 1 and "-accepteula" in out and host.commands == []
    bad = tmp_path / "bad.xml"
    bad.write_text(CONFIG.replace("</ProcessCreate>", "</ProcessCreat>"))
    rc, out, err = _switches("-accepteula", "-i", str(bad), "--state-dir", host.state)
    assert rc == 87 and "bad.xml" in err and host.commands == []
    monkeypatch.setattr("sysmonx.cli.windows._elevated", lambda: False)
    rc, out, _ = _switches("-accepteula", "-i", host.cfg, "--state-dir", host.state)
    assert rc == 740 and "elevated" in out


def test_a_failing_service_step_undoes_the_sysmon_install(host):
    host.fail[("sc.exe", "create", "SysmonX")] = 5
    rc, out, _ = _switches("-accepteula", "-i", host.cfg, "--sysmon", host.exe,
                           "--state-dir", host.state)
    assert rc == 1 and "sc.exe create SysmonX" in out and "Undone: removed Sysmon" in out
    assert "Sysmon64" not in host.services


def test_no_arguments_on_windows_lists_the_backends(monkeypatch, capsys):
    from sysmonx.cli import main
    monkeypatch.setattr(common, "on_windows", lambda: True)
    assert main([]) == 87
    err = capsys.readouterr().err
    assert "Backends on this host:" in err and "eventlog" in err and "replay" in err


def test_run_on_windows_reads_the_event_log_through_the_one_loop(monkeypatch, tmp_path):
    from sysmonx.cli.common import builtin_sample_path
    from sysmonx.cli.windows import cmd_run_windows
    from sysmonx.windows.fakes import split_event_xml
    api = FakeWevtApi(["Microsoft-Windows-Sysmon/Operational"])
    records = [x for x in split_event_xml(open(builtin_sample_path()).read())
               if "Microsoft-Windows-Sysmon" in x]
    for x in records:
        api.write("Microsoft-Windows-Sysmon/Operational", x)
    out = tmp_path / "events.jsonl"
    bm = tmp_path / "bm.json"
    rc = cmd_run_windows(["--channel", "Microsoft-Windows-Sysmon/Operational", "-f", "jsonl",
                          "-o", str(out), "--bookmarks", str(bm), "--duration", "1.5"],
                         wevtapi=api)
    assert rc == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines and all(x["System"]["Provider"] == "Microsoft-Windows-Sysmon" for x in lines)
    assert json.loads(bm.read_text())["channels"]["Microsoft-Windows-Sysmon/Operational"][
        "record_id"] == len(records)


# ---- the service --------------------------------------------------------------------------

def test_service_structures_have_winsvc_h_sizes():
    assert ctypes.sizeof(svc.SERVICE_STATUS) == 28
    assert [f for f, _ in svc.SERVICE_STATUS._fields_] == [
        "dwServiceType", "dwCurrentState", "dwControlsAccepted", "dwWin32ExitCode",
        "dwServiceSpecificExitCode", "dwCheckPoint", "dwWaitHint"]
    assert svc.SERVICE_STATUS.dwCheckPoint.offset == 20
    assert ctypes.sizeof(svc.SERVICE_TABLE_ENTRYW) == 2 * ctypes.sizeof(ctypes.c_void_p)


class _Collector:
    def __init__(self):
        self.stop = threading.Event()
        self.reloads = 0

    def run(self):
        self.stop.wait(10)

    def request_stop(self):
        self.stop.set()

    def request_reload(self):
        self.reloads += 1


def test_service_state_machine_stop_reload_interrogate():
    api = FakeServiceApi()
    col = _Collector()
    host = svc.ServiceHost(api, lambda: col)
    t = threading.Thread(target=host.run)
    t.start()
    assert api.running.wait(5)
    assert api.control(svc.CONTROL_RELOAD) == 0 and col.reloads == 1
    assert api.control(svc.SERVICE_CONTROL_INTERROGATE) == 0
    assert api.control(200) == svc.ERROR_CALL_NOT_IMPLEMENTED
    assert api.control(svc.SERVICE_CONTROL_STOP) == 0
    t.join(5)
    states = [s.dwCurrentState for s in api.statuses]
    assert states == [svc.SERVICE_START_PENDING, svc.SERVICE_RUNNING, svc.SERVICE_STOP_PENDING,
                      svc.SERVICE_STOPPED]
    assert api.statuses[0].dwControlsAccepted == 0            # no stop while starting
    assert api.statuses[1].dwControlsAccepted == svc.SERVICE_ACCEPT_STOP | \
        svc.SERVICE_ACCEPT_SHUTDOWN
    assert api.statuses[-1].dwWin32ExitCode == 0 and host.error is None


def test_service_that_cannot_start_reports_a_service_specific_error():
    api = FakeServiceApi()

    def broken():
        raise ValueError("config.xml:3: bad")
    host = svc.ServiceHost(api, broken)
    host.run()
    last = api.statuses[-1]
    assert last.dwCurrentState == svc.SERVICE_STOPPED
    assert last.dwWin32ExitCode == svc.ERROR_SERVICE_SPECIFIC_ERROR
    assert "config.xml:3" in host.error


def test_service_runs_the_collector_from_its_settings(tmp_path):
    """The service's collector: settings file -> config, bookmarks, file output, tamper."""
    from sysmonx.cli.common import builtin_config_path, builtin_sample_path
    from sysmonx.windows.fakes import split_event_xml
    state = str(tmp_path)
    out = tmp_path / "events.xml"
    svc.ServiceSettings(config=str(builtin_config_path()), output=str(out),
                        tamper=True).save(state)
    api = FakeWevtApi(["Microsoft-Windows-Sysmon/Operational",
                       "Microsoft-Windows-PowerShell/Operational",
                       "Microsoft-Windows-WMI-Activity/Operational",
                       "Microsoft-Windows-DNS-Client/Operational", "Security"])
    for x in split_event_xml(open(builtin_sample_path()).read()):
        if "Microsoft-Windows-Sysmon" in x:
            api.write("Microsoft-Windows-Sysmon/Operational", x)
    fake_host = FakeWindowsHost()
    fake_host.services["Sysmon64"] = {"state": "RUNNING", "binary": "C:\\Windows\\Sysmon64.exe"}
    sapi = FakeServiceApi()
    host = svc.ServiceHost(sapi, lambda: collector_from_state(state, wevtapi=api,
                                                             runner=fake_host))
    t = threading.Thread(target=host.run)
    t.start()
    assert sapi.running.wait(5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (tmp_path / "bookmarks.json").exists():
        time.sleep(0.05)
    time.sleep(0.5)
    sapi.control(svc.SERVICE_CONTROL_STOP)
    t.join(10)
    assert host.error is None and sapi.statuses[-1].dwCurrentState == svc.SERVICE_STOPPED
    lines = out.read_text().splitlines()
    assert lines and all("<Provider Name='Microsoft-Windows-Sysmon'" in x for x in lines)
    assert json.loads((tmp_path / "bookmarks.json").read_text())["channels"]


def test_installer_commands_and_a_service_that_does_not_exist():
    fake = FakeWindowsHost()
    inst = svc.ServiceInstaller(fake, "C:\\ProgramData\\SysmonX", python="C:\\Py\\python.exe")
    assert inst.command_line() == ('"C:\\Py\\python.exe" -m sysmonx.cli.winservice '
                                   '--state-dir "C:\\ProgramData\\SysmonX"')
    assert inst.uninstall() is False
    assert inst.reload() is False                      # no service (1060): nothing to tell


def test_windows_only_options_are_accepted_and_dash_dash_restores_defaults(host):
    with open(host.cfg, "w") as f:
        f.write(CONFIG.replace("<EventFiltering>", "<ArchiveDirectory>SysmonArchive"
                               "</ArchiveDirectory><CheckRevocation/><EventFiltering>"))
    rc, out, err = _switches("-accepteula", "-i", host.cfg, "--sysmon", host.exe,
                             "--state-dir", host.state)
    assert rc == 0, out + err                          # Linux refuses these; Windows has them
    assert "<ArchiveDirectory>SysmonArchive</ArchiveDirectory>" in host.sysmon_config
    rc, out, err = _switches("-c", "--", "--state-dir", host.state)
    assert rc == 0, out + err
    assert "cmd.exe" not in host.sysmon_config and host.controls == [("SysmonX", 128)]
    assert "ProcessCreate            all" in out       # Sysmon's defaults: 1 and 5 logged
    rc, out, err = _switches("-c", "--", host.cfg, "--state-dir", host.state)
    assert rc == 87 and host.controls == [("SysmonX", 128)]   # refused, nothing changed
