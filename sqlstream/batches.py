"""Small conversions between Arrow tables and record batches used across layers.

``empty_batch`` and ``string_array`` make arrays without pyarrow's conversion of Python
values: its first such conversion (``pa.array``, ``pa.scalar``, even of an empty list)
imports pandas when it is installed, ~0.3 s, and ``sqlstream check`` needs no other
(tests/integration/test_startup.py checks that it does not import pandas).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["to_batch", "empty_batch", "string_array", "event_time_us", "null_rows"]


def empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    """A RecordBatch of no rows with ``schema``."""
    return pa.RecordBatch.from_arrays([pa.nulls(0, f.type) for f in schema], schema=schema)


def string_array(texts: list[str]) -> pa.StringArray:
    """``pa.array(texts)`` for a list of str, built from its buffers."""
    data = [text.encode() for text in texts]
    offsets = np.cumsum([0, *map(len, data)], dtype=np.int32)
    return pa.StringArray.from_buffers(len(data), pa.py_buffer(offsets), pa.py_buffer(b"".join(data)))


def to_batch(table: pa.Table | pa.RecordBatch) -> pa.RecordBatch:
    """One RecordBatch holding all rows of ``table`` (copies only if it is chunked)."""
    if isinstance(table, pa.RecordBatch):
        return table
    if table.num_rows == 0:
        return empty_batch(table.schema)
    batches = table.combine_chunks().to_batches()
    return batches[0]


def event_time_us(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Timestamps as int64 µs since the epoch (the column must have no NULLs)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.type.unit != "us" or column.type.tz is not None:
        column = pc.cast(column, pa.timestamp("us"))
    return column.view(pa.int64()).to_numpy(zero_copy_only=False)


def null_rows(arrays: list[pa.Array]) -> pa.BooleanArray | None:
    """True where any of ``arrays`` is NULL; None when none of them has a NULL."""
    mask = None
    for a in arrays:
        if a.null_count:
            rows = pc.is_null(a)
            mask = rows if mask is None else pc.or_(mask, rows)
    return mask
