"""PostgreSQL lookup TABLE read: rows/s of reading a whole table into Arrow, and how long
a ``refresh_interval`` swap holds the driver.

* **rows (per value)**: ``SELECT`` + ``fetchall`` + ``pa.array`` per column (the read
  before; still the fallback for BYTEA/INTERVAL/nested columns);
* **CSV lines → pyarrow**: one CSV line per row built by the server (a ``SELECT`` of
  one text column), parsed by ``pyarrow.csv`` with the declared types (the read now);
* **COPY csv → pyarrow**: ``COPY (SELECT …) TO STDOUT (FORMAT csv)``, the same parse
  (rejected: PostgreSQL sends a CopyData message per row, and reading them through
  psycopg is slower than fetching the rows);
* **swap**: the driver-thread part of a refresh (the TABLE's rows through the source
  stage and a lookup join's new key index), measured through a running pipeline.

Columns: (bigint, text, float8, bool, timestamptz); each time is the best of ``--repeat``.

    python benchmarks/postgres_lookup.py --rows 300000
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv

from sqlstream.connectors.postgres.table import TableName, existing_columns
from sqlstream.connectors.postgres.table_read import read_rows, read_table
from sqlstream.testing import TestSession

URL = os.environ.get("SQLSTREAM_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("price", pa.float64()), ("active", pa.bool_()),
                    ("ts", pa.timestamp("us", "UTC"))])


def copy_csv(conn, name, schema, columns, owner) -> pa.Table:
    select = "id, name, price, active, (extract(epoch from ts) * 1000000)::bigint"
    with conn.cursor().copy(f"COPY (SELECT {select} FROM {name.sql}) TO STDOUT (FORMAT csv)") as copy:
        data = b"".join(copy)
    types = dict(zip(schema.names, [pa.int64(), pa.string(), pa.float64(), pa.bool_(), pa.int64()], strict=True))
    return pacsv.read_csv(pa.py_buffer(data), read_options=pacsv.ReadOptions(column_names=schema.names),
                          convert_options=pacsv.ConvertOptions(column_types=types, true_values=["t"],
                                                               false_values=["f"], null_values=[""]))


def best(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    table = f"bench_lookup_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, name text, price float8, active bool, ts timestamptz)")
        try:
            conn.execute(f"INSERT INTO {table} SELECT g, 'name ' || g, g * 0.5, g % 2 = 0, "
                         f"now() - g * interval '1 second' FROM generate_series(1, {args.rows}) g")
            conn.execute(f"VACUUM ANALYZE {table}")
            name = TableName(None, table)
            columns = existing_columns(conn, name)
            for label, read in (("rows (per value)", read_rows), ("CSV lines -> pyarrow", read_table),
                                ("COPY csv -> pyarrow", copy_csv)):
                took = best(args.repeat, lambda read=read: read(conn, name, SCHEMA, columns, "bench"))
                print(f"{label:22s} {took:.3f}s  {args.rows / took:,.0f} rows/s")
            t = TestSession(dead_letter_path="off")
            t.execute("CREATE SOURCE a (k BIGINT) WITH (connector = 'memory')")
            t.execute(f"CREATE TABLE m (id BIGINT, name VARCHAR, price DOUBLE, active BOOLEAN, ts TIMESTAMPTZ) "
                      f"WITH (connector = 'postgres', url = '{URL}', table = '{table}', refresh_interval = '1s')")
            t.execute("CREATE SINK out AS SELECT a.k, m.name FROM a JOIN m ON a.k = m.id WITH (connector = 'memory')")
            run = t.start()
            (refresher,) = run.driver.tables
            swaps, reads = [], []
            for i in range(args.repeat):
                run.advance(1.0)
                while refresher.refreshes <= i:
                    run.driver.step()
                    time.sleep(0.001)
                swaps.append(refresher.last_swap_s)
                reads.append(refresher.last_read_s)
            print(f"refresh: read {min(reads):.3f}s (background thread), swap {min(swaps) * 1000:.1f} ms "
                  f"(median {sorted(swaps)[len(swaps) // 2] * 1000:.1f} ms) on the driver thread")
            run.finish()
        finally:
            conn.execute(f"DROP TABLE {table}")


if __name__ == "__main__":
    main()
