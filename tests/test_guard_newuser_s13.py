"""What a Sysmon for Linux admin found in session 13 on the guard's side (no kernel needed):
an integrity problem repeated every check while another backend ran, the heartbeat said
``EventsLost 0`` over a time tier B was blind, and a SIGHUP's sender was named ``<...>``."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("the sensor guard is Linux-only", allow_module_level=True)

from test_guard import findings_details, said_guard, trace_for

from sysmonx.sensor import guard as guard_mod


class _Backend:
    """A backend as the guard sees it: its integrity problems and its blind episodes."""

    def __init__(self, problems=(), blind=(0, False)) -> None:
        self.problems = list(problems)
        self.blind = blind

    def integrity(self) -> list:
        return list(self.problems)

    def blind_episodes(self) -> tuple:
        return self.blind


class _Quiet:
    """The DNS backend beside tier B: no integrity problem ever."""

    def integrity(self) -> list:
        return []


def _guard(backends, heartbeat_s=0.0):
    return said_guard(backend="audit", backends=backends, heartbeat_s=heartbeat_s)



DISABLED = ("audit_rules_changed", "audit was disabled (enabled=0)")


def test_an_integrity_problem_is_one_finding_per_episode_beside_another_backend():
    """The report: with tier B and the DNS backend running, audit disabled gave 10
    ``audit_rules_changed`` findings in 24 s (one per 2.5 s check): the DNS backend's empty
    check replaced the audit backend's problems. One per episode; a second episode is a
    second finding."""
    audit = _Backend([DISABLED])
    g, _ = _guard([audit, _Quiet()])
    for _ in range(4):
        g._integrity_check()
    assert findings_details(g) == ["audit was disabled (enabled=0)"]
    audit.problems = []
    g._integrity_check()
    g._integrity_check()
    assert findings_details(g) == []
    audit.problems = [DISABLED]
    g._integrity_check()
    g._integrity_check()
    assert findings_details(g) == ["audit was disabled (enabled=0)"]
    assert g.findings == {"audit_rules_changed": 2}


def test_heartbeat_events_lost_is_unknown_over_a_blind_window():
    """``EventsLost`` was 0 while tier B was blind (audit disabled): events were missed and
    nobody counted them. A window in which a backend was blind at any time (blind at its
    start, at its end, or an episode began and ended inside it) writes the documented
    unknown ``-``; the others the count."""
    audit = _Backend()
    g, _ = _guard([audit, _Quiet()], heartbeat_s=3600)
    g.counters = lambda: (10, 2, {})

    def beat() -> str:
        g._heartbeat(time.time_ns())
        (hb,) = [e for e in g.drain() if e.event_id == 202]
        return hb.data["EventsLost"]

    assert beat() == "2"
    audit.blind = (1, True)       # disabled now
    assert beat() == "-"
    assert beat() == "-"          # still
    audit.blind = (1, False)      # enabled again: this window began blind
    assert beat() == "-"
    g.counters = lambda: (20, 5, {})
    assert beat() == "3"          # a whole window with audit enabled: the count again
    audit.blind = (2, False)      # disabled and enabled again between two heartbeats
    assert beat() == "-"
    assert beat() == "0"


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def test_a_senders_name_ftrace_did_not_cache_is_read_from_proc():
    """ftrace prints ``<...>`` for a comm it has not cached; the report's SIGHUP sender was
    written ``(<...>)`` on stderr and six seconds later ``(bash)``. The name comes from
    ``/proc/PID/comm`` while the sender lives, else it is the documented unknown ``-``."""
    g, _ = _guard([])
    got: list = []
    g.sighup = lambda pid, text, when: got.append((pid, text))
    tr = trace_for(g)
    sender = subprocess.Popen(["sleep", "30"])
    deadline = time.monotonic() + 10
    while _comm(sender.pid) != "sleep" and time.monotonic() < deadline:
        time.sleep(0.01)  # Popen can return before the child's exec
    try:
        tr._feed(f"           <...>-{sender.pid}     ( {sender.pid}) [001] d..1. 12345.678901: "
                 "signal_generate: sig=1 errno=0 code=0 comm=sysmonx pid=1 grp=1 res=0")
    finally:
        sender.kill()
        sender.wait()
    gone = sender.pid  # reaped: no /proc entry any more
    tr._feed(f"           <...>-{gone}     (-------) [001] d..1. 12345.678902: "
             "signal_generate: sig=1 errno=0 code=0 comm=sysmonx pid=1 grp=1 res=0")
    assert got == [(sender.pid, f"SIGHUP sent to the sensor (pid 1) by pid {sender.pid} "
                                "(sleep), delivered"),
                   (gone, f"SIGHUP sent to the sensor (pid 1) by pid {gone} (-), delivered")]


def test_comm_of_makes_a_name_visible():
    """A name read from /proc is made visible as the trace's names are (no forged lines)."""
    assert guard_mod.comm_of(2 ** 22 + 7) == "-"
    me = guard_mod.comm_of(__import__("os").getpid())
    assert me and "\n" not in me
