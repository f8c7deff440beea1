"""The ``sqlstream_dead_letter`` stream: dead letters of the running pipeline, readable
by queries like any source (event time ``at``)."""

from __future__ import annotations

import collections
import threading

import pyarrow as pa

from sqlstream.connectors.base import RunContext, SourceBatch, SourceConnector, SourceReader

__all__ = ["DeadLetterSource"]


class _DeadLetterReader(SourceReader):
    def __init__(self):
        self._queue: collections.deque[pa.RecordBatch] = collections.deque()
        self._lock = threading.Lock()
        self.upstream_done = lambda: False

    def offer(self, batch: pa.RecordBatch) -> None:
        with self._lock:
            self._queue.append(batch)

    def poll(self) -> SourceBatch | None:
        with self._lock:
            if not self._queue:
                return None
            batches = list(self._queue)
            self._queue.clear()
        table = pa.Table.from_batches(batches).combine_chunks()
        batch = table.to_batches()[0]
        return SourceBatch(batch, raw_count=batch.num_rows)

    @property
    def exhausted(self) -> bool:
        with self._lock:
            empty = not self._queue
        return empty and self.upstream_done()


class DeadLetterSource(SourceConnector):
    name = "internal"

    def open(self, ctx: RunContext) -> SourceReader:
        return _DeadLetterReader()

    def describe(self) -> str:
        return "dead letters of the running pipeline"
