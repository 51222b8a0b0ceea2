"""Prometheus metrics on the REST port: TF Serving's names and labels, counts after known traffic over
gRPC and REST, one registry per server, the MonitoringConfig file, and `genserve serve` wiring it up.

    .venv/bin/python -m pytest tests/test_metrics.py -q
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from genserve.cli import app
from genserve.serving.metrics import DEFAULT_PATH, parse_monitoring_config, read_monitoring_config

ROOT = Path(__file__).resolve().parents[1]
MONITORING_CONFIG = ROOT / "genserve" / "deploy" / "monitoring.config"  # the file Dockerfile.serving ships


def _get(url: str, body: bytes | None = None) -> tuple[int, str, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=60) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def samples(page: str) -> dict[tuple, float]:
    """(sample name, sorted label items) -> value, parsed with prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(page):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(page_samples: dict, name: str, **labels) -> float:
    return page_samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_monitoring_config_files():
    assert read_monitoring_config(MONITORING_CONFIG) == DEFAULT_PATH
    assert parse_monitoring_config("prometheus_config { enable: true }") == DEFAULT_PATH
    assert parse_monitoring_config('prometheus_config { enable: true path: "/metrics" }') == "/metrics"
    assert parse_monitoring_config("prometheus_config { enable: false }") is None
    assert parse_monitoring_config("") is None  # TF Serving: no prometheus_config, no metrics
    with pytest.raises(ValueError, match="not a text-format MonitoringConfig"):
        parse_monitoring_config("prometheus_config { enabled: true }")
    with pytest.raises(ValueError, match="outside /v1/"):
        parse_monitoring_config('prometheus_config { enable: true path: "/v1/metrics" }')


@pytest.fixture(scope="module")
def servers(toy_models_dir):
    """Two servers over the same models (metrics must not be shared), the second on a custom path."""
    pytest.importorskip("tensorflow")
    from genserve.serving.server import ModelServer

    with ModelServer(toy_models_dir, poll_seconds=0, rest_port=0, prometheus_path=DEFAULT_PATH) as one, \
            ModelServer(toy_models_dir, poll_seconds=0, rest_port=0, prometheus_path="/metrics") as two:
        yield one, two


def test_counts_after_known_traffic_over_grpc_and_rest(servers):
    import grpc
    from tensorflow_serving.apis import (
        get_model_status_pb2, model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc,
    )

    from genserve.wire.codec import to_tensor_proto

    server, other = servers
    grpc_ok, rest_ok = 3, 2

    def grpc_predict(model: str, signature: str) -> grpc.StatusCode:
        from tensorflow.core.framework import tensor_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = signature
        request.inputs["x"].CopyFrom(to_tensor_proto(np.ones((2, 1), np.float32), tensor_pb2.TensorProto))
        try:
            stub.Predict(request, timeout=30)
            return grpc.StatusCode.OK
        except grpc.RpcError as e:
            return e.code()

    with grpc.insecure_channel(server.target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert [grpc_predict("toy", "affine") for _ in range(grpc_ok)] == [grpc.StatusCode.OK] * grpc_ok
        assert grpc_predict("toy", "nope") == grpc.StatusCode.INVALID_ARGUMENT
        assert grpc_predict("nope", "affine") == grpc.StatusCode.NOT_FOUND
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = "toy"
        model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status, timeout=30)  # not counted

    base = f"http://{server.rest_target}"
    body = json.dumps({"signature_name": "affine", "instances": [[1.0]]}).encode()
    for _ in range(rest_ok):
        assert _get(f"{base}/v1/models/toy:predict", body)[0] == 200
    assert _get(f"{base}/v1/models/toy:predict", b"{oops")[0] == 400
    assert _get(f"{base}/v1/models/nope:predict", body)[0] == 404
    assert _get(f"{base}/v1/models/toy")[0] == 200  # REST counts status requests too (API "")

    status, page, headers = _get(f"{base}{DEFAULT_PATH}")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    got = samples(page)
    count = ":tensorflow:serving:request_count_total"  # TF Serving: ":tensorflow:serving:request_count"
    assert value(got, count, model_name="toy", status="OK") == grpc_ok + rest_ok + 1
    assert value(got, count, model_name="toy", status="INVALID_ARGUMENT") == 2
    assert value(got, count, model_name="nope", status="NOT_FOUND") == 2
    latency = ":tensorflow:serving:request_latency_count"
    assert value(got, latency, model_name="toy", API="Predict", entrypoint="GRPC") == grpc_ok
    assert value(got, latency, model_name="toy", API="predict", entrypoint="REST") == rest_ok
    assert value(got, latency, model_name="toy", API="", entrypoint="REST") == 1
    runtime = ":tensorflow:serving:runtime_latency_count"
    assert value(got, runtime, model_name="toy", API="Predict", runtime="TF1") == grpc_ok + rest_ok
    assert value(got, ":tensorflow:serving:runtime_latency_sum", model_name="toy", API="Predict",
                 runtime="TF1") > 0
    for version in (1, 2):
        path = str(Path(server.models_dir) / "toy" / str(version))
        assert value(got, ":tensorflow:cc:saved_model:load_attempt_count_total", model_path=path,
                     status="success") == 1
        assert value(got, ":tensorflow:cc:saved_model:load_latency_total", model_path=path) > 0
    # TF Serving's buckets: Buckets::Exponential(10, 1.8, 33) in microseconds, le written with %g.
    les = re.findall(r'request_latency_bucket\{API="Predict",entrypoint="GRPC",le="([^"]+)"', page)
    assert les[:5] == ["10", "18", "32.4", "58.32", "104.976"] and les[-1] == "+Inf" and len(les) == 34

    status, page, _ = _get(f"http://{other.rest_target}/metrics")  # the other server saw none of it
    assert status == 200 and "request_count" not in page and "load_attempt_count" in page
    assert _get(f"http://{other.rest_target}{DEFAULT_PATH}")[0] == 404


