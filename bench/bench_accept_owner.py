#!/usr/bin/env python3
"""Tier C's cost of naming the process that accepted a TCP connection: the rule it used before
(``SocketOwners.lookup(..., listening=True)``: the topmost holder of the listening socket) as
the baseline against ``SocketOwners.accepted_by`` (the holder of the accepted connection's
socket), measured in the same run, alternated.

    .venv/bin/python bench/bench_accept_owner.py [-n 200] [--rounds 3]

Shapes (each a real listener in this process, ``-n`` connections from this process, each held
open while it is looked up, as tier C looks it up while the server handles it):

* ``single``: the listener alone holds the listening socket (the usual server);
* ``prefork``: a master and two forked workers blocked in accept(); the workers take the
  connections (the case the new rule exists for).

Rows: ``cold`` (a fresh ``SocketOwners`` per connection: no cache, what the first accept on a
port costs) and ``warm`` (one instance for all: its per-port and per-inode caches, what a busy
server costs). CPU time (``time.process_time``) of the look-ups only, in microseconds per
connection; the best of ``--rounds``; the ratio is new / old. Also prints how many look-ups
named the process that really accepted (a worker's pid comes back over the connection).
``uptime``'s load average is printed: the machine's cores are shared. Exit status 0 when every
row was measured, 2 when nothing could be (no connection made).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

from sysmonx.sensor.procfs import SocketOwners


def _workers(srv: socket.socket, n: int) -> list:
    kids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            try:
                while True:
                    c, _peer = srv.accept()
                    c.sendall(str(os.getpid()).encode())
                    c.recv(1)
                    c.close()
            finally:
                os._exit(0)
        kids.append(pid)
    return kids


def _measure(shape: str, n: int, warm: bool) -> dict:
    """CPU seconds of the old and the new look-up over ``n`` held connections."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    port = srv.getsockname()[1]
    kids = _workers(srv, 2) if shape == "prefork" else []
    old_s = new_s = 0.0
    right_old = right_new = done = 0
    shared_old, shared_new = SocketOwners(), SocketOwners()
    try:
        for i in range(n):
            c = socket.create_connection(("127.0.0.1", port))
            if kids:
                accepter = int(c.recv(16))
                held = None
            else:
                held, _peer = srv.accept()
                accepter = os.getpid()
            sport = c.getsockname()[1]
            first = i % 2 == 0   # alternate which rule runs first
            for which in ((0, 1) if first else (1, 0)):
                owners = (shared_old, shared_new)[which] if warm else SocketOwners()
                t0 = time.process_time()
                if which == 0:
                    got = owners.lookup("tcp", port, "127.0.0.1", listening=True)
                    old_s += time.process_time() - t0
                    right_old += got == accepter
                else:
                    got = owners.accepted_by(port, "127.0.0.1", "127.0.0.1", sport)
                    new_s += time.process_time() - t0
                    right_new += got == accepter
            done += 1
            if held is not None:
                held.close()
            c.close()
    finally:
        for pid in kids:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        srv.close()
    return {"old": old_s, "new": new_s, "right_old": right_old, "right_new": right_new,
            "n": done}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200, help="connections per shape and row")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    with open("/proc/loadavg") as f:
        print(f"load average at start: {' '.join(f.read().split()[:3])}")
    print("| shape | row | old µs/accept | new µs/accept | new / old | named right old | "
          "named right new |")
    print("|---|---|---|---|---|---|---|")
    measured = 0
    for shape in ("single", "prefork"):
        for warm in (False, True):
            best = None
            for _ in range(args.rounds):
                r = _measure(shape, args.n, warm)
                if not r["n"]:
                    continue
                if best is None or r["old"] + r["new"] < best["old"] + best["new"]:
                    best = r
            if best is None:
                continue
            measured += 1
            k = best["n"]
            old_us, new_us = best["old"] / k * 1e6, best["new"] / k * 1e6
            print(f"| {shape} | {'warm' if warm else 'cold'} | {old_us:.0f} | {new_us:.0f} | "
                  f"{new_us / old_us if old_us else float('nan'):.2f} | "
                  f"{best['right_old']}/{k} | {best['right_new']}/{k} |")
    with open("/proc/loadavg") as f:
        print(f"load average at end: {' '.join(f.read().split()[:3])}")
    return 0 if measured == 4 else 2


if __name__ == "__main__":
    sys.exit(main())
