"""Rows held per key without rewriting them on every batch.

Top-N and deduplication hold rows for an unbounded number of keys and touch a few of
them per batch. Keeping them in one table would copy the whole state on every batch;
:class:`KeyedRows` keeps Arrow chunks as they were added, each with a numpy *alive*
mask: taking out the rows of some keys probes the key column (a hash lookup against the
batch's keys, no copy) and clears their alive flags. Chunks are compacted (dead rows
dropped, chunks merged) when dead rows outnumber live ones or chunks pile up.

>>> import pyarrow as pa
>>> rows = KeyedRows("k")
>>> rows.add(pa.table({"k": [1, 2, 3], "v": [10, 20, 30]}))
>>> rows.take(pa.array([2, 9])).to_pylist()
[{'k': 2, 'v': 20}]
>>> rows.rows, rows.contains(pa.array([1, 2, 3])).tolist()
(2, [True, False, True])
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.operators.state_size import StateSize, table_bytes

__all__ = ["KeyedRows"]

#: chunks kept side by side before they are merged into one
MAX_CHUNKS = 16


class KeyedRows:
    def __init__(self, key: str):
        self.key = key
        self.chunks: list[pa.Table] = []
        self.alive: list[np.ndarray] = []
        self.rows = 0  # live rows

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self.chunks.append(table)
        self.alive.append(np.ones(table.num_rows, dtype=bool))
        self.rows += table.num_rows
        if len(self.chunks) > MAX_CHUNKS:
            self._compact()

    def _matches(self, keys: pa.Array) -> list[np.ndarray]:
        """Per chunk: the live rows whose key is one of ``keys`` (one lookup over all
        chunks: the set of ``keys`` is hashed once)."""
        column = pa.chunked_array([c for chunk in self.chunks for c in chunk.column(self.key).chunks],
                                  type=self.chunks[0].schema.field(self.key).type)
        found = pc.is_in(column, value_set=pc.unique(keys), skip_nulls=False)
        found = found.combine_chunks().to_numpy(zero_copy_only=False) if isinstance(found, pa.ChunkedArray) else (
            found.to_numpy(zero_copy_only=False))
        bounds = np.cumsum([0] + [chunk.num_rows for chunk in self.chunks])
        return [found[lo:hi] & alive for lo, hi, alive in zip(bounds[:-1], bounds[1:], self.alive, strict=True)]

    def take(self, keys: pa.Array) -> pa.Table | None:
        """Remove and return the live rows whose key is one of ``keys`` (None: none)."""
        if not self.rows:
            return None
        parts = []
        for chunk, alive, match in zip(self.chunks, self.alive, self._matches(keys), strict=True):
            if match.any():
                parts.append(chunk.filter(pa.array(match)))
                alive &= ~match
        if not parts:
            return None
        taken = pa.concat_tables(parts)
        self.rows -= taken.num_rows
        if self.dead() > max(self.rows, 4096):
            self._compact()
        return taken

    def contains(self, keys: pa.Array) -> np.ndarray:
        """For each of ``keys``: whether a live row has it."""
        if not self.rows:
            return np.zeros(len(keys), dtype=bool)
        found = [chunk.column(self.key).filter(pa.array(match))
                 for chunk, match in zip(self.chunks, self._matches(keys), strict=True) if match.any()]
        if not found:
            return np.zeros(len(keys), dtype=bool)
        present = pa.chunked_array(found).combine_chunks()
        return pc.is_in(keys, value_set=present, skip_nulls=False).to_numpy(zero_copy_only=False)

    def keep(self, column: str, at_least: int) -> None:
        """Drop the live rows whose int64 ``column`` is below ``at_least``."""
        for chunk, alive in zip(self.chunks, self.alive, strict=True):
            old = alive & (chunk.column(column).to_numpy() < at_least)
            if old.any():
                alive &= ~old
                self.rows -= int(old.sum())
        if self.dead() > max(self.rows, 4096):
            self._compact()

    def dead(self) -> int:
        return sum(c.num_rows for c in self.chunks) - self.rows

    def _compact(self) -> None:
        parts = [chunk.filter(pa.array(alive)) for chunk, alive in zip(self.chunks, self.alive, strict=True) if alive.any()]
        self.chunks = [pa.concat_tables(parts).combine_chunks()] if parts else []
        self.alive = [np.ones(self.chunks[0].num_rows, dtype=bool)] if parts else []

    def table(self) -> pa.Table | None:
        """The live rows as one table (None: none)."""
        self._compact()
        return self.chunks[0] if self.chunks else None

    def load(self, table: pa.Table | None) -> None:
        self.chunks, self.alive, self.rows = [], [], 0
        if table is not None:
            self.add(table)

    def state_size(self) -> StateSize:
        """Live rows; bytes of every chunk held (dead rows too, until compacted)."""
        return StateSize(self.rows, table_bytes(*self.chunks) if self.chunks else 0)
