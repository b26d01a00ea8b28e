#!/usr/bin/env python3
"""Scanner benchmark (root): ``sysmonx scan --all`` on this host, and scans in the live sensor.

    sudo .venv/bin/python bench/bench_scan.py [--part host,live] [--rate 200] [--seconds 60]
                                              [--lifetime 1.5] [--backend ebpf]

**host** (the hollows_hunter use case): ``sysmonx scan --all --stats`` as separate processes of
this interpreter, in this order:

* ``cold``: every running image's file dropped from the page cache first
  (``posix_fadvise(DONTNEED)`` on each ``/proc/PID/exe``), the default allow-list; then ``warm``
  (the same again at once);
* ``no allow-list`` (``--no-allowlist``, warm): findings before the default allow-list;
* ``YARA`` (``--yara`` with a generated rule set of ``--yara-rules`` rules, warm).

For each: findings per name (after and before the allow-list), processes scanned and skipped,
seconds per process (median, max), peak RSS of the scanning process, CPU seconds. Baseline,
measured in the same run: a plain ``/proc`` walk reading ``stat``, ``status`` and ``maps`` of
every process (what ``ps`` does), per process; the scan's median is given as a ratio of it.

**live**: ``sysmonx run`` (a separate process, JSON lines) with a config whose ProcessCreate
rule asks for ``scanners="all"`` on every process, while a spawner starts ``--rate`` processes
per second for ``--seconds`` (each ``/bin/sleep LIFETIME 0.00009...``, the second argument a
tiny number that tags the run, so most are still alive when their scan comes: about 0.25 s after
the exec, the sensor's order window); then the same load on a
sensor with the same config without the attribute (the baseline). Reported: execs made,
ProcessCreate events written (distinct), events 255 (losses), the sensor's scan counters
(requested, done, skipped by reason, over budget per scanner, dropped by the full queue),
findings, and the sensor's CPU time (utime+stime from ``/proc``) over the load window and the
catch-up after it, as a share of one core and as a ratio of the baseline's.

The machine's load average (``uptime``) is printed with the figures: rerun when it was busy.
Exit status: 0 when everything asked for was measured, 1 when a sensor or a scan did not run,
2 for bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_live import BenchError, Output, cpu_ticks, loadavg  # noqa: E402

SPAWNER_C = r"""
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
extern char **environ;
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
/* spawn N processes "PROG ARG TAGiiiiiii" at RATE per second; reap as they exit */
int main(int argc,char**argv){
  long n=atol(argv[1]); double rate=atof(argv[2]); const char*prog=argv[3],*arg=argv[4],*tag=argv[5];
  char buf[128]; long ok=0; double t0=now();
  for(long i=0;i<n;i++){
    double due=t0+i/rate, d; while((d=due-now())>0){struct timespec s={0,(long)(d*1e9)}; nanosleep(&s,0);}
    snprintf(buf,sizeof buf,"%s%07ld",tag,i);
    char*args[]={(char*)prog,(char*)arg,buf,0}; pid_t pid;
    if(posix_spawn(&pid,prog,0,0,args,environ)==0) ok++;
    while(waitpid(-1,0,WNOHANG)>0);
  }
  double t1=now();
  while(waitpid(-1,0,0)>0);
  printf("%ld %.3f\n", ok, t1-t0); return 0;
}
"""

SUMMARY_RE = re.compile(r"scans: (.*)$", re.M)


def _python() -> list[str]:
    return [sys.executable, "-m", "sysmonx.cli"]


# ---------------------------------------------------------------------------------------------
# host


def drop_images_from_cache() -> int:
    """``posix_fadvise(DONTNEED)`` on every running image file; returns how many."""
    n = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{d}/exe", os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            n += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return n


def proc_walk_baseline(rounds: int = 3) -> float:
    """Median over ``rounds`` of the seconds per process of reading ``stat``, ``status`` and
    ``maps`` of every process."""
    per = []
    for _ in range(rounds):
        pids = [d for d in os.listdir("/proc") if d.isdigit()]
        t = time.perf_counter()
        for p in pids:
            for name in ("stat", "status", "maps"):
                try:
                    with open(f"/proc/{p}/{name}", "rb") as f:
                        f.read()
                except OSError:
                    pass
        per.append((time.perf_counter() - t) / max(1, len(pids)))
    return statistics.median(per)


_RULES_PY = r"""
import sys
count, path = int(sys.argv[1]), sys.argv[2]
out = []
for i in range(count):
    strs = "\n".join('        $s%d = "sxb%013x"' % (j, ((i * 3 + j + 1) * 2654435761) % 16**13)
                     for j in range(3))
    out.append("rule bench_%d\n{\n    strings:\n%s\n    condition:\n        any of them\n}\n"
               % (i, strs))
