"""Row identity over several columns, vectorized: one comparable key per row.

pyarrow's set lookups (``is_in``, ``index_in``) take one column; composite keys are
encoded into one binary value per row (each part length-prefixed, NULL distinct from
every value), so NULL keys match each other as GROUP BY expects.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["encode_keys", "concat_tables"]


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
    tagged = pc.binary_join_element_wise(length, text, ":")
    return pc.fill_null(tagged, "\x00")


def encode_keys(table: pa.Table | pa.RecordBatch, columns: list[str]) -> pa.Array:
    """One key per row for ``columns``; a single non-string column is used as is."""
    if not columns:
        return pa.array([0] * table.num_rows, pa.int8())
    if len(columns) == 1:
        column = table.column(columns[0])
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        return column
    parts = [_part(table.column(c)) for c in columns]
    return pc.binary_join_element_wise(*parts, "|")


def concat_tables(tables: list[pa.Table]) -> pa.Table:
    tables = [t for t in tables if t is not None]
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="none")
