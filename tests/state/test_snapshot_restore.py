"""Checkpoints: every stateful operator snapshots its state and a fresh one restores it
exactly.

Differential: the same out-of-order input, in small batches of seeded random sizes
(two sources interleaved for joins), runs (a) uninterrupted and (b) restarted from a
checkpoint (:meth:`~sqlstream.testing.PipelineRun.restart`: each operator's snapshot
through JSON and Arrow IPC, restored into a fresh build of the same plan) at a
seeded batch boundary, and again restarted at every fifth boundary. The sink's rows,
unfolded and in emission order, must be identical; at each restart the restored
operators hold the same rows of state and the same retention bound. The uninterrupted
result, folded, is DuckDB's where the existing differential tests have an oracle for
the query.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlstream.changelog import fold_changelog
from sqlstream.operators.snapshot import OperatorSnapshot
from sqlstream.runtime.operator_ids import checkpoint_operators
from sqlstream.testing import PipelineRun, TestSession, stored_snapshot
from tests.differential import test_joins as joins
from tests.differential import test_over as over
from tests.differential import test_ranking as ranking
from tests.differential import test_windows_differential as windows

pytestmark = pytest.mark.timeout(300)

EVENTS = windows.make_events(500, seed=11)
A, B = joins.A, joins.B
SIZES = [1, 2, 3, 8, 20]  # rows per batch, drawn per batch
EVERY = 5  # the "many restarts" run restarts at every fifth batch boundary
#: kinds whose snapshot is only the base's input watermarks (the lookup TABLE is read again at start)
STATELESS = {"UnionOperator", "LookupJoinOperator"}


def late_events() -> pa.Table:
    """EVENTS with one row in eight moved 3-9 s back: behind the 2 s watermark delay."""
    rng = np.random.default_rng(3)
    times = pa.compute.cast(EVENTS.column("ts"), pa.int64()).to_numpy()
    moved = np.where(rng.random(times.size) < 0.125, rng.integers(3_000_000, 9_000_000, times.size), 0)
    return EVENTS.set_column(3, "ts", pa.array(times - moved, pa.timestamp("us")))


@dataclass(frozen=True)
class Case:
    """A query over ``inputs`` (source → rows in arrival order), the operator kind it is
    here for, and its DuckDB check of the folded uninterrupted result (None: none)."""

    query: str
    kind: str
    inputs: dict[str, pa.Table]
    check: Callable[[list[dict]], None] | None = None
    emit_every: bool = False  # move the clock 1 s after every third batch
    setup: str = ""
    extra: dict = field(default_factory=dict)


def window_case(window: str, emit: str = "") -> Case:
    query = (f"SELECT window_start, window_end, k, {windows.SELECT} FROM {windows.WINDOWS[window][0]} "
             f"GROUP BY window_start, window_end, k {emit}")

    def check(rows):
        windows.assert_same(rows, windows.duckdb_rows(EVENTS, window, windows.DUCK_SELECT), windows.KINDS)

    kind = {"tumble": "WindowAggregateOperator", "session": "SessionWindowOperator"}.get(window, "PaneWindowOperator")
    return Case(query, kind, {"events": EVENTS}, check, emit_every=bool(emit))


def duck_case(query: str, kind: str, inputs: dict[str, pa.Table], duck_sql: str | None = None, **options) -> Case:
    def check(rows):
        joins.assert_same(rows, joins.duck(duck_sql or query, inputs))

    return Case(query, kind, inputs, check, **options)


GROUPED = ("SELECT k, count(*) AS n, sum(x) AS sx, max(v) AS mv, min(g) AS mg, count(DISTINCT x) AS dx, "
           "first_value(v) AS fv FROM events GROUP BY k")
DUCK_GROUPED = GROUPED.replace("first_value(v)", "arg_min(v, idx) FILTER (WHERE v IS NOT NULL)")
REGULAR_A, REGULAR_B = A.slice(0, 150), B.slice(0, 150)
WINDOW_JOIN = ("SELECT x.k AS xk, y.k AS yk, x.ws AS xws, y.we AS ywe, x.na, y.nb FROM {l} x FULL JOIN {r} y "
               "ON x.ws = y.ws AND x.we = y.we AND x.k = y.k AND x.na >= y.nb - 1")
INTERVAL_JOIN = ("SELECT x.k, x.v, x.ts AS xts, y.w, y.ts AS yts FROM a x {kind} b y "
                 f"ON x.k = y.k AND {joins.INTERVALS['between']}")
UPDATING_JOIN = """SELECT x.s, x.total, y.n FROM (SELECT s, sum(v) AS total FROM a GROUP BY s) x
                   LEFT JOIN (SELECT s, count(*) AS n FROM b WHERE w > 50 GROUP BY s) y ON x.s = y.s"""
CHANGELOG_JOIN_AGGREGATE = """SELECT y.s, count(*) AS n, max(x.v) AS top, avg(y.w) AS mean, count(DISTINCT x.k) AS keys
                              FROM b y LEFT JOIN a x ON x.k = y.k AND x.v > 60 GROUP BY y.s"""
UNION = ("SELECT window_start, k, count(*) AS n FROM TUMBLE(events, ts, INTERVAL '5' SECOND) "
         "GROUP BY window_start, window_end, k UNION ALL "
         "SELECT window_start, k, count(*) AS n FROM HOP(events, ts, INTERVAL '2' SECOND, INTERVAL '5' SECOND) "
         "GROUP BY window_start, window_end, k")


def _union_check(rows):
    tumble = windows.duckdb_rows(EVENTS, "tumble", "count(*) AS n")
    hop = windows.duckdb_rows(EVENTS, "hop", "count(*) AS n")
    joins.assert_same(rows, [{k: r[k] for k in ("window_start", "k", "n")} for r in tumble + hop])


def _limit_check(rows):
    assert rows == EVENTS.select(["idx", "k", "v"]).slice(0, 300).to_pylist()


CASES = {
    "tumble": window_case("tumble"),
    "hop": window_case("hop"),
    "cumulate": window_case("cumulate"),
    "session": window_case("session"),
    "tumble emit every": window_case("tumble", "EMIT EVERY INTERVAL '1' SECOND"),
    "hop emit every": window_case("hop", "EMIT EVERY INTERVAL '1' SECOND"),
    "session emit every": window_case("session", "EMIT EVERY INTERVAL '1' SECOND"),
    "tumble with late rows": Case(
        f"SELECT window_start, window_end, k, {windows.SELECT} FROM {windows.WINDOWS['tumble'][0]} "
        "GROUP BY window_start, window_end, k", "LateFilterOperator", {"events": late_events()}),
    "hop with late rows": Case(
        f"SELECT window_start, window_end, k, {windows.SELECT} FROM {windows.WINDOWS['hop'][0]} "
        "GROUP BY window_start, window_end, k", "PaneWindowOperator", {"events": late_events()}),
    "session with late rows": Case(
        f"SELECT window_start, window_end, k, {windows.SELECT} FROM {windows.WINDOWS['session'][0]} "
        "GROUP BY window_start, window_end, k", "SessionWindowOperator", {"events": late_events()}),
    "group by": duck_case(GROUPED, "GroupAggregateOperator", {"events": EVENTS}, DUCK_GROUPED),
    "group by emit every": duck_case(f"{GROUPED} EMIT EVERY INTERVAL '1' SECOND", "GroupAggregateOperator",
                                     {"events": EVENTS}, DUCK_GROUPED, emit_every=True),
    "distinct": duck_case("SELECT DISTINCT k, g FROM events", "GroupAggregateOperator", {"events": EVENTS}),
    "aggregate over an aggregate": duck_case(
        "SELECT n, count(*) AS groups, sum(sx) AS total, max(sx) AS top FROM "
        "(SELECT k, count(*) AS n, sum(x) AS sx FROM events GROUP BY k) GROUP BY n",
        "ChangelogAggregateOperator", {"events": EVENTS}),
    "union all of windows": Case(UNION, "UnionOperator", {"events": EVENTS}, _union_check),
    "except all": duck_case("SELECT k, s FROM a EXCEPT ALL SELECT k, s FROM b", "GroupAggregateOperator",
                            {"a": REGULAR_A, "b": REGULAR_B}),
    "rollup": duck_case("SELECT k, g, count(*) AS n, sum(x) AS sx FROM events GROUP BY ROLLUP (k, g)",
                        "GroupAggregateOperator", {"events": EVENTS}),
    "limit": Case("SELECT idx, k, v FROM events LIMIT 300", "LimitOperator", {"events": EVENTS}, _limit_check),
    "window join": duck_case(
        WINDOW_JOIN.format(l=joins.WINDOWED.format(n="na", src="a"), r=joins.WINDOWED.format(n="nb", src="b")),
        "WindowJoinOperator", {"a": A, "b": B},
        WINDOW_JOIN.format(l=joins.DUCK_WINDOWED.format(n="na", src="a"), r=joins.DUCK_WINDOWED.format(n="nb", src="b"))),
    "interval join": duck_case(INTERVAL_JOIN.format(kind="JOIN"), "IntervalJoinOperator", {"a": A, "b": B}),
    "interval full join": duck_case(INTERVAL_JOIN.format(kind="FULL JOIN"), "IntervalJoinOperator", {"a": A, "b": B}),
    "interval join with late rows": Case(
        INTERVAL_JOIN.format(kind="LEFT JOIN"), "IntervalJoinOperator",
        {"a": late_events().select(["k", "g", "x", "ts"]).rename_columns(["k", "s", "v", "ts"]), "b": B}),
    "window over an interval join": duck_case(
        """SELECT window_start, count(*) AS n, sum(w) AS total FROM TUMBLE(
             (SELECT x.ts, y.w FROM a x JOIN b y ON x.s = y.s AND y.ts BETWEEN x.ts AND x.ts + INTERVAL '3' SECOND),
             ts, INTERVAL '2' SECOND) GROUP BY window_start, window_end""", "IntervalJoinOperator", {"a": A, "b": B},
        """SELECT make_timestamp(epoch_us(x.ts) // 2000000 * 2000000) AS window_start, count(*) AS n, sum(y.w) AS total
           FROM a x JOIN b y ON x.s = y.s AND y.ts BETWEEN x.ts AND x.ts + INTERVAL '3' SECOND GROUP BY 1"""),
    "regular join": duck_case("SELECT x.k AS xk, x.v, y.k AS yk, y.w FROM a x JOIN b y ON x.k = y.k AND x.v + y.w > 90",
                              "RegularJoinOperator", {"a": REGULAR_A, "b": REGULAR_B}),
    "regular full join": duck_case("SELECT x.k AS xk, x.v, y.k AS yk, y.w FROM a x FULL JOIN b y ON x.k = y.k AND y.w < 30",
                                   "RegularJoinOperator", {"a": REGULAR_A, "b": REGULAR_B}),
    "regular join of changelogs": duck_case(UPDATING_JOIN, "RegularJoinOperator", {"a": A, "b": B}),
    "aggregate over a changelog join": duck_case(CHANGELOG_JOIN_AGGREGATE, "ChangelogAggregateOperator",
                                                 {"a": REGULAR_A.slice(0, 100), "b": REGULAR_B.slice(0, 100)}),
    "window over a changelog": Case(
        """SELECT window_start, window_end, k, count(*) AS n, sum(x) AS sx, max(v) AS mv FROM HOP(
             (SELECT k, ts, v, x FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY g ORDER BY ts DESC) AS rn FROM events)
              WHERE rn = 1), ts, INTERVAL '2' SECOND, INTERVAL '6' SECOND) GROUP BY window_start, window_end, k""",
        "WindowChangelogAggregateOperator", {"events": EVENTS}),
    "regular join with state ttl": Case("SELECT x.v, y.w FROM a x LEFT JOIN b y ON x.k = y.k", "RegularJoinOperator",
                                        {"a": REGULAR_A, "b": REGULAR_B}, emit_every=True,
                                        setup="SET join_state_ttl = '2s';"),
    "lookup join": duck_case(joins.LOOKUPS["computed keys and residual"][0], "LookupJoinOperator", {"a": A}),
    "top n": duck_case(ranking.QUERIES["top3 with rank"][0], "TopNOperator", {"events": EVENTS},
                       ranking.QUERIES["top3 with rank"][1]),
    "keep last": duck_case(ranking.QUERIES["keep last (event time DESC)"][0], "TopNOperator", {"events": EVENTS},
                           ranking.QUERIES["keep last (event time DESC)"][1]),
    "top n with state ttl": Case(ranking.QUERIES["top3 with rank"][0], "TopNOperator", {"events": EVENTS},
                                 setup="SET top_n_state_ttl = '3s';"),
    "keep first": duck_case(ranking.QUERIES["keep first (event time)"][0], "FirstRowOperator", {"events": EVENTS},
                            ranking.QUERIES["keep first (event time)"][1]),
    "keep first with late rows and ttl": Case(
        "SELECT idx, g FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY x ORDER BY ts) AS rn FROM events) WHERE rn = 1",
        "FirstRowOperator", {"events": late_events()}, setup="SET dedup_state_ttl = '5s';"),
    "over aggregate": duck_case(over.QUERIES["range aggregates"][0], "OverAggregateOperator", {"events": EVENTS},
                                over.duck_sql("range aggregates")),
    "over rows, lag and lead": duck_case(over.QUERIES["lag and lead"][0], "OverAggregateOperator", {"events": EVENTS},
                                         over.duck_sql("lag and lead")),
    "over unbounded": duck_case(over.QUERIES["unbounded frames (the default with ORDER BY, ROWS and RANGE)"][0],
                                "OverAggregateOperator", {"events": EVENTS},
                                over.duck_sql("unbounded frames (the default with ORDER BY, ROWS and RANGE)")),
    "over with late rows": Case(over.QUERIES["rows aggregates"][0], "OverAggregateOperator", {"events": late_events()}),
}


# -- the harness ---------------------------------------------------------------------------------


def batches(case: Case, seed: int) -> list[tuple[str, pa.Table | None]]:
    """The input as (source, rows) in arrival order: batches of random sizes, sources
    interleaved at random; ("clock", None) moves processing time by 1 s."""
    rng = np.random.default_rng(seed)
    offsets = dict.fromkeys(case.inputs, 0)
    out: list[tuple[str, pa.Table | None]] = []
    while True:
        live = [name for name, table in case.inputs.items() if offsets[name] < table.num_rows]
        if not live:
            return out
        name = live[int(rng.integers(len(live)))]
        size = int(rng.choice(SIZES))
        out.append((name, case.inputs[name].slice(offsets[name], size)))
        offsets[name] += size
        if case.emit_every and len(out) % 4 == 3:
            out.append(("clock", None))


def held(run: PipelineRun) -> list[tuple[str, int, int | None]]:
    """Per operator: its id, rows of state and retention bound."""
    return [(name, op.state_size().rows, op.retention_start()) for name, op in checkpoint_operators(run.driver.sources)]


def run_case(case: Case, tmp_path, steps, restarts: set[int], seen: list[OperatorSnapshot] | None = None):
    """The sink's rows (unfolded, in emission order) and the operators at the end."""
    pq.write_table(joins.merchants(), tmp_path / "m.parquet")
    session = TestSession(base_dir=str(tmp_path))
    session.execute(joins.STREAMS_SQL + joins.TABLE_SQL + windows.SOURCE_SQL + ";" + case.setup)
    session.execute(f"CREATE SINK out AS {case.query} WITH (connector = 'memory')")
    run = session.start()
    for i, (name, rows) in enumerate(steps):
        if i in restarts:
            before, snapshots = held(run), [op.snapshot() for _, op in checkpoint_operators(run.driver.sources)]
            run = run.restart()
            assert held(run) == before
            for old, new in zip(snapshots, [op.snapshot() for _, op in checkpoint_operators(run.driver.sources)], strict=True):
                assert_same_snapshot(old, new)
            if seen is not None:
                seen.extend(snapshots)
        if name == "clock":
            run.advance(1.0)
        else:
            session.stream(name).push(rows)
            run.pump()
    run.finish()
    return session.rows("out", fold=False), checkpoint_operators(run.driver.sources)


