"""Syslog over the network: ``-o tcp://HOST:PORT``, ``-o tls://HOST:PORT``, ``-o udp://HOST:PORT``.

Each event is one RFC 5424 message::

    <14>1 2024-05-06T07:08:09.123456Z web01 sysmon - 1 - <Event>...</Event>

PRI (facility user, severity info, as Sysmon for Linux logs), version 1, TIMESTAMP the event's
System time in UTC (RFC 5424 allows 6 fractional digits), HOSTNAME the event's Computer (``-``
when it is not printable ASCII without spaces, or longer than 255), APP-NAME ``sysmon`` (option
``tag=``), PROCID ``-``, MSGID the EventID, no structured data, MSG the event in the chosen
format (option ``format=``: ``linux-xml`` (default, Sysmon for Linux's message), ``jsonl``,
``ecs``, ``xml``). A format that can hold a line break in a value never does (every writer
escapes them), so a message is one line.

Framing and transport:

* ``tcp``: RFC 6587 octet counting (``LEN SP MSG``, the framing RFC 5425 prescribes); option
  ``framing=lf`` sends a ``\\n`` after each message instead (non-transparent framing, for
  receivers without octet counting).
* ``tls``: RFC 5425 (TLS, octet counting), default port 6514. The server certificate is
  verified against the system's CAs, or ``ca=FILE``, and its name against the host (or
  ``servername=``); ``cert=FILE``/``key=FILE`` present a client certificate. ``insecure=1``
  turns verification off (said in the output's label).
* ``udp``: RFC 5426, one message per datagram, cut to ``max_size`` bytes (default 2048, the
  size RFC 5426 says every receiver must take; up to 65507); cut messages are counted
  (:attr:`UdpSyslogSink.truncated`). UDP confirms nothing: the spool only covers local send
  errors (no route, an ICMP refusal on the connected socket).

Delivery confirmation over TCP and TLS (what the spool commits): the bytes the peer's TCP has
acknowledged (``SIOCOUTQ``: the send queue holds no unacknowledged byte of the record), checked
after each batch; before each batch the connection is checked for the peer having closed it.
Plain syslog has no application acknowledgement (RELP adds one): a receiver killed while
acknowledged records still sat unread in its socket buffer loses them, and records acknowledged
between the last check and a reset are sent again. Stopping a receiver normally (rsyslog on
SIGTERM) closes the connection, which the check usually sees before anything is lost; but a
receiver that closes with acknowledged records still unread loses those few (seen: 3 of 15,580
over TLS, about one stop in 20); see ``tests/test_netsyslog.py`` for the measured behaviour.
"""

from __future__ import annotations

import errno
import select
import socket
import ssl
import struct
import time
from collections import deque
from typing import Any, Callable, Optional, Sequence

from ..core.errors import SinkError, UsageError
from ..core.registry import SINKS
from ..event import Event, is_canonical_time, normalize_time
from .network import NetTarget, SpooledSink, Transport
from .spool import Position

__all__ = ["TcpSyslogSink", "TlsSyslogSink", "UdpSyslogSink", "rfc5424", "event_encoder"]

#: Linux's SIOCOUTQ (= TIOCOUTQ): bytes in a TCP socket's send queue not yet acknowledged.
_SIOCOUTQ = 0x5411


def _hostname(computer: str) -> str:
    if computer and len(computer) <= 255 and all(33 <= ord(c) <= 126 for c in computer):
        return computer
    return "-"


def _timestamp(e: Event) -> str:
    t = e.time_created
    if t and not is_canonical_time(t):
        try:
            t = normalize_time(t)
        except ValueError:
            return "-"
    if t and is_canonical_time(t):  # no space or other character to shift the header's fields
        return t[:26] + "Z"  # 6 fractional digits (RFC 5424 section 6.2.3)
    return "-"


def rfc5424(e: Event, msg: bytes, tag: str = "sysmon", pri: int = 14) -> bytes:
    """The RFC 5424 message of one event (bytes, no framing)."""
    head = f"<{pri}>1 {_timestamp(e)} {_hostname(e.computer)} {tag} - {e.event_id} - "
    return head.encode("ascii") + msg


