"""What makes a process a peer SysmonX sensor (:mod:`sysmonx.sensor.peers`): its run file in a
directory of root's alone, flock'ed by that very pid, naming its pid and start time; the ids it
announces. Run as root (the run files are root's); the guard's use of it is in
tests/test_guard_live.py."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys

import pytest

from sysmonx.sensor import peers

if os.geteuid() != 0 or not sys.platform.startswith("linux"):
    pytest.skip("run files are root's (Linux)", allow_module_level=True)


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "run"
    return str(d)


def test_a_sensor_with_its_run_file_is_a_peer_with_what_it_announced(run_dir):
    rf = peers.RunFile(run_dir)
    try:
        assert oct(os.stat(run_dir).st_mode & 0o777) == "0o700"
        assert oct(os.stat(rf.path).st_mode & 0o777) == "0o600"
        rf.publish_own({7, 8}, {9}, set())
        rf.will_open("prog", 1234)
        p = peers.peer(os.getpid(), run_dir)
        assert p is not None and p.pid == os.getpid()
        assert p.own == {"map": {7, 8}, "prog": {9}, "link": set()}
        assert [(k, i) for k, i, _ in p.opens] == [("prog", 1234)]
        assert "command line " in p.describe() and "pytest" in p.cmdline
    finally:
        rf.close()
    assert not os.listdir(run_dir)  # removed at the end
    assert peers.peer(os.getpid(), run_dir) is None


def test_no_lock_wrong_owner_mode_start_or_directory_is_no_peer(run_dir):
    rf = peers.RunFile(run_dir)
    pid = os.getpid()
    try:
        assert peers.peer(pid, run_dir) is not None
        # a file for another pid (its start time right), locked by this process: the kernel's
        # record says who holds the lock, and that is not the pid named
        ppid = os.getppid()
        other = os.path.join(run_dir, f"sensor-{ppid}.lock")
        ofd = os.open(other, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(ofd, json.dumps({"pid": ppid, "start": peers.start_time(ppid)}).encode())
        fcntl.flock(ofd, fcntl.LOCK_EX)
        assert peers.peer(ppid, run_dir) is None
        os.close(ofd)
        os.unlink(other)
        # a second name for the run file
        os.link(rf.path, other)
        assert peers.peer(pid, run_dir) is None
        os.unlink(other)
        # a file group/other can read or write
        os.chmod(rf.path, 0o644)
        assert peers.peer(pid, run_dir) is None
        os.chmod(rf.path, 0o600)
        # a directory others can write to
        os.chmod(run_dir, 0o777)
        assert peers.peer(pid, run_dir) is None
        os.chmod(run_dir, 0o700)
        assert peers.peer(pid, run_dir) is not None
    finally:
        rf.close()
    # a file written by hand that nobody holds locked, or locked with a wrong start time
    path = os.path.join(run_dir, f"sensor-{pid}.lock")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, json.dumps({"pid": pid, "start": peers.start_time(pid)}).encode())
    assert peers.peer(pid, run_dir) is None  # not locked
    fcntl.flock(fd, fcntl.LOCK_EX)
    assert peers.peer(pid, run_dir) is not None
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": pid, "start": 1}).encode(), 0)
    assert peers.peer(pid, run_dir) is None  # a reused pid's left-over file
    os.close(fd)
    os.unlink(path)


def test_a_dead_sensors_files_are_swept_and_a_live_ones_kept(run_dir):
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from sysmonx.sensor import peers; "
                               f"rf = peers.RunFile({run_dir!r}); print('ok', flush=True); "
                               "time.sleep(30)"], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"ok\n"
        os.makedirs(run_dir, exist_ok=True)
        stale = os.path.join(run_dir, "sensor-999999.lock")
        with open(stale, "w") as f:
            f.write("{}")
        rf = peers.RunFile(run_dir)
        try:
            names = sorted(os.listdir(run_dir))
            assert f"sensor-{holder.pid}.lock" in names and "sensor-999999.lock" not in names
            assert peers.peer(holder.pid, run_dir) is not None
        finally:
            rf.close()
    finally:
        holder.kill()
        holder.wait()
    assert peers.peer(holder.pid, run_dir) is None  # its lock went with it
