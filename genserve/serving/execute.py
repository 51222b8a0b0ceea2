"""Check a Predict request against a SignatureDef and run it by tensor names; warmup replay.

    from genserve.serving.execute import predict
    response = predict(model, "vae", 1, request, PredictResponse)   # model: a loader.GraphModel

service.py splits the same steps (`prepare`, a run on the model's own threads or its batcher, `respond`)
so that a request waiting for its model holds no shared thread.

What TF Serving does (tensorflow_serving/servables/tensorflow/predict_util.cc, RunPredict): look the
signature up (INVALID_ARGUMENT when unknown), check that the request's input keys are exactly the
signature's (INVALID_ARGUMENT naming the missing/extra aliases), parse each TensorProto, check
output_filter aliases (unknown or duplicate -> INVALID_ARGUMENT), then `Session::Run` with the request
deadline in RunOptions, and answer with the named outputs. genserve also checks every input's dtype
and shape against the SignatureDef before decoding its values (TF Serving leaves that to the graph,
which reports it as INVALID_ARGUMENT too), and bounds a request's size before it is decoded.

No gRPC import: errors are `ServingError`s; the gRPC and REST front ends map them.
"""

from __future__ import annotations

import numpy as np

from genserve.contract import DEFAULT_SIGNATURE_KEY
from genserve.wire.codec import fill_tensor_proto, from_tensor_proto
from genserve.wire.predict_bytes import response_bytes
from genserve.repository import WARMUP_PATH
from genserve.serving.errors import ServingError, short
from genserve.serving.options import Limits


DEFAULT_LIMITS = Limits()
_UNSET = object()
# Keys of GraphSignature.memo (what is derived once per signature):
_PASSED = "passed headers"  # {((key, dtype, serialized TensorShapeProto), ...): (limits, shapes)}
_PASSED_LIMIT = 256  # distinct requests' headers remembered per signature; others are checked each time
_HEADER_BYTES = 4096  # nor headers longer than this (a shape of unknown rank may have any number of dims)
_ALL_OUTPUTS = "all outputs"  # the outputs fetched without an output_filter, sorted
# {id(request): (request, limits, output keys)} of requests learned by predict_bytes.Templates: one
# read-only message stands for every request with its layout, so its checks, once passed, pass again
_LEARNED = "learned requests"


def _proto_shape(proto) -> tuple | None:
    if proto.tensor_shape.unknown_rank:
        return None
    return tuple(d.size for d in proto.tensor_shape.dim)


def decode_inputs(sig, inputs, limits: Limits = DEFAULT_LIMITS, arrays: dict | None = None) -> dict:
    """The request's input TensorProtos as numpy arrays, after every check that needs no values.

    Args:
        sig: the loader.GraphSignature to feed.
        inputs: the request's `inputs` map (key -> TensorProto).
        arrays: the values, already decoded from these TensorProtos' content (predict_bytes.Templates):
            checked the same way, and returned as they are.
    Raises:
        ServingError: INVALID_ARGUMENT (keys, dtype, shape, undecodable), RESOURCE_EXHAUSTED (size).
    """
    items = list(inputs.items())
    # Every check before the values depends on the keys, dtypes and shapes alone (and the limits): a
    # request whose headers passed once passes again, and a client sends the same few.
    headers = tuple([(key, proto.dtype, proto.tensor_shape.SerializeToString()) for key, proto in items])
    passed = sig.memo.get(_PASSED)
    if passed is None:
        passed = sig.memo.setdefault(_PASSED, {})
    plan = passed.get(headers)
    if plan is None or plan[0] is not limits:
        plan = (limits, check_headers(sig, inputs, limits))
        if len(passed) < _PASSED_LIMIT and sum(len(h[0]) + len(h[2]) for h in headers) <= _HEADER_BYTES:
            passed[headers] = plan
    if arrays is not None:
        return arrays
    shapes = plan[1]
    arrays = {}
    for key, proto in items:
        try:
            arrays[key] = from_tensor_proto(proto, shapes[key])
        except (ValueError, TypeError) as e:
            raise ServingError("INVALID_ARGUMENT",
                               f"input '{key}': cannot decode the TensorProto: {e}") from None
    return arrays


