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

from sqlstream.connectors.decode.block import Decoded, Decoder, Position
from sqlstream.connectors.decode.conform import conform_table
from sqlstream.connectors.decode.csv_lines import CsvDecoder
from sqlstream.connectors.decode.json_lines import JsonDecoder

__all__ = ["Decoder", "Decoded", "JsonDecoder", "CsvDecoder", "conform_table", "Position"]
