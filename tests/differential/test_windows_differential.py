"""Windowed aggregation vs DuckDB (batch) over the same generated data.

Every window kind × every aggregate function, on events that arrive out of order
(within the watermark delay, so none is late), fed in batches of 1, 7, 100 and
10,000 rows and in a random mix of those: the streaming result must be the same
multiset of rows as DuckDB's (floats within tolerance, approx_distinct within its
error). DuckDB computes windows with integer arithmetic on epoch microseconds and
``first_value``/``last_value`` as ``arg_min``/``arg_max`` over the arrival index.
"""

from __future__ import annotations

import math

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from sqlstream.testing import TestSession

BASE_US = 1_699_000_000_000_000  # before the manual clock: max_future never fires
DELAY_US = 2_000_000
SOURCE_SQL = """CREATE SOURCE events (idx BIGINT, k BIGINT, g VARCHAR, ts TIMESTAMP, v DOUBLE, x BIGINT,
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) WITH (connector = 'memory')"""

# window kind → (sqlstream FROM item, DuckDB relation with ws/we columns over `data`)
_FLOOR = "({us} - ((({us} % {n}) + {n}) % {n}))"


def _floor(n: int, us: str = "us") -> str:
    return _FLOOR.format(us=us, n=n)


WINDOWS = {
    "tumble": (
        "TUMBLE(events, ts, INTERVAL '5' SECOND)",
        f"SELECT *, {_floor(5_000_000)} AS ws, {_floor(5_000_000)} + 5000000 AS we FROM data",
    ),
    # size 5 s is not a multiple of the 2 s slide
    "hop": (
        "HOP(events, ts, INTERVAL '2' SECOND, INTERVAL '5' SECOND)",
        f"SELECT *, ws, ws + 5000000 AS we FROM (SELECT *, unnest(range({_floor(2_000_000)}, us - 5000000, -2000000)) AS ws FROM data)",
    ),
    "cumulate": (
        "CUMULATE(events, ts, INTERVAL '2' SECOND, INTERVAL '6' SECOND)",
        f"""SELECT *, {_floor(6_000_000)} AS ws, we FROM (
              SELECT *, unnest(range({_floor(6_000_000)} + ((us - {_floor(6_000_000)}) // 2000000 + 1) * 2000000,
                                     {_floor(6_000_000)} + 6000000 + 1, 2000000)) AS we FROM data)""",
    ),
    "session": (
        "SESSION(events, ts, INTERVAL '2' SECOND)",
        """SELECT *, min(us) OVER s AS ws, max(us) OVER s + 2000000 AS we FROM (
              SELECT *, sum(brk) OVER (PARTITION BY k ORDER BY us, idx ROWS UNBOUNDED PRECEDING) AS sid FROM (
                SELECT *, CASE WHEN us - lag(us) OVER (PARTITION BY k ORDER BY us, idx) < 2000000 THEN 0 ELSE 1 END AS brk
                FROM data))
           WINDOW s AS (PARTITION BY k, sid)""",
    ),
}

AGGREGATES = [
    # (sqlstream, DuckDB, comparison)
    ("count(*)", "count(*)", "exact"),
    ("count(v)", "count(v)", "exact"),
    ("count(DISTINCT x)", "count(DISTINCT x)", "exact"),
    ("sum(v)", "sum(v)", "float"),
    ("sum(x)", "sum(x)", "exact"),
    ("avg(v)", "avg(v)", "float"),
    ("min(v)", "min(v)", "exact"),
    ("max(x)", "max(x)", "exact"),
    ("min(g)", "min(g)", "exact"),
    ("max(ts)", "max(ts)", "exact"),
    ("stddev(v)", "stddev_samp(v)", "float"),
    ("stddev_pop(v)", "stddev_pop(v)", "float"),
    ("variance(x)", "var_samp(x)", "float"),
    ("var_pop(v)", "var_pop(v)", "float"),
    ("first_value(v)", "arg_min(v, idx) FILTER (WHERE v IS NOT NULL)", "exact"),
    ("last_value(g)", "arg_max(g, idx) FILTER (WHERE g IS NOT NULL)", "exact"),
    ("approx_distinct(x)", "count(DISTINCT x)", "approx"),
]


