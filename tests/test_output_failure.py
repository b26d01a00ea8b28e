"""A live sensor whose output fails keeps collecting, says so, counts what it could not write and
reports it when the output works again (issue: ``-o`` on a full file system crashed the sensor
with a traceback and wrote nothing about it; ``--syslog`` without a daemon counted undelivered
events as written).

The file system is a 64 KiB tmpfs mounted for the test (root only; unmounted at the end).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.live

ROOT = os.geteuid() == 0


def _tier():
    if not ROOT:
        return None
    from sysmonx.sensor.backends import probe, tiers
    return next((t for t in tiers() if probe(t) is None), None)


TIER = _tier()
needs_sensor = pytest.mark.skipif(TIER is None, reason="needs root and a live tier")


def _config(mark: str) -> str:
    return ('<Sysmon schemaversion="4.81"><EventFiltering><RuleGroup name="" groupRelation="or">'
            f'<ProcessCreate onmatch="include"><CommandLine condition="contains">{mark}'
            '</CommandLine></ProcessCreate></RuleGroup><RuleGroup name="" groupRelation="or">'
            '<ProcessTerminate onmatch="include"/></RuleGroup></EventFiltering></Sysmon>')


def _wait(cond, timeout=30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def small_fs():
    d = tempfile.mkdtemp(prefix="sysmonx-fullfs-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", d],
                       capture_output=True, text=True)
    if r.returncode != 0:
        os.rmdir(d)
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield Path(d)
    finally:
        subprocess.run(["umount", d], check=False)
        shutil.rmtree(d, ignore_errors=True)


def _fill(path: Path) -> None:
    """Write ``path`` until the file system is full (ENOSPC)."""
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == 28, exc  # ENOSPC


@needs_sensor
def test_full_file_system_loses_nothing_silently(small_fs, tmp_path):
    mark = f"sxfull{uuid.uuid4().hex[:8]}"
    cfg = tmp_path / "c.xml"
    cfg.write_text(_config(mark))
    out = small_fs / "events.jsonl"
    err = tmp_path / "stderr"
    with open(err, "wb") as errf:
        sensor = subprocess.Popen([sys.executable, "-m", "sysmonx.cli", "run", "--backend", TIER,
                                   "--no-dns", "--config", str(cfg), "--format", "jsonl",
                                   "-o", str(out), "--no-guard"], stderr=errf)
        try:
            assert _wait(lambda: out.exists() and b'"Started"' in out.read_bytes(), 90), \
                err.read_text()
            _fill(small_fs / "filler")
            for i in range(20):
                subprocess.run(["/bin/true", f"{mark}-full-{i}"], check=True)
            assert _wait(lambda: "fails (No space left on device)" in err.read_text()), \
                err.read_text()
            time.sleep(1.0)  # the ordering window: every full-phase event has been tried
            assert sensor.poll() is None, "the sensor must keep running"
            (small_fs / "filler").unlink()
            for i in range(5):
                subprocess.run(["/bin/true", f"{mark}-after-{i}"], check=True)
            assert _wait(lambda: f"{mark}-after-4" in out.read_text(), 30), err.read_text()
        finally:
            sensor.send_signal(signal.SIGTERM)
            sensor.wait(60)
    assert sensor.returncode == 0
    stderr = err.read_text()
    assert "Traceback" not in stderr
    lines = out.read_text().splitlines()
    events = [json.loads(line) for line in lines]  # no cut line: every line is whole JSON
    ones = [e["CommandLine"] for e in events if e["EventID"] == 1]
    # a few events of the full phase may still fit in the last page of the output file (tmpfs
    # counts pages): those are written, every other one is counted below
    full_written = [c for c in ones if f"{mark}-full-" in c]
    assert sorted(c for c in ones if f"{mark}-after-" in c) == \
        sorted(f"/bin/true {mark}-after-{i}" for i in range(5))  # everything after it
    reports = [e for e in events if e["EventID"] == 255 and e["ID"] == "Output"]
    assert len(reports) == 1
    m = re.match(r"(\d+) events could not be written to -o (\S+) from .* UTC: "
                 r"No space left on device$", reports[0]["Description"])
    assert m and m.group(2) == str(out)
    lost = int(m.group(1))
    # exactly the events 1 of the full phase that are not in the file: the config logs no
    # others, so nothing was lost silently
    assert lost == 20 - len(full_written) and lost >= 15
    assert f"output -o {out} works again; {lost} events were not written" in stderr
    summary = [line for line in stderr.splitlines() if "events written" in line]
    assert summary and f"NOT WRITTEN to -o {out}: {lost} events (No space left on device)" \
        in summary[-1]
    written = int(re.search(r"events written ([\d,]+)", summary[-1]).group(1).replace(",", ""))
    assert written == len(events)  # 16, 4 Started, 5 after, 255, 4 Stopped: all in the file


@needs_sensor
def test_syslog_without_daemon_counts_every_event_as_not_written(tmp_path):
    mark = f"sxnolog{uuid.uuid4().hex[:8]}"
    cfg = tmp_path / "c.xml"
    cfg.write_text(_config(mark))
    sock = tmp_path / "no-daemon.sock"
    r = subprocess.run([sys.executable, "-m", "sysmonx.cli", "run", "--backend", TIER, "--no-dns",
                        "--config", str(cfg), "--syslog", str(sock), "--duration", "3",
                        "--no-guard"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    summary = [line for line in r.stderr.splitlines() if "events written" in line][-1]
    assert "events written 0," in summary
    n = int(re.search(r"NOT WRITTEN to syslog \S+: (\d+) events", summary).group(1))
    assert n >= 3  # 16, 4 Started, 4 Stopped at least
    assert "Traceback" not in r.stderr


@needs_sensor
def test_syslog_only_sensor_delivers_its_output_blocked_finding_when_syslog_is_back(tmp_path):
    """New-user report s13 #3: with syslog the only output, the syslog daemon stopped for a few
    seconds and started again: none of the output_blocked findings reached syslog (they were
    among the events it did not take). They are held for it and written when it is back, and
    its event 255 counts only what is really missing."""
    import socket
    mark = f"sxheld{uuid.uuid4().hex[:8]}"
    cfg = tmp_path / "c.xml"
    cfg.write_text(_config(mark))
    path = tmp_path / "log.sock"
    received: list = []

    def listen() -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(str(path))
        s.settimeout(0.05)
        return s

    def drain(s: socket.socket, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                received.append(s.recv(1 << 17).decode("utf-8", "replace"))
            except socket.timeout:
                pass

    sock = listen()
    err = tmp_path / "err.txt"
    with open(err, "w") as errf:
        sensor = subprocess.Popen([sys.executable, "-m", "sysmonx.cli", "run", "--backend", TIER,
                                   "--no-dns", "--config", str(cfg), "--syslog", str(path),
                                   "--state-dir", "none"], stderr=errf)
        try:
            assert _wait(lambda: (drain(sock, 0.2), any(">Started<" in m for m in received))[1],
                         90), err.read_text()
            sock.close()
            path.unlink()  # the daemon is gone: /dev/log removed
            for i in range(5):
                subprocess.run(["/bin/true", f"{mark}-down-{i}"], check=True)
            assert _wait(lambda: "fails (" in err.read_text(), 20), err.read_text()
            time.sleep(3.0)  # the guard's checks (2.5 s) see the socket gone and the episode
            sock = listen()  # the daemon is back
            for i in range(3):
                subprocess.run(["/bin/true", f"{mark}-up-{i}"], check=True)
            drain(sock, 4.0)
        finally:
            sensor.send_signal(signal.SIGTERM)
            sensor.wait(60)
            drain(sock, 1.0)
            sock.close()
    stderr = err.read_text()
    assert sensor.returncode == 0 and "Traceback" not in stderr, stderr
    findings = [m for m in received if "<EventID>201</EventID>" in m and "output_blocked" in m]
    assert findings, stderr + "\n".join(received[-5:])
    # the finding made while the socket was gone (the one that was lost)
    assert any(f"output {path} was removed" in m for m in findings), findings
    assert any("failure episode 1 of this run" in m for m in findings)
    up = [i for i, m in enumerate(received) if f"{mark}-up-" in m]
    first_finding = received.index(findings[0])
    assert up and first_finding < up[0]  # held, then written before the newer events
    report = [m for m in received if ">Output<" in m]
    assert report
    n = int(re.search(r"(\d+) events? could not be written to syslog", report[0]).group(1))
    downs = sum(1 for m in received if f"{mark}-down-" in m and "<EventID>1<" in m)
    assert downs == 0 and n >= 5  # the five events 1 (their 5s too), never the findings
    assert f"works again; {n} event" in stderr
