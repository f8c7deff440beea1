"""``CREATE TABLE … WITH (connector = 'postgres')``: a PostgreSQL table as the lookup
side of a join, read whole when the run starts; results agree with DuckDB."""

from __future__ import annotations

import datetime as dt
import decimal
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

TABLE_COLUMNS = "id INT, region VARCHAR, rate DOUBLE, active BOOLEAN, since DATE, price DECIMAL(8,2)"


def _reference(conn, schema: str) -> pa.Table:
    conn.execute(f'CREATE TABLE "{schema}".ref (id integer PRIMARY KEY, region text, rate float8, active bool, '
                 "since date, price numeric(8,2), unused text)")
    rows = [(i, ["north", "south", None][i % 3], i / 4, i % 2 == 0, dt.date(2020, 1, 1 + i), decimal.Decimal(i) / 4,
             "x") for i in range(0, 20, 2)]
    with conn.cursor() as cur:
        cur.executemany(f'INSERT INTO "{schema}".ref VALUES (%s, %s, %s, %s, %s, %s, %s)', rows)
    return pa.Table.from_pylist(
        [dict(zip(["id", "region", "rate", "active", "since", "price"], r[:6])) for r in rows],
        schema=pa.schema([("id", pa.int32()), ("region", pa.string()), ("rate", pa.float64()),
                          ("active", pa.bool_()), ("since", pa.date32()), ("price", pa.decimal128(8, 2))]),
    )


@pytest.mark.parametrize("query", [
    "SELECT a.k, a.v, m.region, m.rate FROM a JOIN m ON a.k = m.id",
    "SELECT a.k, a.v, m.region, m.since, m.price FROM a LEFT JOIN m ON a.k = m.id AND m.active",
])
def test_a_postgres_table_backs_a_lookup_join(tmp_path, pg_schema, query):
    conn, schema = pg_schema
    reference = _reference(conn, schema)
    rnd = random.Random(7)
    events = pa.table({"k": pa.array([rnd.randrange(22) for _ in range(500)], pa.int32()),
                       "v": pa.array([rnd.randrange(100) for _ in range(500)], pa.int64())})
    t = TestSession(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"))
    t.execute("CREATE SOURCE a (k INT, v BIGINT) WITH (connector = 'memory')")
    t.execute(f"CREATE TABLE m ({TABLE_COLUMNS}) WITH (connector = 'postgres', url = '{POSTGRES_URL}', "
              f"schema = '{schema}', table = 'ref')")
    t.stream("a").push(events, batch_size=64).finish()
    got = sorted((tuple(r.values()) for r in t.run_query(query)), key=repr)
    con = duckdb.connect()
    con.register("a", events)
    con.register("m", reference)
    assert got == sorted(con.execute(query).fetchall(), key=repr)


def test_a_missing_table_is_an_error(tmp_path, pg_schema):
    _, schema = pg_schema
    t = TestSession(base_dir=str(tmp_path), dead_letter_path="off")
    t.execute("CREATE SOURCE a (k INT) WITH (connector = 'memory')")
    t.execute(f"CREATE TABLE m (id INT) WITH (connector = 'postgres', url = '{POSTGRES_URL}', "
              f"schema = '{schema}', table = 'absent')")
    t.stream("a").push([{"k": 1}]).finish()
    with pytest.raises(ConnectorError) as info:
        t.run_query("SELECT a.k FROM a JOIN m ON a.k = m.id")
    assert info.value.message == f"table 'm': PostgreSQL table {schema}.absent does not exist"
