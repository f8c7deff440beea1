"""Queries (sqlglot trees) → logical streaming plans.

The planner resolves names against the catalog, inlines views, recognizes window
table functions, splits aggregations into *pre-stage* (DataFusion computes group keys
and aggregate arguments per batch) → our incremental aggregate → *post-stage*
(DataFusion evaluates HAVING and the final projection over emitted rows), and hands
every stateless piece to DataFusion as one SQL text planned once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa
from sqlglot import exp

from sqlstream.errors import (
    PlanError,
    SqlAnalysisError,
    SqlStreamError,
    UnknownFunctionError,
    UnsupportedSqlError,
    did_you_mean,
)
from sqlstream.hidden import HIDDEN_PREFIX, OP_COLUMN, SOURCE_ID_COLUMN, WM_COLUMN, is_hidden
from sqlstream.operators.aggregates import AGGREGATE_FUNCTIONS, AggCall, output_type
from sqlstream.operators.datafusion_program import DataFusionProgram, plan_error, to_datafusion_sql
from sqlstream.plan.nodes import (
    ChangelogAggregate,
    GroupAggregate,
    LateFilter,
    Limit,
    PlanNode,
    Scan,
    Stateless,
    Union,
    WindowAggregate,
    WindowExpand,
    WindowSpec,
)
from sqlstream.plan.scope import Scope, ScopeColumn, column_ref
from sqlstream.sql.dialect import Emit, SqlStream, WindowTVF
from sqlstream.sql.statements import SourceText, interval_us, normalize_name

__all__ = ["QueryPlanner", "CatalogView", "RelationInfo"]

WINDOW_COLUMNS = ("window_start", "window_end")
_TS_US = pa.timestamp("us")


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


@dataclass
class _Window:
    """A window TVF seen in FROM, not yet materialized."""

    spec: WindowSpec
    time_column: str  # internal name of the event-time column in the input
    label: str


@dataclass
class _Rel:
    node: PlanNode
    scope: Scope
    window: _Window | None = None
    label: str = ""


@dataclass
class _Item:
    expression: exp.Expr
    name: str


class QueryPlanner:
    def __init__(self, catalog: CatalogView, source: SourceText, settings: dict | None = None):
        self.catalog = catalog
        self.source = source
        self.settings = settings or {}
        self._ctes: dict[str, tuple[exp.Expr, SourceText]] = {}
        self._view_stack: list[str] = []
        self._counter = 0

    # -- helpers --------------------------------------------------------------------

    def loc(self, node):
        return self.source.location(node)

    def _fresh(self, prefix: str) -> str:
        self._counter += 1
        return f"{HIDDEN_PREFIX}{prefix}{self._counter}"

    def _unsupported(self, message: str, node, hint: str | None = None) -> UnsupportedSqlError:
        return UnsupportedSqlError(message, location=self.loc(node), hint=hint)

    # -- entry ----------------------------------------------------------------------

    def plan(self, query: exp.Expr) -> PlanNode:
        return self._plan_query(query).node

    def _plan_query(self, query: exp.Expr) -> _Rel:
        with_ = query.args.get("with_") or query.args.get("with")
        if with_ is not None:
            for cte in with_.expressions:
                self._ctes[normalize_name(cte.alias)] = (cte.this, self.source)
        if isinstance(query, exp.Subquery):
            return self._plan_query(query.this)
        if isinstance(query, exp.Union):
            return self._plan_union(query)
        if isinstance(query, (exp.Intersect, exp.Except)):
            raise self._unsupported(f"{type(query).__name__.upper()} is not supported on streams", query, "use UNION ALL or a join")
        if isinstance(query, exp.Select):
            return self._plan_select(query)
        raise self._unsupported(f"cannot run {type(query).__name__} as a query", query)

    # -- FROM -------------------------------------------------------------------------

    def _plan_from(self, select: exp.Select) -> _Rel:
        from_ = select.args.get("from_") or select.args.get("from")
        if from_ is None:
            raise self._unsupported("a streaming query needs FROM", select, "SELECT ... FROM <source>")
        joins = select.args.get("joins") or []
        rel = self._plan_factor(from_.this)
        if joins:
            from sqlstream.plan.joins import plan_joins

            rel = plan_joins(self, rel, joins, select)
        return rel

    def _plan_factor(self, factor: exp.Expr) -> _Rel:
        alias = factor.args.get("alias")
        if isinstance(alias, exp.TableAlias) and alias.columns:
            raise self._unsupported(
                "column names in a FROM alias (AS x(a, b)) are not supported", alias,
                "name the columns in the SELECT list: SELECT k AS a ... or (SELECT k AS a FROM s) AS x",
            )
        if factor.args.get("sample") is not None:
            raise self._unsupported("TABLESAMPLE is not supported on a stream", factor.args["sample"],
                                    "sample with a filter, e.g. WHERE random() < 0.1")
        if isinstance(factor, WindowTVF):
            return self._plan_window_tvf(factor)
        if isinstance(factor, exp.Subquery):
            inner = self._plan_query(factor.this)
            alias = factor.alias_or_name
            return _Rel(inner.node, inner.scope.requalified(normalize_name(alias)) if alias else inner.scope, inner.window, inner.label)
        if isinstance(factor, exp.Table):
            if not isinstance(factor.this, exp.Identifier):
                raise self._unsupported(f"unsupported table expression {factor.sql(dialect=SqlStream)}", factor)
            name = normalize_name(factor.this)
            alias = normalize_name(factor.args["alias"].this) if factor.args.get("alias") is not None else name
            return self._plan_named(name, alias, factor)
        raise self._unsupported(f"unsupported FROM item {factor.sql(dialect=SqlStream)[:60]}", factor)

    def _plan_named(self, name: str, alias: str, node: exp.Expr) -> _Rel:
        if name in self._ctes:
            query, source = self._ctes[name]
            inner = self._sub_planner(source)._plan_query(query)
            return _Rel(inner.node, inner.scope.requalified(alias), inner.window, name)
        info = self.catalog.relation(name)
        if info is None:
            names = self.catalog.relation_names()
            raise SqlAnalysisError(
                f"unknown source, table or view '{name}'",
                location=self.loc(node),
                hint=did_you_mean(name, names) or (f"known: {', '.join(sorted(names))}" if names else "create it with CREATE SOURCE"),
            )
        if info.kind == "VIEW":
            if name in self._view_stack:
                raise SqlAnalysisError(f"view '{name}' refers to itself", location=self.loc(node))
            planner = self._sub_planner(info.source or self.source)
            planner._view_stack = self._view_stack + [name]
            try:
                inner = planner._plan_query(info.query)
            except SqlStreamError as error:
                raise error.with_location(self.loc(node))
            return _Rel(inner.node, inner.scope.requalified(alias), inner.window, name)
        if info.kind == "TABLE":
            from sqlstream.plan.joins import lookup_table_relation

            return lookup_table_relation(self, info, alias, node)
        schema = info.schema
        if info.rowtime is not None:
            schema = schema.append(pa.field(WM_COLUMN, pa.int64()))
        scan = Scan(info.name, schema, info.rowtime, info.connector, info.delay_us)
        return _Rel(scan, Scope.of_schema(_visible(info.schema), alias), None, name)

    def _sub_planner(self, source: SourceText) -> "QueryPlanner":
        planner = QueryPlanner(self.catalog, source, self.settings)
        planner._ctes = dict(self._ctes)
        planner._view_stack = list(self._view_stack)
        planner._counter = self._counter + 1000
        return planner

    def _plan_window_tvf(self, tvf: WindowTVF) -> _Rel:
        kind = tvf.args["kind"]
        inner = self._plan_factor(tvf.this)
        if inner.window is not None:
            raise self._unsupported("a window function over another window function is not supported", tvf)
        time_name = normalize_name(tvf.args["time_column"])
        time_col = next((c for c in inner.scope.columns if c.name == time_name), None)
        if time_col is None:
            raise SqlAnalysisError(
                f"unknown time column '{time_name}' in {kind}",
                location=self.loc(tvf.args["time_column"]),
                hint=did_you_mean(time_name, [c.name for c in inner.scope.columns]),
            )
        if inner.node.rowtime != time_col.internal:
            hint = (
                f"the event-time column of this input is '{inner.node.rowtime}'"
                if inner.node.rowtime
                else "declare one on the source: WATERMARK FOR ts AS ts - INTERVAL '5' SECOND"
            )
            raise SqlAnalysisError(
                f"{kind} needs an event-time column with a watermark; '{time_name}' is not one",
                location=self.loc(tvf.args["time_column"]),
                hint=hint,
            )
        sizes = [interval_us(s, self.source) for s in tvf.args["sizes"]]
        expected = {"TUMBLE": 1, "HOP": 2, "CUMULATE": 2, "SESSION": 1}[kind]
        if len(sizes) != expected:
            shape = {
                "TUMBLE": "TUMBLE(src, ts, size)",
                "HOP": "HOP(src, ts, slide, size)",
                "CUMULATE": "CUMULATE(src, ts, step, max_size)",
                "SESSION": "SESSION(src, ts, gap)",
            }[kind]
            raise SqlAnalysisError(f"{kind} takes {expected} interval argument(s)", location=self.loc(tvf), hint=shape)
        if any(s <= 0 for s in sizes):
            raise SqlAnalysisError(f"{kind} sizes must be positive", location=self.loc(tvf))
        if kind == "TUMBLE":
            spec = WindowSpec("tumble", size_us=sizes[0])
        elif kind == "HOP":
            if sizes[1] < sizes[0]:
                raise SqlAnalysisError(
                    "HOP size must be at least its slide (rows between two windows would belong to none)",
                    location=self.loc(tvf.args["sizes"][1]),
                    hint="HOP(src, ts, slide, size): the slide comes first",
                )
            spec = WindowSpec("hop", slide_us=sizes[0], size_us=sizes[1])
        elif kind == "CUMULATE":
            if sizes[1] % sizes[0]:
                raise SqlAnalysisError("CUMULATE max_size must be a multiple of step", location=self.loc(tvf))
            spec = WindowSpec("cumulate", step_us=sizes[0], size_us=sizes[1])
        else:
            spec = WindowSpec("session", gap_us=sizes[0])
        partition = tvf.args.get("partition_by")
        alias = tvf.args.get("alias")
        qualifier = normalize_name(alias.this) if alias is not None else None
        scope = inner.scope.requalified(qualifier) if qualifier else inner.scope
        quals = set(next(iter(scope.columns)).qualifiers) if scope.columns else set()
        columns = list(scope.columns) + [
            ScopeColumn("window_start", "window_start", _TS_US, set(quals), virtual=True),
            ScopeColumn("window_end", "window_end", _TS_US, set(quals), virtual=True),
        ]
        rel = _Rel(inner.node, Scope(columns), _Window(spec, time_col.internal, inner.label), inner.label)
        if partition:
            rel.window_partition = [scope.resolve(p, self.source) for p in partition]  # type: ignore[attr-defined]
        return rel

    # -- SELECT -----------------------------------------------------------------------

    def _plan_select(self, select: exp.Select) -> _Rel:
        for key in ("order", "offset", "qualify", "distribute", "sort", "cluster"):
            if select.args.get(key) is not None:
                node = select.args[key]
                raise self._unsupported(
                    f"{key.upper()} BY is not supported on a stream" if key == "order" else f"{key.upper()} is not supported",
                    node,
                    "for 'top N per window' use ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY ...) <= N",
                )
        if select.args.get("locks"):
            raise self._unsupported("FOR UPDATE / FOR SHARE is not supported on a stream", select)
        for clause in ("expressions", "where", "having", "group"):
            value = select.args.get(clause)
            for node in value if isinstance(value, list) else [value] if value is not None else []:
                nested = node.find(exp.Subquery, exp.Exists, exp.Select)
                if nested is not None:
                    raise self._unsupported(
                        "a subquery inside an expression is not supported on a stream",
                        nested,
                        "join it instead: FROM s JOIN (SELECT ...) AS t ON ..., or JOIN a lookup TABLE",
                    )
        rel = self._plan_from(select)
        items = self._select_items(select, rel.scope)
        has_aggregate = any(_find_aggregates(i.expression, self.source) for i in items) or (
            select.args.get("having") is not None
        )
        group = select.args.get("group")
        emit = select.args.get("emit")
        distinct = select.args.get("distinct")
        if distinct is not None and not has_aggregate and group is None:
            group_exprs = [i.expression for i in items]
            rel = self._plan_aggregate(select, rel, items, group_exprs, emit, from_distinct=True)
        elif has_aggregate or group is not None:
            if distinct is not None:
                raise self._unsupported("SELECT DISTINCT with GROUP BY is not supported", distinct)
            group_exprs = self._group_expressions(group)
            rel = self._plan_aggregate(select, rel, items, group_exprs, emit)
        else:
            if emit is not None:
                raise self._unsupported("EMIT applies to aggregations only", emit)
            rel = self._plan_projection(select, rel, items)
        limit = select.args.get("limit")
        if limit is not None:
            if isinstance(limit, exp.Fetch):
                options = limit.args.get("limit_options")
                if options is not None and (options.args.get("percent") or options.args.get("with_ties")):
                    raise self._unsupported("FETCH ... PERCENT / WITH TIES is not supported", limit, "FETCH FIRST n ROWS ONLY or LIMIT n")
                count = limit.args.get("count")
            else:
                count = limit.expression if limit.expression is not None else limit.this
            if not (isinstance(count, exp.Literal) and not count.is_string and count.name.isdigit()):
                raise SqlAnalysisError(
                    "LIMIT needs a whole number of rows, 0 or more", location=self.loc(limit), hint="for example LIMIT 10"
                )
            if rel.node.updating:
                raise self._unsupported("LIMIT on an updating result is not supported", limit)
            rel = _Rel(Limit(rel.node, int(count.name)), rel.scope, None, rel.label)
        return rel

    def _group_expressions(self, group: exp.Group | None) -> list[exp.Expr]:
        """The GROUP BY keys; ``GROUP BY ()`` is the empty grouping (one group)."""
        if group is None:
            return []
        special = {exp.GroupingSets: "GROUPING SETS", exp.Rollup: "ROLLUP", exp.Cube: "CUBE"}
        with_forms = [g for key in ("grouping_sets", "rollup", "cube") for g in group.args.get(key) or []]  # GROUP BY k WITH ROLLUP
        for g in group.expressions + with_forms:
            if type(g) in special:
                raise self._unsupported(f"GROUP BY {special[type(g)]} is not supported", g if g.find(exp.Column) else group,
                                        "write one query per grouping and combine them with UNION ALL")
        return [g for g in group.expressions if not (isinstance(g, exp.Tuple) and not g.expressions)]

    def _reject_nested_aggregation(self, select, key_items, calls, pre_types, from_distinct: bool) -> None:
        """Arrays and structs can be counted, not compared, hashed or kept as group keys."""
        for item in key_items:
            t = pre_types[item.name]
            if pa.types.is_nested(t):
                clause = "SELECT DISTINCT" if from_distinct else "GROUP BY"
                raise UnsupportedSqlError(
                    f"{clause} on a value of type {t} is not supported",
                    location=self.loc(select.args.get("group")) or self.loc(select.args.get("distinct")) or self.loc(select),
                    hint="group by a scalar: an element (v[1]) or a field (s.name)",
                )
        for c in calls:
            if c.arg_type is not None and pa.types.is_nested(c.arg_type) and c.func != "count":
                raise UnsupportedSqlError(
                    f"{'count(DISTINCT)' if c.func == 'count_distinct' else c.func + '()'} over a value of type {c.arg_type} is not supported",
                    location=self.loc(select),
                    hint="aggregate a scalar: an element (v[1]) or a field (s.name); count(v) works",
                )

    def _select_items(self, select: exp.Select, scope: Scope) -> list[_Item]:
        items: list[_Item] = []
        used: dict[str, int] = {}
        for index, expression in enumerate(select.expressions):
            if isinstance(expression, exp.Star) or (isinstance(expression, exp.Column) and isinstance(expression.this, exp.Star)):
                qualifier = normalize_name(expression.args["table"]) if isinstance(expression, exp.Column) and expression.args.get("table") is not None else None
                for column in scope.star(qualifier, expression, self.source):
                    ref = exp.Column(this=exp.Identifier(this=column.name, quoted=True))
                    if column.qualifiers:
                        ref.set("table", exp.Identifier(this=sorted(column.qualifiers)[0], quoted=True))
                    ref.meta.update(_first_position(expression))
                    items.append(_Item(ref, self._unique(column.name, used)))
                continue
            if isinstance(expression, exp.Alias):
                name = normalize_name(expression.args["alias"])
                inner = expression.this
            else:
                inner = expression
                name = _default_name(inner, index)
            items.append(_Item(inner, self._unique(name, used)))
        return items

    @staticmethod
    def _unique(name: str, used: dict[str, int]) -> str:
        if name not in used:
            used[name] = 0
            return name
        used[name] += 1
        return f"{name}_{used[name]}"

    # -- stateless ----------------------------------------------------------------------

    def _plan_projection(self, select: exp.Select, rel: _Rel, items: list[_Item]) -> _Rel:
        node = rel.node
        scope = rel.scope
        if rel.window is not None:
            node, scope = self._expand_window(rel, select)
        for item in items:
            self._reject_windows_functions(item.expression, node)
        resolved = [_Item(scope.resolve(i.expression, self.source), i.name) for i in items]
        where = select.args.get("where")
        condition = scope.resolve(where.this, self.source) if where is not None else None
        stage = self.stateless(node, resolved, condition, label=rel.label)
        return _Rel(stage, Scope.of_schema(stage.schema, None), None, rel.label)

    def _reject_windows_functions(self, expression: exp.Expr, node: PlanNode) -> None:
        for window in expression.find_all(exp.Window):
            partition = {normalize_name(p.this) for p in window.args.get("partition_by") or [] if isinstance(p, exp.Column)}
            if node.window is not None and set(node.window) <= partition and _emits_whole_windows(node):
                continue  # rows of a final window arrive together: DataFusion evaluates it per batch
            raise self._unsupported(
                "window functions (OVER) need PARTITION BY window_start, window_end over a windowed aggregation",
                window,
                "e.g. ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY cnt DESC) AS rn",
            )

    def _expand_window(self, rel: _Rel, select: exp.Select) -> tuple[PlanNode, Scope]:
        window = rel.window
        assert window is not None
        if window.spec.kind == "session":
            raise self._unsupported(
                "SESSION windows are supported in aggregations only", select,
                "GROUP BY window_start, window_end, <keys> over the SESSION(...) relation",
            )
        base = rel.node
        visible = [f for f in base.schema if not is_hidden(f.name)]
        hidden = [f for f in base.schema if is_hidden(f.name)]
        schema = pa.schema(visible + [pa.field("window_start", _TS_US), pa.field("window_end", _TS_US)] + hidden)
        late = LateFilter(base, window.spec, window.time_column, window.label)
        node = WindowExpand(late, window.spec, window.time_column, schema)
        scope = Scope([
            ScopeColumn(c.name, c.internal, c.type, c.qualifiers, False) for c in rel.scope.columns
        ])
        return node, scope

    def stateless(
        self, node: PlanNode, items: list[_Item], condition: exp.Expr | None, label: str = "",
        keep_hidden: bool = True,
    ) -> Stateless:
        """One DataFusion SELECT over ``node``'s rows (UDF calls evaluated before it)."""
        expressions = [i.expression for i in items]
        udf_step = None
        input_schema = node.schema
        udf_planner = self.catalog.udf_planner()
        if udf_planner is not None:
            expressions, condition, udf_step, input_schema = udf_planner.extract(
                expressions, condition, input_schema, self.source
            )
        parts = [f"{to_datafusion_sql(e)} AS {_quote(i.name)}" for e, i in zip(expressions, items)]
        if keep_hidden:
            parts += [_quote(f.name) for f in input_schema if f.name in (WM_COLUMN, OP_COLUMN, SOURCE_ID_COLUMN)]
        if not parts:
            raise PlanError("a query must select at least one column")
        rowtime, window = self._propagated(node, items, expressions)
        relation, child = "__input", node
        if isinstance(node, Stateless) and node.udf_step is None and udf_step is None:
            # fuse with the stage below: one DataFusion call per batch instead of two
            relation, child, input_schema = f"({node.program.sql}) AS __input", node.children[0], node.program.input_schema
        sql = f"SELECT {', '.join(parts)} FROM {relation}"
        if condition is not None:
            sql += f" WHERE {to_datafusion_sql(condition)}"
        program = self._program(sql, input_schema, items, condition)
        stage = Stateless(child, program, udf_step, rowtime=rowtime, window=window, label=label or "query")
        stage.key_columns = self._propagated_keys(node, items, expressions) if window else None
        stage.window_end = next(
            (i.name for i, e in zip(items, expressions, strict=True)
             if node.window_end and isinstance(e, exp.Column) and not e.args.get("table") and e.name == node.window_end),
            None,
        )
        return stage

    def _program(self, sql: str, schema: pa.Schema, items: list[_Item], condition) -> DataFusionProgram:
        try:
            return DataFusionProgram(sql, schema)
        except Exception as error:  # DataFusion planning errors are plain exceptions
            err = plan_error(error)
            name = err.function_name if isinstance(err, UnknownFunctionError) else None
            nodes = [i.expression for i in items] + ([condition] if condition is not None else [])
            if name:
                for node in nodes:
                    for call in node.find_all(exp.Anonymous, exp.Func):
                        if _call_name(call) == name.lower():
                            err.location = self.loc(call)
                            raise err from error
            err.location = self.loc(nodes[0]) if nodes else None
            raise err from error

    @staticmethod
    def _propagated(node: PlanNode, items: list[_Item], expressions: list[exp.Expr]):
        """Event-time and window columns that a projection passes through unchanged."""
        renamed: dict[str, str] = {}
        for item, expression in zip(items, expressions):
            if isinstance(expression, exp.Column) and not expression.args.get("table"):
                renamed.setdefault(expression.name, item.name)
        rowtime = renamed.get(node.rowtime) if node.rowtime else None
        window = None
        if node.window is not None and all(w in renamed for w in node.window):
            window = (renamed[node.window[0]], renamed[node.window[1]])
        return rowtime, window

    @staticmethod
    def _propagated_keys(node: PlanNode, items: list[_Item], expressions: list[exp.Expr]):
        """A final window result's group key columns, if a projection keeps them all."""
        if node.key_columns is None:
            return None
        renamed: dict[str, str] = {}
        for item, expression in zip(items, expressions):
            if isinstance(expression, exp.Column) and not expression.args.get("table"):
                renamed.setdefault(expression.name, item.name)
        if not all(k in renamed for k in node.key_columns):
            return None
        return tuple(renamed[k] for k in node.key_columns)

    # -- UNION ALL -------------------------------------------------------------------------

    def _plan_union(self, union: exp.Union) -> _Rel:
        if union.args.get("distinct"):
            raise self._unsupported("UNION (distinct) is not supported on streams", union, "use UNION ALL")
        sides = [self._plan_query(union.this), self._plan_query(union.expression)]
        left = [f for f in sides[0].node.schema if not is_hidden(f.name)]
        for side in sides[1:]:
            right = [f for f in side.node.schema if not is_hidden(f.name)]
            if len(right) != len(left):
                raise SqlAnalysisError(
                    f"UNION ALL inputs have {len(left)} and {len(right)} columns", location=self.loc(union)
                )
        if any(s.node.updating for s in sides):
            raise self._unsupported("UNION ALL of updating results is not supported", union)
        watermarked = all(WM_COLUMN in s.node.schema.names for s in sides)
        names = [f.name for f in left]
        aligned = []
        types = [f.type for f in left]
        for side in sides:
            fields = [f for f in side.node.schema if not is_hidden(f.name)]
            items = []
            for i, f in enumerate(fields):
                ref: exp.Expr = column_ref(f.name)
                if f.type != types[i]:
                    ref = exp.Cast(this=ref, to=exp.DataType.build(_sql_type(types[i])))
                items.append(_Item(ref, names[i]))
            if watermarked:
                items.append(_Item(column_ref(WM_COLUMN), WM_COLUMN))
            aligned.append(self.stateless(side.node, items, None, keep_hidden=False))
        schema = aligned[0].schema
        rowtimes = {s.rowtime for s in aligned}
        rowtime = aligned[0].rowtime if len(rowtimes) == 1 and watermarked else None
        windows = {s.window for s in aligned}
        window = aligned[0].window if len(windows) == 1 else None
        node = Union(aligned, schema, rowtime, window)
        return _Rel(node, Scope.of_schema(schema, None), None, "union")

    # -- aggregation -----------------------------------------------------------------------

    def _plan_aggregate(self, select, rel: _Rel, items: list[_Item], group_exprs: list[exp.Expr], emit,
                        from_distinct: bool = False) -> _Rel:
        scope = rel.scope
        window = rel.window
        source = self.source
        # GROUP BY 1 / GROUP BY alias
        resolved_groups: list[exp.Expr] = []
        for g in group_exprs:
            if isinstance(g, exp.Literal) and not g.is_string:
                position = int(g.name)
                if not 1 <= position <= len(items):
                    raise SqlAnalysisError(f"GROUP BY position {position} is not in the select list", location=self.loc(g))
                if _find_aggregates(items[position - 1].expression, self.source):
                    raise SqlAnalysisError(f"GROUP BY position {position} refers to an aggregate ({items[position - 1].name})",
                                           location=self.loc(g), hint="group by the columns the aggregate is computed per")
                g = items[position - 1].expression
            elif isinstance(g, exp.Column) and not g.args.get("table"):
                alias_match = next((i for i in items if i.name == normalize_name(g.this) and not _is_column_named(i.expression, i.name)), None)
                if alias_match is not None and not any(c.name == normalize_name(g.this) for c in scope.columns):
                    g = alias_match.expression
            resolved_groups.append(scope.resolve(g, source))
        # window columns in GROUP BY
        window_refs = [g for g in resolved_groups if isinstance(g, exp.Column) and g.name in WINDOW_COLUMNS and _is_virtual(g)]
        propagated = rel.node.window
        propagated_refs = [g for g in resolved_groups if isinstance(g, exp.Column) and propagated and g.name in propagated]
        spec: WindowSpec | None = None
        if window is not None:
            if not window_refs:
                if window.spec.kind == "session":
                    raise SqlAnalysisError("a SESSION window aggregation must GROUP BY window_start, window_end", location=self.loc(select))
                raise SqlAnalysisError(
                    "an aggregation over a window function must GROUP BY window_start, window_end",
                    location=self.loc(select.args.get("group") or select),
                    hint="GROUP BY window_start, window_end, <keys>",
                )
            spec = window.spec
        elif propagated_refs:
            spec = WindowSpec("final")
        keys = [g for g in resolved_groups if not any(g is w for w in window_refs + propagated_refs)]
        if window is not None and window.spec.kind == "session":
            partition = getattr(rel, "window_partition", None)
            if partition:
                key_sql = {to_datafusion_sql(k) for k in keys}
                for p in partition:
                    if to_datafusion_sql(p) not in key_sql:
                        keys.append(p)
        # aggregate calls
        resolved_items = [_Item(scope.resolve(i.expression, source), i.name) for i in items]
        having = select.args.get("having")
        resolved_having = scope.resolve(having.this, source) if having is not None else None
        calls: list[AggCall] = []
        call_sql: dict[str, str] = {}
        arg_items: list[_Item] = []
        for node in [i.expression for i in resolved_items] + ([resolved_having] if resolved_having is not None else []):
            for agg in _find_aggregates(node, self.source):
                text = to_datafusion_sql(agg)
                if text in call_sql:
                    continue
                output = f"__agg{len(calls)}"
                call_sql[text] = output
                func, arg_expr = self._aggregate_call(agg)
                arg_name = None
                if arg_expr is not None:
                    arg_name = f"__a{len(calls)}"
                    arg_items.append(_Item(arg_expr, arg_name))
                calls.append(AggCall(func, arg_name, output))
        # pre-stage: keys, aggregate arguments, time/window columns
        key_items = [_Item(k, f"__k{i}") for i, k in enumerate(keys)]
        pre_items = list(key_items) + arg_items
        base = rel.node
        if spec is not None and spec.kind != "final":
            base = LateFilter(base, spec, window.time_column, window.label)
            pre_items.append(_Item(column_ref(window.time_column), "__t"))
        elif spec is not None:
            pre_items.append(_Item(column_ref(propagated[0]), "__ws"))
            pre_items.append(_Item(column_ref(propagated[1]), "__we"))
            base = LateFilter(base, spec, propagated[1], rel.label)
        for item in pre_items:
            self._reject_virtual(item.expression)
        if not pre_items:  # e.g. SELECT count(*) FROM src: rows count, no column is needed
            pre_items.append(_Item(exp.Literal.number(1), "__one"))
        where = select.args.get("where")
        condition = scope.resolve(where.this, source) if where is not None else None
        if condition is not None:
            self._reject_virtual(condition)
        if rel.node.updating:
            self._check_changelog_aggregate(select, spec, emit, calls)
        pre = self.stateless(base, pre_items, condition, label=rel.label)
        pre_types = {f.name: f.type for f in pre.schema}
        calls = [AggCall(c.func, c.arg, c.output, pre_types.get(c.arg) if c.arg else None) for c in calls]
        for c in calls:
            if c.func in ("sum", "avg") or c.func.startswith(("stddev", "var")):
                t = c.arg_type
                if t is not None and not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)):
                    raise SqlAnalysisError(f"{c.func}() needs a numeric argument, got {t}", location=self.loc(select))
        self._reject_nested_aggregation(select, key_items, calls, pre_types, from_distinct)
        # the aggregate node
        key_fields = [pa.field(i.name, pre_types[i.name]) for i in key_items]
        agg_fields = [pa.field(c.output, output_type(c.func, c.arg_type)) for c in calls]
        emit_every = self._emit_every(emit)
        self._check_over_in_aggregation(items, spec, emit_every)
        if spec is not None:
            fields = key_fields + [pa.field("window_start", _TS_US), pa.field("window_end", _TS_US)] + agg_fields
            fields.append(pa.field(WM_COLUMN, pa.int64()))
            if emit_every is not None:
                fields.insert(0, pa.field(OP_COLUMN, pa.string()))
            agg_node: PlanNode = WindowAggregate(pre, spec, [i.name for i in key_items], calls, pa.schema(fields), emit_every)
        else:
            fields = [pa.field(OP_COLUMN, pa.string())] + key_fields + agg_fields
            if rel.node.updating:  # retractions: recompute the touched groups from the current input
                agg_node = ChangelogAggregate(pre, [i.name for i in key_items], calls, pa.schema(fields))
            else:
                agg_node = GroupAggregate(pre, [i.name for i in key_items], calls, pa.schema(fields), emit_every)
        # post-stage: HAVING and the final projection over emitted rows
        replacements = {to_datafusion_sql(k): column_ref(i.name) for k, i in zip(keys, key_items)}
        replacements.update({text: column_ref(name) for text, name in call_sql.items()})
        if spec is not None:
            for ref in window_refs + propagated_refs:
                replacements[to_datafusion_sql(ref)] = column_ref(
                    "window_start" if ref.name in ("window_start", (propagated or ("",))[0]) else "window_end"
                )
            # window columns not in GROUP BY may still be selected (they are per window)
            for name, target in zip(propagated or WINDOW_COLUMNS, WINDOW_COLUMNS):
                replacements.setdefault(to_datafusion_sql(column_ref(name)), column_ref(target))
        post_items = [_Item(self._rewrite_post(i.expression, replacements), i.name) for i in resolved_items]
        post_having = self._rewrite_post(resolved_having, replacements) if resolved_having is not None else None
        post = self.stateless(agg_node, post_items, post_having, label=rel.label)
        if spec is not None:
            names = [i.name for i in post_items]
            exprs = [i.expression for i in post_items]
            window_out = None
            starts = [n for n, e in zip(names, exprs) if isinstance(e, exp.Column) and e.name == "window_start"]
            ends = [n for n, e in zip(names, exprs) if isinstance(e, exp.Column) and e.name == "window_end"]
            if starts and ends:
                window_out = (starts[0], ends[0])
            post.window = window_out if emit_every is None else None
            # the group key in the output identifies a final window row (e.g. for sink message ids)
            key_refs = {i.name: n for n, e in zip(names, exprs) for i in key_items if isinstance(e, exp.Column) and e.name == i.name}
            post.key_columns = tuple(key_refs[i.name] for i in key_items) if len(key_refs) == len(key_items) else None
            post.rowtime = None
            post.window_end = ends[0] if ends and emit_every is None else None
        return _Rel(post, Scope.of_schema(post.schema, None), None, rel.label)

    def _check_changelog_aggregate(self, select, spec, emit, calls: list[AggCall]) -> None:
        """An aggregation over an updating input: unwindowed, retractable functions only."""
        from sqlstream.operators.changelog_aggregate import RETRACTABLE

        if spec is not None:
            raise self._unsupported(
                "a window aggregation over an updating result is not supported", select,
                "aggregate a windowed result instead (its rows are final), or drop the window",
            )
        if emit is not None:
            raise self._unsupported("EMIT over an updating input is not supported", emit)
        for call in calls:
            if call.func not in RETRACTABLE:
                raise self._unsupported(
                    f"{call.func}() over an updating input is not supported (rows can be retracted)", select,
                    "supported over changelogs: count, sum, avg, min, max, count(DISTINCT), approx_distinct, stddev, variance",
                )

    def _check_over_in_aggregation(self, items: list[_Item], spec, emit_every) -> None:
        """OVER next to GROUP BY runs on the emitted rows: only whole final windows
        (PARTITION BY window_start, window_end, emitted on window close) make that exact."""
        for item in items:
            for window in item.expression.find_all(exp.Window):
                partition = {normalize_name(p.this) for p in window.args.get("partition_by") or [] if isinstance(p, exp.Column)}
                if spec is None or emit_every is not None or not set(WINDOW_COLUMNS) <= partition:
                    raise self._unsupported(
                        "window functions (OVER) need PARTITION BY window_start, window_end over a windowed aggregation",
                        window,
                        "e.g. ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY count(*) DESC) AS rn",
                    )

    def _aggregate_call(self, agg: exp.Expr) -> tuple[str, exp.Expr | None]:
        condition = None
        if isinstance(agg, exp.Filter):
            condition = agg.expression.this if isinstance(agg.expression, exp.Where) else agg.expression
            agg = agg.this
        name = _aggregate_name(agg)
        arg = agg.this if not isinstance(agg, exp.Anonymous) else (agg.expressions[0] if agg.expressions else None)
        distinct = False
        if isinstance(arg, exp.Distinct):
            distinct = True
            if len(arg.expressions) != 1:
                raise self._unsupported("COUNT(DISTINCT ...) takes one expression", agg)
            arg = arg.expressions[0]
        if name == "count" and (arg is None or isinstance(arg, exp.Star)):
            func, arg_expr = "count_star", None
            if condition is not None:
                func, arg_expr = "count", exp.Literal.number(1)
        else:
            func = AGGREGATE_FUNCTIONS[name]
            if distinct:
                if func != "count":
                    raise self._unsupported(f"{name.upper()}(DISTINCT ...) is not supported", agg, "COUNT(DISTINCT x) is")
                func = "count_distinct"
            arg_expr = arg
        if arg_expr is not None and _find_aggregates(arg_expr, self.source):
            raise SqlAnalysisError("aggregate functions cannot be nested", location=self.loc(agg))
        if condition is not None and arg_expr is not None:
            arg_expr = exp.Case(ifs=[exp.If(this=condition, true=arg_expr)])
        return func, arg_expr

    def _reject_virtual(self, expression: exp.Expr) -> None:
        for column in expression.find_all(exp.Column):
            if _is_virtual(column):
                raise SqlAnalysisError(
                    f"{column.name} is only available after the window aggregation (in SELECT, GROUP BY or HAVING)",
                    location=self.loc(column),
                    hint=f"filter windows in HAVING, e.g. HAVING {column.name} >= TIMESTAMP '...'",
                )

    def _rewrite_post(self, expression: exp.Expr, replacements: dict[str, exp.Expr]) -> exp.Expr:
        def rewrite(node: exp.Expr) -> exp.Expr:
            if isinstance(node, (exp.Column, exp.AggFunc, exp.Filter, exp.Anonymous, exp.Func, exp.Binary, exp.Paren, exp.Cast, exp.Case)):
                text = to_datafusion_sql(node)
                if text in replacements:
                    return replacements[text].copy()
            return node

        rewritten = expression.copy().transform(rewrite)
        for column in rewritten.find_all(exp.Column):
            if column.name.startswith(("__agg", "__k")) or column.name in WINDOW_COLUMNS:
                continue
            original = column.meta.get("scope_column")
            name = original.name if original is not None else column.name
            raise SqlAnalysisError(
                f"column '{name}' must appear in GROUP BY or be used in an aggregate function",
                location=self.loc(column),
            )
        return rewritten

    def _emit_every(self, emit) -> int | None:
        if emit is None or not isinstance(emit, Emit) or emit.this is None:
            return None
        every = interval_us(emit.this, self.source)
        if every <= 0:
            raise SqlAnalysisError("EMIT EVERY needs a positive interval", location=self.loc(emit))
        return every


