"""Which queries a partitioned source can run partition by partition, without a shuffle.

A source with ``partitions = P`` is run by workers, each partition by itself: its own
operators, state and checkpoint (docs/scale-out.md). That is right exactly when every
piece of state is keyed by something that decides the partition: a window, GROUP BY,
DISTINCT, deduplication or OVER whose key includes the ``partition_by`` column (or a
deterministic expression of it alone), or any stateless query. State keyed otherwise
(another GROUP BY key, a global aggregate, LIMIT, a join of two streams) needs rows of
several partitions together: a shuffle, which this stage refuses instead of running wrong.

:func:`partition_aligned` follows, node by node from the scans up, the set of columns
that are functions of the partition key alone: through projections (the DataFusion
program's SQL, read with sqlglot), aggregates (their group keys) and row-preserving
operators.
"""

from __future__ import annotations

from typing import Mapping

import sqlglot
from sqlglot import exp

from sqlstream.errors import Location, UnsupportedSqlError
from sqlstream.plan.join_nodes import LookupJoin, TableRef
from sqlstream.plan.lowering import DataFusionDialect
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
    WindowChangelogAggregate,
    WindowExpand,
)
from sqlstream.plan.over import OverAggregate
from sqlstream.plan.ranking_nodes import Deduplicate, TopN
from sqlstream.plan.unnest import Unnest

__all__ = ["partition_aligned", "SHUFFLE_HINT"]

SHUFFLE_HINT = ("shuffles (state keyed by anything but the partition key) are not supported yet: key the state by "
                "the partition key, or read an unpartitioned stream")
_ROWS_KEPT = (LateFilter, WindowExpand, Unnest)  # rows pass through with their columns


def partition_aligned(plan: PlanNode, partition_keys: Mapping[str, str], where: Location | None) -> None:
    """Raise UnsupportedSqlError (at ``where``) unless ``plan`` can run partition by
    partition; ``partition_keys`` maps each partitioned source to its key column.
    A plan reading no partitioned source is not checked."""
    partitioned = plan.sources() & set(partition_keys)
    if not partitioned:
        return
    if len(partitioned) > 1:
        raise UnsupportedSqlError(f"a query reads several partitioned sources ({', '.join(sorted(partitioned))})",
                                  location=where, hint="joining partitioned streams needs a shuffle, which is not "
                                  "supported yet")
    _Walk(partition_keys, where).aligned(plan)


class _Walk:
    def __init__(self, partition_keys: Mapping[str, str], where: Location | None):
        self.keys = partition_keys
        self.where = where

    def refuse(self, what: str, hint: str = SHUFFLE_HINT) -> UnsupportedSqlError:
        source = next(iter(self.keys)) if len(self.keys) == 1 else "partitioned source"
        return UnsupportedSqlError(f"cannot run partition by partition over partitioned source '{source}': {what}",
                                   location=self.where, hint=hint)

    def aligned(self, node: PlanNode) -> set[str]:
        """The output columns of ``node`` that depend on the partition key alone."""
        if isinstance(node, Scan):
            if node.source in self.keys:
                return {self.keys[node.source]}
            raise self.refuse(f"the query also reads stream '{node.source}'",
                              "a partitioned pipeline reads one partitioned source (and TABLEs); read the other "
                              "stream in a separate pipeline")
        if isinstance(node, TableRef):
            return set()
        if isinstance(node, Stateless):
            return self._projected(node, self.aligned(node.children[0]))
        if isinstance(node, _ROWS_KEPT):
            return self.aligned(node.children[0]) & set(node.schema.names)
        if isinstance(node, Union):
            sets = [self.aligned(child) for child in node.children]
            return set.intersection(*sets) & set(node.schema.names)
        if isinstance(node, (WindowAggregate, GroupAggregate, ChangelogAggregate, WindowChangelogAggregate)):
            return self._keyed("GROUP BY", node.keys, self.aligned(node.children[0]), node)
        if isinstance(node, (TopN, Deduplicate, OverAggregate)):
            kind = {TopN: "Top-N", Deduplicate: "deduplication", OverAggregate: "OVER aggregate"}[type(node)]
            inner = self.aligned(node.children[0])
            self._keyed(f"{kind} PARTITION BY", node.partition, inner, node)
            return inner & set(node.schema.names)
        if isinstance(node, LookupJoin):
            stream = self.aligned(node.children[0])
            return {node.schema.names[i] for i, (side, column) in enumerate(node.layout.output)
                    if side == node.stream_side and column in stream}
        if isinstance(node, Limit):
            raise self.refuse("LIMIT counts rows across all partitions", "apply the LIMIT to the partitions' output")
        raise self.refuse(f"{node.describe()} holds rows of several keys together",
                          "joins of streams and set operations over a partitioned source need a shuffle, which is "
                          "not supported yet (lookup joins with a TABLE are)")

    def _keyed(self, what: str, keys: list[str], inner: set[str], node: PlanNode) -> set[str]:
        if not keys:
            raise self.refuse("a global aggregate merges all partitions",
                              "merging partial aggregates across partitions needs a shuffle, which is not supported "
                              "yet: add the partition key to GROUP BY")
        if not inner & set(keys):
            key = next(iter(self.keys.values())) if len(self.keys) == 1 else "the partition key"
            raise self.refuse(f"the {what} key does not include the partition key '{key}'")
        return inner & set(keys)

    def _projected(self, node: Stateless, inner: set[str]) -> set[str]:
        names = node.schema.names
        child = node.children[0].schema.names
        if node.projection is not None:
            return {names[i] for i, j in enumerate(node.projection) if child[j] in inner}
        return _select_aligned(sqlglot.parse_one(node.program.sql, read=DataFusionDialect), inner) & set(names)


def _select_aligned(select: exp.Expr, inner: set[str]) -> set[str]:
    """Output names of ``select`` (a program over ``__input`` or a subquery of one) whose
    expressions read only columns in ``inner``."""
    source = select.args.get("from_") or select.args.get("from")
    table = source.this if source is not None else None
    if isinstance(table, exp.Subquery):
        inner = _select_aligned(table.this, inner)
    out = set()
    for projection in getattr(select, "expressions", []):
        columns = list(projection.find_all(exp.Column))
        if columns and all(c.name in inner for c in columns) and not projection.find(exp.Rand, exp.AggFunc, exp.Window):
            out.add(projection.alias_or_name)
    return out
