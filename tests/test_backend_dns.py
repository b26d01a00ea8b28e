"""DNS backend: the parsers and the cBPF filter without privileges, then live capture as root
against a tiny DNS server on 127.0.0.2:53 (UDP and TCP).

Live tests skip with ``DnsBackend.probe()``'s reason without CAP_NET_RAW, and when port 53 on
127.0.0.2 is taken. They filter on query names unique to this run, are bounded in time, and
stop the backend in ``finally``.
"""

from __future__ import annotations

import ipaddress
import os
import random
import select
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from sysmonx.sensor.backends.dns import (DnsBackend, DnsParseError, bpf_program, parse_dns,
                                         parse_ip, read_name, render_results)
from sysmonx.sensor.observations import DnsQuery, Loss

pytestmark = pytest.mark.live

PROBE = DnsBackend.probe()
needs_packet = pytest.mark.skipif(PROBE is not None, reason=f"DNS backend unavailable: {PROBE}")

SERVER = "127.0.0.2"
RUN = f"r{os.getpid()}x{random.randrange(1 << 20):x}"  # unique label for this test run


# ------------------------------------------------------------------------ packet builders

def enc_name(name: str) -> bytes:
    if not name:
        return b"\0"
    return b"".join(bytes([len(lbl)]) + lbl.encode() for lbl in name.split(".")) + b"\0"


def dns_query(qid: int, name: str, qtype: int = 1) -> bytes:
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + enc_name(name) + struct.pack(">HH", qtype, 1)


def rr(name_bytes: bytes, rtype: int, rdata: bytes) -> bytes:
    return name_bytes + struct.pack(">HHIH", rtype, 1, 60, len(rdata)) + rdata


def dns_response(query: bytes, answers: list, rcode: int = 0) -> bytes:
    """Answer ``query`` (its question copied) with ``answers`` (raw RRs)."""
    qid = query[:2]
    qend = query.index(b"\0", 12) + 5
    return (qid + struct.pack(">HHHHH", 0x8180 | rcode, 1, len(answers), 0, 0)
            + query[12:qend] + b"".join(answers))


def ipv4_udp(src: str, dst: str, sport: int, dport: int, payload: bytes, frag: int = 0) -> bytes:
    udp = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
    hdr = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, frag, 64, 17, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    return hdr + udp


def ipv4_tcp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    tcp = struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x18, 1024, 0, 0) + payload
    hdr = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    return hdr + tcp


def ipv6_udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    udp = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
    return (struct.pack(">IHBB", 6 << 28, len(udp), 17, 64) + ipaddress.IPv6Address(src).packed
            + ipaddress.IPv6Address(dst).packed + udp)


def cname_a_response(query: bytes, cname: str, ip: str) -> bytes:
    return dns_response(query, [rr(b"\xc0\x0c", 5, enc_name(cname)),
                                rr(enc_name(cname), 1, socket.inet_aton(ip))])


# ------------------------------------------------------------------------ parser unit tests

def test_parse_query_and_cname_response():
    q = dns_query(0x1234, "c.example.org")
    m = parse_dns(q)
    assert (m.id, m.qr, m.opcode, m.rcode, m.qname, m.qtype, m.answers) == \
        (0x1234, False, 0, 0, "c.example.org", 1, [])
    resp = dns_response(q, [
        rr(b"\xc0\x0c", 5, enc_name("edge.cdn.example")),
        rr(enc_name("edge.cdn.example"), 1, bytes([93, 184, 216, 34])),
        rr(b"\xc0\x0c", 28, ipaddress.IPv6Address("2620:4d:4000:6259:7:6:0:1").packed),
        rr(b"\xc0\x0c", 28, ipaddress.IPv6Address("::1").packed),
        rr(b"\xc0\x0c", 16, b"\x05hello"),  # TXT: not rendered
    ])
    r = parse_dns(resp)
    assert r.qr and r.rcode == 0 and r.answers_error is None
    assert render_results(r.answers) == \
        "type:  5 edge.cdn.example;::ffff:93.184.216.34;2620:4d:4000:6259:7:6:0:1;::1;"
    assert render_results([]) is None


