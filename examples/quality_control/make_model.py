"""A tiny scratch detector as an ONNX graph, built by hand and calibrated on generated
images: ``defects.onnx``, input ``[N, 1, 64, 64]`` (grayscale, pixels in [0, 1]),
output ``[N, 2]`` scores for ``ok`` and ``scratch``.

The graph: a 3x3 "darker than its neighbours" convolution → ReLU → 5x5 average (a line
keeps responding along its length; sensor noise does not) → global max pool → one
number ``f`` per image; scores = ``[t - f, f - t]``. The threshold ``t`` is the one that
separates the two classes best on a training set drawn with another seed (``make_data``
with ``--seed 7``), computed by running the feature part of the same graph.

    python make_model.py
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_data  # noqa: E402

SIZE = 64
KERNEL = (np.array([[1, 1, 1], [1, -8, 1], [1, 1, 1]], dtype=np.float32) / 8.0).reshape(1, 1, 3, 3)


def graph(threshold: float | None):
    """The detector; without ``threshold`` it outputs the feature ``f`` ([N, 1])."""
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Conv", ["x", "k"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("AveragePool", ["r"], ["a"], kernel_shape=[5, 5], pads=[2, 2, 2, 2]),
        helper.make_node("GlobalMaxPool", ["a"], ["m"]),
        helper.make_node("Flatten", ["m"], ["feature"]),
    ]
    inits = [helper.make_tensor("k", f, [1, 1, 3, 3], KERNEL.reshape(-1).tolist())]
    output = "feature"
    if threshold is not None:
        nodes.append(helper.make_node("Gemm", ["feature", "w", "b"], ["scores"]))
        inits += [helper.make_tensor("w", f, [1, 2], [-1.0, 1.0]),
                  helper.make_tensor("b", f, [2], [threshold, -threshold])]
        output = "scores"
    width = 2 if threshold is not None else 1
    g = helper.make_graph(nodes, "scratch_detector", [helper.make_tensor_value_info("x", f, [None, 1, SIZE, SIZE])],
                          [helper.make_tensor_value_info(output, f, [None, width])], initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def load(folder: str, name: str) -> np.ndarray:
    with open(os.path.join(folder, name), "rb") as handle:
        image = Image.open(io.BytesIO(handle.read())).convert("L").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    return np.asarray(image, np.float32)[None] / 255.0


def main() -> None:
    work = tempfile.mkdtemp(prefix="qc-train-")
    try:
        folder = os.path.join(work, "train")
        make_data.main(["--count", "300", "--seed", "7", "--out", folder])
        with open(f"{folder}_truth.csv") as handle:
            truth = [line.strip().split(",") for line in handle.readlines()[1:]]
        x = np.stack([load(folder, name) for name, _ in truth])
        y = np.array([label == "scratch" for _, label in truth])
    finally:
        shutil.rmtree(work)
    session = ort.InferenceSession(graph(None).SerializeToString(), providers=["CPUExecutionProvider"])
    feature = session.run(None, {"x": x})[0][:, 0]
    candidates = np.sort(feature)
    accuracy = [((feature > t) == y).mean() for t in candidates]
    best = int(np.argmax(accuracy))
    threshold = float((candidates[best] + candidates[min(best + 1, len(candidates) - 1)]) / 2)
    onnx.save(graph(threshold), "defects.onnx")
    print(f"defects.onnx: threshold {threshold:.4f}, training accuracy {accuracy[best]:.3f}")


if __name__ == "__main__":
    main()
