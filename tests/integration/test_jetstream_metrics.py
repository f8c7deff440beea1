"""``/metrics`` of a run reading JetStream (a real nats-server): rows, bytes, acks,
ack pending and the consumer's pending count from the reader's ``status()``."""

from __future__ import annotations

import json
import textwrap

from prometheus_client.parser import text_string_to_metric_families

from tests.observability.conftest import Running, get, wait_for


def _samples(url: str) -> dict[tuple[str, tuple], float]:
    status, text = get(f"{url}/metrics")
    assert status == 200
    return {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "pipeline"))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_jetstream_reader_counters_are_metrics(tmp_path, nats_server, nats_client):
    nats_client.add_stream("METRICS_IN", ["metrics.in"])
    payloads = [json.dumps({"id": i}).encode() for i in range(250)]
    nats_client.js_publish("metrics.in", payloads)
    (tmp_path / "p.sql").write_text(textwrap.dedent(f"""
        SET batch_size = 100;
        CREATE SOURCE src (id BIGINT) WITH (connector = 'nats', url = '{nats_server.url}', stream = 'METRICS_IN',
                                            durable = 'metrics');
        CREATE SINK out AS SELECT id FROM src WITH (connector = 'file', path = 'out.jsonl', format = 'json',
                                                     mode = 'append');
    """))
    run = Running(tmp_path, ["p.sql", "--http", "127.0.0.1:0", "--set", "batch_timeout=10ms"])
    try:
        src = (("source", "src"),)
        m = wait_for(lambda: (s := _samples(run.url)).get(("sqlstream_source_rows_total", src)) == 250
                     and s.get(("sqlstream_source_acked_messages_total", src)) == 250 and s,
                     "every message read and the committed ones acknowledged")
        assert m[("sqlstream_source_bytes_total", src)] == sum(map(len, payloads))
        assert m[("sqlstream_source_pending_messages", src)] == 0  # the server has nothing more for the consumer
        assert m[("sqlstream_source_ack_pending_messages", src)] == 0  # all written, so all acknowledged
        assert m[("sqlstream_source_reconnects_total", src)] == 0
        assert m[("sqlstream_source_slow_consumer_drops_total", src)] == 0
        assert m[("sqlstream_source_redelivered_messages_total", src)] == 0
    finally:
        code, stderr = run.stop()
    assert code == 143, stderr
