"""The style client's pure parts, no server and no TensorFlow: the L-BFGS-B loop over a fake
`(loss, grad)` function, image loading (aspect ratio, bad files, absurd sizes) and figures.

    .venv/bin/python -m pytest tests/test_style_client.py -q
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from genserve.clients.images import save_rgb
from genserve.clients.style import (
    MAX_SIDE,
    ImageError,
    load_image,
    side_by_side,
    stylize,
    target_size,
)


def quadratic(target: np.ndarray):
    """loss = sum((x - target)²), grad = 2 (x - target): the minimiser inside [0, 255] is clip(target)."""
    calls = []

    def loss_and_grad(x: np.ndarray):
        assert x.dtype == np.float32 and x.shape == target.shape
        calls.append(x.copy())
        diff = x.astype(np.float64) - target
        return float(np.sum(diff ** 2)), (2 * diff).astype(np.float32)

    return loss_and_grad, calls


def test_stylize_minimises_within_bounds():
    rng = np.random.default_rng(0)
    target = rng.uniform(-100, 355, (6, 5, 3))  # partly outside [0, 255]
    fn, calls = quadratic(target)
    seen = []
    result = stylize(fn, np.full((6, 5, 3), 128.0, np.float32), iterations=3, evals_per_iteration=10,
                     callback=lambda i, image, loss: seen.append((i, image.shape, loss)))
    np.testing.assert_allclose(result.image, np.clip(target, 0, 255), atol=1e-2)
    assert result.image.min() >= 0 and result.image.max() <= 255
    assert [s[0] for s in seen] == [1, 2, 3] and all(s[1] == (6, 5, 3) for s in seen)
    assert result.losses == [s[2] for s in seen]
    assert result.initial_loss == pytest.approx(np.sum((128 - target) ** 2))
    best = np.sum((np.clip(target, 0, 255) - target) ** 2)  # the bounded minimum
    assert result.losses[-1] == pytest.approx(best, rel=1e-6) and best < 0.2 * result.initial_loss
    assert result.evaluations == len(calls) == len(result.history)
    np.testing.assert_array_equal(calls[0], np.full((6, 5, 3), 128.0))  # the first evaluation is x0


def test_stylize_respects_evals_per_iteration():
    target = np.random.default_rng(1).uniform(0, 255, (8, 8, 3))
    fn, calls = quadratic(target)
    # An ill-conditioned variant so L-BFGS cannot finish early: scale one pixel's loss by 1e6.
    weights = np.ones_like(target)
    weights[0, 0, 0] = 1e6

    def hard(x):
        diff = x.astype(np.float64) - target
        return float(np.sum(weights * diff ** 2)), (2 * weights * diff).astype(np.float32)

    result = stylize(hard, np.zeros((8, 8, 3), np.float32), iterations=2, evals_per_iteration=4)
    assert 2 * 4 <= result.evaluations <= 2 * (4 + 20)  # maxfun is checked between line searches


def test_stylize_rejects_bad_input():
    fn, _ = quadratic(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="H, W, 3"):
        stylize(fn, np.zeros((4, 4)), iterations=1)
    with pytest.raises(ValueError, match=">= 1"):
        stylize(fn, np.zeros((4, 4, 3)), iterations=0)
    with pytest.raises(ValueError, match="non-finite"):
        stylize(lambda x: (float("nan"), np.zeros_like(x)), np.zeros((4, 4, 3)), iterations=1)


def test_target_size_keeps_aspect_ratio():
    # The seed's `int(width * height / height)` kept 665 here; the aspect ratio gives 591.
    assert target_size(665, 450, 400) == (591, 400)
    assert target_size(451, 300, 200) == (301, 200)
    with pytest.raises(ImageError, match="zero size"):
        target_size(0, 10, 100)
    with pytest.raises(ImageError, match="outside"):
        target_size(100, 100, 100_000)
    with pytest.raises(ImageError, match="wide"):
        target_size(MAX_SIDE * 10, 40, 400)  # a panorama 10x too wide at that height


def test_load_image_resizes_and_converts(tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray(np.full((60, 90), 200, np.uint8), mode="L").save(path)
    image = load_image(path, height=40)
    assert image.shape == (40, 60, 3) and image.dtype == np.float32
    assert image.min() == pytest.approx(200, abs=1) and image.max() == pytest.approx(200, abs=1)
    assert load_image(path, size=(50, 35)).shape == (35, 50, 3)
    assert load_image(path).shape == (60, 90, 3)


def test_load_image_errors(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png", height=100)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(empty, height=100)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image\n")
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(text, height=100)
    truncated = tmp_path / "truncated.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "ok.png")
    truncated.write_bytes((tmp_path / "ok.png").read_bytes()[:60])
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(truncated, height=64)
    with pytest.raises(ImageError, match="outside"):
        load_image(tmp_path / "ok.png", height=8)


def test_save_and_side_by_side(tmp_path):
    a = np.full((40, 60, 3), 300.0, np.float32)  # out of range: clipped when saved
    b = np.zeros((20, 20, 3), np.float32)
    figure = side_by_side([a, b, a], gap=4)
    assert figure.shape == (40, 60 + 4 + 40 + 4 + 60, 3)
    path = save_rgb(figure, tmp_path / "fig" / "side.png")
    back = np.asarray(Image.open(path))
    assert back.shape == (40, 168, 3) and back[0, 0, 0] == 255 and back[20, 80, 0] == 0


def test_client_modules_do_not_import_tensorflow():
    code = ("import sys, genserve.cli, genserve.clients.style, genserve.cli.style; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
