"""Text functions: ``shout(s)`` and ``repeat_text(s, n)``."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from sqlstream import udf


@udf(args=[pa.string()], returns=pa.string())
def shout(s: pa.Array) -> pa.Array:
    """Upper case and an exclamation mark."""
    return pc.binary_join_element_wise(pc.utf8_upper(s), "!", "")


@udf(args=[pa.string(), pa.int64()], returns=pa.string())
def repeat_text(s: pa.Array, n: pa.Array) -> pa.Array:
    """``s`` repeated ``n`` times."""
    return pc.binary_repeat(s, n)
