"""Pipeline text → typed statement nodes, each with the Location of its origin.

The nodes themselves are in :mod:`sqlstream.sql.statement_types` (and importable
from here, where callers have always found them).

``parse_script`` tokenizes a whole file once (so every line:col is absolute),
splits it at ``;`` and parses one statement at a time, asking for the current set
of registered function names before each one: a ``CREATE FUNCTION`` earlier in a
file makes its name a plain function call in the statements after it.
"""

from __future__ import annotations

import bisect
import re
from typing import Callable, Iterable, Iterator

import pyarrow as pa
from sqlglot import exp
from sqlglot.errors import ErrorLevel, ParseError, TokenError
from sqlglot.tokens import Token, TokenType

from sqlstream.durations import UNIT_US
from sqlstream.errors import (
    Location,
    SqlAnalysisError,
    SqlStreamError,
    SqlSyntaxError,
    UnsupportedSqlError,
    did_you_mean,
)
from sqlstream.sql.dialect import (
    CreateStream,
    ExplainStmt,
    ShowStmt,
    SqlStream,
    StopQuery,
    StreamOption,
)
from sqlstream.sql.statement_types import (
    ColumnSpec,
    CreateFunction,
    CreateSink,
    CreateSource,
    CreateView,
    DescribeStatement,
    DropStatement,
    ExplainStatement,
    InsertInto,
    OptionValue,
    QueryStatement,
    SetStatement,
    ShowStatement,
    SourceText,
    Statement,
    StopQueryStatement,
    WatermarkSpec,
    node_line_col,
    normalize_name,
)
from sqlstream.sql.types import arrow_type, sql_type_name

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
    "parse_script",
    "function_call_problem",
    "interval_us",
    "normalize_name",
]


# -- intervals ----------------------------------------------------------------------------

_INTERVAL_TEXT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([a-zA-Z]+)?\s*$")


def interval_us(node: exp.Expr, source: SourceText | None = None) -> int:
    """Microseconds of ``INTERVAL '5' SECOND`` / ``INTERVAL '5 seconds'``."""
    if not isinstance(node, exp.Interval):
        raise SqlAnalysisError(
            f"expected an INTERVAL, got {node.sql(dialect=SqlStream)}",
            location=source.location(node) if source else None,
            hint="write e.g. INTERVAL '5' SECOND",
        )
    text = node.this.name if node.this is not None else ""
    unit_node = node.args.get("unit")
    unit = unit_node.name if unit_node is not None else ""
    match = _INTERVAL_TEXT.match(text)
    if match:
        number, inline_unit = match.groups()
        unit = (unit or inline_unit or "").lower()
        if unit.endswith("s") and unit not in UNIT_US:
            unit = unit[:-1]
        size = UNIT_US.get(unit)
        if size is not None:
            return int(round(float(number) * size))
    raise SqlAnalysisError(
        f"cannot read interval {node.sql(dialect=SqlStream)}",
        location=source.location(node) if source else None,
        hint="supported units: MICROSECOND, MILLISECOND, SECOND, MINUTE, HOUR, DAY",
    )


# -- parsing ------------------------------------------------------------------------------


def _split_tokens(tokens: list[Token]) -> list[list[Token]]:
    chunks: list[list[Token]] = [[]]
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            chunks.append([])
        else:
            chunks[-1].append(token)
    return [c for c in chunks if c]


def parse_script(
    source: SourceText, user_functions: Callable[[], Iterable[str]] = lambda: ()
) -> Iterator[Statement]:
    """Yield the statements of ``source`` one by one (lazily: see module docstring)."""
    dialect = SqlStream()
    tokenizer = dialect.tokenizer()
    try:
        tokens = tokenizer.tokenize(source.text)
    except TokenError as error:
        raise _token_error(error, tokenizer, source) from error
    _set_positions(tokens, source.text)
    for chunk in _split_tokens(tokens):
        _check_statement_start(chunk[0], source)
        parser = dialect.parser(error_level=ErrorLevel.IMMEDIATE)
        parser.user_functions = frozenset(name.upper() for name in user_functions())
        text = source.text[chunk[0].start : chunk[-1].end + 1]
        try:
            trees = parser._parse(type(parser)._parse_statement, chunk, source.text)
        except ParseError as error:
            raise _syntax_error(error, source, at_end=parser._index >= len(chunk)) from error
        tree = trees[0] if trees else None
        if tree is None:
            continue
        yield to_statement(tree, source, source.location(chunk[0]), text)


