"""Small batches are written to JSON one Python string per row (``json_rows``) and
framed for NATS with one bytes join (``protocol.prepare_rows``): both must give
exactly the bytes of the kernel path they replace. Random batches of up to 64 rows
with NULLs, NaN and infinities, -0.0, huge and tiny floats (REAL and DOUBLE),
integer extremes, text with quotes, backslashes, control characters and non-ASCII,
booleans, BYTEA, timestamps (with and without a zone), dates, times and decimals go
through both."""

from __future__ import annotations

import datetime
import decimal
import math

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlstream.connectors.encode import (
    SMALL_ROWS,
    _binary_as_base64,
    _duckdb_json,
    _flat_json,
    encode_json_lines,
    encode_json_values,
    float_text,
    json_rows,
)
from sqlstream.connectors.nats.protocol import frames, prepare_rows

_FLOATS = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, -3.0, 1e20, 2.5, 1e-7, 1e-6, 1e-4, 9.999999999999999e-05, 1e10, 9999999999.0,
                     9999999999.5, 1e16, 1e21, 5e-324, 1.7976931348623157e308, math.nan, math.inf, -math.inf]),
    st.floats(),
    st.floats(min_value=-1e12, max_value=1e12),
    st.floats(min_value=-1e-3, max_value=1e-3),
)
_TEXT = st.one_of(
    st.text(max_size=8),
    st.text(alphabet=st.sampled_from(['a', '"', "\\", "\n", "\r", "\t", "é", "€", "\x01", "\x1f", "\x7f", "😀", "%", " "]),
            max_size=6),
)
_TIMES = st.datetimes(min_value=datetime.datetime(1900, 1, 1), max_value=datetime.datetime(2200, 1, 1))

_COLUMNS = {
    "double": (pa.float64(), _FLOATS),
    "real": (pa.float32(), _FLOATS),
    "bigint": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "int": (pa.int32(), st.integers(-(2**31), 2**31 - 1)),
    "smallint": (pa.int16(), st.integers(-(2**15), 2**15 - 1)),
    "ubyte": (pa.uint8(), st.integers(0, 255)),
    "bool": (pa.bool_(), st.booleans()),
    "varchar": (pa.string(), _TEXT),
    "large": (pa.large_string(), _TEXT),
    "bytea": (pa.binary(), st.binary(max_size=6)),
    "ts_us": (pa.timestamp("us"), _TIMES),
    "ts_ms": (pa.timestamp("ms"), _TIMES.map(lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000))),
    "ts_utc": (pa.timestamp("us", "UTC"), _TIMES.map(lambda t: t.replace(tzinfo=datetime.timezone.utc))),
    "date": (pa.date32(), st.dates(min_value=datetime.date(1900, 1, 1), max_value=datetime.date(2200, 1, 1))),
    "time": (pa.time64("us"), st.times()),
    "decimal": (pa.decimal128(10, 3), st.decimals(min_value=-999999, max_value=999999, places=3, allow_nan=False)),
}


@st.composite
def batches(draw) -> pa.RecordBatch:
    rows = draw(st.integers(0, SMALL_ROWS))
    kinds = draw(st.lists(st.sampled_from(sorted(_COLUMNS)), min_size=1, max_size=5))
    names = draw(st.lists(st.sampled_from(["id", "x", "s", "a b", 'q"', "é", "%d", "%s", "n\\"]),
                          min_size=len(kinds), max_size=len(kinds), unique=True))
    arrays = []
    for kind in kinds:
        t, values = _COLUMNS[kind]
        column = draw(st.lists(st.none() | values, min_size=rows, max_size=rows))
        if kind == "real":
            arrays.append(pa.array(column, pa.float64()).cast(t, safe=False))
        elif kind == "decimal":
            arrays.append(pa.array([None if v is None else decimal.Decimal(v) for v in column], t))
        else:
            arrays.append(pa.array(column, t))
    if draw(st.booleans()) and rows:
        index = next((i for i, kind in enumerate(kinds) if kind == "varchar"), None)
        if index is not None:
            arrays[index] = arrays[index].dictionary_encode()
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _kernel_path(batch: pa.RecordBatch) -> list[str]:
    """What the batch was written as before: the Arrow kernels, or DuckDB where they refuse."""
    batch = _binary_as_base64(batch)
    out = _flat_json(batch)
    return (out if out is not None else _duckdb_json(batch)).to_pylist()


@settings(max_examples=300, deadline=None)
@given(batches())
def test_small_batches_write_what_the_kernels_write(batch):
    expected = _kernel_path(batch) if batch.num_rows else []
    fast = json_rows(batch)
    if fast is not None:
        assert fast == expected
    assert encode_json_values(batch).to_pylist() == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(_FLOATS, max_size=30))
def test_float_text_is_arrows_cast(values):
    finite = [v for v in values if math.isfinite(v)]
    assert [float_text(v) for v in finite] == pa.array(finite, pa.float64()).cast(pa.string()).to_pylist()


def test_control_characters_and_large_batches_take_the_full_encoder():
    assert json_rows(pa.table({"s": ["a\x01"]})) is None
    assert encode_json_values(pa.table({"s": ["a\x01"]})).to_pylist() == ['{"s":"a\\u0001"}']
    assert json_rows(pa.table({"x": list(range(SMALL_ROWS + 1))})) is None
    assert json_rows(pa.table({"l": [[1, 2]]})) is None
    assert encode_json_lines(pa.table({"x": [1.0, None], "t": ["a", "b"]})) == b'{"x":1.0,"t":"a"}\n{"x":null,"t":"b"}\n'


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=20), min_size=1, max_size=SMALL_ROWS),
       st.sampled_from(["out", "alerts.é", "a.b.c"]), st.booleans())
def test_small_frames_are_the_kernel_frames(payloads, subject, per_row):
    subjects = [f"{subject}.{i % 3}" for i in range(len(payloads))] if per_row else subject
    expected = frames(pa.array(subjects) if per_row else subjects, pa.array(payloads, pa.binary()))
    out = prepare_rows(subjects, payloads)
    assert out.data == expected
    assert (out.count, out.largest, out.total_bytes) == (len(payloads), max(map(len, payloads)), sum(map(len, payloads)))


@pytest.mark.parametrize("value, text", [(1e-7, "1e-7"), (123.0, "123"), (1e15, "1e+15"), (-0.0, "-0"), (0.0001, "0.0001")])
def test_float_text_examples(value, text):
    assert float_text(value) == text
