#!/usr/bin/env python3
"""Output throughput and spool recovery, against real receivers on loopback.

    python bench/bench_outputs.py [--events N] [--outputs jsonl,ecs,sqlite,tcp,tls,http,otlp,nats]
                                  [--recovery N] [--corpus DIR]

Events: the Sysmon events of the corpus EVTX files (real field values and sizes), repeated with
new EventRecordIDs up to N (default 50,000), built once in this process and pickled to each
child.

Throughput: each output runs in a fresh child process (``cold``: the first run, new process,
receiver just started) and then once more (``warm``). The child writes the N events to the
output and closes it; for a network output ``close`` returns when the receiver confirmed every
event (spool empty), so the window covers delivery, not just queuing. Reported per output: the
child's CPU time (user + system, all its threads: the sender thread included) over that window
only (imports and opening not timed), events per CPU second, the wall time, and the ratio of CPU
per event to the baseline row ``jsonl`` (SysmonX JSON lines to /dev/null) measured in the same
run. Receivers (rsyslog with imtcp and imtcp+gnutls, a Python HTTP server in its own process,
nats-server with JetStream) run in their own processes: their CPU is not counted. The child
checks what the receiver got (rsyslog: record count; HTTP: lines counted by the server; NATS:
stream message count) and the run fails when it is not exactly N.

Spool recovery (``--recovery N``, default 20,000, ``tcp`` to rsyslog): the receiver is down while
N events are written (the spool takes them: write rate to disk), then it starts and the time to
deliver the backlog (recovery rate) is measured; the receiver must hold exactly the N events in
order. Exit status 1 when a measurement did not run or a check failed. ``uptime`` is printed
with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from _common import default_corpus  # noqa: E402

OUTPUTS = ("jsonl", "ecs", "sqlite", "tcp", "tls", "http", "otlp", "nats")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.05)


class Rsyslog:
    def __init__(self, work: Path, tls: dict | None = None) -> None:
        self.work, self.port, self.out = work, free_port(), work / "messages"
        work.mkdir(parents=True, exist_ok=True)
        glob = f'global(maxMessageSize="256k" workDirectory="{work}"'
        drv = ""
        if tls:
            glob += (f' DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{tls["ca"]}"'
                     f' DefaultNetstreamDriverCertFile="{tls["cert"]}"'
                     f' DefaultNetstreamDriverKeyFile="{tls["key"]}"')
            drv = ' StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon"'
        (work / "rsyslog.conf").write_text(
            f'{glob})\nmodule(load="imtcp"{drv})\ninput(type="imtcp" port="{self.port}" '
            f'address="127.0.0.1")\ntemplate(name="m" type="string" string="%msg%\\n")\n'
            f'*.* action(type="omfile" file="{self.out}" template="m")\n')
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(["rsyslogd", "-n", "-f", str(self.work / "rsyslog.conf"),
                                      "-i", str(self.work / "pid")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc, "rsyslogd")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc = None

    def ids(self) -> list[int]:
        if not self.out.exists():
            return []
        return [int(x) for x in re.findall(rb"<EventRecordID>(\d+)</EventRecordID>",
                                           self.out.read_bytes())]

    def count(self) -> int:
        return len(self.ids())


HTTP_SERVER = r"""
import sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
count = [0]
lock = threading.Lock()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        n = body.count(b'"timeUnixNano"') if self.path == "/v1/logs" else body.count(b"\n")
        with lock:
            count[0] += n
            open(sys.argv[2], "w").write(str(count[0]))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")
    def log_message(self, *a):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


