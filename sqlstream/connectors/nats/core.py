"""``connector = 'nats'`` without ``stream``: a core NATS subscription.

Core NATS has no flow control: if the pipeline is slower than the subject, messages
pile up until ``max_pending_messages`` / ``max_pending_bytes`` and the excess is
dropped — counted, logged as a ``slow consumer`` warning and shown in the run
summary, never silent. Nothing received can be replayed, so a graceful stop
unsubscribes and drains what was received through the pipeline (``drains_on_stop``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from sqlstream.connectors.base import RunContext, SourceBatch
from sqlstream.connectors.nats.connection import LOG
from sqlstream.connectors.nats.messages import Received
from sqlstream.connectors.nats.reader import MessageReader
from sqlstream.connectors.nats.routing import can_route, route, unroute

__all__ = ["CoreReader"]

_UNSUBSCRIBE_S = 2.0  # graceful stop: the longest wait for the server to confirm an unsubscribe


class CoreReader(MessageReader):
    """A core NATS subscription (optionally in a queue group)."""

    def __init__(self, connector, ctx: RunContext):
        super().__init__(connector, ctx)
        self.max_msgs = self.config["max_pending_messages"]
        self.max_bytes = self.config["max_pending_bytes"]
        self.dropped = 0  # messages over the pending limits (loop thread)
        self.lost_at_shutdown = 0  # received, still buffered when the drain deadline passed
        self.drain_deadline_s = 0.0
        self._outage_seen_s = 0.0  # outage time already reported
        self.conn.start()
        self.conn.call(self._subscribe(), timeout=10)
        self.conn.on_reconnect.append(self._after_reconnect)

    async def _subscribe(self) -> None:
        nc = self.conn.nc
        append = self.buffer.append
        with_time = self.with_time
        max_msgs, max_bytes = self.max_msgs, self.max_bytes

        def on_message(subject: bytes, reply: bytes, data: bytes, headers) -> None:
            size = len(data)
            if self.received - self.taken >= max_msgs or self.received_bytes - self.taken_bytes + size > max_bytes:
                self._drop(subject)
                return
            if self.pending_since is None:
                self.arrived()
            append((subject, data, headers, time.time_ns() // 1000) if with_time else (subject, data, headers))
            self.received += 1
            self.received_bytes += size

        async def on_msg(msg) -> None:  # the ordinary path, where routing is not available
            on_message(msg.subject.encode(), msg.reply.encode(), msg.data, msg.headers)

        # nats-py's own queue (used only without routing) gets the same limits
        self.subscription = await nc.subscribe(
            self.config["subject"],
            queue=self.config["queue"] or "",
            cb=on_msg,
            pending_msgs_limit=max_msgs,
            pending_bytes_limit=max_bytes,
        )
        if can_route():
            route(nc, self.subscription._id, on_message)
        await nc.flush()

    def _drop(self, subject: bytes) -> None:
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 100_000 == 0:
            LOG.warning(
                "%s: slow consumer: messages on '%s' dropped (%d so far): more than %d messages / %d bytes "
                "wait for the pipeline (raise max_pending_messages / max_pending_bytes, or use JetStream "
                "for guaranteed delivery)",
                self.owner, subject.decode("utf-8", "replace"), self.dropped, self.max_msgs, self.max_bytes,
            )

    outage_note = ": core NATS messages published meanwhile were lost (how many cannot be known)"

    async def _after_reconnect(self) -> None:
        """Say what an outage lost, as far as anyone can tell (loop thread)."""
        events = self.conn.events
        LOG.warning(
            "%s: core NATS messages published to '%s' during the outage (%.2fs) are lost; how many cannot be known: "
            "the server keeps no record of them (a JetStream stream on the subject would). Counted: %s messages "
            "dropped by the pending limits so far, %s received messages kept",
            self.owner, self.config["subject"], events.disconnected_s - self._outage_seen_s,
            f"{self.status()['slow_consumer_drops']:,}", f"{self.received:,}",
        )
        self._outage_seen_s = events.disconnected_s

    # -- graceful stop (driver thread) ------------------------------------------------------------

    drains_on_stop = True

    def stop_receiving(self) -> None:
        """Unsubscribe and wait for the server's round trip: every message it sent
        before is in the buffer, and nothing new arrives."""
        try:
            self.conn.call(self._unsubscribe(), timeout=_UNSUBSCRIBE_S)
        except Exception as error:  # noqa: BLE001 - an outage: what was received is drained anyway
            LOG.debug("%s: unsubscribing failed: %s", self.owner, error)
        self.conn.call_soon(unroute, self.conn.nc, self.subscription._id)

    async def _unsubscribe(self) -> None:
        nc, subscription = self.conn.nc, self.subscription
        send_unsubscribe = getattr(nc, "_send_unsubscribe", None)
        if send_unsubscribe is not None:
            # nats-py writes a flush's PING ahead of commands still queued, so one round
            # trip can return before the server saw the UNSUB (and the messages it sends
            # until then would be dropped once the subscription is removed): the first
            # round trip pushes the UNSUB out, the second returns after the server
            # processed it
            await send_unsubscribe(subscription._id)
            await nc.flush()
            await nc.flush()
        await subscription.drain()  # the callback path: its queue is handed over too

    def drain(self) -> SourceBatch | None:
        if self.failure is not None:
            raise self.failure
        return self._take(min(len(self.buffer), self.batch_size)) if self.buffer else None

    def abandon(self, deadline_s: float) -> int:
        left = len(self.buffer)
        if left:
            self.lost_at_shutdown += left
            self.buffer.clear()
            self.pending_since = None
            LOG.warning("%s: %s", self.owner, self._lost_note(deadline_s))
        self.drain_deadline_s = deadline_s
        return left

    def _lost_note(self, deadline_s: float) -> str:
        return (f"core NATS: {self.lost_at_shutdown:,} received messages not processed at shutdown "
                f"(deadline {deadline_s:g}s)")

    def problems(self) -> list[str]:
        out = super().problems()
        if self.lost_at_shutdown:
            out.append(self._lost_note(self.drain_deadline_s))
        return out

    def make_batch(self, items: list) -> SourceBatch:
        columns = list(zip(*items, strict=True))
        subjects, payloads, headers = columns[0], columns[1], columns[2]
        received_us = np.array(columns[3], dtype=np.int64) if self.with_time else None
        first = self.taken + 1
        received = Received(subjects, payloads, headers, np.arange(first, first + len(items)), received_us)
        batch, dead = self.decoder.decode(received)
        self.taken += len(items)
        size = sum(map(len, payloads))
        self.taken_bytes += size
        return SourceBatch(batch, dead, raw_count=len(items), raw_bytes=size)

    def status(self) -> dict[str, Any]:
        out = super().status()
        out["slow_consumer_drops"] += self.dropped
        out["lost_at_shutdown"] = self.lost_at_shutdown
        return out
