"""TF Serving's REST JSON tensor format: request JSON -> numpy inputs, outputs -> response JSON.

    python -c "import numpy as np; from genserve.serving import json_tensor as j
    print(j.outputs_json({'y': np.array([[1.5]], 'f4')}, j.ROW))"

The rules of tensorflow_serving/util/json_tensor.cc (FillPredictRequestFromJson, MakeJsonFromTensors),
with its error texts where genserve can say the same thing:
- a body is one UTF-8 JSON object with `"signature_name"` (optional) and exactly one of `"instances"`
  (row format: one item per batch row, a value/list for a single-input signature or an object keyed by
  input name) or `"inputs"` (columnar: a value/list for a single input, else an object keyed by input
  name; keys the signature does not take are ignored, as TF Serving does);
- NaN, Infinity and -Infinity are accepted (rapidjson's kParseNanAndInfFlag); float inputs take any
  number, integer inputs whole numbers that fit the dtype, bool true/false, string inputs a JSON
  string (its UTF-8 bytes) or `{"b64": "<base64>"}`;
- answers are `{"predictions": [...]}` (row format: one item per batch row, the value for one output,
  else an object keyed by output name) or `{"outputs": ...}` (columnar: likewise, whole tensors);
- values are written as TF Serving writes them (serving/json_values.py: `%g`, else `%.9g` / `%.17g`
  for double, `.0` on whole numbers, NaN / Infinity / -Infinity bare; string outputs whose name ends
  in `_bytes` as `{"b64": ...}`, others as JSON strings).
No TensorFlow import; errors are `ServingError`s (INVALID_ARGUMENT; UNIMPLEMENTED for a dtype JSON
cannot carry).
"""

from __future__ import annotations

import base64
import binascii
import json
import math

import numpy as np

from genserve.wire.codec import (
    DT_BOOL, DT_DOUBLE, DT_FLOAT, DT_INT8, DT_INT16, DT_INT32, DT_INT64, DT_STRING, DT_UINT8, DT_UINT32,
    DT_UINT64, NUMERIC_DTYPES, dtype_name,
)
from genserve.serving.errors import ServingError
from genserve.serving import json_values

ROW, COLUMNAR = "row", "columnar"  # JsonPredictRequestFormat::kRow / kColumnar
B64_KEY, BYTES_SUFFIX = "b64", "_bytes"  # string outputs named *_bytes are written as {"b64": ...}
MAX_DEBUG_CHARS = 256  # kMaxJsonDebugStringBytes
MAX_RANK = 32  # numpy holds at most 64 dimensions; a row-format instance gains one when stacked

_INT_RANGES = {DT_INT8: (-2**7, 2**7 - 1), DT_INT16: (-2**15, 2**15 - 1), DT_INT32: (-2**31, 2**31 - 1),
               DT_UINT8: (0, 255), DT_INT64: (-2**63, 2**63 - 1), DT_UINT32: (0, 2**32 - 1), DT_UINT64: (0, 2**64 - 1)}
_TF_NAMES = {DT_FLOAT: "float", DT_DOUBLE: "double", 19: "half"}  # DataTypeString differs from numpy's name


def _invalid(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)


def tf_type_name(dtype: int) -> str:
    """TF's DataTypeString ("float", "int32", "string", ...)."""
    return _TF_NAMES.get(dtype) or dtype_name(dtype)


def debug_string(value) -> str:
    """A JSON value as compact JSON, cut after MAX_DEBUG_CHARS (for error messages)."""
    out = ""
    for chunk in json.JSONEncoder(separators=(",", ":")).iterencode(value):  # lazy: stops early
        out += chunk
        if len(out) >= MAX_DEBUG_CHARS:
            return out[:MAX_DEBUG_CHARS]
    return out


def _json_type(value) -> str:
    if value is None:
        return "Null"
    if value is True or value is False:
        return str(value)
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    return "String" if isinstance(value, str) else "Number"


