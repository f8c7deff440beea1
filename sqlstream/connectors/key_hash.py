"""A stable hash of key columns, vectorized: which partition a row's key goes to.

Python's ``hash`` of a string differs between processes, and Arrow has no hash kernel
in Python, so keys are hashed here with numpy, the same on every machine and in every
process: integers, dates, times and timestamps by their integer value, floats by their
bits (``-0.0`` as ``0.0``, every NaN alike), booleans as 0/1, strings and binaries by a
polynomial over their bytes, NULL as a constant; each value is then mixed (the
splitmix64 finalizer) and the columns combined in order.

>>> import pyarrow as pa
>>> batch = pa.record_batch({"k": pa.array(["a", "b", None, "a"]), "n": pa.array([1, 2, 3, 1])})
>>> parts = partitions_of(batch, ["k", "n"], 8)
>>> bool(parts[0] == parts[3]), parts.dtype.name, bool((parts < 8).all())
(True, 'int64', True)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["partitions_of", "key_hashes", "hash_alike", "mix"]

_NULL = np.uint64(0x9E3779B97F4A7C15)
_BASE = np.uint64(0x100000001B3)  # the FNV prime, as the polynomial's base


def partitions_of(batch: pa.RecordBatch, keys: Sequence[str], partitions: int) -> np.ndarray:
    """The partition (0 to ``partitions - 1``) of each row's key; every row to 0 without keys."""
    if not keys:
        return np.zeros(batch.num_rows, dtype=np.int64)
    return (key_hashes([batch.column(k) for k in keys]) % np.uint64(partitions)).astype(np.int64)


def hash_alike(a: pa.DataType, b: pa.DataType) -> bool:
    """True when equal values of types ``a`` and ``b`` hash alike (the two sides of a
    join's equality, shuffled apart)."""
    def kind(t: pa.DataType) -> str:
        if pa.types.is_dictionary(t):
            return kind(t.value_type)
        if pa.types.is_integer(t):
            return "integer"
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return "bytes"
        return str(t)

    return kind(a) == kind(b)


def key_hashes(columns: Sequence[pa.Array]) -> np.ndarray:
    """One uint64 per row, the same for equal keys in every process."""
    out = np.zeros(len(columns[0]) if columns else 0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in columns:
            out = mix(out * np.uint64(31) + _column_hashes(column))
    return out


def mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every input bit moves every output bit (the one the
    project's hashes share: join keys, exchanges, approximate distinct counts)."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def _column_hashes(column: pa.Array) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    t = column.type
    if pa.types.is_dictionary(t):
        return _column_hashes(column.dictionary_decode())
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        values = _bytes_hashes(column)
    elif pa.types.is_floating(t):
        floats = pc.fill_null(column.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False).copy()
        floats[floats == 0.0] = 0.0  # -0.0 equals 0.0
        floats[np.isnan(floats)] = np.nan
        values = floats.view(np.uint64)
    elif pa.types.is_boolean(t):
        values = pc.fill_null(column, False).to_numpy(zero_copy_only=False).astype(np.uint64)
    elif pa.types.is_integer(t) or pa.types.is_temporal(t):
        values = pc.fill_null(column.cast(pa.int64()), 0).to_numpy(zero_copy_only=False).view(np.uint64)
    else:  # decimals, nested and other types: by their text
        return _column_hashes(column.cast(pa.string()))
    if column.null_count:
        values = np.where(column.is_valid().to_numpy(zero_copy_only=False), values, _NULL)
    return values


def _bytes_hashes(column: pa.Array) -> np.ndarray:
    """A polynomial hash of each value's bytes (base ``_BASE``, wrapping at 2**64), plus its length."""
    offset_type = np.int64 if pa.types.is_large_string(column.type) or pa.types.is_large_binary(column.type) else np.int32
    n = len(column)
    buffers = column.buffers()
    offsets = np.frombuffer(buffers[1], dtype=offset_type, count=n + 1, offset=column.offset * np.dtype(offset_type).itemsize)
    offsets = offsets.astype(np.int64)
    lengths = np.diff(offsets)
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, dtype=np.uint8)
    data = data[offsets[0]:offsets[-1]]
    out = lengths.astype(np.uint64)
    if data.size:
        starts = offsets[:-1] - offsets[0]
        position = np.arange(data.size, dtype=np.int64) - np.repeat(starts, lengths)
        with np.errstate(over="ignore"):
            powers = np.cumprod(np.full(int(lengths.max()), _BASE, dtype=np.uint64))
            terms = data.astype(np.uint64) * powers[position]
            nonempty = lengths > 0
            sums = np.zeros(n, dtype=np.uint64)
            sums[nonempty] = np.add.reduceat(terms, starts[nonempty])
            out = out + sums
    return out
