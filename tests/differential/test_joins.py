"""Streaming joins vs DuckDB (batch) over the same generated data.

Every join strategy — lookup (stream ⨝ TABLE), window, interval and regular — runs on
events that arrive out of order within the watermark delay (so none is late), fed in
batches of several sizes and in a random mix; changelog results are folded to their
final table. The result must be DuckDB's multiset of rows. State tests step the
driver on a manual clock and check ``state_rows()`` and ``retention_start()`` of the
join operators as the watermark moves; error tests check the message text and the
line:col it points at.
"""

from __future__ import annotations

import datetime
from unittest import mock

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlstream.changelog import fold_changelog
from sqlstream.errors import SqlStreamError
from sqlstream.operators import join_keys
from sqlstream.operators.join_keys import KeyIndex
from sqlstream.operators.joins import IntervalJoinOperator, LookupJoinOperator, WindowJoinOperator
from sqlstream.operators.regular_join import RegularJoinOperator
from sqlstream.testing import TestSession

BASE_US = 1_699_000_000_000_000  # before the manual clock: max_future never fires
DELAY_US = 2_000_000
SECOND = 1_000_000

STREAMS_SQL = """
CREATE SOURCE a (k BIGINT, s VARCHAR, v BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
  WITH (connector = 'memory');
CREATE SOURCE b (k BIGINT, s VARCHAR, w BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
  WITH (connector = 'memory');
"""
TABLE_SQL = """CREATE TABLE m (id INT, code VARCHAR, region VARCHAR, active BOOLEAN, rate DOUBLE)
  WITH (connector = 'file', path = 'm.parquet', format = 'parquet');"""


# -- data -----------------------------------------------------------------------------------------


def code(key: int) -> str:
    """A string key; lengths from 5 to 21 bytes (one to three 8-byte words)."""
    return f"key-{key}" + "/suffix" * (key % 3)


def events(rows: int, seed: int, value: str, keys: int = 12, step_us: int = 250_000) -> pa.Table:
    """Arrival order; event times ``step_us`` apart on average, a third displaced back
    by up to the watermark delay (out of order, never late); 5% NULL keys."""
    rng = np.random.default_rng(seed)
    times = BASE_US + np.sort(rng.integers(0, rows * step_us, rows))
    times = times - np.where(rng.random(rows) < 0.33, rng.integers(0, DELAY_US + 1, rows), 0)
    k = rng.integers(0, keys, rows)
    return pa.table({
        "k": pa.array(k, mask=rng.random(rows) < 0.05),
        "s": pa.array([code(x) for x in k.tolist()], mask=rng.random(rows) < 0.05),
        value: rng.integers(0, 100, rows),
        "ts": pa.array(times, pa.timestamp("us")),
    })


def merchants() -> pa.Table:
    """Lookup data: ids 0..9 (id 3 twice, a NULL id), string codes like the streams' ``s``."""
    ids = [0, 1, 2, 3, 3, 4, 5, 6, 7, 8, 9, None]
    return pa.table({
        "id": pa.array(ids, pa.int32()),
        "code": pa.array([code(i) if i is not None else None for i in ids]),
        "region": pa.array(["north", "south", "east", "west"] * 3),
        "active": pa.array([i is None or i % 4 != 1 for i in ids]),
        "rate": pa.array([0.5 + (i or 0) / 10 for i in ids], pa.float64()),
    })


def feed(session: TestSession, name: str, table: pa.Table, batch) -> None:
    """Push ``table`` in batches of ``batch`` rows, or a seeded random mix ('mixed')."""
    stream = session.stream(name)
    if batch == "mixed":
        rng = np.random.default_rng(table.num_rows)
        start = 0
        while start < table.num_rows:
            size = int(rng.choice([1, 2, 5, 17, 60]))
            stream.push(table.slice(start, size))
            start += size
    else:
        stream.push(table, batch_size=batch)
    stream.finish()


def make_session(tmp_path, tables: dict[str, pa.Table], batch, extra_sql: str = "") -> TestSession:
    pq.write_table(merchants(), tmp_path / "m.parquet")
    session = TestSession(base_dir=str(tmp_path))
    session.execute(STREAMS_SQL + TABLE_SQL + extra_sql)
    for name, table in tables.items():
        feed(session, name, table, batch)
    return session


def duck(sql: str, tables: dict[str, pa.Table]) -> list[dict]:
    con = duckdb.connect()
    for name, table in tables.items():
        con.register(name, table)
    con.register("m", merchants())
    return con.sql(sql).to_arrow_table().to_pylist()


def canonical(rows: list[dict]) -> list[tuple]:
    def value(v):
        if isinstance(v, float):
            return round(v, 9)
        return v

    return sorted((tuple((k, value(v)) for k, v in sorted(r.items())) for r in rows), key=repr)


def assert_same(ours: list[dict], theirs: list[dict]) -> None:
    assert len(ours) == len(theirs)
    assert canonical(ours) == canonical(theirs)


def operators_of(driver, kind):
    return [op for op in driver.operators if isinstance(op, kind)]


# -- the key index ------------------------------------------------------------------------------

_KEY_TYPES = {
    "int": (st.integers(-3, 6), pa.int64()),
    "sparse int": (st.sampled_from([-(2**40), 7, 10**12, 2**62]), pa.int64()),
    "string": (st.sampled_from(["", "a", "ab", "abcdefgh", "abcdefghi", "é" * 9, "x" * 40]), pa.string()),
    "float": (st.sampled_from([0.0, -0.0, 1.5, 2.25, -7.0]), pa.float64()),
    "timestamp": (st.integers(0, 4).map(lambda i: BASE_US + i * SECOND), pa.timestamp("us")),
}


