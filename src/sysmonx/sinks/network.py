"""The base of the network outputs: a spool on disk in front of a transport, a sender thread.

``-o SCHEME://HOST:PORT[/PATH][?OPTIONS]`` picks the registered sink whose ``schemes`` holds
SCHEME (``sysmonx plugins sinks`` lists them). Every network sink works the same way:

::

    write(event) ──► encode ──► Spool.append (disk, bounded)      sender thread:
                                                                     Spool.read ─► Transport.send
                                                                     confirmed? ─► Spool.commit
                                                                     failed?    ─► rewind, back off,
                                                                                   reconnect, resend

* ``write`` never waits for the network: it appends to the spool and returns. When the spool is
  full it raises :class:`~sysmonx.core.errors.SinkError` ("spool full"): the fan-out counts the
  event as lost and reports the loss period as event 255 once the output takes events again.
* The sender delivers in order. What the receiver has not confirmed is sent again after a
  reconnection; what it confirmed is committed and never sent again, also after a restart.
  What "confirmed" means is the transport's (:meth:`Transport.confirmed`): an HTTP 2xx, a
  JetStream acknowledgement, for syslog over TCP the peer's TCP acknowledgement of the bytes.
* ``close`` waits up to ``drain`` seconds (option, default 30) for the spool to empty; records
  still waiting stay in the spool for the next run with the same spool directory, and ``close``
  raises ``SinkError`` saying how many (a replay then exits 1).

Options common to every network sink (URL query): ``spool=DIR`` (default
``$SYSMONX_SPOOL_DIR`` or ``/var/lib/sysmonx/spool`` as root, ``~/.local/state/sysmonx/spool``
otherwise, then a folder named after the URL), ``spool_max=SIZE`` (bytes, ``k``/``M``/``G``;
default 256M), ``drain=SECONDS``, ``batch=N`` (records per send, default 500),
``format=NAME`` (the event format the records carry, per sink).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, Sequence

from ..core.errors import EventsSpooled, SinkError, UsageError
from ..core.neturl import NetTarget, parse_size
from ..event import Event
from ..interfaces import Sink, SinkStats
from .spool import DEFAULT_MAX_BYTES, Position, Spool

__all__ = ["Transport", "SpooledSink", "parse_size", "parse_target", "default_spool_dir",
           "NetTarget"]


def parse_target(url: str, default_port: Optional[int] = None) -> NetTarget:
    """:class:`NetTarget` of ``url``."""
    return NetTarget(url, default_port)


def default_spool_dir(url: str) -> Path:
    """The spool directory of an output URL when ``spool=`` is not given (module docstring)."""
    base = os.environ.get("SYSMONX_SPOOL_DIR")
    if base:
        root = Path(base)
    elif hasattr(os, "geteuid") and os.geteuid() == 0:
        root = Path("/var/lib/sysmonx/spool")
    else:
        root = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") \
            / "sysmonx" / "spool"
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", url.split("?", 1)[0])[:120]
    return root / safe


class Transport:
    """The connection half of a network sink (one per sink, used by its sender thread only).

    Subclasses implement :meth:`connect`, :meth:`send`, :meth:`close` and, when delivery is
    confirmed later than :meth:`send` returns, :meth:`confirmed`.
    """

    def bind(self, spool: Spool) -> None:
        """The sink's spool, before the sender starts (default: unused)."""

    def connect(self) -> None:
        """Open the connection. Raises ``OSError`` (or ``SinkError``) when it cannot."""

    def send(self, records: list[bytes], positions: Sequence[Position] = ()) -> None:
        """Send records in order. Raises ``OSError`` when they may not all have arrived; the
        sink then sends again, after :meth:`close` and :meth:`connect`, every record
        :meth:`confirmed` did not count. ``positions``: each record's place in the spool
        (stable across retries and restarts: a message id for receivers that deduplicate)."""
        raise NotImplementedError

    def confirmed(self, sent: int, wait: float = 0.0) -> int:
        """How many of the ``sent`` records handed to :meth:`send` since :meth:`connect` the
        receiver has certainly got (a prefix). Default: all of them once ``send`` returned.
        ``wait``: seconds it may wait for confirmations. Raises ``OSError`` when the connection
        is found broken."""
        return sent

    #: why the receiver refused the last records it refused for good
    rejected_error: Optional[str] = None

    def rejected(self) -> int:
        """Records the receiver refused for good (an HTTP 4xx batch) since the last call: they
        are committed (never sent again) and counted as failed."""
        return 0

    def close(self) -> None:
        """Drop the connection (idempotent)."""


