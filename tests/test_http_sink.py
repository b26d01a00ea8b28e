"""HTTP(S) output (sysmonx.sinks.http) against a real HTTP server in this process on loopback
(http.server): NDJSON batches, OTLP/HTTP JSON logs, retries on 5xx and on a server that is
away, 4xx refusals counted, TLS verified, the order kept and nothing sent twice."""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sysmonx.event import Event
from sysmonx.sinks.http import HttpSink
from sysmonx.sinks.outputs import open_url_output

from test_netsyslog import certs, free_port, make_event  # noqa: F401 - fixture


class Receiver:
    """An HTTP server recording each POST (path, headers, body); answers from ``script`` (a
    list of status codes used up first), then 200."""

    def __init__(self, port: int = 0, tls: dict | None = None) -> None:
        self.posts: list[tuple[str, dict, bytes]] = []
        self.script: list[int] = []
        rx = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = rx.script.pop(0) if rx.script else 200
                if status == 200:
                    rx.posts.append((self.path, dict(self.headers), body))
                msg = b"{}" if status == 200 else b"no"
                self.send_response(status)
                self.send_header("Content-Length", str(len(msg)))
                self.end_headers()
                self.wfile.write(msg)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        if tls:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(tls["cert"], tls["key"])
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def ndjson_ids(self) -> list[int]:
        return [json.loads(line)["System"]["EventRecordID"]
                for _, _, body in self.posts for line in body.splitlines()]


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(**kw) -> Receiver:
        r = Receiver(**kw)
        made.append(r)
        return r
    yield make
    for r in made:
        r.stop()


def test_ndjson_batches_in_order(receiver, tmp_path):
    rx = receiver()
    sink = open_url_output(f"http://127.0.0.1:{rx.port}/ingest?batch=100&header=X-Tenant:blue"
                           f"&spool={tmp_path / 's'}")
    assert isinstance(sink, HttpSink)
    for i in range(1, 1001):
        sink.write(make_event(i))
    sink.close()
    assert rx.ndjson_ids() == list(range(1, 1001))
    path, headers, body = rx.posts[0]
    assert path == "/ingest" and headers["Content-Type"] == "application/x-ndjson"
    assert headers["X-Tenant"] == "blue" and body.endswith(b"\n")
    assert all(len(b.splitlines()) <= 100 for _, _, b in rx.posts)
    assert sink.stats.sent == 1000


def test_retries_on_5xx_and_an_absent_server_without_duplicates(receiver, tmp_path):
    port = free_port()
    sink = open_url_output(f"http://127.0.0.1:{port}/?batch=50&spool={tmp_path / 's'}")
    sink.BACKOFF = (0.05, 0.2)
    for i in range(1, 301):
        sink.write(make_event(i))
    assert not sink.wait_idle(0.5)  # nobody there: everything waits on disk
    rx = receiver(port=port)
    rx.script = [503, 500, 429]
    for i in range(301, 601):
        sink.write(make_event(i))
    sink.close()
    assert rx.ndjson_ids() == list(range(1, 601))
    assert sink.reconnects >= 3


def test_4xx_refusal_is_counted_and_not_retried(receiver, tmp_path):
    rx = receiver()
    rx.script = [400]
    sink = open_url_output(f"http://127.0.0.1:{rx.port}/?batch=10&spool={tmp_path / 's'}")
    for i in range(1, 11):
        sink.write(make_event(i))
    assert sink.wait_idle(5)
    for i in range(11, 21):
        sink.write(make_event(i))
    sink.close()
    k = sink.stats.failed  # the first batch (whatever the sender had read by then) refused
    assert 1 <= k <= 10 and sink.stats.sent == 20 - k
    assert rx.ndjson_ids() == list(range(k + 1, 21))  # not sent again; the rest in order
    assert "HTTP 400" in sink.last_error


def test_otlp_logs_request(receiver, tmp_path):
    rx = receiver()
    sink = open_url_output(f"http://127.0.0.1:{rx.port}?mode=otlp&format=ecs"
                           f"&spool={tmp_path / 's'}")
    e = make_event(5)
    e.level = 2
    sink.write(e)
    sink.close()
    path, headers, body = rx.posts[0]
    assert path == "/v1/logs" and headers["Content-Type"] == "application/json"
    req = json.loads(body)
    rl = req["resourceLogs"][0]
    assert rl["resource"]["attributes"] == [{"key": "service.name",
                                             "value": {"stringValue": "sysmonx"}}]
    rec = rl["scopeLogs"][0]["logRecords"][0]
    assert rec["timeUnixNano"] == "1714979289123456789"
    assert rec["severityNumber"] == 17 and rec["severityText"] == "ERROR"
    attrs = {a["key"]: a["value"] for a in rec["attributes"]}
    assert attrs["sysmon.event_id"] == {"intValue": "11"}
    assert attrs["sysmon.record_id"] == {"intValue": "5"}
    assert attrs["host.name"] == {"stringValue": "host01"}
    assert attrs["sysmon.TargetFilename"] == {"stringValue": "/tmp/file-5"}
    assert json.loads(rec["body"]["stringValue"])["event"]["code"] == "11"  # format=ecs


def test_https_verified_by_default(receiver, certs, tmp_path):  # noqa: F811 - fixture
    rx = receiver(tls=certs)
    ok = open_url_output(f"https://localhost:{rx.port}/?ca={certs['ca']}&spool={tmp_path / 'a'}")
    ok.write(make_event(1))
    ok.close()
    assert rx.ndjson_ids() == [1]
    bad = open_url_output(f"https://localhost:{rx.port}/?drain=1&spool={tmp_path / 'b'}")
    bad.write(make_event(2))
    with pytest.raises(Exception, match="wait in the spool"):
        bad.close()
    assert "CERTIFICATE_VERIFY_FAILED" in bad.last_error
    assert rx.ndjson_ids() == [1]


def test_surrogates_and_bad_options(tmp_path):
    from sysmonx.core.errors import UsageError
    from sysmonx.sinks.http import otlp_record
    rec = json.loads(otlp_record(Event(1, {"X": "a\ud800"}), b"body"))
    assert rec["attributes"][-1] == {"key": "sysmon.X", "value": {"stringValue": "a\ud800"}}
    for q in ("mode=grpc", "header=nocolon", "timeout=x"):
        with pytest.raises(UsageError):
            open_url_output(f"http://h:1/?{q}&spool={tmp_path / 's'}")
