"""``Session``: the catalog of sources, tables, views, sinks and functions, and the
entry point that executes SQL and runs pipelines.

The session executes DDL against its catalog and keeps the public API; the work it
hands on lives beside it: catalog entries in :mod:`sqlstream.catalog`, functions in
:mod:`sqlstream.functions`, SHOW/DESCRIBE/EXPLAIN in :mod:`sqlstream.introspection`,
wiring a run in :class:`~sqlstream.runtime.builder.PipelineBuilder` and running one on
a thread in :class:`~sqlstream.runtime.driver_thread.DriverThread`.
The module is long because it is the public API: each method is short and hands its work on.

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

import contextlib
import os
import queue
import threading
import weakref
from dataclasses import dataclass, replace
from typing import Any, Callable

import pyarrow as pa
from sqlglot import exp

from sqlstream.catalog import (
    FunctionEntry,
    PlannerCatalog,
    SinkEntry,
    SourceEntry,
    ViewEntry,
    dead_letter_stream_entry,
    dependents_of,
    schema_of,
    sink_schema,
    with_one_row,
)
from sqlstream.connectors.base import Partition, RunContext, sink_connector, source_connector
from sqlstream.connectors.dead_letters import DEAD_LETTER_STREAM, DeadLetterOutput
from sqlstream.connectors.memory import BatchCallback, MemoryStream
from sqlstream.connectors.options import RawOption
from sqlstream.errors import (
    ExecutionError,
    SqlAnalysisError,
    SqlStreamError,
    UdfError,
    UnsupportedSqlError,
    did_you_mean,
)
from sqlstream.functions import FunctionCatalog, load_udf_directory, model_function, python_function
from sqlstream.introspection import (
    describe_rows,
    explain_plan,
    explain_target,
    metric_rows,
    rows_table,
    show_rows,
    watermark_rows,
)
from sqlstream.observability.analyze import DiscardWriter, analyze_text
from sqlstream.paths import resolve_path
from sqlstream.plan.nodes import PlanNode
from sqlstream.plan.partitioning import partition_plan
from sqlstream.plan.planner import QueryPlanner
from sqlstream.python_data import create_source_sql, memory_stream_of, quoted
from sqlstream.results import QueryResult
from sqlstream.runtime.builder import (
    PipelineBuilder,
    ReaderWrapper,
    SinkPlan,
    acknowledging_sources,
    query_result_schema,
    sink_input_names,
)
from sqlstream.runtime.checkpoint_mirror import CheckpointMirror
from sqlstream.runtime.checkpointing import CheckpointConfig
from sqlstream.runtime.clock import WallClock
from sqlstream.runtime.driver import Driver, RunSummary, print_warning
from sqlstream.runtime.driver_thread import DriverThread
from sqlstream.runtime.sink import QueueWriter
from sqlstream.settings import DEFAULT_SETTINGS, parse_setting
from sqlstream.sql.dialect import SqlStream
from sqlstream.sql.statements import (
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
from sqlstream.udf.model import remote_url
from sqlstream.udf.names import check_function_name

__all__ = ["Session", "StatementResult", "SourceEntry", "ViewEntry", "SinkEntry", "FunctionEntry", "explain_plan",
           "sink_input_names"]


@dataclass
class StatementResult:
    """What one statement did: ``kind`` and, for SHOW/DESCRIBE/EXPLAIN, rows or text."""

    kind: str
    name: str | None = None
    table: pa.Table | None = None
    text: str | None = None
    statement: Statement | None = None


class Session:
    """A catalog plus the means to run it. No global state: make as many as you like."""

    def __init__(self, *, clock=None, base_dir: str | None = None, dead_letter_path: str | None = None,
                 udf_dirs: list[str] | tuple[str, ...] = (), settings: dict[str, Any] | None = None,
                 partition: Partition | None = None):
        self.clock = clock or WallClock()
        self.partition = partition  # a worker's session for one partition (docs/scale-out.md)
        self.base_dir = os.path.abspath(base_dir or os.getcwd())
        self.sources: dict[str, SourceEntry] = {}
        self.views: dict[str, ViewEntry] = {}
        self.sinks: dict[str, SinkEntry] = {}
        self.functions: FunctionCatalog = FunctionCatalog()  # installed function packs load on first use
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
        self.dead_letters: DeadLetterOutput | None = None  # of the last run built
        self.sources[DEAD_LETTER_STREAM] = dead_letter_stream_entry(self.base_dir)
        self.streams: dict[str, MemoryStream] = {}  # connector = 'memory' sources, by name
        self.outputs: dict[str, Any] = {}  # connector = 'memory' sinks: batches, or a BatchCallback
        self._results: weakref.WeakSet[QueryResult] = weakref.WeakSet()
        for directory in udf_dirs:
            self.load_udfs(directory)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Stop every query this session started (results of :meth:`query`, a :meth:`run`
        in another thread)."""
        errors = []
        for result in list(self._results):
            try:
                result.close()
            except Exception as error:  # noqa: BLE001 - every query is stopped first, then the first failure told
                errors.append(error)
        self.stop()
        if errors:
            raise errors[0]

    # -- data in Python -------------------------------------------------------------------

    def source_from(self, data: Any, name: str, *, watermark: str | None = None, delay: str | float = 0,
                    schema: pa.Schema | None = None, replace: bool = False) -> str:
        """Declare source ``name`` over data held in Python: a list or iterator of dicts (or
        a function returning an iterator: each query gets a fresh one), a pyarrow Table,
        RecordBatch or list of them, a pandas or polars DataFrame. ``watermark``: its
        event-time column, ``delay`` how late rows may come ('2s' or seconds)."""
        stream = memory_stream_of(data, schema)
        sql = create_source_sql(name, stream.schema, watermark, delay)
        self.execute(sql.replace("CREATE SOURCE", "CREATE OR REPLACE SOURCE", 1) if replace else sql)
        self.streams[name] = stream
        return name

    def sink_to(self, function: Callable[[pa.RecordBatch], Any], query: str | None = None, *,
                name: str | None = None) -> str:
        """Hand every result batch of sink ``name`` to ``function`` (``__op`` first for an
        updating result). With ``query`` the sink is created (``CREATE SINK name AS query``);
        otherwise ``CREATE SINK name ... WITH (connector = 'memory')`` later. :meth:`run`
        runs it."""
        if not callable(function):
            raise SqlAnalysisError(f"sink_to() needs a function, not {type(function).__name__}")
        name = name or getattr(function, "__name__", "python_sink")
        self.outputs[name] = BatchCallback(function)
        if query is not None:
            self.execute(f"CREATE SINK {quoted(name)} AS {query.strip().rstrip(';')} WITH (connector = 'memory')")
        return name

    # -- functions ------------------------------------------------------------------------

    def load_udfs(self, directory: str, on_file: Callable[[str, list[str]], None] | None = None) -> list[str]:
        """Import every ``*.py`` under ``directory`` (code that runs) and register its @udf
        functions; ``on_file(path, names)`` is told of each file once it is loaded."""
        return load_udf_directory(directory, lambda fn, origin: self.register_udf(fn, origin=origin), on_file)

    def register_udf(self, fn, *, origin: str = "") -> None:
        """Register a function decorated with :func:`sqlstream.udf` (or a plain
        function with type hints)."""
        entry = python_function(fn, origin, self.functions)
        self.functions[entry.name] = entry

    def register_model(self, name: str, path: str, **options) -> None:
        """Register an ONNX model as a vectorized scalar SQL function ``name``."""
        name = name.lower()
        check_function_name(name)
        if name in self.functions:
            raise UdfError(f"function '{name}' already exists", hint=f"DROP FUNCTION {name} first, or pick another name")
        local = path if remote_url(path) else self.resolve_path(path, self.base_dir, what=f"model '{name}': path")
        options = {str(k).lower(): v for k, v in options.items()}
        if options.get("shadow") is not None:
            options["shadow"] = self.resolve_path(str(options["shadow"]), self.base_dir, what=f"model '{name}': shadow")
        entry = model_function(name, local, options, path)  # a URL is refused there
        self.functions[entry.name] = entry

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

    def _check_new_name(self, name: str, st: Statement, or_replace: bool, if_not_exists: bool, kind: str) -> bool:
        """False if the statement should do nothing (IF NOT EXISTS); raises on clashes."""
        taken = name in self.sources or name in self.views or name in self.sinks or name == DEAD_LETTER_STREAM
        if not taken:
            return True
        if if_not_exists:
            return False
        if or_replace and name not in (DEAD_LETTER_STREAM,):
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
        return QueryPlanner(PlannerCatalog(self.sources, self.views, self.functions), source, self.settings).plan(query)

    def _plan_sink(self, query: exp.Expr, source: SourceText, st: Statement) -> PlanNode:
        """A sink's plan; over a partitioned source, one that runs partition by partition
        (with an exchange where its state needs one)."""
        return partition_plan(self._plan(query, source), self.partition_keys(), st.location)

    def partition_keys(self) -> dict[str, str]:
        """Partitioned sources (``partitions = P``) and their key columns."""
        return {name: entry.connector.partition_key for name, entry in self.sources.items()
                if entry.connector.partition_key is not None}

    def _create_sink(self, st: CreateSink) -> StatementResult:
        if not self._check_new_name(st.name, st, st.replace, st.if_not_exists, "SINK"):
            return StatementResult("noop", st.name, statement=st)
        raw = {k: RawOption(v.value, v.location) for k, v in st.options.items()}
        cls = sink_connector(raw["connector"].value if "connector" in raw else None, _connector_location(raw, st))
        connector = cls.create(st.name, raw, st.location)
        self._check_paths(connector, raw, st, f"sink '{st.name}'")
        plan, query_text = None, ""
        if st.query is not None:
            plan, query_text = self._plan_sink(st.query, st.source, st), st.query.sql(dialect=SqlStream)
        elif st.from_name is not None:
            query = exp.select("*").from_(exp.Table(this=exp.Identifier(this=st.from_name, quoted=True)))
            if st.from_name not in self.sources and st.from_name not in self.views:
                names = list(self.sources) + list(self.views)
                raise SqlAnalysisError(
                    f"unknown source or view '{st.from_name}'", location=st.location, hint=did_you_mean(st.from_name, names)
                )
            plan, query_text = self._plan_sink(query, st.source, st), f"SELECT * FROM {st.from_name}"
        entry = SinkEntry(st.name, connector, st, self._base_dir(st), st.columns, plan, query_text=query_text)
        if plan is not None:
            connector.check_schema(sink_schema(entry), st.location)
            connector.check_inputs(acknowledging_sources(plan, self.sources, self._checkpointing), st.location)
        self.sinks[st.name] = entry
        return StatementResult("create sink", st.name, statement=st)

    @property
    def _checkpointing(self) -> bool:
        return self.settings["checkpoint_dir"] is not None

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
        plan = self._plan_sink(st.query, st.source, st)
        entry.connector.check_inputs(acknowledging_sources(plan, self.sources, self._checkpointing), st.location)
        entry = replace(entry, plan=plan, query_text=st.query.sql(dialect=SqlStream))
        entry.connector.check_schema(sink_schema(entry), st.location)
        self.sinks[st.sink] = entry
        return StatementResult("insert", st.sink, statement=st)

    def _bare_query(self, st: QueryStatement) -> StatementResult:
        plan = self._plan_sink(st.query, st.source, st)
        self._query_counter += 1
        name = f"query_{self._query_counter}"
        connector = sink_connector("stdout").create(name, {"connector": RawOption("stdout")}, st.location)
        entry = SinkEntry(name, connector, st, self._base_dir(st), plan=plan, implicit=True, query_text=st.text)
        sink_schema(entry)
        self.sinks[name] = entry
        return StatementResult("query", name, statement=st)

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
        if key in ("checkpoint_dir", "dead_letter_path") and parsed not in (None, "", "off", "none"):
            self.resolve_path(parsed, self.base_dir, what=key, location=location)
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
        if st.name in self.functions and not st.replace:
            raise SqlAnalysisError(
                f"function '{st.name}' already exists", location=st.location, hint="use CREATE OR REPLACE FUNCTION"
            )
        path = st.model_path  # a URL is refused by ModelUdf.load
        if not remote_url(path):
            path = self.resolve_path(path, self._base_dir(st), what=f"model '{st.name}': path", location=st.location)
        options = {k: v.value for k, v in st.options.items()}
        if options.get("shadow") is not None:
            options["shadow"] = self.resolve_path(str(options["shadow"]), self._base_dir(st), what=f"model '{st.name}': shadow",
                                                  location=st.options["shadow"].location or st.location)
        try:  # replacing a model function swaps its model in the queries running it
            replacing = self.functions.get(st.name) if st.replace else None
            self.functions[st.name] = model_function(st.name, path, options, st.model_path, replacing)
        except SqlStreamError as error:
            option = st.options.get(error.option or "") if isinstance(error, UdfError) else None
            raise error.with_location(option.location if option is not None else st.location)
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
        dependents = dependents_of(st.name, self.views, self.sinks)
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
        rows = show_rows(st.what, self, st.location, st.name)
        return StatementResult("show", st.what.lower(), table=rows_table(rows), statement=st)

    def watermark_rows(self, driver: Driver | None = None) -> list[dict]:
        """SHOW WATERMARKS: each event-time source of ``driver`` (default: the last run)."""
        if driver is not None:
            return watermark_rows(self.sources, driver, driver.dead_letters, self.clock.now_us(), only_driver=True)
        return watermark_rows(self.sources, self._driver, self.dead_letters, self.clock.now_us(), only_driver=False)

    def metric_rows(self, driver: Driver | None = None) -> list[dict]:
        """SHOW METRICS: rows in/out, dead letters and state of ``driver`` (default: the last run)."""
        return metric_rows(driver or self._driver)

    def _describe(self, st: DescribeStatement) -> StatementResult:
        rows = describe_rows(self.schema_of(st.name, st))
        return StatementResult("describe", st.name, table=rows_table(rows), statement=st)

    def schema_of(self, name: str, st: Statement | None = None) -> pa.Schema:
        """The columns of source, TABLE, view or sink ``name`` (DESCRIBE)."""
        return schema_of(name, self.sources, self.views, self.sinks, st.location if st else None)

    def plan_query(self, st: QueryStatement) -> PlanNode:
        """The streaming plan of one SELECT, without registering it as a sink."""
        return self._plan(st.query, st.source)

    def _explain(self, st: ExplainStatement) -> StatementResult:
        title, query, source = explain_target(st)
        plan = self._plan(query, source)
        if title.startswith("sink "):  # (what workers run: with the exchange, if the sink needs one)
            plan = partition_plan(plan, self.partition_keys(), st.location)
        if st.analyze:
            if not isinstance(st.statement, QueryStatement):
                raise UnsupportedSqlError("EXPLAIN ANALYZE takes a query (SELECT ...); for a file's sinks use "
                                          "sqlstream explain --analyze FILE", location=st.location)
            return StatementResult("explain", title, text=self._analyze([(title, "query", plan)], []), statement=st)
        return StatementResult("explain", title, text=explain_plan(title, plan), statement=st)

    def explain_analyze(self) -> str:
        """Run every pending sink's query to the end of its input and return their plans
        annotated per operator (rows in/out, batches, time, peak state)."""
        sinks = self.pending_sinks()
        return self._analyze([(f"sink {s.name} [{s.connector.describe()}]", s.name, s.plan) for s in sinks], sinks)

    def _analyze(self, plans: list[tuple[str, str, PlanNode]], sinks: list[SinkEntry]) -> str:
        unbounded = sorted(name for _, _, plan in plans for name in plan.sources()
                           if not self.sources[name].connector.bounded)
        if unbounded:
            raise UnsupportedSqlError(f"EXPLAIN ANALYZE runs the query to the end of its input, but source "
                                      f"'{unbounded[0]}' has no end", hint="give it an end (e.g. max_rows)")
        extra = [] if sinks else [(name, plan, lambda schema: DiscardWriter()) for _, name, plan in plans]
        driver = self.build(sinks, extra)
        self.report_on(driver)
        return analyze_text(plans, driver, driver.run())

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
            memory_streams=self.streams,
            memory_outputs=self.outputs,
            partition=self.partition,
        )

    def _dead_letter_path(self) -> str | None:
        path = self.settings.get("dead_letter_path")
        if path is None:
            path = os.path.join(os.getcwd(), "sqlstream.dead_letter.jsonl")
        if path in ("", "off", "none"):
            return None
        return self.resolve_path(
            path, self.base_dir, what="dead-letter file", hint="SET dead_letter_path to a file inside them, or to 'off'"
        )

    def build(self, sinks: list[SinkEntry], extra_sinks: list[tuple[str, PlanNode, Callable]] = (), *,
              wrap_reader: ReaderWrapper | None = None, progress: Callable[[Driver], None] | None = None,
              warn: Callable[[str], None] | None = None, checkpoint: CheckpointConfig | None = None) -> Driver:
        """Operators for ``sinks`` (and ``extra_sinks``: name, plan, ``open_writer(schema)``)
        sharing one read per source, ready to run; ``wrap_reader(source, reader)`` may wrap
        each source's reader; ``progress`` and ``warn`` go to the driver."""
        if not sinks and not extra_sinks:
            raise ExecutionError("nothing to run", hint="add CREATE SINK ... AS SELECT, INSERT INTO, or a SELECT")
        sources = self.sources
        plans = []
        for entry in sinks:
            if entry.plan is None:
                raise ExecutionError(f"sink '{entry.name}' has no query", hint=f"INSERT INTO {entry.name} SELECT ...")
            plans.append(SinkPlan(entry.name, entry.plan, sink_schema(entry), entry.connector.open, entry.base_dir))
        for name, plan, open_writer in extra_sinks:
            plans.append(SinkPlan(name, plan, query_result_schema(plan),
                                  lambda schema, ctx, open_writer=open_writer: open_writer(schema), self.base_dir))
        if self.partition is not None:  # a worker's partition: queries with an exchange split in two
            from sqlstream.scaleout.exchange import split_exchanges

            plans, sources = split_exchanges(plans, sources, self.partition)
        builder = PipelineBuilder(with_one_row(sources, self.base_dir), self.settings, self.clock, self._run_context,
                                  self._dead_letter_path(), wrap_reader)
        driver = builder.build(plans, progress=progress, warn=warn, checkpoint=checkpoint)
        self.dead_letters = driver.dead_letters
        return driver

    def report_on(self, driver: Driver) -> None:
        """SHOW WATERMARKS / METRICS report ``driver`` (a run its caller drives)."""
        with self._lock:
            self._driver = driver

    def pending_sinks(self) -> list[SinkEntry]:
        return [s for s in self.sinks.values() if s.plan is not None]

    def run(self, *, progress: Callable[[Driver], None] | None = None,
            warn: Callable[[str], None] | None = None, from_scratch: bool = False,
            pipeline: str = "sqlstream", checkpoint_fence: Callable[[], str | None] | None = None,
            checkpoint_mirror: CheckpointMirror | None = None) -> RunSummary:
        """Run every sink's query together until the sources end or :meth:`stop`;
        ``SET http`` serves its metrics and console meanwhile, labelled ``pipeline``;
        ``warn`` takes warnings (large state) instead of stderr. With ``SET checkpoint_dir``
        the run resumes from the last checkpoint there (``from_scratch``: removes it first)
        and takes checkpoints every ``checkpoint_interval``; ``checkpoint_fence`` (a worker's
        lease check) may refuse one, which ends the run; ``checkpoint_mirror`` keeps a copy
        of the checkpoints elsewhere (a worker's NATS object store) and resumes from it."""
        built: list[Driver] = []  # ``SET http``: the endpoint serves before the run is built (/ready 503)
        endpoint = contextlib.nullcontext()
        if self.settings["http"] is not None:  # (imported here: a run without it does not load prometheus_client)
            from sqlstream.observability.server import serving

            endpoint = serving(self.settings["http"], lambda: built[0] if built else None, pipeline,
                               warn or print_warning)
        with endpoint:
            checkpoint = CheckpointConfig.of(self.settings, from_scratch)
            if checkpoint is not None and (checkpoint_fence is not None or checkpoint_mirror is not None):
                checkpoint = replace(checkpoint, fence=checkpoint_fence, mirror=checkpoint_mirror)
            driver = self.build(self.pending_sinks(), progress=progress, warn=warn, checkpoint=checkpoint)
            built.append(driver)
            self.report_on(driver)
            summary = driver.run()
        self.last_summary = summary
        return summary

    def stop(self, reason: str | None = None) -> bool:
        """Stop a running :meth:`run` or :meth:`query` after the batch in flight;
        ``reason`` (``SIGTERM``) is what the summary says stopped it.

        True when a run loop took the request (it drains and closes the sinks); False
        when none is looping yet (start-up, opening sources) or it was already stopping."""
        with self._lock:
            driver = self._driver
        if driver is None:
            return False
        return driver.stop(reason)

    def query(self, sql: str, *, timeout: float | None = None) -> QueryResult:
        """One query's result (DDL before it runs first): iterate it for its batches as they
        come (changelog batches carry ``__op``), or gather them with ``to_arrow()``,
        ``to_pandas()``, ``head(n)``, ``take(seconds=)``. It starts on first use and ends when
        its sources end, on LIMIT, on ``close()`` or :meth:`stop`; ``timeout``: seconds
        iteration waits for a batch before ``queue.Empty``."""
        statements = list(parse_script(SourceText(sql, "<query>", self.base_dir), lambda: self.functions.keys()))
        queries = [s for s in statements if isinstance(s, QueryStatement)]
        for st in statements:
            if not isinstance(st, QueryStatement):
                self.execute_statement(st)
        if len(queries) != 1:
            raise SqlAnalysisError("query() takes exactly one SELECT", hint="use execute() for DDL")
        return self.query_result(queries[0], timeout=timeout)

    def query_result(self, st: QueryStatement, *, timeout: float | None = None) -> QueryResult:
        """The result of a parsed SELECT (errors point into its own text)."""
        result = QueryResult(self._plan(st.query, st.source), self._start_query, timeout=timeout,
                             on_end=lambda summary: setattr(self, "last_summary", summary))
        self._results.add(result)
        return result

    sql = query

    def _start_query(self, plan: PlanNode) -> DriverThread:
        results: queue.Queue = queue.Queue()
        driver = self.build([], [("query", plan, lambda schema: QueueWriter(results))])
        self.report_on(driver)
        return DriverThread(driver, "sqlstream-query", results).start()


def _connector_location(raw: dict[str, RawOption], st: Statement):
    """Where an unknown connector is named (the statement, when none is)."""
    option = raw.get("connector")
    return (option.location if option is not None else None) or st.location
