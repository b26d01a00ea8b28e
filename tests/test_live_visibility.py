"""The Linux visibility events, caused for real under ``sysmonx run`` and checked field by field:
PrivilegeChange (211), MemfdCreate (212), ExecMemory (213), ImageLoad (7), remote memory writes
(8, process_vm_writev and ptrace POKEDATA), ProcessTampering (25, prctl PR_SET_MM_ARG_START),
ShellCommand (210, commands typed into an interactive bash on a pseudo-terminal) and DriverLoad
(6, skipped with the reason on kernels without module support).

The activity (``DRIVER``) runs as its own process and prints what it knows (pids, addresses,
names); the sensor writes JSON lines; each test compares. It runs under tier A (``ebpf``) and
tier B (``audit``): tier A sees all of them; tier B sees 8 (``StartAddress`` ``-`` for
process_vm_writev) and 212 (``Name`` ``-``), and says why it cannot see the others
(``CANNOT_SEE``); ShellCommand comes from an auxiliary backend (uprobe through tracefs) and the
argv-rewrite check from the sensor core, the same on every tier.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.live

ROOT = os.geteuid() == 0

CONFIG = """<Sysmon schemaversion="4.91"><EventFiltering>
<RuleGroup name="" groupRelation="or"><ProcessCreate onmatch="exclude"/></RuleGroup>
<RuleGroup name="" groupRelation="or"><ProcessTampering onmatch="exclude"/></RuleGroup>
<RuleGroup name="" groupRelation="or"><CreateRemoteThread onmatch="exclude"/></RuleGroup>
<RuleGroup name="" groupRelation="or"><ImageLoad onmatch="include">
  <ImageLoaded condition="contains">sxlib-</ImageLoaded></ImageLoad></RuleGroup>
