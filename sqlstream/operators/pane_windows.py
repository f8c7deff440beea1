"""HOP and CUMULATE windows: partial aggregates per pane, combined into windows on emit.

A pane is ``gcd(slide, size)`` (HOP) resp. ``step`` (CUMULATE) long; panes are combined
into windows only at emission, so input rows are never multiplied by ``size / slide``.
Rows that arrive when some of their windows were already emitted are aggregated per
remaining window instead, so results do not depend on batching.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.hidden import WM_COLUMN
from sqlstream.operators.aggregates import Aggregator, Partial
from sqlstream.operators.row_pieces import map_in_order, pieces_of
from sqlstream.operators.state_tables import partials_from_tables, partials_to_tables
from sqlstream.operators.window_output import (
    MAX_FRAGMENTS,
    WE,
    WS,
    WindowOutputOperator,
    int64_scalar,
    int64_values,
)
from sqlstream.operators.windows import column_int64, first_window_end, pane_size, tumble_start, window_assignments

__all__ = ["PaneWindowOperator"]


class PaneWindowOperator(WindowOutputOperator):
    """HOP and CUMULATE: partial aggregates per pane, combined into windows on emit."""

    name = "pane_window_aggregate"

    def __init__(self, spec, keys, calls, schema, emit_every_us):
        super().__init__(spec, keys, calls, schema, emit_every_us)
        self.pane = pane_size(spec)
        self.pane_agg = Aggregator([WS] + self.keys, self.calls)
        self.panes: list[Partial] = []  # keyed by pane start (__ws)
        self.direct: list[Partial] = []  # keyed by window (__ws, __we): partially late rows

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        times = column_int64(batch, "__t")
        table = self.input_table(batch, [])
        wm = batch.column(WM_COLUMN).to_numpy(zero_copy_only=False) if WM_COLUMN in batch.schema.names else None
        partial_late = (first_window_end(self.spec, times) <= wm) if wm is not None else np.zeros(len(times), bool)
        if partial_late.any():
            rows = np.flatnonzero(partial_late)
            idx, start, end = window_assignments(self.spec, times[rows])
            keep = end > wm[rows][idx]
            picked = table.take(pa.array(rows[idx[keep]]))
            picked = picked.append_column(WS, pa.array(start[keep])).append_column(WE, pa.array(end[keep]))
            if picked.num_rows:
                self.direct.append(self.window_agg.partial(picked))
            table = table.filter(pa.array(~partial_late))
            times = times[~partial_late]
        if table.num_rows:
            table = table.append_column(WS, pa.array(tumble_start(times, self.pane)))
            self.panes.extend(self.pane_agg.partials(table))
        if len(self.panes) > MAX_FRAGMENTS:
            self.panes = [self.pane_agg.merge(self.panes)]
        if len(self.direct) > MAX_FRAGMENTS:
            self.direct = [self.window_agg.merge(self.direct)]

    def _pane_alive(self, pane_starts, watermark: int) -> pa.Array:
        """True for panes that still belong to a window ending after ``watermark``."""
        starts = int64_values(pane_starts)
        unit = self.spec.slide_us if self.spec.kind == "hop" else self.spec.size_us
        return pa.array(tumble_start(starts, unit) + self.spec.size_us > watermark)

    def _windows_between(self, low: int, high: int | None) -> pa.Table | None:
        """Final rows per (window, key) for windows with end in (low, high] (high None: all).

        Panes are replicated into each of their windows and merged per window; with many
        rows that is done per range of window starts, on all cores (a window's rows are
        all in one range; the ranges depend on the data only, not on the machine)."""
        merged, assigned = None, None
        if self.panes:
            merged = self.pane_agg.merge(self.panes)
            self.panes = [merged] if merged.num_rows else []
            if merged.num_rows:
                starts = column_int64(merged.main, WS)
                r, ws, we = window_assignments(self.spec, starts)  # a pane lies in the windows of its start
                keep = (we > low) & (we <= high) if high is not None else (we > low)
                assigned = (starts, r[keep], ws[keep], we[keep])
        direct = []
        for part in self.direct:
            ends = lambda c: pc.and_(pc.greater(c, int64_scalar(low)), pc.less_equal(c, int64_scalar(high))) if high is not None else pc.greater(c, int64_scalar(low))  # noqa: E731
            direct.append(part.filter_by(WE, ends))
        direct = [p for p in direct if p.num_rows]
        rows = (assigned[1].size if assigned else 0) + sum(p.num_rows for p in direct)
        if rows == 0:
            return None
        ranges = _start_ranges(assigned[2] if assigned else None, direct, len(pieces_of(rows)))
        if not self.window_agg.thread_safe:
            ranges = [(None, None)]

        def windows(bounds: tuple[int | None, int | None]) -> pa.Table | None:
            pieces = []  # the panes' partials first, then the direct ones (arrival order)
            if assigned is not None:
                starts, r, ws, we = assigned
                if bounds[0] is not None:
                    inside = (ws >= bounds[0]) & (ws < bounds[1])
                    r, ws, we = r[inside], ws[inside], we[inside]
                if r.size:
                    pieces.append(self._replicate(merged, starts, r, ws, we))
            pieces += [p if bounds[0] is None else p.filter_by(WS, lambda c: _within(c, bounds)) for p in direct]
            pieces = [p for p in pieces if p.num_rows]
            return self.window_agg.finalize(self.window_agg.merge(pieces, regroup=True)) if pieces else None

        results = [t for t in map_in_order(windows, ranges) if t is not None]
        return pa.concat_tables(results) if len(results) > 1 else results[0] if results else None

    def _replicate(self, merged: Partial, starts: np.ndarray, rows: np.ndarray, ws: np.ndarray, we: np.ndarray) -> Partial:
        main = merged.main.take(pa.array(rows)).set_column(0, WS, pa.array(ws)).append_column(WE, pa.array(we))
        main = main.select(self.window_agg.keys + [n for n in main.column_names if n not in self.window_agg.keys])
        sets = []
        for table in merged.sets:
            # replicate set rows to each window of their pane: join pane start → windows
            pane_of_row = column_int64(table, WS)
            order = np.argsort(starts, kind="stable")
            position = np.searchsorted(starts[order], pane_of_row)
            pane_row = order[np.minimum(position, len(order) - 1)]
            # windows per pane row: group (rows, ws, we) by pane row
            sort_rows = np.argsort(rows, kind="stable")
            counts = np.bincount(rows, minlength=len(starts))
            offsets = np.concatenate([[0], np.cumsum(counts)])
            per = counts[pane_row]
            set_rows = np.repeat(np.arange(table.num_rows), per)
            window_index = sort_rows[np.repeat(offsets[pane_row], per) + _ranges(per)]
            replicated = table.take(pa.array(set_rows)).set_column(0, WS, pa.array(ws[window_index]))
            replicated = replicated.append_column(WE, pa.array(we[window_index]))
            sets.append(replicated.select(self.window_agg.keys + [n for n in replicated.column_names if n not in self.window_agg.keys]))
        return Partial(main, tuple(sets))

    def on_watermark(self, watermark: int) -> None:
        if watermark > self.emitted_wm:
            result = self._windows_between(self.emitted_wm, watermark)
            if result is not None and result.num_rows:
                self.emit_final(result, watermark)
            self.emitted_wm = watermark
            self._free(watermark)
        self.emit_watermark(watermark)

    def _free(self, watermark: int) -> None:
        if self.panes:
            self.panes = [p.filter_by(WS, lambda c: self._pane_alive(c, watermark)) for p in self.panes]
            self.panes = [p for p in self.panes if p.num_rows]
        self.direct = [p.filter_by(WE, lambda c: pc.greater(c, int64_scalar(watermark))) for p in self.direct]
        self.direct = [p for p in self.direct if p.num_rows]

    def current_open(self) -> pa.Table | None:
        return self._windows_between(self.emitted_wm, None)

    def state_tables(self) -> dict[str, pa.Table]:
        """The shared tables plus the pane partials (``pane_{i}_*``) and the per-window
        partials of partially late rows (``direct_{i}_*``)."""
        return {**super().state_tables(), **partials_to_tables("pane", self.panes),
                **partials_to_tables("direct", self.direct)}

    def load_state(self, values: dict, tables: dict[str, pa.Table]) -> None:
        super().load_state(values, tables)
        self.panes = partials_from_tables("pane", tables)
        self.direct = partials_from_tables("direct", tables)

    def held_partials(self) -> list[Partial]:
        return self.panes + self.direct

    def retention_start(self) -> int | None:
        starts = [pc.min(p.main.column(WS)).as_py() for p in self.panes + self.direct if p.num_rows]
        return min(starts, default=None)



def _start_ranges(assigned_starts: np.ndarray | None, direct: list[Partial], count: int) -> list[tuple]:
    """``count`` ranges ``[lo, hi)`` of window starts, of equal width, covering every
    window to emit; ``[(None, None)]`` (everything) for one range."""
    if count < 2:
        return [(None, None)]
    lows, highs = [], []
    if assigned_starts is not None and assigned_starts.size:
        lows.append(int(assigned_starts.min()))
        highs.append(int(assigned_starts.max()))
    for part in direct:
        bounds = pc.min_max(part.main.column(WS))
        lows.append(bounds["min"].as_py())
        highs.append(bounds["max"].as_py())
    low, high = min(lows), max(highs) + 1
    edges = [low + (high - low) * i // count for i in range(count + 1)]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


def _within(column, bounds: tuple[int, int]):
    return pc.and_(pc.greater_equal(column, int64_scalar(bounds[0])), pc.less(column, int64_scalar(bounds[1])))


def _ranges(counts: np.ndarray) -> np.ndarray:
    """[0..c0-1, 0..c1-1, ...] for counts c."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total, dtype=np.int64) - offsets
