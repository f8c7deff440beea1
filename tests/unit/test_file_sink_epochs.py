"""The file sink under checkpoints: epochs become visible once, when committed.

Writers are driven the way the checkpoint coordinator drives them (write,
prepare_commit, checkpoint stored, commit), a crash is the writer dropped without
close at any step, and the next run's writer recovers from the last complete
checkpoint. The output is then read with pyarrow and DuckDB: it must hold exactly the
committed epochs, once each, with no hidden files left over."""

from __future__ import annotations

import os

import duckdb
import orjson
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from sqlstream.connectors.base import RunContext
from sqlstream.connectors.file import FileSink
from sqlstream.connectors.file.epoch_writers import DIRECTORY_MANIFEST, EXTENSIONS
from sqlstream.connectors.options import RawOption
from sqlstream.errors import ConnectorError
from sqlstream.testing import ManualClock

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string())])
FORMATS = ["parquet", "json", "csv"]
TARGET = {"parquet": "out", "json": "out.jsonl", "csv": "out.csv"}  # directories of part files


def rows(epoch: int, count: int = 5) -> list[int]:
    return list(range(100 * epoch, 100 * epoch + count))


def batch(ids) -> pa.RecordBatch:
    ids = list(ids)
    return pa.RecordBatch.from_pydict({"id": ids, "name": [f"n{i}" for i in ids]}, schema=SCHEMA)


def open_writer(tmp_path, fmt: str, **options):
    raw = {"connector": RawOption("file"), "format": RawOption(fmt), "path": RawOption(TARGET[fmt]),
           **{k: RawOption(v) for k, v in options.items()}}
    connector = FileSink.create("out", raw, None)
    return connector.open(SCHEMA, RunContext(clock=ManualClock(), base_dir=str(tmp_path), checkpointing=True))


def output_ids(tmp_path, fmt: str) -> list[int]:
    """The ids a reader of the output sees, read by pyarrow and by DuckDB (which must
    agree); parts in name order, which is epoch order."""
    path = tmp_path / TARGET[fmt]
    ext = EXTENSIONS[fmt]
    parts = sorted(n for n in os.listdir(path) if n.endswith(f".{ext}")) if path.exists() else []
    if fmt == "parquet":
        dataset = ds.dataset(path, format="parquet")
        if not parts:
            assert dataset.count_rows() == 0  # no visible file: hidden ones are not read either
            return []
        by_arrow = dataset.to_table().column("id").to_pylist()
        by_duckdb = [r[0] for r in duckdb.sql(f"SELECT id FROM read_parquet('{path}/*.parquet')").fetchall()]
        assert sorted(by_duckdb) == sorted(by_arrow)
        return sorted(by_arrow)
    if not parts:
        return []
    if fmt == "json":
        by_arrow = [orjson.loads(line)["id"] for p in parts for line in (path / p).read_bytes().splitlines()]
        by_duckdb = [r[0] for r in duckdb.sql(f"SELECT id FROM read_json_auto('{path}/*.jsonl')").fetchall()]
    else:
        by_arrow = [i for p in parts for i in pcsv.read_csv(path / p).column("id").to_pylist()]
        by_duckdb = [r[0] for r in duckdb.sql(f"SELECT id FROM read_csv('{path}/*.csv', header = true)").fetchall()]
        assert all((path / p).read_text().count('"id","name"') == 1 for p in parts)  # a header per part
    assert sorted(by_duckdb) == sorted(by_arrow)
    return by_arrow


def assert_output(tmp_path, fmt: str, epochs) -> None:
    expected = [i for e in epochs for i in rows(e)]
    assert output_ids(tmp_path, fmt) == (sorted(expected) if fmt == "parquet" else expected)
    names = os.listdir(tmp_path / TARGET[fmt])
    assert sorted(n for n in names if not n.startswith("part-")) == [DIRECTORY_MANIFEST]  # no leftovers
    assert all(n.startswith(tuple(f"part-{e:08d}-" for e in epochs)) for n in names if n.startswith("part-"))


def run_epoch(writer, epoch: int, stored: dict[int, dict | None]) -> None:
    """One whole checkpoint: rows in two batches, prepare, store, commit."""
    ids = rows(epoch)
    writer.write(batch(ids[:2]))
    writer.write(batch(ids[2:]))
    stored[epoch] = writer.prepare_commit(epoch)
    writer.commit(epoch, stored[epoch])


