"""Offline VGG16 weights: the hand-written ONNX reader on hand-built messages (always runs), and the
converted ImageNet weights in the cache (marked `weights`; skipped when the cache lacks them, never
downloads).

    .venv/bin/python -m pytest tests/test_style_weights.py -q
    python -m genserve.data.vgg     # once, online: fills the cache so the marked tests run
"""

from __future__ import annotations

import numpy as np
import pytest

from genserve.data import DataError
from genserve.data import vgg


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:  # length-delimited
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _tensor(name: str, array: np.ndarray, raw: bool = True) -> bytes:
    dims = b"".join(_varint(d) for d in array.shape)
    body = _field(1, dims) + _varint(2 << 3) + _varint(1) + _field(8, name.encode())  # dims, FLOAT, name
    data = array.astype("<f4").tobytes()
    return body + (_field(9, data) if raw else _field(4, data))


def _model(tensors: list[bytes]) -> bytes:
    graph = _field(2, b"g") + b"".join(_field(5, t) for t in tensors)
    # ir_version (varint field 1) and producer_name (field 2) before the graph, as real files have.
    return _varint(1 << 3) + _varint(8) + _field(2, b"test") + _field(7, graph)


def test_onnx_reader_on_hand_built_model():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    b = np.array([1.5, -2.0], np.float32)
    data = _model([_tensor("a", a), _tensor("b", b, raw=False), _tensor("skip", np.zeros(3))])
    found = vgg.onnx_initializers(data, {"a", "b"})
    assert set(found) == {"a", "b"}
    np.testing.assert_array_equal(found["a"], a)
    np.testing.assert_array_equal(found["b"], b)
    with pytest.raises(DataError, match="lacks initializers"):
        vgg.onnx_initializers(data, {"a", "missing"})
    with pytest.raises(DataError, match="truncated"):
        vgg.onnx_initializers(data[:-5], {"a"})


def test_convert_transposes_oihw_to_hwio(monkeypatch):
    # Two tiny layers stand in for VGG16's 13 (same names and tensor naming, few channels).
    monkeypatch.setattr(vgg, "VGG16_CONV_LAYERS", (("block1_conv1", 3, 4), ("block1_conv2", 4, 2)))
    rng = np.random.default_rng(0)
    tensors, expected = [], {}
    for layer, c_in, c_out in vgg.VGG16_CONV_LAYERS:
        kernel = rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32)  # OIHW
        bias = rng.standard_normal(c_out).astype(np.float32)
        tensors += [_tensor(f"functional_1/{layer}_1/convolution/ReadVariableOp:0", kernel),
                    _tensor(f"functional_1/{layer}_1/Squeeze:0", bias.reshape(1, c_out))]
        expected[layer] = (kernel, bias)
    weights = vgg.convert_onnx_vgg16(_model(tensors))
    for layer, c_in, c_out in vgg.VGG16_CONV_LAYERS:
        kernel, bias = weights[f"{layer}/kernel"], weights[f"{layer}/bias"]
        assert kernel.shape == (3, 3, c_in, c_out) and bias.shape == (c_out,)
        for o, i, y, x in [(0, 0, 0, 0), (1, 2, 2, 1), (c_out - 1, c_in - 1, 1, 2)]:
            assert kernel[y, x, i, o] == expected[layer][0][o, i, y, x]
        np.testing.assert_array_equal(bias, expected[layer][1])
    with pytest.raises(DataError, match="lacks initializers"):
        vgg.convert_onnx_vgg16(_model(tensors[:2]))
    wrong = [_tensor("functional_1/block1_conv1_1/convolution/ReadVariableOp:0", np.zeros((4, 3, 5, 5))),
             *tensors[1:]]
    with pytest.raises(DataError, match="expected"):
        vgg.convert_onnx_vgg16(_model(wrong))


needs_weights = pytest.mark.skipif(not vgg.vgg16_weights_available(),
                                   reason="VGG16 weights not in the cache; run `python -m genserve.data.vgg`")


@pytest.mark.weights
@needs_weights
def test_cached_vgg16_weights():
    weights = vgg.load_vgg16_weights(download=False)
    assert len(weights) == 26
    for layer, c_in, c_out in vgg.VGG16_CONV_LAYERS:
        assert weights[f"{layer}/kernel"].shape == (3, 3, c_in, c_out)
        assert weights[f"{layer}/bias"].shape == (c_out,)
        assert weights[f"{layer}/kernel"].dtype == np.float32
    assert sum(w.size for w in weights.values()) == vgg.VGG16_NOTOP_PARAMS == 14_714_688
    assert vgg.weights_checksum(weights) == vgg.VGG16_NOTOP_SHA256
    # Caffe VGG16 conv1_1 biases as published with the original model (and in Keras's h5 file).
    np.testing.assert_allclose(weights["block1_conv1/bias"][:3], [0.73429835, 0.09340367, 0.06775674],
                               rtol=1e-6)


@pytest.mark.weights
@needs_weights
def test_vgg16_offline_backbone_loads():
    pytest.importorskip("tensorflow")
    from genserve.training.style import build_backbone

    model = build_backbone("vgg16-offline")
    assert model.count_params() == vgg.VGG16_NOTOP_PARAMS
    kernel, bias = model.get_layer("block5_conv2").get_weights()
    weights = vgg.load_vgg16_weights(download=False)
    np.testing.assert_array_equal(kernel, weights["block5_conv2/kernel"])
    np.testing.assert_array_equal(bias, weights["block5_conv2/bias"])
