"""Encoded images (PNG, JPEG, ... as ``BYTEA``) to the input tensor of an image model.

``CREATE FUNCTION inspect AS MODEL 'defects.onnx' WITH (input = 'image', size =
'224x224', channels = 'rgb', mean = '0.485,0.456,0.406', std = '0.229,0.224,0.225')``
declares the preprocessing once; :func:`image_spec` checks it against the model's
input at CREATE, and :func:`decode_images` turns a whole column of encoded images into
one contiguous ``[n, C, H, W]`` (or ``[n, H, W, C]``) array per slice of at most
``max_batch`` images of a micro-batch (:func:`decoded_slices`: the next slice decodes
while the model runs on this one):

1. each image is decoded, converted to RGB or grayscale (``L``, ITU-R 601-2 luma) and
   resized to ``W x H`` (bilinear, antialiased when shrinking) by Pillow, on a thread
   pool (Pillow releases the GIL while it decodes, converts and resizes); the pixels
   land in one preallocated ``uint8`` array, the only per-row Python being that call;
2. the whole slice is then laid out (BGR flip, NCHW transpose) and, for a float model,
   scaled and normalized in two vectorized passes: ``(x * scale - mean) / std``.

An image that does not decode is reported with its row and the decoder's message; the
model function makes it a ``decode`` dead letter and runs the rest of the batch.
"""

from __future__ import annotations

import io
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from sqlstream.errors import UdfError

__all__ = ["IMAGE_OPTIONS", "ImageSpec", "image_spec", "decode_images", "decoded_slices", "wants_image_input"]

#: option → what it does (docs / error hints), next to the model options
IMAGE_OPTIONS = {
    "input": "'image': the argument is encoded image bytes (BYTEA: PNG, JPEG, ...)",
    "size": "'WxH', the model's image size (default: the model input's fixed H and W)",
    "channels": "'rgb' (default for 3 channels), 'bgr', or 'gray' (also 'l'; default for 1 channel)",
    "layout": "'nchw' or 'nhwc' (default: read from the model's input shape)",
    "scale": "multiplies the pixels (0..255) first; default 1/255, so pixels are in [0, 1]",
    "mean": "subtracted per channel after scaling: one number or one per channel ('0.485,0.456,0.406')",
    "std": "divides per channel after the mean: one number or one per channel ('0.229,0.224,0.225')",
    "decode_threads": "threads decoding images (default: the CPU count, at most 8)",
    "max_batch": "images per onnxruntime run (default 64): bounds the tensor's memory whatever the source's batch "
    "size; the next slice decodes while the model runs",
}
_CHANNELS = {"rgb": "rgb", "bgr": "bgr", "gray": "gray", "grey": "gray", "l": "gray"}
_DEPTH = {"rgb": 3, "bgr": 3, "gray": 1}


@dataclass(frozen=True)
class ImageSpec:
    """How to turn one encoded image into one row of the model's input tensor."""

    input: str  # the model's input name
    width: int
    height: int
    channels: str  # rgb | bgr | gray
    layout: str  # nchw | nhwc
    dtype: np.dtype  # the model's element type: float32/float64/float16, or uint8 (raw pixels)
    scale: float
    mean: tuple[float, ...]  # one per channel
    std: tuple[float, ...]
    threads: int
    max_batch: int = 64

    @property
    def depth(self) -> int:
        return _DEPTH[self.channels]

    @property
    def shape(self) -> tuple[int, int, int]:
        """One row's shape in the model's layout."""
        c, h, w = self.depth, self.height, self.width
        return (c, h, w) if self.layout == "nchw" else (h, w, c)

    def describe(self) -> str:
        return f"{self.width}x{self.height} {self.channels} {self.layout}"


def wants_image_input(options: dict) -> bool:
    """True when the (lower-cased) options say ``input = 'image'``; another value of
    ``input`` is an error."""
    value = options.get("input")
    if value is None:
        return False
    if str(value).lower() != "image":
        raise UdfError(f"input = '{value}' is not supported", hint="input = 'image' (the argument is encoded image bytes)",
                       option="input")
    return True


def _option_error(option: str, message: str, hint: str | None = None) -> UdfError:
    return UdfError(message, hint=hint, option=option)


def _numbers(options: dict, name: str, depth: int, default: float) -> tuple[float, ...]:
    text = options.get(name)
    if text is None:
        return (default,) * depth
    try:
        values = tuple(float(part) for part in str(text).split(","))
    except ValueError:
        values = ()
    if len(values) == 1:
        values = values * depth
    if len(values) != depth:
        raise _option_error(name, f"{name} = '{text}' is not one number or {depth} comma-separated numbers",
                            f"one value per channel ({depth}), e.g. {name} = '{','.join(['0.5'] * depth)}'")
    if name == "std" and any(v == 0 for v in values):
        raise _option_error(name, f"std = '{text}' has a zero", "std divides the pixels: every value must be non-zero")
    return values


