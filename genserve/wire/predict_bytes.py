"""PredictRequest and PredictResponse bytes written straight from numpy arrays, and read back into them,
without message objects.

The Predict hot path of both ends (a text `step` is ~1 ms on loopback, so every few microseconds of
Python show): the client sends `request_bytes(...)`, the server answers `response_bytes(...)`, and
each end reads what it receives with `Templates` when it has seen that layout before. The
bytes are what protobuf's serializer writes for the message genserve would otherwise build
(`clients.messages.predict_request`, `serving.execute.respond`): fields in number order, proto3
defaults left out, map entries as (key = 1, value = 2) messages, here in the order given (protobuf's
own map order is unspecified; https://protobuf.dev/programming-guides/encoding/#maps);
tests/test_wire_bytes.py compares them byte for byte (map entries sorted) and parses them with TF
Serving's own classes. The parts that do not change between calls (the
ModelSpec, the output_filter, a tensor's dtype and shape, a map key) are written once and kept.

Only numeric arrays are written here (as `tensor_content`, little-endian, C order: `codec`'s layout);
for anything else (strings, object arrays, big-endian dtypes, a big-endian host) the functions return
None and the caller builds the message as before.

    python -c "import numpy as np; from genserve.wire.predict_bytes import *; print(tensor_bytes(np.eye(2, dtype=np.float32)))"
"""

from __future__ import annotations

import math
import sys
from typing import Iterable, Mapping

import numpy as np

from genserve.wire.codec import NATIVE_DTYPES, NUMERIC_DTYPES, from_tensor_proto

_ONE_BYTE = [bytes((i,)) for i in range(128)]
_CACHE_LIMIT = 512  # entries kept below; beyond it new ones are written each time

# numpy dtype (native = little-endian) -> TensorProto field 1 (dtype) as bytes; none on a big-endian
# host, where every array takes the caller's message path.
_DTYPE_FIELD = {dt: b"\x08" + bytes((code,)) for code, (dt, _) in NUMERIC_DTYPES.items()} \
    if sys.byteorder == "little" else {}
# (map field tag, key, dtype, shape) -> a map entry's bytes up to the tensor's content: everything but
# the content is fixed by these four (the content's length too: size times itemsize).
_entries: dict = {}


def varint(n: int) -> bytes:
    """Base-128 varint of a non-negative int (lengths, sizes, enum values)."""
    if n < 128:
        return _ONE_BYTE[n]
    out = bytearray()
    while n > 127:
        out.append((n & 127) | 128)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return tag + varint(len(payload)) + payload


def _tensor_head(dtype: np.dtype, shape: tuple) -> bytes | None:
    """A TensorProto's bytes up to its content (fields dtype, tensor_shape and tensor_content's tag
    and length), or None when `dtype` is not a native little-endian number."""
    field = _DTYPE_FIELD.get(dtype)
    if field is None:
        return None
    # TensorShapeProto.dim (2) of Dim.size (1); a size of 0 is the empty Dim; no shape for a scalar
    dims = b"".join([_field(b"\x12", b"\x08" + varint(size) if size else b"") for size in shape])
    size = math.prod(shape) * dtype.itemsize
    return field + (_field(b"\x12", dims) if shape else b"") + (b"\x22" + varint(size) if size else b"")


def tensor_bytes(array: np.ndarray) -> bytes | None:
    """A serialized TensorProto of a numpy array (codec.fill_tensor_proto's encoding), or None when
    its dtype is not a native little-endian number."""
    head = _tensor_head(array.dtype, array.shape)
    return None if head is None else head + array.tobytes()


def _entry_head(tag: bytes, key: str, dtype: np.dtype, shape: tuple) -> bytes | None:
    """A map entry {key: TensorProto} of field `tag` up to the tensor's content (None: see _tensor_head)."""
    head = _tensor_head(dtype, shape)
    if head is None or type(key) is not str:
        return None
    tensor_size = len(head) + math.prod(shape) * dtype.itemsize
    entry = _field(b"\x0a", key.encode("utf-8")) + b"\x12" + varint(tensor_size)  # key (1), value (2)
    return tag + varint(len(entry) + tensor_size) + entry + head


