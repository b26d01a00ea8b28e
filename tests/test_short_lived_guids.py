"""ProcessGuids of short-lived processes on tiers B and C, and the process an accepted
connection is attributed to on tier C.

* Tier B (audit + proc connector) dropped a child's held fork when the proc connector reported
  its exec, before the audit record of something the child did between fork and exec (a
  connect, a redirection's file): that event had no process, ProcessGuid
  ``{00000000-...}`` and Image ``-`` (measured: 95 of 100 connects of ``bench/bench_exec_guids.py``
  ``net``), where tier A gives the fork's GUID and the parent's image.
* The process cache took the ``end_code`` of an exec it had no snapshot of from ``/proc`` even
  when ``/proc`` already showed a later image of the same process (``sh -c 'exec sleep 9'``):
  the two images got one ProcessGuid.
* Tier C named the owner of a listening socket by searching the newest processes first: a child
  the listener forked after the connection was accepted (holding the socket until its exec)
  took the accept (``test_live_tiers.py::test_unanswered_connect...[cnproc]``: a second event 3
  28 ms before the connect, the filler's accept, under load).
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path

import pytest

from sysmonx.sensor.backends import cnproc
from sysmonx.sensor.observations import NetworkConnect, ProcessExec, ProcessFork
from sysmonx.sensor.process import guid_key_is_synthetic
from sysmonx.sensor.procfs import QUEUED, SocketOwners, _proc_net_entries

PID = 99999994   # above any pid_max: /proc has none


def _cn(what: int, seq: int, ts: int, *fields: int) -> bytes:
    body = cnproc._EVHDR.pack(what, 0, ts) + b"".join(
        f.to_bytes(4, "little") for f in (fields + (0,) * 6)[:6])
    cn = cnproc._CNMSG.pack(cnproc.CN_IDX_PROC, cnproc.CN_VAL_PROC, seq, 0, len(body), 0) + body
    return cnproc._NLMSG.pack(16 + len(cn), 3, 0, seq, 0) + cn


def _backend(obs: list):
    from sysmonx.sensor.backends import audit as audit_mod
    be = audit_mod.AuditBackend(obs.append, options={"socket_lookup": "none"})
    be.emit_all = obs.extend  # type: ignore[method-assign]
    be._cn = cnproc.ProcConnector(0, False, lambda *a: None)
    be._mono_off = be._boot_off = 0
    return be


def _fork_and_exec(be, parent: int, child: int) -> None:
    msgs: list = []
    for d in (_cn(cnproc.PROC_EVENT_FORK, 1, 1_000_000, parent, parent, child, child),
              _cn(cnproc.PROC_EVENT_EXEC, 2, 2_000_000, child, child)):
        cnproc.parse_cn_messages(d, msgs)
    be._on_cn(msgs)


def test_audit_event_of_a_child_before_its_exec_comes_after_its_fork():
    """The proc connector reported fork and exec before audit's record of the child's connect:
    the fork is still sent, before the connect; the exec's own record ends it."""
    obs: list = []
    be = _backend(obs)
    _fork_and_exec(be, os.getpid(), PID)
    be._out_audit(NetworkConnect(1_500_000, PID, "tcp", True, "127.0.0.1", 80))
    be._out_audit(ProcessExec(ts_ns=2_000_000, pid=PID, ppid=os.getpid(), tid=PID))
    be._out_audit(NetworkConnect(3_000_000, PID, "tcp", True, "127.0.0.1", 81))
    be._flush_out()
    assert [type(o) for o in obs] == [ProcessFork, NetworkConnect, ProcessExec, NetworkConnect]
    assert (obs[0].pid, obs[0].ppid) == (PID, os.getpid())
    assert not be._exec_forks


