"""Model aggregates over OVER frames: ``score(features) OVER (PARTITION BY id ORDER BY ts
ROWS BETWEEN 3 PRECEDING AND CURRENT ROW)`` — a sequence model on a sliding window.

Every row's frame (its last four rows of the sensor, in event-time order) is compared
with onnxruntime run directly here: the full frames of the whole input stacked as one
``[rows, 4, 3]`` tensor (the stream stacks the frames of each step the same way). A
model with a fixed ``T`` gives NULL until a sensor's frame is full; one with a free
``T`` scores a shorter frame as it is; a model of ``[1, T, k]`` runs once per frame;
an autoencoder of rows (``reduce = 'mse'``) runs once per frame. A row whose features
hold a NULL fails exactly the rows whose frames hold it (dead letters, reason ``udf``).
"""

from __future__ import annotations

import json
import math

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pytest

from sqlstream.testing import TestSession
from tests.udf.test_model_aggregates import SOURCE, sensor_events

FRAME = "PARTITION BY id ORDER BY ts ROWS BETWEEN 3 PRECEDING AND CURRENT ROW"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    directory = tmp_path_factory.mktemp("over_models")
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.normal(size=(3, 1)).astype(np.float32), "w")
    last = numpy_helper.from_array(np.array(-1, dtype=np.int64), "last")
    nodes = [helper.make_node("Gather", ["x", "last"], ["step"], axis=1),  # the last step minus the mean: order matters
             helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1], keepdims=0),
             helper.make_node("Sub", ["step", "mean"], ["d"]), helper.make_node("MatMul", ["d", "w"], ["s"])]

    def save(name, nodes, x_shape, y_shape, initializers):
        graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                                  [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, y_shape)], initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        onnx.save(model, str(directory / f"{name}.onnx"))

    save("window4", nodes, [None, 4, 3], [None, 1], [last, w])
    save("one_window4", nodes, [1, 4, 3], [1, 1], [last, w])
    save("sequence", nodes, [None, None, 3], [None, 1], [last, w])
    ae = numpy_helper.from_array((np.eye(3) + rng.normal(scale=0.2, size=(3, 3))).astype(np.float32), "a")
    save("autoencoder", [helper.make_node("MatMul", ["x", "a"], ["r"])], [None, 3], [None, 3], [ae])
    return str(directory)


def frames(events: pa.Table) -> tuple[np.ndarray, list[np.ndarray]]:
    """The row numbers, and per row its frame's features (up to its last four rows of the
    sensor by (event time, arrival))."""
    times = pa.compute.cast(events.column("ts"), pa.int64()).to_numpy()
    ids = np.array(events.column("id").to_pylist())
    features = np.asarray(events.column("features").combine_chunks().flatten()).reshape(-1, 3)
    idx, out = [], []
    for sensor in sorted(set(ids.tolist())):
        rows = np.flatnonzero(ids == sensor)
        rows = rows[np.lexsort((rows, times[rows]))]
        for i, row in enumerate(rows):
            idx.append(int(row))
            out.append(features[rows[max(0, i - 3) : i + 1]])
    return np.array(idx), out


def stream_scores(model_dir: str, model: str, options: str, events: pa.Table, batch_size: int) -> dict[int, float | None]:
    session = TestSession(base_dir=model_dir)
    session.execute(SOURCE)
    session.execute(f"CREATE FUNCTION score AS MODEL '{model}.onnx' WITH (aggregate = true{options})")
    session.stream("sensors").push(events, batch_size=batch_size).finish()
    rows = session.run_query(f"SELECT idx, score(features) OVER ({FRAME}) AS s FROM sensors")
    assert session.last_summary.dead_letters == {}
    assert len(rows) == events.num_rows
    return {r["idx"]: r["s"] for r in rows}


def assert_scores(got: dict[int, float | None], expected: dict[int, float | None]) -> None:
    assert got.keys() == expected.keys()
    for i, value in expected.items():
        if value is None:
            assert got[i] is None, i
        else:
            assert got[i] is not None and math.isclose(got[i], value, rel_tol=1e-5, abs_tol=1e-6), (i, got[i], value)


