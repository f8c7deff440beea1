"""Python UDFs: called once per micro-batch with whole Arrow arrays.

A function gets one ``pyarrow.Array`` per argument (cast to the declared type;
``.to_numpy()`` is zero-copy for numbers without NULLs) and returns a pyarrow Array,
a ChunkedArray or a numpy array with one value per row. NULLs reach the function as
they are; a numpy result cannot hold NULLs, so in it the rows where any argument is
NULL become NULL (a pyarrow result is taken as returned). A result of the wrong length
or a type that does not cast to ``returns`` is a :class:`~sqlstream.errors.UdfError`
naming the function and what came back.

Type hints, when ``args``/``returns`` are not given to ``@udf``, name the *element*
type of each array (the function still receives and returns whole arrays):

=======================================  ==============================
hint                                     Arrow type
=======================================  ==============================
``int``                                  int64
``float``                                float64
``str``                                  string
``bool``                                 bool
``bytes``                                binary
``datetime.datetime``                    timestamp[us]
``datetime.date``                        date32
``decimal.Decimal``                      decimal128(38, 9)
``np.float32``, ``np.int32``, ...        the numpy type's Arrow twin
``list[float]``                          list<float64> (and so on)
``Optional[float]``                      float64 (every column is nullable)
``Annotated[pa.Array, pa.float32()]``    the Arrow type given
=======================================  ==============================

An ``async def`` UDF is called once per row (for I/O: HTTP, a model server) with
Python values (``None`` for NULL), ``concurrency`` calls at a time (default 32), each
bounded by ``timeout``; results keep row order, and a call that raises or runs out
of time fails only its own row (dead letter ``udf`` or ``timeout``).
"""

from __future__ import annotations

import datetime as dt
import decimal
import inspect
import threading
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.batches import null_rows
from sqlstream.durations import parse_duration_us
from sqlstream.errors import UdfError
from sqlstream.sql.types import sql_type_name
from sqlstream.udf.decorator import UdfSpec

__all__ = ["PythonUdf", "RowFailure", "hint_to_arrow", "HINT_TYPES"]

HINT_TYPES: dict[Any, pa.DataType] = {
    int: pa.int64(),
    float: pa.float64(),
    str: pa.string(),
    bool: pa.bool_(),
    bytes: pa.binary(),
    dt.datetime: pa.timestamp("us"),
    dt.date: pa.date32(),
    decimal.Decimal: pa.decimal128(38, 9),
    np.float16: pa.float16(),
    np.float32: pa.float32(),
    np.float64: pa.float64(),
    np.int8: pa.int8(),
    np.int16: pa.int16(),
    np.int32: pa.int32(),
    np.int64: pa.int64(),
    np.uint8: pa.uint8(),
    np.uint16: pa.uint16(),
    np.uint32: pa.uint32(),
    np.uint64: pa.uint64(),
    np.bool_: pa.bool_(),
}


def hint_to_arrow(hint: Any, where: str) -> pa.DataType:
    """The Arrow type a type hint stands for (see the module docstring)."""
    if isinstance(hint, pa.DataType):
        return hint
    if hint in HINT_TYPES:
        return HINT_TYPES[hint]
    origin = typing.get_origin(hint)
    arguments = typing.get_args(hint)
    if origin is typing.Annotated:
        given = [a for a in arguments[1:] if isinstance(a, pa.DataType)]
        if given:
            return given[0]
        return hint_to_arrow(arguments[0], where)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in arguments if a is not type(None)]
        if len(rest) == 1:
            return hint_to_arrow(rest[0], where)
    if origin in (list, tuple) and arguments:
        return pa.list_(hint_to_arrow(arguments[0], where))
    raise UdfError(
        f"cannot map type hint {getattr(hint, '__name__', hint)!s} of {where} to an Arrow type",
        hint="use int, float, str, bool, bytes, datetime, date, np.float32, list[...], "
        "Annotated[pa.Array, pa.<type>()], or pass args=[pa....] and returns=pa....",
    )


@dataclass
class RowFailure:
    """A row the function failed on: index in the batch, reason (udf | timeout), detail."""

    row: int
    reason: str
    detail: str


class _AsyncRunner:
    """One event loop in a daemon thread, shared by the async UDFs of a process."""

    _instance: "_AsyncRunner | None" = None
    _lock = threading.Lock()

    def __init__(self):
        import asyncio  # here, not at the top: only async UDFs need it, and it costs start-up

        self.loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self.loop.run_forever, name="sqlstream-async-udf", daemon=True)
        thread.start()

    @classmethod
    def get(cls) -> "_AsyncRunner":
        with cls._lock:
            if cls._instance is None:
                cls._instance = _AsyncRunner()
            return cls._instance

    def run(self, coroutine):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


