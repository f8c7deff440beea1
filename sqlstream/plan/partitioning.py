"""Which queries a partitioned source runs partition by partition, and where a shuffle goes.

A source with ``partitions = P`` is run by workers, each partition by itself: its own
operators, state and checkpoint (docs/scale-out.md). That is right exactly when every
piece of state is keyed by something that decides the partition: a window, GROUP BY,
DISTINCT, deduplication or OVER whose key includes the ``partition_by`` column itself
(passed through renames), or any stateless query.

State keyed otherwise needs rows of several partitions together: :func:`partition_plan`
puts an :class:`Exchange` below the first operator whose key does not decide the
partition (as Flink puts a hash exchange before a keyed operator, and Kafka Streams a
repartition topic), one below each input of a join of the stream with itself. A worker
publishes the rows arriving there to an internal partitioned JetStream stream, hashed
by that operator's key (a global aggregate or a LIMIT: all to partition 0), and the
owner of each of its partitions runs the operator and what follows it
(sqlstream/scaleout/exchange.py). A TUMBLE aggregate of mergeable aggregates runs in
two phases instead: :class:`PartialWindowAggregate` per source partition, the exchange
carrying each closed window's partials, :class:`MergeWindowAggregate` above it. One
process reading every partition (the REPL, ``Session.query``) passes everything
straight through. A query that would need a second exchange is refused instead of run
wrong.

:class:`_Walk` follows, node by node from the scans up, the output columns that are
copies of each routing column (the partition key, or an exchange's key): through
projections (the DataFusion program's SQL, read with sqlglot: only plain column
references and renames keep a column, ``customer_id % 10`` does not: customers 3 and
13 share it but not a partition), aggregates (their group keys) and row-preserving
operators.
"""

from __future__ import annotations

from typing import Mapping

import sqlglot
from sqlglot import exp

from sqlstream.connectors.key_hash import hash_alike
from sqlstream.errors import Location, UnsupportedSqlError
from sqlstream.hidden import SOURCE_ID_COLUMN
from sqlstream.operators.base import Operator
from sqlstream.operators.context import BuildContext
from sqlstream.operators.window_aggregate import (
    MERGEABLE,
    MergeWindowOperator,
    PartialWindowOperator,
    tumble_partial_schema,
)
from sqlstream.plan.join_nodes import IntervalJoin, LookupJoin, RegularJoin, TableRef, WindowJoin
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

__all__ = ["partition_plan", "Exchange", "exchanges_of", "replace_node", "SHUFFLE_HINT"]

SHUFFLE_HINT = ("a query over a partitioned source gets one shuffle (an exchange) at most: key the later state by "
                "the same columns, or split the query into two pipelines")
_ROWS_KEPT = (LateFilter, WindowExpand, Unnest)  # rows pass through with their columns
_AGGREGATES = (WindowAggregate, GroupAggregate, ChangelogAggregate, WindowChangelogAggregate)
_KEYED = {TopN: "Top-N", Deduplicate: "deduplication", OverAggregate: "OVER aggregate"}
_STREAM_JOINS = (WindowJoin, IntervalJoin, RegularJoin)


class Exchange(PlanNode):
    """Rows hashed by ``keys`` (no keys: all to one partition) to the partitions of an
    internal stream, where the operator above this node runs. In one process reading
    every partition the rows stay where they are."""

    def __init__(self, child: PlanNode, keys: tuple[str, ...], source: str):
        self.children = (child,)
        self.keys = keys
        self.source = source
        self.schema = child.schema
        self.updating = child.updating
        self.rowtime = child.rowtime
        #: what crosses: partial aggregates of closed windows (replays recognised by
        #: window end), not rows (by source message id)
        self.partials = isinstance(child, PartialWindowAggregate)

    def build(self, ctx: BuildContext) -> Operator:
        return self.children[0].build(ctx)

    def describe(self) -> str:
        what = "partial aggregates" if self.partials else "rows"
        if not self.keys:
            return f"Exchange to partition 0 of '{self.source}' ({what}: one partition merges them)"
        return f"Exchange hash({', '.join(self.keys)}) across the partitions of '{self.source}' ({what})"


