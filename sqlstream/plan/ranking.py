"""ROW_NUMBER over an unbounded stream: Top-N per key and deduplication (Flink's forms).

``SELECT ... FROM (SELECT ..., ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) AS rn
FROM s) WHERE rn <= N`` is planned in two steps. The inner SELECT becomes a stateless
stage computing its other columns and the partition/order values (as hidden
columns), with a :class:`~sqlstream.plan.relation.PendingRank` on its relation; the
enclosing query's WHERE gives the bound (``rn <= N``, ``rn < N``, ``rn = 1``,
``rn = N``) and the ranking is materialized as:

* ``Deduplicate`` (keep first, append-only) when ORDER BY is the event-time column
  ascending and the bound is 1;
* ``TopN`` (an updating result) otherwise, ``later_wins`` (keep last) when ORDER BY is
  the event-time column descending.
"""

from __future__ import annotations

import pyarrow as pa
from sqlglot import exp

from sqlstream.hidden import OP_COLUMN, WM_COLUMN, is_hidden
from sqlstream.plan.nodes import PlanNode
from sqlstream.plan.ranking_nodes import Deduplicate, TopN
from sqlstream.plan.relation import PendingRank, PlannerContext, Relation, SelectItem
from sqlstream.plan.scope import Scope, column_ref
from sqlstream.sql.statements import normalize_name

__all__ = ["plan_ranking", "materialize_rank", "is_row_number", "reject_pending_rank"]

TTL_TIME = "__rank_t"  # the event time a Top-N with top_n_state_ttl keeps per key
_EXAMPLE = "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) AS rn FROM s) WHERE rn <= 3"


def is_row_number(window: exp.Window) -> bool:
    return isinstance(window.this, exp.RowNumber)


def plan_ranking(ctx: PlannerContext, select: exp.Select, node: PlanNode, scope: Scope, items: list[SelectItem],
                 label: str) -> Relation:
    """The inner SELECT of a Top-N / deduplication: a stage and a pending rank."""
    ranked = [i for i in items if isinstance(i.expression, exp.Window) and is_row_number(i.expression)]
    window = ranked[0].expression if ranked else next(w for i in items for w in i.expression.find_all(exp.Window))
    if len(ranked) != 1 or any(i.expression.find(exp.Window) for i in items if i is not ranked[0]):
        raise ctx.unsupported("ROW_NUMBER() over a stream must be a column of its own, the only window function of its SELECT",
                              window, _EXAMPLE)
    if node.updating:
        raise ctx.unsupported("ROW_NUMBER() over an updating result is not supported", window,
                              "rank an append-only stream, or a window aggregation's rows within each window")
    if window.args.get("spec") is not None:
        raise ctx.unsupported("ROW_NUMBER() takes no frame (ROWS/RANGE)", window.args["spec"])
    order = window.args.get("order")
    if order is None or not order.expressions:
        raise ctx.unsupported("ROW_NUMBER() over a stream needs ORDER BY", window,
                              "e.g. ORDER BY price DESC (Top-N) or ORDER BY ts (keep the first row per key)")
    rank_item = ranked[0]
    others = [SelectItem(scope.resolve(i.expression, ctx.source), i.name) for i in items if i is not rank_item]
    partition = [scope.resolve(p, ctx.source) for p in window.args.get("partition_by") or []]
    ordered = [(scope.resolve(o.this, ctx.source), bool(o.args.get("desc")), bool(o.args.get("nulls_first"))) for o in order.expressions]
    hidden = [SelectItem(p, f"__rank_p{i}") for i, p in enumerate(partition)]
    hidden += [SelectItem(e, f"__rank_o{i}") for i, (e, _, _) in enumerate(ordered)]
    if ctx.settings.get("top_n_state_ttl") is not None and node.rowtime is not None:
        hidden.append(SelectItem(column_ref(node.rowtime), TTL_TIME))  # each key's latest event time
    where = select.args.get("where")
    condition = scope.resolve(where.this, ctx.source) if where is not None else None
    stage = ctx.stateless(node, others + hidden, condition, label=label)
    time_order = None
    first = ordered[0][0]
    if len(ordered) == 1 and isinstance(first, exp.Column) and node.rowtime is not None and first.name == node.rowtime:
        time_order = "desc" if ordered[0][1] else "asc"
    keys = []
    for p in partition:
        match = next((i.name for i in others if isinstance(p, exp.Column) and i.expression == p), None)
        keys.append(match)
    rank = PendingRank(
        window, rank_item.name, tuple(h.name for h in hidden[: len(partition)]),
        tuple((f"__rank_o{i}", desc, nulls) for i, (_, desc, nulls) in enumerate(ordered)),
        time_order, tuple(keys) if all(k is not None for k in keys) else None,
        (", ".join(p.sql() for p in window.args.get("partition_by") or []) or "-", ", ".join(o.sql() for o in order.expressions)),
    )
    visible = [f for f in stage.schema if not is_hidden(f.name) and f.name != OP_COLUMN]
    out_scope = Scope.of_schema(pa.schema(visible + [pa.field(rank_item.name, pa.int64())]), None)
    return Relation(stage, out_scope, None, label, rank)


