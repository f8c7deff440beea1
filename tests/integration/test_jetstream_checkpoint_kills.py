"""A checkpointed JetStream pipeline killed with SIGKILL again and again while messages
keep arriving: the windowed file output equals DuckDB's batch answer over everything
published, the JetStream sink stores each window's message id once, and the input's
ack floor never passes what a committed checkpoint holds."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow.dataset as ds
import pytest
from conftest import NatsClient, wait_until
from nats.js.errors import NotFoundError

from sqlstream.runtime.checkpoints import CheckpointStore

pytestmark = pytest.mark.nats

SQLSTREAM = str(Path(sys.executable).with_name("sqlstream"))
BASE_MS = 1_700_000_000_000
KEYS = 20


def _pipeline(url: str) -> str:
    return f"""
        SET batch_size = 500;
        SET checkpoint_interval = '200ms';
        CREATE SOURCE events (id BIGINT, k BIGINT, v DOUBLE, ts TIMESTAMP(3),
                              WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
          WITH (connector = 'nats', url = '{url}', stream = 'CK_IN', durable = 'ck');
        CREATE SINK counts AS
          SELECT window_start, window_end, k, count(*) AS n, sum(v) AS total
          FROM TUMBLE(events, ts, INTERVAL '1' SECOND) GROUP BY window_start, window_end, k
          WITH (connector = 'file', path = 'out/counts', format = 'parquet');
        CREATE SINK alerts AS
          SELECT window_start, window_end, k, count(*) AS n
          FROM TUMBLE(events, ts, INTERVAL '1' SECOND) GROUP BY window_start, window_end, k
          WITH (connector = 'nats', url = '{url}', subject = 'ck.out', stream = 'CK_OUT');
    """


def _events(n: int, seed: int = 3) -> list[dict]:
    """Events with ``ms`` (event time as ms, for the test) and ``ts`` (the same as text)."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        ms = BASE_MS + i * 2 - rng.randint(0, 1500)
        text = datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        events.append({"id": i, "k": rng.randrange(KEYS), "v": round(rng.uniform(0, 10), 3), "ms": ms, "ts": text})
    return events


def _committed_sequence(folder: Path) -> int:
    store = CheckpointStore(str(folder / "ck"))
    committed = store.committed_epochs()
    if not committed:
        return 0
    return store.load(committed[-1]).sources["events"]["position"]["sequence"]


@pytest.mark.parametrize("count, chunk", [(12_000, 600), pytest.param(100_000, 4000, marks=pytest.mark.slow)])
def test_kills_while_publishing(tmp_path, durable_nats_server, count, chunk):
    client = NatsClient(durable_nats_server.url)
    try:
        client.add_stream("CK_IN", ["ck.in"])
        client.add_stream("CK_OUT", ["ck.out"])
        events = _events(count)
        (tmp_path / "p.sql").write_text(_pipeline(durable_nats_server.url))

        def publish():  # chunks five times a second, while the pipeline is killed and restarted
            for start in range(0, len(events), chunk):
                client.js_publish("ck.in", [json.dumps(e).encode() for e in events[start:start + chunk]])
                time.sleep(0.2)

        publisher = threading.Thread(target=publish)
        publisher.start()
        rng = random.Random(11)
        kills = 0
        log = open(tmp_path / "run.log", "w")
        try:
            while publisher.is_alive() or kills < 5:
                process = subprocess.Popen([SQLSTREAM, "run", "p.sql", "--checkpoint", "ck"], cwd=tmp_path,
                                           stdout=subprocess.DEVNULL, stderr=log)
                time.sleep(rng.uniform(1.5, 3.0))
                assert process.poll() is None, (tmp_path / "run.log").read_text()
                process.send_signal(signal.SIGKILL)
                process.wait(10)
                kills += 1
                try:
                    floor = client.consumer_info("CK_IN", "ck").ack_floor.stream_seq
                except NotFoundError:  # killed while resuming, between deleting and recreating the consumer
                    continue
                assert floor <= _committed_sequence(tmp_path), "acks never pass a committed checkpoint"
            publisher.join()
            log.flush()
            restores = (tmp_path / "run.log").read_text().count("restored epoch")
            final = subprocess.Popen([SQLSTREAM, "run", "p.sql", "--checkpoint", "ck"], cwd=tmp_path,
                                     stdout=subprocess.DEVNULL, stderr=log)
            wait_until(lambda: (tmp_path / "run.log").read_text().count("restored epoch") > restores, timeout=60,
                       what="the last run to resume")
            wait_until(lambda: _committed_sequence(tmp_path) == len(events), timeout=90,
                       what="the last run to commit every message")
            final.send_signal(signal.SIGTERM)
            assert final.wait(30) == 143, (tmp_path / "run.log").read_text()  # stopped by SIGTERM (drained)
        finally:
            log.close()
        assert kills >= 5
        assert client.consumer_info("CK_IN", "ck").ack_floor.stream_seq == len(events)

        watermark = max(e["ms"] for e in events) - 2000  # windows ending at or below it are final
        published = tmp_path / "published.jsonl"
        published.write_text("\n".join(json.dumps(e) for e in events))
        expected = duckdb.sql(f"""
            SELECT ms // 1000 * 1000 AS ws, k, count(*) AS n, round(sum(v), 6) AS total
            FROM read_json('{published}', format = 'newline_delimited')
            GROUP BY ALL HAVING ws + 1000 <= {watermark} ORDER BY ALL""").fetchall()
        counts = ds.dataset(str(tmp_path / "out" / "counts"), format="parquet").to_table()  # noqa: F841 (read by DuckDB)
        actual = duckdb.sql("""SELECT epoch_ms(window_start) AS ws, k, n, round(total, 6)
                               FROM counts ORDER BY ALL""").fetchall()
        assert actual == expected

        stored = client.stream_messages("CK_OUT")
        ids = [m.headers["Nats-Msg-Id"] for m in stored]
        assert len(ids) == len(set(ids)) == len(expected), "each window's message stored once"
    finally:
        client.close()
