"""Models as aggregates: ``CREATE FUNCTION f AS MODEL 'm.onnx' WITH (aggregate = true)``.

Each window's rows, stacked in event-time order, are scored by one model run; the
result equals onnxruntime called directly in the test on the same stacked rows. Tiny
models are built here with ``onnx.helper``: one that reduces its rows itself (``[N, 3]``
→ ``[1, 1]``), an autoencoder (``[N, 3]`` → ``[N, 3]``, ``reduce = 'mse'``), a
sequence model (``[N, T, 3]`` → ``[N, 1]``, the window as one sequence) and a per-row
scorer (``[N, 3]`` → ``[N, 1]``, ``reduce = 'max'``). Shapes are checked at CREATE.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pytest

from sqlstream.errors import SqlStreamError
from sqlstream.testing import TestSession

BASE_US = 1_699_000_000_000_000
SIZE_US = 5_000_000
SOURCE = """CREATE SOURCE sensors (idx BIGINT, id VARCHAR, ts TIMESTAMP, features FLOAT[3],
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) WITH (connector = 'memory')"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    directory = tmp_path_factory.mktemp("aggregate_models")
    rng = np.random.default_rng(0)

    def const(name, array):
        return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)

    def save(name, nodes, inputs, outputs, initializers):
        graph = helper.make_graph(nodes, name, inputs, outputs, initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        onnx.save(model, str(directory / f"{name}.onnx"))

    x2 = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])
    save("peak", [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("ReduceMax", ["y"], ["peak"], keepdims=1)],
         [x2], [helper.make_tensor_value_info("peak", TensorProto.FLOAT, [1, 1])], [const("w", rng.normal(size=(3, 1)))])
    save("autoencoder", [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["r"])],
         [x2], [helper.make_tensor_value_info("r", TensorProto.FLOAT, [None, 3])],
         [const("w", np.eye(3) + rng.normal(scale=0.2, size=(3, 3))), const("b", rng.normal(scale=0.1, size=3))])
    last = numpy_helper.from_array(np.array(-1, dtype=np.int64), "last")
    seq_nodes = [helper.make_node("Gather", ["x", "last"], ["step"], axis=1),  # the sequence's last step: order matters
                 helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1], keepdims=0),
                 helper.make_node("Sub", ["step", "mean"], ["d"]), helper.make_node("MatMul", ["d", "w"], ["s"])]
    save("sequence", seq_nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, 3])],
         [helper.make_tensor_value_info("s", TensorProto.FLOAT, [None, 1])], [last, const("w", rng.normal(size=(3, 1)))])
    save("sequence4", seq_nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 3])],
         [helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 1])], [last, const("w", rng.normal(size=(3, 1)))])
    save("per_row", [helper.make_node("MatMul", ["x", "w"], ["y"])], [x2],
         [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])], [const("w", rng.normal(size=(3, 1)))])
    return str(directory)


def sensor_events(rows: int, seed: int) -> pa.Table:
    """Arrival order; two sensors, event times displaced back by up to the 2 s delay."""
    rng = np.random.default_rng(seed)
    times = BASE_US + np.sort(rng.integers(0, rows * 300_000, rows))
    times = times - np.where(rng.random(rows) < 0.3, rng.integers(0, 2_000_001, rows), 0)
    features = rng.normal(size=(rows, 3)).astype(np.float32)
    return pa.table({
        "idx": np.arange(rows, dtype=np.int64),
        "id": np.array(["a", "b"])[rng.integers(0, 2, rows)],
        "ts": pa.array(times, pa.timestamp("us")),
        "features": pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1)), 3),
    })


def direct_scores(path: str, events: pa.Table, score) -> dict[tuple[int, str], float]:
    """(window start µs, id) → ``score(session, stacked rows)``: each window's rows in
    event-time order (arrival order among equal times), run by onnxruntime here."""
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    times = pa.compute.cast(events.column("ts"), pa.int64()).to_numpy()
    ids = np.array(events.column("id").to_pylist())
    features = np.asarray(events.column("features").combine_chunks().flatten()).reshape(-1, 3)
    starts = times - times % SIZE_US
    out = {}
    for start, sensor in sorted(set(zip(starts.tolist(), ids.tolist()))):
        rows = np.flatnonzero((starts == start) & (ids == sensor))
        rows = rows[np.argsort(times[rows], kind="stable")]
        out[start, sensor] = score(session, features[rows])
    return out


def run(model_dir: str, create: str, events: pa.Table, batch_size: int, tmp_path=None) -> tuple[TestSession, list[dict]]:
    session = TestSession(base_dir=model_dir, dead_letter_path=str(tmp_path / "dead.jsonl") if tmp_path else "off")
    session.execute(SOURCE)
    session.execute(create)
    session.stream("sensors").push(events, batch_size=batch_size).finish()
    rows = session.run_query("""SELECT window_start, id, score(features) AS score, count(*) AS n
                                FROM TUMBLE(sensors, ts, INTERVAL '5' SECOND) GROUP BY window_start, window_end, id""")
    return session, rows


def by_window(rows: list[dict]) -> dict[tuple[int, str], float]:
    epoch = np.datetime64(0, "us").astype(object)
    return {(int((r["window_start"] - epoch).total_seconds() * 1_000_000), r["id"]): r["score"] for r in rows}


def _run(session, x, name):
    return np.asarray(session.run(None, {name: x})[0], dtype=np.float64)


