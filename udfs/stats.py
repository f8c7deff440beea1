"""Example aggregate functions (``@udaf``), loaded like the UDFs next to them.

Each is called once per group (and micro-batch), never once per row: ``median`` with
the whole group's values when the window closes, ``geomean`` with each batch's rows of
a group, keeping a two-number state that merges across batches and panes.
"""

import numpy as np
import pyarrow as pa

from sqlstream import udaf


@udaf(args=[pa.float64()], returns=pa.float64())
def median(values: pa.Array) -> float:
    """The median of a group's non-NULL values (in windows: in event-time order)."""
    return float(np.median(values.to_numpy()))


@udaf(args=[pa.float64()], returns=pa.float64())
class geomean:
    """The geometric mean of a group's positive values: state (sum of logs, count)."""

    def create(self):
        return (0.0, 0)

    def accumulate(self, state, values: pa.Array):
        v = values.drop_null().to_numpy()
        if (v <= 0).any():
            raise ValueError("geomean needs positive values")
        return (state[0] + float(np.log(v).sum()), state[1] + len(v))

    def merge(self, state, other):
        return (state[0] + other[0], state[1] + other[1])

    def finish(self, state):
        return float(np.exp(state[0] / state[1])) if state[1] else None
