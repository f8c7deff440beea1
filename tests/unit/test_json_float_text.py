"""The JSON sink's float text skips kernels it does not need, and writes what it wrote
before: every value through the full kernel sequence (the reference below) and through
the encoder must give the same text, for DOUBLE and REAL with NULL, NaN, infinities,
-0.0, integral and huge values."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlstream.connectors.encode import encode_json_values


def _reference(values: pa.Array) -> pa.Array:
    wide = pc.cast(values, pa.float64())
    out = pc.replace_substring_regex(pc.cast(wide, pa.string()), pattern="^(-?[0-9]+)$", replacement="\\1.0")
    return pc.if_else(pc.is_finite(wide), out, pa.scalar(None, pa.string()))


_FLOATS = st.one_of(st.sampled_from([0.0, -0.0, 1.0, -3.0, 1e20, 2.5, math.nan, math.inf, -math.inf, 1e-7]), st.floats())


@settings(max_examples=150, deadline=None)
@given(st.lists(st.none() | _FLOATS, max_size=12), st.sampled_from([pa.float64(), pa.float32()]))
def test_float_text_is_what_the_full_kernel_sequence_writes(values, kind):
    array = pa.array(values, pa.float64()).cast(kind, safe=False)
    expected = pc.fill_null(pc.binary_join_element_wise('{"x":', _reference(array), "}", ""), "").to_pylist()
    expected = [e if e else '{"x":null}' for e in expected]
    assert encode_json_values(pa.RecordBatch.from_arrays([array], names=["x"])).to_pylist() == expected
