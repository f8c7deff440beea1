"""Arrow types ↔ PostgreSQL types, and rows as text for ``COPY … (FORMAT csv)``.

The mapping (also in docs/connectors/postgres.md):

=========================  ===============================  ==========================================
SQL type (Arrow)           created as                       an existing column may also be
=========================  ===============================  ==========================================
BOOLEAN                    boolean
TINYINT/SMALLINT           smallint                         integer, bigint, numeric
INT                        integer                          bigint, numeric
BIGINT                     bigint                           numeric
unsigned integers          the next wider signed / numeric  numeric
REAL                       real                             double precision, numeric
DOUBLE                     double precision                 numeric
DECIMAL(p,s)               numeric(p,s)                     numeric of any precision
VARCHAR                    text                             varchar, char, json, jsonb
BYTEA                      bytea
DATE                       date                             timestamp, timestamptz
TIME                       time                             time with time zone
TIMESTAMP                  timestamp                        timestamptz
TIMESTAMPTZ                timestamptz
INTERVAL                   interval
arrays, STRUCT, MAP        jsonb (the value as JSON)        json
=========================  ===============================  ==========================================
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from sqlstream.connectors.encode import encode_json_values, is_nested

__all__ = ["postgres_type", "accepted_types", "csv_rows", "quote_ident", "arrow_type_of", "bytea_hex", "interval_text"]


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def postgres_type(t: pa.DataType) -> str:
    """The column type a created table gets for Arrow type ``t``."""
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        width = t.bit_width if pa.types.is_signed_integer(t) else t.bit_width * 2
        return {8: "smallint", 16: "smallint", 32: "integer", 64: "bigint"}.get(width, "numeric(20,0)")
    if pa.types.is_float32(t) or pa.types.is_float16(t):
        return "real"
    if pa.types.is_float64(t):
        return "double precision"
    if pa.types.is_decimal(t):
        return f"numeric({t.precision},{t.scale})"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "bytea"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_time(t):
        return "time"
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    if pa.types.is_interval(t) or pa.types.is_duration(t):
        return "interval"
    if is_nested(t):
        return "jsonb"
    if pa.types.is_dictionary(t):
        return postgres_type(t.value_type)
    raise TypeError(f"no PostgreSQL type for {t}")


#: created type → the PostgreSQL type names (pg_type.typname) an existing column may have
_ACCEPTED = {
    "boolean": {"bool"},
    "smallint": {"int2", "int4", "int8", "numeric"},
    "integer": {"int4", "int8", "numeric"},
    "bigint": {"int8", "numeric"},
    "real": {"float4", "float8", "numeric"},
    "double precision": {"float8", "numeric"},
    "text": {"text", "varchar", "bpchar", "json", "jsonb", "name"},
    "bytea": {"bytea"},
    "date": {"date", "timestamp", "timestamptz"},
    "time": {"time", "timetz"},
    "timestamp": {"timestamp", "timestamptz"},
    "timestamptz": {"timestamptz"},
    "interval": {"interval"},
    "jsonb": {"jsonb", "json"},
}


def accepted_types(t: pa.DataType) -> set[str]:
    """PostgreSQL type names an existing column may have to take values of Arrow type ``t``."""
    created = postgres_type(t)
    return {"numeric"} if created.startswith("numeric") else _ACCEPTED[created]


#: PostgreSQL type name (typname) → Arrow type, for reading a table (lookup TABLEs)
_ARROW_OF = {
    "bool": pa.bool_(), "int2": pa.int16(), "int4": pa.int32(), "int8": pa.int64(),
    "float4": pa.float32(), "float8": pa.float64(), "text": pa.string(), "varchar": pa.string(),
    "bpchar": pa.string(), "bytea": pa.binary(), "date": pa.date32(), "time": pa.time64("us"),
    "timestamp": pa.timestamp("us"), "timestamptz": pa.timestamp("us", tz="UTC"),
}


def arrow_type_of(typname: str) -> pa.DataType | None:
    return _ARROW_OF.get(typname)


def _text_column(values: pa.Array) -> pa.Array:
    """A column as COPY-able values: nested → JSON text, binary → bytea hex, intervals → text."""
    t = values.type
    if pa.types.is_dictionary(t):
        return _text_column(pc.cast(values, t.value_type))
    if is_nested(t):
        objects = encode_json_values(pa.RecordBatch.from_arrays([values], names=["v"]))
        inner = pc.replace_substring_regex(objects, pattern=r'^\{"v":(.*)\}$', replacement=r"\1")
        return pc.if_else(pc.is_null(values), pa.scalar(None, pa.string()), inner)
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return bytea_hex(values)
    if pa.types.is_duration(t):
        micros = pc.cast(pc.cast(values, pa.duration("us")), pa.int64())
        return pc.binary_join_element_wise(pc.cast(micros, pa.string()), " microseconds", "")
    if pa.types.is_interval(t):
        return interval_text(values)
    if pa.types.is_floating(t):  # PostgreSQL spells them Infinity/-Infinity/NaN
        text = pc.cast(values, pa.string())
        return pc.replace_substring_regex(text, pattern="^(-?)inf$", replacement=r"\1Infinity")
    return values


_HEX_PAIRS = np.frombuffer(b"".join(b"%02x" % i for i in range(256)), np.uint16)  # byte → its two digits
_BYTEA_PREFIX = pa.scalar("\\x", pa.large_string())
_EMPTY = pa.scalar("", pa.large_string())


def bytea_hex(values: pa.Array) -> pa.Array:
    """Binary values as PostgreSQL's bytea hex text (``\\x00ff``), with numpy over the
    array's data buffer (no Python per value); NULL stays NULL."""
    if not pa.types.is_large_binary(values.type):
        values = values.cast(pa.large_binary())  # 64-bit offsets: the text is twice the bytes
    if values.offset:
        values = pa.concat_arrays([values])  # offsets from 0
    n = len(values)
    validity, offsets_buffer, data_buffer = values.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int64, n + 1)
    first, last = int(offsets[0]), int(offsets[-1])
    data = np.frombuffer(data_buffer, np.uint8, last)[first:] if data_buffer is not None else np.empty(0, np.uint8)
    hexed = _HEX_PAIRS[data].view(np.uint8)  # two digits a byte: the values' offsets doubled
    digits = pa.LargeStringArray.from_buffers(n, pa.py_buffer(2 * (offsets - first)), pa.py_buffer(hexed), validity,
                                              values.null_count)
    return pc.binary_join_element_wise(_BYTEA_PREFIX, digits, _EMPTY)


