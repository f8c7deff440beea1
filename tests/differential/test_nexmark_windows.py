"""Nexmark queries that need event time only (q0, q1, q2, q5, q11, q12) against DuckDB
over the same generated persons/auctions/bids (``tests/generators/nexmark.py``), with bids out
of order within the watermark delay and fed in small and large batches."""

from __future__ import annotations

import math

import duckdb
import pyarrow as pa
import pytest

from sqlstream.testing import TestSession
from tests.generators.nexmark import AUCTION_SQL, BID_SQL, PERSON_SQL, generate

pytestmark = pytest.mark.timeout(120)

DELAY_MS = 200
EVENTS = 12_000  # ~11k bids over 120 s of event time


@pytest.fixture(scope="module")
def nexmark():
    person, auction, bid = generate(EVENTS, seed=11, interval_us=10_000, max_delay_us=DELAY_MS * 1000)
    con = duckdb.connect()
    con.register("bid", bid)
    con.register("auction", auction)
    con.register("person", person)
    return {"person": person, "auction": auction, "bid": bid, "duckdb": con}


def run(nexmark, sql: str, batch_size: int) -> list[dict]:
    session = TestSession()
    for ddl in (PERSON_SQL, AUCTION_SQL, BID_SQL):
        session.execute(ddl.format(delay=DELAY_MS))
    for name in ("person", "auction", "bid"):
        session.stream(name).push(nexmark[name], batch_size=batch_size).finish()
    rows = session.run_query(sql)
    assert session.last_summary.dead_letters == {}
    return rows


def oracle(nexmark, sql: str) -> list[dict]:
    return nexmark["duckdb"].sql(sql).to_arrow_table().to_pylist()


def canonical(rows: list[dict]) -> list[tuple]:
    def value(v):
        return round(v, 6) if isinstance(v, float) else v

    return sorted(tuple((k, value(v)) for k, v in sorted(r.items())) for r in rows)


@pytest.mark.parametrize("batch_size", [7, 1_000])
def test_q0_passthrough(nexmark, batch_size):
    sql = "SELECT auction, bidder, price, date_time, extra FROM bid"
    got = run(nexmark, sql, batch_size)
    assert got == nexmark["bid"].select(["auction", "bidder", "price", "date_time", "extra"]).to_pylist()  # arrival order kept


def test_q1_currency_conversion(nexmark):
    got = run(nexmark, "SELECT auction, bidder, 0.908 * price AS price, date_time FROM bid", 1_000)
    expected = oracle(nexmark, "SELECT auction, bidder, 0.908 * price AS price, date_time FROM bid")
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert (a["auction"], a["bidder"], a["date_time"]) == (b["auction"], b["bidder"], b["date_time"])
        assert math.isclose(float(a["price"]), float(b["price"]), rel_tol=1e-12)


def test_q2_selection(nexmark):
    sql = "SELECT auction, price FROM bid WHERE auction % 123 = 0"
    got = run(nexmark, sql, 1_000)
    assert got and got == oracle(nexmark, sql)


HOP_COUNTS_DUCKDB = """
    SELECT auction, count(*) AS num, make_timestamp(ws) AS window_start, make_timestamp(ws + 10000000) AS window_end
    FROM (SELECT auction, unnest(range(us - (((us % 2000000) + 2000000) % 2000000), us - 10000000, -2000000)) AS ws
          FROM (SELECT auction, epoch_us(date_time) AS us FROM bid))
    GROUP BY ws, auction"""
HOP_COUNTS = """
    SELECT auction, count(*) AS num, window_start, window_end
    FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)
    GROUP BY window_start, window_end, auction"""


@pytest.mark.parametrize("batch_size", [37, 2_000])
def test_q5_hot_items_as_window_top_n(nexmark, batch_size):
    """The auctions with the most bids per 10 s window sliding by 2 s (ties kept)."""
    sql = f"""SELECT auction, num, window_start FROM (
                SELECT auction, num, window_start,
                       RANK() OVER (PARTITION BY window_start, window_end ORDER BY num DESC) AS rk
                FROM ({HOP_COUNTS}))
              WHERE rk = 1"""
    # the classic form of q5: a join of the counts with their per-window maximum
    expected = oracle(nexmark, f"""
        WITH counts AS ({HOP_COUNTS_DUCKDB})
        SELECT c.auction, c.num, c.window_start FROM counts c
        JOIN (SELECT window_start, max(num) AS maxn FROM counts GROUP BY window_start) m
          ON c.window_start = m.window_start AND c.num >= m.maxn""")
    got = run(nexmark, sql, batch_size)
    assert len(expected) > 50
    assert canonical(got) == canonical(expected)


def test_q5_top_three_per_window_with_row_number(nexmark):
    sql = f"""SELECT auction, num, window_start, rn FROM (
                SELECT auction, num, window_start,
                       ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY num DESC, auction) AS rn
                FROM ({HOP_COUNTS}))
              WHERE rn <= 3"""
    expected = oracle(nexmark, f"""SELECT auction, num, window_start, rn FROM (
                SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start ORDER BY num DESC, auction) AS rn
                FROM ({HOP_COUNTS_DUCKDB})) WHERE rn <= 3""")
    assert canonical(run(nexmark, sql, 500)) == canonical(expected)


@pytest.mark.parametrize("batch_size", [37, 2_000])
def test_q11_user_sessions(nexmark, batch_size):
    sql = """SELECT bidder, count(*) AS bid_count, window_start AS starttime, window_end AS endtime
             FROM SESSION(bid, date_time, INTERVAL '3' SECOND) GROUP BY bidder, window_start, window_end"""
    expected = oracle(nexmark, """
        SELECT bidder, count(*) AS bid_count, min(date_time) AS starttime, max(date_time) + INTERVAL 3 SECOND AS endtime
        FROM (SELECT *, sum(brk) OVER (PARTITION BY bidder ORDER BY date_time ROWS UNBOUNDED PRECEDING) AS sid
              FROM (SELECT *, CASE WHEN date_time - lag(date_time) OVER (PARTITION BY bidder ORDER BY date_time)
                                        < INTERVAL 3 SECOND THEN 0 ELSE 1 END AS brk FROM bid))
        GROUP BY bidder, sid""")
    got = run(nexmark, sql, batch_size)
    assert len(expected) > 500 and max(r["bid_count"] for r in expected) > 3
    assert canonical(got) == canonical(expected)


@pytest.mark.parametrize("batch_size", [37, 2_000])
def test_q12_tumbling_counts_per_bidder(nexmark, batch_size):
    sql = """SELECT bidder, count(*) AS bid_count, window_start, window_end
             FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND) GROUP BY bidder, window_start, window_end"""
    expected = oracle(nexmark, """
        SELECT bidder, count(*) AS bid_count, time_bucket(INTERVAL 10 SECOND, date_time, TIMESTAMP '1970-01-01') AS window_start,
               time_bucket(INTERVAL 10 SECOND, date_time, TIMESTAMP '1970-01-01') + INTERVAL 10 SECOND AS window_end
        FROM bid GROUP BY ALL""")
    assert canonical(run(nexmark, sql, batch_size)) == canonical(expected)


def test_nexmark_bids_really_arrive_out_of_order(nexmark):
    times = nexmark["bid"].column("date_time").cast(pa.int64()).to_numpy()
    assert (times[1:] < times[:-1]).mean() > 0.2
