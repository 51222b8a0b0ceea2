"""genserve.serving.health on a real gRPC server (port 0) through the standard health stub.

    .venv/bin/python -m pytest tests/test_health.py -q
"""

from __future__ import annotations

import queue
import threading
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from genserve.serving.health import NOT_SERVING, SERVICES, SERVING, Health, models_ready


@pytest.fixture
def served():
    """(Health, HealthStub) over a real server on a free loopback port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health = Health()
    health.add_to_server(server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield health, health_pb2_grpc.HealthStub(channel)
    finally:
        channel.close()
        server.stop(None)


def _check(stub, service: str):
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def _all(stub) -> set:
    return {_check(stub, s) for s in SERVICES}


def test_not_serving_until_every_model_has_an_available_version(served):
    health, stub = served
    assert _all(stub) == {NOT_SERVING} and not health.ready
    assert not health.update(["toy", "vae"], {"toy": [2], "vae": []})  # vae still loading
    assert _all(stub) == {NOT_SERVING}
    assert health.update(["toy", "vae"], {"toy": [2], "vae": [1]})
    assert _all(stub) == {SERVING}
    # A model removed from disk (or a new one configured and not yet loaded) turns it back.
    assert not health.update(["toy", "vae", "text"], {"toy": [2], "vae": [1]})
    assert _all(stub) == {NOT_SERVING}


def test_registered_names_cover_tf_serving_and_fully_qualified(served):
    """TF Serving registers "", "ModelService", "PredictionService" (server.cc); probes written for it
    work here, and so do the fully qualified service names."""
    health, stub = served
    health.set_ready(True)
    for service in ("", "PredictionService", "ModelService", "tensorflow.serving.PredictionService",
                    "tensorflow.serving.ModelService"):
        assert _check(stub, service) == SERVING, service
    with pytest.raises(grpc.RpcError) as e:
        _check(stub, "tensorflow.serving.NoSuchService")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_drain_is_not_serving_for_good(served):
    health, stub = served
    health.set_ready(True)
    assert _all(stub) == {SERVING}
    health.start_drain()
    assert _all(stub) == {NOT_SERVING} and health.draining and not health.ready
    health.set_ready(True)  # a late poll must not undo the drain
    assert _all(stub) == {NOT_SERVING}


def test_watch_sees_each_change(served):
    """A client-side health checker (gRPC's Watch stream) learns of the drain without polling."""
    health, stub = served
    seen: queue.Queue = queue.Queue()
    call = stub.Watch(health_pb2.HealthCheckRequest(service="tensorflow.serving.PredictionService"),
                      timeout=30)

    def read():
        try:
            for response in call:
                seen.put(response.status)
        except grpc.RpcError:
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert seen.get(timeout=10) == NOT_SERVING
    health.set_ready(True)
    assert seen.get(timeout=10) == SERVING
    health.start_drain()
    assert seen.get(timeout=10) == NOT_SERVING
    call.cancel()
    reader.join(timeout=10)


def test_watch_sees_changes_only(served):
    """gRPC's health protocol: after the current status, Watch sends a message when the status
    changes. A registry poll that finds the models still available says nothing new, so a Watch must
    see the drain as the very next message (a repeated SERVING there made test_replicas' drain test
    flaky)."""
    health, stub = served
    health.set_ready(True)
    call = stub.Watch(health_pb2.HealthCheckRequest(service="tensorflow.serving.PredictionService"),
                      timeout=30)
    try:
        assert next(call).status == SERVING
        for _ in range(3):  # three polls, nothing changed
            assert health.update(["toy"], {"toy": [1]})
        health.start_drain()
        assert next(call).status == NOT_SERVING
    finally:
        call.cancel()


def test_models_ready():
    assert not models_ready([], {})  # nothing to serve is not ready
    assert models_ready(["a"], {"a": iter([1])})
    assert not models_ready(["a", "b"], {"a": [1]})
