"""TF Serving's REST API on genserve's embedded server: a real aiohttp server on port 0, driven with
urllib; the same requests over gRPC (Google's PredictionServiceStub) give the same numbers for every
family (toy, VAE, text and style, each a tiny export).

    .venv/bin/python -m pytest tests/test_rest_api.py -q
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("aiohttp")

from genserve.wire.codec import from_tensor_proto, to_tensor_proto  # noqa: E402
from genserve.serving.server import ModelServer  # noqa: E402

TEXT = "a rose by any other name would smell as sweet; so romeo would, were he not romeo call'd.\n" * 20
UNITS = 16


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, toy_models_dir):
    """toy (versions 1 and 2, labels stable/canary), a one-epoch VAE and char-LSTM, style and dream on
    random-small, a one-epoch tiny GAN: every family."""
    from genserve.data import mnist
    from genserve.export.style import export_style
    from genserve.export.text import export_text
    from genserve.export.vae import export_vae
    from genserve.repository import set_version_labels
    from genserve.training import text as text_training
    from genserve.training import vae as vae_training
    from genserve.training.style import StyleConfig

    root = tmp_path_factory.mktemp("rest")
    models = root / "models"
    shutil.copytree(toy_models_dir, models)
    set_version_labels(models, "toy", {"stable": 1, "canary": 2})
    cfg = dataclasses.replace(vae_training.VAEConfig(), dataset="synthetic", epochs=1, batch_size=32)
    data = mnist.synthetic(64, 32, seed=0)
    vae_training.train(cfg, root / "vae", data=(data.x_train[..., None], data.x_test[..., None]), verbose=0)
    export_vae(root / "vae", models)
    tiny = dataclasses.replace(text_training.TextConfig(), maxlen=12, step=3, units=UNITS, batch_size=32,
                               epochs=1)
    text_training.train(tiny, root / "text", verbose=0, log=lambda line: None, text=TEXT)
    export_text(root / "text", models)
    export_style(StyleConfig(backbone="random-small"), models)
    from genserve.export.dream import DreamConfig, export_dream
    from genserve.export.gan import export_gan
    from genserve.training import gan as gan_training

    export_dream(DreamConfig(backbone="random-small", seed=1), models)
    gcfg = dataclasses.replace(gan_training.GANConfig(), dataset="synthetic", epochs=1, batch_size=32,
                               latent_dim=16, gen_filters=(16, 8), disc_filters=(8, 16), grid=2)
    gan_training.train(gcfg, root / "gan", data=mnist.synthetic(64, 8, seed=0).x_train[..., None], verbose=0)
    export_gan(root / "gan", models)
    return models


@pytest.fixture(scope="module")
def server(models_dir):
    with ModelServer(models_dir, poll_seconds=0, rest_port=0) as srv:
        yield srv


def http(srv, path: str, body=None, method: str | None = None, raw: bool = False):
    """(status, parsed JSON or text) of one request to the server's REST port."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{srv.rest_target}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    if raw:
        return status, text
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def grpc_predict(srv, model: str, signature: str, inputs: dict) -> dict:
    """The same request over gRPC with Google's stub."""
    import grpc
    from tensorflow.core.framework import tensor_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(to_tensor_proto(value, tensor_pb2.TensorProto))
    options = [("grpc.max_receive_message_length", 64 << 20)]
    with grpc.insecure_channel(srv.target, options=options) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
    return {key: from_tensor_proto(proto) for key, proto in response.outputs.items()}


def rest_predict(srv, model: str, signature: str, inputs: dict, row: bool = False) -> dict:
    """The request over REST (columnar, or row format), outputs as arrays of the gRPC dtypes."""
    if row:
        n = len(next(iter(inputs.values())))
        body = {"signature_name": signature,
                "instances": [{k: v[i].tolist() for k, v in inputs.items()} for i in range(n)]}
    else:
        body = {"signature_name": signature, "inputs": {k: v.tolist() for k, v in inputs.items()}}
    status, answer = http(srv, f"/v1/models/{model}:predict", body)
    assert status == 200, answer
    if row:
        rows = answer["predictions"]
        return {k: np.array([r[k] for r in rows]) for k in rows[0]} if isinstance(rows[0], dict) else rows
    return answer["outputs"]


