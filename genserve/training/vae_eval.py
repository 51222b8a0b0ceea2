"""The VAE's losses and its test-set evaluation (pure tensor math over an encoder and a decoder).

    python -c "from genserve.training import vae; print(vae.evaluate.__doc__)"

- `bce_sum` + `kl_to_standard_normal`: the negative ELBO per image in nats (Kingma & Welling 2014,
  "Auto-Encoding Variational Bayes", arXiv:1312.6114, eq. 10 and Appendix B);
- `book_loss`: the seed's weighting (mean per-pixel cross-entropy + 5e-4 x the mean KL-like term).
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

IMAGE_SHAPE = (28, 28, 1)


def bce_sum(x, logits):
    """Binary cross-entropy summed over pixels, from logits (numerically stable form).

    -[x log s(l) + (1 - x) log(1 - s(l))] = max(l, 0) - l x + log(1 + exp(-|l|)).
    Args: x, logits: (B, 28, 28, 1). Returns: (B,) nats.
    """
    x = ops.cast(x, "float32")
    per_pixel = ops.relu(logits) - logits * x + ops.log1p(ops.exp(-ops.abs(logits)))
    return ops.sum(ops.reshape(per_pixel, (ops.shape(per_pixel)[0], -1)), axis=-1)


def kl_to_standard_normal(z_mean, z_log_var):
    """KL(N(mean, exp(log_var)) || N(0, I)) = -1/2 sum(1 + log var - mean^2 - var) (Kingma & Welling, App. B).

    Args: z_mean, z_log_var: (B, latent). Returns: (B,) nats.
    """
    return -0.5 * ops.sum(1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=-1)


def book_loss(x, logits, z_mean, z_log_var, kl_weight: float = 5e-4):
    """The seed's loss per image: mean-over-pixels BCE + kl_weight * mean(-(1 + lv - m^2 - e^lv)).

    Returns: (B,).
    """
    pixels = math.prod(IMAGE_SHAPE)
    mean_bce = bce_sum(x, logits) / pixels
    kl_term = -ops.mean(1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=-1)
    return mean_bce + kl_weight * kl_term


def decoder_logits(decoder: keras.Model, z):
    """Run `decoder` up to its 'logits' layer (the sigmoid is applied in the loss, stably)."""
    x = z
    for layer in decoder.layers[1:]:  # skip the InputLayer
        if layer.name == "images":
            break
        x = layer(x)
    return x  # (B, 28, 28, 1)


def evaluate(cfg, encoder: keras.Model, decoder: keras.Model, images: np.ndarray,
             samples: int = 1, seed: int = 0, batch_size: int = 500) -> dict[str, float]:
    """Test-set loss terms per image, averaged over images and `samples` draws of z ~ q(z|x).

    Args:
        cfg: the VAEConfig (its book_kl_weight).
        images: uint8 (N, 28, 28, 1).
    Returns:
        {"reconstruction", "kl", "neg_elbo" (nats per image), "book" (the seed's loss), "images"}.
    """
    rng = np.random.default_rng(seed)
    totals = {"reconstruction": 0.0, "kl": 0.0, "book": 0.0}
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].astype(np.float32) / 255.0  # (b, 28, 28, 1)
        z_mean, z_log_var = (np.asarray(t) for t in encoder(x, training=False))  # (b, latent)
        kl = np.asarray(kl_to_standard_normal(z_mean, z_log_var))  # (b,)
        for _ in range(samples):
            eps = rng.standard_normal(z_mean.shape).astype(np.float32)
            logits = decoder_logits(decoder, z_mean + np.exp(0.5 * z_log_var) * eps)
            totals["reconstruction"] += float(np.sum(bce_sum(x, logits))) / samples
            totals["kl"] += float(np.sum(kl)) / samples
            totals["book"] += float(np.sum(book_loss(x, logits, z_mean, z_log_var,
                                                     cfg.book_kl_weight))) / samples
    n = len(images)
    out = {k: v / n for k, v in totals.items()}
    out["neg_elbo"] = out["reconstruction"] + out["kl"]
    out["images"] = n
    return out
