"""Python UDFs for the sensors pipeline (every *.py in udfs/ next to the pipeline is loaded)."""

import pyarrow as pa
import pyarrow.compute as pc

from sqlstream import udf


@udf
def fahrenheit(celsius: float) -> float:
    """Type hints name the element types: whole DOUBLE arrays in, a DOUBLE array out."""
    return pc.add(pc.multiply(celsius, 9 / 5), 32.0)


@udf(args=[pa.float32()], returns=pa.string())
def severity(score: pa.Array) -> pa.Array:
    """IsolationForest score → 'severe' below -0.03, else 'mild'."""
    return pc.if_else(pc.less(score, -0.03), "severe", "mild")