class PythonUdf:
    """A registered Python function: its SQL signature and the vectorized call."""

    kind = "python"

    def __init__(self, fn: Callable, spec: UdfSpec, args: list[pa.DataType], returns: pa.DataType):
        self.fn = fn
        self.spec = spec
        self.name = spec.name
        self.arg_types = args
        self.return_type = returns
        self.volatility = spec.volatility
        self.is_async = inspect.iscoroutinefunction(fn)
        self.reports_row_failures = self.is_async  # call_rows: per row, with a reason (udf | timeout)
        self.concurrency = spec.concurrency or 32
        self.timeout_s = None
        if spec.timeout is not None:
            try:
                self.timeout_s = parse_duration_us(spec.timeout) / 1e6
            except ValueError as error:
                raise UdfError(f"function '{self.name}': timeout {spec.timeout!r} is not a duration", hint="e.g. timeout='2s' or '500ms'") from error
            if self.timeout_s <= 0:
                raise UdfError(f"function '{self.name}': timeout must be positive, got {spec.timeout!r}")
        self.origin = _origin(fn)

    @classmethod
    def from_function(cls, fn: Callable) -> "PythonUdf":
        if not callable(fn):
            raise UdfError(f"register_udf needs a function, got {type(fn).__name__}")
        spec: UdfSpec = getattr(fn, "__sqlstream_udf__", None) or UdfSpec(fn.__name__.lower(), None, None)
        params = [
            p for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
        args = spec.args
        returns = spec.returns
        if args is None or returns is None:
            try:
                hints = typing.get_type_hints(fn, include_extras=True)
            except Exception as error:  # noqa: BLE001 - unresolvable annotations
                raise UdfError(f"function '{spec.name}': cannot read its type hints: {error}") from error
            if args is None:
                missing = [p.name for p in params if p.name not in hints]
                if missing:
                    raise UdfError(
                        f"function '{spec.name}' needs argument types: no hint for {', '.join(missing)}",
                        hint="@udf(args=[pa.float64(), ...], returns=pa.float64()) or type hints like x: float",
                    )
                args = [hint_to_arrow(hints[p.name], f"{spec.name}({p.name})") for p in params]
            if returns is None:
                if "return" not in hints:
                    raise UdfError(f"function '{spec.name}' needs a return type", hint="returns=pa.float64() or -> float")
                returns = hint_to_arrow(hints["return"], f"{spec.name} return")
        if not args:
            raise UdfError(
                f"function '{spec.name}' takes no arguments",
                hint="a vectorized UDF learns the batch length from its arguments: give it at least one",
            )
        if len(params) > len(args) or not _accepts(fn, len(args)):
            raise UdfError(
                f"function '{spec.name}' declares {len(args)} argument type(s) but its Python signature "
                f"takes {len(params)}",
                hint="make args=[...] match the function's parameters",
            )
        is_async = inspect.iscoroutinefunction(fn)
        if not is_async and (spec.concurrency is not None or spec.timeout is not None):
            raise UdfError(
                f"function '{spec.name}': concurrency and timeout apply to async def functions only",
                hint="vectorized functions run once per batch; write async def for per-row I/O",
            )
        return cls(fn, spec, list(args), returns)

    def signature(self) -> str:
        args = ", ".join(sql_type_name(t) for t in self.arg_types)
        prefix = "async " if self.is_async else ""
        return f"{prefix}{self.name}({args}) -> {sql_type_name(self.return_type)}"

    def check_args(self, types: list[pa.DataType]) -> pa.DataType:
        """The result type for argument ``types`` (raises UdfError when they do not fit)."""
        if len(types) != len(self.arg_types):
            raise UdfError(
                f"function {self.name} takes {len(self.arg_types)} argument(s), got {len(types)}",
                hint=self.signature(),
            )
        for i, (given, wanted) in enumerate(zip(types, self.arg_types)):
            if given != wanted and not _castable(given, wanted):
                raise UdfError(
                    f"argument {i + 1} of {self.name} is {sql_type_name(given)}, expected {sql_type_name(wanted)}",
                    hint=self.signature(),
                )
        return self.return_type

    def prepare(self, args: list[pa.Array]) -> list[pa.Array]:
        return [a.cast(t) if a.type != t else a for a, t in zip(args, self.arg_types)]

    def call(self, args: list[pa.Array], length: int) -> pa.Array:
        """Vectorized call on whole arrays; exceptions propagate (isolated by the caller)."""
        return self.conform(self.fn(*args), args, length)

    # -- results ------------------------------------------------------------------------------

    def conform(self, result: Any, args: list[pa.Array], length: int) -> pa.Array:
        """``result`` as an Arrow array of ``return_type`` and ``length``, or UdfError."""
        if isinstance(result, pa.ChunkedArray):
            result = result.combine_chunks() if result.num_chunks != 1 else result.chunk(0)
        if isinstance(result, np.ndarray):
            return self._from_numpy(result, args, length)
        if isinstance(result, list):
            try:
                result = pa.array(result, type=self.return_type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as error:
                raise UdfError(f"function {self.name} returned a list that is not {sql_type_name(self.return_type)}: {error}") from error
        if not isinstance(result, pa.Array):
            raise UdfError(
                f"function {self.name} returned {type(result).__name__}; expected a pyarrow Array or numpy array of {length} values",
                hint="UDFs are vectorized: they get whole arrays and return one value per row",
            )
        if len(result) != length:
            raise UdfError(f"function {self.name} returned {len(result)} values for {length} rows")
        if result.type != self.return_type:
            try:
                result = result.cast(self.return_type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
                raise UdfError(
                    f"function {self.name} returned {sql_type_name(result.type)}, which does not cast to "
                    f"{sql_type_name(self.return_type)}: {_first_line(error)}"
                ) from error
        return result

    def _from_numpy(self, result: np.ndarray, args: list[pa.Array], length: int) -> pa.Array:
        if result.ndim == 0 or len(result) != length:
            got = "a scalar" if result.ndim == 0 else f"{len(result)} values"
            raise UdfError(f"function {self.name} returned {got} (numpy {result.dtype}, shape {result.shape}) for {length} rows")
        wanted = self.return_type
        try:
            if result.ndim == 2 and (pa.types.is_list(wanted) or pa.types.is_fixed_size_list(wanted) or pa.types.is_large_list(wanted)):
                flat = pa.array(np.ascontiguousarray(result).reshape(-1), type=wanted.value_type)
                array = pa.FixedSizeListArray.from_arrays(flat, result.shape[1])
                array = array.cast(wanted) if array.type != wanted else array
            elif result.ndim == 1:
                array = pa.array(result, type=wanted)
            else:
                raise ValueError(f"a {result.ndim}-dimensional array does not fit")
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError) as error:
            raise UdfError(
                f"function {self.name} returned a numpy array of {result.dtype} (shape {result.shape}) that is not "
                f"{sql_type_name(wanted)}: {_first_line(error)}"
            ) from error
        nulls = null_rows(args)
        if nulls is not None:
            array = pc.if_else(nulls, pa.scalar(None, type=wanted), array)
        return array

    # -- async: per row, bounded concurrency and timeout -------------------------------------

    def call_rows(self, args: list[pa.Array], length: int) -> tuple[pa.Array, list[RowFailure]]:
        columns = [a.to_pylist() for a in args]
        rows = list(zip(*columns))
        outcomes = _AsyncRunner.get().run(self._gather(rows))
        values, failures = [], []
        for i, (ok, value) in enumerate(outcomes):
            if ok:
                values.append(value)
            else:
                values.append(None)
                failures.append(RowFailure(i, value[0], value[1]))
        return self.conform(values, args, length), failures

    async def _gather(self, rows):
        import asyncio  # loaded by then (see _AsyncRunner)

        semaphore = asyncio.Semaphore(self.concurrency)

        async def one(row):
            async with semaphore:
                try:
                    if self.timeout_s is not None:
                        return True, await asyncio.wait_for(self.fn(*row), self.timeout_s)
                    return True, await self.fn(*row)
                except asyncio.TimeoutError:
                    return False, ("timeout", f"{self.name}: no result within {self.timeout_s:g}s")
                except Exception as error:  # noqa: BLE001 - reported per row
                    return False, ("udf", f"{self.name}: {type(error).__name__}: {error}")

        return await asyncio.gather(*(one(r) for r in rows))


def _castable(given: pa.DataType, wanted: pa.DataType) -> bool:
    numeric = lambda t: pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)  # noqa: E731
    listy = lambda t: pa.types.is_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_large_list(t)  # noqa: E731
    stringy = lambda t: pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)  # noqa: E731
    if numeric(given) and numeric(wanted):
        return True
    if pa.types.is_null(given):
        return True
    if listy(given) and listy(wanted):
        if pa.types.is_fixed_size_list(given) and pa.types.is_fixed_size_list(wanted) and given.list_size != wanted.list_size:
            return False
        return given.value_type == wanted.value_type or _castable(given.value_type, wanted.value_type)
    if pa.types.is_timestamp(given) and pa.types.is_timestamp(wanted):
        return True
    if stringy(given) and stringy(wanted):
        return True
    return False


def _accepts(fn: Callable, count: int) -> bool:
    try:
        inspect.signature(fn).bind(*range(count))
    except TypeError:
        return False
    return True


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _origin(fn: Callable) -> str:
    try:
        return f"{inspect.getsourcefile(fn)}:{inspect.getsourcelines(fn)[1]}"
    except (OSError, TypeError):
        return getattr(fn, "__module__", "")
