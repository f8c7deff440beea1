"""``[NOT] IN (SELECT ...)`` and ``[NOT] EXISTS`` (semi and anti joins) vs DuckDB.

The same data as the join tests (out-of-order events within the watermark delay, 5%
NULL keys, a lookup TABLE with a duplicate and a NULL id), fed in batches of 1, 7 and
a random mix. Each strategy is covered: lookup (TABLE), window, interval and regular
(changelogs folded to their final table). Semi joins must emit each left row once
however many right rows match; NOT IN follows SQL's NULL rules.
"""

from __future__ import annotations

import duckdb
import pytest

from sqlstream.changelog import fold_changelog
from sqlstream.errors import SqlStreamError
from sqlstream.operators.joins import IntervalJoinOperator
from sqlstream.operators.regular_join import RegularJoinOperator
from tests.differential.test_joins import (
    DUCK_WINDOWED,
    WINDOWED,
    A,
    B,
    assert_same,
    events,
    make_session,
    merchants,
    operators_of,
)

a, b = A.slice(0, 120), B.slice(0, 120)


def duck(sql: str) -> list[dict]:
    con = duckdb.connect()
    for name, table in {"a": a, "b": b, "m": merchants()}.items():
        con.register(name, table)
    return con.sql(sql).to_arrow_table().to_pylist()


def run(tmp_path, sql: str, batch) -> list[dict]:
    session = make_session(tmp_path, {"a": a, "b": b}, batch)
    return session.run_query(sql, fold=False)


LOOKUPS = {
    "in": "SELECT k, v FROM a WHERE k IN (SELECT id FROM m)",
    "in, duplicate table keys emit once": "SELECT k, v, ts FROM a WHERE k IN (SELECT id FROM m WHERE id = 3 OR id = 4)",
    "not in, no NULL in the subquery": "SELECT k, v FROM a WHERE k NOT IN (SELECT id FROM m WHERE region = 'north')",
    "not in, a NULL in the subquery": "SELECT k, v FROM a WHERE k NOT IN (SELECT id FROM m)",
    "not in, empty subquery": "SELECT k, v FROM a WHERE k NOT IN (SELECT id FROM m WHERE rate > 100)",
    "not in, computed": "SELECT k, v FROM a WHERE k + 1 NOT IN (SELECT id * 2 FROM m WHERE id IS NOT NULL) AND v > 20",
    "exists, correlated residual": "SELECT * FROM a WHERE EXISTS (SELECT 1 FROM m WHERE m.id = a.k AND m.rate > a.v / 100.0)",
    "not exists, unqualified names": "SELECT * FROM a WHERE NOT EXISTS (SELECT 1 FROM m WHERE id = k AND region <> 'west')",
    "two subqueries": "SELECT s, v FROM a x WHERE s IN (SELECT code FROM m) AND NOT EXISTS "
                      "(SELECT 1 FROM m WHERE m.id = x.k AND m.active)",
}

STREAMS = {
    "in": "SELECT k, v FROM a WHERE k IN (SELECT k FROM b WHERE w > 50)",
    "in, shadowed name": "SELECT k, v FROM a WHERE v > 10 AND k IN (SELECT a.k FROM b AS a WHERE a.w < 30)",
    "exists, residual": "SELECT k, v, ts FROM a x WHERE EXISTS (SELECT 1 FROM b WHERE b.k = x.k AND b.w > x.v)",
    "not exists": "SELECT k, v, ts FROM a x WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.s = x.s)",
    "not exists, residual": "SELECT k, v, ts FROM a x WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.k = x.k AND b.w > x.v)",
    "not exists, left-only condition": "SELECT k, v FROM a x WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.k = x.k AND x.v > 50)",
}

