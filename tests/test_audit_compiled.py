"""The compiled audit record reader and field scanner (``sysmonx.sensor._ringbatch.audit_recv``
and ``audit_fields``, used by the tier-B backend through ``audit_netlink.compiled_recv`` /
``compiled_fields``) against the Python code that defines them: ``AuditSocket.recv_datagram`` +
``AuditSocket.split`` + ``parse_record``, and ``parse_fields_py``.

No kernel audit is needed: the datagrams go through a Unix datagram socket pair, which
``recvmmsg`` reads as it reads the audit netlink socket (one datagram per message). The inputs mix
unicast records (``nlmsg_len`` without the header), multicast records, control replies of
several messages per datagram, headers the fast parser leaves to Python (long numbers, no
header), trailing NULs and newlines, invalid UTF-8 and random field text."""

from __future__ import annotations

import errno
import os
import random
import socket

import pytest

from sysmonx.sensor import procfs
from sysmonx.sensor.backends import audit as audit_mod
from sysmonx.sensor.backends import audit_netlink as nl

pytestmark = pytest.mark.skipif(nl.compiled_recv is None or nl.compiled_fields is None,
                                reason="compiled audit reader not built or disabled "
                                       "(SYSMONX_PURE_PYTHON)")

WANT = audit_mod._WANTED
PIDS = (99999991, 99999992, 99999993)   # above any pid_max: /proc has none of them


def _quirk(mtype: int, body: bytes) -> bytes:
    return nl.NLMSG_HDR.pack(len(body), mtype, 0, 0, 0) + body          # unicast: header not counted


def _fixed(mtype: int, body: bytes) -> bytes:
    return nl.NLMSG_HDR.pack(16 + len(body), mtype, 0, 0, 0) + body     # multicast copy


def _exec_event(serial: int, pid: int, arg: str, wrap=_quirk) -> list:
    head = f"audit(1765000000.{serial % 1000:03d}:{serial}): ".encode()
    sysc = (f'arch=c000003e syscall=59 success=yes exit=0 a0=55d0 a1=55d1 a2=55d2 a3=0 items=2 '
            f'ppid=1 pid={pid} auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 '
            f'tty=(none) ses=4294967295 comm="true" exe="/usr/bin/true" subj=unconfined '
            f'key="sysmonx"').encode()
    return [wrap(1300, head + sysc + b"\0"),
            wrap(1309, head + f'argc=2 a0="/bin/true" a1="{arg}"'.encode()),
            wrap(1321, head + b"fver=0 fp=0 fi=0 fe=0 old_pp=0 old_pi=0 old_pe=0 pp=1ff pi=0"),
            wrap(1307, head + b'cwd="/tmp/a b"\n'),
            wrap(1302, head + b'item=0 name="/bin/true" inode=1 dev=fe:00 mode=0100755 '
                              b'ouid=0 ogid=0 rdev=00:00 nametype=NORMAL'),
            wrap(1302, head + b'item=1 name=(null) inode=2 dev=fe:00 mode=0100755 '
                              b'nametype=NORMAL\0\0\n'),
            wrap(1327, head + b"proctitle=2F62696E2F7472756500"),
            wrap(1320, head)]


def _odd_datagrams(rnd: random.Random) -> list:
    out = []
    for body in (b"audit(12345678901.5:7): a=1",            # 11 digits of seconds: Python
                 b"audit(1.5:1234567890123456789): a=1",    # 19 digits of serial: Python
                 b"audit(1.123456789012:9):\ta=1",          # long fraction, tab
                 b"audit(1.1:9):",                          # no text
                 b"audit(1.1:9):  two spaces",
                 b"audit(1.:9): no fraction",
                 b"audit(x.1:9): bad",
                 b"garbage", b"",
                 b"audit(2.25:10): msg=\xff\xfe bytes \xc3\xa9 ok\0",
                 b"audit(3.3:11): a=\"x\"\n\0\n\0"):
        out.append(_quirk(rnd.choice([1300, 1302, 1307, 1309, 1320, 1327, 1400]), body))
        out.append(_fixed(1306, body))
    # control replies: several messages in one datagram, and an inconsistent length
    out.append(nl.NLMSG_HDR.pack(20, 1013, 2, 9, 0) + b"abcd"
               + nl.NLMSG_HDR.pack(20, nl.NLMSG_DONE, 2, 9, 0) + b"\0\0\0\0")
    out.append(nl.NLMSG_HDR.pack(20, 1000, 0, 1, 0) + b"abcd"
               + nl.NLMSG_HDR.pack(999, 1300, 0, 0, 0) + b"audit(4.4:12): after a reply")
    out.append(nl.NLMSG_HDR.pack(8, 1300, 0, 0, 0) + b"audit(5.5:13): short length")
    out.append(b"\x01\x02\x03")                               # shorter than a header
    out.append(nl.NLMSG_HDR.pack(16, 1320, 0, 0, 0))         # header only
    return out


