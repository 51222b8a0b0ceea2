"""DeepDream over a real embedded gRPC server on 127.0.0.1, port 0: the export made by the CLI, one
`ascend` request per octave, the tiled `gradient` path, both paths agreeing, a > 4 MiB tensor, Google's
own PredictionServiceStub, and the `genserve dream` command with its one-line errors. Uses the tiny
`random-small` backbone.

    .venv/bin/python -m pytest tests/test_dream_serving.py -q
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("tensorflow")

import grpc  # noqa: E402

from conftest import ramp_image  # noqa: E402
from genserve.cli import app  # noqa: E402
from genserve.clients import Client, GenserveError  # noqa: E402
from genserve.clients.dream import DreamSchedule, RemoteDream, dream, tiled_ascent  # noqa: E402

INF = float("inf")


@pytest.fixture(scope="module")
def target(cli_export, serve_dir):
    return serve_dir(cli_export("dream", "--backbone", "random-small"))


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    picture = ramp_image(64, 96, (2, 3, 1.5))
    Image.fromarray(picture).save(folder / "photo.png")
    return folder / "photo.png", picture.astype(np.float32)


def test_one_ascend_request_per_octave(target, photo):
    _, picture = photo
    with Client(target, timeout=60) as client:
        remote = RemoteDream(client)
        result = dream(remote.ascend_fn(), picture, DreamSchedule(octaves=2, iterations=4, max_loss=INF))
    assert remote.requests == 2 and remote.version == 1
    assert [len(losses) for losses in result.losses] == [4, 4]
    assert all(np.all(np.diff(losses) > 0) for losses in result.losses)  # ascent
    assert result.image.shape == picture.shape and np.abs(result.image - picture).mean() > 1.0


def test_gradient_loop_equals_ascend_and_tiles_batch_one_request_per_step(target, photo):
    _, picture = photo
    with Client(target, timeout=60) as client:
        remote = RemoteDream(client)
        by_ascend, losses = remote.ascend(picture, 3, 0.01, INF)
        assert remote.requests == 1
        by_gradient, g_losses = tiled_ascent(remote.gradient, picture, 3, 0.01, INF, tile_size=512)
        assert remote.requests == 4  # one `gradient` request per step
        np.testing.assert_allclose(by_gradient, by_ascend, rtol=1e-4, atol=0.05)
        np.testing.assert_allclose(g_losses, losses, rtol=1e-4)
        tiled, _ = tiled_ascent(remote.gradient, picture, 3, 0.01, INF, tile_size=40,
                                rng=np.random.default_rng(0))
        assert remote.requests == 7  # 6 tiles of 40x40, batched: still one request per step
    assert tiled.shape == picture.shape and np.abs(tiled - picture).mean() > 1.0


def test_tensor_larger_than_4mib(target):
    """A 640x640 RGB float32 image is 4.9 MB each way (gRPC's default limit is 4 MiB)."""
    image = np.random.default_rng(1).uniform(0, 255, (640, 640, 3)).astype(np.float32)
    assert image.nbytes > 4 * 1024 * 1024
    with Client(target, timeout=120) as client:
        remote = RemoteDream(client)
        out, losses = remote.ascend(image, 1, 0.01, INF)
    assert out.shape == (640, 640, 3) and out.nbytes > 4 * 1024 * 1024
    assert len(losses) == 1 and np.isfinite(losses[0]) and np.abs(out - image).mean() > 0.5


def test_google_prediction_service_stub(target):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    image = np.random.default_rng(2).uniform(0, 255, (1, 40, 48, 3)).astype(np.float32)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "dream"  # no signature name: serving_default is `ascend`
    for key, value in (("image", image), ("step_size", np.array([0.01], np.float32)),
                       ("iterations", np.array([2], np.int32)), ("max_loss", np.array([1e9], np.float32))):
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    with grpc.insecure_channel(target) as channel:
        reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    with Client(target) as client:
        ours, losses = RemoteDream(client).ascend(image[0], 2, 0.01, 1e9)
    np.testing.assert_allclose(tf.make_ndarray(reply.outputs["image"])[0], ours, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(tf.make_ndarray(reply.outputs["losses"])[0], losses, rtol=1e-6)
    assert tf.make_ndarray(reply.outputs["iterations_run"]).tolist() == [2]


def test_cli_dream(target, photo, tmp_path):
    path, _ = photo
    out = tmp_path / "new" / "dream.png"
    result = CliRunner().invoke(app, ["dream", str(path), "-o", str(out), "--target", target,
                                      "--octaves", "2", "--iterations", "3", "--max-loss", "inf"])
    assert result.exit_code == 0, result.output
    assert "octave 2/2: 96x64 px, 3 steps" in result.output and "2 requests" in result.output
    assert Image.open(out).size == (96, 64)
    tiled = tmp_path / "tiled.jpg"
    result = CliRunner().invoke(app, ["dream", str(path), "-o", str(tiled), "--target", target,
                                      "--octaves", "1", "--iterations", "2", "--tile-size", "48"])
    assert result.exit_code == 0, result.output
    assert "2 requests" in result.output and Image.open(tiled).size == (96, 64)


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"), ("unreadable", "not a readable image"), ("octaves", "--octaves"),
    ("step", "--step must be"), ("outdir", "is a directory"), ("suffix", "ending in .png"),
    ("small", "smallest octave"), ("model", "NOT_FOUND"), ("max_loss", "--max-loss"),
    ("tile", "--tile-size"),
])
def test_cli_dream_errors(target, photo, tmp_path, case, message):
    path, _ = photo
    out = tmp_path / "out.png"
    extra = []
    if case == "missing":
        path = tmp_path / "nope.png"
    elif case == "unreadable":
        path = tmp_path / "text.png"
        path.write_text("hello")
    elif case == "octaves":
        extra = ["--octaves", "0"]
    elif case == "step":
        extra = ["--step", "-0.01"]
    elif case == "outdir":
        out = tmp_path
    elif case == "suffix":
        out = tmp_path / "out.txt"
    elif case == "small":
        extra = ["--octaves", "5"]  # 64 px / 1.4^4 = 16 px
    elif case == "model":
        extra = ["--model", "nonexistent"]
    elif case == "max_loss":
        extra = ["--max-loss", "0"]
    elif case == "tile":
        extra = ["--tile-size", "8"]
    result = CliRunner().invoke(app, ["dream", str(path), "-o", str(out), "--target", target,
                                      "--iterations", "1", *extra])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert not (tmp_path / "out.png").exists()


