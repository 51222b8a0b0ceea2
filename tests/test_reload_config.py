"""ModelService/HandleReloadConfigRequest on the embedded server, driven with Google's own
`tensorflow_serving.apis.model_service_pb2_grpc.ModelServiceStub`, and how it meets models.config polling.

    .venv/bin/python -m pytest tests/test_reload_config.py -q
"""

from __future__ import annotations

import shutil

import grpc
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import (  # noqa: E402
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2  # noqa: E402

from conftest import wait_until  # noqa: E402
from genserve.serving.server import ModelServer  # noqa: E402

TIMEOUT = 20.0


def _reload(channel, *models, custom: bool = False):
    """ReloadConfig with a model_config_list of (name, base_path) pairs (or a custom_model_config)."""
    request = model_management_pb2.ReloadConfigRequest()
    if custom:
        request.config.custom_model_config.type_url = "type.googleapis.com/example.Config"
    else:
        request.config.model_config_list.SetInParent()
        for name, base_path in models:
            config = request.config.model_config_list.config.add()
            config.name, config.base_path, config.model_platform = name, base_path, "tensorflow"
    return model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(request, timeout=TIMEOUT)


def _predict(channel, model: str) -> np.ndarray:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1.0]], np.float32)))
    reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=TIMEOUT)
    return tf.make_ndarray(reply.outputs["y"])


def _code(fn) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code(), info.value.details()


@pytest.fixture
def two_models(toy_models_copy):
    """toy (listed in models.config) and other (a copy of toy's version 2 folder, not listed)."""
    (toy_models_copy / "other").mkdir()
    shutil.copytree(toy_models_copy / "toy" / "2", toy_models_copy / "other" / "1")
    return toy_models_copy


def test_reload_adds_and_removes_models(two_models):
    with ModelServer(two_models, poll_seconds=0, enable_batching=True) as server, \
            grpc.insecure_channel(server.target) as channel:
        assert server.loaded_versions() == {"toy": [1, 2]}
        assert _code(lambda: _predict(channel, "other"))[0] == grpc.StatusCode.NOT_FOUND

        reply = _reload(channel, ("toy", "/models/toy"), ("other", "other"))  # returns once loaded
        assert reply.status.error_code == 0
        np.testing.assert_allclose(_predict(channel, "other"), [[4.0]])
        assert server.loaded_versions() == {"toy": [2], "other": [1]}  # default policy: latest only

        _reload(channel, ("other", "/models/other"))
        code, details = _code(lambda: _predict(channel, "toy"))
        assert code == grpc.StatusCode.NOT_FOUND and "toy" in details
        np.testing.assert_allclose(_predict(channel, "other"), [[4.0]])
        batchers = [server.registry.resolve("other").extras.get("batcher")]
        assert all(b is not None for b in batchers)  # the reloaded model is batched (its folder has the file)


def test_reload_refuses_other_kinds_and_external_paths(two_models, tmp_path):
    outside = tmp_path / "outside"
    shutil.copytree(two_models / "other", outside / "other")
    with ModelServer(two_models, poll_seconds=0) as server, grpc.insecure_channel(server.target) as channel:
        code, details = _code(lambda: _reload(channel, custom=True))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "Only ModelConfigList" in details

        for base_path in (str(outside / "other"), "../outside/other"):
            code, details = _code(lambda: _reload(channel, ("toy", "/models/toy"), ("ext", base_path)))
            assert code == grpc.StatusCode.INVALID_ARGUMENT
            assert "outside the models directory" in details and "--allow-external-base-paths" in details
        assert server.loaded_versions() == {"toy": [1, 2]}  # the old config stays in force

        code, details = _code(lambda: _reload(channel, ("toy", "toy"), ("toy", "other")))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "twice" in details

    with ModelServer(two_models, poll_seconds=0, allow_external_base_paths=True) as server, \
            grpc.insecure_channel(server.target) as channel:
        _reload(channel, ("ext", str(outside / "other")))
        np.testing.assert_allclose(_predict(channel, "ext"), [[4.0]])


def test_reload_holds_until_models_config_changes(two_models):
    """Version polls keep a reload request's config; a changed models.config replaces it (TF Serving
    re-applies the file at every --model_config_file_poll_wait_seconds poll instead)."""
    config = two_models / "models.config"
    with ModelServer(two_models, poll_seconds=0.1) as server, grpc.insecure_channel(server.target) as channel:
        _reload(channel, ("other", "other"))
        polls = server.polls
        wait_until(lambda: server.polls >= polls + 3, TIMEOUT, "three polls")  # models.config unchanged
        assert server.loaded_versions() == {"other": [1]}

        config.write_text(config.read_text() + "\n")  # any change to the file: it wins again
        wait_until(lambda: server.loaded_versions() == {"toy": [1, 2]}, TIMEOUT, "models.config to win")

    # config_poll_seconds=0: models.config is read once (TF Serving's default for the flag) while
    # versions are still polled.
    with ModelServer(two_models, poll_seconds=0.1, config_poll_seconds=0) as server:
        config.write_text(config.read_text().replace('"toy"', '"other"', 1).replace("/models/toy", "/models/other"))
        polls = server.polls
        wait_until(lambda: server.polls >= polls + 3, TIMEOUT, "three polls")
        assert server.loaded_versions() == {"toy": [1, 2]}


def test_serve_cli_documents_the_flags():
    from typer.testing import CliRunner

    from genserve.cli.root import app

    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for flag in ("--model-config-file-poll-seconds", "--enable-batching", "--disable-batching"):
        assert flag in result.output
