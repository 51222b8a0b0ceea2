"""DeepDream client: the book's octave schedule over an injected model call, tiles, images, gRPC wrapper.

    genserve dream examples/images/chelsea-cat.jpg -o out/cat_dream.png --target 127.0.0.1:8500 --width 300

`dream(ascend_fn, image, schedule)` is a pure function (numpy + Pillow, no TensorFlow): the book's
octave loop (Deep Learning with Python, 8.2) — shrink the image to the smallest of `octaves` shapes
(each `scale` times smaller than the next), ascend `iterations` steps, upscale, re-inject the detail
that upscaling lost (original at this size minus the shrunk original upscaled), repeat — over any
`ascend_fn(image, iterations, step, max_loss) -> (image, losses)`.

Two implementations of that call, chosen per octave by `RemoteDream.ascend_fn`:
- an image that fits in one tile (`tile_size`, default 512 px) goes to the served `ascend` signature:
  ONE request per octave, the loop runs on the server;
- a larger image goes through `tiled_ascent` over the `gradient` signature: every step rolls the image
  by a random shift, cuts it into equal overlapping tiles, sends them as one batch (split only to stay
  under `max_request_bytes`), puts the tile gradients back (overlaps averaged), rolls back and takes
  one normalised step on the whole image (the TF DeepDream tutorial's TiledGradients idea). The random
  shift moves the tile borders every step, so no seam survives; per-tile `ascend` calls would let each
  tile drift on its own for a whole octave and leave seams at fixed places.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from genserve import contract as C
from genserve.clients.images import ImageError, load_rgb
from genserve.clients.pinned import PinnedJob

# (image (H, W, 3), iterations, step, max_loss) -> (image (H, W, 3), loss before each step run (n,))
AscendFn = Callable[[np.ndarray, int, float, float], tuple[np.ndarray, np.ndarray]]
# images (N, h, w, 3) -> (loss (N,), raw gradient d loss / d image (N, h, w, 3))
GradientFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

MIN_SIDE = 32  # the smallest octave must keep VGG's deep layers non-empty
MAX_SIDE = 4096
MAX_PIXELS = 4_000_000  # like the style client: a 48 MB float32 image, under the 64 MiB message limit


@dataclass(frozen=True)
class DreamSchedule:
    """The book's octave schedule (Deep Learning with Python, 8.2)."""

    octaves: int = 3
    scale: float = 1.4  # size ratio between successive octaves
    iterations: int = 20  # ascent steps per octave
    step: float = 0.01  # pixels move C.DREAM_STEP_SCALE * step * g / mean|g| per iteration
    max_loss: float = 15.0  # an octave stops once its loss exceeds this (inf: never)

    def check(self) -> None:
        """Raises ValueError with a one-line reason for a schedule that makes no sense."""
        if self.octaves < 1:
            raise ValueError(f"octaves must be >= 1, got {self.octaves}")
        if not self.scale >= 1.0 or not math.isfinite(self.scale):
            raise ValueError(f"scale must be a finite number >= 1, got {self.scale}")
        if self.iterations < 0 or self.iterations > C.DREAM_MAX_ITERATIONS:
            raise ValueError(f"iterations must be in [0, {C.DREAM_MAX_ITERATIONS}], got {self.iterations}")
        if not self.step >= 0 or not math.isfinite(self.step):
            raise ValueError(f"step must be a finite number >= 0, got {self.step}")
        if not self.max_loss > 0:
            raise ValueError(f"max_loss must be > 0 (inf: no limit), got {self.max_loss}")


@dataclass
class DreamResult:
    """What `dream` returns."""

    image: np.ndarray  # (H, W, 3) float32, not clipped (images.save_rgb clips)
    shapes: list[tuple[int, int]]  # (h, w) of each octave, smallest first
    losses: list[np.ndarray] = field(default_factory=list)  # per octave: loss before each step run


# --------------------------------------------------------------------------------------------------
# The octave schedule.
# --------------------------------------------------------------------------------------------------
def octave_shapes(shape: tuple[int, int], octaves: int, scale: float) -> list[tuple[int, int]]:
    """The book's successive shapes, smallest first: int(side / scale**i) for i = octaves-1 .. 0."""
    h, w = shape
    return [(int(h / scale ** i), int(w / scale ** i)) for i in range(octaves - 1, -1, -1)]


def resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of a float (H, W, 3) image to (h, w), per channel in Pillow's float mode."""
    from PIL import Image

    h, w = shape
    if image.shape[:2] == (h, w):
        return image.astype(np.float32, copy=True)
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], np.float32), mode="F")
                           .resize((w, h), Image.Resampling.BICUBIC)) for c in range(image.shape[-1])]
    return np.stack(channels, axis=-1).astype(np.float32)


