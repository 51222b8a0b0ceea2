"""VAE client: the latent grid in ONE request, and latent positions of labelled images. No TensorFlow.

The algorithms are pure functions over an injected model call, so they are tested with fakes and run
unchanged over gRPC (genserve's server or TF Serving):

    render_grid(decode_fn, n, latent_dim)     decode_fn: z (B, latent) -> images (B, 28, 28, 1)
    encode_all(encode_fn, images)             encode_fn: images -> (z_mean, z_log_var)

`VAEModel` binds them to a served model; it reads the latent size from the server's metadata (the
static shape of `z` in the `decode` signature), so a model name and an address are all it needs.

    genserve grid --target 127.0.0.1:8500 --n 15 --out out/vae_grid.png
    python -c "from genserve.clients import Client; from genserve.clients.vae import VAEModel; \
print(VAEModel(Client('127.0.0.1:8500')).latent_dim)"

The grid follows the book (Deep Learning with Python, 8.4): points at the standard normal's quantiles
norm.ppf(linspace(0.05, 0.95, n)) along two latent axes, i.e. evenly spaced in probability under the
prior p(z) = N(0, I). Row 0 (top) has the largest z[1], column 0 the smallest z[0], so the picture is
oriented like the encode scatter plot; any further latent dimensions are held at 0 (the prior mean).
"""

from __future__ import annotations

from pathlib import Path
from statistics import NormalDist
from typing import Callable

import numpy as np

from genserve import contract as C
from genserve.clients.images import save_figure, tile
from genserve.clients.pinned import LatentImageModel

DecodeFn = Callable[[np.ndarray], np.ndarray]  # z (B, latent) float32 -> images (B, 28, 28, 1)
EncodeFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # images -> (z_mean, z_log_var)
MAX_GRID = 64  # 64 x 64 = 4096 points, a 12.8 MB float32 reply: inside the clients' 64 MiB limit
SPACINGS = ("quantile", "linear")
IMAGE_SIDE = 28


def grid_axis(n: int, low: float = 0.05, high: float = 0.95, spacing: str = "quantile") -> np.ndarray:
    """The n coordinates along one latent axis.

    Args:
        n: points per axis, 1..MAX_GRID.
        low, high: with spacing "quantile", probabilities in (0, 1) mapped through the standard normal's
            inverse CDF (the book's norm.ppf(linspace(0.05, 0.95, n))); with "linear", z values.
        spacing: "quantile" or "linear".

    Returns:
        float32 (n,), increasing.

    Raises:
        ValueError: n outside 1..MAX_GRID, an unknown spacing, low >= high, or quantiles outside (0, 1).
    """
    if not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_GRID:
        raise ValueError(f"grid size n must be an integer from 1 to {MAX_GRID}, got {n!r}")
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"the range must be finite, got {low}..{high}")
    if not low < high:
        raise ValueError(f"the range must increase: low {low} is not below high {high}")
    values = np.linspace(low, high, n)  # (n,)
    if spacing == "quantile":
        if not (0 < low < 1 and 0 < high < 1):
            raise ValueError(f"quantile range must lie strictly inside (0, 1), got {low}..{high} "
                             "(use --linear for a range of z values)")
        normal = NormalDist()
        values = np.array([normal.inv_cdf(float(p)) for p in values])
    return values.astype(np.float32)


def grid_points(n: int, latent_dim: int, low: float = 0.05, high: float = 0.95,
                spacing: str = "quantile", dims: tuple[int, int] = (0, 1)) -> np.ndarray:
    """The n*n latent points of a grid, row-major (row r = image row r of the figure).

    Args:
        latent_dim: the model's latent size (>= 1; with 1, only the columns vary).
        dims: which two latent coordinates vary along the columns and the rows.

    Returns:
        float32 (n*n, latent_dim).
    """
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
    axis = grid_axis(n, low, high, spacing)  # (n,)
    col_dim, row_dim = dims
    if not (0 <= col_dim < latent_dim and (latent_dim == 1 or 0 <= row_dim < latent_dim)):
        raise ValueError(f"dims {dims} out of range for a {latent_dim}-d latent space")
    z = np.zeros((n, n, latent_dim), np.float32)  # (rows, cols, latent)
    z[:, :, col_dim] = axis[None, :]
    if latent_dim > 1:
        z[:, :, row_dim] = axis[::-1, None]  # top row = largest value
    return z.reshape(n * n, latent_dim)


