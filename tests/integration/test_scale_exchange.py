"""Shuffles end to end, with real ``sqlstream`` processes and a real nats-server: a
query grouping by a column that is not the partition key, a global windowed
aggregate and an interval join of the stream with itself on another column, run by
a group of workers through exchanges (internal partitioned JetStream
streams); the union of their outputs equals DuckDB over the published data, with no
row lost or counted twice when a worker is killed mid-stream (docs/scale-out.md#shuffles)."""

from __future__ import annotations

import signal
import subprocess
import textwrap
import uuid
from datetime import datetime, timedelta

import pytest
from conftest import wait_until
from test_scale_out import (
    CLI,
    _committed,
    _owners,
    _publish,
    _stop,
    _stream_exists,
    first_worker,
    orders_in_duckdb,
)

pytestmark = pytest.mark.nats

CUSTOMERS, REGIONS = 20, 3
START = datetime(2024, 1, 1)


def _pipeline(folder, url: str, stream: str, prefix: str, more: str = "") -> str:
    (folder / "pipeline.sql").write_text(textwrap.dedent(f"""
        CREATE SOURCE orders (customer_id BIGINT, region VARCHAR, amount BIGINT, ts TIMESTAMP,
                              WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
        WITH (connector = 'nats', url = '{url}', stream = '{stream}', subject = '{prefix}.{{customer_id}}',
              partitions = 4, partition_by = 'customer_id'{more});
        CREATE SINK per_region AS
          SELECT window_start, window_end, region, count(*) AS n, sum(amount) AS total
          FROM TUMBLE(orders, ts, INTERVAL '5' SECOND) GROUP BY window_start, window_end, region
          WITH (connector = 'file', path = 'out/per_region', format = 'json');
        CREATE SINK overall AS
          SELECT window_start, window_end, count(*) AS n, max(amount) AS top
          FROM TUMBLE(orders, ts, INTERVAL '5' SECOND) GROUP BY window_start, window_end
          WITH (connector = 'file', path = 'out/overall', format = 'json');
        CREATE SINK pairs AS
          SELECT a.amount AS x, b.amount AS y
          FROM orders a JOIN orders b ON a.region = b.region AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '1' SECOND
          WITH (connector = 'file', path = 'out/pairs', format = 'json');
    """))
    return "pipeline.sql"


def _orders(first: int, count: int) -> list[dict]:
    return [{"customer_id": i % CUSTOMERS, "region": f"r{(i // 3) % REGIONS}", "amount": i,
             "ts": (START + timedelta(milliseconds=70 * i)).isoformat()} for i in range(first, first + count)]


def _flush() -> list[dict]:
    """A late event per customer: every partition's watermark passes every window of the data."""
    late = (START + timedelta(hours=1)).isoformat()
    return [{"customer_id": c, "region": "late", "amount": 0, "ts": late} for c in range(CUSTOMERS)]


def _expected(rows: list[dict]) -> tuple[list[tuple], list[tuple], list[tuple]]:
    con = orders_in_duckdb(rows)
    per_region = con.execute("""
        SELECT time_bucket(INTERVAL 5 SECOND, ts) AS ws, region, count(*), sum(amount)
        FROM orders WHERE ts < TIMESTAMP '2024-01-01 00:30:00' GROUP BY ALL ORDER BY ALL
    """).fetchall()
    overall = con.execute("""
        SELECT time_bucket(INTERVAL 5 SECOND, ts) AS ws, count(*), max(amount)
        FROM orders WHERE ts < TIMESTAMP '2024-01-01 00:30:00' GROUP BY ALL ORDER BY ALL
    """).fetchall()
    pairs = con.execute("""
        SELECT a.amount, b.amount FROM orders a JOIN orders b
        ON a.region = b.region AND b.ts BETWEEN a.ts AND a.ts + INTERVAL 1 SECOND ORDER BY ALL
    """).fetchall()
    return ([(ws.isoformat(), r, n, int(t)) for ws, r, n, t in per_region],
            [(ws.isoformat(), n, top) for ws, n, top in overall], pairs)


def _results(folder) -> tuple[list[tuple], list[tuple], list[tuple]]:
    def start(row):
        return datetime.fromisoformat(row["window_start"]).isoformat()

    return (sorted((start(r), r["region"], r["n"], r["total"]) for r in _committed(folder, "per_region")),
            sorted((start(r), r["n"], r["top"]) for r in _committed(folder, "overall")),
            sorted((r["x"], r["y"]) for r in _committed(folder, "pairs")))


