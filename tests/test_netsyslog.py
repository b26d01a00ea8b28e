"""Syslog over TCP, TLS and UDP (sysmonx.sinks.netsyslog) into a real rsyslog (Debian's rsyslog,
imtcp, and imtcp with the gnutls driver; started here on loopback with its own files): every
event once and in order; the receiver stopped under load and started again loses and repeats
nothing; a full spool is counted; a restart resumes from the spool; TLS verifies by default.

The outage of the load test is ``SYSMONX_OUTAGE_S`` seconds (default 5; the closing note's
figure ran it with 60)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from sysmonx.core.errors import SinkError
from sysmonx.event import LINUX_CHANNEL, LINUX_PROVIDER, LINUX_PROVIDER_GUID, Event
from sysmonx.sinks.netsyslog import TcpSyslogSink, UdpSyslogSink
from sysmonx.sinks.outputs import open_url_output
from sysmonx.sources import open_source

pytestmark = pytest.mark.live

RSYSLOGD = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if os.path.exists(
    "/usr/sbin/rsyslogd") else None)
GTLS = Path("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so")
_RID = re.compile(rb"<EventRecordID>(\d+)</EventRecordID>")


def make_event(i: int, pad: int = 0) -> Event:
    return Event(11, {"RuleName": "-", "UtcTime": "2024-05-06 07:08:09.123",
                      "ProcessGuid": "{11111111-2222-3333-4444-555555555555}",
                      "ProcessId": str(1000 + i % 50), "Image": "/usr/bin/touch",
                      "TargetFilename": f"/tmp/file-{i}" + "x" * pad,
                      "CreationUtcTime": "2024-05-06 07:08:09.123", "User": "root"},
                 provider=LINUX_PROVIDER, provider_guid=LINUX_PROVIDER_GUID, version=2, level=4,
                 task=11, opcode=0, keywords="0x8000000000000000", record_id=i,
                 time_created="2024-05-06T07:08:09.123456789Z", process_id=99, thread_id=99,
                 channel=LINUX_CHANNEL, computer="host01", user_id="0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Rsyslog:
    """rsyslogd -n with imtcp on ``port`` (gnutls when ``tls`` is given) writing messages to
    ``out`` as the syslog reader reads them."""

    def __init__(self, tmp: Path, port: int, tls: dict | None = None) -> None:
        if RSYSLOGD is None:
            pytest.skip("rsyslogd not installed (apt-get install rsyslog; .ci/run installs it)")
        self.tmp, self.port, self.out = tmp, port, tmp / "messages"
        self.conf = tmp / "rsyslog.conf"
        drv = ""
        glob = f'global(maxMessageSize="256k" workDirectory="{tmp}"'
        if tls:
            glob += (f' DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{tls["ca"]}"'
                     f' DefaultNetstreamDriverCertFile="{tls["cert"]}"'
                     f' DefaultNetstreamDriverKeyFile="{tls["key"]}"')
            drv = ' StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon"'
        glob += ")"
        self.conf.write_text(f"""
{glob}
module(load="imtcp"{drv})
input(type="imtcp" port="{port}" address="127.0.0.1")
template(name="plain" type="string" string="%TIMESTAMP% %HOSTNAME% %syslogtag%%msg:::sp-if-no-1st-sp%%msg%\\n")
*.* action(type="omfile" file="{self.out}" template="plain" flushOnTXEnd="on" asyncWriting="off")
""")  # noqa: E501 - rsyslog's template line, verbatim
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([RSYSLOGD, "-n", "-f", str(self.conf), "-i",
                                      str(self.tmp / "rsyslog.pid")],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    pytest.skip("rsyslogd did not start: "
                                + self.proc.stdout.read().decode(errors="replace")[:300])
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(20)
        self.proc = None

    def record_ids(self, expect: int, timeout: float = 20) -> list[int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ids = self._ids()
            if len(ids) >= expect:
                break
            time.sleep(0.05)
        time.sleep(0.2)  # anything more (a duplicate) would show now
        return self._ids()

    def _ids(self) -> list[int]:
        if not self.out.exists():
            return []
        return [int(m) for m in _RID.findall(self.out.read_bytes())]


@pytest.fixture
def rsyslog(tmp_path):
    servers: list[Rsyslog] = []

    def make(tls=None) -> Rsyslog:
        d = tmp_path / f"rs{len(servers)}"
        d.mkdir()
        r = Rsyslog(d, free_port(), tls)
        servers.append(r)
        r.start()
        return r
    yield make
    for r in servers:
        r.stop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("pki")

    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=SysmonX test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")
    (d / "ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext")
    return {"ca": str(d / "ca.pem"), "cert": str(d / "server.pem"), "key": str(d / "server.key")}


def test_tcp_every_event_once_in_order_and_readable(rsyslog, tmp_path):
    rs = rsyslog()
    sink = open_url_output(f"tcp://127.0.0.1:{rs.port}?spool={tmp_path / 'sp'}")
    events = [make_event(i) for i in range(1, 3001)]
    events[5].data["TargetFilename"] = "/tmp/new\nline </Data> & <x>"
    events[6].data["TargetFilename"] = "/tmp/" + "y" * 20000  # octet counting carries it
    for e in events:
        sink.write(e)
    sink.close()
    assert sink.stats.sent == 3000 and sink.stats.failed == 0
    assert rs.record_ids(3000) == list(range(1, 3001))
    back = list(open_source(str(rs.out), lambda err: pytest.fail(str(err)), "syslog"))
    assert [b.data for b in back] == [e.data for e in events]


def test_rfc5424_header_and_lf_framing(rsyslog, tmp_path):
    rs = rsyslog()
    sink = open_url_output(f"tcp://127.0.0.1:{rs.port}?framing=lf&format=jsonl&tag=sysmonx"
                           f"&spool={tmp_path / 'sp'}")
    assert sink.encode(make_event(7)).startswith(
        b'<14>1 2024-05-06T07:08:09.123456Z host01 sysmonx - 11 - {"EventID":11,')
    for i in range(1, 101):
        sink.write(make_event(i))
    sink.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (not rs.out.exists() or
                                           rs.out.read_bytes().count(b"\n") < 100):
        time.sleep(0.05)
    lines = rs.out.read_bytes().splitlines()
    assert len(lines) == 100 and all(b' sysmonx {"EventID":11' in ln or b' sysmonx: {"EventID"'
                                     in ln for ln in lines)


@pytest.mark.skipif(not GTLS.exists(), reason="rsyslog-gnutls not installed (.ci/run installs it)")
def test_tls_delivers_with_the_ca_and_refuses_without(rsyslog, certs, tmp_path):
    rs = rsyslog(tls=certs)
    sink = open_url_output(f"tls://localhost:{rs.port}?ca={certs['ca']}&spool={tmp_path / 'a'}")
    for i in range(1, 1001):
        sink.write(make_event(i))
    sink.close()
    assert rs.record_ids(1000) == list(range(1, 1001))
    # verification is on by default: the system CAs do not know the test CA
    bad = open_url_output(f"tls://localhost:{rs.port}?drain=1&spool={tmp_path / 'b'}")
    bad.write(make_event(1))
    with pytest.raises(SinkError, match="wait in the spool"):
        bad.close()
    assert "CERTIFICATE_VERIFY_FAILED" in (bad.last_error or "")
    # nor does a name the certificate does not carry pass
    wrong = open_url_output(f"tls://127.0.0.1:{rs.port}?ca={certs['ca']}&servername=other.test"
                            f"&drain=1&spool={tmp_path / 'c'}")
    wrong.write(make_event(1))
    with pytest.raises(SinkError):
        wrong.close()
    assert "mismatch" in (wrong.last_error or "") or "match" in (wrong.last_error or "")
    insecure = open_url_output(f"tls://127.0.0.1:{rs.port}?insecure=1&spool={tmp_path / 'd'}")
    assert "NOT verified" in insecure.label
    insecure.close()


def _load(sink, stop: threading.Event, rate: float, count: list) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        sink.write(make_event(i))
        count[0] = i
        if i % 20 == 0:
            time.sleep(20 / rate)


@pytest.mark.parametrize("scheme", ["tcp", "tls"])
def test_receiver_stopped_under_load_loses_and_repeats_nothing(rsyslog, certs, tmp_path,
                                                               scheme):
    if scheme == "tls" and not GTLS.exists():
        pytest.skip("rsyslog-gnutls not installed (.ci/run installs it)")
    outage = float(os.environ.get("SYSMONX_OUTAGE_S", "5"))
    rs = rsyslog(tls=certs if scheme == "tls" else None)
    q = f"?ca={certs['ca']}&" if scheme == "tls" else "?"
    sink = open_url_output(f"{scheme}://localhost:{rs.port}{q}spool={tmp_path / 'sp'}&drain=60")
    sink.BACKOFF = (0.05, 0.5)
    stop, count = threading.Event(), [0]
    t = threading.Thread(target=_load, args=(sink, stop, 2000.0, count))
    t.start()
    time.sleep(1.5)
    rs.stop()
    at_stop = count[0]
    time.sleep(outage)
    assert sink.spool.pending_records > 0  # waiting on disk meanwhile
    rs.start()
    time.sleep(1.5)
    stop.set()
    t.join()
    sink.close()
    n = count[0]
    assert n > at_stop > 1000
    ids = rs.record_ids(n, timeout=60)
    # nothing twice, in order
    assert len(ids) == len(set(ids)) and ids == sorted(ids), "records repeated or reordered"
    # Plain syslog has no application acknowledgement (netsyslog's docstring): rsyslog stopping
    # on SIGTERM may close with records its TCP acknowledged still unread in its socket buffer
    # (seen in CI: 3 of 15,580 over TLS, ~1 run in 20). Those can only be the few in flight at
    # the stop, one contiguous run; anything else lost is a fault of the sink or its spool.
    missing = sorted(set(range(1, n + 1)) - set(ids))
    assert len(missing) <= 64, f"{len(missing)} lost: {missing[:10]}..."
    if missing:
        assert missing == list(range(missing[0], missing[-1] + 1)), f"lost, not contiguous: {missing}"
        assert abs(missing[0] - at_stop) <= 4000, f"lost away from the stop ({at_stop}): {missing}"
    assert sink.stats.sent == n and sink.reconnects >= 1


def test_spool_cap_overflow_is_counted(rsyslog, tmp_path):
    port = free_port()  # nobody listens yet
    sink = open_url_output(f"tcp://127.0.0.1:{port}?spool_max=256k&spool={tmp_path / 'sp'}")
    sink.BACKOFF = (0.05, 0.2)
    refused = accepted = 0
    for i in range(1, 2001):
        try:
            sink.write(make_event(i))
            accepted += 1
        except SinkError as exc:
            assert "spool full" in str(exc)
            refused += 1
    assert 100 < accepted < 1000 and refused == 2000 - accepted
    assert sink.spool.refused == refused and sink.stats.failed == refused
    rs = Rsyslog(tmp_path, port)
    rs.start()
    try:
        sink.close()
        # the accepted prefix arrives whole and in order
        assert rs.record_ids(accepted) == list(range(1, accepted + 1))
    finally:
        rs.stop()


def test_restart_resumes_from_the_spool(tmp_path):
    port = free_port()
    spool = tmp_path / "sp"
    first = open_url_output(f"tcp://127.0.0.1:{port}?drain=0.5&spool={spool}")
    for i in range(1, 501):
        first.write(make_event(i))
    with pytest.raises(SinkError, match="500 events wait in the spool"):
        first.close()
    rs = Rsyslog(tmp_path, port)
    rs.start()
    try:
        second = open_url_output(f"tcp://127.0.0.1:{port}?spool={spool}")
        assert second.spool.recovered == 500
        for i in range(501, 1001):
            second.write(make_event(i))
        second.close()
        assert rs.record_ids(1000) == list(range(1, 1001))
    finally:
        rs.stop()


def test_udp_messages_and_size_cap(tmp_path):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    port = rx.getsockname()[1]
    sink = open_url_output(f"udp://127.0.0.1:{port}?max_size=1024&spool={tmp_path / 'sp'}")
    assert isinstance(sink, UdpSyslogSink)
    sink.write(make_event(1))
    sink.write(make_event(2, pad=5000))
    sink.close()
    a, b = rx.recv(65535), rx.recv(65535)
    rx.close()
    assert a.startswith(b"<14>1 2024-05-06T07:08:09.123456Z host01 sysmon - 11 - <Event>")
    assert a.endswith(b"</Event>") and len(b) == 1024
    assert sink.truncated == 1 and sink.stats.sent == 2


def test_bad_urls_are_usage_errors(tmp_path):
    from sysmonx.core.errors import UsageError
    for url in ("tcp://", "tcp://h:x", "udp://h:1?max_size=10", "tcp://h:1?framing=weird",
                "gopher://h:1", "tcp://h:1?format=nope"):
        with pytest.raises(UsageError):
            open_url_output(url + ("&" if "?" in url else "?") + f"spool={tmp_path / 's'}")
    assert TcpSyslogSink.schemes == ("tcp",)


def test_replay_waits_for_a_slow_receiver_instead_of_dropping(rsyslog, tmp_path, corpus):
    """A replay bigger than the spool: the writer waits for room (when_full=wait), nothing is
    refused, everything arrives once and in order."""
    from sysmonx.cli import main
    rs = rsyslog()
    evtx = str(corpus / "evtx")
    out = tmp_path / "direct.log"
    assert main(["replay", evtx, "-f", "linux-xml", "-o", str(out), "-q"]) == 0
    n = len(out.read_bytes().splitlines())
    assert main(["replay", evtx, "-q", "-o",
                 f"tcp://127.0.0.1:{rs.port}?spool_max=64k&spool={tmp_path / 'sp'}"]) == 0
    assert len(rs.record_ids(n)) == n


def test_wait_gives_up_after_drain_seconds_without_progress(tmp_path):
    sink = open_url_output(f"tcp://127.0.0.1:{free_port()}?spool_max=8k&drain=0.5"
                           f"&spool={tmp_path / 'sp'}", when_full="wait")
    t0 = time.monotonic()
    with pytest.raises(SinkError, match="spool full"):
        for i in range(1, 100):
            sink.write(make_event(i))
    assert 0.4 < time.monotonic() - t0 < 5
    with pytest.raises(SinkError):
        sink.close()


def test_events_left_in_the_spool_are_spooled_not_one_failed_write(tmp_path):
    """New-user report s11 #4: ``-o tcp://`` with no receiver ended with "NOT WRITTEN ... 1
    events" (the close's error counted as one failed write) beside 2,297 spooled events, and
    said nothing while it waited 30 s at close."""
    from sysmonx.pipeline.fanout import FanOut
    port = free_port()
    sink = open_url_output(f"tcp://127.0.0.1:{port}?drain=0.5&spool={tmp_path / 'sp'}")
    said = []
    fan = FanOut.build([sink], "count")
    fan.on_status = said.append
    fan.start()
    for i in range(1, 301):
        fan.deliver(make_event(i))
    fan.settle(5)
    fan.close()
    slot = fan.slots[0]
    assert (slot.stats.sent, slot.stats.undelivered) == (300, 0)
    assert fan.spooled() == {slot.label: (300, slot.spooled_note)}
    assert "300 events wait in the spool" in slot.spooled_note
    assert sum(1 for m in said if "the receiver is away" in m) == 1, said
    assert any("waiting up to 0.5 s (drain=) for the receiver to take 300 spooled events" in m
               for m in said), said
