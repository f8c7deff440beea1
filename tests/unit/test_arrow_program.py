"""The Arrow fast path of stateless programs computes what DataFusion computes.

Random expressions (typed, so most of them plan) over random batches with NULLs,
NaN, -0.0, infinities and integer extremes run through a program's Arrow kernels
and through DataFusion alone; results and schemas must be equal value for value
(NaN equal to NaN, -0.0 distinct from 0.0). A batch the Arrow path hands back
(:class:`NeedsDataFusion`) is not compared: DataFusion computes it.
"""

from __future__ import annotations

import math
from functools import partial

import pyarrow as pa
import pytest
import sqlglot
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sqlstream.operators.arrow_program import NeedsDataFusion
from sqlstream.operators.datafusion_program import DataFusionProgram
from sqlstream.plan.arrow_lowering import arrow_program
from sqlstream.plan.lowering import DataFusionDialect

INTS = {"i8": pa.int8(), "i16": pa.int16(), "i32": pa.int32(), "i64": pa.int64()}
FLOATS = {"f32": pa.float32(), "f64": pa.float64()}
SCHEMA = pa.schema([*INTS.items(), *FLOATS.items(), ("b", pa.bool_()), ("s", pa.string()), ("u8", pa.uint8())])

_FLOAT_VALUES = st.one_of(st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf, 0.1, 1.5, -2.5, 1e300]),
                          st.floats(allow_nan=True, width=32))


def _ints(bits: int):
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return st.one_of(st.sampled_from([low, high, 0, -1, 1]), st.integers(low, high))


_VALUES = {
    "i8": _ints(8), "i16": _ints(16), "i32": _ints(32), "i64": _ints(64), "f32": _FLOAT_VALUES, "f64": _FLOAT_VALUES,
    "b": st.booleans(), "s": st.sampled_from(["", "a", "b", "ab", "Z", "é"]), "u8": st.integers(0, 255),
}


@st.composite
def batches(draw):
    n = draw(st.integers(0, 12))
    columns = [pa.array([draw(st.none() | _VALUES[f.name]) for _ in range(n)], f.type) for f in SCHEMA]
    return pa.RecordBatch.from_arrays(columns, schema=SCHEMA)


_INT_LITERALS = st.sampled_from(["0", "1", "7", "127", "128", "32767", "2147483647", "9223372036854775807", "-1", "-5"])
_FLOAT_LITERALS = st.sampled_from(["0.0", "0.1", "1.5", "-2.5", "1e3", "100.25"])

numbers = st.deferred(lambda: st.one_of(
    st.sampled_from([f'"{c}"' for c in [*INTS, *FLOATS, "u8"]] + ["i64", "F64"]),
    _INT_LITERALS, _FLOAT_LITERALS,
    st.tuples(numbers, st.sampled_from(["+", "-", "*"]), numbers).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
    numbers.map(lambda a: f"-({a})"),
))
strings = st.sampled_from(['"s"', "'a'", "'b'", "''"])
comparisons = st.sampled_from(["=", "<>", "<", "<=", ">", ">="])
booleans = st.deferred(lambda: st.one_of(
    st.sampled_from(['"b"', "TRUE", "FALSE"]),
    st.tuples(numbers, comparisons, numbers).map(lambda t: f"({' '.join(t)})"),
    st.tuples(strings, comparisons, strings).map(lambda t: f"({' '.join(t)})"),
    st.tuples(booleans, st.sampled_from(["AND", "OR", "=", "<>"]), booleans).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
    booleans.map(lambda a: f"NOT ({a})"),
    st.tuples(st.one_of(numbers, strings, booleans), st.sampled_from(["IS NULL", "IS NOT NULL"])).map(
        lambda t: f"({t[0]}) {t[1]}"),
))
anything = st.one_of(numbers, booleans, strings)


def _rows(batch: pa.RecordBatch) -> list:
    def key(value):
        return repr(value) if isinstance(value, float) else value  # nan == nan, -0.0 != 0.0

    return [[key(v) for v in column.to_pylist()] for column in batch.columns]


