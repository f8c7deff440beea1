"""Python/model function calls in a query: planned once, evaluated per micro-batch.

DataFusion's Python UDFs are called per 8192-row chunk, run twice when a call is in
both WHERE and SELECT, and lose the exception type. So calls to registered functions
are taken out of the SQL: each distinct call becomes a column ``__udfN`` that
:class:`UdfStep` computes on the whole micro-batch (once, even if the call appears in
WHERE and SELECT), and DataFusion sees a plain column. The step runs in this order:

1. the WHERE conjuncts without calls filter first (functions never see rows the
   query drops), together with the arguments that are expressions (one DataFusion
   projection per nesting level: ``f(g(x) + 1)`` computes ``g``, then ``g(x) + 1``,
   then ``f``);
2. the calls the WHERE clause needs, then the rest of the WHERE clause;
3. the calls only the SELECT list needs, on the rows that passed.

``model_version(f)`` names the version of model function ``f`` that scores the batch
(see ``sqlstream/udf/model_versions.py``): a call without arguments to the step.

``immutable`` and ``stable`` functions with equal arguments are computed once per
batch; each ``volatile`` call site runs on its own. ``f(x).field`` on a STRUCT result
becomes ``"__udfN"['field']`` for DataFusion.

How a step runs per batch (and isolates failing rows) is ``sqlstream/udf/step.py``.
"""

from __future__ import annotations

from functools import partial

import pyarrow as pa
from sqlglot import exp

from sqlstream.errors import Location, SqlAnalysisError, UdfError, did_you_mean
from sqlstream.operators.datafusion_program import DataFusionProgram, plan_error
from sqlstream.plan.arrow_lowering import arrow_program
from sqlstream.plan.join_conditions import and_all, conjuncts
from sqlstream.plan.lowering import to_datafusion_sql
from sqlstream.sql.types import sql_type_name
from sqlstream.udf.model_versions import MODEL_VERSION_FUNCTION, ModelVersionFunction, VersionedModel
from sqlstream.udf.step import CallArgument, CallStage, FunctionCall, ProgramStage, UdfStep

__all__ = ["UdfPlanner"]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _column(name: str) -> exp.Column:
    return exp.Column(this=exp.Identifier(this=name, quoted=True))


def _literal(node: exp.Expr) -> tuple[object, pa.DataType] | None:
    """A constant argument as (value, Arrow type), or None if it is not one."""
    negative = False
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        node, negative = node.this, True
    if isinstance(node, exp.Literal):
        if node.is_string:
            return node.name, pa.string()
        try:
            value: object = int(node.name)
            kind = pa.int64()
        except ValueError:
            value, kind = float(node.name), pa.float64()
        return (-value if negative else value), kind  # type: ignore[operator]
    if isinstance(node, exp.Boolean):
        return bool(node.this), pa.bool_()
    if isinstance(node, exp.Null):
        return None, pa.null()
    return None


class UdfPlanner:
    """Takes calls of registered functions out of a SELECT (see the module docstring)."""

    def __init__(self, functions: dict):
        self.functions = functions

    def function(self, node: exp.Expr):
        if isinstance(node, exp.Anonymous):
            name = str(node.this).lower()
            entry = self.functions.get(name)
            if entry is not None:
                return entry.impl
            if name == MODEL_VERSION_FUNCTION:
                model = self._versioned_model(node)
                return ModelVersionFunction(model) if model is not None else None
        return None

    def _versioned_model(self, node: exp.Anonymous) -> VersionedModel | None:
        args = node.expressions  # the dialect turned a name into a string: model_version('f')
        if len(args) != 1 or not isinstance(args[0], exp.Literal) or not args[0].is_string:
            return None
        entry = self.functions.get(args[0].name.lower())
        return entry.impl if entry is not None and isinstance(entry.impl, VersionedModel) else None

    def _check_model_versions(self, roots: list[exp.Expr], source) -> None:
        """``model_version(x)`` where ``x`` is not a model function is a located error."""
        for root in roots:
            for node in root.find_all(exp.Anonymous):
                if str(node.this).lower() != MODEL_VERSION_FUNCTION or self.function(node) is not None:
                    continue
                models = self.model_names()
                args = node.expressions
                given = args[0] if len(args) == 1 else node
                what = f"{args[0].sql()}" if len(args) == 1 else f"{len(args)} arguments"
                raise SqlAnalysisError(
                    f"model_version() takes the name of one model function, not {what}",
                    location=source.location(given) if source is not None else None,
                    hint=(did_you_mean(args[0].name, models) if len(args) == 1 else None)
                    or ("model functions: " + ", ".join(models) if models else "CREATE FUNCTION f AS MODEL 'm.onnx' first"),
                )

    def model(self, name: str) -> VersionedModel | None:
        """Model function ``name`` (for ML_PREDICT / ML.PREDICT), or None."""
        entry = self.functions.get(name)
        return entry.impl if entry is not None and isinstance(entry.impl, VersionedModel) else None

    def model_names(self) -> list[str]:
        return sorted(e.name for e in self.functions.values() if isinstance(e.impl, VersionedModel))

    def has_call(self, node: exp.Expr) -> bool:
        return any(self.function(n) is not None for n in node.walk())

    def extract(self, expressions: list[exp.Expr], condition: exp.Expr | None, schema: pa.Schema, source):
        """(expressions, condition, step, schema): the SELECT list and WHERE clause for
        DataFusion, with calls replaced by the columns ``step`` adds (``schema``)."""
        roots = list(expressions) + ([condition] if condition is not None else [])
        self._check_model_versions(roots, source)
        if not any(self.has_call(root) for root in roots):
            return expressions, condition, None, schema
        return _StepBuilder(self, schema, source).build(expressions, condition)


