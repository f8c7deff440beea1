"""SQL text for DataFusion: expressions in its dialect, and a stateless stage (select
items and a condition over a node's rows) as one planned program.

Each stateless stage is one ``SELECT ... FROM __input WHERE ...`` text, planned once
by :class:`~sqlstream.operators.datafusion_program.DataFusionProgram`; calls of Python
and model functions are taken out first by the catalog's UDF planner (they run in a
vectorized step before the program). Two stages without such calls in a row fuse into
one program. When a program only picks and renames columns, the stage also records
which input column each output column is, so the operator skips DataFusion; when its
expressions are ones Arrow kernels compute exactly as DataFusion does, small batches
run on those (:mod:`sqlstream.plan.arrow_lowering`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import pyarrow as pa
from sqlglot import exp
from sqlglot.dialects.postgres import Postgres

from sqlstream.errors import PlanError, UnknownFunctionError
from sqlstream.hidden import OP_COLUMN, SOURCE_ID_COLUMN, WM_COLUMN
from sqlstream.operators.datafusion_program import INPUT_TABLE, DataFusionProgram, plan_error
from sqlstream.plan.arrow_lowering import arrow_program
from sqlstream.plan.nodes import PlanNode, Stateless
from sqlstream.plan.relation import SelectItem, StageColumns
from sqlstream.plan.scope import column_ref
from sqlstream.sql.statements import SourceText

__all__ = ["DataFusionDialect", "to_datafusion_sql", "quote_identifier", "column_projection", "stateless_stage"]

_KEPT_HIDDEN = (WM_COLUMN, OP_COLUMN, SOURCE_ID_COLUMN)  # carried through every stage


class DataFusionDialect(Postgres):
    """Postgres as sqlglot writes it, with DataFusion's spellings where they differ."""

    class Generator(Postgres.Generator):
        TRANSFORMS = {
            **Postgres.Generator.TRANSFORMS,
            exp.TryCast: lambda self, e: f"TRY_CAST({self.sql(e, 'this')} AS {self.sql(e, 'to')})",
            exp.ToChar: lambda self, e: self.func("TO_CHAR", e.this, e.args.get("format")),
            # the parser keeps TO_CHAR's pattern in strftime form, which is what DataFusion reads
            exp.TimeToStr: lambda self, e: self.func("TO_CHAR", e.this, e.args.get("format")),
            # Postgres has no ROUND(double, int) and sqlglot casts to DECIMAL for it; DataFusion has
            exp.Round: lambda self, e: self.func("ROUND", e.this, e.args.get("decimals")),
        }

        def dot_sql(self, expression: exp.Dot) -> str:
            # DataFusion rejects `f(x).field`; `f(x)['field']` is its struct access
            if isinstance(expression.this, (exp.Column, exp.Dot, exp.Identifier)):
                return super().dot_sql(expression)
            return f"{self.sql(expression, 'this')}['{expression.expression.name}']"


def to_datafusion_sql(node: exp.Expr) -> str:
    return node.sql(dialect=DataFusionDialect)


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def column_projection(select: Sequence[exp.Expr], input_schema: pa.Schema, output_schema: pa.Schema) -> tuple[int, ...] | None:
    """The input column index of each output column when ``select`` (a program's SELECT
    list, without a WHERE clause) only picks columns of its input with unchanged
    types, else None."""
    if len(select) != len(output_schema):
        return None
    names = input_schema.names
    indexes = []
    for expression, out in zip(select, output_schema, strict=True):
        if not isinstance(expression, exp.Column) or expression.args.get("table") or not isinstance(expression.this, exp.Identifier):
            return None
        name = expression.name if expression.this.args.get("quoted") else expression.name.lower()
        if names.count(name) != 1:
            return None
        index = names.index(name)
        if input_schema.field(index).type != out.type:
            return None
        indexes.append(index)
    return tuple(indexes)


