"""``connector = 'mqtt'``: MQTT 3.1.1 / 5 (paho-mqtt), as a source and as a sink.

Source::

    CREATE SOURCE readings (line VARCHAR, temp DOUBLE, ts TIMESTAMP, _topic VARCHAR)
    WITH (connector = 'mqtt', url = 'mqtt://127.0.0.1:1883', topic = 'factory/+/temp',
          qos = 1, client_id = 'alerts', clean_session = false);

Sink::

    CREATE SINK alerts AS SELECT ... WITH (connector = 'mqtt', topic = 'factory/{line}/alerts', qos = 1);

See docs/connectors/mqtt.md for the delivery guarantees.
"""

from __future__ import annotations

import pyarrow as pa

from sqlstream.connectors.base import RunContext, SinkConnector, SinkWriter, SourceConnector, SourceReader
from sqlstream.connectors.decode.payloads import PAYLOAD_FORMATS
from sqlstream.connectors.mqtt.client import DEFAULT_URL, parse_url
from sqlstream.connectors.mqtt.reader import METADATA_COLUMNS, MqttReader
from sqlstream.connectors.mqtt.sink import MqttWriter, TopicTemplate
from sqlstream.connectors.options import NULL_VALUES_OPTION, OptionSpec
from sqlstream.connectors.registry import register_sink, register_source
from sqlstream.errors import ConnectorError, Location

__all__ = ["MqttSource", "MqttSink"]


def _url(value: str) -> str | None:
    return None if parse_url(value) else "expected mqtt://host:port (or mqtts://host:port for TLS)"


def _topic_filter(value: str) -> str | None:
    levels = value.split("/")
    if not value or "\x00" in value:
        return "an MQTT topic filter is not empty"
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return "'#' must be a whole level, and the last"
        if "+" in level and level != "+":
            return "'+' must be a whole level"
    return None


_COMMON = (
    OptionSpec("url", default=DEFAULT_URL, doc="the broker: 'mqtt://host:port' (mqtts:// for TLS)", check=_url),
    OptionSpec("qos", "int", default=1, doc="0 (at most once), 1 (at least once) or 2",
               check=lambda v: None if v in (0, 1, 2) else "must be 0, 1 or 2"),
    OptionSpec("protocol", "choice", default="5", choices=("5", "3.1.1"), doc="MQTT protocol version"),
    OptionSpec("client_id", doc="client identifier (default: a random one); needed for a persistent session"),
    OptionSpec("clean_session", "bool", default=True,
               doc="false: a persistent session — the broker keeps the subscription and queues QoS 1/2 messages"),
    OptionSpec("session_expiry", "duration", default=3_600_000_000,
               doc="MQTT 5, clean_session = false: how long the broker keeps the session after a disconnect"),
    OptionSpec("username", doc="user name"),
    OptionSpec("password", doc="password"),
    OptionSpec("tls", "bool", default=False, doc="connect over TLS (also: an mqtts:// url)"),
    OptionSpec("ca_file", doc="TLS: CA certificates (PEM) to verify the broker (default: the system's)"),
    OptionSpec("cert_file", doc="TLS: client certificate (PEM)"),
    OptionSpec("key_file", doc="TLS: client key (PEM)"),
    OptionSpec("tls_insecure", "bool", default=False, doc="TLS: do not verify the broker's certificate"),
    OptionSpec("connect_timeout", "duration", default=5_000_000, doc="how long to try the first connection"),
)
_PATHS = ("ca_file", "cert_file", "key_file")


def _check_session(config: dict, where: Location | None) -> None:
    if not config["clean_session"] and not config["client_id"]:
        raise ConnectorError(
            "clean_session = false needs a client_id",
            location=where,
            hint="the broker finds a persistent session by its client id: add client_id = '...'",
        )
    if config["password"] is not None and config["username"] is None:
        raise ConnectorError("option 'password' needs option 'username'", location=where)


