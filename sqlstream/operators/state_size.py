"""How much state an operator holds: rows and (estimated) bytes.

Every stateful operator answers :meth:`~sqlstream.operators.base.Operator.state_size`
from what it already keeps, in time independent of the number of rows: Arrow tables
by their buffer sizes, numpy arrays by ``nbytes``. Nothing is scanned row by row, so
the runtime can ask after every micro-batch.

The bytes are the buffers the state references (an Arrow buffer shared by several
columns of one table counts once); Python object overhead, allocator slack and the
working memory of a micro-batch are not included. For Arrow state it matches what
Arrow's allocator holds; the process's resident memory grows 2-4x more (freed memory
kept for reuse, working memory), as measured in README, "State and memory".

>>> StateSize(2, 100) + StateSize(3, 50)
StateSize(rows=5, bytes=150)
>>> table_bytes(pa.table({"x": pa.array([1, 2, 3], pa.int64())}))
24
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa

__all__ = ["StateSize", "NO_STATE", "table_bytes", "numpy_bytes"]


class StateSize(NamedTuple):
    """Rows of state and the bytes they take (estimated)."""

    rows: int = 0
    bytes: int = 0

    def __add__(self, other: "StateSize") -> "StateSize":  # type: ignore[override]
        return StateSize(self.rows + other.rows, self.bytes + other.bytes)


NO_STATE = StateSize(0, 0)


def table_bytes(*tables: pa.Table | pa.RecordBatch | pa.Array | None) -> int:
    """Bytes of the Arrow buffers of ``tables`` (each buffer once per table; a sliced
    buffer counts whole, since the slice keeps all of it alive)."""
    return sum(t.get_total_buffer_size() for t in tables if t is not None)


def numpy_bytes(*arrays: np.ndarray | None) -> int:
    """Bytes of numpy arrays (None counts 0)."""
    return sum(a.nbytes for a in arrays if a is not None)
