"""Window functions (OVER) over an unbounded stream, outside whole final windows.

``ROW_NUMBER()`` goes to :mod:`sqlstream.plan.ranking` (Top-N, deduplication). The
others are OVER aggregations by event time (Flink's Over Aggregation): count, sum,
avg, min, max over ``RANGE BETWEEN INTERVAL ... PRECEDING AND CURRENT ROW``, ``ROWS
BETWEEN n PRECEDING AND CURRENT ROW`` or ``UNBOUNDED PRECEDING`` (the default frame), and ``LAG``/``LEAD(x[, n])``, and Python and model aggregates (``@udaf``, ``AS MODEL ... WITH
(aggregate = true)``) over the bounded frames, all with the same
``PARTITION BY`` and ``ORDER BY <event-time column>``. Planned as a *pre-stage*
(DataFusion: WHERE, the partition values and the arguments as hidden columns) →
``OverAggregate`` (each row once, when the watermark passes it) → a *post-stage* (the
SELECT list, each window function replaced by its computed column).
"""

from __future__ import annotations

import pyarrow as pa
from sqlglot import exp

from sqlstream.durations import format_duration_us
from sqlstream.errors import SqlAnalysisError, UdfError
from sqlstream.operators.base import Operator
from sqlstream.operators.context import BuildContext
from sqlstream.operators.over_aggregate import OverAggregateOperator, OverCall
from sqlstream.plan.nodes import PlanNode
from sqlstream.plan.python_aggregates import python_argument
from sqlstream.plan.ranking import is_row_number, plan_ranking
from sqlstream.plan.relation import PlannerContext, Relation, SelectItem
from sqlstream.plan.scope import Scope, column_ref
from sqlstream.sql.statements import interval_us

__all__ = ["plan_over", "OverAggregate"]

_FUNCS = {exp.Count: "count", exp.Sum: "sum", exp.Avg: "avg", exp.Min: "min", exp.Max: "max", exp.Lag: "lag", exp.Lead: "lead"}
_EXAMPLE = ("e.g. sum(v) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW), "
            "or ROW_NUMBER() ... WHERE rn <= N for Top-N")


class OverAggregate(PlanNode):
    """OVER aggregations by event time: every row once, when the watermark passes it."""

    def __init__(self, child: PlanNode, partition: list[str], time_column: str, calls: list[OverCall], schema: pa.Schema,
                 label: str):
        self.children = (child,)
        self.partition = partition
        self.time_column = time_column
        self.calls = calls
        self.schema = schema
        self.rowtime = child.rowtime
        self.label = label

    def make_operator(self, ctx: BuildContext) -> Operator:
        return OverAggregateOperator(self.partition, self.time_column, self.calls, self.schema, self.label)

    def describe(self) -> str:
        return "OverAggregate (event time; each row once the watermark passes it)"

    def details(self) -> list[str]:
        def frame(c: OverCall) -> str:
            if c.func in ("lag", "lead"):
                return f"{c.func}({c.arg}, {c.offset})"
            size = ("UNBOUNDED" if c.preceding is None else format_duration_us(c.preceding) if c.frame == "range"
                    else str(c.preceding))
            name = c.function.name if c.func == "udaf" else c.func
            return f"{name}({c.arg or '*'}) {c.frame.upper()} {size} PRECEDING"

        totals = " + one totals row per key (UNBOUNDED PRECEDING)" if any(c.preceding is None for c in self.calls
                                                                           if c.func not in ("lag", "lead")) else ""
        return [", ".join(frame(c) for c in self.calls),
                f"state: rows not emitted yet + emitted rows still inside a frame (trimmed as the watermark passes){totals}"]

    def state_horizon_us(self) -> int:
        return max([c.preceding for c in self.calls if c.frame == "range" and c.preceding is not None]
                   + [super().state_horizon_us()])


