"""HTTP(S) output: ``-o http(s)://HOST:PORT/PATH``, NDJSON batches or OTLP/HTTP logs.

Modes (option ``mode=``):

* ``ndjson`` (default): each batch is one ``POST`` of ``Content-Type: application/x-ndjson``,
  one event per line in ``format=`` (``jsonl`` default, ``ecs``, ``linux-xml``, ``xml``), each
  line ending in ``\\n`` (what Elasticsearch-style, Vector, Fluent Bit, Logstash ``http``
  inputs take).
* ``otlp``: OpenTelemetry logs over HTTP with the JSON encoding
  (opentelemetry-proto ``ExportLogsServiceRequest``; OTLP/HTTP specification, "JSON Protobuf
  Encoding"): ``POST`` to the URL's path (``/v1/logs`` when it has none), ``Content-Type:
  application/json``. One ``resourceLogs`` with resource attribute ``service.name``
  ``sysmonx``, one ``scopeLogs`` (scope ``sysmonx``), one ``logRecord`` per event:
  ``timeUnixNano``/``observedTimeUnixNano`` the event's System time, ``severityNumber``/
  ``severityText`` from its level (4 -> 9 INFO, 3 -> 13 WARN, 2 -> 17 ERROR, 1 -> 21 FATAL),
  ``body`` the event line in ``format=``, ``attributes`` ``sysmon.event_id`` (int),
  ``sysmon.record_id`` (int), ``host.name`` (Computer), ``sysmon.provider``, ``sysmon.channel``
  and every EventData field as ``sysmon.FIELD`` (string).

Delivery: a 2xx answer confirms the whole batch (the spool commits it). 408, 429, 5xx and
connection errors are retried (same batch, same order, after a back-off); any other 4xx means the
receiver refuses those events for good: the batch is committed, counted as failed, and the status
and the start of the answer are kept in ``last_error``. A 2xx batch that the receiver answers
after a time-out is sent again (at-least-once: HTTP gives no idempotency key here).

Options: ``mode``, ``format``, ``timeout`` (seconds, default 10), ``ca``/``cert``/``key``/
``insecure`` for https (verification on by default), ``bearer_file=PATH`` (an
``Authorization: Bearer`` token read from a file, so it stays out of process listings),
``header=NAME:VALUE`` (one extra header), and the spool options of
:mod:`sysmonx.sinks.network`.
"""

from __future__ import annotations

import http.client
import ssl
from typing import Any, Callable, Optional, Sequence

import orjson

from ..core.errors import SinkError, UsageError
from ..core.registry import SINKS
from ..event import Event
from .netsyslog import event_encoder
from .network import NetTarget, SpooledSink, Transport
from .spool import Position

__all__ = ["HttpSink", "otlp_record", "otlp_envelope"]

_SEVERITY = {1: (21, "FATAL"), 2: (17, "ERROR"), 3: (13, "WARN"), 4: (9, "INFO"),
             5: (5, "DEBUG")}


