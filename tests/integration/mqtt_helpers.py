"""MQTT test helpers: a paho publisher/collector, and a private Mosquitto broker.

Tests use the shared broker at 127.0.0.1:1883 with a unique topic prefix each;
:class:`Mosquitto` starts a broker of its own (``/usr/sbin/mosquitto``) on a free
port, for tests that stop and restart the broker.
"""

from __future__ import annotations

import getpass
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

__all__ = ["SHARED_URL", "Collector", "publish", "Mosquitto", "unique_prefix", "broker_up"]

SHARED_URL = "mqtt://127.0.0.1:1883"
MOSQUITTO = "/usr/sbin/mosquitto"


def broker_up(port: int = 1883) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def unique_prefix() -> str:
    return f"sqlstream-test/{uuid.uuid4().hex[:10]}"


def _client(client_id: str = "") -> mqtt.Client:
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)


def publish(port: int, messages: list[tuple[str, bytes]], qos: int = 1, retain: bool = False) -> None:
    """Publish and wait until the broker acknowledged every message."""
    client = _client()
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos, retain) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


class Collector:
    """Subscribes to a topic filter and keeps what arrives: ``messages`` [(topic, payload)]."""

    def __init__(self, port: int, topic: str, qos: int = 1):
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = _client()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(topic, qos)
        assert self.subscribed.wait(10), "subscription not confirmed"

    def _on_message(self, client, userdata, message) -> None:
        with self.lock:
            self.messages.append((message.topic, message.payload))

    def __len__(self) -> int:
        with self.lock:
            return len(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Mosquitto:
    """A private broker on a free port, persistent sessions kept in memory across
    connections (not across a broker restart unless ``persistence``)."""

    def __init__(self, directory: Path, persistence: bool = True):
        self.directory = Path(directory)
        self.port = _free_port()
        self.config = self.directory / "mosquitto.conf"
        # "user": started as root, mosquitto would switch to its own user, which cannot write here
        lines = [f"user {getpass.getuser()}", f"listener {self.port} 127.0.0.1", "allow_anonymous true", "max_queued_messages 100000"]
        if persistence:
            lines += ["persistence true", f"persistence_location {self.directory}/", "autosave_interval 1"]
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> "Mosquitto":
        log = open(self.directory / "mosquitto.log", "ab")
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while not broker_up(self.port):
            assert self.process.poll() is None, (self.directory / "mosquitto.log").read_text()
            assert time.monotonic() < deadline, "mosquitto did not start"
            time.sleep(0.02)  # waiting for the broker's port, with a deadline
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None