@settings(max_examples=60, deadline=None)
@given(data=st.data(), kinds=st.lists(st.sampled_from(sorted(_KEY_TYPES)), min_size=1, max_size=3))
def test_key_index_finds_exactly_the_equal_keys(data, kinds):
    """Every (probe, build) pair with equal, non-NULL keys, once: integers (dense, sparse,
    on a grid), strings of every length around the 8-byte words, floats with -0.0,
    timestamps, and combinations of them."""
    def column_values(n):
        return [data.draw(st.lists(st.one_of(st.none(), _KEY_TYPES[k][0]), min_size=n, max_size=n)) for k in kinds]

    n_build, n_probe = data.draw(st.integers(1, 30)), data.draw(st.integers(0, 30))
    build, probe = column_values(n_build), column_values(n_probe)

    def arrays(columns):
        return [pa.array(values, _KEY_TYPES[k][1]) for values, k in zip(columns, kinds, strict=True)]

    probe_rows, build_rows = KeyIndex(arrays(build)).probe(arrays(probe))
    rows_of = lambda columns, i: tuple(c[i] for c in columns)  # noqa: E731
    expected = sorted(
        (i, j) for i in range(n_probe) for j in range(n_build)
        if None not in rows_of(probe, i) and rows_of(probe, i) == rows_of(build, j)
    )
    assert sorted(zip(probe_rows.tolist(), build_rows.tolist(), strict=True)) == expected
    assert list(probe_rows) == sorted(probe_rows)  # grouped by probe row, in order


@settings(max_examples=60, deadline=None)
@given(data=st.data(), kinds=st.lists(st.sampled_from(sorted(_KEY_TYPES)), min_size=1, max_size=2),
       block=st.integers(1, 7), rounds=st.integers(1, 3))
def test_key_index_probes_in_blocks_and_unique_keys_alike(data, kinds, block, rounds):
    """A probe longer than a block is cut into blocks (here of 1-7 rows): the same pairs,
    in probe-row order; on an index of unique keys ``probe_unique`` gives each probe row
    its one build row or -1, NULL keys never matching. With one hash slot tried per
    probe, codes displaced from their home slot are found by the binary search."""
    n_build, n_probe = data.draw(st.integers(1, 20)), data.draw(st.integers(0, 30))
    build = [tuple(data.draw(st.one_of(st.none(), _KEY_TYPES[k][0])) for k in kinds) for _ in range(n_build)]
    build = list(dict.fromkeys(build))  # unique rows (NULLs allowed: they are never matched)
    probe = [tuple(data.draw(st.one_of(st.none(), _KEY_TYPES[k][0])) for k in kinds) for _ in range(n_probe)]

    def arrays(rows):
        return [pa.array([r[c] for r in rows], _KEY_TYPES[k][1]) for c, k in enumerate(kinds)]

    expected = [next((j for j, b in enumerate(build) if None not in p and b == p), -1) for p in probe]
    index = KeyIndex(arrays(build))
    with mock.patch.object(join_keys, "_BLOCK_ROWS", block), mock.patch.object(join_keys, "_PROBE_ROUNDS", rounds):
        probe_rows, build_rows = index.probe(arrays(probe))
        if index.unique:
            assert index.probe_unique(arrays(probe)).tolist() == expected
    assert list(zip(probe_rows.tolist(), build_rows.tolist(), strict=True)) == [
        (i, j) for i, j in enumerate(expected) if j >= 0]


_GRID_KEYS = {  # integer-like keys join_pairs codes densely: small ranges and values on a grid
    "int": (st.integers(-3, 6), pa.int64()),
    "window end": (st.sampled_from([0, 1, 2, 4, 7]).map(lambda i: BASE_US + i * SECOND), pa.timestamp("us")),
    "half second": (st.integers(0, 6).map(lambda i: BASE_US + i * SECOND // 2), pa.timestamp("us")),
    "sparse int": (st.sampled_from([-(2**40), 7, 10**12]), pa.int64()),
    "int64 extremes": (st.sampled_from([-(2**63), -(2**62) - 3, 0, 2**62 + 5, 2**63 - 1]), pa.int64()),
}


@settings(max_examples=80, deadline=None)
@given(data=st.data(), kinds=st.lists(st.sampled_from(sorted(_GRID_KEYS)), min_size=1, max_size=3),
       block=st.integers(1, 7))
def test_join_pairs_on_dense_codes_equal_the_key_index(data, kinds, block):
    """``join_pairs`` of integer-like keys (window bounds on a grid, small integers,
    NULLs) codes both sides on one grid and groups the smaller side with a counting
    table and a packed sort: the same pairs in the same order as probing a ``KeyIndex``
    of the smaller side, probe blocks of 1-7 rows; sparse values and values 2^62 or more
    apart (their differences could overflow) fall back to the index."""
    n_left, n_right = data.draw(st.integers(0, 25)), data.draw(st.integers(0, 25))

    def arrays(n):
        return [pa.array([data.draw(st.one_of(st.none(), _GRID_KEYS[k][0])) for _ in range(n)], _GRID_KEYS[k][1])
                for k in kinds]

    left, right = arrays(n_left), arrays(n_right)
    with mock.patch.object(join_keys, "_BLOCK_ROWS", block):
        left_rows, right_rows = join_keys.join_pairs(left, right)
    if n_left == 0 or n_right == 0:
        expected = ([], [])
    elif n_right <= n_left:
        expected = tuple(rows.tolist() for rows in KeyIndex(right).probe(left))
    else:
        expected = tuple(rows.tolist() for rows in reversed(KeyIndex(left).probe(right)))
    assert (left_rows.tolist(), right_rows.tolist()) == expected


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(0, 4), max_size=12), data=st.data())
def test_expand_ranges_lists_each_position_of_each_range(counts, data):
    """Each range ``[lo, lo + count)`` in order, empty ones skipped (marks counted, no repeat)."""
    lo = [data.draw(st.integers(0, 50)) for _ in counts]
    owner, position = join_keys.expand_ranges(np.array(lo, dtype=np.int64), np.array(counts, dtype=np.int64))
    expected = [(i, lo[i] + j) for i, n in enumerate(counts) for j in range(n)]
    assert list(zip(owner.tolist(), position.tolist(), strict=True)) == expected


