"""Shared fixtures: a toy models directory and a real embedded gRPC server on 127.0.0.1, port 0.

    .venv/bin/python -m pytest tests/test_server.py -q

TensorFlow is imported inside the fixtures, so test files that do not use them never pay for it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

TOY_BIAS = {1: 1.0, 2: 2.0}  # version -> bias of the toy model (y = 2x + bias) in toy_models_dir


@pytest.fixture(scope="session")
def toy_models_dir(tmp_path_factory) -> Path:
    """A models directory with toy versions 1 and 2 and its models.config, which serves every version
    (model_version_policy all; TF Serving's default would serve only version 2). Treat it as read-only."""
    from genserve.export.toy import ToyConfig, export_toy
    from genserve.export.writer import set_version_policy

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


def wait_until(predicate, timeout: float = 10.0, message: str = "condition") -> None:
    """Poll `predicate()` every 20 ms until it is true.

    Raises:
        AssertionError: still false after `timeout` seconds.
    """
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {message}")
        time.sleep(0.02)


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
