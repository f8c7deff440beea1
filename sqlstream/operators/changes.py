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

from sqlstream.operators.keys import encode_keys

__all__ = ["ResultChanges", "diff_results", "op_column"]


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
