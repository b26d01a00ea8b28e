"""Kafka output (sysmonx.sinks.kafka) without a broker (none can run here): the producer
configuration from the URL, message keys and values, and that with no reachable broker the
events wait in the spool and are reported, never lost or counted as sent."""

from __future__ import annotations

import pytest

from sysmonx.core.errors import SinkError, UsageError
from sysmonx.core.neturl import NetTarget
from sysmonx.sinks.outputs import open_url_output

from test_netsyslog import free_port, make_event

kafka = pytest.importorskip("confluent_kafka", reason="confluent-kafka not installed "
                            "(pip install 'sysmonx[kafka]')")


def test_producer_configuration_from_the_url(tmp_path):
    from sysmonx.sinks.kafka import producer_config
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    url = (f"kafka://b1:9093,b2/events?tls=1&ca=/etc/ca.pem&sasl_mechanism=SCRAM-SHA-512"
           f"&sasl_user=sysmonx&sasl_password_file={pw}&compression=zstd&timeout=5")
    conf = producer_config(url, NetTarget(url.replace("b1:9093,b2", "b1:9093"), 9092))
    assert conf["bootstrap.servers"] == "b1:9093,b2:9092"
    assert conf["enable.idempotence"] is True and conf["acks"] == "all"
    assert conf["security.protocol"] == "SASL_SSL" and conf["ssl.ca.location"] == "/etc/ca.pem"
    assert conf["enable.ssl.certificate.verification"] is True
    assert conf["sasl.password"] == "s3cret" and conf["compression.type"] == "zstd"
    assert conf["message.timeout.ms"] == 5000
    plain = producer_config("kafka://h/t", NetTarget("kafka://h/t", 9092))
    assert plain["security.protocol"] == "PLAINTEXT"


def test_no_broker_events_wait_in_the_spool(tmp_path):
    port = free_port()  # nothing listens: librdkafka cannot deliver
    sink = open_url_output(f"kafka://127.0.0.1:{port}/sysmonx-events?timeout=1&drain=3"
                           f"&spool={tmp_path / 'sp'}")
    sink.BACKOFF = (0.05, 0.2)
    for i in range(1, 51):
        sink.write(make_event(i))
    with pytest.raises(SinkError, match="50 events wait in the spool"):
        sink.close()
    assert sink.stats.sent == 0 and "Kafka" in (sink.last_error or "")
    # they are still there for the next run
    again = open_url_output(f"kafka://127.0.0.1:{port}/sysmonx-events?timeout=1&drain=0.1"
                            f"&spool={tmp_path / 'sp'}")
    assert again.spool.recovered == 50
    with pytest.raises(SinkError):
        again.close()


def test_messages_keys_and_values(tmp_path):
    from sysmonx.sinks.kafka import KafkaSink, _KafkaTransport
    from sysmonx.sinks.netsyslog import event_encoder
    produced = []

    class FakeProducer:  # what librdkafka would be given; reports success
        def produce(self, topic, value, key, on_delivery):
            produced.append((topic, key, value))
            on_delivery(None, None)

        def poll(self, t):
            return 0

        def flush(self, t):
            return 0

    class Recording(_KafkaTransport):
        def connect(self):
            self.producer = FakeProducer()

    tr = Recording({}, "t1", 5)
    sink = KafkaSink(tr, event_encoder("ecs"), "kafka://x/t1", spool_dir=str(tmp_path / "sp"))
    for i in range(1, 4):
        sink.write(make_event(i))
    sink.close()
    assert [p[0] for p in produced] == ["t1"] * 3
    keys = [p[1].decode() for p in produced]
    assert all(k.startswith(sink.spool.id + ":") for k in keys) and len(set(keys)) == 3
    assert b'"event":{"kind":"event","code":"11"' in produced[0][2]
    assert sink.stats.sent == 3


def test_bad_options():
    for url in ("kafka://h/t?compression=brotli", "kafka://h/bad topic"):
        with pytest.raises(UsageError):
            open_url_output(url)