def plan_over(ctx: PlannerContext, select: exp.Select, node: PlanNode, scope: Scope, items: list[SelectItem],
              label: str) -> Relation:
    """A SELECT with window functions over a stream's rows."""
    windows = [w for i in items for w in i.expression.find_all(exp.Window)]
    if any(is_row_number(w) for w in windows):
        return plan_ranking(ctx, select, node, scope, items, label)
    if node.updating:
        raise ctx.unsupported("window functions (OVER) over an updating result are not supported", windows[0], _EXAMPLE)
    resolved = [SelectItem(scope.resolve(i.expression, ctx.source), i.name) for i in items]
    found = [w for i in resolved for w in i.expression.find_all(exp.Window)]
    first = found[0]
    partition = [p for p in first.args.get("partition_by") or []]
    order = first.args.get("order")
    time = _time_column(ctx, first, node)
    hidden = [SelectItem(p, f"__over_p{i}") for i, p in enumerate(partition)]
    hidden.append(SelectItem(column_ref(time), "__over_t"))
    calls: list[OverCall] = []
    replaced: dict[int, str] = {}
    for j, window in enumerate(found):
        if [p.sql() for p in window.args.get("partition_by") or []] != [p.sql() for p in partition] or (
                (window.args.get("order") or exp.Order()).sql() != order.sql()):
            raise ctx.unsupported("every window function of a SELECT needs the same PARTITION BY and ORDER BY", window, _EXAMPLE)
        call, arg = _call(ctx, window, j)
        if arg is not None:
            hidden.append(SelectItem(arg, call.arg))
        calls.append(call)
        replaced[id(window)] = call.output
    passthrough = [SelectItem(column_ref(c.internal), c.internal) for c in scope.columns if not c.virtual]
    where = select.args.get("where")
    condition = scope.resolve(where.this, ctx.source) if where is not None else None
    pre = ctx.stateless(node, passthrough + hidden, condition, label=label)
    types = {f.name: f.type for f in pre.schema}
    typed = [OverCall(c.func, c.arg, c.output, _output_type(ctx, c, types, found[i]), c.frame, c.preceding, c.offset,
                      c.function) for i, c in enumerate(calls)]
    schema = pre.schema
    for c in typed:
        schema = schema.append(pa.field(c.output, c.type))
    over = OverAggregate(pre, [h.name for h in hidden[: len(partition)]], "__over_t", typed, schema, label)

    def swap(expression: exp.Expr) -> exp.Expr:
        return column_ref(replaced[id(expression)]) if isinstance(expression, exp.Window) else expression

    post_items = [SelectItem(i.expression.transform(swap, copy=False), i.name) for i in resolved]
    post = ctx.stateless(over, post_items, None, label=label)
    return Relation(post, Scope.of_schema(post.schema, None), None, label)


def _time_column(ctx: PlannerContext, window: exp.Window, node: PlanNode) -> str:
    order = window.args.get("order")
    ordered = order.expressions if order is not None else []
    if (len(ordered) != 1 or ordered[0].args.get("desc") or not isinstance(ordered[0].this, exp.Column)
            or node.rowtime is None or ordered[0].this.name != node.rowtime):
        raise ctx.unsupported(
            "window functions (OVER) over a stream need ORDER BY its event-time column (ascending)", window,
            f"ORDER BY {node.rowtime}" if node.rowtime else "declare one on the source: WATERMARK FOR ts AS ts - INTERVAL '5' SECOND",
        )
    return ordered[0].this.name


def _call(ctx: PlannerContext, window: exp.Window, j: int) -> tuple[OverCall, exp.Expr | None]:
    """The call of ``window`` (types filled in later) and its argument expression."""
    fn = window.this
    func = _FUNCS.get(type(fn))
    function = ctx.aggregate_function(str(fn.this).lower()) if isinstance(fn, exp.Anonymous) else None
    if function is not None:
        return _python_call(ctx, window, function, j)
    if func is None or (isinstance(fn, exp.Count) and fn.args.get("distinct")) or isinstance(fn.this, exp.Distinct):
        name = fn.sql_name() if isinstance(fn, exp.Func) else type(fn).__name__
        raise ctx.unsupported(f"{name}() OVER (...) is not supported on a stream", window,
                              "supported: count, sum, avg, min, max over RANGE/ROWS ... PRECEDING AND CURRENT ROW; LAG, LEAD; "
                              "ROW_NUMBER for Top-N")
    arg = None if isinstance(fn.this, exp.Star) or fn.this is None else fn.this
    arg_name = f"__over_a{j}" if arg is not None else None
    output = f"__over_r{j}"
    spec = window.args.get("spec")
    if func in ("lag", "lead"):
        if spec is not None:
            raise ctx.unsupported(f"{func.upper()}() takes no frame (ROWS/RANGE)", window)
        if fn.args.get("default") is not None:
            raise ctx.unsupported(f"{func.upper()}() with a default value is not supported on a stream", fn,
                                  f"COALESCE({func.upper()}(x, n) OVER (...), default)")
        offset = fn.args.get("offset")
        n = 1 if offset is None else _whole(ctx, offset, f"{func.upper()}() offset")
        return OverCall(func, arg_name, output, pa.null(), offset=n), arg
    return _frame(ctx, window, OverCall(func, arg_name, output, pa.null())), arg


