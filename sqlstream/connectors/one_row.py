"""The one-row source a query without FROM reads (``SELECT 40 + 2``): one row of a
hidden column, then the source ends, so a constant query is bounded and answers once.

It is not registered under a connector name: the planner reads it for a SELECT without
FROM, and the session hands it to the run (see :data:`ONE_ROW_SOURCE`)."""

from __future__ import annotations

import pyarrow as pa

from sqlstream.connectors.base import RunContext, SourceBatch, SourceConnector, SourceReader

__all__ = ["ONE_ROW_SOURCE", "ONE_ROW_SCHEMA", "OneRowSource"]

#: the catalog name of the one-row source (hidden: users cannot see or name it)
ONE_ROW_SOURCE = "__one_row"
ONE_ROW_SCHEMA = pa.schema([pa.field("__one", pa.int8())])


class _OneRowReader(SourceReader):
    def __init__(self) -> None:
        self._given = False

    def poll(self) -> SourceBatch | None:
        if self._given:
            return None
        self._given = True
        batch = pa.record_batch([pa.array([1], pa.int8())], schema=ONE_ROW_SCHEMA)
        return SourceBatch(batch, raw_count=1)

    @property
    def exhausted(self) -> bool:
        return self._given


class OneRowSource(SourceConnector):
    """One row, then the end."""

    name = "internal"

    @property
    def bounded(self) -> bool:
        return True

    def describe(self) -> str:
        return "one row"

    def open(self, ctx: RunContext) -> SourceReader:
        return _OneRowReader()
