"""What a :class:`~sqlstream.session.Session` knows: its sources and TABLEs, views,
sinks and functions, as catalog entries, and the planner's view of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import pyarrow as pa
from sqlglot import exp

from sqlstream.connectors.base import SinkConnector, SourceConnector
from sqlstream.connectors.dead_letters import DEAD_LETTER_SCHEMA, DEAD_LETTER_STREAM
from sqlstream.connectors.one_row import ONE_ROW_SCHEMA, ONE_ROW_SOURCE, OneRowSource
from sqlstream.errors import Location, SqlAnalysisError, did_you_mean
from sqlstream.hidden import OP_COLUMN, is_hidden, visible_schema
from sqlstream.plan.nodes import PlanNode
from sqlstream.plan.planner import RelationInfo
from sqlstream.plan.udf_calls import UdfPlanner
from sqlstream.runtime.dead_letter_source import DeadLetterSource
from sqlstream.sql.statements import (
    ColumnSpec,
    CreateSink,
    CreateSource,
    CreateView,
    QueryStatement,
    SourceText,
    Statement,
    normalize_name,
)

__all__ = [
    "SourceEntry",
    "ViewEntry",
    "SinkEntry",
    "FunctionEntry",
    "PlannerCatalog",
    "sink_schema",
    "schema_of",
    "dependents_of",
    "dead_letter_stream_entry",
    "with_one_row",
]


@dataclass
class SourceEntry:
    name: str
    kind: str  # SOURCE | TABLE
    connector: SourceConnector
    schema: pa.Schema
    rowtime: str | None
    delay_us: int
    statement: CreateSource | None
    base_dir: str

    @property
    def location(self) -> Location | None:
        """Where the source was created (errors while opening it point there)."""
        return None if self.statement is None else self.statement.location


@dataclass
class ViewEntry:
    name: str
    query: exp.Expr
    source: SourceText
    plan: PlanNode
    statement: CreateView


@dataclass
class SinkEntry:
    name: str
    connector: SinkConnector
    statement: Statement | None
    base_dir: str
    columns: list[ColumnSpec] | None = None
    plan: PlanNode | None = None
    implicit: bool = False  # a bare SELECT
    query_text: str = ""


@dataclass
class FunctionEntry:
    name: str
    kind: str  # python | model
    impl: Any
    signature: str
    origin: str = ""


class PlannerCatalog:
    """The planner's view of a catalog (relations and UDF planning)."""

    def __init__(self, sources: Mapping[str, SourceEntry], views: Mapping[str, ViewEntry],
                 functions: Mapping[str, FunctionEntry]):
        self.sources = sources
        self.views = views
        self.functions = functions

    def relation(self, name: str) -> RelationInfo | None:
        if name in self.sources or name == ONE_ROW_SOURCE:
            e = self.sources[name] if name in self.sources else _one_row_entry("")
            hidden = e.connector.hidden_fields()  # e.g. the source message id of JetStream rows
            schema = pa.schema(list(e.schema) + list(hidden)) if hidden else e.schema
            return RelationInfo(e.name, e.kind, schema, e.rowtime, e.delay_us, e.connector.name)
        if name in self.views:
            v = self.views[name]
            return RelationInfo(v.name, "VIEW", v.plan.schema, v.plan.rowtime, 0, "", v.query, v.source)
        return None

    def relation_names(self) -> list[str]:
        return list(self.sources) + list(self.views)

    def udf_planner(self):
        if not self.functions:
            return None
        return UdfPlanner(self.functions)


def sink_schema(entry: SinkEntry) -> pa.Schema:
    """The rows a sink receives: the query's visible columns (``__op`` first for an
    updating result), renamed/cast to the declared columns if any."""
    plan = entry.plan
    visible = [f for f in plan.schema if not is_hidden(f.name) and f.name != OP_COLUMN]
    op = [pa.field(OP_COLUMN, pa.string())] if plan.updating else []
    if entry.columns is None:
        return pa.schema(op + visible)
    if len(entry.columns) != len(visible):
        st = entry.statement
        raise SqlAnalysisError(
            f"sink '{entry.name}' declares {len(entry.columns)} columns but the query produces {len(visible)}",
            location=st.location if st else None,
            hint="columns are matched by position: " + ", ".join(f.name for f in visible),
        )
    return pa.schema(op + [c.field().with_nullable(True) for c in entry.columns])


def schema_of(name: str, sources: Mapping[str, SourceEntry], views: Mapping[str, ViewEntry],
              sinks: Mapping[str, SinkEntry], location: Location | None = None) -> pa.Schema:
    """The columns of source, TABLE, view or sink ``name``."""
    if name in sources:
        return sources[name].schema
    if name in views:
        return visible_schema(views[name].plan.schema)
    if name in sinks and sinks[name].plan is not None:
        return sink_schema(sinks[name])
    if name in sinks and sinks[name].columns:
        return pa.schema([c.field() for c in sinks[name].columns])
    names = list(sources) + list(views) + list(sinks)
    raise SqlAnalysisError(f"unknown name '{name}'", location=location, hint=did_you_mean(name, names))


def dead_letter_stream_entry(base_dir: str) -> SourceEntry:
    """The built-in ``sqlstream_dead_letter`` stream: the running pipeline's dead letters."""
    connector = DeadLetterSource(DEAD_LETTER_STREAM, DEAD_LETTER_SCHEMA, {"connector": "internal"})
    return SourceEntry(DEAD_LETTER_STREAM, "SOURCE", connector, DEAD_LETTER_SCHEMA, "at", 0, None, base_dir)


def _one_row_entry(base_dir: str) -> SourceEntry:
    connector = OneRowSource(ONE_ROW_SOURCE, ONE_ROW_SCHEMA, {"connector": "internal"})
    return SourceEntry(ONE_ROW_SOURCE, "SOURCE", connector, ONE_ROW_SCHEMA, None, 0, None, base_dir)


def with_one_row(sources: Mapping[str, SourceEntry], base_dir: str) -> dict[str, SourceEntry]:
    """``sources`` and the one-row source a query without FROM reads, for a run."""
    return {**sources, ONE_ROW_SOURCE: _one_row_entry(base_dir)}


def dependents_of(name: str, views: Mapping[str, ViewEntry], sinks: Mapping[str, SinkEntry]) -> list[str]:
    """The views and sinks (with a query) that read ``name``."""
    dependents = [v.name for v in views.values() if name in v.plan.sources() or name in _named_relations(v.query)]
    dependents += [s.name for s in sinks.values() if s.plan is not None and name in _sink_relations(s)]
    return dependents


def _named_relations(query: exp.Expr) -> set[str]:
    return {normalize_name(t.this) for t in query.find_all(exp.Table) if isinstance(t.this, exp.Identifier)}


def _sink_relations(entry: SinkEntry) -> set[str]:
    st = entry.statement
    names = set(entry.plan.sources()) if entry.plan is not None else set()
    query = st.query if isinstance(st, (CreateSink, QueryStatement)) else None
    if query is not None:
        names |= _named_relations(query)
    if isinstance(st, CreateSink) and st.from_name:
        names.add(st.from_name)
    return names
