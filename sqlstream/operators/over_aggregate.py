"""OVER aggregations by event time (Flink's Over Aggregation): an append-only result.

``agg(x) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND
CURRENT ROW)``, ``ROWS BETWEEN n PRECEDING AND CURRENT ROW``, ``UNBOUNDED PRECEDING``,
``LAG``/``LEAD(x, n)``, and Python or model aggregates over the bounded frames
(:mod:`sqlstream.operators.over_python`): every input row comes out once, with its window values, when the watermark passes its
event time (watermark > ts: no row that is not late can still come before it or tie
with it); ``LEAD(x, n)`` also waits until its n-th following row has passed. Rows of a
key are ordered by event time, then arrival; in RANGE frames rows with the same event
time (peers) see each other, in ROWS frames and for LAG/LEAD the earlier arrival comes
first. Late rows (event time below their ``__wm`` stamp) go to the dead-letter output,
reason ``late``; a row whose Python aggregate fails goes there too, reason ``udf``.

Per watermark step, vectorized: the held rows (already emitted ones still inside some
frame, and pending ones) are sorted by (key, time, arrival); frame bounds come from
``searchsorted`` on one int64 (key ordinal, time) value per row, count/sum/avg from
prefix sums, min/max from a sparse table (O(n log n)), LAG/LEAD from index shifts.
State: pending rows, plus emitted rows with time ≥ (the lowest time a future row may
have) − the largest RANGE, and the last n emitted rows per key for the largest ROWS /
LAG offset; for UNBOUNDED PRECEDING frames, one totals row per key (rows, non-NULL
count, sum or min/max of every emitted row), to which the emitted rows are folded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.batches import event_time_us
from sqlstream.connectors.dead_letters import rows_as_dead_letters
from sqlstream.hidden import MAX_WATERMARK
from sqlstream.operators.base import Operator
from sqlstream.operators.keyed_rows import KeyedRows
from sqlstream.operators.keys import encode_keys, key_changes
from sqlstream.operators.over_python import frame_results
from sqlstream.operators.state_size import StateSize, table_bytes
from sqlstream.operators.windows import drop_late_rows

__all__ = ["OverCall", "OverAggregateOperator"]

KEY, SEQ, TIME = "__over_key", "__seq", "__time"


@dataclass(frozen=True)
class OverCall:
    """One window function: ``func`` (count, sum, avg, min, max, lag, lead, or udaf:
    the Python or model aggregate ``function``) of column ``arg`` (None: count(*)) into
    ``output`` of type ``type``; ``frame`` "rows" with ``preceding`` rows or "range" with
    ``preceding`` µs (aggregates), or ``offset`` (lag/lead)."""

    func: str
    arg: str | None
    output: str
    type: pa.DataType
    frame: str | None = None
    preceding: int | None = 0  # None: UNBOUNDED PRECEDING
    offset: int = 1
    function: Any = None  # udaf: a GroupFunction (sqlstream.operators.python_aggregates)


class OverAggregateOperator(Operator):
    name = "over_aggregate"
    state_hint = "use a shorter RANGE / fewer ROWS, or a shorter watermark delay"

    def __init__(self, partition: list[str], time_column: str, calls: list[OverCall], schema: pa.Schema, source_label: str):
        super().__init__()
        self.partition = list(partition)
        self.time_column = time_column
        self.calls = list(calls)
        self.schema = schema
        self.source_label = source_label
        self.inputs = [f.name for f in schema if f.name not in {c.output for c in calls}]
        self.range_us = max((c.preceding for c in calls if c.frame == "range" and c.preceding is not None), default=None)
        self.keep_rows = max([c.preceding for c in calls if c.frame == "rows" and c.preceding is not None]
                             + [c.offset for c in calls if c.func == "lag"] + [0])
        self.unbounded = any(c.preceding is None and c.func not in ("lag", "lead") for c in calls)
        self.totals = KeyedRows(KEY)  # unbounded frames: per key, the aggregates of the rows folded in
        self.lead = max((c.offset for c in calls if c.func == "lead"), default=0)
        self.next_seq = 0
        self.late_rows = 0
        self.pending: pa.Table | None = None  # inputs + KEY + SEQ + TIME, not emitted yet
        self.history: pa.Table | None = None  # emitted rows some future row's frame may still hold

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        batch, times = drop_late_rows(
            self, batch, event_time_us(batch.column(self.time_column)), self.source_label,
            "an OVER window's rows are emitted once the watermark passes their event time")
        n = batch.num_rows
        if n == 0:
            return
        table = pa.Table.from_batches([batch]).select(self.inputs)
        table = table.append_column(KEY, encode_keys(table, self.partition))
        table = table.append_column(SEQ, pa.array(np.arange(self.next_seq, self.next_seq + n, dtype=np.int64)))
        table = table.append_column(TIME, pa.array(times, pa.int64()))
        self.next_seq += n
        self.pending = table if self.pending is None else pa.concat_tables([self.pending, table])

    def on_watermark(self, watermark: int) -> None:
        if self.pending is not None and self.pending.num_rows:
            self._fire(watermark)
        self.emit_watermark(watermark)

    def _fire(self, watermark: int) -> None:
        pending = self.pending
        held = pending if self.history is None else pa.concat_tables([self.history, pending.select(self.history.schema.names)])
        done = np.zeros(held.num_rows, dtype=bool)
        done[: held.num_rows - pending.num_rows] = True
        order = pc.sort_indices(held, sort_keys=[(KEY, "ascending"), (TIME, "ascending"), (SEQ, "ascending")]).to_numpy()
        held, done = held.take(order), done[order]
        times = held.column(TIME).to_numpy()
        starts = key_changes(held.column(KEY).combine_chunks())
        group = np.cumsum(starts) - 1
        positions = np.arange(times.size)
        first = np.flatnonzero(starts)[group]
        last = np.append(np.flatnonzero(starts)[1:] - 1, times.size - 1)[group]
        ready = ~done & (times < watermark)
        if self.lead and watermark < MAX_WATERMARK:  # LEAD(x, n) waits for its n-th following row
            ahead = positions + self.lead
            ready &= (ahead <= last) & (times[np.minimum(ahead, times.size - 1)] < watermark)
        if not ready.any():
            return
        done_per_group = np.bincount(group[done], minlength=int(group.max()) + 1)
        fresh = first + done_per_group[group]  # emitted rows are a prefix of each key
        rows = np.flatnonzero(ready)
        acc: dict[int, dict] = {}
        if self.unbounded:
            old, groups, index = self._totals(held, group, rows)
            row_group = np.searchsorted(groups, group[rows])
            for j, c in enumerate(self.calls):
                totals = _accumulated(c, j, old, index) if c.preceding is None and c.func not in ("lag", "lead") else None
                if totals is not None:
                    acc[j] = {name: values[row_group] for name, values in totals.items()}
        failed: dict[int, str] = {}  # ready row (its index among them) -> why its Python aggregate failed
        values = {c.output: self._compute(c, held, times, group, first, last, ready, fresh, acc.get(j), failed)
                  for j, c in enumerate(self.calls)}
        if self.unbounded:
            self._fold(held, group, fresh, ready, old, groups, index)
        out_rows = np.flatnonzero(ready)
        out_rows = out_rows[np.lexsort((held.column(SEQ).to_numpy()[out_rows], times[out_rows]))]
        out = held.take(out_rows)
        columns = []
        for field in self.schema:
            if field.name in values:
                columns.append(values[field.name].take(pa.array(np.searchsorted(np.flatnonzero(ready), out_rows))))
            else:
                columns.append(out.column(field.name).combine_chunks())
        batch = pa.RecordBatch.from_arrays(columns, schema=self.schema)
        if failed:
            batch = self._drop_failed(batch, np.searchsorted(np.flatnonzero(ready), out_rows), failed)
        self.emit(batch)
        emitted = done | ready
        self.pending = held.filter(pa.array(~emitted))
        self.history = self._trim(held, emitted, times, group, watermark)

    def _trim(self, held: pa.Table, emitted: np.ndarray, times: np.ndarray, group: np.ndarray,
              watermark: int) -> pa.Table | None:
        keep = np.zeros(times.size, dtype=bool)
        if self.range_us is not None:
            lowest = watermark
            if (~emitted).any():
                lowest = min(lowest, int(times[~emitted].min()))
            keep |= times >= lowest - self.range_us
        if self.keep_rows:
            # emitted rows are a prefix of each key: keep the last `keep_rows` of them
            emitted_per_group = np.bincount(group[emitted], minlength=group.max() + 1)
            first = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
            last_emitted = first[group] + emitted_per_group[group] - 1
            keep |= np.arange(times.size) > last_emitted - self.keep_rows
        keep &= emitted
        return held.filter(pa.array(keep)) if keep.any() else None

    def _drop_failed(self, batch: pa.RecordBatch, ready_index: np.ndarray, failed: dict[int, str]) -> pa.RecordBatch:
        """``batch`` without the rows a Python aggregate failed on: those go to the dead
        letters (reason ``udf``; the row with its partition key, the failure)."""
        bad = np.flatnonzero(np.isin(ready_index, np.fromiter(failed, np.int64)))
        if self.dead_letter is not None:
            times = event_time_us(batch.column(self.time_column))[bad].tolist()
            details = [failed[int(ready_index[i])] for i in bad]
            self.dead_letter(rows_as_dead_letters(batch.drop_columns([c.output for c in self.calls]), bad,
                                                  self.source_label, "udf", details, times))
        keep = np.ones(batch.num_rows, dtype=bool)
        keep[bad] = False
        return batch.filter(pa.array(keep))

    def _compute(self, call: OverCall, held: pa.Table, times, group, first, last, ready, fresh, acc,
                 failed: dict[int, str]) -> pa.Array:
        """``call``'s value for each ready row (in held order). ``fresh``: per row, the
        first row of its key not folded into the key's totals yet; ``acc``: per ready
        row, the key's totals (unbounded frames); ``failed`` collects the ready rows a
        Python aggregate failed on."""
        rows = np.flatnonzero(ready)
        if call.func in ("lag", "lead"):
            source = rows - call.offset if call.func == "lag" else rows + call.offset
            inside = (source >= first[rows]) & (source <= last[rows])
            picked = held.column(call.arg).combine_chunks().take(pa.array(np.where(inside, source, 0)))
            return pc.if_else(pa.array(inside), picked, pa.nulls(rows.size, picked.type)).cast(call.type)
        if call.preceding is None:  # UNBOUNDED PRECEDING: the key's totals + its rows not folded in yet
            start = fresh[rows]
            end = rows if call.frame == "rows" else _range_bounds(times, group, 0, rows)[1]
        elif call.frame == "rows":
            start, end = np.maximum(first[rows], rows - call.preceding), rows
        else:
            start, end = _range_bounds(times, group, call.preceding, rows)
        if call.func == "udaf":
            result, errors = frame_results(call.function, held.column(call.arg).combine_chunks(), start, end)
            failed.update((i, e) for i, e in enumerate(errors) if e is not None and i not in failed)
            return result
        part = _segment(call, held, start, end)
        if call.preceding is None:
            part = _combine(call.func, acc, part)
        return _finish(call, part)

    def _totals(self, held: pa.Table, group: np.ndarray, rows: np.ndarray) -> tuple[pa.Table | None, np.ndarray, np.ndarray]:
        """The totals of the keys of ``rows`` (taken out of the state; None: none yet),
        the ready keys' group numbers, and per row the index of its key's totals (-1: none)."""
        groups, at = np.unique(group[rows], return_index=True)
        keys = held.column(KEY).take(pa.array(rows[at]))
        old = self.totals.take(keys)
        index = np.full(groups.size, -1, dtype=np.int64)
        if old is not None:
            index = pc.fill_null(pc.index_in(keys, value_set=old.column(KEY), skip_nulls=False), -1).to_numpy().astype(np.int64)
        return old, groups, index

    def _fold(self, held: pa.Table, group: np.ndarray, fresh: np.ndarray, ready: np.ndarray, old, groups, index) -> None:
        """The key totals after this step: old totals ⊕ the rows emitted now (a block
        starting at ``fresh`` in each key)."""
        counts = np.bincount(group[ready], minlength=int(group.max()) + 1)[groups]
        starts = fresh[np.flatnonzero(np.r_[True, group[1:] != group[:-1]])][groups]
        columns = {KEY: held.column(KEY).take(pa.array(starts))}
        for j, call in enumerate(self.calls):
            if call.preceding is not None or call.func in ("lag", "lead"):
                continue
            part = _combine(call.func, _accumulated(call, j, old, index), _segment(call, held, starts, starts + counts - 1))
            columns.update({f"{name}{j}": values for name, values in part.items()})
        self.totals.add(pa.table(columns))

    # -- checkpoints -------------------------------------------------------------------------

    def retention_start(self) -> int | None:
        """Held rows (pending or still inside a frame) hold their input back."""
        tables = [t for t in (self.pending, self.history) if t is not None and t.num_rows]
        return min(int(pc.min(t.column(TIME)).as_py()) for t in tables) if tables else None

    def state_values(self) -> dict:
        """The next arrival number (order among equal times) and the count of late rows."""
        return {"next_seq": self.next_seq, "late_rows": self.late_rows}

    def state_tables(self) -> dict[str, pa.Table]:
        """``pending`` (rows not emitted yet) and ``history`` (emitted rows still inside a
        frame): input columns + ``__over_key``, ``__seq``, ``__time``; ``totals`` (unbounded
        frames): ``__over_key`` + per call j ``n{j}``, ``c{j}``, ``s{j}`` or ``m{j}``."""
        tables = {name: t for name, t in (("pending", self.pending), ("history", self.history)) if t is not None and t.num_rows}
        totals = self.totals.table()
        if totals is not None:
            tables["totals"] = totals
        return tables

    def load_state(self, values: dict, tables: dict[str, pa.Table]) -> None:
        self.next_seq = values["next_seq"]
        self.late_rows = values["late_rows"]
        self.pending = tables.get("pending")
        self.history = tables.get("history")
        self.totals.load(tables.get("totals"))

    def state_size(self) -> StateSize:
        """Pending rows, the emitted rows still inside a frame, one totals row per key
        (unbounded frames)."""
        size = self.totals.state_size()
        for table in (self.pending, self.history):
            if table is not None:
                size = size + StateSize(table.num_rows, table_bytes(table))
        return size


def _range_bounds(times: np.ndarray, group: np.ndarray, preceding_us: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last index of each row's RANGE frame (time - preceding .. its last peer)
    in rows sorted by (group, time): one searchsorted over (group, time) as one int64."""
    low = int(times.min())
    span = int(times.max()) - low + preceding_us + 1
    if (int(group.max()) + 1) * span < 2**62:
        combined = group.astype(np.int64) * span + (times - low + preceding_us)
        start = np.searchsorted(combined, combined[rows] - preceding_us, side="left")
        end = np.searchsorted(combined, combined[rows], side="right") - 1
        return start, end
    start, end = np.empty(rows.size, np.int64), np.empty(rows.size, np.int64)  # a huge time span: per key
    bounds = np.flatnonzero(np.r_[True, group[1:] != group[:-1], True])
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        mine = (rows >= lo) & (rows < hi)
        if mine.any():
            segment = times[lo:hi]
            start[mine] = lo + np.searchsorted(segment, times[rows[mine]] - preceding_us, side="left")
            end[mine] = lo + np.searchsorted(segment, times[rows[mine]], side="right") - 1
    return start, end