def event_encoder(fmt: str) -> Callable[[Event], bytes]:
    """Event -> message bytes in the stream format ``fmt`` (one line, without its newline).

    Raises:
        UsageError: unknown format.
    """
    if fmt == "linux-xml":
        from .xml_linux import render_linux_xml
        return lambda e: render_linux_xml(e).encode("utf-8", "surrogateescape")
    if fmt == "xml":
        from .xml_windows import render_windows_xml
        return lambda e: render_windows_xml(e).encode("utf-8", "surrogateescape")
    if fmt == "jsonl":
        from .jsonl import event_to_json
        return event_to_json
    if fmt == "ecs":
        from .ecs import ecs_line
        return ecs_line
    raise UsageError(f"format={fmt}: expected linux-xml, xml, jsonl or ecs")


class _StreamTransport(Transport):
    """Syslog over a TCP (or TLS) connection, confirmed by the peer's TCP acknowledgements."""

    def __init__(self, host: str, port: int, octet_counting: bool = True,
                 context: Optional[ssl.SSLContext] = None, server_hostname: Optional[str] = None,
                 timeout: float = 10.0) -> None:
        self.host, self.port = host, port
        self.octet_counting = octet_counting
        self.context = context
        self.server_hostname = server_hostname or host
        self.timeout = timeout
        self.sock: Optional[socket.socket] = None
        self._ends: deque[int] = deque()  # TCP payload offset after each unconfirmed record
        self._done = 0
        self._bytes = 0
        self._tls_confirmed = 0

    def connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.context is not None:
            try:
                self.sock = self.context.wrap_socket(raw, server_hostname=self.server_hostname)
            except (ssl.SSLError, OSError):
                raw.close()
                raise
        else:
            self.sock = raw
        self._ends = deque()
        self._done = 0
        self._bytes = 0
        self._tls_confirmed = 0

    def _peer_closed(self) -> bool:
        """Whether the receiver closed the connection (a syslog receiver never sends: readable
        means end of stream, a reset, or for TLS its close_notify alert)."""
        assert self.sock is not None
        r, _, x = select.select([self.sock], [], [self.sock], 0)
        if not r and not x:
            return False
        if self.context is not None:
            return True
        try:
            data = self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True
        return data == b""

    def send(self, records: list[bytes], positions: Sequence[Position] = ()) -> None:
        if self.sock is None:
            raise OSError(errno.ENOTCONN, "not connected")
        if self._peer_closed():
            raise OSError(errno.ECONNRESET, "the receiver closed the connection")
        out = bytearray()
        for r in records:
            if self.octet_counting:
                out += b"%d " % len(r)
                out += r
            else:
                out += r
                out += b"\n"
            if self.context is None:
                self._ends.append(self._bytes + len(out))
        self.sock.sendall(out)
        self._bytes += len(out)

    def _outq(self) -> int:
        import fcntl  # POSIX only: imported here so the module loads everywhere
        assert self.sock is not None
        buf = fcntl.ioctl(self.sock.fileno(), _SIOCOUTQ, b"\0\0\0\0")
        return int(struct.unpack("i", buf)[0])

    def confirmed(self, sent: int, wait: float = 0.0) -> int:
        if self.sock is None:
            raise OSError(errno.ENOTCONN, "not connected")
        deadline = time.monotonic() + wait
        while True:
            outq = self._outq()
            if self.context is None:
                acked = self._bytes - outq
                # records whose last byte the peer acknowledged
                ends = self._ends
                while ends and ends[0] <= acked:
                    ends.popleft()
                    self._done += 1
                n = self._done
            else:
                # TLS adds bytes of its own: everything sent counts once the queue is empty
                if outq == 0:
                    self._tls_confirmed = sent
                n = self._tls_confirmed
            if n >= sent or time.monotonic() >= deadline:
                break
            time.sleep(0.002)
        if self._peer_closed() and n < sent:
            raise OSError(errno.ECONNRESET, "the receiver closed the connection")
        return n

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None


class _UdpTransport(Transport):
    """Syslog in UDP datagrams (RFC 5426), one message each, cut to ``max_size``."""

    def __init__(self, host: str, port: int, max_size: int) -> None:
        self.host, self.port, self.max_size = host, port, max_size
        self.sock: Optional[socket.socket] = None
        self.truncated = 0

    def connect(self) -> None:
        info = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0]
        s = socket.socket(info[0], socket.SOCK_DGRAM)
        try:
            s.connect(info[4])
        except OSError:
            s.close()
            raise
        self.sock = s

    def send(self, records: list[bytes], positions: Sequence[Position] = ()) -> None:
        if self.sock is None:
            raise OSError(errno.ENOTCONN, "not connected")
        for r in records:
            if len(r) > self.max_size:
                r = r[:self.max_size]
                self.truncated += 1
            self.sock.send(r)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None


