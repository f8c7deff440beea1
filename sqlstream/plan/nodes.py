"""Logical streaming plan nodes.

A plan is immutable and made once per query at analysis time; ``build`` turns it into
fresh runtime operators for each run. Every node knows its output ``schema``
(hidden ``__`` columns included), whether it is an updating result (changelog with
``__op``), its event-time column (``rowtime``) and its window columns, if any.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from sqlstream.durations import format_duration_us
from sqlstream.hidden import OP_COLUMN, is_hidden
from sqlstream.operators.base import Operator
from sqlstream.operators.changelog_aggregate import ChangelogAggregateOperator
from sqlstream.operators.context import BuildContext
from sqlstream.operators.datafusion_program import DataFusionProgram
from sqlstream.operators.group_aggregate import GroupAggregateOperator
from sqlstream.operators.stateless import StatelessOperator
from sqlstream.operators.union import LimitOperator, UnionOperator
from sqlstream.operators.window_aggregate import make_window_operator
from sqlstream.operators.window_changelog_aggregate import WindowChangelogAggregateOperator
from sqlstream.operators.windows import LateFilterOperator, WindowExpandOperator

__all__ = [
    "PlanNode",
    "Scan",
    "Stateless",
    "LateFilter",
    "WindowSpec",
    "WindowAggregate",
    "GroupAggregate",
    "ChangelogAggregate",
    "WindowChangelogAggregate",
    "WindowExpand",
    "Union",
    "Limit",
]


class PlanNode:
    schema: pa.Schema
    updating: bool = False
    rowtime: str | None = None
    window: tuple[str, str] | None = None  # (window_start, window_end) columns of final windows
    key_columns: tuple[str, ...] | None = None  # with ``window``: the group key columns of a final window result
    window_end: str | None = None  # a final window result's window_end column (even without window_start)
    children: tuple["PlanNode", ...] = ()

    def build(self, ctx: BuildContext) -> Operator:
        op = ctx.register(self.make_operator(ctx))
        for port, child in enumerate(self.children):
            child.build(ctx).connect(op, port)
        return op

    def make_operator(self, ctx: BuildContext) -> Operator:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__

    def details(self) -> list[str]:
        return []

    def explain(self, indent: int = 0) -> list[str]:
        pad = "  " * indent
        columns = ", ".join(n for n in self.schema.names if not is_hidden(n) and n != OP_COLUMN)
        kind = " [updating]" if self.updating else ""
        lines = [f"{pad}{self.describe()}{kind} -> ({columns})"]
        lines += [f"{pad}    {line}" for line in self.details()]
        for child in self.children:
            lines += child.explain(indent + 1)
        return lines

    def sources(self) -> set[str]:
        out: set[str] = set()
        for child in self.children:
            out |= child.sources()
        return out

    def state_description(self) -> str | None:
        return None

    def state_horizon_us(self) -> int:
        """About how long (µs) this subtree holds an input row before its results go
        out: the largest window span, join interval or join TTL in it (0: none)."""
        return max((child.state_horizon_us() for child in self.children), default=0)


class Scan(PlanNode):
    """Rows of a catalog source (shared read; fanned out by the runtime)."""

    def __init__(self, source: str, schema: pa.Schema, rowtime: str | None, connector: str, delay_us: int = 0):
        self.source = source
        self.schema = schema
        self.rowtime = rowtime
        self.connector = connector
        self.delay_us = delay_us

    def build(self, ctx: BuildContext) -> Operator:
        op = ctx.register(Operator())
        ctx.connect_source(self.source, op)
        return op

    def describe(self) -> str:
        wm = f", watermark {self.rowtime} - {format_duration_us(self.delay_us)}" if self.rowtime else ""
        return f"Scan {self.source} [{self.connector}{wm}]"

    def sources(self) -> set[str]:
        return {self.source}


class Stateless(PlanNode):
    """Projection, filter and scalar functions per micro-batch on DataFusion (plus a
    vectorized step for Python/model functions before it).

    ``projection``: the input column of each output column when the program only picks
    and renames columns (the operator then passes the arrays on without DataFusion)."""

    def __init__(self, child: PlanNode, program: DataFusionProgram, udf_step=None, *,
                 projection: tuple[int, ...] | None = None, rowtime: str | None = None,
                 window: tuple[str, str] | None = None, key_columns: tuple[str, ...] | None = None,
                 window_end: str | None = None, label: str = ""):
        self.children = (child,)
        self.program = program
        self.udf_step = udf_step
        self.projection = projection
        self.schema = program.schema
        self.updating = child.updating
        self.rowtime = rowtime
        self.window = window
        self.key_columns = key_columns
        self.window_end = window_end
        self.label = label

    def make_operator(self, ctx: BuildContext) -> Operator:
        step = self.udf_step.instantiate(ctx) if self.udf_step is not None else None
        return StatelessOperator(self.program, step, ctx.on_error, self.label, self.projection)

    def describe(self) -> str:
        return "Stateless (DataFusion per micro-batch)"

    def details(self) -> list[str]:
        lines = []
        if self.udf_step is not None:
            lines += self.udf_step.explain()
        lines.append(f"sql: {self.program.sql}")
        return lines


@dataclass(frozen=True)
class WindowSpec:
    """A window: kind tumble|hop|cumulate|session|final (windows from an upstream window
    operator, carried in ``__ws``/``__we``), with sizes in µs."""

    kind: str
    size_us: int = 0
    slide_us: int = 0
    step_us: int = 0
    gap_us: int = 0

    def describe(self) -> str:
        d = format_duration_us
        if self.kind == "tumble":
            return f"TUMBLE(size {d(self.size_us)})"
        if self.kind == "hop":
            return f"HOP(slide {d(self.slide_us)}, size {d(self.size_us)})"
        if self.kind == "cumulate":
            return f"CUMULATE(step {d(self.step_us)}, max {d(self.size_us)})"
        if self.kind == "session":
            return f"SESSION(gap {d(self.gap_us)})"
        return "window columns from upstream (final windows)"

    @property
    def span_us(self) -> int:
        """How long a row stays in a window of this kind (µs)."""
        return max(self.size_us, self.gap_us)


class _WindowedNode(PlanNode):
    spec: WindowSpec

    def state_horizon_us(self) -> int:
        return max(self.spec.span_us, super().state_horizon_us())


class LateFilter(_WindowedNode):
    """Sends rows whose every window has already been emitted to the dead-letter output
    (reason ``late``); keeps the whole row for the record."""

    def __init__(self, child: PlanNode, spec: WindowSpec, time_column: str, source_label: str):
        self.children = (child,)
        self.spec = spec
        self.time_column = time_column
        self.source_label = source_label
        self.schema = child.schema
        self.rowtime = child.rowtime
        self.window = child.window

    def make_operator(self, ctx: BuildContext) -> Operator:
        return LateFilterOperator(self.spec, self.time_column, self.source_label)

    def describe(self) -> str:
        return f"LateFilter {self.spec.describe()} on {self.time_column}"


class WindowAggregate(_WindowedNode):
    """Incremental windowed aggregation, each window emitted once, final, when the
    watermark passes its end (or early, as a changelog, with EMIT EVERY)."""

    def __init__(self, child: PlanNode, spec: WindowSpec, keys: list[str], calls: list, schema: pa.Schema,
                 emit_every_us: int | None = None):
        self.children = (child,)
        self.spec = spec
        self.keys = keys
        self.calls = calls
        self.schema = schema
        self.emit_every_us = emit_every_us
        self.updating = emit_every_us is not None
        self.window = ("window_start", "window_end")

    def make_operator(self, ctx: BuildContext) -> Operator:
        return make_window_operator(self.spec, self.keys, self.calls, self.schema, self.emit_every_us)

    def describe(self) -> str:
        emit = f"EMIT EVERY {format_duration_us(self.emit_every_us)}" if self.emit_every_us else "EMIT ON WINDOW CLOSE"
        return f"WindowAggregate {self.spec.describe()} {emit}"

    def details(self) -> list[str]:
        calls = ", ".join(c.describe() for c in self.calls)
        keys = ", ".join(self.keys) or "-"
        return [f"keys: {keys}; aggregates: {calls}", "state: partial aggregates per open window × key (freed at close)"]


class GroupAggregate(PlanNode):
    """Unwindowed GROUP BY: an updating result (changelog)."""

    def __init__(self, child: PlanNode, keys: list[str], calls: list, schema: pa.Schema, emit_every_us: int | None = None):
        self.children = (child,)
        self.keys = keys
        self.calls = calls
        self.schema = schema
        self.emit_every_us = emit_every_us
        self.updating = True

    def make_operator(self, ctx: BuildContext) -> Operator:
        return GroupAggregateOperator(self.keys, self.calls, self.schema, self.emit_every_us)

    def describe(self) -> str:
        return "GroupAggregate (updating)"

    def details(self) -> list[str]:
        calls = ", ".join(c.describe() for c in self.calls)
        return [f"keys: {', '.join(self.keys) or '-'}; aggregates: {calls}", "state: one partial row per key (unbounded)"]


class ChangelogAggregate(PlanNode):
    """Unwindowed GROUP BY over an updating input (e.g. a join's changelog): an updating result."""

    def __init__(self, child: PlanNode, keys: list[str], calls: list, schema: pa.Schema):
        self.children = (child,)
        self.keys = keys
        self.calls = calls
        self.schema = schema
        self.updating = True

    def make_operator(self, ctx: BuildContext) -> Operator:
        return ChangelogAggregateOperator(self.keys, self.calls, self.schema)

    def describe(self) -> str:
        return "ChangelogAggregate (updating input -> updating)"

    def details(self) -> list[str]:
        calls = ", ".join(c.describe() for c in self.calls)
        return [
            f"keys: {', '.join(self.keys) or '-'}; aggregates: {calls}",
            "state: the current input rows (a multiset) and one result row per key; touched keys are recomputed",
        ]


class WindowChangelogAggregate(_WindowedNode):
    """TUMBLE/HOP/CUMULATE aggregation over an updating input: an updating result keyed by
    (window, group key), changed per micro-batch while the window is open."""

    def __init__(self, child: PlanNode, spec: WindowSpec, keys: list[str], calls: list, schema: pa.Schema,
                 source_label: str):
        self.children = (child,)
        self.spec = spec
        self.keys = keys
        self.calls = calls
        self.schema = schema
        self.source_label = source_label
        self.updating = True

    def make_operator(self, ctx: BuildContext) -> Operator:
        return WindowChangelogAggregateOperator(self.spec, self.keys, self.calls, self.schema, self.source_label)

    def describe(self) -> str:
        return f"WindowChangelogAggregate {self.spec.describe()} (updating input -> updating, per micro-batch)"

    def details(self) -> list[str]:
        calls = ", ".join(c.describe() for c in self.calls)
        return [
            f"keys: {', '.join(self.keys) or '-'}; aggregates: {calls}",
            "state: the open windows' input rows (a multiset) and one result row per window × key; "
            "freed when the watermark passes window_end (later changes: dead letters 'late')",
        ]


class WindowExpand(_WindowedNode):
    """A window TVF without aggregation: each row once per window it belongs to."""

    def __init__(self, child: PlanNode, spec: WindowSpec, time_column: str, schema: pa.Schema):
        self.children = (child,)
        self.spec = spec
        self.time_column = time_column
        self.schema = schema
        self.rowtime = child.rowtime
        # window columns: a GROUP BY over them downstream (a TVF in a view or subquery) is
        # a window aggregate, final per window (rows of a window still arrive over time,
        # so OVER ... PARTITION BY them is not allowed here: see _emits_whole_windows)
        self.window = ("window_start", "window_end")

    def make_operator(self, ctx: BuildContext) -> Operator:
        return WindowExpandOperator(self.spec, self.time_column, self.schema)

    def describe(self) -> str:
        return f"WindowExpand {self.spec.describe()} on {self.time_column}"


class Union(PlanNode):
    def __init__(self, children: list[PlanNode], schema: pa.Schema, rowtime: str | None, window):
        self.children = tuple(children)
        self.schema = schema
        self.rowtime = rowtime
        self.window = window
        self.updating = any(c.updating for c in children)

    def make_operator(self, ctx: BuildContext) -> Operator:
        return UnionOperator(len(self.children), self.schema)

    def describe(self) -> str:
        return "UnionAll (watermark = minimum of inputs)"


class Limit(PlanNode):
    def __init__(self, child: PlanNode, count: int):
        self.children = (child,)
        self.count = count
        self.schema = child.schema
        self.rowtime = child.rowtime
        self.window = child.window

    def make_operator(self, ctx: BuildContext) -> Operator:
        return LimitOperator(self.count)

    def describe(self) -> str:
        return f"Limit {self.count}"
