"""Event time end to end: late and future rows, EMIT EVERY, updating results, window
columns that propagate, UNION ALL and idle sources, SHOW WATERMARKS, the dead-letter
stream, bounded inputs, views, the Flink long forms, and every planner error path.

Processing time only moves through the manual clock (``TestSession.start()`` runs
the pipeline step by step in the test's thread), so nothing sleeps.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from sqlstream.errors import SqlStreamError
from sqlstream.testing import TestSession

pytestmark = pytest.mark.timeout(60)

T0 = datetime(2023, 11, 14)  # before the manual clock (2023-11-14 22:13:20): never 'future'
SOURCE = """CREATE SOURCE s (k VARCHAR, ts TIMESTAMP, v BIGINT,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (connector = 'memory'{options})"""


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def rows_at(*items) -> list[dict]:
    """(k, seconds, v) tuples as rows of s."""
    return [{"k": k, "ts": at(t), "v": v} for k, t, v in items]


def clock_time(session: TestSession) -> datetime:
    return datetime(1970, 1, 1) + timedelta(microseconds=session.clock.now_us())


def make_session(tmp_path=None, options: str = "", **kwargs) -> TestSession:
    session = TestSession(base_dir=str(tmp_path) if tmp_path else None, **kwargs)
    session.execute(SOURCE.format(options=options))
    return session


def sink(session: TestSession, sql: str, name: str = "out") -> None:
    session.execute(f"CREATE SINK {name} AS {sql} WITH (connector = 'memory')")


def by(rows: list[dict], *keys: str) -> list[dict]:
    return sorted(rows, key=lambda r: tuple((r[k] is None, r[k] if r[k] is not None else 0) for k in keys))


TUMBLE_COUNTS = """SELECT window_start, k, count(*) AS n, sum(v) AS total
  FROM TUMBLE(s, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end, k"""


# -- late rows ----------------------------------------------------------------------------------


def test_late_rows_are_dead_lettered_and_never_change_emitted_windows(tmp_path):
    session = make_session(tmp_path, dead_letter_path="dead.jsonl")
    sink(session, TUMBLE_COUNTS)
    run = session.start()
    stream = session.stream("s")
    stream.push(rows_at(("a", 1, 1), ("a", 2, 2), ("a", 9, 3), ("a", 12, 4)))  # watermark 11: [0, 10) closes
    run.pump()
    first = session.rows("out")
    assert first == [{"window_start": at(0), "k": "a", "n": 3, "total": 6}]
    stream.push(rows_at(("a", 5, 100), ("b", 9.5, 200), ("a", 15, 5), ("a", 10.5, 6), ("a", 8, 300)))
    run.pump()
    assert session.rows("out") == first  # the emitted window did not change
    summary = run.finish()
    assert by(session.rows("out"), "window_start", "k") == [
        {"window_start": at(0), "k": "a", "n": 3, "total": 6},
        {"window_start": at(10), "k": "a", "n": 3, "total": 15},  # 10.5 is behind the watermark, not late
    ]
    assert summary.dead_letters == {"late": 3}
    letters = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [(d["source"], d["reason"]) for d in letters] == [("s", "late")] * 3
    assert [json.loads(d["raw"])["v"] for d in letters] == [100, 200, 300]
    assert letters[0]["event_time"].startswith("2023-11-14T00:00:05")
    assert "already emitted" in letters[0]["detail"]


def test_a_memory_stream_can_move_event_time_without_rows():
    session = make_session()
    sink(session, TUMBLE_COUNTS)
    run = session.start()
    session.stream("s").push(rows_at(("a", 1, 1), ("a", 12, 2)))
    run.pump()
    assert session.rows("out") == [{"window_start": at(0), "k": "a", "n": 1, "total": 1}]
    session.stream("s").advance_to(int((at(21) - datetime(1970, 1, 1)).total_seconds() * 1_000_000))
    run.pump()  # watermark 20 s: [10, 20) closes with no new row
    assert by(session.rows("out"), "window_start") == [
        {"window_start": at(0), "k": "a", "n": 1, "total": 1}, {"window_start": at(10), "k": "a", "n": 1, "total": 2}
    ]
    run.finish()


def test_a_hop_row_whose_first_windows_were_emitted_counts_in_the_rest():
    session = make_session()
    sink(session, """SELECT window_start, count(*) AS n FROM HOP(s, ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND)
                     GROUP BY window_start, window_end""")
    run = session.start()
    session.stream("s").push(rows_at(("a", 1, 1), ("a", 12, 1)))  # watermark 11: [-5, 5) and [0, 10) emitted
    run.pump()
    assert by(session.rows("out"), "window_start") == [{"window_start": at(-5), "n": 1}, {"window_start": at(0), "n": 1}]
    session.stream("s").push(rows_at(("a", 7, 1), ("a", 2, 1)))  # 7: [5, 15) still open; 2: every window emitted
    summary = run.finish()
    assert by(session.rows("out"), "window_start") == [
        {"window_start": at(-5), "n": 1},
        {"window_start": at(0), "n": 1},
        {"window_start": at(5), "n": 2},
        {"window_start": at(10), "n": 1},
    ]
    assert summary.dead_letters == {"late": 1}


def test_stateless_queries_pass_late_rows_through():
    session = make_session()
    session.stream("s").push(rows_at(("a", 10, 1), ("a", 20, 2), ("a", 3, 3))).finish()
    assert session.run_query("SELECT k, v FROM s WHERE v > 0") == [
        {"k": "a", "v": 1}, {"k": "a", "v": 2}, {"k": "a", "v": 3}
    ]
    assert session.last_summary.dead_letters == {}


# -- updating results ----------------------------------------------------------------------------


def test_emit_every_gives_early_results_as_a_changelog():
    session = make_session()
    sink(session, """SELECT window_start, k, count(*) AS n FROM TUMBLE(s, ts, INTERVAL '10' SECOND)
                     GROUP BY window_start, window_end, k EMIT EVERY INTERVAL '1' SECOND""")
    run = session.start()
    stream = session.stream("s")
    stream.push(rows_at(("a", 1, 1), ("a", 2, 1)))
    run.pump()
    assert session.rows("out", fold=False) == []  # nothing before the first interval passed
    run.advance(1.0)
    changes = [(r["__op"], r["k"], r["n"]) for r in session.rows("out", fold=False)]
    assert changes == [("+I", "a", 2)]
    stream.push(rows_at(("a", 3, 1), ("b", 4, 1)))
    run.pump().advance(1.0)
    changes = [(r["__op"], r["k"], r["n"]) for r in session.rows("out", fold=False)]
    assert changes == [("+I", "a", 2), ("-U", "a", 2), ("+U", "a", 3), ("+I", "b", 1)]
    run.advance(1.0)  # nothing changed: nothing emitted
    assert len(session.rows("out", fold=False)) == 4
    stream.push(rows_at(("b", 5, 1), ("a", 12, 1)))  # the watermark (11) closes [0, 10) with b changed
    run.pump()
    changes = [(r["__op"], r["k"], r["n"]) for r in session.rows("out", fold=False)]
    assert changes[4:] == [("-U", "b", 1), ("+U", "b", 2)]
    run.finish()
    assert by(session.rows("out"), "window_start", "k") == [
        {"window_start": at(0), "k": "a", "n": 3},
        {"window_start": at(0), "k": "b", "n": 2},
        {"window_start": at(10), "k": "a", "n": 1},
    ]


def test_emit_every_retracts_early_sessions_that_merged():
    session = make_session()
    sink(session, """SELECT window_start, window_end, k, count(*) AS n FROM SESSION(s, ts, INTERVAL '3' SECOND)
                     GROUP BY window_start, window_end, k EMIT EVERY INTERVAL '1' SECOND""")
    run = session.start()
    stream = session.stream("s")
    stream.push(rows_at(("a", 1, 1), ("a", 4.5, 1)))  # two sessions: [1, 4) and [4.5, 7.5); watermark 3.5
    run.pump().advance(1.0).advance(1.0)

    def changes():
        return [(r["__op"], r["window_start"], r["window_end"], r["n"]) for r in session.rows("out", fold=False)]

    assert changes() == [("+I", at(1), at(4), 1), ("+I", at(4.5), at(7.5), 1)]
    stream.push(rows_at(("a", 3, 1)))  # bridges them: [1, 7.5)
    run.pump().advance(1.0)
    assert sorted(changes()[2:]) == [("+I", at(1), at(7.5), 3), ("-D", at(1), at(4), 1), ("-D", at(4.5), at(7.5), 1)]
    stream.push(rows_at(("a", 6, 1)))  # extends it to [1, 9) after the last early result
    run.pump()
    run.finish()
    assert changes()[5:] == [("-D", at(1), at(7.5), 3), ("+I", at(1), at(9), 4)]
    assert session.rows("out") == [{"window_start": at(1), "window_end": at(9), "k": "a", "n": 4}]


def test_emit_every_on_an_unwindowed_group_by_batches_its_updates():
    session = make_session()
    sink(session, "SELECT k, count(*) AS n FROM s GROUP BY k EMIT EVERY INTERVAL '2' SECOND")
    run = session.start()
    session.stream("s").push(rows_at(("a", 1, 1)))
    session.stream("s").push(rows_at(("a", 2, 1), ("b", 3, 1)))
    run.pump()
    assert session.rows("out", fold=False) == []
    run.advance(1.0).advance(1.0)
    assert [(r["__op"], r["k"], r["n"]) for r in session.rows("out", fold=False)] == [("+I", "a", 2), ("+I", "b", 1)]
    session.stream("s").push(rows_at(("a", 4, 1)))
    run.pump()
    run.finish()  # the end of the input flushes what the interval had not emitted yet
    assert [(r["__op"], r["k"], r["n"]) for r in session.rows("out", fold=False)][2:] == [("-U", "a", 2), ("+U", "a", 3)]


def _unwindowed_data(rows: int = 1_500) -> pa.Table:
    rng = np.random.default_rng(3)
    return pa.table(
        {
            "k": pa.array(np.array(["a", "b", "c", "d"])[rng.integers(0, 4, rows)], mask=rng.random(rows) < 0.05),
            "ts": pa.array([at(i / 10) for i in range(rows)], pa.timestamp("us")),
            "v": pa.array(rng.integers(-50, 50, rows), mask=rng.random(rows) < 0.05),
        }
    )


def test_unwindowed_group_by_is_a_changelog_that_folds_to_duckdb():
    data = _unwindowed_data()
    session = make_session()
    session.stream("s").push(data, batch_size=7).finish()
    changes = session.run_query(
        "SELECT k, count(*) AS n, sum(v) AS total, min(v) AS lo, count(DISTINCT v) AS d FROM s GROUP BY k", fold=False
    )
    assert {r["__op"] for r in changes} == {"+I", "-U", "+U"}
    for key in ("a", "b", "c", "d", None):  # per key: +I, then pairs retracting exactly the previous row
        mine = [r for r in changes if r["k"] == key]
        assert [r["__op"] for r in mine] == ["+I"] + ["-U", "+U"] * ((len(mine) - 1) // 2)
        for previous, retraction in zip(mine[:-1:2], mine[1::2], strict=True):
            assert {**previous, "__op": "-U"} == retraction
    from sqlstream.changelog import fold_changelog

    folded = fold_changelog(changes)
    expected = duckdb.sql(
        "SELECT k, count(*) AS n, sum(v) AS total, min(v) AS lo, count(DISTINCT v) AS d FROM data GROUP BY k"
    ).to_arrow_table().to_pylist()
    assert by(folded, "k") == by(expected, "k")


def test_count_star_of_a_stream_is_an_updating_total():
    data = _unwindowed_data(500)
    session = make_session()
    session.stream("s").push(data, batch_size=100).finish()
    changes = session.run_query("SELECT count(*) AS n FROM s", fold=False)
    assert [(r["__op"], r["n"]) for r in changes[:3]] == [("+I", 100), ("-U", 100), ("+U", 200)]
    from sqlstream.changelog import fold_changelog

    assert fold_changelog(changes) == [{"n": 500}]


# -- window columns propagate, UNION ALL, idle sources ---------------------------------------------------


def test_a_group_by_over_window_columns_is_itself_a_window_aggregate():
    data = _unwindowed_data(3_000)
    inner = """SELECT window_start, window_end, k, count(*) AS n FROM TUMBLE(s, ts, INTERVAL '10' SECOND)
               GROUP BY window_start, window_end, k"""
    session = make_session()
    sink(session, f"SELECT window_start, window_end, max(n) AS top, count(*) AS keys FROM ({inner}) GROUP BY window_start, window_end")
    run = session.start()
    session.stream("s").push(data.slice(0, 1_000), batch_size=100)
    run.pump()
    early = session.rows("out", fold=False)
    assert len(early) == 9 and "__op" not in early[0]  # final rows, emitted as windows close
    session.stream("s").push(data.slice(1_000), batch_size=100)
    run.finish()
    assert run.state_rows() == 0
    rows = session.rows("out", fold=False)
    expected = duckdb.sql(
        """SELECT ws AS window_start, ws + INTERVAL 10 SECOND AS window_end, max(n) AS top, count(*) AS keys
           FROM (SELECT time_bucket(INTERVAL 10 SECOND, ts) AS ws, k, count(*) AS n FROM data GROUP BY ALL)
           GROUP BY ws"""
    ).to_arrow_table().to_pylist()
    assert by(rows, "window_start") == by(expected, "window_start")
    assert len({r["window_start"] for r in rows}) == len(rows)  # each window once


UNION_SOURCES = """
CREATE SOURCE a (k VARCHAR, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (connector = 'memory'{a});
CREATE SOURCE b (k VARCHAR, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (connector = 'memory'{b});
CREATE VIEW both_ AS SELECT k, ts FROM a UNION ALL SELECT k, ts FROM b;
CREATE SINK out AS SELECT window_start, count(*) AS n FROM TUMBLE(both_, ts, INTERVAL '10' SECOND)
  GROUP BY window_start, window_end WITH (connector = 'memory');
"""


def _keyed(source: str, *seconds: float) -> list[dict]:
    return [{"k": source, "ts": at(t)} for t in seconds]


def test_union_all_waits_for_the_slowest_input():
    session = TestSession()
    session.execute(UNION_SOURCES.format(a="", b=""))
    run = session.start()
    session.stream("a").push(_keyed("a", 1, 5, 15, 25, 35))
    run.pump()
    assert session.rows("out") == []  # b has no watermark yet: the union's is its minimum
    session.stream("b").push(_keyed("b", 2, 3, 12))  # behind a's watermark, not behind the union's: not late
    run.pump()
    assert session.rows("out") == [{"window_start": at(0), "n": 4}]
    summary = run.finish()
    assert summary.dead_letters == {}
    assert by(session.rows("out"), "window_start") == [
        {"window_start": at(0), "n": 4}, {"window_start": at(10), "n": 2},
        {"window_start": at(20), "n": 1}, {"window_start": at(30), "n": 1},
    ]


def test_window_results_of_two_streams_combine_per_window_after_union_all():
    session = TestSession()
    session.execute(UNION_SOURCES.format(a="", b="").split("CREATE SINK")[0])
    sink(session, """SELECT window_start, sum(n) AS total, count(*) AS parts FROM (
                       SELECT window_start, window_end, count(*) AS n FROM TUMBLE(a, ts, INTERVAL '10' SECOND)
                       GROUP BY window_start, window_end
                       UNION ALL
                       SELECT window_start, window_end, count(*) AS n FROM TUMBLE(b, ts, INTERVAL '10' SECOND)
                       GROUP BY window_start, window_end)
                     GROUP BY window_start, window_end""")
    run = session.start()
    session.stream("a").push(_keyed("a", 1, 5, 15, 25, 35), batch_size=2)
    run.pump()
    assert session.rows("out") == []  # a's windows are final, but b may still add to them
    session.stream("b").push(_keyed("b", 2, 3, 12, 40), batch_size=1)
    summary = run.finish()
    assert summary.dead_letters == {}
    assert by(session.rows("out"), "window_start") == [
        {"window_start": at(0), "total": 4, "parts": 2}, {"window_start": at(10), "total": 2, "parts": 2},
        {"window_start": at(20), "total": 1, "parts": 1}, {"window_start": at(30), "total": 1, "parts": 1},
        {"window_start": at(40), "total": 1, "parts": 1},
    ]


@pytest.mark.parametrize("idle_timeout", [None, "5s"])
def test_idle_timeout_stops_a_quiet_source_holding_windows_back(idle_timeout):
    option = f", idle_timeout = '{idle_timeout}'" if idle_timeout else ""
    session = TestSession()
    session.execute(UNION_SOURCES.format(a="", b=option))
    run = session.start()
    session.stream("b").push(_keyed("b", 0.5))
    session.stream("a").push(_keyed("a", 1, 5, 15, 25))
    run.pump()
    run.advance(2.0).advance(2.0).advance(2.0)  # 6 s of processing time without a row from b
    emitted = by(session.rows("out"), "window_start")
    watermarks = {r["source"]: r for r in session.execute("SHOW WATERMARKS")[0].table.to_pylist()}
    session.stream("b").push(_keyed("b", 3, 30))  # b wakes up: 30 is ahead of every watermark, 3 may not be
    run.pump()
    summary = run.finish()
    final = by(session.rows("out"), "window_start")
    if idle_timeout:  # b stopped holding the union's watermark back: a's (24 s) closed two windows
        assert emitted == [{"window_start": at(0), "n": 3}, {"window_start": at(10), "n": 1}]
        assert watermarks["b"]["idle"] is True and watermarks["a"]["idle"] is False
        assert summary.dead_letters == {"late": 1}  # 3 s is behind the union's watermark when b resumes
        assert final[0] == {"window_start": at(0), "n": 3}
    else:  # b (0.5 s - 1 s) holds every window back, so its late-looking row still counts
        assert emitted == []
        assert watermarks["b"]["idle"] is False
        assert summary.dead_letters == {}
        assert final[0] == {"window_start": at(0), "n": 4}
    assert final[1:] == [{"window_start": at(10), "n": 1}, {"window_start": at(20), "n": 1}, {"window_start": at(30), "n": 1}]


# -- future events, SHOW WATERMARKS, the dead-letter stream ---------------------------------------------


def test_max_future_dead_letters_an_event_instead_of_jumping_the_watermark():
    session = make_session()
    sink(session, "SELECT window_start, count(*) AS n FROM TUMBLE(s, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end")
    now = clock_time(session)
    run = session.start()
    session.stream("s").push(
        [{"k": "a", "ts": at(1), "v": 1}, {"k": "a", "ts": now + timedelta(hours=2), "v": 2}, {"k": "a", "ts": at(2), "v": 3}]
    )
    run.pump()
    (row,) = session.execute("SHOW WATERMARKS")[0].table.to_pylist()
    assert row["source"] == "s" and row["future"] == 1 and row["late"] == 0
    assert row["watermark"] == at(1).isoformat()  # max(1, 2) - 1 s: the future row did not move it
    summary = run.finish()
    assert summary.dead_letters == {"future": 1}
    assert session.rows("out") == [{"window_start": at(0), "n": 2}]


def test_max_future_off_lets_the_clock_of_the_data_lead():
    session = make_session(options=", max_future = 'off'")
    session.stream("s").push(rows_at(("a", 1, 1), ("a", 86_400 * 30, 2), ("a", 2, 3))).finish()
    rows = session.run_query("SELECT window_start, count(*) AS n FROM TUMBLE(s, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end")
    assert by(rows, "window_start") == [{"window_start": at(0), "n": 1}, {"window_start": at(86_400 * 30), "n": 1}]
    assert session.last_summary.dead_letters == {"late": 1}


def test_show_watermarks_lists_watermark_lag_and_counts():
    session = make_session()
    sink(session, TUMBLE_COUNTS)
    assert session.execute("SHOW WATERMARKS")[0].table.to_pylist() == [
        {"source": "s", "watermark": None, "lag_s": None, "idle": False, "late": 0, "future": 0}
    ]
    run = session.start()
    session.stream("s").push(rows_at(("a", 20, 1), ("a", 3, 1), ("a", 4, 1)))
    run.pump()
    (row,) = session.execute("SHOW WATERMARKS")[0].table.to_pylist()
    assert row["watermark"] == at(19).isoformat()
    assert row["late"] == 2 and row["future"] == 0 and row["idle"] is False
    assert row["lag_s"] == pytest.approx((clock_time(session) - at(19)).total_seconds(), abs=1.0)
    run.finish()


def test_the_dead_letter_stream_is_queryable_and_can_be_forwarded(tmp_path):
    session = make_session(tmp_path)
    sink(session, TUMBLE_COUNTS)
    sink(session, "SELECT reason, count(*) AS n FROM sqlstream_dead_letter GROUP BY reason", name="reasons")
    session.execute(f"CREATE SINK forward FROM sqlstream_dead_letter WITH (connector = 'file', path = '{tmp_path / 'dl.jsonl'}', format = 'json')")
    session.stream("s").push(rows_at(("a", 20, 1), ("a", 3, 2), ("b", 4, 3), ("a", 30, 4))).finish()
    session.run()
    assert session.rows("reasons") == [{"reason": "late", "n": 2}]
    forwarded = [json.loads(line) for line in (tmp_path / "dl.jsonl").read_text().splitlines()]
    assert [(d["source"], d["reason"], json.loads(d["raw"])["v"]) for d in forwarded] == [("s", "late", 2), ("s", "late", 3)]


# -- bounded inputs, views, long forms --------------------------------------------------------------------


def test_end_of_a_bounded_file_flushes_every_window(tmp_path):
    rng = np.random.default_rng(5)
    times = np.sort(rng.uniform(0, 120, 600)) - rng.uniform(0, 1, 600) * (rng.random(600) < 0.3)
    lines = [json.dumps({"k": f"k{rng.integers(0, 3)}", "ts": at(t).isoformat(), "v": int(rng.integers(0, 9))}) for t in times]
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")
    session = TestSession(base_dir=str(tmp_path))
    session.execute("""CREATE SOURCE f (k VARCHAR, ts TIMESTAMP, v BIGINT, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
                       WITH (connector = 'file', path = 'events.jsonl', format = 'json')""")
    data = duckdb.read_json(str(tmp_path / "events.jsonl"), columns={"k": "VARCHAR", "ts": "TIMESTAMP", "v": "BIGINT"})  # noqa: F841 - read by the SQL below
    queries = {
        "SELECT window_start, window_end, k, count(*) AS n, sum(v) AS total FROM TUMBLE(f, ts, INTERVAL '7' SECOND) GROUP BY window_start, window_end, k":
            """SELECT time_bucket(INTERVAL 7 SECOND, ts, TIMESTAMP '1970-01-01') AS window_start,
                      time_bucket(INTERVAL 7 SECOND, ts, TIMESTAMP '1970-01-01') + INTERVAL 7 SECOND AS window_end,
                      k, count(*) AS n, sum(v) AS total FROM data GROUP BY ALL""",
        "SELECT window_start, window_end, k, count(*) AS n, sum(v) AS total FROM SESSION(f, ts, INTERVAL '2' SECOND) GROUP BY window_start, window_end, k":
            """SELECT min(ts) AS window_start, max(ts) + INTERVAL 2 SECOND AS window_end, k, count(*) AS n, sum(v) AS total
               FROM (SELECT *, sum(brk) OVER (PARTITION BY k ORDER BY ts ROWS UNBOUNDED PRECEDING) AS sid
                     FROM (SELECT *, CASE WHEN ts - lag(ts) OVER (PARTITION BY k ORDER BY ts) < INTERVAL 2 SECOND
                                          THEN 0 ELSE 1 END AS brk FROM data))
               GROUP BY k, sid""",
    }
    for ours, theirs in queries.items():
        got = session.run_query(ours)
        assert session.last_summary.dead_letters == {}
        expected = duckdb.sql(theirs).to_arrow_table().to_pylist()
        assert by(got, "window_start", "k") == by(expected, "window_start", "k")
        last_event = at(float(times.max()))
        assert max(r["window_end"] for r in got) > last_event  # windows after the last watermark flushed too


def test_windows_over_views_follow_their_event_time_column():
    session = make_session()
    session.execute("CREATE VIEW big AS SELECT k, ts AS event_time, v * 10 AS v10 FROM s WHERE v > 1")
    session.stream("s").push(rows_at(("a", 1, 1), ("a", 2, 2), ("b", 3, 3), ("a", 11, 4), ("a", 25, 5))).finish()
    rows = session.run_query("""SELECT window_start, count(*) AS n, sum(v10) AS total
                                FROM TUMBLE(big, event_time, INTERVAL '10' SECOND) GROUP BY window_start, window_end""")
    assert by(rows, "window_start") == [
        {"window_start": at(0), "n": 2, "total": 50},
        {"window_start": at(10), "n": 1, "total": 40},
        {"window_start": at(20), "n": 1, "total": 50},
    ]


LONG_FORMS = [
    ("TUMBLE(s, ts, INTERVAL '10' SECOND)", "TABLE(TUMBLE(TABLE s, DESCRIPTOR(ts), INTERVAL '10' SECOND))", ""),
    ("HOP(s, ts, INTERVAL '5' SECOND, INTERVAL '15' SECOND)",
     "TABLE(HOP(TABLE s, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '15' SECOND))", ""),
    ("CUMULATE(s, ts, INTERVAL '5' SECOND, INTERVAL '20' SECOND)",
     "TABLE(CUMULATE(TABLE s, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '20' SECOND))", ""),
    ("SESSION(s, ts, INTERVAL '3' SECOND)", "TABLE(SESSION(TABLE s PARTITION BY k, DESCRIPTOR(ts), INTERVAL '3' SECOND))", "k"),
]


@pytest.mark.parametrize("short,long,partition", LONG_FORMS, ids=["tumble", "hop", "cumulate", "session"])
def test_flink_long_forms_equal_the_short_forms(short, long, partition):
    data = _unwindowed_data(400)
    results = []
    for window, group in ((short, ", k"), (long, "" if partition else ", k")):
        session = make_session()
        session.stream("s").push(data, batch_size=50).finish()
        results.append(session.run_query(
            f"SELECT window_start, window_end, k, count(*) AS n FROM {window} GROUP BY window_start, window_end{group}"
        ))
    assert len(results[0]) >= 5
    assert by(results[0], "window_start", "window_end", "k") == by(results[1], "window_start", "window_end", "k")


def test_window_tvf_without_aggregation_lists_each_row_per_window():
    session = make_session()
    session.stream("s").push(rows_at(("a", 1, 1), ("a", 6, 2))).finish()
    rows = session.run_query("SELECT v, window_start, window_end FROM HOP(s, ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND)")
    assert by(rows, "v", "window_start") == [
        {"v": 1, "window_start": at(-5), "window_end": at(5)},
        {"v": 1, "window_start": at(0), "window_end": at(10)},
        {"v": 2, "window_start": at(0), "window_end": at(10)},
        {"v": 2, "window_start": at(5), "window_end": at(15)},
    ]


# -- errors: file:line:col, a message and a hint --------------------------------------------------------


WINDOWED = "FROM TUMBLE(s, ts, INTERVAL '10' SECOND)"
ERRORS = [
    # (query, the text the error points at, message, hint)
    ("SELECT count(*) FROM TUMBLE(s, tss, INTERVAL '1' SECOND) GROUP BY window_start, window_end",
     "tss", "unknown time column 'tss' in TUMBLE", "did you mean 'ts'?"),
    ("SELECT count(*) FROM TUMBLE(s, v, INTERVAL '1' SECOND) GROUP BY window_start, window_end",
     "v,", "TUMBLE needs an event-time column with a watermark; 'v' is not one", "the event-time column of this input is 'ts'"),
    ("SELECT count(*) FROM TUMBLE(t, ts, INTERVAL '1' SECOND) GROUP BY window_start, window_end",
     "ts,", "TUMBLE needs an event-time column with a watermark; 'ts' is not one",
     "declare one on the source: WATERMARK FOR ts AS ts - INTERVAL '5' SECOND"),
    (f"SELECT k, count(*) {WINDOWED} GROUP BY k",
     "k WITH", "an aggregation over a window function must GROUP BY window_start, window_end", "GROUP BY window_start, window_end, <keys>"),
    ("SELECT count(*) FROM HOP(s, ts, INTERVAL '10' SECOND, INTERVAL '5' SECOND) GROUP BY window_start, window_end",
     "'5'", "HOP size must be at least its slide", "HOP(src, ts, slide, size): the slide comes first"),
    ("SELECT count(*) FROM CUMULATE(s, ts, INTERVAL '3' SECOND, INTERVAL '10' SECOND) GROUP BY window_start, window_end",
     "CUMULATE", "CUMULATE max_size must be a multiple of step", None),
    ("SELECT count(*) FROM HOP(s, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end",
     "HOP", "HOP takes 2 interval argument(s)", "HOP(src, ts, slide, size)"),
    ("SELECT count(*) FROM TUMBLE(s, ts, INTERVAL '0' SECOND) GROUP BY window_start, window_end",
     "TUMBLE", "TUMBLE sizes must be positive", None),
    (f"SELECT count(*) {WINDOWED} WHERE window_start > TIMESTAMP '2023-01-01' GROUP BY window_start, window_end",
     "window_start >", "window_start is only available after the window aggregation", "filter windows in HAVING"),
    ("SELECT k, window_start FROM SESSION(s, ts, INTERVAL '1' SECOND)",
     "k, window_start", "SESSION windows are supported in aggregations only", "GROUP BY window_start, window_end, <keys>"),
    # Top-N / deduplication over a stream needs the bound of the query around it
    ("SELECT k, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts) AS rn FROM s",
     "ROW_NUMBER", "ROW_NUMBER() over a stream needs a bound in the query directly around it: WHERE rn <= N",
     "Top-N keeps N rows per key (state bounded by keys × N)"),
    (f"SELECT window_start, k, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY v) AS rn {WINDOWED}",
     "ROW_NUMBER", "ROW_NUMBER() over a stream needs a bound in the query directly around it: WHERE rn <= N", None),
    ("SELECT k, count(*) FROM s ORDER BY k", "k WITH", "ORDER BY is not supported on a stream",
     "for 'top N per window' use ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY ...) <= N"),
    ("SELECT k, ROW_NUMBER() OVER (ORDER BY count(*)) AS rn FROM s GROUP BY k",
     "ROW_NUMBER", "window functions (OVER) need PARTITION BY window_start, window_end over a windowed aggregation", None),
    (f"SELECT k, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY count(*)) AS rn {WINDOWED} "
     "GROUP BY window_start, window_end, k EMIT EVERY INTERVAL '1' SECOND",
     "ROW_NUMBER", "window functions (OVER) need PARTITION BY window_start, window_end over a windowed aggregation", None),
    (f"SELECT window_start, median(v) {WINDOWED} GROUP BY window_start, window_end",
     "median", "is not supported in streaming aggregations", "supported: count, count(DISTINCT), sum, avg"),
    (f"SELECT window_start, sum(DISTINCT v) {WINDOWED} GROUP BY window_start, window_end",
     "sum(", "SUM(DISTINCT ...) is not supported", "COUNT(DISTINCT x) is"),
    (f"SELECT window_start, sum(k) {WINDOWED} GROUP BY window_start, window_end",
     None, "sum() needs a numeric argument, got string", None),
    (f"SELECT window_start, v, count(*) {WINDOWED} GROUP BY window_start, window_end",
     "v, count", "column 'v' must appear in GROUP BY or be used in an aggregate function", None),
    ("SELECT k, v FROM s EMIT EVERY INTERVAL '1' SECOND", "EMIT", "EMIT applies to aggregations only", None),
    ("SELECT k, count(*) AS n FROM (SELECT k, count(*) AS c FROM s GROUP BY k) GROUP BY k EMIT EVERY INTERVAL '1' SECOND",
     "EMIT", "EMIT over an updating input is not supported", None),
    (f"SELECT window_start, count(*) {WINDOWED} GROUP BY window_start, window_end EMIT EVERY INTERVAL '0' SECOND",
     "EMIT", "EMIT EVERY needs a positive interval", None),
]


@pytest.mark.parametrize("sql,where,message,hint", ERRORS)
def test_window_planning_errors_point_at_the_sql(sql, where, message, hint):
    session = make_session()
    session.execute("CREATE SOURCE t (k VARCHAR, ts TIMESTAMP) WITH (connector = 'memory')")
    statement = f"CREATE SINK out AS {sql} WITH (connector = 'memory')"
    with pytest.raises(SqlStreamError) as caught:
        session.execute(statement, path="pipe.sql")
    text = str(caught.value)
    column = statement.index(where) + 1 if where is not None else None
    prefix = f"pipe.sql:1:{column}: error: " if column else "pipe.sql:1:"
    assert text.startswith(prefix), text
    assert message in text.splitlines()[0], text
    if hint is not None:
        assert f"hint: {hint}" in text, text


def test_window_functions_next_to_group_by_run_on_whole_windows():
    """Ranks and shares per window computed in the aggregating SELECT itself."""
    data = _unwindowed_data(2_000)
    session = make_session()
    session.stream("s").push(data, batch_size=64).finish()
    got = session.run_query(
        f"""SELECT window_start, k, count(*) AS n,
                   ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY count(*) DESC, k) AS rn,
                   sum(v) * 1.0 / sum(sum(v)) OVER (PARTITION BY window_start, window_end) AS share
            {WINDOWED} GROUP BY window_start, window_end, k"""
    )
    expected = duckdb.sql(
        """SELECT ws AS window_start, k, n, ROW_NUMBER() OVER (PARTITION BY ws ORDER BY n DESC, k) AS rn,
                  sv * 1.0 / sum(sv) OVER (PARTITION BY ws) AS share
           FROM (SELECT time_bucket(INTERVAL 10 SECOND, ts) AS ws, k, count(*) AS n, sum(v) AS sv FROM data GROUP BY ALL)"""
    ).to_arrow_table().to_pylist()
    assert len(got) == len(expected) > 50
    for a, b in zip(by(got, "window_start", "rn"), by(expected, "window_start", "rn"), strict=True):
        assert {**a, "share": None} == {**b, "share": None}
        assert a["share"] == pytest.approx(b["share"], rel=1e-9)


def test_top_n_over_a_union_of_windowed_results_is_an_updating_top_n():
    """Rows of one window come from two inputs, so they are not emitted together: the
    ranking is the Top-N over an unbounded stream (an updating result) instead of a
    ranking per emitted window, and folds to the top 3 per window of both inputs.
    (This form was refused before Top-N over streams existed.)"""
    data = _unwindowed_data(2_000)
    session = make_session()
    session.stream("s").push(data, batch_size=64).finish()
    per_window = f"SELECT window_start, window_end, k, count(*) AS n {WINDOWED} GROUP BY window_start, window_end, k"
    got = session.run_query(
        f"""SELECT * FROM (SELECT window_start, k, n, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY n DESC, k) AS rn
            FROM ({per_window} UNION ALL {per_window})) WHERE rn <= 3"""
    )
    expected = duckdb.sql(
        """SELECT * FROM (SELECT ws AS window_start, k, n, ROW_NUMBER() OVER (PARTITION BY ws ORDER BY n DESC, k) AS rn
           FROM (SELECT ws, k, n FROM (SELECT time_bucket(INTERVAL 10 SECOND, ts) AS ws, k, count(*) AS n FROM data GROUP BY ALL)
                 CROSS JOIN range(2))) WHERE rn <= 3"""
    ).to_arrow_table().to_pylist()
    assert len(got) == len(expected) > 50
    assert by(got, "window_start", "rn") == by(expected, "window_start", "rn")


@pytest.mark.parametrize(
    "clause,message,hint",
    [
        ("WATERMARK FOR v AS v - INTERVAL '1' SECOND) WITH (connector = 'memory'",
         "WATERMARK column 'v' must be a TIMESTAMP, not BIGINT", None),
        ("WATERMARK FOR tss AS tss - INTERVAL '1' SECOND) WITH (connector = 'memory'",
         "WATERMARK FOR names unknown column 'tss'", "did you mean 'ts'?"),
        ("WATERMARK FOR ts AS ts + INTERVAL '1' SECOND) WITH (connector = 'memory'",
         "unsupported watermark expression", "write WATERMARK FOR ts AS ts - INTERVAL '5' SECOND"),
        ("WATERMARK FOR ts AS ts) WITH (connector = 'memory', max_future = 'soon'",
         "option 'max_future' = 'soon' is invalid for connector 'memory': 'soon' is not a duration",
         "events this far ahead of the wall clock are dead-lettered ('off' disables)"),
        ("WATERMARK FOR ts AS ts) WITH (connector = 'memory', max_future = '0s'",
         "option 'max_future' = '0s' is invalid for connector 'memory': expected a positive duration", None),
        ("WATERMARK FOR ts AS ts) WITH (connector = 'memory', idle_timeout = '0s'",
         "option 'idle_timeout' = '0s' is invalid for connector 'memory': expected a positive duration", None),
        ("WATERMARK FOR ts AS ts) WITH (connector = 'memory', idle_timeout = 'soon'",
         "option 'idle_timeout' = 'soon' is invalid", "a quiet source stops holding the watermark back"),
    ],
)
def test_watermark_and_time_option_errors(clause, message, hint):
    session = TestSession()
    with pytest.raises(SqlStreamError) as caught:
        session.execute(f"CREATE SOURCE e (v BIGINT, ts TIMESTAMP, {clause})", path="src.sql")
    text = str(caught.value)
    assert text.startswith("src.sql:1:") and f"error: {message}" in text.splitlines()[0], text
    if hint is not None:
        assert f"hint: {hint}" in text, text


def test_cli_check_reports_a_window_error_with_file_line_and_column(tmp_path, capsys):
    from sqlstream.cli.main import main

    pipeline = tmp_path / "windows.sql"
    pipeline.write_text(
        "CREATE SOURCE s (k VARCHAR, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)\n"
        "  WITH (connector = 'generator', max_rows = 10);\n"
        "SELECT k, count(*) AS n\n"
        "FROM HOP(s, ts, INTERVAL '10' SECOND, INTERVAL '5' SECOND)\n"
        "GROUP BY window_start, window_end, k;\n"
    )
    assert main(["check", str(pipeline), "--no-udfs"]) == 2  # not the working directory's udfs/ (nor its listing)
    err = capsys.readouterr().err
    assert err.startswith(f"{pipeline}:4:48: error: HOP size must be at least its slide"), err
    assert "hint: HOP(src, ts, slide, size): the slide comes first" in err
    assert "Traceback" not in err
