"""Windowed aggregation: :func:`make_window_operator` picks the operator for a window
kind; TUMBLE and final upstream windows are aggregated here.

State is partial aggregates only (see :mod:`sqlstream.operators.aggregates`):

* One window per row (TUMBLE, and windows propagated from an upstream window
  operator, :class:`WindowAggregateOperator`): a short list of *fragments* (one per
  batch, compacted now and then) keyed by ``(__ws, __we, keys)``. When the watermark
  passes window ends, the closing rows of each fragment are finalized directly; only
  windows present in more than one fragment (a batch boundary cut through them) are
  merged first. That keeps the merge cost proportional to the windows that straddle
  batches, not to the whole input.
* HOP and CUMULATE aggregate per *pane* (``gcd(slide, size)`` resp. ``step``) and
  combine panes into windows at emission, so input rows are never multiplied by
  ``size / slide``. Rows that arrive when some of their windows were already emitted
  are aggregated per remaining window instead, so results do not depend on batching
  (:mod:`sqlstream.operators.pane_windows`).
* SESSION merges per-batch sessions into open sessions per key with a vectorized
  interval union, and closes a session when the watermark passes its end
  (:mod:`sqlstream.operators.session_windows`).

Emitted rows carry ``__wm`` = the watermark before the emission, so a downstream
window operator (window columns propagate) never sees them as late. All rows of the
windows one watermark closes are emitted in one batch (window Top-N relies on it).

With ``EMIT EVERY`` the open windows are also emitted every interval of processing
time as a changelog against the previous early rows: ``+I`` new, ``-U``/``+U``
changed, ``-D`` for an early session that merged into another
(:mod:`sqlstream.operators.window_output`, shared by all window kinds)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.hidden import WM_COLUMN
from sqlstream.operators.aggregates import AggCall, Aggregator, Partial
from sqlstream.operators.pane_windows import PaneWindowOperator
from sqlstream.operators.session_windows import SessionWindowOperator
from sqlstream.operators.state_tables import partials_from_tables, partials_to_tables
from sqlstream.operators.window_output import (
    MAX_FRAGMENTS,
    WE,
    WS,
    WindowOutputOperator,
    concat_partials,
    int64_scalar,
    int64_values,
)
from sqlstream.operators.windows import column_int64, tumble_start

__all__ = ["make_window_operator", "WindowAggregateOperator", "PaneWindowOperator", "SessionWindowOperator",
           "PartialWindowOperator", "MergeWindowOperator", "tumble_partial_schema", "MERGEABLE"]

#: aggregates whose partials merge without regard to arrival order (two-phase TUMBLE)
MERGEABLE = ("count_star", "count", "sum", "avg", "min", "max", "stddev_samp", "stddev_pop", "var_samp", "var_pop")


def make_window_operator(spec, keys: list[str], calls: list[AggCall], schema: pa.Schema, emit_every_us: int | None):
    """The window aggregation operator for ``spec.kind``."""
    if spec.kind in ("tumble", "final"):
        return WindowAggregateOperator(spec, keys, calls, schema, emit_every_us)
    if spec.kind in ("hop", "cumulate"):
        return PaneWindowOperator(spec, keys, calls, schema, emit_every_us)
    if spec.kind == "session":
        return SessionWindowOperator(spec, keys, calls, schema, emit_every_us)
    raise AssertionError(spec.kind)


@dataclass
class _Fragment:
    part: Partial
    min_start: int
    min_end: int
    max_end: int

    @classmethod
    def of(cls, part: Partial) -> "_Fragment":
        starts = pc.min_max(part.main.column(WS))
        ends = pc.min_max(part.main.column(WE))
        return cls(part, starts["min"].as_py(), ends["min"].as_py(), ends["max"].as_py())


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


class WindowAggregateOperator(WindowOutputOperator):
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
        self.fragments.extend(_Fragment.of(part) for part in self.window_agg.partials(table))
        if len(self.fragments) > MAX_FRAGMENTS:
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
                closed = fragment.part.filter_by(WE, lambda c: pc.less_equal(c, int64_scalar(watermark)))
                rest = fragment.part.filter_by(WE, lambda c: pc.greater(c, int64_scalar(watermark)))
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
        ends = [int64_values(pc.unique(p.main.column(WE))) for p in parts]
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

    def state_tables(self) -> dict[str, pa.Table]:
        """The shared tables plus the fragments' partials (``fragment_{i}_main``/``_set{j}``)."""
        return {**super().state_tables(), **partials_to_tables("fragment", [f.part for f in self.fragments])}

    def load_state(self, values: dict, tables: dict[str, pa.Table]) -> None:
        super().load_state(values, tables)
        self.fragments = [_Fragment.of(part) for part in partials_from_tables("fragment", tables)]

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


def tumble_partial_schema(spec, keys: list[str], calls: list[AggCall], input_schema: pa.Schema) -> pa.Schema:
    """The rows a :class:`PartialWindowOperator` emits: ``__ws``, ``__we``, the keys, the
    partial columns of ``calls`` (types from ``input_schema``) and ``__wm``."""
    needed = dict.fromkeys([*keys, *(c.arg for c in calls if c.arg is not None)])
    empty = pa.table({name: pa.array([], input_schema.field(name).type) for name in needed} | {WE: pa.array([], pa.int64())})
    main = _TumbleAggregator(keys, calls, spec.size_us).partial(empty).main
    return main.schema.append(pa.field(WM_COLUMN, pa.int64()))


class PartialWindowOperator(WindowAggregateOperator):
    """The first phase of a two-phase TUMBLE aggregate, in one partition of a group of
    workers: when the watermark closes windows it emits their merged partial rows
    (:func:`tumble_partial_schema`) instead of results, for an exchange to send to the
    partition that owns each key, where a :class:`MergeWindowOperator` finishes them.
    What a window's partials are depends only on the partition's rows and watermark,
    so a replay after a restart sends the same rows again (docs/scale-out.md#shuffles)."""

    name = "window_partial"

    def __init__(self, spec, keys, calls, schema):
        super().__init__(spec, keys, calls, schema, None)

    def _finalize(self, closing: list[_Fragment]) -> pa.Table:
        return self.window_agg.merge([f.part for f in closing], regroup=True).main


class MergeWindowOperator(WindowAggregateOperator):
    """The second phase: takes the partial rows of :class:`PartialWindowOperator`s (each
    window of each partition once) as fragments, merges and finalizes them when the
    watermark passes the window's end."""

    name = "window_merge"

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        if not batch.num_rows:
            return
        table = pa.Table.from_batches([batch])
        if WM_COLUMN in table.column_names:
            table = table.drop_columns([WM_COLUMN])
        # (a batch may hold several partitions' partials of one window: a fragment has one row per group)
        self.fragments.append(_Fragment.of(self.window_agg.merge([Partial(table, ())], regroup=True)))
        if len(self.fragments) > MAX_FRAGMENTS:
            self.fragments = [_Fragment.of(self.window_agg.merge([f.part for f in self.fragments]))]
