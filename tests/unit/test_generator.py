"""``connector = 'generator'``: rates on a manual clock, bounds, seeds, column kinds,
event time and its out-of-order jitter."""

from __future__ import annotations

import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from sqlstream.connectors.base import RunContext
from sqlstream.errors import ConnectorError
from sqlstream.testing import ManualClock, TestSession

START = datetime.datetime(2024, 1, 1)


def generator(columns: str, **options):
    """The configured connector of ``CREATE SOURCE g (columns) WITH (generator, options)``."""
    session = TestSession()
    with_options = ", ".join(f"{k.replace('__', '.')} = {v!r}" for k, v in options.items())
    session.execute(f"CREATE SOURCE g ({columns}) WITH (connector = 'generator'{', ' if with_options else ''}{with_options})")
    return session.sources["g"].connector


def read_all(connector, batch_size: int = 8192, clock=None) -> pa.Table:
    clock = clock or ManualClock()
    reader = connector.open(RunContext(clock=clock, batch_size=batch_size))
    batches = []
    while not reader.exhausted:
        item = reader.poll()
        if item is None:
            clock.advance(reader.next_wakeup() - clock.monotonic() if reader.next_wakeup() else 0.001)
            continue
        batches.append(item.batch)
    return pa.Table.from_batches(batches)


# -- rate and micro-batching -----------------------------------------------------------------


def test_rate_limit_on_a_manual_clock():
    clock = ManualClock()
    connector = generator("id BIGINT", rows_per_second=100, max_rows=1000, fields__id__kind="sequence")
    reader = connector.open(RunContext(clock=clock, batch_size=50, batch_timeout_us=50_000))
    assert reader.poll() is None  # no time has passed
    clock.advance(0.1)
    assert reader.poll().batch.column("id").to_pylist() == list(range(10))
    clock.advance(0.03)
    assert reader.poll() is None  # 3 rows due: the batch stays open until batch_timeout
    clock.advance(0.02)
    assert reader.poll().batch.column("id").to_pylist() == list(range(10, 15))  # 50 ms: it closes
    clock.advance(0.5)
    assert reader.poll().batch.num_rows == 50  # a full batch closes at once
    clock.advance(10)
    sizes = []
    while (item := reader.poll()) is not None:
        sizes.append(item.batch.num_rows)
    assert sizes == [50] * 18 + [35]  # the other 935 rows due, in batches of at most batch_size
    assert reader.emitted == 1000 and reader.exhausted


def test_next_wakeup_is_the_next_row_or_the_batch_timeout():
    clock = ManualClock()
    reader = generator("id BIGINT", rows_per_second=10).open(RunContext(clock=clock, batch_size=100, batch_timeout_us=50_000))
    t0 = clock.monotonic()
    assert reader.next_wakeup() == pytest.approx(t0 + 0.1)  # the first row is due after 100 ms
    clock.advance(0.1)
    assert reader.poll().batch.num_rows == 1
    assert reader.next_wakeup() == pytest.approx(t0 + 0.2)


def test_max_speed_produces_full_batches():
    connector = generator("id BIGINT", rows_per_second=0, max_rows=20_000, fields__id__kind="sequence")
    reader = connector.open(RunContext(clock=ManualClock(), batch_size=8192))
    sizes = []
    while not reader.exhausted:
        sizes.append(reader.poll().batch.num_rows)
    assert sizes == [8192, 8192, 3616]
    assert reader.poll() is None


def test_max_rows_bounds_a_rate_limited_source_run_by_the_driver():
    session = TestSession()
    session.execute(
        """CREATE SOURCE g (id BIGINT) WITH (connector = 'generator', rows_per_second = 1000, max_rows = 600,
                                            fields.id.kind = 'sequence');
           CREATE SINK out AS SELECT id FROM g WHERE id % 2 = 0 WITH (connector = 'memory');"""
    )
    start = session.clock.monotonic()
    summary = session.run()
    assert summary.sources["g"]["rows_in"] == 600 and summary.sinks == {"out": 300}
    assert [r["id"] for r in session.rows("out", fold=False)] == list(range(0, 600, 2))
    # the manual clock advanced as the driver slept: 600 rows at 1,000 rows/s take 0.6 s
    assert session.clock.monotonic() - start == pytest.approx(0.6, abs=0.02)