_MONTH_DAY_NANO = np.dtype([("months", "<i4"), ("days", "<i4"), ("nanos", "<i8")])


def interval_text(values: pa.Array) -> pa.Array:
    """month_day_nano intervals as PostgreSQL interval input (``1 mons 2 days 3 microseconds``),
    from the array's buffer with numpy and Arrow string kernels; NULL stays NULL."""
    if values.offset:
        values = pa.concat_arrays([values])
    parts = np.frombuffer(values.buffers()[1], _MONTH_DAY_NANO, len(values))
    mask = values.is_null().to_numpy(zero_copy_only=False) if values.null_count else None
    micros = np.floor_divide(parts["nanos"], 1000)

    def text(numbers: np.ndarray) -> pa.Array:
        return pc.cast(pa.array(numbers, mask=mask), pa.string())

    return pc.binary_join_element_wise(text(parts["months"]), " mons ", text(parts["days"]), " days ",
                                       text(micros), " microseconds", "")


_NEEDS_TEXT = (pa.types.is_dictionary, is_nested, pa.types.is_binary, pa.types.is_large_binary,
               pa.types.is_fixed_size_binary, pa.types.is_duration, pa.types.is_interval, pa.types.is_floating)


def csv_rows(batch: pa.RecordBatch | pa.Table) -> bytes:
    """``batch`` as CSV without a header, as ``COPY … (FORMAT csv)`` reads it: strings
    quoted, NULL an empty unquoted field."""
    columns = []
    for column in batch.columns:
        if any(test(column.type) for test in _NEEDS_TEXT):
            column = _text_column(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
        columns.append(column)
    names = [f"c{i}" for i in range(len(columns))]
    table = pa.Table.from_arrays(columns, names=names)
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    return sink.getvalue().to_pybytes()


def row_signs(ops: pa.Array) -> np.ndarray:
    """+1 for rows a changelog adds (+I, +U), -1 for rows it takes back (-U, -D)."""
    adds = pc.starts_with(ops, "+").to_numpy(zero_copy_only=False)
    return np.where(adds, 1, -1).astype(np.int64)