def test_ptr_mx_srv_and_nxdomain():
    q = dns_query(7, "x.test", 15)
    r = parse_dns(dns_response(q, [rr(b"\xc0\x0c", 15, b"\x00\x0a" + enc_name("mail.x.test")),
                                   rr(b"\xc0\x0c", 33, b"\0\1\0\2\0\x35" + b"\xc0\x0c"),
                                   rr(b"\xc0\x0c", 12, enc_name("host.x.test"))]))
    assert render_results(r.answers) == "type:  15 mail.x.test;type:  33 x.test;type:  12 host.x.test;"
    nx = parse_dns(dns_response(q, [], rcode=3))
    assert nx.rcode == 3 and render_results(nx.answers) is None


def test_names_with_escapes_and_root():
    msg = b"\0" * 12 + b"\x03a.b\x02\x00\xff\x00"
    assert read_name(msg, 12) == ("a\\.b.\\000\\255", 20)
    assert read_name(b"\0" * 12 + b"\0", 12) == ("", 13)


@pytest.mark.parametrize("msg,why", [
    (b"\0" * 12 + b"\xc0\x0c", "pointer to itself"),
    (b"\0" * 12 + b"\x01a\xc0\x0c", "pointer back to the start of this name (loop)"),
    (b"\0" * 12 + b"\x01a\xc0\x12\x01b\xc0\x0c", "forward pointer"),
    (b"\0" * 12 + b"\x05ab", "label past the end"),
    (b"\0" * 12 + b"\x01a", "no terminator"),
    (b"\0" * 12 + b"\xc0", "truncated pointer"),
    (b"\0" * 12 + b"\x40abc\0", "reserved label type"),
    (b"\0" * 12 + b"\x3f" + b"a" * 63 + b"\x3f" + b"b" * 63 + b"\x3f" + b"c" * 63 + b"\x3f"
     + b"d" * 63 + b"\0", "name over 255 bytes"),
])
def test_read_name_rejects_hostile(msg, why):
    with pytest.raises(DnsParseError):
        read_name(msg, 12)


def test_pointer_chain_that_loops_through_two_names():
    # name at 12 ends with a pointer to 16, where a label is followed by a pointer to 12
    msg = b"\0" * 12 + b"\x01a\xc0\x10" + b"\x01b\xc0\x0c"
    with pytest.raises(DnsParseError):
        read_name(msg, 12)
    with pytest.raises(DnsParseError):
        read_name(msg, 16)


def test_huge_counts_and_truncation_do_not_hang():
    q = dns_query(1, "a.test")
    hdr = bytearray(dns_response(q, [rr(b"\xc0\x0c", 1, b"\1\2\3\4")]))
    hdr[6:8] = b"\xff\xff"  # ancount 65535 with one record present
    t0 = time.monotonic()
    r = parse_dns(bytes(hdr))
    assert r.answers == [(1, "::ffff:1.2.3.4")] and r.answers_error
    cut = parse_dns(bytes(hdr[:-2]))
    assert cut.answers == [] and cut.answers_error
    with pytest.raises(DnsParseError):
        parse_dns(b"\0\1\0\0\xff\xff\0\0\0\0\0\0")  # 65535 questions
    with pytest.raises(DnsParseError):
        parse_dns(b"\0\1")
    bad_a = dns_response(q, [rr(b"\xc0\x0c", 1, b"\1\2\3")])
    assert parse_dns(bad_a).answers_error
    assert time.monotonic() - t0 < 1.0


def test_parse_ip_variants():
    q = dns_query(5, "v.test")
    p4 = parse_ip(ipv4_udp("10.0.0.1", "10.0.0.53", 40000, 53, q))
    assert (p4.src, p4.dst, p4.sport, p4.dport, p4.proto, p4.payload, p4.ipv6) == \
        ("10.0.0.1", "10.0.0.53", 40000, 53, "udp", q, False)
    p6 = parse_ip(ipv6_udp("fe80::1", "2001:db8::53", 40001, 53, q))
    assert (p6.src, p6.dst, p6.sport, p6.payload, p6.ipv6) == ("fe80::1", "2001:db8::53", 40001, q, True)
    tq = struct.pack(">H", len(q)) + q
    pt = parse_ip(ipv4_tcp("10.0.0.1", "10.0.0.53", 40002, 53, tq))
    assert (pt.proto, pt.payload) == ("tcp", tq)
    icmp = bytearray(ipv4_udp("10.0.0.1", "10.0.0.2", 1, 2, b""))
    icmp[9] = 1
    assert parse_ip(bytes(icmp)) is None
    for bad in (b"", b"\x45" * 10, ipv4_udp("1.1.1.1", "2.2.2.2", 1, 53, q, frag=0x2000),
                ipv4_udp("1.1.1.1", "2.2.2.2", 1, 53, q)[:24], b"\x60" + b"\0" * 20, b"\x90\0"):
        with pytest.raises(DnsParseError):
            parse_ip(bad)


