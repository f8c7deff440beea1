"""Top-N, deduplication and OVER throughput (Nexmark q18 and q19, an OVER aggregation): sqlstream (streaming,
micro-batches, an updating result) vs DuckDB (batch, the final rows) on the same bids.

``--events`` bids (default 2M) over 10,000 auctions and 50,000 bidders at 10,000
bids/s of event time, 5% out of order by up to 2 s (the watermark delay: none is late).

* **q18**: the last bid of each (bidder, auction) — keep-last deduplication;
* **q19**: the ten highest bids of each auction — Top-N;
* **over**: each bid with the average price of its auction's bids in the 10 s before it
  and the previous bid's price — an OVER aggregation (RANGE frame and LAG).

sqlstream runs the real planner and operators on a ``connector = 'memory'`` source in
micro-batches of ``--batch-size`` rows into a sink that counts the changelog rows and
drops them (``benchmarks/joins.py``'s ``discard``); DuckDB runs ``ROW_NUMBER() ...
WHERE rn <= N`` over the same Arrow table (2 threads). Each time is the best of
``--repeat`` runs (default 3).

    python benchmarks/ranking.py
    python benchmarks/ranking.py --events 500000
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import pyarrow as pa
from joins import best_of, duckdb_run, sqlstream_run

BASE_US = 1_690_000_000_000_000  # before the manual clock: max_future never fires
DDL = """CREATE SOURCE bid (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP,
  WATERMARK FOR date_time AS date_time - INTERVAL '2' SECOND) WITH (connector = 'memory')"""
QUERIES = {
    "q18 keep last": (
        "SELECT auction, bidder, price, date_time FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction "
        "ORDER BY date_time DESC) AS rn FROM bid) WHERE rn <= 1",
        "SELECT auction, bidder, price, date_time FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction "
        "ORDER BY date_time DESC) AS rn FROM bid) WHERE rn <= 1",
    ),
    "q19 top 10": (
        "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rn FROM bid) WHERE rn <= 10",
        "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rn FROM bid) WHERE rn <= 10",
    ),
    "over 10s avg": (
        "SELECT auction, price, avg(price) OVER (PARTITION BY auction ORDER BY date_time "
        "RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) AS a, lag(price) OVER (PARTITION BY auction "
        "ORDER BY date_time) AS p FROM bid",
        "SELECT auction, price, avg(price) OVER (PARTITION BY auction ORDER BY date_time "
        "RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) AS a, lag(price) OVER (PARTITION BY auction "
        "ORDER BY date_time) AS p FROM bid",
    ),
}


def make_bids(events: int, seed: int = 3) -> pa.Table:
    rng = np.random.default_rng(seed)
    times = BASE_US + np.arange(events, dtype=np.int64) * 100
    late = rng.random(events) < 0.05
    times = times - np.where(late, rng.integers(0, 2_000_000, events), 0)
    return pa.table({
        "auction": rng.integers(0, 10_000, events),
        "bidder": rng.integers(0, 50_000, events),
        "price": rng.integers(1, 1_000_000, events),
        "date_time": pa.array(times, pa.timestamp("us")),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000, help="bids (default 2M)")
    parser.add_argument("--batch-size", type=int, default=100_000, help="micro-batch rows (default 100k)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement, the fastest counts (default 3)")
    args = parser.parse_args()
    bids = make_bids(args.events)
    workdir = tempfile.mkdtemp(prefix="sqlstream-ranking-bench-")
    print(f"{args.events:,} bids; micro-batches of {args.batch_size:,} rows; DuckDB with 2 threads; best of {args.repeat}")
    for name, (ours, theirs) in QUERIES.items():
        duck = best_of(args.repeat, lambda q=theirs: duckdb_run({"bid": bids}, q))
        mine = best_of(args.repeat, lambda q=ours: sqlstream_run(DDL, {"bid": bids}, q, args.batch_size, workdir))
        print(f"{name:14s} sqlstream {mine[0]:6.2f}s ({args.events / mine[0] / 1e6:5.2f} M events/s, {mine[1]:,} changelog rows)"
              f"   duckdb {duck[0]:6.2f}s ({args.events / duck[0] / 1e6:5.2f} M events/s, {duck[1]:,} rows)"
              f"   ratio {mine[0] / duck[0]:5.2f}x")


if __name__ == "__main__":
    main()
