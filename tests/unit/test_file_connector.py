"""``connector = 'file'``: the source (file, directory, glob; json/csv/parquet) and the
sink (json/csv/parquet, overwrite/append, rolled Parquet parts, atomic renames)."""

from __future__ import annotations

import os

import orjson
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from sqlstream.connectors.base import RunContext
from sqlstream.connectors.file import FileSink, resolve_files
from sqlstream.connectors.options import RawOption
from sqlstream.errors import ConnectorError
from sqlstream.testing import ManualClock, TestSession

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string())])


def batch(ids) -> pa.RecordBatch:
    ids = list(ids)
    return pa.RecordBatch.from_pydict({"id": ids, "name": [f"n{i}" for i in ids]}, schema=SCHEMA)


def open_sink(tmp_path, clock=None, **options):
    raw = {"connector": RawOption("file"), **{k: RawOption(v) for k, v in options.items()}}
    connector = FileSink.create("out", raw, None)
    return connector.open(SCHEMA, RunContext(clock=clock or ManualClock(), base_dir=str(tmp_path)))


def jsonl(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


# -- source ----------------------------------------------------------------------------------


def run_source(tmp_path, path: str, fmt: str, columns: str = "id BIGINT, name VARCHAR", batch_size: int | None = None):
    session = TestSession(base_dir=str(tmp_path))
    if batch_size:
        session.execute(f"SET file_batch_size = {batch_size}")
    session.execute(
        f"""CREATE SOURCE src ({columns}) WITH (connector = 'file', path = '{path}', format = '{fmt}');
            CREATE SINK out AS SELECT * FROM src WITH (connector = 'memory');"""
    )
    session.run()
    return session


def test_directory_and_glob_are_read_in_sorted_name_order(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name, ids in (("b.jsonl", [3, 4]), ("a.jsonl", [1, 2]), ("c.jsonl", [5])):
        (folder / name).write_text("".join(orjson.dumps({"id": i, "name": f"n{i}"}).decode() + "\n" for i in ids))
    (folder / ".a.jsonl.inprogress").write_text('{"id": 99}\n')  # hidden: a file being written
    (folder / "_SUCCESS").write_text("")
    session = run_source(tmp_path, "in", "json", batch_size=1)
    assert [r["id"] for r in session.rows("out", fold=False)] == [1, 2, 3, 4, 5]
    session = run_source(tmp_path, "in/[ab]*.jsonl", "json")
    assert [r["id"] for r in session.rows("out", fold=False)] == [1, 2, 3, 4]
    assert resolve_files(str(folder)) == [str(folder / n) for n in ("a.jsonl", "b.jsonl", "c.jsonl")]


def test_a_missing_file_is_an_error_at_run(tmp_path):
    session = TestSession(base_dir=str(tmp_path))
    session.execute(
        """CREATE SOURCE src (id BIGINT) WITH (connector = 'file', path = 'nope/*.csv', format = 'csv');
           CREATE SINK out AS SELECT * FROM src WITH (connector = 'memory');"""
    )
    with pytest.raises(ConnectorError, match=r"source 'src': no file matches path '.*nope/\*\.csv'"):
        session.run()


@pytest.mark.parametrize("name", ["data.parquet", "data", "odd [1] name.parquet"])
def test_parquet_source_matches_columns_case_insensitively(tmp_path, name):
    table = pa.table({"ID": list(range(10)), "Name": [f"n{i}" for i in range(10)], "other": [0.5] * 10})
    pq.write_table(table, tmp_path / name, row_group_size=4)
    session = run_source(tmp_path, name, "parquet", columns="id BIGINT, name VARCHAR, missing DOUBLE", batch_size=3)
    rows = session.rows("out", fold=False)
    assert rows == [{"id": i, "name": f"n{i}", "missing": None} for i in range(10)]
    assert len(session.outputs["out"]) >= 4  # row groups of 4, batches of at most 3 rows
    assert all(b.num_rows <= 3 for b in session.outputs["out"])


def test_parquet_source_casts_to_the_declared_types(tmp_path):
    table = pa.table({"id": pa.array([1, 2], pa.int32()), "ts": pa.array([1_000, 2_000], pa.timestamp("ms", tz="UTC"))})
    pq.write_table(table, tmp_path / "in.parquet")
    session = run_source(tmp_path, "in.parquet", "parquet", columns="id BIGINT, ts TIMESTAMP")
    batch0 = session.outputs["out"][0]
    assert batch0.schema.field("id").type == pa.int64() and batch0.schema.field("ts").type == pa.timestamp("us")
    assert [r["id"] for r in session.rows("out")] == [1, 2]


def test_not_a_parquet_file(tmp_path):
    (tmp_path / "in.parquet").write_text("hello")
    with pytest.raises(ConnectorError, match="cannot read Parquet file .*in.parquet"):
        run_source(tmp_path, "in.parquet", "parquet")


# -- sink: json and csv ------------------------------------------------------------------------


def test_json_sink_overwrites_by_default_and_appends_on_request(tmp_path):
    out = tmp_path / "sub" / "out.jsonl"
    writer = open_sink(tmp_path, path="sub/out.jsonl", format="json")
    writer.write(batch([1, 2]))
    assert jsonl(out) == [{"id": 1, "name": "n1"}, {"id": 2, "name": "n2"}]  # visible at the batch boundary
    writer.write(batch([]))
    writer.close()
    writer = open_sink(tmp_path, path="sub/out.jsonl", format="json", mode="append")
    writer.write(batch([3]))
    writer.close()
    assert [r["id"] for r in jsonl(out)] == [1, 2, 3]
    writer = open_sink(tmp_path, path="sub/out.jsonl", format="json")
    writer.write(batch([4]))
    writer.close()
    assert [r["id"] for r in jsonl(out)] == [4]


def test_csv_sink_writes_the_header_once(tmp_path):
    out = tmp_path / "out.csv"
    writer = open_sink(tmp_path, path="out.csv", format="csv")
    writer.write(batch([1]))
    writer.write(batch([2, 3]))
    writer.close()
    writer = open_sink(tmp_path, path="out.csv", format="csv", mode="append")
    writer.write(batch([4]))
    writer.close()
    assert out.read_text().splitlines() == ['"id","name"', '1,"n1"', '2,"n2"', '3,"n3"', '4,"n4"']
    assert pcsv.read_csv(out).to_pydict() == {"id": [1, 2, 3, 4], "name": ["n1", "n2", "n3", "n4"]}


def test_csv_sink_with_a_delimiter(tmp_path):
    writer = open_sink(tmp_path, path="out.csv", format="csv", delimiter=";")
    writer.write(batch([1]))
    writer.close()
    assert (tmp_path / "out.csv").read_text().splitlines() == ['"id";"name"', '1;"n1"']


def test_csv_sink_rejects_nested_columns(tmp_path):
    session = TestSession(base_dir=str(tmp_path))
    session.execute(
        """CREATE SOURCE src (id BIGINT, f FLOAT[2]) WITH (connector = 'memory');
           CREATE SINK out AS SELECT * FROM src WITH (connector = 'file', path = 'out.csv', format = 'csv');"""
    )
    session.stream("src").finish()
    with pytest.raises(ConnectorError) as info:
        session.run()
    assert info.value.message == "sink 'out': CSV cannot hold nested column(s) f"
    assert "CAST(col AS VARCHAR)" in info.value.hint


# -- sink: parquet -----------------------------------------------------------------------------


def visible_files(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def test_parquet_file_appears_only_when_complete(tmp_path):
    writer = open_sink(tmp_path, path="out.parquet", format="parquet")
    writer.write(batch(range(10)))
    writer.flush()
    writer.write(batch(range(10, 20)))
    assert visible_files(tmp_path) == []  # still being written (under a hidden temporary name)
    writer.close()
    assert visible_files(tmp_path) == ["out.parquet"]
    assert pq.read_table(tmp_path / "out.parquet").column("id").to_pylist() == list(range(20))
    assert not any(n.endswith(".inprogress") for n in os.listdir(tmp_path))


def test_parquet_file_replaces_the_old_one_atomically(tmp_path):
    pq.write_table(pa.Table.from_batches([batch([100])]), tmp_path / "out.parquet")
    writer = open_sink(tmp_path, path="out.parquet", format="parquet")
    writer.write(batch([1, 2]))
    # until the new file is complete a reader still sees the whole old one
    assert pq.read_table(tmp_path / "out.parquet").column("id").to_pylist() == [100]
    writer.close()
    assert pq.read_table(tmp_path / "out.parquet").column("id").to_pylist() == [1, 2]


def test_an_abandoned_parquet_writer_leaves_no_visible_file(tmp_path):
    writer = open_sink(tmp_path, path="out.parquet", format="parquet")
    writer.write(batch(range(200_000)))  # more than a row group: bytes are on disk already
    assert visible_files(tmp_path) == []
    del writer  # a crash: close() never runs
    assert visible_files(tmp_path) == []


def test_an_empty_result_is_a_valid_empty_parquet_file(tmp_path):
    open_sink(tmp_path, path="out.parquet", format="parquet").close()
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.num_rows == 0 and table.schema == SCHEMA


def test_parquet_rows_per_file_rolls_complete_parts(tmp_path):
    writer = open_sink(tmp_path, path="parts", format="parquet", rows_per_file=5)
    writer.write(batch(range(3)))
    assert visible_files(tmp_path / "parts") == []
    writer.write(batch(range(3, 7)))  # reaches 5: the part is complete and renamed into place
    assert visible_files(tmp_path / "parts") == ["part-00000.parquet"]
    writer.write(batch(range(7, 12)))
    writer.write(batch(range(12, 13)))
    writer.close()
    parts = visible_files(tmp_path / "parts")
    assert parts == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    ids = [pq.read_table(tmp_path / "parts" / p).column("id").to_pylist() for p in parts]
    assert ids == [list(range(7)), list(range(7, 12)), [12]]

    # overwrite starts again; append continues the numbering
    writer = open_sink(tmp_path, path="parts", format="parquet", rows_per_file=5, mode="append")
    writer.write(batch([13]))
    writer.close()
    assert visible_files(tmp_path / "parts")[-1] == "part-00003.parquet"
    writer = open_sink(tmp_path, path="parts", format="parquet", rows_per_file=5)
    writer.write(batch([14]))
    writer.close()
    assert visible_files(tmp_path / "parts") == ["part-00000.parquet"]


def test_parquet_roll_interval_uses_the_clock(tmp_path):
    clock = ManualClock()
    writer = open_sink(tmp_path, clock=clock, path="parts", format="parquet", roll_interval="10s")
    writer.write(batch([1]))
    writer.flush()
    writer.write(batch([2]))
    clock.advance(9)
    writer.flush()
    assert visible_files(tmp_path / "parts") == []
    clock.advance(1)
    writer.flush()
    assert visible_files(tmp_path / "parts") == ["part-00000.parquet"]
    writer.write(batch([3]))
    writer.close()
    tables = [pq.read_table(tmp_path / "parts" / p) for p in visible_files(tmp_path / "parts")]
    assert [t.column("id").to_pylist() for t in tables] == [[1, 2], [3]]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"format": "parquet", "mode": "append"}, "a single Parquet file cannot be appended to"),
        ({"format": "json", "rows_per_file": 5}, "rows_per_file / roll_interval apply to format = 'parquet' only"),
        ({"format": "parquet", "rows_per_file": 0}, "option 'rows_per_file' = 0 is invalid for connector 'file': must be > 0"),
        ({"format": "csv", "delimiter": ";;"}, "option 'delimiter' = ';;' is invalid for connector 'file': must be one character"),
        ({"format": "parquet", "mode": "replace"}, "expected one of 'overwrite', 'append'"),
    ],
)
def test_sink_option_errors(tmp_path, options, message):
    with pytest.raises(ConnectorError) as info:
        open_sink(tmp_path, path="out", **options)
    assert message in info.value.message