def materialize_rank(ctx: PlannerContext, select: exp.Select, rel: Relation) -> tuple[Relation, exp.Select]:
    """The ranking ``rel`` waits for, bounded by ``select``'s WHERE; ``select`` without
    the bound."""
    rank = rel.rank
    where = select.args.get("where")
    conjuncts = list(where.this.flatten()) if where is not None and isinstance(where.this, exp.And) else (
        [where.this] if where is not None else [])
    limit, rest, exact = None, [], False
    for conjunct in conjuncts:
        bound = _bound(conjunct, rank.column)
        if bound is None:
            rest.append(conjunct)
            continue
        value, op = bound
        if op == "=" and value != 1:
            rest.append(conjunct)  # the N-th row only: the top N, then a filter on the rank
            exact = True
        if value < 1:
            raise ctx.unsupported(f"{rank.column} is never below 1: this bound keeps no row", conjunct, _EXAMPLE)
        limit = value if limit is None else min(limit, value)
    if limit is None:
        reject_pending_rank(ctx, rel)
    needed = exact or _references(select.expressions, rank.column) or _references(rest, rank.column)
    node = rel.node
    visible = [f for f in node.schema if not is_hidden(f.name) and f.name != OP_COLUMN]
    rank_field = [pa.field(rank.column, pa.int64())] if needed else []
    settings = ctx.settings
    if rank.time_order == "asc" and limit == 1:
        stamps = [pa.field(WM_COLUMN, pa.int64())] if WM_COLUMN in node.schema.names else []
        schema = pa.schema(visible + rank_field + stamps)
        ranked: PlanNode = Deduplicate(node, list(rank.partition), rank.order[0][0], schema,
                                       rank.column if needed else None, settings.get("dedup_state_ttl"), rel.label, rank.shown)
    else:
        schema = pa.schema([pa.field(OP_COLUMN, pa.string())] + visible + rank_field)
        keys = None
        if rank.key_columns is not None and (limit == 1 or needed):
            keys = rank.key_columns + ((rank.column,) if needed and limit > 1 else ())
        ttl = settings.get("top_n_state_ttl")
        if ttl is not None and TTL_TIME not in node.schema.names:
            raise ctx.unsupported(
                "top_n_state_ttl needs an input with an event-time column (a watermark): keys expire in event time",
                rank.window, "declare one on the source: WATERMARK FOR ts AS ts - INTERVAL '5' SECOND, "
                "or SET top_n_state_ttl = 'off' before this query")
        ranked = TopN(node, list(rank.partition), list(rank.order), limit, schema, rank.column if needed else None,
                      rank.time_order == "desc", keys, rank.shown, ttl, TTL_TIME if ttl is not None else None)
    scope = Scope.of_schema(schema, None)
    if rel.scope.columns and rel.scope.columns[0].qualifiers:
        scope = scope.requalified(sorted(rel.scope.columns[0].qualifiers)[0])
    remaining = select.copy()
    remaining.set("where", exp.Where(this=exp.and_(*rest)) if rest else None)
    return Relation(ranked, scope, None, rel.label), remaining


def reject_pending_rank(ctx: PlannerContext, rel: Relation) -> None:
    """A ranking not bounded by the query directly around it (or joined, or unioned)."""
    if rel.rank is not None:
        raise ctx.unsupported(
            f"ROW_NUMBER() over a stream needs a bound in the query directly around it: WHERE {rel.rank.column} <= N",
            rel.rank.window, f"Top-N keeps N rows per key (state bounded by keys × N): {_EXAMPLE}",
        )


def _bound(conjunct: exp.Expr, column: str) -> tuple[int, str] | None:
    """``rn <= 3`` → (3, "<="), ``rn < 3`` → (2, "<"), ``rn = 1`` → (1, "="), also
    with the sides swapped; None for anything else."""
    flipped = {exp.GTE: exp.LTE, exp.GT: exp.LT, exp.LTE: exp.GTE, exp.LT: exp.GT, exp.EQ: exp.EQ}
    kind = type(conjunct)
    if kind not in flipped:
        return None
    left, right = conjunct.this, conjunct.expression
    if _is_rank(right, column) and _is_int(left):
        left, right, kind = right, left, flipped[kind]
    if not (_is_rank(left, column) and _is_int(right)):
        return None
    value = int(right.name)
    if kind is exp.LTE:
        return value, "<="
    if kind is exp.LT:
        return value - 1, "<"
    if kind is exp.EQ:
        return value, "="
    return None


def _is_rank(node: exp.Expr, column: str) -> bool:
    return isinstance(node, exp.Column) and normalize_name(node.this) == column


def _is_int(node: exp.Expr) -> bool:
    return isinstance(node, exp.Literal) and not node.is_string and node.name.isdigit()


def _references(nodes: list[exp.Expr], column: str) -> bool:
    for node in nodes:
        if isinstance(node, exp.Star) or (isinstance(node, exp.Column) and isinstance(node.this, exp.Star)):
            return True
        if any(_is_rank(c, column) for c in node.find_all(exp.Column)):
            return True
    return False

