"""HTTP ingest throughput: rows/s POSTed through a ``connector = 'http'`` source vs the
same client posting to a bare stdlib server that only reads the body and answers.

``--clients`` threads (default 8) each hold one keep-alive ``http.client`` connection
and POST ``--requests`` bodies (default 200) of ``--rows`` JSON lines each (default
1,000; 4 columns). The pipeline is ``SELECT * FROM ev`` into a sink that counts rows
and drops them; every run checks the count. Measured, in the same run:

* **bare**: a ``ThreadingHTTPServer`` that reads each body and answers 200 (the
  ceiling: HTTP and the client alone);
* **accepted**: sqlstream, answered once the rows are decoded and handed to the driver;
* **durable**: sqlstream, answered on the batch's ack (every sink holds the rows).

    python benchmarks/http_ingest.py
    python benchmarks/http_ingest.py --rows 100 --requests 500   # small bodies
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa

from sqlstream import Session
from sqlstream.connectors import SinkConnector, SinkWriter, register_sink


class _Count(SinkWriter):
    def write(self, batch: pa.RecordBatch) -> None:
        CountSink.rows += batch.num_rows


@register_sink
class CountSink(SinkConnector):
    """``connector = 'count'``: counts the rows and keeps none."""

    name = "count"
    rows = 0

    def open(self, schema, ctx) -> SinkWriter:
        return _Count()


class _Bare(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as the http source does: no delayed-ACK stalls

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        data = json.dumps({"accepted": body.count(b"\n"), "dead_letters": 0, "errors": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _bodies(clients: int, requests: int, rows: int) -> list[bytes]:
    line = b'{"id": %d, "sensor": "s-%d", "temp": %d.25, "ok": true}\n'
    return [b"".join(line % (i, i % 100, i % 40) for i in range(r * rows, (r + 1) * rows)) for r in range(clients)]


def _post_all(port: int, clients: int, requests: int, bodies: list[bytes]) -> tuple[float, list[float]]:
    latencies: list[float] = []

    def client(c: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        for _ in range(requests):
            t0 = time.perf_counter()
            conn.request("POST", "/in", body=bodies[c], headers={"Content-Type": "application/x-ndjson"})
            response = conn.getresponse()
            response.read()
            assert response.status == 200, response.status
            mine.append(time.perf_counter() - t0)
        conn.close()
        latencies.extend(mine)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return time.perf_counter() - start, latencies


def bare(args, bodies) -> tuple[float, list[float]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Bare)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        return _post_all(server.server_address[1], args.clients, args.requests, bodies)
    finally:
        server.shutdown()
        server.server_close()


def sqlstream(args, bodies, respond: str) -> tuple[float, list[float]]:
    CountSink.rows = 0
    session = Session(settings={"batch_timeout": "1ms"})
    session.execute(f"""
        CREATE SOURCE ev (id BIGINT, sensor VARCHAR, temp DOUBLE, ok BOOLEAN)
        WITH (connector = 'http', listen = '127.0.0.1:0', path = '/in', respond = '{respond}');
        CREATE SINK out AS SELECT * FROM ev WITH (connector = 'count');
    """)
    driver = session.build(session.pending_sinks())
    thread = threading.Thread(target=driver.run, daemon=True)
    thread.start()
    try:
        return _post_all(driver.sources[0].reader.port, args.clients, args.requests, bodies)
    finally:
        driver.stop()
        thread.join(30)
        expected = args.clients * args.requests * args.rows
        assert CountSink.rows == expected, (CountSink.rows, expected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200, help="bodies per client")
    parser.add_argument("--rows", type=int, default=1000, help="rows per body")
    args = parser.parse_args()
    bodies = _bodies(args.clients, args.requests, args.rows)
    total = args.clients * args.requests * args.rows
    size = sum(map(len, bodies)) / len(bodies)
    print(f"{args.clients} clients x {args.requests} POSTs x {args.rows} rows ({size / 1024:.0f} KiB a body), "
          f"python {sys.version.split()[0]}")
    baseline = None
    for name, run in (("bare stdlib server", lambda: bare(args, bodies)),
                      ("sqlstream respond=accepted", lambda: sqlstream(args, bodies, "accepted")),
                      ("sqlstream respond=durable", lambda: sqlstream(args, bodies, "durable"))):
        elapsed, latencies = run()
        rate = total / elapsed
        baseline = baseline or rate
        latencies.sort()
        print(f"{name:28s} {rate:12,.0f} rows/s  {args.clients * args.requests / elapsed:8,.0f} req/s  "
              f"p50 {statistics.median(latencies) * 1e3:6.2f} ms  p99 {latencies[int(len(latencies) * 0.99)] * 1e3:6.2f} ms"
              f"  ({rate / baseline:.2f}x bare)")


if __name__ == "__main__":
    main()
