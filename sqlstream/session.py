"""``Session``: the catalog of sources, tables, views, sinks and functions, and the
entry point that executes SQL and runs pipelines.

>>> from sqlstream import Session
>>> s = Session()
>>> s.execute('''
...   CREATE SOURCE nums (n BIGINT) WITH (connector = 'generator', max_rows = 5,
...                                       rows_per_second = 0, fields.n.kind = 'sequence');
... ''')  # doctest: +ELLIPSIS
[...]
>>> [b.to_pydict() for b in s.query("SELECT n * 2 AS d FROM nums WHERE n > 2")]
[{'d': [6, 8]}]
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator

import pyarrow as pa
from sqlglot import exp

from sqlstream.connectors.base import (
    RunContext,
    SinkConnector,
    SourceConnector,
    sink_connector,
    source_connector,
)
from sqlstream.connectors.dead_letters import DEAD_LETTER_SCHEMA, DEAD_LETTER_STREAM, DeadLetterOutput
from sqlstream.connectors.options import RawOption
from sqlstream.errors import (
    ExecutionError,
    SqlAnalysisError,
    SqlStreamError,
    UdfError,
    UnsupportedSqlError,
    did_you_mean,
)
from sqlstream.hidden import OP_COLUMN, is_hidden, is_real_watermark, visible_schema
from sqlstream.operators.base import Operator
from sqlstream.operators.context import BuildContext
from sqlstream.paths import resolve_path
from sqlstream.plan.nodes import PlanNode
from sqlstream.plan.planner import QueryPlanner, RelationInfo
from sqlstream.runtime.clock import WallClock
from sqlstream.runtime.driver import Driver, RunSummary
from sqlstream.runtime.sink import END_OF_STREAM, QueueWriter, SinkOperator
from sqlstream.runtime.source_stage import SourceSpec, SourceStage
from sqlstream.runtime.state_tracker import StateLimits
from sqlstream.settings import DEFAULT_SETTINGS, SETTING_DOCS, parse_setting
from sqlstream.sql.dialect import SqlStream
from sqlstream.sql.statements import (
    ColumnSpec,
    CreateFunction,
    CreateSink,
    CreateSource,
    CreateView,
    DescribeStatement,
    DropStatement,
    ExplainStatement,
    InsertInto,
    QueryStatement,
    SetStatement,
    ShowStatement,
    SourceText,
    Statement,
    StopQueryStatement,
    parse_script,
)
from sqlstream.sql.types import sql_type_name

__all__ = ["Session", "StatementResult", "SourceEntry", "ViewEntry", "SinkEntry", "FunctionEntry"]


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


@dataclass
class StatementResult:
    """What one statement did: ``kind`` and, for SHOW/DESCRIBE/EXPLAIN, rows or text."""

    kind: str
    name: str | None = None
    table: pa.Table | None = None
    text: str | None = None
    statement: Statement | None = None


class _Catalog:
    """The planner's view of the session (relations and UDF planning)."""

    def __init__(self, session: "Session"):
        self.session = session

    def relation(self, name: str) -> RelationInfo | None:
        s = self.session
        if name in s.sources:
            e = s.sources[name]
            hidden = e.connector.hidden_fields()  # e.g. the source message id of JetStream rows
            schema = pa.schema(list(e.schema) + list(hidden)) if hidden else e.schema
            return RelationInfo(e.name, e.kind, schema, e.rowtime, e.delay_us, e.connector.name)
        if name in s.views:
            v = s.views[name]
            return RelationInfo(v.name, "VIEW", v.plan.schema, v.plan.rowtime, 0, "", v.query, v.source)
        return None

    def relation_names(self) -> list[str]:
        return list(self.session.sources) + list(self.session.views)

    def udf_planner(self):
        functions = self.session.functions
        if not functions:
            return None
        from sqlstream.udf.planning import UdfPlanner

        return UdfPlanner(functions)


