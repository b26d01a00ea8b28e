"""The live audit tests' helpers end quietly on Ctrl-C (SIGINT reaches the whole process group):
a child process of ``_py`` ends by the signal without a Python traceback, and the fake audit
daemon ignores it, so that it still puts the kernel's audit state back when its owner (the
``fake_auditd`` fixture) closes its stdin. (The ``baseline`` fixture then restores the state
without asserting on it: ``conftest.interrupted``.)"""

from __future__ import annotations

import signal
import subprocess
import time

from test_backend_audit import _SIGINT_IGNORE, _py

WAIT = """
    import sys, time
    print("ready", flush=True)
    if sys.stdin.read() == "":
        print("stdin closed", flush=True)
"""


def test_child_ends_on_sigint_without_a_traceback():
    p = _py(WAIT, stderr=subprocess.PIPE)
    assert p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=10)
    assert p.returncode == -signal.SIGINT
    assert err == "" and out == ""


def test_state_restoring_child_outlives_sigint_and_ends_when_its_owner_says():
    p = _py(WAIT, sigint=_SIGINT_IGNORE, stderr=subprocess.PIPE)
    assert p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGINT)
    time.sleep(0.5)  # time to die, had it not ignored the signal
    assert p.poll() is None
    p.stdin.close()
    assert p.stdout.read() == "stdin closed\n"
    assert p.wait(timeout=10) == 0
    assert p.stderr.read() == ""