def test_a_sequence_with_a_max_is_bounded():
    connector = generator("id INT", rows_per_second=0, fields__id__kind="sequence", fields__id__min=5, fields__id__max=9)
    assert connector.total_rows == 5
    assert read_all(connector).column("id").to_pylist() == [5, 6, 7, 8, 9]


# -- determinism ----------------------------------------------------------------------------


COLUMNS = "id BIGINT, k VARCHAR, v DOUBLE, n INT, s VARCHAR, f FLOAT[3], b BOOLEAN, ts TIMESTAMP"


def deterministic(seed: int, batch_size: int) -> pa.Table:
    connector = generator(
        COLUMNS,
        rows_per_second=0,
        max_rows=10_000,
        seed=seed,
        clock="simulated",
        fields__id__kind="sequence",
        fields__k__kind="values",
        fields__k__values="a,b,c",
        fields__ts__max_delay="2s",
        fields__ts__step="10ms",
    )
    return read_all(connector, batch_size=batch_size)


def test_seed_determinism_is_independent_of_batch_size():
    reference = deterministic(seed=42, batch_size=8192)
    assert reference.num_rows == 10_000
    for batch_size in (1, 7, 1000, 4096, 5000):
        if batch_size == 1:
            assert deterministic(42, batch_size).slice(0, 300).equals(reference.slice(0, 300))
        else:
            assert deterministic(42, batch_size).equals(reference)
    other = deterministic(seed=43, batch_size=8192)
    assert other.column("id").equals(reference.column("id"))
    assert not other.column("v").equals(reference.column("v"))


# -- column kinds --------------------------------------------------------------------------


def test_random_values_stay_in_their_ranges():
    table = read_all(
        generator(
            "n INT, v DOUBLE, s VARCHAR, d DECIMAL(6,2), f FLOAT[4], b BOOLEAN",
            rows_per_second=0,
            max_rows=5000,
            fields__n__min=-3,
            fields__n__max=3,
            fields__v__min=10,
            fields__v__max=20,
            fields__s__length=5,
            fields__d__min=1,
            fields__d__max=2,
        )
    )
    n = table.column("n").to_numpy()
    assert n.min() == -3 and n.max() == 3 and set(np.unique(n)) == set(range(-3, 4))
    v = table.column("v").to_numpy()
    assert 10 <= v.min() and v.max() < 20
    assert set(pc.utf8_length(table.column("s")).to_pylist()) == {5}
    assert table.schema.field("d").type == pa.decimal128(6, 2)
    assert 1 <= min(table.column("d").to_pylist()) and max(table.column("d").to_pylist()) <= 2
    assert table.schema.field("f").type == pa.list_(pa.float32(), 4)
    assert set(table.column("b").to_pylist()) == {True, False}


def test_values_kind_picks_from_the_list():
    table = read_all(generator("site VARCHAR, code INT", rows_per_second=0, max_rows=3000,
                               fields__site__kind="values", fields__site__values="berlin, lisbon,oslo",
                               fields__code__kind="values", fields__code__values="7,9"))
    assert set(table.column("site").to_pylist()) == {"berlin", "lisbon", "oslo"}
    assert set(table.column("code").to_pylist()) == {7, 9}


def test_event_time_on_a_simulated_clock():
    table = read_all(
        generator("ts TIMESTAMP(3)", rows_per_second=100, max_rows=5, clock="simulated",
                  clock_start="2024-01-01T00:00:00")
    )
    assert table.column("ts").to_pylist() == [START + datetime.timedelta(milliseconds=10 * i) for i in range(5)]
    assert table.schema.field("ts").type == pa.timestamp("ms")


def test_event_time_step_at_max_speed():
    table = read_all(generator("ts TIMESTAMP", rows_per_second=0, max_rows=3, clock="simulated",
                               clock_start="2024-01-01T00:00:00", fields__ts__step="2s"))
    assert table.column("ts").to_pylist() == [START + datetime.timedelta(seconds=2 * i) for i in range(3)]


def test_event_time_on_the_wall_clock_starts_at_the_clock():
    clock = ManualClock(start_us=1_800_000_000_000_000)
    table = read_all(generator("ts TIMESTAMP", rows_per_second=10, max_rows=3), clock=clock)
    base = datetime.datetime(2027, 1, 15, 8, 0)
    assert table.column("ts").to_pylist() == [base + datetime.timedelta(milliseconds=100 * i) for i in range(3)]


