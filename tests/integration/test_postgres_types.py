"""Every SQL type sqlstream has, through ``connector = 'postgres'``: the column type a
created table gets, and the values as PostgreSQL holds them."""

from __future__ import annotations

import datetime as dt
import decimal

import pyarrow as pa
import pytest

from sqlstream.testing import TestSession
from tests.integration import postgres_fixtures
from tests.integration.postgres_fixtures import POSTGRES_URL

pg_schema = postgres_fixtures.pg_schema  # the fixture

pytestmark = pytest.mark.timeout(120)

#: (column, SQL type, Arrow type, PostgreSQL type, a value as Arrow takes it, the value as psycopg returns it)
UTC = dt.timezone.utc
CASES = [
    ("b", "BOOLEAN", pa.bool_(), "boolean", True, True),
    ("i16", "SMALLINT", pa.int16(), "smallint", -7, -7),
    ("i32", "INT", pa.int32(), "integer", 2_000_000_000, 2_000_000_000),
    ("i64", "BIGINT", pa.int64(), "bigint", 9_000_000_000_000, 9_000_000_000_000),
    ("f32", "REAL", pa.float32(), "real", 1.5, 1.5),
    ("f64", "DOUBLE", pa.float64(), "double precision", float("inf"), float("inf")),
    ("dec", "DECIMAL(10,2)", pa.decimal128(10, 2), "numeric(10,2)", decimal.Decimal("-12.34"), decimal.Decimal("-12.34")),
    ("txt", "VARCHAR", pa.string(), "text", 'a "quoted", line\nbreak', 'a "quoted", line\nbreak'),
    ("empty", "VARCHAR", pa.string(), "text", "", ""),
    ("bin", "BYTEA", pa.binary(), "bytea", b"\x00\xffab", b"\x00\xffab"),
    ("day", "DATE", pa.date32(), "date", dt.date(2024, 2, 29), dt.date(2024, 2, 29)),
    ("tod", "TIME", pa.time64("us"), "time without time zone", dt.time(23, 59, 58, 123456), dt.time(23, 59, 58, 123456)),
    ("ts", "TIMESTAMP", pa.timestamp("us"), "timestamp without time zone",
     dt.datetime(2024, 1, 2, 3, 4, 5, 6), dt.datetime(2024, 1, 2, 3, 4, 5, 6)),
    ("tstz", "TIMESTAMPTZ", pa.timestamp("us", tz="UTC"), "timestamp with time zone",
     dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ("arr", "INT[]", pa.list_(pa.int32()), "jsonb", [1, None, 3], [1, None, 3]),
    ("rec", "STRUCT<a INT, s VARCHAR>", pa.struct([("a", pa.int32()), ("s", pa.string())]), "jsonb",
     {"a": 1, "s": "x"}, {"a": 1, "s": "x"}),
]


def test_every_type_maps_and_round_trips(tmp_path, pg_schema):
    conn, schema = pg_schema
    arrow = pa.schema([(name, t) for name, _, t, *_ in CASES])
    rows = pa.Table.from_pylist([{c[0]: c[4] for c in CASES}, {c[0]: None for c in CASES}], schema=arrow)
    t = TestSession(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"))
    columns = ", ".join(f"{name} {sql}" for name, sql, *_ in CASES)
    t.execute(f"CREATE SOURCE s ({columns}) WITH (connector = 'memory')")
    t.stream("s").push(rows).finish()
    t.execute(f"CREATE SINK out AS SELECT * FROM s WITH (connector = 'postgres', url = '{POSTGRES_URL}', "
              f"schema = '{schema}', table = 'typed')")
    t.run()
    assert not (tmp_path / "dead.jsonl").exists() or (tmp_path / "dead.jsonl").read_text() == ""
    types = dict(conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0",
        [f'"{schema}".typed']).fetchall())
    assert types == {name: pg for name, _, _, pg, *_ in CASES}
    got = conn.execute(f'SELECT {", ".join(c[0] for c in CASES)} FROM "{schema}".typed ORDER BY b NULLS LAST').fetchall()
    assert [tuple(got[0]), tuple(got[1])] == [tuple(c[5] for c in CASES), (None,) * len(CASES)]


def test_binary_copy_round_trips_every_type_it_covers(tmp_path, pg_schema):
    """Tables whose columns all have a binary-COPY type take the binary path: nulls,
    extremes, empty and non-ASCII texts, times before 2000 (PostgreSQL's epoch)."""
    conn, schema = pg_schema
    cases = [c for c in CASES if c[3] not in ("jsonb", "numeric(10,2)")] + [
        ("tiny", "TINYINT", pa.int8(), "smallint", -128, -128),
        ("old", "TIMESTAMP", pa.timestamp("us"), "timestamp without time zone",
         dt.datetime(1969, 12, 31, 23, 59, 59, 999999), dt.datetime(1969, 12, 31, 23, 59, 59, 999999)),
        ("uni", "VARCHAR", pa.string(), "text", "grüße ✓", "grüße ✓"),
        ("big", "BIGINT", pa.int64(), "bigint", -(2**63), -(2**63)),
    ]
    arrow = pa.schema([(name, t) for name, _, t, *_ in cases])
    rows = [{c[0]: c[4] for c in cases}, {c[0]: None for c in cases}] * 50
    t = TestSession(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"))
    t.execute(f"CREATE SOURCE s ({', '.join(f'{name} {sql}' for name, sql, *_ in cases)}) WITH (connector = 'memory')")
    t.stream("s").push(pa.Table.from_pylist(rows, schema=arrow), batch_size=30).finish()
    t.execute(f"CREATE SINK out AS SELECT * FROM s WITH (connector = 'postgres', url = '{POSTGRES_URL}', "
              f"schema = '{schema}', table = 'binary_typed')")
    t.run()
    got = conn.execute(f'SELECT {", ".join(c[0] for c in cases)} FROM "{schema}".binary_typed').fetchall()
    expected = [tuple(c[5] for c in cases), (None,) * len(cases)] * 50
    assert sorted(got, key=repr) == sorted(expected, key=repr)


def test_bytea_and_interval_through_the_csv_copy(tmp_path, pg_schema):
    conn, schema = pg_schema
    rows = pa.table({
        "id": pa.array([1, 2, 3], pa.int64()),
        "bin": pa.array([b"\x00\xffab", None, b""], pa.binary()),
        "iv": pa.array([pa.MonthDayNano([1, 2, 3000]), None, pa.MonthDayNano([-14, 0, -86_400_000_000_000])],
                       pa.month_day_nano_interval()),
    })
    t = TestSession(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"))
    t.execute("CREATE SOURCE s (id BIGINT, bin BYTEA, iv INTERVAL) WITH (connector = 'memory')")
    t.stream("s").push(rows).finish()
    # INTERVAL has no binary COPY encoder: the table goes through COPY … csv
    t.execute(f"CREATE SINK out AS SELECT * FROM s WITH (connector = 'postgres', url = '{POSTGRES_URL}', "
              f"schema = '{schema}', table = 'bytes_and_spans')")
    t.run()
    assert not (tmp_path / "dead.jsonl").exists() or (tmp_path / "dead.jsonl").read_text() == ""
    got = conn.execute(f'SELECT id, bin, iv::text FROM "{schema}".bytes_and_spans ORDER BY id').fetchall()
    assert got == [(1, b"\x00\xffab", "1 mon 2 days 00:00:00.000003"), (2, None, None),
                   (3, b"", "-1 years -2 mons -24:00:00")]
