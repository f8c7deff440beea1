"""ONNX models as vectorized scalar SQL functions (onnxruntime).

``CREATE FUNCTION predict AS MODEL 'model.onnx' [WITH (output = 'probability',
threads = 1, provider = 'cpu', quantize = 'int8')]`` loads the model once per pipeline
(one ``InferenceSession``, reused for every batch). Its signature gives the SQL types:

* one input tensor ``[N, k]`` takes a ``FLOAT[k]`` column (fixed-size list; a
  variable list of length k works too) or ``k`` numeric arguments; several inputs
  take one argument each;
* one output is a column (``[N]``/``[N, 1]`` → scalar, ``[N, m]`` → ``FLOAT[m]``);
  several outputs are a STRUCT (``predict(x).label``), unless ``output`` picks one.
  Output names lose an ``output_`` prefix (skl2onnx's ``output_label`` → ``label``);
* a scikit-learn ZipMap (probabilities as a list of maps) is removed from the graph at
  load, so probabilities come out as ``FLOAT[classes]``;
* ``[N, d1, d2, ...]`` inputs and outputs are tensors ``FLOAT[d1][d2]...``, ``labels``
  makes an ``[N, k]`` output ``STRUCT<label, score>`` (:mod:`sqlstream.udf.tensors`),
  ``detections`` makes a detector's boxes a list of structs (:mod:`sqlstream.udf.detections`),
  ``input = 'image'`` takes encoded images (:mod:`sqlstream.udf.images`; an undecodable one
  is a row failure with reason ``decode``, see :meth:`ModelUdf.call_rows`).

Features reach onnxruntime as numpy views of the Arrow buffers (the list's values cut
to the slice and reshaped to ``[n, k]``: no copy for ``FLOAT[k]`` without NULLs), cast to the model's element type
only when they differ. A row whose features are NULL (or hold a NULL) gives NULL.
Models load from local ``.onnx`` files only; pickled Python objects are refused.
Reading the file (quantization, ZipMap removal) is :mod:`sqlstream.udf.model_file`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.errors import UdfError
from sqlstream.sql.types import sql_type_name
from sqlstream.udf.detections import DETECTION_OPTIONS, detector_for
from sqlstream.udf.images import IMAGE_OPTIONS, decoded_slices, image_spec, wants_image_input
from sqlstream.udf.model_file import first_error_line, read_model
from sqlstream.udf.python import RowFailure
from sqlstream.udf.tensors import (
    LABEL_OPTIONS,
    Labels,
    list_dims,
    list_matrix,
    parse_labels,
    tensor_array,
    tensor_dims,
    tensor_type,
    tensor_values,
)

__all__ = ["ModelUdf", "MODEL_OPTIONS", "remote_url"]

_ONNX_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
    "tensor(float16)": np.float16,
}
_ONNX_TO_ARROW = {
    "tensor(float)": pa.float32(),
    "tensor(double)": pa.float64(),
    "tensor(int64)": pa.int64(),
    "tensor(int32)": pa.int32(),
    "tensor(bool)": pa.bool_(),
    "tensor(string)": pa.string(),
    "tensor(float16)": pa.float32(),
}
#: option → what it does (SHOW FUNCTIONS / docs / error hints)
MODEL_OPTIONS = {
    "output": "the output to return (default: all outputs, as a STRUCT when there are several)",
    "threads": "onnxruntime intra-op threads (default: onnxruntime's choice)",
    "provider": "'cpu' (default) or 'cuda'",
    "quantize": "'int8': dynamic int8 quantization at load, cached next to the model",
    **IMAGE_OPTIONS,  # input = 'image': images.py
    **LABEL_OPTIONS,  # labels = 'a,b,c': tensors.py
    **DETECTION_OPTIONS,  # detections = 'boxes,scores,classes': detections.py
}
_OPTIONS = set(MODEL_OPTIONS)
_PICKLE_EXTENSIONS = {".pkl", ".pickle", ".joblib", ".pt", ".pth", ".sav"}


@dataclass
class _Input:
    name: str
    dtype: np.dtype
    width: int | None  # k of [N, k]; None for [N]
    dims: tuple[int, ...] = ()  # d1, d2, ... of [N, d1, d2, ...] (rank >= 3)

    @property
    def shape(self) -> str:
        if self.dims:
            return "[N, " + ", ".join(map(str, self.dims)) + "]"
        return f"[N, {self.width}]" if self.width else "[N]"

    @property
    def tensor(self) -> str:
        """The SQL type of a tensor argument, ``REAL[3][64][64]``."""
        return self.element + "".join(f"[{d}]" for d in self.dims)

    @property
    def element(self) -> str:
        return "VARCHAR" if self.dtype == np.object_ else sql_type_name(pa.from_numpy_dtype(self.dtype))


@dataclass
class _Output:
    name: str  # in the graph
    field: str  # in SQL
    type: pa.DataType | None  # None: not expressible in SQL (``problem`` says why)
    squeeze: bool
    problem: str = ""
    dims: tuple[int, ...] = ()  # d1, d2, ... of [N, d1, d2, ...] (rank >= 3)
    shape: str = ""


def _dim(value) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def remote_url(path: str) -> str | None:
    """The URL in a model path (models load from local files only), or None."""
    url = re.search(r"[A-Za-z][A-Za-z0-9+.-]*://.*", path)
    return url.group(0) if url else None


def _option_error(option: str, message: str, hint: str | None = None) -> UdfError:
    return UdfError(message, hint=hint, option=option)  # lets CREATE FUNCTION point at the option


class ModelUdf:
    """An ONNX model as a SQL function: signature from the graph, vectorized ``call``."""

    kind = "model"
    volatility = "immutable"
    is_async = False
    reports_row_failures = False  # True for image models: see call_rows

    def __init__(self, name: str, path: str, session, options: dict):
        self.name = name
        self.path = path
        self.session = session
        self.options = options
        self.image = None  # ImageSpec: the argument is encoded image bytes
        if wants_image_input(options):
            node = session.get_inputs()[0]
            dtype = _ONNX_TO_NUMPY.get(node.type, np.object_) if node.type != "tensor(uint8)" else np.uint8
            self.image = image_spec(os.path.basename(path), session.get_inputs(), np.dtype(dtype), options)
            self.inputs = [_Input(node.name, np.dtype(dtype), None, self.image.shape)]
        else:
            self.inputs = [self._input(i) for i in session.get_inputs()]
        #: decode failures are rows of their own (reason ``decode``), see :meth:`call_rows`
        self.reports_row_failures = self.image is not None
        labels = parse_labels(options["labels"]) if options.get("labels") is not None else None
        self.detector = detector_for(os.path.basename(path), session.get_outputs(), options, labels)
        outputs = [] if self.detector else [self._output(o) for o in session.get_outputs()]
        wanted = options.get("output")
        if wanted is not None:
            chosen = [o for o in outputs if str(wanted).lower() in (o.field.lower(), o.name.lower())]
            if not chosen:
                raise _option_error(
                    "output",
                    f"model {os.path.basename(path)} has no output '{wanted}'",
                    hint="outputs: " + ", ".join(o.field for o in outputs),
                )
            outputs = chosen[:1]
        else:
            usable = [o for o in outputs if o.type is not None]
            if len(usable) < len(outputs) and usable:
                outputs = usable  # e.g. a ZipMap-like map output next to usable ones
        for o in outputs:
            if o.type is None:
                raise _option_error(
                    "output",
                    f"model {os.path.basename(path)}: output '{o.name}' {o.problem}",
                    hint="pick another output with WITH (output = '...')",
                )
        self.labels = Labels(labels) if labels is not None and not self.detector else None
        if self.labels is not None:
            outputs = self._scored(outputs)
        self.outputs = outputs
        self.output_names = self.detector.output_names if self.detector else [o.name for o in outputs]
        if self.detector:  # detections = 'boxes,scores,classes': detections.py
            self.return_type = self.detector.type
        elif self.labels is not None:
            self.return_type = self.labels.type
        elif len(outputs) == 1:
            self.return_type = outputs[0].type
        else:
            self.return_type = pa.struct([pa.field(o.field, o.type) for o in outputs])

    def _scored(self, outputs: list[_Output]) -> list[_Output]:
        """The one ``[N, k]`` score output that ``labels`` names the classes of."""
        scores = [o for o in outputs if o.type is not None and _is_list(o.type) and not o.dims]
        if len(scores) > 1:  # the one whose width is the number of labels, if only one is
            fitting = [o for o in scores if not pa.types.is_fixed_size_list(o.type)
                       or o.type.list_size == len(self.labels.names)]
            scores = fitting if len(fitting) == 1 else scores
        if len(scores) != 1:
            raise _option_error(
                "labels", f"model {os.path.basename(self.path)}: labels needs one [N, k] score output",
                hint="outputs: " + ", ".join(f"{o.field} {o.shape}" for o in outputs)
                + ("; pick one with WITH (output = '...')" if len(scores) > 1 else ""),
            )
        out = scores[0]
        self.labels.check(os.path.basename(self.path), out.name,
                          out.type.list_size if pa.types.is_fixed_size_list(out.type) else None)
        return [out]

    # -- loading ----------------------------------------------------------------------------

    @classmethod
    def load(cls, name: str, path: str, options: dict) -> "ModelUdf":
        """Load ``path`` once (an ``onnxruntime.InferenceSession``); bad options, a missing
        or non-ONNX file and unsupported signatures are UdfErrors (``option`` names the
        offending option, if any)."""
        import onnxruntime as ort

        options = {str(k).lower(): v for k, v in options.items()}
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise _option_error(
                unknown[0], f"unknown model option '{unknown[0]}'", "valid: " + ", ".join(sorted(_OPTIONS))
            )
        url = remote_url(path)
        if url:
            raise UdfError(f"models load from local files only, not {url}", hint="download the .onnx file first")
        if os.path.splitext(path)[1].lower() in _PICKLE_EXTENSIONS:
            raise UdfError(
                f"{os.path.basename(path)} is a pickled Python object; sqlstream loads ONNX models only and never unpickles",
                hint="export the model to ONNX (scikit-learn: skl2onnx.to_onnx(model, X[:1]))",
            )
        if not os.path.isfile(path):
            raise UdfError(f"model file not found: {path}", hint="paths are relative to the pipeline file's directory")
        provider = str(options.get("provider", "cpu")).lower()
        providers = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}.get(provider)
        if providers is None:
            raise _option_error("provider", f"unknown provider '{provider}'", "provider = 'cpu' or 'cuda'")
        so = ort.SessionOptions()
        threads = options.get("threads")
        if threads is not None:
            try:
                count = int(str(threads))
            except ValueError:
                count = 0
            if count < 1:
                raise _option_error("threads", f"threads = {threads!r} is not a positive integer", "e.g. threads = 1")
            so.intra_op_num_threads = count
            so.inter_op_num_threads = 1
        model_bytes = read_model(path, options)
        try:
            session = ort.InferenceSession(model_bytes, so, providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types
            raise UdfError(f"cannot load model {path}: {first_error_line(error)}") from error
        return cls(name, path, session, options)

    def _input(self, info) -> _Input:
        dtype = _ONNX_TO_NUMPY.get(info.type)
        if dtype is None:
            raise UdfError(f"model {os.path.basename(self.path)}: input '{info.name}' has unsupported type {info.type}")
        shape = list(info.shape)
        if len(shape) == 1:
            return _Input(info.name, np.dtype(dtype), None)
        if len(shape) >= 3 and tensor_dims(shape) is not None:
            return _Input(info.name, np.dtype(dtype), None, tensor_dims(shape))
        if len(shape) != 2 or _dim(shape[1]) is None:
            raise UdfError(
                f"model {os.path.basename(self.path)}: input '{info.name}' has shape {shape}; expected [N], [N, k] "
                "or [N, d1, d2, ...] with fixed sizes",
                hint="an image model takes WITH (input = 'image', ...)" if len(shape) == 4 else None,
            )
        return _Input(info.name, np.dtype(dtype), shape[1])

    def _output(self, info) -> _Output:
        field = info.name[len("output_") :] if info.name.startswith("output_") else info.name
        t = _ONNX_TO_ARROW.get(info.type)
        if t is None:
            return _Output(info.name, field, None, False, f"has type {info.type}, which has no SQL type")
        shape = list(info.shape)
        text = "[" + ", ".join("N" if i == 0 else str(d) for i, d in enumerate(shape)) + "]"
        if len(shape) <= 1 or (len(shape) == 2 and shape[1] == 1):
            return _Output(info.name, field, t, True, shape=text)
        if len(shape) >= 3 and tensor_dims(shape) is not None:
            dims = tensor_dims(shape)
            return _Output(info.name, field, tensor_type(t, dims), False, dims=dims, shape=text)
        if len(shape) != 2:
            return _Output(info.name, field, None, False, f"has shape {shape}; expected [N], [N, 1], [N, m] "
                           "or [N, d1, d2, ...] with fixed sizes", shape=text)
        width = _dim(shape[1])
        return _Output(info.name, field, pa.list_(t, width) if width else pa.list_(t), False, shape=text)

    # -- SQL side ------------------------------------------------------------------------------

    def _expected(self) -> str:
        if self.image is not None:
            return f"BYTEA (an encoded image, decoded to {self.image.describe()})"
        if len(self.inputs) == 1 and self.inputs[0].dims:
            i = self.inputs[0]
            return f"{i.tensor} or {i.element}[{int(np.prod(i.dims))}]"
        if len(self.inputs) == 1 and self.inputs[0].width:
            i = self.inputs[0]
            return f"{i.element}[{i.width}] or {i.width} numeric arguments"
        return ", ".join(i.element + (f"[{i.width}]" if i.width else "") for i in self.inputs)

    def signature(self) -> str:
        return f"{self.name}({self._expected()}) -> {sql_type_name(self.return_type)}  [model {os.path.basename(self.path)}]"

    def check_args(self, types: list[pa.DataType]) -> pa.DataType:
        """The result type for argument ``types``; a UdfError says expected vs actual."""
        if self.image is not None or (len(self.inputs) == 1 and self.inputs[0].dims):
            self._check_tensor_arg(types)
            return self.return_type
        if len(self.inputs) == 1 and self.inputs[0].width:
            spec = self.inputs[0]
            k = spec.width
            if len(types) == 1 and _is_list(types[0]):
                t = types[0]
                if pa.types.is_fixed_size_list(t) and t.list_size != k:
                    raise UdfError(
                        f"model {self.name} expects {k} features (input '{spec.name}' is {spec.shape}), "
                        f"got {sql_type_name(t)} ({t.list_size} features)",
                        hint=f"pass {self._expected()}",
                    )
                self._check_element(t.value_type, spec)
                return self.return_type
            if len(types) == k:
                for t in types:
                    self._check_element(t, spec)
                return self.return_type
            given = ", ".join(sql_type_name(t) for t in types)
            raise UdfError(
                f"model {self.name} expects {self._expected()} (input '{spec.name}' is {spec.shape}), "
                f"got {len(types)} argument(s): ({given})",
                hint=f"pass {self._expected()}",
            )
        if len(types) != len(self.inputs):
            raise UdfError(
                f"model {self.name} takes {len(self.inputs)} argument(s) (inputs "
                + ", ".join(f"'{i.name}' {i.shape}" for i in self.inputs)
                + f"), got {len(types)}",
                hint=f"pass {self._expected()}",
            )
        for position, (t, spec) in enumerate(zip(types, self.inputs), start=1):
            if spec.width and spec.width > 1 or _is_list(t):
                if not _is_list(t) or (pa.types.is_fixed_size_list(t) and t.list_size != spec.width):
                    raise UdfError(
                        f"argument {position} of model {self.name}: input '{spec.name}' is {spec.shape}, "
                        f"got {sql_type_name(t)}",
                        hint=f"pass {self._expected()}",
                    )
                self._check_element(t.value_type, spec)
            else:
                self._check_element(t, spec)
        return self.return_type

    def _check_tensor_arg(self, types: list[pa.DataType]) -> None:
        spec = self.inputs[0]
        if self.image is not None:
            ok = len(types) == 1 and (pa.types.is_binary(types[0]) or pa.types.is_large_binary(types[0])
                                      or pa.types.is_binary_view(types[0]) or pa.types.is_null(types[0]))
        else:
            dims, element = list_dims(types[0]) if len(types) == 1 else ((), None)
            ok = int(np.prod(dims or (0,))) == int(np.prod(spec.dims)) and (len(dims) == 1 or dims == spec.dims)
            if ok:
                self._check_element(element, spec)
        if not ok:
            given = ", ".join(sql_type_name(t) for t in types)
            raise UdfError(
                f"model {self.name} takes {self._expected()} (input '{spec.name}' is {spec.shape}), got ({given})",
                hint=f"pass {self._expected()}",
            )

    def _check_element(self, t: pa.DataType, spec: _Input) -> None:
        if spec.dtype == np.object_:
            ok = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
        elif spec.dtype == np.bool_:
            ok = pa.types.is_boolean(t)
        elif np.issubdtype(spec.dtype, np.integer):
            ok = pa.types.is_integer(t) or pa.types.is_null(t)
        else:
            ok = _is_numeric(t) or pa.types.is_null(t)
        if not ok:
            raise UdfError(
                f"model {self.name}: input '{spec.name}' takes {spec.element} values, got {sql_type_name(t)}",
                hint=f"pass {self._expected()}, or CAST(... AS {spec.element})",
            )

    def prepare(self, args: list[pa.Array]) -> list[pa.Array]:
        return args

    # -- running ---------------------------------------------------------------------------------

    def call(self, args: list[pa.Array], length: int) -> pa.Array:
        """One onnxruntime run over the whole batch; NULL features give NULL."""
        if self.image is not None:
            result, failures = self.call_rows(args, length)
            if failures:
                raise ValueError(failures[0].detail)
            return result
        valid = _valid_rows(args)
        if valid is None:
            return self._run(args, length)
        rows = pa.array(np.flatnonzero(valid))
        if len(rows) == 0:
            return pa.nulls(length, self.return_type)
        result = self._run([a.take(rows) for a in args], len(rows))
        return _scatter(result, rows, length)

    def call_rows(self, args: list[pa.Array], length: int) -> tuple[pa.Array, list[RowFailure]]:
        """An image model over a batch, one onnxruntime run per slice of ``max_batch`` images
        that decode; each one that does not is a ``decode`` failure. NULL images give NULL."""
        pieces, failures = [], []
        for start, count, tensor, rows, problems in decoded_slices(args[0], self.image):
            failures += [RowFailure(start + row, "decode", f"{self.name}: {message}") for row, message in problems]
            result = self._outputs({self.image.input: tensor}, len(rows)) if len(rows) else None
            pieces.append(result if len(rows) == count else _scatter(result, pa.array(rows), count, self.return_type))
        return (pa.concat_arrays(pieces) if pieces else pa.nulls(0, self.return_type)), failures

    def _features(self, args: list[pa.Array], spec: _Input, length: int) -> np.ndarray:
        if spec.dims:
            column = args[0]
            return tensor_values(column, spec.dims).astype(spec.dtype, copy=False)
        if len(args) == 1 and _is_list(args[0].type):
            column = args[0]
            if not pa.types.is_fixed_size_list(column.type):
                lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
                wrong = np.flatnonzero(lengths != spec.width)
                if len(wrong):
                    raise ValueError(f"input '{spec.name}' needs {spec.width} features, got {lengths[wrong[0]]}")
            matrix = list_matrix(column, spec.width, length)
        elif spec.width:
            matrix = np.column_stack([a.to_numpy(zero_copy_only=False) for a in args])
        else:
            matrix = args[0].to_numpy(zero_copy_only=False)
        return matrix if matrix.dtype == spec.dtype else matrix.astype(spec.dtype)

    def _run(self, args: list[pa.Array], length: int) -> pa.Array:
        if len(self.inputs) == 1:
            feed = {self.inputs[0].name: self._features(args, self.inputs[0], length)}
        else:
            feed = {spec.name: self._features([a], spec, length) for a, spec in zip(args, self.inputs)}
        return self._outputs(feed, length)

    def _outputs(self, feed: dict, length: int) -> pa.Array:
        outputs = self.session.run(self.output_names, feed)
        if self.detector:
            return self.detector.to_arrow(outputs, length, self.name)
        if self.labels is not None:
            return self.labels.to_arrow(np.asarray(outputs[0]), self.name)
        arrays = [self._to_arrow(value, out, length) for value, out in zip(outputs, self.outputs)]
        if len(arrays) == 1:
            return arrays[0]
        return pa.StructArray.from_arrays(arrays, fields=list(self.return_type))

    def _to_arrow(self, value, out: _Output, length: int) -> pa.Array:
        value = np.asarray(value)
        if value.dtype == np.float16:
            value = value.astype(np.float32)
        if out.squeeze:
            if value.size != length:
                raise UdfError(f"model {self.name}: output '{out.name}' has shape {value.shape}, expected [{length}]")
            return pa.array(value.reshape(-1), type=out.type)
        if out.dims:
            if value.shape != (length, *out.dims):
                raise UdfError(f"model {self.name}: output '{out.name}' has shape {value.shape}, expected {out.shape}")
            return tensor_array(value, list_dims(out.type)[1])
        if value.ndim != 2 or value.shape[0] != length:
            raise UdfError(f"model {self.name}: output '{out.name}' has shape {value.shape}, expected [{length}, m]")
        flat = pa.array(value.reshape(-1), type=out.type.value_type)
        array = pa.FixedSizeListArray.from_arrays(flat, value.shape[1])
        return array if pa.types.is_fixed_size_list(out.type) else array.cast(out.type)


def _valid_rows(args: list[pa.Array]) -> np.ndarray | None:
    """Rows whose arguments (and list elements) are all non-NULL; None when all are."""
    valid = None
    for a in args:
        bad = None
        if a.null_count:
            bad = pc.is_null(a).to_numpy(zero_copy_only=False)
        if _is_list(a.type) and (not pa.types.is_fixed_size_list(a.type) or a.values.null_count):
            values = a.flatten()
            if values.null_count:
                parents = pc.list_parent_indices(a).to_numpy(zero_copy_only=False)
                holes = np.zeros(len(a), dtype=bool)
                holes[parents[pc.is_null(values).to_numpy(zero_copy_only=False)]] = True
                bad = holes if bad is None else bad | holes
        if bad is not None:
            valid = ~bad if valid is None else valid & ~bad
    return valid


def _scatter(values: pa.Array | None, rows: pa.Array, length: int, type: pa.DataType | None = None) -> pa.Array:
    """Put ``values`` (for ``rows``; None: no rows, of ``type``) into an array of ``length``
    with NULL elsewhere."""
    if values is None:
        return pa.nulls(length, type)
    positions = np.full(length, -1, dtype=np.int64)
    positions[rows.to_numpy()] = np.arange(len(rows))
    index = pa.array(positions, mask=positions < 0)
    return values.take(index)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t)


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t)
