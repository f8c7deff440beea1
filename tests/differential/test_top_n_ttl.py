"""``top_n_state_ttl``: Top-N (and keep-last) forget a key once the watermark passes
its latest row's event time + the TTL; a later row of the key starts a fresh ranking.

Deterministic: the watermark moves only with the rows' event times (and explicit
``advance`` calls on the operator), never with a clock.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from sqlstream.changelog import fold_changelog
from sqlstream.errors import SqlStreamError
from sqlstream.operators.top_n import TopNOperator
from sqlstream.testing import TestSession

SOURCE = ("CREATE SOURCE s (k BIGINT, v BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) "
          "WITH (connector = 'memory');")
TOP2 = "SELECT k, v, rn FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) AS rn FROM s) WHERE rn <= 2"
BASE = dt.datetime(2023, 1, 1)


def _rows(*rows) -> list[dict]:
    return [{"k": k, "v": v, "ts": BASE + dt.timedelta(seconds=t)} for k, v, t in rows]


# key 1 ranks 9 and 8; key 2's rows move event time on by 30 s; then key 1 comes back with 3
INPUT = _rows((1, 9, 0), (1, 8, 1), (2, 5, 10), (2, 6, 20), (2, 7, 31), (1, 3, 32))


def run(setup: str) -> tuple[list[dict], list[dict], TestSession]:
    session = TestSession()
    session.execute(SOURCE + setup)
    feed = session.stream("s")
    for row in INPUT:
        feed.push([row])
    feed.finish()
    changes = session.run_query(TOP2, fold=False)
    return changes, fold_changelog(changes), session


def _table(rows: list[dict]) -> list[tuple]:
    return sorted((r["k"], r["v"], r["rn"]) for r in rows)


def test_without_a_ttl_a_key_keeps_its_ranking():
    _, folded, _ = run("")
    assert _table(folded) == [(1, 8, 2), (1, 9, 1), (2, 6, 2), (2, 7, 1)]


def test_with_a_ttl_a_quiet_key_is_forgotten_and_ranks_afresh():
    changes, folded, _ = run("SET top_n_state_ttl = '10s';")
    # key 1's last row was at 1 s: the watermark (30 s after key 2's row at 31 s) passed 1 s + 10 s,
    # so its 3 is ranked alone (+I at rank 1); the rows emitted before stand (no retraction)
    assert {"k": 1, "v": 3, "rn": 1, "__op": "+I"} in changes
    assert not any(r["k"] == 1 and r["__op"] in ("-U", "-D") for r in changes)
    assert _table(folded) == [(1, 3, 1), (1, 8, 2), (1, 9, 1), (2, 6, 2), (2, 7, 1)]


def test_the_operator_forgets_keys_by_watermark_and_counts_them():
    schema = pa.schema([("__op", pa.string()), ("k", pa.int64()), ("v", pa.int64()), ("rn", pa.int64())])
    op = TopNOperator(["k"], [("v", True, False)], 1, schema, "rn", ttl_us=10, time_column="t")
    out = []
    op.emit = lambda b: out.extend(b.to_pylist())
    op.on_batch(pa.record_batch({"k": [1, 2], "v": [5, 5], "t": pa.array([0, 8], pa.timestamp("us"))}), 0)
    op.advance(10)  # key 1 (last row at 0) is 10 µs old: not yet past the TTL
    assert op.state_rows() == 4 and op.expired_keys == 0
    op.advance(11)
    assert op.expired_keys == 1 and op.top.rows == 1 and op.last_seen.rows == 1
    out.clear()
    op.on_batch(pa.record_batch({"k": [1, 2], "v": [1, 1], "t": pa.array([20, 20], pa.timestamp("us"))}), 0)
    assert out == [{"__op": "+I", "k": 1, "v": 1, "rn": 1}]  # key 2 still holds its 5
    fresh = TopNOperator(["k"], [("v", True, False)], 1, schema, "rn", ttl_us=10, time_column="t")
    fresh.restore(op.snapshot())
    fresh.advance(31)
    assert fresh.expired_keys == 3 and fresh.state_rows() == 0


def test_a_ttl_needs_an_event_time_column():
    session = TestSession()
    session.execute("CREATE SOURCE p (k BIGINT, v BIGINT) WITH (connector = 'memory'); SET top_n_state_ttl = '1h';")
    with pytest.raises(SqlStreamError, match="top_n_state_ttl needs an input with an event-time column") as info:
        session.execute(TOP2.replace("FROM s", "FROM p"))
    assert info.value.location is not None and "WATERMARK FOR" in info.value.hint


def test_explain_says_how_keys_are_bounded():
    session = TestSession()
    session.execute(SOURCE)
    assert "(unbounded keys (SET top_n_state_ttl = '1h' bounds them))" in session.explain(f"EXPLAIN {TOP2}")
    session.execute("SET top_n_state_ttl = '90s'")
    assert "keys forgotten 90s after their last row (top_n_state_ttl)" in session.explain(f"EXPLAIN {TOP2}")
