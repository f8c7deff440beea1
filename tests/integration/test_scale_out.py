"""Scale-out end to end, with real ``sqlstream`` processes and a real nats-server: a
partitioned stream created by the workers and filled by ``sqlstream produce``; two
workers (``run --workers 2``) whose union of outputs equals DuckDB over the published
data, for a stateless and a keyed TUMBLE query; a worker killed with SIGKILL mid-run,
whose partitions the other takes over from their checkpoints with no row lost or
written twice, after a hand-over of open windows to a worker that joined mid-stream
(docs/scale-out.md)."""

from __future__ import annotations

import asyncio
import csv
import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from datetime import datetime, timedelta

import duckdb
import nats.js.errors
import orjson
import pyarrow as pa
import pytest
from conftest import wait_until

from sqlstream.connectors.nats.leases import PartitionLeases
from sqlstream.errors import ConnectorError

pytestmark = pytest.mark.nats

CLI = [sys.executable, "-m", "sqlstream.cli.main"]
CUSTOMERS = 20
START = datetime(2024, 1, 1)


def _pipeline(folder, url: str, stream: str, prefix: str, sink_stream: str | None = None, replicas: int = 1) -> str:
    jetstream_sink = "" if sink_stream is None else f"""
        CREATE SINK windows_out AS
          SELECT window_start, window_end, customer_id, count(*) AS n
          FROM TUMBLE(orders, ts, INTERVAL '5' SECOND) GROUP BY window_start, window_end, customer_id
          WITH (connector = 'nats', url = '{url}', stream = '{sink_stream}', subject = '{sink_stream}.{{customer_id}}');
    """
    (folder / "pipeline.sql").write_text(textwrap.dedent(f"""
        CREATE SOURCE orders (customer_id BIGINT, amount BIGINT, ts TIMESTAMP, _stream_seq BIGINT,
                              WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
        WITH (connector = 'nats', url = '{url}', stream = '{stream}', subject = '{prefix}.{{customer_id}}',
              partitions = 4, partition_by = 'customer_id', replicas = {replicas});
        CREATE SINK all_rows AS SELECT _stream_seq AS seq, customer_id, amount FROM orders
          WITH (connector = 'file', path = 'out/all_rows', format = 'json');
        CREATE SINK per_customer AS
          SELECT window_start, window_end, customer_id, count(*) AS n, sum(amount) AS total
          FROM TUMBLE(orders, ts, INTERVAL '5' SECOND) GROUP BY window_start, window_end, customer_id
          WITH (connector = 'file', path = 'out/per_customer', format = 'json');
    """) + textwrap.dedent(jetstream_sink))
    return "pipeline.sql"


def _committed(folder, sink: str) -> list[dict]:
    """Rows of the committed part files of every partition (hidden pending parts excluded)."""
    rows = []
    for path in sorted(glob.glob(str(folder / "out" / sink / "partition=*" / "part-*.jsonl"))):
        with open(path, "rb") as handle:
            rows += [orjson.loads(line) for line in handle if line.strip()]
    return rows


def _stream_exists(client, stream: str) -> bool:
    try:
        client.run(client.js.stream_info(stream))
    except nats.js.errors.NotFoundError:
        return False
    return True


def _publish(client, prefix: str, rows: list[dict]) -> None:
    async def go():
        for row in rows:
            await client.js.publish_async(f"{prefix}.{row['customer_id']}", orjson.dumps(row))
        await client.js.publish_async_completed()

    client.run(go())


def _orders(first: int, count: int) -> list[dict]:
    return [{"customer_id": i % CUSTOMERS, "amount": i, "ts": (START + timedelta(milliseconds=70 * i)).isoformat()}
            for i in range(first, first + count)]


def _flush() -> list[dict]:
    """A late event per customer: every partition's watermark passes every window of the data."""
    late = (START + timedelta(hours=1)).isoformat()
    return [{"customer_id": c, "amount": 0, "ts": late} for c in range(CUSTOMERS)]