def _type_error(value, dtype: int) -> ServingError:
    return _invalid(f"JSON Value: {debug_string(value)} Type: {_json_type(value)} is not of expected "
                    f"type: {tf_type_name(dtype)}")


def is_b64(value) -> bool:
    """{"b64": "<string>"} and nothing else."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(B64_KEY), str)


def _is_object(value) -> bool:
    return isinstance(value, dict) and not is_b64(value)


def parse_body(body: bytes) -> dict:
    """The request body as a JSON object.

    Raises:
        ServingError: INVALID_ARGUMENT for an empty body, malformed JSON or a non-object.
    """
    if not body:
        raise _invalid("JSON Parse error: The document is empty")
    try:  # rapidjson reads UTF-8 only; json.loads(bytes) would also take UTF-16 and UTF-32
        doc = json.loads(body.decode("utf-8"))
    except json.JSONDecodeError as e:
        raise _invalid(f"JSON Parse error: {e.msg} at offset: {e.pos}") from None
    except UnicodeDecodeError as e:
        raise _invalid(f"JSON Parse error: Invalid encoding in string (not UTF-8) at offset: {e.start}") from None
    except ValueError as e:
        raise _invalid(f"JSON Parse error: {e}") from None
    except RecursionError:
        raise _invalid("JSON Parse error: the document nests too deeply") from None
    if not isinstance(doc, dict):
        raise _invalid(f"JSON Value: {debug_string(doc)} Is not object")
    return doc


def signature_name(doc: dict) -> str:
    value = doc.get("signature_name", "")
    if not isinstance(value, str):
        raise _invalid(f"JSON Value: {debug_string(doc)} not formatted correctly. 'signature_name' key "
                       "must be a string value.")
    return value


# -- JSON -> numpy ----------------------------------------------------------------------------------
def _dense_shape(value) -> list[int]:
    """GetDenseTensorShape: the sizes along the first element at each level."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _scalar(value, dtype: int):
    """One leaf value converted for `dtype` (AddValueToTensor)."""
    kind = type(value)
    if dtype == DT_STRING:
        if kind is str:
            return value.encode("utf-8")
        if kind is dict:
            if not is_b64(value):
                raise _invalid(f"JSON Value: {debug_string(value)} not formatted correctly for base64 data")
            text = value[B64_KEY]
            try:  # absl::Base64Unescape takes padded and unpadded input
                return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
            except (binascii.Error, ValueError):
                raise _invalid("Unable to base64 decode") from None
        raise _type_error(value, dtype)
    if dtype in (DT_FLOAT, DT_DOUBLE):
        if kind is float or kind is int:
            return value
        raise _type_error(value, dtype)
    if dtype == DT_BOOL:
        if kind is bool:
            return value
        raise _type_error(value, dtype)
    low, high = _INT_RANGES[dtype]
    if kind is int and low <= value <= high:
        return value
    raise _type_error(value, dtype)


def _flatten(value, level: int, shape: list[int], dtype: int, out: list) -> None:
    """FillTensorProto: append the leaves of `value` to `out`, checking it is dense with `shape`."""
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise _invalid(f"JSON Value: {debug_string(value)} found at incorrect level: {level + 1} in "
                           f"the JSON DOM. Expected at level: {rank}")
        out.append(_scalar(value, dtype))
        return
    if level >= rank:
        raise _invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise _invalid(f"Encountered list at unexpected size: {len(value)} at level: {level} "
                       f"expected size: {shape[level]}")
    if level == rank - 1:  # the innermost lists hold the values: check them in one pass
        if dtype in (DT_FLOAT, DT_DOUBLE) and all(type(v) is float or type(v) is int for v in value):
            out.extend(value)
            return
    for item in value:
        if level == rank - 1 and not isinstance(item, list):
            out.append(_scalar(item, dtype))
        else:  # deeper lists raise "unexpected level" there
            _flatten(item, level + 1, shape, dtype, out)