def test_join_pairs_codes_window_bounds_on_their_slide():
    """Window ends a second apart and 1,000 keys: a code per (window, key), the window
    part stepping by the second (not by the microsecond, which would not fit)."""
    ends = pa.array(BASE_US + SECOND * (np.arange(3000) // 1000), pa.int64())
    keys = pa.array(np.arange(3000) % 1000)
    left = [join_keys.KeyColumn(ends), join_keys.KeyColumn(keys)]
    codes, _, span = join_keys._dense_codes(left, left)
    assert span == 3 * 1000 and sorted(codes.tolist()) == list(range(3000))
    assert join_keys._dense_codes([join_keys.KeyColumn(pa.array(["a"]))], [join_keys.KeyColumn(pa.array(["a"]))]) is None
    extremes = [join_keys.KeyColumn(pa.array([-(2**62) - 1, 2**62 + 1]))]  # a difference past int64: the index
    assert join_keys._dense_codes(extremes, extremes) is None


@pytest.mark.parametrize("binary", [False, True])
def test_key_index_of_short_strings_codes_them_exactly(binary):
    """Indexed values of at most 7 bytes are their own codes: no hash, no verification;
    NUL bytes and lengths keep "a", "a\\0" and "" apart, and a longer probe value never
    matches the 7 bytes it starts with."""
    keys = ["", "a", "a\x00", "ab", "é", "日本", "abcdefg", None]
    as_array = (lambda v: pa.array([x.encode() if x is not None else None for x in v], pa.binary())) if binary else pa.array
    index = KeyIndex([as_array(keys)])
    assert index._short and index.exact and index.unique
    probe = ["abcdefgh", "a", "a\x00\x00", "", None, "日本", "日本語", "abcdefg", "b"]
    assert index.probe_unique([as_array(probe)]).tolist() == [-1, 1, -1, 0, -1, 5, -1, 6, -1]
    assert not KeyIndex([as_array(["abcdefgh", "a"])])._short  # 8 bytes: hashed


@pytest.mark.parametrize("rounds", [1, 3])
def test_key_index_finds_codes_displaced_from_their_slot(rounds):
    """5,000 string keys: many share a home slot; those not found within ``rounds`` slots
    are found by binary search, keys the index lacks are not."""
    keys = [f"k{i}-" + "x" * (i % 11) for i in range(5000)]
    index = KeyIndex([pa.array(keys)])
    probe = keys[::-1] + ["missing", "k1-", ""]
    with mock.patch.object(join_keys, "_PROBE_ROUNDS", rounds):
        found = index.probe_unique([pa.array(probe)])
    assert found.tolist() == list(range(4999, -1, -1)) + [-1, -1, -1]


# -- lookup joins -------------------------------------------------------------------------------

A, B = events(300, 1, "v"), events(300, 2, "w")

LOOKUPS = {
    # inner on an INT table key from a BIGINT stream key (common type), duplicate table keys
    "inner": (
        "SELECT a.k, a.v, m.region, m.rate FROM a JOIN m ON a.k = m.id",
        "SELECT a.k, a.v, m.region, m.rate FROM a JOIN m ON a.k = m.id",
    ),
    # LEFT keeps every event; conditions on the table filter it, conditions on the stream decide matching
    "left": (
        "SELECT a.k, a.v, m.region FROM a LEFT JOIN m ON a.k = m.id AND m.active AND a.v < 70",
        "SELECT a.k, a.v, m.region FROM a LEFT JOIN m ON a.k = m.id AND m.active AND a.v < 70",
    ),
    # a string key and a second key column, WHERE filters on both sides
    "string and multi-column keys": (
        "SELECT a.s, a.v, m.rate FROM a JOIN m ON a.s = m.code AND a.k = m.id WHERE m.region <> 'west' AND a.v > 10",
        "SELECT a.s, a.v, m.rate FROM a JOIN m ON a.s = m.code AND a.k = m.id WHERE m.region <> 'west' AND a.v > 10",
    ),
    # computed keys on both sides, and a residual condition between them
    "computed keys and residual": (
        "SELECT a.k, a.v, m.id FROM a LEFT JOIN m ON a.k + 1 = m.id * 2 AND a.v > m.rate * 100",
        "SELECT a.k, a.v, m.id FROM a LEFT JOIN m ON a.k + 1 = m.id * 2 AND a.v > m.rate * 100",
    ),
    # the table written first; RIGHT JOIN keeps the stream
    "table first, right join": (
        "SELECT m.region, a.k, a.v FROM m RIGHT JOIN a ON m.id = a.k",
        "SELECT m.region, a.k, a.v FROM m RIGHT JOIN a ON m.id = a.k",
    ),
    # comma join with the condition in WHERE
    "comma join": (
        "SELECT a.v, m.code FROM a, m WHERE m.id = a.k AND m.active",
        "SELECT a.v, m.code FROM a, m WHERE m.id = a.k AND m.active",
    ),
}


@pytest.mark.parametrize(
    "case,batch",
    [(case, batch) for case in LOOKUPS for batch in (13, "mixed", 1000)] + [("inner", 1), ("left", 1)],
)
def test_lookup_join_matches_duckdb(tmp_path, case, batch):
    ours, theirs = LOOKUPS[case]
    session = make_session(tmp_path, {"a": A}, batch)
    assert_same(session.run_query(ours, fold=False), duck(theirs, {"a": A}))


VARCHAR_CODES = {
    # values of every length, hashed and verified
    "any length": ["", "a", "é", "日本語", "ab\x00", "x" * 8, "x" * 9, "key-" * 30] + [f"m-{i}" for i in range(3000)],
    # all of at most 7 bytes: exact codes; longer stream values sharing their first bytes must not match
    "short": ["", "a", "é", "日本", "ab\x00", "x" * 7, "key-" * 1] + [f"m{i}" for i in range(3000)],
}


@pytest.mark.parametrize("kind", ["JOIN", "LEFT JOIN"])
@pytest.mark.parametrize("codes", sorted(VARCHAR_CODES))
def test_lookup_join_on_varchar_keys_matches_duckdb(tmp_path, kind, codes):
    """A VARCHAR key against a TABLE of unique codes: empty, non-ASCII, NUL-byte and
    long strings, strings around the 8-byte words, NULLs on both sides, stream keys the
    table lacks; batches of 40,000 rows are probed in several blocks."""
    codes = VARCHAR_CODES[codes]
    table = pa.table({
        "code": pa.array([*codes, None]),
        "name": pa.array([f"name {i}" for i in range(len(codes) + 1)]),
        "n": pa.array(np.arange(len(codes) + 1), pa.int64()),
    })
    pq.write_table(table, tmp_path / "codes.parquet")
    pool = [*codes, "missing", "é ", "X" * 8, "x" * 8, "ab", "ab\x00\x00", "日本語", "m1\x00", "key-" * 29, None]
    rng = np.random.default_rng(5)
    rows = 100_000
    stream = pa.table({
        "s": pa.array([pool[i] for i in rng.integers(0, len(pool), rows).tolist()]),
        "v": pa.array(np.arange(rows), pa.int64()),
        "ts": pa.array(BASE_US + np.arange(rows, dtype=np.int64) * 1000, pa.timestamp("us")),
    })
    session = TestSession(base_dir=str(tmp_path))
    session.execute("""CREATE SOURCE e (s VARCHAR, v BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
                         WITH (connector = 'memory');
                       CREATE TABLE c (code VARCHAR, name VARCHAR, n BIGINT)
                         WITH (connector = 'file', path = 'codes.parquet', format = 'parquet');""")
    session.stream("e").push(stream, batch_size=40_000).finish()
    sql = f"SELECT e.v, e.s, c.name, c.n FROM e {kind} c ON e.s = c.code"
    ours = session.run_query(sql, fold=False)
    con = duckdb.connect()
    con.register("e", stream)
    con.register("c", table)
    theirs = con.sql(sql).to_arrow_table().to_pylist()
    assert sorted(ours, key=lambda r: r["v"]) == sorted(theirs, key=lambda r: r["v"])


def test_lookup_join_window_after_the_join(tmp_path):
    """A window TVF passes through a lookup join: the window aggregation runs after it."""
    session = make_session(tmp_path, {"a": A}, 17)
    ours = session.run_query(
        """SELECT window_start, m.region, count(*) AS n, sum(a.v) AS total
           FROM TUMBLE(a, ts, INTERVAL '5' SECOND) AS a JOIN m ON a.k = m.id
           GROUP BY window_start, window_end, m.region""", fold=False)
    theirs = duck(
        """SELECT make_timestamp(epoch_us(a.ts) // 5000000 * 5000000) AS window_start, m.region,
                  count(*) AS n, sum(a.v) AS total
           FROM a JOIN m ON a.k = m.id GROUP BY 1, 2""", {"a": A})
    assert_same(ours, theirs)


def test_lookup_join_keeps_the_partition_of_a_session_window(tmp_path):
    """SESSION(TABLE a PARTITION BY k ...) through a lookup join: sessions stay per key,
    as if the key were in GROUP BY."""
    tvf = "TABLE(SESSION(TABLE a PARTITION BY k, DESCRIPTOR(ts), INTERVAL '1' SECOND)) AS x JOIN m ON x.k = m.id"
    ours, keyed = (
        make_session(tmp_path, {"a": A}, 17).run_query(f"SELECT window_start, window_end, count(*) AS n FROM {tvf} {group}")
        for group in ("GROUP BY window_start, window_end", "GROUP BY window_start, window_end, x.k")
    )
    assert len(ours) > 20
    assert_same(ours, keyed)


def test_lookup_join_of_a_changelog_stays_a_changelog(tmp_path):
    session = make_session(tmp_path, {"a": A}, 29)
    sql = "SELECT c.k, c.n, m.region FROM (SELECT k, count(*) AS n FROM a GROUP BY k) c JOIN m ON c.k = m.id"
    rows = session.run_query(sql, fold=False)
    assert {r["__op"] for r in rows} >= {"+I", "-U", "+U"}
    assert_same(fold_changelog(rows), duck(sql, {"a": A}))


def test_lookup_table_is_loaded_once_and_indexed(tmp_path):
    session = make_session(tmp_path, {"a": A}, 50)
    session.execute("CREATE SINK out AS SELECT a.k, m.code FROM a LEFT JOIN m ON a.s = m.code WITH (connector = 'memory')")
    driver = session.build(session.pending_sinks())
    (join,) = operators_of(driver, LookupJoinOperator)
    assert join.table.num_rows == 12 and not join.index.unique  # code(3) twice
    assert join.state_rows() == 12 and join.retention_start() is None
    driver.run()
    assert sum(b.num_rows for b in session.outputs["out"]) == A.num_rows + int(pa.compute.sum(pa.compute.equal(A["s"], code(3))).as_py())


# -- window joins -----------------------------------------------------------------------------------

WINDOWED = """(SELECT k, count(*) AS {n}, window_start AS ws, window_end AS we
                FROM TUMBLE({src}, ts, INTERVAL '3' SECOND) GROUP BY k, window_start, window_end)"""
DUCK_WINDOWED = """(SELECT k, count(*) AS {n}, make_timestamp(epoch_us(ts) // 3000000 * 3000000) AS ws,
                     make_timestamp(epoch_us(ts) // 3000000 * 3000000 + 3000000) AS we FROM {src} GROUP BY ALL)"""


@pytest.mark.parametrize("kind", ["JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN"])
@pytest.mark.parametrize("batch", [7, "mixed", 500])
def test_window_join_of_window_aggregates_matches_duckdb(tmp_path, kind, batch):
    select = "SELECT x.k AS xk, y.k AS yk, x.ws AS xws, y.we AS ywe, x.na, y.nb FROM {l} x {kind} {r} y " \
             "ON x.ws = y.ws AND x.we = y.we AND x.k = y.k AND x.na >= y.nb - 1"
    session = make_session(tmp_path, {"a": A, "b": B}, batch)
    ours = session.run_query(select.format(l=WINDOWED.format(n="na", src="a"), r=WINDOWED.format(n="nb", src="b"), kind=kind),
                             fold=False)
    assert ours and all("__op" not in r for r in ours)  # final rows per window
    theirs = duck(select.format(l=DUCK_WINDOWED.format(n="na", src="a"), r=DUCK_WINDOWED.format(n="nb", src="b"), kind=kind),
                  {"a": A, "b": B})
    assert_same(ours, theirs)


TVF_WINDOWS = {
    # sqlstream window TVF, DuckDB rows with window bounds (µs) ws, we
    "hop": (
        "HOP({src}, ts, INTERVAL '2' SECOND, INTERVAL '4' SECOND)",
        """SELECT *, ws + 4000000 AS we FROM (
             SELECT *, unnest([epoch_us(ts) // 2000000 * 2000000, epoch_us(ts) // 2000000 * 2000000 - 2000000]) AS ws
             FROM {src})""",
    ),
    # windows of different sizes share a start: the join must match both bounds
    "cumulate": (
        "CUMULATE({src}, ts, INTERVAL '1' SECOND, INTERVAL '3' SECOND)",
        """SELECT *, epoch_us(ts) // 3000000 * 3000000 AS ws, we FROM (
             SELECT *, unnest(range(epoch_us(ts) // 1000000 * 1000000 + 1000000,
                                    epoch_us(ts) // 3000000 * 3000000 + 3000001, 1000000)) AS we FROM {src})""",
    ),
}


@pytest.mark.parametrize("batch", [11, "mixed"])
@pytest.mark.parametrize("tvf", sorted(TVF_WINDOWS))
def test_window_join_of_window_tvfs_and_a_window_aggregate_over_it(tmp_path, tvf, batch):
    """Rows of two window TVFs joined per window and key, then counted per window
    (window columns propagate through the join)."""
    ours_tvf, duck_tvf = TVF_WINDOWS[tvf]
    session = make_session(tmp_path, {"a": A, "b": B}, batch)
    ours = session.run_query(
        f"""SELECT window_start, window_end, count(*) AS pairs, sum(v * w) AS dot FROM (
              SELECT x.window_start, x.window_end, x.v, y.w
              FROM {ours_tvf.format(src='a')} x JOIN {ours_tvf.format(src='b')} y
              ON x.window_start = y.window_start AND x.window_end = y.window_end AND x.s = y.s)
            GROUP BY window_start, window_end""", fold=False)
    assert all("__op" not in r for r in ours)
    theirs = duck(
        f"""SELECT make_timestamp(x.ws) AS window_start, make_timestamp(x.we) AS window_end,
                   count(*) AS pairs, sum(x.v * y.w) AS dot
            FROM ({duck_tvf.format(src='a')}) x JOIN ({duck_tvf.format(src='b')}) y
            ON x.ws = y.ws AND x.we = y.we AND x.s = y.s GROUP BY 1, 2""", {"a": A, "b": B})
    assert_same(ours, theirs)


def test_window_join_state_is_freed_when_the_watermark_passes(tmp_path):
    session = make_session(tmp_path, {}, 1)
    session.execute(
        f"""CREATE SINK out AS SELECT x.k, x.na, y.nb FROM {WINDOWED.format(n='na', src='a')} x
            JOIN {WINDOWED.format(n='nb', src='b')} y ON x.ws = y.ws AND x.we = y.we AND x.k = y.k
            WITH (connector = 'memory')""")
    driver = session.build(session.pending_sinks())
    (join,) = operators_of(driver, WindowJoinOperator)
    for sink in driver.sinks:
        sink.open()

    def push(name, rows):
        session.stream(name).push([{"k": k, "s": "x", "v": 1, "w": 1, "ts": datetime.datetime.fromtimestamp(t, datetime.UTC).replace(tzinfo=None)}
                                   for k, t in rows])
        driver.step()

    t0 = 1_699_000_002  # a multiple of 3: a window [t0, t0 + 3 s) starts here
    push("a", [(1, t0), (2, t0 + 0.5)])
    push("b", [(1, t0 + 0.2)])
    push("a", [(1, t0 + 6)])  # a's watermark passes the first window, b's does not
    assert join.state_rows() == 2 and join.retention_start() == t0 * SECOND  # a's rows wait for b
    assert not session.outputs["out"]
    push("b", [(3, t0 + 6)])  # b's watermark passes it too: joined, emitted, freed
    assert [r for batch in session.outputs["out"] for r in batch.to_pylist()] == [{"k": 1, "na": 1, "nb": 1}]
    assert join.state_rows() == 0 and join.retention_start() is None
    push("a", [(5, t0 + 12)])
    assert join.state_rows() == 1 and join.retention_start() == (t0 + 6) * SECOND
    push("b", [(5, t0 + 12)])
    assert join.state_rows() == 0 and len(session.outputs["out"]) == 1  # k=1 and k=3 do not match


# -- interval joins -------------------------------------------------------------------------------

INTERVALS = {
    "between": "x.ts BETWEEN y.ts - INTERVAL '3' SECOND AND y.ts + INTERVAL '1' SECOND",
    "comparisons": "y.ts >= x.ts - INTERVAL '500' MILLISECOND AND y.ts < x.ts + INTERVAL '2' SECOND",
    "one direction": "x.ts <= y.ts AND x.ts > y.ts - INTERVAL '4' SECOND",
}


@pytest.mark.parametrize("kind", ["JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN"])
@pytest.mark.parametrize("bound", list(INTERVALS))
def test_interval_join_matches_duckdb(tmp_path, kind, bound):
    batch = {"JOIN": 1, "LEFT JOIN": "mixed", "RIGHT JOIN": 23, "FULL JOIN": 400}[kind]
    a, b = (A, B) if batch != 1 else (A.slice(0, 120), B.slice(0, 120))
    select = f"SELECT x.k, x.v, x.ts AS xts, y.w, y.ts AS yts FROM a x {kind} b y ON x.k = y.k AND {INTERVALS[bound]}"
    session = make_session(tmp_path, {"a": a, "b": b}, batch)
    ours = session.run_query(select, fold=False)
    assert all("__op" not in r for r in ours)  # append-only, outer joins included
    assert_same(ours, duck(select, {"a": a, "b": b}))


def test_interval_join_output_keeps_event_time_for_windows(tmp_path):
    """The output watermark is held back by the interval: a window over the join's
    output loses no row as late."""
    session = make_session(tmp_path, {"a": A, "b": B}, 19)
    ours = session.run_query(
        """SELECT window_start, count(*) AS n, sum(w) AS total FROM TUMBLE(
             (SELECT x.ts, y.w FROM a x JOIN b y ON x.s = y.s AND y.ts BETWEEN x.ts AND x.ts + INTERVAL '3' SECOND),
             ts, INTERVAL '2' SECOND) GROUP BY window_start, window_end""", fold=False)
    theirs = duck(
        """SELECT make_timestamp(epoch_us(x.ts) // 2000000 * 2000000) AS window_start, count(*) AS n, sum(y.w) AS total
           FROM a x JOIN b y ON x.s = y.s AND y.ts BETWEEN x.ts AND x.ts + INTERVAL '3' SECOND GROUP BY 1""",
        {"a": A, "b": B})
    assert_same(ours, theirs)
    assert session.dead_letters.by_reason() == {}


def test_interval_join_state_is_trimmed_by_the_watermarks(tmp_path):
    session = make_session(tmp_path, {}, 1)
    session.execute(
        """CREATE SINK out AS SELECT x.v, y.w FROM a x LEFT JOIN b y
             ON x.k = y.k AND y.ts BETWEEN x.ts - INTERVAL '1' SECOND AND x.ts + INTERVAL '1' SECOND
           WITH (connector = 'memory')""")
    driver = session.build(session.pending_sinks())
    (join,) = operators_of(driver, IntervalJoinOperator)
    for sink in driver.sinks:
        sink.open()
    peak = 0
    a, b = events(2000, 5, "v", step_us=50_000), events(2000, 6, "w", step_us=50_000)
    for start in range(0, 2000, 40):
        session.stream("a").push(a.slice(start, 40))
        session.stream("b").push(b.slice(start, 40))
        driver.step()
        peak = max(peak, join.state_rows())
        # nothing older than the watermarks minus the interval and the delay stays
        oldest = join.retention_start()
        watermark = min(join.port_watermarks)
        assert oldest is None or oldest >= watermark - 2 * SECOND - DELAY_US
    assert peak < 400  # ~2 x (interval + delay + batch) of 20 events/s, not the 4,000 rows seen
    session.stream("a").finish()
    session.stream("b").finish()
    while driver.step():
        pass
    assert join.state_rows() == 0
    rows = [r for batch in session.outputs["out"] for r in batch.to_pylist()]
    theirs = duck("""SELECT x.v, y.w FROM a x LEFT JOIN b y
                     ON x.k = y.k AND y.ts BETWEEN x.ts - INTERVAL '1' SECOND AND x.ts + INTERVAL '1' SECOND""",
                  {"a": a, "b": b})
    assert_same(rows, theirs)


def test_interval_join_dead_letters_late_rows(tmp_path):
    session = make_session(tmp_path, {}, 1)
    t = lambda s: datetime.datetime(2023, 11, 3, 8, 0, s)  # noqa: E731
    session.stream("a").push([{"k": 1, "v": 1, "ts": t(10)}, {"k": 1, "v": 2, "ts": t(20)}, {"k": 1, "v": 3, "ts": t(5)}]).finish()
    session.stream("b").push([{"k": 1, "w": 9, "ts": t(11)}, {"k": 1, "w": 8, "ts": t(6)}]).finish()
    rows = session.run_query(
        "SELECT x.v, y.w FROM a x JOIN b y ON x.k = y.k AND y.ts BETWEEN x.ts - INTERVAL '2' SECOND AND x.ts + INTERVAL '2' SECOND")
    # v=3 arrived behind a's watermark (20 s - 2 s), w=8 behind b's (11 s - 2 s): both late
    assert rows == [{"v": 1, "w": 9}]
    assert session.dead_letters.by_reason() == {"late": 2}


# -- regular joins ----------------------------------------------------------------------------------

REGULAR = [
    ("JOIN", "x.k = y.k AND x.v + y.w > 90"),
    ("LEFT JOIN", "x.s = y.s AND x.v < y.w"),
    ("RIGHT JOIN", "x.k = y.k AND x.v > 50"),
    ("FULL JOIN", "x.k = y.k AND y.w < 30"),
]


@pytest.mark.parametrize("batch", [3, "mixed", 300])
@pytest.mark.parametrize("kind,condition", REGULAR)
def test_regular_join_matches_duckdb(tmp_path, kind, condition, batch):
    a, b = A.slice(0, 150), B.slice(0, 150)
    select = f"SELECT x.k AS xk, x.v, y.k AS yk, y.w FROM a x {kind} b y ON {condition}"
    session = make_session(tmp_path, {"a": a, "b": b}, batch)
    rows = session.run_query(select, fold=False)
    assert ("__op" in rows[0]) == (kind != "JOIN")  # only INNER of append-only inputs is append-only
    assert_same(fold_changelog(rows), duck(select, {"a": a, "b": b}))


@pytest.mark.parametrize("batch", [5, "mixed"])
@pytest.mark.parametrize("kind", ["JOIN", "LEFT JOIN"])
def test_regular_join_of_updating_inputs(tmp_path, kind, batch):
    """Two unwindowed aggregates joined (both changelogs); a retracted row leaves the
    join's state, NULL keys included."""
    select = f"""SELECT x.s, x.total, y.n FROM (SELECT s, sum(v) AS total FROM a GROUP BY s) x
                 {kind} (SELECT s, count(*) AS n FROM b WHERE w > 50 GROUP BY s) y ON x.s = y.s"""
    session = make_session(tmp_path, {"a": A, "b": B}, batch)
    session.execute(f"CREATE SINK out AS {select} WITH (connector = 'memory')")
    driver = session.build(session.pending_sinks())
    (join,) = operators_of(driver, RegularJoinOperator)
    driver.run()
    assert_same(session.rows("out"), duck(select, {"a": A, "b": B}))
    groups = [len(set(A["s"].to_pylist())), len(set(B.filter(pa.compute.greater(B["w"], 50))["s"].to_pylist()))]
    if kind == "JOIN":  # the NULL group is not kept: it never matches
        groups = [g - 1 for g in groups]
    else:
        groups[1] -= 1
    assert [join.state[0].rows(), join.state[1].rows()] == groups  # one live row per current group


def test_aggregation_over_a_changelog_join(tmp_path):
    """GROUP BY over a LEFT join (a changelog) recomputes the touched groups."""
    a, b = A.slice(0, 200), B.slice(0, 200)
    select = """SELECT y.s, count(*) AS n, max(x.v) AS top, avg(y.w) AS mean, count(DISTINCT x.k) AS keys
                FROM b y LEFT JOIN a x ON x.k = y.k AND x.v > 60 GROUP BY y.s"""
    session = make_session(tmp_path, {"a": a, "b": b}, "mixed")
    assert_same(session.run_query(select), duck(select, {"a": a, "b": b}))


def test_join_state_ttl_drops_old_rows(tmp_path):
    session = make_session(tmp_path, {}, 1, "SET join_state_ttl = '1h';")
    session.execute("CREATE SINK out AS SELECT x.v, y.w FROM a x JOIN b y ON x.k = y.k WITH (connector = 'memory')")
    assert "dropped 1h after it was stored" in session.explain("EXPLAIN SELECT x.v, y.w FROM a x JOIN b y ON x.k = y.k")
    driver = session.build(session.pending_sinks())
    (join,) = operators_of(driver, RegularJoinOperator)
    for sink in driver.sinks:
        sink.open()
    t = datetime.datetime(2023, 11, 3, 8, 0, 0)
    session.stream("a").push([{"k": 1, "v": 1, "ts": t}, {"k": 2, "v": 2, "ts": t}])
    driver.step()
    session.clock.advance(1800)  # 30 min: still held
    session.stream("b").push([{"k": 1, "w": 10, "ts": t}])
    driver.step()
    assert join.state_rows() == 3
    session.clock.advance(2400)  # the a rows are 70 min old, the b row 40 min
    driver.step()
    assert join.state_rows() == 1 and join.expired_rows == 2
    session.stream("b").push([{"k": 2, "w": 20, "ts": t}])
    driver.step()
    rows = [r for batch in session.outputs["out"] for r in batch.to_pylist()]
    assert rows == [{"v": 1, "w": 10}]  # k=2 arrived after its partner expired


def test_regular_join_holds_acknowledgements_while_rows_are_in_state(tmp_path):
    session = make_session(tmp_path, {"a": A.slice(0, 10), "b": B.slice(0, 10)}, 10)
    session.execute("CREATE SINK out AS SELECT x.v, y.w FROM a x JOIN b y ON x.k = y.k WITH (connector = 'memory')")
    driver = session.build(session.pending_sinks())
    (join,) = operators_of(driver, RegularJoinOperator)
    for sink in driver.sinks:
        sink.open()
    driver.step()  # one batch of each
    stored = pa.concat_tables([A.slice(0, 10).select(["k", "ts"]), B.slice(0, 10).select(["k", "ts"])])
    stored = stored.filter(pa.compute.is_valid(stored["k"]))  # NULL keys never match an inner join: not kept
    assert join.state_rows() == stored.num_rows
    assert join.retention_start() == pa.compute.min(stored["ts"]).value
    session.stream("a").finish()
    session.stream("b").finish()
    while driver.step():
        pass
    assert join.retention_start() == pa.compute.min(stored["ts"]).value  # state is kept for ever (no TTL)


# -- any batching, same result ----------------------------------------------------------------------

BATCHING_QUERIES = [
    # interval join, both outer sides
    "SELECT x.v, y.w FROM a x FULL JOIN b y ON x.k = y.k AND y.ts BETWEEN x.ts - INTERVAL '1' SECOND AND x.ts",
    # a changelog (an aggregate) LEFT JOIN a stream, then aggregated again
    """SELECT c.s, count(y.w) AS n, sum(c.total) AS total FROM (SELECT s, sum(v) AS total FROM a GROUP BY s) c
       LEFT JOIN b y ON c.s = y.s AND y.w > 40 GROUP BY c.s""",
    # window join of TUMBLE TVF rows
    """SELECT x.window_start, x.k, x.v, y.w FROM TUMBLE(a, ts, INTERVAL '2' SECOND) x
       LEFT JOIN TUMBLE(b, ts, INTERVAL '2' SECOND) y
       ON x.window_start = y.window_start AND x.window_end = y.window_end AND x.k = y.k""",
]
DUCK_BATCHING = [
    BATCHING_QUERIES[0],
    BATCHING_QUERIES[1],
    """SELECT make_timestamp(epoch_us(x.ts) // 2000000 * 2000000) AS window_start, x.k, x.v, y.w FROM a x
       LEFT JOIN b y ON epoch_us(x.ts) // 2000000 = epoch_us(y.ts) // 2000000 AND x.k = y.k""",
]


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**20), sizes=st.lists(st.integers(1, 45), min_size=1, max_size=6))
def test_results_do_not_depend_on_batching(tmp_path, seed, sizes):
    """Random data (out of order within the delay) cut into random batch sizes."""
    a, b = events(90, seed, "v", keys=6), events(90, seed + 1, "w", keys=6)
    pq.write_table(merchants(), tmp_path / "m.parquet")
    for ours, theirs in zip(BATCHING_QUERIES, DUCK_BATCHING, strict=True):
        session = TestSession(base_dir=str(tmp_path))
        session.execute(STREAMS_SQL)
        for name, table in (("a", a), ("b", b)):
            start, turn = 0, 0
            while start < table.num_rows:
                size = sizes[turn % len(sizes)]
                session.stream(name).push(table.slice(start, size))
                start, turn = start + size, turn + 1
            session.stream(name).finish()
        assert_same(session.run_query(ours), duck(theirs, {"a": a, "b": b}))