class _StepBuilder:
    def __init__(self, planner: UdfPlanner, schema: pa.Schema, source):
        self.planner = planner
        self.schema = schema
        self.source = source
        self.calls: list[FunctionCall] = []
        self.by_key: dict[str, str] = {}
        self.level_of: dict[str, tuple[str, int]] = {}
        self.stages: list = []
        self.pending_filter: exp.Expr | None = None
        self.taken = set(schema.names)

    def _fresh(self, prefix: str) -> str:
        n = 0
        while f"{prefix}{n}" in self.taken:
            n += 1
        name = f"{prefix}{n}"
        self.taken.add(name)
        return name

    def _location(self, node: exp.Expr) -> Location | None:
        return self.source.location(node) if self.source is not None else None

    # -- calls → columns -------------------------------------------------------------------

    def lower(self, node: exp.Expr, phase: str) -> exp.Expr:
        def visit(n: exp.Expr) -> exp.Expr:
            if isinstance(n, exp.Dot):
                target = n.this
                while isinstance(target, exp.Paren):
                    target = target.this
                if self.planner.function(target) is not None:
                    return self._field_access(visit(target), target, n)
                return n
            impl = self.planner.function(n)
            if impl is None:
                return n
            if getattr(impl, "is_aggregate", False):  # an aggregate outside an aggregation's calls
                raise SqlAnalysisError(f"aggregate function {impl.name}() is not allowed here", location=self._location(n),
                                       hint="aggregates go in the SELECT list or HAVING of a GROUP BY (or window) query")
            # model_version(f) names a function, it takes no column
            nodes = [] if isinstance(impl, ModelVersionFunction) else [a.copy().transform(visit) for a in n.expressions]
            level = 0
            for a in nodes:
                for column in a.find_all(exp.Column):
                    seen = self.level_of.get(column.name)
                    if seen is not None and seen[0] == phase:
                        level = max(level, seen[1] + 1)
            call_node = n.copy()
            if not isinstance(impl, ModelVersionFunction):
                call_node.set("expressions", [a.copy() for a in nodes])
            key = to_datafusion_sql(call_node)
            if impl.volatility != "volatile" and key in self.by_key:
                return _column(self.by_key[key])
            output = self._fresh("__udf")
            text = n.sql(dialect="postgres", normalize_functions=False)  # for EXPLAIN and errors
            self.calls.append(FunctionCall(impl, nodes, output, text, self._location(n), phase, level))
            self.by_key[key] = output
            self.level_of[output] = (phase, level)
            return _column(output)

        return node.copy().transform(visit)

    def _field_access(self, column: exp.Column, call: exp.Expr, dot: exp.Dot) -> exp.Expr:
        impl = self.planner.function(call)
        wanted = dot.expression.name
        result = impl.return_type
        if not pa.types.is_struct(result):
            raise SqlAnalysisError(
                f"{impl.name}(...) returns {sql_type_name(result)}, not a STRUCT: it has no field '{wanted}'",
                location=self._location(dot.expression) or self._location(call),
            )
        names = [f.name for f in result]
        quoted = isinstance(dot.expression, exp.Identifier) and dot.expression.args.get("quoted")
        match = wanted if wanted in names else None
        if match is None and not quoted:
            match = next((n for n in names if n.lower() == wanted.lower()), None)
        if match is None:
            raise SqlAnalysisError(
                f"{impl.name}(...) returns {sql_type_name(result)}, which has no field '{wanted}'",
                location=self._location(dot.expression) or self._location(call),
                hint=did_you_mean(wanted, names) or "fields: " + ", ".join(names),
            )
        return exp.Bracket(this=column, expressions=[exp.Literal.string(match)])

    # -- stages ------------------------------------------------------------------------------

    def build(self, expressions: list[exp.Expr], condition: exp.Expr | None):
        parts = conjuncts(condition)
        plain = [c for c in parts if not self.planner.has_call(c)]
        with_calls = [c for c in parts if self.planner.has_call(c)]
        where = [self.lower(c, "where") for c in with_calls]
        select = [self.lower(e, "select") for e in expressions]
        self.pending_filter = and_all(plain)
        self._phase([c for c in self.calls if c.phase == "where"])
        select_calls = [c for c in self.calls if c.phase == "select"]
        remaining = where + ([self.pending_filter] if self.pending_filter is not None else [])
        if not select_calls:
            # the last filter runs in the query's own DataFusion program
            self.pending_filter = None
            return select, and_all(remaining), UdfStep(self.stages), self.schema
        if where:  # (without calls in WHERE, its plain part joins the first program below)
            self.pending_filter = None
            condition = and_all(remaining)
            self._add_program(f"SELECT * FROM __input WHERE {to_datafusion_sql(condition)}", remaining, "filter",
                              [_column(n) for n in self.schema.names], condition)
        self._phase(select_calls)
        return select, None, UdfStep(self.stages), self.schema

    def _phase(self, calls: list[FunctionCall]) -> None:
        for level in sorted({c.level for c in calls}):
            group = [c for c in calls if c.level == level]
            items: dict[str, tuple[str, exp.Expr]] = {}
            names = set(self.schema.names)
            for call in group:
                call.args = []
                for node in call.nodes:
                    constant = _literal(node)
                    if isinstance(node, exp.Column) and not node.args.get("table") and node.name in names:
                        call.args.append(CallArgument(column=node.name))
                    elif constant is not None:
                        call.args.append(CallArgument(literal=constant[0], literal_type=constant[1]))
                    else:
                        text = to_datafusion_sql(node)
                        if text not in items:
                            items[text] = (self._fresh("__arg"), node)
                        call.args.append(CallArgument(column=items[text][0]))
            if items or self.pending_filter is not None:
                sql = "SELECT *" + "".join(f", {text} AS {_quote(name)}" for text, (name, _) in items.items())
                sql += " FROM __input"
                nodes = [node for _, node in items.values()]
                outputs = [_column(n) for n in self.schema.names] + nodes
                condition = self.pending_filter
                if condition is not None:
                    sql += f" WHERE {to_datafusion_sql(condition)}"
                    nodes.append(condition)
                    self.pending_filter = None
                self._add_program(sql, nodes, "arguments" if items else "filter", outputs, condition)
            for call in group:
                types = [self.schema.field(a.column).type if a.column is not None else a.literal_type for a in call.args]
                try:
                    result_type = call.impl.check_args(types)
                except UdfError as error:
                    raise error.with_location(call.location)
                self.schema = self.schema.append(pa.field(call.output, result_type))
                self.stages.append(CallStage(call, types))

    def _add_program(self, sql: str, nodes: list[exp.Expr], what: str, outputs: list[exp.Expr],
                     condition: exp.Expr | None) -> None:
        """``sql`` as a program stage; ``outputs`` and ``condition`` are its SELECT list and
        WHERE clause, for the Arrow path of small batches."""
        try:
            program = DataFusionProgram(sql, self.schema, partial(arrow_program, outputs, condition, self.schema))
        except Exception as error:  # DataFusion planning errors are plain exceptions
            err = plan_error(error)
            err.location = self._location(nodes[0]) if nodes else None
            raise err from error
        self.schema = program.schema
        self.stages.append(ProgramStage(program, what))
