"""The MQTT source's reader: paho's thread buffers raw messages, ``poll`` decodes whole batches.

The network thread only appends ``(topic, payload, mid, qos, retain[, arrival])`` to
a deque. ``poll`` (driver thread) takes up to ``batch_size`` messages when the shared
rule says a batch is due (:class:`~sqlstream.connectors.batching.BatchTimer`) and decodes their payloads in
one go (:class:`~sqlstream.connectors.decode.payloads.PayloadDecoder`); metadata
columns are filled by one ``take`` per column.

Acknowledgement: the client runs with manual acks, so a QoS 1 message gets its
PUBACK only when the batch's ``ack`` runs — once every sink holds its rows durably.
Message ids belong to one connection: acks for messages received before a reconnect
are skipped (the broker redelivers those messages on a persistent session).
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

import numpy as np
import pyarrow as pa

from sqlstream.connectors.base import RunContext, SourceBatch, SourceReader
from sqlstream.connectors.batching import BatchTimer
from sqlstream.connectors.decode.payloads import PayloadDecoder
from sqlstream.connectors.mqtt.client import LOG, MqttClient
from sqlstream.connectors.options import null_spellings

__all__ = ["MqttReader", "METADATA_COLUMNS"]

#: the metadata columns an mqtt source fills
METADATA_COLUMNS: dict[str, pa.DataType] = {
    "_topic": pa.string(),
    "_received_at": pa.timestamp("us"),
    "_retained": pa.bool_(),
}

class MqttReader(SourceReader):
    """One subscription (a topic filter, wildcards allowed) for one run."""

    def __init__(self, connector, ctx: RunContext):
        config = connector.config
        self.schema = connector.schema
        self.clock = ctx.clock
        self.batch_size = ctx.batch_size
        self.timeout_s = ctx.batch_timeout_us / 1e6
        self.timer = BatchTimer(self.batch_size, self.timeout_s)
        self.qos = config["qos"]
        self.buffer: collections.deque = collections.deque()
        self.pending_since: float | None = None
        self.received = 0  # network thread
        self.taken = 0  # driver thread
        self.acked = 0
        self.with_time = "_received_at" in self.schema.names
        self.data_schema = pa.schema([f for f in self.schema if f.name not in METADATA_COLUMNS])
        self.output_schema = pa.schema([f.with_nullable(True) for f in self.schema])
        self.decoder = PayloadDecoder(
            self.data_schema, connector.source_name, config["format"], config["timestamp_format"],
            config["delimiter"], null_spellings(config["null_values"]),
        )
        self.owner = f"source '{connector.source_name}'"
        self.max_buffered = config["max_buffered"]
        self.dropped = 0  # QoS 0 messages over max_buffered (network thread)
        self.high_water = 0  # the most messages buffered at once
        self.paused = 0  # QoS 1/2: times the network thread waited for room (network thread)
        self.paused_s = 0.0
        self._room = threading.Event()  # set by the driver thread when it took messages
        self._closing = False
        self.mqtt = MqttClient(config, self.owner, self._on_message,
                               subscribe=(config["topic"], self.qos), manual_ack=True)
        self.mqtt.start()
        #: QoS 0 input cannot be redelivered: a graceful stop unsubscribes and drains it
        self.drains_on_stop = self.qos == 0
        self.lost_at_shutdown = 0

    def _on_message(self, client, userdata, message) -> None:  # network thread, per message
        buffered = len(self.buffer)
        if buffered >= self.max_buffered:
            if message.qos == 0:  # no flow control at QoS 0: drop, count, say so
                self._drop(message._topic)
                return
            self._wait_for_room()
            buffered = len(self.buffer)
        if buffered >= self.high_water:
            self.high_water = buffered + 1
        if self.pending_since is None:
            self.pending_since = self.clock.monotonic()
        item = (message._topic, message.payload, message.mid, message.qos, message.retain, self.mqtt.generation)
        self.buffer.append(item + (time.time_ns() // 1000,) if self.with_time else item)
        self.received += 1

    def _wait_for_room(self) -> None:
        """QoS 1/2 and a full buffer: hold paho's network thread until the pipeline takes
        messages. The socket is not read meanwhile, so the broker queues what follows
        (the receive maximum should stop it earlier; Mosquitto 2.0 sends past it)."""
        self.paused += 1
        started = time.monotonic()
        while len(self.buffer) >= self.max_buffered and not self._closing:
            self._room.clear()
            if len(self.buffer) < self.max_buffered:
                break
            self._room.wait(0.1)
        self.paused_s += time.monotonic() - started

    def _drop(self, topic: bytes) -> None:
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 100_000 == 0:
            LOG.warning(
                "%s: slow consumer: QoS 0 messages on '%s' dropped (%d so far): more than %d messages wait for the "
                "pipeline (raise max_buffered, or publish at QoS 1 for flow control)",
                self.owner, topic.decode("utf-8", "replace"), self.dropped, self.max_buffered,
            )

    def poll(self) -> SourceBatch | None:
        now = self.clock.monotonic()
        self.timer.polled(now)
        pending = len(self.buffer)
        if not pending:
            return None
        since = self.pending_since
        if since is None:
            since = self.pending_since = now
        if not self.timer.due(pending, since, now):
            return None
        self.timer.taken(now)
        popleft = self.buffer.popleft
        items = [popleft() for _ in range(min(pending, self.batch_size))]
        if not self.buffer:
            self.pending_since = None
        self._room.set()
        return self._batch(items)

    def next_wakeup(self) -> float | None:
        return self.timer.next_at(len(self.buffer), self.pending_since, self.clock.monotonic())

    def _batch(self, items: list) -> SourceBatch:
        columns = list(zip(*items, strict=True))
        topics, payloads = columns[0], columns[1]
        first = self.taken

        def position(index: int) -> str:
            return f"{topics[index].decode('utf-8', 'replace')}#{first + index + 1}"

        table, rows, dead = self.decoder.decode(payloads, position)
        take = pa.array(rows, pa.int64())
        arrays = []
        for field in self.schema:
            name = field.name
            if name not in METADATA_COLUMNS:
                arrays.append(table.column(name).combine_chunks())
                continue
            if name == "_topic":
                values = pa.array(topics, pa.binary()).cast(pa.string())
            elif name == "_received_at":
                values = pa.array(columns[6], pa.int64()).view(pa.timestamp("us"))
            else:  # _retained
                values = pa.array(columns[4], pa.bool_())
            values = values.take(take)
            arrays.append(values.cast(field.type) if values.type != field.type else values)
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.output_schema)
        self.taken += len(items)
        ack = None
        if self.qos > 0:
            qos, generation = np.array(columns[3]), np.array(columns[5])
            mids = np.array(columns[2])[qos > 0]
            ack = self._acker(mids.tolist(), qos[qos > 0].tolist(), generation[qos > 0].tolist(), len(items))
        return SourceBatch(batch, dead, ack=ack, raw_count=len(items))

    def _acker(self, mids: list[int], qos: list[int], generations: list[int], count: int):
        def ack() -> None:
            current = self.mqtt.generation
            client = self.mqtt.client
            for mid, q, generation in zip(mids, qos, generations, strict=True):
                if generation == current:  # an older connection's ids mean nothing now
                    client.ack(mid, q)
            self.acked += count
        return ack

    def stop_receiving(self) -> None:
        self.mqtt.client.unsubscribe(self.mqtt.subscription[0])

    def drain(self) -> SourceBatch | None:
        if not self.buffer:
            return None
        popleft = self.buffer.popleft
        items = [popleft() for _ in range(min(len(self.buffer), self.batch_size))]
        self.pending_since = None if not self.buffer else self.pending_since
        self._room.set()
        return self._batch(items)

    def abandon(self, deadline_s: float) -> int:
        left = len(self.buffer)
        self.lost_at_shutdown += left
        self.buffer.clear()
        self._room.set()
        return left

    def close(self) -> None:
        self._closing = True  # a network thread waiting for room lets go (QoS 1/2: redelivered later)
        self._room.set()
        self.mqtt.close()

    def status(self) -> dict[str, Any]:
        return {"received": self.received, "acked": self.acked, "disconnects": self.mqtt.disconnects,
                "buffered": len(self.buffer), "buffered_high_water": self.high_water,
                "max_buffered": self.max_buffered, "slow_consumer_drops": self.dropped,
                "paused_reading": self.paused, "paused_reading_s": round(self.paused_s, 3)}

    def problems(self) -> list[str]:
        out = [f"QoS 0: {self.lost_at_shutdown:,} received messages not processed at shutdown"] if self.lost_at_shutdown else []
        if self.dropped:
            out.append(f"{self.dropped:,} QoS 0 messages dropped: slow consumer (more than {self.max_buffered:,} "
                       "waiting for the pipeline)")
        if not self.mqtt.disconnects:
            return out
        lost = "QoS 0 messages published meanwhile were lost" if self.qos == 0 else (
            "QoS 1 messages are redelivered on a persistent session (clean_session = false)")
        return out + [f"disconnected {self.mqtt.disconnects}x from the MQTT broker: {lost}"]
