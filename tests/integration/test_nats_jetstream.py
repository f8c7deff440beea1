"""JetStream source and sink against a real nats-server: at-least-once acks, resume by
durable name, deterministic Nats-Msg-Id, windows holding acks; checked against DuckDB."""

from __future__ import annotations

import json
import random
import threading
from datetime import datetime, timedelta, timezone

import duckdb
import pyarrow as pa
import pytest
from conftest import BackgroundRun, wait_until

from sqlstream import Session, udf

pytestmark = pytest.mark.nats

T0 = datetime(2024, 1, 1)


def _session(tmp_path, **settings) -> Session:
    return Session(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"), settings=settings)


def _stored(client, stream: str) -> list[tuple[str, dict]]:
    return [(m.headers.get("Nats-Msg-Id") if m.headers else None, json.loads(m.data)) for m in client.stream_messages(stream)]


def test_stateless_round_trip_acks_after_the_sink_and_ids_follow_the_source(tmp_path, nats_server, nats_client,
                                                                           message_path):
    tag = message_path.upper()  # each variant gets its own streams and subjects
    stream_in, stream_out, prefix = f"RT_IN_{tag}", f"RT_OUT_{tag}", f"rt{message_path}"
    nats_client.add_stream(stream_in, [f"{prefix}.in.>"])
    nats_client.add_stream(stream_out, [f"{prefix}.out.>"])
    rows = [{"id": i, "k": f"k{i % 4}", "v": i % 13} for i in range(700)]
    nats_client.js_publish(f"{prefix}.in.x", [json.dumps(r).encode() for r in rows[:350]] + [b"{broken"])
    nats_client.js_publish(f"{prefix}.in.y", [json.dumps(r).encode() for r in rows[350:]])
    session = _session(tmp_path, batch_size="64")
    session.execute(f"""
        CREATE SOURCE events (id BIGINT, k VARCHAR, v BIGINT, _stream_seq BIGINT, _subject VARCHAR,
                              _received_at TIMESTAMP)
        WITH (connector = 'nats', url = '{nats_server.url}', stream = '{stream_in}', subject = '{prefix}.in.>',
              durable = 'rt');
        CREATE SINK copied AS SELECT id, k, v * 10 AS v10, _stream_seq AS seq, _received_at IS NOT NULL AS stamped
                              FROM events WHERE v < 10
        WITH (connector = 'nats', url = '{nats_server.url}', subject = '{prefix}.out.{{k}}', stream = '{stream_out}');
    """)
    run = BackgroundRun(session)
    published = tmp_path / "published.jsonl"  # DuckDB runs the same query over the same rows
    published.write_text("\n".join(json.dumps(r) for r in rows))
    expected = duckdb.sql(f"SELECT id, k, v * 10 FROM read_json('{published}') WHERE v < 10 ORDER BY id").fetchall()
    wait_until(lambda: nats_client.consumer_info(stream_in, "rt").ack_floor.stream_seq == 701,
               what="every input message acked")
    run.stop()

    stored = _stored(nats_client, stream_out)
    assert sorted((r["id"], r["k"], r["v10"]) for _, r in stored) == [tuple(e) for e in expected]
    for msg_id, row in stored:
        # the id names the input message: stream sequence 1..350 for x, 352.. for y (351 was the broken one)
        seq = row["id"] + 1 if row["id"] < 350 else row["id"] + 2
        assert row["seq"] == seq and row["stamped"] is True
        assert msg_id == f"copied:{stream_in}:{seq}"
    info = nats_client.consumer_info(stream_in, "rt")
    assert info.num_ack_pending == 0 and info.num_redelivered == 0
    assert info.config.ack_wait == 30 and info.config.max_ack_pending == 10_000  # stateless defaults: max(8 x batch, 10k)
    (letter,) = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert letter["position"] == f"{prefix}.in.x#351" and letter["reason"] == "decode"


def _events(n: int, seed: int) -> list[dict]:
    """Sensor readings over ~n/10 s of event time, shuffled within 3 s (out of order)."""
    rng = random.Random(seed)
    rows = [
        {"sensor": f"s{rng.randrange(5)}", "ts": (T0 + timedelta(milliseconds=100 * i + rng.randrange(3000))).isoformat(),
         "temp": round(rng.uniform(10, 40), 2)}
        for i in range(n)
    ]
    return rows


def _window_pipeline(url: str, durable: str, stream_in: str, stream_out: str) -> str:
    return f"""
        CREATE SOURCE readings (sensor VARCHAR, ts TIMESTAMP, temp DOUBLE,
                                WATERMARK FOR ts AS ts - INTERVAL '3' SECOND)
        WITH (connector = 'nats', url = '{url}', stream = '{stream_in}', durable = '{durable}', max_future = 'off');
        CREATE SINK per_window AS
          SELECT window_start, window_end, sensor, count(*) AS n, max(temp) AS hottest
          FROM TUMBLE(readings, ts, INTERVAL '10' SECOND)
          GROUP BY window_start, window_end, sensor
        WITH (connector = 'nats', url = '{url}', subject = 'win.out', stream = '{stream_out}');
    """


def _expected_windows(tmp_path, rows, upto: datetime) -> list[tuple]:
    path = tmp_path / "window_input.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return duckdb.sql(
        f"""SELECT time_bucket(INTERVAL 10 SECOND, ts::TIMESTAMP) AS ws, sensor, count(*) AS n, max(temp)
            FROM read_json('{path}') GROUP BY ALL
            HAVING ws + INTERVAL 10 SECOND <= TIMESTAMP '{upto.isoformat()}' ORDER BY ws, sensor"""
    ).fetchall()


