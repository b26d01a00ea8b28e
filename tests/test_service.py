"""SysmonX as a service, for real, under a temporary install root: ``-i`` installs and starts the
sensor (event 4), ``-c`` dumps the installed configuration in Sysmon's format, ``-c file`` applies
a new configuration without a restart (event 16 with its SHA256), ``-c --`` resets, ``-u`` stops
the service and removes every file it created. The systemd unit is checked with
``systemd-analyze verify`` (Debian package ``systemd``)."""

import hashlib
import io
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from sysmonx.cli.sysmon import main
from sysmonx.service import Layout, ServiceSettings, service_command, unit_text

pytestmark = pytest.mark.live


def run(root, *argv):
    out, err = io.StringIO(), io.StringIO()
    code = main(["--install-root", str(root), *argv], out, err)
    return code, out.getvalue(), err.getvalue()


# --- the unit file -------------------------------------------------------------------------------

def test_unit_text(tmp_path):
    layout = Layout(tmp_path)
    text = unit_text(layout, ServiceSettings(python="/usr/bin/python3"))
    assert "\nType=notify\n" in text and "\nWatchdogSec=60\n" in text
    assert ("\nExecStart=/usr/bin/python3 -I -m sysmonx.cli run --state-dir /var/lib/sysmonx "
            "--install-manifest /opt/sysmonx/manifest.json --config /opt/sysmonx/config.xml "
            "--config-name-from /opt/sysmonx/argv --syslog\n") in text
    # new-user report s13 #14: the caches in a directory the unit can write (ProtectHome)
    assert "\nProtectHome=read-only\n" in text
    assert "\nCacheDirectory=sysmonx\n" in text
    assert "\nEnvironment=SYSMONX_CACHE_DIR=/var/cache/sysmonx\n" in text
    assert "\nExecReload=/bin/kill -HUP $MAINPID\n" in text
    assert "\nRestart=on-failure\n" in text and "\nWorkingDirectory=/opt/sysmonx\n" in text
    for breaks_tracing in ("PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
                           "MemoryDenyWriteExecute", "SystemCallFilter"):
        assert breaks_tracing not in text
    assert "NoNewPrivileges=yes" in text and "ProtectSystem=full" in text
    cmd = service_command(layout, ServiceSettings(output_file="/var/log/x.xml", backend="audit"),
                          final=False)
    assert cmd[-8:] == ["--config", str(tmp_path / "opt/sysmonx/config.xml"),
                        "--config-name-from", str(tmp_path / "opt/sysmonx/argv"), "-o",
                        "/var/log/x.xml", "--backend", "audit"]


def test_unit_passes_systemd_analyze_verify(tmp_path):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed (Debian package 'systemd')")
    unit = tmp_path / "sysmonx.service"
    for settings in (ServiceSettings(), ServiceSettings(output_file="/var/log/sysmonx events.xml",
                                                        backend="ebpf", no_dns=True)):
        unit.write_text(unit_text(Layout(Path("/")), settings))
        proc = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True)
        complaints = [ln for ln in (proc.stdout + proc.stderr).splitlines()
                      if "sysmonx.service" in ln]
        assert proc.returncode == 0 and not complaints, proc.stdout + proc.stderr
    bad = tmp_path / "bad.service"
    bad.write_text(unit_text(Layout(Path("/")), ServiceSettings()).replace(
        "Type=notify", "Type=notify\nExecStart=relative"))
    assert subprocess.run([tool, "verify", str(bad)], capture_output=True).returncode != 0


# --- the whole flow under a temporary root -------------------------------------------------------

def _backend():
    if os.geteuid() != 0:
        return None, "the service flow needs root"
    from sysmonx.sensor.backends import probe
    reasons = {}
    for name in ("cnproc", "audit", "ebpf"):
        reason = probe(name)
        if reason is None:
            return name, None
        reasons[name] = reason
    return None, "no live backend can run here: " + "; ".join(f"{k}: {v}"
                                                              for k, v in reasons.items())


