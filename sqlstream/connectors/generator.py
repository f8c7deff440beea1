"""``connector = 'generator'``: synthetic rows, rate-limited or as fast as possible.

Values are generated in fixed chunks from a counter-based seed ``(seed, column,
chunk)``, so a run is reproducible whatever batch sizes the rate limiter produces.

Position (checkpoints): ``{"rows": N, "time_base_us": T}``, the rows produced and the
event time of row 0. A resumed run produces rows N, N+1, ... exactly as the first run
would have (event time ``T + row * step`` included, so it continues where it stopped
rather than jumping to the resumed run's wall clock); with a rate limit it goes on at
that rate from the moment it resumes. The one exception: ``clock = 'wall'`` with
``rows_per_second = 0`` and no ``step`` has no rate to step by, so each batch's rows are
spread evenly over the wall time since the previous batch (the last row carries the
time the batch is made); the rows after N carry the resumed run's time.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from sqlstream.batches import string_array
from sqlstream.connectors.base import RunContext, SourceBatch, SourceConnector, SourceReader
from sqlstream.connectors.options import OptionSpec
from sqlstream.connectors.registry import register_source
from sqlstream.durations import parse_duration_us
from sqlstream.errors import ConnectorError, Location

__all__ = ["GeneratorSource"]

_CHUNK = 4096
_KINDS = ("sequence", "random", "values", "event_time")
_ALPHABET = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789", dtype=np.uint8)


def _parse_iso_us(text: str) -> int:
    value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return int(value.timestamp() * 1_000_000)


def _check_iso(text: str) -> str | None:
    try:
        _parse_iso_us(text)
    except ValueError:
        return "expected an ISO timestamp such as '2024-01-01T00:00:00'"
    return None


def _bound(field: pa.Field, spec: dict[str, Any], key: str, where: Location | None, whole: bool = False) -> float | int | None:
    """``fields.<col>.min/max/length`` as a number: whole for integer and date columns
    (and lengths), any number for floating and decimal ones."""
    if key not in spec:
        return None
    t = field.type
    if pa.types.is_fixed_size_list(t) or pa.types.is_list(t):
        t = t.value_type
    if not whole and not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_date(t)):
        raise ConnectorError(
            f"fields.{field.name}.{key} does not apply to column '{field.name}' of type {field.type}",
            location=where,
            hint="min and max bound numeric and DATE columns (a DATE as days since 1970-01-01)",
        )
    whole = whole or pa.types.is_integer(t) or pa.types.is_date(t)
    value = float(spec[key])  # the option is declared a number, so it is one already
    if whole and not value.is_integer():
        raise ConnectorError(f"fields.{field.name}.{key} = {spec[key]} is not a whole number (column '{field.name}' is {field.type})", location=where)
    return int(value) if whole else value


class _ColumnGen:
    """Vectorized generation of one column for rows [start, start+n)."""

    def __init__(self, field: pa.Field, index: int, spec: dict[str, Any], seed: int, where: Location | None):
        self.field = field
        self.index = index
        self.seed = seed
        t = field.type
        default_kind = "event_time" if pa.types.is_timestamp(t) else "random"
        self.kind = str(spec.get("kind", default_kind)).lower()
        if self.kind not in _KINDS:
            raise ConnectorError(
                f"fields.{field.name}.kind = '{self.kind}' is not a generator kind",
                location=where,
                hint=f"use one of {', '.join(_KINDS)}",
            )
        self.min = _bound(field, spec, "min", where)
        self.max = _bound(field, spec, "max", where)
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ConnectorError(
                f"fields.{field.name}.min ({self.min}) is greater than fields.{field.name}.max ({self.max})", location=where
            )
        self.length = int(_bound(field, spec, "length", where, whole=True) or 8)
        self.step_us = parse_duration_us(spec["step"]) if "step" in spec else None
        self.max_delay_us = parse_duration_us(spec["max_delay"]) if "max_delay" in spec else 0
        self.values = None
        if self.kind == "values":
            if "values" not in spec:
                raise ConnectorError(f"fields.{field.name}.kind = 'values' needs fields.{field.name}.values = 'a,b,c'", location=where)
            texts = [v.strip() for v in str(spec["values"]).split(",")]
            try:
                self.values = string_array(texts).cast(t)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                raise ConnectorError(f"fields.{field.name}.values do not fit {t}: {error}", location=where) from error
        if self.kind == "event_time" and not pa.types.is_timestamp(t):
            raise ConnectorError(f"fields.{field.name}.kind = 'event_time' needs a TIMESTAMP column", location=where)
        if self.kind == "sequence" and not pa.types.is_integer(t):
            raise ConnectorError(f"fields.{field.name}.kind = 'sequence' needs an integer column", location=where)
        supported = (
            pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_string(t) or pa.types.is_boolean(t)
            or pa.types.is_timestamp(t) or pa.types.is_fixed_size_list(t) or pa.types.is_decimal(t)
            or pa.types.is_date(t) or pa.types.is_list(t)
        )
        if not supported and self.kind != "values":
            raise ConnectorError(
                f"the generator cannot produce column '{field.name}' of type {t}",
                location=where,
                hint="use fields.<col>.kind = 'values' or another connector",
            )

    @property
    def sequence_length(self) -> int | None:
        if self.kind == "sequence" and self.max is not None:
            return int(self.max) - int(self.min or 0) + 1
        return None

    def _rng(self, chunk: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.index, chunk])

    def _chunk(self, chunk: int) -> pa.Array:
        n = _CHUNK
        rng = self._rng(chunk)
        if self.kind == "sequence":
            start = chunk * _CHUNK + int(self.min or 0)
            return pa.array(np.arange(start, start + n, dtype=np.int64)).cast(self.field.type)
        if self.kind == "values":
            return self.values.take(pa.array(rng.integers(0, len(self.values), n)))
        return self._random(rng, n, self.field.type)

    def _random(self, rng: np.random.Generator, n: int, t: pa.DataType) -> pa.Array:
        if pa.types.is_boolean(t):
            return pa.array(rng.integers(0, 2, n).astype(bool))
        if pa.types.is_integer(t):
            low = int(self.min) if self.min is not None else 0
            high = int(self.max) if self.max is not None else 1000
            return pa.array(rng.integers(low, high + 1, n)).cast(t)
        if pa.types.is_floating(t) or pa.types.is_decimal(t):
            low = float(self.min) if self.min is not None else 0.0
            high = float(self.max) if self.max is not None else 1.0
            values = pa.array(rng.uniform(low, high, n))
            return values.cast(t, safe=False) if pa.types.is_decimal(t) else values.cast(t)
        if pa.types.is_string(t):
            codes = _ALPHABET[rng.integers(0, len(_ALPHABET), n * self.length)]
            offsets = pa.array(np.arange(0, n * self.length + 1, self.length, dtype=np.int32))
            return pa.StringArray.from_buffers(n, offsets.buffers()[1], pa.py_buffer(codes.tobytes()))
        if pa.types.is_date(t):
            low = int(self.min) if self.min is not None else 19000
            high = int(self.max) if self.max is not None else 20000
            return pa.array(rng.integers(low, high + 1, n).astype(np.int32), pa.date32())
        if pa.types.is_fixed_size_list(t) or pa.types.is_list(t):
            size = t.list_size if pa.types.is_fixed_size_list(t) else 4
            values = self._random(rng, n * size, t.value_type)
            if pa.types.is_fixed_size_list(t):
                return pa.FixedSizeListArray.from_arrays(values, type=t)
            return pa.ListArray.from_arrays(pa.array(np.arange(0, n * size + 1, size, dtype=np.int32)), values).cast(t)
        raise AssertionError(t)


def _seconds(elapsed: float) -> float:
    """A difference of two monotonic readings, rounded to the microsecond: readings near
    1.7e9 s (a manual clock on epoch time) carry float noise below that, which would
    make exactly 0.1 s at 100 rows/s come out as 9 rows."""
    return round(elapsed, 6)


class _GeneratorReader(SourceReader):
    def __init__(self, connector: "GeneratorSource", ctx: RunContext):
        self.c = connector
        self.ctx = ctx
        self.clock = ctx.clock
        resumed = ctx.start_position or {}
        self.emitted = int(resumed.get("rows", 0))
        self.total = connector.total_rows
        self.bounded = self.total is not None
        self.rate = connector.config["rows_per_second"]
        self.resumed_from = self.emitted  # rows of earlier runs: due at once, the rest follow at the rate
        self.t0 = self.clock.monotonic()
        self.last_emit = self.t0
        simulated = connector.config["clock"] == "simulated"
        start = connector.config["clock_start"]
        self.time_base_us = int(resumed["time_base_us"]) if "time_base_us" in resumed else (
            _parse_iso_us(start) if (simulated and start) else (1_704_067_200_000_000 if simulated else self.clock.now_us())
        )
        step = connector.time_step_us
        self.wall_stamped = not simulated and self.rate <= 0 and step is None  # see the module docstring
        self.last_stamp_us = self.clock.now_us()
        self.step_us = step if step is not None else (1_000_000 / self.rate if self.rate > 0 else 1_000)
        self._cache: dict[tuple[int, int], pa.Array] = {}
        self.batch_size = ctx.batch_size

    @property
    def exhausted(self) -> bool:
        return self.total is not None and self.emitted >= self.total

    def _due(self, now: float) -> int:
        if self.rate <= 0:
            due = self.emitted + self.batch_size
        else:
            due = self.resumed_from + int(_seconds(now - self.t0) * self.rate)
        return due if self.total is None else min(due, self.total)

    def next_wakeup(self) -> float | None:
        if self.rate <= 0 or self.exhausted:
            return None
        timeout = self.ctx.batch_timeout_us / 1e6
        next_row = self.t0 + (self.emitted - self.resumed_from + 1) / self.rate
        full_batch = self.t0 + (self.emitted - self.resumed_from + self.batch_size) / self.rate
        return max(next_row, min(self.last_emit + timeout, full_batch))

    def poll(self) -> SourceBatch | None:
        if self.exhausted:
            return None
        now = self.clock.monotonic()
        pending = self._due(now) - self.emitted
        if pending <= 0:
            return None
        last_rows = self.total is not None and self.emitted + pending >= self.total  # nothing more to wait for
        if (
            self.rate > 0
            and pending < self.batch_size
            and not last_rows
            and _seconds(now - self.last_emit) < self.ctx.batch_timeout_us / 1e6
        ):
            return None
        n = min(pending, self.batch_size)
        batch = self._rows(self.emitted, n)
        self.emitted += n
        self.last_emit = now
        return SourceBatch(batch, raw_count=n)

    def position(self) -> dict | None:
        """The rows produced so far and the event time of row 0 (see the module docstring)."""
        return {"rows": self.emitted, "time_base_us": self.time_base_us}

    def _column_chunk(self, gen: _ColumnGen, chunk: int) -> pa.Array:
        key = (gen.index, chunk)
        if key not in self._cache:
            if len(self._cache) > 4 * len(self.c.generators):
                self._cache.clear()
            self._cache[key] = self._event_chunk(gen, chunk) if gen.kind == "event_time" else gen._chunk(chunk)
        return self._cache[key]

    def _event_chunk(self, gen: _ColumnGen, chunk: int) -> pa.Array:
        rows = np.arange(chunk * _CHUNK, (chunk + 1) * _CHUNK, dtype=np.float64)
        times = (self.time_base_us + rows * self.step_us).astype(np.int64)
        return _event_times(gen, chunk * _CHUNK, times)

    def _wall_times(self, n: int) -> np.ndarray:
        """``n`` times spread evenly from the previous batch's stamp to now."""
        now = max(self.clock.now_us(), self.last_stamp_us)
        times = self.last_stamp_us + (now - self.last_stamp_us) * np.arange(1, n + 1, dtype=np.int64) // n
        self.last_stamp_us = now
        return times

    def _rows(self, start: int, n: int) -> pa.RecordBatch:
        first, last = start // _CHUNK, (start + n - 1) // _CHUNK
        times = self._wall_times(n) if self.wall_stamped else None
        columns = []
        for gen in self.c.generators:
            if times is not None and gen.kind == "event_time":
                columns.append(_event_times(gen, start, times))
                continue
            pieces = [self._column_chunk(gen, chunk) for chunk in range(first, last + 1)]
            whole = pa.concat_arrays(pieces) if len(pieces) > 1 else pieces[0]
            columns.append(whole.slice(start - first * _CHUNK, n))
        return pa.RecordBatch.from_arrays(columns, schema=self.c.schema)


