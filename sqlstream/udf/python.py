"""Python UDFs: called once per micro-batch with whole Arrow arrays.

Type hints, when ``args``/``returns`` are not given to ``@udf``, name the *element*
type of each array:

=================  ==============================
hint               Arrow type
=================  ==============================
``int``            int64
``float``          float64
``str``            string
``bool``           bool
``bytes``          binary
``datetime``       timestamp[us]
``date``           date32
``list[float]``    list<float64> (and so on)
=================  ==============================

An ``async def`` UDF is called once per row (for I/O: HTTP, a model server),
``concurrency`` calls at a time, each bounded by ``timeout``; results keep row order.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import threading
import typing
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from sqlstream.durations import parse_duration_us
from sqlstream.errors import UdfError
from sqlstream.sql.types import sql_type_name
from sqlstream.udf.decorator import UdfSpec

__all__ = ["PythonUdf", "RowFailure", "hint_to_arrow"]

_HINTS: dict[Any, pa.DataType] = {
    int: pa.int64(),
    float: pa.float64(),
    str: pa.string(),
    bool: pa.bool_(),
    bytes: pa.binary(),
    dt.datetime: pa.timestamp("us"),
    dt.date: pa.date32(),
}


def hint_to_arrow(hint: Any, where: str) -> pa.DataType:
    if isinstance(hint, pa.DataType):
        return hint
    if hint in _HINTS:
        return _HINTS[hint]
    origin = typing.get_origin(hint)
    if origin in (list, tuple) and typing.get_args(hint):
        return pa.list_(hint_to_arrow(typing.get_args(hint)[0], where))
    raise UdfError(
        f"cannot map type hint {hint!r} of {where} to an Arrow type",
        hint="use int, float, str, bool, bytes, datetime, date, list[...] or pass args=[pa....] and returns=pa....",
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
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


class PythonUdf:
    kind = "python"

    def __init__(self, fn: Callable, spec: UdfSpec, args: list[pa.DataType], returns: pa.DataType):
        self.fn = fn
        self.spec = spec
        self.name = spec.name
        self.arg_types = args
        self.return_type = returns
        self.is_async = inspect.iscoroutinefunction(fn)
        self.concurrency = spec.concurrency or 32
        self.timeout_s = parse_duration_us(spec.timeout) / 1e6 if spec.timeout is not None else None
        self.origin = _origin(fn)

    @classmethod
    def from_function(cls, fn: Callable) -> "PythonUdf":
        spec: UdfSpec = getattr(fn, "__sqlstream_udf__", None) or UdfSpec(fn.__name__.lower(), None, None)
        args = spec.args
        returns = spec.returns
        if args is None or returns is None:
            try:
                hints = typing.get_type_hints(fn)
            except Exception as error:  # noqa: BLE001 - unresolvable annotations
                raise UdfError(f"cannot read the type hints of {fn.__name__}: {error}") from error
            params = [p for p in inspect.signature(fn).parameters.values()]
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
        if spec.volatility not in ("immutable", "stable", "volatile"):
            raise UdfError(f"function '{spec.name}': volatility must be immutable, stable or volatile")
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
        result = self.fn(*args)
        return self.conform(result, length)

    def conform(self, result: Any, length: int) -> pa.Array:
        if isinstance(result, pa.ChunkedArray):
            result = result.combine_chunks()
        if isinstance(result, np.ndarray):
            try:
                result = pa.array(result, type=self.return_type) if result.ndim == 1 else pa.array(list(result), type=self.return_type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as error:
                raise UdfError(
                    f"function {self.name} returned a numpy array of {result.dtype} that is not {sql_type_name(self.return_type)}: {error}"
                ) from error
        elif isinstance(result, list):
            try:
                result = pa.array(result, type=self.return_type)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
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
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                raise UdfError(
                    f"function {self.name} returned {result.type}, which does not cast to {sql_type_name(self.return_type)}: {error}"
                ) from error
        return result

    # -- async: per row, bounded concurrency and timeout -------------------------------------

    def call_rows(self, args: list[pa.Array], length: int) -> tuple[pa.Array, list[RowFailure]]:
        columns = [a.to_pylist() for a in args]
        rows = list(zip(*columns)) if columns else [() for _ in range(length)]
        outcomes = _AsyncRunner.get().run(self._gather(rows))
        values, failures = [], []
        for i, (ok, value) in enumerate(outcomes):
            if ok:
                values.append(value)
            else:
                values.append(None)
                failures.append(RowFailure(i, value[0], value[1]))
        return self.conform(pa.array(values, type=self.return_type), length), failures

    async def _gather(self, rows):
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
    if numeric(given) and numeric(wanted):
        return True
    if pa.types.is_null(given):
        return True
    if (pa.types.is_list(given) or pa.types.is_fixed_size_list(given) or pa.types.is_large_list(given)) and (
        pa.types.is_list(wanted) or pa.types.is_fixed_size_list(wanted)
    ):
        return _castable(given.value_type, wanted.value_type)
    if pa.types.is_timestamp(given) and pa.types.is_timestamp(wanted):
        return True
    if pa.types.is_string(given) and pa.types.is_large_string(wanted):
        return True
    return False


def _origin(fn: Callable) -> str:
    try:
        return f"{inspect.getsourcefile(fn)}:{inspect.getsourcelines(fn)[1]}"
    except (OSError, TypeError):
        return getattr(fn, "__module__", "")
