"""Terminal rendering for the CLI and the REPL (the only place that imports rich)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sqlstream.changelog import ChangelogTable
from sqlstream.connectors.base import SinkWriter
from sqlstream.connectors.stdout import JsonLinesWriter, PlainTableWriter, format_cell
from sqlstream.hidden import OP_COLUMN, drop_op, is_real_watermark
from sqlstream.runtime.state_tracker import describe as describe_state

__all__ = [
    "Progress",
    "install_renderer",
    "LiveTableWriter",
    "rich_table",
    "format_cell",
    "text_columns",
    "RowText",
    "Footer",
    "ResultView",
    "make_view",
    "render_table",
    "RESULT_MODES",
    "OUTPUT_FORMATS",
    "CurrentTable",
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


class LiveTableWriter(SinkWriter):
    """An updating result shown as its current table, redrawn in place."""

    def __init__(self, schema: pa.Schema, console: Console | None = None, title: str | None = None):
        self.columns = drop_op(schema).names
        self.table = CurrentTable(self.columns)
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


def install_renderer(session) -> None:
    """Bare SELECTs on a terminal: live tables for updating results, aligned rows else."""

    def factory(sink_name: str, schema: pa.Schema, fmt: str) -> SinkWriter:
        if fmt == "json" or not sys.stdout.isatty():
            return JsonLinesWriter()
        if OP_COLUMN in schema.names:
            return LiveTableWriter(schema)
        return PlainTableWriter(schema)

    session.stdout_renderer = factory


class Progress:
    """A one-line rows/s display on stderr while a pipeline runs, with the state the
    pipeline holds when it has stateful operators::

        in 120,000 (40,000/s)  out 3,000 (1,000/s)  dead letters 0  state 1.2M rows / 340 MB
    """

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
        if driver.state.holders:
            line += f"  state {describe_state(driver.state.current)}"
        self.stream.write("\r\x1b[2K" + line)
        self.stream.flush()
        self._shown = True

    def note(self, text: str) -> None:
        """A message on its own line (a warning) without mixing it into the progress line."""
        self.stream.write(("\r\x1b[2K" if self._shown else "") + f"sqlstream: {text}\n")
        self.stream.flush()

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


# -- REPL results ---------------------------------------------------------------------------

RESULT_MODES = ("table", "changelog", "tableau")
OUTPUT_FORMATS = ("table", "json", "csv")
_FINAL_ROWS_SHOWN = 1000


def text_columns(batch: pa.RecordBatch) -> list[pa.Array]:
    """Each column as display strings (NULL for nulls), cast by Arrow where it can."""
    import pyarrow.compute as pc

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
    written once and whose widths only grow; ``json`` is JSON lines; ``csv`` has one header."""

    def __init__(self, fmt: str, columns: list[str]):
        self.fmt = fmt
        self.columns = columns
        self.widths = [max(4, len(_display_name(c))) for c in columns]
        self._started = False

    def rows(self, batch: pa.RecordBatch) -> str:
        if self.fmt == "json":
            from sqlstream.connectors.encode import encode_json_lines

            return encode_json_lines(batch).decode("utf-8")
        if self.fmt == "csv":
            return self._csv(batch)
        return self._aligned(batch)

    def _csv(self, batch: pa.RecordBatch) -> str:
        import io

        import pyarrow.csv as pcsv

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
        import pyarrow.compute as pc

        cells = text_columns(batch)
        for i, strings in enumerate(cells):
            if len(strings):
                self.widths[i] = max(self.widths[i], pc.max(pc.utf8_length(strings)).as_py() or 0)
        lines = []
        if not self._started:
            self._started = True
            lines.append(" | ".join(_display_name(n).ljust(w) for n, w in zip(self.columns, self.widths)).rstrip())
            lines.append("-+-".join("-" * w for w in self.widths))
        if batch.num_rows:
            padded = [pc.utf8_rpad(c, width=w) for c, w in zip(cells, self.widths)]
            joined = pc.binary_join_element_wise(*padded, " | ") if len(padded) > 1 else padded[0]
            lines.extend(pc.utf8_rtrim_whitespace(joined).to_pylist())
        return "\n".join(lines) + "\n" if lines else ""

    def header_only(self) -> str:
        """What an empty result prints (the table header or the CSV header)."""
        if self._started or self.fmt == "json":
            return ""
        if self.fmt == "csv":
            self._started = True
            return ",".join(f'"{c}"' for c in self.columns) + "\n"
        return self._aligned(pa.RecordBatch.from_pylist([], schema=pa.schema([(c, pa.string()) for c in self.columns])))


