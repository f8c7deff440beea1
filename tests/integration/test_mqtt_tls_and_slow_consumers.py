"""MQTT over TLS (a private Mosquitto with a TLS listener and a CA made here), and a
slow pipeline under a fast publisher: at QoS 1 nothing is lost and what the source
holds stays under ``max_buffered``; at QoS 0 what is dropped is counted and reported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import BackgroundRun, wait_until
from mqtt_helpers import MOSQUITTO, Collector, Mosquitto, publish, unique_prefix

from sqlstream import Session
from sqlstream.connectors import SinkConnector, SinkWriter, register_sink
from sqlstream.errors import ConnectorError

pytestmark = [
    pytest.mark.skipif(not os.path.exists(MOSQUITTO) and not os.environ.get("CI"), reason="no mosquitto binary"),
    pytest.mark.timeout(120),
]

OPENSSL = shutil.which("openssl")


# -- certificates (made with the openssl CLI) ---------------------------------------------------


def _openssl(*args: str) -> None:
    subprocess.run([OPENSSL, *args], check=True, capture_output=True)


def _certificates(directory: Path, label: str) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1/localhost signed by it, as PEM files."""
    if OPENSSL is None:
        pytest.fail("the openssl CLI is needed to make test certificates") if os.environ.get("CI") else \
            pytest.skip("no openssl CLI")
    p = {name: directory / f"{label}-{name}" for name in ("ca.pem", "ca.key", "server.pem", "server.key",
                                                            "server.csr", "ext.cnf")}
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", str(p["ca.key"]), "-out", str(p["ca.pem"]), "-days", "1",
             "-subj", f"/CN=sqlstream test CA {label}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", *ec, "-keyout", str(p["server.key"]), "-out", str(p["server.csr"]), "-subj", "/CN=localhost")
    p["ext.cnf"].write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", str(p["server.csr"]), "-CA", str(p["ca.pem"]), "-CAkey", str(p["ca.key"]),
             "-CAcreateserial", "-out", str(p["server.pem"]), "-days", "1", "-extfile", str(p["ext.cnf"]))
    return {"ca": p["ca.pem"], "cert": p["server.pem"], "key": p["server.key"]}


@pytest.fixture
def tls_broker(tmp_path):
    (tmp_path / "broker").mkdir()
    certs = _certificates(tmp_path, "good")
    broker = Mosquitto(tmp_path / "broker", persistence=False)
    # the lines after 'listener PORT' configure that listener: it speaks TLS only
    broker.config.write_text(broker.config.read_text() + f"cafile {certs['ca']}\ncertfile {certs['cert']}\n"
                                                          f"keyfile {certs['key']}\n")
    broker.start()
    yield broker, certs
    broker.stop()


def _session(tmp_path, **settings) -> Session:
    return Session(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"), settings=settings)


def _tls_publish(port: int, ca: Path, messages: list[tuple[str, bytes]]) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(ca))
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for info in [client.publish(topic, payload, 1) for topic, payload in messages]:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_source_and_sink_over_tls(tmp_path, tls_broker):
    broker, certs = tls_broker
    prefix = unique_prefix()
    url = f"mqtts://127.0.0.1:{broker.port}"
    session = _session(tmp_path, batch_size="64", batch_timeout="5ms")
    session.execute(f"""
        CREATE SOURCE r (id BIGINT) WITH (connector = 'mqtt', url = '{url}', ca_file = '{certs['ca']}',
                                          topic = '{prefix}/in', qos = 1);
        CREATE SINK echo AS SELECT id * 10 AS id10 FROM r
          WITH (connector = 'mqtt', url = '{url}', ca_file = '{certs['ca']}', topic = '{prefix}/out', qos = 1);
    """)
    got: list[bytes] = []
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    listener = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    listener.tls_set(ca_certs=str(certs["ca"]))
    listener.on_message = lambda c, u, m: got.append(m.payload)
    listener.connect("127.0.0.1", broker.port)
    listener.loop_start()
    listener.subscribe(f"{prefix}/out", 1)
    run = BackgroundRun(session)
    try:
        _tls_publish(broker.port, certs["ca"], [(f"{prefix}/in", json.dumps({"id": i}).encode()) for i in range(50)])
        wait_until(lambda: len(got) >= 50, timeout=30, what="50 messages back over TLS")
        run.stop()
    finally:
        listener.disconnect()
        listener.loop_stop()
    assert sorted(json.loads(p)["id10"] for p in got) == [i * 10 for i in range(50)]


def test_a_broker_certificate_from_another_ca_is_a_clear_error(tmp_path, tls_broker):
    broker, _ = tls_broker
    other = _certificates(tmp_path, "other")
    session = _session(tmp_path)
    session.execute(f"CREATE SOURCE r (id BIGINT) WITH (connector = 'mqtt', url = 'mqtts://127.0.0.1:{broker.port}', "
                    f"ca_file = '{other['ca']}', topic = 't', connect_timeout = '5s')")
    started = time.monotonic()
    with pytest.raises(ConnectorError) as caught:
        list(session.query("SELECT id FROM r"))
    assert time.monotonic() - started < 4, "a certificate the CA did not sign is not retried until the timeout"
    assert caught.value.message.startswith(
        f"source 'r': the TLS certificate of MQTT broker 127.0.0.1:{broker.port} is not trusted: ")
    assert "certificate" in caught.value.message and "ca_file" in caught.value.hint


