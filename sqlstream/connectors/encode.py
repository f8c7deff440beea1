"""Vectorized encoding of Arrow batches to JSON lines (one DuckDB call per batch)."""

from __future__ import annotations

import threading

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["encode_json_lines", "is_nested"]

_local = threading.local()


def _connection() -> duckdb.DuckDBPyConnection:
    con = getattr(_local, "con", None)
    if con is None:
        con = duckdb.connect()
        con.execute("SET threads = 1")
        _local.con = con
    return con


def is_nested(t: pa.DataType) -> bool:
    return pa.types.is_nested(t) or pa.types.is_map(t)


def encode_json_lines(batch: pa.RecordBatch | pa.Table) -> bytes:
    """The rows of ``batch`` as JSON objects, one per line (with a trailing newline)."""
    if batch.num_rows == 0:
        return b""
    con = _connection()
    rows = con.from_arrow(batch)  # noqa: F841 - referenced by name in the SQL below
    # the row alias must not be a column name (a column ``r`` would shadow ``r``)
    table = con.sql("SELECT to_json(__sqlstream_row)::VARCHAR AS j FROM rows __sqlstream_row").to_arrow_table()
    column = table.column(0).combine_chunks()
    lines = pc.binary_join_element_wise(column, pa.scalar("\n"), "")
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
    return lines.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]