def test_cli_checks_before_starting(toy_models_dir, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["serve", "--models-dir", str(toy_models_dir), "--monitoring-config-file",
                                 str(MONITORING_CONFIG)])
    assert result.exit_code == 1 and "set --rest-port" in result.output
    result = runner.invoke(app, ["serve", "--models-dir", str(toy_models_dir), "--port", "9000",
                                 "--rest-port", "9000"])
    assert result.exit_code == 1 and "--rest-port must differ from --port" in result.output
    bad = tmp_path / "monitoring.config"
    bad.write_text("prometheus_config { enable: yes please }")
    result = runner.invoke(app, ["serve", "--models-dir", str(toy_models_dir), "--rest-port", "9001",
                                 "--monitoring-config-file", str(bad)])
    assert result.exit_code == 1 and "not a text-format MonitoringConfig" in result.output
    result = runner.invoke(app, ["serve", "--models-dir", str(toy_models_dir), "--rest-port", "9001",
                                 "--monitoring-config-file", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "cannot read" in result.output


def test_serve_subprocess_with_rest_port_and_monitoring_config(toy_models_dir):
    """`genserve serve --rest-port P --monitoring-config-file genserve/deploy/monitoring.config` as
    Docker runs TF Serving: the status probe, a predict and the metrics page answer on P; SIGTERM stops it."""
    from benchmarks.harness import free_port

    rest_port = free_port()
    script = os.path.join(os.path.dirname(sys.executable), "genserve")
    command = [script] if os.path.exists(script) else [sys.executable, "-c",
                                                        "from genserve.cli import main; main()"]
    proc = subprocess.Popen(command + ["serve", "--models-dir", str(toy_models_dir), "--port", "0",
                                       "--poll-seconds", "0", "--rest-port", str(rest_port),
                                       "--monitoring-config-file", str(MONITORING_CONFIG)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    stderr_tail: list[str] = []
    threading.Thread(target=lambda: [stderr_tail.append(line) for line in proc.stderr], daemon=True).start()
    try:
        deadline, ready = time.monotonic() + 90, False
        while not ready and time.monotonic() < deadline:
            try:
                ready = f"REST API on http://127.0.0.1:{rest_port}/" in lines.get(timeout=1)
            except queue.Empty:
                assert proc.poll() is None, "".join(stderr_tail)[-2000:]
        assert ready, "".join(stderr_tail)[-2000:]
        base = f"http://127.0.0.1:{rest_port}"
        status, text, _ = _get(f"{base}/v1/models/toy")
        assert status == 200 and json.loads(text)["model_version_status"][0]["state"] == "AVAILABLE"
        status, text, _ = _get(f"{base}/v1/models/toy:predict", b'{"instances": [[3.0]]}')
        assert status == 200 and json.loads(text)["predictions"] == [{"wx": [6.0], "y": [8.0]}]
        status, text, _ = _get(f"{base}{DEFAULT_PATH}")
        assert ':tensorflow:serving:request_count_total{model_name="toy",status="OK"} 2.0' in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
