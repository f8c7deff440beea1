"""``CROSS JOIN UNNEST(array)`` vs DuckDB's UNNEST.

Variable lists with NULL and empty arrays and NULL elements, a fixed-size ``FLOAT[3]``
(as model outputs are), computed arrays, ``WITH ORDINALITY``, and window aggregates
after the unnest on out-of-order event times, in batches of 1, 7 and 64 rows.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from sqlstream.errors import SqlStreamError
from sqlstream.testing import TestSession
from tests.differential.test_joins import assert_same

BASE_US = 1_699_000_000_000_000
SOURCE_SQL = """CREATE SOURCE s (id BIGINT, tags BIGINT[], emb FLOAT[3], ts TIMESTAMP,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (connector = 'memory');"""


def _rows(n: int = 90, seed: int = 3) -> pa.Table:
    rng = np.random.default_rng(seed)
    tags = [None if rng.random() < 0.1 else
            [int(x) if rng.random() > 0.1 else None for x in rng.integers(0, 5, rng.integers(0, 4))] for _ in range(n)]
    times = BASE_US + np.sort(rng.integers(0, n * 250_000, n)) - rng.integers(0, 1_000_001, n)  # out of order, not late
    return pa.table({
        "id": pa.array(range(n), pa.int64()),
        "tags": pa.array(tags, pa.list_(pa.int64())),
        "emb": pa.array([[float(i), i / 2, -1.0] for i in range(n)], pa.list_(pa.float32(), 3)),
        "ts": pa.array(times, pa.timestamp("us")),
    })


S = _rows()


def ours(sql: str, batch: int) -> list[dict]:
    session = TestSession()
    session.execute(SOURCE_SQL)
    stream = session.stream("s")
    stream.push(S, batch_size=batch)
    stream.finish()
    return session.run_query(sql, fold=False)


def duck(sql: str) -> list[dict]:
    con = duckdb.connect()
    con.register("s", S)
    return con.sql(sql).to_arrow_table().to_pylist()


QUERIES = {
    # sqlstream, DuckDB (None: the same text)
    "cross join": ("SELECT id, x FROM s CROSS JOIN UNNEST(s.tags) AS u(x)", None),
    "comma, ordinality": ("SELECT id, x, n FROM s, UNNEST(tags) WITH ORDINALITY AS u(x, n)", None),
    "fixed-size array, alias only": ("SELECT id, e FROM s CROSS JOIN UNNEST(emb) AS e", None),
    "filter on the element": ("SELECT id, u.x * 10 AS x10, ts FROM s CROSS JOIN UNNEST(tags) AS u(x) WHERE u.x > 1", None),
    "computed array": ("SELECT id, y FROM s CROSS JOIN UNNEST(make_array(id, id + 1)) AS u(y) WHERE id % 3 = 0",
                       "SELECT id, y FROM s CROSS JOIN UNNEST([id, id + 1]) AS u(y) WHERE id % 3 = 0"),
    "left join on true": ("SELECT id, x, n FROM s LEFT JOIN UNNEST(tags) WITH ORDINALITY AS u(x, n) ON TRUE", None),
    "window after": (
        "SELECT window_start, x, count(*) AS n FROM TUMBLE(s, ts, INTERVAL '2' SECOND) CROSS JOIN UNNEST(tags) AS u(x) "
        "GROUP BY window_start, window_end, x",
        "SELECT make_timestamp(epoch_us(ts) // 2000000 * 2000000) AS window_start, x, count(*) AS n "
        "FROM s CROSS JOIN UNNEST(tags) AS u(x) GROUP BY ALL"),
}


@pytest.mark.parametrize("batch", [1, 7, 64])
@pytest.mark.parametrize("case", sorted(QUERIES))
def test_unnest_matches_duckdb(case, batch):
    sql, duck_sql = QUERIES[case]
    rows = ours(sql, batch)
    assert rows and all("__op" not in r for r in rows)  # stateless; the window after it is final
    assert_same(rows, duck(duck_sql or sql))


def test_a_view_over_unnest_keeps_event_time():
    session = TestSession()
    session.execute(SOURCE_SQL + "CREATE VIEW tagged AS SELECT id, ts, x FROM s CROSS JOIN UNNEST(tags) AS u(x);")
    stream = session.stream("s")
    stream.push(S, batch_size=5)
    stream.finish()
    sql = "SELECT window_start, count(*) AS n FROM TUMBLE(tagged, ts, INTERVAL '3' SECOND) GROUP BY window_start, window_end"
    assert "Unnest tags" in session.explain("EXPLAIN " + sql)
    assert_same(session.run_query(sql, fold=False), duck(
        "SELECT make_timestamp(epoch_us(ts) // 3000000 * 3000000) AS window_start, count(*) AS n "
        "FROM s CROSS JOIN UNNEST(tags) AS u(x) GROUP BY 1"))


ERRORS = [
    ("SELECT * FROM s CROSS JOIN UNNEST(id) AS u(x)", "1:35: error: UNNEST needs an array; id is BIGINT"),
    ("SELECT * FROM s LEFT JOIN UNNEST(tags) AS u(x) ON u.x > 1", "UNNEST is supported as CROSS JOIN UNNEST(...)"),
    ("SELECT * FROM s FULL JOIN UNNEST(tags) AS u(x) ON TRUE", "UNNEST is supported as CROSS JOIN UNNEST(...)"),
    ("SELECT * FROM s CROSS JOIN UNNEST(tags, tags) AS u(x, y)", "UNNEST of several arrays is not supported"),
    ("SELECT * FROM s CROSS JOIN UNNEST(nope) AS u(x)", "unknown column 'nope'"),
]


@pytest.mark.parametrize("sql,message", ERRORS)
def test_unnest_errors(sql, message):
    session = TestSession()
    session.execute(SOURCE_SQL)
    with pytest.raises(SqlStreamError) as caught:
        session.execute(sql, path="q.sql")
    text = caught.value.render()
    assert text.startswith("q.sql:1:") and message in text


BOXES = pa.table({
    "id": pa.array(range(6), pa.int64()),
    "boxes": pa.array([[{"label": "scratch", "score": 0.9}, {"label": "dent", "score": 0.4}], [], None,
                       [{"label": "dent", "score": 0.7}], [{"label": None, "score": 0.2}],
                       [{"label": "scratch", "score": 0.5}, {"label": "scratch", "score": 0.6}]],
                      pa.list_(pa.struct([("label", pa.string()), ("score", pa.float32())]))),
})


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("sql", [
    "SELECT id, d.label, d.score FROM b CROSS JOIN UNNEST(boxes) AS t(d)",
    "SELECT id, d.label AS what FROM b CROSS JOIN UNNEST(boxes) AS t(d) WHERE d.score > 0.45",
    "SELECT d.label, count(*) AS n FROM b CROSS JOIN UNNEST(boxes) AS t(d) GROUP BY d.label",
])
def test_a_struct_element_field_is_alias_dot_field_as_in_duckdb(sql, batch):
    """``d.label`` where ``d`` is a STRUCT column (not a relation) is its field, as in
    PostgreSQL and DuckDB: how a detector's boxes are read after UNNEST."""
    session = TestSession()
    session.execute("CREATE SOURCE b (id BIGINT, boxes ARRAY<STRUCT<label VARCHAR, score REAL>>) "
                    "WITH (connector = 'memory')")
    session.stream("b").push(BOXES, batch_size=batch).finish()
    rows = session.run_query(sql)
    con = duckdb.connect()
    con.register("b", BOXES)
    assert rows
    assert_same(rows, con.sql(sql).to_arrow_table().to_pylist())


def test_a_missing_struct_field_and_a_relation_of_the_same_name():
    session = TestSession()
    session.execute("CREATE SOURCE b (id BIGINT, boxes ARRAY<STRUCT<label VARCHAR, score REAL>>) "
                    "WITH (connector = 'memory')")
    with pytest.raises(SqlStreamError) as caught:
        session.execute("SELECT d.labl FROM b CROSS JOIN UNNEST(boxes) AS t(d)", path="q.sql")
    assert caught.value.render().splitlines()[0] == "q.sql:1:8: error: column 'd' has no field 'labl'"
    assert "hint: did you mean 'label'?" in caught.value.render()
    with pytest.raises(SqlStreamError) as caught:  # a relation named like the column wins (t.label: no such column)
        session.execute("SELECT t.label FROM b CROSS JOIN UNNEST(boxes) AS t(t)", path="q.sql")
    assert "unknown column 'label'" in caught.value.render()
