"""Jupyter: ``%load_ext sqlstream``, then ``%sqlstream`` and ``%%sqlstream`` on a
:class:`~sqlstream.session.Session` bound to the notebook (``sqlstream_session`` in the
notebook's namespace, for the Python API on the same catalog).

A cell runs its statements in order: DDL changes the catalog (a line says what it did),
SHOW/DESCRIBE show a table, EXPLAIN its plan. A bounded query (its sources end: files,
a generator with ``max_rows``, data from ``source_from``) is shown as its final table;
an unbounded one as a live display, updated in place with the current (folded) table,
rows/s and the watermark, until Ctrl-C (Jupyter's interrupt) or ``--seconds N``.

    %%sqlstream [-o NAME] [--seconds N] [--changes] [--rows N]

``-o NAME`` stores the last query's table in the notebook as ``NAME`` (a pandas
DataFrame when pandas is installed, else a ``pyarrow.Table``); ``--changes`` keeps every
change of an updating result (with ``__op``) instead of folding it; ``--rows`` is how
many rows a display shows (default 20). ``x = %sqlstream SELECT ...`` returns it too.
"""

from __future__ import annotations

import argparse
import html
import os
import shlex
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from sqlstream.changelog import ArrowChangelogTable
from sqlstream.connectors.one_row import ONE_ROW_SOURCE
from sqlstream.connectors.stdout import format_cell
from sqlstream.errors import SqlStreamError
from sqlstream.results import QueryResult
from sqlstream.session import Session, StatementResult
from sqlstream.sql.statements import QueryStatement, SourceText, parse_script

__all__ = ["load_ipython_extension", "SqlStreamMagics", "is_bounded", "html_table"]

_REFRESH_S = 0.5
_KEEP_ROWS = 10_000  # rows of an append-only live result kept for -o


def load_ipython_extension(ipython) -> None:
    """``%load_ext sqlstream``: register the magics on a fresh session."""
    magics = SqlStreamMagics(ipython)
    ipython.register_magics(magics)
    ipython.push({"sqlstream_session": magics.session})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="%%sqlstream", add_help=False, exit_on_error=False)
    parser.add_argument("-o", "--output", metavar="NAME")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--changes", action="store_true")
    parser.add_argument("--rows", type=int, default=20)
    return parser


def _magics_class():
    from IPython.core.magic import Magics, line_cell_magic, magics_class

    @magics_class
    class _SqlStreamMagics(Magics):
        def __init__(self, shell):
            super().__init__(shell)
            self.session = Session(base_dir=os.getcwd())

        @line_cell_magic
        def sqlstream(self, line: str, cell: str | None = None):
            """Run SQL on the notebook's sqlstream session (see :mod:`sqlstream.notebook`)."""
            if cell is None:  # %sqlstream SQL: options first, then the SQL
                options, sql = _split_line(line)
            else:
                options, sql = line, cell
            return run_cell(self.session, options, sql, self.shell)

    return _SqlStreamMagics


def SqlStreamMagics(shell):  # noqa: N802 - reads as the class it makes
    """The magics class (IPython is imported only when the extension loads)."""
    return _magics_class()(shell)


def _split_line(line: str) -> tuple[str, str]:
    words = line.split()
    options = []
    while words and words[0].startswith("-"):
        options.append(words.pop(0))
        if options[-1] in ("-o", "--output", "--seconds", "--rows") and words:
            options.append(words.pop(0))
    return " ".join(options), " ".join(words)


def run_cell(session: Session, options: str, sql: str, shell) -> Any:
    from IPython.core.error import UsageError

    try:
        args = _parser().parse_args(shlex.split(options))
    except (argparse.ArgumentError, SystemExit) as error:
        raise UsageError(f"%%sqlstream: {error}; usage: %%sqlstream [-o NAME] [--seconds N] [--changes] [--rows N]")
    try:
        statements = list(parse_script(SourceText(sql, "<cell>", session.base_dir), lambda: session.functions.keys()))
        last, shown = None, False
        for statement in statements:
            if isinstance(statement, QueryStatement):
                if last is not None and not shown:
                    _display(_frame(last))
                last, shown = _run_query(session, statement, args)
            else:
                _show(session.execute_statement(statement), args.rows)
    except SqlStreamError as error:
        raise UsageError(error.render()) from None
    if last is None:
        return None
    value = _frame(last)
    if args.output:
        shell.user_ns[args.output] = value
    return None if shown else value  # a live display already shows the table


def _display(value, **kwargs):
    from IPython.display import display

    return display(value, **kwargs)


def _frame(table: pa.Table):
    """A pandas DataFrame (a rich table in the notebook) when pandas is there, else Arrow."""
    try:
        import pandas  # noqa: F401
    except ImportError:
        return table
    return table.to_pandas()


def _show(result: StatementResult, rows: int) -> None:
    from IPython.display import HTML

    if result.table is not None:
        _display(HTML(html_table(result.table, rows)))
    elif result.text is not None:
        print(result.text)
    elif result.kind != "noop":
        print(f"{result.kind.upper()} {result.name or ''}".rstrip())
        if result.kind in ("create sink", "insert"):
            print("  (sinks run with sqlstream_session.run())")


