"""Queries with Python and model UDFs vs DuckDB (batch) over the same data.

Events arrive out of order (within the watermark delay) in micro-batches of several
sizes; some rows make the Python UDF raise (dead-lettered, whatever the batch size)
and some have NULLs. DuckDB runs the same SQL with the same Python functions
registered as Arrow UDFs (the raising rows filtered out), and the model scores
computed by onnxruntime in one call over the whole input: the streaming result must
be the same rows.
"""

from __future__ import annotations

import json
import math

import duckdb
import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from sqlstream import udf
from sqlstream.testing import TestSession
from tests.udf.models_fixture import models  # noqa: F401 - the session-scoped fixture

BASE_US = 1_699_000_000_000_000
DELAY_US = 2_000_000
SOURCE_SQL = """CREATE SOURCE events (idx BIGINT, merchant VARCHAR, ts TIMESTAMP, amount DOUBLE, features FLOAT[4],
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) WITH (connector = 'memory')"""


def _risk_values(amount) -> np.ndarray:
    return np.log1p(amount.to_numpy(zero_copy_only=False)) / 5


@udf(args=[pa.float64()], returns=pa.float64())
def risk(amount: pa.Array) -> np.ndarray:
    """log1p(amount) / 5; a negative amount is a bad record: the batch raises."""
    values = amount.to_numpy(zero_copy_only=False)
    if np.any(values < 0):
        raise ValueError("negative amount")
    return _risk_values(amount)


@udf(args=[pa.float64()], returns=pa.string())
def band(score: pa.Array) -> pa.Array:
    return pc.if_else(pc.greater(score, 0.8), "high", "low")


def duck_risk(amount: pa.ChunkedArray) -> pa.Array:
    values = amount.to_numpy()
    return pa.array(np.where(values < 0, np.nan, _risk_values(amount)))


def duck_band(score: pa.ChunkedArray) -> pa.Array:
    return pc.if_else(pc.greater(score, 0.8), "high", "low").combine_chunks()


def make_events(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    times = BASE_US + np.sort(rng.integers(0, rows * 250_000, rows))
    displaced = rng.random(rows) < 0.3
    times = times - np.where(displaced, rng.integers(0, DELAY_US + 1, rows), 0)
    amount = rng.normal(60.0, 40.0, rows).round(2)  # ~7% negative: the UDF raises on those
    features = rng.uniform(-2, 2, (rows, 4)).astype(np.float32)
    merchants = np.array(["acme", "bolt", "coda", "dune", "echo"])[rng.integers(0, 5, rows)]
    return pa.table(
        {
            "idx": np.arange(rows, dtype=np.int64),
            "merchant": pa.array(merchants, mask=rng.random(rows) < 0.05),
            "ts": pa.array(times, pa.timestamp("us")),
            "amount": pa.array(amount, mask=rng.random(rows) < 0.05),
            "features": pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1)), 4),
        }
    )


def stream(events: pa.Table, sql: str, batch_size: int, tmp_path, models=None, setup: str = "") -> tuple[list[dict], list[dict]]:  # noqa: F811
    base = models.directory if models is not None else str(tmp_path)
    session = TestSession(base_dir=base, dead_letter_path=str(tmp_path / f"dead-{batch_size}.jsonl"))
    session.register_udf(risk)
    session.register_udf(band)
    session.execute(SOURCE_SQL + ";" + setup)
    session.stream("events").push(events, batch_size=batch_size).finish()
    rows = session.run_query(sql)
    path = tmp_path / f"dead-{batch_size}.jsonl"
    letters = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return rows, letters


def duck(events: pa.Table, sql: str, scores: np.ndarray | None = None) -> list[dict]:
    con = duckdb.connect()
    con.create_function("risk", duck_risk, ["DOUBLE"], "DOUBLE", type="arrow")
    con.create_function("band", duck_band, ["DOUBLE"], "VARCHAR", type="arrow")
    data = events.drop_columns(["features"]).append_column("us", pc.cast(events.column("ts"), pa.int64()))
    if scores is not None:
        data = data.append_column("score", pa.array(scores))
    con.register("data", data)
    return con.sql(sql).to_arrow_table().to_pylist()


def same(ours: list[dict], theirs: list[dict], keys: list[str], rel: float = 1e-9) -> None:
    def key(row):
        return tuple((row[k] is None, row[k] if row[k] is not None else 0) for k in keys)

    assert len(ours) == len(theirs)
    for a, b in zip(sorted(ours, key=key), sorted(theirs, key=key)):
        assert a.keys() == b.keys()
        for name in a:
            if isinstance(a[name], float) and b[name] is not None:
                assert math.isclose(a[name], b[name], rel_tol=rel, abs_tol=1e-12), (name, a, b)
            else:
                assert a[name] == b[name], (name, a, b)


