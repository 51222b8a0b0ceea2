"""GAN client algorithms with fake model calls (no server, no TensorFlow), and the quality measures.

    .venv/bin/python -m pytest -q tests/test_gan_client.py
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from genserve.clients import gan as client
from genserve.clients import images


def _fake_sample(seeds):
    """Image i is uniformly grey at (seed mod 7) / 6; records the calls."""
    _fake_sample.calls.append(np.array(seeds))
    values = (np.asarray(seeds) % 7) / 6.0
    return np.broadcast_to(values[:, None, None, None], (len(seeds), 28, 28, 1)).astype(np.float32)


def test_grid_is_one_call_with_consecutive_seeds():
    _fake_sample.calls = []
    picture = client.render_grid(_fake_sample, n=3, seed=5)
    assert len(_fake_sample.calls) == 1
    np.testing.assert_array_equal(_fake_sample.calls[0], np.arange(5, 14))
    assert _fake_sample.calls[0].dtype == np.int64
    assert picture.shape == (84, 84)
    # row-major: row 1, column 2 is the 6th image, seed 10
    assert picture[28 + 5, 56 + 5] == pytest.approx((10 % 7) / 6)


@pytest.mark.parametrize("n", [0, 65, -1, 2.5, True])
def test_grid_rejects_bad_sizes(n):
    with pytest.raises(ValueError, match="from 1 to 64"):
        client.render_grid(_fake_sample, n=n)


def test_grid_rejects_seed_overflow_and_bad_replies():
    with pytest.raises(ValueError, match="int64"):
        client.grid_seeds(2, 2 ** 63 - 2)
    with pytest.raises(ValueError, match="shape"):
        client.render_grid(lambda s: np.zeros((len(s), 28, 28), np.float32), n=2)
    with pytest.raises(ValueError, match="non-finite"):
        client.render_grid(lambda s: np.full((len(s), 28, 28, 1), np.nan, np.float32), n=2)


def test_slerp_keeps_the_ends_and_the_norm():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(100), rng.standard_normal(100)
    path = client.path_between(a, b, 7)
    assert path.shape == (7, 100) and path.dtype == np.float32
    np.testing.assert_allclose(path[0], a, atol=1e-5)
    np.testing.assert_allclose(path[-1], b, atol=1e-5)
    # for equal norms, every point of the great circle keeps that norm (a line would shrink it)
    b_scaled = b * np.linalg.norm(a) / np.linalg.norm(b)
    norms = np.linalg.norm(client.path_between(a, b_scaled, 9), axis=1)
    np.testing.assert_allclose(norms, np.linalg.norm(a), rtol=1e-5)
    line = client.path_between(a, b_scaled, 9, spherical=False)
    assert np.linalg.norm(line[4]) < 0.9 * np.linalg.norm(a)
    # parallel vectors fall back to the line
    np.testing.assert_allclose(client.path_between(a, 2 * a, 3)[1], 1.5 * a, rtol=1e-5)


def test_interpolate_is_two_calls():
    calls = []
    z = np.stack([np.full(4, -1.0), np.full(4, 1.0)]).astype(np.float32)

    def sample_z(seeds):
        calls.append(("sample", np.array(seeds)))
        return z

    def generate(path):
        calls.append(("generate", np.array(path)))
        return np.broadcast_to((path[:, :1, None, None] + 1) / 2, (len(path), 28, 28, 1))

    strip = client.interpolate(sample_z, generate, 3, 9, steps=5, spherical=False)
    assert [c[0] for c in calls] == ["sample", "generate"]
    np.testing.assert_array_equal(calls[0][1], [3, 9])
    assert calls[1][1].shape == (5, 4)
    assert strip.shape == (28, 5 * 28)
    np.testing.assert_allclose(strip[0, ::28], [0, 0.25, 0.5, 0.75, 1.0], atol=1e-6)
    with pytest.raises(ValueError, match="from 2 to 256"):
        client.interpolate(sample_z, generate, 0, 1, steps=1)


def test_png_is_written_atomically(tmp_path):
    picture = np.linspace(0, 1, 28 * 56).reshape(28, 56)
    path = images.save_grey(picture, tmp_path / "sub" / "strip.png", scale=2)
    with Image.open(path) as im:
        assert im.size == (112, 56) and im.mode == "L"
    assert [p.name for p in path.parent.iterdir()] == ["strip.png"]  # no temporary file left


def test_client_module_does_not_import_tensorflow():
    import subprocess

    code = "import sys, genserve.clients.gan; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ------------------------------------------------------------------ measures (numpy + scipy only)
def test_classifier_score_extremes():
    from genserve.training.mnist_classifier import classifier_score

    assert classifier_score(np.full((50, 10), 0.1)) == pytest.approx(1.0)  # uniform predictions
    assert classifier_score(np.eye(10)[np.arange(100) % 10]) == pytest.approx(10.0, rel=1e-6)  # confident, balanced
    assert classifier_score(np.eye(10)[np.zeros(100, int)]) == pytest.approx(1.0)  # mode collapse
    assert classifier_score(np.eye(10)[np.arange(100) % 5]) == pytest.approx(5.0, rel=1e-6)
    with pytest.raises(ValueError):
        classifier_score(np.zeros((0, 10)))


def test_frechet_distance_known_values():
    from genserve.training.mnist_classifier import fid, frechet_distance

    rng = np.random.default_rng(0)
    feats = rng.standard_normal((500, 8))
    assert fid(feats, feats) == pytest.approx(0.0, abs=1e-6)
    # shifted means add ||mu1 - mu2||^2; for diagonal covariances the trace term is sum (s1 - s2)^2
    mu = np.zeros(3)
    assert frechet_distance(mu, np.eye(3), mu + 2.0, np.eye(3)) == pytest.approx(12.0)
    assert frechet_distance(mu, np.diag([1.0, 4.0, 9.0]), mu, np.eye(3)) == pytest.approx(0 + 1 + 4)
    # singular covariances still give a finite, non-negative number
    assert frechet_distance(mu, np.zeros((3, 3)), mu, np.zeros((3, 3))) == pytest.approx(0.0, abs=1e-6)
    assert fid(feats, feats + 1.0) == pytest.approx(8.0, rel=1e-6)


def test_frechet_distance_equals_the_sqrtm_formula():
    from scipy import linalg

    from genserve.training.mnist_classifier import feature_stats, frechet_distance

    rng = np.random.default_rng(1)
    a = rng.standard_normal((300, 12))
    b = rng.standard_normal((300, 12)) @ rng.standard_normal((12, 12)) + 0.3
    (m1, s1), (m2, s2) = feature_stats(a), feature_stats(b)
    reference = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * np.real(linalg.sqrtm(s1 @ s2)))
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(reference, rel=1e-9)


def test_images_are_written_whole_or_not_at_all(tmp_path):
    """One image module for every client: a save replaces the file through a temporary sibling (none
    left behind), and a picture that cannot be encoded leaves the earlier file as it was."""
    path = tmp_path / "grid.png"
    images.save_grey(np.zeros((4, 4)), path)
    first = path.read_bytes()
    images.save_rgb(np.full((5, 6, 3), 128.0), path)
    assert path.read_bytes() != first and Image.open(path).size == (6, 5)
    kept = path.read_bytes()
    with pytest.raises((TypeError, ValueError)):
        images.save_rgb(np.zeros((2, 2, 2, 2)), path)  # no image shape Pillow can write
    assert path.read_bytes() == kept and [p.name for p in tmp_path.iterdir()] == ["grid.png"]
    assert images.tile(np.arange(6 * 4).reshape(6, 2, 2), 2, cols=3).shape == (4, 6)