class PartialWindowAggregate(WindowAggregate):
    """A TUMBLE aggregate's first phase, per source partition: each closed window's
    partial aggregates, for an exchange to the partition that finishes them."""

    def __init__(self, node: WindowAggregate, child: PlanNode):
        super().__init__(child, node.spec, node.keys, node.calls,
                         tumble_partial_schema(node.spec, node.keys, node.calls, child.schema))
        self.window = None

    def make_operator(self, ctx: BuildContext) -> Operator:
        return PartialWindowOperator(self.spec, self.keys, self.calls, self.schema)

    def describe(self) -> str:
        return f"WindowAggregate {self.spec.describe()} partials per partition, sent when a window closes"


class MergeWindowAggregate(WindowAggregate):
    """A TUMBLE aggregate's second phase: merges the partitions' partials of each window."""

    def __init__(self, node: WindowAggregate, child: PlanNode):
        super().__init__(child, node.spec, node.keys, node.calls, node.schema)

    def make_operator(self, ctx: BuildContext) -> Operator:
        return MergeWindowOperator(self.spec, self.keys, self.calls, self.schema, None)

    def describe(self) -> str:
        return f"WindowAggregate {self.spec.describe()} EMIT ON WINDOW CLOSE, merging the partitions' partials"


def _two_phase(node: PlanNode) -> bool:
    """A TUMBLE aggregate whose partials merge in any order, emitted once per window."""
    return (type(node) is WindowAggregate and node.spec.kind == "tumble" and node.emit_every_us is None
            and all(c.func in MERGEABLE for c in node.calls))


def exchanges_of(plan: PlanNode) -> list[Exchange]:
    """The exchanges in ``plan`` (one, or one per side of a join: :func:`partition_plan` refuses more)."""
    found = [plan] if isinstance(plan, Exchange) else []
    for child in plan.children:
        found += exchanges_of(child)
    return found


class _Misaligned(Exception):
    """``node`` keeps state of rows of several partitions together; an exchange below
    each of its inputs, hashed by that input's ``keys`` (one tuple per input), would fix
    that (no ``node``: nothing would)."""

    def __init__(self, error: UnsupportedSqlError, node: PlanNode | None = None,
                 keys: tuple[tuple[str, ...], ...] = ()):
        self.error, self.node, self.keys = error, node, keys


def partition_plan(plan: PlanNode, partition_keys: Mapping[str, str], where: Location | None) -> PlanNode:
    """``plan``, with an :class:`Exchange` where its state is keyed by something other
    than the partition key of the partitioned source it reads (``partition_keys``: each
    partitioned source and its key column); raises UnsupportedSqlError at ``where`` for a
    query no single exchange makes right. A plan reading no partitioned source is
    returned as it is."""
    partitioned = plan.sources() & set(partition_keys)
    if not partitioned:
        return plan
    if len(partitioned) > 1:
        raise UnsupportedSqlError(f"a query reads several partitioned sources ({', '.join(sorted(partitioned))})",
                                  location=where, hint="joining partitioned streams needs a shuffle of both, which "
                                  "is not supported yet")
    source = next(iter(partitioned))
    try:
        _Walk(partition_keys, where).aligned(plan)
        return plan
    except _Misaligned as first:
        if first.node is None:
            raise first.error from None
        exchanged = replace_node(plan, first.node, _exchanged(first, source, where))
    try:
        _Walk(partition_keys, where).aligned(exchanged)
    except _Misaligned as second:
        what = second.node.describe() if second.node is not None else "the query"
        raise UnsupportedSqlError(f"cannot run partition by partition over partitioned source '{source}': it needs a "
                                  f"second shuffle ({what} is keyed by other columns than the exchange below it)",
                                  location=where, hint=SHUFFLE_HINT) from None
    return exchanged