# -- EXPLAIN and errors ---------------------------------------------------------------------------------


def test_explain_names_the_strategy_and_why(tmp_path):
    session = make_session(tmp_path, {}, 1)
    lookup = session.explain("EXPLAIN SELECT a.v, m.code FROM a JOIN m ON a.k = m.id")
    assert "LookupJoin INNER" in lookup and "'m' is a TABLE: its rows are loaded once" in lookup
    window = session.explain(
        f"EXPLAIN SELECT x.k FROM {WINDOWED.format(n='na', src='a')} x JOIN {WINDOWED.format(n='nb', src='b')} y "
        "ON x.ws = y.ws AND x.we = y.we AND x.k = y.k")
    assert "WindowJoin INNER" in window and "equates their window_start and window_end" in window
    interval = session.explain(
        "EXPLAIN SELECT x.k FROM a x JOIN b y ON x.k = y.k AND y.ts BETWEEN x.ts - INTERVAL '5' SECOND AND x.ts + INTERVAL '5' SECOND")
    assert "IntervalJoin INNER" in interval and "bounds y.ts - x.ts to [-5s, +5s]" in interval
    assert "output watermark: input watermark - 5s" in interval
    regular = session.explain("EXPLAIN SELECT x.k FROM a x LEFT JOIN b y ON x.k = y.k AND y.ts > x.ts")
    assert "RegularJoin LEFT (changelog)" in regular
    assert "bounds one direction only" in regular and "kept for ever (SET join_state_ttl" in regular