def _run_cbpf(insns: list, pkt: bytes) -> int:
    """A minimal classic-BPF interpreter for the opcodes bpf_program uses."""
    a = x = 0
    pc = 0
    for _ in range(1000):
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == 0x30:
            if k >= len(pkt):
                return 0
            a = pkt[k]
        elif code == 0x28:
            if k + 2 > len(pkt):
                return 0
            a = struct.unpack_from(">H", pkt, k)[0]
        elif code == 0x48:
            if x + k + 2 > len(pkt):
                return 0
            a = struct.unpack_from(">H", pkt, x + k)[0]
        elif code == 0xB1:
            if k >= len(pkt):
                return 0
            x = 4 * (pkt[k] & 0xF)
        elif code == 0x74:
            a >>= k
        elif code == 0x15:
            pc += jt if a == k else jf
        elif code == 0x45:
            pc += jt if a & k else jf
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"opcode {code:#x}")
    raise AssertionError("no return")


def test_cbpf_filter_semantics():
    prog = bpf_program()
    q = dns_query(1, "f.test")
    cases = {
        "udp4 query": (ipv4_udp("10.0.0.1", "10.0.0.2", 5000, 53, q), True),
        "udp4 answer": (ipv4_udp("10.0.0.2", "10.0.0.1", 53, 5000, q), True),
        "udp4 other": (ipv4_udp("10.0.0.1", "10.0.0.2", 5000, 54, q), False),
        "udp4 fragment": (ipv4_udp("10.0.0.1", "10.0.0.2", 5000, 53, q, frag=0x0010), False),
        "tcp4": (ipv4_tcp("10.0.0.1", "10.0.0.2", 5000, 53, q), True),
        "udp6 query": (ipv6_udp("::1", "::1", 5000, 53, q), True),
        "udp6 answer": (ipv6_udp("::1", "::1", 53, 5000, q), True),
        "udp6 other": (ipv6_udp("::1", "::1", 5000, 5353, q), False),
        "garbage": (b"\x20\x00", False),
    }
    icmp = bytearray(cases["udp4 query"][0])
    icmp[9] = 1
    cases["icmp"] = (bytes(icmp), False)
    for name, (pkt, want) in cases.items():
        assert (_run_cbpf(prog, pkt) > 0) == want, name
    assert _run_cbpf(bpf_program(tcp=False), ipv4_tcp("1.1.1.1", "2.2.2.2", 1, 53, q)) == 0


def test_fuzzed_packets_never_raise():
    """Mutated and random packets through the whole handler: no exception, bounded time,
    every bad packet counted."""
    rnd = random.Random(1234)
    b = DnsBackend(lambda o: None, options={"dns_attribute": False})
    q = dns_query(9, "fuzz.example.com", 28)
    resp = cname_a_response(q, "edge.example.net", "192.0.2.1")
    seeds = [ipv4_udp("10.0.0.1", "10.0.0.53", 1111, 53, q),
             ipv4_udp("10.0.0.53", "10.0.0.1", 53, 1111, resp),
             ipv6_udp("::1", "::1", 53, 1111, resp),
             ipv4_tcp("10.0.0.53", "10.0.0.1", 53, 1111, struct.pack(">H", len(resp)) + resp)]
    t0 = time.monotonic()
    for _ in range(20000):
        pkt = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randrange(1, 8)):
            pkt[rnd.randrange(len(pkt))] = rnd.randrange(256)
        if rnd.random() < 0.3:
            del pkt[rnd.randrange(len(pkt)):]
        if rnd.random() < 0.05:
            pkt = bytearray(rnd.randbytes(rnd.randrange(0, 600)))
        b.handle_packet(bytes(pkt))
    b._expire(float("inf"))
    assert time.monotonic() - t0 < 60
    st = b.stats()
    assert st["parse_errors"] > 1000
    assert st["received"] == 0  # handle_packet is below the socket counter


