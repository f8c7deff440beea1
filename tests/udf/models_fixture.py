"""Tiny ONNX models for the model-UDF tests, built once per test session.

Import the fixture into a test module (``from tests.udf.models_fixture import models``)
and it trains/exports each model on first use. Models come from scikit-learn through
skl2onnx (the path users take) or, for shapes scikit-learn does not produce (several
inputs, float64 or int64 features), straight from ``onnx.helper``.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import pytest

__all__ = ["models", "ModelFiles", "build_models"]


@dataclass
class ModelFiles:
    """Paths of the built models and the training features (float32, 4 columns)."""

    directory: str
    regressor: str  # MLPRegressor, 4 features -> one float ([N, 1] output)
    classifier: str  # LogisticRegression, 4 features -> label + ZipMap probabilities
    trees: str  # GradientBoostingRegressor, 4 features -> [N, 1]
    tree_classifier: str  # GradientBoostingClassifier, 4 features, ZipMap disabled
    two_inputs: str  # inputs a [N, 2] float, b [N, 1] float -> a0 * a1 + b
    double_input: str  # input [N, 3] double -> sum (double)
    int_input: str  # input [N, 2] int64 -> sum (int64)
    string_output: str  # input [N, 2] float -> a string tensor (unsupported output)
    features: np.ndarray


def _helper_models(directory: str) -> dict[str, str]:
    import onnx
    from onnx import TensorProto, helper

    def save(name: str, graph) -> str:
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        path = os.path.join(directory, name)
        onnx.save(model, path)
        return path

    paths = {}
    # a0 * a1 + b, inputs a: [N, 2], b: [N, 1]
    split = helper.make_node("Split", ["a", "sizes"], ["a0", "a1"], axis=1)
    mul = helper.make_node("Mul", ["a0", "a1"], ["m"])
    add = helper.make_node("Add", ["m", "b"], ["y"])
    graph = helper.make_graph(
        [split, mul, add],
        "two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 2]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, 1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        initializer=[helper.make_tensor("sizes", TensorProto.INT64, [2], [1, 1])],
    )
    paths["two_inputs"] = save("two_inputs.onnx", graph)
    for name, elem, width in (("double_input", TensorProto.DOUBLE, 3), ("int_input", TensorProto.INT64, 2)):
        node = helper.make_node("ReduceSum", ["x", "axes"], ["total"], keepdims=0)
        graph = helper.make_graph(
            [node],
            name,
            [helper.make_tensor_value_info("x", elem, [None, width])],
            [helper.make_tensor_value_info("total", elem, [None])],
            initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
        )
        paths[name] = save(f"{name}.onnx", graph)
    cast = helper.make_node("Cast", ["x"], ["s"], to=TensorProto.STRING)
    graph = helper.make_graph(
        [cast],
        "string_output",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("s", TensorProto.STRING, [None, 2])],
    )
    paths["string_output"] = save("string_output.onnx", graph)
    return paths


def build_models(directory: str) -> ModelFiles:
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPRegressor

    rng = np.random.default_rng(7)
    x = rng.normal(size=(400, 4)).astype(np.float32)
    target = x[:, 0] * 0.5 - x[:, 1] + np.sin(x[:, 2])
    labels = (x[:, 0] + x[:, 3] > 0).astype(np.int64)

    def export(model, name: str, options=None) -> str:
        onx = to_onnx(model, x[:1], options=options, target_opset=17)
        path = os.path.join(directory, name)
        with open(path, "wb") as handle:
            handle.write(onx.SerializeToString())
        return path

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLP convergence on purpose-small training
        mlp = MLPRegressor(hidden_layer_sizes=(16,), max_iter=200, random_state=0).fit(x, target)
    trees = GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=0).fit(x, target)
    clf = LogisticRegression().fit(x, labels)
    tree_clf = GradientBoostingClassifier(n_estimators=10, max_depth=2, random_state=0).fit(x, labels)
    paths = _helper_models(directory)
    return ModelFiles(
        directory=directory,
        regressor=export(mlp, "regressor.onnx"),
        classifier=export(clf, "classifier.onnx"),
        trees=export(trees, "trees.onnx"),
        tree_classifier=export(tree_clf, "tree_classifier.onnx", options={id(tree_clf): {"zipmap": False}}),
        features=x,
        **paths,
    )


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> ModelFiles:
    """The models, trained and exported once per test session."""
    return build_models(str(tmp_path_factory.mktemp("models")))