def make_events(rows: int, seed: int) -> pa.Table:
    """Arrival order; event times of 10 keys (+ NULL) at ~0.5 events/s per key, so
    sessions with a 2 s gap have a few rows each. A third of the events are displaced
    back by up to the 2 s watermark delay: out of order, never late."""
    rng = np.random.default_rng(seed)
    span = rows * 200_000  # 5 events per second in total
    times = BASE_US + np.sort(rng.integers(0, span, rows))
    displaced = rng.random(rows) < 0.33
    times = times - np.where(displaced, rng.integers(0, DELAY_US + 1, rows), 0)
    k = rng.integers(0, 10, rows)
    v = rng.normal(20.0, 5.0, rows).round(3)
    x = rng.integers(0, 40, rows)
    g = np.array(["alpha", "beta", "gamma", "delta", "eps"])[rng.integers(0, 5, rows)]
    return pa.table(
        {
            "idx": np.arange(rows, dtype=np.int64),
            "k": pa.array(k, mask=rng.random(rows) < 0.04),
            "g": pa.array(g, mask=rng.random(rows) < 0.1),
            "ts": pa.array(times, pa.timestamp("us")),
            "v": pa.array(v, mask=rng.random(rows) < 0.08),
            "x": pa.array(x, mask=rng.random(rows) < 0.08),
        }
    )


def duckdb_rows(events: pa.Table, window: str, select: str, having: str = "") -> list[dict]:
    con = duckdb.connect()
    data = events.append_column("us", pa.compute.cast(events.column("ts"), pa.int64()))  # noqa: F841 - used by SQL
    con.register("data", data)
    sql = f"""SELECT make_timestamp(ws) AS window_start, make_timestamp(we) AS window_end, k, {select}
              FROM ({WINDOWS[window][1]}) GROUP BY ws, we, k {having}"""
    return con.sql(sql).to_arrow_table().to_pylist()


def stream_rows(events: pa.Table, window: str, select: str, cuts: list[int], having: str = "") -> list[dict]:
    session = TestSession()
    session.execute(SOURCE_SQL)
    stream = session.stream("events")
    start = 0
    i = 0
    while start < events.num_rows:
        size = cuts[i % len(cuts)]
        stream.push(events.slice(start, size))
        start += size
        i += 1
    stream.finish()
    sql = f"""SELECT window_start, window_end, k, {select}
              FROM {WINDOWS[window][0]} GROUP BY window_start, window_end, k {having}"""
    rows = session.run_query(sql)
    assert session.last_summary.dead_letters == {}, "events within the watermark delay are never late"
    return rows


def _sort_key(row: dict):
    return tuple((v is None, v if v is not None else 0) for v in (row["window_start"], row["window_end"], row["k"]))


def assert_same(ours: list[dict], theirs: list[dict], kinds: dict[str, str]) -> None:
    assert len(ours) == len(theirs)
    ours, theirs = sorted(ours, key=_sort_key), sorted(theirs, key=_sort_key)
    for a, b in zip(ours, theirs, strict=True):
        assert (a["window_start"], a["window_end"], a["k"]) == (b["window_start"], b["window_end"], b["k"])
        for name, kind in kinds.items():
            x, y = a[name], b[name]
            if kind == "exact" or x is None or y is None:
                assert x == y, (name, a, b)
            elif kind == "float":
                assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9), (name, x, y)
            else:  # approx_distinct: HyperLogLog, ~1.6% standard error, near exact when small
                assert abs(x - y) <= max(1, 0.05 * y), (name, x, y)


SELECT = ", ".join(f"{ours} AS a{i}" for i, (ours, _, _) in enumerate(AGGREGATES))
DUCK_SELECT = ", ".join(f"{theirs} AS a{i}" for i, (_, theirs, _) in enumerate(AGGREGATES))
KINDS = {f"a{i}": kind for i, (_, _, kind) in enumerate(AGGREGATES)}

