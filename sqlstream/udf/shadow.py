"""Shadow runs: a candidate model scored on every batch beside the serving model, its
results compared and thrown away, so a new version can be judged on live data before
it serves (``CREATE FUNCTION f AS MODEL 'v1.onnx' WITH (shadow = 'v2.onnx')``).

What is compared, per output field (a STRUCT result is taken field by field), over the
rows where both results are non-NULL:

* labels (integer, string or boolean scalars) and the argmax of a fixed-size list of
  numbers (class probabilities): a row *agrees* when every such field is equal;
* numbers (scalars and list elements): the absolute difference, summed (for the mean)
  and its maximum.

A shadow call that raises is counted and logged; the serving model's output is
returned either way.

>>> import pyarrow as pa
>>> c = compare(pa.array([[0.9, 0.1], [0.2, 0.8]], pa.list_(pa.float32(), 2)),
...             pa.array([[0.7, 0.3], [0.6, 0.4]], pa.list_(pa.float32(), 2)))
>>> (c.rows, c.label_rows, c.agreeing, c.values, round(c.abs_diff_max, 3))
(2, 2, 1, 4, 0.4)
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Comparison", "ShadowStats", "ShadowedModel", "compare"]

LOG = logging.getLogger("sqlstream.udf")


@dataclass
class Comparison:
    """One batch's comparison of the serving model's results with the shadow's."""

    rows: int = 0  # rows where both results are non-NULL
    label_rows: int = 0  # of those, rows with a label or argmax to compare
    agreeing: int = 0  # of those, rows whose labels/argmax are all equal
    values: int = 0  # numbers compared (list elements count one each)
    abs_diff_sum: float = 0.0
    abs_diff_max: float = 0.0


class ShadowStats:
    """Comparisons summed over batches (and queries) for one model function."""

    def __init__(self):
        self._lock = threading.Lock()
        self.total = Comparison()
        self.failures = 0  # batches the shadow failed on
        self.last_failure = ""

    def add(self, c: Comparison) -> None:
        with self._lock:
            t = self.total
            t.rows += c.rows
            t.label_rows += c.label_rows
            t.agreeing += c.agreeing
            t.values += c.values
            t.abs_diff_sum += c.abs_diff_sum
            t.abs_diff_max = max(t.abs_diff_max, c.abs_diff_max)

    def failed(self, message: str) -> bool:
        """Count a failure; True when it should be logged (first of its kind)."""
        with self._lock:
            self.failures += 1
            new = message != self.last_failure
            self.last_failure = message
            return new

    @property
    def agreement(self) -> float | None:
        """Share of compared rows whose labels/argmax agree (None: nothing to compare)."""
        t = self.total
        return t.agreeing / t.label_rows if t.label_rows else None

    @property
    def mean_abs_diff(self) -> float | None:
        t = self.total
        return t.abs_diff_sum / t.values if t.values else None

    @property
    def max_abs_diff(self) -> float | None:
        return self.total.abs_diff_max if self.total.values else None


class ShadowedModel:
    """The serving model for one batch, with the shadow scored beside it."""

    kind = "model"
    is_async = False

    def __init__(self, model, shadow, stats: ShadowStats, shadow_path: str):
        self.model = model
        self.shadow = shadow
        self.stats = stats
        self.shadow_path = shadow_path
        self.name = model.name
        self.return_type = model.return_type

    def prepare(self, args: list[pa.Array]) -> list[pa.Array]:
        return self.model.prepare(args)

    @property
    def reports_row_failures(self) -> bool:  # an image model: see ModelUdf.call_rows
        return self.model.reports_row_failures

    def call(self, args: list[pa.Array], length: int) -> pa.Array:
        result = self.model.call(args, length)  # a failure here is the query's, as without a shadow
        self._compare(result, lambda: self.shadow.call(args, length))
        return result

    def call_rows(self, args: list[pa.Array], length: int):
        result, failures = self.model.call_rows(args, length)
        self._compare(result, lambda: self.shadow.call_rows(args, length)[0])
        return result, failures

    def _compare(self, result: pa.Array, shadow_result) -> None:
        try:
            self.stats.add(compare(result, shadow_result()))
        except Exception as error:  # noqa: BLE001 - a shadow never changes the output
            message = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
            if self.stats.failed(message):
                LOG.warning("shadow model %s of %s failed (the output is unchanged): %s",
                            self.shadow_path, self.name, message)


def compare(served: pa.Array, shadow: pa.Array) -> Comparison:
    """Compare two results of the same type (see the module docstring)."""
    if served.type != shadow.type:
        raise TypeError(f"the shadow returns {shadow.type}, the model {served.type}")
    if served.null_count or shadow.null_count:
        both = pc.and_(pc.is_valid(served), pc.is_valid(shadow))
        served, shadow = served.filter(both), shadow.filter(both)
    n = len(served)
    out = Comparison(rows=n)
    if n == 0:
        return out
    if pa.types.is_struct(served.type):
        pairs = [(served.field(i), shadow.field(i)) for i in range(served.type.num_fields)]
    else:
        pairs = [(served, shadow)]
    agree: np.ndarray | None = None
    for a, b in pairs:
        same = _field(a, b, out)
        if same is not None:
            agree = same if agree is None else agree & same
    if agree is not None:
        out.label_rows = n
        out.agreeing = int(agree.sum())
    return out


def _field(a: pa.Array, b: pa.Array, out: Comparison) -> np.ndarray | None:
    """Add ``a`` vs ``b``'s differences to ``out``; the per-row label agreement, if any."""
    t = a.type
    if pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t):
        if not _is_number(t.value_type):
            return None
        width = t.list_size if pa.types.is_fixed_size_list(t) else None
        x = _numbers(a.flatten())
        y = _numbers(b.flatten())
        if len(x) != len(y):
            raise ValueError("the shadow's lists have other lengths than the model's")
        _differences(x, y, out)
        if not width:
            return None
        return x.reshape(-1, width).argmax(axis=1) == y.reshape(-1, width).argmax(axis=1)
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        _differences(_numbers(a), _numbers(b), out)
        return None
    if pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t):
        return pc.fill_null(pc.equal(a, b), False).to_numpy(zero_copy_only=False)
    return None


def _differences(x: np.ndarray, y: np.ndarray, out: Comparison) -> None:
    if len(x) == 0:
        return
    d = np.abs(x - y)
    d = d[~np.isnan(d)]
    out.values += len(d)
    if len(d):
        out.abs_diff_sum += float(d.sum())
        out.abs_diff_max = max(out.abs_diff_max, float(d.max()))


def _numbers(a: pa.Array) -> np.ndarray:
    return pc.cast(a, pa.float64()).to_numpy(zero_copy_only=False)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
