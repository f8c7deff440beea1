"""Queries (sqlglot trees) → logical streaming plans.

The planner resolves names against the catalog, inlines views, recognizes window
table functions (:mod:`~sqlstream.plan.windows`), plans joins
(:mod:`~sqlstream.plan.joins`), splits aggregations into *pre-stage* (DataFusion
computes group keys and aggregate arguments per batch) → our incremental aggregate →
*post-stage* (DataFusion evaluates HAVING and the final projection over emitted rows)
(:mod:`~sqlstream.plan.aggregation`), and hands every stateless piece to DataFusion as
one SQL text planned once (:mod:`~sqlstream.plan.lowering`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa
from sqlglot import exp

from sqlstream.connectors.one_row import ONE_ROW_SOURCE
from sqlstream.errors import SqlAnalysisError, SqlStreamError, UnsupportedSqlError, did_you_mean
from sqlstream.hidden import WM_COLUMN, is_hidden
from sqlstream.plan.aggregation import find_aggregates, group_expressions, plan_aggregate
from sqlstream.plan.grouping_sets import expand_grouping_sets, has_grouping_sets
from sqlstream.plan.joins import lookup_table_relation, plan_joins, plan_subquery_filters
from sqlstream.plan.lowering import stateless_stage
from sqlstream.plan.model_predict import plan_model_predict
from sqlstream.plan.nodes import Limit, PlanNode, Scan, Stateless
from sqlstream.plan.over import plan_over
from sqlstream.plan.ranking import materialize_rank, reject_pending_rank
from sqlstream.plan.relation import Relation, SelectItem, StageColumns
from sqlstream.plan.scalar_subqueries import plan_scalar_subqueries, split_scalar_subqueries
from sqlstream.plan.scope import Scope
from sqlstream.plan.set_operations import plan_set_operation
from sqlstream.plan.subqueries import split_subquery_filters
from sqlstream.plan.windows import expand_window, over_whole_windows, plan_window_tvf, reject_window_functions
from sqlstream.sql.dialect import SqlStream, WindowTVF
from sqlstream.sql.model_predict import ModelPredict
from sqlstream.sql.statements import SourceText, normalize_name

__all__ = ["QueryPlanner", "CatalogView", "RelationInfo"]

_STREAM_CLAUSES = ("order", "offset", "qualify", "distribute", "sort", "cluster")


@dataclass
class RelationInfo:
    """What the planner needs to know of a catalog relation."""

    name: str
    kind: str  # SOURCE | TABLE | VIEW
    schema: pa.Schema | None = None
    rowtime: str | None = None
    delay_us: int = 0
    connector: str = ""
    query: exp.Expr | None = None  # views
    source: SourceText | None = None  # views: where their text came from


class CatalogView(Protocol):
    def relation(self, name: str) -> RelationInfo | None: ...

    def relation_names(self) -> list[str]: ...

    def udf_planner(self): ...  # plans Python/model function calls (or None)


class QueryPlanner:
    """Plans one query; views and CTEs are planned by sub-planners over their own text.

    Implements :class:`~sqlstream.plan.relation.PlannerContext` for the other planning
    modules."""

    def __init__(self, catalog: CatalogView, source: SourceText, settings: dict | None = None):
        self.catalog = catalog
        self.source = source
        self.settings = settings or {}
        self._ctes: dict[str, tuple[exp.Expr, SourceText]] = {}
        self._view_stack: list[str] = []

    # -- PlannerContext ----------------------------------------------------------------------

    def loc(self, node):
        return self.source.location(node)

    def unsupported(self, message: str, node, hint: str | None = None) -> UnsupportedSqlError:
        return UnsupportedSqlError(message, location=self.loc(node), hint=hint)

    def aggregate_function(self, name: str):
        planner = self.catalog.udf_planner()
        impl = planner.function(exp.Anonymous(this=name)) if planner is not None else None
        return impl if getattr(impl, "is_aggregate", False) else None

    def stateless(
        self, node: PlanNode, items: list[SelectItem], condition: exp.Expr | None, label: str = "",
        keep_hidden: bool = True, columns: StageColumns | None = None,
    ) -> Stateless:
        """One DataFusion SELECT over ``node``'s rows (UDF calls evaluated before it)."""
        return stateless_stage(
            node, items, condition, udf_planner=self.catalog.udf_planner(), source=self.source, label=label,
            keep_hidden=keep_hidden, columns=columns,
        )

    # -- entry ----------------------------------------------------------------------

    def plan(self, query: exp.Expr) -> PlanNode:
        rel = self._plan_query(query)
        reject_pending_rank(self, rel)
        return rel.node

    def _plan_query(self, query: exp.Expr) -> Relation:
        with_ = query.args.get("with_") or query.args.get("with")
        if with_ is not None:
            for cte in with_.expressions:
                self._ctes[normalize_name(cte.alias)] = (cte.this, self.source)
        if isinstance(query, exp.Subquery):
            return self._plan_query(query.this)
        if isinstance(query, (exp.Union, exp.Intersect, exp.Except)):
            return self._plan_set_operation(query)
        if isinstance(query, exp.Select):
            return self._plan_select(query)
        raise self.unsupported(f"cannot run {type(query).__name__} as a query", query)

    # -- FROM -------------------------------------------------------------------------

    def _plan_from(self, select: exp.Select) -> Relation:
        from_ = select.args.get("from_") or select.args.get("from")
        if from_ is None:  # a constant query: one row, then the end
            return self._plan_named(ONE_ROW_SOURCE, ONE_ROW_SOURCE, select)
        joins = select.args.get("joins") or []
        rel = self.plan_factor(from_.this)
        if joins:
            reject_pending_rank(self, rel)
            rel = plan_joins(self, rel, joins, select)
        return rel

    def plan_factor(self, factor: exp.Expr) -> Relation:
        """A FROM item (table, subquery, window TVF) as a relation."""
        alias = factor.args.get("alias")
        if isinstance(alias, exp.TableAlias) and alias.columns:
            raise self.unsupported(
                "column names in a FROM alias (AS x(a, b)) are not supported", alias,
                "name the columns in the SELECT list: SELECT k AS a ... or (SELECT k AS a FROM s) AS x",
            )
        if factor.args.get("sample") is not None:
            raise self.unsupported("TABLESAMPLE is not supported on a stream", factor.args["sample"],
                                   "sample with a filter, e.g. WHERE random() < 0.1")
        if isinstance(factor, WindowTVF):
            return plan_window_tvf(self, factor)
        if isinstance(factor, ModelPredict):
            return plan_model_predict(self, factor, self.catalog.udf_planner())
        if isinstance(factor, exp.Subquery):
            inner = self._plan_query(factor.this)
            alias = factor.alias_or_name
            scope = inner.scope.requalified(normalize_name(alias)) if alias else inner.scope
            return Relation(inner.node, scope, inner.window, inner.label, inner.rank)
        if isinstance(factor, exp.Table):
            if not isinstance(factor.this, exp.Identifier):
                raise self.unsupported(f"unsupported table expression {factor.sql(dialect=SqlStream)}", factor)
            name = normalize_name(factor.this)
            alias = normalize_name(factor.args["alias"].this) if factor.args.get("alias") is not None else name
            return self._plan_named(name, alias, factor)
        raise self.unsupported(f"unsupported FROM item {factor.sql(dialect=SqlStream)[:60]}", factor)

    def _plan_named(self, name: str, alias: str, node: exp.Expr) -> Relation:
        if name in self._ctes:
            query, source = self._ctes[name]
            inner = self._sub_planner(source)._plan_query(query)
            return Relation(inner.node, inner.scope.requalified(alias), inner.window, name, inner.rank)
        info = self.catalog.relation(name)
        if info is None:
            names = self.catalog.relation_names()
            raise SqlAnalysisError(
                f"unknown source, table or view '{name}'",
                location=self.loc(node),
                hint=did_you_mean(name, names) or (f"known: {', '.join(sorted(names))}" if names else "create it with CREATE SOURCE"),
            )
        if info.kind == "VIEW":
            return self._plan_view(name, info, alias, node)
        if info.kind == "TABLE":
            return lookup_table_relation(self, info, alias, node)
        schema = info.schema
        if info.rowtime is not None:
            schema = schema.append(pa.field(WM_COLUMN, pa.int64()))
        scan = Scan(info.name, schema, info.rowtime, info.connector, info.delay_us)
        return Relation(scan, Scope.of_schema(_visible(info.schema), alias), None, name)

    def _plan_view(self, name: str, info: RelationInfo, alias: str, node: exp.Expr) -> Relation:
        if name in self._view_stack:
            raise SqlAnalysisError(f"view '{name}' refers to itself", location=self.loc(node))
        planner = self._sub_planner(info.source or self.source, view=name)
        try:
            inner = planner._plan_query(info.query)
        except SqlStreamError as error:
            raise error.with_location(self.loc(node))
        return Relation(inner.node, inner.scope.requalified(alias), inner.window, name, inner.rank)

    def _sub_planner(self, source: SourceText, view: str | None = None) -> "QueryPlanner":
        """A planner for a CTE's or view's text: this planner's CTEs, and the views being
        expanded (``view`` added), for cycle errors."""
        planner = QueryPlanner(self.catalog, source, self.settings)
        planner._ctes = dict(self._ctes)
        planner._view_stack = self._view_stack + ([view] if view is not None else [])
        return planner

    # -- SELECT -----------------------------------------------------------------------

    def _plan_select(self, select: exp.Select) -> Relation:
        written = select
        select, subqueries = split_subquery_filters(self, select)  # [NOT] IN / EXISTS: semi and anti joins
        select, scalars = split_scalar_subqueries(self, select)  # (SELECT agg FROM table): lookup joins
        self._reject_select_clauses(select)
        rel = self._plan_from(select)
        if subqueries:
            rel = plan_subquery_filters(self, rel, written, subqueries)
        if scalars:
            rel = plan_scalar_subqueries(self, rel, scalars)
        if rel.rank is not None:  # Top-N / deduplication: bounded by this WHERE
            rel, select = materialize_rank(self, select, rel)
        if has_grouping_sets(select.args.get("group")):
            return self._plan_grouping_sets(select, rel)
        items = self._select_items(select, rel.scope)
        has_aggregate = any(find_aggregates(i.expression, self.source, self.aggregate_function) for i in items) or (
            select.args.get("having") is not None
        )
        group = select.args.get("group")
        emit = select.args.get("emit")
        distinct = select.args.get("distinct")
        if distinct is not None and not has_aggregate and group is None:
            group_exprs = [i.expression for i in items]
            rel = plan_aggregate(self, select, rel, items, group_exprs, emit, from_distinct=True)
        elif has_aggregate or group is not None:
            if distinct is not None:
                raise self.unsupported("SELECT DISTINCT with GROUP BY is not supported", distinct)
            group_exprs = group_expressions(self, group)
            rel = plan_aggregate(self, select, rel, items, group_exprs, emit)
        else:
            if emit is not None:
                raise self.unsupported("EMIT applies to aggregations only", emit)
            rel = self._plan_projection(select, rel, items)
        limit = select.args.get("limit")
        if limit is not None:
            rel = self._plan_limit(limit, rel)
        return rel

    def _plan_set_operation(self, query: exp.Union | exp.Intersect | exp.Except) -> Relation:
        """UNION / INTERSECT / EXCEPT (:mod:`~sqlstream.plan.set_operations`), then its LIMIT."""
        for key in ("order", "offset"):
            if query.args.get(key) is not None:
                raise self.unsupported(f"{'ORDER BY' if key == 'order' else 'OFFSET'} is not supported on a stream",
                                       query.args[key], "for 'top N' use ROW_NUMBER() OVER (...) <= N over the set operation")
        rel = plan_set_operation(self, query, self._plan_query)
        limit = query.args.get("limit")
        return self._plan_limit(limit, rel) if limit is not None else rel

    def _plan_grouping_sets(self, select: exp.Select, rel: Relation) -> Relation:
        """ROLLUP / CUBE / GROUPING SETS: a UNION ALL of one aggregation per grouping set."""
        rel = self._plan_query(expand_grouping_sets(self, select, rel.scope))
        limit = select.args.get("limit")
        return self._plan_limit(limit, rel) if limit is not None else rel

    def _reject_select_clauses(self, select: exp.Select) -> None:
        """Clauses a stream cannot have: ORDER BY and its kin, locks, nested queries."""
        for key in _STREAM_CLAUSES:
            if select.args.get(key) is not None:
                node = select.args[key]
                raise self.unsupported(
                    f"{key.upper()} BY is not supported on a stream" if key == "order" else f"{key.upper()} is not supported",
                    node,
                    "for 'top N per window' use ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY ...) <= N",
                )
        if select.args.get("locks"):
            raise self.unsupported("FOR UPDATE / FOR SHARE is not supported on a stream", select)
        for clause in ("expressions", "where", "having", "group"):
            value = select.args.get(clause)
            for node in value if isinstance(value, list) else [value] if value is not None else []:
                nested = node.find(exp.Subquery, exp.Exists, exp.Select)
                if nested is not None:
                    raise self.unsupported(
                        "a subquery inside an expression is not supported on a stream",
                        nested,
                        "join it instead: FROM s JOIN (SELECT ...) AS t ON ..., or JOIN a lookup TABLE",
                    )

    def _plan_limit(self, limit: exp.Expr, rel: Relation) -> Relation:
        if isinstance(limit, exp.Fetch):
            options = limit.args.get("limit_options")
            if options is not None and (options.args.get("percent") or options.args.get("with_ties")):
                raise self.unsupported("FETCH ... PERCENT / WITH TIES is not supported", limit, "FETCH FIRST n ROWS ONLY or LIMIT n")
            count = limit.args.get("count")
        else:
            count = limit.expression if limit.expression is not None else limit.this
        if not (isinstance(count, exp.Literal) and not count.is_string and count.name.isdigit()):
            raise SqlAnalysisError(
                "LIMIT needs a whole number of rows, 0 or more", location=self.loc(limit), hint="for example LIMIT 10"
            )
        if rel.node.updating:
            raise self.unsupported("LIMIT on an updating result is not supported", limit)
        return Relation(Limit(rel.node, int(count.name)), rel.scope, None, rel.label)

    def _select_items(self, select: exp.Select, scope: Scope) -> list[SelectItem]:
        items: list[SelectItem] = []
        used: dict[str, int] = {}
        for index, expression in enumerate(select.expressions):
            if isinstance(expression, exp.Star) or (isinstance(expression, exp.Column) and isinstance(expression.this, exp.Star)):
                items += self._star_items(expression, scope, used)
                continue
            if isinstance(expression, exp.Alias):
                name = normalize_name(expression.args["alias"])
                inner = expression.this
            else:
                inner = expression
                name = _default_name(inner, index)
            items.append(SelectItem(inner, _unique(name, used)))
        return items

    def _star_items(self, star: exp.Expr, scope: Scope, used: dict[str, int]) -> list[SelectItem]:
        """``*`` and ``t.*``: one item per column."""
        qualifier = normalize_name(star.args["table"]) if isinstance(star, exp.Column) and star.args.get("table") is not None else None
        items = []
        for column in scope.star(qualifier, star, self.source):
            ref = exp.Column(this=exp.Identifier(this=column.name, quoted=True))
            if column.qualifiers:
                ref.set("table", exp.Identifier(this=sorted(column.qualifiers)[0], quoted=True))
            ref.meta.update(_first_position(star))
            items.append(SelectItem(ref, _unique(column.name, used)))
        return items

    def _plan_projection(self, select: exp.Select, rel: Relation, items: list[SelectItem]) -> Relation:
        node = rel.node
        scope = rel.scope
        if rel.window is not None:
            node, scope = expand_window(self, rel, select)
        if not all(over_whole_windows(i.expression, node) for i in items):
            return plan_over(self, select, node, scope, items, rel.label)
        for item in items:
            reject_window_functions(self, item.expression, node)
        resolved = [SelectItem(scope.resolve(i.expression, self.source), i.name) for i in items]
        where = select.args.get("where")
        condition = scope.resolve(where.this, self.source) if where is not None else None
        stage = self.stateless(node, resolved, condition, label=rel.label)
        return Relation(stage, Scope.of_schema(stage.schema, None), None, rel.label)


# -- small helpers --------------------------------------------------------------------------


def _visible(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f for f in schema if not is_hidden(f.name)])


def _unique(name: str, used: dict[str, int]) -> str:
    if name not in used:
        used[name] = 0
        return name
    used[name] += 1
    return f"{name}_{used[name]}"


def _first_position(node: exp.Expr) -> dict:
    for sub in node.walk():
        if sub.meta.get("line") is not None:
            return {k: v for k, v in sub.meta.items() if k in ("line", "col", "start", "end")}
    return {}


def _default_name(expression: exp.Expr, index: int) -> str:
    if isinstance(expression, exp.Column) and not isinstance(expression.this, exp.Star):
        return normalize_name(expression.this)
    if isinstance(expression, exp.Dot):
        return expression.name.lower()
    if isinstance(expression, exp.Anonymous):
        return str(expression.this).lower()
    if isinstance(expression, exp.Cast):
        return _default_name(expression.this, index)
    if isinstance(expression, exp.Func):
        return (expression.sql_name() or type(expression).__name__).lower()
    return f"expr_{index}"
