"""Build the example's anomaly model: ``models/anomaly.onnx``.

A hand-set logistic regression standing in for a trained model, written with
``onnx.helper`` (onnx is a sqlstream dependency, nothing else is needed)::

    score = sigmoid(0.8 (avg_temp - 33) + 0.5 (max_temp - 42) - 0.02 (avg_humidity - 50))

Input ``features``: float[N, 4] = (avg_temp, max_temp, avg_humidity, readings), so the
SQL call is ``anomaly(avg_temp, max_temp, avg_humidity, readings)``; output
``score``: float[N, 1] → one REAL per row.

    python build_model.py            # writes models/anomaly.onnx next to this file
"""

from __future__ import annotations

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WEIGHTS = np.array([[0.8], [0.5], [-0.02], [0.0]], dtype=np.float32)
BIAS = np.array([-0.8 * 33 - 0.5 * 42 + 0.02 * 50], dtype=np.float32)


def build(path: str) -> str:
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "weights"], ["logit_raw"]),
            helper.make_node("Add", ["logit_raw", "bias"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["score"]),
        ],
        "anomaly",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])],
        [numpy_helper.from_array(WEIGHTS, "weights"), numpy_helper.from_array(BIAS, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime sqlstream supports
    onnx.checker.check_model(model)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.save(model, path)
    return path


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "anomaly.onnx")
    print(f"wrote {build(target)}")
