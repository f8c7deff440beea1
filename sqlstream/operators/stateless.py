"""The stateless part of a query, per micro-batch: Python/model functions in one
vectorized step, then projection and filter on DataFusion.

A batch that DataFusion rejects (a CAST of a value that does not fit, a division by
zero) is bisected: the rows that fail alone go to the dead-letter output (reason
``type``) and the rest continue, so results never depend on batch boundaries.
"""

from __future__ import annotations

import pyarrow as pa

from sqlstream.batches import drop_hidden
from sqlstream.connectors.base import DeadLetter
from sqlstream.connectors.encode import encode_json_lines
from sqlstream.errors import ExecutionError
from sqlstream.failure_isolation import isolate_failures
from sqlstream.operators.base import Operator
from sqlstream.operators.datafusion_program import DataFusionError, DataFusionProgram

__all__ = ["StatelessOperator"]


class StatelessOperator(Operator):
    name = "stateless"

    def __init__(self, program: DataFusionProgram, udf_step, on_error: str, label: str):
        super().__init__()
        self.program = program
        self.udf_step = udf_step
        self.on_error = on_error
        self.label = label

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        if self.udf_step is not None:
            batch = self.udf_step.apply(batch, self)
            if batch.num_rows == 0:
                return
        try:
            out = self.program.run(batch)
        except DataFusionError as error:
            if self.on_error == "fail":
                raise ExecutionError(f"{self.label}: {error.message}") from error
            out = self._isolate(batch)
        self.emit(out)

    def _isolate(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        good, bad = isolate_failures(batch.num_rows, lambda s, e: self.program.run(batch.slice(s, e - s)))
        if bad and self.dead_letter is not None:
            rows = batch.take(pa.array([i for i, _ in bad]))
            raws = encode_json_lines(drop_hidden(rows)).decode("utf-8").splitlines()
            letters = [
                DeadLetter(self.label, "type", str(getattr(error, "message", error)), raw)
                for (_, error), raw in zip(bad, raws)
            ]
            if self.on_error != "skip":
                self.dead_letter(letters)
        batches = [b for _, _, b in good if b.num_rows]
        if not batches:
            return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in self.program.schema], schema=self.program.schema)
        return pa.Table.from_batches(batches, schema=self.program.schema).combine_chunks().to_batches()[0]
