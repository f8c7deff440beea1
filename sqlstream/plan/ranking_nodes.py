"""Plan nodes of ranking over unbounded streams: Top-N per key (an updating result)
and keep-first deduplication by event time (append-only), see
:mod:`sqlstream.plan.ranking`."""

from __future__ import annotations

import pyarrow as pa

from sqlstream.durations import format_duration_us
from sqlstream.operators.base import Operator
from sqlstream.operators.context import BuildContext
from sqlstream.operators.deduplicate import FirstRowOperator
from sqlstream.operators.top_n import TopNOperator
from sqlstream.plan.nodes import PlanNode

__all__ = ["TopN", "Deduplicate"]


class TopN(PlanNode):
    """``ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...) <= N`` over an append-only
    input: the top N rows per key as an updating result."""

    def __init__(self, child: PlanNode, partition: list[str], order: list[tuple[str, bool, bool]], limit: int,
                 schema: pa.Schema, rank_column: str | None, later_wins: bool, key_columns: tuple[str, ...] | None,
                 shown: tuple[str, str], ttl_us: int | None = None, time_column: str | None = None):
        self.children = (child,)
        self.ttl_us = ttl_us
        self.time_column = time_column
        self.partition = partition
        self.order = order
        self.limit = limit
        self.schema = schema
        self.rank_column = rank_column
        self.later_wins = later_wins
        self.key_columns = key_columns
        self.shown = shown  # PARTITION BY and ORDER BY as written
        self.updating = True

    def make_operator(self, ctx: BuildContext) -> Operator:
        return TopNOperator(self.partition, self.order, self.limit, self.schema, self.rank_column, self.later_wins,
                            self.ttl_us, self.time_column)

    def describe(self) -> str:
        what = "keep last row" if self.limit == 1 and self.later_wins else f"Top-{self.limit}"
        return f"TopN {what} ORDER BY {self.shown[1]}"

    def details(self) -> list[str]:
        ties = "the last arrived first" if self.later_wins else "the first arrived first"
        rank = f"rank in '{self.rank_column}' (moves are -U/+U)" if self.rank_column else "rank not selected"
        keys = (f"keys forgotten {format_duration_us(self.ttl_us)} after their last row (top_n_state_ttl)" if self.ttl_us
                is not None else "unbounded keys (SET top_n_state_ttl = '1h' bounds them)")
        return [f"keys: {self.shown[0]}; ties: {ties}; {rank}",
                f"state: at most {self.limit} rows per key ({keys})"]

    def state_horizon_us(self) -> int:
        return max(self.ttl_us or 0, super().state_horizon_us())


class Deduplicate(PlanNode):
    """``ROW_NUMBER() OVER (PARTITION BY ... ORDER BY <event time>) = 1``: the first row
    per key, emitted once the watermark passes its time (append-only)."""

    def __init__(self, child: PlanNode, partition: list[str], time_column: str, schema: pa.Schema,
                 rank_column: str | None, ttl_us: int | None, label: str, shown: tuple[str, str]):
        self.children = (child,)
        self.partition = partition
        self.time_column = time_column
        self.schema = schema
        self.rank_column = rank_column
        self.ttl_us = ttl_us
        self.label = label
        self.shown = shown
        self.rowtime = child.rowtime  # kept: the first row per key is emitted at or after the watermark

    def make_operator(self, ctx: BuildContext) -> Operator:
        return FirstRowOperator(self.partition, self.time_column, self.schema, self.ttl_us, self.label, self.rank_column)

    def describe(self) -> str:
        return "Deduplicate keep first row (event time, emitted when the watermark passes it)"

    def details(self) -> list[str]:
        ttl = (f"forgotten {format_duration_us(self.ttl_us)} after their row (dedup_state_ttl)" if self.ttl_us
               else "kept for ever (SET dedup_state_ttl = '1h' bounds them)")
        return [f"keys: {self.shown[0]}; ORDER BY {self.shown[1]}",
                f"state: one candidate per undecided key; emitted keys {ttl}"]

    def state_horizon_us(self) -> int:
        return max(self.ttl_us or 0, super().state_horizon_us())
