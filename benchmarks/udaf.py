"""Python aggregates (``@udaf``) in windows: throughput against built-in aggregates.

``--rows`` events (default 1M) from ``--keys`` sensors (default 100) over 10,000 s of
event time, 5% out of order within the 2 s watermark delay, streamed in micro-batches
of ``--batch-size`` rows (default 65,536) through the real planner and operators into
a one-minute TUMBLE per sensor (~60 rows per group at the defaults). In the same run:

* ``avg(v)`` — built-in, the baseline;
* ``median(v)`` — ``@udaf`` simple form: values collected as Arrow lists, numpy's
  median once per group when its window closes;
* ``sum_sq(v)`` — ``@udaf`` class form: ``accumulate`` once per (group, batch);
* DuckDB's ``median(v)`` over the same Arrow table in batch (for scale, and the check:
  every sqlstream median equals DuckDB's).

    python benchmarks/udaf.py            # 1M events
    python benchmarks/udaf.py --quick    # 200k events
"""

from __future__ import annotations

import argparse
import time

import duckdb
import numpy as np
import pyarrow as pa

from sqlstream import udaf
from sqlstream.testing import TestSession

BASE_US = 1_690_000_000_000_000
SPAN_S = 10_000


@udaf(args=[pa.float64()], returns=pa.float64())
def median(values: pa.Array) -> float:
    return float(np.median(values.to_numpy()))


@udaf(args=[pa.float64()], returns=pa.float64())
class sum_sq:
    def create(self):
        return 0.0

    def accumulate(self, state, values: pa.Array):
        v = values.to_numpy(zero_copy_only=False)
        return state + float(np.dot(v, v))

    def merge(self, state, other):
        return state + other

    def finish(self, state):
        return state


def events(rows: int, keys: int) -> pa.Table:
    rng = np.random.default_rng(1)
    times = BASE_US + np.sort(rng.integers(0, SPAN_S * 1_000_000, rows))
    times -= np.where(rng.random(rows) < 0.05, rng.integers(0, 2_000_000, rows), 0)
    return pa.table({"sensor_id": rng.integers(0, keys, rows), "ts": pa.array(times, pa.timestamp("us")),
                     "v": rng.normal(20, 5, rows)})


def run(data: pa.Table, call: str, batch_size: int) -> tuple[float, list[dict]]:
    session = TestSession()
    session.register_udf(median)
    session.register_udf(sum_sq)
    session.execute("""CREATE SOURCE src (sensor_id BIGINT, ts TIMESTAMP, v DOUBLE,
                       WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) WITH (connector = 'memory')""")
    session.stream("src").push(data, batch_size=batch_size).finish()
    start = time.perf_counter()
    rows = session.run_query(f"""SELECT window_start, sensor_id, {call} AS r FROM TUMBLE(src, ts, INTERVAL '1' MINUTE)
                                 GROUP BY window_start, window_end, sensor_id""")
    return time.perf_counter() - start, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=65_536)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = 200_000 if args.quick else args.rows
    data = events(rows, args.keys)
    con = duckdb.connect()
    con.execute("SET threads = 1")
    con.register("data", data)
    duck_sql = """SELECT time_bucket(INTERVAL '1 minute', ts) AS window_start, sensor_id, median(v) AS r
                  FROM data GROUP BY ALL"""
    best_duck = min(_timed(lambda: con.sql(duck_sql).to_arrow_table()) for _ in range(args.repeat))
    expected = {(r["window_start"], r["sensor_id"]): r["r"] for r in con.sql(duck_sql).to_arrow_table().to_pylist()}
    print(f"{rows:,} events, {args.keys} sensors, {len(expected):,} groups (~{rows / len(expected):.0f} rows each), "
          f"batches of {args.batch_size:,}")
    baseline = None
    for call in ("avg(v)", "median(v)", "sum_sq(v)"):
        best, result = min((run(data, call, args.batch_size) for _ in range(args.repeat)), key=lambda t: t[0])
        assert len(result) == len(expected), (call, len(result), len(expected))
        if call == "median(v)":
            assert all(np.isclose(r["r"], expected[r["window_start"], r["sensor_id"]]) for r in result)
        baseline = baseline or best
        print(f"{call:>10}: {rows / best / 1e6:6.2f}M rows/s  ({best:.3f} s, {best / baseline:.2f}x the avg(v) time, "
              f"{best / len(expected) * 1e6:.1f} µs per group)")
    print(f"DuckDB median (batch, 1 thread): {rows / best_duck / 1e6:.2f}M rows/s ({best_duck:.3f} s)")


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
