"""The connector interface: what a source or a sink implements.

A connector knows nothing of SQL text: it gets an Arrow schema and typed options.

Sources
    A :class:`SourceConnector` is created once per ``CREATE SOURCE``/``CREATE TABLE``
    (``create`` validates its options then) and ``open`` ed once per run into a
    :class:`SourceReader`. Readers are non-blocking: ``poll`` returns what is ready now
    (a :class:`SourceBatch`, or None) and ``next_wakeup`` says when to ask again, so one
    driver loop serves many sources without a thread per source. A bounded reader sets
    ``bounded`` and reports ``exhausted`` once it returned all of its rows.

Sinks
    A :class:`SinkConnector` is created once per ``CREATE SINK`` and ``open`` ed once
    per run, with the schema of the rows it gets, into a :class:`SinkWriter` that takes
    Arrow batches (``write``), makes them durable (``flush``/``durable_rows``) and ends
    with ``close`` (clean end) or ``abort`` (failed run).

Acknowledgement
    A source that can have its input redelivered (JetStream) declares ``acknowledges``;
    its batches carry an ``ack`` callback, which the runtime calls once every sink
    holds the batch's rows durably and no window or join still needs them. A source
    that does not acknowledge leaves ``ack`` None.

Declared capabilities
    Class attributes say what a connector can do, so nobody tests its name:
    ``metadata_columns`` (columns it fills from message metadata, name → Arrow type),
    ``path_options`` (options naming local files, checked against ``allowed_paths``),
    ``acknowledges`` and ``can_back_table`` (with ``check_table`` for option-dependent
    answers).

Connectors register by name in :mod:`sqlstream.connectors.registry`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Protocol

import pyarrow as pa

from sqlstream.connectors.dead_letters import DeadLetter
from sqlstream.connectors.options import COMMON_SOURCE_OPTIONS, OptionSpec, RawOption, validate_options
from sqlstream.connectors.registry import (  # noqa: F401  (the registry's names stay importable from here)
    SINK_CONNECTORS,
    SOURCE_CONNECTORS,
    metadata_column_fillers,
    register_sink,
    register_source,
    sink_connector,
    source_connector,
)
from sqlstream.errors import ConnectorError, Location
from sqlstream.paths import AllowedPaths

__all__ = [
    "Clock",
    "RunContext",
    "Partition",
    "SourceBatch",
    "SourceReader",
    "SourceConnector",
    "SinkWriter",
    "SinkConnector",
]


class Clock(Protocol):
    def now_us(self) -> int: ...  # wall time, µs since the epoch (UTC)

    def monotonic(self) -> float: ...  # seconds, for timeouts and rates

    def sleep(self, seconds: float) -> None: ...


@dataclass
class SourceBatch:
    """What a reader returns: decoded rows, rejected records, and an ack handle."""

    batch: pa.RecordBatch | None
    dead_letters: list[DeadLetter] = field(default_factory=list)
    ack: Callable[[], None] | None = None  # called once every row of this batch is safely written
    raw_count: int = 0  # records received (good + bad)
    raw_bytes: int | None = None  # bytes those records took (file bytes, payloads); None: the reader cannot say
    event_time_hint: int | None = None  # µs: the source has seen event time up to here (moves the watermark)
    #: a source whose watermarks come from elsewhere (an exchange between workers): each
    #: row's ``__wm`` and the source's watermark after the batch (SourceSpec.external_watermark)
    row_watermarks: Any = None
    watermark: int | None = None


@dataclass(frozen=True)
class Partition:
    """One partition of a pipeline whose source is partitioned (``partitions = count``)."""

    index: int
    count: int
    group: str = ""  # the worker group running the pipeline (names its exchanges' streams)

    @property
    def label(self) -> str:
        """How files and folders of this partition are named: ``partition=3`` (Hive style,
        so ``pyarrow.dataset`` and DuckDB's ``hive_partitioning`` read it as a column)."""
        return f"partition={self.index}"


@dataclass
class RunContext:
    """What a connector gets when it opens: the run's settings, and what the pipeline
    knows about the rows this source or sink handles."""

    clock: Clock
    batch_size: int = 8192
    batch_timeout_us: int = 10_000
    file_batch_size: int = 262_144
    base_dir: str = "."
    on_error: str = "dead_letter"
    allowed_paths: AllowedPaths | None = None  # every file path goes through sqlstream.paths.resolve_path
    #: sinks: the sources feeding this sink that acknowledge their input (see SourceConnector.acknowledges)
    acknowledging_sources: tuple[str, ...] = ()
    #: sinks: the columns that identify a row of a final window result (window bounds and
    #: group key), for sinks that derive message ids from them; None if not all selected
    row_key_columns: list[str] | None = None
    #: sinks of updating results: the columns identifying a row of the result (the group
    #: key of an unwindowed GROUP BY), for sinks that upsert by them; None if unknown
    upsert_key_columns: list[str] | None = None
    #: sinks: where rows the destination rejects go, as dead letters (None: nowhere)
    dead_letter: Callable[[list[DeadLetter]], None] | None = None
    #: sources: about how long (event time, µs) windows and joins hold this source's rows
    #: before results go out (0: no state); sources that ack size their timeouts by it
    retention_horizon_us: int = 0
    #: ``connector = 'stdout'``: a richer renderer from the CLI (live tables on a
    #: terminal), ``(sink_name, schema, format) -> SinkWriter``; None prints plainly
    stdout_renderer: Callable[[str, pa.Schema, str], "SinkWriter"] | None = None
    #: the run takes checkpoints (``SET checkpoint_dir``): sinks commit per epoch
    #: (``SinkWriter.prepare_commit``/``commit``), sources report ``position``
    checkpointing: bool = False
    #: sources of a resumed run: where to start reading, as ``SourceReader.position``
    #: returned it when the checkpoint was taken (None: from the start)
    start_position: dict | None = None
    #: sources of a checkpointed run: about how often (µs) checkpoints are taken; input is
    #: acknowledged when the checkpoint that read it commits, so sources that ack size their
    #: timeouts by it instead of by ``retention_horizon_us`` (None: not known)
    checkpoint_interval_us: int | None = None
    #: sinks: the rows carry their source messages' ids (SOURCE_ID_COLUMN, a stateless query
    #: over a source with ``hidden_fields``), for sinks that derive message ids from them
    source_ids: bool = False
    #: ``connector = 'memory'`` (``sqlstream.testing``): streams by name, collected outputs by sink
    memory_streams: dict[str, Any] = field(default_factory=dict)
    memory_outputs: dict[str, list[pa.RecordBatch]] = field(default_factory=dict)
    #: a worker's run of one partition of a partitioned source (docs/scale-out.md): that
    #: source reads only this partition, file sinks write its own part-file series
    partition: "Partition | None" = None


class SourceReader(ABC):
    """Reads one source during one run, on the driver thread. Subclasses implement ``poll``.

    Non-blocking: no method waits for input. ``poll`` returns the rows ready now, or
    None; the driver sleeps until ``next_wakeup`` (or until another source has rows)
    and asks again. A reader doing I/O in the background keeps it on its own thread or
    event loop and hands results over in ``poll``; an error there is raised by the
    next ``poll``. ``close`` is called once when the run ends, whatever its outcome.
    """

    #: True for a source with an end (files, a generator with max_rows): the run ends
    #: once every bounded source is ``exhausted`` and nothing unbounded is read
    bounded: bool = False

    @abstractmethod
    def poll(self) -> SourceBatch | None:
        """Rows ready now, or None. Never blocks for long (a bounded read of one block
        is fine; waiting for input is not). The batch has the connector's declared
        schema plus its ``hidden_fields``; records that could not be decoded come back
        as its ``dead_letters``; ``ack`` is set when the source ``acknowledges``."""

    @property
    def exhausted(self) -> bool:
        """True once a bounded source has returned all of its rows."""
        return False

    def next_wakeup(self) -> float | None:
        """Monotonic time at which ``poll`` may have rows; None = as soon as possible."""
        return None

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release what the reader holds (files, connections). Unacked input is left for
        redelivery."""

    def position(self) -> dict | None:
        """Where reading stands just after the last row ``poll`` returned, as JSON values
        (file and byte offset, generator row, stream sequence): a checkpoint stores it and
        a resumed run opens the reader with it as ``RunContext.start_position``, to read
        exactly what follows. None: the source cannot replay (core NATS)."""
        return None

    def status(self) -> dict[str, Any]:
        """Connector-specific counters for SHOW METRICS."""
        return {}

    def problems(self) -> list[str]:
        """What went wrong while reading that the run summary must show (e.g. dropped
        messages, outages), in words; empty when all is well."""
        return []

    #: seconds input may wait for its acknowledgement, without the acks advancing,
    #: before the runtime calls ``ack_stalled`` (None: the reader does not ack)
    ack_stall_after_s: float | None = None

    def ack_stalled(self, waited_s: float, holders: list[str]) -> None:  # noqa: B027 (optional hook)
        """Acks have not advanced for ``waited_s`` because of ``holders`` (in words, from
        the runtime): warn once, with what the reader knows too, and count it."""

    #: True for a reader that holds received input nobody can replay (core NATS): on a
    #: graceful stop the runtime calls ``stop_receiving``, takes ``drain`` batches
    #: through the pipeline until it returns None or a deadline passes, then ``abandon``
    drains_on_stop: bool = False

    def stop_receiving(self) -> None:  # noqa: B027 (optional hook)
        """Graceful stop, first step: receive nothing new (e.g. unsubscribe)."""

    def drain(self) -> SourceBatch | None:
        """Graceful stop: the next batch of what was received, ready or not; None when empty."""
        return None

    def abandon(self, deadline_s: float) -> int:
        """Graceful stop, last step: count what is still unprocessed after the drain
        deadline as lost (and report it in ``problems``); returns that count."""
        return 0


class SourceConnector(ABC):
    """A configured source. Subclasses set ``name`` and ``options``, implement ``open``
    and declare their capabilities; ``validate`` adds checks across options."""

    name: ClassVar[str] = ""
    options: ClassVar[tuple[OptionSpec, ...]] = ()
    #: metadata columns the connector fills (name → Arrow type): a declared column of
    #: one of these names is filled from the message, not decoded from its payload.
    #: Names start with '_'; no other source may declare a column another connector fills
    metadata_columns: ClassVar[Mapping[str, pa.DataType]] = {}
    #: options naming a local file, directory or glob (checked against allowed_paths at CREATE)
    path_options: ClassVar[tuple[str, ...]] = ()
    #: True when the source acknowledges its input once every sink holds the rows durably
    #: (JetStream): a later run does not read again what an earlier run's output holds.
    #: A connector whose answer depends on its options overrides this with a property.
    acknowledges: bool = False
    #: True when the reader gives each row's watermark and the source's (SourceBatch
    #: ``row_watermarks``, ``watermark``) instead of the runtime deriving them from event
    #: times: an exchange between workers, whose watermark is its upstreams' least
    external_watermark: bool = False
    #: True when the connector can back a TABLE (bounded reference data read whole)
    can_back_table: ClassVar[bool] = False
    #: True when a reader can start at a ``position`` an earlier reader reported (files,
    #: the generator, JetStream): a checkpointed run resumes it exactly. False (core
    #: NATS, MQTT QoS 0): what arrives while the pipeline is down is lost, said at start
    replayable: ClassVar[bool] = False

    def __init__(self, source_name: str, schema: pa.Schema, options: dict[str, Any]):
        self.source_name = source_name
        self.schema = schema
        self.config = options

    def replay_gap(self) -> str | None:
        """What a checkpointed run of a source that is not ``replayable`` loses across a
        restart, in words, for the runtime to say at start (None: the source replays)."""
        if self.replayable:
            return None
        return (f"source '{self.source_name}' cannot replay: messages published while the pipeline is down are "
                "lost, and a resumed run reads only what arrives after it started")

    @property
    def refresh_interval_us(self) -> int | None:
        """A TABLE it backs is read again this often (µs) while the run goes on, and the
        lookup joins switch to the new rows between two driver steps; None: read once.
        The runtime opens a fresh reader for each read, on a background thread."""
        return None

    @property
    def bounded(self) -> bool:
        """True when this configured source ends by itself (a file, a generator with
        ``max_rows``); pipeline tests run such sources as they are."""
        return self.can_back_table

    def check_table(self, where: Location | None) -> None:
        """Raise ConnectorError unless this configured source can back a TABLE."""
        if not self.can_back_table:
            raise ConnectorError(
                f"a TABLE is bounded reference data; connector '{self.name}' is a stream",
                location=where,
                hint="use CREATE SOURCE for streams",
            )

    @classmethod
    def all_options(cls) -> tuple[OptionSpec, ...]:
        return COMMON_SOURCE_OPTIONS + cls.options

    @classmethod
    def create(
        cls, source_name: str, schema: pa.Schema, raw: dict[str, RawOption], where: Location | None
    ) -> "SourceConnector":
        options = validate_options(cls.name, cls.all_options(), raw, where=where)
        for column in schema.names:
            if column.startswith("_") and column not in cls.metadata_columns:
                fillers = metadata_column_fillers(column)
                if fillers:
                    raise ConnectorError(
                        f"column '{column}' is a metadata column, which connector '{cls.name}' does not fill",
                        location=where,
                        hint=f"metadata columns are filled by the {', '.join(fillers)} connector; rename the column",
                    )
        connector = cls(source_name, schema, options)
        connector.validate(where)
        return connector

    def validate(self, where: Location | None) -> None:  # noqa: B027 (optional hook)
        """Cross-option checks at CREATE time; raise ConnectorError."""

    @property
    def partition_key(self) -> str | None:
        """The column whose value chooses a row's partition, for a partitioned source
        (``partitions = P``): a worker runs each partition alone, so state keyed by it
        stays in one partition. None: not partitioned."""
        return None

    def hidden_fields(self) -> tuple[pa.Field, ...]:
        """Hidden columns (e.g. SOURCE_ID_COLUMN) appended to every batch after the declared ones."""
        return ()

    @abstractmethod
    def open(self, ctx: RunContext) -> SourceReader:
        """A reader for one run. Connects and checks what only a run can (servers,
        files); raise ConnectorError for what the user must fix."""

    def describe(self) -> str:
        """One line for EXPLAIN and SHOW SOURCES."""
        return self.name


class SinkWriter(ABC):
    """Writes one sink's rows during one run, on the driver thread. Subclasses implement
    ``write``; a writer that buffers overrides ``flush`` and ``durable_rows``."""

    #: True: ``write`` also gets SOURCE_ID_COLUMN as the last column when the rows carry it
    accepts_source_ids: bool = False

    def output_path(self) -> str | None:
        """Where the rows go, for the run summary: a local file or directory; None (the
        default) for a destination without one (stdout, a message subject)."""
        return None

    @abstractmethod
    def write(self, batch: pa.RecordBatch) -> None:
        """Take a batch of the schema the sink was opened with (changelog sinks: with
        the op column). May buffer; must not block for long."""

    def flush(self) -> None:  # noqa: B027 (optional hook)
        """Push buffered rows out."""

    def durable_rows(self, written: int) -> int:
        """Make what was written durable where possible and return how many of the
        ``written`` rows are (input is acknowledged only up to there). Default: all,
        after ``flush``; a writer that commits whole files later reports fewer."""
        self.flush()
        return written

    # -- checkpoints (RunContext.checkpointing) -------------------------------------------
    #: what a checkpointed run guarantees for this sink's output after a crash:
    #: 'exactly-once' (each epoch's rows appear once: committed with the checkpoint),
    #: 'effectively-once' (the destination drops replayed rows, e.g. by message id) or
    #: 'at-least-once' (rows of the epoch being written when the crash came appear again)
    delivery: ClassVar[str] = "at-least-once"

    def prepare_commit(self, epoch: int) -> dict | None:
        """Checkpoint, first step: make every row written in ``epoch`` durable, not yet
        visible where visibility can wait (hidden part files), and say what ``commit``
        needs to publish it, as JSON values stored in the checkpoint. Default: flush; the
        rows are visible already (at-least-once)."""
        self.flush()
        return None

    def commit(self, epoch: int, prepared: dict | None) -> None:  # noqa: B027 (optional hook)
        """Checkpoint, after the state is saved: publish ``epoch`` (e.g. an atomic manifest
        entry). Idempotent: committing an epoch already committed does nothing, so a run
        that crashed between the two steps can finish the job (``recover``)."""

    def recover(self, epoch: int, prepared: dict | None) -> None:  # noqa: B027 (optional hook)
        """A resumed run, right after ``open``: ``epoch`` is the checkpoint it resumes from
        and ``prepared`` what ``prepare_commit`` returned for it. Commit that epoch if it
        is not yet, and remove what later, unfinished epochs left behind (their rows are
        produced again)."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """The run ended cleanly: commit and release everything."""

    def abort(self) -> None:
        """The run failed: release what is open without committing what is pending.
        Default: ``close``."""
        self.close()


class SinkConnector(ABC):
    """A configured sink. Subclasses set ``name`` and ``options`` and implement ``open``."""

    name: ClassVar[str] = ""
    options: ClassVar[tuple[OptionSpec, ...]] = ()
    #: options naming a local file or directory (checked against allowed_paths at CREATE)
    path_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, sink_name: str, options: dict[str, Any]):
        self.sink_name = sink_name
        self.config = options
        self.option_locations: dict[str, Location] = {}

    @classmethod
    def all_options(cls) -> tuple[OptionSpec, ...]:
        return (OptionSpec("connector", required=True, doc="connector name"),) + cls.options

    @classmethod
    def create(cls, sink_name: str, raw: dict[str, RawOption], where: Location | None) -> "SinkConnector":
        options = validate_options(cls.name, cls.all_options(), raw, where=where)
        connector = cls(sink_name, options)
        connector.option_locations = {key: option.location for key, option in raw.items() if option.location}
        connector.validate(where)
        return connector

    def located(self, option: str, where: Location | None) -> Location | None:
        """Where ``option`` was written, else ``where`` (the statement)."""
        return self.option_locations.get(option, where)

    def validate(self, where: Location | None) -> None:  # noqa: B027 (optional hook)
        """Cross-option checks at CREATE time; raise ConnectorError."""

    def check_inputs(self, acknowledging: tuple[str, ...], where: Location | None) -> None:  # noqa: B027 (optional hook)
        """Checks once the sink's query is known (CREATE SINK ... AS, INSERT INTO) and again
        at ``open``: ``acknowledging`` names the sources it reads that acknowledge their
        input. Raise ConnectorError for a combination that cannot work."""

    def check_schema(self, schema: pa.Schema, where: Location | None) -> None:  # noqa: B027 (optional hook)
        """Checks once the rows the sink receives are known (column names in a subject
        template, ...), so that ``sqlstream check`` finds what ``open`` would refuse.
        Raise ConnectorError."""

    @abstractmethod
    def open(self, schema: pa.Schema, ctx: RunContext) -> SinkWriter:
        """A writer for one run, of rows of ``schema``."""

    def describe(self) -> str:
        """One line for EXPLAIN and SHOW SINKS."""
        return self.name
