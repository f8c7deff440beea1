"""Vectorized encoding of Arrow batches to JSON: one object per row.

Small batches of flat rows (numbers, text, booleans, dates, times, timestamps) are
written with Arrow string kernels, column by column — well under a millisecond, which
matters for latency (stdout, NATS and file sinks). Large batches and rows with nested
values (lists, structs, maps) are encoded by DuckDB in one call per batch (~2 ms fixed
cost, then faster per row). ``BYTEA`` values are written as base64 text (standard
alphabet, padded), which the JSON decoder reads back.

Batches of up to :data:`SMALL_ROWS` rows are written by :func:`json_rows` instead:
one Python string per row from the columns' values, with the kernels' text rules
(:func:`float_text` writes a float as Arrow's cast does; timestamps, dates, times and
decimals still go through their kernels). Each kernel call costs ~5-10 µs whatever
the batch size, and a batch of a few rows needs ~15 of them; the strings cost ~1 µs
a row. ``tests/unit/test_json_rows.py`` compares both paths on random batches.
"""

from __future__ import annotations

import functools
import math
import re
import threading

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.connectors.base64_columns import to_base64

__all__ = ["encode_json_lines", "encode_json_values", "float_text", "is_nested", "json_rows", "text", "SMALL_ROWS"]

_local = threading.local()


@functools.lru_cache(maxsize=1024)
def text(value: str) -> pa.Scalar:
    """A typed string scalar for Arrow kernels (cached). A plain ``str`` makes pyarrow
    infer its type, which tries to import optional modules on every call."""
    return pa.scalar(value, pa.string())


def _connection():
    """This thread's DuckDB connection (duckdb loads on the first nested or large batch)."""
    con = getattr(_local, "con", None)
    if con is None:
        import duckdb

        con = duckdb.connect()
        con.execute("SET threads = 1")
        _local.con = con
    return con


def is_nested(t: pa.DataType) -> bool:
    return pa.types.is_nested(t) or pa.types.is_map(t)


_JSON_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))


def _json_text(values: pa.Array) -> pa.Array | None:
    """A column as JSON value texts (NULL stays NULL), or None if it is not flat."""
    t = values.type
    if pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_decimal(t):
        return pc.cast(values, pa.string())
    if pa.types.is_floating(t):
        wide = values if t == pa.float64() else pc.cast(values, pa.float64())  # same digits as DuckDB for REAL
        out = pc.cast(wide, pa.string())
        numbers = wide.to_numpy(zero_copy_only=False)  # (NULL as NaN: only decides which kernels run)
        if np.any(np.trunc(numbers) == numbers):
            # keep numbers recognizably floating point: 1 -> 1.0 (as DuckDB writes them)
            out = pc.replace_substring_regex(out, pattern="^(-?[0-9]+)$", replacement="\\1.0")
        if not np.isfinite(numbers).all():  # NaN and infinities are not JSON: null
            out = pc.if_else(pc.is_finite(wide), out, pa.scalar(None, pa.string()))
        return out
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        out = pc.cast(values, pa.string())
        data = np.frombuffer(out.buffers()[2], dtype=np.uint8) if out.buffers()[2] is not None else np.zeros(0, np.uint8)
        special = (data < 0x20) | (data == 0x22) | (data == 0x5C)  # control characters, '"', '\\'
        if special.any():  # (a byte scan: most text needs no escaping at all)
            for old, new in _JSON_ESCAPES:
                out = pc.replace_substring(out, pattern=old, replacement=new)
            escaped = np.frombuffer(out.buffers()[2], dtype=np.uint8)
            if (escaped < 0x20).any():
                return None  # other control characters: leave those to the full encoder
        return pc.binary_join_element_wise(text('"'), out, text('"'), text(""))
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t):
        out = pc.cast(values, pa.string())
        if not pa.types.is_date(t):  # 00:00:01.500000 -> 00:00:01.5, 00:00:01.000000 -> 00:00:01
            out = pc.replace_substring_regex(out, pattern="(\\.[0-9]*[1-9])0+(Z?)$", replacement="\\1\\2")
            out = pc.replace_substring_regex(out, pattern="\\.0+(Z?)$", replacement="\\1")
        return pc.binary_join_element_wise(text('"'), out, text('"'), text(""))
    return None


@functools.lru_cache(maxsize=1024)
def _key_piece(name: str, first: bool) -> pa.Scalar:
    """``{"name":`` (first column) or ``,"name":``."""
    return text(("{" if first else ",") + orjson.dumps(name).decode() + ":")


