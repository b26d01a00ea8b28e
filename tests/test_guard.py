"""The sensor guard without a kernel: state file, heartbeat sequence, unclean shutdown, the
install manifest, config/output/clock/preload checks (driven directly), the trace line parser."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("the sensor guard is Linux-only", allow_module_level=True)

from sysmonx.sensor import guard as guard_mod
from sysmonx.sensor.assemble import Assembler
from sysmonx.sensor.guard import GuardOptions, SensorGuard, read_state
from sysmonx.sensor.process import ProcessCache


def make(tmp_path=None, *, backend: str = "cnproc", backends=(), on_status=None,
         **kw) -> SensorGuard:
    """A guard without its trace, checking every 0.05 s unless ``kw`` says otherwise
    (``kw``: :class:`GuardOptions` fields); ``tmp_path`` is not used (the state directory,
    when any, is ``kw["state_dir"]``). Also used by test_guard_newuser_s13.py."""
    opts = GuardOptions(**{"trace": False, "poll_s": 0.05, **kw})
    return SensorGuard(opts, Assembler(ProcessCache()), backend=backend,
                       config_hash="SHA256=abc", backends=backends, on_status=on_status)


def said_guard(**kw) -> tuple[SensorGuard, list]:
    """:func:`make` with its status lines kept: ``(guard, the lines it said)``."""
    said: list = []
    return make(on_status=said.append, **kw), said


def findings_details(g) -> list:
    """The Details of the findings (201) the guard queued since the last drain."""
    return [e.data["Details"] for e in g.drain() if e.event_id == 201]


def techniques(events):
    return [(e.event_id, e.data.get("Technique")) for e in events]


def test_heartbeats_continue_across_clean_restart(tmp_path):
    st = tmp_path / "st"
    g = make(tmp_path, state_dir=str(st), heartbeat_s=3600)
    g.counters = lambda: (10, 2, {})
    first = g.start()
    assert techniques(first) == [(202, None)]
    hb = first[0]
    assert hb.data["Sequence"] == "1" and hb.data["EventsWritten"] == "10"
    assert hb.data["EventsLost"] == "2" and hb.data["Backend"] == "cnproc"
    assert hb.data["ConfigurationFileHash"] == "SHA256=abc"
    assert hb.provider == "Linux-Sysmon" and hb.version == 1 and hb.level == 4
    assert read_state(str(st)).running is True
    g.counters = lambda: (25, 2, {})
    last = g.finish()
    assert [e.data["Sequence"] for e in last] == ["2"]
    assert last[0].data["EventsWritten"] == "15" and last[0].data["EventsLost"] == "0"
    g.mark_clean()
    state = read_state(str(st))
    assert (state.sequence, state.running) == (2, False)
    assert oct((st / "state.json").stat().st_mode & 0o777) == "0o600"
    assert oct(st.stat().st_mode & 0o777) == "0o700"
    g2 = make(tmp_path, state_dir=str(st), heartbeat_s=3600)
    ev = g2.start()
    assert techniques(ev) == [(202, None)] and ev[0].data["Sequence"] == "3"
    g2.close()


def test_unclean_shutdown_carries_the_last_sequence(tmp_path):
    st = tmp_path / "st"
    g = make(tmp_path, state_dir=str(st), heartbeat_s=3600)
    g.start()
    g.close()  # no finish/mark_clean: as after kill -9
    g2 = make(tmp_path, state_dir=str(st), heartbeat_s=3600)
    ev = g2.start()
    assert techniques(ev) == [(201, "unclean_shutdown"), (202, None)]
    assert f"pid {os.getpid()}" in ev[0].data["Details"]
    assert "its last heartbeat was sequence 1 at" in ev[0].data["Details"]
    assert ev[1].data["Sequence"] == "2"
    g2.close()


def test_second_sensor_on_a_live_state_dir_keeps_no_state(tmp_path):
    """New-user report s11 #1: a manual sensor started beside the service with the same state
    directory reported the live service as an unclean shutdown, numbered its heartbeats from
    the service's counter (the service then wrote Sequence 424 twice) and left the file saying
    ``running: false`` for the live service."""
    st = tmp_path / "st"
    svc = make(tmp_path, state_dir=str(st), heartbeat_s=3600)
    svc.counters = lambda: (0, 0, {})
    assert svc.start()[0].data["Sequence"] == "1"
    svc._seq = 423  # the service's counter, as in the report
    svc._heartbeat(time.time_ns())
    said = []
    manual = make(tmp_path, state_dir=str(st), heartbeat_s=3600)
    manual.on_status = said.append
    ev = manual.start()
    assert techniques(ev) == [(202, None)]  # no unclean_shutdown about the live service
    assert ev[0].data["Sequence"] == "1" and ev[0].data["SecondsSincePrevious"] == "0"
    assert "another sensor (pid " in manual.state_note and "keeps the state" in manual.state_note
    assert any(m.startswith("guard: another sensor") for m in said)
    manual.finish()
    manual.mark_clean()
    state = read_state(str(st))
    assert (state.sequence, state.running, state.pid) == (424, True, os.getpid())
    assert [e.data["Sequence"] for e in svc.finish()] == ["424", "425"]
    svc.mark_clean()
    assert read_state(str(st)).sequence == 425
    again = make(tmp_path, state_dir=str(st), heartbeat_s=3600)  # the owner stopped: it may
    assert again.start()[0].data["Sequence"] == "426"
    again.close()


def test_state_lock_held_by_a_non_sensor_is_a_finding_and_the_state_is_still_read(tmp_path):
    """Review S #1: after a kill -9, any process holding state.lock turned the unclean-shutdown
    check off, restarted the heartbeat Sequence at 1 and the message named the dead sensor's
    pid as the holder. Now the state is read (not written), the dead run is an
    unclean_shutdown and a state_lock_held finding names the real holder."""
    import subprocess
    st = tmp_path / "st"
    st.mkdir(mode=0o700)
    dead = subprocess.Popen(["true"])
    dead.wait()
    before = {"sequence": 41, "running": True, "pid": dead.pid,
              "started": "2026-12-07 10:00:00.000", "last_heartbeat": "2026-12-07 10:05:00.000",
              "last_heartbeat_ns": time.time_ns() - 300 * 10**9}
    (st / "state.json").write_text(json.dumps(before))
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl,os,sys,time; fd=os.open(sys.argv[1], os.O_RDWR|os.O_CREAT, 0o600); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
         str(st / "state.lock"), "\x1b[2Jhidden"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        said = []
        g = make(tmp_path, state_dir=str(st), heartbeat_s=3600)
        g.on_status = said.append
        ev = g.start()
        assert techniques(ev) == [(201, "state_lock_held"), (201, "unclean_shutdown"),
                                  (202, None)]
        held = ev[0].data["Details"]
        assert f"is held by pid {holder.pid} (command line " in held
        assert f"pid {dead.pid}" not in held
        assert "\x1b" not in held and "\\u001b[2Jhidden" in held  # made visible
        assert ev[0].data["ProcessId"] == str(holder.pid)
        assert f"previous run (pid {dead.pid}," in ev[1].data["Details"]
        assert "its last heartbeat was sequence 41" in ev[1].data["Details"]
        assert ev[2].data["Sequence"] == "42"
        assert 290 <= int(ev[2].data["SecondsSincePrevious"]) <= 400
        assert any(m.startswith(f"guard: {st}/state.lock is held by pid {holder.pid}")
                   for m in said)
        g.finish()
        g.mark_clean()
        # read, never written: the file the holder guards is as it was
        assert json.loads((st / "state.json").read_text()) == before
    finally:
        holder.kill()
        holder.wait()


def test_state_file_records_the_start_time_of_its_writer(tmp_path):
    st = tmp_path / "st"
    g = make(tmp_path, state_dir=str(st), heartbeat_s=3600)
    g.start()
    with open("/proc/self/stat", "rb") as f:
        raw = f.read()
    ticks = int(raw[raw.rindex(b")") + 2:].split()[19])
    assert read_state(str(st)).start_ticks == ticks
    g.close()


def test_damaged_state_file_is_a_finding(tmp_path):
    st = tmp_path / "st"
    st.mkdir()
    (st / "state.json").write_text("{not json")
    g = make(tmp_path, state_dir=str(st), heartbeat_s=3600)
    ev = g.start()
    assert techniques(ev)[0] == (201, "self_modified")
    assert ev[-1].data["Sequence"] == "1"
    g.close()


def test_install_manifest(tmp_path):
    f = tmp_path / "mod.py"
    f.write_text("x = 1\n")
    good = hashlib.sha256(f.read_bytes()).hexdigest()
    man = tmp_path / "manifest.json"
    man.write_text(json.dumps({"files": {str(f): good}}))
    g = make(tmp_path, install_manifest=str(man), heartbeat_s=0)
    assert g.start() == []
    g.close()
    f.write_text("x = 2  # patched\n")
    g = make(tmp_path, install_manifest=str(man), heartbeat_s=0)
    ev = g.start()
    assert techniques(ev) == [(201, "self_modified")] and str(f) in ev[0].data["Details"]
    g.close()


def test_python_startup_files_in_the_manifest_and_new_ones_reported(tmp_path):
    """New-user report s11 #6: a .pth dropped into site-packages ran its code inside the
    service (``python -I`` does not stop ``site``) and nothing reported it: the manifest held
    the interpreter and the sysmonx package only."""
    from sysmonx import service
    site_dir = tmp_path / "site-packages"
    site_dir.mkdir()
    (site_dir / "distutils-precedence.pth").write_text("import os\n")
    (site_dir / "lib.py").write_text("")
    layout = service.Layout(tmp_path / "root")
    real_dirs = service.startup_dirs
    try:
        service.startup_dirs = lambda: [site_dir]
        service._write_manifest(layout, [])
    finally:
        service.startup_dirs = real_dirs
    man = json.loads(layout.manifest.read_text())
    assert man["startup_dirs"] == [str(site_dir)]
    assert str(site_dir / "distutils-precedence.pth") in man["files"]
    assert str(site_dir / "lib.py") not in man["files"]
    g = make(tmp_path, install_manifest=str(layout.manifest), heartbeat_s=0)
    assert g.start() == []
    g.close()
    evil = site_dir / "zz_nu11.pth"
    evil.write_text("import os; open('/tmp/ran', 'a')\n")
    (site_dir / "sitecustomize.py").write_text("")
    (site_dir / "distutils-precedence.pth").write_text("import os; os.system('id')\n")
    g = make(tmp_path, install_manifest=str(layout.manifest), heartbeat_s=0)
    ev = g.start()
    g.close()
    assert techniques(ev) == [(201, "self_modified"), (201, "preload_hook")]
    assert ev[0].data["Details"].endswith(str(site_dir / "distutils-precedence.pth"))
    assert ev[1].data["Details"] == (
        "2 Python start-up file(s) not in the install manifest (run in the sensor at start): "
        f"{site_dir / 'sitecustomize.py'}, {evil}")
    # the real interpreter's site-packages are where the manifest looks
    assert service.startup_dirs() and all(d.name in ("site-packages", "dist-packages")
                                          for d in service.startup_dirs())


def test_startup_file_names_are_made_visible_and_an_old_manifest_is_said(tmp_path):
    """Review S #7: start-up file names went into the finding as they were (a name may hold
    terminal controls), and a manifest written before startup_dirs was silently unchecked."""
    site_dir = tmp_path / "site-packages"
    site_dir.mkdir()
    (site_dir / "a\x1b[2K\u202ehtp.pth").write_text("import os\n")
    man = tmp_path / "manifest.json"
    man.write_text(json.dumps({"files": {}, "startup_dirs": [str(site_dir)]}))
    g = make(tmp_path, install_manifest=str(man), heartbeat_s=0)
    ev = g.start()
    g.close()
    assert techniques(ev) == [(201, "preload_hook")]
    assert ev[0].data["Details"].endswith(f"{site_dir}/a\\u001b[2K\\u202ehtp.pth")
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"files": {}}))
    said = []
    g = make(tmp_path, install_manifest=str(old), heartbeat_s=0)
    g.on_status = said.append
    assert g.start() == []
    g.close()
    assert said == [f"guard: install manifest {old} has no startup_dirs (written before "
                    "2026-12-07): Python start-up files (.pth, sitecustomize) added since install "
                    "are not checked; run sysmonx -i again to record them"]


@pytest.fixture
def config_guard(tmp_path):
    """A started guard watching ``c.xml`` (``<Sysmon/>``, its hash given) with a 0.2 s grace:
    ``(config file, its SHA-256 hex, guard)``; the guard is closed after the test."""
    cfg = tmp_path / "c.xml"
    cfg.write_bytes(b"<Sysmon/>")
    h = hashlib.sha256(b"<Sysmon/>").hexdigest()
    g = make(tmp_path, config_path=str(cfg), heartbeat_s=0, config_grace_s=0.2)
    g.config_hash = f"SHA256={h}"
    g.start()
    yield cfg, h, g
    g.close()


def wait_config_modified(g: SensorGuard) -> None:
    """Wait (at most 5 s) for the guard's ``config_modified`` finding."""
    deadline = time.monotonic() + 5
    while not g.findings.get("config_modified") and time.monotonic() < deadline:
        time.sleep(0.05)


