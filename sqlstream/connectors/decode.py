"""Vectorized record decoding (JSON lines, CSV) against a declared schema.

One line is one record: a row, or exactly one dead letter. A block of lines is
decoded by one pyarrow call; when that fails, or when it yields more or fewer rows
than the block has records (two JSON objects on one line), the block is bisected
(:func:`~sqlstream.failure_isolation.isolate_failures`) so that exactly the bad
records become dead letters and every good one is kept:

- ``decode``: not JSON / CSV, not an object, several values on one line, invalid
  UTF-8, a key given twice;
- ``type``: a value that does not fit its column;
- ``null``: NULL (or missing) in a NOT NULL column.

A dead letter's ``raw`` is the line as read, without its line break; bytes that are
not UTF-8 show as ``\\xNN``. Every rule depends on the record alone, so results do
not depend on how the input is cut into blocks.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson

from sqlstream.connectors.base import METADATA_COLUMNS, DeadLetter
from sqlstream.failure_isolation import isolate_failures

__all__ = ["Decoder", "Decoded", "JsonDecoder", "CsvDecoder", "conform_table", "Position"]

Position = Callable[[int], str]  # record index in the block → "file:line" or "subject#seq"

_EPOCH_SCALE_US = {"epoch_s": 1_000_000, "epoch_ms": 1_000, "epoch_us": 1}
_READ_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, ValueError)
_CONVERT_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OverflowError)
# a UTC offset (or Z) after the time of day: 10:00:00Z, 10:00+02:00, 10:00:00.5-0500
_ZONE_SUFFIX = r"\d:\d\d(?::\d\d(?:\.\d*)?)?\s*(?:[zZ]|[+-]\d\d(?::?\d\d)?)$"


def _read_type(declared: pa.DataType, timestamp_format: str) -> pa.DataType:
    """The type pyarrow's readers produce for a declared column type (converted after)."""
    if pa.types.is_timestamp(declared):
        if timestamp_format == "epoch_s":
            return pa.float64()
        if timestamp_format in _EPOCH_SCALE_US:
            return pa.int64()
        return pa.string()  # parsed by _parse_timestamps: one rule for every format
    if pa.types.is_fixed_size_list(declared):
        return pa.list_(_read_type(declared.value_type, timestamp_format))
    if pa.types.is_list(declared):
        return pa.list_(_read_type(declared.value_type, timestamp_format))
    if pa.types.is_struct(declared):
        return pa.struct([pa.field(f.name, _read_type(f.type, timestamp_format)) for f in declared])
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
            except _CONVERT_ERRORS as error:
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


@dataclass
class Decoded:
    """A decoded block: rows, the record each row came from, and the rejected records."""

    table: pa.Table
    records: np.ndarray  # int64: the record (line) index in the block of each row
    dead: list[DeadLetter]
    rejected: np.ndarray  # int64: the record index of each dead letter, in the same order


class _Lines:
    """Where each line of a block starts and ends, and which lines are records (not
    blank). ``blank`` are the bytes a line may consist of and still hold no record."""

    def __init__(self, data: bytes, blank: bytes):
        self.data = data
        raw = np.frombuffer(data, dtype=np.uint8)
        ends = np.flatnonzero(raw == 10)
        if data and data[-1] != 10:
            ends = np.append(ends, len(data))
        starts = np.zeros(len(ends), dtype=np.int64)
        starts[1:] = ends[:-1] + 1
        self.starts, self.ends = starts, ends
        # only a line that is empty or starts with a blank byte can be blank
        empty = ends == starts
        first = np.zeros(len(starts), dtype=bool)
        leading = raw[starts[~empty]]
        first[~empty] = np.logical_or.reduce([leading == byte for byte in blank])
        blank_lines = [i for i in np.flatnonzero(empty | first) if not data[starts[i]:ends[i]].strip(blank)]
        keep = np.ones(len(starts), dtype=bool)
        keep[blank_lines] = False
        self.records = np.flatnonzero(keep)

    def line(self, index: int) -> bytes:
        return self.data[self.starts[index]:self.ends[index]]

    def span(self, first: int, last: int) -> bytes:
        """The bytes from the start of line ``first`` to the end of line ``last``."""
        return self.data[self.starts[first]:self.ends[last]]

    def as_array(self, records: np.ndarray) -> pa.Array:
        """The lines of ``records`` as a string array (each with what follows it up to the
        next record: blank lines do not matter to the searches this serves)."""
        bounds = np.append(self.starts[self.records], len(self.data))
        whole = pa.LargeStringArray.from_buffers(
            len(self.records), pa.py_buffer(bounds.astype(np.int64)), pa.py_buffer(self.data)
        )
        return whole.take(pa.array(np.searchsorted(self.records, records)))


