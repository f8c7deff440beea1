"""Data held in Python as a source (:meth:`Session.source_from`) and a Python function
as a sink (:meth:`Session.sink_to`), both through ``connector = 'memory'``.

A source is declared with a real ``CREATE SOURCE`` (so SHOW, DESCRIBE and ``\\d`` see
it): its columns come from the data's Arrow schema, its watermark from ``watermark``
(the event-time column) and ``delay``.
"""

from __future__ import annotations

import inspect
import itertools
from typing import Any, Iterable, Iterator

import pyarrow as pa

from sqlstream.connectors.memory import MemoryStream
from sqlstream.durations import parse_duration_us
from sqlstream.errors import SqlAnalysisError
from sqlstream.sql.types import sql_type_name

__all__ = ["memory_stream_of", "create_source_sql", "quoted"]

_SAMPLE_ROWS = 1024


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def memory_stream_of(data: Any, schema: pa.Schema | None = None, chunk_rows: int = _SAMPLE_ROWS) -> MemoryStream:
    """A replayable stream of ``data``: a pyarrow Table, RecordBatch or list of them, a
    pandas or polars DataFrame, a list of dicts, or an iterator of dicts (a generator, or
    a function returning one: then each query gets a fresh iterator; an iterator given
    itself is read once, across every query)."""
    if callable(data) and not isinstance(data, (pa.Table, pa.RecordBatch)):
        if schema is None:
            schema = _rows_schema(list(itertools.islice(data(), _SAMPLE_ROWS)))
        return MemoryStream(schema, feed=data, chunk_rows=chunk_rows)
    if inspect.isgenerator(data) or isinstance(data, Iterator):
        first = list(itertools.islice(data, _SAMPLE_ROWS))
        rows = itertools.chain(first, data)
        schema = schema or _rows_schema(first)
        return MemoryStream(schema, feed=lambda: rows, chunk_rows=chunk_rows)
    table = _as_table(data)
    if schema is not None:
        table = table.select(schema.names).cast(schema)
    stream = MemoryStream(table.schema, replay=True)
    if table.num_rows:
        stream.push(table, batch_size=chunk_rows)
    return stream.finish()


def _as_table(data: Any) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    module = type(data).__module__.split(".")[0]
    if module == "pandas":
        return pa.Table.from_pandas(data, preserve_index=False)
    if module == "polars":
        return data.to_arrow()
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes, dict)):
        items = list(data)
        if items and all(isinstance(i, pa.RecordBatch) for i in items):
            return pa.Table.from_batches(items)
        if all(isinstance(i, dict) for i in items):
            if not items:
                raise SqlAnalysisError("source_from() got no rows to take the columns from",
                                       hint="pass a pyarrow Table with a schema, or schema=")
            return pa.Table.from_pylist(items)
    raise SqlAnalysisError(
        f"source_from() cannot read {type(data).__name__}",
        hint="pass a list or iterator of dicts, a pyarrow Table/RecordBatch (or a list of them), or a DataFrame",
    )


def _rows_schema(rows: list[dict]) -> pa.Schema:
    if not rows:
        raise SqlAnalysisError("source_from() got an iterator that gave no rows to take the columns from",
                               hint="pass schema= (a pyarrow.Schema)")
    return pa.Table.from_pylist(rows).schema


def create_source_sql(name: str, schema: pa.Schema, watermark: str | None, delay: str | float | int) -> str:
    """``CREATE SOURCE name (...) WITH (connector = 'memory')`` for ``schema``."""
    columns = []
    for field in schema:
        kind = field.type
        if pa.types.is_timestamp(kind) and kind.unit == "ns":  # sqlstream keeps µs
            kind = pa.timestamp("us", kind.tz)
        columns.append(f"{quoted(field.name)} {sql_type_name(kind)}")
    if watermark is not None:
        if watermark not in schema.names:
            raise SqlAnalysisError(f"source_from(): no column '{watermark}' for the watermark",
                                   hint=f"columns: {', '.join(schema.names)}")
        delay_us = parse_duration_us(delay)
        columns.append(f"WATERMARK FOR {quoted(watermark)} AS {quoted(watermark)} - "
                       f"INTERVAL '{delay_us // 1000}' MILLISECOND")
    return f"CREATE SOURCE {quoted(name)} ({', '.join(columns)}) WITH (connector = 'memory')"
