"""Fleet transport over NATS JetStream (sysmonx.sinks.nats, sources.natsstream, ``sysmonx
collect``) against a real nats-server (Debian's package, started here on loopback with its own
store): events stored once and in order, ``kill -9`` of the server in the middle of a publish
loses and repeats nothing, two collectors on one durable split the stream without duplicates.

The kill test publishes ``SYSMONX_NATS_EVENTS`` events (default 20,000; the closing note's
figure ran 100,000)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sysmonx.cli import main
from sysmonx.sinks.outputs import open_url_output

from test_netsyslog import free_port, make_event

pytestmark = pytest.mark.live

NATS_SERVER = shutil.which("nats-server") or ("/usr/sbin/nats-server" if os.path.exists(
    "/usr/sbin/nats-server") else None)
try:
    import nats
    HAVE_CLIENT = True
except ImportError:
    HAVE_CLIENT = False


class NatsServer:
    def __init__(self, tmp: Path) -> None:
        if NATS_SERVER is None:
            pytest.skip("nats-server not installed (apt-get install nats-server; .ci/run "
                        "installs it)")
        if not HAVE_CLIENT:
            pytest.skip("nats-py not installed (pip install 'sysmonx[nats]')")
        self.port = free_port()
        self.store = tmp / "js"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([NATS_SERVER, "-js", "-sd", str(self.store), "-a",
                                      "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    pytest.skip("nats-server did not start")
                time.sleep(0.05)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def stored(self, stream: str = "SYSMONX") -> int:
        import asyncio

        async def go() -> int:
            nc = await nats.connect(self.url)
            try:
                info = await nc.jetstream().stream_info(stream)
                return int(info.state.messages)
            finally:
                await nc.close()
        return asyncio.run(go())


@pytest.fixture
def server(tmp_path):
    s = NatsServer(tmp_path)
    s.start()
    yield s
    s.stop()


def _ids(path: Path) -> list[int]:
    return [json.loads(line)["System"]["EventRecordID"]
            for line in path.read_bytes().splitlines() if line.strip()]


def test_publish_then_collect_in_order(server, tmp_path, capsys):
    sink = open_url_output(f"{server.url}/sysmonx.events?spool={tmp_path / 'sp'}")
    for i in range(1, 2001):
        sink.write(make_event(i))
    sink.close()
    assert sink.stats.sent == 2000 and server.stored() == 2000
    out = tmp_path / "collected.jsonl"
    assert main(["collect", f"{server.url}/sysmonx.events", "-o", str(out), "--count", "2000",
                 "-q"]) == 0
    assert _ids(out) == list(range(1, 2001))
    # exact events: the same JSON lines the jsonl writer gives
    from sysmonx.sinks.jsonl import event_to_json
    assert out.read_bytes().splitlines()[4] == event_to_json(make_event(5))
    # all acknowledged: a second collector on the durable gets nothing
    out2 = tmp_path / "again.jsonl"
    assert main(["collect", f"{server.url}/sysmonx.events", "-o", str(out2), "--idle-exit", "2",
                 "-q"]) == 0
    assert _ids(out2) == []


def test_kill9_of_the_server_during_publish_stores_each_event_once(server, tmp_path):
    n = int(os.environ.get("SYSMONX_NATS_EVENTS", "20000"))
    sink = open_url_output(f"{server.url}/fleet.events?stream=FLEET&spool={tmp_path / 'sp'}"
                           "&drain=120&spool_max=1G")
    sink.BACKOFF = (0.05, 0.5)
    killed = False
    t0 = time.monotonic()
    for i in range(1, n + 1):
        sink.write(make_event(i))
        if not killed and sink.stats.sent > n // 4:
            killed = True
            server.kill9()  # in the middle of the publish: acknowledged or not, in flight
            time.sleep(1.0)
            server.start()
    while not killed and sink.spool.pending_records:
        if sink.stats.sent > n // 4:
            killed = True
            server.kill9()
            time.sleep(1.0)
            server.start()
        time.sleep(0.001)
    assert killed, "the publisher finished before the kill (raise SYSMONX_NATS_EVENTS)"
    sink.close()
    elapsed = time.monotonic() - t0
    assert sink.reconnects >= 1
    assert server.stored("FLEET") == n  # each event stored once
    out = tmp_path / "all.jsonl"
    assert main(["collect", f"{server.url}/fleet.events?stream=FLEET", "-o", str(out),
                 "--count", str(n), "-q"]) == 0
    ids = _ids(out)
    assert ids == list(range(1, n + 1))  # none lost, none twice, in order
    print(f"\n{n} events, server killed -9 and restarted: {elapsed:.1f} s, "
          f"{sink.transport.duplicates} retried publishes recognised as stored")


def test_two_collectors_split_the_stream(server, tmp_path):
    sink = open_url_output(f"{server.url}/sysmonx.events?spool={tmp_path / 'sp'}")
    for i in range(1, 10001):
        sink.write(make_event(i))
    sink.close()
    outs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    procs = [subprocess.Popen([sys.executable, "-m", "sysmonx.cli", "collect",
                               f"{server.url}/sysmonx.events?durable=shared&batch=50",
                               "-o", str(o), "--idle-exit", "3", "-q"]) for o in outs]
    for p in procs:
        assert p.wait(120) == 0
    a, b = _ids(outs[0]), _ids(outs[1])
    assert a and b, "one collector got everything: the work was not split"
    assert set(a).isdisjoint(b) and len(a) + len(b) == 10000
    assert sorted(a + b) == list(range(1, 10001))
    assert a == sorted(a) and b == sorted(b)  # each in stream order


def test_collect_errors_are_clear(tmp_path, capsys):
    if not HAVE_CLIENT:
        pytest.skip("nats-py not installed")
    port = free_port()
    assert main(["collect", f"nats://127.0.0.1:{port}/x", "--count", "1"]) == 1
    assert "error:" in capsys.readouterr().err
    assert main(["collect", "nats://127.0.0.1:1/x?batch=no"]) == 87


def test_receiver_away_is_one_sysmonx_line_not_library_tracebacks(server, tmp_path, capfd):
    """New-user report s11 #3: with nats-server killed during a run, nats-py printed four full
    tracebacks ("nats: encountered error") on stderr in 7 s and SysmonX said nothing. Now: one
    line when the receiver goes away, one when it is back, nothing from the library."""
    said = []
    sink = open_url_output(f"{server.url}/quiet.events?stream=QUIET&spool={tmp_path / 'sp'}")
    sink.BACKOFF = (0.05, 0.2)
    sink.on_status = said.append
    for i in range(1, 101):
        sink.write(make_event(i))
    assert sink.wait_idle(20)
    server.kill9()
    for i in range(101, 201):
        sink.write(make_event(i))
    time.sleep(2.0)  # several reconnection attempts against the closed port
    server.start()
    sink.close()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "nats: encountered error" not in err, err
    away = [m for m in said if "the receiver is away" in m]
    back = [m for m in said if "the receiver is back" in m]
    assert len(away) == 1 and len(back) == 1 and sink.outages == 1, said
    assert away[0].startswith(f"output -o {server.url}/quiet.events: the receiver is away (")
    assert server.stored("QUIET") == 200
