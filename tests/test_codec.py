"""numpy <-> TensorProto codec against TensorFlow's own encoder and decoder, both directions.

    .venv/bin/python -m pytest tests/test_codec.py -q
"""

from __future__ import annotations

import numpy as np
import pytest

from genserve.wire.codec import SUPPORTED_DTYPES, dtype_name, from_tensor_proto, tensor_layout, to_tensor_proto
from genserve.wire.protos import tensor_pb2

tf = pytest.importorskip("tensorflow")
from tensorflow.core.framework import tensor_pb2 as tf_tensor_pb2  # noqa: E402

NUMERIC = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
           "uint32", "uint64", "bool", "complex64", "complex128"]
SHAPES = [(), (0,), (1,), (5,), (2, 3), (2, 0, 3), (3, 1, 2)]


def sample(dtype: str, shape: tuple) -> np.ndarray:
    """Deterministic values that exercise sign, fractions and the dtype's extremes."""
    n = int(np.prod(shape))
    rng = np.random.default_rng(n + len(dtype))
    dt = np.dtype(dtype)
    if dt.kind == "b":
        values = rng.integers(0, 2, n).astype(bool)
    elif dt.kind in "iu":
        info = np.iinfo(dt)
        values = rng.integers(info.min, info.max, n, dtype=dt, endpoint=True)
        if n >= 2:
            values[:2] = info.min, info.max
    elif dt.kind == "c":
        values = (rng.standard_normal(n) * 100 + 1j * rng.standard_normal(n)).astype(dt)
    else:
        values = (rng.standard_normal(n) * 1000).astype(dt)
    return values.reshape(shape)


def strings(kind: str, shape: tuple) -> np.ndarray:
    n = int(np.prod(shape))
    words = ["", "a", "héllo", "日本", "x" * 40, "tab\tnewline\n"]
    text = [words[i % len(words)] for i in range(n)]
    if kind == "U":
        return np.array(text, dtype=str).reshape(shape)
    if kind == "S":
        return np.array([t.encode("utf-8") for t in text], dtype="S").reshape(shape)
    arr = np.empty(n, dtype=object)  # mixed str and bytes, including a NUL byte numpy 'S' would drop
    arr[:] = [t if i % 2 else t.encode("utf-8") + b"\x00" for i, t in enumerate(text)]
    return arr.reshape(shape)


def as_bytes(arr: np.ndarray) -> np.ndarray:
    """What a string tensor decodes to: an object array of bytes."""
    out = np.empty(arr.size, dtype=object)
    out[:] = [x.encode("utf-8") if isinstance(x, str) else bytes(x) for x in arr.reshape(-1).tolist()]
    return out.reshape(arr.shape)


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    np.testing.assert_array_equal(actual, expected)


# --- genserve encodes, TensorFlow decodes ---------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", NUMERIC)
def test_ours_to_tf_numeric(dtype, shape):
    arr = sample(dtype, shape)
    proto = to_tensor_proto(arr)
    assert proto.tensor_content or arr.size == 0  # numbers always travel as raw bytes
    tf_proto = tf_tensor_pb2.TensorProto.FromString(proto.SerializeToString())
    assert_same(tf.make_ndarray(tf_proto), arr)
    assert_same(from_tensor_proto(proto), arr)


@pytest.mark.parametrize("shape", [(), (1,), (4,), (2, 3)], ids=str)
@pytest.mark.parametrize("kind", ["U", "S", "O"])
def test_ours_to_tf_strings(kind, shape):
    arr = strings(kind, shape)
    proto = to_tensor_proto(arr)
    assert proto.dtype == tensor_pb2.DT_STRING and not proto.tensor_content
    tf_proto = tf_tensor_pb2.TensorProto.FromString(proto.SerializeToString())
    expected = as_bytes(arr)
    assert_same(tf.make_ndarray(tf_proto).astype(object), expected)
    assert_same(from_tensor_proto(proto), expected)


def test_ours_builds_tf_message_class_directly():
    arr = sample("float32", (2, 3))
    proto = to_tensor_proto(arr, message_cls=tf_tensor_pb2.TensorProto)
    assert isinstance(proto, tf_tensor_pb2.TensorProto)
    assert_same(tf.make_ndarray(proto), arr)
    assert_same(from_tensor_proto(proto), arr)  # duck-typed: TF's class decodes too