<RuleGroup name="" groupRelation="or"><MemfdCreate onmatch="exclude"/></RuleGroup>
<RuleGroup name="" groupRelation="or"><ExecMemory onmatch="exclude"/></RuleGroup>
<RuleGroup name="" groupRelation="or"><PrivilegeChange onmatch="exclude"/></RuleGroup>
<RuleGroup name="" groupRelation="or"><ShellCommand onmatch="exclude"/></RuleGroup>
<RuleGroup name="" groupRelation="or"><DriverLoad onmatch="exclude"/></RuleGroup>
</EventFiltering></Sysmon>
"""

DRIVER = r'''
import ctypes, json, mmap, os, pty, shutil, sys, time
mark, work = sys.argv[1], sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
out = {"pid": os.getpid()}

# 211: a uid change that gains root back (saved uid 0), in a child
r, w = os.pipe()
child = os.fork()
if child == 0:
    os.setresuid(1000, 1000, 0)
    os.setresuid(0, 0, 0)
    os._exit(0)
os.waitpid(child, 0)
out["setuid_pid"] = child

# 212
fd = os.memfd_create(f"sxm-{mark}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
os.close(fd)

# 213: anonymous rw- made r-x; an rwx anonymous mapping
a = libc.mmap(None, 8192, 3, 0x22, -1, 0)
assert libc.mprotect(a, 4096, 5) == 0
b = libc.mmap(None, 4096, 7, 0x22, -1, 0)
out["mprotect_addr"], out["mmap_addr"] = a, b

# 7: a shared object mapped executable
lib = os.path.join(work, f"sxlib-{mark}.so")
shutil.copy("/usr/lib/x86_64-linux-gnu/libz.so.1" if os.path.exists(
    "/usr/lib/x86_64-linux-gnu/libz.so.1") else sys.executable, lib)
with open(lib, "rb") as fh:
    m = mmap.mmap(fh.fileno(), 0, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_EXEC)
    m.close()
out["lib"] = lib

# 8: process_vm_writev into a child, then ptrace POKEDATA
rd, wr = os.pipe()
target = os.fork()
if target == 0:
    buf = ctypes.create_string_buffer(64)
    os.write(wr, str(ctypes.addressof(buf)).encode() + b"\n")
    time.sleep(5)
    os._exit(0)
addr = int(os.read(rd, 64).split()[0])
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
data = ctypes.create_string_buffer(b"sysmonx!", 8)
loc = iovec(ctypes.addressof(data), 8)
rem = iovec(addr, 8)
n = libc.process_vm_writev(target, ctypes.byref(loc), 1, ctypes.byref(rem), 1, 0)
assert n == 8, ctypes.get_errno()
assert libc.ptrace(16, target, None, None) == 0  # PTRACE_ATTACH
os.waitpid(target, os.WUNTRACED)
assert libc.ptrace(5, target, ctypes.c_void_p(addr + 8), ctypes.c_void_p(0x41)) == 0
libc.ptrace(17, target, None, None)  # PTRACE_DETACH
os.kill(target, 9)
os.waitpid(target, 0)
out["target"], out["target_addr"] = target, addr

# 25: the command line moved with prctl(PR_SET_MM, PR_SET_MM_ARG_START)
tamper = os.fork()
if tamper == 0:
    newargs = ctypes.create_string_buffer(b"innocent\0", 64)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                           ctypes.c_ulong]
    rc = libc.prctl(35, 8, ctypes.addressof(newargs), 0, 0)
    os._exit(0 if rc == 0 else 3)
_, st = os.waitpid(tamper, 0)
out["tamper_pid"], out["tamper_ok"] = tamper, os.waitstatus_to_exitcode(st) == 0

# 25: argv overwritten in place (as setproctitle does), then a file created
rw = os.fork()
if rw == 0:
    with open("/proc/self/stat", "rb") as fh:
        f = fh.read().rsplit(b")", 1)[1].split()
    arg_start = int(f[45])
    with open("/proc/self/mem", "r+b", buffering=0) as mem:
        mem.seek(arg_start)
        mem.write(b"[kworker/0:1]\0")
    with open(os.path.join(work, f"after-rewrite-{mark}"), "w") as fh:
        fh.write("x")
    time.sleep(0.8)  # still running when the sensor looks (a /proc check: see the note)
    os._exit(0)
os.waitpid(rw, 0)
out["rewrite_pid"] = rw

# 210: commands typed into an interactive bash on a pty
shell, mfd = pty.fork()
if shell == 0:
    os.execv("/usr/bin/bash", ["bash", "--norc", "--noprofile", "-i"])
def prompt(deadline=10.0):
    """Read the terminal until the shell shows its prompt (as a person would wait)."""
    buf, end = b"", time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            buf += os.read(mfd, 4096)
        except OSError:
            return
        if buf.rstrip().endswith((b"#", b"$")):
            return
cmds = [f"echo {mark}-one", f"echo \"{mark} two\" | cat"]
for c in cmds:
    prompt()
    os.write(mfd, (c + "\n").encode())
prompt()
# a person's session outlives the moment the sensor reads its lines: wait until the sensor
# wrote the two commands (read while bash ran) before typing exit. A session shorter than the
# sensor's reading (every line read after bash was gone) has Tty '-', the documented unknown
# value: at load 7 a machine-speed session of 20 ms was (the flaky Tty '-' of this test)
end = time.monotonic() + 20
while time.monotonic() < end:
    with open(sys.argv[3], encoding="utf-8", errors="replace") as f:
        text = f.read()
    if f"{mark}-one" in text and f"{mark} two" in text:
        break
    time.sleep(0.05)
os.write(mfd, b"exit\n")
try:
    while os.read(mfd, 4096):
        pass
except OSError:
    pass
os.waitpid(shell, 0)
out["shell"], out["cmds"], out["tty"] = shell, cmds, None
print(json.dumps(out))
'''


#: what each tier cannot see (README "More visibility"): event -> {tier: why}
CANNOT_SEE = {
    211: {"audit": "audit logs the credentials after the call only: whether it gained "
                   "privilege cannot be told"},
    213: {"audit": "audit cannot tell anonymous or writable memory from a file mapping"},
    7: {"audit": "audit logs the fd of an mmap, not the file (gone from /proc by the time it "
                 "could be read)"},
    25.1: {"audit": "prctl(PR_SET_MM) is traced by tier A only (the /proc check runs on every "
                    "tier)"},
}


def _tiers() -> list:
    if not ROOT:
        return []
    from sysmonx.sensor.backends import probe
    return [t for t in ("ebpf", "audit") if probe(t) is None]


def _skip_unseen(tier: str, what) -> None:
    why = CANNOT_SEE.get(what, {}).get(tier)
    if why:
        pytest.skip(f"tier {tier}: {why}")


@pytest.fixture(scope="module", params=_tiers() or ["none"])
def run(request):
    tier = request.param
    if tier == "none":
        pytest.skip("needs root and tier A or B")
    workdir = Path(tempfile.mkdtemp(prefix="sysmonx-vis-"))
    cfg = workdir / "config.xml"
    cfg.write_text(CONFIG)
    out = workdir / "events.jsonl"
    err = open(workdir / "stderr", "wb")
    sensor = subprocess.Popen([sys.executable, "-m", "sysmonx.cli", "run", "--backend", tier,
                               "--config", str(cfg), "--format", "jsonl", "-o", str(out)],
                              stderr=err)
    try:
        deadline = time.monotonic() + 90
        while not (out.exists() and '"Started"' in out.read_text()):
            if sensor.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sensor did not start: {(workdir / 'stderr').read_text()[-2000:]}")
            time.sleep(0.1)
        mark = f"sx{uuid.uuid4().hex[:10]}"
        work = workdir / "work"
        work.mkdir()
        drv = subprocess.run([sys.executable, "-c", DRIVER, mark, str(work), str(out)],
                             capture_output=True, text=True, timeout=120)
        assert drv.returncode == 0, drv.stderr
        facts = json.loads(drv.stdout.strip().splitlines()[-1])
        facts["mark"] = mark
        time.sleep(1.5)
    finally:
        sensor.send_signal(signal.SIGTERM)
        try:
            sensor.wait(60)
        except subprocess.TimeoutExpired:
            sensor.kill()
            sensor.wait()
        err.close()
    events = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    yield {"facts": facts, "events": events, "stderr": (workdir / "stderr").read_text(),
           "tier": tier}
    shutil.rmtree(workdir, ignore_errors=True)


def _one(run, eid, **match):
    found = [e for e in run["events"] if e["EventID"] == eid
             and all(e.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (eid, match, found[:3],
                             [e for e in run["events"] if e["EventID"] == eid][:5])
    return found[0]


def _guid_of(run, pid: int) -> str:
    """The GUID the sensor gave the process's image (its event 1, or any event of it)."""
    for e in run["events"]:
        if e.get("ProcessId") == str(pid) and "ProcessGuid" in e:
            return e["ProcessGuid"]
    raise AssertionError(f"no event of pid {pid}")


