"""``CROSS JOIN UNNEST(array)``: one output row per array element, vectorized.

Per micro-batch: ``pc.list_flatten`` gives the elements, ``pc.list_parent_indices``
the row each came from, and one ``take`` repeats the row's other columns (event time,
watermark and ``__op`` included, so windows and changelogs after it work). NULL and
empty arrays give no rows (SQL's ``CROSS JOIN UNNEST``), or one row with a NULL
element for ``LEFT JOIN UNNEST(...) ON TRUE``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.operators.base import Operator

__all__ = ["UnnestOperator", "unnest_batch"]


def unnest_batch(batch: pa.RecordBatch, array: str, schema: pa.Schema, ordinality: bool,
                 keep_empty: bool = False) -> pa.RecordBatch:
    """``batch``'s rows repeated per element of column ``array``; ``schema``: the input's
    columns, then the element (and its 1-based position), then the input's hidden ones
    (named as in ``schema``). ``keep_empty`` (``LEFT JOIN UNNEST ... ON TRUE``): a row
    with a NULL or empty array comes out once, with a NULL element."""
    lists = batch.column(array)
    if pa.types.is_fixed_size_list(lists.type):
        lists = lists.cast(pa.list_(lists.type.value_type))
    elements = pc.list_flatten(lists)
    if not keep_empty:
        parents = pc.list_parent_indices(lists)
        positions = None
        if ordinality:
            lengths = _lengths(lists)
            starts = np.cumsum(lengths) - lengths
            positions = pa.array(np.arange(len(elements), dtype=np.int64) - np.repeat(starts, lengths) + 1)
    else:
        lengths = _lengths(lists)
        counts = np.maximum(lengths, 1)
        parents = pa.array(np.repeat(np.arange(len(lists), dtype=np.int64), counts))
        rank = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        empty = np.repeat(lengths == 0, counts)
        elements = elements.take(pa.array(np.repeat(np.cumsum(lengths) - lengths, counts) + rank, mask=empty))
        positions = pa.array(rank + 1, mask=empty) if ordinality else None
    taken = batch.take(parents)
    extra = [elements] + ([positions] if ordinality else [])
    by_name = {name: taken.column(i) for i, name in enumerate(taken.schema.names)}
    columns, new = [], iter(extra)
    for field in schema:
        columns.append(by_name[field.name] if field.name in by_name else next(new))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _lengths(lists: pa.Array) -> np.ndarray:
    return pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False).astype(np.int64)


class UnnestOperator(Operator):
    name = "unnest"

    def __init__(self, array: str, schema: pa.Schema, ordinality: bool, keep_empty: bool = False):
        super().__init__()
        self.array = array
        self.schema = schema
        self.ordinality = ordinality
        self.keep_empty = keep_empty

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        out = unnest_batch(batch, self.array, self.schema, self.ordinality, self.keep_empty)
        if out.num_rows:
            self.emit(out)