@pytest.mark.parametrize("dtype", ["float32", "int64", "bool", "float16", "complex64"])
def test_non_contiguous_and_big_endian(dtype):
    base = sample(dtype, (4, 6))
    views = {
        "strided": base[:, ::2],
        "transposed": base.T,
        "negative stride": base[::-1, 1:5],
        "big-endian": base.astype(base.dtype.newbyteorder(">")),
        "big-endian transposed": base.astype(base.dtype.newbyteorder(">")).T,
    }
    for name, view in views.items():
        proto = to_tensor_proto(view)
        decoded = from_tensor_proto(proto)
        expected = np.ascontiguousarray(view).astype(view.dtype.newbyteorder("="))
        assert_same(decoded, expected)
        tf_proto = tf_tensor_pb2.TensorProto.FromString(proto.SerializeToString())
        np.testing.assert_array_equal(tf.make_ndarray(tf_proto), expected, err_msg=name)


def test_python_scalars_and_lists():
    assert_same(from_tensor_proto(to_tensor_proto(3)), np.array(3))
    assert_same(from_tensor_proto(to_tensor_proto(2.5)), np.array(2.5))
    assert_same(from_tensor_proto(to_tensor_proto([[1, 2], [3, 4]])), np.array([[1, 2], [3, 4]]))
    assert_same(from_tensor_proto(to_tensor_proto("hi")), np.array(b"hi", dtype=object))


# --- TensorFlow encodes, genserve decodes ---------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", NUMERIC)
def test_tf_to_ours_numeric(dtype, shape):
    arr = sample(dtype, shape)
    tf_proto = tf.make_tensor_proto(arr)  # TF picks tensor_content or *_val by dtype and size
    ours = tensor_pb2.TensorProto.FromString(tf_proto.SerializeToString())
    assert_same(from_tensor_proto(ours), arr)
    assert_same(from_tensor_proto(tf_proto), arr)


@pytest.mark.parametrize("dtype", NUMERIC)
def test_tf_scalars_use_val_fields(dtype):
    """TF's encoder writes a scalar and a 1-element tensor into the typed *_val field."""
    for arr in (sample(dtype, (7,))[-1], sample(dtype, (7,))[-1:]):
        tf_proto = tf.make_tensor_proto(arr)
        assert not tf_proto.tensor_content, tf_proto
        ours = tensor_pb2.TensorProto.FromString(tf_proto.SerializeToString())
        assert_same(from_tensor_proto(ours), np.asarray(arr))


@pytest.mark.parametrize("shape", [(), (3,), (2, 2)], ids=str)
def test_tf_to_ours_strings(shape):
    arr = as_bytes(strings("O", shape))
    tf_proto = tf.make_tensor_proto(arr)
    ours = tensor_pb2.TensorProto.FromString(tf_proto.SerializeToString())
    assert_same(from_tensor_proto(ours), arr)


def test_tf_constant_fill_shapes():
    """tf.make_tensor_proto(value, shape=...) writes one value for a whole tensor: repeat it."""
    for value, dtype in ((1.5, tf.float32), (7, tf.int32), (True, tf.bool), (0.25, tf.float16),
                         (-3, tf.int64), (2 + 1j, tf.complex64)):
        tf_proto = tf.make_tensor_proto(value, dtype=dtype, shape=[2, 3])
        ours = tensor_pb2.TensorProto.FromString(tf_proto.SerializeToString())
        assert_same(from_tensor_proto(ours), tf.make_ndarray(tf_proto))


# --- *_val layouts written by hand, checked against tf.make_ndarray --------------------------------
def _both(**fields):
    return tensor_pb2.TensorProto(**fields), tf_tensor_pb2.TensorProto(**fields)


def _shape(*dims):
    return {"dim": [{"size": d} for d in dims]}


@pytest.mark.parametrize("fields", [
    dict(dtype=1, tensor_shape=_shape(2, 3), float_val=[1.5, -2.0]),  # fewer values: repeat last
    dict(dtype=1, tensor_shape=_shape(2, 3)),  # none: zeros
    dict(dtype=2, tensor_shape=_shape(4), double_val=[1e300]),
    dict(dtype=3, tensor_shape=_shape(3), int_val=[-5, 6, 7]),
    dict(dtype=4, tensor_shape=_shape(3), int_val=[0, 255]),
    dict(dtype=6, tensor_shape=_shape(2), int_val=[-128, 127]),
    dict(dtype=17, tensor_shape=_shape(2), int_val=[65535, 1]),
    dict(dtype=9, tensor_shape=_shape(2, 1), int64_val=[-(2 ** 63), 2 ** 63 - 1]),
    dict(dtype=10, tensor_shape=_shape(3), bool_val=[True, False]),
    dict(dtype=19, tensor_shape=_shape(3), half_val=[0x3C00, 0xC000, 0x7BFF]),  # 1, -2, 65504
    dict(dtype=22, tensor_shape=_shape(2), uint32_val=[2 ** 32 - 1, 0]),
    dict(dtype=23, tensor_shape=_shape(2), uint64_val=[2 ** 64 - 1]),
    dict(dtype=8, tensor_shape=_shape(2), scomplex_val=[1.0, 2.0, 3.0, -4.0]),
    dict(dtype=18, tensor_shape=_shape(3), dcomplex_val=[1.0, -1.0]),
], ids=lambda f: f"dt{f['dtype']}-{[k for k in f if k.endswith('_val')]}")
def test_val_fields_match_tf(fields):
    ours, theirs = _both(**fields)
    assert_same(from_tensor_proto(ours), tf.make_ndarray(theirs))


