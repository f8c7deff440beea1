"""``@udaf``: declaring, registering and planning Python aggregates, and their errors.

(Results against DuckDB are in ``tests/differential/test_udaf_differential.py``,
checkpoints in ``tests/state/test_udaf_checkpoint.py``.)
"""

from __future__ import annotations

import json
import textwrap
from typing import Annotated

import numpy as np
import pyarrow as pa
import pytest

from sqlstream import Session, UdfError, udaf
from sqlstream.errors import SqlStreamError
from sqlstream.testing import TestSession

SOURCE = ("CREATE SOURCE s (k VARCHAR, v DOUBLE, n BIGINT, w VARCHAR) WITH (connector = 'memory');"
          "CREATE SOURCE e (k VARCHAR, v DOUBLE, ts TIMESTAMP, WATERMARK FOR ts AS ts) WITH (connector = 'memory')")


@udaf(args=[pa.float64()], returns=pa.float64())
def spread(values: pa.Array) -> float:
    v = values.to_numpy()
    return float(v.max() - v.min())


@udaf(returns=pa.int64())
class distinct_parity:
    """Counts how many distinct parities (0, 1) a group's values have; type from hints."""

    def create(self):
        return frozenset()

    def accumulate(self, state, values: Annotated[pa.Array, pa.int64()]):
        return state | frozenset((values.drop_null().to_numpy() % 2).tolist())

    def merge(self, state, other):
        return state | other

    def finish(self, state):
        return len(state)


def session(*functions) -> TestSession:
    s = TestSession()
    for fn in functions:
        s.register_udf(fn)
    s.execute(SOURCE)
    return s


def error_of(s: Session, sql: str) -> str:
    with pytest.raises(SqlStreamError) as error:
        s.execute(sql)
    return str(error.value)


def test_both_forms_register_with_their_signatures():
    s = session(spread, distinct_parity)
    rows = {r["name"]: r for r in s.execute("SHOW FUNCTIONS")[0].table.to_pylist()}
    assert rows["spread"]["kind"] == rows["distinct_parity"]["kind"] == "aggregate"
    assert rows["spread"]["signature"] == "spread(DOUBLE) -> DOUBLE  [aggregate]"
    assert rows["distinct_parity"]["signature"] == "distinct_parity(BIGINT) -> BIGINT  [aggregate]"


def test_a_global_aggregate_and_group_by_with_nulls():
    s = session(spread, distinct_parity)
    s.stream("s").push([
        {"k": "a", "v": 1.0, "n": 1}, {"k": "a", "v": 4.0, "n": 3}, {"k": "b", "v": None, "n": 2},
        {"k": None, "v": 2.0, "n": None}, {"k": "a", "v": None, "n": 4},
    ], batch_size=2).finish()
    rows = s.run_query("SELECT k, spread(v) AS sp, distinct_parity(n) AS dp, count(*) AS c FROM s GROUP BY k")
    assert sorted(rows, key=lambda r: str(r["k"])) == [
        {"k": None, "sp": 0.0, "dp": 0, "c": 1},
        {"k": "a", "sp": 3.0, "dp": 2, "c": 3},
        {"k": "b", "sp": None, "dp": 1, "c": 1},  # only NULLs: the simple form gives NULL
    ]


def test_an_aggregate_without_group_by():
    s = session(spread)
    s.stream("s").push([{"v": float(i)} for i in range(10)], batch_size=3).finish()
    assert s.run_query("SELECT spread(v) AS sp, count(*) AS c FROM s") == [{"sp": 9.0, "c": 10}]


def test_a_result_that_is_not_the_return_type_fails_its_group_only(tmp_path):
    @udaf(args=[pa.float64()], returns=pa.float64())
    def shaky(values: pa.Array):
        return "many" if len(values) > 1 else float(values[0].as_py())

    s = TestSession(dead_letter_path=str(tmp_path / "dead.jsonl"))
    s.register_udf(shaky)
    s.execute(SOURCE)
    s.stream("s").push([{"k": "a", "v": 1.0}, {"k": "b", "v": 2.0}, {"k": "a", "v": 3.0}]).finish()
    assert s.run_query("SELECT k, shaky(v) AS x FROM s GROUP BY k") == [{"k": "b", "x": 2.0}]
    (letter,) = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert letter["reason"] == "udf" and json.loads(letter["raw"]) == {"k": "a"}
    assert letter["detail"].startswith("shaky returned str 'many', not double")


