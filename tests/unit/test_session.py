"""``sqlstream.Session``: the catalog, the Python API (execute / query / run / stop),
settings precedence (``--set`` then ``SET``), UDF discovery, one read per source."""

from __future__ import annotations

import os
import textwrap
import threading
import time

import orjson
import pyarrow as pa
import pytest

import sqlstream
from sqlstream.cli.session_setup import make_session
from sqlstream.errors import SqlAnalysisError, UdfError
from sqlstream.testing import TestSession

GENERATED = """CREATE SOURCE nums (n BIGINT, k VARCHAR) WITH (connector = 'generator', rows_per_second = 0,
  max_rows = {rows}, fields.n.kind = 'sequence', fields.k.kind = 'values', fields.k.values = 'a,b');"""


def test_python_api_query_yields_arrow_batches():
    session = sqlstream.Session(dead_letter_path="off")
    results = session.execute(GENERATED.format(rows=5))
    assert [(r.kind, r.name) for r in results] == [("create source", "nums")]
    batches = list(session.query("SELECT n * 2 AS d FROM nums WHERE n > 2"))
    assert all(isinstance(b, pa.RecordBatch) for b in batches)
    assert [row for b in batches for row in b.to_pylist()] == [{"d": 6}, {"d": 8}]


def test_python_api_run_with_file_sink_and_summary(tmp_path):
    session = sqlstream.Session(base_dir=str(tmp_path), dead_letter_path="off")
    session.execute(
        GENERATED.format(rows=1000)
        + """CREATE SINK evens AS SELECT n, upper(k) AS k FROM nums WHERE n % 2 = 0
               WITH (connector = 'file', path = 'out/evens.jsonl', format = 'json');"""
    )
    summary = session.run()
    rows = [orjson.loads(line) for line in (tmp_path / "out" / "evens.jsonl").read_bytes().splitlines()]
    assert [r["n"] for r in rows] == list(range(0, 1000, 2))
    assert {r["k"] for r in rows} <= {"A", "B"}
    assert summary.sources["nums"]["rows_in"] == 1000 and summary.sinks == {"evens": 500}
    assert not summary.stopped
    assert summary.line().startswith("nums: 1,000 rows in | evens: 500 rows out | dead letters: 0 | elapsed ")


def test_several_sinks_share_one_read_of_a_source(session):
    session.execute(
        """CREATE SOURCE s (n BIGINT) WITH (connector = 'memory');
           CREATE VIEW big AS SELECT n FROM s WHERE n >= 3;
           CREATE SINK all_rows FROM s WITH (connector = 'memory');
           CREATE SINK big_rows FROM big WITH (connector = 'memory');
           CREATE SINK doubled AS SELECT n * 2 AS d FROM big WITH (connector = 'memory');"""
    )
    session.stream("s").push([{"n": i} for i in range(5)], batch_size=2).finish()
    summary = session.run()
    assert list(summary.sources) == ["s"]
    assert (summary.sources["s"]["rows_in"], summary.sources["s"]["records_in"]) == (5, 5)  # read once, not three times
    assert summary.sinks == {"all_rows": 5, "big_rows": 2, "doubled": 2}
    assert session.rows("doubled") == [{"d": 6}, {"d": 8}]


def test_stop_ends_a_run_on_an_unbounded_source(session):
    session.execute(
        """CREATE SOURCE s (n BIGINT) WITH (connector = 'memory');
           CREATE SINK out AS SELECT n FROM s WITH (connector = 'memory');"""
    )
    session.stream("s").push([{"n": 1}, {"n": 2}])  # never finished: the source stays open
    result = {}
    runner = threading.Thread(target=lambda: result.update(summary=session.run()))
    runner.start()
    deadline = time.monotonic() + 30
    while not session.outputs.get("out") and time.monotonic() < deadline:
        time.sleep(0.01)  # waiting on a condition (rows arrived), with a deadline
    session.stop()
    runner.join(timeout=30)
    assert not runner.is_alive()
    assert result["summary"].stopped and result["summary"].sinks == {"out": 2}