class _RecordCount(Exception):
    """A stretch of lines gave more (or fewer) rows than it holds records."""

    def __init__(self, rows: int, records: int):
        super().__init__(f"{rows} rows from {records} records")
        self.rows = rows


class _Rejects:
    """Dead letters of one block, with the record index of each."""

    def __init__(self, decoder: "Decoder", lines: _Lines, position: Position):
        self.decoder, self.lines, self.position = decoder, lines, position
        self.letters: list[DeadLetter] = []
        self.records: list[int] = []

    def add(self, record: int, reason: str, detail: str) -> None:
        raw = self.lines.line(record)
        self.letters.append(DeadLetter(self.decoder.source_name, reason, detail, _raw_text(raw), self.position(record)))
        self.records.append(int(record))

    def sorted(self) -> tuple[list[DeadLetter], np.ndarray]:
        order = np.argsort(np.array(self.records, dtype=np.int64), kind="stable")
        return [self.letters[i] for i in order], np.array(self.records, dtype=np.int64)[order]


def _raw_text(raw: bytes) -> str:
    """A record as read, without its line break, as text (invalid UTF-8 as ``\\xNN``)."""
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw.decode("utf-8", "backslashreplace")


def _is_utf8(data: bytes) -> bool:
    if data.isascii():
        return True
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int64))
    try:
        pa.LargeStringArray.from_buffers(1, offsets, pa.py_buffer(data)).validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _utf8_error(line: bytes) -> str | None:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"not valid UTF-8: byte 0x{line[error.start]:02x} at column {error.start + 1}"
    return None


