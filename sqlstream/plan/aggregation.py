"""Aggregations: GROUP BY, SELECT DISTINCT and aggregate functions.

An aggregation is planned in three stages:

1. the *pre-stage* (DataFusion, per batch) computes the group keys (``__kN``) and the
   aggregate arguments (``__aN``) and keeps the event time (``__t``) or the upstream
   window columns (``__ws``/``__we``); a ``LateFilter`` before it dead-letters rows too
   late for every window they belong to;
2. the incremental aggregate: ``WindowAggregate`` (GROUP BY window_start, window_end of
   a window TVF, or of an upstream final window result), ``GroupAggregate`` (no window:
   a changelog), or ``ChangelogAggregate`` (over an updating input: retractions);
3. the *post-stage* (DataFusion, over emitted rows) evaluates HAVING and the SELECT
   list with every group key and aggregate call replaced by its column.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pyarrow as pa
from sqlglot import exp

from sqlstream.errors import SqlAnalysisError, UnsupportedSqlError
from sqlstream.hidden import OP_COLUMN, WM_COLUMN
from sqlstream.operators.aggregates import AGGREGATE_FUNCTIONS, AggCall
from sqlstream.operators.changelog_aggregate import RETRACTABLE
from sqlstream.operators.python_aggregates import PythonAggregateCall
from sqlstream.plan.lowering import to_datafusion_sql
from sqlstream.plan.nodes import (
    ChangelogAggregate,
    GroupAggregate,
    LateFilter,
    PlanNode,
    Stateless,
    WindowAggregate,
    WindowChangelogAggregate,
    WindowSpec,
)
from sqlstream.plan.python_aggregates import check_python_call, key_text, python_argument
from sqlstream.plan.relation import PlannerContext, Relation, SelectItem, StageColumns
from sqlstream.plan.scope import Scope, column_ref
from sqlstream.plan.windows import TIMESTAMP_US, WINDOW_COLUMNS, is_virtual, reject_virtual
from sqlstream.sql.dialect import Emit
from sqlstream.sql.statements import SourceText, interval_us, normalize_name

__all__ = ["plan_aggregate", "group_expressions", "find_aggregates"]

_SUPPORTED_AGGREGATES = "count, count(DISTINCT), sum, avg, min, max, stddev[_pop], var[_pop], first_value, last_value, approx_distinct"
_AGGREGATE_CLASSES = {
    exp.Sum: "sum", exp.Avg: "avg", exp.Min: "min", exp.Max: "max",
    exp.Stddev: "stddev", exp.StddevSamp: "stddev_samp", exp.StddevPop: "stddev_pop",
    exp.Variance: "var_samp", exp.VariancePop: "var_pop",
    exp.FirstValue: "first_value", exp.LastValue: "last_value", exp.ApproxDistinct: "approx_distinct",
}


def plan_aggregate(ctx: PlannerContext, select: exp.Select, rel: Relation, items: list[SelectItem],
                   group_exprs: list[exp.Expr], emit, from_distinct: bool = False) -> Relation:
    """``select`` (with its ``items``) as an aggregation of ``rel`` grouped by ``group_exprs``."""
    return _Aggregation(ctx, select, rel, items, emit, from_distinct).plan(group_exprs)


def group_expressions(ctx: PlannerContext, group: exp.Group | None) -> list[exp.Expr]:
    """The GROUP BY keys; ``GROUP BY ()`` is the empty grouping (one group)."""
    if group is None:
        return []
    special = {exp.GroupingSets: "GROUPING SETS", exp.Rollup: "ROLLUP", exp.Cube: "CUBE"}
    with_forms = [g for key in ("grouping_sets", "rollup", "cube") for g in group.args.get(key) or []]  # GROUP BY k WITH ROLLUP
    for g in group.expressions + with_forms:
        if type(g) in special:
            raise ctx.unsupported(f"GROUP BY ... WITH {special[type(g)]} is not supported", group,
                                  "write GROUP BY ROLLUP (a, b), CUBE (a, b) or GROUPING SETS ((a, b), (a), ())")
    return [g for g in group.expressions if not (isinstance(g, exp.Tuple) and not g.expressions)]


@dataclass(frozen=True)
class _Grouping:
    """The resolved GROUP BY: key expressions and the window aggregated per, if any."""

    keys: list[exp.Expr]
    spec: WindowSpec | None
    window_refs: list[exp.Expr]  # window_start/window_end of a pending window TVF
    propagated: tuple[str, str] | None  # window columns of the input (a final window result)
    propagated_refs: list[exp.Expr]  # those in GROUP BY


@dataclass(frozen=True)
class _Calls:
    """The aggregate calls of SELECT and HAVING (each distinct call once)."""

    calls: list[AggCall]
    outputs: dict[str, str]  # call's DataFusion SQL -> its output column
    arguments: list[SelectItem]  # argument expressions computed by the pre-stage


class _Aggregation:
    def __init__(self, ctx: PlannerContext, select: exp.Select, rel: Relation, items: list[SelectItem], emit,
                 from_distinct: bool):
        self.ctx = ctx
        self.source = ctx.source
        self.select = select
        self.rel = rel
        self.items = items
        self.emit = emit
        self.from_distinct = from_distinct
        self.udafs = ctx.aggregate_function  # name -> registered Python/model aggregate, or None
        self.key_names: tuple[str, ...] = ()  # the GROUP BY keys as written (Python aggregates' dead letters)
        self.call_nodes: dict[str, exp.Expr] = {}  # output column -> the call as written (errors)

    def plan(self, group_exprs: list[exp.Expr]) -> Relation:
        scope, source = self.rel.scope, self.source
        grouping = self._grouping([scope.resolve(self._group_target(g), source) for g in group_exprs])
        resolved_items = [SelectItem(scope.resolve(i.expression, source), i.name) for i in self.items]
        having = self.select.args.get("having")
        resolved_having = scope.resolve(having.this, source) if having is not None else None
        calls = self._calls([i.expression for i in resolved_items] + ([resolved_having] if resolved_having is not None else []))
        key_items = [SelectItem(k, f"__k{i}") for i, k in enumerate(grouping.keys)]
        self.key_names = tuple(key_text(k) for k in grouping.keys)
        pre = self._pre_stage(grouping, key_items, calls)
        pre_types = {f.name: f.type for f in pre.schema}
        typed = [replace(c, arg_type=pre_types.get(c.arg) if c.arg else None) for c in calls.calls]
        self._check_arguments(key_items, typed, pre_types)
        emit_every = self._emit_every()
        self._check_over(grouping.spec, emit_every)
        node = self._aggregate_node(pre, grouping, key_items, typed, emit_every)
        post = self._post_stage(node, grouping, key_items, calls, resolved_items, resolved_having, emit_every)
        return Relation(post, Scope.of_schema(post.schema, None), None, self.rel.label)

    def _loc(self, node):
        return self.ctx.loc(node)

    # -- GROUP BY -----------------------------------------------------------------------------

    def _group_target(self, g: exp.Expr) -> exp.Expr:
        """What a GROUP BY item means: ``GROUP BY 1`` and ``GROUP BY alias`` name a select item."""
        items = self.items
        if isinstance(g, exp.Literal) and not g.is_string:
            position = int(g.name)
            if not 1 <= position <= len(items):
                raise SqlAnalysisError(f"GROUP BY position {position} is not in the select list", location=self._loc(g))
            if find_aggregates(items[position - 1].expression, self.source, self.udafs):
                raise SqlAnalysisError(f"GROUP BY position {position} refers to an aggregate ({items[position - 1].name})",
                                       location=self._loc(g), hint="group by the columns the aggregate is computed per")
            return items[position - 1].expression
        if isinstance(g, exp.Column) and not g.args.get("table"):
            name = normalize_name(g.this)
            alias_match = next((i for i in items if i.name == name and not _is_column_named(i.expression, i.name)), None)
            if alias_match is not None and not any(c.name == name for c in self.rel.scope.columns):
                return alias_match.expression
        return g

    def _grouping(self, resolved_groups: list[exp.Expr]) -> _Grouping:
        window = self.rel.window
        window_refs = [g for g in resolved_groups if isinstance(g, exp.Column) and g.name in WINDOW_COLUMNS and is_virtual(g)]
        propagated = self.rel.node.window
        propagated_refs = [g for g in resolved_groups if isinstance(g, exp.Column) and propagated and g.name in propagated]
        spec: WindowSpec | None = None
        if window is not None:
            if not window_refs:
                if window.spec.kind == "session":
                    raise SqlAnalysisError("a SESSION window aggregation must GROUP BY window_start, window_end",
                                           location=self._loc(self.select))
                raise SqlAnalysisError(
                    "an aggregation over a window function must GROUP BY window_start, window_end",
                    location=self._loc(self.select.args.get("group") or self.select),
                    hint="GROUP BY window_start, window_end, <keys>",
                )
            spec = window.spec
        elif propagated_refs:
            spec = WindowSpec("final")
        keys = [g for g in resolved_groups if not any(g is w for w in window_refs + propagated_refs)]
        if window is not None and window.spec.kind == "session" and window.partition:
            key_sql = {to_datafusion_sql(k) for k in keys}
            keys += [p for p in window.partition if to_datafusion_sql(p) not in key_sql]
        return _Grouping(keys, spec, window_refs, propagated, propagated_refs)

    # -- aggregate calls -----------------------------------------------------------------------

    def _calls(self, nodes: list[exp.Expr]) -> _Calls:
        calls: list[AggCall] = []
        outputs: dict[str, str] = {}
        arguments: list[SelectItem] = []
        for node in nodes:
            for agg in find_aggregates(node, self.source, self.udafs):
                text = to_datafusion_sql(agg)
                if text in outputs:
                    continue
                output = f"__agg{len(calls)}"
                outputs[text] = output
                self.call_nodes[output] = agg
                func, arg_expr = self._aggregate_call(agg)
                arg_name = None
                if arg_expr is not None:
                    arg_name = f"__a{len(calls)}"
                    arguments.append(SelectItem(arg_expr, arg_name))
                function = None
                if func == "python":
                    function = PythonAggregateCall(self.udafs(_aggregate_name(agg, self.udafs)), (), self.rel.label)
                calls.append(AggCall(func, arg_name, output, function=function))
        return _Calls(calls, outputs, arguments)

    def _aggregate_call(self, agg: exp.Expr) -> tuple[str, exp.Expr | None]:
        """(our aggregate function, its argument expression) of an aggregate call."""
        condition = None
        if isinstance(agg, exp.Filter):
            condition = agg.expression.this if isinstance(agg.expression, exp.Where) else agg.expression
            agg = agg.this
        name = _aggregate_name(agg, self.udafs)
        udaf = self.udafs(name) if name not in AGGREGATE_FUNCTIONS else None
        if udaf is not None:
            return "python", python_argument(self.ctx, agg, udaf, condition)
        arg, distinct = _aggregate_argument(agg)
        if distinct and len(arg.expressions) != 1:
            raise self.ctx.unsupported("COUNT(DISTINCT ...) takes one expression", agg)
        if distinct:
            arg = arg.expressions[0]
        if name == "count" and (arg is None or isinstance(arg, exp.Star)):
            func, arg_expr = "count_star", None
            if condition is not None:
                func, arg_expr = "count", exp.Literal.number(1)
        else:
            func = AGGREGATE_FUNCTIONS[name]
            if distinct:
                if func != "count":
                    raise self.ctx.unsupported(f"{name.upper()}(DISTINCT ...) is not supported", agg, "COUNT(DISTINCT x) is")
                func = "count_distinct"
            arg_expr = arg
        if arg_expr is not None and find_aggregates(arg_expr, self.source, self.udafs):
            raise SqlAnalysisError("aggregate functions cannot be nested", location=self._loc(agg))
        if condition is not None and arg_expr is not None:
            arg_expr = exp.Case(ifs=[exp.If(this=condition, true=arg_expr)])
        return func, arg_expr

    # -- pre-stage ------------------------------------------------------------------------------

    def _pre_stage(self, grouping: _Grouping, key_items: list[SelectItem], calls: _Calls) -> Stateless:
        """Keys, aggregate arguments and time/window columns per input row."""
        rel, spec, propagated = self.rel, grouping.spec, grouping.propagated
        pre_items = list(key_items) + calls.arguments
        base = rel.node
        if spec is not None and spec.kind != "final":
            window = rel.window
            if not rel.node.updating:  # over a changelog the aggregate decides lateness (closed windows)
                base = LateFilter(base, spec, window.time_column, window.label)
            pre_items.append(SelectItem(column_ref(window.time_column), "__t"))
        elif spec is not None:
            pre_items.append(SelectItem(column_ref(propagated[0]), "__ws"))
            pre_items.append(SelectItem(column_ref(propagated[1]), "__we"))
            base = LateFilter(base, spec, propagated[1], rel.label)
        for item in pre_items:
            reject_virtual(self.source, item.expression)
        if not pre_items:  # e.g. SELECT count(*) FROM src: rows count, no column is needed
            pre_items.append(SelectItem(exp.Literal.number(1), "__one"))
        where = self.select.args.get("where")
        condition = rel.scope.resolve(where.this, self.source) if where is not None else None
        if condition is not None:
            reject_virtual(self.source, condition)
        if rel.node.updating:
            self._check_changelog_aggregate(spec, calls.calls)
        return self.ctx.stateless(base, pre_items, condition, label=rel.label)

    def _check_changelog_aggregate(self, spec: WindowSpec | None, calls: list[AggCall]) -> None:
        """An aggregation over an updating input: unwindowed or TUMBLE/HOP/CUMULATE,
        retractable functions only."""
        if spec is not None and spec.kind == "session":
            raise self.ctx.unsupported(
                "a SESSION window aggregation over an updating result is not supported "
                "(a retraction could split a session)", self.select,
                "use TUMBLE or HOP over the updating result, or SESSION over an append-only stream",
            )
        if spec is not None and spec.kind == "final":
            raise self.ctx.unsupported(
                "grouping by the window columns of an updating window result is not supported", self.select,
                "drop EMIT EVERY upstream (its windows are then final), or aggregate over TUMBLE(...) of the input",
            )
        if self.emit is not None:
            raise self.ctx.unsupported("EMIT over an updating input is not supported", self.emit)
        for call in calls:
            if call.func not in RETRACTABLE:
                name = call.function.function.name if call.function is not None else call.func
                raise self.ctx.unsupported(
                    f"{name}() over an updating input is not supported (rows can be retracted)", self.select,
                    "supported over changelogs: count, sum, avg, min, max, count(DISTINCT), approx_distinct, stddev, variance",
                )

    def _check_arguments(self, key_items: list[SelectItem], calls: list[AggCall], pre_types: dict) -> None:
        """Numeric functions need numbers; arrays and structs can be counted, not
        compared, hashed or kept as group keys."""
        for c in calls:
            if c.func == "python":
                check_python_call(self.ctx, c, self.call_nodes.get(c.output, self.select))
            if c.func in ("sum", "avg") or c.func.startswith(("stddev", "var")):
                t = c.arg_type
                if t is not None and not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)):
                    raise SqlAnalysisError(f"{c.func}() needs a numeric argument, got {t}", location=self._loc(self.select))
        select = self.select
        for item in key_items:
            t = pre_types[item.name]
            if pa.types.is_nested(t):
                clause = "SELECT DISTINCT" if self.from_distinct else "GROUP BY"
                raise UnsupportedSqlError(
                    f"{clause} on a value of type {t} is not supported",
                    location=self._loc(select.args.get("group")) or self._loc(select.args.get("distinct")) or self._loc(select),
                    hint="group by a scalar: an element (v[1]) or a field (s.name)",
                )
        for c in calls:
            if c.arg_type is not None and pa.types.is_nested(c.arg_type) and c.func not in ("count", "python"):
                raise UnsupportedSqlError(
                    f"{'count(DISTINCT)' if c.func == 'count_distinct' else c.func + '()'} over a value of type {c.arg_type} is not supported",
                    location=self._loc(select),
                    hint="aggregate a scalar: an element (v[1]) or a field (s.name); count(v) works",
                )

    # -- the aggregate ---------------------------------------------------------------------------

    def _emit_every(self) -> int | None:
        emit = self.emit
        if emit is None or not isinstance(emit, Emit) or emit.this is None:
            return None
        every = interval_us(emit.this, self.source)
        if every <= 0:
            raise SqlAnalysisError("EMIT EVERY needs a positive interval", location=self._loc(emit))
        return every

    def _check_over(self, spec: WindowSpec | None, emit_every: int | None) -> None:
        """OVER next to GROUP BY runs on the emitted rows: only whole final windows
        (PARTITION BY window_start, window_end, emitted on window close) make that exact."""
        for item in self.items:
            for window in item.expression.find_all(exp.Window):
                partition = {normalize_name(p.this) for p in window.args.get("partition_by") or [] if isinstance(p, exp.Column)}
                if spec is None or emit_every is not None or not set(WINDOW_COLUMNS) <= partition:
                    raise self.ctx.unsupported(
                        "window functions (OVER) need PARTITION BY window_start, window_end over a windowed aggregation",
                        window,
                        "e.g. ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY count(*) DESC) AS rn",
                    )

    def _aggregate_node(self, pre: Stateless, grouping: _Grouping, key_items: list[SelectItem], calls: list[AggCall],
                        emit_every: int | None) -> PlanNode:
        pre_types = {f.name: f.type for f in pre.schema}
        key_fields = [pa.field(i.name, pre_types[i.name]) for i in key_items]
        calls = [replace(c, function=replace(c.function, key_names=self.key_names)) if c.function else c for c in calls]
        agg_fields = [pa.field(c.output, c.result_type()) for c in calls]
        keys = [i.name for i in key_items]
        if grouping.spec is not None:
            fields = key_fields + [pa.field(name, TIMESTAMP_US) for name in WINDOW_COLUMNS] + agg_fields
            fields.append(pa.field(WM_COLUMN, pa.int64()))
            if self.rel.node.updating:  # a changelog in: a changelog out, per micro-batch
                fields = [pa.field(OP_COLUMN, pa.string())] + fields[:-1]
                return WindowChangelogAggregate(pre, grouping.spec, keys, calls, pa.schema(fields), self.rel.label)
            if emit_every is not None:
                fields.insert(0, pa.field(OP_COLUMN, pa.string()))
            return WindowAggregate(pre, grouping.spec, keys, calls, pa.schema(fields), emit_every)
        fields = [pa.field(OP_COLUMN, pa.string())] + key_fields + agg_fields
        if self.rel.node.updating:  # retractions: recompute the touched groups from the current input
            return ChangelogAggregate(pre, keys, calls, pa.schema(fields))
        return GroupAggregate(pre, keys, calls, pa.schema(fields), emit_every)

    # -- post-stage --------------------------------------------------------------------------------

    def _post_stage(self, node: PlanNode, grouping: _Grouping, key_items: list[SelectItem], calls: _Calls,
                    resolved_items: list[SelectItem], resolved_having: exp.Expr | None, emit_every: int | None) -> Stateless:
        """HAVING and the final projection over emitted rows."""
        replacements = self._post_replacements(grouping, key_items, calls)
        post_items = [SelectItem(self._rewrite_post(i.expression, replacements), i.name) for i in resolved_items]
        post_having = self._rewrite_post(resolved_having, replacements) if resolved_having is not None else None
        if grouping.spec is not None and node.updating and emit_every is None:  # over a changelog: not final
            shown = _window_result_columns(post_items, key_items, emit_every)
            keys = shown.window + shown.key_columns if shown.window and shown.key_columns is not None else None
            columns = StageColumns(key_columns=keys)
        elif grouping.spec is not None:
            columns = _window_result_columns(post_items, key_items, emit_every)
        else:  # an updating result: its group key identifies a row (sinks upsert by it)
            keys = _window_result_columns(post_items, key_items, None).key_columns if key_items else None
            columns = StageColumns(key_columns=keys) if keys else None
        return self.ctx.stateless(node, post_items, post_having, label=self.rel.label, columns=columns)

    @staticmethod
    def _post_replacements(grouping: _Grouping, key_items: list[SelectItem], calls: _Calls) -> dict[str, exp.Expr]:
        """DataFusion SQL of group keys, aggregate calls and window columns → their
        columns in the aggregate's output."""
        replacements = {to_datafusion_sql(k): column_ref(i.name) for k, i in zip(grouping.keys, key_items)}
        replacements.update({text: column_ref(name) for text, name in calls.outputs.items()})
        if grouping.spec is None:
            return replacements
        propagated = grouping.propagated
        for ref in grouping.window_refs + grouping.propagated_refs:
            replacements[to_datafusion_sql(ref)] = column_ref(
                "window_start" if ref.name in ("window_start", (propagated or ("",))[0]) else "window_end"
            )
        # window columns not in GROUP BY may still be selected (they are per window)
        for name, target in zip(propagated or WINDOW_COLUMNS, WINDOW_COLUMNS):
            replacements.setdefault(to_datafusion_sql(column_ref(name)), column_ref(target))
        return replacements

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
                location=self._loc(column),
            )
        return rewritten


