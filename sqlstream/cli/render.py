"""Terminal rendering for ``sqlstream run`` and the REPL: rich tables, updating results
drawn in place, and rows as text (aligned, JSON lines or CSV).

Only ``cli/`` imports rich; the REPL's result views are in :mod:`sqlstream.cli.result_views`
and the status lines in :mod:`sqlstream.cli.progress`.
"""

from __future__ import annotations

import io
import sys
import time
from typing import Callable, TextIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
from rich.console import Console
from rich.live import Live
from rich.table import Table

from sqlstream.changelog import ArrowChangelogTable
from sqlstream.connectors.base import SinkWriter
from sqlstream.connectors.encode import encode_json_lines
from sqlstream.connectors.stdout import JsonLinesWriter, PlainTableWriter, format_cell
from sqlstream.hidden import OP_COLUMN, drop_op

__all__ = [
    "install_renderer",
    "current_stdout_renderer",
    "LiveTableWriter",
    "rich_table",
    "text_columns",
    "display_name",
    "current_table",
    "RowText",
    "render_table",
]


def rich_table(columns: list[str], rows: list[dict], title: str | None = None, limit: int | None = None) -> Table:
    table = Table(title=title, show_lines=False, header_style="bold")
    for name in columns:
        table.add_column(name)
    shown = rows if limit is None else rows[:limit]
    for row in shown:
        table.add_row(*(format_cell(row.get(c)) for c in columns))
    if limit is not None and len(rows) > limit:
        table.caption = f"{len(rows) - limit} more rows"
    return table


def current_table(columns: list[str]) -> ArrowChangelogTable:
    """An updating result's current table; rows Arrow cannot sort come in the order of their cells' text."""
    return ArrowChangelogTable(columns, fallback_order=lambda row: tuple(format_cell(row.get(c)) for c in columns))


