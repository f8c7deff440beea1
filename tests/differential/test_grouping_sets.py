"""ROLLUP, CUBE and GROUPING SETS (and GROUPING()) vs DuckDB (batch) over the same data.

Unwindowed: each grouping set is a changelog; the folded union equals DuckDB's result.
Windowed (TUMBLE, HOP, SESSION; window columns in every set): final rows per window,
each emitted once. Events out of order within the watermark delay, batches of 1, 7, 64.
"""

from __future__ import annotations

import math

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from sqlstream.errors import SqlStreamError
from sqlstream.hidden import OP_COLUMN
from sqlstream.testing import TestSession

BASE_US = 1_699_000_000_000_000
DELAY_US = 2_000_000
SOURCE_SQL = """CREATE SOURCE events (k BIGINT, g VARCHAR, v DOUBLE, ts TIMESTAMP,
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) WITH (connector = 'memory')"""
_FLOOR = "(us - (((us % {n}) + {n}) % {n}))"
WINDOWS = {
    "tumble": ("TUMBLE(events, ts, INTERVAL '5' SECOND)",
               f"(SELECT *, {_FLOOR.format(n=5_000_000)} AS ws, {_FLOOR.format(n=5_000_000)} + 5000000 AS we "
               "FROM (SELECT *, epoch_us(ts) AS us FROM events))"),
    "hop": ("HOP(events, ts, INTERVAL '2' SECOND, INTERVAL '4' SECOND)",
            f"(SELECT *, ws + 4000000 AS we FROM (SELECT *, unnest(range({_FLOOR.format(n=2_000_000)}, us - 4000000, -2000000)) AS ws "
            "FROM (SELECT *, epoch_us(ts) AS us FROM events)))"),
}
GROUPINGS = {
    "rollup": "ROLLUP (k, g)",
    "cube": "CUBE (k, g)",
    "sets": "GROUPING SETS ((k, g), (g), ())",
}
AGGREGATES = "count(*) AS n, sum(v) AS s, max(v) AS mx, count(DISTINCT g) AS dg, GROUPING(k, g) AS gk"


