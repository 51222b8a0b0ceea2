"""Hostile requests against `genserve serve` running as a subprocess: each case once took the server
down, stalled it or leaked details; each must now answer a clear status while the server keeps serving.

    .venv/bin/python -m pytest tests/test_server_hardening.py -q

Cases (issue 12): a 1.6 MB VAE decode request that crashed TensorFlow's conv kernels; a 29-byte toy
request declaring [5e8, 1] elements; abandoned long `generate` requests holding every worker; a
megabyte-long model name; garbage bytes (logged in one line, not a traceback); version folders named
`0012` and `²`; SIGTERM with work in flight (a bounded drain). Issue 17: a gRPC client or TLS at the
REST port, Classify / Regress / MultiInference: one log line each (counted between two marker lines).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from conftest import wait_until  # noqa: E402
from genserve.clients import Client, GenserveError  # noqa: E402

TIMEOUT = 30
TEXT = "she sells sea shells by the sea shore; the shells she sells are surely sea shells.\n" * 30


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """toy, an untrained VAE and a tiny text model, plus version folders that are not versions."""
    from genserve.export.text import export_text
    from genserve.export.toy import export_toy
    from genserve.export.vae import build_module
    from genserve.export.writer import save_version
    from genserve.training.text import TextConfig, train
    from genserve.training.vae import VAEConfig, build_decoder, build_encoder

    root = tmp_path_factory.mktemp("hostile-models")
    export_toy(root)
    cfg = VAEConfig()
    module, sigs = build_module(build_encoder(cfg), build_decoder(cfg), cfg.latent_dim)
    save_version(module, root, "vae", sigs, default="decode")
    work = tmp_path_factory.mktemp("text-work")
    train(dataclasses.replace(TextConfig(), maxlen=20, units=16, batch_size=32, epochs=1), work,
          verbose=0, log=lambda line: None, text=TEXT)
    export_text(work, root)
    for odd in ("0012", "²", "12a"):  # not canonical version numbers: never served, never a crash
        (root / "toy" / odd).mkdir()
        (root / "toy" / odd / "saved_model.pb").write_bytes(b"junk")
    return root


class Served:
    def __init__(self, proc: subprocess.Popen, target: str, log: Path, rest: str):
        self.proc, self.target, self.log, self.rest = proc, target, log, rest

    def in_flight(self) -> float:
        """The server's own count of Predicts admitted and unanswered (its Prometheus gauge)."""
        import urllib.request

        with urllib.request.urlopen(f"http://{self.rest}/monitoring/prometheus/metrics", timeout=10) as page:
            text = page.read().decode()
        return float(re.search(r"^:genserve:serving:requests_in_flight (\S+)$", text, re.M).group(1))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def toy_ok(self, timeout: float = TIMEOUT) -> bool:
        with Client(self.target, timeout=timeout) as client:
            return float(client.predict("toy", {"x": np.array([[1.0]], np.float32)})["y"][0, 0]) == 3.0


@pytest.fixture(scope="module")
def served(models, tmp_path_factory):
    from benchmarks.harness import free_port

    log = tmp_path_factory.mktemp("log") / "server.log"
    monitoring = log.with_name("monitoring.config")
    monitoring.write_text('prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }\n')
    rest_port = free_port()  # a free port for REST (`--rest-port 0` means no REST server)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(log, "w") as err:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("genserve")), "serve", "--models-dir",
                                 str(models), "--port", "0", "--poll-seconds", "0",
                                 "--max-concurrent", "2", "--max-queue", "2", "--drain-seconds", "2",
                                 "--tensorflow-inter-op-parallelism", "1",  # the shared pool: 1 thread
                                 "--rest-port", str(rest_port), "--monitoring-config-file", str(monitoring)],
                                stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    line = proc.stdout.readline()
    match = re.search(r" on 127\.0\.0\.1:(\d+)", line)
    assert match, (line, log.read_text()[-2000:])
    served = Served(proc, f"127.0.0.1:{match.group(1)}", log, f"127.0.0.1:{rest_port}")
    yield served
    if served.alive():
        proc.kill()
        proc.wait(30)