def test_config_modified_after_grace_and_reload_clears(config_guard):
    cfg, h, g = config_guard
    cfg.write_bytes(b"<Sysmon><!-- x --></Sysmon>")
    wait_config_modified(g)
    ev = g.drain()
    assert techniques(ev) == [(201, "config_modified")]
    new = hashlib.sha256(b"<Sysmon><!-- x --></Sysmon>").hexdigest()
    assert f"SHA256={new}" in ev[0].data["Details"] and f"SHA256={h}" in ev[0].data["Details"]
    g.config_reloaded(f"SHA256={new}")
    time.sleep(0.5)
    assert g.drain() == []


def test_config_modified_after_a_refused_reload_says_the_reload_was_refused(config_guard):
    """Found by a new user: after ``kill -HUP`` with a broken config (refused, event 255
    ``ConfigReload``), the finding said the file changed "without a reload". It now names the
    refusal; a later edit of the file is again "without a reload"."""
    cfg, _, g = config_guard
    cfg.write_bytes(b"<Sysmon><broken></Sysmon>")
    g.config_reload_refused("configuration not applied: c.xml:1: mismatched tag")

    def finding():
        wait_config_modified(g)
        g.findings.pop("config_modified", None)
        return g.drain()
    ev = finding()
    assert techniques(ev) == [(201, "config_modified")]
    details = ev[0].data["Details"]
    assert ") and a reload was refused: configuration not applied: c.xml:1: mismatched tag" \
        in details   # separated from the hash (a new user found them run together)
    assert "without a reload" not in details
    time.sleep(0.05)  # a different mtime
    cfg.write_bytes(b"<Sysmon><!-- edited again --></Sysmon>")
    ev = finding()
    assert techniques(ev) == [(201, "config_modified")]
    assert "without a reload" in ev[0].data["Details"]