def _size(options: dict) -> tuple[int, int] | None:
    text = options.get("size")
    if text is None:
        return None
    parts = str(text).lower().replace(" ", "").split("x")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) == 2 and all(p.isdigit() and int(p) > 0 for p in parts):
        return int(parts[0]), int(parts[1])
    raise _option_error("size", f"size = '{text}' is not WIDTHxHEIGHT", "e.g. size = '224x224'")


def _fixed(dim) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def image_spec(model: str, inputs: list, dtype: np.dtype, options: dict) -> ImageSpec:
    """The preprocessing for ``input = 'image'`` from ``options``, checked against the
    model's one input (``inputs``: onnxruntime's NodeArg list; ``dtype`` its numpy type):
    rank 4, channel count and fixed H/W matching ``channels`` and ``size``."""
    if len(inputs) != 1:
        names = ", ".join(f"'{i.name}'" for i in inputs)
        raise _option_error("input", f"model {model} has {len(inputs)} inputs ({names}); input = 'image' needs exactly one")
    node = inputs[0]
    shape = list(node.shape)
    if len(shape) != 4:
        raise _option_error("input", f"model {model}: input '{node.name}' has shape {shape}; an image model takes "
                            "[N, C, H, W] or [N, H, W, C]")
    if not (np.issubdtype(dtype, np.floating) or dtype == np.uint8):
        raise _option_error("input", f"model {model}: input '{node.name}' is {node.type}; image input needs float or uint8")
    channels_text = options.get("channels")
    layout = options.get("layout")
    if layout is not None:
        layout = str(layout).lower()
        if layout not in ("nchw", "nhwc"):
            raise _option_error("layout", f"layout = '{options['layout']}' is not 'nchw' or 'nhwc'")
    else:
        first, last = _fixed(shape[1]), _fixed(shape[3])
        if first in (1, 3) and last not in (1, 3):
            layout = "nchw"
        elif last in (1, 3) and first not in (1, 3):
            layout = "nhwc"
        elif first in (1, 3) and last in (1, 3):
            layout = "nchw"
        else:
            raise _option_error("input", f"model {model}: input '{node.name}' has shape {shape}: no dimension of 1 or "
                                "3 channels", "declare layout = 'nchw' or 'nhwc'")
    c, h, w = (shape[1], shape[2], shape[3]) if layout == "nchw" else (shape[3], shape[1], shape[2])
    if channels_text is None:
        channels = "gray" if _fixed(c) == 1 else "rgb"
    else:
        channels = _CHANNELS.get(str(channels_text).lower())
        if channels is None:
            raise _option_error("channels", f"channels = '{channels_text}' is not 'rgb', 'bgr' or 'gray'")
    depth = _DEPTH[channels]
    if _fixed(c) is not None and c != depth:
        raise _option_error("channels" if channels_text is not None else "input",
                            f"model {model}: input '{node.name}' has shape {shape} ({c} channels, {layout}); "
                            f"channels = '{channels}' gives {depth}",
                            "channels = 'gray' for 1 channel, 'rgb' or 'bgr' for 3")
    size = _size(options)
    if size is None:
        if _fixed(h) is None or _fixed(w) is None:
            raise _option_error("input", f"model {model}: input '{node.name}' has shape {shape}: H and W are not fixed",
                                "declare size = 'WxH'")
        size = (w, h)
    elif (_fixed(w) is not None and size[0] != w) or (_fixed(h) is not None and size[1] != h):
        raise _option_error("size", f"size = '{options['size']}' does not match model {model}: input '{node.name}' "
                            f"has shape {shape} ({layout}: W={w}, H={h})", f"size = '{w}x{h}'")
    raw = dtype == np.uint8
    if raw and any(options.get(k) is not None for k in ("mean", "std", "scale")):
        given = next(k for k in ("mean", "std", "scale") if options.get(k) is not None)
        raise _option_error(given, f"model {model}: input '{node.name}' takes uint8 pixels; {given} does not apply",
                            "drop mean/std/scale for a uint8 model")
    scale = 1.0 if raw else _scale(options)
    return ImageSpec(node.name, size[0], size[1], channels, layout, np.dtype(dtype), scale,
                     _numbers(options, "mean", depth, 0.0), _numbers(options, "std", depth, 1.0),
                     _count(options, "decode_threads", min(8, os.cpu_count() or 1)), _count(options, "max_batch", 64))


def _count(options: dict, name: str, default: int) -> int:
    text = options.get(name)
    if text is None:
        return default
    if not str(text).isdigit() or int(str(text)) < 1:
        raise _option_error(name, f"{name} = {text!r} is not a positive integer")
    return int(str(text))


def _scale(options: dict) -> float:
    text = options.get("scale")
    if text is None:
        return 1.0 / 255.0
    try:
        if "/" in str(text):
            top, bottom = str(text).split("/")
            return float(top) / float(bottom)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise _option_error("scale", f"scale = '{text}' is not a number", "e.g. scale = '1/255' (default) or '1'")


# -- decoding ------------------------------------------------------------------------------------

_STREAM_NAME = re.compile(r" ?<_io\.BytesIO object at 0x[0-9a-fA-F]+>")  # Pillow names the stream in messages
_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    with _pools_lock:
        pool = _pools.get(threads)
        if pool is None:
            pool = _pools[threads] = ThreadPoolExecutor(max(1, threads), thread_name_prefix="sqlstream-image")
        return pool