EVENTS = {size: make_events(rows, seed=rows) for size, rows in {1: 150, 7: 700, 100: 2_000, 5_000: 5_000}.items()}


@pytest.mark.parametrize("batch_size", list(EVENTS))
def test_projection_and_filter_match_duckdb(tmp_path, batch_size):
    events = EVENTS[batch_size]
    sql = """SELECT idx, merchant, risk(amount) AS r, band(risk(amount)) AS b, risk(amount * 2) + 1 AS r2
             FROM events WHERE risk(amount) > 0.7 AND merchant <> 'coda'"""
    ours, letters = stream(events, sql, batch_size, tmp_path)
    theirs = duck(events, sql.replace("FROM events WHERE", "FROM data WHERE amount >= 0 AND"))
    assert len(theirs) > 20
    same(ours, theirs, ["idx"])
    # the rows WHERE's plain part keeps, whose amount is negative: exactly those are dead letters
    bad = pc.and_(pc.less(events.column("amount"), 0), pc.not_equal(events.column("merchant"), "coda"))
    expected = sorted(events.filter(bad).column("idx").to_pylist())
    assert sorted(json.loads(d["raw"])["idx"] for d in letters) == expected
    assert {(d["reason"], d["detail"]) for d in letters} == {("udf", "risk: ValueError: negative amount")}


@pytest.mark.parametrize("batch_size", [7, 5_000])
def test_windowed_aggregation_of_udf_results_matches_duckdb(tmp_path, batch_size):
    events = EVENTS[batch_size]
    ours, _ = stream(
        events,
        """SELECT window_start, window_end, merchant, band(risk(amount)) AS b, count(*) AS n, sum(risk(amount)) AS total
           FROM TUMBLE(events, ts, INTERVAL '10' SECOND) WHERE risk(amount) > 0.5
           GROUP BY window_start, window_end, merchant, band(risk(amount))""",
        batch_size,
        tmp_path,
    )
    theirs = duck(
        events,
        """SELECT make_timestamp(ws) AS window_start, make_timestamp(ws + 10000000) AS window_end, merchant,
                  band(risk(amount)) AS b, count(*) AS n, sum(risk(amount)) AS total
           FROM (SELECT *, us - us % 10000000 AS ws FROM data WHERE amount >= 0)
           WHERE risk(amount) > 0.5 GROUP BY ws, merchant, band(risk(amount))""",
    )
    assert len(theirs) > 20
    same(ours, theirs, ["window_start", "merchant", "b"])


def test_unwindowed_group_by_a_udf_result_matches_duckdb(tmp_path):
    events = EVENTS[100]
    sql = "SELECT band(risk(amount)) AS b, count(*) AS n, max(amount) AS top FROM events GROUP BY band(risk(amount))"
    ours, _ = stream(events, sql, 100, tmp_path)
    theirs = duck(events, sql.replace("FROM events", "FROM data WHERE amount >= 0 OR amount IS NULL"))
    assert {r["b"] for r in theirs} == {"high", "low", None}
    same(ours, theirs, ["b"])


@pytest.mark.parametrize("batch_size", [1, 100, 5_000])
def test_windowed_fraud_alerts_per_merchant_match_duckdb(tmp_path, models, batch_size):  # noqa: F811
    events = EVENTS[batch_size]
    session = ort.InferenceSession(models.tree_classifier, providers=["CPUExecutionProvider"])
    features = events.column("features").combine_chunks().flatten().to_numpy().reshape(-1, 4)
    scores = session.run(None, {"X": features})[1][:, 1]  # probabilities of class 1, in one call
    ours, letters = stream(
        events,
        """SELECT window_start, merchant, count(*) AS alerts, max(fraud_score(features)[2]) AS worst
           FROM TUMBLE(events, ts, INTERVAL '10' SECOND) WHERE fraud_score(features)[2] > 0.6
           GROUP BY window_start, window_end, merchant""",
        batch_size,
        tmp_path,
        models,
        setup="CREATE FUNCTION fraud_score AS MODEL 'tree_classifier.onnx' WITH (output = 'probabilities')",
    )
    theirs = duck(
        events,
        """SELECT make_timestamp(us - us % 10000000) AS window_start, merchant, count(*) AS alerts,
                  max(score)::FLOAT AS worst
           FROM data WHERE score > 0.6 GROUP BY us - us % 10000000, merchant""",
        scores,
    )
    assert letters == []
    assert len(theirs) > 3
    # onnxruntime's tree ensemble sums in an order that depends on the batch: float32 noise
    same(ours, theirs, ["window_start", "merchant"], rel=1e-6)
