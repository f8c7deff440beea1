"""AsyncioBridge and Handoff: a source built on an asyncio client library (asyncio
streams against a TCP server the test starts), the way docs/plugins.md shows.

``TcpLinesSource`` reads integer lines from a TCP server until it closes the
connection; lines that are not integers are dead letters. Its read loop runs on the
bridge's event loop and hands lines over through a bounded Handoff, so a reader that is
not polled stops reading the socket instead of buffering without bound.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from sqlstream import ConnectorError, Session
from sqlstream.connectors import (
    AsyncioBridge,
    DeadLetter,
    Handoff,
    OptionSpec,
    SourceBatch,
    SourceConnector,
    SourceReader,
    register_source,
)
from sqlstream.connectors.base import RunContext
from sqlstream.connectors.options import RawOption
from sqlstream.runtime.clock import WallClock
from sqlstream.testing import check_source_connector

pytestmark = pytest.mark.timeout(60)

SCHEMA = pa.schema([("n", pa.int64())])


# -- the example source (docs/plugins.md shows the same) -----------------------------------------


class TcpLinesReader(SourceReader):
    bounded = True  # the server closing the connection ends the stream

    def __init__(self, connector: "TcpLinesSource", ctx):
        self.source = connector.source_name
        self.batch_size = ctx.batch_size
        self.bridge = AsyncioBridge(f"source '{connector.source_name}'").start()
        self.lines: Handoff[bytes] = Handoff(self.bridge, connector.config["queue_size"])
        self.eof = False
        host, port = connector.config["host"], connector.config["port"]
        try:
            stream, self.writer = self.bridge.call(asyncio.open_connection(host, port), timeout=5)
        except OSError as error:
            self.bridge.close()
            raise ConnectorError(f"source '{self.source}': cannot connect to {host}:{port}: {error}",
                                 exit_code=1) from error
        self.bridge.spawn(self._read(stream))

    async def _read(self, stream: asyncio.StreamReader) -> None:  # on the loop thread
        async for line in stream:
            await self.lines.put(line)  # waits while the hand-off is full: backpressure
        self.eof = True

    def poll(self) -> SourceBatch | None:  # driver thread, never blocks
        self.bridge.raise_failure()  # an error on the loop ends the run here
        lines = self.lines.take(self.batch_size)
        if not lines:
            return None
        text = pc.utf8_trim_whitespace(pa.array(lines, pa.binary()).cast(pa.string()))
        good = pc.match_substring_regex(text, r"^-?[0-9]{1,18}$")
        batch = pa.record_batch([pc.filter(text, good).cast(pa.int64())], schema=SCHEMA)
        dead = [DeadLetter(self.source, "decode", "not an integer", raw)
                for raw in pc.filter(text, pc.invert(good)).to_pylist()]
        return SourceBatch(batch, dead, raw_count=len(lines))

    @property
    def exhausted(self) -> bool:
        return self.eof and not len(self.lines)

    def status(self) -> dict:
        return self.lines.status()

    def close(self) -> None:
        if not self.bridge.closed:
            self.bridge.close(self._close_socket())

    async def _close_socket(self) -> None:
        self.writer.close()


@register_source
class TcpLinesSource(SourceConnector):
    name = "tcp_lines_example"
    options = (
        OptionSpec("host", "string", default="127.0.0.1"),
        OptionSpec("port", "int", required=True),
        OptionSpec("queue_size", "int", default=1000, doc="lines held for the pipeline before reading pauses"),
    )

    def open(self, ctx):
        return TcpLinesReader(self, ctx)


# -- a TCP server that sends a payload to each connection, then closes it -----------------------


class LineServer:
    def __init__(self, payload: bytes):
        self.payload = payload
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sent_all = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.sendall(self.payload)
                except OSError:
                    continue
                self.sent_all.set()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def serve():
    servers: list[LineServer] = []

    def start(payload: bytes) -> LineServer:
        servers.append(LineServer(payload))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _lines(values) -> bytes:
    return "".join(f"{v}\n" for v in values).encode()


def _connector(name: str, **options) -> TcpLinesSource:
    raw = {key: RawOption(value, None) for key, value in {"connector": TcpLinesSource.name, **options}.items()}
    return TcpLinesSource.create(name, SCHEMA, raw, None)


def _context(batch_size: int = 1024) -> RunContext:
    return RunContext(clock=WallClock(), batch_size=batch_size)


def _read_all(reader: TcpLinesReader, deadline_s: float = 20.0) -> tuple[list[int], list[DeadLetter]]:
    values: list[int] = []
    dead: list[DeadLetter] = []
    deadline = time.monotonic() + deadline_s
    while not reader.exhausted:
        assert time.monotonic() < deadline, "the reader did not reach the end"
        result = reader.poll()
        if result is None:
            time.sleep(0.001)
            continue
        values += result.batch.column(0).to_pylist()
        dead += result.dead_letters
    return values, dead


# -- tests -----------------------------------------------------------------------------------------


def test_asyncio_source_conforms(serve):
    good = serve(_lines(range(5000)))
    bad = serve(_lines([1, "x", 2, "3.5"]))
    table = check_source_connector(TcpLinesSource, {"port": good.port, "queue_size": 100}, SCHEMA,
                                   bad_input={"port": bad.port})
    assert table.column("n").to_pylist() == list(range(5000))


def test_asyncio_source_in_a_query(serve):
    server = serve(_lines(range(1, 101)))
    session = Session()
    session.execute(f"CREATE SOURCE t (n BIGINT) WITH (connector = 'tcp_lines_example', port = {server.port})")
    rows = [v for b in session.query("SELECT sum(n) AS s FROM t") for v in b.column("s").to_pylist()]
    assert rows[-1] == 5050


def test_full_handoff_pauses_the_read_loop_and_loses_nothing(serve):
    count = 300_000
    server = serve(_lines(range(count)))
    connector = _connector("bp", port=server.port, queue_size=64)
    reader = connector.open(_context(batch_size=50))
    try:
        deadline = time.monotonic() + 10
        while reader.lines.producer_waits == 0:  # nobody polls: the loop fills the hand-off, then waits
            assert time.monotonic() < deadline, "the read loop never waited on a full hand-off"
            time.sleep(0.005)
        assert len(reader.lines) == 64
        values, dead = _read_all(reader)
    finally:
        reader.close()
    assert values == list(range(count)) and dead == []
    status = reader.status()
    assert status["queue_high_water"] == 64 and status["refused"] == 0
    assert status["producer_waits"] >= 1 and status["producer_waited_s"] > 0


def test_an_error_on_the_loop_is_raised_by_the_next_poll(serve):
    server = serve(b"1\n2\n" + b"9" * 200_000 + b"\n")  # a line over asyncio's 64 KiB limit
    connector = _connector("broken", port=server.port)
    reader = connector.open(_context())
    try:
        deadline = time.monotonic() + 10
        with pytest.raises(ConnectorError) as caught:
            while time.monotonic() < deadline:
                reader.poll()
                time.sleep(0.005)
        assert caught.value.message.startswith("source 'broken': ")
        assert "limit" in caught.value.message
        assert caught.value.__cause__ is not None
    finally:
        reader.close()
        reader.close()  # idempotent
    assert not reader.bridge._thread.is_alive() and reader.bridge.loop.is_closed()


def test_refused_connection_is_a_connector_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens on it
    connector = _connector("nowhere", port=port)
    with pytest.raises(ConnectorError, match=rf"source 'nowhere': cannot connect to 127.0.0.1:{port}"):
        connector.open(_context())


def test_bridge_call_returns_and_raises_and_close_is_idempotent():
    bridge = AsyncioBridge("test 'bridge'").start()

    async def add(a, b):
        await asyncio.sleep(0)
        return a + b

    async def boom():
        raise KeyError("nope")

    assert bridge.call(add(2, 3), timeout=5) == 5
    with pytest.raises(KeyError):
        bridge.call(boom(), timeout=5)
    with pytest.raises(TimeoutError):
        bridge.call(asyncio.sleep(10), timeout=0.05)
    bridge.raise_failure()  # call() errors go to the caller, not to the next poll
    forever = bridge.spawn(asyncio.sleep(3600))
    closed = []

    async def shutdown():
        closed.append(True)

    bridge.close(shutdown())
    bridge.close(shutdown())  # second close: nothing runs, nothing raises
    assert closed == [True] and forever.cancelled()
    assert not bridge.running and bridge.loop.is_closed()


def test_handoff_offer_refuses_when_full_and_counts():
    bridge = AsyncioBridge("test 'offer'").start()
    try:
        handoff: Handoff[int] = Handoff(bridge, 3)

        async def offer_all():
            return [handoff.offer(i) for i in range(5)]

        assert bridge.call(offer_all(), timeout=5) == [True, True, True, False, False]
        assert handoff.take(2) == [0, 1] and handoff.pending_since is not None
        assert handoff.take() == [2] and handoff.pending_since is None
        assert handoff.status()["refused"] == 2 and handoff.status()["queue_high_water"] == 3
    finally:
        bridge.close()
    with pytest.raises(ValueError):
        Handoff(bridge, 0)
