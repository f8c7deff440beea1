"""Rows of one join input kept in state, indexed by key.

State is a short list of *chunks* (one per arriving batch); each chunk has its own
:class:`~sqlstream.operators.join_keys.KeyIndex`, so adding rows never rebuilds the
index of rows already held. Adjacent chunks are merged like a binary counter (a chunk
absorbs the next one once that is at least half its size), which keeps the number of
chunks logarithmic and the rebuild cost amortized. Rows leave state lazily: an
``alive`` mask per chunk, compacted on merge or when most of a chunk has died.

Each chunk counts its live rows and knows its bytes (fixed when it is built), so the
size of the state is known without looking at its rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.operators.join_keys import KeyIndex
from sqlstream.operators.state_size import StateSize, numpy_bytes, table_bytes
from sqlstream.operators.state_tables import arrays_to_table, numbered, table_to_arrays

__all__ = ["RowChunks", "Chunk", "constant_keys"]

#: the per-row arrays of a chunk and their types, as a checkpoint stores them
_CHUNK_ARRAYS = {"alive": np.bool_, "times": np.int64, "matches": np.int64, "arrival": np.int64}


def constant_keys(table: pa.Table | pa.RecordBatch, names: tuple[str, ...]) -> list[pa.Array]:
    """The key columns of ``table``; a constant key when the join has no equality."""
    if names:
        return [table.column(n) for n in names]
    return [pa.array(np.zeros(table.num_rows, dtype=np.int8))]


@dataclass
class Chunk:
    table: pa.Table
    index: KeyIndex
    alive: np.ndarray  # bool per row
    times: np.ndarray | None = None  # event time per row (µs)
    matches: np.ndarray | None = None  # matching rows on the other side (outer joins)
    arrival: np.ndarray | None = None  # processing time the row was stored (state TTL)
    _oldest: dict = field(default_factory=dict, repr=False)
    _live: int = field(default=-1, repr=False)
    _bytes: int = field(default=-1, repr=False)

    @property
    def live(self) -> int:
        """Rows still alive (counted once, then kept up to date by :meth:`kill`)."""
        if self._live < 0:
            self._live = int(np.count_nonzero(self.alive))
        return self._live

    def kill(self, rows: np.ndarray) -> None:
        """Rows ``rows`` (distinct, alive) leave state."""
        live = self.live
        self.alive[rows] = False
        self._live = live - int(rows.size)

    @property
    def nbytes(self) -> int:
        """Bytes of the rows (dead ones too, until compaction), index and masks."""
        if self._bytes < 0:
            self._bytes = table_bytes(self.table) + (self.index.nbytes if self.index is not None else 0) + numpy_bytes(
                self.alive, self.times, self.matches, self.arrival)
        return self._bytes

    def oldest(self, attribute: str) -> int:
        """The smallest ``times``/``arrival`` value the chunk was built with (cached)."""
        if attribute not in self._oldest:
            values = getattr(self, attribute)
            self._oldest[attribute] = int(values.min()) if values is not None and values.size else 2**63 - 1
        return self._oldest[attribute]

    def take(self, rows: np.ndarray) -> "Chunk":
        table = self.table.take(pa.array(rows))
        return Chunk(
            table,
            None,  # type: ignore[arg-type]  (set by the caller)
            np.ones(rows.size, dtype=bool),
            self.times[rows] if self.times is not None else None,
            self.matches[rows] if self.matches is not None else None,
            self.arrival[rows] if self.arrival is not None else None,
        )


class RowChunks:
    """The rows of one side: add, probe by key, expire, and count."""

    def __init__(self, keys: tuple[str, ...]):
        self.keys = keys
        self.chunks: list[Chunk] = []

    def _index(self, table: pa.Table) -> KeyIndex:
        return KeyIndex(constant_keys(table, self.keys))

    def add(self, table: pa.Table, times: np.ndarray | None = None, matches: np.ndarray | None = None,
            arrival: np.ndarray | None = None) -> None:
        if table.num_rows == 0:
            return
        self.chunks.append(Chunk(table, self._index(table), np.ones(table.num_rows, dtype=bool), times, matches, arrival))
        while len(self.chunks) >= 2 and self.chunks[-1].live * 2 >= self.chunks[-2].live:
            last = self.chunks.pop()
            self.chunks[-1] = self._merge([self.chunks[-1], last])

    def _merge(self, chunks: list[Chunk]) -> Chunk:
        parts = [c.take(np.flatnonzero(c.alive)) for c in chunks]
        parts = [p for p in parts if p.table.num_rows] or parts[:1]
        table = pa.concat_tables([p.table for p in parts]).combine_chunks()

        def joined(name):
            arrays = [getattr(p, name) for p in parts]
            return None if arrays[0] is None else np.concatenate(arrays)

        return Chunk(table, self._index(table), np.ones(table.num_rows, dtype=bool),
                     joined("times"), joined("matches"), joined("arrival"))

    def compact(self) -> None:
        """Drop dead chunks; rebuild chunks that are mostly dead."""
        kept = []
        for chunk in self.chunks:
            live = chunk.live
            if live == 0:
                continue
            if live * 2 < chunk.alive.size:
                chunk = self._merge([chunk])
            kept.append(chunk)
        self.chunks = kept

    def probe(self, keys: list[pa.Array]) -> list[tuple[Chunk, np.ndarray, np.ndarray]]:
        """(chunk, probe rows, chunk rows) of every live matching row."""
        out = []
        for chunk in self.chunks:
            probe_rows, rows = chunk.index.probe(keys)
            if probe_rows.size:
                live = chunk.alive[rows]
                if not live.all():
                    probe_rows, rows = probe_rows[live], rows[live]
            if probe_rows.size:
                out.append((chunk, probe_rows, rows))
        return out

    def rows(self) -> int:
        return sum(c.live for c in self.chunks)

    def to_tables(self, name: str) -> dict[str, pa.Table]:
        """Each chunk as it is, dead rows included (so a restored side has the same
        chunks, merges and probe order): its rows as ``{name}_{i}`` and its per-row
        arrays (``alive``, and ``times``/``matches``/``arrival`` where kept) as
        ``{name}_{i}_rows``. The key index is not stored: it is rebuilt on restore."""
        tables = {}
        for i, chunk in enumerate(self.chunks):
            tables[f"{name}_{i}"] = chunk.table
            tables[f"{name}_{i}_rows"] = arrays_to_table({a: getattr(chunk, a) for a in _CHUNK_ARRAYS})
        return tables

    def load_tables(self, name: str, tables: dict[str, pa.Table]) -> None:
        """The chunks :meth:`to_tables` wrote under ``name``, key indexes rebuilt."""
        self.chunks = []
        for i in range(numbered(name, tables)):
            table = tables[f"{name}_{i}"].combine_chunks()
            arrays = table_to_arrays(tables[f"{name}_{i}_rows"], _CHUNK_ARRAYS)
            self.chunks.append(Chunk(table, self._index(table), arrays["alive"], arrays["times"], arrays["matches"],
                                     arrays["arrival"]))

    def state_size(self) -> StateSize:
        return StateSize(self.rows(), sum(c.nbytes for c in self.chunks))

    def min_time(self) -> int | None:
        times = [int(c.times[c.alive].min()) for c in self.chunks if c.times is not None and c.live]
        return min(times, default=None)

    def expire_before(self, attribute: str, limit: int) -> list[tuple[Chunk, np.ndarray]]:
        """Rows whose ``attribute`` (``times`` or ``arrival``) is below ``limit`` leave
        state; returns the rows that just left, per chunk. Chunks whose oldest row is
        at or after ``limit`` are not looked at."""
        died = []
        for chunk in self.chunks:
            values = getattr(chunk, attribute)
            if values is None or chunk.oldest(attribute) >= limit:
                continue
            mask = (values < limit) & chunk.alive
            if mask.any():
                rows = np.flatnonzero(mask)
                died.append((chunk, rows))
                chunk.kill(rows)
        if died:
            self.compact()
        return died


def rows_equal(a: pa.Table, a_rows: np.ndarray, b: pa.Table, b_rows: np.ndarray, columns: list[str]) -> np.ndarray:
    """Row-wise equality of ``a[a_rows]`` and ``b[b_rows]`` over ``columns`` (NULL equals
    NULL), as a numpy bool mask."""
    same = np.ones(a_rows.size, dtype=bool)
    if a_rows.size == 0:
        return same
    ai, bi = pa.array(a_rows), pa.array(b_rows)
    for name in columns:
        x, y = a.column(name).take(ai), b.column(name).take(bi)
        eq = pc.equal(x, y)
        both_null = pc.and_(pc.is_null(x), pc.is_null(y))
        same &= pc.fill_null(pc.or_kleene(eq, both_null), False).to_numpy(zero_copy_only=False)
    return same
