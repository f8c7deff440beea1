"""One nats-py client on its own asyncio thread.

The driver loop is synchronous and single-threaded; nats-py is asyncio. Each NATS
reader or writer owns a :class:`NatsConnection`: an
:class:`~sqlstream.connectors.asyncio_bridge.AsyncioBridge` (a daemon thread running
an event loop that reads the socket, and thread-safe doors into it: ``call`` waits for
a coroutine, ``submit`` does not) holding one nats-py client. The loop thread only
moves messages; decoding and encoding happen in the driver thread, on whole
micro-batches.

Connection events (disconnects, reconnects, slow-consumer drops, server errors) are
counted in :class:`ConnectionEvents` and logged as warnings on the
``sqlstream.nats`` logger, so a user sees them on stderr as they happen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Coroutine

from nats.aio.client import Client
from nats.errors import SlowConsumerError

from sqlstream.connectors.asyncio_bridge import AsyncioBridge
from sqlstream.errors import ConnectorError

__all__ = ["NatsConnection", "ConnectionEvents", "LOG", "runtime_error", "nats_outage"]

LOG = logging.getLogger("sqlstream.nats")

#: the client's outgoing buffer: large enough for a micro-batch of publishes or acks
_PENDING_SIZE = 64 * 1024 * 1024


async def require_stream(nc: Client, stream: str, owner: str, url: str) -> None:
    """Raise a clear error unless the JetStream stream exists."""
    from nats.js.errors import NotFoundError

    try:
        await nc.jetstream().stream_info(stream)
    except NotFoundError:
        raise runtime_error(
            f"{owner}: JetStream stream '{stream}' does not exist on {url}",
            hint="create it first (e.g. nats stream add, or sqlstream produce --stream NAME)",
        ) from None


def nats_outage(error: BaseException | None) -> bool:
    """Whether ``error``, or an error that caused it, says NATS did not answer for a while
    (a timeout, no responders, a closed or stale connection, JetStream "temporarily
    unavailable" or no stream response during a leader election) rather than that
    something is wrong: the same request may succeed a little later.

    >>> import nats.errors
    >>> nats_outage(ConnectorError("x")), nats_outage(nats.errors.TimeoutError())
    (False, True)
    """
    from nats.errors import ConnectionClosedError, NoRespondersError, StaleConnectionError
    from nats.errors import TimeoutError as NatsTimeoutError
    from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

    transient = (NatsTimeoutError, NoRespondersError, ConnectionClosedError, StaleConnectionError,
                 NoStreamResponseError, ServiceUnavailableError, asyncio.TimeoutError, TimeoutError)
    seen = 0
    while error is not None and seen < 16:
        if isinstance(error, transient):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def runtime_error(message: str, *, hint: str | None = None) -> ConnectorError:
    """A connector failure while running (exit code 1, not 2: the input was fine)."""
    return ConnectorError(message, hint=hint, exit_code=1)


@dataclass
class ConnectionEvents:
    """What happened to the connection during a run (for metrics and the summary)."""

    disconnects: int = 0
    reconnects: int = 0
    disconnected_s: float = 0.0  # total time without a connection
    slow_consumer_events: int = 0  # messages nats-py dropped because a pending limit was hit
    errors: list[str] = field(default_factory=list)
    disconnected_at: float | None = None  # monotonic time of the current outage


class NatsConnection:
    """A connected nats-py ``Client`` driven by a private event-loop thread."""

    def __init__(self, url: str, owner: str, *, connect_timeout_s: float = 5.0, reconnect_wait_s: float = 0.25):
        self.url = url
        self.owner = owner  # "source 'x'" / "sink 'y'", for messages
        self.connect_timeout_s = connect_timeout_s
        self.reconnect_wait_s = reconnect_wait_s
        self.events = ConnectionEvents()
        self.bridge = AsyncioBridge(owner, thread_name=f"sqlstream-nats {owner}")
        self.loop = self.bridge.loop
        self.nc: Client | None = None
        self.on_reconnect: list[Callable[[], Awaitable[None]]] = []  # run on the loop after a reconnect
        self.closed = False
        self._connecting = False
        self._connect_error: Exception | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> "NatsConnection":
        self.bridge.start()
        try:
            self.nc = self.call(self._connect(), timeout=self.connect_timeout_s + 5)
        except Exception:
            self.bridge.close()
            raise
        return self

    async def _connect(self) -> Client:
        client = Client()
        self._connecting = True
        try:
            await asyncio.wait_for(
                client.connect(
                    servers=[u.strip() for u in self.url.split(",") if u.strip()],
                    name=f"sqlstream {self.owner}",
                    connect_timeout=min(2.0, self.connect_timeout_s),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,  # retried until connect_timeout now, and forever after
                    reconnect_time_wait=self.reconnect_wait_s,
                    pending_size=_PENDING_SIZE,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                ),
                self.connect_timeout_s,
            )
        except (asyncio.TimeoutError, Exception) as error:  # noqa: BLE001 - reported below
            try:
                await asyncio.wait_for(client.close(), 1.0)
            except Exception:  # noqa: BLE001
                pass
            last = self._connect_error or error
            detail = str(last) or type(last).__name__
            raise runtime_error(
                f"{self.owner}: cannot connect to NATS at {self.url}: {detail} "
                f"(tried for {self.connect_timeout_s:g}s)",
                hint="start nats-server (or check url = 'nats://host:port'); connect_timeout sets how long to try",
            ) from error
        finally:
            self._connecting = False
        return client

    def close(self, timeout: float = 5.0) -> None:
        """Flush what is buffered and disconnect; the loop thread ends."""
        if self.closed:
            return
        self.closed = True
        self.bridge.close(self._close() if self.nc is not None else None, timeout=timeout)

    async def _close(self) -> None:
        nc = self.nc
        if nc is None or nc.is_closed:
            return
        if nc.is_connected:
            try:
                await asyncio.wait_for(nc.flush(), 2.0)
            except Exception:  # noqa: BLE001
                pass
        await nc.close()

    # -- doors into the loop -------------------------------------------------------------------

    def call(self, coro: Coroutine, timeout: float | None = None) -> Any:
        """Run ``coro`` on the loop and wait for its result (driver thread only)."""
        return self.bridge.call(coro, timeout)

    def submit(self, coro: Coroutine) -> Future:
        return self.bridge.submit(coro)

    def call_soon(self, fn: Callable, *args) -> None:
        self.bridge.call_soon(fn, *args)

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    # -- events (on the loop thread) ------------------------------------------------------------

    async def _on_error(self, error: Exception) -> None:
        if isinstance(error, SlowConsumerError):
            self.events.slow_consumer_events += 1
            if self.events.slow_consumer_events == 1 or self.events.slow_consumer_events % 10_000 == 0:
                LOG.warning(
                    "%s: slow consumer: messages on '%s' dropped (%d so far): they arrive faster than the "
                    "pipeline takes them (raise max_pending_messages / max_pending_bytes, or use JetStream "
                    "for guaranteed delivery)",
                    self.owner, error.subject, self.events.slow_consumer_events,
                )
            return
        text = str(error) or type(error).__name__
        if self._connecting:  # the first connection's failures are reported by start()
            self._connect_error = error
            return
        if len(self.events.errors) < 100:
            self.events.errors.append(text)
        if self.events.disconnected_at is None:  # errors while reconnecting repeat: say them once
            LOG.warning("%s: NATS error: %s", self.owner, text)

    async def _on_disconnected(self) -> None:
        if self.closed or self._connecting or self.events.disconnected_at is not None:
            return  # never connected yet: start() reports "cannot connect", not a disconnect
        self.events.disconnects += 1
        self.events.disconnected_at = time.monotonic()
        LOG.warning("%s: disconnected from NATS at %s; reconnecting", self.owner, self.url)

    async def _on_reconnected(self) -> None:
        self.events.reconnects += 1
        started = self.events.disconnected_at
        self.events.disconnected_at = None
        gap = time.monotonic() - started if started is not None else 0.0
        self.events.disconnected_s += gap
        LOG.warning("%s: reconnected to NATS after %.2fs", self.owner, gap)
        for hook in list(self.on_reconnect):
            try:
                await hook()
            except Exception as error:  # noqa: BLE001 - reported, the next reconnect retries
                LOG.warning("%s: after reconnecting: %s", self.owner, error)
