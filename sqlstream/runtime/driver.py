"""The run loop: poll every source, push batches through the operator graph, keep time.

One thread drives everything. Readers never block for long; when none has data the
loop sleeps until the earliest ``next_wakeup`` (bounded, so a stop request is seen
quickly). With a :class:`~sqlstream.runtime.clock.ManualClock` the sleep advances the
clock instead, so tests run at full speed and never ``sleep``.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from sqlstream.connectors.dead_letters import DeadLetterOutput
from sqlstream.errors import ExecutionError, SqlStreamError, StateLimitError
from sqlstream.operators.base import Operator
from sqlstream.operators.state_size import NO_STATE, StateSize
from sqlstream.runtime.checkpointing import Checkpointer, CheckpointStats
from sqlstream.runtime.sink import SinkOperator
from sqlstream.runtime.source_stage import SourceStage
from sqlstream.runtime.state_tracker import StateLimits, StateTracker, describe
from sqlstream.runtime.table_refresh import TableRefresher

__all__ = ["Driver", "RunSummary", "print_warning"]

_MAX_SLEEP_S = 0.05

#: on a graceful stop, how long sources without replay (core NATS) may take to push what
#: they already received through the pipeline; what is left then is reported as lost
DRAIN_DEADLINE_S = 5.0


@dataclass
class RunSummary:
    elapsed_s: float
    sources: dict[str, dict] = field(default_factory=dict)
    sinks: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # on_error = 'skip'
    stopped: bool = False  # stopped by request before the sources ended
    open_state_rows: int = 0
    peak_state: StateSize = NO_STATE  # the most rows and the most bytes of state held
    checkpoints: CheckpointStats | None = None  # None: the run took no checkpoints
    tables: dict[str, dict] = field(default_factory=dict)  # TABLEs read again during the run
    stopped_by: str | None = None  # what asked the run to stop (``SIGTERM``), None when it ran to the end
    targets: dict[str, str] = field(default_factory=dict)  # sink → the file or directory it wrote
    dead_letter_path: str | None = None  # where dead letters went (None: not written to a file)

    def line(self) -> str:
        parts = [f"stopped by {self.stopped_by}"] if self.stopped_by else []
        for name, m in self.sources.items():
            problems = m.get("problems") or []
            parts.append(f"{name}: {m['rows_in']:,} rows in" + (f" ({'; '.join(problems)})" if problems else ""))
        for name, rows in self.sinks.items():
            parts.append(f"{name}: {rows:,} rows out")
        for name, t in self.tables.items():
            failed = f", {t['refresh_failures']} failed" if t["refresh_failures"] else ""
            parts.append(f"TABLE {name}: read again {t['refreshes']}x{failed}")
        dead = sum(self.dead_letters.values())
        if dead:
            reasons = ", ".join(f"{r} {n:,}" for r, n in sorted(self.dead_letters.items()))
            parts.append(f"dead letters: {dead:,} ({reasons})")
        else:
            parts.append("dead letters: 0")
        skipped = sum(self.skipped.values())
        if skipped:
            reasons = ", ".join(f"{r} {n:,}" for r, n in sorted(self.skipped.items()))
            parts.append(f"skipped (on_error = 'skip'): {skipped:,} ({reasons})")
        if self.stopped and self.open_state_rows:
            kept = "kept in the checkpoint" if self.checkpoints is not None else "not emitted"
            parts.append(f"{self.open_state_rows:,} rows of open window/aggregate state {kept} (stopped early)")
        elif self.stopped and self.checkpoints is not None:
            parts.append("open window state is kept in the checkpoint")
        if self.checkpoints is not None and self.checkpoints.line():
            parts.append(self.checkpoints.line())
        if self.peak_state.rows or self.peak_state.bytes:
            parts.append(f"peak state {describe(self.peak_state)}")
        parts.append(f"elapsed {self.elapsed_s:.2f}s")
        return " | ".join(parts)

    def target_lines(self) -> list[str]:
        """Where the data went, a line each: every file sink (``out: 1,500 rows → out.jsonl``)
        and the dead-letter file when it got rows."""
        lines = [f"{name}: {self.sinks.get(name, 0):,} rows → {path}" for name, path in self.targets.items()]
        dead = sum(self.dead_letters.values())
        if dead and self.dead_letter_path:
            reasons = ", ".join(f"{r} {n:,}" for r, n in sorted(self.dead_letters.items()))
            lines.append(f"dead letters: {dead:,} rows ({reasons}) → {self.dead_letter_path}")
        return lines


_frozen_loops = 0  # run loops running now (a worker runs one per partition, on threads)
_frozen_lock = threading.Lock()


@contextlib.contextmanager
def _gc_frozen():
    """While a run loop runs, what exists when it starts (the libraries, the plans, the
    operators, all living as long as the run) is left out of the collector's full passes:
    one pass over it took 65-400 ms mid-stream at 10k msgs/s, a latency spike every time.
    ``gc.freeze`` is process-wide, so it is undone when the last loop of the process ends
    (then garbage among those objects is collected again)."""
    global _frozen_loops
    with _frozen_lock:
        _frozen_loops += 1
        gc.freeze()
    try:
        yield
    finally:
        with _frozen_lock:
            _frozen_loops -= 1
            if not _frozen_loops:
                gc.unfreeze()


class Driver:
    def __init__(
        self,
        sources: list[SourceStage],
        sinks: list[SinkOperator],
        clock,
        dead_letters: DeadLetterOutput,
        operators: list[Operator] | None = None,
        tick_interval_s: float = 0.1,
        state_limits: StateLimits | None = None,
        progress: Callable[["Driver"], None] | None = None,
        warn: Callable[[str], None] | None = None,
        checkpointer: Checkpointer | None = None,
        tables: list[TableRefresher] | None = None,
    ):
        self.sources = sources
        self.sinks = sinks
        self.clock = clock
        self.dead_letters = dead_letters
        self.operators = operators or []
        self._stop = threading.Event()
        self.stop_reason: str | None = None  # what ``stop`` was told (``SIGTERM``), for the summary
        self.looping = False  # in the run loop: a stop request drains and closes gracefully
        #: sources open, sinks open and checkpoint state restored: the run takes input (``/ready``)
        self.ready = False
        self._started = 0.0
        self._last_tick = 0.0
        self.tick_interval_s = tick_interval_s
        self.finished = False
        self.progress = progress  # told of the run every ``progress_interval_s``
        self.progress_interval_s = 0.5
        self._last_progress = 0.0
        #: says a warning to the user (stderr by default; the CLI keeps its progress line clear)
        self.warn: Callable[[str], None] = warn or print_warning
        self.checkpointer = checkpointer
        #: counts what changes state or output (batches taken, ticks that emitted, sources
        #: ending): a checkpoint is skipped when nothing happened since the last one
        self.activity = 0
        self.tables = tables or []  # TABLEs read again while the run goes on
        for table in self.tables:
            table.warn = lambda text: self.warn(text)
        self.state = StateTracker.of(self._roots(), state_limits or StateLimits(), lambda text: self.warn(text),
                                     self._position)

    def stop(self, reason: str | None = None) -> bool:
        """Ask the loop to stop after the batch in flight (thread- and signal-safe);
        ``reason`` (``SIGINT``) is what the summary says stopped it.

        True when the run loop took the request (it drains and closes the sinks); False
        when none is looping yet (start-up, opening sources) or it was already stopping."""
        accepted = self.looping and not self._stop.is_set()
        if accepted and reason is not None:
            self.stop_reason = reason
        self._stop.set()
        return accepted

    def run(self) -> RunSummary:
        """Run until every source ended or ``stop()``; then flush and close the sinks."""
        self._started = time.monotonic()
        for sink in self.sinks:
            sink.open()
        self.looping = True
        try:
            if self.checkpointer is not None:
                self.checkpointer.restore(self)
            self.ready = True
            with _gc_frozen():
                while not self._stop.is_set() and self.step():
                    if self.checkpointer is not None:
                        self.checkpointer.maybe_take(self)
            if self._stop.is_set():
                self._drain_sources()
        except StateLimitError:
            self._close(graceful=True)  # what was produced is written; the error says where input stopped
            raise
        except (SqlStreamError, BrokenPipeError):
            self._close(graceful=False)
            raise
        except Exception as error:  # an unexpected failure still closes what was opened
            self._close(graceful=False)
            raise ExecutionError(f"pipeline failed: {type(error).__name__}: {error}") from error
        self._close(graceful=True)
        return self.summary()

    def step(self) -> bool:
        """One round over the sources. False once every source has ended."""
        progressed = False
        live = False
        for table in self.tables:  # between two steps: no batch sees half a refresh
            table.step()
        for stage in self.sources:
            if stage.ended:
                continue
            item = stage.reader.poll()
            if item is not None:
                stage.process(item)
                progressed = True
                self.activity += 1
                self.state.check()
            if stage.reader.exhausted:
                stage.end()
                self.activity += 1
            else:
                live = True
            if self._stop.is_set():
                return False
        now = self.clock.monotonic()
        if now - self._last_tick >= self.tick_interval_s:
            self._last_tick = now
            now_us = self.clock.now_us()
            for stage in self.sources:
                stage.check_idle(now_us)
            rows_out = self._rows_out()
            for op in self._roots():
                op.tick(now_us)
            if self._rows_out() != rows_out:  # EMIT EVERY results went out
                self.activity += 1
            for stage in self.sources:
                stage.release_acks()
                stage.check_ack_stall()
        if self.progress is not None and now - self._last_progress >= self.progress_interval_s:
            self._last_progress = now
            self.progress(self)
        if not live:
            return False
        if not progressed:
            self._sleep()
        return True

    def _drain_sources(self) -> None:
        """A graceful stop: sources that hold received input nobody can replay stop
        receiving, and what they hold goes through the pipeline and into the sinks,
        for up to ``DRAIN_DEADLINE_S``; the readers count and report what is left."""
        stages = [s for s in self.sources if not s.ended and s.reader.drains_on_stop]
        if not stages:
            return
        deadline = time.monotonic() + DRAIN_DEADLINE_S
        for stage in stages:
            stage.reader.stop_receiving()
        for stage in stages:
            while time.monotonic() < deadline:
                item = stage.reader.drain()
                if item is None:
                    break
                stage.process(item)
                self.activity += 1
            stage.reader.abandon(DRAIN_DEADLINE_S)

    def _roots(self) -> list[Operator]:
        roots = []
        for stage in self.sources:
            roots.extend(op for op, _ in stage.consumers)
        return roots

    def _sleep(self) -> None:
        now = self.clock.monotonic()
        wakeups = [w for w in (s.reader.next_wakeup() for s in self.sources if not s.ended) if w is not None]
        target = min(wakeups) if wakeups else now + 0.001
        delay = min(max(target - now, 0.0005), _MAX_SLEEP_S)
        self.clock.sleep(delay)

    def _close(self, graceful: bool) -> None:
        if self.finished:
            return
        self.finished = True
        for table in self.tables:
            table.close()
        errors = []
        if graceful and self.checkpointer is not None:
            try:  # what the run did since the last checkpoint is committed with one more
                self.checkpointer.take(self)
            except Exception as error:  # noqa: BLE001 - close what is open, keep what is committed
                graceful = False
                self._close_sources_and_sinks(graceful=False)
                raise ExecutionError(f"the final checkpoint failed: {error}") from error
        for sink in self.sinks:
            if graceful:
                try:
                    sink.close()
                except Exception as error:  # noqa: BLE001 - keep closing the rest
                    errors.append(error)
        if graceful:
            for stage in self.sources:
                stage.release_acks()  # sinks are flushed: what their state no longer holds is done
        errors += self._close_sources_and_sinks(graceful)
        if graceful and errors:
            raise ExecutionError(f"closing the pipeline failed: {errors[0]}") from errors[0]

    def _close_sources_and_sinks(self, graceful: bool) -> list[Exception]:
        errors = []
        for stage in self.sources:
            try:
                stage.close()
            except Exception as error:  # noqa: BLE001 - keep closing the rest
                errors.append(error)
        for sink in self.sinks:
            try:
                sink.close() if graceful else sink.abort()  # a failed run does not replace earlier output
            except Exception as error:  # noqa: BLE001
                errors.append(error)
        self.dead_letters.close()
        return errors

    def state_rows(self) -> int:
        return sum(size.rows for _, size in self.state.sizes())

    def _rows_out(self) -> int:
        return sum(s.rows_out for s in self.sinks)

    def _position(self) -> str:
        """How far each source was read: ``12,000 rows of events, 40 rows of users``."""
        return ", ".join(f"{s.metrics.rows_in:,} rows of {s.name}" for s in self.sources)

    def summary(self) -> RunSummary:
        stopped = self._stop.is_set() and not all(s.ended for s in self.sources)
        return RunSummary(
            elapsed_s=time.monotonic() - self._started,
            sources={
                s.name: {"rows_in": s.metrics.rows_in, "records_in": s.metrics.records_in, "watermark": s.watermark,
                         "problems": s.reader.problems()}
                for s in self.sources
            },
            sinks={s.sink_name: s.rows_out for s in self.sinks},
            dead_letters=self.dead_letters.by_reason(),
            skipped=self.dead_letters.skipped_by_reason(),
            stopped=stopped,
            open_state_rows=self.state_rows() if stopped else 0,
            peak_state=self.state.peak,
            checkpoints=None if self.checkpointer is None else self.checkpointer.stats,
            tables={t.name: t.status() for t in self.tables},
            stopped_by=self.stop_reason if self._stop.is_set() else None,
            targets={s.sink_name: s.output_path() for s in self.sinks if s.output_path()},
            dead_letter_path=self.dead_letters.path,
        )


def print_warning(text: str) -> None:
    print(f"sqlstream: {text}", file=sys.stderr, flush=True)