class Decoder:
    """Decodes blocks of records into tables of the declared schema."""

    blank = b"\r"  # bytes a line may hold and still be no record (an empty line)

    def __init__(self, schema: pa.Schema, source_name: str, timestamp_format: str = "iso"):
        self.schema = pa.schema([f for f in schema if f.name not in METADATA_COLUMNS])
        self.not_null = [f.name for f in self.schema if not f.nullable]
        self.source_name = source_name
        self.timestamp_format = timestamp_format
        self.read_schema = pa.schema(
            [pa.field(f.name, _read_type(f.type, timestamp_format)) for f in self.schema]
        )

    # -- to implement ------------------------------------------------------------------

    def _read(self, data: bytes) -> pa.Table:
        """Parse ``data`` (whole lines) into a table of ``read_schema``."""
        raise NotImplementedError

    def _classify(self, record: bytes, error: Exception) -> tuple[str, str]:
        raise NotImplementedError

    def _resolve(self, table: pa.Table, records: np.ndarray, lines: _Lines, rejects: _Rejects):
        """Hook after reading, before the types are checked (JSON matches key spellings)."""
        return table, records

    # -- shared --------------------------------------------------------------------------

    def decode(self, data: bytes, position: Position) -> tuple[pa.Table, list[DeadLetter]]:
        """Decode a block of newline-separated records."""
        decoded = self.decode_block(data, position)
        return decoded.table, decoded.dead

    def decode_block(self, data: bytes, position: Position) -> Decoded:
        """Decode a block of newline-separated records; record ``i`` is line ``i``."""
        lines = _Lines(data, self.blank)
        rejects = _Rejects(self, lines, position)
        if not _is_utf8(data):
            lines = self._drop_invalid_utf8(lines, rejects)
        lines = self._screen(lines, rejects)
        table, records = self._read_records(lines, rejects)
        table, records = self._resolve(table, records, lines, rejects)
        table, records = self._conform_records(table, records, rejects)
        table, records = self._check_not_null(table, records, rejects)
        dead, rejected = rejects.sorted()
        return Decoded(table, records, dead, rejected)

    def decode_records(self, records: Sequence[bytes], position: Position) -> Decoded:
        """Decode individually framed records (one message each): every record is one
        row or one dead letter, whose ``raw`` is the record as received. A record that
        holds a line break (beyond one at its end) is parsed on its own."""
        joined = b"\n".join(records)
        if joined.count(b"\n") == len(records) - 1 and b"\r" not in joined:
            decoded = self.decode_block(joined, position)
            multiline: list[int] = []
        else:
            # a record that is only blank is no record (an empty message) whatever its line breaks
            trimmed = [r.rstrip(b"\r\n") if r.strip(self.blank + b"\n") else b"" for r in records]
            multiline = [i for i, r in enumerate(trimmed) if b"\n" in r or b"\r" in r]
            for i in multiline:
                trimmed[i] = b""  # decoded below, on its own
            decoded = self.decode_block(b"\n".join(trimmed), position)
        parts = [decoded] + [self._decode_one(records[i], i, position) for i in multiline]
        return self._account(parts, records, position)

    def _decode_one(self, record: bytes, index: int, position: Position) -> Decoded:
        """One record that spans lines, made one line by :meth:`_as_one_line` first."""
        error = _utf8_error(record)
        if error is None:
            line, error = self._as_one_line(record)
            if line is not None:
                decoded = self.decode_block(line, lambda _: position(index))
                return Decoded(decoded.table, decoded.records + index, decoded.dead, decoded.rejected + index)
        letter = DeadLetter(self.source_name, "decode", error, None, position(index))
        return Decoded(self._conform(self.read_schema.empty_table()), np.zeros(0, dtype=np.int64), [letter],
                       np.array([index], dtype=np.int64))

    def _as_one_line(self, record: bytes) -> tuple[bytes | None, str | None]:
        """A record holding line breaks as one line, or why it cannot be one."""
        return None, "the record holds a line break: one record must be one line"

    def _account(self, parts: list[Decoded], records: Sequence[bytes], position: Position) -> Decoded:
        """Join the parts; a record that gave neither a row nor a dead letter held no
        record at all (an empty message): that is a dead letter too."""
        tables = [p.table for p in parts if p.table.num_rows]
        table = pa.concat_tables(tables) if tables else parts[0].table
        rows = np.concatenate([p.records for p in parts])
        dead = [d for p in parts for d in p.dead]
        rejected = np.concatenate([p.rejected for p in parts])
        for i, letter in zip(rejected, dead):
            letter.raw = records[i].decode("utf-8", "backslashreplace")  # the message, not its flattened line
        accounted = np.zeros(len(records), dtype=bool)
        accounted[rows] = True
        accounted[rejected] = True
        silent = np.flatnonzero(~accounted)
        for i in silent:
            text = records[i].decode("utf-8", "backslashreplace")
            dead.append(DeadLetter(self.source_name, "decode", "empty message", text, position(int(i))))
        rejected = np.concatenate([rejected, silent])
        order = np.argsort(rows, kind="stable")
        if len(parts) > 1 and (order != np.arange(len(order))).any():
            table, rows = table.take(pa.array(order)), rows[order]
        return Decoded(table, rows, dead, rejected)

    def _drop_invalid_utf8(self, lines: _Lines, rejects: _Rejects) -> _Lines:
        """Dead-letter the lines that are not UTF-8; they become empty lines (no record)."""
        bad = {}
        for index in lines.records:
            error = _utf8_error(lines.line(index))
            if error:
                bad[int(index)] = ("decode", error)
        return self._drop(lines, rejects, bad)

    def _drop(self, lines: _Lines, rejects: _Rejects, bad: dict[int, tuple[str, str]]) -> _Lines:
        """Dead-letter the lines ``bad`` names (index → reason, detail); they become empty."""
        for index, (reason, detail) in bad.items():
            rejects.add(index, reason, detail)
        pieces = [b"" if index in bad else lines.line(index) for index in range(len(lines.starts))]
        return _Lines(b"\n".join(pieces), self.blank)

    def _screen(self, lines: _Lines, rejects: _Rejects) -> _Lines:
        """Hook before the block is parsed: lines the parser must never see."""
        return lines

    def _read_records(self, lines: _Lines, rejects: _Rejects) -> tuple[pa.Table, np.ndarray]:
        records = lines.records
        try:
            table = self._read(lines.data)
            if table.num_rows == len(records):
                return table, records
        except _READ_ERRORS:
            pass

        def attempt(start: int, end: int) -> pa.Table:
            part = self._read(lines.span(records[start], records[end - 1]))
            if part.num_rows != end - start:
                raise _RecordCount(part.num_rows, end - start)
            return part

        good, bad = isolate_failures(len(records), attempt)
        for row, error in bad:
            index = records[row]
            rejects.add(index, *self._classify(lines.line(index), error))
        tables = [self._as_read(t) for _, _, t in good]
        kept = np.concatenate([records[s:e] for s, e, _ in good]) if good else records[:0]
        return (pa.concat_tables(tables) if tables else self._as_read(self.read_schema.empty_table())), kept

    def _as_read(self, table: pa.Table) -> pa.Table:
        """A part read on its own, with the columns and types of the whole block's read."""
        return table

    def _conform(self, table: pa.Table) -> pa.Table:
        return conform_table(table, self.schema, self.timestamp_format, check_utf8=False)  # bytes checked whole

    def _conform_records(self, table: pa.Table, records: np.ndarray, rejects: _Rejects) -> tuple[pa.Table, np.ndarray]:
        try:
            return self._conform(table), records
        except _CONVERT_ERRORS:
            pass
        good, bad = isolate_failures(table.num_rows, lambda s, e: self._conform(table.slice(s, e - s)))
        for row, error in bad:
            message = _arrow_message(error)
            reason = "decode" if message.endswith("not valid UTF-8") else "type"
            rejects.add(records[row], reason, message)
        tables = [t for _, _, t in good]
        kept = np.concatenate([records[s:e] for s, e, _ in good]) if good else records[:0]
        return (pa.concat_tables(tables) if tables else self._conform(self.read_schema.empty_table())), kept

    def _check_not_null(self, table: pa.Table, records: np.ndarray, rejects: _Rejects) -> tuple[pa.Table, np.ndarray]:
        bad_mask = None
        first_column: dict[int, str] = {}
        for name in self.not_null:
            if not table.column(name).null_count:
                continue
            nulls = pc.is_null(table.column(name))
            for row in pc.indices_nonzero(nulls).to_pylist():
                first_column.setdefault(row, name)
            bad_mask = nulls if bad_mask is None else pc.or_(bad_mask, nulls)
        if bad_mask is None:
            return table, records
        for row, column in sorted(first_column.items()):
            rejects.add(records[row], "null", f"column '{column}' is NULL but declared NOT NULL")
        keep = pc.invert(bad_mask)
        return table.filter(keep), records[keep.to_numpy(zero_copy_only=False)]