def test_matching_timeouts_duplicates_and_direction():
    out: list = []
    b = DnsBackend(out.append, options={"dns_attribute": False, "dns_answer_timeout_s": 0})
    q = dns_query(0xBEEF, "m.example")
    resp = cname_a_response(q, "n.example", "198.51.100.7")
    b.handle_packet(ipv4_udp("10.1.1.1", "10.1.1.53", 3333, 53, q), now_ns=1000)
    b.handle_packet(ipv4_udp("10.1.1.1", "10.1.1.53", 3333, 53, q), now_ns=1001)  # duplicate
    b.handle_packet(ipv4_udp("10.1.1.53", "10.1.1.1", 53, 3333, resp), now_ns=2000)
    b.handle_packet(ipv4_udp("10.1.1.53", "10.1.1.1", 53, 3333, resp), now_ns=2001)  # duplicate
    assert out == [DnsQuery(1000, None, "m.example", 0, "type:  5 n.example;::ffff:198.51.100.7;",
                            3333, "10.1.1.53", 1)]
    # a query nobody answers: emitted without status/results when it times out
    b.handle_packet(ipv4_udp("10.1.1.1", "10.1.1.53", 4444, 53, dns_query(1, "lost.example", 28)),
                    now_ns=3000)
    b._expire(time.monotonic() + 1)
    assert out[-1] == DnsQuery(3000, None, "lost.example", None, None, 4444, "10.1.1.53", 28)
    # a response without its query (sent before start) is reported on its own
    b.handle_packet(ipv4_udp("10.1.1.53", "10.1.1.1", 53, 5555,
                             dns_response(dns_query(2, "late.example"), [], rcode=3)), now_ns=4000)
    assert out[-1] == DnsQuery(4000, None, "late.example", 3, None, 5555, "10.1.1.53", 1)
    # queries received from other machines (we are their server) are not ours
    n = len(out)
    b.handle_packet(ipv4_udp("10.9.9.9", "10.1.1.53", 6666, 53, dns_query(3, "remote.example")),
                    outgoing=False, incoming=True)
    b._expire(float("inf"))
    assert len(out) == n
    st = b.stats()
    assert (st["duplicates"], st["timeouts"], st["unmatched_responses"]) == (2, 1, 1)


# ------------------------------------------------------------------------------ live tests

class TinyDns:
    """UDP+TCP DNS server on 127.0.0.2:53 answering from a table after ``delay`` seconds."""

    def __init__(self, answers: dict, delay: float = 0.05) -> None:
        self.answers = answers
        self.delay = delay
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.udp.bind((SERVER, 53))
            self.tcp.bind((SERVER, 53))
        except OSError:
            self.close()
            raise
        self.tcp.listen(8)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def respond(self, query: bytes) -> bytes | None:
        name = parse_dns(query).qname
        make = self.answers.get(name)
        return None if make is None else make(query)

    def _serve(self) -> None:
        while not self._stop.is_set():
            r, _, _ = select.select([self.udp, self.tcp], [], [], 0.1)
            if self.udp in r:
                data, addr = self.udp.recvfrom(4096)
                out = self.respond(data)
                if out is not None:
                    time.sleep(self.delay)
                    self.udp.sendto(out, addr)
            if self.tcp in r:
                conn, _ = self.tcp.accept()
                with conn:
                    conn.settimeout(5)
                    raw = conn.recv(4096)
                    out = self.respond(raw[2:2 + struct.unpack(">H", raw[:2])[0]])
                    if out is not None:
                        time.sleep(self.delay)
                        conn.sendall(struct.pack(">H", len(out)) + out)

    def close(self) -> None:
        if hasattr(self, "_stop"):
            self._stop.set()
            self.thread.join(5)
        self.udp.close()
        self.tcp.close()


