"""Vectorized record decoding (JSON lines, CSV, Arrow) against a declared schema.

The fast path decodes a whole block with pyarrow. A block that fails is bisected
(:func:`~sqlstream.failure_isolation.isolate_failures`) so that exactly the bad
records become dead letters — ``decode`` (not JSON/CSV), ``type`` (valid JSON whose
value does not fit the column) or ``null`` (NULL in a NOT NULL column) — and every
good record is kept.
"""

from __future__ import annotations

import io
import re
from typing import Callable, Sequence

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson

from sqlstream.connectors.base import METADATA_COLUMNS, DeadLetter
from sqlstream.failure_isolation import isolate_failures

__all__ = ["Decoder", "JsonDecoder", "CsvDecoder", "conform_table", "Position"]

Position = Callable[[int], str]  # line/record index in the block → "file:line" or "subject#seq"

_EPOCH_SCALE_US = {"epoch_s": 1_000_000, "epoch_ms": 1_000, "epoch_us": 1}


def _read_type(declared: pa.DataType, timestamp_format: str) -> pa.DataType:
    """The type pyarrow's readers can produce for a declared column type."""
    if pa.types.is_timestamp(declared):
        if timestamp_format == "epoch_s":
            return pa.float64()
        if timestamp_format in _EPOCH_SCALE_US:
            return pa.int64()
        return pa.timestamp(declared.unit)
    if pa.types.is_fixed_size_list(declared):
        return pa.list_(_read_type(declared.value_type, timestamp_format))
    if pa.types.is_list(declared):
        return pa.list_(_read_type(declared.value_type, timestamp_format))
    if pa.types.is_struct(declared):
        return pa.struct([pa.field(f.name, _read_type(f.type, timestamp_format)) for f in declared])
    if pa.types.is_date(declared) or pa.types.is_time(declared):
        return pa.string()
    return declared


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
    table: pa.Table, schema: pa.Schema, timestamp_format: str = "iso", names: dict[str, str] | None = None
) -> pa.Table:
    """Cast ``table``'s columns to the declared ``schema`` (by name; missing → NULL).

    ``names`` maps declared name → name in ``table`` where they differ.
    """
    names = names or {}
    columns = []
    for field in schema:
        source_name = names.get(field.name, field.name)
        if source_name in table.column_names:
            chunked = table.column(source_name)
            arrays = [_convert(chunk, field.type, timestamp_format) for chunk in chunked.chunks]
            columns.append(pa.chunked_array(arrays, type=field.type))
        else:
            columns.append(pa.chunked_array([pa.nulls(table.num_rows, field.type)], type=field.type))
    return pa.Table.from_arrays(columns, schema=pa.schema([f.with_nullable(True) for f in schema]))