def test_output_removed_and_clock_jump(tmp_path, monkeypatch):
    out = tmp_path / "o.xml"
    out.write_text("")
    g = make(tmp_path, outputs=(str(out),), heartbeat_s=0)
    g.start()
    g._stop.set()  # drive the checks by hand
    g._thread.join()
    out.unlink()
    g._output_check()
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() + 3_600_000_000_000)
    g._clock_check()
    ev = g.drain()
    assert techniques(ev) == [(201, "output_blocked"), (201, "clock_changed")]
    assert ev[0].data["Details"] == f"output {out} was removed"
    assert ev[1].data["Details"].startswith("wall clock jumped +3600.")
    # an output failing: one finding per failure episode of the output
    # (test_fleet_admin_s13.py, test_guard_writes_one_output_blocked_finding_per_episode...)


def test_preload_file_created_changed_removed(tmp_path, monkeypatch):
    pre = tmp_path / "ld.so.preload"
    monkeypatch.setattr(guard_mod, "PRELOAD_PATH", str(pre))
    g = make(tmp_path, heartbeat_s=0)
    g.start()
    g._stop.set()
    g._thread.join()
    pre.write_text("/tmp/evil.so\n")
    g._preload_check()
    pre.write_text("/tmp/evil.so /tmp/evil2.so\n")
    g._preload_check()
    pre.unlink()
    g._preload_check()
    assert [e.data["Details"] for e in g.drain()] == [
        f"{pre} created: /tmp/evil.so", f"{pre} changed: /tmp/evil.so, /tmp/evil2.so",
        f"{pre} removed (was: /tmp/evil.so, /tmp/evil2.so)"]


