"""``QueryResult`` (``Session.query`` / ``Session.sql``): still an iterator of record
batches, and gathered into final tables, changes, pandas/polars frames and tuples;
``head``/``take`` stop an unbounded query; ``source_from``/``sink_to`` move data
between Python and SQL; a session used as a context manager stops its queries."""

from __future__ import annotations

import itertools
import queue
import threading

import pyarrow as pa
import pytest

from sqlstream import QueryResult, Session, SqlAnalysisError

ROWS = [{"k": "a", "v": 1}, {"k": "b", "v": 2}, {"k": "a", "v": 3}]


@pytest.fixture
def session():
    with Session(dead_letter_path="off") as s:
        s.source_from(ROWS, name="t")
        yield s


def _endless():
    for i in itertools.count():
        yield {"i": i}


def test_a_result_is_still_an_iterator_of_record_batches(session):
    result = session.query("SELECT k, v * 10 AS w FROM t")
    assert isinstance(result, QueryResult)
    batches = list(result)
    assert all(isinstance(b, pa.RecordBatch) for b in batches)
    assert [row for b in batches for row in b.to_pylist()] == [
        {"k": "a", "w": 10}, {"k": "b", "w": 20}, {"k": "a", "w": 30}]
    assert result.done and list(result) == []


def test_final_table_folds_the_changelog_and_hides_op(session):
    result = session.sql("SELECT k, sum(v) AS total FROM t GROUP BY k")
    assert result.updating and result.schema == pa.schema([("k", pa.string()), ("total", pa.int64())])
    table = result.to_arrow()
    assert table.schema == result.schema
    assert table.to_pylist() == [{"k": "a", "total": 4}, {"k": "b", "total": 2}]


def test_changes_keep_op_and_every_change(tmp_path):
    with Session(dead_letter_path="off") as s:
        s.source_from(ROWS, name="t")
        s.streams["t"].items.clear()  # the same rows, one per batch, so that updates show
        for row in ROWS:
            s.streams["t"].push([row])
        changes = s.sql("SELECT k, sum(v) AS total FROM t GROUP BY k").to_arrow(changes=True)
    assert changes.schema.names == ["__op", "k", "total"]
    assert changes.to_pylist() == [
        {"__op": "+I", "k": "a", "total": 1},
        {"__op": "+I", "k": "b", "total": 2},
        {"__op": "-U", "k": "a", "total": 1},
        {"__op": "+U", "k": "a", "total": 4},
    ]


def test_empty_results_are_empty_tables_with_the_schema(session):
    plain = session.sql("SELECT k, v FROM t WHERE v > 100").to_arrow()
    assert plain.num_rows == 0 and plain.schema == pa.schema([("k", pa.string()), ("v", pa.int64())])
    folded = session.sql("SELECT k, count(*) AS n FROM t WHERE v > 100 GROUP BY k").to_arrow()
    assert folded.num_rows == 0 and folded.schema == pa.schema([("k", pa.string()), ("n", pa.int64())])
    assert session.sql("SELECT k FROM t WHERE v > 100").fetchall() == []


def test_fetchall_gives_tuples(session):
    assert session.sql("SELECT k, v FROM t WHERE v >= 2").fetchall() == [("b", 2), ("a", 3)]


def test_a_query_without_from_answers_one_row(session):
    assert session.sql("SELECT 40 + 2 AS answer, 'x' AS s").fetchall() == [(42, "x")]
    assert session.sql("SELECT count(*) AS n").fetchall() == [(1,)]


def test_to_pandas(session):
    pandas = pytest.importorskip("pandas")
    frame = session.sql("SELECT k, v FROM t").to_pandas()
    assert isinstance(frame, pandas.DataFrame)
    assert frame.to_dict("records") == ROWS


def test_to_polars(session):
    polars = pytest.importorskip("polars")
    frame = session.sql("SELECT k, sum(v) AS total FROM t GROUP BY k").to_polars()
    assert isinstance(frame, polars.DataFrame)
    assert frame.to_dicts() == [{"k": "a", "total": 4}, {"k": "b", "total": 2}]


