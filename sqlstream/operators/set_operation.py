"""Row multiplicities of INTERSECT ALL / EXCEPT ALL, and a changelog's net changes.

The planner turns ``a INTERSECT ALL b`` into an aggregation that counts each distinct
row on both sides and computes how many copies the result holds (``least(l, r)``, or
``greatest(l - r, 0)`` for EXCEPT ALL). :class:`RepeatRowsOperator` turns such a row
into that many copies — for a changelog, a retraction of a row with ``n`` copies
retracts ``n`` copies — vectorized with ``numpy.repeat`` and one ``take`` per batch.

>>> import pyarrow as pa
>>> op = RepeatRowsOperator("n")
>>> out = []
>>> op.emit = out.append
>>> op.on_batch(pa.record_batch({"k": ["a", "b", "c"], "n": [2, 0, 1]}), 0)
>>> out[0].to_pydict()
{'k': ['a', 'a', 'c']}

The aggregation behind a set operation updates its counts with every input row, so
its changelog says ``-U row`` / ``+U row`` for rows that did not leave the result.
:class:`NetChangesOperator` nets the changes of each batch per row: what remains is
``-D`` for copies that left and ``+I`` for copies that entered.

>>> op = NetChangesOperator()
>>> out = []
>>> op.emit = out.append
>>> op.on_batch(pa.record_batch({"__op": ["-U", "+U", "-U", "+U", "+I"], "k": ["a", "a", "b", "c", "c"]}), 0)
>>> out[0].to_pydict()
{'__op': ['-D', '+I', '+I'], 'k': ['b', 'c', 'c']}
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.hidden import OP_COLUMN
from sqlstream.operators.base import Operator
from sqlstream.operators.changes import changelog_batch

__all__ = ["RepeatRowsOperator", "NetChangesOperator"]

_SIGN = "__sign"


class RepeatRowsOperator(Operator):
    """Each row repeated as many times as its ``count_column`` says (NULL or below 1:
    dropped); the count column is not passed on. Stateless."""

    name = "repeat_rows"

    def __init__(self, count_column: str):
        super().__init__()
        self.count_column = count_column

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        counts = batch.column(self.count_column).fill_null(0).to_numpy(zero_copy_only=False)
        indices = np.repeat(np.arange(batch.num_rows, dtype=np.int64), np.maximum(counts, 0))
        rest = batch.drop_columns([self.count_column])
        if indices.size:
            self.emit(rest.take(pa.array(indices)))


class NetChangesOperator(Operator):
    """Per batch, the net change of each distinct row of a changelog: ``-D`` copies for
    a negative net, ``+I`` copies for a positive one (deletions first), nothing when
    the changes cancel. The folded result is the same; the churn is gone. Stateless."""

    name = "net_changes"

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        ops = batch.column(OP_COLUMN)
        sign = pc.if_else(pc.or_(pc.equal(ops, "-U"), pc.equal(ops, "-D")), pa.scalar(-1, pa.int64()), pa.scalar(1, pa.int64()))
        rows = pa.Table.from_batches([batch.drop_columns([OP_COLUMN])])
        columns = rows.column_names
        net = rows.append_column(_SIGN, sign).group_by(columns, use_threads=False).aggregate([(_SIGN, "sum")])
        counts = net.column(f"{_SIGN}_sum").to_numpy()
        net = net.select(columns)
        removed, added = _repeated(net, np.maximum(-counts, 0)), _repeated(net, np.maximum(counts, 0))
        out = changelog_batch(batch.schema, [(removed, "-D"), (added, "+I")])
        if out is not None:
            self.emit(out)


def _repeated(table: pa.Table, copies: np.ndarray) -> pa.Table:
    return table.take(pa.array(np.repeat(np.arange(table.num_rows, dtype=np.int64), copies)))
