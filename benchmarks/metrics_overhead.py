"""What serving metrics costs: whole ``sqlstream run`` processes with and without
``--http``, while a thread scrapes ``/metrics`` (and ``/api/pipeline``) every second.

Two workloads over a generated Parquet file, read in micro-batches of
``--batch`` rows (default 65,536, so that per-batch costs show):

* stateless: ``SELECT a, b * 2 AS b2, c FROM src WHERE b > 50`` into a Parquet file
* windowed: ``TUMBLE(src, ts, INTERVAL '1' MINUTE)`` count / avg per key into JSON lines

    python benchmarks/metrics_overhead.py            # 5M rows, best of 3 alternating runs
    python benchmarks/metrics_overhead.py --quick    # 1M rows

Prints, per workload, the best run-loop time (the summary's ``elapsed``: what the
pipeline took, start-up excluded) and the best whole-process time of each variant, and
the throughput ratios with / without (1.00 = no cost; the target is >= 0.97).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SQLSTREAM = str(Path(sys.executable).with_name("sqlstream"))

WORKLOADS = {
    "stateless": """
        CREATE SOURCE src (a BIGINT, b DOUBLE, c VARCHAR, ts TIMESTAMP) WITH (connector = 'file', path = 'data.parquet',
                                                                          format = 'parquet');
        CREATE SINK out AS SELECT a, b * 2 AS b2, c FROM src WHERE b > 50
            WITH (connector = 'file', path = 'out.parquet', format = 'parquet');
    """,
    "windowed": """
        CREATE SOURCE src (a BIGINT, b DOUBLE, c VARCHAR, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
            WITH (connector = 'file', path = 'data.parquet', format = 'parquet');
        CREATE SINK out AS SELECT window_end, c, count(*) AS n, avg(b) AS avg_b
            FROM TUMBLE(src, ts, INTERVAL '1' MINUTE) GROUP BY window_end, c
            WITH (connector = 'file', path = 'out.jsonl', format = 'json');
    """,
}


def make_data(folder: Path, rows: int) -> None:
    rng = np.random.default_rng(7)
    start = np.datetime64("2024-01-01T00:00:00", "us")
    table = pa.table({
        "a": np.arange(rows, dtype=np.int64),
        "b": rng.uniform(0, 100, rows),
        "c": pa.array(rng.integers(0, 50, rows).astype(str)),
        "ts": pa.array(start + np.arange(rows, dtype=np.int64) * 10_000, pa.timestamp("us")),  # 100 rows per second
    })
    pq.write_table(table, folder / "data.parquet", row_group_size=1 << 20)


def run_once(folder: Path, sql: str, batch: int, http: bool) -> tuple[float, float, int]:
    """Wall seconds of one ``sqlstream run`` process, seconds of its run loop (the
    summary's ``elapsed``: start-up excluded) and how many scrapes answered."""
    (folder / "p.sql").write_text(sql)
    args = [SQLSTREAM, "run", "p.sql", "--no-udfs", "--set", f"file_batch_size={batch}"]
    if http:
        args += ["--http", "127.0.0.1:0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    process = subprocess.Popen(args, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    scrapes = [0]
    done = threading.Event()

    def scrape(url: str) -> None:
        while not done.wait(1.0):
            for path in ("metrics", "api/pipeline"):
                try:
                    with urllib.request.urlopen(url + path, timeout=2) as response:
                        response.read()
                    scrapes[0] += 1
                except OSError:
                    return

    loop_s = float("nan")
    for line in process.stderr:
        match = re.search(r"console on (http://\S+/)", line)
        if match:
            threading.Thread(target=scrape, args=(match.group(1),), daemon=True).start()
        summary = re.search(r"\| elapsed (\d+\.\d+)s$", line.rstrip())
        if summary:
            loop_s = float(summary.group(1))
    process.wait()
    elapsed = time.perf_counter() - started
    done.set()
    if process.returncode != 0:
        raise SystemExit(f"sqlstream run failed with exit code {process.returncode}")
    return elapsed, loop_s, scrapes[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--quick", action="store_true", help="1M rows")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=65_536, help="file_batch_size (rows per micro-batch)")
    args = parser.parse_args()
    rows = 1_000_000 if args.quick else args.rows
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_data(folder, rows)
        print(f"{rows:,} rows, micro-batches of {args.batch:,}, best of {args.repeat} alternating runs; "
              f"/metrics and /api/pipeline scraped every second")
        for name, sql in WORKLOADS.items():
            wall = {False: float("inf"), True: float("inf")}
            loop = {False: float("inf"), True: float("inf")}
            scraped = 0
            for _ in range(args.repeat):
                for http in (False, True):
                    elapsed, loop_s, scrapes = run_once(folder, sql, args.batch, http)
                    wall[http] = min(wall[http], elapsed)
                    loop[http] = min(loop[http], loop_s)
                    scraped += scrapes
            print(f"{name:>10}: run loop without --http {loop[False]:.2f}s ({rows / loop[False] / 1e6:.2f}M rows/s), "
                  f"with {loop[True]:.2f}s ({rows / loop[True] / 1e6:.2f}M rows/s): throughput ratio "
                  f"{loop[False] / loop[True]:.3f}; whole process {wall[False]:.2f}s vs {wall[True]:.2f}s: "
                  f"{wall[False] / wall[True]:.3f} ({scraped} scrapes answered)")


if __name__ == "__main__":
    main()