def test_show_describe_explain_drop(session):
    session.execute(
        """CREATE SOURCE s (n BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
             WITH (connector = 'memory');
           CREATE TABLE t (id BIGINT, name VARCHAR) WITH (connector = 'generator', max_rows = 3);
           CREATE VIEW v AS SELECT n FROM s WHERE n > 1;
           CREATE SINK k FROM v WITH (connector = 'memory');"""
    )
    def show(what: str, *columns: str) -> list[tuple]:
        rows = session.execute(f"SHOW {what}")[0].table.to_pylist()
        return [tuple(r[c] for c in columns) for r in rows if r["name"] != "sqlstream_dead_letter"]

    assert show("SOURCES", "name", "connector", "watermark") == [("s", "memory", "ts - 5s")]
    assert show("TABLES", "name", "connector") == [("t", "generator(rows_per_second=1000, max_rows=3)")]
    assert show("VIEWS", "name", "query") == [("v", "CREATE VIEW v AS SELECT n FROM s WHERE n > 1")]
    assert show("SINKS", "name", "connector", "query") == [("k", "memory", "SELECT * FROM v")]
    assert session.execute("DESCRIBE v")[0].table.to_pylist() == [{"column": "n", "type": "BIGINT", "nullable": True}]
    explain = session.execute("EXPLAIN SELECT n + 1 AS m FROM v")[0]
    assert explain.kind == "explain" and explain.text.splitlines()[0] == "== query =="
    assert "Stateless (DataFusion per micro-batch)" in explain.text and "Scan s [memory, watermark ts - 5s]" in explain.text
    with pytest.raises(SqlAnalysisError, match="cannot drop view 'v': k depend"):
        session.execute("DROP VIEW v")
    assert [r.kind for r in session.execute("DROP SINK k; DROP VIEW v; DROP VIEW IF EXISTS v; DROP TABLE t")] == [
        "drop sink", "drop view", "noop", "drop table",
    ]
    assert session.execute("SHOW VIEWS")[0].table.num_rows == 0


def test_if_not_exists_and_or_replace(session):
    session.execute("CREATE SOURCE s (n BIGINT) WITH (connector = 'memory')")
    assert session.execute("CREATE SOURCE IF NOT EXISTS s (x INT) WITH (connector = 'memory')")[0].kind == "noop"
    assert session.sources["s"].schema.names == ["n"]
    session.execute("CREATE OR REPLACE SOURCE s (x INT) WITH (connector = 'memory')")
    assert session.sources["s"].schema.names == ["x"]


def test_relative_paths_resolve_against_the_pipeline_directory(tmp_path, monkeypatch):
    pipeline_dir = tmp_path / "pipelines"
    pipeline_dir.mkdir()
    (pipeline_dir / "in.jsonl").write_text('{"n": 1}\n{"n": 2}\n')
    monkeypatch.chdir(tmp_path)  # not the pipeline's directory
    session = TestSession()
    session.execute(
        """CREATE SOURCE s (n BIGINT) WITH (connector = 'file', path = 'in.jsonl', format = 'json');
           CREATE SINK out AS SELECT n FROM s WITH (connector = 'file', path = 'out.jsonl', format = 'json');""",
        path=str(pipeline_dir / "p.sql"),
        base_dir=str(pipeline_dir),
    )
    session.run()
    assert (pipeline_dir / "out.jsonl").read_text() == '{"n":1}\n{"n":2}\n'


# -- settings: --set first, then SET in the file ---------------------------------------------------


def write_pipeline(folder, text: str, name: str = "p.sql") -> str:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_set_in_the_file_wins_over_command_line_set(tmp_path):
    path = write_pipeline(tmp_path, "SET batch_size = 5;\n" + GENERATED.format(rows=10))
    session = make_session(path, [], ["batch_size=100", "batch_timeout=20ms"])
    assert session.settings["batch_size"] == 100  # --set applied before the file
    session.execute(open(path).read(), path=path)
    assert session.settings["batch_size"] == 5  # the file's SET wins
    assert session.settings["batch_timeout"] == 20_000  # what the file leaves alone keeps the --set value


def test_settings_reach_the_sources(tmp_path):
    session = TestSession(base_dir=str(tmp_path))
    session.execute("SET batch_size = 3;\n" + GENERATED.format(rows=10))
    session.execute("CREATE SINK out FROM nums WITH (connector = 'memory')")
    session.run()
    assert [b.num_rows for b in session.outputs["out"]] == [3, 3, 3, 1]


def test_bad_command_line_set(tmp_path):
    path = write_pipeline(tmp_path, "SELECT 1")
    with pytest.raises(sqlstream.SqlStreamError, match="--set expects key=value, got 'batch_size'"):
        make_session(path, [], ["batch_size"])
    with pytest.raises(SqlAnalysisError, match="unknown setting 'bach_size'"):
        make_session(path, [], ["bach_size=5"])


