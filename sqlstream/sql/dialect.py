"""The sqlstream SQL dialect: sqlglot's ``risingwave`` dialect plus streaming statements.

What is added on top of RisingWave:

* ``CREATE SOURCE | SINK | TABLE | VIEW | FUNCTION ... AS MODEL`` parsed into
  :class:`CreateStream` with a generic ``WITH (key = value, ...)`` option list
  (:class:`StreamOption`), so ``format = 'json'`` or ``start = ...`` are plain
  options instead of sqlglot's special properties.
* Window table functions in ``FROM`` — ``TUMBLE/HOP/CUMULATE/SESSION`` in the short
  form and Flink's ``TABLE(TUMBLE(TABLE src, DESCRIPTOR(ts), size))`` long form — both
  normalized into :class:`WindowTVF`.
* Model calls as table functions, :class:`ModelPredict`: Flink's
  ``ML_PREDICT(TABLE t, MODEL m, DESCRIPTOR(a, b))`` and BigQuery's
  ``ML.PREDICT(MODEL m, TABLE t | (SELECT ...))`` (the planner makes them
  ``SELECT *, m(...) FROM t``).
* ``EMIT ON WINDOW CLOSE`` and ``EMIT EVERY INTERVAL ...`` after a query (:class:`Emit`).
* ``SHOW ...``, ``EXPLAIN [ANALYZE] <query>``, ``STOP QUERY n`` as typed nodes.
* ``model_version(f)``: the name ``f`` (a model function, not a column) becomes the
  string ``'f'``, so name resolution leaves it alone.
* Registered user function names parse as plain calls even when they collide with a
  dialect built-in (``predict``, ``explode``, ...): see :attr:`Parser.user_functions`.
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.dialects.risingwave import RisingWave
from sqlglot.parsers.risingwave import RisingWaveParser
from sqlglot.tokens import Token, TokenType

from sqlstream.sql.flink_functions import FLINK_FUNCTIONS
from sqlstream.sql.model_predict import ModelPredict, ModelPredictParsing, model_predict_sql

__all__ = [
    "SqlStream",
    "CreateStream",
    "StreamOption",
    "WindowTVF",
    "ModelPredict",
    "Emit",
    "ShowStmt",
    "ExplainStmt",
    "StopQuery",
    "WINDOW_KINDS",
]

WINDOW_KINDS = ("TUMBLE", "HOP", "CUMULATE", "SESSION")

# Built-ins of other dialects that are ordinary names in ours; without this,
# ``predict(x)`` fails inside sqlglot with "Required keyword 'expression' missing".
_DROPPED_BUILTINS = {"PREDICT", "EXPLODE", "SCORE", "CLASSIFY", "ML_PREDICT", "FORECAST"}


class CreateStream(exp.Expression):
    """``CREATE SOURCE|SINK|TABLE|VIEW|FUNCTION``; ``kind`` is the upper-case object kind."""

    arg_types = {
        "kind": True,
        "this": True,  # Identifier: the object's name
        "columns": False,  # list[ColumnDef]
        "watermark": False,  # WatermarkColumnConstraint
        "query": False,  # a Query (sink AS ..., view AS ...)
        "source_name": False,  # Identifier (CREATE SINK x FROM name)
        "model": False,  # Literal string (CREATE FUNCTION f AS MODEL 'path')
        "options": False,  # list[StreamOption]
        "exists": False,  # IF NOT EXISTS
        "replace": False,  # OR REPLACE
    }


class StreamOption(exp.Expression):
    """One ``key = value`` of a ``WITH (...)`` list. ``this`` is the key as a string."""

    arg_types = {"this": True, "value": True}


class WindowTVF(exp.Expression):
    """A window table function: ``kind`` in TUMBLE/HOP/CUMULATE/SESSION.

    ``this`` is the input relation (Table or Subquery), ``time_column`` an Identifier,
    ``sizes`` the interval arguments in SQL order, ``partition_by`` (SESSION long form)
    a list of Column.
    """

    arg_types = {
        "kind": True,
        "this": True,
        "time_column": True,
        "sizes": True,
        "partition_by": False,
        "alias": False,
    }

    @property
    def alias_or_name(self) -> str:  # what FROM-clause scoping calls it
        alias = self.args.get("alias")
        if alias is not None:
            return alias.name
        inner = self.this
        return inner.alias_or_name if isinstance(inner, exp.Expr) else ""


class Emit(exp.Expression):
    """``EMIT ON WINDOW CLOSE`` (``this`` None) or ``EMIT EVERY <interval>``."""

    arg_types = {"this": False}


class ShowStmt(exp.Expression):
    arg_types = {"this": True, "name": False}


class ExplainStmt(exp.Expression):
    arg_types = {"this": True, "analyze": False}


class StopQuery(exp.Expression):
    arg_types = {"this": True}


def _model_version(args: list) -> exp.Expr:
    """``model_version(f)`` → ``model_version('f')``: the argument names a function."""
    named = []
    for arg in args:
        if isinstance(arg, exp.Column) and not arg.args.get("table"):
            name = exp.Literal.string(arg.name)
            name.meta.update(arg.this.meta)
            arg = name
        named.append(arg)
    return exp.Anonymous(this="model_version", expressions=named)


def _token_meta(node: exp.Expr, token: Token) -> exp.Expr:
    node.meta.update(line=token.line, col=token.col, start=token.start, end=token.end)
    return node


class _Parser(ModelPredictParsing, RisingWaveParser):
    FUNCTIONS = {
        **{k: v for k, v in RisingWaveParser.FUNCTIONS.items() if k not in _DROPPED_BUILTINS},
        **FLINK_FUNCTIONS,
        "MODEL_VERSION": _model_version,
    }
    FUNCTION_PARSERS = {
        k: v for k, v in RisingWaveParser.FUNCTION_PARSERS.items() if k not in _DROPPED_BUILTINS
    }

    STATEMENT_PARSERS = {
        **RisingWaveParser.STATEMENT_PARSERS,
        TokenType.CREATE: lambda self: self._parse_stream_create(),
        TokenType.SHOW: lambda self: self._parse_stream_show(),
    }

    #: upper-case names of registered UDFs/models; set by the script parser per statement
    user_functions: frozenset[str] = frozenset()

    # -- statements -------------------------------------------------------------------

    def _parse_statement(self) -> exp.Expr | None:
        if self._curr and self._curr.text.upper() == "EXPLAIN" and self._curr.token_type != TokenType.STRING:
            token = self._curr
            self._advance()
            analyze = bool(self._curr and self._curr.text.upper() == "ANALYZE"
                           and self._curr.token_type != TokenType.STRING)
            if analyze:
                self._advance()
            inner = self._parse_statement()
            if inner is None:
                self.raise_error("EXPLAIN needs a query", token)
            return _token_meta(self.expression(ExplainStmt(this=inner, analyze=analyze)), token)
        if self._curr and self._match_text_seq("STOP", "QUERY"):
            token = self._prev
            number = self._parse_number()
            if number is None:
                self.raise_error("STOP QUERY needs a query number, e.g. STOP QUERY 1")
            return _token_meta(self.expression(StopQuery(this=number)), token)
        return super()._parse_statement()

    def _parse_stream_show(self) -> exp.Expr:
        token = self._prev
        if not self._curr:
            self.raise_error("SHOW needs what to show, e.g. SHOW SOURCES", token)
        what = self._curr.text.upper()
        self._advance()
        name = self._parse_id_var(any_token=True) if self._curr else None
        node = self.expression(ShowStmt(this=exp.Literal.string(what), name=name))
        return _token_meta(node, token)

    def _parse_stream_create(self) -> exp.Expr:
        start = self._prev
        replace = self._match_pair(TokenType.OR, TokenType.REPLACE)
        if not self._curr:
            self.raise_error("CREATE needs an object kind: SOURCE, SINK, TABLE, VIEW or FUNCTION")
        kind_token = self._curr
        kind = kind_token.text.upper()
        if kind not in ("SOURCE", "SINK", "TABLE", "VIEW", "FUNCTION"):
            self.raise_error(
                f"CREATE {kind} is not a sqlstream statement; expected CREATE SOURCE, SINK, TABLE, VIEW or FUNCTION",
                kind_token,
            )
        self._advance()
        exists = self._parse_exists(not_=True)
        name_token = self._curr
        name = self._parse_id_var(any_token=False)
        if name is None:
            self.raise_error(f"CREATE {kind} needs a name")
        node = CreateStream(kind=kind, this=name, exists=exists, replace=replace)
        _token_meta(node, start)
        node.meta["kind_token"] = (kind_token.line, kind_token.col)
        node.meta["name_token"] = (name_token.line, name_token.col)

        if kind == "FUNCTION":
            if not (self._match(TokenType.ALIAS) and self._match_text_seq("MODEL")):
                self.raise_error(
                    "expected AS MODEL 'path.onnx' (Python functions are registered with @udf in udfs/*.py)"
                )
            model = self._parse_string()
            if model is None:
                self.raise_error("AS MODEL needs the model path as a string literal")
            node.set("model", model)
        elif kind == "VIEW":
            if not self._match(TokenType.ALIAS):
                self.raise_error("expected AS <query> after the view name")
            node.set("query", self._parse_stream_query())
        else:
            if self._match(TokenType.L_PAREN, advance=False):
                schema = self._parse_schema(this=exp.to_identifier("x"))
                columns, watermark = [], None
                for item in schema.expressions if schema else []:
                    if isinstance(item, exp.WatermarkColumnConstraint):
                        watermark = item
                    else:
                        columns.append(item)
                node.set("columns", columns)
                node.set("watermark", watermark)
            if kind == "SINK" and not node.args.get("columns"):
                if self._match(TokenType.FROM):
                    node.set("source_name", self._parse_id_var())
                elif self._match(TokenType.ALIAS):
                    node.set("query", self._parse_stream_query())
                else:
                    self.raise_error(
                        "CREATE SINK needs AS <query>, FROM <name>, or a column list followed by INSERT INTO"
                    )
        if self._match(TokenType.WITH):
            node.set("options", self._parse_stream_options())
        return self.validate_expression(node)

    def _parse_stream_query(self) -> exp.Expr:
        token = self._curr
        query = self._parse_select()
        if query is None:
            self.raise_error("expected a query (SELECT ...)", token)
        return self._parse_set_operations(query) if query else query

    def _parse_stream_options(self) -> list[exp.Expr]:
        if not self._match(TokenType.L_PAREN):
            self.raise_error("expected ( after WITH")
        options: list[exp.Expr] = []
        while not self._match(TokenType.R_PAREN):
            if options and not self._match(TokenType.COMMA):
                self.raise_error("expected , or ) in the WITH (...) option list")
            if self._match(TokenType.R_PAREN):
                break
            key_token = self._curr
            if key_token is None:
                self.raise_error("unterminated WITH (...) option list")
            if key_token.token_type == TokenType.STRING:
                key = key_token.text
                self._advance()
            else:
                parts = [key_token.text]
                self._advance()
                while self._match(TokenType.DOT):
                    parts.append(self._curr.text)
                    self._advance()
                key = ".".join(parts)
            if not self._match(TokenType.EQ):
                self.raise_error(f"expected = after option '{key}'")
            value_token = self._curr
            value = self._parse_option_value()
            option = StreamOption(this=key, value=value)
            _token_meta(option, key_token)
            option.meta["value_token"] = (value_token.line, value_token.col)
            options.append(option)
        return options

    def _parse_option_value(self) -> exp.Expr:
        if self._match(TokenType.DASH):
            number = self._parse_number()
            if number is None:
                self.raise_error("expected a number after -")
            # not Literal.number("-1"): that builds Neg(1), whose name loses the sign
            return exp.Literal(this=f"-{number.name}", is_string=False)
        for parse in (self._parse_string, self._parse_number, self._parse_boolean):
            value = parse()
            if value is not None:
                return value
        if self._curr and self._curr.token_type not in (TokenType.COMMA, TokenType.R_PAREN):
            token = self._curr
            self._advance()
            return exp.Literal.string(token.text)
        self.raise_error("expected an option value")
        raise AssertionError("unreachable")

    def _parse_csv(self, parse_method, sep=TokenType.COMMA):
        # sqlglot skips empty items (``a,, b``, ``f(a,)``, a trailing comma); Postgres
        # rejects them, and so do we: a stray comma is a typo, not something to guess at
        items = []
        result = parse_method()
        if result is not None:
            items.append(result)
        while self._match(sep):
            comma = self._prev
            if isinstance(result, exp.Expr):
                self._add_comments(result)
            result = parse_method()
            if result is None and sep == TokenType.COMMA:
                self.raise_error("missing item after ','", comma)
            if result is not None:
                items.append(result)
        return items

    # -- functions ----------------------------------------------------------------------

    def _parse_function_call(self, functions=None, anonymous=False, optional_parens=True, any_token=False):
        if self._curr and self._curr.text.upper() in self.user_functions:
            anonymous = True
        return super()._parse_function_call(
            functions=functions, anonymous=anonymous, optional_parens=optional_parens, any_token=any_token
        )

    # -- windows in FROM ----------------------------------------------------------------

    def _parse_table(self, *args, **kwargs):
        spelling = self._at_model_predict() if self._curr else None
        if spelling is not None:
            return self._parse_model_predict(spelling, kwargs)
        if self._curr and self._next and self._next.token_type == TokenType.L_PAREN:
            upper = self._curr.text.upper()
            if upper == "TABLE":
                token = self._curr
                self._advance(2)
                tvf = self._parse_window_tvf(long_form=True)
                self._match_r_paren()
                return self._finish_window_tvf(tvf, token, kwargs)
            if upper in WINDOW_KINDS:
                token = self._curr
                self._advance()
                return self._finish_window_tvf(self._parse_window_tvf_args(upper, long_form=False), token, kwargs)
        return super()._parse_table(*args, **kwargs)

    def _finish_window_tvf(self, tvf: WindowTVF, token: Token, kwargs: dict) -> WindowTVF:
        _token_meta(tvf, token)
        alias = self._parse_table_alias()
        if alias:
            tvf.set("alias", alias)
        if kwargs.get("joins"):
            for join in self._parse_joins():
                tvf.append("joins", join)
        return tvf

    def _parse_window_tvf(self, long_form: bool) -> WindowTVF:
        kind = self._curr.text.upper() if self._curr else ""
        if kind not in WINDOW_KINDS:
            self.raise_error(
                "expected a window function TUMBLE, HOP, CUMULATE or SESSION inside TABLE(...)"
            )
        self._advance()
        return self._parse_window_tvf_args(kind, long_form)

    def _parse_window_tvf_args(self, kind: str, long_form: bool) -> WindowTVF:
        if not self._match(TokenType.L_PAREN):
            self.raise_error(f"expected ( after {kind}")
        partition_by = None
        if self._match(TokenType.TABLE):
            relation = self._parse_table_parts()
            if self._match(TokenType.PARTITION_BY) or self._match_text_seq("PARTITION", "BY"):
                if self._match(TokenType.L_PAREN, advance=False):
                    partition_by = self._parse_wrapped_csv(self._parse_column)
                else:
                    partition_by = [self._parse_column()]
        elif self._match(TokenType.L_PAREN, advance=False):
            relation = self._parse_select(table=True)
        else:
            relation = self._parse_table_parts()
        if relation is None:
            self.raise_error(f"{kind} needs the input relation as its first argument")
        if not self._match(TokenType.COMMA):
            self.raise_error(f"{kind} needs a time column as its second argument")
        if self._match_text_seq("DESCRIPTOR"):
            time_column = self._parse_wrapped(self._parse_id_var)
        else:
            time_column = self._parse_id_var()
        if time_column is None:
            self.raise_error(f"{kind} needs a time column as its second argument")
        sizes = []
        while self._match(TokenType.COMMA):
            sizes.append(self._parse_bitwise())
        self._match_r_paren()
        return WindowTVF(
            kind=kind, this=relation, time_column=time_column, sizes=sizes, partition_by=partition_by
        )

    # -- EMIT -----------------------------------------------------------------------------

    def _parse_table_alias(self, *args, **kwargs):
        # ``FROM s EMIT ON WINDOW CLOSE``: EMIT starts the clause, it is not an alias of s
        if self._at_emit():
            return None
        return super()._parse_table_alias(*args, **kwargs)

    def _at_emit(self) -> bool:
        return bool(
            self._curr
            and self._curr.token_type == TokenType.VAR
            and self._curr.text.upper() == "EMIT"
            and self._next is not None
        )

    def _parse_query_modifiers(self, this):
        this = super()._parse_query_modifiers(this)
        if isinstance(this, exp.Select) and self._curr and self._curr.text.upper() == "EMIT":
            token = self._curr
            self._advance()
            if self._match_text_seq("ON", "WINDOW", "CLOSE"):
                emit = Emit()
            elif self._match_text_seq("EVERY"):
                interval = self._parse_bitwise()
                if interval is None:
                    self.raise_error("EMIT EVERY needs an interval, e.g. EMIT EVERY INTERVAL '1' SECOND")
                emit = Emit(this=interval)
            else:
                self.raise_error("expected EMIT ON WINDOW CLOSE or EMIT EVERY INTERVAL '<n>' SECOND")
                emit = Emit()
            this.set("emit", _token_meta(emit, token))
            this = super()._parse_query_modifiers(this)
        return this


class _Tokenizer(RisingWave.Tokenizer):
    COMMANDS = RisingWave.Tokenizer.COMMANDS - {TokenType.SHOW}
    KEYWORDS = {
        **{k: v for k, v in RisingWave.Tokenizer.KEYWORDS.items() if k != "EXPLAIN"},
        "FLOAT": TokenType.FLOAT,  # Flink semantics: FLOAT is 32-bit, like REAL
    }


def _window_tvf_sql(self, node: WindowTVF) -> str:
    relation = self.sql(node, "this")
    time_column = self.sql(node, "time_column")
    partition = node.args.get("partition_by")
    if partition:  # only the Flink long form can say PARTITION BY
        keys = ", ".join(self.sql(p) for p in partition)
        relation, time_column = f"TABLE {relation} PARTITION BY ({keys})", f"DESCRIPTOR({time_column})"
    args = [relation, time_column, *(self.sql(size) for size in node.args["sizes"])]
    sql = f"{node.args['kind']}({', '.join(args)})"
    if partition:
        sql = f"TABLE({sql})"
    alias = self.sql(node, "alias")
    return f"{sql} AS {alias}" if alias else sql


def _emit_sql(self, node: Emit) -> str:
    every = node.this
    return f"EMIT EVERY {self.sql(every)}" if every is not None else "EMIT ON WINDOW CLOSE"


class _Generator(RisingWave.Generator):
    """Turns parsed pipelines back into SQL (SHOW SINKS, messages), windows and EMIT included."""

    TRANSFORMS = {**RisingWave.Generator.TRANSFORMS, WindowTVF: _window_tvf_sql, Emit: _emit_sql,
                  ModelPredict: model_predict_sql}

    def select_sql(self, expression: exp.Select) -> str:
        sql = super().select_sql(expression)
        emit = expression.args.get("emit")
        return f"{sql} {self.sql(emit)}" if emit is not None else sql


class SqlStream(RisingWave):
    """sqlglot dialect for sqlstream pipelines."""

    # Postgres' 12-hour HH and milliseconds MS, which sqlglot's mapping lacks (TO_CHAR would print them as text)
    TIME_MAPPING = {**RisingWave.TIME_MAPPING, "HH": "%I", "hh": "%I", "MS": "%3f", "ms": "%3f"}
    Tokenizer = _Tokenizer
    Parser = _Parser
    Generator = _Generator
