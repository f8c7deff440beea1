"""Example UDFs, loaded when sqlstream runs from the repository root (``udfs/`` in the
working directory) or with ``--udfs udfs``.

Vectorized: each function is called once per micro-batch with whole Arrow arrays.
"""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream import udf


@udf(args=[pa.string(), pa.string()], returns=pa.int64())
def count_char(s: pa.Array, c: pa.Array) -> pa.Array:
    """How often ``c`` occurs in ``s``; NULL if either is NULL.

    One Arrow kernel call per distinct ``c`` in the batch (usually one: a literal).
    """
    result = pa.nulls(len(s), pa.int64())
    for pattern in pc.unique(c.drop_null()).to_pylist():
        counts = pc.cast(pc.count_substring(s, pattern=pattern), pa.int64())
        result = pc.if_else(pc.equal(c, pattern), counts, result)
    return result


@udf
def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two points given in degrees (numpy, vectorized)."""
    p1, l1, p2, l2 = (np.radians(a.to_numpy(zero_copy_only=False)) for a in (lat1, lon1, lat2, lon2))
    h = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin((l2 - l1) / 2) ** 2
    return 2 * 6371.0088 * np.arcsin(np.sqrt(h))