def to_array(value, dtype: int) -> np.ndarray:
    """One JSON value/list as an array of `dtype` (the signature input's DataType).

    Raises:
        ServingError: INVALID_ARGUMENT (ragged, wrong type), UNIMPLEMENTED (a dtype JSON cannot carry).
    """
    if dtype != DT_STRING and dtype not in (DT_FLOAT, DT_DOUBLE, DT_BOOL) and dtype not in _INT_RANGES:
        raise ServingError("UNIMPLEMENTED", f"Conversion of JSON Value: {debug_string(value)} to type: "
                                            f"{tf_type_name(dtype)}")
    shape = _dense_shape(value)
    if len(shape) > MAX_RANK:
        raise _invalid(f"JSON Value nests {len(shape)} lists deep; a tensor has at most {MAX_RANK} dimensions")
    flat: list = []
    _flatten(value, 0, shape, dtype, flat)
    if dtype == DT_STRING:
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    try:
        with np.errstate(over="ignore"):  # 1e300 as float32 is inf, as rapidjson's GetFloat() gives
            return np.array(flat, dtype=NUMERIC_DTYPES[dtype][0]).reshape(shape)
    except OverflowError:  # an integer beyond double range
        bad = next((v for v in flat if type(v) is int and abs(v) > 1e308), flat[0])
        raise _type_error(bad, dtype) from None


def _instances(items: list, input_dtypes: dict) -> dict:
    """FillTensorMapFromInstancesList: the row format, batched along a new dim 0."""
    names = sorted(input_dtypes)
    if not _is_object(items[0]) and len(names) > 1:
        raise _invalid("instances is a plain list, but expecting list of objects as multiple input tensors "
                       "required as per tensorinfo_map")
    named = _is_object(items[0])
    rows: dict[str, list] = {}
    shapes: dict[str, tuple] = {}

    def add(value, name: str):
        if name not in input_dtypes:
            raise _invalid(f"JSON object: does not have named input: {name}")
        array = to_array(value, input_dtypes[name])
        if name in shapes and shapes[name] != array.shape:
            first = shapes[name]
            if math.prod(first) != array.size:
                raise _invalid(f"Expecting tensor size: {math.prod(first)} but got: {array.size}")
            raise _invalid(f"Expecting shape [{','.join(map(str, first))}] but got: "
                           f"[{','.join(map(str, array.shape))}]")
        shapes[name] = array.shape
        rows.setdefault(name, []).append(array)

    for i, item in enumerate(items):
        if named:
            if not _is_object(item):
                raise _invalid(f"Expecting object but got list at item {i} of input list")
            for name, value in item.items():
                try:
                    add(value, name)
                except ServingError as e:
                    raise _invalid(f"Failed to process element: {i} key: {name} of 'instances' list. "
                                   f"Error: {e.code}: {e.message}") from None
            if set(item) != set(names):
                raise _invalid(f"Failed to process element: {i} of 'instances' list. JSON object: "
                               f"{debug_string(item)} keys must be equal to: {','.join(names)}")
        else:
            if _is_object(item):
                raise _invalid(f"Expecting value/list but got object at item {i} of input list")
            try:
                add(item, names[0])
            except ServingError as e:
                raise _invalid(f"Failed to process element: {i} of 'instances' list. "
                               f"Error: {e.code}: {e.message}") from None
    return {name: np.stack(arrays) for name, arrays in rows.items()}


def _inputs(value, input_dtypes: dict) -> dict:
    """FillTensorMapFromInputsMap: the columnar format."""
    names = sorted(input_dtypes)
    if not _is_object(value):
        if len(names) > 1:
            raise _invalid("inputs is a plain value/list, but expecting an object as multiple input tensors "
                           "required as per tensorinfo_map")
        return {names[0]: to_array(value, input_dtypes[names[0]])}
    arrays = {}
    for name in names:
        if name not in value:
            raise _invalid(f"Missing named input: {name} in 'inputs' object.")
        arrays[name] = to_array(value[name], input_dtypes[name])
    return arrays