def test_a_missing_ca_file_is_a_clear_error(tmp_path, tls_broker):
    broker, _ = tls_broker
    session = _session(tmp_path)
    missing = tmp_path / "nope.pem"
    session.execute(f"CREATE SOURCE r (id BIGINT) WITH (connector = 'mqtt', url = 'mqtts://127.0.0.1:{broker.port}', "
                    f"ca_file = '{missing}', topic = 't')")
    with pytest.raises(ConnectorError, match=r"^.*source 'r': cannot set up TLS: .*No such file"):
        list(session.query("SELECT id FROM r"))


# -- slow consumers -----------------------------------------------------------------------------


class _SlowWriter(SinkWriter):
    def __init__(self, rows: list[int], delay_s: float):
        self.rows, self.delay_s = rows, delay_s

    def write(self, batch: pa.RecordBatch) -> None:
        time.sleep(self.delay_s)  # the slow destination this test is about
        self.rows.extend(batch.column(0).to_pylist())


SLOW_ROWS: dict[str, list[int]] = {}


@register_sink
class _SlowSink(SinkConnector):
    name = "slow_test_sink"

    def open(self, schema, ctx):
        return _SlowWriter(SLOW_ROWS.setdefault(self.sink_name, []), 0.02)


def _slow_pipeline(tmp_path, broker: Mosquitto, prefix: str, qos: int, max_buffered: int) -> Session:
    session = _session(tmp_path, batch_size="50", batch_timeout="1ms")
    sink = f"slow_{prefix.rsplit('/', 1)[1]}"
    SLOW_ROWS[sink] = []
    session.execute(f"""
        CREATE SOURCE r (id BIGINT) WITH (connector = 'mqtt', url = '{broker.url}', topic = '{prefix}/in',
                                          qos = {qos}, max_buffered = {max_buffered});
        CREATE SINK {sink} AS SELECT id FROM r WITH (connector = 'slow_test_sink');
    """)
    return session


def test_qos1_slow_pipeline_loses_nothing_and_holds_at_most_max_buffered(tmp_path):
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker", persistence=False).start()  # max_queued_messages 100000
    prefix = unique_prefix()
    n = 5000
    session = _slow_pipeline(tmp_path, broker, prefix, qos=1, max_buffered=200)
    sink = f"slow_{prefix.rsplit('/', 1)[1]}"
    run = BackgroundRun(session)
    try:
        publish(broker.port, [(f"{prefix}/in", json.dumps({"id": i}).encode()) for i in range(n)])
        reader = run.driver.sources[0].reader
        wait_until(lambda: len(SLOW_ROWS[sink]) >= n, timeout=60, what=f"{n} rows through the slow sink")
        status = reader.status()
        summary = run.stop()
    finally:
        broker.stop()
    assert sorted(SLOW_ROWS[sink]) == list(range(n))  # nothing lost (QoS 1: the broker waits for acks)
    assert 0 < status["buffered_high_water"] <= 200  # what the source held stayed bounded
    assert status["paused_reading"] > 0  # by not reading the socket while the buffer was full
    assert status["slow_consumer_drops"] == 0
    assert summary.sources["r"]["problems"] == []


def test_qos0_slow_pipeline_counts_and_reports_what_it_drops(tmp_path):
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker", persistence=False).start()
    prefix = unique_prefix()
    n = 5000
    session = _slow_pipeline(tmp_path, broker, prefix, qos=0, max_buffered=100)
    sink = f"slow_{prefix.rsplit('/', 1)[1]}"
    run = BackgroundRun(session)
    collector = Collector(broker.port, f"{prefix}/in", qos=0)  # what the broker sent (a fast subscriber)
    try:
        publish(broker.port, [(f"{prefix}/in", json.dumps({"id": i}).encode()) for i in range(n)], qos=0)
        reader = run.driver.sources[0].reader
        wait_until(lambda: len(collector) >= n, timeout=30, what="the publish")
        wait_until(lambda: reader.received + reader.dropped >= n and not reader.buffer, timeout=60,
                   what="the source to take or drop every message")
        summary = run.stop()
    finally:
        collector.close()
        broker.stop()
    status = reader.status()
    assert status["slow_consumer_drops"] > 0
    assert status["buffered_high_water"] <= 100
    assert len(SLOW_ROWS[sink]) + status["slow_consumer_drops"] == n  # each message: through, or counted
    problems = summary.sources["r"]["problems"]
    assert f"{status['slow_consumer_drops']:,} QoS 0 messages dropped: slow consumer (more than 100 waiting for the " \
           "pipeline)" in problems
    assert f"{status['slow_consumer_drops']:,} QoS 0 messages dropped" in summary.line()