_JSON_CHANGED = re.compile(r"Column\(/([^)]*)\) changed from (\w+) to (\w+)( in row \d+)?")
_JSON_TWICE = re.compile(r"Column\(/([^)]*)\) was specified twice")


def _arrow_message(error: Exception) -> str:
    text = str(error).strip()
    for prefix in ("JSON parse error: ", "CSV parse error: "):
        text = text.replace(prefix, "")
    text = text.splitlines()[0] if text else type(error).__name__
    changed = _JSON_CHANGED.search(text)
    if changed:
        column, declared, got = changed.group(1, 2, 3)
        return f"column '{column}': expected a {declared}, got a {got}"
    return text


class _Object(dict):
    """A parsed JSON object that remembers which keys it held twice."""

    twice: frozenset = frozenset()


def _object(pairs: list) -> _Object:
    obj = _Object(pairs)
    if len(obj) < len(pairs):
        seen: set = set()
        obj.twice = frozenset(k for k, _ in pairs if k in seen or seen.add(k))
    return obj


def _no_constant(text: str):
    raise ValueError(f"{text} is not JSON")


def _parse_object(line: bytes) -> _Object:
    """One record, parsed as strictly as pyarrow reads it (no NaN), keeping duplicates in view."""
    return json.loads(line, object_pairs_hook=_object, parse_constant=_no_constant)