class _SyslogSink(SpooledSink):
    """Common part of the three syslog sinks: the message encoder from the URL options."""

    default_port = 514

    @classmethod
    def _encoder(cls, t: NetTarget) -> Callable[[Event], bytes]:
        render = event_encoder(t.options.get("format", "linux-xml"))
        tag = t.options.get("tag", "sysmon")
        if not tag or len(tag) > 48 or not all(33 <= ord(c) <= 126 for c in tag):
            raise UsageError(f"{t.url}: tag= must be 1-48 printable ASCII characters")
        return lambda e: rfc5424(e, render(e), tag)


@SINKS.register
class TcpSyslogSink(_SyslogSink):
    """``-o tcp://HOST:PORT``: RFC 5424 syslog over TCP, octet counting (module docstring)."""

    name = "tcp"
    summary = "syslog over TCP (RFC 5424, octet counting), spooled on disk"
    schemes = ("tcp",)

    @classmethod
    def open(cls, target: Any, **options: Any) -> SpooledSink:
        """The sink for the URL ``target``.

        Raises:
            UsageError: a bad URL or option. SinkError: the spool cannot be used.
        """
        t = NetTarget(str(target), cls.default_port)
        framing = t.options.get("framing", "octet")
        if framing not in ("octet", "lf"):
            raise UsageError(f"{t.url}: framing= must be octet or lf")
        transport = _StreamTransport(t.host, int(t.port or 0), framing == "octet")
        return cls(transport, cls._encoder(t), t.url, **cls.common_options(t), **options)


@SINKS.register
class TlsSyslogSink(_SyslogSink):
    """``-o tls://HOST:PORT``: RFC 5425 syslog over TLS, certificate verified (module
    docstring)."""

    name = "tls"
    summary = "syslog over TLS (RFC 5425; the server certificate verified by default), spooled"
    schemes = ("tls",)
    default_port = 6514

    @classmethod
    def open(cls, target: Any, **options: Any) -> SpooledSink:
        """The sink for the URL ``target`` (options ``ca``, ``cert``, ``key``, ``servername``,
        ``insecure``).

        Raises:
            UsageError: a bad URL or option. SinkError: a CA/certificate/key file cannot be
            loaded, or the spool cannot be used.
        """
        t = NetTarget(str(target), cls.default_port)
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        try:
            if "ca" in t.options:
                ctx.load_verify_locations(cafile=t.options["ca"])
            if "cert" in t.options:
                ctx.load_cert_chain(t.options["cert"], t.options.get("key") or None)
        except (OSError, ssl.SSLError) as exc:
            raise SinkError(f"{t.url}: {exc}") from exc
        insecure = t.flag("insecure")
        if insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        transport = _StreamTransport(t.host, int(t.port or 0), True, ctx,
                                     t.options.get("servername") or t.host)
        sink = cls(transport, cls._encoder(t), t.url, **cls.common_options(t), **options)
        if insecure:
            sink.label += " (certificate NOT verified)"
        return sink


@SINKS.register
class UdpSyslogSink(_SyslogSink):
    """``-o udp://HOST:PORT``: RFC 5426 syslog over UDP, size-capped (module docstring)."""

    name = "udp"
    summary = "syslog over UDP (RFC 5426, messages cut to max_size), spooled against send errors"
    schemes = ("udp",)

    @classmethod
    def open(cls, target: Any, **options: Any) -> SpooledSink:
        """The sink for the URL ``target`` (option ``max_size``, 480 to 65507).

        Raises:
            UsageError: a bad URL or option. SinkError: the spool cannot be used.
        """
        t = NetTarget(str(target), cls.default_port)
        try:
            size = int(t.options.get("max_size", "2048"))
        except ValueError:
            raise UsageError(f"{t.url}: max_size= is not a number") from None
        if not 480 <= size <= 65507:
            raise UsageError(f"{t.url}: max_size= must be 480 to 65507 bytes")
        transport = _UdpTransport(t.host, int(t.port or 0), size)
        return cls(transport, cls._encoder(t), t.url, **cls.common_options(t), **options)

    @property
    def truncated(self) -> int:
        """Messages cut to ``max_size``."""
        return int(getattr(self.transport, "truncated", 0))
