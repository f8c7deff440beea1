"""The Prometheus view of a running pipeline: a collector that reads the driver's own
counters when ``/metrics`` is scraped, so the run loop does no work for metrics.

It reads what ``SHOW METRICS`` reads (source stages, sinks, the dead-letter output, the
state tracker, the checkpointer, each reader's ``status()``) plus the operators' and
functions' counters. Labels name parts of the pipeline (``pipeline``, ``source``,
``sink``, ``operator``, ``function``, ``reason``), never data values. Reading ints and
dicts the driver thread updates is safe in CPython; a dict that changes size while it is
copied is read again.

>>> from prometheus_client import CollectorRegistry, generate_latest
>>> registry = CollectorRegistry(auto_describe=False)
>>> registry.register(PipelineCollector(lambda: None, "demo"))
>>> print(generate_latest(registry).decode().strip())
# HELP sqlstream_pipeline_ready 1 once sources and sinks are open and checkpoint state is restored
# TYPE sqlstream_pipeline_ready gauge
sqlstream_pipeline_ready{pipeline="demo"} 0.0
"""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from sqlstream.hidden import is_real_watermark
from sqlstream.operators.base import BATCH_SECONDS_BUCKETS, Operator
from sqlstream.operators.stateless import FunctionStats, StatelessOperator
from sqlstream.runtime.driver import Driver
from sqlstream.runtime.operator_ids import checkpoint_operators
from sqlstream.udf.model_versions import VersionedModel

__all__ = ["PipelineCollector", "operator_labels", "function_stats", "model_functions", "READER_COUNTERS"]

#: reader ``status()`` keys exported under their own names: counters (``_total``) and gauges;
#: other whole-number keys become ``sqlstream_source_<key>`` gauges
READER_COUNTERS = {
    "disconnects": ("reconnects", "times the connection to the server was lost and made again"),
    "slow_consumer_drops": ("slow_consumer_drops", "messages the server dropped because the reader fell behind"),
    "acked": ("acked_messages", "messages acknowledged to the server once the sinks held their rows"),
    "redelivered": ("redelivered_messages", "messages the server delivered again"),
    "duplicates_dropped": ("duplicate_messages_dropped", "redelivered messages dropped as already processed"),
    "ack_stalls": ("ack_stalls", "times delivery stalled on unacknowledged messages"),
    "refused": ("refused_messages", "messages refused by a full input queue"),
}
READER_GAUGES = {
    "held": ("ack_pending_messages", "messages received and not yet acknowledged (JetStream ack pending)"),
    "pending": ("pending_messages", "messages waiting on the server for this reader (JetStream num_pending)"),
    "queued": ("queued_messages", "messages received and not yet taken by the run loop"),
}


def _stable(read: Callable):
    """``read()``, again if the driver thread resized a dict while it was copied."""
    for _ in range(5):
        try:
            return read()
        except RuntimeError:
            continue
    return read()


def operator_labels(driver: Driver) -> list[tuple[str, Operator]]:
    """``(label, operator)`` for every operator of ``driver``: ``<index>-<kind>``, the same
    for every build of the same pipeline (the checkpoint ids' order), e.g. ``2-window_aggregate``."""
    return [(f"{ident.split('-', 1)[0]}-{op.name}", op) for ident, op in checkpoint_operators(driver.sources)]


def function_stats(operators: list[tuple[str, Operator]]) -> dict[str, FunctionStats]:
    """Python/model function counters summed over operators, by function name."""
    total: dict[str, FunctionStats] = {}
    for _, op in operators:
        if not isinstance(op, StatelessOperator):
            continue
        for name, stats in _stable(lambda op=op: list(op.function_stats.items())):
            into = total.setdefault(name, FunctionStats())
            into.calls += stats.calls
            into.rows += stats.rows
            into.seconds += stats.seconds
            into.failed_rows += stats.failed_rows
    return total


