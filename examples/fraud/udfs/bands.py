"""Python UDFs for the fraud pipeline (every *.py in udfs/ next to the pipeline is loaded)."""

import numpy as np
import pyarrow as pa

from sqlstream import udf


@udf(args=[pa.float32()], returns=pa.string())
def risk_band(p: pa.Array) -> pa.Array:
    """'critical' from 0.98, 'high' from 0.9, else 'elevated'/'low' (vectorized: one call per batch)."""
    values = p.to_numpy(zero_copy_only=False)
    bands = np.select([values >= 0.98, values >= 0.9, values >= 0.5], ["critical", "high", "elevated"], "low")
    return pa.array(bands, mask=np.isnan(values))
