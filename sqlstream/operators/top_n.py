"""Top-N per key over an append-only stream (and keep-last deduplication, its N = 1
case): an updating result.

State is the current top N rows of every key (at most keys × N rows, in
:class:`~sqlstream.operators.keyed_rows.KeyedRows`: a batch takes out its keys' rows
without copying the others): a row that falls out of its key's top N can never come
back, since rows are only ever added. Per batch, the state rows of the keys the batch
touches and the batch's rows are sorted together (key, order columns, arrival) with one Arrow sort,
ranked with numpy, cut at N and compared with the old top N of those keys by row
identity (an arrival number): a row pushed out is ``-D``, a new row in the top is
``+I`` and, when the rank is selected, a row whose rank moved is ``-U`` old rank /
``+U`` new rank; with N = 1 a replaced row is ``-U`` old / ``+U`` new. Retractions come before additions in each batch, so sinks that
upsert by (key, rank) see the right table.

Ties on the order columns: the row that arrived first ranks first, or, for
``later_wins`` (ORDER BY the event time DESC: keep-last), the row that arrived last.

With a TTL (``top_n_state_ttl``, ``ttl_us``) the operator also keeps each key's latest
event time (``time_column``) and, once the watermark passes it + ``ttl_us``, forgets
the key: its top rows leave the state without any change being emitted (the rows
already emitted stand), and a later row of that key starts a fresh ranking (``+I`` at
rank 1). Forgotten keys are counted in ``expired_keys``.

>>> import pyarrow as pa
>>> schema = pa.schema([("__op", pa.string()), ("k", pa.int64()), ("v", pa.int64()), ("rn", pa.int64())])
>>> op = TopNOperator(["k"], [("v", True, False)], 2, schema, "rn")
>>> out = []
>>> op.emit = out.append
>>> op.on_batch(pa.record_batch({"k": [1, 1], "v": [5, 3]}), 0)
>>> op.on_batch(pa.record_batch({"k": [1], "v": [4]}), 0)
>>> out[-1].to_pylist()  # doctest: +NORMALIZE_WHITESPACE
[{'__op': '-D', 'k': 1, 'v': 3, 'rn': 2}, {'__op': '+I', 'k': 1, 'v': 4, 'rn': 2}]
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.batches import event_time_us
from sqlstream.hidden import OP_COLUMN
from sqlstream.operators.base import Operator
from sqlstream.operators.changes import changelog_batch
from sqlstream.operators.keyed_rows import KeyedRows
from sqlstream.operators.keys import encode_keys, key_changes
from sqlstream.operators.state_size import StateSize

__all__ = ["TopNOperator", "rank_rows", "KEY", "SEQ", "RANK"]

KEY, SEQ, RANK = "__topn_key", "__seq", "__rank"
_LAST = "__last_time"  # a key's latest event time (µs), with a TTL


def rank_rows(table: pa.Table, order: list[tuple[str, bool, bool]], limit: int | None, later_wins: bool) -> pa.Table:
    """``table`` (with ``KEY`` and ``SEQ`` columns) sorted by key, then ``order``
    ((column, descending, nulls_first) each), then arrival; with its rank in its key
    (``RANK``, from 1) and only ranks up to ``limit`` (None: all)."""
    indices, ranks = rank_indices(table, order, limit, later_wins)
    return table.take(indices).append_column(RANK, pa.array(ranks, pa.int64()))


def rank_indices(table: pa.Table, order: list[tuple[str, bool, bool]], limit: int | None,
                 later_wins: bool) -> tuple[np.ndarray, np.ndarray]:
    """The rows of :func:`rank_rows` as indices into ``table``, and their ranks."""
    columns = {KEY: table.column(KEY)}
    sort_keys = [(KEY, "ascending")]
    for i, (name, descending, nulls_first) in enumerate(order):
        column = table.column(name)
        if column.null_count:
            columns[f"n{i}"] = pc.cast(pc.is_null(column), pa.int8())
            sort_keys.append((f"n{i}", "descending" if nulls_first else "ascending"))
        columns[f"v{i}"] = column
        sort_keys.append((f"v{i}", "descending" if descending else "ascending"))
    columns[SEQ] = table.column(SEQ)
    sort_keys.append((SEQ, "descending" if later_wins else "ascending"))
    indices = pc.sort_indices(pa.table(columns), sort_keys=sort_keys).to_numpy()
    keys = table.column(KEY).take(indices)
    starts = key_changes(keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys)
    positions = np.arange(indices.size, dtype=np.int64)
    first = np.maximum.accumulate(np.where(starts, positions, 0))
    ranks = positions - first + 1
    if limit is not None:
        keep = ranks <= limit
        indices, ranks = indices[keep], ranks[keep]
    return indices, ranks


class TopNOperator(Operator):
    """``ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...) <= N`` over an append-only input."""

    name = "top_n"
    state_hint = ("set top_n_state_ttl to forget keys not seen for a while, lower N, or rank within windows "
                  "(PARTITION BY window_start, window_end over a window aggregation)")

    def __init__(self, partition: list[str], order: list[tuple[str, bool, bool]], limit: int, schema: pa.Schema,
                 rank_column: str | None, later_wins: bool = False, ttl_us: int | None = None,
                 time_column: str | None = None):
        super().__init__()
        assert (ttl_us is None) == (time_column is None), "a TTL needs the event-time column"
        self.ttl_us = ttl_us
        self.time_column = time_column
        self.last_seen = KeyedRows(KEY)  # KEY + _LAST: each key's latest event time (with a TTL)
        self.expired_keys = 0
        self.partition = list(partition)
        self.order = list(order)
        self.limit = limit
        self.schema = schema
        self.rank_column = rank_column
        self.later_wins = later_wins
        self.payload = [f.name for f in schema if f.name not in (OP_COLUMN, rank_column)]
        self.stored = list(dict.fromkeys(self.payload + self.partition + [name for name, _, _ in self.order]))
        self.next_seq = 0
        self.top = KeyedRows(KEY)  # stored columns + KEY + SEQ + RANK: the top N of every key

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        table = pa.Table.from_batches([batch]).select(self.stored)
        n = table.num_rows
        table = table.append_column(KEY, encode_keys(table, self.partition))
        table = table.append_column(SEQ, pa.array(np.arange(self.next_seq, self.next_seq + n, dtype=np.int64)))
        self.next_seq += n
        old = self.top.take(table.column(KEY))
        candidates = table if old is None else pa.concat_tables([old.drop_columns([RANK]), table])
        indices, ranks = rank_indices(candidates, self.order, self.limit, self.later_wins)
        new = candidates.take(indices).append_column(RANK, pa.array(ranks, pa.int64()))
        self.top.add(new)
        if self.ttl_us is not None:
            self._touch(table.column(KEY), event_time_us(batch.column(self.time_column)))
        if old is None:
            self._emit([(new, "+I")])
            return
        self._emit_changes(old, new, indices)

    def _touch(self, keys: pa.ChunkedArray, times) -> None:
        """Record the latest event time of every key in the batch."""
        latest = pa.table({KEY: keys, _LAST: pa.array(times, pa.int64())}).group_by(KEY, use_threads=False).aggregate(
            [(_LAST, "max")]).rename_columns([KEY, _LAST])
        before = self.last_seen.take(latest.column(KEY))
        if before is not None:
            latest = pa.concat_tables([before.select([KEY, _LAST]), latest]).group_by(KEY, use_threads=False).aggregate(
                [(_LAST, "max")]).rename_columns([KEY, _LAST])
        self.last_seen.add(latest)

    def on_watermark(self, watermark: int) -> None:
        """With a TTL: forget the keys whose latest row is more than ``ttl_us`` behind."""
        if self.ttl_us is not None and self.last_seen.rows:
            table = self.last_seen.table()
            old = pc.less(table.column(_LAST), pa.scalar(watermark - self.ttl_us, pa.int64()))
            expired = table.filter(old).column(KEY)
            if len(expired):
                self.last_seen.take(expired)
                self.top.take(expired)
                self.expired_keys += len(expired)
        self.emit_watermark(watermark)

    def _emit_changes(self, old: pa.Table, new: pa.Table, indices: np.ndarray) -> None:
        """``indices``: the candidate row of each new row (old rows first, then the batch's)."""
        from_old = indices < old.num_rows
        kept = np.zeros(old.num_rows, dtype=bool)
        kept[indices[from_old]] = True
        gone = old.filter(pa.array(~kept))
        inserted = new.filter(pa.array(~from_old))
        if self.limit == 1:  # one row per key: a replaced row is an update of its key
            replaced = pc.is_in(gone.column(KEY), value_set=inserted.column(KEY), skip_nulls=False)
            updated = pc.is_in(inserted.column(KEY), value_set=gone.column(KEY), skip_nulls=False)
            before = gone.filter(replaced).sort_by(KEY)
            after = inserted.filter(updated).sort_by(KEY)
            self._emit([(gone.filter(pc.invert(replaced)), "-D"), (before, "-U"), (after, "+U"),
                        (inserted.filter(pc.invert(updated)), "+I")])
            return
        parts = [(gone, "-D")]
        if self.rank_column is not None:
            before, after = old.take(pa.array(indices[from_old])), new.filter(pa.array(from_old))
            moved = (before.column(RANK).to_numpy() != after.column(RANK).to_numpy())
            parts += [(before.filter(pa.array(moved)), "-U"), (after.filter(pa.array(moved)), "+U")]
        self._emit(parts + [(inserted, "+I")])

    def _emit(self, parts: list[tuple[pa.Table, str]]) -> None:
        batch = changelog_batch(self.schema, parts, {self.rank_column: RANK} if self.rank_column else None)
        if batch is not None:
            self.emit(batch)

    # -- checkpoints -------------------------------------------------------------------------

    state_version = 2  # 2: expired_keys, last_seen

    def state_values(self) -> dict:
        """The next arrival number (row identity, and ties) and the count of keys the TTL
        forgot."""
        return {"next_seq": self.next_seq, "expired_keys": self.expired_keys}

    def state_tables(self) -> dict[str, pa.Table]:
        """``top``: the current top N rows of every key (stored columns, ``__topn_key``,
        ``__seq``, ``__rank``); with a TTL, ``last_seen``: each key's latest event time
        (``__topn_key``, ``__last_time``)."""
        tables = {"top": self.top.table(), "last_seen": self.last_seen.table()}
        return {name: table for name, table in tables.items() if table is not None}

    def load_state(self, values: dict, tables: dict[str, pa.Table]) -> None:
        self.next_seq = values["next_seq"]
        self.expired_keys = values["expired_keys"]
        self.top.load(tables.get("top"))
        self.last_seen.load(tables.get("last_seen"))

    def state_size(self) -> StateSize:
        """At most N rows per key (plus each key's latest time, with a TTL)."""
        return self.top.state_size() + self.last_seen.state_size()
