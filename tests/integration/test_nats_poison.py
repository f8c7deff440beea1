"""Crash-loop guard: a poison message on JetStream becomes one dead letter and is
acked, so the pipeline gets past it on the first run and a restart never sees it again.

Add a kind of poison to ``POISON`` (payload bytes, expected dead-letter reason)."""

from __future__ import annotations

import json

import pytest
from conftest import BackgroundRun, wait_until

from sqlstream import Session

pytestmark = pytest.mark.nats

#: payloads that must each become exactly one dead letter, with this reason, for the
#: source (id BIGINT NOT NULL, name VARCHAR, v DOUBLE)
POISON = [
    pytest.param(b'{"id": 7, "name": "x", "v": 1.0', "decode", id="malformed-json"),
    pytest.param(b"not json at all", "decode", id="not-json"),
    pytest.param(b'{"id": 7, "name": "x", "v": "high"}', "type", id="wrong-type"),
    pytest.param(b'{"id": "seven", "name": "x", "v": 1.0}', "type", id="wrong-type-key"),
    pytest.param(b'{"name": "x", "v": 1.0}', "null", id="not-null-missing"),
    pytest.param(b'{"id": null, "name": "x", "v": 1.0}', "null", id="not-null-null"),
    pytest.param(b'{"id": 7, "name": "caf\xe9", "v": 1.0}', "decode", id="invalid-utf8"),
    pytest.param(b'{"id": 7, "v": 1.0} {"id": 8, "v": 2.0}', "decode", id="two-objects"),
    pytest.param(b'{"Id": 7, "ID": 8}', "decode", id="key-spelled-twice"),
    pytest.param(b'{"id": 7, "x": ' + b"[" * 3000 + b"]" * 3000 + b', "Name": "y", "NAME": "z"}', "decode",
                 id="deep-and-spelled-twice"),
    pytest.param(b"   ", "decode", id="blank"),
]


def _run(tmp_path, url: str, stream: str, name: str) -> BackgroundRun:
    session = Session(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"),
                      settings={"batch_size": "4"})
    session.execute(f"""
        CREATE SOURCE readings (id BIGINT NOT NULL, name VARCHAR, v DOUBLE)
        WITH (connector = 'nats', url = '{url}', stream = '{stream}', durable = 'guard');
        CREATE SINK good AS SELECT id, name, v FROM readings
        WITH (connector = 'file', path = '{tmp_path / name}', format = 'json');
    """)
    return BackgroundRun(session)


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("payload, reason", POISON)
def test_a_poison_message_is_dead_lettered_once_and_acked(tmp_path, nats_server, nats_client, payload, reason, request):
    stream = "POISON_" + request.node.callspec.id.upper().replace("-", "_")
    subject = stream.lower()
    nats_client.add_stream(stream, [subject])
    good = [json.dumps({"id": i, "name": f"n{i}", "v": i / 2}).encode() for i in range(10)]
    nats_client.js_publish(subject, good[:5] + [payload] + good[5:])  # the poison is stream sequence 6

    first = _run(tmp_path, nats_server.url, stream, "first.jsonl")
    wait_until(lambda: nats_client.consumer_info(stream, "guard").ack_floor.stream_seq == 11,
               what="the ack floor past the poison message")
    assert first.thread.is_alive(), "the pipeline keeps running past the poison message"
    first.stop()
    assert sorted(r["id"] for r in _lines(tmp_path / "first.jsonl")) == list(range(10))
    (letter,) = _lines(tmp_path / "dead.jsonl")
    assert (letter["reason"], letter["source"], letter["position"]) == (reason, "readings", f"{subject}#6")
    assert letter["raw"] == payload.decode("utf-8", "backslashreplace")  # invalid UTF-8 shown as \xNN
    info = nats_client.consumer_info(stream, "guard")
    assert info.num_ack_pending == 0 and info.num_redelivered == 0

    second = _run(tmp_path, nats_server.url, stream, "second.jsonl")
    nats_client.js_publish(subject, [json.dumps({"id": 100, "name": "after", "v": 0.0}).encode()])
    wait_until(lambda: nats_client.consumer_info(stream, "guard").ack_floor.stream_seq == 12,
               what="the second run to ack the new message")
    second.stop()
    assert [r["id"] for r in _lines(tmp_path / "second.jsonl")] == [100], "the second run reads only the new message"
    assert len(_lines(tmp_path / "dead.jsonl")) == 1, "the poison message is not seen again"
    assert second.driver.sources[0].reader.taken == 1
