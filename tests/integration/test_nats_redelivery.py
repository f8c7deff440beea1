"""JetStream redeliveries against a real nats-server: a message is counted at most
once per run, however many copies of it arrive (ack_wait 1 s and a pipeline that
stalls longer than that), checked row by row and, for windows, against DuckDB."""

from __future__ import annotations

import json
import random
import threading
from datetime import datetime, timedelta

import duckdb
import pyarrow as pa
import pytest
from conftest import BackgroundRun, wait_until

from sqlstream import Session, udf

pytestmark = pytest.mark.nats

T0 = datetime(2024, 1, 1)


def _session(tmp_path, **settings) -> Session:
    return Session(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"), settings=settings)


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class Stall:
    """A UDF that holds the pipeline on its ``at``-th call until released."""

    def __init__(self, at: int):
        self.at, self.calls = at, 0
        self.stalled, self.release = threading.Event(), threading.Event()

        @udf(args=[pa.int64()], returns=pa.int64())
        def gate(ids):
            self.calls += 1
            if self.calls == self.at:
                self.stalled.set()
                self.release.wait(30)
            return ids

        self.udf = gate


@pytest.mark.parametrize("batch_size", [10, 64], ids=["copies-after-ack", "copies-in-the-same-batch"])
def test_stateless_rows_are_written_once_when_buffered_messages_are_redelivered(tmp_path, nats_server, nats_client,
                                                                                 batch_size):
    """The first batch stalls past ack_wait while the rest wait in the reader's buffer:
    the server redelivers all of them. With 10-row batches the copies of the first
    batch arrive after it was acked; with 64 a batch holds originals and copies."""
    stream = f"DUP_STATELESS_{batch_size}"
    nats_client.add_stream(stream, [f"dup{batch_size}.in"])
    stall = Stall(at=1)
    out = tmp_path / "out.jsonl"
    session = _session(tmp_path, batch_size=str(batch_size), batch_timeout="50ms")
    session.register_udf(stall.udf)
    session.execute(f"""
        CREATE SOURCE r (id BIGINT) WITH (connector = 'nats', url = '{nats_server.url}', stream = '{stream}',
                                          durable = 'dup', ack_wait = '1s');
        CREATE SINK copied AS SELECT gate(id) AS id FROM r WITH (connector = 'file', path = '{out}', format = 'json');
    """)
    run = BackgroundRun(session)
    reader = run.driver.sources[0].reader
    nats_client.js_publish(f"dup{batch_size}.in", [json.dumps({"id": i}).encode() for i in range(10)])
    assert stall.stalled.wait(10)
    nats_client.js_publish(f"dup{batch_size}.in", [json.dumps({"id": i}).encode() for i in range(10, 30)])
    # the reader asks for more while its buffer has room (4 batches): 20 originals, 20+ copies
    wait_until(lambda: nats_client.consumer_info(stream, "dup").num_redelivered >= 20, timeout=15,
               what="the server to redeliver the unacked messages")
    wait_until(lambda: len(reader.buffer) >= 40, what="the copies in the reader's buffer")
    stall.release.set()
    wait_until(lambda: nats_client.consumer_info(stream, "dup").ack_floor.stream_seq == 30, what="everything acked")
    wait_until(lambda: not reader.buffer and reader.held == {}, what="the copies to be settled")
    run.stop()
    ids = sorted(row["id"] for row in _lines(out))
    assert ids == list(range(30)), "every message written exactly once"
    assert reader.duplicates_dropped >= 20
    info = nats_client.consumer_info(stream, "dup")
    assert info.num_ack_pending == 0


def _events(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": i, "ts": (T0 + timedelta(milliseconds=250 * i + rng.randrange(2000))).isoformat()} for i in range(n)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_window_counts_match_duckdb_when_messages_are_redelivered_many_times(tmp_path, nats_server, nats_client, seed):
    """A windowed pipeline stalls past ack_wait at batches picked by the seed (the reader
    has room for everything, so the server keeps redelivering during a stall); copies then arrive while their originals are held by open windows,
    after windows closed (acked), and next to their originals in one batch. Each
    window's count must match DuckDB, and no copy may come out as a 'late' dead letter."""
    rng = random.Random(seed)
    stream, subject = f"DUP_WIN_{seed}", f"dupwin{seed}.in"
    nats_client.add_stream(stream, [subject])
    rows = _events(240, seed)
    stalls = sorted(rng.sample(range(2, 12), 3))
    calls, stalled, release = [0], threading.Event(), threading.Event()

    @udf(args=[pa.int64()], returns=pa.int64())
    def gate(ids):
        calls[0] += 1
        if calls[0] in stalls:
            release.clear()
            stalled.set()
            release.wait(30)
        return ids

    out = tmp_path / "windows.jsonl"
    session = _session(tmp_path, batch_size="20", batch_timeout="20ms")
    session.register_udf(gate)
    session.execute(f"""
        CREATE SOURCE r (id BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
        WITH (connector = 'nats', url = '{nats_server.url}', stream = '{stream}', durable = 'win',
              ack_wait = '1s', fetch_batch = 400, max_future = 'off');
        CREATE SINK per_window AS
          SELECT window_start, count(*) AS n, sum(id) AS total
          FROM TUMBLE(r, ts, INTERVAL '5' SECOND) WHERE gate(id) >= 0 GROUP BY window_start, window_end
        WITH (connector = 'file', path = '{out}', format = 'json');
    """)
    run = BackgroundRun(session)
    nats_client.js_publish(subject, [json.dumps(r).encode() for r in rows])
    for _ in stalls:
        assert stalled.wait(20), "the pipeline reached the stall"
        stalled.clear()
        before = nats_client.consumer_info(stream, "win").delivered.consumer_seq  # counts every delivery
        wait_until(lambda b=before: nats_client.consumer_info(stream, "win").delivered.consumer_seq > b + 20,
                   timeout=15, what="redeliveries during the stall")
        release.set()
    closing = {"id": 10_000, "ts": (T0 + timedelta(hours=1)).isoformat()}
    nats_client.js_publish(subject, [json.dumps(closing).encode()])
    reader = run.driver.sources[0].reader
    wait_until(lambda: nats_client.consumer_info(stream, "win").ack_floor.stream_seq >= len(rows), timeout=30,
               what="every window closed and acked")
    run.stop()

    source = tmp_path / "input.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in rows))
    expected = duckdb.sql(f"""
        SELECT strftime(time_bucket(INTERVAL 5 SECOND, ts::TIMESTAMP), '%Y-%m-%d %H:%M:%S') AS ws,
               count(*) AS n, sum(id) AS total
        FROM read_json('{source}') GROUP BY ALL ORDER BY ws""").fetchall()
    got = sorted((r["window_start"][:19], r["n"], r["total"]) for r in _lines(out))
    assert got == [tuple(e) for e in expected]
    letters = _lines(tmp_path / "dead.jsonl")
    assert [letter for letter in letters if letter["reason"] == "late"] == []
    assert reader.redelivered > 0 and reader.duplicates_dropped > 0


@pytest.mark.parametrize("seed", [11, 12])
def test_window_counts_match_duckdb_across_many_restarts(tmp_path, nats_server, nats_client, seed):
    """Stop and restart a windowed JetStream pipeline at seeded points (same durable):
    each restart rewinds to the ack floor and replays what the open windows held.
    The windows stored in the sink stream (the first version of each wins) must match
    DuckDB, and no replayed message may become a 'late' dead letter."""
    rng = random.Random(seed)
    stream_in, stream_out = f"RST_IN_{seed}", f"RST_OUT_{seed}"
    nats_client.add_stream(stream_in, [f"rst{seed}.in"])
    nats_client.add_stream(stream_out, [f"rst{seed}.out"])
    rows = _events(600, seed)
    payloads = [json.dumps(r).encode() for r in rows]
    nats_client.js_publish(f"rst{seed}.in", payloads)
    pipeline = f"""
        CREATE SOURCE r (id BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
        WITH (connector = 'nats', url = '{nats_server.url}', stream = '{stream_in}', durable = 'rst',
              max_future = 'off');
        CREATE SINK per_window AS
          SELECT window_start, window_end, count(*) AS n, sum(id) AS total
          FROM TUMBLE(r, ts, INTERVAL '5' SECOND) GROUP BY window_start, window_end
        WITH (connector = 'nats', url = '{nats_server.url}', subject = 'rst{seed}.out', stream = '{stream_out}');
    """
    source = tmp_path / "input.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in rows))
    expected = duckdb.sql(f"""
        SELECT strftime(time_bucket(INTERVAL 5 SECOND, ts::TIMESTAMP), '%Y-%m-%d %H:%M:%S') AS ws,
               count(*) AS n, sum(id) AS total
        FROM read_json('{source}') GROUP BY ALL ORDER BY ws""").fetchall()
    restarts = 6
    for attempt in range(restarts + 1):
        session = _session(tmp_path / f"run{attempt}", batch_size=str(rng.choice([7, 20, 64])))
        session.execute(pipeline)
        run = BackgroundRun(session)
        reader = run.driver.sources[0].reader
        if attempt < restarts:
            target = rng.randrange(20, 120)
            wait_until(lambda r=reader, t=target: r.taken >= t, what="the run to take some messages")
        else:
            closing = {"id": 10_000, "ts": (T0 + timedelta(hours=1)).isoformat()}
            nats_client.js_publish(f"rst{seed}.in", [json.dumps(closing).encode()])
            wait_until(lambda: nats_client.run(nats_client.js.stream_info(stream_out)).state.messages >= len(expected),
                       timeout=30, what="every window in the sink stream")
        run.stop()
        letters = _lines(tmp_path / f"run{attempt}" / "dead.jsonl")
        assert [letter for letter in letters if letter["reason"] == "late"] == [], f"run {attempt}"

    stored = [json.loads(m.data) for m in nats_client.stream_messages(stream_out)]
    got = sorted((r["window_start"][:19].replace("T", " "), r["n"], r["total"]) for r in stored)
    assert got == [tuple(e) for e in expected]


def test_a_rewind_by_another_process_does_not_count_messages_twice(tmp_path, nats_server, nats_client):
    """A process starting on the same durable rewinds the consumer to its ack floor
    ($JS.API.CONSUMER.RESET) while this run still holds messages in an open window:
    the server delivers them again with a delivery count of 1, like new messages.
    They are the same stream sequences, so they must not count again."""
    nats_client.add_stream("REWIND_IN", ["rewind.in"])
    out = tmp_path / "hourly.jsonl"
    session = _session(tmp_path, batch_size="10")
    session.execute(f"""
        CREATE SOURCE r (id BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
        WITH (connector = 'nats', url = '{nats_server.url}', stream = 'REWIND_IN', durable = 'rewind',
              max_future = 'off');
        CREATE SINK hourly AS SELECT window_start, count(*) AS n, sum(id) AS total
          FROM TUMBLE(r, ts, INTERVAL '1' HOUR) GROUP BY window_start, window_end
        WITH (connector = 'file', path = '{out}', format = 'json');
    """)
    run = BackgroundRun(session)
    reader = run.driver.sources[0].reader

    def publish(ids, hour=0):
        nats_client.js_publish("rewind.in", [
            json.dumps({"id": i, "ts": (T0 + timedelta(hours=hour, seconds=i)).isoformat()}).encode() for i in ids
        ])

    publish(range(30))
    wait_until(lambda: reader.status()["held"] == 30, what="the open window to hold 30 messages")
    reply = nats_client.run(nats_client.nc.request("$JS.API.CONSUMER.RESET.REWIND_IN.rewind", b"{}", timeout=5))
    assert json.loads(reply.data)["reset_seq"] == 1
    wait_until(lambda: reader.duplicates_dropped == 30, what="the rewound copies to arrive and be dropped")
    publish([1000], hour=2)  # closes hour 0
    wait_until(lambda: out.exists() and out.read_text(), what="the hour-0 result")
    run.stop()
    (result,) = _lines(out)
    assert (result["n"], result["total"]) == (30, sum(range(30)))
    assert reader.redelivered == 0  # each copy came with a delivery count of 1
