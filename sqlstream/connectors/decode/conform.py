"""Conversion of read columns to the declared types, one rule for every format.

Timestamps are parsed from text here (a TIMESTAMP refuses a UTC offset, a TIMESTAMPTZ
converts it), integers refuse hexadecimal, text is checked to be UTF-8 where the
reader did not check it, and every failure names its column.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["conform_table", "read_type", "READ_ERRORS", "CONVERT_ERRORS"]

_EPOCH_SCALE_US = {"epoch_s": 1_000_000, "epoch_ms": 1_000, "epoch_us": 1}
READ_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, ValueError)
CONVERT_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OverflowError)
# a UTC offset (or Z) after the time of day: 10:00:00Z, 10:00+02:00, 10:00:00.5-0500
_ZONE_SUFFIX = r"\d:\d\d(?::\d\d(?:\.\d*)?)?\s*(?:[zZ]|[+-]\d\d(?::?\d\d)?)$"


def read_type(declared: pa.DataType, timestamp_format: str) -> pa.DataType:
    """The type pyarrow's readers produce for a declared column type (converted after)."""
    if pa.types.is_timestamp(declared):
        if timestamp_format == "epoch_s":
            return pa.float64()
        if timestamp_format in _EPOCH_SCALE_US:
            return pa.int64()
        return pa.string()  # parsed by _parse_timestamps: one rule for every format
    if pa.types.is_fixed_size_list(declared):
        return pa.list_(read_type(declared.value_type, timestamp_format))
    if pa.types.is_list(declared):
        return pa.list_(read_type(declared.value_type, timestamp_format))
    if pa.types.is_struct(declared):
        return pa.struct([pa.field(f.name, read_type(f.type, timestamp_format)) for f in declared])
    if pa.types.is_date(declared) or pa.types.is_time(declared):
        return pa.string()
    return declared


def _parse_timestamps(strings: pa.Array, declared: pa.DataType) -> pa.Array:
    """ISO 8601 text → timestamps. A TIMESTAMP (no time zone) refuses values that carry
    a UTC offset (rather than shift them silently); a TIMESTAMPTZ converts offsets to
    UTC and reads values without one as UTC."""
    if declared.tz is None:
        return pc.cast(strings, declared)
    zoned = pc.match_substring_regex(strings, _ZONE_SUFFIX)
    none = pa.scalar(None, strings.type)
    aware = pc.cast(pc.if_else(zoned, strings, none), declared)
    naive = pc.cast(pc.cast(pc.if_else(zoned, none, strings), pa.timestamp(declared.unit)), declared)
    return pc.if_else(zoned, aware, naive)


def _parse_integers(strings: pa.Array, declared: pa.DataType) -> pa.Array:
    """Decimal text → integers. Arrow's cast would read ``0x10`` as 16: hexadecimal is
    refused (a byte scan first: digits hold no 'x'); blanks around the digits are not."""
    data = strings.buffers()[2]
    if data is not None and np.any((np.frombuffer(data, dtype=np.uint8) | 0x20) == ord("x")):
        hexadecimal = pc.or_(pc.match_substring(strings, "0x"), pc.match_substring(strings, "0X"))
        if pc.any(hexadecimal).as_py():
            value = strings.filter(hexadecimal)[0].as_py()
            raise pa.ArrowInvalid(f"invalid value '{value}' for {declared}: hexadecimal numbers are not read")
    try:
        return pc.cast(strings, declared)
    except pa.ArrowInvalid:
        return pc.cast(pc.utf8_trim_whitespace(strings), declared)


def _convert(array: pa.Array, declared: pa.DataType, timestamp_format: str) -> pa.Array:
    if array.type == declared:
        return array
    if pa.types.is_timestamp(declared) and timestamp_format in _EPOCH_SCALE_US:
        scale = _EPOCH_SCALE_US[timestamp_format]
        if pa.types.is_floating(array.type):
            micros = pc.cast(pc.round(pc.multiply(array, float(scale))), pa.int64())
        else:
            micros = pc.multiply_checked(array, scale)
        return pc.cast(pc.cast(micros, pa.timestamp("us")), pa.timestamp(declared.unit, declared.tz))
    if pa.types.is_timestamp(declared) and (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        return _parse_timestamps(array, declared)
    if pa.types.is_integer(declared) and pa.types.is_string(array.type):
        return _parse_integers(array, declared)
    if pa.types.is_fixed_size_list(declared) and not pa.types.is_fixed_size_list(array.type):
        lengths = pc.list_value_length(array)
        bad = pc.fill_null(pc.not_equal(lengths, declared.list_size), False)
        if pc.any(bad).as_py():
            raise pa.ArrowInvalid(f"expected {declared.list_size} elements in a {declared}")
        # convert the elements in place (NULL lists keep their offsets), then let Arrow
        # turn the list into a fixed-size one
        first, last = array.offsets[0].as_py(), array.offsets[-1].as_py()
        offsets = pc.subtract(array.offsets, pa.scalar(first, array.offsets.type))  # a slice starts at 0 again
        values = _convert(array.values.slice(first, last - first), declared.value_type, timestamp_format)
        mask = pc.is_null(array) if array.null_count else None
        return pc.cast(pa.ListArray.from_arrays(offsets, values, mask=mask), declared)
    return pc.cast(array, declared, safe=True)


def conform_table(
    table: pa.Table, schema: pa.Schema, timestamp_format: str = "iso", names: dict[str, str] | None = None,
    *, check_utf8: bool = True,
) -> pa.Table:
    """Cast ``table``'s columns to the declared ``schema`` (by name; missing → NULL).

    ``names`` maps declared name → name in ``table`` where they differ. Text columns
    are checked to be valid UTF-8 (Arrow IPC and Parquet readers do not check), unless
    the caller checked its bytes already (``check_utf8=False``).
    """
    names = names or {}
    columns = []
    for field in schema:
        source_name = names.get(field.name, field.name)
        if source_name in table.column_names:
            chunked = table.column(source_name)
            try:
                for chunk in chunked.chunks if check_utf8 else ():
                    chunk.validate(full=True)  # raises ArrowInvalid on text that is not UTF-8, nested too
                arrays = [_convert(chunk, field.type, timestamp_format) for chunk in chunked.chunks]
            except CONVERT_ERRORS as error:
                raise pa.ArrowInvalid(f"column '{field.name}': {_value_message(error)}") from error
            columns.append(pa.chunked_array(arrays, type=field.type))
        else:
            columns.append(pa.chunked_array([pa.nulls(table.num_rows, field.type)], type=field.type))
    return pa.Table.from_arrays(columns, schema=pa.schema([f.with_nullable(True) for f in schema]))


_PARSE_FAILED = re.compile(r"Failed to parse string: '(.*)' as a scalar of type ([^:]+)(?:: (.*))?$")


def _value_message(error: Exception) -> str:
    """What a failed conversion of one column says to a user."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if "UTF8" in text or "UTF-8" in text:
        return "text that is not valid UTF-8"
    failed = _PARSE_FAILED.search(text)
    if failed and (failed.group(3) or "").startswith("expected no zone offset"):
        return (f"'{failed.group(1)}' carries a UTC offset, which a TIMESTAMP column (no time zone) "
                "does not keep: declare the column TIMESTAMPTZ to convert offsets to UTC")
    if failed:
        return f"invalid value '{failed.group(1)}' for {failed.group(2)}"
    return text
