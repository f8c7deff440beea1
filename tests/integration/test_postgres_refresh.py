"""``CREATE TABLE … WITH (connector = 'postgres', refresh_interval = …)``: the lookup
TABLE is read again while the run goes on, and the joins switch to the new rows
between two driver steps; a failed read keeps the old rows. Also: the vectorized read
(COPY … csv → pyarrow) gives exactly what the per-value path gives."""

from __future__ import annotations

import datetime as dt
import decimal
import time

import numpy as np
import pyarrow as pa
import pytest

from sqlstream.connectors.postgres.table import TableName, existing_columns
from sqlstream.connectors.postgres.table_read import csv_select, read_rows, read_table
from sqlstream.errors import ConnectorError
from sqlstream.testing import TestSession
from tests.integration import postgres_fixtures
from tests.integration.postgres_fixtures import POSTGRES_URL

pg_schema = postgres_fixtures.pg_schema  # the fixture

pytestmark = pytest.mark.timeout(120)


def _session(tmp_path, schema: str, refresh: str = "30s") -> TestSession:
    t = TestSession(base_dir=str(tmp_path), dead_letter_path="off")
    t.execute("CREATE SOURCE a (k INT) WITH (connector = 'memory')")
    t.execute(f"CREATE TABLE m (id INT, region VARCHAR) WITH (connector = 'postgres', url = '{POSTGRES_URL}', "
              f"schema = '{schema}', table = 'ref', refresh_interval = '{refresh}')")
    t.execute("CREATE SINK out AS SELECT a.k, m.region FROM a JOIN m ON a.k = m.id WITH (connector = 'memory')")
    return t


def _joined(t: TestSession, run, keys: list[int]) -> list[tuple]:
    before = len(t.rows("out", fold=False))
    t.stream("a").push([{"k": k} for k in keys])
    run.pump()
    return sorted((r["k"], r["region"]) for r in t.rows("out", fold=False)[before:])


