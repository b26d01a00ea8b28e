"""The parent of a child whose parent had not exec'd since its fork (a subshell), without the
kernel: tiers B and C hold each fork until the process is reported, and an exec says all a
fork would, so a subshell that forks a child and then execs was known by nobody when the child's
event 1 was made.

Seen (new-user report, session 14, tier A; tiers B and C held forks the same way):
``( x=$(/bin/echo a); exec /bin/rm f )`` gave echo's event 1 ParentProcessGuid
``{00000000-...}`` and ParentImage, ParentCommandLine, ParentUser ``-`` (8 of 8). The backends
now send the held forks of an exec's parent (and of its parents) before the exec, so the child's
Parent* fields are the subshell's as it was: its parent's image, its own ProcessGuid, the one its
own events carry. Tier A does the same in the kernel (``sensor.bpf.c`` ``flush_forks``;
``tests/test_live_tiers.py::test_subshell_that_execs_is_the_parent_of_its_child``).
"""

from __future__ import annotations

import os

from sysmonx.sensor.assemble import Assembler
from sysmonx.sensor.backends import cnproc
from sysmonx.sensor.backends.cnproc import CnprocBackend, held_parent_forks
from sysmonx.sensor.observations import (FileCreate, NetworkConnect, ProcessExec, ProcessExit,
                                         ProcessFork)
from sysmonx.sensor.process import ZERO_GUID, ProcessCache, guid_key_is_synthetic

ME = os.getpid()            # the subshells' parent: a real process (/proc has it)
P, C, P2 = 99999980, 99999981, 99999982  # above any pid_max: /proc has none


def _cn(what: int, seq: int, ts: int, *fields: int) -> bytes:
    body = cnproc._EVHDR.pack(what, 0, ts) + b"".join(
        f.to_bytes(4, "little") for f in (fields + (0,) * 6)[:6])
    cn = cnproc._CNMSG.pack(cnproc.CN_IDX_PROC, cnproc.CN_VAL_PROC, seq, 0, len(body), 0) + body
    return cnproc._NLMSG.pack(16 + len(cn), 3, 0, seq, 0) + cn


_seq = [0]


def _msgs(*events: tuple) -> list:
    """Proc connector messages: ``("fork", ts, parent, child)``, ``("exec", ts, pid)``,
    ``("exit", ts, pid)``."""
    out: list = []
    for what, ts, *pids in events:
        _seq[0] += 1
        if what == "fork":
            data = _cn(cnproc.PROC_EVENT_FORK, _seq[0], ts, pids[0], pids[0], pids[1], pids[1])
        elif what == "exec":
            data = _cn(cnproc.PROC_EVENT_EXEC, _seq[0], ts, pids[0], pids[0])
        else:
            data = _cn(cnproc.PROC_EVENT_EXIT, _seq[0], ts, pids[0], pids[0], 0)
        cnproc.parse_cn_messages(data, out)
    return out


def _tier_c(obs: list) -> CnprocBackend:
    be = CnprocBackend(obs.append, options={"tracefs": False, "enrich": False})
    be.emit_all = obs.extend  # type: ignore[method-assign]
    be._fan = None
    be._offset = be._boot_offset = 0
    return be


def _tier_b(obs: list):
    from sysmonx.sensor.backends import audit as audit_mod
    be = audit_mod.AuditBackend(obs.append, options={"socket_lookup": "none"})
    be.emit_all = obs.extend  # type: ignore[method-assign]
    be._cn = cnproc.ProcConnector(0, False, lambda *a: None)
    be._mono_off = be._boot_off = 0
    return be


def _assemble(obs: list) -> tuple:
    """The events the assembler writes for ``obs`` (in that order), and pid -> the GUIDs the
    cache gave each fork of it (a subshell's GUID, as its own events would carry it)."""
    asm = Assembler(ProcessCache(machine="0a1b2c3d"), computer="h")
    events, forks = [], {}
    for o in obs:
        events.extend(asm.build_events(o))
        if type(o) is ProcessFork:
            forks.setdefault(o.pid, []).append(asm.cache.peek(o.pid).guid)
    return events, forks


def _parent(event) -> tuple:
    d = event.data
    return (d["ParentProcessId"], d["ParentProcessGuid"], d["ParentImage"],
            d["ParentCommandLine"], d["ParentUser"])


