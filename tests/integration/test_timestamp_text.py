"""A timestamp reads the same in every REPL view and in JSON: ``2024-01-01 00:00:05.8``,
without trailing zeros in the fraction (the boxed table of an updating result on a
terminal used to show ``05.800000``)."""

from __future__ import annotations

import io
import json

from rich.console import Console

from sqlstream import Session
from sqlstream.cli.repl import Repl
from sqlstream.connectors.stdout import format_cell
from sqlstream.notebook import html_table

QUERY = ("SELECT CAST('2024-01-01 00:00:05.8' AS TIMESTAMP) AS a, CAST('2024-01-01 00:00:05' AS TIMESTAMP) AS b, "
         "CAST('2024-01-01 00:00:05.123456' AS TIMESTAMP) AS c, count(*) AS n;")
EXPECTED = {"a": "2024-01-01 00:00:05.8", "b": "2024-01-01 00:00:05", "c": "2024-01-01 00:00:05.123456"}


def _repl_output(**kwargs) -> str:
    out = io.StringIO()
    repl = Repl(Session(dead_letter_path="off"), out=out, err=io.StringIO(), **kwargs)
    assert repl.run_lines([QUERY], "<test>", ".")
    return out.getvalue()


def test_json_terminal_table_and_text_table_agree():
    (row,) = [json.loads(line) for line in _repl_output(fmt="json").splitlines()]
    assert {k: row[k] for k in EXPECTED} == EXPECTED
    screen = io.StringIO()
    _repl_output(terminal=Console(file=screen, width=160), interactive=True)
    boxed = screen.getvalue()
    assert "┃ a" in boxed
    text = _repl_output()
    for value in EXPECTED.values():
        assert f" {value} " in boxed
        assert value in text
    assert "05.800000" not in boxed and "05.800000" not in text


def test_format_cell_and_the_notebook_table():
    with Session(dead_letter_path="off") as s:
        table = s.sql(QUERY.rstrip(";")).to_arrow()
    assert [format_cell(table.column(k)[0].as_py()) for k in EXPECTED] == list(EXPECTED.values())
    cells = html_table(table)
    assert all(f"<td>{value}</td>" in cells for value in EXPECTED.values())