def _written(obs: list) -> list:
    """The events the assembler writes for ``obs``: ``(EventID, ProcessId, Image,
    CommandLine or None, ProcessGuid)``."""
    from sysmonx.sensor.assemble import Assembler
    from sysmonx.sensor.process import ProcessCache
    asm = Assembler(ProcessCache(machine="0a1b2c3d"), computer="h")
    out = []
    for o in obs:
        for e in asm.build_events(o):
            out.append((e.event_id, e.data["ProcessId"], e.data["Image"],
                        e.data.get("CommandLine"), e.data["ProcessGuid"]))
    return out


def test_exec_whose_audit_record_was_lost_never_gets_the_parents_image():
    """The proc connector reported fork and exec; the exec's audit record was lost (backlog);
    the process then connects (audit time well after the exec: made after it). Before, the
    held fork was sent and the connect (and every later event) carried the parent's image
    and the fork's GUID. Now the fork is followed by the exec's event 1 with what is known:
    the image unknown (``-``: the process is gone), a GUID of its own."""
    obs: list = []
    be = _backend(obs)
    _fork_and_exec(be, os.getpid(), PID)
    be._out_audit(NetworkConnect(9_000_000, PID, "tcp", True, "127.0.0.1", 80))
    be._flush_out()
    assert [type(o) for o in obs] == [ProcessFork, ProcessExec, NetworkConnect]
    assert (obs[1].ts_ns, obs[1].ppid, obs[1].image, obs[1].argv) == \
        (2_000_000, os.getpid(), "-", None)
    assert be._stats["exec_lost"] == 1 and not be._exec_forks and PID not in be._snaps
    events = _written(obs)
    parent_image = os.readlink(f"/proc/{os.getpid()}/exe")
    assert [e[:4] for e in events] == [(1, str(PID), "-", "-"), (3, str(PID), "-", None)]
    assert events[0][4] == events[1][4] and full_guid_key(events[1][4])
    assert parent_image not in {e[2] for e in events}


def test_exec_whose_eoe_was_lost_is_classified_before_the_later_event():
    """The exec's records came but not its EOE (the event waits up to event_timeout): a later
    event of the process finishes it first, with its own image and argv, and no second event
    1 is made for it (by the lost-record rule now or by the timeout later)."""
    from sysmonx.sensor.backends import audit_netlink as nl
    obs: list = []
    be = _backend(obs)
    me = os.getpid()
    _fork_and_exec(be, me, PID)
    syscall = (f'arch=c000003e syscall=59 success=yes exit=0 a0=1 a1=2 a2=3 a3=4 items=2 '
               f'ppid={me} pid={PID} auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 '
               f'fsgid=0 tty=(none) ses=1 comm="true" exe="/usr/bin/true" key="sysmonx"')
    be._on_record(nl.AuditRecord(nl.AUDIT_SYSCALL, 7, 2_000_000, syscall))
    be._on_record(nl.AuditRecord(nl.AUDIT_EXECVE, 7, 2_000_000, 'argc=2 a0="true" a1="x"'))
    be._out_audit(NetworkConnect(9_000_000, PID, "tcp", True, "127.0.0.1", 80))
    be._flush(float("inf"))
    be._flush_out()
    assert [type(o) for o in obs] == [ProcessFork, ProcessExec, NetworkConnect]
    assert (obs[1].image, obs[1].argv) == ("/usr/bin/true", ["true", "x"])
    assert be._stats["exec_lost"] == 0 and be._stats["partial"] == 1 and not be._pending


def test_event_that_may_precede_the_exec_keeps_the_forks_image():
    """Stamped within the clocks' margin of the exec: it may have been made before it (audit's
    clock is coarse), so it is the fork's, as when the exec's record is only late."""
    obs: list = []
    be = _backend(obs)
    _fork_and_exec(be, os.getpid(), PID)
    be._out_audit(NetworkConnect(2_500_000, PID, "tcp", True, "127.0.0.1", 80))
    be._flush_out()
    assert [type(o) for o in obs] == [ProcessFork, NetworkConnect]
    assert be._stats["exec_lost"] == 0 and PID in be._snaps