def _display_name(column: str) -> str:
    return "op" if column == OP_COLUMN else column


def _with_op(batch: pa.RecordBatch) -> pa.RecordBatch:
    """An append-only batch shown as a changelog: every row is an insert."""
    if OP_COLUMN in batch.schema.names:
        return batch
    ops = pa.array(["+I"] * batch.num_rows, pa.string())
    return pa.RecordBatch.from_arrays([ops, *batch.columns], names=[OP_COLUMN, *batch.schema.names])


def _visible(batch: pa.RecordBatch) -> pa.RecordBatch:
    if OP_COLUMN not in batch.schema.names:
        return batch
    keep = [i for i, n in enumerate(batch.schema.names) if n != OP_COLUMN]
    return batch.select(keep)


@dataclass
class Footer:
    """The status line under a running query."""

    rows: int = 0
    rate: float = 0.0
    watermark_us: int | None = None
    elapsed_s: float = 0.0
    paused: bool = False
    hidden: int = 0
    keys: bool = True
    updating: bool = False

    def text(self) -> Text:
        noun = "changes" if self.updating else "rows"
        parts = [f"{self.rows:,} {noun}", f"{self.rate:,.0f} {noun}/s", f"{self.elapsed_s:.1f}s"]
        if self.watermark_us is not None and is_real_watermark(self.watermark_us):
            parts.append(f"watermark {_timestamp_text(self.watermark_us)}")
        if self.paused:
            head = "paused (the query keeps running)"
            if self.hidden:
                head += f", {self.hidden:,} rows not shown"
            parts.insert(0, head)
        keys = "space: resume  ctrl-c: stop" if self.paused else "space: pause  ctrl-c: stop"
        line = " · ".join(parts) + (f"   [{keys}]" if self.keys else "   [ctrl-c: stop]")
        return Text(line, style="reverse" if self.paused else "dim")


def _timestamp_text(us: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).replace(tzinfo=None).isoformat(sep=" ")


class ResultView:
    """How a running query's result reaches the screen or a file.

    ``out`` receives result text; ``console`` (a terminal, or None) shows the live footer
    and, when ``to_terminal``, the results themselves."""

    def __init__(self, columns: list[str], fmt: str, out: TextIO, console: Console | None, to_terminal: bool):
        self.columns = columns
        self.fmt = fmt
        self.out = out
        self.console = console
        self.to_terminal = to_terminal and console is not None
        self.footer = Footer()
        self.paused = False
        self._live: Live | None = None
        self.rows_written = 0

    # the loop in cli/live.py calls these
    def start(self, footer: Footer) -> None:
        self.footer = footer
        if self.console is not None:
            self._live = Live(self._renderable(), console=self.console, auto_refresh=False, transient=True)
            self._live.start()

    def add(self, batch: pa.RecordBatch) -> None:
        raise NotImplementedError

    def refresh(self, footer: Footer) -> None:
        self.footer = footer
        if self._live is not None:
            self._live.update(self._renderable(), refresh=True)

    def set_paused(self, paused: bool) -> None:
        self.paused = paused

    def finish(self, footer: Footer) -> None:
        self.footer = footer
        if self._live is not None:
            self._live.stop()
            self._live = None

    # helpers
    def _renderable(self):
        return self.footer.text()

    def _emit(self, text: str) -> None:
        if not text:
            return
        if self.to_terminal:  # through the console, so the live footer stays below the rows
            self.console.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True, end="")
        else:
            self.out.write(text)
            self.out.flush()

    def _print_table(self, table: pa.Table) -> None:
        """A whole (final) table: boxed on a terminal, else in the output format."""
        columns = table.column_names
        if self.to_terminal and self.fmt == "table":
            shown = table.slice(0, _FINAL_ROWS_SHOWN).to_pylist()
            boxed = rich_table([_display_name(c) for c in columns], [_rename(r) for r in shown])
            if table.num_rows > len(shown):
                boxed.caption = f"{table.num_rows - len(shown):,} more rows (\\o FILE writes them all)"
            self.console.print(boxed)
            return
        writer = RowText(self.fmt, columns)
        text = "".join(writer.rows(batch) for batch in table.to_batches() if batch.num_rows)
        self._emit(text or writer.header_only())


