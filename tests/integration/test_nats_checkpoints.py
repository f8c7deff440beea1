"""Checkpoints with NATS against a real nats-server: a JetStream reader resumes exactly
after the position an earlier reader reported (whatever that one acked), the durable
consumer it recreates moves on with the resumed reader's acks, and a JetStream sink
that publishes an epoch twice (a replay after a crash) stores each message once."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from conftest import wait_until

from sqlstream.connectors.base import RunContext, SourceBatch
from sqlstream.connectors.options import RawOption
from sqlstream.connectors.registry import sink_connector, source_connector
from sqlstream.errors import ConnectorError
from sqlstream.runtime.clock import ManualClock, WallClock

pytestmark = pytest.mark.nats

SCHEMA = pa.schema([("id", pa.int64()), ("_stream_seq", pa.int64())])


def _raw(**options) -> dict[str, RawOption]:
    return {name: RawOption(value) for name, value in options.items() if value is not None}


def _source(url: str, stream: str | None, durable: str | None, subject: str | None = None):
    raw = _raw(connector="nats", url=url, stream=stream, durable=durable, subject=subject)
    schema = SCHEMA if stream else pa.schema([("id", pa.int64())])
    return source_connector("nats").create("events", schema, raw, None)


def _context(batch_size: int = 10, **fields) -> RunContext:
    # full batches only (the timeout is long): each poll that returns takes exactly batch_size messages
    return RunContext(clock=WallClock(), batch_size=batch_size, batch_timeout_us=60_000_000, checkpointing=True,
                      **fields)


def _take(reader, batches: int) -> list[SourceBatch]:
    out: list[SourceBatch] = []

    def more() -> bool:
        item = reader.poll()
        if item is not None:
            out.append(item)
        return len(out) >= batches

    wait_until(more, timeout=15, what=f"{batches} batches")
    return out


def _rows(items: list[SourceBatch]) -> list[tuple[int, int]]:
    return [(row["id"], row["_stream_seq"]) for item in items for row in item.batch.to_pylist()]


def _publish(nats_client, subject: str, ids) -> None:
    nats_client.js_publish(subject, [json.dumps({"id": i}).encode() for i in ids], msg_ids=[f"m{i}" for i in ids])


@pytest.mark.parametrize("durable", ["ck", None], ids=["durable", "ephemeral"])
@pytest.mark.parametrize("acked_batches", [0, 1], ids=["none-acked", "first-acked"])
def test_a_resumed_reader_reads_exactly_what_follows_the_position(nats_server, nats_client, durable, acked_batches):
    """Read 3 of 5 batches (acking none, or only the first), take the position, close:
    a reader opened at that position returns the other 20 messages, in stream order."""
    stream = f"CK_RESUME_{durable}_{acked_batches}"
    subject = f"ckresume.{durable}.{acked_batches}"
    nats_client.add_stream(stream, [subject])
    _publish(nats_client, subject, range(50))
    first = _source(nats_server.url, stream, durable).open(_context())
    try:
        taken = _take(first, 3)
        for item in taken[:acked_batches]:
            item.ack()
        position = first.position()
    finally:
        first.close()  # the rest stays unacked (buffered and not taken, or taken and not acked)
    assert position == {"stream": stream, "sequence": 30}
    assert json.loads(json.dumps(position)) == position  # JSON values, as a checkpoint stores them

    second = _source(nats_server.url, stream, durable).open(_context(start_position=position))
    try:
        assert second.position() == position  # before any message: where it resumes
        rest = _take(second, 2)
        assert second.position() == {"stream": stream, "sequence": 50}
    finally:
        second.close()
    before, after = _rows(taken), _rows(rest)
    assert [seq for _, seq in after] == list(range(31, 51))  # exactly what follows, in stream order
    assert sorted(i for i, _ in before + after) == list(range(50))  # all of them, each once


def test_the_recreated_durable_moves_with_the_resumed_readers_acks(nats_server, nats_client):
    """The resumed reader recreates the durable at the checkpoint: its ack floor starts
    there (what the first reader delivered and did not ack is gone from it) and moves
    with the resumed reader's acks, so a plain restart afterwards reads nothing again."""
    stream, subject = "CK_FLOOR", "ckfloor.in"
    nats_client.add_stream(stream, [subject])
    _publish(nats_client, subject, range(40))
    first = _source(nats_server.url, stream, "floor").open(_context())
    try:
        taken = _take(first, 2)
        taken[0].ack()
        position = first.position()
        wait_until(lambda: nats_client.consumer_info(stream, "floor").ack_floor.stream_seq == 10, what="first ack")
    finally:
        first.close()
    assert nats_client.consumer_info(stream, "floor").num_ack_pending > 0  # the first reader left unacked ones

    second = _source(nats_server.url, stream, "floor").open(_context(start_position=position))
    try:
        info = nats_client.consumer_info(stream, "floor")
        assert info.ack_floor.stream_seq == 20
        rest = _take(second, 2)
        assert [seq for _, seq in _rows(rest)] == list(range(21, 41))
        for item in rest:
            item.ack()
        wait_until(lambda: nats_client.consumer_info(stream, "floor").ack_floor.stream_seq == 40,
                   what="the resumed reader's acks to move the ack floor")
        assert nats_client.consumer_info(stream, "floor").num_ack_pending == 0
    finally:
        second.close()

    _publish(nats_client, subject, range(40, 50))
    third = _source(nats_server.url, stream, "floor").open(_context())  # no checkpoint: the durable's own state
    try:
        assert third.position() == {"stream": stream, "sequence": 40}
        assert [seq for _, seq in _rows(_take(third, 1))] == list(range(41, 51))
    finally:
        third.close()


