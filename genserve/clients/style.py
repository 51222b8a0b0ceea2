"""Style-transfer client: L-BFGS-B over an injected `(loss, grad)` function, images, and the gRPC wrapper.

    genserve stylize examples/images/chelsea-cat.jpg examples/images/hokusai-great-wave.jpg -o out/cat.png \\
        --target 127.0.0.1:8500 --height 200 --iterations 3

`stylize(loss_and_grad, x0, ...)` is a pure function: it runs scipy's L-BFGS-B with bounds [0, 255]
(the seed clips after the fact instead) over any function mapping an image (H, W, 3) to
(loss, gradient). `RemoteStyle` is that function over gRPC: it reads the style layers from the
model's metadata, calls `targets` once per job and `step` once per evaluation. No TensorFlow import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from genserve import contract as C
from genserve.clients.images import ImageError, load_rgb, to_uint8
from genserve.clients.pinned import PinnedJob

LossAndGrad = Callable[[np.ndarray], tuple[float, np.ndarray]]  # image (H, W, 3) -> (loss, grad (H, W, 3))

MIN_SIDE = 32  # the smallest --height `load_image` resizes to
# VGG pools 4 times before block5_conv1/conv2 (the book's deepest layers): a side below 2**4 leaves no
# features; the style export asserts the same in its graph (genserve.export.style.min_side).
VGG_MIN_SIDE = 16
MAX_SIDE = 4096
MAX_PIXELS = 4_000_000  # a (H, W, 3) float32 image of 48 MB stays under the 64 MiB message limit


@dataclass
class StyleResult:
    """What `stylize` returns."""

    image: np.ndarray  # (H, W, 3) float32 in [0, 255]
    initial_loss: float
    losses: list[float] = field(default_factory=list)  # loss after each iteration
    history: list[float] = field(default_factory=list)  # loss at every evaluation, in order

    @property
    def evaluations(self) -> int:
        return len(self.history)


# --------------------------------------------------------------------------------------------------
# The optimiser.
# --------------------------------------------------------------------------------------------------
def stylize(loss_and_grad: LossAndGrad, x0: np.ndarray, iterations: int = 20, evals_per_iteration: int = 20,
            callback: Callable[[int, np.ndarray, float], None] | None = None) -> StyleResult:
    """Minimise the loss over the image with L-BFGS-B, pixels bounded to [0, 255].

    Like the seed, it restarts L-BFGS `iterations` times with `maxfun=evals_per_iteration` each, so
    an image can be saved between restarts (scipy may overshoot maxfun by a line search's few calls).

    Args:
        loss_and_grad: image (H, W, 3) float32 -> (loss, d loss / d image of the same shape).
        x0: the starting image (H, W, 3), e.g. the content image; clipped into [0, 255].
        callback: called as callback(iteration, image, loss) after each iteration (1-based).

    Returns:
        a StyleResult with the final image and the loss history.

    Raises:
        ValueError: bad shapes or counts, or a non-finite loss/gradient from `loss_and_grad`.
    """
    from scipy.optimize import Bounds, minimize

    x0 = np.asarray(x0, dtype=np.float32)
    if x0.ndim != 3 or x0.shape[-1] != 3 or min(x0.shape[:2]) < 1:
        raise ValueError(f"x0 must be an (H, W, 3) image, got shape {x0.shape}")
    if iterations < 1 or evals_per_iteration < 1:
        raise ValueError("iterations and evals_per_iteration must be >= 1")
    shape = x0.shape
    history: list[float] = []

    def fun(flat: np.ndarray) -> tuple[float, np.ndarray]:
        # The one float64 <-> float32 and flat <-> (H, W, 3) boundary.
        loss, grad = loss_and_grad(flat.reshape(shape).astype(np.float32))
        loss = float(loss)
        grad = np.asarray(grad, dtype=np.float64).reshape(-1)
        if not math.isfinite(loss) or not np.all(np.isfinite(grad)):
            raise ValueError(f"non-finite loss or gradient at evaluation {len(history) + 1}")
        history.append(loss)
        return loss, grad

    x = np.clip(x0, 0.0, 255.0).astype(np.float64).reshape(-1)
    bounds = Bounds(np.zeros_like(x), np.full_like(x, 255.0))
    losses: list[float] = []
    for i in range(1, iterations + 1):
        result = minimize(fun, x, jac=True, method="L-BFGS-B", bounds=bounds,
                          options={"maxfun": evals_per_iteration})
        x = result.x
        losses.append(float(result.fun))
        if callback is not None:
            callback(i, x.reshape(shape).astype(np.float32), float(result.fun))
    return StyleResult(image=x.reshape(shape).astype(np.float32), initial_loss=history[0],
                       losses=losses, history=history)


# --------------------------------------------------------------------------------------------------
# Images.
# --------------------------------------------------------------------------------------------------
def target_size(width: int, height: int, new_height: int) -> tuple[int, int]:
    """(width, height) scaled to `new_height`, keeping the aspect ratio (the seed's bug kept the width).

    Raises:
        ImageError: zero-size input, or a result outside [MIN_SIDE, MAX_SIDE] / above MAX_PIXELS.
    """
    if width < 1 or height < 1:
        raise ImageError(f"image has zero size ({width}x{height})")
    if new_height < MIN_SIDE or new_height > MAX_SIDE:
        raise ImageError(f"height {new_height} is outside [{MIN_SIDE}, {MAX_SIDE}]")
    new_width = max(1, round(width * new_height / height))
    if new_width < MIN_SIDE or new_width > MAX_SIDE or new_width * new_height > MAX_PIXELS:
        raise ImageError(f"a {width}x{height} image at height {new_height} would be {new_width} wide; "
                         f"sides must be in [{MIN_SIDE}, {MAX_SIDE}] and at most {MAX_PIXELS:,} pixels")
    return new_width, new_height


def check_image_size(image: np.ndarray, what: str = "image") -> None:
    """Reject an image the VGG backbone cannot take: (H, W, 3) with both sides >= MIN_SIDE.

    Raises:
        ImageError: wrong rank/channels or a side below VGG_MIN_SIDE (the served graph answers
            INVALID_ARGUMENT for those too).
    """
    shape = np.shape(image)
    if len(shape) != 3 or shape[-1] != 3:
        raise ImageError(f"{what} image must be (H, W, 3) RGB, got shape {shape}")
    if min(shape[:2]) < VGG_MIN_SIDE:
        raise ImageError(f"{what} image is {shape[1]}x{shape[0]} px; the style model needs at least "
                         f"{VGG_MIN_SIDE} px on each side")


def load_image(path, height: int | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """An image file as RGB float32 (H, W, 3) in [0, 255].

    Args:
        height: resize to this height, keeping the aspect ratio.
        size: resize to exactly (width, height) instead (the seed does this to the style image).

    Raises:
        ImageError: missing, unreadable or non-image file, zero size, or an absurd target size.
    """
    def sized(width: int, file_height: int) -> tuple[int, int]:
        if size is not None:
            return target_size(size[0], size[1], size[1])
        return target_size(width, file_height, file_height if height is None else height)

    return load_rgb(path, sized)


def side_by_side(images: list[np.ndarray], height: int | None = None, gap: int = 8) -> np.ndarray:
    """Images (H_i, W_i, 3) resized to one height and joined left to right with white gaps (the
    seed's content | style | result figure). Returns (H, sum W + gaps, 3) float32."""
    from PIL import Image

    height = height or images[0].shape[0]
    tiles = []
    for image in images:
        h, w = image.shape[:2]
        tile = Image.fromarray(to_uint8(image)).resize((max(1, round(w * height / h)), height),
                                                       Image.Resampling.LANCZOS)
        tiles.append(np.asarray(tile, dtype=np.float32))
        tiles.append(np.full((height, gap, 3), 255.0, np.float32))
    return np.concatenate(tiles[:-1], axis=1)


# --------------------------------------------------------------------------------------------------
# Over gRPC.
# --------------------------------------------------------------------------------------------------
class RemoteStyle(PinnedJob):
    """The served loss: `targets` once per job, then `step` as the `(loss, grad)` function.

    The job is pinned to ONE model version (genserve.clients.pinned), read from the server's metadata
    on the first call and sent with `targets` and every `step`: a version loaded mid-job (perhaps with
    another backbone) never sees this job's targets.

    Args:
        client: a genserve.clients.Client.
        model: the served model name.
        version: a fixed version; None = the latest when the job starts.
    """

    def __init__(self, client, model: str = C.STYLE.name, version: int | None = None):
        super().__init__(client, model, version)
        self.targets: dict[str, np.ndarray] | None = None
        self.last_parts: dict[str, float] = {}

    def layers(self) -> tuple[str, ...]:
        """The style layers, from the `targets` signature's gram_<layer> outputs in the model metadata."""
        signatures = self.pinned().signatures
        if C.STYLE_TARGETS.name not in signatures:
            raise ValueError(f"model {self.model!r} has no {C.STYLE_TARGETS.name!r} signature; "
                             "is it a style export?")
        return C.style_layers_from_keys(signatures[C.STYLE_TARGETS.name].outputs)

    def compute_targets(self, content: np.ndarray, style: np.ndarray) -> dict[str, np.ndarray]:
        """Content features and Gram matrices of (H, W, 3) images; kept for the following `step` calls.

        Raises:
            ImageError: an image smaller than MIN_SIDE on a side (checked before sending).
        """
        for what, image in (("content", content), ("style", style)):
            check_image_size(image, what)
        out = self.pinned().predict({"content_image": content[None].astype(np.float32),
                                     "style_image": style[None].astype(np.float32)},
                                    signature=C.STYLE_TARGETS.name)
        self.targets = {k: v for k, v in out.items()
                        if k == C.STYLE_CONTENT_FEATURES or k.startswith(C.STYLE_GRAM_PREFIX)}
        return self.targets

    def __call__(self, image: np.ndarray) -> tuple[float, np.ndarray]:
        """One evaluation: (loss, gradient (H, W, 3)) of an (H, W, 3) image."""
        if self.targets is None:
            raise RuntimeError("call compute_targets(content, style) first")
        out = self.pinned().predict({"image": image[None].astype(np.float32), **self.targets},
                                    signature=C.STYLE_STEP.name)
        self.last_parts = {k: float(out[k][0]) for k in ("content_loss", "style_loss", "tv_loss")}
        return float(out["loss"][0]), out["gradient"][0]