# batch size → rows of input (batch size 1 costs ~1 ms per batch per stage: keep it small)
SIZES = {1: 250, 7: 1_500, 100: 4_000, 10_000: 20_000}


@pytest.fixture(scope="module")
def events():
    return {rows: make_events(rows, seed=rows) for rows in set(SIZES.values())}


@pytest.mark.parametrize("window", list(WINDOWS))
@pytest.mark.parametrize("batch_size", list(SIZES))
def test_every_aggregate_matches_duckdb(events, window, batch_size):
    data = events[SIZES[batch_size]]
    ours = stream_rows(data, window, SELECT, [batch_size])
    theirs = duckdb_rows(data, window, DUCK_SELECT)
    assert len(theirs) > 20
    assert_same(ours, theirs, KINDS)


@pytest.mark.parametrize("window", list(WINDOWS))
def test_random_batch_sizes_match_duckdb(events, window):
    data = events[4_000]
    cuts = np.random.default_rng(len(window)).choice([1, 7, 100, 1_000], 60).tolist()
    ours = stream_rows(data, window, SELECT, cuts)
    assert_same(ours, duckdb_rows(data, window, DUCK_SELECT), KINDS)


@pytest.mark.parametrize("window", list(WINDOWS))
def test_having_matches_duckdb(events, window):
    data = events[1_500]
    having = "HAVING count(*) >= 2 AND max(v) > 20"
    ours = stream_rows(data, window, "count(*) AS n, max(v) AS mv", [7], having)
    theirs = duckdb_rows(data, window, "count(*) AS n, max(v) AS mv", having)
    assert 0 < len(theirs)
    assert_same(ours, theirs, {"n": "exact", "mv": "exact"})


@pytest.mark.parametrize("window", list(WINDOWS))
def test_emit_every_changelog_folds_to_duckdb(events, window):
    """Early results every second of processing time, between batches: the changelog
    folds to the same final rows (and the final rows equal DuckDB's)."""
    data = events[1_500]
    session = TestSession()
    session.execute(SOURCE_SQL)
    session.execute(f"""CREATE SINK out AS SELECT window_start, window_end, k, count(*) AS a0, sum(x) AS a1,
                          count(DISTINCT x) AS a2, first_value(v) AS a3
                        FROM {WINDOWS[window][0]} GROUP BY window_start, window_end, k
                        EMIT EVERY INTERVAL '1' SECOND WITH (connector = 'memory')""")
    run = session.start()
    for start in range(0, data.num_rows, 100):
        session.stream("events").push(data.slice(start, 100))
        run.pump().advance(1.0)
    run.finish()
    changes = session.rows("out", fold=False)
    # windows keep their bounds and are updated in place; a growing session changes its bounds
    assert ({"-D", "+I"} if window == "session" else {"-U", "+U"}) <= {r["__op"] for r in changes}
    theirs = duckdb_rows(data, window, "count(*) AS a0, sum(x) AS a1, count(DISTINCT x) AS a2, "
                                       "arg_min(v, idx) FILTER (WHERE v IS NOT NULL) AS a3")
    assert_same(session.rows("out"), theirs, {"a0": "exact", "a1": "exact", "a2": "exact", "a3": "exact"})


@pytest.mark.parametrize("window", ["tumble", "hop", "cumulate"])
def test_batches_split_into_row_pieces_match_duckdb(events, window, monkeypatch):
    """Large batches are aggregated in pieces of consecutive rows on several threads
    (sqlstream.operators.row_pieces): with 300-row pieces every batch of 1,000 rows is
    split, windows cut by a piece boundary are merged, HOP/CUMULATE windows are
    combined per range of window starts, and every aggregate still matches
    (first/last_value: the pieces stay in arrival order)."""
    monkeypatch.setattr("sqlstream.operators.row_pieces.PIECE_ROWS", 300)
    data = events[4_000]
    ours = stream_rows(data, window, SELECT, [1_000])
    assert_same(ours, duckdb_rows(data, window, DUCK_SELECT), KINDS)
    assert stream_rows(data, window, SELECT, [1_000]) == ours  # and the same values, run after run
