"""Terminal rendering for the CLI and the REPL (the only place that imports rich)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

import pyarrow as pa
from rich.console import Console
from rich.live import Live
from rich.table import Table

from sqlstream.changelog import ChangelogTable
from sqlstream.connectors.base import SinkWriter
from sqlstream.connectors.stdout import JsonLinesWriter, PlainTableWriter

__all__ = ["Progress", "install_renderer", "LiveTableWriter", "rich_table", "format_cell"]


def format_cell(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


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


class LiveTableWriter(SinkWriter):
    """An updating result shown as its current table, redrawn in place."""

    def __init__(self, schema: pa.Schema, console: Console | None = None, title: str | None = None):
        self.columns = [n for n in schema.names if n != "__op"]
        self.table = ChangelogTable(self.columns)
        self.console = console or Console()
        self.title = title
        self._live: Live | None = None
        self._last = 0.0

    def _render(self) -> Table:
        rows = sorted(self.table.to_rows(), key=lambda r: tuple(format_cell(r.get(c)) for c in self.columns))
        return rich_table(self.columns, rows, self.title, limit=max(10, self.console.size.height - 6))

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


def install_renderer(session) -> None:
    """Bare SELECTs on a terminal: live tables for updating results, aligned rows else."""

    def factory(sink_name: str, schema: pa.Schema, fmt: str) -> SinkWriter:
        if fmt == "json" or not sys.stdout.isatty():
            return JsonLinesWriter()
        if "__op" in schema.names:
            return LiveTableWriter(schema)
        return PlainTableWriter(schema)

    session.stdout_renderer = factory


class Progress:
    """A one-line rows/s display on stderr while a pipeline runs."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self._last_in = 0
        self._last_out = 0
        self._last_t = time.monotonic()
        self._shown = False

    def update(self, driver) -> None:
        now = time.monotonic()
        rows_in = sum(s.metrics.rows_in for s in driver.sources)
        rows_out = sum(s.rows_out for s in driver.sinks)
        dt = max(now - self._last_t, 1e-6)
        rate_in = (rows_in - self._last_in) / dt
        rate_out = (rows_out - self._last_out) / dt
        self._last_in, self._last_out, self._last_t = rows_in, rows_out, now
        dead = sum(driver.dead_letters.by_reason().values())
        line = f"in {rows_in:,} ({rate_in:,.0f}/s)  out {rows_out:,} ({rate_out:,.0f}/s)  dead letters {dead:,}"
        self.stream.write("\r\x1b[2K" + line)
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