def test_trace_line_parsing():
    from sysmonx.sensor.guard import _ENTER, _EXIT, _LINE, _SIG
    sig = ("            bash-19760   (  19760) [001] d..1. 12624.234568: signal_generate: sig=19 "
           "errno=0 code=0 comm=sysmonx pid=19769 grp=1 res=0")
    m = _LINE.match(sig)
    assert (m["comm"].strip(), m["tid"], m["tgid"], m["secs"], m["usecs"]) == \
        ("bash", "19760", "19760", "12624", "234568")
    s = _SIG.search(m["rest"])
    assert (s[1], s[4], s[5], s[7]) == ("19", "sysmonx", "19769", "0")
    enter = ("   bpftool-19768   (  19768) [001] ..... 12624.234192: sys_bpf(cmd: 0xe, "
             "uattr: 0x7ffebbfe9800, size: 0x90)")
    assert _ENTER.match(_LINE.match(enter)["rest"])[1] == "e"
    ext = "   bpftool-19768   (  19768) [001] ..... 12624.234200: sys_bpf -> 0xfffffffffffffffe"
    assert int(_EXIT.match(_LINE.match(ext)["rest"])[1], 16) - (1 << 64) == -2


def test_a_library_is_judged_by_who_can_replace_it_not_by_its_path(tmp_path):
    """SysmonX installed under /tmp (root's own directories) is not a preload hook (a fresh
    clone under /tmp turned every extension module into a finding); a library another user
    owns or can replace is."""
    import os
    import stat
    from sysmonx.sensor.guard import replaceable_by_others
    base = tmp_path / "venv" / "lib"
    base.mkdir(parents=True)
    lib = base / "mod.so"
    lib.write_bytes(b"\x7fELF")
    os.chmod(tmp_path / "venv", 0o755)
    os.chmod(base, 0o755)
    os.chmod(lib, 0o644)
    assert replaceable_by_others(str(lib)) is None
    os.chmod(lib, 0o666)
    assert replaceable_by_others(str(lib)) == "writable by anyone"
    os.chmod(lib, 0o644)
    os.chmod(base, 0o777)
    assert replaceable_by_others(str(lib)) == f"in {base}, writable by anyone"
    os.chmod(base, 0o1777)  # sticky, like /tmp: the entry's owner decides
    assert replaceable_by_others(str(lib)) is None
    if os.geteuid() == 0:
        os.chown(lib, 65534, 65534)
        assert replaceable_by_others(str(lib)) == "owned by uid 65534"
        os.chown(lib, 0, 0)
        os.chmod(base, 0o755)
        os.chown(base, 65534, 0)
        assert replaceable_by_others(str(lib)) == f"in {base}, owned by uid 65534"
        os.chown(base, 0, 0)
    assert replaceable_by_others(str(base / "gone.so")) is None
    assert stat.S_IMODE(os.stat(lib).st_mode) == 0o644


def test_checks_run_every_poll_s_not_at_every_trace_wake_up(tmp_path):
    """A host busy with bpf() calls wakes the guard's trace reader many times a second; the
    checks must still run once per poll_s (they ran at every wake-up: 1.5 % of a core)."""
    g = make(poll_s=0.2)
    runs = []
    for name in ("_tracer_check", "_config_check", "_clock_check", "_output_check",
                 "_resolve_deferred", "_preload_check", "_integrity_check"):
        setattr(g, name, lambda n=name: runs.append(n))

    class BusyTrace:
        wakes = 0

        def poll(self, timeout_s):
            BusyTrace.wakes += 1
            time.sleep(min(timeout_s, 0.002))  # a trace line arrives every 2 ms

    g._trace = BusyTrace()
    t0 = time.monotonic()
    import threading
    th = threading.Thread(target=g._run, daemon=True)
    th.start()
    time.sleep(1.0)
    g._stop.set()
    th.join(5)
    elapsed = time.monotonic() - t0
    turns = runs.count("_tracer_check")
    assert BusyTrace.wakes > 50  # the trace was read at every wake-up
    assert 1 <= turns <= elapsed / 0.2 + 2, (turns, BusyTrace.wakes)


