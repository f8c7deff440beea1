"""From query plans to a running :class:`~sqlstream.runtime.driver.Driver`.

:class:`PipelineBuilder` opens one :class:`~sqlstream.runtime.source_stage.SourceStage`
per source read (shared by every query of the run), builds each plan's operators, ends
each query in a :class:`~sqlstream.runtime.sink.SinkOperator`, loads the TABLEs lookup
joins read, and wires the dead-letter output and the ``sqlstream_dead_letter`` stream.

The runtime knows nothing of SQL or of the planner: a plan is anything shaped like
:class:`RunnablePlan`, a source is anything shaped like :class:`SourceDefinition` (the
session's catalog entries are), and a sink comes as a :class:`SinkPlan`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Protocol

import pyarrow as pa

from sqlstream.connectors.base import RunContext, SinkWriter, SourceBatch, SourceConnector, SourceReader
from sqlstream.connectors.dead_letters import DEAD_LETTER_STREAM, DeadLetterOutput
from sqlstream.durations import parse_duration_us
from sqlstream.errors import ConnectorError, ExecutionError, Location
from sqlstream.hidden import OP_COLUMN, SOURCE_ID_COLUMN, is_hidden
from sqlstream.operators.base import Operator
from sqlstream.operators.context import BuildContext
from sqlstream.runtime.checkpointing import CheckpointConfig, Checkpointer
from sqlstream.runtime.dead_letter_source import DeadLetterReader
from sqlstream.runtime.driver import Driver, print_warning
from sqlstream.runtime.sink import PassThroughSinkOperator, SinkOperator
from sqlstream.runtime.source_stage import SourceSpec, SourceStage
from sqlstream.runtime.state_tracker import StateLimits
from sqlstream.runtime.table_refresh import TableRefresher, TableSwap

__all__ = [
    "PipelineBuilder",
    "RunnablePlan",
    "SourceDefinition",
    "SinkPlan",
    "ReaderWrapper",
    "sink_input_names",
    "query_result_schema",
    "acknowledging_sources",
]


class RunnablePlan(Protocol):
    """What the runtime needs of a query plan (``sqlstream.plan.nodes.PlanNode`` is one)."""

    @property
    def schema(self) -> pa.Schema: ...

    @property
    def updating(self) -> bool: ...

    @property
    def window(self) -> tuple[str, str] | None: ...

    @property
    def key_columns(self) -> tuple[str, ...] | None: ...

    def sources(self) -> set[str]: ...

    def build(self, ctx: BuildContext) -> Operator: ...

    def state_horizon_us(self) -> int: ...

    def explain(self) -> list[str]: ...


class SourceDefinition(Protocol):
    """A source or TABLE as the catalog declares it (``sqlstream.catalog.SourceEntry`` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def connector(self) -> SourceConnector: ...

    @property
    def schema(self) -> pa.Schema: ...

    @property
    def rowtime(self) -> str | None: ...

    @property
    def delay_us(self) -> int: ...

    @property
    def base_dir(self) -> str: ...

    @property
    def location(self) -> Location | None: ...


#: wraps a source's reader before its stage is built: (source name, reader) -> reader
ReaderWrapper = Callable[[str, SourceReader], SourceReader]


@dataclass
class SinkPlan:
    """One query of a run and where its rows go."""

    name: str
    plan: RunnablePlan
    schema: pa.Schema  # the rows the sink receives (``sink_input_names`` of the plan, renamed/cast)
    open_writer: Callable[[pa.Schema, RunContext], SinkWriter]  # e.g. a sink connector's ``open``
    base_dir: str  # relative paths of the sink resolve against it
    #: the writer takes every column, hidden ones included, and hears the watermark
    #: (:class:`PassThroughSinkOperator`: an exchange between workers)
    passthrough: bool = False


def sink_input_names(plan: RunnablePlan) -> list[str]:
    """The columns a sink takes from a query: ``__op`` first for an updating result."""
    visible = [f.name for f in plan.schema if not is_hidden(f.name) and f.name != OP_COLUMN]
    return ([OP_COLUMN] if plan.updating else []) + visible


def query_result_schema(plan: RunnablePlan) -> pa.Schema:
    """The rows a query hands to its consumer (``Session.query``, the REPL) as they are."""
    return pa.schema([plan.schema.field(n) for n in sink_input_names(plan)])


def acknowledging_sources(plan: RunnablePlan, sources: Mapping[str, SourceDefinition],
                          checkpointing: bool = False) -> tuple[str, ...]:
    """The sources ``plan`` reads that acknowledge their input once the sink holds the rows
    (declared by the connector). None with checkpoints: input is acknowledged when the
    checkpoint that read it commits, whatever the sinks hold."""
    if checkpointing:
        return ()
    return tuple(sorted(n for n in plan.sources() if n in sources and sources[n].connector.acknowledges))


def row_key_columns(plan: RunnablePlan, schema: pa.Schema) -> list[str] | None:
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


def upsert_key_columns(plan: RunnablePlan, schema: pa.Schema) -> list[str] | None:
    """The sink columns that identify a row of an updating result (an unwindowed GROUP
    BY's key), for sinks that upsert; None if unknown or not all selected."""
    names = sink_input_names(plan)
    if not plan.updating or plan.window is not None or not plan.key_columns:
        return None
    if not all(k in names for k in plan.key_columns):
        return None
    return [schema.names[names.index(k)] for k in plan.key_columns]


class PipelineBuilder:
    """Builds the :class:`Driver` of one run.

    ``settings`` is read when a run is built and, for ``on_error``, again when a
    dead letter arrives; ``run_context(base_dir)`` is the connectors' context for a
    source or sink declared in ``base_dir``; ``wrap_reader`` may wrap each source's
    reader before its stage is built (the REPL records what a query read)."""

    def __init__(
        self,
        sources: Mapping[str, SourceDefinition],
        settings: Mapping[str, Any],
        clock,
        run_context: Callable[[str], RunContext],
        dead_letter_path: str | None,
        wrap_reader: ReaderWrapper | None = None,
    ):
        self.sources = sources
        self.settings = settings
        self.clock = clock
        self.run_context = run_context
        self.dead_letter_path = dead_letter_path
        self.wrap_reader = wrap_reader

    def build(self, sinks: list[SinkPlan], *, progress: Callable[[Driver], None] | None = None,
              warn: Callable[[str], None] | None = None, checkpoint: CheckpointConfig | None = None) -> Driver:
        """Operators for ``sinks`` sharing one read per source, ready to run; ``progress``
        and ``warn`` go to the :class:`Driver`. With ``checkpoint``, the run resumes from
        the last checkpoint in its directory (if any) and takes checkpoints."""
        checkpointer = None
        if checkpoint is not None:
            checkpointer = Checkpointer(checkpoint, warn or print_warning, self.clock)
            checkpointer.open({
                sink.name: {"columns": [f"{f.name} {f.type}" for f in sink.schema], "plan": sink.plan.explain()}
                for sink in sinks
            })
        dead_letters = DeadLetterOutput(self.dead_letter_path, self.clock)
        stages: dict[str, SourceStage] = {}
        names: set[str] = set()
        for sink in sinks:
            names |= sink.plan.sources()
        dead_letter_reader = None
        for name in sorted(names):
            horizon_us = max((s.plan.state_horizon_us() for s in sinks if name in s.plan.sources()), default=0)
            spec = self._spec(name)
            if name == DEAD_LETTER_STREAM:  # the run's own dead letters, read as a stream
                dead_letter_reader = DeadLetterReader(
                    upstream_done=lambda: all(s.ended for n, s in stages.items() if n != DEAD_LETTER_STREAM)
                )
                reader = dead_letter_reader
            else:
                reader = self._open_reader(name, horizon_us, checkpointer)
            if self.wrap_reader is not None:
                reader = self.wrap_reader(name, reader)
            stages[name] = SourceStage(spec, reader, dead_letters, self.clock)
            stages[name].checkpointing = checkpointer is not None
        tables = _TableLoader(self, dead_letters)
        ctx = BuildContext(
            connect_source=lambda name, op: stages[name].connect(op),
            dead_letter=self._dead_letter_handler(dead_letters),
            clock=self.clock,
            on_error=self.settings["on_error"],
            settings=dict(self.settings),
            load_table=tables.load,
            watch_table=tables.watch,
        )
        sink_ops = []
        for sink in sinks:
            op = self._sink_operator(sink, ctx.dead_letter, checkpointing=checkpointer is not None)
            sink.plan.build(ctx).connect(op)
            sink_ops.append(op)
        if dead_letter_reader is not None:
            dead_letters.subscribe(dead_letter_reader.offer)
        limits = StateLimits(self.settings["max_state_rows"], self.settings["max_state_bytes"])
        driver = Driver(list(stages.values()), sink_ops, self.clock, dead_letters, ctx.operators, state_limits=limits,
                        progress=progress, warn=warn, checkpointer=checkpointer,
                        tables=list(tables.refreshers.values()))
        if checkpointer is not None:
            checkpointer.attach(driver)
        return driver

    def _sink_operator(self, sink: SinkPlan, dead_letter: Callable | None = None,
                       checkpointing: bool = False) -> SinkOperator:
        run_ctx = replace(
            self.run_context(sink.base_dir),
            acknowledging_sources=acknowledging_sources(sink.plan, self.sources, checkpointing),
            row_key_columns=row_key_columns(sink.plan, sink.schema),
            upsert_key_columns=upsert_key_columns(sink.plan, sink.schema),
            source_ids=SOURCE_ID_COLUMN in sink.plan.schema.names,
            dead_letter=dead_letter,
            checkpointing=checkpointing,
        )
        open_writer = sink.open_writer
        kind, names = (PassThroughSinkOperator, sink.schema.names) if sink.passthrough else (SinkOperator, sink_input_names(sink.plan))
        op = kind(sink.name, sink.schema, lambda schema: open_writer(schema, run_ctx), names)
        op.checkpointed = checkpointing
        return op

    def _open_reader(self, name: str, retention_horizon_us: int = 0,
                     checkpointer: Checkpointer | None = None) -> SourceReader:
        """Opens source ``name``; its reader keeps input unacknowledged for as long as
        state built from it may be held (``retention_horizon_us`` plus the watermark delay)
        or, with checkpoints, until the epoch that read it is committed, and starts where
        the checkpoint being resumed left it."""
        entry = self.sources[name]
        horizon_us = retention_horizon_us + entry.delay_us if retention_horizon_us else 0
        run_ctx = replace(self.run_context(entry.base_dir), retention_horizon_us=horizon_us)
        if checkpointer is not None:
            run_ctx = replace(run_ctx, checkpointing=True, start_position=checkpointer.start_position(name),
                              checkpoint_interval_us=int(checkpointer.config.interval_s * 1e6))
        try:
            return entry.connector.open(run_ctx)
        except ConnectorError as error:  # e.g. "cannot connect": point at the CREATE SOURCE
            raise error.with_location(entry.location)

    def _spec(self, name: str) -> SourceSpec:
        entry = self.sources[name]
        options = entry.connector.config
        max_future = options.get("max_future", "1h")
        max_future_us = None
        if max_future is not None and str(max_future).lower() not in ("off", "none"):
            max_future_us = parse_duration_us(max_future)
        return SourceSpec(
            name=name,
            schema=entry.schema,
            watermark_column=entry.rowtime,
            watermark_delay_us=entry.delay_us,
            on_error=options.get("on_error") or self.settings["on_error"],
            max_future_us=max_future_us,
            idle_timeout_us=options.get("idle_timeout"),
            external_watermark=entry.connector.external_watermark,
            # the run's own dead letters come again when their input is replayed
            replay_gap=None if name == DEAD_LETTER_STREAM else entry.connector.replay_gap(),
        )

    def _dead_letter_handler(self, dead_letters: DeadLetterOutput) -> Callable:
        settings = self.settings

        def handle(letters):
            if settings["on_error"] == "fail":
                first = letters[0]
                raise ExecutionError(f"{first.source}: {first.reason}: {first.detail}")
            if settings["on_error"] == "skip":
                dead_letters.skip(letters)
                return
            dead_letters.write(letters)

        return handle

    def load_table(self, name: str, dead_letters: DeadLetterOutput) -> pa.Table:
        """All rows of a bounded TABLE; bad records go where the table's ``on_error`` says."""
        stage, collect = self._table_stage(name, self._open_reader(name), dead_letters)
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
        return self._table_of(name, collect)

    def table_rows(self, name: str, reader: SourceReader, items: list[SourceBatch],
                   dead_letters: DeadLetterOutput) -> pa.Table:
        """A TABLE's rows from what ``reader`` returned (read elsewhere); closes it."""
        stage, collect = self._table_stage(name, reader, dead_letters)
        try:
            for item in items:
                stage.process(item)
        finally:
            stage.close()
        return self._table_of(name, collect)

    def _table_stage(self, name: str, reader: SourceReader,
                     dead_letters: DeadLetterOutput) -> tuple[SourceStage, "_CollectedRows"]:
        stage = SourceStage(self._spec(name), reader, dead_letters, self.clock)
        collect = _CollectedRows()
        stage.connect(collect)
        return stage, collect

    def _table_of(self, name: str, collect: "_CollectedRows") -> pa.Table:
        schema = self.sources[name].schema
        batches = [b.select(schema.names) for b in collect.batches]
        return pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()


class _TableLoader:
    """Reads a TABLE's rows once per run (lookup joins share them); a TABLE whose
    connector has a ``refresh_interval_us`` gets a :class:`TableRefresher`."""

    def __init__(self, builder: PipelineBuilder, dead_letters: DeadLetterOutput):
        self.builder = builder
        self.dead_letters = dead_letters
        self.loaded: dict[str, pa.Table] = {}
        self.refreshers: dict[str, TableRefresher] = {}

    def load(self, name: str) -> pa.Table:
        if name not in self.loaded:
            rows = self.loaded[name] = self.builder.load_table(name, self.dead_letters)
            interval_us = self.builder.sources[name].connector.refresh_interval_us
            if interval_us:
                builder, dead_letters = self.builder, self.dead_letters
                self.refreshers[name] = TableRefresher(
                    name, interval_us / 1e6, lambda: builder._open_reader(name),
                    lambda reader, items: builder.table_rows(name, reader, items, dead_letters),
                    builder.clock, rows.num_rows,
                )
        return self.loaded[name]

    def watch(self, name: str, swap: TableSwap) -> None:
        """``swap`` gets the TABLE's rows each time they are read again (if they are)."""
        refresher = self.refreshers.get(name)
        if refresher is not None:
            refresher.watch(swap)


class _CollectedRows(Operator):
    """Keeps the batches pushed to it (a TABLE being loaded)."""

    def __init__(self):
        super().__init__()
        self.batches: list[pa.RecordBatch] = []

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        self.batches.append(batch)