def test_lost_exec_record_of_a_running_process_takes_its_image_from_proc():
    """The exec's record lost, the process still running the image the proc connector's
    snapshot saw: its event 1 has that image and command line (read from /proc)."""
    import subprocess
    sleep = os.path.realpath("/bin/sleep")
    p = subprocess.Popen([sleep, "30"])
    try:
        deadline = time.monotonic() + 5
        # until the exec is complete (the exe link changes before end_code is set), as when
        # the proc connector reports it
        from sysmonx.sensor.backends.audit import _exec_snapshot
        while not (os.readlink(f"/proc/{p.pid}/exe") == sleep and _exec_snapshot(p.pid)[1]) \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        obs: list = []
        be = _backend(obs)
        _fork_and_exec(be, os.getpid(), p.pid)
        be._out_audit(NetworkConnect(9_000_000, p.pid, "tcp", True, "127.0.0.1", 80))
        be._flush_out()
        assert [type(o) for o in obs] == [ProcessFork, ProcessExec, NetworkConnect]
        assert obs[1].image == sleep and obs[1].end_data
        events = _written(obs)
        assert [e[:4] for e in events] == [(1, str(p.pid), sleep, f"{sleep} 30"),
                                           (3, str(p.pid), sleep, None)]
        assert events[0][4] == events[1][4]
    finally:
        p.kill()
        p.wait()


def test_exec_event_without_its_execve_record_has_no_empty_command_line(monkeypatch):
    """The EXECVE record (argv) of an exec lost, its SYSCALL record kept: the command line is
    unknown (``-``; /proc's while it shows this image), never the empty string."""
    from sysmonx.sensor.backends import audit_netlink as nl
    from sysmonx.sensor.backends.audit_records import AuditEvent
    obs: list = []
    be = _backend(obs)
    be._cn = None
    me = os.getpid()
    syscall = (f'arch=c000003e syscall=59 success=yes exit=0 a0=1 a1=2 a2=3 a3=4 items=2 '
               f'ppid={me} pid={PID} auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 '
               f'fsgid=0 tty=(none) ses=1 comm="true" exe="/usr/bin/true" key="sysmonx"')
    records = [nl.AuditRecord(nl.AUDIT_SYSCALL, 7, 5_000_000, syscall),
               nl.AuditRecord(nl.AUDIT_EXECVE, 7, 5_000_000, 'argc=2 a0="true" a1="x"'),
               nl.AuditRecord(nl.AUDIT_CWD, 7, 5_000_000, 'cwd="/tmp"')]
    for drop in (None, nl.AUDIT_EXECVE):
        ev = AuditEvent(7, 5_000_000, 0.0)
        ev.records = [r for r in records if r.type != drop]
        be._classify(ev)
    be._flush_out()
    assert [(o.image, o.argv, o.cwd) for o in obs] == [("/usr/bin/true", ["true", "x"], "/tmp"),
                                                       ("/usr/bin/true", None, "/tmp")]
    assert [e[3] for e in _written(obs[1:])] == ["-"]


def full_guid_key(g: str) -> bool:
    return g != "{00000000-0000-0000-0000-000000000000}" and g[10:19] != "0000-0000"


def test_a_child_that_execs_at_once_sends_no_fork():
    """An exec whose record is the child's first: no fork (an exec says all a fork would)."""
    obs: list = []
    be = _backend(obs)
    _fork_and_exec(be, os.getpid(), PID)
    be._out_audit(ProcessExec(ts_ns=2_000_000, pid=PID, ppid=os.getpid(), tid=PID))
    be._out_audit(NetworkConnect(3_000_000, PID, "tcp", True, "127.0.0.1", 81))
    be._flush_out()
    assert [type(o) for o in obs] == [ProcessExec, NetworkConnect]