open(path, "w").write("\n".join(out))
"""


def yara_rules(path: Path, count: int) -> Path:
    """A rule set of ``count`` rules, each three 16-byte strings (``sxb`` and 13 hex digits of a
    counter: they match nothing real) with ``any of them``, as a stand-in for a real
    memory-scanning set. Written by a child process, so no scanned process (this one included)
    holds the strings."""
    subprocess.run([sys.executable, "-c", _RULES_PY, str(count), str(path)], check=True)
    return path


def scan_all(extra: list[str], workdir: Path, label: str) -> dict:
    """One ``sysmonx scan --all --stats`` process; its statistics."""
    stats = workdir / f"{label}.json"
    res = subprocess.run(_python() + ["scan", "--all", "--stats", str(stats), *extra],
                         capture_output=True, text=True)
    if res.returncode not in (0, 1) or not stats.exists():
        raise BenchError(f"scan {label} failed ({res.returncode}): {res.stderr[-500:]}")
    return json.loads(stats.read_text())


def part_host(args, workdir: Path) -> list[str]:
    base = proc_walk_baseline()
    rules = yara_rules(workdir / "bench.yar", args.yara_rules)
    runs = []
    dropped = drop_images_from_cache()
    runs.append(("cold (allow-list)", scan_all([], workdir, "cold")))
    runs.append(("warm (allow-list)", scan_all([], workdir, "warm")))
    runs.append(("no allow-list", scan_all(["--no-allowlist"], workdir, "noallow")))
    runs.append((f"YARA {args.yara_rules} rules", scan_all(["--yara", str(rules)], workdir,
                                                           "yara")))
    lines = [f"host: {runs[0][1]['processes']} processes; baseline /proc walk (stat, status, "
             f"maps) {1e3 * base:.3f} ms per process; cold = {dropped} image files dropped "
             "from the page cache first"]
    for label, st in runs:
        lines.append(
            f"  {label:22} scanned {st['scanned']:4}  skipped {st['skipped']}  per process "
            f"median {1e3 * st['seconds_median']:7.2f} ms ({st['seconds_median'] / base:6.1f}x "
            f"baseline)  max {1e3 * st['seconds_max']:8.2f} ms  total {st['seconds_total']:.2f} s"
            f"  CPU {st['cpu_seconds']:.2f} s  peak RSS {st['peak_rss_kib'] / 1024:.1f} MiB")
        lines.append(f"  {'':22} findings {st['findings'] or '{}'}  allow-listed "
                     f"{st['dismissed'] or '{}'}  over budget {st['over_budget'] or '{}'}")
    return lines


# ---------------------------------------------------------------------------------------------
# live


def build_spawner(workdir: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise BenchError("a C compiler is needed to build the spawner")
    src, exe = workdir / "spawn.c", workdir / "spawn"
    src.write_text(SPAWNER_C)
    subprocess.run([cc, "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def live_run(args, workdir: Path, spawner: Path, scanners: bool, tag: str) -> dict:
    label = "scan" if scanners else "base"
    attr = ' scanners="all"' if scanners else ""
    cfg = workdir / f"{label}.xml"
    cfg.write_text(f'<Sysmon schemaversion="4.90"><EventFiltering><RuleGroup groupRelation="or">'
                   f'<ProcessCreate onmatch="exclude"{attr}/></RuleGroup>'
                   '<RuleGroup groupRelation="or"><ProcessTerminate onmatch="include">'
                   '<Image condition="is">/nonexistent</Image></ProcessTerminate></RuleGroup>'
                   "</EventFiltering></Sysmon>")
    out_file = workdir / f"{label}.jsonl"
    err_path = workdir / f"{label}.stderr"
    cmd = _python() + ["run", "--no-dns", "--config", str(cfg), "--format", "jsonl", "-o",
                       str(out_file)]
    if args.backend:
        cmd += ["--backend", args.backend]
    cmd += ["--scan-nice", str(args.nice)]
    with open(err_path, "wb") as err:
        sensor = subprocess.Popen(cmd, stderr=err)
        out = Output(out_file)
        deadline = time.monotonic() + 120
        while not any(e.get("EventID") == 4 for e in out.events):
            out.poll()
            if sensor.poll() is not None or time.monotonic() > deadline:
                if sensor.poll() is None:
                    sensor.kill()
                    sensor.wait()
                raise BenchError(f"{label}: sensor did not start: "
                                 f"{err_path.read_text(errors='replace')[-600:]}")
            time.sleep(0.1)
        time.sleep(1.0)
        n = int(args.rate * args.seconds)
        c0, t0 = cpu_ticks(sensor.pid), time.monotonic()
        res = subprocess.run([str(spawner), str(n), str(args.rate), "/bin/sleep",
                              str(args.lifetime), tag], capture_output=True, text=True,
                             check=True)
        made, load_s = int(res.stdout.split()[0]), float(res.stdout.split()[1])
        c_load = cpu_ticks(sensor.pid)
        # catch-up: until the sensor wrote nothing for 3 s (scans after the last exec included),
        # at most --catch-up s (a busy host keeps the sensor writing its own activity)
        seen, still = -1, time.monotonic()
        deadline = time.monotonic() + args.catch_up
        while time.monotonic() - still < 3.0 and time.monotonic() < deadline:
            out.poll()
            if len(out.events) != seen:
                seen, still = len(out.events), time.monotonic()
            if sensor.poll() is not None:
                raise BenchError(f"{label}: sensor exited during the load")
            time.sleep(0.1)
        c1, t1 = cpu_ticks(sensor.pid), time.monotonic()
        sensor.terminate()
        sensor.wait(120)
    out.poll()
    hz = os.sysconf("SC_CLK_TCK")
    prefix = f"/bin/sleep {args.lifetime} {tag}"
    creates = {e["CommandLine"] for e in out.events
               if e.get("EventID") == 1 and e.get("CommandLine", "").startswith(prefix)}
    losses = [e for e in out.events if e.get("EventID") == 255]
    findings: dict = {}
    samples: dict = {}
    for e in out.events:
        if e.get("EventID") == 200:
            findings[e["Finding"]] = findings.get(e["Finding"], 0) + 1
            if len(samples.setdefault(e["Finding"], [])) < 2:
                samples[e["Finding"]].append(f"{e['Image']}: {e['Details'][:160]}")
    text = err_path.read_text(errors="replace")
    m = SUMMARY_RE.search(text)
    return {"made": made, "load_s": load_s, "tail_s": t1 - (t0 + load_s),
            "cpu_s": (c1 - c0) / hz, "cpu_window_s": (c_load - c0) / hz,
            "creates": len(creates), "losses": [e.get("Description", "") for e in losses],
            "findings": findings, "samples": samples,
            "scans": m.group(1).strip() if m else "(no scan summary)"}


def part_live(args, workdir: Path) -> list[str]:
    spawner = build_spawner(workdir)
    lines = [f"live: {args.rate:.0f} execs/s for {args.seconds:.0f} s of /bin/sleep "
             f"{args.lifetime} (scanners=\"all\" on every ProcessCreate vs the same config "
             f"without the attribute; scan worker nice {args.nice})"]
    results = {}
    for scanners in (True, False):
        # sleep adds its arguments: the tag is a tiny number (0.00009Pddddddd s) unique per run
        tag = f"0.00009{1 if scanners else 2}{os.getpid() % 1000:03d}"
        r = results[scanners] = live_run(args, workdir, spawner, scanners, tag)
        name = "scanners=all" if scanners else "baseline"
        lines.append(
            f"  {name:13} execs {r['made']} ({r['made'] / r['load_s']:.0f}/s)  ProcessCreate "
            f"written {r['creates']} ({100 * r['creates'] / max(1, r['made']):.2f} %)  events "
            f"255: {len(r['losses'])}  sensor CPU {100 * r['cpu_s'] / r['load_s']:.1f} % of one "
            f"core over the {r['load_s']:.1f} s load (+{r['tail_s']:.1f} s catch-up counted; "
            f"{100 * r['cpu_window_s'] / r['load_s']:.1f} % within the window)")
        if scanners:
            lines.append(f"  {'':13} {r['scans']}")
            lines.append(f"  {'':13} findings written: {r['findings'] or '{}'}")
            for name, items in r["samples"].items():
                for item in items:
                    lines.append(f"  {'':13}   {name}: {item}")
        for d in r["losses"][:3]:
            lines.append(f"  {'':13} loss: {d}")
    s, b = results[True], results[False]
    lines.append(f"  CPU ratio scanners/baseline: {s['cpu_s'] / max(b['cpu_s'], 1e-9):.2f}x")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", default="host,live")
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--lifetime", type=float, default=1.5,
                    help="seconds each spawned process lives (default 1.5)")
    ap.add_argument("--backend", help="force the sensor's tier (default: the best available)")
    ap.add_argument("--yara-rules", type=int, default=100)
    ap.add_argument("--nice", type=int, default=10,
                    help="the sensor's scan worker niceness (sysmonx run --scan-nice)")
    ap.add_argument("--catch-up", type=float, default=20.0,
                    help="longest wait after the load for the sensor to finish (seconds)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    parts = args.part.split(",")
    if not set(parts) <= {"host", "live"}:
        print("--part: host, live", file=sys.stderr)
        return 2
    status = 0
    with tempfile.TemporaryDirectory(prefix="sysmonx-bench-scan-") as d:
        workdir = Path(d)
        print(f"load average before: {loadavg()}  (python {sys.executable})", flush=True)
        for part in parts:
            try:
                lines = part_host(args, workdir) if part == "host" else part_live(args, workdir)
                for line in lines:
                    print(line, flush=True)
            except BenchError as exc:
                print(f"{part}: NOT MEASURED: {exc}", flush=True)
                status = 1
            print(f"load average after {part}: {loadavg()}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
