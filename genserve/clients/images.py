"""Images for every client: load a picture file, tile a batch into one picture, encode PNG bytes, save.

One module so that every family (and the batch runners, and training's sample grids) reads and writes
pictures the same way. Two pixel conventions travel here:
- grey pictures in [0, 1] (VAE and GAN digits, (H, W) or (B, H, W[, 1]));
- RGB images as floats in [0, 255] (style, dream; (H, W, 3)).
Every file is written atomically through genserve.files (a temporary sibling, renamed), so a killed
command leaves the old picture or the new one, never half of one. No TensorFlow; Pillow is imported
on first use.

    python -c "import numpy as np; from genserve.clients import images; images.save_grey(np.eye(28), '/tmp/eye.png', scale=4)"
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import numpy as np

from genserve.files import atomic_path, atomic_write

Size = tuple[int, int]  # (width, height), Pillow's order


class ImageError(ValueError):
    """An input image cannot be used; the message says which file and why."""


# --------------------------------------------------------------------------------------------------
# Loading.
# --------------------------------------------------------------------------------------------------
def open_rgb(path):
    """An image file decoded to an RGB PIL image.

    Raises:
        ImageError: a directory, a missing file, or a file PIL cannot decode (decompression bombs too).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image file")
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"{path}: not a readable image ({e})") from None


def load_rgb(path, size: Size | Callable[[int, int], Size] | None = None) -> np.ndarray:
    """An image file as RGB float32 (H, W, 3) in [0, 255], resized (Lanczos) when asked.

    Args:
        size: (width, height) to resize to, or a function (width, height) of the file -> (width,
            height) that may raise ImageError for a size it refuses; None keeps the file's size.

    Raises:
        ImageError: missing, unreadable or non-image file, or a size `size` refuses.
    """
    from PIL import Image

    rgb = open_rgb(path)
    wanted = size(rgb.width, rgb.height) if callable(size) else (size or rgb.size)
    if tuple(wanted) != rgb.size:
        rgb = rgb.resize(tuple(wanted), Image.Resampling.LANCZOS)
    return np.asarray(rgb, dtype=np.float32)  # (H, W, 3)


# --------------------------------------------------------------------------------------------------
# Pixels.
# --------------------------------------------------------------------------------------------------
def to_uint8(image: np.ndarray) -> np.ndarray:
    """Floats in [0, 255] (an RGB image) -> uint8, rounded and clipped."""
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def grey_to_uint8(picture: np.ndarray, scale: int = 1) -> np.ndarray:
    """A grey picture in [0, 1] (H, W) -> uint8 (H*scale, W*scale), each pixel a scale x scale block."""
    pixels = to_uint8(np.asarray(picture, np.float32) * 255)  # (H, W)
    if scale > 1:
        pixels = np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)
    return pixels


def tile(images: np.ndarray, rows: int, cols: int | None = None) -> np.ndarray:
    """(rows*cols, H, W[, 1]) row-major -> one (rows*H, cols*W) picture; cols = rows by default."""
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[..., 0]  # (B, H, W)
    cols = rows if cols is None else cols
    if images.ndim != 3 or images.shape[0] != rows * cols:
        raise ValueError(f"expected {rows * cols} images of shape (H, W[, 1]), got {images.shape}")
    h, w = images.shape[1:]
    return images.reshape(rows, cols, h, w).transpose(0, 2, 1, 3).reshape(rows * h, cols * w)


# --------------------------------------------------------------------------------------------------
# Encoding and saving.
# --------------------------------------------------------------------------------------------------
def image_format(suffix: str) -> str:
    """Pillow's format name for a file suffix (".jpg" -> "JPEG"); PNG for anything unknown."""
    from PIL import Image

    return Image.registered_extensions().get(suffix.lower(), "PNG")


def encode(pixels: np.ndarray, suffix: str = ".png", compress_level: int | None = None) -> bytes:
    """A uint8 grey (H, W) or RGB (H, W, 3) array as the file bytes of `suffix`'s format.

    compress_level: PNG's zlib level 0-9 (Pillow's default when None; batch jobs use 1 for speed).
    """
    from PIL import Image

    options = {} if compress_level is None else {"compress_level": compress_level}
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8)).save(buffer, format=image_format(suffix), **options)
    return buffer.getvalue()


def png_bytes(picture: np.ndarray, scale: int = 1) -> bytes:
    """A grey picture in [0, 1] as 8-bit PNG bytes, optionally enlarged `scale` times."""
    return encode(grey_to_uint8(picture, scale))


def encode_rgb(image: np.ndarray, suffix: str = ".png") -> bytes:
    """An (H, W, 3) float image in [0, 255] as the file bytes of `suffix`'s format (clipped, rounded)."""
    return encode(to_uint8(image), suffix)


def save_grey(picture: np.ndarray, path, scale: int = 1) -> Path:
    """Write a grey picture in [0, 1] as a PNG atomically (parent folders created). Returns the path."""
    return atomic_write(path, png_bytes(picture, scale))


def save_rgb(image: np.ndarray, path) -> Path:
    """Write an (H, W, 3) float image in [0, 255] atomically, in the format its suffix names (PNG
    when none or unknown). Returns the path."""
    path = Path(path)
    return atomic_write(path, encode_rgb(image, path.suffix or ".png"))


def save_figure(fig, path, **savefig_kwargs) -> Path:
    """Write a matplotlib figure atomically as PNG, then close it. Returns the path."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", **savefig_kwargs)
    finally:
        plt.close(fig)
    return Path(path)
