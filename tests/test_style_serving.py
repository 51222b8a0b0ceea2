"""Style transfer over a real embedded gRPC server on 127.0.0.1, port 0: the export made by the CLI,
the L-BFGS client lowering the loss, a > 4 MiB tensor, Google's own PredictionServiceStub, bad inputs
and the `genserve stylize` command. Uses the tiny `random-small` backbone.

    .venv/bin/python -m pytest tests/test_style_serving.py -q
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("tensorflow")

import grpc  # noqa: E402

from genserve import contract as C  # noqa: E402
from conftest import ramp_image  # noqa: E402
from genserve.cli import app  # noqa: E402
from genserve.clients import Client, GenserveError  # noqa: E402
from genserve.clients.style import RemoteStyle, load_image, stylize  # noqa: E402

LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")


@pytest.fixture(scope="module")
def target(cli_export, serve_dir):
    return serve_dir(cli_export("style", "--backbone", "random-small"))


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(0)
    Image.fromarray(ramp_image(48, 72, (3, 5, 2))).save(folder / "content.png")
    Image.fromarray(rng.integers(0, 256, (50, 50, 3), dtype=np.uint8)).save(folder / "style.jpg")
    return folder


def test_layers_from_metadata(target):
    with Client(target) as client:
        assert RemoteStyle(client).layers() == LAYERS


def test_lbfgs_over_grpc_lowers_the_loss(target, pictures):
    content = load_image(pictures / "content.png", height=32)  # (32, 48, 3)
    style = load_image(pictures / "style.jpg", size=(48, 32))
    with Client(target, timeout=60) as client:
        remote = RemoteStyle(client)
        targets = remote.compute_targets(content, style)
        assert set(targets) == {C.STYLE_CONTENT_FEATURES} | {C.style_gram_key(l) for l in LAYERS}
        assert remote.version == 1  # pinned to the version that computed the targets
        result = stylize(remote, content, iterations=2, evals_per_iteration=5)
    assert result.evaluations >= 10
    assert result.losses[-1] < 0.9 * result.initial_loss, (result.initial_loss, result.losses)
    assert result.image.shape == content.shape and 0 <= result.image.min() and result.image.max() <= 255
    parts = remote.last_parts
    assert parts["style_loss"] > 0 and parts["tv_loss"] > 0


def test_tensor_larger_than_4mib(target):
    """A 640x640 RGB float32 image is 4.9 MB each way (gRPC's default limit is 4 MiB)."""
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 255, (640, 640, 3)).astype(np.float32)
    assert image.nbytes > 4 * 1024 * 1024
    with Client(target, timeout=120) as client:
        remote = RemoteStyle(client)
        remote.compute_targets(image, image[:64, :64])
        loss, grad = remote(image)
    assert grad.shape == (640, 640, 3) and grad.nbytes > 4 * 1024 * 1024
    assert np.isfinite(loss) and loss > 0 and np.all(np.isfinite(grad))


def test_google_prediction_service_stub(target):
    """The same `targets` + `step` through tensorflow_serving.apis, compared with genserve's client."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    rng = np.random.default_rng(2)
    content = rng.uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    style = rng.uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    with grpc.insecure_channel(target, options=options) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "style"
        request.model_spec.signature_name = "targets"
        request.inputs["content_image"].CopyFrom(tf.make_tensor_proto(content))
        request.inputs["style_image"].CopyFrom(tf.make_tensor_proto(style))
        targets = stub.Predict(request, timeout=30).outputs
        step = predict_pb2.PredictRequest()
        step.model_spec.name = "style"  # no signature name: serving_default is `step`
        step.inputs["image"].CopyFrom(tf.make_tensor_proto(content))
        for key in targets:
            step.inputs[key].CopyFrom(targets[key])
        reply = stub.Predict(step, timeout=30).outputs
    tf_loss = tf.make_ndarray(reply["loss"])
    tf_grad = tf.make_ndarray(reply["gradient"])
    with Client(target) as client:
        remote = RemoteStyle(client)
        remote.compute_targets(content[0], style[0])
        loss, grad = remote(content[0])
    assert tf_loss.shape == (1,) and float(tf_loss[0]) == pytest.approx(loss, rel=1e-6)
    np.testing.assert_allclose(tf_grad[0], grad, rtol=1e-5, atol=1e-6)


def test_bad_inputs_give_invalid_argument(target):
    rng = np.random.default_rng(3)
    image = rng.uniform(0, 255, (32, 32, 3)).astype(np.float32)
    with Client(target) as client:
        remote = RemoteStyle(client)
        targets = remote.compute_targets(image, image)
        with pytest.raises(GenserveError) as e:  # 4 channels instead of RGB
            client.predict("style", {"image": np.zeros((1, 32, 32, 4), np.float32), **targets},
                           signature="step")
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
        incomplete = {k: v for k, v in targets.items() if k != C.style_gram_key("block3_conv1")}
        with pytest.raises(GenserveError) as e:  # a Gram matrix missing
            client.predict("style", {"image": image[None], **incomplete}, signature="step")
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(GenserveError) as e:  # a Gram matrix of the wrong size
            client.predict("style", {"image": image[None], **targets,
                                     C.style_gram_key("block1_conv1"): np.zeros((1, 9, 9), np.float32)},
                           signature="step")
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(GenserveError) as e:
            RemoteStyle(client, model="no_such_model").layers()
        assert e.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(RuntimeError, match="compute_targets"):
        RemoteStyle(None)(image)


def test_cli_stylize(target, pictures, tmp_path):
    out = tmp_path / "out" / "result.png"
    result = CliRunner().invoke(app, [
        "stylize", str(pictures / "content.png"), str(pictures / "style.jpg"), "-o", str(out),
        "--target", target, "--height", "32", "--iterations", "2", "--evals-per-iteration", "3"])
    assert result.exit_code == 0, result.output
    assert "loss" in result.output and "ratio" in result.output
    assert Image.open(out).size == (48, 32)  # 72x48 at height 32 keeps the aspect ratio
    assert (tmp_path / "out" / "result_iter01.png").is_file()
    assert (tmp_path / "out" / "result_iter02.png").is_file()
    assert Image.open(tmp_path / "out" / "result_side_by_side.png").size == (48 * 3 + 16, 32)


@pytest.mark.parametrize("case", ["missing", "not_image", "empty", "huge", "model", "suffix"])
def test_cli_stylize_errors(target, pictures, tmp_path, case):
    content, style = pictures / "content.png", pictures / "style.jpg"
    extra = ["--height", "32"]
    if case == "missing":
        content = tmp_path / "nope.png"
    elif case == "not_image":
        content = tmp_path / "text.png"
        content.write_text("hello")
    elif case == "empty":
        style = tmp_path / "empty.jpg"
        style.write_bytes(b"")
    elif case == "huge":
        extra = ["--height", "100000"]
    elif case == "model":
        extra += ["--model", "nonexistent"]
    out = tmp_path / ("result.txt" if case == "suffix" else "result.png")
    result = CliRunner().invoke(app, ["stylize", str(content), str(style), "-o", str(out),
                                      "--target", target, *extra])
    assert result.exit_code == 1, result.output
    assert "error:" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_cli_export_bad_layer(tmp_path):
    result = CliRunner().invoke(app, ["export", "style", "--backbone", "random-small", "--models-dir",
                                      str(tmp_path), "--style-layer", "block9_conv9"])
    assert result.exit_code == 1 and "block9_conv9" in result.output
