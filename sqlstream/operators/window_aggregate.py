"""Windowed aggregation: TUMBLE, HOP, CUMULATE, SESSION and final upstream windows.

State is partial aggregates only (see :mod:`sqlstream.operators.aggregates`), kept
as a short list of *fragments* (one per batch, compacted now and then):

* One window per row (TUMBLE, and windows propagated from an upstream window
  operator): fragments are keyed by ``(__ws, __we, keys)``. When the watermark
  passes window ends, the closing rows of each fragment are finalized directly; only
  windows present in more than one fragment (a batch boundary cut through them) are
  merged first. That keeps the merge cost proportional to the windows that straddle
  batches, not to the whole input.
* HOP and CUMULATE aggregate per *pane* (``gcd(slide, size)`` resp. ``step``) and
  combine panes into windows at emission, so input rows are never multiplied by
  ``size / slide``. Rows that arrive when some of their windows were already emitted
  are aggregated per remaining window instead, so results do not depend on batching.
* SESSION merges per-batch sessions into open sessions per key with a vectorized
  interval union, and closes a session when the watermark passes its end.

Emitted rows carry ``__wm`` = the watermark before the emission, so a downstream
window operator (window columns propagate) never sees them as late. All rows of the
windows one watermark closes are emitted in one batch (window Top-N relies on it).

With ``EMIT EVERY`` the open windows are also emitted every interval of processing
time as a changelog against the previous early rows: ``+I`` new, ``-U``/``+U``
changed, ``-D`` for an early session that merged into another.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.hidden import MIN_WATERMARK, OP_COLUMN, WM_COLUMN
from sqlstream.operators.aggregates import AggCall, Aggregator, ArrivalSequence, Partial
from sqlstream.operators.base import IntervalTimer, Operator
from sqlstream.operators.changes import diff_results, op_column
from sqlstream.operators.keys import encode_keys, key_changes
from sqlstream.operators.state_size import NO_STATE, StateSize, table_bytes
from sqlstream.operators.windows import column_int64, first_window_end, pane_size, tumble_start, window_assignments

__all__ = ["make_window_operator", "WindowAggregateOperator", "PaneWindowOperator", "SessionWindowOperator"]

_MAX_FRAGMENTS = 24
WS, WE = "__ws", "__we"


def make_window_operator(spec, keys: list[str], calls: list[AggCall], schema: pa.Schema, emit_every_us: int | None):
    if spec.kind in ("tumble", "final"):
        return WindowAggregateOperator(spec, keys, calls, schema, emit_every_us)
    if spec.kind in ("hop", "cumulate"):
        return PaneWindowOperator(spec, keys, calls, schema, emit_every_us)
    if spec.kind == "session":
        return SessionWindowOperator(spec, keys, calls, schema, emit_every_us)
    raise AssertionError(spec.kind)


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


@dataclass
class _Fragment:
    part: Partial
    min_start: int
    max_start: int
    min_end: int
    max_end: int

    @classmethod
    def of(cls, part: Partial) -> "_Fragment":
        starts = pc.min_max(part.main.column(WS))
        ends = pc.min_max(part.main.column(WE))
        return cls(part, starts["min"].as_py(), starts["max"].as_py(), ends["min"].as_py(), ends["max"].as_py())


class _WindowOutput(Operator):
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
        names = list(dict.fromkeys(self.keys + args + columns))
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
        results of EMIT EVERY)."""
        if self.emit_every_us is None:
            if result.num_rows:
                self.emit(self.output(result))
            return
        self._emit_changes(result, closed_by=watermark)

    # -- state -------------------------------------------------------------------------------

    def held_partials(self) -> list[Partial]:
        """The partial aggregates of the open windows."""
        raise NotImplementedError

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
            if current is not None:
                self._emit_changes(current, closed_by=None)
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
                ended = pc.less_equal(unmatched.column(WE), _i64(closed_by))
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


