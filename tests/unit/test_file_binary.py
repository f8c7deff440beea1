"""``format = 'binary'``: one row per file (path, content, size, mtime), bounded or
watching a folder for files that appear; positions that resume exactly."""

from __future__ import annotations

import json
import os
import time

import pytest

from sqlstream.connectors.base import RunContext
from sqlstream.connectors.file.binary_reader import BinaryFilesReader
from sqlstream.errors import ConnectorError
from sqlstream.testing import ManualClock, TestSession

COLUMNS = "path VARCHAR, content BYTEA, size BIGINT, mtime TIMESTAMP"


def binary_source(tmp_path, columns: str = COLUMNS, **options):
    session = TestSession(base_dir=str(tmp_path))
    extra = "".join(f", {k} = {v!r}" for k, v in options.items())
    session.execute(f"CREATE SOURCE frames ({columns}) WITH (connector = 'file', path = 'drop', "
                    f"format = 'binary'{extra})")
    return session.sources["frames"].connector


def drop(tmp_path, name: str, data: bytes, age_s: float = 10.0) -> str:
    folder = tmp_path / "drop"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return str(path)


def drain(reader, polls: int = 50) -> list[dict]:
    rows = []
    for _ in range(polls):
        item = reader.poll()
        if item is not None:
            rows.extend(item.batch.to_pylist())
        if reader.exhausted:
            break
    return rows


def test_each_file_is_a_row_with_its_bytes(tmp_path):
    files = {f"f{i}.bin": os.urandom(100 * i + 1) for i in range(5)}
    for name, data in files.items():
        drop(tmp_path, name, data)
    connector = binary_source(tmp_path)
    assert connector.bounded
    reader = connector.open(RunContext(clock=ManualClock(), base_dir=str(tmp_path), batch_size=2))
    rows = drain(reader)
    reader.close()
    assert [os.path.basename(r["path"]) for r in rows] == sorted(files)  # name order
    for row in rows:
        data = files[os.path.basename(row["path"])]
        assert row["content"] == data and row["size"] == len(data)
        assert abs(row["mtime"].timestamp() - os.stat(row["path"]).st_mtime) < 1e-3


def test_a_query_over_files(tmp_path):
    for i in range(3):
        drop(tmp_path, f"img{i}.png", b"x" * (i + 1))
    session = TestSession(base_dir=str(tmp_path))
    session.execute("CREATE SOURCE frames (path VARCHAR, size BIGINT) "
                    "WITH (connector = 'file', path = 'drop/*.png', format = 'binary')")
    rows = [r for b in session.query("SELECT size FROM frames WHERE size > 1") for r in b.to_pylist()]
    assert rows == [{"size": 2}, {"size": 3}]


@pytest.mark.parametrize("columns, message", [
    ("path VARCHAR, pixels BYTEA", "format = 'binary' has no column 'pixels'"),
    ("content VARCHAR", "column 'content' is VARCHAR, but a file's content is BYTEA"),
    ("mtime BIGINT", "column 'mtime' is BIGINT, but a file's mtime is TIMESTAMP"),
])
def test_columns_a_file_does_not_have_are_refused_at_create(tmp_path, columns, message):
    drop(tmp_path, "a.bin", b"a")
    with pytest.raises(ConnectorError, match=message) as caught:
        binary_source(tmp_path, columns)
    assert caught.value.location is not None and caught.value.hint


def test_watch_is_for_binary_files_and_not_a_table(tmp_path):
    drop(tmp_path, "a.bin", b"a")
    session = TestSession(base_dir=str(tmp_path))
    with pytest.raises(ConnectorError, match="watch = true applies to format = 'binary' only"):
        session.execute("CREATE SOURCE j (a BIGINT) WITH (connector = 'file', path = 'drop', format = 'json', "
                        "watch = true)")
    with pytest.raises(ConnectorError, match="watch = true never ends"):
        session.execute("CREATE TABLE t (path VARCHAR) WITH (connector = 'file', path = 'drop', format = 'binary', "
                        "watch = true)")


def test_watch_reads_files_as_they_appear_once_settled(tmp_path):
    drop(tmp_path, "a.bin", b"a")
    connector = binary_source(tmp_path, "path VARCHAR, size BIGINT", watch=True, poll_interval="1s",
                              settle="1s")
    assert not connector.bounded
    clock = ManualClock()
    reader = connector.open(RunContext(clock=clock, base_dir=str(tmp_path)))
    assert [os.path.basename(r["path"]) for r in drain(reader)] == ["a.bin"]
    drop(tmp_path, "b.bin", b"bb")
    drop(tmp_path, "c.bin", b"ccc", age_s=0)  # still being written: waits for the next listing
    assert drain(reader) == []  # not listed again before poll_interval
    clock.advance(1.0)
    assert [os.path.basename(r["path"]) for r in drain(reader)] == ["b.bin"]
    stamp = time.time() - 5
    os.utime(tmp_path / "drop" / "c.bin", (stamp, stamp))
    clock.advance(1.0)
    assert [r["size"] for r in drain(reader)] == [3]
    assert not reader.exhausted
    reader.close()


def test_a_resumed_reader_reads_only_the_files_after_its_position(tmp_path):
    for name in ("a.bin", "b.bin", "c.bin"):
        drop(tmp_path, name, name.encode())
    connector = binary_source(tmp_path, "path VARCHAR", watch=True)
    clock = ManualClock()
    reader = connector.open(RunContext(clock=clock, base_dir=str(tmp_path), batch_size=2))
    first = reader.poll().batch.to_pylist()
    position = json.loads(json.dumps(reader.position()))
    reader.close()
    os.remove(tmp_path / "drop" / "a.bin")  # cleaned up while the pipeline was down
    drop(tmp_path, "d.bin", b"d")
    resumed = connector.open(RunContext(clock=clock, base_dir=str(tmp_path), start_position=position))
    rest = drain(resumed)
    assert [os.path.basename(r["path"]) for r in first + rest] == ["a.bin", "b.bin", "c.bin", "d.bin"]
    clock.advance(2.0)
    assert drain(resumed) == []
    assert [e["path"] for e in resumed.position()["done"]] == [str(tmp_path / "drop" / n) for n in
                                                              ("b.bin", "c.bin", "d.bin")]  # a.bin is gone
    resumed.close()


def test_a_file_gone_before_it_is_read_is_a_dead_letter(tmp_path):
    path = drop(tmp_path, "a.bin", b"a")
    other = drop(tmp_path, "b.bin", b"b")
    connector = binary_source(tmp_path, "path VARCHAR")
    # the reader itself, without the read-ahead thread, so the file goes between listing and reading
    reader = BinaryFilesReader(connector, lambda: [path, other], RunContext(clock=ManualClock()),
                               watch=False, poll_interval_s=1.0, settle_s=0.0)
    os.remove(path)
    item = reader.poll()
    assert [os.path.basename(r["path"]) for r in item.batch.to_pylist()] == ["b.bin"]
    assert [(d.reason, d.position) for d in item.dead_letters] == [("decode", path)]
    assert "cannot read the file" in item.dead_letters[0].detail
    assert reader.poll() is None and reader.exhausted
