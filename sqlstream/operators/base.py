"""Push-based streaming operators.

Data moves downstream as Arrow record batches, event time as watermarks (µs since
the epoch, ``int``), and the end of a bounded input as ``on_end``. An operator with
several inputs (``ports``) sees the minimum watermark of the inputs that are neither
idle nor ended. Hidden columns (prefix ``__``) travel with the rows:

``__wm`` (the watermark *before* this row arrived at its source, which makes lateness
a per-row property independent of batch sizes) and ``__op`` (the change kind of an
updating result); see ``sqlstream.hidden``.

Every operator counts what passes it, per batch (never per row), for metrics and
EXPLAIN ANALYZE: ``rows_in``, ``rows_out``, ``batches_in`` and ``busy_s``, the time spent
in its own ``on_batch`` / ``on_watermark`` / ``on_end`` without what operators downstream
of it spent on what it emitted.
"""

from __future__ import annotations

from bisect import bisect_left
from time import perf_counter
from typing import Callable

import pyarrow as pa

from sqlstream.hidden import MAX_WATERMARK, MIN_WATERMARK
from sqlstream.operators.snapshot import OperatorSnapshot
from sqlstream.operators.state_size import NO_STATE, StateSize

__all__ = ["Operator", "StateSize", "IntervalTimer"]

#: upper bounds (s) of the per-batch time buckets (``Operator.batch_seconds``; the metrics
#: endpoint's ``sqlstream_operator_batch_seconds`` histogram)
BATCH_SECONDS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class IntervalTimer:
    """Processing-time ticks every ``interval_us`` (EMIT EVERY); None never fires."""

    def __init__(self, interval_us: int | None):
        self.interval_us = interval_us
        self.last_us: int | None = None  # processing time of the last tick (kept by checkpoints)

    def due(self, now_us: int) -> bool:
        if self.interval_us is None:
            return False
        if self.last_us is None:
            self.last_us = now_us
            return False
        if now_us - self.last_us < self.interval_us:
            return False
        self.last_us = now_us
        return True


