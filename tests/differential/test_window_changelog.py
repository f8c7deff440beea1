"""Window aggregations over an updating input (changelog in, changelog out) vs DuckDB.

The input is a changelog — keep-last deduplication, an unwindowed GROUP BY, a LEFT
JOIN whose padded rows are retracted — built over the out-of-order events of the window
differential tests, fed in batches of 1, 7 and 64 rows. The watermark delay (1 h) keeps
every window open until the input ends, so no change is late: the folded output
(``+I``/``-U``/``+U``/``-D`` applied) must equal DuckDB's window aggregation over the
final input (the input changelog folded first, by DuckDB in batch). Late changes, for
windows already closed, are tested on the operator with explicit watermarks.
"""

from __future__ import annotations

import re

import duckdb
import pyarrow as pa
import pytest

from sqlstream.errors import SqlStreamError
from sqlstream.operators.aggregates import AggCall
from sqlstream.operators.window_changelog_aggregate import WindowChangelogAggregateOperator
from sqlstream.plan.nodes import WindowSpec
from sqlstream.testing import TestSession
from tests.differential.test_joins import assert_same
from tests.differential.test_windows_differential import WINDOWS, make_events

pytestmark = pytest.mark.timeout(300)

SOURCES = """
CREATE SOURCE events (idx BIGINT, k BIGINT, g VARCHAR, ts TIMESTAMP, v DOUBLE, x BIGINT,
  WATERMARK FOR ts AS ts - INTERVAL '1' HOUR) WITH (connector = 'memory');
CREATE SOURCE marks (mk BIGINT, w BIGINT, mts TIMESTAMP,
  WATERMARK FOR mts AS mts - INTERVAL '1' HOUR) WITH (connector = 'memory');
"""

# input changelog: (sqlstream view, DuckDB query of its final table over `events`/`marks`)
INPUTS = {
    "keep last": (
        "SELECT k, ts, v, x FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts DESC) AS rn FROM events) WHERE rn = 1",
        "SELECT k, ts, v, x FROM (SELECT *, row_number() OVER (PARTITION BY k ORDER BY ts DESC, idx DESC) AS rn FROM events) WHERE rn = 1",
    ),
    "group by": (
        "SELECT g AS k, max(ts) AS ts, sum(v) AS v, count(x) AS x FROM events GROUP BY g",
        "SELECT g AS k, max(ts) AS ts, sum(v) AS v, count(x) AS x FROM events GROUP BY g",
    ),
    "left join": (
        "SELECT e.k, e.ts, e.v, m.w AS x FROM events e LEFT JOIN marks m ON e.x = m.mk",
        "SELECT e.k, e.ts, e.v, m.w AS x FROM events e LEFT JOIN marks m ON e.x = m.mk",
    ),
}
SELECT = "count(*) AS c, count(x) AS cx, sum(x) AS sx, min(v) AS lo, max(v) AS hi"
SIZES = {1: 80, 64: 800}


def make_marks(rows: int) -> pa.Table:
    """A second input for the join: marks for x = 0..rows-1 (x of events is 0..39),
    arriving over the events' span so padded rows are retracted."""
    events = make_events(rows, seed=7)
    return pa.table({"mk": pa.array(range(rows), pa.int64()), "w": pa.array([i * 10 for i in range(rows)], pa.int64()),
                     "mts": events.column("ts")})