INTERVALS = {
    "exists": "SELECT k, v, ts FROM a x WHERE EXISTS (SELECT 1 FROM b WHERE b.k = x.k "
              "AND b.ts BETWEEN x.ts - INTERVAL '2' SECOND AND x.ts + INTERVAL '1' SECOND)",
    "not exists": "SELECT k, v, ts FROM a x WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.k = x.k "
                  "AND b.ts BETWEEN x.ts - INTERVAL '2' SECOND AND x.ts + INTERVAL '1' SECOND AND b.w > 20)",
    "in": "SELECT k, v, ts FROM a x WHERE k IN (SELECT k FROM b WHERE b.ts >= x.ts AND b.ts < x.ts + INTERVAL '3' SECOND)",
}

BATCHES = (1, "mixed")  # "mixed": a seeded random mix of 1, 2, 5, 17 and 60-row batches


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("case", sorted(LOOKUPS))
def test_lookup_semi_and_anti_joins_match_duckdb(tmp_path, case, batch):
    sql = LOOKUPS[case]
    rows = run(tmp_path, sql, batch)
    assert all("__op" not in r for r in rows)  # a TABLE is known whole: append-only
    assert_same(rows, duck(sql))


def test_not_in_null_rules_are_duckdbs(tmp_path):
    """The cases that make NOT IN differ from NOT EXISTS, checked against DuckDB."""
    has_null = duck(LOOKUPS["not in, a NULL in the subquery"])
    no_null = duck(LOOKUPS["not in, no NULL in the subquery"])
    empty = duck(LOOKUPS["not in, empty subquery"])
    assert has_null == [] and no_null and all(r["k"] is not None for r in no_null)
    assert any(r["k"] is None for r in empty) and len(empty) == a.num_rows
    for case, expected in [("not in, a NULL in the subquery", has_null), ("not in, empty subquery", empty)]:
        assert_same(run(tmp_path, LOOKUPS[case], 7), expected)


STREAM_NOT_IN = {
    "a NULL in the subquery": "SELECT k, v FROM a WHERE k NOT IN (SELECT k FROM b)",
    "no NULL in the subquery": "SELECT k, v FROM a WHERE k NOT IN (SELECT k FROM b WHERE k IS NOT NULL AND w > 40)",
    "empty subquery": "SELECT k, v FROM a WHERE k NOT IN (SELECT k FROM b WHERE w > 1000)",
    "computed": "SELECT s, v FROM a WHERE s NOT IN (SELECT s FROM b WHERE s IS NOT NULL AND k < 4)",
}


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("case", sorted(STREAM_NOT_IN))
def test_not_in_over_a_stream_follows_duckdb(tmp_path, case, batch):
    """A changelog: rows come and go as the subquery's rows (and NULLs) arrive; the
    final table is DuckDB's, NULL rules included."""
    sql = STREAM_NOT_IN[case]
    rows = run(tmp_path, sql, batch)
    assert all("__op" in r for r in rows)
    expected = duck(sql)
    assert_same(fold_changelog(rows), expected)
    if case == "a NULL in the subquery":
        assert expected == [] and any(r["__op"] == "-D" for r in rows)
    if case == "empty subquery":
        assert len(expected) == a.num_rows


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("case", sorted(STREAMS))
def test_regular_semi_and_anti_joins_match_duckdb(tmp_path, case, batch):
    sql = STREAMS[case]
    rows = run(tmp_path, sql, batch)
    anti = "NOT EXISTS" in sql
    assert all(("__op" in r) == anti for r in rows)  # semi: append-only; anti: a changelog
    if anti:
        assert any(r["__op"] == "-D" for r in rows)  # emitted, then retracted when a match arrived
    assert_same(fold_changelog(rows), duck(sql))


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("case", sorted(INTERVALS))
def test_interval_semi_and_anti_joins_match_duckdb(tmp_path, case, batch):
    sql = INTERVALS[case]
    session = make_session(tmp_path, {"a": a, "b": b}, batch)
    assert "IntervalJoin " + ("ANTI" if "NOT" in sql else "SEMI") in session.explain("EXPLAIN " + sql)
    rows = run(tmp_path, sql, batch)
    assert all("__op" not in r for r in rows)  # final when emitted: append-only
    assert_same(rows, duck(sql))


