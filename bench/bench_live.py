#!/usr/bin/env python3
"""Live sensor benchmark: exec load through each backend tier (root only).

    sudo .venv/bin/python bench/bench_live.py [--backends ebpf,audit,cnproc] [--burst 2000]
                                              [--rate 1600] [--seconds 10]

For each tier it starts ``sysmonx run --backend TIER`` (with this Python, so run it with the
project's venv) as a separate process writing JSON lines, then a small C spawner (compiled here
with the system C compiler) runs ``/bin/true <tag>-<i>``: first a burst of ``--burst`` execs as
fast as it can, then ``--rate`` execs per second for ``--seconds``.

What it reports per tier and phase, each against a baseline measured in the same run (the execs
the spawner really made):

* **captured**: *distinct* execs ``i`` whose ProcessCreate has Image ``/usr/bin/true``,
  CommandLine exactly ``/bin/true <tag>-<i>`` and a full ProcessGuid (start second and key
  non-zero) that no other exec of the phase has, and whose ProcessTerminate carries that GUID;
  duplicates and bad GUIDs are counted separately, never as captured;
* **sensor CPU**: the sensor process's own CPU time (utime+stime from ``/proc``) from the start
  of the load until every event of the phase has been written (or nothing more was written for
  3 s: some execs were not captured), divided by the load window (the
  spawner's wall time): the share of one core the sensor needs to keep up with that load. The
  tail after the load (the sensor catching up, event 5 held for ordering) is counted, the idle
  time between phases is not;
* the sensor's CPU with no load of ours, measured over ``--idle`` seconds (default 5) just
  before the phases (the host's own activity, which the sensor traces too: on a shared machine
  it is not zero), and each phase's figure minus that baseline as a second figure; the first
  figure is the headline;
* losses the sensor reported (event 255 counts) and the machine's load average (``uptime``),
  since the 2 cores are shared: rerun when it was busy.

Variants (``--variants``, tier ``ebpf`` only, default ``plain``; other tiers run ``plain``):

* ``probes-off``: tier A without its second BPF object (``SYSMONX_EBPF_VISIBILITY=0``): the
  baseline of what the new syscall probes (setuid family, capset, memfd_create, mmap/mprotect,
  process_vm_writev, ptrace, prctl) cost;
* ``plain``: the default sensor (those probes attached; ImageLoad, MemfdCreate and ExecMemory
  off as the config does not ask for them);
* ``enrich``: ``--enrich`` (every enrichment field computed and written: the process tree, and
  /proc reads of cgroup, namespaces, terminal, session and file type once per process).

Besides the sensor's CPU, each phase reports the **load's own CPU** per exec (the spawner and its
children, from ``RUSAGE_CHILDREN``): in-kernel probe work is charged to the traced processes,
not to the sensor, so that is where the probes' cost shows.

* ``shell``: no exec load; a sensor with its auxiliary backends (no ``--no-dns``) while
  ``--shell-rate R`` commands per second (default 50) are typed for ``--shell-seconds S``
  (default 10) into an interactive bash on a pseudo-terminal; reports how many distinct
  commands came back as ShellCommand (210) events, and repeats.

Exit status: 0 when every requested tier ran and was measured, 1 when a sensor did not start
or exited early, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pty
import resource
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import keep_outputs

SPAWNER_C = r"""
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <errno.h>
extern char **environ;
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
int main(int argc,char**argv){
  long n=atol(argv[1]); double rate=atof(argv[2]); const char*tag=argv[3];
  char buf[128]; long inflight=0, ok=0; double t0=now();
  for(long i=0;i<n;i++){
    if(rate>0){double due=t0+i/rate; double d;
      while((d=due-now())>0){struct timespec s={0,(long)(d*1e9)}; nanosleep(&s,0);} }
    snprintf(buf,sizeof buf,"%s-%ld",tag,i);
    char*args[]={"/bin/true",buf,0}; pid_t pid;
    while(inflight>=64){ if(waitpid(-1,0,0)>0) inflight--; }
    if(posix_spawn(&pid,"/bin/true",0,0,args,environ)==0){inflight++;ok++;}
    while(inflight>0 && waitpid(-1,0,WNOHANG)>0) inflight--;
  }
  while(inflight>0 && waitpid(-1,0,0)>0) inflight--;
  printf("%ld %.3f\n", ok, now()-t0); return 0;
}
"""

ZERO_GUID = "{00000000-0000-0000-0000-000000000000}"
QUIET_S = 3.0  # after the load, the sensor has caught up when it wrote nothing for this long
GUID_RE = re.compile(r"^\{[0-9a-f]{8}-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})\}$")


_RUNS = itertools.count(1)


class BenchError(Exception):
    """The thing measured did not run (a sensor that did not start or died)."""


def build_spawner(workdir: Path) -> Path:
    """Compile the exec spawner into ``workdir``; exits when no C compiler is found."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        sys.exit("a C compiler is needed to build the exec spawner")
    src, exe = workdir / "spawn.c", workdir / "spawn"
    src.write_text(SPAWNER_C)
    subprocess.run([cc, "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def thread_ticks(pid: int) -> dict:
    """utime + stime in clock ticks per thread name (``/proc/PID/task/*/stat``; the sensor
    names its threads ``sysmonx-ebpf``, ``sysmonx-out``, ``sysmonx-guard`` ...; the loop is the
    main thread). Threads that ended are missing."""
    out: dict = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
        except OSError:
            continue
        name = "loop" if tid == str(pid) else text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0) + int(fields[11]) + int(fields[12])
    return out


def full_guid(g: str) -> bool:
    """A ProcessGuid whose start second and key are both non-zero."""
    m = GUID_RE.match(g or "")
    return bool(m) and g != ZERO_GUID and m.group(1) + m.group(2) != "00000000" \
        and m.group(3) + m.group(4) != "0" * 16


class Output:
    """Reads the sensor's JSON lines as they are written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pos = 0
        self.events: list = []

    def poll(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.pos += end
        for line in data[:end].splitlines():
            if line.strip():
                self.events.append(json.loads(line))


def score(events: list, tag: str, made: int) -> dict:
    """Distinct execs of ``tag`` captured correctly with a valid, unique GUID (module doc)."""
    ones: dict = {}
    fives: dict = {}
    prefix = f"/bin/true {tag}-"
    for e in events:
        eid = e.get("EventID")
        if eid == 1 and e.get("CommandLine", "").startswith(prefix):
            ones.setdefault(e["CommandLine"][len(prefix):], []).append(e)
        elif eid == 5:
            fives.setdefault(e.get("ProcessGuid"), []).append(e)
    true_path = os.path.realpath("/bin/true")
    guid_count: dict = {}  # how many distinct execs carry each GUID
    for lst in ones.values():
        guid_count[lst[0]["ProcessGuid"]] = guid_count.get(lst[0]["ProcessGuid"], 0) + 1
    ok = bad_guid = dup = 0
    other: list = []
    for i, lst in ones.items():
        if not i.isdigit() or int(i) >= made:
            continue
        if len(lst) > 1:
            dup += 1
        e = lst[0]
        g = e["ProcessGuid"]
        if not full_guid(g) or guid_count[g] > 1:
            bad_guid += 1
            continue
        ended = [x for x in fives.get(g, []) if x.get("ProcessId") == e.get("ProcessId")]
        if e.get("Image") == true_path and ended:
            ok += 1
        else:
            other.append(f"{tag}-{i}: Image {e.get('Image')!r}, event 5 "
                         f"{'found' if ended else 'missing'}")
    missing = made - len([i for i in ones if i.isdigit() and int(i) < made])
    if missing:
        other.append(f"{missing} execs without an event 1")
    return {"captured": ok, "bad_guid": bad_guid, "duplicates": dup,
            "share": ok / made if made else 0.0, "other": other[:5]}


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def phase(sensor: subprocess.Popen, out: Output, spawner: Path, n: int, rate: float, tag: str,
          catch_up_s: float) -> dict:
    """Run one load phase; CPU counted from its start until the phase's events are all written
    (or ``catch_up_s`` after the load ended)."""
    c0, t0 = cpu_ticks(sensor.pid), time.monotonic()
    th0 = thread_ticks(sensor.pid)
    l0 = _children_cpu()
    res = subprocess.run([str(spawner), str(n), str(rate), tag], capture_output=True, text=True,
                         check=True)
    load_cpu = _children_cpu() - l0
    t_load = time.monotonic()
    c_load = cpu_ticks(sensor.pid)
    made = int(res.stdout.split()[0])
    deadline = t_load + catch_up_s
    prefix = f"/bin/true {tag}-"
    seen, still_since = -1, time.monotonic()
    while True:
        if sensor.poll() is not None:
            raise BenchError(f"sensor exited during the load (status {sensor.returncode})")
        out.poll()
        pids = {e.get("ProcessId") for e in out.events
                if e.get("EventID") == 1 and e.get("CommandLine", "").startswith(prefix)}
        ends = sum(1 for e in out.events if e.get("EventID") == 5 and e.get("ProcessId") in pids)
        now = time.monotonic()
        if len(out.events) != seen:
            seen, still_since = len(out.events), now
        if (len(pids) >= made and ends >= made) or now > deadline:
            break
        if now - still_since > QUIET_S and now - t_load > QUIET_S:
            break  # caught up: nothing written for a while (some execs were not captured)
        time.sleep(0.05)
    c1, t1 = cpu_ticks(sensor.pid), time.monotonic()
    th1 = thread_ticks(sensor.pid)
    window = t_load - t0
    hz = os.sysconf("SC_CLK_TCK")
    threads = {k: (v - th0.get(k, 0)) / hz for k, v in th1.items() if v - th0.get(k, 0) > 0}
    return {"threads": threads, "made": made, "cpu_s": (c1 - c0) / hz, "cpu_in_window_s": (c_load - c0) / hz,
            "load_s": window, "tail_s": t1 - t_load, "load_cpu_s": load_cpu}


def shell_phase(sensor: subprocess.Popen, out: Output, rate: float, seconds: float,
                tag: str) -> dict:
    """Type ``rate`` commands per second into an interactive bash on a pty for ``seconds``;
    count the distinct commands that came back as ShellCommand (210) events, and repeats."""
    n = int(rate * seconds)
    pid, fd = pty.fork()
    if pid == 0:
        os.execv("/usr/bin/bash", ["bash", "--norc", "--noprofile", "-i"])
    os.set_blocking(fd, False)

    def drain() -> None:
        try:
            while os.read(fd, 65536):
                pass
        except OSError:
            pass
    time.sleep(0.5)
    drain()
    t0 = time.monotonic()
    for i in range(n):
        due = t0 + i / rate
        while (d := due - time.monotonic()) > 0:
            time.sleep(min(d, 0.005))
            drain()
        os.write(fd, f": {tag}-{i}\n".encode())
    load_s = time.monotonic() - t0
    os.write(fd, b"exit\n")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        drain()
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            break
        if done:
            break
        time.sleep(0.05)
    os.close(fd)
    want = {f": {tag}-{i}" for i in range(n)}
    seen: dict = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if sensor.poll() is not None:
            raise BenchError(f"sensor exited during the shell phase ({sensor.returncode})")
        out.poll()
        seen = {}
        for e in out.events:
            if e.get("EventID") == 210 and e.get("Command") in want:
                seen[e["Command"]] = seen.get(e["Command"], 0) + 1
        if len(seen) >= n:
            break
        time.sleep(0.2)
    return {"typed": n, "rate": n / load_s if load_s else 0.0, "captured": len(seen),
            "repeated": sum(1 for v in seen.values() if v > 1)}


def start_sensor(tier: str, workdir: Path, variant: str = "plain",
                 rules: Optional[str] = None, sensor_args: tuple = ()) -> tuple:
    """Start ``sysmonx run --backend TIER``; returns ``(process, Output, stderr file)`` once its
    event 4 is written.

    Raises:
        BenchError: the sensor exited or wrote nothing within 90 s (its stderr is included).
    """
    out_file = workdir / f"{tier}-{variant}-{next(_RUNS)}.jsonl"  # a repeated variant: new file
    cfg = workdir / "bench-config.xml"
    cfg.write_text('<Sysmon schemaversion="4.81"><EventFiltering><RuleGroup name="" '
                   'groupRelation="or"><ProcessCreate onmatch="exclude"/></RuleGroup>'
                   '<RuleGroup name="" groupRelation="or"><ProcessTerminate onmatch="exclude"/>'
                   "</RuleGroup></EventFiltering></Sysmon>")
    err = open(workdir / f"{tier}.stderr", "wb")
    env = dict(os.environ)
    extra = ["--no-dns"]
    if variant == "probes-off":
        env["SYSMONX_EBPF_VISIBILITY"] = "0"
    elif variant == "enrich":
        extra.append("--enrich")
    elif variant == "shell":
        extra = []  # the auxiliary backends run (ShellCommand is one)
    sensor = subprocess.Popen([sys.executable, "-m", "sysmonx.cli", "run", "--backend", tier,
                               "--config", str(cfg), "--format", "jsonl",
                               "-o", str(out_file), "--state-dir", str(workdir / "state"), *extra,
                               *(["--rules", rules] if rules else []), *sensor_args],
                              stderr=err, env=env)
    out = Output(out_file)
    deadline = time.monotonic() + 90
    while True:
        out.poll()
        if any(e.get("EventID") == 4 for e in out.events):
            break
        if sensor.poll() is not None or time.monotonic() > deadline:
            if sensor.poll() is None:
                sensor.kill()
                sensor.wait()
            err.close()
            text = (workdir / f"{tier}.stderr").read_text(errors="replace")[-800:]
            raise BenchError(f"{tier}: sensor did not start: {text.strip()}")
        time.sleep(0.1)
    return sensor, out, err


def run_tier(tier: str, spawner: Path, args, workdir: Path, variant: str = "plain") -> list:
    """Both phases under one tier (and variant); returns printable lines.

    Raises:
        BenchError: the sensor did not start or died.
    """
    sensor, out, err = start_sensor(tier, workdir, variant, args.rules, tuple(args.sensor_arg))
    label = tier if variant == "plain" else f"{tier}/{variant}"
    time.sleep(1.0)
    results = []
    c0, t0 = cpu_ticks(sensor.pid), time.monotonic()
    time.sleep(args.idle)
    idle = (cpu_ticks(sensor.pid) - c0) / os.sysconf("SC_CLK_TCK") / (time.monotonic() - t0)
    loads = (("burst", args.burst, 0.0), ("sustained", int(args.rate * args.seconds), args.rate))
    try:
        for name, n, rate in (loads if variant != "shell" else ()):
            tag = f"sxb{os.getpid()}{tier}{name}{out.path.stem.rsplit('-', 1)[-1]}"
            results.append((name, tag, phase(sensor, out, spawner, n, rate, tag,
                                             args.catch_up)))
            time.sleep(1.0)
        shell = None
        if variant == "shell":
            shell = shell_phase(sensor, out, args.shell_rate, args.shell_seconds,
                                f"sxsh{os.getpid()}{tier}")
    finally:
        if sensor.poll() is None:
            sensor.terminate()
            sensor.wait(60)
        err.close()
    out.poll()
    if sensor.returncode not in (0, -15):
        raise BenchError(f"{tier}: sensor exited with status {sensor.returncode}")
    lost = [e for e in out.events if e.get("EventID") == 255]
    guard = re.findall(r"sysmonx: (guard (?:thread )?CPU .*)", (workdir / f"{tier}.stderr").read_text(
        errors="replace"))
    tier = label
    lines = [f"{tier:7} idle       sensor CPU {100 * idle:5.1f} % of one core with no load of ours "
             f"(the host's own activity, over {args.idle:.0f} s)"]
    for name, tag, p in results:
        s = score(out.events, tag, p["made"])
        lines.append(f"{tier:7} {name:10} execs {p['made']:6} ({p['made'] / p['load_s']:6.0f}/s)"
                     f"  captured {s['captured']:6} ({100 * s['share']:6.2f} %) with a valid "
                     f"unique GUID; bad GUID {s['bad_guid']}, duplicates {s['duplicates']}  "
                     f"sensor CPU {100 * p['cpu_s'] / p['load_s']:5.1f} % of one core over the "
                     f"{p['load_s']:.1f} s load (+{p['tail_s']:.1f} s catch-up counted; "
                     f"{100 * p['cpu_in_window_s'] / p['load_s']:.1f} % within the window; "
                     f"{100 * (p['cpu_s'] - idle * (p['load_s'] + p['tail_s'])) / p['load_s']:.1f}"
                     " % "
                     f"net of the idle baseline); load CPU "
                     f"{1e6 * p['load_cpu_s'] / max(1, p['made']):.0f} us per exec")
        if p["threads"]:
            lines.append(f"{tier:7} {name:10} per thread, us per exec (the whole phase): "
                         + ", ".join(f"{k} {1e6 * v / max(1, p['made']):.1f}" for k, v in
                                     sorted(p["threads"].items(), key=lambda kv: -kv[1])))
        if s["other"]:
            lines.append(f"{tier:7} {name:10} not captured: " + "; ".join(s["other"]))
    if shell is not None:
        lines.append(f"{tier:7} shell      typed {shell['typed']} commands at "
                     f"{shell['rate']:.1f}/s into bash on a pty: ShellCommand captured "
                     f"{shell['captured']} ({100 * shell['captured'] / max(1, shell['typed']):.2f}"
                     f" %), repeated {shell['repeated']}")
    lines.append(f"{tier:7} loss events reported: {len(lost)}  "
                 + "; ".join(e.get("Description", "") for e in lost[:5]))
    lines.append(f"{tier:7} self-protection (its own thread's CPU time, the whole run): "
                 + (guard[-1] if guard else "off"))
    return lines


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def _assembly() -> str:
    """Which assembly of events 1 and 5 the sensor runs (the same environment as this one)."""
    from sysmonx.sensor import assemble
    return "compiled code" if getattr(assemble, "_Builder", None) is not None else "Python"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", default="ebpf,audit,cnproc")
    ap.add_argument("--sensor-arg", action="append", default=[], metavar="ARG",
                    help="one more argument for sysmonx run (repeatable), e.g. "
                         "--sensor-arg=--no-guard to measure without the self-protection")
    ap.add_argument("--burst", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=1600)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--catch-up", type=float, default=30.0,
                    help="longest wait for the phase's events after the load (seconds)")
    ap.add_argument("--keep", metavar="DIR", help="keep the sensors' outputs in DIR")
    ap.add_argument("--variants", default="plain",
                    help="tier ebpf: any of probes-off, plain, enrich, shell, comma-separated "
                         "(module doc; default plain: the sensor as it runs)")
    ap.add_argument("--shell-rate", type=float, default=50.0)
    ap.add_argument("--shell-seconds", type=float, default=10.0)
    ap.add_argument("--rules", metavar="PATH",
                    help="Sigma rules the sensors load (alerts go into the event stream as "
                         "event 1000; the rule cache is used as by `sysmonx run`)")
    ap.add_argument("--idle", type=float, default=5.0,
                    help="seconds of no load over which the idle baseline is measured")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    try:
        import sysmonx  # noqa: F401 - the sensor runs with this interpreter
    except ImportError:
        print(f"sysmonx is not importable by {sys.executable}: run with the project's venv "
              "(.venv/bin/python bench/bench_live.py)", file=sys.stderr)
        return 2
    status = 0
    with tempfile.TemporaryDirectory(prefix="sysmonx-bench-") as d:
        workdir = Path(d)
        spawner = build_spawner(workdir)
        print(f"load average before: {loadavg()}  (python {sys.executable}; sensor arguments: "
              f"{' '.join(args.sensor_arg) or 'none'}; events 1 and 5 assembled by "
              f"{_assembly()})", flush=True)
        for tier in args.backends.split(","):
            variants = args.variants.split(",") if tier == "ebpf" else ["plain"]
            for variant in variants:
                try:
                    for line in run_tier(tier, spawner, args, workdir, variant):
                        print(line, flush=True)
                except BenchError as exc:
                    label = tier if variant == "plain" else f"{tier}/{variant}"
                    print(f"{label} NOT MEASURED: {exc}", flush=True)
                    status = 1
                print(f"        load average after {tier} {variant}: {loadavg()}", flush=True)
        keep_outputs(workdir, args.keep)
    return status


if __name__ == "__main__":
    sys.exit(main())
