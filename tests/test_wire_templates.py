"""Predict messages read from a learned layout (genserve.wire.predict_bytes.Templates): a message that
differs from a learned one in its tensors' content alone decodes as protobuf decodes it, and any other
difference is not recognised (the caller parses it). Both ends use it: the server for requests, the
client for replies.

    .venv/bin/python -m pytest tests/test_wire_templates.py -q
"""

from __future__ import annotations

import numpy as np
import pytest

from genserve.clients.messages import predict_request_bytes
from genserve.wire.codec import from_tensor_proto
from genserve.wire.predict_bytes import Templates, response_bytes
from genserve.wire.protos import serving_pb2

ARRAYS = {
    "f32": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    "i32": np.array([[-3, 4, 2 ** 30]], dtype=np.int32),
    "i64": np.array([2 ** 40, -1], dtype=np.int64),
    "f16": np.array([0.5, -1.0, 1000.0], dtype=np.float16),
    "u8": np.arange(300, dtype=np.uint16).astype(np.uint8).reshape(1, 300),  # multi-byte lengths
    "bool": np.array([[True], [False]]),
    "scalar": np.array(1.25, dtype=np.float64),
}


def _other_values(arrays: dict, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {key: rng.integers(0, 2, a.shape).astype(a.dtype) if a.dtype == bool
            else (rng.standard_normal(a.shape) * 100).astype(a.dtype) for key, a in arrays.items()}


def _request(arrays: dict, **spec) -> bytes:
    return predict_request_bytes("model", arrays, "sig", output_filter=("out",), **spec)


def _parsed(raw: bytes) -> dict:
    return {key: from_tensor_proto(t) for key, t in serving_pb2.PredictRequest.FromString(raw).inputs.items()}


def _content_positions(raw: bytes) -> set:
    from genserve.wire.predict_bytes import _content_spans

    return {i for _, start, end in _content_spans(raw, 2) for i in range(start, end)}


def test_a_learned_request_layout_reads_new_values_as_protobuf_does():
    templates = Templates(2, "inputs")
    first = _request(ARRAYS)
    learned = serving_pb2.PredictRequest.FromString(first)
    assert templates.learn(first, learned)
    assert not templates.learn(first, learned)  # known already
    for seed in range(3):
        values = _other_values(ARRAYS, seed)
        raw = _request(values)
        message, arrays = templates.read(raw)
        assert message is learned
        expected = _parsed(raw)
        assert set(arrays) == set(expected) == set(ARRAYS)
        for key, array in arrays.items():
            assert array.dtype == expected[key].dtype and array.shape == expected[key].shape
            np.testing.assert_array_equal(array, expected[key])
            np.testing.assert_array_equal(array, values[key])
            assert array.flags.writeable and array.flags.c_contiguous and array.flags.aligned
            assert not np.shares_memory(array, np.frombuffer(raw, np.uint8))
    assert templates.hits == 3


def test_a_learned_reply_layout_reads_as_protobuf_does():
    templates = Templates(1, "outputs")
    spec = serving_pb2.PredictResponse()
    spec.model_spec.name, spec.model_spec.signature_name = "text", "step"
    spec.model_spec.version.value = 7
    tail = spec.SerializeToString()
    outputs = [("c", np.zeros((1, 8), np.float32)), ("probabilities", np.ones((1, 5), np.float32))]
    first = response_bytes(outputs, tail)
    assert templates.learn(first, serving_pb2.PredictResponse.FromString(first))
    new = [(key, a + np.arange(a.size, dtype=a.dtype).reshape(a.shape)) for key, a in outputs]
    message, arrays = templates.read(response_bytes(new, tail))
    assert message.model_spec.version.value == 7
    for key, array in new:
        np.testing.assert_array_equal(arrays[key], array)
    spec.model_spec.version.value = 8  # another version answered: same length, another layout
    assert templates.read(response_bytes(new, spec.SerializeToString())) is None


def test_any_change_outside_the_values_is_not_recognised():
    """Every byte that is not tensor content, changed, makes the message unknown; bytes of content
    change only the values; a byte more or less, or a cut, is unknown too."""
    arrays = {"f32": ARRAYS["f32"], "i64": ARRAYS["i64"]}
    first = _request(arrays)
    templates = Templates(2, "inputs")
    assert templates.learn(first, serving_pb2.PredictRequest.FromString(first))
    content = _content_positions(first)
    assert 0 < len(content) < len(first)
    for i in range(len(first)):
        changed = bytearray(first)
        changed[i] ^= 0x01
        found = templates.read(bytes(changed))
        if i in content:
            expected = _parsed(bytes(changed))
            for key, array in found[1].items():
                np.testing.assert_array_equal(array, expected[key])
        else:
            assert found is None, f"byte {i} of {len(first)} changed and the message was still recognised"
    for raw in (first + b"\x00", first[:-1], b"\x00" + first[:-1], first[1:] + b"\x00", b""):
        assert templates.read(raw) is None


def _tensor_map_entry(field: int, key: bytes, tensor: bytes) -> bytes:
    from genserve.wire.predict_bytes import _field

    return _field(bytes([field << 3 | 2]), _field(b"\x0a", key) + _field(b"\x12", tensor))


def test_what_is_not_learned():
    from genserve.wire.predict_bytes import tensor_bytes

    f32 = tensor_bytes(np.ones((1, 2), np.float32))
    from genserve.wire.protos import tensor_pb2

    float_val = tensor_pb2.TensorProto(dtype=1, float_val=[1.0, 2.0])
    float_val.tensor_shape.dim.add().size = 2
    cases = {
        "strings": predict_request_bytes("m", {"s": np.array([b"a", b"b"], dtype=object)}),
        "float_val, not tensor_content": _tensor_map_entry(2, b"x", float_val.SerializeToString()),
        "an empty tensor (no content)": predict_request_bytes("m", {"x": np.zeros((0, 3), np.float32)}),
        "tensor_content twice (the last counts)": _tensor_map_entry(2, b"x", f32 + f32[-10:-8] + b"\x22\x08" + bytes(8)),
        "one key twice (the last counts)": _tensor_map_entry(2, b"x", f32) + _tensor_map_entry(2, b"x", f32),
        "value before key": bytes([0x12, len(f32) + 5, 0x12, len(f32)]) + f32 + b"\x0a\x01x",
        "content of the wrong size": _tensor_map_entry(2, b"x", tensor_bytes(np.ones(3, np.float32))[:-4]),
        "no inputs": predict_request_bytes("m", {}),
        "300 unknown fields (more than learning walks)": _tensor_map_entry(2, b"x", f32) + b"\x78\x01" * 300,
    }
    for name, raw in cases.items():
        try:
            message = serving_pb2.PredictRequest.FromString(raw)
        except Exception:  # noqa: BLE001 - not a message at all: nothing to learn either
            message = serving_pb2.PredictRequest()
        assert not Templates(2, "inputs").learn(raw, message), name
    few_unknown = _tensor_map_entry(2, b"x", f32) + b"\x78\x01" * 10  # unknown fields are kept as they are
    assert Templates(2, "inputs").learn(few_unknown, serving_pb2.PredictRequest.FromString(few_unknown))
    for raw in (b"\xff" * 20, b"\x12\x80", b"\x12\x05\x0a\x01", b"\x0b\x0c"):  # garbage, truncated, group
        assert not Templates(2, "inputs").learn(raw, serving_pb2.PredictRequest()), raw


def test_the_store_is_bounded():
    templates = Templates(2, "inputs", limit=3, max_bytes=200)
    big = _request({"x": np.zeros(100, np.float32)})
    assert not templates.learn(big, serving_pb2.PredictRequest.FromString(big))
    learned = 0
    for n in range(1, 8):
        raw = _request({"x": np.zeros(n, np.float32)})
        learned += templates.learn(raw, serving_pb2.PredictRequest.FromString(raw))
    assert learned == 3
    assert templates.read(_request({"x": np.ones(2, np.float32)})) is not None
    assert templates.read(_request({"x": np.ones(5, np.float32)})) is None


# -- both ends, over a real server ----------------------------------------------------------------------


@pytest.fixture
def server_with_templates(toy_models_dir):
    """(target, the gRPC server's request Templates) of a real server over the toy models."""
    from genserve.serving.grpc_api import GrpcServer
    from genserve.serving.options import ServerOptions
    from genserve.serving.registry import ModelRegistry
    from genserve.serving.service import ModelService

    registry = ModelRegistry(toy_models_dir)
    registry.refresh(strict=True)
    service = ModelService(registry, ServerOptions())
    server = GrpcServer(service, "127.0.0.1:0", ServerOptions())
    port = server.start()
    try:
        yield f"127.0.0.1:{port}", server.predict_requests
    finally:
        server.stop(0)
        service.shutdown()


def test_the_server_answers_a_known_layout_for_its_own_values(server_with_templates):
    """After one answered request, the same layout with other values is read from the template and
    answered for its values; a request of the same length for another model, signature or version is
    not (its own errors); Google's stub sees the same."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    target, templates = server_with_templates
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        raw_predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")

        def ask(raw: bytes):
            return predict_pb2.PredictResponse.FromString(raw_predict(raw, timeout=30))

        x = np.array([[1.0], [2.0]], np.float32)
        first = ask(predict_request_bytes("toy", {"x": x}, version=1))
        assert templates.hits == 0 and templates._count == 1
        for value in (3.5, -8.0, 1e6):
            reply = ask(predict_request_bytes("toy", {"x": np.full((2, 1), value, np.float32)}, version=1))
            np.testing.assert_array_equal(tf.make_ndarray(reply.outputs["y"]),
                                          tf.make_ndarray(first.outputs["y"]) - 2 * x + 2 * value)
        assert templates.hits == 3
        with pytest.raises(grpc.RpcError) as e:  # same length: "toz" is no model
            raw_predict(predict_request_bytes("toz", {"x": x}, version=1), timeout=30)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND and "toz" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:  # version 3 is not served
            raw_predict(predict_request_bytes("toy", {"x": x}, version=3), timeout=30)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        version2 = ask(predict_request_bytes("toy", {"x": x}, version=2))
        assert version2.model_spec.version.value == 2
        assert templates.hits == 3
        request = predict_pb2.PredictRequest()  # Google's stub, TF's own TensorProto
        request.model_spec.name = "toy"
        request.model_spec.version.value = 1
        for value in (0.25, 0.5):
            request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.full((2, 1), value, np.float32)))
            reply = stub.Predict(request, timeout=30)
            np.testing.assert_array_equal(tf.make_ndarray(reply.outputs["y"]),
                                          tf.make_ndarray(first.outputs["y"]) - 2 * x + 2 * value)
        with pytest.raises(grpc.RpcError) as e:  # a known layout whose checks fail still fails them
            raw_predict(predict_request_bytes("toy", {"x": np.zeros((2, 1), np.float64)}, version=1), timeout=30)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_client_reads_a_known_reply_layout(server_with_templates):
    from genserve.clients import Client

    target, _ = server_with_templates
    with Client(target, timeout=30) as client:
        x = np.array([[1.0]], np.float32)
        first = client.predict_reply("toy", {"x": x}, version=1)
        assert client._replies.hits == 0
        for value in (2.0, -3.0):
            reply = client.predict_reply("toy", {"x": np.full((1, 1), value, np.float32)}, version=1)
            assert reply.model_spec.version.value == 1
            np.testing.assert_array_equal(reply.outputs["y"], first.outputs["y"] - 2 * x + 2 * value)
            reply.outputs["y"][:] = 99  # the caller's own array: the next reply is not affected
        assert client._replies.hits == 2
        again = client.predict("toy", {"x": x}, version=1)
        np.testing.assert_array_equal(again["y"], first.outputs["y"])
        response = client.predict_response("toy", {"x": x}, version=2)
        assert response.model_spec.version.value == 2


def test_an_unparsable_reply_is_internal_not_a_traceback():
    """A server that answers bytes that are no PredictResponse: GenserveError INTERNAL, one line."""
    from concurrent import futures

    import grpc

    from genserve.clients import Client, GenserveError

    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "tensorflow.serving.PredictionService",
        {"Predict": grpc.unary_unary_rpc_method_handler(lambda request, context: b"\xff\xff\xff")})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with Client(f"127.0.0.1:{port}", timeout=10) as client:
            for call in (client.predict, client.predict_response):
                with pytest.raises(GenserveError) as e:
                    call("toy", {"x": np.ones((1, 1), np.float32)})
                assert e.value.code == grpc.StatusCode.INTERNAL
                assert "PredictResponse" in e.value.details and "\n" not in e.value.details
    finally:
        server.stop(0)


def test_a_failure_to_learn_does_not_cost_the_answer(server_with_templates, caplog, monkeypatch):
    import grpc

    target, templates = server_with_templates

    def broken(raw, message):
        raise RuntimeError("learning broke")

    monkeypatch.setattr(templates, "learn", broken)
    with grpc.insecure_channel(target) as channel, caplog.at_level("ERROR", logger="genserve.serving"):
        reply = serving_pb2.PredictResponse.FromString(channel.unary_unary(
            "/tensorflow.serving.PredictionService/Predict")(
            predict_request_bytes("toy", {"x": np.ones((1, 1), np.float32)}, version=1), timeout=30))
    assert "y" in reply.outputs
    assert any("learning a request layout failed: RuntimeError: learning broke" in r.getMessage()
               for r in caplog.records)


def test_a_learned_request_is_checked_once_per_signature_and_limits(toy_models_dir, monkeypatch):
    """The server checks a learned request's keys, dtypes, shapes and size once per loaded signature
    and limits (execute.prepare): the learned message stands for every request of its layout. Other
    limits, or another loaded version, check it again."""
    from genserve.serving import execute
    from genserve.serving.errors import ServingError
    from genserve.serving.loader import load_saved_model
    from genserve.serving.options import Limits

    templates = Templates(2, "inputs")
    raw = predict_request_bytes("toy", {"x": np.ones((3, 1), np.float32)})
    learned = serving_pb2.PredictRequest.FromString(raw)
    assert templates.learn(raw, learned)
    request, arrays = templates.read(predict_request_bytes("toy", {"x": np.full((3, 1), 2.0, np.float32)}))
    assert request is learned
    checks = []
    decode = execute.decode_inputs
    monkeypatch.setattr(execute, "decode_inputs", lambda *args: checks.append(args) or decode(*args))
    limits = Limits()
    model = load_saved_model(toy_models_dir / "toy" / "1")
    for _ in range(3):
        sig, values, keys = execute.prepare(model, "toy", 1, request, limits, arrays)
        assert values is arrays and keys == ("wx", "y")
    assert len(checks) == 1
    with pytest.raises(ServingError) as e:  # other limits: checked again, and refused
        execute.prepare(model, "toy", 1, request, Limits(max_request_elements=2), arrays)
    assert e.value.code == "RESOURCE_EXHAUSTED"
    execute.prepare(load_saved_model(toy_models_dir / "toy" / "2"), "toy", 2, request, limits, arrays)
    assert len(checks) == 3