@pytest.fixture
def stub(served):
    with grpc.insecure_channel(served.target, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        yield prediction_service_pb2_grpc.PredictionServiceStub(ch), ch


def _request(model: str, signature: str = "") -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    return request


def test_odd_version_folders_are_ignored(served):
    with Client(served.target, timeout=TIMEOUT) as client:
        assert client.status("toy") == [(1, "AVAILABLE")]
    assert served.toy_ok()


def test_huge_vae_batch_is_refused_before_it_runs(served, stub):
    stub, _ = stub
    request = _request("vae", "decode")
    request.inputs["z"].CopyFrom(tf.make_tensor_proto(np.zeros((200_000, 2), np.float32)))  # 1.6 MB
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(request, timeout=TIMEOUT)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "200,000 rows" in err.value.details() and "at most" in err.value.details()
    assert served.alive() and served.toy_ok()


def test_declared_shape_without_values_is_refused(served, stub):
    stub, _ = stub
    request = _request("toy")
    x = request.inputs["x"]
    x.dtype = tf.float32.as_datatype_enum
    x.tensor_shape.dim.add().size = 500_000_000
    x.tensor_shape.dim.add().size = 1  # 29 bytes on the wire, 2 GB decoded
    assert request.ByteSize() < 64
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(request, timeout=TIMEOUT)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "500,000,000 input elements" in err.value.details()
    assert time.monotonic() - start < 5
    assert served.alive() and served.toy_ok()


def test_abandoned_long_generations_do_not_stall_other_models(served):
    """Eight generate requests far beyond their 1 s deadline: the deadline goes into Session.run and the
    text model's own queue is bounded, so the toy model answers at once and the threads come back."""
    ids = np.zeros((128, 20), np.int32)
    inputs = {"ids": ids, "temperature": np.ones(128, np.float32),
              "length": np.full(128, 20_000, np.int32), "seed": np.arange(128, dtype=np.int64)}
    codes = []

    def abandon():
        with Client(served.target, timeout=1.0) as client:
            try:
                client.predict("text", inputs, signature="generate")
            except GenserveError as e:
                codes.append(e.code)

    threads = [threading.Thread(target=abandon) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    start = time.monotonic()
    assert served.toy_ok(timeout=10)
    assert time.monotonic() - start < 5, "toy waited behind the abandoned generations"
    for t in threads:
        t.join(30)
    assert len(codes) == 8 and set(codes) <= {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE}
    # the runs stop at their deadline: a new generate gets a slot again within seconds
    with Client(served.target, timeout=20) as client:
        small = {k: v[:2] for k, v in inputs.items()}
        small["length"] = np.full(2, 5, np.int32)
        deadline = time.monotonic() + 20
        while True:
            try:
                assert client.predict("text", small, signature="generate")["ids"].shape == (2, 5)
                break
            except GenserveError as e:
                assert e.code == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline, e


def test_megabyte_long_names_get_a_short_clear_error(served, stub):
    stub, _ = stub
    request = _request("m" * 1_000_000)
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((1, 1), np.float32)))
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(request, timeout=TIMEOUT)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND  # not "Stream removed"
    assert len(err.value.details()) < 2000 and "Servable not found" in err.value.details()
    assert served.alive()


def test_garbage_bytes_are_logged_in_one_line(served, stub):
    _, channel = stub
    raw = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
    for _ in range(3):
        with pytest.raises(grpc.RpcError):
            raw(b"\xff\xff\xff\xff not a protobuf", timeout=TIMEOUT)
    assert served.toy_ok()
    text = served.log.read_text()
    assert "Traceback" not in text, text[-3000:]


MARKERS = itertools.count()


def _mark(served) -> None:
    """A REST :classify (itself one log line) whose line, once logged, closes everything logged before."""
    import urllib.error
    import urllib.request

    name = f"marker-{next(MARKERS)}"
    url = f"http://{served.rest}/v1/models/{name}:classify"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(url, data=b"{}"), timeout=TIMEOUT)
    assert err.value.code == 501
    wait_until(lambda: f"/v1/models/{name}:classify" in served.log.read_text(), TIMEOUT, f"the {name} log line")


def _logged_by(served, action) -> list[str]:
    """The lines `action()` makes the server log (the closing marker's own line left out)."""
    _mark(served)
    before = len(served.log.read_text().splitlines())
    action()
    _mark(served)
    return served.log.read_text().splitlines()[before:-1]


def test_grpc_client_or_tls_at_the_rest_port_logs_one_line_per_connection(served):
    """Issue 17: a gRPC client at the REST port made aiohttp log an 11-line traceback per connection."""
    def grpc_at_rest_port():
        with grpc.insecure_channel(served.rest) as channel:
            with pytest.raises(grpc.RpcError) as err:
                prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(_request("toy"), timeout=TIMEOUT)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE

    lines = _logged_by(served, grpc_at_rest_port)
    assert len(lines) == 1 and "REST: bad HTTP request from 127.0.0.1: an HTTP/2" in lines[0], lines

    def tls_at_rest_port():
        host, port = served.rest.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=TIMEOUT) as conn:
            conn.sendall(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(64))  # a ClientHello's start
            assert re.match(rb"HTTP/1\.[01] 400", conn.recv(64))

    lines = _logged_by(served, tls_at_rest_port)
    assert len(lines) == 1 and "REST: bad HTTP request from 127.0.0.1: Received HTTPS" in lines[0], lines


def test_classify_regress_multiinference_log_one_line_each(served, stub):
    """Issue 17: each logged a ~600-byte traceback (the UNIMPLEMENTED answer was right)."""
    from tensorflow_serving.apis import classification_pb2, inference_pb2, regression_pb2

    stub, _ = stub
    calls = {"Classify": classification_pb2.ClassificationRequest(), "Regress": regression_pb2.RegressionRequest(),
             "MultiInference": inference_pb2.MultiInferenceRequest()}

    def unsupported():
        for method, request in calls.items():
            with pytest.raises(grpc.RpcError) as err:
                getattr(stub, method)(request, timeout=TIMEOUT)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED and "use Predict" in err.value.details()

    lines = _logged_by(served, unsupported)
    assert len(lines) == 3, lines
    for line, method in zip(lines, calls):
        assert f"gRPC: unsupported method /tensorflow.serving.PredictionService/{method} from" in line, lines
    assert "Traceback" not in served.log.read_text()


