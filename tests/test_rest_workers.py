"""REST worker processes (`--rest-workers N`, serving/rest_workers.py): the same answers, byte for byte,
as the REST server in the model process; metrics that count their requests; a drain on SIGTERM after
which no worker is left; no worker left behind a SIGKILLed server; no TensorFlow in a worker.

    .venv/bin/python -m pytest tests/test_rest_workers.py -q
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
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

pytest.importorskip("tensorflow")
pytest.importorskip("aiohttp")

from benchmarks.harness import export_untrained_vae, free_port  # noqa: E402
from benchmarks.rest_cpu import children  # noqa: E402
from genserve.serving.metrics import DEFAULT_PATH  # noqa: E402
from genserve.serving.server import ModelServer  # noqa: E402
from tests.conftest import wait_until  # noqa: E402

GENSERVE = str(Path(sys.executable).with_name("genserve"))
VAE_Z = np.random.default_rng(0).standard_normal((3, 2)).astype(np.float32)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, toy_models_dir):
    """toy versions 1 and 2 (labels stable/canary) and an untrained book-size VAE."""
    from genserve.repository import set_version_labels

    root = tmp_path_factory.mktemp("rest_workers")
    models = root / "models"
    shutil.copytree(toy_models_dir, models)
    set_version_labels(models, "toy", {"stable": 1, "canary": 2})
    export_untrained_vae(models, root / "vae-work", version=1)
    return models


@pytest.fixture(scope="module")
def servers(models_dir):
    """The same models served twice: REST in the model process, and from 2 REST worker processes."""
    options = dict(poll_seconds=0, rest_port=0, prometheus_path=DEFAULT_PATH, max_message_bytes=32 << 10)
    with ModelServer(models_dir, **options) as local, ModelServer(models_dir, rest_workers=2, **options) as workers:
        yield local, workers


def http(target: str, path: str, body: bytes | None = None, method: str | None = None,
         headers: dict | None = None) -> tuple[int, str, bytes]:
    """(status, Content-Type, body bytes) of one request."""
    request = urllib.request.Request(f"http://{target}{path}", data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers.get("Content-Type"), response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def _json(value) -> bytes:
    return json.dumps(value).encode()


PREDICT = "/v1/models/toy:predict"
CASES = [  # (method, path, body, headers)
    ("POST", PREDICT, _json({"signature_name": "affine", "instances": [[1.5], [-2.25], [1e-3]]}), None),
    ("POST", PREDICT, _json({"signature_name": "affine", "inputs": [[0.1], [3.0]]}), None),
    ("POST", PREDICT, _json({"signature_name": "scale", "inputs": {"x": [[0.1], [3.0]], "factor": [3, -2]}}), None),
    ("POST", PREDICT, _json({"signature_name": "scale", "instances": [{"x": [0.1], "factor": 3}]}), None),
    ("POST", "/v1/models/toy/versions/1:predict", _json({"signature_name": "affine", "inputs": [[2.0]]}), None),
    ("POST", "/v1/models/toy/labels/canary:predict", _json({"signature_name": "affine", "inputs": [[2.0]]}), None),
    ("POST", "/v1/models/vae:predict", _json({"instances": VAE_Z.tolist()}), None),
    ("POST", "/v1/models/vae:predict", _json({"signature_name": "decode", "inputs": {"z": VAE_Z.tolist()}}), None),
    ("POST", PREDICT, gzip.compress(_json({"signature_name": "affine", "inputs": [[7.0]]})),
     {"Content-Encoding": "gzip"}),
    # errors
    ("POST", PREDICT, b'{"instances": [[1.0]', None),  # 400: JSON
    ("POST", PREDICT, _json({"signature_name": "affine", "inputs": [["x"]]}), None),  # 400: dtype
    ("POST", PREDICT, _json({"signature_name": "nope", "inputs": [[1.0]]}), None),  # 400: signature
    ("POST", "/v1/models/nope:predict", _json({"inputs": [[1.0]]}), None),  # 404: model
    ("POST", "/v1/models/toy/versions/9:predict", _json({"inputs": [[1.0]]}), None),  # 404: version
    ("POST", "/v1/models/toy/labels/nope:predict", _json({"inputs": [[1.0]]}), None),  # 400: label
    ("POST", "/v1/models/toy:classify", _json({"examples": []}), None),  # 501
    ("POST", PREDICT, b"x" * (64 << 10), None),  # 413: beyond --max-message-mb
    ("POST", PREDICT, b"not gzip", {"Content-Encoding": "gzip"}),  # 400: does not inflate
    ("PUT", PREDICT, b"{}", None),  # 400: malformed request
    ("GET", "/v1/models", None, None),  # 400: no model name
    ("GET", "/elsewhere", None, None),  # 404 outside /v1/
    ("OPTIONS", PREDICT, None, {"Origin": "http://x"}),
    # metadata and status
    ("GET", "/v1/models/toy", None, None),
    ("GET", "/v1/models/toy/versions/1", None, None),
    ("GET", "/v1/models/toy/labels/stable", None, None),
    ("GET", "/v1/models/toy/metadata", None, None),
    ("GET", "/v1/models/vae/versions/1/metadata", None, None),
    ("GET", "/v1/health/ready", None, None),
]


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{m} {p}" for m, p, *_ in CASES])
def test_workers_answer_byte_for_byte_as_the_model_process(servers, case):
    local, workers = servers
    method, path, body, headers = CASES[case]
    expected = http(local.rest_target, path, body, method, headers)
    got = http(workers.rest_target, path, body, method, headers)
    assert got == expected
    if path.startswith("/v1/models/vae") and method == "POST":
        assert expected[0] == 200 and len(expected[2]) > 3 * 784 * 5  # 784 floats a row, written out


def test_worker_requests_are_counted_and_workers_import_no_tensorflow(servers):
    local, workers = servers
    page = http(workers.rest_target, DEFAULT_PATH)[2].decode()
    before = _count(page, "toy", "OK")
    body = _json({"signature_name": "affine", "inputs": [[1.0]]})
    for _ in range(3):
        assert http(workers.rest_target, PREDICT, body)[0] == 200
    assert http(workers.rest_target, "/v1/models/nope:predict", body)[0] == 404
    page = http(workers.rest_target, DEFAULT_PATH)[2].decode()
    assert _count(page, "toy", "OK") == before + 3
    assert _count(page, "nope", "NOT_FOUND") >= 1
    assert re.search(r'request_latency_count\{API="predict",entrypoint="REST",model_name="toy"\}', page)
    pids = workers._rest.pids
    assert len(pids) == 2 and os.getpid() not in pids
    for pid in pids:  # a worker holds no TensorFlow library (and so stays small)
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "tensorflow" not in maps, [line for line in maps.splitlines() if "tensorflow" in line][:3]


def _count(page: str, model: str, status: str) -> float:
    match = re.search(rf':tensorflow:serving:request_count_total\{{model_name="{model}",status="{status}"\}} (\S+)',
                      page)
    return float(match.group(1)) if match else 0.0


def test_drain_answers_503_like_the_model_process_and_ends_the_workers(models_dir):
    with ModelServer(models_dir, poll_seconds=0, rest_port=0) as local, \
            ModelServer(models_dir, poll_seconds=0, rest_port=0, rest_workers=2) as workers:
        pids = workers._rest.pids
        ours = set(pids) | {os.getpid()}
        assert ours & _listeners(workers.rest_port)  # the check below can see our own listeners
        for srv in (local, workers):
            srv.begin_drain()
        body = _json({"signature_name": "affine", "inputs": [[1.0]]})
        expected = http(local.rest_target, PREDICT, body)
        assert expected[0] == 503 and http(workers.rest_target, PREDICT, body) == expected
        assert http(workers.rest_target, "/v1/health/ready") == http(local.rest_target, "/v1/health/ready")
    wait_until(lambda: not any(_alive(pid) for pid in pids), 10, "the workers gone")
    # The REST port is released: nothing of ours listens on it (binding it to check would race a
    # parallel test that the kernel gave the freed port to).
    assert not ours & _listeners(workers.rest_port)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited (its parent has not reaped it yet)


def _serve(models: Path, tmp_path: Path, *extra: str):
    """`genserve serve --rest-workers 2` in a subprocess; (process, REST target, log) once it serves."""
    rest_port = free_port()
    log = tmp_path / "server.log"
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }\n')
    with open(log, "w") as err:
        proc = subprocess.Popen([GENSERVE, "serve", "--models-dir", str(models), "--port", "0", "--poll-seconds", "0",
                                 "--rest-port", str(rest_port), "--rest-workers", "2",
                                 "--monitoring-config-file", str(monitoring), *extra],
                                stdout=subprocess.PIPE, stderr=err, text=True,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    line = proc.stdout.readline()
    assert " on 127.0.0.1:" in line, (line, log.read_text()[-2000:])
    return proc, f"127.0.0.1:{rest_port}", log


def test_sigterm_drains_requests_in_flight_and_every_worker_exits(blocking_models_dir, tmp_path):
    """A REST request in flight on a blocking model (it ends at --max-request-seconds 3), SIGTERM: a new
    request is refused at once (503), the one in flight still gets its answer, and the server and both
    workers are gone after the drain."""
    proc, rest, log = _serve(blocking_models_dir, tmp_path, "--max-request-seconds", "3", "--drain-seconds", "10")
    try:
        workers = children(proc.pid)
        assert len(workers) == 2, workers
        answers = []
        body = _json({"inputs": [[1.0]]})
        thread = threading.Thread(target=lambda: answers.append(http(rest, "/v1/models/dream:predict", body)))
        thread.start()

        def in_flight() -> float:
            page = http(rest, "/monitoring/prometheus/metrics")[2].decode()
            return float(re.search(r"^:genserve:serving:requests_in_flight (\S+)$", page, re.M).group(1))

        wait_until(lambda: in_flight() == 1, 30, "the request in flight")
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: http(rest, PREDICT, _json({"inputs": [[1.0]]}))[0] == 503, 5, "new requests refused")
        assert time.monotonic() - start < 1.5
        thread.join(30)
        assert answers and answers[0][0] == 504 and b"error" in answers[0][2]  # answered, not cut off
        assert proc.wait(30) == 0
        wait_until(lambda: not any(_alive(pid) for pid in workers), 30, "the workers gone")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text()


def _listeners(port: int) -> set[int]:
    """The ids of the processes holding a listening TCP socket on `port` (from /proc/net/tcp*)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    holders = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                    holders.add(int(entry.name))
            except OSError:  # gone, or not ours to read
                pass
    return holders


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for child in children(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def test_no_worker_outlives_a_sigkilled_server(models_dir, tmp_path):
    proc, rest, _ = _serve(models_dir, tmp_path)
    try:
        assert http(rest, "/v1/health/ready")[0] == 200
        workers = children(proc.pid)
        assert len(workers) == 2, workers
        ours = _descendants(proc.pid) | {proc.pid}
        port = int(rest.rsplit(":", 1)[1])
        assert ours & _listeners(port)  # the check below can see our own listeners
        proc.kill()
        proc.wait()
        wait_until(lambda: not any(_alive(pid) for pid in workers), 30, "the workers gone")
        # Nothing of this server listens on the REST port any more. (Whether anything at all does is
        # not ours to say: the kernel hands a freed port to the next bind(0), e.g. a parallel test's.)
        assert not ours & _listeners(port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_rest_workers_need_a_rest_port(toy_models_dir):
    from typer.testing import CliRunner

    from genserve.cli import app

    result = CliRunner().invoke(app, ["serve", "--models-dir", str(toy_models_dir), "--rest-workers", "2"])
    assert result.exit_code == 1 and "--rest-workers" in result.output and "--rest-port" in result.output
    assert len(result.output.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="rest_port"):
        ModelServer(toy_models_dir, rest_workers=2)
    assert "--rest-workers" in CliRunner().invoke(app, ["serve", "--help"]).output


def test_a_worker_that_dies_is_replaced(toy_models_dir):
    with ModelServer(toy_models_dir, poll_seconds=0, rest_port=0, rest_workers=2) as srv:
        first, second = srv._rest.pids
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: first not in srv._rest.pids and len(srv._rest.pids) == 2, 30, "a new worker")
        replacement = next(pid for pid in srv._rest.pids if pid != second)
        wait_until(lambda: srv._rest.workers[srv._rest.pids.index(replacement)].ready.is_set(), 60, "it serves")
        body = _json({"signature_name": "affine", "inputs": [[1.0]]})
        for _ in range(4):  # whichever worker accepts the connection answers
            assert http(srv.rest_target, "/v1/models/toy/versions/1:predict", body)[:1] == (200,)
    assert not _alive(replacement) and not _alive(second)


def test_version_policy_changes_reach_the_workers_at_once(toy_models_copy):
    """Versions are resolved in the server process: a models.config change is what the workers serve
    from the next request on."""
    from genserve.repository import set_version_policy

    body = _json({"signature_name": "affine", "inputs": [[1.0]]})
    with ModelServer(toy_models_copy, poll_seconds=0, rest_port=0, rest_workers=2) as srv:
        assert json.loads(http(srv.rest_target, PREDICT, body)[2])["outputs"]["y"] == [[4.0]]  # version 2: b = 2
        set_version_policy(toy_models_copy, "toy", ("specific", (1,)))
        srv.registry.refresh()
        assert json.loads(http(srv.rest_target, PREDICT, body)[2])["outputs"]["y"] == [[3.0]]  # version 1: b = 1
        assert http(srv.rest_target, "/v1/models/toy/versions/2:predict", body)[0] == 404