def make_events(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    times = BASE_US + np.sort(rng.integers(0, rows * 100_000, rows))
    times = times - np.where(rng.random(rows) < 0.33, rng.integers(0, DELAY_US + 1, rows), 0)
    return pa.table({
        "k": pa.array(rng.integers(0, 4, rows), mask=rng.random(rows) < 0.05),
        "g": pa.array(np.array(["x", "y", "z"])[rng.integers(0, 3, rows)], mask=rng.random(rows) < 0.05),
        "v": pa.array(rng.normal(10.0, 3.0, rows).round(2), mask=rng.random(rows) < 0.05),
        "ts": pa.array(times, pa.timestamp("us")),
    })


@pytest.fixture(scope="module")
def events():
    return make_events(400, 5)


def stream(events, sql: str, batch_size: int) -> list[dict]:
    session = TestSession()
    if batch_size == 1:  # a millisecond per batch per stage: fewer rows
        events = events.slice(0, 60)
    session.execute(SOURCE_SQL)
    session.stream("events").push(events, batch_size=batch_size).finish()
    rows = session.run_query(sql, fold=False)
    assert session.last_summary.dead_letters == {}
    return rows


def batch(events, sql: str) -> list[dict]:
    con = duckdb.connect()
    con.register("events", events)
    return con.sql(sql).to_arrow_table().to_pylist()


def canonical(rows: list[dict]) -> list[tuple]:
    def value(v):
        return round(v, 6) if isinstance(v, float) and not math.isnan(v) else v

    return sorted(tuple((c, v is None, value(v) if v is not None else 0) for c, v in sorted(r.items())) for r in rows)


def _fold(rows: list[dict]) -> list[dict]:
    from sqlstream.changelog import fold_changelog

    return fold_changelog(rows)


@pytest.mark.parametrize(("grouping", "batch_size"), [(g, 7) for g in GROUPINGS] + [("rollup", 1), ("cube", 64)])
def test_unwindowed_grouping_sets_fold_to_duckdb(events, grouping, batch_size):
    sql = f"SELECT k, g, {AGGREGATES} FROM events GROUP BY {GROUPINGS[grouping]}"
    changes = stream(events, sql, batch_size)
    assert changes and all(OP_COLUMN in r for r in changes)
    expected = batch(events.slice(0, 60) if batch_size == 1 else events, sql)
    assert len(expected) > 5 and canonical(_fold(changes)) == canonical(expected)


def test_having_and_expressions_over_keys(events):
    sql = ("SELECT upper(g) AS ug, k + 1 AS k1, count(*) AS n, GROUPING(g) AS gg FROM events "
           "GROUP BY CUBE (k, g) HAVING count(*) > 20 OR GROUPING(k) = 1")
    assert canonical(_fold(stream(events, sql, 16))) == canonical(batch(events, sql))


@pytest.mark.parametrize("window", list(WINDOWS))
@pytest.mark.parametrize(("grouping", "batch_size"), [(g, 16) for g in GROUPINGS] + [("cube", 1)])
def test_windowed_grouping_sets_are_final_per_window(events, window, grouping, batch_size):
    ours, theirs = WINDOWS[window]
    sql = (f"SELECT window_start, window_end, k, g, {AGGREGATES} FROM {ours} "
           f"GROUP BY window_start, window_end, {GROUPINGS[grouping]}")
    duck = (f"SELECT make_timestamp(ws) AS window_start, make_timestamp(we) AS window_end, k, g, {AGGREGATES} "
            f"FROM {theirs} GROUP BY ws, we, {GROUPINGS[grouping]}")
    rows = stream(events, sql, batch_size)
    expected = batch(events.slice(0, 60) if batch_size == 1 else events, duck)
    assert len(expected) > 20 and all(OP_COLUMN not in r for r in rows)  # final rows, each once
    assert canonical(rows) == canonical(expected)


@pytest.mark.parametrize(("sql", "where", "message"), [
    ("SELECT count(*) FROM events GROUP BY ROLLUP (upper(g))", "upper(g))", "ROLLUP, CUBE and GROUPING SETS group by columns only"),
    ("SELECT window_start, count(*) FROM TUMBLE(events, ts, INTERVAL '5' SECOND) GROUP BY window_end, ROLLUP (window_start, k)",
     "window_start, k)", "window_start must be in every grouping set"),
    ("SELECT GROUPING(v) FROM events GROUP BY ROLLUP (k)", "v)", "GROUPING(v): not a grouping key"),
])
def test_refused_forms_are_located(sql, where, message):
    session = TestSession()
    session.execute(SOURCE_SQL)
    statement = f"CREATE SINK out AS {sql} WITH (connector = 'memory')"
    with pytest.raises(SqlStreamError) as caught:
        session.execute(statement, path="pipe.sql")
    assert str(caught.value).startswith(f"pipe.sql:1:{statement.index(where) + 1}: error: {message}")


def _duck_sessions(keys: str) -> str:
    """DuckDB: 2 s sessions of ``events`` partitioned by ``keys`` (a SQL list, may be empty)."""
    by = f"PARTITION BY {keys}" if keys else ""
    session = f"PARTITION BY {keys}, sid" if keys else "PARTITION BY sid"
    return f"""(SELECT *, min(us) OVER s AS ws, max(us) OVER s + 2000000 AS we FROM (
                 SELECT *, sum(brk) OVER ({by} ORDER BY us, idx ROWS UNBOUNDED PRECEDING) AS sid FROM (
                   SELECT *, CASE WHEN us - lag(us) OVER ({by} ORDER BY us, idx) < 2000000 THEN 0 ELSE 1 END AS brk
                   FROM (SELECT *, epoch_us(ts) AS us, row_number() OVER () AS idx FROM events)))
               WINDOW s AS ({session}))"""


def test_session_rollup_sessionizes_each_set_by_its_keys(events):
    """SESSION windows are per GROUP BY key: the (k) set has sessions per k, the () set
    sessions over all rows."""
    sql = ("SELECT window_start, window_end, k, count(*) AS n, GROUPING(k) AS gk "
           "FROM SESSION(events, ts, INTERVAL '2' SECOND) GROUP BY window_start, window_end, ROLLUP (k)")
    duck = " UNION ALL ".join(
        f"SELECT make_timestamp(ws) AS window_start, make_timestamp(we) AS window_end, {key} AS k, count(*) AS n, {gk} AS gk "
        f"FROM {_duck_sessions(keys)} GROUP BY ws, we{', k' if keys else ''}"
        for key, keys, gk in (("k", "k", 0), ("CAST(NULL AS BIGINT)", "", 1))
    )
    rows = stream(events, sql, 16)
    expected = batch(events, duck)
    assert any(r["gk"] == 1 for r in expected) and all(OP_COLUMN not in r for r in rows)
    assert canonical(rows) == canonical(expected)
