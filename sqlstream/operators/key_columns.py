"""One join key column in numpy form (:class:`KeyColumn`): what
:class:`~sqlstream.operators.join_keys.KeyIndex` codes, hashes and verifies.

* integer-like values (integers, timestamps, dates, times, durations, booleans) as
  int64, floats as float64 (-0.0 made 0.0);
* strings and binaries read straight from their Arrow buffers, eight bytes at a time
  through an unaligned view: each value's length and zero-padded words (for
  verification) and a 64-bit hash; a value of up to 7 bytes is also its own exact code
  (``length << 56 | bytes``), which needs neither hash nor verification.

Each is computed when first asked for: a probe on short codes reads one word per row.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.connectors.key_hash import mix

__all__ = ["C1", "C2", "GOLDEN", "KeyColumn", "combined", "mix"]

C1 = np.uint64(0xBF58476D1CE4E5B9)
C2 = np.uint64(0x94D049BB133111EB)
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def combined(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    return column


def _is_integer_like(t: pa.DataType) -> bool:
    return (
        pa.types.is_integer(t)
        or pa.types.is_boolean(t)
        or pa.types.is_timestamp(t)
        or pa.types.is_date(t)
        or pa.types.is_time(t)
        or pa.types.is_duration(t)
    )


def _valid(column: pa.Array) -> np.ndarray | None:
    if column.null_count == 0:
        return None
    return pc.is_valid(column).to_numpy(zero_copy_only=False)


def _int64_values(column: pa.Array) -> np.ndarray:
    t = column.type
    if pa.types.is_timestamp(t) or pa.types.is_duration(t) or pa.types.is_time64(t) or pa.types.is_date64(t):
        column = column.view(pa.int64())
    elif pa.types.is_date32(t) or pa.types.is_time32(t):
        column = column.view(pa.int32())
    elif pa.types.is_boolean(t):
        column = pc.cast(column, pa.int8())
    if column.null_count:
        column = pc.fill_null(column, 0)
    values = column.to_numpy(zero_copy_only=False)
    return values.astype(np.int64, copy=False)


_BYTE_MASKS = np.array([(1 << (8 * n)) - 1 for n in range(9)], dtype=np.uint64)  # the low n bytes of a word
_WORDS_KEPT = 16  # strings up to 128 bytes keep their words for verification; longer ones are compared by Arrow


_WORD_FACTORS = mix(np.arange(1, 65, dtype=np.uint64) * GOLDEN) | np.uint64(1)  # odd, one per word (mod 64)


def _unaligned(column: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(an unaligned uint64 view starting at every byte of a string/binary column's
    values, each value's first byte in it, byte lengths, the view's last position); the
    view can be read 8 bytes from any value's start (a padded copy where the buffer
    ends too soon)."""
    t = column.type
    offset_type = np.int64 if (pa.types.is_large_string(t) or pa.types.is_large_binary(t)) else np.int32
    n = len(column)
    buffers = column.buffers()
    offsets = np.frombuffer(buffers[1], dtype=offset_type)[column.offset : column.offset + n + 1].astype(np.int64)
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    start, end = int(offsets[0]), int(offsets[-1])
    if data.size < end + 8:  # the last word would read past the buffer
        data = np.concatenate([data[start:end], np.zeros(8, np.uint8)])
        offsets = offsets - start
        start, end = 0, end - start
    unaligned = np.ndarray(shape=(end - start + 1,), dtype="<u8", buffer=data, offset=start, strides=(1,))
    return unaligned, offsets[:-1] - start, offsets[1:] - offsets[:-1], end - start


