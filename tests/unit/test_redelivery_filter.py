"""The JetStream redelivery filter: within one run, a stream sequence enters the
pipeline at most once — whether its copy arrives in the same batch, after the
original's batch was acked, or while an earlier batch still holds it."""

from __future__ import annotations

import numpy as np

from sqlstream.connectors.nats.redelivery import TakenSequences


def _take(seen: TakenSequences, *sequences: int) -> list[int]:
    batch = np.array(sequences, dtype=np.int64)
    return batch[seen.take(batch)].tolist()


def test_copies_within_one_batch_are_dropped_after_the_first():
    seen = TakenSequences()
    assert _take(seen, 1, 2, 3, 2, 1, 4, 4) == [1, 2, 3, 4]


def test_copies_of_earlier_batches_are_dropped_held_or_acked():
    seen = TakenSequences()
    assert _take(seen, 1, 2, 3) == [1, 2, 3]  # batch 1 (acked meanwhile, or still held: the same to the filter)
    assert _take(seen, 4, 5) == [4, 5]  # batch 2
    assert _take(seen, 6, 2, 4, 7, 3) == [6, 7]  # redelivered copies of both, mixed with new messages
    assert _take(seen, 1, 5) == []


def test_a_restart_rewind_and_the_old_timers_deliver_each_message_once():
    """What a restart does: the rewind to the ack floor delivers 10..14 again, then the
    previous run's redelivery timers send some of them a third and fourth time."""
    seen = TakenSequences()
    assert _take(seen, 10, 11, 12, 13, 14) == [10, 11, 12, 13, 14]
    assert _take(seen, 15, 12, 13, 16) == [15, 16]
    assert _take(seen, 12, 13, 17) == [17]


def test_out_of_order_first_deliveries_are_kept_and_remembered():
    seen = TakenSequences()
    assert _take(seen, 5, 6, 9) == [5, 6, 9]
    assert _take(seen, 7, 3, 8) == [7, 3, 8]  # another process's unacked messages, redelivered to us
    assert seen.above.tolist() == [3, 5, 6, 7, 8, 9]
    assert _take(seen, 3, 7, 10) == [10]


def test_the_ack_floor_bounds_memory_and_everything_below_it_is_a_copy():
    seen = TakenSequences()
    _take(seen, *range(1, 1001))
    assert seen.size == 1000
    seen.advance_floor(990)
    assert seen.size == 10 and seen.above.tolist() == list(range(991, 1001))
    assert _take(seen, 5, 990, 995, 1001) == [1001]  # at or below the floor: acked on the server
    seen.advance_floor(500)  # a floor never moves back
    assert seen.floor == 990


def test_over_the_memory_cap_the_lowest_sequences_are_forgotten_and_counted():
    seen = TakenSequences(max_kept=100)
    _take(seen, *range(1, 251))
    assert seen.size == 100 and seen.forgotten == 150
    assert seen.above[0] == 151


def test_large_batches_stay_vectorized():
    seen = TakenSequences()
    first = np.arange(1, 200_001, dtype=np.int64)
    assert seen.take(first).all()
    rng = np.random.default_rng(7)
    mixed = np.concatenate([rng.choice(first, 5_000), np.arange(200_001, 205_001)])
    rng.shuffle(mixed)
    new = seen.take(mixed)
    assert sorted(mixed[new].tolist()) == list(range(200_001, 205_001))