def _tensor_map(tag: bytes, tensors: Iterable, parts: list) -> bool:
    """Append the map entries `tag` {key: TensorProto} of `tensors` ((key, array) pairs) to `parts`;
    False when one cannot be written here."""
    for key, value in tensors:
        array = value if type(value) is np.ndarray else np.asarray(value)
        head = _entries.get((tag, key, array.dtype, array.shape))
        if head is None:
            head = _entry_head(tag, key, array.dtype, array.shape)
            if head is None:
                return False
            if len(_entries) < _CACHE_LIMIT:
                _entries[(tag, key, array.dtype, array.shape)] = head
        parts.append(head)
        parts.append(array.tobytes())  # C order, whatever the strides
    return True


def request_bytes(head: bytes, inputs: Mapping, tail: bytes = b"") -> bytes | None:
    """A serialized PredictRequest: `head` (its model_spec, field 1, serialized), the inputs (field 2),
    `tail` (its output_filter, field 3, serialized); None when an input is not a numeric array (or
    something np.asarray makes one of)."""
    parts = [head]
    if not _tensor_map(b"\x12", inputs.items(), parts):
        return None
    parts.append(tail)
    return b"".join(parts)


def response_bytes(outputs: Iterable, tail: bytes) -> bytes | None:
    """A serialized PredictResponse: the outputs ((key, array) pairs; field 1), then `tail` (its
    model_spec, field 2, serialized); None when an output is not a numeric array."""
    parts = []
    if not _tensor_map(b"\x0a", outputs, parts):
        return None
    parts.append(tail)
    return b"".join(parts)


# -- reading: a message that differs from one seen before in its tensors' content alone ------------
# A client sends the same few requests (model, signature, input dtypes and shapes) and gets the same
# few replies, with new numbers in them. `Templates.learn` records, from a message protobuf has parsed,
# its bytes with each tensor's content cut out; `Templates.read` recognises a later message whose bytes
# are those, piece for piece, around contents of the same lengths, and decodes it with one startswith
# per piece and one copy per tensor. The pieces fix every tag and length (the contents' included), so
# such a message parses to the learned one with the contents replaced: nothing else is inferred, and a
# message that differs anywhere else is simply not recognised (the caller parses it as before).

_MAX_VARINT_BYTES = 10


def _varint_at(raw: bytes, pos: int) -> tuple[int, int]:
    """(value, position after) of the varint at `pos`. Raises ValueError: truncated or too long."""
    value = shift = 0
    for pos in range(pos, min(len(raw), pos + _MAX_VARINT_BYTES)):
        byte = raw[pos]
        value |= (byte & 127) << shift
        if byte < 128:
            return value, pos + 1
        shift += 7
    raise ValueError("truncated or overlong varint")


def _fields(raw: bytes, start: int, end: int, budget: list):
    """(field number, wire type, payload start, payload end) of each field of raw[start:end] (for a
    varint, fixed64 or fixed32 field the payload is its value's bytes). Raises ValueError: malformed, a
    group (wire types 3, 4), which no Predict message has, or more fields than `budget[0]` left (shared
    by the nested walks of one message: learning costs at most that many steps of Python)."""
    pos = start
    while pos < end:
        budget[0] -= 1
        if budget[0] < 0:
            raise ValueError("too many fields")
        tag, pos = _varint_at(raw, pos)
        wire = tag & 7
        if wire == 0:
            after = _varint_at(raw, pos)[1]
        elif wire == 2:
            size, pos = _varint_at(raw, pos)
            after = pos + size
        elif wire in (1, 5):
            after = pos + (8 if wire == 1 else 4)
        else:
            raise ValueError(f"wire type {wire}")
        if after > end:
            raise ValueError("field runs past its message")
        yield tag >> 3, wire, pos, after
        pos = after


_FIELD_BUDGET = 256  # fields walked to learn one message (a step request has about 15)


