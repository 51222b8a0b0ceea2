"""Issue 17, the server's side of a newcomer's first hour:

- the ports are bound before the models load: a taken port fails at once with one line naming the
  port and its flag, before TensorFlow is even imported; while the models load, both ports answer what
  clients of TF Serving see then (its ports are closed until the first load): health NOT_SERVING,
  UNAVAILABLE / 503 "Servable not found for request: Latest(toy); the server is still loading its
  models" (clients retry it), GetModelStatus LOADING;
- (one log line per undecodable or unsupported request on either port: tests/test_server_hardening.py,
  on its `genserve serve` subprocess;)
- `--help` at 80 columns shows every option name of every command in full;
- `genserve models` needs neither TensorFlow nor TF Serving's protos (a `genserve[client]` install).

    .venv/bin/python -m pytest tests/test_server_first_hour.py -q
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
import typer
from typer.testing import CliRunner

from conftest import wait_until
from genserve.cli import app
from test_extras import _run

TF_BLOCKED = {"tensorflow", "keras", "tensorflow_serving"}  # what a `genserve[client]` install lacks
TIMEOUT = 30


# --- --help at 80 columns ---------------------------------------------------------------------------
def _commands(command, path: tuple = ()):
    """(path, command) of every runnable command under a click command (typer vendors its own click)."""
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _commands(sub, path + (name,))
    else:
        yield path, command


def test_help_at_80_columns_shows_every_option_name_in_full():
    commands = list(_commands(typer.main.get_command(app)))
    assert len(commands) > 20 and ("serve",) in [p for p, _ in commands]
    runner = CliRunner()
    for path, command in commands:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
        assert result.exit_code == 0, (path, result.output)
        for param in command.params:
            for name in (*param.opts, *param.secondary_opts):
                if name.startswith("-"):
                    assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", result.output), (
                        f"`genserve {' '.join(path)} --help` at 80 columns cuts {name}:\n{result.output}")
        wide = [line for line in result.output.splitlines() if len(line) > 80]
        assert not wide, (path, wide)


# --- genserve models in a [client] install ------------------------------------------------------------
def test_models_lists_a_folder_without_tensorflow_serving(toy_models_dir):
    """models.config is parsed with genserve.wire's own ModelServerConfig."""
    result = _run(TF_BLOCKED, "models", "--models-dir", str(toy_models_dir))
    assert result.returncode == 0, result.stderr
    assert re.search(r"^toy\tversions 1,2\tserved 1,2 \(all\)", result.stdout, re.M), result.stdout


# --- ports first ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--port", "--rest-port"])
def test_taken_port_fails_at_once_before_any_model_loads(flag, toy_models_dir):
    """TensorFlow is blocked: reaching the models (or their import) would fail differently."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = ["--port", str(port)] if flag == "--port" else ["--port", "0", "--rest-port", str(port)]
        start = time.monotonic()
        result = _run(TF_BLOCKED, "serve", "--models-dir", str(toy_models_dir), *ports)
        seconds = time.monotonic() - start
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert f"{flag} {port}" in lines[0] and "already in use" in lines[0], lines
    assert seconds < 5, seconds  # ~0.6 s on a quiet machine, 1.4 s on a loaded 2-core one


class HoldFirstLoad:
    """An observer whose on_load holds the first version's load until released."""

    def __init__(self):
        self.loading, self.release = threading.Event(), threading.Event()

    def observe(self, *_):
        pass

    def on_load(self, _loaded):
        if not self.loading.is_set():
            self.loading.set()
            assert self.release.wait(60)


def _rest(url: str, body: bytes | None = None) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=TIMEOUT) as page:
            return page.status, json.loads(page.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_both_ports_answer_while_the_models_load(toy_models_dir):
    """TF Serving's answers for a model not yet available, on both ports, before start() returns."""
    pytest.importorskip("tensorflow")
    import grpc
    import numpy as np
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from genserve.serving.server import ModelServer
    from genserve.wire.codec import fill_tensor_proto

    server = ModelServer(toy_models_dir, poll_seconds=0, rest_port=0, enable_grpc_healthcheck_service=True)
    hold = HoldFirstLoad()
    server.observers.append(hold)
    started: list = []
    thread = threading.Thread(target=lambda: started.append(server.start()), daemon=True)
    thread.start()
    try:
        wait_until(hold.loading.is_set, TIMEOUT, "the first load")
        assert server.port and server.rest_port, "the ports are bound only after the models load"
        rest = f"http://127.0.0.1:{server.rest_port}/v1"
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "toy"
        fill_tensor_proto(request.inputs["x"], np.array([[1.0]], np.float32))
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            check = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
            assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert _rest(f"{rest}/health/ready") == (503, {"status": "NOT_SERVING"})
            with pytest.raises(grpc.RpcError) as err:
                prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=TIMEOUT)
            # UNAVAILABLE (retried by clients), not NOT_FOUND: TF Serving's clients see UNAVAILABLE here too,
            # its ports being closed until this first load ends
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert err.value.details().startswith("Servable not found for request: Latest(toy)")
            assert "still loading its models" in err.value.details()
            status, body = _rest(f"{rest}/models/toy:predict", b'{"instances": [[1.0]]}')
            assert status == 503 and body["error"].startswith("Servable not found for request: Latest(toy)")
            models = model_service_pb2_grpc.ModelServiceStub(channel)
            spec = get_model_status_pb2.GetModelStatusRequest()
            spec.model_spec.name = "toy"
            versions = models.GetModelStatus(spec, timeout=TIMEOUT).model_version_status
            assert [(v.version, v.state) for v in versions] == [(2, get_model_status_pb2.ModelVersionStatus.LOADING)]
            assert not started  # all of this while start() is still loading

            hold.release.set()
            thread.join(TIMEOUT)
            assert started == [server.port]
            check = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
            assert check.status == health_pb2.HealthCheckResponse.SERVING
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=TIMEOUT)
            assert response.model_spec.version.value == 2
    finally:
        hold.release.set()
        thread.join(TIMEOUT)
        server.stop(0.5)


def test_a_start_that_fails_closes_both_ports(tmp_path):
    pytest.importorskip("tensorflow")
    from genserve.repository import ConfigError
    from genserve.serving.server import ModelServer

    (tmp_path / "models.config").write_text("model_config_list { nonsense }")
    server = ModelServer(tmp_path, poll_seconds=0, rest_port=0)
    with pytest.raises(ConfigError):
        server.start()
    assert server.port and server.rest_port  # bound first, then the config was read
    for port in (server.port, server.rest_port):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))  # free again
