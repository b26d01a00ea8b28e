"""The audit tier's start error when another program registers as the audit daemon between
the probe and our registration (a new user saw ``[Errno 17] audit request 1001: File exists``,
which does not say who holds audit or what to do)."""

from __future__ import annotations

import errno
import subprocess
import sys

import pytest

from sysmonx.sensor.backends import audit as audit_mod
from sysmonx.sensor.backends import audit_netlink as nl


class _Refusing:
    """Stands for the reader socket: the kernel answers AUDIT_SET pid with EEXIST."""

    def __init__(self, rcvbuf: int = 0) -> None:
        self.rcvbuf = rcvbuf

    def set_status(self, **values: int) -> None:
        raise nl.AuditError(errno.EEXIST, "audit request 1001: File exists")


class _Ctl:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.sets: list = []

    def get_status(self, timeout: float = 2.0) -> nl.AuditStatus:
        return nl.AuditStatus(pid=self.pid, backlog_limit=8192)

    def set_status(self, **values: int) -> None:
        self.sets.append(values)


def test_eexist_at_registration_names_the_holder_and_the_way_out(monkeypatch):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        be = audit_mod.AuditBackend(lambda obs: None)
        be._ctl = _Ctl(holder.pid)
        monkeypatch.setattr(audit_mod, "AuditSocket", _Refusing)
        with pytest.raises(nl.AuditError) as info:
            be._take_audit(nl.AuditStatus(backlog_limit=8192), 1 << 20)
        msg = str(info.value)
        assert info.value.errno == errno.EEXIST
        assert f"pid {holder.pid} (python" in msg and "registered as the audit daemon" in msg
        assert "--backend cnproc" in msg and "File exists" not in msg
    finally:
        holder.kill()
        holder.wait()
