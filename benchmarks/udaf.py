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

With ``--over``, the same calls per row over a sliding frame instead, ``OVER (PARTITION
BY sensor_id ORDER BY ts ROWS BETWEEN 9 PRECEDING AND CURRENT ROW)`` (default 200k
events): built-in ``avg(v)``; ``median(v)``, one Python call per row; ``frame_median(v)``,
``@udaf(frames=True)``, one call per watermark step with every frame as a list array;
``sum_sq(v)``, the class form, once per row; every median checked against DuckDB's.

    python benchmarks/udaf.py            # 1M events
    python benchmarks/udaf.py --quick    # 200k events
    python benchmarks/udaf.py --over     # OVER frames, 200k events (--quick: 50k)
"""

from __future__ import annotations

import argparse
import time

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream import udaf
from sqlstream.testing import TestSession

BASE_US = 1_690_000_000_000_000
SPAN_S = 10_000


@udaf(args=[pa.float64()], returns=pa.float64())
def median(values: pa.Array) -> float:
    return float(np.median(values.to_numpy()))


@udaf(args=[pa.float64()], returns=pa.float64(), frames=True)
def frame_median(frames: pa.ListArray) -> np.ndarray:
    """The median of every frame in one go: sorted within frames, the middle one(s) picked."""
    values = pc.list_flatten(frames).to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(frames).to_numpy(zero_copy_only=False)
    ordered = values[np.lexsort((values, np.repeat(np.arange(len(lengths)), lengths)))]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return (ordered[starts + (lengths - 1) // 2] + ordered[starts + lengths // 2]) / 2


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


OVER = "OVER (PARTITION BY sensor_id ORDER BY ts ROWS BETWEEN 9 PRECEDING AND CURRENT ROW)"


def run(data: pa.Table, call: str, batch_size: int, over: bool = False) -> tuple[float, list[dict]]:
    session = TestSession()
    for fn in (median, frame_median, sum_sq):
        session.register_udf(fn)
    session.execute("""CREATE SOURCE src (sensor_id BIGINT, ts TIMESTAMP, v DOUBLE,
                       WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) WITH (connector = 'memory')""")
    session.stream("src").push(data, batch_size=batch_size).finish()
    start = time.perf_counter()
    if over:
        rows = session.run_query(f"SELECT ts, sensor_id, {call} {OVER} AS r FROM src")
        return time.perf_counter() - start, rows
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
    parser.add_argument("--over", action="store_true", help="per row over a sliding ROWS frame instead of TUMBLE")
    args = parser.parse_args()
    if args.over:
        return main_over(args)
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


def main_over(args) -> None:
    rows = 50_000 if args.quick else min(args.rows, 200_000)
    data = events(rows, args.keys)
    con = duckdb.connect()
    con.execute("SET threads = 1")
    con.register("data", data)
    duck_sql = f"SELECT ts, sensor_id, median(v) {OVER.replace('ORDER BY ts', 'ORDER BY ts, idx')} AS r FROM data"
    con.register("data", data.append_column("idx", pa.array(np.arange(rows))))
    best_duck = min(_timed(lambda: con.sql(duck_sql).to_arrow_table()) for _ in range(args.repeat))
    expected = {(r["ts"], r["sensor_id"]): r["r"] for r in con.sql(duck_sql).to_arrow_table().to_pylist()}
    print(f"{rows:,} events, {args.keys} sensors, ROWS BETWEEN 9 PRECEDING AND CURRENT ROW, batches of {args.batch_size:,}")
    baseline = None
    for call in ("avg(v)", "median(v)", "frame_median(v)", "sum_sq(v)"):
        best, result = min((run(data, call, args.batch_size, over=True) for _ in range(args.repeat)), key=lambda t: t[0])
        assert len(result) == rows, (call, len(result), rows)
        if "median" in call:
            assert all(np.isclose(r["r"], expected[r["ts"], r["sensor_id"]]) for r in result)
        baseline = baseline or best
        print(f"{call:>15}: {rows / best / 1e6:6.3f}M rows/s  ({best:.3f} s, {best / baseline:.2f}x the avg(v) time, "
              f"{best / rows * 1e6:.2f} µs per row)")
    print(f"DuckDB median OVER (batch, 1 thread): {rows / best_duck / 1e6:.2f}M rows/s ({best_duck:.3f} s)")


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
