"""The changelog between two versions of an aggregate result, vectorized.

Every updating aggregate (unwindowed GROUP BY, GROUP BY over a changelog, window
aggregates with EMIT EVERY) emits the same thing: for rows matched by their group
columns, ``-U`` old / ``+U`` new where the values changed (unchanged groups emit
nothing); ``+I`` for new groups; ``-D`` for groups that are gone.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.hidden import OP_COLUMN
from sqlstream.operators.keys import encode_keys

__all__ = ["ResultChanges", "diff_results", "op_column", "changelog_batch"]


@dataclass
class ResultChanges:
    gone: pa.Table  # old rows whose group is not in the new result (-D, if the caller says so)
    before: pa.Table  # -U: old values of changed groups, in the order of ``after``
    after: pa.Table  # +U
    inserted: pa.Table  # +I


def diff_results(old: pa.Table, new: pa.Table, group: list[str], values: list[str]) -> ResultChanges:
    """Changes from ``old`` to ``new`` (one row per group in each)."""
    old_keys, new_keys = encode_keys(old, group), encode_keys(new, group)
    index = pc.index_in(new_keys, value_set=old_keys, skip_nulls=False)
    existed = pc.is_valid(index)
    after = new.filter(existed)
    before = old.take(pc.drop_null(index))
    if values:
        a, b = encode_keys(before, values), encode_keys(after, values)
        same = pc.or_(pc.fill_null(pc.equal(a, b), False), pc.and_(pc.is_null(a), pc.is_null(b)))  # NULL = NULL here
        before, after = before.filter(pc.invert(same)), after.filter(pc.invert(same))
    gone = old.filter(pc.invert(pc.is_in(old_keys, value_set=new_keys, skip_nulls=False)))
    return ResultChanges(gone, before, after, new.filter(pc.invert(existed)))


def op_column(op: str, n: int) -> pa.Array:
    """The ``__op`` column of ``n`` rows of one change kind."""
    return pa.repeat(pa.scalar(op, pa.string()), n)


def changelog_batch(schema: pa.Schema, parts: list[tuple[pa.Table, str]],
                    sources: dict[str, str] | None = None) -> pa.RecordBatch | None:
    """One batch of ``schema`` holding each ``(table, op)`` part's rows in order, with
    ``__op`` set per part; ``sources`` names the part column an output column comes from
    where the names differ. None when no part has rows."""
    parts = [(table, op) for table, op in parts if table.num_rows]
    if not parts:
        return None
    columns = []
    for field in schema:
        if field.name == OP_COLUMN:
            pieces = [op_column(op, table.num_rows) for table, op in parts]
        else:
            name = (sources or {}).get(field.name, field.name)
            pieces = []
            for table, _ in parts:
                column = table.column(name).combine_chunks()
                pieces.append(column.cast(field.type) if column.type != field.type else column)
        columns.append(pa.concat_arrays(pieces) if len(pieces) > 1 else pieces[0])
    return pa.RecordBatch.from_arrays(columns, schema=schema)
