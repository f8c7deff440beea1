"""``sqlstream repl``: interactive SQL against live streams, scriptable when stdin is not a TTY.

Statements end at ``;`` (they may span lines); a line starting with ``\\`` is a meta
command. A SELECT runs until its input ends, its LIMIT is reached or Ctrl-C, and renders
live (see :mod:`sqlstream.cli.result_views`); CREATE SINK / INSERT INTO start that sink's
query in the background (SHOW QUERIES, STOP QUERY n). A user error prints as
``<stdin>:line:col: error: ...`` with a caret and a hint, and the REPL goes on.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from typing import Iterable, TextIO

import pyarrow as pa
from prompt_toolkit.patch_stdout import patch_stdout
from rich.console import Console
from sqlglot.errors import TokenError
from sqlglot.tokens import TokenType

from sqlstream.cli.completion import as_meta_command, builtin_functions, statement_complete
from sqlstream.cli.live import BackgroundQueries, ForegroundQuery, KeyReader, interrupt_flag
from sqlstream.cli.meta_commands import MetaCommands, QuitRepl
from sqlstream.cli.prompt import make_prompt_session
from sqlstream.cli.render import current_stdout_renderer, render_table
from sqlstream.cli.result_views import make_view
from sqlstream.cli.save_test import LastQuery
from sqlstream.cli.session_setup import make_session, read_sql_file
from sqlstream.errors import Location, SqlStreamError
from sqlstream.session import Session, StatementResult, sink_input_names
from sqlstream.sql.dialect import SqlStream
from sqlstream.sql.statements import (
    CreateFunction,
    CreateSink,
    DropStatement,
    InsertInto,
    QueryStatement,
    ShowStatement,
    SourceText,
    Statement,
    StopQueryStatement,
    parse_script,
)

__all__ = ["Repl", "run_repl"]


class Repl(MetaCommands):
    """The REPL's state (output format, result mode, running queries) and its statement
    loop, shared by the interactive prompt and scripts (-e, -f, piped stdin)."""

    def __init__(
        self,
        session: Session,
        *,
        out: TextIO | None = None,
        err: TextIO | None = None,
        fmt: str = "table",
        interactive: bool = False,
        terminal: Console | None = None,
        keys_fd: int | None = None,
    ):
        self.session = session
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.fmt = fmt
        self.mode = "table"
        self.interactive = interactive
        self.terminal = terminal  # the rich console when stdout is a terminal
        self.keys_fd = keys_fd
        self.timing = False
        self.output_path: str | None = None
        self._output: TextIO | None = None
        self.background = BackgroundQueries(session)
        self.functions: dict[str, CreateFunction] = {}
        self.last: LastQuery | None = None
        self.skip_queries = False  # loading ``repl FILE`` without --run: SELECTs wait
        self.skipped: list[QueryStatement] = []
        self.last_text: str | None = None  # the last SQL run, which \e edits
        self.exit_code = 0

    # -- scripts and typed input ------------------------------------------------------------------

    def run_lines(self, lines: Iterable[str], path: str, base_dir: str) -> bool:
        """Run statements and meta commands from ``lines``; False after ``\\q``."""
        buffer: list[str] = []
        start = 1
        number = 0
        try:
            for number, line in enumerate(lines, 1):
                line = line.rstrip("\n")
                command = as_meta_command(line) if not buffer else None
                if command is not None:
                    self.meta(command, path, number)
                    continue
                if not buffer:
                    if not line.strip():
                        continue
                    start = number
                buffer.append(line)
                if statement_complete("\n".join(buffer)):
                    self.run_sql("\n".join(buffer), path, base_dir, start)
                    buffer = []
            if buffer:
                self.run_sql("\n".join(buffer), path, base_dir, start)
        except QuitRepl:
            return False
        return True

    def run_sql(self, text: str, path: str, base_dir: str, first_line: int = 1) -> None:
        """Run each statement of ``text`` (which starts at ``first_line`` of ``path``);
        an error is printed and the next statement still runs."""
        padded = "\n" * (first_line - 1) + text
        self.last_text = text
        for start, end in _statement_spans(padded):
            blank = "".join(c if c == "\n" else " " for c in padded[:start])
            source = SourceText(blank + padded[start:end], path, base_dir)
            began = time.monotonic()
            try:
                for statement in parse_script(source, lambda: self.session.functions.keys()):
                    self.execute(statement)
            except SqlStreamError as error:
                if error.location is not None and error.location.path == path:
                    error.location = Location(path, error.location.line, error.location.col, padded, error.location.length)
                self.report(error)
            except Exception as error:  # noqa: BLE001 - the REPL outlives any failure
                self.report_internal(error)
            if self.timing:
                print(f"Time: {(time.monotonic() - began) * 1000:.3f} ms", file=self.err if not self.interactive else self.out)

    def report(self, error: SqlStreamError) -> None:
        print(error.render(), file=self.err, flush=True)
        if not self.exit_code:
            self.exit_code = error.exit_code

    def report_internal(self, error: BaseException) -> None:
        if os.environ.get("SQLSTREAM_DEBUG"):
            traceback.print_exception(error, file=self.err)
        print(f"error: internal error: {type(error).__name__}: {error}", file=self.err)
        print("  hint: this is a bug in sqlstream; SQLSTREAM_DEBUG=1 shows the traceback", file=self.err, flush=True)
        if not self.exit_code:
            self.exit_code = 1

    def note(self, text: str) -> None:
        """A confirmation for a person at the prompt (scripts stay quiet)."""
        if self.interactive:
            print(text, file=self.out, flush=True)

    # -- statements ---------------------------------------------------------------------------------

    def execute(self, statement: Statement) -> None:
        session = self.session
        if isinstance(statement, QueryStatement):
            if self.skip_queries:
                self.skipped.append(statement)
                return
            self.run_query(statement)
            return
        if isinstance(statement, StopQueryStatement):
            query = self.background.stop(statement.number, statement.location)
            self.background.unreported()
            print(query.describe_end(), file=self.out if self.interactive else self.err, flush=True)
            return
        if isinstance(statement, ShowStatement) and statement.what == "WORKERS":
            self.show_workers(statement.name, statement.location)
            return
        if isinstance(statement, ShowStatement) and statement.what == "QUERIES":
            self.show_rows([q.row() for q in self.background.queries])
            return
        if isinstance(statement, ShowStatement) and statement.what in ("METRICS", "WATERMARKS") and self.background.queries:
            self.show_rows(self._running_rows(statement.what))
            return
        if isinstance(statement, DropStatement) and statement.kind == "SINK":
            self.background.stop_sink(statement.name)
        if isinstance(statement, CreateSink) and statement.replace:
            self.background.stop_sink(statement.name)
        result = session.execute_statement(statement)
        if isinstance(statement, CreateFunction):
            self.functions[statement.name] = statement
        self.present(result)
        if isinstance(statement, (CreateSink, InsertInto)):
            self.start_sinks()

    def start_sinks(self) -> None:
        for entry in self.session.pending_sinks():
            if entry.implicit or self.background.started(entry.name):
                continue
            try:
                query = self.background.start(entry)
            except SqlStreamError:
                self.session.sinks.pop(entry.name, None)  # a sink that cannot start is not created
                raise
            line = f"started query {query.number}: sink {entry.name} ({entry.connector.describe()})"
            if self.interactive:
                print(line, file=self.out, flush=True)
            else:
                print(f"sqlstream: {line}", file=self.err, flush=True)

    def _running_rows(self, what: str) -> list[dict]:
        rows = []
        for query, driver in self.background.drivers():
            found = self.session.metric_rows(driver) if what == "METRICS" else self.session.watermark_rows(driver)
            rows += [{"query": query.number, **row} for row in found]
        return rows

    def present(self, result: StatementResult) -> None:
        if result.table is not None:
            self.show_table(result.table)
        elif result.text is not None:
            print(result.text, file=self.out, flush=True)
        elif result.kind != "noop":
            self.note(f"{result.kind.upper()} {result.name or ''}".rstrip())
        else:
            self.note(f"(nothing to do: {result.name} exists)")

    def show_rows(self, rows: list[dict]) -> None:
        self.show_table(pa.Table.from_pylist(rows) if rows else pa.table({}))

    def show_table(self, table: pa.Table) -> None:
        if table.num_columns == 0:
            print("(none)", file=self.out, flush=True)
            return
        out, on_terminal = self._result_target()
        render_table(table, self.fmt, out, self.terminal if on_terminal else None)

    def _result_target(self) -> tuple[TextIO, bool]:
        if self._output is not None:
            return self._output, False
        return self.out, self.terminal is not None

    def run_query(self, statement: QueryStatement) -> None:
        plan = self.session.plan_query(statement)
        columns = sink_input_names(plan)
        out, on_terminal = self._result_target()
        view = make_view(self.mode, self.fmt, plan.updating, columns, out, self.terminal, on_terminal)
        keys = KeyReader(self.keys_fd) if self.keys_fd is not None else None
        query = ForegroundQuery(self.session, plan, view, keys=keys)
        with interrupt_flag() as stop:
            if keys is not None:
                with keys:
                    outcome = query.run(stop)
            else:
                outcome = query.run(stop)
        self.last = LastQuery(statement, outcome)
        if self.fmt in ("table", "expanded"):
            noun = "row" if outcome.rows == 1 else "rows"
            detail = f"({outcome.rows:,} {noun}"
            if outcome.updating:
                detail += f", {outcome.received:,} changes"
            if not outcome.ended:
                detail += ", stopped"
            print(detail + ")", file=out, flush=True)

    # -- the prompt ---------------------------------------------------------------------------------

    def report_background(self) -> None:
        for query in self.background.unreported():
            print(query.describe_end(), file=self.err, flush=True)

    def interact(self, prompt_session) -> int:
        """Prompt until ``\\q`` or Ctrl-D; Ctrl-C at the prompt clears the line."""
        base_dir = os.getcwd()
        try:
            while True:
                self.report_background()
                try:
                    with patch_stdout(raw=True):
                        text = prompt_session.prompt()
                except KeyboardInterrupt:
                    continue
                except EOFError:
                    break
                try:
                    if not self.run_lines(text.splitlines(), "<stdin>", base_dir):
                        break
                except KeyboardInterrupt:  # Ctrl-C outside a query (a slow DDL): back to the prompt
                    print("interrupted", file=self.err, flush=True)
        finally:
            self.close()
        return 0

    def finish_script(self) -> None:
        """At the end of a script: let the sinks it started run to their end (Ctrl-C stops them)."""
        if self.background.running():
            with interrupt_flag() as stop:
                self.background.wait_all(stop)
        self.report_background()
        self.close()

    def close(self) -> None:
        self.background.stop_all()
        if self._output is not None:
            self._output.close()
            self._output = None


def _statement_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of each ``;``-separated statement in ``text``."""
    try:
        tokens = SqlStream().tokenizer().tokenize(text)
    except TokenError:
        return [(0, len(text))]  # parse_script reports where the string/comment was left open
    spans = []
    start = None
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            if start is not None:
                spans.append((start, token.end + 1))
            start = None
        elif start is None:
            start = token.start
    if start is not None:
        spans.append((start, len(text)))
    return spans


