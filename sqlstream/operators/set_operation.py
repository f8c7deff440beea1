"""Row multiplicities of INTERSECT ALL / EXCEPT ALL.

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
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from sqlstream.operators.base import Operator

__all__ = ["RepeatRowsOperator"]


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