def orders_in_duckdb(rows: list[dict]) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the published ``rows`` as table ``orders``."""
    con = duckdb.connect()
    con.register("orders", pa.Table.from_pylist([{**r, "ts": datetime.fromisoformat(r["ts"])} for r in rows]))
    return con


def _expected_windows(rows: list[dict]) -> list[tuple]:
    result = orders_in_duckdb(rows).execute("""
        SELECT time_bucket(INTERVAL 5 SECOND, ts) AS ws, customer_id, count(*), sum(amount)
        FROM orders WHERE ts < TIMESTAMP '2024-01-01 00:30:00' GROUP BY ALL ORDER BY ALL
    """).fetchall()
    return [(ws.isoformat(), c, n, int(total)) for ws, c, n, total in result]


def _windows(folder) -> list[tuple]:
    return sorted((datetime.fromisoformat(r["window_start"]).isoformat(), r["customer_id"], r["n"], r["total"])
                  for r in _committed(folder, "per_customer"))


def _stop(process: subprocess.Popen) -> tuple[int, str]:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate(timeout=10)
    return process.returncode, err


def test_two_workers_over_a_partitioned_stream_match_duckdb(tmp_path, nats_server, nats_client, processes):
    tag = uuid.uuid4().hex[:8]
    stream, prefix = f"ORD{tag}", f"orders{tag}"
    name = _pipeline(tmp_path, nats_server.url, stream, prefix)
    group = subprocess.Popen(CLI + ["run", name, "--workers", "2", "--group", f"g{tag}", "--checkpoint", "ck",
                                    "--checkpoint-interval", "200ms", "--lease-ttl", "2s"],
                             cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    processes.append(group)
    wait_until(lambda: _stream_exists(nats_client, stream), 60, "the workers to create the partitioned stream")
    produced = subprocess.run(
        CLI + ["produce", f"{prefix}.{{customer_id}}", "--stream", stream, "--url", nats_server.url, "--rate", "0",
               "--count", "600", "--columns", "customer_id BIGINT, amount BIGINT, ts TIMESTAMP",
               "-o", f"fields.customer_id.max={CUSTOMERS - 1}", "-o", "fields.amount.kind=sequence",
               "-o", "clock=simulated", "-o", "clock_start=2024-01-01T00:00:00", "-o", "fields.ts.step=50ms"],
        capture_output=True, text=True, timeout=60)
    assert produced.returncode == 0, produced.stderr
    _publish(nats_client, prefix, _flush())

    messages = nats_client.stream_messages(stream)
    assert len(messages) == 600 + CUSTOMERS
    partition_of: dict[int, set[str]] = {}
    for message in messages:  # stored as <prefix>.<partition>.<customer_id> by the stream's transform
        _, partition, customer = message.subject.rsplit(".", 2)
        partition_of.setdefault(int(customer), set()).add(partition)
    assert all(len(p) == 1 for p in partition_of.values())  # a key stays in one partition
    assert set().union(*partition_of.values()) == {"0", "1", "2", "3"}
    published = [{**orjson.loads(m.data)} for m in messages]
    for row in published:
        row["ts"] = row["ts"].replace(" ", "T")
    expected = _expected_windows(published)
    assert len(expected) > 2 * CUSTOMERS

    wait_until(lambda: len(_committed(tmp_path, "all_rows")) >= len(messages) and _windows(tmp_path) == expected,
               60, "the group's output")
    # the first worker to join may claim every partition and hand half over a round later
    wait_until(lambda: len(set(_owners(nats_server.url, f"g{tag}").values())) == 2, 30, "two owners")
    status = subprocess.run(CLI + ["group", name, "--group", f"g{tag}", "--checkpoint", "ck"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    header, *rows = status.stdout.splitlines()
    assert header.startswith(f"group 'g{tag}': 2 worker(s): ")
    table = list(csv.reader(rows))
    assert table[0] == ["partition", "owner", "checkpoint", "taken", "stream_seq", "lag"]
    assert [r[0] for r in table[1:]] == ["0", "1", "2", "3"]
    assert len({r[1] for r in table[1:]}) == 2  # two owners, from the lease bucket
    assert [r[5] for r in table[1:]] == ["0"] * 4  # everything read is in a committed checkpoint
    code, err = _stop(group)
    assert code == 143, err
    assert "group 'g" in err and "stopped by SIGTERM: 2 workers" in err
    seqs = Counter(r["seq"] for r in _committed(tmp_path, "all_rows"))
    assert sorted(seqs) == [m.seq for m in messages] and set(seqs.values()) == {1}
    assert _windows(tmp_path) == expected
    assert sorted(os.listdir(tmp_path / "out" / "all_rows")) == [f"partition={p}" for p in range(4)]
    assert json.loads((tmp_path / "ck" / "partitioning.json").read_text())["partitions"] == 4


def first_worker(folder, url: str, pipeline: str, group: str, processes) -> tuple[list[str], subprocess.Popen]:
    """A worker's command line (checkpoints every 200 ms, 2 s leases) and a first worker
    started with it, once it has claimed all 4 partitions (its stderr discarded: it is
    killed later)."""
    command = CLI + ["worker", pipeline, "--group", group, "--checkpoint", "ck", "--checkpoint-interval", "200ms",
                     "--lease-ttl", "2s"]
    worker = subprocess.Popen(command, cwd=folder, stderr=subprocess.DEVNULL)
    processes.append(worker)
    wait_until(lambda: len(_owners(url, group)) == 4, 60, "the first worker to claim all partitions")
    return command, worker


def _owners(url: str, group: str) -> dict[int, str]:
    """Partition -> owner in the group's lease bucket ({} before a worker created it)."""

    async def go():
        nc = await nats.connect(url.split(","))  # one url, or a cluster's
        try:
            view = PartitionLeases(nc.jetstream(), group, "observer", 4, None)  # a reader: creates no bucket
            await view.open()
            return await view.owners()
        except ConnectorError:  # no bucket yet
            return {}
        finally:
            await nc.close()

    return asyncio.run(go())


