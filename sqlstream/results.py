"""``QueryResult``: what :meth:`Session.query` and :meth:`Session.sql` return.

It is an iterator of ``pyarrow.RecordBatch`` as the query produces them (an updating
result's batches carry ``__op``: ``+I``, ``-U``, ``+U``, ``-D``), and it also gathers
them into one table: :meth:`QueryResult.to_arrow` waits for the end of a bounded query
and gives its final table, the changelog folded (``changes=True``: every change as it
came); ``to_pandas``, ``to_polars`` and ``fetchall`` convert that table. An unbounded
query is sampled with :meth:`QueryResult.head` (the first ``n`` rows) or
:meth:`QueryResult.take` (what ``seconds`` of running gave); both stop the query.

The query starts on first use (iteration or any of the above) on a thread of its own,
and stops when its sources end, on LIMIT, on :meth:`QueryResult.close`, when the
session closes, or when the result is garbage collected.

>>> from sqlstream import Session
>>> with Session() as s:
...     _ = s.execute('''CREATE SOURCE nums (n BIGINT) WITH (connector = 'generator', max_rows = 4,
...                                                rows_per_second = 0, fields.n.kind = 'sequence')''')
...     s.sql("SELECT n % 2 AS odd, count(*) AS c FROM nums GROUP BY n % 2").fetchall()
[(0, 2), (1, 2)]
"""

from __future__ import annotations

import queue
import time
from typing import Any, Callable

import pyarrow as pa

from sqlstream.changelog import ArrowChangelogTable
from sqlstream.connectors.dead_letters import DEAD_LETTER_STREAM
from sqlstream.hidden import OP_COLUMN, is_real_watermark
from sqlstream.runtime.builder import query_result_schema
from sqlstream.runtime.driver_thread import DriverThread
from sqlstream.runtime.sink import END_OF_STREAM

__all__ = ["QueryResult"]

_POLL_S = 0.05


