"""Python aggregates (``@udaf``) in OVER windows vs DuckDB (batch).

``median`` (a function of a frame's values), ``upper_quartile`` and the docs'
``frame_median`` (the vectorized form, ``frames=True``: all frames of a step in one call) and a class-form sum of squares over
``ROWS BETWEEN 3 PRECEDING`` and ``RANGE BETWEEN INTERVAL '3' SECOND PRECEDING`` frames,
over the out-of-order events of the window tests (never late), in batches of 1, 7 and
64 rows and with many equal times: every row once, with DuckDB's ``median``,
``quantile_cont`` and ``sum(v * v)`` over the same frame. A function that raises for
some frames fails exactly those rows (dead letters, reason ``udf``).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from sqlstream import udaf
from sqlstream.errors import SqlStreamError
from sqlstream.testing import TestSession
from tests.differential.test_over import assert_rows, whole_seconds
from tests.differential.test_ranking import duck
from tests.differential.test_udaf_differential import median, picky_median, sum_sq, weighted_mean
from tests.differential.test_windows_differential import SOURCE_SQL, WINDOWS, assert_same, duckdb_rows, make_events


@udaf(args=[pa.float64()], returns=pa.float64(), frames=True)
def upper_quartile(frames: pa.ListArray) -> list[float]:
    """The 0.75 quantile of every frame: the frames of one step in one call."""
    offsets = frames.offsets.to_numpy()
    values = frames.values.to_numpy(zero_copy_only=False)
    return [float(np.quantile(values[a:b], 0.75)) for a, b in zip(offsets[:-1], offsets[1:])]


@udaf(args=[pa.float64()], returns=pa.float64(), frames=True)
def frame_median(frames: pa.ListArray) -> np.ndarray:
    """docs/functions-and-models.md's example: the median of every frame at once."""
    values = pc.list_flatten(frames).to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(frames).to_numpy(zero_copy_only=False)
    ordered = values[np.lexsort((values, np.repeat(np.arange(len(lengths)), lengths)))]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return (ordered[starts + (lengths - 1) // 2] + ordered[starts + lengths // 2]) / 2


@udaf(args=[pa.float64()], returns=pa.float64(), frames=True)
def picky_quartile(frames: pa.ListArray) -> pa.Array:
    if any(len(f) == 3 for f in frames):
        raise ValueError("three values")
    return pa.array([float(np.quantile(f.values.to_numpy(), 0.75)) for f in frames])


ROWS = "PARTITION BY k ORDER BY ts ROWS BETWEEN 3 PRECEDING AND CURRENT ROW"
RANGE = "PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '3' SECOND PRECEDING AND CURRENT ROW"
OURS = ("SELECT idx, k, median(v) OVER ({w}) AS m, upper_quartile(v) OVER ({w}) AS q, sum_sq(v) OVER ({w}) AS s2, "
        "sum(v) OVER ({w}) AS s, frame_median(v) OVER ({w}) AS fm FROM events")
# DuckDB: rows of equal times in arrival order (ROWS frames); sum_sq of only NULLs is 0
THEIRS = ("SELECT idx, k, median(v) OVER ({w}) AS m, quantile_cont(v, 0.75) OVER ({w}) AS q, "
          "coalesce(sum(v * v) OVER ({w}), 0) AS s2, sum(v) OVER ({w}) AS s, median(v) OVER ({w}) AS fm FROM events")
FRAMES = {"rows": (ROWS, ROWS.replace("ORDER BY ts", "ORDER BY ts, idx")), "range": (RANGE, RANGE)}
SIZES = {1: 150, 7: 600, 64: 1_500}


def session_with(**options) -> TestSession:
    session = TestSession(**options)
    for fn in (median, upper_quartile, frame_median, weighted_mean, sum_sq, picky_median, picky_quartile):
        session.register_udf(fn)
    session.execute(SOURCE_SQL)
    return session


def stream(events: pa.Table, sql: str, cuts: list[int], **options) -> tuple[list[dict], TestSession]:
    session = session_with(**options)
    feed = session.stream("events")
    start, i = 0, 0
    while start < events.num_rows:
        feed.push(events.slice(start, cuts[i % len(cuts)]))
        start += cuts[i % len(cuts)]
        i += 1
    feed.finish()
    return session.run_query(sql), session


@pytest.fixture(scope="module")
def events():
    return {rows: make_events(rows, seed=rows + 3) for rows in set(SIZES.values())}


@pytest.mark.parametrize("frame", list(FRAMES))
@pytest.mark.parametrize("batch_size", list(SIZES))
def test_udafs_over_frames_match_duckdb(events, frame, batch_size):
    data = events[SIZES[batch_size]]
    ours, theirs = FRAMES[frame]
    got, session = stream(data, OURS.format(w=ours), [batch_size])
    assert session.last_summary.dead_letters == {}
    assert_rows(got, duck(data, THEIRS.format(w=theirs)))


@pytest.mark.parametrize("frame", list(FRAMES))
def test_equal_times_and_random_batch_sizes_match_duckdb(events, frame):
    data = whole_seconds(events[1_500])
    cuts = np.random.default_rng(3).choice([1, 7, 64, 300], 40).tolist()
    ours, theirs = FRAMES[frame]
    got, _ = stream(data, OURS.format(w=ours), cuts)
    assert_rows(got, duck(data, THEIRS.format(w=theirs)))


@pytest.mark.parametrize("frame", list(FRAMES))
def test_two_arguments_skip_rows_where_either_is_null(events, frame):
    data = events[600]
    ours, theirs = FRAMES[frame]
    got, _ = stream(data, f"SELECT idx, weighted_mean(v, x + 1) OVER ({ours}) AS wm FROM events", [7])
    both = "FILTER (WHERE v IS NOT NULL AND x IS NOT NULL)"
    assert_rows(got, duck(data, f"SELECT idx, sum(v * (x + 1)) {both} OVER ({theirs}) / sum(x + 1) {both} OVER ({theirs}) AS wm "
                                "FROM events"))


def test_the_vectorized_form_works_in_windows_too(events):
    """In a window TVF a ``frames=True`` function gets one list: the group."""
    data = events[600]
    got, _ = stream(data, f"SELECT window_start, window_end, k, frame_median(v) AS m FROM {WINDOWS['tumble'][0]} "
                          "GROUP BY window_start, window_end, k", [7])
    assert_same(got, duckdb_rows(data, "tumble", "median(v) AS m"), {"m": "float"})


@pytest.mark.parametrize("function", ["picky_median", "picky_quartile"])
@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_a_failing_frame_fails_its_row_only(events, function, batch_size, tmp_path):
    data = events[600]
    got, session = stream(data, f"SELECT idx, k, {function}(v) OVER ({ROWS}) AS m FROM events", [batch_size],
                          dead_letter_path=str(tmp_path / "dead.jsonl"))
    frames = duck(data, f"SELECT idx, k, count(v) OVER ({FRAMES['rows'][1]}) AS n, median(v) OVER ({FRAMES['rows'][1]}) AS m,"
                        f" quantile_cont(v, 0.75) OVER ({FRAMES['rows'][1]}) AS q FROM events")
    failing = {r["idx"] for r in frames if r["n"] == 3}
    assert 20 < len(failing) < 500
    expected = [{"idx": r["idx"], "k": r["k"], "m": r["m"] if function == "picky_median" else r["q"]}
                for r in frames if r["idx"] not in failing]
    assert_rows(got, expected)
    assert session.last_summary.dead_letters == {"udf": len(failing)}
    letters = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert {d["reason"] for d in letters} == {"udf"}
    assert {d["detail"] for d in letters} == {f"{function}: ValueError: three values"}
    records = {json.loads(d["raw"])["idx"]: json.loads(d["raw"]) for d in letters}
    assert set(records) == failing
    keys = {r["idx"]: r["k"] for r in frames}
    assert all(record["k"] == keys[i] for i, record in records.items())


def test_vectorized_form_is_called_once_per_step():
    calls = []

    @udaf(args=[pa.float64()], returns=pa.float64(), frames=True)
    def frame_mean(frames: pa.ListArray) -> np.ndarray:
        calls.append(len(frames))
        values = pc.list_flatten(frames).to_numpy(zero_copy_only=False)
        sums = np.bincount(pc.list_parent_indices(frames), weights=values, minlength=len(frames))
        return sums / pc.list_value_length(frames).to_numpy(zero_copy_only=False)

    session = TestSession()
    session.register_udf(frame_mean)
    session.execute(SOURCE_SQL)
    data = make_events(300, seed=9)
    session.stream("events").push(data).finish()
    got = session.run_query(f"SELECT idx, frame_mean(v) OVER ({ROWS}) AS a FROM events")
    assert_rows(got, duck(data, f"SELECT idx, avg(v) OVER ({FRAMES['rows'][1]}) AS a FROM events"))
    assert sum(calls) <= len(got) and len(calls) <= 2  # one batch in: one step (+ the end of input)


@pytest.mark.parametrize(("sql", "message"), [
    ("SELECT median(v) OVER (PARTITION BY k ORDER BY ts) AS m FROM events",
     "q.sql:1:27: error: aggregate median() OVER (...) is not supported with an UNBOUNDED frame"),
    ("SELECT median(v) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS m FROM events",
     "is not supported with an UNBOUNDED frame"),
    (f"SELECT median(g) OVER ({ROWS}) AS m FROM events", "q.sql:1:27: error: argument 1 of median is VARCHAR, expected DOUBLE"),
    (f"SELECT median(v, x) OVER ({ROWS}) AS m FROM events", "aggregate median takes 1 argument(s), got 2"),
])
def test_misuse_is_a_located_error(sql, message):
    session = session_with()
    with pytest.raises(SqlStreamError) as info:
        session.execute(f"CREATE SINK out AS {sql} WITH (connector = 'memory')", path="q.sql")
    assert message in info.value.render()


def test_a_restored_pipeline_continues_exactly(events):
    """OVER state holds rows, not function state: a udaf's frames after a restart (from
    the snapshot stored as a checkpoint stores it) are the uninterrupted run's."""
    data = events[600]
    sql = OURS.format(w=RANGE)

    def run(restarts: set[int]) -> list[dict]:
        session = session_with()
        session.execute(f"CREATE SINK out AS {sql} WITH (connector = 'memory')")
        pipeline = session.start()
        for step, start in enumerate(range(0, data.num_rows, 37)):
            if step in restarts:
                assert pipeline.state_rows() > 0
                pipeline = pipeline.restart()
            session.stream("events").push(data.slice(start, 37))
            pipeline.pump()
        pipeline.finish()
        return session.rows("out", fold=False)

    expected = run(set())
    assert_rows(expected, duck(data, THEIRS.format(w=RANGE)))
    assert run({3, 7, 11}) == expected