# -- small helpers --------------------------------------------------------------------------


def _visible(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f for f in schema if not is_hidden(f.name)])


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


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


def _emits_whole_windows(node: PlanNode) -> bool:
    """True when every row of a window reaches ``node`` in one batch: projections over a
    window aggregate emitting on window close (not a union of several, not EMIT EVERY)."""
    while isinstance(node, Stateless):
        node = node.children[0]
    return isinstance(node, WindowAggregate) and not node.updating


def _is_virtual(column: exp.Column) -> bool:
    target = column.meta.get("scope_column")
    return bool(target is not None and target.virtual)


def _is_column_named(expression: exp.Expr, name: str) -> bool:
    return isinstance(expression, exp.Column) and normalize_name(expression.this) == name


def _aggregate_name(node: exp.Expr) -> str | None:
    if isinstance(node, exp.Filter):
        return _aggregate_name(node.this)
    if isinstance(node, exp.Count):
        return "count"
    if isinstance(node, exp.Anonymous):
        name = str(node.this).lower()
        return name if name in AGGREGATE_FUNCTIONS else None
    mapping = {
        exp.Sum: "sum", exp.Avg: "avg", exp.Min: "min", exp.Max: "max",
        exp.Stddev: "stddev", exp.StddevSamp: "stddev_samp", exp.StddevPop: "stddev_pop",
        exp.Variance: "var_samp", exp.VariancePop: "var_pop",
        exp.FirstValue: "first_value", exp.LastValue: "last_value", exp.ApproxDistinct: "approx_distinct",
    }
    for cls, name in mapping.items():
        if type(node) is cls:
            return name
    return None


