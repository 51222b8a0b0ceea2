"""Export round trip of a tiny char-LSTM: contract, no cuDNN ops, step == window, two batch sizes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from genserve import contract
from genserve.training.text import TextConfig

TEXT = "she sells sea shells by the sea shore; the shells she sells are surely sea shells.\n" * 30
TINY = dataclasses.replace(TextConfig(), maxlen=60, step=3, units=16, batch_size=32, epochs=1)  # the book's window
TOL = 1e-5  # float32: the same ops in the same order; measured max abs difference 0.0 on CPU

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from genserve.export.text import export_text
    from genserve.training.text import train

    workdir = tmp_path_factory.mktemp("text-work")
    models = tmp_path_factory.mktemp("models")
    train(TINY, workdir, verbose=0, log=lambda line: None, text=TEXT)
    path = export_text(workdir, models)
    return workdir, models, path


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(str(exported[2]))


def _dtype_name(dtype) -> str:
    return "string" if dtype == tf.string else dtype.as_numpy_dtype().dtype.name


def test_layout_assets_and_warmup(exported):
    workdir, models, path = exported
    assert path == models / "text" / "1"
    extra = path / "assets.extra"
    assert json.loads((extra / "config.json").read_text())["units"] == 16
    assert json.loads((extra / "vocabulary.json").read_text())["chars"] == sorted(set(TEXT))
    assert (extra / "tf_serving_warmup_requests").stat().st_size > 0
    assert (models / "models.config").exists()


def test_no_cudnn_only_ops_in_the_graph(exported):
    from genserve.export.text import cudnn_ops

    assert cudnn_ops(exported[2]) == []


def test_signatures_match_the_contract(loaded):
    names = set(loaded.signatures.keys())
    assert names == {s.name for s in contract.TEXT.signatures} | {contract.DEFAULT_SIGNATURE_KEY}
    for spec in contract.TEXT.signatures + (dataclasses.replace(contract.TEXT.default,
                                                                name=contract.DEFAULT_SIGNATURE_KEY),):
        fn = loaded.signatures[spec.name]
        _, inputs = fn.structured_input_signature
        assert set(inputs) == {t.key for t in spec.inputs}, spec.name
        for t in spec.inputs:
            assert _dtype_name(inputs[t.key].dtype) == t.dtype, (spec.name, t.key)
            assert inputs[t.key].shape.rank == len(t.shape), (spec.name, t.key)
        outputs = fn.structured_outputs
        assert set(outputs) == {t.key for t in spec.outputs}, spec.name
        for t in spec.outputs:
            assert _dtype_name(outputs[t.key].dtype) == t.dtype, (spec.name, t.key)
            assert outputs[t.key].shape.rank == len(t.shape), (spec.name, t.key)


@pytest.mark.parametrize("batch", [1, 5])
def test_prime_then_step_equals_the_window_signature(exported, loaded, batch):
    from genserve.data.text import Vocabulary

    vocab = Vocabulary.from_json((exported[0] / "vocabulary.json").read_text())
    rng = np.random.default_rng(batch)
    ids = rng.integers(0, len(vocab), size=(batch, TINY.maxlen)).astype(np.int32)  # (B, maxlen)
    window = loaded.signatures["next_char"](ids=tf.constant(ids))
    primed = loaded.signatures["prime"](ids=tf.constant(ids[:, :1]))
    h, c = primed["h"], primed["c"]
    for t in range(1, TINY.maxlen):  # one step per remaining character of the window
        out = loaded.signatures["step"](ids=tf.constant(ids[:, t]), h=h, c=c)
        h, c = out["h"], out["c"]
    np.testing.assert_allclose(out["probabilities"].numpy(), window["probabilities"].numpy(), atol=TOL)
    np.testing.assert_allclose(out["logits"].numpy(), window["logits"].numpy(), atol=TOL)
    full = loaded.signatures["prime"](ids=tf.constant(ids))
    np.testing.assert_allclose(full["logits"].numpy(), window["logits"].numpy(), atol=TOL)
    assert window["probabilities"].shape == (batch, len(vocab))
    np.testing.assert_allclose(window["probabilities"].numpy().sum(-1), 1.0, atol=1e-5)


def test_export_matches_the_trained_keras_model(exported, loaded):
    from genserve.training.text import load_checkpoint

    model, cfg, vocab = load_checkpoint(exported[0])
    ids = vocab.encode(TEXT[: 3 * cfg.maxlen]).reshape(3, cfg.maxlen)  # (3, maxlen)
    expect = model.predict(ids, verbose=0)
    got = loaded.signatures["serving_default"](ids=tf.constant(ids))["logits"].numpy()
    np.testing.assert_allclose(got, expect, atol=TOL)


def test_info_is_tiled_over_the_batch(loaded):
    out = loaded.signatures["info"](ids=tf.zeros([3], tf.int32))
    assert out["vocabulary"].shape == (3, len(set(TEXT)))
    assert [v.decode() for v in out["vocabulary"].numpy()[2]] == sorted(set(TEXT))
    assert out["maxlen"].numpy().tolist() == [TINY.maxlen] * 3
    assert out["units"].numpy().tolist() == [16] * 3


def test_second_export_is_the_next_version(exported):
    from genserve.export.text import export_text

    path = export_text(exported[0], exported[1])
    assert path.name == "2"
