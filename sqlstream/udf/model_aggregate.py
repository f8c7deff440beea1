"""ONNX models as aggregate functions: one model run per group (window), over all its rows.

``CREATE FUNCTION anomaly AS MODEL 'ae.onnx' WITH (aggregate = true [, reduce = 'mse'])``
makes ``anomaly(features)`` an aggregate of a ``FLOAT[k]`` column. When a group's
result is due (its window closes), its rows — in arrival order, NULL rows left out —
are stacked into one tensor and the model runs once:

* input ``[N, k]``: the rows as ``[n, k]`` (an autoencoder scoring the window's rows);
* input ``[N, T, k]``: the rows as one sequence ``[1, n, k]`` (an LSTM over the
  window). A fixed ``T`` needs windows of exactly ``T`` rows (others fail alone).

The result is the model's one value (output shape ``[1]``, ``[1, 1]``, ``[]``; for a
sequence model ``[N]``/``[N, 1]``, of which the one sequence's value is taken), as
DOUBLE. A model with an output per row (``[N]``, ``[N, m]``) needs ``reduce``:
``mean``, ``max``, ``min`` or ``sum`` of the output's values, or ``mse``, the mean
squared difference between the output and the input (an autoencoder's reconstruction
error; the output must have the input's shape). Shapes are checked at CREATE
FUNCTION; a group whose run fails is a dead letter (reason ``udf``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pyarrow as pa

from sqlstream.errors import UdfError
from sqlstream.sql.types import sql_type_name
from sqlstream.udf.model import MODEL_OPTIONS, remote_url
from sqlstream.udf.model_file import first_error_line

__all__ = ["ModelAggregate", "AGGREGATE_OPTIONS", "is_aggregate_model"]

#: options of a model aggregate (besides ``aggregate = true``)
AGGREGATE_OPTIONS = {
    "reduce": "aggregate models with an output per row: 'mean', 'max', 'min', 'sum', or 'mse' (reconstruction error)",
    "output": MODEL_OPTIONS["output"],
    "threads": MODEL_OPTIONS["threads"],
}
_REDUCE = {"mean": np.mean, "max": np.max, "min": np.min, "sum": np.sum}
_FLOATS = {"tensor(float)": np.float32, "tensor(double)": np.float64}


def is_aggregate_model(options: dict) -> bool:
    """Whether CREATE FUNCTION's options ask for a model aggregate (``aggregate = true``)."""
    value = {str(k).lower(): v for k, v in options.items()}.get("aggregate", False)
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise UdfError(f"aggregate = {value!r} is not a boolean", hint="aggregate = true", option="aggregate")


def _shape(info) -> list[int | None]:
    return [d if isinstance(d, int) and d > 0 else None for d in info.shape]


