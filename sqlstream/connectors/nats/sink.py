"""``connector = 'nats'`` as a sink: rows published to core NATS or into JetStream.

Each row is one message (``format = 'json'``), or each micro-batch one Arrow IPC
message per subject (``format = 'arrow'``). ``subject`` may name columns,
``'alerts.{sensor_id}'``: values are cast to text, and whitespace and the wildcards
``*`` / ``>`` in them become ``_`` so that every row has a valid subject.

With ``stream`` set, messages go through JetStream: publishes are sent without
waiting, their acknowledgements are collected on the connection's loop, and
``flush`` (called before any source message is acked, on every tick and at close)
waits until the server has stored every row — republishing, after ``ack_timeout``,
rows whose ack did not come. Each row carries a ``Nats-Msg-Id`` that does not depend
on how batches were cut, so a republish, or a replay after a crash, is dropped by
the stream's duplicate window:

* rows of a stateless query over a JetStream source: ``<sink>:<stream>:<seq>``, plus
  ``#<n>`` for the n-th further row derived from the same message;
* window results: ``<sink>:<window_start>:<window_end>:<group key...>`` (times in µs);
* other rows (changelogs, core NATS input) get no id: at-least-once.

Checkpoints (``delivery``): a JetStream sink whose rows all get an id is
'effectively-once' — ``prepare_commit`` waits until the stream stored every row
written so far, and a resumed run's replay of the epoch after the checkpoint
publishes the same ids, which the stream drops as long as they are within its
``duplicate_window``. Without ids (updating results, ``format = 'arrow'``, input
without message ids) and on core NATS it is 'at-least-once'.
"""

from __future__ import annotations

import asyncio
import bisect
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.connectors.base import RunContext, SinkWriter
from sqlstream.connectors.encode import json_rows
from sqlstream.connectors.nats.connection import LOG, NatsConnection, require_stream, runtime_error
from sqlstream.connectors.nats.messages import encode_arrow_payload, encode_json_payloads
from sqlstream.connectors.nats.protocol import Outgoing, msg_id_headers, prepare, prepare_rows, send, text
from sqlstream.connectors.templates import DestinationTemplate
from sqlstream.hidden import SOURCE_ID_COLUMN

__all__ = ["SubjectTemplate", "NatsWriter", "JetStreamPublisher", "message_ids"]

#: publishes awaiting their JetStream ack before ``write`` waits for some
_MAX_OUTSTANDING = 65_536
_PUBLISH_ATTEMPTS = 5


class SubjectTemplate(DestinationTemplate):
    """``'alerts.{sensor_id}'``: a NATS subject from row values (whitespace, ``*`` and
    ``>`` in values become ``_``)."""

    def __init__(self, text: str):
        super().__init__(text, forbidden=r"[\s*>]", kind="subject")


def message_ids(
    sink: str, batch: pa.RecordBatch, source_ids: pa.Array | None, key_columns: list[str] | None
) -> pa.Array | None:
    """Deterministic ``Nats-Msg-Id`` per row (see the module docstring), or None."""
    if source_ids is not None and source_ids.null_count < len(source_ids):
        ids = pc.fill_null(source_ids, text(""))
        # rank of each row among the rows from the same message, in arrival order
        codes = pc.dictionary_encode(ids).indices.to_numpy(zero_copy_only=False)
        order = np.argsort(codes, kind="stable")
        sorted_codes = codes[order]
        starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
        first = np.repeat(starts, np.diff(np.r_[starts, len(codes)]))
        rank = np.empty(len(codes), dtype=np.int64)
        rank[order] = np.arange(len(codes)) - first
        out = pc.binary_join_element_wise(text(sink), ids, text(":"))
        if rank.any():
            numbers = pc.cast(pa.array(rank), pa.string())
            suffix = pc.if_else(pa.array(rank > 0), pc.binary_join_element_wise(text("#"), numbers, text("")), text(""))
            out = pc.binary_join_element_wise(out, suffix, text(""))
        if source_ids.null_count:  # rows from no message (another source): no id, not one shared id
            out = pc.if_else(pc.is_valid(source_ids), out, pa.scalar(None, out.type))
        return out
    if key_columns:
        parts = [pc.fill_null(pc.cast(_id_part(batch.column(name)), pa.string()), text("\u2205")) for name in key_columns]
        ids = pc.binary_join_element_wise(text(sink), *parts, text(":"))
        return pc.replace_substring_regex(ids, pattern=r"[\r\n]", replacement=" ")  # a header value is one line  # a header value is one line
    return None


