"""`genserve serve`, `genserve models` and `genserve export toy`: in-process with typer's CliRunner, and
`genserve serve` as a real subprocess queried with Google's stubs, then stopped with SIGTERM.

    .venv/bin/python -m pytest tests/test_cli_serve.py -q
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
from typer.testing import CliRunner

from genserve.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(map(str, args)))


def test_serve_refuses_missing_or_empty_dir(tmp_path):
    result = invoke("serve", "--models-dir", tmp_path / "missing", "--port", "0")
    assert result.exit_code == 1
    assert "error: models directory" in result.output and "does not exist" in result.output
    result = invoke("serve", "--models-dir", tmp_path, "--port", "0")
    assert result.exit_code == 1
    assert "error: no model versions under" in result.output
    (tmp_path / "models.config").write_text("model_config_list { nonsense }")
    result = invoke("serve", "--models-dir", tmp_path, "--port", "0")
    assert result.exit_code == 1 and "not a text-format ModelServerConfig" in result.output


def test_serve_passes_idle_trim_seconds_to_the_server(toy_models_dir, monkeypatch):
    import genserve.serving.server as server_module

    seen = {}

    class Stop(server_module.ModelServer):
        def start(self):
            seen["options"] = self.options
            raise OSError("stopped before binding")

    monkeypatch.setattr(server_module, "ModelServer", Stop)
    result = invoke("serve", "--models-dir", toy_models_dir, "--port", "0", "--idle-trim-seconds", "0")
    assert result.exit_code == 1 and "stopped before binding" in result.output
    assert seen["options"].idle_trim_seconds == 0
    result = invoke("serve", "--models-dir", toy_models_dir, "--port", "0", "--idle-trim-seconds", "-1")
    assert result.exit_code == 2 and "idle-trim-seconds" in result.output


def test_models_lists_versions_and_labels(toy_models_copy, tmp_path):
    from genserve.repository import set_version_labels

    set_version_labels(toy_models_copy, "toy", {"stable": 1})
    result = invoke("models", "--models-dir", toy_models_copy)
    assert result.exit_code == 0, result.output
    assert re.search(r"^toy\tversions 1,2\tserved 1,2 \(all\)\tlabels stable=1\t", result.output, re.M)
    result = invoke("models", "--models-dir", tmp_path / "missing")
    assert result.exit_code == 1 and result.output.startswith("error: ")


def test_export_toy_command(tmp_path):
    result = invoke("export", "toy", "--models-dir", tmp_path, "--bias", "5")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(tmp_path / "toy" / "1")
    assert (tmp_path / "models.config").is_file()
    result = invoke("export", "toy", "--models-dir", tmp_path, "--version", "1")
    assert result.exit_code == 1
    assert "error: version 1 of model 'toy' already exists" in result.output


def test_help_and_models_do_not_import_tensorflow(toy_models_dir):
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from genserve.cli import app\n"
        "r = CliRunner().invoke(app, ['serve', '--help'])\n"
        "assert r.exit_code == 0 and '--poll-seconds' in r.output, r.output\n"
        f"r = CliRunner().invoke(app, ['models', '--models-dir', {str(toy_models_dir)!r}])\n"
        "assert r.exit_code == 0 and 'toy' in r.output, r.output\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow')\n"
        "assert not bad, bad[:5]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


def _genserve_command() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "genserve")
    return [script] if os.path.exists(script) else [sys.executable, "-c",
                                                    "from genserve.cli import main; main()"]


def test_serve_subprocess_answers_google_stub_and_exits_cleanly_on_sigterm(toy_models_dir):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    proc = subprocess.Popen(
        _genserve_command() + ["serve", "--models-dir", str(toy_models_dir), "--port", "0",
                               "--poll-seconds", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    stderr_tail: list[str] = []
    threading.Thread(target=lambda: [stderr_tail.append(line) for line in proc.stderr],
                     daemon=True).start()
    try:
        port = None
        deadline = time.monotonic() + 90  # TF import (~5 s) plus loading, on a busy 2-core box
        while port is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert proc.poll() is None, "".join(stderr_tail)[-2000:]
                continue
            match = re.search(r"serving toy v2 on 127\.0\.0\.1:(\d+)", line)
            port = int(match.group(1)) if match else None
        assert port, "no 'serving ... on 127.0.0.1:PORT' line; stderr:\n" + "".join(stderr_tail)[-2000:]

        request = predict_pb2.PredictRequest()
        request.model_spec.name = "toy"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[3.0]], np.float32)))
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = stub.Predict(request, timeout=30)
        assert response.model_spec.version.value == 2
        np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), [[8.0]])

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert any("loaded model toy version 2" in line for line in stderr_tail)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
