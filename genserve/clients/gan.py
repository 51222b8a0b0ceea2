"""GAN client: a sample grid in ONE request, and a strip interpolating between two seeds. No TensorFlow.

The algorithms are pure functions over injected model calls, so they are tested with fakes and run
unchanged over gRPC (genserve's server or TF Serving):

    render_grid(sample_fn, n, seed)                      sample_fn: seeds int64 (B,) -> images (B, 28, 28, 1)
    interpolate(sample_z_fn, generate_fn, a, b, steps)   sample_z_fn: seeds -> z (B, latent);
                                                         generate_fn: z (B, latent) -> images

A grid of n x n digits uses the seeds seed, seed + 1, ..., seed + n*n - 1 (row-major): the `sample`
signature draws each image's z inside the graph with tf.random.stateless_normal(seed=[s, 0]), so a seed
always names the same digit, whatever the server, batch or load. An interpolation asks `sample` for
the two seeds' z (request 1), walks between them on the great circle (slerp, White 2016, "Sampling
Generative Networks", arXiv:1609.04468: a straight line through N(0, I) passes through the
low-probability region near the origin) or on the straight line, and renders every step with
`generate` (request 2).

    genserve gan-grid -o out/gan_grid.png --n 10 --seed 0
    genserve gan-interpolate -o out/gan_strip.png --seed-a 1 --seed-b 2 --steps 10
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from genserve import contract as C
from genserve.clients.images import tile
from genserve.clients.pinned import LatentImageModel

SampleFn = Callable[[np.ndarray], np.ndarray]  # seeds int64 (B,) -> images (B, 28, 28, 1)
SampleZFn = Callable[[np.ndarray], np.ndarray]  # seeds int64 (B,) -> z (B, latent)
GenerateFn = Callable[[np.ndarray], np.ndarray]  # z (B, latent) float32 -> images (B, 28, 28, 1)
MAX_GRID = 64  # 4,096 images in one request (12.8 MB float32), inside the clients' 64 MiB limit
MAX_STEPS = 256
IMAGE_SIDE = 28
INT64_MAX = 2 ** 63 - 1


def grid_seeds(n: int, seed: int = 0) -> np.ndarray:
    """The n*n seeds of a grid: seed, seed + 1, ... (row-major), int64 (n*n,).

    Raises:
        ValueError: n outside 1..MAX_GRID, or seeds outside int64.
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or not 1 <= n <= MAX_GRID:
        raise ValueError(f"grid size n must be an integer from 1 to {MAX_GRID}, got {n!r}")
    if not -INT64_MAX - 1 <= seed <= INT64_MAX - n * n:
        raise ValueError(f"seed {seed} + {n * n} grid images does not fit in int64")
    return np.arange(seed, seed + n * n, dtype=np.int64)


def _check_images(images, count: int, what: str) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if images.shape != (count, IMAGE_SIDE, IMAGE_SIDE, 1):
        raise ValueError(f"{what} returned shape {images.shape}, expected {(count, IMAGE_SIDE, IMAGE_SIDE, 1)}")
    if not np.all(np.isfinite(images)):
        raise ValueError(f"{what} returned non-finite pixel values")
    return images


def render_grid(sample_fn: SampleFn, n: int = 10, seed: int = 0) -> np.ndarray:
    """An n x n grid of generated digits with exactly ONE call of `sample_fn`.

    Args:
        sample_fn: seeds int64 (n*n,) -> images (n*n, 28, 28, 1) in [0, 1].
        n: images per side, 1..MAX_GRID.
        seed: the first seed (see grid_seeds).
    Returns:
        float32 (n*28, n*28) in [0, 1].
    Raises:
        ValueError: bad arguments, or sample_fn returned the wrong shape or non-finite values.
    """
    seeds = grid_seeds(n, seed)
    return tile(_check_images(sample_fn(seeds), n * n, "sample"), n)


