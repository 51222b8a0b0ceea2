"""Issue 12, client side: retries across a server restart, version pinning, --target validation.

    .venv/bin/python -m pytest -q tests/test_hardening_clients.py

Real embedded servers on 127.0.0.1 (port 0, then restarted on the SAME port); no mocks of the wire.
"""

from __future__ import annotations

import shutil
import threading
import time

import grpc
import numpy as np
import pytest
from typer.testing import CliRunner

from genserve.cli.options import parse_target
from genserve.clients import Client, GenserveError, PinnedModel, RetryPolicy


def _affine(client_or_pinned, **kwargs) -> float:
    out = client_or_pinned.predict(inputs={"x": np.array([[1.0]], np.float32)}, signature="affine", **kwargs) \
        if isinstance(client_or_pinned, PinnedModel) else \
        client_or_pinned.predict("toy", {"x": np.array([[1.0]], np.float32)}, signature="affine", **kwargs)
    return float(out["y"][0, 0])


# --- 1. retries until the deadline, across a restart on the same port -------------------------------
def test_call_survives_a_server_restart_on_the_same_port(toy_models_dir):
    from genserve.serving.server import ModelServer

    first = ModelServer(toy_models_dir, port=0, poll_seconds=0)
    port = first.start()
    restarted: list = []
    try:
        with Client(f"127.0.0.1:{port}", timeout=15.0) as client:
            assert _affine(client) == 2.0 + 2.0  # latest toy: y = 2x + 2
            first.stop(grace=0)

            def restart():
                time.sleep(2.5)  # a restart takes seconds: longer than 5 fixed attempts used to last
                server = ModelServer(toy_models_dir, port=port, poll_seconds=0)
                server.start()
                restarted.append(server)

            thread = threading.Thread(target=restart)
            thread.start()
            start = time.monotonic()
            y = _affine(client)  # issued while nothing listens: retried until the server is back
            elapsed = time.monotonic() - start
            thread.join()
        assert y == 4.0 and 2.0 < elapsed < 12.0
    finally:
        first.stop(grace=0)
        for server in restarted:
            server.stop(grace=0)


def test_short_deadline_gives_one_clear_line(refused_target):
    with Client(refused_target, timeout=0.6) as client:
        start = time.monotonic()
        with pytest.raises(GenserveError) as info:
            client.status("toy")
        elapsed = time.monotonic() - start
    error = info.value
    assert error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert "\n" not in str(error) and "attempt(s)" in error.details and "deadline 0.6 s" in error.details
    assert elapsed < 1.5
    with Client(refused_target, timeout=5.0, retry=RetryPolicy.disabled()) as client:
        start = time.monotonic()
        with pytest.raises(GenserveError) as info:
            client.status("toy")
    assert "1 attempt(s)" in info.value.details and time.monotonic() - start < 1.0


def test_backoff_grows_is_capped_and_jittered():
    policy = RetryPolicy(initial_backoff=0.1, multiplier=2.0, max_backoff=1.0, jitter=0.2)
    waits = [policy.backoff(k) for k in range(1, 12)]
    assert 0.1 <= waits[0] <= 0.12 and 0.2 <= waits[1] <= 0.24
    assert all(1.0 <= w <= 1.2 for w in waits[5:])
    assert len({round(w, 6) for w in waits[5:]}) > 1  # jitter spreads clients out
    assert RetryPolicy().max_attempts is None  # no fixed count: the deadline decides
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


# --- 2. version pinning -------------------------------------------------------------------------------
def test_pinned_model_keeps_its_version_while_a_new_one_loads(toy_models_dir, tmp_path):
    from genserve.export.toy import ToyConfig, export_toy
    from genserve.serving.server import serve

    models = tmp_path / "models"
    shutil.copytree(toy_models_dir, models)
    with serve(models, poll_seconds=0.2) as target, Client(target, timeout=20) as client:
        pinned = client.pinned("toy")
        assert pinned.version == 2 and "affine" in pinned.signatures
        assert client.resolve_version("toy") == 2
        lazy = client.pinned("toy", lazy=True)  # the families' way: the first answer pins
        assert lazy.version is None and lazy.requests == 0
        assert _affine(lazy) == 4.0 and lazy.version == 2 and lazy.requests == 1  # no extra request
        export_toy(models, ToyConfig(bias=30.0), version=3)
        deadline = time.monotonic() + 15
        while client.resolve_version("toy") != 3:
            assert time.monotonic() < deadline, "version 3 never loaded"
            time.sleep(0.1)
        assert _affine(client) == 32.0  # unpinned: the new latest
        assert _affine(pinned) == 4.0  # pinned: still version 2
        assert _affine(lazy) == 4.0 and lazy.version == 2
        gone = PinnedModel(client, "toy", 77)
        with pytest.raises(GenserveError) as info:
            _affine(gone)
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert "version 77 of model 'toy' is no longer served" in info.value.details
    assert "run again" in info.value.details


