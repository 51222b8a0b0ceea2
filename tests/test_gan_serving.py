"""GAN export on TF Serving's path: contract, graph-Session load vs the in-process generator, stateless
`sample`, `saved_model_cli run`, and the client over a real gRPC server on port 0.

A tiny DCGAN is trained for one epoch on synthetic 28x28 data, exported with genserve.export.gan,
loaded with genserve.serving.loader (graph Session, `serve` tag, tensor names) and served by
genserve's embedded server; requests go over real gRPC (genserve's client and Google's stub).

    .venv/bin/python -m pytest -q tests/test_gan_serving.py
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from genserve import contract as C  # noqa: E402
from genserve.clients import Client, GenserveError  # noqa: E402
from genserve.clients.gan import GANModel, grid_seeds, render_grid  # noqa: E402
from genserve.data import mnist  # noqa: E402
from genserve.export import gan as export  # noqa: E402
from genserve.export.verify import read_warmup_file  # noqa: E402
from genserve.export.writer import WARMUP_DIR  # noqa: E402
from genserve.repository import WARMUP_FILE  # noqa: E402
from genserve.serving.loader import load_saved_model  # noqa: E402
from genserve.serving.server import ModelServer  # noqa: E402
from genserve.training import gan as training  # noqa: E402

LATENT = 16
TINY = dataclasses.replace(training.GANConfig(), dataset="synthetic", epochs=1, batch_size=32,
                           latent_dim=LATENT, gen_filters=(16, 8), disc_filters=(8, 16), grid=2)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(workdir, models_dir, version_dir, generator) of a one-epoch synthetic GAN."""
    root = tmp_path_factory.mktemp("gan")
    training.train(TINY, root / "work", data=mnist.synthetic(128, 8, seed=0).x_train[..., None], verbose=0)
    version_dir = export.export_gan(root / "work", root / "models")
    _, generator = training.load_generator(root / "work")
    return root / "work", root / "models", version_dir, generator


@pytest.fixture(scope="module")
def graph(exported):
    """The export loaded the way tensorflow_model_server loads it."""
    model = load_saved_model(exported[2])
    yield model
    model.close()


class _PredictCounter:
    """A ModelServer observer: records the gRPC method of every request."""

    def __init__(self):
        self.methods: list[str] = []

    def observe(self, entrypoint, method, model, code, seconds):
        self.methods.append(method)

    @property
    def predicts(self) -> int:
        return sum("Predict" in m for m in self.methods)


@pytest.fixture(scope="module")
def server(exported):
    with ModelServer(exported[1], poll_seconds=0) as srv:
        srv.counter = _PredictCounter()
        srv.observers.append(srv.counter)
        yield srv


def test_export_matches_the_contract(graph):
    assert set(graph.signatures) == {C.DEFAULT_SIGNATURE_KEY, "generate", "sample"}
    for sig in C.GAN.signatures:
        served = graph.signatures[sig.name]
        assert set(served.inputs) == {s.key for s in sig.inputs}, sig.name
        assert set(served.outputs) == {s.key for s in sig.outputs}, sig.name
        for spec, got in [(s, served.inputs[s.key]) for s in sig.inputs] + \
                         [(s, served.outputs[s.key]) for s in sig.outputs]:
            assert tf.as_dtype(got.dtype).name == spec.dtype, (sig.name, spec.key)
            assert len(got.shape) == len(spec.shape) and got.shape[0] is None, (sig.name, spec.key, got.shape)
            assert all(w is None or w == g for w, g in zip(spec.shape, got.shape)), (sig.name, spec.key)
    assert graph.signatures["generate"].inputs["z"].shape == (None, LATENT)  # the latent size is served
    assert graph.signatures["sample"].outputs["z"].shape == (None, LATENT)
    assert set(graph.signatures[C.DEFAULT_SIGNATURE_KEY].inputs) == {"z"}  # serving_default = generate
    assert graph.unrestored_variables() == []


def test_export_carries_config_warmup_and_batching(exported):
    workdir, _, version_dir, _ = exported
    extra = version_dir / WARMUP_DIR
    assert training.GANConfig.from_json((extra / "config.json").read_text()) == TINY
    records = read_warmup_file(extra / WARMUP_FILE)
    assert [r.predict_log.request.model_spec.signature_name for r in records] == ["sample", "sample", "generate"]
    assert "max_batch_size" in (version_dir / "batching_params.pbtxt").read_text()


@pytest.mark.parametrize("batch", [1, 7])
def test_generate_on_the_graph_path_equals_the_keras_generator(exported, graph, batch):
    generator = exported[3]
    z = np.random.default_rng(batch).standard_normal((batch, LATENT)).astype(np.float32)
    served = graph.signatures["generate"].run({"z": z})["images"]
    assert served.shape == (batch, 28, 28, 1) and served.dtype == np.float32
    np.testing.assert_allclose(served, np.asarray(generator(z, training=False)), atol=1e-6)
    assert 0.0 <= served.min() and served.max() <= 1.0


