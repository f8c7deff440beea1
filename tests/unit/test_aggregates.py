"""Partial → merge → finalize equals aggregating all rows at once (property-based),
for every aggregate function, NULL keys and values, any cut into batches and any
merge tree; plus the numerics (stable variance) and HyperLogLog accuracy."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlstream.operators.aggregates import AggCall, Aggregator, ArrivalSequence, Partial, output_type

CALLS = [
    AggCall("count_star", None, "n"),
    AggCall("count", "v", "count_v"),
    AggCall("sum", "x", "sum_x", pa.int64()),
    AggCall("sum", "v", "sum_v", pa.float64()),
    AggCall("avg", "v", "avg_v", pa.float64()),
    AggCall("min", "x", "min_x", pa.int64()),
    AggCall("max", "v", "max_v", pa.float64()),
    AggCall("min", "s", "min_s", pa.string()),
    AggCall("stddev_samp", "v", "sd", pa.float64()),
    AggCall("stddev_pop", "v", "sdp", pa.float64()),
    AggCall("var_samp", "x", "var", pa.int64()),
    AggCall("var_pop", "v", "varp", pa.float64()),
    AggCall("first_value", "v", "first_v", pa.float64()),
    AggCall("last_value", "s", "last_s", pa.string()),
    AggCall("count_distinct", "x", "distinct_x", pa.int64()),
    AggCall("count_distinct", "s", "distinct_s", pa.string()),
    AggCall("approx_distinct", "x", "approx_x", pa.int64()),
]
SCHEMA = pa.schema([("k", pa.int64()), ("g", pa.string()), ("v", pa.float64()), ("x", pa.int64()), ("s", pa.string())])


def reference(rows: list[dict], keys: list[str]) -> dict[tuple, dict]:
    """Each aggregate per group, computed from the rows in arrival order."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in keys)].append(row)
    out = {}
    for key, members in groups.items():
        v = [r["v"] for r in members if r["v"] is not None]
        x = [r["x"] for r in members if r["x"] is not None]
        s = [r["s"] for r in members if r["s"] is not None]
        out[key] = {
            "n": len(members),
            "count_v": len(v),
            "sum_x": sum(x) if x else None,
            "sum_v": math.fsum(v) if v else None,
            "avg_v": math.fsum(v) / len(v) if v else None,
            "min_x": min(x) if x else None,
            "max_v": max(v) if v else None,
            "min_s": min(s) if s else None,
            "sd": statistics.stdev(v) if len(v) > 1 else None,
            "sdp": statistics.pstdev(v) if v else None,
            "var": statistics.variance(x) if len(x) > 1 else None,
            "varp": statistics.pvariance(v) if v else None,
            "first_v": v[0] if v else None,
            "last_s": s[-1] if s else None,
            "distinct_x": len(set(x)),
            "distinct_s": len(set(s)),
            "approx_x": len(set(x)),
        }
    return out


def close(a, b, rel=1e-9, abs_=1e-9) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)
    return a == b


def aggregate(rows: list[dict], keys: list[str], cuts: list[int], tree: bool) -> dict[tuple, dict]:
    agg = Aggregator(keys, CALLS)
    sequence = ArrivalSequence()
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    parts: list[Partial] = []
    i = 0
    c = 0
    while i < table.num_rows:
        size = cuts[c % len(cuts)]
        c += 1
        parts.append(agg.partial(sequence.stamp(table.slice(i, size))))
        i += size
    if tree:  # merge neighbours pairwise until one is left (merges of merges)
        while len(parts) > 1:
            parts = [agg.merge(parts[j : j + 2], regroup=True) for j in range(0, len(parts), 2)]
        merged = parts[0]
    else:
        merged = agg.merge(parts)
    result = agg.finalize(merged)
    assert result.num_rows == len({tuple(r[k] for k in keys) for r in rows})
    for call in CALLS:
        assert result.schema.field(call.output).type == output_type(call.func, call.arg_type), call
    return {tuple(r[k] for k in keys): r for r in result.to_pylist()}


row_strategy = st.fixed_dictionaries(
    {
        "k": st.one_of(st.none(), st.integers(0, 3)),
        "g": st.one_of(st.none(), st.sampled_from(["a", "b", "a|b", ""])),
        "v": st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)),
        "x": st.one_of(st.none(), st.integers(-1000, 1000)),
        "s": st.one_of(st.none(), st.sampled_from(["p", "q", "r", "p:q", ""])),
    }
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(row_strategy, min_size=1, max_size=40),
    st.sampled_from([["k"], ["g"], ["k", "g"], []]),
    st.lists(st.integers(1, 12), min_size=1, max_size=5),
    st.booleans(),
)
def test_partial_merge_finalize_equals_direct(rows, keys, cuts, tree):
    got = aggregate(rows, keys, cuts, tree)
    expected = reference(rows, keys)
    assert got.keys() == expected.keys()
    for key, values in expected.items():
        row = got[key]
        for name, value in values.items():
            if name in ("sd", "sdp", "var", "varp"):
                assert close(row[name], value, rel=1e-6, abs_=1e-6), (key, name, row[name], value)
            elif name in ("sum_v", "avg_v"):
                assert close(row[name], value, rel=1e-9, abs_=1e-6), (key, name, row[name], value)
            else:
                assert row[name] == value, (key, name, row[name], value)


