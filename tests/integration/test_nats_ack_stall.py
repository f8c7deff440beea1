"""When a JetStream source's acks stop advancing, the run says so — once per stall,
with the reason — instead of stalling in silence (threshold max(30 s, ack_wait / 2),
shortened here through STALL_MIN_S and a 1 s ack_wait)."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta

import pytest
from conftest import BackgroundRun, wait_until

from sqlstream import Session

pytestmark = pytest.mark.nats

T0 = datetime(2024, 1, 1)


@pytest.fixture(autouse=True)
def short_threshold(monkeypatch):
    monkeypatch.setattr("sqlstream.connectors.nats.jetstream.STALL_MIN_S", 0.2)  # with ack_wait 1s: 0.5s


def _stall_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "acks have not advanced" in r.getMessage()]


def _session(tmp_path) -> Session:
    return Session(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"),
                   settings={"batch_size": "10"})


def test_a_sink_that_holds_durable_rows_back_and_max_ack_pending_are_named_once(tmp_path, nats_server, nats_client,
                                                                             caplog):
    """Parquet parts are committed every 1M rows: until then no input can be acked, and
    at max_ack_pending (50) the server stops delivering."""
    caplog.set_level(logging.WARNING, logger="sqlstream.nats")
    nats_client.add_stream("STALL_SINK", ["stall.sink"])
    nats_client.js_publish("stall.sink", [json.dumps({"id": i}).encode() for i in range(200)])
    session = _session(tmp_path)
    session.execute(f"""
        CREATE SOURCE r (id BIGINT) WITH (connector = 'nats', url = '{nats_server.url}', stream = 'STALL_SINK',
                                          durable = 'stall', ack_wait = '1s', max_ack_pending = 50);
        CREATE SINK parts AS SELECT id FROM r
        WITH (connector = 'file', path = '{tmp_path / "parts"}', format = 'parquet', rows_per_file = 1000000);
    """)
    run = BackgroundRun(session)
    reader = run.driver.sources[0].reader
    wait_until(lambda: reader.status()["ack_stalls"] == 1, what="the stall warning")
    rounds = reader.progress_acks
    wait_until(lambda: reader.progress_acks >= rounds + 150, what="three more rounds of progress acks (> 1 s)")
    summary = run.stop()
    (warning,) = _stall_warnings(caplog)  # said once, not every poll
    assert warning.startswith("source 'r': acks have not advanced for ")
    assert "(50 messages delivered and not acked)" in warning
    assert "sink 'parts' has made 0 of 50 rows durable" in warning
    assert "max_ack_pending (50) is reached: the server delivers no more messages until some are acked" in warning
    assert reader.status()["ack_stalls"] == 1
    assert "acks stalled 1x for over 0.5s (see the warnings)" in summary.line()


def test_an_open_window_holding_its_input_is_named(tmp_path, nats_server, nats_client, caplog):
    caplog.set_level(logging.WARNING, logger="sqlstream.nats")
    nats_client.add_stream("STALL_WIN", ["stall.win"])
    session = _session(tmp_path)
    session.execute(f"""
        CREATE SOURCE r (id BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
        WITH (connector = 'nats', url = '{nats_server.url}', stream = 'STALL_WIN', durable = 'win',
              ack_wait = '1s', max_future = 'off');
        CREATE SINK daily AS SELECT window_start, count(*) AS n FROM TUMBLE(r, ts, INTERVAL '1' DAY)
          GROUP BY window_start, window_end WITH (connector = 'file', path = '{tmp_path / "out.jsonl"}', format = 'json');
    """)
    run = BackgroundRun(session)
    reader = run.driver.sources[0].reader
    nats_client.js_publish("stall.win", [
        json.dumps({"id": i, "ts": (T0 + timedelta(minutes=i)).isoformat()}).encode() for i in range(20)
    ])
    wait_until(lambda: reader.status()["ack_stalls"] == 1, what="the stall warning")
    run.stop()
    (warning,) = _stall_warnings(caplog)
    assert "a window or join still holds rows (event time from 2024-01-01 00:00:00); " \
           "their input is acked when the results are emitted" in warning
    assert "max_ack_pending" not in warning  # no limit with windows


def test_steady_acks_do_not_warn(tmp_path, nats_server, nats_client, caplog):
    caplog.set_level(logging.WARNING, logger="sqlstream.nats")
    nats_client.add_stream("STALL_NONE", ["stall.none"])
    session = _session(tmp_path)
    session.execute(f"""
        CREATE SOURCE r (id BIGINT) WITH (connector = 'nats', url = '{nats_server.url}', stream = 'STALL_NONE',
                                          durable = 'none', ack_wait = '1s');
        CREATE SINK copied AS SELECT id FROM r WITH (connector = 'file', path = '{tmp_path / "o.jsonl"}', format = 'json');
    """)
    run = BackgroundRun(session)
    for chunk in range(3):
        nats_client.js_publish("stall.none", [json.dumps({"id": i}).encode() for i in range(chunk * 50, chunk * 50 + 50)])
        wait_until(lambda c=chunk: nats_client.consumer_info("STALL_NONE", "none").ack_floor.stream_seq == 50 * (c + 1),
                   what="the chunk acked")
    run.stop()
    assert _stall_warnings(caplog) == []
