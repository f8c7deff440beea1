"""The batching rule network readers share (``BatchTimer``), fed times: no sleeps.

A small simulation drives it like the run loop does — messages arrive at a steady
rate, the driver polls, takes a batch when the rule says so and is then busy for a
fixed cost plus a cost per row — and checks the rule's promises: a quiet source's
message goes out at the next poll, batches grow with the arrival rate, a batch never
waits past ``batch_timeout``, and at full load batches are full."""

from __future__ import annotations

import math

import pytest

from sqlstream.connectors.batching import IDLE_POLL_S, BatchTimer


def test_an_idle_driver_takes_a_single_message_at_once():
    timer = BatchTimer(batch_size=8192, timeout_s=0.010)
    timer.polled(5.0)
    assert timer.due(pending=1, since=4.9995, now=5.0)
    assert timer.next_at(pending=1, since=4.9995, now=5.0) == 5.0


def test_nothing_buffered_is_never_due_and_polls_again_soon():
    timer = BatchTimer(batch_size=100, timeout_s=0.010)
    timer.polled(1.0)
    assert not timer.due(pending=0, since=0.5, now=1.0)
    assert timer.next_at(pending=0, since=None, now=1.0) == 1.0 + IDLE_POLL_S
    short = BatchTimer(batch_size=100, timeout_s=0.0002)  # a timeout under the idle poll bounds it
    assert short.next_at(pending=0, since=None, now=1.0) == 1.0 + 0.0002


def test_after_a_batch_the_driver_rests_as_long_as_it_was_busy():
    timer = BatchTimer(batch_size=100, timeout_s=0.010)
    timer.polled(1.000)
    timer.taken(1.000)
    timer.polled(1.003)  # the batch took 3 ms
    assert timer.busy_s == pytest.approx(0.003)
    assert not timer.due(pending=20, since=1.001, now=1.003)
    assert timer.next_at(pending=20, since=1.001, now=1.003) == pytest.approx(1.006)
    timer.polled(1.005)  # later polls do not measure again
    assert timer.busy_s == pytest.approx(0.003)
    assert not timer.due(pending=25, since=1.001, now=1.005)
    assert timer.due(pending=30, since=1.001, now=1.006)


def test_a_full_batch_never_waits():
    timer = BatchTimer(batch_size=100, timeout_s=0.010)
    timer.taken(1.000)
    timer.polled(1.004)
    assert timer.due(pending=100, since=1.003, now=1.004)
    assert timer.next_at(pending=150, since=1.003, now=1.004) == 1.004


def test_batch_timeout_bounds_the_wait_even_after_a_slow_batch():
    timer = BatchTimer(batch_size=8192, timeout_s=0.010)
    timer.taken(1.000)
    timer.polled(1.050)  # a 50 ms batch: resting would take 50 ms more
    assert not timer.due(pending=5, since=1.045, now=1.050)
    assert timer.next_at(pending=5, since=1.045, now=1.050) == pytest.approx(1.055)
    assert timer.due(pending=5, since=1.045, now=1.055)


def test_a_poll_before_the_driver_came_back_does_not_count_as_rest():
    """(next_at between a take and the next poll: the timeout still bounds it)"""
    timer = BatchTimer(batch_size=100, timeout_s=0.010)
    timer.taken(2.0)
    assert timer.next_at(pending=3, since=2.001, now=2.002) == pytest.approx(2.011)


# -- a simulated run loop -----------------------------------------------------------------------


def simulate(rate: float, fixed_s: float, per_row_s: float, batch_size: int = 8192, timeout_s: float = 0.010,
             seconds: float = 2.0, min_sleep_s: float = 0.0005):
    """Messages arrive every 1/rate seconds; the driver polls like the run loop: after a
    batch at once, else it sleeps until ``next_at`` (at least ``min_sleep_s``). Returns
    the batch sizes and each message's wait from arrival to the end of its batch."""
    timer = BatchTimer(batch_size, timeout_s)
    arrivals = [i / rate for i in range(int(seconds * rate))]
    now, taken, sizes, waits = 0.0, 0, [], []
    while taken < len(arrivals):
        timer.polled(now)
        pending = _count_arrived(arrivals, taken, now) - taken
        since = arrivals[taken] if pending else None
        if pending and timer.due(pending, since, now):
            count = min(pending, batch_size)
            timer.taken(now)
            now += fixed_s + per_row_s * count
            sizes.append(count)
            waits.extend(now - arrivals[i] for i in range(taken, taken + count))
            taken += count
            continue
        if not pending and taken < len(arrivals):  # (the next arrival wakes the loop's next idle poll)
            now = max(now + min_sleep_s, min(timer.next_at(0, None, now), arrivals[taken]))
            continue
        now = max(timer.next_at(pending, since, now), now + min_sleep_s)
    return sizes, waits


def _count_arrived(arrivals: list[float], start: int, now: float) -> int:
    """How many messages arrived by ``now`` (``arrivals`` is sorted)."""
    lo, hi = start, len(arrivals)
    while lo < hi:
        mid = (lo + hi) // 2
        if arrivals[mid] <= now:
            lo = mid + 1
        else:
            hi = mid
    return lo


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def test_a_slow_source_gets_one_message_batches_at_the_next_poll():
    sizes, waits = simulate(rate=100, fixed_s=0.001, per_row_s=0.00001)
    assert set(sizes) == {1}
    assert max(waits) <= 0.001 + 0.00001 + 0.0005 + 1e-9  # processing + at most one idle poll


def test_batches_grow_with_the_rate_and_waits_stay_under_the_timeout():
    small, _ = simulate(rate=1_000, fixed_s=0.002, per_row_s=0.00001)
    large, waits = simulate(rate=10_000, fixed_s=0.002, per_row_s=0.00001)
    assert sum(large) / len(large) > 4 * sum(small) / len(small)
    assert max(waits) < 0.010 + 0.002 + 0.00001 * max(large)  # the timeout, then the batch's own cost
    assert percentile(waits, 0.5) < 0.010  # well under the old rule's wait for the timeout


def test_the_driver_rests_as_long_as_it_works_on_partial_batches():
    sizes, _ = simulate(rate=10_000, fixed_s=0.002, per_row_s=0.00001, seconds=1.0)
    busy = sum(0.002 + 0.00001 * n for n in sizes)
    assert busy < 0.6  # of one simulated second: about half, not all of it


def test_at_full_load_batches_are_full():
    sizes, _ = simulate(rate=200_000, fixed_s=0.002, per_row_s=0.000006, batch_size=1024, seconds=0.2)
    steady = sizes[len(sizes) // 2 : -1]  # (the last batch takes what is left)
    assert len(steady) > 5 and steady == [1024] * len(steady)
