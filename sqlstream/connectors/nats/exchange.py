"""Exchanges between the workers of a group: rows hashed by key through an internal
JetStream stream, so that state keyed by anything but the partition key still lives
in one place (docs/scale-out.md#shuffles).

Each exchange of a sink has its own stream, ``SQLSTREAM_X_<group>_<sink>`` (the second
side of a join ``<sink>-1``), with one subject per partition,
``_sqlstream.x.<group>.<sink>.<n>``, and work-queue retention: a message stays until
the partition that reads it commits the checkpoint that read it. What crosses is rows,
or the partial aggregates of closed TUMBLE windows (``ExchangeChannel.window_end``).

**Writing** (:class:`ExchangeWriter`, in the run of source partition ``u``): the rows
reaching the exchange are hashed by its key columns (:mod:`sqlstream.connectors.key_hash`;
no keys: all to partition 0) and sent as one Arrow IPC message per partition, with the
hidden columns (``__wm``, ``__src_id``) and headers: ``Sqlstream-Upstream: u``,
``Sqlstream-Run`` (an id of this run of ``u``: a new owner's is another),
``Sqlstream-Watermark`` (the writer's watermark when it sent it) and a ``Nats-Msg-Id``
(run and message number: the stream drops a republished copy). A partition that
gets no rows for a while still hears the watermark: an empty message, at most every
``WATERMARK_EVERY_S``, and at every checkpoint. An idle source partition
(``idle_timeout``) says so with ``Sqlstream-Idle: 1``. Before it sends anything, the
writer waits until the stream stored what it sent before, so each upstream's messages
reach a partition in order, republished ones included.

**Reading** (:class:`ExchangeReader`, in the run of exchange partition ``d``): a
JetStream pull consumer on the partition's subject, and per upstream ``u``:

* *replays are dropped*: a new run of ``u`` replays from its last checkpoint and
  sends again rows the reader already took. Each row carries its source message id
  (``STREAM:seq``), and the rows of one run arrive in sequence order (the part below
  an exchange is stateless), so the reader keeps how far it took ``u``'s rows (a
  sequence, and how many rows of it) and drops a new run's rows until they go beyond
  (:class:`_Upstreams`). Partial aggregates are sent once per closed window, in the
  order of window end, and a replay sends the same windows: the reader drops windows
  that do not end after the last one it took from ``u``;
* *watermarks are the minimum*: the exchange's watermark is the least of the
  upstreams' watermarks (idle ones left out, as at any operator with several inputs),
  and a row's ``__wm`` the least of its own upstream watermark and the others'. So
  no row that was on time where it was read is late after the exchange.

That state travels in the reader's checkpoint position, with the stream sequence.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from sqlstream.batches import empty_batch
from sqlstream.connectors.base import RunContext, SinkWriter, SourceBatch, SourceReader
from sqlstream.connectors.dead_letters import DeadLetter
from sqlstream.connectors.key_hash import partitions_of
from sqlstream.connectors.nats import NatsSource
from sqlstream.connectors.nats.connection import NatsConnection, runtime_error
from sqlstream.connectors.nats.jetstream import JetStreamReader
from sqlstream.connectors.nats.messages import Received, encode_arrow_payload
from sqlstream.connectors.nats.routing import parse_headers
from sqlstream.connectors.nats.sink import JetStreamPublisher
from sqlstream.connectors.options import RawOption
from sqlstream.hidden import MIN_WATERMARK, SOURCE_ID_COLUMN, WM_COLUMN

__all__ = ["ExchangeChannel", "ExchangeWriter", "ExchangeSource", "ExchangeReader", "WATERMARK_EVERY_S"]

UPSTREAM_HEADER = "Sqlstream-Upstream"
WATERMARK_HEADER = "Sqlstream-Watermark"
IDLE_HEADER = "Sqlstream-Idle"
RUN_HEADER = "Sqlstream-Run"
#: how often, at most, a writer tells partitions it sends no rows to that its watermark moved
WATERMARK_EVERY_S = 0.1
_ACK_TIMEOUT_S = 5.0
_RUNS_KEPT = 4  # runs of one upstream followed at once


def _token(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


@dataclass(frozen=True)
class ExchangeChannel:
    """Where one exchange's rows go: its stream, subjects and partitioning."""

    url: str
    group: str
    sink: str
    partitions: int
    keys: tuple[str, ...]
    replicas: int = 1  # the partitioned source's: an exchange survives what its source survives
    #: what crosses: None, rows (replays recognised by source message id); or the name of
    #: the window-end column of partial aggregates, sent once per closed window
    window_end: str | None = None

    @property
    def stream(self) -> str:
        return f"SQLSTREAM_X_{_token(self.group)}_{_token(self.sink)}"

    @property
    def subject(self) -> str:
        return f"_sqlstream.x.{_token(self.group)}.{_token(self.sink)}"

    def subject_of(self, partition: int) -> str:
        return f"{self.subject}.{partition}"

    async def ensure_stream(self, js) -> None:
        """Create the exchange's stream if it is missing."""
        try:
            await js.stream_info(self.stream)
        except NotFoundError:
            await js.add_stream(StreamConfig(name=self.stream, subjects=[f"{self.subject}.*"],
                                             retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE,
                                             num_replicas=self.replicas))


