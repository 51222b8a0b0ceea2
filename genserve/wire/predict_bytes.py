"""PredictRequest and PredictResponse bytes written straight from numpy arrays, without message objects.

The Predict hot path of both ends (a text `step` is ~1 ms on loopback, so every few microseconds of
Python show): the client sends `request_bytes(...)`, the server answers `response_bytes(...)`. The
bytes are what protobuf's serializer writes for the message genserve would otherwise build
(`clients.messages.predict_request`, `serving.execute.respond`): fields in number order, proto3
defaults left out, map entries as (key = 1, value = 2) messages, here in the order given (protobuf's
own map order is unspecified; https://protobuf.dev/programming-guides/encoding/#maps);
tests/test_wire_bytes.py compares them byte for byte (map entries sorted) and parses them with TF
Serving's own classes. The parts that do not change between calls (the
ModelSpec, the output_filter, a tensor's dtype and shape, a map key) are written once and kept.

Only numeric arrays are written here (as `tensor_content`, little-endian, C order: `codec`'s layout);
for anything else (strings, object arrays, big-endian dtypes, a big-endian host) the functions return
None and the caller builds the message as before.

    python -c "import numpy as np; from genserve.wire.predict_bytes import *; print(tensor_bytes(np.eye(2, dtype=np.float32)))"
"""

from __future__ import annotations

import math
import sys
from typing import Iterable, Mapping

import numpy as np

from genserve.wire.codec import NUMERIC_DTYPES

_ONE_BYTE = [bytes((i,)) for i in range(128)]
_CACHE_LIMIT = 512  # entries kept below; beyond it new ones are written each time

# numpy dtype (native = little-endian) -> TensorProto field 1 (dtype) as bytes; none on a big-endian
# host, where every array takes the caller's message path.
_DTYPE_FIELD = {dt: b"\x08" + bytes((code,)) for code, (dt, _) in NUMERIC_DTYPES.items()} \
    if sys.byteorder == "little" else {}
# (map field tag, key, dtype, shape) -> a map entry's bytes up to the tensor's content: everything but
# the content is fixed by these four (the content's length too: size times itemsize).
_entries: dict = {}


def varint(n: int) -> bytes:
    """Base-128 varint of a non-negative int (lengths, sizes, enum values)."""
    if n < 128:
        return _ONE_BYTE[n]
    out = bytearray()
    while n > 127:
        out.append((n & 127) | 128)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return tag + varint(len(payload)) + payload


def _tensor_head(dtype: np.dtype, shape: tuple) -> bytes | None:
    """A TensorProto's bytes up to its content (fields dtype, tensor_shape and tensor_content's tag
    and length), or None when `dtype` is not a native little-endian number."""
    field = _DTYPE_FIELD.get(dtype)
    if field is None:
        return None
    # TensorShapeProto.dim (2) of Dim.size (1); a size of 0 is the empty Dim; no shape for a scalar
    dims = b"".join([_field(b"\x12", b"\x08" + varint(size) if size else b"") for size in shape])
    size = math.prod(shape) * dtype.itemsize
    return field + (_field(b"\x12", dims) if shape else b"") + (b"\x22" + varint(size) if size else b"")


def tensor_bytes(array: np.ndarray) -> bytes | None:
    """A serialized TensorProto of a numpy array (codec.fill_tensor_proto's encoding), or None when
    its dtype is not a native little-endian number."""
    head = _tensor_head(array.dtype, array.shape)
    return None if head is None else head + array.tobytes()


def _entry_head(tag: bytes, key: str, dtype: np.dtype, shape: tuple) -> bytes | None:
    """A map entry {key: TensorProto} of field `tag` up to the tensor's content (None: see _tensor_head)."""
    head = _tensor_head(dtype, shape)
    if head is None or type(key) is not str:
        return None
    tensor_size = len(head) + math.prod(shape) * dtype.itemsize
    entry = _field(b"\x0a", key.encode("utf-8")) + b"\x12" + varint(tensor_size)  # key (1), value (2)
    return tag + varint(len(entry) + tensor_size) + entry + head


def _tensor_map(tag: bytes, tensors: Iterable, parts: list) -> bool:
    """Append the map entries `tag` {key: TensorProto} of `tensors` ((key, array) pairs) to `parts`;
    False when one cannot be written here."""
    for key, value in tensors:
        array = value if type(value) is np.ndarray else np.asarray(value)
        head = _entries.get((tag, key, array.dtype, array.shape))
        if head is None:
            head = _entry_head(tag, key, array.dtype, array.shape)
            if head is None:
                return False
            if len(_entries) < _CACHE_LIMIT:
                _entries[(tag, key, array.dtype, array.shape)] = head
        parts.append(head)
        parts.append(array.tobytes())  # C order, whatever the strides
    return True


def request_bytes(head: bytes, inputs: Mapping, tail: bytes = b"") -> bytes | None:
    """A serialized PredictRequest: `head` (its model_spec, field 1, serialized), the inputs (field 2),
    `tail` (its output_filter, field 3, serialized); None when an input is not a numeric array (or
    something np.asarray makes one of)."""
    parts = [head]
    if not _tensor_map(b"\x12", inputs.items(), parts):
        return None
    parts.append(tail)
    return b"".join(parts)


def response_bytes(outputs: Iterable, tail: bytes) -> bytes | None:
    """A serialized PredictResponse: the outputs ((key, array) pairs; field 1), then `tail` (its
    model_spec, field 2, serialized); None when an output is not a numeric array."""
    parts = []
    if not _tensor_map(b"\x0a", outputs, parts):
        return None
    parts.append(tail)
    return b"".join(parts)