rng = np.random.default_rng(0)
CASES = {  # (model, signature, inputs)
    "toy-affine": ("toy", "affine", {"x": np.array([[1.5], [-2.25], [1e-3]], np.float32)}),
    "toy-scale": ("toy", "scale", {"x": np.array([[0.1], [3.0]], np.float32),
                                   "factor": np.array([3, -2], np.int32)}),
    "vae-decode": ("vae", "decode", {"z": rng.normal(size=(3, 2)).astype(np.float32)}),
    "vae-encode": ("vae", "encode", {"images": rng.uniform(size=(2, 28, 28, 1)).astype(np.float32)}),
    "text-step": ("text", "step", {"ids": np.array([1, 2], np.int32),
                                   "h": rng.normal(size=(2, UNITS)).astype(np.float32),
                                   "c": rng.normal(size=(2, UNITS)).astype(np.float32)}),
    "text-next-char": ("text", "next_char", {"ids": rng.integers(0, 5, size=(2, 12)).astype(np.int32)}),
    "text-generate": ("text", "generate", {"ids": np.array([[1, 2, 3], [3, 2, 1]], np.int32),
                                           "temperature": np.array([0.0, 0.5], np.float32),
                                           "length": np.array([4, 4], np.int32),
                                           "seed": np.array([7, 2**40], np.int64)}),
    "style-targets": ("style", "targets", {
        "content_image": rng.uniform(0, 255, size=(1, 16, 16, 3)).astype(np.float32),
        "style_image": rng.uniform(0, 255, size=(1, 16, 16, 3)).astype(np.float32)}),
    "dream-ascend": ("dream", "ascend", {
        "image": rng.uniform(0, 255, size=(1, 32, 40, 3)).astype(np.float32),
        "step_size": np.array([0.01], np.float32), "iterations": np.array([2], np.int32),
        "max_loss": np.array([np.inf], np.float32)}),  # Infinity travels in REST JSON too
    "dream-gradient": ("dream", "gradient", {
        "image": rng.uniform(0, 255, size=(2, 32, 32, 3)).astype(np.float32)}),
    "gan-generate": ("gan", "generate", {"z": rng.normal(size=(2, 16)).astype(np.float32)}),
    "gan-sample": ("gan", "sample", {"seed": np.array([1, 2**40], np.int64)}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rest_and_grpc_give_the_same_numbers(server, case):
    model, signature, inputs = CASES[case]
    expected = grpc_predict(server, model, signature, inputs)
    got = rest_predict(server, model, signature, inputs)
    if len(expected) == 1:  # a single output is answered without its name
        got = {next(iter(expected)): got}
    assert set(got) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(np.asarray(got[key], dtype=value.dtype), value, err_msg=key)


def test_style_step_takes_the_targets_outputs(server):
    _, _, target_inputs = CASES["style-targets"]
    targets = grpc_predict(server, "style", "targets", target_inputs)
    inputs = {"image": target_inputs["content_image"], **targets}
    expected = grpc_predict(server, "style", "step", inputs)
    got = rest_predict(server, "style", "step", inputs, row=True)
    for key, value in expected.items():
        np.testing.assert_array_equal(np.asarray(got[key], dtype=value.dtype), value, err_msg=key)


def test_row_format_single_output_is_a_list_without_the_name(server):
    z = CASES["vae-decode"][2]["z"]
    status, answer = http(server, "/v1/models/vae/versions/1:predict",
                          {"signature_name": "decode", "instances": z.tolist()})
    assert status == 200 and set(answer) == {"predictions"}
    images = np.array(answer["predictions"], np.float32)
    np.testing.assert_array_equal(images, grpc_predict(server, "vae", "decode", {"z": z})["images"])


def test_toy_versions_labels_and_formats(server):
    """y = 2x + bias (bias 1 in version 1, 2 in version 2); floats written as TF Serving writes them."""
    body = {"signature_name": "affine", "instances": [[1.0], [2.5]]}
    _, latest = http(server, "/v1/models/toy:predict", body, raw=True)
    assert json.loads(latest) == {"predictions": [{"wx": [2.0], "y": [4.0]}, {"wx": [5.0], "y": [7.0]}]}
    assert "[2.0]" in latest  # whole floats keep '.0', as TF Serving's WriteDecimal
    for path, y0 in (("/versions/1", 3.0), ("/labels/stable", 3.0), ("/labels/canary", 4.0),
                     ("/VERSIONS/2", 4.0)):
        status, answer = http(server, f"/v1/models/toy{path}:predict", body)
        assert status == 200 and answer["predictions"][0]["y"] == [y0], (path, answer)
    status, answer = http(server, "/v1/models/toy:predict", {"signature_name": "affine",
                                                              "inputs": {"x": [[1.0]], "extra": 1}})
    assert status == 200 and answer == {"outputs": {"wx": [[2.0]], "y": [[4.0]]}}  # extra keys ignored
    _, nan = http(server, "/v1/models/toy:predict",
                  b'{"signature_name": "affine", "inputs": [[NaN], [Infinity], [-Infinity]]}', raw=True)
    assert json.loads(nan)["outputs"]["y"] and "NaN" in nan and "-Infinity" in nan


@pytest.mark.parametrize("path,body,status,message", [
    ("/v1/models/nope:predict", {"inputs": [[1.0]]}, 404, "Servable not found"),
    ("/v1/models/toy/versions/9:predict", {"inputs": [[1.0]]}, 404, "Specific(toy, 9)"),
    ("/v1/models/toy/labels/nope:predict", {"inputs": [[1.0]]}, 400, "Unrecognized servable version label"),
    ("/v1/models/toy:predict", b"{not json", 400, "JSON Parse error"),
    ("/v1/models/toy:predict", b"", 400, "The document is empty"),
    ("/v1/models/toy:predict", [1, 2], 400, "Is not object"),
    ("/v1/models/toy:predict", {"inputs": [[1.0]], "instances": [[1.0]]}, 400, "only one of"),
    ("/v1/models/toy:predict", {"signature": "affine"}, 400, "Missing 'inputs' or 'instances' key"),
    ("/v1/models/toy:predict", {"instances": []}, 400, "No values in 'instances' array"),
    ("/v1/models/toy:predict", {"signature_name": 3, "inputs": [1]}, 400, "must be a string value"),
    ("/v1/models/toy:predict", {"signature_name": "nope", "inputs": [1]}, 400, "not found in signature def"),
    ("/v1/models/toy:predict", {"signature_name": "affine", "inputs": [[1.0], [2.0, 3.0]]}, 400,
     "Encountered list at unexpected size"),
    ("/v1/models/toy:predict", {"signature_name": "affine", "inputs": [["a"]]}, 400,
     "is not of expected type: float"),
    ("/v1/models/toy:predict", {"signature_name": "affine", "inputs": [1.0, 2.0]}, 400,
     "expected float32[?,1]"),
    ("/v1/models/toy:predict", {"signature_name": "scale", "inputs": {"x": [[1.0]], "factor": [1.5]}}, 400,
     "is not of expected type: int32"),
    ("/v1/models/toy:predict", {"signature_name": "scale", "inputs": {"x": [[1.0]]}}, 400,
     "Missing named input: factor"),
    ("/v1/models/toy:predict", {"signature_name": "scale", "instances": [[1.0]]}, 400,
     "instances is a plain list"),
    ("/v1/models/toy:predict", {"signature_name": "scale", "instances": [{"x": [1.0]}]}, 400,
     "keys must be equal to: factor,x"),
    ("/v1/models/toy:classify", {"examples": []}, 501, ":classify"),
    ("/v1/models/toy:regress", {"examples": []}, 501, ":regress"),
    ("/v1/models/toy", {"inputs": [1]}, 400, "Malformed request: POST /v1/models/toy"),
    ("/v1/models", None, 400, "Missing model name in request."),
    ("/v1/models/toy/versions/99999999999999999999", None, 400, "Failed to convert version"),
])
def test_errors_have_tf_servings_status_and_shape(server, path, body, status, message):
    got, answer = http(server, path, body)
    assert got == status, answer
    assert set(answer) == {"error"} and message in answer["error"], answer


def test_methods_and_paths_outside_the_api(server):
    status, answer = http(server, "/v1/models/toy:predict", method="GET")
    assert status == 400 and answer["error"] == "Malformed request: GET /v1/models/toy:predict"
    status, answer = http(server, "/v1/models/toy", b"{}", method="PUT")
    assert status == 400 and "Malformed request: PUT" in answer["error"]
    assert http(server, "/v2/models/toy")[0] == 404
    assert http(server, "/monitoring/prometheus/metrics")[0] == 404  # no MonitoringConfig given
    assert http(server, "/v1/models/toy", method="OPTIONS")[0] == 400  # CORS preflight needs an Origin


def test_model_status_is_tf_servings_json_and_a_readiness_probe(server):
    status, answer = http(server, "/v1/models/toy")
    assert status == 200
    assert answer == {"model_version_status": [
        {"version": v, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        for v in ("1", "2")]}
    assert http(server, "/v1/models/toy/labels/canary")[1]["model_version_status"][0]["version"] == "2"
    assert http(server, "/v1/models/toy/versions/1")[1]["model_version_status"][0]["state"] == "AVAILABLE"
    assert http(server, "/v1/models/nope")[0] == 404  # not ready: a probe fails
    assert http(server, "/v1/models/toy/versions/7")[0] == 404


def test_metadata_is_tf_servings_json(server):
    status, answer = http(server, "/v1/models/toy/versions/1/metadata")
    assert status == 200
    assert answer["model_spec"] == {"name": "toy", "signature_name": "", "version": "1"}
    signatures = answer["metadata"]["signature_def"]["signature_def"]
    assert {"affine", "scale", "serving_default"} <= set(signatures)
    x = signatures["affine"]["inputs"]["x"]
    assert x["dtype"] == "DT_FLOAT" and [d["size"] for d in x["tensor_shape"]["dim"]] == ["-1", "1"]
    assert http(server, "/v1/models/text/metadata")[1]["model_spec"]["name"] == "text"


def test_strings_and_int64_travel_as_tf_serving_writes_them(server):
    status, answer = http(server, "/v1/models/text:predict", {"signature_name": "info", "inputs": [0]})
    assert status == 200
    vocabulary = answer["outputs"]["vocabulary"][0]
    assert all(isinstance(ch, str) for ch in vocabulary) and "r" in vocabulary  # text, not {"b64": ...}
    seeds = {"signature_name": "generate", "inputs": {"ids": [[1, 2]], "temperature": [0.0], "length": [2],
                                                       "seed": [2**63]}}
    status, answer = http(server, "/v1/models/text:predict", seeds)
    assert status == 400 and "is not of expected type: int64" in answer["error"]


def test_body_limit_keep_alive_and_concurrency(toy_models_dir):
    from http.client import HTTPConnection

    with ModelServer(toy_models_dir, poll_seconds=0, rest_port=0, max_message_bytes=4096) as srv:
        assert srv.rest_port not in (0, srv.port)
        body = json.dumps({"signature_name": "affine", "inputs": [[1.0]] * 1000}).encode()
        assert http(srv, "/v1/models/toy:predict", body)[0] == 413
        conn = HTTPConnection(srv.host, srv.rest_port, timeout=30)  # one connection, kept alive
        for i in range(3):
            conn.request("POST", "/v1/models/toy:predict",
                         json.dumps({"signature_name": "affine", "inputs": [[float(i)]]}))
            response = conn.getresponse()
            assert response.status == 200 and json.loads(response.read())["outputs"]["y"] == [[2.0 * i + 2]]
        conn.close()
        results = []

        def one(i):
            results.append(http(srv, "/v1/models/toy:predict", {"signature_name": "affine",
                                                                 "inputs": [[float(i)]]})[1]["outputs"]["y"])

        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(r[0][0] for r in results) == [2.0 * i + 2 for i in range(8)]
    with socket.socket() as s:  # the listener is gone after stop (closed connections may sit in TIME_WAIT)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", srv.rest_port))
        s.listen()


def test_rest_port_must_differ_and_a_taken_port_fails_cleanly(toy_models_dir):
    with pytest.raises(ValueError, match="must differ"):
        ModelServer(toy_models_dir, port=18500, rest_port=18500)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        srv = ModelServer(toy_models_dir, poll_seconds=0, rest_port=taken)
        with pytest.raises(OSError, match="REST"):
            srv.start()
        assert srv._grpc is None  # the gRPC server it had started is stopped again


def _raw_http(srv, head: bytes, body: bytes = b"", timeout: float = 30) -> tuple[int, bytes]:
    """(status, body) of one hand-written HTTP/1.1 request (headers the client libraries would fix)."""
    with socket.create_connection((srv.host, srv.rest_port), timeout=timeout) as conn:
        conn.sendall(head + b"\r\n" + body)
        data = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
            header, _, rest = data.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", header)
            if length and len(rest) >= int(length.group(1)):
                break
    header, _, rest = data.partition(b"\r\n\r\n")
    return int(header.split()[1]), rest


def _post_head(path: str, length: int, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {length}", *extra]
    return "".join(line + "\r\n" for line in lines).encode()


def test_rest_body_edges(toy_models_dir):
    """Issue 16: each of these answered 500, stalled or was accepted before."""
    import gzip

    path = "/v1/models/toy:predict"
    with ModelServer(toy_models_dir, poll_seconds=0, rest_port=0, max_message_bytes=1 << 20,
                     body_timeout_seconds=1.0) as srv:
        for depth in (65, 500, 989):  # too deep for a tensor: 400, not 500
            body = b'{"instances": ' + b"[" * depth + b"1.0" + b"]" * depth + b"}"
            status, answer = http(srv, path, body)
            assert status == 400 and "error" in answer, (depth, status, answer)
        status, text = _raw_http(srv, _post_head(path, 10, "Content-Encoding: gzip"), b"not gzip!!")
        assert status == 400 and "decompress" in json.loads(text)["error"]
        utf16 = json.dumps({"instances": [[1.0]]}).encode("utf-16")
        status, answer = http(srv, path, utf16)
        assert status == 400 and "UTF-8" in answer["error"]
        ok = gzip.compress(json.dumps({"instances": [[1.0]]}).encode())
        status, text = _raw_http(srv, _post_head(path, len(ok), "Content-Encoding: gzip"), ok)
        assert status == 200 and json.loads(text)["predictions"][0]["y"] == [4.0]  # version 2: bias 2
        start = time.monotonic()  # a declared length beyond the limit: answered before any body
        status, _ = _raw_http(srv, _post_head(path, 10**12), b'{"instances"')
        assert status == 413 and time.monotonic() - start < 5
        start = time.monotonic()  # a body that never completes: 408 after body_timeout_seconds
        status, text = _raw_http(srv, _post_head(path, 1000), b'{"instances"')
        assert status == 408 and "did not arrive" in json.loads(text)["error"]
        assert time.monotonic() - start < 5
        bomb = gzip.compress(b" " * (64 << 20), 9)  # 64 KiB that inflate to 64 MiB (limit: 1 MiB)
        assert len(bomb) < 1 << 20
        results = []

        def send():
            results.append(_raw_http(srv, _post_head(path, len(bomb), "Content-Encoding: gzip"), bomb)[0])

        threads = [threading.Thread(target=send) for _ in range(8)]
        start = time.monotonic()
        for thread in threads:
            thread.start()
        assert http(srv, "/v1/models/toy")[0] == 200  # the event loop stays free meanwhile
        for thread in threads:
            thread.join(30)
        took = time.monotonic() - start
        # each inflated only up to the limit, off the event loop: 0.08-0.12 s here, where inflating
        # every bomb whole on the event loop took 1.6-4.2 s
        assert results == [413] * 8 and took < 1.0, took


def test_small_and_large_bodies_get_the_same_answers(server):
    """A predict body up to INLINE_PARSE_BYTES is parsed on the event loop, a larger one on a worker
    thread: the same answers and errors either way (trailing whitespace keeps the JSON the same)."""
    from genserve.serving.rest_api import INLINE_PARSE_BYTES

    pad = b" " * INLINE_PARSE_BYTES
    for body in (b'{"signature_name": "affine", "instances": [[1.0], [2.5]]}',
                 b'{"signature_name": "affine", "inputs": [["a"]]}', b"{not json", b"[1, 2]"):
        small = http(server, "/v1/models/toy:predict", body, raw=True)
        assert small == http(server, "/v1/models/toy:predict", body + pad, raw=True), small


def test_the_rest_event_loop_is_uvloops_where_installed(server):
    uvloop = pytest.importorskip("uvloop")
    assert isinstance(server._rest.loop, uvloop.Loop)