class Session:
    """A catalog plus the means to run it. No global state: make as many as you like."""

    def __init__(
        self,
        *,
        clock=None,
        base_dir: str | None = None,
        dead_letter_path: str | None = None,
        udf_dirs: list[str] | tuple[str, ...] = (),
        settings: dict[str, Any] | None = None,
    ):
        self.clock = clock or WallClock()
        self.base_dir = os.path.abspath(base_dir or os.getcwd())
        self.sources: dict[str, SourceEntry] = {}
        self.views: dict[str, ViewEntry] = {}
        self.sinks: dict[str, SinkEntry] = {}
        self.functions: dict[str, FunctionEntry] = {}
        self.settings: dict[str, Any] = dict(DEFAULT_SETTINGS)
        for key, value in (settings or {}).items():
            self.apply_setting(key, value)
        if dead_letter_path is not None:
            self.settings["dead_letter_path"] = dead_letter_path
        self.stdout_renderer: Callable | None = None
        self._query_counter = 0
        self._driver: Driver | None = None
        self._lock = threading.Lock()
        self.last_summary: RunSummary | None = None
        self.dead_letters: DeadLetterOutput | None = None
        self._register_dead_letter_stream()
        for directory in udf_dirs:
            self.load_udfs(directory)

    # -- functions ------------------------------------------------------------------------

    def load_udfs(self, directory: str, on_file: Callable[[str, list[str]], None] | None = None) -> list[str]:
        """Import every ``*.py`` under ``directory`` (code that runs) and register its @udf
        functions; ``on_file(path, names)`` is told of each file once it is loaded."""
        from sqlstream.udf.discovery import discover_files, origin_location

        names = []
        for udf_file in discover_files(directory):
            file_names = []
            for fn, origin in udf_file.functions:
                try:
                    self.register_udf(fn, origin=origin)
                except SqlStreamError as error:
                    raise error.with_location(origin_location(origin))
                file_names.append(fn.__sqlstream_udf__.name)
            if on_file is not None:
                on_file(udf_file.path, file_names)
            names += file_names
        return names

    def register_udf(self, fn, *, origin: str = "") -> None:
        """Register a function decorated with :func:`sqlstream.udf` (or a plain
        function with type hints)."""
        from sqlstream.udf.names import check_function_name
        from sqlstream.udf.python import PythonUdf

        udf = PythonUdf.from_function(fn)
        check_function_name(udf.name)
        existing = self.functions.get(udf.name)
        if existing is not None and existing.impl is not udf and getattr(existing.impl, "fn", None) is not fn:
            from sqlstream.errors import UdfError

            raise UdfError(
                f"function '{udf.name}' is defined twice: {existing.origin or 'earlier'} and {origin or 'here'}",
                hint="rename one of them (@udf(name='...'))",
            )
        self.functions[udf.name] = FunctionEntry(udf.name, "python", udf, udf.signature(), origin or udf.origin)

    def register_model(self, name: str, path: str, **options) -> None:
        """Register an ONNX model as a vectorized scalar SQL function ``name``."""
        from sqlstream.errors import UdfError
        from sqlstream.udf.model import ModelUdf, remote_url
        from sqlstream.udf.names import check_function_name

        name = name.lower()
        check_function_name(name)
        if name in self.functions:
            raise UdfError(f"function '{name}' already exists", hint=f"DROP FUNCTION {name} first, or pick another name")
        local = path if remote_url(path) else self.resolve_path(path, self.base_dir, what=f"model '{name}': path")
        model = ModelUdf.load(name, local, options)  # a URL is refused there
        self.functions[model.name] = FunctionEntry(model.name, "model", model, model.signature(), path)

    # -- executing SQL ----------------------------------------------------------------------

    def execute(self, sql: str, *, path: str = "<sql>", base_dir: str | None = None) -> list[StatementResult]:
        """Run the statements of ``sql``. CREATE SINK / INSERT INTO / bare SELECT add a
        query to run with :meth:`run`; DDL changes the catalog at once."""
        source = SourceText(sql, path, base_dir or self.base_dir)
        results = []
        for statement in parse_script(source, lambda: self.functions.keys()):
            results.append(self.execute_statement(statement))
        return results

    def execute_statement(self, st: Statement) -> StatementResult:
        handler = {
            CreateSource: self._create_source,
            CreateView: self._create_view,
            CreateSink: self._create_sink,
            InsertInto: self._insert_into,
            QueryStatement: self._bare_query,
            SetStatement: self._set,
            CreateFunction: self._create_function,
            ShowStatement: self._show,
            DescribeStatement: self._describe,
            ExplainStatement: self._explain,
            DropStatement: self._drop,
        }.get(type(st))
        if handler is None:
            if isinstance(st, StopQueryStatement):
                raise UnsupportedSqlError("STOP QUERY is available in the REPL", location=st.location)
            raise UnsupportedSqlError(f"cannot execute {type(st).__name__}", location=st.location)
        return handler(st)

    def _base_dir(self, st: Statement) -> str:
        return st.source.base_dir or self.base_dir

    def _check_new_name(self, name: str, st: Statement, replace: bool, if_not_exists: bool, kind: str) -> bool:
        """False if the statement should do nothing (IF NOT EXISTS); raises on clashes."""
        taken = name in self.sources or name in self.views or name in self.sinks or name == DEAD_LETTER_STREAM
        if not taken:
            return True
        if if_not_exists:
            return False
        if replace and name not in (DEAD_LETTER_STREAM,):
            self._forget(name)
            return True
        raise SqlAnalysisError(
            f"'{name}' already exists",
            location=st.location,
            hint=f"use CREATE {kind} IF NOT EXISTS, CREATE OR REPLACE {kind}, or DROP {kind} {name} first",
        )

    def _forget(self, name: str) -> None:
        for registry in (self.sources, self.views, self.sinks):
            registry.pop(name, None)

    def _create_source(self, st: CreateSource) -> StatementResult:
        if not self._check_new_name(st.name, st, st.replace, st.if_not_exists, st.kind):
            return StatementResult("noop", st.name, statement=st)
        raw = {k: RawOption(v.value, v.location) for k, v in st.options.items()}
        cls = source_connector(raw["connector"].value if "connector" in raw else None, _connector_location(raw, st))
        schema = st.schema()
        connector = cls.create(st.name, schema, raw, st.location)
        self._check_paths(connector, raw, st, f"source '{st.name}'")
        if st.kind == "TABLE":
            connector.check_table(st.location)
        rowtime = st.watermark.column if st.watermark else None
        delay = st.watermark.delay_us if st.watermark else 0
        self.sources[st.name] = SourceEntry(st.name, st.kind, connector, schema, rowtime, delay, st, self._base_dir(st))
        return StatementResult(f"create {st.kind.lower()}", st.name, statement=st)

    def _create_view(self, st: CreateView) -> StatementResult:
        if not self._check_new_name(st.name, st, st.replace, st.if_not_exists, "VIEW"):
            return StatementResult("noop", st.name, statement=st)
        plan = self._plan(st.query, st.source)
        self.views[st.name] = ViewEntry(st.name, st.query, st.source, plan, st)
        return StatementResult("create view", st.name, statement=st)

    def _plan(self, query: exp.Expr, source: SourceText) -> PlanNode:
        return QueryPlanner(_Catalog(self), source, self.settings).plan(query)

    def _create_sink(self, st: CreateSink) -> StatementResult:
        if not self._check_new_name(st.name, st, st.replace, st.if_not_exists, "SINK"):
            return StatementResult("noop", st.name, statement=st)
        raw = {k: RawOption(v.value, v.location) for k, v in st.options.items()}
        cls = sink_connector(raw["connector"].value if "connector" in raw else None, _connector_location(raw, st))
        connector = cls.create(st.name, raw, st.location)
        self._check_paths(connector, raw, st, f"sink '{st.name}'")
        entry = SinkEntry(st.name, connector, st, self._base_dir(st), columns=st.columns)
        if st.query is not None:
            entry.plan = self._plan(st.query, st.source)
            entry.query_text = st.query.sql(dialect=SqlStream)
        elif st.from_name is not None:
            query = exp.select("*").from_(exp.Table(this=exp.Identifier(this=st.from_name, quoted=True)))
            if st.from_name not in self.sources and st.from_name not in self.views:
                names = list(self.sources) + list(self.views)
                raise SqlAnalysisError(
                    f"unknown source or view '{st.from_name}'", location=st.location, hint=did_you_mean(st.from_name, names)
                )
            entry.plan = self._plan(query, st.source)
            entry.query_text = f"SELECT * FROM {st.from_name}"
        if entry.plan is not None:
            self._sink_schema(entry)
            connector.check_inputs(self._acknowledging_sources(entry.plan), st.location)
        self.sinks[st.name] = entry
        return StatementResult("create sink", st.name, statement=st)

    def _insert_into(self, st: InsertInto) -> StatementResult:
        entry = self.sinks.get(st.sink)
        if entry is None:
            raise SqlAnalysisError(
                f"unknown sink '{st.sink}'", location=st.location, hint=did_you_mean(st.sink, self.sinks) or "CREATE SINK it first"
            )
        if entry.plan is not None:
            raise SqlAnalysisError(
                f"sink '{st.sink}' already has a query (one running query per sink)", location=st.location
            )
        plan = self._plan(st.query, st.source)
        entry.connector.check_inputs(self._acknowledging_sources(plan), st.location)
        entry.plan = plan
        entry.query_text = st.query.sql(dialect=SqlStream)
        self._sink_schema(entry)
        return StatementResult("insert", st.sink, statement=st)

    def _bare_query(self, st: QueryStatement) -> StatementResult:
        plan = self._plan(st.query, st.source)
        self._query_counter += 1
        name = f"query_{self._query_counter}"
        connector = sink_connector("stdout").create(name, {"connector": RawOption("stdout")}, st.location)
        entry = SinkEntry(name, connector, st, self._base_dir(st), plan=plan, implicit=True, query_text=st.text)
        self._sink_schema(entry)
        self.sinks[name] = entry
        return StatementResult("query", name, statement=st)

    def _sink_schema(self, entry: SinkEntry) -> pa.Schema:
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

    def _set(self, st: SetStatement) -> StatementResult:
        self.apply_setting(st.key, st.value.value, base_dir=self._base_dir(st), location=st.value.location)
        return StatementResult("set", st.key, statement=st)

    def apply_setting(self, key: str, value: Any, *, base_dir: str | None = None, location=None) -> None:
        """``SET key = value``: relative directories resolve against ``base_dir`` (default:
        the session's); ``allowed_paths`` can only narrow once set, and a dead-letter file
        must be inside it."""
        key = key.lower()
        parsed = parse_setting(key, value, location, base_dir=base_dir or self.base_dir)
        current = self.settings.get("allowed_paths")
        if key == "allowed_paths" and current is not None:
            try:
                parsed = current.narrowed_to(parsed)
            except ValueError as error:
                raise SqlAnalysisError(
                    f"SET allowed_paths cannot widen the allowed paths: {error}",
                    location=location,
                    hint="the widest allowed paths are decided on the command line (--allow-paths)",
                ) from None
        if key == "dead_letter_path" and parsed not in ("", "off", "none"):
            self.resolve_path(parsed, self.base_dir, what="dead_letter_path", location=location)
        self.settings[key] = parsed

    def resolve_path(
        self, path: str, base_dir: str, *, what: str, location=None, pattern: bool = False, hint: str | None = None
    ) -> str:
        """``path`` made absolute against ``base_dir`` and checked against ``allowed_paths``:
        every file a pipeline reads or writes (sources, sinks, dead letters, models,
        checkpoints) goes through here or, at run time, :func:`sqlstream.paths.resolve_path`."""
        allowed = self.settings["allowed_paths"]
        return resolve_path(path, base_dir, allowed, what=what, location=location, pattern=pattern, hint=hint)

    def _check_paths(self, connector, raw: dict[str, RawOption], st: Statement, what: str) -> None:
        """The options a connector declares as paths stay inside ``allowed_paths`` (at CREATE,
        so ``check`` finds them; the connector checks again, file by file, when it opens)."""
        for option in connector.path_options:
            value = connector.config.get(option)
            if value is not None:
                where = raw[option].location if option in raw else None
                self.resolve_path(str(value), self._base_dir(st), what=f"{what}: {option}",
                                  location=where or st.location, pattern=True)

    def _create_function(self, st: CreateFunction) -> StatementResult:
        from sqlstream.udf.model import ModelUdf, remote_url

        if st.name in self.functions and not st.replace:
            raise SqlAnalysisError(
                f"function '{st.name}' already exists", location=st.location, hint="use CREATE OR REPLACE FUNCTION"
            )
        path = st.model_path  # a URL is refused by ModelUdf.load
        if not remote_url(path):
            path = self.resolve_path(path, self._base_dir(st), what=f"model '{st.name}': path", location=st.location)
        options = {k: v.value for k, v in st.options.items()}
        try:
            from sqlstream.udf.names import check_function_name

            check_function_name(st.name)
            model = ModelUdf.load(st.name, path, options)
        except SqlStreamError as error:
            option = st.options.get(error.option or "") if isinstance(error, UdfError) else None
            raise error.with_location(option.location if option is not None else st.location)
        self.functions[st.name] = FunctionEntry(st.name, "model", model, model.signature(), st.model_path)
        return StatementResult("create function", st.name, statement=st)

    def _drop(self, st: DropStatement) -> StatementResult:
        registry = {
            "SOURCE": self.sources, "TABLE": self.sources, "VIEW": self.views, "SINK": self.sinks, "FUNCTION": self.functions,
        }[st.kind]
        if st.name not in registry or (st.kind in ("SOURCE", "TABLE") and self.sources[st.name].kind != st.kind):
            if st.if_exists:
                return StatementResult("noop", st.name, statement=st)
            raise SqlAnalysisError(
                f"unknown {st.kind.lower()} '{st.name}'", location=st.location, hint=did_you_mean(st.name, registry)
            )
        if st.name == DEAD_LETTER_STREAM:
            raise SqlAnalysisError(f"{DEAD_LETTER_STREAM} is built in and cannot be dropped", location=st.location)
        dependents = [v.name for v in self.views.values() if st.name in v.plan.sources() or st.name in _named_relations(v.query)]
        dependents += [s.name for s in self.sinks.values() if s.plan is not None and st.name in _sink_relations(s)]
        if dependents and st.kind != "FUNCTION":
            raise SqlAnalysisError(
                f"cannot drop {st.kind.lower()} '{st.name}': {', '.join(dependents)} depend(s) on it",
                location=st.location,
                hint="drop those first",
            )
        del registry[st.name]
        return StatementResult(f"drop {st.kind.lower()}", st.name, statement=st)

    # -- SHOW / DESCRIBE / EXPLAIN ------------------------------------------------------------

    def _show(self, st: ShowStatement) -> StatementResult:
        what = st.what
        if what == "SOURCES":
            rows = [
                {"name": e.name, "connector": e.connector.describe(), "watermark": _watermark_text(e)}
                for e in self.sources.values() if e.kind == "SOURCE"
            ]
        elif what == "TABLES":
            rows = [
                {"name": e.name, "connector": e.connector.describe(),
                 "columns": ", ".join(f"{f.name} {sql_type_name(f.type)}" for f in e.schema)}
                for e in self.sources.values() if e.kind == "TABLE"
            ]
        elif what == "VIEWS":
            rows = [{"name": v.name, "query": v.statement.text} for v in self.views.values()]
        elif what == "SINKS":
            rows = [
                {"name": s.name, "connector": s.connector.describe(), "query": s.query_text}
                for s in self.sinks.values()
            ]
        elif what == "FUNCTIONS":
            rows = [
                {"name": f.name, "kind": f.kind, "signature": f.signature, "origin": f.origin}
                for f in sorted(self.functions.values(), key=lambda f: f.name)
            ]
        elif what == "WATERMARKS":
            rows = self.watermark_rows()
        elif what == "METRICS":
            rows = self.metric_rows()
        elif what in ("SETTINGS", "ALL"):
            rows = [{"key": k, "value": str(v), "about": SETTING_DOCS[k]} for k, v in self.settings.items()]
        else:
            raise SqlAnalysisError(
                f"cannot SHOW {what}",
                location=st.location,
                hint="SHOW SOURCES | SINKS | VIEWS | TABLES | FUNCTIONS | WATERMARKS | METRICS | SETTINGS",
            )
        return StatementResult("show", what.lower(), table=_rows_table(rows), statement=st)

    def watermark_rows(self, driver: Driver | None = None) -> list[dict]:
        """SHOW WATERMARKS: each event-time source of ``driver`` (default: the last run)."""
        from datetime import datetime, timezone

        rows = []
        only_driver = driver is not None
        driver = driver or self._driver
        dead_letters = driver.dead_letters if only_driver else self.dead_letters
        stages = {s.name: s for s in (driver.sources if driver else [])}
        now = self.clock.now_us()
        for entry in self.sources.values():
            if entry.rowtime is None or (only_driver and entry.name not in stages):
                continue
            if entry.name == DEAD_LETTER_STREAM and entry.name not in stages:
                continue  # the dead-letter stream, listed only while a query reads it
            stage = stages.get(entry.name)
            wm = stage.watermark if stage else None
            tracker = stage.tracker if stage else None
            valid = is_real_watermark(wm)
            rows.append(
                {
                    "source": entry.name,
                    "watermark": datetime.fromtimestamp(wm / 1e6, tz=timezone.utc).replace(tzinfo=None).isoformat() if valid else None,
                    "lag_s": round((now - wm) / 1e6, 3) if valid else None,
                    "idle": bool(tracker.idle) if tracker else False,
                    "late": dead_letters.total(entry.name, "late") if dead_letters else 0,
                    "future": dead_letters.total(entry.name, "future") if dead_letters else 0,
                }
            )
        return rows

    def metric_rows(self, driver: Driver | None = None) -> list[dict]:
        """SHOW METRICS: rows in/out, dead letters and state of ``driver`` (default: the last run).

        State: ``rows`` and ``bytes`` (estimated) of the whole pipeline, then
        ``<operator> rows`` / ``<operator> bytes`` of each stateful operator."""
        driver = driver or self._driver
        rows = []
        if driver is None:
            return rows
        dead_letters = driver.dead_letters
        for stage in driver.sources:
            rows.append({"kind": "source", "name": stage.name, "rows": stage.metrics.rows_in,
                         "dead_letters": dead_letters.total(stage.name) if dead_letters else 0})
        for sink in driver.sinks:
            rows.append({"kind": "sink", "name": sink.sink_name, "rows": sink.rows_out, "dead_letters": 0})
        if dead_letters:
            for reason, n in sorted(dead_letters.by_reason().items()):
                rows.append({"kind": "dead_letter", "name": reason, "rows": n, "dead_letters": n})
        sizes = driver.state.sizes()
        rows.append({"kind": "state", "name": "rows", "rows": sum(s.rows for _, s in sizes), "dead_letters": 0})
        rows.append({"kind": "state", "name": "bytes", "rows": sum(s.bytes for _, s in sizes), "dead_letters": 0})
        for holder, size in sizes:
            rows.append({"kind": "state", "name": f"{holder.label} rows", "rows": size.rows, "dead_letters": 0})
            rows.append({"kind": "state", "name": f"{holder.label} bytes", "rows": size.bytes, "dead_letters": 0})
        return rows

    def _describe(self, st: DescribeStatement) -> StatementResult:
        schema = self.schema_of(st.name, st)
        rows = [{"column": f.name, "type": sql_type_name(f.type), "nullable": f.nullable} for f in schema]
        return StatementResult("describe", st.name, table=_rows_table(rows), statement=st)

    def schema_of(self, name: str, st: Statement | None = None) -> pa.Schema:
        if name in self.sources:
            return self.sources[name].schema
        if name in self.views:
            plan = self.views[name].plan
            return visible_schema(plan.schema)
        if name in self.sinks and self.sinks[name].plan is not None:
            return self._sink_schema(self.sinks[name])
        if name in self.sinks and self.sinks[name].columns:
            return pa.schema([c.field() for c in self.sinks[name].columns])
        names = list(self.sources) + list(self.views) + list(self.sinks)
        raise SqlAnalysisError(f"unknown name '{name}'", location=st.location if st else None, hint=did_you_mean(name, names))

    def plan_query(self, st: QueryStatement) -> PlanNode:
        """The streaming plan of one SELECT, without registering it as a sink."""
        return self._plan(st.query, st.source)

    def _explain(self, st: ExplainStatement) -> StatementResult:
        inner = st.statement
        if isinstance(inner, QueryStatement):
            plan, title = self._plan(inner.query, inner.source), "query"
        elif isinstance(inner, CreateSink) and inner.query is not None:
            plan, title = self._plan(inner.query, inner.source), f"sink {inner.name}"
        elif isinstance(inner, InsertInto):
            plan, title = self._plan(inner.query, inner.source), f"sink {inner.sink}"
        elif isinstance(inner, CreateView):
            plan, title = self._plan(inner.query, inner.source), f"view {inner.name}"
        else:
            raise UnsupportedSqlError("EXPLAIN takes a query, CREATE SINK ... AS, INSERT INTO or CREATE VIEW", location=st.location)
        return StatementResult("explain", title, text=explain_plan(title, plan), statement=st)

    def explain(self, sql: str) -> str:
        """The streaming plan of every query registered so far plus those in ``sql``."""
        parts = []
        for result in self.execute(sql) if sql.strip() else []:
            if result.text:
                parts.append(result.text)
        return "\n\n".join(parts)

    # -- running -----------------------------------------------------------------------------

    def _run_context(self, base_dir: str) -> RunContext:
        return RunContext(
            clock=self.clock,
            batch_size=self.settings["batch_size"],
            batch_timeout_us=self.settings["batch_timeout"],
            file_batch_size=self.settings["file_batch_size"],
            base_dir=base_dir,
            on_error=self.settings["on_error"],
            allowed_paths=self.settings["allowed_paths"],
            stdout_renderer=self.stdout_renderer,
        )

    def _acknowledging_sources(self, plan: PlanNode) -> tuple[str, ...]:
        """The sources ``plan`` reads that acknowledge their input (declared by the connector)."""
        return tuple(sorted(n for n in plan.sources() if n in self.sources and self.sources[n].connector.acknowledges))

    def _dead_letter_path(self) -> str | None:
        path = self.settings.get("dead_letter_path")
        if path is None:
            path = os.path.join(os.getcwd(), "sqlstream.dead_letter.jsonl")
        if path in ("", "off", "none"):
            return None
        return self.resolve_path(
            path, self.base_dir, what="dead-letter file", hint="SET dead_letter_path to a file inside them, or to 'off'"
        )

    def build(self, sinks: list[SinkEntry], extra_sinks: list[tuple[str, PlanNode, Callable]] = ()) -> Driver:
        """Operators for ``sinks`` sharing one read per source, ready to run."""
        if not sinks and not extra_sinks:
            raise ExecutionError("nothing to run", hint="add CREATE SINK ... AS SELECT, INSERT INTO, or a SELECT")
        self.dead_letters = DeadLetterOutput(self._dead_letter_path(), self.clock)
        stages: dict[str, SourceStage] = {}
        source_names: set[str] = set()
        plans = [(s.name, s.plan, s) for s in sinks if s.plan is not None] + [(n, p, None) for n, p, _ in extra_sinks]
        for _, plan, _ in plans:
            source_names |= plan.sources()
        for name in sorted(source_names):
            stages[name] = self._source_stage(name, max((p.state_horizon_us() for _, p, _ in plans if name in p.sources()), default=0))
        ctx = BuildContext(
            connect_source=lambda name, op: stages[name].connect(op),
            dead_letter=self._dead_letter_callback(),
            clock=self.clock,
            on_error=self.settings["on_error"],
            settings=dict(self.settings),
            load_table=self._table_loader(),
        )
        sink_ops = []
        for entry in sinks:
            if entry.plan is None:
                raise ExecutionError(f"sink '{entry.name}' has no query", hint=f"INSERT INTO {entry.name} SELECT ...")
            schema = self._sink_schema(entry)
            run_ctx = replace(
                self._run_context(entry.base_dir),
                acknowledging_sources=self._acknowledging_sources(entry.plan),
                row_key_columns=_row_key_columns(entry.plan, schema),
            )
            op = SinkOperator(entry.name, schema, lambda sc, c=entry.connector, r=run_ctx: c.open(sc, r), sink_input_names(entry.plan))
            entry.plan.build(ctx).connect(op)
            sink_ops.append(op)
        for name, plan, open_writer in extra_sinks:
            names = sink_input_names(plan)
            schema = pa.schema([plan.schema.field(n) for n in names])
            op = SinkOperator(name, schema, open_writer, names)
            plan.build(ctx).connect(op)
            sink_ops.append(op)
        if DEAD_LETTER_STREAM in stages:
            reader = stages[DEAD_LETTER_STREAM].reader
            self.dead_letters.subscribe(reader.offer)
            reader.upstream_done = lambda: all(s.ended for n, s in stages.items() if n != DEAD_LETTER_STREAM)
        limits = StateLimits(self.settings["max_state_rows"], self.settings["max_state_bytes"])
        driver = Driver(list(stages.values()), sink_ops, self.clock, self.dead_letters, ctx.operators, state_limits=limits)
        return driver

    def _dead_letter_callback(self):
        def callback(letters):
            if self.settings["on_error"] == "fail":
                first = letters[0]
                raise ExecutionError(f"{first.source}: {first.reason}: {first.detail}")
            if self.settings["on_error"] == "skip":
                self.dead_letters.skip(letters)
                return
            self.dead_letters.write(letters)

        return callback

    def _table_loader(self) -> Callable[[str], pa.Table]:
        """Reads a TABLE's rows once per run (lookup joins share them)."""
        loaded: dict[str, pa.Table] = {}

        def load(name: str) -> pa.Table:
            if name not in loaded:
                loaded[name] = self._load_table(name)
            return loaded[name]

        return load

    def _load_table(self, name: str) -> pa.Table:
        """All rows of a bounded TABLE; bad records go where the table's ``on_error`` says."""
        stage = self._source_stage(name)
        collect = _CollectedRows()
        stage.connect(collect)
        try:
            while not stage.reader.exhausted:
                item = stage.reader.poll()
                if item is not None:
                    stage.process(item)
                elif not stage.reader.exhausted:
                    wakeup = stage.reader.next_wakeup()
                    self.clock.sleep(max(0.0005, min(0.05, (wakeup or 0) - self.clock.monotonic())))
        finally:
            stage.close()
        schema = self.sources[name].schema
        batches = [b.select(schema.names) for b in collect.batches]
        return pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()

    def _source_stage(self, name: str, retention_horizon_us: int = 0) -> SourceStage:
        entry = self.sources[name]
        options = entry.connector.config
        max_future = options.get("max_future", "1h")
        max_future_us = None
        if max_future is not None and str(max_future).lower() not in ("off", "none"):
            from sqlstream.durations import parse_duration_us

            max_future_us = parse_duration_us(max_future)
        spec = SourceSpec(
            name=name,
            schema=entry.schema,
            watermark_column=entry.rowtime,
            watermark_delay_us=entry.delay_us,
            on_error=options.get("on_error") or self.settings["on_error"],
            max_future_us=max_future_us,
            idle_timeout_us=options.get("idle_timeout"),
        )
        horizon_us = retention_horizon_us + entry.delay_us if retention_horizon_us else 0
        run_ctx = replace(self._run_context(entry.base_dir), retention_horizon_us=horizon_us)
        reader = entry.connector.open(run_ctx)
        return SourceStage(spec, reader, self.dead_letters, self.clock)

    def pending_sinks(self) -> list[SinkEntry]:
        return [s for s in self.sinks.values() if s.plan is not None]

    def run(self, *, progress: Callable[[Driver], None] | None = None,
            warn: Callable[[str], None] | None = None) -> RunSummary:
        """Run every sink's query together until the sources end or :meth:`stop`;
        ``warn`` takes warnings (large state) instead of stderr."""
        driver = self.build(self.pending_sinks())
        driver.progress = progress
        if warn is not None:
            driver.warn = warn
        with self._lock:
            self._driver = driver
        summary = driver.run()
        self.last_summary = summary
        return summary

    def stop(self) -> bool:
        """Stop a running :meth:`run` or :meth:`query` after the batch in flight.

        True when a run loop took the request (it drains and closes the sinks); False
        when none is looping yet (start-up, opening sources) or it was already stopping."""
        with self._lock:
            driver = self._driver
        if driver is None:
            return False
        accepted = driver.looping and not driver.stopping
        driver.stop()
        return accepted

    def query(self, sql: str, *, timeout: float | None = None) -> Iterator[pa.RecordBatch]:
        """Run one query and yield its result batches as they come (changelog batches
        carry ``__op``). Ends when its sources end, on LIMIT, or on :meth:`stop`."""
        statements = list(parse_script(SourceText(sql, "<query>", self.base_dir), lambda: self.functions.keys()))
        queries = [s for s in statements if isinstance(s, QueryStatement)]
        for st in statements:
            if not isinstance(st, QueryStatement):
                self.execute_statement(st)
        if len(queries) != 1:
            raise SqlAnalysisError("query() takes exactly one SELECT", hint="use execute() for DDL")
        plan = self._plan(queries[0].query, queries[0].source)
        results: queue.Queue = queue.Queue()
        driver = self.build([], [("query", plan, lambda schema: QueueWriter(results))])
        with self._lock:
            self._driver = driver
        errors: list[BaseException] = []

        def drive():
            try:
                self.last_summary = driver.run()
            except BaseException as error:  # handed to the consumer below
                errors.append(error)
                results.put(END_OF_STREAM)

        thread = threading.Thread(target=drive, name="sqlstream-query", daemon=True)
        thread.start()
        try:
            while True:
                item = results.get(timeout=timeout)
                if item is END_OF_STREAM:
                    break
                yield item
        finally:
            driver.stop()
            thread.join()
        if errors:
            raise errors[0]

    def _register_dead_letter_stream(self) -> None:
        from sqlstream.runtime.dead_letter_source import DeadLetterSource

        connector = DeadLetterSource(DEAD_LETTER_STREAM, DEAD_LETTER_SCHEMA, {"connector": "internal"})
        self.sources[DEAD_LETTER_STREAM] = SourceEntry(
            DEAD_LETTER_STREAM, "SOURCE", connector, DEAD_LETTER_SCHEMA, "at", 0, None, self.base_dir
        )


