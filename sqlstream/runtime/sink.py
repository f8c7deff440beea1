"""Terminal operators: a sink writes what reaches it through a connector's writer."""

from __future__ import annotations

import queue
from typing import Callable

import pyarrow as pa

from sqlstream.connectors.base import SinkWriter
from sqlstream.errors import ExecutionError
from sqlstream.hidden import SOURCE_ID_COLUMN
from sqlstream.operators.base import Operator

__all__ = ["SinkOperator", "PassThroughSinkOperator", "QueueWriter", "END_OF_STREAM"]

END_OF_STREAM = object()


class SinkOperator(Operator):
    """Writes batches (hidden columns dropped, cast to the sink's declared schema)."""

    name = "sink"

    def __init__(
        self, sink_name: str, schema: pa.Schema, open_writer: Callable[[pa.Schema], SinkWriter], input_names: list[str]
    ):
        super().__init__()
        self.sink_name = sink_name
        self.schema = schema
        self.input_names = input_names  # the query's columns, in the sink's column order
        self._open_writer = open_writer
        self.writer: SinkWriter | None = None
        self.rows_out = 0
        self.closed = False
        #: the run takes checkpoints: the writer commits per epoch, so the end of the input
        #: only flushes; the final checkpoint commits and the driver closes the writer
        self.checkpointed = False

    def output_path(self) -> str | None:
        """The file or directory this sink writes (None: no local file, or not opened)."""
        return self.writer.output_path() if self.writer is not None else None

    def open(self) -> None:
        if self.writer is None:
            self.writer = self._open_writer(self.schema)

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        self.open()
        source_ids = None
        if self.writer.accepts_source_ids and SOURCE_ID_COLUMN in batch.schema.names:
            source_ids = batch.column(SOURCE_ID_COLUMN)
        if batch.schema.names != self.input_names or batch.schema != self.schema:
            try:
                columns = [batch.column(name) for name in self.input_names]
                batch = pa.RecordBatch.from_arrays(
                    [c.cast(f.type) if c.type != f.type else c for c, f in zip(columns, self.schema)],
                    schema=self.schema,
                )
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                raise ExecutionError(f"sink '{self.sink_name}': rows do not fit its columns: {error}") from error
        if source_ids is not None:  # the writer takes the rows' source message ids as a last column
            batch = batch.append_column(pa.field(SOURCE_ID_COLUMN, source_ids.type), source_ids)
        self.writer.write(batch)
        self.rows_out += batch.num_rows

    def on_watermark(self, watermark: int) -> None:
        if self.writer is not None:
            self.writer.flush()

    def tick(self, now_us: int) -> None:
        self.flush()

    def flush(self) -> None:
        if self.writer is not None and not self.closed:
            self.writer.flush()

    def durable_rows(self) -> int:
        """How many of ``rows_out`` are durable (all, once the sink is closed)."""
        if self.writer is None or self.closed:
            return self.rows_out
        return self.writer.durable_rows(self.rows_out)

    def on_end(self) -> None:
        if self.checkpointed:
            self.flush()
        else:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.open()
        self.closed = True
        self.writer.close()

    def abort(self) -> None:
        """The run failed: the writer keeps what it committed and drops what is pending."""
        if self.closed or self.writer is None:
            return
        self.closed = True
        self.writer.abort()


class PassThroughSinkOperator(SinkOperator):
    """A sink whose writer takes the rows as they come, hidden columns included, and
    hears the watermark (``writer.watermark``) and idleness (``writer.set_idle``): an
    exchange between the workers of a group."""

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        self.open()
        self.writer.write(batch)
        self.rows_out += batch.num_rows

    def on_watermark(self, watermark: int) -> None:
        self.open()
        self.writer.watermark(watermark)
        super().on_watermark(watermark)

    def set_idle(self, idle: bool, port: int = 0) -> None:
        super().set_idle(idle, port)
        self.open()
        self.writer.set_idle(all(self.port_idle))


class QueueWriter(SinkWriter):
    """Hands batches to a consumer thread (``Session.query``, the REPL)."""

    def __init__(self, target: "queue.Queue"):
        self.target = target

    def write(self, batch: pa.RecordBatch) -> None:
        self.target.put(batch)

    def close(self) -> None:
        self.target.put(END_OF_STREAM)