class Decoder:
    """Decodes blocks of records into batches of the declared schema."""

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
        raise NotImplementedError

    def _classify(self, record: bytes, error: Exception) -> tuple[str, str]:
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------

    def decode(self, data: bytes, position: Position) -> tuple[pa.Table, list[DeadLetter]]:
        """Decode a block of newline-separated records."""
        dead: list[DeadLetter] = []
        try:
            table = self._read(data)
            lines = None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, ValueError):
            lines = self._records(data)
            table = self._decode_records(lines, position, dead)
        try:
            table = self._conform(table)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OverflowError):
            lines = lines if lines is not None else self._records(data)
            table = self._conform_rows(table, lines, position, dead)
        if self.not_null:
            table, null_rows = self._drop_nulls(table)
            if null_rows:
                lines = lines if lines is not None else self._records(data)
                for row, column in null_rows:
                    index, raw = lines[row]
                    dead.append(self._dead("null", f"column '{column}' is NULL but declared NOT NULL", raw, position(index)))
        return table, dead

    def decode_records(self, records: Sequence[bytes], position: Position) -> tuple[pa.Table, list[DeadLetter]]:
        """Decode individually framed records (e.g. one NATS message each)."""
        return self.decode(b"\n".join(r.replace(b"\n", b" ").replace(b"\r", b" ") for r in records), position)

    def _records(self, data: bytes) -> list[tuple[int, bytes]]:
        return [(i, line) for i, line in enumerate(data.split(b"\n")) if line.strip()]

    def _decode_records(self, lines: list[tuple[int, bytes]], position: Position, dead: list[DeadLetter]) -> pa.Table:
        good, bad = isolate_failures(len(lines), lambda s, e: self._read(b"\n".join(r for _, r in lines[s:e])))
        for row, error in bad:
            index, raw = lines[row]
            reason, detail = self._classify(raw, error)
            dead.append(self._dead(reason, detail, raw, position(index)))
        kept = {row for start, end, _ in good for row in range(start, end)}
        lines[:] = [line for row, line in enumerate(lines) if row in kept]
        tables = [t for _, _, t in good]
        if not tables:
            return self.read_schema.empty_table()
        return pa.concat_tables([t.select(self.read_schema.names).cast(self.read_schema) for t in tables])

    def _conform(self, table: pa.Table) -> pa.Table:
        return conform_table(table, self.schema, self.timestamp_format)

    def _conform_rows(
        self, table: pa.Table, lines: list[tuple[int, bytes]], position: Position, dead: list[DeadLetter]
    ) -> pa.Table:
        good, bad = isolate_failures(table.num_rows, lambda s, e: self._conform(table.slice(s, e - s)))
        for row, error in bad:
            index, raw = lines[row]
            dead.append(self._dead("type", _arrow_message(error), raw, position(index)))
        bad_rows = {row for row, _ in bad}
        lines[:] = [line for row, line in enumerate(lines) if row not in bad_rows]
        tables = [t for _, _, t in good]
        return pa.concat_tables(tables) if tables else self._conform(self.read_schema.empty_table())

    def _drop_nulls(self, table: pa.Table) -> tuple[pa.Table, list[tuple[int, str]]]:
        bad_mask = None
        first_column: dict[int, str] = {}
        for name in self.not_null:
            nulls = pc.is_null(table.column(name))
            if nulls.null_count == 0 and not pc.any(nulls).as_py():
                continue
            for row in pc.indices_nonzero(nulls).to_pylist():
                first_column.setdefault(row, name)
            bad_mask = nulls if bad_mask is None else pc.or_(bad_mask, nulls)
        if bad_mask is None:
            return table, []
        return table.filter(pc.invert(bad_mask)), sorted(first_column.items())

    def _dead(self, reason: str, detail: str, raw: bytes, position: str) -> DeadLetter:
        # the record as it was, without the line break (\n was split off; \r of a CRLF file too)
        return DeadLetter(self.source_name, reason, detail, raw.rstrip(b"\r").decode("utf-8", "replace"), position)


_JSON_CHANGED = re.compile(r"Column\(/([^)]*)\) changed from (\w+) to (\w+)( in row \d+)?")


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


