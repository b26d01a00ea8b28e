"""Tier-C backend (cn_proc + fanotify + tracefs), run for real as root.

Live tests skip with the reason from ``CnprocBackend.probe()`` (or tracefs/fanotify
availability) when the capability is missing. Every live test filters on its own process tree
or temp directory (other workloads run on the same machine), is bounded in time (``wait_for``
with deadlines; the backend reads non-blocking) and stops the backend in ``finally`` so kernel
state is restored even on failure. The pure parsers are tested without privileges.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sysmonx.sensor.backends import cn_fanotify, cn_tracefs, cnproc
from sysmonx.sensor.backends.cn_fanotify import ExecImages, fanotify_available
from sysmonx.sensor.backends.cn_tracefs import (ConnectMatcher, TcpTransition, parse_line,
                                                tracefs_available)
from sysmonx.sensor.backends.cnproc import (PROC_EVENT_EXEC, PROC_EVENT_EXIT, PROC_EVENT_FORK,
                                            CnprocBackend, ProcConnector, mcast_message,
                                            parse_cn_messages)
from sysmonx.sensor.procfs import parse_stat
from sysmonx.sensor.observations import (FileCreate, FileDelete, Loss, NetworkConnect,
                                         ProcessExec, ProcessExit, ProcessFork)

pytestmark = pytest.mark.live

PROBE = CnprocBackend.probe()
needs_cnproc = pytest.mark.skipif(PROBE is not None, reason=f"cn_proc backend unavailable: {PROBE}")
FAN = fanotify_available() if PROBE is None else PROBE
needs_fanotify = pytest.mark.skipif(FAN is not None, reason=f"fanotify unavailable: {FAN}")
TRACE = tracefs_available() if PROBE is None else PROBE
needs_tracefs = pytest.mark.skipif(TRACE is not None, reason=f"tracefs unavailable: {TRACE}")

SH = os.path.realpath("/bin/sh")
TRUE = os.path.realpath("/bin/true")


class Collector:
    """Thread-safe observation sink with bounded waiting."""

    def __init__(self, delay_types: tuple = (), delay_s: float = 0.0) -> None:
        self.items: list = []
        self.cond = threading.Condition()
        self.delay_types = delay_types
        self.delay_s = delay_s

    def __call__(self, obs) -> None:
        if self.delay_types and isinstance(obs, self.delay_types):
            time.sleep(self.delay_s)  # back-pressure: a slow consumer
        with self.cond:
            self.items.append(obs)
            self.cond.notify_all()

    def wait_for(self, pred, timeout: float = 10.0):
        """First observation matching ``pred`` (waits up to ``timeout``), or None."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for obs in self.items:
                    if pred(obs):
                        return obs
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def of(self, cls, pred=lambda o: True) -> list:
        with self.cond:
            return [o for o in self.items if isinstance(o, cls) and pred(o)]


def _fanotify_fds() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[fanotify]":
                n += 1
        except OSError:
            pass
    return n


def _stat_fields(pid: int) -> list:
    data = Path(f"/proc/{pid}/stat").read_bytes()
    return data[data.rfind(b")") + 2:].split()


@pytest.fixture
def run_backend():
    """Start a CnprocBackend with given options; always stopped at teardown."""
    started = []

    def start(collector: Collector, **options) -> CnprocBackend:
        options.setdefault("fanotify_mounts", ["/"])
        b = CnprocBackend(collector, options=options)
        started.append(b)
        b.start()
        return b

    yield start
    for b in started:
        b.stop()


# ------------------------------------------------------------------------------ live tests

