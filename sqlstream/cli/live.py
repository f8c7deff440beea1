"""Queries the REPL runs: a foreground SELECT rendered live, and sinks running in the background.

A foreground query runs its :class:`~sqlstream.runtime.driver.Driver` in a thread
(:class:`~sqlstream.runtime.driver_thread.DriverThread`) and hands result batches to
the REPL's thread through a bounded queue (a slow terminal slows the query down
instead of filling memory). The REPL's thread renders, reads single key presses
(space pauses the rendering) and turns Ctrl-C into a clean stop. What a query read is
recorded by wrapping its sources' readers when it is built (``\\save_test``).
"""

from __future__ import annotations

import os
import queue
import select
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa

from sqlstream.cli.progress import Footer
from sqlstream.cli.result_views import ResultView
from sqlstream.connectors.dead_letters import DEAD_LETTER_STREAM
from sqlstream.errors import SqlAnalysisError, SqlStreamError
from sqlstream.plan.nodes import PlanNode
from sqlstream.runtime.driver import Driver, RunSummary
from sqlstream.runtime.driver_thread import DriverThread
from sqlstream.runtime.sink import END_OF_STREAM, QueueWriter
from sqlstream.session import Session, SinkEntry

__all__ = ["KeyReader", "ForegroundQuery", "QueryOutcome", "BackgroundQuery", "BackgroundQueries", "interrupt_flag"]

_QUEUE_BATCHES = 16
_REFRESH_S = 0.1
RECORD_LIMIT_ROWS = 100_000  # per source and for the result: what \save_test can write


class KeyReader:
    """Single key presses from a terminal while a query runs. The terminal is in cbreak
    mode (no echo, no line buffering); Ctrl-C still raises SIGINT."""

    def __init__(self, fd: int):
        self.fd = fd
        self._saved = None

    def __enter__(self) -> "KeyReader":
        import termios
        import tty

        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd, termios.TCSANOW)
        return self

    def __exit__(self, *exc) -> None:
        import termios

        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def read(self) -> str:
        """The keys pressed since the last call ('' if none); never blocks."""
        ready, _, _ = select.select([self.fd], [], [], 0)
        if not ready:
            return ""
        return os.read(self.fd, 64).decode("utf-8", errors="ignore")