class Operator:
    """Base class. Subclasses override ``on_batch`` and, if stateful, ``on_watermark``
    and ``state_size``."""

    name = "operator"
    #: what bounds this operator's state, said to a user whose state grows too large
    #: (None: the operator holds no state)
    state_hint: str | None = None

    def __init__(self, ports: int = 1):
        self.outputs: list[tuple["Operator", int]] = []
        self.ports = ports
        self.port_watermarks = [MIN_WATERMARK] * ports
        self.port_ended = [False] * ports
        self.port_idle = [False] * ports
        self.watermark = MIN_WATERMARK
        self.ended = False
        self.dead_letter: Callable | None = None  # set by the runtime: (DeadLetter list) -> None
        self.rows_in = 0
        self.rows_out = 0
        self.batches_in = 0
        self.busy_s = 0.0  # own time (s) in on_batch/on_watermark/on_end, downstream excluded
        self._timing = 0  # > 0 while one of those runs: emitting then subtracts downstream time
        #: micro-batches by their own time in ``on_batch``: counts per bucket of BATCH_SECONDS_BUCKETS
        self.batch_seconds = [0] * (len(BATCH_SECONDS_BUCKETS) + 1)

    # -- wiring ---------------------------------------------------------------------------

    def connect(self, downstream: "Operator", port: int = 0) -> "Operator":
        self.outputs.append((downstream, port))
        return downstream

    def walk(self):
        """This operator and everything downstream of it, each once."""
        seen: set[int] = set()
        stack: list[Operator] = [self]
        while stack:
            op = stack.pop()
            if id(op) in seen:
                continue
            seen.add(id(op))
            yield op
            stack.extend(o for o, _ in op.outputs)

    # -- inputs ---------------------------------------------------------------------------

    def push(self, batch: pa.RecordBatch, port: int = 0) -> None:
        n = batch.num_rows
        if n:
            self.rows_in += n
            self.batches_in += 1
            self._timing += 1
            before = self.busy_s
            start = perf_counter()
            try:
                self.on_batch(batch, port)
            finally:
                self.busy_s += perf_counter() - start
                self._timing -= 1
                self.batch_seconds[bisect_left(BATCH_SECONDS_BUCKETS, self.busy_s - before)] += 1

    def _timed(self, call: Callable, *args) -> None:
        """Run one of the ``on_*`` hooks, counting its time in ``busy_s``."""
        self._timing += 1
        start = perf_counter()
        try:
            call(*args)
        finally:
            self.busy_s += perf_counter() - start
            self._timing -= 1

    def advance(self, watermark: int, port: int = 0) -> None:
        if watermark <= self.port_watermarks[port]:
            return
        self.port_watermarks[port] = watermark
        combined = self.combined_watermark()
        if combined > self.watermark:
            self.watermark = combined
            self._timed(self.on_watermark, combined)

    def set_idle(self, idle: bool, port: int = 0) -> None:
        """An input went quiet (``idle_timeout``) or woke up: it stops / resumes holding
        the watermark back. An operator whose live inputs are all idle is idle itself."""
        if self.port_idle[port] == idle:
            return
        self.port_idle[port] = idle
        combined = self.combined_watermark()
        if combined > self.watermark:
            self.watermark = combined
            self.on_watermark(combined)
        all_idle = all(i or e for i, e in zip(self.port_idle, self.port_ended))
        for op, out_port in self.outputs:
            op.set_idle(all_idle, out_port)

    def end(self, port: int = 0) -> None:
        if self.port_ended[port]:
            return
        self.port_ended[port] = True
        self.advance(MAX_WATERMARK, port)
        if all(self.port_ended):
            self.ended = True
            self._timed(self.on_end)

    def tick(self, now_us: int) -> None:
        """Processing time passed (EMIT EVERY, roll intervals). Default: forward."""
        for op, _ in self.outputs:
            op.tick(now_us)

    def combined_watermark(self) -> int:
        live = [wm for wm, ended, idle in zip(self.port_watermarks, self.port_ended, self.port_idle) if not idle]
        if not live:  # every input idle: the most advanced one leads
            return max(self.port_watermarks)
        return min(live)

    # -- to override -------------------------------------------------------------------------

    def on_batch(self, batch: pa.RecordBatch, port: int) -> None:
        self.emit(batch)

    def on_watermark(self, watermark: int) -> None:
        self.emit_watermark(watermark)

    def on_end(self) -> None:
        self.emit_end()

    def state_size(self) -> StateSize:
        """Rows of state held and their estimated bytes, from what the operator keeps
        (never a scan over the rows: the runtime asks after every micro-batch)."""
        return NO_STATE

    def state_rows(self) -> int:
        """Rows of state held (for metrics, EXPLAIN and memory tests)."""
        return self.state_size().rows

    def retention_start(self) -> int | None:
        """Lower bound (µs) on the event time of input rows whose contribution this
        operator still holds back (open windows, join state); None when it holds none.
        Sources acknowledge input (e.g. JetStream) only below this bound."""
        return None

    # -- checkpoints ---------------------------------------------------------------------------

    #: the layout of this operator's ``state_values``/``state_tables``: bump it when they
    #: change, so a checkpoint written by another version is refused instead of misread
    state_version: int = 1

    def snapshot(self) -> OperatorSnapshot:
        """This operator's state between two driver steps: its input watermarks and ends
        (every operator) plus what a stateful subclass returns from ``state_values`` and
        ``state_tables``. Tables are shared, not copied: Arrow data is immutable."""
        values = {
            "port_watermarks": list(self.port_watermarks),
            "port_ended": list(self.port_ended),
            "port_idle": list(self.port_idle),
            "watermark": self.watermark,
            "ended": self.ended,
        }
        own = self.state_values()
        if own:
            values["state"] = own
        return OperatorSnapshot(type(self).__name__, self.state_version, values, self.state_tables())

    def restore(self, snapshot: OperatorSnapshot) -> None:
        """Take the state ``snapshot`` describes, on a freshly built operator of the same
        plan, before any input arrives. Nothing is emitted."""
        values = snapshot.values
        self.port_watermarks = list(values["port_watermarks"])
        self.port_ended = list(values["port_ended"])
        self.port_idle = list(values["port_idle"])
        self.watermark = values["watermark"]
        self.ended = values["ended"]
        self.load_state(values.get("state", {}), snapshot.tables)

    def state_values(self) -> dict:
        """A stateful operator's small state as JSON values (e.g. the watermark up to which
        windows were emitted, counters). Default: none."""
        return {}

    def state_tables(self) -> dict[str, pa.Table]:
        """A stateful operator's rows of state as Arrow tables, by a name the operator
        chooses (e.g. ``{"partials": ..., "left": ..., "right": ...}``). Default: none."""
        return {}

    def load_state(self, values: dict, tables: dict[str, pa.Table]) -> None:  # noqa: B027 (optional hook)
        """The inverse of ``state_values``/``state_tables``."""

    # -- outputs -------------------------------------------------------------------------------

    def emit(self, batch: pa.RecordBatch) -> None:
        n = batch.num_rows
        if n:
            self.rows_out += n
            start = perf_counter()
            for op, port in self.outputs:
                op.push(batch, port)
            if self._timing:  # downstream's time is downstream's
                self.busy_s -= perf_counter() - start

    def emit_watermark(self, watermark: int) -> None:
        start = perf_counter()
        for op, port in self.outputs:
            op.advance(watermark, port)
        if self._timing:
            self.busy_s -= perf_counter() - start

    def emit_end(self) -> None:
        start = perf_counter()
        for op, port in self.outputs:
            op.end(port)
        if self._timing:
            self.busy_s -= perf_counter() - start
