"""Locating, installing, reconfiguring and uninstalling Sysmon, through a fake command runner
that simulates the Windows commands (Sysmon64.exe -i/-c/-u, sc.exe, reg.exe, powershell.exe)."""

from __future__ import annotations

import io
import json
import os
import zipfile

import pytest

from sysmonx.config.blob import compile_blob, format_reg
from sysmonx.config.parse import parse_config
from sysmonx.windows.fakes import FakeWindowsHost
from sysmonx.windows.sysmon import (SYSMON_ZIP_URL, SysmonError, SysmonManager, SysmonNotFound,
                                    download_sysmon, sysmon_binary_name)

SENSOR = '<Sysmon schemaversion="4.90"><EventFiltering><ProcessCreate onmatch="exclude"/>' \
         '</EventFiltering></Sysmon>\n'
PREVIOUS = """<Sysmon schemaversion="4.90"><EventFiltering>
  <RuleGroup groupRelation="or"><NetworkConnect onmatch="include">
    <Image condition="end with" name="T1059">powershell.exe</Image>
  </NetworkConnect></RuleGroup></EventFiltering></Sysmon>"""


def manager(tmp_path, host, **kw):
    kw.setdefault("which", lambda name: None)
    kw.setdefault("exists", lambda p: p.startswith("C:\\Tools\\"))
    kw.setdefault("machine", "AMD64")
    return SysmonManager(host, str(tmp_path / "state"), **kw)


def test_binary_name_per_cpu():
    assert sysmon_binary_name("AMD64") == "Sysmon64.exe"
    assert sysmon_binary_name("ARM64") == "Sysmon64a.exe"
    assert sysmon_binary_name("x86") == "Sysmon.exe"


def test_fresh_install_update_keep_running_uninstall(tmp_path):
    host = FakeWindowsHost()
    m = manager(tmp_path, host)
    state = m.install(SENSOR, accept_eula=True, sysmon="C:\\Tools\\Sysmon64.exe")
    assert state.installed_by_sysmonx and state.service == "Sysmon64"
    assert state.binary == "C:\\Windows\\Sysmon64.exe"     # the copy Sysmon installs
    cfg = os.path.join(m.state_dir, "sysmon-sensor-config.xml")
    assert ["C:\\Tools\\Sysmon64.exe", "-accepteula", "-i", cfg] in host.commands
    assert host.sysmon_config == SENSOR
    assert json.load(open(m.state_path))["installed_by_sysmonx"] is True

    new = SENSOR.replace("ProcessCreate", "NetworkConnect")
    m.update(new)
    assert host.commands[-1] == ["C:\\Windows\\Sysmon64.exe", "-c", cfg]
    assert host.sysmon_config == new

    host.services["Sysmon64"]["state"] = "STOPPED"
    assert m.ensure_running() is False and host.services["Sysmon64"]["state"] == "RUNNING"
    assert m.ensure_running() is True

    with pytest.raises(SysmonError, match="already set up by SysmonX"):
        m.install(SENSOR, accept_eula=True, sysmon="C:\\Tools\\Sysmon64.exe")

    assert "removed Sysmon" in m.uninstall()
    assert host.commands[-1] == ["C:\\Windows\\Sysmon64.exe", "-u"]
    assert "Sysmon64" not in host.services and m.load_state() is None
    assert not os.path.exists(cfg)
    assert "nothing to remove" in m.uninstall()


def test_uninstall_falls_back_to_force(tmp_path):
    host = FakeWindowsHost()
    m = manager(tmp_path, host)
    m.install(SENSOR, accept_eula=True, sysmon="C:\\Tools\\Sysmon64.exe")
    host.fail[("C:\\Windows\\Sysmon64.exe", "-u")] = 1
    with pytest.raises(SysmonError, match="removing Sysmon"):
        m.uninstall()                                   # -u force also fails: state kept
    assert m.load_state() is not None
    del host.fail[("C:\\Windows\\Sysmon64.exe", "-u")]
    host.fail[("C:\\Windows\\Sysmon64.exe", "-u", "force")] = 0
    assert "removed Sysmon" in m.uninstall()


def test_eula_and_missing_binary_refusals(tmp_path):
    host = FakeWindowsHost()
    m = manager(tmp_path, host)
    with pytest.raises(SysmonError, match="-accepteula"):
        m.install(SENSOR, accept_eula=False)
    assert host.commands == []
    with pytest.raises(SysmonNotFound, match="--download-sysmon"):
        m.install(SENSOR, accept_eula=True)
    with pytest.raises(SysmonNotFound, match="no such file"):
        m.locate("C:\\Elsewhere\\Sysmon64.exe")
    with pytest.raises(SysmonNotFound, match="not a Sysmon executable"):
        m.locate("C:\\Tools\\evil.exe")
    found = manager(tmp_path, host, which=lambda n: f"C:\\Bin\\{n}").locate()
    assert found == "C:\\Bin\\Sysmon64.exe"
    assert not any(c[0].endswith(".exe") and "-i" in c for c in host.commands)