def path_between(z_a: np.ndarray, z_b: np.ndarray, steps: int, spherical: bool = True) -> np.ndarray:
    """`steps` latent points from z_a to z_b inclusive, float32 (steps, latent).

    spherical: slerp(a, b, t) = sin((1-t) w)/sin(w) a + sin(t w)/sin(w) b, w = angle(a, b) (Shoemake
    1985; White 2016); falls back to the straight line when a and b are (anti)parallel.
    """
    if not isinstance(steps, (int, np.integer)) or not 2 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be an integer from 2 to {MAX_STEPS}, got {steps!r}")
    a, b = np.asarray(z_a, np.float64), np.asarray(z_b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"z_a and z_b must be vectors of one size, got {a.shape} and {b.shape}")
    t = np.linspace(0.0, 1.0, steps)[:, None]  # (steps, 1)
    cos = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    if spherical and 1e-6 < omega < np.pi - 1e-6:
        path = (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)
    else:
        path = (1 - t) * a + t * b
    return path.astype(np.float32)


def interpolate(sample_z_fn: SampleZFn, generate_fn: GenerateFn, seed_a: int, seed_b: int,
                steps: int = 10, spherical: bool = True) -> np.ndarray:
    """A strip of `steps` digits morphing from seed_a's to seed_b's: TWO calls (z of both, then images).

    Returns:
        float32 (28, steps*28) in [0, 1]; the first and last images are the seeds' own digits.
    """
    for s in (seed_a, seed_b):
        if not -INT64_MAX - 1 <= s <= INT64_MAX:
            raise ValueError(f"seed {s} does not fit in int64")
    if steps is None or not isinstance(steps, (int, np.integer)) or not 2 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be an integer from 2 to {MAX_STEPS}, got {steps!r}")
    z = np.asarray(sample_z_fn(np.array([seed_a, seed_b], np.int64)), np.float32)  # (2, latent)
    if z.ndim != 2 or len(z) != 2 or not np.all(np.isfinite(z)):
        raise ValueError(f"sample returned z of shape {z.shape}, expected (2, latent) finite values")
    path = path_between(z[0], z[1], steps, spherical)  # (steps, latent)
    images = _check_images(generate_fn(path), steps, "generate")
    return tile(images, 1, cols=steps)


class GANModel(LatentImageModel):
    """A served GAN: `sample` / `generate` over a genserve.clients.Client.

    Pinned to one version for the job (genserve.clients.pinned): the two requests of an interpolation
    come from the same version.
    Arguments as genserve.clients.pinned.PinnedJob (client, model, version).
    """

    FAMILY = "GAN"
    LATENT_SIGNATURE = C.GAN_GENERATE.name
    REQUIRED_SIGNATURES = (C.GAN_GENERATE.name, C.GAN_SAMPLE.name)

    def __init__(self, client, model: str = C.GAN.name, version: int | None = None):
        super().__init__(client, model, version)

    def _sample(self, seeds: np.ndarray) -> dict:
        seeds = np.asarray(seeds, dtype=np.int64)
        if seeds.ndim != 1 or len(seeds) == 0:
            raise ValueError(f"seeds must have shape (B,) with B >= 1, got {seeds.shape}")
        return self.pinned().predict({"seed": seeds}, signature=C.GAN_SAMPLE.name)

    def sample(self, seeds: np.ndarray) -> np.ndarray:
        """seeds int64 (B,) -> images float32 (B, 28, 28, 1), one Predict call."""
        return self._sample(seeds)["images"]

    def sample_z(self, seeds: np.ndarray) -> np.ndarray:
        """seeds int64 (B,) -> the z the server draws for them, float32 (B, latent), one Predict call."""
        return self._sample(seeds)["z"]

    def generate(self, z: np.ndarray) -> np.ndarray:
        """z (B, latent) -> images float32 (B, 28, 28, 1), one Predict call.

        Raises:
            ValueError: z has the wrong shape or non-finite values (checked before sending).
        """
        z = self.check_z(z)
        return self.pinned().predict({"z": z}, signature=C.GAN_GENERATE.name)["images"]

    def grid(self, n: int = 10, seed: int = 0) -> np.ndarray:
        """The n x n grid picture (n*28, n*28) in [0, 1], sampled in ONE Predict request (after the
        metadata that shows the served model is a GAN: "is it a GAN?" rather than a missing signature)."""
        self.latent_dim  # noqa: B018 - checks the signatures
        return render_grid(self.sample, n, seed)

    def interpolate(self, seed_a: int, seed_b: int, steps: int = 10, spherical: bool = True) -> np.ndarray:
        """The strip (28, steps*28) from seed_a's digit to seed_b's, in two requests."""
        return interpolate(self.sample_z, self.generate, seed_a, seed_b, steps, spherical)