def _byte_words(column: pa.Array) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(byte lengths, each value's length and zero-padded 8-byte words as one row of
    an (n, 1 + W) array or None, 64-bit hash) of a string/binary column, straight from
    its Arrow buffers.

    The hash is ``mix(length * golden + sum of word j * factor j)``: a zero word adds
    nothing, so a value's hash does not depend on how long the column's longest value
    is, and words that every value fills need no masking or selection."""
    unaligned, begin, lengths, last = _unaligned(column)
    shortest, longest = (int(lengths.min()), int(lengths.max())) if lengths.size else (0, 0)
    count = -(-longest // 8)
    words = None
    if count <= _WORDS_KEPT:
        words = np.empty((lengths.size, 1 + count), dtype=np.uint64)
        words[:, 0] = lengths
    h = lengths.astype(np.uint64) * GOLDEN
    for j in range(count):
        word = unaligned[begin + 8 * j if 8 * j < shortest else np.minimum(begin + 8 * j, last)]
        if 8 * (j + 1) > shortest:  # the tail of some values, or past their end: keep their own bytes only
            word &= _BYTE_MASKS[np.clip(lengths - 8 * j, 0, 8)]
        if words is not None:
            words[:, 1 + j] = word
        word *= _WORD_FACTORS[j % _WORD_FACTORS.size]
        h += word
    return lengths, words, mix(h)


_SHORT = 7  # bytes: a value this short is its own exact code, its length in the top byte


def _short_codes(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(code, fits) of a string/binary column: each value of up to ``_SHORT`` bytes as
    ``length << 56 | its bytes`` (exact: no hashing, no verification); ``fits`` is False
    for longer values, which then have no code."""
    unaligned, begin, lengths, _ = _unaligned(column)
    word = unaligned[begin] & _BYTE_MASKS[np.minimum(lengths, _SHORT)]
    codes = (word | (lengths.astype(np.uint64) << np.uint64(56))).view(np.int64)
    return codes, lengths <= _SHORT


class KeyColumn:
    """One key column in numpy form: what codes, hashes and verification read (a string
    column's words and hash only when asked for: short codes need neither)."""

    __slots__ = ("array", "valid", "kind", "values", "_text", "_lengths", "_words", "_hash")

    def __init__(self, column: pa.Array | pa.ChunkedArray):
        column = combined(column)
        t = column.type
        self.array = column
        self.valid = _valid(column)
        self.values = self._text = self._lengths = self._words = self._hash = None
        if _is_integer_like(t):
            self.kind, self.values = "int", _int64_values(column)
        elif pa.types.is_floating(t):
            self.kind = "float"
            self.values = pc.cast(pc.fill_null(column, 0), pa.float64()).to_numpy(zero_copy_only=False) + 0.0  # -0.0 == 0.0
        else:
            if pa.types.is_string_view(t) or pa.types.is_binary_view(t):
                column = pc.cast(column, pa.large_binary())
            elif not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
                      or pa.types.is_large_binary(t)):
                column = pc.cast(column, pa.string())  # decimals and the like: by their text
            self.kind, self._text = "bytes", column

    @property
    def words(self) -> np.ndarray | None:
        """A string column's (length, words) rows (:func:`_byte_words`)."""
        if self._lengths is None:
            self._lengths, self._words, self._hash = _byte_words(self._text)
        return self._words

    def short_codes(self) -> tuple[np.ndarray, np.ndarray]:
        return _short_codes(self._text)

    def hash(self) -> np.ndarray:
        if self.kind == "bytes":
            self.words  # noqa: B018 - computes the hash with the words
        elif self._hash is None:
            self._hash = mix(self.values.view(np.uint64) ^ GOLDEN)
        return self._hash

    def arrays(self) -> list[np.ndarray | None]:
        """The numpy arrays it holds (for state sizes)."""
        return [self.valid, self.values, self._lengths, self._words, self._hash]

    def same(self, rows: np.ndarray, other: "KeyColumn", other_rows: np.ndarray) -> np.ndarray:
        """Whether value ``rows[i]`` here equals value ``other_rows[i]`` of ``other``."""
        if self.kind != other.kind or (self.kind == "bytes" and (self.words is None or other.words is None)):
            left, right = self.array.take(pa.array(rows)), other.array.take(pa.array(other_rows))
            if left.type != right.type:
                right = right.cast(left.type)
            return pc.fill_null(pc.equal(left, right), False).to_numpy(zero_copy_only=False)
        if self.kind != "bytes":
            return self.values[rows] == other.values[other_rows]
        mine, theirs = np.take(self.words, rows, axis=0), np.take(other.words, other_rows, axis=0)  # a row per read
        same = mine[:, 0] == theirs[:, 0]  # lengths
        for j in range(1, min(mine.shape[1], theirs.shape[1])):  # equal lengths: equal word counts
            same &= mine[:, j] == theirs[:, j]
        return same