class JsonDecoder(Decoder):
    """JSON lines: each line one object. Keys match column names case-insensitively,
    decided record by record: a key spelled exactly like the column wins; otherwise
    the one key that matches it in another case is used; two such keys (``"Id"`` and
    ``"ID"``) make the record a ``decode`` dead letter.

    The fast path reads a block with each column's exact name and the spelling the
    block's first record uses (``"Temp"`` for ``temp``). Only rows that could hold a
    third spelling are looked at one by one; what they hold is read again from just
    their declared keys, never re-serializing the record."""

    blank = b" \t\r"

    def __init__(self, schema: pa.Schema, source_name: str, timestamp_format: str = "iso"):
        super().__init__(schema, source_name, timestamp_format)
        self._lower = {f.name.lower(): f.name for f in self.schema}
        self._spelling: dict[str, str] = {}  # declared name → the block's other spelling
        self._exact_options = self._parse_options({})
        self._options = self._exact_options

    def _parse_options(self, spelling: dict[str, str]) -> pjson.ParseOptions:
        fields = list(self.read_schema)
        fields += [pa.field(spelling[f.name], f.type) for f in self.read_schema if f.name in spelling]
        return pjson.ParseOptions(explicit_schema=pa.schema(fields), unexpected_field_behavior="ignore")

    def _first_spelling(self, data: bytes) -> dict[str, str]:
        start = data.lstrip()
        end = start.find(b"\n")
        try:
            record = orjson.loads(start[: end if end >= 0 else len(start)])
        except orjson.JSONDecodeError:
            return {}
        if not isinstance(record, dict):
            return {}
        spelling = {}
        for key in record:
            declared = self._lower.get(key.lower())
            if declared is not None and key != declared:
                spelling[declared] = key
        return spelling

    def _screen(self, lines: _Lines, rejects: _Rejects) -> _Lines:
        """A line that does not start with '{' is no object, and pyarrow must not see it:
        a bare ``null`` line crashes its reader (SIGSEGV, pyarrow 20-22)."""
        raw = np.frombuffer(lines.data, dtype=np.uint8)
        starts = lines.starts[lines.records]
        first = raw[starts] if len(starts) else raw[:0]
        suspects = lines.records[first != ord("{")]
        bad = {}
        for index in suspects:
            line = lines.line(index)
            if line.lstrip(self.blank)[:1] != b"{":
                bad[int(index)] = self._classify(line, _RecordCount(0, 1))
        return self._drop(lines, rejects, bad) if bad else lines

    def decode_block(self, data: bytes, position: Position) -> Decoded:
        spelling = self._first_spelling(data)
        if spelling != self._spelling:
            self._spelling = spelling
            self._options = self._parse_options(spelling) if spelling else self._exact_options
        return super().decode_block(data, position)

    def _read(self, data: bytes, options: pjson.ParseOptions | None = None) -> pa.Table:
        options = options or self._options
        # 1 MiB blocks: pyarrow parses them on its threads (one huge block is one thread);
        # a record longer than that needs a block that holds it whole
        try:
            return self._read_blocks(data, 1 << 20, options)
        except pa.ArrowInvalid as error:
            if "straddl" not in str(error) or len(data) < 1 << 20:
                raise
            return self._read_blocks(data, len(data) + 1, options)

    def _read_blocks(self, data: bytes, block_size: int, options: pjson.ParseOptions) -> pa.Table:
        return pjson.read_json(
            io.BytesIO(data),
            # threads pay off from the second block on; a small micro-batch is parsed inline
            read_options=pjson.ReadOptions(use_threads=len(data) > block_size, block_size=block_size),
            parse_options=options,
        )

    def _as_one_line(self, record: bytes) -> tuple[bytes | None, str | None]:
        """A pretty-printed object (a message) as one line of its declared keys."""
        try:
            value = _parse_object(record)
        except (ValueError, RecursionError) as error:
            return None, f"malformed JSON: {error}"
        if not isinstance(value, dict):
            return None, f"expected a JSON object, got {type(value).__name__}"
        picked, problem = self._pick(value)
        if problem is None:
            try:
                return orjson.dumps(picked), None
            except (TypeError, orjson.JSONEncodeError) as error:
                problem = f"a declared value cannot be read: {error}"
        return None, problem

    def _as_read(self, table: pa.Table) -> pa.Table:
        types = {f.name: f.type for f in self.read_schema}
        names = self.read_schema.names + [self._spelling[n] for n in self.read_schema.names if n in self._spelling]
        for name in names:  # a part read with other spellings lacks these: they are NULL there
            if name not in table.column_names:
                table = table.append_column(pa.field(name, types[self._lower[name.lower()]]), pa.nulls(table.num_rows, types[self._lower[name.lower()]]))
        return table.select(names)

    # -- key spellings -----------------------------------------------------------------

    def _resolve(self, table: pa.Table, records: np.ndarray, lines: _Lines, rejects: _Rejects):
        """Fold the block's other spelling into each column, then look one by one at the
        rows where a spelling the read did not ask for could be hiding."""
        suspects = np.zeros(table.num_rows, dtype=bool)
        lowered = None
        columns = []
        for name in self.read_schema.names:
            exact = table.column(name)
            other = self._spelling.get(name)
            value = exact if other is None else pc.coalesce(exact, table.column(other))
            columns.append(value)
            # rows whose value did not come from the exact spelling could hold a third one
            if not exact.null_count:
                continue
            open_rows = pc.is_null(exact)
            key = b'"' + name.lower().encode() + b'"'
            if lowered is None:
                lowered = lines.data.lower()
            exact_key, other_key = f'"{name}"', f'"{other}"' if other is not None else None
            found = lowered.count(key)
            if other is None and found == lines.data.count(exact_key.encode()):
                continue  # no other spelling anywhere in the block
            if other is not None and found == lines.data.count(other_key.encode()):
                continue  # the block's other spelling is the only one in it
            rows = np.flatnonzero(open_rows.to_numpy(zero_copy_only=False))
            texts = lines.as_array(records[rows])
            found_rows = pc.count_substring(texts, key.decode(), ignore_case=True)
            known = pc.count_substring(texts, exact_key)
            if other is not None:
                # a value read from the other spelling stands only if no other key (the
                # exact one with a null either) names the column in that record
                from_other = pc.count_substring(texts, other_key)
                valued = pc.is_valid(table.column(other).take(pa.array(rows)))
                known = pc.if_else(valued, from_other, pc.add(known, from_other))
            suspects[rows[pc.greater(found_rows, known).to_numpy(zero_copy_only=False)]] = True
        table = pa.table(columns, schema=self.read_schema)
        if not suspects.any():
            return table, records
        return self._reread(table, records, np.flatnonzero(suspects), lines, rejects)

    def _reread(self, table: pa.Table, records: np.ndarray, rows: np.ndarray, lines: _Lines, rejects: _Rejects):
        """Rows whose keys need matching one by one: each record's declared values are
        picked by the rule above and read again; the rows are replaced in place."""
        drop, redo, redo_rows, deep, deep_rows = [], [], [], [], []
        for row in rows:
            line = lines.line(records[row])
            try:
                picked, problem = self._pick(_parse_object(line))
                if problem is None:
                    redo.append(orjson.dumps(picked))
                    redo_rows.append(row)
                    continue
                problem = ("decode", problem)
            except (ValueError, RecursionError, orjson.JSONEncodeError, TypeError):
                # deeper than Python's parser goes, or a number orjson cannot write again:
                # pyarrow reads the record's spellings
                replacement, problem = self._read_spellings(line)
                if problem is None:
                    deep.append(replacement)
                    deep_rows.append(row)
                    continue
            rejects.add(records[row], *problem)
            drop.append(row)
        replacement, bad = self._read_picked(redo)
        failed = {i for i, _ in bad}
        for i, error in bad:
            rejects.add(records[redo_rows[i]], *self._classify(lines.line(records[redo_rows[i]]), error))
            drop.append(redo_rows[i])
        replaced = [r for i, r in enumerate(redo_rows) if i not in failed] + deep_rows
        order = np.arange(table.num_rows)
        order[replaced] = table.num_rows + np.arange(len(replaced))
        keep = np.ones(table.num_rows, dtype=bool)
        keep[drop] = False
        merged = pa.concat_tables([table, replacement, *deep]).take(pa.array(order[keep]))
        return merged, records[keep]

    def _read_spellings(self, line: bytes) -> tuple[pa.Table | None, tuple[str, str] | None]:
        """One record too deep for orjson: read every spelling of a declared key that
        occurs in it as its own column (pyarrow reads any depth, top-level keys only);
        the exact spelling wins, else the one other spelling with a value."""
        pattern = b'"(' + b"|".join(re.escape(n.encode()) for n in self._lower) + b')"'
        spellings = {m.group(1).decode() for m in re.finditer(pattern, line, re.IGNORECASE)}
        types = {f.name: f.type for f in self.read_schema}
        fields = [pa.field(k, types[self._lower[k.lower()]]) for k in sorted(spellings)]
        options = pjson.ParseOptions(explicit_schema=pa.schema(fields), unexpected_field_behavior="ignore")
        try:
            read = self._read(line, options)
        except _READ_ERRORS as error:
            return None, self._classify(line, error)
        columns = []
        for name in self.read_schema.names:
            found = [k for k in sorted(spellings) if self._lower[k.lower()] == name and read.column(k)[0].is_valid]
            if name not in found and len(found) > 1:
                return None, ("decode", f"keys {' and '.join(repr(k) for k in found)} both name column '{name}'")
            chosen = name if name in found else (found[0] if found else None)
            columns.append(read.column(chosen) if chosen else pa.nulls(1, types[name]))
        return pa.table(columns, schema=self.read_schema), None

    def _pick(self, record) -> tuple[dict, str | None]:
        """The declared values of one record, by the rule above, or why there are none."""
        if not isinstance(record, dict):
            raise ValueError("not an object")
        picked: dict = {}
        spelled: dict[str, list[str]] = {}
        for key, value in record.items():
            name = self._lower.get(key.lower())
            if name is None:
                continue
            if key in getattr(record, "twice", ()):
                return picked, f"key '{key}' appears twice in the object"
            spelled.setdefault(name, []).append(key)
            picked[name] = record[name] if name in record else value
        for name, keys in spelled.items():
            if name not in record and len(keys) > 1:
                return picked, f"keys {' and '.join(repr(k) for k in keys)} both name column '{name}'"
        return picked, None

    def _read_picked(self, redo: list[bytes]) -> tuple[pa.Table, list[tuple[int, Exception]]]:
        def read(start: int, end: int) -> pa.Table:
            return self._read(b"\n".join(redo[start:end]), self._exact_options)

        good, bad = isolate_failures(len(redo), read)
        tables = [t.select(self.read_schema.names) for _, _, t in good]
        return (pa.concat_tables(tables) if tables else self.read_schema.empty_table()), bad

    def _classify(self, record: bytes, error: Exception) -> tuple[str, str]:
        if isinstance(error, _RecordCount) and error.rows > 1:
            return "decode", f"{error.rows} JSON values on one line: a line must hold one object"
        twice = _JSON_TWICE.search(str(error))
        if twice:
            return "decode", f"key '{twice.group(1)}' appears twice in the object"
        try:
            value = orjson.loads(record)
        except orjson.JSONDecodeError as decode_error:
            deep = "depth" in str(decode_error) or "ecursion" in str(decode_error)
            if deep and (_JSON_CHANGED.search(str(error)) or "Failed to convert JSON" in str(error)):
                return "type", _arrow_message(error)  # pyarrow reads any depth: a value does not fit
            return "decode", f"malformed JSON: {decode_error}"
        if not isinstance(value, dict):
            return "decode", f"expected a JSON object, got {type(value).__name__}"
        return "type", _arrow_message(error)


