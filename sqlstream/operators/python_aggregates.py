"""Aggregate functions written in Python (``@udaf``, model aggregates): their state per group.

A Python aggregate call keeps one *state table* per partial, like ``count(DISTINCT)``
(:class:`~sqlstream.operators.aggregates.Partial` ``.sets``): the group keys, then
``__udaf_state`` and ``__udaf_error``, one row per group. So every operator that
merges partials (TUMBLE fragments, HOP/CUMULATE panes, SESSION merges, unwindowed
GROUP BY) and every checkpoint handles it without knowing it is Python.

Two kinds of function (see :mod:`sqlstream.udf.aggregate`):

* ``collect`` (a function of the whole group's values, and models over windows): the
  state is the group's argument values as an Arrow ``list`` — built per batch with one
  hash aggregation, merged by concatenating lists (no Python per row or per group),
  and handed to the function once per group when the window closes;
* ``state`` (a class with ``create``/``accumulate``/``merge``/``finish``): the function
  is called once per (group, batch) with the group's rows of that batch as Arrow
  arrays; the state it returns is kept pickled in a ``binary`` column.

A call that raises fails its own group only: the group's error is kept in
``__udaf_error`` (states merged into a failed group stay failed), the group's result
is NULL, and :func:`split_failed_groups` takes those rows out of the output as dead
letters (reason ``udf``, the group key and window as the record).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.batches import null_rows
from sqlstream.connectors.dead_letters import DeadLetter
from sqlstream.connectors.encode import encode_json_lines

__all__ = ["GroupFunction", "PythonAggregateCall", "PythonStates", "ERROR_COLUMN", "TIME_COLUMN", "split_failed_groups",
           "conform_results", "failure", "scalar", "valid_rows"]

STATE = "__udaf_state"
TIMES = "__udaf_times"
#: the event time of an input row (windowed aggregations): collected values are ordered by it
TIME_COLUMN = "__t"
#: the column of a finalized result that holds each group's failure (NULL: none)
ERROR_COLUMN = "__udaf_error"


class GroupFunction(Protocol):
    """What the operators need of a Python aggregate (built in :mod:`sqlstream.udf`)."""

    name: str
    kind: str  # collect | state
    return_type: pa.DataType

    def arguments(self, column: pa.Array) -> list[pa.Array]:
        """The function's arguments (cast to its types) from the call's input column."""
        ...

    def call_collected(self, arguments: list[pa.Array]) -> Any:
        """``collect``: the result for one group's non-NULL values."""
        ...

    def create(self) -> Any: ...

    def accumulate(self, state: Any, arguments: list[pa.Array]) -> Any: ...

    def merge(self, state: Any, other: Any) -> Any: ...

    def finish(self, state: Any) -> Any: ...

    # optional (``frames`` true): many frames in one call, e.g. of OVER windows
    # frames: bool
    # def call_frames(self, frames: list[pa.Array]) -> Sequence: one result per list of ``frames``


@dataclass(frozen=True, eq=False)
class PythonAggregateCall:
    """A Python aggregate in a query: the function and what its dead letters show
    (the group keys' SQL text, in the order of the aggregation's key columns)."""

    function: GroupFunction
    key_names: tuple[str, ...] = field(default_factory=tuple)
    where: str = ""  # the query's label (dead letters' ``source``)


