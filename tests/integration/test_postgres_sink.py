"""``connector = 'postgres'`` as a sink, against a real PostgreSQL: appends, upserts
with retractions (the table equals DuckDB's result of the same query), and errors."""

from __future__ import annotations

import json
import random

import duckdb
import pyarrow as pa
import pytest

from sqlstream.errors import ConnectorError
from sqlstream.testing import TestSession
from tests.integration import postgres_fixtures
from tests.integration.postgres_fixtures import POSTGRES_URL

pg_schema = postgres_fixtures.pg_schema  # the fixture

pytestmark = pytest.mark.timeout(120)


def _events(n: int, seed: int) -> pa.Table:
    rnd = random.Random(seed)
    return pa.table({
        "k": pa.array([f"key-{rnd.randrange(8)}" for _ in range(n)]),
        "v": pa.array([rnd.randrange(-20, 50) for _ in range(n)], pa.int64()),
    })


def _session(tmp_path, data: pa.Table, batch_rows: int = 37) -> TestSession:
    t = TestSession(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"))
    t.execute("CREATE SOURCE s (k VARCHAR, v BIGINT) WITH (connector = 'memory')")
    t.stream("s").push(data, batch_size=batch_rows).finish()
    return t


def _sink(t: TestSession, schema: str, table: str, query: str, extra: str = "") -> None:
    t.execute(f"CREATE SINK out AS {query} WITH (connector = 'postgres', url = '{POSTGRES_URL}', "
              f"schema = '{schema}', table = '{table}'{extra})")


def _rows(conn, sql: str) -> list[tuple]:
    return sorted(conn.execute(sql).fetchall(), key=repr)


def _duckdb(data: pa.Table, query: str) -> list[tuple]:
    con = duckdb.connect()
    con.register("s", data)
    return sorted(con.execute(query).fetchall(), key=repr)


def test_append_copies_every_row(tmp_path, pg_schema):
    conn, schema = pg_schema
    data = _events(1000, 1)
    t = _session(tmp_path, data)
    _sink(t, schema, "appended", "SELECT k, v * 2 AS v2 FROM s WHERE v > 0")
    summary = t.run()
    assert summary.sinks["out"] == _duckdb(data, "SELECT count(*) FROM s WHERE v > 0")[0][0]
    assert _rows(conn, f'SELECT k, v2 FROM "{schema}".appended') == _duckdb(data, "SELECT k, v * 2 FROM s WHERE v > 0")
    types = dict(conn.execute("SELECT column_name, data_type FROM information_schema.columns "
                              "WHERE table_schema = %s AND table_name = 'appended'", [schema]).fetchall())
    assert types == {"k": "text", "v2": "bigint"}


@pytest.mark.parametrize("query", [
    "SELECT k, sum(v) AS total, count(*) AS n FROM s GROUP BY k",
    # HAVING takes groups out of the result again: deletes by key
    "SELECT k, sum(v) AS total FROM s GROUP BY k HAVING sum(v) < 40",
    # no key in the result (a global aggregate; an aggregate over an aggregate): the table as a multiset
    "SELECT count(*) AS n, sum(v) AS total FROM s",
    "SELECT n, count(*) AS groups FROM (SELECT k, count(*) AS n FROM s GROUP BY k) AS g GROUP BY n",
])
def test_updating_results_leave_the_final_result_in_the_table(tmp_path, pg_schema, query):
    conn, schema = pg_schema
    data = _events(600, 2)
    t = _session(tmp_path, data, batch_rows=23)
    _sink(t, schema, "current", query)
    t.run()
    assert _rows(conn, f'SELECT * FROM "{schema}".current') == _duckdb(data, query)


def test_upserts_by_the_group_key(tmp_path, pg_schema):
    conn, schema = pg_schema
    t = _session(tmp_path, _events(300, 3))
    _sink(t, schema, "by_key", "SELECT k, sum(v) AS total FROM s GROUP BY k")
    t.run()
    key = conn.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass "
                       "AND contype = 'p'", [f'"{schema}".by_key']).fetchone()
    assert key == ("PRIMARY KEY (k)",)