def test_resuming_with_a_filter_subject_delivers_only_matching_messages_after_the_position(nats_server, nats_client):
    """One stream sequence orders every subject of the stream: a filtered reader resumes
    after it and gets only its subject's later messages."""
    stream = "CK_FILTER"
    nats_client.add_stream(stream, ["ckfilter.*"])
    for i in range(30):  # a.0 b.1 a.2 ...: the a messages have odd sequences
        nats_client.js_publish(f"ckfilter.{'a' if i % 2 == 0 else 'b'}", [json.dumps({"id": i}).encode()])
    first = _source(nats_server.url, stream, "fa", subject="ckfilter.a").open(_context())
    try:
        taken = _take(first, 1)
        position = first.position()
    finally:
        first.close()
    assert position == {"stream": stream, "sequence": 19}  # the 10th 'a' message
    resumed = _context(batch_size=5, start_position=position)  # 5 'a' messages are left
    second = _source(nats_server.url, stream, "fa", subject="ckfilter.a").open(resumed)
    try:
        rest = _rows(_take(second, 1))
    finally:
        second.close()
    assert [i for i, _ in _rows(taken)] == list(range(0, 20, 2))
    assert rest == [(i, i + 1) for i in range(20, 30, 2)]


def test_messages_removed_from_the_stream_before_the_resume_are_reported(nats_server, nats_client):
    stream, subject = "CK_LIMITS", "cklimits.in"
    nats_client.add_stream(stream, [subject], max_msgs=10)
    _publish(nats_client, subject, range(10))
    first = _source(nats_server.url, stream, "lim").open(_context())
    try:
        _take(first, 1)
        position = first.position()
    finally:
        first.close()
    _publish(nats_client, subject, range(10, 35))  # the stream keeps the last 10: 26..35
    second = _source(nats_server.url, stream, "lim").open(_context(start_position=position))
    try:
        assert [seq for _, seq in _rows(_take(second, 1))] == list(range(26, 36))
        assert second.problems() == [
            f"up to 15 messages after the checkpoint were no longer in stream '{stream}' when the run resumed "
            "(see the warning)"
        ]
    finally:
        second.close()


def test_a_position_in_another_stream_is_refused(nats_server, nats_client):
    nats_client.add_stream("CK_OTHER", ["ckother.in"])
    with pytest.raises(ConnectorError) as info:
        _source(nats_server.url, "CK_OTHER", "o").open(_context(start_position={"stream": "ELSEWHERE", "sequence": 4}))
    assert info.value.message == (
        "source 'events': the checkpoint's position {'stream': 'ELSEWHERE', 'sequence': 4} is not a position "
        "in stream 'CK_OTHER'"
    )
    assert info.value.hint == ("the source's stream changed since the checkpoint was taken: start without the "
                               "checkpoint (a new checkpoint_dir)")