def _events(path: Path):
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        m = re.search(r"<EventID>(\d+)</EventID>", line)
        if m:
            data = dict(re.findall(r'<Data Name="([^"]+)">([^<]*)</Data>', line))
            out.append((int(m.group(1)), data))
    return out


def _wait_for(path: Path, pred, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in _events(path) if pred(e)]
        if found:
            return found
        time.sleep(0.1)
    return []


CONFIG1 = """<Sysmon schemaversion="4.81">
  <!-- first configuration -->
  <EventFiltering>
    <RuleGroup name="grp" groupRelation="or">
      <ProcessCreate onmatch="include">
        <Image condition="end with">/true</Image>
      </ProcessCreate>
    </RuleGroup>
    <NetworkConnect onmatch="exclude"/>
  </EventFiltering>
</Sysmon>
"""

CONFIG2 = """<Sysmon schemaversion="4.90">
  <FieldSizes>CommandLine:100</FieldSizes>
  <EventFiltering>
    <ProcessCreate onmatch="include">
      <Rule name="shells" groupRelation="and">
        <Image condition="end with">/bash</Image>
        <CommandLine condition="contains">-c</CommandLine>
      </Rule>
    </ProcessCreate>
    <ProcessTerminate onmatch="include"/>
  </EventFiltering>
</Sysmon>
"""


@pytest.fixture
def service_root(tmp_path):
    backend, why = _backend()
    if backend is None:
        pytest.skip(why)
    root = tmp_path / "root"
    root.mkdir()
    yield root, backend, tmp_path / "events.xml"
    run(root, "-nologo", "-u", "force")  # never leave a daemon behind


