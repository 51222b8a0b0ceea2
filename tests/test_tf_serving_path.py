"""Every family's export on TensorFlow Serving's own loading path, checked independently of genserve's
server code: the MetaGraph tagged `serve` imported into a TF1 graph Session (the SavedModel loader runs
the restore and init ops), each signature run by the tensor names of its SignatureDef, outputs compared
with the in-process Keras model at two batch sizes; one case runs `saved_model_cli run` as a
subprocess. A SavedModel that only works when restored eagerly (`tf.saved_model.load`) fails here.

    .venv/bin/python -m pytest tests/test_tf_serving_path.py -q
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from genserve import contract as C  # noqa: E402


class GraphPath:
    """A SavedModel in a graph Session, run by SignatureDef tensor names (what tensorflow_model_server's
    SavedModelBundle does). Deliberately written here with TF's own API only, not genserve.serving."""

    def __init__(self, path: Path):
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            meta = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], str(path))
        self.signatures = dict(meta.signature_def)

    def run(self, name: str, **inputs) -> dict:
        sig = self.signatures[name]
        keys = sorted(sig.outputs)
        feed = {sig.inputs[k].name: v for k, v in inputs.items()}
        values = self.session.run([sig.outputs[k].name for k in keys], feed_dict=feed)
        return dict(zip(keys, values))

    def close(self):
        self.session.close()


@pytest.fixture
def graph_path():
    opened = []

    def open_(path):
        opened.append(GraphPath(path))
        return opened[-1]

    yield open_
    for g in opened:
        g.close()


def test_every_used_variable_is_restored_by_the_writer(tmp_path):
    """The writer tracks what the signatures capture: without it, a tf.Module holding Keras 3 layers
    loads eagerly but not in a graph Session (keras-team/keras#20095)."""
    from genserve.export.vae import build_module
    from genserve.export.writer import save_version
    from genserve.serving.loader import load_saved_model
    from genserve.training.vae import VAEConfig, build_decoder, build_encoder

    cfg = VAEConfig()
    module, sigs = build_module(build_encoder(cfg), build_decoder(cfg), cfg.latent_dim)
    raw = tmp_path / "raw"  # what tf.saved_model.save alone writes
    tf.saved_model.save(module, str(raw), signatures={"serving_default": sigs["decode"], **sigs})
    unrestored = load_saved_model(raw).unrestored_variables()
    assert "decoder_deconv/bias" in unrestored  # the bug the writer exists to prevent
    module, sigs = build_module(build_encoder(cfg), build_decoder(cfg), cfg.latent_dim)
    path = save_version(module, tmp_path / "models", "vae", sigs, default="decode")
    assert load_saved_model(path).unrestored_variables() == []


@pytest.fixture(scope="module")
def vae_export(tmp_path_factory):
    from genserve.export.vae import export_vae
    from genserve.training import vae as training

    workdir = tmp_path_factory.mktemp("vae-work")
    cfg = dataclasses.replace(training.VAEConfig(), dataset="synthetic", epochs=1, batch_size=32)
    training.train(cfg, workdir, verbose=0)
    path = export_vae(workdir, tmp_path_factory.mktemp("models"))
    _, encoder, decoder = training.load_trained(workdir)
    return path, encoder, decoder


@pytest.mark.parametrize("batch", [1, 7])
def test_vae_on_the_graph_path_equals_keras(vae_export, graph_path, batch):
    path, encoder, decoder = vae_export
    g = graph_path(path)
    rng = np.random.default_rng(batch)
    z = rng.normal(size=(batch, 2)).astype(np.float32)
    np.testing.assert_allclose(g.run("decode", z=z)["images"], np.asarray(decoder(z)), atol=1e-6)
    np.testing.assert_allclose(g.run("serving_default", z=z)["images"], np.asarray(decoder(z)), atol=1e-6)
    images = rng.uniform(size=(batch, 28, 28, 1)).astype(np.float32)
    got = g.run("encode", images=images)
    want_mean, want_log_var = encoder(images)
    np.testing.assert_allclose(got["z_mean"], np.asarray(want_mean), atol=1e-5)
    np.testing.assert_allclose(got["z_log_var"], np.asarray(want_log_var), atol=1e-5)