def _rename(row: dict) -> dict:
    return {_display_name(k): v for k, v in row.items()}


class CurrentTable:
    """The current rows of an updating result, folded with Arrow.

    Each change is kept as its row and a count (+1 for ``+I``/``+U``, -1 for
    ``-U``/``-D``); when changes pile up they are compacted by a group-by over all the
    columns, keeping rows whose count is positive (multiset semantics, as
    :class:`~sqlstream.changelog.ChangelogTable`). Memory follows the table's size, not
    the number of changes. Columns Arrow cannot group (lists, structs) fall back to
    ``ChangelogTable``."""

    _COUNT = "__count"

    def __init__(self, columns: list[str]):
        self.columns = columns
        self._parts: list[pa.Table] = []
        self._pending = 0
        self._size = 0
        self._python: ChangelogTable | None = None

    def apply_batch(self, batch: pa.RecordBatch) -> None:
        if self._python is not None:
            self._python.apply_batch(batch)
            return
        import pyarrow.compute as pc

        if OP_COLUMN in batch.schema.names:
            removes = pc.is_in(batch.column(OP_COLUMN), value_set=pa.array(["-U", "-D"]))
            counts = pc.if_else(removes, pa.scalar(-1, pa.int64()), pa.scalar(1, pa.int64()))
        else:
            counts = pa.array(np.ones(batch.num_rows, dtype=np.int64))
        part = pa.Table.from_batches([batch.select(self.columns)]).append_column(self._COUNT, counts)
        self._parts.append(part)
        self._pending += batch.num_rows
        if self._pending > max(50_000, self._size):
            self._compact()

    def _compact(self) -> None:
        if self._python is not None or not self._pending:
            return
        table = pa.concat_tables(self._parts)
        try:
            grouped = table.group_by(self.columns, use_threads=False).aggregate([(self._COUNT, "sum")])
        except (pa.ArrowNotImplementedError, pa.ArrowTypeError):
            self._to_python(table)
            return
        import pyarrow.compute as pc

        grouped = grouped.filter(pc.greater(grouped.column(f"{self._COUNT}_sum"), 0))
        grouped = grouped.select([*self.columns, f"{self._COUNT}_sum"]).rename_columns([*self.columns, self._COUNT])
        self._parts = [grouped]
        self._size = grouped.num_rows
        self._pending = 0

    def _to_python(self, table: pa.Table) -> None:
        self._python = ChangelogTable(self.columns)
        for batch in table.to_batches():
            counts = batch.column(self._COUNT).to_pylist()
            rows = zip(*(batch.column(c).to_pylist() for c in self.columns)) if self.columns else [() for _ in counts]
            for count, row in zip(counts, rows):
                self._python.apply(["+I" if count > 0 else "-D"] * abs(count), [row] * abs(count))
        self._parts = []

    def table(self) -> pa.Table:
        """Every current row (a row held twice appears twice), sorted when Arrow can sort."""
        self._compact()
        if self._python is not None:
            rows = self._python.to_rows()
            rows.sort(key=lambda r: tuple(format_cell(r.get(c)) for c in self.columns))
            return pa.Table.from_pylist(rows) if rows else pa.table({c: pa.array([], pa.null()) for c in self.columns})
        if not self._parts:
            return pa.table({c: pa.array([], pa.null()) for c in self.columns})
        current = self._parts[0]
        counts = current.column(self._COUNT).to_numpy()
        if (counts != 1).any():
            current = current.take(pa.array(np.repeat(np.arange(len(counts)), counts)))
        current = current.drop_columns([self._COUNT])
        try:
            return current.sort_by([(c, "ascending") for c in self.columns])
        except (pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return current

    def rows(self, limit: int | None = None) -> list[dict]:
        table = self.table()
        return (table if limit is None else table.slice(0, limit)).to_pylist()

    def __len__(self) -> int:
        self._compact()
        if self._python is not None:
            return len(self._python)
        return int(sum(p.column(self._COUNT).to_numpy().sum() for p in self._parts))


class ScrollView(ResultView):
    """Rows appended as they come (with an ``op`` column when ``show_op``)."""

    def __init__(self, *args, show_op: bool = False):
        super().__init__(*args)
        self.show_op = show_op
        names = ([OP_COLUMN] if show_op else []) + [c for c in self.columns if c != OP_COLUMN]
        self.writer = RowText(self.fmt, names)

    def add(self, batch: pa.RecordBatch) -> None:
        batch = _with_op(batch) if self.show_op else _visible(batch)
        self.rows_written += batch.num_rows
        if self.paused and self.to_terminal:
            self.footer.hidden += batch.num_rows
            return
        self._emit(self.writer.rows(batch))

    def finish(self, footer: Footer) -> None:
        super().finish(footer)
        if not self.rows_written:
            self._emit(self.writer.header_only())


class FinalTableView(ResultView):
    """An updating result folded as it runs and written once, when the query ends."""

    def __init__(self, *args):
        super().__init__(*args)
        self.visible = [c for c in self.columns if c != OP_COLUMN]
        self.table = CurrentTable(self.visible)

    def add(self, batch: pa.RecordBatch) -> None:
        self.table.apply_batch(batch)

    def finish(self, footer: Footer) -> None:
        super().finish(footer)
        final = self.table.table()
        self.rows_written = final.num_rows
        self._print_table(final)


class InPlaceTableView(FinalTableView):
    """An updating result as its current table, redrawn in place on the terminal; the
    final table stays in the scroll-back."""

    def __init__(self, *args):
        super().__init__(*args)
        self._frozen = None

    def _renderable(self):
        from rich.console import Group

        if self._frozen is None or not self.paused:
            height = self.console.size.height if self.console is not None else 24
            limit = max(5, height - 7)
            current = self.table.table()
            table = rich_table(self.visible, current.slice(0, limit).to_pylist())
            if current.num_rows > limit:
                table.caption = f"{current.num_rows - limit:,} more rows"
            self._frozen = table
        return Group(self._frozen, self.footer.text())


class ChangelogTailView(ResultView):
    """Every change with its ``op``, the latest screenful redrawn in place (Flink's
    changelog mode); that screenful stays in the scroll-back at the end."""

    def __init__(self, *args):
        super().__init__(*args)
        import collections

        self.names = [OP_COLUMN] + [c for c in self.columns if c != OP_COLUMN]
        height = self.console.size.height if self.console is not None else 24
        self.tail: collections.deque = collections.deque(maxlen=max(5, height - 7))
        self.schema: pa.Schema | None = None
        self._frozen = None

    def add(self, batch: pa.RecordBatch) -> None:
        batch = _with_op(batch)
        self.schema = self.schema or batch.select(self.names).schema
        self.rows_written += batch.num_rows
        if batch.num_rows > self.tail.maxlen:
            batch = batch.slice(batch.num_rows - self.tail.maxlen)
        self.tail.extend(batch.select(self.names).to_pylist())  # a screenful at most

    def _renderable(self):
        from rich.console import Group

        if self._frozen is None or not self.paused:
            self._frozen = rich_table([_display_name(c) for c in self.names], [_rename(r) for r in self.tail])
        return Group(self._frozen, self.footer.text())

    def finish(self, footer: Footer) -> None:
        super().finish(footer)
        tail = pa.Table.from_pylist(list(self.tail), schema=self.schema) if self.tail else pa.table(
            {c: pa.array([], pa.string()) for c in self.names})
        self._print_table(tail)


def make_view(
    mode: str, fmt: str, updating: bool, columns: list[str], out: TextIO, console: Console | None, to_terminal: bool
) -> ResultView:
    """The view for a result: ``mode`` table | changelog | tableau, ``fmt`` table | json | csv."""
    args = (columns, fmt, out, console, to_terminal and console is not None)
    on_screen = args[-1] and fmt == "table"
    if mode == "changelog":
        return ChangelogTailView(*args) if on_screen else ScrollView(*args, show_op=True)
    if mode == "tableau" or not updating:
        return ScrollView(*args, show_op=updating)
    return InPlaceTableView(*args) if on_screen else FinalTableView(*args)


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
