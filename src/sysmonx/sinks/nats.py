"""Fleet transport: ``-o nats://HOST:PORT/SUBJECT`` publishes events to NATS JetStream.

Each event is one message on SUBJECT (default ``sysmonx.events``) whose payload is the event in
``format=`` (``jsonl`` default: what ``sysmonx collect`` reads back exactly; ``ecs``,
``linux-xml``, ``xml`` for other consumers), with the header ``Nats-Msg-Id`` set to
``SPOOL-ID:SEGMENT:OFFSET``: the record's place in the sender's disk spool, the same on every
retry and after a restart of the sender. JetStream drops a message whose id it stored within the
stream's duplicate window, so a publish retried after a lost acknowledgement, a broken
connection or a restart (of the sender, or of ``nats-server``) is stored once. A message counts
as delivered (the spool commits it) when JetStream acknowledged it (``PubAck``); a batch is
published with asynchronous publishes whose acknowledgements are awaited together.

When the stream (option ``stream=``, default ``SYSMONX``) does not exist it is created for
SUBJECT with file storage and a duplicate window of ``dup_window`` seconds (default 600: the
longest outage of the server after which a retry is still recognised; a longer outage can store
a message twice). Other options: ``user``/``password_file``, ``token_file``, ``tls=1`` with
``ca=``/``cert=``/``key=`` (verification on), ``timeout=`` (seconds), and the spool options of
:mod:`sysmonx.sinks.network`. Needs the ``nats-py`` package (``pip install sysmonx[nats]``).

Order: JetStream stores messages in the order they arrive over the one connection; after a
failure in the middle of a batch the unconfirmed rest is published again, and messages stored
before the failure keep their place (deduplicated), so order is kept per sender.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional, Sequence

from ..core.errors import SinkError, SysmonXError, UsageError
from ..core.registry import SINKS
from .netsyslog import event_encoder
from ..core.neturl import NetTarget, nats_connect_options
from .network import SpooledSink, Transport
from .spool import Position, Spool

__all__ = ["NatsSink", "DEFAULT_SUBJECT", "DEFAULT_STREAM"]

DEFAULT_SUBJECT = "sysmonx.events"
DEFAULT_STREAM = "SYSMONX"


def _require_nats() -> Any:
    try:
        import nats
    except ImportError:
        raise SinkError("nats:// needs the nats-py package (pip install 'sysmonx[nats]')") \
            from None
    return nats


class _JetStreamTransport(Transport):
    """Publishes batches to JetStream from the sender thread (its own asyncio loop)."""

    def __init__(self, t: NetTarget, subject: str, stream: str, spool_id: str,
                 dup_window: float, timeout: float) -> None:
        self.t = t
        self.subject = subject
        self.stream = stream
        self.spool_id = spool_id
        self.dup_window = dup_window
        self.timeout = timeout
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.nc: Any = None
        self.js: Any = None
        self.duplicates = 0  # publishes JetStream recognised as already stored

    def bind(self, spool: Spool) -> None:
        """Message ids start with the spool's id."""
        self.spool_id = spool.id

    def _run(self, coro: Any) -> Any:
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        return self.loop.run_until_complete(asyncio.wait_for(coro, self.timeout * 3))

    def connect(self) -> None:
        nats = _require_nats()

        async def go() -> None:
            self.nc = await nats.connect(**nats_connect_options(self.t))
            self.js = self.nc.jetstream(timeout=self.timeout)
            from nats.js.errors import NotFoundError
            try:
                await self.js.stream_info(self.stream)
            except NotFoundError:
                await self.js.add_stream(name=self.stream, subjects=[self.subject],
                                         storage="file", duplicate_window=self.dup_window)
        try:
            self._run(go())
        except Exception as exc:  # nats-py raises its own types: an OSError here
            self.close()
            raise OSError(f"NATS {self.t.host}:{self.t.port}: {exc or type(exc).__name__}") \
                from exc

    def send(self, records: list[bytes], positions: Sequence[Position] = ()) -> None:
        if self.js is None:
            raise OSError("not connected")
        ids = [f"{self.spool_id}:{p[0]}:{p[1]}" for p in positions]

        async def go() -> list[Any]:
            futs = [self.js.publish(self.subject, r, headers={"Nats-Msg-Id": i})
                    for r, i in zip(records, ids, strict=True)]
            return list(await asyncio.gather(*futs, return_exceptions=True))
        try:
            acks = self._run(go())
        except Exception as exc:  # a time-out or a closed connection
            raise OSError(f"NATS publish: {exc or type(exc).__name__}") from exc
        for a in acks:
            if isinstance(a, BaseException):
                raise OSError(f"NATS publish: {a or type(a).__name__}")
            if getattr(a, "duplicate", False):
                self.duplicates += 1

    def close(self) -> None:
        if self.nc is not None and self.loop is not None:
            try:
                self.loop.run_until_complete(asyncio.wait_for(self.nc.close(), 2))
            except Exception:  # noqa: BLE001 - closing a broken connection: nothing to do
                pass
        self.nc = self.js = None


@SINKS.register
class NatsSink(SpooledSink):
    """``-o nats://HOST:PORT/SUBJECT``: JetStream publishes, deduplicated by message id
    (module docstring)."""

    name = "nats"
    summary = "NATS JetStream: one message per event, ids from the spool (retries stored once)"
    schemes = ("nats",)

    @classmethod
    def open(cls, target: Any, **options: Any) -> SpooledSink:
        """The sink for the URL ``target``.

        Raises:
            UsageError: a bad URL or option. SinkError: nats-py missing, a file unreadable, or
            the spool unusable.
        """
        _require_nats()
        t = NetTarget(str(target), 4222)
        subject = t.path.strip("/") or DEFAULT_SUBJECT
        if any(c in subject for c in " *>\t") or ".." in subject:
            raise UsageError(f"{t.url}: subject {subject!r} must be a plain subject (no "
                             "wildcards or spaces)")
        encode = event_encoder(t.options.get("format", "jsonl"))
        try:
            dup = float(t.options.get("dup_window", "600"))
            timeout = float(t.options.get("timeout", "5"))
        except ValueError:
            raise UsageError(f"{t.url}: dup_window= and timeout= are seconds") from None
        try:
            nats_connect_options(t)  # credential files readable now, not in the sender
        except SysmonXError as exc:
            raise SinkError(str(exc)) from None
        transport = _JetStreamTransport(t, subject, t.options.get("stream", DEFAULT_STREAM),
                                        "", dup, timeout)
        return cls(transport, encode, t.url, **cls.common_options(t), **options)