class LiveTableWriter(SinkWriter):
    """An updating result shown as its current table, redrawn in place."""

    def __init__(self, schema: pa.Schema, console: Console | None = None, title: str | None = None):
        self.columns = drop_op(schema).names
        self.table = current_table(self.columns)
        self.console = console or Console()
        self.title = title
        self._live: Live | None = None
        self._last = 0.0

    def _render(self) -> Table:
        limit = max(10, self.console.size.height - 6)
        table = rich_table(self.columns, self.table.rows(limit), self.title)
        if len(self.table) > limit:
            table.caption = f"{len(self.table) - limit} more rows"
        return table

    def write(self, batch: pa.RecordBatch) -> None:
        self.table.apply_batch(batch)
        if self._live is None:
            self._live = Live(self._render(), console=self.console, auto_refresh=False, transient=False)
            self._live.start()
        now = time.monotonic()
        if now - self._last > 0.1:
            self._last = now
            self._live.update(self._render(), refresh=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.update(self._render(), refresh=True)
            self._live.stop()
            self._live = None


def install_renderer(session, before_write: Callable[[], None] | None = None) -> None:
    """Bare SELECTs on a terminal: live tables for updating results, aligned rows else;
    ``before_write`` runs before each write of rows to stdout (it clears the progress line)."""
    stream = _ClearingStdout(before_write) if before_write is not None else None

    def factory(sink_name: str, schema: pa.Schema, fmt: str) -> SinkWriter:
        if fmt == "json" or not sys.stdout.isatty():
            return JsonLinesWriter(stream)
        if OP_COLUMN in schema.names:
            return LiveTableWriter(schema)
        return PlainTableWriter(schema, stream)

    session.stdout_renderer = factory


class _ClearingStdout:
    """``sys.stdout``, calling ``before_write`` first (rows land where the progress line was)."""

    def __init__(self, before_write: Callable[[], None]):
        self.before_write = before_write

    def write(self, text: str) -> int:
        self.before_write()
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


class _CurrentStdout:
    """Writes to whatever ``sys.stdout`` is at the time (prompt_toolkit swaps it at the prompt)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def current_stdout_renderer():
    """Background ``stdout`` sinks print JSON lines (or aligned rows) to whatever
    ``sys.stdout`` is when they write, so that at the prompt they appear above it."""

    def factory(sink_name: str, schema: pa.Schema, fmt: str) -> SinkWriter:
        if fmt == "table":
            return PlainTableWriter(schema, _CurrentStdout())
        return JsonLinesWriter(_CurrentStdout())

    return factory


def text_columns(batch: pa.RecordBatch) -> list[pa.Array]:
    """Each column as display strings (NULL for nulls), cast by Arrow where it can."""
    out = []
    for column in batch.columns:
        try:
            strings = pc.cast(column, pa.string())
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
            strings = pa.array([None if v is None else str(v) for v in column.to_pylist()], pa.string())
        if pa.types.is_timestamp(column.type):  # 2024-01-01 00:00:05.8, not ...:05.800000
            strings = pc.replace_substring_regex(strings, pattern=r"(\.\d*[1-9])0+$", replacement=r"\1")
            strings = pc.replace_substring_regex(strings, pattern=r"\.0+$", replacement="")
        out.append(pc.fill_null(strings, "NULL"))
    return out


class RowText:
    """Rows as text in one output format. ``table`` is aligned columns whose header is
    written once and whose widths only grow; ``json`` is JSON lines; ``csv`` has one header;
    ``expanded`` (``\\x``) is one ``column | value`` line per column, record by record."""

    def __init__(self, fmt: str, columns: list[str]):
        self.fmt = fmt
        self.columns = columns
        self.widths = [max(4, len(display_name(c))) for c in columns]
        self._started = False
        self._records = 0

    def rows(self, batch: pa.RecordBatch) -> str:
        if self.fmt == "json":
            return encode_json_lines(batch).decode("utf-8")
        if self.fmt == "csv":
            return self._csv(batch)
        if self.fmt == "expanded":
            return self._expanded(batch)
        return self._aligned(batch)

    def _expanded(self, batch: pa.RecordBatch) -> str:
        names = [display_name(c) for c in self.columns]
        width = max((len(n) for n in names), default=0)
        cells = [c.to_pylist() for c in text_columns(batch)]
        lines = []
        for row in range(batch.num_rows):
            self._records += 1
            lines.append(f"-[ RECORD {self._records} ]".ljust(width + 3, "-") + "-" * 8)
            lines += [f"{name.ljust(width)} | {column[row]}".rstrip() for name, column in zip(names, cells)]
        return "\n".join(lines) + "\n" if lines else ""

    def _csv(self, batch: pa.RecordBatch) -> str:
        columns = []
        for column in batch.columns:
            nested = pa.types.is_nested(column.type) or pa.types.is_map(column.type)
            columns.append(text_columns(pa.record_batch([column], names=["c"]))[0] if nested else column)
        batch = pa.RecordBatch.from_arrays(columns, names=self.columns)
        buffer = io.BytesIO()
        pcsv.write_csv(batch, buffer, pcsv.WriteOptions(include_header=not self._started))
        self._started = True
        return buffer.getvalue().decode("utf-8")

    def _aligned(self, batch: pa.RecordBatch) -> str:
        cells = text_columns(batch)
        for i, strings in enumerate(cells):
            if len(strings):
                self.widths[i] = max(self.widths[i], pc.max(pc.utf8_length(strings)).as_py() or 0)
        lines = []
        if not self._started:
            self._started = True
            lines.append(" | ".join(display_name(n).ljust(w) for n, w in zip(self.columns, self.widths)).rstrip())
            lines.append("-+-".join("-" * w for w in self.widths))
        if batch.num_rows:
            padded = [pc.utf8_rpad(c, width=w) for c, w in zip(cells, self.widths)]
            joined = pc.binary_join_element_wise(*padded, " | ") if len(padded) > 1 else padded[0]
            lines.extend(pc.utf8_rtrim_whitespace(joined).to_pylist())
        return "\n".join(lines) + "\n" if lines else ""

    def header_only(self) -> str:
        """What an empty result prints (the table header or the CSV header)."""
        if self._started or self.fmt in ("json", "expanded"):
            return ""
        if self.fmt == "csv":
            self._started = True
            return ",".join(f'"{c}"' for c in self.columns) + "\n"
        return self._aligned(pa.RecordBatch.from_pylist([], schema=pa.schema([(c, pa.string()) for c in self.columns])))


def display_name(column: str) -> str:
    return "op" if column == OP_COLUMN else column


def render_table(table: pa.Table, fmt: str, out: TextIO, console: Console | None) -> None:
    """A SHOW/DESCRIBE result: boxed on a terminal, else in the output format."""
    columns = table.column_names
    if console is not None and fmt == "table":
        console.print(rich_table(columns, table.to_pylist()))
        return
    writer = RowText(fmt, columns)
    text = "".join(writer.rows(b) for b in table.to_batches()) or writer.header_only()
    out.write(text)
    out.flush()
