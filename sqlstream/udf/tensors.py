"""Tensors between Arrow and onnxruntime for model functions: multi-dimensional inputs
(``FLOAT[3][64][64]``, nested fixed-size lists, to ``[N, 3, 64, 64]``) and outputs, and
class scores with ``WITH (labels = 'ok,scratch,dent')`` as ``STRUCT<label VARCHAR,
score REAL>`` (the label of the highest score, and that score).

Everything here works on whole batches: a nested fixed-size list column is one flat
values buffer, viewed as ``[n, *dims]`` without copying; the label of every row is one
``argmax`` and one ``take``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from sqlstream.errors import UdfError

__all__ = ["LABEL_OPTIONS", "Labels", "parse_labels", "tensor_dims", "tensor_type", "tensor_values", "tensor_array",
           "list_matrix"]

#: option → what it does (docs / error hints), next to the model options
LABEL_OPTIONS = {
    "labels": "class names of an [N, k] score output, 'ok,scratch,dent': the function returns "
    "STRUCT<label VARCHAR, score REAL> (the highest score and its label); with detections, the names of "
    "the class indexes",
}
LABEL_TYPE = pa.struct([pa.field("label", pa.string()), pa.field("score", pa.float32())])


def parse_labels(text: object) -> list[str]:
    """The class names of ``labels = 'a,b,c'`` (stripped; empty or repeated names refused).

    >>> parse_labels("ok, scratch,dent")
    ['ok', 'scratch', 'dent']
    """
    names = [part.strip() for part in str(text).split(",")]
    if len(names) < 2 or any(not n for n in names):
        raise UdfError(f"labels = '{text}' is not a list of class names", hint="e.g. labels = 'ok,scratch,dent'",
                       option="labels")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UdfError(f"labels = '{text}' names '{repeated[0]}' twice", option="labels")
    return names


class Labels:
    """Turns an ``[n, k]`` score tensor into ``STRUCT<label, score>`` rows."""

    type = LABEL_TYPE

    def __init__(self, names: list[str]):
        self.names = names
        self._names = pa.array(names, pa.string())

    def check(self, model: str, output: str, width: int | None) -> None:
        """The output's ``k`` must be the number of labels (when the model fixes it)."""
        if width is not None and width != len(self.names):
            raise UdfError(
                f"model {model}: output '{output}' has {width} scores per row, labels names {len(self.names)} classes",
                hint=f"give {width} labels", option="labels",
            )

    def to_arrow(self, scores: np.ndarray, model: str) -> pa.StructArray:
        if scores.ndim != 2 or scores.shape[1] != len(self.names):
            raise UdfError(f"model {model}: scores of shape {scores.shape} for {len(self.names)} labels")
        best = np.argmax(scores, axis=1)
        score = scores[np.arange(len(scores)), best].astype(np.float32)
        return pa.StructArray.from_arrays([self._names.take(pa.array(best)), pa.array(score)], fields=list(LABEL_TYPE))


def tensor_dims(shape: list) -> tuple[int, ...] | None:
    """The per-row dims of an ONNX ``[N, d1, d2, ...]`` shape of rank ≥ 3, when all are
    fixed; None otherwise."""
    dims = shape[1:]
    if all(isinstance(d, int) and d > 0 for d in dims):
        return tuple(dims)
    return None


def tensor_type(element: pa.DataType, dims: tuple[int, ...]) -> pa.DataType:
    """``element[d1][d2]...`` as nested fixed-size lists, outermost ``d1``.

    >>> from sqlstream.sql.types import sql_type_name
    >>> t = tensor_type(pa.float32(), (3, 64, 64))
    >>> t.list_size, t.value_type.list_size, sql_type_name(t)
    (3, 64, 'REAL[3][64][64]')
    """
    t = element
    for d in reversed(dims):
        t = pa.list_(t, d)
    return t


def list_dims(t: pa.DataType) -> tuple[tuple[int, ...], pa.DataType]:
    """The dims of nested fixed-size lists and their element type (``()`` for a scalar)."""
    dims = []
    while pa.types.is_fixed_size_list(t):
        dims.append(t.list_size)
        t = t.value_type
    return tuple(dims), t


def tensor_values(column: pa.Array, dims: tuple[int, ...]) -> np.ndarray:
    """A nested fixed-size list column (any nesting whose sizes multiply to the same
    count) as ``[n, *dims]`` numpy, a view when the values have no NULLs."""
    n = len(column)
    size = int(np.prod(dims))
    start, values = 0, column
    while pa.types.is_fixed_size_list(values.type):
        # ``.values`` ignores the slice's offset: carry it down, level by level
        start = (values.offset + start) * values.type.list_size
        values = values.values
    if values.null_count:
        raise ValueError("a tensor holds a NULL")
    flat = values.to_numpy(zero_copy_only=False)[start : start + n * size]
    return flat.reshape((n, *dims))


def tensor_array(value: np.ndarray, element: pa.DataType) -> pa.Array:
    """An ``[n, d1, ...]`` numpy array as nested fixed-size lists of ``element``."""
    array = pa.array(value.reshape(-1), type=element)
    for d in reversed(value.shape[1:]):
        array = pa.FixedSizeListArray.from_arrays(array, d)
    return array


def list_matrix(column: pa.Array, width: int, length: int) -> np.ndarray:
    """The ``[length, width]`` numpy view of a list column's values (no copy when they
    have no NULLs and the right type)."""
    if pa.types.is_fixed_size_list(column.type) and column.values.null_count == 0:
        # a view of the whole child, cut to this slice: ``.values`` ignores the slice's
        # offset, so apply it (cheaper than ``flatten()``, which builds a new array)
        start = column.offset * width
        return column.values.to_numpy(zero_copy_only=False)[start : start + length * width].reshape(length, width)
    return column.flatten().to_numpy(zero_copy_only=False).reshape(length, width)
