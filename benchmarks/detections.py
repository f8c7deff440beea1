"""Detector post-processing (``detections = 'boxes,scores,classes,count'``): the list of
boxes per row built with numpy masks and offsets, against the obvious per-row Python
loop that builds the same lists, in the same run.

Random detector outputs for ``--rows`` images (default 8192) with ``--boxes`` slots each
(default 100; classes -1..2, so about a quarter are padding; a random count per row),
``min_score = 0.5``, three labels. Both results are compared (equal lists). Best of
``--repeat`` runs (default 5) of each.

    python benchmarks/detections.py
    python benchmarks/detections.py --rows 64 --boxes 300
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa

from sqlstream.udf.detections import Detector

LABELS = ["scratch", "dent", "stain"]


def per_row(boxes, scores, classes, count, min_score: float, detector: Detector) -> pa.Array:
    """The baseline: one Python list of dicts per row, then ``pa.array``."""
    rows = []
    for n in range(len(scores)):
        kept = []
        for b in range(scores.shape[1]):
            c, s = int(classes[n, b]), float(scores[n, b])
            if c < 0 or s <= 0 or s < min_score or b >= count[n]:
                continue
            x1, y1, x2, y2 = boxes[n, b].tolist()
            kept.append({"label": LABELS[c], "score": s, "x1": x1, "y1": y1, "x2": x2, "y2": y2})
        rows.append(kept)
    return pa.array(rows, detector.type)


def best(fn, repeat: int) -> tuple[float, pa.Array]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--boxes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n, b = args.rows, args.boxes
    boxes = rng.random((n, b, 4), dtype=np.float32)
    scores = rng.random((n, b), dtype=np.float32)
    classes = rng.integers(-1, 3, (n, b))
    count = rng.integers(0, b + 1, n)
    detector = Detector("bench", ["boxes", "scores", "classes", "count"], 0.5, LABELS)
    ours, got = best(lambda: detector.to_arrow([boxes, scores, classes, count], n, "bench"), args.repeat)
    loop, want = best(lambda: per_row(boxes, scores, classes, count, 0.5, detector), args.repeat)
    assert got.equals(want), "the vectorized lists differ from the per-row loop's"
    kept = len(got.values)
    print(f"{n} rows x {b} slots, {kept} boxes kept")
    print(f"  vectorized  {ours * 1e3:9.2f} ms  {ours / n * 1e6:7.2f} us/row")
    print(f"  per-row     {loop * 1e3:9.2f} ms  {loop / n * 1e6:7.2f} us/row")
    print(f"  speed-up    {loop / ours:9.1f}x")


if __name__ == "__main__":
    main()
