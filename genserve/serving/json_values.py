"""Numpy tensors as TF Serving's REST JSON text, fast: the value texts (WriteDecimal's number format)
and the nesting of a tensor's brackets. json_tensor.outputs_json builds the response bodies with them.

    python -c "import numpy as np; from genserve.serving.json_values import tensor_json
    print(tensor_json(np.array([[0.1, 1e-5, 3.0]], 'f4')))"     # [[0.1,1e-05,3.0]]

Rules (tensorflow_serving/util/json_tensor.cc, WriteDecimal and MakeJsonFromTensors): a float is written
as absl::StrCat writes it (printf `%g`) when that reads back to the same value of its type, else with
`%.9g` (float) / `%.17g` (double); whole numbers not in exponent form get '.0'; NaN, Infinity and
-Infinity are written bare. Strings are JSON strings, or `{"b64": ...}` for outputs named *_bytes and for
bytes that are not UTF-8 (TF Serving would write invalid JSON there).

Speed: a whole tensor is written with one `%` operation on a template of its brackets (cached per
shape). float32 values, the outputs of every genserve model, are written by the C extension
genserve/serving/_json_floats.c where setup.py could build it (50 us for 784 floats against 390 us for
`bulk_float_texts`, the same rule in Python, which it falls back to); `%.17g` doubles always take the
Python path. A per-value Python loop cost ~10 us per float. No TensorFlow import.
"""

from __future__ import annotations

import base64
import functools
import json
import math

import numpy as np

from genserve.serving.errors import ServingError

try:  # built by setup.py where a C compiler was found (optional: pip installs genserve without it)
    from genserve.serving._json_floats import float32_texts as native_float32_texts
except ImportError:
    native_float32_texts = None

_CACHED_TEMPLATE_VALUES = 1 << 16  # larger tensors get a template built for the call


def _build_template(shape: tuple, top_sep: str) -> str:
    text = "%s"
    for size in reversed(shape[1:]):
        text = "[" + ",".join([text] * size) + "]"
    return "[" + top_sep.join([text] * shape[0]) + "]" if shape else text


_cached_template = functools.lru_cache(maxsize=64)(_build_template)


def template(shape: tuple, top_sep: str) -> str:
    """The JSON text of a tensor of `shape` with a `%s` for each value (items along dim 0 joined by
    `top_sep`)."""
    small = math.prod(shape) <= _CACHED_TEMPLATE_VALUES
    return (_cached_template if small else _build_template)(shape, top_sep)


def float_texts(flat: np.ndarray, digits: int) -> list[str]:
    """The text of each value of a 1-D float array, as TF Serving's WriteDecimal writes it (`digits`: 9
    for float32, 17 for float64): in C for float32 where the extension is built, else bulk_float_texts."""
    if digits == 9 and flat.dtype == np.float32 and native_float32_texts is not None:
        return native_float32_texts(np.ascontiguousarray(flat))
    return bulk_float_texts(flat, digits)


def bulk_float_texts(flat: np.ndarray, digits: int) -> list[str]:
    """WriteDecimal for each value: `%g` (absl::StrCat) when it reads back as the same value of the
    array's type, else `%.{digits}g` (max_digits10); '.0' on whole numbers not in exponent form; NaN,
    Infinity, -Infinity bare.

    All numbers are written with `%.{digits}g` in one operation; `%g` is tried (written, read back,
    compared) only where it can round-trip: the six-digit decimal nearest a normal value v lies within
    half a binary ulp of v (<= v * 2**-p, p = 24 or 53 bits) only if v * 10**(5 - floor(log10 v)) is
    within 10**6 * 2**-p (0.0596 for float32) of a whole number; 0.07 and 1e-6 leave a margin for the
    float64 arithmetic, and zeros, subnormals, non-finite numbers and exponent edge cases are always tried.
    """
    numbers = flat.tolist()  # Python floats: the exact numbers, as C's printf sees a float promoted
    n = len(numbers)
    out = ((f"%.{digits}g," * n)[:-1] % tuple(numbers)).split(",") if n else []
    tried = np.arange(n)
    if n > 16:  # below that, the array arithmetic costs more than trying every value
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            a = np.abs(flat.astype(np.float64))
            r = a * 10.0 ** (5 - np.floor(np.log10(a)))  # in [1e5, 1e6) up to rounding
            sure_long = ((a >= max(np.finfo(flat.dtype).tiny, 1e-290)) & (a <= 1e290) & (r > 100000.001)
                         & (r < 999999.999) & (np.abs(r - np.rint(r)) > (0.07 if digits == 9 else 1e-6)))
        tried = np.flatnonzero(~sure_long)
    if tried.size:
        short = (("%g," * tried.size)[:-1] % tuple(flat[tried].tolist())).split(",")
        with np.errstate(over="ignore"):  # a %g text beyond float32 range reads back as inf: no match
            same = np.array(short, dtype=np.float64).astype(flat.dtype) == flat[tried]
        for i, s, ok in zip(tried.tolist(), short, same.tolist()):
            if ok:
                out[i] = s
    # Whole numbers and non-finite numbers are the only ones whose text may lack '.' and 'e'.
    with np.errstate(invalid="ignore"):
        check = np.flatnonzero(~np.isfinite(flat) | (flat == np.trunc(flat))).tolist()
    for i in check:
        s = out[i]
        if s[-1] == "n":  # nan
            out[i] = "NaN"
        elif s[-1] == "f":  # inf, -inf
            out[i] = "-Infinity" if s[0] == "-" else "Infinity"
        elif "e" not in s and "." not in s:
            out[i] = s + ".0"
    return out


def _string_text(value, as_b64: bool) -> str:
    raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
    try:
        text = None if as_b64 else raw.decode("utf-8")
    except UnicodeDecodeError:  # TF Serving would write invalid JSON; genserve writes base64
        text = None
    if text is not None:
        return json.dumps(text)
    return '{"b64": %s}' % json.dumps(base64.b64encode(raw).decode("ascii"))


def check_dtype(dtype: np.dtype) -> None:
    """Raise what `values` raises for a dtype it cannot write."""
    if dtype not in (np.float32, np.float64, np.bool_) and dtype.kind not in "iuOSU":
        raise ServingError("INVALID_ARGUMENT", f"Failed to write JSON value for tensor type: {dtype.name}")


def values(array: np.ndarray, as_b64: bool) -> list:
    """The flattened values as what `%s` writes as their JSON text."""
    check_dtype(array.dtype)
    flat = array.reshape(-1)
    if array.dtype == np.float32:
        return float_texts(flat, 9)
    if array.dtype == np.float64:
        return float_texts(flat, 17)
    if array.dtype == np.bool_:
        return ["true" if v else "false" for v in flat.tolist()]
    if array.dtype.kind in "iu":
        return flat.tolist()  # Python ints: `%s` writes them as str() does
    return [_string_text(v, as_b64) for v in flat.tolist()]  # kind O, S or U (check_dtype)


def tensor_json(array: np.ndarray, as_b64: bool = False, top_sep: str = ",") -> str:
    """The JSON text of a whole tensor (items along dim 0 joined by `top_sep`)."""
    return template(array.shape, top_sep) % tuple(values(array, as_b64))
