"""A bridge to async client libraries: an event loop on its own thread, and a bounded
hand-off from it to the driver.

The driver loop is synchronous and single-threaded, and ``SourceReader.poll`` must not
block; many client libraries (nats-py, asyncpg, aiomqtt, websockets, asyncio streams)
are asyncio. A connector built on one owns an :class:`AsyncioBridge`: a daemon thread
running the connector's event loop, and a few thread-safe doors into it:

* ``call(coro, timeout)`` runs a coroutine on the loop and waits for its result (or
  re-raises its exception) — for connecting, subscribing, flushing;
* ``submit(coro)`` runs it without waiting and returns a ``concurrent.futures.Future``;
* ``spawn(coro)`` starts a long-lived task (a read loop); if it ends with an exception,
  the failure is kept and :meth:`AsyncioBridge.raise_failure` raises it in the driver
  thread — call it first thing in ``poll()``, so an error on the loop ends the run
  with a :class:`~sqlstream.errors.ConnectorError` instead of a silent stall;
* ``close()`` cancels the tasks, runs an optional shutdown coroutine, stops the loop and
  joins the thread; it may be called any number of times.

Messages go from the loop to the driver through a :class:`Handoff`: a bounded queue
whose loop-side ``await put(item)`` waits while the queue is full. That is the
backpressure policy: a full hand-off pauses the read loop, the client library stops
reading its socket, and the protocol's own flow control (TCP windows, MQTT receive
maximum, a pull consumer's outstanding requests) pushes back on the sender. Nothing is
dropped by the hand-off; the waits are counted (``producer_waits``, ``waited_s``) so a
slow pipeline shows in ``SHOW METRICS``. A protocol that cannot push back (core NATS,
MQTT QoS 0) can use ``offer(item)`` instead, which refuses an item when the queue is full
and counts it in ``refused``: the connector then reports the drop, never silently.

The loop thread only moves messages; decode whole micro-batches in ``poll`` on the
driver thread (``take(n)`` returns up to ``n`` items at once). ``docs/plugins.md`` has a
worked example of a source written this way.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Coroutine, Generic, TypeVar

from sqlstream.errors import ConnectorError

__all__ = ["AsyncioBridge", "Handoff"]

LOG = logging.getLogger("sqlstream.connectors")

T = TypeVar("T")

_JOIN_S = 5.0  # close(): the longest wait for the loop thread to end


class AsyncioBridge:
    """An asyncio event loop on a daemon thread, driven from the (synchronous) driver thread.

    ``owner`` names the connector in messages and the thread name ("source 'orders'").
    """

    def __init__(self, owner: str, *, thread_name: str | None = None):
        self.owner = owner
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._on_unhandled)
        self.closed = False
        self.failure: BaseException | None = None  # the first error of a spawned task (loop thread)
        self._tasks: set[asyncio.Task] = set()
        self._thread = threading.Thread(target=self._run, name=thread_name or f"sqlstream {owner}", daemon=True)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> "AsyncioBridge":
        """Start the loop thread (once); returns self."""
        if not self._thread.is_alive() and not self.closed:
            self._thread.start()
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self.closed

    def close(self, shutdown: Coroutine | None = None, *, timeout: float = 5.0) -> None:
        """Cancel the spawned tasks, run ``shutdown`` (e.g. the client's close), stop the
        loop and join its thread. Idempotent; errors while closing are logged, not raised."""
        if self.closed:
            if shutdown is not None:
                shutdown.close()  # never awaited: say so to nobody
            return
        self.closed = True
        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(shutdown), self.loop).result(timeout)
            except Exception as error:  # noqa: BLE001 - closing is best effort
                LOG.debug("%s: closing: %s", self.owner, error)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(_JOIN_S)
        elif shutdown is not None:
            shutdown.close()
        if not self._thread.is_alive() and not self.loop.is_closed():
            self.loop.close()

    async def _shutdown(self, shutdown: Coroutine | None) -> None:
        tasks = [task for task in self._tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if shutdown is not None:
            await shutdown

    # -- doors into the loop (driver thread) ---------------------------------------------------

    def call(self, coro: Coroutine, timeout: float | None = None) -> Any:
        """Run ``coro`` on the loop and wait for its result; its exception is raised
        here. On timeout the coroutine is cancelled and ``TimeoutError`` raised."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def submit(self, coro: Coroutine) -> Future:
        """Run ``coro`` on the loop without waiting; returns its future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call_soon(self, fn: Callable, *args) -> None:
        """Call ``fn(*args)`` on the loop thread, soon."""
        self.loop.call_soon_threadsafe(fn, *args)

    def spawn(self, coro: Coroutine) -> Future:
        """Start a long-lived task on the loop (a read loop). If it raises, the error is
        kept and :meth:`raise_failure` raises it in the driver thread."""

        async def supervised() -> Any:
            task = asyncio.current_task()
            self._tasks.add(task)
            try:
                return await coro
            except asyncio.CancelledError:
                raise
            except BaseException as error:  # noqa: BLE001 - handed to the driver
                self.fail(error)
                raise
            finally:
                self._tasks.discard(task)

        return asyncio.run_coroutine_threadsafe(supervised(), self.loop)

    # -- failures -----------------------------------------------------------------------------

    def fail(self, error: BaseException) -> None:
        """Keep ``error`` for the driver (any thread); the first one wins."""
        if self.failure is None:
            self.failure = error
            LOG.debug("%s: failed on the event loop: %r", self.owner, error)

    def raise_failure(self) -> None:
        """Driver thread: raise what went wrong on the loop, as a ConnectorError (exit
        code 1) that names the owner; the original is its ``__cause__``."""
        error = self.failure
        if error is None:
            return
        if isinstance(error, ConnectorError):
            raise error
        detail = str(error) or type(error).__name__
        raise ConnectorError(f"{self.owner}: {detail}", exit_code=1) from error

    def _on_unhandled(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        error = context.get("exception")
        LOG.warning("%s: unhandled error on the event loop: %s", self.owner, error or context.get("message"))


class Handoff(Generic[T]):
    """A bounded queue from the event loop (producer) to the driver thread (consumer).

    Loop side: ``await put(item)`` waits while ``capacity`` items are queued (the
    backpressure: the read loop pauses), ``offer(item)`` refuses instead (returns
    False, counted in ``refused``). Driver side: ``take(n)`` pops up to ``n`` items,
    and wakes a waiting producer. ``pending_since`` is when the oldest queued item
    arrived (``clock()`` time), for batch timeouts.
    """

    def __init__(self, bridge: AsyncioBridge, capacity: int, *, clock: Callable[[], float] = time.monotonic):
        if capacity < 1:
            raise ValueError("a hand-off holds at least one item")
        self.bridge = bridge
        self.capacity = capacity
        self.clock = clock
        self._items: collections.deque[T] = collections.deque()
        self._space: asyncio.Event | None = None  # created on the loop, set when there is room
        self.pending_since: float | None = None
        self.put_count = 0  # loop thread
        self.refused = 0  # offer() on a full queue (loop thread)
        self.producer_waits = 0  # puts that found the queue full and waited (loop thread)
        self.waited_s = 0.0  # total time producers waited (loop thread)
        self.taken = 0  # driver thread
        self.high_water = 0  # the most items queued at once

    def __len__(self) -> int:
        return len(self._items)

    # -- loop side ---------------------------------------------------------------------------

    async def put(self, item: T) -> None:
        """Queue ``item``, waiting while the queue is full (never drops)."""
        if len(self._items) >= self.capacity:
            if self._space is None:
                self._space = asyncio.Event()
            self.producer_waits += 1
            started = time.monotonic()
            try:
                while len(self._items) >= self.capacity:
                    self._space.clear()
                    await self._space.wait()
            finally:
                self.waited_s += time.monotonic() - started
        self._append(item)

    def offer(self, item: T) -> bool:
        """Queue ``item`` if there is room; False (counted in ``refused``) if not."""
        if len(self._items) >= self.capacity:
            self.refused += 1
            return False
        self._append(item)
        return True

    def _append(self, item: T) -> None:
        if not self._items:
            self.pending_since = self.clock()
        self._items.append(item)
        self.put_count += 1
        if len(self._items) > self.high_water:
            self.high_water = len(self._items)

    def _wake(self) -> None:
        if self._space is not None:
            self._space.set()

    # -- driver side -------------------------------------------------------------------------

    def take(self, count: int | None = None) -> list[T]:
        """Pop up to ``count`` items (all if None), oldest first."""
        items = self._items
        n = len(items) if count is None else min(count, len(items))
        popleft = items.popleft
        out = [popleft() for _ in range(n)]
        if not items:
            self.pending_since = None
        # (else what is left arrived before now and keeps the running timer: it is due next)
        self.taken += n
        if n and self._space is not None and self.bridge.running:
            self.bridge.call_soon(self._wake)
        return out

    def status(self) -> dict[str, Any]:
        """Counters for ``SourceReader.status`` (and SHOW METRICS)."""
        return {
            "queued": len(self._items),
            "queue_capacity": self.capacity,
            "queue_high_water": self.high_water,
            "producer_waits": self.producer_waits,
            "producer_waited_s": round(self.waited_s, 3),
            "refused": self.refused,
        }
