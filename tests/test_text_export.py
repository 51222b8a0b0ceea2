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
def exported(tiny_text_export):
    return tiny_text_export(TINY, TEXT)


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(str(exported[2]))


def _dtype_name(dtype) -> str:
    return "string" if dtype == tf.string else dtype.as_numpy_dtype().dtype.name


def test_layout_assets_and_warmup(exported):
    workdir, models, path = exported
    assert path == models / "text" / "1"
    # seed windows of any length: TF Serving must not batch this model (see docs/serving.md)
    assert not (path / "batching_params.pbtxt").exists()
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


def _generate(loaded, ids, temperature, length, seed):
    return loaded.signatures["generate"](
        ids=tf.constant(ids, tf.int32), temperature=tf.constant(temperature, tf.float32),
        length=tf.constant(length, tf.int32), seed=tf.constant(seed, tf.int64))["ids"].numpy()


def test_generate_at_temperature_zero_equals_greedy_stepping(loaded):
    rng = np.random.default_rng(7)
    ids = rng.integers(0, len(set(TEXT)), size=(2, 20)).astype(np.int32)  # (B, T)
    n = 15
    got = _generate(loaded, ids, [0.0, 0.0], [n, n], [1, 2])  # (B, n)
    out = loaded.signatures["prime"](ids=tf.constant(ids))
    expect = []
    for _ in range(n):
        nxt = np.argmax(out["logits"].numpy(), axis=-1).astype(np.int32)  # (B,)
        expect.append(nxt)
        out = loaded.signatures["step"](ids=tf.constant(nxt), h=out["h"], c=out["c"])
    np.testing.assert_array_equal(got, np.stack(expect, axis=1))
    assert got.dtype == np.int32 and got.shape == (2, n)


def test_generate_streams_depend_only_on_their_own_seed(loaded):
    ids = np.tile(np.arange(10, dtype=np.int32)[None, :] % len(set(TEXT)), (3, 1))  # (3, 10)
    temps, seeds = [1.0, 1.0, 0.0], [11, 12, 11]
    batch = _generate(loaded, ids, temps, [40] * 3, seeds)
    np.testing.assert_array_equal(batch, _generate(loaded, ids, temps, [40] * 3, seeds))  # reproducible
    alone = _generate(loaded, ids[:1], [1.0], [40], [11])
    np.testing.assert_array_equal(alone[0], batch[0])  # same text alone or batched
    assert not np.array_equal(batch[0], batch[1])  # another seed, another text
    assert ((batch >= 0) & (batch < len(set(TEXT)))).all()


@pytest.mark.parametrize("temperature, length, seed, message", [
    ([1.0, 1.0], [5, 6], [0, 0], "same in every row"),
    ([1.0, -0.5], [5, 5], [0, 0], "temperature must be finite and >= 0"),
    ([1.0, float("nan")], [5, 5], [0, 0], "temperature must be finite and >= 0"),
    ([1.0, 1.0], [0, 0], [0, 0], "must be >= 1"),
    ([1.0, 1.0], [10**6] * 2, [0, 0], "must be <= "),
    ([1.0], [5, 5], [0, 0], "temperature needs one entry per row"),
])
def test_generate_rejects_bad_arguments(loaded, temperature, length, seed, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        _generate(loaded, np.zeros((2, 4), np.int32), temperature, length, seed)


def test_counter_uniform_is_uniform_and_keyed_by_seed_and_step():
    from genserve.export.text import counter_uniform

    seeds = tf.constant([0, 1, -1, 2**62], tf.int64)
    u = counter_uniform(seeds, tf.constant(0), 50_000).numpy()  # (4, 50000)
    assert u.dtype == np.float32 and u.min() > 0 and u.max() < 1
    np.testing.assert_allclose(u.mean(axis=1), 0.5, atol=0.01)  # sd of the mean: 0.0013
    np.testing.assert_allclose(u.var(axis=1), 1 / 12, atol=0.003)
    hist = np.histogram(u[0], bins=10, range=(0, 1))[0]
    assert hist.min() > 4500 and hist.max() < 5500  # 5000 expected per bin, sd ~67
    assert abs(np.corrcoef(u[0], u[1])[0, 1]) < 0.03  # neighbouring seeds are unrelated
    again = counter_uniform(seeds, tf.constant(0), 50_000).numpy()
    np.testing.assert_array_equal(u, again)
    assert not np.array_equal(u, counter_uniform(seeds, tf.constant(1), 50_000).numpy())


def test_graph_session_path_equals_keras_and_rejects_ids_outside_the_vocabulary(exported):
    """TF Serving's path (graph Session, tensor names): same logits as Keras; a bad id is INVALID_ARGUMENT."""
    from genserve.serving.errors import ServingError
    from genserve.serving.loader import load_saved_model
    from genserve.training.text import load_checkpoint

    model, cfg, vocab = load_checkpoint(exported[0])
    graph = load_saved_model(exported[2])
    try:
        ids = vocab.encode(TEXT[: 2 * cfg.maxlen]).reshape(2, cfg.maxlen)  # (2, maxlen)
        got = graph.signatures["next_char"].run({"ids": ids})["logits"]
        np.testing.assert_allclose(got, model.predict(ids, verbose=0), atol=TOL)
        v, zeros = len(vocab), np.zeros((1, cfg.units), np.float32)
        bad = [
            ("next_char", {"ids": np.array([[0, v]], np.int32)}),
            ("prime", {"ids": np.array([[-1, 0]], np.int32)}),
            ("step", {"ids": np.array([v + 5], np.int32), "h": zeros, "c": zeros}),
            ("generate", {"ids": np.array([[0, v]], np.int32), "temperature": np.ones(1, np.float32),
                          "length": np.full(1, 3, np.int32), "seed": np.zeros(1, np.int64)}),
        ]
        for name, inputs in bad:
            with pytest.raises(ServingError) as err:
                graph.signatures[name].run(inputs)
            assert err.value.code == "INVALID_ARGUMENT", (name, err.value.message)
            assert "character ids must be" in err.value.message, name
    finally:
        graph.close()