def test_all_null_group_gives_sql_nulls_and_zero_counts():
    rows = [{"k": 1, "g": None, "v": None, "x": None, "s": None}] * 3
    got = aggregate(rows, ["k"], [2], tree=False)[(1,)]
    assert got["n"] == 3 and got["count_v"] == 0 and got["distinct_x"] == 0 and got["approx_x"] == 0
    for name in ("sum_x", "sum_v", "avg_v", "min_x", "max_v", "min_s", "sd", "sdp", "var", "varp", "first_v", "last_s"):
        assert got[name] is None, name


def test_one_value_has_population_but_no_sample_deviation():
    got = aggregate([{"k": 1, "g": None, "v": 2.5, "x": 7, "s": "p"}], ["k"], [1], tree=False)[(1,)]
    assert got["sd"] is None and got["var"] is None
    assert got["sdp"] == 0.0 and got["varp"] == 0.0


@pytest.mark.parametrize("offset", [0.0, 1e6, 1e9])
def test_variance_is_stable_for_large_offsets(offset):
    """Sums of squares would cancel to 0 here; count/mean/M2 partials do not."""
    rng = np.random.default_rng(7)
    v = offset + rng.normal(0.0, 0.01, 5_000)
    agg = Aggregator([], [AggCall("stddev_samp", "v", "sd", pa.float64()), AggCall("var_pop", "v", "vp", pa.float64())])
    table = pa.table({"v": v})
    parts = [agg.partial(table.slice(i, 333)) for i in range(0, len(v), 333)]
    result = agg.finalize(agg.merge(parts)).to_pylist()[0]
    assert result["sd"] == pytest.approx(np.std(v, ddof=1), rel=1e-5)
    assert result["vp"] == pytest.approx(np.var(v), rel=1e-5)


def test_first_and_last_value_follow_arrival_order_across_merges():
    """first/last non-NULL value by arrival, whatever order partials are merged in."""
    agg = Aggregator(["k"], [AggCall("first_value", "v", "f", pa.float64()), AggCall("last_value", "v", "l", pa.float64())])
    sequence = ArrivalSequence()
    batches = [
        pa.table({"k": [1, 1], "v": [None, 5.0]}),
        pa.table({"k": [1, 2], "v": [3.0, None]}),
        pa.table({"k": [1, 2], "v": [None, 9.0]}),
    ]
    parts = [agg.partial(sequence.stamp(b)) for b in batches]
    for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0]):
        result = agg.finalize(agg.merge([parts[i] for i in order], regroup=True)).sort_by("k").to_pylist()
        assert result == [{"k": 1, "f": 5.0, "l": 3.0}, {"k": 2, "f": 9.0, "l": 9.0}]


@pytest.mark.parametrize(
    "values",
    [
        pa.array(np.arange(200_000, dtype=np.int64)),
        pa.array([f"user-{i}" for i in range(50_000)]),
        pa.array(np.linspace(-1.0, 1.0, 30_000)),
    ],
    ids=["int64", "string", "float64"],
)
def test_approx_distinct_is_within_its_error(values):
    n = len(values)
    agg = Aggregator([], [AggCall("approx_distinct", "x", "a", values.type)])
    table = pa.table({"x": pa.concat_arrays([values, values.slice(0, n // 2)])})  # duplicates do not count
    parts = [agg.partial(table.slice(i, 10_000)) for i in range(0, table.num_rows, 10_000)]
    estimate = agg.finalize(agg.merge(parts)).column("a")[0].as_py()
    assert abs(estimate - n) / n < 0.05  # 2^12 registers: standard error ~1.6%


def test_approx_distinct_is_close_for_small_sets():
    """Linear counting: a group with n ≤ 50 distinct values is off by at most one."""
    agg = Aggregator(["k"], [AggCall("approx_distinct", "x", "a", pa.int64())])
    sizes = np.arange(1, 51)
    x = np.concatenate([np.arange(n) * 7919 for n in sizes]).astype(np.int64)
    table = pa.table({"k": np.repeat(sizes, sizes), "x": x})
    result = agg.finalize(agg.partial(table)).sort_by("k")
    estimates = np.array(result.column("a").to_pylist())
    assert np.abs(estimates - sizes).max() <= 1


def test_sketch_merge_is_idempotent():
    agg = Aggregator([], [AggCall("approx_distinct", "x", "a", pa.int64())])
    part = agg.partial(pa.table({"x": np.arange(10_000, dtype=np.int64)}))
    once = agg.finalize(part).column("a")[0].as_py()
    twice = agg.finalize(agg.merge([part, part, part])).column("a")[0].as_py()
    assert once == twice
