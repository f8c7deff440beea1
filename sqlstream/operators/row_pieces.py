"""One batch's work split into pieces of consecutive rows, run on a small thread pool
and returned in row order: pyarrow's group-by releases the GIL, so the partial
aggregates of a million-row batch are computed on all of the machine's cores.

The pieces depend on the number of rows only (never on the number of cores), so a
run gives the same results, to the last bit, on any machine.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

import pyarrow as pa

__all__ = ["PIECE_ROWS", "map_in_order", "map_row_pieces", "pieces_of"]

#: a table is split once it has twice this many rows (a file batch of 262,144 rows: 2 pieces)
PIECE_ROWS = 131_072

T = TypeVar("T")
A = TypeVar("A")

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _thread_pool() -> ThreadPoolExecutor | None:
    """The shared pool, one thread per core (None on one core)."""
    global _pool
    workers = _workers()
    if workers < 2:
        return None
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sqlstream-pieces")
        return _pool


def pieces_of(rows: int, piece_rows: int | None = None) -> list[tuple[int, int]]:
    """``(offset, length)`` of ``rows // piece_rows`` (at least 1) pieces of equal size
    (``piece_rows``: :data:`PIECE_ROWS` unless given).

    >>> pieces_of(262_144)
    [(0, 131072), (131072, 131072)]
    >>> pieces_of(400_000)
    [(0, 133333), (133333, 133333), (266666, 133334)]
    >>> pieces_of(10)
    [(0, 10)]
    """
    count = max(1, rows // (piece_rows or PIECE_ROWS))
    bounds = [rows * i // count for i in range(count + 1)]
    return [(start, end - start) for start, end in zip(bounds, bounds[1:])]


def map_row_pieces(function: Callable[[pa.Table], T], table: pa.Table, piece_rows: int | None = None) -> list[T]:
    """``function`` of each piece of ``table`` (see :func:`pieces_of`), in row order;
    on the pool when there are several pieces and cores. ``function`` must be safe to
    run on several threads at once (pyarrow compute on its arguments only)."""
    return map_in_order(function, [table.slice(offset, length) for offset, length in pieces_of(table.num_rows, piece_rows)])


def map_in_order(function: Callable[[A], T], items: list[A]) -> list[T]:
    """``[function(item) for item in items]``, on the pool when there are several items
    and cores (the same thread-safety rule as :func:`map_row_pieces`)."""
    pool = _thread_pool() if len(items) > 1 else None
    if pool is None:
        return [function(item) for item in items]
    return list(pool.map(function, items))