class ModelAggregate:
    """A model over a group's rows (see the module docstring): a ``collect`` aggregate
    (:class:`sqlstream.operators.python_aggregates.GroupFunction`)."""

    is_aggregate = True
    kind = "collect"
    volatility = "immutable"
    is_async = False

    def __init__(self, name: str, path: str, session, reduce: str | None, output: str | None):
        self.name = name
        self.path = path
        self.session = session
        self.reduce = reduce
        self.return_type = pa.float64()
        base = os.path.basename(path)
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise UdfError(f"model {base} has {len(inputs)} inputs; an aggregate model takes one (the rows, stacked)")
        info = inputs[0]
        self.input_name = info.name
        self.dtype = _FLOATS.get(info.type)
        shape = _shape(info)
        if self.dtype is None or len(shape) not in (2, 3) or shape[-1] is None:
            raise UdfError(f"model {base}: input '{info.name}' is {info.type} {info.shape}; an aggregate model takes "
                           "float [N, k] (the rows) or [N, T, k] (the rows as one sequence)")
        self.width = shape[-1]
        self.sequence = len(shape) == 3
        self.steps = shape[1] if self.sequence else None
        self.one_sequence = self.sequence and shape[0] == 1  # [1, T, k]: one sequence per run
        outputs = session.get_outputs()
        if output is not None:
            outputs = [o for o in outputs if o.name.lower() in (str(output).lower(), f"output_{output}".lower())]
            if not outputs:
                raise UdfError(f"model {base} has no output '{output}'", option="output",
                               hint="outputs: " + ", ".join(o.name for o in session.get_outputs()))
        elif len(outputs) != 1:
            raise UdfError(f"model {base} has {len(outputs)} outputs", option="output",
                           hint="pick one with WITH (output = '...'): " + ", ".join(o.name for o in outputs))
        self.output_name = outputs[0].name
        self._check_output(_shape(outputs[0]), list(outputs[0].shape), base)

    def _check_output(self, shape: list[int | None], raw: list, base: str) -> None:
        per_group = shape[1:] if self.sequence else shape  # a sequence model's first dimension is the batch (1)
        one_value = all(d == 1 for d in per_group)
        if self.reduce is None and not one_value:
            raise UdfError(
                f"model {base}: output '{self.output_name}' has shape {raw}: not one value per "
                + ("sequence" if self.sequence else "window"),
                option="reduce", hint="reduce = 'mean' | 'max' | 'min' | 'sum', or 'mse' for an autoencoder's reconstruction error",
            )
        if self.reduce == "mse" and (len(shape) != (3 if self.sequence else 2) or shape[-1] != self.width):
            raise UdfError(f"model {base}: reduce = 'mse' compares the output with the input, but output "
                           f"'{self.output_name}' has shape {raw}, not the input's", option="reduce")

    @classmethod
    def load(cls, name: str, path: str, options: dict) -> "ModelAggregate":
        import onnxruntime as ort

        options = {str(k).lower(): v for k, v in options.items() if str(k).lower() != "aggregate"}
        unknown = sorted(set(options) - set(AGGREGATE_OPTIONS))
        if unknown:
            raise UdfError(f"unknown option '{unknown[0]}' for an aggregate model", option=unknown[0],
                           hint="valid: aggregate, " + ", ".join(sorted(AGGREGATE_OPTIONS)))
        reduce = options.get("reduce")
        if reduce is not None and str(reduce).lower() not in (*_REDUCE, "mse"):
            raise UdfError(f"reduce = {reduce!r} is not one of mean, max, min, sum, mse", option="reduce")
        if remote_url(path):
            raise UdfError(f"models load from local files only, not {remote_url(path)}", hint="download the .onnx file first")
        if not os.path.isfile(path):
            raise UdfError(f"model file not found: {path}", hint="paths are relative to the pipeline file's directory")
        so = ort.SessionOptions()
        if options.get("threads") is not None:
            try:
                so.intra_op_num_threads = int(str(options["threads"]))
            except ValueError as error:
                raise UdfError(f"threads = {options['threads']!r} is not a positive integer", option="threads") from error
        try:
            with open(path, "rb") as f:
                session = ort.InferenceSession(f.read(), so, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types
            raise UdfError(f"cannot load model {path}: {first_error_line(error)}") from error
        return cls(name, path, session, str(reduce).lower() if reduce is not None else None, options.get("output"))

    # -- SQL side -----------------------------------------------------------------------------

    def signature(self) -> str:
        layout = "[1, n, k] sequence" if self.sequence else "[n, k] rows"
        reduce = f", reduce {self.reduce}" if self.reduce else ""
        return f"{self.name}(FLOAT[{self.width}]) -> DOUBLE  [aggregate model {os.path.basename(self.path)}: {layout}{reduce}]"

    @property
    def arg_types(self) -> list[pa.DataType]:
        return [pa.list_(pa.float32(), self.width)]

    def check_args(self, types: list[pa.DataType]) -> pa.DataType:
        if len(types) != 1:
            raise UdfError(f"aggregate model {self.name} takes one argument (FLOAT[{self.width}]), got {len(types)}",
                           hint=self.signature())
        t = types[0]
        listy = pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
        numeric = listy and (pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type))
        if not numeric or (pa.types.is_fixed_size_list(t) and t.list_size != self.width):
            raise UdfError(f"argument of {self.name} is {sql_type_name(t)}, expected FLOAT[{self.width}]", hint=self.signature())
        return self.return_type

    # -- the aggregate state's calls ------------------------------------------------------------

    def arguments(self, column: pa.Array) -> list[pa.Array]:
        return [column]

    def call_collected(self, arguments: list[pa.Array]) -> Any:
        matrix = self._matrix(arguments[0])
        if self.sequence:
            if self.steps is not None and len(matrix) != self.steps:
                raise ValueError(f"the model takes sequences of {self.steps} rows, the window has {len(matrix)}")
            return float(self._per_sequence(matrix[np.newaxis, :, :])[0])
        (out,) = self.session.run([self.output_name], {self.input_name: matrix})
        out = np.asarray(out, dtype=np.float64)
        if self.reduce == "mse":
            if out.shape != matrix.shape:
                raise ValueError(f"output shape {out.shape} is not the input's {matrix.shape}")
            return float(np.mean((out - matrix) ** 2))
        if self.reduce is not None:
            return float(_REDUCE[self.reduce](out))
        if out.size != 1:
            raise ValueError(f"output '{self.output_name}' has shape {out.shape}, expected one value")
        return float(out.reshape(-1)[0])

    #: many groups at once (OVER frames): sequence models stack them
    frames = True

    def call_frames(self, frames: list[pa.Array]) -> list[float | None]:
        """One value per frame (a list of rows). A sequence model ``[N, T, k]`` scores all
        frames of one length in one run, as ``[frames, length, k]`` (one run per frame for
        a model of ``[1, T, k]``); with a fixed ``T``,
        a frame of another length (a key's first rows, before its ROWS frame is full)
        is NULL. A model of rows ``[N, k]`` runs once per frame."""
        lists = frames[0]
        offsets = lists.offsets.to_numpy().astype(np.int64)
        lengths = np.diff(offsets)
        if not self.sequence:
            return [self.call_collected([lists.values.slice(int(offsets[i]), int(lengths[i]))]) for i in range(len(lengths))]
        matrix = self._matrix(lists.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0])))
        starts = offsets[:-1] - offsets[0]
        results: list[float | None] = [None] * len(lengths)
        for length in np.unique(lengths):
            if self.steps is not None and length != self.steps:
                continue
            mine = np.flatnonzero(lengths == length)
            stacked = matrix[starts[mine][:, np.newaxis] + np.arange(int(length))]  # [frames, length, k]
            scores = (np.concatenate([self._per_sequence(stacked[i : i + 1]) for i in range(len(stacked))])
                      if self.one_sequence else self._per_sequence(stacked))
            for i, value in zip(mine, scores):
                results[int(i)] = float(value)
        return results

    def _matrix(self, rows: pa.Array) -> np.ndarray:
        """Rows of ``FLOAT[k]`` as a ``[n, k]`` matrix of the model's float type."""
        if not pa.types.is_fixed_size_list(rows.type):
            lengths = rows.value_lengths().to_numpy(zero_copy_only=False)
            if (lengths != self.width).any():
                raise ValueError(f"a row has {int(lengths[lengths != self.width][0])} features, expected {self.width}")
        values = rows.flatten()
        if values.null_count:
            raise ValueError("a row's features hold a NULL")
        return values.to_numpy(zero_copy_only=False).astype(self.dtype, copy=False).reshape(len(rows), self.width)

    def _per_sequence(self, batch: np.ndarray) -> np.ndarray:
        """One value per sequence of ``batch`` ``[n, T, k]``: one model run."""
        (out,) = self.session.run([self.output_name], {self.input_name: batch})
        out = np.asarray(out, dtype=np.float64)
        if self.reduce == "mse":
            if out.shape != batch.shape:
                raise ValueError(f"output shape {out.shape} is not the input's {batch.shape}")
            return np.mean((out - batch) ** 2, axis=(1, 2))
        if out.ndim == 0 or out.shape[0] != len(batch):
            raise ValueError(f"output '{self.output_name}' has shape {out.shape}, expected one value per sequence")
        per = out.reshape(len(batch), -1)
        if self.reduce is not None:
            return _REDUCE[self.reduce](per, axis=1)
        if per.shape[1] != 1:
            raise ValueError(f"output '{self.output_name}' has shape {out.shape}, expected one value per sequence")
        return per[:, 0]
