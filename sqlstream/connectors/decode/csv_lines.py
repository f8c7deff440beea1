"""CSV lines: one line one record, Postgres NULL rules, fields in declared order."""

from __future__ import annotations

import io
import re
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from sqlstream.connectors.decode.block import Decoder, RecordCount, arrow_message

__all__ = ["CsvDecoder"]

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
        # the conversion refuses hexadecimal before casting
        self.read_schema = pa.schema(
            [pa.field(f.name, pa.string()) if pa.types.is_integer(f.type) else f for f in self.read_schema]
        )
        types = {f.name: f.type for f in self.read_schema}
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
        if isinstance(error, RecordCount):
            return "decode", f"the line holds {error.rows} records (a carriage return inside it?)"
        message = arrow_message(error)
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
    quotes = np.flatnonzero(raw == ord('"'))  # positions: a few per line, not one count per byte
    ends = np.flatnonzero(raw == ord("\n"))  # (a running count per byte took 8 bytes a byte: 370 MB
    at_line_end = np.append(np.searchsorted(quotes, ends), len(quotes))  # for a 23 MB block)
    per_line = np.diff(at_line_end, prepend=0)
    return bool((per_line % 2).any())
