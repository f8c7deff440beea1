"""A graceful stop with a core NATS source: messages already received are pushed
through the pipeline into the sinks before it closes (core NATS cannot replay them),
within a deadline; what the deadline leaves is counted and reported, never silent."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading

import pyarrow as pa
import pytest
from conftest import BackgroundRun, NatsClient, wait_until

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


def test_sigterm_during_a_burst_accounts_for_every_message(tmp_path, nats_server, nats_client):
    """``sqlstream run`` with SIGTERM mid-burst (a real process and signal): every
    message the server delivered is either written by the sink or reported as not
    processed in the summary, none unaccounted."""
    n = 30_000
    out = tmp_path / "out.jsonl"
    pipeline = tmp_path / "burst.sql"
    pipeline.write_text(f"""
        CREATE SOURCE burst (id BIGINT) WITH (connector = 'nats', url = '{nats_server.url}', subject = 'burst.cli');
        CREATE SINK kept AS SELECT id FROM burst WITH (connector = 'file', path = '{out}', format = 'json',
                                                       mode = 'append');  -- rows visible while it runs
    """)
    log = tmp_path / "run.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "sqlstream.cli.main", "run", str(pipeline)],
                                   stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            probe = NatsClient(nats_server.url)
            try:  # the pipeline is subscribed once a probe message comes out of the sink
                wait_until(lambda: probe.publish("burst.cli", [b'{"id": -1}']) or (out.exists() and out.stat().st_size),
                           timeout=30, what="the pipeline to subscribe")
            finally:
                probe.close()
            nats_client.publish("burst.cli", [json.dumps({"id": i}).encode() for i in range(n)])
            # (nats-py's flush can return before the queued publishes reached the server; a
            # second round trip makes sure the server has routed all of them to the pipeline)
            nats_client.run(nats_client.nc.flush())
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) in (0, 143), log.read_text()
        finally:
            if process.poll() is None:
                process.kill()
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    written = sorted(i for i in ids if i >= 0)
    assert written == sorted(set(written)), "no message written twice"
    summary = log.read_text()
    lost = re.search(r"core NATS: ([\d,]+) received messages not processed at shutdown", summary)
    lost = int(lost.group(1).replace(",", "")) if lost else 0
    assert len(written) + lost == n, summary