def _decode_rows(spec: ImageSpec, data: memoryview, offsets: np.ndarray, rows: np.ndarray,
                 pixels: np.ndarray, first: int) -> list[tuple[int, str]]:
    """Decode ``rows`` into ``pixels[first:first + len(rows)]``; the failures as (row, message)."""
    from PIL import Image

    mode = "L" if spec.channels == "gray" else "RGB"
    size = (spec.width, spec.height)
    failures = []
    for j, row in enumerate(rows.tolist()):
        try:
            with Image.open(io.BytesIO(data[offsets[row]:offsets[row + 1]])) as image:
                image = image.convert(mode)
                if image.size != size:
                    image = image.resize(size, Image.Resampling.BILINEAR)
                pixels[first + j] = np.asarray(image).reshape(pixels.shape[1:])
        except Exception as error:  # noqa: BLE001 - Pillow raises assorted types for bad data
            text = _STREAM_NAME.sub("", str(error)).strip() or type(error).__name__
            failures.append((row, f"{type(error).__name__}: {text}"))
    return failures


def _binary_buffers(column: pa.Array) -> tuple[memoryview, np.ndarray]:
    if not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
        column = column.cast(pa.binary())
    offset_type = np.int64 if pa.types.is_large_binary(column.type) else np.int32
    buffers = column.buffers()
    offsets = np.frombuffer(buffers[1], dtype=offset_type)[column.offset : column.offset + len(column) + 1]
    data = memoryview(buffers[2]) if buffers[2] is not None else memoryview(b"")
    return data, offsets


def decode_images(column: pa.Array, spec: ImageSpec) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """Decode the non-NULL images of a binary ``column``: ``(tensor, rows, failures)`` —
    the model input for the rows that decoded (``[len(rows), *spec.shape]``, contiguous),
    their positions in ``column``, and ``(row, message)`` for each image that did not."""
    present = np.flatnonzero(column.is_valid().to_numpy(zero_copy_only=False)) if column.null_count else np.arange(
        len(column))
    data, offsets = _binary_buffers(column)
    h, w, c = spec.height, spec.width, spec.depth
    pixels = np.empty((len(present), h, w, c), dtype=np.uint8)
    chunks = max(1, min(spec.threads * 4, len(present)))
    bounds = np.linspace(0, len(present), chunks + 1).astype(np.int64)
    if chunks == 1 or spec.threads == 1:
        failures = _decode_rows(spec, data, offsets, present, pixels, 0)
    else:
        pool = _pool(spec.threads)
        futures = [pool.submit(_decode_rows, spec, data, offsets, present[a:b], pixels, a)
                   for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        failures = [f for future in futures for f in future.result()]
    if failures:
        bad = np.isin(present, [row for row, _ in failures])
        pixels = pixels[~bad]
        present = present[~bad]
    return _tensor(pixels, spec), present, failures


def decoded_slices(column: pa.Array, spec: ImageSpec):
    """:func:`decode_images` over slices of at most ``spec.max_batch`` rows: yields
    ``(start, length, tensor, rows, failures)`` per slice (``rows`` and failures' rows
    within the slice). The next slice decodes on a helper thread while the caller runs
    the model on this one (onnxruntime releases the GIL too)."""
    starts = list(range(0, len(column), spec.max_batch))
    if len(starts) <= 1:  # one slice: nothing to overlap with, no hand-off to the helper thread
        if starts:
            yield 0, len(column), *decode_images(column, spec)
        return
    pending = _ahead().submit(decode_images, column.slice(0, spec.max_batch), spec)
    for i, start in enumerate(starts):
        tensor, rows, failures = pending.result()
        if i + 1 < len(starts):
            pending = _ahead().submit(decode_images, column.slice(starts[i + 1], spec.max_batch), spec)
        yield start, min(spec.max_batch, len(column) - start), tensor, rows, failures


def _ahead() -> ThreadPoolExecutor:
    return _pool(-1)  # the one thread that decodes the next slice (it hands the images to the decode pool)


def _tensor(pixels: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """``[n, H, W, C]`` uint8 pixels as the model's input: channel order, layout, then
    ``(x * scale - mean) / std`` for a float model, as ``x * (scale / std) - mean / std``."""
    if spec.channels == "bgr":
        pixels = pixels[..., ::-1]
    source = pixels.transpose(0, 3, 1, 2) if spec.layout == "nchw" else pixels
    if spec.dtype == np.uint8:
        return np.ascontiguousarray(source)
    per_channel = (-1, 1, 1) if spec.layout == "nchw" else (-1,)
    std = np.asarray(spec.std, dtype=np.float64)
    factor = (spec.scale / std).astype(np.float32).reshape(per_channel)
    out = np.empty(source.shape, dtype=np.float32)
    np.multiply(source, factor, out=out)
    if any(spec.mean):
        out -= (np.asarray(spec.mean, dtype=np.float64) / std).astype(np.float32).reshape(per_channel)
    return out if spec.dtype == np.float32 else out.astype(spec.dtype)
