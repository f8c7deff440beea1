"""A :class:`~sqlstream.runtime.driver.Driver` run on a daemon thread, for the thread
that consumes it (``Session.query``, the REPL's foreground and background queries).

Result batches come through a queue (a bounded one slows the query down to the pace
of its consumer); the driver's exception is kept and re-raised in the consuming
thread; :meth:`DriverThread.stop` stops the driver and waits for the thread, draining
the queue so that a driver blocked on a full queue can finish.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Iterator

import pyarrow as pa

from sqlstream.runtime.driver import Driver, RunSummary
from sqlstream.runtime.sink import END_OF_STREAM

__all__ = ["DriverThread"]

_DRAIN_WAIT_S = 0.05


class DriverThread:
    """Runs ``driver`` on a daemon thread named ``name``; ``results`` is the queue its
    :class:`~sqlstream.runtime.sink.QueueWriter` sinks write to (None: no results).

    Once the run ends, ``summary`` or ``error`` says how, and ``END_OF_STREAM`` follows
    the last result batch in ``results`` (also when the run failed)."""

    def __init__(self, driver: Driver, name: str, results: queue.Queue | None = None):
        self.driver = driver
        self.results = results
        self.summary: RunSummary | None = None
        self.error: BaseException | None = None
        self.finished_at: float | None = None  # monotonic time the run ended
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "DriverThread":
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.summary = self.driver.run()
        except BaseException as error:  # handed to the consuming thread
            self.error = error
        finally:
            self.finished_at = time.monotonic()
            self._done.set()
            if self.results is not None:
                self.results.put(END_OF_STREAM)

    @property
    def done(self) -> bool:
        """The run ended (by itself, by a stop, or by an error)."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the run ended and its thread is gone (a thread left running into
        interpreter shutdown can abort the process inside native code)."""
        if not self._done.wait(timeout):
            return False
        self._thread.join()
        return True

    def next_result(self, timeout: float | None = None) -> pa.RecordBatch | object:
        """The next result batch, or ``END_OF_STREAM``; raises ``queue.Empty`` after ``timeout``."""
        return self.results.get(timeout=timeout)

    def batches(self, timeout: float | None = None) -> Iterator[pa.RecordBatch]:
        """The result batches until the run ends; ``queue.Empty`` if none came for ``timeout``."""
        while True:
            item = self.next_result(timeout)
            if item is END_OF_STREAM:
                return
            yield item

    def stop(self) -> None:
        """Ask the driver to stop after the batch in flight and wait for its thread."""
        self.driver.stop()
        while self._thread.is_alive():
            if self.results is None:
                self._thread.join(_DRAIN_WAIT_S)
                continue
            try:  # unblock a driver waiting on a full queue
                self.results.get(timeout=_DRAIN_WAIT_S)
            except queue.Empty:
                pass
        if self._thread.ident is not None:  # started
            self._thread.join()

    def raise_error(self) -> None:
        """Re-raise, in the calling thread, what the driver raised (if anything)."""
        if self.error is not None:
            raise self.error
