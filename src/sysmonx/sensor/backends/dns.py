"""DNS queries from a packet socket (spec linux-sensing.md §2.6, §5 item 4): the ``aux`` backend
that runs beside any tier and produces :class:`~sysmonx.sensor.observations.DnsQuery`.

Capture: ``socket(AF_PACKET, SOCK_DGRAM, 0)`` — the "cooked" form: the kernel strips the
link-layer header (Ethernet, loopback, tun, ...), so the data always starts at the IP header and
no framing has to be parsed. A classic BPF program (:func:`bpf_program`, attached with
``SO_ATTACH_FILTER`` = 26 *before* the socket is bound to ``ETH_P_ALL`` on all interfaces, so no
unfiltered packet is ever queued) keeps IPv4/IPv6 UDP and TCP packets with source or destination
port 53 (non-first IPv4 fragments and IPv6 extension headers are dropped).

Direction and duplicates: on ``lo`` every packet is seen twice (``PACKET_OUTGOING`` and
``PACKET_HOST``); only the HOST copy is used. On other interfaces a query of this host is
``PACKET_OUTGOING`` and its answer ``PACKET_HOST``; queries arriving from other machines (this
host is their DNS server) and the answers it sends them are ignored.

Time: each packet's time is the kernel's receive stamp (``SO_TIMESTAMPNS``), so a DnsQuery's
``ts_ns`` is when the query was sent, not when the reader got to it or when the answer came.

Matching: a query waits under (transport, client ip, client port, DNS id) for its response; the
pair becomes one DnsQuery with the RCODE and the answers. A query without an answer after
``dns_answer_timeout_s`` (default 2 s) is emitted with ``status``/``results`` ``None``. A response
whose query was not seen (sent before start) is emitted on its own.

Process: at query time, the client port is looked up in ``/proc/net/udp{,6}`` (``tcp``) and the
socket inode in ``/proc/*/fd`` (:class:`~sysmonx.sensor.procfs.SocketOwners`, cached per port for 1 s). This
succeeds for real round trips; a client that got an instant answer (a local cache) may have closed
its socket before the look-up, and ``pid`` is then ``None`` (spec §2.6: 10-20 % attributed for
instant loopback answers, 100 % with 50 ms of server delay). The core can still attribute it from
``source_port``/``server``.

Hostile input: every parser bound-checks, compression pointers must go strictly backwards (so
loops are impossible) and counts are capped; a malformed packet increments ``parse_errors``
and is skipped, never raising out of the reader.

Loss: ``PACKET_STATISTICS`` ``tp_drops`` (packets the socket's queue could not take), polled every
second -> ``Loss(source="dns.packet_drops")``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import os
import select
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from ...core.registry import BACKENDS
from ..observations import BackendError, DnsQuery, Loss, Observation
from .base import Backend, BackendUnavailable, WakeableReaderMixin
from ..procfs import CAP_NET_RAW, SocketOwners, has_cap

__all__ = ["DnsBackend", "DnsParseError", "DnsMessage", "IpPacket", "parse_dns", "parse_ip",
           "read_name", "render_results", "bpf_program", "assemble_bpf"]

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35  # SCM_TIMESTAMPNS: struct timespec of when the kernel received the packet
_TIMESPEC = struct.Struct("=qq")
ARPHRD_LOOPBACK = 772
PACKET_HOST = 0
PACKET_OUTGOING = 4
DNS_PORT = 53

MAX_NAME_BYTES = 255
MAX_POINTER_JUMPS = 64
MAX_QUESTIONS = 4
MAX_ANSWERS = 256

TYPE_NAMES_RDATA = {2: 0, 5: 0, 12: 0, 39: 0, 15: 2, 33: 6}  # type -> offset of the name in rdata


class DnsParseError(ValueError):
    """A packet or DNS message that is truncated or malformed (counted, then skipped)."""


# --------------------------------------------------------------------------------------------
# classic BPF
# --------------------------------------------------------------------------------------------

_BPF_LD_B_ABS = 0x30
_BPF_LD_H_ABS = 0x28
_BPF_LD_H_IND = 0x48
_BPF_LDX_B_MSH = 0xB1
_BPF_ALU_RSH_K = 0x74
_BPF_JEQ_K = 0x15
_BPF_JSET_K = 0x45
_BPF_RET_K = 0x06


def assemble_bpf(program: list) -> list:
    """Resolve labels: ``program`` items are ``("label:",)`` markers or
    ``(code, k, jt_label_or_None, jf_label_or_None)``; returns ``[(code, jt, jf, k)]``."""
    labels = {}
    pc = 0
    for item in program:
        if len(item) == 1:
            labels[item[0].rstrip(":")] = pc
        else:
            pc += 1
    out = []
    pc = 0
    for item in program:
        if len(item) == 1:
            continue
        code, k, jt, jf = item
        jt_off = 0 if jt is None else labels[jt] - pc - 1
        jf_off = 0 if jf is None else labels[jf] - pc - 1
        if not (0 <= jt_off <= 255 and 0 <= jf_off <= 255):
            raise ValueError("BPF jump out of range")
        out.append((code, jt_off, jf_off, k & 0xFFFFFFFF))
        pc += 1
    return out


def bpf_program(port: int = DNS_PORT, tcp: bool = True, snaplen: int = 262144) -> list:
    """The classic BPF filter for a cooked (``SOCK_DGRAM``) packet socket: accept IPv4/IPv6
    UDP (and TCP when ``tcp``) with source or destination ``port``; returns
    ``[(code, jt, jf, k)]`` (``struct sock_filter``)."""
    prog = [
        (_BPF_LD_B_ABS, 0, None, None),            # A = version/IHL
        (_BPF_ALU_RSH_K, 4, None, None),           # A >>= 4
        (_BPF_JEQ_K, 4, "v4", None),
        (_BPF_JEQ_K, 6, "v6", "drop"),
        ("v4:",),
        (_BPF_LD_B_ABS, 9, None, None),            # protocol
        (_BPF_JEQ_K, 17, "v4ok", "v4tcp" if tcp else "drop"),
    ]
    if tcp:
        prog += [("v4tcp:",), (_BPF_JEQ_K, 6, "v4ok", "drop")]
    prog += [
        ("v4ok:",),
        (_BPF_LD_H_ABS, 6, None, None),            # flags + fragment offset
        (_BPF_JSET_K, 0x1FFF, "drop", None),       # not the first fragment
        (_BPF_LDX_B_MSH, 0, None, None),           # X = 4 * IHL
        (_BPF_LD_H_IND, 0, None, None),            # source port
        (_BPF_JEQ_K, port, "accept", None),
        (_BPF_LD_H_IND, 2, None, None),            # destination port
        (_BPF_JEQ_K, port, "accept", "drop"),
        ("v6:",),
        (_BPF_LD_B_ABS, 6, None, None),            # next header
        (_BPF_JEQ_K, 17, "v6ok", "v6tcp" if tcp else "drop"),
    ]
    if tcp:
        prog += [("v6tcp:",), (_BPF_JEQ_K, 6, "v6ok", "drop")]
    prog += [
        ("v6ok:",),
        (_BPF_LD_H_ABS, 40, None, None),
        (_BPF_JEQ_K, port, "accept", None),
        (_BPF_LD_H_ABS, 42, None, None),
        (_BPF_JEQ_K, port, "accept", "drop"),
        ("accept:",),
        (_BPF_RET_K, snaplen, None, None),
        ("drop:",),
        (_BPF_RET_K, 0, None, None),
    ]
    return assemble_bpf(prog)


def _attach_filter(sock: socket.socket, insns: list) -> None:
    raw = b"".join(struct.pack("=HBBI", *ins) for ins in insns)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("HL", len(insns), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _bind_all(sock: socket.socket) -> None:
    """Bind a packet socket to ETH_P_ALL on every interface (ifindex 0): Python's ``bind``
    needs an interface name, so libc ``bind`` is called directly."""
    lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    addr = struct.pack("=HHiHBB8s", socket.AF_PACKET, socket.htons(ETH_P_ALL), 0, 0, 0, 0, b"")
    if lib.bind(sock.fileno(), addr, len(addr)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bind(AF_PACKET, ETH_P_ALL): {os.strerror(err)}")


# --------------------------------------------------------------------------------------------
# packet and DNS parsing
# --------------------------------------------------------------------------------------------

@dataclass(slots=True)
class IpPacket:
    """An IPv4/IPv6 UDP or TCP packet: addresses as text, ``proto`` ``"udp"``/``"tcp"``,
    ``payload`` the transport payload (for TCP the DNS length prefix is still there)."""

    src: str
    dst: str
    sport: int
    dport: int
    proto: str
    payload: bytes
    ipv6: bool


def parse_ip(data: bytes) -> Optional[IpPacket]:
    """Parse an IP packet (no link-layer header). Returns ``None`` for non-UDP/TCP packets.

    Raises:
        DnsParseError: truncated or inconsistent headers, IPv4 fragments.
    """
    if len(data) < 1:
        raise DnsParseError("empty packet")
    version = data[0] >> 4
    if version == 4:
        if len(data) < 20:
            raise DnsParseError("truncated IPv4 header")
        ihl = (data[0] & 0x0F) * 4
        total = struct.unpack_from(">H", data, 2)[0]
        frag = struct.unpack_from(">H", data, 6)[0]
        if ihl < 20 or len(data) < ihl:
            raise DnsParseError("bad IPv4 header length")
        if frag & 0x3FFF:  # MF set or offset != 0
            raise DnsParseError("IPv4 fragment")
        proto = data[9]
        src = socket.inet_ntop(socket.AF_INET, data[12:16])
        dst = socket.inet_ntop(socket.AF_INET, data[16:20])
        end = min(len(data), total) if total >= ihl else len(data)
        body = data[ihl:end]
        ipv6 = False
    elif version == 6:
        if len(data) < 40:
            raise DnsParseError("truncated IPv6 header")
        plen = struct.unpack_from(">H", data, 4)[0]
        proto = data[6]
        src = str(ipaddress.IPv6Address(data[8:24]))
        dst = str(ipaddress.IPv6Address(data[24:40]))
        body = data[40:40 + plen] if plen else data[40:]
        ipv6 = True
    else:
        raise DnsParseError(f"IP version {version}")
    if proto == 17:
        if len(body) < 8:
            raise DnsParseError("truncated UDP header")
        sport, dport, ulen = struct.unpack_from(">HHH", body, 0)
        if ulen < 8:
            raise DnsParseError("bad UDP length")
        return IpPacket(src, dst, sport, dport, "udp", body[8:ulen], ipv6)
    if proto == 6:
        if len(body) < 20:
            raise DnsParseError("truncated TCP header")
        sport, dport = struct.unpack_from(">HH", body, 0)
        off = (body[12] >> 4) * 4
        if off < 20 or off > len(body):
            raise DnsParseError("bad TCP data offset")
        return IpPacket(src, dst, sport, dport, "tcp", body[off:], ipv6)
    return None


def _label_text(raw: bytes) -> str:
    out = []
    for b in raw:
        if b in (0x2E, 0x5C):  # '.' and '\' inside a label
            out.append("\\" + chr(b))
        elif 0x21 <= b <= 0x7E:
            out.append(chr(b))
        else:
            out.append(f"\\{b:03d}")
    return "".join(out)


def read_name(msg: bytes, off: int) -> tuple:
    """Read a (possibly compressed) domain name at ``off``.

    Returns:
        ``(name_without_trailing_dot, offset_after_the_name)``; the root name is ``""``.

    Raises:
        DnsParseError: past the end, a pointer not strictly before every earlier position of
            this name (this forbids loops), too many jumps, a name over 255 bytes, or a reserved
            label type.
    """
    labels = []
    total = 0
    jumps = 0
    end = None
    limit = off  # every pointer must go below this (strictly decreasing -> terminates)
    pos = off
    n = len(msg)
    while True:
        if pos >= n:
            raise DnsParseError("name runs past the end")
        length = msg[pos]
        if length == 0:
            pos += 1
            break
        kind = length & 0xC0
        if kind == 0xC0:
            if pos + 1 >= n:
                raise DnsParseError("truncated compression pointer")
            target = ((length & 0x3F) << 8) | msg[pos + 1]
            if end is None:
                end = pos + 2
            if target >= limit:
                raise DnsParseError("compression pointer does not go backwards (loop)")
            jumps += 1
            if jumps > MAX_POINTER_JUMPS:
                raise DnsParseError("too many compression pointers")
            limit = pos = target
            continue
        if kind:
            raise DnsParseError("reserved label type")
        pos += 1
        if pos + length > n:
            raise DnsParseError("label runs past the end")
        total += length + 1
        if total > MAX_NAME_BYTES:
            raise DnsParseError("name longer than 255 bytes")
        labels.append(_label_text(msg[pos:pos + length]))
        pos += length
    return ".".join(labels), (end if end is not None else pos)


@dataclass(slots=True)
class DnsMessage:
    """A parsed DNS message: header fields, the first question, and the answer section as
    ``[(type, rendered or None)]`` (:func:`render_results` form per record).
    ``answers_error`` is set when the answer section was cut short (truncated/malformed)."""

    id: int
    qr: bool
    opcode: int
    rcode: int
    tc: bool
    qname: Optional[str]
    qtype: Optional[int]
    answers: list = field(default_factory=list)
    answers_error: Optional[str] = None


def _render_rdata(msg: bytes, rtype: int, off: int, rdlen: int) -> Optional[str]:
    if rtype == 1:
        if rdlen != 4:
            raise DnsParseError("A record of wrong length")
        return "::ffff:" + socket.inet_ntop(socket.AF_INET, msg[off:off + 4])
    if rtype == 28:
        if rdlen != 16:
            raise DnsParseError("AAAA record of wrong length")
        return str(ipaddress.IPv6Address(msg[off:off + 16]))
    skip = TYPE_NAMES_RDATA.get(rtype)
    if skip is not None:
        if rdlen < skip + 1:
            raise DnsParseError("record data too short")
        name, _after = read_name(msg[:off + rdlen], off + skip)
        return f"type:  {rtype} {name}"
    return None


def parse_dns(msg: bytes) -> DnsMessage:
    """Parse a DNS message (RFC 1035) with bounded work.

    Returns:
        a :class:`DnsMessage`; answers are parsed only for responses.

    Raises:
        DnsParseError: header or question malformed (a malformed *answer* only stops the
            answer list and sets ``answers_error``).
    """
    if len(msg) < 12:
        raise DnsParseError("shorter than a DNS header")
    ident, flags, qd, an, _ns, _ar = struct.unpack_from(">HHHHHH", msg, 0)
    qr = bool(flags & 0x8000)
    out = DnsMessage(ident, qr, (flags >> 11) & 0xF, flags & 0xF, bool(flags & 0x0200), None, None)
    off = 12
    if qd > MAX_QUESTIONS:
        raise DnsParseError(f"{qd} questions")
    for i in range(qd):
        name, off = read_name(msg, off)
        if off + 4 > len(msg):
            raise DnsParseError("truncated question")
        qtype = struct.unpack_from(">H", msg, off)[0]
        off += 4
        if i == 0:
            out.qname, out.qtype = name, qtype
    if not qr:
        return out
    try:
        for _ in range(min(an, MAX_ANSWERS)):
            _name, off = read_name(msg, off)
            if off + 10 > len(msg):
                raise DnsParseError("truncated resource record")
            rtype, _rclass, _ttl, rdlen = struct.unpack_from(">HHIH", msg, off)
            off += 10
            if off + rdlen > len(msg):
                raise DnsParseError("record data runs past the end")
            out.answers.append((rtype, _render_rdata(msg, rtype, off, rdlen)))
            off += rdlen
    except DnsParseError as exc:
        out.answers_error = str(exc)
    return out


def render_results(answers: list) -> Optional[str]:
    """Sysmon's ``QueryResults`` text for an answer list: each rendered record followed by
    ``;`` in answer order (``type:  5 cname.example;::ffff:1.2.3.4;``, AAAA as ``::1;``);
    ``None`` when nothing is renderable (the core prints ``-``)."""
    text = "".join(r + ";" for _t, r in answers if r)
    return text or None


# --------------------------------------------------------------------------------------------
# backend
# --------------------------------------------------------------------------------------------

@dataclass(slots=True)
class _Pending:
    ts_ns: int
    qname: str
    qtype: Optional[int]
    server: str
    sport: int
    pid: Optional[int]
    deadline: float


@BACKENDS.register(summary="beside any tier: DNS queries and answers from AF_PACKET")
class DnsBackend(WakeableReaderMixin, Backend):
    """DNS queries and answers from an AF_PACKET socket (module docstring).

    Options (``options`` dict, all optional; ``dns_``-prefixed because the runner passes the
    same dict to the tier backend):
        dns_answer_timeout_s (float, default 2.0): emit a query without answer after this.
        dns_rcvbuf (int, default 4 MiB): socket receive buffer (``SO_RCVBUFFORCE``).
        dns_tcp (bool, default True): also DNS over TCP (complete messages in one segment only).
        dns_attribute (bool, default True): look up the querying pid through ``/proc``.
        dns_stats_interval_s (float, default 1.0): how often ``tp_drops`` is polled.
        dns_max_pending (int, default 65536): queries waiting for answers (oldest flushed).
        join_timeout_s (float, default 5.0): how long :meth:`stop` waits for the reader.

    Emits DnsQuery, Loss(``dns.packet_drops``) and BackendError (reader crash).
    """

    name = "dns"
    tier = "aux"
    events = frozenset({22})

    def __init__(self, emit: Callable[[Observation], None], exclude_pids: frozenset = frozenset(),
                 options: Optional[dict] = None) -> None:
        super().__init__(emit, exclude_pids, options)
        o = self.options
        self.answer_timeout_s = float(o.get("dns_answer_timeout_s", 2.0))
        self.rcvbuf = int(o.get("dns_rcvbuf", 4 << 20))
        self.tcp = bool(o.get("dns_tcp", True))
        self.attribute = bool(o.get("dns_attribute", True))
        self.stats_interval_s = float(o.get("dns_stats_interval_s", 1.0))
        self.max_pending = int(o.get("dns_max_pending", 65536))
        self.join_timeout_s = float(o.get("join_timeout_s", 5.0))
        self._sock: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None
        self._wake_r = self._wake_w = -1
        self._stopping = False
        self._stopped = True
        self._pending: dict = {}
        self._done: dict = {}
        self._owners = SocketOwners()
        self._lock = threading.Lock()
        self.last_error: Optional[str] = None
        self._stats = {"received": 0, "lost": 0, "emitted": 0, "parse_errors": 0,
                       "answer_errors": 0, "ignored": 0, "duplicates": 0, "queries": 0,
                       "responses": 0, "unmatched_responses": 0, "timeouts": 0,
                       "attributed": 0, "unattributed": 0, "tcp_incomplete": 0,
                       "packet_drops": 0, "socket_errors": 0}

    @classmethod
    def probe(cls) -> Optional[str]:
        """``None`` when a packet socket can be opened (Linux, CAP_NET_RAW), else why."""
        if not sys.platform.startswith("linux"):
            return "AF_PACKET needs Linux"
        if not has_cap(CAP_NET_RAW):
            return "needs CAP_NET_RAW (run as root) for the packet socket"
        try:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
        except OSError as exc:
            return f"cannot open an AF_PACKET socket: {exc.strerror}"
        s.close()
        return None

    def start(self) -> None:
        """Open the filtered packet socket and start the reader thread.

        Raises:
            BackendUnavailable: the socket could not be set up (nothing left behind).
        """
        if not self._stopped:
            return
        self._stopping = False
        try:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)  # protocol 0: no packets yet
            self._sock = s
            try:
                s.setsockopt(socket.SOL_SOCKET, 33, self.rcvbuf)  # SO_RCVBUFFORCE
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            _attach_filter(s, bpf_program(tcp=self.tcp))
            try:
                s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            except OSError:
                pass  # then the time the reader got the packet
            _bind_all(s)
            s.setblocking(False)
            self._read_drops()  # reset the counters (reading clears them)
            self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._stopped = False
            self._thread = threading.Thread(target=self._run, name="sysmonx-dns", daemon=True)
            self._thread.start()
        except BaseException as exc:
            self._cleanup()
            self._stopped = True
            raise BackendUnavailable(f"DNS packet socket: {exc}") from exc

    def _cleanup(self) -> None:
        s, self._sock = self._sock, None
        if s is not None:
            try:
                s.close()
            except OSError:
                pass
        self._close_wake_pipe()

    def stats(self) -> dict:
        """Counters: ``received`` (packets), ``lost`` (tp_drops reported), ``parse_errors``
        (malformed packets skipped), ``queries``, ``responses``, ``attributed``,
        ``unattributed``, ``timeouts`` (queries emitted without answer) ..."""
        with self._lock:
            return dict(self._stats)

    # ------------------------------------------------------------------------------ reader
    def _out(self, obs: Observation) -> None:
        self._stats["emitted"] += 1
        self.emit(obs)

    def _read_drops(self) -> int:
        if self._sock is None:
            return 0
        try:
            raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            return struct.unpack("=II", raw)[1]
        except (OSError, struct.error, AttributeError):
            return 0

    def _report_drops(self) -> None:
        drops = self._read_drops()
        if drops:
            self._stats["packet_drops"] += drops
            self._stats["lost"] += drops
            self._out(Loss(time.time_ns(), "dns.packet_drops", drops,
                           "packets the AF_PACKET socket could not queue (PACKET_STATISTICS)"))

    def _run(self) -> None:
        assert self._sock is not None  # opened by start() before the thread
        try:
            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)
            poller.register(self._sock.fileno(), select.POLLIN)
            next_stats = time.monotonic() + self.stats_interval_s
            while not self._stopping:
                now = time.monotonic()
                wait = min(next_stats - now, 0.2)
                poller.poll(max(0, int(wait * 1000)) + 1)
                self._drain()
                self._expire(time.monotonic())
                if time.monotonic() >= next_stats:
                    self._report_drops()
                    next_stats = time.monotonic() + self.stats_interval_s
            self._drain()
            self._expire(float("inf"))
            self._report_drops()
        except Exception as exc:  # noqa: BLE001 - the reader must report, not die silently
            try:
                self._out(BackendError(time.time_ns(), "dns.reader",
                                       f"reader crashed: {type(exc).__name__}: {exc}", fatal=True))
            except Exception:  # noqa: BLE001 - best effort while reporting a crash
                pass

    def _drain(self) -> None:
        s = self._sock
        assert s is not None
        anc_size = socket.CMSG_SPACE(_TIMESPEC.size)
        for _ in range(4096):
            try:
                data, anc, _flags, addr = s.recvmsg(65535, anc_size)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError as exc:  # e.g. ENETDOWN while an interface goes away: keep reading
                self._stats["socket_errors"] += 1
                self.last_error = str(exc)
                return
            self._stats["received"] += 1
            pkttype, hatype = addr[2], addr[3]
            loopback = hatype == ARPHRD_LOOPBACK
            if loopback and pkttype == PACKET_OUTGOING:
                self._stats["duplicates"] += 1  # the HOST copy follows
                continue
            stamp = None
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and \
                        len(cdata) >= _TIMESPEC.size:
                    sec, nsec = _TIMESPEC.unpack_from(cdata)
                    stamp = sec * 1_000_000_000 + nsec
            self.handle_packet(data, outgoing=(pkttype == PACKET_OUTGOING or loopback),
                               incoming=(pkttype == PACKET_HOST or loopback), now_ns=stamp)

    def handle_packet(self, data: bytes, outgoing: bool = True, incoming: bool = True,
                      now_ns: Optional[int] = None) -> None:
        """Process one captured IP packet (also the unit-test entry point).

        ``outgoing``: the packet was sent by this host (a query of ours may be in it);
        ``incoming``: it was received by this host (an answer to us may be in it). Never raises
        for packet content: malformed input only increments ``parse_errors``.
        """
        ts_ns = time.time_ns() if now_ns is None else now_ns
        seen = time.monotonic()
        try:
            pkt = parse_ip(data)
            if pkt is None:
                self._stats["ignored"] += 1
                return
            payload = pkt.payload
            if pkt.proto == "tcp":
                if not payload:
                    return  # SYN/ACK/FIN without data
                if len(payload) < 2:
                    raise DnsParseError("truncated TCP DNS length")
                mlen = struct.unpack_from(">H", payload, 0)[0]
                if mlen > len(payload) - 2:
                    self._stats["tcp_incomplete"] += 1
                    return
                payload = payload[2:2 + mlen]
            msg = parse_dns(payload)
        except (DnsParseError, struct.error, ValueError, IndexError) as exc:
            self._stats["parse_errors"] += 1
            self.last_error = str(exc)
            return
        if msg.answers_error:
            self._stats["answer_errors"] += 1
        if msg.opcode != 0 or msg.qname is None:
            self._stats["ignored"] += 1
            return
        if not msg.qr:
            if pkt.dport != DNS_PORT or not outgoing:
                self._stats["ignored"] += 1
                return
            self._on_query(pkt, msg, ts_ns, seen)
        else:
            if pkt.sport != DNS_PORT or not incoming:
                self._stats["ignored"] += 1
                return
            self._on_response(pkt, msg, ts_ns, seen)

    def _attribute(self, proto: str, port: int, ip: str, seen: float) -> Optional[int]:
        if not self.attribute:
            return None
        pid = self._owners.lookup(proto, port, ip, seen_at=seen)
        self._stats["attributed" if pid is not None else "unattributed"] += 1
        return pid

    def _on_query(self, pkt: IpPacket, msg: DnsMessage, ts_ns: int, seen: float) -> None:
        key = (pkt.proto, pkt.src, pkt.sport, msg.id)
        qname = msg.qname
        assert qname is not None  # messages without a question are not handed here
        old = self._pending.get(key)
        if old is not None and old.qname.lower() == qname.lower():
            self._stats["duplicates"] += 1  # retransmission or a second capture point
            return
        if old is not None:
            self._emit_pending(self._pending.pop(key), None)
        self._stats["queries"] += 1
        pid = self._attribute(pkt.proto, pkt.sport, pkt.src, seen)
        self._pending[key] = _Pending(ts_ns, qname, msg.qtype, pkt.dst, pkt.sport, pid,
                                      seen + self.answer_timeout_s)
        if len(self._pending) > self.max_pending:
            oldest = next(iter(self._pending))
            self._emit_pending(self._pending.pop(oldest), None)

    def _on_response(self, pkt: IpPacket, msg: DnsMessage, ts_ns: int, seen: float) -> None:
        key = (pkt.proto, pkt.dst, pkt.dport, msg.id)
        qname = msg.qname
        assert qname is not None  # messages without a question are not handed here
        self._stats["responses"] += 1
        p = self._pending.get(key)
        if p is not None and p.qname.lower() == qname.lower():
            del self._pending[key]
            self._done[key] = seen + 1.0
            self._emit_pending(p, msg)
            return
        if key in self._done:
            self._stats["duplicates"] += 1
            return
        self._stats["unmatched_responses"] += 1
        pid = self._attribute(pkt.proto, pkt.dport, pkt.dst, seen)
        self._done[key] = seen + 1.0
        self._emit_pending(_Pending(ts_ns, qname, msg.qtype, pkt.src, pkt.dport, pid, 0.0), msg)

    def _emit_pending(self, p: _Pending, msg: Optional[DnsMessage]) -> None:
        if p.pid is not None and p.pid in self.exclude_pids:
            return
        if msg is None:
            self._stats["timeouts"] += 1
        self._out(DnsQuery(ts_ns=p.ts_ns, pid=p.pid, query_name=p.qname,
                           status=None if msg is None else msg.rcode,
                           results=None if msg is None else render_results(msg.answers),
                           source_port=p.sport, server=p.server, qtype=p.qtype))

    def _expire(self, now: float) -> None:
        if self._pending:
            for key in [k for k, p in self._pending.items() if p.deadline <= now]:
                self._emit_pending(self._pending.pop(key), None)
        if len(self._done) > 1024 or now == float("inf"):
            self._done = {k: t for k, t in self._done.items() if t > now}
