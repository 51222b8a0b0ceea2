"""Server-side batching (genserve/serving/batching.py) against real embedded servers on port 0.

    .venv/bin/python -m pytest tests/test_batching.py -q

Concurrent requests from threads are merged into one Session run (counted by the version's Batcher),
answered exactly as an unbatched server answers them; requests that differ past dim 0 or in their
output_filter are never merged; padding to allowed_batch_sizes, the task-size limit, a full queue and
expired deadlines answer as TF Serving's batching session does; models without batching_params.pbtxt
are never batched.
"""

from __future__ import annotations

import shutil
import threading

import grpc
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from genserve.clients import Client, GenserveError, RetryPolicy  # noqa: E402
from genserve.repository import BATCHING_PARAMS_FILE  # noqa: E402
from genserve.serving.batching import BatchingParams, Batcher, read_batching_params  # noqa: E402
from genserve.serving.errors import ServingError  # noqa: E402
from genserve.serving.server import ModelServer  # noqa: E402

TIMEOUT = 20.0


def _set_params(models_dir, name: str, text: str | None) -> None:
    for version_dir in (models_dir / name).iterdir():
        if version_dir.name.isdigit():
            path = version_dir / BATCHING_PARAMS_FILE
            if text is None:
                path.unlink()
            else:
                path.write_text(text)