def test_install_update_dump_uninstall(service_root, tmp_path):
    root, backend, events = service_root
    layout = Layout(root)
    c1, c2 = tmp_path / "c1.xml", tmp_path / "c2.xml"
    c1.write_text(CONFIG1)
    c2.write_text(CONFIG2)
    bad = tmp_path / "bad.xml"
    bad.write_text('<Sysmon schemaversion="4.90">\n<EventFiltering>\n<ProcessCreate '
                   'onmatch="include">\n<Image condition="bogus">x</Image>\n</ProcessCreate>'
                   "</EventFiltering></Sysmon>")
    before = set(p for p in tmp_path.rglob("*"))

    # -i: files, modes, the daemon, event 4
    code, out, err = run(root, "-i", str(c1), "-accepteula", "--output-file", str(events),
                         "--backend", backend, "--no-dns")
    assert code == 0, out + err
    assert "Loading configuration file with schema version 4.81\n" in out
    assert "Configuration file validated.\n" in out and "Sysmon started.\n" in out
    assert layout.config.read_bytes() == c1.read_bytes()
    for p in (layout.config, layout.rules, layout.argv, layout.state):
        assert p.stat().st_mode & 0o777 == 0o600, p
        assert p.stat().st_uid == 0
    assert layout.opt.stat().st_mode & 0o777 == 0o700
    assert layout.argv.read_bytes() == b"-i\0" + str(c1).encode() + b"\0-accepteula\0"
    from sysmonx.config import parse_config
    from sysmonx.config.blob import compile_blob
    assert layout.rules.read_bytes() == compile_blob(parse_config(c1.read_bytes()))
    unit = layout.unit.read_text()
    assert "ExecStart=" in unit and "--config /opt/sysmonx/config.xml" in unit
    pid = int(layout.pidfile.read_text())
    assert Path(f"/proc/{pid}").exists()
    started = _wait_for(events, lambda e: e[0] == 4 and e[1].get("State") == "Started")
    assert started, events.read_text()[-2000:] if events.exists() else "no output"
    sha1 = hashlib.sha256(c1.read_bytes()).hexdigest()
    # event 16 names the file given to -i, as Sysmon for Linux does (new-user report s13 #8)
    assert _wait_for(events, lambda e: e[0] == 16 and
                     e[1]["ConfigurationFileHash"] == f"SHA256={sha1}" and
                     e[1]["Configuration"] == str(c1))

    # -c alone: the installed configuration in Sysmon's format
    code, out, _ = run(root, "-nologo", "-c")
    assert code == 0
    assert out == ("\nRule configuration (version 4.81):\n"
                   " - ProcessCreate                      onmatch: include   combine rules using "
                   "'Or'\n"
                   "\tImage                          filter: end with     value: '/true'\n"
                   " - NetworkConnect                     onmatch: exclude   combine rules using "
                   "'And'\n")

    # an invalid -c file: 87, line number, the installed configuration untouched
    code, out, err = run(root, "-nologo", "-c", str(bad))
    assert code == 87 and f"{bad}:4: Unknown condition: bogus" in err
    assert layout.config.read_bytes() == c1.read_bytes()

    # -c file: applied without a restart, event 16 with the new SHA256
    code, out, err = run(root, "-nologo", "-c", str(c2))
    assert code == 0, out + err
    assert out.endswith("Configuration file validated.\nConfiguration updated.\n")
    assert int(layout.pidfile.read_text()) == pid  # same process: reloaded, not restarted
    sha2 = hashlib.sha256(c2.read_bytes()).hexdigest()
    assert _wait_for(events, lambda e: e[0] == 16 and
                     e[1]["ConfigurationFileHash"] == f"SHA256={sha2}" and
                     e[1]["Configuration"] == str(c2)), "no event 16 for -c"
    assert layout.config.read_bytes() == c2.read_bytes()
    assert layout.field_sizes.read_text() == "CommandLine:100"
    code, out, _ = run(root, "-nologo", "-c")
    assert out.splitlines() == [
        " - Field Sizes:                   CommandLine:100", "",
        "Rule configuration (version 4.90):",
        " - ProcessCreate                      onmatch: include   combine rules using 'And'",
        "\tCompound Rule shells   combine using And",
        "\t    Image                          filter: end with     value: '/bash'",
        "\t    CommandLine                    filter: contains     value: '-c'",
        " - ProcessTerminate                   onmatch: include   combine rules using 'And'"]
    assert sum(1 for e in _events(events) if e[0] == 4 and e[1]["State"] == "Started") == 1

    # -c with a configuration switch: the merged configuration is stored and applied
    code, out, err = run(root, "-nologo", "-c", str(c2), "-n", "curl,wget")
    assert code == 0, out + err
    merged = layout.config.read_text()
    assert merged.startswith("<!-- SysmonX effective configuration:")
    assert '<Image condition="image">curl</Image>' in merged
    sha3 = hashlib.sha256(layout.config.read_bytes()).hexdigest()
    assert _wait_for(events, lambda e: e[0] == 16 and
                     e[1]["ConfigurationFileHash"] == f"SHA256={sha3}")
    code, out, _ = run(root, "-nologo", "-c")
    assert " - NetworkConnect                     onmatch: include   combine rules using 'Or'\n" \
           "\tImage                          filter: image        value: 'curl'\n" in out

    # -c --: defaults
    code, out, _ = run(root, "-nologo", "-c", "--")
    assert code == 0 and out.startswith("Updating configuration to use all defaults.\n")
    assert _wait_for(events, lambda e: e[0] == 16 and e[1]["Configuration"] == "Defaults")
    assert layout.rules.read_bytes() == b""
    code, out, _ = run(root, "-nologo", "-c")
    assert (code, out) == (0, "No rules installed\n")

    # -u: stopped (event 4 Stopped), every created file and directory removed, nothing else
    code, out, _ = run(root, "-u")
    state_json = layout.sensor_state / "state.json"
    assert code == 0 and out.endswith(
        "Sysmon stopped.\nSysmon removed.\nKept " + str(state_json) + " (heartbeat Sequence "
        "and SecondsSincePrevious continue at the next install).\n")
    assert not Path(f"/proc/{pid}").exists() or \
        Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] == "Z"
    assert _wait_for(events, lambda e: e[0] == 4 and e[1].get("State") == "Stopped", 5)
    # everything but the sensor's state (heartbeat history) is gone
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        "var/lib/sysmonx/state.json", "var/lib/sysmonx/state.lock"]
    shutil.rmtree(root / "var")
    after = set(p for p in tmp_path.rglob("*"))
    assert after - before == {root, events} - before
    code, out, _ = run(root, "-nologo", "-u")
    assert (code, out) == (87, "Sysmon is not installed.\n")
    assert run(root, "-nologo", "-u", "force")[0] == 0