def assert_same_snapshot(old: OperatorSnapshot, new: OperatorSnapshot) -> None:
    """A restored operator describes the state it was restored from."""
    assert (new.kind, new.version, new.values) == (old.kind, old.version, old.values)
    assert sorted(new.tables) == sorted(old.tables), old.kind
    for name, table in old.tables.items():
        assert new.tables[name].equals(table), (old.kind, name)


def _counters(operators) -> list[tuple[str, int]]:
    return [(name, getattr(op, attr)) for name, op in operators
            for attr in ("late_rows", "expired_rows", "expired_keys") if hasattr(op, attr)]


@pytest.mark.parametrize("name", list(CASES))
def test_a_restored_pipeline_continues_exactly(tmp_path, name):
    case = CASES[name]
    steps = batches(case, seed=len(name))
    expected, operators = run_case(case, tmp_path, steps, set())
    assert expected
    if case.check is not None:
        case.check(fold_changelog(expected))
    cut = int(np.random.default_rng(len(name) + 1).integers(1, len(steps)))
    seen: list[OperatorSnapshot] = []
    for restarts in ({cut}, set(range(EVERY, len(steps), EVERY))):
        rows, restored = run_case(case, tmp_path, steps, restarts, seen)
        assert rows == expected, f"restarted at {sorted(restarts)}"
        assert _counters(restored) == _counters(operators)
    # the operator this case is for was snapshotted, holding state where it has any
    snapshots = [s for s in seen if s.kind == case.kind]
    assert snapshots and (case.kind in STATELESS or any(s.rows or s.values.get("state") for s in snapshots))


