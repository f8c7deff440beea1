"""Image models (``input = 'image'``) and tensor types: decoded tensors equal Pillow per
image, results equal onnxruntime run directly on those tensors whatever the batch size,
undecodable images are ``decode`` dead letters with their row, shape/option mistakes are
located errors at CREATE, ``labels`` give STRUCT<label, score>, ``FLOAT[2][3][4]``
columns feed ``[N, 2, 3, 4]`` models, and a whole ``sqlstream run`` over a folder of
images agrees with onnxruntime."""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sqlstream.cli.main import main
from sqlstream.testing import TestSession
from sqlstream.udf.images import decode_images, image_spec
from tests.udf.image_models import MIX, build_image_models, encode, pillow_tensor, random_image

LABELS = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("image_models")
    build_image_models(str(directory))
    return directory


def images(seed: int, count: int, fmt: str = "PNG", mode: str = "RGB") -> list[bytes]:
    """``count`` images of assorted sizes (smaller, equal to and larger than 32x32)."""
    rng = np.random.default_rng(seed)
    sizes = [(32, 32), (50, 20), (7, 9), (64, 48), (33, 31)]
    return [encode(random_image(rng, *sizes[i % len(sizes)], mode), fmt) for i in range(count)]


def spec_for(model_dir, model: str, **options):
    session = ort.InferenceSession(str(model_dir / f"{model}.onnx"), providers=["CPUExecutionProvider"])
    node = session.get_inputs()[0]
    dtype = np.uint8 if node.type == "tensor(uint8)" else np.float32
    return image_spec(model, session.get_inputs(), np.dtype(dtype), {"input": "image", **options})