@contextmanager
def interrupt_flag() -> Iterator[threading.Event]:
    """An event set by Ctrl-C (SIGINT) while the block runs, instead of KeyboardInterrupt."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: event.set())
    try:
        yield event
    finally:
        signal.signal(signal.SIGINT, previous)


class RecordingReader:
    """Wraps a source reader and keeps the rows it delivered (up to a limit), so that
    ``\\save_test`` can turn what a query read into a fixture."""

    def __init__(self, reader, limit: int = RECORD_LIMIT_ROWS):
        self._reader = reader
        self.limit = limit
        self.batches: list[pa.RecordBatch] = []
        self.rows = 0
        self.overflow = False

    def poll(self):
        item = self._reader.poll()
        batch = item.batch if item is not None else None
        if batch is not None and batch.num_rows and not self.overflow:
            self.rows += batch.num_rows
            if self.rows > self.limit:
                self.overflow = True
                self.batches = []
            else:
                self.batches.append(batch)
        return item

    def __getattr__(self, name):
        return getattr(self._reader, name)


@dataclass
class QueryOutcome:
    """How a foreground query went, and what ``\\save_test`` needs of it."""

    rows: int  # rows shown: result rows, or the final table's rows for an updating result
    received: int  # batches' rows received (changes, for an updating result)
    elapsed_s: float
    ended: bool  # the query ended by itself (its input ended, or LIMIT); False: stopped
    updating: bool
    result: list[pa.RecordBatch] | None  # every batch received; None past the record limit
    inputs: dict[str, list[pa.RecordBatch]] | None  # rows each source delivered; None if unknown
    summary: RunSummary | None = None


class ForegroundQuery:
    """Runs one query plan and feeds its result into a :class:`ResultView` until it ends,
    hits its LIMIT, or is stopped (Ctrl-C)."""

    def __init__(self, session: Session, plan: PlanNode, view: ResultView, *, keys: KeyReader | None = None,
                 record_limit: int = RECORD_LIMIT_ROWS):
        self.session = session
        self.plan = plan
        self.view = view
        self.keys = keys
        self.record_limit = record_limit

    def run(self, stop: threading.Event) -> QueryOutcome:
        results: queue.Queue = queue.Queue(maxsize=_QUEUE_BATCHES)
        recorders: dict[str, RecordingReader] = {}

        def record(source: str, reader):
            if source == DEAD_LETTER_STREAM:
                return reader
            recorders[source] = RecordingReader(reader, self.record_limit)
            return recorders[source]

        driver = self.session.build([], [("query", self.plan, lambda schema: QueueWriter(results))], wrap_reader=record)
        running = DriverThread(driver, "sqlstream-repl-query", results)
        started = time.monotonic()
        received = 0
        result: list[pa.RecordBatch] | None = []
        footer = Footer(keys=self.keys is not None, updating=self.plan.updating)
        rate = _Rate(started)
        ended = False

        def status() -> Footer:
            footer.rows = received
            footer.rate = rate.update(received)
            footer.elapsed_s = time.monotonic() - started
            footer.watermark_us = _watermark(driver)
            footer.paused = self.view.paused
            return footer

        self.view.start(status())
        running.start()
        last_refresh = 0.0
        try:
            while not stop.is_set():
                self._read_keys(footer)
                try:
                    item = running.next_result(_REFRESH_S)
                except queue.Empty:
                    item = None
                if item is END_OF_STREAM:
                    ended = running.error is None
                    break
                if item is not None and item.num_rows:
                    received += item.num_rows
                    self.view.add(item)
                    if result is not None:
                        result.append(item)
                        if received > self.record_limit:
                            result = None
                now = time.monotonic()
                if now - last_refresh >= _REFRESH_S:
                    last_refresh = now
                    self.view.refresh(status())
        finally:
            running.stop()  # also unblocks a driver waiting on the full queue
            self.view.finish(status())
        running.raise_error()
        inputs = None
        if recorders and not any(r.overflow for r in recorders.values()):
            inputs = {name: r.batches for name, r in recorders.items()}
        return QueryOutcome(
            rows=self.view.rows_written,
            received=received,
            elapsed_s=time.monotonic() - started,
            ended=ended,
            updating=self.plan.updating,
            result=result,
            inputs=inputs,
            summary=running.summary,
        )

    def _read_keys(self, footer: Footer) -> None:
        if self.keys is None:
            return
        if " " in self.keys.read():
            self.view.set_paused(not self.view.paused)
            footer.hidden = 0
            footer.paused = self.view.paused
            self.view.refresh(footer)


class _Rate:
    """Rows per second over the last few seconds."""

    def __init__(self, started: float):
        self.samples = [(started, 0)]

    def update(self, count: int) -> float:
        now = time.monotonic()
        self.samples.append((now, count))
        while len(self.samples) > 2 and now - self.samples[0][0] > 3.0:
            self.samples.pop(0)
        t0, c0 = self.samples[0]
        return (count - c0) / (now - t0) if now > t0 else 0.0


def _watermark(driver: Driver) -> int | None:
    marks = [s.watermark for s in driver.sources if s.watermark is not None and s.name != DEAD_LETTER_STREAM]
    return min(marks) if marks else None


# -- background sinks ----------------------------------------------------------------------------


@dataclass
class BackgroundQuery:
    """A sink's query, started by CREATE SINK / INSERT INTO in the REPL."""

    number: int
    sink: str
    text: str
    running: DriverThread  # its error is reported at the next prompt
    started: float
    stopped: bool = False
    reported: bool = False

    @property
    def driver(self) -> Driver:
        return self.running.driver

    @property
    def error(self) -> BaseException | None:
        return self.running.error

    @property
    def summary(self) -> RunSummary | None:
        return self.running.summary

    @property
    def finished_at(self) -> float | None:
        return self.running.finished_at

    @property
    def status(self) -> str:
        if not self.running.done:
            return "running"
        if self.error is not None:
            return "failed"
        return "stopped" if self.stopped else "finished"

    def wait(self, timeout: float | None = None) -> bool:
        """True once the query ended (and its thread is gone: a thread left running into
        interpreter shutdown can abort the process inside native code)."""
        return self.running.wait(timeout)

    def row(self) -> dict:
        end = self.finished_at or time.monotonic()
        return {
            "id": self.number,
            "sink": self.sink,
            "status": self.status,
            "rows_in": sum(s.metrics.rows_in for s in self.driver.sources),
            "rows_out": sum(s.rows_out for s in self.driver.sinks),
            "elapsed_s": round(end - self.started, 1),
            "query": self.text,
        }

    def describe_end(self) -> str:
        if self.error is not None:
            message = self.error.render() if isinstance(self.error, SqlStreamError) else f"{type(self.error).__name__}: {self.error}"
            return f"query {self.number} (sink {self.sink}) failed: {message}"
        line = self.summary.line() if self.summary else ""
        return f"query {self.number} (sink {self.sink}) {self.status}: {line}"


class BackgroundQueries:
    """Every sink the REPL started, numbered for SHOW QUERIES / STOP QUERY n."""

    def __init__(self, session: Session):
        self.session = session
        self.queries: list[BackgroundQuery] = []

    def start(self, entry: SinkEntry) -> BackgroundQuery:
        running = DriverThread(self.session.build([entry]), f"sqlstream-sink-{entry.name}")
        query = BackgroundQuery(len(self.queries) + 1, entry.name, entry.query_text, running, time.monotonic())
        self.queries.append(query)
        running.start()
        return query

    def started(self, sink: str) -> bool:
        return any(q.sink == sink for q in self.queries)

    def running(self) -> list[BackgroundQuery]:
        return [q for q in self.queries if q.status == "running"]

    def stop(self, number: int, location=None) -> BackgroundQuery:
        query = next((q for q in self.queries if q.number == number), None)
        if query is None:
            numbers = ", ".join(str(q.number) for q in self.queries) or "none"
            raise SqlAnalysisError(f"no query {number}", location=location,
                                   hint=f"SHOW QUERIES lists them (numbers: {numbers})")
        self._stop(query)
        return query

    def stop_sink(self, sink: str) -> None:
        for query in self.queries:
            if query.sink == sink and query.status == "running":
                self._stop(query)
        self.queries = [q for q in self.queries if q.sink != sink]

    def _stop(self, query: BackgroundQuery) -> None:
        if query.status == "running":
            query.stopped = True
            query.running.stop()

    def stop_all(self) -> None:
        for query in self.running():
            query.stopped = True
            query.driver.stop()
        for query in self.queries:
            query.wait()

    def wait_all(self, stop: threading.Event) -> None:
        """Wait for every running query to end; ``stop`` (Ctrl-C) stops the rest."""
        for query in self.queries:
            while not query.wait(0.1):
                if stop.is_set():
                    self.stop_all()
                    return

    def unreported(self) -> list[BackgroundQuery]:
        """Queries that ended since the last call."""
        done = [q for q in self.queries if q.status != "running" and not q.reported]
        for query in done:
            query.reported = True
        return done

    def drivers(self) -> list[tuple[BackgroundQuery, Driver]]:
        return [(q, q.driver) for q in self.queries]
