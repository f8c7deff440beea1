"""``@udaf``: aggregate functions written in Python, vectorized over Arrow.

Two forms. The simple one is a function of a whole group's values, called once per
group when its result is due (a window closes; an unwindowed GROUP BY group changes):

>>> import numpy as np, pyarrow as pa
>>> from sqlstream import udaf
>>> @udaf(args=[pa.float64()], returns=pa.float64())
... def median(values: pa.Array) -> float:
...     return float(np.median(values.to_numpy()))
>>> median.__sqlstream_udf__.name
'median'

Its state is the group's values as an Arrow list (checkpointed with the rest of the
operator's state), built per batch with one hash aggregation. The other form is a
class whose state stays small, called once per (group, micro-batch) with that group's
rows of the batch as Arrow arrays — never once per row:

>>> @udaf(args=[pa.float64()], returns=pa.float64())
... class sum_of_squares:
...     def create(self):
...         return 0.0
...     def accumulate(self, state, values: pa.Array):
...         return state + float(np.square(values.to_numpy(zero_copy_only=False)).sum())
...     def merge(self, state, other):
...         return state + other
...     def finish(self, state):
...         return state

The class is instantiated once (no arguments). Its state is any picklable value;
it is stored pickled in a ``BYTEA`` column of the aggregate's state, so it survives a
checkpoint and restore (checkpoints are trusted files, like the ``udfs/`` code). Rows
whose arguments are NULL reach ``accumulate`` as they are (``values.drop_null()``
skips them); the simple form never sees them, and a group of NULLs only gives NULL.

A function of the values may instead take many groups at once, ``@udaf(...,
frames=True)``: one Arrow ``list`` array per argument (a list per group) → one result
per list. OVER windows then call it once per watermark step with all the frames of the
rows emitted (instead of once per row); windows and GROUP BY call it with one list:

>>> import pyarrow.compute as pc
>>> @udaf(args=[pa.float64()], returns=pa.float64(), frames=True)
... def frame_mean(frames: pa.ListArray) -> np.ndarray:
...     values = pc.list_flatten(frames).to_numpy(zero_copy_only=False)
...     sums = np.bincount(pc.list_parent_indices(frames), weights=values, minlength=len(frames))
...     return sums / pc.list_value_length(frames).to_numpy(zero_copy_only=False)
>>> frame_mean.__sqlstream_udf__.frames
True

A function's result is one value (Python, numpy or Arrow scalar) of ``returns``. An
exception in any method fails that group only: its result row becomes a dead letter
(reason ``udf``: the function, the exception, the group key and window).
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from typing import Any, Callable

import pyarrow as pa

from sqlstream.errors import UdfError
from sqlstream.sql.types import sql_type_name
from sqlstream.udf.decorator import _NAME, UdfSpec
from sqlstream.udf.python import _castable, _origin, hint_to_arrow

__all__ = ["udaf", "UdafSpec", "PythonAggregate", "arguments_of", "is_udaf"]

_METHODS = ("create", "accumulate", "merge", "finish")


@dataclass
class UdafSpec(UdfSpec):
    """``@udaf`` metadata: a UdfSpec (so ``udfs/`` discovery finds it) that aggregates."""

    aggregate: bool = True
    frames: bool = False  # the function takes many groups as list arrays (see udaf)


def udaf(fn: Any = None, *, args: list[pa.DataType] | None = None, returns: pa.DataType | None = None,
         name: str | None = None, frames: bool = False) -> Any:
    """Mark a function of a group's values, or a class with ``create``/``accumulate``/
    ``merge``/``finish``, as a SQL aggregate function (see the module docstring).
    ``args``/``returns`` are pyarrow types (default: the type hints of the function,
    or of ``accumulate`` and ``finish``); ``name`` is the SQL name (default: the
    Python name, lower-cased); ``frames=True``: the function takes a list array per
    argument (many groups) and returns one result per list."""
    spec_name = (name or "").lower() or None
    if spec_name is not None and not _NAME.fullmatch(spec_name):
        raise UdfError(f"@udaf(name='{name}'): not a SQL function name",
                       hint="use letters, digits and underscores, starting with a letter or underscore")
    if args is not None and not all(isinstance(a, pa.DataType) for a in args):
        raise UdfError(f"@udaf(args=...): {args!r} holds something that is not a pyarrow type", hint="e.g. args=[pa.float64()]")
    if returns is not None and not isinstance(returns, pa.DataType):
        raise UdfError(f"@udaf(returns=...): {returns!r} is not a pyarrow type", hint="e.g. returns=pa.float64()")

    def mark(f: Any) -> Any:
        if frames and inspect.isclass(f):
            raise UdfError(f"@udaf(frames=True) on class {f.__name__}: only a function of the values takes many frames",
                           hint="drop frames=True: a class aggregate is called per frame")
        f.__sqlstream_udf__ = UdafSpec(spec_name or f.__name__.lower(), list(args) if args is not None else None, returns,
                                       frames=bool(frames))
        return f

    if fn is not None and callable(fn):
        return mark(fn)
    return mark


def arguments_of(column: pa.Array, types: list[pa.DataType]) -> list[pa.Array]:
    """The argument arrays packed in an aggregate's input ``column`` (a STRUCT of the
    arguments when there are several), cast to ``types``."""
    if len(types) == 1:
        parts = [column]
    else:
        parts = column.flatten()  # a NULL struct gives NULL arguments
    return [p.cast(t) if p.type != t else p for p, t in zip(parts, types)]


class PythonAggregate:
    """A registered ``@udaf``: its SQL signature and the calls the aggregate state makes
    (:class:`sqlstream.operators.python_aggregates.GroupFunction`)."""

    is_aggregate = True
    volatility = "immutable"
    is_async = False

    def __init__(self, target: Any, spec: UdafSpec, args: list[pa.DataType], returns: pa.DataType):
        self.target = target
        self.spec = spec
        self.name = spec.name
        self.arg_types = args
        self.return_type = returns
        self.kind = "state" if inspect.isclass(target) else "collect"
        self.instance = target() if self.kind == "state" else None
        self.origin = _origin(target if self.kind == "collect" else target.accumulate)
        self.frames = bool(getattr(spec, "frames", False))

    @classmethod
    def from_object(cls, target: Any) -> "PythonAggregate":
        spec: UdafSpec = target.__sqlstream_udf__
        if inspect.isclass(target):
            missing = [m for m in _METHODS if not callable(getattr(target, m, None))]
            if missing:
                raise UdfError(f"aggregate '{spec.name}' (a class) has no {', '.join(missing)} method",
                               hint="a class @udaf defines create(), accumulate(state, *arrays), merge(state, state), finish(state)")
            values_fn, result_fn, skip = target.accumulate, target.finish, 2  # (self, state, *arrays)
        else:
            values_fn, result_fn, skip = target, target, 0
        args, returns = spec.args, spec.returns
        params = [p for p in inspect.signature(values_fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][skip:]
        if args is None or returns is None:
            try:
                arg_hints = typing.get_type_hints(values_fn, include_extras=True)
                return_hints = typing.get_type_hints(result_fn, include_extras=True)
            except Exception as error:  # noqa: BLE001 - unresolvable annotations
                raise UdfError(f"aggregate '{spec.name}': cannot read its type hints: {error}") from error
            if args is None:
                missing = [p.name for p in params if p.name not in arg_hints]
                if missing or not params:
                    raise UdfError(f"aggregate '{spec.name}' needs argument types: no hint for {', '.join(missing) or 'its values'}",
                                   hint="@udaf(args=[pa.float64()], returns=pa.float64())")
                args = [hint_to_arrow(arg_hints[p.name], f"{spec.name}({p.name})") for p in params]
            if returns is None:
                if "return" not in return_hints:
                    raise UdfError(f"aggregate '{spec.name}' needs a return type", hint="returns=pa.float64() or -> float")
                returns = hint_to_arrow(return_hints["return"], f"{spec.name} return")
        if not args:
            raise UdfError(f"aggregate '{spec.name}' takes no arguments", hint="an aggregate aggregates at least one value per row")
        if len(params) < len(args) and not any(p.kind == p.VAR_POSITIONAL for p in inspect.signature(values_fn).parameters.values()):
            raise UdfError(
                f"aggregate '{spec.name}' declares {len(args)} argument type(s) but its Python signature takes {len(params)}",
                hint="make args=[...] match the function's parameters" + (" after (self, state)" if skip else ""),
            )
        return cls(target, spec, list(args), returns)

    # -- SQL side -----------------------------------------------------------------------------

    def signature(self) -> str:
        args = ", ".join(sql_type_name(t) for t in self.arg_types)
        return f"{self.name}({args}) -> {sql_type_name(self.return_type)}  [aggregate]"

    def check_args(self, types: list[pa.DataType]) -> pa.DataType:
        """The result type for argument ``types`` (raises UdfError when they do not fit)."""
        if len(types) != len(self.arg_types):
            raise UdfError(f"aggregate {self.name} takes {len(self.arg_types)} argument(s), got {len(types)}",
                           hint=self.signature())
        for i, (given, wanted) in enumerate(zip(types, self.arg_types)):
            if given != wanted and not _castable(given, wanted):
                raise UdfError(f"argument {i + 1} of {self.name} is {sql_type_name(given)}, expected {sql_type_name(wanted)}",
                               hint=self.signature())
        return self.return_type

    # -- the aggregate state's calls (GroupFunction) ------------------------------------------

    def arguments(self, column: pa.Array) -> list[pa.Array]:
        return arguments_of(column, self.arg_types)

    def call_collected(self, arguments: list[pa.Array]) -> Any:
        if self.frames:  # one group as one list
            results = self.call_frames([pa.ListArray.from_arrays(pa.array([0, len(a)], pa.int32()), a) for a in arguments])
            if len(results) != 1:
                raise ValueError(f"returned {len(results)} results for 1 frame")
            return results[0]
        return self.target(*arguments)

    def call_frames(self, frames: list[pa.Array]) -> Any:
        """``frames=True``: the results of many groups, one list array per argument."""
        return self.target(*frames)

    def create(self) -> Any:
        return self.instance.create()

    def accumulate(self, state: Any, arguments: list[pa.Array]) -> Any:
        return self.instance.accumulate(state, *arguments)

    def merge(self, state: Any, other: Any) -> Any:
        return self.instance.merge(state, other)

    def finish(self, state: Any) -> Any:
        return self.instance.finish(state)


def is_udaf(target: Callable) -> bool:
    """Whether ``target`` was marked with :func:`udaf`."""
    return isinstance(getattr(target, "__sqlstream_udf__", None), UdafSpec)