def test_interval_semi_join_output_keeps_event_time_for_windows(tmp_path):
    sql = ("SELECT window_start, count(*) AS n FROM TUMBLE(a, ts, INTERVAL '4' SECOND) x WHERE EXISTS "
           "(SELECT 1 FROM b WHERE b.k = x.k AND b.ts BETWEEN x.ts - INTERVAL '2' SECOND AND x.ts) "
           "GROUP BY window_start, window_end")
    rows = run(tmp_path, sql, 7)
    assert all("__op" not in r for r in rows)
    assert_same(rows, duck(
        "SELECT make_timestamp(epoch_us(ts) // 4000000 * 4000000) AS window_start, count(*) AS n FROM a x "
        "WHERE EXISTS (SELECT 1 FROM b WHERE b.k = x.k AND b.ts BETWEEN x.ts - INTERVAL '2' SECOND AND x.ts) "
        "GROUP BY 1"))


@pytest.mark.parametrize("batch", (7, "mixed"))
@pytest.mark.parametrize("negated", [False, True])
def test_window_semi_and_anti_joins_match_duckdb(tmp_path, negated, batch):
    sql = ("SELECT x.k, x.na, x.ws FROM {l} x WHERE {neg}EXISTS (SELECT 1 FROM {r} y "
           "WHERE y.ws = x.ws AND y.we = x.we AND y.k = x.k AND y.nb >= 2)")
    neg = "NOT " if negated else ""
    ours = sql.format(l=WINDOWED.format(n="na", src="a"), r=WINDOWED.format(n="nb", src="b"), neg=neg)
    session = make_session(tmp_path, {"a": a, "b": b}, batch)
    assert "WindowJoin " + ("ANTI" if negated else "SEMI") in session.explain("EXPLAIN " + ours)
    rows = run(tmp_path, ours, batch)
    assert rows and all("__op" not in r for r in rows)  # final per window
    assert_same(rows, duck(sql.format(l=DUCK_WINDOWED.format(n="na", src="a"), r=DUCK_WINDOWED.format(n="nb", src="b"),
                                      neg=neg)))


def test_explain_names_semi_and_anti_joins(tmp_path):
    session = make_session(tmp_path, {}, 1)
    lookup = session.explain("EXPLAIN SELECT k FROM a WHERE k NOT IN (SELECT id FROM m)")
    assert "LookupJoin ANTI" in lookup
    regular = session.explain("EXPLAIN SELECT k FROM a x WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.k = x.k)")
    assert "RegularJoin ANTI (changelog)" in regular and "retracted when its first match arrives" in regular
    semi = session.explain("EXPLAIN SELECT k FROM a WHERE k IN (SELECT k FROM b)")
    assert "RegularJoin SEMI (append-only)" in semi and "emitted once" in semi


ERRORS = [
    ("SELECT k FROM a x WHERE k NOT IN (SELECT k FROM b WHERE b.w > x.v)",
     "1:25: error: NOT IN needs an uncorrelated subquery", "NOT EXISTS"),
    ("SELECT k FROM a x WHERE k NOT IN (SELECT id FROM m WHERE m.rate > x.v)",
     "NOT IN needs an uncorrelated subquery", "NOT EXISTS"),
    ("SELECT k FROM a WHERE v > (SELECT avg(w) FROM b)",
     "error: a scalar subquery over the stream 'b' is not supported", "aggregate a TABLE"),
    ("SELECT k FROM a WHERE v > 3 OR k IN (SELECT k FROM b)",
     "IN/EXISTS subqueries are supported only as conjuncts of WHERE", "supported:"),
    ("SELECT k, (SELECT max(w) FROM b) FROM a", "a scalar subquery over the stream 'b' is not supported", "join"),
    ("SELECT k FROM a GROUP BY k HAVING count(*) > (SELECT count(*) FROM m)",
     "a subquery inside an expression is not supported", "join it"),
    ("SELECT k FROM a x WHERE EXISTS (SELECT 1 FROM b WHERE b.k > x.k)",
     "a join of two streams needs an equality between them", "supported joins"),
    ("SELECT k FROM a WHERE k IN (SELECT k, w FROM b)", "the subquery of IN must select one column", "IN (SELECT k"),
    ("SELECT k FROM a WHERE k IN (SELECT k FROM b GROUP BY k)", "GROUP is not supported in an IN/EXISTS subquery", "view"),
    ("SELECT k FROM a WHERE k IN (SELECT b.k FROM b JOIN m ON b.k = m.id)",
     "a subquery in IN/EXISTS must read one relation", "view"),
    ("SELECT k FROM a WHERE (k, v) IN (SELECT k, w FROM b)", "a row value IN (SELECT ...) is not supported", "EXISTS"),
    ("SELECT k FROM a WHERE k IN (SELECT nope FROM b)", "unknown column 'nope'", None),
    ("SELECT k FROM a WHERE k IN (SELECT k FROM (SELECT k, count(*) AS n FROM b GROUP BY k) c)",
     "IN/EXISTS over an updating result (changelog) is not supported", "window"),
]