def _wait_for(run, condition, what: str, deadline_s: float = 20.0) -> None:
    """Step the driver (the clock stands still) until the background read was applied."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        run.driver.step()
        time.sleep(0.002)


def test_refresh_swaps_the_rows_between_steps(tmp_path, pg_schema):
    conn, schema = pg_schema
    conn.execute(f'CREATE TABLE "{schema}".ref (id integer PRIMARY KEY, region text)')
    conn.execute(f"INSERT INTO \"{schema}\".ref VALUES (1, 'north'), (2, 'south')")
    t = _session(tmp_path, schema)
    run = t.start()
    (refresher,) = run.driver.tables
    assert _joined(t, run, [1, 2, 3]) == [(1, "north"), (2, "south")]

    conn.execute(f"UPDATE \"{schema}\".ref SET region = 'west' WHERE id = 1")
    conn.execute(f'DELETE FROM "{schema}".ref WHERE id = 2')
    conn.execute(f"INSERT INTO \"{schema}\".ref VALUES (3, 'east')")
    run.advance(29)  # not due yet: the old rows
    assert refresher._in_flight is None
    assert _joined(t, run, [1, 2, 3]) == [(1, "north"), (2, "south")]

    run.advance(2)  # 31s: due, read on a background thread
    assert refresher._in_flight is not None
    _wait_for(run, lambda: refresher.refreshes == 1, "the refresh")
    assert _joined(t, run, [1, 2, 3]) == [(1, "west"), (3, "east")]
    assert refresher.status()["rows"] == 2 and refresher.failures == 0

    summary = run.finish()
    assert summary.tables["m"]["refreshes"] == 1
    assert "TABLE m: read again 1x" in summary.line()


def test_a_failed_refresh_keeps_the_old_rows_and_warns(tmp_path, pg_schema):
    conn, schema = pg_schema
    conn.execute(f'CREATE TABLE "{schema}".ref (id integer PRIMARY KEY, region text)')
    conn.execute(f"INSERT INTO \"{schema}\".ref VALUES (1, 'north')")
    t = _session(tmp_path, schema, refresh="1s")
    run = t.start()
    warnings: list[str] = []
    run.driver.warn = warnings.append
    (refresher,) = run.driver.tables

    conn.execute(f'ALTER TABLE "{schema}".ref RENAME TO gone')
    run.advance(1.5)
    _wait_for(run, lambda: refresher.failures == 1, "the failed refresh")
    assert warnings == [f"TABLE m: refresh failed (1 so far), keeping the 1 rows read before: table 'm': "
                        f"PostgreSQL table {schema}.ref does not exist"]
    assert _joined(t, run, [1]) == [(1, "north")]  # the run goes on with the old rows

    conn.execute(f'ALTER TABLE "{schema}".gone RENAME TO ref')
    conn.execute(f"UPDATE \"{schema}\".ref SET region = 'up again'")
    run.advance(1.5)
    _wait_for(run, lambda: refresher.refreshes == 1, "the next refresh")
    assert _joined(t, run, [1]) == [(1, "up again")]
    summary = run.finish()
    assert summary.tables["m"]["refresh_failures"] == 1
    assert "TABLE m: read again 1x, 1 failed" in summary.line()


def test_refresh_interval_is_validated(tmp_path, pg_schema):
    _, schema = pg_schema
    t = TestSession(base_dir=str(tmp_path), dead_letter_path="off")
    with pytest.raises(ConnectorError, match="option 'refresh_interval' = '1ms' is invalid .*at least '10ms'"):
        t.execute(f"CREATE TABLE m (id INT) WITH (connector = 'postgres', url = '{POSTGRES_URL}', "
                  f"table = 'ref', refresh_interval = '1ms')")


def test_the_csv_read_gives_what_the_row_read_gives(pg_schema):
    conn, schema = pg_schema
    conn.execute(f'CREATE TABLE "{schema}".typed (b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, '
                 "dec numeric(10,2), txt text, vc varchar(20), js jsonb, d date, t time, ts timestamp, "
                 "tstz timestamptz, ts_as_day timestamptz)")
    values = [
        (True, -7, 2_000_000_000, -9_000_000_000_000, 1.5, float("inf"), decimal.Decimal("-12.34"),
         'a "quoted", line\nbreak', "NA", '{"a": [1, null]}', dt.date(1969, 12, 31), dt.time(23, 59, 58, 123456),
         dt.datetime(1960, 1, 2, 3, 4, 5, 6), dt.datetime(2024, 1, 2, 3, 4, 5, 7, tzinfo=dt.timezone.utc),
         dt.datetime(2024, 1, 2, 23, 0, tzinfo=dt.timezone.utc)),
        (False, 0, 0, 0, float("nan"), float("-inf"), decimal.Decimal("0"), "", "", "null", dt.date(2024, 2, 29),
         dt.time(0, 0), dt.datetime(2024, 1, 1), dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc),
         dt.datetime(1999, 12, 31, tzinfo=dt.timezone.utc)),
        (None,) * 15,
    ]
    with conn.cursor() as cur:
        cur.executemany(f'INSERT INTO "{schema}".typed VALUES ({", ".join(["%s"] * 15)})', values)
    arrow = pa.schema([("b", pa.bool_()), ("i2", pa.int16()), ("i4", pa.int32()), ("i8", pa.int64()),
                       ("f4", pa.float32()), ("f8", pa.float64()), ("dec", pa.decimal128(10, 2)),
                       ("txt", pa.string()), ("vc", pa.string()), ("js", pa.string()), ("d", pa.date32()),
                       ("t", pa.time64("us")), ("ts", pa.timestamp("us")), ("tstz", pa.timestamp("us", "UTC")),
                       ("ts_as_day", pa.date32())])
    name = TableName(schema, "typed")
    columns = existing_columns(conn, name)
    assert csv_select(arrow, columns) is not None  # every column goes through CSV
    got = read_table(conn, name, arrow, columns, "table 'typed'")
    by_rows = [n for n in arrow.names if n not in ("js", "ts_as_day")]  # the row read cannot convert these two
    expected = read_rows(conn, name, pa.schema([arrow.field(n) for n in by_rows]), columns, "table 'typed'")
    for column in by_rows:
        if column == "f4":  # NaN: equal as numpy compares it
            np.testing.assert_array_equal(got.column(column).to_numpy(zero_copy_only=False),
                                          expected.column(column).to_numpy(zero_copy_only=False))
        else:
            assert got.column(column).equals(expected.column(column)), column
    assert got.column("js").to_pylist() == ['{"a": [1, null]}', "null", None]
    assert got.column("ts_as_day").to_pylist() == [dt.date(2024, 1, 2), dt.date(1999, 12, 31), None]
    assert got.column(7)[1].as_py() == "" and got.column(7)[2].as_py() is None  # '' is not NULL
    assert got.column(8)[0].as_py() == "NA"  # nor is 'NA'


def test_bytea_falls_back_to_the_row_read_and_a_bad_value_names_its_column(pg_schema):
    conn, schema = pg_schema
    conn.execute(f'CREATE TABLE "{schema}".raw (id int8, blob bytea, big int8)')
    conn.execute(f"INSERT INTO \"{schema}\".raw VALUES (1, '\\x00ff', 5000000000)")
    name = TableName(schema, "raw")
    columns = existing_columns(conn, name)
    with_blob = pa.schema([("id", pa.int64()), ("blob", pa.binary())])
    assert csv_select(with_blob, columns) is None
    assert read_table(conn, name, with_blob, columns, "table 'raw'").to_pylist() == [{"id": 1, "blob": b"\x00\xff"}]
    too_small = pa.schema([("id", pa.int64()), ("big", pa.int32())])
    with pytest.raises(ConnectorError, match=r"table 'raw': column 'big' of .*raw \(bigint\) does not fit"):
        read_table(conn, name, too_small, columns, "table 'raw'")