def _check(outputs: list[str], condition: str | None, batch: pa.RecordBatch) -> bool:
    """True when the Arrow path compiled and computed the batch (and agreed)."""
    nodes = [sqlglot.parse_one(o, read=DataFusionDialect) for o in outputs]
    where = sqlglot.parse_one(condition, read=DataFusionDialect) if condition else None
    compiled = arrow_program(nodes, where, SCHEMA)
    if compiled is None:
        return False
    sql = "SELECT " + ", ".join(f"{o} AS c{i}" for i, o in enumerate(outputs)) + " FROM __input"
    sql += f" WHERE {condition}" if condition else ""
    try:
        fast = DataFusionProgram(sql, SCHEMA, lambda: compiled)
    except Exception:  # noqa: BLE001 - a random expression DataFusion does not plan
        return False
    plain = DataFusionProgram(sql, SCHEMA)
    if fast.prepare_arrow() is None:
        return False
    expected = plain.run(batch)
    fast.run(batch)  # (learns DataFusion's output schema if the probe row gave no rows)
    got = fast.run_arrow(batch)
    if got is None:
        return False
    assert got.schema == expected.schema or not expected.num_rows, sql
    assert got.schema.types == expected.schema.types, sql
    assert _rows(got) == _rows(expected), sql
    return True


FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@FAST
@given(st.lists(anything, min_size=1, max_size=3), st.none() | booleans, batches())
def test_random_programs_agree_with_datafusion(outputs, condition, batch):
    assume(_check(outputs, condition, batch))


@pytest.mark.parametrize("sql", [
    "i64 + 9223372036854775807",  # wraps in both
    "-(i64)", "(i8 * i8) + i8", "i32 + 1", "f64 > 0.1", "f32 > f64", "i64 > 1.5", "s < 'b'",
    "(b) IS NOT NULL", "NOT (b)", "1 + 2",
])
def test_known_forms_compile_and_agree(sql):
    batch = pa.RecordBatch.from_arrays(
        [pa.array([-128, 127, None], pa.int8()), pa.array([1, None, -32768], pa.int16()),
         pa.array([2**31 - 1, -5, None], pa.int32()), pa.array([2**63 - 1, -(2**63), None]),
         pa.array([0.5, -0.0, None], pa.float32()), pa.array([0.05, 0.0, math.inf]),
         pa.array([True, None, False]), pa.array(["a", "b", None]), pa.array([1, 2, None], pa.uint8())],
        schema=SCHEMA,
    )
    assert _check([sql, '"s"'], None, batch)
    assert _check(['"i64"'], f"({sql}) IS NULL OR ({sql}) IS NOT NULL", batch)


@pytest.mark.parametrize("sql", ['"u8" + 1', "i64 / 2", "i64 % 2", "CAST(i64 AS DOUBLE)", "s || 'x'", '"f32" + "i64"'])
def test_other_forms_stay_on_datafusion(sql):
    assert arrow_program([sqlglot.parse_one(sql, read=DataFusionDialect)], None, SCHEMA) is None


def test_nan_in_a_comparison_goes_to_datafusion():
    schema = pa.schema([("x", pa.float64())])
    program = DataFusionProgram("SELECT x FROM __input WHERE x > 1.0", schema,
                                partial(arrow_program, [sqlglot.parse_one('"x"')], sqlglot.parse_one('"x" > 1.0'), schema))
    program.prepare_arrow()
    batch = pa.RecordBatch.from_arrays([pa.array([math.nan, 0.5, 2.0])], schema=schema)
    with pytest.raises(NeedsDataFusion):
        program.arrow.run(batch, program.schema)
    assert program.run_arrow(batch) is None
    assert _rows(program.run(batch)) == [["nan", "2.0"]]  # DataFusion: NaN is above every number


def test_an_arrow_program_whose_types_differ_is_not_used():
    schema = pa.schema([("x", pa.int32())])
    # DataFusion widens `x + 1` to BIGINT; a program claiming INT output must not be used
    wrong = partial(arrow_program, [sqlglot.parse_one('"x"')], None, schema)
    program = DataFusionProgram('SELECT "x" + 1 AS y FROM __input', schema, wrong)
    assert program.prepare_arrow() is None
