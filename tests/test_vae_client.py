"""The VAE client's pure functions, with fake decode/encode functions (no server, no TensorFlow)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from genserve.clients import images, vae


def test_grid_axis_is_the_books_quantiles():
    from scipy.stats import norm

    expected = norm.ppf(np.linspace(0.05, 0.95, 15))
    np.testing.assert_allclose(vae.grid_axis(15), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(vae.grid_axis(3, -2, 2, spacing="linear"), [-2, 0, 2])


@pytest.mark.parametrize("n", [0, -1, 65, 2.5])
def test_grid_axis_rejects_bad_sizes(n):
    with pytest.raises(ValueError, match="from 1 to 64"):
        vae.grid_axis(n)


def test_grid_axis_rejects_bad_ranges():
    with pytest.raises(ValueError, match=r"inside \(0, 1\)"):
        vae.grid_axis(5, 0.0, 0.9)  # norm.ppf(0) = -inf
    with pytest.raises(ValueError, match="finite"):
        vae.grid_axis(5, float("nan"), 1.0, spacing="linear")
    with pytest.raises(ValueError, match="spacing"):
        vae.grid_axis(5, spacing="log")
    with pytest.raises(ValueError, match="must increase"):
        vae.grid_axis(5, 0.9, 0.1)  # a flipped grid is refused, not drawn


def test_grid_points_orientation():
    z = vae.grid_points(3, 4, -1, 1, spacing="linear")  # (9, 4)
    grid = z.reshape(3, 3, 4)
    assert grid[0, 0].tolist() == [-1, 1, 0, 0]  # top-left: smallest z0, largest z1
    assert grid[2, 2].tolist() == [1, -1, 0, 0]  # bottom-right
    assert np.all(grid[:, :, 2:] == 0)  # extra dimensions at the prior mean
    assert vae.grid_points(2, 1, -1, 1, spacing="linear")[:, 0].tolist() == [-1, 1, -1, 1]


def test_render_grid_makes_exactly_one_call_and_places_each_image():
    calls = []

    def fake_decode(z):  # each image is filled with its row index in the request
        calls.append(z.copy())
        return np.broadcast_to(np.arange(len(z), dtype=np.float32)[:, None, None, None] / len(z),
                               (len(z), 28, 28, 1))

    picture = vae.render_grid(fake_decode, n=4)
    assert len(calls) == 1 and calls[0].shape == (16, 2) and calls[0].dtype == np.float32
    assert picture.shape == (112, 112)
    assert picture[0, 0] == 0 and picture[0, 28] == 1 / 16  # row-major tiling
    assert picture[28, 0] == 4 / 16 and picture[111, 111] == 15 / 16


def test_render_grid_checks_what_decode_returns():
    with pytest.raises(ValueError, match="decode returned shape"):
        vae.render_grid(lambda z: np.zeros((len(z), 28, 28)), n=2)
    with pytest.raises(ValueError, match="non-finite"):
        vae.render_grid(lambda z: np.full((len(z), 28, 28, 1), np.nan), n=2)


def test_encode_all_batches_and_scales():
    seen = []

    def fake_encode(x):
        seen.append((x.shape, x.dtype, float(x.max())))
        return x.reshape(len(x), -1)[:, :2], np.zeros((len(x), 2))

    images = np.full((5, 28, 28), 255, np.uint8)
    z_mean, z_log_var = vae.encode_all(fake_encode, images, batch_size=2)
    assert [s[0][0] for s in seen] == [2, 2, 1] and seen[0][1] == np.float32 and seen[0][2] == 1.0
    assert z_mean.shape == (5, 2) and np.all(z_mean == 1.0) and z_log_var.dtype == np.float32
    with pytest.raises(ValueError, match="shape"):
        vae.encode_all(fake_encode, np.zeros((2, 32, 32)))


def test_save_png_and_scatter(tmp_path):
    picture = np.linspace(0, 1, 56 * 28, dtype=np.float32).reshape(56, 28)
    path = images.save_grey(picture, tmp_path / "sub" / "grid.png", scale=2)
    with Image.open(path) as im:
        assert im.size == (56, 112) and im.mode == "L"
        pixels = np.asarray(im)
    assert pixels[0, 0] == 0 and pixels[-1, -1] == 255
    rng = np.random.default_rng(0)
    out = vae.scatter_plot(rng.normal(size=(100, 2)), rng.integers(0, 10, 100), tmp_path / "scatter.png")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 300


def test_client_module_does_not_import_tensorflow():
    import subprocess

    code = ("import sys, genserve.clients.vae, genserve.data.mnist, genserve.cli; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
