"""Tiny image and tensor models (built with ``onnx.helper``) and generated images for
the image-model tests. Each model's output is computable by hand:

* ``rgb_classifier``: ``[N, 3, 32, 32]`` float → 1x1 conv with :data:`MIX` → global
  average pool → ``[N, 3]`` scores, i.e. ``MIX @ (mean of each channel)``;
* ``gray_mean``: ``[N, 1, 16, 16]`` float → the mean pixel, ``[N]``;
* ``nhwc_uint8``: ``[N, 24, 32, 3]`` uint8 → the mean of each channel, ``[N, 3]``;
* ``any_size``: ``[N, 3, H, W]`` float (H, W not fixed) → the mean of each channel;
* ``tensor_sum``: ``[N, 2, 3, 4]`` float → sums over the last two axes ``[N, 2]``;
* ``tensor_double``: ``[N, 2, 3, 4]`` float → ``2 x``, ``[N, 2, 3, 4]``;
* ``detector``: ``[N, 3, 16, 16]`` float → three boxes per image from the channel means
  ``m`` (:func:`detector_by_hand`): boxes ``[N, B, 4]``, scores ``[N, B]``, classes
  ``[N, B]`` (-1 is padding) and ``num_detections`` ``[N]``.
"""

from __future__ import annotations

import io
import os

import numpy as np
import onnx
from onnx import TensorProto, helper

__all__ = ["MIX", "BOX_MIX", "BOX_BIAS", "build_image_models", "detector_by_hand", "encode", "random_image", "pillow_tensor"]

#: the 1x1 convolution of ``rgb_classifier``: score[k] = sum_c MIX[k, c] * mean(channel c)
MIX = np.array([[1.0, -0.5, -0.5], [-0.5, 1.0, -0.5], [-0.5, -0.5, 1.0]], dtype=np.float32)


#: the detector's boxes: ``(m @ BOX_MIX + BOX_BIAS).reshape(N, 3, 4)``
BOX_MIX = np.array([[10, 0, 20, 0, 0, 5, 0, 0, 0, 0, 0, 0],
                    [0, 10, 0, 20, 0, 0, 5, 0, 0, 0, 0, 0],
                    [0, 0, 0, 0, 0, 0, 0, 0, 8, 8, 16, 16]], dtype=np.float32)
BOX_BIAS = np.array([0, 0, 1, 1, 2, 3, 4, 5, 0, 0, 2, 2], dtype=np.float32)


def detector_by_hand(x: np.ndarray) -> tuple[np.ndarray, ...]:
    """What ``detector`` computes for an ``[N, 3, H, W]`` input: box b scores the mean of
    channel b, its class is ``floor(min(4 m_b, 3.99)) - 1`` (so -1, padding, when
    ``m_b < 1/4``), and ``num_detections`` is ``floor(3.99 * mean of all pixels)``."""
    m = x.mean(axis=(2, 3))
    boxes = (m @ BOX_MIX + BOX_BIAS).reshape(len(x), 3, 4)
    classes = np.floor(np.minimum(m * 4, 3.99)).astype(np.int64) - 1
    count = np.floor(x.mean(axis=(1, 2, 3)) * 3.99).astype(np.int64)
    return boxes, m, classes, count


def _save(directory: str, name: str, nodes, inputs, outputs, initializers=()) -> str:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = os.path.join(directory, f"{name}.onnx")
    onnx.save(model, path)
    return path


