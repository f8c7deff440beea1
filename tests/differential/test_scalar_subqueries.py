"""Scalar subqueries over a TABLE (``WHERE v > (SELECT avg(rate) FROM m)``) vs DuckDB.

The subquery's value is computed once when the table is loaded and attached to every
row by a lookup join; results must be DuckDB's for batches of 1, 7 and a random mix,
with window aggregates after it, and the refused forms name the subquery.
"""

from __future__ import annotations

import pytest

from sqlstream.changelog import fold_changelog
from sqlstream.errors import SqlStreamError
from tests.differential.test_joins import assert_same, make_session
from tests.differential.test_semi_joins import a, b, duck, run

QUERIES = {
    "where": "SELECT * FROM a WHERE v > (SELECT avg(rate) * 60 FROM m)",
    "select list and where, filtered table": "SELECT k, v, v - (SELECT max(rate) FROM m WHERE region = 'north') AS d "
                                             "FROM a WHERE v < (SELECT count(*) FROM m) * 5",
    "with a semi join": "SELECT k, v FROM a WHERE k IN (SELECT id FROM m) AND v >= (SELECT min(rate) FROM m) * 50",
    "empty table rows: NULL": "SELECT k, v, (SELECT max(rate) FROM m WHERE rate > 100) AS top FROM a",
    "aggregated after": "SELECT k, count(*) AS n FROM a WHERE v > (SELECT avg(rate) * 40 FROM m) GROUP BY k",
}


@pytest.mark.parametrize("batch", (1, 7, "mixed"))
@pytest.mark.parametrize("case", sorted(QUERIES))
def test_scalar_subqueries_over_a_table_match_duckdb(tmp_path, case, batch):
    sql = QUERIES[case]
    rows = run(tmp_path, sql, batch)
    if "GROUP BY" in sql:
        rows = fold_changelog(rows)
    assert_same(rows, duck(sql))


def test_window_after_a_scalar_subquery(tmp_path):
    sql = ("SELECT window_start, count(*) AS n FROM TUMBLE(a, ts, INTERVAL '4' SECOND) "
           "WHERE v > (SELECT avg(rate) * 60 FROM m) GROUP BY window_start, window_end")
    rows = run(tmp_path, sql, 7)
    assert all("__op" not in r for r in rows)  # final per window: event time kept
    assert_same(rows, duck("SELECT make_timestamp(epoch_us(ts) // 4000000 * 4000000) AS window_start, count(*) AS n "
                           "FROM a WHERE v > (SELECT avg(rate) * 60 FROM m) GROUP BY 1"))


def test_explain_shows_the_value_computed_at_load(tmp_path):
    session = make_session(tmp_path, {}, 1)
    plan = session.explain("EXPLAIN SELECT k FROM a WHERE v > (SELECT avg(rate) FROM m)")
    assert "LookupJoin INNER" in plan and "a scalar subquery over the TABLE 'm': computed once" in plan
    assert 'SELECT AVG("rate") AS "$scalar0"' in plan
    assert "$scalar0" not in session.explain("EXPLAIN SELECT * FROM a WHERE v > (SELECT avg(rate) FROM m)").splitlines()[1]


ERRORS = [
    ("SELECT k FROM a WHERE v > (SELECT rate FROM m)", "a scalar subquery must compute one aggregate (exactly one row)"),
    ("SELECT k FROM a WHERE v > (SELECT max(rate) FROM m GROUP BY region)", "GROUP is not supported in a scalar subquery"),
    ("SELECT k FROM a x WHERE v > (SELECT max(rate) FROM m WHERE m.id = x.k)",
     "correlated scalar subqueries are not supported"),
    ("SELECT k FROM a WHERE v > (SELECT max(w) FROM (SELECT w FROM b) c)", "a scalar subquery must read one TABLE"),
]


@pytest.mark.parametrize("sql,message", ERRORS)
def test_scalar_subquery_errors(tmp_path, sql, message):
    session = make_session(tmp_path, {"a": a, "b": b}, 1)
    with pytest.raises(SqlStreamError) as caught:
        session.execute(sql, path="q.sql")
    text = caught.value.render()
    assert text.startswith("q.sql:1:") and message in text and "hint: aggregate a TABLE" in text
