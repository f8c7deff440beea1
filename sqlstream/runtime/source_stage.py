"""One read of one source per run, fanned out to every query that uses it.

The stage applies the source-level rules before any query sees a row: bad records
(per ``on_error``), NULL event times, the future-skew guard (``max_future``, against
the wall clock), per-row watermark stamps (``__wm``), idleness (``idle_timeout``),
and acknowledgement of input once every consumer has processed it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.batches import event_time_us
from sqlstream.connectors.base import SourceBatch, SourceReader
from sqlstream.connectors.dead_letters import DeadLetter, DeadLetterOutput, rows_as_dead_letters
from sqlstream.errors import ExecutionError
from sqlstream.hidden import MAX_WATERMARK, WM_COLUMN
from sqlstream.operators.base import Operator
from sqlstream.runtime.sink import SinkOperator
from sqlstream.runtime.watermarks import WatermarkTracker

__all__ = ["SourceStage", "SourceSpec", "PendingAck"]


@dataclass
class SourceSpec:
    name: str
    schema: pa.Schema
    watermark_column: str | None = None
    watermark_delay_us: int = 0
    on_error: str = "dead_letter"
    max_future_us: int | None = 3_600_000_000
    idle_timeout_us: int | None = None
    bounded: bool = False
    #: what a checkpointed run of this source loses across a restart, in words (see
    #: SourceConnector.replay_gap); None: the reader resumes at a saved position
    replay_gap: str | None = None
    #: the reader gives each row's ``__wm`` and the watermark (an exchange between workers)
    external_watermark: bool = False


@dataclass
class PendingAck:
    """A batch's ack, held until every row derived from it is durable everywhere."""

    max_event: int | None  # µs: the batch's latest event time (None: no rows or no watermark)
    ack: Callable[[], None]
    written: dict[int, int]  # rows each downstream sink (by id) had received after the batch
    since: float  # monotonic time the batch was taken


@dataclass
class SourceMetrics:
    rows_in: int = 0
    records_in: int = 0
    batches: int = 0
    skipped: int = 0
    bytes_in: int | None = None  # bytes read, when the reader says (SourceBatch.raw_bytes)
    last_data_us: int = 0
    extra: dict = field(default_factory=dict)