def test_half_val_holds_bit_patterns():
    ours = tensor_pb2.TensorProto(dtype=19, tensor_shape=_shape(2), half_val=[0x3C00, 0x3555])
    np.testing.assert_array_equal(from_tensor_proto(ours),
                                  np.array([0x3C00, 0x3555], np.uint16).view(np.float16))


def test_decoded_arrays_are_writable_copies():
    proto = to_tensor_proto(np.zeros((2, 2), np.float32))
    out = from_tensor_proto(proto)
    out[0, 0] = 1.0  # would raise on a read-only np.frombuffer view
    assert from_tensor_proto(proto)[0, 0] == 0.0


@pytest.mark.parametrize("array", [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([b"a", b"bc"], object),
                                   np.zeros((0, 4), np.int32)], ids=["content", "strings", "empty"])
def test_shape_read_by_the_caller_decodes_the_same(array):
    """The server passes the dims it already read and checked (execute.decode_inputs)."""
    proto = to_tensor_proto(array)
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    np.testing.assert_array_equal(from_tensor_proto(proto, shape), from_tensor_proto(proto))
    assert from_tensor_proto(proto, shape).shape == array.shape
    with pytest.raises(ValueError, match="bytes"):  # the value count is still checked against it
        from_tensor_proto(to_tensor_proto(np.zeros(5, np.float32)), (6,))



@pytest.mark.parametrize("array", [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([b"a", b"bc"], object),
                                   np.zeros((0, 4), np.int32), np.array(True), np.arange(3, dtype=np.uint64)],
                         ids=["float", "strings", "empty", "scalar", "uint64"])
def test_tensor_layout_is_what_decoding_gives_without_the_values(array):
    """The REST workers' model process checks a response's outputs from their layout alone."""
    decoded = from_tensor_proto(to_tensor_proto(array))
    assert tensor_layout(to_tensor_proto(array)) == (decoded.shape, decoded.dtype)

# --- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [
    np.zeros(2, dtype=np.longdouble) if np.dtype(np.longdouble).itemsize > 8 else np.zeros(2, "M8[s]"),
    np.zeros(2, dtype="datetime64[s]"),
    np.zeros(2, dtype="timedelta64[s]"),
    np.zeros(2, dtype=[("a", "f4")]),
    np.array([1, "a"], dtype=object),
    np.array([None], dtype=object),
], ids=["longdouble", "datetime64", "timedelta64", "structured", "object-int", "object-none"])
def test_unsupported_arrays_raise_value_error(bad):
    with pytest.raises(ValueError, match="unsupported dtype|object array"):
        to_tensor_proto(bad)


@pytest.mark.parametrize("fields, match", [
    (dict(dtype=14, tensor_shape=_shape(1), half_val=[1]), "DT_BFLOAT16"),
    (dict(dtype=20, tensor_shape=_shape(1)), "DT_RESOURCE"),
    (dict(dtype=0, tensor_shape=_shape(1)), "DT_INVALID"),
    (dict(dtype=1, tensor_shape=_shape(2), tensor_content=b"\x00" * 12), "needs 8"),
    (dict(dtype=1, tensor_shape=_shape(2), float_val=[1, 2, 3]), "3 values in float_val"),
    (dict(dtype=1, tensor_shape=_shape(-1), float_val=[1]), "negative dimension"),
    (dict(dtype=1, tensor_shape={"unknown_rank": True}), "unknown rank"),
    (dict(dtype=8, tensor_shape=_shape(1), scomplex_val=[1.0]), "pairs"),
])
def test_malformed_protos_raise_value_error(fields, match):
    with pytest.raises(ValueError, match=match):
        from_tensor_proto(tensor_pb2.TensorProto(**fields))


def test_dtype_names_follow_the_contract():
    assert [dtype_name(tensor_pb2.DataType.Value(n)) for n in ("DT_FLOAT", "DT_INT32", "DT_STRING",
                                                                "DT_HALF", "DT_BFLOAT16")] == [
        "float32", "int32", "string", "float16", "dt_bfloat16"]
    assert set(NUMERIC) | {"string"} == set(SUPPORTED_DTYPES)
