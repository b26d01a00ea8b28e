#!/usr/bin/env python3
"""Tier-B (audit) reader and classifier alone, without the kernel: the compiled record reader
against the Python one that defines it (no root needed).

    .venv/bin/python bench/bench_audit_reader.py [--execs 2000] [--rounds 15]

It builds the audit datagrams the kernel sends for one exec of ``/bin/true ARG`` as root (a
SYSCALL, EXECVE, BPRM_FCAPS, CWD, two PATH, PROCTITLE and EOE record, unicast length quirk
included; the layout of records captured on the target machine), for ``--execs`` execs of pids
that do not exist, sends them through a Unix datagram socket pair in chunks of 400 and reads each
chunk with ``AuditBackend._read_some`` as the reader thread does, grouping and classifying the
records into ProcessExec observations (``socket_lookup="none"``; no proc connector). Baseline:
the same backend with ``compiled_reader=False`` and the field scanner off (the Python reader
``recv_datagram`` + ``split`` + ``parse_record`` and ``parse_fields``' regular expression, which
define them), alternated round by round in this run.

Reports CPU time (``time.process_time``) per exec, the minimum and the median over ``--rounds``
rounds of each, and the ratio compiled/Python. Exit status 1 when the compiled reader is not
built (or turned off by ``SYSMONX_PURE_PYTHON``) or a round did not give one ProcessExec per
exec; 2 for bad usage.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time

from sysmonx.sensor.backends import audit as audit_mod
from sysmonx.sensor.backends import audit_netlink as nl
from sysmonx.sensor.observations import ProcessExec

CHUNK = 400          # datagrams per send/read round (well within the socket's queue)


def exec_datagrams(serial: int, pid: int, arg: str) -> list:
    """The 8 datagrams of one exec of ``/bin/true ARG`` (unicast: ``nlmsg_len`` without the
    header)."""
    head = f"audit(1765000000.{serial % 1000:03d}:{serial}): ".encode()
    sysc = (f"arch=c000003e syscall=59 success=yes exit=0 a0=7f78c9919610 a1=7f78c9bd5d80 "
            f"a2=7f78c98fb4b0 a3=8 items=2 ppid=13211 pid={pid} auid=4294967295 uid=0 gid=0 "
            f"euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=4294967295 "
            f'comm="true" exe="/usr/bin/true" subj=unconfined key="sysmonx"').encode()
    bodies = [(1300, head + sysc + b"\0"),
              (1309, head + f'argc=2 a0="/bin/true" a1="{arg}"'.encode()),
              (1321, head + b"fver=0 fp=0 fi=0 fe=0 old_pp=0 old_pi=0 old_pe=0 old_pa=0 "
                            b"pp=000001ffffffffff pi=0 pe=000001ffffffffff pa=0"),
              (1307, head + b'cwd="/work/wt"'),
              (1302, head + b'item=0 name="/bin/true" inode=1835145 dev=fe:01 mode=0100755 '
                            b"ouid=0 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 "
                            b"cap_fe=0 cap_fver=0 cap_frootid=0"),
              (1302, head + b'item=1 name="/lib64/ld-linux-x86-64.so.2" inode=1837021 '
                            b"dev=fe:01 mode=0100755 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL "
                            b"cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0"),
              (1327, head + b"proctitle=2F62696E2F74727565007378622D31"),
              (1320, head)]
    return [nl.NLMSG_HDR.pack(len(b), t, 0, 0, 0) + b for t, b in bodies]


class _PairSocket(nl.AuditSocket):
    """An AuditSocket over one end of a Unix datagram socket pair."""

    def __init__(self, sock: socket.socket) -> None:  # no netlink socket opened
        self.sock = sock
        self._buf = bytearray(1 << 16)
        self._poller = None
        self.pending = []


def one_round(datagrams: list, execs: int, compiled: bool) -> float:
    """CPU seconds to read and classify ``datagrams``; raises SystemExit(1) when the
    observations are not one ProcessExec per exec."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    obs: list = []
    be = audit_mod.AuditBackend(obs.append, options={"socket_lookup": "none",
                                                     "compiled_reader": compiled})
    be.emit_all = obs.extend  # type: ignore[method-assign,assignment]
    be._rd = _PairSocket(b)
    cpu = 0.0
    scanner = nl.compiled_fields
    if not compiled:
        nl.compiled_fields = None  # parse_fields takes the regular expression
    try:
        for i in range(0, len(datagrams), CHUNK):
            chunk = datagrams[i:i + CHUNK]
            for d in chunk:
                a.send(d)
            t0 = time.process_time()
            n = be._read_some(0, limit=1 << 20, budget=60.0)
            be._flush_out()
            cpu += time.process_time() - t0
            if n != len(chunk):
                raise SystemExit(f"read {n} of {len(chunk)} datagrams")
    finally:
        nl.compiled_fields = scanner
        a.close()
        b.close()
    got = sum(1 for o in obs if type(o) is ProcessExec)
    if got != execs:
        print(f"error: {got} ProcessExec observations for {execs} execs", file=sys.stderr)
        raise SystemExit(1)
    return cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--execs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    if args.execs < 1 or args.rounds < 1:
        ap.error("--execs and --rounds must be positive")
    if nl.compiled_recv is None or nl.compiled_fields is None:
        print("error: the compiled audit reader is not built or SYSMONX_PURE_PYTHON is set: "
              "nothing to compare", file=sys.stderr)
        return 1
    datagrams = []
    for i in range(args.execs):
        datagrams += exec_datagrams(10_000 + i, 99_999_000 + i % 997, f"sxb-{i}")
    res: dict = {False: [], True: []}
    for _ in range(args.rounds):
        for compiled in (False, True):
            res[compiled].append(one_round(datagrams, args.execs, compiled) / args.execs * 1e6)
    print(f"{args.execs} execs, {len(datagrams)} datagrams, {args.rounds} rounds each, "
          "alternated")
    for compiled in (False, True):
        v = res[compiled]
        print(f"  {'compiled reader and fields' if compiled else 'Python reader and fields  '}  "
              f"{min(v):7.1f} us per exec (min), {statistics.median(v):7.1f} (median)")
    print(f"  ratio compiled/Python: {min(res[True]) / min(res[False]):.2f} (min), "
          f"{statistics.median(res[True]) / statistics.median(res[False]):.2f} (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