def check_headers(sig, inputs, limits: Limits = DEFAULT_LIMITS) -> dict:
    """Check the request's input keys, dtypes and shapes against `sig` and `limits` (no values read).

    Returns:
        {input key: shape}.
    Raises:
        ServingError: INVALID_ARGUMENT (keys, dtype, shape), RESOURCE_EXHAUSTED (size).
    """
    spec_inputs = sig.inputs
    if len(inputs) != len(spec_inputs) or any(k not in spec_inputs for k in inputs):
        missing = sorted(set(spec_inputs) - set(inputs))
        extra = sorted(set(inputs) - set(spec_inputs))
        what = "; ".join(filter(None, [
            missing and f"missing input {', '.join(short(k) for k in missing)}",
            extra and f"unexpected input {', '.join(short(k) for k in extra[:5])}"
            + (f" (+{len(extra) - 5} more)" if len(extra) > 5 else ""),
        ]))
        raise ServingError("INVALID_ARGUMENT", f"{what}: signature {sig.name!r} takes {{{sig.expected()}}}")
    shapes = {}
    for key, proto in inputs.items():
        shape = _proto_shape(proto)
        if shape is not None and any(d < 0 for d in shape):
            raise ServingError("INVALID_ARGUMENT", f"input '{key}': negative dimension in {list(shape)}")
        spec_inputs[key].check_shape(proto.dtype, shape)
        shapes[key] = shape
    limits.check_elements(shapes)
    max_rows = sig.memo.get(limits, _UNSET)  # a pure function of the two: computed once
    if max_rows is _UNSET:
        max_rows = sig.memo[limits] = limits.max_rows(sig)
    if max_rows is not None:
        rows = max((s[0] for s in shapes.values() if s), default=0)
        if rows > max_rows:
            raise ServingError("RESOURCE_EXHAUSTED",
                               f"batch of {rows:,} rows: signature {sig.name!r} accepts at most {max_rows:,} "
                               f"rows per request here (output budget {limits.max_output_bytes:,} bytes, "
                               "--max-output-mb); split the request")
    return shapes


def output_keys(sig, output_filter) -> tuple:
    """The outputs to fetch: the filter's (checked) or all of them, sorted."""
    if not output_filter:
        keys = sig.memo.get(_ALL_OUTPUTS)
        if keys is None:
            keys = sig.memo[_ALL_OUTPUTS] = tuple(sorted(sig.outputs))
        return keys
    wanted = list(output_filter)
    for key in wanted:
        if key not in sig.outputs:
            raise ServingError("INVALID_ARGUMENT",
                               f"output_filter: {short(key)} is not an output of signature {sig.name!r} "
                               f"(outputs: {', '.join(sorted(sig.outputs))})")
    if len(set(wanted)) != len(wanted):  # TF Serving: "duplicate output tensor alias"
        dup = next(key for i, key in enumerate(wanted) if key in wanted[:i])
        raise ServingError("INVALID_ARGUMENT", f"output_filter: duplicate output tensor alias {short(dup)}")
    return tuple(wanted)