class _CollectedRows(Operator):
    """Keeps the batches pushed to it (a TABLE being loaded)."""

    def __init__(self):
        super().__init__()
        self.batches: list[pa.RecordBatch] = []

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        self.batches.append(batch)


def sink_input_names(plan: PlanNode) -> list[str]:
    """The columns a sink takes from a query: ``__op`` first for an updating result."""
    visible = [f.name for f in plan.schema if not is_hidden(f.name) and f.name != OP_COLUMN]
    return ([OP_COLUMN] if plan.updating else []) + visible


def _row_key_columns(plan: PlanNode, schema: pa.Schema) -> list[str] | None:
    """The sink columns that identify a row of a final window result (window bounds and
    group key), for sinks that derive message ids from them; None if not all selected."""
    keys = plan.key_columns
    if plan.window is None or keys is None:
        return None
    names = sink_input_names(plan)
    wanted = [*plan.window, *keys]
    if not all(k in names for k in wanted):
        return None
    return [schema.names[names.index(k)] for k in wanted]


def explain_plan(title: str, plan: PlanNode) -> str:
    lines = [f"== {title} =="] + plan.explain()
    return "\n".join(lines)


def _watermark_text(entry: SourceEntry) -> str:
    if entry.rowtime is None:
        return ""
    from sqlstream.durations import format_duration_us

    return f"{entry.rowtime} - {format_duration_us(entry.delay_us)}"


def _connector_location(raw: dict[str, RawOption], st: Statement):
    """Where an unknown connector is named (the statement, when none is)."""
    option = raw.get("connector")
    return (option.location if option is not None else None) or st.location


def _rows_table(rows: list[dict]) -> pa.Table:
    if not rows:
        return pa.table({})
    return pa.Table.from_pylist(rows)


def _named_relations(query: exp.Expr) -> set[str]:
    from sqlstream.sql.statements import normalize_name

    return {normalize_name(t.this) for t in query.find_all(exp.Table) if isinstance(t.this, exp.Identifier)}


def _sink_relations(entry: SinkEntry) -> set[str]:
    st = entry.statement
    names = set(entry.plan.sources()) if entry.plan is not None else set()
    query = getattr(st, "query", None)
    if query is not None:
        names |= _named_relations(query)
    if isinstance(st, CreateSink) and st.from_name:
        names.add(st.from_name)
    return names