CASES = {
    "model reduces itself": ("peak", "", lambda s, x: float(_run(s, x, "x").reshape(-1)[0])),
    "autoencoder, reduce mse": ("autoencoder", ", reduce = 'mse'",
                                lambda s, x: float(np.mean((_run(s, x, "x") - x.astype(np.float64)) ** 2))),
    "sequence model": ("sequence", "", lambda s, x: float(_run(s, x[np.newaxis], "x").reshape(-1)[0])),
    "per-row scores, reduce max": ("per_row", ", reduce = 'max'", lambda s, x: float(_run(s, x, "x").max())),
}


@pytest.mark.parametrize("batch_size", [1, 7, 64])
@pytest.mark.parametrize("case", list(CASES))
def test_window_scores_equal_onnxruntime_on_the_stacked_rows(model_dir, case, batch_size):
    model, options, score = CASES[case]
    events = sensor_events(120 if batch_size == 1 else 400, seed=batch_size)
    create = f"CREATE FUNCTION score AS MODEL '{model}.onnx' WITH (aggregate = true{options})"
    session, rows = run(model_dir, create, events, batch_size)
    expected = direct_scores(os.path.join(model_dir, f"{model}.onnx"), events, score)
    ours = by_window(rows)
    assert sorted(ours) == sorted(expected) and len(expected) > 10
    for key, value in expected.items():
        assert math.isclose(ours[key], value, rel_tol=1e-5, abs_tol=1e-6), (key, ours[key], value)
    assert session.last_summary.dead_letters == {}


def test_a_window_the_model_cannot_take_is_a_dead_letter(model_dir, tmp_path):
    """A sequence model of exactly 4 steps: windows of 4 rows are scored, the others
    fail alone (dead letters naming the window)."""
    events = sensor_events(400, seed=3)
    create = "CREATE FUNCTION score AS MODEL 'sequence4.onnx' WITH (aggregate = true)"
    session, rows = run(model_dir, create, events, 7, tmp_path)
    expected = direct_scores(os.path.join(model_dir, "sequence4.onnx"), events,
                             lambda s, x: float(_run(s, x[np.newaxis], "x")[0, 0]) if len(x) == 4 else None)
    scored = {k: v for k, v in expected.items() if v is not None}
    assert 0 < len(scored) < len(expected)
    ours = by_window(rows)
    assert sorted(ours) == sorted(scored)
    for key, value in scored.items():
        assert math.isclose(ours[key], value, rel_tol=1e-5, abs_tol=1e-6)
    letters = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert len(letters) == len(expected) - len(scored) == session.last_summary.dead_letters["udf"]
    assert all(d["detail"].startswith("score: ValueError: the model takes sequences of 4 rows") for d in letters)
    assert {json.loads(d["raw"])["id"] for d in letters} <= {"a", "b"}


@pytest.mark.parametrize(("create", "message"), [
    ("CREATE FUNCTION score AS MODEL 'per_row.onnx' WITH (aggregate = true)",
     "output 'y' has shape [None, 1]: not one value per window"),
    ("CREATE FUNCTION score AS MODEL 'peak.onnx' WITH (aggregate = true, reduce = 'mse')",
     "reduce = 'mse' compares the output with the input"),
    ("CREATE FUNCTION score AS MODEL 'per_row.onnx' WITH (aggregate = true, reduce = 'median')",
     "reduce = 'median' is not one of mean, max, min, sum, mse"),
    ("CREATE FUNCTION score AS MODEL 'peak.onnx' WITH (aggregate = true, quantize = 'int8')",
     "unknown option 'quantize' for an aggregate model"),
    ("CREATE FUNCTION score AS MODEL 'peak.onnx' WITH (aggregate = 'maybe')", "aggregate = 'maybe' is not a boolean"),
])
def test_shapes_and_options_are_checked_at_create(model_dir, create, message):
    session = TestSession(base_dir=model_dir)
    with pytest.raises(SqlStreamError) as error:
        session.execute(create)
    assert message in str(error.value)
    assert "<sql>:1:" in str(error.value)


def test_argument_type_is_checked_at_plan_time(model_dir):
    session = TestSession(base_dir=model_dir)
    session.execute("CREATE SOURCE s4 (id VARCHAR, ts TIMESTAMP, f FLOAT[4], WATERMARK FOR ts AS ts) WITH (connector = 'memory')")
    session.execute("CREATE FUNCTION score AS MODEL 'peak.onnx' WITH (aggregate = true)")
    with pytest.raises(SqlStreamError) as error:
        session.execute("CREATE SINK o AS SELECT id, score(f) FROM s4 GROUP BY id WITH (connector = 'memory')")
    assert "argument of score is REAL[4], expected FLOAT[3]" in str(error.value)


def test_show_functions_lists_the_model_aggregate(model_dir):
    session = TestSession(base_dir=model_dir)
    session.execute("CREATE FUNCTION score AS MODEL 'autoencoder.onnx' WITH (aggregate = true, reduce = 'mse')")
    (row,) = session.execute("SHOW FUNCTIONS")[0].table.to_pylist()
    assert row["kind"] == "model aggregate"
    assert row["signature"] == "score(FLOAT[3]) -> DOUBLE  [aggregate model autoencoder.onnx: [n, k] rows, reduce mse]"


def test_aggregate_false_is_the_scalar_model(model_dir):
    session = TestSession(base_dir=model_dir)
    session.execute("CREATE FUNCTION score AS MODEL 'per_row.onnx' WITH (aggregate = false)")
    assert session.functions["score"].kind == "model"
