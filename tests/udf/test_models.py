"""ONNX model UDFs: results equal onnxruntime called directly, every argument form,
struct/ZipMap/chosen outputs, Parquet list columns, NULLs, errors at CREATE/check
time with expected vs actual shapes, local files only, int8 quantization cache."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sqlstream import UdfError
from sqlstream.cli.main import main
from sqlstream.testing import TestSession
from tests.udf.models_fixture import models  # noqa: F401 - the session-scoped fixture

ROWS = 200


def features_table(x: np.ndarray) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(np.arange(len(x), dtype=np.int64)),
            "features": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1]),
            **{name: pa.array(x[:, i]) for i, name in enumerate("abcd")},
        }
    )


def direct(path: str, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def model_session(tmp_path, models, batch_size=None) -> TestSession:  # noqa: F811
    session = TestSession(base_dir=models.directory, dead_letter_path=str(tmp_path / "dead.jsonl"))
    session.execute("CREATE SOURCE s (id BIGINT, features FLOAT[4], a REAL, b REAL, c REAL, d REAL) WITH (connector = 'memory')")
    session.stream("s").push(features_table(models.features[:ROWS]), batch_size=batch_size).finish()
    return session


@pytest.mark.parametrize("batch_size", [1, 7, 64, None])
@pytest.mark.parametrize("model", ["regressor", "trees"])
def test_results_equal_onnxruntime_called_directly(tmp_path, models, model, batch_size):  # noqa: F811
    session = model_session(tmp_path, models, batch_size)
    session.execute(f"CREATE FUNCTION predict AS MODEL '{model}.onnx'")
    rows = session.run_query("SELECT id, predict(features) AS p, predict(a, b, c, d) AS q FROM s")
    expected = direct(getattr(models, model), models.features[:ROWS])[0].reshape(-1)
    assert [r["id"] for r in rows] == list(range(ROWS))
    np.testing.assert_allclose([r["p"] for r in rows], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([r["q"] for r in rows], expected, rtol=1e-5, atol=1e-6)


def test_mission_query_text_works_literally(tmp_path, models):  # noqa: F811
    session = TestSession(base_dir=models.directory, dead_letter_path="off")
    session.execute(
        "CREATE SOURCE sensors (sensor_id BIGINT, features FLOAT[4]) WITH (connector = 'memory');\n"
        "CREATE FUNCTION predict AS MODEL 'regressor.onnx';"
    )
    x = models.features[:5]
    session.stream("sensors").push(
        pa.table({"sensor_id": np.arange(5), "features": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 4)})
    ).finish()
    rows = session.run_query("SELECT predict(features) FROM sensors")
    assert list(rows[0]) == ["predict"]
    np.testing.assert_allclose([r["predict"] for r in rows], direct(models.regressor, x)[0].reshape(-1), rtol=1e-6)


@pytest.mark.parametrize("name", ["ml_predict", "score", "classify", "explode"])
def test_model_names_that_are_builtins_elsewhere(tmp_path, models, name):  # noqa: F811
    session = model_session(tmp_path, models)
    session.execute(f"CREATE FUNCTION {name} AS MODEL 'regressor.onnx'")
    rows = session.run_query(f"SELECT {name}(features) AS p FROM s WHERE {name}(features) > -1000")
    assert len(rows) == ROWS


def test_zipmap_classifier_gives_a_struct_of_label_and_probabilities(tmp_path, models):  # noqa: F811
    session = model_session(tmp_path, models, batch_size=50)
    session.execute("CREATE FUNCTION classify AS MODEL 'classifier.onnx'")
    signature = session.execute("SHOW FUNCTIONS")[0].table.to_pylist()[0]["signature"]
    assert signature == "classify(REAL[4] or 4 numeric arguments) -> STRUCT<label BIGINT, probability REAL[2]>  [model classifier.onnx]"
    rows = session.run_query(
        "SELECT classify(features).label AS label, classify(features).probability AS p, "
        "classify(features).probability[2] AS p1, classify(features) AS whole FROM s"
    )
    labels, zipmaps = direct(models.classifier, models.features[:ROWS])  # onnxruntime: a list of {class: p}
    assert [r["label"] for r in rows] == labels.tolist()
    expected = np.array([[m[0], m[1]] for m in zipmaps])
    np.testing.assert_allclose([r["p"] for r in rows], expected, rtol=1e-6)
    np.testing.assert_allclose([r["p1"] for r in rows], expected[:, 1], rtol=1e-6)
    assert rows[0]["whole"] == {"label": rows[0]["label"], "probability": rows[0]["p"]}


def test_output_option_picks_one_output(tmp_path, models):  # noqa: F811
    session = model_session(tmp_path, models)
    session.execute(
        "CREATE FUNCTION p_fraud AS MODEL 'tree_classifier.onnx' WITH (output = 'probabilities');"
        "CREATE FUNCTION label_of AS MODEL 'classifier.onnx' WITH (output = 'output_label');"
    )
    rows = session.run_query("SELECT p_fraud(features)[2] AS p, label_of(a, b, c, d) AS l FROM s WHERE p_fraud(features)[2] > 0.5")
    labels, probabilities = direct(models.tree_classifier, models.features[:ROWS])
    expected = probabilities[:, 1][probabilities[:, 1] > 0.5]
    np.testing.assert_allclose([r["p"] for r in rows], expected, rtol=1e-6)
    assert set(r["l"] for r in rows) <= {0, 1}


def test_several_inputs_take_one_argument_each(tmp_path, models):  # noqa: F811
    session = TestSession(base_dir=models.directory, dead_letter_path="off")
    session.execute("CREATE SOURCE s (pair FLOAT[2], b REAL, triple FLOAT[3], ints BIGINT[2]) WITH (connector = 'memory')")
    session.execute(
        "CREATE FUNCTION mix AS MODEL 'two_inputs.onnx';"
        "CREATE FUNCTION total AS MODEL 'double_input.onnx';"
        "CREATE FUNCTION itotal AS MODEL 'int_input.onnx';"
        "CREATE FUNCTION texts AS MODEL 'string_output.onnx';"
    )
    session.stream("s").push(
        [
            {"pair": [2.0, 3.0], "b": 1.0, "triple": [0.5, 0.25, 0.125], "ints": [2, 40]},
            {"pair": [-1.0, 4.0], "b": 0.5, "triple": [1.0, 2.0, 3.0], "ints": [7, -7]},
        ]
    ).finish()
    rows = session.run_query("SELECT mix(pair, b) AS m, total(triple) AS t, itotal(ints) AS i, texts(pair) AS s FROM s")
    assert rows == [
        {"m": 7.0, "t": 0.875, "i": 42, "s": ["2", "3"]},
        {"m": -3.5, "t": 6.0, "i": 0, "s": ["-1", "4"]},
    ]
    shows = {r["name"]: r["signature"] for r in session.execute("SHOW FUNCTIONS")[0].table.to_pylist()}
    assert shows["mix"] == "mix(REAL[2], REAL[1]) -> REAL  [model two_inputs.onnx]"
    assert shows["total"] == "total(DOUBLE[3] or 3 numeric arguments) -> DOUBLE  [model double_input.onnx]"


def test_null_features_give_null(tmp_path, models):  # noqa: F811
    session = TestSession(base_dir=models.directory, dead_letter_path="off")
    session.execute("CREATE SOURCE s (id BIGINT, features FLOAT[4], a REAL) WITH (connector = 'memory')")
    x = models.features[:4]
    session.stream("s").push(
        [
            {"id": 0, "features": x[0].tolist(), "a": 1.0},
            {"id": 1, "features": None, "a": 1.0},
            {"id": 2, "features": [float(x[2, 0]), None, 1.0, 1.0], "a": 1.0},
            {"id": 3, "features": x[3].tolist(), "a": None},
        ]
    ).finish()
    session.execute("CREATE FUNCTION predict AS MODEL 'regressor.onnx'")
    rows = session.run_query("SELECT id, predict(features) AS p, predict(a, a, a, a) AS q FROM s")
    expected = direct(models.regressor, x)[0].reshape(-1)
    assert [r["p"] is None for r in rows] == [False, True, True, False]
    np.testing.assert_allclose([rows[0]["p"], rows[3]["p"]], [expected[0], expected[3]], rtol=1e-6)
    assert [r["q"] is None for r in rows] == [False, False, False, True]


@pytest.mark.parametrize("compliant", [True, False])
@pytest.mark.parametrize("declared", ["FLOAT[4]", "FLOAT[]", "DOUBLE[4]"])
def test_parquet_list_columns_match_the_signature(tmp_path, models, compliant, declared):  # noqa: F811
    x = models.features[:50]
    offsets = pa.array(np.arange(0, 4 * len(x) + 1, 4, dtype=np.int32))
    child = pa.field("element" if compliant else "item", pa.float32())
    column = pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1)), type=pa.list_(child))
    path = tmp_path / "features.parquet"
    pq.write_table(pa.table({"id": np.arange(len(x)), "features": column}), path, use_compliant_nested_type=compliant)
    assert pq.read_schema(path).field("features").type.value_field.name == child.name
    session = TestSession(base_dir=str(tmp_path), dead_letter_path="off")
    shutil.copy(models.regressor, tmp_path / "model.onnx")
    session.execute(
        f"CREATE SOURCE s (id BIGINT, features {declared}) WITH (connector = 'file', path = 'features.parquet', format = 'parquet');"
        "CREATE FUNCTION predict AS MODEL 'model.onnx';"
    )
    rows = session.run_query("SELECT id, predict(features) AS p FROM s")
    np.testing.assert_allclose([r["p"] for r in rows], direct(models.regressor, x)[0].reshape(-1), rtol=1e-5)


def test_variable_lists_of_the_wrong_length_are_dead_letters(tmp_path, models):  # noqa: F811
    session = TestSession(base_dir=models.directory, dead_letter_path=str(tmp_path / "dead.jsonl"))
    session.execute("CREATE SOURCE s (id BIGINT, features FLOAT[]) WITH (connector = 'memory');"
                    "CREATE FUNCTION predict AS MODEL 'regressor.onnx'")
    x = models.features[:6]
    rows = [{"id": i, "features": x[i].tolist()} for i in range(6)]
    rows[2]["features"] = rows[2]["features"][:3]
    rows[5]["features"] = rows[5]["features"] + [1.0]
    session.stream("s").push(rows, batch_size=4).finish()
    out = session.run_query("SELECT id, predict(features) AS p FROM s")
    assert [r["id"] for r in out] == [0, 1, 3, 4]
    letters = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [(json.loads(d["raw"])["id"], d["reason"], d["detail"]) for d in letters] == [
        (2, "udf", "predict: ValueError: input 'X' needs 4 features, got 3"),
        (5, "udf", "predict: ValueError: input 'X' needs 4 features, got 5"),
    ]


def test_register_model_from_python(tmp_path, models):  # noqa: F811
    session = model_session(tmp_path, models)
    session.register_model("Risk", "regressor.onnx", threads=1)
    assert session.functions["risk"].signature == "risk(REAL[4] or 4 numeric arguments) -> REAL  [model regressor.onnx]"
    rows = session.run_query("SELECT risk(features) AS r FROM s")
    np.testing.assert_allclose([r["r"] for r in rows], direct(models.regressor, models.features[:ROWS])[0].reshape(-1), rtol=1e-5)
    with pytest.raises(UdfError, match="function 'risk' already exists"):
        session.register_model("risk", "trees.onnx")
    session.execute("DROP FUNCTION risk; CREATE FUNCTION risk AS MODEL 'trees.onnx'")
    assert session.functions["risk"].signature.endswith("[model trees.onnx]")


# -- errors at CREATE / check time ---------------------------------------------------------------


def check(tmp_path, capsys, sql: str) -> tuple[int, str, str]:
    pipeline = tmp_path / "pipeline.sql"
    pipeline.write_text(sql)
    code = main(["check", str(pipeline)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


SOURCE = "CREATE SOURCE s (features FLOAT[4], small FLOAT[3], name VARCHAR, ints BIGINT[4]) WITH (connector = 'generator', max_rows = 10);\n"


@pytest.fixture
def model_dir(tmp_path, models, monkeypatch):  # noqa: F811
    monkeypatch.chdir(tmp_path)  # no udfs/ of the working directory
    for name in ("regressor", "classifier", "int_input"):
        shutil.copy(getattr(models, name), tmp_path / f"{name}.onnx")
    return tmp_path


@pytest.mark.parametrize(
    "sql, expected",
    [
        (
            "CREATE FUNCTION predict AS MODEL 'missing.onnx';",
            "pipeline.sql:2:1: error: model file not found: {dir}/missing.onnx",
        ),
        (
            "CREATE FUNCTION predict AS MODEL 'regressor.onnx';\nSELECT predict(small) FROM s;",
            "pipeline.sql:3:8: error: model predict expects 4 features (input 'X' is [N, 4]), got REAL[3] (3 features)",
        ),
        (
            "CREATE FUNCTION predict AS MODEL 'regressor.onnx';\nSELECT predict(name) FROM s;",
            "pipeline.sql:3:8: error: model predict expects REAL[4] or 4 numeric arguments (input 'X' is [N, 4]), got 1 argument(s): (VARCHAR)",
        ),
        (
            "CREATE FUNCTION predict AS MODEL 'regressor.onnx';\nSELECT predict(name, name, name, name) FROM s;",
            "pipeline.sql:3:8: error: model predict: input 'X' takes REAL values, got VARCHAR",
        ),
        (
            "CREATE FUNCTION itotal AS MODEL 'int_input.onnx';\nSELECT itotal(small) FROM s;",
            "pipeline.sql:3:8: error: model itotal expects 2 features (input 'x' is [N, 2]), got REAL[3] (3 features)",
        ),
        (
            "CREATE FUNCTION predict AS MODEL 'regressor.onnx' WITH (colour = 'red');",
            "pipeline.sql:2:57: error: unknown model option 'colour'",
        ),
        (
            "CREATE FUNCTION predict AS MODEL 'classifier.onnx' WITH (output = 'probabilty');",
            "pipeline.sql:2:58: error: model classifier.onnx has no output 'probabilty'",
        ),
        (
            "CREATE FUNCTION predict AS MODEL 'regressor.onnx' WITH (quantize = 'int4');",
            "pipeline.sql:2:57: error: quantize = 'int4' is not supported",
        ),
        (
            "CREATE FUNCTION predict AS MODEL 'regressor.onnx' WITH (threads = 'many');",
            "pipeline.sql:2:57: error: threads = 'many' is not a positive integer",
        ),
        (
            "CREATE FUNCTION predict AS MODEL 'https://example.com/m.onnx';",
            "pipeline.sql:2:1: error: models load from local files only, not https://example.com/m.onnx",
        ),
        (
            "CREATE FUNCTION predict AS MODEL 'model.pkl';",
            "pipeline.sql:2:1: error: model.pkl is a pickled Python object; sqlstream loads ONNX models only and never unpickles",
        ),
        (
            "CREATE FUNCTION predict AS MODEL 'pipeline.sql';",
            "pipeline.sql:2:1: error: {dir}/pipeline.sql is not an ONNX model (it does not parse as an ONNX protobuf)",
        ),
        (
            "CREATE FUNCTION sum AS MODEL 'regressor.onnx';",
            "pipeline.sql:2:1: error: function name 'sum' is a SQL aggregate function",
        ),
    ],
)
def test_errors_at_check_time(model_dir, capsys, sql, expected):
    code, _, err = check(model_dir, capsys, SOURCE + sql)
    assert code == 2
    assert err.splitlines()[0] == f"{model_dir}/" + expected.format(dir=model_dir)
    assert "Traceback" not in err


def test_output_error_lists_the_outputs(model_dir, capsys):
    _, _, err = check(model_dir, capsys, SOURCE + "CREATE FUNCTION p AS MODEL 'classifier.onnx' WITH (output = 'x');")
    assert "hint: outputs: label, probability" in err


def test_dot_on_a_scalar_model_result_is_an_error(model_dir, capsys):
    _, _, err = check(model_dir, capsys, SOURCE + "CREATE FUNCTION predict AS MODEL 'regressor.onnx';\nSELECT predict(features).label FROM s;")
    assert err.splitlines()[0] == f"{model_dir}/" + ("pipeline.sql:3:26: error: predict(...) returns REAL, not a STRUCT: it has no field 'label'")


def test_a_valid_pipeline_checks(model_dir, capsys):
    code, out, _ = check(model_dir, capsys, SOURCE + "CREATE FUNCTION classify AS MODEL 'classifier.onnx';\nSELECT classify(features).label FROM s;")
    assert code == 0
    assert "1 query(ies), 1 function(s)" in out


# -- quantization -------------------------------------------------------------------------------------


def test_int8_quantization_is_cached_next_to_the_model(tmp_path, models):  # noqa: F811
    shutil.copy(models.regressor, tmp_path / "net.onnx")
    session = TestSession(base_dir=str(tmp_path), dead_letter_path="off")
    session.execute("CREATE SOURCE s (features FLOAT[4]) WITH (connector = 'memory');"
                    "CREATE FUNCTION fast AS MODEL 'net.onnx' WITH (quantize = 'int8');"
                    "CREATE FUNCTION exact AS MODEL 'net.onnx'")
    cached = [name for name in os.listdir(tmp_path) if name.startswith("net.int8-")]
    assert len(cached) == 1 and cached[0].endswith(".onnx")
    import hashlib

    digest = hashlib.sha256((tmp_path / "net.onnx").read_bytes()).hexdigest()[:16]
    assert cached[0] == f"net.int8-{digest}.onnx"
    stamp = os.stat(tmp_path / cached[0]).st_mtime_ns
    x = models.features[:ROWS]
    session.stream("s").push(pa.table({"features": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 4)})).finish()
    rows = session.run_query("SELECT fast(features) AS q, exact(features) AS e FROM s")
    q, e = np.array([r["q"] for r in rows]), np.array([r["e"] for r in rows])
    assert np.mean(np.abs(q - e)) < 0.05 * np.std(e)  # quantized, not identical, but close
    again = TestSession(base_dir=str(tmp_path), dead_letter_path="off")
    again.execute("CREATE FUNCTION fast AS MODEL 'net.onnx' WITH (quantize = 'int8')")
    assert os.stat(tmp_path / cached[0]).st_mtime_ns == stamp  # reused, not made again


# -- the examples ----------------------------------------------------------------------------------------


def run_example(name: str, tmp_path, monkeypatch, rows: tuple[str, str]) -> str:
    """Copy ``examples/<name>`` to ``tmp_path``, make its model, run it on fewer rows."""
    import runpy

    here = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples", name)
    target = tmp_path / name
    shutil.copytree(here, target, ignore=shutil.ignore_patterns("out", "*.onnx", "*.jsonl", "__pycache__"))
    pipeline = target / "pipeline.sql"
    assert rows[0] in pipeline.read_text()
    pipeline.write_text(pipeline.read_text().replace(*rows))
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(target / "make_model.py"), run_name="__main__")
    assert main(["run", str(target / "pipeline.sql")]) == 0
    return str(target)


def read_jsonl(path: str) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def test_fraud_example_runs_and_its_sinks_agree(tmp_path, capsys, monkeypatch):
    target = run_example("fraud", tmp_path, monkeypatch, ("max_rows = 200000", "max_rows = 50000"))
    suspicious = read_jsonl(os.path.join(target, "out", "suspicious.jsonl"))
    alerts = read_jsonl(os.path.join(target, "out", "alerts_per_merchant.jsonl"))
    assert len(suspicious) > 500
    assert all(r["p"] > 0.9 and r["band"] in ("high", "critical") for r in suspicious)
    # same predicate, events at most 1 s out of order under a 2 s watermark delay: none late
    assert sum(r["alerts"] for r in alerts) == len(suspicious)
    assert "dead letters: 0" in capsys.readouterr().err


def test_sensors_example_runs_the_mission_query(tmp_path, monkeypatch):
    target = run_example("sensors", tmp_path, monkeypatch, ("max_rows = 60000", "max_rows = 20000"))
    scores = read_jsonl(os.path.join(target, "out", "scores.jsonl"))
    anomalies = read_jsonl(os.path.join(target, "out", "anomalies.jsonl"))
    assert len(scores) == 20_000 and set(scores[0]) == {"predict"}
    assert sum(r["predict"]["label"] == -1 for r in scores) == len(anomalies) > 0
    assert all(r["score"] < 0 for r in anomalies)
