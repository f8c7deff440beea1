"""Join operators bounded by a table or by event time.

* :class:`LookupJoinOperator` — a stream against a bounded ``TABLE`` loaded once at
  the start of a run and indexed once (:class:`~sqlstream.operators.join_keys.KeyIndex`);
  each micro-batch is a vectorized probe, no per-event state.
* :class:`WindowJoinOperator` — two windowed inputs joined on window start/end and
  keys: rows wait per side until the watermark passes their ``window_end``; then the
  window is joined once, emitted final, and its rows are freed.
* :class:`IntervalJoinOperator` — ``b.ts BETWEEN a.ts + lower AND a.ts + upper``:
  each arriving row is joined with the other side's state at once (append-only
  output); a row leaves state when the other side's watermark shows no partner can
  still arrive. Rows behind their own watermark are dead-lettered as ``late``, which
  keeps results independent of batch boundaries. The output watermark is held back by
  the interval so joined rows are never late downstream.

Every operator builds its output through :class:`~sqlstream.operators.join_layout.JoinOutput`
from a :class:`~sqlstream.operators.join_layout.JoinLayout` (re-exported here): which
input columns appear, in which order, and the residual (non-equality) condition
evaluated on DataFusion over joined candidate rows. Semi and anti joins (``IN`` /
``EXISTS``) are layouts of kind ``semi``/``anti``: each left row at most once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.hidden import MAX_WATERMARK, MIN_WATERMARK, OP_COLUMN, WM_COLUMN
from sqlstream.operators.base import Operator
from sqlstream.operators.join_keys import KeyIndex, join_pairs
from sqlstream.operators.join_layout import JoinLayout, JoinOutput, JoinSide, null_rows, row_indices, with_unmatched
from sqlstream.operators.join_state import RowChunks, constant_keys
from sqlstream.operators.state_size import NO_STATE, StateSize, numpy_bytes, table_bytes
from sqlstream.operators.state_tables import numbered
from sqlstream.operators.windows import column_int64, drop_late_rows, late_rows_as_dead_letters

__all__ = [
    "JoinSide",
    "JoinLayout",
    "JoinOutput",
    "LookupJoinOperator",
    "WindowJoinOperator",
    "IntervalJoinOperator",
    "with_unmatched",
]


def _filter(columns: list[pa.Array], mask: np.ndarray) -> list[pa.Array]:
    keep = pa.array(mask)
    return [c.filter(keep) for c in columns]


# -- lookup join ------------------------------------------------------------------------------


class LookupJoinOperator(Operator):
    """A stream joined with a bounded table indexed at the start of the run (and again
    when the table is read again: :meth:`prepare_swap`)."""

    name = "lookup_join"
    state_hint = "the TABLE is held in memory whole: select fewer of its columns or filter its rows"

    def __init__(self, layout: JoinLayout, stream_side: int, table: pa.Table):
        super().__init__()
        self.out = JoinOutput(layout)
        self.layout = layout
        self.stream_side = stream_side
        self.table, self.index, self._table_bytes = self._indexed(table)
        self.preserve = layout.outer(stream_side)
        self._stream_columns = set(layout.sides[stream_side].columns) | {WM_COLUMN, OP_COLUMN}  # what the output reads

    def _indexed(self, table: pa.Table) -> tuple[pa.Table, KeyIndex, int]:
        table = table.combine_chunks()
        index = KeyIndex([table.column(k) for k in self.layout.sides[1 - self.stream_side].keys])
        return table, index, table_bytes(table) + index.nbytes

    def prepare_swap(self, table: pa.Table):
        """Index ``table`` (the TABLE read again) and return the function that switches
        the join to it at once; until it is called, batches are joined with the old rows."""
        indexed = self._indexed(table)

        def swap() -> None:
            self.table, self.index, self._table_bytes = indexed

        return swap

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        stream = self.layout.sides[self.stream_side]
        keys = [batch.column(k) for k in stream.keys]
        if self.layout.semi:
            self._semi(batch, keys)
            return
        if self.index.unique and self.layout.residual is None:
            found = self.index.probe_unique(keys)
            stream_rows, table_rows = None, found
            if not self.preserve:
                matched = found >= 0
                if not matched.all():  # a filter is cheaper than a take of the stream's columns
                    keep = [n for n in batch.schema.names if n in self._stream_columns]
                    batch = batch.select(keep).filter(pa.array(matched))
                    table_rows = found[matched]
        else:
            stream_rows, table_rows = self.index.probe(keys)
            if self.layout.residual is not None and stream_rows.size:
                keep = self.out.matches(self.out.columns(*self._both(batch, stream_rows, table_rows)))
                stream_rows, table_rows = stream_rows[keep], table_rows[keep]
            if self.preserve:
                stream_rows, table_rows = with_unmatched(batch.num_rows, stream_rows, table_rows)
        tables, rows = self._both(batch, stream_rows, table_rows)
        columns = self.out.columns(tables, rows)
        taken = row_indices(stream_rows)
        hidden = {n: (batch.column(n) if taken is None else batch.column(n).take(taken))
                  for n in self.out.hidden if n in batch.schema.names}
        self.emit(self.out.batch(columns, hidden.get(WM_COLUMN), hidden.get(OP_COLUMN)))

    def _semi(self, batch: pa.RecordBatch, keys: list) -> None:
        """Stream rows with (semi) or without (anti) a matching table row, each once."""
        if self.index.unique and self.layout.residual is None:
            found = self.index.probe_unique(keys) >= 0
        else:
            stream_rows, table_rows = self.index.probe(keys)
            if self.layout.residual is not None and stream_rows.size:
                keep = self.out.matches(self.out.columns(*self._both(batch, stream_rows, table_rows)))
                stream_rows = stream_rows[keep]
            found = np.bincount(stream_rows, minlength=batch.num_rows) > 0
        wanted = found if self.layout.kind == "semi" else ~found
        if self.layout.null_aware and self.table.num_rows:  # NOT IN: a NULL on either side is no answer
            table_keys = [self.table.column(k) for k in self.layout.sides[1 - self.stream_side].keys]
            if any(k.null_count for k in table_keys):
                wanted[:] = False
            for key in keys:
                if key.null_count:
                    wanted &= pc.is_valid(key).to_numpy(zero_copy_only=False)
        if not wanted.any():
            return
        rows = batch if wanted.all() else batch.filter(pa.array(wanted))
        columns = [rows.column(name) if side == self.stream_side else pa.nulls(rows.num_rows, field.type)
                   for (side, name), field in zip(self.layout.output, self.out.visible, strict=True)]
        columns = [c if c.type == f.type else c.cast(f.type) for c, f in zip(columns, self.out.visible, strict=True)]
        hidden = {n: rows.column(n) for n in self.out.hidden if n in rows.schema.names}
        self.emit(self.out.batch(columns, hidden.get(WM_COLUMN), hidden.get(OP_COLUMN)))

    def _both(self, batch, stream_rows, table_rows):
        tables, rows = [None, None], [None, None]
        tables[self.stream_side], rows[self.stream_side] = batch, stream_rows
        tables[1 - self.stream_side], rows[1 - self.stream_side] = self.table, table_rows
        return tables, rows

    def state_size(self) -> StateSize:
        """The TABLE's rows and their key index."""
        return StateSize(self.table.num_rows, self._table_bytes)


