"""The shared part of every line decoder: lines and records, UTF-8, bisection of a
block that fails, type conversion and NOT NULL checks, and the dead letters with the
record each came from."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.connectors.dead_letters import DeadLetter
from sqlstream.connectors.decode.conform import CONVERT_ERRORS, READ_ERRORS, conform_table, read_type
from sqlstream.failure_isolation import isolate_failures

__all__ = ["Decoder", "Decoded", "Lines", "Position", "RecordCount", "Rejects", "arrow_message", "utf8_error", "JSON_CHANGED",
           "join_ranges"]

Position = Callable[[int], str]  # record index in the block → "file:line" or "subject#seq"

@dataclass
class Decoded:
    """A decoded block: rows, the record each row came from, and the rejected records."""

    table: pa.Table
    records: np.ndarray  # int64: the record (line) index in the block of each row
    dead: list[DeadLetter]
    rejected: np.ndarray  # int64: the record index of each dead letter, in the same order


class Lines:
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


class RecordCount(Exception):
    """A stretch of lines gave more (or fewer) rows than it holds records."""

    def __init__(self, rows: int, records: int):
        super().__init__(f"{rows} rows from {records} records")
        self.rows = rows


class Rejects:
    """Dead letters of one block, with the record index of each."""

    def __init__(self, decoder: "Decoder", lines: Lines, position: Position):
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


def utf8_error(line: bytes) -> str | None:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"not valid UTF-8: byte 0x{line[error.start]:02x} at column {error.start + 1}"
    return None


class Decoder:
    """Decodes blocks of records into tables of the declared schema."""

    blank = b"\r"  # bytes a line may hold and still be no record (an empty line)

    def __init__(self, schema: pa.Schema, source_name: str, timestamp_format: str = "iso"):
        self.schema = schema
        self.not_null = [f.name for f in self.schema if not f.nullable]
        self.source_name = source_name
        self.timestamp_format = timestamp_format
        self.read_schema = pa.schema(
            [pa.field(f.name, read_type(f.type, timestamp_format)) for f in self.schema]
        )

    # -- to implement ------------------------------------------------------------------

    def _read(self, data: bytes) -> pa.Table:
        """Parse ``data`` (whole lines) into a table of ``read_schema``."""
        raise NotImplementedError

    def _classify(self, record: bytes, error: Exception) -> tuple[str, str]:
        raise NotImplementedError

    def _resolve(self, table: pa.Table, records: np.ndarray, lines: Lines, rejects: Rejects):
        """Hook after reading, before the types are checked (JSON matches key spellings)."""
        return table, records

    # -- shared --------------------------------------------------------------------------

    def decode(self, data: bytes, position: Position) -> tuple[pa.Table, list[DeadLetter]]:
        """Decode a block of newline-separated records."""
        decoded = self.decode_block(data, position)
        return decoded.table, decoded.dead

    def decode_block(self, data: bytes, position: Position) -> Decoded:
        """Decode a block of newline-separated records; record ``i`` is line ``i``."""
        lines = Lines(data, self.blank)
        rejects = Rejects(self, lines, position)
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
        error = utf8_error(record)
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
        if len(parts) == 1 and not parts[0].dead and len(parts[0].records) == len(records):
            return parts[0]  # every record one row (the common case): nothing to join or account
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
        if len(parts) > 1:  # records decoded on their own go back to their place
            order = np.argsort(rows, kind="stable")
            table, rows = table.take(pa.array(order)), rows[order]
        return Decoded(table, rows, dead, rejected)

    def _drop_invalid_utf8(self, lines: Lines, rejects: Rejects) -> Lines:
        """Dead-letter the lines that are not UTF-8; they become empty lines (no record)."""
        bad = {}
        for index in lines.records:
            error = utf8_error(lines.line(index))
            if error:
                bad[int(index)] = ("decode", error)
        return self._drop(lines, rejects, bad)

    def _drop(self, lines: Lines, rejects: Rejects, bad: dict[int, tuple[str, str]]) -> Lines:
        """Dead-letter the lines ``bad`` names (index → reason, detail); they become empty."""
        for index, (reason, detail) in bad.items():
            rejects.add(index, reason, detail)
        pieces = [b"" if index in bad else lines.line(index) for index in range(len(lines.starts))]
        return Lines(b"\n".join(pieces), self.blank)

    def _screen(self, lines: Lines, rejects: Rejects) -> Lines:
        """Hook before the block is parsed: lines the parser must never see."""
        return lines

    def _read_records(self, lines: Lines, rejects: Rejects) -> tuple[pa.Table, np.ndarray]:
        records = lines.records
        try:
            table = self._read(lines.data)
            if table.num_rows == len(records):
                return table, records
        except READ_ERRORS:
            pass

        def attempt(start: int, end: int) -> pa.Table:
            part = self._read(lines.span(records[start], records[end - 1]))
            if part.num_rows != end - start:
                raise RecordCount(part.num_rows, end - start)
            return part

        good, bad = isolate_failures(len(records), attempt)
        for row, error in bad:
            index = records[row]
            rejects.add(index, *self._classify(lines.line(index), error))
        return join_ranges(good, records, self._empty_read())

    def _empty_read(self) -> pa.Table:
        """What :meth:`_read` gives for no records (its columns, no rows)."""
        return self.read_schema.empty_table()

    def _conform(self, table: pa.Table) -> pa.Table:
        return conform_table(table, self.schema, self.timestamp_format, check_utf8=False)  # bytes checked whole

    def _conform_records(self, table: pa.Table, records: np.ndarray, rejects: Rejects) -> tuple[pa.Table, np.ndarray]:
        try:
            return self._conform(table), records
        except CONVERT_ERRORS:
            pass
        good, bad = isolate_failures(table.num_rows, lambda s, e: self._conform(table.slice(s, e - s)))
        for row, error in bad:
            rejects.add(records[row], "type", arrow_message(error))  # (UTF-8 was checked on the bytes)
        return join_ranges(good, records, self._conform(self.read_schema.empty_table()))

    def _check_not_null(self, table: pa.Table, records: np.ndarray, rejects: Rejects) -> tuple[pa.Table, np.ndarray]:
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


def join_ranges(good: list, records: np.ndarray, empty: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """The tables of the ranges that succeeded (``isolate_failures``), with their records."""
    if not good:
        return empty, records[:0]
    return pa.concat_tables([t for _, _, t in good]), np.concatenate([records[s:e] for s, e, _ in good])


JSON_CHANGED = re.compile(r"Column\(/([^)]*)\) changed from (\w+) to (\w+)( in row \d+)?")


def arrow_message(error: Exception) -> str:
    text = str(error).strip()
    for prefix in ("JSON parse error: ", "CSV parse error: "):
        text = text.replace(prefix, "")
    text = text.splitlines()[0] if text else type(error).__name__
    changed = JSON_CHANGED.search(text)
    if changed:
        column, declared, got = changed.group(1, 2, 3)
        return f"column '{column}': expected a {declared}, got a {got}"
    return text
