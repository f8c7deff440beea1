"""The connector conformance kit: what a plugin's own tests call on its connectors.

:func:`check_source_connector` and :func:`check_sink_connector` drive a connector the
way the runtime does — create it from options as ``CREATE`` would, open it, poll or
write, close it — and fail with an :class:`AssertionError` that says which rule of
:mod:`sqlstream.connectors.base` was broken:

* options are validated at CREATE: an unknown option is a ConnectorError at its location;
* ``poll`` never blocks (each call returns within ``poll_bound_s``);
* batches carry the declared columns, in order, and ``raw_count`` counts every record;
* a bounded reader ends (``exhausted``) and returns None after;
* a bad input (options the plugin supplies that point at bad records) comes back as
  dead letters, and the run goes on;
* a source that ``acknowledges`` puts an ``ack`` on every batch with rows (the kit
  calls it only after its sink flushed, as the runtime does); one that does not, none;
* a sink's ``durable_rows`` is at most what was written; ``close`` is idempotent
  (readers and writers), ``abort`` after a failed write does not raise.

Both return what went through (a :class:`pyarrow.Table`) for the test's own checks.

>>> import pyarrow as pa
>>> from sqlstream.connectors import SOURCE_CONNECTORS
>>> schema = pa.schema([("id", pa.int64())])
>>> table = check_source_connector(SOURCE_CONNECTORS["generator"], {"max_rows": 5}, schema)
>>> table.num_rows
5
"""

from __future__ import annotations

import time
from typing import Any, Callable

import pyarrow as pa

from sqlstream.connectors import DeadLetter, RunContext, SinkConnector, SourceBatch, SourceConnector
from sqlstream.connectors.options import RawOption
from sqlstream.errors import ConnectorError, Location
from sqlstream.runtime.clock import WallClock

__all__ = ["check_source_connector", "check_sink_connector"]

_WHERE = Location("<conformance>", 1, 1)
_UNKNOWN = "no_such_option_xyz"


def _raw(cls: type, options: dict[str, Any]) -> dict[str, RawOption]:
    raw = {"connector": RawOption(cls.name, _WHERE)}
    for column, (key, value) in enumerate(options.items(), start=2):
        raw[key] = RawOption(value, Location("<conformance>", 1, column))
    return raw


def _check_unknown_option(create: Callable[[dict[str, RawOption]], Any], cls: type, options: dict[str, Any]) -> None:
    raw = _raw(cls, options)
    where = Location("<conformance>", 9, 9)
    raw[_UNKNOWN] = RawOption("1", where)
    try:
        create(raw)
    except ConnectorError as error:
        assert _UNKNOWN in error.message, (
            f"{cls.__qualname__}: the error for an unknown option should name it, got: {error.message}")
        assert error.location is not None, (
            f"{cls.__qualname__}: the error for unknown option '{_UNKNOWN}' has no location (pass where= on)")
        return
    raise AssertionError(
        f"{cls.__qualname__}: an unknown option ('{_UNKNOWN}') was accepted at CREATE; options must be validated "
        "there (do not override create, or call validate_options)")


def _context(base_dir: str) -> RunContext:
    return RunContext(clock=WallClock(), base_dir=base_dir, batch_size=1024)


def _timed(what: str, bound_s: float, call: Callable[[], Any]) -> Any:
    start = time.monotonic()
    result = call()
    took = time.monotonic() - start
    assert took <= bound_s, f"{what} took {took:.3f}s; it must not block (bound: {bound_s}s)"
    return result


def _close_again(label: str, close: Callable[[], None]) -> None:
    try:
        close()
    except Exception as error:  # noqa: BLE001 - any exception here breaks the rule
        raise AssertionError(f"{label}: close() is not idempotent: a second call raised "
                             f"{type(error).__name__}: {error}") from error


def check_source_connector(cls: type, options: dict[str, Any], schema: pa.Schema, *,
                           bad_input: dict[str, Any] | None = None, poll_bound_s: float = 1.0,
                           run_for_s: float = 10.0, base_dir: str = ".") -> pa.Table:
    """Check source connector ``cls`` configured with ``options`` (as in ``WITH (...)``,
    without ``connector``) for columns ``schema``; ``bad_input``: options whose input
    holds at least one bad record. A bounded source is read to its end (within
    ``run_for_s``); an unbounded one for ``run_for_s``. Returns the rows read."""
    assert isinstance(cls, type) and issubclass(cls, SourceConnector), f"{cls!r} is not a SourceConnector subclass"
    assert cls.name, f"{cls.__qualname__} has no name"

    def create(raw: dict[str, RawOption]) -> SourceConnector:
        return cls.create("conformance", schema, raw, _WHERE)

    _check_unknown_option(create, cls, options)
    table, dead = _read(cls, create(_raw(cls, options)), schema, poll_bound_s, run_for_s, base_dir)
    if bad_input is not None:
        _, dead = _read(cls, create(_raw(cls, bad_input)), schema, poll_bound_s, run_for_s, base_dir)
        assert dead, f"{cls.__qualname__}: the bad input gave no dead letters (bad records must become dead letters)"
        for letter in dead:
            assert isinstance(letter, DeadLetter), f"{cls.__qualname__}: a dead letter is a {type(letter).__name__}"
            assert letter.reason and letter.detail, f"{cls.__qualname__}: dead letter without reason or detail: {letter}"
    return table


