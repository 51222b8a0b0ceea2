"""Issue 12, files and the CLI: atomic, verified VAE checkpoints; output paths checked before the work;
models-directory names; int64 versions; NaN weights; style images too small for VGG; quiet TensorFlow.

    .venv/bin/python -m pytest -q tests/test_hardening_files.py

Every CLI error here must be exactly one `error: ...` line on stderr with exit code 1.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from typer.testing import CliRunner

from genserve.cli import app
from genserve.cli.common import check_output_path

GENSERVE = Path(sys.executable).with_name("genserve")


def _run(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def _one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


# --- 4. VAE checkpoints: atomic, and verified on resume and export -----------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    from genserve.training import vae

    work = tmp_path_factory.mktemp("vae_work")
    cfg = dataclasses.replace(vae.VAEConfig(), dataset="synthetic", epochs=1, batch_size=32,
                              train_limit=64, test_limit=32, conv_filters=(4, 8), conv_strides=(1, 2),
                              dense_units=8)
    vae.train(cfg, work, verbose=0)
    return work


def test_checkpoints_are_written_whole_and_no_temp_files_remain(trained):
    names = sorted(p.name for p in trained.iterdir())
    assert names == sorted(["config.json", "state.json", "last.weights.h5", "best_encoder.weights.h5",
                            "best_decoder.weights.h5"]), names


def _truncated_copy(trained: Path, tmp_path: Path, name: str) -> Path:
    import shutil

    work = tmp_path / "work"
    shutil.copytree(trained, work)
    data = (work / name).read_bytes()
    (work / name).write_bytes(data[: len(data) // 3])
    return work


def test_truncated_last_weights_fail_resume_with_one_clear_line(trained, tmp_path):
    from genserve.training import vae

    work = _truncated_copy(trained, tmp_path, "last.weights.h5")
    cfg = vae.read_config(work)
    with pytest.raises(vae.CheckpointError) as info:
        vae.train(dataclasses.replace(cfg, epochs=2), work, resume=True, verbose=0)
    from genserve.training import CheckpointError

    assert type(info.value) is CheckpointError  # one class for every family (genserve.training)
    assert not [p for p in work.iterdir() if p.name.startswith(".")]  # no temporary sibling left
    message = str(info.value)
    assert str(work / "last.weights.h5") in message and "unreadable (truncated?)" in message
    assert "delete it or train without --resume" in message and "\n" not in message
    result = _run("train", "vae", "--workdir", work, "--resume", "--dataset", "synthetic", "--epochs", "2",
                  "--latent-dim", "2")
    _one_line_error(result)  # the CLI's config differs in shape (default conv stack) or the file is bad
    assert "last.weights.h5" in result.stderr or "different shape" in result.stderr


def test_truncated_best_weights_or_config_fail_export_with_one_line(trained, tmp_path):
    work = _truncated_copy(trained, tmp_path, "best_decoder.weights.h5")
    result = _run("export", "vae", "--workdir", work, "--models-dir", tmp_path / "models")
    _one_line_error(result, "best_decoder.weights.h5 is unreadable (truncated?)")
    assert not (tmp_path / "models" / "vae").exists() or not any((tmp_path / "models" / "vae").iterdir())
    work2 = _truncated_copy(trained, tmp_path / "b", "config.json")
    result = _run("export", "vae", "--workdir", work2, "--models-dir", tmp_path / "models")
    _one_line_error(result, "config.json is unreadable (truncated?)")


# --- 5. output paths, workdirs and models directories: checked before the work ------------------------
def test_check_output_path(tmp_path):
    out = check_output_path(tmp_path / "new" / "deeper" / "grid.png", (".png",))
    assert out.parent.is_dir()  # the missing parent is created
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # the write probe is gone
    (tmp_path / "file").write_text("x")
    for bad, fragment in [(tmp_path, "is a directory"), (tmp_path / "file" / "g.png", "is a file"),
                          (tmp_path / "g.jpg", "ending in .png")]:
        with pytest.raises(Exception) as info:
            check_output_path(bad, (".png",))
        assert type(info.value).__name__ == "Exit"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_check_output_path_unwritable(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = _run("grid", "--target", "127.0.0.1:1", "--out", locked / "g.png")
        _one_line_error(result, "cannot write")
    finally:
        locked.chmod(0o700)


def test_client_outputs_are_checked_before_any_request(tmp_path):
    nothing = "127.0.0.1:1"  # a request would end in UNAVAILABLE, not in these messages
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "plain").write_text("x")
    _one_line_error(_run("stylize", tmp_path / "a.png", tmp_path / "a.png", "-o", tmp_path,
                         "--target", nothing), "--output", "is a directory")
    _one_line_error(_run("stylize", tmp_path / "a.png", tmp_path / "a.png", "-o",
                         tmp_path / "plain" / "x.png", "--target", nothing), "is a file")
    _one_line_error(_run("grid", "--out", tmp_path, "--target", nothing), "--out", "is a directory")
    _one_line_error(_run("encode", "--out", tmp_path, "--target", nothing, "--dataset", "synthetic"),
                    "--out", "is a directory")
    _one_line_error(_run("encode", "--out", tmp_path / "s.png", "--npz", tmp_path / "plain" / "z.npz",
                         "--target", nothing, "--dataset", "synthetic"), "--npz", "is a file")


def test_workdir_and_models_dir_that_are_files(tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("x")
    _one_line_error(_run("train", "vae", "--workdir", plain, "--dataset", "synthetic"), "--workdir", "is a file")
    _one_line_error(_run("export", "vae", "--workdir", plain), "--workdir", "is a file")
    _one_line_error(_run("eval", "vae", "--workdir", plain), "--workdir", "is a file")
    for command in (["serve"], ["models"], ["export", "toy"], ["export", "style"]):
        _one_line_error(_run(*command, "--models-dir", plain), "--models-dir", "is a file")
    _one_line_error(_run("export", "toy", "--models-dir", plain / "sub"), "is a file")


def test_model_names_that_collide_with_the_layout(tmp_path):
    from genserve.export.writer import ExportError, check_model_name

    for bad in ("models.config", "MODELS.CONFIG", ".hidden", ".tmp-1-2", "", "a/b", "x" * 256):
        with pytest.raises(ExportError):
            check_model_name(bad)
    assert check_model_name("vae.v2") == "vae.v2"
    for family in ("vae", "style"):
        _one_line_error(_run("export", family, "--name", "models.config", "--models-dir", tmp_path / "m"),
                        "models.config")
        _one_line_error(_run("export", family, "--name", ".x", "--models-dir", tmp_path / "m"), "'.x'")


def test_corrupt_models_config_is_named_in_one_line(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "models.config").write_text("model_config_list { config { name: \n garbage")
    _one_line_error(_run("export", "toy", "--models-dir", models), str(models / "models.config"),
                    "not a valid models.config")
    _one_line_error(_run("export", "style", "--backbone", "random-small", "--models-dir", models),
                    "models.config")


def test_serve_message_limit_is_checked_before_loading(tmp_path):
    result = _run("serve", "--models-dir", tmp_path / "does-not-matter", "--max-message-mb", "4096")
    _one_line_error(result, "--max-message-mb", "2047")


# --- 6. versions: int64 only, canonical folder names --------------------------------------------------
def test_export_version_beyond_int64_is_refused(tmp_path):
    for bad in ("99999999999999999999", str(2**63), "0", "-3"):
        _one_line_error(_run("export", "toy", "--models-dir", tmp_path / "m", "--version", bad), "--version")
    assert not (tmp_path / "m").exists()


def test_next_version_ignores_non_canonical_folders_and_caps_at_int64(tmp_path):
    from genserve.export.writer import ExportError, next_version, save_version
    from genserve.repository import MAX_VERSION

    model = tmp_path / "toy"
    for name in ("0012", "²", "+7", "3", ".tmp-99-1", "99999999999999999999"):
        (model / name).mkdir(parents=True)
    assert next_version(model) == 4
    (model / str(MAX_VERSION)).mkdir()
    with pytest.raises(ExportError, match="largest int64"):
        next_version(model)
    with pytest.raises(ExportError, match="int64"):
        save_version(object(), tmp_path, "toy", {"f": None}, default="f", version=MAX_VERSION + 1)


# --- 7. NaN / Inf / negative weights ------------------------------------------------------------------
def test_non_finite_weights_are_refused(tmp_path):
    from genserve.export.style import check_weights
    from genserve.export.toy import ToyConfig
    from genserve.training.style import StyleConfig

    m = tmp_path / "m"
    for value in ("nan", "inf", "-inf"):
        _one_line_error(_run("export", "toy", "--models-dir", m, "--bias", value), "--bias", "finite")
    _one_line_error(_run("export", "toy", "--models-dir", m, "--weight", "nan"), "--weight")
    for option, value in (("--content-weight", "nan"), ("--style-weight", "inf"), ("--tv-weight", "-1")):
        _one_line_error(_run("export", "style", "--backbone", "random-small", "--models-dir", m,
                             option, value), option)
    assert not m.exists()
    with pytest.raises(ValueError):
        ToyConfig(bias=float("nan"))
    with pytest.raises(ValueError, match="content-weight"):
        check_weights(StyleConfig(backbone="random-small", content_weight=float("nan")))


# --- 8. style images below VGG's minimum: INVALID_ARGUMENT from the graph, refused by the client -----
@pytest.fixture(scope="module")
def style_target(tmp_path_factory):
    from genserve.export.style import export_style
    from genserve.serving.server import serve
    from genserve.training.style import StyleConfig

    models = tmp_path_factory.mktemp("style_models")
    export_style(StyleConfig(backbone="random-small"), models)
    with serve(models, poll_seconds=0) as target:
        yield target, models


def test_min_side_of_the_vgg_backbone():
    from genserve.export.style import min_side
    from genserve.training.style import StyleConfig, build_model

    assert min_side(build_model(StyleConfig(backbone="random-small"))) == 16  # 4 pools before block5
    shallow = StyleConfig(backbone="random-small", content_layer="block2_conv1",
                          style_layers=("block1_conv1", "block2_conv1"))
    assert min_side(build_model(shallow)) == 2


@pytest.mark.parametrize("side", [1, 15])
def test_too_small_style_images_are_invalid_argument(style_target, side):
    from genserve.clients import GenserveError
    from genserve.clients.style import ImageError, RemoteStyle
    from genserve.clients import Client

    target, _ = style_target
    tiny = np.full((1, side, side, 3), 128.0, np.float32)
    ok = np.full((1, 16, 16, 3), 128.0, np.float32)
    with Client(target, timeout=60) as client:
        with pytest.raises(GenserveError) as info:
            client.predict("style", {"content_image": tiny, "style_image": ok}, signature="targets")
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "at least 16 px" in info.value.details
        with pytest.raises(GenserveError) as info:
            client.predict("style", {"content_image": ok, "style_image": tiny}, signature="targets")
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        targets = client.predict("style", {"content_image": ok, "style_image": ok}, signature="targets")
        assert set(targets) >= {"content_features"}
        with pytest.raises(ImageError, match="at least 16 px"):  # refused before sending
            RemoteStyle(client).compute_targets(tiny[0], ok[0])


def test_too_small_image_on_tf_servings_path(style_target):
    """The same refusal from a graph Session run by tensor names (how TF Serving runs it)."""
    from genserve.serving.loader import load_saved_model

    _, models = style_target
    model = load_saved_model(models / "style" / "1")
    try:
        with pytest.raises(Exception) as info:
            model.signatures["targets"].run({"content_image": np.zeros((1, 1, 1, 3), np.float32),
                                             "style_image": np.zeros((1, 16, 16, 3), np.float32)})
        assert "INVALID_ARGUMENT" in repr(info.value) or "InvalidArgument" in repr(info.value) \
            or "at least 16 px" in str(info.value)
    finally:
        model.close()


# --- 9. quiet TensorFlow ------------------------------------------------------------------------------
def test_tensorflow_command_error_is_exactly_one_stderr_line(tmp_path):
    env = {**os.environ, "GENSERVE_VERBOSE": ""}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    proc = subprocess.run([str(GENSERVE), "export", "style", "--backbone", "random-small",
                           "--style-layer", "no_such_layer", "--models-dir", str(tmp_path / "m")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == ["error: backbone random-small has no layer(s) ['no_such_layer']"], \
        proc.stderr