def test_partitions_move_with_their_state_when_a_worker_joins_and_when_one_is_killed(tmp_path, nats_server, nats_client,
                                                                                  processes):
    tag = uuid.uuid4().hex[:8]
    stream, prefix, group, sink_stream = f"ORD{tag}", f"orders{tag}", f"g{tag}", f"OUT{tag}"
    nats_client.add_stream(sink_stream, [f"{sink_stream}.>"])
    name = _pipeline(tmp_path, nats_server.url, stream, prefix, sink_stream)
    command, doomed = first_worker(tmp_path, nats_server.url, name, group, processes)
    first = _orders(0, 200)
    _publish(nats_client, prefix, first)  # open windows in every partition, some committed output
    wait_until(lambda: len(_committed(tmp_path, "all_rows")) >= 50, 60, "the first worker's output")
    survivor = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    processes.append(survivor)  # joins mid-stream: two partitions are handed over with their state
    wait_until(lambda: len(set(_owners(nats_server.url, group).values())) == 2, 60, "a hand-over to the second worker")
    second = _orders(200, 200)
    _publish(nats_client, prefix, second)
    wait_until(lambda: len(_committed(tmp_path, "all_rows")) >= 300, 60, "output committed by both workers")
    doomed.send_signal(signal.SIGKILL)  # mid-run: windows are open, nothing is handed over
    doomed.wait(10)
    rest = _orders(400, 200) + _flush()
    _publish(nats_client, prefix, rest)
    mine = f"-{survivor.pid}-"  # worker ids are host-pid-random
    wait_until(lambda: [mine in owner for owner in _owners(nats_server.url, group).values()] == [True] * 4, 30,
               "the survivor to take every partition")
    expected = _expected_windows(first + second + rest)
    wait_until(lambda: len(_committed(tmp_path, "all_rows")) >= 620 and _windows(tmp_path) == expected, 60,
               "the output after the take-over")
    code, err = _stop(survivor)
    assert code == 143, err
    seqs = Counter(r["seq"] for r in _committed(tmp_path, "all_rows"))
    assert sorted(seqs) == list(range(1, 621))  # nothing lost
    assert set(seqs.values()) == {1}  # nothing twice
    assert _windows(tmp_path) == expected
    assert "resumed from epoch" in err  # the killed worker's partitions restored its checkpoints
    # the JetStream sink: ids do not depend on the worker, so each window result is stored once
    stored = nats_client.stream_messages(sink_stream)
    ids = Counter(m.headers["Nats-Msg-Id"] for m in stored)
    assert set(ids.values()) == {1}
    assert sorted((datetime.fromisoformat(orjson.loads(m.data)["window_start"]).isoformat(),
                   orjson.loads(m.data)["customer_id"], orjson.loads(m.data)["n"]) for m in stored) == \
        [(ws, c, n) for ws, c, n, _ in expected]



def test_a_worker_paused_past_its_lease_writes_nothing_for_the_partitions_it_lost(tmp_path, nats_server, nats_client,
                                                                                  processes):
    tag = uuid.uuid4().hex[:8]
    stream, prefix, group = f"ORD{tag}", f"orders{tag}", f"g{tag}"
    name = _pipeline(tmp_path, nats_server.url, stream, prefix)
    command = CLI + ["worker", name, "--group", group, "--checkpoint", "ck", "--checkpoint-interval", "200ms",
                     "--lease-ttl", "2s"]
    paused = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    processes.append(paused)
    wait_until(lambda: len(_owners(nats_server.url, group)) == 4, 60, "the first worker to claim all partitions")
    other = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    processes.append(other)
    wait_until(lambda: len(set(_owners(nats_server.url, group).values())) == 2, 60, "a hand-over to the second worker")
    first = _orders(0, 200)
    _publish(nats_client, prefix, first)
    wait_until(lambda: len(_committed(tmp_path, "all_rows")) >= 150, 60, "output of both workers")

    paused.send_signal(signal.SIGSTOP)  # past the TTL: its leases expire and the other worker takes them
    mine = f"-{other.pid}-"
    wait_until(lambda: [mine in owner for owner in _owners(nats_server.url, group).values()] == [True] * 4, 30,
               "the other worker to take every partition")
    second = _orders(200, 200)
    _publish(nats_client, prefix, second)  # also delivered to the paused worker's old consumers
    paused.send_signal(signal.SIGCONT)  # it must not commit what it reads for partitions it lost
    rest = _orders(400, 100) + _flush()
    _publish(nats_client, prefix, rest)
    expected = _expected_windows(first + second + rest)
    wait_until(lambda: len(_committed(tmp_path, "all_rows")) >= 520 and _windows(tmp_path) == expected, 60,
               "the output after the pause")
    code_paused, err_paused = _stop(paused)
    code_other, err_other = _stop(other)
    assert (code_paused, code_other) == (143, 143), err_paused + err_other
    seqs = Counter(r["seq"] for r in _committed(tmp_path, "all_rows"))
    assert sorted(seqs) == list(range(1, 521)) and set(seqs.values()) == {1}
    assert _windows(tmp_path) == expected
    assert "lost the lease of partition" in err_paused or "not written" in err_paused
