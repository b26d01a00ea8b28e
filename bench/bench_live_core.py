#!/usr/bin/env python3
"""The live sensor's user-space cost per exec, without the kernel: tier A's ring-buffer records
of ``N`` execs (a fork, an exec and an exit record each, as ``sensor.bpf.c`` writes them for
``/bin/true bench-<i>``) go through tier A's decoder, the live source (queue, order buffer,
assembly), the live stages and a JSON lines file output, as in ``sysmonx run`` with
bench_live.py's config (every ProcessCreate and ProcessTerminate written).

    .venv/bin/python bench/bench_live_core.py [--execs 16000] [--rate 1600] [--rounds 3]
        [--sink-queue 8192]

A reader thread hands the decoded records over in batches at ``--rate`` execs per second (0: as
fast as it can), as the eBPF reader does; the figure is the process's CPU time (all threads)
from the first record to the last event written, per exec, and as a share of one core at
``--rate``. It is not bench_live.py's figure (no kernel, no ring-buffer reads, no other host
activity traced) but moves with the same code, and is steady enough on a shared machine to
compare two versions of it in the same minute (``PYTHONPATH=<other src>``). Each round checks
that every exec gave event 1 with its command line and an event 5 with the same ProcessGuid.

At ``--rate 0`` nothing bounds the input, and the output's queue (``--sink-queue`` events, as
``sysmonx run``'s) can fill: the live run then drops events, counted and reported as event 255,
as it would on a host. The round stops waiting once every event is written or counted lost
(or when nothing moved for 10 s) and reports the loss; it does not wait for events that will
never come.

Exit status: 0 when measured, 1 when events were missing, lost or wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

CONFIG = ('<Sysmon schemaversion="4.81"><EventFiltering><RuleGroup name="" groupRelation="or">'
          '<ProcessCreate onmatch="exclude"/></RuleGroup><RuleGroup name="" groupRelation="or">'
          '<ProcessTerminate onmatch="exclude"/></RuleGroup></EventFiltering></Sysmon>')

_HDR = struct.Struct("<HHIIIQ")
_EXEC = struct.Struct("<IIIIQQHHHHII")  # ... lens, mnt/pid namespace inodes
_ABI = 3  # sensor.bpf.c ABI_VERSION
_EXIT = struct.Struct("<QII")
_FORK = struct.Struct("<IIQ")


def _walk(path: str) -> bytes:
    """A path as the BPF dentry walk writes it: components leaf first, each NUL-terminated."""
    return b"".join(p.encode() + b"\0" for p in reversed(path.strip("/").split("/")))


def records(n: int, base_pid: int = 3_000_000) -> list:
    """``n`` (fork, exec, exit) record triples, in kernel time order, stamped from boot time
    now. Pids above the kernel's pid_max, so no real process's cache entry is touched."""
    ppid = os.getppid()
    boot_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    image, cwd = _walk("/usr/bin/true"), _walk(os.getcwd())
    mnt_ns, pid_ns = os.stat("/proc/self/ns/mnt").st_ino, os.stat("/proc/self/ns/pid").st_ino
    out = []
    for i in range(n):
        pid = base_pid + i
        ts = boot_ns + i * 100_000
        start = ts - 50_000
        argv = f"/bin/true\0bench-{i}\0".encode()
        out.append(_HDR.pack(8, 0, pid, pid, _ABI, ts) + _FORK.pack(ppid, 0, start))
        out.append(_HDR.pack(1, 0, pid, pid, _ABI, ts + 20_000)
                   + _EXEC.pack(ppid, 0, 0xFFFFFFFF, 0xFFFFFFFF, start,
                                0x5555_5555_0000 + (i & 0xFFFF), len(argv), len(image),
                                len(cwd), 0, mnt_ns, pid_ns) + argv + image + cwd)
        out.append(_HDR.pack(2, 0, pid, pid, _ABI, ts + 60_000) + _EXIT.pack(start, 0, 0))
    return out


STALL_S = 10.0  # after the last record: nothing written or lost for this long ends the wait


def wait_for_events(sensor, done: threading.Event, want: int, deadline: float,
                    stall_s: float = STALL_S) -> tuple[int, int]:
    """Wait until the records are all handed over (``done``) and ``want`` events are written
    or counted lost by the outputs, nothing moved for ``stall_s`` seconds, or the monotonic
    ``deadline`` passed. Returns (events written, events lost: dropped or failed)."""
    written = lost = 0
    last, since = (-1, -1), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if not done.is_set():
            continue
        # the outputs' own loss reports (event 255) are not among the events waited for
        written = sum(v for k, v in sensor.fanout.written().items() if k != 255)
        lost = sum(st.dropped + st.failed for st in sensor.fanout.stats().values())
        if written + lost >= want:
            break
        if (written, lost) != last:
            last, since = (written, lost), time.monotonic()
        elif time.monotonic() - since > stall_s:
            break
    return written, lost


def run_round(n: int, rate: float, workdir: Path, sink_queue: int = 8192) -> dict:
    from sysmonx.config import load_config
    from sysmonx.pipeline.live import Sensor, SensorOptions
    from sysmonx.sensor import live as live_mod
    from sysmonx.sensor.backends.base import Backend
    from sysmonx.sensor.backends import ebpf as ebpf_mod
    from sysmonx.sensor.backends.ebpf import EbpfBackend
    from sysmonx.sinks import WholeLineFile
    from sysmonx.sinks.jsonl import JsonlWriter

    recs = records(n)
    done = threading.Event()
    cpu_at: dict = {}

    class Replay(Backend):
        name, tier = "replay", "A"

        @classmethod
        def probe(cls):
            return None

        def start(self):
            self.thread = threading.Thread(target=self._run, name="sysmonx-ebpf", daemon=True)
            self.thread.start()

        def _run(self):
            # the eBPF backend's own batch decoding: with the compiled consumer the records go
            # through its C sample callback (called here by feed(), by libbpf in a real run)
            # and take_decoded; otherwise the ctypes path's batch and the Python decoder (its
            # ctypes callback per record, a real run's extra cost, is not counted here)
            reader = EbpfBackend(self.emit)
            reader.emit_all = self.emit_all  # type: ignore[method-assign]
            native = getattr(ebpf_mod, "_ringbatch", None)
            reader._native = native.RingBatch(512, 8 << 20) if native is not None else None
            cpu_at["consumer"] = "compiled" if native is not None else "Python"
            batch = max(3, int(rate * 3 * 0.002)) if rate else 512  # ~2 ms of records
            t0 = time.monotonic()
            cpu_at["start"] = time.process_time()
            cpu_at["threads"] = _thread_cpu()
            for k in range(0, len(recs), batch):
                if rate:
                    due = t0 + (k / 3) / rate
                    pause = due - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                if native is not None:
                    reader._native.feed(recs[k:k + batch])
                else:
                    reader._batch = recs[k:k + batch]
                reader._drain_batch(0.0)
            cpu_at["load_s"] = time.monotonic() - t0
            done.set()

        def stop(self):
            self.thread.join(5)

    live_mod.choose_backend = lambda forced=None, failed=None: ("replay", {})
    live_mod.load_backend = lambda name: Replay
    live_mod.auxiliary_backends = list
    cfg = workdir / "config.xml"
    cfg.write_text(CONFIG)
    out = workdir / "events.jsonl"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    writer = JsonlWriter(WholeLineFile(fd, str(out), close_fd=True), close_stream=True)
    sensor = Sensor(load_config(str(cfg)), [writer],
                    SensorOptions(dns=False, exclude_own_children=False,
                                  sink_queue_size=sink_queue), config_path=str(cfg))
    t = threading.Thread(target=sensor.run, kwargs={"install_signals": False})
    t.start()
    # events 16 and 4 first; at rate 0 the load takes well under 1 ms per exec
    want = 2 * n + 2
    deadline = time.monotonic() + 120 + (n / rate if rate else n * 0.001)
    written, lost = wait_for_events(sensor, done, want, deadline)
    cpu = time.process_time() - cpu_at.get("start", 0.0)
    threads = _thread_cpu()
    errors = sensor.fanout.errors()
    sensor.request_stop()
    t.join(30)
    seen: dict = {}
    ended: dict = {}
    bad = 0
    with open(out, "rb") as fh:
        for line in fh:
            e = json.loads(line)
            if e["EventID"] == 1 and e["CommandLine"].startswith("/bin/true bench-"):
                seen[e["ProcessId"]] = e["ProcessGuid"]
                bad += e["Image"] != "/usr/bin/true"
            elif e["EventID"] == 5 and int(e["ProcessId"]) >= 3_000_000:
                ended[e["ProcessId"]] = e["ProcessGuid"]
    # an exec's event 5 must carry its event 1's ProcessGuid; a missing event is not 'wrong'
    # but leaves the exec out of the count
    bad += sum(seen[pid] != guid for pid, guid in ended.items() if pid in seen)
    both = sum(1 for pid in seen if pid in ended)
    split = {name: threads[name] - cpu_at["threads"].get(name, 0.0) for name in threads}
    return {"cpu_s": cpu, "load_s": cpu_at.get("load_s", 0.0), "execs": both,
            "bad": bad, "lost": lost, "errors": errors, "complete": written + lost >= want,
            "threads": split, "consumer": cpu_at.get("consumer"),
            "assembly": getattr(sensor.source.assembler, "assembly", "python")}


def _thread_cpu() -> dict:
    """Thread name -> its CPU seconds so far (``/proc/self/task/TID/stat``)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        name = names.get(int(tid), "other").split(" ")[0][:20]
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--execs", type=int, default=16000)
    ap.add_argument("--rate", type=float, default=1600.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sink-queue", type=int, default=8192,
                    help="the output's queue bound in events (sysmonx run's default)")
    args = ap.parse_args()
    import sysmonx
    print(f"sysmonx from {Path(sysmonx.__file__).parent}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    status = 0
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="sysmonx-core-") as d:
            res = run_round(args.execs, args.rate, Path(d), args.sink_queue)
        per = res["cpu_s"] / args.execs * 1e6
        share = per * args.rate / 1e6 * 100 if args.rate else float("nan")
        ok = res["execs"] == args.execs and res["bad"] == 0 and res["lost"] == 0
        status |= 0 if ok else 1
        print(f"round {r + 1}: {res['execs']}/{args.execs} execs with events 1 and 5 "
              f"({res['bad']} wrong), CPU {res['cpu_s']:.2f} s = {per:.1f} us per exec"
              f" = {share:.1f} % of one core at {args.rate:.0f}/s; {res['consumer']} record "
              f"consumer, {res['assembly']} assembly; load average {os.getloadavg()[0]:.2f}")
        if res["lost"] or not res["complete"]:
            why = "; ".join(f"{k}: {v}" for k, v in res["errors"].items()) or "none reported"
            print(f"   NOT MEASURED: {res['lost']} events lost by the output ({why})"
                  + ("" if res["complete"] else "; events still missing when the wait ended")
                  + (": --rate 0 outran the output's queue (--sink-queue)"
                     if res["lost"] and not args.rate else ""))
        print("   per thread, us per exec: " + ", ".join(
            f"{name} {v / args.execs * 1e6:.0f}" for name, v in sorted(res["threads"].items())
            if v > 0))
    return status


if __name__ == "__main__":
    sys.exit(main())