def _window_result_columns(post_items: list[SelectItem], key_items: list[SelectItem], emit_every: int | None) -> StageColumns:
    """Window columns of a window aggregation's result; the group key in the output
    identifies a final window row (e.g. for sink message ids)."""
    columns = [(i.name, i.expression) for i in post_items if isinstance(i.expression, exp.Column)]
    starts = [n for n, e in columns if e.name == "window_start"]
    ends = [n for n, e in columns if e.name == "window_end"]
    window = (starts[0], ends[0]) if starts and ends and emit_every is None else None
    key_refs = {i.name: n for n, e in columns for i in key_items if e.name == i.name}
    key_columns = tuple(key_refs[i.name] for i in key_items) if len(key_refs) == len(key_items) else None
    window_end = ends[0] if ends and emit_every is None else None
    return StageColumns(rowtime=None, window=window, key_columns=key_columns, window_end=window_end)


# -- aggregate calls in expressions -------------------------------------------------------------


def _is_column_named(expression: exp.Expr, name: str) -> bool:
    return isinstance(expression, exp.Column) and normalize_name(expression.this) == name


def _aggregate_argument(agg: exp.Expr) -> tuple[exp.Expr | None, bool]:
    """(the argument of an aggregate call, whether it is DISTINCT)."""
    arg = agg.this if not isinstance(agg, exp.Anonymous) else (agg.expressions[0] if agg.expressions else None)
    return arg, isinstance(arg, exp.Distinct)


