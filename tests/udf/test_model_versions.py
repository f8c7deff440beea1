"""Model updates while queries run: CREATE OR REPLACE FUNCTION swaps at a batch boundary,
``reload = 'on_change'`` follows the file (refusing files that do not load or do not
fit), ``model_version(f)`` names the version that scored each row, and shadow models
are compared without changing the output.

Models are tiny graphs built with ``onnx.helper`` whose outputs differ by version
(``y = k * sum(x)``), so every row's score says which version computed it. Nothing
sleeps: a reload is awaited by feeding rows until a condition holds, with a deadline.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime

import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from sqlstream import UdfError
from sqlstream.errors import SqlAnalysisError
from sqlstream.observability.metrics import PipelineCollector
from sqlstream.runtime.clock import WallClock
from sqlstream.testing import TestSession

DEADLINE_S = 20.0


def _save(path, nodes, inputs, outputs, initializer=()) -> str:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, os.path.basename(str(path)), inputs, outputs, initializer=list(initializer))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def scale_model(path, k: float, width: int = 2) -> str:
    """``y = k * sum(x)`` for ``x`` FLOAT[width]."""
    from onnx import TensorProto, helper

    return _save(
        path,
        [helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=0), helper.make_node("Mul", ["s", "k"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [1]), helper.make_tensor("k", TensorProto.FLOAT, [], [k])],
    )


def classifier_model(path, weights: np.ndarray) -> str:
    """``probabilities = softmax(x @ W)`` and ``label = argmax``: a STRUCT result."""
    from onnx import TensorProto, helper

    return _save(
        path,
        [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Softmax", ["z"], ["probabilities"], axis=1),
         helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor("w", TensorProto.FLOAT, list(weights.shape), weights.reshape(-1).tolist())],
    )


def only_pairs_model(path) -> str:
    """Same signature as :func:`scale_model`, but fails unless a batch has 2 rows."""
    from onnx import TensorProto, helper

    return _save(
        path,
        [helper.make_node("Reshape", ["x", "shape"], ["r"]), helper.make_node("ReduceSum", ["r", "axes"], ["y"], keepdims=0)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
        [helper.make_tensor("shape", TensorProto.INT64, [2], [2, 2]), helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )


def replace_file(target, source) -> None:
    """Publish ``source``'s bytes at ``target`` the safe way: a temporary file renamed over it."""
    temp = f"{target}.tmp"
    with open(source, "rb") as src, open(temp, "wb") as dst:
        dst.write(src.read())
    os.replace(temp, target)


def features(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2, 2, size=(n, 2)).astype(np.float32)


def rows_of(x: np.ndarray, start: int = 0) -> list[dict]:
    return [{"id": start + i, "x": [float(a), float(b)]} for i, (a, b) in enumerate(x)]


def session_with(tmp_path, function_sql: str) -> TestSession:
    session = TestSession(base_dir=str(tmp_path))
    session.execute("CREATE SOURCE s (id BIGINT, x FLOAT[2]) WITH (connector = 'memory')")
    session.execute(function_sql)
    session.execute("CREATE SINK out AS SELECT id, f(x) AS y, model_version(f) AS v FROM s WITH (connector = 'memory')")
    return session


def check_scores(session: TestSession, factors: dict[str, float], x: np.ndarray) -> list[str]:
    """Every output row's score is the one its version computes; no batch mixes versions.
    The versions in row order."""
    versions = []
    for batch in session.outputs["out"]:
        labels = set(batch.column("v").to_pylist())
        assert len(labels) == 1, f"a batch scored by several versions: {labels}"
        for row in batch.to_pylist():
            expected = factors[row["v"].split(" ")[0]] * x[row["id"]].astype(np.float32).sum()
            assert row["y"] == pytest.approx(float(expected), rel=1e-6)
            versions.append(row["v"])
    return versions


