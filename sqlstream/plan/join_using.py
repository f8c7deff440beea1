"""``JOIN ... USING (k, ...)`` and ``NATURAL JOIN``: which columns they equate.

Both are ``ON l.k = r.k AND ...`` with SQL-standard output (planned in
:class:`~sqlstream.plan.join_inputs.JoinInputs`): each merged column appears once, first
in ``SELECT *`` and under its bare name; for INNER and LEFT joins it is the left
side's column, for RIGHT the right side's, for FULL ``COALESCE(l.k, r.k)``. The
sides' own columns stay reachable qualified (``l.k``, ``r.k``). ``NATURAL`` merges
every column name both sides have.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from sqlglot import exp

from sqlstream.errors import SqlAnalysisError
from sqlstream.plan.relation import PlannerContext
from sqlstream.plan.scope import Scope, ScopeColumn, column_ref
from sqlstream.sql.statements import normalize_name

__all__ = ["UsingColumn", "using_names", "using_inputs"]


@dataclass(frozen=True)
class UsingColumn:
    """One merged column: where it was written, its name, and the join's output columns
    (left, right) it equates, with their types."""

    node: exp.Expr
    name: str
    outputs: tuple[str, str]
    types: tuple[pa.DataType, pa.DataType]

    def equality(self) -> exp.Expr:
        """``l.k = r.k`` over the join's output columns."""
        return exp.EQ(this=column_ref(self.outputs[0]), expression=column_ref(self.outputs[1]))

    def text(self) -> exp.Expr:
        """The equality as users read it, located where the column was named."""
        sides = [exp.Column(this=exp.Identifier(this=o, quoted=False)) for o in self.outputs]
        for side in sides:
            side.this.meta.update({k: v for k, v in self.node.meta.items() if k in ("line", "col", "start", "end")})
        return exp.EQ(this=sides[0], expression=sides[1])


def using_names(planner: PlannerContext, join: exp.Join, left: Scope, right: Scope) -> list[tuple[exp.Expr, str]]:
    """``(where written, name)`` of each column ``join`` merges: its ``USING`` list, or for
    ``NATURAL`` every unqualified column name both sides have (in the left side's order)."""
    if join.args.get("using"):
        out, seen = [], set()
        for identifier in join.args["using"]:
            node = identifier.this if isinstance(identifier, exp.Column) else identifier
            name = normalize_name(node)
            if name in seen:
                raise SqlAnalysisError(f"column '{name}' appears twice in USING", location=planner.loc(identifier))
            seen.add(name)
            out.append((identifier, name))
        return out
    if (join.args.get("method") or "").upper() != "NATURAL":
        return []
    right_names = {c.name for c in right.columns if not c.virtual and not c.qualified_only}
    names = dict.fromkeys(c.name for c in left.columns if not c.virtual and not c.qualified_only and c.name in right_names)
    return [(join, name) for name in names]


def using_inputs(planner: PlannerContext, scope: Scope, named: list[tuple[exp.Expr, str]]) -> list[ScopeColumn]:
    """The column of one side each merged name means (errors: unknown, ambiguous)."""
    out = []
    for node, name in named:
        ref = exp.Column(this=exp.Identifier(this=name, quoted=True))
        ref.this.meta.update({k: v for k, v in node.meta.items() if k in ("line", "col", "start", "end")})
        column = scope.lookup(ref, planner.source)
        if column.virtual:
            raise planner.unsupported(
                f"'{name}' is a window column of a window table function; it cannot be a USING column", node,
                "aggregate the window first, or write ON l.window_start = r.window_start AND l.window_end = r.window_end",
            )
        out.append(column)
    return out
