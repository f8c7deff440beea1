"""Train a small fraud classifier on synthetic card transactions and export it to ONNX.

Each transaction has four pre-normalized signals in [0, 1] (the pipeline's
``features FLOAT[4]`` column): how unusual the amount is for the card, the hour of
day, the distance from the card's home, and the merchant category's risk. Fraud
(about 5% of the training data) is far from home at a risky merchant, or a very
unusual amount in the small hours, with some label noise.

The exported graph (``fraud.onnx``, written next to this script) keeps the
classifier's ``label`` and ``probabilities`` outputs and adds ``fraud_probability``
(column 1 of the probabilities), which the pipeline picks with
``WITH (output = 'fraud_probability')``.

    python make_model.py
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.ensemble import GradientBoostingClassifier

HERE = os.path.dirname(os.path.abspath(__file__))


def synthetic_transactions(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, 4)).astype(np.float32)
    amount, hour, distance, merchant_risk = x.T
    fraud = ((distance > 0.85) & (merchant_risk > 0.7)) | ((amount > 0.95) & (hour < 0.2))
    noise = rng.random(n) < 0.01
    return x, (fraud ^ noise).astype(np.int64)


def add_fraud_probability(model: onnx.ModelProto) -> onnx.ModelProto:
    """A ``fraud_probability`` output [N, 1]: probabilities[:, 1:2]."""
    graph = model.graph
    probabilities = next(o.name for o in graph.output if "probabilit" in o.name)
    graph.initializer.extend(
        [
            helper.make_tensor("fp_start", TensorProto.INT64, [1], [1]),
            helper.make_tensor("fp_end", TensorProto.INT64, [1], [2]),
            helper.make_tensor("fp_axis", TensorProto.INT64, [1], [1]),
        ]
    )
    graph.node.append(
        helper.make_node("Slice", [probabilities, "fp_start", "fp_end", "fp_axis"], ["fraud_probability"], name="fraud_probability")
    )
    graph.output.append(helper.make_tensor_value_info("fraud_probability", TensorProto.FLOAT, [None, 1]))
    onnx.checker.check_model(model)
    return model


def main() -> None:
    x, y = synthetic_transactions(20_000)
    clf = GradientBoostingClassifier(n_estimators=60, max_depth=3, random_state=0).fit(x, y)
    onx = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}, target_opset=17)
    path = os.path.join(HERE, "fraud.onnx")
    with open(path, "wb") as handle:
        handle.write(add_fraud_probability(onx).SerializeToString())
    test_x, test_y = synthetic_transactions(5_000, seed=2)
    print(f"wrote {path}: {len(y):,} training rows ({y.mean():.1%} fraud), test accuracy {clf.score(test_x, test_y):.3f}")


if __name__ == "__main__":
    main()
