"""Windowed aggregation throughput: sqlstream (streaming, micro-batches) vs DuckDB (batch).

The data set is built once as an in-memory Arrow table: ``--rows`` events (default
10M), ``sensor_id`` among 1,000 keys, event time spread over 10,000 s, 5% of the
events out of order by up to 2 s (the watermark delay, so none is late). sqlstream
streams it through the real planner and operators in micro-batches of
``--batch-size`` rows (default 100k, a ``connector = 'memory'`` source and sink on a
manual clock); DuckDB computes the same query over the same Arrow table in one go.

    python benchmarks/windowed_agg.py            # 10M events
    python benchmarks/windowed_agg.py --quick    # 1M events
    python benchmarks/windowed_agg.py --whole-process --rows 5000000
    python benchmarks/windowed_agg.py --whole-process --rows 5000000 --repeat 3 --base-tree /tmp/perf-base

``--whole-process`` measures as a user runs it instead (see ``whole_process.py``): the
events in a Parquet file, ``sqlstream run`` of a file source into a Parquet file sink
against a DuckDB process reading the same file and ``COPY``-ing the same result to
Parquet, start-up (the same commands on a 10-row file) subtracted from both.

Prints both times and the ratio for TUMBLE (the headline query), HOP (size 10 s,
slide 1 s) and SESSION (gap 1 s per sensor); every result is checked against
DuckDB's row count before its time is reported.
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

from sqlstream.testing import TestSession

try:
    from benchmarks.whole_process import compare, report, write_tiny
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from whole_process import compare, report, write_tiny

BASE_US = 1_690_000_000_000_000  # historic: before the manual clock, so max_future never fires
SPAN_S = 10_000
KEYS = 1_000
DELAY_S = 2
DUCKDB_THREADS = min(os.cpu_count() or 1, 2)  # sqlstream runs one thread; DuckDB gets the machine (2 cores in CI)

SOURCE_SQL = f"""CREATE SOURCE src (sensor_id BIGINT, ts TIMESTAMP, v DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '{DELAY_S}' SECOND) WITH (connector = 'memory')"""

QUERIES = {
    "tumble": (
        "SELECT window_start, sensor_id, count(*) AS n, avg(v) AS avg_v, max(v) AS max_v "
        "FROM TUMBLE(src, ts, INTERVAL '1' SECOND) GROUP BY window_start, window_end, sensor_id",
        """SELECT ws AS window_start, sensor_id, count(*) AS n, avg(v) AS avg_v, max(v) AS max_v
           FROM (SELECT *, epoch_us(ts) - ((epoch_us(ts) % 1000000) + 1000000) % 1000000 AS ws FROM data)
           GROUP BY ws, sensor_id""",
    ),
    "hop": (
        "SELECT window_start, sensor_id, count(*) AS n, avg(v) AS avg_v, max(v) AS max_v "
        "FROM HOP(src, ts, INTERVAL '1' SECOND, INTERVAL '10' SECOND) GROUP BY window_start, window_end, sensor_id",
        """SELECT ws AS window_start, sensor_id, count(*) AS n, avg(v) AS avg_v, max(v) AS max_v
           FROM (SELECT *, unnest(range(s - 9000000, s + 1, 1000000)) AS ws
                 FROM (SELECT *, epoch_us(ts) - ((epoch_us(ts) % 1000000) + 1000000) % 1000000 AS s FROM data))
           GROUP BY ws, sensor_id""",
    ),
    "session": (
        "SELECT window_start, window_end, sensor_id, count(*) AS n, avg(v) AS avg_v, max(v) AS max_v "
        "FROM SESSION(src, ts, INTERVAL '1' SECOND) GROUP BY window_start, window_end, sensor_id",
        """WITH o AS (SELECT sensor_id, ts, v, CASE WHEN epoch_us(ts) - lag(epoch_us(ts)) OVER w < 1000000
                                                   THEN 0 ELSE 1 END AS new_session
                      FROM data WINDOW w AS (PARTITION BY sensor_id ORDER BY ts)),
                s AS (SELECT *, sum(new_session) OVER (PARTITION BY sensor_id ORDER BY ts
                                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS sid FROM o)
           SELECT min(ts) AS window_start, max(ts) + INTERVAL 1 SECOND AS window_end, sensor_id,
                  count(*) AS n, avg(v) AS avg_v, max(v) AS max_v
           FROM s GROUP BY sensor_id, sid""",
    ),
}


def make_events(rows: int, seed: int = 42) -> pa.Table:
    """Events in arrival order: times increase, 5% are displaced up to 2 s back."""
    rng = np.random.default_rng(seed)
    times = BASE_US + np.sort(rng.integers(0, SPAN_S * 1_000_000, rows))
    late = rng.random(rows) < 0.05
    times = times - np.where(late, rng.integers(0, DELAY_S * 1_000_000, rows), 0)
    return pa.table(
        {
            "sensor_id": rng.integers(0, KEYS, rows),
            "ts": pa.array(times, pa.timestamp("us")),
            "v": rng.normal(20.0, 5.0, rows),
        }
    )


def run_sqlstream(events: pa.Table, query: str, batch_size: int) -> tuple[float, int, dict]:
    session = TestSession(settings={"batch_size": batch_size})
    session.execute(SOURCE_SQL)
    session.execute(f"CREATE SINK out AS {query} WITH (connector = 'memory')")
    session.stream("src").push(events, batch_size=batch_size).finish()
    started = time.perf_counter()
    summary = session.run()
    elapsed = time.perf_counter() - started
    rows = sum(b.num_rows for b in session.outputs.get("out", []))
    return elapsed, rows, summary.dead_letters


def run_duckdb(events: pa.Table, query: str) -> tuple[float, int]:
    con = duckdb.connect()
    con.execute(f"SET threads TO {DUCKDB_THREADS}")
    con.register("data", events)
    started = time.perf_counter()
    result = con.sql(query).to_arrow_table()
    elapsed = time.perf_counter() - started
    return elapsed, result.num_rows


FILE_SOURCE_SQL = SOURCE_SQL.replace("connector = 'memory'", "connector = 'file', path = '{path}', format = 'parquet'")


def whole_process(events: pa.Table, kinds: list[str], repeat: int, base_tree: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="sqlstream-windows-") as folder:
        work = Path(folder)
        source, tiny = work / "events.parquet", work / "tiny.parquet"
        pq.write_table(events, source, row_group_size=1 << 20)
        write_tiny(source, tiny)
        for kind in kinds:
            ours, theirs = QUERIES[kind]
            measured = compare(work, FILE_SOURCE_SQL, ours, theirs, source, tiny, repeat, base_tree)
            print(report(kind, events.num_rows, measured), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="events (default 10M)")
    parser.add_argument("--quick", action="store_true", help="1M events")
    parser.add_argument("--batch-size", type=int, default=100_000, help="micro-batch rows (default 100k)")
    parser.add_argument("--only", choices=sorted(QUERIES), action="append", help="run only these window kinds")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement; the best time is reported")
    parser.add_argument("--whole-process", action="store_true",
                        help="time whole processes, Parquet in and out, start-up subtracted")
    parser.add_argument("--base-tree", metavar="DIR",
                        help="--whole-process: also time sqlstream from this checkout (e.g. main), same run")
    args = parser.parse_args()
    rows = 1_000_000 if args.quick else args.rows
    started = time.perf_counter()
    events = make_events(rows)
    print(f"data: {rows:,} events, {KEYS:,} sensors over {SPAN_S:,} s, 5% out of order within {DELAY_S} s "
          f"(built in {time.perf_counter() - started:.1f}s); micro-batches of {args.batch_size:,} rows; "
          f"DuckDB with {DUCKDB_THREADS} threads; best of {args.repeat}")
    if args.whole_process:
        whole_process(events, args.only or list(QUERIES), args.repeat, args.base_tree)
        return
    for kind in args.only or list(QUERIES):
        ours, theirs = QUERIES[kind]
        duck_s, duck_rows = min(run_duckdb(events, theirs) for _ in range(args.repeat))
        our_s, our_rows, dead = min(run_sqlstream(events, ours, args.batch_size) for _ in range(args.repeat))
        status = "ok" if our_rows == duck_rows and not dead else f"MISMATCH (duckdb {duck_rows:,} rows, dead letters {dead})"
        print(
            f"{kind:8s} sqlstream {our_s:7.2f}s ({rows / our_s / 1e6:5.2f} M events/s)   "
            f"duckdb {duck_s:6.2f}s ({rows / duck_s / 1e6:5.2f} M events/s)   "
            f"ratio {our_s / duck_s:5.2f}x   {our_rows:,} result rows {status}"
        )


if __name__ == "__main__":
    main()