def direct(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


# -- decoding: equal to Pillow, image by image ----------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_decoded_tensor_equals_pillow_per_image(model_dir, fmt, mode):
    data = images(1, 10, fmt, mode)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    spec = spec_for(model_dir, "rgb_classifier", mean=",".join(map(str, mean)), std=",".join(map(str, std)),
                    decode_threads="3")
    tensor, rows, failures = decode_images(pa.array(data, pa.binary()), spec)
    assert failures == [] and rows.tolist() == list(range(10))
    assert tensor.shape == (10, 3, 32, 32) and tensor.dtype == np.float32 and tensor.flags.c_contiguous
    expected = np.stack([pillow_tensor(d, (32, 32), "RGB", mean, std) for d in data])
    np.testing.assert_allclose(tensor, expected, rtol=1e-5, atol=1e-5)


def test_gray_bgr_and_nhwc_layouts_equal_pillow(model_dir):
    data = images(2, 6, "JPEG")
    gray, _, _ = decode_images(pa.array(data, pa.binary()), spec_for(model_dir, "gray_mean"))
    expected = np.stack([pillow_tensor(d, (16, 16), "L") for d in data])
    np.testing.assert_allclose(gray, expected, rtol=1e-6, atol=1e-6)
    bgr, _, _ = decode_images(pa.array(data, pa.binary()), spec_for(model_dir, "rgb_classifier", channels="bgr"))
    rgb = np.stack([pillow_tensor(d, (32, 32)) for d in data])
    np.testing.assert_allclose(bgr, rgb[:, ::-1], rtol=1e-6, atol=1e-6)
    raw, _, _ = decode_images(pa.array(data, pa.binary()), spec_for(model_dir, "nhwc_uint8"))
    assert raw.shape == (6, 24, 32, 3) and raw.dtype == np.uint8
    pixels = np.stack([np.round(pillow_tensor(d, (32, 24)) * 255).transpose(1, 2, 0) for d in data])
    np.testing.assert_array_equal(raw, pixels.astype(np.uint8))


def test_a_sliced_column_with_nulls_decodes_the_right_rows(model_dir):
    data = images(3, 8)
    column = pa.array([data[0], None, *data[1:]], pa.binary()).slice(2, 5)  # data[1..5]
    tensor, rows, failures = decode_images(column, spec_for(model_dir, "rgb_classifier", decode_threads="2"))
    assert rows.tolist() == [0, 1, 2, 3, 4] and failures == []
    np.testing.assert_allclose(tensor, np.stack([pillow_tensor(d, (32, 32)) for d in data[1:6]]), atol=1e-6)


# -- in SQL: results equal onnxruntime, whatever the batch size ------------------------------------


def camera(model_dir, tmp_path, data: list[bytes | None], batch_size=None) -> TestSession:
    session = TestSession(base_dir=str(model_dir), dead_letter_path=str(tmp_path / "dead.jsonl"))
    session.execute("CREATE SOURCE camera (id BIGINT, image BYTEA) WITH (connector = 'memory')")
    table = pa.table({"id": pa.array(range(len(data)), pa.int64()), "image": pa.array(data, pa.binary())})
    session.stream("camera").push(table, batch_size=batch_size).finish()
    return session


@pytest.mark.parametrize("batch_size, max_batch", [(1, 64), (7, 64), (64, 64), (64, 5)])
def test_labels_and_scores_equal_onnxruntime_on_the_pillow_tensors(model_dir, tmp_path, batch_size, max_batch):
    data = images(4, 40, "JPEG")
    session = camera(model_dir, tmp_path, data, batch_size)
    session.execute("CREATE FUNCTION inspect AS MODEL 'rgb_classifier.onnx' WITH (input = 'image', size = '32x32', "
                    f"mean = '0.5,0.5,0.5', std = '0.25', labels = 'red,green,blue', max_batch = {max_batch})")
    rows = session.run_query("SELECT id, inspect(image).label AS label, inspect(image).score AS score FROM camera")
    x = np.stack([pillow_tensor(d, (32, 32), mean=0.5, std=0.25) for d in data])
    scores = direct(model_dir / "rgb_classifier.onnx", x)
    by_hand = np.einsum("kc,nc->nk", MIX, x.mean(axis=(2, 3)))  # the model is a 1x1 conv and an average
    np.testing.assert_allclose(scores, by_hand, rtol=1e-4, atol=1e-5)
    assert [r["id"] for r in rows] == list(range(40))
    assert [r["label"] for r in rows] == [LABELS[i] for i in scores.argmax(axis=1)]
    np.testing.assert_allclose([r["score"] for r in rows], scores.max(axis=1), rtol=1e-5, atol=1e-6)


def test_without_labels_the_scores_are_a_fixed_size_list(model_dir, tmp_path):
    data = images(5, 5)
    session = camera(model_dir, tmp_path, data)
    session.execute("CREATE FUNCTION scores AS MODEL 'rgb_classifier.onnx' WITH (input = 'image')")
    assert session.functions["scores"].signature == (
        "scores(BYTEA (an encoded image, decoded to 32x32 rgb nchw)) -> REAL[3]  [model rgb_classifier.onnx]")
    rows = session.run_query("SELECT scores(image) AS s FROM camera")
    expected = direct(model_dir / "rgb_classifier.onnx", np.stack([pillow_tensor(d, (32, 32)) for d in data]))
    np.testing.assert_allclose([r["s"] for r in rows], expected, rtol=1e-5, atol=1e-6)


def test_any_size_model_takes_the_declared_size(model_dir, tmp_path):
    data = images(6, 4)
    session = camera(model_dir, tmp_path, data)
    session.execute("CREATE FUNCTION means AS MODEL 'any_size.onnx' WITH (input = 'image', size = '20x10')")
    rows = session.run_query("SELECT means(image) AS m FROM camera")
    expected = np.stack([pillow_tensor(d, (20, 10)).mean(axis=(1, 2)) for d in data])
    np.testing.assert_allclose([r["m"] for r in rows], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch_size, max_batch", [(1, 64), (3, 64), (64, 64), (64, 2), (5, 3)])
def test_undecodable_images_are_decode_dead_letters_with_their_row(model_dir, tmp_path, batch_size, max_batch):
    good = images(7, 6, "PNG")
    truncated = good[1][: len(good[1]) // 2]
    data = [good[0], b"not an image", good[2], truncated, None, good[3], b"", good[4]]
    session = camera(model_dir, tmp_path, data, batch_size)
    session.execute("CREATE FUNCTION inspect AS MODEL 'rgb_classifier.onnx' WITH (input = 'image', labels = 'r,g,b', "
                    f"max_batch = {max_batch})")
    rows = session.run_query("SELECT id, inspect(image).label AS label FROM camera")
    expected = direct(model_dir / "rgb_classifier.onnx", np.stack([pillow_tensor(d, (32, 32)) for d in good[:5]]))
    assert [r["label"] for r in rows] == [["r", "g", "b"][i] for i in expected.argmax(axis=1)[[0, 2]]] + [None] + [
        ["r", "g", "b"][i] for i in expected.argmax(axis=1)[[3, 4]]]
    assert [r["id"] for r in rows] == [0, 2, 4, 5, 7]
    assert rows[2]["label"] is None  # a NULL image gives NULL, the others their own labels
    letters = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [(json.loads(d["raw"])["id"], d["reason"], d["source"]) for d in letters] == [
        (1, "decode", "camera"), (3, "decode", "camera"), (6, "decode", "camera")]
    assert letters[0]["detail"] == "inspect: UnidentifiedImageError: cannot identify image file"
    assert letters[1]["detail"].startswith("inspect: OSError: ")
    assert all(d["detail"].startswith("inspect: ") for d in letters)


def test_a_shadowed_image_model_keeps_its_decode_dead_letters_and_compares_the_decoded_rows(model_dir, tmp_path):
    good = images(9, 4, "PNG")
    data = [good[0], b"not an image", good[1], good[2], good[3]]
    session = camera(model_dir, tmp_path, data, 2)
    for name in ("served.onnx", "candidate.onnx"):  # the same model twice: the shadow must agree on every row
        (model_dir / name).write_bytes((model_dir / "rgb_classifier.onnx").read_bytes())
    session.execute("CREATE FUNCTION inspect AS MODEL 'served.onnx' WITH (input = 'image', labels = 'r,g,b', "
                    "shadow = 'candidate.onnx')")
    rows = session.run_query("SELECT id, inspect(image).label AS label FROM camera")
    expected = direct(model_dir / "rgb_classifier.onnx", np.stack([pillow_tensor(d, (32, 32)) for d in good]))
    assert [(r["id"], r["label"]) for r in rows] == list(zip([0, 2, 3, 4], [["r", "g", "b"][i] for i in expected.argmax(axis=1)]))
    letters = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [(json.loads(d["raw"])["id"], d["reason"]) for d in letters] == [(1, "decode")]
    shown = next(r for r in session.execute("SHOW MODELS")[0].table.to_pylist() if r["name"] == "inspect")
    assert (shown["shadow_rows"], shown["shadow_failures"], shown["shadow_agreement"]) == (4, 0, 1.0)


# -- tensor types ---------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 7, None])
def test_tensor_columns_feed_rank_4_models_and_come_back_as_tensors(model_dir, tmp_path, batch_size):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(20, 2, 3, 4)).astype(np.float32)
    session = TestSession(base_dir=str(model_dir), dead_letter_path=str(tmp_path / "dead.jsonl"))
    session.execute("CREATE SOURCE t (id BIGINT, x FLOAT[2][3][4], flat FLOAT[24]) WITH (connector = 'memory');"
                    "CREATE FUNCTION total AS MODEL 'tensor_sum.onnx';"
                    "CREATE FUNCTION twice AS MODEL 'tensor_double.onnx'")
    x_type = session.sources["t"].schema.field("x").type
    assert x_type == pa.list_(pa.list_(pa.list_(pa.float32(), 4), 3), 2)
    assert session.functions["twice"].signature == (
        "twice(REAL[2][3][4] or REAL[24]) -> REAL[2][3][4]  [model tensor_double.onnx]")
    column = pa.array(x.tolist(), x_type)
    flat = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 24)
    session.stream("t").push(pa.table({"id": pa.array(range(20), pa.int64()), "x": column, "flat": flat}),
                             batch_size=batch_size).finish()
    rows = session.run_query("SELECT id, total(x) AS s, total(flat) AS s2, twice(x) AS y FROM t")
    assert [r["id"] for r in rows] == list(range(20))
    np.testing.assert_allclose([r["s"] for r in rows], x.sum(axis=(2, 3)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose([r["s2"] for r in rows], x.sum(axis=(2, 3)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.array([r["y"] for r in rows]), 2 * x, rtol=1e-6)


# -- errors at CREATE / check time ---------------------------------------------------------------


def check(tmp_path, capsys, sql: str) -> tuple[int, str]:
    pipeline = tmp_path / "pipeline.sql"
    pipeline.write_text("CREATE SOURCE s (path VARCHAR, content BYTEA) WITH (connector = 'file', path = 'frames', "
                        "format = 'binary'); CREATE SOURCE s2 (t FLOAT[2][3][4], u FLOAT[3][2][4]) WITH "
                        "(connector = 'file', path = 't.jsonl', format = 'json');\n" + sql)
    code = main(["check", str(pipeline)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("CREATE FUNCTION f AS MODEL 'rgb_classifier.onnx' WITH (input = 'image', size = '224x224');",
         "pipeline.sql:2:73: error: size = '224x224' does not match model rgb_classifier.onnx: input 'x' has shape "
         "[None, 3, 32, 32] (nchw: W=32, H=32)"),
        ("CREATE FUNCTION f AS MODEL 'rgb_classifier.onnx' WITH (input = 'image', channels = 'gray');",
         "pipeline.sql:2:73: error: model rgb_classifier.onnx: input 'x' has shape [None, 3, 32, 32] (3 channels, "
         "nchw); channels = 'gray' gives 1"),
        ("CREATE FUNCTION f AS MODEL 'tensor_sum.onnx' WITH (input = 'image');",
         "pipeline.sql:2:52: error: model tensor_sum.onnx: input 'x' has shape [None, 2, 3, 4]: no dimension of 1 or "
         "3 channels"),
        ("CREATE FUNCTION f AS MODEL 'any_size.onnx' WITH (input = 'image');",
         "pipeline.sql:2:50: error: model any_size.onnx: input 'x' has shape [None, 3, 'h', 'w']: H and W are not fixed"),
        ("CREATE FUNCTION f AS MODEL 'rgb_classifier.onnx' WITH (input = 'image', mean = '0.5,0.5');",
         "pipeline.sql:2:73: error: mean = '0.5,0.5' is not one number or 3 comma-separated numbers"),
        ("CREATE FUNCTION f AS MODEL 'rgb_classifier.onnx' WITH (input = 'image', std = '0');",
         "pipeline.sql:2:73: error: std = '0' has a zero"),
        ("CREATE FUNCTION f AS MODEL 'rgb_classifier.onnx' WITH (input = 'image', max_batch = 0);",
         "pipeline.sql:2:73: error: max_batch = 0 is not a positive integer"),
        ("CREATE FUNCTION f AS MODEL 'rgb_classifier.onnx' WITH (input = 'pixels');",
         "pipeline.sql:2:56: error: input = 'pixels' is not supported"),
        ("CREATE FUNCTION f AS MODEL 'nhwc_uint8.onnx' WITH (input = 'image', std = '0.2');",
         "pipeline.sql:2:69: error: model nhwc_uint8.onnx: input 'x' takes uint8 pixels; std does not apply"),
        ("CREATE FUNCTION f AS MODEL 'rgb_classifier.onnx' WITH (input = 'image', labels = 'ok,scratch');",
         "pipeline.sql:2:73: error: model rgb_classifier.onnx: output 'scores' has 3 scores per row, labels names "
         "2 classes"),
        ("CREATE FUNCTION f AS MODEL 'gray_mean.onnx' WITH (input = 'image', labels = 'a,b');",
         "pipeline.sql:2:68: error: model gray_mean.onnx: labels needs one [N, k] score output"),
        ("CREATE FUNCTION f AS MODEL 'any_size.onnx';",
         "pipeline.sql:2:1: error: model any_size.onnx: input 'x' has shape [None, 3, 'h', 'w']; expected [N], "
         "[N, k] or [N, d1, d2, ...] with fixed sizes"),
        ("CREATE FUNCTION f AS MODEL 'rgb_classifier.onnx' WITH (input = 'image');\nSELECT f(path) FROM s;",
         "pipeline.sql:3:8: error: model f takes BYTEA (an encoded image, decoded to 32x32 rgb nchw) (input 'x' is "
         "[N, 3, 32, 32]), got (VARCHAR)"),
        ("CREATE FUNCTION f AS MODEL 'tensor_sum.onnx';\nSELECT f(u) FROM s2;",
         "pipeline.sql:3:8: error: model f takes REAL[2][3][4] or REAL[24] (input 'x' is [N, 2, 3, 4]), "
         "got (REAL[3][2][4])"),
    ],
)
def test_shape_and_option_mistakes_are_located_errors(model_dir, tmp_path, capsys, monkeypatch, sql, expected):
    monkeypatch.chdir(tmp_path)
    for name in os.listdir(model_dir):
        os.symlink(model_dir / name, tmp_path / name)
    code, err = check(tmp_path, capsys, sql)
    assert code == 2
    assert err.splitlines()[0] == f"{tmp_path}/" + expected
    assert "Traceback" not in err


def test_size_mismatch_hint_names_the_model_size(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.symlink(model_dir / "rgb_classifier.onnx", tmp_path / "rgb_classifier.onnx")
    _, err = check(tmp_path, capsys, "CREATE FUNCTION f AS MODEL 'rgb_classifier.onnx' WITH (input = 'image', "
                   "size = '64x64');")
    assert "hint: size = '32x32'" in err


# -- a whole pipeline: a folder of images in, Parquet out ----------------------------------------


def test_run_over_a_folder_of_images_equals_onnxruntime(model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "frames"
    folder.mkdir()
    data = images(9, 30, "JPEG")
    for i, d in enumerate(data):
        (folder / f"frame{i:03d}.jpg").write_bytes(d)
    (folder / "frame999.jpg").write_bytes(b"\xff\xd8 broken")
    os.symlink(model_dir / "rgb_classifier.onnx", tmp_path / "defects.onnx")
    (tmp_path / "qc.sql").write_text(
        "SET batch_size = 7;\n"
        "CREATE SOURCE camera (path VARCHAR, content BYTEA) WITH (connector = 'file', path = 'frames', "
        "format = 'binary');\n"
        "CREATE FUNCTION inspect AS MODEL 'defects.onnx' WITH (input = 'image', size = '32x32', "
        "mean = '0.485,0.456,0.406', std = '0.229,0.224,0.225', labels = 'red,green,blue');\n"
        "CREATE SINK verdicts AS SELECT path, inspect(content).label AS label, inspect(content).score AS score "
        "FROM camera WITH (connector = 'file', path = 'out/verdicts.parquet', format = 'parquet');\n"
    )
    assert main(["run", str(tmp_path / "qc.sql")]) == 0
    out = pq.read_table(tmp_path / "out" / "verdicts.parquet").to_pylist()
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    scores = direct(model_dir / "rgb_classifier.onnx", np.stack([pillow_tensor(d, (32, 32), "RGB", mean, std)
                                                                 for d in data]))
    assert [os.path.basename(r["path"]) for r in out] == [f"frame{i:03d}.jpg" for i in range(30)]
    assert [r["label"] for r in out] == [LABELS[i] for i in scores.argmax(axis=1)]
    np.testing.assert_allclose([r["score"] for r in out], scores.max(axis=1), rtol=1e-5, atol=1e-6)
    letters = [json.loads(line) for line in (tmp_path / "qc.dead_letter.jsonl").read_text().splitlines()]
    assert [(d["reason"], os.path.basename(json.loads(d["raw"])["path"])) for d in letters] == [
        ("decode", "frame999.jpg")]


def test_quality_control_example_finds_the_scratches(tmp_path, monkeypatch):
    import runpy
    import shutil
    import sys

    here = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples",
                        "quality_control")
    target = tmp_path / "quality_control"
    shutil.copytree(here, target, ignore=shutil.ignore_patterns("out", "frames", "*.onnx", "*.csv", "*.jsonl",
                                                                "__pycache__"))
    monkeypatch.chdir(target)
    monkeypatch.setattr(sys, "argv", ["make_data.py", "--count", "120", "--seed", "3"])
    runpy.run_path(str(target / "make_data.py"), run_name="__main__")
    runpy.run_path(str(target / "make_model.py"), run_name="__main__")
    (target / "frames" / "part_bad.jpg").write_bytes(b"not a photo")
    assert main(["run", str(target / "pipeline.sql")]) == 0
    share, pairs = runpy.run_path(str(target / "check_accuracy.py"))["accuracy"]()
    assert sum(pairs.values()) == 120
    assert share >= 0.9
    letters = [json.loads(line) for line in (target / "pipeline.dead_letter.jsonl").read_text().splitlines()]
    assert [(d["reason"], os.path.basename(json.loads(d["raw"])["path"])) for d in letters] == [
        ("decode", "part_bad.jpg")]


def test_a_json_tensor_of_the_wrong_shape_is_a_type_dead_letter(model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.symlink(model_dir / "tensor_sum.onnx", tmp_path / "tensor_sum.onnx")
    x = np.arange(72, dtype=np.float32).reshape(3, 2, 3, 4)
    rows = [{"id": i, "x": x[i].tolist()} for i in range(3)]
    rows[1]["x"][1] = rows[1]["x"][1][:2]  # 2 x [3 | 2] x 4
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.sql").write_text(
        "CREATE SOURCE t (id BIGINT, x FLOAT[2][3][4]) WITH (connector = 'file', path = 't.jsonl', format = 'json');\n"
        "CREATE FUNCTION total AS MODEL 'tensor_sum.onnx';\n"
        "CREATE SINK out AS SELECT id, total(x) AS s FROM t WITH (connector = 'file', path = 'out.jsonl', format = 'json');\n"
    )
    assert main(["run", str(tmp_path / "t.sql")]) == 0
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in out] == [0, 2]
    np.testing.assert_allclose([r["s"] for r in out], x[[0, 2]].sum(axis=(2, 3)))
    letters = [json.loads(line) for line in (tmp_path / "t.dead_letter.jsonl").read_text().splitlines()]
    assert [(d["reason"], json.loads(d["raw"])["id"]) for d in letters] == [("type", 1)]
    assert letters[0]["detail"].startswith("column 'x': expected 3 elements")
