"""``connector = 'nats'`` with ``stream``: a JetStream pull consumer, acked explicitly.

JetStream has flow control: the reader asks the server for more only while its
buffer has room, so nothing is dropped and nothing is lost.

Acknowledgement (at-least-once): a batch's messages are acked when the runtime calls
its ``ack`` — after every sink that received rows derived from it was flushed, and
once no window or join still holds those rows (see ``SourceStage.release_acks``).
Until then the reader keeps the messages' ack subjects and, for long windows, tells
the server it is still working on them (``+WPI``) so they are not redelivered while
the pipeline runs. Redelivered copies of messages this run already took are dropped
(:class:`TakenSequences`) and acked with their original.

Checkpoints: ``position`` is the stream sequence of the last message ``poll``
returned. A resumed run (``RunContext.start_position``) deletes the durable consumer
and creates it again, same name, delivering by start sequence from the one after:
exactly the messages that follow, in stream order; copies at or below it are
dropped and acked. With checkpoints the runtime acks a batch once the checkpoint
that read it commits, so ack_wait follows the checkpoint interval, not the windows
(:func:`ack_defaults`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from sqlstream.connectors.base import RunContext, SourceBatch
from sqlstream.connectors.nats.connection import LOG, require_stream, runtime_error
from sqlstream.connectors.nats.messages import Received, js_pending, js_reply_fields
from sqlstream.connectors.nats.partitions import ensure_partitioned_stream
from sqlstream.connectors.nats.protocol import prepare, send
from sqlstream.connectors.nats.reader import MessageReader
from sqlstream.connectors.nats.redelivery import TakenSequences
from sqlstream.connectors.nats.routing import can_route, route, status_of

__all__ = ["JetStreamReader", "ack_defaults", "STALL_MIN_S"]

_PULL_EXPIRES_S = 5.0  # a pull request's lifetime on the server
_PULL_HEARTBEAT_S = 1.0  # the server's idle heartbeat for a waiting pull request
#: acks that have not advanced for max(this, ack_wait / 2) are reported as a stall
STALL_MIN_S = 30.0
_CONSUMER_POLL_S = 1.0  # how often the consumer's ack floor is read from the server


def ack_defaults(retention_horizon_us: int, batch_size: int, checkpoint_interval_us: int | None = None) -> tuple[float, int]:
    """``ack_wait`` (s) and ``max_ack_pending`` when the user does not set them.

    A stateless pipeline acks each batch right after its sink write: 30 s and room
    for a few batches in flight. A windowed one holds messages until the windows
    they fall in close, i.e. for about the largest window span plus the watermark
    delay (the retention horizon): ack_wait is twice that plus 30 s, and
    max_ack_pending is unlimited, because a limit below what the windows hold would
    stop delivery and, with it, the watermark that closes them.

    A checkpointed run (``checkpoint_interval_us``) acks input when the checkpoint
    that read it commits, whatever the windows hold (their state is in the
    checkpoint): ack_wait is twice the interval plus 30 s, and max_ack_pending is
    unlimited too — about one interval of input is unacked at any time, and a count
    limit would cap the throughput at limit / interval.

    >>> ack_defaults(0, 1000)
    (30.0, 10000)
    >>> ack_defaults(60_000_000, 1000)
    (150.0, -1)
    >>> ack_defaults(3_600_000_000, 1000, checkpoint_interval_us=10_000_000)
    (50.0, -1)
    """
    if checkpoint_interval_us is not None:
        return 2 * checkpoint_interval_us / 1e6 + 30.0, -1
    if retention_horizon_us <= 0:
        return 30.0, max(8 * batch_size, 10_000)
    return 2 * retention_horizon_us / 1e6 + 30.0, -1


@dataclass
class _Held:
    """A batch's messages, delivered and not acked yet."""

    since: float  # monotonic time of delivery or of the last progress ack
    replies: pa.Array  # ack subjects (binary)
    sequences: np.ndarray
    copies: list[pa.Array] = field(default_factory=list)  # ack subjects of redeliveries dropped as copies

    def subjects(self) -> pa.Array:
        return pa.concat_arrays([self.replies, *self.copies]) if self.copies else self.replies