def failure(name: str, error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{name}: {type(error).__name__}" + (f": {text[0]}" if text else "")


def valid_rows(arguments: list[pa.Array]) -> pa.Array | None:
    """True where no argument is NULL (None: all rows are)."""
    nulls = null_rows(arguments)
    return None if nulls is None else pc.invert(nulls)


class PythonStates:
    """Builds, merges and finalizes the state tables of one Python aggregate call."""

    def __init__(self, keys: list[str], call: PythonAggregateCall, arg: str):
        self.keys = list(keys)
        self.call = call
        self.function = call.function
        self.arg = arg

    # -- per batch -----------------------------------------------------------------------------

    def partial(self, table: pa.Table) -> pa.Table:
        """One state row per group of ``table`` (keys and the argument column)."""
        column = table.column(self.arg)
        column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        keys, offsets, rows = self._rows_per_group(table)
        if self.function.kind == "collect":  # the group's values (and event times), in arrival order
            list_offsets = pa.array(offsets, pa.int32())
            states = pa.ListArray.from_arrays(list_offsets, column.take(rows))
            times = None
            if TIME_COLUMN in table.column_names:
                times = pa.ListArray.from_arrays(list_offsets, pc.cast(table.column(TIME_COLUMN), pa.int64()).combine_chunks().take(rows))
            return self._table(keys, states, pa.nulls(len(offsets) - 1, pa.string()), times)
        arguments = self.function.arguments(column)
        states, errors = [], []
        for i in range(len(offsets) - 1):
            group_rows = rows.slice(offsets[i], offsets[i + 1] - offsets[i])
            taken = [a.take(group_rows) for a in arguments]
            try:
                states.append(pickle.dumps(self.function.accumulate(self.function.create(), taken)))
                errors.append(None)
            except Exception as error:  # noqa: BLE001 - fails this group only
                states.append(None)
                errors.append(failure(self.function.name, error))
        return self._table(keys, pa.array(states, pa.binary()), pa.array(errors, pa.string()))

    def _rows_per_group(self, table: pa.Table) -> tuple[list, np.ndarray, pa.Array]:
        """The key columns of each group, and the row numbers of ``table`` by group (in
        arrival order within one) with the offsets where each group's rows start."""
        numbers = pa.array(np.arange(table.num_rows, dtype=np.int64))
        if not self.keys:
            return [], np.array([0, table.num_rows]), numbers
        numbered = pa.Table.from_arrays([table.column(k) for k in self.keys] + [numbers], names=self.keys + ["__row"])
        grouped = numbered.group_by(self.keys, use_threads=False).aggregate([("__row", "list")])
        lists = grouped.column("__row_list").combine_chunks()
        offsets = lists.offsets.to_numpy()
        rows = lists.values.slice(offsets[0], offsets[-1] - offsets[0])
        return grouped.columns[: len(self.keys)], offsets - offsets[0], rows

    def _table(self, keys: list, states, errors, times=None) -> pa.Table:
        if times is None:
            return pa.Table.from_arrays(list(keys) + [states, errors], names=self.keys + [STATE, ERROR_COLUMN])
        return pa.Table.from_arrays(list(keys) + [states, times, errors], names=self.keys + [STATE, TIMES, ERROR_COLUMN])

    # -- merge ---------------------------------------------------------------------------------

    def merge(self, combined: pa.Table) -> pa.Table:
        """One state row per group from rows of several partials (in arrival order)."""
        first_error = ("first", pc.ScalarAggregateOptions(skip_nulls=True))
        if not self.keys:
            groups = [(None, np.arange(combined.num_rows))]
            errors = combined.column(ERROR_COLUMN).drop_null()
            error_column = pa.array([errors[0].as_py() if len(errors) else None], pa.string())
            keys: list = []
        else:
            numbered = combined.append_column("__row", pa.array(np.arange(combined.num_rows, dtype=np.int64)))
            grouped = numbered.group_by(self.keys, use_threads=False).aggregate(
                [("__row", "list"), (ERROR_COLUMN, *first_error)]
            )
            keys = grouped.columns[: len(self.keys)]
            error_column = grouped.column(f"{ERROR_COLUMN}_first")
            lists = grouped.column("__row_list").combine_chunks()
            offsets = lists.offsets.to_numpy()
            flat = lists.values.to_numpy()
            groups = [(None, flat[offsets[i] : offsets[i + 1]]) for i in range(len(lists))]
        states = combined.column(STATE).combine_chunks()
        if self.function.kind == "collect":
            order = pa.array(np.concatenate([rows for _, rows in groups]) if groups else np.zeros(0, np.int64), pa.int64())
            counts = np.array([len(rows) for _, rows in groups], dtype=np.int64)
            merged = _concat_lists(states, order, counts)
            times = _concat_lists(combined.column(TIMES).combine_chunks(), order, counts) if TIMES in combined.column_names else None
            return self._table(keys, merged, error_column, times)
        merged_states, merged_errors = [], error_column.to_pylist()
        for i, (_, rows) in enumerate(groups):
            if len(rows) == 1:
                merged_states.append(states[int(rows[0])].as_py())
                continue
            if merged_errors[i] is not None:
                merged_states.append(None)
                continue
            try:
                state = pickle.loads(states[int(rows[0])].as_py())
                for r in rows[1:]:
                    state = self.function.merge(state, pickle.loads(states[int(r)].as_py()))
                merged_states.append(pickle.dumps(state))
            except Exception as error:  # noqa: BLE001 - fails this group only
                merged_states.append(None)
                merged_errors[i] = failure(self.function.name, error)
        return self._table(keys, pa.array(merged_states, pa.binary()), pa.array(merged_errors, pa.string()))

    # -- results ---------------------------------------------------------------------------------

    def finalize(self, table: pa.Table) -> tuple[pa.Array, pa.Array]:
        """(result, error) per group of ``table``, in the order of the sorted keys."""
        if self.keys:
            table = table.sort_by([(k, "ascending") for k in self.keys])
        errors = table.column(ERROR_COLUMN).to_pylist()
        states = table.column(STATE).combine_chunks()
        collected = None
        if self.function.kind == "collect":
            times = table.column(TIMES).combine_chunks() if TIMES in table.column_names else None
            try:
                collected = self._collected(states, times)
            except Exception as error:  # noqa: BLE001 - e.g. arguments that do not cast: every group fails
                errors = [failure(self.function.name, error)] * table.num_rows
        results: list[Any] = []
        for i in range(table.num_rows):
            if errors[i] is not None:
                results.append(None)
                continue
            try:
                if collected is not None:
                    arguments, bounds = collected
                    start, length = int(bounds[i]), int(bounds[i + 1] - bounds[i])
                    # only NULLs: NULL without a call, like the built-in aggregates
                    results.append(scalar(self.function.call_collected([a.slice(start, length) for a in arguments]))
                                   if length else None)
                else:
                    results.append(scalar(self.function.finish(pickle.loads(states[i].as_py()))))
            except Exception as error:  # noqa: BLE001 - fails this group only
                results.append(None)
                errors[i] = failure(self.function.name, error)
        values = conform_results(self.function, results, errors)
        return values, pa.array(errors, pa.string())

    def _collected(self, states: pa.Array, times: pa.Array | None) -> tuple[list[pa.Array], np.ndarray]:
        """Every group's values, one after another — in event-time order when ``times``
        are kept (arrival order among equal times), rows with a NULL argument left out —
        as the function's arguments, and the offsets where each group's values start.
        One sort, one cast and one filter for all groups: per group, only slices."""
        offsets = states.offsets.to_numpy().astype(np.int64)
        lengths = np.diff(offsets)
        values = states.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
        group_of = np.repeat(np.arange(len(lengths)), lengths)
        if times is not None:
            time_offsets = times.offsets.to_numpy()
            event_times = times.values.to_numpy()[time_offsets[0] : time_offsets[-1]]
            values = values.take(pa.array(np.lexsort((event_times, group_of))))  # a stable sort
        arguments = self.function.arguments(values)
        valid = valid_rows(arguments)
        if valid is not None:
            arguments = [a.filter(valid) for a in arguments]
            lengths = np.bincount(group_of[valid.to_numpy(zero_copy_only=False)], minlength=len(lengths))
        return arguments, np.concatenate([[0], np.cumsum(lengths)])

def conform_results(function: GroupFunction, results: list[Any], errors: list[str | None]) -> pa.Array:
    """``results`` as an array of the function's return type; a result that does not fit
    becomes NULL with its error in ``errors``."""
    wanted = function.return_type
    try:
        return pa.array(results, type=wanted)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        pass
    for i, value in enumerate(results):  # find the groups whose result does not fit
        try:
            pa.array([value], type=wanted)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as error:
            results[i] = None
            errors[i] = f"{function.name} returned {type(value).__name__} {value!r:.60}, not {wanted}: {error}"
    return pa.array(results, type=wanted)


def _concat_lists(lists: pa.Array, order: pa.Array, counts: np.ndarray) -> pa.Array:
    """The lists at ``order``, concatenated per group of ``counts`` consecutive ones."""
    inner = lists.take(order)  # each group's lists, one after another
    inner_offsets = inner.offsets.to_numpy().astype(np.int64)
    base = int(inner_offsets[0])
    outer = inner_offsets[np.concatenate([[0], np.cumsum(counts)])] - base
    return pa.ListArray.from_arrays(pa.array(outer, pa.int32()), inner.values.slice(base, int(inner_offsets[-1]) - base))


def scalar(value: Any) -> Any:
    """A function's result as a Python value (Arrow scalars and numpy values unwrapped)."""
    if isinstance(value, pa.Scalar):
        return value.as_py()
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return value.item()
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (pa.Array, pa.ChunkedArray)):
        return value.to_pylist()
    return value