def _pure(datagrams: list) -> list:
    out = []
    for d in datagrams:
        for mtype, _flags, _seq, body in nl.AuditSocket.split(d):
            if mtype in WANT:
                rec = nl.parse_record(mtype, body)
                if rec is not None:
                    out.append((rec.type, rec.serial, rec.ts_ns, rec.text))
    return out


def _compiled(fd: int, vlen: int = 64) -> tuple:
    out, reads = [], 0
    while True:
        recs, got = nl.compiled_recv(fd, vlen, WANT)   # type: ignore[misc]
        if not got:
            return out, reads
        assert got <= vlen
        reads += got
        for mtype, serial, ts_ns, text in recs:
            if serial is None:
                rec = nl.parse_record(mtype, text)
                if rec is None:
                    continue
                serial, ts_ns, text = rec.serial, rec.ts_ns, rec.text
            out.append((mtype, serial, ts_ns, text))


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for s, opt in ((a, socket.SO_SNDBUF), (b, socket.SO_RCVBUF)):
        s.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
    yield a, b
    a.close()
    b.close()


@pytest.mark.parametrize("seed", range(4))
def test_audit_recv_equals_split_and_parse_record(pair, seed):
    a, b = pair
    rnd = random.Random(seed)
    datagrams = []
    for i in range(40):
        datagrams += _exec_event(1000 + i, rnd.choice(PIDS), f"arg-{i}",
                                 wrap=rnd.choice([_quirk, _fixed]))
    datagrams += _odd_datagrams(rnd)
    rnd.shuffle(datagrams)
    datagrams = datagrams[:400]   # within the socket's queue
    for d in datagrams:
        a.send(d)
    got, reads = _compiled(b.fileno(), vlen=rnd.choice([1, 7, 64, 500]))
    want = _pure(datagrams)
    assert reads == len(datagrams)
    assert got == want
    # the fast path handled the usual records itself (Python only for the odd headers)
    assert sum(1 for t in want if t[3].startswith("argc=2")) == \
        sum(1 for d in datagrams if b"argc=2" in d)


def test_audit_recv_exact_values_and_errors(pair):
    a, b = pair
    assert nl.compiled_recv(b.fileno(), 64, WANT) == ([], 0)         # nothing waiting
    a.send(_quirk(1300, b"audit(1765000000.125:42): pid=7 comm=\"x\"\0\n"))
    a.send(_quirk(1327, b"audit(1765000000.125:42): proctitle=78"))   # not wanted
    a.send(_quirk(1300, b"audit(1765000000.5:43):"))
    recs, got = nl.compiled_recv(b.fileno(), 64, WANT)
    assert got == 3
    assert recs == [(1300, 42, 1765000000_125000000, 'pid=7 comm="x"'),
                    (1300, 43, 1765000000_500000000, "")]
    r, w = os.pipe()
    os.close(w)
    with pytest.raises(OSError) as exc:
        nl.compiled_recv(r, 64, WANT)         # not a socket
    assert exc.value.errno == errno.ENOTSOCK
    os.close(r)
    with pytest.raises(TypeError):
        nl.compiled_recv(b.fileno(), 64, [1300])


