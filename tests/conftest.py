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