def test_an_existing_table_keeps_its_rows_and_gets_upserts(tmp_path, pg_schema):
    conn, schema = pg_schema
    conn.execute(f'CREATE TABLE "{schema}".totals (k varchar(20) PRIMARY KEY, total numeric, extra text)')
    conn.execute(f"INSERT INTO \"{schema}\".totals VALUES ('other', 1, 'kept'), ('key-1', -5, 'x')")
    data = _events(200, 4)
    t = _session(tmp_path, data)
    _sink(t, schema, "totals", "SELECT k, sum(v) AS total FROM s GROUP BY k")
    t.run()
    got = _rows(conn, f'SELECT k, total::bigint FROM "{schema}".totals WHERE k <> \'other\'')
    assert got == _duckdb(data, "SELECT k, sum(v)::BIGINT FROM s GROUP BY k")
    assert conn.execute(f"SELECT extra FROM \"{schema}\".totals WHERE k = 'other'").fetchone() == ("kept",)


def test_a_row_postgresql_rejects_is_a_dead_letter(tmp_path, pg_schema):
    conn, schema = pg_schema
    conn.execute(f'CREATE TABLE "{schema}".checked (k text, v bigint CHECK (v <> 13))')
    data = pa.table({"k": [f"r{i}" for i in range(100)], "v": pa.array(range(100), pa.int64())})
    t = _session(tmp_path, data, batch_rows=100)
    _sink(t, schema, "checked", "SELECT k, v FROM s")
    t.run()
    assert _rows(conn, f'SELECT k, v FROM "{schema}".checked') == sorted(
        [(f"r{i}", i) for i in range(100) if i != 13], key=repr)
    letters = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [(d["source"], d["reason"], json.loads(d["raw"])) for d in letters] == [("out", "sink", {"k": "r13", "v": 13})]
    assert "checked_v_check" in letters[0]["detail"]


def test_a_missing_column_is_an_error_at_start(tmp_path, pg_schema):
    conn, schema = pg_schema
    conn.execute(f'CREATE TABLE "{schema}".narrow (k text)')
    t = _session(tmp_path, _events(10, 5))
    _sink(t, schema, "narrow", "SELECT k, v FROM s")
    with pytest.raises(ConnectorError) as info:
        t.run()
    assert info.value.message == f"sink 'out': table {schema}.narrow has no column 'v'"
    assert "ADD COLUMN \"v\" bigint" in info.value.hint


def test_an_incompatible_column_type_is_an_error_at_start(tmp_path, pg_schema):
    conn, schema = pg_schema
    conn.execute(f'CREATE TABLE "{schema}".wrong (k text, v date)')
    t = _session(tmp_path, _events(10, 6))
    _sink(t, schema, "wrong", "SELECT k, v FROM s")
    with pytest.raises(ConnectorError) as info:
        t.run()
    assert info.value.message == (f"sink 'out': column 'v' of table {schema}.wrong is date, "
                                  "which cannot hold the query's bigint values")


def test_an_upsert_needs_a_unique_key_on_an_existing_table(tmp_path, pg_schema):
    conn, schema = pg_schema
    conn.execute(f'CREATE TABLE "{schema}".nokey (k text, total bigint)')
    t = _session(tmp_path, _events(10, 7))
    _sink(t, schema, "nokey", "SELECT k, sum(v) AS total FROM s GROUP BY k")
    with pytest.raises(ConnectorError) as info:
        t.run()
    assert info.value.message == (f"sink 'out': table {schema}.nokey has no primary key or unique index on (k), "
                                  "which upserts need")


def test_a_left_join_with_retractions_leaves_its_final_result(tmp_path, pg_schema):
    """A regular outer join retracts its NULL-padded rows when a match arrives; the
    keyless (multiset) path keeps the table equal to the final result."""
    conn, schema = pg_schema
    left = _events(200, 8)
    right = pa.table({"k": [f"key-{i}" for i in range(0, 8, 2)], "w": pa.array([10, 20, 30, 40], pa.int64())})
    t = TestSession(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"))
    t.execute("CREATE SOURCE s (k VARCHAR, v BIGINT) WITH (connector = 'memory')")
    t.execute("CREATE SOURCE r (k VARCHAR, w BIGINT) WITH (connector = 'memory')")
    t.stream("s").push(left, batch_size=25).finish()
    t.stream("r").push(right, batch_size=1).finish()
    query = "SELECT s.k, s.v, r.w FROM s LEFT JOIN r ON s.k = r.k"
    _sink(t, schema, "joined", query)
    t.run()
    con = duckdb.connect()
    con.register("s", left)
    con.register("r", right)
    assert _rows(conn, f'SELECT k, v, w FROM "{schema}".joined') == sorted(con.execute(query).fetchall(), key=repr)
