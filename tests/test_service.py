"""The serving core without a socket, and the isolation it gives the front ends (issue 16).

    .venv/bin/python -m pytest tests/test_service.py -q
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import grpc
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from conftest import wait_until  # noqa: E402
from genserve.serving.errors import ServingError  # noqa: E402
from genserve.serving.options import ServerOptions  # noqa: E402
from genserve.serving.registry import ModelRegistry  # noqa: E402
from genserve.serving.rest_api import RestApi  # noqa: E402
from genserve.serving.server import ModelServer  # noqa: E402
from genserve.serving.service import ModelService  # noqa: E402


@pytest.fixture(scope="module")
def service(toy_models_dir):
    registry = ModelRegistry(toy_models_dir)
    registry.refresh(strict=True)
    service = ModelService(registry, ServerOptions())
    yield service
    service.shutdown()


def _toy_request(version: int | None = None) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "toy"
    if version is not None:
        request.model_spec.version.value = version
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1.0]], np.float32)))
    return request


def test_predict_metadata_status_without_a_socket(service):
    response = asyncio.run(service.predict(_toy_request(1)))
    assert response.model_spec.version.value == 1
    assert tf.make_ndarray(response.outputs["y"])[0, 0] == 3.0  # 2 * 1 + bias 1
    assert asyncio.run(service.predict(_toy_request())).model_spec.version.value == 2  # latest
    meta = service.metadata(service.spec("toy", 1))
    assert meta.model_spec.version.value == 1 and meta.metadata["signature_def"].value
    assert [s.version for s in service.status(service.spec("toy")).model_version_status] == [1, 2]
    with pytest.raises(ServingError) as err:
        service.resolve(service.spec("nope"))
    assert err.value.code == "NOT_FOUND"
    with pytest.raises(ServingError) as err:
        service.metadata(service.spec("toy"), ["nope"])
    assert err.value.code == "INVALID_ARGUMENT"


def test_rest_resolves_the_version_once(service, monkeypatch):
    """A version swap between reading the dtypes and running must not move the run to the new version:
    the first resolve answers version 1, any later one version 2 (bias 2 would give y = 4)."""
    calls = []
    resolve = service.registry.resolve

    def swapping(name, version=None, label=None):
        calls.append((name, version, label))
        return resolve(name, 1 if len(calls) == 1 else 2)

    monkeypatch.setattr(service.registry, "resolve", swapping)
    status, text, *_ = asyncio.run(RestApi(service).process(
        "POST", "/v1/models/toy:predict", b'{"instances": [[1.0]]}'))
    assert status == 200, text
    assert json.loads(text) == {"predictions": [{"wx": [2.0], "y": [3.0]}]}
    assert len(calls) == 1


def test_closing_refuses_every_call(toy_models_dir):
    registry = ModelRegistry(toy_models_dir)
    registry.refresh(strict=True)
    service = ModelService(registry, ServerOptions())
    service.close()
    for call in (lambda: asyncio.run(service.predict(_toy_request())),
                 lambda: service.metadata(service.spec("toy")), lambda: service.status(service.spec("toy"))):
        with pytest.raises(ServingError) as err:
            call()
        assert err.value.code == "UNAVAILABLE"
    service.shutdown()


def _wait_request(model: str) -> predict_pb2.PredictRequest:
    request = _toy_request()
    request.model_spec.name = model
    request.model_spec.signature_name = "wait"
    return request


def test_a_flood_on_two_models_leaves_a_third_fast(blocking_models_dir):
    """Flood `dream` and `text` each to their admission limit with requests that block until their
    deadline: a toy Predict still answers at once, and one request more for `dream` is refused at
    once with UNAVAILABLE. (With handlers blocking on one shared pool of 8 threads, as before, toy
    waited for the flood's deadline.)"""
    limit = 2 + 3  # max_concurrent + max_queue
    with ModelServer(blocking_models_dir, poll_seconds=0, max_concurrent=2, max_queue=3,
                     max_workers=8) as srv, grpc.insecure_channel(srv.target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        stub.Predict(_toy_request(), timeout=30)  # connected and warm
        codes = []

        def flood(model):
            try:
                stub.Predict(_wait_request(model), timeout=6)
            except grpc.RpcError as e:
                codes.append(e.code())

        threads = [threading.Thread(target=flood, args=(m,)) for m in ("dream", "text") for _ in range(limit)]
        for thread in threads:
            thread.start()
        wait_until(lambda: srv.service.inflight == 2 * limit, 5, "the flood to be admitted")
        start = time.monotonic()
        assert tf.make_ndarray(stub.Predict(_toy_request(), timeout=5).outputs["y"])[0, 0] == 3.0
        toy_seconds = time.monotonic() - start
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(_wait_request("dream"), timeout=5)
        refused_seconds = time.monotonic() - start
        for thread in threads:
            thread.join(30)
    assert toy_seconds < 1.0, f"toy waited {toy_seconds:.2f} s behind the flood"
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "server busy" in err.value.details()
    assert refused_seconds < 1.0
    assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * (2 * limit)


def test_stop_refuses_at_once_and_drains_both_front_ends_together(blocking_models_dir):
    """A REST and a gRPC request in flight, stop(grace=1.5): a new request is refused during the
    drain, and stop returns after one grace period, not two."""
    import urllib.error
    import urllib.request

    srv = ModelServer(blocking_models_dir, poll_seconds=0, rest_port=0, max_request_seconds=60)
    srv.start()
    channel = grpc.insecure_channel(srv.target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def grpc_call():
        try:
            stub.Predict(_wait_request("text"), timeout=60)
        except grpc.RpcError:
            pass

    def rest_call():
        body = json.dumps({"signature_name": "wait", "instances": [[1.0]]}).encode()
        try:
            urllib.request.urlopen(f"http://{srv.rest_target}/v1/models/dream:predict", body, timeout=60)
        except (urllib.error.URLError, OSError):
            pass

    threads = [threading.Thread(target=grpc_call), threading.Thread(target=rest_call)]
    for thread in threads:
        thread.start()
    wait_until(lambda: srv.service.inflight == 2, 10, "both requests in flight")
    stopper = threading.Thread(target=srv.stop, args=(1.5,))
    start = time.monotonic()
    stopper.start()
    wait_until(lambda: srv.service.closing, 2, "the drain to start")
    with pytest.raises(grpc.RpcError) as err:  # the gRPC port may already be closed: refused either way
        stub.Predict(_toy_request(), timeout=5)
    refused = time.monotonic() - start
    stopper.join(30)
    took = time.monotonic() - start
    channel.close()
    for thread in threads:
        thread.join(30)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and refused < 1.0
    assert 1.4 < took < 2.8, f"stop took {took:.2f} s for a 1.5 s drain"
