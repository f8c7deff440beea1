"""SESSION windows per key.

Each batch's rows form sessions (sorted by key and time, a new session where the gap
to the previous row is at least the session gap); they merge into the open sessions
per key with a vectorized interval union, and a session closes when the watermark
passes its end. Rows behind the watermark are processed after closing what closed
before they arrived.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.hidden import WM_COLUMN
from sqlstream.operators.aggregates import Aggregator, Partial
from sqlstream.operators.keys import encode_keys, key_changes
from sqlstream.operators.state_tables import partials_from_tables, partials_to_tables
from sqlstream.operators.window_output import WE, WS, WindowOutputOperator, concat_partials, int64_scalar
from sqlstream.operators.windows import column_int64

__all__ = ["SessionWindowOperator"]


class SessionWindowOperator(WindowOutputOperator):
    """SESSION windows per key: per-batch sessions merged into open sessions."""

    name = "session_window_aggregate"

    def __init__(self, spec, keys, calls, schema, emit_every_us):
        super().__init__(spec, keys, calls, schema, emit_every_us)
        self.gap = spec.gap_us
        self.session_agg = Aggregator(["__sid"] + self.keys, self.calls)
        self.open: Partial | None = None  # keyed by (__ws, __we, keys): open sessions

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        times = column_int64(batch, "__t")
        wm = batch.column(WM_COLUMN).to_numpy(zero_copy_only=False) if WM_COLUMN in batch.schema.names else None
        table = self.input_table(batch, [])
        # rows behind the watermark may not join a session that closed before they
        # arrived: process the batch in pieces, closing sessions at each such row
        behind = np.flatnonzero(times < wm) if wm is not None else np.zeros(0, np.int64)
        start = 0
        for row in behind:
            if row > start:
                self._add(table.slice(start, row - start), times[start:row])
            self._close(int(wm[row]))
            start = int(row)
        if start < table.num_rows:
            self._add(table.slice(start), times[start:])

    def _add(self, table: pa.Table, times: np.ndarray) -> None:
        if table.num_rows == 0:
            return
        # sessions inside the batch: sort by key, time; new session when the key
        # changes or the gap to the previous row is >= gap
        key = encode_keys(table, self.keys) if self.keys else None
        order_table = pa.Table.from_arrays(
            ([key] if key is not None else []) + [pa.array(times)],
            names=(["__key"] if key is not None else []) + ["__ts"],
        )
        order = pc.sort_indices(order_table, sort_keys=[(n, "ascending") for n in order_table.column_names]).to_numpy()
        sorted_times = times[order]
        boundary = np.ones(len(order), dtype=bool)
        if len(order) > 1:
            boundary[1:] = (sorted_times[1:] - sorted_times[:-1]) >= self.gap
            if key is not None:
                boundary |= key_changes(key.take(pa.array(order)))
        session_id = np.cumsum(boundary) - 1
        rows = table.take(pa.array(order)).append_column("__sid", pa.array(session_id))
        rows = rows.append_column("__ts", pa.array(sorted_times))
        part = self.session_agg.partial(rows)
        bounds = rows.group_by(["__sid"], use_threads=False).aggregate([("__ts", "min"), ("__ts", "max")])
        bounds = bounds.sort_by("__sid")
        starts = bounds.column("__ts_min").to_numpy()
        ends = bounds.column("__ts_max").to_numpy() + self.gap
        new = self._with_bounds(part, starts, ends)
        self.open = new if self.open is None else self._merge_sessions(self.open, new)

    def _with_bounds(self, part: Partial, starts: np.ndarray, ends: np.ndarray) -> Partial:
        """Replace the session id key by (__ws, __we) bounds."""
        def convert(table: pa.Table) -> pa.Table:
            sid = table.column("__sid").to_numpy()
            out = table.drop_columns(["__sid"])
            out = out.add_column(0, WE, pa.array(ends[sid])).add_column(0, WS, pa.array(starts[sid]))
            return out

        return Partial(convert(part.main), tuple(convert(s) for s in part.sets))

    def _merge_sessions(self, old: Partial, new: Partial) -> Partial:
        both = concat_partials([old, new])
        main = both.main
        starts = column_int64(main, WS)
        ends = column_int64(main, WE)
        key = encode_keys(main, self.keys) if self.keys else None
        order_table = pa.Table.from_arrays(
            ([key] if key is not None else []) + [pa.array(starts)],
            names=(["__key"] if key is not None else []) + ["__s"],
        )
        order = pc.sort_indices(order_table, sort_keys=[(n, "ascending") for n in order_table.column_names]).to_numpy()
        s, e = starts[order], ends[order]
        new_group = np.ones(len(order), dtype=bool)
        if key is not None:
            key_change = key_changes(key.take(pa.array(order)))
        else:
            key_change = np.zeros(len(order), dtype=bool)
            key_change[0] = True
        # running maximum of ends within each key segment (a segmented cummax)
        running = _segmented_cummax(e, key_change)
        new_group[1:] = key_change[1:] | (s[1:] >= running[:-1])
        group = np.cumsum(new_group) - 1
        group_of_row = np.empty_like(group)
        group_of_row[order] = group
        group_start = np.minimum.reduceat(s, np.flatnonzero(new_group))
        group_end = np.maximum.reduceat(e, np.flatnonzero(new_group))
        # merge partials per merged session: key = group id (+ keys, constant within a group)
        def regroup(table: pa.Table, row_group: np.ndarray) -> pa.Table:
            return table.drop_columns([WS, WE]).add_column(0, "__sid", pa.array(row_group))

        main_grouped = regroup(main, group_of_row)
        sets = []
        if both.sets:
            # set rows map to their session through (ws, we, keys) of the main rows
            main_key = encode_keys(main, [WS, WE] + self.keys)
            for table in both.sets:
                index = pc.index_in(encode_keys(table, [WS, WE] + self.keys), value_set=main_key, skip_nulls=False)
                sets.append(regroup(table, group_of_row[index.to_numpy(zero_copy_only=False)]))
        merged = self.session_agg.merge([Partial(main_grouped, tuple(sets))], regroup=True)
        return self._with_bounds(merged, group_start, group_end)

    def on_watermark(self, watermark: int) -> None:
        self._close(watermark)
        self.emit_watermark(watermark)

    def _close(self, watermark: int) -> None:
        if self.open is not None and self.open.num_rows:
            closed = self.open.filter_by(WE, lambda c: pc.less_equal(c, int64_scalar(watermark)))
            if closed.num_rows:
                self.open = self.open.filter_by(WE, lambda c: pc.greater(c, int64_scalar(watermark)))
                self.emit_final(self.window_agg.finalize(closed), watermark)
        self.emitted_wm = max(self.emitted_wm, watermark)

    def state_tables(self) -> dict[str, pa.Table]:
        """The shared tables plus the open sessions' partial (``open_0_*``)."""
        return {**super().state_tables(), **partials_to_tables("open", self.held_partials())}

    def load_state(self, values: dict, tables: dict[str, pa.Table]) -> None:
        super().load_state(values, tables)
        self.open = next(iter(partials_from_tables("open", tables)), None)

    def current_open(self) -> pa.Table | None:
        if self.open is None or self.open.num_rows == 0:
            return None
        return self.window_agg.finalize(self.open)

    def held_partials(self) -> list[Partial]:
        return [self.open] if self.open is not None else []

    def retention_start(self) -> int | None:
        if self.open is None or self.open.num_rows == 0:
            return None
        return pc.min(self.open.main.column(WS)).as_py()



def _segmented_cummax(values: np.ndarray, segment_start: np.ndarray) -> np.ndarray:
    """Running maximum of ``values`` restarting where ``segment_start`` is true."""
    if values.size == 0:
        return values
    segment = np.cumsum(segment_start) - 1
    low = int(values.min())
    span = int(values.max()) - low + 1
    if span * (int(segment[-1]) + 1) < 2**62:
        shifted = (values - low) + segment.astype(np.int64) * span
        return np.maximum.accumulate(shifted) - segment.astype(np.int64) * span + low
    out = np.empty_like(values)
    starts = np.flatnonzero(segment_start)
    bounds = list(starts) + [values.size]
    for a, b in zip(bounds[:-1], bounds[1:]):
        out[a:b] = np.maximum.accumulate(values[a:b])
    return out