# -- window join --------------------------------------------------------------------------------


@dataclass
class _WindowRows:
    table: pa.Table
    starts: np.ndarray
    ends: np.ndarray

    def __post_init__(self):
        self.first_end = int(self.ends.min()) if self.ends.size else MAX_WATERMARK
        self.last_end = int(self.ends.max()) if self.ends.size else MIN_WATERMARK


def _concat_rows(parts: list[_WindowRows]) -> _WindowRows:
    if len(parts) == 1:
        return parts[0]
    return _WindowRows(
        pa.concat_tables([p.table for p in parts]),  # chunks are combined per column when read
        np.concatenate([p.starts for p in parts]),
        np.concatenate([p.ends for p in parts]),
    )


_MAX_PENDING = 32

#: the table names of a two-input join's sides in a checkpoint
_SIDE_NAMES = ("left", "right")


class WindowJoinOperator(Operator):
    """Both inputs windowed; each window joined once when the watermark passes its end."""

    name = "window_join"
    state_hint = "use smaller windows or a shorter watermark delay"

    def __init__(self, layout: JoinLayout):
        super().__init__(ports=2)
        self.layout = layout
        self.out = JoinOutput(layout)
        self.pending: tuple[list[_WindowRows], list[_WindowRows]] = ([], [])
        self.emitted_wm = MIN_WATERMARK
        self.late_rows = 0

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        side = self.layout.sides[port]
        ends = column_int64(batch, side.window[1])
        late = ends <= self.watermark  # possible only after this input was idle
        if late.any():
            self.late_rows += int(late.sum())
            if self.dead_letter is not None:
                self.dead_letter(late_rows_as_dead_letters(
                    batch, late, ends, side.label, "its window was already joined and emitted (input was idle)"))
            batch = batch.filter(pa.array(~late))
            ends = ends[~late]
        if batch.num_rows:
            table = pa.Table.from_batches([batch]).select(side.stored())
            pending = self.pending[port]
            pending.append(_WindowRows(table, column_int64(batch, side.window[0]), ends))
            if len(pending) > _MAX_PENDING:
                pending[:] = [_concat_rows(pending)]

    def on_watermark(self, watermark: int) -> None:
        closed = [self._closing(port, watermark) for port in (0, 1)]
        if closed[0] is not None or closed[1] is not None:
            self._join(closed)
        self.emitted_wm = watermark
        self.emit_watermark(watermark)

    def _closing(self, port: int, watermark: int) -> _WindowRows | None:
        closing, keep = [], []
        for rows in self.pending[port]:
            if rows.last_end <= watermark:
                closing.append(rows)
            elif rows.first_end > watermark:
                keep.append(rows)
            else:
                done = rows.ends <= watermark
                later = np.flatnonzero(~done)  # the few rows of windows still open: taken, not filtered
                closing.append(_WindowRows(rows.table.filter(pa.array(done)), rows.starts[done], rows.ends[done]))
                keep.append(_WindowRows(rows.table.take(pa.array(later)), rows.starts[later], rows.ends[later]))
        self.pending[port][:] = keep
        return _concat_rows(closing) if closing else None

    def _join(self, closed: list[_WindowRows | None]) -> None:
        layout = self.layout
        tables = [rows.table if rows is not None else null_rows(side, layout, port)
                  for port, (rows, side) in enumerate(zip(closed, layout.sides, strict=True))]
        n_left = closed[0].table.num_rows if closed[0] is not None else 0
        n_right = closed[1].table.num_rows if closed[1] is not None else 0
        if n_left and n_right:
            # windows of one size on both sides: the end identifies the window (fewer key columns)
            sizes = [rows.ends - rows.starts for rows in closed]
            one_size = len({int(d.min()) for d in sizes} | {int(d.max()) for d in sizes}) == 1
            bounds = (lambda r: [pa.array(r.ends)]) if one_size else (lambda r: [pa.array(r.starts), pa.array(r.ends)])
            keys = [
                bounds(rows) + [rows.table.column(k) for k in side.keys]
                for rows, side in zip(closed, layout.sides, strict=True)
            ]
            left_rows, right_rows = join_pairs(keys[0], keys[1])
        else:
            left_rows = right_rows = np.zeros(0, np.int64)
        if layout.residual is not None and left_rows.size:
            keep = self.out.matches(self.out.columns(tables, (left_rows, right_rows)))
            left_rows, right_rows = left_rows[keep], right_rows[keep]
        if layout.semi:  # each left row once: with (semi) or without (anti) a partner
            found = np.bincount(left_rows, minlength=n_left) > 0
            rows = np.flatnonzero(found if layout.kind == "semi" else ~found)
            if rows.size:
                tables[1] = null_rows(layout.sides[1], layout, 1)
                columns = self.out.columns(tables, (rows, np.full(rows.size, -1, dtype=np.int64)))
                self.emit(self.out.batch(columns, wm=self.emitted_wm))
            return
        parts_left, parts_right = [left_rows], [right_rows]
        if layout.outer(0) and n_left:
            alone = np.flatnonzero(np.bincount(left_rows, minlength=n_left) == 0)
            parts_left.append(alone)
            parts_right.append(np.full(alone.size, -1, dtype=np.int64))
        if layout.outer(1) and n_right:
            alone = np.flatnonzero(np.bincount(right_rows, minlength=n_right) == 0)
            parts_left.append(np.full(alone.size, -1, dtype=np.int64))
            parts_right.append(alone)
        left_rows, right_rows = np.concatenate(parts_left), np.concatenate(parts_right)
        if left_rows.size == 0:
            return
        columns = self.out.columns(tables, (left_rows, right_rows))
        self.emit(self.out.batch(columns, wm=self.emitted_wm))

    def state_values(self) -> dict:
        """The watermark up to which windows were joined, and the count of late rows."""
        return {"emitted_wm": self.emitted_wm, "late_rows": self.late_rows}

    def state_tables(self) -> dict[str, pa.Table]:
        """The rows waiting per side, ``left_{i}``/``right_{i}`` in arrival order (their
        window bounds are read again from the window columns)."""
        return {f"{name}_{i}": rows.table
                for name, pending in zip(_SIDE_NAMES, self.pending, strict=True) for i, rows in enumerate(pending)}

    def load_state(self, values: dict, tables: dict[str, pa.Table]) -> None:
        self.emitted_wm = values["emitted_wm"]
        self.late_rows = values["late_rows"]
        for name, side, pending in zip(_SIDE_NAMES, self.layout.sides, self.pending, strict=True):
            stored = [tables[f"{name}_{i}"] for i in range(numbered(name, tables))]
            pending[:] = [_WindowRows(t, column_int64(t, side.window[0]), column_int64(t, side.window[1])) for t in stored]

    def state_size(self) -> StateSize:
        """Rows of both sides waiting for their windows to close."""
        size = NO_STATE
        for rows in self.pending:
            for r in rows:
                size = size + StateSize(r.table.num_rows, table_bytes(r.table) + numpy_bytes(r.starts, r.ends))
        return size

    def retention_start(self) -> int | None:
        starts = [int(r.starts.min()) for rows in self.pending for r in rows if r.starts.size]
        return min(starts, default=None)


