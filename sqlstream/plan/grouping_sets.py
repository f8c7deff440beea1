"""``GROUP BY ROLLUP (...)``, ``CUBE (...)`` and ``GROUPING SETS (...)``.

A query with several grouping sets is rewritten into one aggregation per grouping
set, combined with ``UNION ALL`` (:mod:`~sqlstream.plan.set_operations`): in the copy
for a set, every grouping key absent from the set is ``CAST(NULL AS <its type>)``
outside aggregate calls, and ``GROUPING(k, ...)`` is the constant bit mask of the
absent keys (1 = absent; the first argument is the highest bit), as in standard SQL.
Plain ``GROUP BY`` items next to them (``GROUP BY window_start, window_end,
ROLLUP (a, b)``) are in every set, so a windowed aggregation stays windowed: each
copy is final per window. Over unbounded input each copy is a changelog, and so is
their union.

>>> from sqlglot import parse_one
>>> group = parse_one("SELECT 1 FROM t GROUP BY w, ROLLUP (a, b)").args["group"]
>>> [[k.sql() for k in s] for s in grouping_sets(group)]
[['w', 'a', 'b'], ['w', 'a'], ['w']]
>>> group = parse_one("SELECT 1 FROM t GROUP BY CUBE (a, b)").args["group"]
>>> [[k.sql() for k in s] for s in grouping_sets(group)]
[['a', 'b'], ['a'], ['b'], []]
"""

from __future__ import annotations

from itertools import combinations, product

from sqlglot import exp

from sqlstream.errors import SqlAnalysisError, UnsupportedSqlError
from sqlstream.plan.relation import PlannerContext
from sqlstream.plan.scope import Scope
from sqlstream.plan.windows import WINDOW_COLUMNS
from sqlstream.sql.dialect import SqlStream
from sqlstream.sql.statements import normalize_name
from sqlstream.sql.types import sql_type_name

__all__ = ["has_grouping_sets", "grouping_sets", "expand_grouping_sets"]

_SPECIAL = (exp.Rollup, exp.Cube, exp.GroupingSets)


def has_grouping_sets(group: exp.Group | None) -> bool:
    """True when GROUP BY has ROLLUP, CUBE or GROUPING SETS (or GROUPING() is used)."""
    return group is not None and any(isinstance(g, _SPECIAL) for g in group.expressions)


def grouping_sets(group: exp.Group) -> list[list[exp.Expr]]:
    """The grouping sets of ``group``: the cross product of its items' sets."""
    choices = []
    for item in group.expressions:
        if isinstance(item, exp.Rollup):
            keys = item.expressions
            choices.append([keys[:n] for n in range(len(keys), -1, -1)])
        elif isinstance(item, exp.Cube):
            keys = item.expressions
            choices.append([list(c) for n in range(len(keys), -1, -1) for c in combinations(keys, n)])
        elif isinstance(item, exp.GroupingSets):
            choices.append([_set_keys(s) for s in item.expressions])
        else:
            choices.append([[item]])
    return [[k for part in combo for k in part] for combo in product(*choices)]


def _set_keys(item: exp.Expr) -> list[exp.Expr]:
    if isinstance(item, exp.Tuple):
        return list(item.expressions)
    if isinstance(item, exp.Paren):
        return [item.this]
    return [item]


