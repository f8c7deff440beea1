"""The http webhook source against a real HTTP client (http.client, threads for load)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pytest
from conftest import BackgroundRun, wait_until

from sqlstream import Session, udf
from sqlstream.errors import ConnectorError


def _session(tmp_path, **settings) -> Session:
    return Session(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"), settings=settings)


def _dead_letters(tmp_path) -> list[dict]:
    path = tmp_path / "dead.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _sink_rows(tmp_path, name="out.jsonl") -> list[dict]:
    path = tmp_path / name
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class Client:
    """One keep-alive connection, as a webhook client holds it."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str, body: bytes, content_type: str | None = "application/json", method: str = "POST"):
        headers = {"Content-Type": content_type} if content_type else {}
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None, dict(response.getheaders())

    def close(self) -> None:
        self.conn.close()


def _start(tmp_path, options: str = "", columns: str = "id BIGINT, v DOUBLE", select: str = "id, v", **settings):
    session = _session(tmp_path, **settings)
    session.execute(f"""
        CREATE SOURCE ev ({columns}) WITH (connector = 'http', listen = '127.0.0.1:0', path = '/in'{options});
        CREATE SINK out AS SELECT {select} FROM ev WITH (connector = 'file', path = 'out.jsonl', format = 'json');
    """)
    run = BackgroundRun(session)
    return run, run.driver.sources[0].reader


@pytest.mark.parametrize("respond", ["accepted", "durable"])
def test_concurrent_clients_every_row_exactly_once(tmp_path, respond):
    run, reader = _start(tmp_path, f", respond = '{respond}'")
    clients, bodies, rows_per = 8, 25, 200

    def client(c: int) -> int:
        conn, accepted = Client(reader.port), 0
        for b in range(bodies):
            first = (c * bodies + b) * rows_per
            body = b"".join(b'{"id": %d, "v": %d.5}\n' % (i, i % 7) for i in range(first, first + rows_per))
            status, answer, _ = conn.post("/in", body, "application/x-ndjson")
            assert status == 200, answer
            assert answer == {"accepted": rows_per, "dead_letters": 0, "errors": []}
            accepted += answer["accepted"]
        conn.close()
        return accepted

    with ThreadPoolExecutor(clients) as pool:
        accepted = sum(pool.map(client, range(clients)))
    total = clients * bodies * rows_per
    assert accepted == total
    summary = run.stop()
    rows = _sink_rows(tmp_path)
    ids = sorted(r["id"] for r in rows)
    assert ids == list(range(total))  # every row once
    assert sum(r["v"] for r in rows) == pytest.approx(sum(i % 7 + 0.5 for i in range(total)))
    assert summary.sinks["out"] == total


def test_formats_and_content_types(tmp_path):
    run, reader = _start(tmp_path)
    client = Client(reader.port)
    assert client.post("/in", b'[{"id": 1, "v": 1.5}, {"ID": 2}]')[:2] == (200, {"accepted": 2, "dead_letters": 0, "errors": []})
    assert client.post("/in", b"3,4.5\n4,\n", "text/csv; charset=utf-8")[1]["accepted"] == 2
    table = pa.table({"v": [6.5, 7.5], "id": pa.array([5, 6], pa.int32())})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    assert client.post("/in", sink.getvalue().to_pybytes(), "application/vnd.apache.arrow.stream")[1]["accepted"] == 2
    assert client.post("/in", b'{"id": 7, "v": 8}', None)[1]["accepted"] == 1  # no Content-Type: format = 'json'
    client.close()
    run.stop()
    assert sorted((r["id"], r["v"]) for r in _sink_rows(tmp_path)) == [
        (1, 1.5), (2, None), (3, 4.5), (4, None), (5, 6.5), (6, 7.5), (7, 8.0)]