def stream(events: pa.Table, marks: pa.Table, view: str, window: str, batch: int) -> tuple[list[dict], TestSession]:
    session = TestSession()
    session.execute(SOURCES)
    session.execute(f"CREATE VIEW changes AS {view}")
    feed, other = session.stream("events"), session.stream("marks")
    for i, start in enumerate(range(0, events.num_rows, batch)):
        feed.push(events.slice(start, batch))
        if i % 3 == 0 and i // 3 < marks.num_rows:
            other.push(marks.slice(i // 3, 1))
    other.push(marks.slice(min(events.num_rows // batch // 3 + 1, marks.num_rows)))
    feed.finish()
    other.finish()
    tvf = WINDOWS[window][0].replace("events", "changes")
    rows = session.run_query(f"SELECT window_start, window_end, k, {SELECT} FROM {tvf} GROUP BY window_start, window_end, k")
    return rows, session


def duck(events: pa.Table, marks: pa.Table, query: str, window: str) -> list[dict]:
    con = duckdb.connect()
    con.register("events", events)
    con.register("marks", marks)
    final = con.sql(query).to_arrow_table()
    data = final.append_column("us", pa.compute.cast(final.column("ts"), pa.int64()))  # noqa: F841 - used by SQL
    con.register("data", data)
    return con.sql(f"""SELECT make_timestamp(ws) AS window_start, make_timestamp(we) AS window_end, k, {SELECT}
                       FROM ({WINDOWS[window][1]}) GROUP BY ws, we, k""").to_arrow_table().to_pylist()


@pytest.mark.parametrize("window", ["tumble", "hop", "cumulate"])
@pytest.mark.parametrize("name", list(INPUTS))
@pytest.mark.parametrize("batch", list(SIZES))
def test_window_over_changelog_matches_duckdb(name, window, batch):
    events, marks = make_events(SIZES[batch], seed=batch), make_marks(40)
    view, final = INPUTS[name]
    expected = duck(events, marks, final, window)
    assert len(expected) >= 5
    ours, session = stream(events, marks, view, window, batch)
    assert session.last_summary.dead_letters == {}
    assert_same(ours, expected)


def test_output_is_a_changelog_with_updates_and_deletes():
    events = make_events(300, seed=5)
    session = TestSession()
    session.execute(SOURCES)
    session.execute(f"CREATE VIEW changes AS {INPUTS['keep last'][0]}")
    feed = session.stream("events")
    for start in range(0, events.num_rows, 7):
        feed.push(events.slice(start, 7))
    feed.finish()
    session.stream("marks").finish()
    rows = session.run_query("SELECT window_start, k, count(*) AS c FROM TUMBLE(changes, ts, INTERVAL '5' SECOND) "
                             "GROUP BY window_start, window_end, k", fold=False)
    ops = [r["__op"] for r in rows]
    assert {"+I", "-D"} <= set(ops)  # a key's last row moves on: its old window's group goes away
    assert ops.count("-U") == ops.count("+U")


def _operator(kind: str = "tumble") -> tuple[WindowChangelogAggregateOperator, list[dict], list]:
    spec = WindowSpec("tumble", size_us=10) if kind == "tumble" else WindowSpec("hop", slide_us=5, size_us=10)
    schema = pa.schema([("__op", pa.string()), ("__k0", pa.int64()), ("window_start", pa.int64()),
                        ("window_end", pa.int64()), ("__agg0", pa.int64()), ("__agg1", pa.float64())])
    calls = [AggCall("count_star", None, "__agg0"), AggCall("sum", "__a1", "__agg1")]
    op = WindowChangelogAggregateOperator(spec, ["__k0"], calls, schema, "changes")
    out, letters = [], []
    op.emit = lambda b: out.extend(b.to_pylist())
    op.dead_letter = letters.extend
    return op, out, letters


def _changes(ops, ts, keys, values) -> pa.RecordBatch:
    return pa.record_batch({"__op": ops, "__t": ts, "__k0": keys, "__a1": pa.array(values, pa.float64())})


def test_updates_per_batch_then_a_closed_window_turns_changes_into_late_dead_letters():
    op, out, letters = _operator()
    op.on_batch(_changes(["+I", "+I", "+I"], [1, 2, 15], [1, 1, 1], [1.0, 2.0, 5.0]), 0)
    assert [(r["__op"], r["window_start"], r["__agg0"], r["__agg1"]) for r in out] == [
        ("+I", 0, 2, 3.0), ("+I", 10, 1, 5.0)]
    out.clear()
    op.on_batch(_changes(["-U", "+U"], [2, 3], [1, 1], [2.0, 7.0]), 0)  # an update inside window 0
    assert [(r["__op"], r["__agg0"], r["__agg1"]) for r in out] == [("-U", 2, 3.0), ("+U", 2, 8.0)]
    out.clear()
    op.advance(10)  # window [0, 10) closes: its state is freed, its rows stand
    assert op.rows.num_rows == 1 and op.results.num_rows == 1 and out == []
    op.on_batch(_changes(["-D", "+I"], [1, 12], [1, 1], [1.0, 1.0]), 0)
    assert [(r["__op"], r["window_start"], r["__agg0"]) for r in out] == [("-U", 10, 1), ("+U", 10, 2)]
    assert op.late_rows == 1 and [(d.reason, d.event_time) for d in letters] == [("late", 1)]


def test_hop_change_is_applied_to_its_open_windows_only():
    op, out, letters = _operator("hop")
    op.advance(9)  # [0, 10) is open, [-5, 5) closed
    op.on_batch(_changes(["+I"], [3], [1], [4.0]), 0)
    assert [(r["__op"], r["window_start"]) for r in out] == [("+I", 0)]
    assert op.late_rows == 0 and letters == []


def test_state_snapshot_restores_open_windows():
    op, out, _ = _operator()
    op.on_batch(_changes(["+I", "+I"], [1, 15], [1, 2], [1.0, 2.0]), 0)
    op.advance(10)
    snap = op.snapshot()
    fresh, out2, _ = _operator()
    fresh.restore(snap)
    fresh.on_batch(_changes(["-D"], [15], [2], [2.0]), 0)
    assert [(r["__op"], r["window_start"]) for r in out2] == [("-D", 10)]
    assert fresh.closed_wm == 10 and fresh.rows.num_rows == 0


@pytest.mark.parametrize("query, message", [
    ("SELECT window_start, k, count(*) FROM SESSION(changes, ts, INTERVAL '5' SECOND) GROUP BY window_start, window_end, k",
     "a SESSION window aggregation over an updating result is not supported"),
    ("SELECT window_start, k, first_value(v) FROM TUMBLE(changes, ts, INTERVAL '5' SECOND) GROUP BY window_start, window_end, k",
     "first_value() over an updating input is not supported"),
    ("SELECT window_start, k, count(*) FROM TUMBLE(changes, ts, INTERVAL '5' SECOND) GROUP BY window_start, window_end, k "
     "EMIT EVERY INTERVAL '1' SECOND", "EMIT over an updating input is not supported"),
    ("SELECT window_start, count(*) FROM TUMBLE(changes, k, INTERVAL '5' SECOND) GROUP BY window_start, window_end",
     "TUMBLE needs an event-time column with a watermark; 'k' is not one"),
])
def test_refused_forms_say_why(query, message):
    session = TestSession()
    session.execute(SOURCES)
    session.execute(f"CREATE VIEW changes AS {INPUTS['keep last'][0]}")
    with pytest.raises(SqlStreamError, match=re.escape(message)) as info:
        session.execute(query)
    assert info.value.location is not None


def test_explain_names_the_form_and_its_state():
    session = TestSession()
    session.execute(SOURCES)
    session.execute(f"CREATE VIEW changes AS {INPUTS['left join'][0]}")
    plan = session.explain("EXPLAIN SELECT window_start, k, sum(v) AS s FROM HOP(changes, ts, INTERVAL '2' SECOND, "
                           "INTERVAL '4' SECOND) GROUP BY window_start, window_end, k")
    assert "WindowChangelogAggregate HOP(slide 2s, size 4s) (updating input -> updating, per micro-batch) [updating]" in plan
    assert "freed when the watermark passes window_end (later changes: dead letters 'late')" in plan
    assert "LateFilter" not in plan  # the aggregate decides lateness by the windows it closed
