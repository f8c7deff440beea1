"""Train an anomaly detector on synthetic sensor readings and export it to ONNX.

Each reading has four normalized signals in [0, 1] (the pipeline's ``features
FLOAT[4]``: temperature, vibration, current draw, pressure). An IsolationForest
learns what ordinary readings look like and flags the most isolated 2%; skl2onnx
exports it with two outputs, ``label`` (-1 anomalous, 1 normal) and ``scores``
(negative = anomalous), so ``predict(features)`` in SQL is a STRUCT of both.

    python make_model.py      # writes anomaly.onnx next to this script
"""

from __future__ import annotations

import os

import numpy as np
from skl2onnx import to_onnx
from sklearn.ensemble import IsolationForest

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    rng = np.random.default_rng(5)
    readings = rng.uniform(0, 1, (20_000, 4)).astype(np.float32)
    model = IsolationForest(n_estimators=30, contamination=0.02, random_state=0).fit(readings)
    onx = to_onnx(model, readings[:1], target_opset={"": 17, "ai.onnx.ml": 3})
    path = os.path.join(HERE, "anomaly.onnx")
    with open(path, "wb") as handle:
        handle.write(onx.SerializeToString())
    flagged = (model.predict(readings) == -1).mean()
    print(f"wrote {path}: IsolationForest on {len(readings):,} readings, {flagged:.1%} flagged as anomalous")


if __name__ == "__main__":
    main()
