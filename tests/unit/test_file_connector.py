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
    assert not out.exists()  # overwriting output replaces path only when complete
    writer.write(batch([]))
    writer.close()
    assert jsonl(out) == [{"id": 1, "name": "n1"}, {"id": 2, "name": "n2"}]
    writer = open_sink(tmp_path, path="sub/out.jsonl", format="json", mode="append")
    writer.write(batch([3]))
    assert [r["id"] for r in jsonl(out)] == [1, 2, 3]  # appended rows are visible at the batch boundary
    writer.close()
    assert [r["id"] for r in jsonl(out)] == [1, 2, 3]
    writer = open_sink(tmp_path, path="sub/out.jsonl", format="json")
    writer.write(batch([4]))
    assert [r["id"] for r in jsonl(out)] == [1, 2, 3]  # the previous output, whole, until the new one is
    writer.close()
    assert [r["id"] for r in jsonl(out)] == [4]
    assert os.listdir(tmp_path / "sub") == ["out.jsonl"]


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
    assert ids == [list(range(5)), list(range(5, 10)), [10, 11, 12]]  # batches are split at rows_per_file

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


# -- hardening: growing files, empty files, part sizes, stale temporaries, acknowledging sources --


def _csv_lines(count: int) -> list[bytes]:
    return [f"{i},{i * 7 + 13}\n".encode() for i in range(count)]


def _append_cut_mid_line(path, lines: list[bytes], seed: int, started) -> None:
    """Appends ``lines`` in chunks that end inside a line (the file ends at a line end
    only after the last chunk), as a buffered writer that flushes by size does."""
    import random
    import time

    rng = random.Random(seed)
    data = b"".join(lines)
    line_ends = set()
    position = 0
    for line in lines:
        position += len(line)
        line_ends.add(position)
    cuts, position = [], 0
    while position < len(data):
        position = min(len(data), position + rng.randint(1, 120))
        while position in line_ends and position < len(data):
            position += 1  # never pause right after a newline: the reader must not see a line end before the last chunk
        cuts.append(position)
    with open(path, "ab", buffering=0) as handle:
        start = 0
        for i, cut in enumerate(cuts):
            handle.write(data[start:cut])
            start = cut
            if i == 0:
                started.set()
            time.sleep(rng.random() * 0.0005)


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize("run_number", range(4))
def test_a_file_that_grows_while_read_never_yields_a_split_line(tmp_path, fmt, run_number):
    """A writer appends in chunks cut mid-line while the pipeline reads: every line is one
    whole record (no fragment rows, no dead letters), and rows = lines written."""
    import threading

    count = 3000
    if fmt == "csv":
        lines = _csv_lines(count)
        (tmp_path / "in.csv").write_bytes(b"a,b\n")
    else:
        lines = [orjson.dumps({"a": i, "b": i * 7 + 13}) + b"\n" for i in range(count)]
        (tmp_path / "in.csv").write_bytes(b"")
    started = threading.Event()
    writer = threading.Thread(target=_append_cut_mid_line, args=(tmp_path / "in.csv", lines, run_number, started))
    writer.start()
    assert started.wait(10)
    session = TestSession(base_dir=str(tmp_path))
    session.settings["file_batch_size"] = 100
    session.execute(f"CREATE SOURCE g (a BIGINT, b BIGINT) WITH (connector = 'file', path = 'in.csv', format = '{fmt}')")
    rows = session.run_query("SELECT a, b FROM g", fold=False)
    writer.join()
    assert session.last_summary.dead_letters == {}
    assert rows == [{"a": i, "b": i * 7 + 13} for i in range(count)]


def test_an_unterminated_last_line_is_a_record_once_the_file_stops_growing(tmp_path):
    import threading
    import time

    from sqlstream.connectors.file import SETTLE_S

    path = tmp_path / "in.csv"
    path.write_bytes(b"a,b\n1,2\n3,")
    old = time.time() - 10 * SETTLE_S
    os.utime(path, (old, old))  # written long ago: final at once
    session = TestSession(base_dir=str(tmp_path))
    session.execute("CREATE SOURCE g (a BIGINT, b BIGINT) WITH (connector = 'file', path = 'in.csv', format = 'csv')")
    started = time.monotonic()
    assert session.run_query("SELECT * FROM g", fold=False) == [{"a": 1, "b": 2}, {"a": 3, "b": None}]
    assert time.monotonic() - started < SETTLE_S

    # written just now, and completed by a writer a moment later: the held-back line is read whole
    path.write_bytes(b"a,b\n1,2\n3,")
    completed = threading.Timer(SETTLE_S / 4, lambda: path.open("ab").write(b"45"))
    completed.start()
    assert session.run_query("SELECT * FROM g", fold=False) == [{"a": 1, "b": 2}, {"a": 3, "b": 45}]
    completed.join()