def _concurrently(fns):
    """Run the callables at the same moment in threads; their results (or exceptions) in order."""
    barrier = threading.Barrier(len(fns))
    results = [None] * len(fns)

    def call(i, fn):
        barrier.wait()
        try:
            results[i] = fn()
        except Exception as e:  # noqa: BLE001 (returned to the test)
            results[i] = e

    threads = [threading.Thread(target=call, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    return results


@pytest.fixture
def batched_toy(toy_models_copy):
    """toy versions 1 and 2 with batching params that make merging certain (a 0.5 s window)."""
    _set_params(toy_models_copy, "toy", "max_batch_size { value: 8 }\nbatch_timeout_micros { value: 500000 }\n"
                                        "max_enqueued_batches { value: 4 }\nnum_batch_threads { value: 1 }\n"
                                        "allowed_batch_sizes: [2, 4, 8]\n")
    return toy_models_copy


def test_concurrent_requests_are_merged_and_answered_as_unbatched(batched_toy):
    xs = [np.array([[float(i)]], np.float32) for i in range(6)]  # (1, 1) each
    with ModelServer(batched_toy, poll_seconds=0, enable_batching=False) as plain, \
            Client(plain.target, timeout=TIMEOUT) as client:
        expected = [client.predict("toy", {"x": x}) for x in xs]
        filtered_expected = client.predict("toy", {"x": xs[0]}, output_filter=["y"])
    with ModelServer(batched_toy, poll_seconds=0, enable_batching=True) as server, \
            Client(server.target, timeout=TIMEOUT) as client:
        batcher = server.registry.resolve("toy").extras["batcher"]
        assert server.registry.resolve("toy", 1).extras["batcher"] is not batcher  # one per version
        calls = [lambda x=x: client.predict("toy", {"x": x}) for x in xs]
        calls += [lambda: client.predict("toy", {"x": xs[0]}, output_filter=["y"])] * 2
        results = _concurrently(calls)
        for got, want in zip(results[:6], expected):
            assert set(got) == set(want) == {"y", "wx"}
            for key in want:
                np.testing.assert_array_equal(got[key], want[key])  # bit-identical to unbatched
        for got in results[6:]:  # another output_filter: its own queue (TF Serving keys queues so)
            assert set(got) == {"y"}
            np.testing.assert_array_equal(got["y"], filtered_expected["y"])
        assert batcher.tasks == 8
        assert batcher.runs <= 3 < batcher.tasks  # merged: 6 plain requests in one run, 2 filtered in one


def test_padding_task_limit_and_queue_full(batched_toy):
    with ModelServer(batched_toy, poll_seconds=0, enable_batching=True) as server, \
            grpc.insecure_channel(server.target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        batcher = server.registry.resolve("toy").extras["batcher"]

        def request(rows: int):
            req = predict_pb2.PredictRequest()
            req.model_spec.name = "toy"
            req.inputs["x"].CopyFrom(tf.make_tensor_proto(np.arange(rows, dtype=np.float32)[:, None]))
            return req

        # 3 rows alone: padded to 4 (allowed_batch_sizes), 3 rows back.
        reply = stub.Predict(request(3), timeout=TIMEOUT)
        np.testing.assert_allclose(tf.make_ndarray(reply.outputs["y"])[:, 0], 2 * np.arange(3) + 2.0)
        assert (batcher.runs, batcher.padded_rows) == (1, 1)

        # More rows than max_batch_size: TF Serving's message and code.
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(request(9), timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Task size 9 is larger than maximum input batch size 8" in info.value.details()

    # Queue full: one enqueued batch allowed; a task that does not fit the open batch is refused.
    _set_params(batched_toy, "toy", "max_batch_size { value: 2 }\nbatch_timeout_micros { value: 1500000 }\n"
                                    "max_enqueued_batches { value: 1 }\n")
    with ModelServer(batched_toy, poll_seconds=0, enable_batching=True) as server, \
            Client(server.target, timeout=TIMEOUT, retry=RetryPolicy.disabled()) as client:
        first = {}
        thread = threading.Thread(target=lambda: first.update(
            client.predict("toy", {"x": np.ones((1, 1), np.float32)})))
        thread.start()
        batcher = server.registry.resolve("toy").extras["batcher"]
        while not batcher._queues:  # the first task waits in the open batch for 1.5 s
            threading.Event().wait(0.01)
        with pytest.raises(GenserveError) as info:
            client.predict("toy", {"x": np.ones((2, 1), np.float32)})
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
        assert "The batch scheduling queue to which this task was submitted is full" in info.value.details
        thread.join(TIMEOUT)
        np.testing.assert_allclose(first["y"], [[4.0]])  # the queued one still ran (version 2: b = 2)


@pytest.fixture(scope="module")
def echo_models_dir(tmp_path_factory):
    """A model whose input has a free trailing dimension: y = w * x, x float32 (B, N)."""
    from genserve.export.writer import save_version

    class Echo(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(3.0)

        @tf.function(input_signature=[tf.TensorSpec((None, None), tf.float32, name="x")])
        def echo(self, x):  # x: (B, N)
            return {"y": self.w * x}

    root = tmp_path_factory.mktemp("echo_models")
    module = Echo()
    save_version(module, root, "echo", {"echo": module.echo.get_concrete_function()}, default="echo",
                 version=1, batching="max_batch_size { value: 16 }\nbatch_timeout_micros { value: 500000 }\n")
    return root


def test_mixed_trailing_shapes_are_not_merged(echo_models_dir):
    with ModelServer(echo_models_dir, poll_seconds=0, enable_batching=True) as server, \
            Client(server.target, timeout=TIMEOUT) as client:
        batcher = server.registry.resolve("echo").extras["batcher"]
        xs = [np.full((1, 3), 1.0, np.float32), np.full((2, 3), 2.0, np.float32),
              np.full((1, 5), 3.0, np.float32), np.full((1, 5), 4.0, np.float32)]
        results = _concurrently([lambda x=x: client.predict("echo", {"x": x}) for x in xs])
        for x, got in zip(xs, results):
            np.testing.assert_array_equal(got["y"], 3.0 * x)
        assert (batcher.tasks, batcher.runs) == (4, 2)  # (B, 3) together, (B, 5) together


def test_models_without_the_file_or_with_batching_off_are_not_batched(toy_models_copy):
    with ModelServer(toy_models_copy, poll_seconds=0, enable_batching=False) as server:
        assert "runner" not in server.registry.resolve("toy").extras
    _set_params(toy_models_copy, "toy", None)
    with ModelServer(toy_models_copy, poll_seconds=0, enable_batching=True) as server, \
            Client(server.target, timeout=TIMEOUT) as client:
        loaded = server.registry.resolve("toy")
        assert "batcher" not in loaded.extras and "runner" not in loaded.extras
        np.testing.assert_allclose(client.predict("toy", {"x": np.ones((3, 1), np.float32)})["y"], 4.0)


def test_bad_batching_params_fail_the_load(toy_models_copy):
    shutil.rmtree(toy_models_copy / "toy" / "1")
    _set_params(toy_models_copy, "toy", "max_batch_size { value: 8 }\nallowed_batch_sizes: [2, 4]\n")
    with ModelServer(toy_models_copy, poll_seconds=0, enable_batching=True) as server:
        (status,) = server.registry.status("toy")
        assert status.state == "END"
        assert "Last entry in allowed_batch_sizes must match max_batch_size" in status.error_message


def test_deadlines_in_the_queue(toy_models_dir):
    """Direct Batcher over a real GraphSignature: a task whose deadline passes while queued gets
    DEADLINE_EXCEEDED; its batch-mate without a deadline still runs."""
    from genserve.serving.loader import load_saved_model

    params = read_batching_params(toy_models_dir / "toy" / "2")
    assert params.max_batch_size == 8192  # the export's own file parses
    model = load_saved_model(toy_models_dir / "toy" / "2")
    batcher = Batcher(BatchingParams(max_batch_size=4, batch_timeout_micros=300_000, num_batch_threads=1))
    try:
        sig = model.signature("affine")
        x = np.ones((1, 1), np.float32)
        calls = [lambda: batcher.runner(sig, {"x": x}, ("y",), timeout_ms=50),
                 lambda: batcher.runner(sig, {"x": x}, ("y",), timeout_ms=0)]
        expired, alive = _concurrently(calls)
        assert isinstance(expired, ServingError) and expired.code == "DEADLINE_EXCEEDED"
        np.testing.assert_allclose(alive["y"], [[4.0]])
        assert (batcher.runs, batcher.tasks) == (1, 1)
        with pytest.raises(ServingError, match="equal 0th-dimension"):
            batcher.runner(model.signature("scale"), {"x": np.ones((2, 1), np.float32),
                                                      "factor": np.ones((3,), np.int32)}, ("y",))
    finally:
        batcher.stop()
        model.close()
    assert not any(t.is_alive() for t in batcher._threads)
    with pytest.raises(ValueError, match="increasing"):
        BatchingParams(max_batch_size=4, allowed_batch_sizes=(4, 2, 4))


def test_rest_requests_share_batches_too(batched_toy):
    """The REST front end awaits the batcher's Future (service.predict): its requests merge like gRPC's."""
    import json
    import urllib.request

    with ModelServer(batched_toy, poll_seconds=0, enable_batching=True, rest_port=0) as server:
        batcher = server.registry.resolve("toy").extras["batcher"]

        def call(i):
            body = json.dumps({"instances": [[float(i)]]}).encode()
            with urllib.request.urlopen(f"http://{server.rest_target}/v1/models/toy:predict", body,
                                        timeout=TIMEOUT) as response:
                return json.loads(response.read())["predictions"][0]["y"][0]

        results = _concurrently([lambda i=i: call(i) for i in range(6)])
    assert results == [2.0 * i + 2.0 for i in range(6)]  # version 2: y = 2x + 2
    assert batcher.tasks == 6 and batcher.runs < 6  # merged

