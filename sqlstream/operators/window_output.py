"""The output side every window aggregation shares.

:class:`WindowOutputOperator` turns finalized window results into output rows (window
columns as timestamps, ``__wm`` = the watermark before the emission, ``__op``), fires
early results with ``EMIT EVERY`` as a changelog against the previous early rows
(``+I`` new, ``-U``/``+U`` changed, ``-D`` for an early session that merged into
another) and reports the state size of the partials a subclass holds. The window
kinds live in :mod:`sqlstream.operators.window_aggregate` (TUMBLE and final windows),
:mod:`sqlstream.operators.pane_windows` (HOP, CUMULATE) and
:mod:`sqlstream.operators.session_windows` (SESSION).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.hidden import MIN_WATERMARK, OP_COLUMN, WM_COLUMN
from sqlstream.operators.aggregates import AggCall, Aggregator, ArrivalSequence, Partial
from sqlstream.operators.base import IntervalTimer, Operator
from sqlstream.operators.changes import diff_results, op_column
from sqlstream.operators.python_aggregates import TIME_COLUMN, split_failed_groups
from sqlstream.operators.state_size import NO_STATE, StateSize, table_bytes

__all__ = ["WindowOutputOperator", "concat_partials", "int64_scalar", "int64_values", "MAX_FRAGMENTS", "WS", "WE"]

#: partials kept side by side before they are merged into one
MAX_FRAGMENTS = 24
WS, WE = "__ws", "__we"


def concat_partials(parts: list[Partial]) -> Partial:
    """Partials over disjoint groups side by side (no merge needed)."""
    parts = [p for p in parts if p.num_rows]
    if not parts:
        raise ValueError("no partials")
    if len(parts) == 1:
        return parts[0]
    return Partial(
        pa.concat_tables([p.main for p in parts]),
        tuple(pa.concat_tables([p.sets[i] for p in parts]) for i in range(len(parts[0].sets))),
    )


class WindowOutputOperator(Operator):
    """Shared plumbing: input columns, output rows, early firing (EMIT EVERY), state size."""

    state_hint = "use smaller windows, a shorter watermark delay or fewer GROUP BY keys"

    def __init__(self, spec, keys: list[str], calls: list[AggCall], schema: pa.Schema, emit_every_us: int | None):
        super().__init__()
        self.spec = spec
        self.keys = list(keys)
        self.calls = list(calls)
        self.schema = schema
        self.emit_every_us = emit_every_us
        self.window_agg = Aggregator([WS, WE] + self.keys, self.calls)
        self.sequence = ArrivalSequence()
        self.emitted_wm = MIN_WATERMARK
        self.early = IntervalTimer(emit_every_us)
        self._early: pa.Table | None = None  # last early result per open window × key

    def input_table(self, batch: pa.RecordBatch, columns: list[str]) -> pa.Table:
        args = [c.arg for c in self.calls if c.arg is not None]
        times = [TIME_COLUMN] if self.window_agg.needs_time and TIME_COLUMN in batch.schema.names else []
        names = list(dict.fromkeys(self.keys + args + columns + times))
        if names:
            table = pa.Table.from_batches([batch]).select(names)
        else:  # count(*) alone: a constant column keeps the row count through take/filter
            table = pa.table({"__one": pa.repeat(pa.scalar(1, pa.int8()), batch.num_rows)})
        return self.sequence.stamp(table) if self.window_agg.needs_sequence else table

    def output(self, result: pa.Table, ops: pa.Array | None = None) -> pa.RecordBatch:
        """Rows of ``result`` in the output schema; ``__wm`` is the watermark before
        this emission (``emitted_wm`` is only advanced after emitting)."""
        n = result.num_rows
        columns = []
        for field in self.schema:
            name = field.name
            if name == "window_start":
                columns.append(pc.cast(result.column(WS), pa.int64()).combine_chunks().view(pa.timestamp("us")))
            elif name == "window_end":
                columns.append(pc.cast(result.column(WE), pa.int64()).combine_chunks().view(pa.timestamp("us")))
            elif name == WM_COLUMN:
                columns.append(pa.array(np.full(n, self.emitted_wm, dtype=np.int64)))
            elif name == OP_COLUMN:
                columns.append(ops if ops is not None else op_column("+I", n))
            else:
                column = result.column(name)
                columns.append(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
        columns = [c.cast(f.type) if c.type != f.type else c for c, f in zip(columns, self.schema)]
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)

    def emit_final(self, result: pa.Table, watermark: int) -> None:
        """Emit the windows that ``watermark`` closed (as +I, or as changes to the early
        results of EMIT EVERY). Groups a Python aggregate failed on become dead letters."""
        result, letters = split_failed_groups(result, self.calls, self.keys, (WS, WE))
        if letters and self.dead_letter is not None:
            self.dead_letter(letters)
        if self.emit_every_us is None:
            if result.num_rows:
                self.emit(self.output(result))
            return
        self._emit_changes(result, closed_by=watermark)

    # -- state -------------------------------------------------------------------------------

    def held_partials(self) -> list[Partial]:
        """The partial aggregates of the open windows."""
        raise NotImplementedError

    # -- checkpoints -------------------------------------------------------------------------

    def state_values(self) -> dict:
        """What every window kind keeps besides its partials: the watermark up to which
        windows were emitted, the arrival counter (first/last_value) and the EMIT EVERY
        timer; a subclass adds its own."""
        return {"emitted_wm": self.emitted_wm, "sequence": self.sequence.next, "early_last_us": self.early.last_us}

    def state_tables(self) -> dict[str, pa.Table]:
        """The last early results (EMIT EVERY) as ``early``; a subclass adds its partials."""
        return {"early": self._early} if self._early is not None else {}

    def load_state(self, values: dict, tables: dict[str, pa.Table]) -> None:
        self.emitted_wm = values["emitted_wm"]
        self.sequence.next = values["sequence"]
        self.early.last_us = values["early_last_us"]
        self._early = tables.get("early")

    def state_size(self) -> StateSize:
        """Partials of the open windows; with EMIT EVERY also the bytes of the last early
        result (one row per open window and key, already counted as rows)."""
        size = NO_STATE
        for part in self.held_partials():
            size = size + part.state_size()
        return size + StateSize(0, table_bytes(self._early))

    # -- EMIT EVERY: early, updating results ----------------------------------------------

    def current_open(self) -> pa.Table | None:
        """Finalized current values of open windows (for early firing)."""
        raise NotImplementedError

    def tick(self, now_us: int) -> None:
        if self.early.due(now_us):
            current = self.current_open()
            if current is not None:  # failing groups are left out (dead letters when they close)
                self._emit_changes(split_failed_groups(current, self.calls, self.keys)[0], closed_by=None)
        super().tick(now_us)

    def _emit_changes(self, current: pa.Table, closed_by: int | None) -> None:
        """Changes from the rows emitted early (``_early``) to ``current``: the open
        windows (an early firing, ``closed_by`` None) or the windows the watermark
        ``closed_by`` closed. Changed rows give -U/+U, new ones +I. An early row that no
        window of ``current`` matches any more was superseded (sessions merge): -D."""
        previous = self._early
        old = new = stale = None
        if previous is None or previous.num_rows == 0:
            inserts, remaining = current, previous
        else:
            changes = diff_results(previous, current, [WS, WE] + self.keys, [c.output for c in self.calls])
            old, new, inserts, unmatched = changes.before, changes.after, changes.inserted, changes.gone
            if closed_by is None:
                stale, remaining = unmatched, None
            else:  # early rows of windows ending by now that no closed window matches are stale
                ended = pc.less_equal(unmatched.column(WE), int64_scalar(closed_by))
                stale, remaining = unmatched.filter(ended), unmatched.filter(pc.invert(ended))
        batches = []
        if stale is not None and stale.num_rows:
            batches.append(self.output(stale, op_column("-D", stale.num_rows)))
        if old is not None and old.num_rows:
            batches.append(self.output(old, op_column("-U", old.num_rows)))
            batches.append(self.output(new, op_column("+U", new.num_rows)))
        if inserts.num_rows:
            batches.append(self.output(inserts, op_column("+I", inserts.num_rows)))
        for batch in batches:
            self.emit(batch)
        self._early = current if closed_by is None else remaining


def int64_scalar(value: int) -> pa.Scalar:
    """A typed scalar: comparing with a bare Python int makes pyarrow infer its type,
    which costs ~100 µs per call (it probes optional modules each time)."""
    return pa.scalar(value, pa.int64())


def int64_values(column) -> np.ndarray:
    """A (chunked) integer or timestamp column as one int64 numpy array."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return pc.cast(column, pa.int64()).to_numpy(zero_copy_only=False)
