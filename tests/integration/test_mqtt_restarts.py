"""What survives a restart, on a private Mosquitto: QoS 1 on a persistent session is
redelivered (published while the pipeline was down, or received but not acked);
QoS 0 published while the pipeline was down is lost; a broker restart is survived."""

from __future__ import annotations

import json
import uuid

import pytest
from conftest import BackgroundRun, wait_until
from mqtt_helpers import Mosquitto, publish

from sqlstream import Session


@pytest.fixture
def broker(tmp_path):
    directory = tmp_path / "broker"
    directory.mkdir()
    server = Mosquitto(directory).start()
    yield server
    server.stop()


def _rows(path) -> list[int]:
    return sorted(json.loads(line)["id"] for line in path.read_text().splitlines()) if path.exists() else []


def _pipeline(tmp_path, broker, run: int, qos: int, client_id: str) -> BackgroundRun:
    session = Session(base_dir=str(tmp_path), settings={"batch_size": "100", "batch_timeout": "5ms"})
    session.execute(f"""
        CREATE SOURCE s (id BIGINT) WITH (connector = 'mqtt', url = '{broker.url}', topic = 'r/#', qos = {qos},
                                          client_id = '{client_id}', clean_session = false);
        CREATE SINK out FROM s WITH (connector = 'file', path = 'out{run}.jsonl', format = 'json');
    """)
    return BackgroundRun(session)


def _messages(ids) -> list[tuple[str, bytes]]:
    return [("r/x", json.dumps({"id": i}).encode()) for i in ids]


def test_qos1_messages_published_while_the_pipeline_is_down_arrive_after_it_restarts(tmp_path, broker):
    client_id = f"t-{uuid.uuid4().hex[:8]}"
    first = _pipeline(tmp_path, broker, 1, 1, client_id)
    publish(broker.port, _messages(range(0, 200)))
    wait_until(lambda: len(_rows(tmp_path / "out1.jsonl")) >= 200, timeout=20, what="the first 200 rows")
    first.stop()
    publish(broker.port, _messages(range(200, 700)))  # nobody connected: the broker queues them for the session
    second = _pipeline(tmp_path, broker, 2, 1, client_id)
    wait_until(lambda: len(_rows(tmp_path / "out2.jsonl")) >= 500, timeout=20, what="the 500 queued rows")
    second.stop()
    assert _rows(tmp_path / "out1.jsonl") == list(range(200))
    assert _rows(tmp_path / "out2.jsonl") == list(range(200, 700))


def test_qos0_messages_published_while_the_pipeline_is_down_are_lost(tmp_path, broker):
    client_id = f"t-{uuid.uuid4().hex[:8]}"
    first = _pipeline(tmp_path, broker, 1, 0, client_id)
    first.stop()
    publish(broker.port, _messages(range(100)), qos=0)  # while down: QoS 0 is not queued
    second = _pipeline(tmp_path, broker, 2, 0, client_id)
    publish(broker.port, _messages(range(100, 110)), qos=0)
    reader = second.driver.sources[0].reader
    wait_until(lambda: reader.received >= 10, timeout=20, what="10 messages received")
    second.stop()  # QoS 0: a graceful stop drains what was received
    assert _rows(tmp_path / "out2.jsonl") == list(range(100, 110))


def test_a_broker_restart_is_survived_without_losing_qos1_messages(tmp_path, broker):
    client_id = f"t-{uuid.uuid4().hex[:8]}"
    run = _pipeline(tmp_path, broker, 1, 1, client_id)
    publish(broker.port, _messages(range(100)))
    wait_until(lambda: len(_rows(tmp_path / "out1.jsonl")) >= 100, timeout=20, what="100 rows")
    broker.stop()
    broker.start()  # same port; the session was saved by the broker's persistence
    publish(broker.port, _messages(range(100, 300)))
    wait_until(lambda: len(set(_rows(tmp_path / "out1.jsonl"))) >= 300, timeout=30, what="300 rows after the restart")
    run.stop()
    assert sorted(set(_rows(tmp_path / "out1.jsonl"))) == list(range(300))
