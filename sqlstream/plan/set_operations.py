"""Set operations: ``UNION [ALL]``, ``INTERSECT [ALL]``, ``EXCEPT [ALL]``.

``UNION ALL`` concatenates its inputs (:class:`~sqlstream.plan.nodes.Union`): rows of
append-only inputs, or changelogs when an input is an updating result (an append-only
input's rows are its ``+I`` changes). Every other set operation is an aggregation over
that concatenation, grouped by all the columns:

* ``UNION`` is ``SELECT DISTINCT`` over ``UNION ALL``: a row is inserted the first
  time it is seen;
* ``INTERSECT`` / ``EXCEPT`` tag each row with its side and count the rows of each
  side per distinct row (``sum`` of the tags); ``HAVING`` keeps a row while both
  counts are above zero (``INTERSECT``) or while the left count is and the right one
  is zero (``EXCEPT``), so the result retracts and re-inserts a row as the counts
  cross zero;
* ``INTERSECT ALL`` / ``EXCEPT ALL`` compute the number of copies
  (``least(l, r)`` / ``l - r``) and a :class:`RepeatRows` step emits that many.

Over unbounded inputs the result is updating (a changelog) and the state holds one
entry per distinct row; a :class:`NetChanges` step nets each batch's changes per row,
so a row's changes are ``+I`` when it enters the result and ``-D`` when it leaves. When both inputs are final window results with the same
window columns (``window_start``/``window_end`` among the columns), the grouping
includes them, so the aggregation is windowed: final per window, emitted when the
watermark passes ``window_end``, state freed then.

>>> copies_expression("INTERSECT", "l", "r").sql()
'CASE WHEN SUM("l") < SUM("r") THEN SUM("l") ELSE SUM("r") END'
"""

from __future__ import annotations

from typing import Callable

import pyarrow as pa
from sqlglot import exp

from sqlstream.errors import SqlAnalysisError
from sqlstream.hidden import OP_COLUMN, WM_COLUMN, is_hidden
from sqlstream.operators.base import Operator
from sqlstream.operators.context import BuildContext
from sqlstream.operators.set_operation import NetChangesOperator, RepeatRowsOperator
from sqlstream.plan.aggregation import plan_aggregate
from sqlstream.plan.nodes import PlanNode, Stateless, Union
from sqlstream.plan.ranking import reject_pending_rank
from sqlstream.plan.relation import PlannerContext, Relation, SelectItem
from sqlstream.plan.scope import Scope, column_ref
from sqlstream.sql.types import sql_type_name

__all__ = ["plan_set_operation", "RepeatRows", "NetChanges", "copies_expression"]

SetQuery = exp.Union | exp.Intersect | exp.Except


class RepeatRows(PlanNode):
    """Each row as many times as its ``count_column`` says; the column is dropped."""

    def __init__(self, child: PlanNode, count_column: str):
        self.children = (child,)
        self.count_column = count_column
        self.schema = pa.schema([f for f in child.schema if f.name != count_column])
        self.updating = child.updating
        self.rowtime = child.rowtime
        self.window = child.window
        self.window_end = child.window_end

    def make_operator(self, ctx: BuildContext) -> Operator:
        return RepeatRowsOperator(self.count_column)

    def describe(self) -> str:
        return f"RepeatRows (copies = {self.count_column})"


class NetChanges(PlanNode):
    """A changelog netted per batch and distinct row (``-D`` / ``+I`` copies)."""

    def __init__(self, child: PlanNode):
        self.children = (child,)
        self.schema = child.schema
        self.updating = True
        self.rowtime = child.rowtime

    def make_operator(self, ctx: BuildContext) -> Operator:
        return NetChangesOperator()

    def describe(self) -> str:
        return "NetChanges (per batch: -D / +I of each distinct row)"


def plan_set_operation(ctx: PlannerContext, query: SetQuery, plan_query: Callable[[exp.Expr], Relation]) -> Relation:
    """``query`` (a UNION, INTERSECT or EXCEPT of two queries) as a relation; each side
    is planned by ``plan_query``."""
    kind = type(query).__name__.upper()
    distinct = bool(query.args.get("distinct"))
    name = f"{kind}{'' if distinct else ' ALL'}"
    sides = [plan_query(query.this), plan_query(query.expression)]
    for side in sides:
        reject_pending_rank(ctx, side)
    columns = _visible(sides[0].node.schema)
    for side in sides[1:]:
        count = len(_visible(side.node.schema))
        if count != len(columns):
            raise SqlAnalysisError(f"{name} inputs have {len(columns)} and {count} columns", location=ctx.loc(query.expression),
                                   hint="both queries must select the same number of columns")
    if kind == "UNION" and not distinct:
        return _union_all(ctx, sides, columns, [])
    if kind == "UNION":
        union = _union_all(ctx, sides, columns, [])
        return _aggregate(ctx, query, union, columns, [], None, None)
    used = {f.name for f in columns}
    left, right = _fresh("set_left", used), _fresh("set_right", used)
    union = _union_all(ctx, sides, columns, [left, right])
    counts = {"l": exp.Sum(this=column_ref(left)), "r": exp.Sum(this=column_ref(right))}
    if distinct:
        right_test = exp.GT if kind == "INTERSECT" else exp.EQ
        having = exp.and_(exp.GT(this=counts["l"], expression=exp.Literal.number(0)),
                          right_test(this=counts["r"], expression=exp.Literal.number(0)))
        return _aggregate(ctx, query, union, columns, [], having, None)
    copies = _fresh("set_copies", used)
    return _aggregate(ctx, query, union, columns, [SelectItem(copies_expression(kind, left, right), copies)], None, copies)


