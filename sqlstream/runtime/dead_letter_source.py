"""The ``sqlstream_dead_letter`` stream: dead letters of the running pipeline, readable
by queries like any source (event time ``at``).

The :class:`~sqlstream.runtime.builder.PipelineBuilder` makes the stream's reader
itself (it is fed by the run's dead-letter output and ends with the run's other
sources); :class:`DeadLetterSource` is its entry in the catalog.
"""

from __future__ import annotations

import collections
import threading
from typing import Callable

import pyarrow as pa

from sqlstream.connectors.base import RunContext, SourceBatch, SourceConnector, SourceReader

__all__ = ["DeadLetterSource", "DeadLetterReader"]


class DeadLetterReader(SourceReader):
    """Dead letters offered by the run; exhausted once none is queued and
    ``upstream_done()`` says every other source of the run has ended."""

    def __init__(self, upstream_done: Callable[[], bool]):
        self._queue: collections.deque[pa.RecordBatch] = collections.deque()
        self._lock = threading.Lock()
        self.upstream_done = upstream_done

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

    @property
    def bounded(self) -> bool:
        return True  # it ends with the sources upstream

    def open(self, ctx: RunContext) -> SourceReader:
        """Outside a run there is nothing upstream: no dead letters, and already ended."""
        return DeadLetterReader(upstream_done=lambda: True)

    def describe(self) -> str:
        return "dead letters of the running pipeline"
