"""The pieces of a shuffle that need no server: the stable key hash that picks a row's
partition, and the exchange reader's bookkeeping per upstream partition (replays
dropped by source sequence, the least upstream watermark) (docs/scale-out.md#shuffles)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlstream.connectors.key_hash import key_hashes, partitions_of
from sqlstream.connectors.nats.exchange import _ExchangeDecoder, _headers, _Upstreams
from sqlstream.connectors.nats.messages import Received, encode_arrow_payload
from sqlstream.hidden import MIN_WATERMARK

KEYS = st.one_of(st.text(max_size=12), st.none())


@settings(deadline=None)
@given(st.lists(KEYS, min_size=1, max_size=40), st.integers(0, 5))
def test_equal_keys_hash_alike_however_the_array_is_laid_out(values, cut):
    plain = key_hashes([pa.array(values, pa.string())])
    for other in (pa.array(values, pa.large_string()), pa.array(values, pa.string()).dictionary_encode(),
                  pa.array(values, pa.binary())):
        assert key_hashes([other]).tolist() == plain.tolist()
    cut = min(cut, len(values))
    assert key_hashes([pa.array(values, pa.string()).slice(cut)]).tolist() == plain[cut:].tolist()
    index = {}
    for value, h in zip(values, plain.tolist()):
        assert index.setdefault(value, h) == h


def test_numbers_hash_by_value_and_spread_over_the_partitions():
    assert key_hashes([pa.array([0.0, -0.0])]).tolist()[0] == key_hashes([pa.array([-0.0])]).tolist()[0]
    assert len(set(key_hashes([pa.array([1, 2, 3])]).tolist())) == 3
    assert key_hashes([pa.array([7], pa.int32())]).tolist() == key_hashes([pa.array([7], pa.int64())]).tolist()
    batch = pa.record_batch({"k": pa.array(range(12_000))})
    counts = np.bincount(partitions_of(batch, ["k"], 12), minlength=12)
    assert counts.min() > 800 and counts.max() < 1200  # 1,000 each, give or take
    assert partitions_of(batch, [], 12).tolist() == [0] * 12_000
    two = pa.record_batch({"a": pa.array([1, 1, 2]), "b": pa.array(["x", "x", "x"])})
    parts = partitions_of(two, ["a", "b"], 64)
    assert parts[0] == parts[1]


def test_a_replay_is_dropped_even_when_messages_split_the_rows_of_one_source_message():
    ups = _Upstreams(2)
    assert ups.new_rows(0, "run1", np.array([1, 2, 3, 3])).tolist() == [True] * 4
    assert ups.new_rows(0, "run1", np.array([3, 4])).tolist() == [True, True]  # the third row of sequence 3
    # a new owner of upstream 0 replays from sequence 2: the same rows, cut otherwise
    assert ups.new_rows(0, "run2", np.array([2, 3, 3])).tolist() == [False] * 3
    assert ups.new_rows(0, "run2", np.array([3, 4, 5])).tolist() == [False, False, True]
    assert ups.new_rows(1, "run3", np.array([1])).tolist() == [True]  # upstreams are counted apart
    assert ups.replayed == 5
    # a paused owner (run2) wakes up and sends while the next owner (run4) runs: each run keeps its own count
    assert ups.new_rows(0, "run4", np.array([5, 6, 6])).tolist() == [False, True, True]
    assert ups.new_rows(0, "run2", np.array([6, 6, 6])).tolist() == [False, False, True]
    assert ups.new_rows(0, "run4", np.array([6, 7])).tolist() == [False, True]  # its third row of 6 was taken
    assert _Upstreams(2, ups.state()).state() == ups.state()


def _received(messages: list[tuple[int, str, int, pa.RecordBatch | None, bool]]) -> Received:
    payloads = [encode_arrow_payload(b) if b is not None else b"" for _, _, _, b, _ in messages]
    headers = [_headers(u, run, i, wm, idle) for i, (u, run, wm, _, idle) in enumerate(messages)]
    return Received([b"s"] * len(messages), payloads, headers, np.arange(1, len(messages) + 1))


def test_rows_take_the_least_watermark_of_the_upstreams_and_replays_are_dropped():
    schema = pa.schema([("k", pa.string()), ("__src_id", pa.string()), ("__wm", pa.int64())])

    def rows(ids, wms):
        return pa.record_batch([pa.array(["a"] * len(ids)), pa.array([f"S:{i}" for i in ids]), pa.array(wms)],
                               schema=schema)

    decoder = _ExchangeDecoder(schema, 2, None)
    batch, _ = decoder.decode(_received([(0, "a", 100, rows([1, 2], [50, 100]), False)]))
    assert batch.num_rows == 2
    assert decoder.row_watermarks.tolist() == [MIN_WATERMARK] * 2  # upstream 1 has said nothing yet
    assert decoder.upstreams.watermark() == MIN_WATERMARK
    replay = rows([2, 3], [100, 150])  # upstream 0 again, from its checkpoint at S:1
    batch, _ = decoder.decode(_received([(1, "b", 80, None, False), (0, "c", 200, replay, False)]))
    assert batch.column("__src_id").to_pylist() == ["S:3"]  # S:2 came before
    assert decoder.row_watermarks.tolist() == [80]
    assert decoder.upstreams.watermark() == 80
    decoder.decode(_received([(1, "b", 90, None, True)]))  # upstream 1 is idle: it no longer holds the watermark
    assert decoder.upstreams.watermark() == 200