def test_dead_letter_file_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    path = write_pipeline(tmp_path / "sub", "SELECT 1", "job.sql")
    assert make_session(path, [], []).settings["dead_letter_path"] == str(tmp_path / "sub" / "job.dead_letter.jsonl")
    assert sqlstream.Session()._dead_letter_path() == str(tmp_path / "sqlstream.dead_letter.jsonl")
    session = sqlstream.Session()
    session.execute("SET dead_letter_path = 'dl/x.jsonl'")
    assert session._dead_letter_path() == str(tmp_path / "dl" / "x.jsonl")


# -- UDF discovery --------------------------------------------------------------------------------

UDF_SOURCE = """
import pyarrow as pa
import pyarrow.compute as pc
from sqlstream import udf

@udf(args=[pa.int64()], returns=pa.int64())
def {name}(x):
    return pc.multiply(x, {factor})
"""


def write_udf(folder, name: str, factor: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(UDF_SOURCE.format(name=name, factor=factor))


def test_udf_directories_next_to_the_pipeline_in_the_working_directory_and_on_the_command_line(tmp_path, monkeypatch):
    pipeline_dir, work_dir, extra = tmp_path / "pipes", tmp_path / "work", tmp_path / "extra"
    write_udf(pipeline_dir / "udfs", "triple", 3)
    write_udf(work_dir / "udfs", "tenfold", 10)
    write_udf(extra, "predict", 100)  # a dialect built-in elsewhere: a registered name wins
    monkeypatch.chdir(work_dir)
    path = write_pipeline(
        pipeline_dir,
        GENERATED.format(rows=3)
        + "\nCREATE SINK out AS SELECT triple(n) AS a, tenfold(n) AS b, predict(n) AS c FROM nums "
        "WITH (connector = 'file', path = 'out.jsonl', format = 'json');",
    )
    session = make_session(path, [str(extra)], [])
    assert sorted(session.functions) == ["predict", "tenfold", "triple"]
    session.execute(open(path).read(), path=path, base_dir=str(pipeline_dir))
    session.run()
    rows = [orjson.loads(line) for line in (pipeline_dir / "out.jsonl").read_bytes().splitlines()]
    assert rows == [{"a": 3 * n, "b": 10 * n, "c": 100 * n} for n in range(3)]
    show = session.execute("SHOW FUNCTIONS")[0].table.to_pylist()
    assert [(f["name"], f["kind"]) for f in show] == [("predict", "python"), ("tenfold", "python"), ("triple", "python")]


def test_udf_directory_that_does_not_exist(tmp_path):
    path = write_pipeline(tmp_path, "SELECT 1")
    with pytest.raises(sqlstream.SqlStreamError, match="--udfs nope: no such directory"):
        make_session(path, ["nope"], [])


def test_the_same_udf_name_twice_is_an_error(tmp_path):
    write_udf(tmp_path / "a", "twice", 2)
    write_udf(tmp_path / "b", "twice", 3)
    session = sqlstream.Session(udf_dirs=[str(tmp_path / "a")])
    with pytest.raises(UdfError, match="function 'twice' is defined twice"):
        session.load_udfs(str(tmp_path / "b"))


def test_register_udf_explicitly():
    import pyarrow.compute as pc

    @sqlstream.udf(args=[pa.int64()], returns=pa.int64())
    def plus_one(x):
        return pc.add(x, 1)

    session = sqlstream.Session(dead_letter_path="off")
    session.register_udf(plus_one)
    session.execute(GENERATED.format(rows=3))
    assert [r for b in session.query("SELECT plus_one(n) AS m FROM nums") for r in b.to_pylist()] == [
        {"m": 1}, {"m": 2}, {"m": 3},
    ]


def test_sessions_share_no_state():
    a, b = sqlstream.Session(dead_letter_path="off"), sqlstream.Session(dead_letter_path="off")
    a.execute(GENERATED.format(rows=1) + "SET batch_size = 7;")
    assert "nums" not in b.sources and b.settings["batch_size"] == 8192
    assert os.path.basename(a.base_dir) == os.path.basename(os.getcwd())


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_stdout_sink_formats(capsys, fmt):
    session = sqlstream.Session(dead_letter_path="off")
    session.execute(
        GENERATED.format(rows=3)
        + f"CREATE SINK shown AS SELECT n, n > 5 AS big, n * 1.5 AS x FROM nums WITH (connector = 'stdout', format = '{fmt}');"
    )
    session.run()
    lines = capsys.readouterr().out.splitlines()
    if fmt == "json":
        assert [orjson.loads(line)["n"] for line in lines] == [0, 1, 2]
    else:
        assert [line.rstrip() for line in lines] == [
            "n    | big   | x",
            "-----+-------+-----",
            "0    | False | 0",
            "1    | False | 1.5",
            "2    | False | 3",
        ]