def feed_until(session: TestSession, run, x: np.ndarray, start: int, condition, batch_rows: int = 1) -> int:
    """Push rows (``batch_rows`` a batch) and pump until ``condition()``; the next row id.
    After each batch, a reload the batch started is waited for (a thread join, no sleep)."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        assert start + batch_rows <= len(x), "ran out of rows"
        session.stream("s").push(rows_of(x[start:start + batch_rows], start))
        run.pump()
        start += batch_rows
        watch = session.functions["f"].impl.watch
        if watch is not None:
            watch.wait(DEADLINE_S)
    return start


def last_version(session: TestSession) -> str:
    """The version of the last row scored ('' before the first)."""
    batches = session.outputs.get("out") or []
    return batches[-1].column("v")[-1].as_py() if batches else ""


def model_status(session: TestSession, name: str = "f") -> dict:
    rows = session.execute("SHOW MODELS")[0].table.to_pylist()
    return next(r for r in rows if r["name"] == name)


# -- CREATE OR REPLACE ------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_create_or_replace_swaps_the_running_query_at_a_batch_boundary(tmp_path, batch_size):
    scale_model(tmp_path / "v1.onnx", 1.0)
    scale_model(tmp_path / "v2.onnx", 2.0)
    session = session_with(tmp_path, "CREATE FUNCTION f AS MODEL 'v1.onnx'")
    x = features(300)
    run = session.start()
    session.stream("s").push(rows_of(x[:150]), batch_size=batch_size)
    run.pump()
    session.execute("CREATE OR REPLACE FUNCTION f AS MODEL 'v2.onnx'")
    session.stream("s").push(rows_of(x[150:], 150), batch_size=batch_size)
    run.pump()
    versions = check_scores(session, {"v1": 1.0, "v2": 2.0}, x)
    assert [v.split(" ")[0] for v in versions] == ["v1"] * 150 + ["v2"] * 150
    assert versions[0].startswith("v1 (sha ") and versions[-1].startswith("v2 (sha ")
    status = model_status(session)
    assert (status["version"], status["swaps"], status["path"]) == (versions[-1], 1, str(tmp_path / "v2.onnx"))


def test_a_replacement_with_another_signature_is_refused_and_the_old_model_serves_on(tmp_path):
    scale_model(tmp_path / "v1.onnx", 1.0)
    scale_model(tmp_path / "wide.onnx", 1.0, width=3)
    session = session_with(tmp_path, "CREATE FUNCTION f AS MODEL 'v1.onnx'")
    x = features(4)
    run = session.start()
    with pytest.raises(UdfError) as refused:
        session.execute("CREATE OR REPLACE FUNCTION f AS MODEL 'wide.onnx'")
    text = str(refused.value)
    assert "<sql>:1:1: error: model f: wide.onnx does not take the arguments a running query passes" in text
    assert "expects 3 features" in text and "keeps serving" in text
    assert "hint: a new version must take and return the same types while queries, views or sinks use f" in text
    session.stream("s").push(rows_of(x))
    run.pump()
    assert check_scores(session, {"v1": 1.0}, x) == [model_status(session)["version"]] * 4


def test_an_unused_model_may_change_its_signature(tmp_path):
    scale_model(tmp_path / "v1.onnx", 1.0)
    scale_model(tmp_path / "wide.onnx", 3.0, width=3)
    session = TestSession(base_dir=str(tmp_path))
    session.execute("CREATE FUNCTION f AS MODEL 'v1.onnx'")
    session.execute("CREATE OR REPLACE FUNCTION f AS MODEL 'wide.onnx'")
    rows = session.execute("SHOW FUNCTIONS")[0].table.to_pylist()
    assert rows[0]["signature"] == "f(REAL[3] or 3 numeric arguments) -> REAL  [model wide.onnx]"
    assert rows[0]["version"].startswith("v2 (sha ") and rows[0]["loaded"].endswith("Z")
    assert session.run_query("SELECT f(1.0, 2.0, 3.0) AS y") == [{"y": 18.0}]


def test_create_or_replace_in_a_session_while_a_live_query_runs(tmp_path):
    scale_model(tmp_path / "v1.onnx", 1.0)
    scale_model(tmp_path / "v2.onnx", 2.0)
    session = TestSession(base_dir=str(tmp_path), clock=WallClock())
    session.execute("CREATE SOURCE s (id BIGINT, x FLOAT[2]) WITH (connector = 'memory')")
    session.execute("CREATE FUNCTION f AS MODEL 'v1.onnx'")
    x = features(40)
    with session.query("SELECT id, f(x) AS y, model_version(f) AS v FROM s") as result:
        seen = []

        def read(n: int) -> None:
            deadline = time.monotonic() + DEADLINE_S
            while len(seen) < n:
                assert time.monotonic() < deadline, "the live query did not deliver"
                batch = result.poll(0.05)
                if batch is not None:
                    assert batch.column("v").unique().to_pylist() == [batch.column("v")[0].as_py()]
                    seen.extend(batch.to_pylist())

        session.stream("s").push(rows_of(x[:20]), batch_size=5)
        read(20)
        session.execute("CREATE OR REPLACE FUNCTION f AS MODEL 'v2.onnx'")
        session.stream("s").push(rows_of(x[20:], 20), batch_size=5)
        read(40)
    assert [r["v"].split(" ")[0] for r in seen] == ["v1"] * 20 + ["v2"] * 20
    for row in seen:
        factor = 1.0 if row["v"].startswith("v1") else 2.0
        assert row["y"] == pytest.approx(float(factor * x[row["id"]].sum()), rel=1e-6)


# -- reload = 'on_change' ---------------------------------------------------------------------


def reloading_session(tmp_path):
    scale_model(tmp_path / "v1.onnx", 1.0)
    scale_model(tmp_path / "v2.onnx", 2.0)
    replace_file(tmp_path / "model.onnx", tmp_path / "v1.onnx")
    return session_with(tmp_path, "CREATE FUNCTION f AS MODEL 'model.onnx' WITH (reload = 'on_change', reload_interval = '0s')")


def test_reload_on_change_serves_the_new_file_from_a_batch_boundary(tmp_path):
    session = reloading_session(tmp_path)
    x = features(2000)
    run = session.start()
    nxt = feed_until(session, run, x, 0, lambda: len(session.outputs.get("out", [])) >= 3)
    first = last_version(session)
    replace_file(tmp_path / "model.onnx", tmp_path / "v2.onnx")
    nxt = feed_until(session, run, x, nxt, lambda: last_version(session).startswith("v2"), batch_rows=3)
    feed_until(session, run, x, nxt, lambda: len(session.outputs["out"]) >= nxt // 3 + 5, batch_rows=3)
    versions = check_scores(session, {"v1": 1.0, "v2": 2.0}, x)
    switch = versions.index(last_version(session))
    assert set(versions[:switch]) == {first} and set(versions[switch:]) == {last_version(session)}
    status = model_status(session)
    assert (status["swaps"], status["reload_failures"], status["reload"]) == (1, 0, "on_change every 0s")


@pytest.mark.parametrize("bad", ["other_signature", "garbage"])
def test_a_changed_file_that_does_not_fit_is_refused_logged_and_counted(tmp_path, caplog, bad):
    session = reloading_session(tmp_path)
    if bad == "garbage":
        (tmp_path / "v3.onnx").write_bytes(b"\x00not an onnx model\xff" * 50)
        reason = "is not an ONNX model"
    else:
        scale_model(tmp_path / "v3.onnx", 3.0, width=3)
        reason = "does not take the arguments a running query passes"
    x = features(2000)
    run = session.start()
    replace_file(tmp_path / "model.onnx", tmp_path / "v2.onnx")
    nxt = feed_until(session, run, x, 0, lambda: last_version(session).startswith("v2"))
    serving = last_version(session)
    with caplog.at_level(logging.WARNING, logger="sqlstream.udf"):
        replace_file(tmp_path / "model.onnx", tmp_path / "v3.onnx")
        nxt = feed_until(session, run, x, nxt, lambda: model_status(session)["reload_failures"] == 1)
        session.stream("s").push(rows_of(x[nxt:nxt + 10], nxt), batch_size=5)
        run.pump()
    assert last_version(session) == serving
    assert check_scores(session, {"v1": 1.0, "v2": 2.0}, x)[-10:] == [serving] * 10
    assert reason in model_status(session)["last_failure"]
    assert [r.getMessage() for r in caplog.records if reason in r.getMessage()][0].startswith(
        f"model f: the changed file {tmp_path / 'model.onnx'} is refused, {serving} keeps serving:")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(lambda: run.driver, "t"))
    metrics = generate_latest(registry).decode()
    assert 'sqlstream_model_reload_failures_total{function="f",pipeline="t"} 1.0' in metrics
    assert 'sqlstream_model_version{function="f",pipeline="t"} 2.0' in metrics


def test_a_half_written_file_is_not_loaded(tmp_path):
    session = reloading_session(tmp_path)
    x = features(2000)
    run = session.start()
    nxt = feed_until(session, run, x, 0, lambda: len(session.outputs.get("out", [])) >= 2)
    content = (tmp_path / "v2.onnx").read_bytes()
    with open(tmp_path / "model.onnx", "wb") as target:  # written in place, in two steps
        target.write(content[: len(content) // 2])
        target.flush()
        session.stream("s").push(rows_of(x[nxt:nxt + 1], nxt))
        run.pump()  # sees the change; waits for the file to settle
        nxt += 1
        target.write(content[len(content) // 2:])
    nxt = feed_until(session, run, x, nxt, lambda: last_version(session).startswith("v2"))
    status = model_status(session)
    assert (status["swaps"], status["reload_failures"]) == (1, 0)
    check_scores(session, {"v1": 1.0, "v2": 2.0}, x)


def test_a_truncated_file_that_settles_is_refused_then_the_complete_one_loads(tmp_path):
    session = reloading_session(tmp_path)
    x = features(2000)
    run = session.start()
    content = (tmp_path / "v2.onnx").read_bytes()
    (tmp_path / "model.onnx").write_bytes(content[: len(content) // 2])
    nxt = feed_until(session, run, x, 0, lambda: model_status(session)["reload_failures"] == 1)
    assert last_version(session).startswith("v1")
    replace_file(tmp_path / "model.onnx", tmp_path / "v2.onnx")
    feed_until(session, run, x, nxt, lambda: last_version(session).startswith("v2"))
    check_scores(session, {"v1": 1.0, "v2": 2.0}, x)
    assert model_status(session)["reload_failures"] == 1


# -- shadow -----------------------------------------------------------------------------------


def direct(path: str, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": x})))


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_shadow_metrics_equal_a_direct_computation_and_the_output_is_unchanged(tmp_path, batch_size):
    rng = np.random.default_rng(3)
    served = classifier_model(tmp_path / "a.onnx", rng.normal(size=(2, 3)).astype(np.float32))
    candidate = classifier_model(tmp_path / "b.onnx", rng.normal(size=(2, 3)).astype(np.float32))
    x = features(150, seed=1)
    session = TestSession(base_dir=str(tmp_path))
    session.execute("CREATE SOURCE s (id BIGINT, x FLOAT[2]) WITH (connector = 'memory')")
    session.execute("CREATE FUNCTION f AS MODEL 'a.onnx' WITH (shadow = 'b.onnx')")
    session.stream("s").push(rows_of(x), batch_size=batch_size).finish()
    rows = session.run_query("SELECT id, f(x).label AS label, f(x).probabilities AS p FROM s")
    a, b = direct(served, x), direct(candidate, x)
    assert [r["label"] for r in rows] == a["label"].tolist()
    np.testing.assert_allclose([r["p"] for r in rows], a["probabilities"], rtol=1e-6)
    status = model_status(session)
    diff = np.abs(a["probabilities"].astype(np.float64) - b["probabilities"].astype(np.float64))
    assert status["shadow"] == str(tmp_path / "b.onnx")
    assert (status["shadow_rows"], status["shadow_failures"]) == (150, 0)
    assert status["shadow_agreement"] == pytest.approx(float(np.mean(a["label"] == b["label"])))
    assert 0 < status["shadow_agreement"] < 1
    assert status["shadow_mean_abs_diff"] == pytest.approx(float(diff.mean()), rel=1e-9)
    assert status["shadow_max_abs_diff"] == pytest.approx(float(diff.max()), rel=1e-9)


def test_shadow_of_a_numeric_model_and_its_metrics(tmp_path):
    scale_model(tmp_path / "v1.onnx", 1.0)
    scale_model(tmp_path / "v2.onnx", 2.0)
    x = features(50, seed=2)
    session = TestSession(base_dir=str(tmp_path))
    session.execute("CREATE SOURCE s (id BIGINT, x FLOAT[2]) WITH (connector = 'memory')")
    session.execute("CREATE FUNCTION f AS MODEL 'v1.onnx' WITH (shadow = 'v2.onnx')")
    session.execute("CREATE SINK out AS SELECT id, f(x) AS y, model_version(f) AS v FROM s WITH (connector = 'memory')")
    run = session.start()
    session.stream("s").push(rows_of(x), batch_size=8)
    run.pump()
    check_scores(session, {"v1": 1.0}, x)
    sums = np.abs(x.sum(axis=1).astype(np.float64))
    status = model_status(session)
    assert (status["shadow_rows"], status["shadow_agreement"]) == (50, None)
    assert status["shadow_mean_abs_diff"] == pytest.approx(float(sums.mean()), rel=1e-6)
    assert status["shadow_max_abs_diff"] == pytest.approx(float(sums.max()), rel=1e-6)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(lambda: run.driver, "t"))
    metrics = generate_latest(registry).decode()
    assert 'sqlstream_model_shadow_rows_total{function="f",pipeline="t"} 50.0' in metrics
    assert "sqlstream_model_shadow_agreement{" not in metrics  # nothing to agree on for numbers


def test_a_failing_shadow_never_changes_the_output(tmp_path, caplog):
    scale_model(tmp_path / "v1.onnx", 1.0)
    only_pairs_model(tmp_path / "pairs.onnx")
    x = features(21, seed=4)
    session = TestSession(base_dir=str(tmp_path))
    session.execute("CREATE SOURCE s (id BIGINT, x FLOAT[2]) WITH (connector = 'memory')")
    session.execute("CREATE FUNCTION f AS MODEL 'v1.onnx' WITH (shadow = 'pairs.onnx')")
    session.stream("s").push(rows_of(x), batch_size=7).finish()
    with caplog.at_level(logging.WARNING, logger="sqlstream.udf"):
        rows = session.run_query("SELECT id, f(x) AS y FROM s")
    assert [r["y"] for r in rows] == pytest.approx(x.sum(axis=1).astype(np.float64).tolist(), rel=1e-6)
    status = model_status(session)
    assert (status["shadow_failures"], status["shadow_rows"]) == (3, 0)
    warnings = [r.getMessage() for r in caplog.records if "shadow model" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith(f"shadow model {tmp_path / 'pairs.onnx'} of f failed (the output is unchanged):")


def test_a_shadow_with_another_signature_is_refused_at_its_option(tmp_path):
    scale_model(tmp_path / "v1.onnx", 1.0)
    scale_model(tmp_path / "wide.onnx", 1.0, width=3)
    session = TestSession(base_dir=str(tmp_path))
    with pytest.raises(UdfError) as refused:
        session.execute("CREATE FUNCTION f AS MODEL 'v1.onnx'\n  WITH (shadow = 'wide.onnx')")
    text = str(refused.value)
    assert text.startswith("<sql>:2:9: error: shadow model wide.onnx has another signature than the model")
    assert "hint: a shadow takes the same inputs and returns the same type" in text
    assert "f" not in session.functions


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("options, message", [
    ("relaod = 'on_change'", "<sql>:1:44: error: unknown model option 'relaod'"),
    ("reload = 'sometimes'", "<sql>:1:44: error: reload = 'sometimes' is not supported"),
    ("reload = 'on_change', reload_interval = 'soon'", "<sql>:1:66: error: reload_interval = 'soon' is not a duration"),
    ("reload_interval = '1s'", "<sql>:1:44: error: reload_interval needs reload = 'on_change'"),
])
def test_bad_version_options_are_located(tmp_path, options, message):
    scale_model(tmp_path / "v1.onnx", 1.0)
    session = TestSession(base_dir=str(tmp_path))
    with pytest.raises(UdfError) as refused:
        session.execute(f"CREATE FUNCTION f AS MODEL 'v1.onnx' WITH ({options})")
    assert str(refused.value).startswith(message)
    if "unknown" in message:
        valid = str(refused.value).split("valid: ")[1].split(", ")
        assert {"reload", "reload_interval", "shadow"} <= set(valid)  # the hint lists the version options


def test_model_version_needs_a_model_function(tmp_path):
    scale_model(tmp_path / "v1.onnx", 1.0)
    session = TestSession(base_dir=str(tmp_path))
    session.execute("CREATE SOURCE s (id BIGINT, x FLOAT[2]) WITH (connector = 'memory')")
    session.execute("CREATE FUNCTION fmodel AS MODEL 'v1.onnx'")
    with pytest.raises(SqlAnalysisError) as refused:
        session.execute("SELECT id,\n  model_version(fmodle) FROM s")
    text = str(refused.value)
    assert text.startswith("<sql>:2:17: error: model_version() takes the name of one model function, not 'fmodle'")
    assert "did you mean 'fmodel'" in text


def test_model_version_is_one_value_per_batch_and_rows_with_null_features_keep_it(tmp_path):
    scale_model(tmp_path / "v1.onnx", 1.0)
    session = TestSession(base_dir=str(tmp_path))
    session.execute("CREATE SOURCE s (id BIGINT, x FLOAT[2]) WITH (connector = 'memory')")
    session.execute("CREATE FUNCTION f AS MODEL 'v1.onnx'")
    session.stream("s").push([{"id": 0, "x": [1.0, 2.0]}, {"id": 1, "x": None}]).finish()
    label = model_status(session)["version"]
    assert session.run_query("SELECT id, f(x) AS y, model_version(f) AS v FROM s WHERE model_version(f) LIKE 'v1 %'") == [
        {"id": 0, "y": 3.0, "v": label}, {"id": 1, "y": None, "v": label}]


def test_explain_and_show_functions_name_the_version(tmp_path):
    scale_model(tmp_path / "v1.onnx", 1.0)
    session = TestSession(base_dir=str(tmp_path))
    session.execute("CREATE SOURCE s (id BIGINT, x FLOAT[2]) WITH (connector = 'memory')")
    session.execute("CREATE FUNCTION f AS MODEL 'v1.onnx'")
    text = session.execute("EXPLAIN SELECT f(x) AS y, model_version(f) AS v FROM s")[0].text
    assert "vectorized model version call model_version('f') -> __udf1" in text
    row = session.execute("SHOW FUNCTIONS")[0].table.to_pylist()[0]
    assert row["version"] == model_status(session)["version"]
    assert datetime.strptime(row["loaded"], "%Y-%m-%d %H:%M:%S.%fZ").year >= 2024


def test_register_model_takes_the_version_options_with_paths_relative_to_the_session(tmp_path):
    scale_model(tmp_path / "v1.onnx", 1.0)
    scale_model(tmp_path / "v2.onnx", 2.0)
    session = TestSession(base_dir=str(tmp_path))
    session.register_model("f", "v1.onnx", shadow="v2.onnx", reload="on_change", reload_interval="250ms")
    session.execute("CREATE SOURCE s (id BIGINT, x FLOAT[2]) WITH (connector = 'memory')")
    session.stream("s").push(rows_of(features(10)), batch_size=3).finish()
    assert [r["y"] for r in session.run_query("SELECT f(x) AS y FROM s")] == pytest.approx(
        features(10).sum(axis=1).astype(np.float64).tolist(), rel=1e-6)
    status = model_status(session)
    assert (status["shadow"], status["reload"], status["shadow_rows"]) == (str(tmp_path / "v2.onnx"), "on_change every 0.25s", 10)


def test_show_model_names_one_model(tmp_path):
    scale_model(tmp_path / "v1.onnx", 1.0)
    session = TestSession(base_dir=str(tmp_path))
    session.execute("CREATE FUNCTION fmodel AS MODEL 'v1.onnx'")
    rows = session.execute("SHOW MODEL fmodel")[0].table.to_pylist()
    assert [(r["name"], r["version"], r["swaps"], r["shadow"], r["shadow_rows"]) for r in rows] == [
        ("fmodel", model_status(session, "fmodel")["version"], 0, "", 0)]
    with pytest.raises(SqlAnalysisError) as refused:
        session.execute("SHOW MODEL fmodle")
    assert str(refused.value).startswith("<sql>:1:1: error: SHOW MODEL: 'fmodle' is not a model function")
    assert "did you mean 'fmodel'" in str(refused.value)


def test_a_view_using_the_model_holds_its_signature_until_it_is_dropped(tmp_path):
    scale_model(tmp_path / "v1.onnx", 1.0)
    scale_model(tmp_path / "wide.onnx", 1.0, width=3)
    session = TestSession(base_dir=str(tmp_path))
    session.execute("CREATE SOURCE s (id BIGINT, x FLOAT[2]) WITH (connector = 'memory')")
    session.execute("CREATE FUNCTION f AS MODEL 'v1.onnx'")
    session.execute("CREATE VIEW scored AS SELECT id, f(x) AS y FROM s")
    with pytest.raises(UdfError, match="wide.onnx does not take the arguments a running query passes"):
        session.execute("CREATE OR REPLACE FUNCTION f AS MODEL 'wide.onnx'")
    session.execute("DROP VIEW scored")
    session.execute("CREATE OR REPLACE FUNCTION f AS MODEL 'wide.onnx'")
    assert model_status(session)["version"].startswith("v2 ")


def test_the_documented_example_runs_and_prints_what_the_docs_say(tmp_path, monkeypatch, capsys):
    import re
    from pathlib import Path

    docs = (Path(__file__).parents[2] / "docs" / "functions-and-models.md").read_text()
    section = docs[docs.index("## Updating models: hot swap, versions, shadow"):docs.index("## Examples")]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "functions-and-models.md", "exec"), {})
    def hashless(lines):  # the sha depends on the onnx package that wrote the files
        return [re.sub(r"sha [0-9a-f]{6}", "sha ...", line) for line in lines]

    printed = capsys.readouterr().out.splitlines()
    documented = [line[2:] for line in code.splitlines() if line.startswith("# {")]
    assert len(documented) == 2 and hashless(printed) == hashless(documented)
