"""Kafka as an interop output: ``-o kafka://BROKER:PORT[,BROKER:PORT...]/TOPIC``.

Built on confluent-kafka (librdkafka), with the idempotent producer (``enable.idempotence``,
``acks=all``): within one producer session librdkafka's retries neither duplicate nor reorder a
message. Each event is one message on TOPIC (default ``sysmonx-events``): value the event in
``format=`` (``jsonl`` default, ``ecs``, ``linux-xml``, ``xml``), key ``SPOOL-ID:SEGMENT:OFFSET``
(the record's place in the sender's disk spool: the same on every retry and after a restart, so
a consumer can drop a message it has seen). A batch is confirmed (the spool commits it) when
every message of it got its delivery report without error; on an error the unconfirmed rest is
produced again after a back-off.

Limits (documented, not hidden):

* Across a restart of SysmonX, or after librdkafka gave up on a message (``message.timeout.ms``,
  default here 30 s), a message the broker did store but whose report was lost is produced again:
  Kafka's idempotence does not span producer sessions without transactions, so the key is what
  identifies the duplicate (at-least-once, ordered per partition).
* No Kafka broker can run on the machine this was built on (no JVM, no registry for a broker
  binary), so it is tested without one: the option mapping, the message key and value, and
  that with no reachable broker events wait in the spool and are reported, never lost
  (``tests/test_kafka_sink.py``). It has not been run against a live broker here.

Options: ``format``, ``timeout`` (seconds a batch may wait for its reports, default 30),
``compression`` (``none``, ``gzip``, ``snappy``, ``lz4``, ``zstd``), ``tls=1`` with
``ca=``/``cert=``/``key=`` (verification on), ``sasl_mechanism=``/``sasl_user=``/
``sasl_password_file=``, and the spool options of :mod:`sysmonx.sinks.network`. Needs the
``confluent-kafka`` package (``pip install 'sysmonx[kafka]'``).
"""

from __future__ import annotations

import time
from typing import Any, Optional, Sequence
from urllib.parse import urlsplit

from ..core.errors import SinkError, UsageError
from ..core.neturl import NetTarget
from ..core.registry import SINKS
from .netsyslog import event_encoder
from .network import SpooledSink, Transport
from .spool import Position, Spool

__all__ = ["KafkaSink", "producer_config", "DEFAULT_TOPIC"]

DEFAULT_TOPIC = "sysmonx-events"


def producer_config(url: str, t: NetTarget) -> dict[str, Any]:
    """The librdkafka configuration of a ``kafka://`` URL.

    Raises:
        UsageError: a bad option. SinkError: a password file cannot be read.
    """
    brokers = urlsplit(url).netloc.rsplit("@", 1)[-1]
    if not brokers:
        raise UsageError(f"{url}: no broker (kafka://HOST:PORT/TOPIC)")
    conf: dict[str, Any] = {
        "bootstrap.servers": ",".join(b if ":" in b else f"{b}:9092"
                                      for b in brokers.split(",")),
        "enable.idempotence": True, "acks": "all", "client.id": "sysmonx",
        "message.timeout.ms": int(float(t.options.get("timeout", "30")) * 1000),
        "linger.ms": 20,
        "log_level": 2,  # librdkafka's own stderr lines: critical only (errors reach the
                         # output's last_error and the loss report)
    }
    comp = t.options.get("compression", "none")
    if comp not in ("none", "gzip", "snappy", "lz4", "zstd"):
        raise UsageError(f"{url}: compression= must be none, gzip, snappy, lz4 or zstd")
    conf["compression.type"] = comp
    tls = t.flag("tls") or "ca" in t.options
    sasl = t.options.get("sasl_mechanism")
    conf["security.protocol"] = ("SASL_SSL" if tls else "SASL_PLAINTEXT") if sasl else \
        ("SSL" if tls else "PLAINTEXT")
    if tls:
        conf["enable.ssl.certificate.verification"] = True
        for opt, key in (("ca", "ssl.ca.location"), ("cert", "ssl.certificate.location"),
                         ("key", "ssl.key.location")):
            if opt in t.options:
                conf[key] = t.options[opt]
    if sasl:
        conf["sasl.mechanism"] = sasl
        if "sasl_user" in t.options:
            conf["sasl.username"] = t.options["sasl_user"]
        if "sasl_password_file" in t.options:
            try:
                with open(t.options["sasl_password_file"]) as f:
                    conf["sasl.password"] = f.read().strip()
            except OSError as exc:
                raise SinkError(f"{url}: sasl_password_file: {exc.strerror or exc}") from exc
    return conf