def _event_times(gen: _ColumnGen, start: int, times: np.ndarray) -> pa.Array:
    """``times`` (µs) of rows ``start, start + 1, ...`` as the column's type, each moved
    back by up to ``max_delay``, drawn from its chunk's seed."""
    if gen.max_delay_us:
        first, last = start // _CHUNK, (start + len(times) - 1) // _CHUNK
        draws = [gen._rng(chunk).integers(0, gen.max_delay_us + 1, _CHUNK) for chunk in range(first, last + 1)]
        offset = start - first * _CHUNK
        times = times - np.concatenate(draws)[offset: offset + len(times)]
    return pa.array(times, pa.timestamp("us")).cast(gen.field.type, safe=False)


@register_source
class GeneratorSource(SourceConnector):
    name = "generator"
    can_back_table = True
    replayable = True
    options = (
        OptionSpec("rows_per_second", "int", default=1000, doc="rate limit; 0 = as fast as possible",
                   check=lambda v: None if v >= 0 else "must be >= 0"),
        OptionSpec("max_rows", "int", doc="bounded: stop after this many rows", check=lambda v: None if v >= 0 else "must be >= 0"),
        OptionSpec("seed", "int", default=0, doc="random seed (runs are reproducible)"),
        OptionSpec("clock", "choice", default="wall", choices=("wall", "simulated"), doc="event-time clock"),
        OptionSpec("clock_start", "str", doc="simulated clock start (ISO timestamp)", check=_check_iso),
        OptionSpec("fields.*.kind", "str", doc="sequence | random | values | event_time"),
        OptionSpec("fields.*.min", "float"),
        OptionSpec("fields.*.max", "float"),
        OptionSpec("fields.*.length", "int"),
        OptionSpec("fields.*.values", "str"),
        OptionSpec("fields.*.max_delay", "str", doc="random out-of-order jitter, e.g. '2s'"),
        OptionSpec("fields.*.step", "str", doc="event-time step per row when rows_per_second = 0"),
    )

    def validate(self, where: Location | None) -> None:
        per_column: dict[str, dict[str, Any]] = {}
        for key, value in self.config.items():
            if key.startswith("fields.") and value is not None:
                _, column, attribute = key.split(".", 2)
                if column not in self.schema.names:
                    from sqlstream.errors import did_you_mean

                    raise ConnectorError(
                        f"option '{key}' names unknown column '{column}'",
                        location=where,
                        hint=did_you_mean(column, self.schema.names),
                    )
                if attribute in ("max_delay", "step"):
                    try:
                        parse_duration_us(value)
                    except ValueError as error:
                        raise ConnectorError(f"option '{key}': {error}", location=where) from error
                per_column.setdefault(column, {})[attribute] = value
        self.generators = [
            _ColumnGen(field, i, per_column.get(field.name, {}), self.config["seed"], where)
            for i, field in enumerate(self.schema)
        ]
        bounds = [g.sequence_length for g in self.generators if g.sequence_length is not None]
        limit = self.config["max_rows"]
        self.total_rows = min([*bounds, *([limit] if limit is not None else [])]) if (bounds or limit is not None) else None
        steps = [parse_duration_us(g) for g in (per_column.get(f.name, {}).get("step") for f in self.schema) if g]
        self.time_step_us = steps[0] if steps else None

    def open(self, ctx: RunContext) -> SourceReader:
        return _GeneratorReader(self, ctx)

    @property
    def bounded(self) -> bool:
        return self.total_rows is not None

    def check_table(self, where: Location | None) -> None:
        if not self.bounded:
            raise ConnectorError(f"TABLE {self.source_name} must be bounded", location=where, hint="set max_rows, or use a file")

    def describe(self) -> str:
        rate = self.config["rows_per_second"]
        bound = f", max_rows={self.total_rows}" if self.total_rows is not None else ""
        return f"generator(rows_per_second={rate or 'max'}{bound})"