class SourceStage:
    def __init__(self, spec: SourceSpec, reader: SourceReader, dead_letters: DeadLetterOutput, clock):
        self.spec = spec
        self.reader = reader
        self.dead_letters = dead_letters
        self.clock = clock
        self.consumers: list[tuple[Operator, int]] = []
        self.metrics = SourceMetrics(last_data_us=clock.now_us())
        self.tracker = None
        if spec.watermark_column or spec.external_watermark:
            self.tracker = WatermarkTracker(spec.watermark_delay_us)
        self.ended = False
        self.pending_acks: list[PendingAck] = []
        self.acks_moved_at = clock.monotonic()  # when the oldest pending ack was last released
        self.stall_warned = False  # the current stall was reported
        #: the run takes checkpoints: input is acknowledged when the epoch that read it is
        #: committed (``release_committed``), not when windows emit
        self.checkpointing = False

    @property
    def name(self) -> str:
        return self.spec.name

    def connect(self, op: Operator, port: int = 0) -> None:
        self.consumers.append((op, port))

    @property
    def watermark(self) -> int | None:
        if self.tracker is None:
            return None
        return MAX_WATERMARK if self.ended else self.tracker.watermark

    # -- rows --------------------------------------------------------------------------

    def reject(self, letters: list[DeadLetter]) -> None:
        if not letters:
            return
        if self.spec.on_error == "fail":
            first = letters[0]
            where = f" at {first.position}" if first.position else ""
            raise ExecutionError(
                f"source '{self.name}': bad record{where} ({first.reason}): {first.detail}",
                hint="on_error = 'dead_letter' (the default) keeps the pipeline running and records bad rows",
            )
        if self.spec.on_error == "skip":
            self.metrics.skipped += len(letters)
            self.dead_letters.skip(letters)
            return
        self.dead_letters.write(letters)

    def process(self, item: SourceBatch) -> None:
        """Validate, stamp and fan out one batch from the reader."""
        self.metrics.batches += 1
        max_event = None
        self.metrics.records_in += item.raw_count
        if item.raw_bytes is not None:
            self.metrics.bytes_in = (self.metrics.bytes_in or 0) + item.raw_bytes
        self.reject(item.dead_letters)
        batch = item.batch
        if batch is not None and batch.num_rows:
            self.metrics.last_data_us = self.clock.now_us()
            if self.spec.external_watermark and item.row_watermarks is not None:
                batch = batch.set_column(batch.schema.get_field_index(WM_COLUMN), WM_COLUMN,
                                         pa.array(item.row_watermarks, pa.int64()))
            elif self.tracker is not None and not self.spec.external_watermark:
                batch = self._stamp(batch)
                if batch.num_rows:
                    max_event = int(event_time_us(batch.column(self.spec.watermark_column)).max())
            if self.tracker is not None:
                if self.tracker.idle:
                    self.tracker.idle = False
                    for op, port in self.consumers:
                        op.set_idle(False, port)
            self.metrics.rows_in += batch.num_rows
            for op, port in self.consumers:
                op.push(batch, port)
            if self.tracker is not None:
                for op, port in self.consumers:
                    op.advance(self.tracker.watermark, port)
        if item.event_time_hint is not None and self.tracker is not None:
            before = self.tracker.watermark
            self.tracker.max_event_us = max(self.tracker.max_event_us, item.event_time_hint)
            if self.tracker.watermark > before:
                for op, port in self.consumers:
                    op.advance(self.tracker.watermark, port)
        if item.watermark is not None and self.tracker is not None and item.watermark > self.tracker.watermark:
            self.tracker.external_us = item.watermark  # (never backwards: an upstream that wakes up comes later)
            for op, port in self.consumers:
                op.advance(item.watermark, port)
        if item.ack is not None:
            written = {id(s): s.rows_out for s in self.sinks()}
            self.pending_acks.append(PendingAck(max_event, item.ack, written, self.clock.monotonic()))
        self.release_acks()

    def retention_start(self) -> int | None:
        """The earliest event time any operator downstream still holds back."""
        bounds = []
        for op, _ in self.consumers:
            for node in op.walk():
                bound = node.retention_start()
                if bound is not None:
                    bounds.append(bound)
        return min(bounds, default=None)

    def release_acks(self) -> None:
        """Acknowledge input once every row derived from it is durable in every sink: no
        operator holds its contribution back (open windows, buffered EMIT EVERY changes,
        join state), and each sink made durable the rows it had received by then."""
        if not self.pending_acks or self.checkpointing:
            return
        holding = self.retention_start()
        durable = {id(s): s.durable_rows() for s in self.sinks()}
        ready, keep = [], []
        for entry in self.pending_acks:
            if self._released(entry, holding) and all(durable.get(sink, 0) >= rows for sink, rows in entry.written.items()):
                ready.append(entry.ack)
            else:
                keep.append(entry)
        if not keep or keep[0] is not self.pending_acks[0]:  # the oldest was released: the ack floor moved
            self.acks_moved_at = self.clock.monotonic()
            self.stall_warned = False
        self.pending_acks = keep
        for ack in ready:
            ack()

    def release_committed(self) -> None:
        """Checkpoints: the epoch that read every pending batch is committed (state and
        positions saved, sinks committed), so its input is never needed again."""
        if not self.pending_acks:
            return
        ready, self.pending_acks = self.pending_acks, []
        self.acks_moved_at = self.clock.monotonic()
        self.stall_warned = False
        for entry in ready:
            entry.ack()

    def checkpoint(self) -> dict:
        """This source's part of a checkpoint: the reader's position and the watermark."""
        saved: dict = {"position": self.reader.position(), "ended": self.ended,
                       "last_data_us": self.metrics.last_data_us}
        if self.tracker is not None:
            t = self.tracker
            saved["watermark"] = {"max_event_us": t.max_event_us, "late_rows": t.late_rows,
                                  "future_rows": t.future_rows, "idle": t.idle, "external_us": t.external_us}
        return saved

    def restore(self, saved: dict) -> None:
        """The inverse of ``checkpoint`` (the reader was opened at the saved position)."""
        self.ended = saved["ended"]
        self.metrics.last_data_us = saved["last_data_us"]  # idleness goes on from there
        watermark = saved.get("watermark")
        if self.tracker is not None and watermark is not None:
            self.tracker.max_event_us = watermark["max_event_us"]
            self.tracker.late_rows = watermark["late_rows"]
            self.tracker.future_rows = watermark["future_rows"]
            self.tracker.idle = watermark["idle"]
            self.tracker.external_us = watermark.get("external_us")

    @staticmethod
    def _released(entry: PendingAck, holding: int | None) -> bool:
        return holding is None or (entry.max_event is not None and entry.max_event < holding)

    def check_ack_stall(self) -> None:
        """Warn once per stall when the oldest input waiting for its ack has waited longer
        than the reader's ``ack_stall_after_s`` without the acks advancing, saying what
        holds it back (the reader adds what it knows and counts the stall)."""
        after = self.reader.ack_stall_after_s
        if after is None or not self.pending_acks or self.stall_warned:
            return
        oldest = self.pending_acks[0]
        waited = self.clock.monotonic() - max(self.acks_moved_at, oldest.since)
        if waited < after:
            return
        self.stall_warned = True
        self.reader.ack_stalled(waited, self.ack_holders(oldest))

    def ack_holders(self, entry: PendingAck) -> list[str]:
        """What keeps ``entry`` from being acked, in words."""
        reasons = []
        holding = self.retention_start()
        if not self._released(entry, holding):
            since = datetime.fromtimestamp(holding / 1e6, tz=timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
            reasons.append(f"a window or join still holds rows (event time from {since}); "
                           "their input is acked when the results are emitted")
        for sink in self.sinks():
            durable = sink.durable_rows()
            if durable < entry.written.get(id(sink), 0):
                reasons.append(f"sink '{sink.sink_name}' has made {durable:,} of {sink.rows_out:,} rows durable "
                               "(a sink that commits whole files acks input when a file is committed)")
        return reasons

    def sinks(self) -> list[SinkOperator]:
        return [node for op, _ in self.consumers for node in op.walk() if isinstance(node, SinkOperator)]

    def _stamp(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        column = batch.column(self.spec.watermark_column)
        bad = pc.is_null(column)
        reasons: list[tuple[np.ndarray, str, str]] = []
        if column.null_count:
            reasons.append((bad.to_numpy(zero_copy_only=False), "null", f"event-time column '{self.spec.watermark_column}' is NULL"))
        if self.spec.max_future_us is not None:
            limit = self.clock.now_us() + self.spec.max_future_us
            times = event_time_us(pc.fill_null(column, pa.scalar(0, column.type)))
            future = times > limit
            if future.any():
                future &= ~bad.to_numpy(zero_copy_only=False)
                reasons.append((future, "future", "event time is more than max_future ahead of the wall clock"))
        if reasons:
            reject = np.zeros(batch.num_rows, dtype=bool)
            for mask, reason, detail in reasons:
                rows = np.flatnonzero(mask & ~reject)
                if rows.size:
                    self._reject_rows(batch, rows, reason, detail)
                    if reason == "future" and self.tracker is not None:
                        self.tracker.future_rows += rows.size
                reject |= mask
            batch = batch.filter(pa.array(~reject))
            column = batch.column(self.spec.watermark_column)
        times = event_time_us(column)
        stamps = self.tracker.stamp(times)
        return batch.append_column(pa.field(WM_COLUMN, pa.int64()), pa.array(stamps))

    def _reject_rows(self, batch: pa.RecordBatch, rows: np.ndarray, reason: str, detail: str) -> None:
        times = batch.column(self.spec.watermark_column).take(pa.array(rows))
        times_us = event_time_us(pc.fill_null(times, pa.scalar(0, times.type)))
        valid = pc.is_valid(times).to_numpy(zero_copy_only=False)
        event_times = [int(t) if ok else None for t, ok in zip(times_us, valid)]
        self.reject(rows_as_dead_letters(batch, rows, self.name, reason, detail, event_times))

    # -- time ----------------------------------------------------------------------------

    def check_idle(self, now_us: int) -> None:
        timeout = self.spec.idle_timeout_us
        if self.tracker is None or timeout is None or self.tracker.idle or self.ended:
            return
        if now_us - self.metrics.last_data_us >= timeout:
            self.tracker.idle = True
            for op, port in self.consumers:
                op.set_idle(True, port)

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        for op, port in self.consumers:
            op.end(port)

    def close(self) -> None:
        self.reader.close()
