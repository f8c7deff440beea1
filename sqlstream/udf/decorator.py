"""``@udf``: marks a Python function as a vectorized SQL scalar function.

It only attaches metadata; a Session registers the function explicitly
(``Session.register_udf``) or by discovering ``udfs/*.py``. No global registry.

>>> import pyarrow as pa, pyarrow.compute as pc
>>> from sqlstream import udf
>>> @udf(args=[pa.float64()], returns=pa.float64())
... def plus_one(x: pa.Array) -> pa.Array:
...     return pc.add(x, 1.0)
>>> plus_one.__sqlstream_udf__.name
'plus_one'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from sqlstream.errors import UdfError

if TYPE_CHECKING:  # pyarrow loads when a function is decorated: ``import sqlstream`` stays light
    import pyarrow as pa

__all__ = ["udf", "UdfSpec", "VOLATILITIES"]

#: ``immutable``: same arguments, same result (identical calls in a query run once);
#: ``stable``: the same within one micro-batch (also shared); ``volatile``: every
#: call site runs on its own (e.g. a random number or a clock).
VOLATILITIES = ("immutable", "stable", "volatile")

_NAME = re.compile(r"[a-z_][a-z0-9_]*")


@dataclass
class UdfSpec:
    name: str
    args: list[pa.DataType] | None
    returns: pa.DataType | None
    volatility: str = "immutable"
    concurrency: int | None = None
    timeout: str | float | None = None


def udf(
    fn: Callable | None = None,
    *,
    args: list[pa.DataType] | None = None,
    returns: pa.DataType | None = None,
    name: str | None = None,
    volatility: str = "immutable",
    concurrency: int | None = None,
    timeout: str | float | None = None,
) -> Any:
    """Mark ``fn`` as a SQL function called once per micro-batch with whole Arrow arrays.

    ``args``/``returns`` are pyarrow types; when omitted they come from type hints
    (see :mod:`sqlstream.udf.python`). ``name`` is the SQL name (default: the Python
    name, lower-cased). ``async def`` functions run once per row, ``concurrency`` at a
    time, each within ``timeout`` (``'2s'``, ``'500ms'`` or seconds as a number).
    """
    import pyarrow as pa

    spec_name = (name or "").lower() or None
    if spec_name is not None and not _NAME.fullmatch(spec_name):
        raise UdfError(
            f"@udf(name='{name}'): not a SQL function name",
            hint="use letters, digits and underscores, starting with a letter or underscore",
        )
    if volatility not in VOLATILITIES:
        raise UdfError(f"@udf(volatility='{volatility}'): expected one of {', '.join(VOLATILITIES)}")
    if args is not None:
        bad = [a for a in args if not isinstance(a, pa.DataType)]
        if bad:
            raise UdfError(f"@udf(args=...): {bad[0]!r} is not a pyarrow type", hint="e.g. args=[pa.float64(), pa.string()]")
    if returns is not None and not isinstance(returns, pa.DataType):
        raise UdfError(f"@udf(returns=...): {returns!r} is not a pyarrow type", hint="e.g. returns=pa.float64()")
    if concurrency is not None and (not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1):
        raise UdfError(f"@udf(concurrency={concurrency!r}): expected a positive integer")

    def mark(f: Callable) -> Callable:
        f.__sqlstream_udf__ = UdfSpec(
            name=spec_name or f.__name__.lower(),
            args=list(args) if args is not None else None,
            returns=returns,
            volatility=volatility,
            concurrency=concurrency,
            timeout=timeout,
        )
        return f

    if fn is not None and callable(fn):
        return mark(fn)
    return mark