def test_checkpointed_acks_are_sized_by_the_checkpoint_interval_not_the_windows(nats_server, nats_client):
    nats_client.add_stream("CK_SIZING", ["cksizing.in"])
    hour = 3_600_000_000
    reader = _source(nats_server.url, "CK_SIZING", "size").open(
        _context(retention_horizon_us=hour, checkpoint_interval_us=5_000_000))
    try:
        assert (reader.ack_wait_s, reader.max_ack_pending) == (40.0, -1)
        info = nats_client.consumer_info("CK_SIZING", "size")
        assert info.config.ack_wait == 40.0
    finally:
        reader.close()
    windows_only = _source(nats_server.url, "CK_SIZING", "size").open(
        RunContext(clock=WallClock(), retention_horizon_us=hour, checkpoint_interval_us=5_000_000))
    try:  # no checkpoints in this run: the windows hold the acks
        assert windows_only.ack_wait_s == 2 * 3600 + 30.0
    finally:
        windows_only.close()


# -- the JetStream sink -----------------------------------------------------------------------


def _sink(url: str, stream: str, subject: str, fmt: str = "json"):
    return sink_connector("nats").create("alerts", _raw(connector="nats", url=url, subject=subject, stream=stream,
                                                        format=fmt), None)


WINDOWS = pa.schema([("window_start", pa.timestamp("us")), ("window_end", pa.timestamp("us")),
                     ("sensor", pa.string()), ("peak", pa.float64())])