def copies_expression(kind: str, left: str, right: str) -> exp.Expr:
    """How many copies of a row ``INTERSECT ALL`` (``least(l, r)``) or ``EXCEPT ALL``
    (``l - r``, none when below 1) keeps, from the sums of the side tags."""
    lefts, rights = exp.Sum(this=column_ref(left)), exp.Sum(this=column_ref(right))
    if kind == "INTERSECT":
        return exp.Case(ifs=[exp.If(this=exp.LT(this=lefts, expression=rights), true=lefts.copy())], default=rights.copy())
    return exp.Sub(this=lefts, expression=rights)


def _aggregate(ctx: PlannerContext, query: SetQuery, union: Relation, columns: list[pa.Field], extra: list[SelectItem],
               having: exp.Expr | None, copies: str | None) -> Relation:
    """GROUP BY every column of ``union`` (windowed when the union carries final windows)."""
    keys = [column_ref(f.name) for f in columns]
    items = [SelectItem(column_ref(f.name), f.name) for f in columns] + extra
    select = exp.Select(expressions=[i.expression for i in items])
    if having is not None:
        select.set("having", exp.Having(this=having))
    select.meta.update(_position(query))
    rel = plan_aggregate(ctx, select, union, items, keys, None, from_distinct=not extra and having is None)
    node = RepeatRows(rel.node, copies) if copies is not None else rel.node
    if node.updating:  # the counts change with every row; the rows of the result seldom do
        node = NetChanges(node)
    return Relation(node, Scope.of_schema(node.schema, None), None, rel.label)


def _union_all(ctx: PlannerContext, sides: list[Relation], columns: list[pa.Field],
               tags: list[str]) -> Relation:
    """The sides concatenated in the first side's column names and types; with ``tags``
    (one column name per side), side i has 1 in ``tags[i]`` and 0 in the others."""
    updating = any(s.node.updating for s in sides)
    watermarked = all(WM_COLUMN in s.node.schema.names for s in sides)
    aligned = [
        _aligned(ctx, side.node, columns, [int(i == j) for j in range(len(tags))], tags, updating, watermarked) for i, side in enumerate(sides)
    ]
    schema = aligned[0].schema
    rowtimes = {s.rowtime for s in aligned}
    rowtime = aligned[0].rowtime if len(rowtimes) == 1 and watermarked else None
    windows = {s.window for s in aligned}
    window = aligned[0].window if len(windows) == 1 else None
    node = Union(aligned, schema, rowtime, window)
    return Relation(node, Scope.of_schema(schema, None), None, "union")


def _aligned(ctx: PlannerContext, node: PlanNode, first: list[pa.Field], tag_values: list[int], tags: list[str],
             updating: bool, watermarked: bool) -> Stateless:
    """One input of a union with the first input's column names and types (and its side
    tag, and ``__op`` when the union is a changelog)."""
    items = []
    for target, f in zip(first, _visible(node.schema)):
        ref: exp.Expr = column_ref(f.name)
        if f.type != target.type:
            ref = exp.Cast(this=ref, to=exp.DataType.build(sql_type_name(target.type)))
        items.append(SelectItem(ref, target.name))
    items += [SelectItem(exp.Literal.number(value), name) for value, name in zip(tag_values, tags)]
    if updating:
        op = column_ref(OP_COLUMN) if node.updating else exp.Literal.string("+I")
        items.append(SelectItem(op, OP_COLUMN))
    if watermarked:
        items.append(SelectItem(column_ref(WM_COLUMN), WM_COLUMN))
    return ctx.stateless(node, items, None, keep_hidden=False)


def _visible(schema: pa.Schema) -> list[pa.Field]:
    return [f for f in schema if not is_hidden(f.name) and f.name != OP_COLUMN]


def _fresh(name: str, used: set[str]) -> str:
    candidate, n = name, 0
    while candidate in used:
        n += 1
        candidate = f"{name}_{n}"
    used.add(candidate)
    return candidate


def _position(node: exp.Expr) -> dict:
    for sub in node.walk():
        if sub.meta.get("line") is not None:
            return {k: v for k, v in sub.meta.items() if k in ("line", "col", "start", "end")}
    return {}