@pytest.mark.parametrize("sql,message,hint", ERRORS)
def test_subquery_errors_point_at_the_query(tmp_path, sql, message, hint):
    session = make_session(tmp_path, {}, 1)
    with pytest.raises(SqlStreamError) as caught:
        session.execute(sql, path="q.sql")
    text = caught.value.render()
    assert text.startswith("q.sql:1:") and message in text
    if hint is not None:
        assert "hint:" in text and hint in text.split("hint:", 1)[1]


def test_interval_anti_join_state_is_trimmed_by_the_watermarks(tmp_path):
    """An interval anti join frees a row once its interval has passed (emitting it if
    unmatched): state stays bounded however long the streams run."""
    sql = ("SELECT k, v FROM a x WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.k = x.k "
           "AND b.ts BETWEEN x.ts - INTERVAL '1' SECOND AND x.ts + INTERVAL '1' SECOND)")
    session = make_session(tmp_path, {}, 1)
    session.execute(f"CREATE SINK out AS {sql} WITH (connector = 'memory')")
    driver = session.build(session.pending_sinks())
    (join,) = operators_of(driver, IntervalJoinOperator)
    for sink in driver.sinks:
        sink.open()
    left, right = events(2000, 5, "v", step_us=50_000), events(2000, 6, "w", step_us=50_000)
    peak = 0
    for start in range(0, 2000, 40):
        session.stream("a").push(left.slice(start, 40))
        session.stream("b").push(right.slice(start, 40))
        driver.step()
        peak = max(peak, join.state_rows())
    assert peak < 400  # ~2 x (interval + delay + batch) of 20 events/s, not the 4,000 rows seen
    session.stream("a").finish()
    session.stream("b").finish()
    while driver.step():
        pass
    assert join.state_rows() == 0
    con = duckdb.connect()
    con.register("a", left)
    con.register("b", right)
    assert_same([r for batch in session.outputs["out"] for r in batch.to_pylist()], con.sql(sql).to_arrow_table().to_pylist())


def test_regular_semi_join_keeps_only_unmatched_left_rows(tmp_path):
    """A left row emitted by a semi join of append-only inputs is final: it leaves
    no state; only rows still waiting for a partner are kept."""
    session = make_session(tmp_path, {}, 1)
    session.execute("CREATE SINK out AS SELECT k, v FROM a WHERE k IN (SELECT k FROM b WHERE w > 90) "
                    "WITH (connector = 'memory')")
    driver = session.build(session.pending_sinks())
    (join,) = operators_of(driver, RegularJoinOperator)
    for sink in driver.sinks:
        sink.open()
    session.stream("b").push(b.slice(0, 60))
    driver.step()
    session.stream("a").push(a.slice(0, 60))
    driver.step()
    keys = {r["k"] for r in b.slice(0, 60).to_pylist() if r["k"] is not None and r["w"] > 90}
    waiting = [k for k in a.slice(0, 60).column("k").to_pylist() if k is not None and k not in keys]
    assert waiting and join.state[0].rows() == len(waiting)
