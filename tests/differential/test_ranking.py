"""Top-N per key and deduplication over an unbounded stream vs DuckDB (batch).

The events of the window differential tests (``make_events``: 10 keys + NULL, a third
of the rows displaced back within the 2 s watermark delay, so out of order but never
late), fed in batches of 1, 7, 100 and 10,000 rows and in a random mix: the folded
changelog (Top-N, keep-last) or the append-only rows (keep-first) must be DuckDB's
``ROW_NUMBER() ... WHERE rn <= N``. DuckDB breaks ties by ``idx`` (the arrival
index) the way sqlstream does: the first arrived ranks first, except keep-last
(ORDER BY the event time DESC), where the last arrived wins.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlstream.changelog import ADD_OPS
from sqlstream.errors import SqlStreamError
from sqlstream.testing import TestSession
from tests.differential.test_joins import assert_same
from tests.differential.test_windows_differential import SOURCE_SQL, make_events

pytestmark = pytest.mark.timeout(300)

SIZES = {1: 250, 7: 1_500, 100: 4_000, 10_000: 20_000}

# (sqlstream query over `events`, DuckDB query over `events`)
QUERIES = {
    "top3 with rank": (
        "SELECT * FROM (SELECT k, v, idx, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) AS rn FROM events) WHERE rn <= 3",
        "SELECT * FROM (SELECT k, v, idx, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC NULLS FIRST, idx) AS rn FROM events) WHERE rn <= 3",
    ),
    "top3 without rank, rn < 4": (
        "SELECT k, v, idx FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) AS rn FROM events) WHERE rn < 4",
        "SELECT k, v, idx FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC NULLS FIRST, idx) AS rn FROM events) WHERE rn < 4",
    ),
    "min per key, ties by arrival": (
        "SELECT k, x, idx FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY x) AS rn FROM events) WHERE rn = 1",
        "SELECT k, x, idx FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY x NULLS LAST, idx) AS rn FROM events) WHERE rn = 1",
    ),
    "two keys, two order columns, filters inside and out": (
        """SELECT g, k, x, rn FROM (SELECT g, k, x, v, ROW_NUMBER() OVER (PARTITION BY g, k % 3 ORDER BY x DESC NULLS LAST, v)
             AS rn FROM events WHERE v > 12) WHERE 5 >= rn AND x > 4""",
        """SELECT g, k, x, rn FROM (SELECT g, k, x, v, ROW_NUMBER() OVER (PARTITION BY g, k % 3 ORDER BY x DESC NULLS LAST,
             v NULLS LAST, idx) AS rn FROM events WHERE v > 12) WHERE 5 >= rn AND x > 4""",
    ),
    "the second row only": (
        "SELECT k, v, rn FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v) AS rn FROM events) WHERE rn = 2",
        "SELECT k, v, rn FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v NULLS LAST, idx) AS rn FROM events) WHERE rn = 2",
    ),
    "no partition": (
        "SELECT * FROM (SELECT idx, v, ROW_NUMBER() OVER (ORDER BY v DESC NULLS LAST) AS rn FROM events) WHERE rn <= 5",
        "SELECT * FROM (SELECT idx, v, ROW_NUMBER() OVER (ORDER BY v DESC NULLS LAST, idx) AS rn FROM events) WHERE rn <= 5",
    ),
    "keep last (event time DESC)": (
        "SELECT k, ts, v, idx FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts DESC) AS rn FROM events) WHERE rn = 1",
        "SELECT k, ts, v, idx FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts DESC, idx DESC) AS rn FROM events) WHERE rn = 1",
    ),
    "keep first (event time)": (
        "SELECT k, ts, v, idx FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts) AS rn FROM events) WHERE rn = 1",
        "SELECT k, ts, v, idx FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts, idx) AS rn FROM events) WHERE rn = 1",
    ),
    "keep first with rn and a view-like CTE": (
        """WITH firsts AS (SELECT g, ts, idx, ROW_NUMBER() OVER (PARTITION BY g ORDER BY ts ASC) AS row_num FROM events)
           SELECT * FROM firsts WHERE row_num <= 1""",
        "SELECT * FROM (SELECT g, ts, idx, ROW_NUMBER() OVER (PARTITION BY g ORDER BY ts, idx) AS row_num FROM events) WHERE row_num = 1",
    ),
}


def stream(events: pa.Table, sql: str, cuts: list[int], fold: bool = True) -> list[dict]:
    session = TestSession()
    session.execute(SOURCE_SQL)
    feed = session.stream("events")
    start, i = 0, 0
    while start < events.num_rows:
        feed.push(events.slice(start, cuts[i % len(cuts)]))
        start += cuts[i % len(cuts)]
        i += 1
    feed.finish()
    rows = session.run_query(sql, fold=fold)
    assert session.last_summary.dead_letters == {}, "events within the watermark delay are never late"
    return rows


def duck(events: pa.Table, sql: str) -> list[dict]:
    con = duckdb.connect()
    con.register("events", events)
    return con.sql(sql).to_arrow_table().to_pylist()


@pytest.fixture(scope="module")
def events():
    return {rows: make_events(rows, seed=rows + 1) for rows in set(SIZES.values())}


@pytest.mark.parametrize("name", list(QUERIES))
@pytest.mark.parametrize("batch_size", list(SIZES))
def test_ranking_matches_duckdb(events, name, batch_size):
    data = events[SIZES[batch_size]]
    ours, theirs = QUERIES[name]
    expected = duck(data, theirs)
    assert len(expected) >= 5
    assert_same(stream(data, ours, [batch_size]), expected)


@pytest.mark.parametrize("name", list(QUERIES))
def test_random_batch_sizes_match_duckdb(events, name):
    data = events[4_000]
    cuts = np.random.default_rng(len(name)).choice([1, 7, 100, 1_000], 60).tolist()
    ours, theirs = QUERIES[name]
    assert_same(stream(data, ours, cuts), duck(data, theirs))


def test_keep_first_is_append_only_and_keep_last_updates_its_key(events):
    data = events[1_500]
    first = stream(data, QUERIES["keep first (event time)"][0], [7], fold=False)
    assert "__op" not in first[0] and len(first) == len({r["k"] for r in first})  # each key once
    last = stream(data, QUERIES["keep last (event time DESC)"][0], [7], fold=False)
    assert {r["__op"] for r in last} == {"+I", "-U", "+U"}
    ops = [r["__op"] for r in last]
    assert ops.count("-U") == ops.count("+U")


def replay(changes: list[dict]) -> list[dict]:
    """Fold strictly: every retraction must remove a row that is there."""
    table: dict[tuple, int] = {}
    for change in changes:
        row = tuple(sorted((k, v) for k, v in change.items() if k != "__op"))
        if change["__op"] in ADD_OPS:
            table[row] = table.get(row, 0) + 1
        else:
            assert table.get(row, 0) > 0, f"{change['__op']} of a row not in the result: {change}"
            table[row] -= 1
            if not table[row]:
                del table[row]
    return [dict(row) for row, n in table.items() for _ in range(n)]


@settings(max_examples=80, deadline=None)
@given(
    values=st.lists(st.tuples(st.integers(0, 3), st.one_of(st.none(), st.integers(0, 6))), min_size=1, max_size=60),
    n=st.integers(1, 4),
    cuts=st.lists(st.integers(1, 9), min_size=1, max_size=5),
    with_rank=st.booleans(),
)
def test_top_n_retractions_fold_to_duckdb(values, n, cuts, with_rank):
    """Ties (small values), NULLs, any batch cuts: each retraction removes a row that is
    in the result, and the changelog folds to DuckDB's top N per key."""
    data = make_events(len(values), seed=1)
    data = data.set_column(1, "k", pa.array([k for k, _ in values], pa.int64()))
    data = data.set_column(5, "x", pa.array([x for _, x in values], pa.int64()))
    rank = ", rn" if with_rank else ""
    ours = stream(data, f"SELECT k, x, idx{rank} FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY x DESC) AS rn "
                        f"FROM events) WHERE rn <= {n}", cuts, fold=False)
    theirs = duck(data, f"SELECT k, x, idx{rank} FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY x DESC NULLS FIRST, "
                        f"idx) AS rn FROM events) WHERE rn <= {n}")
    assert_same(replay(ours), theirs)