def prepare(model, name: str, version: int, request, limits: Limits = DEFAULT_LIMITS,
            arrays: dict | None = None):
    """Check `request` against `model`'s SignatureDef and decode its inputs (no graph runs).

    `arrays`: the values read by predict_bytes.Templates, `request` being the learned message (one
    read-only object per layout, kept alive by the store): its checks run once per signature and limits.

    Returns:
        (signature, {input key: ndarray}, output keys to fetch).
    Raises:
        ServingError: INVALID_ARGUMENT (signature, keys, dtype, shape, output_filter) or
            RESOURCE_EXHAUSTED (size).
    """
    sig_name = request.model_spec.signature_name
    sig = model.signatures.get(sig_name or DEFAULT_SIGNATURE_KEY) or \
        model.signature(sig_name, f"model {short(name)} version {version}")  # raises its error
    if arrays is None:
        return sig, decode_inputs(sig, request.inputs, limits), output_keys(sig, request.output_filter)
    learned = sig.memo.get(_LEARNED)
    if learned is None:
        learned = sig.memo.setdefault(_LEARNED, {})
    entry = learned.get(id(request))  # the entry holds `request`: no other object can have its id
    if entry is not None and entry[0] is request and entry[1] is limits:
        return sig, arrays, entry[2]
    decode_inputs(sig, request.inputs, limits, arrays)  # checks; raises
    keys = output_keys(sig, request.output_filter)
    if len(learned) < _PASSED_LIMIT:
        learned[id(request)] = (request, limits, keys)
    return sig, arrays, keys


def respond(name: str, version: int, sig, keys: tuple, result: dict, response_cls):
    """The PredictResponse for a run's `result` (each output encoded straight into it, no CopyFrom)."""
    response = response_cls()
    spec = response.model_spec
    spec.name = name
    spec.version.value = version
    spec.signature_name = sig.name
    outputs = response.outputs
    for key in keys:
        fill_tensor_proto(outputs[key], np.asarray(result[key]))
    return response


def respond_bytes(name: str, version: int, sig, keys: tuple, result: dict, response_cls) -> bytes:
    """`respond(...).SerializeToString()`, written straight from the arrays when they are all numeric
    (genserve.wire.predict_bytes); the gRPC front end sends these bytes as they are."""
    tail = sig.memo.get(("model_spec", name, version))
    if tail is None:  # the response's model_spec (as `respond` writes it), the same for every answer
        tail = respond(name, version, sig, (), {}, response_cls).SerializeToString()
        sig.memo[("model_spec", name, version)] = tail
    raw = response_bytes([(key, result[key]) for key in keys], tail)
    if raw is None:  # a string output: the message's way
        raw = respond(name, version, sig, keys, result, response_cls).SerializeToString()
    return raw


def predict(model, name: str, version: int, request, response_cls, timeout_ms: int = 0,
            limits: Limits = DEFAULT_LIMITS):
    """Validate `request` against `model`, run the signature, build the PredictResponse.

    Args:
        model: a loader.GraphModel.
        name, version: the served model name and version (written into the response's model_spec).
        request: a PredictRequest (TF's class or a wire-compatible one).
        response_cls: the PredictResponse class to build.
        timeout_ms: the request's remaining deadline (0 = none), passed to Session.run.
    Raises:
        ServingError: a bad request (INVALID_ARGUMENT, RESOURCE_EXHAUSTED) or a graph failure.
    """
    sig, arrays, keys = prepare(model, name, version, request, limits)
    return respond(name, version, sig, keys, sig.run(arrays, keys, timeout_ms), response_cls)


def replay_warmup(model, name: str, version: int = 0) -> int:
    """Run the version's warmup requests (if any) by tensor names. Returns how many ran.

    TF Serving replays `assets.extra/tf_serving_warmup_requests` at load with --enable_model_warmup
    and fails the load when one fails (servables/tensorflow/saved_model_warmup_util.cc).

    Raises:
        RuntimeError: a warmup request failed.
    """
    path = model.path.joinpath(*WARMUP_PATH)
    if not path.is_file():
        return 0
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    count = 0
    for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        record = prediction_log_pb2.PredictionLog.FromString(raw)
        if record.WhichOneof("log_type") != "predict_log":
            continue  # classify/regress logs: nothing to replay here
        try:
            predict(model, name, version, record.predict_log.request, predict_pb2.PredictResponse)
        except ServingError as e:
            raise RuntimeError(f"warmup request {count + 1} failed: {e.message}") from None
        count += 1
    return count
