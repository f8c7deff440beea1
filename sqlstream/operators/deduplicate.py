"""Keep-first deduplication by event time: the first row of each key, emitted once,
final (an append-only result).

``ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts ASC) = 1`` with ``ts`` the event time
(the output keeps it as its event time, ``__wm`` being the watermark before the step
that emitted the row, so a window aggregation can follow):
per key the row with the smallest event time (the first to arrive among equal
times) is a *candidate* until the watermark passes its time (watermark > ts): no row
that is not late can then come before it, so it is emitted and only its key (and
time) is kept, to drop the key's later rows. Rows whose event time is below their
``__wm`` stamp (late) go to the dead-letter output, reason ``late``, whatever their
key: which rows are late does not depend on batch sizes.

State: one candidate row per undecided key, plus one (key, time) per emitted key —
forgotten once the watermark passes time + ``ttl_us`` (``dedup_state_ttl``; a key seen
again after that is emitted again), else kept for the life of the query.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.batches import event_time_us
from sqlstream.hidden import MIN_WATERMARK, WM_COLUMN
from sqlstream.operators.base import Operator
from sqlstream.operators.keyed_rows import KeyedRows
from sqlstream.operators.keys import encode_keys
from sqlstream.operators.state_size import StateSize, table_bytes
from sqlstream.operators.top_n import KEY, RANK, SEQ, rank_rows
from sqlstream.operators.windows import drop_late_rows

__all__ = ["FirstRowOperator"]

TIME = "__time"


class FirstRowOperator(Operator):
    """The first row per key by event time, once final."""

    name = "deduplicate"
    state_hint = "set dedup_state_ttl to forget keys seen long ago"

    def __init__(self, partition: list[str], time_column: str, schema: pa.Schema, ttl_us: int | None, source_label: str,
                 rank_column: str | None = None):
        super().__init__()
        self.rank_column = rank_column  # ROW_NUMBER's column, if selected: always 1
        self.partition = list(partition)
        self.time_column = time_column
        self.schema = schema
        self.ttl_us = ttl_us
        self.source_label = source_label
        self.payload = [f.name for f in schema if f.name not in (rank_column, WM_COLUMN)]
        self.stored = list(dict.fromkeys(self.payload + self.partition))
        self.next_seq = 0
        self.late_rows = 0
        self.emitted_wm = MIN_WATERMARK  # the watermark of the last step: output rows' __wm
        self.pending: pa.Table | None = None  # stored + KEY + SEQ + TIME: one candidate per undecided key
        self.seen = KeyedRows(KEY)  # KEY + TIME: keys already emitted

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        batch, times = drop_late_rows(
            self, batch, event_time_us(batch.column(self.time_column)), self.source_label,
            "the first row of its key is decided once the watermark passes its event time")
        n = batch.num_rows
        if n == 0:
            return
        table = pa.Table.from_batches([batch]).select(self.stored)
        table = table.append_column(KEY, encode_keys(table, self.partition))
        table = table.append_column(SEQ, pa.array(np.arange(self.next_seq, self.next_seq + n, dtype=np.int64)))
        table = table.append_column(TIME, pa.array(times, pa.int64()))
        self.next_seq += n
        if self.seen.rows:
            table = table.filter(pa.array(~self.seen.contains(table.column(KEY))))
        if self.pending is not None and self.pending.num_rows:
            table = pa.concat_tables([self.pending, table])
        self.pending = rank_rows(table, [(TIME, False, False)], 1, later_wins=False).drop_columns([RANK])

    def on_watermark(self, watermark: int) -> None:
        if self.pending is not None and self.pending.num_rows:
            ready = pc.less(self.pending.column(TIME), pa.scalar(watermark, pa.int64()))
            out = self.pending.filter(ready)
            if out.num_rows:
                self.pending = self.pending.filter(pc.invert(ready))
                out = out.take(pc.sort_indices(out, sort_keys=[(TIME, "ascending"), (SEQ, "ascending")]))
                self.emit(pa.RecordBatch.from_arrays([self._column(out, f.name) for f in self.schema], schema=self.schema))
                self.seen.add(out.select([KEY, TIME]))
        if self.ttl_us is not None and self.seen.rows:
            self.seen.keep(TIME, watermark - self.ttl_us)
        self.emitted_wm = watermark
        self.emit_watermark(watermark)

    def _column(self, out: pa.Table, name: str) -> pa.Array:
        if name == self.rank_column:
            return pa.repeat(pa.scalar(1, pa.int64()), out.num_rows)
        if name == WM_COLUMN:  # the watermark before this step: every row emitted now is at or after it
            return pa.repeat(pa.scalar(self.emitted_wm, pa.int64()), out.num_rows)
        return out.column(name).combine_chunks()

    def retention_start(self) -> int | None:
        """Candidates not emitted yet hold their input back."""
        if self.pending is None or self.pending.num_rows == 0:
            return None
        return int(pc.min(self.pending.column(TIME)).as_py())

    # -- checkpoints -------------------------------------------------------------------------

    def state_values(self) -> dict:
        """The next arrival number (ties), the count of late rows and the last watermark
        step (the ``__wm`` of rows emitted at the next one)."""
        return {"next_seq": self.next_seq, "late_rows": self.late_rows, "emitted_wm": self.emitted_wm}

    def state_tables(self) -> dict[str, pa.Table]:
        """``pending``: one candidate row per undecided key (stored columns, ``__topn_key``,
        ``__seq``, ``__time``); ``seen``: the keys already emitted (``__topn_key``, ``__time``)."""
        tables = {}
        if self.pending is not None and self.pending.num_rows:
            tables["pending"] = self.pending
        seen = self.seen.table()
        if seen is not None:
            tables["seen"] = seen
        return tables

    def load_state(self, values: dict, tables: dict[str, pa.Table]) -> None:
        self.next_seq = values["next_seq"]
        self.late_rows = values["late_rows"]
        self.emitted_wm = values["emitted_wm"]
        self.pending = tables.get("pending")
        self.seen.load(tables.get("seen"))

    def state_size(self) -> StateSize:
        """One candidate row per undecided key and one (key, time) per emitted key."""
        size = self.seen.state_size()
        if self.pending is not None:
            size = size + StateSize(self.pending.num_rows, table_bytes(self.pending))
        return size