def _python_call(ctx: PlannerContext, window: exp.Window, function, j: int) -> tuple[OverCall, exp.Expr]:
    """A Python or model aggregate over a bounded frame: its values are recomputed per
    row from the held rows, so an UNBOUNDED frame would hold every row of a key."""
    arg = python_argument(ctx, window.this, function, None)
    call = _frame(ctx, window, OverCall("udaf", f"__over_a{j}", f"__over_r{j}", pa.null(), function=function))
    if call.preceding is None:
        raise ctx.unsupported(f"aggregate {function.name}() OVER (...) is not supported with an UNBOUNDED frame (the "
                              "default with ORDER BY): a Python or model aggregate needs a bounded frame", window,
                              f"{function.name}(x) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 9 PRECEDING AND CURRENT ROW) "
                              "or RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW")
    return call, arg


def _frame(ctx: PlannerContext, window: exp.Window, call: OverCall) -> OverCall:
    """``call`` with the frame of ``window``."""
    func, arg_name, output = call.func, call.arg, call.output

    def framed(frame: str, preceding: int | None) -> OverCall:
        return OverCall(func, arg_name, output, pa.null(), frame, preceding, function=call.function)

    spec = window.args.get("spec")
    if spec is None:  # the SQL default with ORDER BY: RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        return framed("range", None)
    end = spec.args.get("end")
    if (str(spec.args.get("start_side") or "").upper() != "PRECEDING" or (end is not None and str(end).upper() != "CURRENT ROW")
            or spec.args.get("end_side")):  # `ROWS n PRECEDING` alone ends at the current row
        raise ctx.unsupported("only frames BETWEEN ... PRECEDING AND CURRENT ROW are supported on a stream", window, _EXAMPLE)
    start = spec.args.get("start")
    kind = str(spec.args.get("kind")).upper()
    if isinstance(start, str) or (isinstance(start, exp.Var) and start.name.upper() == "UNBOUNDED"):
        return framed("rows" if kind == "ROWS" else "range", None)
    if kind == "ROWS":
        return framed("rows", _whole(ctx, start, "ROWS ... PRECEDING"))
    if not isinstance(start, exp.Interval):
        raise ctx.unsupported("a RANGE frame over event time needs an INTERVAL", window, "RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW")
    return framed("range", interval_us(start, ctx.source))


def _whole(ctx: PlannerContext, node: exp.Expr, what: str) -> int:
    if not (isinstance(node, exp.Literal) and not node.is_string and node.name.isdigit()):
        raise ctx.unsupported(f"{what} must be a whole number", node)
    return int(node.name)


def _output_type(ctx: PlannerContext, call: OverCall, types: dict[str, pa.DataType], window: exp.Window) -> pa.DataType:
    if call.func == "count":
        return pa.int64()
    arg_type = types[call.arg]
    if call.func == "udaf":
        wanted = call.function.arg_types
        given = [arg_type] if len(wanted) == 1 or not pa.types.is_struct(arg_type) else [f.type for f in arg_type]
        try:
            return call.function.check_args(given)
        except UdfError as error:
            raise SqlAnalysisError(error.message, location=ctx.loc(window), hint=error.hint) from error
    if call.func in ("lag", "lead"):
        return arg_type
    numeric = pa.types.is_integer(arg_type) or pa.types.is_floating(arg_type)
    temporal = pa.types.is_timestamp(arg_type) or pa.types.is_date(arg_type)
    if call.func in ("min", "max") and (numeric or temporal):
        return arg_type
    if call.func in ("sum", "avg") and numeric:
        return pa.float64() if call.func == "avg" or pa.types.is_floating(arg_type) else pa.int64()
    raise ctx.unsupported(f"{call.func}() OVER (...) over a value of type {arg_type} is not supported on a stream", window,
                          "numbers (and timestamps for min/max)")
