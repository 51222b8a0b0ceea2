"""Several replicas behind one Client target (issue 18): three `genserve serve` processes on loopback.

    .venv/bin/python -m pytest tests/test_replicas.py -q

Covers: how a target string becomes a gRPC target (comma lists, dns:///, one target unchanged); the
health service (--enable-grpc-healthcheck-service): NOT_SERVING while a configured model has no
version, SERVING once it loads, NOT_SERVING from the first moment of a drain, and GET /v1/health/ready
saying the same; a `Client` on "127.0.0.1:a,127.0.0.1:b,127.0.0.1:c" spreads its requests over all three
(each replica's Prometheus request counter shows it) and keeps answering while one drains; a replica
that is down from the start costs no call; SIGKILL of one replica during a `batch run` of 2,000 small
items loses no item and writes no duplicate record; TF Serving's CORS headers and preflight rule.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from benchmarks.harness import ServerProcess, export_untrained_vae, free_port
from genserve.clients.replicas import SERVICE_CONFIG, channel_target
from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[1]
MONITORING = REPO / "genserve" / "deploy" / "monitoring.config"
METRICS_PATH = "/monitoring/prometheus/metrics"


# -- the target string (no server) ------------------------------------------------------------------
def test_one_target_keeps_grpc_defaults_and_a_list_gets_round_robin_with_health_checks():
    single = channel_target("127.0.0.1:8500")
    assert single.uri == "127.0.0.1:8500" and not single.replicated and single.options == ()
    listed = channel_target("127.0.0.1:1, 127.0.0.1:2,127.0.0.1:3")
    assert listed.uri == "ipv4:127.0.0.1:1,127.0.0.1:2,127.0.0.1:3"
    config = json.loads(dict(listed.options)["grpc.service_config"])
    assert config == {"loadBalancingConfig": [{"round_robin": {}}],
                      "healthCheckConfig": {"serviceName": "tensorflow.serving.PredictionService"}}
    assert dict(listed.options)["grpc.default_authority"] == "127.0.0.1:1"
    assert channel_target("[::1]:1,[::1]:2").uri == "ipv6:[::1]:1,[::1]:2"
    dns = channel_target("dns:///genserve-headless.default.svc.cluster.local:8500")
    assert dns.uri.startswith("dns:///") and dict(dns.options)["grpc.service_config"] == SERVICE_CONFIG
    named = channel_target("localhost:1,localhost:2")  # names resolved once; authority as written
    assert re.fullmatch(r"ipv[46]:\S+:1,\S+:2", named.uri) and dict(named.options)["grpc.default_authority"] == "localhost:1"


@pytest.mark.parametrize("bad", ["127.0.0.1:1,[::1]:2", "127.0.0.1:1,dns:///x:2", "127.0.0.1:1,nope"])
def test_a_bad_replica_list_is_refused_in_one_line(bad):
    with pytest.raises(ValueError, match="replica|IPv4 and IPv6"):
        channel_target(bad)


def test_a_replica_name_that_does_not_resolve_fails_the_first_call_at_once_with_the_fix():
    import time

    from genserve.clients import Client, GenserveError

    with Client("replica-a.invalid:8500,127.0.0.1:8510", timeout=20) as client:  # built without error
        start = time.monotonic()
        with pytest.raises(GenserveError) as e:
            client.status("toy")
    assert time.monotonic() - start < 1.0 and e.value.code.name == "UNAVAILABLE"
    assert "cannot resolve the host name 'replica-a.invalid'" in e.value.details


def test_cli_targets_accept_replica_lists():
    from genserve.cli.options import parse_target

    assert parse_target(" 127.0.0.1:1, localhost:2 ") == "127.0.0.1:1,localhost:2"
    for bad in ("127.0.0.1:1,", "127.0.0.1:1,127.0.0.1:70000", "127.0.0.1:1,unix:/tmp/s"):
        with pytest.raises(ValueError):
            parse_target(bad)


# -- three real replicas ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """A tiny VAE export (random weights, no training) and a toy export, both in models.config."""
    from genserve.export.toy import export_toy
    from genserve.training.vae import VAEConfig

    root = tmp_path_factory.mktemp("replicas")
    export_toy(root / "models")
    export_untrained_vae(root / "models", root / "vae", VAEConfig(conv_filters=(4, 8, 8, 8), dense_units=8))
    return root / "models"


def _health(server, service: str = "tensorflow.serving.PredictionService") -> str:
    """The replica's grpc.health.v1 answer for `service`, by the standard stub."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(server.target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def _ready(server) -> int | None:
    """GET /v1/health/ready on the replica's REST port: the HTTP status (None: the port is not open)."""
    try:
        with urllib.request.urlopen(f"http://{server.rest_target}/v1/health/ready", timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as e:
        return e.code
    except urllib.error.URLError:
        return None


@pytest.fixture(scope="module")
def replicas(models_dir, tmp_path_factory):
    """Three `genserve serve --enable-grpc-healthcheck-service` processes over the same models directory
    (metrics on their REST ports), started while the configured model `toy` has no version: yields
    (servers, what each said before toy's version appeared), all three SERVING by then."""
    logs = tmp_path_factory.mktemp("replica_logs")
    version = next((models_dir / "toy").iterdir())
    parked = logs / "toy-version"
    version.rename(parked)  # toy stays in models.config, with no version on disk
    servers = [ServerProcess(models_dir, "--disable-batching", "--monitoring-config-file", str(MONITORING),
                             "--drain-seconds", "3", "--enable-grpc-healthcheck-service", rest=True,
                             log=logs / f"replica{i}.log")
               for i in range(3)]
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready("vae", timeout=180)
            wait_until(lambda: _ready(server) is not None, timeout=30, what=f"{server.rest_target} open")
        before = [(_health(s), _health(s, ""), _ready(s)) for s in servers]
        parked.rename(version)  # the version appears at once (a rename); each replica loads it at its next poll
        for server in servers:
            wait_until(lambda: _health(server) == "SERVING", timeout=60, what=f"{server.target} SERVING")
        yield servers, before
    finally:
        for server in servers:
            server.kill()


def _target(servers) -> str:
    return ",".join(server.target for server in servers)


def test_health_is_not_serving_until_every_configured_model_has_a_version(replicas):
    servers, before = replicas
    assert before == [("NOT_SERVING", "NOT_SERVING", 503)] * 3
    for server in servers:
        assert _health(server) == _health(server, "") == _health(server, "tensorflow.serving.ModelService") \
            == "SERVING"
        assert _ready(server) == 200


def _requests_ok(server, model: str = "vae") -> float:
    """The replica's :tensorflow:serving:request_count for `model` with status OK (Prometheus text)."""
    with urllib.request.urlopen(f"http://{server.rest_target}{METRICS_PATH}", timeout=10) as reply:
        text = reply.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(":tensorflow:serving:request_count") and f'model_name="{model}"' in line \
                and 'status="OK"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_client_on_three_replicas_spreads_requests_over_all_three(replicas):
    import numpy as np

    from genserve.clients import Client

    replicas, _ = replicas
    before = [_requests_ok(server) for server in replicas]
    with Client(_target(replicas), timeout=30) as client:
        for _ in range(30):
            out = client.predict("vae", {"z": np.zeros((1, 2), np.float32)}, signature="decode")
            assert out["images"].shape == (1, 28, 28, 1)
    served = [_requests_ok(server) - b for server, b in zip(replicas, before)]
    assert sum(served) == 30 and all(n >= 5 for n in served), served  # round_robin: ~10 each


def _label_version(server, label: str = "stable") -> int | None:
    """The version the replica serves under `label` for toy (None: not (yet) known there)."""
    from genserve.clients import Client, GenserveError

    with Client(server.target, timeout=10) as client:
        try:
            return client.status("toy", version_label=label)[0].version
        except GenserveError:
            return None


def _available(server, model: str = "toy") -> set[int]:
    from genserve.clients import Client

    with Client(server.target, timeout=10) as client:
        return {v for v, state in client.status(model) if state == "AVAILABLE"}


def _version_and_y(reply) -> tuple[int, float]:
    from genserve.wire.codec import from_tensor_proto

    return reply.model_spec.version.value, float(from_tensor_proto(reply.outputs["y"]).ravel()[0])


def test_a_rollout_keeps_each_pinned_session_on_its_version(replicas, models_dir):
    """docs/deploy.md's procedure on a shared models directory, each replica moving at its own poll: a
    session pinned through the label `stable` before the rollout gets version 1 on every answer until
    version 1 is unloaded (then a NOT_FOUND naming it), one pinned after the label moved gets 2."""
    import threading

    import numpy as np

    from genserve.clients import Client, GenserveError
    from genserve.export.toy import ToyConfig, export_toy
    from genserve.repository.config import set_version_labels, set_version_policy

    servers = replicas[0]
    x = {"x": np.ones((1, 1), np.float32)}
    set_version_policy(models_dir, "toy", ("specific", (1,)))
    set_version_labels(models_dir, "toy", {"stable": 1})
    for server in servers:
        wait_until(lambda: _label_version(server) == 1, timeout=30, what="stable -> 1")
    old_answers, old_errors, stop = [], [], threading.Event()
    with Client(_target(servers), timeout=30) as client:
        old = client.pinned("toy", version_label="stable")
        assert old.version == 1

        def old_session():
            while not stop.is_set():
                try:
                    old_answers.append(_version_and_y(old.predict_response(x)))
                except GenserveError as e:
                    old_errors.append(e)
                    return
                except Exception as e:  # noqa: BLE001 - a broken test thread must fail the test, not hang it
                    old_errors.append(e)
                    return
                stop.wait(0.005)  # pacing, so the replicas' polls get the CPU

        thread = threading.Thread(target=old_session)
        thread.start()
        try:
            export_toy(models_dir, ToyConfig(bias=5.0), version=2)  # not served yet: the policy names 1
            set_version_policy(models_dir, "toy", ("specific", (1, 2)))
            for server in servers:
                wait_until(lambda: _available(server) == {1, 2}, timeout=30, what="1 and 2 loaded")
            set_version_labels(models_dir, "toy", {"stable": 2})
            for server in servers:
                wait_until(lambda: _label_version(server) == 2, timeout=30, what="stable -> 2")
            new = client.pinned("toy", version_label="stable")
            new_answers = [new.predict_response(x) for _ in range(12)]
            seen = len(old_answers)
            wait_until(lambda: len(old_answers) > seen + 10 or old_errors, timeout=30, what="old session runs")
            assert not old_errors, old_errors
            set_version_policy(models_dir, "toy", ("specific", (2,)))
            wait_until(lambda: old_errors, timeout=30, what="version 1 unloaded")
        finally:
            stop.set()
            thread.join(timeout=30)
    assert new.version == 2 and {_version_and_y(r) for r in new_answers} == {(2, 7.0)}
    assert len(old_answers) > 10 and set(old_answers) == {(1, 3.0)}  # y = 2x + 1 from version 1 only
    assert old_errors[0].code.name == "NOT_FOUND" and "version 1" in old_errors[0].details


def test_a_replica_down_from_the_start_costs_no_call(replicas):
    import numpy as np

    from genserve.clients import Client, RetryPolicy

    replicas, _ = replicas
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    with Client(f"{dead},{replicas[0].target}", timeout=10, retry=RetryPolicy.disabled()) as client:
        client.status("vae")  # waits for the first READY replica
        for _ in range(10):
            client.predict("vae", {"z": np.zeros((1, 2), np.float32)}, signature="decode")


def test_sigkill_of_a_replica_during_a_batch_run_loses_no_item_and_duplicates_none(replicas, tmp_path):
    replicas, _ = replicas
    items = 2000  # 1,000 requests of 2 rows (records arrive per chunk, 4 bursts of 500: the kill waits on requests)
    job = tmp_path / "job.jsonl"
    job.write_text("".join(json.dumps({"id": f"p{i}", "kind": "decode", "points": [[i / items, -0.5]]}) + "\n"
                           for i in range(items)))
    out = tmp_path / "out"
    results = out / "results.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    batch = subprocess.Popen([sys.executable, "-m", "genserve", "batch", "run", str(job), "--out", str(out),
                              "--target", _target(replicas), "--max-rows", "2", "--concurrency", "4",
                              "--timeout", "60", "--quiet"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    before = sum(_requests_ok(server) for server in replicas)
    answered = lambda: sum(_requests_ok(server) for server in replicas) - before  # noqa: E731
    try:
        wait_until(lambda: answered() >= 100 or batch.poll() is not None, timeout=120, what="100 requests")
        running = batch.poll() is None
        replicas[1].kill()
        output, _ = batch.communicate(timeout=180)
    finally:
        if batch.poll() is None:
            batch.kill()
    assert batch.returncode == 0, output
    assert running, "the job finished before the kill: nothing was tested"
    records = [json.loads(line) for line in results.read_text().splitlines()]
    ids = [record["id"] for record in records]
    assert len(ids) == len(set(ids)) == items  # no item lost, none written twice
    assert all(record["status"] == "ok" for record in records)


def test_a_drain_says_not_serving_before_the_port_closes_and_the_client_goes_elsewhere(replicas):
    """SIGTERM: a Watch stream open on the replica sees NOT_SERVING at once (the port is still open,
    the drain lasts --drain-seconds); a Client on all three replicas keeps answering."""
    import grpc
    import numpy as np
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from genserve.clients import Client

    servers, _ = replicas
    draining = servers[2]
    channel = grpc.insecure_channel(draining.target)
    try:
        stream = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="tensorflow.serving.PredictionService"), timeout=30)
        assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
        with Client(_target(servers), timeout=30) as client:
            draining.proc.send_signal(15)  # SIGTERM
            assert next(stream).status == health_pb2.HealthCheckResponse.NOT_SERVING
            for _ in range(20):
                client.predict("toy", {"x": np.ones((1, 1), np.float32)})
    finally:
        channel.close()
    assert draining.proc.wait(timeout=30) == 0