ERRORS = [
    ("SELECT * FROM m", "1:15: error: 'm' is a TABLE (bounded lookup data); it can only be joined to a stream"),
    ("SELECT * FROM m LEFT JOIN a ON m.id = a.k",
     "the TABLE 'm' cannot be the preserved side of a LEFT JOIN"),
    ("SELECT * FROM a JOIN m ON a.v > m.rate",
     "1:27: error: a lookup join needs an equality between the stream and the table 'm'"),
    ("SELECT * FROM m JOIN m AS n ON m.id = n.id", "joining two TABLEs is not supported"),
    ("SELECT * FROM a JOIN b ON a.v < b.w", "a join of two streams needs an equality between them"),
    ("SELECT * FROM a CROSS JOIN b", "1:28: error: a join of two streams needs a condition relating them"),
    ("SELECT * FROM a JOIN b ON a.s = b.k", "cannot join on a.s = b.k: the sides have types VARCHAR and BIGINT"),
    ("SELECT * FROM a ASOF JOIN b ON a.k = b.k", "ASOF JOIN is not supported"),
    ("SELECT * FROM a JOIN a ON a.k = a.k", "'a' names both sides of the join"),
    ("SELECT k FROM a x JOIN b y ON x.k = y.k", "column reference 'k' is ambiguous"),
    ("SELECT x.k FROM a x JOIN b y ON x.k = y.nope", "unknown column 'nope'"),
    ("SELECT x.k FROM a x LEFT JOIN b y ON x.k = (SELECT 1)", "subqueries, window functions and aggregates are not allowed"),
]


