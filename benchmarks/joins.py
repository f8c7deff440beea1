"""Join throughput: sqlstream (streaming, micro-batches) vs DuckDB (batch) on the same data.

* **lookup**: ``--events`` transactions (default 10M) joined with a 100k-row
  ``CREATE TABLE merchants`` (a Parquet file, loaded and indexed once per run) on
  ``merchant_id = id``, once on a BIGINT key and once on a VARCHAR key.
* **window**: two streams of ``--events / 2`` events each (default 5M + 5M) joined per
  1 s TUMBLE window and key (``ON l.window_start = r.window_start AND l.window_end =
  r.window_end AND l.k = r.k``); 1,000 keys, 1,000 events/s per stream, 5% of the
  events out of order by up to 2 s (the watermark delay: none is late).
* **semi** (``--only semi``): ``IN``/``NOT IN`` over the lookup table (semi and anti
  lookup joins), ``EXISTS`` with a ±1 s time bound between the two streams (an interval
  semi join), ``IN (SELECT k FROM rhs WHERE ...)`` (a regular semi join), and
  ``CROSS JOIN UNNEST`` of a 4-element array per event.

sqlstream runs the real planner and operators on a ``connector = 'memory'`` source
(manual clock) in micro-batches of ``--batch-size`` rows (default 100k) into a sink that
counts rows and drops them; DuckDB runs the equivalent SQL over the same in-memory
Arrow tables (2 threads) and its Arrow result is read in batches of 100k rows and
dropped the same way. Every result is checked against DuckDB's row count; each time
is the best of ``--repeat`` runs (default 3).

    python benchmarks/joins.py                  # 10M events
    python benchmarks/joins.py --events 1000000 # a short run
    python benchmarks/joins.py --only lookup --key varchar --whole-process
    python benchmarks/joins.py --only window --whole-process

``--key bigint|varchar|varchar-long`` runs one of the lookup joins: ``varchar`` joins
on codes like ``'m-12345'`` (at most 7 bytes: exact codes), ``varchar-long`` on
``'merchant-12345'`` (10-15 bytes: hashed and verified). ``--whole-process`` measures
the lookup and window joins as a user runs them (see ``whole_process.py``): ``sqlstream
run`` from a Parquet file of the events (the window join: one per stream) into a Parquet
file sink, the TABLE from its Parquet file, against a DuckDB process ``COPY``-ing the
same join of the same files to Parquet; start-up (the same commands on 10-row events
files, the full table) subtracted.
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
from sqlstream.testing import TestSession

try:
    from benchmarks import whole_process
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import whole_process

BASE_US = 1_690_000_000_000_000  # historic: before the manual clock, so max_future never fires
DELAY_S = 2
TABLE_ROWS = 100_000
WINDOW_KEYS = 1_000


def make_transactions(events: int, table_rows: int, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    merchant = rng.integers(0, int(table_rows * 1.05), events)  # ~5% match no merchant
    times = BASE_US + np.arange(events, dtype=np.int64) * 100
    return pa.table({
        "merchant_id": merchant,
        "amount": rng.normal(50.0, 20.0, events).round(2),
        "ts": pa.array(times, pa.timestamp("us")),
    })


def with_codes(transactions: pa.Table, prefix: str = "m-") -> pa.Table:
    """The merchant id also as a string key (``'m-<id>'``: up to 7 bytes for 100k
    merchants), built with Arrow kernels."""
    codes = pa.compute.binary_join_element_wise(prefix, pa.compute.cast(transactions.column("merchant_id"), pa.string()), "")
    return transactions.append_column("merchant_code", codes)


def make_merchants(rows: int, seed: int = 8, prefix: str = "m-") -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = rng.permutation(rows).astype(np.int64)
    return pa.table({
        "id": ids,
        "code": pa.compute.binary_join_element_wise(prefix, pa.compute.cast(pa.array(ids), pa.string()), ""),
        "name": pa.compute.binary_join_element_wise("merchant ", pa.compute.cast(pa.array(ids), pa.string()), ""),
        "category": rng.integers(0, 50, rows),
    })


def make_stream(events: int, seed: int) -> pa.Table:
    """Arrival order: times increase at 1,000 events/s, 5% displaced up to 2 s back."""
    rng = np.random.default_rng(seed)
    times = BASE_US + np.sort(rng.integers(0, events * 1_000, events))
    displaced = rng.random(events) < 0.05
    times = times - np.where(displaced, rng.integers(0, DELAY_S * 1_000_000, events), 0)
    return pa.table({
        "k": rng.integers(0, WINDOW_KEYS, events),
        "v": rng.normal(0.0, 1.0, events).round(4),
        "ts": pa.array(times, pa.timestamp("us")),
    })


# --key: the benchmark and the prefix of its string codes ('m-': at most 7 bytes, coded
# exactly; 'merchant-': 10-15 bytes, hashed and verified)
LOOKUP_KEYS = {
    "bigint": ("lookup (BIGINT key)", "m-"),
    "varchar": ("lookup (VARCHAR key)", "m-"),
    "varchar-long": ("lookup (VARCHAR 10-15 B)", "merchant-"),
}
LOOKUP = {
    "lookup (BIGINT key)": (
        "SELECT t.merchant_id, t.amount, m.name, m.category FROM tx t JOIN merchants m ON t.merchant_id = m.id",
        "SELECT t.merchant_id, t.amount, m.name, m.category FROM tx t JOIN merchants m ON t.merchant_id = m.id",
    ),
    "lookup (VARCHAR key)": (
        "SELECT t.merchant_id, t.amount, m.name, m.category FROM tx t JOIN merchants m ON t.merchant_code = m.code",
        "SELECT t.merchant_id, t.amount, m.name, m.category FROM tx t JOIN merchants m ON t.merchant_code = m.code",
    ),
}
LOOKUP["lookup (VARCHAR 10-15 B)"] = LOOKUP["lookup (VARCHAR key)"]
SEMI_LOOKUP = {
    "IN (TABLE)": "SELECT t.merchant_id, t.amount FROM tx t WHERE t.merchant_id IN (SELECT id FROM merchants WHERE category < 25)",
    "NOT IN (TABLE)": "SELECT t.merchant_id, t.amount FROM tx t WHERE t.merchant_id NOT IN (SELECT id FROM merchants WHERE category < 25)",
}
SEMI_STREAMS = {
    "EXISTS (interval ±1s)": "SELECT l.k, l.v FROM lhs l WHERE EXISTS (SELECT 1 FROM rhs r WHERE r.k = l.k "
                             "AND r.ts BETWEEN l.ts - INTERVAL '1' SECOND AND l.ts + INTERVAL '1' SECOND)",
    "IN (regular)": "SELECT l.k, l.v FROM lhs l WHERE l.k IN (SELECT k FROM rhs WHERE v > 3.0)",
}
UNNEST = ("SELECT k, x FROM arrays CROSS JOIN UNNEST(xs) AS u(x)", "SELECT k, x FROM arrays CROSS JOIN UNNEST(xs) AS u(x)")

WINDOW = (
    """SELECT l.k, l.window_start, l.v AS lv, r.v AS rv
       FROM TUMBLE(lhs, ts, INTERVAL '1' SECOND) l JOIN TUMBLE(rhs, ts, INTERVAL '1' SECOND) r
       ON l.window_start = r.window_start AND l.window_end = r.window_end AND l.k = r.k""",
    """SELECT l.k, l.ws AS window_start, l.v AS lv, r.v AS rv
       FROM (SELECT *, epoch_us(ts) // 1000000 AS w, make_timestamp(epoch_us(ts) // 1000000 * 1000000) AS ws FROM lhs) l
       JOIN (SELECT *, epoch_us(ts) // 1000000 AS w FROM rhs) r ON l.w = r.w AND l.k = r.k""",
)


LOOKUP_SOURCE = """CREATE SOURCE tx (merchant_id BIGINT, amount DOUBLE, ts TIMESTAMP, merchant_code VARCHAR,
                     WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) WITH ({source});"""
LOOKUP_TABLE = """CREATE TABLE merchants (id BIGINT, code VARCHAR, name VARCHAR, category BIGINT)
                    WITH (connector = 'file', path = '{path}', format = 'parquet')"""


def lookup_processes(events: int, table_rows: int, lookups: list[tuple[str, str]], repeat: int, work: Path,
                     base_tree: str | None) -> None:
    """The lookup joins as whole processes: events and TABLE from Parquet files, the
    result written to Parquet (``whole_process.compare``)."""
    print(f"lookup, whole processes: {events:,} events x {table_rows:,}-row table, Parquet in and out; "
          f"best and median of {repeat}, sides alternated")
    for name, prefix in lookups:
        folder = work / prefix.strip("-")
        table, source, tiny = folder / "merchants.parquet", folder / "tx.parquet", folder / "tiny.parquet"
        if not folder.exists():
            folder.mkdir()
            pq.write_table(make_merchants(table_rows, prefix=prefix), table)
            pq.write_table(with_codes(make_transactions(events, table_rows), prefix), source, row_group_size=1 << 20)
            whole_process.write_tiny(source, tiny)
        # the events' file is {path}, the TABLE's a fixed file (read in full by both sides, also on the tiny input)
        source_sql = LOOKUP_SOURCE.format(source="connector = 'file', path = '{path}', format = 'parquet'") + "\n" \
            + LOOKUP_TABLE.format(path=table)
        ours, theirs = LOOKUP[name]
        theirs = theirs.replace("FROM tx t", "FROM data t").replace("JOIN merchants m", f"JOIN read_parquet('{table}') m")
        measured = whole_process.compare(folder, source_sql, ours, theirs, source, tiny, repeat, base_tree)
        print(whole_process.report(name, events, measured), flush=True)


WINDOW_SOURCES = "\n".join(
    f"""CREATE SOURCE {name} (k BIGINT, v DOUBLE, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '{DELAY_S}' SECOND)
        WITH (connector = 'file', path = '{{path}}/{name}.parquet', format = 'parquet');""" for name in ("lhs", "rhs"))


def window_processes(events: int, repeat: int, work: Path, base_tree: str | None) -> None:
    """The window join as whole processes: each stream from its Parquet file (a folder
    holds both, and a second folder their first 10 rows), the result written to Parquet."""
    half = events // 2
    print(f"window join, whole processes: 2 x {half:,} events, 1 s TUMBLE, {WINDOW_KEYS:,} keys, Parquet in and out; "
          f"best and median of {repeat}, sides alternated")
    source, tiny = work / "streams", work / "tiny"
    source.mkdir()
    tiny.mkdir()
    for seed, name in ((1, "lhs"), (2, "rhs")):
        pq.write_table(make_stream(half, seed), source / f"{name}.parquet", row_group_size=1 << 20)
        whole_process.write_tiny(source / f"{name}.parquet", tiny / f"{name}.parquet")
    measured = whole_process.compare(work, WINDOW_SOURCES.rstrip(";"), WINDOW[0], WINDOW[1], source, tiny, repeat, base_tree)
    print(whole_process.report("window join (TUMBLE 1s)", events, measured), flush=True)


def best_of(repeat: int, run) -> tuple[float, int]:
    """The fastest of ``repeat`` runs (this machine is shared: the minimum is the
    least disturbed measurement)."""
    results = [run() for _ in range(repeat)]
    return min(r[0] for r in results), results[0][1]


class _Discard(SinkWriter):
    def __init__(self, counter: list[int]):
        self.counter = counter

    def write(self, batch: pa.RecordBatch) -> None:
        self.counter[0] += batch.num_rows


@register_sink
class DiscardSink(SinkConnector):
    """``connector = 'discard'``: counts the rows it is given and keeps none (a sink
    that writes elsewhere frees each batch too)."""

    name = "discard"
    rows = [0]

    def open(self, schema, ctx):
        return _Discard(DiscardSink.rows)


def duckdb_run(tables: dict[str, pa.Table], sql: str) -> tuple[float, int]:
    """DuckDB's result read batch by batch and dropped, as the sqlstream sink does."""
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    for name, table in tables.items():
        con.register(name, table)
    started = time.perf_counter()
    rows = sum(batch.num_rows for batch in con.sql(sql).to_arrow_reader(100_000))
    return time.perf_counter() - started, rows


def sqlstream_run(ddl: str, streams: dict[str, pa.Table], sql: str, batch_size: int, base_dir: str) -> tuple[float, int]:
    session = TestSession(base_dir=base_dir)
    session.execute(ddl)
    session.execute(f"CREATE SINK out AS {sql} WITH (connector = 'discard')")
    for name, table in streams.items():
        session.stream(name).push(table, batch_size=batch_size).finish()
    DiscardSink.rows[0] = 0
    started = time.perf_counter()
    summary = session.run()
    elapsed = time.perf_counter() - started
    if summary.dead_letters:
        raise SystemExit(f"unexpected dead letters: {summary.dead_letters}")
    return elapsed, DiscardSink.rows[0]


def report(name: str, events: int, ours: tuple[float, int], theirs: tuple[float, int]) -> None:
    status = "ok" if ours[1] == theirs[1] else f"MISMATCH (duckdb {theirs[1]:,} rows)"
    print(
        f"{name:24s} sqlstream {ours[0]:6.2f}s ({events / ours[0] / 1e6:5.2f} M events/s)   "
        f"duckdb {theirs[0]:6.2f}s ({events / theirs[0] / 1e6:5.2f} M events/s)   "
        f"ratio {ours[0] / theirs[0]:5.2f}x   {ours[1]:,} rows {status}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="events in total per benchmark (default 10M)")
    parser.add_argument("--batch-size", type=int, default=100_000, help="micro-batch rows (default 100k)")
    parser.add_argument("--table-rows", type=int, default=TABLE_ROWS, help="rows of the lookup table (default 100k)")
    parser.add_argument("--only", choices=["lookup", "window", "semi"], action="append", help="run only these")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement, the fastest counts (default 3)")
    parser.add_argument("--key", choices=list(LOOKUP_KEYS), action="append",
                        help="lookup: only the join on this key (default all)")
    parser.add_argument("--whole-process", action="store_true",
                        help="lookup and window: time whole processes, Parquet in and out, start-up subtracted")
    parser.add_argument("--base-tree", metavar="DIR",
                        help="--whole-process: also time sqlstream from this checkout (e.g. main), same run")
    args = parser.parse_args()
    only = args.only or ["lookup", "window", "semi"]
    lookups = [LOOKUP_KEYS[k] for k in args.key or LOOKUP_KEYS]
    if args.whole_process:
        with tempfile.TemporaryDirectory(prefix="sqlstream-join-processes-") as folder:  # ~0.3 GB per key
            if "lookup" in only:
                lookup_processes(args.events, args.table_rows, lookups, args.repeat, Path(folder), args.base_tree)
            if "window" in only:
                window_processes(args.events, args.repeat, Path(folder), args.base_tree)
        return
    workdir = tempfile.mkdtemp(prefix="sqlstream-join-bench-")
    print(f"micro-batches of {args.batch_size:,} rows; DuckDB with 2 threads; best of {args.repeat} runs each")
    if "lookup" in only:
        ddl = LOOKUP_SOURCE.format(source="connector = 'memory'") + LOOKUP_TABLE.format(path="merchants.parquet")
        print(f"lookup: {args.events:,} events x {args.table_rows:,}-row table")
        for name, prefix in lookups:
            merchants = make_merchants(args.table_rows, prefix=prefix)
            pq.write_table(merchants, os.path.join(workdir, "merchants.parquet"))
            tx = with_codes(make_transactions(args.events, args.table_rows), prefix)
            ours, theirs = LOOKUP[name]
            tables = {"tx": tx, "merchants": merchants}
            duck = best_of(args.repeat, lambda q=theirs, t=tables: duckdb_run(t, q))
            mine = best_of(args.repeat, lambda q=ours, t=tables: sqlstream_run(ddl, {"tx": t["tx"]}, q, args.batch_size, workdir))
            report(name, args.events, mine, duck)
    if "window" in only:
        half = args.events // 2
        lhs, rhs = make_stream(half, 1), make_stream(half, 2)
        ddl = "\n".join(
            f"""CREATE SOURCE {name} (k BIGINT, v DOUBLE, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '{DELAY_S}' SECOND)
                WITH (connector = 'memory');""" for name in ("lhs", "rhs"))
        print(f"window join: 2 x {half:,} events, 1 s TUMBLE, {WINDOW_KEYS:,} keys")
        duck = best_of(args.repeat, lambda: duckdb_run({"lhs": lhs, "rhs": rhs}, WINDOW[1]))
        mine = best_of(args.repeat, lambda: sqlstream_run(ddl, {"lhs": lhs, "rhs": rhs}, WINDOW[0], args.batch_size, workdir))
        report("window join (TUMBLE 1s)", args.events, mine, duck)
    if "semi" in only:
        semi_benchmarks(args, workdir)


def semi_benchmarks(args, workdir: str) -> None:
    """Semi/anti joins (IN, NOT IN, EXISTS) and UNNEST."""
    merchants = make_merchants(args.table_rows)
    pq.write_table(merchants, os.path.join(workdir, "merchants.parquet"))
    tx = make_transactions(args.events, args.table_rows)
    ddl = """CREATE SOURCE tx (merchant_id BIGINT, amount DOUBLE, ts TIMESTAMP,
               WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) WITH (connector = 'memory');
             CREATE TABLE merchants (id BIGINT, code VARCHAR, name VARCHAR, category BIGINT)
               WITH (connector = 'file', path = 'merchants.parquet', format = 'parquet');"""
    print(f"semi/anti joins: {args.events:,} events x {args.table_rows:,}-row table; streams 2 x {args.events // 2:,}")
    for name, sql in SEMI_LOOKUP.items():
        duck = best_of(args.repeat, lambda q=sql: duckdb_run({"tx": tx, "merchants": merchants}, q))
        mine = best_of(args.repeat, lambda q=sql: sqlstream_run(ddl, {"tx": tx}, q, args.batch_size, workdir))
        report(name, args.events, mine, duck)
    half = args.events // 2
    lhs, rhs = make_stream(half, 1), make_stream(half, 2)
    ddl = "\n".join(
        f"""CREATE SOURCE {name} (k BIGINT, v DOUBLE, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '{DELAY_S}' SECOND)
            WITH (connector = 'memory');""" for name in ("lhs", "rhs"))
    for name, sql in SEMI_STREAMS.items():
        duck = best_of(args.repeat, lambda q=sql: duckdb_run({"lhs": lhs, "rhs": rhs}, q))
        mine = best_of(args.repeat, lambda q=sql: sqlstream_run(ddl, {"lhs": lhs, "rhs": rhs}, q, args.batch_size, workdir))
        report(name, args.events, mine, duck)
    arrays = lhs.append_column("xs", pa.FixedSizeListArray.from_arrays(
        pa.array(np.repeat(lhs.column("v").to_numpy(), 4)), 4)).drop_columns(["v"])
    ddl = f"""CREATE SOURCE arrays (k BIGINT, ts TIMESTAMP, xs DOUBLE[4],
                WATERMARK FOR ts AS ts - INTERVAL '{DELAY_S}' SECOND) WITH (connector = 'memory');"""
    duck = best_of(args.repeat, lambda: duckdb_run({"arrays": arrays}, UNNEST[1]))
    mine = best_of(args.repeat, lambda: sqlstream_run(ddl, {"arrays": arrays}, UNNEST[0], args.batch_size, workdir))
    report("CROSS JOIN UNNEST (x4)", half, mine, duck)


if __name__ == "__main__":
    main()