@pytest.mark.parametrize("header", ["true", "false"])
def test_an_empty_csv_file_is_an_empty_input(tmp_path, header):
    import time

    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "one.csv").write_bytes(b"id,name\n1,a\n" if header == "true" else b"1,a\n")
    old = time.time() - 60
    os.utime(tmp_path / "empty.csv", (old, old))
    session = TestSession(base_dir=str(tmp_path))
    session.execute(
        f"CREATE SOURCE e (id BIGINT, name VARCHAR) WITH (connector = 'file', path = '*.csv', format = 'csv', header = {header})"
    )
    assert session.run_query("SELECT * FROM e", fold=False) == [{"id": 1, "name": "a"}]
    assert session.last_summary.dead_letters == {}


def test_rows_per_file_splits_batches_bigger_than_a_part(tmp_path):
    writer = open_sink(tmp_path, path="parts", format="parquet", rows_per_file=250)
    writer.write(batch(range(1000)))
    writer.write(batch(range(1000, 1100)))
    writer.close()
    parts = visible_files(tmp_path / "parts")
    sizes = [pq.read_metadata(tmp_path / "parts" / p).num_rows for p in parts]
    assert sizes == [250, 250, 250, 250, 100]
    ids = [i for p in parts for i in pq.read_table(tmp_path / "parts" / p).column("id").to_pylist()]
    assert ids == list(range(1100))


def test_rows_per_file_through_a_pipeline_with_big_file_batches(tmp_path):
    (tmp_path / "in.jsonl").write_bytes(b"".join(orjson.dumps({"id": i, "name": "x"}) + b"\n" for i in range(1000)))
    session = TestSession(base_dir=str(tmp_path))
    session.execute(
        """CREATE SOURCE src (id BIGINT, name VARCHAR) WITH (connector = 'file', path = 'in.jsonl', format = 'json');
           CREATE SINK out AS SELECT * FROM src
             WITH (connector = 'file', path = 'parts', format = 'parquet', rows_per_file = 300);"""
    )
    session.run()
    parts = visible_files(tmp_path / "parts")
    assert [pq.read_metadata(tmp_path / "parts" / p).num_rows for p in parts] == [300, 300, 300, 100]


def _dead_pid() -> int:
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    process.kill()
    process.wait()
    return process.pid


@pytest.mark.parametrize(
    "options, target, left_by_others",
    [
        ({"path": "out.jsonl", "format": "json"}, "out.jsonl", ["other.jsonl"]),
        ({"path": "out.csv", "format": "csv", "mode": "append"}, "out.csv", ["out.jsonl"]),
        ({"path": "out.parquet", "format": "parquet"}, "out.parquet", ["other.parquet"]),
        ({"path": "parts", "format": "parquet", "rows_per_file": 2}, "parts/part-00003.parquet", ["parts/notes.txt"]),
    ],
)
def test_stale_temporary_files_of_dead_processes_are_removed_at_open(tmp_path, options, target, left_by_others):
    dead, alive = _dead_pid(), os.getppid()
    directory, name = os.path.split(tmp_path / target)
    os.makedirs(directory, exist_ok=True)
    stale = os.path.join(directory, f".{name}.{dead}.inprogress")
    live = os.path.join(directory, f".{name}.{alive}.inprogress")  # another process is writing it
    others = [os.path.join(tmp_path, os.path.dirname(o), f".{os.path.basename(o)}.{dead}.inprogress") for o in left_by_others]
    for path in [stale, live, *others]:
        with open(path, "wb") as handle:
            handle.write(b"x" * 1000)
    writer = open_sink(tmp_path, **options)
    assert not os.path.exists(stale)
    assert os.path.exists(live)
    assert all(os.path.exists(o) for o in others)  # not this sink's files: left alone
    writer.write(batch([1]))
    writer.close()


def test_a_failed_run_leaves_the_previous_output(tmp_path):
    (tmp_path / "out.jsonl").write_text('{"id": 100}\n')
    (tmp_path / "in.jsonl").write_text('{"id": 1}\n{"id": 2}\n{"id": "bad"}\n')
    session = TestSession(base_dir=str(tmp_path))
    session.execute(
        """SET on_error = 'fail';
           CREATE SOURCE src (id BIGINT) WITH (connector = 'file', path = 'in.jsonl', format = 'json');
           CREATE SINK out AS SELECT * FROM src WITH (connector = 'file', path = 'out.jsonl', format = 'json');"""
    )
    with pytest.raises(Exception, match="bad record|type"):
        session.run()
    assert (tmp_path / "out.jsonl").read_text() == '{"id": 100}\n'
    assert sorted(os.listdir(tmp_path)) == ["in.jsonl", "out.jsonl"]


