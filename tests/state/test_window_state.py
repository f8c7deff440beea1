"""State stays bounded: 1M events over 1,000 keys in 1 s windows keep only the open
windows × keys (counted, not measured by RSS), closed windows are freed, and the
merge work is proportional to the windows that straddle batches."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from sqlstream.operators.window_aggregate import PaneWindowOperator, SessionWindowOperator, WindowAggregateOperator
from sqlstream.testing import TestSession

pytestmark = pytest.mark.timeout(120)

BASE_US = 1_699_000_000_000_000
KEYS = 1_000
SOURCE = """CREATE SOURCE src (sensor_id BIGINT, ts TIMESTAMP, v DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) WITH (connector = 'memory')"""


def events(rows: int, seconds: int, seed: int = 1) -> pa.Table:
    """``rows`` events over ``seconds`` of event time; 5% displaced up to 2 s back."""
    rng = np.random.default_rng(seed)
    times = BASE_US + np.sort(rng.integers(0, seconds * 1_000_000, rows))
    times -= np.where(rng.random(rows) < 0.05, rng.integers(0, 2_000_000, rows), 0)
    return pa.table({
        "sensor_id": rng.integers(0, KEYS, rows),
        "ts": pa.array(times, pa.timestamp("us")),
        "v": rng.normal(20, 5, rows),
    })


def start(query: str):
    session = TestSession()
    session.execute(SOURCE)
    session.execute(f"CREATE SINK out AS {query} WITH (connector = 'memory')")
    return session, session.start()


def operator(run, kind):
    (op,) = [o for o in run.driver.operators if isinstance(o, kind)]
    return op


def test_one_million_events_keep_only_the_open_tumbling_windows():
    data = events(1_000_000, 1_000)  # 1,000 events/s: ~630 keys per 1 s window
    session, run = start(
        "SELECT window_start, sensor_id, count(*) AS n, avg(v) AS a, max(v) AS m "
        "FROM TUMBLE(src, ts, INTERVAL '1' SECOND) GROUP BY window_start, window_end, sensor_id"
    )
    op = operator(run, WindowAggregateOperator)
    batch = 20_000  # 20 s of event time per batch
    open_windows, state_rows = [], []
    for i in range(0, data.num_rows, batch):
        session.stream("src").push(data.slice(i, batch))
        run.pump()
        open_windows.append(op.open_windows())
        state_rows.append(op.state_rows())
    # after each batch only the windows within the 2 s delay (plus the one being filled) are open
    assert max(open_windows) <= 4
    assert max(state_rows) <= 4 * KEYS
    assert run.state_rows() == op.state_rows()  # nothing else in the pipeline holds state
    metrics = {(r["kind"], r["name"]): r["rows"] for r in session.execute("SHOW METRICS")[0].table.to_pylist()}
    assert metrics[("state", "rows")] == op.state_rows() > 0
    run.finish()
    assert op.state_rows() == 0 and op.open_windows() == 0
    emitted = sum(b.num_rows for b in session.outputs["out"])
    assert emitted > 500_000  # every window × key was emitted once the state was freed


def test_tumbling_merges_only_windows_cut_by_a_batch_boundary():
    """Closing windows finalize straight from their batch's partials; only windows that
    a batch boundary cut through are merged, so merge work is a small fraction."""
    data = events(200_000, 200)
    session, run = start(
        "SELECT window_start, sensor_id, count(*) AS n FROM TUMBLE(src, ts, INTERVAL '1' SECOND) "
        "GROUP BY window_start, window_end, sensor_id"
    )
    op = operator(run, WindowAggregateOperator)
    aggregator = op.window_agg
    merged_rows = []
    partial_rows = []

    class CountingAggregator(type(aggregator)):
        def partial(self, table):
            part = super().partial(table)
            partial_rows.append(part.num_rows)
            return part

        def merge(self, parts, regroup=False):
            merged_rows.append(sum(p.num_rows for p in parts))
            return super().merge(parts, regroup)

    aggregator.__class__ = CountingAggregator  # the real aggregator, counted
    batch = 10_000
    session.stream("src").push(data, batch_size=batch)
    run.finish()
    assert sum(b.num_rows for b in session.outputs["out"]) > 100_000
    # the partial rows of windows that occur in more than one batch bound what may be merged
    window = (data.column("ts").cast(pa.int64()).to_numpy() - BASE_US) // 1_000_000
    pairs = window * KEYS + data.column("sensor_id").to_numpy()
    per_batch = [np.unique(pairs[i : i + batch]) for i in range(0, data.num_rows, batch)]
    windows, counts = np.unique(np.concatenate([np.unique(p // KEYS) for p in per_batch]), return_counts=True)
    straddling = windows[counts > 1]
    bound = sum(int(np.isin(p // KEYS, straddling).sum()) for p in per_batch)
    assert sum(partial_rows) == sum(len(p) for p in per_batch)
    assert 0 < sum(merged_rows) <= bound
    assert bound < 0.4 * sum(partial_rows)  # 2 s of delay in 10 s batches: most windows never merge


def test_hop_and_session_state_is_bounded_by_open_windows_and_keys():
    data = events(200_000, 400)  # 500 events/s
    for query, kind, bound in [
        ("SELECT window_start, sensor_id, count(*) AS n FROM HOP(src, ts, INTERVAL '1' SECOND, INTERVAL '5' SECOND) "
         "GROUP BY window_start, window_end, sensor_id", PaneWindowOperator, 8 * KEYS),
        ("SELECT window_start, sensor_id, count(*) AS n FROM SESSION(src, ts, INTERVAL '3' SECOND) "
         "GROUP BY window_start, window_end, sensor_id", SessionWindowOperator, 2 * KEYS),
    ]:
        session, run = start(query)
        op = operator(run, kind)
        sizes = []
        for i in range(0, data.num_rows, 10_000):  # 20 s per batch
            session.stream("src").push(data.slice(i, 10_000))
            run.pump()
            sizes.append(op.state_rows())
        assert max(sizes) <= bound, kind
        assert max(sizes[len(sizes) // 2:]) <= 1.5 * max(sizes[: len(sizes) // 2])  # does not grow with the input
        run.finish()
        assert op.state_rows() == 0


def test_unwindowed_group_by_state_is_one_row_per_key():
    data = events(100_000, 100)
    session, run = start("SELECT sensor_id, count(*) AS n, max(v) AS m FROM src GROUP BY sensor_id")
    session.stream("src").push(data, batch_size=10_000)
    run.pump()
    assert run.state_rows() == KEYS
    run.finish()