@pytest.mark.parametrize("sql,message", ERRORS)
def test_join_errors_point_at_the_query(tmp_path, sql, message):
    session = make_session(tmp_path, {}, 1)
    with pytest.raises(SqlStreamError) as caught:
        session.execute(sql, path="q.sql")
    text = caught.value.render()
    assert text.startswith("q.sql:1:") and message in text
    if "not supported" in message or "needs" in message:
        assert "hint:" in text


def test_unsupported_join_lists_the_supported_forms(tmp_path):
    session = make_session(tmp_path, {}, 1)
    with pytest.raises(SqlStreamError) as caught:
        session.execute("SELECT *\nFROM a\n  JOIN b ON a.ts < b.ts", path="q.sql")
    text = caught.value.render()
    assert text.startswith("q.sql:3:13: error: a join of two streams needs an equality between them")
    assert "hint: supported joins: stream JOIN table (lookup join" in text and "(interval join)" in text


def test_aggregating_a_changelog_rejects_order_dependent_functions(tmp_path):
    session = make_session(tmp_path, {}, 1)
    with pytest.raises(SqlStreamError, match=r"first_value\(\) over an updating input is not supported"):
        session.execute("SELECT y.s, first_value(x.v) FROM b y LEFT JOIN a x ON x.k = y.k GROUP BY y.s")


def test_show_tables_lists_lookup_tables(tmp_path):
    session = make_session(tmp_path, {}, 1)
    (result,) = session.execute("SHOW TABLES")
    assert result.table.to_pylist() == [{
        "name": "m", "connector": "file(parquet: m.parquet)",
        "columns": "id INT, code VARCHAR, region VARCHAR, active BOOLEAN, rate DOUBLE",
    }]
