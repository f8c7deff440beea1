"""Window table functions in FROM: TUMBLE, HOP, CUMULATE and SESSION.

A window TVF is planned as a :class:`~sqlstream.plan.relation.PendingWindow` on its
input's relation, with ``window_start``/``window_end`` as *virtual* columns: a GROUP BY
over them makes it a window aggregation (:mod:`sqlstream.plan.aggregation`), anything
else materializes it here as a ``LateFilter`` (rows too late for every window they
belong to go to the dead-letter output) and a ``WindowExpand`` (each row once per
window).
"""

from __future__ import annotations

import pyarrow as pa
from sqlglot import exp

from sqlstream.errors import SqlAnalysisError, did_you_mean
from sqlstream.hidden import is_hidden
from sqlstream.plan.nodes import LateFilter, PlanNode, Stateless, WindowAggregate, WindowExpand, WindowSpec
from sqlstream.plan.relation import PendingWindow, PlannerContext, Relation
from sqlstream.plan.scope import Scope, ScopeColumn
from sqlstream.sql.dialect import WindowTVF
from sqlstream.sql.statements import SourceText, interval_us, normalize_name

__all__ = [
    "WINDOW_COLUMNS", "TIMESTAMP_US", "plan_window_tvf", "expand_window", "reject_virtual", "is_virtual",
    "reject_window_functions", "over_whole_windows",
]

WINDOW_COLUMNS = ("window_start", "window_end")
TIMESTAMP_US = pa.timestamp("us")

_SHAPES = {
    "TUMBLE": "TUMBLE(src, ts, size)",
    "HOP": "HOP(src, ts, slide, size)",
    "CUMULATE": "CUMULATE(src, ts, step, max_size)",
    "SESSION": "SESSION(src, ts, gap)",
}
_INTERVALS = {"TUMBLE": 1, "HOP": 2, "CUMULATE": 2, "SESSION": 1}


def plan_window_tvf(ctx: PlannerContext, tvf: WindowTVF) -> Relation:
    """``TUMBLE(src, ts, ...)`` and its kin: ``src`` with a pending window."""
    inner = ctx.plan_factor(tvf.this)
    if inner.rank is not None:
        raise ctx.unsupported("a window function over a ROW_NUMBER() ranking is not supported", inner.rank.window,
                              "bound the ranking first: (SELECT * FROM (...) WHERE rn <= N)")
    if inner.window is not None:
        raise ctx.unsupported("a window function over another window function is not supported", tvf)
    time_column = _time_column(ctx, tvf, inner)
    spec = _window_spec(ctx, tvf)
    alias = tvf.args.get("alias")
    qualifier = normalize_name(alias.this) if alias is not None else None
    scope = inner.scope.requalified(qualifier) if qualifier else inner.scope
    quals = set(next(iter(scope.columns)).qualifiers) if scope.columns else set()
    columns = list(scope.columns) + [
        ScopeColumn(name, name, TIMESTAMP_US, set(quals), virtual=True) for name in WINDOW_COLUMNS
    ]
    partition = tuple(scope.resolve(p, ctx.source) for p in tvf.args.get("partition_by") or [])
    window = PendingWindow(spec, time_column, inner.label, partition)
    return Relation(inner.node, Scope(columns), window, inner.label)


def _time_column(ctx: PlannerContext, tvf: WindowTVF, inner: Relation) -> str:
    """The internal name of the TVF's time column: it must be its input's event time (any
    TIMESTAMP column of an updating input, which carries no event-time column: the
    watermark is its input's, and the window aggregate over it dead-letters changes
    for windows it closed)."""
    kind = tvf.args["kind"]
    time_name = normalize_name(tvf.args["time_column"])
    time_col = next((c for c in inner.scope.columns if c.name == time_name), None)
    if time_col is None:
        raise SqlAnalysisError(
            f"unknown time column '{time_name}' in {kind}",
            location=ctx.loc(tvf.args["time_column"]),
            hint=did_you_mean(time_name, [c.name for c in inner.scope.columns]),
        )
    if inner.node.updating and inner.node.rowtime is None and pa.types.is_timestamp(time_col.type):
        return time_col.internal  # a changelog's time: its aggregate dead-letters changes for closed windows
    if inner.node.rowtime != time_col.internal:
        hint = (
            f"the event-time column of this input is '{inner.node.rowtime}'"
            if inner.node.rowtime
            else "declare one on the source: WATERMARK FOR ts AS ts - INTERVAL '5' SECOND"
        )
        raise SqlAnalysisError(
            f"{kind} needs an event-time column with a watermark; '{time_name}' is not one",
            location=ctx.loc(tvf.args["time_column"]),
            hint=hint,
        )
    return time_col.internal