def test_sink_through_a_session_with_declared_columns(tmp_path):
    session = TestSession(base_dir=str(tmp_path))
    session.execute(
        """CREATE SOURCE src (id BIGINT, name VARCHAR) WITH (connector = 'memory');
           CREATE SINK out (key BIGINT, label VARCHAR)
             WITH (connector = 'file', path = 'out.parquet', format = 'parquet');
           INSERT INTO out SELECT id * 10, upper(name) FROM src;"""
    )
    session.stream("src").push([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]).finish()
    summary = session.run()
    assert summary.sinks == {"out": 2}
    assert pq.read_table(tmp_path / "out.parquet").to_pylist() == [{"key": 10, "label": "A"}, {"key": 20, "label": "B"}]


def test_csv_header_with_a_byte_order_mark_and_a_missing_column(tmp_path):
    from sqlstream.errors import ConnectorError
    from sqlstream.testing import TestSession

    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbfid,amount\n1,2.5\n2,x\n3,4\n")
    session = TestSession(base_dir=str(tmp_path))
    session.settings["file_batch_size"] = 100
    session.execute("CREATE SOURCE b (id BIGINT, amount DOUBLE) WITH (connector = 'file', path = 'bom.csv', format = 'csv')")
    assert sorted(r["id"] for r in session.run_query("SELECT id FROM b")) == [1, 3]
    assert session.last_summary.dead_letters == {"type": 1}

    (tmp_path / "miss.csv").write_text("id,amt\n1,2\n")
    session.execute("CREATE SOURCE m (id BIGINT, amount DOUBLE) WITH (connector = 'file', path = 'miss.csv', format = 'csv')")
    with pytest.raises(ConnectorError) as info:
        session.run_query("SELECT * FROM m")
    assert "has no column 'amount'" in info.value.message
    assert "its columns: id, amt" in info.value.hint
