"""The messages of the thin client: requests built and replies read, with no channel and no TensorFlow.

`predict_request_bytes` writes the PredictRequest that `Client.predict` sends (the same bytes as
`predict_request(...).SerializeToString()`, without building the message: genserve.wire.predict_bytes);
`predict_request` builds it as a message (also used by benchmarks that drive gRPC directly);
`signatures_from_metadata` reads a GetModelMetadataResponse (genserve's or TF
Serving's class); `GenserveError` is every failure a client reports: a failed RPC or a reply it
cannot read.

    python -c "from genserve.clients.messages import predict_request; print(predict_request('vae', {'z': [[0.0, 0.0]]}))"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, NamedTuple

import grpc

from genserve.wire.codec import dtype_name, to_tensor_proto
from genserve.wire.predict_bytes import request_bytes
from genserve.wire.protos import serving_pb2

PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
METADATA_METHOD = "/tensorflow.serving.PredictionService/GetModelMetadata"
STATUS_METHOD = "/tensorflow.serving.ModelService/GetModelStatus"
SIGNATURE_DEF_MAP_TYPE = "tensorflow.serving.SignatureDefMap"  # the Any's type name TF Serving packs
Inputs = Mapping[str, Any]


class GenserveError(Exception):
    """A failed RPC: the gRPC status code and the server's (or the client's) explanation.

    Attributes:
        code: a `grpc.StatusCode`, e.g. `grpc.StatusCode.NOT_FOUND`.
        details: the human-readable message.
    """

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(code, details)
        self.code = code
        self.details = details

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}"


@dataclass(frozen=True)
class SignatureInfo:
    """One served signature as GetModelMetadata describes it.

    `inputs` / `outputs` map a tensor key to (dtype name, shape): dtype names are the contract's
    ("float32", "int32", "string", ...); a shape is a tuple with None for an unknown size (-1), or
    None when even the rank is unknown.
    """

    inputs: dict[str, tuple[str, tuple | None]] = field(default_factory=dict)
    outputs: dict[str, tuple[str, tuple | None]] = field(default_factory=dict)
    method_name: str = ""


class VersionStatus(NamedTuple):
    """One entry of GetModelStatus: a version and its state ("AVAILABLE", "LOADING", "END", ...)."""

    version: int
    state: str


def _tensor_info(info) -> tuple[str, tuple | None]:
    shape = info.tensor_shape
    if shape.unknown_rank:
        return dtype_name(info.dtype), None
    return dtype_name(info.dtype), tuple(None if d.size < 0 else int(d.size) for d in shape.dim)


def model_spec(spec, model: str, signature: str | None, version: int | None,
                version_label: str | None) -> None:
    """Fill a ModelSpec in place; version stays unset for "latest" (a set 0 would mean version 0)."""
    if version is not None and version_label is not None:
        raise ValueError("give either version or version_label, not both")
    spec.name = model
    if signature:
        spec.signature_name = signature
    if version is not None:
        spec.version.SetInParent()  # presence even for version 0
        spec.version.value = int(version)
    elif version_label is not None:
        spec.version_label = version_label


def predict_request(model: str, inputs: Inputs, signature: str | None = None,
                    version: int | None = None, version_label: str | None = None,
                    output_filter: Iterable[str] | None = None) -> serving_pb2.PredictRequest:
    """The PredictRequest that Client.predict sends (arguments as there).

    Raises:
        TypeError: inputs is not a mapping.
        ValueError: an input dtype a TensorProto cannot carry; version and version_label together.
    """
    if not isinstance(inputs, Mapping):
        raise TypeError(f"inputs must be a dict of tensor key -> array, got {type(inputs).__name__}")
    request = serving_pb2.PredictRequest()
    model_spec(request.model_spec, model, signature, version, version_label)
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(to_tensor_proto(value))
    if output_filter is not None:
        if isinstance(output_filter, str):
            output_filter = [output_filter]
        request.output_filter.extend(output_filter)
    return request


# (model, signature, version, version_label, output_filter) -> the request's serialized model_spec
# and output_filter, which stay the same for every call of one signature (bounded: a client may name
# many models).
_frames: dict = {}
_FRAMES_LIMIT = 256


def predict_request_bytes(model: str, inputs: Inputs, signature: str | None = None,
                          version: int | None = None, version_label: str | None = None,
                          output_filter: Iterable[str] | None = None) -> bytes:
    """`predict_request(...).SerializeToString()`, written straight from the arrays when they are all
    numeric (arguments and errors as predict_request)."""
    if isinstance(output_filter, str):
        output_filter = (output_filter,)
    elif output_filter is not None:
        output_filter = tuple(output_filter)
    if type(inputs) is not dict and not isinstance(inputs, Mapping):  # typing.Mapping: 0.5 us
        predict_request(model, inputs)  # raises its TypeError
    key = (model, signature, version, version_label, output_filter)
    frame = _frames.get(key)
    if frame is None:
        head, tail = serving_pb2.PredictRequest(), serving_pb2.PredictRequest()
        model_spec(head.model_spec, model, signature, version, version_label)
        tail.output_filter.extend(output_filter or ())
        frame = head.SerializeToString(), tail.SerializeToString()
        if len(_frames) < _FRAMES_LIMIT:
            _frames[key] = frame
    raw = request_bytes(frame[0], inputs, frame[1])
    if raw is None:  # strings, object arrays, a dtype TensorProto cannot carry: the message's way
        raw = predict_request(model, inputs, signature, version, version_label, output_filter).SerializeToString()
    return raw


def signatures_from_metadata(response, model: str = "") -> dict[str, SignatureInfo]:
    """Signature name -> SignatureInfo from a GetModelMetadataResponse (genserve's or TF's class).

    Raises:
        GenserveError: code INTERNAL when the reply carries no SignatureDefMap under "signature_def".
    """
    if "signature_def" not in response.metadata:
        raise GenserveError(grpc.StatusCode.INTERNAL,
                            f"GetModelMetadata for {model!r} returned no signature_def entry")
    packed = response.metadata["signature_def"]
    # Any.Unpack would compare full type names (genserve.wire vs tensorflow.serving) and refuse; the
    # bytes are compatible, so check the URL's type name and parse the value directly.
    type_name = packed.type_url.rsplit("/", 1)[-1]
    if type_name != SIGNATURE_DEF_MAP_TYPE:
        raise GenserveError(grpc.StatusCode.INTERNAL,
                            f"signature_def metadata of {model!r} has type {packed.type_url!r}, "
                            f"expected type.googleapis.com/{SIGNATURE_DEF_MAP_TYPE}")
    signature_map = serving_pb2.SignatureDefMap.FromString(packed.value)
    return {
        name: SignatureInfo(
            inputs={k: _tensor_info(v) for k, v in sorted(sig.inputs.items())},
            outputs={k: _tensor_info(v) for k, v in sorted(sig.outputs.items())},
            method_name=sig.method_name,
        )
        for name, sig in sorted(signature_map.signature_def.items())
    }
