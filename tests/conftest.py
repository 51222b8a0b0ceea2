"""Shared fixtures: a toy models directory, real embedded gRPC servers on 127.0.0.1 (port 0), the
factories "a family exported (through the CLI) and served", and `wait_until` (tests synchronise on
conditions, never on sleeps).

    .venv/bin/python -m pytest tests/test_server.py -q

TensorFlow is imported inside the fixtures, so test files that do not use them never pay for it.
"""

from __future__ import annotations

import shutil
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

import genserve  # noqa: F401 - first: its GRPC_ENABLE_FORK_SUPPORT default must precede any `import grpc`

TOY_BIAS = {1: 1.0, 2: 2.0}  # version -> bias of the toy model (y = 2x + bias) in toy_models_dir


@pytest.fixture(scope="session")
def toy_models_dir(tmp_path_factory) -> Path:
    """A models directory with toy versions 1 and 2 and its models.config, which serves every version
    (model_version_policy all; TF Serving's default would serve only version 2). Treat it as read-only."""
    from genserve.export.toy import ToyConfig, export_toy
    from genserve.repository import set_version_policy

    root = tmp_path_factory.mktemp("toy_models")
    for version, bias in TOY_BIAS.items():
        export_toy(root, ToyConfig(bias=bias), version=version)
    set_version_policy(root, "toy", ("all",))
    return root


@pytest.fixture
def toy_models_copy(toy_models_dir: Path, tmp_path: Path) -> Path:
    """A private, writable copy of toy_models_dir."""
    target = tmp_path / "models"
    shutil.copytree(toy_models_dir, target)
    return target


@pytest.fixture(scope="session")
def toy_server(toy_models_dir: Path) -> str:
    """"127.0.0.1:PORT" of an embedded server over toy_models_dir (no polling)."""
    from genserve.serving.server import serve

    with serve(toy_models_dir, poll_seconds=0) as target:
        yield target


@pytest.fixture
def refused_target():
    """"127.0.0.1:PORT" where every connection is refused for the whole test: the port is held by a
    bound socket that does not listen. (Binding port 0 and closing the socket again leaves a port the
    kernel may hand to a parallel test's server the next moment.)"""
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{held.getsockname()[1]}"


def genserve_as_at_a_terminal(*args) -> list[str]:
    """argv of `python -m genserve ARGS` for a child that a test interrupts with SIGINT.

    pytest-xdist's workers ignore SIGINT and an ignored signal is inherited through exec, so Python would
    not turn it into KeyboardInterrupt; the child first puts back Python's own handler, as it has when a
    shell's Ctrl-C reaches it. Done in the child, not in a preexec_fn: a preexec_fn makes subprocess fork
    this multi-threaded process (gRPC servers) and run Python before exec, and gRPC's fork handlers once
    broke that child before it ever ran genserve ("Other threads are currently calling into gRPC,
    skipping fork() handlers", then "epoll_wait error: Bad file descriptor" in the child's output).
    """
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "sys.argv[0] = 'genserve'; from genserve.cli import main; main()")
    return [sys.executable, "-c", code, *map(str, args)]


def wait_until(predicate, timeout: float = 10.0, what: str = "the condition", interval: float = 0.02):
    """Poll `predicate()` until it returns a truthy value (returned); AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout:g} s")
        time.sleep(interval)


def google_predict_fn(stub, model: str, signature: str, key: str, output: str, timeout: float = 30.0):
    """fn(array) -> array over Google's own PredictionServiceStub and TF's tensor conversions
    (make_tensor_proto / make_ndarray): the protocol as a TF Serving user speaks it."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    def call(array):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = signature
        request.inputs[key].CopyFrom(tf.make_tensor_proto(array))
        return tf.make_ndarray(stub.Predict(request, timeout=timeout).outputs[output])

    return call


def ramp_image(height: int, width: int, slopes=(2, 3, 1.5)):
    """A smooth (H, W, 3) uint8 test picture: channels x*a, y*b and (x+y)*c, clipped to 0..255."""
    import numpy as np

    yy, xx = np.mgrid[0:height, 0:width]
    a, b, c = slopes
    return np.stack([xx * a, yy * b, (xx + yy) * c], axis=-1).clip(0, 255).astype(np.uint8)


