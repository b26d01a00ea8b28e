"""Tier A (eBPF): TCP connects on loopback, refused and accepted, with their event 3 checked.

What it measures (root, BTF, clang/bpftool or a cached object):

* correctness: for every connect a client process makes (``--count`` non-blocking connects to a
  closed loopback port, which the kernel refuses inside ``connect()``, then ``--count`` connects
  that a listener accepts), the event 3 the sensor wrote must carry the source port the client
  saw (``getsockname()``); the figure is how many did;
* cost: CPU time (user + system) of the client per connect (the BPF program runs in its
  syscalls) and of the sensor process per connect (its ring-buffer reader), each over the load
  window only.

Run the old and the new code in the same time window with ``PYTHONPATH=<src>``; the sensor
builds the BPF object from that tree's ``sensor.bpf.c``. Exits 1 when the sensor could not run
or an event is missing (nothing measured), 2 when a source port is wrong.

    sudo .venv/bin/python bench/bench_connect_source.py --count 2000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time

CLIENT = r"""
import errno, json, socket, sys, threading
n, closed = int(sys.argv[1]), int(sys.argv[2])
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(512)
listening = srv.getsockname()[1]
def accept():
    for _ in range(n):
        srv.accept()[0].close()
t = threading.Thread(target=accept); t.start()
refused, accepted = [], []
for _ in range(n):
    c = socket.socket(); c.setblocking(False)
    rc = c.connect_ex(("127.0.0.1", closed))
    if rc == errno.EINPROGRESS:
        refused.append(c.getsockname()[1])
    c.close()
for _ in range(n):
    c = socket.create_connection(("127.0.0.1", listening))
    accepted.append(c.getsockname()[1])
    c.close()
t.join()
print(json.dumps({"refused": refused, "accepted": accepted, "listening": listening}))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2000, help="connects of each kind (2000)")
    args = ap.parse_args(argv)

    import sysmonx
    from sysmonx.sensor.backends.ebpf import EbpfBackend
    from sysmonx.sensor.observations import NetworkConnect

    why = EbpfBackend.probe() if os.geteuid() == 0 else "needs root"
    if why:
        print(f"tier A unavailable: {why}", file=sys.stderr)
        return 1
    seen: dict = {}
    lock = threading.Lock()

    def collect(obs) -> None:
        if isinstance(obs, NetworkConnect) and obs.initiated:
            with lock:
                seen.setdefault(obs.dest_port, []).append((obs.pid, obs.source_port))

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, not listening: refuses, and the port stays ours
    cport = closed.getsockname()[1]
    backend = EbpfBackend(collect, exclude_pids=frozenset({os.getpid()}))
    backend.start()
    try:
        t0, c0 = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
        w0 = time.monotonic()
        cli = subprocess.Popen([sys.executable, "-c", CLIENT, str(args.count), str(cport)],
                               stdout=subprocess.PIPE, text=True)
        out = json.loads(cli.communicate()[0])
        lport = out["listening"]
        deadline = time.monotonic() + 10
        want = len(out["refused"]) + len(out["accepted"])
        while time.monotonic() < deadline:
            with lock:
                got = len(seen.get(cport, [])) + len(seen.get(lport, []))
            if got >= want:
                break
            time.sleep(0.05)
        wall = time.monotonic() - w0
        t1, c1 = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        backend.stop()
        closed.close()
    n = want
    if n == 0:
        print("no connect was made", file=sys.stderr)
        return 1
    rows = {}
    bad = missing = 0
    for kind, port in (("refused", cport), ("accepted", lport)):
        truth = out[kind]
        evs = [sp for pid, sp in seen.get(port, []) if pid == cli.pid]
        right = sum(1 for a, b in zip(evs, truth, strict=False) if a == b)
        rows[kind] = {"connects": len(truth), "events": len(evs), "source_port_right": right,
                      "source_port_0": sum(1 for sp in evs if not sp)}
        missing += max(0, len(truth) - len(evs))
        bad += len(evs) - right
    client_cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
    report = {
        "code": os.path.dirname(sysmonx.__file__),
        "rows": rows,
        "client_cpu_us_per_connect": round(client_cpu / n * 1e6, 1),
        "sensor_cpu_us_per_connect": round((t1 - t0) / n * 1e6, 1),
        "wall_s": round(wall, 2),
        "loadavg": os.getloadavg(),
    }
    print(json.dumps(report))
    if missing:
        return 1
    return 2 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
