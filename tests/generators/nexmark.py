"""A small Nexmark-style generator (persons, auctions, bids) for tests.

Events follow the Nexmark proportions (1 person : 3 auctions : 46 bids in every 50
events), ids refer to earlier persons/auctions, and event times advance by
``interval_us`` per event with optional out-of-order jitter of up to ``max_delay_us``
(so a watermark delay of ``max_delay_us`` makes no event late).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

__all__ = ["generate", "PERSON_SQL", "AUCTION_SQL", "BID_SQL", "BASE_TIME_US"]

BASE_TIME_US = 1_700_000_000_000_000

PERSON_SQL = """CREATE SOURCE person (id BIGINT, name VARCHAR, email_address VARCHAR, credit_card VARCHAR,
  city VARCHAR, state VARCHAR, date_time TIMESTAMP, extra VARCHAR,
  WATERMARK FOR date_time AS date_time - INTERVAL '{delay}' MILLISECOND) WITH (connector = 'memory')"""
AUCTION_SQL = """CREATE SOURCE auction (id BIGINT, item_name VARCHAR, description VARCHAR, initial_bid BIGINT,
  reserve BIGINT, date_time TIMESTAMP, expires TIMESTAMP, seller BIGINT, category BIGINT, extra VARCHAR,
  WATERMARK FOR date_time AS date_time - INTERVAL '{delay}' MILLISECOND) WITH (connector = 'memory')"""
BID_SQL = """CREATE SOURCE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
  date_time TIMESTAMP, extra VARCHAR,
  WATERMARK FOR date_time AS date_time - INTERVAL '{delay}' MILLISECOND) WITH (connector = 'memory')"""

_CITIES = ["Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend", "Redmond", "Seattle", "Kent", "Cheyenne"]
_STATES = ["AZ", "CA", "ID", "OR", "WA", "WY"]
_CHANNELS = ["Google", "Facebook", "Baidu", "Apple"]


def _strings(prefix: str, values: np.ndarray) -> pa.Array:
    return pa.array([f"{prefix}{v}" for v in values.tolist()])


def generate(events: int = 5000, seed: int = 0, interval_us: int = 10_000, max_delay_us: int = 0):
    """(person, auction, bid) tables in arrival order."""
    rng = np.random.default_rng(seed)
    index = np.arange(events, dtype=np.int64)
    slot = index % 50
    kind = np.where(slot == 0, 0, np.where(slot <= 3, 1, 2))  # 0 person, 1 auction, 2 bid
    times = BASE_TIME_US + index * interval_us
    if max_delay_us:
        times = times - rng.integers(0, max_delay_us + 1, events)
    person_rows = np.flatnonzero(kind == 0)
    auction_rows = np.flatnonzero(kind == 1)
    bid_rows = np.flatnonzero(kind == 2)

    n_p = len(person_rows)
    person_ids = 1000 + np.arange(n_p)
    person = pa.table(
        {
            "id": person_ids,
            "name": _strings("person_", person_ids),
            "email_address": _strings("p", person_ids) if n_p else pa.array([], pa.string()),
            "credit_card": _strings("cc", rng.integers(1000, 9999, n_p)),
            "city": pa.array([_CITIES[i] for i in rng.integers(0, len(_CITIES), n_p)], pa.string()),
            "state": pa.array([_STATES[i] for i in rng.integers(0, len(_STATES), n_p)], pa.string()),
            "date_time": pa.array(times[person_rows], pa.timestamp("us")),
            "extra": pa.array([""] * n_p),
        }
    )

    n_a = len(auction_rows)
    auction_ids = 1000 + np.arange(n_a)
    # a seller among the persons created so far
    persons_before = np.maximum(1, np.searchsorted(person_rows, auction_rows, side="right"))
    seller = 1000 + rng.integers(0, persons_before)
    initial = rng.integers(1, 1000, n_a)
    auction = pa.table(
        {
            "id": auction_ids,
            "item_name": _strings("item_", auction_ids),
            "description": pa.array(["desc"] * n_a),
            "initial_bid": initial,
            "reserve": initial + rng.integers(0, 500, n_a),
            "date_time": pa.array(times[auction_rows], pa.timestamp("us")),
            "expires": pa.array(times[auction_rows] + rng.integers(1, 20, n_a) * 1_000_000, pa.timestamp("us")),
            "seller": seller,
            "category": 10 + rng.integers(0, 5, n_a),
            "extra": pa.array([""] * n_a),
        }
    )

    n_b = len(bid_rows)
    auctions_before = np.maximum(1, np.searchsorted(auction_rows, bid_rows, side="right"))
    # bids favour recent auctions (hot items)
    back = np.minimum(rng.geometric(0.2, n_b) - 1, auctions_before - 1)
    bid_auction = 1000 + (auctions_before - 1 - back)
    bid = pa.table(
        {
            "auction": bid_auction,
            "bidder": 1000 + rng.integers(0, np.maximum(1, np.searchsorted(person_rows, bid_rows, side="right"))),
            "price": rng.integers(1, 10_000, n_b),
            "channel": pa.array([_CHANNELS[i] for i in rng.integers(0, len(_CHANNELS), n_b)], pa.string()),
            "url": _strings("https://www.nexmark.com/item/", bid_auction),
            "date_time": pa.array(times[bid_rows], pa.timestamp("us")),
            "extra": pa.array([""] * n_b),
        }
    )
    return person, auction, bid
