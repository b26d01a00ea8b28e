#!/usr/bin/env python3
"""Live sensor benchmark: exec bursts through each backend tier (root only).

    sudo python bench/bench_live.py [--backends ebpf,audit,cnproc] [--burst 2000]
                                    [--rate 1600] [--seconds 10]

For each tier it starts ``sysmonx run --backend TIER`` as a separate process writing JSON lines,
then a small C spawner (compiled here with the system C compiler) runs ``/bin/true <tag>-<i>``:
first a burst of ``--burst`` execs as fast as possible, then ``--rate`` execs per second for
``--seconds``. It prints per tier and phase: the share of execs captured with the correct Image
and CommandLine, the sensor's CPU use as a share of one core (its own utime+stime over the phase's
wall time, from /proc), and the losses the sensor reported (event 255 counts). The baseline of
each figure is measured in the same run: the number of execs the spawner really made.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
    if(rate>0){double due=t0+i/rate; double d; while((d=due-now())>0){struct timespec s={0,(long)(d*1e9)}; nanosleep(&s,0);} }
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


def build_spawner(workdir: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        sys.exit("a C compiler is needed to build the exec spawner")
    src, exe = workdir / "spawn.c", workdir / "spawn"
    src.write_text(SPAWNER_C)
    subprocess.run([cc, "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def phase(sensor: subprocess.Popen, spawner: Path, n: int, rate: float, tag: str) -> dict:
    c0, t0 = cpu_ticks(sensor.pid), time.monotonic()
    out = subprocess.run([str(spawner), str(n), str(rate), tag], capture_output=True, text=True,
                         check=True)
    made = int(out.stdout.split()[0])
    time.sleep(2.0)  # let the sensor drain what is in flight
    c1, t1 = cpu_ticks(sensor.pid), time.monotonic()
    return {"made": made, "cpu_s": (c1 - c0) / os.sysconf("SC_CLK_TCK"), "wall_s": t1 - t0}


def score(events: list, tag: str, made: int) -> dict:
    true_path = os.path.realpath("/bin/true")
    seen = ok = 0
    for e in events:
        if e.get("EventID") != 1:
            continue
        cmd = e.get("CommandLine", "")
        if f"{tag}-" not in cmd:
            continue
        seen += 1
        i = cmd.rsplit("-", 1)[-1]
        if e.get("Image") in (true_path, "/bin/true") and cmd == f"/bin/true {tag}-{i}":
            ok += 1
    return {"captured": seen, "correct": ok, "share": ok / made if made else 0.0}


def run_tier(tier: str, spawner: Path, args, workdir: Path) -> list:
    out_file = workdir / f"{tier}.jsonl"
    cfg = workdir / "bench-config.xml"
    cfg.write_text('<Sysmon schemaversion="4.81"><EventFiltering><RuleGroup name="" '
                   'groupRelation="or"><ProcessCreate onmatch="exclude"/></RuleGroup>'
                   "</EventFiltering></Sysmon>")
    sensor = subprocess.Popen([sys.executable, "-m", "sysmonx.cli", "run", "--backend", tier,
                               "--no-dns", "--config", str(cfg), "--format", "jsonl",
                               "-o", str(out_file)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (out_file.exists() and out_file.stat().st_size > 0):
        if sensor.poll() is not None or time.monotonic() > deadline:
            err = sensor.stderr.read().decode()[-500:] if sensor.stderr else ""
            return [f"{tier}: sensor did not start: {err.strip()}"]
        time.sleep(0.1)
    time.sleep(1.0)
    results = []
    try:
        for name, n, rate in (("burst", args.burst, 0.0),
                              ("sustained", int(args.rate * args.seconds), args.rate)):
            tag = f"sxb{os.getpid()}{tier}{name}"
            p = phase(sensor, spawner, n, rate, tag)
            results.append((name, tag, p))
    finally:
        sensor.terminate()
        sensor.wait(30)
    events = [json.loads(line) for line in out_file.read_text().splitlines() if line.strip()]
    lost = [e for e in events if e.get("EventID") == 255]
    lines = []
    for name, tag, p in results:
        s = score(events, tag, p["made"])
        lines.append(f"{tier:7} {name:10} execs {p['made']:6}  captured correct "
                     f"{s['correct']:6} ({100 * s['share']:6.2f} %)  sensor CPU "
                     f"{100 * p['cpu_s'] / p['wall_s']:5.1f} % of one core")
    lines.append(f"{tier:7} loss events reported: {len(lost)}  "
                 + "; ".join(e.get("Description", "") for e in lost[:5]))
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", default="ebpf,audit,cnproc")
    ap.add_argument("--burst", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=1600)
    ap.add_argument("--seconds", type=float, default=10)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="sysmonx-bench-") as d:
        workdir = Path(d)
        spawner = build_spawner(workdir)
        for tier in args.backends.split(","):
            for line in run_tier(tier, spawner, args, workdir):
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