def _id_part(column: pa.Array) -> pa.Array:
    """Timestamps as integer microseconds (compact and unambiguous), the rest as text."""
    if pa.types.is_timestamp(column.type):
        return pc.cast(pc.cast(column, pa.timestamp("us", column.type.tz)), pa.int64())
    return column


@dataclass
class _Unacked:
    """One write's messages whose JetStream acks are still due."""

    first: int  # token of the first message; message i has token first + i
    subjects: pa.Array | str
    payloads: pa.Array
    headers: pa.Array | None
    acked: np.ndarray
    left: int

    def outgoing(self, prefix: str, rows: np.ndarray | None = None) -> Outgoing:
        """The messages (``rows`` of them, default all) framed with their reply subjects."""
        tokens = np.arange(self.first, self.first + len(self.payloads), dtype=np.int64)
        subjects, payloads, headers = self.subjects, self.payloads, self.headers
        if rows is not None:
            take = pa.array(rows)
            tokens = tokens[rows]
            subjects = subjects if isinstance(subjects, str) else subjects.take(take)
            payloads = payloads.take(take)
            headers = headers.take(take) if headers is not None else None
        replies = pc.binary_join_element_wise(text(prefix), pc.cast(pa.array(tokens), pa.string()), text("."))
        return prepare(subjects, payloads, replies, headers)