class QueryResult:
    """The result of one query: an iterator of record batches and the means to gather them.

    ``start(plan)`` starts the query's driver on a thread (the session does that);
    ``on_end(summary)`` is told how the run ended. ``timeout``: seconds iteration waits
    for a batch before ``queue.Empty``."""

    def __init__(self, plan, start: Callable[[Any], DriverThread], *, timeout: float | None = None,
                 on_end: Callable[[Any], None] | None = None):
        self.plan = plan
        self._start = start
        self._on_end = on_end
        self.timeout = timeout
        self.updating: bool = bool(plan.updating)
        #: the schema of the batches as they come (``__op`` first for an updating result)
        self.changes_schema: pa.Schema = query_result_schema(plan)
        #: the schema of the result table (no ``__op``)
        self.schema: pa.Schema = pa.schema([f for f in self.changes_schema if f.name != OP_COLUMN])
        self.rows_received = 0  # rows (changes, for an updating result) read so far
        self._running: DriverThread | None = None
        self._ended = False  # the query's sources ended (as opposed to stopped)
        self._closed = False

    # -- iterating ------------------------------------------------------------------------

    def __iter__(self) -> "QueryResult":
        return self

    def __next__(self) -> pa.RecordBatch:
        batch = self.poll(self.timeout, raise_on_timeout=True)
        if batch is None:
            raise StopIteration
        return batch

    def poll(self, timeout: float | None, *, raise_on_timeout: bool = False) -> pa.RecordBatch | None:
        """The next batch; None when the query ended (:attr:`done`) or, without
        ``raise_on_timeout``, when none came within ``timeout`` seconds."""
        running = self._started()
        if running is None:
            return None
        try:
            item = running.next_result(timeout)
        except queue.Empty:
            if raise_on_timeout:
                self.close()
                raise
            return None
        except BaseException:  # Ctrl-C while waiting: the query stops with it
            self.close()
            raise
        if item is END_OF_STREAM:
            self._ended = True
            self.close()
            return None
        self.rows_received += item.num_rows
        return item

    @property
    def done(self) -> bool:
        """The query ended or was stopped; nothing more will come."""
        return self._closed

    @property
    def watermark(self) -> int | None:
        """The lowest event-time watermark of the query's sources (µs), if it has one."""
        if self._running is None:
            return None
        marks = [s.watermark for s in self._running.driver.sources if s.name != DEAD_LETTER_STREAM]
        real = [m for m in marks if m is not None and is_real_watermark(m)]
        return min(real) if real else None

    def _started(self) -> DriverThread | None:
        if self._closed:
            return None
        if self._running is None:
            self._running = self._start(self.plan)
        return self._running

    def close(self) -> None:
        """Stop the query after the batch in flight (a no-op once it ended)."""
        if self._closed:
            return
        self._closed = True
        running = self._running
        if running is None:
            return
        running.stop()
        if running.summary is not None and self._on_end is not None:
            self._on_end(running.summary)
        running.raise_error()

    def __enter__(self) -> "QueryResult":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:  # a result dropped half-read stops its query, as a generator did
        try:
            if not self._closed and self._running is not None:
                self.close()
        except BaseException:  # noqa: BLE001 - nothing to tell from a finalizer
            pass

    # -- gathering ------------------------------------------------------------------------

    def to_arrow(self, *, changes: bool = False) -> pa.Table:
        """Run to the end (a bounded query) and give the final table: an updating result
        folded to its current rows (sorted), ``__op`` hidden. ``changes=True``: every
        batch as it came, with ``__op`` for an updating result."""
        return self._gather(lambda: False, changes)

    def head(self, n: int = 10, *, changes: bool = False) -> pa.Table:
        """The first ``n`` rows, then the query stops (for an unbounded query). An updating
        result runs until its folded table holds ``n`` rows (or the query ends)."""
        return self._gather(None, changes, limit=n)

    def take(self, seconds: float, *, changes: bool = False) -> pa.Table:
        """What the query gives in ``seconds`` (or until it ends), then it stops: the
        folded table, or every change with ``changes=True``."""
        deadline = time.monotonic() + seconds
        return self._gather(lambda: time.monotonic() >= deadline, changes)

    def fetchall(self) -> list[tuple]:
        """The final rows as tuples (see :meth:`to_arrow`)."""
        table = self.to_arrow()
        columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
        return list(zip(*columns)) if columns else [() for _ in range(table.num_rows)]

    def to_pandas(self, *, changes: bool = False):
        """The final table as a pandas DataFrame (needs pandas)."""
        _require("pandas", "to_pandas()")
        return self.to_arrow(changes=changes).to_pandas()

    def to_polars(self, *, changes: bool = False):
        """The final table as a polars DataFrame (needs polars)."""
        polars = _require("polars", "to_polars()")
        return polars.from_arrow(self.to_arrow(changes=changes))

    def _gather(self, expired: Callable[[], bool] | None, changes: bool, limit: int | None = None) -> pa.Table:
        batches: list[pa.RecordBatch] = []
        folded = ArrowChangelogTable(self.schema.names) if self.updating and not changes else None
        gathered = 0
        try:
            while not self.done:
                if expired is not None and expired():
                    break
                batch = self.poll(_POLL_S if expired is not None else None)
                if batch is None:
                    continue
                if folded is not None:
                    folded.apply_batch(batch)
                    gathered = len(folded) if limit is not None else 0
                else:
                    batches.append(batch)
                    gathered += batch.num_rows
                if limit is not None and gathered >= limit:
                    break
        finally:
            self.close()
        if folded is not None:
            table = _conform(folded.table(), self.schema)
        else:
            schema = self.changes_schema if changes else self.schema
            table = pa.Table.from_batches([b.select(schema.names) for b in batches], schema=schema)
        return table.slice(0, limit) if limit is not None else table

    def __repr__(self) -> str:
        state = "ended" if self._ended else "stopped" if self._closed else "running" if self._running else "not started"
        columns = ", ".join(f"{f.name} {f.type}" for f in self.schema)
        kind = "updating " if self.updating else ""
        return f"<QueryResult {kind}({columns}) {state}, {self.rows_received} rows read>"


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns and types (a folded empty table has null columns)."""
    arrays = []
    for field in schema:
        column = table.column(field.name)
        arrays.append(column if column.type == field.type else column.cast(field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _require(module: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        extra = " (or pip install 'sqlstream[notebook]')" if module == "pandas" else ""
        raise ImportError(f"{what} needs {module}, which is not installed: pip install {module}{extra}") from None
