"""Stateless throughput: sqlstream (file source → DataFusion per micro-batch) vs DuckDB.

Writes a Parquet file of ``--rows`` rows (default 10M; ``a`` BIGINT, ``b`` DOUBLE
uniform in [0, 100), ``c`` VARCHAR), then times the same query both ways::

    SELECT a, b * 2 AS b2, c FROM src WHERE b > 50

* sqlstream: ``CREATE SOURCE src ... WITH (connector = 'file', format = 'parquet')``
  with default settings, planned by the real planner and driven by the real runtime
  into a sink whose writer only counts rows (``connector = 'count'``, defined here).
* DuckDB: the same SQL over ``read_parquet(...)``, results fetched as Arrow batches
  and counted (so the projection is materialized, as sqlstream's is).

    python benchmarks/stateless.py               # 10M rows
    python benchmarks/stateless.py --quick       # 1M rows
    python benchmarks/stateless.py --rows 3000000 --repeat 3 --set file_batch_size=65536
    python benchmarks/stateless.py --whole-process --repeat 3
    python benchmarks/stateless.py --whole-process --rows 5000000 --base-tree /tmp/perf-base

``--whole-process`` measures as a user runs it (see ``whole_process.py``): ``sqlstream
run`` into a Parquet file sink against a DuckDB process ``COPY``-ing the same result to
Parquet, start-up (the same commands on a 10-row file) subtracted from both.

Prints rows/s for both, the ratio sqlstream / DuckDB (best of ``--repeat`` runs
each, alternating), and checks that both produced the same number of rows.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sqlstream.connectors import SinkConnector, SinkWriter, register_sink
from sqlstream.session import Session

try:
    from benchmarks.whole_process import compare, report, write_tiny
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from whole_process import compare, report, write_tiny

THRESHOLD = 50
QUERY = f"SELECT a, b * 2 AS b2, c FROM src WHERE b > {THRESHOLD}"


def write_input(path: str, rows: int, seed: int = 7) -> None:
    """``rows`` rows in chunks of 1M (Parquet's default row group size)."""
    rng = np.random.default_rng(seed)
    words = pa.array([f"item-{i:04d}" for i in range(1000)])
    chunk = 1 << 20
    with pq.ParquetWriter(path, pa.schema([("a", pa.int64()), ("b", pa.float64()), ("c", pa.string())])) as writer:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            writer.write_table(
                pa.table(
                    {
                        "a": np.arange(start, start + n, dtype=np.int64),
                        "b": rng.uniform(0, 100, n),
                        "c": words.take(pa.array(rng.integers(0, len(words), n))),
                    }
                )
            )


class CountingWriter(SinkWriter):
    def __init__(self, counts: list[int]) -> None:
        self.counts = counts

    def write(self, batch: pa.RecordBatch) -> None:
        self.counts[0] += batch.num_rows


@register_sink
class CountingSink(SinkConnector):
    """``connector = 'count'``: a null sink that only counts the rows it is given."""

    name = "count"
    rows = [0]

    def open(self, schema: pa.Schema, ctx) -> SinkWriter:
        return CountingWriter(self.rows)


def run_sqlstream(path: str, settings: dict[str, str]) -> tuple[float, int]:
    """Parse, plan, build and run the pipeline; the time includes all of it."""
    CountingSink.rows[0] = 0
    start = time.perf_counter()
    session = Session(dead_letter_path="off", settings=settings)
    session.execute(
        f"""CREATE SOURCE src (a BIGINT, b DOUBLE, c VARCHAR)
              WITH (connector = 'file', path = '{path}', format = 'parquet');
            CREATE SINK bench AS {QUERY} WITH (connector = 'count');"""
    )
    session.run()
    return time.perf_counter() - start, CountingSink.rows[0]


def run_duckdb(path: str) -> tuple[float, int]:
    con = duckdb.connect()
    start = time.perf_counter()
    reader = con.sql(QUERY.replace("FROM src", f"FROM read_parquet('{path}')")).to_arrow_reader(1 << 20)
    rows = sum(batch.num_rows for batch in reader)
    return time.perf_counter() - start, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--quick", action="store_true", help="1M rows")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each, alternating; the best counts")
    parser.add_argument("--set", action="append", default=[], metavar="K=V", help="sqlstream setting")
    parser.add_argument("--keep", metavar="PATH", help="write (or reuse) the Parquet input here")
    parser.add_argument("--whole-process", action="store_true",
                        help="time whole processes, Parquet in and out, start-up subtracted")
    parser.add_argument("--base-tree", metavar="DIR",
                        help="--whole-process: also time sqlstream from this checkout (e.g. main), same run")
    args = parser.parse_args()
    rows = 1_000_000 if args.quick else args.rows
    settings = dict(item.split("=", 1) for item in args.set)

    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or os.path.join(tmp, "input.parquet")
        if not (args.keep and os.path.exists(path) and pq.ParquetFile(path).metadata.num_rows == rows):
            t = time.perf_counter()
            write_input(path, rows)
            print(f"wrote {rows:,} rows to {path} in {time.perf_counter() - t:.1f}s")
        print(f"query: {QUERY}")
        if args.whole_process:
            tiny = Path(tmp) / "tiny.parquet"
            write_tiny(Path(path), tiny)
            source_sql = "CREATE SOURCE src (a BIGINT, b DOUBLE, c VARCHAR) WITH (connector = 'file', path = '{path}', format = 'parquet')"
            measured = compare(Path(tmp), source_sql, QUERY, QUERY.replace("FROM src", "FROM data"), Path(path), tiny,
                               args.repeat, args.base_tree)
            print(report("stateless", rows, measured))
            return
        threads = duckdb.connect().execute("SELECT current_setting('threads')").fetchone()[0]
        print(f"sqlstream settings: {settings or 'defaults'}; DuckDB threads: {threads}")
        runs = {"duckdb": lambda: run_duckdb(path), "sqlstream": lambda: run_sqlstream(path, settings)}
        times: dict[str, list[float]] = {name: [] for name in runs}
        rows_out: dict[str, int] = {}
        for _ in range(args.repeat):  # alternate, so that a busy moment hurts both alike
            for name, run in runs.items():
                elapsed, rows_out[name] = run()
                times[name].append(elapsed)
        results = {name: (min(t), rows_out[name]) for name, t in times.items()}
        for name, (best, out_rows) in results.items():
            print(f"{name:>10}: {out_rows:,} rows out, best {best:.3f}s, {rows / best / 1e6:,.1f}M rows/s in")
        if results["duckdb"][1] != results["sqlstream"][1]:
            raise SystemExit(f"row counts differ: {results}")
        ratio = results["duckdb"][0] / results["sqlstream"][0]
        print(f"ratio sqlstream/duckdb throughput: {ratio:.2f}x")


if __name__ == "__main__":
    main()