class _TumbleAggregator(Aggregator):
    """Groups TUMBLE rows by window end and keys only: the start is ``end - size``, so it
    is added back to every result instead of being hashed (one key column fewer: the
    per-batch group-by is ~1/3 faster)."""

    def __init__(self, keys: list[str], calls: list[AggCall], size_us: int):
        super().__init__([WE] + keys, calls)
        self.size = pa.scalar(size_us, pa.int64())

    def _with_start(self, part: Partial) -> Partial:
        def add(table: pa.Table) -> pa.Table:
            if WS in table.column_names:
                return table
            return table.add_column(0, WS, pc.subtract(table.column(WE), self.size))

        return Partial(add(part.main), tuple(add(t) for t in part.sets))

    def partial(self, table: pa.Table) -> Partial:
        return self._with_start(super().partial(table))

    def merge(self, parts: list[Partial], regroup: bool = False) -> Partial:
        return self._with_start(super().merge(parts, regroup=regroup))

    def finalize(self, part: Partial) -> pa.Table:
        table = super().finalize(part)
        return table.add_column(0, WS, pc.subtract(table.column(WE), self.size))


class WindowAggregateOperator(_WindowOutput):
    """TUMBLE windows, or final windows from upstream (one window per row)."""

    name = "window_aggregate"

    def __init__(self, spec, keys, calls, schema, emit_every_us):
        super().__init__(spec, keys, calls, schema, emit_every_us)
        if spec.kind == "tumble":
            self.window_agg = _TumbleAggregator(self.keys, self.calls, spec.size_us)
        self.fragments: list[_Fragment] = []

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        table = self.input_table(batch, [])
        if self.spec.kind == "tumble":
            end = tumble_start(column_int64(batch, "__t"), self.spec.size_us) + self.spec.size_us
            table = table.append_column(WE, pa.array(end))
        else:
            table = table.append_column(WS, pa.array(column_int64(batch, WS))).append_column(
                WE, pa.array(column_int64(batch, WE))
            )
        self.fragments.append(_Fragment.of(self.window_agg.partial(table)))
        if len(self.fragments) > _MAX_FRAGMENTS:
            self.fragments = [_Fragment.of(self.window_agg.merge([f.part for f in self.fragments]))]

    def on_watermark(self, watermark: int) -> None:
        self._close(watermark)
        self.emit_watermark(watermark)

    def _close(self, watermark: int) -> None:
        closing: list[_Fragment] = []
        keep: list[_Fragment] = []
        for fragment in self.fragments:
            if fragment.min_end > watermark:
                keep.append(fragment)
            elif fragment.max_end <= watermark:
                closing.append(fragment)
            else:
                closed = fragment.part.filter_by(WE, lambda c: pc.less_equal(c, _i64(watermark)))
                rest = fragment.part.filter_by(WE, lambda c: pc.greater(c, _i64(watermark)))
                closing.append(_Fragment.of(closed))
                keep.append(_Fragment.of(rest))  # both non-empty: min_end <= wm < max_end
        self.fragments = keep
        if closing:
            self.emit_final(self._finalize(closing), watermark)
        self.emitted_wm = watermark

    def _finalize(self, closing: list[_Fragment]) -> pa.Table:
        """Final rows of the closing pieces. Only windows present in more than one piece
        (a batch boundary cut through them) are merged; the rest finalize directly."""
        agg = self.window_agg
        parts = [f.part for f in closing if f.part.num_rows]
        if len(parts) == 1:
            return agg.finalize(parts[0])
        ends = [_int64(pc.unique(p.main.column(WE))) for p in parts]
        values, counts = np.unique(np.concatenate(ends), return_counts=True)
        shared_ends = values[counts > 1]
        if shared_ends.size == 0:
            return agg.finalize(concat_partials(parts))
        shared_set = pa.array(shared_ends, pa.int64())
        direct: list[Partial] = []
        shared: list[Partial] = []
        for part, part_ends in zip(parts, ends, strict=True):
            if not np.isin(part_ends, shared_ends).any():
                direct.append(part)
                continue
            shared.append(part.filter_by(WE, lambda c: pc.is_in(c, value_set=shared_set)))
            direct.append(part.filter_by(WE, lambda c: pc.invert(pc.is_in(c, value_set=shared_set))))
        results = []
        direct = [p for p in direct if p.num_rows]
        if direct:
            results.append(agg.finalize(concat_partials(direct)))
        results.append(agg.finalize(agg.merge(shared, regroup=True)))
        return pa.concat_tables(results) if len(results) > 1 else results[0]

    def current_open(self) -> pa.Table | None:
        if not self.fragments:
            return None
        return self.window_agg.finalize(self.window_agg.merge([f.part for f in self.fragments]))

    def retention_start(self) -> int | None:
        return min((f.min_start for f in self.fragments), default=None)

    def held_partials(self) -> list[Partial]:
        return [f.part for f in self.fragments]

    def open_windows(self) -> int:
        starts = [f.part.main.column(WS) for f in self.fragments if f.part.num_rows]
        if not starts:
            return 0
        return len(pc.unique(pa.chunked_array([c for s in starts for c in s.chunks])))


