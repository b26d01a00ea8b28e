"""A NATS JetStream stream as a source: what ``sysmonx collect nats://HOST:PORT/SUBJECT`` reads.

A durable pull consumer (option ``durable=``, default ``sysmonx-collect``) on the stream
(``stream=``, default ``SYSMONX``) that the ``nats://`` output fills: every collector started
with the same durable name shares the consumer, so JetStream hands each message to one of them
(work is split, nothing is given to two while they acknowledge in time). Messages are fetched in
batches (``batch=``, default 256); each payload must be a SysmonX JSON line (the output's
default ``format=jsonl``), rebuilt into the exact event; a payload that is not is reported as a
:class:`~sysmonx.core.errors.ReadError` (offset kind ``stream sequence``) and terminated (never
redelivered).

Acknowledgement: a batch is acknowledged when the loop asks for the next item after its last
event, i.e. after every event of the batch went through the stages and the outputs, and after
``before_ack`` (the collect command flushes the outputs there). A collector that stops or dies
before that leaves the batch unacknowledged: JetStream gives it again (to this or another
collector) after ``ack_wait`` (30 s): nothing is lost; an output that wrote a batch and died
before the acknowledgement sees it twice (at-least-once from stream to output).

Options of the URL: ``durable``, ``stream``, ``batch``, the connection options of
:func:`sysmonx.core.neturl.nats_connect_options`. Needs nats-py.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Callable, Iterator, Optional

import orjson

from ..core.errors import ReadError, SourceUnavailable, SysmonXError, UsageError
from ..core.neturl import NetTarget, nats_connect_options
from ..core.registry import SOURCES
from ..event import Event
from ..interfaces import Source
from .jsonl import event_from_object

__all__ = ["NatsStreamSource"]


@SOURCES.register
class NatsStreamSource(Source):
    """Events from a JetStream durable pull consumer (module docstring).

    Args:
        url: ``nats://HOST:PORT/SUBJECT?durable=...&stream=...&batch=...``.
        max_events: stop after this many events (``None``: until :meth:`stop`).
        idle_exit: stop when no message came for this many seconds (``None``: never).

    Attributes:
        received, acked: messages fetched / acknowledged.
        before_ack: called before each acknowledgement (flush the outputs).

    Raises:
        UsageError: a bad URL.
    """

    name = "nats"
    summary = "a NATS JetStream stream (sysmonx collect): durable pull consumer, shared work"
    live = True

    def __init__(self, url: str, max_events: Optional[int] = None,
                 idle_exit: Optional[float] = None) -> None:
        self.t = NetTarget(url, 4222)
        self.subject = self.t.path.strip("/") or "sysmonx.events"
        self.durable = self.t.options.get("durable", "sysmonx-collect")
        self.stream = self.t.options.get("stream", "SYSMONX")
        try:
            self.batch = int(self.t.options.get("batch", "256"))
        except ValueError:
            raise UsageError(f"{url}: batch= is not a number") from None
        self.max_events = max_events
        self.idle_exit = idle_exit
        self.received = 0
        self.acked = 0
        self.before_ack: Optional[Callable[[], None]] = None
        self._stop = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._nc: Any = None
        self._sub: Any = None
        self._pending: list[Any] = []
        self.last_error: Optional[str] = None

    @classmethod
    def check_available(cls) -> None:
        """Raises SourceUnavailable without nats-py."""
        try:
            import nats  # noqa: F401
        except ImportError:
            raise SourceUnavailable("sysmonx collect needs the nats-py package "
                                    "(pip install 'sysmonx[nats]')") from None

    def _run(self, coro: Any, timeout: float = 10.0) -> Any:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def _connect(self) -> None:
        import nats
        from nats.js.api import ConsumerConfig

        async def go() -> None:
            self._nc = await nats.connect(**nats_connect_options(self.t))
            js = self._nc.jetstream()
            self._sub = await js.pull_subscribe(
                self.subject, durable=self.durable, stream=self.stream,
                config=ConsumerConfig(ack_wait=30, max_ack_pending=max(4 * self.batch, 1000)))
        self._run(go())

    def open(self) -> None:
        """Connect and bind the durable consumer.

        Raises:
            SourceUnavailable: nats-py missing, or the server or the stream cannot be reached.
        """
        self.check_available()
        try:
            self._connect()
        except (SysmonXError, OSError, asyncio.TimeoutError) as exc:
            raise SourceUnavailable(f"{self.t.url}: {exc}") from exc
        except Exception as exc:  # nats-py's own errors (no stream, refused): a clear message
            raise SourceUnavailable(f"{self.t.url}: {type(exc).__name__}: {exc}") from exc

    def _ack_pending(self) -> None:
        if not self._pending:
            return
        if self.before_ack is not None:
            self.before_ack()
        msgs, self._pending = self._pending, []

        async def go() -> None:
            await asyncio.gather(*(m.ack() for m in msgs))
        self._run(go())
        self.acked += len(msgs)

    def events(self) -> Iterator[Optional[Event]]:
        """Events as they come; ``None`` while the stream is quiet (the loop ticks)."""
        quiet_since = time.monotonic()
        while not self._stop:
            try:
                self._ack_pending()
                if self.max_events is not None and self.received >= self.max_events:
                    return
                want = self.batch if self.max_events is None else \
                    min(self.batch, self.max_events - self.received)

                async def fetch(n: int) -> list[Any]:
                    return list(await self._sub.fetch(n, timeout=1.0))
                try:
                    msgs = self._run(fetch(want))
                except (asyncio.TimeoutError, TimeoutError):
                    msgs = []
                except Exception as exc:  # nats-py's fetch time-out type varies by version
                    if "timeout" not in type(exc).__name__.lower():
                        raise
                    msgs = []
            except Exception as exc:  # noqa: BLE001 - a broken connection (nats-py's own
                # types): say it, reconnect, go on
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._pending = []  # not acknowledged: JetStream gives them again
                self._drop()
                time.sleep(1.0)
                try:
                    self._connect()
                except Exception as again:  # noqa: BLE001 - still away: again next round
                    self.last_error = f"{type(again).__name__}: {again}"
                yield None
                continue
            if not msgs:
                if self.idle_exit is not None and time.monotonic() - quiet_since > self.idle_exit:
                    return
                yield None
                continue
            quiet_since = time.monotonic()
            self._pending = msgs
            for m in msgs:
                self.received += 1
                seq = getattr(getattr(m, "metadata", None), "sequence", None)
                sseq = getattr(seq, "stream", None)
                try:
                    try:
                        obj = orjson.loads(m.data)
                    except orjson.JSONDecodeError:
                        obj = json.loads(m.data)
                    event = event_from_object(obj, (self.t.url.split("?", 1)[0], sseq))
                except (ValueError, TypeError) as exc:
                    self.on_error(ReadError(self.subject, sseq, "stream sequence",
                                            f"not a SysmonX JSON line: {exc}"))
                    continue
                yield event

    def now_ns(self) -> Optional[int]:
        """Wall-clock UTC ns (ticks: correlation windows close on time)."""
        return time.time_ns()

    def stop(self) -> None:
        """End :meth:`events` soon (after the current fetch)."""
        self._stop = True

    def _drop(self) -> None:
        if self._nc is not None and self._loop is not None:
            try:
                self._loop.run_until_complete(asyncio.wait_for(self._nc.close(), 2))
            except Exception:  # noqa: BLE001 - closing a broken connection: nothing to do
                pass
        self._nc = self._sub = None

    def close(self) -> None:
        """Disconnect. A batch not acknowledged yet (the loop stopped inside it, or an output
        failed) stays with JetStream and is given again."""
        self._drop()
        if self._loop is not None:
            self._loop.close()
            self._loop = None