def test_sigcont_is_said_as_what_it_did_not_as_ignored():
    """A new user's SIGSTOP/SIGCONT of the sensor: the SIGCONT finding ended in ', ignored'
    although it resumed the sensor (the kernel resumes on sending, then discards SIGCONT)."""
    from sysmonx.sensor.guard import _signal_result
    assert _signal_result(18, 1).startswith("resumed it if it was stopped")
    assert _signal_result(19, 0) == "delivered"
    assert _signal_result(15, 1) == "ignored"  # a signal the sensor really ignores
    assert _signal_result(9, 7) == "result 7"


# -- SIGHUP: an applied reload is a configuration change, not a tamper finding -------------------

def _hup_guard(tmp_path):
    return said_guard(heartbeat_s=0)



def test_sighup_answered_by_an_applied_reload_is_no_finding_in_either_order(tmp_path):
    """A new user's own SIGHUPs (each one applied) were reported as sensor_signal tamper
    findings. The trace line can be read before or after the loop applied the reload."""
    g, said = _hup_guard(tmp_path)
    now = time.time_ns()
    g.sighup(4242, "SIGHUP sent to the sensor (pid 1) by pid 4242 (systemctl), delivered", now)
    g.config_reloaded("SHA256=def")
    time.sleep(0.2)
    g.config_reloaded("SHA256=fed")  # the second reload, before its SIGHUP's trace line
    g.sighup(4243, "SIGHUP sent to the sensor (pid 1) by pid 4243 (bash), delivered",
             time.time_ns() - 1_000_000)
    assert findings_details(g) == [] and g.findings == {}
    assert g.reloads_by_signal == 2
    assert said[0] == ("guard: SIGHUP sent to the sensor (pid 1) by pid 4242 (systemctl), "
                       "delivered: a configuration reload, applied (SHA256=def; event 16), "
                       "not a tamper finding")
    assert "(SHA256=fed; event 16)" in said[1]
    assert "configuration reloads by SIGHUP 2 (event 16, not findings)" in g.summary()


def test_sighup_with_a_refused_reload_stays_a_finding_that_says_so(tmp_path):
    g, said = _hup_guard(tmp_path)
    sent = time.time_ns()
    g.config_reload_refused("c.xml:3: XML error: expected '>'")
    g.sighup(77, "SIGHUP sent to the sensor (pid 1) by pid 77 (sh), delivered", sent)
    g._resolve_deferred(force=True)
    (d,) = findings_details(g)
    assert d == ("SIGHUP sent to the sensor (pid 1) by pid 77 (sh), delivered; the "
                 "configuration reload it asked for was refused (event 255 ConfigReload), the "
                 "one in force (SHA256=abc) stays: c.xml:3: XML error: expected '>'")
    assert g.findings == {"sensor_signal": 1} and g.reloads_by_signal == 0
    # said at once on stderr, as an applied one is (a new user saw it only in the exit counts)
    assert said == ["guard: SIGHUP sent to the sensor (pid 1) by pid 77 (sh), delivered: a "
                    "configuration reload, refused (event 255); a sensor_signal finding (event "
                    "201)"]


def test_sighup_no_reload_followed_is_a_finding(tmp_path, monkeypatch):
    """A SIGHUP that no reload answers (an older reload does not count) becomes a finding after
    HUP_WAIT_S, or at the end of the run."""
    monkeypatch.setattr(guard_mod, "HUP_WAIT_S", 0.1)
    g, _ = _hup_guard(tmp_path)
    g.config_reloaded("SHA256=old")  # applied before the signal was sent: not its answer
    time.sleep(0.06)
    g.sighup(5, "SIGHUP sent to the sensor (pid 1) by pid 5 (x), delivered", time.time_ns())
    assert findings_details(g) == []
    time.sleep(0.15)
    g._answer_hups()
    g._resolve_deferred(force=True)
    assert findings_details(g) == ["SIGHUP sent to the sensor (pid 1) by pid 5 (x), delivered; no "
                            "configuration reload followed within 0.1 s"]
    g.sighup(6, "SIGHUP sent to the sensor (pid 1) by pid 6 (x), delivered", time.time_ns())
    g.finish()
    assert g.findings == {"sensor_signal": 2}


def test_one_applied_reload_answers_one_sighup_only(tmp_path, monkeypatch):
    """Found in review: a reload's outcome answered every SIGHUP sent up to 50 ms after it, so
    a second sender's SIGHUP right after an admin's applied reload was cleared by that reload
    too. Each outcome now answers one signal; the other stays a finding that names its sender."""
    monkeypatch.setattr(guard_mod, "HUP_WAIT_S", 0.1)
    g, said = _hup_guard(tmp_path)
    now = time.time_ns()
    g.sighup(4242, "SIGHUP sent to the sensor (pid 1) by pid 4242 (systemctl), delivered", now)
    g.config_reloaded("SHA256=def")
    g.sighup(6666, "SIGHUP sent to the sensor (pid 1) by pid 6666 (implant), delivered",
             now + 1_000_000)
    time.sleep(0.15)
    g._answer_hups()
    g._resolve_deferred(force=True)
    assert g.reloads_by_signal == 1 and len(said) == 1 and "pid 4242" in said[0]
    assert findings_details(g) == ["SIGHUP sent to the sensor (pid 1) by pid 6666 (implant), "
                            "delivered; no configuration reload followed within 0.1 s"]


