"""The shape of a join's output, shared by every join operator.

:class:`JoinLayout` says which input columns appear, in which order, the equality keys
of each side and the residual (non-equality) condition evaluated on DataFusion over
joined candidate rows; :class:`JoinOutput` builds output batches from row indices of
both sides (-1 = NULL padding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.hidden import OP_COLUMN, WM_COLUMN
from sqlstream.operators.datafusion_program import DataFusionProgram

__all__ = ["JoinSide", "JoinLayout", "JoinOutput", "with_unmatched", "null_rows", "row_indices"]


@dataclass(frozen=True)
class JoinSide:
    """One input of a join: the columns it contributes and its join attributes."""

    columns: tuple[str, ...]  # input columns carried to the output
    keys: tuple[str, ...] = ()  # equality keys, pairwise with the other side's
    time: str | None = None  # event-time column (interval joins, retention)
    window: tuple[str, str] | None = None  # (window_start, window_end) columns (window joins)
    label: str = ""  # the input's name, for dead letters

    def stored(self) -> list[str]:
        """The columns a join keeps of this side's rows."""
        names = list(self.columns) + list(self.keys) + ([self.time] if self.time else []) + list(self.window or ())
        return list(dict.fromkeys(names))


@dataclass(frozen=True)
class JoinLayout:
    kind: str  # inner | left | right | full | semi | anti (left rows with / without a match, left columns)
    left: JoinSide
    right: JoinSide
    output: tuple[tuple[int, str], ...]  # visible output columns as (side, input column)
    schema: pa.Schema  # visible columns, then __wm / __op where the join emits them
    residual: DataFusionProgram | None = None  # non-equality condition over the visible columns
    null_aware: bool = False  # anti join with NOT IN's NULL rules

    @property
    def sides(self) -> tuple[JoinSide, JoinSide]:
        return (self.left, self.right)

    def outer(self, side: int) -> bool:
        """Whether unmatched rows of ``side`` appear (padded with NULLs)."""
        return self.kind == "full" or (self.kind in ("left", "anti") and side == 0) or (self.kind == "right" and side == 1)

    @property
    def semi(self) -> bool:
        """A semi or anti join: each left row at most once, right columns NULL."""
        return self.kind in ("semi", "anti")

    def counts_matches(self, side: int) -> bool:
        """Whether stored rows of ``side`` keep a count of their partners."""
        return self.outer(side) or (self.kind == "semi" and side == 0)


def row_indices(rows: np.ndarray | None) -> pa.Array | None:
    if rows is None:
        return None
    if rows.size and rows.min() < 0:
        return pa.array(rows, mask=rows < 0)
    return pa.array(rows)


def _array(column) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column


class JoinOutput:
    """Output batches of a layout from rows of both sides (-1 = NULL padding)."""

    def __init__(self, layout: JoinLayout):
        self.layout = layout
        n = len(layout.output)
        self.visible = pa.schema([layout.schema.field(i) for i in range(n)])
        self.hidden = [layout.schema.field(i).name for i in range(n, len(layout.schema))]

    def columns(self, tables, rows) -> list[pa.Array]:
        """Visible output columns for (left rows, right rows); rows None = all, in order."""
        takes = [row_indices(r) for r in rows]
        out = []
        for (side, name), field in zip(self.layout.output, self.visible, strict=True):
            column = _array(tables[side].column(name))
            if takes[side] is not None:
                column = column.take(takes[side])
            if column.type != field.type:
                column = column.cast(field.type)
            out.append(column)
        return out

    def matches(self, columns: list[pa.Array]) -> np.ndarray:
        """The residual condition over joined candidate rows (NULL is no match)."""
        batch = pa.RecordBatch.from_arrays(columns, schema=self.visible)
        result = self.layout.residual.run(batch).column(0)
        return pc.fill_null(result, False).to_numpy(zero_copy_only=False).astype(bool, copy=False)

    def batch(self, columns: list[pa.Array], wm=None, ops=None) -> pa.RecordBatch:
        n = len(columns[0]) if columns else 0
        extra = []
        for name in self.hidden:
            if name == WM_COLUMN:
                extra.append(pa.array(np.full(n, wm, dtype=np.int64)) if np.isscalar(wm) else _array(wm))
            elif name == OP_COLUMN:
                extra.append(pa.array([ops] * n, pa.string()) if isinstance(ops, str) else _array(ops))
        return pa.RecordBatch.from_arrays(columns + extra, schema=self.layout.schema)


def with_unmatched(n: int, probe_rows: np.ndarray, build_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs grouped by probe row, plus (row, -1) for each of the ``n`` probe rows
    without a pair, keeping probe-row order."""
    counts = np.bincount(probe_rows, minlength=n)
    out_counts = np.maximum(counts, 1)
    starts = np.cumsum(out_counts) - out_counts
    rows = np.repeat(np.arange(n, dtype=np.int64), out_counts)
    other = np.full(rows.size, -1, dtype=np.int64)
    rank = np.arange(probe_rows.size, dtype=np.int64) - (np.cumsum(counts) - counts)[probe_rows]
    other[starts[probe_rows] + rank] = build_rows
    return rows, other



def null_rows(side: JoinSide, layout: JoinLayout, port: int) -> pa.Table:
    """A one-row table of NULLs for an empty side (taken only at index -1)."""
    visible = [layout.schema.field(i) for i in range(len(layout.output))]
    types = {name: field.type for (s, name), field in zip(layout.output, visible, strict=True) if s == port}
    return pa.table({name: pa.nulls(1, types.get(name, pa.null())) for name in side.stored()})