@register_source
class MqttSource(SourceConnector):
    name = "mqtt"
    metadata_columns = METADATA_COLUMNS
    path_options = _PATHS
    options = _COMMON + (
        OptionSpec("topic", required=True, doc="topic filter to subscribe to; wildcards: 'factory/+/temp', 'factory/#'",
                   check=_topic_filter),
        OptionSpec("format", "choice", default="json", choices=PAYLOAD_FORMATS,
                   doc="payload format: json | csv (one record per message) | arrow (IPC stream) | raw"),
        OptionSpec("delimiter", default=",", doc="csv field delimiter",
                   check=lambda v: None if len(v) == 1 else "must be one character"),
        NULL_VALUES_OPTION,
        OptionSpec("max_buffered", "int", default=65_535,
                   doc="messages received and not yet through the pipeline: QoS 1/2 — the broker sends no more "
                       "until some are acknowledged (MQTT 5 receive maximum, at most 65535); QoS 0 — more are "
                       "dropped, counted and reported",
                   check=lambda n: None if n >= 1 else "expected at least 1"),
    )

    def validate(self, where: Location | None) -> None:
        _check_session(self.config, where)
        data = [f for f in self.schema if f.name not in METADATA_COLUMNS]
        for field in self.schema:
            expected = {"_topic": ("VARCHAR", pa.types.is_string), "_received_at": ("TIMESTAMP", pa.types.is_timestamp),
                        "_retained": ("BOOLEAN", pa.types.is_boolean)}.get(field.name)
            if expected and not expected[1](field.type):
                raise ConnectorError(f"metadata column '{field.name}' must be declared {expected[0]}", location=where)
        if not data:
            raise ConnectorError("an mqtt source needs at least one column besides metadata columns", location=where)
        if self.config["format"] == "raw" and (
            len(data) != 1 or not (pa.types.is_string(data[0].type) or pa.types.is_binary(data[0].type))
        ):
            raise ConnectorError(
                "format = 'raw' needs exactly one column (besides metadata columns), of type VARCHAR or BYTEA",
                location=where,
                hint="e.g. CREATE SOURCE frames (payload BYTEA, _topic VARCHAR) WITH (..., format = 'raw')",
            )

    @property
    def acknowledges(self) -> bool:
        """QoS 1/2 messages are acknowledged once every sink holds their rows; QoS 0 has no acks."""
        return self.config["qos"] > 0

    def replay_gap(self) -> str | None:
        if self.config["qos"] > 0 and not self.config["clean_session"]:
            return (f"source '{self.source_name}' cannot replay from a position: a resumed run gets what its "
                    "persistent session still holds, i.e. the QoS 1/2 messages not acked when it stopped (acks wait "
                    "for the checkpoint), redelivered at least once: messages whose ack was on its way at the "
                    "crash are counted twice")
        return (f"source '{self.source_name}' cannot replay: messages published while the pipeline is down are "
                "lost (only qos >= 1 with clean_session = false keeps them for a resumed run)")

    def open(self, ctx: RunContext) -> SourceReader:
        return MqttReader(self, ctx)

    def describe(self) -> str:
        c = self.config
        return f"mqtt({c['topic']}, qos {c['qos']}, {c['format']})"


@register_sink
class MqttSink(SinkConnector):
    name = "mqtt"
    path_options = _PATHS
    options = _COMMON + (
        OptionSpec("topic", required=True, doc="topic to publish to; may name columns: 'factory/{line}/alerts'"),
        OptionSpec("format", "choice", default="json", choices=("json", "arrow"),
                   doc="json (a message per row) | arrow (an IPC message per batch and topic)"),
        OptionSpec("retain", "bool", default=False, doc="publish retained messages (the broker keeps the last per topic)"),
        OptionSpec("ack_timeout", "duration", default=10_000_000, doc="QoS 1/2: how long to wait for the broker's acks"),
    )

    def validate(self, where: Location | None) -> None:
        _check_session(self.config, where)
        at = self.located("topic", where)
        template = TopicTemplate.from_option("topic", self.config["topic"], at, "factory/{line}/alerts")
        literal = "".join(text for text, _ in template.parts)
        if not self.config["topic"] or "+" in literal or "#" in literal:
            raise ConnectorError(
                f"option 'topic' = {self.config['topic']!r} is invalid for connector 'mqtt': "
                "a published topic cannot be empty or contain wildcards",
                location=at,
            )

    def check_schema(self, schema: pa.Schema, where: Location | None) -> None:
        TopicTemplate(self.config["topic"]).bind(schema, f"sink '{self.sink_name}'", self.located("topic", where))

    def open(self, schema: pa.Schema, ctx: RunContext) -> SinkWriter:
        return MqttWriter(self, schema, ctx)

    def describe(self) -> str:
        c = self.config
        return f"mqtt({c['topic']}, qos {c['qos']}, {c['format']})"
