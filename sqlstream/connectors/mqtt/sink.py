"""``connector = 'mqtt'`` as a sink: one message per row (json), or per batch and topic (arrow).

``topic`` may name columns, ``'factory/{line}/alerts'``: values are cast to text and
``+``, ``#`` and NUL in them become ``_``. With ``qos = 1`` (or 2) ``durable_rows``
waits until the broker acknowledged every publish, so a source that acknowledges
its input (an MQTT source at QoS 1, JetStream) acks only what the broker holds.
"""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.connectors.base import RunContext, SinkWriter
from sqlstream.connectors.encode import encode_json_values
from sqlstream.connectors.mqtt.client import MqttClient
from sqlstream.connectors.templates import DestinationTemplate
from sqlstream.errors import ConnectorError
from sqlstream.hidden import is_hidden

__all__ = ["MqttWriter", "TopicTemplate"]

_MAX_UNACKED = 50_000


class TopicTemplate(DestinationTemplate):
    """``'factory/{line}/alerts'``: an MQTT topic from row values."""

    def __init__(self, text: str):
        super().__init__(text, forbidden=r"[+#\x00]", kind="topic")


class MqttWriter(SinkWriter):
    def __init__(self, connector, schema: pa.Schema, ctx: RunContext):
        config = connector.config
        self.owner = f"sink '{connector.sink_name}'"
        self.qos = config["qos"]
        self.retain = config["retain"]
        self.format = config["format"]
        self.ack_timeout_s = config["ack_timeout"] / 1e6
        self.columns = [n for n in schema.names if not is_hidden(n)]
        self.topic = TopicTemplate(config["topic"])
        self.topic.bind(schema, self.owner)
        self.unacked: list = []  # MessageInfo of QoS 1/2 publishes not known to be acknowledged
        self.published = 0
        self.mqtt = MqttClient(config, self.owner)
        self.mqtt.start()

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if self.qos and batch.num_rows > _MAX_UNACKED:  # more messages than ids: in parts, acknowledged in between
            for start in range(0, batch.num_rows, _MAX_UNACKED):
                self.write(batch.slice(start, _MAX_UNACKED))
            return
        if len(self.unacked) + batch.num_rows > _MAX_UNACKED:
            self.flush()  # message ids are 16-bit: outstanding publishes must stay below 65,535
        topics = self.topic.render(batch)
        data = batch.select(self.columns)
        if self.format == "arrow":
            self._write_arrow(data, topics)
            return
        payloads = pc.cast(encode_json_values(data), pa.binary()).to_pylist()
        topic_list = [topics] * len(payloads) if isinstance(topics, str) else topics.to_pylist()
        publish, qos, retain = self.mqtt.client.publish, self.qos, self.retain
        infos = [publish(t, p, qos, retain) for t, p in zip(topic_list, payloads, strict=True)]
        self._sent(infos)

    def _write_arrow(self, data: pa.RecordBatch, topics) -> None:
        groups = [(topics, data)] if isinstance(topics, str) else [
            (value, data.filter(pc.equal(topics, value))) for value in pc.unique(topics).to_pylist()
        ]
        infos = []
        for topic, rows in groups:
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, rows.schema) as writer:
                writer.write_batch(rows)
            infos.append(self.mqtt.client.publish(topic, sink.getvalue().to_pybytes(), self.qos, self.retain))
        self._sent(infos)

    def _sent(self, infos: list) -> None:
        for info in infos:
            if info.rc:
                raise ConnectorError(f"{self.owner}: publishing to the MQTT broker failed: {info.rc}")
        self.published += len(infos)
        if self.qos:
            self.unacked.extend(infos)

    def flush(self) -> None:
        """Wait until the broker acknowledged every QoS 1/2 publish so far."""
        if not self.unacked:
            return
        deadline = time.monotonic() + self.ack_timeout_s
        for info in self.unacked:
            if not info.is_published():
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
                if not info.is_published():
                    raise ConnectorError(
                        f"{self.owner}: the MQTT broker did not acknowledge publishes within "
                        f"{self.ack_timeout_s:g}s",
                        hint="raise ack_timeout, or check the broker",
                    )
        self.unacked.clear()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.mqtt.close()

    def abort(self) -> None:
        self.mqtt.close()
