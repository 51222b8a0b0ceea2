"""The REST JSON number format (json_values): the C writer (_json_floats.c) and the bulk Python
encoder against a per-value reference of TF Serving's WriteDecimal (tensorflow_serving/util/json_tensor.cc)
and against the C library's own printf/strtof (TensorFlow's FloatToBuffer), on hand-picked and random
values."""

import ctypes
import ctypes.util
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


WRITERS = [json_values.float_texts, json_values.bulk_float_texts]  # the first is C where it is built


@pytest.mark.parametrize("value, text", [
    (0.1, "0.1"), (1e-5, "1e-05"), (3.0, "3.0"), (-0.0, "-0.0"), (0.0, "0.0"), (100000.0, "100000.0"),
    (1e6, "1e+06"), (1234567.0, "1234567.0"), (16777216.0, "16777216.0"), (1 / 3, "0.333333343"),
    (0.123456791, "0.123456791"), (1e10, "1e+10"), (2.5e-7, "2.5e-07"), (1e-45, "1.4013e-45"),
    (3.4028235e38, "3.40282347e+38"), (float("nan"), "NaN"), (float("inf"), "Infinity"),
    (float("-inf"), "-Infinity"), (8388607.5, "8388607.5"),
])
@pytest.mark.parametrize("writer", WRITERS)
def test_float32_texts_are_tf_servings(value, text, writer):
    many = np.full(40, value, np.float32)  # > 16 values: the bulk path with its arithmetic filter
    assert writer(many, 9) == [text] * 40
    assert writer(many[:1], 9) == [text]  # the small path tries %g on every value
    negated = text if text == "NaN" else text[1:] if text.startswith("-") else "-" + text
    assert writer(-many[:3], 9) == [negated] * 3


def test_float64_texts_keep_17_digits():
    values = np.array([0.1, 1 / 3, 2.0 ** 53, 123456789.5, 5e-324, 1e300, -2.5] * 3)
    assert json_values.float_texts(values, 17) == [write_decimal(v, 17, np.float64) for v in values.tolist()]
    assert json_values.float_texts(values, 17)[:4] == ["0.1", "0.33333333333333331", "9007199254740992.0",
                                                       "123456789.5"]


@pytest.mark.parametrize("writer", WRITERS)
def test_bulk_encoder_matches_the_per_value_reference(writer):
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
    assert writer(f32, 9) == expected
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


def test_the_c_writer_is_built():
    """setup.py builds it where a C compiler is found, as on every machine CI and the dev install run
    on; without this test a failed build would pass unseen, on the slower Python path."""
    assert json_values.native_float32_texts is not None, "genserve/serving/_json_floats.c was not built"


def float_to_buffer(libc, value: float) -> str:
    """TensorFlow's FloatToBuffer with the C library's own snprintf and strtof, then WriteDecimal's
    rules: `%.6g` if strtof reads it back as the same float, else `%.9g`; '.0'; NaN/Infinity bare."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    buf = ctypes.create_string_buffer(32)
    libc.snprintf(buf, 32, b"%.6g", ctypes.c_double(value))
    if libc.strtof(buf, None) != np.float32(value):
        libc.snprintf(buf, 32, b"%.9g", ctypes.c_double(value))
    text = buf.value.decode()
    return text if "." in text or "e" in text else text + ".0"


@pytest.mark.skipif(json_values.native_float32_texts is None, reason="the C writer is not built")
def test_c_writer_matches_the_c_library_on_every_kind_of_float32():
    """The exact integer arithmetic of the fast range (and the ties, the 2^n significands and the edges
    of that range, which take other routes) against glibc's correctly rounded printf and strtof."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.strtof.restype = ctypes.c_float
    libc.strtof.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    rng = np.random.default_rng(7)
    in_range = rng.integers(0x30000000, 0x46200000, 30000, dtype=np.uint32)  # ~1e-9 .. ~1e4
    any_bits = rng.integers(0, 2 ** 32, 10000, dtype=np.uint64).astype(np.uint32)
    powers_of_two = (np.arange(1, 255, dtype=np.uint32) << 23)
    ties = np.float32(2.0 ** -10).view(np.uint32)[None]  # 0.0009765625: a %g tie, to even
    edges = [np.float32(x).view(np.uint32) for x in (1.1e-9, 1e4, 1e-4, 1e-5, 1.0, 10.0, 9.999995, 0.1)]
    near = np.concatenate([(np.arange(-40, 40) + int(p)).astype(np.uint32) for p in edges])
    bits = np.concatenate([in_range, any_bits, powers_of_two, ties, near])
    bits = np.concatenate([bits, bits | np.uint32(1 << 31)])  # and every one negative
    values = bits.view(np.float32)
    got = json_values.native_float32_texts(values)
    expected = [float_to_buffer(libc, v) for v in values.tolist()]
    wrong = [(hex(b), g, e) for b, g, e in zip(bits.tolist(), got, expected) if g != e]
    assert not wrong, wrong[:10]
    assert json_values.native_float32_texts(values[::3].copy()) == expected[::3]


@pytest.mark.skipif(json_values.native_float32_texts is None, reason="the C writer is not built")
def test_c_writer_takes_only_float32_and_any_layout_through_float_texts():
    with pytest.raises(TypeError, match="float32"):
        json_values.native_float32_texts(np.zeros(3, np.float64))
    with pytest.raises(ValueError, match="contiguous"):
        json_values.native_float32_texts(np.zeros((4, 4), np.float32)[:, 1])  # not contiguous
    y = (np.arange(12, dtype=np.float32).reshape(3, 4) / 7).T
    assert json_values.tensor_json(y) == json_values.template(y.shape, ",") % tuple(
        json_values.bulk_float_texts(y.reshape(-1), 9))