def _window_spec(ctx: PlannerContext, tvf: WindowTVF) -> WindowSpec:
    kind = tvf.args["kind"]
    sizes = [interval_us(s, ctx.source) for s in tvf.args["sizes"]]
    expected = _INTERVALS[kind]
    if len(sizes) != expected:
        raise SqlAnalysisError(f"{kind} takes {expected} interval argument(s)", location=ctx.loc(tvf), hint=_SHAPES[kind])
    if any(s <= 0 for s in sizes):
        raise SqlAnalysisError(f"{kind} sizes must be positive", location=ctx.loc(tvf))
    if kind == "TUMBLE":
        return WindowSpec("tumble", size_us=sizes[0])
    if kind == "HOP":
        if sizes[1] < sizes[0]:
            raise SqlAnalysisError(
                "HOP size must be at least its slide (rows between two windows would belong to none)",
                location=ctx.loc(tvf.args["sizes"][1]),
                hint="HOP(src, ts, slide, size): the slide comes first",
            )
        return WindowSpec("hop", slide_us=sizes[0], size_us=sizes[1])
    if kind == "CUMULATE":
        if sizes[1] % sizes[0]:
            raise SqlAnalysisError("CUMULATE max_size must be a multiple of step", location=ctx.loc(tvf))
        return WindowSpec("cumulate", step_us=sizes[0], size_us=sizes[1])
    return WindowSpec("session", gap_us=sizes[0])


def expand_window(ctx: PlannerContext, rel: Relation, select: exp.Select) -> tuple[PlanNode, Scope]:
    """A window TVF without aggregation: each row once per window, with real window
    columns (late rows dead-lettered first)."""
    window = rel.window
    assert window is not None
    if window.spec.kind == "session":
        raise ctx.unsupported(
            "SESSION windows are supported in aggregations only", select,
            "GROUP BY window_start, window_end, <keys> over the SESSION(...) relation",
        )
    base = rel.node
    visible = [f for f in base.schema if not is_hidden(f.name)]
    hidden = [f for f in base.schema if is_hidden(f.name)]
    schema = pa.schema(visible + [pa.field(name, TIMESTAMP_US) for name in WINDOW_COLUMNS] + hidden)
    late = LateFilter(base, window.spec, window.time_column, window.label)
    node = WindowExpand(late, window.spec, window.time_column, schema)
    scope = Scope([
        ScopeColumn(c.name, c.internal, c.type, c.qualifiers, False) for c in rel.scope.columns
    ])
    return node, scope


def is_virtual(column: exp.Column) -> bool:
    """A window column of a window TVF that is not materialized yet."""
    target = column.meta.get("scope_column")
    return bool(target is not None and target.virtual)


def reject_virtual(source: SourceText, expression: exp.Expr) -> None:
    """Window columns of a pending window exist only after its aggregation."""
    for column in expression.find_all(exp.Column):
        if is_virtual(column):
            raise SqlAnalysisError(
                f"{column.name} is only available after the window aggregation (in SELECT, GROUP BY or HAVING)",
                location=source.location(column),
                hint=f"filter windows in HAVING, e.g. HAVING {column.name} >= TIMESTAMP '...'",
            )


def over_whole_windows(expression: exp.Expr, node: PlanNode) -> bool:
    """True when every OVER (...) in ``expression`` is over whole final windows (rows of a
    window arriving together, partitioned by its window columns): DataFusion evaluates
    them per batch."""
    for window in expression.find_all(exp.Window):
        partition = {normalize_name(p.this) for p in window.args.get("partition_by") or [] if isinstance(p, exp.Column)}
        if not (node.window is not None and set(node.window) <= partition and _emits_whole_windows(node)):
            return False
    return True


def reject_window_functions(ctx: PlannerContext, expression: exp.Expr, node: PlanNode) -> None:
    """OVER (...) in a projection: only over whole final windows (rows of a window
    arriving together, partitioned by its window columns)."""
    for window in expression.find_all(exp.Window):
        if over_whole_windows(window, node):
            continue  # rows of a final window arrive together: DataFusion evaluates it per batch
        raise ctx.unsupported(
            "window functions (OVER) need PARTITION BY window_start, window_end over a windowed aggregation",
            window,
            "e.g. ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY cnt DESC) AS rn",
        )


def _emits_whole_windows(node: PlanNode) -> bool:
    """True when every row of a window reaches ``node`` in one batch: projections over a
    window aggregate emitting on window close (not a union of several, not EMIT EVERY)."""
    while isinstance(node, Stateless):
        node = node.children[0]
    return isinstance(node, WindowAggregate) and not node.updating
