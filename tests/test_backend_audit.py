"""Tier-B audit backend: protocol units (no privileges) and live tests against the kernel.

Live tests need root in the initial namespaces with kernel audit (CAP_AUDIT_CONTROL, and
CAP_AUDIT_READ when another daemon owns audit); they skip with the reason from
``AuditBackend.probe()`` otherwise. There is one audit configuration per kernel, so the live
tests hold an exclusive lock file (``/tmp/sysmonx-audit-tests.lock``) against concurrent runs, and
every test checks that the audit status and rule list after ``stop()`` equal those before
``start()`` (restoring them if a test failed half-way). Other processes run on the machine:
assertions only look at the test's own process tree.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid

import pytest
from conftest import interrupted

from sysmonx.sensor.backends import audit as audit_mod
from sysmonx.sensor.backends import audit_netlink as nl
from sysmonx.sensor.backends import audit_records
from sysmonx.sensor.backends.audit import AuditBackend
from sysmonx.sensor.backends.base import BackendUnavailable
from sysmonx.sensor.observations import (BackendError, ProcessExit, FileCreate, FileDelete, Loss,
                                         NetworkConnect, ProcessAccess, ProcessExec,
                                         RawAccessRead)

pytestmark = pytest.mark.live

LOCK_PATH = os.path.join(tempfile.gettempdir(), "sysmonx-audit-tests.lock")


# ---------------------------------------------------------------------------------------------
# protocol units: no kernel needed
# ---------------------------------------------------------------------------------------------

def test_parse_record_header_and_fields():
    rec = nl.parse_record(1300, b'audit(1700000000.123:456): arch=c000003e syscall=59 '
                                b'success=yes exit=0 comm="sh" exe="/usr/bin/dash" '
                                b'key=(null)\0')
    assert (rec.type, rec.serial, rec.ts_ns) == (1300, 456, 1700000000_123000000)
    f = nl.parse_fields(rec.text)
    assert f["syscall"] == "59" and f["comm"] == '"sh"' and f["key"] == "(null)"
    assert nl.decode_untrusted(f["exe"]) == b"/usr/bin/dash"
    assert nl.decode_untrusted("6563686F206869") == b"echo hi"
    assert nl.decode_untrusted("(null)") is None
    assert nl.decode_untrusted('""') == b""
    assert nl.parse_record(1300, b"garbage") is None


def test_argv_reassembly_quoted_hex_chunks_and_multiple_records():
    recs = [nl.AuditRecord(1309, 1, 0, 'argc=5 a0="/bin/echo" a1=612062 a2_len=8 a2[0]=41424344'),
            nl.AuditRecord(1309, 1, 0, 'a2[1]="EFGH" a3="" a4=C3A9')]
    assert audit_records._argv(recs) == ["/bin/echo", "a b", "ABCDEFGH", "", "\u00e9"]
    # invalid UTF-8 is replaced, never raises
    assert audit_records._argv([nl.AuditRecord(1309, 1, 0, "argc=1 a0=FF41")]) == ["\ufffdA"]


def test_sockaddr_decoding():
    assert audit_records._decode_sockaddr("0200B8E77F0000010000000000000000") == \
        (2, "127.0.0.1", 0xB8E7)
    v6 = "0A00" + "1F90" + "00000000" + "00000000000000000000000000000001" + "00000000"
    assert audit_records._decode_sockaddr(v6) == (10, "::1", 8080)
    assert audit_records._decode_sockaddr("0100" + "2F746D70") == (1, None, None)
    assert audit_records._decode_sockaddr("zz") is None


def test_rule_and_status_structs_roundtrip():
    rule = nl.AuditRule(mask=nl.AuditRule.syscall_mask([59, 322]),
                        fields=[(nl.AUDIT_ARCH, nl.AUDIT_EQUAL, 0xC000003E),
                                (nl.AUDIT_EXIT, nl.AUDIT_EQUAL, -115),
                                (nl.AUDIT_WATCH, nl.AUDIT_EQUAL, "/dev/loop0"),
                                (nl.AUDIT_FILTERKEY, nl.AUDIT_EQUAL, "sysmonx")])
    raw = rule.pack()
    assert len(raw) == nl.RULE_FIXED_SIZE + len("/dev/loop0sysmonx")
    back = nl.AuditRule.unpack(raw)
    assert back.pack() == raw and back.key == "sysmonx"
    assert back.syscalls() == {59, 322}
    assert back.fields[1] == (nl.AUDIT_EXIT, nl.AUDIT_EQUAL, (-115) & 0xFFFFFFFF)
    st = nl.AuditStatus.unpack(nl.AuditStatus(enabled=1, pid=7, lost=3).pack()[:32])
    assert (st.enabled, st.pid, st.lost, st.backlog_wait_time) == (1, 7, 3, 0)
    with pytest.raises(ValueError):
        nl.AuditRule(fields=[(nl.AUDIT_PID, nl.AUDIT_EQUAL, 1)] * 65).pack()


def test_split_handles_unicast_length_quirk():
    body = b"audit(1.000:2): argc=1 a0=\"x\""
    quirk = nl.NLMSG_HDR.pack(len(body), 1309, 0, 0, 0) + body          # header not counted
    fixed = nl.NLMSG_HDR.pack(16 + len(body), 1309, 0, 0, 0) + body     # multicast copy
    for data in (quirk, fixed):
        assert list(nl.AuditSocket.split(data)) == [(1309, 0, 0, body)]
    two = (nl.NLMSG_HDR.pack(20, 1013, 2, 9, 0) + b"abcd"
           + nl.NLMSG_HDR.pack(20, nl.NLMSG_DONE, 2, 9, 0) + b"\0\0\0\0")
    assert [(t, s) for t, _f, s, _b in nl.AuditSocket.split(two)] == [(1013, 9), (3, 9)]


def test_socket_lookup_pidfd_and_proc_agree():
    """The two ways of reading a live socket (used for protocol/endpoints) give the same."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    cli = socket.create_connection(srv.getsockname())
    acc, _ = srv.accept()
    try:
        for fn in (audit_records._sock_info_pidfd, audit_records._sock_info_proc):
            info = fn(os.getpid(), cli.fileno())
            if info is None and fn is audit_records._sock_info_pidfd:
                continue                                     # kernel < 5.6 or no permission
            assert info is not None, fn.__name__
            assert (info.family, info.protocol) == (socket.AF_INET, "tcp")
            assert info.local == cli.getsockname() and info.peer == srv.getsockname()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.connect(("127.0.0.1", 9))
        assert audit_records._sock_info_proc(os.getpid(), udp.fileno()).protocol == "udp"
        udp.close()
    finally:
        for s in (acc, cli, srv):
            s.close()


