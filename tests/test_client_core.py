"""The thin client against a real gRPC server built from TF Serving's own servicer classes.

The server below uses `tensorflow_serving.apis` messages and `tf.make_ndarray` / `tf.make_tensor_proto`,
so every call crosses the wire between genserve's messages and Google's. (The end-to-end tests
against genserve's embedded server live with the server.)

    .venv/bin/python -m pytest tests/test_client_core.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc
import numpy as np
import pytest

from benchmarks.harness import free_port
from genserve.clients import Client, GenserveError, RetryPolicy, SignatureInfo
from genserve.clients import VersionStatus
from genserve.clients.channel import DEFAULT_MAX_MESSAGE_BYTES

tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2  # noqa: E402
from tensorflow_serving.apis import model_service_pb2_grpc, predict_pb2  # noqa: E402
from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: E402

LIMIT = 64 * 1024 * 1024
VAL_FIELD = {np.dtype("uint8"): "int_val", np.dtype("int32"): "int_val",
             np.dtype("float32"): "float_val", np.dtype("int64"): "int64_val"}


class FakeModels(prediction_service_pb2_grpc.PredictionServiceServicer,
                 model_service_pb2_grpc.ModelServiceServicer):
    """Models "echo" (versions 1, 2: doubles numbers, echoes strings), "val" (the same, answered in
    *_val fields as TF Serving does by default), "slow" (sleeps 2 s), "flaky" (UNAVAILABLE for the
    first `flaky_failures` calls), "broken" (INTERNAL)."""

    def __init__(self):
        self.calls: dict[str, int] = {}
        self.flaky_failures = 0
        self.lock = threading.Lock()

    def _count(self, model: str) -> int:
        with self.lock:
            self.calls[model] = self.calls.get(model, 0) + 1
            return self.calls[model]

    def _version(self, spec, context) -> int:
        if spec.name not in ("echo", "val", "slow", "flaky", "broken"):
            context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({spec.name})")
        which = spec.WhichOneof("version_choice")
        if which == "version":
            if spec.version.value not in (1, 2):
                context.abort(grpc.StatusCode.NOT_FOUND,
                              f"Servable not found for request: Specific({spec.name}, {spec.version.value})")
            return spec.version.value
        if which == "version_label":
            if spec.version_label != "stable":
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized label: {spec.version_label}")
            return 1
        return 2

    def Predict(self, request, context):
        spec = request.model_spec
        version = self._version(spec, context)
        calls = self._count(spec.name)
        if spec.name == "slow":
            time.sleep(2.0)
        if spec.name == "flaky" and calls <= self.flaky_failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"warming up (call {calls})")
        if spec.name == "broken":
            context.abort(grpc.StatusCode.INTERNAL, "the model exploded")
        if spec.signature_name not in ("", "serving_default", "double"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"Serving signature name: \"{spec.signature_name}\" not found in signature def")
        wanted = list(request.output_filter) or list(request.inputs)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = version
        response.model_spec.signature_name = spec.signature_name or "serving_default"
        for key in wanted:
            if key not in request.inputs:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"output tensor alias not found in signature: {key}")
            x = tf.make_ndarray(request.inputs[key])
            y = x if x.dtype.kind in "bOS" else x * 2
            if spec.name == "val":  # TF Serving's default reply layout: typed *_val fields
                out = response.outputs[key]
                out.dtype = tf.as_dtype(y.dtype).as_datatype_enum
                out.tensor_shape.CopyFrom(tf.TensorShape(y.shape).as_proto())
                getattr(out, VAL_FIELD[y.dtype]).extend(y.ravel().tolist())
            else:
                response.outputs[key].CopyFrom(tf.make_tensor_proto(y))
        return response

    def GetModelMetadata(self, request, context):
        self._version(request.model_spec, context)
        if list(request.metadata_field) != ["signature_def"]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Metadata field signature_def is required")
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        sig = sig_map.signature_def["double"]
        sig.method_name = "tensorflow/serving/predict"
        for where, key in ((sig.inputs, "x"), (sig.outputs, "y")):
            where[key].name = f"{key}:0"
            where[key].dtype = tf.float32.as_datatype_enum
            where[key].tensor_shape.CopyFrom(tf.TensorShape([None, 3]).as_proto())
        sig_map.signature_def["serving_default"].CopyFrom(sig)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.CopyFrom(request.model_spec)
        response.metadata["signature_def"].Pack(sig_map)
        return response

    def GetModelStatus(self, request, context):
        self._version(request.model_spec, context)
        response = get_model_status_pb2.GetModelStatusResponse()
        entries = [(1, get_model_status_pb2.ModelVersionStatus.END),
                   (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
        for version, state in entries:
            if request.model_spec.HasField("version") and request.model_spec.version.value != version:
                continue
            response.model_version_status.add(version=version, state=state)
        return response


def start_server(models: FakeModels, address: str = "127.0.0.1:0") -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=[("grpc.max_send_message_length", LIMIT),
                                  ("grpc.max_receive_message_length", LIMIT)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(models, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(models, server)
    port = server.add_insecure_port(address)
    server.start()
    return server, port


@pytest.fixture(scope="module")
def served():
    models = FakeModels()
    server, port = start_server(models)
    yield models, f"127.0.0.1:{port}"
    server.stop(grace=None)


@pytest.fixture
def client(served):
    with Client(served[1], timeout=10.0) as c:
        yield c


# --- Predict ---------------------------------------------------------------------------------------
def test_predict_round_trips_every_dtype(client):
    inputs = {
        "f32": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
        "f64": np.array([[1e-300, -2.5]]),
        "i32": np.array([[-3, 4, 2 ** 30]], dtype=np.int32),
        "i64": np.array([2 ** 40, -1], dtype=np.int64),
        "u8": np.arange(256, dtype=np.uint8).reshape(16, 16)[:, ::3],  # non-contiguous
        "f16": np.array([0.5, -1.0, 1000.0], dtype=np.float16),
        "b": np.array([[True], [False]]),
        "s": np.array(["héllo", "wörld"]),
        "one": np.array([1.25], dtype=np.float32),  # TF replies with float_val for 1 element
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    out = client.predict("echo", inputs)
    assert set(out) == set(inputs)
    for key, x in inputs.items():
        expected = x if x.dtype.kind in "bU" else x * 2
        if x.dtype.kind == "U":
            expected = np.array([s.encode("utf-8") for s in x.ravel()], dtype=object)
        assert out[key].shape == x.shape, key
        assert out[key].dtype == expected.dtype, key
        np.testing.assert_array_equal(out[key], expected, err_msg=key)


def test_model_spec_reaches_the_server(client):
    latest = client.predict_response("echo", {"x": np.ones(1, np.float32)})
    assert latest.model_spec.version.value == 2  # version left unset -> the server picks latest
    assert latest.model_spec.signature_name == "serving_default"
    old = client.predict_response("echo", {"x": np.ones(1, np.float32)}, signature="double",
                                  version=1)
    assert (old.model_spec.version.value, old.model_spec.signature_name) == (1, "double")
    labelled = client.predict_response("echo", {"x": np.ones(1)}, version_label="stable")
    assert labelled.model_spec.version.value == 1


def test_output_filter(client):
    inputs = {"a": np.ones((2, 2), np.float32), "b": np.zeros(3, np.int32)}
    out = client.predict("echo", inputs, output_filter=["b"])
    assert list(out) == ["b"]
    out = client.predict("echo", inputs, output_filter="a")
    assert list(out) == ["a"]


def test_predict_fn_is_a_plain_callable(client):
    double = client.predict_fn("echo", "double")
    out = double({"x": np.array([[1.0, 2.0]], np.float32)})
    np.testing.assert_array_equal(out["x"], [[2.0, 4.0]])
    only_y = client.predict_fn("echo", output_filter=["y"])
    assert list(only_y({"x": np.ones(1), "y": np.ones(1)})) == ["y"]


def test_val_field_replies_decode(client):
    """TF Serving answers in *_val fields by default; the client reads them like tensor_content."""
    inputs = {"u8": np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
              "f32": np.linspace(0, 1, 5, dtype=np.float32),
              "i64": np.array([[-7, 8]], dtype=np.int64)}
    out = client.predict("val", inputs)
    for key, x in inputs.items():
        assert out[key].dtype == x.dtype
        np.testing.assert_array_equal(out[key], x * 2)


# --- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, code, text", [
    (dict(model="nope"), grpc.StatusCode.NOT_FOUND, "Latest(nope)"),
    (dict(model="echo", version=9), grpc.StatusCode.NOT_FOUND, "Specific(echo, 9)"),
    (dict(model="echo", signature="missing"), grpc.StatusCode.INVALID_ARGUMENT, "missing"),
    (dict(model="echo", output_filter=["zz"]), grpc.StatusCode.INVALID_ARGUMENT, "zz"),
    (dict(model="echo", version_label="beta"), grpc.StatusCode.INVALID_ARGUMENT, "beta"),
    (dict(model="broken"), grpc.StatusCode.INTERNAL, "exploded"),
])
def test_server_errors_surface_as_genserve_error(client, kwargs, code, text):
    model = kwargs.pop("model")
    with pytest.raises(GenserveError) as info:
        client.predict(model, {"x": np.ones(1, np.float32)}, **kwargs)
    assert info.value.code == code
    assert text in info.value.details
    assert str(info.value).startswith(f"{code.name}: ")
    np.testing.assert_array_equal(client.predict("echo", {"x": np.ones(1)})["x"], [2.0])  # still up


def test_client_side_input_errors(client):
    with pytest.raises(TypeError, match="dict of tensor key"):
        client.predict("echo", [np.ones(1)])
    with pytest.raises(ValueError, match="unsupported dtype"):
        client.predict("echo", {"x": np.zeros(1, "datetime64[s]")})
    with pytest.raises(ValueError, match="either version or version_label"):
        client.predict("echo", {"x": np.ones(1)}, version=1, version_label="stable")


def test_deadline_exceeded(client):
    start = time.monotonic()
    with pytest.raises(GenserveError) as info:
        client.predict("slow", {"x": np.ones(1)}, timeout=0.3)
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - start < 1.5


def test_non_unavailable_errors_are_not_retried(served, client):
    models, _ = served
    before = models.calls.get("broken", 0)
    with pytest.raises(GenserveError):
        client.predict("broken", {"x": np.ones(1)})
    assert models.calls["broken"] == before + 1


def test_unavailable_is_retried_with_backoff(served):
    models, target = served
    models.flaky_failures = models.calls.get("flaky", 0) + 2  # the next two calls fail
    policy = RetryPolicy(max_attempts=4, initial_backoff=0.05)
    with Client(target, timeout=10.0, retry=policy) as c:
        start = time.monotonic()
        out = c.predict("flaky", {"x": np.ones(1, np.float32)})
        elapsed = time.monotonic() - start
    np.testing.assert_array_equal(out["x"], [2.0])
    assert models.calls["flaky"] == models.flaky_failures + 1
    assert elapsed >= 0.05 + 0.1  # waited the two backoffs

    models.flaky_failures = models.calls["flaky"] + 5
    with Client(target, timeout=10.0, retry=RetryPolicy(max_attempts=1)) as c:
        with pytest.raises(GenserveError) as info:
            c.predict("flaky", {"x": np.ones(1)})
    assert info.value.code == grpc.StatusCode.UNAVAILABLE and "1 attempt" in info.value.details


RETRYING_SERVICE_CONFIG = json.dumps({"methodConfig": [{
    "name": [{"service": "tensorflow.serving.PredictionService"}],
    "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.01s", "maxBackoff": "0.01s",
                    "backoffMultiplier": 1, "retryableStatusCodes": ["UNAVAILABLE"]}}]})


@pytest.mark.parametrize("user_options, server_calls", [
    ([], 1),  # gRPC core's retry layer is off: only the Client's RetryPolicy retries
    ([("grpc.enable_retries", 1)], 3),  # a user's option turns it back on
])
def test_grpc_core_retries_are_off_unless_the_user_turns_them_on(served, user_options, server_calls):
    models, target = served
    models.flaky_failures = models.calls.get("flaky", 0) + 10
    before = models.calls.get("flaky", 0)
    options = [("grpc.service_config", RETRYING_SERVICE_CONFIG), *user_options]
    with Client(target, timeout=10.0, retry=RetryPolicy.disabled(), options=options) as c:
        with pytest.raises(GenserveError) as info:
            c.predict("flaky", {"x": np.ones(1, np.float32)})
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert models.calls["flaky"] - before == server_calls


def test_nothing_listening_gives_unavailable_within_the_deadline():
    with Client(f"127.0.0.1:{free_port()}", timeout=1.0) as c:
        start = time.monotonic()
        with pytest.raises(GenserveError) as info:
            c.predict("echo", {"x": np.ones(1)})
        elapsed = time.monotonic() - start
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert "attempt" in info.value.details
    assert elapsed < 2.0  # the retries stay inside the 1 s deadline (plus scheduling slack)


def test_server_that_starts_late_is_reached_by_retries():
    port = free_port()
    models = FakeModels()
    started: list[grpc.Server] = []
    timer = threading.Timer(0.8, lambda: started.append(start_server(models, f"127.0.0.1:{port}")[0]))
    timer.start()
    try:
        policy = RetryPolicy(max_attempts=30, initial_backoff=0.05, max_backoff=0.3)
        with Client(f"127.0.0.1:{port}", timeout=15.0, retry=policy) as c:
            start = time.monotonic()
            out = c.predict("echo", {"x": np.full(3, 2.0, np.float32)})
            elapsed = time.monotonic() - start
        np.testing.assert_array_equal(out["x"], [4.0, 4.0, 4.0])
        assert elapsed >= 0.5
    finally:
        timer.join()
        for server in started:
            server.stop(grace=None)


# --- large messages --------------------------------------------------------------------------------
def test_tensor_larger_than_grpc_default_limit(client):
    image = np.random.default_rng(0).random((1, 1024, 1024, 3), dtype=np.float32) * 255  # 12 MiB
    out = client.predict("echo", {"image": image})
    np.testing.assert_array_equal(out["image"], image * 2)
    assert DEFAULT_MAX_MESSAGE_BYTES > image.nbytes * 2


def test_large_val_field_reply(client):
    """A 1024x1024x3 uint8 reply in int_val is ~5 MiB on the wire, over gRPC's 4 MiB default."""
    pixels = (np.arange(1024 * 1024 * 3) % 251).astype(np.uint8).reshape(1024, 1024, 3)
    out = client.predict("val", {"pixels": pixels // 2})
    np.testing.assert_array_equal(out["pixels"], (pixels // 2) * 2)


def test_small_limit_is_enforced(served):
    with Client(served[1], timeout=10.0, max_message_bytes=1 << 20) as small:
        with pytest.raises(GenserveError) as info:
            small.predict("echo", {"x": np.zeros(2 << 20, np.uint8)})
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_users_channel_option_replaces_genserves(served):
    """gRPC core takes the first value of a repeated channel argument: the user's must be the one."""
    options = [("grpc.max_send_message_length", 1 << 20)]
    with Client(served[1], timeout=10.0, options=options) as small:
        with pytest.raises(GenserveError) as info:
            small.predict("echo", {"x": np.zeros(2 << 20, np.uint8)})
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


# --- metadata and status ---------------------------------------------------------------------------
def test_metadata(client):
    signatures = client.metadata("echo")
    assert set(signatures) == {"double", "serving_default"}
    assert signatures["double"] == SignatureInfo(inputs={"x": ("float32", (None, 3))},
                                                 outputs={"y": ("float32", (None, 3))},
                                                 method_name="tensorflow/serving/predict")
    with pytest.raises(GenserveError) as info:
        client.metadata("nope")
    assert info.value.code == grpc.StatusCode.NOT_FOUND


def test_status(client):
    assert client.status("echo") == [VersionStatus(2, "AVAILABLE"), VersionStatus(1, "END")]
    assert client.status("echo", version=1) == [(1, "END")]
    with pytest.raises(GenserveError) as info:
        client.status("echo", version=5)
    assert info.value.code == grpc.StatusCode.NOT_FOUND


# --- no TensorFlow in the thin client --------------------------------------------------------------
def test_client_import_does_not_import_tensorflow():
    code = (
        "import sys\n"
        "import genserve.clients\n"
        "from genserve.clients import Client, GenserveError\n"
        "import genserve.wire.codec, genserve.clients.channel, genserve.clients.pinned, genserve.clients.images\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'tensorflow_serving', 'keras', 'tf_keras'))\n"
        "print(len(heavy), heavy[:5])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("0 []"), result.stdout
