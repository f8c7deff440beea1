"""Nexmark q18 (the last bid of each bidder on each auction: deduplication keep-last)
and q19 (the ten highest bids of each auction: Top-N) against DuckDB over the same
generated bids (``tests/generators/nexmark.py``), out of order within the watermark
delay and fed in small and large batches. Both are updating results: the folded
changelog must be DuckDB's rows. Ties go as sqlstream breaks them (q18: the last
arrived bid, q19: the first arrived bid), so DuckDB orders by the arrival index too."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from tests.differential.test_nexmark_windows import DELAY_MS, canonical, run
from tests.generators.nexmark import generate

pytestmark = pytest.mark.timeout(120)

EVENTS = 12_000

Q18 = """SELECT auction, bidder, price, channel, url, date_time, extra FROM (
           SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC) AS rank_number FROM bid)
         WHERE rank_number <= 1"""
Q18_DUCKDB = """SELECT auction, bidder, price, channel, url, date_time, extra FROM (
           SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC, idx DESC) AS rank_number FROM bid)
         WHERE rank_number <= 1"""
Q19 = """SELECT * FROM (
           SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number FROM bid)
         WHERE rank_number <= 10"""
Q19_DUCKDB = """SELECT auction, bidder, price, channel, url, date_time, extra, rank_number FROM (
           SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC, idx) AS rank_number FROM bid)
         WHERE rank_number <= 10"""


@pytest.fixture(scope="module")
def nexmark():
    person, auction, bid = generate(EVENTS, seed=5, interval_us=10_000, max_delay_us=DELAY_MS * 1000)
    con = duckdb.connect()
    con.register("bid", bid.append_column("idx", pa.array(np.arange(bid.num_rows, dtype=np.int64))))
    return {"person": person, "auction": auction, "bid": bid, "duckdb": con}


@pytest.mark.parametrize("batch_size", [7, 100, 5_000])  # batch size 1: tests/differential/test_ranking.py
def test_q18_last_bid_per_bidder_and_auction(nexmark, batch_size):
    expected = nexmark["duckdb"].sql(Q18_DUCKDB).to_arrow_table().to_pylist()
    assert len(expected) > 1_000
    assert canonical(run(nexmark, Q18, batch_size)) == canonical(expected)


@pytest.mark.parametrize("batch_size", [7, 100, 5_000])  # batch size 1: tests/differential/test_ranking.py
def test_q19_top_ten_bids_per_auction(nexmark, batch_size):
    expected = nexmark["duckdb"].sql(Q19_DUCKDB).to_arrow_table().to_pylist()
    assert len(expected) > 1_000
    assert canonical(run(nexmark, Q19, batch_size)) == canonical(expected)
