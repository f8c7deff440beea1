"""Small blocks of clean JSON lines read without pyarrow's JSON reader.

pyarrow.json costs ~0.1-0.2 ms of CPU for a block of ten records, and more wall time
than that (it hands the block to its own threads); a micro-batch of a few messages
pays it for every batch. A *clean* block is read instead by orjson (the block as one
JSON array: one call) and ``pyarrow.array`` (type inference in C), ~15 µs for ten
records. Clean means every rule of the full decoder
(:class:`~sqlstream.connectors.decode.json_lines.JsonDecoder`) would read it as
these two do, which is checked on the whole block, not record by record:

* ASCII, no backslash (so no escapes: every ``"`` opens or closes a string), no
  ``\\r``, no blank line, and no integer ``-0`` (pyarrow reads it as -0.0 into a
  DOUBLE, orjson as the integer 0);
* one JSON object per line (the array has one element per line, every one a dict);
* no key twice and no nested object: the keys in the text (``"`` then ``:``) are
  exactly the keys of the parsed objects;
* every key that names a declared column in any case spells it exactly;
* each declared column's values have the type the reader expects, or integers for
  a DOUBLE (cast exactly, else not clean), or are all missing/NULL; and every
  ``true``/``false`` in the text is in a key inferred BOOLEAN (inference turns a
  boolean among floats into a number).

Anything else (and any block over :data:`CLEAN_BLOCK_BYTES`) is not clean: the full
decoder reads it, with its dead letters. ``tests/unit/test_json_clean.py`` decodes
random blocks both ways and compares.
"""

from __future__ import annotations

import re

import orjson
import pyarrow as pa

__all__ = ["CLEAN_BLOCK_BYTES", "CleanJsonReader"]

#: blocks up to this size may take the clean path (measured, thread CPU, records of 6
#: numbers: 75 / 90 / 180 µs for 1 / 10 / 50 records against 300-360 µs for pyarrow.json;
#: even at ~170 records (14 KiB); pyarrow.json is faster beyond, ~2.3x at 85 KiB)
CLEAN_BLOCK_BYTES = 12 * 1024

_KEY_END = re.compile(rb'"\s*:')
_BOOLEAN_VALUE = re.compile(rb":\s*(?:true|false)")
_INTEGER_MINUS_ZERO = re.compile(rb"-0(?![0-9.eE])")
_INTEGERS = (pa.int8(), pa.int16(), pa.int32(), pa.int64())
_READ_TYPES = (*_INTEGERS, pa.float64(), pa.bool_(), pa.string())


class CleanJsonReader:
    """Reads a clean block (see the module docstring) into a table of ``read_schema``."""

    def __init__(self, read_schema: pa.Schema):
        self.read_schema = read_schema
        self.keys = [(f'"{f.name}"'.encode(), f'"{f.name.lower()}"'.encode()) for f in read_schema]
        self.capitalized_keys = [(exact, lower) for exact, lower in self.keys if exact != lower]

    @staticmethod
    def applies(read_schema: pa.Schema) -> bool:
        """Whether blocks of ``read_schema`` can be clean: flat columns of the types above,
        ASCII names without quotes or backslashes."""
        return all(f.type in _READ_TYPES and f.name.isascii() and '"' not in f.name and "\\" not in f.name
                   for f in read_schema)

    def read(self, data: bytes) -> list[pa.Array] | None:
        """The block's records as the columns of ``read_schema`` (row i: line i), or
        None if the block is not clean."""
        if (len(data) > CLEAN_BLOCK_BYTES or not data.isascii() or b"\\" in data or b"\r" in data
                or _INTEGER_MINUS_ZERO.search(data)):
            return None
        try:
            rows = orjson.loads(b"[" + data.replace(b"\n", b",") + b"]")
        except orjson.JSONDecodeError:
            return None  # (a blank line, a malformed record, NaN: the full decoder says which)
        if len(rows) != data.count(b"\n") + 1 or set(map(type, rows)) != {dict}:
            return None
        if len(_KEY_END.findall(data)) != sum(map(len, rows)):
            return None  # a key twice in an object, or a nested object
        lowered = data.lower()
        # (a block without capitals only needs checking for the names that have some)
        keys = self.keys if lowered != data else self.capitalized_keys
        if any(lowered.count(lower) != data.count(exact) for exact, lower in keys):
            return None  # a key spelled in another case
        try:
            objects = pa.array(rows)
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            return None  # mixed types in a key
        if len(_BOOLEAN_VALUE.findall(data)) != _booleans(objects):
            return None  # a boolean among floats: inference made it a number
        columns = []
        for field in self.read_schema:
            index = objects.type.get_field_index(field.name)
            column = objects.field(index) if index >= 0 else pa.nulls(len(rows), pa.null())
            column = _as_read_type(column, field.type)
            if column is None:
                return None
            columns.append(column)
        return columns


def _booleans(objects: pa.StructArray) -> int:
    """How many values of ``objects``' keys were inferred BOOLEAN."""
    children = [objects.field(i) for i, f in enumerate(objects.type) if f.type == pa.bool_()]
    return sum(len(c) - c.null_count for c in children)


def _as_read_type(column: pa.Array, read_type: pa.DataType) -> pa.Array | None:
    """``column`` (types inferred from the values) as pyarrow.json reads it into ``read_type``."""
    if column.type == read_type:
        return column
    if pa.types.is_null(column.type):
        return pa.nulls(len(column), read_type)
    if column.type == pa.int64() and (read_type in _INTEGERS or read_type == pa.float64()):
        try:
            return column.cast(read_type, safe=True)  # (refuses what does not fit, or not exactly)
        except (pa.ArrowInvalid, OverflowError):
            return None
    return None
