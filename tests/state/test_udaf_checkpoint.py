"""Checkpoints of Python aggregates: their state (collected values as Arrow lists, class
states pickled in a BYTEA column, failures) snapshots and restores exactly.

The same out-of-order input in small batches of seeded random sizes runs uninterrupted
and restarted from a checkpoint (each operator's snapshot through JSON and Arrow IPC
into a fresh build of the plan) at one boundary and at every fifth: the sink's rows,
in emission order, are identical, the restored operators describe the state they were
restored from, and the uninterrupted result is DuckDB's.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from sqlstream.changelog import fold_changelog
from sqlstream.runtime.operator_ids import checkpoint_operators
from sqlstream.testing import TestSession
from tests.differential import test_udaf_differential as udafs
from tests.differential import test_windows_differential as windows
from tests.state.test_snapshot_restore import assert_same_snapshot

EVENTS = windows.make_events(300, seed=5)
SIZES = [1, 2, 3, 8, 20]
SELECT = f"{udafs.SELECT}, picky_median(v) AS pm"
CASES = {
    "tumble": ("tumble", "WindowAggregateOperator"),
    "hop": ("hop", "PaneWindowOperator"),
    "session": ("session", "SessionWindowOperator"),
    "group by": (None, "GroupAggregateOperator"),
}


def _query(window: str | None) -> str:
    if window is None:
        return f"SELECT k, {udafs.SELECT} FROM events GROUP BY k"
    return udafs.window_query(window, SELECT)


def _run(window: str | None, restarts: set[int], seen: list | None = None) -> list[dict]:
    session = TestSession()
    for fn in (udafs.median, udafs.weighted_mean, udafs.sum_sq, udafs.picky_median):
        session.register_udf(fn)
    session.execute(windows.SOURCE_SQL)
    session.execute(f"CREATE SINK out AS {_query(window)} WITH (connector = 'memory')")
    run = session.start()
    rng = np.random.default_rng(7)
    start, i = 0, 0
    while start < EVENTS.num_rows:
        if i in restarts:
            snapshots = [op.snapshot() for _, op in checkpoint_operators(run.driver.sources)]
            run = run.restart()
            for old, new in zip(snapshots, [op.snapshot() for _, op in checkpoint_operators(run.driver.sources)], strict=True):
                assert_same_snapshot(old, new)
            if seen is not None:
                seen.extend(snapshots)
        size = int(rng.choice(SIZES))
        session.stream("events").push(EVENTS.slice(start, size))
        run.pump()
        start += size
        i += 1
    run.finish()
    return session.rows("out", fold=False)


@pytest.mark.parametrize("name", list(CASES))
def test_python_aggregate_state_survives_restarts(name):
    window, kind = CASES[name]
    expected = _run(window, set())
    assert expected
    seen: list = []
    for restarts in ({17}, set(range(5, 200, 5))):
        assert _run(window, restarts, seen) == expected, f"restarted at {sorted(restarts)}"
    held = [s for s in seen if s.kind == kind]
    state_tables = [t for s in held for n, t in s.tables.items() if "__udaf_state" in t.column_names]
    assert state_tables, "the Python aggregates' states are in the snapshot"
    types = {str(t.schema.field("__udaf_state").type) for t in state_tables}
    assert types == {"list<item: double>", "list<item: struct<c0: double, c1: int64>>", "binary"}
    folded = fold_changelog(expected)
    if window is None:
        theirs = udafs._group_by_duckdb(EVENTS, udafs.DUCK_SELECT)
        assert len(folded) == len(theirs)
    else:  # the windows where picky_median fails (three values) are dead letters
        theirs = windows.duckdb_rows(EVENTS, window, f"{udafs.DUCK_SELECT}, count(v) AS nv")
        kept = [{k: v for k, v in r.items() if k != "nv"} for r in theirs if r["nv"] != 3]
        assert len(kept) < len(theirs)
        windows.assert_same([{k: v for k, v in r.items() if k != "pm"} for r in folded], kept, udafs.KINDS)


def test_a_restored_class_state_is_the_pickled_value():
    """The class form's state is stored pickled: restored, it merges on as before."""
    seen: list = []
    _run("tumble", {9}, seen)
    tables = [t for s in seen for t in s.tables.values() if "__udaf_state" in t.column_names
              and pa.types.is_binary(t.schema.field("__udaf_state").type)]
    assert tables and all(t.column("__udaf_state").null_count == 0 for t in tables)