def dream(ascend_fn: AscendFn, image: np.ndarray, schedule: DreamSchedule = DreamSchedule(),
          callback: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
          min_side: int = MIN_SIDE) -> DreamResult:
    """DeepDream with the book's octaves and detail re-injection.

    Args:
        ascend_fn: (image (h, w, 3), iterations, step, max_loss) -> (image, losses of the steps run).
        image: (H, W, 3) RGB floats in [0, 255].
        schedule: octaves, scale, iterations, step, max_loss.
        callback: called as callback(octave (1-based), image after the octave, its losses).
        min_side: the smallest octave's shorter side must be at least this.

    Returns:
        a DreamResult (the final image at the input's size, the octave shapes, the losses).

    Raises:
        ValueError: a bad schedule or image, or an octave smaller than `min_side`.
    """
    schedule.check()
    original = np.asarray(image, dtype=np.float32)
    if original.ndim != 3 or original.shape[-1] != 3:
        raise ValueError(f"image must be (H, W, 3), got shape {original.shape}")
    shapes = octave_shapes(original.shape[:2], schedule.octaves, schedule.scale)
    if min(shapes[0]) < min_side:
        raise ValueError(f"the smallest octave would be {shapes[0][1]}x{shapes[0][0]} px (< {min_side}); "
                         "use fewer octaves, a smaller scale or a larger image")
    result = DreamResult(image=original, shapes=shapes)
    shrunk_original = resize(original, shapes[0])
    x = original
    for octave, shape in enumerate(shapes, start=1):
        x = resize(x, shape)
        x, losses = ascend_fn(x, schedule.iterations, schedule.step, schedule.max_loss)
        x = np.asarray(x, np.float32)
        # Detail re-injection: what the shrink-then-upscale chain lost, taken from the original.
        x = x + (resize(original, shape) - resize(shrunk_original, shape))
        shrunk_original = resize(original, shape)
        result.losses.append(np.asarray(losses, np.float32))
        if callback is not None:
            callback(octave, x, result.losses[-1])
    result.image = x
    return result


