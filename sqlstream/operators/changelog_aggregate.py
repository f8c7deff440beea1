"""Unwindowed GROUP BY over an updating input (a changelog, e.g. a regular join or
another unwindowed aggregate): the result is itself a changelog.

A retraction (``-U``/``-D``) cannot be subtracted from a ``max`` or a ``count(DISTINCT)``,
so the state is the current input itself, as a multiset: one row per distinct
(group key, arguments) with its multiplicity. Each micro-batch updates the
multiplicities of the groups it touches, recomputes those groups' aggregates from
their rows (pyarrow ``group_by``) and emits ``-U``/``+U`` for changed groups, ``+I`` for
new ones and ``-D`` for groups whose rows were all retracted. State is proportional
to the distinct input rows, the cost of a batch to the rows of the groups it touches.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.hidden import OP_COLUMN
from sqlstream.operators.aggregates import AggCall, Aggregator
from sqlstream.operators.base import Operator
from sqlstream.operators.changes import diff_results, op_column
from sqlstream.operators.keys import encode_keys
from sqlstream.operators.state_size import StateSize, table_bytes

__all__ = ["ChangelogAggregateOperator", "RETRACTABLE"]

#: aggregate functions that can be recomputed from the current rows of a group
RETRACTABLE = ("count_star", "count", "sum", "avg", "min", "max", "count_distinct", "approx_distinct",
               "stddev_samp", "stddev_pop", "var_samp", "var_pop")

_WEIGHT = "__weight"


_ONE = "__one"


class ChangelogAggregateOperator(Operator):
    name = "changelog_aggregate"
    state_hint = ("it keeps every distinct input row of an updating input: aggregate over a window, "
                  "or bound the input (e.g. SET join_state_ttl for a join feeding it)")

    def __init__(self, keys: list[str], calls: list[AggCall], schema: pa.Schema):
        super().__init__()
        self.keys = list(keys)
        self.calls = list(calls)
        self.schema = schema
        self.agg = Aggregator(self.keys, self.calls)
        self.columns = list(dict.fromkeys(self.keys + [c.arg for c in self.calls if c.arg is not None]))
        # count(*) with no keys reads no column: a constant one keeps the rows countable
        # (a table of zero columns cannot carry a row count through select/take)
        self._constant = not self.columns
        if self._constant:
            self.columns = [_ONE]
        self.rows: pa.Table | None = None  # columns + __weight: the current input as a multiset
        self.results: pa.Table | None = None  # keys + outputs: the emitted row of every group

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        table = pa.Table.from_batches([batch])
        if self._constant and _ONE not in table.column_names:
            table = table.append_column(_ONE, pa.repeat(pa.scalar(1, pa.int8()), batch.num_rows))
        table = table.select(self.columns)
        if OP_COLUMN in batch.schema.names:
            ops = batch.column(OP_COLUMN).to_numpy(zero_copy_only=False)
            weights = np.where((ops == "-U") | (ops == "-D"), -1, 1)
        else:
            weights = np.ones(batch.num_rows, dtype=np.int64)
        table = table.append_column(_WEIGHT, pa.array(weights.astype(np.int64)))
        touched = pc.unique(self._group_key(table))
        old_rows, kept_rows = self._split(self.rows, touched)
        current = pa.concat_tables([t for t in (old_rows, table) if t is not None])
        current = current.group_by(self.columns, use_threads=False).aggregate([(_WEIGHT, "sum")])
        current = current.rename_columns(self.columns + [_WEIGHT])
        current = current.filter(pc.greater(current.column(_WEIGHT), 0))
        self.rows = pa.concat_tables([t for t in (kept_rows, current) if t is not None])
        new = self._aggregate(current)
        old, kept_results = self._split(self.results, touched)
        self.results = pa.concat_tables([t for t in (kept_results, new) if t is not None])
        self._emit_changes(old, new)

    def _group_key(self, table: pa.Table) -> pa.Array:
        return encode_keys(table, self.keys)

    def _split(self, table: pa.Table | None, touched: pa.Array):
        """(rows of touched groups, the others) of ``table``."""
        if table is None or table.num_rows == 0:
            return None, None
        inside = pc.is_in(self._group_key(table), value_set=touched, skip_nulls=False)
        return table.filter(inside), table.filter(pc.invert(inside))

    def _aggregate(self, rows: pa.Table) -> pa.Table:
        """Aggregates per group of a multiset (rows repeated by their weight)."""
        weights = rows.column(_WEIGHT).to_numpy()
        expanded = rows.select(self.columns)
        if rows.num_rows and (weights != 1).any():
            expanded = expanded.take(pa.array(np.repeat(np.arange(rows.num_rows), weights)))
        return self.agg.finalize(self.agg.partial(expanded))

    def _emit_changes(self, old: pa.Table | None, new: pa.Table) -> None:
        if old is None or old.num_rows == 0:
            self._emit(new, "+I")
            return
        changes = diff_results(old, new, self.keys, [c.output for c in self.calls])
        self._emit(changes.gone, "-D")
        self._emit(changes.before, "-U")
        self._emit(changes.after, "+U")
        self._emit(changes.inserted, "+I")

    def _emit(self, table: pa.Table, op: str) -> None:
        if table.num_rows == 0:
            return
        columns = []
        for field in self.schema:
            if field.name == OP_COLUMN:
                columns.append(op_column(op, table.num_rows))
            else:
                column = table.column(field.name).combine_chunks()
                columns.append(column.cast(field.type) if column.type != field.type else column)
        self.emit(pa.RecordBatch.from_arrays(columns, schema=self.schema))

    def state_tables(self) -> dict[str, pa.Table]:
        """The input multiset (``rows``: columns + ``__weight``) and the emitted row of
        every group (``results``)."""
        tables = {"rows": self.rows, "results": self.results}
        return {name: table for name, table in tables.items() if table is not None}

    def load_state(self, values: dict, tables: dict[str, pa.Table]) -> None:
        self.rows = tables.get("rows")
        self.results = tables.get("results")

    def state_size(self) -> StateSize:
        """The input multiset plus the emitted row of every group."""
        rows = (self.rows.num_rows if self.rows is not None else 0) + (self.results.num_rows if self.results is not None else 0)
        return StateSize(rows, table_bytes(self.rows, self.results))