def test_head_stops_an_endless_generator():
    with Session(dead_letter_path="off") as s:
        s.source_from(_endless, name="g")
        result = s.sql("SELECT i * 2 AS d FROM g")
        assert result.head(5).to_pydict() == {"d": [0, 2, 4, 6, 8]}
        assert result.done
        # a function gives each query a fresh iterator
        assert s.sql("SELECT i FROM g").head(2).to_pydict() == {"i": [0, 1]}


def test_take_runs_an_unbounded_query_for_a_while_then_stops():
    with Session(dead_letter_path="off") as s:
        s.execute("""CREATE SOURCE g (id BIGINT) WITH (connector = 'generator', rows_per_second = 1000,
                                                    fields.id.kind = 'sequence')""")
        result = s.sql("SELECT count(*) AS n FROM g")
        table = result.take(seconds=1.5)
        assert result.done
        (n,) = table.column("n").to_pylist()
        assert n > 0


def test_head_of_an_updating_query_returns_once_it_has_n_rows():
    with Session(dead_letter_path="off") as s:
        s.source_from(_endless, name="g")
        table = s.sql("SELECT i % 3 AS k, count(*) AS n FROM g GROUP BY i % 3").head(3)
        assert sorted(table.column("k").to_pylist()) == [0, 1, 2]


def test_source_from_tables_batches_pandas_and_a_watermark():
    pandas = pytest.importorskip("pandas")
    with Session(dead_letter_path="off") as s:
        table = pa.table({"x": [1, 2]})
        s.source_from(table, name="a")
        s.source_from([table.to_batches()[0], table.to_batches()[0]], name="b")
        frame = pandas.DataFrame({"ts": pandas.to_datetime(["2024-01-01 00:00:00", "2024-01-01 00:00:05",
                                                            "2024-01-01 00:00:11"]), "v": [1, 2, 3]})
        s.source_from(frame, name="events", watermark="ts", delay="1s")
        assert s.sources["events"].rowtime == "ts" and s.sources["events"].delay_us == 1_000_000
        assert s.sql("SELECT sum(x) AS total FROM b").fetchall() == [(6,)]
        windows = s.sql("""SELECT window_start, sum(v) AS total
                           FROM TUMBLE(events, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end""")
        assert [total for _, total in windows.fetchall()] == [3, 3]


def test_source_from_refuses_what_it_cannot_read():
    with Session(dead_letter_path="off") as s:
        with pytest.raises(SqlAnalysisError) as info:
            s.source_from(42, name="x")
        assert info.value.message == "source_from() cannot read int"
        with pytest.raises(SqlAnalysisError) as info:
            s.source_from([{"a": 1}], name="x", watermark="ts")
        assert info.value.message == "source_from(): no column 'ts' for the watermark"


def test_sink_to_hands_batches_to_a_function(session):
    seen = []
    name = session.sink_to(seen.append, "SELECT k, v FROM t WHERE v > 1", name="big")
    assert name == "big"
    session.run()
    assert [row for batch in seen for row in batch.to_pylist()] == [{"k": "b", "v": 2}, {"k": "a", "v": 3}]


def test_the_session_context_manager_stops_a_running_query():
    with Session(dead_letter_path="off") as s:
        s.source_from(_endless, name="g")
        result = s.sql("SELECT i FROM g")
        assert next(result).num_rows > 0  # running
        threads = [t for t in threading.enumerate() if t.name == "sqlstream-query"]
        assert threads
    assert result.done
    assert not any(t.is_alive() for t in threads)


def test_a_timeout_without_batches_raises_queue_empty_and_stops():
    with Session(dead_letter_path="off") as s:
        s.execute("CREATE SOURCE m (v BIGINT) WITH (connector = 'memory')")  # nothing pushed, never ends
        result = s.query("SELECT v FROM m", timeout=0.2)
        with pytest.raises(queue.Empty):
            next(result)
        assert result.done


def test_a_missing_dataframe_library_is_named_with_how_to_install_it():
    import subprocess
    import sys

    code = """
import sys
class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pandas", "polars"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Missing())
from sqlstream import Session
with Session(dead_letter_path="off") as s:
    for method in ("to_pandas", "to_polars"):
        try:
            getattr(s.sql("SELECT 1 AS one"), method)()
        except ImportError as error:
            print(error)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines() == [
        "to_pandas() needs pandas, which is not installed: pip install pandas (or pip install 'sqlstream[notebook]')",
        "to_polars() needs polars, which is not installed: pip install polars",
    ], done.stderr