def test_bad_records_are_dead_letters_in_the_response_and_the_output(tmp_path):
    run, reader = _start(tmp_path)
    client = Client(reader.port)
    status, answer, _ = client.post("/in", b'{"id": 1, "v": 2}\n{"id": "x", "v": 1}\n\n{"id": 3\n{"id": 4, "v": 0}\n')
    assert status == 200
    assert answer["accepted"] == 2 and answer["dead_letters"] == 2
    assert answer["errors"] == [
        {"reason": "type", "detail": "column 'id': expected a number, got a string", "position": "request 1 line 2"},
        {"reason": "decode", "detail": answer["errors"][1]["detail"], "position": "request 1 line 4"},
    ]
    assert answer["errors"][1]["detail"].startswith("malformed JSON")
    status, answer, _ = client.post("/in", b"5,6\n7,seven\n", "text/csv")
    assert answer["errors"] == [
        {"reason": "type", "detail": "column 'v': invalid value 'seven' for double", "position": "request 2 line 2"}]
    client.close()
    run.stop()
    assert sorted(r["id"] for r in _sink_rows(tmp_path)) == [1, 4, 5]
    dead = _dead_letters(tmp_path)
    assert [(d["reason"], d["raw"], d["position"]) for d in dead] == [
        ("type", '{"id": "x", "v": 1}', "request 1 line 2"),
        ("decode", '{"id": 3', "request 1 line 4"),
        ("type", "7,seven", "request 2 line 2"),
    ]


def test_malformed_requests_get_a_4xx_with_the_reason(tmp_path):
    run, reader = _start(tmp_path, ", max_body_size = '1KB'")
    client = Client(reader.port)
    assert client.post("/in", b"hello")[:2] == (400, {
        "error": "not JSON: a body holds JSON objects, one a line, or an array of them (it starts with b'hello')"})
    assert client.post("/in", b"[1, 2")[1]["error"].startswith("not JSON: ")
    assert client.post("/in", b"")[:2] == (400, {"error": "empty body: no records"})
    status, answer, _ = client.post("/in", b"x", "image/png")
    assert status == 415 and answer["error"].startswith("unsupported Content-Type 'image/png' (expected one of: ")
    status, answer, _ = client.post("/in", b"\x00\x01", "application/vnd.apache.arrow.stream")
    assert status == 400 and answer["error"].startswith("not an Arrow IPC stream")
    assert client.post("/other", b"{}")[:2] == (404, {"error": "no endpoint at /other: POST records to /in"})
    status, answer, headers = client.post("/in", b"", method="GET")
    assert (status, answer, headers["Allow"]) == (405, {"error": "method GET not allowed: POST records to /in"}, "POST")
    status, answer, _ = Client(reader.port).post("/in", b'{"id": 1}\n' * 200)
    assert (status, answer) == (413, {"error": "body of 2000 bytes is larger than max_body_size (1000 bytes)"})
    assert client.post("/in", b'{"id": 1}')[1]["accepted"] == 1  # the connection still serves
    client.close()
    summary = run.stop()
    assert summary.sinks["out"] == 1 and not _dead_letters(tmp_path)


def test_a_full_queue_answers_429_with_retry_after(tmp_path):
    entered, release = threading.Event(), threading.Event()

    @udf(args=[pa.int64()], returns=pa.int64())
    def gate(ids):
        entered.set()
        release.wait(30)
        return ids

    session = _session(tmp_path)
    session.register_udf(gate)
    session.execute("""
        CREATE SOURCE ev (id BIGINT, pad VARCHAR)
        WITH (connector = 'http', listen = '127.0.0.1:0', path = '/in', max_pending_bytes = '1000B', retry_after = '3s');
        CREATE SINK out AS SELECT gate(id) AS id FROM ev WITH (connector = 'file', path = 'out.jsonl', format = 'json');
    """)
    run = BackgroundRun(session)
    reader = run.driver.sources[0].reader

    def body(i: int) -> bytes:
        return b'{"id": %d, "pad": "%s"}\n' % (i, b"x" * (200 - len(b'{"id": %d, "pad": ""}\n' % i)))

    results: list[int] = []
    assert Client(reader.port).post("/in", body(0))[0] == 200  # taken: the pipeline now blocks in gate()
    assert entered.wait(10)
    waiting = [threading.Thread(target=lambda i=i: results.append(Client(reader.port).post("/in", body(i))[0]))
               for i in range(1, 6)]
    for thread in waiting:
        thread.start()
    wait_until(lambda: reader.queue.pending_bytes == 1000, what="five bodies waiting")
    status, answer, headers = Client(reader.port).post("/in", body(6))
    assert (status, answer, headers["Retry-After"]) == (429, {"error": "too many records waiting for the pipeline: retry later"}, "3")
    counters = reader.status()
    assert (counters["responses_429"], counters["queued_requests"], counters["pending_bytes"]) == (1, 5, 1000)
    release.set()
    for thread in waiting:
        thread.join(30)
    assert results == [200] * 5
    assert Client(reader.port).post("/in", body(6))[0] == 200  # room again
    run.stop()
    assert sorted(r["id"] for r in _sink_rows(tmp_path)) == list(range(7))
    assert reader.status()["refused_full"] == 1


