"""MQTT ingest: msgs/s through sqlstream (decode included) vs a bare paho subscriber.

Both read the same N QoS 1 messages (~100-byte JSON sensor readings) from the same
private Mosquitto, queued beforehand on a persistent session, so each measures how
fast a consumer drains the broker, not how fast a publisher fills it:

1. a consumer's session is created (subscribe, disconnect);
2. N messages are published at QoS 1 (the broker queues them for the session);
3. the consumer connects and the clock runs until it has N messages (sqlstream: N
   rows decoded and written to a counting sink, acks sent after the sink).

    python benchmarks/mqtt_ingest.py --messages 200000

Reports msgs/s of each and the ratio (target: sqlstream >= 0.8x bare paho).
"""

from __future__ import annotations

import argparse
import getpass
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sqlstream import Session
from sqlstream.connectors import SinkConnector, SinkWriter, register_sink

SENSOR_COLUMNS = "id BIGINT, sensor VARCHAR, ts TIMESTAMP, temp DOUBLE, ok BOOLEAN, site VARCHAR"


def payload(i: int) -> bytes:
    return (
        b'{"id":%d,"sensor":"s-%04d","ts":"2024-01-01T00:%02d:%02d.%03d","temp":%d.%02d,"ok":true,"site":"plant-%d"}'
        % (i, i % 1000, (i // 60000) % 60, (i // 1000) % 60, i % 1000, 15 + i % 20, i % 100, i % 8)
    )


class _Counter(SinkWriter):
    def write(self, batch) -> None:
        CountSink.rows += batch.num_rows
        if CountSink.rows >= CountSink.target:
            CountSink.done.set()


@register_sink
class CountSink(SinkConnector):
    """``connector = 'mqtt_bench_count'``: counts rows."""

    name = "mqtt_bench_count"
    rows = 0
    target = 0
    done = threading.Event()

    def open(self, schema, ctx):
        return _Counter()


class Broker:
    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="sqlstream-mqtt-bench-"))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        config = self.directory / "mosquitto.conf"
        config.write_text(f"user {getpass.getuser()}\nlistener {self.port} 127.0.0.1\nallow_anonymous true\n"
                          "max_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 0\n")
        self.process = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("mosquitto did not start") from None
                time.sleep(0.02)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def _client(client_id: str, persistent: bool, port: int, on_message=None) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)
    if on_message:
        client.on_message = on_message
    properties = Properties(PacketTypes.CONNECT)
    properties.ReceiveMaximum = 65535
    if persistent:
        properties.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, clean_start=not persistent, properties=properties)
    return client


def prepare(port: int, client_id: str, topic: str, n: int) -> None:
    """Create the consumer's session and queue ``n`` messages for it."""
    subscribed = threading.Event()
    consumer = _client(client_id, True, port)
    consumer.on_subscribe = lambda *a: subscribed.set()
    consumer.loop_start()
    consumer.subscribe(topic, 1)
    assert subscribed.wait(10)
    consumer.disconnect()
    consumer.loop_stop()
    publisher = _client(f"pub-{uuid.uuid4().hex[:8]}", False, port)
    publisher.loop_start()
    deadline = time.monotonic() + 10
    while not publisher.is_connected() and time.monotonic() < deadline:
        time.sleep(0.01)  # waiting for CONNACK, with a deadline
    for start in range(0, n, 50_000):  # message ids are 16-bit: wait before reusing them
        infos = [publisher.publish(topic, payload(i), 1) for i in range(start, min(n, start + 50_000))]
        for info in infos:
            info.wait_for_publish(60)
    publisher.disconnect()
    publisher.loop_stop()


def bare_paho(port: int, client_id: str, n: int) -> float:
    count = [0]
    done = threading.Event()

    def on_message(client, userdata, message) -> None:
        count[0] += 1
        if count[0] >= n:
            done.set()

    started = time.perf_counter()
    client = _client(client_id, True, port, on_message)
    client.loop_start()
    assert done.wait(300), f"bare paho: {count[0]} of {n}"
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return n / elapsed


def through_sqlstream(port: int, client_id: str, topic: str, n: int) -> float:
    CountSink.rows, CountSink.target = 0, n
    CountSink.done.clear()
    session = Session(settings={"batch_size": "8192", "batch_timeout": "10ms"})
    session.execute(f"""
        CREATE SOURCE readings ({SENSOR_COLUMNS})
        WITH (connector = 'mqtt', url = 'mqtt://127.0.0.1:{port}', topic = '{topic}', qos = 1,
              client_id = '{client_id}', clean_session = false);
        CREATE SINK counted FROM readings WITH (connector = 'mqtt_bench_count');
    """)
    started = time.perf_counter()
    driver = session.build(session.pending_sinks())
    thread = threading.Thread(target=driver.run, daemon=True)
    thread.start()
    assert CountSink.done.wait(300), f"sqlstream: {CountSink.rows} of {n}"
    elapsed = time.perf_counter() - started
    driver.stop()
    thread.join(30)
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    broker = Broker()
    try:
        results: dict[str, list[float]] = {"paho": [], "sqlstream": []}
        for _ in range(args.rounds):
            for name in ("paho", "sqlstream"):
                client_id, topic = f"bench-{uuid.uuid4().hex[:8]}", f"bench/{uuid.uuid4().hex[:8]}"
                prepare(broker.port, client_id, topic, args.messages)
                rate = (bare_paho(broker.port, client_id, args.messages) if name == "paho"
                        else through_sqlstream(broker.port, client_id, topic, args.messages))
                results[name].append(rate)
                print(f"{name:>10}: {rate:>10,.0f} msgs/s", flush=True)
        paho, ours = max(results["paho"]), max(results["sqlstream"])
        print(f"best of {args.rounds}: bare paho {paho:,.0f} msgs/s, sqlstream {ours:,.0f} msgs/s, "
              f"ratio {ours / paho:.2f}x ({args.messages:,} QoS 1 messages, ~100 B JSON)")
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
