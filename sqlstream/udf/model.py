"""ONNX models as vectorized scalar SQL functions (onnxruntime).

``CREATE FUNCTION predict AS MODEL 'model.onnx' [WITH (output = 'probability',
threads = 1, provider = 'cpu', quantize = 'int8')]`` loads the model once per pipeline.
Its signature gives the SQL types:

* one input tensor ``[N, k]`` takes a ``FLOAT[k]`` column (fixed-size list; a
  variable list of length k works too) or ``k`` numeric arguments; several inputs
  take one argument each;
* one output is a column (``[N]``/``[N, 1]`` → scalar, ``[N, m]`` → ``FLOAT[m]``);
  several outputs are a STRUCT (``predict(x).label``), unless ``output`` picks one.
  Output names lose an ``output_`` prefix (skl2onnx's ``output_label`` → ``label``);
* a scikit-learn ZipMap (probabilities as a list of maps) is removed from the graph at
  load, so probabilities come out as ``FLOAT[classes]``.

Features reach onnxruntime as numpy views of the Arrow buffers (``flatten()`` then
reshape), cast to the model's element type only when they differ.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlstream.errors import UdfError
from sqlstream.sql.types import sql_type_name

__all__ = ["ModelUdf"]

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
_OPTIONS = {"output", "threads", "provider", "quantize"}


@dataclass
class _Input:
    name: str
    dtype: np.dtype
    width: int | None  # k of [N, k]; None for [N]


@dataclass
class _Output:
    name: str  # in the graph
    field: str  # in SQL
    type: pa.DataType
    squeeze: bool


def _dim(value) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


class ModelUdf:
    kind = "model"

    def __init__(self, name: str, path: str, session, options: dict):
        self.name = name
        self.path = path
        self.session = session
        self.options = options
        self.inputs = [self._input(i) for i in session.get_inputs()]
        outputs = [self._output(o) for o in session.get_outputs()]
        wanted = options.get("output")
        if wanted is not None:
            chosen = [o for o in outputs if str(wanted).lower() in (o.field.lower(), o.name.lower())]
            if not chosen:
                raise UdfError(
                    f"model {os.path.basename(path)} has no output '{wanted}'",
                    hint="outputs: " + ", ".join(o.field for o in outputs),
                )
            outputs = chosen
        self.outputs = outputs
        self.output_names = [o.name for o in outputs]
        if len(outputs) == 1:
            self.return_type = outputs[0].type
        else:
            self.return_type = pa.struct([pa.field(o.field, o.type) for o in outputs])

    # -- loading ----------------------------------------------------------------------------

    @classmethod
    def load(cls, name: str, path: str, options: dict) -> "ModelUdf":
        import onnxruntime as ort

        unknown = set(options) - _OPTIONS
        if unknown:
            raise UdfError(
                f"unknown model option(s) {', '.join(sorted(unknown))}", hint="valid: " + ", ".join(sorted(_OPTIONS))
            )
        if "://" in path:
            raise UdfError(f"models load from local files only, not {path}")
        if not os.path.isfile(path):
            raise UdfError(f"model file not found: {path}", hint="paths are relative to the pipeline file's directory")
        provider = str(options.get("provider", "cpu")).lower()
        providers = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}.get(provider)
        if providers is None:
            raise UdfError(f"unknown provider '{provider}'", hint="cpu or cuda")
        model_bytes = cls._prepare(path, options)
        so = ort.SessionOptions()
        threads = options.get("threads")
        if threads is not None:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(model_bytes, so, providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types
            raise UdfError(f"cannot load model {path}: {str(error).splitlines()[0]}") from error
        return cls(name, path, session, options)

    @staticmethod
    def _prepare(path: str, options: dict) -> bytes:
        """Model bytes: ZipMap removed, int8-quantized (cached next to the model) if asked."""
        import onnx

        with open(path, "rb") as handle:
            raw = handle.read()
        quantize = options.get("quantize")
        if quantize is not None:
            if str(quantize).lower() != "int8":
                raise UdfError(f"quantize = '{quantize}' is not supported", hint="quantize = 'int8'")
            digest = hashlib.sha256(raw).hexdigest()[:16]
            cached = f"{os.path.splitext(path)[0]}.int8-{digest}.onnx"
            if not os.path.exists(cached):
                from onnxruntime.quantization import QuantType, quantize_dynamic

                temp = f"{cached}.{os.getpid()}.tmp"
                quantize_dynamic(path, temp, weight_type=QuantType.QInt8)
                os.replace(temp, cached)
            with open(cached, "rb") as handle:
                raw = handle.read()
        model = onnx.load_from_string(raw)
        if not any(node.op_type == "ZipMap" for node in model.graph.node):
            return raw
        return _strip_zipmap(model).SerializeToString()

    def _input(self, info) -> _Input:
        dtype = _ONNX_TO_NUMPY.get(info.type)
        if dtype is None:
            raise UdfError(f"model {os.path.basename(self.path)}: input '{info.name}' has unsupported type {info.type}")
        shape = list(info.shape)
        if len(shape) == 1:
            return _Input(info.name, np.dtype(dtype), None)
        if len(shape) != 2 or _dim(shape[1]) is None:
            raise UdfError(
                f"model {os.path.basename(self.path)}: input '{info.name}' has shape {shape}; expected [N] or [N, k]"
            )
        return _Input(info.name, np.dtype(dtype), shape[1])

    def _output(self, info) -> _Output:
        t = _ONNX_TO_ARROW.get(info.type)
        if t is None:
            raise UdfError(
                f"model {os.path.basename(self.path)}: output '{info.name}' has unsupported type {info.type}",
                hint="pick another output with WITH (output = '...')",
            )
        field = info.name[len("output_") :] if info.name.startswith("output_") else info.name
        shape = list(info.shape)
        if len(shape) <= 1 or (len(shape) == 2 and shape[1] == 1):
            return _Output(info.name, field, t, True)
        width = _dim(shape[1]) if len(shape) == 2 else None
        return _Output(info.name, field, pa.list_(t, width) if width else pa.list_(t), False)

    # -- SQL side ------------------------------------------------------------------------------

    def _expected(self) -> str:
        if len(self.inputs) == 1 and self.inputs[0].width:
            k = self.inputs[0].width
            elem = "REAL" if self.inputs[0].dtype == np.float32 else sql_type_name(pa.from_numpy_dtype(self.inputs[0].dtype))
            return f"{elem}[{k}] or {k} numeric arguments"
        return ", ".join(
            f"{sql_type_name(pa.from_numpy_dtype(i.dtype)) if i.dtype != np.object_ else 'VARCHAR'}" + (f"[{i.width}]" if i.width else "")
            for i in self.inputs
        )

    def signature(self) -> str:
        return f"{self.name}({self._expected()}) -> {sql_type_name(self.return_type)}  [model {os.path.basename(self.path)}]"

    def check_args(self, types: list[pa.DataType]) -> pa.DataType:
        shape_of = lambda i: f"[N, {i.width}]" if i.width else "[N]"  # noqa: E731
        if len(self.inputs) == 1 and self.inputs[0].width:
            k = self.inputs[0].width
            if len(types) == 1 and _is_list(types[0]):
                t = types[0]
                if pa.types.is_fixed_size_list(t) and t.list_size != k:
                    raise UdfError(
                        f"model {self.name} expects {k} features (input '{self.inputs[0].name}' is {shape_of(self.inputs[0])}), "
                        f"got {sql_type_name(t)}",
                        hint=f"pass a {self._expected()}",
                    )
                _check_numeric(t.value_type, self.name)
                return self.return_type
            if len(types) == k and all(_is_numeric(t) for t in types):
                return self.return_type
            raise UdfError(
                f"model {self.name} expects {self._expected()} (input '{self.inputs[0].name}' is {shape_of(self.inputs[0])}), "
                f"got ({', '.join(sql_type_name(t) for t in types)})",
            )
        if len(types) != len(self.inputs):
            raise UdfError(f"model {self.name} takes {len(self.inputs)} argument(s), got {len(types)}", hint=self._expected())
        for t, i in zip(types, self.inputs):
            if i.width and not (_is_list(t) and (not pa.types.is_fixed_size_list(t) or t.list_size == i.width)):
                raise UdfError(f"model {self.name}: input '{i.name}' is {shape_of(i)}, got {sql_type_name(t)}")
        return self.return_type

    def prepare(self, args: list[pa.Array]) -> list[pa.Array]:
        return args

    # -- running ---------------------------------------------------------------------------------

    def _features(self, args: list[pa.Array], spec: _Input) -> np.ndarray:
        if len(args) == 1 and _is_list(args[0].type) and spec.width:
            column = args[0]
            if not pa.types.is_fixed_size_list(column.type):
                lengths = pc.list_value_length(column)
                if not pc.all(pc.equal(lengths, spec.width)).as_py():
                    raise ValueError(f"feature arrays must have {spec.width} elements")
            values = column.flatten()  # respects the slice offset (unlike .values)
            matrix = values.to_numpy(zero_copy_only=False).reshape(len(column), spec.width)
        elif spec.width:
            matrix = np.column_stack([a.to_numpy(zero_copy_only=False) for a in args])
        else:
            matrix = args[0].to_numpy(zero_copy_only=False)
        return matrix if matrix.dtype == spec.dtype else matrix.astype(spec.dtype)

    def call(self, args: list[pa.Array], length: int) -> pa.Array:
        valid = None
        for a in args:
            if a.null_count:
                mask = pc.is_valid(a)
                valid = mask if valid is None else pc.and_(valid, mask)
        if valid is not None:
            rows = pc.indices_nonzero(valid)
            result = self._run([a.take(rows) for a in args], len(rows))
            return _scatter(result, rows, length)
        return self._run(args, length)

    def _run(self, args: list[pa.Array], length: int) -> pa.Array:
        if len(self.inputs) == 1:
            feed = {self.inputs[0].name: self._features(args, self.inputs[0])}
        else:
            feed = {spec.name: self._features([a], spec) for a, spec in zip(args, self.inputs)}
        outputs = self.session.run(self.output_names, feed)
        arrays = [_to_arrow(value, out) for value, out in zip(outputs, self.outputs)]
        if len(arrays) == 1:
            return arrays[0]
        return pa.StructArray.from_arrays(arrays, fields=list(self.return_type))


def _to_arrow(value: np.ndarray, out: _Output) -> pa.Array:
    if out.squeeze:
        return pa.array(value.reshape(-1), type=out.type)
    flat = pa.array(value.reshape(-1), type=out.type.value_type)
    if pa.types.is_fixed_size_list(out.type):
        return pa.FixedSizeListArray.from_arrays(flat, type=out.type)
    width = value.shape[1]
    offsets = pa.array(np.arange(0, value.shape[0] * width + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, flat)


def _scatter(values: pa.Array, rows: pa.Array, length: int) -> pa.Array:
    """Put ``values`` (for ``rows``) into an array of ``length`` with NULL elsewhere."""
    positions = np.full(length, -1, dtype=np.int64)
    positions[rows.to_numpy()] = np.arange(len(rows))
    index = pa.array(positions, mask=positions < 0)
    return values.take(index)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t)


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def _check_numeric(t: pa.DataType, name: str) -> None:
    if not _is_numeric(t):
        raise UdfError(f"model {name} needs numeric features, got {sql_type_name(t)} elements")


def _strip_zipmap(model):
    """Expose each ZipMap's input (the probability tensor) as the graph output instead."""
    import onnx

    graph = model.graph
    replaced = {}
    keep = []
    for node in graph.node:
        if node.op_type == "ZipMap":
            replaced[node.output[0]] = node.input[0]
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    outputs = []
    for output in graph.output:
        if output.name in replaced:
            source = replaced[output.name]
            outputs.append(onnx.helper.make_tensor_value_info(output.name, onnx.TensorProto.FLOAT, None))
            # rename the probability tensor to the old output name so users keep the name
            for node in graph.node:
                for i, name in enumerate(node.output):
                    if name == source:
                        node.output[i] = output.name
                for i, name in enumerate(node.input):
                    if name == source:
                        node.input[i] = output.name
        else:
            outputs.append(output)
    del graph.output[:]
    graph.output.extend(outputs)
    inferred = onnx.shape_inference.infer_shapes(model)
    # use the inferred shape ([N, classes]) for the new outputs where known
    shapes = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    final = []
    for output in graph.output:
        final.append(shapes.get(output.name, output) if output.name in replaced else output)
    del graph.output[:]
    graph.output.extend(final)
    return model