def test_cli_export_errors(tmp_path, monkeypatch):
    result = CliRunner().invoke(app, ["export", "dream", "--backbone", "random-small", "--models-dir",
                                      str(tmp_path), "--layer", "block9_conv9=1"])
    assert result.exit_code == 1 and "block9_conv9" in result.stderr
    result = CliRunner().invoke(app, ["export", "dream", "--models-dir", str(tmp_path), "--layer", "x=y"])
    assert result.exit_code == 1 and "LAYER=COEFF" in result.stderr
    # Offline, Keras cannot download InceptionV3's weights: one line that names the offline backbone.
    # (Keras's downloader is made to fail the way it fails offline, so the test never downloads.)
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- "
                        "[Errno -2] Name or service not known")

    monkeypatch.setattr(file_utils, "get_file", offline)
    result = CliRunner().invoke(app, ["export", "dream", "--backbone", "inception-v3-imagenet",
                                      "--models-dir", str(tmp_path)])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "vgg16-offline" in result.stderr and not (tmp_path / "dream").exists()


def test_unknown_signature_input_is_invalid_argument(target):
    with Client(target) as client, pytest.raises(GenserveError) as e:
        client.predict("dream", {"image": np.zeros((1, 32, 32, 4), np.float32)}, signature="gradient")
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
