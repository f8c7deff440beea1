"""A graceful stop with a core NATS source: messages already received are pushed
through the pipeline into the sinks before it closes (core NATS cannot replay them),
within a deadline; what the deadline leaves is counted and reported, never silent."""

from __future__ import annotations

import json
import threading

import pyarrow as pa
import pytest
from conftest import BackgroundRun, wait_until

from sqlstream import Session, udf

pytestmark = pytest.mark.nats


def _stalled_pipeline(tmp_path, url: str, subject: str):
    """A core NATS source into a file sink whose first batch stalls until released."""
    entered, release = threading.Event(), threading.Event()

    @udf(args=[pa.int64()], returns=pa.int64())
    def gate(ids):
        entered.set()
        release.wait(30)
        return ids

    session = Session(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"),
                      settings={"batch_size": "100", "batch_timeout": "1ms"})
    session.register_udf(gate)
    out = tmp_path / "out.jsonl"
    session.execute(f"""
        CREATE SOURCE burst (id BIGINT) WITH (connector = 'nats', url = '{url}', subject = '{subject}');
        CREATE SINK kept AS SELECT gate(id) AS id FROM burst WITH (connector = 'file', path = '{out}', format = 'json');
    """)
    return session, out, entered, release


def _stop_with_a_burst_buffered(tmp_path, nats_server, nats_client, subject: str, n: int):
    session, out, entered, release = _stalled_pipeline(tmp_path, nats_server.url, subject)
    run = BackgroundRun(session)
    nats_client.publish(subject, [b'{"id": 0}'])
    assert entered.wait(10)
    nats_client.publish(subject, [json.dumps({"id": i}).encode() for i in range(1, n)])
    reader = run.driver.sources[0].reader
    wait_until(lambda: len(reader.buffer) == n - 1, what="the burst in the reader's buffer")
    run.driver.stop()  # while the first batch is still in the pipeline
    release.set()
    summary = run.stop()
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    return summary, ids, reader


def test_a_graceful_stop_drains_received_core_messages_into_the_sinks(tmp_path, nats_server, nats_client,
                                                                     message_path):
    n = 5_000
    summary, ids, reader = _stop_with_a_burst_buffered(tmp_path, nats_server, nats_client,
                                                      f"burst.{message_path}", n)
    assert sorted(ids) == list(range(n)), "every received message reached the sink"
    assert summary.sources["burst"]["rows_in"] == n
    assert "not processed at shutdown" not in summary.line()
    assert reader.status()["lost_at_shutdown"] == 0


def test_what_the_drain_deadline_leaves_is_counted_and_reported(tmp_path, nats_server, nats_client, monkeypatch,
                                                                caplog):
    monkeypatch.setattr("sqlstream.runtime.driver.DRAIN_DEADLINE_S", 0.0)  # no time to drain at all
    summary, ids, reader = _stop_with_a_burst_buffered(tmp_path, nats_server, nats_client, "burst.deadline", 300)
    assert ids == [0]
    assert "burst: 1 rows in (core NATS: 299 received messages not processed at shutdown (deadline 0s))" in summary.line()
    assert reader.status()["lost_at_shutdown"] == 299
    assert any("source 'burst': core NATS: 299 received messages not processed at shutdown" in r.getMessage()
               for r in caplog.records)
