"""Row identity over several columns, vectorized: one comparable key per row.

pyarrow's set lookups (``is_in``, ``index_in``) take one column; composite keys are
encoded into one binary value per row (each part length-prefixed, NULL distinct from
every value), so NULL keys match each other as GROUP BY expects.
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["encode_keys", "concat_tables", "key_changes"]


@functools.cache
def _scalar(value: str | bool) -> pa.Scalar:
    """A typed scalar, made once: pyarrow infers the type of bare Python values at a cost
    per call, and making one at import would import pandas (pyarrow looks for it on the
    first conversion of a Python value) when only planning, as ``sqlstream check`` does."""
    return pa.scalar(value, pa.bool_() if isinstance(value, bool) else pa.string())


def _part(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    t = column.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t):
        column = pc.cast(column, pa.int64())
    if pa.types.is_dictionary(t):
        column = column.dictionary_decode()
    text = column if pa.types.is_string(column.type) else pc.cast(column, pa.string())
    length = pc.cast(pc.utf8_length(text), pa.string())
    tagged = pc.binary_join_element_wise(length, text, _scalar(":"))
    return pc.fill_null(tagged, _scalar("\x00"))


def encode_keys(table: pa.Table | pa.RecordBatch, columns: list[str]) -> pa.Array:
    """One key per row for ``columns``; a single non-string column is used as is."""
    if not columns:
        return pa.array(np.zeros(table.num_rows, dtype=np.int8))
    if len(columns) == 1:
        column = table.column(columns[0])
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        return column
    parts = [_part(table.column(c)) for c in columns]
    return pc.binary_join_element_wise(*parts, _scalar("|"))


def concat_tables(tables: list[pa.Table]) -> pa.Table:
    tables = [t for t in tables if t is not None]
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="none")


def key_changes(keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """For keys in sorted order: True where a row's key differs from the previous row's
    (always True for the first row). NULL equals NULL, as in GROUP BY."""
    n = len(keys)
    out = np.ones(n, dtype=bool)
    if n > 1:
        a, b = keys.slice(1), keys.slice(0, n - 1)
        differ = pc.fill_null(pc.not_equal(a, b), _scalar(False))
        if keys.null_count:
            differ = pc.or_(differ, pc.xor(pc.is_null(a), pc.is_null(b)))
        out[1:] = differ.to_numpy(zero_copy_only=False)
    return out
