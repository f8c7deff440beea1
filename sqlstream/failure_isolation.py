"""Find the rows that make a vectorized operation fail, without giving up the rest.

Decoders and UDFs run on whole batches. When a batch fails, :func:`isolate_failures`
bisects it: halves that succeed keep their (vectorized) results, halves that fail
are split again until the failing rows stand alone. With ``k`` bad rows in ``n``
this costs ``O(k log n)`` extra calls, and the result is the same whatever the batch
size: exactly the bad rows are rejected.
"""

from __future__ import annotations

from typing import Callable, TypeVar

__all__ = ["isolate_failures"]

T = TypeVar("T")


def isolate_failures(
    length: int, attempt: Callable[[int, int], T]
) -> tuple[list[tuple[int, int, T]], list[tuple[int, Exception]]]:
    """Run ``attempt(start, end)`` over ``[0, length)``, bisecting ranges that raise.

    Returns the successful ``(start, end, result)`` ranges in order, and the
    ``(index, exception)`` of each row that fails on its own.
    """
    good: list[tuple[int, int, T]] = []
    bad: list[tuple[int, Exception]] = []
    stack = [(0, length)]
    while stack:
        start, end = stack.pop()
        if start >= end:
            continue
        try:
            good.append((start, end, attempt(start, end)))
        except Exception as error:  # noqa: BLE001 - the point is to isolate any failure
            if end - start == 1:
                bad.append((start, error))
            else:
                middle = (start + end) // 2
                stack.append((middle, end))
                stack.append((start, middle))
    good.sort(key=lambda item: item[0])
    bad.sort(key=lambda item: item[0])
    return good, bad
