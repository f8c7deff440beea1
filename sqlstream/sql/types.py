"""SQL types ↔ Arrow types, in one place.

Flink semantics for floating point: ``FLOAT``/``REAL``/``FLOAT4`` are 32-bit,
``DOUBLE``/``FLOAT8`` 64-bit. ``FLOAT[n]`` is ``fixed_size_list<float32, n>``,
``T[]`` a variable ``list<T>``; ``FLOAT[3][64][64]`` (a tensor, shape as written: 3 lists
of 64 lists of 64) nested fixed-size lists, outermost 3. ``TIMESTAMP`` is microseconds, ``TIMESTAMP(3)``
milliseconds; ``TIMESTAMPTZ`` is microseconds in UTC.
"""

from __future__ import annotations

import pyarrow as pa
from sqlglot import exp

from sqlstream.errors import SqlAnalysisError, UnsupportedSqlError

__all__ = ["arrow_type", "sql_type_name", "is_timestamp", "TIME_UNIT_BY_PRECISION"]

DType = exp.DataType.Type

_SIMPLE: dict[DType, pa.DataType] = {
    DType.BOOLEAN: pa.bool_(),
    DType.TINYINT: pa.int8(),
    DType.SMALLINT: pa.int16(),
    DType.INT: pa.int32(),
    DType.BIGINT: pa.int64(),
    DType.UTINYINT: pa.uint8(),
    DType.USMALLINT: pa.uint16(),
    DType.UINT: pa.uint32(),
    DType.UBIGINT: pa.uint64(),
    DType.FLOAT: pa.float32(),
    DType.DOUBLE: pa.float64(),
    DType.VARCHAR: pa.string(),
    DType.TEXT: pa.string(),
    DType.CHAR: pa.string(),
    DType.NVARCHAR: pa.string(),
    DType.NCHAR: pa.string(),
    DType.JSON: pa.string(),
    DType.JSONB: pa.string(),
    DType.VARBINARY: pa.binary(),
    DType.BINARY: pa.binary(),
    DType.BLOB: pa.binary(),
    DType.DATE: pa.date32(),
    DType.TIME: pa.time64("us"),
    DType.TIMESTAMPTZ: pa.timestamp("us", tz="UTC"),
    DType.TIMESTAMPLTZ: pa.timestamp("us", tz="UTC"),
    DType.DATETIME: pa.timestamp("us"),
    DType.INTERVAL: pa.month_day_nano_interval(),
}

TIME_UNIT_BY_PRECISION = {0: "s", 3: "ms", 6: "us", 9: "ns"}


def _int_params(node: exp.DataType) -> list[int]:
    out = []
    for param in node.expressions:
        if isinstance(param, exp.DataTypeParam):
            out.append(int(param.this.name))
    return out


def _fixed_dims(node: exp.DataType) -> list[int]:
    """The sizes of ``T[a][b][c]`` as written (sqlglot nests them the other way round:
    ``ARRAY(ARRAY(ARRAY(T, a), b), c)``), while every level has a size."""
    dims = []
    while node.this == DType.ARRAY and node.args.get("values"):
        size = int(node.args["values"][0].name)
        if size <= 0:
            raise SqlAnalysisError(f"array size must be positive, got {size}")
        dims.append(size)
        node = node.expressions[0]
    return dims[::-1]


def _innermost(node: exp.DataType) -> exp.DataType:
    while node.this == DType.ARRAY and node.args.get("values"):
        node = node.expressions[0]
    return node


def arrow_type(node: exp.DataType) -> pa.DataType:
    """The Arrow type of a parsed SQL type; raises UnsupportedSqlError for the rest."""
    kind = node.this
    if kind == DType.ARRAY:
        element = arrow_type(node.expressions[0])
        sizes = node.args.get("values") or []
        if sizes:
            dims = _fixed_dims(node)
            if len(dims) > 1:  # FLOAT[3][64][64]: 3 lists of 64 lists of 64, as in C and Postgres
                element = arrow_type(_innermost(node))
                for size in reversed(dims):
                    element = pa.list_(element, size)
                return element
            size = int(sizes[0].name)
            if size <= 0:
                raise SqlAnalysisError(f"array size must be positive, got {size}")
            return pa.list_(element, size)
        return pa.list_(element)
    if kind == DType.STRUCT:
        fields = []
        for member in node.expressions:
            name = member.name
            fields.append(pa.field(name, arrow_type(member.args["kind"])))
        return pa.struct(fields)
    if kind == DType.MAP:
        key, value = node.expressions
        return pa.map_(arrow_type(key), arrow_type(value))
    if kind == DType.TIMESTAMP:
        params = _int_params(node)
        precision = params[0] if params else 6
        unit = TIME_UNIT_BY_PRECISION.get(precision)
        if unit is None:
            raise SqlAnalysisError(
                f"TIMESTAMP({precision}) is not supported", hint="use TIMESTAMP(0), (3), (6) or (9)"
            )
        return pa.timestamp(unit)
    if kind in (DType.DECIMAL, DType.BIGDECIMAL):
        params = _int_params(node)
        precision = params[0] if params else 38
        scale = params[1] if len(params) > 1 else 0
        return pa.decimal128(precision, scale)
    simple = _SIMPLE.get(kind)
    if simple is None:
        raise UnsupportedSqlError(
            f"type {node.sql()} is not supported",
            hint="supported: BOOLEAN, SMALLINT, INT, BIGINT, REAL/FLOAT, DOUBLE, DECIMAL(p,s), VARCHAR, "
            "BYTEA, DATE, TIME, TIMESTAMP[(3|6)], TIMESTAMPTZ, T[], FLOAT[n], STRUCT<...>, MAP(K, V)",
        )
    return simple


def sql_type_name(t: pa.DataType) -> str:
    """A SQL spelling of an Arrow type, for DESCRIBE, SHOW and error messages."""
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_integer(t):
        names = {8: "TINYINT", 16: "SMALLINT", 32: "INT", 64: "BIGINT"}
        base = names[t.bit_width]
        return base if pa.types.is_signed_integer(t) else f"U{base}"
    if pa.types.is_float32(t):
        return "REAL"
    if pa.types.is_float64(t):
        return "DOUBLE"
    if pa.types.is_float16(t):
        return "HALF"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "VARCHAR"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "BYTEA"
    if pa.types.is_timestamp(t):
        precision = {v: k for k, v in TIME_UNIT_BY_PRECISION.items()}[t.unit]
        base = "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
        return base if precision == 6 else f"{base}({precision})"
    if pa.types.is_date(t):
        return "DATE"
    if pa.types.is_time(t):
        return "TIME"
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision},{t.scale})"
    if pa.types.is_fixed_size_list(t):
        dims = []
        while pa.types.is_fixed_size_list(t):
            dims.append(t.list_size)
            t = t.value_type
        return sql_type_name(t) + "".join(f"[{d}]" for d in dims)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return f"{sql_type_name(t.value_type)}[]"
    if pa.types.is_struct(t):
        inner = ", ".join(f"{f.name} {sql_type_name(f.type)}" for f in t)
        return f"STRUCT<{inner}>"
    if pa.types.is_map(t):
        return f"MAP({sql_type_name(t.key_type)}, {sql_type_name(t.item_type)})"
    if pa.types.is_interval(t) or pa.types.is_duration(t):
        return "INTERVAL"
    if pa.types.is_null(t):
        return "NULL"
    if pa.types.is_dictionary(t):
        return sql_type_name(t.value_type)
    return str(t).upper()


def is_timestamp(t: pa.DataType) -> bool:
    return pa.types.is_timestamp(t)