def test_trace_line_sighup_goes_to_the_reload_match_other_signals_stay_findings(tmp_path):
    """The trace parser hands a delivered SIGHUP to :meth:`SensorGuard.sighup`; SIGUSR1 and an
    ignored SIGHUP are findings at once."""
    g, _ = _hup_guard(tmp_path)
    got: list = []
    g.sighup = lambda pid, text, when: got.append((pid, text))
    tr = trace_for(g)
    for sig, res in ((1, 0), (10, 0), (1, 1)):
        tr._line(f"           bash-900     (    900) [001] d..1. 12345.678901: "
                 f"signal_generate: sig={sig} errno=0 code=0 comm=sysmonx pid=1 grp=1 "
                 f"res={res}")
    assert [p for p, _ in got] == [900]
    g._resolve_deferred(force=True)
    assert [d.split(" sent")[0] for d in findings_details(g)] == ["SIGUSR1", "SIGHUP"]


def trace_for(g):
    """The guard's trace reader without tracefs: lines are fed to it by hand (``_feed``,
    ``_line``); a thread is its own thread group unless the line printed the group."""
    tr = guard_mod._GuardTrace.__new__(guard_mod._GuardTrace)
    tr.guard, tr.stats, tr._pending, tr._carry = g, {"signals": 0, "lines": 0, "bpf": 0}, {}, ""

    class TF:
        @staticmethod
        def thread_group(tid, printed):
            return printed or tid

    tr.tf = TF()
    return tr


def test_a_newline_in_the_senders_comm_neither_breaks_nor_forges_the_actor(tmp_path):
    """tracefs prints comms raw: a sender named "a\\npid=1 grp=1 r" (prctl PR_SET_NAME) cut its
    signal's line in two (bytes as trace_pipe gave them on this kernel); the parser took the
    second piece alone, so the Details named the process "pid=1 grp=1 r". The line is joined
    again and the name is written with its newline visible; the actor is the header's pid."""
    g, _ = _hup_guard(tmp_path)
    got: list = []
    g.sighup = lambda pid, text, when: got.append((pid, text))
    tr = trace_for(g)
    for line in ("               a",
                 "pid=1 grp=1 r-9212    (   9212) [000] d..1. 12111.247011: signal_generate: "
                 "sig=1 errno=0 code=0 comm=sysmonx pid=77 grp=1 res=0",
                 # two newlines, and a fake header the 15 bytes cannot complete
                 "   x", "-1 (1) [0]", "-9213    (   9213) [001] d..1. 12111.3: "
                 "signal_generate: sig=1 errno=0 code=0 comm=sysmonx pid=77 grp=1 res=0"):
        tr._feed(line)
    assert got == [(9212, "SIGHUP sent to the sensor (pid 77) by pid 9212 "
                          "(a\\u000apid=1 grp=1 r), delivered"),
                   (9213, "SIGHUP sent to the sensor (pid 77) by pid 9213 "
                          "(x\\u000a-1 (1) [0]\\u000a), delivered")]


def test_a_newline_in_the_sensors_own_comm_does_not_hide_a_signal(tmp_path):
    """Root can rename the sensor (/proc/PID/comm) so that the target's comm cuts every signal
    line: the signal's fields are then on the next line; before, the first piece did not parse
    and the signal was never reported."""
    g, _ = _hup_guard(tmp_path)
    tr = trace_for(g)
    tr._feed("            bash-900     (    900) [001] d..1. 12345.678901: signal_generate: "
             "sig=10 errno=0 code=0 comm=x")
    tr._feed("y pid=1 grp=1 res=0")
    g._resolve_deferred(force=True)
    assert findings_details(g) == ["SIGUSR1 sent to the sensor (pid 1) by pid 900 (bash), delivered"]


class _CountingLine:
    """``_LINE`` with its matches counted."""

    def __init__(self) -> None:
        self.calls = 0

    def match(self, text):
        self.calls += 1
        return _REAL_LINE.match(text)


_REAL_LINE = guard_mod._LINE


def test_each_trace_line_header_is_matched_once(tmp_path, monkeypatch):
    """Found measuring tier A (session 11): joining lines cut by a comm's newline made every
    trace line's header be matched twice (once to see that the line is whole, once to handle
    it) and the sender's name made visible for every line, also for the exits of bpf() calls
    whose entry was not traced (most lines). A line is now parsed once; a cut signal line still
    waits for its end (the tests above)."""
    g, _ = _hup_guard(tmp_path)
    tr = trace_for(g)
    counting = _CountingLine()
    monkeypatch.setattr(guard_mod, "_LINE", counting)
    shown: list = []
    real_visible = guard_mod.visible
    monkeypatch.setattr(guard_mod, "visible", lambda t: shown.append(t) or real_visible(t))
    lines = ["    sysmonx-ebpf-14894   (  14200) [000] ..... 22916.781925: sys_bpf -> 0x0",
             " sysmonx-ebpfvis-14961   (  14200) [001] ..... 22916.881171: sys_bpf -> 0x0",
             "            bpftool-700     (    700) [001] ..... 22916.9: sys_bpf(cmd: 0x1, "
             "uattr: 0x7ffd0000, size: 0x20)"]
    for line in lines:
        tr._feed(line)
    assert counting.calls == len(lines)
    assert shown == []  # no name written: nothing was reported
    assert tr._pending == {700: (1, 700)}


