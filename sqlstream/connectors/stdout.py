"""``connector = 'stdout'``: rows to standard output as JSON lines or a text table.

The CLI may hand in a richer renderer (live tables on a terminal) through
``RunContext.stdout_renderer``: a callable ``(sink_name, schema, format)
-> SinkWriter``. Without one, rows are printed plainly.
"""

from __future__ import annotations

import datetime
import re
import sys
from typing import TextIO

import pyarrow as pa

from sqlstream.connectors.base import RunContext, SinkConnector, SinkWriter
from sqlstream.connectors.encode import encode_json_lines
from sqlstream.connectors.options import OptionSpec
from sqlstream.connectors.registry import register_sink

__all__ = ["StdoutSink", "PlainTableWriter", "JsonLinesWriter", "format_cell"]


class JsonLinesWriter(SinkWriter):
    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self.stream.write(encode_json_lines(batch).decode("utf-8"))
            self.stream.flush()


class PlainTableWriter(SinkWriter):
    """Aligned text columns; the header is printed once, widths grow as needed."""

    def __init__(self, schema: pa.Schema, stream: TextIO | None = None):
        self.stream = stream or sys.stdout
        self.names = schema.names
        self.widths = [max(4, len(n)) for n in self.names]
        self._header = False

    def write(self, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        columns = [[format_cell(v) for v in batch.column(i).to_pylist()] for i in range(batch.num_columns)]
        for i, cells in enumerate(columns):
            self.widths[i] = max(self.widths[i], *(len(c) for c in cells))
        out = []
        if not self._header:
            out.append(" | ".join(n.ljust(w) for n, w in zip(self.names, self.widths)))
            out.append("-+-".join("-" * w for w in self.widths))
            self._header = True
        for row in zip(*columns):
            out.append(" | ".join(c.ljust(w) for c, w in zip(row, self.widths)))
        self.stream.write("\n".join(out) + "\n")
        self.stream.flush()


def format_cell(value) -> str:
    """A value as a table cell: NULL for None, 6 significant digits for floats, a
    timestamp as JSON and the REPL's text views write it (``2024-01-01 00:00:05.8``, no
    trailing zeros in the fraction)."""
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (datetime.datetime, datetime.time)):
        text = value.isoformat(sep=" ") if isinstance(value, datetime.datetime) else value.isoformat()
        return _TRAILING_FRACTION.sub(lambda m: m.group(1).rstrip("0").rstrip("."), text)
    return str(value)


_TRAILING_FRACTION = re.compile(r"(\.\d+)(?=$|[+-]\d\d:)")


@register_sink
class StdoutSink(SinkConnector):
    name = "stdout"
    options = (OptionSpec("format", "choice", default=None, choices=("table", "json"), doc="table | json"),)

    def open(self, schema: pa.Schema, ctx: RunContext) -> SinkWriter:
        fmt = self.config["format"] or ("table" if sys.stdout.isatty() else "json")
        renderer = ctx.stdout_renderer
        if renderer is not None:
            return renderer(self.sink_name, schema, fmt)
        return PlainTableWriter(schema) if fmt == "table" else JsonLinesWriter()
