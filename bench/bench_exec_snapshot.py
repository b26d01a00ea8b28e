#!/usr/bin/env python3
"""Tier-B (audit) exec snapshots on new processes: what the sensor reads from ``/proc`` at each
exec the proc connector reports (no root needed for processes of the same user).

    .venv/bin/python bench/bench_exec_snapshot.py [--processes 300] [--rounds 7]

Each round forks ``--processes`` children that wait in ``pause()`` (new ``/proc/PID`` entries,
as at an exec: nothing of them looked up yet), then measures the CPU time (``thread_time``) per
process of one of these, round-robin over the rounds so each reads a fresh set:

* ``gather``: the compiled proc connector gather (``_ringbatch.cn_gather``, as the audit reader
  thread calls it) on one exec message per child sent through a Unix datagram socket pair: the
  two namespace links and ``/proc/PID/stat`` read in C;
* ``python``: ``audit._exec_snapshot`` (the pure snapshot, which defines it) of each child;
* ``ns-text`` and ``ns-stat``: the two namespace inodes alone, from the links' text
  (``procfs.ns_inode``, what both snapshots do) and, as the baseline of the same run, by
  ``os.stat()`` of the links (what they did before): the ratio text/stat is printed. (Run with
  an older tree on ``PYTHONPATH``, which has no ``ns_inode``, the ``ns-text`` row is left out.)

Reports the minimum and the median over the rounds. Exit status 1 when the compiled gather is
not built (or ``SYSMONX_PURE_PYTHON`` is set) or a snapshot of a live child came back empty; 2 for
bad usage.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import sys
import time

from sysmonx.sensor import procfs
from sysmonx.sensor.backends import audit as audit_mod
from sysmonx.sensor.backends import cnproc


def exec_message(seq: int, pid: int) -> bytes:
    """One proc connector datagram: PROC_EVENT_EXEC of ``pid`` (cpu 0, sequence ``seq``)."""
    body = cnproc._EVHDR.pack(cnproc.PROC_EVENT_EXEC, 0, seq) + b"".join(
        f.to_bytes(4, "little") for f in (pid, pid, 0, 0, 0, 0))
    cn = cnproc._CNMSG.pack(cnproc.CN_IDX_PROC, cnproc.CN_VAL_PROC, seq, 0, len(body), 0) + body
    return cnproc._NLMSG.pack(16 + len(cn), 3, 0, seq, 0) + cn


def children(n: int) -> list:
    kids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child waits to be killed
            signal.pause()
            os._exit(0)
        kids.append(pid)
    time.sleep(0.05)
    return kids


def reap(kids: list) -> None:
    for pid in kids:
        os.kill(pid, signal.SIGKILL)
    for pid in kids:
        os.waitpid(pid, 0)


def by_gather(kids: list) -> float:
    gather = audit_mod._cn_gather
    assert gather is not None
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        for i, pid in enumerate(kids):
            a.send(exec_message(i + 1, pid))
        t0 = time.thread_time()
        _datagrams, snaps, _e, err, _nomem = gather(b.fileno(), 0, len(kids) + 1)
        cpu = time.thread_time() - t0
    finally:
        a.close()
        b.close()
    if err or len(snaps) != len(kids) or not all(s[1] and s[2] and s[3] for s in snaps):
        raise SystemExit("error: the compiled gather did not snapshot every child")
    return cpu


def by_python(kids: list) -> float:
    t0 = time.thread_time()
    snaps = [audit_mod._exec_snapshot(pid) for pid in kids]
    cpu = time.thread_time() - t0
    if not all(s[0] is not None and s[3] is not None for s in snaps):
        raise SystemExit("error: _exec_snapshot did not snapshot every child")
    return cpu


def ns_text(kids: list) -> float:
    t0 = time.thread_time()
    got = [(procfs.ns_inode(f"/proc/{pid}/ns/mnt"), procfs.ns_inode(f"/proc/{pid}/ns/pid"))
           for pid in kids]
    cpu = time.thread_time() - t0
    if not all(m and p for m, p in got):
        raise SystemExit("error: a namespace link could not be read")
    return cpu


def ns_stat(kids: list) -> float:
    t0 = time.thread_time()
    got = [(os.stat(f"/proc/{pid}/ns/mnt").st_ino, os.stat(f"/proc/{pid}/ns/pid").st_ino)
           for pid in kids]
    cpu = time.thread_time() - t0
    if not all(m and p for m, p in got):
        raise SystemExit("error: a namespace link could not be read")
    return cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--processes", type=int, default=300, help="new processes per round")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    if args.processes < 1 or args.rounds < 1:
        ap.error("--processes and --rounds must be positive")
    if audit_mod._cn_gather is None:
        print("error: the compiled gather (sysmonx.sensor._ringbatch.cn_gather) is not built "
              "or SYSMONX_PURE_PYTHON is set", file=sys.stderr)
        return 1
    before = os.getloadavg()
    ways = {"gather": by_gather, "python": by_python, "ns-text": ns_text, "ns-stat": ns_stat}
    if not hasattr(procfs, "ns_inode"):  # older code (run through PYTHONPATH): no such row
        del ways["ns-text"]
    got: dict = {k: [] for k in ways}
    for _ in range(args.rounds):
        for name, fn in ways.items():
            kids = children(args.processes)
            try:
                got[name].append(fn(kids) / args.processes * 1e6)
            finally:
                reap(kids)
    print("load average before: {:.2f} {:.2f} {:.2f}, after: {:.2f} {:.2f} {:.2f}".format(
        *before, *os.getloadavg()))
    for name, vals in got.items():
        print(f"{name:8s} {min(vals):6.1f} us per new process (min of {args.rounds}), median "
              f"{statistics.median(vals):6.1f}")
    if "ns-text" not in got:
        print("ns-text: not in this code (procfs.ns_inode)")
        return 0
    ratio = min(got["ns-text"]) / min(got["ns-stat"])
    print(f"namespace inodes from the links' text / by stat(): {ratio:.2f}x (min), "
          f"{statistics.median(got['ns-text']) / statistics.median(got['ns-stat']):.2f}x "
          "(median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
