"""Style-transfer losses: hand-computed small cases, the gradient against finite differences, and the
targets-once path against the book's all-in-one evaluation. Uses the tiny `random-small` backbone.

    .venv/bin/python -m pytest tests/test_style_losses.py -q
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from genserve.training.style import (  # noqa: E402
    StyleConfig,
    build_model,
    compute_targets,
    content_loss,
    gram_matrix,
    loss_and_gradient,
    loss_parts,
    preprocess,
    seed_loss,
    style_loss,
    total_variation_loss,
)

SMALL = StyleConfig(backbone="random-small")


@pytest.fixture(scope="module")
def model():
    return build_model(SMALL)


def images(seed: int, shape=(1, 32, 40, 3)) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32))


def test_gram_matrix_hand_computed():
    # Two positions (h=1, w=2), two channels: F = [[1, 2], [3, 4]] -> F^T F = [[10, 14], [14, 20]].
    features = tf.constant([[[[1.0, 2.0], [3.0, 4.0]]]])  # (1, 1, 2, 2)
    np.testing.assert_allclose(gram_matrix(features).numpy(), [[[10.0, 14.0], [14.0, 20.0]]])


def test_gram_matrix_is_per_image():
    features = tf.constant(np.stack([np.ones((2, 2, 3)), 2 * np.ones((2, 2, 3))]).astype(np.float32))
    gram = gram_matrix(features).numpy()  # (2, 3, 3)
    np.testing.assert_allclose(gram[0], np.full((3, 3), 4.0))  # 4 positions x 1 x 1
    np.testing.assert_allclose(gram[1], np.full((3, 3), 16.0))  # 4 positions x 2 x 2


def test_total_variation_hand_computed():
    # One channel, 2x2 image [[0, 1], [2, 5]]: only the top-left pixel has both neighbours:
    # dy = (0 - 2)² = 4, dx = (0 - 1)² = 1 -> (4 + 1) ** 1.25.
    x = np.zeros((1, 2, 2, 3), np.float32)
    x[0, :, :, 0] = [[0, 1], [2, 5]]
    assert total_variation_loss(tf.constant(x), 1.25).numpy()[0] == pytest.approx(5 ** 1.25, rel=1e-6)
    assert total_variation_loss(tf.constant(x), 1.0).numpy()[0] == pytest.approx(5.0)
    assert total_variation_loss(tf.zeros((2, 4, 4, 3))).numpy().tolist() == [0.0, 0.0]


def test_content_and_style_loss_hand_computed():
    base = tf.zeros((1, 2, 2, 1))
    combination = tf.fill((1, 2, 2, 1), 3.0)
    assert content_loss(base, combination).numpy()[0] == pytest.approx(36.0)  # 4 x 3²
    s = tf.constant([[[1.0, 0.0], [0.0, 1.0]]])
    c = tf.constant([[[3.0, 0.0], [0.0, 1.0]]])
    # sum (S - C)² = 4; denominator 4 * channels² * size² = 4 * 9 * 100² (the book's 3 channels, 100 px)
    assert style_loss(s, c, 3, 100).numpy()[0] == pytest.approx(4.0 / (4 * 9 * 100 ** 2))


def test_preprocess_is_caffe():
    rgb = tf.constant([[[[10.0, 20.0, 30.0]]]])
    np.testing.assert_allclose(preprocess(rgb).numpy()[0, 0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68],
                               rtol=1e-6)


def test_config_validates():
    with pytest.raises(ValueError, match="unknown backbone"):
        StyleConfig(backbone="vgg99")
    with pytest.raises(ValueError, match="style_norm"):
        StyleConfig(style_norm="pixels")
    assert StyleConfig.from_json(SMALL.to_json()) == SMALL
    with pytest.raises(ValueError, match="no layer"):
        build_model(dataclasses.replace(SMALL, content_layer="block9_conv1"))


@pytest.mark.parametrize("norm", ["image", "layer"])
def test_targets_once_equals_seed_all_in_one(model, norm):
    cfg = dataclasses.replace(SMALL, style_norm=norm)
    content, style, image = images(1), images(2), images(3)
    seed = seed_loss(model, cfg, content, style, image)
    targets = compute_targets(model, cfg, content, style)
    parts = loss_parts(model, cfg, image, targets)
    for key in ("loss", "content_loss", "style_loss", "tv_loss"):
        np.testing.assert_allclose(parts[key].numpy(), seed[key].numpy(), rtol=1e-5, err_msg=key)
    assert parts["style_loss"].numpy()[0] > 0 and parts["content_loss"].numpy()[0] > 0
    np.testing.assert_allclose(parts["loss"].numpy(), (parts["content_loss"] + parts["style_loss"]
                                                       + parts["tv_loss"]).numpy(), rtol=1e-6)


@pytest.fixture(scope="module")
def model64():
    """random-small built in float64, so finite differences are not drowned by float32 rounding."""
    return build_model(SMALL, dtype="float64")


def test_gradient_matches_finite_differences(model64):
    """The tape gradient of the whole loss (content + style + TV) against central differences along 3
    random unit directions with a step of 1e-3 pixel units, in float64: tolerance 1e-5 relative."""
    cfg = SMALL
    as64 = lambda seed: tf.cast(images(seed, (1, 16, 16, 3)), tf.float64)  # noqa: E731
    targets = compute_targets(model64, cfg, as64(4), as64(5))
    x = as64(6)
    parts, grad = loss_and_gradient(model64, cfg, x, targets)
    assert grad.dtype == tf.float64 and parts["style_loss"].numpy()[0] > 0
    rng = np.random.default_rng(0)
    eps = 1e-3
    for _ in range(3):
        d = tf.constant(rng.standard_normal(x.shape))
        d /= tf.norm(d)
        plus = float(loss_parts(model64, cfg, x + eps * d, targets)["loss"].numpy()[0])
        minus = float(loss_parts(model64, cfg, x - eps * d, targets)["loss"].numpy()[0])
        numeric = (plus - minus) / (2 * eps)
        analytic = float(tf.reduce_sum(grad * d).numpy())
        assert analytic == pytest.approx(numeric, rel=1e-5), (analytic, numeric)


def test_gradient_is_per_image(model):
    """A batch of two gives each image its own gradient (same as computing them one by one)."""
    cfg = SMALL
    content, style = images(7, (2, 32, 32, 3)), images(8, (2, 32, 32, 3))
    x = images(9, (2, 32, 32, 3))
    targets = compute_targets(model, cfg, content, style)
    parts, grad = loss_and_gradient(model, cfg, x, targets)
    one = {k: v[1:2] for k, v in targets.items()}
    parts1, grad1 = loss_and_gradient(model, cfg, x[1:2], one)
    np.testing.assert_allclose(parts["loss"].numpy()[1], parts1["loss"].numpy()[0], rtol=1e-5)
    np.testing.assert_allclose(grad.numpy()[1], grad1.numpy()[0], rtol=1e-4, atol=1e-3)