@pytest.mark.parametrize("model", ["window4", "one_window4"])
@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_full_frames_equal_onnxruntime_on_the_stacked_frames(model_dir, model, batch_size):
    events = sensor_events(300, seed=batch_size)
    idx, windows = frames(events)
    full = [i for i, f in enumerate(windows) if len(f) == 4]
    session = ort.InferenceSession(f"{model_dir}/window4.onnx", providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"x": np.stack([windows[i] for i in full])})  # [rows, 4, 3]: one run
    expected: dict[int, float | None] = {int(i): None for i in idx}  # a sensor's first three rows: NULL
    expected.update({int(idx[i]): float(v) for i, v in zip(full, np.asarray(out).reshape(-1))})
    assert sum(v is None for v in expected.values()) == 6
    assert_scores(stream_scores(model_dir, model, "", events, batch_size), expected)


def test_a_free_sequence_length_scores_short_frames_as_they_are(model_dir):
    events = sensor_events(200, seed=5)
    idx, windows = frames(events)
    session = ort.InferenceSession(f"{model_dir}/sequence.onnx", providers=["CPUExecutionProvider"])
    expected = {int(i): float(session.run(None, {"x": f[np.newaxis]})[0].reshape(-1)[0]) for i, f in zip(idx, windows)}
    assert_scores(stream_scores(model_dir, "sequence", "", events, 7), expected)


def test_an_autoencoder_of_rows_scores_each_frame(model_dir):
    events = sensor_events(200, seed=6)
    idx, windows = frames(events)
    session = ort.InferenceSession(f"{model_dir}/autoencoder.onnx", providers=["CPUExecutionProvider"])
    expected = {int(i): float(np.mean((session.run(None, {"x": f})[0].astype(np.float64) - f) ** 2))
                for i, f in zip(idx, windows)}
    assert_scores(stream_scores(model_dir, "autoencoder", ", reduce = 'mse'", events, 64), expected)


def test_a_frame_that_cannot_be_scored_fails_its_rows_only(model_dir, tmp_path):
    """A NULL inside one row's features: the rows whose frames hold it are dead letters,
    the rest of the step is scored as before (short frames stay NULL)."""
    events = sensor_events(120, seed=8)
    features = events.column("features").combine_chunks().flatten().to_pylist()
    features[40 * 3 + 1] = None
    events = events.set_column(3, "features", pa.FixedSizeListArray.from_arrays(pa.array(features, pa.float32()), 3))
    clean = sensor_events(120, seed=8)
    idx, windows = frames(clean)
    session = ort.InferenceSession(f"{model_dir}/window4.onnx", providers=["CPUExecutionProvider"])
    ids = clean.column("id").to_pylist()
    order = [int(i) for i in idx if ids[int(i)] == ids[40]]
    at = order.index(40)
    failing = set(order[at : at + 4])
    expected = {int(i): (float(session.run(None, {"x": f[np.newaxis]})[0].reshape(-1)[0]) if len(f) == 4 else None)
                for i, f in zip(idx, windows) if int(i) not in failing}
    sql_session = TestSession(base_dir=model_dir, dead_letter_path=str(tmp_path / "dead.jsonl"))
    sql_session.execute(SOURCE)
    sql_session.execute("CREATE FUNCTION score AS MODEL 'window4.onnx' WITH (aggregate = true)")
    sql_session.stream("sensors").push(events, batch_size=64).finish()
    rows = sql_session.run_query(f"SELECT idx, score(features) OVER ({FRAME}) AS s FROM sensors")
    assert_scores({r["idx"]: r["s"] for r in rows}, expected)
    assert sql_session.last_summary.dead_letters == {"udf": 4}
    letters = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert {json.loads(d["raw"])["idx"] for d in letters} == failing
    assert {d["detail"] for d in letters} == {"score: ValueError: a row's features hold a NULL"}