def _flat_json(batch: pa.RecordBatch | pa.Table) -> pa.Array | None:
    pieces: list = []
    for i, field in enumerate(batch.schema):
        column = batch.column(i)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        value = _json_text(column)
        if value is None:
            return None
        pieces.append(_key_piece(field.name, i == 0))
        pieces.append(pc.fill_null(value, text("null")) if value.null_count else value)
    if not pieces:
        return None
    pieces.append(text("}"))
    return pc.binary_join_element_wise(*pieces, text(""))


def _finite(values: pa.Array) -> pa.Array:
    """``values`` with NaN and infinities (at any depth) made NULL: they are not JSON,
    and DuckDB would write them as ``NaN`` / ``Infinity``."""
    t = values.type
    if pa.types.is_floating(t):
        finite = pc.is_finite(values)
        if pc.all(pc.fill_null(finite, True)).as_py():
            return values
        return pc.if_else(finite, values, pa.scalar(None, t))
    if pa.types.is_struct(t):
        fields = [_finite(child) for child in values.flatten()]  # flatten honours a slice's offset
        mask = values.is_null() if values.null_count else None
        return pa.StructArray.from_arrays(fields, fields=list(t), mask=mask)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        if values.offset:
            values = pa.concat_arrays([values])  # offsets from 0
        inner = _finite(values.values)
        if inner is values.values:
            return values
        if pa.types.is_fixed_size_list(t):
            return pa.FixedSizeListArray.from_arrays(inner, t.list_size, mask=values.is_null() if values.null_count else None)
        cls = pa.LargeListArray if pa.types.is_large_list(t) else pa.ListArray
        return cls.from_arrays(values.offsets, inner, mask=values.is_null() if values.null_count else None)
    return values


def _floats_inside(t: pa.DataType) -> bool:
    if pa.types.is_floating(t):
        return True
    if pa.types.is_struct(t):
        return any(_floats_inside(f.type) for f in t)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _floats_inside(t.value_type)
    return False


def _duckdb_json(batch: pa.RecordBatch | pa.Table) -> pa.Array:
    con = _connection()
    if any(_floats_inside(f.type) for f in batch.schema):
        columns = [batch.column(i) for i in range(batch.num_columns)]
        columns = [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in columns]
        batch = pa.RecordBatch.from_arrays([_finite(c) for c in columns], schema=batch.schema)
    rows = con.from_arrow(batch)  # noqa: F841 - referenced by name in the SQL below
    # the row alias must not be a column name (a column ``r`` would shadow ``r``)
    table = con.sql("SELECT to_json(__sqlstream_row)::VARCHAR AS j FROM rows __sqlstream_row").to_arrow_table()
    return table.column(0).combine_chunks()


#: below this many rows the Arrow-kernel path wins (DuckDB costs ~2 ms per call, the
#: kernels ~1.3 µs per row); both write the same text
_KERNEL_ROWS = 2048


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)


def _binary_as_base64(batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch | pa.Table:
    """``batch`` with its binary columns as base64 text (JSON has no bytes)."""
    if not any(_is_binary(f.type) for f in batch.schema):
        return batch
    columns = []
    for i, field in enumerate(batch.schema):
        column = batch.column(i)
        if _is_binary(field.type):
            column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
            column = to_base64(column).cast(pa.string())
        columns.append(column)
    return pa.table(columns, names=batch.schema.names)


def encode_json_values(batch: pa.RecordBatch | pa.Table) -> pa.Array:
    """One JSON object per row, as a string array (one element per row)."""
    if batch.num_rows == 0:
        return pa.array([], pa.string())
    rows = _small_json(batch) if batch.num_rows <= SMALL_ROWS else None
    if rows is not None:
        return pa.array(rows, pa.string())
    batch = _binary_as_base64(batch)
    fast = _flat_json(batch) if batch.num_rows <= _KERNEL_ROWS else None
    return fast if fast is not None else _duckdb_json(batch)


def encode_json_lines(batch: pa.RecordBatch | pa.Table) -> bytes:
    """The rows of ``batch`` as JSON objects, one per line (with a trailing newline)."""
    if batch.num_rows == 0:
        return b""
    lines = pc.binary_join_element_wise(encode_json_values(batch), text("\n"), text(""))
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
    return lines.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]


# -- small batches: one Python string per row ------------------------------------------------

#: batches up to this many rows are written by :func:`json_rows` (measured: ~1 µs a row
#: against ~15 kernel calls of 5-10 µs each, whatever the rows)
SMALL_ROWS = 64

