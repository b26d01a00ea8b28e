"""Tier B's hand-back of the audit pid, without touching the kernel's audit state: the netlink
control and the reader's socket are stand-ins, the processes looked at are real (a program
named ``auditd`` run by a user who is not root must not make the sensor give the pid up; a
refused multicast group must not leave the sensor blind and silent). The live side is in
tests/test_backend_audit.py."""
from __future__ import annotations

import os
import subprocess
import threading
import types

import pytest

from sysmonx.sensor.backends import audit as audit_mod
from sysmonx.sensor.backends.audit import AuditBackend


class _Ctl:
    """``get_status``/``set_status`` of the audit netlink, recorded; ``refuse`` makes a
    ``set_status(pid=...)`` other than 0 fail as the kernel does when another holds it."""

    def __init__(self, refuse: bool = False) -> None:
        self.pid = os.getpid()
        self.calls: list[dict] = []
        self.refuse = refuse

    def get_status(self):
        return types.SimpleNamespace(pid=self.pid)

    def set_status(self, **kw):
        self.calls.append(kw)
        if kw.get("pid") and self.refuse:
            raise OSError(17, "File exists")
        self.pid = kw["pid"]


class _Sock:
    def __init__(self, join_error: OSError | None = None) -> None:
        self.join_error = join_error
        self.joined = False

    def setsockopt(self, *args):
        if self.join_error is not None:
            raise self.join_error
        self.joined = True


def _backend(ctl: _Ctl, sock: _Sock):
    be = AuditBackend.__new__(AuditBackend)
    be.mode = "unicast"
    be._ctl = ctl
    be._ctl_lock = threading.Lock()
    be._rd = types.SimpleNamespace(sock=sock)
    be._undo = [("unregister audit pid", None)]
    be.handed_back = None
    said: list[str] = []
    errors: list[str] = []
    be._status = said.append
    be._error = errors.append
    be._safe_emit = lambda obs: said.append(obs.message)
    return be, said, errors


def test_hand_back_joins_the_group_and_gives_the_pid_up():
    ctl, sock = _Ctl(), _Sock()
    be, said, errors = _backend(ctl, sock)
    assert be.hand_back("asked") is True
    assert ctl.calls == [{"pid": 0}] and sock.joined
    assert be.mode == "multicast" and be.handed_back == "asked" and be._undo == []
    assert errors == [] and said[0].startswith("audit: asked: the sensor handed the audit pid")


def test_a_refused_group_takes_the_pid_back():
    """Review s14 #1: no CAP_AUDIT_READ. The pid was given up (AUDIT_SET pid=0) before the
    group was joined; the join fails: the sensor takes the pid back and stays in unicast mode
    (still collecting, the pid still watched), and says so; it had said the pid would fail
    to register, while it had in fact given it up and gone blind."""
    ctl, sock = _Ctl(), _Sock(PermissionError(1, "Operation not permitted"))
    be, said, errors = _backend(ctl, sock)
    with pytest.raises(OSError, match="the sensor took the audit pid back") as e:
        be.hand_back("asked")
    assert e.value.errno == 1
    assert ctl.calls == [{"pid": 0}, {"pid": os.getpid()}] and ctl.pid == os.getpid()
    assert be.mode == "unicast" and be.handed_back is None
    assert be._undo == [("unregister audit pid", None)] and said == []


def test_a_refused_group_and_a_pid_taken_meanwhile_say_the_sensor_is_blind():
    ctl = _Ctl(refuse=True)
    be, said, errors = _backend(ctl, _Sock(PermissionError(1, "Operation not permitted")))
    with pytest.raises(OSError, match="could not be taken back .*no audit record reaches"):
        be.hand_back("asked")
    # unicast: the guard's integrity check sees the pid held by another process
    assert be.mode == "unicast" and ctl.pid == 0


def _named(name: str, user: int | None):
    """A real process whose comm is ``name``, run as ``user`` (uid) or as this user: a shell
    that renames itself and waits on its stdin."""
    p = subprocess.Popen(["/bin/sh", "-c", 'printf "%s" "$1" > /proc/$$/comm; echo ok; read x',
                          "sh", name], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, user=user)
    assert p.stdout is not None and p.stdout.readline().strip() == "ok"
    return p


@pytest.mark.skipif(os.geteuid() != 0, reason="runs a process as another user: needs root")
def test_a_program_named_auditd_run_by_a_user_does_not_take_the_pid():
    """Review s14 #2: anyone can call a program auditd; only root can register as the audit
    daemon. A user's 'auditd' leaves the pid with the sensor; root's makes it hand it back."""
    ctl, sock = _Ctl(), _Sock()
    be, said, errors = _backend(ctl, sock)
    user = _named("auditd", 65534)
    try:
        be._daemon_exec(user.pid, "auditd")
        assert ctl.calls == [] and be.mode == "unicast" and said == [] and errors == []
    finally:
        user.kill()
        user.wait()
    be._daemon_exec(user.pid, "auditd")          # gone before it was looked at: no hand-back
    assert ctl.calls == [] and be.mode == "unicast"
    root = _named("auditd", None)
    try:
        be._daemon_exec(root.pid, "auditd")
        assert ctl.calls == [{"pid": 0}] and be.mode == "multicast"
        assert be.handed_back == f"auditd started (pid {root.pid})"
    finally:
        root.kill()
        root.wait()


def test_a_process_name_with_controls_is_written_visible():
    """Review s14 #10: a process's name goes into event 255 and stderr text (who asked for
    the audit pid, who holds it) with its display controls made visible."""
    p = _named("a\x1b[2Jb", None)
    try:
        assert audit_mod._comm(p.pid) == "a\\u001b[2Jb"
        assert audit_mod._euid(p.pid) == os.geteuid()
    finally:
        p.kill()
        p.wait()
    assert audit_mod._comm(p.pid) == "?" and audit_mod._euid(p.pid) == -1
