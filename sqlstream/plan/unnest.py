"""``FROM s CROSS JOIN UNNEST(s.arr) AS t(x)`` (also ``, UNNEST(...)`` and ``WITH
ORDINALITY AS t(x, n)``; ``LEFT JOIN UNNEST(...) ON TRUE`` keeps a row whose array is
NULL or empty, once, with a NULL element): one row per array element, stateless.

The array expression is computed per micro-batch on DataFusion when it is not a plain
column; the rows are then repeated per element by
:class:`~sqlstream.operators.unnest.UnnestOperator`. The input's columns pass through,
so event time, window TVFs and changelogs continue after it. The element column is
named by the alias's column list (``AS t(x)``), else the alias (``AS x``), else
``unnest``; the position (1-based) by ``WITH ORDINALITY``'s second name, else
``ordinality``.
"""

from __future__ import annotations

import pyarrow as pa
from sqlglot import exp

from sqlstream.errors import SqlAnalysisError
from sqlstream.hidden import OP_COLUMN, is_hidden
from sqlstream.operators.base import Operator
from sqlstream.operators.context import BuildContext
from sqlstream.operators.unnest import UnnestOperator
from sqlstream.plan.nodes import PlanNode
from sqlstream.plan.relation import PlannerContext, Relation, SelectItem
from sqlstream.plan.scope import Scope, ScopeColumn, column_ref
from sqlstream.sql.dialect import SqlStream
from sqlstream.sql.statements import normalize_name
from sqlstream.sql.types import sql_type_name

__all__ = ["Unnest", "plan_unnest"]

_FORMS = "write FROM s CROSS JOIN UNNEST(s.arr) AS t(x) (or FROM s, UNNEST(s.arr) AS t(x) [WITH ORDINALITY AS t(x, n)])"


class Unnest(PlanNode):
    """Rows repeated per element of an array column."""

    def __init__(self, child: PlanNode, array: str, schema: pa.Schema, ordinality: bool, shown: str,
                 keep_empty: bool = False):
        self.children = (child,)
        self.keep_empty = keep_empty
        self.array = array
        self.schema = schema
        self.ordinality = ordinality
        self.shown = shown
        self.rowtime = child.rowtime
        self.window = child.window
        self.window_end = child.window_end
        self.updating = child.updating

    def make_operator(self, ctx: BuildContext) -> Operator:
        return UnnestOperator(self.array, self.schema, self.ordinality, self.keep_empty)

    def describe(self) -> str:
        return ("LEFT " if self.keep_empty else "") + f"Unnest {self.shown}" + (" WITH ORDINALITY" if self.ordinality else "")


def plan_unnest(planner: PlannerContext, rel: Relation, join: exp.Join) -> Relation:
    """``rel`` with one row per element of the array that ``join`` unnests."""
    unnest = join.this
    side, kind = (join.args.get("side") or "").upper(), (join.args.get("kind") or "").upper()
    on = join.args.get("on")
    keep_empty = side == "LEFT" and isinstance(on, exp.Boolean) and on.this is True
    if not keep_empty and (side or kind not in ("", "CROSS", "INNER") or on is not None or join.args.get("using")):
        raise planner.unsupported("UNNEST is supported as CROSS JOIN UNNEST(...), , UNNEST(...) or "
                                  "LEFT JOIN UNNEST(...) ON TRUE", join, _FORMS)
    if len(unnest.expressions) != 1:
        raise planner.unsupported("UNNEST of several arrays is not supported", unnest, "UNNEST one array per join")
    element, position, qualifier = _names(unnest)
    node = rel.node
    argument = rel.scope.resolve(unnest.expressions[0], planner.source)
    if isinstance(argument, exp.Column) and argument.name in node.schema.names:
        array = argument.name
    else:  # computed per micro-batch first
        items = [SelectItem(column_ref(f.name), f.name) for f in node.schema if not is_hidden(f.name) and f.name != OP_COLUMN]
        array = _unique("unnest.array", node.schema.names)
        node = planner.stateless(node, items + [SelectItem(argument, array)], None, label=rel.label)
    array_type = node.schema.field(array).type
    if not (pa.types.is_list(array_type) or pa.types.is_large_list(array_type) or pa.types.is_fixed_size_list(array_type)):
        raise SqlAnalysisError(
            f"UNNEST needs an array; {unnest.expressions[0].sql(dialect=SqlStream)} is {sql_type_name(array_type)}",
            location=planner.loc(unnest.expressions[0]), hint="UNNEST an ARRAY or FLOAT[n] column",
        )
    names = list(node.schema.names)
    visible = [f for f in node.schema if not is_hidden(f.name) and f.name != OP_COLUMN]
    hidden = [f for f in node.schema if is_hidden(f.name) or f.name == OP_COLUMN]
    element_internal = _unique(f"{qualifier}.{element}", names)
    new = [pa.field(element_internal, array_type.value_type)]
    scope = list(rel.scope.columns) + [ScopeColumn(element, element_internal, array_type.value_type, {qualifier})]
    if position is not None:
        position_internal = _unique(f"{qualifier}.{position}", names + [element_internal])
        new.append(pa.field(position_internal, pa.int64()))
        scope.append(ScopeColumn(position, position_internal, pa.int64(), {qualifier}))
    shown = unnest.expressions[0].sql(dialect=SqlStream)
    out = Unnest(node, array, pa.schema(visible + new + hidden), position is not None, shown, keep_empty)
    return Relation(out, Scope(scope), rel.window, rel.label, rel.rank)


def _names(unnest: exp.Unnest) -> tuple[str, str | None, str]:
    """(element name, ordinality name or None, qualifier)."""
    alias = unnest.args.get("alias")
    columns = [normalize_name(c) for c in alias.columns] if alias is not None and alias.columns else []
    table = normalize_name(alias.this) if alias is not None and alias.this is not None else None
    offset = unnest.args.get("offset")
    element = columns[0] if columns else (table or "unnest")
    position = None
    if offset:
        position = normalize_name(offset) if isinstance(offset, exp.Identifier) else (
            columns[1] if len(columns) > 1 else "ordinality")
    return element, position, table or element


def _unique(name: str, taken: list[str]) -> str:
    while name in taken:
        name += "_"
    return name
