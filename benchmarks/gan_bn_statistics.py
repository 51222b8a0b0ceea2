"""Does the averaged generator lose quality to its averaged BatchNorm statistics? (docs/gan.md, session 5)

    .venv/bin/python benchmarks/gan_bn_statistics.py --workdir COPY_OF_A_RUN [--samples 5000]

The exported generator of the `best` preset is the exponential moving average of the generator's
weights (`ema_generator`), BatchNorm's moving mean and variance averaged along with the weights; served
in inference mode, it normalises with those averaged statistics, which are not the statistics the
averaged weights produce. GAN practice recomputes them for the weights that are sampled ("standing
statistics", Brock et al. 2019, BigGAN, arXiv:1809.11096). This scores, on one
checkpoint, the same way `genserve eval gan` does (genserve.training.gan.generate_images, then
mnist_classifier.sample_quality, seed 0): the averaged generator as stored; in training mode (each
500-image batch normalised by its own statistics); with its statistics recomputed (the mean over
`--batches` batches of 64 of each BatchNorm input's batch mean and batch variance in training mode,
the same per-batch moments Keras's BatchNormalization uses while training); the raw generator as
stored and recomputed. It changes the loaded model in memory only, never the checkpoint. Not a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from genserve.data import mnist  # noqa: E402
from genserve.training import mnist_classifier as mc  # noqa: E402
from genserve.training.gan import generate_images, load_checkpoint  # noqa: E402


def recompute_statistics(generator: keras.Model, latent_dim: int, batches: int, batch_size: int = 64,
                         seed: int = 0) -> None:
    """Set each BatchNormalization's moving mean/variance to the mean over `batches` random z batches
    of its input's batch mean/variance, the generator running in training mode (as during training)."""
    norms = [layer for layer in generator.layers if isinstance(layer, keras.layers.BatchNormalization)]
    probe = keras.Model(generator.input, [layer.input for layer in norms])
    rng = np.random.default_rng(seed)
    means = [0.0] * len(norms)
    variances = [0.0] * len(norms)
    for _ in range(batches):
        z = rng.standard_normal((batch_size, latent_dim)).astype(np.float32)
        for i, x in enumerate(probe(z, training=True)):
            x = np.asarray(x, np.float64)  # (B, units) or (B, H, W, C): moments over all but channels
            axes = tuple(range(x.ndim - 1))
            means[i] = means[i] + x.mean(axes)
            variances[i] = variances[i] + x.var(axes)
    for layer, mean, variance in zip(norms, means, variances):
        layer.moving_mean.assign((mean / batches).astype(np.float32))
        layer.moving_variance.assign((variance / batches).astype(np.float32))


class _TrainingMode:
    """A generator called in training mode: every batch normalised by its own statistics."""

    def __init__(self, generator):
        self.generator = generator

    def __call__(self, z, training=False):
        return self.generator(z, training=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="a GAN training workdir with an averaged generator")
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--batches", type=int, default=100, help="z batches of 64 for the recomputation")
    args = parser.parse_args()
    cfg, model, state = load_checkpoint(Path(args.workdir))
    if model.ema_generator is None:
        raise SystemExit("this run has no averaged generator (ema_decay 0)")
    classifier, _ = mc.load_or_train(cfg.dataset)
    test_images = np.asarray(mnist.load(cfg.dataset).x_test)

    def score(label, generator):
        started = time.perf_counter()
        fake = generate_images(generator, args.samples, cfg.latent_dim, seed=0)
        out = mc.sample_quality(classifier, fake, test_images, seed=0)
        print(f"| {label} | {out['score']:.3f} | {out['fid']:.2f} | {out['fid_ratio']:.1f} | "
              f"{time.perf_counter() - started:.0f} s |", flush=True)

    print(f"epoch {state['epoch']}, {args.samples} samples, seed 0\n\n"
          "| generator | score | Fréchet distance | × real | seconds |\n|---|---|---|---|---|")
    score("averaged, as stored", model.ema_generator)
    score("averaged, training mode (batch statistics of 500)", _TrainingMode(model.ema_generator))
    recompute_statistics(model.ema_generator, cfg.latent_dim, args.batches)
    score(f"averaged, statistics recomputed ({args.batches} x 64)", model.ema_generator)
    score("raw, as stored", model.generator)
    recompute_statistics(model.generator, cfg.latent_dim, args.batches)
    score(f"raw, statistics recomputed ({args.batches} x 64)", model.generator)


if __name__ == "__main__":
    main()