class JetStreamPublisher:
    """Publishes with a reply subject per message and collects the stream's acks."""

    def __init__(self, conn: NatsConnection, owner: str, stream: str):
        self.conn = conn
        self.owner = owner
        self.stream = stream
        self.unacked: dict[int, _Unacked] = {}  # by first token (loop thread)
        self.firsts: list[int] = []
        self.next_token = 0  # driver thread
        self.stored = 0
        self.duplicates = 0
        self.errors: list[str] = []
        self.republished = 0
        self.publishing: set[asyncio.Task] = set()

    async def start(self) -> None:
        self.prefix = self.conn.nc.new_inbox()
        self.empty = asyncio.Event()
        self.empty.set()
        self.subscription = await self.conn.nc.subscribe(
            self.prefix + ".*", cb=self._on_ack, pending_msgs_limit=0, pending_bytes_limit=0
        )

    def pending(self) -> int:
        return sum(u.left for u in list(self.unacked.values()))

    def prepare(self, subjects, payloads: pa.Array, headers: pa.Array | None) -> tuple[_Unacked, Outgoing]:
        """Driver thread: number the messages and frame them."""
        n = len(payloads)
        unacked = _Unacked(self.next_token, subjects, payloads, headers, np.zeros(n, dtype=bool), n)
        self.next_token += n
        return unacked, unacked.outgoing(self.prefix)

    async def publish(self, unacked: _Unacked, out: Outgoing) -> None:
        task = asyncio.current_task()
        self.publishing.add(task)
        try:
            self.empty.clear()
            self.unacked[unacked.first] = unacked
            self.firsts.append(unacked.first)
            await send(self.conn.nc, out)
        finally:
            self.publishing.discard(task)
            if not self.unacked:
                self.empty.set()

    async def _on_ack(self, msg) -> None:
        token = int(msg.subject[len(self.prefix) + 1 :])
        index = bisect.bisect_right(self.firsts, token) - 1
        if index < 0:
            return
        unacked = self.unacked[self.firsts[index]]
        row = token - unacked.first
        if row >= len(unacked.acked) or unacked.acked[row]:
            return
        data = msg.data
        if not data:  # 503: no stream listens on the subject
            subject = unacked.subjects if isinstance(unacked.subjects, str) else unacked.subjects[row].as_py()
            self._error(f"no JetStream stream stores subject '{subject}'")
        elif b'"error"' in data:
            error = orjson.loads(data)["error"]
            self._error(f"JetStream refused a message: {error.get('description', error)}")
        elif b'"duplicate"' in data:
            self.duplicates += 1
        else:
            self.stored += 1
        unacked.acked[row] = True
        unacked.left -= 1
        if unacked.left == 0:
            del self.unacked[unacked.first]
            self.firsts.pop(index)
            if not self.unacked and not self.publishing:
                self.empty.set()

    def _error(self, text: str) -> None:
        if len(self.errors) < 10:
            self.errors.append(text)

    async def wait(self, ack_timeout_s: float) -> None:
        """Until every message published so far is stored (republishing stragglers)."""
        if self.publishing:
            await asyncio.gather(*list(self.publishing), return_exceptions=True)
        for attempt in range(_PUBLISH_ATTEMPTS + 1):
            if not self.unacked:
                break
            try:
                await asyncio.wait_for(self.empty.wait(), ack_timeout_s)
            except asyncio.TimeoutError:
                if attempt == _PUBLISH_ATTEMPTS:
                    break
                await self._republish()
        if self.errors:
            errors, self.errors = self.errors, []
            raise runtime_error(f"{self.owner}: {errors[0]}", hint=_stream_hint(self.stream))
        if self.unacked:
            raise runtime_error(
                f"{self.owner}: {self.pending()} message(s) were not acknowledged by JetStream "
                f"after {_PUBLISH_ATTEMPTS + 1} tries",
                hint="is the server up and the stream's storage healthy? (ack_timeout sets the wait per try)",
            )

    async def _republish(self) -> None:
        """Publish again what was not acked (a reconnect can lose both ways); the
        Nats-Msg-Id makes the server drop rows it already stored."""
        if not self.conn.connected:
            return  # still reconnecting: nothing can go out now; the next round tries again
        for unacked in list(self.unacked.values()):
            rows = np.flatnonzero(~unacked.acked)
            self.republished += len(rows)
            await send(self.conn.nc, unacked.outgoing(self.prefix, rows))


def _stream_hint(stream: str) -> str:
    return f"the sink's subject must be one of stream '{stream}''s subjects (nats stream info {stream})"


