"""Folding an updating result (a changelog with ``__op``) into its current table.

:class:`ChangelogTable` folds row by row and holds any value (the reference);
:class:`ArrowChangelogTable` folds whole batches with an Arrow group-by, for results
shown while they run, and falls back to a ``ChangelogTable`` for columns Arrow cannot
group.

``+I`` and ``+U`` add a row, ``-U`` and ``-D`` remove one equal row (multiset
semantics, as Flink's RowKind), so a filter applied to each change independently
still folds to the right table.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.hidden import OP_COLUMN

__all__ = ["ChangelogTable", "ArrowChangelogTable", "fold_changelog", "ADD_OPS", "REMOVE_OPS"]

ADD_OPS = ("+I", "+U")
REMOVE_OPS = ("-U", "-D")


def _freeze(value):
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


class ChangelogTable:
    """The current rows of an updating result, updated batch by batch."""

    def __init__(self, columns: list[str] | None = None):
        self.columns = columns
        self.rows: Counter = Counter()
        self._values: dict = {}
        self.changes = 0

    def apply_batch(self, batch: pa.RecordBatch | pa.Table) -> None:
        names = [n for n in batch.schema.names if n != OP_COLUMN]
        if self.columns is None:
            self.columns = names
        ops = batch.column(OP_COLUMN).to_pylist() if OP_COLUMN in batch.schema.names else ["+I"] * batch.num_rows
        columns = [batch.column(n).to_pylist() for n in names]
        self.apply(ops, zip(*columns) if columns else [() for _ in ops])

    def apply(self, ops: Iterable[str], rows: Iterable[tuple]) -> None:
        for op, row in zip(ops, rows):
            key = _freeze(list(row))
            self.changes += 1
            if op in ADD_OPS:
                self.rows[key] += 1
                self._values[key] = row
            elif op in REMOVE_OPS:
                if self.rows[key] > 0:
                    self.rows[key] -= 1
                    if self.rows[key] == 0:
                        del self.rows[key]
            else:
                raise ValueError(f"unknown change kind {op!r}")

    def to_rows(self) -> list[dict]:
        out = []
        for key, count in self.rows.items():
            row = dict(zip(self.columns or [], self._values[key]))
            out.extend([row] * count)
        return out

    def __len__(self) -> int:
        return sum(self.rows.values())


def fold_changelog(rows: list[dict]) -> list[dict]:
    """Rows with ``__op`` → the final rows (without ``__op``). Rows without it pass."""
    if not rows or OP_COLUMN not in rows[0]:
        return rows
    columns = [k for k in rows[0] if k != OP_COLUMN]
    table = ChangelogTable(columns)
    table.apply((r[OP_COLUMN] for r in rows), ([r.get(c) for c in columns] for r in rows))
    return table.to_rows()


class ArrowChangelogTable:
    """The current rows of an updating result, folded with Arrow.

    Each change is kept as its row and a count (+1 for ``+I``/``+U``, -1 for
    ``-U``/``-D``); when changes pile up they are compacted by a group-by over all the
    columns, keeping rows whose count is positive (multiset semantics, as
    :class:`ChangelogTable`). Memory follows the table's size, not the number of
    changes. Columns Arrow cannot group (lists, structs) fall back to ``ChangelogTable``,
    whose rows are put in ``fallback_order`` (a sort key of a row dict) when given."""

    _COUNT = "__count"

    def __init__(self, columns: list[str], fallback_order: Callable[[dict], Any] | None = None):
        self.columns = columns
        self.fallback_order = fallback_order
        self._parts: list[pa.Table] = []
        self._pending = 0
        self._size = 0
        self._python: ChangelogTable | None = None

    def apply_batch(self, batch: pa.RecordBatch) -> None:
        if self._python is not None:
            self._python.apply_batch(batch)
            return
        if OP_COLUMN in batch.schema.names:
            removes = pc.is_in(batch.column(OP_COLUMN), value_set=pa.array(REMOVE_OPS))
            counts = pc.if_else(removes, pa.scalar(-1, pa.int64()), pa.scalar(1, pa.int64()))
        else:
            counts = pa.array(np.ones(batch.num_rows, dtype=np.int64))
        part = pa.Table.from_batches([batch.select(self.columns)]).append_column(self._COUNT, counts)
        self._parts.append(part)
        self._pending += batch.num_rows
        if self._pending > max(50_000, self._size):
            self._compact()

    def _compact(self) -> None:
        if self._python is not None or not self._pending:
            return
        table = pa.concat_tables(self._parts)
        try:
            grouped = table.group_by(self.columns, use_threads=False).aggregate([(self._COUNT, "sum")])
        except (pa.ArrowNotImplementedError, pa.ArrowTypeError):
            self._to_python(table)
            return
        grouped = grouped.filter(pc.greater(grouped.column(f"{self._COUNT}_sum"), 0))
        grouped = grouped.select([*self.columns, f"{self._COUNT}_sum"]).rename_columns([*self.columns, self._COUNT])
        self._parts = [grouped]
        self._size = grouped.num_rows
        self._pending = 0

    def _to_python(self, table: pa.Table) -> None:
        self._python = ChangelogTable(self.columns)
        for batch in table.to_batches():
            counts = batch.column(self._COUNT).to_pylist()
            rows = zip(*(batch.column(c).to_pylist() for c in self.columns)) if self.columns else [() for _ in counts]
            for count, row in zip(counts, rows):
                self._python.apply(["+I" if count > 0 else "-D"] * abs(count), [row] * abs(count))
        self._parts = []

    def table(self) -> pa.Table:
        """Every current row (a row held twice appears twice), sorted when Arrow can sort."""
        self._compact()
        if self._python is not None:
            rows = self._python.to_rows()
            if self.fallback_order is not None:
                rows.sort(key=self.fallback_order)
            return pa.Table.from_pylist(rows) if rows else pa.table({c: pa.array([], pa.null()) for c in self.columns})
        if not self._parts:
            return pa.table({c: pa.array([], pa.null()) for c in self.columns})
        current = self._parts[0]
        counts = current.column(self._COUNT).to_numpy()
        if (counts != 1).any():
            current = current.take(pa.array(np.repeat(np.arange(len(counts)), counts)))
        current = current.drop_columns([self._COUNT])
        try:
            return current.sort_by([(c, "ascending") for c in self.columns])
        except (pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return current

    def rows(self, limit: int | None = None) -> list[dict]:
        table = self.table()
        return (table if limit is None else table.slice(0, limit)).to_pylist()

    def __len__(self) -> int:
        self._compact()
        if self._python is not None:
            return len(self._python)
        return int(sum(p.column(self._COUNT).to_numpy().sum() for p in self._parts))
