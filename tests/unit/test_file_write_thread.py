"""The file sink encodes and writes on a thread of its own (WriteThread): jobs run in
the order given, a failure surfaces on the driver thread (never vanishes), closing a
file and a checkpoint's prepare_commit wait for every write before them, and the
output is the same bytes run after run."""

from __future__ import annotations

import hashlib
import os
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sqlstream.connectors.base import RunContext
from sqlstream.connectors.file import FileSink, epoch_writers
from sqlstream.connectors.file.write_thread import WriteThread
from sqlstream.connectors.options import RawOption
from sqlstream.errors import ConnectorError, SqlStreamError
from sqlstream.testing import ManualClock, TestSession

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string())])


def batch(ids) -> pa.RecordBatch:
    ids = list(ids)
    return pa.RecordBatch.from_pydict({"id": ids, "name": [f"n{i}" for i in ids]}, schema=SCHEMA)


def open_sink(tmp_path, checkpointing=False, **options):
    raw = {"connector": RawOption("file"), **{k: RawOption(v) for k, v in options.items()}}
    connector = FileSink.create("out", raw, None)
    return connector.open(SCHEMA, RunContext(clock=ManualClock(), base_dir=str(tmp_path), checkpointing=checkpointing))


# -- the thread -----------------------------------------------------------------------------


def test_jobs_run_in_the_order_given_on_another_thread():
    writes = WriteThread("writing test", depth=1)
    gate = threading.Event()
    done: list[tuple[int, str]] = []
    writes.submit(lambda: (gate.wait(5), done.append((0, threading.current_thread().name))))
    for i in range(1, 20):
        if i == 2:
            gate.set()  # the first job held the thread: later ones queued (depth 1) behind it
        writes.submit(lambda i=i: done.append((i, threading.current_thread().name)))
    writes.wait()
    assert [i for i, _ in done] == list(range(20))
    assert {name for _, name in done} == {"sqlstream-file-writer"}
    writes.stop()


def test_a_failed_job_surfaces_on_the_next_submit_and_wait_and_later_jobs_are_dropped():
    writes = WriteThread("writing out.parquet", depth=1)
    ran: list[int] = []

    def fail():
        raise OSError("No space left on device")

    writes.submit(fail)
    with pytest.raises(ConnectorError, match=r"writing out.parquet failed: OSError: No space left on device") as raised:
        writes.wait()
    assert isinstance(raised.value.__cause__, OSError)
    with pytest.raises(ConnectorError, match="No space left on device"):  # and every later call
        writes.submit(lambda: ran.append(1))
    with pytest.raises(ConnectorError, match="No space left on device"):
        writes.wait()
    writes.stop()  # abort: never raises
    assert ran == []


def test_jobs_queued_behind_a_failure_are_dropped_without_blocking_the_driver():
    writes = WriteThread("writing test", depth=1)
    gate = threading.Event()
    ran: list[int] = []

    def fail():
        gate.wait(5)
        raise ValueError("bad batch")

    writes.submit(fail)
    writes.submit(lambda: ran.append(1))  # queued while the failing job runs
    gate.set()
    with pytest.raises(ConnectorError, match="ValueError: bad batch"):
        writes.wait()
    writes.stop()
    assert ran == []


# -- the writers ----------------------------------------------------------------------------


def test_closing_a_parquet_file_waits_for_its_writes(tmp_path):
    writer = open_sink(tmp_path, path="out.parquet", format="parquet")
    for start in range(0, 600_000, 150_000):  # several row groups, each handed to the thread
        writer.write(batch(range(start, start + 150_000)))
    writer.close()
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column("id").to_pylist() == list(range(600_000))
    assert pq.ParquetFile(tmp_path / "out.parquet").metadata.num_row_groups == 4


def test_prepare_commit_waits_for_the_writes_of_its_epoch(tmp_path, monkeypatch):
    """A checkpoint stores an epoch only once its rows are on disk: the part named by
    prepare_commit is complete even when the thread writes slowly."""
    release = threading.Event()
    write, wait = epoch_writers._PartFile.write, WriteThread.wait

    def held_write(self, table):
        release.wait(5)  # the write is held until the driver waits for it
        write(self, table)

    def releasing_wait(self):
        release.set()
        wait(self)

    monkeypatch.setattr(epoch_writers._PartFile, "write", held_write)
    monkeypatch.setattr(WriteThread, "wait", releasing_wait)
    writer = open_sink(tmp_path, checkpointing=True, path="out", format="parquet")
    writer.recover(0, None)
    writer.write(batch(range(200_000)))  # a row group's worth: handed to the thread now
    prepared = writer.prepare_commit(1)
    pending = tmp_path / "out" / f".{prepared['files'][0]}.pending"
    assert pq.read_table(pending).column("id").to_pylist() == list(range(200_000))
    writer.commit(1, prepared)
    writer.close()


@pytest.mark.parametrize("checkpointing", [False, True])
def test_a_write_that_fails_on_the_thread_fails_the_run(tmp_path, monkeypatch, checkpointing):
    def broken(self, table, row_group_size=None):
        raise OSError("No space left on device")

    pq.write_table(pa.table({"id": list(range(300_000))}), tmp_path / "in.parquet")
    monkeypatch.setattr(pq.ParquetWriter, "write_table", broken)
    session = TestSession(base_dir=str(tmp_path))
    if checkpointing:
        session.execute(f"SET checkpoint_dir = '{tmp_path / 'ckpt'}'")
    session.execute(
        """CREATE SOURCE src (id BIGINT) WITH (connector = 'file', path = 'in.parquet', format = 'parquet');
           CREATE SINK out AS SELECT id FROM src WITH (connector = 'file', path = 'out.parquet', format = 'parquet');"""
    )
    with pytest.raises(SqlStreamError, match="No space left on device"):
        session.run()
    names = os.listdir(tmp_path / "out.parquet") if checkpointing else os.listdir(tmp_path)
    assert not [n for n in names if n.endswith((".inprogress", ".pending")) or n.startswith("part-")]
    assert checkpointing or "out.parquet" not in names


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_output_is_the_same_bytes_run_after_run(tmp_path):
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"a": list(range(400_000)), "b": [i % 7 * 0.5 for i in range(400_000)]}), source,
                   row_group_size=100_000)
    digests = []
    for run in range(2):
        session = TestSession(base_dir=str(tmp_path))
        session.execute("SET file_batch_size = 30000")
        session.execute(
            f"""CREATE SOURCE src (a BIGINT, b DOUBLE) WITH (connector = 'file', path = 'in.parquet', format = 'parquet');
                CREATE SINK out AS SELECT a, b * 2 AS b2 FROM src WHERE a % 3 <> 0
                WITH (connector = 'file', path = 'out{run}.parquet', format = 'parquet');"""
        )
        session.run()
        digests.append(_digest(tmp_path / f"out{run}.parquet"))
    assert digests[0] == digests[1]
    table = pq.read_table(tmp_path / "out0.parquet")
    assert table.column("a").to_pylist() == [a for a in range(400_000) if a % 3]