def _headers(upstream: int, run: str, number: int, watermark: int, idle: bool) -> bytes:
    """The headers of message ``number`` of an upstream run (its Nats-Msg-Id lets the
    stream drop a republished copy)."""
    idle_line = f"{IDLE_HEADER}: 1\r\n" if idle else ""
    return (f"NATS/1.0\r\nNats-Msg-Id: {run}:{number}\r\n{UPSTREAM_HEADER}: {upstream}\r\n{RUN_HEADER}: {run}\r\n"
            f"{WATERMARK_HEADER}: {watermark}\r\n{idle_line}\r\n").encode()


class ExchangeWriter(SinkWriter):
    """Sends the rows of source partition ``upstream`` to the exchange's partitions;
    takes every column, hidden ones included, and is told the watermark and idleness."""

    delivery = "exactly-once"  # (what a replay sends again, the reader drops)

    def __init__(self, channel: ExchangeChannel, upstream: int, ctx: RunContext):
        self.channel = channel
        self.upstream = upstream
        self.clock = ctx.clock
        self.owner = f"exchange of sink '{channel.sink}'"
        self.watermark_us = MIN_WATERMARK
        self.idle = False
        self.sent_watermarks = np.full(channel.partitions, MIN_WATERMARK, dtype=np.int64)
        self.last_round = 0.0
        self.run = uuid.uuid4().hex[:16]  # this run of the upstream partition (a replay is another)
        self.rows = 0
        self.messages = 0
        self.conn = NatsConnection(channel.url, self.owner).start()
        self.publisher = JetStreamPublisher(self.conn, self.owner, channel.stream)
        try:
            self.conn.call(channel.ensure_stream(self.conn.nc.jetstream()), timeout=15)
            self.conn.call(self.publisher.start(), timeout=10)
        except Exception:
            self.conn.close()
            raise

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        targets = partitions_of(batch, self.channel.keys, self.channel.partitions)
        order = np.argsort(targets, kind="stable")
        counts = np.bincount(targets, minlength=self.channel.partitions)
        ordered = batch.take(pa.array(order))
        bounds = np.concatenate([[0], np.cumsum(counts)])
        to = np.flatnonzero(counts)
        payloads = [encode_arrow_payload(ordered.slice(bounds[d], counts[d])) for d in to]
        self._send(to, payloads)
        self.rows += batch.num_rows

    def watermark(self, watermark: int) -> None:
        self.watermark_us = max(self.watermark_us, watermark)

    def set_idle(self, idle: bool) -> None:
        if idle != self.idle:
            self.idle = idle
            self._send(np.arange(self.channel.partitions), [b""] * self.channel.partitions)

    def _send(self, partitions: np.ndarray, payloads: list[bytes]) -> None:
        """Publish (after the stream stored what went before: each partition gets this
        upstream's messages in order)."""
        self._wait()
        subjects = pa.array([self.channel.subject_of(int(d)) for d in partitions], pa.string())
        first = self.messages
        headers = pa.array([_headers(self.upstream, self.run, first + i, self.watermark_us, self.idle)
                            for i in range(len(payloads))], pa.binary())
        unacked, out = self.publisher.prepare(subjects, pa.array(payloads, pa.binary()), headers)
        self.conn.submit(self.publisher.publish(unacked, out))
        self.sent_watermarks[partitions] = self.watermark_us
        self.messages += len(payloads)

    def _announce(self, force: bool) -> None:
        """Tell partitions whose last message carried an older watermark the new one."""
        stale = np.flatnonzero(self.sent_watermarks < self.watermark_us)
        now = time.monotonic()
        if stale.size and (force or now - self.last_round >= WATERMARK_EVERY_S):
            self.last_round = now
            self._send(stale, [b""] * stale.size)

    def _wait(self) -> None:
        self.conn.call(self.publisher.wait(_ACK_TIMEOUT_S))

    def flush(self) -> None:
        self._announce(force=False)
        self._wait()

    def durable_rows(self, written: int) -> int:
        self._wait()
        return written

    def prepare_commit(self, epoch: int) -> dict | None:
        self._announce(force=True)
        self._wait()
        return None

    def close(self) -> None:
        if self.conn.closed:
            return
        try:
            self._announce(force=True)
            self._wait()
        finally:
            self.conn.close()

    def abort(self) -> None:
        self.conn.close()

    def status(self) -> dict[str, Any]:
        return {"rows": self.rows, "messages": self.messages, "republished": self.publisher.republished}