def _me() -> tuple:
    me = ProcessCache(machine="0a1b2c3d").get(ME)
    assert me is not None and me.image
    return me.image, me.command_line, me.user


def _check_child(events: list, forks: dict, child: int, parent: int) -> None:
    """``child``'s event 1 names ``parent`` as the fork it was: this process's image, command
    line and user, and the GUID the cache gave the parent's fork (full, not the zero GUID)."""
    one = [e for e in events if e.event_id == 1 and e.data["ProcessId"] == str(child)]
    assert len(one) == 1, one
    assert len(set(forks.get(parent, ()))) == 1, forks
    guid = forks[parent][0]
    image, cmd, user = _me()
    assert _parent(one[0]) == (str(parent), guid, image, cmd, user)
    assert guid != ZERO_GUID and not guid_key_is_synthetic(guid)


def test_tier_c_subshell_that_execs_is_the_parent_of_its_child():
    """fork P, P forks C, C execs (echo), P execs (rm): P's held fork is sent before C's exec
    (before, it was dropped at P's exec: C's parent had the zero GUID and ``-``)."""
    obs: list = []
    be = _tier_c(obs)
    be._process_batch(_msgs(("fork", 1_000_000, ME, P), ("fork", 2_000_000, P, C),
                            ("exec", 3_000_000, C), ("exit", 4_000_000, C),
                            ("exec", 4_200_000, P), ("exit", 5_000_000, P)))
    be._flush_out()
    assert [(type(o), o.pid) for o in obs] == [
        (ProcessFork, P), (ProcessExec, C), (ProcessExit, C), (ProcessExec, P), (ProcessExit, P)]
    events, forks = _assemble(obs)
    _check_child(events, forks, C, P)


def test_tier_c_the_subshells_own_event_carries_the_guid_its_child_names():
    """P creates a file after its child's exec and before its own exec: its fork is sent once,
    before the child's exec, and the file's ProcessGuid is the child's ParentProcessGuid."""
    obs: list = []
    be = _tier_c(obs)
    be._process_batch(_msgs(("fork", 1_000_000, ME, P), ("fork", 2_000_000, P, C),
                            ("exec", 3_000_000, C)))
    be._out(FileCreate(3_500_000, P, "/tmp/sysmonx-subshell-file"))
    be._process_batch(_msgs(("exec", 4_200_000, P)))
    be._flush_out()
    assert [(type(o), o.pid) for o in obs] == [
        (ProcessFork, P), (ProcessExec, C), (FileCreate, P), (ProcessExec, P)]
    events, forks = _assemble(obs)
    _check_child(events, forks, C, P)
    file = [e for e in events if e.event_id == 11]
    child = [e for e in events if e.event_id == 1 and e.data["ProcessId"] == str(C)]
    assert file[0].data["ProcessGuid"] == child[0].data["ParentProcessGuid"]
    assert file[0].data["Image"] == child[0].data["ParentImage"] == _me()[0]


def test_tier_c_nested_subshells_send_the_whole_chain_oldest_first():
    """``( ( x=$(echo); exec rm ) & wait )``: P forks P2, P2 forks C, C execs, P2 execs, P
    exits. C's parent P2 is sent with its own parent P before it (P2 inherits P's facts)."""
    obs: list = []
    be = _tier_c(obs)
    be._process_batch(_msgs(("fork", 1_000_000, ME, P), ("fork", 1_500_000, P, P2),
                            ("fork", 2_000_000, P2, C), ("exec", 3_000_000, C),
                            ("exec", 4_200_000, P2), ("exit", 6_000_000, P)))
    be._flush_out()
    assert [(type(o), o.pid) for o in obs] == [
        (ProcessFork, P), (ProcessFork, P2), (ProcessExec, C), (ProcessExec, P2),
        (ProcessExit, P)]
    events, forks = _assemble(obs)
    _check_child(events, forks, C, P2)
    exec_p2 = [e for e in events if e.event_id == 1 and e.data["ProcessId"] == str(P2)]
    end_p = [e for e in events if e.event_id == 5 and e.data["ProcessId"] == str(P)]
    assert exec_p2[0].data["ParentProcessGuid"] == end_p[0].data["ProcessGuid"] == forks[P][0]


