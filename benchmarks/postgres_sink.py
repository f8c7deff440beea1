"""PostgreSQL sink throughput: rows/s into a table through sqlstream vs a plain COPY of
the same Arrow data with the same driver (psycopg 3), in the same run.

* **sqlstream**: ``CREATE SINK … AS SELECT * FROM s WITH (connector = 'postgres')``
  over a ``connector = 'memory'`` source pushed in micro-batches of ``--batch-size``
  rows (the sink writes one COPY transaction per batch).
* **plain COPY (csv)**: the Arrow table written as CSV by pyarrow and sent with
  ``COPY … FROM STDIN (FORMAT csv)``, one transaction per batch of the same size —
  the path the sink takes, without the engine.
* **plain COPY (binary)**: the same, in the binary format the sink sends when every
  column's type allows (encoded from Arrow with numpy:
  ``sqlstream.connectors.postgres.binary``) — the sink's path without the engine,
  and the baseline of the ratio.
* **sqlstream, checkpointed**: the same pipeline with ``SET checkpoint_dir`` (every
  ``--checkpoint-interval``): each flush is a COPY into the sink's staging table and
  each checkpoint moves its epoch into the table in one transaction with its marker
  (exactly-once), so every row is written twice inside PostgreSQL.
* **plain COPY (binary, psycopg rows)**: psycopg's binary COPY fed row by row
  (``copy.write_row``), for the choice between the two formats (``--binary-rows``
  rows; Python builds every row, so it is far slower).

Each table is a plain (logged) table, created anew before each run; each time is the
best of ``--repeat`` runs.

    python benchmarks/postgres_sink.py                 # 1M rows
    python benchmarks/postgres_sink.py --rows 200000
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time

import numpy as np
import psycopg
import pyarrow as pa

from sqlstream.connectors.postgres.binary import binary_copy
from sqlstream.connectors.postgres.types import csv_rows
from sqlstream.testing import TestSession

URL = os.environ.get("SQLSTREAM_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
BASE_US = 1_690_000_000_000_000
COLUMNS = "id bigint, sensor text, value double precision, ts timestamp"


def make_rows(rows: int, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    sensors = pa.array([f"sensor-{i}" for i in range(1000)])
    return pa.table({
        "id": np.arange(rows, dtype=np.int64),
        "sensor": sensors.take(pa.array(rng.integers(0, 1000, rows))),
        "value": rng.normal(20.0, 5.0, rows).round(3),
        "ts": pa.array(BASE_US + np.arange(rows, dtype=np.int64) * 1000, pa.timestamp("us")),
    })


def reset(conn: psycopg.Connection, table: str) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute(f"CREATE TABLE {table} ({COLUMNS})")
    conn.commit()


def plain_copy(conn: psycopg.Connection, data: pa.Table, batch_size: int, fmt: str) -> float:
    reset(conn, "bench_plain")
    encode = csv_rows if fmt == "csv" else binary_copy
    start = time.perf_counter()
    for batch in data.to_batches(batch_size):
        with conn.transaction(), conn.cursor() as cur, cur.copy(f"COPY bench_plain FROM STDIN (FORMAT {fmt})") as copy:
            copy.write(encode(batch))
    return time.perf_counter() - start


def plain_copy_binary_rows(conn: psycopg.Connection, data: pa.Table) -> float:
    reset(conn, "bench_binary")
    rows = data.to_pylist()
    start = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur, cur.copy("COPY bench_binary FROM STDIN (FORMAT binary)") as copy:
        copy.set_types(["int8", "text", "float8", "timestamp"])
        for row in rows:
            copy.write_row((row["id"], row["sensor"], row["value"], row["ts"]))
    return time.perf_counter() - start


def through_sqlstream(data: pa.Table, batch_size: int, checkpoint_interval: str | None = None) -> float:
    with psycopg.connect(URL) as conn:
        reset(conn, "bench_sqlstream")
        conn.execute("DROP TABLE IF EXISTS sqlstream_epochs")
        conn.commit()
    with tempfile.TemporaryDirectory() as tmp:
        t = TestSession(base_dir=tmp, dead_letter_path="off")
        t.settings["batch_size"] = batch_size
        if checkpoint_interval is not None:
            t.execute("SET checkpoint_dir = 'ck'")
            t.execute(f"SET checkpoint_interval = '{checkpoint_interval}'")
        t.execute("CREATE SOURCE s (id BIGINT, sensor VARCHAR, value DOUBLE, ts TIMESTAMP) WITH (connector = 'memory')")
        t.execute(f"CREATE SINK out AS SELECT * FROM s WITH (connector = 'postgres', url = '{URL}', table = 'bench_sqlstream')")
        t.stream("s").push(data, batch_size=batch_size).finish()
        start = time.perf_counter()
        summary = t.run()
        elapsed = time.perf_counter() - start
    assert summary.sinks["out"] == data.num_rows, summary
    return elapsed


def stage_of(conn: psycopg.Connection) -> str:
    """The staging table the checkpointed sink 'out' left (empty) beside bench_sqlstream."""
    schema = conn.execute("SELECT current_schema()").fetchone()[0]
    return "sqlstream_stage_" + hashlib.sha256(f"out@{schema}.bench_sqlstream".encode()).hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=100_000)
    parser.add_argument("--binary-rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--checkpoint-interval", default="1s")
    args = parser.parse_args()
    data = make_rows(args.rows)
    with psycopg.connect(URL) as conn:
        csv = min(plain_copy(conn, data, args.batch_size, "csv") for _ in range(args.repeat))
        plain = min(plain_copy(conn, data, args.batch_size, "binary") for _ in range(args.repeat))
        binary = min(plain_copy_binary_rows(conn, data.slice(0, args.binary_rows)) for _ in range(args.repeat))
        ours = min(through_sqlstream(data, args.batch_size) for _ in range(args.repeat))
        count = conn.execute("SELECT count(*) FROM bench_sqlstream").fetchone()[0]
        assert count == args.rows, count
        conn.commit()  # its lock on bench_sqlstream would hold up the next run's DROP TABLE
        checkpointed = min(through_sqlstream(data, args.batch_size, args.checkpoint_interval)
                           for _ in range(args.repeat))
        count = conn.execute("SELECT count(*) FROM bench_sqlstream").fetchone()[0]
        epochs = conn.execute("SELECT count(*) FROM sqlstream_epochs").fetchone()[0]
        assert count == args.rows, count
        conn.execute(f"DROP TABLE IF EXISTS {stage_of(conn)}")
        for table in ("bench_plain", "bench_binary", "bench_sqlstream", "sqlstream_epochs"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
    print(f"rows: {args.rows:,}, batch size {args.batch_size:,}, best of {args.repeat}")
    print(f"plain COPY (csv, pyarrow):       {args.rows / csv:12,.0f} rows/s")
    print(f"plain COPY (binary, numpy):      {args.rows / plain:12,.0f} rows/s")
    print(f"plain COPY (binary, write_row):  {args.binary_rows / binary:12,.0f} rows/s ({args.binary_rows:,} rows)")
    print(f"sqlstream → postgres sink:       {args.rows / ours:12,.0f} rows/s  ({plain / ours:.2f}× plain binary COPY)")
    print(f"  … checkpointed (exactly-once): {args.rows / checkpointed:12,.0f} rows/s  "
          f"({plain / checkpointed:.2f}× plain binary COPY, {ours / checkpointed:.2f}× the sink without checkpoints; "
          f"{epochs} epochs, checkpoint_interval {args.checkpoint_interval})")


if __name__ == "__main__":
    main()
