"""BYTEA and INTERVAL columns as COPY … csv text, vectorized (numpy over the Arrow
buffers): the same text the per-value spelling gives, NULLs and slices included."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from sqlstream.connectors.postgres.types import bytea_hex, csv_rows, interval_text


def _per_value_bytea(values: pa.Array) -> list[str | None]:
    return [None if v is None else "\\x" + v.hex() for v in values.to_pylist()]


def _per_value_interval(values: pa.Array) -> list[str | None]:
    return [None if v is None else f"{v.months} mons {v.days} days {v.nanoseconds // 1000} microseconds"
            for v in values.to_pylist()]


@pytest.mark.parametrize("arrow_type", [pa.binary(), pa.large_binary()])
def test_bytea_hex_matches_the_per_value_text(arrow_type):
    rnd = random.Random(3)
    values = [None if rnd.random() < 0.2 else bytes(rnd.randrange(256) for _ in range(rnd.randrange(6)))
              for _ in range(500)]
    array = pa.array(values, arrow_type)
    assert bytea_hex(array).to_pylist() == _per_value_bytea(array)
    sliced = array.slice(37, 100)
    assert bytea_hex(sliced).to_pylist() == _per_value_bytea(sliced)
    assert bytea_hex(pa.array([], arrow_type)).to_pylist() == []
    assert bytea_hex(pa.array([None, None], arrow_type)).to_pylist() == [None, None]


def test_bytea_hex_of_fixed_size_binary():
    assert bytea_hex(pa.array([b"\x00\xff", None, b"ab"], pa.binary(2))).to_pylist() == ["\\x00ff", None, "\\x6162"]


def test_interval_text_matches_the_per_value_text():
    rnd = random.Random(5)
    values = [None if rnd.random() < 0.2 else pa.MonthDayNano([rnd.randrange(-30, 30), rnd.randrange(-400, 400),
                                                                rnd.randrange(-10**15, 10**15)])
              for _ in range(500)]
    array = pa.array(values, pa.month_day_nano_interval())
    assert interval_text(array).to_pylist() == _per_value_interval(array)
    sliced = array.slice(11, 200)
    assert interval_text(sliced).to_pylist() == _per_value_interval(sliced)


def test_csv_rows_spell_bytea_and_interval_for_copy():
    batch = pa.record_batch({
        "b": pa.array([b"\x01\x02", None, b""], pa.binary()),
        "i": pa.array([pa.MonthDayNano([1, 2, 3000]), None, pa.MonthDayNano([0, 0, 0])], pa.month_day_nano_interval()),
    })
    assert csv_rows(batch) == b'"\\x0102","1 mons 2 days 3 microseconds"\n,\n"\\x","0 mons 0 days 0 microseconds"\n'