def test_vae_and_style_clients_pin_through_core(toy_models_dir):
    """VAEModel/RemoteStyle resolve the version once via Client.pinned (checked on the toy's metadata:
    the wrong-model error comes from the pinned signatures, and the version is filled in)."""
    from genserve.clients.style import RemoteStyle
    from genserve.clients.vae import VAEModel
    from genserve.serving.server import serve

    with serve(toy_models_dir, poll_seconds=0) as target, Client(target, timeout=20) as client:
        vae = VAEModel(client, model="toy")
        with pytest.raises(ValueError, match="is it a VAE"):
            vae.latent_dim
        assert vae.version == 2
        style = RemoteStyle(client, model="toy", version=1)
        with pytest.raises(ValueError, match="is it a style export"):
            style.layers()
        assert style.version == 1 and style.pinned().version == 1
        from genserve.clients.gan import GANModel

        with pytest.raises(ValueError, match="is it a GAN"):  # not a raw "signature not found"
            GANModel(client, model="toy").grid(2)
        with pytest.raises(GenserveError) as info:
            VAEModel(client, model="toy", version=99).latent_dim
        assert info.value.code == grpc.StatusCode.NOT_FOUND
        assert "'toy' serves version(s): 2, 1" in info.value.details or \
            "'toy' serves version(s): 1, 2" in info.value.details, info.value.details


@pytest.mark.parametrize("command", [["stylize", "{a}", "{b}", "-o", "{a}"], ["stylize", "{a}", "{b}", "-o", "{b}"],
                                     ["dream", "{a}", "-o", "{a}"]])
def test_an_output_never_overwrites_an_input(command, tmp_path):
    from genserve.cli import app

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"photo a")
    b.write_bytes(b"photo b")
    args = [part.format(a=a, b=b) for part in command]
    result = CliRunner().invoke(app, [*args, "--target", "127.0.0.1:1"])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert "is also an input" in result.stderr
    assert a.read_bytes() == b"photo a" and b.read_bytes() == b"photo b"


# --- 3. --target -------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["127.0.0.1:84036", "127.0.0.1:0", ":8500", "localhost", "a b:1",
                                 "host:port", "127.0.0.1:-5"])
def test_parse_target_rejects(bad):
    with pytest.raises(ValueError):
        parse_target(bad)


def test_parse_target_accepts():
    for good in ("127.0.0.1:8500", "localhost:1", "[::1]:65535", "my-host.example.com:8500",
                 "dns:///serving:8500", "unix:/tmp/genserve.sock"):
        assert parse_target(good) == good


@pytest.mark.parametrize("command", [["grid"], ["encode"], ["stylize", "a.png", "b.png", "-o", "x.png"],
                                     ["generate"]])
def test_every_client_command_rejects_a_bad_target_in_one_line(command, tmp_path):
    from genserve.cli import app

    result = CliRunner().invoke(app, [*command, "--target", "127.0.0.1:84036"])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: --target") and result.stderr.count("\n") == 1
    assert "65535" in result.stderr
    result = CliRunner().invoke(app, ["grid"], env={"GENSERVE_TARGET": "nohost"})
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and "host:port" in result.stderr


# --- 4. what retrying cannot fix fails at once; what it can is announced --------------------------------
def test_dns_failure_fails_fast_with_the_cause():
    start = time.monotonic()
    with Client("nosuchhost.invalid:8500", timeout=20) as client, pytest.raises(GenserveError) as info:
        client.status("toy")
    assert time.monotonic() - start < 2.0, "a DNS failure was retried"
    assert "cannot resolve the host name 'nosuchhost.invalid'" in info.value.details


def test_the_rest_port_as_target_fails_fast_naming_the_grpc_port(toy_models_dir):
    from genserve.serving.server import ModelServer

    with ModelServer(toy_models_dir, poll_seconds=0, rest_port=0) as server:
        start = time.monotonic()
        with Client(f"127.0.0.1:{server.rest_port}", timeout=20) as client, pytest.raises(GenserveError) as info:
            client.status("toy")
        assert time.monotonic() - start < 2.0, "an HTTP/1.x server was retried"
        assert "REST port" in info.value.details and "gRPC port" in info.value.details
        assert _affine(Client(f"127.0.0.1:{server.port}", timeout=20)) == 4.0  # the gRPC port works


def test_a_server_not_up_yet_is_waited_for_with_one_line(toy_models_dir):
    """Connection refused is retried; after a second one `waiting for ...` line goes to on_wait; the
    server started once that line was seen is reached within the same call."""
    from benchmarks.harness import free_port
    from genserve.serving.server import ModelServer

    port = free_port()
    lines: list[str] = []
    waited = threading.Event()
    servers: list = []

    def start_when_waited() -> None:
        if waited.wait(20):
            server = ModelServer(toy_models_dir, port=port, poll_seconds=0)
            server.start()
            servers.append(server)

    starter = threading.Thread(target=start_when_waited)
    starter.start()
    try:
        with Client(f"127.0.0.1:{port}", timeout=30, on_wait=lambda line: (lines.append(line), waited.set())) \
                as client:
            assert _affine(client) == 4.0
    finally:
        waited.set()
        starter.join()
        for server in servers:
            server.stop(grace=0)
    assert len(lines) == 1 and lines[0].startswith(f"waiting for 127.0.0.1:{port} (Connection refused")


def test_cli_says_the_cause_in_one_line_fast(tmp_path):
    from genserve.cli import app

    start = time.monotonic()
    result = CliRunner().invoke(app, ["grid", "--target", "nosuchhost.invalid:8500", "--out", str(tmp_path / "g.png")])
    assert result.exit_code == 1 and time.monotonic() - start < 5.0
    assert result.stderr.count("\n") == 1 and "cannot resolve the host name" in result.stderr, result.stderr
