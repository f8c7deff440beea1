"""Window math and watermark stamps against reference formulas (property-based).

* window assignment (TUMBLE/HOP/CUMULATE) equals a per-row reference written with
  Python integers, for negative and epoch-edge timestamps and HOP sizes that are not
  a multiple of the slide; panes (HOP: gcd(slide, size), CUMULATE: step) tile windows;
* per-row watermark stamps equal "max of earlier rows − delay" however the input is
  cut into batches;
* any arrival order within the allowed lateness gives the same final windows as the
  sorted input, for every window kind, through the real operators.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlstream.hidden import MIN_WATERMARK, WM_COLUMN
from sqlstream.operators.aggregates import AggCall, output_type
from sqlstream.operators.base import Operator
from sqlstream.operators.window_aggregate import make_window_operator
from sqlstream.operators.windows import (
    LateFilterOperator,
    first_window_end,
    last_window_end,
    pane_size,
    tumble_start,
    window_assignments,
)
from sqlstream.plan.nodes import WindowSpec
from sqlstream.runtime.watermarks import WatermarkTracker, row_watermarks

# -- reference formulas (plain Python integers: floor division is exact) -------------------


def ref_windows(spec: WindowSpec, ts: int) -> set[tuple[int, int]]:
    if spec.kind == "tumble":
        start = ts - ts % spec.size_us
        return {(start, start + spec.size_us)}
    if spec.kind == "hop":
        out = set()
        start = ts - ts % spec.slide_us  # the last window starting at or before ts
        while start + spec.size_us > ts:
            out.add((start, start + spec.size_us))
            start -= spec.slide_us
        return out
    if spec.kind == "cumulate":
        base = ts - ts % spec.size_us
        return {
            (base, base + k * spec.step_us)
            for k in range(1, spec.size_us // spec.step_us + 1)
            if base + k * spec.step_us > ts
        }
    raise AssertionError(spec.kind)


def ref_sessions(times_by_key: dict, gap: int) -> set[tuple]:
    """(key, start, end, count) of every session: rows join while ts - prev < gap."""
    out = set()
    for key, times in times_by_key.items():
        times = sorted(times)
        first = prev = times[0]
        count = 1
        for t in times[1:]:
            if t - prev < gap:
                count += 1
            else:
                out.add((key, first, prev + gap, count))
                first, count = t, 1
            prev = t
        out.add((key, first, prev + gap, count))
    return out


# -- strategies -------------------------------------------------------------------------------

EDGE = 10**15  # ±31 years around the epoch, in µs
timestamps = st.one_of(
    st.integers(-EDGE, EDGE),
    st.integers(-5_000, 5_000),  # around the epoch itself
    st.sampled_from([0, -1, 1, -(2**40), 2**40, 1_700_000_000_000_000, -1_700_000_000_000_000]),
)
durations = st.integers(1, 5_000_000)


@st.composite
def specs(draw, kinds=("tumble", "hop", "cumulate")):
    kind = draw(st.sampled_from(kinds))
    if kind == "tumble":
        return WindowSpec("tumble", size_us=draw(durations))
    if kind == "hop":
        slide = draw(st.integers(1, 2_000_000))
        # sizes equal to or above the slide (the planner rejects smaller), often not a multiple of it
        multiple = draw(st.integers(1, 8))
        size = multiple * slide + draw(st.one_of(st.just(0), st.integers(0, slide - 1)))
        return WindowSpec("hop", slide_us=slide, size_us=size)
    step = draw(st.integers(1, 2_000_000))
    return WindowSpec("cumulate", step_us=step, size_us=step * draw(st.integers(1, 8)))


# -- window assignment ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(specs(), st.lists(timestamps, min_size=1, max_size=30))
def test_window_assignment_matches_reference(spec, times):
    ts = np.array(times, dtype=np.int64)
    rows, start, end = window_assignments(spec, ts)
    got = defaultdict(set)
    for r, s, e in zip(rows.tolist(), start.tolist(), end.tolist(), strict=True):
        got[r].add((s, e))
    for i, t in enumerate(times):
        expected = ref_windows(spec, t)
        assert got[i] == expected, (spec, t)
        assert all(s <= t < e for s, e in expected)
        # the earliest and latest window ends, used for lateness and closing
        assert first_window_end(spec, ts[i : i + 1])[0] == min(e for _, e in expected)
        assert last_window_end(spec, ts[i : i + 1])[0] == max(e for _, e in expected)


@settings(max_examples=300, deadline=None)
@given(specs(("hop", "cumulate")), st.lists(timestamps, min_size=1, max_size=30))
def test_panes_tile_windows(spec, times):
    """A row's windows are exactly the windows of its pane's start: aggregating per pane
    and combining panes per window equals aggregating rows per window."""
    pane = pane_size(spec)
    if spec.kind == "hop":
        assert pane == math.gcd(spec.slide_us, spec.size_us)
    ts = np.array(times, dtype=np.int64)
    panes = tumble_start(ts, pane)
    for t, p in zip(times, panes.tolist(), strict=True):
        assert p <= t < p + pane
        assert ref_windows(spec, p) == ref_windows(spec, t)


def test_hop_size_not_multiple_of_slide_examples():
    spec = WindowSpec("hop", slide_us=4, size_us=10)
    assert ref_windows(spec, 0) == {(0, 10), (-4, 6), (-8, 2)}
    rows, start, end = window_assignments(spec, np.array([0, -1, 9, 10], dtype=np.int64))
    got = sorted(zip(rows.tolist(), start.tolist(), end.tolist(), strict=True))
    assert got == [
        (0, -8, 2), (0, -4, 6), (0, 0, 10),
        (1, -8, 2), (1, -4, 6),
        (2, 0, 10), (2, 4, 14), (2, 8, 18),
        (3, 4, 14), (3, 8, 18),
    ]
    assert pane_size(spec) == 2


def test_tumble_before_the_epoch_floors():
    ts = np.array([-1, -1_000_000, -1_000_001, 0, 999_999], dtype=np.int64)
    assert tumble_start(ts, 1_000_000).tolist() == [-1_000_000, -1_000_000, -2_000_000, 0, 0]


# -- watermark stamps -----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-(10**12), 10**12), min_size=1, max_size=60),
    st.integers(0, 10**9),
    st.lists(st.integers(1, 20), min_size=1, max_size=10),
)
def test_row_watermarks_are_max_of_earlier_rows_minus_delay(times, delay, cuts):
    expected = []
    running = None
    for t in times:
        expected.append(MIN_WATERMARK if running is None else running - delay)
        running = t if running is None else max(running, t)
    # one batch
    wm, new_max = row_watermarks(np.array(times, dtype=np.int64), MIN_WATERMARK, delay)
    assert wm.tolist() == expected
    assert new_max == max(times)
    # any cut into batches gives the same stamps
    tracker = WatermarkTracker(delay)
    stamps: list[int] = []
    i = 0
    while i < len(times):
        size = cuts[len(stamps) % len(cuts)]
        stamps += tracker.stamp(np.array(times[i : i + size], dtype=np.int64)).tolist()
        i += size
    assert stamps == expected
    assert tracker.watermark == max(times) - delay


def test_watermark_before_any_row_is_minimum():
    tracker = WatermarkTracker(5)
    assert tracker.watermark == MIN_WATERMARK
    assert tracker.stamp(np.array([10, 3, 20], dtype=np.int64)).tolist() == [MIN_WATERMARK, 5, 5]
    assert tracker.watermark == 15


# -- permutations within the allowed lateness -------------------------------------------------------


class _Collect(Operator):
    def __init__(self):
        super().__init__()
        self.batches: list[pa.RecordBatch] = []

    def on_batch(self, batch, port):
        self.batches.append(batch)


CALLS = [
    AggCall("count_star", None, "n"),
    AggCall("sum", "__a0", "total", pa.int64()),
    AggCall("min", "__a0", "lo", pa.int64()),
    AggCall("max", "__a0", "hi", pa.int64()),
    AggCall("count_distinct", "__a0", "distinct_v", pa.int64()),
]


def _run_operator(spec: WindowSpec, keys, values, times, delay: int, cuts: list[int], late: list | None = None) -> list[tuple]:
    """Feed rows in the given order, cut into batches, through the late filter and a
    window operator; the source semantics (per-row ``__wm``, watermark after each
    batch, end) are applied as the runtime does. Dead letters go to ``late``."""
    fields = [pa.field("k", pa.int64()), pa.field("window_start", pa.timestamp("us")),
              pa.field("window_end", pa.timestamp("us"))]
    fields += [pa.field(c.output, output_type(c.func, c.arg_type)) for c in CALLS] + [pa.field(WM_COLUMN, pa.int64())]
    op = LateFilterOperator(spec, "__t", "src")
    op.dead_letter = (late if late is not None else []).extend
    window = op.connect(make_window_operator(spec, ["k"], CALLS, pa.schema(fields), None))
    sink = window.connect(_Collect())
    tracker = WatermarkTracker(delay)
    i = 0
    c = 0
    while i < len(times):
        size = cuts[c % len(cuts)]
        c += 1
        t = np.array(times[i : i + size], dtype=np.int64)
        batch = pa.record_batch(
            {
                "k": pa.array(keys[i : i + size], pa.int64()),
                "__a0": pa.array(values[i : i + size], pa.int64()),
                "__t": pa.array(t, pa.timestamp("us")),
                WM_COLUMN: pa.array(tracker.stamp(t)),
            }
        )
        op.push(batch)
        op.advance(tracker.watermark)
        i += size
    op.end()
    assert window.state_rows() == 0  # the end of the input closes every window
    rows = [r for b in sink.batches for r in b.to_pylist()]
    out = [tuple(v for k, v in r.items() if k != WM_COLUMN) for r in rows]
    # each window and key is emitted exactly once
    assert len(out) == len({(r[0], r[1], r[2]) for r in out})
    return sorted(out, key=repr)


@st.composite
def bounded_disorder(draw):
    """Events and an arrival order in which no row is late: arrival sorts by ts + jitter
    with jitter ≤ delay, so every earlier row is at most ``delay`` ahead."""
    n = draw(st.integers(1, 60))
    delay = draw(st.integers(0, 3_000))
    times = draw(st.lists(st.integers(-20_000, 20_000), min_size=n, max_size=n))
    keys = draw(st.lists(st.one_of(st.none(), st.integers(0, 3)), min_size=n, max_size=n))
    values = draw(st.lists(st.integers(-5, 5), min_size=n, max_size=n))
    jitter = draw(st.lists(st.integers(0, delay), min_size=n, max_size=n))
    order = sorted(range(n), key=lambda i: (times[i] + jitter[i], i))
    cuts = draw(st.lists(st.integers(1, 15), min_size=1, max_size=6))
    return delay, times, keys, values, order, cuts


window_specs = st.one_of(
    st.integers(1, 4_000).map(lambda s: WindowSpec("tumble", size_us=s)),
    st.tuples(st.integers(1, 3_000), st.integers(0, 9_000)).map(lambda p: WindowSpec("hop", slide_us=p[0], size_us=p[0] + p[1])),
    st.tuples(st.integers(1, 2_000), st.integers(1, 5)).map(lambda p: WindowSpec("cumulate", step_us=p[0], size_us=p[0] * p[1])),
    st.integers(1, 3_000).map(lambda g: WindowSpec("session", gap_us=g)),
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(window_specs, bounded_disorder())
def test_any_order_within_lateness_gives_the_sorted_result(spec, case):
    delay, times, keys, values, order, cuts = case
    in_order = sorted(range(len(times)), key=lambda i: (times[i], i))
    def pick(seq, idx):
        return [seq[i] for i in idx]
    sorted_result = _run_operator(spec, pick(keys, in_order), pick(values, in_order), pick(times, in_order), delay, [len(times)])
    shuffled = _run_operator(spec, pick(keys, order), pick(values, order), pick(times, order), delay, cuts)
    assert shuffled == sorted_result
    # and both equal the reference windows
    if spec.kind == "session":
        by_key = defaultdict(list)
        for k, t in zip(keys, times, strict=True):
            by_key[k].append(t)
        expected = ref_sessions(by_key, spec.gap_us)
    else:
        counts: dict = defaultdict(int)
        for k, t in zip(keys, times, strict=True):
            for s, e in ref_windows(spec, t):
                counts[(k, s, e)] += 1
        expected = {(k, s, e, n) for (k, s, e), n in counts.items()}
    got = {(r[0], _us(r[1]), _us(r[2]), r[3]) for r in shuffled}
    assert got == expected


def _us(value) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_EPOCH = __import__("datetime").datetime(1970, 1, 1)


def ref_with_lateness(spec: WindowSpec, keys, times, delay: int) -> tuple[set, int]:
    """The contract's lateness in arrival order: a row's watermark is the max of the
    earlier rows minus the delay; it joins only windows (sessions) ending after it, and
    is late when there is none. Returns ((key, start, end, count), late rows)."""
    running = None
    late = 0
    if spec.kind != "session":
        counts: dict = defaultdict(int)
        for k, t in zip(keys, times, strict=True):
            wm = MIN_WATERMARK if running is None else running - delay
            running = t if running is None else max(running, t)
            windows = [(s, e) for s, e in ref_windows(spec, t) if e > wm]
            late += not windows
            for s, e in windows:
                counts[(k, s, e)] += 1
        return {(k, s, e, n) for (k, s, e), n in counts.items()}, late
    done: set = set()
    open_: dict = defaultdict(list)  # key -> [start, end, count]
    for k, t in zip(keys, times, strict=True):
        wm = MIN_WATERMARK if running is None else running - delay
        running = t if running is None else max(running, t)
        for key, sessions in open_.items():  # the watermark closed these before the row
            done |= {(key, s, e, n) for s, e, n in sessions if e <= wm}
            sessions[:] = [x for x in sessions if x[1] > wm]
        if t + spec.gap_us <= wm:
            late += 1
            continue
        start, end, count = t, t + spec.gap_us, 1
        keep = []
        for s, e, n in open_[k]:
            if s < end and start < e:  # overlapping half-open intervals merge
                start, end, count = min(s, start), max(e, end), count + n
            else:
                keep.append((s, e, n))
        open_[k] = keep + [(start, end, count)]
    for key, sessions in open_.items():
        done |= {(key, s, e, n) for s, e, n in sessions}
    return done, late


@st.composite
def any_disorder(draw):
    n = draw(st.integers(1, 60))
    delay = draw(st.integers(0, 3_000))
    times = draw(st.lists(st.integers(-20_000, 20_000), min_size=n, max_size=n))
    keys = draw(st.lists(st.one_of(st.none(), st.integers(0, 2)), min_size=n, max_size=n))
    cuts = draw(st.lists(st.integers(1, 15), min_size=1, max_size=6))
    return delay, times, keys, cuts


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(window_specs, any_disorder())
def test_late_rows_follow_arrival_order_and_never_change_emitted_windows(spec, case):
    """Arbitrary disorder: the result and the late count equal the arrival-order
    reference for every cut into batches (HOP/CUMULATE rows whose first windows were
    emitted still count in the rest)."""
    delay, times, keys, cuts = case
    late: list = []
    got = _run_operator(spec, keys, [0] * len(keys), times, delay, cuts, late)
    expected, expected_late = ref_with_lateness(spec, keys, times, delay)
    assert {(r[0], _us(r[1]), _us(r[2]), r[3]) for r in got} == expected
    assert len(late) == expected_late
    assert all(letter.reason == "late" for letter in late)
