"""numpy <-> TensorProto, without TensorFlow.

Numbers are encoded as raw little-endian bytes in `tensor_content` (one `tobytes()` call, ~7x faster
than filling `float_val` for 1M floats); strings go into `string_val`, the only place TF accepts them.
Decoding accepts both layouts TF uses: `tensor_content` when set, else the typed `*_val` field (TF
Serving's replies and TF's encoder for scalars use those). Field semantics follow
tensorflow/core/framework/tensor.proto and `tf.make_ndarray` (tensorflow/python/framework/tensor_util.py):
fewer values than elements repeat the last one, none give zeros, `half_val` holds uint16 bit patterns,
complex fields hold (real, imag) pairs.

Works on genserve's own `genserve.wire.TensorProto` (the default) and on TF's `tensorflow.TensorProto`
alike: both have the same field names, and the functions here only touch fields by name.

    python -c "from genserve.wire.codec import *; import numpy as np; print(from_tensor_proto(to_tensor_proto(np.eye(2))))"
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from genserve.wire.protos import tensor_pb2

# DataType enum values (tensorflow/core/framework/types.proto), for the dtypes genserve transports.
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING = 1, 2, 3, 4, 5, 6, 7
DT_COMPLEX64, DT_INT64, DT_BOOL, DT_UINT16, DT_COMPLEX128, DT_HALF = 8, 9, 10, 17, 18, 19
DT_UINT32, DT_UINT64 = 22, 23

# DataType -> (numpy dtype, the *_val field TF uses for it when tensor_content is empty). Public: the
# server checks and decodes requests with the same table the clients encode with.
NUMERIC_DTYPES: dict[int, tuple[np.dtype, str]] = {
    DT_HALF: (np.dtype("<f2"), "half_val"),
    DT_FLOAT: (np.dtype("<f4"), "float_val"),
    DT_DOUBLE: (np.dtype("<f8"), "double_val"),
    DT_INT8: (np.dtype("i1"), "int_val"),
    DT_INT16: (np.dtype("<i2"), "int_val"),
    DT_INT32: (np.dtype("<i4"), "int_val"),
    DT_INT64: (np.dtype("<i8"), "int64_val"),
    DT_UINT8: (np.dtype("u1"), "int_val"),
    DT_UINT16: (np.dtype("<u2"), "int_val"),
    DT_UINT32: (np.dtype("<u4"), "uint32_val"),
    DT_UINT64: (np.dtype("<u8"), "uint64_val"),
    DT_BOOL: (np.dtype("?"), "bool_val"),
    DT_COMPLEX64: (np.dtype("<c8"), "scomplex_val"),
    DT_COMPLEX128: (np.dtype("<c16"), "dcomplex_val"),
}
# numpy dtype (native byte order, as `np.dtype.newbyteorder("=")` gives it) -> DataType.
_FROM_NUMPY: dict[np.dtype, int] = {dt.newbyteorder("="): code for code, (dt, _) in NUMERIC_DTYPES.items()}
# DataType -> numpy dtype whose memory layout is tensor_content's as it is (little-endian hosts only).
NATIVE_DTYPES: dict[int, np.dtype] = {code: dt for dt, code in _FROM_NUMPY.items()} if sys.byteorder == "little" else {}

_shapes: dict[bytes, tuple] = {}  # serialized TensorShapeProto -> its (checked) dims, for the few a program sees
_SHAPES_LIMIT = 512

SUPPORTED_DTYPES: tuple[str, ...] = tuple(dt.name for dt, _ in NUMERIC_DTYPES.values()) + ("string",)


def data_type(dtype: Any) -> int:
    """The TensorFlow DataType enum value for a numpy dtype (or a contract name such as "string").

    Raises:
        ValueError: for a dtype TensorProto cannot carry here (e.g. float128, datetime64, object).
    """
    if isinstance(dtype, str) and dtype == "string":
        return DT_STRING
    dt = np.dtype(dtype)
    if dt.kind in "US":
        return DT_STRING
    code = _FROM_NUMPY.get(dt.newbyteorder("="))
    if code is None:
        raise ValueError(
            f"unsupported dtype {dt} for a TensorProto (supported: {', '.join(SUPPORTED_DTYPES)})"
        )
    return code


def dtype_name(code: int) -> str:
    """The contract's name for a DataType value: a numpy dtype name ("float32", ...) or "string".

    DataTypes without a numpy counterpart come back as TF's name in lower case ("dt_bfloat16").
    """
    if code == DT_STRING:
        return "string"
    if code in NUMERIC_DTYPES:
        return NUMERIC_DTYPES[code][0].name
    try:
        return tensor_pb2.DataType.Name(code).lower()
    except ValueError:
        return f"dt_{code}"


def _string_values(flat: np.ndarray) -> list[bytes]:
    """UTF-8 bytes for every element of a 1-D str/bytes/object array."""
    if flat.dtype.kind == "S":
        return flat.tolist()  # bytes already (numpy drops trailing NULs, as TF does)
    if flat.dtype.kind == "U":
        return [s.encode("utf-8") for s in flat.tolist()]
    values = []
    for item in flat.tolist():
        if isinstance(item, bytes):
            values.append(item)
        elif isinstance(item, str):
            values.append(item.encode("utf-8"))
        else:
            raise ValueError(
                f"an object array must hold only str or bytes to become a string tensor, "
                f"found {type(item).__name__}"
            )
    return values


def to_tensor_proto(array: Any, message_cls: type | None = None):
    """Encode a numpy array (or anything `np.asarray` takes) as a TensorProto.

    Numbers go into `tensor_content` (little-endian, C order, whatever the input's strides or byte
    order); str/bytes/object arrays go into `string_val` (str as UTF-8).

    Args:
        array: the values; 0-d, empty and non-contiguous arrays are fine.
        message_cls: the TensorProto class to build, genserve's `genserve.wire.TensorProto` by default;
            pass `tensorflow.core.framework.tensor_pb2.TensorProto` to build TF's message.

    Returns:
        A new `message_cls` instance.

    Raises:
        ValueError: for a dtype TensorProto cannot carry (see SUPPORTED_DTYPES).
    """
    proto = (message_cls or tensor_pb2.TensorProto)()
    fill_tensor_proto(proto, array)
    return proto


def fill_tensor_proto(proto: Any, array: Any) -> None:
    """Encode `array` into an empty TensorProto in place, e.g. `response.outputs[key]`: the same
    encoding as `to_tensor_proto`, without building a message and copying it over (CopyFrom).

    Raises:
        ValueError: for a dtype TensorProto cannot carry (see SUPPORTED_DTYPES).
    """
    arr = np.asarray(array)
    if arr.dtype.kind in "USO":
        proto.dtype = DT_STRING
        proto.string_val.extend(_string_values(arr.reshape(-1)))
    else:
        proto.dtype = data_type(arr.dtype)
        little = arr.dtype.newbyteorder("<")
        if arr.dtype != little:  # big-endian input: TF's tensor_content is little-endian
            arr = arr.astype(little)
        proto.tensor_content = arr.tobytes(order="C")  # copies a non-contiguous array into C order
    dims = proto.tensor_shape.dim
    for size in arr.shape:
        dims.add().size = size


def _fill(values: np.ndarray, count: int, what: str) -> np.ndarray:
    """`values` stretched to `count` elements the way tf.make_ndarray does (repeat last / zeros)."""
    if values.size == count:
        return values
    if values.size == 0:
        return np.zeros(count, dtype=values.dtype)
    if values.size < count:
        return np.concatenate([values, np.full(count - values.size, values[-1], dtype=values.dtype)])
    raise ValueError(f"TensorProto has {values.size} values in {what} but its shape holds {count}")


def tensor_layout(proto: Any) -> tuple[tuple, np.dtype]:
    """(shape, numpy dtype) of the array `from_tensor_proto` would return, read from the proto's
    header without decoding its values.

    Raises:
        ValueError: what `from_tensor_proto` raises for an unknown rank, a negative dimension or an
            unsupported dtype.
    """
    code = int(proto.dtype)
    if proto.tensor_shape.unknown_rank or (code != DT_STRING and code not in NUMERIC_DTYPES):
        array = from_tensor_proto(proto)  # raises its error
        return array.shape, array.dtype
    shape = tuple(int(d.size) for d in proto.tensor_shape.dim)
    if any(n < 0 for n in shape):
        raise ValueError(f"TensorProto has a negative dimension in shape {list(shape)}")
    return shape, np.dtype(object) if code == DT_STRING else NUMERIC_DTYPES[code][0].newbyteorder("=")


def from_tensor_proto(proto: Any, shape: tuple | None = None) -> np.ndarray:
    """Decode a TensorProto (genserve's or TF's) into a new, writable numpy array.

    Args:
        proto: a TensorProto message; only its fields are read, so either class works.
        shape: the proto's dims when the caller has already read and checked them (known rank, no
            negative size), so they are not read twice (the server's request path).

    Returns:
        An array of the proto's shape; numbers in native byte order, strings as an object array of
        bytes (decode them yourself: tensors carry bytes, not text).

    Raises:
        ValueError: unknown rank, a negative dimension, an unsupported dtype, or a value count that
            does not fit the shape.
    """
    if shape is None:
        shape_proto = proto.tensor_shape
        serialized = shape_proto.SerializeToString()  # cheaper than reading the dims one by one
        shape = _shapes.get(serialized)
        if shape is None:
            if shape_proto.unknown_rank:
                raise ValueError("TensorProto has unknown rank; a tensor value needs a concrete shape")
            shape = tuple([d.size for d in shape_proto.dim])
            if shape and min(shape) < 0:
                raise ValueError(f"TensorProto has a negative dimension in shape {list(shape)}")
            if len(_shapes) < _SHAPES_LIMIT and len(serialized) <= 256:
                _shapes[serialized] = shape
    code = int(proto.dtype)
    as_is = NATIVE_DTYPES.get(code)
    if as_is is not None:  # the common case first: numbers in tensor_content, on a little-endian host
        content = proto.tensor_content
        if content and len(content) == math.prod(shape) * as_is.itemsize:
            # one copy, into a buffer of the array's own: writable, nothing shared with the message
            return np.ndarray(shape, as_is, bytearray(content))
    count = math.prod(shape)

    if code == DT_STRING:
        strings = np.empty(len(proto.string_val), dtype=object)
        strings[:] = list(proto.string_val)
        if strings.size == 0:
            strings = np.full(count, b"", dtype=object)
        return _fill(strings, count, "string_val").reshape(shape)

    if code not in NUMERIC_DTYPES:
        raise ValueError(
            f"unsupported TensorProto dtype {dtype_name(code).upper()} ({code}); genserve decodes "
            f"{', '.join(SUPPORTED_DTYPES)}"
        )
    dt, field = NUMERIC_DTYPES[code]
    content = proto.tensor_content
    if content:
        if len(content) != count * dt.itemsize:
            raise ValueError(
                f"tensor_content has {len(content)} bytes, but {dt.name}{list(shape)} needs "
                f"{count * dt.itemsize}"
            )
        # (count,) little-endian -> native, copied so the result is writable and owns its memory.
        return np.frombuffer(content, dtype=dt).astype(dt.newbyteorder("="), copy=True).reshape(shape)

    raw = getattr(proto, field)
    if field == "half_val":
        values = np.array(raw, dtype=np.int32).astype(np.uint16).view(np.float16)  # bit patterns
    elif field in ("scomplex_val", "dcomplex_val"):
        pairs = np.array(raw, dtype=np.float32 if field == "scomplex_val" else np.float64)
        if pairs.size % 2:
            raise ValueError(f"{field} holds {pairs.size} numbers; complex values need pairs")
        values = pairs.view(dt.newbyteorder("="))  # (re, im, re, im, ...) -> (n,) complex
    else:
        values = np.array(raw, dtype=dt.newbyteorder("="))
    return _fill(values, count, field).reshape(shape)