def test_tier_c_a_parent_that_execd_before_sends_no_fork():
    """A parent that exec'd before its child's exec is named by its exec (an exec says all a
    fork would): no fork is sent for it."""
    obs: list = []
    be = _tier_c(obs)
    be._process_batch(_msgs(("fork", 1_000_000, ME, P), ("exec", 1_500_000, P),
                            ("fork", 2_000_000, P, C), ("exec", 3_000_000, C)))
    be._flush_out()
    assert [(type(o), o.pid) for o in obs] == [(ProcessExec, P), (ProcessExec, C)]


def test_tier_b_subshell_that_execs_is_the_parent_of_its_child():
    """The proc connector reported fork P, fork C, exec C and exec P before audit wrote C's
    exec record: P's fork (held for P's own exec record) is sent before C's exec."""
    obs: list = []
    be = _tier_b(obs)
    be._on_cn(_msgs(("fork", 1_000_000, ME, P), ("fork", 2_000_000, P, C),
                    ("exec", 3_000_000, C), ("exec", 4_200_000, P)))
    be._out_audit(ProcessExec(ts_ns=3_000_000, pid=C, ppid=P, tid=C))
    be._out_audit(ProcessExec(ts_ns=4_200_000, pid=P, ppid=ME, tid=P))
    be._flush_out()
    assert [(type(o), o.pid) for o in obs] == [
        (ProcessFork, P), (ProcessExec, C), (ProcessExec, P)]
    assert not be._exec_forks
    events, forks = _assemble(obs)
    _check_child(events, forks, C, P)


def test_tier_b_the_subshells_own_event_carries_the_guid_its_child_names():
    """P connects after its child's exec, audit's record of it coming before P's exec record:
    P's fork is sent again before the connect (as before: it may be a lost exec); the core
    keeps the first, so the connect's GUID is the one C's event 1 names."""
    obs: list = []
    be = _tier_b(obs)
    be._on_cn(_msgs(("fork", 1_000_000, ME, P), ("fork", 2_000_000, P, C),
                    ("exec", 3_000_000, C), ("exec", 4_200_000, P)))
    be._out_audit(ProcessExec(ts_ns=3_000_000, pid=C, ppid=P, tid=C))
    be._out_audit(NetworkConnect(3_500_000, P, "tcp", True, "127.0.0.1", 80))
    be._out_audit(ProcessExec(ts_ns=4_200_000, pid=P, ppid=ME, tid=P))
    be._flush_out()
    assert [(type(o), o.pid) for o in obs] == [
        (ProcessFork, P), (ProcessExec, C), (ProcessFork, P), (NetworkConnect, P),
        (ProcessExec, P)]
    events, forks = _assemble(obs)
    _check_child(events, forks, C, P)
    conn = [e for e in events if e.event_id == 3]
    child = [e for e in events if e.event_id == 1 and e.data["ProcessId"] == str(C)]
    assert conn[0].data["ProcessGuid"] == child[0].data["ParentProcessGuid"]
    assert be._stats["exec_lost"] == 0


def test_tier_b_a_parent_that_execd_before_sends_no_fork():
    obs: list = []
    be = _tier_b(obs)
    be._on_cn(_msgs(("fork", 1_000_000, ME, P), ("exec", 1_500_000, P),
                    ("fork", 2_000_000, P, C), ("exec", 3_000_000, C)))
    be._out_audit(ProcessExec(ts_ns=3_000_000, pid=C, ppid=P, tid=C))
    be._flush_out()
    assert [(type(o), o.pid) for o in obs] == [(ProcessExec, C)]
    assert P in be._exec_forks  # still held for P's own exec record


def test_held_parent_forks_is_bounded_and_oldest_first():
    held = {10 + i: ProcessFork(i, 10 + i, 9 + i) for i in range(100)}  # 10 <- 11 <- ... 109
    take = lambda pid: held.pop(pid, None)  # noqa: E731
    chain = held_parent_forks(109, take)
    assert len(chain) == cnproc.FORK_CHAIN_MAX
    assert [f.pid for f in chain] == list(range(110 - cnproc.FORK_CHAIN_MAX, 110))
    assert held_parent_forks(5, take) == [] and held_parent_forks(0, take) == []
