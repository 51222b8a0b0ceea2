"""The GAN commands end to end with typer's CliRunner: train -> export -> serve -> gan-grid /
gan-interpolate / eval, and their one-line errors.

Tiny synthetic data (no download); the server is genserve's embedded gRPC server on port 0.

    .venv/bin/python -m pytest -q tests/test_gan_cli.py
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

pytest.importorskip("tensorflow")



@pytest.fixture(scope="module")
def trained(cli_trained):
    work, models, result = cli_trained("gan", "--batch-size", "32", "--train-limit", "64", "--latent-dim", "8")
    assert "epoch 1/1" in result.stdout and "trained to epoch 1" in result.stdout
    assert (work / "samples" / "epoch_0001.png").exists()
    return work, models


@pytest.fixture(scope="module")
def server(trained):
    from genserve.serving.server import ModelServer

    class Methods:
        def __init__(self):
            self.seen = []

        def observe(self, entrypoint, method, model, code, seconds):
            self.seen.append(method)

    with ModelServer(trained[1], poll_seconds=0) as srv:
        srv.methods = Methods()
        srv.observers.append(srv.methods)
        yield srv


def _predicts(srv) -> int:
    return sum("Predict" in m for m in srv.methods.seen)


def test_gan_grid_is_one_request(cli, server, tmp_path):
    out = tmp_path / "grid.png"
    before = _predicts(server)
    result = cli("gan-grid", "-o", out, "--n", "5", "--seed", "3", "--scale", "2", "--target", server.target)
    assert result.exit_code == 0, result.output
    assert _predicts(server) - before == 1
    assert "5x5 digits (seeds 3..27)" in result.stdout and "1 request" in result.stdout
    with Image.open(out) as im:
        assert im.size == (5 * 28 * 2, 5 * 28 * 2) and im.mode == "L"
    # the same seeds give the same picture
    again = tmp_path / "again.png"
    assert cli("gan-grid", "-o", again, "--n", "5", "--seed", "3", "--scale", "2",
                "--target", server.target).exit_code == 0
    assert again.read_bytes() == out.read_bytes()


def test_gan_interpolate_writes_a_strip(cli, server, tmp_path):
    out = tmp_path / "strip.png"
    result = cli("gan-interpolate", "-o", out, "--seed-a", "1", "--seed-b", "2", "--steps", "6",
                  env={"GENSERVE_TARGET": server.target})
    assert result.exit_code == 0, result.output
    assert "6 digits from seed 1 to seed 2 (slerp)" in result.stdout and "2 requests" in result.stdout
    with Image.open(out) as im:
        assert im.size == (6 * 28, 28)


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "from 1 to 64"),
    (["--n", "65"], "from 1 to 64"),
    (["--model", "missing"], "NOT_FOUND"),
    (["--timeout", "0"], "--timeout must be > 0"),
])
def test_gan_grid_errors_are_one_line(cli, server, tmp_path, args, message):
    out = tmp_path / "x.png"
    result = cli("gan-grid", "--target", server.target, "-o", out, *args)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and not out.exists()


def test_output_checks_run_before_any_request(cli, server, tmp_path):
    before = _predicts(server)
    result = cli("gan-grid", "--target", server.target, "-o", tmp_path)
    assert result.exit_code == 1 and "is a directory" in result.stderr
    result = cli("gan-interpolate", "--target", server.target, "-o", tmp_path / "x.png", "--steps", "1")
    assert result.exit_code == 1 and "--steps must be from 2 to 256" in result.stderr
    result = cli("gan-grid", "--target", server.target, "-o", tmp_path / "x.jpg")
    assert result.exit_code == 1 and ".png" in result.stderr
    assert _predicts(server) == before


def test_without_a_server_fails_cleanly(cli, tmp_path):
    result = cli("gan-grid", "--target", "127.0.0.1:1", "--timeout", "0.5", "-o", tmp_path / "x.png")
    assert result.exit_code == 1 and "UNAVAILABLE" in result.stderr and not (tmp_path / "x.png").exists()


def test_eval_reports_score_and_frechet_distance(cli, trained, tmp_path):
    out = tmp_path / "eval.json"
    result = cli("eval", "gan", "--workdir", trained[0], "--samples", "16", "--json", out,
                  env={"GENSERVE_CACHE": str(tmp_path / "cache")})  # a synthetic-data classifier, trained here
    assert result.exit_code == 0, result.output
    numbers = json.loads(out.read_text())
    assert numbers["generated"] == 16 and 1.0 <= numbers["score"] <= 10.0 and numbers["real_fid"] >= 0
    assert "classifier score" in result.stdout and "Fréchet distance" in result.stdout
    assert (tmp_path / "cache" / "synthetic_classifier.keras").exists()


def test_missing_inputs_are_one_line_errors(cli, tmp_path):
    result = cli("export", "gan", "--workdir", tmp_path / "nothing", "--models-dir", tmp_path / "m")
    assert result.exit_code == 1 and "train first" in result.stderr
    result = cli("eval", "gan", "--workdir", tmp_path / "nothing")
    assert result.exit_code == 1 and "config.json not found" in result.stderr
    result = cli("train", "gan", "--workdir", tmp_path / "w", "--resume", "--dataset", "synthetic")
    assert result.exit_code == 1 and "nothing to resume" in result.stderr


def test_corrupt_checkpoint_is_a_one_line_error(cli, trained, tmp_path):
    import shutil

    work = tmp_path / "work"
    shutil.copytree(trained[0], work)
    ckpt = next(work.glob("ckpt-*.weights.h5"))
    ckpt.write_bytes(b"not an h5 file")
    result = cli("export", "gan", "--workdir", work, "--models-dir", tmp_path / "m")
    assert result.exit_code == 1 and "corrupt" in result.stderr and result.stderr.count("\n") == 1
    result = cli("train", "gan", "--workdir", work, "--resume", "--epochs", "2", "--dataset", "synthetic",
                  "--latent-dim", "8")
    assert result.exit_code == 1 and "corrupt" in result.stderr


def test_help_does_not_import_tensorflow():
    code = ("import sys; from typer.testing import CliRunner; from genserve.cli import app; "
            "r = CliRunner().invoke(app, ['gan-grid', '--help']); assert r.exit_code == 0, r.output; "
            "r = CliRunner().invoke(app, ['gan-interpolate', '--help']); assert '--seed-a' in r.output; "
            "sys.exit('tensorflow' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
