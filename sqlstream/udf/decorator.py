"""``@udf``: marks a Python function as a vectorized SQL scalar function.

It only attaches metadata; a Session registers the function explicitly
(``Session.register_udf``) or by discovering ``udfs/*.py``. No global registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pyarrow as pa

__all__ = ["udf", "UdfSpec"]


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

    ``args``/``returns`` are pyarrow types; when omitted they come from type hints.
    ``async def`` functions run per row, ``concurrency`` at a time, each within ``timeout``.
    """

    def mark(f: Callable) -> Callable:
        f.__sqlstream_udf__ = UdfSpec(
            name=(name or f.__name__).lower(),
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