def _numbers(call: OverCall, column: pa.Array) -> np.ndarray:
    """The argument as int64 or float64 numbers, NULL as 0 (sums) or as the identity of
    min/max."""
    kind = column.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_time(kind):
        column = pc.cast(column, pa.int64())
    floating = pa.types.is_floating(kind) or call.func == "avg"
    values = pc.fill_null(column, 0).to_numpy(zero_copy_only=False).astype(np.float64 if floating else np.int64)
    if call.func in ("min", "max"):
        values = np.where(column.is_valid().to_numpy(zero_copy_only=False), values, _identity(call.func, values.dtype))
    return values


def _identity(func: str, dtype) -> float | int:
    if np.dtype(dtype).kind == "f":
        return np.inf if func == "min" else -np.inf
    return np.iinfo(np.int64).max if func == "min" else np.iinfo(np.int64).min


def _segment(call: OverCall, held: pa.Table, start: np.ndarray, end: np.ndarray) -> dict[str, np.ndarray]:
    """Over rows [start, end] (empty where end < start): ``n`` rows, ``c`` non-NULL
    arguments, and ``s`` their sum (count/sum/avg) or ``m`` their min/max."""
    length = np.maximum(end - start + 1, 0)
    part = {"n": length.astype(np.int64)}
    if call.arg is None:
        return part
    column = held.column(call.arg).combine_chunks()
    counts = np.concatenate([[0], np.cumsum(column.is_valid().to_numpy(zero_copy_only=False))])
    safe_start, safe_end = np.where(length > 0, start, 0), np.where(length > 0, end, 0)
    part["c"] = np.where(length > 0, counts[safe_end + 1] - counts[safe_start], 0)
    if call.func == "count":
        return part
    values = _numbers(call, column)
    if call.func in ("sum", "avg"):
        sums = np.concatenate([np.zeros(1, values.dtype), np.cumsum(values)])
        part["s"] = np.where(length > 0, sums[safe_end + 1] - sums[safe_start], 0).astype(values.dtype)
    else:
        found = _sparse_min_max(values, call.func, safe_start, safe_end)
        part["m"] = np.where(length > 0, found, _identity(call.func, values.dtype)).astype(values.dtype)
    return part


