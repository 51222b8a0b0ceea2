"""The embedded TF-Serving-compatible server, queried over real gRPC on 127.0.0.1 (port 0) with Google's
own `tensorflow_serving.apis` stubs and with genserve's thin client.

    .venv/bin/python -m pytest tests/test_server.py -q
"""

from __future__ import annotations

import shutil
import threading
import time

import grpc
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tensorflow.core.framework.tensor_pb2 import TensorProto  # noqa: E402

from genserve.clients import Client, GenserveError  # noqa: E402
from genserve.serving.server import ModelServer, serve  # noqa: E402

X = np.array([[1.0], [2.5]], np.float32)  # (2, 1)
TIMEOUT = 10.0


@pytest.fixture(scope="module")
def channel(toy_server):
    with grpc.insecure_channel(toy_server) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def predict_request(inputs=None, model="toy", signature="", version=None, label=None, output_filter=()):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    for key, value in ({"x": X} if inputs is None else inputs).items():
        request.inputs[key].CopyFrom(value if isinstance(value, TensorProto)
                                     else tf.make_tensor_proto(value))
    request.output_filter.extend(output_filter)
    return request


def outputs(response) -> dict[str, np.ndarray]:
    return {key: tf.make_ndarray(value) for key, value in response.outputs.items()}


# ----------------------------------------------------------------------------------------------------
# Predict
# ----------------------------------------------------------------------------------------------------
def test_predict_with_google_stub_serves_latest(stub):
    response = stub.Predict(predict_request(), timeout=TIMEOUT)
    assert response.model_spec.name == "toy"
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"
    out = outputs(response)
    assert set(out) == {"y", "wx"}
    np.testing.assert_allclose(out["y"], 2 * X + 2)
    np.testing.assert_allclose(out["wx"], 2 * X)


def test_predict_named_signature_two_inputs(stub):
    inputs = {"x": X, "factor": np.array([2, -1], np.int32)}
    response = stub.Predict(predict_request(inputs, signature="scale"), timeout=TIMEOUT)
    assert response.model_spec.signature_name == "scale"
    np.testing.assert_allclose(outputs(response)["y"], [[4.0], [-5.0]])


def test_predict_with_genserve_client(toy_server):
    with Client(toy_server, timeout=TIMEOUT) as client:
        x = np.arange(6, dtype=np.float32).reshape(6, 1)  # (6, 1)
        out = client.predict("toy", {"x": x})
        np.testing.assert_allclose(out["y"], 2 * x + 2)
        out = client.predict("toy", {"x": x[:1], "factor": np.array([3], np.int32)}, signature="scale")
        np.testing.assert_allclose(out["y"], [[0.0]])
        out = client.predict("toy", {"x": X}, version=1, signature="affine")
        np.testing.assert_allclose(out["y"], 2 * X + 1)


def test_output_filter(stub, toy_server):
    response = stub.Predict(predict_request(output_filter=["wx"]), timeout=TIMEOUT)
    assert list(response.outputs) == ["wx"]
    np.testing.assert_allclose(outputs(response)["wx"], 2 * X)
    with Client(toy_server, timeout=TIMEOUT) as client:
        assert set(client.predict("toy", {"x": X}, output_filter=["y"])) == {"y"}


def test_version_pinning(stub):
    for version, bias in ((1, 1.0), (2, 2.0)):
        response = stub.Predict(predict_request(version=version), timeout=TIMEOUT)
        assert response.model_spec.version.value == version
        np.testing.assert_allclose(outputs(response)["y"], 2 * X + bias)


def test_large_tensor_within_message_limit(toy_server):
    x = np.random.default_rng(0).random((1024 * 1024 * 3, 1), dtype=np.float32)  # 12 MiB, > gRPC's 4 MiB
    with Client(toy_server, timeout=60) as client:
        out = client.predict("toy", {"x": x}, output_filter=["wx"])
    np.testing.assert_allclose(out["wx"], 2 * x)


