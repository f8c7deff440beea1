"""``JOIN ... USING`` and ``NATURAL JOIN`` vs DuckDB, for every join strategy.

The merged column appears once (first in ``SELECT *``, under its bare name; for FULL
joins the coalesced value), the sides' columns stay reachable qualified. Rows are
compared positionally (``SELECT *`` repeats names such as ``ts``, which DuckDB keeps
and sqlstream numbers ``ts_1``), column names by their DuckDB spelling.
"""

from __future__ import annotations

import decimal

import duckdb
import pytest

from sqlstream.changelog import fold_changelog
from sqlstream.errors import SqlStreamError
from tests.differential.test_joins import DUCK_WINDOWED, WINDOWED, A, B, make_session, merchants

a, b = A.slice(0, 120), B.slice(0, 120)


def duck_rows(sql: str) -> tuple[list[str], list[tuple]]:
    con = duckdb.connect()
    for name, table in {"a": a, "b": b, "m": merchants()}.items():
        con.register(name, table)
    table = con.sql(sql).to_arrow_table()
    return table.column_names, list(zip(*[c.to_pylist() for c in table.columns], strict=True))


def ours_rows(tmp_path, sql: str, batch) -> tuple[list[str], list[tuple]]:
    session = make_session(tmp_path, {"a": a, "b": b}, batch)
    rows = fold_changelog(session.run_query(sql, fold=False))
    assert rows
    return list(rows[0]), [tuple(r.values()) for r in rows]


def assert_same_rows(ours, theirs) -> None:
    (our_names, our_rows), (their_names, their_rows) = ours, theirs
    assert [n.rsplit("_", 1)[0] if n.endswith("_1") else n for n in our_names] == their_names
    assert sorted(map(repr, map(_plain, our_rows))) == sorted(map(repr, map(_plain, their_rows)))


def _plain(row: tuple) -> tuple:
    """DuckDB sums integers to DECIMAL/HUGEINT: compare numbers as numbers."""
    return tuple(int(v) if isinstance(v, decimal.Decimal) else v for v in row)


QUERIES = {
    "inner star": "SELECT * FROM a JOIN b USING (k)",
    "left, qualified sides": "SELECT k, a.k AS ak, b.k AS bk, a.s, b.s AS bs, v, w FROM a LEFT JOIN b USING (k)",
    "right, two columns": "SELECT * FROM a RIGHT JOIN b USING (k, s)",
    "full star coalesces": "SELECT * FROM a FULL JOIN b USING (k)",
    "full, qualified sides": "SELECT k, x.k AS ak, y.k AS bk, v, w FROM a x FULL OUTER JOIN b y USING (k)",
    "natural": "SELECT * FROM (SELECT k, s, v FROM a) x NATURAL JOIN (SELECT k, s, w FROM b) y",
    "natural full, aggregated": "SELECT k, count(*) AS n, sum(v) AS sv FROM (SELECT k, v FROM a) x "
                                "NATURAL FULL JOIN (SELECT k, w FROM b) y GROUP BY k",
    "where on the merged column": "SELECT k, v, w FROM a JOIN b USING (k) WHERE k > 3 AND w < 60",
    "three inputs": "SELECT * FROM (SELECT k, v FROM a) x JOIN (SELECT k, w FROM b) y USING (k) "
                    "LEFT JOIN (SELECT k, v AS v2 FROM a WHERE v > 50) z USING (k)",
    "lookup table": "SELECT * FROM (SELECT k AS id, v FROM a) x JOIN m USING (id)",
    "lookup table, left": "SELECT id, v, region FROM (SELECT k AS id, v FROM a) x NATURAL LEFT JOIN m",
}


@pytest.mark.parametrize(
    "case,batch",
    [(case, batch) for case in sorted(QUERIES) for batch in (7, "mixed")]
    + [("inner star", 1), ("full star coalesces", 1), ("natural", 1)],
)
def test_using_and_natural_match_duckdb(tmp_path, case, batch):
    sql = QUERIES[case]
    assert_same_rows(ours_rows(tmp_path, sql, batch), duck_rows(sql))


