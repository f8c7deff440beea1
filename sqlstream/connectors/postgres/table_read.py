"""Reading a whole PostgreSQL table into Arrow (lookup TABLEs), vectorized.

The server writes each row as one CSV line (a ``SELECT`` of one text column) and
``pyarrow.csv`` parses the lines with the declared column types: one Python string per
row instead of a Python object per value and a conversion per column. Each column is
spelled the way the CSV reader parses it exactly: timestamps and times as integer
microseconds (``extract(epoch …)``), dates as days since 1970-01-01, text quoted
(``""`` is an empty string, an empty unquoted field NULL), ``json``/``jsonb`` as text.
A constant last field keeps a line of NULLs from being an empty line.

Why not ``COPY … TO STDOUT``: PostgreSQL sends one CopyData message per row, and
reading 300,000 of them through psycopg took longer than fetching the rows
(benchmarks/postgres_lookup.py has the numbers). Columns CSV cannot carry exactly —
BYTEA (hex text), INTERVAL, nested types read from ``jsonb``, ``timetz`` — make the
read fall back to fetching rows (:func:`read_rows`), which converts per value.
"""

from __future__ import annotations

import re

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv

from sqlstream.connectors.postgres.table import TableName
from sqlstream.connectors.postgres.types import quote_ident
from sqlstream.errors import ConnectorError

__all__ = ["read_table", "csv_select"]

_EPOCH_US = "((extract(epoch from {c}) * 1000000)::bigint)::text"
_NUMBERS = {"int2", "int4", "int8", "float4", "float8", "numeric"}
_TEXT = {"text", "varchar", "name", "json", "jsonb"}  # (bpchar: its padding goes in a cast to text)


def csv_select(schema: pa.Schema, columns: dict[str, tuple[str, str]]) -> list[tuple[str, pa.DataType]] | None:
    """Per declared column: its CSV field as a SQL text expression (NULL for NULL) and
    the type ``pyarrow.csv`` reads it as; None when a column has no exact CSV spelling
    (read rows instead)."""
    out = []
    for f in schema:
        c = quote_ident(f.name)
        typname = columns[f.name][0]
        t = f.type
        if pa.types.is_timestamp(t) and typname in ("timestamp", "timestamptz", "date"):
            out.append((_EPOCH_US.format(c=f"{c}::timestamp" if typname == "date" else c), pa.int64()))
        elif pa.types.is_date(t) and typname in ("date", "timestamp", "timestamptz"):
            out.append((f"({c}::date - DATE '1970-01-01')::text", pa.int32()))
        elif pa.types.is_time(t) and typname == "time":
            out.append((_EPOCH_US.format(c=c), pa.int64()))
        elif (pa.types.is_string(t) or pa.types.is_large_string(t)) and typname in _TEXT:
            out.append((f"""'"' || replace({c}::text, '"', '""') || '"'""", t))
        elif pa.types.is_boolean(t) and typname == "bool":
            out.append((f"CASE WHEN {c} THEN 't' WHEN NOT {c} THEN 'f' END", t))
        elif typname in _NUMBERS and (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)):
            out.append((f"{c}::text", t))
        else:
            return None
    return out


def read_table(conn: psycopg.Connection, name: TableName, schema: pa.Schema, columns: dict[str, tuple[str, str]],
               owner: str) -> pa.RecordBatch:
    """All rows of table ``name`` as one batch of ``schema`` (columns checked by the caller)."""
    plan = csv_select(schema, columns)
    if plan is None:
        return read_rows(conn, name, schema, columns, owner)
    line = " || ',' || ".join(f"coalesce({expression}, '')" for expression, _ in plan) + " || ',1'"
    lines = conn.execute(f"SELECT {line} FROM {name.sql}").fetchall()
    if not lines:
        return pa.RecordBatch.from_pylist([], schema=schema)
    data = "\n".join([row[0] for row in lines]).encode()
    del lines
    names = [f"c{i}" for i in range(len(plan))] + ["end"]
    try:
        table = pacsv.read_csv(
            pa.py_buffer(data),
            read_options=pacsv.ReadOptions(column_names=names, block_size=16 << 20),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=dict(zip(names, [t for _, t in plan] + [pa.int8()], strict=True)),
                null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False,
                true_values=["t"], false_values=["f"],
            ),
        )
    except pa.ArrowInvalid as error:
        found = re.search(r"CSV column #(\d+)", str(error))
        column = schema.names[int(found.group(1))] if found else "?"
        raise ConnectorError(
            f"{owner}: column '{column}' of {name} ({columns.get(column, ('', '?'))[1]}) does not fit its declared "
            f"type: {error}"
        ) from error
    arrays = []
    for column, f in zip(table.columns[:-1], schema, strict=True):
        column = column.combine_chunks()
        if pa.types.is_timestamp(f.type):
            column = column.cast(pa.timestamp("us", f.type.tz)).cast(f.type)
        elif pa.types.is_date(f.type):
            column = column.cast(pa.date32()).cast(f.type)
        elif pa.types.is_time(f.type):
            column = column.cast(pa.time64("us")).cast(f.type)
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def read_rows(conn: psycopg.Connection, name: TableName, schema: pa.Schema, columns: dict[str, tuple[str, str]],
              owner: str) -> pa.RecordBatch:
    """The per-value path, for the types CSV cannot carry exactly."""
    select = ", ".join(quote_ident(n) for n in schema.names)
    rows = conn.execute(f"SELECT {select} FROM {name.sql}").fetchall()
    arrays = []
    for i, field in enumerate(schema):
        values = [row[i] for row in rows]
        try:
            arrays.append(pa.array(values, field.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as error:
            raise ConnectorError(
                f"{owner}: column '{field.name}' of {name} ({columns[field.name][1]}) does not fit "
                f"its declared type: {error}"
            ) from error
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