def _read(cls: type, connector: SourceConnector, schema: pa.Schema, poll_bound_s: float, run_for_s: float,
          base_dir: str) -> tuple[pa.Table, list[DeadLetter]]:
    label = cls.__qualname__
    reader = connector.open(_context(base_dir))
    batches: list[pa.RecordBatch] = []
    dead: list[DeadLetter] = []
    acks: list[Callable[[], None]] = []
    deadline = time.monotonic() + run_for_s
    try:
        while time.monotonic() < deadline:
            if reader.bounded and reader.exhausted:
                break
            result = _timed(f"{label}: poll()", poll_bound_s, reader.poll)
            if result is None:
                wakeup = reader.next_wakeup()
                assert wakeup is None or isinstance(wakeup, float | int), f"{label}: next_wakeup() returned {wakeup!r}"
                time.sleep(min(0.01, max(0.0, (wakeup or 0) - time.monotonic())))
                continue
            assert isinstance(result, SourceBatch), f"{label}: poll() returned {type(result).__name__}, not SourceBatch"
            rows = 0 if result.batch is None else result.batch.num_rows
            if result.batch is not None:
                names = result.batch.schema.names[: len(schema)]
                assert names == schema.names, f"{label}: batch columns {result.batch.schema.names}, declared {schema.names}"
                batches.append(result.batch.select(schema.names))
            dead += result.dead_letters
            assert result.raw_count >= rows + len(result.dead_letters), (
                f"{label}: raw_count {result.raw_count} < {rows} rows + {len(result.dead_letters)} dead letters")
            if connector.acknowledges and rows:
                assert callable(result.ack), f"{label}: the source acknowledges, but a batch of {rows} rows has no ack"
                acks.append(result.ack)
            elif not connector.acknowledges:
                assert result.ack is None, f"{label}: the source does not declare acknowledges, but its batch has an ack"
        if reader.bounded:
            assert reader.exhausted, f"{label}: a bounded reader did not end (exhausted) within {run_for_s}s"
            after = _timed(f"{label}: poll() after the end", poll_bound_s, reader.poll)
            assert after is None, f"{label}: poll() after exhausted returned {after!r}, expected None"
        for ack in acks:  # the sink has flushed: now, and only now, acknowledge
            ack()
    finally:
        reader.close()
    _close_again(label, reader.close)
    table = pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()
    return table, dead


def check_sink_connector(cls: type, options: dict[str, Any], batches: list[pa.RecordBatch] | pa.Table, *,
                         read_back: Callable[[], pa.Table] | None = None, write_bound_s: float = 1.0,
                         base_dir: str = ".") -> None:
    """Check sink connector ``cls`` configured with ``options`` (without ``connector``)
    by writing ``batches``; ``read_back()``, when given, returns what the sink wrote
    (e.g. the file's rows), which must be the rows written."""
    assert isinstance(cls, type) and issubclass(cls, SinkConnector), f"{cls!r} is not a SinkConnector subclass"
    assert cls.name, f"{cls.__qualname__} has no name"
    label = cls.__qualname__
    table = batches if isinstance(batches, pa.Table) else pa.Table.from_batches(batches)

    def create(raw: dict[str, RawOption]) -> SinkConnector:
        return cls.create("conformance", raw, _WHERE)

    _check_unknown_option(create, cls, options)
    writer = create(_raw(cls, options)).open(table.schema, _context(base_dir))
    written = 0
    try:
        for batch in table.to_batches():
            _timed(f"{label}: write()", write_bound_s, lambda b=batch: writer.write(b))
            written += batch.num_rows
        writer.flush()
        durable = writer.durable_rows(written)
        assert isinstance(durable, int) and 0 <= durable <= written, (
            f"{label}: durable_rows({written}) returned {durable!r}; expected 0..{written}")
        writer.close()
    except BaseException:
        writer.abort()
        raise
    _close_again(label, writer.close)
    if read_back is not None:
        back = read_back()
        assert back.num_rows == table.num_rows, f"{label}: wrote {table.num_rows} rows, read back {back.num_rows}"
        assert back.select(table.schema.names).cast(table.schema).to_pylist() == table.to_pylist(), (
            f"{label}: the rows read back differ from the rows written")
    failed = create(_raw(cls, options)).open(table.schema, _context(base_dir))
    failed.abort()  # a failed run releases without raising