def test_top_n_state_is_at_most_n_rows_per_key(events):
    data = events[20_000]
    session = TestSession()
    session.execute(SOURCE_SQL)
    session.execute("""CREATE SINK out AS SELECT * FROM (SELECT k, v, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) AS rn
                       FROM events) WHERE rn <= 3 WITH (connector = 'memory')""")
    run = session.start()
    keys = len(set(data.column("k").to_pylist()))
    for start in range(0, data.num_rows, 1_000):
        session.stream("events").push(data.slice(start, 1_000))
        run.pump()
        assert run.state_rows() <= keys * 3
    assert run.state_rows() == keys * 3


def test_keep_first_state_is_one_row_per_key_and_ttl_forgets_keys(events):
    data = events[4_000]

    def held(ttl: str) -> int:
        session = TestSession()
        session.execute(SOURCE_SQL)
        if ttl:
            session.execute(f"SET dedup_state_ttl = '{ttl}'")
        session.execute("""CREATE SINK out AS SELECT idx, g FROM (SELECT idx, g, x, ROW_NUMBER() OVER (PARTITION BY x, g
                           ORDER BY ts) AS rn FROM events) WHERE rn = 1 WITH (connector = 'memory')""")
        run = session.start()
        session.stream("events").push(data)
        run.pump()
        return run.state_rows()

    keys = len(set(zip(data.column("x").to_pylist(), data.column("g").to_pylist())))
    assert held("") == keys
    assert held("10s") < keys / 4  # 800 s of event time: keys seen in the last 10 s (+ the delay) stay