def test_windows_hold_acks_until_emitted_and_a_restart_resumes_without_loss(tmp_path, nats_server, nats_client):
    nats_client.add_stream("WIN_IN", ["win.in"])
    nats_client.add_stream("WIN_OUT", ["win.out"])
    rows = _events(900, seed=3)  # ~90 s of event time
    payloads = [json.dumps(r).encode() for r in rows]
    nats_client.js_publish("win.in", payloads[:500])

    # run 1: a graceful stop while windows are open: their messages must stay unacked
    first = _session(tmp_path / "one", batch_size="50")
    first.execute(_window_pipeline(nats_server.url, "win", "WIN_IN", "WIN_OUT"))
    run = BackgroundRun(first)
    reader = run.driver.sources[0].reader
    wait_until(lambda: reader.taken == 500 and not reader.buffer, what="run 1 to read everything")
    info = nats_client.consumer_info("WIN_IN", "win")
    assert info.config.ack_wait == 2 * (10 + 3) + 30 and info.config.max_ack_pending == -1  # derived from the window
    run.stop()
    info = nats_client.consumer_info("WIN_IN", "win")
    assert 0 < info.num_ack_pending < 500  # the open windows' messages were not acked
    assert 0 < info.ack_floor.stream_seq < 500

    # run 2: same durable; the unacked messages come back first, then the rest
    nats_client.js_publish("win.in", payloads[500:])
    second = _session(tmp_path / "two", batch_size="64")
    second.execute(_window_pipeline(nats_server.url, "win", "WIN_IN", "WIN_OUT"))
    run = BackgroundRun(second)
    assert run.driver.sources[0].reader.consumer_reset_to == info.ack_floor.stream_seq + 1
    max_ts = max(datetime.fromisoformat(r["ts"]) for r in rows)
    watermark = max_ts - timedelta(seconds=3)
    expected = _expected_windows(tmp_path, rows, watermark)
    wait_until(lambda: len({i for i, _ in _stored(nats_client, "WIN_OUT")}) >= len(expected), timeout=30,
               what="every closed window in WIN_OUT")
    run.stop()

    stored = _stored(nats_client, "WIN_OUT")
    ids = [i for i, _ in stored]
    assert len(ids) == len(set(ids)), "a window result was stored twice"
    got = sorted(
        (datetime.fromisoformat(r["window_start"]), r["sensor"], r["n"], r["hottest"]) for _, r in stored
    )
    assert got == [tuple(e) for e in expected]
    for msg_id, row in stored:
        start, end = (int(datetime.fromisoformat(row[c]).replace(tzinfo=timezone.utc).timestamp() * 1e6)
                      for c in ("window_start", "window_end"))
        assert msg_id == f"per_window:{start}:{end}:{row['sensor']}"