def function_call_problem(name: str) -> str | None:
    """Why ``name(x)`` does not parse as a call of a registered function ``name`` (a
    word the grammar reserves, like ``values`` or ``case``), or None when it does."""
    try:
        statements = list(parse_script(SourceText(f"SELECT {name}(x) FROM t", "<name>", "."), lambda: (name,)))
        first = statements[0].query.expressions[0] if statements else None
        if not (isinstance(first, exp.Anonymous) and str(first.this).lower() == name):
            return "it does not parse as a function call"
    except SqlStreamError as error:
        return error.message
    return None


def _set_positions(tokens: list[Token], text: str) -> None:
    """Line and column of each token from its character offsets: sqlglot counts them
    as it scans and miscounts in places (after a ``$``, every later line was one
    off). The column is that of the token's last character, as sqlglot has it."""
    newlines = [i for i, ch in enumerate(text) if ch == "\n"]
    for token in tokens:
        line = bisect.bisect_left(newlines, token.end)  # newlines before the last character
        line_start = newlines[line - 1] + 1 if line else 0
        token.line = line + 1
        token.col = token.end - line_start + 1


_STATEMENT_WORDS = ("SELECT", "CREATE", "INSERT", "SET", "SHOW", "DESCRIBE", "EXPLAIN", "DROP", "WITH", "STOP")


def _check_statement_start(token: Token, source: SourceText) -> None:
    """A plain word where a statement should begin (``SELEC a``, ``CRATE SINK``)."""
    if token.token_type != TokenType.VAR or token.text.upper() in ("EXPLAIN", "STOP"):
        return
    raise SqlSyntaxError(
        f"'{token.text}' does not start a statement",
        location=Location(source.path, *node_line_col(token), source.text, len(token.text)),
        hint=did_you_mean(token.text.upper(), _STATEMENT_WORDS)
        or "statements start with " + ", ".join(_STATEMENT_WORDS[:-2]),
    )


def _offset_location(source: SourceText, offset: int) -> Location:
    before = source.text[:offset]
    line = before.count("\n") + 1
    col = offset - (before.rfind("\n") + 1) + 1
    return Location(source.path, line, col, source.text)


def _token_error(error: TokenError, tokenizer, source: SourceText) -> SqlSyntaxError:
    core = getattr(tokenizer, "_core", None)
    start = getattr(core, "_start", None)
    location = _offset_location(source, start) if isinstance(start, int) else None
    cause = str(error.__cause__ or error)
    if isinstance(start, int) and source.text.startswith("/*", start):
        return SqlSyntaxError("unterminated comment: missing closing */", location=location)
    if cause.startswith("Missing"):
        quote = cause.split()[1]
        return SqlSyntaxError(f"unterminated literal: missing closing {quote}", location=location)
    return SqlSyntaxError(f"cannot tokenize SQL: {cause}", location=location)


_SQLGLOT_MESSAGES = ("Expecting", "Expected", "Required keyword", "Invalid expression")


def _syntax_error(error: ParseError, source: SourceText, at_end: bool = False) -> SqlSyntaxError:
    """sqlglot's ParseError in our words; ``at_end``: the statement ran out of tokens."""
    info = error.errors[0] if error.errors else {}
    description = info.get("description") or str(error)
    highlight = (info.get("highlight") or "").strip()
    line, col = info.get("line"), info.get("col")
    location = None
    if line is not None and col is not None:
        start_col = max(1, col - len(highlight) + 1) if highlight else col
        location = Location(source.path, line, start_col, source.text, max(1, len(highlight)))
    hint = None
    if description.startswith("Expecting )"):
        where = "after" if at_end else "before"
        description = f"expected ')' {where} '{highlight}'" if highlight else "expected ')'"
        hint = "check for a missing comma or closing parenthesis"
    elif at_end and description.startswith(_SQLGLOT_MESSAGES):
        description = f"unexpected end of statement after '{highlight}'" if highlight else "unexpected end of statement"
    elif description.startswith("Invalid expression / Unexpected token"):
        description = f"unexpected '{highlight}'" if highlight else "unexpected token"
    elif description.startswith("Required keyword"):
        description = f"incomplete expression near '{highlight}'"
    return SqlSyntaxError(description, location=location, hint=hint)


