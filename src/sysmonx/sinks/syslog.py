"""Syslog output as Sysmon for Linux writes it: one record per event, facility ``user``, severity
``info``, program tag ``sysmon``, message the single-line Linux-Sysmon XML
(shared/spec/sysmon-semantics.md section 5.3).

Records go to the local syslog socket (``/dev/log``) in the form glibc's ``syslog(3)`` sends:
``<14>Nov 30 02:10:00 sysmon: <Event>...</Event>``; the daemon adds the host name. A record that
cannot be delivered (daemon restarting, socket gone, no daemon at all) is retried once after
reconnecting, then counted in :attr:`SyslogWriter.failed` and :meth:`SyslogWriter.write` raises
``OSError``, so the caller (the live sensor) counts it as undelivered and never as written.

A remote receiver (``--syslog udp://HOST:PORT``, ``tcp://``, ``tls://``: what Windows needs, which
has no local syslog socket) is not this class's: :meth:`SyslogWriter.open` hands such a target to
the network syslog outputs of :mod:`sysmonx.sinks.netsyslog` (RFC 5424; octet counting over TCP,
RFC 5425 over TLS; behind the disk spool), the one implementation of syslog over the network.
"""

from __future__ import annotations

import socket
import time
from typing import Any, Optional

from ..core.registry import SINKS
from ..event import Event
from ..interfaces import Sink
from .xml_linux import render_linux_xml

__all__ = ["SyslogWriter", "LOG_USER", "LOG_INFO"]

LOG_USER = 1
LOG_INFO = 6


@SINKS.register
class SyslogWriter(Sink):
    """Writes events to a local syslog daemon.

    Args:
        address: the daemon's Unix socket (default ``/dev/log``).
        tag: program name in each record (Sysmon for Linux: ``sysmon``).
        facility, severity: syslog numbers (default user.info, PRI 14).
        rewrite_envelope: passed to the Linux XML renderer.
        require: raise when the daemon cannot be reached now; with False the writer is made
            anyway and each record it cannot deliver raises from :meth:`write` (counted in
            ``failed``) until a daemon appears.

    Attributes:
        name: ``syslog ADDRESS``, how outputs are named in messages and summaries.
        sent, failed: records delivered / not delivered.

    Raises:
        OSError: the socket cannot be reached at construction (``require=True``).
    """

    name = "syslog"
    summary = ("syslog: the local daemon (/dev/log), records as Sysmon for Linux sends them "
               "(a udp://, tcp:// or tls:// target goes to the network syslog outputs)")
    slow = True

    @classmethod
    def open(cls, target: Optional[str] = None, **options: Any) -> Sink:
        """The writer on the daemon socket ``target`` (default ``/dev/log``); ``options`` as the
        constructor takes them. A ``udp://``, ``tcp://`` or ``tls://`` target gives the network
        syslog output of that URL (:mod:`sysmonx.sinks.netsyslog`; ``tag`` is passed on, the
        other options do not apply: it never fails to open, its spool keeps what cannot be sent).

        Raises:
            OSError: the daemon cannot be reached (``require=True``), or a malformed URL.
        """
        if target and target.split("://", 1)[0].lower() in ("udp", "tcp", "tls") \
                and "://" in target:
            from ..core.errors import UsageError
            from .outputs import open_url_output
            url = target
            if "tag" in options and "tag=" not in url:
                url += ("&" if "?" in url else "?") + f"tag={options['tag']}"
            try:
                sink = open_url_output(url)
            except UsageError as exc:
                raise OSError(str(exc)) from None
            sink.label = f"syslog {target.split('?', 1)[0]}"
            return sink
        return cls(target or "/dev/log", **options)

    def __init__(self, address: str = "/dev/log", tag: str = "sysmon", facility: int = LOG_USER,
                 severity: int = LOG_INFO, rewrite_envelope: bool = False,
                 require: bool = True) -> None:
        self.address = address
        self.target = address
        self.label = f"syslog {address}"
        self.tag = tag
        self.pri = facility * 8 + severity
        self.rewrite_envelope = rewrite_envelope
        self.failed = 0
        self.sent = 0
        self.kind = socket.SOCK_DGRAM
        self._next_retry = 0.0
        self.sock: Optional[socket.socket]
        try:
            self.sock = self._connect()
        except OSError:
            if require:
                raise
            self.sock = None  # like syslog(3): keep running, count what cannot be delivered

    def _connect(self) -> socket.socket:
        last = None
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            s = socket.socket(socket.AF_UNIX, kind)
            try:
                s.connect(self.address)
                self.kind = kind
                return s
            except OSError as exc:
                s.close()
                last = exc
        raise last  # type: ignore[misc]

    def record(self, event: Event) -> bytes:
        """The bytes sent for one event."""
        stamp = time.strftime("%b %e %H:%M:%S", time.localtime())
        msg = f"<{self.pri}>{stamp} {self.tag}: {render_linux_xml(event, self.rewrite_envelope)}"
        data = msg.encode("utf-8", "surrogateescape")
        if self.kind == socket.SOCK_STREAM:
            data += b"\n"
        return data

    def write(self, event: Event) -> None:
        """Send one event; reconnect and retry once on failure (with no daemon, reconnection is
        tried at most once a second).

        Raises:
            OSError: the record was not delivered (counted in ``failed``).
        """
        if self.sock is None:
            now = time.monotonic()
            if now < self._next_retry:
                self.failed += 1
                raise OSError(f"no syslog daemon at {self.address}")
            try:
                self.sock = self._connect()
            except OSError as exc:
                self._next_retry = now + 1.0
                self.failed += 1
                raise OSError(f"no syslog daemon at {self.address}: {exc.strerror or exc}") \
                    from None
        data = self.record(event)
        error = None
        for attempt in (0, 1):
            try:
                self.sock.send(data)
                self.sent += 1
                return
            except OSError as exc:
                error = exc
                if attempt:
                    break
                try:
                    self.sock.close()
                    self.sock = self._connect()
                except OSError:
                    self.sock = None
                    self._next_retry = time.monotonic() + 1.0
                    break
        self.failed += 1
        raise OSError(f"syslog {self.address}: {getattr(error, 'strerror', None) or error}")

    def close(self) -> None:
        """Close the socket."""
        try:
            if self.sock is not None:
                self.sock.close()
        except OSError:
            pass
