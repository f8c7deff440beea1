"""``connector = 'memory'``: rows pushed from Python into a source, batches collected
from (or handed to a function by) a sink. Tests feed it through
:class:`sqlstream.testing.TestSession`; :meth:`Session.source_from` and
:meth:`Session.sink_to` use it for data held in Python.

A :class:`MemoryStream` holds queued batches and watermark steps; it can also pull rows
from a Python iterator a chunk at a time (``feed``), so an endless generator works as
an unbounded source. The sink appends each batch to ``RunContext.memory_outputs[sink]``,
which is a list or anything with an ``append`` (:class:`BatchCallback` calls a function).
"""

from __future__ import annotations

import collections
import itertools
import threading
from typing import Any, Callable, Iterator

import pyarrow as pa

from sqlstream.connectors.base import (
    OptionSpec,
    RunContext,
    SinkConnector,
    SinkWriter,
    SourceBatch,
    SourceConnector,
    SourceReader,
)
from sqlstream.connectors.registry import register_sink, register_source

__all__ = ["MemoryStream", "MemorySource", "MemorySink", "BatchCallback"]


class MemoryStream:
    """Rows (and watermark steps) to feed a ``connector = 'memory'`` source.

    By default a run consumes what was pushed. ``replay=True``: each run reads every
    item from the start (data a session holds, queried many times). ``feed``: each run
    calls it for a fresh iterator of row dicts and pulls ``chunk_rows`` rows per poll
    (the source ends when the iterator does)."""

    def __init__(self, schema: pa.Schema | None = None, *, replay: bool = False,
                 feed: Callable[[], Iterator[dict]] | None = None, chunk_rows: int = 1024):
        self.schema = schema
        self.items: collections.deque = collections.deque()
        self.finished = False
        self.replay = replay
        self.feed = feed
        self.chunk_rows = chunk_rows
        self._lock = threading.Lock()

    def push(self, rows: list[dict] | pa.Table | pa.RecordBatch, batch_size: int | None = None) -> "MemoryStream":
        """Queue rows; with ``batch_size`` they arrive as several batches of that many."""
        if isinstance(rows, list):
            table = pa.Table.from_pylist(rows, schema=self.schema) if self.schema is not None else pa.Table.from_pylist(rows)
        elif isinstance(rows, pa.RecordBatch):
            table = pa.Table.from_batches([rows])
        else:
            table = rows
        if self.schema is not None and table.schema != self.schema:
            table = table.select(self.schema.names).cast(self.schema)
        size = batch_size or max(1, table.num_rows)
        with self._lock:
            for start in range(0, table.num_rows, size):
                chunk = table.slice(start, size).combine_chunks()
                batches = chunk.to_batches()
                self.items.append(("rows", batches[0] if batches else None))
        return self

    def advance_to(self, event_time_us: int) -> "MemoryStream":
        """Tell the source that event time reached ``event_time_us`` (moves its watermark)."""
        with self._lock:
            self.items.append(("time", event_time_us))
        return self

    def finish(self) -> "MemoryStream":
        """No more rows: the source ends (its watermark goes to +infinity)."""
        with self._lock:
            self.finished = True
        return self


class _MemoryReader(SourceReader):
    def __init__(self, stream: MemoryStream):
        self.stream = stream
        self._rows: Iterator[dict] | None = stream.feed() if stream.feed is not None else None
        with stream._lock:  # a replayed stream is read from a copy; otherwise the run consumes it
            self._items = collections.deque(stream.items) if stream.replay else stream.items

    def poll(self) -> SourceBatch | None:
        if self._rows is not None:
            return self._pull()
        with self.stream._lock:
            if not self._items:
                return None
            kind, value = self._items.popleft()
        if kind == "time":
            return SourceBatch(None, event_time_hint=value)
        return SourceBatch(value, raw_count=value.num_rows if value is not None else 0)

    def _pull(self) -> SourceBatch | None:
        rows = list(itertools.islice(self._rows, self.stream.chunk_rows))
        if len(rows) < self.stream.chunk_rows:
            self._rows = None  # the iterator ended
        if not rows:
            return None
        batch = pa.RecordBatch.from_pylist(rows, schema=self.stream.schema)
        return SourceBatch(batch, raw_count=batch.num_rows)

    @property
    def exhausted(self) -> bool:
        if self.stream.feed is not None:
            return self._rows is None
        with self.stream._lock:
            return self.stream.finished and not self._items


@register_source
class MemorySource(SourceConnector):
    """``connector = 'memory'``: rows pushed from Python through :class:`MemoryStream`."""

    name = "memory"
    options = (OptionSpec("stream", doc="name of the MemoryStream (default: the source name)"),)

    def open(self, ctx: RunContext) -> SourceReader:
        streams = ctx.memory_streams
        key = self.config.get("stream") or self.source_name
        if key not in streams:
            streams[key] = MemoryStream(self.schema)
        return _MemoryReader(streams[key])


class BatchCallback:
    """A sink target that hands each batch to ``function`` (``Session.sink_to``)."""

    def __init__(self, function: Callable[[pa.RecordBatch], Any]):
        self.function = function

    def append(self, batch: pa.RecordBatch) -> None:
        self.function(batch)


class _CollectingWriter(SinkWriter):
    def __init__(self, target: list | BatchCallback):
        self.target = target

    def write(self, batch: pa.RecordBatch) -> None:
        self.target.append(batch)


@register_sink
class MemorySink(SinkConnector):
    """``connector = 'memory'``: batches collected in ``Session.outputs[sink]`` (or handed
    to the function ``Session.sink_to`` put there)."""

    name = "memory"

    def open(self, schema: pa.Schema, ctx: RunContext) -> SinkWriter:
        outputs = ctx.memory_outputs
        return _CollectingWriter(outputs.setdefault(self.sink_name, []))