def build_image_models(directory: str) -> dict[str, str]:
    """Write the models into ``directory``; their paths by name."""
    f = TensorProto.FLOAT
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])
    paths = {}
    paths["rgb_classifier"] = _save(
        directory, "rgb_classifier",
        [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
         helper.make_node("GlobalAveragePool", ["c"], ["p"]),
         helper.make_node("Flatten", ["p"], ["scores"])],
        [helper.make_tensor_value_info("x", f, [None, 3, 32, 32])],
        [helper.make_tensor_value_info("scores", f, [None, 3])],
        [helper.make_tensor("w", f, [3, 3, 1, 1], MIX.reshape(-1).tolist())],
    )
    paths["gray_mean"] = _save(
        directory, "gray_mean",
        [helper.make_node("ReduceMean", ["x", "all"], ["m"], keepdims=0)],
        [helper.make_tensor_value_info("x", f, [None, 1, 16, 16])],
        [helper.make_tensor_value_info("m", f, [None])],
        [helper.make_tensor("all", TensorProto.INT64, [3], [1, 2, 3])],
    )
    paths["nhwc_uint8"] = _save(
        directory, "nhwc_uint8",
        [helper.make_node("Cast", ["x"], ["xf"], to=f),
         helper.make_node("ReduceMean", ["xf", "hw"], ["m"], keepdims=0)],
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [None, 24, 32, 3])],
        [helper.make_tensor_value_info("m", f, [None, 3])],
        [helper.make_tensor("hw", TensorProto.INT64, [2], [1, 2])],
    )
    paths["any_size"] = _save(
        directory, "any_size",
        [helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=0)],
        [helper.make_tensor_value_info("x", f, [None, 3, "h", "w"])],
        [helper.make_tensor_value_info("m", f, [None, 3])],
        [axes],
    )
    paths["tensor_sum"] = _save(
        directory, "tensor_sum",
        [helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=0)],
        [helper.make_tensor_value_info("x", f, [None, 2, 3, 4])],
        [helper.make_tensor_value_info("s", f, [None, 2])],
        [axes],
    )
    paths["tensor_double"] = _save(
        directory, "tensor_double",
        [helper.make_node("Add", ["x", "x"], ["y"])],
        [helper.make_tensor_value_info("x", f, [None, 2, 3, 4])],
        [helper.make_tensor_value_info("y", f, [None, 2, 3, 4])],
    )
    i64 = TensorProto.INT64
    paths["detector"] = _save(
        directory, "detector",
        [helper.make_node("ReduceMean", ["x", "axes"], ["scores"], keepdims=0),
         helper.make_node("MatMul", ["scores", "box_mix"], ["bm"]),
         helper.make_node("Add", ["bm", "box_bias"], ["bb"]),
         helper.make_node("Reshape", ["bb", "box_shape"], ["boxes"]),
         helper.make_node("Mul", ["scores", "four"], ["m4"]),
         helper.make_node("Min", ["m4", "top"], ["m4c"]),
         helper.make_node("Floor", ["m4c"], ["fl"]),
         helper.make_node("Cast", ["fl"], ["ci"], to=i64),
         helper.make_node("Sub", ["ci", "one"], ["classes"]),
         helper.make_node("ReduceMean", ["x", "all"], ["mean"], keepdims=0),
         helper.make_node("Mul", ["mean", "top"], ["mc"]),
         helper.make_node("Floor", ["mc"], ["mf"]),
         helper.make_node("Cast", ["mf"], ["num_detections"], to=i64)],
        [helper.make_tensor_value_info("x", f, [None, 3, 16, 16])],
        [helper.make_tensor_value_info("boxes", f, [None, "B", 4]),
         helper.make_tensor_value_info("scores", f, [None, "B"]),
         helper.make_tensor_value_info("classes", i64, [None, "B"]),
         helper.make_tensor_value_info("num_detections", i64, [None])],
        [axes, helper.make_tensor("box_mix", f, [3, 12], BOX_MIX.reshape(-1).tolist()),
         helper.make_tensor("box_bias", f, [12], BOX_BIAS.tolist()),
         helper.make_tensor("box_shape", i64, [3], [-1, 3, 4]),
         helper.make_tensor("four", f, [], [4.0]), helper.make_tensor("top", f, [], [3.99]),
         helper.make_tensor("one", i64, [], [1]), helper.make_tensor("all", i64, [3], [1, 2, 3])],
    )
    return paths


def random_image(rng: np.random.Generator, width: int, height: int, mode: str = "RGB"):
    """A Pillow image of smooth random colour blobs (so JPEG and resizing matter)."""
    from PIL import Image

    depth = 3 if mode == "RGB" else 1
    coarse = rng.integers(0, 256, size=(max(2, height // 4), max(2, width // 4), depth), dtype=np.uint8)
    image = Image.fromarray(coarse if depth == 3 else coarse[..., 0], mode)
    return image.resize((width, height), Image.Resampling.BICUBIC)


def encode(image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


def pillow_tensor(data: bytes, size: tuple[int, int], mode: str = "RGB", mean=0.0, std=1.0) -> np.ndarray:
    """The reference: one image decoded, converted and resized by Pillow, scaled to
    [0, 1], normalized, as ``[C, H, W]`` float32 — written out per image, the obvious way."""
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert(mode)
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    x = np.asarray(image, dtype=np.float32) / 255.0
    if x.ndim == 2:
        x = x[:, :, None]
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return x.transpose(2, 0, 1)
