"""Checkpoint positions of the replayable sources (file: JSON lines, CSV, Parquet, globs;
generator): a reader opened at the position another reader reported returns exactly the
rows that follow, so the two reads together equal one whole read."""

from __future__ import annotations

import json
import logging
import os
import time

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlstream.connectors.base import RunContext
from sqlstream.errors import ConnectorError
from sqlstream.testing import ManualClock, TestSession

COLUMNS = "id BIGINT, name VARCHAR"


def file_source(tmp_path, path: str, fmt: str, columns: str = COLUMNS, **options):
    session = TestSession(base_dir=str(tmp_path))
    extra = "".join(f", {k} = {v!r}" for k, v in options.items())
    session.execute(f"CREATE SOURCE src ({columns}) WITH (connector = 'file', path = '{path}', format = '{fmt}'{extra})")
    return session.sources["src"].connector


def context(tmp_path, position=None, batch_size=3) -> RunContext:
    return RunContext(clock=ManualClock(), base_dir=str(tmp_path), file_batch_size=batch_size, start_position=position)


def read(connector, ctx: RunContext, stop_after: int | None = None) -> tuple[list[dict], dict | None]:
    """Rows of ``connector`` read from ``ctx.start_position``; with ``stop_after``, stop
    once that many batches came back (then the reader's position, JSON round-tripped as a
    checkpoint stores it)."""
    reader = connector.open(ctx)
    rows, batches = [], 0
    try:
        while not reader.exhausted and (stop_after is None or batches < stop_after):
            item = reader.poll()
            if item is not None:
                rows.extend(item.batch.to_pylist())
                batches += 1
        return rows, json.loads(json.dumps(reader.position()))
    finally:
        reader.close()


def resumed_read(connector, tmp_path, cut: int, first_batch: int, second_batch: int) -> list[dict]:
    head, position = read(connector, context(tmp_path, batch_size=first_batch), stop_after=cut)
    tail, _ = read(connector, context(tmp_path, position, batch_size=second_batch))
    return head + tail


def write_lines(path, ids, header: str | None = None, final_newline: bool = True) -> None:
    lines = [header] if header else []
    if header:
        lines += [f"{i},n{i}" for i in ids]
    else:
        lines += [orjson.dumps({"id": i, "name": f"n{i}"}).decode() for i in ids]
    path.write_text("\n".join(lines) + ("\n" if final_newline else ""))


def expected(ids) -> list[dict]:
    return [{"id": i, "name": f"n{i}"} for i in ids]


@pytest.fixture
def inputs(tmp_path):
    """JSON lines with an unterminated last line, CSV with a header, and Parquet with
    several row groups, each holding ids 0..22."""
    write_lines(tmp_path / "a.jsonl", range(23), final_newline=False)
    write_lines(tmp_path / "a.csv", range(23), header="id,name")
    pq.write_table(pa.table({"id": list(range(23)), "name": [f"n{i}" for i in range(23)]}), tmp_path / "a.parquet",
                   row_group_size=5)
    for number, ids in enumerate((range(0, 7), range(7, 8), range(8, 23))):  # globs over three files each
        write_lines(tmp_path / f"p{number}.jsonl", ids)
        write_lines(tmp_path / f"p{number}.csv", ids, header="id,name")
        pq.write_table(pa.table({"id": list(ids), "name": [f"n{i}" for i in ids]}), tmp_path / f"p{number}.parquet",
                       row_group_size=4)
    return tmp_path


CASES = [("a.jsonl", "json"), ("a.csv", "csv"), ("a.parquet", "parquet"),
         ("p*.jsonl", "json"), ("p*.csv", "csv"), ("p*.parquet", "parquet")]


@pytest.mark.parametrize("name, fmt", CASES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 12), first_batch=st.integers(1, 9), second_batch=st.integers(1, 9))
def test_a_resumed_read_returns_exactly_the_rest(inputs, name, fmt, cut, first_batch, second_batch):
    connector = file_source(inputs, name, fmt)
    assert resumed_read(connector, inputs, cut, first_batch, second_batch) == expected(range(23))


@pytest.mark.parametrize("name, fmt", CASES[:3])
def test_the_position_names_the_file_and_where_in_it(inputs, name, fmt):
    connector = file_source(inputs, name, fmt)
    rows, position = read(connector, context(inputs, batch_size=4), stop_after=2)
    assert len(rows) == 8
    assert position["file"] == str(inputs / name) and position["file_index"] == 0 and position["done"] == []
    if fmt == "parquet":
        assert position["row"] == 8
    else:
        data = (inputs / name).read_bytes()
        first = 1 if fmt == "csv" else 0  # the header line is not a row
        assert position["offset"] == len(b"".join(data.splitlines(keepends=True)[: first + 8]))
        assert position["line"] == first + 8
    rows, position = read(connector, context(inputs, position))
    assert rows == expected(range(8, 23))
    assert position["file"] is None and [d["path"] for d in position["done"]] == [str(inputs / name)]


def test_prefetched_blocks_do_not_move_the_position(inputs):
    """The reader thread reads ahead; the position stays that of the rows poll returned."""
    connector = file_source(inputs, "a.jsonl", "json")
    reader = connector.open(context(inputs, batch_size=2))
    try:
        while (item := reader.poll()) is None:
            pass
        assert item.batch.num_rows == 2
        deadline = time.monotonic() + 10
        while reader._queue.qsize() < 2 and time.monotonic() < deadline:  # let it read ahead
            time.sleep(0.001)
        assert reader._queue.qsize() == 2  # two more blocks read ahead ...
        assert reader.position()["line"] == 2  # ... and the position is still after the first
    finally:
        reader.close()