def test_privilege_change_setresuid(run):
    _skip_unseen(run["tier"], 211)
    f = run["facts"]
    e = _one(run, 211, ProcessId=str(f["setuid_pid"]))
    assert e["Syscall"] == "setresuid" and e["ChangeType"] == "User"
    assert e["PreviousValue"] == "1000/1000/0" and e["NewValue"] == "0/0/0"
    assert e["User"] == "root" and e["Image"] == os.path.realpath(sys.executable)
    assert e["RuleName"] == "-" and e["System"]["Provider"] == "Linux-Sysmon"
    # the first call dropped privilege: not reported
    assert len([x for x in run["events"] if x["EventID"] == 211
                and x["ProcessId"] == str(f["setuid_pid"])]) == 1


def test_memfd_create(run):
    f = run["facts"]
    if run["tier"] == "audit":  # the name is a pointer audit does not follow: unknown value
        e = _one(run, 212, ProcessId=str(f["pid"]), Flags="MFD_CLOEXEC|MFD_ALLOW_SEALING")
        assert e["Name"] == "-"
    else:
        e = _one(run, 212, Name=f"sxm-{f['mark']}")
    assert e["ProcessId"] == str(f["pid"]) and e["Flags"] == "MFD_CLOEXEC|MFD_ALLOW_SEALING"
    assert e["Image"] == os.path.realpath(sys.executable) and e["User"] == "root"
    assert e["ProcessGuid"] == _guid_of(run, f["pid"])


def test_exec_memory_mprotect_and_mmap(run):
    _skip_unseen(run["tier"], 213)
    f = run["facts"]
    e = _one(run, 213, ProcessId=str(f["pid"]), Address=hex(f["mprotect_addr"]))
    assert e["Syscall"] == "mprotect" and e["Length"] == "4096"
    assert e["Protection"] == "r-x" and e["PreviousProtection"] == "rw-"
    m = _one(run, 213, ProcessId=str(f["pid"]), Address=hex(f["mmap_addr"]))
    assert m["Syscall"] == "mmap" and m["Length"] == "4096"
    assert m["Protection"] == "rwx" and m["PreviousProtection"] == "-"