def test_concurrent_requests(toy_server):
    errors, done = [], []

    def worker(seed):
        rng = np.random.default_rng(seed)
        with Client(toy_server, timeout=TIMEOUT) as client:
            for _ in range(15):
                x = rng.random((int(rng.integers(1, 9)), 1), dtype=np.float32)
                try:
                    np.testing.assert_allclose(client.predict("toy", {"x": x})["y"], 2 * x + 2, rtol=1e-6)
                    done.append(1)
                except Exception as e:  # collected and asserted below
                    errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(done) == 90


# ----------------------------------------------------------------------------------------------------
# Metadata and status
# ----------------------------------------------------------------------------------------------------
def test_metadata_with_google_stub(stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "toy"
    response = stub.GetModelMetadata(request, timeout=TIMEOUT)
    assert response.model_spec.version.value == 2
    packed = response.metadata["signature_def"]
    assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    assert packed.Unpack(sig_map)
    assert set(sig_map.signature_def) == {"serving_default", "affine", "scale"}
    scale = sig_map.signature_def["scale"]
    assert scale.method_name == "tensorflow/serving/predict"
    assert scale.inputs["factor"].dtype == tf.int32.as_datatype_enum
    assert [d.size for d in scale.inputs["x"].tensor_shape.dim] == [-1, 1]
    assert set(sig_map.signature_def["serving_default"].outputs) == {"y", "wx"}


def test_metadata_and_status_with_genserve_client(toy_server):
    with Client(toy_server, timeout=TIMEOUT) as client:
        sigs = client.metadata("toy")
        assert sigs["scale"].inputs == {"x": ("float32", (None, 1)), "factor": ("int32", (None,))}
        assert sigs["affine"].outputs == {"y": ("float32", (None, 1)), "wx": ("float32", (None, 1))}
        assert set(client.metadata("toy", version=1)) == {"serving_default", "affine", "scale"}
        states = client.status("toy")
        assert (2, "AVAILABLE") in states
        assert client.status("toy", version=1) == [(1, "AVAILABLE")]


def test_status_with_google_stub(model_stub):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "toy"
    request.model_spec.version.value = 2
    response = model_stub.GetModelStatus(request, timeout=TIMEOUT)
    (status,) = response.model_version_status
    assert status.version == 2
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status.status.error_code == 0


# ----------------------------------------------------------------------------------------------------
# Bad requests: the status code, the message, and the server still answering afterwards.
# ----------------------------------------------------------------------------------------------------
def _bad_tensor_content():
    proto = tf.make_tensor_proto(np.zeros((2, 1), np.float32))
    proto.tensor_content = b"\x00" * 5  # 5 bytes for a float32[2,1]
    return proto


def _unknown_rank():
    proto = tf.make_tensor_proto(np.zeros((2, 1), np.float32))
    proto.tensor_shape.unknown_rank = True
    proto.tensor_shape.ClearField("dim")
    return proto


def _metadata(fields, model="toy"):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=fields)
    request.model_spec.name = model
    return request


