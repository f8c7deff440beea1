"""TABLEs read again while a run goes on (``refresh_interval``).

A lookup join indexes its TABLE when the run starts. When the TABLE's connector has a
``refresh_interval_us`` (``connector = 'postgres'`` with ``refresh_interval = '30s'``),
a :class:`TableRefresher` reads it again every interval:

* the driver decides when a read is due, on the run's clock (a manual clock in tests),
  and starts it on a background thread: a fresh reader polled until it is exhausted,
  so the driver never waits on the database;
* when the read is done, the driver — between two steps, so no micro-batch sees half
  of it — turns the batches into the TABLE's rows (bad records go where the TABLE's
  ``on_error`` says, as at the start) and hands them to every lookup join on it, which
  swap their rows and index at once;
* a failed read (the database is down, the table was dropped) keeps the rows the joins
  have, is counted and said as a warning; the run goes on and the next read is tried
  an interval later.

At most one read per TABLE is in flight; reads are timed from when the previous one
started, and a read that takes longer than the interval delays the next.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import pyarrow as pa

from sqlstream.connectors.base import SourceBatch, SourceReader
from sqlstream.errors import SqlStreamError

__all__ = ["TableRefresher", "TableSwap"]

#: a lookup join given the new rows: prepares what it needs and returns the swap
TableSwap = Callable[[pa.Table], Callable[[], None]]

_POLL_SLEEP_S = 0.005  # the background read: wait between polls of a reader with nothing ready


@dataclass
class _Read:
    reader: SourceReader | None = None  # exhausted, still open: to_table closes it
    batches: list[SourceBatch] | None = None
    error: BaseException | None = None
    took_s: float = 0.0


class TableRefresher:
    """Reads TABLE ``name`` every ``interval_s`` in the background; ``step`` applies it."""

    def __init__(self, name: str, interval_s: float, open_reader: Callable[[], SourceReader],
                 to_table: Callable[[SourceReader, list[SourceBatch]], pa.Table], clock, rows: int,
                 warn: Callable[[str], None] | None = None):
        self.name = name
        self.interval_s = interval_s
        self.open_reader = open_reader
        self.to_table = to_table
        self.clock = clock
        self.warn = warn or (lambda text: None)  # the driver sets its own
        self.swaps: list[TableSwap] = []
        self.next_at = clock.monotonic() + interval_s
        self.refreshes = 0  # reads swapped in
        self.failures = 0  # reads that failed (the old rows were kept)
        self.last_error: str | None = None
        self.rows = rows  # rows of the TABLE the joins hold now
        self.last_read_s = 0.0  # how long the last read took (background thread)
        self.last_swap_s = 0.0  # how long the last swap held the driver
        self._in_flight: threading.Thread | None = None
        self._done: _Read | None = None  # set by the background thread
        self.closed = False

    def watch(self, swap: TableSwap) -> None:
        self.swaps.append(swap)

    # -- driver thread ----------------------------------------------------------------------

    def step(self) -> None:
        """Apply a finished read, or start one that is due (driver thread, between steps)."""
        if self.closed:
            return
        done = self._done
        if done is not None:
            self._done = None
            self._in_flight = None
            self._apply(done)
        elif self._in_flight is None and self.clock.monotonic() >= self.next_at:
            self.next_at = self.clock.monotonic() + self.interval_s
            self._in_flight = threading.Thread(target=self._read, name=f"sqlstream refresh {self.name}", daemon=True)
            self._in_flight.start()

    def _apply(self, done: _Read) -> None:
        started = time.monotonic()
        try:
            if done.error is not None:
                raise done.error
            table = self.to_table(done.reader, done.batches or [])
            installs = [swap(table) for swap in self.swaps]  # every join prepares before any swaps
        except Exception as error:  # noqa: BLE001 - reported; the joins keep their rows
            self.failures += 1
            self.last_error = (error.message if isinstance(error, SqlStreamError) else str(error)) or type(error).__name__
            self.warn(f"TABLE {self.name}: refresh failed ({self.failures} so far), keeping the {self.rows:,} rows "
                      f"read before: {self.last_error}")
            return
        for install in installs:
            install()
        self.refreshes += 1
        self.rows = table.num_rows
        self.last_read_s = done.took_s
        self.last_swap_s = time.monotonic() - started

    def close(self) -> None:
        """Stop refreshing; a read in flight finishes on its own and is dropped."""
        self.closed = True
        done, self._done = self._done, None
        if done is not None and done.reader is not None:
            _close_quietly(done.reader)

    def status(self) -> dict:
        return {
            "rows": self.rows,
            "refreshes": self.refreshes,
            "refresh_failures": self.failures,
            "last_read_s": round(self.last_read_s, 3),
            "last_swap_s": round(self.last_swap_s, 4),
            "last_error": self.last_error,
        }

    def problems(self) -> list[str]:
        if not self.failures:
            return []
        return [f"{self.failures} refreshes failed (kept the rows read before; last: {self.last_error})"]

    # -- background thread ------------------------------------------------------------------

    def _read(self) -> None:
        started = time.monotonic()
        result = _Read()
        reader = None
        try:
            reader = self.open_reader()
            batches = []
            while not reader.exhausted and not self.closed:
                item = reader.poll()
                if item is not None:
                    batches.append(item)
                elif not reader.exhausted:
                    time.sleep(_POLL_SLEEP_S)
            result.reader, result.batches = reader, batches
        except BaseException as error:  # noqa: BLE001 - handed to the driver thread
            result.error = error
            if reader is not None:
                _close_quietly(reader)
        result.took_s = time.monotonic() - started
        if self.closed:
            if result.reader is not None:
                _close_quietly(result.reader)
            return
        self._done = result


def _close_quietly(reader: SourceReader) -> None:
    try:
        reader.close()
    except Exception:  # noqa: BLE001 - the rows are read (or the read failed anyway)
        pass