def test_sample_is_stateless_and_matches_generate(exported, graph):
    seeds = np.array([0, 5, 6, 2 ** 40], np.int64)
    first = graph.signatures["sample"].run({"seed": seeds})
    # the draw is the documented one: z = stateless_normal([latent], seed=[s, 0]), images = G(z)
    expected_z = np.stack([tf.random.stateless_normal([LATENT], seed=[int(s), 0]).numpy() for s in seeds])
    np.testing.assert_allclose(first["z"], expected_z, atol=1e-6)
    np.testing.assert_allclose(first["images"], np.asarray(exported[3](expected_z, training=False)), atol=1e-6)
    # each row depends only on its own seed (batch-independent; TF Serving may merge requests): the
    # same z exactly, and the same image up to float rounding (kernels differ with the batch size)
    alone = graph.signatures["sample"].run({"seed": np.array([6], np.int64)})
    np.testing.assert_array_equal(alone["z"][0], first["z"][2])
    np.testing.assert_allclose(alone["images"][0], first["images"][2], atol=1e-6)
    # and the same seeds give the same digits in a second, independent load
    again = load_saved_model(exported[2])
    try:
        second = again.signatures["sample"].run({"seed": seeds})
    finally:
        again.close()
    np.testing.assert_array_equal(second["images"], first["images"])
    assert not np.allclose(first["images"][0], first["images"][1])  # different seeds, different digits


def test_generate_rejects_non_finite_z(graph):
    from genserve.serving.errors import ServingError

    with pytest.raises(ServingError) as e:
        graph.signatures["generate"].run({"z": np.full((1, LATENT), np.nan, np.float32)})
    assert e.value.code == "INVALID_ARGUMENT" and "finite" in str(e.value)


def test_saved_model_cli_runs_sample(exported, graph, tmp_path):
    cli = Path(sys.executable).with_name("saved_model_cli")
    seeds = np.array([3, 4], np.int64)
    np.save(tmp_path / "seed.npy", seeds)
    out = tmp_path / "out"
    proc = subprocess.run([str(cli), "run", "--dir", str(exported[2]), "--tag_set", "serve",
                           "--signature_def", "sample", "--inputs", f"seed={tmp_path / 'seed.npy'}",
                           "--outdir", str(out)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = graph.signatures["sample"].run({"seed": seeds})
    np.testing.assert_allclose(np.load(out / "images.npy"), expected["images"], atol=1e-6)
    np.testing.assert_allclose(np.load(out / "z.npy"), expected["z"], atol=1e-6)


def test_grid_is_one_predict_over_grpc(exported, graph, server):
    before = server.counter.predicts
    with Client(server.target) as client:
        model = GANModel(client)
        assert model.latent_dim == LATENT  # from GetModelMetadata, not from a file
        picture = model.grid(4, seed=10)
    assert server.counter.predicts - before == 1  # 16 digits, ONE Predict
    assert picture.shape == (112, 112)
    expected = graph.signatures["sample"].run({"seed": grid_seeds(4, 10)})["images"]
    np.testing.assert_allclose(picture[28:56, 0:28], expected[4, :, :, 0], atol=1e-6)  # row 1, col 0


def test_interpolation_is_two_predicts_and_ends_at_the_seeds(exported, graph, server):
    before = server.counter.predicts
    with Client(server.target) as client:
        strip = GANModel(client).interpolate(7, 8, steps=5)
    assert server.counter.predicts - before == 2
    ends = graph.signatures["sample"].run({"seed": np.array([7, 8], np.int64)})["images"]
    np.testing.assert_allclose(strip[:, :28], ends[0, :, :, 0], atol=1e-5)
    np.testing.assert_allclose(strip[:, -28:], ends[1, :, :, 0], atol=1e-5)


def test_same_grid_through_googles_stub(server):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from conftest import google_predict_fn

    with grpc.insecure_channel(server.target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        via_tf = render_grid(google_predict_fn(stub, "gan", "sample", "seed", "images"), n=3, seed=1)
    with Client(server.target) as client:
        via_genserve = GANModel(client).grid(3, seed=1)
    np.testing.assert_array_equal(via_tf, via_genserve)


def test_bad_requests_give_clear_errors(server):
    with Client(server.target) as client:
        model = GANModel(client)
        with pytest.raises(ValueError, match=rf"z must have shape \(B, {LATENT}\)"):
            model.generate(np.zeros((2, 3), np.float32))
        with pytest.raises(GenserveError) as e:  # the server checks the dtype against the SignatureDef
            client.predict("gan", {"seed": np.zeros((2,), np.float32)}, signature="sample")
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "'seed'" in e.value.details
        with pytest.raises(GenserveError) as e:
            GANModel(client, model="no_such_model").grid(2)
        assert e.value.code == grpc.StatusCode.NOT_FOUND