class JsonDecoder(Decoder):
    """JSON lines. Keys match column names case-insensitively.

    The fast path reads a block with the key spelling of its first record. A block in
    which some key appears in another spelling too (``"Temp"`` here, ``"temp"`` there)
    is first rewritten record by record with the keys folded to the declared names,
    so no value is lost to a spelling and results do not depend on the block size."""

    def __init__(self, schema: pa.Schema, source_name: str, timestamp_format: str = "iso"):
        super().__init__(schema, source_name, timestamp_format)
        self._lower = {f.name.lower(): f.name for f in self.schema}
        self._spelling: dict[str, str] = {}  # declared name → key spelling in the input
        self._options = self._parse_options()

    def _parse_options(self) -> pjson.ParseOptions:
        fields = [
            pa.field(self._spelling.get(f.name, f.name), f.type) for f in self.read_schema
        ]
        return pjson.ParseOptions(explicit_schema=pa.schema(fields), unexpected_field_behavior="ignore")

    def _first_spelling(self, data: bytes) -> dict[str, str]:
        start = data.lstrip()
        end = start.find(b"\n")
        first = start[: end if end >= 0 else len(start)]
        try:
            record = orjson.loads(first)
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

    def _consistent(self, data: bytes, spelling: dict[str, str], columns: list[str]) -> bool:
        """True when every key of ``columns`` in ``data`` is spelled as in ``spelling``."""
        lowered = data.lower()
        for name in columns:
            spelled = spelling.get(name, name).encode()
            if lowered.count(b'"' + spelled.lower() + b'"') != data.count(b'"' + spelled + b'"'):
                return False
        return True

    def _fold_keys(self, data: bytes) -> bytes:
        """Rewrite each record with its keys spelled as the declared columns."""
        lines = []
        for line in data.split(b"\n"):
            try:
                record = orjson.loads(line) if line.strip() else None
            except orjson.JSONDecodeError:
                record = None
            if isinstance(record, dict):
                line = orjson.dumps({self._lower.get(k.lower(), k): v for k, v in record.items()})
            lines.append(line)
        return b"\n".join(lines)

    def decode(self, data: bytes, position: Position) -> tuple[pa.Table, list[DeadLetter]]:
        self._use(self._first_spelling(data))
        table, dead = super().decode(data, position)
        # a key spelled another way in some record reads as NULL: only columns with NULLs
        # (or rows rejected for a NULL) can have lost a value, so only those are checked
        suspects = [f.name for f in self.schema if table.column(f.name).null_count]
        if any(d.reason == "null" for d in dead):
            suspects = [f.name for f in self.schema]
        if suspects and not self._consistent(data, self._spelling, suspects):
            self._use({})
            table, dead = super().decode(self._fold_keys(data), position)
        return table, dead

    def _use(self, spelling: dict[str, str]) -> None:
        if spelling != self._spelling:
            self._spelling = spelling
            self._options = self._parse_options()

    def _read(self, data: bytes) -> pa.Table:
        # 1 MiB blocks: pyarrow parses them on its threads (one huge block is one thread);
        # a record longer than that needs a block that holds it whole
        try:
            table = self._read_blocks(data, 1 << 20)
        except pa.ArrowInvalid as error:
            if "straddl" not in str(error) or len(data) < 1 << 20:
                raise
            table = self._read_blocks(data, len(data) + 1)
        if self._spelling:
            reverse = {v: k for k, v in self._spelling.items()}
            table = table.rename_columns([reverse.get(n, n) for n in table.column_names])
        return table

    def _read_blocks(self, data: bytes, block_size: int) -> pa.Table:
        return pjson.read_json(
            io.BytesIO(data),
            # threads pay off from the second block on; a small micro-batch is parsed inline
            read_options=pjson.ReadOptions(use_threads=len(data) > block_size, block_size=block_size),
            parse_options=self._options,
        )

    def _classify(self, record: bytes, error: Exception) -> tuple[str, str]:
        try:
            value = orjson.loads(record)
        except orjson.JSONDecodeError as decode_error:
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
    fields.
    """

    def __init__(
        self,
        schema: pa.Schema,
        source_name: str,
        columns: list[str] | None = None,
        delimiter: str = ",",
        timestamp_format: str = "iso",
    ):
        super().__init__(schema, source_name, timestamp_format)
        self.columns = columns or self.schema.names
        types = {f.name: f.type for f in self.read_schema}
        self._convert_options = pcsv.ConvertOptions(
            column_types=types,
            include_columns=list(types),  # every declared column, in declared order
            include_missing_columns=True,
            timestamp_parsers=[pcsv.ISO8601],
            # Postgres rules: an empty unquoted field is NULL, a quoted "" an empty string
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        )
        self._parse_options = pcsv.ParseOptions(delimiter=delimiter)
        self._read_options = pcsv.ReadOptions(column_names=self.columns, use_threads=False, block_size=1 << 26)

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