# -- REST: CORS and readiness on one in-process server ----------------------------------------------
def _http(target: str, path: str, method: str = "GET", headers: dict | None = None):
    request = urllib.request.Request(f"http://{target}{path}", method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, dict(reply.headers)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers)


CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "POST, GET",
        "Access-Control-Allow-Headers": "Content-Type"}


@pytest.mark.parametrize("cors", [True, False])
def test_cors_headers_and_preflight_as_tf_serving(toy_models_dir, cors):
    from genserve.serving.server import ModelServer

    server = ModelServer(toy_models_dir, poll_seconds=0, rest_port=0, enable_cors_support=cors,
                         prometheus_path="/metrics")
    server.start()
    try:
        rest = server.rest_target
        answers = {
            "status": _http(rest, "/v1/models/toy"),
            "error": _http(rest, "/v1/models/nope"),
            "ready": _http(rest, "/v1/health/ready"),
            "preflight": _http(rest, "/v1/models/toy:predict", "OPTIONS", {"Origin": "https://app.example"}),
        }
        assert [status for status, _ in answers.values()] == [200, 404, 200, 200]
        for status, headers in answers.values():
            assert {k: headers.get(k) for k in CORS} == (CORS if cors else dict.fromkeys(CORS))
        # TF Serving (http_server.cc): a preflight without an http(s) Origin is FAILED_PRECONDITION (400).
        assert _http(rest, "/v1/models/toy", "OPTIONS", {"Origin": "null"})[0] == 400
        assert _http(rest, "/v1/models/toy", "OPTIONS")[0] == 400
        assert "Access-Control-Allow-Origin" not in _http(rest, "/metrics")[1]  # only /v1/ answers
        server.begin_drain()
        assert _http(rest, "/v1/health/ready")[0] == 503
    finally:
        server.stop(grace=0)
