"""An MQTT pipeline through the CLI: messages queued on a persistent session before
the process starts are read, filtered and published to templated topics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid

import paho.mqtt.client as mqtt
import pytest
from conftest import wait_until
from mqtt_helpers import SHARED_URL, Collector, broker_up, publish, unique_prefix
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

# CI machines run Mosquitto: there a missing broker fails the tests instead of skipping them
pytestmark = pytest.mark.skipif(not broker_up() and not os.environ.get("CI"), reason="no MQTT broker at 127.0.0.1:1883")


def _create_session(client_id: str, topic: str) -> None:
    """Subscribe as ``client_id`` with a persistent session, then leave: the broker queues for it."""
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.on_subscribe = lambda *args: subscribed.set()
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 300
    client.connect("127.0.0.1", 1883, clean_start=False, properties=properties)
    client.loop_start()
    client.subscribe(topic, 1)
    assert subscribed.wait(10)
    client.disconnect()
    client.loop_stop()


def test_a_pipeline_file_runs_through_the_cli(tmp_path):
    prefix, client_id = unique_prefix(), f"cli-{uuid.uuid4().hex[:8]}"
    _create_session(client_id, f"{prefix}/in/+")
    publish(1883, [(f"{prefix}/in/m{i % 4}", json.dumps({"machine": i % 4, "temp": 80 + i % 30}).encode())
                   for i in range(300)])
    pipeline = tmp_path / "p.sql"
    pipeline.write_text(f"""
        CREATE SOURCE r (machine BIGINT, temp DOUBLE, _topic VARCHAR)
        WITH (connector = 'mqtt', url = '{SHARED_URL}', topic = '{prefix}/in/+', qos = 1,
              client_id = '{client_id}', clean_session = false, session_expiry = '5m');
        CREATE SINK hot AS SELECT machine, temp, _topic AS src FROM r WHERE temp >= 100
        WITH (connector = 'mqtt', url = '{SHARED_URL}', topic = '{prefix}/hot/{{machine}}', qos = 1);
    """)
    collector = Collector(1883, f"{prefix}/hot/#")
    expected = sum(1 for i in range(300) if 80 + i % 30 >= 100)
    process = subprocess.Popen([sys.executable, "-m", "sqlstream.cli.main", "run", str(pipeline), "--no-udfs"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: len(collector) >= expected or process.poll() is not None, timeout=30,
                   what=f"{expected} hot readings")
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        collector.close()
        if process.poll() is None:
            process.kill()
    assert process.returncode in (0, 130), stderr.decode()  # (a graceful stop)
    assert "r: 300 rows in" in stderr.decode()
    assert len(collector) == expected
    for topic, payload in collector.messages:
        row = json.loads(payload)
        assert topic == f"{prefix}/hot/{row['machine']}" and row["temp"] >= 100
        assert row["src"] == f"{prefix}/in/m{row['machine']}"