INT = np.array([[1], [2]], np.int32)
BAD_PREDICTS = {
    "unknown model": (dict(model="nope"), grpc.StatusCode.NOT_FOUND, "Latest(nope)"),
    "unknown version": (dict(version=7), grpc.StatusCode.NOT_FOUND, "Specific(toy, 7)"),
    "version zero": (dict(version=0), grpc.StatusCode.NOT_FOUND, "Specific(toy, 0)"),
    "unknown version label": (dict(label="stable"), grpc.StatusCode.INVALID_ARGUMENT,
                              "Unrecognized servable version label: stable"),
    "unknown signature": (dict(signature="decode"), grpc.StatusCode.INVALID_ARGUMENT,
                          '"decode" not found'),
    "missing input": (dict(signature="scale"), grpc.StatusCode.INVALID_ARGUMENT,
                      "missing input 'factor'"),
    "extra input": (dict(inputs={"x": X, "z": X}), grpc.StatusCode.INVALID_ARGUMENT,
                    "unexpected input 'z'"),
    "wrong input key": (dict(inputs={"X": X}), grpc.StatusCode.INVALID_ARGUMENT,
                        "missing input 'x'; unexpected input 'X'"),
    "wrong dtype": (dict(inputs={"x": INT}), grpc.StatusCode.INVALID_ARGUMENT,
                    "input 'x': expected float32[?,1], got int32[2,1]"),
    "float64 for float32": (dict(inputs={"x": X.astype(np.float64)}), grpc.StatusCode.INVALID_ARGUMENT,
                            "expected float32[?,1], got float64[2,1]"),
    "string tensor": (dict(inputs={"x": np.array([[b"a"]])}), grpc.StatusCode.INVALID_ARGUMENT,
                      "got string[1,1]"),
    "wrong rank": (dict(inputs={"x": np.ones(3, np.float32)}), grpc.StatusCode.INVALID_ARGUMENT,
                   "input 'x': expected float32[?,1], got float32[3]"),
    "wrong dimension": (dict(inputs={"x": np.ones((2, 3), np.float32)}),
                        grpc.StatusCode.INVALID_ARGUMENT, "got float32[2,3]"),
    "second input wrong dtype": (dict(signature="scale", inputs={"x": X, "factor": np.ones(2, np.int64)}),
                                 grpc.StatusCode.INVALID_ARGUMENT,
                                 "input 'factor': expected int32[?], got int64[2]"),
    "unknown rank": (dict(inputs={"x": _unknown_rank()}), grpc.StatusCode.INVALID_ARGUMENT,
                     "unknown rank"),
    "undecodable tensor": (dict(inputs={"x": _bad_tensor_content()}), grpc.StatusCode.INVALID_ARGUMENT,
                           "input 'x': cannot decode"),
    "unknown output_filter key": (dict(output_filter=["z"]), grpc.StatusCode.INVALID_ARGUMENT,
                                  "output_filter: 'z' is not an output"),
    "duplicate output_filter key": (dict(output_filter=["y", "wx", "y"]), grpc.StatusCode.INVALID_ARGUMENT,
                                    "output_filter: duplicate output tensor alias 'y'"),
    "graph error (batch mismatch)": (dict(signature="scale",
                                          inputs={"x": X, "factor": np.ones(3, np.int32)}),
                                     grpc.StatusCode.INVALID_ARGUMENT,
                                     "signature 'scale' failed: Incompatible shapes: [3,1] vs. [2,1]"),
}


@pytest.mark.parametrize("case", list(BAD_PREDICTS))
def test_bad_predict(stub, case):
    kwargs, code, message = BAD_PREDICTS[case]
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(predict_request(**kwargs), timeout=TIMEOUT)
    assert err.value.code() == code, err.value.details()
    assert message in err.value.details()
    good = stub.Predict(predict_request(), timeout=TIMEOUT)  # the server still answers
    np.testing.assert_allclose(outputs(good)["y"], 2 * X + 2)


@pytest.mark.parametrize("fields, model, code, message", [
    ([], "toy", grpc.StatusCode.INVALID_ARGUMENT, "at least one metadata_field"),
    (["signature_def", "graph"], "toy", grpc.StatusCode.INVALID_ARGUMENT, "graph is not supported"),
    (["signature_def"], "nope", grpc.StatusCode.NOT_FOUND, "Latest(nope)"),
])
def test_bad_metadata(stub, fields, model, code, message):
    with pytest.raises(grpc.RpcError) as err:
        stub.GetModelMetadata(_metadata(fields, model), timeout=TIMEOUT)
    assert err.value.code() == code and message in err.value.details()
    assert stub.GetModelMetadata(_metadata(["signature_def"]), timeout=TIMEOUT).model_spec.name == "toy"


def test_bad_status_and_unimplemented(stub, model_stub, toy_server):
    for name, version in (("nope", None), ("toy", 9)):
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        if version is not None:
            request.model_spec.version.value = version
        with pytest.raises(grpc.RpcError) as err:
            model_stub.GetModelStatus(request, timeout=TIMEOUT)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        stub.Classify(classification_pb2.ClassificationRequest(), timeout=TIMEOUT)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with Client(toy_server, timeout=TIMEOUT) as client:  # the genserve client sees the same codes
        with pytest.raises(GenserveError) as gerr:
            client.predict("toy", {"x": INT})
        assert gerr.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "expected float32[?,1], got int32[2,1]" in gerr.value.details
        with pytest.raises(GenserveError) as gerr:
            client.predict("toy", {"x": X}, version=5)
        assert gerr.value.code == grpc.StatusCode.NOT_FOUND
        np.testing.assert_allclose(client.predict("toy", {"x": X})["y"], 2 * X + 2)


