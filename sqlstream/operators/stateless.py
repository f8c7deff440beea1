"""The stateless part of a query, per micro-batch: Python/model functions in one
vectorized step, then projection and filter on DataFusion.

A batch that DataFusion rejects (a CAST of a value that does not fit, a division by
zero) is bisected: the rows that fail alone go to the dead-letter output (reason
``type``) and the rest continue, so results never depend on batch boundaries.

A program that only picks and renames columns (e.g. ``SELECT "__udf0" AS p``
after a model call) is applied without DataFusion: the planner hands over which input
column each output column is (``projection``) and the arrays are passed through.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from sqlstream.connectors.dead_letters import rows_as_dead_letters
from sqlstream.errors import DataFusionError, ExecutionError
from sqlstream.operators.base import Operator
from sqlstream.operators.datafusion_program import DataFusionProgram

__all__ = ["StatelessOperator", "FunctionStats"]


@dataclass
class FunctionStats:
    """One Python/model function's calls in one operator (``udf/step.py`` counts them):
    vectorized calls made, rows passed in, seconds spent in the function, rows it failed on."""

    calls: int = 0
    rows: int = 0
    seconds: float = 0.0
    failed_rows: int = 0


class StatelessOperator(Operator):
    name = "stateless"

    def __init__(self, program: DataFusionProgram, udf_step, on_error: str, label: str,
                 projection: Sequence[int] | None = None):
        super().__init__()
        self.program = program
        self.udf_step = udf_step
        self.on_error = on_error
        self.label = label
        self.projection = projection  # input column indexes when the program only picks columns
        self.function_stats: dict[str, FunctionStats] = {}  # by function name, filled by the UDF step

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        if self.udf_step is not None:
            batch = self.udf_step.apply(batch, self)
            if batch.num_rows == 0:
                return
        if self.projection is not None and batch.schema.names == self.program.input_schema.names:
            try:
                self.emit(pa.RecordBatch.from_arrays([batch.column(i) for i in self.projection], schema=self.program.schema))
                return
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
                pass  # a type differs from the plan's: let DataFusion convert it
        try:
            out = self.program.run(batch)
        except DataFusionError as error:
            if self.on_error == "fail":
                raise ExecutionError(f"{self.label}: {error.message}") from error
            out = self._isolate(batch)
        self.emit(out)

    def _isolate(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        out, bad = self.program.run_isolating(batch)
        if bad and self.dead_letter is not None:
            details = [str(getattr(error, "message", error)) for _, error in bad]
            letters = rows_as_dead_letters(batch, [i for i, _ in bad], self.label, "type", details)
            self.dead_letter(letters)  # the runtime's callback writes, counts (skip) or fails
        return out
