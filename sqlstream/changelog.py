"""Folding an updating result (a changelog with ``__op``) into its current table.

``+I`` and ``+U`` add a row, ``-U`` and ``-D`` remove one equal row (multiset
semantics, as Flink's RowKind), so a filter applied to each change independently
still folds to the right table.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

import pyarrow as pa

from sqlstream.hidden import OP_COLUMN

__all__ = ["ChangelogTable", "fold_changelog", "ADD_OPS", "REMOVE_OPS"]

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
