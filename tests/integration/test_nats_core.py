"""Core NATS source and sink against a real nats-server, checked against DuckDB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import duckdb
import pyarrow as pa
import pytest
from conftest import BackgroundRun, NatsClient, wait_until

from sqlstream import Session, udf

pytestmark = pytest.mark.nats


def _session(tmp_path, **settings) -> Session:
    return Session(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"), settings=settings)


def _dead_letters(tmp_path) -> list[dict]:
    path = tmp_path / "dead.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _readings(n: int) -> list[dict]:
    return [{"id": i, "k": f"k{i % 3}", "v": (i * 7) % 50 - 5.5, "note": None if i % 4 else f"n{i}"} for i in range(n)]


def test_round_trip_matches_duckdb_with_metadata_and_dead_letters(tmp_path, nats_server, nats_client, message_path):
    rows = _readings(600)
    session = _session(tmp_path, batch_size="37", batch_timeout="5ms")
    session.execute(f"""
        CREATE SOURCE readings (id BIGINT, k VARCHAR, v DOUBLE, note VARCHAR,
                                _subject VARCHAR, _headers MAP(VARCHAR, VARCHAR), _received_at TIMESTAMP)
        WITH (connector = 'nats', url = '{nats_server.url}', subject = 'rt.in.>');
        CREATE SINK doubled AS
          SELECT id, k, v * 2 AS d, note, _subject AS subject, _headers AS headers,
                 _received_at IS NOT NULL AS stamped
          FROM readings WHERE v > 0
        WITH (connector = 'nats', url = '{nats_server.url}', subject = 'rt.out.{{k}}');
    """)
    received = nats_client.subscribe("rt.out.>")
    run = BackgroundRun(session)
    payloads = [json.dumps(r).encode() for r in rows]
    bad = [b"{not json", b"", b"[1, 2]", b'{"id": "seven"}']
    headers = [{"h": f"x{i}"} if i % 5 == 0 else None for i in range(len(rows))]
    nats_client.publish("rt.in.a", payloads[:300], headers[:300])
    nats_client.publish("rt.in.bad", bad)
    nats_client.publish("rt.in.b", payloads[300:], headers[300:])
    # DuckDB runs the same query in batch over the very same payloads
    published = tmp_path / "published.jsonl"
    published.write_bytes(b"\n".join(payloads))
    expected = duckdb.sql(
        f"SELECT id, k, v * 2 AS d, note FROM read_json('{published}', format = 'newline_delimited') "
        "WHERE v > 0 ORDER BY id"
    ).fetchall()
    wait_until(lambda: len(received) >= len(expected), what="all results on rt.out.>")
    summary = run.stop()

    results = [json.loads(m.data) for m in received]
    assert sorted((r["id"], r["k"], r["d"], r["note"]) for r in results) == [tuple(e) for e in expected]
    for message, result in zip(received, results, strict=True):
        assert message.subject == f"rt.out.{result['k']}"
        assert result["subject"] == ("rt.in.a" if result["id"] < 300 else "rt.in.b")
        assert result["headers"] == ({"h": f"x{result['id']}"} if result["id"] % 5 == 0 else None)
        assert result["stamped"] is True
    assert summary.sources["readings"]["rows_in"] == len(rows)
    letters = _dead_letters(tmp_path)
    assert sorted(letter["raw"] for letter in letters) == sorted(b.decode() for b in bad)
    by_raw = {letter["raw"]: letter for letter in letters}
    assert by_raw["{not json"]["reason"] == "decode" and by_raw["{not json"]["detail"].startswith("malformed JSON")
    assert by_raw[""]["detail"] == "empty message"
    assert by_raw["[1, 2]"]["detail"] == "expected a JSON object, got list"
    assert by_raw['{"id": "seven"}']["reason"] == "type"
    assert all(letter["position"].startswith("rt.in.bad#") for letter in letters)
    assert sorted(int(letter["position"].split("#")[1]) for letter in letters) == [301, 302, 303, 304]


def test_arrow_payloads_in_and_out(tmp_path, nats_server, nats_client):
    session = _session(tmp_path, batch_size="16")
    session.execute(f"""
        CREATE SOURCE frames (id BIGINT, k VARCHAR, v DOUBLE, _subject VARCHAR)
        WITH (connector = 'nats', url = '{nats_server.url}', subject = 'arrow.in', format = 'arrow');
        CREATE SINK per_key AS SELECT k, id, v FROM frames
        WITH (connector = 'nats', url = '{nats_server.url}', subject = 'arrow.out.{{k}}', format = 'arrow');
    """)
    received = nats_client.subscribe("arrow.out.>")
    run = BackgroundRun(session)
    table = pa.Table.from_pylist(_readings(100)).select(["v", "k", "id"])  # column order differs
    messages = []
    for start in range(0, 100, 30):  # several rows per message
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table.slice(start, 30))
        messages.append(sink.getvalue().to_pybytes())
    nats_client.publish("arrow.in", messages + [b"not arrow at all"])
    wait_until(lambda: sum(pa.ipc.open_stream(m.data).read_all().num_rows for m in list(received)) >= 100,
               what="100 rows of Arrow output")
    run.stop()
    out = pa.concat_tables([pa.ipc.open_stream(m.data).read_all() for m in received])
    assert out.schema.names == ["k", "id", "v"]
    assert sorted(out.to_pylist(), key=lambda r: r["id"]) == sorted(
        table.select(["k", "id", "v"]).to_pylist(), key=lambda r: r["id"]
    )
    for message in received:
        keys = set(pa.ipc.open_stream(message.data).read_all().column("k").to_pylist())
        assert keys == {message.subject.rsplit(".", 1)[1]}
    (letter,) = _dead_letters(tmp_path)
    assert letter["reason"] == "decode" and letter["detail"].startswith("not an Arrow IPC stream")
    assert letter["position"] == "arrow.in#5"


def test_csv_and_raw_payloads(tmp_path, nats_server, nats_client):
    session = _session(tmp_path)
    out = tmp_path / "out.jsonl"
    raw_out = tmp_path / "raw.jsonl"
    session.execute(f"""
        CREATE SOURCE lines (line VARCHAR, _subject VARCHAR)
        WITH (connector = 'nats', url = '{nats_server.url}', subject = 'text.>', format = 'raw');
        CREATE SOURCE records (id BIGINT, name VARCHAR, score DOUBLE)
        WITH (connector = 'nats', url = '{nats_server.url}', subject = 'text.csv', format = 'csv');
        CREATE SINK upper AS SELECT upper(line) AS u, _subject FROM lines
        WITH (connector = 'file', path = '{raw_out}', format = 'json', mode = 'append');
        CREATE SINK scored AS SELECT id, name, score FROM records WHERE score >= 1
        WITH (connector = 'file', path = '{out}', format = 'json', mode = 'append');
    """)
    run = BackgroundRun(session)
    nats_client.publish("text.csv", [b"1,ann,2.5", b"2,bob,0.5", b'3,"c, d",1', b"4,eve,high"])
    nats_client.publish("text.raw", [b"hello", b"w\xc3\xb6rld"])
    wait_until(lambda: out.exists() and len(out.read_text().splitlines()) == 2 and raw_out.exists()
               and len(raw_out.read_text().splitlines()) == 6, what="csv and raw rows")
    run.stop()
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"id": 1, "name": "ann", "score": 2.5}, {"id": 3, "name": "c, d", "score": 1.0}
    ]
    upper = sorted(json.loads(line)["u"] for line in raw_out.read_text().splitlines())
    assert upper == sorted(["1,ANN,2.5", "2,BOB,0.5", '3,"C, D",1', "4,EVE,HIGH", "HELLO", "WÖRLD"])
    (letter,) = _dead_letters(tmp_path)
    assert letter["reason"] == "type" and "'score'" in letter["detail"] and letter["position"] == "text.csv#4"


def test_queue_group_shares_the_subject(tmp_path, nats_server, nats_client):
    runs, paths = [], []
    for worker in ("a", "b"):
        path = tmp_path / f"worker_{worker}.jsonl"
        session = _session(tmp_path / worker, batch_size="10")
        session.execute(f"""
            CREATE SOURCE jobs (id BIGINT) WITH (connector = 'nats', url = '{nats_server.url}',
                                                subject = 'jobs', queue = 'workers');
            CREATE SINK done AS SELECT id FROM jobs WITH (connector = 'file', path = '{path}', format = 'json', mode = 'append');
        """)
        runs.append(BackgroundRun(session))
        paths.append(path)
    nats_client.publish("jobs", [json.dumps({"id": i}).encode() for i in range(400)])

    def ids(path):
        return [json.loads(line)["id"] for line in path.read_text().splitlines()] if path.exists() else []

    wait_until(lambda: sum(len(ids(p)) for p in paths) >= 400, what="400 jobs done")
    for run in runs:
        run.stop()
    a, b = ids(paths[0]), ids(paths[1])
    assert sorted(a + b) == list(range(400))  # every message once, to one of the two
    assert a and b


def test_slow_pipeline_drops_are_counted_and_reported(tmp_path, nats_server, nats_client, caplog):
    entered, release = threading.Event(), threading.Event()

    @udf(args=[pa.int64()], returns=pa.int64())
    def gate(ids):
        entered.set()
        release.wait(30)  # the pipeline stalls here until the test has flooded the subject
        return ids

    session = _session(tmp_path, batch_size="1000", batch_timeout="1ms")
    session.register_udf(gate)
    out = tmp_path / "out.jsonl"
    session.execute(f"""
        CREATE SOURCE flood (id BIGINT) WITH (connector = 'nats', url = '{nats_server.url}', subject = 'flood',
                                              max_pending_messages = 50);
        CREATE SINK kept AS SELECT gate(id) AS id FROM flood WITH (connector = 'file', path = '{out}', format = 'json', mode = 'append');
    """)
    run = BackgroundRun(session)
    nats_client.publish("flood", [b'{"id": 0}'])
    assert entered.wait(10)
    nats_client.publish("flood", [json.dumps({"id": i}).encode() for i in range(1, 501)])
    reader = run.driver.sources[0].reader
    wait_until(lambda: reader.status()["slow_consumer_drops"] + len(reader.buffer) == 500, what="the flood to land")
    release.set()
    wait_until(lambda: out.exists() and len(out.read_text().splitlines()) == 51, what="the kept rows")
    summary = run.stop()
    drops = reader.status()["slow_consumer_drops"]
    assert drops == 450  # 50 buffered; nothing lost without being counted
    assert "450 messages dropped: slow consumer" in summary.line()
    assert any("slow consumer" in r.getMessage() and "max_pending_messages" in r.getMessage() for r in caplog.records)


def test_core_source_and_sink_survive_a_server_restart(tmp_path, own_nats_server):
    session = _session(tmp_path, batch_size="10")
    session.execute(f"""
        CREATE SOURCE ticks (id BIGINT) WITH (connector = 'nats', url = '{own_nats_server.url}', subject = 'ticks');
        CREATE SINK echoed AS SELECT id FROM ticks
        WITH (connector = 'nats', url = '{own_nats_server.url}', subject = 'echo');
    """)
    run = BackgroundRun(session)
    client = NatsClient(own_nats_server.url)
    try:
        received = client.subscribe("echo")
        client.publish("ticks", [json.dumps({"id": i}).encode() for i in range(50)])
        wait_until(lambda: len(received) == 50, what="the first 50")
        own_nats_server.restart()
        reader = run.driver.sources[0].reader
        sink_conn = run.driver.sinks[0].writer.conn
        wait_until(lambda: reader.conn.events.reconnects and sink_conn.events.reconnects and client.nc.is_connected,
                   what="everyone to reconnect")
        client.run(client.nc.flush())  # the test's subscription is re-registered too
        client.publish("ticks", [json.dumps({"id": i}).encode() for i in range(50, 100)])
        wait_until(lambda: len(received) == 100, what="the 50 after the restart")
    finally:
        client.close()
    summary = run.stop()
    assert sorted(json.loads(m.data)["id"] for m in received) == list(range(100))
    assert "disconnected 1x" in summary.line() and "core NATS messages published meanwhile were lost" in summary.line()


def test_produce_publishes_generated_rows(tmp_path, nats_server, nats_client):
    received = nats_client.subscribe("produced.*")
    command = [
        sys.executable, "-m", "sqlstream.cli.main", "produce", "produced.{k}", "--url", nats_server.url,
        "--columns", "id BIGINT, k VARCHAR, temp DOUBLE, ts TIMESTAMP", "--rate", "0", "--count", "120",
        "-o", "fields.id.kind=sequence", "-o", "fields.k.kind=values", "-o", "fields.k.values=a,b",
        "-o", "fields.temp.min=15", "-o", "fields.temp.max=45",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "published: 120 rows out" in result.stderr
    wait_until(lambda: len(received) == 120, what="120 messages")
    rows = [json.loads(m.data) for m in received]
    assert sorted(r["id"] for r in rows) == list(range(120))
    assert all(m.subject == f"produced.{r['k']}" and r["k"] in ("a", "b") and 15 <= r["temp"] <= 45
               for m, r in zip(received, rows, strict=True))

    # through JetStream: the stream is created when missing
    result = subprocess.run(command[:4] + ["js.{k}", "--stream", "PRODUCED"] + command[5:], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "created stream PRODUCED (js.*)" in result.stderr
    stored = nats_client.stream_messages("PRODUCED")
    assert sorted(json.loads(m.data)["id"] for m in stored) == list(range(120))


def test_produce_shows_its_count_and_rate_on_a_terminal(tmp_path, nats_server, nats_client):
    pexpect = pytest.importorskip("pexpect")
    received = nats_client.subscribe("shown.rows")
    child = pexpect.spawn(sys.executable, ["-m", "sqlstream.cli.main", "produce", "shown.rows", "--url", nats_server.url,
                                           "--columns", "id BIGINT", "--rate", "100", "--count", "150"],
                          cwd=str(tmp_path), encoding="utf-8", timeout=60, env=dict(os.environ, TERM="xterm"))
    child.expect(r"published ([1-9][\d,]*) / 150 rows · ([\d,]+)/s")  # counting up (it starts at 0)
    assert int(child.match.group(1).replace(",", "")) <= 150
    child.expect_exact("published: 150 rows out")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    wait_until(lambda: len(received) == 150, what="150 messages")