def test_a_glob_resumes_with_files_added_after_the_checkpoint(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_lines(folder / "b.jsonl", range(0, 5))
    write_lines(folder / "c.jsonl", range(5, 10))
    connector = file_source(tmp_path, "in/*.jsonl", "json")
    head, position = read(connector, context(tmp_path, batch_size=3), stop_after=3)  # b done (3 + 2 rows), 3 rows of c
    assert head == expected(range(8)) and position["file"] == str(folder / "c.jsonl")
    assert [d["path"] for d in position["done"]] == [str(folder / "b.jsonl")]
    write_lines(folder / "a.jsonl", range(100, 102))  # sorts first, came later: read after c
    write_lines(folder / "d.jsonl", range(10, 12))
    tail, _ = read(connector, context(tmp_path, position))
    assert tail == expected([8, 9, 100, 101, 10, 11])


def test_a_finished_file_that_changed_is_not_read_again_and_is_named(tmp_path, caplog):
    write_lines(tmp_path / "a.jsonl", range(3))
    write_lines(tmp_path / "b.jsonl", range(3, 6))
    connector = file_source(tmp_path, "*.jsonl", "json")
    _, position = read(connector, context(tmp_path, batch_size=3), stop_after=2)
    with open(tmp_path / "a.jsonl", "a") as handle:
        handle.write('{"id": 99, "name": "late"}\n')
    with caplog.at_level(logging.WARNING, logger="sqlstream.file"):
        tail, _ = read(connector, context(tmp_path, position))
    assert tail == []
    assert f"{tmp_path / 'a.jsonl'} changed after the checkpoint's run read it" in caplog.text
    assert "its new content is ignored" in caplog.text


def test_the_file_a_checkpoint_stopped_in_must_still_be_there(tmp_path):
    write_lines(tmp_path / "a.jsonl", range(6))
    write_lines(tmp_path / "b.jsonl", range(6, 8))
    connector = file_source(tmp_path, "*.jsonl", "json")
    _, position = read(connector, context(tmp_path, batch_size=3), stop_after=1)
    (tmp_path / "a.jsonl").write_text('{"id": 1}\n')
    with pytest.raises(ConnectorError, match=r"read .*a\.jsonl up to byte \d+, but it now has 10 bytes"):
        read(connector, context(tmp_path, position))
    os.remove(tmp_path / "a.jsonl")
    with pytest.raises(ConnectorError, match=r"the checkpoint stopped in .*a\.jsonl \(byte \d+\), which is gone"):
        read(connector, context(tmp_path, position))


def test_a_resumed_csv_file_keeps_its_header_names(tmp_path):
    (tmp_path / "a.csv").write_text("name,id\n" + "".join(f"n{i},{i}\n" for i in range(10)))
    connector = file_source(tmp_path, "a.csv", "csv")
    assert resumed_read(connector, tmp_path, 2, 3, 4) == expected(range(10))


# -- generator ---------------------------------------------------------------------------------


def generator(**options):
    session = TestSession()
    with_options = "".join(f", {k.replace('__', '.')} = {v!r}" for k, v in options.items())
    session.execute(f"CREATE SOURCE g (id BIGINT, v INT, ts TIMESTAMP) WITH (connector = 'generator'{with_options})")
    return session.sources["g"].connector


def generate(connector, clock: ManualClock, position=None, batches: int | None = None, batch_size: int = 7):
    reader = connector.open(RunContext(clock=clock, batch_size=batch_size, batch_timeout_us=1000, start_position=position))
    rows, count = [], 0
    while not reader.exhausted and (batches is None or count < batches):
        item = reader.poll()
        if item is None:
            wakeup = reader.next_wakeup()
            clock.advance(max(0.001, wakeup - clock.monotonic()) if wakeup else 0.001)
            continue
        rows.extend(item.batch.to_pylist())
        count += 1
    return rows, json.loads(json.dumps(reader.position()))


@pytest.mark.parametrize("options", [
    {"rows_per_second": 50, "max_rows": 9000, "fields__id__kind": "sequence", "fields__ts__max_delay": "2s"},
    {"rows_per_second": 0, "max_rows": 9000, "clock": "simulated", "fields__ts__step": "1s"},
])
def test_a_resumed_generator_continues_the_sequence_and_its_event_time(options):
    connector = generator(**options)
    whole, _ = generate(connector, ManualClock(start_us=1_800_000_000_000_000), batch_size=1000)
    head, position = generate(connector, ManualClock(start_us=1_800_000_000_000_000), batches=5)
    assert position["rows"] == len(head) > 0
    # resumed an hour later: the same rows, event time included, not the new wall clock
    tail, _ = generate(connector, ManualClock(start_us=1_800_003_600_000_000), position, batch_size=500)
    assert head + tail == whole
    assert len(whole) == 9000


def test_a_resumed_generator_keeps_its_rate():
    connector = generator(rows_per_second=100, fields__id__kind="sequence")
    clock = ManualClock()
    reader = connector.open(RunContext(clock=clock, batch_size=10, start_position={"rows": 500, "time_base_us": 0}))
    assert reader.poll() is None  # nothing due yet: the 500 rows count as produced
    clock.advance(0.1)
    assert reader.poll().batch.column("id").to_pylist() == list(range(500, 510))