def test_wall_clock_at_max_speed_spreads_each_batch_over_the_time_since_the_last():
    clock = ManualClock(start_us=1_800_000_000_000_000)
    reader = generator("ts TIMESTAMP, n BIGINT", rows_per_second=0, max_rows=8).open(RunContext(clock=clock, batch_size=4))
    clock.advance(0.004)
    first = reader.poll().batch.column("ts").cast(pa.int64()).to_pylist()
    clock.advance(0.002)
    second = reader.poll().batch.column("ts").cast(pa.int64()).to_pylist()
    start = 1_800_000_000_000_000
    assert first == [start + 1000, start + 2000, start + 3000, start + 4000]  # the last row: when its batch was made
    assert second == [start + 4500, start + 5000, start + 5500, start + 6000]


def test_wall_clock_at_max_speed_with_a_step_steps_from_the_start():
    clock = ManualClock(start_us=1_800_000_000_000_000)
    table = read_all(generator("ts TIMESTAMP", rows_per_second=0, max_rows=3, fields__ts__step="1s"), clock=clock)
    base = datetime.datetime(2027, 1, 15, 8, 0)
    assert table.column("ts").to_pylist() == [base + datetime.timedelta(seconds=i) for i in range(3)]


def test_wall_clock_at_max_speed_keeps_the_seeded_jitter_whatever_the_batch_size():
    start = 1_800_000_000_000_000  # the manual clock stands still: every batch is stamped at the start

    def delays(batch_size):
        table = read_all(generator("ts TIMESTAMP", rows_per_second=0, max_rows=5000, fields__ts__max_delay="1s", seed=3),
                         batch_size=batch_size, clock=ManualClock(start_us=start))
        return start - table.column("ts").cast(pa.int64()).to_numpy()

    delay = delays(700)
    assert delay.min() >= 0 and 900_000 < delay.max() <= 1_000_000
    assert (delays(300) == delay).all()


def test_max_delay_jitters_event_time_out_of_order():
    table = read_all(generator("ts TIMESTAMP", rows_per_second=0, max_rows=4000, clock="simulated",
                               clock_start="2024-01-01T00:00:00", fields__ts__step="10ms", fields__ts__max_delay="2s"))
    times = table.column("ts").cast(pa.int64()).to_numpy()
    nominal = int(START.replace(tzinfo=datetime.timezone.utc).timestamp() * 1e6) + np.arange(4000) * 10_000
    delay = nominal - times
    assert delay.min() >= 0 and delay.max() <= 2_000_000
    assert delay.max() > 1_900_000  # the whole range is used
    assert (np.diff(times) < 0).sum() > 1000  # out of order


# -- option errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "columns, options, message",
    [
        ("a BIGINT", {"fields__b__kind": "sequence"}, "option 'fields.b.kind' names unknown column 'b'"),
        ("a BIGINT", {"fields__a__kind": "sequense"}, "fields.a.kind = 'sequense' is not a generator kind"),
        ("a VARCHAR", {"fields__a__kind": "sequence"}, "fields.a.kind = 'sequence' needs an integer column"),
        ("a BIGINT", {"fields__a__kind": "event_time"}, "fields.a.kind = 'event_time' needs a TIMESTAMP column"),
        ("a BIGINT", {"fields__a__kind": "values"}, "fields.a.kind = 'values' needs fields.a.values = 'a,b,c'"),
        ("a INT", {"fields__a__kind": "values", "fields__a__values": "1,x"}, "fields.a.values do not fit int32"),
        ("ts TIMESTAMP", {"fields__ts__max_delay": "soon"}, "option 'fields.ts.max_delay': 'soon' is not a duration"),
        ("a BIGINT", {"clock_start": "yesterday"}, "expected an ISO timestamp"),
        ("a BIGINT", {"clock": "lunar"}, "expected one of 'wall', 'simulated'"),
        ("a BIGINT", {"max_rows": -1}, "option 'max_rows' = -1 is invalid for connector 'generator': must be >= 0"),
        ("m MAP(VARCHAR, INT)", {}, "the generator cannot produce column 'm'"),
    ],
)
def test_option_errors(columns, options, message):
    with pytest.raises(ConnectorError) as info:
        generator(columns, **options)
    assert message in info.value.message


def test_a_table_from_the_generator_must_be_bounded():
    with pytest.raises(ConnectorError, match="TABLE t must be bounded"):
        TestSession().execute("CREATE TABLE t (a BIGINT) WITH (connector = 'generator')")
