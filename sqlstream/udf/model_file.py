"""Reading an ONNX model file for :class:`sqlstream.udf.model.ModelUdf`: the bytes
onnxruntime loads, int8-quantized if asked (made once, cached next to the model) and
with scikit-learn's ZipMap removed, so probabilities come out as a tensor.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile

from sqlstream.errors import UdfError

__all__ = ["read_model", "first_error_line"]


def read_model(path: str, options: dict) -> bytes:
    """Model bytes: int8-quantized (cached next to the model) if asked, ZipMap removed."""
    import onnx

    with open(path, "rb") as handle:
        raw = handle.read()
    quantize = options.get("quantize")
    if quantize is not None:
        if str(quantize).lower() != "int8":
            raise UdfError(f"quantize = '{quantize}' is not supported", hint="quantize = 'int8'", option="quantize")
        raw = _quantized(path, raw)
    try:
        model = onnx.load_from_string(raw)
    except Exception as error:  # protobuf's DecodeError and friends
        raise UdfError(f"{path} is not an ONNX model (it does not parse as an ONNX protobuf)") from error
    if not any(node.op_type == "ZipMap" for node in model.graph.node):
        return raw
    return _strip_zipmap(model).SerializeToString()


def first_error_line(error: Exception) -> str:
    """The first line of an error from onnxruntime or onnx (their messages run long)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _quantized(path: str, raw: bytes) -> bytes:
    """The int8 dynamically quantized model, made once and cached next to ``path`` as
    ``<stem>.int8-<sha256 prefix>.onnx`` (in the temp directory if that is read-only)."""
    digest = hashlib.sha256(raw).hexdigest()[:16]
    stem = os.path.splitext(os.path.basename(path))[0]
    name = f"{stem}.int8-{digest}.onnx"
    candidates = [os.path.join(os.path.dirname(os.path.abspath(path)), name), os.path.join(tempfile.gettempdir(), name)]
    for cached in candidates:
        if os.path.exists(cached):
            with open(cached, "rb") as handle:
                return handle.read()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for cached in candidates:
        temp = f"{cached}.{os.getpid()}.tmp"
        try:
            with _quiet_root_logger():  # onnxruntime logs advice on pre-processing to the root logger
                quantize_dynamic(path, temp, weight_type=QuantType.QInt8)
            os.replace(temp, cached)
        except PermissionError:
            continue
        except Exception as error:  # onnxruntime.quantization raises assorted types
            if os.path.exists(temp):
                os.remove(temp)
            raise UdfError(f"int8 quantization of {path} failed: {first_error_line(error)}") from error
        with open(cached, "rb") as handle:
            return handle.read()
    raise UdfError(f"cannot write the int8 model for {path}: no writable directory")


@contextlib.contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


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
