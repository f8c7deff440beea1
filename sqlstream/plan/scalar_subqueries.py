"""Scalar subqueries over a ``TABLE``: ``WHERE price > (SELECT avg(price) FROM ref)``.

A TABLE's rows are loaded once per run (and again on each refresh), so an aggregate
over them is one value for the whole run. Each such subquery in the ``SELECT`` list
or ``WHERE`` is replaced by a column ``$scalar<n>`` (not part of ``*``); the column is attached to every
row of the query's FROM relation by a lookup join on a constant key against the
subquery's one-row result, computed on DataFusion when the table's rows are loaded
(:class:`~sqlstream.plan.join_nodes.LookupJoin`, no per-event state). The subquery
must aggregate without ``GROUP BY`` (exactly one row, NULL over no rows) and may not
name the outer query's columns; a subquery over a stream is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from sqlglot import exp

from sqlstream.errors import SqlAnalysisError
from sqlstream.hidden import OP_COLUMN, WM_COLUMN, is_hidden
from sqlstream.operators.datafusion_program import DataFusionProgram, plan_error
from sqlstream.operators.join_layout import JoinLayout, JoinSide
from sqlstream.plan.join_nodes import LookupJoin, TableRef
from sqlstream.plan.lowering import to_datafusion_sql
from sqlstream.plan.relation import PlannerContext, Relation, SelectItem
from sqlstream.plan.scope import Scope, ScopeColumn, column_ref
from sqlstream.sql.dialect import SqlStream

__all__ = ["ScalarSubquery", "split_scalar_subqueries", "plan_scalar_subqueries"]

_QUALIFIER = "$subquery"  # the replacing columns' qualifier: reachable by them alone, not by *
_HINT = "aggregate a TABLE: (SELECT avg(price) FROM prices); for a stream, join a windowed aggregate instead"


@dataclass(frozen=True)
class ScalarSubquery:
    """One scalar subquery: as written, and the column that replaces it."""

    node: exp.Subquery
    column: str


def split_scalar_subqueries(planner: PlannerContext, select: exp.Select) -> tuple[exp.Select, list[ScalarSubquery]]:
    """``select`` with each scalar subquery of its SELECT list and WHERE replaced by a
    column (a copy when it had some), and those subqueries."""
    places = list(select.expressions) + ([select.args["where"]] if select.args.get("where") is not None else [])
    if not any(_scalars(p) for p in places):
        return select, []
    out = select.copy()
    found: list[ScalarSubquery] = []
    places = list(out.expressions) + ([out.args["where"]] if out.args.get("where") is not None else [])
    for place in places:
        for node in _scalars(place):
            _check(planner, node)
            column = exp.Column(this=exp.Identifier(this=f"$scalar{len(found)}", quoted=True),
                                table=exp.Identifier(this=_QUALIFIER, quoted=True))
            column.this.meta.update({k: v for k, v in _first_meta(node).items()})
            found.append(ScalarSubquery(node.copy(), column.name))
            node.replace(column)
    return out, found


def _scalars(node: exp.Expr) -> list[exp.Subquery]:
    return [s for s in node.find_all(exp.Subquery)
            if not (isinstance(s.parent, exp.In) and s.parent.args.get("query") is s)
            and s.find_ancestor(exp.Subquery) is None]


def _first_meta(node: exp.Expr) -> dict:
    for sub in node.walk():
        if sub.meta.get("line") is not None:
            return {k: v for k, v in sub.meta.items() if k in ("line", "col", "start", "end")}
    return {}


def _check(planner: PlannerContext, node: exp.Subquery) -> None:
    query = node.this
    if not isinstance(query, exp.Select):
        raise planner.unsupported("a scalar subquery must be a plain SELECT", node, _HINT)
    from_ = query.args.get("from_") or query.args.get("from")
    if from_ is None or query.args.get("joins") or not isinstance(from_.this, exp.Table):
        raise planner.unsupported("a scalar subquery must read one TABLE (no joins or nested queries)", node, _HINT)
    for clause in ("group", "having", "limit", "order", "qualify", "distinct"):
        if query.args.get(clause) is not None:
            raise planner.unsupported(f"{clause.upper()} is not supported in a scalar subquery", query.args[clause], _HINT)
    if len(query.expressions) != 1 or query.expressions[0].find(exp.AggFunc) is None:
        raise planner.unsupported("a scalar subquery must compute one aggregate (exactly one row)", node, _HINT)
    if query.find(exp.Subquery, exp.Exists, exp.Window) is not None:
        raise planner.unsupported("subqueries and window functions are not supported in a scalar subquery", node, _HINT)


def plan_scalar_subqueries(planner: PlannerContext, rel: Relation, scalars: list[ScalarSubquery]) -> Relation:
    """``rel`` with one column per scalar subquery, attached by a lookup join."""
    for scalar in scalars:
        rel = _attach(planner, rel, scalar)
    return rel


def _attach(planner: PlannerContext, rel: Relation, scalar: ScalarSubquery) -> Relation:
    query = scalar.node.this
    item = (query.args.get("from_") or query.args.get("from")).this.copy()
    exp.Join(this=item)  # a TABLE is planned only as a join operand
    table = planner.plan_factor(item)
    if not isinstance(table.node, TableRef):
        raise planner.unsupported(
            f"a scalar subquery over the stream '{table.label}' is not supported (its value would change with every "
            "event)", scalar.node, _HINT)
    value = query.expressions[0]
    value = value.this if isinstance(value, exp.Alias) else value
    try:
        resolved = table.scope.resolve(value, planner.source)
        where = query.args.get("where")
        condition = table.scope.resolve(where.this, planner.source) if where is not None else None
    except SqlAnalysisError as error:
        raise planner.unsupported(f"{error.message} in the scalar subquery (it may not name the outer query's columns: "
                                  "correlated scalar subqueries are not supported)", scalar.node, _HINT) from error
    sql = f'SELECT {to_datafusion_sql(resolved)} AS "{scalar.column}", CAST(1 AS BIGINT) AS "__jk" FROM __input'
    if condition is not None:
        sql += f" WHERE {to_datafusion_sql(condition)}"
    try:
        program = DataFusionProgram(sql, table.node.schema)
    except Exception as error:  # DataFusion planning errors are plain exceptions
        err = plan_error(error)
        err.location = planner.loc(scalar.node)
        raise err from error
    node = rel.node
    visible = [f for f in node.schema if not is_hidden(f.name) and f.name != OP_COLUMN]
    items = [SelectItem(column_ref(f.name), f.name) for f in visible]
    items.append(SelectItem(exp.Cast(this=exp.Literal.number(1), to=exp.DataType.build("BIGINT")), "__jk_scalar"))
    stream = planner.stateless(node, items, None, label=rel.label)
    hidden = [f for f in stream.schema if f.name in (WM_COLUMN, OP_COLUMN)]
    field = program.schema.field(scalar.column)
    layout = JoinLayout(
        "inner",
        JoinSide(tuple(f.name for f in visible), ("__jk_scalar",), label=rel.label),
        JoinSide((scalar.column,), ("__jk",), label=table.label),
        tuple([(0, f.name) for f in visible] + [(1, scalar.column)]),
        pa.schema(visible + [field] + hidden),
    )
    text = scalar.node.sql(dialect=SqlStream)
    reason = (f"a scalar subquery over the TABLE '{table.label}': computed once when its rows are loaded and "
              "attached to every row (no per-event state)")
    join = LookupJoin(stream, 0, table.node, program, layout, text, reason,
                      rowtime=node.rowtime, window=node.window, window_end=node.window_end)
    scope = Scope(list(rel.scope.columns) + [ScopeColumn(scalar.column, scalar.column, field.type, {_QUALIFIER},
                                                         qualified_only=True)])
    return Relation(join, scope, rel.window, rel.label, rel.rank)