def test_overwriting_parts_keeps_the_old_parts_until_a_clean_close(tmp_path):
    writer = open_sink(tmp_path, path="parts", format="parquet", rows_per_file=2)
    writer.write(batch(range(4)))
    writer.close()
    assert visible_files(tmp_path / "parts") == ["part-00000.parquet", "part-00001.parquet"]

    # a run that fails: the old parts stay, and so do the parts it completed (nothing is lost)
    writer = open_sink(tmp_path, path="parts", format="parquet", rows_per_file=2)
    writer.write(batch(range(10, 13)))
    assert visible_files(tmp_path / "parts") == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    writer.abort()
    assert visible_files(tmp_path / "parts") == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert not any(n.endswith(".inprogress") for n in os.listdir(tmp_path / "parts"))

    # a run that completes replaces all of them, numbered from part-00000
    writer = open_sink(tmp_path, path="parts", format="parquet", rows_per_file=2)
    writer.write(batch(range(20, 25)))
    writer.close()
    parts = visible_files(tmp_path / "parts")
    assert parts == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert [pq.read_table(tmp_path / "parts" / p).column("id").to_pylist() for p in parts] == [[20, 21], [22, 23], [24]]


JETSTREAM = "CREATE SOURCE js (id BIGINT) WITH (connector = 'nats', stream = 'S', subject = 'in.>');\n"
CORE = "CREATE SOURCE core (id BIGINT) WITH (connector = 'nats', subject = 'in.>');\n"


@pytest.mark.parametrize(
    "sink, message, hint",
    [
        (
            "CREATE SINK out AS SELECT * FROM js WITH (connector = 'file', path = 'o.jsonl', format = 'json', mode = 'overwrite');",
            "sink 'out': mode = 'overwrite' would lose rows: source 'js' acknowledges its input, "
            "so rows acknowledged by an earlier run are only in that run's output",
            "use mode = 'append' (the default when a source acknowledges its input)",
        ),
        (
            "CREATE SINK out AS SELECT * FROM js WITH (connector = 'file', path = 'o.parquet', format = 'parquet');",
            "sink 'out': a single Parquet file is committed only when the run ends, but source 'js' acknowledges "
            "its input only once rows are committed: delivery would stall",
            "add rows_per_file or roll_interval to commit part files as they complete",
        ),
        (
            "CREATE SINK out (id BIGINT) WITH (connector = 'file', path = 'o.parquet', format = 'parquet');\n"
            "INSERT INTO out SELECT id FROM js WHERE id > 0;",
            "sink 'out': a single Parquet file is committed only when the run ends",
            "add rows_per_file or roll_interval",
        ),
    ],
)
def test_file_sinks_that_would_lose_or_stall_acknowledged_input_are_refused(tmp_path, sink, message, hint):
    session = TestSession(base_dir=str(tmp_path))
    with pytest.raises(ConnectorError) as info:
        session.execute(JETSTREAM + sink, path="p.sql")
    assert info.value.message.startswith(message)
    assert info.value.hint.startswith(hint)
    assert info.value.location is not None and info.value.location.line >= 2
    # the same sinks are fine over core NATS, which does not acknowledge
    session = TestSession(base_dir=str(tmp_path))
    session.execute(CORE + sink.replace("FROM js", "FROM core"), path="p.sql")


def test_a_file_sink_fed_by_an_acknowledging_source_appends_by_default(tmp_path, caplog):
    session = TestSession(base_dir=str(tmp_path))
    session.execute(JETSTREAM + "CREATE SINK out AS SELECT * FROM js WITH (connector = 'file', path = 'o.jsonl', format = 'json');")
    connector = session.sinks["out"].connector
    schema = pa.schema([("id", pa.int64())])
    (tmp_path / "o.jsonl").write_text('{"id":1}\n')
    ctx = RunContext(clock=ManualClock(), base_dir=str(tmp_path), acknowledging_sources=("js",))
    with caplog.at_level("WARNING", logger="sqlstream.file"):
        writer = connector.open(schema, ctx)
    writer.write(pa.RecordBatch.from_pydict({"id": [2]}, schema=schema))
    assert writer.durable_rows(1) == 1  # appended and synced: the input may be acknowledged
    writer.close()
    assert jsonl(tmp_path / "o.jsonl") == [{"id": 1}, {"id": 2}]
    assert caplog.messages == [
        f"sink 'out': appending to {tmp_path / 'o.jsonl'} (no mode given, and 'js' acknowledges its input: "
        "rows acknowledged by earlier runs are only in their output)"
    ]