class JetStreamReader(MessageReader):
    """A pull consumer on ``stream`` (durable if ``durable`` is set), acked explicitly."""

    work_queue = False  # the stream removes what is acked: resume by delivering all

    def __init__(self, connector, ctx: RunContext):
        super().__init__(connector, ctx)
        interval = ctx.checkpoint_interval_us if ctx.checkpointing else None
        default_wait, default_pending = ack_defaults(ctx.retention_horizon_us, self.batch_size, interval)
        self.checkpoint_interval_s = interval / 1e6 if interval is not None else None
        configured_wait = self.config["ack_wait"]
        self.ack_wait_s = configured_wait / 1e6 if configured_wait is not None else default_wait
        configured_pending = self.config["max_ack_pending"]
        self.max_ack_pending = configured_pending if configured_pending is not None else default_pending
        self.stream = self.config["stream"]
        self.layout = connector.layout
        self.subject, self.durable = self.config["subject"], self.config["durable"]
        self.consumer_replicas: int | None = None  # the stream's, when it is replicated (see _setup)
        if self.layout is not None:  # a partitioned stream: one partition, or (no worker) all of them
            part = ctx.partition
            self.subject = self.layout.subject_of(part.index) if part is not None else self.layout.all_partitions
            if self.durable and part is not None:
                self.durable = f"{self.durable}-p{part.index}"
        self.fetch_size = self.config["fetch_batch"] or self.batch_size
        # messages the reader lets pile up before it stops asking the server for more
        self.max_buffered = 4 * max(self.fetch_size, self.batch_size)
        if self.max_ack_pending > 0:
            self.max_buffered = min(self.max_buffered, self.max_ack_pending)
        self.requested = 0  # messages asked for and not yet delivered (loop thread)
        self.last_activity = 0.0
        self.consumer_name = ""
        self.held: dict[int, _Held] = {}  # batch id → its messages until acked
        self._next_batch_id = 0
        self.acked = 0
        self.progress_acks = 0  # "+WPI" sent for messages held longer than ack_wait / 3
        self.redelivered = 0
        self.pending: int | None = None  # messages left on the server, as the last delivered one said
        self.duplicates_dropped = 0  # redelivered copies of messages this run already took
        self.taken_sequences = TakenSequences()
        self.server_ack_floor = 0  # the consumer's ack floor (stream sequence), polled from the server
        self.server_ack_pending = 0
        self.consumer_reset_to: int | None = None
        self.ack_stalls = 0  # times the acks stopped advancing for longer than ack_stall_after_s
        #: the stream sequence of the last message poll() returned (what position() reports)
        self.last_sequence = 0
        self.resumed_from: int | None = None  # start_position's sequence, for a resumed run
        self.lost_before_resume = 0  # messages after the checkpoint the stream no longer held at resume
        start = ctx.start_position
        if start is not None:
            self.resumed_from = self._check_position(start)
            self.last_sequence = self.resumed_from
            self.taken_sequences.advance_floor(self.resumed_from)  # older copies are dropped (and acked)
        self.conn.start()
        try:
            self.conn.call(self._setup(), timeout=self.conn.connect_timeout_s + 10)
        except Exception:
            self.conn.close()
            raise
        self.conn.on_reconnect.append(self._after_reconnect)
        self._watchdog_task = self.conn.submit(self._watchdog())
        self._consumer_task = self.conn.submit(self._watch_consumer())

    # -- consumer setup (loop thread) -----------------------------------------------------------

    outage_note = " (JetStream: no loss; unacked messages are redelivered)"

    async def _setup(self) -> None:
        nc = self.conn.nc
        js = nc.jetstream()
        if self.layout is not None:
            await ensure_partitioned_stream(js, self.stream, self.layout, self.owner, self.config["replicas"])
        else:
            await require_stream(nc, self.stream, self.owner, self.config["url"])
        # a consumer without a durable name is R1 even on a replicated stream: it lives on one server of a
        # cluster, and when that server dies the consumer is gone and the reader waits forever: give it the
        # stream's replicas, so it survives what the stream survives
        replicas = (await js.stream_info(self.stream)).config.num_replicas or 1
        self.consumer_replicas = replicas if replicas > 1 else None
        durable = self.durable
        info = None
        if durable:
            try:
                info = await js.consumer_info(self.stream, durable)
            except NotFoundError:
                info = None
        subject = self.subject
        if self.resumed_from is not None:
            info = await self._resume_consumer(js, durable, subject)
        elif info is None:
            config = ConsumerConfig(
                durable_name=durable or None,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL if self.config["deliver"] == "all" else DeliverPolicy.NEW,
                filter_subject=subject or None,
                ack_wait=self.ack_wait_s,
                max_ack_pending=self.max_ack_pending,
                inactive_threshold=None if durable else 60.0,
                num_replicas=self.consumer_replicas,
            )
            info = await js.add_consumer(self.stream, config)
        else:
            existing = info.config.filter_subject or ""
            if existing != (subject or "") and not info.config.filter_subjects:
                raise runtime_error(
                    f"{self.owner}: durable consumer '{durable}' on stream '{self.stream}' filters subject "
                    f"'{existing or '(all)'}', not '{subject or '(all)'}'",
                    hint="use another durable name, or the subject the durable was created with",
                )
            if info.config.ack_policy != AckPolicy.EXPLICIT:
                raise runtime_error(
                    f"{self.owner}: durable consumer '{durable}' uses ack_policy '{info.config.ack_policy}'",
                    hint="sqlstream acks each message explicitly; use a new durable name",
                )
            if abs((info.config.ack_wait or 0) - self.ack_wait_s) > 1e-3 or info.config.max_ack_pending != self.max_ack_pending:
                info.config.ack_wait = self.ack_wait_s
                info.config.max_ack_pending = self.max_ack_pending
                info = await js.add_consumer(self.stream, info.config)  # (create-or-update: same name)
            if info.num_ack_pending and not info.num_waiting:
                await self._reset_to_ack_floor(durable)
        if self.resumed_from is None:  # before the first message, reading stands at the consumer's ack floor
            self.last_sequence = info.ack_floor.stream_seq or 0
        self.consumer_name = info.name
        self.next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.consumer_name}"
        self.inbox = nc.new_inbox()

        async def on_msg(msg) -> None:  # the ordinary path, where routing is not available
            self._on_message(msg.subject.encode(), msg.reply.encode(), msg.data, msg.headers)

        self.subscription = await nc.subscribe(self.inbox, cb=on_msg, pending_msgs_limit=0, pending_bytes_limit=0)
        if can_route():
            route(nc, self.subscription._id, self._on_message)
        self.last_activity = time.monotonic()
        await self._request()

    async def _resume_consumer(self, js, durable: str | None, subject: str | None):
        """A resumed run reads exactly what follows the checkpoint's sequence, in stream
        order: the consumer is created to deliver by start sequence from there. The
        deliver policy of a durable cannot change, so a durable of that name is deleted
        and created again under the same name (what it had delivered, acked or not, is
        superseded by the checkpoint; other processes must not share it). A work-queue
        stream (an exchange) delivers all it holds instead: what is at or below the
        checkpoint's sequence is dropped (and acked) as copies."""
        start = self.resumed_from + 1
        state = (await js.stream_info(self.stream)).state
        if state.first_seq > start and not self.work_queue:
            self.lost_before_resume = state.first_seq - start
            LOG.warning(
                "%s: stream '%s' no longer holds sequences %d..%d, which follow the checkpoint (removed by its "
                "limits or a purge while the pipeline was down): up to %s messages are lost to this pipeline",
                self.owner, self.stream, start, state.first_seq - 1, f"{self.lost_before_resume:,}",
            )
        if durable:
            try:
                await js.delete_consumer(self.stream, durable)
            except NotFoundError:
                pass
        config = ConsumerConfig(
            durable_name=durable or None,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL if self.work_queue else DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=None if self.work_queue else start,
            filter_subject=subject or None,
            ack_wait=self.ack_wait_s,
            max_ack_pending=self.max_ack_pending,
            inactive_threshold=None if durable else 60.0,
            num_replicas=self.consumer_replicas,
        )
        return await js.add_consumer(self.stream, config)

    def _check_position(self, position: dict) -> int:
        """The sequence a checkpoint's ``position`` resumes after."""
        sequence = position.get("sequence")
        if position.get("stream") != self.stream or not isinstance(sequence, int) or sequence < 0:
            raise runtime_error(
                f"{self.owner}: the checkpoint's position {position!r} is not a position in stream '{self.stream}'",
                hint="the source's stream changed since the checkpoint was taken: start without the checkpoint "
                     "(a new checkpoint_dir)",
            )
        return sequence

    def position(self) -> dict:
        """The stream and the sequence of the last message ``poll`` returned (a resumed
        reader starts right after it; before any message: where the consumer starts)."""
        return {"stream": self.stream, "sequence": int(self.last_sequence)}

    async def _reset_to_ack_floor(self, durable: str) -> None:
        """Messages a previous run received but did not ack would come back only after
        ack_wait, behind newer ones (too late for their windows): rewind the consumer
        to its ack floor so they are delivered again, first, now (nats-server ≥ 2.14)."""
        subject = f"$JS.API.CONSUMER.RESET.{self.stream}.{durable}"
        try:
            reply = await self.conn.nc.request(subject, b"{}", timeout=5)
            answer = orjson.loads(reply.data)
        except Exception as error:  # noqa: BLE001 - older servers: redelivery after ack_wait instead
            LOG.warning("%s: could not rewind consumer '%s' to its ack floor (%s); unacked messages "
                        "return after ack_wait", self.owner, durable, error)
            return
        if "error" in answer:
            LOG.warning("%s: could not rewind consumer '%s' to its ack floor (%s); unacked messages "
                        "return after ack_wait", self.owner, durable, answer["error"].get("description"))
            return
        self.consumer_reset_to = answer.get("reset_seq")

    # -- pulling (loop thread) --------------------------------------------------------------------

    def _on_message(self, subject: bytes, reply: bytes, data: bytes, headers) -> None:
        if not reply:  # a status message: heartbeat, request expired, ...
            asyncio.ensure_future(self._on_status(headers))
            return
        if self.pending_since is None:
            self.arrived()
        if self.with_time:
            self.buffer.append((subject, reply, data, headers, time.time_ns() // 1000))
        else:
            self.buffer.append((subject, reply, data, headers))
        self.received += 1
        self.requested -= 1
        if self.requested <= self.fetch_size // 2:
            asyncio.ensure_future(self._request())

    async def _on_status(self, headers) -> None:
        status, fields = status_of(headers)
        self.last_activity = time.monotonic()
        if status == "100":  # idle heartbeat: the request is alive
            return
        left = fields.get("Nats-Pending-Messages")
        if left is not None and left.isdigit():
            self.requested = max(0, self.requested - int(left))
        else:
            self.requested = 0
        if status == "409" and "deleted" in fields.get("Description", "").lower():
            self.failure = runtime_error(f"{self.owner}: consumer '{self.consumer_name}' was deleted on the server")
            return
        await self._request()

    async def _request(self) -> None:
        """Ask for as many messages as the buffer has room for (one request at a time
        per half of ``fetch_batch``)."""
        room = self.max_buffered - (self.received - self.taken) - self.requested
        if room < max(1, self.fetch_size // 2) or not self.conn.connected:
            return
        batch = min(room, self.fetch_size)
        request = {
            "batch": batch,
            "expires": int(_PULL_EXPIRES_S * 1e9),
            "idle_heartbeat": int(_PULL_HEARTBEAT_S * 1e9),
        }
        self.requested += batch
        await self.conn.nc.publish(self.next_subject, orjson.dumps(request), reply=self.inbox)

    async def _watchdog(self) -> None:
        """Keep requests flowing: after the driver made room, and when a request was
        lost (no message and no heartbeat for a while: a server restart)."""
        seen = self.received
        while not self.conn.closed:
            await asyncio.sleep(0.005 if self.requested == 0 else 0.1)
            if self.received != seen:
                seen, self.last_activity = self.received, time.monotonic()
            if self.conn.closed or not self.conn.connected:
                continue
            silent = time.monotonic() - self.last_activity
            if self.requested and silent > 3 * _PULL_HEARTBEAT_S:
                self.requested = 0  # the server forgot our request
                self.last_activity = time.monotonic()
            try:
                await self._request()
            except Exception as error:  # noqa: BLE001 - retried on the next round
                LOG.debug("%s: pull request failed: %s", self.owner, error)

    async def _watch_consumer(self) -> None:
        """Poll the consumer's ack floor and pending count (what the redelivery filter
        may forget, and what the stall warning reports)."""
        js = self.conn.nc.jetstream()
        while not self.conn.closed:
            await asyncio.sleep(_CONSUMER_POLL_S)
            if not self.conn.connected:
                continue
            try:
                info = await js.consumer_info(self.stream, self.consumer_name, timeout=2)
            except Exception as error:  # noqa: BLE001 - polled again on the next round
                LOG.debug("%s: consumer info failed: %s", self.owner, error)
                continue
            self.server_ack_floor = max(self.server_ack_floor, info.ack_floor.stream_seq or 0)
            self.server_ack_pending = info.num_ack_pending or 0

    async def _after_reconnect(self) -> None:
        self.requested = 0
        await self._request()

    # -- batches and acks (driver thread) ---------------------------------------------------------

    def make_batch(self, items: list) -> SourceBatch:
        self.taken += len(items)
        columns = [list(c) for c in zip(*items, strict=True)]
        subjects, payloads, headers = columns[0], columns[2], columns[3]
        received_us = np.array(columns[4], dtype=np.int64) if self.with_time else None
        replies = pa.array(columns[1], pa.binary())
        if columns[1]:
            self.pending = js_pending(columns[1][-1])
        sequences, delivered = js_reply_fields(replies)
        self.redelivered += int((delivered > 1).sum())
        self.taken_sequences.advance_floor(self.server_ack_floor)
        new = self.taken_sequences.take(sequences)
        if new.any():
            self.last_sequence = max(self.last_sequence, int(sequences[new].max()))
        copies = None
        if not new.all():
            keep = np.flatnonzero(new)
            copies = self._settle_copies(replies, sequences, ~new)
            subjects, payloads, headers = ([c[i] for i in keep] for c in (subjects, payloads, headers))
            replies, sequences = replies.take(pa.array(keep)), sequences[keep]
            received_us = received_us[keep] if received_us is not None else None
        batch, dead = self.decoder.decode(Received(subjects, payloads, headers, sequences, received_us))
        batch_id = self._next_batch_id
        self._next_batch_id += 1
        held = _Held(self.clock.monotonic(), replies, sequences)
        if copies is not None and len(copies):
            held.copies.append(copies)
        self.held[batch_id] = held
        return SourceBatch(batch, dead, ack=lambda: self._ack(batch_id), raw_count=len(items),
                           raw_bytes=sum(map(len, payloads)))

    def _settle_copies(self, replies: pa.Array, sequences: np.ndarray, copy: np.ndarray) -> pa.Array:
        """Redelivered copies of messages this run already took are dropped, never
        counted twice. Each copy's new delivery is acked with its original: with the
        batch that still holds it, at once if the original was acked already. Returns
        the ack subjects of copies whose original is in this same batch."""
        self.duplicates_dropped += int(copy.sum())
        left = copy.copy()
        for held in self.held.values():
            hit = left & np.isin(sequences, held.sequences)
            if hit.any():
                held.copies.append(replies.take(pa.array(np.flatnonzero(hit))))
                left &= ~hit
        here = left & np.isin(sequences, sequences[~copy])
        done = left & ~here
        if done.any():  # the original's batch was acked: so is this copy
            self._send_to_server(replies.take(pa.array(np.flatnonzero(done))), b"+ACK")
        return replies.take(pa.array(np.flatnonzero(here)))

    def _ack(self, batch_id: int) -> None:
        held = self.held.pop(batch_id, None)
        if held is None:
            return
        self.acked += len(held.replies)
        self._send_to_server(held.subjects(), b"+ACK")

    def _send_to_server(self, ack_subjects: pa.Array, verb: bytes) -> None:
        """Acks (or progress acks) for a batch, framed here and written in one go;
        one that is lost (an outage) only means a redelivery: at-least-once."""
        future = self.conn.submit(send(self.conn.nc, prepare(ack_subjects, verb)))
        future.add_done_callback(self._ack_failed)

    def _ack_failed(self, future) -> None:
        error = None if future.cancelled() else future.exception()
        if error is not None:
            LOG.warning("%s: sending acks failed (%s); the server will redeliver those messages", self.owner, error)

    def housekeeping(self) -> None:
        """Tell the server the pipeline still works on messages held longer than a
        third of ack_wait (open windows), so they are not redelivered meanwhile."""
        if not self.held:
            return
        now = self.clock.monotonic()
        limit = self.ack_wait_s / 3
        for held in self.held.values():
            if now - held.since >= limit:
                held.since = now
                subjects = held.subjects()
                self.progress_acks += len(subjects)
                self._send_to_server(subjects, b"+WPI")

    @property
    def ack_stall_after_s(self) -> float:
        return max(STALL_MIN_S, self.ack_wait_s / 2)

    def ack_stalled(self, waited_s: float, holders: list[str]) -> None:
        self.ack_stalls += 1
        reasons = list(holders)
        unacked = max(sum(len(h.replies) for h in self.held.values()) + len(self.buffer), self.server_ack_pending)
        if self.checkpoint_interval_s is not None:
            reasons.append(f"input is acked when the checkpoint that read it commits (every "
                           f"{self.checkpoint_interval_s:g}s): are checkpoints failing or slow?")
        if 0 < self.max_ack_pending <= unacked:
            reasons.append(f"max_ack_pending ({self.max_ack_pending:,}) is reached: the server delivers no more "
                           "messages until some are acked")
        LOG.warning(
            "%s: acks have not advanced for %.0fs (%s messages delivered and not acked): %s",
            self.owner, waited_s, f"{unacked:,}", "; ".join(reasons) or "the pipeline has not finished them",
        )

    def problems(self) -> list[str]:
        out = super().problems()
        if self.lost_before_resume:
            out.append(f"up to {self.lost_before_resume:,} messages after the checkpoint were no longer in stream "
                       f"'{self.stream}' when the run resumed (see the warning)")
        if self.ack_stalls:
            out.append(f"acks stalled {self.ack_stalls}x for over {self.ack_stall_after_s:g}s (see the warnings)")
        return out

    def close(self) -> None:
        self._watchdog_task.cancel()
        self._consumer_task.cancel()
        self.conn.close()  # flushes the acks already sent; held messages come back on restart

    def status(self) -> dict[str, Any]:
        out = super().status()
        out.update(
            {
                "acked": self.acked,
                "held": sum(len(h.replies) for h in self.held.values()),
                "duplicates_dropped": self.duplicates_dropped,
                "redelivered": self.redelivered,
                "ack_stalls": self.ack_stalls,
                "progress_acks": self.progress_acks,
                "ack_wait_s": self.ack_wait_s,
                "max_ack_pending": self.max_ack_pending,
            }
        )
        if self.pending is not None:
            out["pending"] = self.pending
        return out