# -- interval join -------------------------------------------------------------------------------


class IntervalJoinOperator(Operator):
    """``right.time - left.time`` in ``[lower, upper]`` (µs), append-only output."""

    name = "interval_join"
    state_hint = "narrow the BETWEEN interval or shorten the watermark delay"

    def __init__(self, layout: JoinLayout, lower_us: int, upper_us: int, output_delay_us: int):
        super().__init__(ports=2)
        self.layout = layout
        self.out = JoinOutput(layout)
        self.lower = lower_us
        self.upper = upper_us
        self.delay = output_delay_us
        self.state = (RowChunks(layout.left.keys), RowChunks(layout.right.keys))
        self.output_wm = MIN_WATERMARK
        self.late_rows = 0

    # -- rows -------------------------------------------------------------------------------

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        side = self.layout.sides[port]
        batch, times = drop_late_rows(
            self, batch, column_int64(batch, side.time), side.label,
            "event time behind the watermark: its interval-join partners may already be gone")
        if batch.num_rows == 0:
            return
        table = pa.Table.from_batches([batch]).select(side.stored()).combine_chunks()
        matched = np.zeros(table.num_rows, dtype=np.int64) if self.layout.counts_matches(port) else None
        other = 1 - port
        for chunk, probe_rows, rows in self.state[other].probe(constant_keys(table, side.keys)):
            if port == 0:
                diff = chunk.times[rows] - times[probe_rows]
            else:
                diff = times[probe_rows] - chunk.times[rows]
            inside = (diff >= self.lower) & (diff <= self.upper)
            probe_rows, rows = probe_rows[inside], rows[inside]
            if probe_rows.size == 0:
                continue
            pair = (probe_rows, rows) if port == 0 else (rows, probe_rows)
            tables = (table, chunk.table) if port == 0 else (chunk.table, table)
            columns = self.out.columns(tables, pair)
            if self.layout.residual is not None:
                keep = self.out.matches(columns)
                columns = _filter(columns, keep)
                probe_rows, rows = probe_rows[keep], rows[keep]
            if chunk.matches is not None:
                if self.layout.kind == "semi":  # stored left rows seeing their first partner
                    first = np.unique(rows[chunk.matches[rows] == 0])
                    if first.size:
                        self._emit_padded(0, chunk.table, first)
                np.add.at(chunk.matches, rows, 1)
            if matched is not None:
                matched += np.bincount(probe_rows, minlength=table.num_rows)
            if not self.layout.semi:
                self.emit(self.out.batch(columns, wm=self.output_wm))
        if self.layout.kind == "semi" and port == 0:
            found = np.flatnonzero(matched > 0)
            if found.size:
                self._emit_padded(0, table, found)
        self.state[port].add(table, times, matched)
        self._expire()

    # -- time -------------------------------------------------------------------------------

    def advance(self, watermark: int, port: int = 0) -> None:
        if watermark <= self.port_watermarks[port]:
            return
        self.port_watermarks[port] = watermark
        self._expire()  # padded rows go out before the watermark passes them
        combined = self.combined_watermark()
        if combined > self.watermark:
            self.watermark = combined
            self.on_watermark(combined)

    def on_watermark(self, watermark: int) -> None:
        output = watermark if watermark >= MAX_WATERMARK else watermark - self.delay
        if output > self.output_wm:
            self.output_wm = output
            self.emit_watermark(output)

    def _expire(self) -> None:
        left_wm, right_wm = self.port_watermarks
        limits = (
            right_wm - self.upper,  # a left row with time + upper below the right watermark: no partner left
            left_wm + self.lower,  # a right row with time - lower below the left watermark: likewise
        )
        for port in (0, 1):
            died = self.state[port].expire_before("times", limits[port])
            if self.layout.outer(port):
                for chunk, rows in died:
                    alone = rows[chunk.matches[rows] == 0]
                    if alone.size:
                        self._emit_padded(port, chunk.table, alone)

    def _emit_padded(self, port: int, table: pa.Table, rows: np.ndarray) -> None:
        none = np.full(rows.size, -1, dtype=np.int64)
        tables = [None, None]
        tables[port] = table
        tables[1 - port] = null_rows(self.layout.sides[1 - port], self.layout, 1 - port)
        pair = (rows, none) if port == 0 else (none, rows)
        self.emit(self.out.batch(self.out.columns(tables, pair), wm=self.output_wm))

    def state_values(self) -> dict:
        """The watermark passed downstream (held back by the interval), late rows counted."""
        return {"output_wm": self.output_wm, "late_rows": self.late_rows}

    def state_tables(self) -> dict[str, pa.Table]:
        """Each side's stored rows (:meth:`~sqlstream.operators.join_state.RowChunks.to_tables`)."""
        return {**self.state[0].to_tables("left"), **self.state[1].to_tables("right")}

    def load_state(self, values: dict, tables: dict[str, pa.Table]) -> None:
        self.output_wm = values["output_wm"]
        self.late_rows = values["late_rows"]
        self.state[0].load_tables("left", tables)
        self.state[1].load_tables("right", tables)

    def state_size(self) -> StateSize:
        return self.state[0].state_size() + self.state[1].state_size()

    def retention_start(self) -> int | None:
        times = [t for t in (self.state[0].min_time(), self.state[1].min_time()) if t is not None]
        return min(times, default=None)