def test_image_load_of_a_mapped_library(run):
    import hashlib
    _skip_unseen(run["tier"], 7)
    f = run["facts"]
    e = _one(run, 7, ImageLoaded=f["lib"])
    assert e["ProcessId"] == str(f["pid"])
    digest = hashlib.sha256(Path(f["lib"]).read_bytes()).hexdigest() \
        if Path(f["lib"]).exists() else None
    if digest:
        assert e["Hashes"] == f"SHA256={digest}"
    assert e["Signed"] == "-" and e["User"] == "root"


def test_remote_memory_writes(run):
    f = run["facts"]
    vm = _one(run, 8, SourceProcessId=str(f["pid"]), StartFunction="process_vm_writev")
    assert vm["TargetProcessId"] == str(f["target"])
    # tier B: the remote address is inside the iovec array audit does not log
    assert vm["StartAddress"] == (hex(f["target_addr"]) if run["tier"] == "ebpf" else "-")
    assert vm["NewThreadId"] == "0"
    assert vm["SourceImage"] == os.path.realpath(sys.executable)
    if run["tier"] == "audit" and vm["TargetImage"] == "-":
        # known gap (note): tier B learns of a child that forked without exec only when it
        # is reported itself; this target is killed before the write is assembled, so its
        # image and GUID are the documented unknown values there
        assert vm["TargetProcessGuid"] == "{00000000-0000-0000-0000-000000000000}"
    else:
        assert vm["TargetImage"] == os.path.realpath(sys.executable)
        assert vm["TargetProcessGuid"] == _guid_of(run, f["target"])
    pk = _one(run, 8, SourceProcessId=str(f["pid"]), StartFunction="ptrace(PTRACE_POKEDATA)")
    assert pk["TargetProcessId"] == str(f["target"])
    assert pk["StartAddress"] == hex(f["target_addr"] + 8)


def test_process_tampering_argv_moved(run):
    _skip_unseen(run["tier"], 25.1)
    f = run["facts"]
    if not f["tamper_ok"]:
        pytest.skip("prctl(PR_SET_MM) refused here: it needs CAP_SYS_RESOURCE, which this "
                    "container does not grant even to root")
    e = _one(run, 25, ProcessId=str(f["tamper_pid"]), Type="Command line is rewritten")
    assert e["Image"] == os.path.realpath(sys.executable) and e["User"] == "root"


def test_process_tampering_argv_rewritten_in_place(run):
    f = run["facts"]
    e = _one(run, 25, ProcessId=str(f["rewrite_pid"]), Type="Command line is rewritten")
    assert e["Image"] == os.path.realpath(sys.executable) and e["User"] == "root"
    assert e["ProcessGuid"] == _guid_of(run, f["rewrite_pid"])


def test_shell_commands_typed_on_a_pty(run):
    f = run["facts"]
    got = [e for e in run["events"] if e["EventID"] == 210 and e["ProcessId"] == str(f["shell"])]
    assert [e["Command"] for e in got] == f["cmds"] + ["exit"]
    for e in got:
        assert e["Image"] == os.path.realpath("/usr/bin/bash") and e["User"] == "root"
        # exit: read while bash runs, is a zombie or is reaped, the terminal of its other lines
        assert e["Tty"].startswith("/dev/pts/") and e["Tty"] == got[0]["Tty"]
        assert e["ProcessGuid"] == got[0]["ProcessGuid"] != "{00000000-0000-0000-0000-000000000000}"


def test_driver_load_needs_module_support(run):
    if run["tier"] != "ebpf":
        pytest.skip(f"tier {run['tier']}: DriverLoad is traced by tier A only")
    if not os.path.exists("/proc/modules"):
        assert "kernel without module support" in json.dumps(run["events"])
        pytest.skip("kernel built without module support (no /proc/modules; init_module and "
                    "finit_module return ENOSYS): no module can be loaded here")
    pytest.skip("a module load needs a module file built for this kernel (not shipped)")
