"""One paho-mqtt client per source or sink: options → a connected client on its own thread.

paho runs its network loop on a thread (``loop_start``); callbacks run there. The
client connects with MQTT 5 unless ``protocol = '3.1.1'``. A persistent session
(``clean_session = false``) needs a ``client_id``; with MQTT 5 the session outlives
the connection for ``session_expiry`` (the broker keeps subscriptions and queues
QoS 1/2 messages meanwhile). paho reconnects by itself after an outage.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
import uuid
from typing import Any, Callable
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sqlstream.errors import ConnectorError

__all__ = ["MqttClient", "LOG", "parse_url", "DEFAULT_URL"]

LOG = logging.getLogger("sqlstream.connectors.mqtt")
DEFAULT_URL = "mqtt://127.0.0.1:1883"
_RECEIVE_MAXIMUM = 65_535  # QoS 1/2 messages the broker may send before our acks (MQTT 5)


def parse_url(url: str) -> tuple[str, int, bool] | None:
    """``mqtt://host:port`` (or ``mqtts://`` for TLS) → (host, port, tls); None if not one."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
        return None
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        return None
    return parts.hostname, port, tls


class MqttClient:
    """A paho client configured from a source's or sink's options, connected on ``start``."""

    def __init__(self, config: dict[str, Any], owner: str, on_message: Callable | None = None,
                 subscribe: tuple[str, int] | None = None, manual_ack: bool = False):
        self.config = config
        self.owner = owner
        host, port, tls = parse_url(config["url"])
        self.host, self.port = host, port
        self.v5 = config["protocol"] == "5"
        self.clean = config["clean_session"]
        self.subscription = subscribe
        self.generation = 0  # connections so far: message ids are valid within one
        self.disconnects = 0
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.failure: str | None = None
        self.closing = False
        client_id = config["client_id"] or f"sqlstream-{uuid.uuid4().hex[:12]}"
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=None if self.v5 else self.clean,
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            manual_ack=manual_ack,
        )
        self.client.max_inflight_messages_set(config.get("max_inflight") or 1000)
        self.client.max_queued_messages_set(0)
        if config["username"] is not None:
            self.client.username_pw_set(config["username"], config["password"])
        if tls or config["tls"]:
            try:
                self.client.tls_set(
                    ca_certs=config["ca_file"], certfile=config["cert_file"], keyfile=config["key_file"],
                    cert_reqs=ssl.CERT_NONE if config["tls_insecure"] else ssl.CERT_REQUIRED,
                )
            except (OSError, ssl.SSLError, ValueError) as error:  # a missing or unreadable file, a bad PEM
                raise ConnectorError(
                    f"{owner}: cannot set up TLS: {error}",
                    hint="check options 'ca_file', 'cert_file' and 'key_file' (PEM files this process can read)",
                ) from error
            self.client.tls_insecure_set(bool(config["tls_insecure"]))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        if on_message is not None:
            self.client.on_message = on_message

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.failure = f"the broker refused the connection: {reason_code}"
            self.connected.set()
            return
        self.generation += 1
        if self.subscription is not None:
            if flags.session_present:  # the broker kept the subscription (and queued messages for it)
                self.subscribed.set()
            topic, qos = self.subscription
            client.subscribe(topic, qos)
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected.is_set() and self.failure is None and not self.closing:
            self.disconnects += 1
            LOG.warning("%s: disconnected from %s:%d (%s); reconnecting", self.owner, self.host, self.port, reason_code)

    def start(self) -> None:
        """Connect (waiting up to ``connect_timeout``) and start the network thread."""
        properties = None
        kwargs: dict[str, Any] = {}
        if self.v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.ReceiveMaximum = min(_RECEIVE_MAXIMUM, self.config.get("max_buffered") or _RECEIVE_MAXIMUM)
            if not self.clean:
                properties.SessionExpiryInterval = int(self.config["session_expiry"] // 1_000_000)
            kwargs = {"clean_start": self.clean, "properties": properties}
        timeout_s = self.config["connect_timeout"] / 1e6
        deadline = time.monotonic() + timeout_s
        self.client.reconnect_delay_set(0.05, 2)
        while True:
            try:
                self.client.connect(self.host, self.port, keepalive=30, **kwargs)
                break
            except ssl.SSLCertVerificationError as error:  # retrying cannot help
                raise ConnectorError(
                    f"{self.owner}: the TLS certificate of MQTT broker {self.host}:{self.port} is not trusted: "
                    f"{error.verify_message or error}",
                    hint="option 'ca_file' must name the CA (PEM) that signed the broker's certificate, and the "
                         "certificate must be for the host in 'url' (tls_insecure = true skips the check: tests only)",
                ) from error
            except (OSError, ssl.SSLError) as error:
                if time.monotonic() >= deadline:
                    raise ConnectorError(
                        f"{self.owner}: cannot connect to MQTT broker {self.host}:{self.port}: {error}",
                        hint="is the broker running? check option 'url'",
                    ) from error
                time.sleep(0.1)  # connection retry backoff, not a wait for data
        self.client.loop_start()
        wait_s = max(0.0, deadline - time.monotonic()) + 1.0
        ready = self.connected.wait(wait_s) and (self.subscription is None or self.subscribed.wait(wait_s))
        if not ready or self.failure:
            self.close()
            raise ConnectorError(
                f"{self.owner}: cannot connect to MQTT broker {self.host}:{self.port}: "
                f"{self.failure or 'no answer to CONNECT / SUBSCRIBE'}",
                hint="check options 'url', 'username', 'password' and the TLS options",
            )

    def close(self) -> None:
        self.closing = True
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