def _options(node: CreateStream, source: SourceText) -> dict[str, OptionValue]:
    out: dict[str, OptionValue] = {}
    for option in node.args.get("options") or []:
        assert isinstance(option, StreamOption)
        key = str(option.this).lower()
        value_node = option.args["value"]
        value: str | int | float | bool
        if isinstance(value_node, exp.Boolean):
            value = bool(value_node.this)
        elif isinstance(value_node, exp.Literal) and not value_node.is_string:
            text = value_node.name
            value = float(text) if any(ch in text for ch in ".eE") else int(text)
        else:
            value = value_node.name
        loc = source.location(option)
        if key in out:
            raise SqlAnalysisError(f"option '{key}' is given twice", location=loc)
        out[key] = OptionValue(value, loc)
    return out


def _columns(defs: list[exp.Expr], source: SourceText) -> list[ColumnSpec]:
    columns: list[ColumnSpec] = []
    seen: set[str] = set()
    for col in defs:
        if not isinstance(col, exp.ColumnDef):
            raise UnsupportedSqlError(
                f"unsupported item in column list: {col.sql(dialect=SqlStream)}",
                location=source.location(col),
            )
        name = normalize_name(col.this)
        loc = source.location(col.this)
        kind = col.args.get("kind")
        if kind is None:
            raise SqlAnalysisError(f"column '{name}' needs a type", location=loc, hint="e.g. ts TIMESTAMP")
        if name in seen:
            raise SqlAnalysisError(f"column '{name}' is declared twice", location=loc)
        seen.add(name)
        not_null = any(
            isinstance(c.args.get("kind"), exp.NotNullColumnConstraint) and not c.args["kind"].args.get("allow_null")
            for c in col.args.get("constraints") or []
        )
        try:
            arrow = arrow_type(kind)
        except SqlStreamError as error:
            raise error.with_location(source.location(kind) or loc)
        columns.append(ColumnSpec(name, arrow, not_null, loc))
    return columns


def _watermark(node: exp.Expr | None, columns: list[ColumnSpec], source: SourceText) -> WatermarkSpec | None:
    if node is None:
        return None
    column = normalize_name(node.this)
    loc = source.location(node.this)
    names = {c.name: c for c in columns}
    if column not in names:
            raise SqlAnalysisError(
            f"WATERMARK FOR names unknown column '{column}'", location=loc, hint=did_you_mean(column, names)
        )
    if not pa.types.is_timestamp(names[column].type):
        raise SqlAnalysisError(
            f"WATERMARK column '{column}' must be a TIMESTAMP, not {sql_type_name(names[column].type)}",
            location=loc,
        )
    expr = node.args.get("expression")
    delay = 0
    if isinstance(expr, exp.Sub) and isinstance(expr.expression, exp.Interval):
        base = expr.this
        delay = interval_us(expr.expression, source)
    else:
        base = expr
    if not (isinstance(base, exp.Column) and normalize_name(base.this) == column):
        raise UnsupportedSqlError(
            "unsupported watermark expression",
            location=source.location(expr) or loc,
            hint=f"write WATERMARK FOR {column} AS {column} - INTERVAL '5' SECOND (or AS {column})",
        )
    if delay < 0:
        raise SqlAnalysisError("watermark delay must not be negative", location=loc)
    return WatermarkSpec(column, delay, loc)