_UNINTERRUPTED: dict[tuple[str, int], list[dict]] = {}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["hop emit every", "session with late rows", "regular full join", "regular join of changelogs"]),
       seed=st.integers(0, 3), restarts=st.sets(st.integers(0, 80), min_size=1, max_size=4))
def test_restarts_at_any_boundaries_change_nothing(tmp_path, name, seed, restarts):
    """Hypothesis picks the batching and up to four restart boundaries (past the end:
    none); the rows are the uninterrupted run's."""
    case = CASES[name]
    steps = batches(case, seed)
    if (name, seed) not in _UNINTERRUPTED:
        _UNINTERRUPTED[name, seed] = run_case(case, tmp_path, steps, set())[0]
    assert run_case(case, tmp_path, steps, restarts)[0] == _UNINTERRUPTED[name, seed]


# -- operator ids and stored snapshots ------------------------------------------------------------

TWO_SINKS = [
    ("joined", WINDOW_JOIN.format(l=joins.WINDOWED.format(n="na", src="a"), r=joins.WINDOWED.format(n="nb", src="b"))),
    ("unioned", UNION),
    ("looked_up", joins.LOOKUPS["inner"][0]),
]


def _build(tmp_path):
    pq.write_table(joins.merchants(), tmp_path / "m.parquet")
    session = TestSession(base_dir=str(tmp_path))
    session.execute(joins.STREAMS_SQL + joins.TABLE_SQL + windows.SOURCE_SQL)
    for name, query in TWO_SINKS:
        session.execute(f"CREATE SINK {name} AS {query} WITH (connector = 'memory')")
    return session.build(session.pending_sinks())


