"""Base64 text ⇄ binary for whole Arrow columns: how ``BYTEA`` travels in JSON.

Both directions are a few C-level calls over a column's whole data buffer
(``binascii`` on all values at once, ``bytes.translate``, numpy over the offsets),
never a Python call per value: per row there is only offset arithmetic.

Decoding reads the standard alphabet (``+`` ``/``, RFC 4648 §4) and the URL-safe one
(``-`` ``_``, §5): the two never share a character, so a value in either is read the
same way. Padding is required (the text's length is a multiple of 4, ``=`` only in
the last two places); whitespace and line breaks inside a value are not read. A
value that breaks these rules is reported by its row, never read as something else.
Encoding writes the standard alphabet with padding.

>>> import pyarrow as pa
>>> to_base64(pa.array([b"hi", None, b"\\xff\\xfe\\xfd"])).to_pylist()
['aGk=', None, '//79']
>>> values, bad = from_base64(pa.array(["aGk=", None, "__79", "aGk"]))
>>> values.to_pylist(), bad.tolist()
([b'hi', None, b'\\xff\\xfe\\xfd', None], [3])
>>> base64_problem("aGk")
'a length of 3 bytes is not a multiple of 4 (padding with = is required)'
"""

from __future__ import annotations

import binascii

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["base64_problem", "from_base64", "to_base64"]

_STANDARD = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_ALPHABET = np.frombuffer(_STANDARD, dtype=np.uint8)
_READ = _STANDARD + b"-_="  # every character a value may hold
#: URL-safe characters as standard ones, and padding as a zero sextet (its bytes are dropped after)
_AS_STANDARD = bytes.maketrans(b"-_=", b"+/A")
_PAD = 64  # the sextet table's mark for '='
_INVALID = 255
_SEXTETS = np.full(256, _INVALID, dtype=np.uint8)
_SEXTETS[_ALPHABET] = np.arange(64, dtype=np.uint8)
_SEXTETS[ord("-")], _SEXTETS[ord("_")] = 62, 63  # the URL-safe alphabet
_SEXTETS[ord("=")] = _PAD


def _offsets(array: pa.Array) -> np.ndarray:
    """The ``len(array) + 1`` offsets of a (large) string or binary array, as int64."""
    width = np.int64 if pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], dtype=width)[array.offset : array.offset + len(array) + 1]
    return offsets.astype(np.int64)


def _data(array: pa.Array) -> np.ndarray:
    buffer = array.buffers()[2]
    return np.frombuffer(buffer, dtype=np.uint8) if buffer is not None else np.zeros(0, dtype=np.uint8)


def _variable(array: pa.Array, nulls_empty: pa.Scalar) -> tuple[pa.Array, np.ndarray]:
    """``array`` with NULLs as empty values (their slots may hold bytes), and its validity."""
    if not array.null_count:
        return array, np.ones(len(array), dtype=bool)
    valid = pc.is_valid(array)
    return pc.if_else(valid, array, nulls_empty), valid.to_numpy(zero_copy_only=False)


def _assemble(kind: pa.DataType, large_kind: pa.DataType, lengths: np.ndarray, data: np.ndarray,
              valid: np.ndarray) -> pa.Array:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    large = offsets[-1] >= 1 << 31
    validity = None if valid.all() else pa.array(valid, pa.bool_()).buffers()[1]
    return pa.Array.from_buffers(
        large_kind if large else kind, len(lengths),
        [validity, pa.py_buffer(offsets if large else offsets.astype(np.int32)), pa.py_buffer(np.ascontiguousarray(data))],
    )


