"""``sqlstream.batches``: arrays made without pyarrow's conversion of Python values equal
the ones ``pa.array`` makes."""

from __future__ import annotations

import pyarrow as pa
import pytest

from sqlstream.batches import empty_batch, string_array, to_batch


@pytest.mark.parametrize("texts", [[], ["berlin"], ["berlin", "", "ößü €", "oslo"]])
def test_string_array_equals_pa_array(texts):
    made = string_array(texts)
    made.validate(full=True)
    assert made.equals(pa.array(texts, pa.string()))


def test_empty_batch_keeps_the_schema():
    schema = pa.schema([pa.field("id", pa.int64(), nullable=False), ("tags", pa.list_(pa.string())),
                        ("p", pa.struct([("x", pa.float64())])), ("ts", pa.timestamp("ms", tz="UTC"))])
    batch = empty_batch(schema)
    assert batch.num_rows == 0 and batch.schema == schema
    assert to_batch(schema.empty_table()).equals(batch)
