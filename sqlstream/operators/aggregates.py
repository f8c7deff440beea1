"""Incremental aggregation: partial aggregates per micro-batch, merged, then finalized.

Every aggregate call keeps a *partial* state that pyarrow's hash aggregation computes
per batch and that merges with another aggregation (``sum`` of partial counts, ``min``
of partial minima, ...). Raw rows are never kept for algebraic aggregates:

==================  ======================================  =================
function            partial columns (merge)                 final
==================  ======================================  =================
count(*)            count_all (sum)                         n
count(x)            count (sum)                             n
sum(x)              sum (sum)                               sum
avg(x)              sum of float64 (sum), count (sum)       sum / count
min/max(x)          min/max (min/max)                       value
var/stddev(x)       count, mean, M2 (Chan's parallel merge)  M2 / (n - 1) or n
first/last_value    first/last non-null in arrival order    value
count(DISTINCT x)   the distinct (keys, x) pairs            count per group
approx_distinct(x)  HyperLogLog registers (max)             HLL estimate
==================  ======================================  =================

``first_value``/``last_value`` follow arrival order (Flink semantics) and skip NULLs;
partials are always merged in arrival order. ``approx_distinct`` uses 2^12 registers
(standard error ~1.6%).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.connectors.key_hash import mix
from sqlstream.operators.python_aggregates import ERROR_COLUMN, PythonAggregateCall, PythonStates
from sqlstream.operators.row_pieces import map_row_pieces
from sqlstream.operators.state_size import StateSize, table_bytes

__all__ = ["AggCall", "Aggregator", "ArrivalSequence", "Partial", "AGGREGATE_FUNCTIONS", "output_type", "sort_keys"]

#: SQL name → internal function name
AGGREGATE_FUNCTIONS = {
    "count": "count",
    "sum": "sum",
    "avg": "avg",
    "mean": "avg",
    "min": "min",
    "max": "max",
    "stddev": "stddev_samp",
    "stddev_samp": "stddev_samp",
    "stddev_pop": "stddev_pop",
    "variance": "var_samp",
    "var_samp": "var_samp",
    "var_pop": "var_pop",
    "first_value": "first_value",
    "last_value": "last_value",
    "approx_distinct": "approx_distinct",
    "approx_count_distinct": "approx_distinct",
}

_HLL_BITS = 12
_HLL_M = 1 << _HLL_BITS


@dataclass(frozen=True)
class AggCall:
    """One aggregate call: ``func`` (internal name), input column ``arg``, output column."""

    func: str  # count_star | count | sum | avg | min | max | stddev_* | var_* | first_value | last_value | count_distinct | approx_distinct | python
    arg: str | None
    output: str
    arg_type: pa.DataType | None = None
    function: PythonAggregateCall | None = None  # func == "python": the function (sqlstream.operators.python_aggregates)

    def describe(self) -> str:
        """The call as EXPLAIN shows it: ``sum(__a0)``, ``median(__a1)`` for a Python aggregate."""
        return f"{self.function.function.name if self.function is not None else self.func}({self.arg or '*'})"

    def result_type(self) -> pa.DataType:
        if self.function is not None:
            return self.function.function.return_type
        return output_type(self.func, self.arg_type)


def output_type(func: str, arg_type: pa.DataType | None) -> pa.DataType:
    if func in ("count_star", "count", "count_distinct", "approx_distinct"):
        return pa.int64()
    if func in ("avg", "stddev_samp", "stddev_pop", "var_samp", "var_pop"):
        return pa.float64()
    if func == "sum":
        if arg_type is not None and pa.types.is_integer(arg_type):
            return pa.int64()
        if arg_type is not None and pa.types.is_decimal(arg_type):
            return pa.decimal128(38, arg_type.scale)
        return pa.float64()
    assert arg_type is not None
    return arg_type


@dataclass
class Partial:
    """Partial aggregates: ``main`` (keys + algebraic columns, one row per group) and
    one ``sets`` table per DISTINCT/HLL call (keys + value/register columns).
    Never changed once built (operations return new partials), so its size is
    measured once."""

    main: pa.Table
    sets: tuple[pa.Table, ...] = field(default_factory=tuple)
    _size: StateSize | None = field(default=None, repr=False, compare=False)

    @property
    def num_rows(self) -> int:
        return self.main.num_rows

    def filter_by(self, column: str, predicate) -> "Partial":
        """Keep rows where ``predicate(column values)`` is true, in every table."""
        return Partial(
            self.main.filter(predicate(self.main.column(column))),
            tuple(s.filter(predicate(s.column(column))) for s in self.sets),
        )

    def state_rows(self) -> int:
        return self.main.num_rows + sum(s.num_rows for s in self.sets)

    def state_size(self) -> StateSize:
        if self._size is None:
            self._size = StateSize(self.state_rows(), table_bytes(self.main, *self.sets))
        return self._size


def sort_keys(keys: list[str]) -> list[tuple[str, str]]:
    return [(k, "ascending") for k in keys]


class ArrivalSequence:
    """Numbers rows in arrival order (column ``__seq``) for first/last_value."""

    def __init__(self):
        self.next = 0

    def stamp(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        numbers = pa.array(np.arange(self.next, self.next + n, dtype=np.int64))
        self.next += n
        return table.append_column("__seq", numbers)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return mix(values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15))


def _hash64(array: pa.Array) -> np.ndarray:
    """A stable 64-bit hash per value (nulls excluded by the caller)."""
    t = array.type
    if pa.types.is_integer(t) or pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_boolean(t):
        return _splitmix64(pc.cast(array, pa.int64()).to_numpy(zero_copy_only=False).view(np.uint64))
    if pa.types.is_floating(t):
        return _splitmix64(pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False).view(np.uint64))
    if not (pa.types.is_string(t) or pa.types.is_binary(t)):
        array = pc.cast(array, pa.string())
    array = pc.cast(array, pa.binary()) if pa.types.is_string(array.type) else array
    # polynomial hash of the bytes, vectorized: h = sum(byte_i * P^(n-1-i)) per value
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)[array.offset : array.offset + len(array) + 1]
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8) if array.buffers()[2] is not None else np.zeros(0, np.uint8)
    data = data[offsets[0] : offsets[-1]].astype(np.uint64)
    lengths = np.diff(offsets)
    starts = offsets[:-1] - offsets[0]
    if data.size == 0:
        return _splitmix64(lengths.astype(np.uint64))
    positions = np.arange(data.size, dtype=np.int64) - np.repeat(starts, lengths)
    with np.errstate(over="ignore"):
        powers = _splitmix64(positions.astype(np.uint64))
        mixed = data * powers
        nonempty = lengths > 0
        sums = np.zeros(len(lengths), dtype=np.uint64)
        sums[nonempty] = np.add.reduceat(mixed, starts[nonempty])
    return _splitmix64(sums ^ lengths.astype(np.uint64))


def _numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.to_numpy(zero_copy_only=False)


class Aggregator:
    """Computes, merges and finalizes partials of ``calls`` grouped by ``keys``."""

    def __init__(self, keys: list[str], calls: list[AggCall]):
        self.keys = list(keys)
        self.calls = list(calls)
        self._partial_specs: list[tuple[str, str, str, str]] = []  # (input, pyarrow fn, partial col, merge fn)
        self._set_calls: list[AggCall] = []
        self._partial_specs.append(("", "count_all", "__n", "sum"))
        self._moment_calls: list[str] = []  # column prefixes of var/stddev calls
        self._python = {c.output: PythonStates(self.keys, c.function, c.arg) for c in self.calls if c.func == "python"}
        for i, call in enumerate(self.calls):
            p = f"__p{i}"
            f = call.func
            if f == "count_star":
                continue  # uses __n
            if f == "count":
                self._partial_specs.append((call.arg, "count", f"{p}_c", "sum"))
            elif f == "sum":
                self._partial_specs.append((call.arg, "sum", f"{p}_s", "sum"))
            elif f == "avg":
                self._partial_specs.append((f"{p}_f", "sum", f"{p}_s", "sum"))
                self._partial_specs.append((call.arg, "count", f"{p}_c", "sum"))
            elif f in ("min", "max"):
                self._partial_specs.append((call.arg, f, f"{p}_m", f))
            elif f in ("stddev_samp", "stddev_pop", "var_samp", "var_pop"):
                # count, mean and M2 (sum of squared deviations from the mean) of the
                # non-null values: numerically stable, unlike sums of squares
                self._partial_specs.append((call.arg, "count", f"{p}_c", "sum"))
                self._partial_specs.append((f"{p}_f", "mean", f"{p}_m", "mean_merge"))
                self._partial_specs.append((f"{p}_f", "m2", f"{p}_q", "m2_merge"))
                self._moment_calls.append(p)
            elif f in ("count_distinct", "approx_distinct", "first_value", "last_value", "python"):
                self._set_calls.append(call)
            else:
                raise AssertionError(f"unknown aggregate {f}")

    # -- partial ----------------------------------------------------------------------------

    def _derived(self, table: pa.Table) -> pa.Table:
        """Add float64 copies and squares used by avg/var partials."""
        for i, call in enumerate(self.calls):
            p = f"__p{i}"
            if call.func == "avg" or call.func.startswith(("stddev", "var")):
                table = table.append_column(f"{p}_f", pc.cast(table.column(call.arg), pa.float64()))
        return table

    @property
    def needs_time(self) -> bool:
        """Python aggregates of a group's values order them by event time (``__t``)."""
        return any(c.function.function.kind == "collect" for c in self.calls if c.function is not None)

    @property
    def needs_sequence(self) -> bool:
        """first/last_value need the arrival number of each row in column ``__seq``."""
        return any(c.func in ("first_value", "last_value") for c in self._set_calls)

    def partial(self, table: pa.Table) -> Partial:
        """Partials of one batch (``table`` holds the key and argument columns)."""
        source = self._derived(table)
        main = self._group(source, [(inp, fn, out) for inp, fn, out, _ in self._partial_specs])
        sets = tuple(self._set_partial(source, call) for call in self._set_calls)
        return Partial(main, sets)

    def partials(self, table: pa.Table) -> list[Partial]:
        """Partials of ``table`` in pieces of consecutive rows, in row order, computed on
        all cores for a large batch (:mod:`sqlstream.operators.row_pieces`); a group may
        have a row in several of them, as in the partials of consecutive batches. Python
        aggregates run their functions on the calling thread (one partial)."""
        if not self.thread_safe:
            return [self.partial(table)]
        return map_row_pieces(self.partial, table)

    @property
    def thread_safe(self) -> bool:
        """True when partials and merges may run on several threads at once (no Python
        aggregate: those run user functions, on the driver thread)."""
        return not self._python

    def _group(self, table: pa.Table, specs: list[tuple[str, str, str]]) -> pa.Table:
        aggs = []
        for inp, fn, _ in specs:
            if fn == "count_all":
                aggs.append(([], "count_all"))
            elif fn == "count":
                aggs.append((inp, "count", pc.CountOptions(mode="only_valid")))
            elif fn in ("first", "last"):
                aggs.append((inp, fn, pc.ScalarAggregateOptions(skip_nulls=True)))
            elif fn == "m2":
                aggs.append((inp, "variance", pc.VarianceOptions(ddof=0)))
            else:
                aggs.append((inp, fn))
        grouped = table.group_by(self.keys, use_threads=False).aggregate(aggs)
        # pyarrow puts the keys first, then the aggregates in order
        keys = grouped.columns[: len(self.keys)]
        values = grouped.columns[len(self.keys) :]
        names = [out for _, _, out in specs]
        for i, (_, fn, out) in enumerate(specs):
            if fn == "m2":  # population variance × count = M2
                count = grouped.column(names.index(out.replace("_q", "_c")) + len(self.keys))
                values[i] = pc.multiply(pc.fill_null(values[i], 0.0), pc.cast(count, pa.float64()))
        return pa.Table.from_arrays(keys + values, names=self.keys + names)

    def _set_partial(self, table: pa.Table, call: AggCall) -> pa.Table:
        # NULL values stay as rows (NULL value / register -1) so that every group of
        # ``main`` has rows here too and finalized columns line up with it
        if call.func == "python":
            return self._python[call.output].partial(table)
        values = table.column(call.arg)
        keys = [table.column(k) for k in self.keys]
        if call.func in ("first_value", "last_value"):
            seq = pc.if_else(pc.is_valid(values), table.column("__seq"), pa.scalar(None, pa.int64()))
            rows = pa.Table.from_arrays(keys + [values, seq], names=self.keys + ["__v", "__seq"])
            return self._pick(rows, call.func == "first_value")
        if call.func == "count_distinct":
            pairs = pa.Table.from_arrays(keys + [values], names=self.keys + ["__v"])
            return pairs.group_by(self.keys + ["__v"], use_threads=False).aggregate([])
        # HyperLogLog: register = low bits of the hash, rank = leading zeros of the rest + 1
        values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        valid = pc.is_valid(values).to_numpy(zero_copy_only=False)
        hashes = _hash64(pc.fill_null(values, pc.min_max(values)["min"]) if not valid.all() and valid.any() else values)
        registers = np.where(valid, (hashes & np.uint64(_HLL_M - 1)).astype(np.int32), -1).astype(np.int32)
        rest = hashes >> np.uint64(_HLL_BITS)
        with np.errstate(divide="ignore"):
            ranks = (64 - _HLL_BITS) - np.floor(np.log2(np.maximum(rest, 1).astype(np.float64))).astype(np.int32)
        ranks = np.where(rest == 0, 64 - _HLL_BITS + 1, ranks)
        ranks = np.where(valid, ranks, 0).astype(np.int32)
        regs = pa.Table.from_arrays(keys + [pa.array(registers), pa.array(ranks)], names=self.keys + ["__r", "__rank"])
        return self._max_rank(regs)

    def _pick(self, rows: pa.Table, first: bool) -> pa.Table:
        """One row per group: the first (last) non-null value in arrival order (``__seq``)."""
        order = "ascending" if first else "descending"
        ordered = rows.sort_by([("__seq", order, "at_end")])
        options = pc.ScalarAggregateOptions(skip_nulls=True)
        grouped = ordered.group_by(self.keys, use_threads=False).aggregate(
            [("__v", "first", options), ("__seq", "first", options)]
        )
        return pa.Table.from_arrays(grouped.columns, names=self.keys + ["__v", "__seq"])

    def _max_rank(self, regs: pa.Table) -> pa.Table:
        grouped = regs.group_by(self.keys + ["__r"], use_threads=False).aggregate([("__rank", "max")])
        return grouped.rename_columns([("__rank" if n == "__rank_max" else n) for n in grouped.column_names])

    # -- merge -------------------------------------------------------------------------------

    def merge(self, parts: list[Partial], regroup: bool = False) -> Partial:
        """One partial per group from several (in arrival order). A single partial is
        already one row per group unless its key columns were rewritten (``regroup``)."""
        parts = [p for p in parts if p.num_rows]
        if not parts:
            return self.empty()
        if len(parts) == 1 and not regroup:
            return parts[0]
        main = pa.concat_tables([p.main for p in parts])
        if self._moment_calls:
            merged = self._merge_moments(main)
        else:
            merged = self._group(main, [(out, merge, out) for _, _, out, merge in self._partial_specs])
        sets = []
        for i, call in enumerate(self._set_calls):
            combined = pa.concat_tables([p.sets[i] for p in parts])
            if call.func == "count_distinct":
                sets.append(combined.group_by(self.keys + ["__v"], use_threads=False).aggregate([]))
            elif call.func in ("first_value", "last_value"):
                sets.append(self._pick(combined, call.func == "first_value"))
            elif call.func == "python":
                sets.append(self._python[call.output].merge(combined))
            else:
                sets.append(self._max_rank(combined))
        return Partial(merged, tuple(sets))

    def _merge_moments(self, main: pa.Table) -> pa.Table:
        """Merge partial rows when var/stddev calls are present: counts and means per
        group first, then M2 = sum(M2_i) + sum(n_i * (mean_i - mean)^2) (Chan et al.),
        with each partial row mapped to its group through a list of row numbers."""
        specs = []
        for _, _, out, merge in self._partial_specs:
            if merge == "mean_merge":
                count = out.replace("_m", "_c")
                weighted = pc.multiply(pc.fill_null(main.column(out), 0.0), pc.cast(main.column(count), pa.float64()))
                main = main.append_column(f"{out}__w", weighted)
                specs.append((f"{out}__w", "sum", out))
            elif merge == "m2_merge":
                specs.append((out, "sum", out))
            else:
                specs.append((out, merge, out))
        if self.keys:
            main = main.append_column("__row", pa.array(np.arange(main.num_rows, dtype=np.int64)))
            merged = self._group(main, specs + [("__row", "list", "__rows")])
            rows = merged.column("__rows").combine_chunks()
            group_of_row = np.empty(main.num_rows, dtype=np.int64)
            group_of_row[pc.list_flatten(rows).to_numpy()] = np.repeat(
                np.arange(merged.num_rows, dtype=np.int64), pc.list_value_length(rows).to_numpy()
            )
            merged = merged.drop_columns(["__rows"])
        else:  # one group
            merged = self._group(main, specs)
            group_of_row = np.zeros(main.num_rows, dtype=np.int64)
        for p in self._moment_calls:
            n = main.column(f"{p}_c").to_numpy(zero_copy_only=False).astype(np.float64)
            mean_i = pc.fill_null(main.column(f"{p}_m"), 0.0).to_numpy(zero_copy_only=False)
            total = merged.column(f"{p}_c").to_numpy(zero_copy_only=False).astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = merged.column(f"{p}_m").to_numpy(zero_copy_only=False) / total
            mean = np.where(total > 0, mean, 0.0)
            deviations = n * (mean_i - mean[group_of_row]) ** 2
            spread = np.bincount(group_of_row, weights=deviations, minlength=merged.num_rows)
            m2 = merged.column(f"{p}_q").to_numpy(zero_copy_only=False) + spread
            merged = merged.set_column(merged.column_names.index(f"{p}_m"), f"{p}_m", pa.array(mean, mask=total == 0))
            merged = merged.set_column(merged.column_names.index(f"{p}_q"), f"{p}_q", pa.array(m2))
        return merged

    def empty(self) -> Partial:
        return Partial(self._empty_main(), tuple())

    def _empty_main(self) -> pa.Table:
        return pa.table({})

    # -- finalize ----------------------------------------------------------------------------

    def finalize(self, part: Partial) -> pa.Table:
        """Keys + one column per call (named ``call.output``), one row per group."""
        main = part.main
        if self._set_calls:
            order = sort_keys(self.keys)
            main = main.sort_by(order) if self.keys else main
        out = [main.column(k) for k in self.keys]
        names = list(self.keys)
        set_results, errors = [], []
        for i, call in enumerate(self._set_calls):
            if call.func == "python":  # a failing group's result is NULL, its error in ERROR_COLUMN
                values, error = self._python[call.output].finalize(part.sets[i])
                set_results.append(values)
                errors.append(error)
            else:
                set_results.append(self._finalize_set(part.sets[i], call))
        set_index = 0
        for i, call in enumerate(self.calls):
            p = f"__p{i}"
            f = call.func
            if f == "count_star":
                column = main.column("__n")
            elif f == "count":
                column = main.column(f"{p}_c")
            elif f == "sum":
                column = pc.cast(main.column(f"{p}_s"), output_type("sum", call.arg_type))
            elif f == "avg":
                count = main.column(f"{p}_c")
                column = pc.if_else(
                    pc.equal(count, pa.scalar(0, count.type)),
                    pa.scalar(None, pa.float64()),
                    pc.divide(main.column(f"{p}_s"), pc.cast(count, pa.float64())),
                )
            elif f in ("min", "max"):
                column = main.column(f"{p}_m")
            elif f in ("stddev_samp", "stddev_pop", "var_samp", "var_pop"):
                column = self._moments(main, p, f)
            else:
                column = set_results[set_index]
                set_index += 1
            out.append(column)
            names.append(call.output)
        if errors:
            out.append(pc.coalesce(*errors) if len(errors) > 1 else errors[0])
            names.append(ERROR_COLUMN)
        return pa.Table.from_arrays(out, names=names)

    def _moments(self, main: pa.Table, p: str, f: str) -> pa.Array:
        n = main.column(f"{p}_c").to_numpy(zero_copy_only=False).astype(np.float64)
        m2 = pc.fill_null(main.column(f"{p}_q"), 0.0).to_numpy(zero_copy_only=False)
        denominator = n - 1 if f.endswith("samp") else n
        with np.errstate(invalid="ignore", divide="ignore"):
            variance = np.maximum(m2, 0.0) / denominator
        valid = denominator > 0
        result = np.sqrt(variance) if f.startswith("stddev") else variance
        return pa.array(np.where(valid, result, 0.0), mask=~valid)

    def _finalize_set(self, table: pa.Table, call: AggCall) -> pa.Array:
        if call.func in ("first_value", "last_value"):
            if not self.keys:
                return table.column("__v")
            return table.sort_by(sort_keys(self.keys)).column("__v")
        if call.func == "count_distinct":
            grouped = table.group_by(self.keys, use_threads=False).aggregate([("__v", "count")])
            counts = grouped.column("__v_count")
        else:
            present_mask = _numpy(table.column("__r")) >= 0
            weights = np.where(present_mask, np.exp2(-_numpy(table.column("__rank")).astype(np.float64)), 0.0)
            weighted = table.append_column("__w", pa.array(weights))
            weighted = weighted.append_column("__p", pa.array(present_mask.astype(np.int64)))
            grouped = weighted.group_by(self.keys, use_threads=False).aggregate([("__w", "sum"), ("__p", "sum")])
            z = grouped.column("__w_sum").to_numpy(zero_copy_only=False)
            present = grouped.column("__p_sum").to_numpy(zero_copy_only=False).astype(np.float64)
            m = float(_HLL_M)
            alpha = 0.7213 / (1 + 1.079 / m)
            zeros = m - present
            raw = alpha * m * m / (z + zeros)  # absent registers contribute 2^0 each
            with np.errstate(divide="ignore"):
                linear = m * np.log(m / np.maximum(zeros, 1))
            estimate = np.where((raw <= 2.5 * m) & (zeros > 0), linear, raw)
            counts = pa.array(np.where(present > 0, np.round(estimate), 0).astype(np.int64))
        if not self.keys:
            return counts
        table = pa.Table.from_arrays([grouped.column(k) for k in self.keys] + [counts], names=self.keys + ["__cnt"])
        return table.sort_by(sort_keys(self.keys)).column("__cnt")
