"""OVER aggregations by event time vs DuckDB (batch).

The events of the window differential tests (out of order within the 2 s watermark
delay, never late), and a copy with times cut to whole seconds (many equal times: RANGE
frames hold their peers, ROWS frames and LAG/LEAD take the earlier arrival first, so
DuckDB orders by ``ts, idx``), fed in batches of 1, 7, 100 and 10,000 rows and in a
random mix: every input row comes out once, with DuckDB's window values.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlstream.errors import SqlStreamError
from sqlstream.testing import TestSession
from tests.differential.test_ranking import duck, stream
from tests.differential.test_windows_differential import DELAY_US, SOURCE_SQL, make_events

pytestmark = pytest.mark.timeout(300)

SIZES = {1: 250, 7: 1_500, 100: 4_000, 10_000: 20_000}
RANGE = "PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '3' SECOND PRECEDING AND CURRENT ROW"
ROWS = "PARTITION BY k ORDER BY ts ROWS BETWEEN 3 PRECEDING AND CURRENT ROW"

# name → (sqlstream, DuckDB); DuckDB breaks ties by arrival (idx) where sqlstream does
QUERIES = {
    "range aggregates": (
        f"""SELECT idx, k, count(*) OVER ({RANGE}) AS c, count(v) OVER ({RANGE}) AS cv, sum(v) OVER ({RANGE}) AS s,
                   avg(v) OVER ({RANGE}) AS a, min(x) OVER ({RANGE}) AS mn, max(v) OVER ({RANGE}) AS mx,
                   sum(x) OVER ({RANGE}) AS sx, max(ts) OVER ({RANGE}) AS mts FROM events""",
        None,
    ),
    "rows aggregates": (
        f"""SELECT idx, k, count(*) OVER ({ROWS}) AS c, sum(v) OVER ({ROWS}) AS s, avg(x) OVER ({ROWS}) AS a,
                   min(v) OVER ({ROWS}) AS mn, max(x) OVER ({ROWS}) AS mx FROM events""",
        "ORDER BY ts, idx ROWS",
    ),
    "lag and lead": (
        """SELECT idx, k, x, lag(x) OVER (PARTITION BY k ORDER BY ts) AS l1, lag(v, 3) OVER (PARTITION BY k ORDER BY ts) AS l3,
                  lead(x, 2) OVER (PARTITION BY k ORDER BY ts) AS n2 FROM events""",
        "ORDER BY ts, idx)",
    ),
    "expressions, WHERE, partition by an expression, no partition": (
        """SELECT idx, g, v - avg(v) OVER (PARTITION BY g, k % 2 ORDER BY ts RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW)
                  AS dev, 1 + count(*) OVER (PARTITION BY g, k % 2 ORDER BY ts ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS c
           FROM events WHERE x > 5""",
        "ORDER BY ts, idx ROWS",
    ),
    "unbounded frames (the default with ORDER BY, ROWS and RANGE)": (
        """SELECT idx, k, sum(x) OVER (PARTITION BY k ORDER BY ts) AS s, count(*) OVER (PARTITION BY k ORDER BY ts) AS c,
                  avg(v) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS a,
                  min(v) OVER (PARTITION BY k ORDER BY ts RANGE UNBOUNDED PRECEDING) AS mn,
                  max(ts) OVER (PARTITION BY k ORDER BY ts ROWS UNBOUNDED PRECEDING) AS mx,
                  count(v) OVER (PARTITION BY k ORDER BY ts ROWS 2 PRECEDING) AS c2 FROM events""",
        "ORDER BY ts, idx ROWS",
    ),
    "one partition": (
        """SELECT idx, sum(x) OVER (ORDER BY ts RANGE BETWEEN INTERVAL '1' SECOND PRECEDING AND CURRENT ROW) AS s,
                  lag(idx) OVER (ORDER BY ts) AS prev FROM events""",
        "ORDER BY ts, idx)",
    ),
}


def duck_sql(name: str) -> str:
    ours, tie = QUERIES[name]
    if tie is None:
        return ours
    return ours.replace(tie.replace("ts, idx", "ts"), tie)


def whole_seconds(events: pa.Table) -> pa.Table:
    """Times cut to whole seconds: many rows with equal times."""
    us = pa.compute.cast(events.column("ts"), pa.int64()).to_numpy()
    return events.set_column(3, "ts", pa.array(us - us % 1_000_000, pa.timestamp("us")))


def assert_rows(ours: list[dict], theirs: list[dict]) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(sorted(ours, key=lambda r: r["idx"]), sorted(theirs, key=lambda r: r["idx"]), strict=True):
        assert a.keys() == b.keys()
        for name in a:
            x, y = a[name], b[name]
            if isinstance(x, float) and y is not None:
                assert math.isclose(x, float(y), rel_tol=1e-9, abs_tol=1e-7), (name, a, b)
            else:
                assert x == y, (name, a, b)


@pytest.fixture(scope="module")
def events():
    return {rows: make_events(rows, seed=rows + 2) for rows in set(SIZES.values())}


@pytest.mark.parametrize("name", list(QUERIES))
@pytest.mark.parametrize("batch_size", list(SIZES))
def test_over_matches_duckdb(events, name, batch_size):
    data = events[SIZES[batch_size]]
    assert_rows(stream(data, QUERIES[name][0], [batch_size]), duck(data, duck_sql(name)))


@pytest.mark.parametrize("name", list(QUERIES))
def test_equal_times_and_random_batch_sizes_match_duckdb(events, name):
    data = whole_seconds(events[4_000])
    cuts = np.random.default_rng(len(name)).choice([1, 7, 100, 1_000], 60).tolist()
    assert_rows(stream(data, QUERIES[name][0], cuts), duck(data, duck_sql(name)))


def test_rows_come_out_in_event_time_order_once_the_watermark_passes_them(events):
    data = events[1_500]
    session = TestSession()
    session.execute(SOURCE_SQL)
    session.execute(f"CREATE SINK out AS SELECT idx, ts, count(*) OVER ({RANGE}) AS c FROM events WITH (connector = 'memory')")
    run = session.start()
    session.stream("events").push(data.slice(0, 700))
    run.pump()
    out = session.rows("out")
    times = pa.compute.cast(data.column("ts"), pa.int64()).to_numpy()
    watermark = times[:700].max() - DELAY_US
    assert {r["idx"] for r in out} == {i for i in range(700) if times[i] < watermark}
    assert [r["ts"] for r in out] == sorted(r["ts"] for r in out)


def test_over_state_shrinks_as_the_watermark_passes(events):
    data = events[20_000]  # 5 events/s: a 3 s frame + 2 s delay hold some tens of rows
    session = TestSession()
    session.execute(SOURCE_SQL)
    session.execute(f"CREATE SINK out AS SELECT idx, sum(v) OVER ({RANGE}) AS s, lag(x, 2) OVER (PARTITION BY k ORDER BY ts) AS l "
                    "FROM events WITH (connector = 'memory')")
    run = session.start()
    held = []
    for start in range(0, data.num_rows, 500):
        session.stream("events").push(data.slice(start, 500))
        run.pump()
        held.append(run.state_rows())
    # each step: its 500 rows (100 s) wait for the watermark, earlier ones are trimmed to the
    # frame (3 s + 2 s delay, ~25 rows) and the last 2 rows per key (11 keys) for lag
    assert max(held) <= 500 + 25 + 2 * 11 + 40
    assert held[-1] < 600


def test_unbounded_frames_hold_one_totals_row_per_key(events):
    data = events[20_000]
    session = TestSession()
    session.execute(SOURCE_SQL)
    session.execute("CREATE SINK out AS SELECT idx, sum(x) OVER (PARTITION BY k ORDER BY ts) AS s FROM events WITH (connector = 'memory')")
    run = session.start()
    keys = len(set(data.column("k").to_pylist()))
    for start in range(0, data.num_rows, 2_000):
        session.stream("events").push(data.slice(start, 2_000))
        run.pump()
        assert run.state_rows() <= keys + 2_000 + 20  # totals per key + rows waiting for the watermark


def test_late_rows_go_to_dead_letters_and_the_rest_matches_duckdb(events):
    data = events[1_500]
    rng = np.random.default_rng(5)
    times = pa.compute.cast(data.column("ts"), pa.int64()).to_numpy()
    times = times - np.where(rng.random(times.size) < 0.1, rng.integers(3_000_000, 9_000_000, times.size), 0)
    data = data.set_column(3, "ts", pa.array(times, pa.timestamp("us")))
    marks = np.maximum.accumulate(np.r_[-(2**62) + DELAY_US, times[:-1]]) - DELAY_US  # each row's __wm stamp
    late = times < marks
    session = TestSession()
    session.execute(SOURCE_SQL)
    session.stream("events").push(data, batch_size=7).finish()
    got = session.run_query(QUERIES["rows aggregates"][0])
    assert session.last_summary.dead_letters == {"late": int(late.sum())} and late.sum() > 20
    assert_rows(got, duck(data.filter(pa.array(~late)), duck_sql("rows aggregates")))


@pytest.mark.parametrize("sql,at,message", [
    ("SELECT sum(v) OVER (PARTITION BY k ORDER BY v ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS s FROM events",
     "sum(v)", "window functions (OVER) over a stream need ORDER BY its event-time column (ascending)"),
    ("SELECT sum(v) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN 3 PRECEDING AND CURRENT ROW) AS s FROM events",
     "sum(v)", "a RANGE frame over event time needs an INTERVAL"),
    ("SELECT sum(v) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 1 PRECEDING AND 1 FOLLOWING) AS s FROM events",
     "sum(v)", "only frames BETWEEN ... PRECEDING AND CURRENT ROW are supported on a stream"),
    ("SELECT sum(v) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS s, "
     "lag(v) OVER (PARTITION BY g ORDER BY ts) AS l FROM events",
     "lag(v)", "every window function of a SELECT needs the same PARTITION BY and ORDER BY"),
    ("SELECT RANK() OVER (PARTITION BY k ORDER BY ts) AS r FROM events",
     "RANK", "RANK() OVER (...) is not supported on a stream"),
    ("SELECT sum(g) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS s FROM events",
     "sum(g)", "sum() OVER (...) over a value of type string is not supported on a stream"),
    ("SELECT lag(v, 1, 0) OVER (PARTITION BY k ORDER BY ts) AS s FROM events",
     "lag(v", "LAG() with a default value is not supported on a stream"),
    ("SELECT k, sum(n) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS s "
     "FROM (SELECT k, max(ts) AS ts, count(*) AS n FROM events GROUP BY k)",
     "sum(n)", "window functions (OVER) over an updating result are not supported"),
])
def test_refused_forms_point_at_the_sql(sql, at, message):
    session = TestSession()
    session.execute(SOURCE_SQL)
    statement = f"CREATE SINK out AS {sql} WITH (connector = 'memory')"
    with pytest.raises(SqlStreamError) as caught:
        session.execute(statement, path="pipe.sql")
    text = str(caught.value)
    assert text.startswith(f"pipe.sql:1:{statement.index(at) + 1}: error: {message}"), text


def test_a_window_aggregation_over_over_rows_matches_duckdb(events):
    """OVER output keeps the event-time column and the rows' watermark stamps: a TUMBLE
    over it is final per window and none of its rows is late."""
    data = events[1_500]
    ours = stream(data, """SELECT window_start, count(*) AS n, sum(c) AS sc FROM TUMBLE(
                             (SELECT ts, count(*) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS c
                              FROM events), ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end""", [50])
    theirs = duck(data, """SELECT time_bucket(INTERVAL 10 SECOND, ts) AS window_start, count(*) AS n, sum(c)::BIGINT AS sc FROM (
                             SELECT ts, count(*) OVER (PARTITION BY k ORDER BY ts, idx ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS c
                             FROM events) GROUP BY 1""")
    assert len(theirs) > 20
    assert sorted(map(tuple, (r.values() for r in ours))) == sorted(map(tuple, (r.values() for r in theirs)))


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 8), st.one_of(st.none(), st.integers(-5, 5))), min_size=1, max_size=50),
    cuts=st.lists(st.integers(1, 9), min_size=1, max_size=4),
    preceding=st.integers(0, 3),
)
def test_any_ties_and_batches_match_duckdb(rows, cuts, preceding):
    """Keys, times within the watermark delay (in seconds: many ties, out of order) and
    values drawn at random: every frame kind gives DuckDB's values."""
    data = make_events(len(rows), seed=3)
    base = pa.compute.cast(data.column("ts"), pa.int64()).to_numpy().min()
    us = [int(base) + 60_000_000 + t * 1_000_000 // 4 for _, t, _ in rows]  # 0.25 s steps: within the 2 s delay
    data = data.set_column(1, "k", pa.array([k for k, _, _ in rows], pa.int64()))
    data = data.set_column(3, "ts", pa.array(us, pa.timestamp("us")))
    data = data.set_column(5, "x", pa.array([x for _, _, x in rows], pa.int64()))
    frame = f"PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '{preceding}' SECOND PRECEDING AND CURRENT ROW"
    sql = f"""SELECT idx, sum(x) OVER ({frame}) AS s, max(x) OVER ({frame}) AS m, count(x) OVER ({frame}) AS c,
                     min(x) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN {preceding} PRECEDING AND CURRENT ROW) AS r,
                     sum(x) OVER (PARTITION BY k ORDER BY ts) AS u,
                     lag(x, {preceding + 1}) OVER (PARTITION BY k ORDER BY ts) AS l,
                     lead(x, {preceding + 1}) OVER (PARTITION BY k ORDER BY ts) AS n FROM events"""
    theirs = sql.replace("ORDER BY ts ROWS", "ORDER BY ts, idx ROWS").replace("ORDER BY ts) AS l", "ORDER BY ts, idx) AS l")
    theirs = theirs.replace("ORDER BY ts) AS n", "ORDER BY ts, idx) AS n")
    assert_rows(stream(data, sql, cuts), duck(data, theirs))
