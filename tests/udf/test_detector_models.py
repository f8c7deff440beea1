"""Detector models (``detections = 'boxes,scores,classes[,count]'``): per row, the list of
boxes equals onnxruntime run directly on the Pillow tensors, filtered by ``min_score``,
without padding rows (class -1, or past the count); ``labels`` name the classes; UNNEST
and ``cardinality`` work on the result; NULL images give NULL, undecodable ones are
``decode`` dead letters; declaration mistakes are located errors at CREATE."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pytest
from PIL import Image

from sqlstream.cli.main import main
from sqlstream.testing import TestSession
from tests.udf.image_models import build_image_models, detector_by_hand, pillow_tensor

LABELS = ["scratch", "dent", "stain"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("detector_models")
    build_image_models(str(directory))
    return directory


def frames(seed: int, count: int) -> list[bytes]:
    """PNG images of assorted sizes whose channel means spread over [0, 1] (so classes
    cover -1 to 2 and scores both sides of 0.5)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        w, h = [(16, 16), (40, 24), (9, 13)][i % 3]
        top = rng.integers(1, 256, size=3)
        pixels = np.clip(top + rng.normal(0, 20, size=(h, w, 3)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def onnx_outputs(model_dir, data: list[bytes]) -> list[np.ndarray]:
    x = np.stack([pillow_tensor(d, (16, 16)) for d in data])
    session = ort.InferenceSession(str(model_dir / "detector.onnx"), providers=["CPUExecutionProvider"])
    outputs = session.run(["boxes", "scores", "classes", "num_detections"], {"x": x})
    for got, by_hand in zip(outputs, detector_by_hand(x)):  # the model does what its docstring says
        np.testing.assert_allclose(got, by_hand, rtol=1e-5, atol=1e-5)
    return outputs


def expected_lists(outputs, min_score: float, labels: list[str] | None, use_count: bool) -> list[list[dict]]:
    """Per image, the kept boxes, written out the obvious way (a loop over rows and boxes)."""
    boxes, scores, classes, count = outputs
    rows = []
    for n in range(len(scores)):
        kept = []
        for b in range(scores.shape[1]):
            if classes[n, b] < 0 or scores[n, b] <= 0 or scores[n, b] < min_score or (use_count and b >= count[n]):
                continue
            first = {"label": labels[classes[n, b]]} if labels else {"class": int(classes[n, b])}
            kept.append({**first, "score": scores[n, b], **dict(zip(["x1", "y1", "x2", "y2"], boxes[n, b]))})
        rows.append(kept)
    return rows


def assert_same(got: list[list[dict]] | list[None], expected: list[list[dict]]) -> None:
    assert [None if g is None else len(g) for g in got] == [len(e) for e in expected]
    for g, e in zip(got, expected):
        for gd, ed in zip(g, e):
            assert set(gd) == set(ed)
            for key, value in ed.items():
                if isinstance(value, str | int) and not isinstance(value, np.floating):
                    assert gd[key] == value
                else:
                    assert gd[key] == pytest.approx(float(value), rel=1e-5, abs=1e-5)


def camera(model_dir, tmp_path, data: list[bytes | None], batch_size=None) -> TestSession:
    session = TestSession(base_dir=str(model_dir), dead_letter_path=str(tmp_path / "dead.jsonl"))
    session.execute("CREATE SOURCE camera (id BIGINT, image BYTEA) WITH (connector = 'memory')")
    table = pa.table({"id": pa.array(range(len(data)), pa.int64()), "image": pa.array(data, pa.binary())})
    session.stream("camera").push(table, batch_size=batch_size).finish()
    return session


@pytest.mark.parametrize("batch_size, max_batch, min_score, labels", [
    (1, 64, None, True), (7, 64, 0.5, True), (64, 4, 0.5, False), (None, 64, 0.3, False)])
def test_boxes_equal_onnxruntime_filtered_by_min_score(model_dir, tmp_path, batch_size, max_batch, min_score, labels):
    data = frames(1, 30)
    outputs = onnx_outputs(model_dir, data)
    assert (outputs[2] == -1).any() and (outputs[2] >= 0).any()  # the data has padding rows and real ones
    session = camera(model_dir, tmp_path, data, batch_size)
    options = "detections = 'boxes,scores,classes'" + (f", min_score = '{min_score}'" if min_score is not None else "")
    options += ", labels = 'scratch,dent,stain'" if labels else ""
    session.execute(f"CREATE FUNCTION inspect AS MODEL 'detector.onnx' WITH (input = 'image', {options}, "
                    f"max_batch = {max_batch})")
    first = "label VARCHAR" if labels else "class BIGINT"
    assert session.functions["inspect"].signature.endswith(
        f"-> STRUCT<{first}, score REAL, x1 REAL, y1 REAL, x2 REAL, y2 REAL>[]  [model detector.onnx]")
    rows = session.run_query("SELECT id, inspect(image) AS d FROM camera")
    assert [r["id"] for r in rows] == list(range(30))
    expected = expected_lists(outputs, min_score or 0.0, LABELS if labels else None, use_count=False)
    assert 0 < sum(map(len, expected)) < 3 * 30  # some boxes kept, some dropped
    assert_same([r["d"] for r in rows], expected)


def test_found_by_name_with_the_count_and_counted_with_cardinality(model_dir, tmp_path):
    data = frames(2, 24)
    outputs = onnx_outputs(model_dir, data)
    session = camera(model_dir, tmp_path, data, 5)
    session.execute("CREATE FUNCTION inspect AS MODEL 'detector.onnx' WITH (input = 'image', detections = 'on', "
                    "min_score = '0.2', labels = 'scratch,dent,stain')")
    rows = session.run_query("SELECT id, inspect(image) AS d, cardinality(inspect(image)) AS defects FROM camera")
    expected = expected_lists(outputs, 0.2, LABELS, use_count=True)
    without_count = expected_lists(outputs, 0.2, LABELS, use_count=False)
    assert expected != without_count  # the count matters for this data
    assert_same([r["d"] for r in rows], expected)
    assert [r["defects"] for r in rows] == [len(e) for e in expected]


def test_unnest_gives_one_row_per_box(model_dir, tmp_path):
    data = frames(3, 12)
    outputs = onnx_outputs(model_dir, data)
    session = camera(model_dir, tmp_path, data, 4)
    session.execute("CREATE FUNCTION inspect AS MODEL 'detector.onnx' WITH (input = 'image', "
                    "detections = 'boxes,scores,classes,num_detections', labels = 'scratch,dent,stain')")
    rows = session.run_query("SELECT id, d.label, d.score, (d).x2 AS x2 "
                             "FROM camera CROSS JOIN UNNEST(inspect(image)) AS t(d)")
    expected = expected_lists(outputs, 0.0, LABELS, use_count=True)
    flat = [(i, e["label"], e["score"], e["x2"]) for i, row in enumerate(expected) for e in row]
    assert [(r["id"], r["label"]) for r in rows] == [(i, label) for i, label, _, _ in flat]
    np.testing.assert_allclose([r["score"] for r in rows], [s for _, _, s, _ in flat], rtol=1e-5)
    np.testing.assert_allclose([r["x2"] for r in rows], [x for _, _, _, x in flat], rtol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 3, None])
def test_null_images_give_null_and_broken_ones_are_decode_dead_letters(model_dir, tmp_path, batch_size):
    good = frames(4, 4)
    data = [good[0], None, b"not an image", good[1], good[2][:40], good[3]]
    session = camera(model_dir, tmp_path, data, batch_size)
    session.execute("CREATE FUNCTION inspect AS MODEL 'detector.onnx' WITH (input = 'image', "
                    "detections = 'boxes,scores,classes')")
    rows = session.run_query("SELECT id, inspect(image) AS d FROM camera")
    assert [r["id"] for r in rows] == [0, 1, 3, 5]
    assert rows[1]["d"] is None
    expected = expected_lists(onnx_outputs(model_dir, [good[0], good[1], good[3]]), 0.0, None, use_count=False)
    assert_same([rows[0]["d"], rows[2]["d"], rows[3]["d"]], expected)
    letters = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [(json.loads(d["raw"])["id"], d["reason"]) for d in letters] == [(2, "decode"), (4, "decode")]
    assert letters[0]["detail"] == "inspect: UnidentifiedImageError: cannot identify image file"


def test_a_class_without_a_label_fails_with_the_class(model_dir, tmp_path):
    data = frames(5, 10)
    outputs = onnx_outputs(model_dir, data)
    assert (outputs[2] == 2).any()
    session = camera(model_dir, tmp_path, data)
    session.execute("CREATE FUNCTION inspect AS MODEL 'detector.onnx' WITH (input = 'image', "
                    "detections = 'boxes,scores,classes', labels = 'scratch,dent')")
    with pytest.raises(Exception, match=r"inspect: class 2 has no label \(labels names 2 classes, 0 to 1\)"):
        session.run_query("SELECT id, inspect(image) AS d FROM camera")


@pytest.mark.parametrize("options, expected", [
    ("detections = 'scores,boxes,classes'",
     "model detector.onnx: output 'scores' (tensor(float)) has shape [N, 3]; the boxes of a detector are [N, B, 4] "
     "numbers"),
    ("detections = 'boxes,scores,kinds'", "model detector.onnx has no output 'kinds' (for the classes)"),
    ("detections = 'boxes,scores'", "detections = 'boxes,scores' is not 3 or 4 output names"),
    ("detections = 'boxes,scores,classes', min_score = 'high'", "min_score = 'high' is not a number"),
    ("min_score = '0.5'", "min_score applies to detectors only"),
    ("detections = 'boxes,scores,classes', output = 'boxes'", "output does not combine with detections"),
])
def test_declaration_mistakes_are_located_errors(model_dir, tmp_path, capsys, monkeypatch, options, expected):
    monkeypatch.chdir(tmp_path)
    os.symlink(model_dir / "detector.onnx", tmp_path / "detector.onnx")
    (tmp_path / "p.sql").write_text(f"CREATE FUNCTION f AS MODEL 'detector.onnx' WITH (input = 'image', {options});\n")
    assert main(["check", str(tmp_path / "p.sql")]) == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith(f"{tmp_path}/p.sql:1:") and first.endswith("error: " + expected)


def test_detections_not_found_by_name_lists_the_outputs(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.symlink(model_dir / "rgb_classifier.onnx", tmp_path / "rgb_classifier.onnx")
    (tmp_path / "p.sql").write_text("CREATE FUNCTION f AS MODEL 'rgb_classifier.onnx' WITH (input = 'image', "
                                    "detections = 'on');\n")
    assert main(["check", str(tmp_path / "p.sql")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}/p.sql:1:73: error: model rgb_classifier.onnx: no boxes output found by name (outputs: " \
           "'scores' [N, 3])" in err
    assert "hint: name them: detections = 'boxes,scores,classes'" in err
