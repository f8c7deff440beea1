"""Detector outputs (YOLO/SSD-style models exported with their post-processing) as a
list of boxes per row.

``CREATE FUNCTION inspect AS MODEL 'detector.onnx' WITH (input = 'image', detections =
'boxes,scores,classes', min_score = '0.5', labels = 'scratch,dent')`` names the model's
outputs: boxes ``[N, B, 4]`` (``x1, y1, x2, y2``), scores ``[N, B]``, classes ``[N, B]``
and optionally a count ``[N]`` (the first ``count`` boxes of a row are real). The function
returns ``ARRAY<STRUCT<label VARCHAR, score REAL, x1 REAL, y1 REAL, x2 REAL, y2 REAL>>``
(``class BIGINT`` instead of ``label`` without ``labels``): per row, the boxes whose
score is at least ``min_score``, in the model's order. Padding rows (class < 0, score
≤ 0, or past the count) are dropped.

The whole batch is one mask: ``keep`` is ``[n, B]``, the list offsets are its row sums'
running total, and the struct fields are the kept elements of the flattened outputs; the
labels are one ``take``. No per-row Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from sqlstream.errors import UdfError

__all__ = ["DETECTION_OPTIONS", "Detector", "detector_for"]

#: option → what it does (docs / error hints), next to the model options
DETECTION_OPTIONS = {
    "detections": "the detector's outputs 'boxes,scores,classes[,count]' ([N, B, 4], [N, B], [N, B], [N]), or 'on' "
    "to find them by name: the function returns ARRAY<STRUCT<label, score, x1, y1, x2, y2>>",
    "min_score": "with detections: boxes scoring below it are dropped (default 0: every box with a positive score)",
}
_ROLES = ("boxes", "scores", "classes", "count")
#: names that ``detections = 'on'`` recognises, per role (TensorFlow's object-detection API and common exports)
_KNOWN = {
    "boxes": ("boxes", "detection_boxes", "bboxes", "det_boxes"),
    "scores": ("scores", "detection_scores", "det_scores", "confidences"),
    "classes": ("classes", "detection_classes", "labels", "det_classes", "class_ids"),
    "count": ("count", "num_detections", "num_dets", "counts"),
}
_RANK = {"boxes": 3, "scores": 2, "classes": 2, "count": 1}
_SHAPE = {"boxes": "[N, B, 4]", "scores": "[N, B]", "classes": "[N, B]", "count": "[N]"}
_NUMERIC = ("tensor(float)", "tensor(double)", "tensor(float16)", "tensor(int64)", "tensor(int32)")


def _error(option: str, message: str, hint: str | None = None) -> UdfError:
    return UdfError(message, hint=hint, option=option)


def _shape_text(shape: list) -> str:
    return "[" + ", ".join("N" if i == 0 else str(d) for i, d in enumerate(shape)) + "]"


def _fixed(dim) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def _min_score(options: dict) -> float:
    text = options.get("min_score")
    if text is None:
        return 0.0
    try:
        return float(str(text))
    except ValueError:
        raise _error("min_score", f"min_score = '{text}' is not a number", "e.g. min_score = '0.5'") from None


def _named(model: str, outputs: list, text: str) -> dict:
    """The outputs for each role, from ``detections = 'boxes,scores,classes[,count]'`` or ``'on'``."""
    by_name = {o.name.lower(): o for o in outputs}
    listing = ", ".join(f"'{o.name}' {_shape_text(list(o.shape))}" for o in outputs)
    if text.strip().lower() == "on":
        found = {}
        for role in _ROLES:
            match = next((by_name[n] for n in _KNOWN[role] if n in by_name), None)
            if match is not None:
                found[role] = match
        missing = [r for r in _ROLES[:3] if r not in found]
        if missing:
            raise _error("detections", f"model {model}: no {missing[0]} output found by name (outputs: {listing})",
                         "name them: detections = 'boxes,scores,classes' (and a count output, if any, fourth)")
        return found
    names = [part.strip() for part in text.split(",")]
    if len(names) not in (3, 4) or not all(names):
        raise _error("detections", f"detections = '{text}' is not 3 or 4 output names",
                     "detections = 'boxes,scores,classes' or 'boxes,scores,classes,count' (or 'on')")
    found = {}
    for role, name in zip(_ROLES, names):
        if name.lower() not in by_name:
            raise _error("detections", f"model {model} has no output '{name}' (for the {role})", f"outputs: {listing}")
        found[role] = by_name[name.lower()]
    return found


def _check(model: str, found: dict) -> None:
    """Ranks, the 4 box coordinates, element types and a common B, where the model fixes them."""
    for role, node in found.items():
        shape = list(node.shape)
        if len(shape) != _RANK[role] or (role == "boxes" and _fixed(shape[2]) != 4) or node.type not in _NUMERIC:
            raise _error("detections", f"model {model}: output '{node.name}' ({node.type}) has shape "
                         f"{_shape_text(shape)}; the {role} of a detector are {_SHAPE[role]} numbers",
                         "detections = 'boxes,scores,classes[,count]' names the outputs in that order")
    widths = {role: _fixed(list(node.shape)[1]) for role, node in found.items() if role != "count"}
    fixed = {w for w in widths.values() if w is not None}
    if len(fixed) > 1:
        sizes = ", ".join(f"{role} {_shape_text(list(found[role].shape))}" for role in widths)
        raise _error("detections", f"model {model}: the detector outputs disagree on boxes per row ({sizes})")


@dataclass(frozen=True)
class Detector:
    """Turns a detector's outputs for a batch into one list of boxes per row."""

    model: str
    output_names: list[str]  # boxes, scores, classes[, count] in the graph
    min_score: float
    labels: list[str] | None

    @property
    def type(self) -> pa.DataType:
        return pa.list_(self.struct)

    @property
    def struct(self) -> pa.DataType:
        first = pa.field("label", pa.string()) if self.labels is not None else pa.field("class", pa.int64())
        return pa.struct([first, *(pa.field(n, pa.float32()) for n in ("score", "x1", "y1", "x2", "y2"))])

    def to_arrow(self, values: list, length: int, function: str) -> pa.Array:
        """``values``: onnxruntime's outputs in :attr:`output_names` order, for ``length`` rows."""
        boxes, scores, classes = (np.asarray(v) for v in values[:3])
        b = scores.shape[1] if scores.ndim == 2 else -1
        if boxes.shape != (length, b, 4) or scores.shape != (length, b) or classes.shape != (length, b):
            raise UdfError(f"model {function}: detector outputs of shapes {boxes.shape}, {scores.shape}, "
                           f"{classes.shape} for {length} rows; expected [{length}, B, 4], [{length}, B], [{length}, B]")
        classes = classes.astype(np.int64)
        keep = (classes >= 0) & (scores > 0) & (scores >= self.min_score)
        if len(values) == 4:
            count = np.asarray(values[3]).reshape(-1).astype(np.int64)
            if count.shape != (length,):
                raise UdfError(f"model {function}: detector count of shape {count.shape} for {length} rows")
            keep &= np.arange(b)[None, :] < count[:, None]
        flat = np.flatnonzero(keep.reshape(-1))
        offsets = np.zeros(length + 1, dtype=np.int32)
        np.cumsum(keep.sum(axis=1), out=offsets[1:])
        kept_classes = classes.reshape(-1)[flat]
        if self.labels is not None:
            unknown = kept_classes >= len(self.labels)
            if unknown.any():
                raise UdfError(f"model {function}: class {int(kept_classes[unknown][0])} has no label (labels names "
                               f"{len(self.labels)} classes, 0 to {len(self.labels) - 1})",
                               hint="give one label per class the detector emits")
            first = pa.array(self.labels, pa.string()).take(pa.array(kept_classes))
        else:
            first = pa.array(kept_classes, pa.int64())
        corners = boxes.reshape(-1, 4)[flat].astype(np.float32)
        fields = [first, pa.array(scores.reshape(-1)[flat].astype(np.float32))]
        fields += [pa.array(np.ascontiguousarray(corners[:, i])) for i in range(4)]
        structs = pa.StructArray.from_arrays(fields, fields=list(self.struct))
        return pa.ListArray.from_arrays(pa.array(offsets), structs, type=self.type)


def detector_for(model: str, outputs: list, options: dict, labels: list[str] | None) -> Detector | None:
    """The :class:`Detector` that ``detections`` declares over the model's ``outputs``
    (onnxruntime NodeArgs), checked; None without ``detections``."""
    text = options.get("detections")
    if text is None:
        if options.get("min_score") is not None:
            raise _error("min_score", "min_score applies to detectors only", "declare detections = 'boxes,scores,classes'")
        return None
    if options.get("output") is not None:
        raise _error("output", "output does not combine with detections", "detections names the outputs it uses")
    found = _named(model, outputs, str(text))
    _check(model, found)
    names = [found[role].name for role in _ROLES if role in found]
    return Detector(model, names, _min_score(options), labels)