def test_saved_model_cli_runs_the_vae_export(vae_export, tmp_path):
    """TensorFlow's own tool loads the export the way tensorflow_model_server does."""
    path, _, decoder = vae_export
    cli = Path(sys.executable).with_name("saved_model_cli")
    out = tmp_path / "out"
    proc = subprocess.run([str(cli), "run", "--dir", str(path), "--tag_set", "serve",
                           "--signature_def", "decode", "--input_exprs", "z=[[0.0,0.0],[1.0,1.0]]",
                           "--outdir", str(out)],
                          capture_output=True, text=True, timeout=120,
                          env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    images = np.load(out / "images.npy")
    want = np.asarray(decoder(np.array([[0.0, 0.0], [1.0, 1.0]], np.float32)))
    np.testing.assert_allclose(images, want, atol=1e-6)


def test_style_on_the_graph_path_equals_in_process(tmp_path, graph_path):
    from genserve.export.style import StyleModule, export_style
    from genserve.training.style import StyleConfig

    cfg = StyleConfig(backbone="random-small", seed=3)
    module = StyleModule(cfg)
    g = graph_path(export_style(cfg, tmp_path / "models", extractor=module.extractor))
    rng = np.random.default_rng(0)
    for batch, size in ((1, (32, 48)), (2, (40, 36))):
        content = rng.uniform(0, 255, (batch, *size, 3)).astype(np.float32)
        style = rng.uniform(0, 255, (batch, 40, 40, 3)).astype(np.float32)
        image = rng.uniform(0, 255, (batch, *size, 3)).astype(np.float32)
        want_t = module.targets(tf.constant(content), tf.constant(style))
        got_t = g.run("targets", content_image=content, style_image=style)
        for key in want_t:
            np.testing.assert_allclose(got_t[key], want_t[key].numpy(), rtol=1e-5, err_msg=key)
        want = module.step(image=tf.constant(image), **want_t)
        got = g.run("step", image=image, **got_t)
        for key in want:
            np.testing.assert_allclose(got[key], want[key].numpy(), rtol=1e-4, atol=1e-4, err_msg=key)


TEXT = "she sells sea shells by the sea shore; the shells she sells are surely sea shells.\n" * 30


@pytest.fixture(scope="module")
def text_export(tmp_path_factory):
    from genserve.export.text import export_text
    from genserve.training.text import TextConfig, load_checkpoint, train

    cfg = dataclasses.replace(TextConfig(), maxlen=20, step=3, units=16, batch_size=32, epochs=1)
    workdir = tmp_path_factory.mktemp("text-work")
    train(cfg, workdir, verbose=0, log=lambda line: None, text=TEXT)
    path = export_text(workdir, tmp_path_factory.mktemp("models"))
    model, cfg, vocab = load_checkpoint(workdir)
    return path, model, cfg, vocab


@pytest.mark.parametrize("batch", [1, 3])
def test_text_on_the_graph_path_equals_keras(text_export, graph_path, batch):
    path, model, cfg, vocab = text_export
    g = graph_path(path)
    ids = vocab.encode(TEXT[: batch * cfg.maxlen]).reshape(batch, cfg.maxlen).astype(np.int32)
    want = model.predict(ids, verbose=0)  # (B, V) logits of the Keras model
    np.testing.assert_allclose(g.run("next_char", ids=ids)["logits"], want, atol=1e-5)
    # prime over the first maxlen-1 chars, then one step with the last: the same distribution
    primed = g.run("prime", ids=ids[:, :-1])
    stepped = g.run("step", ids=ids[:, -1], h=primed["h"], c=primed["c"])
    np.testing.assert_allclose(stepped["logits"], want, atol=1e-4)


def test_text_generate_on_the_graph_path_equals_the_eager_export(text_export, graph_path):
    """Server-side generation: same seeds, same ids on both loading paths."""
    path, _, cfg, vocab = text_export
    g = graph_path(path)
    inputs = dict(ids=np.tile(vocab.encode(TEXT[:12]), (4, 1)).astype(np.int32),
                  temperature=np.array([0.0, 0.5, 1.0, 1.2], np.float32),
                  length=np.full(4, 30, np.int32), seed=np.array([1, 2, 3, 4], np.int64))
    got = g.run("generate", **inputs)["ids"]
    eager = tf.saved_model.load(str(path)).signatures["generate"]
    want = eager(**{k: tf.constant(v) for k, v in inputs.items()})["ids"].numpy()
    np.testing.assert_array_equal(got, want)
    assert got.shape == (4, 30)


def test_toy_on_the_graph_path(toy_models_dir, graph_path):
    g = graph_path(toy_models_dir / "toy" / "2")
    x = np.array([[1.0], [2.0]], np.float32)
    np.testing.assert_allclose(g.run(C.TOY.default.name, x=x)["y"], 2 * x + 2)