def to_base64(values: pa.Array) -> pa.Array:
    """Binary values as base64 text (standard alphabet, padded); NULL stays NULL."""
    if pa.types.is_fixed_size_binary(values.type):
        values = values.cast(pa.binary())
    values, valid = _variable(values, pa.scalar(b"", values.type))
    offsets = _offsets(values)
    lengths = np.diff(offsets)
    data = _data(values)[offsets[0] : offsets[-1]]
    # each value zero-filled to whole 3-byte groups, so one call encodes them all
    short = (3 - lengths % 3) % 3
    ends = offsets[1:] - offsets[0]
    filled = np.insert(data, np.repeat(ends, short), 0) if short.any() else data
    chars = np.frombuffer(bytearray(binascii.b2a_base64(filled.tobytes(), newline=False)), dtype=np.uint8)
    out_lengths = (lengths + short) // 3 * 4
    out_ends = np.cumsum(out_lengths)
    chars[out_ends[short > 0] - 1] = ord("=")  # the zero fill's characters are padding
    chars[out_ends[short == 2] - 2] = ord("=")
    return _assemble(pa.string(), pa.large_string(), out_lengths, chars, valid)


def _bad_rows(raw: bytes, lengths: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The rows that are not base64 by the rules above: cheap checks over the whole
    buffer first; only when they find something, a lookup of every character."""
    text = np.frombuffer(raw, dtype=np.uint8)
    bad = lengths % 4 != 0
    ends = starts + lengths
    two = lengths >= 2
    last = np.zeros(len(lengths), dtype=bool)
    before = np.zeros(len(lengths), dtype=bool)
    last[lengths >= 1] = text[ends[lengths >= 1] - 1] == ord("=")
    before[two] = text[ends[two] - 2] == ord("=")
    bad |= before & ~last  # '=' and then a character at the end
    misplaced = raw.count(b"=") != int(last.sum() + before.sum())
    if raw.translate(None, _READ) or misplaced:  # a character outside the alphabets, or '=' elsewhere
        sextets = _SEXTETS[text]
        rows = np.repeat(np.arange(len(lengths)), lengths)
        bad[rows[sextets == _INVALID]] = True
        pad = sextets == _PAD
        from_end = (lengths[rows] - (np.arange(len(text)) - starts[rows]))[pad]  # 1: the last character
        bad[rows[pad][from_end > 2]] = True
    return bad


def from_base64(strings: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Base64 text as binary values, and the rows (int64 indices) whose text is not
    base64 by the rules above; those rows are NULL in the result, as NULLs stay."""
    strings, valid = _variable(strings, pa.scalar("", strings.type))
    offsets = _offsets(strings)
    raw = _data(strings)[offsets[0] : offsets[-1]].tobytes()
    lengths = np.diff(offsets)
    bad = _bad_rows(raw, lengths, offsets[:-1] - offsets[0])
    if bad.any():  # read the others as if these were empty
        strings = pc.if_else(pa.array(~bad), strings, pa.scalar("", strings.type))
        offsets = _offsets(strings)
        raw = _data(strings)[offsets[0] : offsets[-1]].tobytes()
        lengths = np.diff(offsets)
    decoded = np.frombuffer(binascii.a2b_base64(raw.translate(_AS_STANDARD)), dtype=np.uint8)
    text = np.frombuffer(raw, dtype=np.uint8)
    ends = offsets[1:] - offsets[0]
    has = lengths >= 4
    pads = np.zeros(len(lengths), dtype=np.int64)
    pads[has] = (text[ends[has] - 1] == ord("=")).astype(np.int64) + (text[ends[has] - 2] == ord("="))
    full_ends = np.cumsum(lengths // 4 * 3)
    drop = np.concatenate([full_ends[pads >= 1] - 1, full_ends[pads == 2] - 2])
    data = np.delete(decoded, drop) if len(drop) else decoded
    return _assemble(pa.binary(), pa.large_binary(), lengths // 4 * 3 - pads, data, valid & ~bad), \
        np.flatnonzero(bad & valid)


def base64_problem(text: str) -> str:
    """Why ``text`` is not base64 by the rules above (for a dead letter's detail)."""
    if len(text.encode()) % 4:
        return f"a length of {len(text.encode())} bytes is not a multiple of 4 (padding with = is required)"
    for i, char in enumerate(text):
        if char.encode() not in _READ or len(char.encode()) != 1:
            return f"{char!r} at character {i + 1} is not in the base64 alphabet"
    return "'=' (padding) is only allowed in the last two places"
