"""Python aggregates (``@udaf``) vs DuckDB (batch) over the same out-of-order events.

Both forms of ``@udaf`` — a function of the whole group's values (``median``, a
two-argument weighted mean) and a class with ``create``/``accumulate``/``merge``/
``finish`` (a sum of squares) — in TUMBLE, HOP, CUMULATE and SESSION windows and in an
unwindowed GROUP BY, fed in batches of 1, 7 and 64 rows: the same rows as DuckDB's
``median``, ``sum(v * w) / sum(w)`` and ``sum(v * v)``; in windows a group's values come
in event-time order (``arg_min(v, ts)``). A function that raises for
some groups fails exactly those groups (dead letters), whatever the batch size.
"""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from sqlstream import udaf
from sqlstream.testing import TestSession
from tests.differential.test_windows_differential import SOURCE_SQL, WINDOWS, assert_same, duckdb_rows, make_events


@udaf(args=[pa.float64()], returns=pa.float64())
def median(values: pa.Array) -> float:
    return float(np.median(values.to_numpy()))


@udaf(args=[pa.float64(), pa.float64()], returns=pa.float64())
def weighted_mean(values: pa.Array, weights: pa.Array) -> float:
    v, w = values.to_numpy(), weights.to_numpy()
    return float((v * w).sum() / w.sum())


@udaf(args=[pa.float64()], returns=pa.float64())
class sum_sq:
    def create(self):
        return 0.0

    def accumulate(self, state, values: pa.Array):
        return state + float(np.square(values.drop_null().to_numpy()).sum())

    def merge(self, state, other):
        return state + other

    def finish(self, state):
        return state


@udaf(args=[pa.float64()], returns=pa.float64())
def earliest(values: pa.Array) -> float:
    """The first value in event-time order: a window's values come sorted by it."""
    return values[0]


@udaf(args=[pa.float64()], returns=pa.float64())
def picky_median(values: pa.Array) -> float:
    if len(values) == 3:
        raise ValueError("three values")
    return float(np.median(values.to_numpy()))


SELECT = "median(v) AS m, weighted_mean(v, x + 1) AS wm, sum_sq(v) AS q, count(*) AS n"
DUCK_SELECT = ("median(v) AS m, sum(v * (x + 1)) FILTER (WHERE x IS NOT NULL) / sum(x + 1) FILTER (WHERE v IS NOT NULL) AS wm, "
               "coalesce(sum(v * v), 0) AS q, count(*) AS n")
KINDS = {"m": "float", "wm": "float", "q": "float", "n": "exact"}
# windows order a group's values by event time (arrival order among equal times)
WINDOW_SELECT = f"{SELECT}, earliest(v) AS e"
WINDOW_DUCK_SELECT = f"{DUCK_SELECT}, arg_min(v, us::HUGEINT * 1000000 + idx) FILTER (WHERE v IS NOT NULL) AS e"
WINDOW_KINDS = {**KINDS, "e": "exact"}
SIZES = {1: 120, 7: 500, 64: 1_500}


def session_with(events: pa.Table, cuts: list[int], **options) -> TestSession:
    session = TestSession(**options)
    for fn in (median, weighted_mean, sum_sq, picky_median, earliest):
        session.register_udf(fn)
    session.execute(SOURCE_SQL)
    stream = session.stream("events")
    start, i = 0, 0
    while start < events.num_rows:
        stream.push(events.slice(start, cuts[i % len(cuts)]))
        start += cuts[i % len(cuts)]
        i += 1
    stream.finish()
    return session


def window_query(window: str, select: str) -> str:
    return f"""SELECT window_start, window_end, k, {select}
               FROM {WINDOWS[window][0]} GROUP BY window_start, window_end, k"""


@pytest.fixture(scope="module")
def events():
    return {rows: make_events(rows, seed=rows + 3) for rows in set(SIZES.values())}


@pytest.mark.parametrize("window", list(WINDOWS))
@pytest.mark.parametrize("batch_size", list(SIZES))
def test_python_aggregates_match_duckdb_in_windows(events, window, batch_size):
    data = events[SIZES[batch_size]]
    session = session_with(data, [batch_size])
    ours = session.run_query(window_query(window, WINDOW_SELECT))
    assert session.last_summary.dead_letters == {}
    theirs = duckdb_rows(data, window, WINDOW_DUCK_SELECT)
    assert len(theirs) > 10
    assert_same(ours, theirs, WINDOW_KINDS)


@pytest.mark.parametrize("window", ["tumble", "hop", "session"])
def test_random_batch_sizes_match_duckdb(events, window):
    data = events[500]
    cuts = np.random.default_rng(len(window)).choice([1, 7, 64], 40).tolist()
    ours = session_with(data, cuts).run_query(window_query(window, WINDOW_SELECT))
    assert_same(ours, duckdb_rows(data, window, WINDOW_DUCK_SELECT), WINDOW_KINDS)


def _group_by_duckdb(events: pa.Table, select: str) -> list[dict]:
    con = duckdb.connect()
    con.register("data", events)
    return con.sql(f"SELECT k, {select} FROM data GROUP BY k").to_arrow_table().to_pylist()