def test_a_failing_accumulate_fails_its_group_in_an_unwindowed_group_by(tmp_path):
    """The group's earlier result is retracted (-D) when it fails later; other groups go on."""

    @udaf(args=[pa.float64()], returns=pa.float64())
    class total:
        def create(self):
            return 0.0

        def accumulate(self, state, values):
            if pa.compute.any(pa.compute.less(values, 0)).as_py():
                raise ValueError("negative")
            return state + pa.compute.sum(values).as_py()

        def merge(self, a, b):
            return a + b

        def finish(self, state):
            return state

    s = TestSession(dead_letter_path=str(tmp_path / "dead.jsonl"))
    s.register_udf(total)
    s.execute(SOURCE)
    s.stream("s").push([{"k": "a", "v": 1.0}, {"k": "b", "v": 2.0}, {"k": "a", "v": -1.0}, {"k": "b", "v": 5.0}],
                       batch_size=2).finish()
    changes = s.run_query("SELECT k, total(v) AS t FROM s GROUP BY k", fold=False)
    assert [(r["__op"], r["k"], r["t"]) for r in changes] == [
        ("+I", "a", 1.0), ("+I", "b", 2.0), ("-D", "a", 1.0), ("-U", "b", 2.0), ("+U", "b", 7.0)]
    details = [json.loads(line)["detail"] for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert details == ["total: ValueError: negative"]
    assert s.last_summary.dead_letters == {"udf": 1}


@pytest.mark.parametrize(("sql", "message"), [
    ("SELECT k, spread(v) OVER (PARTITION BY k ORDER BY ts) FROM e",
     "1:28: error: aggregate spread() OVER (...) is not supported"),
    ("SELECT k FROM s WHERE spread(v) > 1", "1:40: error: aggregate function spread() is not allowed here"),
    ("SELECT k, spread(w) FROM s GROUP BY k", "1:28: error: argument 1 of spread is VARCHAR, expected DOUBLE"),
    ("SELECT k, spread(v, n) FROM s GROUP BY k", "1:28: error: aggregate spread takes 1 argument(s), got 2"),
    ("SELECT k, spread(v) FILTER (WHERE n > 1) FROM s GROUP BY k",
     "1:28: error: FILTER (WHERE ...) on aggregate spread() is not supported"),
    ("SELECT k, spread(DISTINCT v) FROM s GROUP BY k", "1:28: error: spread(DISTINCT ...) is not supported"),
    ("SELECT c, spread(c) FROM (SELECT k, count(*) AS c FROM s GROUP BY k) GROUP BY c",
     "spread() over an updating input is not supported"),
])
def test_misuse_is_a_located_error(sql, message):
    s = session(spread)
    text = error_of(s, f"CREATE SINK o AS {sql} WITH (connector = 'memory')")
    assert message in text, text


@pytest.mark.parametrize(("build", "message"), [
    (lambda: udaf(args=["float"], returns=pa.float64()), "is not a pyarrow type"),
    (lambda: udaf(name="bad name"), "not a SQL function name"),
])
def test_bad_declarations(build, message):
    with pytest.raises(UdfError, match=message):
        build()


def test_a_class_without_merge_is_refused_at_registration():
    @udaf(args=[pa.float64()], returns=pa.float64())
    class partial:
        def create(self):
            return 0

        def accumulate(self, state, values):
            return state

        def finish(self, state):
            return state

    with pytest.raises(UdfError, match="aggregate 'partial' \\(a class\\) has no merge method"):
        Session(dead_letter_path="off").register_udf(partial)


def test_a_function_without_types_is_refused_at_registration():
    @udaf
    def untyped(values):
        return 0.0

    with pytest.raises(UdfError, match="aggregate 'untyped' needs argument types"):
        Session(dead_letter_path="off").register_udf(untyped)


def test_discovered_from_a_udfs_directory(tmp_path):
    (tmp_path / "udfs").mkdir()
    (tmp_path / "udfs" / "aggs.py").write_text(textwrap.dedent("""
        import numpy as np
        import pyarrow as pa
        from sqlstream import udaf

        @udaf(args=[pa.float64()], returns=pa.float64(), name="p90")
        def percentile_90(values):
            return float(np.percentile(values.to_numpy(), 90))
    """))
    s = TestSession(udf_dirs=[str(tmp_path / "udfs")])
    assert s.functions["p90"].signature == "p90(DOUBLE) -> DOUBLE  [aggregate]"
    s.execute(SOURCE)
    s.stream("s").push([{"k": "a", "v": float(i)} for i in range(11)]).finish()
    assert s.run_query("SELECT k, p90(v) AS p FROM s GROUP BY k") == [{"k": "a", "p": pytest.approx(9.0)}]
    assert np.isclose(np.percentile(np.arange(11.0), 90), 9.0)