class SpooledSink(Sink):
    """A network output: spool + transport + sender thread (module docstring).

    Args:
        transport: the connection half.
        encode: event -> record bytes.
        url: the output URL (label and default spool directory).
        spool_dir, spool_max, drain, batch: see the module docstring.
        when_full: ``refuse`` (live: a full spool refuses the event, counted as lost) or
            ``wait`` (replay, collect: :meth:`write` waits for room while the receiver takes
            events, and raises only after ``drain`` seconds without any progress).

    Attributes:
        stats: ``sent`` (confirmed by the receiver), ``failed`` (refused by the receiver for
            good, or the spool was full), ``dropped`` (0: a full spool raises, the fan-out counts).
        spool: the :class:`~sysmonx.sinks.spool.Spool`.
        last_error: the last delivery error, or ``None``.

    Raises:
        SinkError: the spool cannot be opened.
    """

    counts_itself = False
    schemes: ClassVar[tuple[str, ...]] = ()
    #: seconds between reconnection attempts: doubles from the first to the last
    BACKOFF = (0.1, 5.0)

    def __init__(self, transport: Transport, encode: Callable[[Event], bytes], url: str,
                 spool_dir: Optional[str] = None, spool_max: int = DEFAULT_MAX_BYTES,
                 drain: float = 30.0, batch: int = 500, when_full: str = "refuse") -> None:
        if when_full not in ("refuse", "wait"):
            raise UsageError(f"when_full must be refuse or wait, not {when_full!r}")
        self.when_full = when_full
        self.transport = transport
        self.encode = encode
        self.url = url
        self.target = url.split("?", 1)[0]
        self.label = f"-o {self.target}"
        self.spool = Spool(spool_dir or default_spool_dir(url), max_bytes=spool_max)
        transport.bind(self.spool)
        self.drain = drain
        self.batch = max(1, batch)
        self.stats = SinkStats()
        self.last_error: Optional[str] = None
        self.reconnects = 0
        #: one-line messages (the receiver went away, came back, the wait at close); set by
        #: the fan-out's slot to its status line (stderr)
        self.on_status: Optional[Callable[[str], None]] = None
        #: receiver outages seen (a connection that failed after working, or never worked)
        self.outages = 0
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"sysmonx-out {self.target}",
                                        daemon=True)
        self._thread.start()

    @classmethod
    def common_options(cls, t: NetTarget) -> dict[str, Any]:
        """The spool options of a parsed URL (module docstring)."""
        out: dict[str, Any] = {}
        if "spool" in t.options:
            out["spool_dir"] = t.options["spool"]
        if "spool_max" in t.options:
            out["spool_max"] = parse_size(t.options["spool_max"])
        try:
            if "drain" in t.options:
                out["drain"] = float(t.options["drain"])
            if "batch" in t.options:
                out["batch"] = int(t.options["batch"])
        except ValueError as exc:
            raise UsageError(f"{t.url}: {exc}") from None
        return out

    # -- pipeline side ---------------------------------------------------------------------

    def write(self, item: Any) -> None:
        """Spool one event (never waits for the network).

        Raises:
            SinkError: the spool is full (the event is counted as lost) or the disk failed.
        """
        record = self.encode(item)
        wait = self.when_full == "wait"
        if self.spool.append(record, count_refusal=not wait):
            return
        if wait:
            last = (self.spool.pending_records, time.monotonic())
            while self._thread.is_alive():
                time.sleep(0.005)
                if self.spool.append(record, count_refusal=False):
                    return
                now = time.monotonic()
                if self.spool.pending_records < last[0]:
                    last = (self.spool.pending_records, now)
                elif now - last[1] > self.drain:
                    break
            self.spool.refused += 1
        self.stats.failed += 1
        raise SinkError(f"{self.target}: spool full ({self.spool.max_bytes:,} bytes waiting"
                        f" for the receiver; last error: {self.last_error or 'none'})")

    def flush(self) -> None:
        """Nothing to flush: every record is on disk when :meth:`write` returns."""

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every spooled record is confirmed; True when it happened in time."""
        deadline = time.monotonic() + timeout
        while self.spool.pending_records > 0:
            if time.monotonic() >= deadline or not self._thread.is_alive():
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        """Deliver what is spooled (up to ``drain`` seconds), stop the sender, release the
        spool.

        Raises:
            SinkError: records are still waiting (they stay in the spool for the next run).
        """
        if self._closed:
            return
        self._closed = True
        pending = self.spool.pending_records
        if pending and self.on_status is not None:
            self.on_status(f"output {self.label}: waiting up to {self.drain:g} s (drain=) for "
                           f"the receiver to take {pending:,} spooled events")
        self.wait_idle(self.drain)
        self._stop.set()
        self._thread.join(10)
        left = self.spool.pending_records
        self.transport.close()
        self.spool.close()
        if left:
            raise EventsSpooled(f"{self.target}: {left:,} events wait in the spool "
                                f"{self.spool.path} (receiver: "
                                f"{self.last_error or 'no confirmation yet'}); the next run "
                                "with the same spool sends them", left)

    def _say(self, message: str) -> None:
        if self.on_status is not None and not self._stop.is_set():
            self.on_status(message)

    # -- sender thread -------------------------------------------------------------------

    def _run(self) -> None:
        backoff = self.BACKOFF[0]
        connected = False
        inflight: deque[Position] = deque()  # positions of records sent, not yet confirmed
        sent = 0  # records sent on this connection
        done = 0  # of them confirmed and committed
        give_up: Optional[float] = None
        away: Optional[float] = None  # monotonic time the current outage began
        told = False  # the outage was said (once the output's status line is known)
        while True:
            stopping = self._stop.is_set()
            if stopping:
                give_up = give_up or time.monotonic() + 2.0
                if time.monotonic() > give_up:  # unconfirmed records stay spooled
                    return
            try:
                if not connected:
                    if stopping:
                        return
                    self.transport.connect()
                    connected = True
                    if away is not None:
                        if told:
                            self._say(f"output {self.label}: the receiver is back after "
                                      f"{time.monotonic() - away:.0f} s; spooled events are "
                                      "being sent")
                        away, told = None, False
                    self.last_error = None
                    backoff = self.BACKOFF[0]
                batch = self.spool.read(self.batch, wait=0.0 if inflight else 0.05)
                if batch:
                    self.transport.send([r for _, r in batch], [p for p, _ in batch])
                    inflight.extend(p for p, _ in batch)
                    sent += len(batch)
                elif stopping and not inflight:
                    return
                if inflight:
                    ok = self.transport.confirmed(
                        sent, wait=0.0 if batch and len(inflight) < 20 * self.batch else 0.05)
                    if ok > done:
                        n = ok - done
                        pos = inflight[n - 1]
                        for _ in range(n):
                            inflight.popleft()
                        self.spool.commit(pos, n)
                        bad = self.transport.rejected()
                        if bad:
                            self.last_error = self.transport.rejected_error
                        self.stats.failed += bad
                        self.stats.sent += n - bad
                        done = ok
                    elif stopping and not batch:
                        time.sleep(0.01)
            except Exception as exc:  # noqa: BLE001 - OSError, SSLError, SinkError, and a
                # transport's own bug: delivery must go on (reconnect, resend), never die quietly
                self.last_error = str(exc) or type(exc).__name__
                if away is None:
                    away = time.monotonic()
                    self.outages += 1
                if not told and self.on_status is not None:  # one line per outage
                    told = True
                    self._say(f"output {self.label}: the receiver is away ({self.last_error}); "
                              f"events are kept in the spool {self.spool.path} and sent when "
                              "it is back")
                self.transport.close()
                connected = False
                self.reconnects += 1
                inflight.clear()
                sent = done = 0
                self.spool.rewind()
                if self._stop.wait(backoff):
                    # closing: one last try was made; what is left stays spooled
                    return
                backoff = min(backoff * 2, self.BACKOFF[1])