def stateless_stage(
    node: PlanNode, items: list[SelectItem], condition: exp.Expr | None, *, udf_planner, source: SourceText,
    label: str = "", keep_hidden: bool = True, columns: StageColumns | None = None,
) -> Stateless:
    """One DataFusion SELECT of ``items`` over ``node``'s rows where ``condition`` holds
    (calls of registered functions evaluated before it by ``udf_planner``, if any).
    ``columns``: the output's event-time and window columns, if not those passed through."""
    expressions = [i.expression for i in items]
    udf_step = None
    input_schema = node.schema
    if udf_planner is not None:
        expressions, condition, udf_step, input_schema = udf_planner.extract(expressions, condition, input_schema, source)
    hidden = [column_ref(f.name) for f in input_schema if f.name in _KEPT_HIDDEN] if keep_hidden else []
    parts = [f"{to_datafusion_sql(e)} AS {quote_identifier(i.name)}" for e, i in zip(expressions, items)]
    parts += [quote_identifier(h.name) for h in hidden]
    if not parts:
        raise PlanError("a query must select at least one column")
    if columns is None:
        columns = _passed_through(node, items, expressions)
    relation, child, fused = INPUT_TABLE, node, False
    if isinstance(node, Stateless) and node.udf_step is None and udf_step is None:
        # fuse with the stage below: one DataFusion call per batch instead of two
        relation, child, input_schema = f"({node.program.sql}) AS {INPUT_TABLE}", node.children[0], node.program.input_schema
        fused = True
    sql = f"SELECT {', '.join(parts)} FROM {relation}"
    if condition is not None:
        sql += f" WHERE {to_datafusion_sql(condition)}"
    # small batches skip DataFusion where Arrow kernels compute the same (not across a fusion)
    arrow = None if fused else partial(arrow_program, expressions + hidden, condition, input_schema)
    program = _program(sql, input_schema, items, condition, source, arrow)
    projection = None
    if not fused and condition is None:
        projection = column_projection(expressions + hidden, program.input_schema, program.schema)
    return Stateless(
        child, program, udf_step, projection=projection, rowtime=columns.rowtime, window=columns.window,
        key_columns=columns.key_columns, window_end=columns.window_end, label=label or "query",
    )


def _program(sql: str, schema: pa.Schema, items: list[SelectItem], condition, source: SourceText,
             arrow=None) -> DataFusionProgram:
    try:
        return DataFusionProgram(sql, schema, arrow)
    except Exception as error:  # DataFusion planning errors are plain exceptions
        err = plan_error(error)
        name = err.function_name if isinstance(err, UnknownFunctionError) else None
        nodes = [i.expression for i in items] + ([condition] if condition is not None else [])
        if name:
            for node in nodes:
                for call in node.find_all(exp.Anonymous, exp.Func):
                    if _call_name(call) == name.lower():
                        err.location = source.location(call)
                        raise err from error
        err.location = source.location(nodes[0]) if nodes else None
        raise err from error


def _renamed(items: list[SelectItem], expressions: list[exp.Expr]) -> dict[str, str]:
    """Input column → the first output column that passes it through unchanged."""
    renamed: dict[str, str] = {}
    for item, expression in zip(items, expressions):
        if isinstance(expression, exp.Column) and not expression.args.get("table"):
            renamed.setdefault(expression.name, item.name)
    return renamed


def _passed_through(node: PlanNode, items: list[SelectItem], expressions: list[exp.Expr]) -> StageColumns:
    """Event-time and window columns of ``node`` that a projection passes through unchanged."""
    renamed = _renamed(items, expressions)
    rowtime = renamed.get(node.rowtime) if node.rowtime else None
    window = None
    if node.window is not None and all(w in renamed for w in node.window):
        window = (renamed[node.window[0]], renamed[node.window[1]])
    key_columns = None  # a final window result's group key columns, if the projection keeps them all
    if (window or node.updating) and node.key_columns is not None and all(k in renamed for k in node.key_columns):
        key_columns = tuple(renamed[k] for k in node.key_columns)
    window_end = next(
        (i.name for i, e in zip(items, expressions, strict=True)
         if node.window_end and isinstance(e, exp.Column) and not e.args.get("table") and e.name == node.window_end),
        None,
    )
    return StageColumns(rowtime, window, key_columns, window_end)


def _call_name(call: exp.Expr) -> str:
    """The SQL name of a function call: ``foo`` for foo(x), ``sign`` for sign(x)."""
    if isinstance(call, exp.Anonymous):
        return str(call.this).lower()
    return call.sql_name().lower() if isinstance(call, exp.Func) else call.name.lower()