@needs_cnproc
def test_exec_exit_code_and_full_enrichment(run_backend, tmp_path):
    """A process that lives until we release it: every ProcessExec field is exact, and its
    ProcessExit has exit code 7 and the same start time."""
    col = Collector()
    run_backend(col, tracefs=False)
    child = subprocess.Popen([SH, "-c", "read _; exit 7"], cwd=tmp_path, stdin=subprocess.PIPE)
    try:
        ex = col.wait_for(lambda o: isinstance(o, ProcessExec) and o.pid == child.pid)
        assert ex is not None, "no ProcessExec for the child"
        fields = _stat_fields(child.pid)
        assert ex.image == SH
        assert ex.argv == [SH, "-c", "read _; exit 7"]
        assert ex.cwd == str(tmp_path)
        assert ex.ppid == os.getpid()
        assert ex.tid == child.pid
        assert ex.uid == os.getuid()
        assert ex.start_ticks == int(fields[19])
        assert ex.end_data == (int(fields[24]) or None)  # endcode: the ProcessGuid key
        assert ex.auid == int(Path(f"/proc/{child.pid}/loginuid").read_text())
        assert ex.sessionid == int(Path(f"/proc/{child.pid}/sessionid").read_text())
        assert abs(ex.ts_ns - time.time_ns()) < 10 * 10**9
    finally:
        child.stdin.close()
        child.wait(10)
    assert child.returncode == 7
    ext = col.wait_for(lambda o: isinstance(o, ProcessExit) and o.pid == child.pid)
    assert ext is not None
    assert ext.exit_code == 7
    assert ext.start_ticks == ex.start_ticks
    assert ext.ts_ns >= ex.ts_ns


