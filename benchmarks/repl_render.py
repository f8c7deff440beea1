"""What rendering costs in ``sqlstream repl``: result rows/s through the REPL's output
formats, against the same query with no rendering (the engine alone) and against DuckDB
writing the same result in the same format.

The data is one Parquet file (``--rows`` rows, default 2M: ``id``, ``k`` among 10,000
keys, ``v``), read by a ``connector = 'file'`` source. For each output format the REPL
runs ``SELECT id, k, v * 2 AS v2 FROM src WHERE v > 0.5`` (append-only, about half the
rows) with its output going to /dev/null, exactly as ``sqlstream repl --json -e ... >
/dev/null`` would; and an updating aggregate (``GROUP BY k``), whose changelog the REPL
folds into the final table before writing it.

    python benchmarks/repl_render.py             # 2M rows
    python benchmarks/repl_render.py --quick     # 200k rows
    python benchmarks/repl_render.py --rows 5000000
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sqlstream.cli.repl import Repl
from sqlstream.session import Session

KEYS = 10_000
APPEND = "SELECT id, k, v * 2 AS v2 FROM src WHERE v > 0.5"
UPDATING = "SELECT k, count(*) AS n, sum(v) AS total FROM src GROUP BY k"


def make_data(path: str, rows: int) -> None:
    rng = np.random.default_rng(1)
    table = pa.table({
        "id": np.arange(rows, dtype=np.int64),
        "k": rng.integers(0, KEYS, rows, dtype=np.int64),
        "v": rng.random(rows),
    })
    pq.write_table(table, path, row_group_size=100_000)


def session(directory: str) -> Session:
    s = Session(base_dir=directory, dead_letter_path="off")
    s.execute("CREATE SOURCE src (id BIGINT, k BIGINT, v DOUBLE) "
              "WITH (connector = 'file', path = 'data.parquet', format = 'parquet')")
    s.execute("SET file_batch_size = 100000")
    return s


def engine_only(directory: str, sql: str) -> tuple[float, int]:
    s = session(directory)
    started = time.perf_counter()
    rows = sum(batch.num_rows for batch in s.query(sql))
    return time.perf_counter() - started, rows


def through_repl(directory: str, sql: str, fmt: str) -> tuple[float, int]:
    with open(os.devnull, "w") as sink:
        repl = Repl(session(directory), out=sink, err=io.StringIO(), fmt=fmt)
        started = time.perf_counter()
        repl.run_lines([sql + ";"], "<bench>", directory)
        elapsed = time.perf_counter() - started
    assert repl.exit_code == 0, "the query failed"
    return elapsed, repl.last.outcome.rows


def duckdb_copy(directory: str, sql: str, fmt: str) -> float:
    con = duckdb.connect()
    con.execute("SET threads = 1")  # sqlstream runs one query on one core
    query = sql.replace("FROM src", f"FROM read_parquet('{os.path.join(directory, 'data.parquet')}')")
    started = time.perf_counter()
    con.execute(f"COPY ({query}) TO '/dev/null' (FORMAT {fmt})")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--quick", action="store_true", help="200k rows")
    args = parser.parse_args()
    rows = 200_000 if args.quick else args.rows
    with tempfile.TemporaryDirectory() as directory:
        make_data(os.path.join(directory, "data.parquet"), rows)
        engine_only(directory, APPEND)  # warm up: imports, DataFusion, DuckDB's JSON encoder
        through_repl(directory, UPDATING, "json")
        print(f"{rows:,} input rows, {KEYS:,} keys; REPL output to /dev/null; DuckDB single-threaded\n")
        print(f"{'query':<10} {'output':<7} {'rows out':>10} {'sqlstream':>11} {'rows/s':>12} "
              f"{'x engine':>9} {'duckdb':>8} {'x duckdb':>9}")
        for label, sql in (("append", APPEND), ("updating", UPDATING)):
            base, produced = engine_only(directory, sql)
            print(f"{label:<10} {'none':<7} {produced:>10,} {base:>10.2f}s {rows / base:>12,.0f} {1.0:>9.2f}")
            for fmt in ("json", "csv", "table"):
                elapsed, shown = through_repl(directory, sql, fmt)
                line = (f"{label:<10} {fmt:<7} {shown:>10,} {elapsed:>10.2f}s {rows / elapsed:>12,.0f} "
                        f"{elapsed / base:>9.2f}")
                if fmt in ("json", "csv"):
                    reference = duckdb_copy(directory, sql, fmt)
                    line += f" {reference:>7.2f}s {elapsed / reference:>9.1f}"
                print(line)


if __name__ == "__main__":
    main()