def _ns(t: str) -> str:
    """``2024-05-06T07:08:09.123456789Z`` -> Unix nanoseconds as a decimal string (OTLP's JSON
    form of fixed64); ``"0"`` when the time is missing."""
    from datetime import datetime, timezone
    if len(t) != 30 or not t.endswith("Z"):
        return "0"
    try:
        dt = datetime.strptime(t[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return "0"
    return str(int(dt.timestamp()) * 1_000_000_000 + int(t[20:29]))


def _attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def otlp_record(e: Event, body: bytes) -> bytes:
    """One OTLP ``logRecord`` (JSON bytes) of an event whose rendering is ``body``."""
    ts = _ns(e.time_created)
    num, text = _SEVERITY.get(e.level or 4, (9, "INFO"))
    attrs = [_attr("sysmon.event_id", e.event_id)]
    if e.record_id is not None:
        attrs.append(_attr("sysmon.record_id", e.record_id))
    attrs += [_attr("host.name", e.computer), _attr("sysmon.provider", e.provider),
              _attr("sysmon.channel", e.channel)]
    attrs += [_attr(f"sysmon.{k}", v) for k, v in e.data.items()]
    rec = {"timeUnixNano": ts, "observedTimeUnixNano": ts, "severityNumber": num,
           "severityText": text,
           "body": {"stringValue": body.decode("utf-8", "backslashreplace")},
           "attributes": attrs}
    try:
        return orjson.dumps(rec)
    except TypeError:  # lone surrogates in a value
        import json
        return json.dumps(rec, ensure_ascii=True).encode()


def otlp_envelope(records: list[bytes]) -> bytes:
    """The ``ExportLogsServiceRequest`` JSON around ``logRecord`` JSON texts."""
    return (b'{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":'
            b'{"stringValue":"sysmonx"}}]},"scopeLogs":[{"scope":{"name":"sysmonx"},'
            b'"logRecords":[' + b",".join(records) + b"]}]}]}")


class _HttpTransport(Transport):
    """POSTs batches over one kept-alive connection."""

    def __init__(self, t: NetTarget, otlp: bool, context: Optional[ssl.SSLContext],
                 headers: dict[str, str], timeout: float) -> None:
        self.t = t
        self.otlp = otlp
        self.context = context
        self.timeout = timeout
        self.path = t.path or ("/v1/logs" if otlp else "/")
        self.headers = {"Content-Type": "application/json" if otlp else "application/x-ndjson",
                        "User-Agent": "sysmonx", **headers}
        self.conn: Optional[http.client.HTTPConnection] = None
        self._rejected = 0
        self.last_status: Optional[int] = None

    def connect(self) -> None:
        if self.context is not None:
            self.conn = http.client.HTTPSConnection(self.t.host, self.t.port,
                                                    timeout=self.timeout, context=self.context)
        else:
            self.conn = http.client.HTTPConnection(self.t.host, self.t.port,
                                                   timeout=self.timeout)
        self.conn.connect()

    def send(self, records: list[bytes], positions: Sequence[Position] = ()) -> None:
        if self.conn is None:
            raise OSError("not connected")
        body = otlp_envelope(records) if self.otlp else b"\n".join(records) + b"\n"
        self.conn.request("POST", self.path, body=body, headers=self.headers)
        resp = self.conn.getresponse()
        answer = resp.read(512)
        resp.read()
        self.last_status = resp.status
        if 200 <= resp.status < 300:
            return
        why = f"HTTP {resp.status} {resp.reason}: {answer.decode('utf-8', 'replace')[:200]}"
        if resp.status in (408, 429) or resp.status >= 500:
            raise OSError(why)
        self._rejected += len(records)
        self.rejected_error = why

    def rejected(self) -> int:
        n, self._rejected = self._rejected, 0
        return n

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None


@SINKS.register
class HttpSink(SpooledSink):
    """``-o http(s)://...``: NDJSON batches or OTLP/HTTP logs, spooled (module docstring)."""

    name = "http"
    summary = "HTTP(S) POST: NDJSON batches or OTLP/HTTP JSON logs, retried, spooled on disk"
    schemes = ("http", "https")

    @classmethod
    def open(cls, target: Any, **options: Any) -> SpooledSink:
        """The sink for the URL ``target``.

        Raises:
            UsageError: a bad URL or option. SinkError: a CA/certificate/token file cannot be
            read, or the spool cannot be used.
        """
        t = NetTarget(str(target), 443 if str(target).lower().startswith("https") else 80)
        mode = t.options.get("mode", "ndjson")
        if mode not in ("ndjson", "otlp"):
            raise UsageError(f"{t.url}: mode= must be ndjson or otlp")
        render = event_encoder(t.options.get("format", "jsonl"))
        encode: Callable[[Event], bytes] = (
            (lambda e: otlp_record(e, render(e))) if mode == "otlp" else render)
        headers: dict[str, str] = {}
        if "header" in t.options:
            name, sep, value = t.options["header"].partition(":")
            if not sep or not name.strip():
                raise UsageError(f"{t.url}: header= must be NAME:VALUE")
            headers[name.strip()] = value.strip()
        if "bearer_file" in t.options:
            try:
                with open(t.options["bearer_file"]) as f:
                    headers["Authorization"] = "Bearer " + f.read().strip()
            except OSError as exc:
                raise SinkError(f"{t.url}: bearer_file: {exc.strerror or exc}") from exc
        context = None
        if t.scheme == "https":
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
            try:
                if "ca" in t.options:
                    context.load_verify_locations(cafile=t.options["ca"])
                if "cert" in t.options:
                    context.load_cert_chain(t.options["cert"], t.options.get("key") or None)
            except (OSError, ssl.SSLError) as exc:
                raise SinkError(f"{t.url}: {exc}") from exc
            if t.flag("insecure"):
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        try:
            timeout = float(t.options.get("timeout", "10"))
        except ValueError:
            raise UsageError(f"{t.url}: timeout= is not a number") from None
        transport = _HttpTransport(t, mode == "otlp", context, headers, timeout)
        sink = cls(transport, encode, t.url, **cls.common_options(t), **options)
        sink.mode = mode
        if context is not None and t.flag("insecure"):
            sink.label += " (certificate NOT verified)"
        return sink

    mode: str = "ndjson"