def test_tier_c_connect_reported_after_the_exec_but_made_before_is_the_forks():
    """Tier C: tracefs reports a connect after the proc connector's exec was handled; made
    before the exec (its time), it belongs to the fork, which is then sent before it; one
    made after the exec is the exec's image's (no fork)."""
    from sysmonx.sensor.backends.cnproc import CnprocBackend
    obs: list = []
    be = CnprocBackend(obs.append, options={"tracefs": False, "enrich": False})
    be.emit_all = obs.extend  # type: ignore[method-assign]
    be._forks[PID] = ProcessFork(1_000_000, PID, os.getpid(), 5)
    be._on_exec((cnproc.PROC_EVENT_EXEC, 0, 1, 2_000_000, PID, PID), None, False, 0)
    be._out(NetworkConnect(1_500_000, PID, "tcp", True, "127.0.0.1", 80))
    be._out(NetworkConnect(2_500_000, PID, "tcp", True, "127.0.0.1", 81))
    be._flush_out()
    assert [type(o) for o in obs] == [ProcessExec, ProcessFork, NetworkConnect, NetworkConnect]
    assert obs[1].pid == PID and not be._exec_forks
    obs.clear()
    be._forks[PID] = ProcessFork(3_000_000, PID, os.getpid(), 5)
    be._on_exec((cnproc.PROC_EVENT_EXEC, 0, 2, 4_000_000, PID, PID), None, False, 0)
    be._out(NetworkConnect(4_500_000, PID, "tcp", True, "127.0.0.1", 82))
    be._flush_out()
    assert [type(o) for o in obs] == [ProcessExec, NetworkConnect]


def test_exec_key_not_taken_from_a_later_image(monkeypatch):
    """An exec without its own snapshot while /proc shows a later image of the same process
    (same pid and start): that image's end_code is not this exec's; the two images get two
    GUIDs, the first a key the GUID marks as the sensor's."""
    from sysmonx.sensor import process as process_mod
    live = {"ppid": 1, "start_ticks": 777, "end_data": 0x5612_3456_7000, "uid": 0,
            "image": "/usr/bin/sleep", "argv": ["sleep", "9"], "cwd": "/", "auid": 0,
            "sessionid": 1, "mnt_ns": 1, "pid_ns": 2}
    monkeypatch.setattr(process_mod, "read_proc", lambda pid: dict(live))
    cache = process_mod.ProcessCache(machine="3d1219c7")
    sh = cache.on_exec(4242, start_ticks=777, image="/usr/bin/dash", ts_ns=1)
    assert sh.end_data is None and guid_key_is_synthetic(sh.guid)
    assert sh.command_line is None  # not the later image's argv
    sleep = cache.on_exec(4242, start_ticks=777, image="/usr/bin/sleep",
                          argv=["sleep", "9"], end_data=0x5612_3456_7000, ts_ns=2)
    assert sleep.guid != sh.guid and not guid_key_is_synthetic(sleep.guid)
    # /proc showing this very image (deleted since): its facts are taken
    live["image"] = "/usr/bin/dash (deleted)"
    again = cache.on_exec(4243, start_ticks=777, image="/usr/bin/dash", ts_ns=3)
    assert again.end_data == 0x5612_3456_7000 and again.command_line == "sleep 9"


