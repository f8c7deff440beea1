"""How a query's result reaches the screen in the REPL: rows scrolling by, an updating
table redrawn in place, the tail of a changelog, or one final table (``\\mode`` and
``\\format`` choose). The loop in :mod:`sqlstream.cli.live` feeds a view its batches."""

from __future__ import annotations

import collections
from typing import TextIO

import pyarrow as pa
from rich.console import Console, Group
from rich.live import Live

from sqlstream.cli.progress import Footer
from sqlstream.cli.render import RowText, current_table, display_name, rich_table
from sqlstream.hidden import OP_COLUMN

__all__ = [
    "ResultView",
    "ScrollView",
    "FinalTableView",
    "InPlaceTableView",
    "ChangelogTailView",
    "make_view",
    "RESULT_MODES",
    "OUTPUT_FORMATS",
]

RESULT_MODES = ("table", "changelog", "tableau")
OUTPUT_FORMATS = ("table", "json", "csv", "expanded")
_FINAL_ROWS_SHOWN = 1000


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
            boxed = rich_table([display_name(c) for c in columns], [_rename(r) for r in shown])
            if table.num_rows > len(shown):
                boxed.caption = f"{table.num_rows - len(shown):,} more rows (\\o FILE writes them all)"
            self.console.print(boxed)
            return
        writer = RowText(self.fmt, columns)
        text = "".join(writer.rows(batch) for batch in table.to_batches() if batch.num_rows)
        self._emit(text or writer.header_only())


def _rename(row: dict) -> dict:
    return {display_name(k): v for k, v in row.items()}


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
        self.table = current_table(self.visible)

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
        if self._frozen is None or not self.paused:
            self._frozen = rich_table([display_name(c) for c in self.names], [_rename(r) for r in self.tail])
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