class HttpReceiver:
    def __init__(self, work: Path) -> None:
        self.port, self.countfile = free_port(), work / "http.count"
        work.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-c", HTTP_SERVER, str(self.port),
                                      str(self.countfile)])
        wait_port(self.port, self.proc, "HTTP server")

    def count(self) -> int:
        try:
            return int(self.countfile.read_text() or 0)
        except (OSError, ValueError):
            return 0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Nats:
    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(["nats-server", "-js", "-sd", str(work / "js"), "-a",
                                      "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc, "nats-server")

    def count(self, stream: str) -> int:
        import asyncio

        import nats

        async def go() -> int:
            nc = await nats.connect(f"nats://127.0.0.1:{self.port}")
            try:
                return int((await nc.jetstream().stream_info(stream)).state.messages)
            finally:
                await nc.close()
        return asyncio.run(go())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


CHILD = r"""
import json, os, pickle, sys, time
sys.path.insert(0, sys.argv[1])
spec, events_file, kind = sys.argv[2], sys.argv[3], sys.argv[4]
from sysmonx.sinks import writer_class
from sysmonx.sinks.outputs import open_url_output
import sysmonx.sinks.ecs, sysmonx.sinks.sqlite  # noqa: F401 - imports are not timed
with open(events_file, "rb") as f:
    events = pickle.load(f)
if kind == "stream":
    sink = writer_class(spec).open(os.devnull)
else:
    sink = open_url_output(spec)
t0, c0 = time.perf_counter(), time.process_time()
for e in events:
    sink.write(e)
sink.close()
cpu, wall = time.process_time() - c0, time.perf_counter() - t0
print(json.dumps({"cpu": cpu, "wall": wall, "n": len(events)}))
"""


def run_child(spec: str, events_file: Path, kind: str) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "src"), spec, str(events_file),
                        kind], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{spec}: child failed: {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout)


def build_events(corpus: Path, n: int) -> list:
    from sysmonx.sources import iter_input_files, open_source
    base = []
    for f in iter_input_files([str(corpus / "evtx")]):
        base += [e for e in open_source(f, lambda err: None) if e.is_sysmon]
    if not base:
        raise RuntimeError("no corpus events")
    out = []
    for i in range(n):
        e = base[i % len(base)]
        import copy
        c = copy.copy(e)
        c.data = dict(e.data)
        c.record_id = i + 1
        c.origin = None
        out.append(c)
    return out