class NatsWriter(SinkWriter):
    """Publishes a sink's rows (JetStream when ``stream`` is set)."""

    accepts_source_ids = True

    def __init__(self, connector, schema: pa.Schema, ctx: RunContext):
        self.c = connector
        self.config = connector.config
        self.name = connector.sink_name
        self.owner = f"sink '{self.name}'"
        self.format = self.config["format"]
        self.ack_timeout_s = self.config["ack_timeout"] / 1e6
        self.subject = SubjectTemplate(self.config["subject"])
        self.subject.bind(schema, self.owner)
        key_columns = ctx.row_key_columns  # window bounds + group key of final window results
        self.key_columns = key_columns if key_columns and all(c in schema.names for c in key_columns) else None
        self.stream = self.config["stream"]
        #: every row gets a Nats-Msg-Id that a replay reproduces: final window results
        #: (key columns) or rows that carry their source message's id
        self.ids_deterministic = bool(self.stream) and self.format == "json" and (
            self.key_columns is not None or ctx.source_ids
        )
        self.rows_without_id = 0  # JetStream rows published with no Nats-Msg-Id (status)
        self.clock = ctx.clock
        self.duplicate_window_s = 0.0  # the stream's: how long it remembers a Nats-Msg-Id
        self.late_recoveries = 0  # resumed after the duplicate window: the replay may be stored twice
        self.published = 0
        self.lost = 0  # core NATS batches that could not be handed to the client
        self._unflushed = 0
        self._flushed_token = 0
        self.conn = NatsConnection(self.config["url"], self.owner, connect_timeout_s=self.config["connect_timeout"] / 1e6)
        self.conn.start()
        self.publisher: JetStreamPublisher | None = None
        if self.stream:
            self.publisher = JetStreamPublisher(self.conn, self.owner, self.stream)
            try:
                check = require_stream(self.conn.nc, self.stream, self.owner, self.config["url"])
                self.conn.call(check, timeout=self.conn.connect_timeout_s + 10)
                self.conn.call(self.publisher.start(), timeout=10)
                info = self.conn.call(self.conn.nc.jetstream().stream_info(self.stream), timeout=10)
                self.duplicate_window_s = float(info.config.duplicate_window or 0)
            except Exception:
                self.conn.close()
                raise

    def write(self, batch: pa.RecordBatch) -> None:
        source_ids = None
        if batch.num_columns and batch.schema.names[-1] == SOURCE_ID_COLUMN:
            source_ids = batch.column(batch.num_columns - 1)
            batch = batch.drop_columns([SOURCE_ID_COLUMN])
        if batch.num_rows == 0:
            return
        subjects = self.subject.render(batch)
        if self.format == "arrow":
            subjects, payloads = self._arrow_messages(batch, subjects)
            headers = None
        else:
            rows = json_rows(batch) if self.publisher is None else None
            if rows is not None:  # a small batch to core NATS: strings and one bytes join
                self._send_rows(subjects if isinstance(subjects, str) else subjects.to_pylist(), rows)
                return
            payloads = encode_json_payloads(batch)
            headers = None
            if self.publisher is not None:
                ids = message_ids(self.name, batch, source_ids, self.key_columns)
                headers = msg_id_headers(ids) if ids is not None else None
                self._count_missing_ids(ids, batch.num_rows)
        self._send(subjects, payloads, headers)

    def _count_missing_ids(self, ids: pa.Array | None, rows: int) -> None:
        missing = rows if ids is None else ids.null_count
        if not missing:
            return
        if self.ids_deterministic and not self.rows_without_id:
            LOG.warning("%s: rows without a message id reached a sink declared effectively-once; those rows are "
                        "at-least-once (a replay after a crash publishes them again)", self.owner)
        self.rows_without_id += missing

    def _arrow_messages(self, batch: pa.RecordBatch, subjects: pa.Array | str) -> tuple[pa.Array | str, pa.Array]:
        """One IPC stream per subject."""
        if isinstance(subjects, str):
            return subjects, pa.array([encode_arrow_payload(batch)], pa.binary())
        groups = pc.unique(subjects)
        payloads = [encode_arrow_payload(batch.filter(pc.equal(subjects, subject))) for subject in groups]
        return groups, pa.array(payloads, pa.binary())

    def _send(self, subjects: pa.Array | str, payloads: pa.Array, headers: pa.Array | None) -> None:
        if self.publisher is not None:
            unacked, out = self.publisher.prepare(subjects, payloads, headers)
            self.conn.submit(self.publisher.publish(unacked, out))
            if self.publisher.next_token - self._flushed_token > _MAX_OUTSTANDING:
                self.flush()
        else:
            future = self.conn.submit(send(self.conn.nc, prepare(subjects, payloads)))
            future.add_done_callback(self._report_failure)
        self.published += len(payloads)
        self._unflushed += len(payloads)

    def _send_rows(self, subjects: list[str] | str, rows: list[str]) -> None:
        future = self.conn.submit(send(self.conn.nc, prepare_rows(subjects, [row.encode() for row in rows])))
        future.add_done_callback(self._report_failure)
        self.published += len(rows)
        self._unflushed += len(rows)

    def _report_failure(self, future) -> None:
        error = None if future.cancelled() else future.exception()
        if error is not None:  # e.g. the outgoing buffer filled during an outage: core NATS loses these
            self.lost += 1
            LOG.warning("%s: publishing failed: %s", self.owner, error)

    def flush(self) -> None:
        """JetStream: wait until every row so far is stored (acked by the stream).
        Core NATS is at-most-once and nothing waits: rows are on their way to the
        socket already (a blocking round trip here would stall the pipeline)."""
        if self.publisher is None or (self._unflushed == 0 and not self.publisher.unacked):
            return
        self.conn.call(self.publisher.wait(self.ack_timeout_s))
        self._flushed_token = self.publisher.next_token
        self._unflushed = 0

    # -- checkpoints --------------------------------------------------------------------------------

    @property
    def delivery(self) -> str:  # type: ignore[override]
        """'effectively-once' when every row gets a deterministic Nats-Msg-Id: the stream
        drops what a replayed epoch publishes again, within its ``duplicate_window``."""
        return "effectively-once" if self.ids_deterministic else "at-least-once"

    def prepare_commit(self, epoch: int) -> dict | None:
        """Wait until the stream stored every row written so far (their PubAcks; core
        NATS: a round trip, so the server has read them): the epoch's output is
        published before its checkpoint commits. Nothing is left for ``commit``; the
        checkpoint keeps when that was, for ``recover`` to check the duplicate window."""
        if self.publisher is not None:
            self.flush()
            return {"stored_at_us": self.clock.now_us()}
        try:
            timeout = max(1, int(self.ack_timeout_s))
            self.conn.call(self.conn.nc.flush(timeout=timeout), timeout=self.ack_timeout_s + 5)
        except Exception as error:  # noqa: BLE001 - converted: the checkpoint must not commit
            raise runtime_error(
                f"{self.owner}: NATS did not confirm the rows of checkpoint epoch {epoch}: {error or type(error).__name__}",
                hint="is the server reachable? the checkpoint is retried",
            ) from error
        return None

    def recover(self, epoch: int, prepared: dict | None) -> None:
        """Nothing to finish: rows are visible once stored. The replay of what followed
        the checkpoint is dropped by Nats-Msg-Id only within the stream's duplicate
        window, counted from each original publish: say so when the restart comes later."""
        if not self.ids_deterministic or not prepared or "stored_at_us" not in prepared:
            return
        since_s = (self.clock.now_us() - prepared["stored_at_us"]) / 1e6
        if since_s > self.duplicate_window_s:
            LOG.warning(
                "%s: resuming %.0fs after checkpoint %d, beyond stream '%s''s duplicate_window (%gs): rows the "
                "crashed run published after that checkpoint may be stored twice (raise the stream's "
                "duplicate_window to cover restarts)", self.owner, since_s, epoch, self.stream, self.duplicate_window_s,
            )
            self.late_recoveries += 1

    def close(self) -> None:
        if self.conn.closed:
            return
        try:
            self.flush()
            if self.publisher is None and self.conn.connected:  # the server has read every row
                try:
                    self.conn.call(self.conn.nc.flush(timeout=max(1, int(self.ack_timeout_s))), timeout=self.ack_timeout_s + 5)
                except Exception as error:  # noqa: BLE001 - core NATS is at-most-once: report, go on
                    LOG.warning("%s: final flush failed: %s", self.owner, error)
        finally:
            self.conn.close()

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"published": self.published, "lost": self.lost, "disconnects": self.conn.events.disconnects}
        if self.publisher is not None:
            out.update(stored=self.publisher.stored, duplicates=self.publisher.duplicates,
                       republished=self.publisher.republished, rows_without_id=self.rows_without_id,
                       late_recoveries=self.late_recoveries)
        return out
