"""What a core NATS outage reports: the messages published during it are lost and the
server keeps no record of them, so the run says so in words (on stderr at reconnect and
in the summary) and gives the counts that are known: pending-limit drops, messages kept."""

from __future__ import annotations

import json
import logging

import pytest
from conftest import BackgroundRun, NatsClient, wait_until

from sqlstream import Session

pytestmark = pytest.mark.nats


def test_a_core_outage_says_what_was_lost_and_what_is_known(tmp_path, own_nats_server, caplog):
    caplog.set_level(logging.WARNING, logger="sqlstream.nats")
    session = Session(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"),
                      settings={"batch_size": "10"})
    out = tmp_path / "out.jsonl"
    session.execute(f"""
        CREATE SOURCE ticks (id BIGINT) WITH (connector = 'nats', url = '{own_nats_server.url}', subject = 'ticks.>');
        CREATE SINK kept AS SELECT id FROM ticks WITH (connector = 'file', path = '{out}', format = 'json');
    """)
    run = BackgroundRun(session)
    reader = run.driver.sources[0].reader
    client = NatsClient(own_nats_server.url)
    try:
        client.publish("ticks.a", [json.dumps({"id": i}).encode() for i in range(30)])
        wait_until(lambda: reader.taken == 30, what="the first 30")
        own_nats_server.restart()
        wait_until(lambda: reader.conn.events.reconnects and client.nc.is_connected, what="the reconnects")
        client.run(client.nc.flush())
        client.publish("ticks.a", [json.dumps({"id": i}).encode() for i in range(30, 40)])
        wait_until(lambda: reader.taken == 40, what="the 10 after the outage")
    finally:
        client.close()
    summary = run.stop()
    (warning,) = [r.getMessage() for r in caplog.records if "during the outage" in r.getMessage()]
    assert warning.startswith("source 'ticks': core NATS messages published to 'ticks.>' during the outage (")
    assert warning.endswith("are lost; how many cannot be known: the server keeps no record of them (a JetStream "
                            "stream on the subject would). Counted: 0 messages dropped by the pending limits so far, "
                            "30 received messages kept")
    assert ("disconnected 1x for " in summary.line()
            and "s: core NATS messages published meanwhile were lost (how many cannot be known)" in summary.line())
    assert len(out.read_text().splitlines()) == 40
