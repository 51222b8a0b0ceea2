"""TLS on the embedded server (SSLConfig, --ssl-config-file) and in the thin client / CLI (--tls ...).

    .venv/bin/python -m pytest -q tests/test_tls.py

A throw-away CA, server certificate (SAN localhost, 127.0.0.1) and client certificate are made with the
`openssl` command at run time; real servers on 127.0.0.1, port 0; clients: genserve's Client, Google's
tensorflow_serving.apis stubs over grpc.secure_channel, and the `genserve` CLI.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
from typer.testing import CliRunner

from benchmarks.harness import make_ca, make_signed
from genserve.clients import Client, GenserveError, RetryPolicy
from genserve.serving.server import ModelServer
from genserve.serving.tls import (TlsConfigError, make_ssl_config, read_ssl_config, ssl_config_class,
                                  ssl_config_text)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")

NO_RETRY = RetryPolicy.disabled()


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    """ca.pem/.key, server.pem/.key (localhost, 127.0.0.1), client.pem/.key (signed by ca), other.pem."""
    folder = tmp_path_factory.mktemp("certs")
    make_ca(folder, "ca")
    make_ca(folder, "other")
    make_signed(folder, "server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1")
    make_signed(folder, "client", "ca", "extendedKeyUsage=clientAuth")
    return folder


def _pem(certs: Path, name: str) -> bytes:
    return (certs / name).read_bytes()


@pytest.fixture(scope="module")
def tls_server(certs, toy_models_dir):
    """"127.0.0.1:PORT" of a TLS server (no client certificates asked for)."""
    config = make_ssl_config(_pem(certs, "server.key"), _pem(certs, "server.pem"))
    with ModelServer(toy_models_dir, poll_seconds=0, ssl_config=config) as server:
        yield f"127.0.0.1:{server.port}"


@pytest.fixture(scope="module")
def mtls_server(certs, toy_models_dir, tmp_path_factory):
    """"127.0.0.1:PORT" of a TLS server that requires client certificates, configured from a file."""
    config = make_ssl_config(_pem(certs, "server.key"), _pem(certs, "server.pem"),
                             custom_ca=_pem(certs, "ca.pem"), client_verify=True)
    path = tmp_path_factory.mktemp("ssl") / "ssl.config"
    path.write_text(ssl_config_text(config))
    with ModelServer(toy_models_dir, poll_seconds=0, ssl_config=path) as server:
        yield f"127.0.0.1:{server.port}"


def _affine(client: Client) -> np.ndarray:
    x = np.array([[1.0], [2.0]], np.float32)
    return client.predict("toy", {"x": x}, signature="affine", version=1)["y"]


def test_client_with_the_right_ca_predicts(tls_server, certs):
    with Client(tls_server, timeout=10, tls=True, root_certificates=str(certs / "ca.pem")) as client:
        assert client.tls
        np.testing.assert_allclose(_affine(client), [[3.0], [5.0]])  # y = 2x + 1 (version 1)
    with Client(tls_server, timeout=10, root_certificates=_pem(certs, "ca.pem")) as client:  # implied
        assert [s.state for s in client.status("toy")] == ["AVAILABLE", "AVAILABLE"]


def test_tensorflow_serving_stubs_over_a_secure_channel(tls_server, certs):
    import tensorflow as tf
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc, predict_pb2
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    credentials = grpc.ssl_channel_credentials(root_certificates=_pem(certs, "ca.pem"))
    with grpc.secure_channel(tls_server, credentials) as channel:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "toy"
        request.model_spec.signature_name = "affine"
        request.model_spec.version.value = 2
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1.0]], np.float32)))
        reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=10)
        np.testing.assert_allclose(tf.make_ndarray(reply.outputs["y"]), [[4.0]])  # 2*1 + 2
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "toy"}), timeout=10)
        assert len(status.model_version_status) == 2


def test_plaintext_and_wrong_ca_clients_are_refused(tls_server, certs):
    with Client(tls_server, timeout=2, retry=NO_RETRY) as client, pytest.raises(GenserveError) as e:
        client.status("toy")
    assert e.value.code == grpc.StatusCode.UNAVAILABLE
    with Client(tls_server, timeout=2, retry=NO_RETRY, root_certificates=str(certs / "other.pem")) as client:
        with pytest.raises(GenserveError) as e:
            client.status("toy")
    assert e.value.code == grpc.StatusCode.UNAVAILABLE


def test_client_verify_needs_a_client_certificate(mtls_server, certs):
    ca = str(certs / "ca.pem")
    with Client(mtls_server, timeout=2, retry=NO_RETRY, root_certificates=ca) as client:
        with pytest.raises(GenserveError) as e:
            _affine(client)
    assert e.value.code == grpc.StatusCode.UNAVAILABLE
    with Client(mtls_server, timeout=10, root_certificates=ca, client_cert=str(certs / "client.pem"),
                client_key=str(certs / "client.key")) as client:
        np.testing.assert_allclose(_affine(client), [[3.0], [5.0]])
    # a certificate from another CA is refused as well
    with Client(mtls_server, timeout=2, retry=NO_RETRY, root_certificates=ca,
                client_cert=_pem(certs, "other.pem"), client_key=_pem(certs, "other.key")) as client:
        with pytest.raises(GenserveError):
            _affine(client)


def test_client_tls_argument_errors(certs):
    with pytest.raises(ValueError, match="both"):
        Client("127.0.0.1:1", client_cert=str(certs / "client.pem"))
    with pytest.raises(ValueError, match="tls=True"):
        Client("127.0.0.1:1", tls=False, root_certificates=str(certs / "ca.pem"))
    with pytest.raises(ValueError, match="cannot read"):
        Client("127.0.0.1:1", root_certificates=str(certs / "missing.pem"))
    with pytest.raises(ValueError, match="not a PEM"):
        Client("127.0.0.1:1", root_certificates=str(certs / "server.ext"))


def _cli(*args, env=None):
    from genserve.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def test_cli_client_command_over_tls(tls_server, mtls_server, certs):
    """`genserve generate` against the toy model: over TLS it reaches the server (and says the toy is
    no text model); without --tls the connection is refused (UNAVAILABLE)."""
    common = ["generate", "--model", "toy", "--length", "5", "-t", "0", "--timeout", "2"]
    over_tls = _cli(*common, "--target", tls_server, "--tls", "--ca-cert", certs / "ca.pem")
    assert over_tls.exit_code == 1
    assert "UNAVAILABLE" not in over_tls.output and "toy" in over_tls.output, over_tls.output
    plain = _cli(*common, "--target", tls_server, "--timeout", "1")
    assert plain.exit_code == 1 and "UNAVAILABLE" in plain.output, plain.output
    # mutual TLS through the environment variables; nothing of it stays behind for later clients
    env = {"GENSERVE_CA_CERT": str(certs / "ca.pem"), "GENSERVE_CLIENT_CERT": str(certs / "client.pem"),
           "GENSERVE_CLIENT_KEY": str(certs / "client.key")}
    mutual = _cli(*common, "--target", mtls_server, env=env)
    assert mutual.exit_code == 1 and "UNAVAILABLE" not in mutual.output, mutual.output
    from genserve.cli.remote import current_tls

    assert current_tls() is None and not Client(mtls_server).tls


def test_batch_run_uses_the_tls_options(tls_server, certs, tmp_path):
    """`batch run --tls --ca-cert` reaches a TLS server (the job's model is missing there: NOT_FOUND in
    the record); the same job without --tls cannot reach it and stops with one line."""
    job = tmp_path / "job.jsonl"
    job.write_text('{"id": "g", "kind": "grid", "n": 2}\n')
    over_tls = _cli("batch", "run", job, "--out", tmp_path / "tls", "--target", tls_server, "--tls",
                    "--ca-cert", certs / "ca.pem", "--timeout", "5", "--quiet")
    assert "unreachable" not in over_tls.output, over_tls.output
    assert "not found" in (tmp_path / "tls" / "results.jsonl").read_text().lower()
    plain = _cli("batch", "run", job, "--out", tmp_path / "plain", "--target", tls_server, "--timeout", "2",
                 "--quiet")
    assert plain.exit_code == 1, plain.output


def test_cli_tls_option_errors(certs):
    for args, message in [
        (["--client-cert", certs / "client.pem"], "--client-cert and --client-key go together"),
        (["--ca-cert", certs / "missing.pem"], "--ca-cert: cannot read"),
        (["--ca-cert", certs / "server.ext"], "is not a PEM file"),
        (["--ca-cert", certs], "is a directory"),
    ]:
        result = _cli("generate", "--target", "127.0.0.1:1", *args)
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    help_text = _cli("encode", "--help").output
    assert "--tls" in help_text and "--client-key" in help_text


def test_ssl_config_file_errors(certs, tmp_path):
    key, cert, ca = (_pem(certs, n).decode() for n in ("server.key", "server.pem", "ca.pem"))
    good = tmp_path / "ssl.config"
    good.write_text(ssl_config_text(make_ssl_config(key, cert, ca, True)))
    assert read_ssl_config(good).client_verify
    cases = {
        "garbled": ("server_key: {{ nonsense", "not a text-format SSLConfig"),
        "paths": (f'server_key: "{certs / "server.key"}"\nserver_cert: "{certs / "server.pem"}"',
                  "not PEM text"),
        "no_cert": (ssl_config_text(make_ssl_config(key, cert)).split("server_cert")[0], "server_cert is missing"),
        "verify_no_ca": (ssl_config_text(make_ssl_config(key, cert)) + "client_verify: true\n", "needs custom_ca"),
        "mismatch": (ssl_config_text(ssl_config_class()(server_key=_pem(certs, "client.key").decode(),
                                                        server_cert=cert)), "matching"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / f"{name}.config"
        path.write_text(text)
        with pytest.raises(TlsConfigError, match=message):
            read_ssl_config(path)
    with pytest.raises(TlsConfigError, match="cannot read"):
        read_ssl_config(tmp_path / "missing.config")
    result = _cli("serve", "--models-dir", tmp_path, "--ssl-config-file", tmp_path / "garbled.config")
    assert result.exit_code == 1 and result.output.startswith("error: --ssl-config-file: "), result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("rest_workers", [0, 2])
def test_rest_port_serves_https_with_the_same_certificate(certs, toy_models_dir, rest_workers):
    """The REST port takes the gRPC certificate: HTTPS with the right CA works, plain HTTP and an
    unknown CA do not; with client_verify, a client certificate is required there too (also when REST
    worker processes serve the port)."""
    import json
    import ssl
    import urllib.error
    import urllib.request

    config = make_ssl_config(_pem(certs, "server.key"), _pem(certs, "server.pem"),
                             custom_ca=_pem(certs, "ca.pem"), client_verify=True)
    with ModelServer(toy_models_dir, poll_seconds=0, ssl_config=config, rest_port=0,
                     rest_workers=rest_workers) as server:
        url = f"https://localhost:{server.rest_port}/v1/models/toy/versions/1:predict"
        body = json.dumps({"signature_name": "affine", "instances": [[1.0]]}).encode()
        context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        context.load_cert_chain(str(certs / "client.pem"), str(certs / "client.key"))
        with urllib.request.urlopen(urllib.request.Request(url, body), context=context, timeout=10) as r:
            assert json.loads(r.read())["predictions"] == [{"wx": [2.0], "y": [3.0]}]  # y = 2x + 1
        no_client_cert = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(urllib.request.Request(url, body), context=no_client_cert, timeout=10).read()
        wrong_ca = ssl.create_default_context(cafile=str(certs / "other.pem"))
        with pytest.raises((ssl.SSLError, urllib.error.URLError)):
            urllib.request.urlopen(urllib.request.Request(url, body), context=wrong_ca, timeout=10)
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(url.replace("https", "http"), body, timeout=10).read()


def test_tls_mismatches_fail_fast_with_the_fix(tls_server, toy_server, certs):
    """A plaintext client on a TLS port, --tls on a plaintext port and an untrusted certificate cannot be
    fixed by waiting: one line with the fix, within a second or two, not after the 20 s deadline."""
    import time

    cases = [(tls_server, {}, "speaks TLS: add --tls"),
             (toy_server, {"tls": True}, "does not speak TLS"),
             (tls_server, {"root_certificates": str(certs / "other.pem")}, "is not trusted")]
    for target, kwargs, message in cases:
        start = time.monotonic()
        with Client(target, timeout=20, **kwargs) as client, pytest.raises(GenserveError) as e:
            client.status("toy")
        assert time.monotonic() - start < 2.0, (message, e.value.details)
        assert e.value.code == grpc.StatusCode.UNAVAILABLE and message in e.value.details, e.value.details


def test_a_replica_list_over_tls_checks_the_name_as_written_and_fails_fast_per_replica(tls_server, toy_server,
                                                                                         certs):
    """A comma list of replicas (genserve.clients.replicas): the certificate is checked against the
    first entry as written (localhost, resolved once to an address), and the mismatches that waiting
    cannot fix still fail at once with the fix."""
    import time

    port = tls_server.rsplit(":", 1)[1]
    for target in (f"localhost:{port},127.0.0.1:{port}", f"{tls_server},{tls_server}"):
        with Client(target, timeout=10, root_certificates=str(certs / "ca.pem")) as client:
            np.testing.assert_allclose(_affine(client), [[3.0], [5.0]])
    for target, kwargs, message in [(f"{tls_server},{tls_server}", {}, "speaks TLS: add --tls"),
                                    (f"{toy_server},{toy_server}", {"tls": True}, "does not speak TLS")]:
        start = time.monotonic()
        with Client(target, timeout=20, **kwargs) as client, pytest.raises(GenserveError) as e:
            client.status("toy")
        assert time.monotonic() - start < 2.0, (message, e.value.details)
        assert message in e.value.details, e.value.details
