"""The DeepDream client's pure functions with fake model calls: the book's octave schedule, detail
re-injection, the max_loss early stop, tiles with random shifts, images. No TensorFlow, no server.

    .venv/bin/python -m pytest tests/test_dream_client.py -q
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from genserve import contract as C
from genserve.clients.images import encode_rgb, save_rgb
from genserve.clients.dream import (
    DreamSchedule,
    ImageError,
    dream,
    load_image,
    octave_shapes,
    resize,
    tile_starts,
    tiled_ascent,
    tiled_gradient,
)


def test_octave_shapes_are_the_books():
    # The book: int(dim / 1.4 ** i), smallest first.
    assert octave_shapes((300, 451), 3, 1.4) == [(153, 230), (214, 322), (300, 451)]
    assert octave_shapes((100, 80), 1, 1.4) == [(100, 80)]


def test_dream_calls_ascend_once_per_octave_and_reinjects_detail():
    calls = []

    def ascend(image, iterations, step, max_loss):  # a fake model: adds a constant, reports a loss
        calls.append((image.shape, iterations, step, max_loss))
        return image + 10.0, np.array([1.0, 2.0], np.float32)

    rng = np.random.default_rng(0)
    original = rng.uniform(0, 255, (90, 120, 3)).astype(np.float32)
    schedule = DreamSchedule(octaves=3, scale=1.4, iterations=7, step=0.02, max_loss=9.0)
    seen = []
    result = dream(ascend, original, schedule, callback=lambda o, x, losses: seen.append((o, x.shape)))
    assert [c[0][:2] for c in calls] == result.shapes == [(45, 61), (64, 85), (90, 120)]
    assert all(c[1:] == (7, 0.02, 9.0) for c in calls)
    assert seen == [(1, (45, 61, 3)), (2, (64, 85, 3)), (3, (90, 120, 3))]
    assert len(result.losses) == 3 and result.image.shape == original.shape
    # With the +10 of each octave kept through bicubic resizes, detail re-injection restores the
    # original's detail: the result is the original plus ~30 (exactly 30 away from resampling error).
    diff = result.image - original
    assert abs(float(np.median(diff)) - 30.0) < 1.0
    # Without re-injection (the same chain, no detail added back) the result would be a blurred
    # original: re-injection brings the high frequencies back.
    blurred = resize(resize(original, (45, 61)), (90, 120))
    assert np.abs(result.image - 30 - original).mean() < 0.5 * np.abs(blurred - original).mean()


def test_identity_ascent_returns_the_original():
    image = np.random.default_rng(1).uniform(0, 255, (64, 96, 3)).astype(np.float32)
    result = dream(lambda x, *a: (x, np.zeros(0, np.float32)), image, DreamSchedule(octaves=2))
    np.testing.assert_allclose(result.image, image, atol=1e-3)  # detail re-injection is exact here


@pytest.mark.parametrize("kwargs, match", [
    ({"octaves": 0}, "octaves"), ({"scale": 0.5}, "scale"), ({"iterations": -1}, "iterations"),
    ({"step": -0.01}, "step"), ({"max_loss": 0.0}, "max_loss"), ({"step": float("nan")}, "step"),
])
def test_bad_schedules(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dream(lambda x, *a: (x, []), np.zeros((64, 64, 3), np.float32), DreamSchedule(**kwargs))


def test_too_small_for_the_octaves():
    with pytest.raises(ValueError, match="smallest octave"):
        dream(lambda x, *a: (x, []), np.zeros((40, 60, 3), np.float32), DreamSchedule(octaves=3))


def quadratic(images):
    """A fake `gradient` call: loss = mean((x - 100)^2) per image, its exact gradient."""
    diff = images.astype(np.float64) - 100.0
    per_image = diff[0].size
    return ((diff ** 2).reshape(len(images), -1).mean(axis=1).astype(np.float32),
            (2 * diff / per_image).astype(np.float32))


def test_tiled_ascent_follows_the_books_update_and_stops_at_max_loss():
    x0 = np.full((20, 30, 3), 110.0, np.float32)  # loss 100
    x, losses = tiled_ascent(quadratic, x0, iterations=3, step=0.01, max_loss=np.inf, tile_size=512)
    np.testing.assert_allclose(losses[0], 100.0, rtol=1e-6)
    # normalised gradient is +1 everywhere: each step adds 127.5 * 0.01
    np.testing.assert_allclose(x, 110.0 + 3 * C.DREAM_STEP_SCALE * 0.01, rtol=1e-6)
    assert len(losses) == 3 and losses[0] < losses[1] < losses[2]
    # max_loss: stop before the update once the loss exceeds it (the book's `break`)
    x, losses = tiled_ascent(quadratic, x0, iterations=10, step=0.01, max_loss=110.0, tile_size=512)
    assert len(losses) == 2 and losses[-1] > 110.0
    np.testing.assert_allclose(x, 110.0 + C.DREAM_STEP_SCALE * 0.01, rtol=1e-6)


def test_tile_starts_cover_with_equal_tiles():
    assert tile_starts(100, 512) == [0]
    assert tile_starts(1000, 512) == [0, 488]
    assert tile_starts(1024, 512) == [0, 512]
    starts = tile_starts(1300, 512)
    assert starts[0] == 0 and starts[-1] == 1300 - 512 and len(starts) == 3


def test_tiled_gradient_equals_the_whole_image_gradient_for_a_local_loss():
    """A per-pixel loss has the same gradient whatever the tiling and shift: the tiles are put back
    in place (overlaps averaged, roll undone), and the batches stay under the byte limit."""
    rng = np.random.default_rng(2)
    image = rng.uniform(0, 255, (70, 90, 3)).astype(np.float32)
    batches = []

    def fn(images):
        batches.append(images.shape)
        diff = images - 100.0
        return (diff ** 2).reshape(len(images), -1).mean(axis=1), 2 * diff  # unnormalised per pixel

    loss, grad = tiled_gradient(fn, image, tile_size=32, rng=rng, max_request_bytes=4 * 32 * 32 * 12)
    np.testing.assert_allclose(grad, 2 * (image - 100.0), rtol=1e-5, atol=1e-3)
    assert all(shape[1:] == (32, 32, 3) and shape[0] <= 4 for shape in batches)
    assert sum(shape[0] for shape in batches) == len(tile_starts(70, 32)) * len(tile_starts(90, 32))
    assert loss == pytest.approx(float(((image - 100.0) ** 2).mean()), rel=0.05)


def test_tiles_shift_randomly_so_no_seam_stays_in_place():
    """A fake whose gradient is large at every tile border: with random shifts the borders move, so the
    summed update over many steps is spread out instead of piling up on fixed lines."""
    def border_gradient(images):
        g = np.zeros_like(images)
        g[:, :2], g[:, -2:], g[:, :, :2], g[:, :, -2:] = 1.0, 1.0, 1.0, 1.0
        g += 1e-3
        return np.zeros(len(images), np.float32), g

    x0 = np.zeros((96, 96, 3), np.float32)
    x, _ = tiled_ascent(border_gradient, x0, iterations=40, step=0.01, max_loss=np.inf, tile_size=32,
                        rng=np.random.default_rng(3))
    column_means = x.mean(axis=(0, 2))
    assert column_means.max() < 2.0 * column_means.mean()  # no fixed seam columns
    y, _ = tiled_ascent(border_gradient, x0, iterations=1, step=0.01, max_loss=np.inf, tile_size=512)
    assert y[0, 0, 0] > 10 * y[48, 48, 0]  # one whole tile: its own border is the image border


def test_load_and_save_images(tmp_path):
    yy, xx = np.mgrid[0:60, 0:90]
    picture = np.stack([xx * 2, yy * 3, xx + yy], -1).clip(0, 255).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "in.png")
    assert load_image(tmp_path / "in.png").shape == (60, 90, 3)
    assert load_image(tmp_path / "in.png", width=66).shape == (44, 66, 3)
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(tmp_path / "junk.png")
    with pytest.raises(ImageError, match="sides must be"):
        load_image(tmp_path / "in.png", width=20)
    out = save_rgb(np.full((10, 12, 3), 300.0), tmp_path / "sub" / "out.png")  # parent created, clipped
    assert np.asarray(Image.open(out)).max() == 255
    assert encode_rgb(np.zeros((4, 4, 3)), ".jpg")[:2] == b"\xff\xd8"
    assert not list((tmp_path / "sub").glob(".*tmp*"))  # no temporary sibling left behind


def test_client_and_cli_help_import_no_tensorflow():
    import subprocess
    import sys

    code = ("import sys; import genserve.clients.dream; from typer.testing import CliRunner; "
            "from genserve.cli import app; r = CliRunner().invoke(app, ['dream', '--help']); "
            "assert r.exit_code == 0 and '--octaves' in r.output, r.output; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