def test_listening_socket_owner_is_not_a_child_forked_after():
    """A listener forks a child that still holds the listening socket (between fork and exec):
    an accepted connection is the listener's, not the child's (which the newest-first search
    found first)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # holds the inherited listening socket, as before an exec
        os.close(r)
        os.write(w, b"x")
        time.sleep(5)
        os._exit(0)
    try:
        os.close(w)
        assert os.read(r, 1) == b"x"
        owners = SocketOwners()
        assert owners.lookup("tcp", port, "127.0.0.1", listening=True) == os.getpid()
        # a connection's pid is the listener's as well when the child was found first
        owners = SocketOwners()
        inode = next(ino for _ip, p, st, ino in _proc_net_entries("tcp")
                     if p == port and st == 10)
        owners._inode_pid[inode] = child
        assert owners.lookup("tcp", port, "127.0.0.1", listening=True) == os.getpid()
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)
        os.close(r)
        srv.close()


def test_listening_socket_held_by_one_process_is_its_own():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    try:
        assert SocketOwners().lookup("tcp", srv.getsockname()[1], "127.0.0.1",
                                     listening=True) == os.getpid()
    finally:
        srv.close()


def _prefork(srv: socket.socket, n: int, serve: bool) -> list:
    """``n`` forked workers holding ``srv``: each accepts (``serve``: sends its pid, holds the
    connection until the peer closes it) or only sleeps (holds the socket, never accepts)."""
    kids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            try:
                while serve:
                    c, _peer = srv.accept()
                    c.sendall(str(os.getpid()).encode())
                    c.recv(1)
                    c.close()
                time.sleep(30)
            finally:
                os._exit(0)
        kids.append(pid)
    return kids


def _stop(kids: list) -> None:
    for pid in kids:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


@pytest.mark.parametrize("via", ["sock_diag", "proc"])
def test_prefork_server_accept_is_the_workers_not_the_masters(via):
    """Seen: tier C named a pre-fork server's master (the topmost holder of the listening
    socket) for every connection, where tier A names the worker that called accept(). The
    accepted connection's own socket says which worker holds it (found by netlink sock_diag,
    or by /proc/net/tcp where that cannot be used)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    kids = _prefork(srv, 2, serve=True)
    try:
        seen = set()
        for _ in range(8):
            c = socket.create_connection(("127.0.0.1", port))
            worker = int(c.recv(16))
            assert worker in kids
            owners = SocketOwners()
            if via == "proc":
                owners._diag = None
            assert owners.accepted_by(port, "127.0.0.1", "127.0.0.1",
                                      c.getsockname()[1]) == worker
            seen.add(worker)
            # holders with more descriptors than the budget: not read, unknown
            owners = SocketOwners()
            owners.accept_fd_budget = 2
            assert owners.accepted_by(port, "127.0.0.1", "127.0.0.1",
                                      c.getsockname()[1]) is None
            c.close()
        assert SocketOwners().lookup("tcp", port, "127.0.0.1", listening=True) == os.getpid()
    finally:
        _stop(kids)
        srv.close()


def test_sock_diag_and_proc_agree_on_a_connection():
    from sysmonx.sensor.procfs import _SockDiag, _tcp_connection_inode
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    diag = _SockDiag()
    try:
        c = socket.create_connection(("127.0.0.1", port))
        sport = c.getsockname()[1]
        for_both = ("127.0.0.1", port, "127.0.0.1", sport)
        assert diag.find(*for_both) == _tcp_connection_inode(*for_both) == (True, 0, 1)  # queued
        a, _peer = srv.accept()
        want = (True, os.fstat(a.fileno()).st_ino, 1)
        assert diag.find(*for_both) == _tcp_connection_inode(*for_both) == want
        # no such connection (the kernel's look-up answers with the listener: not found)
        assert diag.find("127.0.0.1", port, "127.0.0.1", 1) == (False, 0, 0)
        assert _tcp_connection_inode("127.0.0.1", port, "127.0.0.1", 1) == (False, 0, 0)
        a.close()
        c.close()
    finally:
        diag.close()
        srv.close()