def expand_grouping_sets(ctx: PlannerContext, select: exp.Select, scope: Scope) -> exp.Expr:
    """``select`` as a UNION ALL of one aggregation per grouping set; ``scope``: the
    FROM relation's columns (the types of the NULLs)."""
    group = select.args["group"]
    for key in ("rollup", "cube", "grouping_sets"):
        if group.args.get(key):
            raise ctx.unsupported(f"GROUP BY ... WITH {key.upper().replace('_', ' ')} is not supported", group,
                                  "write GROUP BY ROLLUP (a, b), CUBE (a, b) or GROUPING SETS ((a, b), (a), ())")
    for item in group.expressions:
        nested = [n for n in item.find_all(*_SPECIAL) if n is not item] if isinstance(item, _SPECIAL) else []
        if nested:
            raise ctx.unsupported("nested ROLLUP, CUBE or GROUPING SETS are not supported", nested[0])
    sets = grouping_sets(group)
    keys: dict[str, exp.Expr] = {}
    for s in sets:
        for k in s:
            keys.setdefault(_key(k), k)
    types = {name: _key_type(ctx, k, scope) for name, k in keys.items()}
    queries = []
    for s in sets:
        present = {_key(k) for k in s}
        absent = {name for name in keys if name not in present}
        for name in absent & set(WINDOW_COLUMNS):
            raise ctx.unsupported(f"{name} must be in every grouping set", keys[name],
                                  "put the window columns before ROLLUP/CUBE: GROUP BY window_start, window_end, ROLLUP (a, b)")
        copy = select.copy()
        copy.set("group", exp.Group(expressions=[k.copy() for k in s] or [exp.Tuple(expressions=[])]))
        copy.set("limit", None)
        for item in copy.expressions:  # a key selected as is keeps its name when it becomes NULL
            if isinstance(item, exp.Column) and not isinstance(item.this, exp.Star) and _key(item) in absent:
                item.replace(exp.alias_(item.copy(), exp.Identifier(this=normalize_name(item.this), quoted=True)))
        for clause in ("expressions", "having"):
            value = copy.args.get(clause)
            for node in value if isinstance(value, list) else [value] if value is not None else []:
                _substitute(ctx, node, keys, absent, types)
        queries.append(copy)
    union = queries[0]
    for query in queries[1:]:
        union = exp.Union(this=union, expression=query, distinct=False)
    return union


def _substitute(ctx: PlannerContext, root: exp.Expr, keys: dict[str, exp.Expr], absent: set[str], types: dict) -> None:
    """Absent keys → typed NULLs (outside aggregate calls); GROUPING(...) → its mask."""
    for node in list(root.walk()):
        if node.parent is None and node is not root:
            continue  # replaced with an ancestor
        if isinstance(node, exp.Grouping):
            mask = 0
            for arg in node.expressions:
                name = _key(arg)
                if name not in keys:
                    raise SqlAnalysisError(f"GROUPING({arg.sql(dialect=SqlStream)}): not a grouping key",
                                           location=ctx.loc(arg), hint=f"grouping keys: {', '.join(keys)}")
                mask = mask * 2 + (name in absent)
            node.replace(exp.Literal.number(mask))
        elif isinstance(node, exp.Column) and _key(node) in absent and not _inside_aggregate(node, root):
            node.replace(exp.Cast(this=exp.Null(), to=exp.DataType.build(types[_key(node)])))


def _inside_aggregate(node: exp.Expr, root: exp.Expr) -> bool:
    parent = node.parent
    while parent is not None:
        if isinstance(parent, exp.AggFunc):
            return True
        if parent is root:
            return False
        parent = parent.parent
    return False


def _key(node: exp.Expr) -> str:
    if isinstance(node, exp.Column) and not node.args.get("table"):
        return normalize_name(node.this)
    if isinstance(node, exp.Column):
        return f"{normalize_name(node.args['table'])}.{normalize_name(node.this)}"
    return f"<{node.sql(dialect=SqlStream)}>"


def _key_type(ctx: PlannerContext, key: exp.Expr, scope: Scope) -> str:
    if not isinstance(key, exp.Column):
        raise UnsupportedSqlError(
            "ROLLUP, CUBE and GROUPING SETS group by columns only", location=ctx.loc(key),
            hint="compute the expression in a subquery: FROM (SELECT upper(g) AS ug, ... FROM s) GROUP BY ROLLUP (ug)",
        )
    return sql_type_name(scope.lookup(key, ctx.source).type)