def _accumulated(call: OverCall, j: int, old: pa.Table | None, index: np.ndarray) -> dict[str, np.ndarray] | None:
    """The totals of call ``j`` at ``index`` in ``old`` (-1: nothing folded yet; None:
    no totals at all)."""
    if old is None:
        return None
    names = ["n"] + (["c"] if call.arg is not None else []) + (["s"] if call.func in ("sum", "avg") else []) + (
        ["m"] if call.func in ("min", "max") else [])
    out = {}
    for name in names:
        column = old.column(f"{name}{j}").to_numpy()
        neutral = _identity(call.func, column.dtype) if name == "m" else 0
        out[name] = np.where(index >= 0, column[np.maximum(index, 0)], neutral).astype(column.dtype)
    return out


def _combine(func: str, a: dict[str, np.ndarray] | None, b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if a is None:
        return b
    out = {}
    for name, values in b.items():
        if name == "m":
            out[name] = (np.minimum if func == "min" else np.maximum)(a[name].astype(values.dtype), values)
        else:
            out[name] = a[name].astype(values.dtype) + values
    return out


def _finish(call: OverCall, part: dict[str, np.ndarray]) -> pa.Array:
    """The SQL value of a window function from its segment aggregates."""
    if call.func == "count":
        return pa.array(part["c"] if call.arg is not None else part["n"], pa.int64())
    empty = part["c"] == 0
    if call.func == "sum":
        return pa.array(part["s"], mask=empty).cast(call.type)
    if call.func == "avg":
        return pa.array(part["s"] / np.where(empty, 1, part["c"]), mask=empty).cast(call.type)
    result = pa.array(part["m"], mask=empty)
    if pa.types.is_timestamp(call.type) or pa.types.is_date(call.type) or pa.types.is_time(call.type):
        return result.cast(pa.int64()).cast(call.type)
    return result.cast(call.type)


def _sparse_min_max(values: np.ndarray, func: str, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """min/max over [start, end] per query (start <= end) with a sparse table."""
    pick = np.minimum if func == "min" else np.maximum
    levels = [values]
    length = end - start + 1
    while length.size and (1 << len(levels)) <= int(length.max()):
        step = 1 << (len(levels) - 1)
        prev = levels[-1]
        levels.append(pick(prev[:-step], prev[step:]))
    k = np.floor(np.log2(np.maximum(length, 1))).astype(np.int64)
    result = np.empty(start.size, dtype=values.dtype)
    for level in np.unique(k):
        mine = k == level
        table = levels[level]
        result[mine] = pick(table[start[mine]], table[end[mine] - (1 << int(level)) + 1])
    return result