def test_two_builds_of_the_same_plans_give_the_same_operator_ids(tmp_path):
    """Three queries over three sources and a TABLE: joins, a union and a fan-out."""
    first, second = _build(tmp_path), _build(tmp_path)
    ids = checkpoint_operators(first.sources)
    assert [(name, type(op)) for name, op in ids] == [(name, type(op)) for name, op in checkpoint_operators(second.sources)]
    assert len({name for name, _ in ids}) == len(ids)  # each operator once
    reached = {id(op) for _, op in ids}
    assert all(id(op) in reached for op in first.operators + first.sinks)
    assert [name for name, _ in ids] == [f"{i}-{type(op).__name__}" for i, (_, op) in enumerate(ids)]
    assert ids[0][1] is first.sources[0].consumers[0][0]  # breadth-first from the first source
    assert {type(op).__name__ for _, op in ids} >= {"WindowJoinOperator", "UnionOperator", "LookupJoinOperator",
                                                     "SinkOperator"}


def test_a_stored_snapshot_keeps_only_what_json_and_arrow_ipc_hold():
    table = pa.table({"k": pa.array(["a", "b"]).dictionary_encode(), "n": pa.array([1, None], pa.int64())})
    snapshot = OperatorSnapshot("X", 1, {"watermark": 5, "state": {"early_last_us": None, "ok": [True, 1.5]}},
                                {"t": table})
    stored = stored_snapshot(snapshot)
    assert stored.values == snapshot.values and stored.tables["t"].equals(table)
    with pytest.raises(TypeError, match="int64 is not JSON serializable"):
        stored_snapshot(OperatorSnapshot("X", 1, {"watermark": np.int64(5)}))