def to_statement(tree: exp.Expr, source: SourceText, location: Location, text: str) -> Statement:
    """One parsed sqlglot tree → its typed statement."""
    common = dict(location=location, text=text, source=source)
    if isinstance(tree, CreateStream):
        kind = tree.args["kind"]
        name = normalize_name(tree.this)
        exists = bool(tree.args.get("exists"))
        replace = bool(tree.args.get("replace"))
        if kind in ("SOURCE", "TABLE"):
            if not tree.args.get("columns"):
                raise SqlAnalysisError(
                    f"CREATE {kind} {name} needs a column list",
                    location=location,
                    hint=f"CREATE {kind} {name} (id BIGINT, ts TIMESTAMP, ...) WITH (...)",
                )
            columns = _columns(tree.args["columns"], source)
            watermark = _watermark(tree.args.get("watermark"), columns, source)
            if kind == "TABLE" and watermark is not None:
                raise UnsupportedSqlError(
                    "a TABLE is bounded reference data and has no watermark",
                    location=watermark.location,
                    hint="use CREATE SOURCE for event streams",
                )
            return CreateSource(
                **common,
                kind=kind,
                name=name,
                columns=columns,
                watermark=watermark,
                options=_options(tree, source),
                if_not_exists=exists,
                replace=replace,
            )
        if kind == "VIEW":
            return CreateView(**common, name=name, query=tree.args["query"], if_not_exists=exists, replace=replace)
        if kind == "SINK":
            columns = _columns(tree.args["columns"], source) if tree.args.get("columns") else None
            if tree.args.get("watermark") is not None:
                raise SqlAnalysisError("a SINK has no watermark", location=source.location(tree.args["watermark"]))
            from_name = tree.args.get("source_name")
            return CreateSink(
                **common,
                name=name,
                query=tree.args.get("query"),
                from_name=normalize_name(from_name) if from_name is not None else None,
                columns=columns,
                options=_options(tree, source),
                if_not_exists=exists,
                replace=replace,
            )
        if kind == "FUNCTION":
            return CreateFunction(
                **common,
                name=normalize_name(tree.this),
                model_path=tree.args["model"].name,
                options=_options(tree, source),
                replace=replace,
            )
    if isinstance(tree, exp.Insert):
        target = tree.this
        if isinstance(target, exp.Schema):
            raise UnsupportedSqlError(
                "INSERT INTO with a column list is not supported",
                location=source.location(target),
                hint="declare the sink's columns in CREATE SINK and select them in order",
            )
        return InsertInto(**common, sink=normalize_name(target), query=tree.expression)
    if isinstance(tree, exp.Query):
        return QueryStatement(**common, query=tree)
    if isinstance(tree, exp.Set):
        items = tree.expressions
        if len(items) != 1 or not isinstance(items[0].this, exp.EQ):
            raise SqlSyntaxError("expected SET key = value", location=location)
        eq = items[0].this
        key = eq.this.name.lower() if isinstance(eq.this, (exp.Column, exp.Identifier)) else str(eq.this).lower()
        value_node = eq.expression
        if isinstance(value_node, exp.Literal):
            if value_node.is_string:
                value: str | int | float | bool = value_node.name
            else:
                text_value = value_node.name
                value = float(text_value) if any(ch in text_value for ch in ".eE") else int(text_value)
        elif isinstance(value_node, exp.Boolean):
            value = bool(value_node.this)
        else:
            value = value_node.sql(dialect=SqlStream).strip("'\"")
        return SetStatement(**common, key=key, value=OptionValue(value, source.location(value_node)))
    if isinstance(tree, ShowStmt):
        name = tree.args.get("name")
        return ShowStatement(
            **common, what=tree.this.name.upper(), name=normalize_name(name) if name is not None else None
        )
    if isinstance(tree, exp.Describe):
        return DescribeStatement(**common, name=normalize_name(tree.this))
    if isinstance(tree, ExplainStmt):
        return ExplainStatement(**common, statement=to_statement(tree.this, source, location, text),
                                analyze=bool(tree.args.get("analyze")))
    if isinstance(tree, exp.Drop):
        kind = str(tree.args.get("kind") or "").upper()
        tables = tree.args.get("tables") or []
        if kind not in ("SOURCE", "SINK", "VIEW", "TABLE", "FUNCTION") or len(tables) != 1:
            raise UnsupportedSqlError(
                "expected DROP SOURCE|SINK|VIEW|TABLE|FUNCTION name", location=location
            )
        return DropStatement(
            **common, kind=kind, name=normalize_name(tables[0]), if_exists=bool(tree.args.get("exists"))
        )
    if isinstance(tree, StopQuery):
        return StopQueryStatement(**common, number=int(tree.this.name))
    raise UnsupportedSqlError(
        f"{type(tree).__name__.upper()} statements are not supported by sqlstream",
        location=location,
        hint="supported: CREATE SOURCE/SINK/TABLE/VIEW/FUNCTION, INSERT INTO, SELECT, SET, SHOW, "
        "DESCRIBE, EXPLAIN, DROP",
    )
