"""What the core NATS and JetStream readers share: buffering and micro-batching.

The connection's loop thread only appends received messages to a deque (and, for
JetStream, keeps pull requests flowing); ``poll`` in the driver thread takes up to
``batch_size`` of them when :class:`~sqlstream.connectors.batching.BatchTimer` says
a batch is due, and decodes them as one block (:class:`MessageDecoder`).
"""

from __future__ import annotations

import collections
from abc import abstractmethod
from typing import Any

from sqlstream.connectors.base import RunContext, SourceBatch, SourceReader
from sqlstream.connectors.batching import BatchTimer
from sqlstream.connectors.nats.connection import NatsConnection
from sqlstream.connectors.nats.messages import MessageDecoder
from sqlstream.connectors.options import null_spellings

__all__ = ["MessageReader"]

class MessageReader(SourceReader):
    """Buffering and micro-batching shared by the core and JetStream readers."""

    def __init__(self, connector, ctx: RunContext):
        self.c = connector
        self.config = connector.config
        self.ctx = ctx
        self.clock = ctx.clock
        self.batch_size = ctx.batch_size
        self.timeout_s = ctx.batch_timeout_us / 1e6
        self.timer = BatchTimer(self.batch_size, self.timeout_s)
        self.buffer: collections.deque = collections.deque()
        self.received = 0  # written by the loop thread only
        self.received_bytes = 0
        self.taken = 0  # written by the driver thread only
        self.taken_bytes = 0
        self.pending_since: float | None = None  # arrival of the oldest buffered message (monotonic)
        self.with_time = "_received_at" in connector.schema.names  # stamp each message's arrival
        self.decoder = MessageDecoder(
            connector.schema,
            connector.source_name,
            self.config["format"],
            self.config["timestamp_format"],
            stream=self.config["stream"],
            delimiter=self.config["delimiter"],
            null_values=null_spellings(self.config["null_values"]),
        )
        owner = f"source '{connector.source_name}'"
        self.conn = NatsConnection(self.config["url"], owner, connect_timeout_s=self.config["connect_timeout"] / 1e6)
        self.failure: Exception | None = None  # set on the loop thread, raised by poll()

    @property
    def owner(self) -> str:
        return self.conn.owner

    def poll(self) -> SourceBatch | None:
        if self.failure is not None:
            raise self.failure
        now = self.clock.monotonic()
        self.timer.polled(now)
        self.housekeeping()
        pending = len(self.buffer)
        if not pending:
            return None
        since = self.pending_since
        if since is None:  # (lost a race with the loop thread: time it from now)
            since = self.pending_since = now
        if not self.timer.due(pending, since, now):
            return None
        self.timer.taken(now)
        return self._take(min(pending, self.batch_size))

    def _take(self, count: int) -> SourceBatch:
        popleft = self.buffer.popleft
        items = [popleft() for _ in range(count)]
        if not self.buffer:
            self.pending_since = None
        # (else what is left arrived before now and keeps the running timer: it is due next)
        return self.make_batch(items)

    def next_wakeup(self) -> float | None:
        return self.timer.next_at(len(self.buffer), self.pending_since, self.clock.monotonic())

    def arrived(self) -> None:
        """Loop thread, per message: the batch timer starts with the first message that
        finds the buffer empty (a batch closes ``batch_timeout`` after it arrived at the latest)."""
        if self.pending_since is None:
            self.pending_since = self.clock.monotonic()

    def housekeeping(self) -> None:
        """Driver-thread work between batches (JetStream: progress acks)."""

    @abstractmethod
    def make_batch(self, items: list) -> SourceBatch:
        """Decode messages taken from the buffer into one batch (driver thread)."""

    def problems(self) -> list[str]:
        events = self.conn.events
        out = []
        drops = self.status()["slow_consumer_drops"]
        if drops:
            out.append(f"{drops:,} messages dropped: slow consumer")
        if events.disconnects:
            out.append(f"disconnected {events.disconnects}x for {events.disconnected_s:.1f}s" + self.outage_note)
        return out

    outage_note = ""

    def close(self) -> None:
        self.conn.close()

    def status(self) -> dict[str, Any]:
        events = self.conn.events
        return {
            "disconnects": events.disconnects,
            "disconnected_s": round(events.disconnected_s, 3),
            "slow_consumer_drops": events.slow_consumer_events,
        }
