"""TUMBLE / HOP / CUMULATE aggregation over an updating input (a changelog, e.g. a
regular join, a Top-N or keep-last deduplication, an unwindowed GROUP BY): the result
is itself a changelog, keyed by (window_start, window_end, group key).

Each input change is assigned to its windows (``window_assignments``: one for TUMBLE,
``size / slide`` for HOP) and then handled as in
:class:`~sqlstream.operators.changelog_aggregate.ChangelogAggregateOperator`, with the
window columns as the first group keys: the state is the open windows' input rows as a
multiset, ``+I``/``-U``/``+U`` change multiplicities, and every micro-batch emits the
changes of the (window, key) groups it touched — ``+I`` for a new group, ``-U``/``+U``
for a changed one, ``-D`` for a group whose rows were all retracted.

Emission rule: a window's rows are emitted as they change, per micro-batch, while the
window is open; when the watermark passes ``window_end`` the window is *closed*: its
state is freed and its last emitted rows stand. A change that arrives for a closed
window (every window, for a row that belongs to several) is not applied: it goes to the
dead-letter output, reason ``late``, and is counted in ``late_rows``; a row of a HOP that
belongs to open and closed windows is applied to the open ones only.

>>> import pyarrow as pa
>>> from sqlstream.operators.aggregates import AggCall
>>> class Tumble: kind, size_us = "tumble", 10
>>> schema = pa.schema([("__op", pa.string()), ("window_start", pa.int64()), ("window_end", pa.int64()),
...                     ("__agg0", pa.int64())])
>>> op = WindowChangelogAggregateOperator(Tumble, [], [AggCall("count_star", None, "__agg0")], schema, "s")
>>> out = []
>>> op.emit = lambda batch: out.extend(batch.to_pylist())
>>> op.on_batch(pa.record_batch({"__op": ["+I", "+I"], "__t": [1, 12]}), 0)
>>> op.on_batch(pa.record_batch({"__op": ["-D"], "__t": [3]}), 0)
>>> [(r["__op"], r["window_start"], r["__agg0"]) for r in out]
[('+I', 0, 1), ('+I', 10, 1), ('-D', 0, 1)]
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.hidden import MIN_WATERMARK
from sqlstream.operators.aggregates import AggCall
from sqlstream.operators.changelog_aggregate import ChangelogAggregateOperator
from sqlstream.operators.windows import column_int64, late_rows_as_dead_letters, window_assignments

__all__ = ["WindowChangelogAggregateOperator", "TIME_COLUMN"]

#: the event time of each input row, computed by the pre-stage
TIME_COLUMN = "__t"
_START, _END = "window_start", "window_end"


class WindowChangelogAggregateOperator(ChangelogAggregateOperator):
    """GROUP BY window_start, window_end, keys of a window TVF over a changelog."""

    name = "window_changelog_aggregate"
    state_hint = ("it keeps the input rows of every open window: use smaller windows or a smaller "
                  "watermark delay (a window's state is freed when the watermark passes its end)")

    def __init__(self, spec, keys: list[str], calls: list[AggCall], schema: pa.Schema, source_label: str):
        super().__init__([_START, _END] + list(keys), calls, schema)
        self.spec = spec
        self.source_label = source_label
        self.closed_wm = MIN_WATERMARK  # windows ending at or below it are closed (state freed)
        self.late_rows = 0
        self._touched_ends = pa.array([], pa.int64())  # window ends of the batch being applied

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        times = column_int64(batch, TIME_COLUMN)
        rows, start, end = window_assignments(self.spec, times)
        open_ = end > self.closed_wm
        if not open_.all():
            rows, start, end = rows[open_], start[open_], end[open_]
            late = np.ones(batch.num_rows, dtype=bool)
            late[rows] = False
            if late.any():
                self.late_rows += int(late.sum())
                if self.dead_letter is not None:
                    self.dead_letter(late_rows_as_dead_letters(
                        batch, late, times, self.source_label,
                        "a change for a window the watermark already closed (its result was final)"))
        if rows.size == 0:
            return
        expanded = batch if rows.size == batch.num_rows and self.spec.kind == "tumble" else batch.take(pa.array(rows))
        columns = [expanded.column(i) for i in range(expanded.num_columns)] + [pa.array(start), pa.array(end)]
        names = expanded.schema.names + [_START, _END]
        self._touched_ends = pa.array(np.unique(end), pa.int64())
        super().on_batch(pa.RecordBatch.from_arrays(columns, names=names), port)

    def _split(self, table: pa.Table | None, touched: pa.Array):
        """(rows of touched groups, the others) of ``table``: only rows of the batch's
        windows (an int64 probe) have their group keys encoded and probed."""
        if table is None or table.num_rows == 0:
            return None, None
        near = pc.is_in(table.column(_END), value_set=self._touched_ends)
        if not pc.any(near).as_py():
            return None, table
        candidates = table.filter(near)
        inside = pc.is_in(self._group_key(candidates), value_set=touched, skip_nulls=False)
        others = [table.filter(pc.invert(near)), candidates.filter(pc.invert(inside))]
        return candidates.filter(inside), pa.concat_tables(others)

    def on_watermark(self, watermark: int) -> None:
        """Close the windows the watermark passed: free their rows and results."""
        bound = pa.scalar(watermark, pa.int64())
        if self.rows is not None:
            self.rows = self.rows.filter(pc.greater(self.rows.column(_END), bound))
        if self.results is not None:
            self.results = self.results.filter(pc.greater(self.results.column(_END), bound))
        self.closed_wm = max(self.closed_wm, watermark)
        self.emit_watermark(watermark)

    def retention_start(self) -> int | None:
        """Open windows' rows may still be retracted: hold input from the earliest one."""
        if self.rows is None or self.rows.num_rows == 0:
            return None
        return int(pc.min(self.rows.column(_START)).as_py())

    # -- checkpoints -------------------------------------------------------------------------

    def state_values(self) -> dict:
        """The watermark up to which windows are closed and the count of late changes."""
        return {"closed_wm": self.closed_wm, "late_rows": self.late_rows}

    def load_state(self, values: dict, tables: dict[str, pa.Table]) -> None:
        super().load_state(values, tables)
        self.closed_wm = values["closed_wm"]
        self.late_rows = values["late_rows"]