@needs_cnproc
def test_fork_without_exec_is_reported_with_start_time(run_backend):
    """A child that forks and never execs: ProcessFork with its parent and its start time
    (event 5 of such children had Image '-' and a zero GUID)."""
    import sys
    col = Collector()
    run_backend(col, tracefs=False, fanotify=False)
    code = ("import os, sys, time\npid = os.fork()\n"
            "if pid == 0:\n    time.sleep(0.05)\n    os._exit(0)\n"
            "print(pid, flush=True)\nos.waitpid(pid, 0)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    kid = int(p.stdout.readline())
    start = int(_stat_fields(kid)[19])
    p.wait(10)
    fork = col.wait_for(lambda o: isinstance(o, ProcessFork) and o.pid == kid)
    assert fork is not None and fork.ppid == p.pid and fork.start_ticks == start
    ext = col.wait_for(lambda o: isinstance(o, ProcessExit) and o.pid == kid)
    assert ext is not None and ext.start_ticks == start


@needs_cnproc
@needs_fanotify
def test_memfd_exec_image_is_the_kernel_view_not_the_loader(run_backend):
    """memfd_create + execv("/proc/self/fd/N") of a dynamic binary: fanotify sees only the
    ELF interpreter open; the Image was ld-linux. Now it is what /proc/PID/exe shows."""
    import sys
    col = Collector()
    run_backend(col, tracefs=False)
    code = ("import os\nfd = os.memfd_create('sx-cn-memfd')\n"
            f"os.write(fd, open({SH!r}, 'rb').read())\n"
            "os.execv(f'/proc/self/fd/{fd}', ['sh', '-c', 'read _'])\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    try:
        ex = col.wait_for(lambda o: isinstance(o, ProcessExec) and o.pid == p.pid
                          and o.argv == ["sh", "-c", "read _"])
    finally:
        p.stdin.close()
        p.wait(10)
    assert ex is not None and ex.image == "/memfd:sx-cn-memfd (deleted)"


@needs_cnproc
@needs_fanotify
def test_short_lived_sh_exit_7(run_backend):
    """``/bin/sh -c 'exit 7'`` lives about a millisecond: the Image still comes from
    FAN_OPEN_EXEC; argv is either exact or absent (never another process's)."""
    col = Collector()
    b = run_backend(col, tracefs=False)
    children = []
    for _ in range(5):
        p = subprocess.Popen([SH, "-c", "exit 7"])
        p.wait(10)
        assert p.returncode == 7
        children.append(p.pid)
    for pid in children:
        ex = col.wait_for(lambda o, pid=pid: isinstance(o, ProcessExec) and o.pid == pid)
        ext = col.wait_for(lambda o, pid=pid: isinstance(o, ProcessExit) and o.pid == pid)
        assert ex is not None and ext is not None
        assert ex.image == SH
        assert ex.argv in (None, [SH, "-c", "exit 7"])
        assert ex.ppid == os.getpid()
        assert ext.exit_code == 7
    assert b.stats()["image_fanotify"] >= len(children)


@needs_cnproc
@needs_fanotify
def test_file_create_delete_rename(run_backend, tmp_path):
    """FileCreate/FileDelete with exact paths and the acting pid; directories, symlinks and
    FIFOs are not FileCreate; a rename target is a FileCreate."""
    col = Collector()
    run_backend(col, tracefs=False)
    d = tmp_path
    script = (f"echo x > {d}/a; mv {d}/a {d}/b; rm {d}/b; mkdir {d}/sub; ln -s b {d}/link; "
              f"mkfifo {d}/fifo; echo y > {d}/sub/c")
    sh = subprocess.run([SH, "-c", script], timeout=20, check=False)
    assert sh.returncode == 0
    own = d / "own.txt"
    own.write_text("z")
    os.rename(own, d / "renamed.txt")
    os.unlink(d / "renamed.txt")
    last = col.wait_for(lambda o: isinstance(o, FileDelete) and o.path == f"{d}/renamed.txt")
    assert last is not None

    def exec_pid(image):
        ex = col.wait_for(lambda o: isinstance(o, ProcessExec) and o.image == image
                          and o.ppid == sh_pid, timeout=5)
        return ex.pid if ex else None

    sh_ex = col.wait_for(lambda o: isinstance(o, ProcessExec) and o.image == SH
                         and o.ppid == os.getpid() and o.argv in (None, [SH, "-c", script]))
    assert sh_ex is not None
    sh_pid = sh_ex.pid
    mv_pid, rm_pid = exec_pid(os.path.realpath("/bin/mv")), exec_pid(os.path.realpath("/bin/rm"))
    assert mv_pid and rm_pid
    files = [(type(o).__name__, o.pid, o.path) for o in col.of((FileCreate, FileDelete))
             if o.path.startswith(str(d) + "/")]
    me = os.getpid()
    assert files == [
        ("FileCreate", sh_pid, f"{d}/a"),
        ("FileCreate", mv_pid, f"{d}/b"),
        ("FileDelete", rm_pid, f"{d}/b"),
        ("FileCreate", sh_pid, f"{d}/sub/c"),
        ("FileCreate", me, f"{d}/own.txt"),
        ("FileCreate", me, f"{d}/renamed.txt"),
        ("FileDelete", me, f"{d}/renamed.txt"),
    ]


@needs_cnproc
@needs_fanotify
def test_exclude_pids(tmp_path):
    """Events of an excluded pid are not reported; others are."""
    col = Collector()
    b = CnprocBackend(col, exclude_pids=frozenset({os.getpid()}),
                      options={"fanotify_mounts": ["/"], "tracefs": False})
    b.start()
    try:
        (tmp_path / "mine").write_text("1")
        child = subprocess.run([SH, "-c", f"echo 2 > {tmp_path}/child"], timeout=10, check=False)
        assert child.returncode == 0
        got = col.wait_for(lambda o: isinstance(o, FileCreate) and o.path == f"{tmp_path}/child")
        assert got is not None
    finally:
        b.stop()
    assert not col.of(FileCreate, lambda o: o.path == f"{tmp_path}/mine")


CONNECT_CHILD = r"""
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
c = socket.socket(family, socket.SOCK_STREAM)
c.connect((sys.argv[1], int(sys.argv[2])))
print(c.getsockname()[1], flush=True)
c.recv(1)
"""


@needs_cnproc
@needs_tracefs
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_tcp_connect_and_accept(run_backend, host):
    """A child connects to our listener: NetworkConnect(initiated) with the child's pid,
    destination and source port; the accept is attributed to the listening process (us)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        srv = socket.socket(family, socket.SOCK_STREAM)
        srv.bind((host, 0))
    except OSError as exc:
        pytest.skip(f"cannot listen on {host}: {exc}")
    col = Collector()
    b = run_backend(col, fanotify=False)
    try:
        srv.listen(4)
        port = srv.getsockname()[1]
        child = subprocess.Popen([sys.executable, "-c", CONNECT_CHILD, host, str(port)],
                                 stdout=subprocess.PIPE, text=True)
        srv.settimeout(10)
        conn, _ = srv.accept()
        sport = int(child.stdout.readline())
        conn.close()
        child.wait(10)
        out = col.wait_for(lambda o: isinstance(o, NetworkConnect) and o.initiated
                           and o.pid == child.pid)
        inc = col.wait_for(lambda o: isinstance(o, NetworkConnect) and not o.initiated
                           and o.dest_port == port)
    finally:
        srv.close()
    assert out is not None, b.stats()
    assert (out.protocol, out.dest_ip, out.dest_port, out.source_ip, out.source_port, out.ipv6) == \
        ("tcp", host, port, host, sport, family == socket.AF_INET6)
    assert inc is not None
    assert (inc.pid, inc.protocol, inc.dest_ip, inc.dest_port, inc.source_ip, inc.source_port) == \
        (os.getpid(), "tcp", host, port, host, sport)
    assert abs(out.ts_ns - time.time_ns()) < 10 * 10**9


BURST_GEN = r"""
import os, sys
n, inflight_max = int(sys.argv[1]), int(sys.argv[2])
env = {"PATH": "/usr/bin:/bin"}
pids = {}
inflight = set()
i = 0
while i < n or inflight:
    while i < n and len(inflight) < inflight_max:
        pid = os.posix_spawn("/bin/true", ["/bin/true", "burst-%d" % i], env)
        pids[pid] = i
        inflight.add(pid)
        i += 1
    pid, _ = os.waitpid(-1, 0)
    inflight.discard(pid)
sys.stdout.write("".join("%d %d\n" % kv for kv in pids.items()))
"""

# Documented lower bound for complete CommandLine in a burst of ~1 ms processes: the spec
# measured 41-73 % on this machine (§2.1); we measured 41-66 % with other load on the 2 vCPUs.
# The bound leaves room for a busy CI machine; the measured share is printed and recorded.
BURST_ARGV_MIN_SHARE = 0.10


@needs_cnproc
@needs_fanotify
def test_burst_2000_execs(run_backend, record_property):
    """2000 × /bin/true from a separate process (8 in flight): every exec and exit seen with
    the right exit code; Image ~100 % (FAN_OPEN_EXEC); argv partial but never wrong."""
    n = 2000
    col = Collector()
    b = run_backend(col, tracefs=False)
    gen = subprocess.Popen([sys.executable, "-c", BURST_GEN, str(n), "8"],
                           stdout=subprocess.PIPE, text=True)
    try:
        out, _ = gen.communicate(timeout=120)
    finally:
        gen.kill()
    assert gen.returncode == 0
    index = {int(a): int(i) for a, i in (line.split() for line in out.splitlines())}
    assert len(index) == n
    last = max(index, key=index.get)
    assert col.wait_for(lambda o: isinstance(o, ProcessExit) and o.pid == last, timeout=30)
    time.sleep(0.2)
    b.stop()
    execs = {o.pid: o for o in col.of(ProcessExec, lambda o: o.pid in index)}
    exits = {o.pid: o for o in col.of(ProcessExit, lambda o: o.pid in index)}
    lost = sum(o.count for o in col.of(Loss))
    image_ok = sum(1 for o in execs.values() if o.image == TRUE)
    argv_ok = sum(1 for p, o in execs.items() if o.argv == ["/bin/true", f"burst-{index[p]}"])
    argv_wrong = [o for p, o in execs.items()
                  if o.argv is not None and o.argv != ["/bin/true", f"burst-{index[p]}"]]
    record_property("burst_execs_seen", len(execs))
    record_property("burst_image_share", image_ok / n)
    record_property("burst_argv_share", argv_ok / n)
    print(f"\nburst: {len(execs)}/{n} execs, image {image_ok / n:.1%}, argv {argv_ok / n:.1%}, "
          f"exits {len(exits)}, lost {lost}, stats {b.stats()}")
    assert len(execs) + lost >= n
    if lost == 0:
        assert len(execs) == n and len(exits) == n
    assert all(o.exit_code == 0 for o in exits.values())
    assert image_ok >= 0.99 * len(execs)
    assert not argv_wrong, argv_wrong[:3]
    assert argv_ok >= BURST_ARGV_MIN_SHARE * n, f"argv share {argv_ok / n:.1%}"
    wrong_parent = [(pid, o.ppid) for pid, o in execs.items() if o.ppid != gen.pid]
    assert not wrong_parent, f"{len(wrong_parent)} execs whose parent is not the generator "\
        f"{gen.pid} (pid, ppid): {wrong_parent[:5]}"


@needs_cnproc
def test_seq_gap_loss_with_tiny_buffer_and_slow_reader(run_backend):
    """A tiny receive buffer and a consumer that blocks 2 ms per process event: the kernel
    drops messages, every drop is reported (cnproc.seq gaps, plus cnproc.enobufs for drops no
    later message revealed), and every missing exec of ours is covered by the reported count."""
    n = 300
    col = Collector(delay_types=(ProcessExec, ProcessExit), delay_s=0.002)
    b = run_backend(col, rcvbuf=4096, fanotify=False, tracefs=False, enrich=False)
    gen = subprocess.run([sys.executable, "-c", BURST_GEN, str(n), "8"], capture_output=True,
                         text=True, timeout=60, check=True)
    pids = {int(line.split()[0]) for line in gen.stdout.splitlines()}
    time.sleep(0.3)
    b.stop()
    losses = col.of(Loss)
    seq = [o for o in losses if o.source == "cnproc.seq"]
    assert seq and all(o.count > 0 for o in seq)
    assert {o.source for o in losses} <= {"cnproc.seq", "cnproc.enobufs"}
    st = b.stats()
    assert sum(o.count for o in losses) == st["lost"]
    assert st["seq_lost"] == sum(o.count for o in seq)
    assert st["enobufs"] > 0
    seen = {o.pid for o in col.of(ProcessExec) if o.pid in pids}
    assert len(seen) < n
    assert n - len(seen) <= st["lost"]


@needs_cnproc
def test_kernel_event_filter(run_backend):
    """On Linux 6.6+ with kernel filtering (EXEC|EXIT), exec and exit still arrive and the
    kernel drops forks; the parent pid then comes from /proc."""
    from sysmonx.sensor.procfs import kernel_version
    if kernel_version() < (6, 6):
        pytest.skip("kernel event filtering needs Linux 6.6+")
    col = Collector()
    b = run_backend(col, kernel_filter=True, fanotify=False, tracefs=False)
    time.sleep(0.3)  # messages queued before the filter was installed are processed
    forks_before = b.stats()["forks"]
    p = subprocess.Popen([SH, "-c", "exit 3"])
    p.wait(10)
    ext = col.wait_for(lambda o: isinstance(o, ProcessExit) and o.pid == p.pid)
    assert ext is not None and ext.exit_code == 3
    ex = col.wait_for(lambda o: isinstance(o, ProcessExec) and o.pid == p.pid)
    assert ex is not None and ex.image in (SH, None)
    st = b.stats()
    assert st["forks"] == forks_before and st["execs"] >= 1


@needs_cnproc
def test_stop_restores_kernel_state():
    """stop() closes the fanotify group, removes the tracefs instance and unmounts tracefs if
    it mounted it; it is idempotent, and a second start/stop works."""
    fan_before = _fanotify_fds()
    for _ in range(2):
        b = CnprocBackend(Collector(), options={"fanotify_mounts": ["/"]})
        b.start()
        try:
            trace = b._trace
            instance = trace.instance if trace else None
            mounted = trace.mounted_here if trace else None
            if FAN is None:
                assert _fanotify_fds() == fan_before + 1
        finally:
            b.stop()
        b.stop()
        assert _fanotify_fds() == fan_before
        if instance:
            assert not os.path.exists(instance)
        if mounted:
            assert mounted not in Path("/proc/self/mountinfo").read_text()
            assert not os.path.exists(mounted)
        assert b._cn is None  # the proc connector socket is closed


# ------------------------------------------------------------------------ parser unit tests

def _cn(what: int, cpu: int, seq: int, ts: int, *fields: int, ack: int = 0) -> bytes:
    body = struct.pack("=IIQ", what, cpu, ts) + struct.pack("=" + "I" * len(fields), *fields)
    body += b"\0" * (40 - len(body))
    cn = struct.pack("=IIIIHH", 1, 1, seq, ack, len(body), 0) + body
    return struct.pack("=IHHII", 16 + len(cn), 3, 0, seq, 0) + cn


def test_parse_cn_messages():
    out: list = []
    data = _cn(PROC_EVENT_FORK, 1, 10, 5, 100, 100, 101, 101) + _cn(PROC_EVENT_EXEC, 0, 7, 6, 101, 101) \
        + _cn(PROC_EVENT_EXIT, 1, 11, 9, 101, 101, 7 << 8, 17, 100, 100)
    assert parse_cn_messages(data, out) == 0
    assert [tuple(m) for m in out] == [
        (PROC_EVENT_FORK, 1, 10, 5, 100, 100, 101, 101, 0, 0, 0),
        (PROC_EVENT_EXEC, 0, 7, 6, 101, 101, 0, 0, 0, 0, 0),
        (PROC_EVENT_EXIT, 1, 11, 9, 101, 101, 1792, 17, 100, 100, 0),
    ]
    # hostile: length past the end, zero length
    assert parse_cn_messages(data[:-4], []) == 1
    assert parse_cn_messages(struct.pack("=IHHII", 0, 3, 0, 0, 0), []) == 1


def test_mcast_message_layout():
    legacy = mcast_message(1, 5, None, 9)
    assert legacy == struct.pack("=IHHII", 40, 3, 0, 5, 0) + struct.pack("=IIIIHH", 1, 1, 5, 9, 4, 0) \
        + struct.pack("=I", 1)
    filtered = mcast_message(2, 5, 0x80000003)
    assert len(filtered) == 44 and filtered[-8:] == struct.pack("=II", 2, 0x80000003)


def test_seq_gap_accounting_synthetic():
    """The gap logic on synthetic messages: per CPU, wrap-around, stale duplicates."""
    col = Collector()
    b = CnprocBackend(col, options={"enrich": False})
    b._fan = None
    b._cn = ProcConnector(1 << 16, False, b._loss)  # not opened: only its accounting is used
    msgs: list = []
    parse_cn_messages(
        _cn(PROC_EVENT_FORK, 0, 0xFFFFFFFE, 1, 1, 1, 2, 2)
        + _cn(PROC_EVENT_FORK, 1, 50, 1, 1, 1, 3, 3)
        + _cn(PROC_EVENT_FORK, 0, 1, 1, 1, 1, 4, 4)      # lost 0xFFFFFFFF and 0 -> 2
        + _cn(PROC_EVENT_FORK, 1, 50, 1, 1, 1, 5, 5)     # duplicate/older: ignored
        + _cn(PROC_EVENT_FORK, 1, 54, 1, 1, 1, 6, 6), msgs)  # lost 51..53 -> 3
    b._process_batch(msgs)
    b._flush_out()
    assert [(o.source, o.count) for o in col.of(Loss)] == [("cnproc.seq", 2), ("cnproc.seq", 3)]
    assert b.stats()["lost"] == 5


def test_exec_images_grouping(monkeypatch):
    """FAN_OPEN_EXEC paths -> one image per exec: script + interpreter + ld.so is one exec
    (image = interpreter, as /proc/PID/exe shows); a second exec is detected."""
    kinds = {"/s.sh": ("script", None), "/usr/bin/dash": ("elf", "/lib64/ld-linux-x86-64.so.2"),
             "/usr/lib/ld-linux-x86-64.so.2": ("elf", None), "/usr/bin/true": ("elf", "/lib64/ld"),
             "/static": ("elf", None), "/notes.txt": ("other", None)}
    monkeypatch.setattr(cn_fanotify, "elf_info", lambda p: kinds.get(p, ("unknown", None)))
    ei = ExecImages()
    for p in ("/s.sh", "/usr/bin/dash", "/usr/lib/ld-linux-x86-64.so.2", "/usr/bin/true",
              "/usr/lib/ld-linux-x86-64.so.2"):
        ei.add(10, p)
    assert ei.take(10) == ("/usr/bin/dash", True)
    assert ei.take(10) == ("/usr/bin/true", False)
    assert ei.take(10) == (None, False)
    # a static binary (no interpreter), then a stale non-ELF left by a failed exec
    ei.add(11, "/static")
    ei.add(11, "/notes.txt")
    ei.add(11, "/usr/bin/true")
    assert ei.take(11) == ("/static", True)
    assert ei.take(11) == ("/usr/bin/true", False)
    ei.add(12, "/usr/bin/true")
    ei.forget(12)
    assert ei.take(12) == (None, False)


def test_elf_info_on_real_binaries():
    kind, interp = cn_fanotify.elf_info(TRUE)
    assert kind == "elf"
    assert interp is None or interp.startswith("/")
    assert cn_fanotify.elf_info("/nonexistent/x") == ("unknown", None)


def test_parse_stat_with_hostile_comm():
    fields = " ".join(str(i) for i in range(3, 53))
    data = f"42 (a) (b c) {fields}\n".encode()
    _state, ppid, start, end_data = parse_stat(data)
    assert (ppid, start, end_data) == (4, 22, 27)
    assert parse_stat(b"garbage") is None
    assert parse_stat(b"1 (x) S 1") is None


def test_parse_trace_lines():
    v4 = ("          python-21747   (  21747) [000] .....  2483.427460: inet_sock_set_state: "
          "family=AF_INET protocol=IPPROTO_TCP sport=0 dport=60391 saddr=127.0.0.1 daddr=10.0.0.2 "
          "saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:10.0.0.2 oldstate=TCP_CLOSE newstate=TCP_SYN_SENT")
    tr = parse_line(v4)
    assert tr == TcpTransition(21747, 21747, 2483427460000, False, 0, 60391, "127.0.0.1",
                               "10.0.0.2", 7, 2, "IPPROTO_TCP")
    v6 = ("   my-prog-x-12-3   (-------) [001] ..s2.  10.000001: inet_sock_set_state: "
          "family=AF_INET6 protocol=IPPROTO_TCP sport=443 dport=5000 saddr=0.0.0.0 daddr=0.0.0.0 "
          "saddrv6=fe80::1 daddrv6=2001:db8::2 oldstate=TCP_SYN_RECV newstate=TCP_ESTABLISHED")
    tr6 = parse_line(v6)
    assert (tr6.tid, tr6.tgid, tr6.mono_ns, tr6.ipv6, tr6.saddr, tr6.daddr, tr6.oldstate,
            tr6.newstate) == (3, None, 10000001000, True, "fe80::1", "2001:db8::2", 3, 1)
    assert parse_line("garbage") is None
    assert parse_line(v4.replace("sport=0", "sport=x")) is None
    assert parse_line("# tracer: nop") is None


def test_connect_matcher_pairs_ports_by_thread_else_unknown():
    """Two connects to one destination pending: the transition's thread picks its own; when the
    thread says nothing (the handshake ran elsewhere) the port is unknown, not maybe the other
    socket's (back-to-back connects got another connection's SourcePort)."""
    m = ConnectMatcher(pending_s=0.0)

    def tr(old, new, sport, tid):
        return TcpTransition(tid, tid, 1, False, sport, 80, "10.0.0.1", "10.0.0.9", old, new, "")

    a, b2 = tr(7, 2, 0, 1), tr(7, 2, 0, 2)
    assert m.feed(a) == [] and m.feed(b2) == []
    assert m.feed(tr(2, 1, 40001, 2)) == [(b2, 40001)]   # B's thread: B's port
    assert m.feed(tr(2, 1, 40000, 99)) == [(a, 40000)]   # one pending: certain
    a, b2 = tr(7, 2, 0, 1), tr(7, 2, 0, 2)
    m.feed(a)
    m.feed(b2)
    assert m.feed(tr(2, 1, 40002, 99)) == [(a, None)]   # two pending, neither thread: unknown
    assert m.feed(tr(2, 7, 40003, 99)) == [(b2, 40003)]
    assert m.ambiguous == 1
    c = tr(7, 2, 0, 3)
    m.feed(c)
    assert m.expire() == [(c, None)]
    bound = tr(7, 2, 5555, 4)
    assert m.feed(bound) == [(bound, 5555)]


def test_tracefs_stale_instance_reaped(tmp_path):
    """Instances named after dead pids are removed (simulated on a plain directory)."""
    inst = tmp_path / "instances"
    inst.mkdir()
    (inst / "sysmonx_999999999").mkdir()
    (inst / f"sysmonx_{os.getpid()}").mkdir()
    (inst / "other").mkdir()
    cn_tracefs.TcpStateTrace._reap_stale(str(inst))
    assert sorted(p.name for p in inst.iterdir()) == ["other", f"sysmonx_{os.getpid()}"]


def test_probe_reason_is_text_or_none():
    assert PROBE is None or (isinstance(PROBE, str) and PROBE)
    assert cnproc.CnprocBackend.name == "cnproc" and cnproc.CnprocBackend.tier == "C"


def test_stale_private_tracefs_mount_of_a_dead_sensor_is_removed():
    """A cnproc sensor killed with SIGKILL leaves its private tracefs mount; the next start
    removes it (a new user's report)."""
    import ctypes
    from sysmonx.sensor.backends import cn_tracefs
    if os.geteuid() != 0 or not os.path.isdir("/run"):
        pytest.skip("needs root and /run")
    mnt = "/run/sysmonx-tracefs-999999999-test"
    os.makedirs(mnt, exist_ok=True)
    if cn_tracefs._libc().mount(b"nodev", mnt.encode(), b"tracefs", 0, None) != 0:
        os.rmdir(mnt)
        pytest.skip(f"cannot mount tracefs: {os.strerror(ctypes.get_errno())}")
    try:
        assert cn_tracefs._reap_stale_mounts() >= 1
        with open("/proc/self/mounts") as f:
            assert mnt not in f.read()
        assert not os.path.exists(mnt)
    finally:
        if os.path.ismount(mnt):
            cn_tracefs._libc().umount2(mnt.encode(), 0)
        if os.path.isdir(mnt):
            os.rmdir(mnt)


UNANSWERED_CHILD = """
import socket, sys, time
a = (sys.argv[1], int(sys.argv[2]))
c = socket.socket(); c.setblocking(False)
print(c.connect_ex(a), c.getsockname()[1], flush=True)
time.sleep(3)  # still connecting: the listener's accept queue is full, the SYN goes unanswered
"""


def test_connect_that_never_completes_keeps_its_source(run_backend):
    """A connect nobody answers (a scan, a dead host) leaves SYN_SENT only after minutes: its
    source address and port are still written (the port from the connecting socket), as tier A
    does; they were the unknown values (a new user's trial)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    addr = srv.getsockname()
    filler = socket.create_connection(addr)  # fills the accept queue: further SYNs are dropped
    col = Collector()
    run_backend(col, fanotify=False)
    try:
        child = subprocess.Popen([sys.executable, "-c", UNANSWERED_CHILD, *map(str, addr)],
                                 stdout=subprocess.PIPE, text=True)
        rc, sport = map(int, child.stdout.readline().split())
        assert rc == 115  # EINPROGRESS
        out = col.wait_for(lambda o: isinstance(o, NetworkConnect) and o.initiated
                           and o.pid == child.pid)
        child.wait(10)
    finally:
        filler.close()
        srv.close()
    assert out is not None
    assert (out.protocol, out.dest_ip, out.dest_port, out.source_ip, out.source_port) == \
        ("tcp", "127.0.0.1", addr[1], "127.0.0.1", sport)