def test_a_group_by_another_column_and_a_global_aggregate_go_through_exchanges(tmp_path, nats_server, nats_client,
                                                                              processes):
    tag = uuid.uuid4().hex[:8]
    stream, prefix, group = f"ORD{tag}", f"orders{tag}", f"g{tag}"
    name = _pipeline(tmp_path, nats_server.url, stream, prefix)
    explain = subprocess.run(CLI + ["explain", name], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert "Exchange hash(__k0) across the partitions of 'orders' (partial aggregates)" in explain.stdout, explain.stderr
    assert "Exchange to partition 0 of 'orders'" in explain.stdout
    assert explain.stdout.count("Exchange hash(region)") == 2  # the join: one exchange per side
    workers = subprocess.Popen(CLI + ["run", name, "--workers", "2", "--group", group, "--checkpoint", "ck",
                                      "--checkpoint-interval", "200ms", "--lease-ttl", "2s"],
                               cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    processes.append(workers)
    wait_until(lambda: _stream_exists(nats_client, stream), 60, "the workers to create the partitioned stream")
    rows = _orders(0, 800)
    _publish(nats_client, prefix, rows[:400])
    _publish(nats_client, prefix, rows[400:])
    _publish(nats_client, prefix, _flush())
    expected = _expected(rows + _flush())
    assert len(expected[0]) > 2 * REGIONS and len(expected[1]) > 5 and len(expected[2]) > 1000
    wait_until(lambda: _results(tmp_path) == expected, 90, "the group's output through the exchanges")
    code, err = _stop(workers)
    assert code == 143, err
    assert _results(tmp_path) == expected
    parts = sorted(p.parent.name for p in (tmp_path / "out" / "overall").glob("*/part-*.jsonl"))
    assert set(parts) == {"partition=0"}  # the global aggregate: one partition merges all


def test_the_exchanges_lose_and_repeat_nothing_when_a_worker_joins_and_one_is_killed(tmp_path, nats_server,
                                                                                    nats_client, processes):
    tag = uuid.uuid4().hex[:8]
    stream, prefix, group = f"ORD{tag}", f"orders{tag}", f"g{tag}"
    name = _pipeline(tmp_path, nats_server.url, stream, prefix)
    command, doomed = first_worker(tmp_path, nats_server.url, name, group, processes)
    rows = _orders(0, 900)
    _publish(nats_client, prefix, rows[:300])
    wait_until(lambda: len(_results(tmp_path)[1]) >= 2, 60, "the first worker's output")
    survivor = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    processes.append(survivor)  # joins mid-stream: two partitions are handed over, exchange state included
    wait_until(lambda: len(set(_owners(nats_server.url, group).values())) == 2, 60, "a hand-over to the second worker")
    _publish(nats_client, prefix, rows[300:600])
    wait_until(lambda: len(_results(tmp_path)[1]) >= 6, 60, "output of both workers")
    doomed.send_signal(signal.SIGKILL)  # mid-run: windows are open, rows are on their way through the exchanges
    doomed.wait(10)
    _publish(nats_client, prefix, rows[600:] + _flush())
    mine = f"-{survivor.pid}-"  # worker ids are host-pid-random
    wait_until(lambda: [mine in owner for owner in _owners(nats_server.url, group).values()] == [True] * 4, 30,
               "the survivor to take every partition")
    expected = _expected(rows + _flush())
    wait_until(lambda: _results(tmp_path) == expected, 90, "the output after the take-over")
    code, err = _stop(survivor)
    assert code == 143, err
    assert _results(tmp_path) == expected  # nothing lost, nothing counted twice
    assert "resumed from epoch" in err


def test_partitions_without_data_do_not_hold_the_exchange_back_with_idle_timeout(tmp_path, nats_server, nats_client,
                                                                               processes):
    tag = uuid.uuid4().hex[:8]
    stream, prefix, group = f"ORD{tag}", f"orders{tag}", f"g{tag}"
    name = _pipeline(tmp_path, nats_server.url, stream, prefix, ", idle_timeout = '1s'")
    workers = subprocess.Popen(CLI + ["run", name, "--workers", "1", "--group", group, "--checkpoint", "ck",
                                      "--checkpoint-interval", "200ms", "--lease-ttl", "2s"],
                               cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    processes.append(workers)
    wait_until(lambda: _stream_exists(nats_client, stream), 60, "the workers to create the partitioned stream")
    rows = [{**row, "customer_id": 7} for row in _orders(0, 300)]  # one customer: three partitions get nothing
    flush = [{**_flush()[0], "customer_id": 7}]
    _publish(nats_client, prefix, rows + flush)
    expected = _expected(rows + flush)
    wait_until(lambda: _results(tmp_path) == expected, 90, "windows closed by the one partition with data")
    code, err = _stop(workers)
    assert code == 143, err