_ALPHABET = ['a', 'b', 'Z', '_', '0', '9', '=', '[', ']', '"', "'", ' ', '\t', '\n', '\x0b',
             '\x1c', '\x1f', '(', ')', ':', '.', '-', '/', 'arch', 'a1[2]', '=x', 'exe=',
             '"q q"', "'s s'", '[12]=', '\x00']


@pytest.mark.parametrize("seed", range(6))
def test_audit_fields_equals_the_regular_expression(seed):
    rnd = random.Random(seed)
    for _ in range(3000):
        text = "".join(rnd.choice(_ALPHABET) for _ in range(rnd.randrange(0, 40)))
        assert nl.compiled_fields(text) == nl.parse_fields_py(text), repr(text)  # type: ignore
    real = ('arch=c000003e syscall=59 success=yes exit=0 a0=55 items=2 ppid=1 pid=2 '
            'comm="true" exe="/usr/bin/true" key=(null) a1[0]=41 a1_len=3 cwd="/a b"')
    assert nl.compiled_fields(real) == nl.parse_fields_py(real)  # type: ignore[misc]
    assert nl.compiled_fields(real)["cwd"] == '"/a b"'  # type: ignore[index,misc]
    assert nl.compiled_fields("a=\u00e9") is None           # type: ignore[misc] # not ASCII
    assert nl.parse_fields("a=\u00e9 b=1") == {"a": "\u00e9", "b": "1"}


def _observations(datagrams: list, compiled: bool) -> tuple:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for s, opt in ((a, socket.SO_SNDBUF), (b, socket.SO_RCVBUF)):
        s.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
    obs: list = []
    be = audit_mod.AuditBackend(obs.append, options={"socket_lookup": "none",
                                                     "compiled_reader": compiled})
    be.emit_all = obs.extend  # type: ignore[method-assign]
    rd = object.__new__(nl.AuditSocket)
    rd.sock, rd._buf, rd._poller, rd.pending = b, bytearray(1 << 16), None, []
    be._rd = rd
    try:
        for d in datagrams:
            a.send(d)
        n = be._read_some(0.05, limit=100000, budget=5.0)
        be._flush(float("inf"))
        be._flush_out()
    finally:
        a.close()
        b.close()
    return n, obs, {k: be._stats[k] for k in ("records", "events", "exec_unpaired",
                                               "parse_errors", "partial")}


def test_backend_gives_the_same_observations_with_either_reader():
    rnd = random.Random(7)
    datagrams = []
    for i in range(60):
        datagrams += _exec_event(5000 + i, rnd.choice(PIDS), f"x y {i}")
    datagrams += _odd_datagrams(rnd)
    pure = _observations(datagrams, False)
    fast = _observations(datagrams, True)
    assert pure[0] == fast[0] == len(datagrams)
    assert fast[1] == pure[1]
    assert fast[2] == pure[2]
    execs = [o for o in fast[1] if type(o).__name__ == "ProcessExec"]
    assert len(execs) == 60
    assert execs[0].argv == ["/bin/true", "x y 0"] and execs[0].cwd == "/tmp/a b"
    assert execs[0].image == "/usr/bin/true" and execs[0].ppid == 1 and execs[0].uid == 0


def test_read_process_of_a_gone_pid_stops_at_the_first_open(monkeypatch):
    calls = []
    real_open, real_readlink = os.open, os.readlink

    def counting_open(path, *a, **kw):
        calls.append(path)
        return real_open(path, *a, **kw)

    def counting_readlink(path, *a, **kw):
        calls.append(path)
        return real_readlink(path, *a, **kw)

    monkeypatch.setattr(os, "open", counting_open)
    monkeypatch.setattr(os, "readlink", counting_readlink)
    snap = procfs.read_process(PIDS[0])
    assert calls == [f"/proc/{PIDS[0]}/cmdline"]
    assert (snap.exe, snap.argv, snap.cwd, snap.start_ticks, snap.uid) == (None,) * 5
    calls.clear()
    me = procfs.read_process(os.getpid())       # a live process: everything read as before
    assert me.start_ticks is not None and me.argv and me.exe and me.cwd == os.getcwd()
    # 7 opens and links, and the two namespace links read as text (procfs.ns_inode)
    assert me.uid == os.getuid() and len(calls) == 9
    assert [f"/proc/{os.getpid()}/ns/mnt", f"/proc/{os.getpid()}/ns/pid"] == \
        [c for c in calls if "/ns/" in c]
    assert (me.mnt_ns, me.pid_ns) == (os.stat("/proc/self/ns/mnt").st_ino,
                                      os.stat("/proc/self/ns/pid").st_ino)


