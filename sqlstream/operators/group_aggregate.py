"""Unwindowed GROUP BY: an updating result.

State is one partial row per group (plus DISTINCT/HLL sets). Each batch (or each
``EMIT EVERY`` interval) merges the new partials into the touched groups and emits
the changes: ``-U`` old / ``+U`` new for groups that changed, ``+I`` for new groups.
Unchanged groups emit nothing.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.hidden import MIN_WATERMARK
from sqlstream.operators.aggregates import AggCall, Aggregator, ArrivalSequence, Partial
from sqlstream.operators.base import IntervalTimer, Operator
from sqlstream.operators.changes import changelog_batch, diff_results
from sqlstream.operators.keys import encode_keys
from sqlstream.operators.python_aggregates import split_failed_groups
from sqlstream.operators.state_size import NO_STATE, StateSize
from sqlstream.operators.state_tables import partials_from_tables, partials_to_tables

__all__ = ["GroupAggregateOperator"]


class GroupAggregateOperator(Operator):
    name = "group_aggregate"
    state_hint = "aggregate over a window (TUMBLE, HOP, SESSION) instead of all time, or group by fewer keys"

    def __init__(self, keys: list[str], calls: list[AggCall], schema: pa.Schema, emit_every_us: int | None):
        super().__init__()
        self.keys = list(keys)
        self.calls = list(calls)
        self.schema = schema
        self.agg = Aggregator(self.keys, self.calls)
        self.sequence = ArrivalSequence()
        self.emit_every_us = emit_every_us
        self.state: Partial | None = None
        self.pending: list[Partial] = []
        self.early = IntervalTimer(emit_every_us)

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        args = [c.arg for c in self.calls if c.arg is not None]
        table = pa.Table.from_batches([batch]).select(list(dict.fromkeys(self.keys + args)))
        if self.agg.needs_sequence:
            table = self.sequence.stamp(table)
        part = self.agg.partial(table)
        if self.emit_every_us is None:
            self._apply([part])
        else:
            self.pending.append(part)

    def tick(self, now_us: int) -> None:
        if self.early.due(now_us):
            self._flush()
        super().tick(now_us)

    def on_end(self) -> None:
        self._flush()
        self.emit_end()

    def _flush(self) -> None:
        if self.pending:
            parts, self.pending = self.pending, []
            self._apply(parts)

    def _select(self, part: Partial, key_set: pa.Array, keep: bool) -> Partial:
        def mask(table: pa.Table):
            inside = pc.is_in(encode_keys(table, self.keys), value_set=key_set, skip_nulls=False)
            return inside if keep else pc.invert(inside)

        return Partial(part.main.filter(mask(part.main)), tuple(s.filter(mask(s)) for s in part.sets))

    def _apply(self, parts: list[Partial]) -> None:
        new = self.agg.merge(parts)
        if new.num_rows == 0:
            return
        if self.state is None or self.state.num_rows == 0:
            self.state = new
            self._emit([(self._final(new), "+I")])
            return
        touched = encode_keys(new.main, self.keys)
        old = self._select(self.state, touched, keep=True)
        merged = self.agg.merge([old, new], regroup=True)
        untouched = self._select(self.state, touched, keep=False)
        self.state = Partial(
            pa.concat_tables([untouched.main, merged.main]),
            tuple(pa.concat_tables([u, m]) for u, m in zip(untouched.sets, merged.sets)),
        )
        new_final = self._final(merged)
        if old.num_rows == 0:
            self._emit([(new_final, "+I")])
            return
        old_final = split_failed_groups(self.agg.finalize(old), self.calls, self.keys)[0]  # lettered before
        changes = diff_results(old_final, new_final, self.keys, [c.output for c in self.calls])
        # one batch per change set: every -U precedes the +U of its group; a group a Python
        # aggregate now fails on is retracted (-D)
        self._emit([(changes.gone, "-D"), (changes.before, "-U"), (changes.after, "+U"), (changes.inserted, "+I")])

    def _final(self, part: Partial) -> pa.Table:
        """Finalized rows of ``part``; the groups a Python aggregate failed on go to the
        dead letters."""
        result, letters = split_failed_groups(self.agg.finalize(part), self.calls, self.keys)
        if letters and self.dead_letter is not None:
            self.dead_letter(letters)
        return result

    def _emit(self, parts: list[tuple[pa.Table, str]]) -> None:
        batch = changelog_batch(self.schema, parts)
        if batch is not None:
            self.emit(batch)

    def state_values(self) -> dict:
        """The arrival counter (first/last_value) and the EMIT EVERY timer."""
        return {"sequence": self.sequence.next, "early_last_us": self.early.last_us}

    def state_tables(self) -> dict[str, pa.Table]:
        """The partial of every group (``groups_0_*``) and the partials waiting for the
        next EMIT EVERY tick (``pending_{i}_*``)."""
        held = [self.state] if self.state is not None else []
        return {**partials_to_tables("groups", held), **partials_to_tables("pending", self.pending)}

    def load_state(self, values: dict, tables: dict[str, pa.Table]) -> None:
        self.sequence.next = values["sequence"]
        self.early.last_us = values["early_last_us"]
        self.state = next(iter(partials_from_tables("groups", tables)), None)
        self.pending = partials_from_tables("pending", tables)

    def retention_start(self) -> int | None:
        """Changes buffered for the next EMIT EVERY tick are not written yet: hold all acks."""
        return MIN_WATERMARK if self.pending else None

    def state_size(self) -> StateSize:
        """One partial row per group, plus partials waiting for the next EMIT EVERY tick."""
        size = self.state.state_size() if self.state is not None else NO_STATE
        for part in self.pending:
            size = size + part.state_size()
        return size