def _long_generation(served, timeout: float) -> threading.Thread:
    """A 64 x 20,000-character gRPC generate running in the server (in its in-flight gauge) until
    `timeout`; the thread ends with the answer (DEADLINE_EXCEEDED)."""
    inputs = {"ids": np.zeros((64, 20), np.int32), "temperature": np.ones(64, np.float32),
              "length": np.full(64, 20_000, np.int32), "seed": np.arange(64, dtype=np.int64)}

    def run():
        with Client(served.target, timeout=timeout) as client:
            try:
                client.predict("text", inputs, signature="generate")
            except GenserveError:
                pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_running_loop_holds_no_thread_another_run_needs(served):
    """A generation's loop keeps the inter-op thread it runs on until it ends. With one pool for every
    model (here 1 thread, --tensorflow-inter-op-parallelism 1) a second admitted run of a loop
    signature, or another model's request, waited for it: next_char timed out behind the generation.
    Loops now run on a pool of their model's own, as large as the runs it admits."""
    generation = _long_generation(served, timeout=8)
    wait_until(lambda: served.in_flight() == 1, 30, "a generation in flight")
    with Client(served.target, timeout=5) as client:
        start = time.monotonic()
        assert client.predict("text", {"ids": np.zeros((1, 20), np.int32)})["probabilities"].shape[0] == 1
        assert float(client.predict("toy", {"x": np.array([[1.0]], np.float32)})["y"][0, 0]) == 3.0
        took = time.monotonic() - start
    assert served.in_flight() == 1, "the generation ended early: the check above proved nothing"
    assert took < 2.5, f"next_char + toy took {took:.1f} s beside a running generation"
    generation.join(30)
    wait_until(lambda: served.in_flight() == 0, 30, "the generation stopped at its deadline")


def _signal_another_thread(pid: int, signum: int) -> int:
    """Send `signum` to one thread of process `pid` that is not its main thread and does not block
    the signal (tgkill); the kernel may pick such a thread for any process-directed signal. Returns the
    thread id."""
    import ctypes

    for task in sorted(Path(f"/proc/{pid}/task").iterdir()):
        if int(task.name) == pid:
            continue
        status = (task / "status").read_text()
        blocked = int(re.search(r"^SigBlk:\s*([0-9a-f]+)", status, re.M).group(1), 16)
        if not blocked & (1 << (signum - 1)):
            assert ctypes.CDLL(None, use_errno=True).tgkill(pid, int(task.name), signum) == 0
            return int(task.name)
    raise AssertionError(f"no thread of {pid} takes signal {signum}")


def test_sigterm_refuses_at_once_and_drains_both_ports_together(served):
    """Last (it stops the server): a gRPC and a REST generation in flight (known from the server's own
    in-flight gauge), SIGTERM: a new request is refused at once, and the process exits after ONE drain
    of --drain-seconds 2 (the two front ends drain together; before, one after the other).

    The SIGTERM goes to a thread other than the main one, as the kernel may deliver it: the main
    thread waited in Event.wait() and never woke, so the server went on serving without a drain (1 in
    12 SIGTERMs under load)."""
    import json
    import urllib.request

    inputs = {"ids": np.zeros((64, 20), np.int32), "temperature": np.ones(64, np.float32),
              "length": np.full(64, 20_000, np.int32), "seed": np.arange(64, dtype=np.int64)}

    def grpc_run():
        with Client(served.target, timeout=60) as client:
            try:
                client.predict("text", inputs, signature="generate")
            except GenserveError:
                pass

    def rest_run():
        body = json.dumps({"signature_name": "generate",
                           "inputs": {k: v.tolist() for k, v in inputs.items()}}).encode()
        try:
            urllib.request.urlopen(f"http://{served.rest}/v1/models/text:predict", body, timeout=60)
        except OSError:
            pass

    for run in (grpc_run, rest_run):
        threading.Thread(target=run, daemon=True).start()
    wait_until(lambda: served.in_flight() == 2, 30, "a gRPC and a REST request in flight")
    start = time.monotonic()
    _signal_another_thread(served.proc.pid, signal.SIGTERM)
    # the drain has begun once the server says so (a request sent before that may still be served)
    wait_until(lambda: "stopping (draining" in served.log.read_text(), 1.5, "the drain to begin")
    request = _request("toy")
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((1, 1), np.float32)))
    with grpc.insecure_channel(served.target) as channel:  # no client retries: the raw answer
        with pytest.raises(grpc.RpcError) as err:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() - start < 1.5
    served.proc.wait(30)
    took = time.monotonic() - start
    assert took < 2 + 2.5, f"exit took {took:.1f} s for --drain-seconds 2"
    assert served.proc.returncode == 0