def N(label: str) -> str:
    return f"{label}.{RUN}.sysmonx.test"


ANSWERS = {
    N("a"): lambda q: dns_response(q, [rr(b"\xc0\x0c", 1, socket.inet_aton("192.0.2.1"))]),
    N("c"): lambda q: cname_a_response(q, N("target"), "192.0.2.7"),
    N("v6"): lambda q: dns_response(q, [rr(b"\xc0\x0c", 28, ipaddress.IPv6Address("::1").packed),
                                        rr(b"\xc0\x0c", 28, ipaddress.IPv6Address("2001:db8::5").packed)]),
    N("nx"): lambda q: dns_response(q, [], rcode=3),
    N("tcp"): lambda q: dns_response(q, [rr(b"\xc0\x0c", 1, socket.inet_aton("192.0.2.9"))]),
    N("child"): lambda q: cname_a_response(q, N("target"), "192.0.2.8"),
    N("dig"): lambda q: dns_response(q, [rr(b"\xc0\x0c", 1, socket.inet_aton("192.0.2.10"))]),
}


@pytest.fixture
def dns_server():
    if PROBE is not None:
        pytest.skip(f"DNS backend unavailable: {PROBE}")
    try:
        srv = TinyDns(ANSWERS)
    except OSError as exc:
        pytest.skip(f"cannot bind {SERVER}:53 for the test DNS server: {exc}")
    yield srv
    srv.close()