def render_grid(decode_fn: DecodeFn, n: int = 15, latent_dim: int = 2, low: float = 0.05,
                high: float = 0.95, spacing: str = "quantile",
                dims: tuple[int, int] = (0, 1)) -> np.ndarray:
    """Decode an n x n latent grid with exactly ONE call of `decode_fn`.

    Args:
        decode_fn: z float32 (n*n, latent_dim) -> images (n*n, 28, 28, 1) in [0, 1].
        n, latent_dim, low, high, spacing, dims: see grid_points.

    Returns:
        float32 (n*28, n*28) in [0, 1].

    Raises:
        ValueError: bad grid arguments, or decode_fn returned the wrong shape or non-finite values.
    """
    z = grid_points(n, latent_dim, low, high, spacing, dims)  # (n*n, latent)
    images = np.asarray(decode_fn(z), dtype=np.float32)  # (n*n, 28, 28, 1)
    if images.shape != (n * n, IMAGE_SIDE, IMAGE_SIDE, 1):
        raise ValueError(f"decode returned shape {images.shape}, expected {(n * n, IMAGE_SIDE, IMAGE_SIDE, 1)}")
    if not np.all(np.isfinite(images)):
        raise ValueError("decode returned non-finite pixel values")
    return tile(images, n)


def encode_all(encode_fn: EncodeFn, images: np.ndarray,
               batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Encode many images in batches of `batch_size` (one call per batch).

    Args:
        images: uint8 (N, 28, 28[, 1]) 0..255 or float (N, 28, 28[, 1]) in [0, 1].

    Returns:
        (z_mean, z_log_var), each float32 (N, latent).
    """
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[..., None]  # (N, 28, 28, 1)
    if x.ndim != 4 or x.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE, 1):
        raise ValueError(f"images must have shape (N, 28, 28[, 1]), got {np.asarray(images).shape}")
    if len(x) == 0:
        raise ValueError("no images to encode")
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    means, log_vars = [], []
    for start in range(0, len(x), batch_size):
        z_mean, z_log_var = encode_fn(x[start:start + batch_size])
        means.append(np.asarray(z_mean, np.float32))
        log_vars.append(np.asarray(z_log_var, np.float32))
    return np.concatenate(means), np.concatenate(log_vars)


def scatter_plot(z_mean: np.ndarray, labels: np.ndarray, path: str | Path,
                 title: str = "test images in latent space", class_names=None) -> Path:
    """The classic figure: each image's z_mean (first two coordinates), coloured by its label.

    Returns:
        The path written (PNG).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z_mean = np.asarray(z_mean)
    if z_mean.ndim != 2 or len(z_mean) != len(labels):
        raise ValueError(f"z_mean {z_mean.shape} and labels {np.shape(labels)} do not match")
    y = z_mean[:, 1] if z_mean.shape[1] > 1 else np.zeros(len(z_mean))
    fig, ax = plt.subplots(figsize=(7, 6), dpi=100)
    points = ax.scatter(z_mean[:, 0], y, c=labels, cmap="tab10", s=2, vmin=-0.5, vmax=9.5)
    bar = fig.colorbar(points, ax=ax, ticks=range(10))
    if class_names is not None:
        bar.ax.set_yticklabels(class_names)
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)


class VAEModel(LatentImageModel):
    """A served VAE: `decode` / `encode` over a genserve.clients.Client.

    Pinned to one version for the job (genserve.clients.pinned): the batches of one `encode` job, or a
    grid and its latent size, all come from the same version.
    Arguments as genserve.clients.pinned.PinnedJob (client, model, version).
    """

    FAMILY = "VAE"
    LATENT_SIGNATURE = C.VAE_DECODE.name
    REQUIRED_SIGNATURES = (C.VAE_DECODE.name,)

    def __init__(self, client, model: str = C.VAE.name, version: int | None = None):
        super().__init__(client, model, version)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """z (B, latent) -> images float32 (B, 28, 28, 1), one Predict call.

        Raises:
            ValueError: z has the wrong shape for this model or non-finite values (checked before
                sending; the served graph also rejects them with INVALID_ARGUMENT).
            GenserveError: the RPC failed.
        """
        z = self.check_z(z)
        out = self.pinned().predict({"z": z}, signature=C.VAE_DECODE.name)
        return out["images"]

    def encode(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """images float32 (B, 28, 28, 1) in [0, 1] -> (z_mean, z_log_var), one Predict call."""
        out = self.pinned().predict({"images": np.asarray(images, np.float32)},
                                    signature=C.VAE_ENCODE.name)
        return out["z_mean"], out["z_log_var"]

    def grid(self, n: int = 15, low: float = 0.05, high: float = 0.95, spacing: str = "quantile",
             dims: tuple[int, int] = (0, 1)) -> np.ndarray:
        """The n x n grid picture (n*28, n*28) in [0, 1], decoded in ONE request."""
        return render_grid(self.decode, n, self.latent_dim, low, high, spacing, dims)
