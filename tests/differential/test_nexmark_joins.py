"""Nexmark queries that join streams, vs DuckDB over the same generated events.

Events come from ``tests/generators/nexmark.py`` (persons, auctions, bids in the Nexmark
proportions) with out-of-order event times within the 300 ms watermark delay, fed
in several batch sizes. Each query is written as Nexmark (RisingWave/Flink) states it;
DuckDB computes windows with integer arithmetic on epoch microseconds.

* q3 — local item suggestion: auctions ⨝ persons, filtered (a regular join)
* q4 — average closing price per category: auctions ⨝ bids within the auction's
  lifetime, max per auction, average per category (a regular join, an aggregate, and
  an aggregate over that changelog)
* q5 — hot items, the classic Flink form: per-window bid counts joined to the
  per-window maximum (a window join)
* q7 — highest bid per window: bids ⨝ the per-window max price on
  ``B.date_time BETWEEN B1.date_time - 10 s AND B1.date_time`` (an interval join)
* q8 — new persons who opened an auction in the same window (a window join)
"""

from __future__ import annotations

import duckdb
import pytest

from sqlstream.testing import TestSession
from tests.generators.nexmark import AUCTION_SQL, BID_SQL, PERSON_SQL, generate

DELAY_MS = 300
PERSON, AUCTION, BID = generate(6000, seed=11, interval_us=5_000, max_delay_us=DELAY_MS * 1000)


def _bucket(column: str, size_s: int, offset_s: int = 0) -> str:
    """DuckDB: the start (+ offset) of the ``size_s`` window holding ``column``."""
    us = size_s * 1_000_000
    return f"make_timestamp(epoch_us({column}) // {us} * {us} + {offset_s * 1_000_000})"


QUERIES = {
    "q3": (
        """SELECT P.name, P.city, P.state, A.id
           FROM auction AS A INNER JOIN person AS P on A.seller = P.id
           WHERE A.category = 10 and (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA')""",
        None,
    ),
    "q4": (
        """SELECT Q.category, AVG(Q.final) AS avg_final
           FROM (SELECT MAX(B.price) AS final, A.category
                 FROM auction A, bid B
                 WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires
                 GROUP BY A.id, A.category) Q
           GROUP BY Q.category""",
        None,
    ),
    "q5": (
        """SELECT AuctionBids.auction, AuctionBids.num, AuctionBids.starttime
           FROM (SELECT auction, count(*) AS num, window_start AS starttime, window_end AS endtime
                 FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)
                 GROUP BY auction, window_start, window_end) AS AuctionBids
           JOIN (SELECT max(CountBids.num) AS maxn, CountBids.starttime, CountBids.endtime
                 FROM (SELECT count(*) AS num, window_start AS starttime, window_end AS endtime
                       FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)
                       GROUP BY auction, window_start, window_end) AS CountBids
                 GROUP BY CountBids.starttime, CountBids.endtime) AS MaxBids
           ON AuctionBids.starttime = MaxBids.starttime AND AuctionBids.endtime = MaxBids.endtime
              AND AuctionBids.num >= MaxBids.maxn""",
        f"""WITH hop AS (SELECT *, unnest(generate_series(0, 4)) AS back FROM bid),
                 counts AS (SELECT auction, count(*) AS num,
                                   {_bucket('date_time', 2)} - to_seconds(back * 2) AS starttime
                            FROM hop GROUP BY 1, 3)
            SELECT c.auction, c.num, c.starttime FROM counts c
            JOIN (SELECT starttime, max(num) AS maxn FROM counts GROUP BY 1) m
            ON c.starttime = m.starttime AND c.num >= m.maxn""",
    ),
    "q7": (
        """SELECT B.auction, B.price, B.bidder, B.date_time
           FROM bid B
           JOIN (SELECT MAX(price) AS maxprice, window_end as date_time
                 FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND)
                 GROUP BY window_start, window_end) B1
           ON B.price = B1.maxprice
           WHERE B.date_time BETWEEN B1.date_time - INTERVAL '10' SECOND AND B1.date_time""",
        f"""SELECT B.auction, B.price, B.bidder, B.date_time
            FROM bid B
            JOIN (SELECT MAX(price) AS maxprice, {_bucket('date_time', 10, 10)} AS date_time FROM bid GROUP BY 2) B1
            ON B.price = B1.maxprice
            WHERE B.date_time BETWEEN B1.date_time - INTERVAL '10' SECOND AND B1.date_time""",
    ),
    "q8": (
        """SELECT P.id, P.name, P.starttime
           FROM (SELECT id, name, window_start AS starttime, window_end AS endtime
                 FROM TUMBLE(person, date_time, INTERVAL '10' SECOND)
                 GROUP BY id, name, window_start, window_end) P
           JOIN (SELECT seller, window_start AS starttime, window_end AS endtime
                 FROM TUMBLE(auction, date_time, INTERVAL '10' SECOND)
                 GROUP BY seller, window_start, window_end) A
           ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime""",
        f"""SELECT P.id, P.name, P.starttime
            FROM (SELECT id, name, {_bucket('date_time', 10)} AS starttime FROM person GROUP BY ALL) P
            JOIN (SELECT seller, {_bucket('date_time', 10)} AS starttime FROM auction GROUP BY ALL) A
            ON P.id = A.seller AND P.starttime = A.starttime""",
    ),
}

STRATEGY = {"q3": "RegularJoin", "q4": "RegularJoin", "q5": "WindowJoin", "q7": "IntervalJoin", "q8": "WindowJoin"}


def duckdb_rows(sql: str) -> list[dict]:
    con = duckdb.connect()
    for name, table in (("person", PERSON), ("auction", AUCTION), ("bid", BID)):
        con.register(name, table)
    return con.sql(sql).to_arrow_table().to_pylist()


def canonical(rows: list[dict]) -> list[tuple]:
    return sorted((tuple((k, round(v, 9) if isinstance(v, float) else v) for k, v in r.items()) for r in rows), key=repr)


def nexmark_session(batch: int) -> TestSession:
    session = TestSession()
    for ddl in (PERSON_SQL, AUCTION_SQL, BID_SQL):
        session.execute(ddl.format(delay=DELAY_MS))
    for name, table in (("person", PERSON), ("auction", AUCTION), ("bid", BID)):
        session.stream(name).push(table, batch_size=batch).finish()
    return session


@pytest.mark.parametrize("batch", [37, 1000])
@pytest.mark.parametrize("query", sorted(QUERIES))
def test_nexmark_join_query_matches_duckdb(query, batch):
    ours, theirs = QUERIES[query]
    session = nexmark_session(batch)
    assert f"{STRATEGY[query]} " in session.explain("EXPLAIN " + ours)
    result = session.run_query(ours)
    expected = duckdb_rows(theirs or ours)
    assert expected, "the generated data must exercise the query"
    assert canonical(result) == canonical(expected)
    assert session.dead_letters.by_reason() == {}  # no row was late anywhere