# --------------------------------------------------------------------------------------------------
# Gradient ascent over the `gradient` call, whole or in tiles.
# --------------------------------------------------------------------------------------------------
def tile_starts(length: int, tile: int) -> list[int]:
    """Starts of equal tiles of size min(tile, length) covering [0, length), evenly spaced, the last
    flush with the end (neighbours overlap when tile does not divide length)."""
    if length <= tile:
        return [0]
    n = math.ceil(length / tile)
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def tiled_gradient(gradient_fn: GradientFn, image: np.ndarray, tile_size: int,
                   rng: np.random.Generator | None = None,
                   max_request_bytes: int = 16 << 20) -> tuple[float, np.ndarray]:
    """Loss and raw gradient of an (H, W, 3) image computed tile by tile.

    The image is rolled by a random (dy, dx) first (when it spans more than one tile), the equal-size
    tiles go to `gradient_fn` as batches of at most `max_request_bytes`, overlaps are averaged, and the
    gradient is rolled back. The loss is the tiles' area-weighted mean (the loss is a mean over positions).

    Returns:
        (loss, gradient (H, W, 3)).
    """
    h, w = image.shape[:2]
    if h <= tile_size and w <= tile_size:
        loss, grad = gradient_fn(image[None].astype(np.float32))
        return float(loss[0]), np.asarray(grad[0], np.float32)
    rng = rng if rng is not None else np.random.default_rng()
    dy, dx = int(rng.integers(0, h)), int(rng.integers(0, w))
    rolled = np.roll(image, (dy, dx), axis=(0, 1)).astype(np.float32)
    th, tw = min(tile_size, h), min(tile_size, w)
    boxes = [(y, x) for y in tile_starts(h, tile_size) for x in tile_starts(w, tile_size)]
    per_request = max(1, max_request_bytes // (th * tw * 3 * 4))
    grad = np.zeros_like(rolled)
    count = np.zeros((h, w, 1), np.float32)
    loss = 0.0
    for first in range(0, len(boxes), per_request):
        chunk = boxes[first:first + per_request]
        tiles = np.stack([rolled[y:y + th, x:x + tw] for y, x in chunk])  # (N, th, tw, 3)
        losses, grads = gradient_fn(tiles)
        for (y, x), tile_loss, tile_grad in zip(chunk, losses, grads):
            grad[y:y + th, x:x + tw] += tile_grad
            count[y:y + th, x:x + tw] += 1.0
            loss += float(tile_loss) / len(boxes)  # equal tiles: equal weights
    return loss, np.roll(grad / count, (-dy, -dx), axis=(0, 1))


def tiled_ascent(gradient_fn: GradientFn, image: np.ndarray, iterations: int, step: float,
                 max_loss: float, tile_size: int = 512, rng: np.random.Generator | None = None,
                 max_request_bytes: int = 16 << 20) -> tuple[np.ndarray, np.ndarray]:
    """The book's gradient_ascent loop on this side: x += DREAM_STEP_SCALE·step·g / mean|g|, stopping
    (before the update) once the loss exceeds max_loss; g from `tiled_gradient`. An AscendFn once
    gradient_fn and the tiling are bound.

    Returns:
        (image (H, W, 3), loss before each step run (n,)).
    """
    x = np.asarray(image, np.float32).copy()
    losses = []
    for _ in range(iterations):
        loss, grad = tiled_gradient(gradient_fn, x, tile_size, rng, max_request_bytes)
        losses.append(loss)
        if loss > max_loss:
            break
        x += C.DREAM_STEP_SCALE * step * grad / max(float(np.mean(np.abs(grad))), 1e-7)
    return x, np.asarray(losses, np.float32)


# --------------------------------------------------------------------------------------------------
# Images.
# --------------------------------------------------------------------------------------------------
def load_image(path, width: int | None = None) -> np.ndarray:
    """An image file as RGB float32 (H, W, 3) in [0, 255], optionally resized to `width` (aspect kept).

    Raises:
        ImageError: missing, unreadable or non-image file; a size outside [MIN_SIDE, MAX_SIDE] or above
            MAX_PIXELS.
    """
    def sized(file_width: int, file_height: int) -> tuple[int, int]:
        size = (file_width, file_height)
        if width is not None and width != file_width:
            size = (width, max(1, round(file_height * width / file_width)))
        if min(size) < MIN_SIDE or max(size) > MAX_SIDE or size[0] * size[1] > MAX_PIXELS:
            raise ImageError(f"{path}: {size[0]}x{size[1]} px; sides must be in [{MIN_SIDE}, {MAX_SIDE}] "
                             f"and at most {MAX_PIXELS:,} pixels (use --width)")
        return size

    return load_rgb(path, sized)


# --------------------------------------------------------------------------------------------------
# Over gRPC.
# --------------------------------------------------------------------------------------------------
class RemoteDream(PinnedJob):
    """The served dream model as the two calls above, pinned to one version for the job (the first
    answer's; genserve.clients.pinned).

    Args:
        client: a genserve.clients.Client.
        model: the served model name.
        version: a fixed version; None = the latest at the first call, then pinned for the job.

    Attributes:
        requests: Predict calls made (the benchmark counts them).
    """

    def __init__(self, client, model: str = C.DREAM.name, version: int | None = None):
        super().__init__(client, model, version)

    def _predict(self, inputs: dict, signature: str) -> dict[str, np.ndarray]:
        return self.pinned().predict(inputs, signature=signature)

    def ascend(self, image: np.ndarray, iterations: int, step: float,
               max_loss: float) -> tuple[np.ndarray, np.ndarray]:
        """One `ascend` request: a whole octave on the server. An AscendFn."""
        out = self._predict({"image": np.asarray(image, np.float32)[None],
                             "step_size": np.array([step], np.float32),
                             "iterations": np.array([iterations], np.int32),
                             "max_loss": np.array([max_loss], np.float32)}, C.DREAM_ASCEND.name)
        losses = out["losses"][0]  # NaN after the row stopped
        return out["image"][0], losses[~np.isnan(losses)]

    def gradient(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One `gradient` request for a batch of equal-size images (N, h, w, 3). A GradientFn."""
        out = self._predict({"image": np.asarray(images, np.float32)}, C.DREAM_GRADIENT.name)
        return out["loss"], out["gradient"]

    def ascend_fn(self, tile_size: int = 512, rng: np.random.Generator | None = None) -> AscendFn:
        """An AscendFn that sends an octave fitting in one tile as one `ascend` request and a larger one
        through `tiled_ascent` over `gradient` (tile_size 0: never tile)."""
        def call(image, iterations, step, max_loss):
            if tile_size <= 0 or max(image.shape[:2]) <= tile_size:
                return self.ascend(image, iterations, step, max_loss)
            return tiled_ascent(self.gradient, image, iterations, step, max_loss, tile_size, rng)

        return call