@pytest.mark.parametrize("sql,at,message", [
    ("SELECT k, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v) AS rn FROM events",
     "ROW_NUMBER", "ROW_NUMBER() over a stream needs a bound in the query directly around it: WHERE rn <= N"),
    ("SELECT * FROM (SELECT k, ROW_NUMBER() OVER (PARTITION BY k) AS rn FROM events) WHERE rn <= 2",
     "ROW_NUMBER", "ROW_NUMBER() over a stream needs ORDER BY"),
    ("SELECT * FROM (SELECT k, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v) + 1 AS rn FROM events) WHERE rn <= 2",
     "ROW_NUMBER", "ROW_NUMBER() over a stream must be a column of its own"),
    ("SELECT * FROM (SELECT k, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v) AS rn FROM events) WHERE rn <= 0",
     "rn <= 0", "rn is never below 1: this bound keeps no row"),
    ("SELECT * FROM (SELECT k, ROW_NUMBER() OVER (PARTITION BY k ORDER BY n) AS rn FROM "
     "(SELECT k, count(*) AS n FROM events GROUP BY k)) WHERE rn <= 2",
     "ROW_NUMBER", "ROW_NUMBER() over an updating result is not supported"),
    ("SELECT * FROM (SELECT k, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v) AS rn FROM events) AS a "
     "JOIN events AS b ON a.k = b.k WHERE rn <= 2",
     "ROW_NUMBER", "ROW_NUMBER() over a stream needs a bound in the query directly around it"),
])
def test_refused_forms_point_at_the_sql(sql, at, message):
    session = TestSession()
    session.execute(SOURCE_SQL)
    statement = f"CREATE SINK out AS {sql} WITH (connector = 'memory')"
    with pytest.raises(SqlStreamError) as caught:
        session.execute(statement, path="pipe.sql")
    text = str(caught.value)
    assert text.startswith(f"pipe.sql:1:{statement.index(at) + 1}: error: {message}"), text


def test_explain_names_the_form_keys_and_state_bound():
    session = TestSession()
    session.execute(SOURCE_SQL)
    top = session.explain("EXPLAIN SELECT * FROM (SELECT k, v, ROW_NUMBER() OVER (PARTITION BY k, g ORDER BY v DESC) AS rn "
                          "FROM events) WHERE rn <= 3")
    assert "TopN Top-3 ORDER BY v DESC NULLS FIRST [updating]" in top
    assert "keys: k, g; ties: the first arrived first; rank in 'rn' (moves are -U/+U)" in top
    assert "state: at most 3 rows per key" in top
    first = session.explain("EXPLAIN SELECT k FROM (SELECT k, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts) AS rn FROM events) "
                            "WHERE rn = 1")
    assert "Deduplicate keep first row (event time, emitted when the watermark passes it)" in first
    assert "emitted keys kept for ever (SET dedup_state_ttl = '1h' bounds them)" in first


def test_a_window_aggregation_over_first_rows_matches_duckdb(events):
    """Keep-first output keeps its event time and watermark stamps: a TUMBLE over it is
    final per window and none of its rows is late."""
    data = events[4_000]
    ours = stream(data, """SELECT window_start, count(*) AS n, max(x) AS mx FROM TUMBLE(
                             (SELECT ts, x FROM (SELECT ts, x, ROW_NUMBER() OVER (PARTITION BY k, x ORDER BY ts) AS rn FROM events)
                              WHERE rn = 1), ts, INTERVAL '20' SECOND) GROUP BY window_start, window_end""", [7, 100])
    theirs = duck(data, """SELECT time_bucket(INTERVAL 20 SECOND, ts) AS window_start, count(*) AS n, max(x) AS mx FROM (
                             SELECT ts, x, ROW_NUMBER() OVER (PARTITION BY k, x ORDER BY ts, idx) AS rn FROM events)
                           WHERE rn = 1 GROUP BY 1""")
    assert len(theirs) > 20
    assert_same(ours, theirs)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 8)), min_size=1, max_size=50),
    cuts=st.lists(st.integers(1, 9), min_size=1, max_size=4),
    first=st.booleans(),
)
def test_keep_first_and_last_with_ties_match_duckdb(rows, cuts, first):
    """Times within the watermark delay (0.25 s steps: ties, out of order), any batch
    cuts: keep-first is the first row by time (first arrived among ties), keep-last the
    last (last arrived among ties)."""
    data = make_events(len(rows), seed=4)
    base = int(pa.compute.cast(data.column("ts"), pa.int64()).to_numpy().min())
    data = data.set_column(1, "k", pa.array([k for k, _ in rows], pa.int64()))
    data = data.set_column(3, "ts", pa.array([base + 60_000_000 + t * 250_000 for _, t in rows], pa.timestamp("us")))
    order, tie = ("ts", "ts, idx") if first else ("ts DESC", "ts DESC, idx DESC")
    sql = "SELECT k, ts, idx FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY {}) AS rn FROM events) WHERE rn = 1"
    ours = stream(data, sql.format(order), cuts, fold=False)
    if first:  # append-only
        assert all("__op" not in r for r in ours)
    else:
        assert {r["__op"] for r in ours} <= {"+I", "-U", "+U"}
        ours = replay(ours)
    assert_same(ours, duck(data, sql.format(tie)))