def test_request_counters_show_in_show_metrics(tmp_path):
    run, reader = _start(tmp_path)
    run.session.report_on(run.driver)
    client = Client(reader.port)
    assert client.post("/in", b'{"id": 1, "v": 1}\n{"id": 2, "v": 2}\n')[0] == 200
    assert client.post("/in", b'[{"id": 3, "v": 3}]')[0] == 200
    assert client.post("/in", b"hello")[0] == 400
    assert client.post("/nowhere", b"{}")[0] == 404
    assert client.post("/in", b"", method="GET")[0] == 405
    client.close()
    wait_until(lambda: reader.status()["accepted_rows"] == 3, what="3 rows taken")
    metrics = {r["name"]: r["rows"] for r in run.session.execute("SHOW METRICS")[0].table.to_pylist()
               if r["kind"] == "source_status"}
    run.stop()
    assert {k: metrics[f"ev.{k}"] for k in ("requests", "accepted_requests", "accepted_rows", "responses_2xx",
                                           "rejected_4xx", "responses_429", "responses_503", "queued_requests")} == {
        "requests": 5, "accepted_requests": 2, "accepted_rows": 3, "responses_2xx": 2, "rejected_4xx": 3,
        "responses_429": 0, "responses_503": 0, "queued_requests": 0}
    assert metrics["ev.port"] == reader.port and "ev.url" not in metrics  # whole numbers only


def test_graceful_stop_answers_what_was_queued_and_then_refuses(tmp_path):
    entered, release = threading.Event(), threading.Event()

    @udf(args=[pa.int64()], returns=pa.int64())
    def gate(ids):
        entered.set()
        release.wait(30)
        return ids

    session = _session(tmp_path)
    session.register_udf(gate)
    session.execute("""
        CREATE SOURCE ev (id BIGINT) WITH (connector = 'http', listen = '127.0.0.1:0', path = '/in');
        CREATE SINK out AS SELECT gate(id) AS id FROM ev WITH (connector = 'file', path = 'out.jsonl', format = 'json');
    """)
    run = BackgroundRun(session)
    reader = run.driver.sources[0].reader
    port = reader.port
    assert Client(port).post("/in", b'{"id": 0}')[0] == 200
    assert entered.wait(10)
    answers: list = []
    queued = [threading.Thread(target=lambda i=i: answers.append(Client(port).post("/in", b'{"id": %d}' % i)[:2]))
              for i in (1, 2)]
    for thread in queued:
        thread.start()
    wait_until(lambda: len(reader.queue.waiting) == 2, what="two requests queued")
    stopper = threading.Thread(target=run.stop)
    stopper.start()
    wait_until(lambda: run.driver._stop.is_set(), what="the stop to be asked for")  # the driver is blocked in gate()
    release.set()  # the stop drains what was queued: answered 200
    stopper.join(30)
    for thread in queued:
        thread.join(30)
    assert sorted(a[1]["accepted"] for a in answers) == [1, 1] and {a[0] for a in answers} == {200}
    assert sorted(r["id"] for r in _sink_rows(tmp_path)) == [0, 1, 2]
    with pytest.raises(ConnectionRefusedError):  # the port is closed
        Client(port).post("/in", b'{"id": 3}')


def test_port_in_use_is_a_clear_error(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    session = _session(tmp_path)
    session.execute(f"""
        CREATE SOURCE ev (id BIGINT) WITH (connector = 'http', listen = '127.0.0.1:{port}');
        CREATE SINK out AS SELECT id FROM ev WITH (connector = 'file', path = 'out.jsonl', format = 'json');
    """)
    with pytest.raises(ConnectorError, match=rf"source 'ev': cannot listen on 127.0.0.1:{port}: Address already in use"):
        session.build(session.pending_sinks())
    taken.close()


def test_bad_options_are_refused_at_create(tmp_path):
    session = _session(tmp_path)
    with pytest.raises(ConnectorError, match="expected 'host:port'"):
        session.execute("CREATE SOURCE a (id BIGINT) WITH (connector = 'http', listen = '8080')")
    with pytest.raises(ConnectorError, match="must start with '/'"):
        session.execute("CREATE SOURCE b (id BIGINT) WITH (connector = 'http', path = 'in')")
    with pytest.raises(ConnectorError, match="is not a size"):
        session.execute("CREATE SOURCE c (id BIGINT) WITH (connector = 'http', max_body_size = 'big')")
