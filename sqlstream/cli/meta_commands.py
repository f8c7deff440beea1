"""The REPL's backslash commands: ``\\d``, ``\\timing``, ``\\o``, ``\\format``, ``\\mode``,
``\\save_test``, ``\\?`` and ``\\q``."""

from __future__ import annotations

import os
from typing import TextIO

from sqlstream.cli.completion import META_COMMANDS
from sqlstream.cli.result_views import OUTPUT_FORMATS, RESULT_MODES
from sqlstream.cli.save_test import LastQuery, save_test
from sqlstream.errors import Location, SqlAnalysisError, SqlStreamError, did_you_mean
from sqlstream.session import Session
from sqlstream.sql.statements import CreateFunction
from sqlstream.sql.types import sql_type_name

__all__ = ["MetaCommands", "QuitRepl"]


class QuitRepl(Exception):
    """``\\q``: leave the REPL."""


class MetaCommands:
    """The backslash commands of :class:`~sqlstream.cli.repl.Repl`, which inherits them:
    they read and change the REPL's state declared here, print to ``out`` and show
    tables and errors the REPL's way (``show_rows``, ``note``, ``report``)."""

    session: Session
    out: TextIO
    fmt: str
    mode: str
    timing: bool
    output_path: str | None
    _output: TextIO | None
    last: LastQuery | None
    functions: dict[str, CreateFunction]

    def show_rows(self, rows: list[dict]) -> None:
        raise NotImplementedError

    def note(self, text: str) -> None:
        raise NotImplementedError

    def report(self, error: SqlStreamError) -> None:
        raise NotImplementedError

    def meta(self, line: str, path: str, number: int) -> None:
        command, _, argument = line.partition(" ")
        argument = argument.strip()
        try:
            handler = {
                "\\q": self._quit,
                "\\quit": self._quit,
                "\\d": self._describe,
                "\\timing": self._timing,
                "\\o": self._output_to,
                "\\format": self._format,
                "\\mode": self._mode,
                "\\save_test": self._save_test,
                "\\?": self._help,
                "\\help": self._help,
            }.get(command)
            if handler is None:
                raise SqlAnalysisError(
                    f"unknown command '{command}'",
                    location=Location(path, number, 1, "\n" * (number - 1) + line, len(command)),
                    hint=" ".join(filter(None, [did_you_mean(command, META_COMMANDS), "\\? lists the commands"])),
                )
            handler(argument)
        except SqlStreamError as error:
            if error.location is None:
                error.location = Location(path, number, 1, "\n" * (number - 1) + line, len(command))
            self.report(error)

    def _quit(self, argument: str) -> None:
        raise QuitRepl()

    def _help(self, argument: str) -> None:
        width = max(len(c) for c in META_COMMANDS)
        lines = [f"{c.ljust(width)}  {about}" for c, about in META_COMMANDS.items()]
        lines.append("SQL statements end with ';'. While a query runs: space pauses the display, Ctrl-C stops it.")
        print("\n".join(lines), file=self.out, flush=True)

    def _describe(self, argument: str) -> None:
        s = self.session
        if not argument:
            rows = [{"name": n, "kind": e.kind.lower(), "details": e.connector.describe()}
                    for n, e in s.sources.items()]
            rows += [{"name": n, "kind": "view", "details": v.statement.text} for n, v in s.views.items()]
            rows += [{"name": n, "kind": "sink", "details": f"{e.connector.describe()}: {e.query_text}"}
                     for n, e in s.sinks.items() if not e.implicit]
            rows += [{"name": n, "kind": f"{f.kind} function", "details": f.signature} for n, f in s.functions.items()]
            self.show_rows(rows)
            return
        quoted = len(argument) > 1 and argument[0] == argument[-1] == '"'
        name = argument[1:-1] if quoted else argument.lower()  # Postgres rules, as in SQL
        if name in s.functions:
            f = s.functions[name]
            self.show_rows([{"function": f.name, "kind": f.kind, "signature": f.signature, "origin": f.origin}])
            return
        schema = s.schema_of(name)
        rows = [{"column": f.name, "type": sql_type_name(f.type), "nullable": f.nullable} for f in schema]
        self.show_rows(rows)
        if name in s.sources and s.sources[name].statement is not None:
            entry = s.sources[name]
            watermark = f", watermark {entry.rowtime}" if entry.rowtime else ""
            print(f"{entry.kind.lower()} {name}: {entry.connector.describe()}{watermark}", file=self.out, flush=True)
        elif name in s.views:
            print(f"view {name}: {s.views[name].statement.text}", file=self.out, flush=True)

    def _timing(self, argument: str) -> None:
        if argument not in ("", "on", "off"):
            raise SqlStreamError(f"\\timing takes on or off, not '{argument}'")
        self.timing = (not self.timing) if not argument else argument == "on"
        print(f"Timing is {'on' if self.timing else 'off'}.", file=self.out, flush=True)

    def _output_to(self, argument: str) -> None:
        if self._output is not None:
            self._output.close()
            self._output = None
            self.output_path = None
        if not argument:
            self.note("Results go to the terminal.")
            return
        self.session.resolve_path(argument, os.getcwd(), what="\\o file")  # inside allowed_paths, if set
        try:
            self._output = open(argument, "w", encoding="utf-8")
        except OSError as error:
            raise SqlStreamError(f"cannot write {argument}: {error.strerror}") from error
        self.output_path = argument
        self.note(f"Results go to {argument}.")

    def _format(self, argument: str) -> None:
        if not argument:
            print(f"format: {self.fmt}", file=self.out, flush=True)
            return
        if argument not in OUTPUT_FORMATS:
            raise SqlStreamError(f"unknown format '{argument}'", hint="\\format table | json | csv")
        self.fmt = argument
        self.note(f"Output format is {argument}.")

    def _mode(self, argument: str) -> None:
        if not argument:
            print(f"mode: {self.mode}", file=self.out, flush=True)
            return
        if argument not in RESULT_MODES:
            raise SqlStreamError(f"unknown result mode '{argument}'", hint="\\mode table | changelog | tableau")
        self.mode = argument
        self.note(f"Result mode is {argument}.")

    def _save_test(self, argument: str) -> None:
        if not argument:
            raise SqlStreamError("\\save_test needs a name", hint="\\save_test tests/sql/my_case")
        self.session.resolve_path(argument, os.getcwd(), what="\\save_test folder")  # inside allowed_paths, if set
        print(save_test(argument, self.session, self.last, self.functions), file=self.out, flush=True)