#: where a crash comes in epoch 2, and the checkpoint the next run resumes from
CRASH_POINTS = {
    "while writing": 1,
    "after prepare_commit, before the checkpoint is stored": 1,
    "after the checkpoint is stored, before commit": 2,
    "after commit": 2,
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("crash", list(CRASH_POINTS))
def test_a_crash_at_any_step_leaves_exactly_the_committed_epochs(tmp_path, fmt, crash):
    stored: dict[int, dict | None] = {}
    writer = open_writer(tmp_path, fmt, rows_per_file="3") if fmt == "parquet" else open_writer(tmp_path, fmt)
    writer.recover(0, None)
    run_epoch(writer, 1, stored)
    writer.write(batch(rows(2)[:2]))
    if crash != "while writing":
        writer.write(batch(rows(2)[2:]))
        prepared = writer.prepare_commit(2)
        if crash != "after prepare_commit, before the checkpoint is stored":
            stored[2] = prepared
        if crash == "after commit":
            writer.commit(2, prepared)
    assert output_ids(tmp_path, fmt) == rows(1) + (rows(2) if crash == "after commit" else [])
    del writer  # killed: no close, no abort

    resumed = CRASH_POINTS[crash]
    for _ in range(2):  # recovery is idempotent: a crash right after it, then recovery again
        writer = open_writer(tmp_path, fmt, rows_per_file="3") if fmt == "parquet" else open_writer(tmp_path, fmt)
        writer.recover(resumed, stored[resumed])
        assert_output(tmp_path, fmt, range(1, resumed + 1))
    for epoch in range(resumed + 1, 4):
        run_epoch(writer, epoch, stored)
    writer.close()
    assert_output(tmp_path, fmt, [1, 2, 3])


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_commit_cut_short_is_finished_by_recovery(tmp_path, fmt):
    """The crash came in the middle of commit(2): one of its parts renamed, the others not."""
    stored: dict[int, dict | None] = {}
    writer = open_writer(tmp_path, fmt, rows_per_file="2") if fmt == "parquet" else open_writer(tmp_path, fmt)
    writer.recover(0, None)
    run_epoch(writer, 1, stored)
    writer.write(batch(rows(2)[:2]))
    writer._close_part()  # two parts in epoch 2, whatever the format
    writer.write(batch(rows(2)[2:]))
    stored[2] = writer.prepare_commit(2)
    first = stored[2]["files"][0]
    os.replace(tmp_path / TARGET[fmt] / f".{first}.pending", tmp_path / TARGET[fmt] / first)
    del writer
    for _ in range(2):
        writer = open_writer(tmp_path, fmt)
        writer.recover(2, stored[2])
        assert_output(tmp_path, fmt, [1, 2])


@pytest.mark.parametrize("fmt", FORMATS)
def test_falling_back_to_an_earlier_checkpoint_rolls_later_epochs_back(tmp_path, fmt):
    stored: dict[int, dict | None] = {}
    writer = open_writer(tmp_path, fmt)
    writer.recover(0, None)
    for epoch in (1, 2, 3):
        run_epoch(writer, epoch, stored)
    assert_output(tmp_path, fmt, [1, 2, 3])
    del writer
    for _ in range(2):  # checkpoint 3 turned out corrupt: the run resumes from 1
        writer = open_writer(tmp_path, fmt)
        writer.recover(1, stored[1])
        assert_output(tmp_path, fmt, [1])
    for epoch in (2, 3):
        run_epoch(writer, epoch, stored)
    assert_output(tmp_path, fmt, [1, 2, 3])
    del writer
    writer = open_writer(tmp_path, fmt)  # no checkpoint survived at all
    writer.recover(0, None)
    assert_output(tmp_path, fmt, [])


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_epoch_without_rows_makes_nothing_visible(tmp_path, fmt):
    stored: dict[int, dict | None] = {}
    writer = open_writer(tmp_path, fmt)
    writer.recover(0, None)
    stored[1] = writer.prepare_commit(1)
    writer.commit(1, stored[1])
    assert output_ids(tmp_path, fmt) == []
    run_epoch(writer, 2, stored)
    writer.write(batch(rows(3)))
    writer.close()  # a clean end commits the rows after the last checkpoint as one more epoch
    assert_output(tmp_path, fmt, [2, 3])


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_crash_in_the_first_epoch_leaves_nothing(tmp_path, fmt):
    writer = open_writer(tmp_path, fmt)
    writer.recover(0, None)
    writer.write(batch(rows(1)))
    writer.prepare_commit(1)
    del writer
    writer = open_writer(tmp_path, fmt)
    writer.recover(0, None)
    assert_output(tmp_path, fmt, [])
    run_epoch(writer, 1, {})
    assert_output(tmp_path, fmt, [1])


def test_parquet_parts_roll_within_an_epoch_and_are_named_by_epoch(tmp_path):
    writer = open_writer(tmp_path, "parquet", rows_per_file="2")
    writer.recover(0, None)
    writer.write(batch(rows(1)))
    prepared = writer.prepare_commit(1)
    assert prepared == {"files": [f"part-00000001-000{i}.parquet" for i in range(3)], "rows": 5}
    assert sorted(os.listdir(tmp_path / "out")) == sorted([DIRECTORY_MANIFEST] + [f".{n}.pending" for n in prepared["files"]])
    assert output_ids(tmp_path, "parquet") == []  # nothing visible before the commit
    writer.commit(1, prepared)
    writer.commit(1, prepared)  # again: nothing changes
    assert sorted(os.listdir(tmp_path / "out")) == sorted([DIRECTORY_MANIFEST] + prepared["files"])
    assert output_ids(tmp_path, "parquet") == rows(1)


@pytest.mark.parametrize("mode, kept", [("overwrite", False), ("append", True)])
def test_a_new_history_overwrites_or_appends_to_earlier_output(tmp_path, mode, kept):
    (tmp_path / "out").mkdir()
    pq.write_table(pa.Table.from_batches([batch([1, 2])]), tmp_path / "out" / "part-00000003-0000.parquet")
    (tmp_path / "out.jsonl").mkdir()
    (tmp_path / "out.jsonl" / "part-00000003-0000.jsonl").write_text('{"id": 1, "name": "n1"}\n{"id": 2, "name": "n2"}\n')
    rolled = {"rows_per_file": "100"}  # a Parquet sink appends parts (CREATE does not know of checkpoints)
    for fmt in ("parquet", "json"):
        writer = open_writer(tmp_path, fmt, mode=mode, **(rolled if fmt == "parquet" else {}))
        writer.recover(0, None)
        run_epoch(writer, 1, {})
        expected = ([1, 2] if kept else []) + rows(1)
        assert output_ids(tmp_path, fmt) == (expected if fmt == "json" else sorted(expected))
        del writer
        resumed = open_writer(tmp_path, fmt, mode=mode, **(rolled if fmt == "parquet" else {}))  # a resumed run never wipes what was committed
        resumed.recover(1, None)
        assert output_ids(tmp_path, fmt) == (expected if fmt == "json" else sorted(expected))


def test_appended_parquet_parts_are_numbered_after_the_earlier_ones(tmp_path):
    writer = open_writer(tmp_path, "parquet", mode="append", rows_per_file="100")
    writer.recover(0, None)
    run_epoch(writer, 1, {})
    writer.close()
    # --from-scratch (recover(0) with the manifest of an earlier history): appended after it
    writer = open_writer(tmp_path, "parquet", mode="append", rows_per_file="100")
    writer.recover(0, None)
    run_epoch(writer, 1, {})
    writer.close()
    assert sorted(os.listdir(tmp_path / "out")) == sorted([
        DIRECTORY_MANIFEST, "part-00000001-0000.parquet", "part-00000002-0000.parquet"
    ])
    assert output_ids(tmp_path, "parquet") == sorted(rows(1) * 2)


def test_checkpointed_file_sink_errors(tmp_path):
    for fmt in FORMATS:
        (tmp_path / TARGET[fmt]).write_text("")
        with pytest.raises(ConnectorError, match=r"with checkpoints a file sink writes a directory of part files "
                                                 r".* but .*out.* is a file"):
            open_writer(tmp_path, fmt)
        os.remove(tmp_path / TARGET[fmt])
    writer = open_writer(tmp_path, "csv")
    with pytest.raises(ConnectorError, match=r"written to before recover\(\)"):
        writer.write(batch([1]))
    writer.recover(0, None)
    with pytest.raises(ConnectorError, match="the checkpoint resumes at epoch 5, but the sink's manifest .* has epochs up to 0"):
        open_writer(tmp_path, "csv").recover(5, {"files": [], "rows": 0})
    os.remove(tmp_path / "out.csv" / DIRECTORY_MANIFEST)
    with pytest.raises(ConnectorError, match="the checkpoint resumes at epoch 1, but the sink's manifest .* is gone"):
        open_writer(tmp_path, "csv").recover(1, None)


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_appending_to_a_directory_that_does_not_exist_yet(tmp_path, fmt):
    writer = open_writer(tmp_path, fmt, mode="append")
    writer.recover(0, None)
    run_epoch(writer, 1, {})
    assert_output(tmp_path, fmt, [1])


def test_a_missing_part_of_the_epoch_to_finish_is_an_error(tmp_path):
    stored: dict[int, dict | None] = {}
    writer = open_writer(tmp_path, "json")
    writer.recover(0, None)
    run_epoch(writer, 1, stored)
    writer.write(batch(rows(2)))
    stored[2] = writer.prepare_commit(2)
    (pending,) = [n for n in os.listdir(tmp_path / "out.jsonl") if n.endswith(".pending")]
    os.remove(tmp_path / "out.jsonl" / pending)
    with pytest.raises(ConnectorError, match=r"part file part-00000002-0000\.jsonl of checkpoint epoch 2 is missing"):
        open_writer(tmp_path, "json").recover(2, stored[2])


def test_writers_say_they_deliver_exactly_once(tmp_path):
    for fmt in FORMATS:
        assert open_writer(tmp_path, fmt).delivery == "exactly-once"


def test_a_manifest_save_cut_short_by_a_crash_is_cleaned_up(tmp_path):
    writer = open_writer(tmp_path, "parquet")
    writer.recover(0, None)
    run_epoch(writer, 1, {})
    del writer
    stale = tmp_path / "out" / f".{DIRECTORY_MANIFEST}.999999999.inprogress"  # a process that is gone
    stale.write_text('{"version": 1')
    writer = open_writer(tmp_path, "parquet")
    writer.recover(1, None)
    assert not stale.exists()
    assert_output(tmp_path, "parquet", [1])
