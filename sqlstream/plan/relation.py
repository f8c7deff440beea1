"""What planning passes around: relations in FROM, select items, pending windows, and
the planner's context as the other planning modules see it.

A :class:`Relation` is a planned FROM item (or query): its plan node, the names a
query may use for its columns (a :class:`~sqlstream.plan.scope.Scope`), and a window
table function not yet materialized (a :class:`PendingWindow`, turned into a window
aggregation by GROUP BY window_start, window_end, or into a ``WindowExpand``
otherwise). All three are immutable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlglot import exp

from sqlstream.errors import Location, UnsupportedSqlError
from sqlstream.plan.nodes import PlanNode, Stateless, WindowSpec
from sqlstream.plan.scope import Scope
from sqlstream.sql.statements import SourceText

__all__ = ["PendingWindow", "PendingRank", "Relation", "SelectItem", "StageColumns", "PlannerContext"]


@dataclass(frozen=True)
class PendingWindow:
    """A window TVF seen in FROM, not yet materialized."""

    spec: WindowSpec
    time_column: str  # internal name of the event-time column in the input
    label: str
    partition: tuple[exp.Expr, ...] = ()  # SESSION(TABLE s PARTITION BY ...): over input columns


@dataclass(frozen=True)
class PendingRank:
    """``ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...)`` over a stream, waiting for
    the enclosing query's ``WHERE rn <= N`` (see :mod:`sqlstream.plan.ranking`). Its
    relation's node computes every other column and the partition and order values."""

    window: exp.Window  # where it was written (errors)
    column: str  # the rank's name
    partition: tuple[str, ...]  # columns of the node
    order: tuple[tuple[str, bool, bool], ...]  # (column, descending, nulls first)
    time_order: str | None  # "asc"/"desc": ORDER BY the event-time column alone
    key_columns: tuple[str, ...] | None  # output columns equal to the partition values, if all are selected
    shown: tuple[str, str] = ("", "")  # PARTITION BY and ORDER BY as written (EXPLAIN)


@dataclass(frozen=True)
class Relation:
    """A planned FROM item: its node, its columns' names, a pending window TVF and a
    pending ROW_NUMBER ranking."""

    node: PlanNode
    scope: Scope
    window: PendingWindow | None = None
    label: str = ""
    rank: PendingRank | None = None


@dataclass(frozen=True)
class SelectItem:
    """One output column of a stage: an expression and the name it is given."""

    expression: exp.Expr
    name: str


@dataclass(frozen=True)
class StageColumns:
    """Event-time and window columns of a stateless stage's output (see
    :class:`~sqlstream.plan.nodes.PlanNode`); by default they are those of its input
    that the stage passes through unchanged."""

    rowtime: str | None = None
    window: tuple[str, str] | None = None
    key_columns: tuple[str, ...] | None = None
    window_end: str | None = None


class PlannerContext(Protocol):
    """What the planning modules (joins, windows, aggregation) use of the query planner."""

    source: SourceText
    settings: dict

    def loc(self, node) -> Location | None: ...

    def unsupported(self, message: str, node, hint: str | None = None) -> UnsupportedSqlError: ...

    def aggregate_function(self, name: str):
        """The registered Python/model aggregate called ``name`` (or None)."""
        ...

    def plan_factor(self, factor: exp.Expr) -> Relation:
        """A FROM item (table, subquery, window TVF) as a relation."""
        ...

    def stateless(
        self, node: PlanNode, items: list[SelectItem], condition: exp.Expr | None, label: str = "",
        keep_hidden: bool = True, columns: StageColumns | None = None,
    ) -> Stateless:
        """One DataFusion SELECT of ``items`` over ``node``'s rows where ``condition`` holds."""
        ...