class CsvDecoder(Decoder):
    """CSV without a header line in the block: ``columns`` gives the field order.

    One line is one record (positions are ``file:line``). pyarrow would let a quote
    left open run on into the following lines, swallowing them into one value, so a
    block with a line whose quotes do not pair up takes the line-by-line path, where
    that line alone is rejected (``decode``) — as is a line with the wrong number of
    fields. Only an empty unquoted field is NULL (``null_values`` adds spellings);
    ``NaN`` in a DOUBLE is NaN, text such as ``NA`` stays text; ``0x10`` is no integer.
    """

    def __init__(
        self,
        schema: pa.Schema,
        source_name: str,
        columns: list[str] | None = None,
        delimiter: str = ",",
        timestamp_format: str = "iso",
        null_values: Sequence[str] = (),
    ):
        super().__init__(schema, source_name, timestamp_format)
        self.columns = columns or self.schema.names
        self._parse_options = pcsv.ParseOptions(delimiter=delimiter)
        self._read_options = pcsv.ReadOptions(column_names=self.columns, use_threads=False, block_size=1 << 26)
        # pyarrow reads 0x10 as 16 into an integer column: integers are read as text, and
        # _convert refuses hexadecimal before casting
        types = {f.name: pa.string() if pa.types.is_integer(f.type) else f.type for f in self.read_schema}
        self._convert_options = pcsv.ConvertOptions(
            column_types=types,
            include_columns=list(types),  # every declared column, in declared order
            include_missing_columns=True,
            null_values=["", *null_values],
            # Postgres rules: an empty unquoted field is NULL, a quoted "" an empty string
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        )

    def _read(self, data: bytes) -> pa.Table:
        if b'"' in data and _has_open_quote(data):
            raise pa.ArrowInvalid("unterminated quoted field")
        if not data.endswith(b"\n"):
            # pyarrow reads an empty last field at the very end of the data as quoted when
            # the field before it was: `0,"x",` gave '' (not NULL) for the last column
            data += b"\n"
        return pcsv.read_csv(
            io.BytesIO(data),
            read_options=self._read_options,
            parse_options=self._parse_options,
            convert_options=self._convert_options,
        )

    def _classify(self, record: bytes, error: Exception) -> tuple[str, str]:
        if isinstance(error, _RecordCount):
            return "decode", f"the line holds {error.rows} records (a carriage return inside it?)"
        message = _arrow_message(error)
        fields = _FIELD_COUNT.search(message)
        if fields:
            return "decode", f"expected {fields.group(1)} fields, got {fields.group(2)}"
        if message.startswith("unterminated quoted field"):
            return "decode", "unterminated quoted field (a quote opened on this line is not closed on it)"
        conversion = _CSV_CONVERSION.search(message)
        if conversion:
            index, arrow_type, value = int(conversion.group(1)), conversion.group(2), conversion.group(3)
            column = self.columns[index] if index < len(self.columns) else f"#{index}"
            return "type", f"column '{column}': invalid value '{value}' for {arrow_type}"
        return "type", message


_FIELD_COUNT = re.compile(r"Expected (\d+) columns, got (\d+)")
_CSV_CONVERSION = re.compile(r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to ([^:]+): invalid value '(.*)'$")


def _has_open_quote(data: bytes) -> bool:
    """True if some line of ``data`` has an odd number of '"' (``""`` escapes pair up)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    quotes = np.cumsum(raw == ord('"'), dtype=np.int64)
    ends = np.flatnonzero(raw == ord("\n"))
    at_line_end = np.append(quotes[ends], quotes[-1])
    per_line = np.diff(at_line_end, prepend=0)
    return bool((per_line % 2).any())