@pytest.mark.parametrize("kind", ["JOIN", "FULL JOIN"])
def test_window_join_using_window_columns(tmp_path, kind):
    """USING the window columns of two window aggregates is a window join. (``SELECT *``
    lists the merged columns first, as the SQL standard and PostgreSQL do; DuckDB keeps
    the left side's order, so the columns are named here.)"""
    sql = "SELECT k, ws, we, na, nb FROM {l} x {kind} {r} y USING (k, ws, we)"
    ours = sql.format(l=WINDOWED.format(n="na", src="a"), r=WINDOWED.format(n="nb", src="b"), kind=kind)
    session = make_session(tmp_path, {"a": a, "b": b}, 9)
    assert "WindowJoin" in session.explain("EXPLAIN " + ours)
    assert_same_rows(ours_rows(tmp_path, ours, 9),
                     duck_rows(sql.format(l=DUCK_WINDOWED.format(n="na", src="a"),
                                          r=DUCK_WINDOWED.format(n="nb", src="b"), kind=kind)))


def test_star_lists_merged_columns_first(tmp_path):
    session = make_session(tmp_path, {}, 1)
    plan = session.explain("EXPLAIN SELECT * FROM (SELECT v, k FROM a) x JOIN (SELECT w, k FROM b) y USING (k)")
    assert "-> (k, v, w)" in plan.splitlines()[1]


def test_interval_join_using_a_key(tmp_path):
    """USING gives the key; the time bound in WHERE makes it an interval join."""
    sql = ("SELECT k, v, w, x.ts AS xts FROM a x JOIN b y USING (k) "
           "WHERE y.ts BETWEEN x.ts - INTERVAL '2' SECOND AND x.ts + INTERVAL '1' SECOND")
    session = make_session(tmp_path, {"a": a, "b": b}, 5)
    assert "IntervalJoin INNER" in session.explain("EXPLAIN " + sql)
    rows = session.run_query(sql, fold=False)
    assert all("__op" not in r for r in rows)
    assert_same_rows(ours_rows(tmp_path, sql, 5), duck_rows(sql))


def test_explain_shows_the_using_list(tmp_path):
    session = make_session(tmp_path, {}, 1)
    assert "on: USING (k, s)" in session.explain("EXPLAIN SELECT * FROM a JOIN b USING (k, s)")
    assert "on: NATURAL USING (k, s, ts)" in session.explain("EXPLAIN SELECT * FROM a NATURAL JOIN b")


ERRORS = [
    ("SELECT * FROM a JOIN b USING (nope)", "1:31: error: unknown column 'nope'"),
    ("SELECT * FROM a JOIN b USING (v)", "1:31: error: unknown column 'v'"),
    ("SELECT * FROM a JOIN b USING (k, k)", "column 'k' appears twice in USING"),
    ("SELECT * FROM a JOIN b USING (s, k) JOIN a AS c USING (w)", "unknown column 'w'"),
    ("SELECT * FROM a JOIN m USING (k)", "1:31: error: unknown column 'k'"),
    ("SELECT * FROM (SELECT s AS k FROM a) x JOIN b USING (k)",
     "cannot join on x.k = b.k: the sides have types VARCHAR and BIGINT"),
    ("SELECT * FROM (SELECT v FROM a) x NATURAL JOIN (SELECT w FROM b) y",
     "a join of two streams needs a condition relating them"),
    ("SELECT * FROM a x JOIN b y USING (k) JOIN a z USING (k) WHERE x.k = z.nope", "unknown column 'nope'"),
]


@pytest.mark.parametrize("sql,message", ERRORS)
def test_using_errors_point_at_the_query(tmp_path, sql, message):
    session = make_session(tmp_path, {}, 1)
    with pytest.raises(SqlStreamError) as caught:
        session.execute(sql, path="q.sql")
    text = caught.value.render()
    assert text.startswith("q.sql:1:") and message in text