def test_accept_nobody_can_be_named_for_is_unknown():
    """Several holders of the listening socket and nothing that tells which took the
    connection: still queued (nobody took it yet: QUEUED, ask again), closed before it was
    read (``None``: the event's ProcessId 0, Image '-'), never the master."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    kids = _prefork(srv, 2, serve=False)
    try:
        c = socket.create_connection(("127.0.0.1", port))   # completed by the kernel: queued
        sport = c.getsockname()[1]
        assert SocketOwners().accepted_by(port, "127.0.0.1", "127.0.0.1", sport) == QUEUED
        a, _peer = srv.accept()    # the master takes it: its socket names the master now
        assert SocketOwners().accepted_by(port, "127.0.0.1", "127.0.0.1", sport) == os.getpid()
        a.close()                  # closed by the server first: TIME_WAIT, no descriptor
        c.close()
        time.sleep(0.05)
        assert SocketOwners().accepted_by(port, "127.0.0.1", "127.0.0.1", sport) is None
    finally:
        _stop(kids)
        srv.close()


def test_accepter_cache_is_per_listening_socket_not_per_port():
    """Seen: the one-holder answer was cached per port, so an accept on another listener of
    the same port (another address, several holders) within ``port_ttl`` was given the
    first listener's process. It is cached per listening socket now."""
    a = socket.socket()
    a.bind(("127.0.0.1", 0))
    a.listen(4)
    port = a.getsockname()[1]
    b = socket.socket()
    b.bind(("127.0.0.2", port))
    b.listen(4)
    kid = os.fork()
    if kid == 0:   # b: held by us and this child; a: by us only
        a.close()
        time.sleep(30)
        os._exit(0)
    kids = [kid]
    try:
        owners = SocketOwners(port_ttl=30)
        c = socket.create_connection(("127.0.0.1", port))
        s, _peer = a.accept()
        assert owners.accepted_by(port, "127.0.0.1", "127.0.0.1",
                                  c.getsockname()[1]) == os.getpid()
        d = socket.create_connection(("127.0.0.2", port))
        # nobody took d yet: queued (before: a's holder, from the per-port cache)
        assert owners.accepted_by(port, "127.0.0.2", "127.0.0.1", d.getsockname()[1]) == QUEUED
        e, _peer = b.accept()
        assert owners.accepted_by(port, "127.0.0.2", "127.0.0.1",
                                  d.getsockname()[1]) == os.getpid()
        for x in (c, s, d, e):
            x.close()
    finally:
        _stop(kids)
        a.close()
        b.close()


def _boot_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def _start_tick(pid: int) -> int:
    from sysmonx.sensor.procfs import parse_stat
    with open(f"/proc/{pid}/stat", "rb") as f:
        parsed = parse_stat(f.read())
    assert parsed is not None
    return parsed[2]


def _forking_server(srv: socket.socket, detach: bool) -> int:
    """A fork-per-connection server (``socketserver.ForkingTCPServer``'s shape): it accepts,
    forks a handler that sends its pid and holds the connection, and closes its own copy.
    ``detach``: the handler forks again and closes both sockets; the grandchild serves, so
    the holder's parent does not hold the listener."""
    pid = os.fork()
    if pid == 0:
        try:
            while True:
                c, _peer = srv.accept()
                if os.fork() == 0:
                    if detach:
                        if os.fork() != 0:
                            srv.close()
                            c.close()
                            time.sleep(30)
                            os._exit(0)
                        time.sleep(0.05)   # its parent has closed both by then
                    c.sendall(str(os.getpid()).encode())
                    time.sleep(30)
                    os._exit(0)
                c.close()
        finally:
            os._exit(0)
    return pid