class _Upstreams:
    """What the reader knows of each upstream partition (see the module docstring).

    A row's *position* in what an upstream run sends to this partition is its source
    sequence and its rank among the rows of that sequence (a message may carry some of
    a sequence's rows, the next message the rest). A run's rows come in increasing
    position, and a later run of the same upstream (a new owner, after a restart)
    sends the same rows at the same positions from its checkpoint on: a row is new
    when its position is beyond the ``taken`` frontier."""

    def __init__(self, partitions: int, saved: dict | None = None):
        self.taken_seq = np.zeros(partitions, dtype=np.int64)  # the frontier: rows up to this sequence
        self.taken_rank = np.zeros(partitions, dtype=np.int64)  # and this many of its rows were taken
        #: per upstream, its latest runs: the last sequence each sent and how many rows of
        #: it (a paused owner may still send while the next owner runs: both are followed)
        self.runs: list[dict[str, list[int]]] = [{} for _ in range(partitions)]
        self.watermarks = np.full(partitions, MIN_WATERMARK, dtype=np.int64)
        self.idle = np.zeros(partitions, dtype=bool)
        self.replayed = 0  # rows dropped: sent again by a replay
        if saved:
            for name in ("taken_seq", "taken_rank", "watermarks", "idle"):
                setattr(self, name, np.array(saved[name], dtype=getattr(self, name).dtype))
            self.runs = [dict(runs) for runs in saved["runs"]]
            self.replayed = saved["replayed"]

    def state(self) -> dict:
        out = {name: getattr(self, name).tolist()
               for name in ("taken_seq", "taken_rank", "watermarks", "idle")}
        return {**out, "runs": [dict(runs) for runs in self.runs], "replayed": self.replayed}

    def watermark(self, leave_out: int | None = None) -> int:
        """The least watermark of the live upstreams (all idle: the greatest)."""
        live = ~self.idle
        if leave_out is not None:
            live[leave_out] = False
        if live.any():
            return int(self.watermarks[live].min())
        if leave_out is not None:
            return int(np.iinfo(np.int64).max)
        return int(self.watermarks.max())

    def new_windows(self, upstream: int, ends: np.ndarray) -> np.ndarray:
        """Which partial rows (of ``upstream``) belong to windows it had not sent before:
        a partition sends each window's partials once, when its watermark closes it, in
        the order of window end; a replay sends the same windows again."""
        keep = ends > self.taken_seq[upstream]
        if keep.any():
            self.taken_seq[upstream] = max(self.taken_seq[upstream], int(ends.max()))
        self.replayed += int(ends.size - keep.sum())
        return keep

    def new_rows(self, upstream: int, run: str, sequences: np.ndarray) -> np.ndarray:
        """Which rows (of ``upstream``'s ``run``, in the order sent) were not taken before; advances."""
        runs = self.runs[upstream]
        cursor = runs.pop(run, [-1, 0])  # a new run: its positions count from its first row
        runs[run] = cursor  # (the latest last)
        while len(runs) > _RUNS_KEPT:
            del runs[next(iter(runs))]
        starts = np.flatnonzero(np.r_[True, sequences[1:] != sequences[:-1]])
        ranks = np.arange(sequences.size) - np.repeat(starts, np.diff(np.r_[starts, sequences.size]))
        if sequences[0] == cursor[0]:  # the rest of the sequence the run's last message ended with
            ranks[:starts[1] if starts.size > 1 else sequences.size] += cursor[1]
        seq, rank = self.taken_seq[upstream], self.taken_rank[upstream]
        keep = (sequences > seq) | ((sequences == seq) & (ranks >= rank))
        cursor[:] = [int(sequences[-1]), int(ranks[-1]) + 1]
        if keep[-1]:
            self.taken_seq[upstream], self.taken_rank[upstream] = sequences[-1], ranks[-1] + 1
        self.replayed += int(sequences.size - keep.sum())
        return keep


