"""Reading join conditions: conjuncts, key types, time bounds, and which columns a
query still needs after a join.

The planner (:mod:`sqlstream.plan.joins`) classifies each conjunct of ``ON`` (and, for
inner joins, ``WHERE``); the pieces here are the parts that need no planner state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pyarrow as pa
from sqlglot import exp

from sqlstream.errors import SqlStreamError
from sqlstream.plan.scope import ScopeColumn
from sqlstream.sql.statements import interval_us, normalize_name

__all__ = ["conjuncts", "and_all", "common_type", "ColumnReferences", "interval_bounds"]


def conjuncts(node: exp.Expr | None) -> list[exp.Expr]:
    """``a AND (b AND c)`` → ``[a, b, c]``."""
    if node is None:
        return []
    if isinstance(node, exp.Paren):
        return conjuncts(node.this)
    if isinstance(node, exp.And):
        return conjuncts(node.this) + conjuncts(node.expression)
    return [node]


def and_all(nodes: list[exp.Expr]) -> exp.Expr | None:
    """The conjunction of copies of ``nodes`` (None for none)."""
    if not nodes:
        return None
    out = nodes[0].copy()
    for node in nodes[1:]:
        out = exp.And(this=out, expression=node.copy())
    return out


def common_type(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The type both sides of a key equality are compared in, or None."""
    if a == b:
        return a
    strings = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
    if any(f(a) for f in strings) and any(f(b) for f in strings):
        return pa.string()
    if pa.types.is_integer(a) and pa.types.is_integer(b):
        return pa.int64()
    numeric = (pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal)
    if any(f(a) for f in numeric) and any(f(b) for f in numeric):
        return pa.float64()
    if pa.types.is_timestamp(a) and pa.types.is_timestamp(b) and a.tz == b.tz:
        return pa.timestamp("us", a.tz)
    if pa.types.is_date(a) and pa.types.is_date(b):
        return pa.date32()
    return None


@dataclass
class ColumnReferences:
    """The column names a SELECT may still use after one of its joins (a superset):
    the join's output carries only those (plus event-time and window columns)."""

    names: set[str]
    everything: bool  # SELECT *
    star_qualifiers: set[str]  # SELECT t.*

    @classmethod
    def of(cls, select: exp.Select, join: exp.Join) -> "ColumnReferences":
        """Every column name in ``select`` except those of ``x.a = j.b`` in the ON of
        ``join`` (with ``j`` the relation it joins): the join reads those keys from its
        inputs."""
        everything, qualifiers = False, set()
        for item in select.expressions:
            if isinstance(item, exp.Star):
                everything = True
            elif isinstance(item, exp.Column) and isinstance(item.this, exp.Star):
                if item.args.get("table") is None:
                    everything = True
                else:
                    qualifiers.add(normalize_name(item.args["table"]))
        joined = normalize_name(join.this.alias_or_name) if join.this.alias_or_name else None
        consumed: set[int] = set()
        for c in conjuncts(join.args.get("on")):
            if isinstance(c, exp.EQ) and isinstance(c.this, exp.Column) and isinstance(c.expression, exp.Column):
                tables = [normalize_name(side.args["table"]) if side.args.get("table") else None
                          for side in (c.this, c.expression)]
                if None not in tables and tables[0] != tables[1] and joined in tables:
                    consumed |= {id(c.this), id(c.expression)}
        names = {normalize_name(c.this) for c in select.find_all(exp.Column)
                 if not isinstance(c.this, exp.Star) and id(c) not in consumed}
        return cls(names, everything, qualifiers)

    def wanted(self, column: ScopeColumn) -> bool:
        return self.everything or column.name in self.names or bool(column.qualifiers & self.star_qualifiers)


# -- interval bounds ----------------------------------------------------------------------------

TimeSide = Callable[[str], "int | None"]  # column name -> the side whose event time it is (0/1), or None


def interval_bounds(node: exp.Expr, time_side: TimeSide) -> list[tuple[str, int]]:
    """Bounds ``("lower"|"upper", µs)`` on ``right.time - left.time`` implied by one
    comparison (``BETWEEN``, ``<``, ``<=``, ``>``, ``>=``, ``=``) of the two sides' event
    times plus/minus intervals; empty when it implies none."""
    if isinstance(node, exp.Between):
        return _compare(node.args["low"], node.this, False, time_side) + \
            _compare(node.this, node.args["high"], False, time_side)
    if isinstance(node, (exp.LT, exp.LTE)):
        return _compare(node.this, node.expression, isinstance(node, exp.LT), time_side)
    if isinstance(node, (exp.GT, exp.GTE)):
        return _compare(node.expression, node.this, isinstance(node, exp.GT), time_side)
    if isinstance(node, exp.EQ):
        return _compare(node.this, node.expression, False, time_side) + \
            _compare(node.expression, node.this, False, time_side)
    return []


def _time_term(node: exp.Expr, time_side: TimeSide) -> tuple[int, int] | None:
    """(side, offset µs) for ``t``, ``t + INTERVAL``, ``t - INTERVAL`` of a side's event time."""
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Column):
        side = time_side(node.name)
        return (side, 0) if side is not None else None
    if isinstance(node, (exp.Add, exp.Sub)):
        sign = 1 if isinstance(node, exp.Add) else -1
        base, delta = node.this, node.expression
        if isinstance(node, exp.Add) and isinstance(base, exp.Interval):
            base, delta = delta, base
        if not isinstance(delta, exp.Interval):
            return None
        term = _time_term(base, time_side)
        if term is None:
            return None
        try:
            return term[0], term[1] + sign * interval_us(delta)
        except SqlStreamError:  # months, years: not a fixed number of µs
            return None
    return None


def _compare(small: exp.Expr, large: exp.Expr, strict: bool, time_side: TimeSide) -> list[tuple[str, int]]:
    """``small <= large`` (``<`` when strict) as a bound on right.time - left.time."""
    a, b = _time_term(small, time_side), _time_term(large, time_side)
    if a is None or b is None or a[0] == b[0]:
        return []
    gap = 1 if strict else 0  # µs timestamps: a < b  <=>  a <= b - 1
    if a[0] == 1:  # tr + oa <= tl + ob  ->  tr - tl <= ob - oa
        return [("upper", b[1] - a[1] - gap)]
    return [("lower", a[1] - b[1] + gap)]  # tl + oa <= tr + ob  ->  tr - tl >= oa - ob