def test_a_loaded_program_is_named_through_the_loaders_fd_without_a_walk(monkeypatch):
    """Found measuring tier A: naming another process's program (event 100) listed all of the
    loader's descriptors (readlink and fdinfo of each: about 0.6-1 ms for a loader with 55,
    another sensor) before it tried the fd the load returned. The fd is tried first, and a
    link of a program its process loaded is named through the fd of that load; the
    descriptors are walked only when that fd does not hold the program."""
    walked: list = []
    copies: list = []
    monkeypatch.setattr(guard_mod.bpfsys, "prog_fds_of",
                        lambda pid, prog_id: walked.append((pid, prog_id)) or [9])
    progs = {(4321, 17): {"id": 77, "type_name": "kprobe", "name": "p"},
             (4321, 9): {"id": 78, "type_name": "kprobe", "name": "q"}}

    def prog_info_in(pid, fd):
        copies.append((pid, fd))
        return progs.get((pid, fd))

    monkeypatch.setattr(guard_mod.bpfsys, "prog_info_in", prog_info_in)
    monkeypatch.setattr(guard_mod.bpfsys, "fdinfo",
                        lambda pid, fd: {"prog_id": {17: "77", 30: "77", 31: "78"}[fd]})
    events: list = []

    class G:
        run_file = None
        pid = 1

        @staticmethod
        def own_bpf_ids():
            return set(), set(), set()

        class assembler:
            @staticmethod
            def envelope(eid, data, when):
                return data

        @staticmethod
        def queue_event(ev, pid):
            events.append(ev)

    tr = guard_mod._GuardTrace.__new__(guard_mod._GuardTrace)
    tr.guard, tr._prog_hi, tr._loaded = G(), 0, {}
    tr._event100(5, 17, 4321, 0)           # BPF_PROG_LOAD returned fd 17
    tr._event100(28, 30, 4321, 0)          # BPF_LINK_CREATE of that program
    assert walked == [] and copies == [(4321, 17), (4321, 17)]
    tr._event100(28, 31, 4321, 0)          # a link of a program this load did not make
    assert walked == [(4321, 78)] and copies[-1] == (4321, 9)
    assert [e["BpfProgramId"] for e in events] == ["77", "77", "78"]


# -- config_weakened: an applied reload that collects less ---------------------------------------

_DARK = "not logged any more: ProcessCreate (1)"


def _weakened(g) -> list:
    g._resolve_deferred(force=True)
    return [(e.data["Technique"], e.data["ProcessId"], e.data["Details"]) for e in g.drain()
            if e.event_id == 201]


def test_weakening_reload_names_the_sighup_sender_in_either_order(tmp_path):
    """An attacker's edit that stops collection, applied by SIGHUP, showed only event 16: it is
    a config_weakened finding whose actor is the SIGHUP's sender, whether the trace line is
    read before or after the loop applied the reload."""
    g, said = _hup_guard(tmp_path)
    g._traced = True
    now = time.time_ns()
    g.sighup(4242, "SIGHUP sent to the sensor (pid 1) by pid 4242 (bash), delivered", now)
    g.config_reloaded("SHA256=def", reduced=_DARK, reduced_ids=[1])
    (f,) = _weakened(g)
    assert f == ("config_weakened", "4242",
                 "configuration SHA256=abc -> SHA256=def collects less: not logged any more: "
                 "ProcessCreate (1); asked for by SIGHUP sent to the sensor (pid 1) by pid "
                 "4242 (bash), delivered")
    assert said == ["guard: SIGHUP sent to the sensor (pid 1) by pid 4242 (bash), delivered: a "
                    "configuration reload, applied (SHA256=def; event 16) and collecting less: "
                    "a config_weakened finding (event 201)"]
    g.config_reloaded("SHA256=fed", reduced=_DARK, reduced_ids=[1])  # before its SIGHUP's line
    assert _weakened(g) == []
    g.sighup(77, "SIGHUP sent to the sensor (pid 1) by pid 77 (sh), delivered",
             time.time_ns() - 1_000_000)
    (f,) = _weakened(g)
    assert f[1] == "77" and f[2].startswith("configuration SHA256=def -> SHA256=fed collects")
    assert g.findings == {"config_weakened": 2} and g.reloads_by_signal == 0
    assert "tamper findings: config_weakened 2" in g.summary()
    assert "configuration reloads by SIGHUP" not in g.summary()


def test_a_reload_that_only_adds_collection_stays_event_16_alone(tmp_path):
    g, said = _hup_guard(tmp_path)
    g._traced = True
    g.sighup(4242, "SIGHUP sent to the sensor (pid 1) by pid 4242 (bash), delivered",
             time.time_ns())
    g.config_reloaded("SHA256=def", reduced="", reduced_ids=[])
    assert _weakened(g) == [] and g.findings == {} and "not a tamper finding" in said[0]


