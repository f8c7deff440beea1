"""Find the rows that make a vectorized operation fail, without giving up the rest.

Decoders and UDFs run on whole batches. When a batch fails, :func:`isolate_failures`
bisects it: halves that succeed keep their (vectorized) results, halves that fail
are split again until the failing rows stand alone. With ``k`` bad rows in ``n``
this costs ``O(k log n)`` extra calls, and the result is the same whatever the batch
size: exactly the bad rows are rejected.
"""

from __future__ import annotations

from typing import Callable, TypeVar

__all__ = ["isolate_failures", "reject_failing_rows"]

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


def reject_failing_rows(
    length: int, apply: Callable[[int, int], None], row_errors: tuple[type[Exception], ...]
) -> list[tuple[int, Exception]]:
    """Run ``apply(start, end)`` on ``[0, length)`` at once; when that raises one of
    ``row_errors`` (a row the destination rejects), bisect with :func:`isolate_failures`
    so every other row is applied. Returns ``(index, exception)`` of the rejected rows.
    Any other exception (a lost connection, a bug) is raised as it is: it is no row's
    fault, and retrying it row by row would only repeat it."""
    try:
        apply(0, length)
        return []
    except row_errors:
        pass
    fatal: list[Exception] = []

    def attempt(start: int, end: int) -> None:
        if fatal:
            raise fatal[0]
        try:
            apply(start, end)
        except row_errors:
            raise
        except Exception as error:
            fatal.append(error)
            raise

    _, rejected = isolate_failures(length, attempt)
    if fatal:
        raise fatal[0]
    return rejected
