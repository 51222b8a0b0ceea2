"""PredictRequest / PredictResponse bytes written without message objects (genserve.wire.predict_bytes)
are the message protobuf writes (byte for byte, but for the order of map entries, which the wire format
leaves open), and TF Serving's own classes read them.

    .venv/bin/python -m pytest tests/test_wire_bytes.py -q
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from genserve.clients.messages import _FRAMES_LIMIT, _frames, predict_request, predict_request_bytes
from genserve.wire.codec import to_tensor_proto
from genserve.wire.predict_bytes import tensor_bytes, varint

tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import predict_pb2  # noqa: E402

ARRAYS = {
    "f32": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    "f64": np.array([[1e-300, -2.5]]),
    "i32": np.array([[-3, 4, 2 ** 30]], dtype=np.int32),
    "i64": np.array([2 ** 40, -1], dtype=np.int64),
    "u64": np.array([2 ** 63 + 5], dtype=np.uint64),
    "u8 non-contiguous": np.arange(256, dtype=np.uint8).reshape(16, 16)[:, ::3],
    "f16": np.array([0.5, -1.0, 1000.0], dtype=np.float16),
    "c64": np.array([1 + 2j, -3j], dtype=np.complex64),
    "bool": np.array([[True], [False]]),
    "scalar": np.array(1.25, dtype=np.float32),
    "empty": np.zeros((0, 3), dtype=np.float32),
    "wide": np.zeros((1, 300), dtype=np.int8),  # multi-byte varints: dim 300, content length 300
    "big": np.ones((2, 1 << 17), dtype=np.float32),  # 1 MiB of content: a 3-byte length
}


@pytest.mark.parametrize("name", ARRAYS)
def test_tensor_bytes_are_protobufs_bytes(name):
    array = ARRAYS[name]
    written = tensor_bytes(array)
    assert written == to_tensor_proto(array).SerializeToString()
    assert written == tensor_bytes(array)  # again, from the cached header
    decoded = tf.make_ndarray(tf.make_tensor_proto(0).FromString(written))
    assert decoded.shape == array.shape and decoded.dtype == array.dtype
    np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize("array", [np.array(["a", "b"]), np.array([b"x"], dtype=object),
                                   np.arange(3, dtype=">f4"), np.zeros(2, "datetime64[s]")],
                         ids=["str", "object", "big-endian", "datetime"])
def test_what_is_not_a_native_number_is_left_to_the_message(array):
    assert tensor_bytes(array) is None


def test_varint():
    from google.protobuf.wrappers_pb2 import UInt64Value

    for n in (1, 127, 128, 300, 2 ** 31, 2 ** 64 - 1):  # UInt64Value.value (field 1): tag 0x08, varint
        assert b"\x08" + varint(n) == UInt64Value(value=n).SerializeToString()
    assert varint(0) == b"\x00"


REQUESTS = [
    dict(),
    dict(signature="step"),
    dict(version=0),
    dict(version=3, signature="decode"),
    dict(version_label="stable"),
    dict(output_filter=["b", "a"]),
    dict(output_filter="a"),
    dict(output_filter=()),
]


@pytest.mark.parametrize("kwargs", REQUESTS, ids=[str(r) for r in REQUESTS])
def test_request_bytes_are_predict_requests_bytes(kwargs):
    inputs = {"a": np.ones((2, 2), np.float32), "b": [1.5, 2.5], "c": np.array(7, np.int64),
              "é": np.zeros((1, 0), np.int32)}
    for _ in range(2):  # the first call writes the model_spec and output_filter, the second reuses them
        written = predict_request_bytes("text", inputs, **kwargs)
        expected = predict_request("text", inputs, **kwargs)
        assert _same_message(predict_pb2.PredictRequest, written, expected.SerializeToString())
    theirs = predict_pb2.PredictRequest.FromString(written)  # TF Serving's class reads the same request
    assert theirs.model_spec.name == "text"
    assert theirs.model_spec.WhichOneof("version_choice") == expected.model_spec.WhichOneof("version_choice")
    assert list(theirs.output_filter) == list(expected.output_filter)
    for key, value in inputs.items():
        np.testing.assert_array_equal(tf.make_ndarray(theirs.inputs[key]), np.asarray(value))


def _same_message(cls, written: bytes, expected: bytes) -> bool:
    """Equal as messages of TF Serving's `cls`, and byte for byte once the map entries are sorted."""
    ours, theirs = cls.FromString(written), cls.FromString(expected)
    return ours == theirs and ours.SerializeToString(deterministic=True) == \
        theirs.SerializeToString(deterministic=True) and len(written) == len(expected)