def _window_rows(start: int, count: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({
        "window_start": pa.array([1_700_000_000_000_000 + i * 1_000_000 for i in range(start, start + count)],
                                 pa.timestamp("us")),
        "window_end": pa.array([1_700_000_001_000_000 + i * 1_000_000 for i in range(start, start + count)],
                               pa.timestamp("us")),
        "sensor": [f"s{i % 3}" for i in range(start, start + count)],
        "peak": [float(i) for i in range(start, start + count)],
    }, schema=WINDOWS)


def test_a_replayed_epoch_is_stored_once_by_the_jetstream_sink(nats_server, nats_client):
    """Epoch 1 is written and prepared; the process dies before the checkpoint commits;
    the resumed run writes the same rows again, cut into other batches, and commits:
    the stream holds each window result once."""
    stream, subject = "CK_SINK", "cksink.out"
    nats_client.add_stream(stream, [subject])
    keys = ["window_start", "window_end", "sensor"]
    first = _sink(nats_server.url, stream, subject).open(WINDOWS, RunContext(clock=WallClock(), row_key_columns=keys,
                                                                              checkpointing=True))
    try:
        assert first.delivery == "effectively-once"
        first.write(_window_rows(0, 25))
        first.write(_window_rows(25, 15))
        prepared = first.prepare_commit(1)
        assert first.status()["stored"] == 40  # prepare_commit returned after every PubAck
        assert set(prepared) == {"stored_at_us"} and json.loads(json.dumps(prepared)) == prepared
    finally:
        first.abort()
    second = _sink(nats_server.url, stream, subject).open(WINDOWS, RunContext(clock=WallClock(), row_key_columns=keys,
                                                                               checkpointing=True))
    try:
        second.recover(1, prepared)  # at once: within the duplicate window
        assert second.status()["late_recoveries"] == 0
        for start in range(0, 40, 8):  # the replay cuts the epoch differently
            second.write(_window_rows(start, 8))
        prepared = second.prepare_commit(1)
        second.commit(1, prepared)
        assert (second.status()["stored"], second.status()["duplicates"]) == (0, 40)
    finally:
        second.close()
    stored = nats_client.stream_messages(stream)
    ids = [m.headers["Nats-Msg-Id"] for m in stored]
    assert len(ids) == 40 and len(set(ids)) == 40
    assert sorted(json.loads(m.data)["peak"] for m in stored) == [float(i) for i in range(40)]


def test_a_restart_after_the_duplicate_window_is_warned_about(nats_server, nats_client, caplog):
    stream, subject = "CK_SINK_LATE", "cksinklate.out"
    nats_client.add_stream(stream, [subject], duplicate_window=60.0)
    clock = ManualClock()
    ctx = RunContext(clock=clock, row_key_columns=["window_start", "window_end", "sensor"], checkpointing=True)
    first = _sink(nats_server.url, stream, subject).open(WINDOWS, ctx)
    try:
        first.write(_window_rows(0, 3))
        prepared = first.prepare_commit(7)
    finally:
        first.abort()
    clock.advance(90)
    second = _sink(nats_server.url, stream, subject).open(WINDOWS, ctx)
    try:
        second.recover(7, prepared)
        assert second.status()["late_recoveries"] == 1
    finally:
        second.close()
    assert ("sink 'alerts': resuming 90s after checkpoint 7, beyond stream 'CK_SINK_LATE''s duplicate_window (60s): "
            "rows the crashed run published after that checkpoint may be stored twice (raise the stream's "
            "duplicate_window to cover restarts)") in caplog.messages


def test_rows_of_a_stateless_query_keep_their_source_message_ids_across_batches(nats_server, nats_client):
    """Rows that carry their JetStream message's id get '<sink>:<stream>:<seq>', and a
    message's second row '#1', however the rows are cut into batches."""
    stream, subject = "CK_SINK_IDS", "cksinkids.out"
    nats_client.add_stream(stream, [subject])
    schema = pa.schema([("v", pa.int64())])

    def rows(ids: list[str]) -> pa.RecordBatch:
        return pa.RecordBatch.from_pydict({"v": list(range(len(ids))), "__src_id": ids})

    source_ids = ["IN:1", "IN:2", "IN:2", "IN:3"]
    for cuts in ([4], [1, 3], [3, 1]):
        writer = _sink(nats_server.url, stream, subject).open(schema, RunContext(clock=WallClock(), source_ids=True))
        try:
            assert writer.delivery == "effectively-once"
            at = 0
            for n in cuts:
                writer.write(rows(source_ids[at:at + n]))
                at += n
            writer.prepare_commit(1)
        finally:
            writer.close()
    ids = [m.headers["Nats-Msg-Id"] for m in nats_client.stream_messages(stream)]
    assert ids == ["alerts:IN:1", "alerts:IN:2", "alerts:IN:2#1", "alerts:IN:3"]


def test_rows_without_a_source_message_get_no_shared_id(nats_server, nats_client):
    """A row with no source id is published without Nats-Msg-Id (not with one id shared
    by all such rows, which the stream would drop as duplicates)."""
    stream, subject = "CK_SINK_NULL", "cksinknull.out"
    nats_client.add_stream(stream, [subject])
    schema = pa.schema([("v", pa.int64())])
    writer = _sink(nats_server.url, stream, subject).open(schema, RunContext(clock=WallClock(), source_ids=True))
    try:
        for _ in range(2):
            writer.write(pa.RecordBatch.from_pydict({"v": [1, 2], "__src_id": ["IN:7", None]}))
        writer.prepare_commit(1)
        assert writer.status()["rows_without_id"] == 2
    finally:
        writer.close()
    stored = nats_client.stream_messages(stream)
    assert [(m.headers or {}).get("Nats-Msg-Id") for m in stored] == ["alerts:IN:7", None, None]


def test_sinks_without_deterministic_ids_are_at_least_once(nats_server, nats_client):
    nats_client.add_stream("CK_SINK_ALO", ["cksinkalo.out"])
    schema = pa.schema([("v", pa.int64())])
    cases = [
        (_sink(nats_server.url, "CK_SINK_ALO", "cksinkalo.out"), RunContext(clock=WallClock())),  # no keys, no ids
        (_sink(nats_server.url, "CK_SINK_ALO", "cksinkalo.out", fmt="arrow"), RunContext(clock=WallClock(), source_ids=True)),
        (_sink(nats_server.url, None, "cksinkalo.out"), RunContext(clock=WallClock(), source_ids=True)),  # core NATS
    ]
    for connector, ctx in cases:
        writer = connector.open(schema, ctx)
        try:
            assert writer.delivery == "at-least-once"
            writer.write(pa.RecordBatch.from_pydict({"v": [1]}))
            writer.prepare_commit(3)
        finally:
            writer.close()


def test_core_nats_cannot_replay_and_says_what_is_lost(nats_server):
    core = _source(nats_server.url, None, None, subject="ckcore.in")
    assert core.replayable is False
    assert core.replay_gap() == (
        "source 'events' cannot replay: core NATS keeps no messages, so those published to 'ckcore.in' while the "
        "pipeline is down are lost (a resumed run restores its state and reads what arrives from then on); read "
        "the subject through a JetStream stream (stream = '...') to resume exactly"
    )
    reader = core.open(_context())
    try:
        assert reader.position() is None
    finally:
        reader.close()
    jetstream = _source(nats_server.url, "ANY", None)
    assert jetstream.replayable is True and jetstream.replay_gap() is None
