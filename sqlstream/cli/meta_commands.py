"""The REPL's backslash commands: ``\\d``, ``\\dt``, ``\\df``, ``\\x``, ``\\i``, ``\\e``,
``\\timing``, ``\\o``, ``\\format``, ``\\mode``, ``\\save_test``, ``\\workers``, ``\\?`` and ``\\q`` (the words
``exit``, ``quit``, ``help`` and sqlite's ``.tables``, ``.read`` ... stand for some of them:
see :func:`sqlstream.cli.completion.as_meta_command`)."""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from typing import TextIO

from sqlstream.cli.completion import COMMAND_ALIASES, META_COMMANDS
from sqlstream.cli.result_views import OUTPUT_FORMATS, RESULT_MODES
from sqlstream.cli.save_test import LastQuery, save_test
from sqlstream.cli.session_setup import read_sql_file
from sqlstream.durations import format_duration_us
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
    last_text: str | None
    functions: dict[str, CreateFunction]
    _unexpanded: str | None = None  # the format \\x went back from

    def run_lines(self, lines, path: str, base_dir: str) -> bool:
        raise NotImplementedError

    def run_sql(self, text: str, path: str, base_dir: str, first_line: int = 1) -> None:
        raise NotImplementedError

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
                "\\dt": self._relations,
                "\\df": self._list_functions,
                "\\x": self._expanded,
                "\\i": self._include,
                "\\e": self._edit,
                "\\timing": self._timing,
                "\\o": self._output_to,
                "\\format": self._format,
                "\\mode": self._mode,
                "\\save_test": self._save_test,
                "\\workers": self._workers,
                "\\?": self._help,
                "\\help": self._help,
            }.get(command)
            if handler is None:
                raise SqlAnalysisError(
                    f"unknown command '{command}'",
                    location=Location(path, number, 1, "\n" * (number - 1) + line, len(command)),
                    hint=" ".join(filter(None, [did_you_mean(command, [*META_COMMANDS, *COMMAND_ALIASES]),
                                                "\\? lists the commands"])),
                )
            handler(argument)
        except SqlStreamError as error:
            if error.location is None:
                error.location = Location(path, number, 1, "\n" * (number - 1) + line, len(command))
            self.report(error)

    def _quit(self, argument: str) -> None:
        raise QuitRepl()

    def _workers(self, argument: str) -> None:
        self.show_workers(argument or None)

    def show_workers(self, group: str | None, location: Location | None = None) -> None:
        """``SHOW WORKERS [group]`` / ``\\workers [group]``: what ``sqlstream group`` shows."""
        from sqlstream.cli.group_status import show_workers

        header, rows = show_workers(self.session, group, location)
        print(header, file=self.out, flush=True)
        self.show_rows(rows)

    def _relations(self, argument: str) -> None:
        s = self.session
        rows = [{"name": n, "kind": e.kind.lower(), "details": e.connector.describe()}
                for n, e in s.sources.items() if e.statement is not None]
        rows += [{"name": n, "kind": "view", "details": v.statement.text} for n, v in s.views.items()]
        self.show_rows(rows)

    def _list_functions(self, argument: str) -> None:
        functions = sorted(self.session.functions.values(), key=lambda f: f.name)
        self.show_rows([{"name": f.name, "kind": f.kind, "signature": f.signature, "origin": f.origin}
                        for f in functions])

    def _expanded(self, argument: str) -> None:
        if argument not in ("", "on", "off"):
            raise SqlStreamError(f"\\x takes on or off, not '{argument}'")
        on = (self.fmt != "expanded") if not argument else argument == "on"
        if on and self.fmt != "expanded":
            self._unexpanded, self.fmt = self.fmt, "expanded"
        elif not on and self.fmt == "expanded":
            self.fmt = self._unexpanded or "table"
        print(f"Expanded display is {'on' if on else 'off'}.", file=self.out, flush=True)

    def _include(self, argument: str) -> None:
        if not argument:
            raise SqlStreamError("\\i needs a file", hint="\\i queries/hello.sql")
        path = self.session.resolve_path(argument, os.getcwd(), what="\\i file")  # inside allowed_paths, if set
        text = read_sql_file(path)
        if not self.run_lines(text.splitlines(), argument, os.path.dirname(path)):
            raise QuitRepl()

    def _edit(self, argument: str) -> None:
        """Open the last statement (or FILE) in ``$VISUAL``/``$EDITOR``; run what is saved."""
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False, encoding="utf-8") as handle:
            handle.write((self.last_text or "").rstrip() + "\n")
            path = handle.name
        try:
            try:
                code = subprocess.call([*shlex.split(editor), path])
            except OSError as error:
                raise SqlStreamError(f"cannot start editor '{editor}': {error.strerror}",
                                     hint="set EDITOR to your editor, e.g. EDITOR=nano") from error
            if code != 0:
                raise SqlStreamError(f"editor '{editor}' exited with {code}; nothing was run")
            with open(path, encoding="utf-8") as edited:
                text = edited.read()
        finally:
            os.unlink(path)
        if text.strip():
            print(text.rstrip(), file=self.out, flush=True)
            if not self.run_lines(text.splitlines(), "<edited>", os.getcwd()):
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
            delay = f" - {format_duration_us(entry.delay_us)}" if entry.delay_us else ""
            watermark = f", watermark {entry.rowtime}{delay}" if entry.rowtime else ""
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