def test_uninstall_force_with_missing_components(service_root, tmp_path):
    root, backend, events = service_root
    layout = Layout(root)
    code, out, err = run(root, "-nologo", "-i", "--output-file", str(events), "--backend",
                         backend, "--no-dns")
    assert code == 0, out + err
    assert layout.config.read_text().startswith('<Sysmon schemaversion="4.91">')
    assert layout.rules.read_bytes() == b""
    pid = int(layout.pidfile.read_text())
    layout.rules.unlink()
    code, out, _ = run(root, "-nologo", "-u")
    assert code == 87 and "incomplete" in out and Path(f"/proc/{pid}").exists()
    code, out, _ = run(root, "-nologo", "-u", "force")
    assert code == 0 and out.startswith("Sysmon stopped.\nSysmon removed.\nKept ")
    assert [p.name for p in root.iterdir()] == ["var"]  # the sensor's state only


def test_install_failure_reports_the_log(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    root = tmp_path / "root"
    code, out, err = run(root, "-nologo", "-i", "--backend", "no-such-backend",
                         "--output-file", str(tmp_path / "e.xml"))
    try:
        assert code == 1 and "Error: the service exited" in out
        assert "invalid choice: 'no-such-backend'" in out
    finally:
        assert run(root, "-nologo", "-u", "force")[0] == 0
    assert not root.exists()  # the install created it, so -u removed it


FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >> "$FAKE_SYSTEMD_LOG"
case "$1" in
  is-active) [ -f "$FAKE_SYSTEMD_ACTIVE" ] && exit 0 || exit 3 ;;
  enable) [ "$2" = "--now" ] && touch "$FAKE_SYSTEMD_ACTIVE" ;;
  disable) [ "$2" = "--now" ] && rm -f "$FAKE_SYSTEMD_ACTIVE" ;;
esac
exit 0
"""


def test_systemd_mode_commands(tmp_path, monkeypatch):
    """The systemd path, with a stand-in systemctl that records its calls."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "systemctl"
    fake.write_text(FAKE_SYSTEMCTL)
    fake.chmod(0o755)
    log, active = tmp_path / "calls", tmp_path / "active"
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SYSTEMD_LOG", str(log))
    monkeypatch.setenv("FAKE_SYSTEMD_ACTIVE", str(active))
    monkeypatch.setenv("SYSMONX_SERVICE_MODE", "systemd")
    root = tmp_path / "root"
    conf = tmp_path / "c.xml"
    conf.write_text(CONFIG1)
    code, out, err = run(root, "-nologo", "-i", str(conf))
    assert code == 0, out + err
    layout = Layout(root)
    assert not layout.pidfile.exists() and "--syslog" in layout.unit.read_text()
    assert log.read_text().splitlines() == ["daemon-reload", "enable --now sysmonx.service"]
    code, out, _ = run(root, "-nologo", "-c")
    assert code == 0 and "onmatch: include" in out
    conf.write_text(CONFIG2)
    assert run(root, "-nologo", "-c", str(conf))[0] == 0
    assert log.read_text().splitlines()[-2:] == ["is-active --quiet sysmonx.service",
                                                 "reload sysmonx.service"]
    code, out, _ = run(root, "-nologo", "-u")
    assert code == 0 and out == "Sysmon stopped.\nSysmon removed.\n"
    assert log.read_text().splitlines()[-3:] == ["is-active --quiet sysmonx.service",
                                                 "disable --now sysmonx.service", "daemon-reload"]
    assert not root.exists() and not active.exists()
    code, out, _ = run(root, "-nologo", "-c")
    assert (code, out) == (87, "Sysmon is not running\n")


