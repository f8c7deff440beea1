"""UNION, INTERSECT and EXCEPT (distinct and ALL) vs DuckDB (batch) over the same data.

Two sources with repeating rows (so multiplicities matter), NULLs, and events out of
order within the watermark delay, fed in batches of 1, 7 and 64 rows. Over unbounded
input the result is a changelog whose folded table must equal DuckDB's result; over
windowed input (both sides with ``window_start``/``window_end`` among the columns) it
is final rows per window, each emitted once, equal to DuckDB's result with the window
computed in SQL.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from sqlstream.changelog import fold_changelog
from sqlstream.errors import SqlAnalysisError, UnsupportedSqlError
from sqlstream.hidden import OP_COLUMN
from sqlstream.testing import TestSession

BASE_US = 1_699_000_000_000_000
DELAY_US = 2_000_000
SOURCES_SQL = "".join(
    f"""CREATE SOURCE {name} (k BIGINT, g VARCHAR, ts TIMESTAMP,
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) WITH (connector = 'memory');"""
    for name in ("a", "b")
)
OPERATIONS = ["UNION", "UNION ALL", "INTERSECT", "INTERSECT ALL", "EXCEPT", "EXCEPT ALL"]
_FLOOR = "(us - (((us % {n}) + {n}) % {n}))"
# window kind → (sqlstream FROM item over {src}, DuckDB relation with ws/we over {src})
WINDOWS = {
    "tumble": ("TUMBLE({src}, ts, INTERVAL '5' SECOND)",
               f"(SELECT *, {_FLOOR.format(n=5_000_000)} AS ws, {_FLOOR.format(n=5_000_000)} + 5000000 AS we "
               "FROM (SELECT *, epoch_us(ts) AS us FROM {src}))"),
    "hop": ("HOP({src}, ts, INTERVAL '2' SECOND, INTERVAL '4' SECOND)",
            f"(SELECT *, ws + 4000000 AS we FROM (SELECT *, unnest(range({_FLOOR.format(n=2_000_000)}, us - 4000000, -2000000)) AS ws "
            "FROM (SELECT *, epoch_us(ts) AS us FROM {src})))"),
}


def make_side(rows: int, seed: int) -> pa.Table:
    """Few distinct (k, g) pairs, so both sides share rows and repeat them; a third of
    the events displaced back by up to the watermark delay (out of order, never late)."""
    rng = np.random.default_rng(seed)
    times = BASE_US + np.sort(rng.integers(0, rows * 150_000, rows))
    times = times - np.where(rng.random(rows) < 0.33, rng.integers(0, DELAY_US + 1, rows), 0)
    return pa.table({
        "k": pa.array(rng.integers(0, 6, rows), mask=rng.random(rows) < 0.05),
        "g": pa.array(np.array(["x", "y"])[rng.integers(0, 2, rows)], mask=rng.random(rows) < 0.05),
        "ts": pa.array(times, pa.timestamp("us")),
    })


@pytest.fixture(scope="module")
def data():
    return {"a": make_side(300, 1), "b": make_side(250, 2)}


def small(data, batch_size: int) -> dict:
    """Batches of one row cost about a millisecond per batch per stage: fewer rows."""
    return {name: table.slice(0, 60) for name, table in data.items()} if batch_size == 1 else data


def stream(data, sql: str, batch_size: int, fold: bool = True) -> list[dict]:
    session = TestSession()
    session.execute(SOURCES_SQL)
    for name in ("a", "b"):
        session.stream(name).push(data[name], batch_size=batch_size).finish()
    rows = session.run_query(sql, fold=fold)
    assert session.last_summary.dead_letters == {}
    return rows


def batch(data, sql: str) -> list[dict]:
    con = duckdb.connect()
    for name in ("a", "b"):
        con.register(name, data[name])
    return con.sql(sql).to_arrow_table().to_pylist()


def canonical(rows: list[dict]) -> list[tuple]:
    return sorted(tuple((c, v is None, v if v is not None else 0) for c, v in sorted(r.items())) for r in rows)


CASES = [(op, size) for op in OPERATIONS for size in (7, 64)] + [("INTERSECT ALL", 1), ("EXCEPT", 1)]


@pytest.mark.parametrize(("operation", "batch_size"), CASES)
def test_unbounded_set_operation_folds_to_duckdb(data, operation, batch_size):
    sql = f"SELECT k, g FROM a {operation} SELECT k, g FROM b"
    data = small(data, batch_size)
    changes = stream(data, sql, batch_size, fold=False)
    expected = batch(data, sql)
    assert expected and canonical(fold_changelog(changes)) == canonical(expected)
    if operation != "UNION ALL":  # an aggregation over unbounded input: a changelog of net changes per row
        assert {r[OP_COLUMN] for r in changes} <= {"+I", "-D"}
    if operation.startswith("EXCEPT"):  # rows of the left side retracted when the right side catches up
        assert any(r[OP_COLUMN] in ("-U", "-D") for r in changes)


@pytest.mark.parametrize("window", list(WINDOWS))
@pytest.mark.parametrize(("operation", "batch_size"), [(op, 16) for op in OPERATIONS] + [("EXCEPT ALL", 1)])
def test_windowed_set_operation_is_final_per_window(data, operation, window, batch_size):
    ours, theirs = WINDOWS[window]
    side = "SELECT window_start, window_end, k, g FROM {}"
    sql = f"{side.format(ours.format(src='a'))} {operation} {side.format(ours.format(src='b'))}"
    duck_side = "SELECT make_timestamp(ws) AS window_start, make_timestamp(we) AS window_end, k, g FROM {}"
    duck = f"{duck_side.format(theirs.format(src='a'))} {operation} {duck_side.format(theirs.format(src='b'))}"
    data = small(data, batch_size)
    rows = stream(data, sql, batch_size, fold=False)
    expected = batch(data, duck)
    assert expected and all(OP_COLUMN not in r for r in rows)  # final rows, no retractions
    assert canonical(rows) == canonical(expected)


@pytest.mark.parametrize("operation", ["INTERSECT", "EXCEPT ALL", "UNION"])
def test_set_operation_of_window_aggregates(data, operation):
    """Both sides final window results (GROUP BY window_start, window_end, ...)."""
    side = "SELECT window_start, window_end, k, count(*) > 3 AS busy FROM TUMBLE({src}, ts, INTERVAL '5' SECOND) GROUP BY window_start, window_end, k"
    duck_side = ("SELECT make_timestamp(ws) AS window_start, make_timestamp(we) AS window_end, k, count(*) > 3 AS busy "
                 f"FROM {WINDOWS['tumble'][1]} GROUP BY ws, we, k")
    rows = stream(data, f"{side.format(src='a')} {operation} {side.format(src='b')}", 7, fold=False)
    expected = batch(data, f"{duck_side.format(src='a')} {operation} {duck_side.format(src='b')}")
    assert expected and all(OP_COLUMN not in r for r in rows)
    assert canonical(rows) == canonical(expected)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_set_operation_of_updating_results(data, operation):
    """Sides that are changelogs themselves (unwindowed GROUP BY): retractions flow through."""
    sql = (f"SELECT k, count(*) > 40 AS many FROM a GROUP BY k {operation} "
           "SELECT k, count(*) > 40 AS many FROM b GROUP BY k")
    assert canonical(fold_changelog(stream(data, sql, 7, fold=False))) == canonical(batch(data, sql))


def test_union_all_of_an_updating_and_an_append_only_input(data):
    sql = "SELECT k, count(*) AS n FROM a GROUP BY k UNION ALL SELECT k, 1 AS n FROM b"
    changes = stream(data, sql, 7, fold=False)
    assert {r[OP_COLUMN] for r in changes} >= {"+I", "-U", "+U"}
    assert canonical(fold_changelog(changes)) == canonical(batch(data, sql))


def test_set_operation_with_different_column_counts_is_located():
    session = TestSession()
    session.execute(SOURCES_SQL)
    with pytest.raises(SqlAnalysisError) as info:
        session.execute("CREATE SINK out AS SELECT k, g FROM a\nINTERSECT SELECT k FROM b WITH (connector = 'memory')",
                        path="pipe.sql")
    assert str(info.value).startswith("pipe.sql:2:18: error: INTERSECT inputs have 2 and 1 columns")
    assert "same number of columns" in str(info.value.hint)


def test_limit_applies_to_the_whole_union_and_order_by_is_refused(data):
    rows = stream(data, "SELECT k, g FROM a UNION ALL SELECT k, g FROM b LIMIT 5", 7)
    assert len(rows) == 5
    session = TestSession()
    session.execute(SOURCES_SQL)
    with pytest.raises(UnsupportedSqlError, match="ORDER BY is not supported on a stream"):
        session.run_query("SELECT k FROM a UNION SELECT k FROM b ORDER BY k")
