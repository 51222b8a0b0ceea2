"""VAE export and serving: contract, round trip, one-request grid over a real gRPC server on port 0.

A tiny VAE is trained for one epoch on synthetic 28x28 data, exported with genserve.export.vae and
served by genserve's embedded server; requests go over real gRPC (genserve's thin client and Google's
tensorflow_serving PredictionServiceStub).
"""

from __future__ import annotations

import dataclasses

import grpc
import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")

from genserve import contract as C  # noqa: E402
from genserve.clients import Client, GenserveError  # noqa: E402
from genserve.clients.images import save_grey  # noqa: E402
from genserve.clients.vae import VAEModel, grid_points, render_grid  # noqa: E402
from genserve.data import mnist  # noqa: E402
from genserve.export import vae as export  # noqa: E402
from genserve.export.verify import read_warmup_file  # noqa: E402
from genserve.export.writer import WARMUP_DIR  # noqa: E402
from genserve.repository import WARMUP_FILE  # noqa: E402
from genserve.serving.server import ModelServer  # noqa: E402
from genserve.training import vae as training  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(workdir, models_dir, version_dir) of a one-epoch synthetic VAE."""
    root = tmp_path_factory.mktemp("vae")
    cfg = dataclasses.replace(training.VAEConfig(), dataset="synthetic", epochs=1, batch_size=32)
    data = mnist.synthetic(128, 32, seed=0)
    training.train(cfg, root / "work", data=(data.x_train[..., None], data.x_test[..., None]), verbose=0)
    version_dir = export.export_vae(root / "work", root / "models")
    return root / "work", root / "models", version_dir


@pytest.fixture(scope="module")
def server(exported):
    """A running ModelServer; its decode/encode calls are counted on the server side."""
    _, models_dir, _ = exported
    with ModelServer(models_dir, poll_seconds=0) as srv:
        yield srv


class _Counter:
    """Wraps every served signature of the VAE to count graph executions (Session runs) per signature."""

    def __init__(self, srv: ModelServer, model: str = "vae"):
        loaded = srv.registry.resolve(model)
        self.calls: dict[str, list[tuple]] = {}
        for name, sig in loaded.model.signatures.items():
            sig.run = self._wrap(name, sig.run)  # an instance attribute shadows the method

    def _wrap(self, name, run):
        def counted(arrays, output_keys=None, timeout_ms=0):
            self.calls.setdefault(name, []).append({k: np.shape(v) for k, v in arrays.items()})
            return run(arrays, output_keys, timeout_ms)

        return counted


def _spec_matches(contract_spec: C.TensorSpec, tf_spec) -> bool:
    shape = tf_spec.shape.as_list()
    return (tf_spec.dtype.name == contract_spec.dtype and len(shape) == len(contract_spec.shape)
            and all(want is None or want == got for want, got in zip(contract_spec.shape, shape)))


def test_export_matches_the_contract(exported):
    _, _, version_dir = exported
    loaded = tf.saved_model.load(str(version_dir))
    assert set(loaded.signatures) == {C.DEFAULT_SIGNATURE_KEY, "decode", "encode"}
    for sig in C.VAE.signatures:
        fn = loaded.signatures[sig.name]
        args, kwargs = fn.structured_input_signature
        assert args == () and set(kwargs) == {s.key for s in sig.inputs}, sig.name
        for spec in sig.inputs:
            assert _spec_matches(spec, kwargs[spec.key]), (sig.name, spec.key, kwargs[spec.key])
        assert set(fn.structured_outputs) == {s.key for s in sig.outputs}, sig.name
        for spec in sig.outputs:
            assert _spec_matches(spec, fn.structured_outputs[spec.key]), (sig.name, spec.key)
    # the latent size is served: z has a static last dimension
    assert loaded.signatures["decode"].structured_input_signature[1]["z"].shape.as_list() == [None, 2]
    # serving_default is decode
    default = loaded.signatures[C.DEFAULT_SIGNATURE_KEY].structured_input_signature[1]
    assert list(default) == ["z"]


def test_export_carries_config_and_warmup(exported):
    workdir, _, version_dir = exported
    extra = version_dir / WARMUP_DIR
    assert training.VAEConfig.from_json((extra / "config.json").read_text()) == \
        training.VAEConfig.from_json((workdir / "config.json").read_text())
    records = read_warmup_file(extra / WARMUP_FILE)
    assert [r.predict_log.request.model_spec.signature_name for r in records] == ["decode", "decode", "encode"]
    # fixed shapes past dim 0: TF Serving may batch concurrent requests (docs/serving.md)
    assert "max_batch_size" in (version_dir / "batching_params.pbtxt").read_text()


@pytest.mark.parametrize("batch", [1, 7])
def test_round_trip_equals_the_keras_models(exported, batch):
    workdir, _, version_dir = exported
    _, encoder, decoder = training.load_trained(workdir)
    loaded = tf.saved_model.load(str(version_dir))
    z = np.random.default_rng(batch).normal(size=(batch, 2)).astype(np.float32)
    served = loaded.signatures["decode"](z=tf.constant(z))["images"].numpy()
    np.testing.assert_allclose(served, np.asarray(decoder(z)), atol=1e-6)
    images = np.random.default_rng(0).uniform(size=(batch, 28, 28, 1)).astype(np.float32)
    out = loaded.signatures["encode"](images=tf.constant(images))
    z_mean, z_log_var = encoder(images)
    np.testing.assert_allclose(out["z_mean"].numpy(), np.asarray(z_mean), atol=1e-5)
    np.testing.assert_allclose(out["z_log_var"].numpy(), np.asarray(z_log_var), atol=1e-5)


def test_grid_is_one_predict_call(exported, server, tmp_path):
    workdir, _, _ = exported
    counter = _Counter(server)
    with Client(server.target) as client:
        model = VAEModel(client)
        assert model.latent_dim == 2  # from GetModelMetadata, not from a file
        picture = model.grid(15)
    assert counter.calls == {"decode": [{"z": (225, 2)}]}  # exactly ONE Predict for 225 points
    assert picture.shape == (420, 420) and picture.dtype == np.float32
    assert 0.0 <= picture.min() and picture.max() <= 1.0 and picture.std() > 0
    # the served grid is the Keras decoder's output, tiled row-major
    _, _, decoder = training.load_trained(workdir)
    expected = np.asarray(decoder(grid_points(15, 2)))  # (225, 28, 28, 1)
    np.testing.assert_allclose(picture[28:56, 56:84], expected[15 + 2, :, :, 0], atol=1e-6)
    path = save_grey(picture, tmp_path / "grid.png")
    with Image.open(path) as im:
        assert im.size == (420, 420) and im.mode == "L"
        assert np.abs(np.asarray(im) / 255.0 - picture).max() <= 0.5 / 255 + 1e-6


def test_largest_grid_is_still_one_call(server):
    counter = _Counter(server)
    with Client(server.target) as client:
        picture = VAEModel(client).grid(64, -3, 3, spacing="linear")
    assert picture.shape == (64 * 28, 64 * 28)
    assert counter.calls == {"decode": [{"z": (4096, 2)}]}


def test_encode_over_grpc_matches_local(exported, server):
    workdir, _, _ = exported
    _, encoder, _ = training.load_trained(workdir)
    images = mnist.synthetic(8, 8, seed=5).x_test[..., None].astype(np.float32) / 255
    with Client(server.target) as client:
        z_mean, z_log_var = VAEModel(client).encode(images)
    np.testing.assert_allclose(z_mean, np.asarray(encoder(images)[0]), atol=1e-5)
    assert z_log_var.shape == (8, 2)


def test_same_algorithm_over_tf_serving_protocol(server):
    """Google's own PredictionServiceStub (TF Serving's protocol) drives the same grid algorithm."""
    from tensorflow_serving.apis import get_model_metadata_pb2, prediction_service_pb2_grpc

    from conftest import google_predict_fn

    with grpc.insecure_channel(server.target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        meta_request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        meta_request.model_spec.name = "vae"
        meta = stub.GetModelMetadata(meta_request, timeout=10)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        assert meta.metadata["signature_def"].Unpack(sig_map)
        latent = sig_map.signature_def["decode"].inputs["z"].tensor_shape.dim[1].size
        assert latent == 2

        decode_fn = google_predict_fn(stub, "vae", "decode", "z", "images", timeout=10)
        via_tf = render_grid(decode_fn, n=5, latent_dim=latent)
    with Client(server.target) as client:
        via_genserve = VAEModel(client).grid(5)
    np.testing.assert_allclose(via_tf, via_genserve, atol=1e-7)


def test_bad_inputs_give_clear_errors(server):
    with Client(server.target) as client:
        model = VAEModel(client)
        with pytest.raises(ValueError, match=r"z must have shape \(B, 2\)"):
            model.decode(np.zeros((3, 3), np.float32))
        with pytest.raises(ValueError, match="finite"):
            model.decode(np.array([[np.nan, 0.0]], np.float32))
        with pytest.raises(ValueError, match="from 1 to 64"):
            model.grid(0)
        # the server itself refuses what a careless client sends
        with pytest.raises(GenserveError) as e:
            client.predict("vae", {"z": np.zeros((3, 3), np.float32)}, signature="decode")
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "'z'" in e.value.details
        with pytest.raises(GenserveError) as e:
            client.predict("vae", {"z": np.array([[np.nan, 0.0]], np.float32)}, signature="decode")
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT  # from the graph's CheckNumerics op
        with pytest.raises(GenserveError) as e:
            VAEModel(client, model="no_such_model").latent_dim
        assert e.value.code == grpc.StatusCode.NOT_FOUND
