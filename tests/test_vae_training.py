"""VAE loss math against hand-computed values, and a training smoke run on synthetic 28x28 data."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from genserve.data import mnist  # noqa: E402
from genserve.training import vae  # noqa: E402


def test_bce_sum_matches_hand_computation():
    x = np.zeros((2, 28, 28, 1), np.float32)
    logits = np.zeros((2, 28, 28, 1), np.float32)
    x[0, 0, 0, 0], logits[0, 0, 0, 0] = 1.0, 2.0  # -log(sigmoid(2)) = log(1 + e^-2)
    x[0, 0, 1, 0], logits[0, 0, 1, 0] = 0.25, -1.0  # -(0.25 log s(-1) + 0.75 log(1 - s(-1)))
    s = 1 / (1 + math.exp(1.0))
    expected0 = (math.log1p(math.exp(-2.0)) - (0.25 * math.log(s) + 0.75 * math.log(1 - s))
                 + 782 * math.log(2.0))  # 782 pixels with x = 0, logit 0: -log(1/2) each
    got = np.asarray(vae.bce_sum(x, logits))
    np.testing.assert_allclose(got, [expected0, 784 * math.log(2.0)], rtol=1e-5)
    # large logits stay finite (the stable form): x=0, logit 100 -> 100 nats
    big = np.full((1, 28, 28, 1), 100.0, np.float32)
    np.testing.assert_allclose(np.asarray(vae.bce_sum(np.zeros_like(big), big)), [784 * 100.0], rtol=1e-5)


def test_kl_of_known_gaussians():
    z_mean = np.array([[0.0, 0.0], [1.0, -2.0]], np.float32)
    z_log_var = np.array([[0.0, 0.0], [math.log(2.0), 0.0]], np.float32)
    # KL(N(m, v) || N(0, 1)) = 1/2 (v + m^2 - 1 - ln v), summed over dimensions
    expected = [0.0, 0.5 * (2 + 1 - 1 - math.log(2.0)) + 0.5 * (1 + 4 - 1 - 0)]
    np.testing.assert_allclose(np.asarray(vae.kl_to_standard_normal(z_mean, z_log_var)), expected, rtol=1e-6)


def test_book_loss_weighting():
    x = np.zeros((1, 28, 28, 1), np.float32)
    logits = np.zeros((1, 28, 28, 1), np.float32)  # mean BCE = log 2
    z_mean, z_log_var = np.array([[1.0, -2.0]], np.float32), np.array([[math.log(2.0), 0.0]], np.float32)
    kl_term = -np.mean([1 + math.log(2.0) - 1 - 2, 1 + 0 - 4 - 1])  # the book's: no 1/2, a mean
    expected = math.log(2.0) + 5e-4 * kl_term
    np.testing.assert_allclose(np.asarray(vae.book_loss(x, logits, z_mean, z_log_var)), [expected], rtol=1e-6)


def test_config_round_trip_and_validation():
    cfg = vae.VAEConfig(latent_dim=3, loss="book")
    assert vae.VAEConfig.from_json(cfg.to_json()) == cfg
    assert vae.VAEConfig().conv_filters == (32, 64, 64, 64) and vae.VAEConfig().batch_size == 16
    with pytest.raises(ValueError, match="loss must be"):
        vae.VAEConfig(loss="mse")


def test_decoder_shapes_and_logits_path():
    cfg = vae.VAEConfig(latent_dim=3)
    encoder, decoder = vae.build_encoder(cfg), vae.build_decoder(cfg)
    z_mean, z_log_var = encoder(np.zeros((2, 28, 28, 1), np.float32))
    assert tuple(z_mean.shape) == (2, 3) and tuple(z_log_var.shape) == (2, 3)
    z = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    images = np.asarray(decoder(z))
    assert images.shape == (4, 28, 28, 1)
    np.testing.assert_allclose(images, 1 / (1 + np.exp(-np.asarray(vae.decoder_logits(decoder, z)))), atol=1e-6)


def _tiny(**overrides) -> vae.VAEConfig:
    base = dict(dataset="synthetic", epochs=2, batch_size=32, train_limit=128, test_limit=64)
    return dataclasses.replace(vae.VAEConfig(), **{**base, **overrides})


def test_train_smoke_resume_and_evaluate(tmp_path):
    data = mnist.synthetic(128, 64, seed=0)
    x_train, x_test = data.x_train[..., None], data.x_test[..., None]
    cfg = _tiny()
    state = vae.train(cfg, tmp_path, data=(x_train, x_test), verbose=0)
    assert state["epoch"] == 2 and len(state["history"]) == 2
    first, second = state["history"]
    assert second["loss"] < first["loss"]  # it learns
    for key in ("loss", "reconstruction", "kl", "val_loss", "val_reconstruction", "val_kl"):
        assert np.isfinite(first[key])
    # the ELBO loss is exactly reconstruction + KL, in nats per image
    assert first["val_loss"] == pytest.approx(first["val_reconstruction"] + first["val_kl"], rel=1e-4)
    for name in ("config.json", vae.BEST_ENCODER, vae.BEST_DECODER, vae.LAST_WEIGHTS, vae.STATE_FILE):
        assert (tmp_path / name).exists(), name
    assert json.loads((tmp_path / "config.json").read_text())["latent_dim"] == 2

    # resume: optimizer state and epoch count continue from the last checkpoint
    model = vae.new_model(cfg)
    model.load_weights(tmp_path / vae.LAST_WEIGHTS)
    assert int(model.optimizer.iterations.numpy()) == 2 * 4  # 2 epochs x 128/32 batches
    state = vae.train(dataclasses.replace(cfg, epochs=3), tmp_path, resume=True,
                      data=(x_train, x_test), verbose=0)
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3]

    # evaluation of the best checkpoint reproduces the validation numbers' scale and parts
    cfg2, encoder, decoder = vae.load_trained(tmp_path)
    result = vae.evaluate(cfg2, encoder, decoder, x_test, samples=2)
    assert result["images"] == 64
    assert result["neg_elbo"] == pytest.approx(result["reconstruction"] + result["kl"])
    assert result["neg_elbo"] == pytest.approx(state["best_val_loss"], rel=0.1)
    assert 0 < result["book"] < 1  # per-pixel scale


def test_resume_refuses_a_different_shape_or_empty_workdir(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        vae.train(_tiny(), tmp_path / "empty", resume=True)
    data = mnist.synthetic(32, 32)
    vae.train(_tiny(epochs=1), tmp_path, data=(data.x_train[..., None], data.x_test[..., None]), verbose=0)
    with pytest.raises(ValueError, match="different shape"):
        vae.train(_tiny(latent_dim=3), tmp_path, resume=True)


def test_book_loss_training_reports_the_books_scale(tmp_path):
    data = mnist.synthetic(64, 32)
    state = vae.train(_tiny(loss="book", epochs=1), tmp_path,
                      data=(data.x_train[..., None], data.x_test[..., None]), verbose=0)
    assert 0 < state["history"][0]["val_loss"] < 1  # a per-pixel mean, like the book's 0.1831
    assert state["history"][0]["val_reconstruction"] > 10  # still reported in nats per image