def _load_file(repl: Repl, path: str, *, run_queries: bool) -> bool:
    """Run ``path``'s statements; its SELECTs only with ``run_queries`` (else they are
    listed, for ``--run`` or ``\\i``). False after ``\\q`` in the file."""
    repl.skip_queries = not run_queries
    try:
        go_on = repl.run_lines(read_sql_file(path).splitlines(), path, os.path.dirname(os.path.abspath(path)))
    finally:
        repl.skip_queries = False
    if repl.skipped:
        lines = ", ".join(str(st.location.line) for st in repl.skipped if st.location is not None)
        noun = "query" if len(repl.skipped) == 1 else "queries"
        print(f"{path}: loaded; {len(repl.skipped)} {noun} not run (line {lines}): type it, "
              f"\\i {path} runs the file, sqlstream repl --run {path} runs its queries at start", file=sys.stdout,
              flush=True)
        repl.skipped = []
    return go_on


def run_repl(args) -> int:
    """``sqlstream repl [FILE] [-e SQL] [-f FILE] [--json|--csv]``."""
    session = make_session(args.file, args.udfs, args.set, discover_udfs=not args.no_udfs, allow_paths=args.allow_paths)
    session.stdout_renderer = current_stdout_renderer()
    scripted = bool(args.execute or args.script)
    interactive = not scripted and sys.stdin.isatty()
    terminal = Console(file=sys.stdout) if sys.stdout.isatty() else None
    keys_fd = sys.stdin.fileno() if interactive else None
    repl = Repl(session, fmt=args.format or "table", interactive=interactive, terminal=terminal, keys_fd=keys_fd)
    warm_up = threading.Thread(target=builtin_functions, name="sqlstream-functions", daemon=True)
    if interactive:
        warm_up.start()  # the first Tab should not wait for DataFusion's function list
    banner = "sqlstream repl — statements end with ';', help or \\? for help, exit or \\q to quit"
    if interactive:
        print(banner, file=sys.stdout, flush=True)
    if args.file and not _load_file(repl, args.file, run_queries=args.run or scripted or not interactive):
        repl.finish_script()
        return repl.exit_code
    if scripted:
        go_on = True
        for sql in args.execute:
            go_on = go_on and repl.run_lines(sql.splitlines(), "<command-line>", os.getcwd())
        if args.script and go_on:
            text = read_sql_file(args.script)
            repl.run_lines(text.splitlines(), args.script, os.path.dirname(os.path.abspath(args.script)))
        repl.finish_script()
        return repl.exit_code
    if not interactive:
        repl.run_lines(sys.stdin, "<stdin>", os.getcwd())
        repl.finish_script()
        return repl.exit_code
    if repl.exit_code and args.file:
        print(f"sqlstream: {args.file} had errors; the statements that worked are loaded", file=sys.stderr)
    try:
        return repl.interact(make_prompt_session(session))
    finally:
        warm_up.join()  # never leave a thread inside native code at interpreter exit
