"""The REST JSON number format (json_values): the bulk encoder against a per-value reference of TF
Serving's WriteDecimal (tensorflow_serving/util/json_tensor.cc), on hand-picked and random values."""

import json

import numpy as np
import pytest

from genserve.serving import json_tensor, json_values


def write_decimal(value: float, digits: int, dtype) -> str:
    """WriteDecimal, one value at a time: absl::StrCat (`%g`) if it reads back as the same value of
    `dtype`, else `%.{digits}g`; '.0' when the text has neither '.' nor 'e'; NaN/Infinity bare."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    text = "%g" % value
    with np.errstate(over="ignore"):
        if dtype(float(text)) != dtype(value):
            text = f"%.{digits}g" % value
    return text if "." in text or "e" in text else text + ".0"


@pytest.mark.parametrize("value, text", [
    (0.1, "0.1"), (1e-5, "1e-05"), (3.0, "3.0"), (-0.0, "-0.0"), (0.0, "0.0"), (100000.0, "100000.0"),
    (1e6, "1e+06"), (1234567.0, "1234567.0"), (16777216.0, "16777216.0"), (1 / 3, "0.333333343"),
    (0.123456791, "0.123456791"), (1e10, "1e+10"), (2.5e-7, "2.5e-07"), (1e-45, "1.4013e-45"),
    (3.4028235e38, "3.40282347e+38"), (float("nan"), "NaN"), (float("inf"), "Infinity"),
    (float("-inf"), "-Infinity"), (8388607.5, "8388607.5"),
])
def test_float32_texts_are_tf_servings(value, text):
    many = np.full(40, value, np.float32)  # > 16 values: the bulk path with its arithmetic filter
    assert json_values.float_texts(many, 9) == [text] * 40
    assert json_values.float_texts(many[:1], 9) == [text]  # the small path tries %g on every value


def test_float64_texts_keep_17_digits():
    values = np.array([0.1, 1 / 3, 2.0 ** 53, 123456789.5, 5e-324, 1e300, -2.5] * 3)
    assert json_values.float_texts(values, 17) == [write_decimal(v, 17, np.float64) for v in values.tolist()]
    assert json_values.float_texts(values, 17)[:4] == ["0.1", "0.33333333333333331", "9007199254740992.0",
                                                       "123456789.5"]


def test_bulk_encoder_matches_the_per_value_reference():
    rng = np.random.default_rng(0)
    # Every kind of float32: random bit patterns (subnormals, NaNs, huge), short decimals (those %g
    # writes), and the neighbours of each power of ten (where the exponent arithmetic is at its edge).
    short = [rng.integers(10 ** (d - 1), 10 ** d, 3000) * 10.0 ** rng.integers(-44, 33, 3000)
             for d in (1, 4, 6, 7)]
    powers = [np.float32(10.0 ** k).view(np.uint32) for k in range(-44, 39)]
    near = [(np.arange(-64, 64) + int(p)).astype(np.uint32).view(np.float32) for p in powers]
    with np.errstate(over="ignore"):
        f32 = np.concatenate([rng.integers(0, 2 ** 32, 20000, dtype=np.uint64).astype(np.uint32).view(np.float32),
                              *[s.astype(np.float32) for s in short], *near])
    expected = [write_decimal(v, 9, np.float32) for v in f32.tolist()]
    assert json_values.float_texts(f32, 9) == expected
    f64 = np.concatenate([rng.integers(0, 2 ** 64, 5000, dtype=np.uint64).view(np.float64),
                          np.round(rng.standard_normal(5000), 4) * 10.0 ** rng.integers(-300, 300, 5000)])
    assert json_values.float_texts(f64, 17) == [write_decimal(v, 17, np.float64) for v in f64.tolist()]


def test_nesting_and_row_objects():
    y = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
    ids = np.array([[1], [2]], np.int64)
    flags = np.array([True, False])
    assert json_tensor.outputs_json({"y": y}, json_tensor.ROW) == \
        '{"predictions": [[0.0,0.25,0.5], [0.75,1.0,1.25]]}'
    assert json_tensor.outputs_json({"y": y}, json_tensor.COLUMNAR) == '{"outputs": [[0.0,0.25,0.5],[0.75,1.0,1.25]]}'
    text = json_tensor.outputs_json({"y": y, "ids": ids, "ok%s": flags}, json_tensor.ROW)
    assert text == ('{"predictions": [{"ids": [1], "ok%s": true, "y": [0.0,0.25,0.5]}, '
                    '{"ids": [2], "ok%s": false, "y": [0.75,1.0,1.25]}]}')
    empty = {"y": np.zeros((2, 0, 3), np.float32), "z": np.zeros((2,), np.float32)}
    assert json.loads(json_tensor.outputs_json(empty, json_tensor.ROW)) == \
        {"predictions": [{"y": [], "z": 0.0}, {"y": [], "z": 0.0}]}
    assert json_tensor.outputs_json({"y": np.zeros((0, 3), np.float32)}, json_tensor.ROW) == '{"predictions": []}'
    assert json_tensor.outputs_json({"s": np.array(2.5, np.float32)}, json_tensor.COLUMNAR) == '{"outputs": 2.5}'
    strings = {"a_bytes": np.array([b"\xff", b"ok"], object), "s": np.array([b"h\xc3\xa9", b"\xfe"], object)}
    assert json_tensor.outputs_json(strings, json_tensor.ROW) == (
        '{"predictions": [{"a_bytes": {"b64": "/w=="}, "s": "h\\u00e9"}, '
        '{"a_bytes": {"b64": "b2s="}, "s": {"b64": "/g=="}}]}')