def make_certs(work: Path) -> dict:
    def run(*a: str) -> None:
        subprocess.run(["openssl", *a], cwd=work, check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=bench CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "s.key", "-out", "s.csr", "-subj",
        "/CN=localhost")
    (work / "ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "s.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "s.pem", "-days", "2", "-extfile", "ext")
    return {"ca": str(work / "ca.pem"), "cert": str(work / "s.pem"), "key": str(work / "s.key")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=default_corpus())
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--outputs", default=",".join(OUTPUTS))
    ap.add_argument("--recovery", type=int, default=20_000, help="0: skip the recovery rows")
    args = ap.parse_args()
    outputs = [o for o in args.outputs.split(",") if o]
    for o in outputs:
        if o not in OUTPUTS:
            print(f"unknown output {o}", file=sys.stderr)
            return 1
    work = Path(tempfile.mkdtemp(prefix="sysmonx-outputs-"))
    failures = 0
    try:
        events = build_events(Path(args.corpus), args.events)
        ef = work / "events.pickle"
        ef.write_bytes(pickle.dumps(events))
        print(f"events: {len(events):,} (corpus EVTX events repeated)  python "
              f"{sys.version.split()[0]}  cpus: {os.cpu_count()}")
        print(f"load: {os.getloadavg()}")
        print(f"{'output':8} {'pass':5} {'CPU s':>7} {'ev/CPU s':>10} {'wall s':>7} "
              f"{'ev/s wall':>10} {'CPU/ev vs jsonl':>16}  delivered")
        base_cpu: dict[str, float] = {}
        certs = make_certs(work) if "tls" in outputs else None
        for o in ["jsonl"] + [x for x in outputs if x != "jsonl"]:
            for run in ("cold", "warm"):
                d = work / f"{o}-{run}"
                d.mkdir()
                recv = None
                check = None
                try:
                    spool = f"spool={d / 'spool'}&drain=600"
                    if o in ("jsonl", "ecs"):
                        spec, kind = o, "stream"
                    elif o == "sqlite":
                        spec, kind = f"sqlite:///{d / 'store.db'}", "url"

                        def check(d=d):
                            import sqlite3
                            return sqlite3.connect(d / "store.db").execute(
                                "SELECT count(*) FROM events").fetchone()[0]
                    elif o in ("tcp", "tls"):
                        recv = Rsyslog(d, certs if o == "tls" else None)
                        recv.start()
                        q = f"ca={certs['ca']}&" if o == "tls" and certs else ""
                        host = "localhost" if o == "tls" else "127.0.0.1"
                        spec, kind = f"{o}://{host}:{recv.port}?{q}{spool}", "url"
                        check = recv.count
                    elif o in ("http", "otlp"):
                        recv = HttpReceiver(d)
                        mode = "&mode=otlp" if o == "otlp" else ""
                        path = "/v1/logs" if o == "otlp" else "/"
                        spec, kind = f"http://127.0.0.1:{recv.port}{path}?{spool}{mode}", "url"
                        check = recv.count
                    else:
                        recv = Nats(d)
                        spec, kind = f"nats://127.0.0.1:{recv.port}/bench?{spool}", "url"
                        def check(r=recv):
                            return r.count("SYSMONX")
                    m = run_child(spec, ef, kind)
                    got = None
                    if check is not None:
                        deadline = time.monotonic() + 30
                        while (got := check()) < m["n"] and time.monotonic() < deadline:
                            time.sleep(0.1)
                    ok = got is None or got == m["n"]
                    failures += not ok
                    base_cpu.setdefault(run, m["cpu"]) if o == "jsonl" else None
                    ratio = m["cpu"] / base_cpu[run] if base_cpu.get(run) else float("nan")
                    print(f"{o:8} {run:5} {m['cpu']:7.2f} {m['n'] / m['cpu']:10,.0f} "
                          f"{m['wall']:7.2f} {m['n'] / m['wall']:10,.0f} {ratio:16.2f}  "
                          + ("(no receiver)" if got is None else f"{got:,}" +
                             ("" if ok else "  MISMATCH")))
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    failures += 1
                    print(f"{o:8} {run:5} did not run: {exc}")
                finally:
                    if recv is not None:
                        recv.stop()
        if args.recovery:
            failures += recovery(work, args.recovery, events)
        print(f"load: {os.getloadavg()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


def recovery(work: Path, n: int, events: list) -> int:
    """Receiver down while ``n`` events are written, then started: spool write rate, backlog
    delivery rate, exactness. Returns the number of failed checks."""
    from sysmonx.sinks.outputs import open_url_output
    d = work / "recovery"
    recv = Rsyslog(d)
    sink = open_url_output(f"tcp://127.0.0.1:{recv.port}?spool={d / 'spool'}&drain=600")
    sink.BACKOFF = (0.05, 0.2)
    t0, c0 = time.perf_counter(), time.process_time()
    for e in events[:n]:
        sink.write(e)
    spooled_wall, spooled_cpu = time.perf_counter() - t0, time.process_time() - c0
    size = sink.spool.pending_bytes
    recv.start()
    t1 = time.perf_counter()
    ok = sink.wait_idle(600)
    drain = time.perf_counter() - t1
    sink.close()
    deadline = time.monotonic() + 30
    while recv.count() < n and time.monotonic() < deadline:
        time.sleep(0.1)
    ids = recv.ids()
    recv.stop()
    exact = ids == list(range(1, n + 1))
    print(f"spool recovery (tcp -> rsyslog, receiver down while writing): {n:,} events, "
          f"{size / 2**20:.1f} MiB spooled at {n / spooled_wall:,.0f} ev/s "
          f"({n / spooled_cpu:,.0f} ev/CPU s); backlog delivered in {drain:.2f} s "
          f"({n / drain:,.0f} ev/s) after the receiver started; "
          f"{'exactly once, in order' if exact and ok else 'MISMATCH: ' + str(len(ids))}")
    return 0 if exact and ok else 1


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