@pytest.mark.parametrize("flags, reason", [
    (["-U", "-r"], "audit netlink refused: not in the initial user namespace"),
    (["-p", "-f", "--mount-proc"], "AUDIT_GET not permitted: needs CAP_AUDIT_CONTROL in the "
                                   "initial user and PID namespace"),
])
def test_probe_reason_in_child_namespaces(flags, reason):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to create namespaces")
    if AuditBackend.probe() is not None:
        pytest.skip(f"kernel audit not usable here at all: {AuditBackend.probe()}")
    code = "from sysmonx.sensor.backends.audit import AuditBackend; print(AuditBackend.probe())"
    res = subprocess.run(["unshare", *flags, sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=60)
    if res.returncode != 0:
        pytest.skip(f"cannot create the namespace here: {res.stderr.strip()[:200]}")
    assert res.stdout.strip() == reason


# ---------------------------------------------------------------------------------------------
# live harness
# ---------------------------------------------------------------------------------------------

class Collector:
    """Thread-safe sink for observations with bounded waits."""

    def __init__(self, delay=None):
        self.items = []
        self.cond = threading.Condition()
        self.delay = delay          # callable(obs) -> seconds to block (simulated slow sink)

    def __call__(self, obs):
        if self.delay is not None:
            d = self.delay(obs)
            if d:
                time.sleep(d)
        with self.cond:
            self.items.append(obs)
            self.cond.notify_all()

    def snapshot(self):
        with self.cond:
            return list(self.items)

    def wait_quiet(self, pred, count, timeout=60.0, quiet=3.0):
        """Wait for ``count`` matches, or until none arrived for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        last_n, last_t = -1, time.monotonic()
        while True:
            hits = self.wait_for(pred, count, timeout=0.5)
            now = time.monotonic()
            if len(hits) >= count or now > deadline:
                return hits
            if len(hits) != last_n:
                last_n, last_t = len(hits), now
            elif now - last_t > quiet:
                return hits

    def wait_for(self, pred, count=1, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                hits = [o for o in self.items if pred(o)]
                if len(hits) >= count:
                    return hits
                left = deadline - time.monotonic()
                if left <= 0:
                    return hits
                self.cond.wait(min(left, 0.2))


def _force_restore(baseline):
    """Best-effort return of the kernel audit state to ``baseline`` (after a failed test)."""
    cfg, rules = baseline
    sock = nl.AuditSocket()
    try:
        for raw in sock.list_rules():
            if raw not in rules and (nl.AuditRule.unpack(raw).key or "").startswith("sysmonx"):
                with contextlib.suppress(OSError):
                    sock.del_rule(raw)
        st = sock.get_status()
        if st.pid == os.getpid():
            sock.set_status(pid=0)
        vals = {k: cfg[k] for k in ("enabled", "failure", "rate_limit", "backlog_limit",
                                    "backlog_wait_time") if getattr(st, k) != cfg[k]}
        if vals:
            sock.set_status(**vals)
    finally:
        sock.close()


@pytest.fixture(scope="module")
def audit_lock():
    """Serialise live audit tests across concurrent pytest runs (one audit state per kernel)."""
    reason = AuditBackend.probe()
    if reason:
        pytest.skip(f"kernel audit not usable here: {reason}")
    fd = os.open(LOCK_PATH, os.O_CREAT | os.O_RDWR, 0o600)
    deadline = time.monotonic() + 300
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                pytest.skip("another test run held the audit test lock for 300 s")
            time.sleep(0.2)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@pytest.fixture
def baseline(audit_lock):
    """Audit state before the test; after it, the state must be identical (restored if not)."""
    before = nl.snapshot_state()
    yield before
    after = nl.snapshot_state()
    if after != before:
        _force_restore(before)
    if interrupted():  # Ctrl-C: the test did not finish; its state is put back, not judged
        if nl.snapshot_state() != before:
            sys.stderr.write("\nsysmonx tests: the kernel audit state could not be put back "
                             f"after Ctrl-C: {nl.snapshot_state()} (was {before})\n")
        return
    assert after == before, "audit state after stop() differs from the state before start()"


@pytest.fixture
def start_backend(baseline):
    """Factory: start an AuditBackend (stopped at teardown, before the state check)."""
    started = []

    def start(delay=None, **options):
        options.setdefault("device_rescan", 0.5)
        col = Collector(delay)
        be = AuditBackend(col, options=options)
        started.append(be)
        be.start()
        return be, col

    yield start
    for be in started:
        be.stop()


#: What a child of :func:`_py` does on SIGINT (Ctrl-C reaches the whole process group): end at
#: once without a traceback (the signal's default action), or ignore it (a child that must put
#: the kernel's state back when its owner closes its stdin: STAND_IN_AUDITD).
_SIGINT_DEFAULT = "import signal; signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
_SIGINT_IGNORE = "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\n"


def _py(code, *args, sigint=_SIGINT_DEFAULT, **kw):
    return subprocess.Popen([sys.executable, "-c", sigint + textwrap.dedent(code),
                             *map(str, args)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, **kw)


def _tree(col, root):
    """Pids of ``root`` and its descendants that exec'd (from ProcessExec ppid links)."""
    pids = {root}
    changed = True
    while changed:
        changed = False
        for o in col.snapshot():
            if isinstance(o, ProcessExec) and o.ppid in pids and o.pid not in pids:
                pids.add(o.pid)
                changed = True
    return pids


def _proc_stat(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        rest = f.read().rsplit(b")", 1)[1].split()
    return int(rest[19]), int(rest[24])


# ---------------------------------------------------------------------------------------------
# live tests
# ---------------------------------------------------------------------------------------------

def test_start_configures_audit_and_keyed_rules(start_backend):
    before = nl.snapshot_state()
    be, _col = start_backend()
    st = nl.AuditSocket()
    try:
        status = st.get_status()
        rules = [nl.AuditRule.unpack(r) for r in st.list_rules()]
    finally:
        st.close()
    ours = [r for r in rules if r.key == "sysmonx"]
    assert len(ours) == be.stats()["rules"] == len(be._added)
    assert all((nl.AUDIT_PID, nl.AUDIT_NOT_EQUAL, os.getpid()) in r.fields for r in ours)
    assert {p for p, _ in audit_mod._block_devices()} <= set(be.watched_devices)
    if be.mode == "unicast":
        assert status.pid == os.getpid() and status.enabled == 1
        assert status.backlog_wait_time == 0 and status.rate_limit == 0
        assert status.backlog_limit >= max(8192, before[0]["backlog_limit"])
        assert status.failure == before[0]["failure"]
    else:
        assert status.config() == before[0]


def test_exec_sh_echo_exact_argv_and_cwd(start_backend, tmp_path):
    _be, col = start_backend()
    cwd = os.path.realpath(tmp_path)
    p = subprocess.Popen(["/bin/sh", "-c", "echo hi"], cwd=cwd, stdout=subprocess.PIPE)
    assert p.communicate(timeout=10)[0] == b"hi\n"
    hits = col.wait_for(lambda o: isinstance(o, ProcessExec) and o.pid == p.pid)
    assert len(hits) == 1, hits
    ev = hits[0]
    assert ev.image == os.path.realpath("/bin/sh")
    assert ev.argv == ["/bin/sh", "-c", "echo hi"]
    assert ev.cwd == cwd
    assert (ev.ppid, ev.tid, ev.uid) == (os.getpid(), p.pid, os.getuid())
    with open("/proc/self/loginuid") as f:
        assert ev.auid == int(f.read())
    with open("/proc/self/sessionid") as f:
        assert ev.sessionid == int(f.read())
    assert abs(ev.ts_ns - time.time_ns()) < 30 * 10**9


def test_process_exit_with_exit_code(start_backend):
    """ProcessTerminate in the audit tier comes from exit_group (a new user's report: event 5
    was missing in this tier)."""
    _be, col = start_backend()
    p = subprocess.Popen(["/bin/sh", "-c", "exit 7"])
    assert p.wait(10) == 7
    hits = col.wait_for(lambda o: isinstance(o, ProcessExit) and o.pid == p.pid)
    assert len(hits) == 1 and hits[0].exit_code == 7


def test_exec_of_live_process_has_start_ticks_and_end_data(start_backend):
    _be, col = start_backend()
    p = subprocess.Popen(["/bin/sleep", "30"])
    try:
        ev = col.wait_for(lambda o: isinstance(o, ProcessExec) and o.pid == p.pid)[0]
        assert (ev.start_ticks, ev.end_data) == _proc_stat(p.pid)
        assert ev.image == os.path.realpath("/bin/sleep") and ev.argv == ["/bin/sleep", "30"]
    finally:
        p.kill()
        p.wait()


def test_exec_long_hex_and_many_arguments(start_backend):
    _be, col = start_backend()
    argv = ["/bin/true", "with space", 'q"uote', "caf\u00e9", "", "tab\there",
            "L" * 20000] + [f"arg{i:04d}" for i in range(3000)]
    p = subprocess.Popen(argv)
    p.wait(timeout=10)
    ev = col.wait_for(lambda o: isinstance(o, ProcessExec) and o.pid == p.pid)[0]
    assert ev.argv == argv and ev.image == os.path.realpath("/bin/true")


def test_tcp_udp_connect_and_accept_exact_endpoints(start_backend):
    _be, col = start_backend()
    code = """
        import json, socket, sys, errno
        out = {}
        for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            try:
                srv = socket.socket(fam); srv.bind((host, 0)); srv.listen()
            except OSError:
                continue
            cli = socket.socket(fam); cli.connect(srv.getsockname()[:2])
            acc, peer = srv.accept()
            out[host] = [srv.getsockname()[1], cli.getsockname()[1]]
            globals().setdefault("keep", []).extend([srv, cli, acc])
        nb = socket.socket(); nb.setblocking(False)
        srv4 = socket.socket(); srv4.bind(("127.0.0.1", 0)); srv4.listen()
        out["einprogress"] = [nb.connect_ex(srv4.getsockname()), srv4.getsockname()[1]]
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.connect(("127.0.0.1", 9))
        out["udp"] = udp.getsockname()[1]
        refused = socket.socket(); refused.bind(("127.0.0.1", 0)); rport = refused.getsockname()[1]
        refused.close()
        out["refused"] = [socket.socket().connect_ex(("127.0.0.1", rport)), rport]
        print(json.dumps(out), flush=True)
        sys.stdin.readline()
    """
    p = _py(code)
    try:
        out = json.loads(p.stdout.readline())
        col.wait_for(lambda o: isinstance(o, NetworkConnect) and o.pid == p.pid
                     and o.protocol == "udp")
        time.sleep(0.3)
        mine = [o for o in col.snapshot() if isinstance(o, NetworkConnect) and o.pid == p.pid]
        for host, (lport, cport) in ((h, v) for h, v in out.items() if ":" in h or "." in h):
            v6 = ":" in host
            conn = [o for o in mine if o.initiated and o.dest_port == lport]
            acc = [o for o in mine if not o.initiated and o.dest_port == lport]
            assert conn == [NetworkConnect(conn[0].ts_ns, p.pid, "tcp", True, host, lport,
                                           host, cport, v6)], mine
            assert acc == [NetworkConnect(acc[0].ts_ns, p.pid, "tcp", False, host, lport,
                                          host, cport, v6)], mine
        rc, port = out["einprogress"]
        assert rc == 115
        nb = [o for o in mine if o.initiated and o.dest_port == port]
        assert len(nb) == 1 and (nb[0].protocol, nb[0].dest_ip) == ("tcp", "127.0.0.1")
        udp = [o for o in mine if o.protocol == "udp"]
        # UDP source: the documented unknown in this tier (audit cannot tell which socket an
        # fd meant once it was reused: back-to-back connects got the next socket's port)
        assert [(o.initiated, o.dest_ip, o.dest_port, o.source_ip, o.source_port)
                for o in udp] == [(True, "127.0.0.1", 9, None, None)]
        assert out["refused"][0] == 111
        assert not [o for o in mine if o.dest_port == out["refused"][1]]   # failed: not reported
    finally:
        p.stdin.close()
        p.wait(timeout=10)


def test_connect_that_never_completes_keeps_its_source(start_backend):
    """A connect nobody answers (EINPROGRESS to a silent host, a scan) was written with
    ``SourceIp -``/``SourcePort 0`` on this tier while tier A had both (a new user's trial):
    the tracer's pending SYN_SENT gives the address, the connecting socket the port."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    addr = srv.getsockname()
    filler = socket.create_connection(addr)  # fills the accept queue: further SYNs are dropped
    _be, col = start_backend()
    p = _py("""
        import socket, sys, time
        c = socket.socket(); c.setblocking(False)
        print(c.connect_ex((sys.argv[1], int(sys.argv[2]))), c.getsockname()[1], flush=True)
        sys.stdin.readline()
    """, *addr)
    try:
        rc, sport = map(int, p.stdout.readline().split())
        assert rc == 115  # EINPROGRESS
        got = col.wait_for(lambda o: isinstance(o, NetworkConnect) and o.pid == p.pid)[0]
        assert (got.protocol, got.initiated, got.dest_ip, got.dest_port, got.source_ip,
                got.source_port) == ("tcp", True, "127.0.0.1", addr[1], "127.0.0.1", sport)
    finally:
        p.stdin.close()
        p.wait(timeout=10)
        filler.close()
        srv.close()


def test_file_create_delete_rename_absolute_paths(start_backend, tmp_path):
    _be, col = start_backend()
    base = os.path.realpath(tmp_path)
    script = ("echo a > {b}/abs.txt; echo again >> {b}/abs.txt; mkdir sub; cd sub; "
              "echo b > rel.txt; mv rel.txt moved.txt; rm moved.txt; rm {b}/abs.txt; "
              "touch {b}/done").format(b=base)
    p = subprocess.Popen(["/bin/sh", "-c", script], cwd=base)
    p.wait(timeout=10)
    col.wait_for(lambda o: isinstance(o, FileCreate) and o.path == f"{base}/done")
    tree = _tree(col, p.pid)
    mine = [o for o in col.snapshot() if isinstance(o, (FileCreate, FileDelete))
            and o.pid in tree]
    got = [(type(o).__name__, o.path) for o in mine]
    assert got == [("FileCreate", f"{base}/abs.txt"),              # the >> open is not a create
                   ("FileCreate", f"{base}/sub/rel.txt"),          # relative, after chdir
                   ("FileCreate", f"{base}/sub/moved.txt"),        # rename target
                   ("FileDelete", f"{base}/sub/moved.txt"),
                   ("FileDelete", f"{base}/abs.txt"),
                   ("FileCreate", f"{base}/done")], got
    sh = [o for o in mine if o.pid == p.pid]
    assert [o.path for o in sh] == [f"{base}/abs.txt", f"{base}/sub/rel.txt"]


def test_file_paths_relative_to_dirfd_and_chdir(start_backend, tmp_path):
    _be, col = start_backend()
    base = os.path.realpath(tmp_path)
    os.mkdir(f"{base}/d")
    code = """
        import os, sys
        d = os.open(sys.argv[1] + "/d", os.O_RDONLY | os.O_DIRECTORY)
        os.close(os.open("viafd.txt", os.O_CREAT | os.O_WRONLY, dir_fd=d))
        os.unlink("viafd.txt", dir_fd=d)
        os.chdir(sys.argv[1] + "/d")
        os.close(os.open("../chdir.txt", os.O_CREAT | os.O_WRONLY))
        os.rename("../chdir.txt", "renamed.txt")
        print("ok", flush=True)
        sys.stdin.readline()
    """
    p = _py(code, base)
    try:
        assert p.stdout.readline().strip() == "ok"
        col.wait_for(lambda o: isinstance(o, FileCreate) and o.pid == p.pid, count=3)
        mine = [(type(o).__name__, o.path) for o in col.snapshot()
                if isinstance(o, (FileCreate, FileDelete)) and o.pid == p.pid]
        assert mine == [("FileCreate", f"{base}/d/viafd.txt"),
                        ("FileDelete", f"{base}/d/viafd.txt"),
                        ("FileCreate", f"{base}/chdir.txt"),
                        ("FileCreate", f"{base}/d/renamed.txt")], mine
    finally:
        p.stdin.close()
        p.wait(timeout=10)


def test_ptrace_attach_and_seize(start_backend):
    _be, col = start_backend()
    code = """
        import ctypes, os, subprocess, sys, time
        libc = ctypes.CDLL(None, use_errno=True)
        libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        out = []
        for req in (16, 0x4206):
            t = subprocess.Popen(["/bin/sleep", "30"])
            time.sleep(0.05)
            rc = libc.ptrace(req, t.pid, None, None)
            if req == 16:
                os.waitpid(t.pid, 0)
            libc.ptrace(17, t.pid, None, None)
            out.append("%d %d %d" % (req, t.pid, rc))
            t.kill(); t.wait()
        print(" ".join(out), flush=True)
        sys.stdin.readline()
    """
    p = _py(code)
    try:
        parts = [int(x) for x in p.stdout.readline().split()]
        (r1, t1, rc1), (r2, t2, rc2) = parts[:3], parts[3:]
        assert (r1, r2) == (16, 0x4206)
        assert (rc1, rc2) == (0, 0)
        hits = col.wait_for(lambda o: isinstance(o, ProcessAccess) and o.pid == p.pid, count=2)
        assert [(o.target_pid, o.request, o.tid) for o in hits] == [(t1, 16, None),
                                                                      (t2, 0x4206, None)]
    finally:
        p.stdin.close()
        p.wait(timeout=10)


def test_raw_access_read_of_loop_device(start_backend, tmp_path):
    if not shutil.which("losetup"):
        pytest.skip("losetup not installed (util-linux)")
    img = tmp_path / "disk.img"
    img.write_bytes(b"\0" * (1 << 20))
    res = subprocess.run(["losetup", "-f", "--show", str(img)], capture_output=True, text=True,
                         timeout=30)
    if res.returncode != 0:
        pytest.skip(f"cannot attach a loop device: {res.stderr.strip()}")
    dev = res.stdout.strip()
    try:
        be, col = start_backend()
        deadline = time.monotonic() + 5
        while dev not in be.watched_devices and time.monotonic() < deadline:
            time.sleep(0.05)
        assert dev in be.watched_devices
        rd = subprocess.Popen(["dd", f"if={dev}", "of=/dev/null", "bs=512", "count=1"],
                              stderr=subprocess.DEVNULL)
        assert rd.wait(timeout=30) == 0
        wr = subprocess.Popen(["dd", "if=/dev/zero", f"of={dev}", "bs=512", "count=1",
                               "conv=notrunc"], stderr=subprocess.DEVNULL)
        assert wr.wait(timeout=30) == 0
        hits = col.wait_for(lambda o: isinstance(o, RawAccessRead) and o.pid == rd.pid)
        assert [(o.device, o.pid) for o in hits] == [(dev, rd.pid)]
        col.wait_for(lambda o: isinstance(o, ProcessExec) and o.pid == wr.pid)
        time.sleep(0.3)
        assert not [o for o in col.snapshot() if isinstance(o, RawAccessRead)
                    and o.pid == wr.pid], "a write-only open is not a raw read"
    finally:
        subprocess.run(["losetup", "-d", dev], timeout=30)


def test_sensor_own_activity_is_excluded(start_backend, tmp_path):
    _be, col = start_backend()
    path = os.path.join(os.path.realpath(tmp_path), "self.txt")
    with open(path, "w"):
        pass
    os.unlink(path)
    p = subprocess.Popen(["/bin/sh", "-c", f"touch {path}.child"])
    p.wait(timeout=10)
    col.wait_for(lambda o: isinstance(o, FileCreate) and o.path == f"{path}.child")
    assert not [o for o in col.snapshot() if getattr(o, "pid", None) == os.getpid()]


def test_failed_start_restores_state(baseline, monkeypatch):
    calls = {"n": 0}
    real = AuditBackend._add

    def flaky(self, rule):
        calls["n"] += 1
        if calls["n"] == 4:
            raise nl.AuditError(5, "injected failure")
        return real(self, rule)

    monkeypatch.setattr(AuditBackend, "_add", flaky)
    be = AuditBackend(Collector())
    with pytest.raises(BackendUnavailable, match="injected failure"):
        be.start()
    assert nl.snapshot_state() == baseline
    be.stop()                                            # idempotent after a failed start
    assert nl.snapshot_state() == baseline


def test_preexisting_identical_and_stale_rules_are_kept(baseline, monkeypatch):
    """While another SysmonX sensor runs, a rule identical to one of ours (EEXIST) and another
    ``sysmonx`` rule are reported and left in place: stop() deletes only what start() added."""
    monkeypatch.setattr(audit_mod, "_other_sensor_running", lambda: True)
    col = Collector()
    probe_be = AuditBackend(col)
    probe_be._arch = audit_mod._NATIVE[os.uname().machine][0]
    identical = probe_be._rule_specs(())[0][0]              # our execve rule, as we build it
    stale = nl.AuditRule(mask=nl.AuditRule.syscall_mask([0]),
                         fields=[(nl.AUDIT_ARCH, nl.AUDIT_EQUAL, probe_be._arch),
                                 (nl.AUDIT_PID, nl.AUDIT_EQUAL, 1),
                                 (nl.AUDIT_FILTERKEY, nl.AUDIT_EQUAL, "sysmonx")])
    sock = nl.AuditSocket()
    sock.add_rule(identical)
    sock.add_rule(stale)
    try:
        with_rules = nl.snapshot_state(sock)
        be = AuditBackend(col)
        be.start()
        try:
            assert be.stats()["rules_preexisting"] == 1
            warn = [o for o in col.snapshot() if type(o).__name__ == "BackendError"]
            assert len(warn) == 1 and "2 audit rules keyed 'sysmonx'" in warn[0].message
            assert "another running SysmonX sensor" in warn[0].message
        finally:
            be.stop()
        assert nl.snapshot_state(sock) == with_rules
    finally:
        for r in (stale, identical):
            with contextlib.suppress(OSError):
                sock.del_rule(r)
        sock.close()


def test_stale_rules_of_a_killed_sensor_are_removed(baseline, monkeypatch):
    """A sensor killed with SIGKILL leaves its keyed rules; the next start removes them when no
    other SysmonX sensor runs (a new user's report: they stayed forever)."""
    monkeypatch.setattr(audit_mod, "_other_sensor_running", lambda: False)
    col = Collector()
    stale = nl.AuditRule(mask=nl.AuditRule.syscall_mask([0]),
                         fields=[(nl.AUDIT_ARCH, nl.AUDIT_EQUAL,
                                  audit_mod._NATIVE[os.uname().machine][0]),
                                 (nl.AUDIT_PID, nl.AUDIT_EQUAL, 1),
                                 (nl.AUDIT_FILTERKEY, nl.AUDIT_EQUAL, "sysmonx")])
    sock = nl.AuditSocket()
    before = nl.snapshot_state(sock)
    sock.add_rule(stale)
    try:
        be = AuditBackend(col)
        be.start()
        try:
            warn = [o for o in col.snapshot() if type(o).__name__ == "BackendError"]
            assert any("removed 1 stale audit rules" in w.message for w in warn)
        finally:
            be.stop()
        assert nl.snapshot_state(sock) == before
    finally:
        with contextlib.suppress(OSError):
            sock.del_rule(stale)
        sock.close()


def test_stop_restores_exact_state_and_reports_final_loss(start_backend):
    before = nl.snapshot_state()
    be, col = start_backend()
    be.stop()
    be.stop()
    assert nl.snapshot_state() == before
    assert be.stats()["mode"] in ("unicast", "multicast")


BURST = """
    import os, sys
    marker, n = sys.argv[1], int(sys.argv[2])
    inflight = []
    for i in range(n):
        inflight.append(os.posix_spawn("/bin/true", ["/bin/true", marker, str(i)], {}))
        if len(inflight) >= 8:
            os.waitpid(inflight.pop(0), 0)
    for pid in inflight:
        os.waitpid(pid, 0)
"""


def _kernel_lost():
    s = nl.AuditSocket()
    try:
        return s.get_status().lost
    finally:
        s.close()


def test_burst_of_2000_execs(start_backend):
    lost0 = _kernel_lost()
    be, col = start_backend()
    marker = "burst-" + uuid.uuid4().hex[:8]
    p = _py(BURST, marker, 2000)
    p.wait(timeout=120)
    hits = col.wait_quiet(lambda o: isinstance(o, ProcessExec) and o.ppid == p.pid, 2000)
    be.stop()
    lost = (_kernel_lost() - lost0) & 0xFFFFFFFF
    reported = sum(o.count for o in col.snapshot()
                   if isinstance(o, Loss) and o.source == "audit.lost")
    assert reported == lost
    true = os.path.realpath("/bin/true")
    seen = {}
    for o in hits:
        assert o.image == true and o.argv[:2] == ["/bin/true", marker], o
        seen[int(o.argv[2])] = o
    if lost == 0:
        assert sorted(seen) == list(range(2000))
    else:   # every lost record costs at most one event, and the loss was reported
        assert len(seen) >= 2000 - lost


def test_loss_reported_when_reader_is_slow_with_tiny_backlog(start_backend):
    lost0 = _kernel_lost()
    slow_until = time.monotonic() + 4.0

    def delay(obs):
        return 0.02 if time.monotonic() < slow_until else 0

    be, col = start_backend(delay=delay, backlog_limit=16, rcvbuf=4096, status_interval=0.2)
    marker = "drop-" + uuid.uuid4().hex[:8]
    p = _py(BURST, marker, 400)
    p.wait(timeout=120)
    col.wait_for(lambda o: isinstance(o, Loss) and o.source == "audit.lost", timeout=15)
    be.stop()
    lost = (_kernel_lost() - lost0) & 0xFFFFFFFF
    losses = [o for o in col.snapshot() if isinstance(o, Loss) and o.source == "audit.lost"]
    assert lost > 0 and losses
    assert sum(o.count for o in losses) == lost
    assert be.stats()["lost"] >= lost
    seen = [o for o in col.snapshot() if isinstance(o, ProcessExec) and o.ppid == p.pid]
    assert len(seen) < 400


@pytest.fixture
def fake_auditd(baseline, tmp_path):
    """Another process registered as the audit daemon before the sensor starts (drains its
    records quickly, a large backlog): :func:`_stand_in`, which puts ``baseline`` back when
    the fixture closes its stdin."""
    owner = _stand_in(tmp_path, "fake-auditd", baseline[0], backlog_limit=8192)
    try:
        if json.loads(owner.stdout.readline() or "null") != [0]:
            pytest.fail("fake audit daemon did not start")
        yield owner
    finally:
        _end(owner)


def test_coexists_with_another_audit_daemon_via_multicast(fake_auditd, start_backend):
    owned = nl.snapshot_state()
    assert owned[0]["pid"] == fake_auditd.pid
    assert AuditBackend.probe() is None
    be, col = start_backend()
    assert be.mode == "multicast"
    p = subprocess.Popen(["/bin/sh", "-c", "echo multicast"], stdout=subprocess.DEVNULL)
    p.wait(timeout=10)
    ev = col.wait_for(lambda o: isinstance(o, ProcessExec) and o.pid == p.pid)
    assert [e.argv for e in ev] == [["/bin/sh", "-c", "echo multicast"]]
    be.stop()
    assert nl.snapshot_state() == owned              # the owner's configuration untouched


def test_multicast_overflow_is_reported_as_enobufs_loss(fake_auditd, start_backend):
    slow_until = time.monotonic() + 3.0
    be, col = start_backend(delay=lambda o: 0.02 if time.monotonic() < slow_until else 0,
                            rcvbuf=4096)
    assert be.mode == "multicast"
    p = _py(BURST, "enobufs-" + uuid.uuid4().hex[:8], 300)
    p.wait(timeout=120)
    hits = col.wait_for(lambda o: isinstance(o, Loss) and o.source == "audit.enobufs",
                        timeout=15)
    assert hits and all(o.count == 0 and "ENOBUFS" in o.detail for o in hits)
    assert be.stats()["enobufs"] >= 1


# ---------------------------------------------------------------------------------------------
# session 13, a Sysmon for Linux admin's report: an auditd started after the sensor could not
# register (EEXIST) while the sensor held the audit pid; audit disabled went unsaid
# ---------------------------------------------------------------------------------------------

#: A stand-in for auditd (no auditd on the test hosts): as auditd does at start, register as the
#: audit daemon (AUDIT_SET pid=self) after reading its configuration (a short sleep), then set
#: enabled=1; then it says the result of each attempt (a JSON list of 0 or -errno), drains its records
#: until stdin closes and then puts back the configuration the test gives (argv[1], JSON),
#: unregisters and says ``done``. ``tries`` attempts, ``gap`` s apart (argv[2:4]); a backlog
#: limit (argv[4], 0: none) is set first, with no backlog wait, as an auditd configured so does.
STAND_IN_AUDITD = """
    import errno, json, os, select, sys, time
    from sysmonx.sensor.backends import audit_netlink as nl
    original, tries, gap = json.loads(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    backlog_limit = int(sys.argv[4])
    s = nl.AuditSocket(rcvbuf=8 << 20)
    if backlog_limit:
        s.set_status(backlog_limit=backlog_limit, backlog_wait_time=0)
    time.sleep(0.05)
    results = []
    for i in range(tries):
        try:
            s.set_status(pid=os.getpid())
            results.append(0)
            break
        except nl.AuditError as e:
            results.append(-e.errno)
            time.sleep(gap)
    if results[-1] == 0:
        s.set_status(enabled=1)
    print(json.dumps(results), flush=True)  # registered and enabled (or refused) by now
    while True:
        r, _, _ = select.select([s.sock, sys.stdin], [], [], 1.0)
        if sys.stdin in r:
            break
        if s.sock in r:
            try:
                s.recv_datagram(0)
            except OSError:
                pass
    if results[-1] == 0:
        s.set_status(enabled=original["enabled"], backlog_limit=original["backlog_limit"],
                     backlog_wait_time=original["backlog_wait_time"],
                     rate_limit=original["rate_limit"])
        s.set_status(pid=0)
    print("done", flush=True)
"""


def _stand_in(tmp_path, name, original, tries=1, gap=0.0, backlog_limit=0):
    """Start :data:`STAND_IN_AUDITD` as an executable named ``name`` (its comm). It ignores
    SIGINT (Ctrl-C reaches the whole process group): it must still put the kernel's audit
    state back when its owner closes its stdin (:func:`_end`)."""
    script = tmp_path / name
    script.write_text(f"#!{sys.executable}\n" + _SIGINT_IGNORE + textwrap.dedent(STAND_IN_AUDITD))
    script.chmod(0o755)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen([str(script), json.dumps(original), str(tries), str(gap),
                             str(backlog_limit)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


def _end(p):
    p.stdin.close()
    try:
        assert p.stdout.readline().strip() == "done"
        p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def _said(col, text):
    return [o for o in col.snapshot() if isinstance(o, BackendError) and text in o.message]


def _needs_free_audit(baseline):
    if baseline[0]["pid"]:
        pytest.skip("an audit daemon runs on this host: the sensor does not take the pid")


def test_an_auditd_started_after_the_sensor_registers(baseline, start_backend, tmp_path):
    """The report: the sensor held the audit pid, so an auditd started later got EEXIST and
    exited. At the exec of a process named auditd the sensor hands the pid back and reads the
    multicast group: the auditd's AUDIT_SET pid succeeds, collection goes on, and at stop the
    sensor removes its rules and leaves that daemon's enabled and limits alone."""
    _needs_free_audit(baseline)
    be, col = start_backend()
    assert be.mode == "unicast" and nl.snapshot_state()[0]["pid"] == os.getpid()
    daemon = _stand_in(tmp_path, "auditd", baseline[0])
    try:
        assert json.loads(daemon.stdout.readline()) == [0]        # registered at once
        assert nl.snapshot_state()[0]["pid"] == daemon.pid
        said = _said(col, "the sensor handed the audit pid back (AUDIT_SET pid=0)")
        assert [o.host_fact for o in said] == [True]
        assert said[0].message.startswith(f"auditd started (pid {daemon.pid}): ")
        assert be.mode == "multicast" and be.handed_back == f"auditd started (pid {daemon.pid})"
        p = subprocess.Popen(["/bin/sh", "-c", "echo after the hand-back"],
                             stdout=subprocess.DEVNULL)
        p.wait(timeout=10)
        ev = col.wait_for(lambda o: isinstance(o, ProcessExec) and o.pid == p.pid)
        assert [e.argv for e in ev] == [["/bin/sh", "-c", "echo after the hand-back"]]
        assert be.integrity() == []              # a handed-back pid is no tampering
        be.stop()
        cfg, rules = nl.snapshot_state()
        assert cfg["pid"] == daemon.pid and cfg["enabled"] == 1
        assert not [r for r in rules if nl.AuditRule.unpack(r).key == "sysmonx"]
        left = _said(col, f"left as they are at stop: pid {daemon.pid} (auditd) is the audit "
                          "daemon now")
        assert [o.message.split(" left")[0] for o in left] == \
            (["audit enabled"] if baseline[0]["enabled"] != 1 else []) + ["audit limits"]
    finally:
        _end(daemon)


def test_a_refused_audit_pid_request_hands_the_pid_back(baseline, start_backend, tmp_path):
    """A process not named auditd asks for the audit pid while the sensor holds it: the
    kernel refuses (EEXIST) and sends the holder AUDIT_REPLACE; the sensor hands the pid back,
    so the next attempt succeeds, and says who asked."""
    _needs_free_audit(baseline)
    be, col = start_backend()
    assert be.mode == "unicast"
    asker = _stand_in(tmp_path, "collector", baseline[0], tries=20, gap=0.25)
    try:
        results = json.loads(asker.stdout.readline())
        assert results[0] == -errno.EEXIST and results[-1] == 0 and len(results) >= 2
        assert nl.snapshot_state()[0]["pid"] == asker.pid
        assert be.handed_back == (f"pid {asker.pid} (collector) asked for the audit pid and "
                                  "was refused (EEXIST) while the sensor held it; it can "
                                  "register now")
    finally:
        _end(asker)
    be.stop()   # nobody holds the pid now: everything is put back (the baseline check)


def test_audit_disabled_is_said_blind_and_enabled_again(baseline, start_backend):
    """The report: ``auditctl -e 0`` behind tier B made ProcessCreate go dark with nothing on
    stderr, no event 255 and "lost 0". Event 255 says the collection is blind and, when audit
    is enabled again, for how long; :meth:`blind_episodes` tells the heartbeat."""
    said: list = []
    be, col = start_backend(on_status=said.append)
    assert be.blind_episodes() == (0, False)
    ctl = nl.AuditSocket()
    try:
        ctl.set_status(enabled=0)
        blind = col.wait_for(lambda o: isinstance(o, BackendError) and
                             o.message.startswith("audit was disabled (enabled=0): collection "
                                                  "is blind from now on: ProcessCreate (1"),
                             timeout=5)
        assert len(blind) == 1 and not blind[0].host_fact
        assert be.blind_episodes() == (1, True)
        assert said == [f"audit: {blind[0].message}"]
        assert ("audit_rules_changed", "audit was disabled (enabled=0)") in be.integrity()
        p = subprocess.Popen(["/bin/sh", "-c", "echo while blind"], stdout=subprocess.DEVNULL)
        p.wait(timeout=10)
        time.sleep(1.5)
        assert not [o for o in col.snapshot() if isinstance(o, ProcessExec) and o.pid == p.pid]
    finally:
        ctl.set_status(enabled=1)
        ctl.close()
    back = col.wait_for(lambda o: isinstance(o, BackendError) and
                        o.message.startswith("audit was enabled again (enabled=1): collection "
                                             "resumed after "), timeout=5)
    assert len(back) == 1 and be.blind_episodes() == (1, False)
    p = subprocess.Popen(["/bin/sh", "-c", "echo seen again"], stdout=subprocess.DEVNULL)
    p.wait(timeout=10)
    assert col.wait_for(lambda o: isinstance(o, ProcessExec) and o.pid == p.pid)
    be.stop()
    assert len(_said(col, "audit was")) == 2        # nothing more at a clean stop


def test_audit_pid_never_reads_the_multicast_group_without_taking_the_pid(baseline,
                                                                          start_backend):
    """Option ``audit_pid="never"``: audit is enabled and the rules added as in unicast mode,
    but the pid stays free (an auditd can register at any time); records come by multicast."""
    _needs_free_audit(baseline)
    be, col = start_backend(audit_pid="never")
    assert be.mode == "multicast"
    cfg, rules = nl.snapshot_state()
    assert cfg["pid"] == 0 and cfg["enabled"] == 1
    assert [r for r in rules if nl.AuditRule.unpack(r).key == "sysmonx"]
    p = subprocess.Popen(["/bin/sh", "-c", "echo never taken"], stdout=subprocess.DEVNULL)
    p.wait(timeout=10)
    ev = col.wait_for(lambda o: isinstance(o, ProcessExec) and o.pid == p.pid)
    assert [e.argv for e in ev] == [["/bin/sh", "-c", "echo never taken"]]
    be.stop()   # enabled put back: the baseline check


def test_audit_rules_removed_is_said_once_per_episode(baseline, start_backend):
    """Rules of the sensor deleted behind its back: ``integrity()`` reports them at every
    check while they are missing (the guard makes one finding of it), stderr says it once."""
    said: list = []
    be, col = start_backend(on_status=said.append)
    ctl = nl.AuditSocket()
    try:
        ours = [r for r in ctl.list_rules() if nl.AuditRule.unpack(r).key == "sysmonx"]
        ctl.del_rule(ours[0])
        problem = ("audit_rules_changed", f"1 of the sensor's {len(ours)} audit rules (key "
                   "'sysmonx') were removed from the kernel")
        assert be.integrity() == [problem] and be.integrity() == [problem]
        assert said == [f"audit: {problem[1]}: an audit_rules_changed finding (event 201)"]
    finally:
        ctl.close()
    be.stop()   # the other rules deleted, the state as before: the baseline check