class PipelineCollector(Collector):
    """Every ``sqlstream_*`` series of the run ``driver_of()`` returns (None: not built yet)."""

    def __init__(self, driver_of: Callable[[], Driver | None], pipeline: str):
        self.driver_of = driver_of
        self.pipeline = pipeline

    def collect(self) -> Iterator[Metric]:
        driver = self.driver_of()
        p = self.pipeline
        ready = GaugeMetricFamily("sqlstream_pipeline_ready",
                                  "1 once sources and sinks are open and checkpoint state is restored",
                                  labels=["pipeline"])
        ready.add_metric([p], 1.0 if driver is not None and driver.ready and not driver.finished else 0.0)
        yield ready
        if driver is None:
            return
        yield from self._sources(driver)
        yield from self._sinks_and_dead_letters(driver)
        operators = operator_labels(driver)
        yield from self._operators(driver, operators)
        yield from self._functions(operators)
        yield from self._models(operators)
        yield from self._checkpoints(driver)

    def _family(self, kind, name: str, doc: str, labels: list[str], unit: str = ""):
        return kind(name, doc, labels=["pipeline", *labels], unit=unit)

    def _sources(self, driver: Driver) -> Iterator[Metric]:
        p = self.pipeline
        rows = self._family(CounterMetricFamily, "sqlstream_source_rows", "rows read from the source and passed on",
                            ["source"])
        records = self._family(CounterMetricFamily, "sqlstream_source_records",
                               "records received from the source, good and bad", ["source"])
        batches = self._family(CounterMetricFamily, "sqlstream_source_batches", "micro-batches read", ["source"])
        read = self._family(CounterMetricFamily, "sqlstream_source_bytes", "bytes read (files, message payloads)",
                            ["source"])
        watermark = self._family(GaugeMetricFamily, "sqlstream_source_watermark_seconds",
                                 "the source's watermark (event time, seconds since the epoch)", ["source"])
        lag = self._family(GaugeMetricFamily, "sqlstream_source_watermark_lag_seconds",
                           "wall clock minus the source's watermark", ["source"])
        idle = self._family(GaugeMetricFamily, "sqlstream_source_idle", "1 while the source is idle (idle_timeout)",
                            ["source"])
        readers: dict[str, Metric] = {}
        now_s = time.time()
        for stage in driver.sources:
            name = stage.name
            rows.add_metric([p, name], stage.metrics.rows_in)
            records.add_metric([p, name], stage.metrics.records_in)
            batches.add_metric([p, name], stage.metrics.batches)
            if stage.metrics.bytes_in is not None:
                read.add_metric([p, name], stage.metrics.bytes_in)
            wm = stage.tracker.watermark if stage.tracker is not None else None  # the data's, also once ended
            if wm is not None and is_real_watermark(wm):
                watermark.add_metric([p, name], wm / 1e6)
                lag.add_metric([p, name], now_s - wm / 1e6)
            if stage.tracker is not None:
                idle.add_metric([p, name], 1.0 if stage.tracker.idle else 0.0)
            for key, value in _stable(lambda stage=stage: dict(stage.reader.status())).items():
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    continue
                if key in READER_COUNTERS:
                    metric, doc = READER_COUNTERS[key]
                    family = CounterMetricFamily
                elif key in READER_GAUGES:
                    metric, doc = READER_GAUGES[key]
                    family = GaugeMetricFamily
                elif isinstance(value, int):
                    metric, doc = re.sub(r"[^a-zA-Z0-9_]", "_", key), f"reader status counter '{key}'"
                    family = GaugeMetricFamily
                else:
                    continue
                full = f"sqlstream_source_{metric}"
                if full not in readers:
                    readers[full] = self._family(family, full, doc, ["source"])
                readers[full].add_metric([p, name], value)
        yield from (rows, records, batches, read, watermark, lag, idle, *readers.values())

    def _sinks_and_dead_letters(self, driver: Driver) -> Iterator[Metric]:
        p = self.pipeline
        sink_rows = self._family(CounterMetricFamily, "sqlstream_sink_rows", "rows written to the sink", ["sink"])
        for sink in driver.sinks:
            sink_rows.add_metric([p, sink.sink_name], sink.rows_out)
        yield sink_rows
        dead_letters = driver.dead_letters
        letters = self._family(CounterMetricFamily, "sqlstream_dead_letters",
                               "records and rows sent to the dead-letter output", ["source", "reason"])
        skipped = self._family(CounterMetricFamily, "sqlstream_skipped_rows",
                               "records and rows dropped by on_error = 'skip'", ["source", "reason"])
        late = self._family(CounterMetricFamily, "sqlstream_late_rows",
                            "rows dropped as late (every window they belong to was emitted)", ["source"])
        counts: Counter = _stable(lambda: Counter(dead_letters.counts))
        late_by_source: Counter = Counter()
        for (source, reason), n in sorted(counts.items()):
            letters.add_metric([p, source, reason], n)
            if reason == "late":
                late_by_source[source] += n
        for (source, reason), n in sorted(_stable(lambda: Counter(dead_letters.skipped)).items()):
            skipped.add_metric([p, source, reason], n)
        for stage in driver.sources:
            late.add_metric([p, stage.name], late_by_source.get(stage.name, 0))
        yield from (letters, skipped, late)

    def _operators(self, driver: Driver, operators: list[tuple[str, Operator]]) -> Iterator[Metric]:
        p = self.pipeline
        rows_in = self._family(CounterMetricFamily, "sqlstream_operator_rows_in", "rows into the operator", ["operator"])
        rows_out = self._family(CounterMetricFamily, "sqlstream_operator_rows_out", "rows the operator emitted",
                                ["operator"])
        batches = self._family(CounterMetricFamily, "sqlstream_operator_batches", "micro-batches into the operator",
                               ["operator"])
        busy = self._family(CounterMetricFamily, "sqlstream_operator_busy_seconds",
                            "time spent in the operator itself (downstream operators excluded)", ["operator"])
        durations = self._family(HistogramMetricFamily, "sqlstream_operator_batch_seconds",
                                 "time the operator itself spent on each micro-batch", ["operator"])
        state_rows = self._family(GaugeMetricFamily, "sqlstream_operator_state_rows", "rows of state held",
                                  ["operator"])
        state_bytes = self._family(GaugeMetricFamily, "sqlstream_operator_state_bytes",
                                   "estimated bytes of state held", ["operator"])
        for label, op in operators:
            rows_in.add_metric([p, label], op.rows_in)
            rows_out.add_metric([p, label], op.rows_out)
            batches.add_metric([p, label], op.batches_in)
            busy.add_metric([p, label], max(op.busy_s, 0.0))
            durations.add_metric([p, label], _cumulative(op.batch_seconds), sum_value=max(op.busy_s, 0.0))
            if op.state_hint is not None:
                size = _stable(op.state_size)
                state_rows.add_metric([p, label], size.rows)
                state_bytes.add_metric([p, label], size.bytes)
        yield from (rows_in, rows_out, batches, busy, durations, state_rows, state_bytes)

    def _functions(self, operators: list[tuple[str, Operator]]) -> Iterator[Metric]:
        p = self.pipeline
        calls = self._family(CounterMetricFamily, "sqlstream_function_calls",
                             "vectorized calls of a Python/model function (one per micro-batch)", ["function"])
        rows = self._family(CounterMetricFamily, "sqlstream_function_rows", "rows passed to the function", ["function"])
        seconds = self._family(CounterMetricFamily, "sqlstream_function_seconds", "time spent in the function",
                               ["function"])
        failed = self._family(CounterMetricFamily, "sqlstream_function_failed_rows",
                              "rows the function failed on (dead letters with reason udf or timeout)", ["function"])
        for name, stats in sorted(function_stats(operators).items()):
            calls.add_metric([p, name], stats.calls)
            rows.add_metric([p, name], stats.rows)
            seconds.add_metric([p, name], stats.seconds)
            failed.add_metric([p, name], stats.failed_rows)
        yield from (calls, rows, seconds, failed)

    def _models(self, operators: list[tuple[str, Operator]]) -> Iterator[Metric]:
        """Model functions the run calls: version, swaps, refused reloads, shadow comparison."""
        p = self.pipeline
        counter, gauge = CounterMetricFamily, GaugeMetricFamily
        families = {
            "version": self._family(gauge, "sqlstream_model_version", "number of the model version serving", ["function"]),
            "swaps": self._family(counter, "sqlstream_model_swaps", "model versions swapped in while queries ran",
                                  ["function"]),
            "reload_failures": self._family(counter, "sqlstream_model_reload_failures",
                                            "changed model files refused (did not load, or another signature)",
                                            ["function"]),
            "shadow_rows": self._family(counter, "sqlstream_model_shadow_rows",
                                        "rows scored by both the model and its shadow", ["function"]),
            "shadow_failures": self._family(counter, "sqlstream_model_shadow_failures",
                                            "batches the shadow model failed on (output unchanged)", ["function"]),
            "shadow_agreement": self._family(gauge, "sqlstream_model_shadow_agreement",
                                             "share of compared rows whose labels/argmax agree", ["function"]),
            "shadow_mean_abs_diff": self._family(gauge, "sqlstream_model_shadow_mean_abs_diff",
                                                 "mean absolute difference of the shadow's numbers", ["function"]),
            "shadow_max_abs_diff": self._family(gauge, "sqlstream_model_shadow_max_abs_diff",
                                                "largest absolute difference of the shadow's numbers", ["function"]),
        }
        for model in model_functions(operators):
            status = model.status()
            status["version"] = model.current.number
            for key, family in families.items():
                if status[key] is not None and (key == "version" or status["shadow"] or not key.startswith("shadow")):
                    family.add_metric([p, model.name], status[key])
        yield from families.values()

    def _checkpoints(self, driver: Driver) -> Iterator[Metric]:
        if driver.checkpointer is None:
            return
        p = self.pipeline
        stats = driver.checkpointer.stats
        taken = self._family(CounterMetricFamily, "sqlstream_checkpoints", "checkpoints taken by this run", [])
        taken.add_metric([p], stats.taken)
        spent = self._family(CounterMetricFamily, "sqlstream_checkpoint_duration_seconds",
                             "time spent taking checkpoints", [])
        spent.add_metric([p], stats.total_duration_ms / 1000)
        gauges = [
            ("sqlstream_checkpoint_last_duration_seconds", "how long the last checkpoint took",
             stats.last_duration_ms / 1000),
            ("sqlstream_checkpoint_last_size_bytes", "estimated bytes of state in the last checkpoint",
             stats.last_state_bytes),
            ("sqlstream_checkpoint_last_state_rows", "rows of state in the last checkpoint", stats.last_state_rows),
            ("sqlstream_checkpoint_last_epoch", "epoch of the last checkpoint", stats.last_epoch),
        ]
        if stats.taken and stats.last_at is not None:
            gauges.append(("sqlstream_checkpoint_age_seconds", "time since the last checkpoint",
                           driver.clock.monotonic() - stats.last_at))
        yield taken
        yield spent
        for name, doc, value in gauges:
            family = self._family(GaugeMetricFamily, name, doc, [])
            family.add_metric([p], value)
            yield family


def model_functions(operators: list[tuple[str, Operator]]) -> list[VersionedModel]:
    """The model functions (versioned handles) that the run's operators call."""
    found: dict[int, VersionedModel] = {}
    for _, op in operators:
        step = op.udf_step if isinstance(op, StatelessOperator) else None
        for call in step.calls if step is not None else ():
            if isinstance(call.impl, VersionedModel):
                found.setdefault(id(call.impl), call.impl)
    return sorted(found.values(), key=lambda m: m.name)


def _cumulative(counts: list[int]) -> list[tuple[str, int]]:
    """Per-bucket counts as Prometheus buckets: cumulative, by upper bound, ``+Inf`` last."""
    buckets, total = [], 0
    for bound, count in zip([*map(str, BATCH_SECONDS_BUCKETS), "+Inf"], list(counts)):
        total += count
        buckets.append((bound, total))
    return buckets
