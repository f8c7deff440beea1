"""The connector conformance kit (sqlstream.testing): it passes the built-in file and
generator connectors and catches connectors that break the contract."""

from __future__ import annotations

import json
import time

import pyarrow as pa
import pytest

from sqlstream.connectors import (
    SINK_CONNECTORS,
    SOURCE_CONNECTORS,
    DeadLetter,
    OptionSpec,
    SinkConnector,
    SinkWriter,
    SourceBatch,
    SourceConnector,
    SourceReader,
)
from sqlstream.testing import check_sink_connector, check_source_connector

SCHEMA = pa.schema([("a", pa.int64())])


def test_file_source_and_sink_conform(tmp_path):
    (tmp_path / "good.jsonl").write_text('{"a": 1}\n{"a": 2}\n')
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\nnot json\n')
    table = check_source_connector(SOURCE_CONNECTORS["file"], {"path": str(tmp_path / "good.jsonl"), "format": "json"},
                                   SCHEMA, bad_input={"path": str(tmp_path / "bad.jsonl"), "format": "json"})
    assert table.to_pylist() == [{"a": 1}, {"a": 2}]
    out = tmp_path / "out.jsonl"
    check_sink_connector(SINK_CONNECTORS["file"], {"path": str(out), "format": "json"}, pa.table({"a": [1, 2, 3]}),
                         read_back=lambda: pa.Table.from_pylist([json.loads(line) for line in out.read_text().splitlines()]))
    assert out.read_text().splitlines() == ['{"a":1}', '{"a":2}', '{"a":3}']


def test_generator_conforms():
    table = check_source_connector(SOURCE_CONNECTORS["generator"], {"max_rows": 7}, pa.schema([("id", pa.int64())]))
    assert table.num_rows == 7


# -- connectors that break the contract: the kit must catch each ------------------------------


class _Reader(SourceReader):
    bounded = True

    def __init__(self, rows: int = 2, sleep: float = 0.0, ends: bool = True, dead: bool = True, ack: bool = False):
        self.rows, self.sleep, self.ends, self.dead, self.ack = rows, sleep, ends, dead, ack
        self.done = False
        self.closed = 0

    def poll(self):
        time.sleep(self.sleep)
        if self.done:
            return None
        self.done = self.ends
        batch = pa.RecordBatch.from_pydict({"a": pa.array(range(self.rows), pa.int64())})
        letters = [DeadLetter("s", "decode", "not a number", raw="x")] if self.dead else []
        return SourceBatch(batch, letters, raw_count=self.rows + len(letters), ack=(lambda: None) if self.ack else None)

    @property
    def exhausted(self):
        return self.done

    def close(self):
        self.closed += 1


def _source(**reader_args):
    class Broken(SourceConnector):
        name = "broken"
        options = (OptionSpec("n", "int", default=1),)

        def open(self, ctx):
            return _Reader(**reader_args)

    return Broken


def test_a_good_fake_passes():
    assert check_source_connector(_source(), {}, SCHEMA, bad_input={}).num_rows == 2


def test_a_blocking_poll_is_caught():
    with pytest.raises(AssertionError, match=r"poll\(\) took .* it must not block"):
        check_source_connector(_source(sleep=0.3), {}, SCHEMA, poll_bound_s=0.1)


def test_a_bounded_source_that_never_ends_is_caught():
    with pytest.raises(AssertionError, match="a bounded reader did not end"):
        check_source_connector(_source(ends=False), {}, SCHEMA, run_for_s=0.2)


def test_bad_records_that_vanish_are_caught():
    with pytest.raises(AssertionError, match="the bad input gave no dead letters"):
        check_source_connector(_source(dead=False), {}, SCHEMA, bad_input={})


def test_an_acknowledging_source_without_acks_is_caught():
    broken = _source()
    broken.acknowledges = True
    with pytest.raises(AssertionError, match="acknowledges, but a batch of 2 rows has no ack"):
        check_source_connector(broken, {}, SCHEMA)
    with pytest.raises(AssertionError, match="does not declare acknowledges, but its batch has an ack"):
        check_source_connector(_source(ack=True), {}, SCHEMA)


def test_options_not_validated_at_create_are_caught():
    class Lax(_source()):
        @classmethod
        def create(cls, source_name, schema, raw, where):
            return cls(source_name, schema, {})

    with pytest.raises(AssertionError, match="an unknown option .* was accepted at CREATE"):
        check_source_connector(Lax, {}, SCHEMA)


class _Writer(SinkWriter):
    def __init__(self, overcount: bool):
        self.overcount = overcount
        self.closed = False

    def write(self, batch):
        pass

    def durable_rows(self, written):
        return written + 1 if self.overcount else written

    def close(self):
        if self.closed:
            raise RuntimeError("already closed")
        self.closed = True


def _sink(overcount: bool = False):
    class BrokenSink(SinkConnector):
        name = "broken_sink"

        def open(self, schema, ctx):
            return _Writer(overcount)

    return BrokenSink


def test_a_sink_that_closes_once_only_is_caught():
    with pytest.raises(AssertionError, match=r"close\(\) is not idempotent: a second call raised RuntimeError"):
        check_sink_connector(_sink(), {}, pa.table({"a": [1]}))


def test_a_sink_that_overstates_durable_rows_is_caught():
    with pytest.raises(AssertionError, match=r"durable_rows\(1\) returned 2; expected 0..1"):
        check_sink_connector(_sink(overcount=True), {}, pa.table({"a": [1]}))