_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]')  # control characters, '"', '\'
_CONTROL = re.compile(r"[\x00-\x1f]")


def float_text(value: float) -> str:
    """A finite float as Arrow's cast to string writes it (the shortest text that reads
    back as the same double; exponent notation below 1e-6 and from 1e10 on).

    >>> [float_text(v) for v in (1.0, -0.0, 2.5, 1e-06, 1e-07, 9999999999.0, 1e10, 1.5e21)]
    ['1', '-0', '2.5', '0.000001', '1e-7', '9999999999', '1e+10', '1.5e+21']
    """
    text = repr(value)  # the same shortest digits, in Python's notation
    if 1e-4 <= abs(value) < 1e10 or value == 0:  # (both notations are plain decimals here)
        return text[:-2] if text.endswith(".0") else text
    sign = "-" if text[0] == "-" else ""
    mantissa, _, exponent = text.lstrip("-").partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    point = len(whole) + int(exponent or 0)  # value = 0.<digits> x 10^point
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    if not digits:
        return sign + "0"
    if point - 1 < -6 or point - 1 >= 10:
        exponent = point - 1
        head = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{head}e{'+' if exponent >= 0 else '-'}{abs(exponent)}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _float_json(value: float | None) -> str:
    if value is None or value != value or value in (math.inf, -math.inf):
        return "null"  # (NaN and infinities are not JSON)
    if 1e-4 <= abs(value) < 1e10 or value == 0:
        return repr(value)  # (plain decimals in both notations, "1.0" already)
    out = float_text(value)
    return out + ".0" if out.lstrip("-").isdigit() else out  # 1 -> 1.0, as the kernels write it


def _string_json(value: str | None) -> str | None:
    if value is None:
        return "null"
    if _NEEDS_ESCAPE.search(value):
        for old, new in _JSON_ESCAPES:
            value = value.replace(old, new)
        if _CONTROL.search(value):
            return None  # other control characters: the full encoder writes those
    return '"' + value + '"'


def _column_texts(values: pa.Array) -> list[str] | None:
    """A column's values as JSON texts, or None when the batch needs the full encoder."""
    t = values.type
    if _is_binary(t):
        values = to_base64(values).cast(pa.string())  # (as _binary_as_base64 writes it)
        t = values.type
    if pa.types.is_integer(t):
        return ["null" if v is None else str(v) for v in values.to_pylist()]
    if t == pa.float64() or t == pa.float32():
        return [_float_json(v) for v in values.to_pylist()]
    if pa.types.is_boolean(t):
        return ["null" if v is None else ("true" if v else "false") for v in values.to_pylist()]
    if pa.types.is_string(t) or pa.types.is_large_string(t) or (
        pa.types.is_dictionary(t) and (pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type))
    ):
        texts = [_string_json(v) for v in values.to_pylist()]
        return None if None in texts else texts
    kernel = _json_text(values)  # timestamps, dates, times, decimals: the kernels' own text
    return None if kernel is None else ["null" if v is None else v for v in kernel.to_pylist()]


@functools.lru_cache(maxsize=256)
def _row_template(names: tuple[str, ...]) -> str:
    """``{"a":%s,"b":%s}`` for the column names (a ``%`` in a name doubled)."""
    keys = ",".join(orjson.dumps(name).decode().replace("%", "%%") + ":%s" for name in names)
    return "{" + keys + "}"


def _small_json(batch: pa.RecordBatch | pa.Table) -> list[str] | None:
    if not batch.num_columns:
        return None
    texts = []
    for i in range(batch.num_columns):
        column = batch.column(i)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        values = _column_texts(column)
        if values is None:
            return None
        texts.append(values)
    template = _row_template(tuple(batch.schema.names))
    return [template % row for row in zip(*texts)]


def json_rows(batch: pa.RecordBatch | pa.Table) -> list[str] | None:
    r"""The rows of a batch of up to :data:`SMALL_ROWS` rows as JSON objects, the same
    text :func:`encode_json_values` writes; None for a larger batch or one that needs
    the full encoder (nested values, control characters in text, no columns).

    >>> json_rows(pa.table({"id": [1, None], "x": [2.0, float("nan")], "s": ['a"b', "é"]}))
    ['{"id":1,"x":2.0,"s":"a\\"b"}', '{"id":null,"x":null,"s":"é"}']
    """
    if batch.num_rows > SMALL_ROWS:
        return None
    return _small_json(batch) if batch.num_rows else []
