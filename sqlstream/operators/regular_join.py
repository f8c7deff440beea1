"""Regular (unbounded) joins of two streams, append-only inputs or changelogs.

Both inputs keep every row in keyed state (:class:`~sqlstream.operators.join_state.RowChunks`):
an arriving row is joined with the other side's rows at once, then stored. State
grows with the inputs; ``SET join_state_ttl = '1h'`` drops rows that many seconds
(processing time, as Flink's state TTL) after they were stored.

Changes follow Flink's RowKind: an added input row (``+I``/``+U``) gives ``+I``
output rows, a removed one (``-U``/``-D``) gives ``-D`` rows; output rows keep the
arrival order of the input rows. Outer joins keep a match count per stored row: when
an unmatched row gets its first partner its NULL-padded row is retracted (``-D``)
first, and when it loses its last partner the padded row comes back (``+I``) after
the batch's changes. The inner join of two append-only inputs is append-only (no
``__op``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.hidden import OP_COLUMN
from sqlstream.operators.base import Operator
from sqlstream.operators.join_layout import JoinLayout, JoinOutput, null_rows
from sqlstream.operators.join_state import RowChunks, constant_keys, rows_equal
from sqlstream.operators.state_size import StateSize
from sqlstream.operators.windows import column_int64

__all__ = ["RegularJoinOperator"]


def _any_null(table: pa.Table, names: tuple[str, ...]) -> np.ndarray:
    """Rows with a NULL in any of ``names``."""
    mask = np.zeros(table.num_rows, dtype=bool)
    for name in names:
        column = table.column(name)
        if column.null_count:
            mask |= pc.is_null(column).to_numpy(zero_copy_only=False)
    return mask

_ADD, _REMOVE = "+I", "-D"


class RegularJoinOperator(Operator):
    name = "regular_join"
    state_hint = ("without a time bound it keeps every row of both inputs: SET join_state_ttl = '1h' "
                  "(state older than that is dropped), or join within a window or an event-time interval")

    def __init__(self, layout: JoinLayout, ttl_us: int | None = None, clock=None):
        super().__init__(ports=2)
        self.layout = layout
        self.out = JoinOutput(layout)
        self.ttl_us = ttl_us or None
        self.clock = clock
        self.state = (RowChunks(layout.left.keys), RowChunks(layout.right.keys))
        self.updating = OP_COLUMN in layout.schema.names
        self.expired_rows = 0
        self.right_rows = 0  # NOT IN: right rows seen, and those with a NULL key
        self.right_nulls = 0

    # -- rows -----------------------------------------------------------------------------------

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        side = self.layout.sides[port]
        other = 1 - port
        table = pa.Table.from_batches([batch]).select(side.stored()).combine_chunks()
        n = table.num_rows
        if OP_COLUMN in batch.schema.names:
            ops = batch.column(OP_COLUMN).to_numpy(zero_copy_only=False)
            adds = (ops == "+I") | (ops == "+U")
        else:
            adds = np.ones(n, dtype=bool)
        sign = np.where(adds, 1, -1)
        removes = ~adds
        now = self.clock.now_us() if self.clock is not None else 0
        if self.ttl_us is not None:
            self._expire(now)
        if self.layout.null_aware and port == 1:
            self._not_in_flags(table)

        # 1. every input row against the other side's rows
        pieces: list[tuple[np.ndarray, list[pa.Array]]] = []
        matched = np.zeros(n, dtype=np.int64)
        transitions = []  # (chunk, rows, before, after) of the other side's match counts
        for chunk, probe_rows, rows in self.state[other].probe(constant_keys(table, side.keys)):
            pair = (probe_rows, rows) if port == 0 else (rows, probe_rows)
            tables = (table, chunk.table) if port == 0 else (chunk.table, table)
            columns = self.out.columns(tables, pair)
            if self.layout.residual is not None:
                keep = self.out.matches(columns)
                if not keep.all():
                    probe_rows, rows = probe_rows[keep], rows[keep]
                    columns = [c.filter(pa.array(keep)) for c in columns]
            if probe_rows.size == 0:
                continue
            if not self.layout.semi:
                pieces.append((probe_rows, columns))
            matched += np.bincount(probe_rows, minlength=n)
            if chunk.matches is not None:
                touched, inverse = np.unique(rows, return_inverse=True)
                delta = np.bincount(inverse, weights=sign[probe_rows], minlength=touched.size).astype(np.int64)
                before = chunk.matches[touched].copy()
                chunk.matches[touched] = before + delta
                transitions.append((chunk, touched, before, before + delta))
        if self.layout.kind == "semi" and port == 0:
            self._padded_piece(pieces, table, np.flatnonzero(matched > 0))
        if self.layout.outer(port):
            alone = matched == 0
            if self.layout.null_aware:  # NOT IN: see _not_in_flags
                if self.right_nulls:
                    alone[:] = False
                elif self.right_rows:
                    alone &= ~_any_null(table, side.keys)
            alone = np.flatnonzero(alone)
            if alone.size:
                none = np.full(alone.size, -1, dtype=np.int64)
                tables = [None, None]
                tables[port], tables[other] = table, null_rows(self.layout.sides[other], self.layout, other)
                pair = (alone, none) if port == 0 else (none, alone)
                pieces.append((alone, self.out.columns(tables, pair)))

        # 2. emit: padded rows of the other side that found a partner, the changes in
        #    input order, then padded rows of the other side that lost their last one
        self._emit_padded(other, transitions, gained=True)
        if pieces:
            probe = np.concatenate([p for p, _ in pieces])
            columns = [pa.concat_arrays([c[i] for _, c in pieces]) for i in range(len(pieces[0][1]))]
            order = np.argsort(probe, kind="stable")
            if not (order[1:] > order[:-1]).all():
                columns = [c.take(pa.array(order)) for c in columns]
                probe = probe[order]
            ops = np.where(adds[probe], _ADD, _REMOVE) if self.updating else None
            self.emit(self.out.batch(columns, ops=pa.array(ops, pa.string()) if ops is not None else None))
        self._emit_padded(other, transitions, gained=False)

        # 3. state: store added rows, then remove the rows the removals name
        if not self.layout.outer(port):  # rows with a NULL key never match: not worth keeping
            for name in side.keys:
                column = table.column(name)
                if column.null_count:
                    adds = adds & pc.is_valid(column).to_numpy(zero_copy_only=False)
        if self.layout.kind == "semi" and port == 0:  # emitted for good: a later partner changes nothing
            adds = adds & (matched == 0)
        if adds.any():
            rows = np.flatnonzero(adds)
            stored = table if rows.size == n else table.take(pa.array(rows))
            times = column_int64(stored, side.time) if side.time else None
            counts = matched[rows] if self.layout.counts_matches(port) else None
            arrival = np.full(rows.size, now, dtype=np.int64) if self.ttl_us is not None else None
            self.state[port].add(stored, times, counts, arrival)
        if removes.any():
            self._remove(port, table, np.flatnonzero(removes))

    def _not_in_flags(self, table: pa.Table) -> None:
        """NOT IN's NULL rules, before a right batch joins: a left row is in the result
        while the right side is empty, or while it has a non-NULL key without partner
        and no right key is NULL. The first right rows retract the NULL-key left rows;
        the first NULL right key retracts every row left (and none comes again)."""
        if self.right_nulls or table.num_rows == 0:
            return
        left = self.layout.sides[0]
        nulls = int(_any_null(table, self.layout.sides[1].keys).sum())
        for chunk in self.state[0].chunks:
            shown = chunk.alive.copy()
            if self.right_rows:  # only non-NULL keys without a partner are in the result
                shown &= (chunk.matches == 0) & ~_any_null(chunk.table, left.keys)
            gone = shown if nulls else shown & _any_null(chunk.table, left.keys)
            rows = np.flatnonzero(gone)
            if rows.size:
                tables = [chunk.table, null_rows(self.layout.sides[1], self.layout, 1)]
                pair = (rows, np.full(rows.size, -1, dtype=np.int64))
                self.emit(self.out.batch(self.out.columns(tables, pair), ops=_REMOVE))
        self.right_rows += table.num_rows
        self.right_nulls += nulls

    def _emit_padded(self, port: int, transitions, gained: bool) -> None:
        """NULL-padded rows of ``port`` that stop (``gained``) or start being unmatched."""
        if self.layout.null_aware and self.right_nulls:
            return  # NOT IN after a NULL: nothing is in the result
        for chunk, rows, before, after in transitions:
            picked = rows[(before == 0) & (after > 0)] if gained else rows[(before > 0) & (after == 0)]
            if picked.size == 0:
                continue
            none = np.full(picked.size, -1, dtype=np.int64)
            tables = [None, None]
            tables[port], tables[1 - port] = chunk.table, null_rows(self.layout.sides[1 - port], self.layout, 1 - port)
            pair = (picked, none) if port == 0 else (none, picked)
            op = _REMOVE if gained else _ADD
            if self.layout.kind == "semi":  # a semi join's row comes with its first partner
                op = _ADD if gained else _REMOVE
            self.emit(self.out.batch(self.out.columns(tables, pair), ops=op))

    def _padded_piece(self, pieces: list, table: pa.Table, rows: np.ndarray) -> None:
        """Left ``rows`` of ``table`` with NULL right columns (semi joins), as a piece."""
        if rows.size:
            tables = [table, null_rows(self.layout.sides[1], self.layout, 1)]
            pieces.append((rows, self.out.columns(tables, (rows, np.full(rows.size, -1, dtype=np.int64)))))

    def _remove(self, port: int, table: pa.Table, removals: np.ndarray) -> None:
        """Kill one stored row equal to each removal row (identical rows are
        interchangeable: a multiset)."""
        side = self.layout.sides[port]
        state = self.state[port]
        subset = table.take(pa.array(removals))
        names = side.stored()
        null_key = _any_null(subset, side.keys)
        found_removal, found_chunk, found_row = [], [], []
        for number, chunk in enumerate(state.chunks):
            probe_rows, rows = chunk.index.probe(constant_keys(subset, side.keys))
            if null_key.any():  # NULL keys are not indexed: compare with the stored NULL-key rows
                stored = np.flatnonzero(_any_null(chunk.table, side.keys))
                removals = np.flatnonzero(null_key)
                probe_rows = np.concatenate([probe_rows, np.repeat(removals, stored.size)])
                rows = np.concatenate([rows, np.tile(stored, removals.size)])
            live = chunk.alive[rows]
            probe_rows, rows = probe_rows[live], rows[live]
            same = rows_equal(subset, probe_rows, chunk.table, rows, names)
            found_removal.append(probe_rows[same])
            found_chunk.append(np.full(int(same.sum()), number, dtype=np.int64))
            found_row.append(rows[same])
        if not found_removal:
            return
        removal = np.concatenate(found_removal)
        if removal.size == 0:
            return
        offsets = np.cumsum([0] + [c.alive.size for c in state.chunks])
        candidate = offsets[np.concatenate(found_chunk)] + np.concatenate(found_row)
        # each removal takes a distinct equal row: the k-th removal of a row value takes
        # the k-th stored copy of it
        order = np.lexsort((candidate, removal))
        removal, candidate = removal[order], candidate[order]
        owners, first, count = np.unique(removal, return_index=True, return_counts=True)
        value = candidate[first]  # the first copy identifies the row value
        by_value = np.lexsort((owners, value))
        sorted_value = value[by_value]
        start_of_value = np.flatnonzero(np.r_[True, sorted_value[1:] != sorted_value[:-1]])
        rank_sorted = np.arange(by_value.size) - np.repeat(start_of_value, np.diff(np.r_[start_of_value, by_value.size]))
        rank = np.empty_like(rank_sorted)
        rank[by_value] = rank_sorted
        ok = rank < count
        picked = candidate[first[ok] + rank[ok]]
        chunk_of = np.searchsorted(offsets, picked, side="right") - 1
        for number in np.unique(chunk_of):
            chunk = state.chunks[number]
            chunk.kill(picked[chunk_of == number] - offsets[number])
        state.compact()

    # -- time -----------------------------------------------------------------------------------

    def tick(self, now_us: int) -> None:
        if self.ttl_us is not None:
            self._expire(now_us)
        super().tick(now_us)

    def _expire(self, now_us: int) -> None:
        limit = now_us - self.ttl_us
        for state in self.state:
            died = state.expire_before("arrival", limit)
            self.expired_rows += sum(rows.size for _, rows in died)

    # -- checkpoints ---------------------------------------------------------------------------

    def state_values(self) -> dict:
        """Rows dropped by the state TTL so far (a metric); NOT IN's counts of right rows
        and of right NULL keys."""
        return {"expired_rows": self.expired_rows, "right_rows": self.right_rows, "right_nulls": self.right_nulls}

    def state_tables(self) -> dict[str, pa.Table]:
        """Each side's stored rows (:meth:`~sqlstream.operators.join_state.RowChunks.to_tables`;
        ``arrival`` with a TTL, ``matches`` on an outer side)."""
        return {**self.state[0].to_tables("left"), **self.state[1].to_tables("right")}

    def load_state(self, values: dict, tables: dict[str, pa.Table]) -> None:
        self.expired_rows = values["expired_rows"]
        self.right_rows = values.get("right_rows", 0)
        self.right_nulls = values.get("right_nulls", 0)
        self.state[0].load_tables("left", tables)
        self.state[1].load_tables("right", tables)

    def state_size(self) -> StateSize:
        return self.state[0].state_size() + self.state[1].state_size()

    def retention_start(self) -> int | None:
        times = [t for t in (self.state[0].min_time(), self.state[1].min_time()) if t is not None]
        return min(times, default=None)