@pytest.mark.parametrize("detach", [False, True])
def test_fork_per_connection_server_accept_is_the_servers_not_the_handlers(detach):
    """Seen: with a fork-per-connection server, the accepted connection is held, when tier C
    reads it, only by the handler forked after accept() (the server closed its copy); it
    was named, where tier A names the server (the caller of accept). A holder started after
    the transition gives its parent when that parent holds the listening socket, else the
    unknown value; started in the transition's clock tick: unknown (cannot be decided)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    server = _forking_server(srv, detach)
    # the listener has several holders (the one-holder case names its holder, right here)
    sleeper = _prefork(srv, 1, serve=False)
    srv.close()
    conns = []
    try:
        first = socket.create_connection(("127.0.0.1", port))   # a handler that stays
        conns.append(first)
        int(first.recv(16))
        before = _boot_ns()
        time.sleep(0.05)   # the next handler starts clock ticks after `before`
        c = socket.create_connection(("127.0.0.1", port))
        conns.append(c)
        handler = int(c.recv(16))
        assert handler != server
        sport = c.getsockname()[1]
        got = SocketOwners().accepted_by(port, "127.0.0.1", "127.0.0.1", sport,
                                         at_boot_ns=before)
        assert got == (None if detach else server)
        tick_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
        same_tick = _start_tick(handler) * tick_ns + tick_ns // 2
        assert SocketOwners().accepted_by(port, "127.0.0.1", "127.0.0.1", sport,
                                          at_boot_ns=same_tick) is None
        # a holder that was there before the transition is the accepter itself
        assert SocketOwners().accepted_by(port, "127.0.0.1", "127.0.0.1", sport,
                                          at_boot_ns=_boot_ns() + 10**9) == handler
    finally:
        for x in conns:
            x.close()
        _stop([server] + sleeper)


def test_host_walk_for_listener_holders_has_a_budget():
    """``_holders_of`` read every descriptor of the host, on tier C's reader thread, with no
    bound. Over ``holders_fd_budget`` it stops: unknown, counted, cached for ``port_ttl``
    (not walked again per accept); a holder missing from the cached list gets at most one
    re-walk per listening socket per ``port_ttl``."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    kids = _prefork(srv, 1, serve=False)
    new: list = []
    try:
        c = socket.create_connection(("127.0.0.1", port))
        sport = c.getsockname()[1]
        a, _peer = srv.accept()
        owners = SocketOwners(port_ttl=30)
        owners.holders_fd_budget = 2
        assert owners.accepted_by(port, "127.0.0.1", "127.0.0.1", sport) is None
        assert owners.budget_exceeded == 1
        assert owners.accepted_by(port, "127.0.0.1", "127.0.0.1", sport) is None
        assert owners.budget_exceeded == 1   # the over-budget answer is cached, not re-walked
        a.close()
        c.close()
        # re-walks: one per listening socket per port_ttl
        owners = SocketOwners(port_ttl=30)
        c = socket.create_connection(("127.0.0.1", port))
        a, _peer = srv.accept()
        assert owners.accepted_by(port, "127.0.0.1", "127.0.0.1",
                                  c.getsockname()[1]) == os.getpid()
        w1 = _prefork(srv, 1, serve=True)   # a worker the cached holder list does not have
        new += w1
        d = socket.create_connection(("127.0.0.1", port))
        assert int(d.recv(16)) == w1[0]
        assert owners.accepted_by(port, "127.0.0.1", "127.0.0.1", d.getsockname()[1]) == w1[0]
        _stop(w1)
        new.clear()
        w2 = _prefork(srv, 1, serve=True)
        new += w2
        e = socket.create_connection(("127.0.0.1", port))
        assert int(e.recv(16)) == w2[0]
        assert owners.accepted_by(port, "127.0.0.1", "127.0.0.1", e.getsockname()[1]) is None
        assert SocketOwners().accepted_by(port, "127.0.0.1", "127.0.0.1",
                                          e.getsockname()[1]) == w2[0]
        for x in (a, c, d, e):
            x.close()
    finally:
        _stop(kids + new)
        srv.close()


def test_tier_c_accept_retry_list_is_capped(monkeypatch):
    """Every queued accept was asked about again every 10 ms: a client filling a slow
    server's backlog multiplied the look-ups on the reader thread. Beyond
    ``ACCEPT_RETRY_MAX`` an accept is written with the unknown values and counted."""
    from sysmonx.sensor.backends.cn_tracefs import TcpTransition
    from sysmonx.sensor.backends.cnproc import CnprocBackend
    monkeypatch.setattr(cnproc, "ACCEPT_RETRY_MAX", 2)
    obs: list = []
    be = CnprocBackend(obs.append, options={"tracefs": False, "enrich": False})
    be.emit_all = obs.extend  # type: ignore[method-assign]
    be._owners.accepted_by = lambda *a, **k: QUEUED  # type: ignore[method-assign]
    for sport in (40000, 40001, 40002):
        tr = TcpTransition(7, 7, 1_000, False, 8080, sport, "127.0.0.1", "127.0.0.1", 3, 1,
                           "tcp")
        be._accepted(tr, time.monotonic() + 5)
    be._flush_out()
    assert len(be._accept_retry) == 2
    assert [(o.pid, o.source_port) for o in obs] == [(0, 40002)]
    st = be.stats()
    assert st["accept_retry_full"] == 1 and st["accept_unattributed"] == 1
    be._owners.budget_exceeded = 3
    assert be.stats()["accept_budget_exceeded"] == 3