class PaneWindowOperator(_WindowOutput):
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
            self.panes.append(self.pane_agg.partial(table))
        if len(self.panes) > _MAX_FRAGMENTS:
            self.panes = [self.pane_agg.merge(self.panes)]
        if len(self.direct) > _MAX_FRAGMENTS:
            self.direct = [self.window_agg.merge(self.direct)]

    def _pane_alive(self, pane_starts, watermark: int) -> pa.Array:
        """True for panes that still belong to a window ending after ``watermark``."""
        starts = _int64(pane_starts)
        unit = self.spec.slide_us if self.spec.kind == "hop" else self.spec.size_us
        return pa.array(tumble_start(starts, unit) + self.spec.size_us > watermark)

    def _windows_between(self, low: int, high: int | None) -> pa.Table | None:
        """Partials per (window, key) for windows with end in (low, high] (high None: all)."""
        pieces: list[Partial] = []
        if self.panes:
            merged = self.pane_agg.merge(self.panes)
            self.panes = [merged] if merged.num_rows else []
            if merged.num_rows:
                starts = column_int64(merged.main, WS)
                r, ws, we = window_assignments(self.spec, starts)  # a pane lies in the windows of its start
                keep = (we > low) & (we <= high) if high is not None else (we > low)
                r, ws, we = r[keep], ws[keep], we[keep]
                if r.size:
                    pieces.append(self._replicate(merged, starts, r, ws, we))
        for part in self.direct:
            ends = lambda c: pc.and_(pc.greater(c, _i64(low)), pc.less_equal(c, _i64(high))) if high is not None else pc.greater(c, _i64(low))  # noqa: E731
            pieces.append(part.filter_by(WE, ends))
        pieces = [p for p in pieces if p.num_rows]
        if not pieces:
            return None
        return self.window_agg.finalize(self.window_agg.merge(pieces, regroup=True))

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
        self.direct = [p.filter_by(WE, lambda c: pc.greater(c, _i64(watermark))) for p in self.direct]
        self.direct = [p for p in self.direct if p.num_rows]

    def current_open(self) -> pa.Table | None:
        return self._windows_between(self.emitted_wm, None)

    def held_partials(self) -> list[Partial]:
        return self.panes + self.direct

    def retention_start(self) -> int | None:
        starts = [pc.min(p.main.column(WS)).as_py() for p in self.panes + self.direct if p.num_rows]
        return min(starts, default=None)


def _i64(value: int) -> pa.Scalar:
    """A typed scalar: comparing with a bare Python int makes pyarrow infer its type,
    which costs ~100 µs per call (it probes optional modules each time)."""
    return pa.scalar(value, pa.int64())


def _int64(column) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return pc.cast(column, pa.int64()).to_numpy(zero_copy_only=False)


def _ranges(counts: np.ndarray) -> np.ndarray:
    """[0..c0-1, 0..c1-1, ...] for counts c."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total, dtype=np.int64) - offsets


class SessionWindowOperator(_WindowOutput):
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
            closed = self.open.filter_by(WE, lambda c: pc.less_equal(c, _i64(watermark)))
            if closed.num_rows:
                self.open = self.open.filter_by(WE, lambda c: pc.greater(c, _i64(watermark)))
                self.emit_final(self.window_agg.finalize(closed), watermark)
        self.emitted_wm = max(self.emitted_wm, watermark)

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
