"""Python and model aggregates (``@udaf``, ``... AS MODEL ... WITH (aggregate = true)``)
over OVER frames: one result per emitted row, from the values of its frame.

The operator (:mod:`sqlstream.operators.over_aggregate`) gives, per watermark step, the
held rows sorted by (key, time, arrival) and each ready row's frame as the first and
last row index. From there, per function kind (see :mod:`sqlstream.udf.aggregate`):

* ``collect`` (a function of a frame's values): rows with a NULL argument are left out
  once (one filter for all frames), and each frame is a zero-copy slice of the
  remaining values — one call per emitted row; a frame of only NULLs is NULL without
  a call. A function that takes all frames at once (``@udaf(frames=True)``, model
  aggregates) gets them as one ``list`` array per argument (one ``take``) and returns
  one result per frame: one call per step;
* ``state`` (a class): ``finish(accumulate(create(), *frame))`` per frame, NULLs
  included, as the class form sees them in windows.

A call that raises fails its own row (error text per row, the result NULL); a
vectorized call that raises is retried frame by frame, so only the failing frames fail.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from sqlstream.operators.python_aggregates import GroupFunction, conform_results, failure, scalar, valid_rows

__all__ = ["frame_results"]


def frame_results(function: GroupFunction, column: pa.Array, start: np.ndarray, end: np.ndarray) -> tuple[pa.Array, list]:
    """(result, error or None) per frame [start, end] (inclusive row indexes into
    ``column``, the call's argument column of the held rows)."""
    count = start.size
    results: list[Any] = [None] * count
    errors: list[str | None] = [None] * count
    try:
        arguments = function.arguments(column)
    except Exception as error:  # noqa: BLE001 - e.g. arguments that do not cast: every row fails
        return pa.nulls(count, function.return_type), [failure(function.name, error)] * count
    if function.kind == "state":
        for i in range(count):
            frame = [a.slice(int(start[i]), int(end[i] - start[i] + 1)) for a in arguments]
            try:
                results[i] = scalar(function.finish(function.accumulate(function.create(), frame)))
            except Exception as error:  # noqa: BLE001 - fails this row only
                errors[i] = failure(function.name, error)
        return conform_results(function, results, errors), errors
    valid = valid_rows(arguments)
    if valid is not None:  # frames over the non-NULL values: bounds from a running count
        arguments = [a.filter(valid) for a in arguments]
        kept = np.concatenate([[0], np.cumsum(valid.to_numpy(zero_copy_only=False))])
        start, end = kept[start], kept[end + 1] - 1
    lengths = np.maximum(end - start + 1, 0)
    todo = np.flatnonzero(lengths > 0)  # a frame of only NULLs is NULL, without a call
    many = bool(getattr(function, "frames", False))
    if many and todo.size:
        try:
            _call_frames(function, arguments, start, lengths, todo, results)
            todo = todo[:0]
        except Exception:  # noqa: BLE001 - retried frame by frame: only the failing frames fail
            pass
    for i in todo:
        try:
            if many:  # one list: the same call, so a frame means the same (a model's short frame: NULL)
                _call_frames(function, arguments, start, lengths, todo[todo == i], results)
            else:
                results[i] = scalar(function.call_collected([a.slice(int(start[i]), int(lengths[i])) for a in arguments]))
        except Exception as error:  # noqa: BLE001 - fails this row only
            errors[i] = failure(function.name, error)
    return conform_results(function, results, errors), errors


def _call_frames(function: GroupFunction, arguments: list[pa.Array], start: np.ndarray, lengths: np.ndarray,
                 todo: np.ndarray, results: list) -> None:
    """The results of frames ``todo`` from one vectorized call, into ``results``."""
    found = function.call_frames([_lists(a, start[todo], lengths[todo]) for a in arguments])
    if len(found) != todo.size:
        raise ValueError(f"returned {len(found)} results for {todo.size} frames")
    values = found.to_pylist() if isinstance(found, (pa.Array, pa.ChunkedArray)) else list(found)
    for i, value in zip(todo, values):
        results[i] = scalar(value)


def _lists(values: pa.Array, start: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """The frames as one list array: the values of frame i at [start_i, start_i + length_i).
    Frames overlap, so the values are taken (copied) once per frame: a plain list array,
    which every Arrow and numpy idiom reads (``.offsets``, ``list_flatten``)."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    index = np.arange(int(offsets[-1]), dtype=np.int64) - np.repeat(offsets[:-1] - start, lengths)
    taken = values.take(pa.array(index))
    if offsets[-1] < 2**31:
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), taken)
    return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), taken)