class Sink:
    """Thread-safe observation list; ``block_first`` makes the first emit block that long
    (``entered`` is set when it starts): a stalled consumer."""

    def __init__(self, block_first: float = 0.0) -> None:
        self.items: list = []
        self.cond = threading.Condition()
        self.block_first = block_first
        self.entered = threading.Event()

    def __call__(self, obs) -> None:
        if not self.entered.is_set():
            self.entered.set()
            if self.block_first:
                time.sleep(self.block_first)
        with self.cond:
            self.items.append(obs)
            self.cond.notify_all()

    def wait_for(self, pred, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                hits = [o for o in self.items if pred(o)]
                if hits:
                    return hits[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def named(self, name: str) -> list:
        with self.cond:
            return [o for o in self.items if isinstance(o, DnsQuery) and o.query_name == name]


@pytest.fixture
def dns_backend():
    backends = []

    def start(sink, **options):
        b = DnsBackend(sink, options=options)
        backends.append(b)
        b.start()
        return b

    yield start
    for b in backends:
        b.stop()


def _ask(name: str, qtype: int = 1, qid: int = 0x4242) -> tuple:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(5)
        s.sendto(dns_query(qid, name, qtype), (SERVER, 53))
        s.recv(4096)
        return s.getsockname()[1], qid
    finally:
        s.close()


@needs_packet
@pytest.mark.parametrize("label,qtype,status,results", [
    ("a", 1, 0, "::ffff:192.0.2.1;"),
    ("c", 1, 0, f"type:  5 {N('target')};::ffff:192.0.2.7;"),
    ("v6", 28, 0, "::1;2001:db8::5;"),
    ("nx", 1, 3, None),
])
def test_live_queries_from_this_process(dns_server, dns_backend, label, qtype, status, results):
    sink = Sink()
    dns_backend(sink)
    port, _ = _ask(N(label), qtype)
    got = sink.wait_for(lambda o: isinstance(o, DnsQuery) and o.query_name == N(label))
    assert got == DnsQuery(got.ts_ns, os.getpid(), N(label), status, results, port, SERVER, qtype)
    assert abs(got.ts_ns - time.time_ns()) < 10 * 10**9
    time.sleep(0.1)
    assert len(sink.named(N(label))) == 1  # the loopback double copy is not reported twice


CHILD = r"""
import socket, struct, sys
name = sys.argv[1]
q = struct.pack(">HHHHHH", 0x1111, 0x0100, 1, 0, 0, 0) + b"".join(
    bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(q, ("127.0.0.2", 53))
s.recv(4096)
print(s.getsockname()[1], flush=True)
"""


@needs_packet
def test_live_query_from_child_process(dns_server, dns_backend):
    """A query from another process: attributed to that process's pid."""
    sink = Sink()
    dns_backend(sink)
    child = subprocess.Popen([sys.executable, "-c", CHILD, N("child")], stdout=subprocess.PIPE,
                             text=True)
    try:
        out, _ = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 0
    port = int(out)
    got = sink.wait_for(lambda o: isinstance(o, DnsQuery) and o.query_name == N("child"))
    assert got == DnsQuery(got.ts_ns, child.pid, N("child"), 0,
                           f"type:  5 {N('target')};::ffff:192.0.2.8;", port, SERVER, 1)


@needs_packet
def test_live_dig(dns_server, dns_backend):
    dig = shutil.which("dig")
    if dig is None:
        pytest.skip("dig not installed (Debian package dnsutils)")
    sink = Sink()
    dns_backend(sink)
    p = subprocess.Popen([dig, "+tries=1", "+time=3", f"@{SERVER}", N("dig"), "A"],
                         stdout=subprocess.PIPE, text=True)
    out, _ = p.communicate(timeout=30)
    assert "192.0.2.10" in out
    got = sink.wait_for(lambda o: isinstance(o, DnsQuery) and o.query_name == N("dig"))
    assert got is not None
    assert (got.pid, got.status, got.results, got.server) == (p.pid, 0, "::ffff:192.0.2.10;", SERVER)


@needs_packet
def test_live_tcp_query(dns_server, dns_backend):
    sink = Sink()
    dns_backend(sink)
    q = dns_query(0x7777, N("tcp"))
    with socket.create_connection((SERVER, 53), timeout=5) as c:
        c.sendall(struct.pack(">H", len(q)) + q)
        port = c.getsockname()[1]
        c.recv(4096)
    got = sink.wait_for(lambda o: isinstance(o, DnsQuery) and o.query_name == N("tcp"))
    assert got == DnsQuery(got.ts_ns, os.getpid(), N("tcp"), 0, "::ffff:192.0.2.9;", port, SERVER, 1)


@needs_packet
def test_live_unanswered_query_times_out(dns_backend):
    sink = Sink()
    dns_backend(sink, dns_answer_timeout_s=0.3)
    name = N("nobody")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(dns_query(0x5151, name), ("127.0.0.3", 53))  # nobody listens there
        port = s.getsockname()[1]
        got = sink.wait_for(lambda o: isinstance(o, DnsQuery) and o.query_name == name, timeout=5)
    finally:
        s.close()
    assert got == DnsQuery(got.ts_ns, os.getpid(), name, None, None, port, "127.0.0.3", 1)


@needs_packet
def test_live_packet_drops_reported(dns_backend):
    """The consumer stalls (emit blocks 1.5 s) while 400 queries arrive at a socket with a tiny
    buffer: the kernel drops packets and the backend reports exactly what PACKET_STATISTICS
    counted, covering every query it could not see."""
    sink = Sink(block_first=1.5)
    b = dns_backend(sink, dns_rcvbuf=4096, dns_answer_timeout_s=0.05, dns_stats_interval_s=0.2)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(dns_query(1, N("trigger")), ("127.0.0.3", 53))  # emitted after 50 ms: stalls
        assert sink.entered.wait(10)
        for i in range(400):
            s.sendto(dns_query(i, N(f"flood{i}")), ("127.0.0.3", 53))
    finally:
        s.close()
    drop = sink.wait_for(lambda o: isinstance(o, Loss), timeout=20)
    b.stop()
    losses = [o for o in sink.items if isinstance(o, Loss)]
    assert drop is not None and drop.source == "dns.packet_drops" and drop.count > 0
    st = b.stats()
    assert sum(o.count for o in losses) == st["lost"] == st["packet_drops"]
    seen = {o.query_name for o in sink.items if isinstance(o, DnsQuery)
            and o.query_name.startswith("flood")}
    assert len(seen) < 400
    assert 400 - len(seen) <= st["lost"]  # every missing query is covered by a counted drop


@needs_packet
def test_stop_is_idempotent_and_closes_socket(dns_backend):
    b = dns_backend(Sink())
    sock = b._sock
    b.stop()
    b.stop()
    assert b._sock is None and sock.fileno() == -1
    assert b._thread is not None and not b._thread.is_alive()