def test_redeliveries_of_messages_still_held_are_dropped_not_counted_twice(tmp_path, nats_server, nats_client):
    """A stalled pipeline sends no progress acks, so the server redelivers (ack_wait
    1s) messages an open window still holds; those copies must not count twice."""
    nats_client.add_stream("REDELIVER_IN", ["redeliver.in"])
    nats_client.add_stream("REDELIVER_OUT", ["redeliver.out"])
    calls, stalled, release = [0], threading.Event(), threading.Event()

    @udf(args=[pa.int64()], returns=pa.int64())
    def gate(ids):
        calls[0] += 1
        if calls[0] == 2:  # the second batch stalls the pipeline
            stalled.set()
            release.wait(30)
        return ids

    session = _session(tmp_path, batch_size="10")
    session.register_udf(gate)
    session.execute(f"""
        CREATE SOURCE r (id BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
        WITH (connector = 'nats', url = '{nats_server.url}', stream = 'REDELIVER_IN', durable = 'held',
              ack_wait = '1s', max_future = 'off');
        CREATE SINK hourly AS
          SELECT window_start, count(*) AS n, sum(id) AS total
          FROM TUMBLE(r, ts, INTERVAL '1' HOUR) WHERE gate(id) >= 0 GROUP BY window_start, window_end
        WITH (connector = 'nats', url = '{nats_server.url}', subject = 'redeliver.out', stream = 'REDELIVER_OUT');
    """)
    run = BackgroundRun(session)
    reader = run.driver.sources[0].reader

    def publish(ids, hour=0):
        nats_client.js_publish("redeliver.in", [
            json.dumps({"id": i, "ts": (T0 + timedelta(hours=hour, seconds=i)).isoformat()}).encode() for i in ids
        ])

    publish(range(10))
    wait_until(lambda: calls[0] == 1 and not reader.buffer, what="the first batch")
    publish(range(10, 20))
    assert stalled.wait(10)
    wait_until(lambda: nats_client.consumer_info("REDELIVER_IN", "held").num_redelivered >= 20, timeout=15,
               what="the server to redeliver the held messages")
    release.set()
    publish([100], hour=2)  # closes hour 0
    wait_until(lambda: nats_client.run(nats_client.js.stream_info("REDELIVER_OUT")).state.messages == 1,
               what="the hour-0 result")
    run.stop()
    (result,) = [row for _, row in _stored(nats_client, "REDELIVER_OUT")]
    assert (result["n"], result["total"]) == (20, sum(range(20)))
    assert reader.duplicates_dropped >= 20
    assert reader.status()["redelivered"] >= 20


def test_messages_held_by_an_open_window_are_kept_alive_not_redelivered(tmp_path, nats_server, nats_client):
    nats_client.add_stream("ALIVE_IN", ["alive.in"])
    session = _session(tmp_path, batch_size="5")
    session.execute(f"""
        CREATE SOURCE r (id BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
        WITH (connector = 'nats', url = '{nats_server.url}', stream = 'ALIVE_IN', durable = 'alive',
              ack_wait = '600ms', max_future = 'off');
        CREATE SINK daily AS SELECT window_start, count(*) AS n FROM TUMBLE(r, ts, INTERVAL '1' DAY)
          GROUP BY window_start, window_end WITH (connector = 'stdout');
    """)
    run = BackgroundRun(session)
    reader = run.driver.sources[0].reader
    nats_client.js_publish("alive.in", [json.dumps({"id": i, "ts": T0.isoformat()}).encode() for i in range(10)])
    # three rounds of progress acks span more than ack_wait
    wait_until(lambda: reader.progress_acks >= 30, what="progress acks for the held messages")
    info = nats_client.consumer_info("ALIVE_IN", "alive")
    run.stop()
    assert info.num_redelivered == 0 and info.num_ack_pending == 10
    assert reader.status()["held"] == 10
