"""Regressions found in review: each once gave a wrong result or lost rows silently."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest

from sqlstream.testing import TestSession

BASE_US = 1_700_000_000_000_000
SOURCE = ("CREATE SOURCE s (k VARCHAR, ts TIMESTAMP, v DOUBLE, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) "
          "WITH (connector = 'memory')")


def _events(n: int = 400, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    ts = BASE_US + np.arange(n) * 20_000 - rng.integers(0, 900_000, n)
    return pa.table({"k": pa.array(rng.integers(0, 3, n)).cast(pa.string()),
                     "ts": pa.array(ts, pa.timestamp("us")), "v": rng.random(n) * 3})


def _run(sql: str, batch_size: int, *, view: str | None = None, fold: bool = True) -> list[dict]:
    session = TestSession()
    session.execute(SOURCE)
    if view:
        session.execute(view)
    session.stream("s").push(_events(), batch_size=batch_size).finish()
    return session.run_query(sql, fold=fold)


def _key(rows):
    return sorted(tuple(sorted(r.items())) for r in rows)


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_a_window_tvf_in_a_subquery_or_view_aggregates_as_final_windows(batch_size):
    direct = ("SELECT window_start, window_end, count(*) AS c FROM TUMBLE(s, ts, INTERVAL '1' SECOND) "
              "WHERE v > 1 GROUP BY window_start, window_end")
    expected = _run(direct, 1000, fold=False)
    sub = ("SELECT window_start, window_end, count(*) AS c FROM "
           "(SELECT * FROM TUMBLE(s, ts, INTERVAL '1' SECOND) WHERE v > 1) GROUP BY window_start, window_end")
    via_view = "SELECT window_start, window_end, count(*) AS c FROM w WHERE v > 1 GROUP BY window_start, window_end"
    got_sub = _run(sub, batch_size, fold=False)
    got_view = _run(via_view, batch_size, view="CREATE VIEW w AS SELECT * FROM TUMBLE(s, ts, INTERVAL '1' SECOND)", fold=False)
    # final per window: no changelog, the same rows as the direct form
    assert all("__op" not in r for r in got_sub + got_view)
    assert _key(got_sub) == _key(expected) == _key(got_view)


@pytest.mark.parametrize("batch_size", [1, 50, 1000])
def test_count_star_over_an_updating_result(batch_size):
    rows = _run("SELECT count(*) AS c FROM (SELECT k, count(*) AS n FROM s GROUP BY k)", batch_size)
    assert rows == [{"c": 3}]


def test_skipped_sql_errors_are_counted(tmp_path):
    session = TestSession()
    session.execute("SET on_error = 'skip'")
    session.execute("CREATE SOURCE n (v BIGINT) WITH (connector = 'memory')")
    session.stream("n").push([{"v": 1}, {"v": 0}, {"v": 2}]).finish()
    rows = session.run_query("SELECT 10 / v AS q FROM n")
    assert sorted(r["q"] for r in rows) == [5, 10]
    assert session.last_summary.dead_letters == {}
    assert session.last_summary.skipped == {"type": 1}


# -- acknowledgements: only once every derived row is durable -----------------------------------

import pyarrow.parquet as pq  # noqa: E402

from sqlstream.connectors import RunContext, SourceBatch, SourceConnector, SourceReader, register_source  # noqa: E402


class _AckingReader(SourceReader):
    def __init__(self, feed: dict):
        self.feed = feed

    def poll(self):
        if not self.feed["batches"]:
            return None
        index, batch = self.feed["batches"].pop(0)
        return SourceBatch(batch, ack=lambda: self.feed["acked"].append(index), raw_count=batch.num_rows)

    @property
    def exhausted(self) -> bool:
        return self.feed["finished"] and not self.feed["batches"]


@register_source
class _AckingSource(SourceConnector):
    """Rows with an ack per batch, like a JetStream source (test only)."""

    name = "test_acking"

    def open(self, ctx: RunContext) -> SourceReader:
        return _AckingReader(ctx.memory_streams["acking"])


def _pump(run, session) -> None:
    while session.feed["batches"]:
        run.driver.step()
    run.driver.step()


class _AckingSession(TestSession):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.feed = {"batches": [], "acked": [], "finished": False}

    def _run_context(self, base_dir):
        ctx = super()._run_context(base_dir)
        return replace(ctx, memory_streams={**ctx.memory_streams, "acking": self.feed})


def test_emit_every_changes_hold_acks_until_they_are_written():
    session = _AckingSession()
    session.execute("CREATE SOURCE a (k VARCHAR, v BIGINT) WITH (connector = 'test_acking')")
    session.execute("CREATE SINK totals AS SELECT k, sum(v) AS s FROM a GROUP BY k EMIT EVERY INTERVAL '1' SECOND "
                    "WITH (connector = 'memory')")
    run = session.start()
    session.feed["batches"].append((0, pa.record_batch({"k": ["x", "y"], "v": [1, 2]})))
    _pump(run, session)
    assert session.rows("totals") == [] and session.feed["acked"] == []  # buffered, not written
    run.advance(1.5)
    _pump(run, session)
    assert sorted(r["s"] for r in session.rows("totals")) == [1, 2]
    assert session.feed["acked"] == [0]
    session.feed["finished"] = True
    run.finish()


def test_parquet_sink_acks_rows_only_once_their_part_file_is_committed(tmp_path):
    session = _AckingSession(base_dir=str(tmp_path))
    session.execute("CREATE SOURCE a (k VARCHAR, v BIGINT) WITH (connector = 'test_acking')")
    session.execute("CREATE SINK out AS SELECT k, v FROM a "
                    "WITH (connector = 'file', path = 'out', format = 'parquet', rows_per_file = 4)")
    run = session.start()
    for i in range(3):
        session.feed["batches"].append((i, pa.record_batch({"k": ["x", "y"], "v": [2 * i, 2 * i + 1]})))
        _pump(run, session)
        committed = sum(pq.read_table(p).num_rows for p in sorted((tmp_path / "out").glob("part-*.parquet")))
        # acked batches are exactly those whose rows are in committed part files
        assert 2 * len(session.feed["acked"]) <= committed
        assert session.feed["acked"] == list(range(committed // 2))
    session.feed["finished"] = True
    run.finish()
    assert session.feed["acked"] == [0, 1, 2]


# -- planning errors instead of runtime failures --------------------------------------------

from sqlstream.errors import ConnectorError, SqlStreamError  # noqa: E402

NESTED_ERRORS = [
    ("SELECT min(v) FROM s", "min(v)", "min() over a value of type fixed_size_list"),
    ("SELECT count(DISTINCT v) FROM s", "count(DISTINCT", "count(DISTINCT) over a value of type fixed_size_list"),
    ("SELECT window_start, last_value(v) FROM TUMBLE(s, ts, INTERVAL '1' SECOND) GROUP BY window_start, window_end",
     "window_start, last", "last_value() over a value of type fixed_size_list"),
    ("SELECT max(st) FROM s", "max(st)", "max() over a value of type struct"),
    ("SELECT st, count(*) FROM s GROUP BY st", "st\n", "GROUP BY on a value of type struct"),
    ("SELECT DISTINCT v FROM s", "v FROM", "SELECT DISTINCT on a value of type fixed_size_list"),
    ("SELECT * FROM s LIMIT 1.5", "1.5", "LIMIT needs a whole number of rows, 0 or more"),
    ("SELECT * FROM s LIMIT -1", "1", "LIMIT needs a whole number of rows, 0 or more"),
    ("SELECT * FROM s TABLESAMPLE (10 PERCENT)", "10", "TABLESAMPLE is not supported on a stream"),
    ("SELECT y FROM s AS x(y)", "x(y)", "column names in a FROM alias (AS x(a, b)) are not supported"),
    ("SELECT count(*) FROM s GROUP BY ROLLUP (st)", "st)", "GROUP BY on a value of type struct"),
    ("SELECT count(*) FROM s GROUP BY v1 WITH ROLLUP", "v1 WITH", "GROUP BY ... WITH ROLLUP is not supported"),
    # IN (SELECT ...) as a conjunct of WHERE is a semi join (tests/differential/test_semi_joins.py); elsewhere:
    ("SELECT v, ts IN (SELECT ts FROM s) AS x FROM s", "ts FROM", "a subquery inside an expression is not supported"),
    ("SELECT v FROM s WHERE ts IN (SELECT ts FROM s) OR ts IS NULL", "ts IN",
     "IN/EXISTS subqueries are supported only as conjuncts of WHERE (not under OR or CASE)"),
    ("SELECT * FROM s FOR UPDATE", "*", "FOR UPDATE / FOR SHARE is not supported on a stream"),
    ("SELECT count(*) FROM s GROUP BY 1", "1\n", "GROUP BY position 1 refers to an aggregate (count)"),
]


@pytest.mark.parametrize("sql,where,message", NESTED_ERRORS)
def test_aggregating_arrays_or_structs_and_a_bad_limit_are_sql_errors(sql, where, message):
    session = TestSession()
    session.execute("CREATE SOURCE s (v FLOAT[2], st STRUCT<a INT>, ts TIMESTAMP(3), WATERMARK FOR ts AS ts) "
                    "WITH (connector = 'memory')")
    statement = f"CREATE SINK out AS {sql}\n WITH (connector = 'memory')"
    with pytest.raises(SqlStreamError) as caught:
        session.execute(statement, path="pipe.sql")
    assert str(caught.value).startswith(f"pipe.sql:1:{statement.rindex(where) + 1}: error: {message}")


def test_count_of_an_array_column_still_works():
    session = TestSession()
    session.execute("CREATE SOURCE s (v FLOAT[2]) WITH (connector = 'memory')")
    session.execute("CREATE SINK out AS SELECT count(v) AS n FROM s WITH (connector = 'memory')")
    session.stream("s").push(pa.table({"v": pa.array([[1.0, 2.0], None, [3.0, 4.0]], pa.list_(pa.float32(), 2))}))
    run = session.start()
    run.pump()
    run.finish()
    assert session.rows("out")[-1]["n"] == 2


@pytest.mark.parametrize("options,message", [
    ("fields.n.min = 1.5", "fields.n.min = 1.5 is not a whole number (column 'n' is int64)"),
    ("fields.x.max = 'high'", "option 'fields.x.max' = 'high' is invalid for connector 'generator': expected a number"),
    ("fields.n.min = 10, fields.n.max = 5", "fields.n.min (10) is greater than fields.n.max (5)"),
    ("fields.name.min = 1", "fields.name.min does not apply to column 'name' of type string"),
])
def test_generator_bounds_are_checked_at_create(options, message):
    session = TestSession()
    with pytest.raises(ConnectorError) as caught:
        session.execute(f"CREATE SOURCE g (n BIGINT, x DOUBLE, name VARCHAR) WITH (connector = 'generator', {options})")
    assert message in caught.value.message


def test_group_by_empty_and_fetch_first_are_accepted():
    session = TestSession()
    session.execute("CREATE SOURCE s (k VARCHAR) WITH (connector = 'memory')")
    session.execute("CREATE SINK total AS SELECT count(*) AS n FROM s GROUP BY () WITH (connector = 'memory')")
    session.execute("CREATE SINK first AS SELECT k FROM s FETCH FIRST 2 ROWS ONLY WITH (connector = 'memory')")
    session.stream("s").push([{"k": "a"}, {"k": "b"}, {"k": "c"}])
    run = session.start()
    run.pump()
    run.finish()
    assert session.rows("total")[-1]["n"] == 3
    assert session.rows("first") == [{"k": "a"}, {"k": "b"}]


def test_a_group_whose_null_result_did_not_change_emits_nothing():
    session = TestSession()
    session.execute("CREATE SOURCE s (k VARCHAR, v BIGINT) WITH (connector = 'memory')")
    session.execute("CREATE SINK out AS SELECT k, max(v) AS m FROM s GROUP BY k WITH (connector = 'memory')")
    run = session.start()
    for rows in ([{"k": "a", "v": None}], [{"k": "a", "v": None}], [{"k": "a", "v": 3}]):
        session.stream("s").push(rows)
        run.pump()
    run.finish()
    assert [(r["__op"], r["m"]) for r in session.rows("out", fold=False)] == [("+I", None), ("-U", None), ("+U", 3)]