def request_arrays(doc: dict, input_dtypes: dict) -> tuple[dict, str]:
    """The input arrays of a predict body and its format (ROW or COLUMNAR).

    Args:
        doc: the parsed body (see parse_body).
        input_dtypes: the signature's input key -> DataType.
    Raises:
        ServingError: INVALID_ARGUMENT with TF Serving's message.
    """
    if not input_dtypes:
        raise _invalid("Failed to get input map for signature")
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise _invalid(f"JSON Value: {debug_string(doc)} Not formatted correctly expecting only one of "
                       "'inputs' or 'instances' keys to exist ")
    if has_instances:
        items = doc["instances"]
        if not isinstance(items, list):
            raise _invalid(f"JSON Value: {debug_string(doc)} Expecting 'instances' to be an list/array")
        if not items:
            raise _invalid(f"JSON Value: {debug_string(doc)} No values in 'instances' array")
        return _instances(items, input_dtypes), ROW
    if has_inputs:
        return _inputs(doc["inputs"], input_dtypes), COLUMNAR
    raise _invalid("Missing 'inputs' or 'instances' key")


# -- numpy -> JSON ----------------------------------------------------------------------------------
def check_outputs(layouts: dict, fmt: str) -> None:
    """The errors outputs_json raises before it writes anything, in its order, from each output's
    (shape, numpy dtype) alone (name -> layout), so a caller holding only the TensorProtos decodes none.

    Raises:
        ServingError: INVALID_ARGUMENT for no outputs, (row format) an output without a batch
            dimension or with another batch size than the rest, or a dtype JSON cannot carry.
    """
    if not layouts:
        raise _invalid("Cannot convert empty tensor map to JSON")
    names = sorted(layouts)
    if fmt != COLUMNAR:
        batch = None
        for name in names:
            shape = layouts[name][0]
            if len(shape) == 0:
                raise _invalid(f"Tensor name: {name} has no shape information ")
            if batch is not None and shape[0] != batch:
                raise _invalid(f"Tensor name: {name} has inconsistent batch size: {shape[0]} "
                               f"expecting: {batch}")
            batch = shape[0]
    for name in names:
        json_values.check_dtype(layouts[name][1])


def outputs_json(outputs: dict, fmt: str) -> str:
    """MakeJsonFromTensors: the response body for `outputs` (name -> ndarray) in `fmt`.

    Raises:
        ServingError: see check_outputs.
    """
    check_outputs({name: (array.shape, array.dtype) for name, array in outputs.items()}, fmt)
    names = sorted(outputs)
    as_b64 = {n: n.endswith(BYTES_SUFFIX) and outputs[n].dtype.kind in "OSU" for n in names}
    if fmt == COLUMNAR:
        if len(names) == 1:
            return '{"outputs": ' + json_values.tensor_json(outputs[names[0]], as_b64[names[0]]) + "}"
        body = ", ".join(f"{json.dumps(n)}: {json_values.tensor_json(outputs[n], as_b64[n])}" for n in names)
        return '{"outputs": {' + body + "}}"
    batch = outputs[names[0]].shape[0]
    if len(names) == 1:
        return '{"predictions": ' + json_values.tensor_json(outputs[names[0]], as_b64[names[0]], ", ") + "}"
    # One row object per batch item: the template of each output's row goes into a row template.
    keys = [json.dumps(n).replace("%", "%%") for n in names]
    row = "{" + ", ".join(f"{k}: {json_values.template(outputs[n].shape[1:], ',')}"
                          for k, n in zip(keys, names)) + "}"
    per_row = [np.array(json_values.values(outputs[n], as_b64[n]), dtype=object).reshape(batch, -1) for n in names]
    cells = np.concatenate(per_row, axis=1).reshape(-1).tolist() if batch else []
    return '{"predictions": [' + ", ".join([row] * batch) % tuple(cells) + "]}"
