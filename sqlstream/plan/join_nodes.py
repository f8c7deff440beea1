"""Plan nodes of joins (chosen by :mod:`sqlstream.plan.joins`).

Each join node carries a :class:`~sqlstream.operators.joins.JoinLayout` (which input
columns come out under which names, the equality keys, the residual condition), the
condition as written and the reason its strategy was chosen, for EXPLAIN.
"""

from __future__ import annotations

import pyarrow as pa

from sqlstream.batches import to_batch
from sqlstream.durations import format_duration_us
from sqlstream.errors import PlanError
from sqlstream.operators.base import Operator
from sqlstream.operators.context import BuildContext
from sqlstream.operators.datafusion_program import DataFusionProgram
from sqlstream.operators.joins import IntervalJoinOperator, JoinLayout, LookupJoinOperator, WindowJoinOperator
from sqlstream.operators.regular_join import RegularJoinOperator
from sqlstream.plan.nodes import PlanNode

__all__ = ["TableRef", "LookupJoin", "WindowJoin", "IntervalJoin", "RegularJoin"]


class TableRef(PlanNode):
    """A ``CREATE TABLE`` named in FROM: bounded rows, only usable as a lookup-join side."""

    def __init__(self, name: str, schema: pa.Schema, connector: str):
        self.table = name
        self.schema = schema
        self.connector = connector

    def build(self, ctx: BuildContext) -> Operator:
        raise PlanError(f"TABLE {self.table} can only be read by a lookup join")

    def describe(self) -> str:
        return f"Table {self.table} [{self.connector}, loaded once per run]"


class _JoinNode(PlanNode):
    strategy = "join"

    def __init__(self, children: tuple[PlanNode, ...], layout: JoinLayout, condition: str, reason: str, *,
                 rowtime: str | None = None, window: tuple[str, str] | None = None, window_end: str | None = None,
                 updating: bool = False):
        self.children = children
        self.layout = layout
        self.schema = layout.schema
        self.condition = condition
        self.reason = reason
        self.rowtime = rowtime
        self.window = window
        self.window_end = window_end
        self.updating = updating

    def describe(self) -> str:
        return f"{self.strategy} {self.layout.kind.upper()}"

    def details(self) -> list[str]:
        lines = [f"on: {self.condition}" if self.condition else "on: (no condition)", f"why: {self.reason}"]
        keys = [", ".join(side.keys) or "-" for side in self.layout.sides]
        lines.append(f"keys: ({keys[0]}) = ({keys[1]})")
        if self.layout.residual is not None:
            lines.append(f"residual (per joined pair, DataFusion): {self.layout.residual.sql}")
        state = self.state_description()
        if state:
            lines.append(f"state: {state}")
        return lines


class LookupJoin(_JoinNode):
    """A stream joined with a bounded TABLE through an index built once per run."""

    strategy = "LookupJoin"

    def __init__(self, stream: PlanNode, stream_side: int, table: TableRef, table_program: DataFusionProgram | None,
                 layout: JoinLayout, condition: str, reason: str, *, rowtime=None, window=None, window_end=None):
        super().__init__((stream,), layout, condition, reason, rowtime=rowtime, window=window, window_end=window_end,
                         updating=stream.updating)
        self.stream_side = stream_side
        self.table = table
        self.table_program = table_program

    def make_operator(self, ctx: BuildContext) -> Operator:
        if ctx.load_table is None:
            raise PlanError(f"TABLE {self.table.table} cannot be loaded here")
        op = LookupJoinOperator(self.layout, self.stream_side, self._rows(ctx.load_table(self.table.table)))
        if ctx.watch_table is not None:  # a TABLE read again while the run goes on
            ctx.watch_table(self.table.table, lambda rows: op.prepare_swap(self._rows(rows)))
        return op

    def _rows(self, rows: pa.Table) -> pa.Table:
        if self.table_program is not None:
            rows = pa.Table.from_batches([self.table_program.run(to_batch(rows))])
        return rows

    def details(self) -> list[str]:
        lines = [f"table: {self.table.describe()}"]
        if self.table_program is not None:
            lines.append(f"table rows (once, DataFusion): {self.table_program.sql}")
        return lines + super().details()

    def state_description(self) -> str:
        return ("the table's rows and their key index (built once, or again each refresh_interval; probed per "
                "micro-batch); nothing per event")


class WindowJoin(_JoinNode):
    strategy = "WindowJoin"

    def make_operator(self, ctx: BuildContext) -> Operator:
        return WindowJoinOperator(self.layout)

    def state_description(self) -> str:
        return "rows of open windows on both sides (freed when the watermark passes window_end)"


class IntervalJoin(_JoinNode):
    strategy = "IntervalJoin"

    def __init__(self, children, layout, condition, reason, lower_us: int, upper_us: int, output_delay_us: int, **kw):
        super().__init__(children, layout, condition, reason, **kw)
        self.lower_us = lower_us
        self.upper_us = upper_us
        self.output_delay_us = output_delay_us

    def make_operator(self, ctx: BuildContext) -> Operator:
        return IntervalJoinOperator(self.layout, self.lower_us, self.upper_us, self.output_delay_us)

    def state_horizon_us(self) -> int:
        span = max(abs(self.lower_us), abs(self.upper_us)) + self.output_delay_us
        return max(span, super().state_horizon_us())

    def details(self) -> list[str]:
        lines = super().details()
        lines.append(f"output watermark: input watermark - {format_duration_us(self.output_delay_us)}")
        return lines

    def state_description(self) -> str:
        return "rows of both sides until the other side's watermark passes their interval (then freed)"


class RegularJoin(_JoinNode):
    strategy = "RegularJoin"

    def __init__(self, children, layout, condition, reason, ttl_us: int | None, **kw):
        super().__init__(children, layout, condition, reason, **kw)
        self.ttl_us = ttl_us

    def make_operator(self, ctx: BuildContext) -> Operator:
        return RegularJoinOperator(self.layout, self.ttl_us, ctx.clock)

    def state_horizon_us(self) -> int:
        return max(self.ttl_us or 0, super().state_horizon_us())

    def describe(self) -> str:
        return super().describe() + (" (changelog)" if self.updating else " (append-only)")

    def state_description(self) -> str:
        if self.ttl_us:
            return f"every row of both sides, dropped {format_duration_us(self.ttl_us)} after it was stored (join_state_ttl)"
        return "every row of both sides, kept for ever (grows with the inputs; SET join_state_ttl = '1h' bounds it)"