def is_bounded(session: Session, plan) -> bool:
    """Whether every source ``plan`` reads ends by itself."""
    for name in plan.sources():
        if name == ONE_ROW_SOURCE:
            continue
        entry = session.sources.get(name)
        if entry is None:
            return False
        if entry.connector.name == "memory":
            stream = session.streams.get(name)
            if stream is None or stream.feed is not None or not stream.finished:
                return False
        elif not entry.connector.bounded:
            return False
    return True


def _run_query(session: Session, statement: QueryStatement, args) -> tuple[pa.Table, bool]:
    """The query's table, and whether a live display already showed it."""
    result = session.query_result(statement)
    if args.seconds is None and is_bounded(session, result.plan):
        return result.to_arrow(changes=args.changes), False
    return LiveDisplay(result, rows=args.rows, changes=args.changes).run(args.seconds), True


class LiveDisplay:
    """An unbounded query shown in one output, updated in place: the current table (folded,
    or the latest rows of an append-only result) and a footer with rows, rows/s and the
    watermark. Stops on KeyboardInterrupt or after ``seconds``."""

    def __init__(self, result: QueryResult, *, rows: int = 20, changes: bool = False):
        self.result = result
        self.rows = rows
        fold = result.updating and not changes
        self.folded = ArrowChangelogTable(result.schema.names) if fold else None
        self.kept: deque[pa.RecordBatch] = deque()
        self.kept_rows = 0
        self.schema = result.schema if not changes else result.changes_schema
        self.started = time.monotonic()
        self.state = "running"

    def run(self, seconds: float | None) -> pa.Table:
        from IPython.display import HTML

        handle = None
        deadline = None if seconds is None else self.started + seconds
        shown = time.monotonic()
        try:
            handle = _display(HTML(self.render()), display_id=True)
            while not self.result.done:
                if deadline is not None and time.monotonic() >= deadline:
                    self.state = f"stopped after {seconds:g} s"
                    break
                batch = self.result.poll(0.1)
                if batch is not None:
                    self.add(batch)
                if handle is not None and time.monotonic() - shown >= _REFRESH_S:
                    handle.update(HTML(self.render()))
                    shown = time.monotonic()
            else:
                self.state = "ended"
        except KeyboardInterrupt:
            self.state = "stopped (interrupted)"
        finally:
            self.result.close()
        if handle is not None:  # in a notebook: the display updated in place
            handle.update(HTML(self.render()))
        else:  # outside one, display() gives no handle: show the end once more
            _display(HTML(self.render()))
        return self.table()

    def add(self, batch: pa.RecordBatch) -> None:
        if self.folded is not None:
            self.folded.apply_batch(batch)
            return
        self.kept.append(batch.select(self.schema.names))
        self.kept_rows += batch.num_rows
        while self.kept and self.kept_rows - self.kept[0].num_rows >= _KEEP_ROWS:
            self.kept_rows -= self.kept.popleft().num_rows

    def table(self) -> pa.Table:
        if self.folded is not None:
            current = self.folded.table()
            return pa.Table.from_arrays([current.column(f.name).cast(f.type) for f in self.schema], schema=self.schema)
        return pa.Table.from_batches(list(self.kept), schema=self.schema)

    def render(self) -> str:
        table = self.table()
        if self.folded is None and table.num_rows > self.rows:
            table = table.slice(table.num_rows - self.rows)  # the latest rows
        elapsed = time.monotonic() - self.started
        received = self.result.rows_received
        parts = [f"{received:,} {'changes' if self.result.updating else 'rows'}",
                 f"{received / elapsed if elapsed > 0 else 0:,.0f} rows/s", f"{elapsed:.1f} s"]
        watermark = self.result.watermark
        if watermark is not None:
            parts.append(f"watermark {_timestamp(watermark)}")
        parts.append(self.state)
        footer = f'<div class="sqlstream-footer"><small>{html.escape(" · ".join(parts))}</small></div>'
        return html_table(table, self.rows) + footer


def _timestamp(us: int) -> str:
    return datetime.fromtimestamp(us / 1_000_000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def html_table(table: pa.Table, rows: int = 20) -> str:
    """``table`` as an HTML table of at most ``rows`` rows (a caption counts the rest)."""
    head = "".join(f"<th>{html.escape(name)}</th>" for name in table.column_names)
    body = []
    for row in table.slice(0, rows).to_pylist():
        cells = "".join(f"<td>{html.escape(_cell(value))}</td>" for value in row.values())
        body.append(f"<tr>{cells}</tr>")
    more = table.num_rows - min(rows, table.num_rows)
    caption = f"<caption>{more:,} more rows</caption>" if more else ""
    empty = "" if table.num_rows else f'<tr><td colspan="{max(1, table.num_columns)}">(no rows)</td></tr>'
    return (f'<table class="sqlstream">{caption}<thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}{empty}</tbody></table>")


def _cell(value) -> str:
    return format_cell(value)  # as the REPL and JSON write it