def test_ns_inode_is_the_links_stat_inode_without_following_it(monkeypatch, child):
    """``procfs.ns_inode`` (and the compiled snapshot's reading of the same links) gives the
    ``st_ino`` that ``stat()`` gives, from the link's text; ``None`` (the compiled: 0) for a
    gone process or a text not of the ``type:[inode]`` form, never a plausible number."""
    for pid in (os.getpid(), child):
        for name in ("mnt", "pid", "net", "uts"):
            path = f"/proc/{pid}/ns/{name}"
            assert procfs.ns_inode(path) == os.stat(path).st_ino
    assert procfs.ns_inode(f"/proc/{PIDS[0]}/ns/mnt") is None
    snap = audit_mod._exec_snapshot(child)
    assert snap[3] == (os.stat(f"/proc/{child}/ns/mnt").st_ino,
                       os.stat(f"/proc/{child}/ns/pid").st_ino)
    for text in ("mnt:[]", "mnt:[12a]", "mnt:4026531841", "[4026531841]", "mnt:[4026531841",
                 "mnt:[-1]", "mnt:[\u0661\u0662]"):
        monkeypatch.setattr(os, "readlink", lambda p, t=text: t)
        assert procfs.ns_inode("/proc/self/ns/mnt") is None, text


# ---------------------------------------------------------------------------------------------
# the compiled wait for proc connector messages (_ringbatch.cn_gather)
# ---------------------------------------------------------------------------------------------

def _cn(what: int, cpu: int, seq: int, ts: int, *fields: int) -> bytes:
    from sysmonx.sensor.backends import cnproc
    body = cnproc._EVHDR.pack(what, cpu, ts) + b"".join(
        f.to_bytes(4, "little") for f in (fields + (0,) * 6)[:6])
    cn = cnproc._CNMSG.pack(cnproc.CN_IDX_PROC, cnproc.CN_VAL_PROC, seq, 0, len(body), 0) + body
    return cnproc._NLMSG.pack(16 + len(cn), 3, 0, seq, 0) + cn


