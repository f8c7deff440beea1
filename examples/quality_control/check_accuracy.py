"""Compare ``out/verdicts.jsonl`` with ``frames_truth.csv``: accuracy and the confusion."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter


def accuracy(verdicts: str = "out/verdicts.jsonl", truth: str = "frames_truth.csv") -> tuple[float, Counter]:
    with open(truth, newline="") as handle:
        expected = {row["file"]: row["label"] for row in csv.DictReader(handle)}
    with open(verdicts) as handle:
        got = {os.path.basename(r["path"]): r["label"] for r in map(json.loads, handle)}
    pairs = Counter((expected[name], got.get(name)) for name in expected)
    right = sum(n for (want, have), n in pairs.items() if want == have)
    return right / len(expected), pairs


if __name__ == "__main__":
    share, pairs = accuracy()
    print(f"accuracy {share:.3f} over {sum(pairs.values())} photos")
    for (want, have), n in sorted(pairs.items(), key=str):
        print(f"  truth {want:8s} verdict {have!s:8s} {n}")
