"""Window functions (OVER) over an unbounded stream, outside whole final windows.

``ROW_NUMBER()`` goes to :mod:`sqlstream.plan.ranking` (Top-N, deduplication).
"""

from __future__ import annotations

from sqlglot import exp

from sqlstream.plan.nodes import PlanNode
from sqlstream.plan.ranking import is_row_number, plan_ranking
from sqlstream.plan.relation import PlannerContext, Relation, SelectItem
from sqlstream.plan.scope import Scope

__all__ = ["plan_over"]


def plan_over(ctx: PlannerContext, select: exp.Select, node: PlanNode, scope: Scope, items: list[SelectItem],
              label: str) -> Relation:
    """A SELECT with window functions over a stream's rows."""
    windows = [w for i in items for w in i.expression.find_all(exp.Window)]
    if any(is_row_number(w) for w in windows):
        return plan_ranking(ctx, select, node, scope, items, label)
    raise ctx.unsupported(
        "window functions (OVER) need PARTITION BY window_start, window_end over a windowed aggregation",
        windows[0],
        "e.g. ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY cnt DESC) AS rn",
    )
