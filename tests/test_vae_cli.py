"""The VAE commands end to end with typer's CliRunner: train -> export -> serve -> grid / encode / eval.

Tiny synthetic data (no download); the server is genserve's embedded gRPC server on port 0.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tensorflow")



@pytest.fixture(scope="module")
def trained(cli_trained):
    work, models, result = cli_trained("vae", "--batch-size", "32", "--train-limit", "128", "--test-limit", "32")
    assert "epoch 1/1" in result.stdout and "nats/image" in result.stdout
    return work, models


@pytest.fixture(scope="module")
def target(trained):
    from genserve.serving.server import serve

    with serve(trained[1], poll_seconds=0) as address:
        yield address


def test_grid_command_writes_the_png(cli, target, tmp_path):
    out = tmp_path / "grid.png"
    result = cli("grid", "--target", target, "--n", "6", "--scale", "2", "--out", out)
    assert result.exit_code == 0, result.output
    assert "6x6 grid" in result.stdout and "1 request" in result.stdout and "latent size 2" in result.stdout
    with Image.open(out) as im:
        assert im.size == (6 * 28 * 2, 6 * 28 * 2)


def test_grid_reads_the_target_from_the_environment(cli, target, tmp_path):
    result = cli("grid", "--n", "2", "--out", tmp_path / "g.png", env={"GENSERVE_TARGET": target})
    assert result.exit_code == 0, result.output


def test_encode_command_plots_and_saves_points(cli, target, tmp_path):
    out, npz = tmp_path / "scatter.png", tmp_path / "points.npz"
    result = cli("encode", "--target", target, "--dataset", "synthetic", "--limit", "50",
                  "--batch-size", "20", "--out", out, "--npz", npz)
    assert result.exit_code == 0, result.output
    assert "50 images encoded in 3 request(s)" in result.stdout
    points = np.load(npz)
    assert points["z_mean"].shape == (50, 2) and points["labels"].shape == (50,)
    from genserve.data import mnist

    assert points["labels"].tolist() == mnist.synthetic().y_test[:50].tolist()  # labels from the dataset
    with Image.open(out) as im:
        assert im.format == "PNG"


def test_encode_reports_progress_off_a_terminal_in_plain_lines(cli, target, tmp_path):
    """Issue 17: `encode` of many images showed nothing off a terminal; now plain lines on stderr."""
    result = cli("encode", "--target", target, "--dataset", "synthetic", "--limit", "50", "--batch-size", "20",
                 "--out", tmp_path / "s.png")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[0].startswith("encode [") and "20/50 images" in lines[0] and "50/50 images" in lines[-1]
    assert "\x1b[" not in result.stderr and "\r" not in result.stderr


def test_eval_command_prints_elbo_parts(cli, trained, tmp_path):
    work, _ = trained
    out = tmp_path / "eval.json"
    result = cli("eval", "vae", "--workdir", work, "--limit", "32", "--json", out)
    assert result.exit_code == 0, result.output
    numbers = json.loads(out.read_text())
    assert numbers["images"] == 32
    assert numbers["neg_elbo"] == pytest.approx(numbers["reconstruction"] + numbers["kl"])
    assert "negative ELBO" in result.stdout and "book loss" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "from 1 to 64"),
    (["--n", "65"], "from 1 to 64"),
    (["--low", "0", "--high", "0.9"], "inside (0, 1)"),
    (["--model", "missing"], "NOT_FOUND"),
])
def test_grid_errors_are_one_line(cli, target, tmp_path, args, message):
    result = cli("grid", "--target", target, "--out", tmp_path / "x.png", *args)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "x.png").exists()


def test_grid_without_a_server_fails_cleanly(cli, tmp_path):
    result = cli("grid", "--target", "127.0.0.1:1", "--timeout", "0.5", "--out", tmp_path / "x.png")
    assert result.exit_code == 1 and "UNAVAILABLE" in result.stderr


def test_missing_inputs_are_one_line_errors(cli, tmp_path):
    result = cli("export", "vae", "--workdir", tmp_path / "nothing", "--models-dir", tmp_path / "m")
    assert result.exit_code == 1 and "train first" in result.stderr
    result = cli("eval", "vae", "--workdir", tmp_path / "nothing")
    assert result.exit_code == 1 and "config.json not found" in result.stderr
    result = cli("train", "vae", "--workdir", tmp_path / "w", "--dataset", "fashion",
                  env={"GENSERVE_FASHION_DIR": str(tmp_path / "empty")})
    assert result.exit_code == 1 and "apt-get install dataset-fashion-mnist" in result.stderr
    result = cli("train", "vae", "--workdir", tmp_path / "w2", "--resume", "--dataset", "synthetic")
    assert result.exit_code == 1 and "nothing to resume" in result.stderr