@pytest.fixture
def child():
    import subprocess
    import sys
    # running its own image before the test reads its /proc (right after the fork it is still
    # the parent's image: seen as a flaky end_code on a fresh CI machine)
    p = subprocess.Popen([sys.executable, "-c", "import time; print('ready', flush=True); "
                          "time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    yield p.pid
    p.kill()
    p.wait()


def test_cn_gather_takes_each_exec_snapshot_and_returns_the_datagrams(pair, child):
    from sysmonx.sensor.backends import cnproc
    gather = audit_mod._cn_gather
    assert gather is not None
    a, b = pair
    me, dead = os.getpid(), PIDS[0]
    sent = [_cn(cnproc.PROC_EVENT_FORK, 0, 1, 10, me, me, child, child),
            _cn(cnproc.PROC_EVENT_EXEC, 0, 2, 11, child, child),
            _cn(cnproc.PROC_EVENT_EXEC, 1, 1, 12, dead, dead),
            _cn(cnproc.PROC_EVENT_EXEC, 1, 2, 13, me, me),
            _cn(cnproc.PROC_EVENT_EXIT, 1, 3, 14, dead, dead, 0, 17, me, me),
            _cn(cnproc.PROC_EVENT_EXEC, 0, 3, 15, child, child)[:60]]   # cut: no snapshot
    for d in sent:
        a.send(d)
    datagrams, snaps, enobufs, err, nomem = gather(b.fileno(), 50, 2048)
    assert (datagrams, enobufs, err, nomem) == (sent, 0, 0, 0)
    assert [s[0] for s in snaps] == [child, dead, me]
    got = [audit_mod._snapshot_of(data, (mnt, pidns) if mnt and pidns else None)
           for _, data, mnt, pidns in snaps]
    # a gone process: nothing read, its namespaces unknown (inode 0, never a real one)
    assert got[1] == (None, None, None, None) and snaps[1][1:] == (None, 0, 0)
    for (pid, *_), snap in zip(snaps, got, strict=True):
        if pid != dead:
            # the namespaces read with the stat, as the pure snapshot reads them
            assert snap == audit_mod._exec_snapshot(pid) and snap[0] is not None
            assert snap[3] == (os.stat(f"/proc/{pid}/ns/mnt").st_ino,
                               os.stat(f"/proc/{pid}/ns/pid").st_ino)
    assert got[2][2] == audit_mod._exec_snapshot(me)[2]
    # the same messages as ProcConnector.read gives for those datagrams
    conn = cnproc.ProcConnector(0, False, lambda *a: None)
    want: list = []
    for d in sent:
        cnproc.parse_cn_messages(d, want)
    assert conn.absorb(datagrams) == want
    assert conn.stats["cn_messages"] == len(sent)


def test_cn_gather_waits_its_time_and_stops_at_max(pair):
    import time as _time
    from sysmonx.sensor.backends import cnproc
    gather = audit_mod._cn_gather
    assert gather is not None
    a, b = pair
    t0 = _time.monotonic()
    assert gather(b.fileno(), 30, 10) == ([], [], 0, 0, 0)
    assert _time.monotonic() - t0 >= 0.025
    for i in range(5):
        a.send(_cn(cnproc.PROC_EVENT_FORK, 0, i, i, 1, 1, 2, 2))
    t0 = _time.monotonic()
    datagrams, _snaps, _e, _err, _nomem = gather(b.fileno(), 5000, 3)
    assert len(datagrams) == 3 and _time.monotonic() - t0 < 1.0     # max reached: at once
    assert len(gather(b.fileno(), 10, 10)[0]) == 2
    r, w = os.pipe()
    os.close(w)
    assert gather(r, 10, 10)[3] == errno.ENOTSOCK
    os.close(r)


def test_cn_gather_failed_allocation_is_counted_and_reported(pair, child):
    """A failed allocation in the gather (``cn_put``) raised MemoryError and dropped every
    datagram read in that call, uncounted. Now the datagrams kept before it are returned,
    the one not kept is counted (``nomem``), and the backend reports it as a Loss."""
    from sysmonx.sensor import _ringbatch
    from sysmonx.sensor.backends import cnproc
    from sysmonx.sensor.observations import Loss
    gather = audit_mod._cn_gather
    assert gather is not None
    a, b = pair
    sent = [_cn(cnproc.PROC_EVENT_FORK, 0, i, 10 + i, 1, 1, 2, 2) for i in range(3)]
    for d in sent:
        a.send(d)
    _ringbatch.cn_fail_alloc(2)   # the second datagram's put fails
    try:
        datagrams, snaps, enobufs, err, nomem = gather(b.fileno(), 50, 2048)
    finally:
        _ringbatch.cn_fail_alloc(0)
    assert (datagrams, snaps, enobufs, err, nomem) == (sent[:1], [], 0, 0, 1)
    assert gather(b.fileno(), 50, 2048)[0] == sent[2:]   # the rest stays readable
    # an exec's datagram kept while its snapshot could not be: the datagram is not lost
    a.send(_cn(cnproc.PROC_EVENT_EXEC, 0, 5, 20, child, child))
    _ringbatch.cn_fail_alloc(2)   # the datagram's put succeeds, the snapshot's fails
    try:
        datagrams, snaps, _e, _err, nomem = gather(b.fileno(), 50, 2048)
    finally:
        _ringbatch.cn_fail_alloc(0)
    assert (len(datagrams), snaps, nomem) == (1, [], 0)

    # the backend: a Loss with the count, in its stats
    obs: list = []
    be = audit_mod.AuditBackend(obs.append, options={"socket_lookup": "none"})
    be.emit_all = obs.extend  # type: ignore[method-assign]
    be._cn = cnproc.ProcConnector(0, False, lambda *a: None)
    be._cn.fileno = lambda: b.fileno()  # type: ignore[method-assign]
    be._mono_off = be._boot_off = 0
    for d in sent:
        a.send(d)
    _ringbatch.cn_fail_alloc(3)
    try:
        be._gather_cn(0.05)
    finally:
        _ringbatch.cn_fail_alloc(0)
    losses = [o for o in obs if type(o) is Loss]
    assert [(o.source, o.count) for o in losses] == [("cnproc.nomem", 1)]
    assert be.stats()["cn_nomem"] == 1 and be.stats()["lost"] == 1
    be._gather = lambda *a: (_ for _ in ()).throw(MemoryError())
    be._gather_cn(0.05)
    assert [(o.source, o.count) for o in obs if type(o) is Loss][1:] == [("cnproc.nomem", 0)]
    assert be.stats()["cn_nomem"] == 2


def test_exec_observations_same_with_taken_snapshots(child):
    from sysmonx.sensor.backends import cnproc

    def run(taken: bool) -> list:
        obs: list = []
        be = audit_mod.AuditBackend(obs.append, options={"socket_lookup": "none"})
        be.emit_all = obs.extend  # type: ignore[method-assign]
        be._cn = cnproc.ProcConnector(0, False, lambda *a: None)
        be._mono_off = be._boot_off = 0   # the same clock for both runs
        msgs: list = []
        for d in (_cn(cnproc.PROC_EVENT_EXEC, 0, 1, 11, child, child),
                  _cn(cnproc.PROC_EVENT_EXEC, 0, 2, 12, PIDS[1], PIDS[1]),
                  _cn(cnproc.PROC_EVENT_EXIT, 0, 3, 13, PIDS[1], PIDS[1], 256, 17, 1, 1)):
            cnproc.parse_cn_messages(d, msgs)
        pre = None
        if taken:
            pre = {child: [audit_mod._exec_snapshot(child)],
                   PIDS[1]: [audit_mod._snapshot_of(None, None)]}
        be._on_cn(msgs, pre)
        be._flush_out()
        return [obs, dict(be._snaps)]

    pure, fast = run(False), run(True)
    assert fast == pure
    assert fast[1][child][0][1] is not None and fast[1][PIDS[1]][0][1:] == (None, None, None, None)


def test_an_exec_read_while_subscribing_takes_no_snapshot_of_the_gather(monkeypatch):
    """Messages read while subscribing (``ProcConnector.early``) come before the gather's: an
    early exec of a tgid must not take the snapshot the gather took for a later exec of it
    (review); it is read as the pure path reads it."""
    from sysmonx.sensor.backends import cnproc
    pid = PIDS[2]
    read_now = ("read", "now", b"x", None)
    monkeypatch.setattr(audit_mod, "_exec_snapshot", lambda p: read_now)
    be = audit_mod.AuditBackend(lambda o: None, options={"socket_lookup": "none"})
    be._cn = cnproc.ProcConnector(0, False, lambda *a: None)
    be._mono_off = be._boot_off = 0
    msgs: list = []
    for d in (_cn(cnproc.PROC_EVENT_EXEC, 0, 1, 11, pid, pid),
              _cn(cnproc.PROC_EVENT_EXEC, 0, 2, 12, pid, pid)):
        cnproc.parse_cn_messages(d, msgs)
    gathered = (7, 8, b"sh", (1, 2))
    be._on_cn(msgs, {pid: [gathered]}, 1)
    assert [s[1:] for s in be._snaps[pid]] == [read_now, gathered]


def test_argv_of_the_usual_execve_record_equals_the_general_path():
    from sysmonx.sensor.backends import audit_records as ar
    rnd = random.Random(3)
    pieces = ['"x"', '"/bin/true"', "616263", "C3A9", "FF41", '""', "(null)", "6120620A", "zz"]
    for _ in range(2000):
        n = rnd.randrange(0, 70)
        args = " ".join(f"a{i}={rnd.choice(pieces)}" for i in range(n))
        text = rnd.choice([f"argc={n} {args}", f"argc={n + 1} {args}", f"argc={n} {args} a0=1",
                           f"{args} argc={n}", f"argc={n} {args} a{n}_len=3"])
        rec = [nl.AuditRecord(1309, 1, 0, text)]
        assert ar._argv(rec) == ar._argv_general(rec), text
    rec = [nl.AuditRecord(1309, 1, 0, 'argc=3 a0="/bin/echo" a1=612062 a2=C3A9')]
    assert ar._argv(rec) == ["/bin/echo", "a b", "\u00e9"]


def test_bench_audit_reader_measures_both_readers_and_refuses_without_the_compiled_one():
    import subprocess
    import sys
    from pathlib import Path
    bench = Path(__file__).resolve().parent.parent / "bench" / "bench_audit_reader.py"
    res = subprocess.run([sys.executable, str(bench), "--execs", "50", "--rounds", "1"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "50 execs, 400 datagrams, 1 rounds each" in res.stdout
    assert "ratio compiled/Python:" in res.stdout
    env = dict(os.environ, SYSMONX_PURE_PYTHON="1")
    res = subprocess.run([sys.executable, str(bench), "--execs", "5", "--rounds", "1"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 1 and "not built" in res.stderr


def test_cn_parse_equals_parse_cn_messages_py():
    from sysmonx.sensor.backends import cnproc
    assert cnproc._cn_parse is not None
    rnd = random.Random(11)
    for _ in range(3000):
        parts = []
        for _m in range(rnd.randrange(0, 4)):
            what = rnd.choice([cnproc.PROC_EVENT_FORK, cnproc.PROC_EVENT_EXEC,
                               cnproc.PROC_EVENT_EXIT, cnproc.PROC_EVENT_NONE, 0x200])
            msg = _cn(what, rnd.randrange(4), rnd.randrange(1 << 32), rnd.randrange(1 << 64),
                      *(rnd.randrange(1 << 32) for _ in range(6)))
            cut = rnd.choice([len(msg), len(msg), 68, 60, 52, 40, 20, 10])
            msg = msg[:cut]
            if rnd.random() < 0.3:   # a length field that lies
                msg = (rnd.choice([8, 52, 60, 68, 76, 200]).to_bytes(4, "little") + msg[4:])
            if rnd.random() < 0.1:   # another connector index
                msg = msg[:16] + (7).to_bytes(4, "little") + msg[20:]
            parts.append(msg + b"\0" * rnd.choice([0, 0, 1, 3]))
        data = b"".join(parts)
        if rnd.random() < 0.05:
            data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 120)))
        want: list = []
        got: list = []
        assert cnproc._cn_parse(data, got, cnproc.CnEvent) == \
            cnproc.parse_cn_messages_py(data, want), data
        assert got == want and all(type(e) is cnproc.CnEvent for e in got)
    ev: list = []
    assert cnproc.parse_cn_messages(_cn(cnproc.PROC_EVENT_EXEC, 1, 5, 123, 42, 41), ev) == 0
    assert ev == [(cnproc.PROC_EVENT_EXEC, 1, 5, 123, 42, 41, 0, 0, 0, 0, 0)]
    assert ev[0].what == cnproc.PROC_EVENT_EXEC and ev[0].mono_ns == 123


def test_bench_exec_snapshot_measures_each_way_and_refuses_without_the_compiled_gather():
    import subprocess
    import sys
    from pathlib import Path
    bench = Path(__file__).resolve().parent.parent / "bench" / "bench_exec_snapshot.py"
    res = subprocess.run([sys.executable, str(bench), "--processes", "20", "--rounds", "1"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    rows = {line.split()[0]: float(line.split()[1]) for line in res.stdout.splitlines()
            if line.split() and line.split()[0] in ("gather", "python", "ns-text", "ns-stat")}
    assert sorted(rows) == ["gather", "ns-stat", "ns-text", "python"]
    assert all(v > 0 for v in rows.values())
    assert "namespace inodes from the links' text / by stat():" in res.stdout
    env = dict(os.environ, SYSMONX_PURE_PYTHON="1")
    res = subprocess.run([sys.executable, str(bench), "--processes", "2", "--rounds", "1"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 1 and "not built" in res.stderr
    res = subprocess.run([sys.executable, str(bench), "--rounds", "0"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