def _exchanged(first: _Misaligned, source: str, where: Location | None) -> PlanNode:
    """``first.node`` with an exchange below each of its inputs; a TUMBLE aggregate
    instead becomes partials per partition, an exchange, and their merge."""
    node = first.node
    two_phase = _two_phase(node)  # (partials are recognised by window end, rows by their source message id)
    for below, keys in zip(node.children, first.keys):
        missing = [k for k in (*keys, *(() if two_phase else (SOURCE_ID_COLUMN,))) if k not in below.schema.names]
        if missing or not _stateless(below):
            raise UnsupportedSqlError(first.error.message, location=where, hint=(
                "a shuffle takes rows as they are read (it drops what a replay publishes again by their source "
                "message ids), not results of an aggregate, a join or a ranking: key this state by the "
                "partition key"))
    if two_phase:
        return MergeWindowAggregate(node, Exchange(PartialWindowAggregate(node, node.children[0]), first.keys[0], source))
    return _with_children(node, tuple(Exchange(below, keys, source) for below, keys in zip(node.children, first.keys)))


def replace_node(node: PlanNode, target: PlanNode, replacement: PlanNode) -> PlanNode:
    """``node`` with ``target`` replaced: a copy of the path down to it (the nodes off
    the path are shared)."""
    if node is target:
        return replacement
    return _with_children(node, tuple(replace_node(c, target, replacement) if _contains(c, target) else c
                                      for c in node.children))


def _with_children(node: PlanNode, children: tuple[PlanNode, ...]) -> PlanNode:
    copy = object.__new__(type(node))
    copy.__dict__.update(node.__dict__, children=children)
    return copy


def _stateless(node: PlanNode) -> bool:
    """True when ``node`` passes rows on as they come, in the order they were read."""
    return isinstance(node, (Scan, TableRef, Stateless, LookupJoin, *_ROWS_KEPT)) and all(
        _stateless(c) for c in node.children)


def _contains(node: PlanNode, target: PlanNode) -> bool:
    return node is target or any(_contains(c, target) for c in node.children)


#: per routing column, the output columns that are copies of it; None: every row is in
#: one partition (below an exchange without keys), so any state is aligned
_Aligned = dict[str, set[str]] | None