@pytest.mark.parametrize("batch_size", list(SIZES))
def test_unwindowed_group_by_changelog_folds_to_duckdb(events, batch_size):
    """Every batch re-emits the changed groups (-U/+U): the folded changelog is DuckDB's table."""
    data = events[SIZES[batch_size]]
    session = session_with(data, [batch_size])
    ours = session.run_query(f"SELECT k, {SELECT} FROM events GROUP BY k")
    theirs = _group_by_duckdb(data, DUCK_SELECT)
    assert len(ours) == len(theirs) == 11  # 10 keys and NULL
    key = lambda r: (r["k"] is None, r["k"] or 0)  # noqa: E731
    for a, b in zip(sorted(ours, key=key), sorted(theirs, key=key), strict=True):
        assert a["k"] == b["k"] and a["n"] == b["n"]
        for name in ("m", "wm", "q"):
            assert a[name] == pytest.approx(b[name], rel=1e-9), (name, a, b)


@pytest.mark.parametrize(("window", "batch_size"), [("tumble", 1), ("tumble", 64), ("session", 7), ("hop", 7)])
def test_failing_group_is_a_dead_letter_and_the_others_are_emitted(events, window, batch_size):
    data = events[500]
    session = session_with(data, [batch_size])
    ours = session.run_query(window_query(window, "picky_median(v) AS m, count(*) AS n"))
    theirs = duckdb_rows(data, window, "median(v) AS m, count(v) AS nv, count(*) AS n")
    failing = [r for r in theirs if r["nv"] == 3]
    assert failing, "the data has groups of three values"
    kept = [{k: v for k, v in r.items() if k != "nv"} for r in theirs if r["nv"] != 3]
    assert_same(ours, kept, {"m": "float", "n": "exact"})
    assert session.last_summary.dead_letters == {"udf": len(failing)}


def test_dead_letter_names_function_group_and_window(events, tmp_path):
    data = events[500]
    session = session_with(data, [7], dead_letter_path=str(tmp_path / "dead.jsonl"))
    session.run_query(window_query("tumble", "picky_median(v) AS m"))
    letters = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    theirs = duckdb_rows(data, "tumble", "count(v) AS nv")
    expected = sorted(
        (str(r["k"]), str(r["window_start"]), str(r["window_end"])) for r in theirs if r["nv"] == 3
    )
    assert {d["reason"] for d in letters} == {"udf"}
    assert {d["detail"] for d in letters} == {"picky_median: ValueError: three values"}
    records = [json.loads(d["raw"]) for d in letters]
    assert len(records) == len(expected) > 0
    assert sorted((str(r["k"]), r["window_start"].replace("T", " "), r["window_end"].replace("T", " ")) for r in records) == expected


@pytest.mark.parametrize("window", ["tumble", "session"])
def test_emit_every_changelog_folds_to_duckdb(events, window):
    """Early results every second between batches (window rows updated in place; growing
    sessions replaced): the changelog folds to DuckDB's final rows."""
    data = events[500]
    session = TestSession()
    for fn in (median, weighted_mean, sum_sq):
        session.register_udf(fn)
    session.execute(SOURCE_SQL)
    session.execute(f"CREATE SINK out AS {window_query(window, SELECT)} EMIT EVERY INTERVAL '1' SECOND "
                    "WITH (connector = 'memory')")
    run = session.start()
    for start in range(0, data.num_rows, 50):
        session.stream("events").push(data.slice(start, 50))
        run.pump().advance(1.0)
    run.finish()
    ops = {r["__op"] for r in session.rows("out", fold=False)}
    assert ({"-D", "+I"} if window == "session" else {"-U", "+U"}) <= ops
    assert_same(session.rows("out"), duckdb_rows(data, window, DUCK_SELECT), KINDS)


@pytest.mark.parametrize("window", ["hop", "cumulate", "session"])
def test_late_rows_count_like_built_in_aggregates(window):
    """Rows late for some of their HOP/CUMULATE windows go to the remaining ones (and
    late rows to dead letters) for Python aggregates as for the built-in ones: the same
    query computes both, over events with one row in six moved back 3-9 s."""
    data = make_events(600, seed=21)
    rng = np.random.default_rng(4)
    times = pa.compute.cast(data.column("ts"), pa.int64()).to_numpy()
    moved = np.where(rng.random(times.size) < 1 / 6, rng.integers(3_000_000, 9_000_000, times.size), 0)
    data = data.set_column(3, "ts", pa.array(times - moved, pa.timestamp("us")))
    session = session_with(data, [7])
    rows = session.run_query(window_query(window, """sum_sq(v) AS q, coalesce(sum(v * v), 0) AS q_builtin,
        weighted_mean(v, x + 1) AS wm,
        sum(CASE WHEN x IS NOT NULL THEN v * (x + 1) END) / sum(CASE WHEN v IS NOT NULL THEN x + 1 END) AS wm_builtin"""))
    assert session.last_summary.dead_letters.get("late", 0) > 0
    assert len(rows) > 20
    for r in rows:
        assert r["q"] == pytest.approx(r["q_builtin"], rel=1e-9, abs=1e-9), r
        assert (r["wm"] is None and r["wm_builtin"] is None) or r["wm"] == pytest.approx(r["wm_builtin"], rel=1e-9), r
