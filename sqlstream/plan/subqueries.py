"""``IN (SELECT ...)``, ``NOT IN``, ``EXISTS`` and ``NOT EXISTS`` in ``WHERE``: semi and
anti joins.

Each such conjunct of ``WHERE`` becomes a join of the query's FROM relation (the left
side, whose rows come out) with the subquery's one FROM item (the right side): the
subquery's ``WHERE`` and, for ``IN``, ``lhs = <select expression>`` are its condition.
The join strategy follows the same rules as ``JOIN ... ON``
(:mod:`sqlstream.plan.joins`): a TABLE is a lookup, equated window columns a window
join, a two-sided time bound an interval join, else a regular (changelog) join.

* **semi** (``IN``, ``EXISTS``): each left row once, however many right rows match.
* **anti** (``NOT EXISTS``): left rows without a match; on unbounded input a row is
  emitted, then retracted when its first match arrives (changelog).
* **NOT IN** is an anti join with SQL's NULL rules (a NULL in the subquery's column
  means no row qualifies; a NULL left value qualifies only against an empty subquery);
  it needs an uncorrelated subquery. Over a TABLE the answer is known at once; over a
  stream the regular anti join's changelog follows the rules as rows arrive.

Names inside the subquery resolve to its own FROM item first (shadowing the outer
query), then to the outer query's columns (correlation).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from sqlstream.plan.join_conditions import and_all, conjuncts
from sqlstream.plan.relation import PlannerContext, Relation
from sqlstream.plan.scope import Scope
from sqlstream.sql.statements import normalize_name

__all__ = ["SubqueryFilter", "split_subquery_filters", "subquery_join"]

SUBQUERY_FORMS = (
    "supported: WHERE x [NOT] IN (SELECT y FROM r [WHERE ...]) and WHERE [NOT] EXISTS (SELECT ... FROM r "
    "WHERE r.k = outer.k ...) as conjuncts of WHERE; join a TABLE for looked-up values"
)


@dataclass(frozen=True)
class SubqueryFilter:
    """One ``[NOT] IN``/``[NOT] EXISTS`` conjunct of WHERE."""

    node: exp.Expr  # the conjunct as written
    kind: str  # semi | anti
    select: exp.Select  # the subquery
    lhs: exp.Expr | None  # IN: the outer expression
    null_aware: bool  # NOT IN


def split_subquery_filters(planner: PlannerContext, select: exp.Select) -> tuple[exp.Select, list[SubqueryFilter]]:
    """``select`` without its subquery conjuncts in WHERE (a copy when it had some), and those."""
    where = select.args.get("where")
    if where is None or where.find(exp.Subquery, exp.Exists) is None:
        return select, []
    found, rest = [], []
    for node in conjuncts(where.this):
        parsed = _parse(planner, node)
        if parsed is None:
            rest.append(node)
        else:
            found.append(parsed)
    if not found:
        return select, []
    out = select.copy()
    condition = and_all(rest)
    out.set("where", exp.Where(this=condition) if condition is not None else None)
    return out, found


def _parse(planner: PlannerContext, node: exp.Expr) -> SubqueryFilter | None:
    negated = isinstance(node, exp.Not)
    inner = node.this if negated else node
    while isinstance(inner, exp.Paren):
        inner = inner.this
    if isinstance(inner, exp.Exists) and isinstance(inner.this, exp.Select):
        return SubqueryFilter(node, "anti" if negated else "semi", _checked(planner, inner.this, None), None, False)
    if isinstance(inner, exp.In) and isinstance(inner.args.get("query"), exp.Subquery):
        query = inner.args["query"].this
        if not isinstance(query, exp.Select):
            raise planner.unsupported("IN (...) needs a plain SELECT here (no UNION)", query, SUBQUERY_FORMS)
        if isinstance(inner.this, exp.Tuple):
            raise planner.unsupported("a row value IN (SELECT ...) is not supported", inner.this,
                                      "write EXISTS (SELECT 1 FROM r WHERE r.a = x.a AND r.b = x.b)")
        return SubqueryFilter(node, "anti" if negated else "semi", _checked(planner, query, inner), inner.this, negated)
    found = next((n for n in node.find_all(exp.Exists, exp.In) if isinstance(n, exp.Exists)
                  or isinstance(n.args.get("query"), exp.Subquery)), None)
    if found is None:
        return None  # scalar subqueries: sqlstream.plan.scalar_subqueries
    raise planner.unsupported("IN/EXISTS subqueries are supported only as conjuncts of WHERE (not under OR or CASE)",
                              found, SUBQUERY_FORMS)


def _checked(planner: PlannerContext, query: exp.Select, in_node: exp.In | None) -> exp.Select:
    """The subquery, if it is one FROM item with an optional WHERE (and one column for IN)."""
    from_ = query.args.get("from_") or query.args.get("from")
    if from_ is None or query.args.get("joins"):
        raise planner.unsupported("a subquery in IN/EXISTS must read one relation (no joins)", query,
                                  "join the inner relations in a view or a FROM subquery and name that")
    for clause in ("group", "having", "limit", "order", "qualify", "with_", "with"):
        if query.args.get(clause) is not None:
            raise planner.unsupported(f"{clause.rstrip('_').upper()} is not supported in an IN/EXISTS subquery",
                                      query.args[clause], "filter with WHERE; aggregate in a view and name that")
    if any(e.find(exp.AggFunc, exp.Window) for e in query.expressions):
        raise planner.unsupported("aggregates are not supported in an IN/EXISTS subquery", query,
                                  "aggregate in a view or FROM subquery and name that")
    nested = query.args.get("where").find(exp.Subquery, exp.Exists) if query.args.get("where") else None
    if nested is not None:
        raise planner.unsupported("nested IN/EXISTS subqueries are not supported", nested, SUBQUERY_FORMS)
    if in_node is not None and (len(query.expressions) != 1 or isinstance(query.expressions[0], exp.Star)):
        raise planner.unsupported("the subquery of IN must select one column", query, "x IN (SELECT k FROM r)")
    return query


def subquery_join(planner: PlannerContext, rel: Relation, sub: SubqueryFilter,
                  taken: set[str]) -> tuple[exp.Join, Relation]:
    """The join ``rel`` (left) ⋉ the subquery's FROM item, and that item planned (the
    right side): the item aliased apart from the outer query's names, the subquery's
    columns qualified with that alias, and the condition. ``taken``: qualifiers in use
    (the outer query's and earlier subqueries')."""
    query = sub.select
    item = (query.args.get("from_") or query.args.get("from")).this.copy()
    own = normalize_name(item.alias_or_name) if item.alias_or_name else "subquery"
    alias = own
    while alias in taken:
        alias += "_inner"
    taken.add(alias)
    if isinstance(item, (exp.Table, exp.Subquery)):
        item.set("alias", exp.TableAlias(this=exp.Identifier(this=alias, quoted=True)))
    elif alias != own:
        raise planner.unsupported(f"'{own}' names the outer query too: give this relation another alias", item)
    join = exp.Join(this=item)
    right = planner.plan_factor(item)
    inner_names = {c.name for c in right.scope.columns}

    def qualify(node: exp.Expr) -> exp.Expr:
        if not isinstance(node, exp.Column) or isinstance(node.this, exp.Star):
            return node
        table = normalize_name(node.args["table"]) if node.args.get("table") is not None else None
        if (table is None and normalize_name(node.this) in inner_names) or table == own:
            out = node.copy()
            out.set("table", exp.Identifier(this=alias, quoted=True))
            return out
        return node

    parts = []
    where = query.args.get("where")
    if where is not None:
        parts += [c.copy().transform(qualify) for c in conjuncts(where.this)]
    if sub.lhs is not None:
        value = query.expressions[0]
        value = value.this if isinstance(value, exp.Alias) else value
        lhs = _qualify_outer(sub.lhs.copy(), rel.scope, inner_names)
        parts.append(exp.EQ(this=lhs, expression=value.copy().transform(qualify)))
    if parts:
        join.set("on", and_all(parts))
    return join, right


def _qualify_outer(node: exp.Expr, scope: Scope, inner_names: set[str]) -> exp.Expr:
    """The IN's left-hand side: an unqualified outer column the subquery also has gets
    its outer qualifier, so the combined condition is not ambiguous."""

    def rewrite(column: exp.Expr) -> exp.Expr:
        if not isinstance(column, exp.Column) or column.args.get("table") is not None:
            return column
        name = normalize_name(column.this)
        if name not in inner_names:
            return column
        matches = [c for c in scope.columns if c.name == name and not c.qualified_only and c.qualifiers]
        if len(matches) == 1:
            column.set("table", exp.Identifier(this=sorted(matches[0].qualifiers)[0], quoted=True))
        return column

    return node.transform(rewrite)