class _ExchangeDecoder:
    """Decodes a micro-batch of exchange messages: rows not taken before, each with its
    watermark, and the exchange's watermark after them."""

    def __init__(self, schema: pa.Schema, partitions: int, saved: dict | None, window_end: str | None = None):
        self.schema = schema
        self.window_end = window_end
        self.upstreams = _Upstreams(partitions, saved)
        self.has_watermark = WM_COLUMN in schema.names
        self.row_watermarks: np.ndarray | None = None

    def decode(self, received: Received) -> tuple[pa.RecordBatch, list[DeadLetter]]:
        pieces, stamps = [], []
        ups = self.upstreams
        for payload, block in zip(received.payloads, received.headers):
            headers = parse_headers(block) or {}
            if UPSTREAM_HEADER not in headers:
                raise runtime_error(f"a message without '{UPSTREAM_HEADER}' in exchange stream ({headers})",
                                    hint="only sqlstream workers publish to _sqlstream.x.* subjects")
            upstream = int(headers[UPSTREAM_HEADER])
            if payload:
                rows = pa.ipc.open_stream(payload).read_all().combine_chunks()
                batch = rows.to_batches()[0] if rows.num_rows else None
                if batch is not None:
                    if self.window_end is not None:
                        keep = ups.new_windows(upstream, batch.column(self.window_end).to_numpy(zero_copy_only=False))
                    else:
                        keep = ups.new_rows(upstream, headers[RUN_HEADER], _sequences(batch.column(SOURCE_ID_COLUMN)))
                    if not keep.all():
                        batch = batch.filter(pa.array(keep))
                    if batch.num_rows:
                        pieces.append(batch)
                        if self.has_watermark:
                            own = batch.column(WM_COLUMN).to_numpy(zero_copy_only=False)
                            stamps.append(np.minimum(own, ups.watermark(leave_out=upstream)))
            ups.watermarks[upstream] = max(ups.watermarks[upstream], int(headers[WATERMARK_HEADER]))
            ups.idle[upstream] = headers.get(IDLE_HEADER) == "1"
        self.row_watermarks = np.concatenate(stamps) if stamps else None
        if not pieces:
            return empty_batch(self.schema), []
        table = pa.Table.from_batches(pieces, schema=self.schema).combine_chunks()
        return table.to_batches()[0], []


def _sequences(source_ids: pa.Array) -> np.ndarray:
    """The stream sequence of each ``STREAM:seq`` source message id."""
    after = pc.utf8_slice_codeunits(source_ids, start=source_ids[0].as_py().rindex(":") + 1)
    return pc.cast(after, pa.int64()).to_numpy(zero_copy_only=False)


class ExchangeSource(NatsSource):
    """Partition ``partition`` of an exchange, read as a JetStream source of Arrow messages
    (``schema``: the rows as they reach the exchange, hidden columns included)."""

    external_watermark = True

    @classmethod
    def of(cls, channel: ExchangeChannel, partition: int, name: str, schema: pa.Schema,
           idle_timeout_us: int | None) -> "ExchangeSource":
        raw = {"connector": "nats", "url": channel.url, "stream": channel.stream, "format": "arrow",
               "subject": channel.subject_of(partition), "deliver": "all", "max_future": "off",
               "durable": f"partition-{partition}", "on_error": "fail"}
        if idle_timeout_us is not None:
            raw["idle_timeout"] = f"{idle_timeout_us}us"
        source = cls.create(name, schema, {k: RawOption(v) for k, v in raw.items()}, None)
        source.channel = channel
        return source

    def open(self, ctx: RunContext) -> SourceReader:
        return ExchangeReader(self, ctx, self.channel)


class ExchangeReader(JetStreamReader):
    """Reads one partition of an exchange (``connector``: a JetStream source on its
    stream and subject); its position carries the upstreams' state."""

    work_queue = True

    def __init__(self, connector, ctx: RunContext, channel: ExchangeChannel):
        self.channel = channel  # (before the connection starts: _setup reads it)
        super().__init__(connector, ctx)
        saved = (ctx.start_position or {}).get("upstreams") if ctx.start_position else None
        self.decoder = _ExchangeDecoder(connector.schema, channel.partitions, saved, channel.window_end)

    async def _setup(self) -> None:
        await self.channel.ensure_stream(self.conn.nc.jetstream())
        await super()._setup()

    def make_batch(self, items: list) -> SourceBatch:
        item = super().make_batch(items)
        if self.decoder.has_watermark:
            item.row_watermarks = self.decoder.row_watermarks
            item.watermark = self.decoder.upstreams.watermark()
        return item

    def position(self) -> dict:
        return {**super().position(), "upstreams": self.decoder.upstreams.state()}

    def status(self) -> dict[str, Any]:
        return {**super().status(), "replayed_rows_dropped": self.decoder.upstreams.replayed}