class _KafkaTransport(Transport):
    """Produces batches and waits for their delivery reports (sender thread)."""

    def __init__(self, conf: dict[str, Any], topic: str, timeout: float) -> None:
        self.conf = conf
        self.topic = topic
        self.timeout = timeout
        self.spool_id = ""
        self.producer: Any = None

    def bind(self, spool: Spool) -> None:
        """Message keys start with the spool's id."""
        self.spool_id = spool.id

    def connect(self) -> None:
        from confluent_kafka import Producer
        self.producer = Producer(self.conf)

    def send(self, records: list[bytes], positions: Sequence[Position] = ()) -> None:
        if self.producer is None:
            raise OSError("not connected")
        errors: list[Optional[Any]] = [None] * len(records)
        done = [0]

        def report(i: int) -> Any:
            def cb(err: Any, msg: Any) -> None:
                errors[i] = err
                done[0] += 1
            return cb
        for i, (r, p) in enumerate(zip(records, positions, strict=True)):
            key = f"{self.spool_id}:{p[0]}:{p[1]}".encode()
            while True:
                try:
                    self.producer.produce(self.topic, r, key, on_delivery=report(i))
                    break
                except BufferError:  # librdkafka's queue is full: let it drain
                    self.producer.poll(0.1)
        deadline = time.monotonic() + self.timeout + 5
        while done[0] < len(records):
            if time.monotonic() > deadline:
                raise OSError(f"Kafka: no delivery report within {self.timeout:.0f} s")
            self.producer.poll(0.1)
        bad = next((e for e in errors if e is not None), None)
        if bad is not None:
            raise OSError(f"Kafka: {bad}")

    def close(self) -> None:
        if self.producer is not None:
            self.producer.flush(1)
        self.producer = None


@SINKS.register
class KafkaSink(SpooledSink):
    """``-o kafka://BROKERS/TOPIC``: idempotent producer, keys from the spool (module
    docstring)."""

    name = "kafka"
    summary = "Kafka (confluent-kafka, idempotent producer; interop, at-least-once across restarts)"
    schemes = ("kafka",)

    @classmethod
    def open(cls, target: Any, **options: Any) -> SpooledSink:
        """The sink for the URL ``target``.

        Raises:
            UsageError: a bad URL or option. SinkError: confluent-kafka missing, a file
            unreadable, or the spool unusable.
        """
        try:
            import confluent_kafka  # noqa: F401
        except ImportError:
            raise SinkError("kafka:// needs the confluent-kafka package (pip install "
                            "'sysmonx[kafka]')") from None
        url = str(target)
        t = NetTarget(url.replace(urlsplit(url).netloc, urlsplit(url).netloc.split(",")[0], 1),
                      9092)
        topic = t.path.strip("/") or DEFAULT_TOPIC
        if not all(c.isalnum() or c in "._-" for c in topic) or len(topic) > 249:
            raise UsageError(f"{url}: topic {topic!r}: letters, digits, '.', '_', '-' only")
        conf = producer_config(url, t)
        transport = _KafkaTransport(conf, topic, conf["message.timeout.ms"] / 1000)
        return cls(transport, event_encoder(t.options.get("format", "jsonl")), url,
                   **cls.common_options(t), **options)