def test_garbage_bytes_on_the_wire(channel, stub):
    raw = channel.unary_unary("/tensorflow.serving.PredictionService/Predict",
                              request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as err:
        raw(b"\xff\xff\xff\xff not a protobuf", timeout=TIMEOUT)
    assert err.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
    assert stub.Predict(predict_request(), timeout=TIMEOUT).model_spec.version.value == 2


# ----------------------------------------------------------------------------------------------------
# Versions appearing, labels, removal (each on a private copy of the models directory).
# ----------------------------------------------------------------------------------------------------
def _wait_for(predicate, timeout=30.0, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return False


def test_new_version_picked_up_without_dropping_requests(toy_models_copy):
    from genserve.export.toy import ToyConfig, export_toy

    with serve(toy_models_copy, poll_seconds=0.2) as target, Client(target, timeout=TIMEOUT) as client:
        seen, errors, stop = [], [], threading.Event()

        def hammer():
            while not stop.is_set():
                try:
                    response = client.predict_response("toy", {"x": X})
                    version = response.model_spec.version.value
                    y = client.predict("toy", {"x": X}, version=version)["y"]
                    np.testing.assert_allclose(y, 2 * X + {1: 1, 2: 2, 3: 3}[version])
                    seen.append(version)
                except Exception as e:  # asserted below
                    errors.append(e)

        thread = threading.Thread(target=hammer)
        thread.start()
        try:
            assert _wait_for(lambda: len(seen) > 5)
            export_toy(toy_models_copy, ToyConfig(bias=3.0))  # version 3 appears while serving
            assert _wait_for(lambda: seen and seen[-1] == 3), "version 3 was never served"
        finally:
            stop.set()
            thread.join(30)
        assert not errors, errors[:3]
        assert seen[0] == 2 and set(seen) == {2, 3}
        assert seen.index(3) > 0 and 2 not in seen[seen.index(3):]  # a clean switch, no flapping
        assert client.status("toy", version=3) == [(3, "AVAILABLE")]
        # Versions 1 and 2 stay servable while on disk; a deleted version is gone after a poll.
        np.testing.assert_allclose(client.predict("toy", {"x": X}, version=1)["y"], 2 * X + 1)
        shutil.rmtree(toy_models_copy / "toy" / "1")

        def gone():
            try:
                client.predict("toy", {"x": X}, version=1)
            except GenserveError as e:
                return e.code == grpc.StatusCode.NOT_FOUND
            return False

        assert _wait_for(gone)


def test_version_labels_from_models_config(toy_models_copy):
    from genserve.repository import set_version_labels

    set_version_labels(toy_models_copy, "toy", {"stable": 1, "canary": 2})
    with serve(toy_models_copy, poll_seconds=0.2) as target, Client(target, timeout=TIMEOUT) as client:
        for label, bias in (("stable", 1), ("canary", 2)):
            response = client.predict_response("toy", {"x": X}, version_label=label)
            assert response.model_spec.version.value == bias
        with pytest.raises(GenserveError) as err:
            client.predict("toy", {"x": X}, version_label="beta")
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "Unrecognized servable version label: beta" in err.value.details
        # Moving a label is a config change picked up by the next poll.
        set_version_labels(toy_models_copy, "toy", {"stable": 2})
        assert _wait_for(lambda: client.predict_response(
            "toy", {"x": X}, version_label="stable").model_spec.version.value == 2)


def test_server_start_errors_and_models_config_selection(toy_models_copy, tmp_path):
    from genserve.repository import set_version_policy

    set_version_policy(toy_models_copy, "toy", ("latest", 1))  # TF Serving's default: latest only
    with pytest.raises(FileNotFoundError):
        ModelServer(tmp_path / "missing").start()
    # models.config decides what is served: a model folder not listed there is not served.
    shutil.copytree(toy_models_copy / "toy", toy_models_copy / "hidden")
    with ModelServer(toy_models_copy, poll_seconds=0) as server:
        assert server.loaded_versions() == {"toy": [2]}
        with Client(server.target, timeout=TIMEOUT) as client:
            with pytest.raises(GenserveError) as err:
                client.predict("hidden", {"x": X})
            assert err.value.code == grpc.StatusCode.NOT_FOUND
    # Without models.config, every folder with a version is served.
    (toy_models_copy / "models.config").unlink()
    with ModelServer(toy_models_copy, poll_seconds=0) as server:
        assert server.loaded_versions() == {"hidden": [2], "toy": [2]}
    # A port already taken is an error, not a silently shared socket.
    with ModelServer(toy_models_copy, poll_seconds=0) as first:
        with pytest.raises(OSError):
            ModelServer(toy_models_copy, port=first.port, poll_seconds=0).start()


def test_broken_latest_version_keeps_previous(toy_models_copy, caplog):
    from genserve.repository import set_version_policy

    set_version_policy(toy_models_copy, "toy", ("latest", 1))
    broken = toy_models_copy / "toy" / "3"
    shutil.copytree(toy_models_copy / "toy" / "2", broken)
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    with caplog.at_level("INFO", logger="genserve.serving"):
        with ModelServer(toy_models_copy, poll_seconds=0) as server:
            assert server.loaded_versions() == {"toy": [2]}
            with Client(server.target, timeout=TIMEOUT) as client:
                assert client.predict_response("toy", {"x": X}).model_spec.version.value == 2
    assert any("version 3" in r.getMessage() and "failed to load" in r.getMessage() for r in caplog.records)
    assert any("loaded model toy version 2" in r.getMessage() for r in caplog.records)


def test_latest_policy_serves_only_the_newest_and_unloads_the_old(toy_models_copy):
    """TF Serving's default version policy: only the latest version is served; a request for an older
    version on disk answers NOT_FOUND (nothing is loaded on demand), and a newer version replaces it."""
    from genserve.export.toy import ToyConfig, export_toy
    from genserve.repository import set_version_policy

    set_version_policy(toy_models_copy, "toy", ("latest", 1))
    with serve(toy_models_copy, poll_seconds=0.2) as target, Client(target, timeout=TIMEOUT) as client:
        assert client.status("toy") == [(2, "AVAILABLE")]
        with pytest.raises(GenserveError) as err:
            client.predict("toy", {"x": X}, version=1)
        assert err.value.code == grpc.StatusCode.NOT_FOUND and "Specific(toy, 1)" in err.value.details
        export_toy(toy_models_copy, ToyConfig(bias=3.0))
        assert _wait_for(lambda: client.status("toy", version=3) == [(3, "AVAILABLE")]
                         if 3 in {v for v, _ in client.status("toy")} else False)
        assert _wait_for(lambda: dict(client.status("toy")).get(2) == "END")
        with pytest.raises(GenserveError) as err:
            client.predict("toy", {"x": X}, version=2)
        assert err.value.code == grpc.StatusCode.NOT_FOUND


def test_failed_version_is_retried_and_reported(toy_models_copy):
    """A version caught mid-copy fails to load, shows as END with the error in GetModelStatus, and is
    served once the copy is complete (retried on later polls)."""
    from genserve.repository import set_version_policy

    set_version_policy(toy_models_copy, "toy", ("latest", 1))
    half = toy_models_copy / "toy" / "3"
    shutil.copytree(toy_models_copy / "toy" / "2", half)
    good = (half / "saved_model.pb").read_bytes()
    (half / "saved_model.pb").write_bytes(good[: len(good) // 2])  # a copy in progress
    with serve(toy_models_copy, poll_seconds=0.2) as target, Client(target, timeout=TIMEOUT) as client:
        statuses = dict(client.status("toy"))
        assert statuses == {2: "AVAILABLE", 3: "END"}
        from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

        with grpc.insecure_channel(target) as channel:
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = "toy"
            request.model_spec.version.value = 3
            status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                request, timeout=TIMEOUT).model_version_status[0]
            assert status.state == get_model_status_pb2.ModelVersionStatus.END
            assert status.status.error_code != 0 and "saved_model.pb" in status.status.error_message
        (half / "saved_model.pb").write_bytes(good)  # the copy completes
        assert _wait_for(lambda: client.predict_response("toy", {"x": X}).model_spec.version.value == 3,
                         timeout=20)