def _zip(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_download_only_with_consent_and_a_valid_microsoft_signature(tmp_path):
    host = FakeWindowsHost()
    urls = []

    def fetch(url):
        urls.append(url)
        return _zip({"Sysmon.exe": b"MZ32", "Sysmon64.exe": b"MZ64", "Sysmon64a.exe": b"MZa",
                     "Eula.txt": b"..."})

    with pytest.raises(SysmonNotFound, match="explicit consent"):
        download_sysmon(str(tmp_path), consent=False, runner=host, fetch=fetch)
    assert urls == []
    path = download_sysmon(str(tmp_path / "dl"), consent=True, runner=host, fetch=fetch,
                           machine="ARM64")
    assert urls == [SYSMON_ZIP_URL] and SYSMON_ZIP_URL.startswith("https://")
    assert os.path.basename(path) == "Sysmon64a.exe" and open(path, "rb").read() == b"MZa"
    assert host.commands[-1][:2] == ["powershell.exe", "-NoProfile"]
    assert host.commands[-1][-1] == path

    host.signature = "Valid|CN=Totally Microsoft, O=Evil Corp"
    with pytest.raises(SysmonError, match="not Microsoft"):
        download_sysmon(str(tmp_path / "dl2"), consent=True, runner=host, fetch=fetch)
    assert not os.path.exists(tmp_path / "dl2" / "Sysmon64.exe")
    host.signature = "HashMismatch|CN=Microsoft Corporation, O=Microsoft Corporation"
    with pytest.raises(SysmonError, match="HashMismatch"):
        download_sysmon(str(tmp_path / "dl3"), consent=True, runner=host, fetch=fetch)
    with pytest.raises(SysmonError, match="expected"):
        download_sysmon(str(tmp_path / "dl4"), consent=True, runner=host, fetch=fetch,
                        expected_sha256="00" * 32)
    with pytest.raises(SysmonError, match="holds no Sysmon64.exe"):
        download_sysmon(str(tmp_path / "dl5"), consent=True, runner=host,
                        fetch=lambda u: _zip({"../../Sysmon64.exe.txt": b"x"}))


def test_install_with_download_consent(tmp_path):
    host = FakeWindowsHost()
    m = manager(tmp_path, host, fetch=lambda u: _zip({"Sysmon64.exe": b"MZ"}))
    state = m.install(SENSOR, accept_eula=True, download=True)
    dl = os.path.join(m.state_dir, "download", "Sysmon64.exe")
    assert [dl, "-accepteula", "-i", os.path.join(m.state_dir, "sysmon-sensor-config.xml")] \
        in host.commands
    assert state.installed_by_sysmonx


def test_existing_sysmon_is_kept_and_its_configuration_restored(tmp_path):
    host = FakeWindowsHost()
    host.services["Sysmon64"] = {"state": "RUNNING", "binary": "C:\\Windows\\Sysmon64.exe"}
    host.sysmon_config = PREVIOUS
    blob = compile_blob(parse_config(PREVIOUS, "previous.xml"))
    host.registry_export = format_reg(blob)
    m = manager(tmp_path, host)
    state = m.install(SENSOR, accept_eula=True)
    assert not state.installed_by_sysmonx and state.backup
    assert ["reg.exe", "export",
            "HKLM\\SYSTEM\\CurrentControlSet\\Services\\SysmonDrv\\Parameters", state.backup,
            "/y"] in host.commands
    assert host.sysmon_config == SENSOR
    assert not any("-i" in c for c in host.commands)

    done = m.uninstall()
    assert "restored the previous configuration of Sysmon64" in done
    assert "Sysmon64" in host.services                        # not ours: not removed
    assert host.imported == [host.registry_export]
    restored = parse_config(host.sysmon_config, "restored.xml")
    assert compile_blob(restored) == blob                     # the same rules, byte for byte
    assert m.load_state() is None and not os.path.exists(state.backup)


def test_existing_sysmon_without_a_backup_is_left_untouched(tmp_path):
    host = FakeWindowsHost()
    host.services["Sysmon64"] = {"state": "RUNNING", "binary": "C:\\Windows\\Sysmon64.exe"}
    host.sysmon_config = PREVIOUS                  # registry_export None: reg export fails
    m = manager(tmp_path, host)
    with pytest.raises(SysmonError, match="cannot back up.*nothing changed"):
        m.install(SENSOR, accept_eula=True)
    assert host.sysmon_config == PREVIOUS and m.load_state() is None


def test_refused_sensor_configuration_leaves_no_state(tmp_path):
    host = FakeWindowsHost()
    host.services["Sysmon64"] = {"state": "RUNNING", "binary": "C:\\Windows\\Sysmon64.exe"}
    host.registry_export = format_reg(compile_blob(parse_config(PREVIOUS, "p.xml")))
    host.fail[("C:\\Windows\\Sysmon64.exe", "-c")] = 1
    m = manager(tmp_path, host)
    with pytest.raises(SysmonError, match="exited with 1"):
        m.install(SENSOR, accept_eula=True)
    assert m.load_state() is None
    assert not os.path.exists(os.path.join(m.state_dir, "sysmon-config-backup.reg"))


def test_service_gone_and_update_without_setup(tmp_path):
    host = FakeWindowsHost()
    m = manager(tmp_path, host)
    with pytest.raises(SysmonError, match="use -i first"):
        m.update(SENSOR)
    m.install(SENSOR, accept_eula=True, sysmon="C:\\Tools\\Sysmon64.exe")
    del host.services["Sysmon64"]
    with pytest.raises(SysmonError, match="no longer exists"):
        m.ensure_running()