_SUPPORTED_AGGREGATES = "count, count(DISTINCT), sum, avg, min, max, stddev[_pop], var[_pop], first_value, last_value, approx_distinct"


def _find_aggregates(expression: exp.Expr, source: SourceText | None = None) -> list[exp.Expr]:
    """Top-level aggregate calls in ``expression`` (not those inside OVER windows)."""
    found = []

    def visit(node: exp.Expr) -> None:
        if isinstance(node, exp.Window):  # OVER (...): not an aggregate itself, but it may use some
            for child in node.args.get("partition_by") or []:
                visit(child)
            if node.args.get("order") is not None:
                visit(node.args["order"])
            if node.this is not None:
                for child in node.this.iter_expressions():
                    visit(child)
            return
        if isinstance(node, exp.Filter) and _aggregate_name(node.this):
            found.append(node)
            return
        name = _aggregate_name(node)
        if name is not None:
            found.append(node)
            return
        if isinstance(node, exp.AggFunc):
            raise UnsupportedSqlError(
                f"aggregate function {node.sql_name() or type(node).__name__} is not supported in streaming aggregations",
                location=source.location(node) if source is not None else None,
                hint=f"supported: {_SUPPORTED_AGGREGATES}",
            )
        for child in node.iter_expressions():
            visit(child)

    visit(expression)
    return found


def _sql_type(t: pa.DataType) -> str:
    from sqlstream.sql.types import sql_type_name

    return sql_type_name(t)


def _call_name(call: exp.Expr) -> str:
    """The SQL name of a function call: ``foo`` for foo(x), ``sign`` for sign(x)."""
    if isinstance(call, exp.Anonymous):
        return str(call.this).lower()
    return call.sql_name().lower() if isinstance(call, exp.Func) else call.name.lower()