def _run_cli(*args, env=None):
    from typer.testing import CliRunner

    from genserve.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env=env)


@pytest.fixture(scope="session")
def cli():
    """Run `genserve` in process: cli("grid", "--n", 3, env={...}) -> typer's Result (every argument
    passed through str; stdout and stderr apart)."""
    return _run_cli


@pytest.fixture(scope="session")
def cli_trained(tmp_path_factory):
    """Factory: make(family, *train_args) trains FAMILY ("vae", "gan") with `genserve train` on
    synthetic data for one epoch (plus `train_args`), exports it with `genserve export` and returns
    (workdir, models_dir, the train command's Result)."""
    def make(family: str, *train_args):
        root = tmp_path_factory.mktemp(f"{family}_cli")
        work, models = root / "work", root / "models"
        trained = _run_cli("train", family, "--workdir", work, "--dataset", "synthetic", "--epochs", "1",
                           "--quiet", *train_args)
        assert trained.exit_code == 0, trained.output
        exported = _run_cli("export", family, "--workdir", work, "--models-dir", models)
        assert exported.exit_code == 0, exported.output
        assert (models / family / "1" / "saved_model.pb").exists()
        return work, models, trained

    return make


@pytest.fixture(scope="session")
def cli_export(tmp_path_factory):
    """Factory: `cli_export("style", "--backbone", "random-small")` -> a models directory holding that
    export as version 1, made once per session through `genserve export` (in process). Read-only."""
    made: dict[tuple, Path] = {}

    def export(family: str, *options: str) -> Path:
        key = (family, *options)
        if key not in made:
            root = tmp_path_factory.mktemp(f"{family}_models")
            result = _run_cli("export", family, *options, "--models-dir", root)
            assert result.exit_code == 0, result.output
            assert "exported" in result.output and (root / family / "1" / "saved_model.pb").is_file()
            made[key] = root
        return made[key]

    return export


@pytest.fixture(scope="session")
def tiny_text_export(tmp_path_factory):
    """Factory: make(cfg, text) trains a char-LSTM with TextConfig `cfg` on the string `text` (quietly)
    and exports it as version 1; returns (workdir, models_dir, version folder)."""
    def make(cfg, text: str):
        from genserve.export.text import export_text
        from genserve.training.text import train

        workdir = tmp_path_factory.mktemp("text-work")
        models = tmp_path_factory.mktemp("models")
        train(cfg, workdir, verbose=0, log=lambda line: None, text=text)
        return workdir, models, export_text(workdir, models)

    return make


@pytest.fixture(scope="session")
def serve_dir():
    """Factory: `serve_dir(models_dir)` -> "127.0.0.1:PORT" of an embedded server over that directory
    (no polling), one server per directory for the whole session."""
    from genserve.serving.server import serve

    servers: dict[Path, str] = {}
    with ExitStack() as stack:
        def target(models_dir: Path) -> str:
            if models_dir not in servers:
                servers[models_dir] = stack.enter_context(serve(models_dir, poll_seconds=0))
            return servers[models_dir]

        yield target


def export_blocking(models_dir, name: str) -> Path:
    """A model whose signature "wait" (x float32 (B, 1) -> y) blocks inside Session.run until the run's
    deadline (a dequeue from a queue nobody fills), costing no CPU: a stand-in for a long request."""
    import tensorflow as tf

    from genserve.export.writer import save_version

    class Blocking(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, 1), tf.float32, name="x")])
        def wait(self, x):  # x: (B, 1)
            queue = tf.raw_ops.FIFOQueueV2(component_types=[tf.float32], shapes=[[]], capacity=1)
            (value,) = tf.raw_ops.QueueDequeueV2(handle=queue, component_types=[tf.float32])
            return {"y": x + value}  # (B, 1)

    module = Blocking()
    return save_version(module, models_dir, name, {"wait": module.wait.get_concrete_function()},
                        default="wait")


@pytest.fixture(scope="session")
def blocking_models_dir(tmp_path_factory) -> Path:
    """toy (version 1) beside two blocking models, `dream` and `text` (see export_blocking)."""
    from genserve.export.toy import export_toy

    root = tmp_path_factory.mktemp("blocking_models")
    export_toy(root)
    for name in ("dream", "text"):
        export_blocking(root, name)
    return root
