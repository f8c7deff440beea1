"""Python UDFs: declaration (@udf, type hints), vectorized calls, NULLs, bad results,
row isolation on exceptions, once-per-batch evaluation, async calls, names."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
from typing import Annotated, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from sqlstream import ExecutionError, UdfError, udf
from sqlstream.testing import TestSession
from sqlstream.udf.python import PythonUdf


def make_session(tmp_path, *functions, **kwargs) -> TestSession:
    session = TestSession(base_dir=str(tmp_path), dead_letter_path=str(tmp_path / "dead.jsonl"), **kwargs)
    for fn in functions:
        session.register_udf(fn)
    return session


def dead_letters(tmp_path) -> list[dict]:
    path = tmp_path / "dead.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def numbers(session: TestSession, values, batch_size=None, column="x DOUBLE"):
    session.execute(f"CREATE SOURCE s (id BIGINT, {column}) WITH (connector = 'memory')")
    name = column.split()[0]
    session.stream("s").push([{"id": i, name: v} for i, v in enumerate(values)], batch_size=batch_size).finish()


# -- declaration ----------------------------------------------------------------------------


def test_decorator_with_args_and_returns():
    @udf(args=[pa.string(), pa.int64()], returns=pa.string(), name="Repeat_It", volatility="stable")
    def repeat(s, n):
        return pc.binary_repeat(s, n)

    impl = PythonUdf.from_function(repeat)
    assert impl.name == "repeat_it"
    assert impl.arg_types == [pa.string(), pa.int64()]
    assert impl.return_type == pa.string()
    assert impl.volatility == "stable"
    assert impl.signature() == "repeat_it(VARCHAR, BIGINT) -> VARCHAR"


def test_type_hints_map_to_arrow_types():
    @udf
    def many(
        a: int, b: float, c: str, d: bool, e: bytes, f: dt.datetime, g: dt.date, h: np.float32,
        i: list[float], j: Optional[int], k: Annotated[pa.Array, pa.int16()], m: int | None,
    ) -> np.int32:
        return a

    impl = PythonUdf.from_function(many)
    assert impl.arg_types == [
        pa.int64(), pa.float64(), pa.string(), pa.bool_(), pa.binary(), pa.timestamp("us"), pa.date32(),
        pa.float32(), pa.list_(pa.float64()), pa.int64(), pa.int16(), pa.int64(),
    ]
    assert impl.return_type == pa.int32()


def test_plain_function_with_hints_registers_without_decorator(tmp_path):
    def halve(x: float) -> float:
        return pc.divide(x, 2.0)

    session = make_session(tmp_path, halve)
    numbers(session, [2.0, 5.0])
    assert session.run_query("SELECT halve(x) AS h FROM s") == [{"h": 1.0}, {"h": 2.5}]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: udf(lambda x: x), "needs argument types: no hint for x"),
        (lambda: udf(args=[pa.int64()])(lambda x: x), "needs a return type"),
        (lambda: udf(args=[pa.int64(), pa.int64()], returns=pa.int64())(lambda x: x), "declares 2 argument type(s) but its Python signature takes 1"),
        (lambda: udf(args=[], returns=pa.int64())(lambda: 1), "takes no arguments"),
        (lambda: udf(args=[pa.int64()], returns=pa.int64(), timeout="1s")(lambda x: x), "concurrency and timeout apply to async def functions only"),
    ],
)
def test_bad_declarations_name_the_function(make, message):
    with pytest.raises(UdfError) as info:
        PythonUdf.from_function(make())
    assert message in str(info.value)
    assert "'<lambda>'" in str(info.value)


def test_unmappable_hint_is_explained():
    @udf
    def odd(x: dict) -> int:
        return x

    with pytest.raises(UdfError, match=r"cannot map type hint dict of odd\(x\) to an Arrow type"):
        PythonUdf.from_function(odd)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"volatility": "sometimes"}, "@udf(volatility='sometimes'): expected one of immutable, stable, volatile"),
        ({"name": "bad-name"}, "@udf(name='bad-name'): not a SQL function name"),
        ({"args": [int]}, "is not a pyarrow type"),
        ({"returns": float}, "@udf(returns=...): <class 'float'> is not a pyarrow type"),
        ({"concurrency": 0}, "@udf(concurrency=0): expected a positive integer"),
    ],
)
def test_bad_decorator_options(kwargs, message):
    with pytest.raises(UdfError) as info:
        udf(**kwargs)
    assert message in str(info.value)


def test_bad_timeout_text():
    @udf(args=[pa.int64()], returns=pa.int64(), timeout="soon")
    async def later(x):
        return x

    with pytest.raises(UdfError, match="function 'later': timeout 'soon' is not a duration"):
        PythonUdf.from_function(later)


# -- calls ------------------------------------------------------------------------------------


def test_vectorized_call_gets_whole_batches_and_numpy_result(tmp_path):
    sizes = []

    @udf(args=[pa.float64()], returns=pa.float64())
    def scale(x: pa.Array) -> np.ndarray:
        sizes.append(len(x))
        return x.to_numpy() * 10

    session = make_session(tmp_path, scale)
    numbers(session, [float(i) for i in range(10)], batch_size=4)
    rows = session.run_query("SELECT id, scale(x) AS y FROM s")
    assert rows == [{"id": i, "y": i * 10.0} for i in range(10)]
    assert sizes == [4, 4, 2]


def test_nulls_reach_the_function_and_numpy_results_are_null_where_inputs_are(tmp_path):
    seen = []

    @udf(args=[pa.float64(), pa.float64()], returns=pa.float64())
    def add_np(a, b):
        seen.append(a.null_count + b.null_count)
        return a.to_numpy(zero_copy_only=False) + b.to_numpy(zero_copy_only=False)

    @udf(args=[pa.float64()], returns=pa.string())
    def presence(a):
        return pa.array(["missing" if v is None else "present" for v in a.to_pylist()])

    session = make_session(tmp_path, add_np, presence)
    session.execute("CREATE SOURCE s (a DOUBLE, b DOUBLE) WITH (connector = 'memory')")
    session.stream("s").push([{"a": 1.0, "b": 2.0}, {"a": None, "b": 1.0}, {"a": 3.0, "b": None}]).finish()
    rows = session.run_query("SELECT add_np(a, b) AS total, presence(a) AS d FROM s")
    assert rows == [
        {"total": 3.0, "d": "present"},
        {"total": None, "d": "missing"},
        {"total": None, "d": "present"},
    ]
    assert seen == [2]


def test_arguments_are_cast_to_the_declared_types(tmp_path):
    types = []

    @udf(args=[pa.float64()], returns=pa.float64())
    def ident(x):
        types.append(x.type)
        return x

    session = make_session(tmp_path, ident)
    numbers(session, [1, 2], column="x INT")
    assert session.run_query("SELECT ident(x) AS y FROM s") == [{"y": 1.0}, {"y": 2.0}]
    assert types == [pa.float64()]


def test_list_results_from_two_dimensional_numpy(tmp_path):
    @udf(args=[pa.float64()], returns=pa.list_(pa.float32(), 2))
    def pair(x):
        values = x.to_numpy()
        return np.stack([values, values * 2], axis=1)

    session = make_session(tmp_path, pair)
    numbers(session, [1.0, 2.0])
    assert session.run_query("SELECT pair(x) AS p FROM s") == [{"p": [1.0, 2.0]}, {"p": [2.0, 4.0]}]


@pytest.mark.parametrize(
    "body, returns, message",
    [
        (lambda x: x.slice(1), pa.float64(), "function bad returned 2 values for 3 rows"),
        (lambda x: np.zeros(5), pa.float64(), "function bad returned 5 values (numpy float64, shape (5,)) for 3 rows"),
        (lambda x: 42, pa.float64(), "function bad returned int; expected a pyarrow Array or numpy array of 3 values"),
        (lambda x: pa.array(["a", "b", "c"]), pa.float64(), "function bad returned VARCHAR, which does not cast to DOUBLE"),
        (lambda x: np.array([0.5, 1.5, 2.5]), pa.int64(), "function bad returned a numpy array of float64 (shape (3,)) that is not BIGINT"),
        (lambda x: np.array(1.0), pa.float64(), "function bad returned a scalar (numpy float64, shape ()) for 3 rows"),
    ],
)
def test_wrong_length_or_type_is_a_udf_error_at_the_call(tmp_path, body, returns, message):
    bad = udf(args=[pa.float64()], returns=returns, name="bad")(body)
    session = make_session(tmp_path, bad)
    numbers(session, [1.0, 2.0, 3.0])
    with pytest.raises(UdfError) as info:
        session.run_query("SELECT id,\n  bad(x) AS y FROM s")
    text = str(info.value)
    assert message in text
    assert text.startswith("<query>:2:3: error:")
    assert info.value.exit_code == 1


def test_argument_types_are_checked_at_plan_time(tmp_path):
    @udf(args=[pa.float64()], returns=pa.float64())
    def needs_number(x):
        return x

    session = make_session(tmp_path, needs_number)
    session.execute("CREATE SOURCE s (name VARCHAR) WITH (connector = 'memory')")
    with pytest.raises(UdfError) as info:
        session.execute("SELECT needs_number(name) FROM s", path="q.sql")
    assert str(info.value).startswith("q.sql:1:8: error: argument 1 of needs_number is VARCHAR, expected DOUBLE")
    assert "hint: needs_number(DOUBLE) -> DOUBLE" in str(info.value)
    with pytest.raises(UdfError, match="function needs_number takes 1 argument"):
        session.execute("SELECT needs_number(name, name) FROM s")


# -- failures isolated to their rows ---------------------------------------------------------


@udf(args=[pa.int64()], returns=pa.float64())
def inverse(x: pa.Array) -> np.ndarray:
    values = x.to_numpy()
    if np.any(values % 7 == 0):
        raise ValueError(f"multiple of 7 in {int(values[values % 7 == 0][0])}..")
    return 1.0 / values


@pytest.mark.parametrize("batch_size", [1, 3, 8, 50, None])
def test_exceptions_dead_letter_only_the_failing_rows_whatever_the_batch_size(tmp_path, batch_size):
    session = make_session(tmp_path, inverse)
    numbers(session, list(range(1, 51)), batch_size=batch_size, column="x BIGINT")
    rows = session.run_query("SELECT id, x, inverse(x) AS inv FROM s")
    expected = [{"id": i - 1, "x": i, "inv": 1.0 / i} for i in range(1, 51) if i % 7]
    assert rows == expected
    letters = dead_letters(tmp_path)
    assert [json.loads(d["raw"])["x"] for d in letters] == [7, 14, 21, 28, 35, 42, 49]
    assert {d["reason"] for d in letters} == {"udf"}
    assert letters[0]["detail"] == "inverse: ValueError: multiple of 7 in 7.."
    assert json.loads(letters[0]["raw"]) == {"id": 6, "x": 7}


def test_on_error_fail_stops_with_the_function_and_exception(tmp_path):
    session = make_session(tmp_path, inverse, settings={"on_error": "fail"})
    numbers(session, list(range(1, 10)), column="x BIGINT")
    with pytest.raises(ExecutionError) as info:
        session.run_query("SELECT inverse(x) AS inv FROM s")
    text = str(info.value)
    assert text.startswith("<query>:1:8: error: inverse: ValueError: multiple of 7 in 7..")
    assert "on_error = 'dead_letter'" in text


def test_failing_rows_are_dropped_before_later_calls_and_where(tmp_path):
    calls = []

    @udf(args=[pa.float64()], returns=pa.float64())
    def plus(x):
        calls.append(len(x))
        return pc.add(x, 1.0)

    session = make_session(tmp_path, inverse, plus)
    numbers(session, list(range(1, 16)), column="x BIGINT")
    rows = session.run_query("SELECT id, plus(inverse(x)) AS y FROM s WHERE inverse(x) < 0.5")
    assert [r["id"] for r in rows] == [i - 1 for i in range(3, 16) if i % 7]
    assert calls == [len(rows)]
    assert len(dead_letters(tmp_path)) == 2


# -- once per batch; nesting; expressions; literals; volatility ------------------------------


def test_same_call_in_where_and_select_runs_once_per_batch(tmp_path):
    calls = []

    @udf(args=[pa.float64()], returns=pa.float64())
    def score(x):
        calls.append(len(x))
        return pc.multiply(x, 0.1)

    session = make_session(tmp_path, score)
    numbers(session, [float(i) for i in range(20)], batch_size=10)
    rows = session.run_query("SELECT id, score(x) AS p FROM s WHERE score(x) > 0.9")
    assert [r["id"] for r in rows] == list(range(10, 20))
    assert calls == [10, 10]


def test_select_only_calls_see_only_rows_that_pass_where(tmp_path):
    seen = []

    @udf(args=[pa.float64()], returns=pa.float64())
    def explode(x):
        seen.extend(x.to_pylist())
        return x

    session = make_session(tmp_path, explode)
    numbers(session, [1.0, -1.0, 2.0, -2.0])
    assert session.run_query("SELECT explode(x) AS y FROM s WHERE x > 0") == [{"y": 1.0}, {"y": 2.0}]
    assert seen == [1.0, 2.0]


def test_nested_calls_expression_arguments_and_literals(tmp_path):
    calls = []

    @udf(args=[pa.float64(), pa.float64()], returns=pa.float64())
    def weigh(x, w):
        calls.append("weigh")
        return pc.multiply(x, w)

    @udf(args=[pa.float64()], returns=pa.float64())
    def inc(x):
        calls.append("inc")
        return pc.add(x, 1.0)

    @udf(args=[pa.string(), pa.float64()], returns=pa.string())
    def tag(prefix, x):
        return pc.binary_join_element_wise(prefix, pc.cast(x, pa.string()), "")

    session = make_session(tmp_path, weigh, inc, tag)
    numbers(session, [1.0, 2.0, 3.0])
    rows = session.run_query(
        "SELECT inc(weigh(inc(x) * 2, -0.5)) + 1 AS a, tag('v', inc(x + 1)) AS b, weigh(x, 2) AS c FROM s"
    )
    # inc(weigh(inc(x) * 2, -0.5)) + 1 = -(x + 1) + 2; Arrow casts 3.0 to '3'
    assert rows == [{"a": 1 - x, "b": f"v{int(x) + 2}", "c": 2 * x} for x in (1.0, 2.0, 3.0)]
    # inc(x), inc(x + 1), weigh(...), weigh(x, 2), then the outer inc: one call each per batch
    assert sorted(calls) == ["inc", "inc", "inc", "weigh", "weigh"]


def test_struct_field_of_a_python_udf(tmp_path):
    @udf(args=[pa.float64()], returns=pa.struct([("low", pa.float64()), ("high", pa.float64())]))
    def bounds(x):
        return pa.StructArray.from_arrays([pc.subtract(x, 1.0), pc.add(x, 1.0)], names=["low", "high"])

    session = make_session(tmp_path, bounds)
    numbers(session, [5.0])
    assert session.run_query("SELECT bounds(x).high AS h, bounds(x).LOW AS l FROM s") == [{"h": 6.0, "l": 4.0}]
    with pytest.raises(Exception) as info:
        session.execute("SELECT bounds(x).middle FROM s", path="q.sql")
    assert "q.sql:1:18: error: bounds(...) returns STRUCT<low DOUBLE, high DOUBLE>, which has no field 'middle'" in str(info.value)


def test_volatile_calls_are_not_shared(tmp_path):
    counter = {"n": 0}

    @udf(args=[pa.float64()], returns=pa.int64(), volatility="volatile")
    def ticket(x):
        counter["n"] += 1
        return pa.array(np.full(len(x), counter["n"]))

    session = make_session(tmp_path, ticket)
    numbers(session, [1.0])
    assert session.run_query("SELECT ticket(x) AS a, ticket(x) AS b FROM s") == [{"a": 1, "b": 2}]


def test_udf_in_an_aggregation_and_a_view(tmp_path):
    @udf(args=[pa.float64()], returns=pa.float64())
    def double(x):
        return pc.multiply(x, 2.0)

    session = make_session(tmp_path, double)
    session.execute("CREATE SOURCE s (k VARCHAR, x DOUBLE) WITH (connector = 'memory')")
    session.execute("CREATE VIEW v AS SELECT k, double(x) AS d FROM s WHERE double(x) > 2")
    session.stream("s").push([{"k": "a", "x": 1.0}, {"k": "a", "x": 2.0}, {"k": "b", "x": 3.0}, {"k": "a", "x": 4.0}]).finish()
    rows = session.run_query("SELECT k, sum(double(d)) AS total FROM v GROUP BY k")
    assert sorted(rows, key=lambda r: r["k"]) == [{"k": "a", "total": 24.0}, {"k": "b", "total": 12.0}]


# -- async ------------------------------------------------------------------------------------


def test_async_udf_bounded_concurrency_timeouts_and_order(tmp_path):
    state = {"active": 0, "peak": 0}
    lock = threading.Lock()

    @udf(args=[pa.int64()], returns=pa.int64(), concurrency=3, timeout="200ms")
    async def lookup(x):
        with lock:
            state["active"] += 1
            state["peak"] = max(state["peak"], state["active"])
        try:
            if x % 5 == 0:
                await asyncio.Event().wait()  # never answers: times out
            if x == 8:
                raise KeyError(x)
            await asyncio.sleep(0.001 * (10 - x % 10))  # later rows finish first
            return x * 100
        finally:
            with lock:
                state["active"] -= 1

    session = make_session(tmp_path, lookup)
    numbers(session, list(range(1, 13)), batch_size=6, column="x BIGINT")
    rows = session.run_query("SELECT x, lookup(x) AS y FROM s")
    assert rows == [{"x": x, "y": x * 100} for x in range(1, 13) if x % 5 and x != 8]
    assert state["peak"] == 3
    letters = dead_letters(tmp_path)
    assert [(json.loads(d["raw"])["x"], d["reason"]) for d in letters] == [(5, "timeout"), (8, "udf"), (10, "timeout")]
    assert letters[0]["detail"] == "lookup: no result within 0.2s"
    assert letters[1]["detail"] == "lookup: KeyError: 8"
    assert PythonUdf.from_function(lookup).signature() == "async lookup(BIGINT) -> BIGINT"


# -- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["predict", "ml_predict", "score", "classify", "explode", "upper"])
def test_registered_names_win_over_dialect_builtins(tmp_path, name):
    fn = udf(args=[pa.float64()], returns=pa.float64(), name=name)(lambda x: pc.add(x, 100.0))
    session = make_session(tmp_path, fn)
    numbers(session, [1.0])
    assert session.run_query(f"SELECT {name}(x) AS y FROM s WHERE {name}(x) > 0") == [{"y": 101.0}]


@pytest.mark.parametrize(
    "name, message",
    [
        ("sum", "function name 'sum' is a SQL aggregate function"),
        ("values", "function name 'values' is a reserved word in SQL"),
    ],
)
def test_names_that_cannot_be_called_are_refused(tmp_path, name, message):
    fn = udf(args=[pa.float64()], returns=pa.float64(), name=name)(lambda x: x)
    with pytest.raises(UdfError) as info:
        make_session(tmp_path, fn)
    assert message in str(info.value)
    assert f"@udf(name='my_{name}')" in str(info.value)


def test_duplicate_registration_and_show_functions(tmp_path):
    @udf(args=[pa.float64(), pa.string()], returns=pa.bool_())
    def matches(x, s):
        return pc.equal(pc.cast(x, pa.string()), s)

    other = udf(args=[pa.float64()], returns=pa.float64(), name="matches")(lambda x: x)
    session = make_session(tmp_path, matches)
    session.register_udf(matches)  # the same function again: no-op
    with pytest.raises(UdfError, match="function 'matches' is defined twice"):
        session.register_udf(other)
    rows = session.execute("SHOW FUNCTIONS")[0].table.to_pylist()
    assert [(r["name"], r["kind"], r["signature"]) for r in rows] == [("matches", "python", "matches(DOUBLE, VARCHAR) -> BOOLEAN")]
    assert rows[0]["origin"].endswith("test_udf_python.py:" + str(matches.__code__.co_firstlineno))


def test_explain_shows_the_vectorized_step(tmp_path):
    @udf(args=[pa.float64()], returns=pa.float64())
    def score(x):
        return x

    session = make_session(tmp_path, score)
    numbers(session, [1.0])
    text = session.explain("EXPLAIN SELECT id, score(score(x)) AS q FROM s WHERE x > 0 AND score(x + 1) > 2")
    assert text.splitlines()[1:6] == [
        "Stateless (DataFusion per micro-batch) -> (id, q)",
        '    udf arguments: SELECT *, "x" + 1 AS "__arg0" FROM __input WHERE "x" > 0',
        '    vectorized python call score("x" + 1) -> __udf0 (once per micro-batch)',
        '    udf filter: SELECT * FROM __input WHERE "__udf0" > 2',
        '    vectorized python call score("x") -> __udf1 (once per micro-batch)',
    ]
    assert '    vectorized python call score(score("x")) -> __udf2 (once per micro-batch)' in text