def test_tier_c_asks_again_for_a_queued_accept_then_writes_it_unknown():
    """A connection still queued when tier C reads it (no descriptor: nobody accepted it yet)
    is asked about again at the next reads; named when it is taken, else after
    ``ACCEPT_WAIT_S`` written with the unknown values (before: the one holder blocked in
    accept() was named, which a holder coming back to accept() can make wrong)."""
    from sysmonx.sensor.backends.cn_tracefs import TcpTransition
    from sysmonx.sensor.backends.cnproc import CnprocBackend
    from sysmonx.sensor.procfs import QUEUED
    answers: list = []
    obs: list = []
    be = CnprocBackend(obs.append, options={"tracefs": False, "enrich": False})
    be.emit_all = obs.extend  # type: ignore[method-assign]
    be._owners.accepted_by = lambda *a, **k: answers.pop(0)  # type: ignore[method-assign]
    tr = TcpTransition(7, 7, 1_000, False, 8080, 40000, "127.0.0.1", "127.0.0.1", 3, 1, "tcp")
    answers[:] = [QUEUED, QUEUED, 4242]
    be._accepted(tr, time.monotonic() + 5)
    be._retry_accepts()
    assert obs == [] and len(be._accept_retry) == 1
    be._retry_accepts()
    be._flush_out()
    assert [(type(o), o.pid, o.initiated) for o in obs] == [(NetworkConnect, 4242, False)]
    obs.clear()
    answers[:] = [QUEUED, QUEUED]
    be._accepted(tr, time.monotonic() + 5)
    be._retry_accepts(final=True)   # given up: unknown
    be._flush_out()
    assert [(o.pid, o.dest_port, o.source_port) for o in obs] == [(0, 8080, 40000)]
    assert be._stats["accept_unattributed"] == 1 and not be._accept_retry


# ------------------------------------------------------------------------------------------
# live: bench/bench_exec_guids.py's load under each tier
# ------------------------------------------------------------------------------------------

def _live_tiers() -> list:
    if os.geteuid() != 0:
        return []
    from sysmonx.sensor.backends import probe, tiers
    return [t for t in tiers() if probe(t) is None]


@pytest.mark.live
@pytest.mark.parametrize("tier", _live_tiers())
def test_short_lived_processes_join_on_every_tier(tier):
    """40 of each shape (``/bin/true``; ``sh -c 'true; :'``; ``sh -c 'exec true'``; a fork that
    connects, then execs ``true``): every image has a full, distinct ProcessGuid (synthetic or
    not), its event 5 carries it, a child's ParentProcessGuid is its shell's, and the connect
    made between fork and exec carries the fork's full GUID (before: 95 of 100 had the zero
    GUID on tier B). The share of synthetic keys is printed, not asserted (it depends on the
    machine's load)."""
    import importlib.util
    bench = Path(__file__).resolve().parents[1] / "bench" / "bench_exec_guids.py"
    spec = importlib.util.spec_from_file_location("bench_exec_guids", bench)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    n = 40
    with tempfile.TemporaryDirectory(prefix="sysmonx-guids-") as d:
        workdir = Path(d)
        lines, sc = mod.run_tier(tier, mod.build_driver(workdir), n, workdir)
    print("\n".join(lines))
    for shape, o in sc.items():
        assert (o["seen"], o["full"], o["terminate_joins"], o["extra"]) == (n, n, n, 0), \
            (shape, o)
    assert sc["child"]["parent_joins"] == n
    assert sc["chain"]["distinct"] == n
    assert sc["net"]["connect_joins"] == n
    if tier == "ebpf":
        assert all(o["synthetic"] == 0 for o in sc.values())