def test_weakening_reload_without_a_sighup_has_the_unknown_actor(tmp_path, monkeypatch):
    """Signals traced but none seen for the reload: the finding after HUP_WAIT_S (or at the end
    of the run) with the unknown actor; signals not traced: at once."""
    monkeypatch.setattr(guard_mod, "HUP_WAIT_S", 0.1)
    g, said = _hup_guard(tmp_path)
    g._traced = True
    g.config_reloaded("SHA256=def", reduced=_DARK, reduced_ids=[1])
    assert _weakened(g) == []
    time.sleep(0.15)
    g._answer_hups()
    assert _weakened(g) == [("config_weakened", "0",
                             "configuration SHA256=abc -> SHA256=def collects less: not logged "
                             "any more: ProcessCreate (1); who asked for it is unknown: no "
                             "SIGHUP to the sensor was seen within 0.1 s")]
    g.config_reloaded("SHA256=fed", reduced=_DARK, reduced_ids=[1])
    g.finish()
    assert g.findings == {"config_weakened": 2}
    untraced, _ = _hup_guard(tmp_path)
    untraced.config_reloaded("SHA256=def", reduced=_DARK, reduced_ids=[1])
    (f,) = _weakened(untraced)
    assert f[1] == "0" and f[2].endswith("; who asked for it is unknown: signals are not traced")


def test_heartbeats_turned_off_by_a_reload_weaken_and_201_excluded_is_said(tmp_path):
    said: list = []
    g = make(tmp_path)  # the configuration's interval, 60 s by default
    g.on_status = said.append
    g.config_reloaded("SHA256=def", 0.0, reduced="not logged any more: TamperFinding (201)",
                      reduced_ids=[201])
    (f,) = _weakened(g)
    assert f[2] == ("configuration SHA256=abc -> SHA256=def collects less: not logged any more: "
                    "TamperFinding (201) | heartbeats off (HeartbeatInterval 0; were every 60 s); "
                    "who asked for it is unknown: signals are not traced")
    assert said[0] == ("guard: the new configuration filters out TamperFinding (201) events: "
                       "only its config_weakened finding (never filtered) reaches the outputs")
    fixed = make(tmp_path, heartbeat_s=30)  # the command line's interval: not changed
    fixed.config_reloaded("SHA256=def", 0.0)
    assert _weakened(fixed) == []


def test_weakening_details_cannot_forge_a_line(tmp_path):
    """The sender's command name (any bytes but NUL, prctl PR_SET_NAME) is the attacker's."""
    g, _ = _hup_guard(tmp_path)
    g._traced = True
    g.config_reloaded("SHA256=def", reduced="x", reduced_ids=[])
    g.sighup(5, "SIGHUP sent to the sensor (pid 1) by pid 5 (a\nb\u202e), delivered",
             time.time_ns() - 1_000_000)
    (f,) = _weakened(g)
    assert "\n" not in f[2] and "\u202e" not in f[2] and "(a\\u000ab\\u202e)" in f[2]


def test_weakening_reload_without_a_sighup_says_the_trace_failed(tmp_path, monkeypatch):
    """When reads of the signal trace failed during the run, the finding does not let "no
    SIGHUP was seen" stand alone: the trace may have missed it (review)."""
    monkeypatch.setattr(guard_mod, "HUP_WAIT_S", 0.1)
    g, _ = _hup_guard(tmp_path)
    g._traced = True
    g._trace_errors = 2
    g.config_reloaded("SHA256=def", reduced=_DARK, reduced_ids=[1])
    time.sleep(0.15)
    g._answer_hups()
    (f,) = _weakened(g)
    assert f[2].endswith("no SIGHUP to the sensor was seen within 0.1 s (the signal trace "
                         "failed to read 2 times: it may have missed it)")


def test_cgroup_link_already_detached_at_the_first_check_is_reported(monkeypatch):
    """Review S #10: the integrity baseline was taken at the first check, so a cgroup link
    detached before it had cgroup_id 0 in the baseline and was never reported."""
    import threading

    from sysmonx.sensor import bpfsys
    from sysmonx.sensor.backends.ebpf import EbpfBackend
    links = [(5, 5, {"link_id": "7", "prog_id": "30", "link_type": "cgroup", "cgroup_id": "0",
                     "attach_type": "14"}),
             (6, 6, {"link_id": "8", "prog_id": "31", "link_type": "cgroup", "cgroup_id": "1",
                     "attach_type": "19"}),
             (9, 9, {"link_id": "9", "prog_id": "32", "link_type": "tracing"})]
    monkeypatch.setattr(bpfsys, "bpf_fds", lambda pid, kind=None: iter(links))
    b = EbpfBackend(lambda o: None)
    stop = threading.Event()
    b._thread = threading.Thread(target=stop.wait)
    b._thread.start()
    b._obj = object()  # type: ignore[assignment]
    try:
        assert b.integrity() == [(
            "bpf_detach", "BPF link 7 (cgroup, cgroup_udp4_sendmsg, program 30) of the sensor "
            "was detached from its cgroup before the first check (cgroup_id 0): UDP over IPv4 "
            "sends (unconnected sockets) no longer seen")]
        assert b.integrity() == []  # once per link
        links[1][2]["cgroup_id"] = "0"
        assert [d for _, d in b.integrity()] == [
            "BPF link 8 (cgroup, cgroup_udp4_recvmsg, program 31) of the sensor was detached "
            "from its cgroup (cgroup_id 1 -> 0): UDP over IPv4 receives (unconnected sockets) "
            "no longer seen"]
    finally:
        b._obj = None
        stop.set()
        b._thread.join()