class _Walk:
    def __init__(self, partition_keys: Mapping[str, str], where: Location | None):
        self.keys = partition_keys
        self.where = where

    def refuse(self, what: str, hint: str, node: PlanNode | None = None,
               keys: tuple[tuple[str, ...], ...] = ()) -> _Misaligned:
        source = next(iter(self.keys)) if len(self.keys) == 1 else "partitioned source"
        error = UnsupportedSqlError(f"cannot run partition by partition over partitioned source '{source}': {what}",
                                    location=self.where, hint=hint)
        return _Misaligned(error, node, keys)

    def aligned(self, node: PlanNode) -> _Aligned:
        """Per routing column, the output columns of ``node`` that are copies of it."""
        if isinstance(node, Exchange):  # (routing columns by position: both inputs of a join hash alike)
            self.aligned(node.children[0])
            return {f"#{i}": {k} for i, k in enumerate(node.keys)} if node.keys else None
        if isinstance(node, Scan):
            if node.source in self.keys:
                key = self.keys[node.source]
                return {key: {key}}
            raise self.refuse(f"the query also reads stream '{node.source}'",
                              "a partitioned pipeline reads one partitioned source (and TABLEs); read the other "
                              "stream in a separate pipeline")
        if isinstance(node, TableRef):
            return {}
        if isinstance(node, Stateless):
            return self._projected(node, self.aligned(node.children[0]))
        if isinstance(node, _ROWS_KEPT):
            return _keep(self.aligned(node.children[0]), set(node.schema.names))
        if isinstance(node, Union):
            sets = [self.aligned(child) for child in node.children]
            if any(s is None for s in sets):
                return None
            return {k: set.intersection(*(s[k] for s in sets)) & set(node.schema.names) for k in sets[0]}
        if isinstance(node, PartialWindowAggregate):  # (per partition by design: an exchange follows)
            return _keep(self.aligned(node.children[0]), set(node.schema.names))
        if isinstance(node, _AGGREGATES):
            return self._keyed("GROUP BY", node.keys, self.aligned(node.children[0]), node)
        if isinstance(node, tuple(_KEYED)):
            inner = self.aligned(node.children[0])
            self._keyed(f"{_KEYED[type(node)]} PARTITION BY", node.partition, inner, node)
            return _keep(inner, set(node.schema.names))
        if isinstance(node, LookupJoin):
            stream = self.aligned(node.children[0])
            if stream is None:
                return None
            return {k: {node.schema.names[i] for i, (side, column) in enumerate(node.layout.output)
                        if side == node.stream_side and column in copies} for k, copies in stream.items()}
        if isinstance(node, Limit):
            inner = self.aligned(node.children[0])
            if inner is None:
                return None
            raise self.refuse("LIMIT counts rows across all partitions", "apply the LIMIT to the partitions' output",
                              node, ((),))
        if isinstance(node, _STREAM_JOINS):
            return self._joined(node, [self.aligned(child) for child in node.children])
        raise self.refuse(f"{node.describe()} holds rows of several keys together",
                          "set operations over a partitioned source need a shuffle of both inputs, which is not "
                          "supported yet")

    def _joined(self, node: PlanNode, sides: list[_Aligned]) -> _Aligned:
        """A join of two streams (both read from the partitioned source): partition by
        partition when each routing column is the same equality key on both sides, else
        through an exchange below each side, hashed by its equality keys."""
        left, right = node.layout.left, node.layout.right
        pairs = list(zip(left.keys, right.keys))
        if sides[0] is None and sides[1] is None:
            return None
        if sides[0] is not None and sides[1] is not None and sides[0].keys() == sides[1].keys() and all(
                any(a in sides[0][r] and b in sides[1][r] for a, b in pairs) for r in sides[0]):
            names = node.schema.names
            kept = [not node.layout.outer(1 - s) for s in (0, 1)]  # (a padded side's keys may be NULL)
            return {r: {names[i] for i, (s, column) in enumerate(node.layout.output)
                        if kept[s] and column in sides[s][r]} for r in sides[0]}
        if not pairs:
            raise self.refuse(f"{node.describe()} has no equality condition to shuffle both inputs by",
                              "join the streams on an equality of columns (a = b), or on the partition key")
        if not all(hash_alike(node.children[0].schema.field(a).type, node.children[1].schema.field(b).type)
                   for a, b in pairs):
            raise self.refuse(f"{node.describe()} compares keys of different types",
                              "cast both sides of each equality to one type")
        raise self.refuse(f"{node.describe()} is not keyed by the partition key", SHUFFLE_HINT, node,
                          (tuple(left.keys), tuple(right.keys)))

    def _keyed(self, what: str, keys: list[str], inner: _Aligned, node: PlanNode) -> _Aligned:
        if inner is None:
            return None
        if not keys:
            raise self.refuse("a global aggregate merges all partitions", SHUFFLE_HINT, node, ((),))
        if not all(copies & set(keys) for copies in inner.values()):
            key = ", ".join(f"'{k}'" for k in inner)
            raise self.refuse(f"the {what} key does not include the partition key {key}", SHUFFLE_HINT, node,
                              (tuple(keys),))
        return {k: copies & set(keys) for k, copies in inner.items()}

    def _projected(self, node: Stateless, inner: _Aligned) -> _Aligned:
        if inner is None:
            return None
        names = node.schema.names
        child = node.children[0].schema.names
        if node.projection is not None:
            return {k: {names[i] for i, j in enumerate(node.projection) if child[j] in copies}
                    for k, copies in inner.items()}
        select = sqlglot.parse_one(node.program.sql, read=DataFusionDialect)
        return {k: _select_aligned(select, copies) & set(names) for k, copies in inner.items()}


def _keep(aligned: _Aligned, names: set[str]) -> _Aligned:
    return None if aligned is None else {k: copies & names for k, copies in aligned.items()}


def _select_aligned(select: exp.Expr, inner: set[str]) -> set[str]:
    """Output names of ``select`` (a program over ``__input`` or a subquery of one) that
    are plain copies of a column in ``inner`` (the column itself, or renamed)."""
    source = select.args.get("from_") or select.args.get("from")
    table = source.this if source is not None else None
    if isinstance(table, exp.Subquery):
        inner = _select_aligned(table.this, inner)
    out = set()
    for projection in getattr(select, "expressions", []):
        value = projection.this if isinstance(projection, exp.Alias) else projection
        if isinstance(value, exp.Column) and value.name in inner:
            out.add(projection.alias_or_name)
    return out