def split_failed_groups(result: pa.Table, calls: Sequence, key_columns: Sequence[str],
                        window: tuple[str, str] | None = None) -> tuple[pa.Table, list[DeadLetter]]:
    """``result`` without the groups a Python aggregate failed on, and those groups as
    dead letters: reason ``udf``, the failure as detail, the group key by its SQL text
    (and the window bounds) as the JSON record, the window end as event time."""
    if ERROR_COLUMN not in result.column_names:
        return result, []
    errors = result.column(ERROR_COLUMN)
    failed = pc.is_valid(errors)
    if not pc.any(failed).as_py():
        return result.drop_columns([ERROR_COLUMN]), []
    bad = result.filter(failed)
    ok = result.filter(pc.invert(failed)).drop_columns([ERROR_COLUMN])
    python = next((c.function for c in calls if getattr(c, "function", None) is not None), None)
    names = list(python.key_names) if python is not None and len(python.key_names) == len(key_columns) else list(key_columns)
    columns = [bad.column(k) for k in key_columns]
    ends: list[int | None] = [None] * bad.num_rows
    if window is not None:
        bounds = [pc.cast(bad.column(w), pa.int64()).combine_chunks() for w in window]
        columns += [b.view(pa.timestamp("us")) for b in bounds]
        names += ["window_start", "window_end"]
        ends = bounds[1].to_pylist()
    records = encode_json_lines(pa.Table.from_arrays(columns, names=names)).decode("utf-8").splitlines()
    source = python.where if python is not None else ""
    letters = [
        DeadLetter(source, "udf", detail, record, None, end)
        for record, detail, end in zip(records, bad.column(ERROR_COLUMN).to_pylist(), ends)
    ]
    return ok, letters
