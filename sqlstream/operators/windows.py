"""Window assignment (pure, vectorized functions) and the window operators that need
no aggregation state: the late-row filter and the window TVF expansion.

Conventions (all times int64 µs since the epoch; windows are half-open ``[start, end)``
and aligned to the epoch):

* TUMBLE(size): ``start = floor(ts / size) * size``.
* HOP(slide, size): every ``start`` that is a multiple of ``slide`` with
  ``start <= ts < start + size``.
* CUMULATE(step, max): ``start = floor(ts / max) * max``, ends ``start + k*step`` for
  ``k = 1..max/step`` with ``end > ts``.
* SESSION(gap): rows of a key belong to one session while each is less than ``gap``
  after the previous one; the session is ``[first ts, last ts + gap)``.

A window is emitted when the watermark reaches its end; a row is late for a window
when the window's end is at or below the row's ``__wm``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.batches import event_time_us
from sqlstream.connectors.dead_letters import rows_as_dead_letters
from sqlstream.hidden import WM_COLUMN
from sqlstream.operators.base import Operator

__all__ = [
    "tumble_start",
    "window_assignments",
    "last_window_end",
    "first_window_end",
    "LateFilterOperator",
    "WindowExpandOperator",
    "pane_size",
]


def tumble_start(ts: np.ndarray, size: int) -> np.ndarray:
    return np.floor_divide(ts, size) * size


def pane_size(spec) -> int:
    if spec.kind == "hop":
        return int(np.gcd(spec.slide_us, spec.size_us))
    if spec.kind == "cumulate":
        return spec.step_us
    return spec.size_us


def last_window_end(spec, ts: np.ndarray) -> np.ndarray:
    """End of the last window each row belongs to (a row is late when this ≤ its __wm)."""
    if spec.kind == "tumble":
        return tumble_start(ts, spec.size_us) + spec.size_us
    if spec.kind == "hop":
        return tumble_start(ts, spec.slide_us) + spec.size_us
    if spec.kind == "cumulate":
        return tumble_start(ts, spec.size_us) + spec.size_us
    if spec.kind == "session":
        return ts + spec.gap_us
    raise AssertionError(spec.kind)


def first_window_end(spec, ts: np.ndarray) -> np.ndarray:
    """End of the first (earliest-ending) window each row belongs to."""
    if spec.kind == "hop":
        # the earliest start s (multiple of slide) with s + size > ts
        earliest = (np.floor_divide(ts - spec.size_us, spec.slide_us) + 1) * spec.slide_us
        return earliest + spec.size_us
    if spec.kind == "cumulate":
        start = tumble_start(ts, spec.size_us)
        k = np.floor_divide(ts - start, spec.step_us) + 1
        return start + k * spec.step_us
    return last_window_end(spec, ts)


def window_assignments(spec, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (row index, window start, window end) for rows with event times ``ts``."""
    n = ts.size
    rows = np.arange(n, dtype=np.int64)
    if spec.kind == "tumble":
        start = tumble_start(ts, spec.size_us)
        return rows, start, start + spec.size_us
    # HOP and CUMULATE: a (row, window) grid, row-major, then the cells that hold the row
    if spec.kind == "hop":
        copies = -(-spec.size_us // spec.slide_us)  # ceil(size / slide)
        starts = tumble_start(ts, spec.slide_us)[:, None] - np.arange(copies, dtype=np.int64) * spec.slide_us
        keep = starts > (ts - spec.size_us)[:, None]  # start + size > ts
        start = starts[keep]
        return np.nonzero(keep)[0].astype(np.int64, copy=False), start, start + spec.size_us
    if spec.kind == "cumulate":
        steps = spec.size_us // spec.step_us
        base = tumble_start(ts, spec.size_us)
        ends = base[:, None] + np.arange(1, steps + 1, dtype=np.int64) * spec.step_us
        keep = ends > ts[:, None]
        rows_kept = np.nonzero(keep)[0].astype(np.int64, copy=False)
        return rows_kept, base[rows_kept], ends[keep]
    raise AssertionError(spec.kind)


def late_rows_as_dead_letters(batch: pa.RecordBatch, mask: np.ndarray, times: np.ndarray, source: str, detail: str):
    rows = np.flatnonzero(mask)
    return rows_as_dead_letters(batch, rows, source, "late", detail, times[rows].tolist())


def drop_late_rows(op: Operator, batch: pa.RecordBatch, times: np.ndarray, source: str,
                   detail: str) -> tuple[pa.RecordBatch, np.ndarray]:
    """``batch`` (and its event ``times``) without the rows behind their own watermark
    stamp (``__wm``): those are counted in ``op.late_rows`` and go to ``op``'s dead
    letters (reason ``late``, with ``detail``), whatever batch they came in."""
    if WM_COLUMN not in batch.schema.names:
        return batch, times
    late = times < batch.column(WM_COLUMN).to_numpy(zero_copy_only=False)
    if not late.any():
        return batch, times
    op.late_rows += int(late.sum())
    if op.dead_letter is not None:
        op.dead_letter(late_rows_as_dead_letters(batch, late, times, source, detail))
    return batch.filter(pa.array(~late)), times[~late]


class LateFilterOperator(Operator):
    """Rows whose every window was already emitted → dead letter ``late``."""

    name = "late_filter"

    def __init__(self, spec, time_column: str, source_label: str):
        super().__init__()
        self.spec = spec
        self.time_column = time_column
        self.source_label = source_label
        self.late_rows = 0

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        if WM_COLUMN not in batch.schema.names:
            self.emit(batch)
            return
        times = event_time_us(batch.column(self.time_column))
        wm = batch.column(WM_COLUMN).to_numpy(zero_copy_only=False)
        if self.spec.kind == "final":
            last_end = times  # the time column is the window end itself
        else:
            last_end = last_window_end(self.spec, times)
        late = last_end <= wm
        if not late.any():
            self.emit(batch)
            return
        self.late_rows += int(late.sum())
        if self.dead_letter is not None:
            self.dead_letter(
                late_rows_as_dead_letters(
                    batch, late, times, self.source_label,
                    "every window of this row was already emitted (event time behind the watermark)",
                )
            )
        self.emit(batch.filter(pa.array(~late)))

    def state_values(self) -> dict:
        """The count of late rows (a metric that continues after a restore)."""
        return {"late_rows": self.late_rows}

    def load_state(self, values: dict, tables: dict[str, pa.Table]) -> None:
        self.late_rows = values["late_rows"]


class WindowExpandOperator(Operator):
    """A window TVF without aggregation: one output row per (row, window not yet closed)."""

    name = "window_expand"

    def __init__(self, spec, time_column: str, schema: pa.Schema):
        super().__init__()
        self.spec = spec
        self.time_column = time_column
        self.schema = schema

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        times = event_time_us(batch.column(self.time_column))
        rows, start, end = window_assignments(self.spec, times)
        if WM_COLUMN in batch.schema.names:
            wm = batch.column(WM_COLUMN).to_numpy(zero_copy_only=False)
            keep = end > (wm if self.spec.kind == "tumble" else wm[rows])  # TUMBLE: rows are 0..n-1
            if not keep.all():
                rows, start, end = rows[keep], start[keep], end[keep]
        # one window per row and none dropped (TUMBLE): the rows are the batch, no copy
        expanded = batch if rows.size == batch.num_rows and self.spec.kind == "tumble" else batch.take(pa.array(rows))
        columns = []
        for field in self.schema:
            if field.name == "window_start":
                columns.append(pa.array(start, pa.int64()).view(pa.timestamp("us")))
            elif field.name == "window_end":
                columns.append(pa.array(end, pa.int64()).view(pa.timestamp("us")))
            else:
                columns.append(expanded.column(field.name))
        self.emit(pa.RecordBatch.from_arrays(columns, schema=self.schema))


def column_int64(batch: pa.RecordBatch | pa.Table, name: str) -> np.ndarray:
    column = batch.column(name)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_timestamp(column.type):
        return event_time_us(column)
    return pc.cast(column, pa.int64()).to_numpy(zero_copy_only=False)
