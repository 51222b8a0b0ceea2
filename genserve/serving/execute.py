"""Check a Predict request against a SignatureDef and run it by tensor names; warmup replay.

    from genserve.serving.execute import predict
    response = predict(model, "vae", 1, request, PredictResponse)   # model: a loader.GraphModel

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

import math
from dataclasses import dataclass

import numpy as np

from genserve.wire.codec import fill_tensor_proto, from_tensor_proto
from genserve.repository import WARMUP_PATH
from genserve.serving.errors import ServingError, short


@dataclass(frozen=True)
class Limits:
    """Admission limits checked before any graph runs.

    Args:
        max_request_elements: most elements over all inputs of one request (a [5e8, 1] tensor with no
            values is 29 bytes on the wire but 2 GB once decoded).
        max_output_bytes: most bytes of outputs a request may ask for, where the signature fixes the
            output size per batch row (e.g. VAE `decode`: 28*28*4 bytes a row). This also bounds the
            batch size of such signatures: VAE decode of z float32[200000, 2] (1.6 MB on the wire)
            crashes TensorFlow's conv kernels inside the process, taking every model down.
    """

    max_request_elements: int = 1 << 27  # 512 MiB of float32
    max_output_bytes: int = 1 << 28  # 256 MiB

    def max_rows(self, sig) -> int | None:
        """The most batch rows `sig` accepts under the output budget (None: not bounded that way)."""
        per_row = 0
        for spec in sig.outputs.values():
            if spec.shape is None or len(spec.shape) == 0 or any(d is None for d in spec.shape[1:]):
                continue
            if spec.shape[0] is not None:
                continue  # not batched
            per_row += math.prod(spec.shape[1:]) * _itemsize(spec.dtype)
        return None if per_row == 0 else max(1, self.max_output_bytes // per_row)

    def check_elements(self, shapes: dict) -> None:
        total = sum(math.prod(s) for s in shapes.values() if s is not None)
        if total > self.max_request_elements:
            detail = ", ".join(f"'{k}': [{','.join(map(str, s))}]" for k, s in sorted(shapes.items())
                               if s is not None)
            raise ServingError("RESOURCE_EXHAUSTED",
                               f"request has {total:,} input elements ({detail}); this server accepts "
                               f"at most {self.max_request_elements:,} per request "
                               "(--max-request-elements)")


DEFAULT_LIMITS = Limits()


def _itemsize(dtype: int) -> int:
    from genserve.wire.codec import NUMERIC_DTYPES

    numeric = NUMERIC_DTYPES.get(dtype)
    return numeric[0].itemsize if numeric else 8


def _proto_shape(proto) -> tuple | None:
    if proto.tensor_shape.unknown_rank:
        return None
    return tuple(d.size for d in proto.tensor_shape.dim)


def decode_inputs(sig, inputs, limits: Limits = DEFAULT_LIMITS) -> dict:
    """The request's input TensorProtos as numpy arrays, after every check that needs no values.

    Args:
        sig: the loader.GraphSignature to feed.
        inputs: the request's `inputs` map (key -> TensorProto).
    Raises:
        ServingError: INVALID_ARGUMENT (keys, dtype, shape, undecodable), RESOURCE_EXHAUSTED (size).
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
    max_rows = limits.max_rows(sig)
    if max_rows is not None:
        rows = max((s[0] for s in shapes.values() if s), default=0)
        if rows > max_rows:
            raise ServingError("RESOURCE_EXHAUSTED",
                               f"batch of {rows:,} rows: signature {sig.name!r} accepts at most {max_rows:,} "
                               f"rows per request here (output budget {limits.max_output_bytes:,} bytes, "
                               "--max-output-mb); split the request")
    arrays = {}
    for key, proto in inputs.items():
        try:
            arrays[key] = from_tensor_proto(proto)
        except (ValueError, TypeError) as e:
            raise ServingError("INVALID_ARGUMENT",
                               f"input '{key}': cannot decode the TensorProto: {e}") from None
    return arrays


class ConcurrencyLimiter:
    """At most `max_concurrent` executions at once and `max_queue` waiting; a full queue answers
    UNAVAILABLE at once (TF Serving's batch queues do the same when full), a wait that outlives the
    request's deadline DEADLINE_EXCEEDED. One per served model, so a flood on one model leaves the
    others their share of the server's threads."""

    def __init__(self, max_concurrent: int, max_queue: int):
        import threading

        if max_concurrent < 1 or max_queue < 0:
            raise ValueError("max_concurrent must be >= 1 and max_queue >= 0")
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self._slots = threading.Semaphore(max_concurrent)
        self._lock = threading.Lock()
        self._waiting = 0

    def run(self, what: str, timeout_s: float | None, fn):
        if not self._slots.acquire(blocking=False):
            with self._lock:
                if self._waiting >= self.max_queue:
                    raise ServingError("UNAVAILABLE",
                                       f"{what}: server busy ({self.max_concurrent} executions running, "
                                       f"{self._waiting} queued); retry later")
                self._waiting += 1
            try:
                got = self._slots.acquire(timeout=timeout_s if timeout_s is not None else -1)
            finally:
                with self._lock:
                    self._waiting -= 1
            if not got:
                raise ServingError("DEADLINE_EXCEEDED", f"{what}: deadline passed while queued")
        try:
            return fn()
        finally:
            self._slots.release()


def output_keys(sig, output_filter) -> tuple:
    """The outputs to fetch: the filter's (checked) or all of them, sorted."""
    wanted = list(output_filter)
    for key in wanted:
        if key not in sig.outputs:
            raise ServingError("INVALID_ARGUMENT",
                               f"output_filter: {short(key)} is not an output of signature {sig.name!r} "
                               f"(outputs: {', '.join(sorted(sig.outputs))})")
    if len(set(wanted)) != len(wanted):  # TF Serving: "duplicate output tensor alias"
        dup = next(key for i, key in enumerate(wanted) if key in wanted[:i])
        raise ServingError("INVALID_ARGUMENT", f"output_filter: duplicate output tensor alias {short(dup)}")
    return tuple(wanted) if wanted else tuple(sorted(sig.outputs))


def predict(model, name: str, version: int, request, response_cls, timeout_ms: int = 0,
            limits: Limits = DEFAULT_LIMITS, runner=None):
    """Validate `request` against `model`, run the signature, build the PredictResponse.

    Args:
        model: a loader.GraphModel.
        name, version: the served model name and version (written into the response's model_spec).
        request: a PredictRequest (TF's class or a wire-compatible one).
        response_cls: the PredictResponse class to build.
        timeout_ms: the request's remaining deadline (0 = none), passed to Session.run.
        runner: `runner(sig, arrays, keys, timeout_ms) -> {key: ndarray}` (default: `sig.run`); the
            server passes its admission/batching layer here.
    Raises:
        ServingError: a bad request (INVALID_ARGUMENT, RESOURCE_EXHAUSTED) or a graph failure.
    """
    sig = model.signature(request.model_spec.signature_name, f"model {short(name)} version {version}")
    arrays = decode_inputs(sig, request.inputs, limits)
    keys = output_keys(sig, request.output_filter)
    if runner is None:
        result = sig.run(arrays, keys, timeout_ms)
    else:
        result = runner(sig, arrays, keys, timeout_ms)
    response = response_cls()
    spec = response.model_spec
    spec.name = name
    spec.version.value = version
    spec.signature_name = sig.name
    outputs = response.outputs
    for key in keys:  # each output encoded straight into the response (no CopyFrom)
        fill_tensor_proto(outputs[key], np.asarray(result[key]))
    return response


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
