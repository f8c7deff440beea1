"""UNION ALL of streams and LIMIT."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from sqlstream.hidden import WM_COLUMN
from sqlstream.operators.base import Operator

__all__ = ["UnionOperator", "LimitOperator"]


class UnionOperator(Operator):
    """Rows of every input, in the union's schema. A row's ``__wm`` becomes the union's
    watermark before it: the minimum of its own and the other live inputs' current
    watermarks, and never below what the union already passed downstream (a row of an
    input that was idle, or lagging, is late when it is behind that)."""

    name = "union"

    def __init__(self, ports: int, schema: pa.Schema):
        super().__init__(ports)
        self.schema = schema

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        columns = []
        for i, field in enumerate(self.schema):
            if field.name == WM_COLUMN:
                own = batch.column(WM_COLUMN).to_numpy(zero_copy_only=False)
                others = [
                    wm for p, (wm, ended, idle) in enumerate(zip(self.port_watermarks, self.port_ended, self.port_idle))
                    if p != port and not ended and not idle
                ]
                stamps = np.minimum(own, min(others)) if others else own
                columns.append(pa.array(np.maximum(stamps, self.watermark)))
            else:
                column = batch.column(i)
                columns.append(column.cast(field.type) if column.type != field.type else column)
        self.emit(pa.RecordBatch.from_arrays(columns, schema=self.schema))


class LimitOperator(Operator):
    """Passes the first ``count`` rows, then ends its output."""

    name = "limit"

    def __init__(self, count: int):
        super().__init__()
        self.remaining = count
        self.satisfied = count <= 0

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        if self.satisfied:
            return
        if batch.num_rows >= self.remaining:
            batch = batch.slice(0, self.remaining)
        self.remaining -= batch.num_rows
        self.emit(batch)
        if self.remaining <= 0:
            self.satisfied = True
            self.emit_end()

    def state_values(self) -> dict:
        return {"remaining": self.remaining, "satisfied": self.satisfied}

    def load_state(self, values: dict, tables: dict[str, pa.Table]) -> None:
        self.remaining = values["remaining"]
        self.satisfied = values["satisfied"]

    def on_watermark(self, watermark: int) -> None:
        if not self.satisfied:
            self.emit_watermark(watermark)

    def on_end(self) -> None:
        if not self.satisfied:
            self.satisfied = True
            self.emit_end()