def test_request_bytes_from_a_generator_filter():
    inputs = {"a": np.ones(1, np.float32), "b": np.ones(1, np.float32)}
    written = predict_request_bytes("m", inputs, output_filter=(k for k in ["b"]))
    assert list(predict_pb2.PredictRequest.FromString(written).output_filter) == ["b"]


def test_string_inputs_take_the_message_path():
    inputs = {"s": np.array(["héllo", "wörld"]), "x": np.ones(2, np.float32)}
    assert _same_message(predict_pb2.PredictRequest, predict_request_bytes("m", inputs),
                         predict_request("m", inputs).SerializeToString())


def test_request_bytes_raise_what_predict_request_raises():
    with pytest.raises(TypeError, match="dict of tensor key"):
        predict_request_bytes("m", [np.ones(1)])
    with pytest.raises(TypeError, match="dict of tensor key"):  # the inputs are checked first
        predict_request_bytes("m", [np.ones(1)], version=1, version_label="x")
    with pytest.raises(ValueError, match="unsupported dtype"):
        predict_request_bytes("m", {"x": np.zeros(1, "datetime64[s]")})
    with pytest.raises(ValueError, match="either version or version_label"):
        predict_request_bytes("m", {"x": np.ones(1)}, version=1, version_label="stable")


def test_the_frame_cache_is_bounded():
    for i in range(_FRAMES_LIMIT + 10):
        predict_request_bytes(f"model-{i}", {"x": np.ones(1, np.float32)})
    assert len(_frames) <= _FRAMES_LIMIT
    written = predict_request_bytes("one more", {"x": np.ones(1, np.float32)})
    assert _same_message(predict_pb2.PredictRequest, written,
                         predict_request("one more", {"x": np.ones(1, np.float32)}).SerializeToString())


def test_response_bytes_are_respond_bytes():
    from genserve.serving.execute import respond, respond_bytes

    sig = SimpleNamespace(name="step", memo={})
    result = {"h": np.ones((1, 4), np.float32), "ids": np.array([3], np.int64), "p": np.float32(0.5),
              "none": np.zeros((0,), np.float64)}
    keys = ("h", "ids", "none", "p")
    for _ in range(2):
        written = respond_bytes("text", 3, sig, keys, result, predict_pb2.PredictResponse)
        expected = respond("text", 3, sig, keys, result, predict_pb2.PredictResponse).SerializeToString()
        assert _same_message(predict_pb2.PredictResponse, written, expected)
    theirs = predict_pb2.PredictResponse.FromString(written)
    assert (theirs.model_spec.name, theirs.model_spec.version.value, theirs.model_spec.signature_name) == \
        ("text", 3, "step")
    for key in keys:
        np.testing.assert_array_equal(tf.make_ndarray(theirs.outputs[key]), result[key])
    strings = {"s": np.array([b"a", b"bc"], dtype=object), "h": result["h"]}  # the message's way
    assert _same_message(predict_pb2.PredictResponse,
                         respond_bytes("text", 3, sig, ("h", "s"), strings, predict_pb2.PredictResponse),
                         respond("text", 3, sig, ("h", "s"), strings, predict_pb2.PredictResponse).SerializeToString())


def test_server_answers_googles_stub_and_the_client_alike(toy_server):
    """The server's hand-written response bytes read the same through TF Serving's own stub and
    tf.make_ndarray as through genserve's client; errors keep their status and message."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from genserve.clients import Client, GenserveError

    x = np.array([[1.0], [-2.5], [3.25]], np.float32)
    with grpc.insecure_channel(toy_server) as channel, Client(toy_server, timeout=30) as client:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "toy"
        request.model_spec.version.value = 1
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
        reply = stub.Predict(request, timeout=30)
        assert (reply.model_spec.name, reply.model_spec.version.value, reply.model_spec.signature_name) == \
            ("toy", 1, "serving_default")
        ours = client.predict("toy", {"x": x}, version=1)
        assert set(ours) == set(reply.outputs)
        for key, tensor in reply.outputs.items():
            theirs = tf.make_ndarray(tensor)
            assert ours[key].dtype == theirs.dtype and ours[key].shape == theirs.shape
            np.testing.assert_array_equal(ours[key], theirs)
        np.testing.assert_allclose(ours["y"], 2 * x + 1)
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(x.astype(np.float64)))
        with pytest.raises(grpc.RpcError) as google:
            stub.Predict(request, timeout=30)
        with pytest.raises(GenserveError) as genserve:
            client.predict("toy", {"x": x.astype(np.float64)}, version=1)
        assert google.value.code() == genserve.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert google.value.details() == genserve.value.details
