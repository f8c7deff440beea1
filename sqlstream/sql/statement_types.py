"""Typed statement nodes: what a pipeline's text says, each with the Location of its origin.

:func:`sqlstream.sql.statements.parse_script` builds them from SQL text;
:class:`SourceText` turns a sqlglot node or token into the ``path:line:col`` that
errors show.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
from sqlglot import exp
from sqlglot.tokens import Token

from sqlstream.errors import Location

__all__ = [
    "SourceText",
    "OptionValue",
    "ColumnSpec",
    "WatermarkSpec",
    "Statement",
    "CreateSource",
    "CreateView",
    "CreateSink",
    "CreateFunction",
    "InsertInto",
    "QueryStatement",
    "SetStatement",
    "ShowStatement",
    "DescribeStatement",
    "ExplainStatement",
    "DropStatement",
    "StopQueryStatement",
    "normalize_name",
    "node_line_col",
]


@dataclass(frozen=True)
class SourceText:
    """SQL text and the name errors should show for it (a path, ``<stdin>``, ``<sql>``)."""

    text: str
    path: str = "<sql>"
    base_dir: str | None = None  # relative paths in WITH/MODEL resolve against this

    def location(self, node: exp.Expr | Token | tuple[int, int] | None) -> Location | None:
        line_col = node_line_col(node)
        if line_col is None:
            return None
        length = 1
        if isinstance(node, exp.Expr):
            meta = _first_meta(node)
            if meta and "start" in meta and "end" in meta:
                length = meta["end"] - meta["start"] + 1
        return Location(self.path, line_col[0], line_col[1], self.text, length)


def _first_meta(node: exp.Expr) -> dict | None:
    if node.meta.get("line") is not None:
        return node.meta
    best = None
    for sub in node.walk():
        meta = sub.meta if sub.__dict__ or hasattr(sub, "meta") else None
        if meta and meta.get("line") is not None and "start" in meta:
            if best is None or meta["start"] < best["start"]:
                best = meta
    return best


def node_line_col(node) -> tuple[int, int] | None:
    if node is None:
        return None
    if isinstance(node, tuple):
        return node
    if isinstance(node, Token):
        return node.line, max(1, node.col - (node.end - node.start))
    meta = _first_meta(node)
    if meta is None:
        return None
    # sqlglot's col is the column of the token's *last* character; we point at its first
    col = meta["col"]
    if "start" in meta and "end" in meta:
        col = col - (meta["end"] - meta["start"])
    return meta["line"], max(1, col)


def normalize_name(identifier: exp.Expr | str) -> str:
    """Postgres rules: unquoted identifiers fold to lower case, quoted ones keep case."""
    if isinstance(identifier, str):
        return identifier.lower()
    if isinstance(identifier, exp.Identifier):
        return identifier.name if identifier.quoted else identifier.name.lower()
    if isinstance(identifier, (exp.Table, exp.Column)):
        return normalize_name(identifier.this)
    return identifier.name.lower()


@dataclass(frozen=True)
class OptionValue:
    value: str | int | float | bool
    location: Location | None = None

    def __str__(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type: pa.DataType
    not_null: bool = False
    location: Location | None = None

    def field(self) -> pa.Field:
        return pa.field(self.name, self.type, nullable=not self.not_null)


@dataclass(frozen=True)
class WatermarkSpec:
    column: str
    delay_us: int
    location: Location | None = None


@dataclass
class Statement:
    location: Location | None
    text: str
    source: SourceText

    def loc(self, node) -> Location | None:
        return self.source.location(node) or self.location


@dataclass
class CreateSource(Statement):
    """CREATE SOURCE and CREATE TABLE (``kind``)."""

    kind: str = "SOURCE"
    name: str = ""
    columns: list[ColumnSpec] = field(default_factory=list)
    watermark: WatermarkSpec | None = None
    options: dict[str, OptionValue] = field(default_factory=dict)
    if_not_exists: bool = False
    replace: bool = False

    def schema(self) -> pa.Schema:
        return pa.schema([c.field() for c in self.columns])


@dataclass
class CreateView(Statement):
    name: str = ""
    query: exp.Expr | None = None
    if_not_exists: bool = False
    replace: bool = False


@dataclass
class CreateSink(Statement):
    name: str = ""
    query: exp.Expr | None = None  # AS <query>
    from_name: str | None = None  # FROM <name>
    columns: list[ColumnSpec] | None = None  # (cols) + INSERT INTO later
    options: dict[str, OptionValue] = field(default_factory=dict)
    if_not_exists: bool = False
    replace: bool = False


@dataclass
class CreateFunction(Statement):
    name: str = ""
    model_path: str = ""
    options: dict[str, OptionValue] = field(default_factory=dict)
    replace: bool = False


@dataclass
class InsertInto(Statement):
    sink: str = ""
    query: exp.Expr | None = None


@dataclass
class QueryStatement(Statement):
    query: exp.Expr | None = None


@dataclass
class SetStatement(Statement):
    key: str = ""
    value: OptionValue | None = None


@dataclass
class ShowStatement(Statement):
    what: str = ""
    name: str | None = None


@dataclass
class DescribeStatement(Statement):
    name: str = ""


@dataclass
class ExplainStatement(Statement):
    statement: Statement | None = None
    analyze: bool = False  # EXPLAIN ANALYZE: run the query to its end and show what each operator did


@dataclass
class DropStatement(Statement):
    kind: str = ""
    name: str = ""
    if_exists: bool = False


@dataclass
class StopQueryStatement(Statement):
    number: int = 0