def _aggregate_name(node: exp.Expr, udafs=None) -> str | None:
    if isinstance(node, exp.Filter):
        return _aggregate_name(node.this, udafs)
    if isinstance(node, exp.Count):
        return "count"
    if isinstance(node, exp.Anonymous):
        name = str(node.this).lower()
        return name if name in AGGREGATE_FUNCTIONS or (udafs is not None and udafs(name) is not None) else None
    for cls, name in _AGGREGATE_CLASSES.items():
        if type(node) is cls:
            return name
    return None


def find_aggregates(expression: exp.Expr, source: SourceText | None = None, udafs=None) -> list[exp.Expr]:
    """Top-level aggregate calls in ``expression`` (not those inside OVER windows);
    ``udafs(name)`` finds registered Python/model aggregates."""
    found: list[exp.Expr] = []
    _visit_aggregates(expression, source, found, udafs)
    return found


def _visit_aggregates(node: exp.Expr, source: SourceText | None, found: list[exp.Expr], udafs=None) -> None:
    if isinstance(node, exp.Window):  # OVER (...): not an aggregate itself, but it may use some
        for child in node.args.get("partition_by") or []:
            _visit_aggregates(child, source, found, udafs)
        if node.args.get("order") is not None:
            _visit_aggregates(node.args["order"], source, found, udafs)
        if node.this is not None:
            for child in node.this.iter_expressions():
                _visit_aggregates(child, source, found, udafs)
        return
    if _aggregate_name(node, udafs) is not None:  # a call, or a call with FILTER (WHERE ...)
        found.append(node)
        return
    if isinstance(node, exp.AggFunc):
        raise UnsupportedSqlError(
            f"aggregate function {node.sql_name() or type(node).__name__} is not supported in streaming aggregations",
            location=source.location(node) if source is not None else None,
            hint=f"supported: {_SUPPORTED_AGGREGATES}",
        )
    for child in node.iter_expressions():
        _visit_aggregates(child, source, found, udafs)