def _content_spans(raw: bytes, field: int) -> list | None:
    """[(map key, content start, content end)] of each entry of the map `field` {string: TensorProto}
    in `raw`, in wire order; None unless every entry is exactly one key and one value and every value
    has exactly one tensor_content."""
    spans, budget = [], [_FIELD_BUDGET]
    for number, wire, start, end in _fields(raw, 0, len(raw), budget):
        if number != field:
            continue
        parts = [(n, w, s, e) for n, w, s, e in _fields(raw, start, end, budget)] if wire == 2 else []
        if [(n, w) for n, w, _, _ in parts] != [(1, 2), (2, 2)]:
            return None
        contents = [(s, e) for n, w, s, e in _fields(raw, parts[1][2], parts[1][3], budget) if n == 4 and w == 2]
        if len(contents) != 1:
            return None
        spans.append((raw[parts[0][2]:parts[0][3]].decode("utf-8"), *contents[0]))
    return spans


class Templates:
    """Learned layouts of one message type's tensor map (PredictRequest inputs: field 2, "inputs";
    PredictResponse outputs: field 1, "outputs"), at most `limit` of them, each of a message of at most
    `max_bytes` (what is kept is the learned message itself, read-only)."""

    def __init__(self, field: int, attribute: str, limit: int = 64, max_bytes: int = 1 << 16):
        self.field, self.attribute = field, attribute
        self.limit, self.max_bytes = limit, max_bytes
        # message length -> [(message, ((bytes, at), ...) around the contents, ((key, dtype, shape,
        # content start, content end), ...))]: every length is fixed, so is every position
        self._by_length: dict[int, list] = {}
        self._count = 0
        self.hits = 0  # messages read from a learned layout (approximate under threads)

    def read(self, raw: bytes):
        """(the learned message, {key: new writable array}) when `raw` is a learned layout with other
        contents, else None. Only the learned message's non-tensor fields may be read: its tensors hold
        the learned message's values, not these."""
        found = self._find(raw)
        if found is None:
            return None
        self.hits += 1
        return found[0], {key: np.ndarray(shape, dtype, bytearray(raw[start:end]))
                          for key, dtype, shape, start, end in found[1]}

    def read_or_learn(self, raw: bytes, parse) -> tuple:
        """`read(raw)`, else (`parse(raw)`, its tensors decoded by codec.from_tensor_proto), learning
        that message's layout. `parse` (a message class's FromString, or a wrapper that raises the
        caller's error) is called only for a layout not seen before."""
        known = self.read(raw)
        if known is None:
            message = parse(raw)
            known = message, {key: from_tensor_proto(t) for key, t in getattr(message, self.attribute).items()}
            self.learn(raw, message)
        return known

    def _find(self, raw: bytes):
        for message, pieces, tensors in self._by_length.get(len(raw), ()):
            for piece, at in pieces:
                if not raw.startswith(piece, at):
                    break
            else:
                return message, tensors
        return None

    def learn(self, raw: bytes, message) -> bool:
        """Record `raw`'s layout; `message` is what protobuf parsed from it. Nothing is recorded (False)
        when the store is full, `raw` is too long or already known, or a tensor is not a native number
        in exactly one tensor_content."""
        if self._count >= self.limit or len(raw) > self.max_bytes or self._find(raw) is not None:
            return False
        tensors = getattr(message, self.attribute)
        if not all(NATIVE_DTYPES.get(t.dtype) is not None and t.tensor_content for t in tensors.values()):
            return False  # a string or *_val tensor: not worth walking the bytes
        try:
            spans = _content_spans(raw, self.field)
        except (ValueError, UnicodeDecodeError):
            return False
        if spans is None or not spans or len({key for key, _, _ in spans}) != len(spans) \
                or len(spans) != len(tensors):
            return False
        pieces, layout, pos = [], [], 0
        for key, start, end in spans:
            proto = tensors.get(key)
            if proto is None or proto.tensor_shape.unknown_rank:
                return False
            dtype = NATIVE_DTYPES[proto.dtype]  # every tensor's is native (checked above)
            shape = tuple(d.size for d in proto.tensor_shape.dim)
            if min(shape, default=0) < 0 or math.prod(shape) * dtype.itemsize != end - start \
                    or proto.tensor_content != raw[start:end]:
                return False
            pieces.append((raw[pos:start], pos))
            layout.append((key, dtype, shape, start, end))
            pos = end
        pieces.append((raw[pos:], pos))
        self._by_length.setdefault(len(raw), []).append((message, tuple(pieces), tuple(layout)))
        self._count += 1
        return True