def test_install_over_an_installation_is_refused(service_root, tmp_path):
    """A new user's report: -i silently replaced a running service (and left the host
    unmonitored when the new settings failed). Sysmon refuses; so does SysmonX."""
    root, backend, events = service_root
    layout = Layout(root)
    args = ("-nologo", "-i", "--output-file", str(events), "--backend", backend, "--no-dns")
    assert run(root, *args)[0] == 0
    first = int(layout.pidfile.read_text())
    code, out, err = run(root, *args)
    assert code == 87 and "already installed" in out + err
    assert int(layout.pidfile.read_text()) == first and Path(f"/proc/{first}").exists()
    assert run(root, "-nologo", "-u")[0] == 0
    assert [p.name for p in root.iterdir()] == ["var"]  # the sensor's state only


def test_daemon_restart_after_kill_and_reinstall_keep_heartbeat_history(service_root):
    """New-user report s11 #7 and #8: the daemon's event file was 0644 (the installer's umask),
    nothing documented started a daemon again after a kill -9 (``-c`` said "applies when it
    starts"), and ``-u`` + ``-i`` deleted the state: the next heartbeat said Sequence 1,
    SecondsSincePrevious 0."""
    import signal
    root, backend, events = service_root
    layout = Layout(root)
    old = os.umask(0o022)  # an ordinary admin's umask
    try:
        args = ("-nologo", "-i", "--output-file", str(events), "--backend", backend, "--no-dns")
        code, out, err = run(root, *args)
        assert code == 0, out + err
    finally:
        os.umask(old)
    assert events.stat().st_mode & 0o777 == 0o600
    pid = int(layout.pidfile.read_text())
    first = _wait_for(events, lambda e: e[0] == 202)
    assert first and first[0][1]["Sequence"] == "1"
    os.kill(pid, signal.SIGKILL)
    while Path(f"/proc/{pid}").exists() and \
            Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z":
        time.sleep(0.05)
    code, out, err = run(root, "-nologo", "-c", "--")
    assert code == 0, out + err
    assert "the service was not running; starting it" in err
    pid2 = int(layout.pidfile.read_text())
    assert pid2 != pid and f"Sysmon started (pid {pid2}).\n" in out
    found = _wait_for(events, lambda e: e[0] == 201 and e[1]["Technique"] == "unclean_shutdown")
    assert found and f"previous run (pid {pid}," in found[0][1]["Details"]
    hbs = _wait_for(events, lambda e: e[0] == 202 and e[1]["Sequence"] == "2")
    assert hbs
    code, out, _ = run(root, "-nologo", "-u")
    assert code == 0 and "Kept " in out
    assert run(root, *args)[0] == 0
    hb = _wait_for(events, lambda e: e[0] == 202 and e[1]["Sequence"] == "4")
    assert hb, [e for e in _events(events) if e[0] == 202]  # 3: the stop's; 4: the new start's


def test_syslog_problem_tells_a_missing_or_deaf_socket_from_a_daemon(tmp_path):
    """``-i`` without ``--output-file`` warns when no syslog daemon receives at /dev/log (a new
    user got "Sysmon started." while every event was being lost)."""
    import socket
    from sysmonx.service import syslog_problem
    missing = tmp_path / "log"
    assert "does not exist" in syslog_problem(str(missing))
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(str(missing))
    assert syslog_problem(str(missing)) is None
    srv.close()  # the path stays, nobody receives: connection refused
    assert "no syslog daemon receives at" in syslog_problem(str(missing))
    plain = tmp_path / "file"
    plain.write_text("")
    assert "no syslog daemon receives at" in syslog_problem(str(plain))
