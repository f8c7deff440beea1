"""Crashes and outages with JetStream: ``sqlstream run`` killed with SIGKILL and
restarted, the nats-server restarted under a running pipeline, and a full replay
of the input. Every published message must reach the sink stream, each id stored
exactly once (the sink's Nats-Msg-Id + the stream's duplicate window)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import BackgroundRun, NatsClient, wait_until

from sqlstream import Session

pytestmark = pytest.mark.nats


def _pipeline(url: str, stream_in: str, stream_out: str, durable: str, extra_source: str = "", extra_sink: str = "") -> str:
    return f"""
        SET batch_size = 100;
        CREATE SOURCE src (id BIGINT) WITH (connector = 'nats', url = '{url}', stream = '{stream_in}',
                                            durable = '{durable}'{extra_source});
        CREATE SINK dst AS SELECT id, id * 2 AS twice FROM src
        WITH (connector = 'nats', url = '{url}', subject = '{stream_out.lower()}.out', stream = '{stream_out}'{extra_sink});
    """


def _out_count(client: NatsClient, stream: str) -> int:
    return client.run(client.js.stream_info(stream)).state.messages


def _check_exactly_once(client: NatsClient, stream: str, n: int) -> None:
    stored = client.stream_messages(stream)
    ids = [m.headers["Nats-Msg-Id"] for m in stored]
    values = sorted(json.loads(m.data)["id"] for m in stored)
    assert values == list(range(n)), "every published message reaches the sink stream, once"
    assert len(ids) == len(set(ids)) == n


def _start(path, log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sqlstream.cli.main", "run", str(path)],
                            stdout=subprocess.DEVNULL, stderr=log)


def test_sigkill_and_restart_loses_nothing_and_stores_each_id_once(tmp_path, durable_nats_server):
    client = NatsClient(durable_nats_server.url)
    try:
        client.add_stream("KILL_IN", ["kill.in"])
        client.add_stream("KILL_OUT", ["kill_out.out"])
        n = 1500  # with sync_interval: always every stored row is an fsync: ~1k rows/s here
        client.js_publish("kill.in", [json.dumps({"id": i}).encode() for i in range(n)])
        path = tmp_path / "pipeline.sql"
        path.write_text(_pipeline(durable_nats_server.url, "KILL_IN", "KILL_OUT", "killer"))
        with open(tmp_path / "run.log", "wb") as log:
            first = _start(path, log)
            wait_until(lambda: _out_count(client, "KILL_OUT") >= n // 3 or first.poll() is not None, timeout=60,
                       what="the first run to be mid-stream")
            assert first.poll() is None, (tmp_path / "run.log").read_text()
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
            at_kill = _out_count(client, "KILL_OUT")
            floor = client.consumer_info("KILL_IN", "killer").ack_floor.stream_seq
            assert floor < n and at_kill < n, "the kill must land mid-stream"
            assert floor <= at_kill  # acks never run ahead of what the sink stored

            second = _start(path, log)
            wait_until(lambda: _out_count(client, "KILL_OUT") >= n or second.poll() is not None, timeout=90,
                       what="the restarted run to catch up")
            wait_until(lambda: client.consumer_info("KILL_IN", "killer").ack_floor.stream_seq == n, timeout=30,
                       what="every input message acked")
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 143, (tmp_path / "run.log").read_text()  # stopped by SIGTERM (drained)
        _check_exactly_once(client, "KILL_OUT", n)
    finally:
        client.close()


def test_a_full_replay_is_dropped_by_the_duplicate_window(tmp_path, nats_server, nats_client):
    nats_client.add_stream("REPLAY_IN", ["replay.in"])
    nats_client.add_stream("REPLAY_OUT", ["replay_out.out"])
    n = 500
    nats_client.js_publish("replay.in", [json.dumps({"id": i}).encode() for i in range(n)])
    for attempt in range(2):  # the second run reads everything again through a new consumer
        session = Session(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"))
        session.execute(_pipeline(nats_server.url, "REPLAY_IN", "REPLAY_OUT", f"replay{attempt}"))
        run = BackgroundRun(session)
        durable = f"replay{attempt}"
        wait_until(lambda d=durable: nats_client.consumer_info("REPLAY_IN", d).ack_floor.stream_seq == n,
                   what="the run to ack everything")
        run.stop()
        writer = run.driver.sinks[0].writer
        assert writer.status()["published"] == n
        assert writer.status()["duplicates"] == (n if attempt else 0)
    _check_exactly_once(nats_client, "REPLAY_OUT", n)


def test_jetstream_pipeline_recovers_from_a_server_restart(tmp_path, durable_nats_server):
    client = NatsClient(durable_nats_server.url)
    try:
        client.add_stream("OUTAGE_IN", ["outage.in"])
        client.add_stream("OUTAGE_OUT", ["outage_out.out"])
        session = Session(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"))
        session.execute(_pipeline(durable_nats_server.url, "OUTAGE_IN", "OUTAGE_OUT", "outage",
                                  extra_source=", ack_wait = '2s'", extra_sink=", ack_timeout = '1s'"))
        run = BackgroundRun(session)
        client.js_publish("outage.in", [json.dumps({"id": i}).encode() for i in range(300)])
        wait_until(lambda: _out_count(client, "OUTAGE_OUT") >= 100, what="some output before the outage")
        durable_nats_server.restart()
        wait_until(lambda: client.nc.is_connected and run.driver.sources[0].reader.conn.events.reconnects,
                   what="the reconnects")
        client.js_publish("outage.in", [json.dumps({"id": i}).encode() for i in range(300, 600)])
        wait_until(lambda: client.consumer_info("OUTAGE_IN", "outage").ack_floor.stream_seq == 600, timeout=60,
                   what="every input message acked after the outage")
        summary = run.stop()
        assert "disconnected 1x" in summary.line() and "JetStream: no loss" in summary.line()
        _check_exactly_once(client, "OUTAGE_OUT", 600)
    finally:
        client.close()
